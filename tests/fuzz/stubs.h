/*
 * Fakes for the parts of the front that a fuzz target does not exercise:
 * front.c's globals, front_worker.c (no processes), front_env.c,
 * front_sandbox.c and front_trash.c. See stubs.c.
 */
#ifndef RM_FUZZ_STUBS_H
#define RM_FUZZ_STUBS_H

#include <stddef.h>
#include <stdint.h>

#include "front.h"
#include "fuzz.h"

/* What the fakes saw. */
struct stub_stats {
	unsigned long st_conns_closed;
	unsigned long st_sessions_freed;
	unsigned long st_spawned;
	unsigned long st_killed;
	unsigned long st_frames_to_worker;
};
extern struct stub_stats stub;

/* Called with every frame the front sends a running fake worker. */
typedef void (*stub_send_hook)(
    struct session *, uint8_t, const uint8_t *, size_t);
/* Called when a session lets go of its worker (front_worker_close). */
typedef void (*stub_close_hook)(struct session *);
extern stub_send_hook stub_on_send;
extern stub_close_hook stub_on_close;

/* Knobs a target may turn per input. */
extern int stub_draining;
extern int stub_spawn_fail;

void stub_reap_all(int);
void stub_fire_timers(void);
void stub_env_progress(void);
void stub_env_done(int);

#endif
