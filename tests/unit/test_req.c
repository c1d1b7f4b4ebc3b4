/* Unit tests for the requirement validator (req.c). */
/* The tables below are laid out by hand. */
/* clang-format off */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "req.h"

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static char err[1024];

/* Parse s; expect success and the given canonical form. */
static void
expect_ok(const char *s, const char *canon)
{
	struct req rq;
	char buf[REQ_FORMAT_SIZE];

	memset(err, 'x', sizeof(err));
	if (req_parse(s, strlen(s), &rq, err, sizeof(err)) != 0)
		fail_msg("'%s' was rejected: %s", s, err);
	assert_string_equal(err, "");
	req_format(&rq, buf, sizeof(buf));
	if (strcmp(buf, canon) != 0)
		fail_msg("'%s' became '%s', not '%s'", s, buf, canon);
}

/* Parse len bytes of s; expect -1, the quoted input and the reason. */
static void
expect_bad_len(const char *s, size_t len, const char *why)
{
	struct req rq;

	memset(err, 0, sizeof(err));
	memset(&rq, 'x', sizeof(rq));
	if (req_parse(s, len, &rq, err, sizeof(err)) != -1)
		fail_msg("'%.*s' was accepted", (int)len, s);
	if (strncmp(err, "invalid requirement \"", 21) != 0)
		fail_msg("error '%s' does not quote the requirement", err);
	if (strstr(err, why) == NULL)
		fail_msg("error '%s' does not say '%s'", err, why);
	/* A failed parse leaves nothing half-filled behind. */
	assert_string_equal(rq.rq_name, "");
	assert_string_equal(rq.rq_marker, "");
}

static void
expect_bad(const char *s, const char *why)
{
	expect_bad_len(s, strlen(s), why);
}

/* Canonicalize s into buf, or fail the test. */
static void
canon(const char *s, char *buf, size_t len)
{
	struct req rq;

	if (req_parse(s, strlen(s), &rq, err, sizeof(err)) != 0)
		fail_msg("'%s' was rejected: %s", s, err);
	req_format(&rq, buf, len);
}

