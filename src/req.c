/*
 * The requirement validator (architecture section 4). The front runs every
 * pip_packages entry through here before pip sees it: only name-based PEP 508
 * requirements pass, and they come out in one canonical form, because the
 * normalized list is part of the environment cache key.
 */
/* The tables below are laid out by hand. */
/* clang-format off */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "req.h"
#include "util.h"

#define REQ_QUOTE_MAX 48 /* input bytes quoted in an error message */
#define REQ_SNIP_MAX 16 /* input bytes quoted to show where it failed */
#define REQ_DEPTH_MAX 32 /* nested parentheses in a marker */
#define REQ_ITEMS_MAX (REQ_MAX_LEN / 2 + 1) /* extras or clauses in one */

enum req_mtype {
	MT_END,
	MT_LPAREN,
	MT_RPAREN,
	MT_STR,
	MT_VAR,
	MT_OP,
	MT_AND,
	MT_OR,
	MT_NOT,
	MT_IN,
};

/* One marker token: where it is in the input and what it is. */
struct req_mtok {
	enum req_mtype mt_type;
	size_t mt_pos;
	size_t mt_len;
};

/* The parser: the input, a cursor, the marker being built, why it failed. */
struct req_parser {
	const char *rp_s;
	size_t rp_len;
	size_t rp_pos;
	struct req_mtok rp_tok;
	int rp_depth;
	char *rp_mk;
	size_t rp_mklen;
	size_t rp_mksize;
	char rp_why[224];
};

/* Longest first, so that "===" wins over "==" and "<=" over "<". */
static const char *const req_ops[] = {
	"===", "==", "!=", "<=", ">=", "~=", "<", ">",
};

/* The environment markers of PEP 508. */
static const char *const req_vars[] = {
	"python_version", "python_full_version", "os_name", "sys_platform",
	"platform_release", "platform_system", "platform_version",
	"platform_machine", "platform_python_implementation",
	"implementation_name", "implementation_version", "extra",
};

static int req_marker_or(struct req_parser *);

static int
req_isalnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9');
}

static int
req_isnamec(int c)
{
	return req_isalnum(c) || c == '-' || c == '_' || c == '.';
}

static int
req_isverc(int c)
{
	return req_isalnum(c) || (c != '\0' && strchr(".*+!_-", c) != NULL);
}

static int
req_isidentc(int c)
{
	return req_isalnum(c) || c == '_';
}

static int
req_tolower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

/*
 * Copy at most max bytes of s into dst, escaped so that the result is
 * printable ASCII and safe to log: \n, \t, \r, \\, \" and \xNN.
 */
