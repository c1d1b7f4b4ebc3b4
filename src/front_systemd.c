/*
 * systemd integration, without libsystemd: the notify protocol
 * (READY, STATUS, STOPPING, WATCHDOG: a datagram to $NOTIFY_SOCKET) and
 * socket activation ($LISTEN_PID, $LISTEN_FDS: the listening socket is fd
 * 3). Both are described in sd_notify(3) and sd_listen_fds(3). Outside
 * systemd every call here does nothing.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "front.h"
#include "log.h"
#include "util.h"

#define LISTEN_FDS_START 3

static struct sockaddr_un notify_addr;
static socklen_t notify_len;
static int notify_fd = -1;
static struct event *tick;
static uint64_t watchdog_usec;
static char last_status[128];

/* Send one notify message ("READY=1\nSTATUS=..."); errors are logged once. */
void
front_notify(const char *fmt, ...)
{
	static int warned;
	char msg[512];
	va_list ap;

	if (notify_fd == -1)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (sendto(notify_fd, msg, strlen(msg), MSG_NOSIGNAL,
	        (struct sockaddr *)&notify_addr, notify_len) == -1 &&
	    !warned) {
		warned = 1;
		log_warn("notify %s",
		    notify_addr.sun_path[0] != '\0' ? notify_addr.sun_path
		                                    : "(abstract socket)");
	}
}

/* STATUS= with the session count, when it changed. */
static void
front_notify_status(void)
{
	char status[128];

	snprintf(status, sizeof(status), "%s: %d session%s",
	    front_draining() ? "draining" : "serving", front_session_count(),
	    front_session_count() == 1 ? "" : "s");
	if (strcmp(status, last_status) == 0)
		return;
	strcpy(last_status, status);
	front_notify("STATUS=%s", status);
}

/* The watchdog and the status line: from the loop, so a stuck loop stops
 * both. */
static void
tick_cb(evutil_socket_t fd, short ev, void *arg)
{
	if (watchdog_usec != 0)
		front_notify("WATCHDOG=1");
	front_notify_status();
}

/* A number from the environment, or 0. */
static uint64_t
env_number(const char *name)
{
	const char *s = getenv(name);
	char *end;
	unsigned long long v;

	if (s == NULL || *s == '\0')
		return 0;
	errno = 0;
	v = strtoull(s, &end, 10);
	return errno != 0 || *end != '\0' ? 0 : v;
}

/*
 * Read $NOTIFY_SOCKET and $WATCHDOG_USEC, and remove them (and the socket
 * activation variables) from the environment, so that no child sees them.
 */
void
front_systemd_init(void)
{
	const char *path = getenv("NOTIFY_SOCKET");
	uint64_t wpid = env_number("WATCHDOG_PID");
	size_t len;

	if (wpid == 0 || wpid == (uint64_t)getpid())
		watchdog_usec = env_number("WATCHDOG_USEC");
	if (path != NULL && (path[0] == '/' || path[0] == '@') &&
	    (len = strlen(path)) < sizeof(notify_addr.sun_path)) {
		memset(&notify_addr, 0, sizeof(notify_addr));
		notify_addr.sun_family = AF_UNIX;
		memcpy(notify_addr.sun_path, path, len);
		if (path[0] == '@') /* the abstract namespace */
			notify_addr.sun_path[0] = '\0';
		notify_len = offsetof(struct sockaddr_un, sun_path) + len +
		    (path[0] == '/');
		/* Never block the loop on a notify socket nobody reads. */
		notify_fd = socket(
		    AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (notify_fd == -1)
			log_warn("notify socket");
	} else if (path != NULL)
		log_warnx(
		    "NOTIFY_SOCKET '%s' is not a socket path: ignored", path);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
}

/* After listening: READY=1, then the status and the watchdog on a timer. */
void
front_systemd_ready(void)
{
	struct timeval tv = {1, 0};
	uint64_t half;

	if (notify_fd == -1)
		return;
	front_notify("READY=1\nMAINPID=%ld", (long)getpid());
	front_notify_status();
	if (watchdog_usec != 0) {
		half = watchdog_usec / 2;
		if (half < 10000) /* 10 ms: a timer that never spins */
			half = 10000;
		if (half < 1000000) {
			tv.tv_sec = 0;
			tv.tv_usec = (suseconds_t)half;
		}
		log_info("systemd watchdog: every %llu us",
		    (unsigned long long)half);
	}
	tick = event_new(front_base, -1, EV_PERSIST, tick_cb, NULL);
	event_add(tick, &tv);
}

void
front_systemd_stopping(void)
{
	front_notify("STOPPING=1");
	front_notify_status();
}

void
front_systemd_free(void)
{
	if (tick != NULL)
		event_free(tick);
	tick = NULL;
	if (notify_fd != -1)
		close(notify_fd);
	notify_fd = -1;
}

/*
 * The socket systemd passed (socket activation), or -1 when none was. It
 * must be exactly one listening stream socket: anything else is a unit
 * file mistake, and fatal.
 */
int
front_systemd_listen_fd(void)
{
	uint64_t pid = env_number("LISTEN_PID"), n = env_number("LISTEN_FDS");
	int type = 0, listening = 0;
	socklen_t len = sizeof(type);
	struct stat st;

	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (pid != (uint64_t)getpid() || n == 0)
		return -1;
	if (n != 1)
		fatalx("socket activation: %llu sockets passed, expected one",
		    (unsigned long long)n);
	if (fstat(LISTEN_FDS_START, &st) == -1 || !S_ISSOCK(st.st_mode) ||
	    getsockopt(LISTEN_FDS_START, SOL_SOCKET, SO_TYPE, &type, &len) ==
	        -1 ||
	    type != SOCK_STREAM)
		fatalx("socket activation: fd 3 is not a stream socket");
	len = sizeof(listening);
	if (getsockopt(LISTEN_FDS_START, SOL_SOCKET, SO_ACCEPTCONN, &listening,
	        &len) == -1 ||
	    !listening)
		fatalx("socket activation: fd 3 is not listening (Accept=no "
		       "is needed)");
	if (fcntl(LISTEN_FDS_START, F_SETFD, FD_CLOEXEC) == -1)
		fatal("socket activation: fcntl");
	return LISTEN_FDS_START;
}