static void
test_valid(void **state)
{
	static const char *const cases[][2] = {
		{ "numpy", "numpy" },
		{ "pandas>=1.3.0", "pandas>=1.3.0" },
		{ "qrcode[pil]", "qrcode[pil]" },
		{ "requests[socks]", "requests[socks]" },
		{ "scikit-learn", "scikit-learn" },
		{ "Django==4.2.*", "django==4.2.*" },
		{ "pkg~=1.4.2", "pkg~=1.4.2" },
		{ "pkg (>=1.0)", "pkg>=1.0" },
		{ "pkg; python_version >= \"3.8\"",
		    "pkg; python_version >= \"3.8\"" },
		{ "pkg[a,b]>=1", "pkg[a,b]>=1" },
		{ "pkg; sys_platform == 'linux' and python_version < \"4\"",
		    "pkg; sys_platform == \"linux\" and python_version < \"4\"" },
		{ "zope.interface", "zope-interface" },
		{ "typing_extensions", "typing-extensions" },
		{ "Foo__Bar..baz-_.qux", "foo-bar-baz-qux" },
		{ "a", "a" },
		{ "A1", "a1" },
		{ "  numpy  ", "numpy" },
		{ "pkg[]", "pkg" },
		{ "pkg[B_c , a, A]", "pkg[a,b-c]" },
		{ "pkg ( >= 1.0 , != 1.5.* )", "pkg!=1.5.*,>=1.0" },
		{ "pkg>=1,>=1", "pkg>=1" },
		{ "pkg===1.0+Local", "pkg===1.0+local" },
		{ "pkg==1!2.0.post1.dev2", "pkg==1!2.0.post1.dev2" },
		/* PEP 440's other spellings, which pip normalizes itself */
		{ "pkg==V1.0", "pkg==v1.0" },
		{ "pkg==1.0RC1", "pkg==1.0rc1" },
		{ "pkg==1.0-alpha.2", "pkg==1.0-alpha.2" },
		{ "pkg==1.0a", "pkg==1.0a" },
		{ "pkg==1.0-1", "pkg==1.0-1" },
		{ "pkg==1.0_post-2", "pkg==1.0_post-2" },
		{ "pkg==1.0.r3", "pkg==1.0.r3" },
		{ "pkg==1.0.post.dev0", "pkg==1.0.post.dev0" },
		{ "pkg==1.0dev", "pkg==1.0dev" },
		{ "pkg==1.0+ubuntu-1_2.x", "pkg==1.0+ubuntu-1_2.x" },
		{ "pkg==1.0rc1.*", "pkg==1.0rc1.*" },
		{ "pkg===1.0.tar.gz", "pkg===1.0.tar.gz" },
		{ "pkg==1.0rc1,<2;os_name=='posix'",
		    "pkg<2,==1.0rc1; os_name == \"posix\"" },
		{ "pkg>=1.0; (os_name=='posix' or os_name == \"nt\") and "
		  "extra == 'test'",
		    "pkg>=1.0; (os_name == \"posix\" or os_name == \"nt\") and "
		    "extra == \"test\"" },
		{ "pkg; 'linux' in sys_platform and platform_machine not  in "
		  "'arm64 aarch64'",
		    "pkg; \"linux\" in sys_platform and platform_machine not in "
		    "\"arm64 aarch64\"" },
		{ "pkg; platform_release == 'say \"hi\"'",
		    "pkg; platform_release == 'say \"hi\"'" },
		{ "pkg; python_full_version!='3.8.0' or implementation_name"
		  "=='cpython' or platform_python_implementation==''",
		    "pkg; python_full_version != \"3.8.0\" or "
		    "implementation_name == \"cpython\" or "
		    "platform_python_implementation == \"\"" },
		{ "pkg;((os_name=='a'))", "pkg; ((os_name == \"a\"))" },
		{ "pkg[x] (==1.0) ; extra === 'x'",
		    "pkg[x]==1.0; extra === \"x\"" },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++)
		expect_ok(cases[i][0], cases[i][1]);
}

/* The parsed fields are each in their canonical form. */
static void
test_fields(void **state)
{
	const char *s = "NumPy[Extra_B,extra-a] >= 1.2 , <2 ; "
	    "python_version>='3.8'";
	struct req rq;

	assert_int_equal(req_parse(s, strlen(s), &rq, err, sizeof(err)), 0);
	assert_string_equal(rq.rq_name, "numpy");
	assert_string_equal(rq.rq_extras, "extra-a,extra-b");
	assert_string_equal(rq.rq_spec, "<2,>=1.2");
	assert_string_equal(rq.rq_marker, "python_version >= \"3.8\"");
	assert_int_equal(req_parse("numpy", 5, &rq, err, sizeof(err)), 0);
	assert_string_equal(rq.rq_extras, "");
	assert_string_equal(rq.rq_spec, "");
	assert_string_equal(rq.rq_marker, "");
}

/* Names are limited to 100 characters. */
static void
test_name_length(void **state)
{
	char name[REQ_NAME_MAX + 2];

	memset(name, 'a', sizeof(name) - 1);
	name[REQ_NAME_MAX] = '\0';
	expect_ok(name, name);
	name[REQ_NAME_MAX] = 'a';
	name[REQ_NAME_MAX + 1] = '\0';
	expect_bad(name, "too long (101 characters, limit 100)");
}