static void
req_escape(char *dst, size_t dstlen, const char *s, size_t len, size_t max)
{
	size_t i, o = 0, n;
	unsigned char c;
	char tmp[8];

	for (i = 0; i < len && i < max; i++) {
		c = (unsigned char)s[i];
		if (c == '\n')
			strcpy(tmp, "\\n");
		else if (c == '\t')
			strcpy(tmp, "\\t");
		else if (c == '\r')
			strcpy(tmp, "\\r");
		else if (c == '\\' || c == '"')
			snprintf(tmp, sizeof(tmp), "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			snprintf(tmp, sizeof(tmp), "\\x%02x", c);
		else
			snprintf(tmp, sizeof(tmp), "%c", c);
		n = strlen(tmp);
		if (o + n >= dstlen)
			break;
		memcpy(dst + o, tmp, n);
		o += n;
	}
	dst[o] = '\0';
}

/* Record why parsing failed; always returns -1. */
static int __attribute__((format(printf, 2, 3)))
req_fail(struct req_parser *rp, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(rp->rp_why, sizeof(rp->rp_why), fmt, ap);
	va_end(ap);
	return -1;
}

/* Record why parsing failed and show the input at pos; returns -1. */
static int __attribute__((format(printf, 3, 4)))
req_failat(struct req_parser *rp, size_t pos, const char *fmt, ...)
{
	char what[128], snip[REQ_SNIP_MAX * 4 + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (pos >= rp->rp_len)
		return req_fail(rp, "%s at the end", what);
	req_escape(snip, sizeof(snip), rp->rp_s + pos, rp->rp_len - pos,
	    REQ_SNIP_MAX);
	return req_fail(rp, "%s at \"%s\"%s", what, snip,
	    rp->rp_len - pos > REQ_SNIP_MAX ? "..." : "");
}

static int
req_peek(const struct req_parser *rp)
{
	return rp->rp_pos < rp->rp_len ? (unsigned char)rp->rp_s[rp->rp_pos] : -1;
}

static void
req_skipws(struct req_parser *rp)
{
	while (req_peek(rp) == ' ')
		rp->rp_pos++;
}

/* Does the input start with a URL scheme, such as "file:" or "git+ssh:"? */
static int
req_has_scheme(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || !req_isalnum(s[0]) || (s[0] >= '0' && s[0] <= '9'))
		return 0;
	for (i = 1; i < len; i++) {
		if (s[i] == ':')
			return 1;
		if (!req_isalnum(s[i]) && s[i] != '+' && s[i] != '.' &&
		    s[i] != '-')
			return 0;
	}
	return 0;
}

/*
 * Reject what is never a name-based requirement before parsing, with the
 * most useful reason: size, bytes, options, direct references, URLs, paths.
 */
static int
req_prescan(struct req_parser *rp)
{
	const char *s = rp->rp_s;
	size_t i, len = rp->rp_len;
	unsigned char c;

	if (len == 0)
		return req_fail(rp, "the requirement is empty");
	if (len > REQ_MAX_LEN)
		return req_fail(rp, "the requirement is too long "
		    "(%zu bytes, limit %d)", len, REQ_MAX_LEN);
	for (i = 0; i < len; i++) {
		c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f)
			return req_fail(rp, "control character \\x%02x at "
			    "offset %zu is not allowed", c, i);
		if (c >= 0x80)
			return req_fail(rp, "non-ASCII byte \\x%02x at offset "
			    "%zu is not allowed (package names are ASCII)", c,
			    i);
	}
	req_skipws(rp);
	s += rp->rp_pos;
	len -= rp->rp_pos;
	if (len == 0)
		return req_fail(rp, "the requirement is empty");
	if (s[0] == '-')
		return req_fail(rp, "options are not allowed");
	if (memchr(s, '@', len) != NULL)
		return req_fail(rp,
		    "direct references (name @ url) are not allowed");
	if (memmem(s, len, "://", 3) != NULL || req_has_scheme(s, len))
		return req_fail(rp, "URLs are not allowed");
	if (s[0] == '.' || s[0] == '/' || s[0] == '~' ||
	    memchr(s, '/', len) != NULL || memchr(s, '\\', len) != NULL)
		return req_fail(rp, "paths are not allowed");
	return 0;
}

/*
 * Parse a name or an extra at the cursor and write it normalized per
 * PEP 503: lowercase, with each run of '-', '_' and '.' made one '-'.
 */
static int
req_name(struct req_parser *rp, const char *what, char *out, size_t outlen)
{
	const char *s = rp->rp_s + rp->rp_pos;
	size_t i, n = 0, o = 0;

	while (rp->rp_pos + n < rp->rp_len && req_isnamec(s[n]))
		n++;
	if (n == 0)
		return req_failat(rp, rp->rp_pos, "expected %s %s",
		    what[0] == 'e' ? "an" : "a", what);
	if (n > REQ_NAME_MAX || n >= outlen)
		return req_fail(rp, "the %s is too long "
		    "(%zu characters, limit %d)", what, n, REQ_NAME_MAX);
	if (!req_isalnum(s[0]) || !req_isalnum(s[n - 1]))
		return req_fail(rp, "invalid %s \"%.*s\": it must start and "
		    "end with a letter or digit", what, (int)n, s);
	for (i = 0; i < n; i++) {
		if (req_isalnum(s[i]))
			out[o++] = req_tolower(s[i]);
		else if (out[o - 1] != '-')
			out[o++] = '-';
	}
	out[o] = '\0';
	rp->rp_pos += n;
	return 0;
}

static int
req_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/*
 * Sort the items and drop duplicates, handing each dropped one to drop
 * unless it is NULL. Returns how many are left, at the front of items.
 */
