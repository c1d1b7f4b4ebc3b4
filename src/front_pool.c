/*
 * Spare sessions (--session-pool N): workers started before any client asks,
 * so that a session with no packages opens in the time its Open takes to be
 * answered, not the time a worker takes to start.
 *
 * A spare is a session without a stream. It gets everything a session gets
 * before its Open, through the same code: a directory, a uid, a cgroup, a
 * fresh exec of remotemedia-worker and the Init frame. The worker then
 * confines itself in the order of architecture section 5, starts its own
 * CPython (with its own hash secret and random state: every spare is a
 * separate exec, never a fork of another interpreter), imports the runtime
 * and cloudpickle, and waits for the Open. A new session takes the oldest
 * spare made for its environment: its id, worker, directory, uid and cgroup
 * move into the session, and the Open is forwarded as usual. A timer starts
 * spares in the background.
 *
 * There are two kinds. --session-pool spares without packages are kept at
 * all times. A session with packages that had to start its own worker asks
 * for a spare of its environment, for the next session that wants the same
 * one; at most --session-pool of those are kept, the least recently asked
 * for giving way. A spare holds a reference on its environment, so that the
 * cache keeps it.
 *
 * A spare that says anything before its Open (a Fatal: its sandbox failed)
 * or dies is discarded, and its resources freed. Spares that keep dying are
 * restarted with a growing delay; meanwhile sessions start their own worker
 * as they do with --session-pool 0.
 */
#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "worker.pb-c.h"

#define POOL_REFILL_MS 20 /* after a spare is taken */
#define POOL_NICE 10 /* a spare's until it becomes a session */
#define POOL_RETRY_MIN_MS 100 /* after a spare died unused */
#define POOL_RETRY_MAX_MS 30000

static struct sessionlist pool_spares = TAILQ_HEAD_INITIALIZER(pool_spares);
static struct event *pool_timer;
static int pool_failures; /* spares that failed since a taken one lived */
static int pool_stopped;

static uint64_t pool_due; /* when pool_timer fires (now_ms's clock) */

static void pool_schedule(uint64_t);
static void pool_failed(void);

/* Free a spare whose worker is gone (or never started). */
static void
pool_free(struct session *sp)
{
	front_worker_close(sp);
	if (sp->ses_dir != NULL &&
	    front_trash(sp->ses_dir, front_worker_trash_dir()) == -1)
		log_warnx("cannot remove %s", sp->ses_dir);
	front_sandbox_session_end(sp);
	front_env_release(sp);
	deframer_free(&sp->ses_win);
	free(sp->ses_dir);
	free(sp);
}

static void pool_retire(struct env *);

/* Kill a spare's worker; the SIGCHLD reap frees it. */
static void
pool_kill(struct session *sp)
{
	if (sp->ses_pid <= 0 || sp->ses_killed)
		return;
	sp->ses_killed = 1;
	kill(-sp->ses_pid, SIGKILL);
	kill(sp->ses_pid, SIGKILL);
}

/* A frame from a spare before any Open: its Fatal, for the log. */
static int
pool_frame(void *arg, uint8_t type, const uint8_t *msg, size_t len)
{
	Remotemedia__Worker__V1__WorkerControl *c = NULL;
	struct session *sp = arg;

	if (type == FRAME_CTL)
		c = remotemedia__worker__v1__worker_control__unpack(
		    NULL, len, msg);
	if (c != NULL &&
	    c->msg_case == REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_FATAL)
		log_warnx("spare worker %d failed: %s", (int)sp->ses_pid,
		    c->fatal->message);
	else
		log_warnx(
		    "spare worker %d spoke before its Open", (int)sp->ses_pid);
	if (c != NULL)
		remotemedia__worker__v1__worker_control__free_unpacked(c, NULL);
	return -1;
}

/* A spare has nothing to say before its Open: whatever it says ends it. */
static void
pool_read_cb(struct bufferevent *bev, void *arg)
{
	struct session *sp = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t n = evbuffer_get_length(in);
	uint8_t *p;

	/* A Fatal is small: look at no more than 64 KiB of it. */
	if (n > 65536)
		n = 65536;
	if ((p = evbuffer_pullup(in, (ssize_t)n)) != NULL)
		(void)deframer_feed(&sp->ses_win, p, n, pool_frame, sp);
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	pool_kill(sp);
}

static void
pool_event_cb(struct bufferevent *bev, short events, void *arg)
{
	if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		bufferevent_disable(bev, EV_READ | EV_WRITE);
		pool_kill(arg);
	}
}