/* Equivalent spellings normalize to the same canonical string. */
static void
test_equivalence(void **state)
{
	static const char *const pairs[][2] = {
		{ "NumPy >= 1.2 , <2", "numpy<2,>=1.2" },
		{ "pkg (>=1.0)", "PKG>=1.0" },
		{ "pkg ( <2, >=1 )", "pkg>=1,<2" },
		{ "pkg[b,a]", "Pkg[A , B]" },
		{ "zope.interface", "Zope_Interface" },
		{ "Django==4.2.*", "django == 4.2.*" },
		{ "pkg==1.0RC1", "pkg==1.0rc1" },
		{ "pkg;python_version>='3.8'and os_name=='posix'",
		    "pkg ; python_version >= \"3.8\"  and  os_name == \"posix\"" },
	};
	char a[REQ_FORMAT_SIZE], b[REQ_FORMAT_SIZE];
	size_t i;

	for (i = 0; i < NELEM(pairs); i++) {
		canon(pairs[i][0], a, sizeof(a));
		canon(pairs[i][1], b, sizeof(b));
		if (strcmp(a, b) != 0)
			fail_msg("'%s' -> '%s' but '%s' -> '%s'", pairs[i][0],
			    a, pairs[i][1], b);
	}
}

static void
test_hostile(void **state)
{
	static const char *const cases[][2] = {
		{ "--index-url=http://x", "options are not allowed" },
		{ "-r /etc/shadow", "options are not allowed" },
		{ "  -e .", "options are not allowed" },
		{ "-", "options are not allowed" },
		{ "../x", "paths are not allowed" },
		{ "./pkg", "paths are not allowed" },
		{ "/abs/path", "paths are not allowed" },
		{ "~/pkg", "paths are not allowed" },
		{ "pkg/sub", "paths are not allowed" },
		{ "pkg\\sub", "paths are not allowed" },
		{ "pkg @ file:///etc/passwd",
		    "direct references (name @ url) are not allowed" },
		{ "pkg@https://x/y.whl",
		    "direct references (name @ url) are not allowed" },
		{ "https://host/pkg.whl", "URLs are not allowed" },
		{ "git+https://x/y", "URLs are not allowed" },
		{ "file:pkg", "URLs are not allowed" },
		{ "pkg\nother", "control character \\x0a" },
		{ "pkg\tx", "control character \\x09" },
		{ "pkg\t>=1", "control character \\x09" },
		{ "pkg\r", "control character \\x0d" },
		{ "pkg\x7f", "control character \\x7f" },
		{ "pkg\x1b[31m", "control character \\x1b" },
		{ "nump\xd1\x83", "non-ASCII byte \\xd1" },
		{ "caf\xc3\xa9", "non-ASCII byte \\xc3" },
		{ "", "the requirement is empty" },
		{ "   ", "the requirement is empty" },
		{ "_pkg", "invalid package name \"_pkg\"" },
		{ "pkg-", "invalid package name \"pkg-\"" },
		{ "[x]", "expected a package name" },
		{ ">=1", "expected a package name" },
		{ "pkg>=1.0; __import__('os')",
		    "unknown marker variable \"__import__\"" },
		{ "pkg; os.system('x')", "unknown marker variable \"os\"" },
		{ "pkg;", "empty marker after ';'" },
		{ "pkg ;  ", "empty marker after ';'" },
		{ "pkg[", "unterminated extras" },
		{ "pkg[a", "unterminated extras" },
		{ "pkg[a b]", "expected ',' or ']'" },
		{ "pkg[a,]", "expected an extra name" },
		{ "pkg[-a]", "invalid extra name" },
		{ "pkg==", "missing version after '=='" },
		{ "pkg===", "missing version after '==='" },
		{ "pkg>=1,", "expected a version operator" },
		{ "pkg>=1,,<2", "expected a version operator" },
		{ "pkg>>1", "invalid version specifier" },
		{ "pkg~1", "expected a version operator" },
		{ "pkg=1", "expected a version operator" },
		{ "pkg>=.1", "it must start with a letter or digit" },
		{ "pkg>=1.*", "only allowed with == and !=" },
		{ "pkg~=1.*", "only allowed with == and !=" },
		{ "pkg==1.*.2", "'*' may only end a version" },
		{ "pkg==1*", "'*' may only end a version" },
		{ "pkg~=1", "~= needs a version with at least two parts" },
		/* pip reads these as file names, if such a file is there */
		{ "pkg==1.0.tar.gz", "not a PEP 440 version" },
		{ "pkg==1.0.whl", "not a PEP 440 version" },
		{ "pkg>=1.0.zip", "not a PEP 440 version" },
		{ "pkg==latest", "not a PEP 440 version" },
		{ "pkg==1.0+", "not a PEP 440 version" },
		{ "pkg==1.0+a..b", "not a PEP 440 version" },
		{ "pkg==1..0", "not a PEP 440 version" },
		{ "pkg==1.0-", "not a PEP 440 version" },
		{ "pkg==1!", "not a PEP 440 version" },
		{ "pkg==1.0rc1rc2", "not a PEP 440 version" },
		{ "pkg==x1.0", "not a PEP 440 version" },
		{ "pkg==1.0+x.*", "not a PEP 440 version" },
		{ "pkg (>=1.0", "expected ',' or ')'" },
		{ "pkg ()", "expected a version operator" },
		{ "pkg==1.0 extra", "unexpected text at \"extra\"" },
		{ "pkg other", "unexpected text" },
		{ "pkg ; python_version >= 3", "unquoted value \"3\"" },
		{ "pkg; python_version >=", "the marker ends early" },
		{ "pkg; python_version", "expected a comparison operator" },
		{ "pkg; python_version 'x'", "expected a comparison operator" },
		{ "pkg; == 'x'", "expected a marker variable or a quoted" },
		{ "pkg; (python_version >= '3'", "expected ')'" },
		{ "pkg; python_version >= '3')", "expected 'and', 'or'" },
		{ "pkg; python_version >= '3", "unterminated string" },
		{ "pkg; os_name = 'x'", "unexpected character in the marker" },
		{ "pkg; os_name == 'x' os_name", "expected 'and', 'or'" },
		{ "pkg; os_name == 'x' and", "the marker ends early" },
		{ "pkg; os_name not 'x'", "expected 'in' after 'not'" },
		{ "pkg; os_name == 'x' AND os_name == 'y'",
		    "unknown marker variable \"AND\"" },
		{ "pkg; ()", "expected a marker variable or a quoted" },
		{ "pkg; os_name == 'x'; os_name == 'y'",
		    "unexpected character in the marker" },
	};
	size_t i;

	for (i = 0; i < NELEM(cases); i++)
		expect_bad(cases[i][0], cases[i][1]);
}