static size_t
req_uniq(char **items, size_t n, void (*drop)(void *))
{
	size_t i, o = 0;

	if (n > 1)
		qsort(items, n, sizeof(*items), req_cmp);
	for (i = 0; i < n; i++) {
		if (o > 0 && strcmp(items[i], items[o - 1]) == 0) {
			if (drop != NULL)
				drop(items[i]);
			continue;
		}
		items[o++] = items[i];
	}
	return o;
}

/* Sort the items, drop duplicates and join them with sep; -1 if too long. */
static int
req_join(char **items, size_t n, int sep, char *out, size_t outlen)
{
	size_t i, o = 0, l;

	n = req_uniq(items, n, NULL);
	for (i = 0; i < n; i++) {
		l = strlen(items[i]);
		if (o + l + (i > 0) >= outlen)
			return -1;
		if (i > 0)
			out[o++] = sep;
		memcpy(out + o, items[i], l);
		o += l;
	}
	out[o] = '\0';
	return 0;
}

/* Parse "[a, b]" into the sorted, de-duplicated list of normalized extras. */
static int
req_extras(struct req_parser *rp, struct req *rq)
{
	char buf[2 * REQ_MAX_LEN], *items[REQ_ITEMS_MAX];
	size_t n = 0, off = 0;

	rp->rp_pos++;
	req_skipws(rp);
	if (req_peek(rp) == ']') {
		rp->rp_pos++;
		return 0;
	}
	for (;;) {
		if (req_peek(rp) == -1)
			return req_fail(rp, "unterminated extras (missing ']')");
		if (n == REQ_ITEMS_MAX)
			return req_fail(rp, "too many extras");
		if (req_name(rp, "extra name", buf + off,
		    sizeof(buf) - off) == -1)
			return -1;
		items[n++] = buf + off;
		off += strlen(buf + off) + 1;
		req_skipws(rp);
		if (req_peek(rp) == ']')
			break;
		if (req_peek(rp) == -1)
			return req_fail(rp, "unterminated extras (missing ']')");
		if (req_peek(rp) != ',')
			return req_failat(rp, rp->rp_pos,
			    "expected ',' or ']' in the extras");
		rp->rp_pos++;
		req_skipws(rp);
	}
	rp->rp_pos++;
	if (req_join(items, n, ',', rq->rq_extras, sizeof(rq->rq_extras)))
		return req_fail(rp, "the extras are too long");
	return 0;
}

/* The version cursor of req_pep440: v[*i] onwards, n in all. */
static int
req_vdigits(const char *v, size_t n, size_t *i)
{
	size_t start = *i;

	while (*i < n && v[*i] >= '0' && v[*i] <= '9')
		(*i)++;
	return *i > start;
}

/* One of words (lowercase, longest first) at v[*i], case-insensitively. */
static int
req_vword(const char *v, size_t n, size_t *i, const char *const *words)
{
	size_t k, len;

	for (; *words != NULL; words++) {
		len = strlen(*words);
		if (n - *i < len)
			continue;
		for (k = 0; k < len && req_tolower(v[*i + k]) == (*words)[k]; k++)
			;
		if (k == len) {
			*i += len;
			return 1;
		}
	}
	return 0;
}

/* An optional separator (., - or _) at v[*i]. */
static void
req_vsep(const char *v, size_t n, size_t *i)
{
	if (*i < n && (v[*i] == '.' || v[*i] == '-' || v[*i] == '_'))
		(*i)++;
}

/*
 * An optional segment at v[*i]: a separator, one of words, a separator
 * and a number, each but the word optional ("rc1", ".post-2", "dev").
 */
static void
req_vsegment(const char *v, size_t n, size_t *i, const char *const *words)
{
	size_t j = *i;

	req_vsep(v, n, &j);
	if (!req_vword(v, n, &j, words))
		return;
	*i = j;
	req_vsep(v, n, &j);
	if (req_vdigits(v, n, &j))
		*i = j;
}

/*
 * Whether v is a PEP 440 version, in any of the spellings that PEP
 * normalizes (1.0RC1, v2, 1.0-1, 1.0.post.dev0, 1.0+local.7): epoch,
 * release, pre-, post- and dev-release, local label. Anything else, pip
 * may read as something other than a version ("1.0.tar.gz": a file).
 */
