/*
 * Logging to stderr, as OpenBSD's log.c does, in logfmt key=value lines
 * (journald keeps them as they are):
 *
 *   ts=2026-12-04T20:35:12.123Z level=info proc=front
 *       session=6f1c...  msg="..." error="..."
 *
 * session= is the process's own session (a worker), or the session a
 * front line is about (a 32-hex-digit id after "session "). rmctl, a
 * command-line tool, prints plain "rmctl: message" lines instead.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *log_prefix = "remotemedia";
static int log_level = LOG_LEVEL_INFO;
static int log_kv = 1;
static FILE *log_fp; /* NULL: stderr */
static char log_session[33];
/* The last warning or error, printed or not: a failure's reason. */
static char log_last[256];

void
log_init(const char *prefix, int level)
{
	log_prefix = prefix;
	log_level = level;
}

/* Plain "prefix: level: message" lines, for a command-line tool. */
void
log_plain(void)
{
	log_kv = 0;
}

/* The session this process serves: every line says session=ID. */
void
log_set_session(const char *id)
{
	snprintf(log_session, sizeof(log_session), "%s", id);
}

/* Now, as an RFC 3339 UTC timestamp with milliseconds. */
void
log_timestamp(char *buf, size_t len)
{
	struct timespec ts;
	struct tm tm;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
	    tm.tm_sec, ts.tv_nsec / 1000000);
}

/*
 * Append s (len bytes) to buf as a logfmt value: quoted, backslashes and
 * quotes escaped, cut to fit. Returns the new length of buf's contents.
 */
size_t
log_quoted(char *buf, size_t off, size_t cap, const char *s, size_t len)
{
	size_t i;

	if (off + 2 >= cap)
		return off;
	buf[off++] = '"';
	for (i = 0; i < len && off + 3 < cap; i++) {
		if (s[i] == '"' || s[i] == '\\')
			buf[off++] = '\\';
		buf[off++] = s[i];
	}
	buf[off++] = '"';
	buf[off] = '\0';
	return off;
}

/*
 * Log to f from now on, not stderr: the worker's fd 2 becomes the capture
 * of what the session writes (worker_output.c), which the C stderr of
 * extensions must still reach.
 */
void
log_set_file(FILE *f)
{
	log_fp = f;
}

static FILE *
log_out(void)
{
	return log_fp != NULL ? log_fp : stderr;
}

/* Write one whole line with one write(2): processes share the log. */
void
log_write_line(char *buf, size_t len, size_t cap)
{
	ssize_t n;
	size_t off = 0;

	if (len + 1 >= cap)
		len = cap - 2;
	buf[len++] = '\n';
	while (off < len) {
		n = write(fileno(log_out()), buf + off, len - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		off += (size_t)n;
	}
}

/* The session id a front line is about: 32 hex digits after "session ". */
static int
log_find_session(const char *msg, char *id)
{
	const char *p = msg;
	size_t n;

	while ((p = strstr(p, "session ")) != NULL) {
		p += 8;
		n = strspn(p, "0123456789abcdef");
		if (n == 32 && (p[32] == '\0' || strchr(" :,)'", p[32]))) {
			memcpy(id, p, 32);
			id[32] = '\0';
			return 1;
		}
	}
	return 0;
}

void
log_setlevel(int level)
{
	log_level = level;
}

int
log_getlevel(void)
{
	return log_level;
}

/* The last warning or error logged, or "" if there was none. */
const char *
log_lastwarn(void)
{
	return log_last;
}

static const char *log_names[] = {"error", "warn", "info", "debug"};

/* A level's --log-level word (and logfmt level=); "info" if out of range. */
const char *
log_level_name(int level)
{
	return level >= LOG_LEVEL_ERROR && level <= LOG_LEVEL_DEBUG
	    ? log_names[level]
	    : "info";
}

/* Map a --log-level word to its level, or -1. */
int
log_parse_level(const char *s)
{
	size_t i;

	for (i = 0; i < sizeof(log_names) / sizeof(log_names[0]); i++)
		if (strcmp(s, log_names[i]) == 0)
			return (int)i;
	return -1;
}

/* Write one line: prefix, message and, if errnum is non-zero, its text. */
static void
vlog(int level, int errnum, const char *fmt, va_list ap)
{
	char msg[2048], *p, ts[40], id[33], line[4800];
	size_t n;

	if (level > log_level && level > LOG_LEVEL_WARN)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	/* One message, one line: text from a peer cannot forge log lines. */
	for (p = msg; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	if (level <= LOG_LEVEL_WARN) {
		if (errnum != 0)
			snprintf(log_last, sizeof(log_last), "%.200s: %.50s",
			    msg, strerror(errnum));
		else
			snprintf(log_last, sizeof(log_last), "%.250s", msg);
	}
	if (level > log_level)
		return;
	if (!log_kv) {
		if (errnum != 0)
			fprintf(log_out(), "%s: %s: %s: %s\n", log_prefix,
			    log_level_name(level), msg, strerror(errnum));
		else
			fprintf(log_out(), "%s: %s: %s\n", log_prefix,
			    log_level_name(level), msg);
		fflush(log_out());
		return;
	}
	log_timestamp(ts, sizeof(ts));
	n = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s proc=%s", ts,
	    log_level_name(level), log_prefix);
	if (log_session[0] != '\0' || log_find_session(msg, id))
		n += (size_t)snprintf(line + n, sizeof(line) - n, " session=%s",
		    log_session[0] != '\0' ? log_session : id);
	n += (size_t)snprintf(line + n, sizeof(line) - n, " msg=");
	n = log_quoted(line, n, sizeof(line), msg, strlen(msg));
	if (errnum != 0 && n + 8 < sizeof(line)) {
		n += (size_t)snprintf(line + n, sizeof(line) - n, " error=");
		n = log_quoted(line, n, sizeof(line), strerror(errnum),
		    strlen(strerror(errnum)));
	}
	log_write_line(line, n, sizeof(line));
}

/*
 * The body of each entry point below: its printf-style arguments, through
 * vlog at level, with errnum's text if it is non-zero.
 */
#define LOG_VA(level, errnum) \
	do { \
		va_list ap; \
\
		va_start(ap, fmt); \
		vlog((level), (errnum), fmt, ap); \
		va_end(ap); \
	} while (0)

void
log_warn(const char *fmt, ...)
{
	int saved = errno;

	LOG_VA(LOG_LEVEL_WARN, saved);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	LOG_VA(LOG_LEVEL_WARN, 0);
}

void
log_info(const char *fmt, ...)
{
	LOG_VA(LOG_LEVEL_INFO, 0);
}

void
log_debug(const char *fmt, ...)
{
	LOG_VA(LOG_LEVEL_DEBUG, 0);
}

void
fatal(const char *fmt, ...)
{
	LOG_VA(LOG_LEVEL_ERROR, errno);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	LOG_VA(LOG_LEVEL_ERROR, 0);
	exit(1);
}

/* The configuration cannot work (a file it names, a bad value): exit 2. */
void
fatal_config(const char *fmt, ...)
{
	LOG_VA(LOG_LEVEL_ERROR, errno);
	exit(2);
}

void
fatalx_config(const char *fmt, ...)
{
	LOG_VA(LOG_LEVEL_ERROR, 0);
	exit(2);
}