/* An embedded NUL is caught even though strlen() would stop before it. */
static void
test_embedded_nul(void **state)
{
	static const char s[] = "pkg\0--index-url=http://evil";

	expect_bad_len(s, sizeof(s) - 1, "control character \\x00 at offset 3");
	assert_non_null(strstr(err, "\"pkg\\x00--index-url=http:"));
	expect_bad_len("\0", 1, "control character \\x00");
}

/* Control characters are escaped where the input is quoted. */
static void
test_error_quoting(void **state)
{
	expect_bad("pkg\nother", "control character");
	assert_non_null(strstr(err, "\"pkg\\nother\""));
	expect_bad("a\"b\\c", "paths");
	assert_non_null(strstr(err, "\"a\\\"b\\\\c\""));
	expect_bad("\xff\xfe", "non-ASCII");
	assert_non_null(strstr(err, "\"\\xff\\xfe\""));
}

/* Over-long strings are rejected by length, quoted only in part. */
static void
test_too_long(void **state)
{
	size_t big = 100 * 1024;
	char *s = malloc(big + 1);
	char msg[64];

	assert_non_null(s);
	memset(s, 'a', big);
	s[big] = '\0';
	expect_bad(s, "the requirement is too long (102400 bytes, limit 256)");
	assert_true(strlen(err) < 256);
	assert_non_null(strstr(err, "aaaa\"...:"));
	/* Exactly at the limit a string is judged on its content. */
	memset(s, ' ', REQ_MAX_LEN);
	memcpy(s, "pkg", 3);
	s[REQ_MAX_LEN] = '\0';
	expect_ok(s, "pkg");
	s[REQ_MAX_LEN] = ' ';
	s[REQ_MAX_LEN + 1] = '\0';
	snprintf(msg, sizeof(msg), "(%d bytes, limit %d)", REQ_MAX_LEN + 1,
	    REQ_MAX_LEN);
	expect_bad(s, msg);
	/* A long version. */
	memset(s, '1', 80);
	memcpy(s, "pkg==", 5);
	s[80] = '\0';
	expect_bad(s, "the version is too long (75 characters, limit 64)");
	free(s);
}

