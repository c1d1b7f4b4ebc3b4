/* Logging to stderr with a per-process prefix, as OpenBSD's log.c does. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static const char *log_prefix = "remotemedia";
static int log_level = LOG_LEVEL_INFO;
/* The last warning or error, printed or not: a failure's reason. */
static char log_last[256];

void
log_init(const char *prefix, int level)
{
	log_prefix = prefix;
	log_level = level;
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

/* Map a --log-level word to its level, or -1. */
int
log_parse_level(const char *s)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(s, names[i]) == 0)
			return (int)i;
	return -1;
}

/* Write one line: prefix, message and, if errnum is non-zero, its text. */
static void
vlog(int level, int errnum, const char *fmt, va_list ap)
{
	static const char *tags[] = {"error", "warn", "info", "debug"};
	char msg[2048], *p;

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
	if (errnum != 0)
		fprintf(stderr, "%s: %s: %s: %s\n", log_prefix, tags[level],
		    msg, strerror(errnum));
	else
		fprintf(stderr, "%s: %s: %s\n", log_prefix, tags[level], msg);
	fflush(stderr);
}

void
log_warn(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vlog(LOG_LEVEL_WARN, saved, fmt, ap);
	va_end(ap);
	errno = saved;
}

void
log_warnx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LEVEL_WARN, 0, fmt, ap);
	va_end(ap);
}

void
log_info(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LEVEL_INFO, 0, fmt, ap);
	va_end(ap);
}

void
log_debug(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LEVEL_DEBUG, 0, fmt, ap);
	va_end(ap);
}

void
fatal(const char *fmt, ...)
{
	va_list ap;
	int saved = errno;

	va_start(ap, fmt);
	vlog(LOG_LEVEL_ERROR, saved, fmt, ap);
	va_end(ap);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(LOG_LEVEL_ERROR, 0, fmt, ap);
	va_end(ap);
	exit(1);
}