static int
req_pep440(const char *v, size_t n)
{
	static const char *const pre[] = {"preview", "alpha", "beta", "pre",
	    "rc", "a", "b", "c", NULL};
	static const char *const post[] = {"post", "rev", "r", NULL};
	static const char *const dev[] = {"dev", NULL};
	size_t i = 0, j;

	if (i < n && (v[i] == 'v' || v[i] == 'V'))
		i++;
	j = i;
	if (req_vdigits(v, n, &j) && j < n && v[j] == '!')
		i = j + 1; /* the epoch */
	if (!req_vdigits(v, n, &i))
		return 0;
	while (i + 1 < n && v[i] == '.' && v[i + 1] >= '0' && v[i + 1] <= '9') {
		i++;
		req_vdigits(v, n, &i);
	}
	req_vsegment(v, n, &i, pre);
	j = i;
	if (j < n && v[j] == '-' && (j++, req_vdigits(v, n, &j)))
		i = j; /* 1.0-1 */
	else
		req_vsegment(v, n, &i, post);
	req_vsegment(v, n, &i, dev);
	if (i < n && v[i] == '+') {
		/* The local label: alphanumeric parts, separated by . - _ */
		do {
			j = ++i;
			while (i < n && req_isalnum(v[i]))
				i++;
			if (i == j)
				return 0;
		} while (i < n && (v[i] == '.' || v[i] == '-' || v[i] == '_'));
	}
	return i == n;
}

/* Check one version against its operator: characters, wildcards, ~=. */
static int
req_version(struct req_parser *rp, const char *op, const char *v, size_t n)
{
	const char *star;

	if (n > REQ_VERSION_MAX)
		return req_fail(rp, "the version is too long "
		    "(%zu characters, limit %d)", n, REQ_VERSION_MAX);
	if (!req_isalnum(v[0]))
		return req_fail(rp, "invalid version \"%.*s\": it must start "
		    "with a letter or digit", (int)n, v);
	if ((star = memchr(v, '*', n)) != NULL) {
		if (star != v + n - 1 || v[n - 2] != '.')
			return req_fail(rp, "invalid version \"%.*s\": '*' may "
			    "only end a version, as in ==1.2.*", (int)n, v);
		if (strcmp(op, "==") != 0 && strcmp(op, "!=") != 0)
			return req_fail(rp, "the wildcard version \"%.*s\" is "
			    "only allowed with == and !=", (int)n, v);
	}
	if (strcmp(op, "~=") == 0 && memchr(v, '.', n) == NULL)
		return req_fail(rp, "~= needs a version with at least two "
		    "parts, such as ~=1.4, not \"%.*s\"", (int)n, v);
	/* === compares strings as they are: any version will do. */
	if (strcmp(op, "===") != 0 &&
	    (!req_pep440(v, star != NULL ? n - 2 : n) ||
	        (star != NULL && memchr(v, '+', n) != NULL)))
		return req_fail(rp, "invalid version \"%.*s\": not a PEP 440 "
		    "version (such as 1.4, 2.0rc1, 1.0.post2 or 1.0+local)",
		    (int)n, v);
	return 0;
}

/* Parse one clause, operator and version, into out as "op" "version". */
static int
req_clause(struct req_parser *rp, char *out, size_t outlen)
{
	const char *op = NULL, *v, *s = rp->rp_s;
	size_t i, n = 0, oplen;
	int c;

	for (i = 0; i < sizeof(req_ops) / sizeof(req_ops[0]) && !op; i++) {
		oplen = strlen(req_ops[i]);
		if (rp->rp_len - rp->rp_pos >= oplen &&
		    memcmp(s + rp->rp_pos, req_ops[i], oplen) == 0)
			op = req_ops[i];
	}
	if (op == NULL)
		return req_failat(rp, rp->rp_pos, "expected a version "
		    "operator (==, !=, <=, >=, ~=, ===, <, >)");
	rp->rp_pos += strlen(op);
	req_skipws(rp);
	v = s + rp->rp_pos;
	while (rp->rp_pos + n < rp->rp_len && req_isverc(v[n]))
		n++;
	if (n == 0) {
		c = req_peek(rp);
		if (c == -1 || c == ',' || c == ';' || c == ')')
			return req_fail(rp, "missing version after '%s'", op);
		return req_failat(rp, rp->rp_pos, "invalid version "
		    "specifier: expected a version after '%s'", op);
	}
	if (req_version(rp, op, v, n) == -1)
		return -1;
	if (strlen(op) + n >= outlen)
		return req_fail(rp, "the version specifier is too long");
	strcpy(out, op);
	for (i = 0, out += strlen(op); i < n; i++)
		*out++ = req_tolower(v[i]);
	*out = '\0';
	rp->rp_pos += n;
	return 0;
}