/* Deep nesting is refused rather than recursed into. */
static void
test_marker_depth(void **state)
{
	char s[REQ_MAX_LEN + 1];
	int i, o = 0;

	o += snprintf(s + o, sizeof(s) - o, "pkg; ");
	for (i = 0; i < 40; i++)
		s[o++] = '(';
	o += snprintf(s + o, sizeof(s) - o, "os_name=='x'");
	for (i = 0; i < 40; i++)
		s[o++] = ')';
	s[o] = '\0';
	expect_bad(s, "nested too deeply");
	/* Thirty levels are fine. */
	o = snprintf(s, sizeof(s), "pkg;");
	for (i = 0; i < 30; i++)
		s[o++] = '(';
	o += snprintf(s + o, sizeof(s) - o, "os_name=='x'");
	for (i = 0; i < 30; i++)
		s[o++] = ')';
	s[o] = '\0';
	canon(s, err, sizeof(err));
}

/* A short, or missing, error buffer is never overrun. */
static void
test_error_buffer(void **state)
{
	struct req rq;
	char small[8];

	assert_int_equal(req_parse("../x", 4, &rq, NULL, 0), -1);
	memset(small, 'x', sizeof(small));
	assert_int_equal(req_parse("../x", 4, &rq, small, sizeof(small)), -1);
	assert_int_equal(small[sizeof(small) - 1], '\0');
	assert_int_equal(req_parse(NULL, 10, &rq, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));
	req_format(&rq, small, 0);
	assert_int_equal(req_parse("numpy[x]", 8, &rq, NULL, 0), 0);
	req_format(&rq, small, 4);
	assert_string_equal(small, "num");
}

/* A list holds exactly the n strings of want, in that order. */
static void
check_list(const struct req_list *rl, const char *const *want, size_t n)
{
	size_t i;

	assert_int_equal(rl->rl_n, n);
	for (i = 0; i < n; i++)
		assert_string_equal(rl->rl_v[i], want[i]);
}

/* A list that must be empty: nothing in it, nothing to free. */
static void
check_empty(const struct req_list *rl)
{
	assert_null(rl->rl_v);
	assert_int_equal(rl->rl_n, 0);
}

/* Lists come out sorted, de-duplicated, one canonical form an entry. */
static void
test_list(void **state)
{
	const char *a[] = { "numpy<2,>=1.2", "requests[socks]",
		"NumPy >= 1.2 , <2", "Requests[SOCKS]", "attrs" };
	const char *b[] = { "attrs", "requests [socks]", "numpy (<2, >=1.2)" };
	const char *want[] = { "attrs", "numpy<2,>=1.2", "requests[socks]" };
	struct req_list out1, out2;

	assert_int_equal(req_validate_list(a, NELEM(a), &out1, err,
	    sizeof(err)), 0);
	check_list(&out1, want, NELEM(want));
	assert_int_equal(req_validate_list(b, NELEM(b), &out2, err,
	    sizeof(err)), 0);
	check_list(&out2, want, NELEM(want));
	req_list_free(&out1);
	req_list_free(&out2);
	assert_int_equal(req_validate_list(a, NELEM(a), NULL, err,
	    sizeof(err)), 0);
	assert_int_equal(req_validate_list(NULL, 0, &out1, err, sizeof(err)),
	    0);
	assert_int_equal(out1.rl_n, 0);
	req_list_free(&out1);
	check_empty(&out1);
}

