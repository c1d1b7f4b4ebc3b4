/*
 * The fake of front.c (its globals and its callbacks), front_pool.c,
 * front_sandbox.c and front_trash.c, which no test program links: no
 * spare sessions, no limits the sandbox enforces but SIGXCPU's, no
 * directories removed unless a test's hook does it. See fake.h.
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

#include "fake.h"

#define FAKE_TIMERS 256 /* timers fired at once */

struct front_config front_conf;
struct event_base *front_base;

struct fake fake;

/* Forget what was seen, and every knob and hook. */
void
fake_reset(void)
{
	memset(&fake, 0, sizeof(fake));
}

/* front.c */
void
front_traffic(int from)
{
}

void
front_client_local(int local)
{
}

int
front_draining(void)
{
	return fake.fk_draining;
}

void
front_accept_failed(struct evconnlistener *l, struct event **resume,
    const char *what, uint64_t pause_ms)
{
}

void
front_conn_closed(struct conn *c)
{
	fake.fk_conns_closed++;
}

void
front_session_freed(void)
{
	fake.fk_sessions_freed++;
}

void
front_stream_freed(void)
{
}

static int
fake_collect_timer(
    const struct event_base *base, const struct event *ev, void *arg)
{
	struct event **evs = arg;
	int i;

	if (event_get_fd(ev) != -1 || !event_pending(ev, EV_TIMEOUT, NULL))
		return 0;
	for (i = 0; i < FAKE_TIMERS; i++) {
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
fake_fire_timers(void)
{
	struct event *evs[FAKE_TIMERS];
	int i;

	memset(evs, 0, sizeof(evs));
	event_base_foreach_event(front_base, fake_collect_timer, evs);
	for (i = 0; i < FAKE_TIMERS && evs[i] != NULL; i++)
		event_active(evs[i], EV_TIMEOUT, 0);
}

/* front_pool.c: no spares here; every session starts its own worker. */
int
front_pool_adopt(struct session *s)
{
	return -1;
}

void
front_pool_poke(void)
{
}

void
front_pool_adopted_failed(void)
{
	fake.fk_spares_failed++;
}

void
front_pool_adopted_ok(void)
{
	fake.fk_spares_ok++;
}

int
front_pool_count(void)
{
	return 0;
}

void
front_pool_want(struct env *e)
{
}

void
front_pool_forget_env(struct env *e)
{
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
		return xstrdup("session CPU time limit reached (fake)");
	return NULL;
}

/* For the Admin service's Info. */
int
front_sandbox_describe(char lines[][160], int max)
{
	return 0;
}

/* Builds get no cgroup, and none is left to destroy. */
char *
front_sandbox_build_cgroup(const char *key)
{
	fake.fk_build_cgroups++;
	return NULL;
}

void
front_sandbox_cgroup_destroy(char *path)
{
	free(path);
}

/* front_trash.c: a tree goes only if the test's hook removes it. */
int
front_trash(const char *path, const char *trash)
{
	if (fake.fk_on_trash != NULL)
		return fake.fk_on_trash(path, trash);
	return 0;
}

void
front_trash_empty(const char *trash)
{
}