/*
 * Parse the version specifiers, optionally in parentheses, into sorted
 * and de-duplicated clauses without whitespace: "<2,>=1.2".
 */
static int
req_spec(struct req_parser *rp, struct req *rq)
{
	char buf[2 * REQ_MAX_LEN], *items[REQ_ITEMS_MAX];
	size_t n = 0, off = 0;
	int paren;

	if ((paren = (req_peek(rp) == '(')))
		rp->rp_pos++;
	for (;;) {
		req_skipws(rp);
		if (n == REQ_ITEMS_MAX)
			return req_fail(rp, "too many version specifiers");
		if (req_clause(rp, buf + off, sizeof(buf) - off) == -1)
			return -1;
		items[n++] = buf + off;
		off += strlen(buf + off) + 1;
		req_skipws(rp);
		if (req_peek(rp) != ',')
			break;
		rp->rp_pos++;
	}
	if (paren) {
		if (req_peek(rp) != ')')
			return req_failat(rp, rp->rp_pos, "expected ',' or ')' "
			    "in the version specifiers");
		rp->rp_pos++;
	}
	if (req_join(items, n, ',', rq->rq_spec, sizeof(rq->rq_spec)))
		return req_fail(rp, "the version specifiers are too long");
	return 0;
}

/* Append to the canonical marker. */
static int
req_emit(struct req_parser *rp, const char *s, size_t n)
{
	if (rp->rp_mklen + n >= rp->rp_mksize)
		return req_fail(rp, "the marker is too long");
	memcpy(rp->rp_mk + rp->rp_mklen, s, n);
	rp->rp_mklen += n;
	rp->rp_mk[rp->rp_mklen] = '\0';
	return 0;
}

/* Lex a quoted string at the cursor; it may not contain its own quote. */
static int
req_lex_string(struct req_parser *rp, struct req_mtok *t)
{
	const char *s = rp->rp_s + rp->rp_pos, *end;

	end = memchr(s + 1, s[0], rp->rp_len - rp->rp_pos - 1);
	if (end == NULL)
		return req_failat(rp, rp->rp_pos,
		    "unterminated string in the marker");
	t->mt_type = MT_STR;
	t->mt_len = end - s + 1;
	return 0;
}

/* Lex a word: a keyword or one of the PEP 508 marker variables. */
static int
req_lex_word(struct req_parser *rp, struct req_mtok *t)
{
	static const struct {
		const char *kw;
		enum req_mtype type;
	} kws[] = {
		{ "and", MT_AND }, { "or", MT_OR }, { "not", MT_NOT },
		{ "in", MT_IN },
	};
	const char *s = rp->rp_s + rp->rp_pos;
	size_t i, n = 0;

	while (rp->rp_pos + n < rp->rp_len && req_isidentc(s[n]))
		n++;
	t->mt_len = n;
	for (i = 0; i < sizeof(kws) / sizeof(kws[0]); i++) {
		if (strlen(kws[i].kw) == n && memcmp(s, kws[i].kw, n) == 0) {
			t->mt_type = kws[i].type;
			return 0;
		}
	}
	for (i = 0; i < sizeof(req_vars) / sizeof(req_vars[0]); i++) {
		if (strlen(req_vars[i]) == n && memcmp(s, req_vars[i], n) == 0) {
			t->mt_type = MT_VAR;
			return 0;
		}
	}
	return req_fail(rp, "unknown marker variable \"%.*s\"",
	    n > 40 ? 40 : (int)n, s);
}