/* Queue a spare for environment e (NULL: none); the timer starts it. */
static struct session *
pool_new(struct env *e)
{
	struct session *sp = xcalloc(1, sizeof(*sp));

	random_hex(sp->ses_id, sizeof(sp->ses_id));
	sp->ses_state = SES_SPARE;
	sp->ses_pid = -1;
	sp->ses_uid = -1;
	sp->ses_out[0] = sp->ses_out[1] = -1;
	RB_INIT(&sp->ses_calls);
	deframer_init(&sp->ses_win, DEFRAME_WORKER, FRAME_WORKER_MAX);
	if (e != NULL)
		front_env_hold(sp, e);
	TAILQ_INSERT_TAIL(&pool_spares, sp, ses_entry);
	return sp;
}

/* Take a spare off the list and free it (its worker gone or never run). */
static void
pool_drop(struct session *sp)
{
	TAILQ_REMOVE(&pool_spares, sp, ses_entry);
	pool_free(sp);
}

/* Start a queued spare's worker; -1 (and the spare dropped) on failure. */
static int
pool_start(struct session *sp)
{
	char err[256];

	log_debug("%s: spare %s", __func__, sp->ses_id);
	if (front_worker_spawn(sp, err, sizeof(err)) != 0) {
		log_warnx("spare worker: %s", err);
		if (sp->ses_pid > 0) {
			kill(sp->ses_pid, SIGKILL);
			waitpid(sp->ses_pid, NULL, 0);
			sp->ses_pid = -1;
		}
		pool_drop(sp);
		return -1;
	}
	/* Starting a spare is work ahead: it yields the CPU to sessions that
	 * run now, and gets an equal share back when it becomes one. */
	front_worker_nice(sp, POOL_NICE);
	/* A spare is read by its bufferevent (front_worker_attach reads a
	 * session's socket itself): whatever it says ends it. */
	bufferevent_setcb(sp->ses_wbev, pool_read_cb, NULL, pool_event_cb, sp);
	bufferevent_enable(sp->ses_wbev, EV_READ);
	log_debug("%s: spare %s: worker %d%s", __func__, sp->ses_id,
	    (int)sp->ses_pid, sp->ses_env != NULL ? " (environment)" : "");
	return 0;
}

/* How many spares of the kind of e (with an environment or not) there are. */
static int
pool_kind_count(int with_env)
{
	struct session *sp;
	int n = 0;

	TAILQ_FOREACH (sp, &pool_spares, ses_entry)
		n += !sp->ses_killed && (sp->ses_env != NULL) == with_env;
	return n;
}

/* The delay before the next try, growing with failures in a row. */
static uint64_t
pool_retry_ms(void)
{
	uint64_t ms = POOL_RETRY_MIN_MS;
	int i;

	for (i = 1; i < pool_failures && ms < POOL_RETRY_MAX_MS; i++)
		ms *= 2;
	return ms < POOL_RETRY_MAX_MS ? ms : POOL_RETRY_MAX_MS;
}

/*
 * Whether another spare may start: the pool is running, and (with the
 * sandbox) spares leave --session-pool uids free for sessions that start
 * their own worker.
 */
static int
pool_may_start(void)
{
	if (pool_stopped || front_draining())
		return 0;
	return !front_conf.fc_sandbox ||
	    front_sandbox_uids_free() > front_conf.fc_session_pool;
}

/* Whether a spare without packages is wanted. */
static int
pool_wanted(void)
{
	return pool_may_start() &&
	    pool_kind_count(0) < (int)front_conf.fc_session_pool;
}

/* Queue spares without packages up to --session-pool, then start all. */
static void
pool_refill_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *sp, *tmp;

	while (pool_wanted())
		(void)pool_new(NULL);
	TAILQ_FOREACH_SAFE (sp, &pool_spares, ses_entry, tmp) {
		if (sp->ses_pid > 0)
			continue;
		if (sp->ses_killed || !pool_may_start()) {
			pool_drop(sp);
			continue;
		}
		if (pool_start(sp) == -1) {
			pool_failed();
			return;
		}
	}
}

/* Run the refill in ms, whatever was due before. */
static void
pool_timer_set(uint64_t ms)
{
	if (pool_stopped || front_conf.fc_session_pool == 0)
		return;
	if (pool_timer == NULL)
		pool_timer = evtimer_new(front_base, pool_refill_cb, NULL);
	pool_due = now_ms() + ms;
	front_timer_add(pool_timer, ms);
}

