/*
 * remotemediad: the front process. It parses flags, listens, and runs the
 * one libevent loop that serves every connection and every session.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/listener.h>

#include "front.h"
#include "log.h"
#include "util.h"

#define FRONT_SHUTDOWN_MS 10000
#define FRONT_GOAWAY_MS 1000 /* from the notice to the final GOAWAY */

struct front_config front_conf;
struct event_base *front_base;

static struct evconnlistener *listener;
static struct event *accept_resume; /* after a pause (front_accept_failed) */
static int front_argc; /* for SIGHUP, which parses them again */
static char **front_argv;
static int draining;

int
front_draining(void)
{
	return draining;
}

void
front_conn_closed(struct conn *c)
{
}

static struct event *goaway_timer;
static int goaway_final; /* the drain's final GOAWAY is out */

/* The drain's final GOAWAY, once. now: written at once (see front_h2.c). */
static void
drain_final_goaway(int now)
{
	if (goaway_final)
		return;
	goaway_final = 1;
	front_h2_goaway_all(1, now);
}

/*
 * During the drain, the last session or stream gone ends the loop: the
 * final GOAWAY goes, and the loop runs a little longer so that it and the
 * last trailers are written.
 */
static void
drain_check(void)
{
	struct timeval tv = {0, 100 * 1000};

	if (!draining || draining == 2 || front_session_count() > 0 ||
	    front_h2_streams() > 0)
		return;
	draining = 2;
	drain_final_goaway(0);
	event_base_loopexit(front_base, &tv);
}

void
front_session_freed(void)
{
	drain_check();
}

void
front_stream_freed(void)
{
	drain_check();
}

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	char host[INET6_ADDRSTRLEN], peer[80];
	uint16_t port = 0;

	host[0] = '\0';
	if (sa->sa_family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		port = ntohs(sin->sin_port);
	} else if (sa->sa_family == AF_INET6) {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		port = ntohs(sin6->sin6_port);
	}
	snprintf(peer, sizeof(peer), "%s:%u", host, port);
	front_h2_accept(fd, peer, sock_is_loopback(sa));
}

static void
accept_resume_cb(evutil_socket_t fd, short ev, void *arg)
{
	evconnlistener_enable(arg);
}

/*
 * A listener's accept failed. Out of descriptors (or memory), it stops
 * accepting for a moment instead of spinning on the error; *resume is its
 * timer, made here the first time, for its owner to free with it.
 */
void
front_accept_failed(struct evconnlistener *l, struct event **resume,
    const char *what, uint64_t pause_ms)
{
	int e = EVUTIL_SOCKET_ERROR();

	if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) {
		log_warn("%s: accept", what);
		return;
	}
	if (*resume == NULL) {
		if ((*resume = evtimer_new(front_base, accept_resume_cb, l)) ==
		    NULL)
			fatal("evtimer_new");
		log_warnx("%s: accept: %s; pausing new connections", what,
		    strerror(e));
	}
	evconnlistener_disable(l);
	front_timer_add(*resume, pause_ms);
}

static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	front_accept_failed(l, &accept_resume, "gRPC", 100);
}

/*
 * Socket activation: the socket systemd passed replaces --listen, and its
 * address is the one the token rules (front_auth_init) judge.
 */
static int
front_activated(void)
{
	int fd = front_systemd_listen_fd();

	if (fd == -1)
		return -1;
	front_config_listen_passed();
	if (sock_hostport(fd, front_conf.fc_host, sizeof(front_conf.fc_host),
	        &front_conf.fc_port) == -1)
		fatalx("socket activation: fd 3 is not an IPv4 or IPv6 socket");
	return fd;
}

/* Bind the listening socket (or take systemd's, fd != -1) and log the
 * address actually bound. */