/* Lex an operator, or explain what is there instead. */
static int
req_lex_op(struct req_parser *rp, struct req_mtok *t)
{
	const char *s = rp->rp_s + rp->rp_pos;
	size_t i, n, left = rp->rp_len - rp->rp_pos;

	for (i = 0; i < sizeof(req_ops) / sizeof(req_ops[0]); i++) {
		n = strlen(req_ops[i]);
		if (left >= n && memcmp(s, req_ops[i], n) == 0) {
			t->mt_type = MT_OP;
			t->mt_len = n;
			return 0;
		}
	}
	if (s[0] >= '0' && s[0] <= '9') {
		for (n = 0; n < left && n < 40 && req_isverc(s[n]); n++)
			;
		return req_fail(rp, "unquoted value \"%.*s\" in the marker: "
		    "values must be quoted strings, such as \"3.8\"", (int)n, s);
	}
	return req_failat(rp, rp->rp_pos, "unexpected character in the marker");
}

/* Read the next marker token into rp_tok. */
static int
req_lex(struct req_parser *rp)
{
	struct req_mtok *t = &rp->rp_tok;
	int c;

	rp->rp_pos += t->mt_len;
	req_skipws(rp);
	t->mt_pos = rp->rp_pos;
	t->mt_len = 1;
	c = req_peek(rp);
	if (c == -1) {
		t->mt_type = MT_END;
		t->mt_len = 0;
		return 0;
	}
	if (c == '(' || c == ')') {
		t->mt_type = c == '(' ? MT_LPAREN : MT_RPAREN;
		return 0;
	}
	if (c == '"' || c == '\'')
		return req_lex_string(rp, t);
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')
		return req_lex_word(rp, t);
	return req_lex_op(rp, t);
}

/* A variable or a string, written with double quotes where it can be. */
static int
req_marker_value(struct req_parser *rp)
{
	const struct req_mtok *t = &rp->rp_tok;
	const char *s = rp->rp_s + t->mt_pos;
	const char *q;

	if (t->mt_type == MT_END)
		return req_fail(rp, "the marker ends early: expected a marker "
		    "variable or a quoted string");
	if (t->mt_type == MT_VAR) {
		if (req_emit(rp, s, t->mt_len) == -1)
			return -1;
	} else if (t->mt_type == MT_STR) {
		q = memchr(s + 1, '"', t->mt_len - 2) != NULL ? "'" : "\"";
		if (req_emit(rp, q, 1) == -1 ||
		    req_emit(rp, s + 1, t->mt_len - 2) == -1 ||
		    req_emit(rp, q, 1) == -1)
			return -1;
	} else
		return req_failat(rp, t->mt_pos,
		    "expected a marker variable or a quoted string");
	return req_lex(rp);
}

/* A comparison: a version operator, "in" or "not in". */
static int
req_marker_op(struct req_parser *rp)
{
	const struct req_mtok *t = &rp->rp_tok;

	switch (t->mt_type) {
	case MT_OP:
		if (req_emit(rp, " ", 1) == -1 ||
		    req_emit(rp, rp->rp_s + t->mt_pos, t->mt_len) == -1 ||
		    req_emit(rp, " ", 1) == -1)
			return -1;
		break;
	case MT_IN:
		if (req_emit(rp, " in ", 4) == -1)
			return -1;
		break;
	case MT_NOT:
		if (req_lex(rp) == -1)
			return -1;
		if (t->mt_type != MT_IN)
			return req_failat(rp, t->mt_pos,
			    "expected 'in' after 'not' in the marker");
		if (req_emit(rp, " not in ", 8) == -1)
			return -1;
		break;
	case MT_END:
		return req_fail(rp, "the marker ends early: expected a "
		    "comparison operator");
	default:
		return req_failat(rp, t->mt_pos,
		    "expected a comparison operator in the marker");
	}
	return req_lex(rp);
}