/*
 * Run the refill within ms: sooner than a refill already due, later
 * never. While spares keep dying, the backoff holds: until one taken by a
 * session gets its Open (front_pool_adopted_ok) or a SIGHUP, after which
 * the cause may be mended.
 */
static void
pool_schedule(uint64_t ms)
{
	if (pool_timer != NULL && evtimer_pending(pool_timer, NULL) &&
	    (pool_failures > 0 || pool_due <= now_ms() + ms))
		return;
	pool_timer_set(ms);
}

/* A spare died unused, or could not start: try again later and later. */
static void
pool_failed(void)
{
	pool_failures++;
	front_metrics_spare_failed();
	pool_timer_set(pool_retry_ms());
}

/*
 * The cache evicts environment e, which only spares hold: they let go of
 * it (the cache drops their references) and end. Called from inside the
 * cache, so it only marks and kills: the list changes on the reap, or on
 * the next refill.
 */
void
front_pool_forget_env(struct env *e)
{
	pool_retire(e);
}

/*
 * SIGHUP changed the session limits, which a spare's worker and cgroup
 * were made with: every spare ends, and new ones start, of the same
 * environments.
 */
void
front_pool_retire_all(void)
{
	struct session *sp;
	struct env **envs;
	size_t n = 0, i;

	log_info(
	    "session limits changed: %d spare(s) replaced", front_pool_count());
	pool_failures = 0;
	TAILQ_FOREACH (sp, &pool_spares, ses_entry)
		n++;
	envs = xcalloc(n + 1, sizeof(*envs));
	n = 0;
	TAILQ_FOREACH (sp, &pool_spares, ses_entry)
		if (sp->ses_env != NULL && !sp->ses_killed && !sp->ses_retired)
			envs[n++] = sp->ses_env;
	pool_retire(NULL);
	for (i = 0; i < n && pool_may_start(); i++)
		(void)pool_new(envs[i]);
	free(envs);
}

/*
 * End the spares of environment e (the cache drops their references to
 * it), or with e NULL all spares (each lets go of its environment as it
 * is reaped). The refill replaces them.
 */
static void
pool_retire(struct env *e)
{
	struct session *sp;

	TAILQ_FOREACH (sp, &pool_spares, ses_entry) {
		if (e != NULL && sp->ses_env != e)
			continue;
		if (e != NULL)
			sp->ses_env = NULL;
		sp->ses_retired = 1;
		if (sp->ses_pid > 0)
			pool_kill(sp);
		else
			sp->ses_killed = 1; /* the refill drops it */
	}
	pool_schedule(POOL_REFILL_MS);
}

/*
 * A SIGHUP that left the session limits as they were: the operator may
 * have mended what made spares die (a missing program, a full disk), so
 * the backoff ends and the pool tries again now.
 */
void
front_pool_reloaded(void)
{
	if (pool_failures == 0)
		return;
	pool_failures = 0;
	pool_schedule(POOL_REFILL_MS);
}

/* At start: fill the pool. */
/* Spares started and not yet taken (remotemedia_spare_sessions). */
int
front_pool_count(void)
{
	struct session *sp;
	int n = 0;

	TAILQ_FOREACH (sp, &pool_spares, ses_entry)
		if (sp->ses_pid > 0)
			n++;
	return n;
}

void
front_pool_init(void)
{
	pool_schedule(0);
}

/* A session ended and freed its uid: the pool may be short of one. */
void
front_pool_poke(void)
{
	if (pool_wanted())
		pool_schedule(POOL_REFILL_MS);
}

/*
 * Give a new session (one that needs no packages) a spare's worker: its
 * id, process, directory, uid and cgroup. Returns 0, or -1 when no spare
 * is there and the session must start a worker of its own.
 */