static void
front_listen(int fd)
{
	struct sockaddr_storage ss;
	int len = sizeof(ss);
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;
	char host[INET6_ADDRSTRLEN];
	uint16_t port;

	if (fd != -1) {
		/* systemd passes it blocking; libevent accepts until EAGAIN. */
		if (evutil_make_socket_nonblocking(fd) == -1)
			fatal("socket activation: fcntl");
		listener = evconnlistener_new(
		    front_base, accept_cb, NULL, flags, -1, fd);
		if (listener == NULL)
			fatalx("socket activation: cannot listen on fd %d", fd);
	} else {
		memset(&ss, 0, sizeof(ss));
		if (evutil_parse_sockaddr_port(
		        front_conf.fc_host, (struct sockaddr *)&ss, &len) == -1)
			fatalx("--listen: '%s' is not an IP address",
			    front_conf.fc_host);
		if (ss.ss_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = htons(
			    front_conf.fc_port);
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(
			    front_conf.fc_port);
		listener = evconnlistener_new_bind(front_base, accept_cb, NULL,
		    flags | LEV_OPT_REUSEABLE, 512, (struct sockaddr *)&ss,
		    len);
		if (listener == NULL)
			fatal("listen on %s:%u", front_conf.fc_host,
			    front_conf.fc_port);
	}
	evconnlistener_set_error_cb(listener, accept_error_cb);
	if (sock_hostport(evconnlistener_get_fd(listener), host, sizeof(host),
	        &port) == -1)
		fatal("getsockname");
	log_info(strchr(host, ':') != NULL ? "listening on [%s]:%u%s"
	                                   : "listening on %s:%u%s",
	    host, port, fd != -1 ? " (socket activation)" : "");
}

static void
sigchld_cb(evutil_socket_t sig, short ev, void *arg)
{
	front_worker_reap();
}

static struct event *drain_timer;

/* The drain grace is over: stop what is left, exit once it is reaped. */
static void
drain_timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct timeval hard = {5, 0};

	log_info("drain grace over: stopping %d session(s), %d stream(s)",
	    front_session_count(), front_h2_streams());
	drain_final_goaway(1);
	front_session_kill_all();
	event_base_loopexit(front_base, &hard);
}

/* A round trip after the notice: the final GOAWAY, and the streams that
 * only their clients would end are ended. */
static void
goaway_cb(evutil_socket_t fd, short ev, void *arg)
{
	drain_final_goaway(1);
	front_h2_end_streams("the server is shutting down");
}

/*
 * SIGTERM or SIGINT: drain. No new connection is taken; GOAWAY goes to
 * every client, first as a notice, FRONT_GOAWAY_MS later as the final one
 * (front_h2_goaway_all). Meanwhile new sessions are refused and Health
 * says NOT_SERVING. Other streams still open at the final GOAWAY are ended
 * (UNAVAILABLE); running calls may finish within the grace; then every
 * session is stopped and its directory removed.
 */
static void
sigterm_cb(evutil_socket_t sig, short ev, void *arg)
{
	struct timeval tv = {FRONT_SHUTDOWN_MS / 1000, 0};
	struct timeval notice = {0, FRONT_GOAWAY_MS * 1000};
	struct timeval flush = {0, 100 * 1000};

	if (draining)
		return;
	log_info("signal %d: shutting down", (int)sig);
	draining = 1;
	front_systemd_stopping();
	if (listener != NULL) {
		evconnlistener_free(listener);
		listener = NULL;
	}
	if (accept_resume != NULL) {
		event_free(accept_resume);
		accept_resume = NULL;
	}
	front_pool_stop(0);
	front_session_drain_all();
	front_env_kill_all();
	if (front_session_count() == 0 && front_h2_streams() == 0) {
		/* Nothing to wait for: the final GOAWAY, and out, once it is
		 * written (TLS writes it from the loop). */
		draining = 2;
		drain_final_goaway(1);
		event_base_loopexit(
		    front_base, front_h2_conns() > 0 ? &flush : NULL);
		return;
	}
	front_h2_goaway_all(0, 1);
	goaway_timer = evtimer_new(front_base, goaway_cb, NULL);
	evtimer_add(goaway_timer, &notice);
	/* Running calls may finish within the grace; then stop the rest. */
	drain_timer = evtimer_new(front_base, drain_timeout_cb, NULL);
	evtimer_add(drain_timer, &tv);
}

/* --env-cache-dir defaults to envs/ under the state dir. */
static void
front_env_setup_dir(void)
{
	char path[4096];

	if (front_conf.fc_env_cache_dir != NULL)
		return;
	snprintf(path, sizeof(path), "%s/envs", front_conf.fc_state_dir);
	front_conf.fc_env_cache_dir = xstrdup(path);
}

/* SIGHUP: reload the tokens; sessions stay. */
static void
sighup_cb(evutil_socket_t sig, short ev, void *arg)
{
	char err[512];
	int sessions;
	uint32_t streams = front_conf.fc_max_streams;

	log_info("SIGHUP: reloading");
	front_auth_reload();
	front_tls_reload();
	if (front_config_reload(&front_conf, front_argc, front_argv, &sessions,
	        err, sizeof(err)) == -1)
		log_warnx("SIGHUP: limits not reloaded, the previous ones "
		          "stay: %s",
		    err);
	else {
		if (sessions > 0)
			front_pool_retire_all();
		else
			front_pool_reloaded();
		/* A higher bound reaches open connections too, so that what
		 * new Readies say holds there; a lower one only new ones: a
		 * client that holds more on a connection, and keeps to what
		 * its last Ready said, would wait for a stream otherwise. */
		if (front_conf.fc_max_streams > streams)
			front_h2_settings_all();
	}
}