/*
 * The order is the canonical forms' byte order, as the cache key has
 * always had it; spellings of one requirement are one entry, and only
 * those: another specifier or marker is another entry.
 */
static void
test_list_order(void **state)
{
	const char *in[] = { "Zope", "pkg<2", "pkg", "PKG", "pkg-x",
		"pkg ; os_name == 'nt'", "zope", "a_b", "A.B", "pkg" };
	const char *want[] = { "a-b", "pkg", "pkg-x",
		"pkg; os_name == \"nt\"", "pkg<2", "zope" };
	const char *same[] = { "x", "X", "x ", " x" };
	struct req_list out;

	assert_int_equal(req_validate_list(in, NELEM(in), &out, err,
	    sizeof(err)), 0);
	check_list(&out, want, NELEM(want));
	req_list_free(&out);
	assert_int_equal(req_validate_list(same, NELEM(same), &out, err,
	    sizeof(err)), 0);
	check_list(&out, same, 1);
	req_list_free(&out);
}

/* A copy owns its strings; freeing leaves a list empty, to free again. */
static void
test_list_copy_free(void **state)
{
	const char *in[] = { "b", "a" };
	const char *want[] = { "a", "b" };
	struct req_list out, copy, none = { NULL, 0 };

	assert_int_equal(req_validate_list(in, NELEM(in), &out, err,
	    sizeof(err)), 0);
	req_list_copy(&copy, &out);
	check_list(&copy, want, NELEM(want));
	assert_ptr_not_equal(copy.rl_v, out.rl_v);
	assert_ptr_not_equal(copy.rl_v[0], out.rl_v[0]);
	req_list_free(&out);
	check_empty(&out);
	check_list(&copy, want, NELEM(want));
	req_list_free(&copy);
	req_list_free(&copy);
	check_empty(&copy);
	req_list_copy(&copy, &none);
	assert_int_equal(copy.rl_n, 0);
	req_list_free(&copy);
	req_list_free(&none);
	check_empty(&none);
}

/* A bad entry fails the whole list and is named; the list is left empty. */
static void
test_list_bad(void **state)
{
	const char *a[] = { "numpy", "pkg @ https://x/y", "attrs" };
	const char *b[] = { "numpy", NULL };
	struct req_list out = { (char **)1, 7 };

	assert_int_equal(req_validate_list(a, NELEM(a), &out, err,
	    sizeof(err)), -1);
	check_empty(&out);
	assert_non_null(strstr(err, "requirement 2 of 3"));
	assert_non_null(strstr(err, "direct references"));
	assert_non_null(strstr(err, "\"pkg @ https://x/y\""));
	assert_int_equal(req_validate_list(b, NELEM(b), &out, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "requirement 2 of 2 is missing"));
	check_empty(&out);
	assert_int_equal(req_validate_list(NULL, 3, &out, err, sizeof(err)),
	    -1);
	assert_int_equal(req_validate_list(a, NELEM(a), &out, NULL, 0), -1);
}

/* More than REQ_MAX_COUNT entries are refused before any is parsed. */
static void
test_list_count(void **state)
{
	size_t i, n = 10000;
	const char **v = calloc(n, sizeof(*v));
	char name[16];
	char (*names)[16] = calloc(REQ_MAX_COUNT, sizeof(*names));
	struct req_list out;

	assert_non_null(v);
	assert_non_null(names);
	for (i = 0; i < n; i++)
		v[i] = "numpy";
	assert_int_equal(req_validate_list(v, n, &out, err, sizeof(err)), -1);
	check_empty(&out);
	assert_non_null(strstr(err, "too many requirements (10000, limit 64)"));
	for (i = 0; i < REQ_MAX_COUNT; i++) {
		snprintf(name, sizeof(name), "p%zu", i);
		memcpy(names[i], name, sizeof(name));
		v[i] = names[i];
	}
	assert_int_equal(req_validate_list(v, REQ_MAX_COUNT, &out, err,
	    sizeof(err)), 0);
	assert_int_equal(out.rl_n, REQ_MAX_COUNT);
	req_list_free(&out);
	v[REQ_MAX_COUNT] = "q";
	assert_int_equal(req_validate_list(v, REQ_MAX_COUNT + 1, &out, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "(65, limit 64)"));
	free(names);
	free(v);
}

