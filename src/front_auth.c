/*
 * Authentication: bearer tokens from --token-file (lines NAME:TOKEN[:admin],
 * '#' starts a comment). The file must not be readable by group or others.
 * Tokens are kept only as SHA-256 digests and compared in constant time
 * against every entry. SIGHUP re-reads the file; established sessions stay.
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/string.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "front.h"
#include "log.h"
#include "util.h"

#define AUTH_MAX_TOKENS 1024
#define AUTH_MAX_LINE 1024

struct auth_token {
	char at_name[64];
	unsigned char at_digest[32];
	int at_admin;
};

static struct auth_token *auth_tokens;
static size_t auth_ntokens;
static int auth_enabled;

static void
auth_digest(const char *tok, size_t len, unsigned char *out)
{
	unsigned int n = 32;

	EVP_Digest(tok, len, out, &n, EVP_sha256(), NULL);
}

/*
 * Whether s is printable ASCII without a space at either end: what an
 * authorization header carries as it is (no controls, no other bytes, and
 * HTTP trims the ends), and what a log line and a grpc client show.
 */
static int
auth_printable(const char *s)
{
	size_t i, n = strlen(s);

	for (i = 0; i < n; i++)
		if (s[i] < 0x20 || s[i] > 0x7e)
			return 0;
	return n == 0 || (s[0] != ' ' && s[n - 1] != ' ');
}

/* Parse one NAME:TOKEN[:admin] line into t; -1 with a reason. */
static int
auth_parse_line(char *line, struct auth_token *t, const char **why)
{
	char *name = line, *tok, *flag;

	if ((tok = strchr(name, ':')) == NULL) {
		*why = "expected NAME:TOKEN[:admin]";
		return -1;
	}
	*tok++ = '\0';
	if ((flag = strchr(tok, ':')) != NULL) {
		*flag++ = '\0';
		if (strcmp(flag, "admin") != 0) {
			*why = "the third field may only be 'admin'";
			return -1;
		}
	}
	if (*name == '\0' || strlen(name) >= sizeof(t->at_name) ||
	    !auth_printable(name)) {
		*why = "the name must be 1 to 63 printable ASCII characters, "
		       "without a space at either end";
		return -1;
	}
	if (strlen(tok) < 16) {
		*why = "the token must be at least 16 characters";
		return -1;
	}
	if (!auth_printable(tok)) {
		/* A client could not send it in an authorization header. */
		*why = "the token may hold only printable ASCII characters, "
		       "without a space at either end";
		return -1;
	}
	strlcpy(t->at_name, name, sizeof(t->at_name));
	auth_digest(tok, strlen(tok), t->at_digest);
	t->at_admin = flag != NULL;
	explicit_bzero(tok, strlen(tok));
	return 0;
}

/* The entry among t[0..n) with this digest, or -1. */
static int
auth_find(const struct auth_token *t, size_t n, const unsigned char *digest)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (CRYPTO_memcmp(t[i].at_digest, digest, 32) == 0)
			return (int)i;
	return -1;
}

/* Check the file's owner and mode: nobody but its owner may read it. */
static int
auth_check_file(int fd, const char *path)
{
	struct stat sb;

	if (fstat(fd, &sb) == -1) {
		log_warn("--token-file %s", path);
		return -1;
	}
	if (!S_ISREG(sb.st_mode)) {
		log_warnx("--token-file %s: not a regular file", path);
		return -1;
	}
	if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
		log_warnx("--token-file %s: mode %04o lets group or others "
		          "read it; chmod 600 it",
		    path, (unsigned)(sb.st_mode & 07777));
		return -1;
	}
	return 0;
}