/* Parse flags and the config file; --help, --man and errors exit here. */
static int
front_parse_args(int argc, char **argv)
{
	char err[512];
	int rv;

	front_config_defaults(&front_conf);
	rv = front_config_parse(&front_conf, argc, argv, err, sizeof(err));
	switch (rv) {
	case CONFIG_HELP:
		front_config_usage();
		exit(0);
	case CONFIG_MAN:
		front_config_man(stdout);
		exit(0);
	case CONFIG_ERROR:
		fprintf(stderr, "remotemediad: %s\n", err);
		fprintf(stderr, "remotemediad --help lists the options\n");
		exit(2);
	}
	front_config_keep(&front_conf);
	return rv;
}

/*
 * Every session holds descriptors in the front (its socketpair, pipes, the
 * stream's connection), so the soft limit that systemd and shells give
 * (1024) would cap the daemon far below --max-sessions. Raise it to the
 * hard limit; workers set their own.
 */
static void
front_raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur >= rl.rlim_max)
		return;
	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == -1)
		log_warn("setrlimit RLIMIT_NOFILE %llu",
		    (unsigned long long)rl.rlim_max);
	else
		log_debug(
		    "open files: up to %llu", (unsigned long long)rl.rlim_cur);
}

/* What the loop's polling counts (FRONT_FROM_CLIENT and the others). */
static unsigned long front_traffic_count[FRONT_TRAFFIC_KINDS];

/* Whether the client whose message came last is on this host. */
static int front_local_client;

/* Traffic (include/front.h says which kinds): worth polling for more. */
void
front_traffic(int what)
{
	front_traffic_count[what]++;
}

/* The client of the message counted next connected over loopback. */
void
front_client_local(int local)
{
	front_local_client = local;
}

/*
 * The loop. After traffic it polls for --busy-poll microseconds before it
 * sleeps: on a virtual machine, waking a halted vCPU costs tens of
 * microseconds, paid twice per hop of a call (client, front, worker, front,
 * client). Timers alone do not keep it polling.
 *
 * It polls only while polling pays, and it judges that for each side
 * apart. After relaying a client's message it waits for a worker, and
 * after a worker's message, or an answer of its own (Echo), for the
 * client: a worker answers a call in tens of microseconds, while a client
 * may send its next call much later, and a poll for it would only hold a
 * CPU that the client needs. A poll that ran out before the side it waited
 * for sent anything stops polling for that side; a message from a side
 * within 1.5 x the bound (the half for waking up) of the front's last one
 * to it, or of the client's last bytes, starts it again. A client's other
 * frames (grpcio sends a WINDOW_UPDATE right after each answer) keep the
 * front polling for its next message while polling for it pays, and turn
 * nothing on: a client whose next call is far off leaves the front asleep.
 *
 * A poll for a client that connected over loopback yields the CPU at each
 * empty turn: a client on this host (rmctl, a test, a local service, a
 * Python client with its gRPC thread beside its event loop) may need that
 * CPU to send what the front waits for. Measured with the Python client
 * on 2 cores, a poll that held the CPU made its calls about 15% slower.
 * A poll for a remote client does not yield: its next message needs no
 * CPU here, and a yield would only hand the front's turn to busy workers
 * (8 local rmctl clients pipelining calls lost about 7% of their rate).
 * Nor does a poll for a worker: it answers within tens of microseconds,
 * and yielding there cost rmctl's call several of them.
 */