/* marker_expr: a parenthesized marker, or value op value. */
static int
req_marker_expr(struct req_parser *rp)
{
	if (rp->rp_tok.mt_type != MT_LPAREN) {
		if (req_marker_value(rp) == -1 || req_marker_op(rp) == -1)
			return -1;
		return req_marker_value(rp);
	}
	if (++rp->rp_depth > REQ_DEPTH_MAX)
		return req_fail(rp, "the marker is nested too deeply");
	if (req_emit(rp, "(", 1) == -1 || req_lex(rp) == -1 ||
	    req_marker_or(rp) == -1)
		return -1;
	if (rp->rp_tok.mt_type != MT_RPAREN)
		return req_failat(rp, rp->rp_tok.mt_pos,
		    "expected ')' in the marker");
	rp->rp_depth--;
	if (req_emit(rp, ")", 1) == -1)
		return -1;
	return req_lex(rp);
}

/*
 * One level of the boolean grammar, operand (op operand)*: the operands
 * are written back with text, the operator in single spaces, between them.
 */
static int
req_marker_chain(struct req_parser *rp, enum req_mtype op, const char *text,
    int (*operand)(struct req_parser *))
{
	if (operand(rp) == -1)
		return -1;
	while (rp->rp_tok.mt_type == op) {
		if (req_emit(rp, text, strlen(text)) == -1 ||
		    req_lex(rp) == -1 || operand(rp) == -1)
			return -1;
	}
	return 0;
}

/* marker_and: marker_expr ("and" marker_expr)* */
static int
req_marker_and(struct req_parser *rp)
{
	return req_marker_chain(rp, MT_AND, " and ", req_marker_expr);
}

/* marker_or: marker_and ("or" marker_and)* */
static int
req_marker_or(struct req_parser *rp)
{
	return req_marker_chain(rp, MT_OR, " or ", req_marker_and);
}

/*
 * Parse "; marker" with a recursive-descent parser for PEP 508 markers and
 * write it back with single spaces between tokens.
 */
static int
req_marker(struct req_parser *rp, struct req *rq)
{
	rp->rp_pos++;
	rp->rp_mk = rq->rq_marker;
	rp->rp_mksize = sizeof(rq->rq_marker);
	rp->rp_mklen = 0;
	memset(&rp->rp_tok, 0, sizeof(rp->rp_tok));
	if (req_lex(rp) == -1)
		return -1;
	if (rp->rp_tok.mt_type == MT_END)
		return req_fail(rp, "empty marker after ';'");
	if (req_marker_or(rp) == -1)
		return -1;
	if (rp->rp_tok.mt_type != MT_END)
		return req_failat(rp, rp->rp_tok.mt_pos, "expected 'and', "
		    "'or' or the end of the marker");
	return 0;
}

/* name [extras] [specifiers] [; marker], with nothing after it. */
static int
req_parse_body(struct req_parser *rp, struct req *rq)
{
	int c;

	if (req_prescan(rp) == -1 ||
	    req_name(rp, "package name", rq->rq_name,
	    sizeof(rq->rq_name)) == -1)
		return -1;
	req_skipws(rp);
	if (req_peek(rp) == '[' && req_extras(rp, rq) == -1)
		return -1;
	req_skipws(rp);
	c = req_peek(rp);
	if (c != -1 && strchr("(=!<>~", c) != NULL && req_spec(rp, rq) == -1)
		return -1;
	req_skipws(rp);
	if (req_peek(rp) == ';' && req_marker(rp, rq) == -1)
		return -1;
	if (rp->rp_pos != rp->rp_len)
		return req_failat(rp, rp->rp_pos, "unexpected text");
	return 0;
}

/*
 * The canonical form must be a valid requirement too: normalizing adds
 * spaces around marker operators, so it may outgrow the input's limit.
 */
static int
req_canon_fits(struct req_parser *rp, const struct req *rq)
{
	char canon[REQ_FORMAT_SIZE];
	size_t n;

	req_format(rq, canon, sizeof(canon));
	if ((n = strlen(canon)) <= REQ_MAX_LEN)
		return 0;
	return req_fail(rp, "the requirement is too long once normalized "
	    "(%zu bytes, limit %d)", n, REQ_MAX_LEN);
}