/* A small deterministic generator, so that a failure can be replayed. */
static uint32_t
fuzz_rand(uint32_t *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 17;
	*st ^= *st << 5;
	return *st;
}

/*
 * Whatever is accepted must come back unchanged when its canonical form is
 * parsed again; whatever is rejected must say so.
 */
static void
fuzz_check(const char *s, size_t len)
{
	struct req rq, rq2;
	char buf[REQ_FORMAT_SIZE], buf2[REQ_FORMAT_SIZE];

	err[0] = 'x';
	if (req_parse(s, len, &rq, err, sizeof(err)) == -1) {
		if (strncmp(err, "invalid requirement \"", 21) != 0)
			fail_msg("bad error '%s'", err);
		return;
	}
	assert_string_equal(err, "");
	req_format(&rq, buf, sizeof(buf));
	if (strlen(buf) > REQ_MAX_LEN)
		return;
	if (req_parse(buf, strlen(buf), &rq2, err, sizeof(err)) == -1)
		fail_msg("'%.*s' -> '%s' does not parse: %s", (int)len, s, buf,
		    err);
	req_format(&rq2, buf2, sizeof(buf2));
	if (strcmp(buf, buf2) != 0)
		fail_msg("'%s' is not stable: '%s'", buf, buf2);
}

static void
test_fuzz_chars(void **state)
{
	static const char alpha[] = "aZ09-_.[],()<>=!~*;+ '\"@/:\\\n\x80";
	char s[32];
	uint32_t st = 12345;
	size_t len, j;
	int i;

	for (i = 0; i < 100000; i++) {
		len = fuzz_rand(&st) % sizeof(s);
		for (j = 0; j < len; j++)
			s[j] = alpha[fuzz_rand(&st) % sizeof(alpha)];
		fuzz_check(s, len);
	}
}

static void
test_fuzz_tokens(void **state)
{
	static const char *const frag[] = {
		"pkg", "Pkg_x", "a.b", "[", "]", ",", "(", ")", "==", ">=",
		"~=", "===", "<", "!=", ">", "1", "1.0", ".*", "2.*", ";", " ",
		"python_version", "os_name", "extra", "'3'", "\"x\"", "'",
		"and", "or", "not", "in", "-", "@", "/", "\t", "",
	};
	char s[REQ_MAX_LEN + 64];
	uint32_t st = 67890;
	size_t len, n, k, j;
	int i;

	for (i = 0; i < 100000; i++) {
		n = 1 + fuzz_rand(&st) % 16;
		for (len = 0, k = 0; k < n; k++) {
			j = fuzz_rand(&st) % NELEM(frag);
			memcpy(s + len, frag[j], strlen(frag[j]));
			len += strlen(frag[j]);
		}
		fuzz_check(s, len);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_name_length),
		cmocka_unit_test(test_equivalence),
		cmocka_unit_test(test_hostile),
		cmocka_unit_test(test_embedded_nul),
		cmocka_unit_test(test_error_quoting),
		cmocka_unit_test(test_too_long),
		cmocka_unit_test(test_marker_depth),
		cmocka_unit_test(test_error_buffer),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_list_order),
		cmocka_unit_test(test_list_copy_free),
		cmocka_unit_test(test_list_bad),
		cmocka_unit_test(test_list_count),
		cmocka_unit_test(test_fuzz_chars),
		cmocka_unit_test(test_fuzz_tokens),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
/* clang-format on */