static void
front_run(void)
{
	uint64_t until = 0, now, spin = front_conf.fc_busy_poll_us;
	uint64_t sent_at[2] = {0, 0}; /* when a message last went to a side */
	unsigned long seen[FRONT_TRAFFIC_KINDS];
	int busy[2] = {1, 1}, wait = FRONT_FROM_CLIENT, polling, i, any,
	    got[FRONT_TRAFFIC_KINDS];
	int to_worker, to_client;

	while (!event_base_got_exit(front_base) &&
	    !event_base_got_break(front_base)) {
		memcpy(seen, front_traffic_count, sizeof(seen));
		polling = until != 0 && now_us() < until;
		if (!polling && until != 0) {
			busy[wait] = 0; /* the poll missed */
			until = 0;
		}
		if (event_base_loop(front_base,
		        polling ? EVLOOP_NONBLOCK : EVLOOP_ONCE) == -1)
			fatalx("the event loop failed");
		if (spin == 0)
			continue;
		for (i = any = 0; i < FRONT_TRAFFIC_KINDS; i++)
			any |= got[i] = front_traffic_count[i] != seen[i];
		if (!any) {
			if (polling && wait == FRONT_FROM_CLIENT &&
			    front_local_client)
				sched_yield(); /* a client on this host runs */
			continue;
		}
		now = now_us();
		/* First judge each side by when it was last sent to... */
		for (i = 0; i < 2; i++)
			if (got[i] && !busy[i] &&
			    now - sent_at[i] <= spin * 3 / 2)
				busy[i] = 1;
		/* ...then note where this turn's messages went. */
		to_worker = got[FRONT_FROM_CLIENT] && !got[FRONT_ANSWERED];
		to_client = got[FRONT_FROM_WORKER] || got[FRONT_ANSWERED] ||
		    (got[FRONT_CLIENT_BYTES] && !got[FRONT_FROM_CLIENT]);
		if (to_worker)
			sent_at[FRONT_FROM_WORKER] = now;
		if (to_client)
			sent_at[FRONT_FROM_CLIENT] = now;
		wait = to_worker && busy[FRONT_FROM_WORKER] ? FRONT_FROM_WORKER
		                                            : FRONT_FROM_CLIENT;
		until = (to_worker && busy[FRONT_FROM_WORKER]) ||
		        (to_client && busy[FRONT_FROM_CLIENT])
		    ? now + spin
		    : 0;
	}
}

/* libevent's own messages, as lines of the front's log. */
static void
front_libevent_log(int severity, const char *msg)
{
	if (severity >= EVENT_LOG_WARN)
		log_warnx("libevent: %s", msg);
	else
		log_debug("libevent: %s", msg);
}

int
main(int argc, char **argv)
{
	struct event *ev_chld, *ev_term, *ev_int, *ev_hup;
	int check, activated = -1;

	check = front_parse_args(argc, argv) == CONFIG_CHECK;
	front_argc = argc;
	front_argv = argv;
	log_init("front", front_conf.fc_log_level);
	event_set_log_callback(front_libevent_log);
	signal(SIGPIPE, SIG_IGN);
	front_raise_nofile();
	if (access(front_conf.fc_worker, X_OK) == -1)
		fatal_config("--worker %s", front_conf.fc_worker);
	if (!check) {
		front_systemd_init();
		activated = front_activated();
	}
	if (check) {
		/* What start-up checks before it touches anything. */
		if (front_conf.fc_sandbox && geteuid() != 0)
			fatalx_config("the sandbox needs root (namespaces, "
			              "cgroups and a uid per session): run as "
			              "root, or pass --sandbox off for "
			              "development");
		front_auth_init();
		front_tls_init();
		front_metrics_check();
		printf("remotemediad: configuration OK%s%s\n",
		    front_conf.fc_config != NULL ? ": " : "",
		    front_conf.fc_config != NULL ? front_conf.fc_config : "");
		return 0;
	}
	if (mkdir_p(front_conf.fc_state_dir, 0700) == -1)
		fatal("--state-dir %s", front_conf.fc_state_dir);
	lock_dir(front_conf.fc_state_dir, "--state-dir");
	front_worker_clean_state_dir();
	front_env_setup_dir();
	front_sandbox_init();
	front_auth_init();
	front_tls_init();
	if ((front_base = event_base_new()) == NULL)
		fatalx("event_base_new");
	ev_chld = evsignal_new(front_base, SIGCHLD, sigchld_cb, NULL);
	ev_term = evsignal_new(front_base, SIGTERM, sigterm_cb, NULL);
	ev_int = evsignal_new(front_base, SIGINT, sigterm_cb, NULL);
	evsignal_add(ev_chld, NULL);
	evsignal_add(ev_term, NULL);
	evsignal_add(ev_int, NULL);
	ev_hup = evsignal_new(front_base, SIGHUP, sighup_cb, NULL);
	evsignal_add(ev_hup, NULL);
	front_env_init();
	front_pool_init();
	front_listen(activated);
	front_metrics_init();
	front_admin_init();
	front_systemd_ready();
	front_run();
	/* Whatever is left after the grace: kill, reap, remove. */
	front_session_kill_all();
	front_env_kill_all();
	front_pool_stop(1);
	front_worker_reap();
	front_sandbox_flush();
	front_h2_free_all();
	front_worker_clean_state_dir();
	log_info("stopped");
	front_metrics_free();
	front_systemd_free();
	event_free(ev_chld);
	event_free(ev_term);
	event_free(ev_int);
	event_free(ev_hup);
	if (drain_timer != NULL)
		event_free(drain_timer);
	if (goaway_timer != NULL)
		event_free(goaway_timer);
	event_base_free(front_base);
	return 0;
}
