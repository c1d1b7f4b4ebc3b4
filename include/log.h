/* Logging in the manner of OpenBSD's log.h: to stderr, one prefix per process. */
#ifndef RM_LOG_H
#define RM_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

enum log_level {
	LOG_LEVEL_ERROR = 0,
	LOG_LEVEL_WARN = 1,
	LOG_LEVEL_INFO = 2,
	LOG_LEVEL_DEBUG = 3,
};

void log_init(const char *, int);
void log_plain(void);
void log_set_session(const char *);
void log_set_file(FILE *);
void log_timestamp(char *, size_t);
size_t log_quoted(char *, size_t, size_t, const char *, size_t);
void log_write_line(char *, size_t, size_t);
void log_setlevel(int);
int log_getlevel(void);
int log_parse_level(const char *);
const char *log_level_name(int);
const char *log_lastwarn(void);
void log_warn(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void
fatal_config(const char *, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx_config(const char *, ...)
    __attribute__((format(printf, 1, 2), noreturn));

#endif