/* Parse one requirement; on failure quote it, escaped and cut short, in err. */
int
req_parse(const char *s, size_t len, struct req *rq, char *err, size_t errlen)
{
	struct req_parser rp;
	char quoted[REQ_QUOTE_MAX * 4 + 1];

	memset(&rp, 0, sizeof(rp));
	memset(rq, 0, sizeof(*rq));
	rp.rp_s = s != NULL ? s : "";
	rp.rp_len = s != NULL ? len : 0;
	if (req_parse_body(&rp, rq) == 0 && req_canon_fits(&rp, rq) == 0) {
		if (err != NULL && errlen > 0)
			err[0] = '\0';
		return 0;
	}
	memset(rq, 0, sizeof(*rq));
	if (err != NULL && errlen > 0) {
		req_escape(quoted, sizeof(quoted), rp.rp_s, rp.rp_len,
		    REQ_QUOTE_MAX);
		snprintf(err, errlen, "invalid requirement \"%s\"%s: %s",
		    quoted, rp.rp_len > REQ_QUOTE_MAX ? "..." : "", rp.rp_why);
	}
	return -1;
}

/* Write the canonical form: name, [extras], specifiers, "; " marker. */
void
req_format(const struct req *rq, char *buf, size_t len)
{
	int ex = rq->rq_extras[0] != '\0';

	if (len == 0)
		return;
	snprintf(buf, len, "%s%s%s%s%s%s%s", rq->rq_name, ex ? "[" : "",
	    rq->rq_extras, ex ? "]" : "", rq->rq_spec,
	    rq->rq_marker[0] != '\0' ? "; " : "", rq->rq_marker);
}

/*
 * Parse every entry and append its canonical form to rl, or say which one
 * is wrong.
 */
static int
req_canon_list(const char *const *reqs, size_t n, struct req_list *rl,
    char *err, size_t errlen)
{
	struct req rq;
	char why[512], canon[REQ_FORMAT_SIZE];
	size_t i;

	for (i = 0; i < n; i++) {
		if (reqs[i] == NULL) {
			snprintf(err, errlen, "requirement %zu of %zu is "
			    "missing", i + 1, n);
			return -1;
		}
		if (req_parse(reqs[i], strlen(reqs[i]), &rq, why,
		    sizeof(why)) == -1) {
			snprintf(err, errlen, "requirement %zu of %zu: %s",
			    i + 1, n, why);
			return -1;
		}
		req_format(&rq, canon, sizeof(canon));
		rl->rl_v[rl->rl_n++] = xstrdup(canon);
	}
	return 0;
}

/*
 * Check the count first, so that a huge list costs nothing, then every
 * entry; the sorted, de-duplicated canonical forms are what the
 * environment is built from and its cache key hashes.
 */
int
req_validate_list(const char *const *reqs, size_t n, struct req_list *out,
    char *err, size_t errlen)
{
	struct req_list rl;
	char dummy[1];

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (err == NULL || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	if (n > REQ_MAX_COUNT) {
		snprintf(err, errlen, "too many requirements (%zu, limit %d)",
		    n, REQ_MAX_COUNT);
		return -1;
	}
	if (n > 0 && reqs == NULL) {
		snprintf(err, errlen, "no requirement list");
		return -1;
	}
	rl.rl_v = xcalloc(n, sizeof(*rl.rl_v));
	rl.rl_n = 0;
	if (req_canon_list(reqs, n, &rl, err, errlen) == -1) {
		req_list_free(&rl);
		return -1;
	}
	rl.rl_n = req_uniq(rl.rl_v, rl.rl_n, free);
	if (out != NULL)
		*out = rl;
	else
		req_list_free(&rl);
	return 0;
}

/* Copy a list, strings and all, into an empty one. */
void
req_list_copy(struct req_list *dst, const struct req_list *src)
{
	size_t i;

	dst->rl_v = xcalloc(src->rl_n, sizeof(*dst->rl_v));
	for (i = 0; i < src->rl_n; i++)
		dst->rl_v[i] = xstrdup(src->rl_v[i]);
	dst->rl_n = src->rl_n;
}

/* Free the strings and the array; the list is left empty. */
void
req_list_free(struct req_list *rl)
{
	size_t i;

	for (i = 0; i < rl->rl_n; i++)
		free(rl->rl_v[i]);
	free(rl->rl_v);
	rl->rl_v = NULL;
	rl->rl_n = 0;
}
/* clang-format on */