int
front_pool_adopt(struct session *ses)
{
	struct session *sp;

	TAILQ_FOREACH (sp, &pool_spares, ses_entry)
		if (sp->ses_env == ses->ses_env && sp->ses_pid > 0 &&
		    !sp->ses_killed)
			break;
	if (sp == NULL)
		return -1;
	TAILQ_REMOVE(&pool_spares, sp, ses_entry);
	memcpy(ses->ses_id, sp->ses_id, sizeof(ses->ses_id));
	ses->ses_pid = sp->ses_pid;
	ses->ses_dir = sp->ses_dir;
	ses->ses_uid = sp->ses_uid;
	ses->ses_cgroup = sp->ses_cgroup;
	ses->ses_wbev = sp->ses_wbev;
	ses->ses_wflush = sp->ses_wflush;
	memcpy(ses->ses_out, sp->ses_out, sizeof(ses->ses_out));
	ses->ses_max_inflight = sp->ses_max_inflight;
	ses->ses_max_value = sp->ses_max_value;
	ses->ses_max_chunk = sp->ses_max_chunk;
	ses->ses_adopted = 1;
	front_worker_nice(ses, 0);
	bufferevent_disable(ses->ses_wbev, EV_READ);
	front_worker_attach(ses);
	front_env_release(sp);
	deframer_free(&sp->ses_win);
	free(sp);
	if (ses->ses_env != NULL && pool_may_start())
		(void)pool_new(ses->ses_env);
	pool_schedule(POOL_REFILL_MS);
	log_debug("%s: session %s: spare worker %d", __func__, ses->ses_id,
	    (int)ses->ses_pid);
	return 0;
}

/*
 * A spare failed after a session took it, before it took the Open
 * (front_session.c): it counts as a spare that died unused.
 */
void
front_pool_adopted_failed(void)
{
	if (!pool_stopped)
		pool_failed();
}

/*
 * A spare that a session took has the session's Open (Taken): spares live
 * again, and the backoff ends. Not at the adoption itself: a spare may
 * fail after it, and spares that all fail so must still back off.
 */
void
front_pool_adopted_ok(void)
{
	if (pool_failures == 0)
		return;
	pool_failures = 0;
	pool_schedule(POOL_REFILL_MS);
}

/*
 * A session with packages started its own worker: queue a spare of its
 * environment for the next one, unless there is one. The least recently
 * asked-for environment spare gives way past --session-pool of them.
 */
void
front_pool_want(struct env *e)
{
	struct session *sp, *oldest = NULL;

	if (front_conf.fc_session_pool == 0 || !pool_may_start())
		return;
	TAILQ_FOREACH (sp, &pool_spares, ses_entry) {
		if (sp->ses_killed)
			continue;
		if (sp->ses_env == e)
			return;
		if (sp->ses_env != NULL && oldest == NULL)
			oldest = sp;
	}
	if (oldest != NULL &&
	    pool_kind_count(1) >= (int)front_conf.fc_session_pool) {
		if (oldest->ses_pid > 0) {
			oldest->ses_retired = 1;
			pool_kill(oldest); /* the reap frees it */
		} else
			pool_drop(oldest);
	}
	(void)pool_new(e);
	pool_schedule(POOL_REFILL_MS);
}

/* SIGCHLD for a pid that is no session's: 1 if it was a spare's. */
int
front_pool_reap(pid_t pid, int wstatus)
{
	struct session *sp;
	char *how;

	TAILQ_FOREACH (sp, &pool_spares, ses_entry)
		if (sp->ses_pid == pid)
			break;
	if (sp == NULL)
		return 0;
	kill(-pid, SIGKILL); /* whatever it started, in its group */
	TAILQ_REMOVE(&pool_spares, sp, ses_entry);
	if (!pool_stopped && !sp->ses_retired) {
		/* Its cgroup is still there to ask (pool_free removes it). */
		if ((how = front_sandbox_limit_hit(sp, wstatus)) == NULL)
			how = front_worker_describe_exit(wstatus);
		log_warnx("spare worker %d ended unused: %s", (int)pid, how);
		free(how);
		pool_failed();
	}
	pool_free(sp);
	return 1;
}

/*
 * Stop the pool: no more spares, and every spare killed. With wait, as
 * the front exits, reap and free them here.
 */
void
front_pool_stop(int wait)
{
	struct session *sp, *tmp;
	int st;

	pool_stopped = 1;
	if (pool_timer != NULL)
		evtimer_del(pool_timer);
	TAILQ_FOREACH_SAFE (sp, &pool_spares, ses_entry, tmp) {
		if (sp->ses_pid > 0)
			pool_kill(sp);
		else
			pool_drop(sp);
	}
	while (wait && (sp = TAILQ_FIRST(&pool_spares)) != NULL) {
		if (waitpid(sp->ses_pid, &st, 0) == -1)
			log_warn("waitpid %d", (int)sp->ses_pid);
		pool_drop(sp);
	}
	if (wait && pool_timer != NULL) {
		event_free(pool_timer);
		pool_timer = NULL;
	}
}
