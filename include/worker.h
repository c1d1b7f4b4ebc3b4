/*
 * remotemedia-worker: one process per session, exec'd by the front with
 * its end of the session's socketpair on fd 3.
 *
 * worker.c        start-up, and every frame written to fd 3 (one lock);
 * worker_py.c     the embedded CPython, the builtin module _rmworker, the
 *                 reading of fd 3 and the reassembly of chunked values;
 * worker_output.c the capture of fds 1 and 2, which the front reads.
 *
 * The object semantics (unpickling, dispatch, generators, deadlines) live
 * in python/remotemedia/_worker_runtime.py, embedded in the binary.
 */
#ifndef RM_WORKER_H
#define RM_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <protobuf-c/protobuf-c.h>

#include "frame.h"
#include "remotemedia.pb-c.h"

/* gRPC status codes the worker puts in a Fatal. */
#define WORKER_INVALID_ARGUMENT 3
#define WORKER_RESOURCE_EXHAUSTED 8
#define WORKER_FAILED_PRECONDITION 9
#define WORKER_INTERNAL 13

/* The session, as the front's Init describes it. */
struct worker_conf {
	char *wc_session_id;
	char *wc_session_dir;
	uint64_t wc_max_value; /* largest value, either way; 0: none */
	uint64_t wc_grace_ms;
	uint32_t wc_prefetch;
	char **wc_sys_path; /* prepended to sys.path */
	size_t wc_n_sys_path;
	int wc_isolate_site; /* hide the host's site-packages */
	uint32_t wc_busy_poll_us; /* --session-busy-poll */
	Remotemedia__V1__Limits wc_limits; /* Ready's, made from Init */
};

/* worker.c */
extern int worker_fd;
int worker_send(uint8_t, const ProtobufCMessage *);
int worker_send_chunk(uint64_t, uint32_t, int, const uint8_t *, size_t);
int worker_send_fatal(uint32_t, const char *);
void worker_send_lock(void);
void worker_send_unlock(void);
int worker_dead(void);
void worker_exit(int) __attribute__((noreturn));

/* worker_venv.c: the environment builder mode */
int worker_venv_main(const char *, int);

/* worker_py.c */
int worker_py_run(const struct worker_conf *);

/* worker_output.c */
void worker_output_start(void);
void worker_output_flush(void);

#endif
