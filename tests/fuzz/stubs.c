/*
 * Fakes for fuzzing the front without worker processes. They stand in for
 * front.c (its globals and its three callbacks), front_worker.c,
 * front_env.c, front_sandbox.c and front_trash.c, and keep the contracts
 * front_session.c relies on: a spawned worker has a pid until it is reaped,
 * a killed or closing worker gets no more frames, and a session waiting
 * for its environment holds its frames in ses_pending.
 */
#include <sys/types.h>
#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "stubs.h"

/* Fake pids: unique, so that front_session_by_pid finds one session. */
#define STUB_PID_FIRST 1000000
#define STUB_PID_LAST 2000000000

struct front_config front_conf;
struct event_base *front_base;

struct stub_stats stub;
stub_send_hook stub_on_send;
stub_close_hook stub_on_close;
int stub_draining;
int stub_spawn_fail;

#define STUB_TIMERS 256 /* timers fired at once */
#define STUB_WAITERS 16 /* sessions waiting for an environment */

static pid_t stub_pid = STUB_PID_FIRST;
static pid_t stub_unreaped = STUB_PID_FIRST;
static struct session *stub_waiters[STUB_WAITERS];

/* front.c */
int
front_draining(void)
{
	return stub_draining;
}

void
front_conn_closed(struct conn *c)
{
	stub.st_conns_closed++;
}

void
front_session_freed(void)
{
	stub.st_sessions_freed++;
}

/*
 * Reap every fake worker spawned since the last call, as SIGCHLD would:
 * the session decides its status and frees itself.
 */
void
stub_reap_all(int wstatus)
{
	struct session *ses;
	pid_t pid;

	for (pid = stub_unreaped; pid != stub_pid; pid++) {
		if ((ses = front_session_by_pid(pid)) == NULL)
			continue;
		ses->ses_exited = 1;
		front_session_worker_exited(ses, wstatus);
	}
	if (stub_pid > STUB_PID_LAST)
		stub_pid = STUB_PID_FIRST;
	stub_unreaped = stub_pid;
}

static int
stub_collect_timer(
    const struct event_base *base, const struct event *ev, void *arg)
{
	struct event **evs = arg;
	int i;

	if (event_get_fd(ev) != -1 || !event_pending(ev, EV_TIMEOUT, NULL))
		return 0;
	for (i = 0; i < STUB_TIMERS; i++) {
		if (evs[i] == NULL) {
			evs[i] = (struct event *)ev;
			return 0;
		}
	}
	return 1;
}

/*
 * Time passes: every pending timer (deadlines, idle and lifetime limits,
 * the handshake and idle clocks) is made to fire on the next loop turn,
 * which the caller runs. Timers are found first and activated after, as
 * event_base_foreach_event() asks.
 */
void
stub_fire_timers(void)
{
	struct event *evs[STUB_TIMERS];
	int i;

	memset(evs, 0, sizeof(evs));
	event_base_foreach_event(front_base, stub_collect_timer, evs);
	for (i = 0; i < STUB_TIMERS && evs[i] != NULL; i++)
		event_active(evs[i], EV_TIMEOUT, 0);
}

/* Hand what was held during the install to the worker, as Init does. */
static void
stub_send_pending(struct session *ses)
{
	uint8_t hdr[FRAME_HDR_LEN], *msg;
	size_t len;

	while (evbuffer_get_length(ses->ses_pending) >= FRAME_HDR_LEN) {
		evbuffer_remove(ses->ses_pending, hdr, sizeof(hdr));
		len = get_be32(hdr) - 1;
		msg = xmalloc(len);
		evbuffer_remove(ses->ses_pending, msg, len);
		front_worker_send(ses, hdr[4], msg, len);
		free(msg);
	}
}

/* front_worker.c: a worker is a pid and, optionally, a hook. */
int
front_worker_spawn(struct session *ses, char *err, size_t errlen)
{
	if (stub_spawn_fail) {
		snprintf(err, errlen, "cannot start a worker (fuzz stub)");
		return GRPC_UNAVAILABLE;
	}
	ses->ses_pid = stub_pid++;
	stub.st_spawned++;
	if (ses->ses_pending != NULL)
		stub_send_pending(ses);
	return 0;
}

int
front_worker_send(
    struct session *ses, uint8_t type, const uint8_t *msg, size_t len)
{
	uint8_t hdr[FRAME_HDR_LEN];