/* Read the whole token file; on any error, keep what was loaded before. */
static int
auth_read(const char *path)
{
	struct auth_token *t = xcalloc(AUTH_MAX_TOKENS, sizeof(*t));
	char line[AUTH_MAX_LINE + 2];
	const char *why = NULL;
	char dupwhy[192];
	size_t n = 0, lineno = 0;
	FILE *f;
	int fd, dup;

	/* Without blocking: a FIFO must be refused, not waited on. */
	if ((fd = open(path,
	         O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)) ==
	    -1) {
		log_warn("--token-file %s", path);
		free(t);
		return -1;
	}
	if (auth_check_file(fd, path) == -1 || (f = fdopen(fd, "r")) == NULL) {
		close(fd);
		free(t);
		return -1;
	}
	while (fgets(line, sizeof(line), f) != NULL && why == NULL) {
		lineno++;
		if (strchr(line, '\n') == NULL &&
		    strlen(line) > AUTH_MAX_LINE) {
			why = "line too long (at most 1024 characters)";
			break;
		}
		line[strcspn(line, "\r\n")] = '\0';
		if (line[strspn(line, " \t")] == '#' ||
		    line[strspn(line, " \t")] == '\0')
			continue;
		if (n == AUTH_MAX_TOKENS)
			why = "too many tokens";
		else if (auth_parse_line(line, &t[n], &why) == 0 &&
		    (dup = auth_find(t, n, t[n].at_digest)) != -1) {
			snprintf(dupwhy, sizeof(dupwhy),
			    "the token of '%s' is also the token of '%s'",
			    t[n].at_name, t[dup].at_name);
			why = dupwhy;
		} else if (why == NULL)
			n++;
	}
	fclose(f);
	explicit_bzero(line, sizeof(line));
	if (why != NULL) {
		log_warnx("--token-file %s:%zu: %s", path, lineno, why);
		free(t);
		return -1;
	}
	free(auth_tokens);
	auth_tokens = t;
	auth_ntokens = n;
	log_info("%zu token(s) loaded from %s", n, path);
	return 0;
}

/* At start: load the tokens, or refuse to serve a network without them. */
void
front_auth_init(void)
{
	if (front_conf.fc_token_file != NULL) {
		if (auth_read(front_conf.fc_token_file) == -1)
			fatalx_config("cannot use --token-file %s",
			    front_conf.fc_token_file);
		auth_enabled = 1;
		return;
	}
	if (strcmp(front_conf.fc_host, "127.0.0.1") == 0 ||
	    strcmp(front_conf.fc_host, "::1") == 0 ||
	    strncmp(front_conf.fc_host, "127.", 4) == 0)
		return;
	if (!front_conf.fc_allow_unauth)
		fatalx_config(
		    "refusing to listen on %s without --token-file: anyone "
		    "who can reach it could run code here. Give a token file, "
		    "or pass --allow-unauthenticated on",
		    front_conf.fc_host);
	log_warnx(
	    "*** listening on %s WITHOUT AUTHENTICATION "
	    "(--allow-unauthenticated on): anyone who can reach it can run "
	    "code here ***",
	    front_conf.fc_host);
}

/* SIGHUP: re-read the token file; a bad file keeps the old tokens. */
void
front_auth_reload(void)
{
	if (auth_enabled && auth_read(front_conf.fc_token_file) == -1)
		log_warnx("token file not reloaded; the previous tokens stay");
}

int
front_auth_enabled(void)
{
	return auth_enabled;
}

/*
 * Check an authorization header value ("Bearer TOKEN"). Returns the index
 * of the matching token, or -1. Every entry is compared, in constant time.
 */
int
front_auth_check(const char *header)
{
	unsigned char dig[32];
	size_t i;
	int found = -1;

	if (header == NULL || strncasecmp(header, "Bearer ", 7) != 0)
		return -1;
	auth_digest(header + 7, strlen(header + 7), dig);
	for (i = 0; i < auth_ntokens; i++)
		if (CRYPTO_memcmp(dig, auth_tokens[i].at_digest, 32) == 0)
			found = (int)i;
	return found;
}

const char *
front_auth_name(int idx)
{
	if (idx < 0 || (size_t)idx >= auth_ntokens)
		return "";
	return auth_tokens[idx].at_name;
}

/* Is this token an admin token (NAME:TOKEN:admin)? */
int
front_auth_is_admin(int idx)
{
	if (idx < 0 || (size_t)idx >= auth_ntokens)
		return 0;
	return auth_tokens[idx].at_admin;
}
