/*
 * One fake of the front's outbound calls, shared by the unit tests and the
 * fuzz targets that link a part of the front alone. Each file stands in
 * for modules a program does not link, and a program links the files for
 * the modules it lacks:
 *
 *	fake_front.c	front.c, front_pool.c, front_sandbox.c, front_trash.c
 *	fake_worker.c	front_worker.c: a worker is a pid, not a process
 *	fake_env.c	front_env.c
 *	fake_grpc.c	front_grpc.c, as front_session.c calls it
 *	fake_session.c	front_session.c, as front_env.c calls it
 *
 * The fakes keep the contracts the real code relies on, count what they
 * see in `fake`, and hand what would leave the front to the hooks a test
 * sets there. fake_reset() zeroes it all: counts, knobs and hooks.
 */
#ifndef RM_FAKE_H
#define RM_FAKE_H

#include <stddef.h>
#include <stdint.h>

#include "front.h"

/* The pid of the first worker spawned after fake_reset(), then one up. */
#define FAKE_PID_FIRST 1000000

/* A frame the front sends a running fake worker. */
typedef void (*fake_send_hook)(
    struct session *, uint8_t, const uint8_t *, size_t);
/* A session lets go of its worker (front_worker_close). */
typedef void (*fake_close_hook)(struct session *);
/* A message to the client, and a stream's status (front_grpc.c). */
typedef void (*fake_relay_hook)(struct stream *, const uint8_t *, size_t);
typedef void (*fake_finish_hook)(struct stream *, int, const char *);
/* front_trash; the fake returns what the hook does, 0 without one. */
typedef int (*fake_trash_hook)(const char *, const char *);
/* A build's outcome for a waiting session: NULL, or why it failed. */
typedef void (*fake_env_hook)(struct session *, const char *);

struct fake {
	/* Knobs. */
	int fk_draining; /* front_draining() */
	int fk_spawn_fail; /* front_worker_spawn fails */
	int fk_send_fail; /* front_worker_send fails */
	size_t fk_grpc_pending; /* front_grpc_pending_out() */

	/* Hooks. */
	fake_send_hook fk_on_send;
	fake_close_hook fk_on_close;
	fake_relay_hook fk_on_relay;
	fake_finish_hook fk_on_finish; /* before the status sticks */
	fake_trash_hook fk_on_trash;
	fake_env_hook fk_on_env;

	/* What the fakes saw. */
	unsigned long fk_conns_closed;
	unsigned long fk_sessions_freed;
	unsigned long fk_spawned;
	unsigned long fk_reaped; /* by fake_reap_all() */
	unsigned long fk_killed; /* front_worker_kill calls */
	unsigned long fk_paused; /* front_worker_pause calls */
	unsigned long fk_closed; /* front_worker_close calls */
	unsigned long fk_described; /* front_worker_describe_exit calls */
	unsigned long fk_frames_to_worker;
	unsigned long fk_expired; /* front_worker_send_expired calls */
	uint64_t fk_expired_id; /* and the last one's call id */
	unsigned long fk_env_released;
	unsigned long fk_env_progress; /* front_session_progress */
	unsigned long fk_build_cgroups; /* one per build started */
	unsigned long fk_spares_failed; /* front_pool_adopted_failed calls */
	unsigned long fk_spares_ok; /* front_pool_adopted_ok calls */
};
extern struct fake fake;

void fake_reset(void);
void fake_fire_timers(void);
void fake_reap_all(int);
void fake_env_progress(void);
void fake_env_done(int);

#endif