	if (ses->ses_pid <= 0 && ses->ses_state == SES_INSTALLING) {
		if (ses->ses_pending == NULL &&
		    (ses->ses_pending = evbuffer_new()) == NULL)
			fatalx("%s: evbuffer_new", __func__);
		frame_worker_header(hdr, type, (uint32_t)len);
		if (evbuffer_add(ses->ses_pending, hdr, sizeof(hdr)) == -1 ||
		    evbuffer_add(ses->ses_pending, msg, len) == -1)
			fatalx("%s: evbuffer_add", __func__);
		return 0;
	}
	if (ses->ses_pid <= 0 || ses->ses_eof || ses->ses_exited)
		return -1;
	stub.st_frames_to_worker++;
	if (stub_on_send != NULL)
		stub_on_send(ses, type, msg, len);
	return 0;
}

size_t
front_worker_pending_out(struct session *ses)
{
	if (ses->ses_pending != NULL)
		return evbuffer_get_length(ses->ses_pending);
	return 0;
}

void
front_worker_pause(struct session *ses, int pause)
{
	if (ses->ses_pid <= 0 || ses->ses_eof)
		return;
	ses->ses_paused = pause;
}

void
front_worker_kill(struct session *ses)
{
	if (ses->ses_pid <= 0 || ses->ses_exited || ses->ses_killed)
		return;
	ses->ses_killed = 1;
	stub.st_killed++;
}

void
front_worker_expect_exit(struct session *ses, uint64_t ms)
{
}

void
front_worker_close(struct session *ses)
{
	if (stub_on_close != NULL)
		stub_on_close(ses);
}

/* The same words as front_worker.c, for the same wait statuses. */
char *
front_worker_describe_exit(int wstatus)
{
	char buf[128];

	if (WIFSIGNALED(wstatus))
		snprintf(buf, sizeof(buf), "worker killed by signal %d",
		    WTERMSIG(wstatus));
	else if (WIFEXITED(wstatus))
		snprintf(buf, sizeof(buf), "worker exited with status %d",
		    WEXITSTATUS(wstatus));
	else
		snprintf(buf, sizeof(buf), "worker ended (wait status %#x)",
		    wstatus);
	return xstrdup(buf);
}

const char *
front_worker_trash_dir(void)
{
	return "/nonexistent/trash";
}

/* front_trash.c: session directories are never created here. */
int
front_trash(const char *path, const char *trash)
{
	return 0;
}

/*
 * front_env.c: the canonical requirements decide. A name with "broken"
 * fails to install, one with "slow" keeps the session installing until the
 * target calls stub_env_done(), and anything else is ready at once.
 */
int
front_env_attach(struct session *ses, const char *reqs, const char **why)
{
	int i;

	if (strstr(reqs, "broken") != NULL) {
		*why = "Failed to install: pip failed (fuzz stub)";
		return -1;
	}
	if (strstr(reqs, "slow") == NULL)
		return 1;
	for (i = 0; i < STUB_WAITERS; i++) {
		if (stub_waiters[i] == NULL) {
			stub_waiters[i] = ses;
			return 0;
		}
	}
	*why = "too many installs (fuzz stub)";
	return -1;
}

void
front_env_release(struct session *ses)
{
	int i;

	for (i = 0; i < STUB_WAITERS; i++)
		if (stub_waiters[i] == ses)
			stub_waiters[i] = NULL;
}

/* The builds of the waiting sessions report a line of pip's output. */
void
stub_env_progress(void)
{
	int i;

	for (i = 0; i < STUB_WAITERS; i++)
		if (stub_waiters[i] != NULL)
			front_session_progress(stub_waiters[i], 1, "slowpkg",
			    "Collecting slowpkg");
}

/*
 * The builds end, well or not. A session may free itself when told, so
 * each is taken off the list first.
 */
void
stub_env_done(int ok)
{
	struct session *ses;
	int i;

	for (i = 0; i < STUB_WAITERS; i++) {
		if ((ses = stub_waiters[i]) == NULL)
			continue;
		stub_waiters[i] = NULL;
		if (ok)
			front_session_env_ready(ses);
		else
			front_session_env_failed(ses, "pip failed (stub)");
	}
}

/* front_pool.c: no spares here; every session starts its own worker. */
int
front_pool_adopt(struct session *s)
{
	(void)s;
	return -1;
}

void
front_pool_poke(void)
{
}

int
front_pool_count(void)
{
	return 0;
}

void
front_pool_want(struct env *e)
{
	(void)e;
}

/* front_sandbox.c: SIGXCPU stands for a limit the sandbox enforced. */
void
front_sandbox_session_end(struct session *ses)
{
}

char *
front_sandbox_limit_hit(struct session *ses, int wstatus)
{
	if (WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGXCPU)
		return xstrdup("session CPU time limit reached (fuzz stub)");
	return NULL;
}

/* front_sandbox.c and front_env.c, for the Admin service's Info. */
int
front_sandbox_describe(char lines[][160], int max)
{
	(void)lines;
	(void)max;
	return 0;
}

const char *
front_python_version(void)
{
	return "3.11";
}
