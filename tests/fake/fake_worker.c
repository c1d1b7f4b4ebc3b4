/*
 * The fake of front_worker.c: a worker is a pid and, optionally, a hook
 * that answers for it (fake.fk_on_send). It keeps the contracts
 * front_session.c relies on: a spawned worker has a pid until it is reaped,
 * a killed or closing worker gets no more frames, and a session waiting
 * for its environment holds its frames in ses_pending until the spawn.
 */
#include <sys/types.h>

#include <stdio.h>
#include <stdlib.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "fake.h"

/* Fake pids are unique, so that front_session_by_pid finds one session. */
#define FAKE_PID_RANGE 1000000000

static pid_t
fake_pid(unsigned long n)
{
	return FAKE_PID_FIRST + (pid_t)(n % FAKE_PID_RANGE);
}

/*
 * Reap every fake worker spawned since the last call, as SIGCHLD would:
 * the session decides its status and frees itself.
 */
void
fake_reap_all(int wstatus)
{
	struct session *ses;

	for (; fake.fk_reaped < fake.fk_spawned; fake.fk_reaped++) {
		ses = front_session_by_pid(fake_pid(fake.fk_reaped));
		if (ses == NULL)
			continue;
		ses->ses_exited = 1;
		front_session_worker_exited(ses, wstatus);
	}
}

/* Hand what was held during the install to the worker, as Init does. */
static void
fake_send_pending(struct session *ses)
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

/* Counted, and sent as the real one is: a control frame. */
int
front_worker_send_expired(struct session *ses, uint64_t id)
{
	fake.fk_expired++;
	fake.fk_expired_id = id;
	return front_worker_send(ses, FRAME_CTL, (const uint8_t *)"", 0);
}

int
front_worker_spawn(struct session *ses, char *err, size_t errlen)
{
	if (fake.fk_spawn_fail) {
		snprintf(err, errlen, "cannot start a worker (fake)");
		return GRPC_UNAVAILABLE;
	}
	ses->ses_pid = fake_pid(fake.fk_spawned++);
	if (ses->ses_pending != NULL)
		fake_send_pending(ses);
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
	if (ses->ses_pid <= 0 || ses->ses_eof || ses->ses_exited ||
	    fake.fk_send_fail)
		return -1;
	fake.fk_frames_to_worker++;
	if (fake.fk_on_send != NULL)
		fake.fk_on_send(ses, type, msg, len);
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
front_worker_nice(struct session *ses, int behind)
{
}

void
front_worker_pause(struct session *ses, int pause)
{
	fake.fk_paused++;
	if (ses->ses_pid <= 0 || ses->ses_eof)
		return;
	ses->ses_paused = pause;
}

void
front_worker_kill(struct session *ses)
{
	fake.fk_killed++;
	if (ses->ses_pid <= 0 || ses->ses_exited || ses->ses_killed)
		return;
	ses->ses_killed = 1;
}

void
front_worker_expect_exit(struct session *ses, uint64_t ms)
{
}

void
front_worker_close(struct session *ses)
{
	fake.fk_closed++;
	if (fake.fk_on_close != NULL)
		fake.fk_on_close(ses);
}

/* The wait status, in words of the fake's own: a test can tell them. */
char *
front_worker_describe_exit(int wstatus)
{
	char buf[64];

	fake.fk_described++;
	snprintf(buf, sizeof(buf), "described exit %#x", wstatus);
	return xstrdup(buf);
}

const char *
front_worker_trash_dir(void)
{
	return "/nonexistent/trash";
}
