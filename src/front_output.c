/*
 * A session's stdout and stderr, read by the front.
 *
 * A worker's fds 1 and 2 are the write ends of two pipes whose read ends
 * the front holds (frame.h). The front reads them as they fill and sends
 * what they hold as Output under a token-bucket rate cap per session:
 * what is over the cap is dropped, never waited for, and counted in the
 * next Output's dropped_bytes. The worker reads nothing, so a worker that
 * dies leaves all it wrote in the pipes, and the front sends that on too.
 *
 * What a call printed comes before its answer: a worker whose pipes hold
 * bytes sends Flush before the answer (worker_output.c), and the front
 * reads them then. While the client is slow (front_worker_pause), the
 * pipes are not read either: a session that writes more waits, as it
 * would on a terminal.
 */
#include <sys/ioctl.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "remotemedia.pb-c.h"

/* Each session may send this many bytes a second, in bursts of this. */
#define FO_RATE (64 * 1024)
#define FO_BURST (256 * 1024)
/* One read, and the smallest part of a write that the cap cuts. */
#define FO_READ (64 * 1024)
#define FO_PART 4096
/* Reads per stream in one turn, so that a flood cannot hold the loop. */
#define FO_ROUNDS 4
/* How soon drops are reported when nothing else is written. */
#define FO_REPORT_MS 1000
/* What a dead worker left in each stream, sent whatever the bucket holds:
 * its last words, a crash's traceback. */
#define FO_LAST_MAX (256 * 1024)

static const int fo_streams[2] = {
    REMOTEMEDIA__V1__OUTPUT__STREAM__STDOUT,
    REMOTEMEDIA__V1__OUTPUT__STREAM__STDERR,
};

/* Send one Output of stream i, carrying the drops not yet reported. */
static void
fo_send(struct session *ses, int i, const uint8_t *p, size_t n)
{
	Remotemedia__V1__ServerMessage sm =
	    REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Output out = REMOTEMEDIA__V1__OUTPUT__INIT;
	uint8_t *packed;
	size_t len;

	out.stream = fo_streams[i];
	out.data.data = (uint8_t *)p;
	out.data.len = n;
	out.dropped_bytes = ses->ses_odropped;
	ses->ses_odropped = 0;
	sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_OUTPUT;
	sm.output = &out;
	len = remotemedia__v1__server_message__get_packed_size(&sm);
	packed = xmalloc(len);
	remotemedia__v1__server_message__pack(&sm, packed);
	front_session_output(ses, packed, len);
	free(packed);
}

static void
fo_drop(struct session *ses, int i, uint64_t n)
{
	ses->ses_odropped += n;
	ses->ses_odropped_stream = i;
}

/* Add the tokens earned since the last refill, up to the burst. */
static void
fo_refill(struct session *ses)
{
	uint64_t now = now_us();

	if (now > ses->ses_olast)
		ses->ses_otokens += (double)(now - ses->ses_olast) * FO_RATE /
		    1e6;
	ses->ses_olast = now;
	if (ses->ses_otokens > FO_BURST)
		ses->ses_otokens = FO_BURST;
}

/*
 * Pass what the bucket allows of n bytes of stream i; count the rest. A
 * part cut by the cap is at least FO_PART: a flood otherwise goes out as a
 * stream of Outputs of the few bytes earned between two reads.
 */
static void
fo_meter(struct session *ses, int i, const uint8_t *p, size_t n)
{
	size_t allow;

	allow = ses->ses_otokens >= (double)n ? n : (size_t)ses->ses_otokens;
	if (allow < n && allow < FO_PART)
		allow = 0;
	ses->ses_otokens -= (double)allow;
	if (allow < n)
		fo_drop(ses, i, n - allow);
	if (allow > 0)
		fo_send(ses, i, p, allow);
}

/*
 * Drop what stream i holds without reading it, when the bucket would pass
 * none of it: a flood costs the front a splice, not a copy. 0 if it did.
 */
static int
fo_skip(struct session *ses, int i)
{
	static int devnull = -1;
	ssize_t n;
	int left;

	if (ses->ses_otokens >= FO_PART ||
	    ioctl(ses->ses_out[i], FIONREAD, &left) == -1 ||
	    (double)left <= ses->ses_otokens)
		return -1;
	/* Tried again each time: it fails only when fds run out. */
	if (devnull == -1 &&
	    (devnull = open("/dev/null", O_WRONLY | O_CLOEXEC)) == -1)
		return -1;
	n = splice(ses->ses_out[i], NULL, devnull, NULL, (size_t)left,
	    SPLICE_F_NONBLOCK);
	if (n <= 0)
		return -1;
	fo_drop(ses, i, (uint64_t)n);
	return 0;
}

/* Stream i is at its end: every writer closed it. */
static void
fo_stop(struct session *ses, int i)
{
	log_debug("session %s: its %s is closed", ses->ses_id,
	    i == 0 ? "stdout" : "stderr");
	if (ses->ses_oread[i] != NULL) {
		event_free(ses->ses_oread[i]);
		ses->ses_oread[i] = NULL;
	}
	close(ses->ses_out[i]);
	ses->ses_out[i] = -1;
}

static void
fo_report_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *ses = arg;

	if (ses->ses_odropped > 0 && ses->ses_state != SES_ENDING)
		fo_send(ses, ses->ses_odropped_stream, NULL, 0);
}

/* Read what stream i holds now, at most `rounds` reads, and send it. */
static void
fo_read(struct session *ses, int i, int rounds)
{
	static uint8_t buf[FO_READ];
	ssize_t n;

	for (; rounds > 0 && ses->ses_out[i] != -1 &&
	     ses->ses_state != SES_ENDING;
	     rounds--) {
		fo_refill(ses);
		if (fo_skip(ses, i) == 0)
			continue;
		n = read(ses->ses_out[i], buf, sizeof(buf));
		if (n > 0) {
			fo_meter(ses, i, buf, (size_t)n);
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno == EAGAIN)
			break;
		if (n == -1)
			log_warn("session %s: read output", ses->ses_id);
		fo_stop(ses, i);
	}
	if (ses->ses_odropped > 0 && ses->ses_oreport != NULL &&
	    !evtimer_pending(ses->ses_oreport, NULL))
		front_timer_add(ses->ses_oreport, FO_REPORT_MS);
}

static void
fo_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *ses = arg;
	int i = fd == ses->ses_out[0] ? 0 : 1;

	if (ses->ses_state == SES_ENDING) {
		/* Nothing more goes to the client: a readable pipe would
		 * wake the loop for nothing until the worker is reaped. */
		front_output_reading(ses, 0);
		return;
	}
	front_traffic(FRONT_FROM_WORKER);
	fo_read(ses, i, FO_ROUNDS);
}

/* Start reading the pipes of the session's worker (front_worker_attach). */
void
front_output_attach(struct session *ses)
{
	int i;

	ses->ses_otokens = FO_BURST;
	ses->ses_olast = now_us();
	ses->ses_oreport = evtimer_new(front_base, fo_report_cb, ses);
	if (ses->ses_oreport == NULL)
		fatalx("%s: evtimer_new", __func__);
	for (i = 0; i < 2; i++) {
		if (ses->ses_out[i] == -1)
			continue;
		ses->ses_oread[i] = event_new(front_base, ses->ses_out[i],
		    EV_READ | EV_PERSIST, fo_read_cb, ses);
		if (ses->ses_oread[i] == NULL)
			fatalx("%s: event_new", __func__);
	}
	front_output_reading(ses, !ses->ses_paused);
}

/* Start or stop reading the pipes: the client is slow, or no longer. */
void
front_output_reading(struct session *ses, int on)
{
	int i;

	for (i = 0; i < 2; i++)
		if (ses->ses_oread[i] != NULL) {
			if (on)
				event_add(ses->ses_oread[i], NULL);
			else
				event_del(ses->ses_oread[i]);
		}
}

/*
 * The worker sent Flush: what the pipes hold comes before what follows.
 * Once per read of its socket: what came before each Flush of that read
 * was in the pipes before the read, so one pass takes it all (a worker
 * that sends thousands costs a flag test each).
 */
void
front_output_flush(struct session *ses)
{
	int i;

	if (ses->ses_oflushed)
		return;
	ses->ses_oflushed = 1;
	for (i = 0; i < 2; i++)
		fo_read(ses, i, FO_ROUNDS);
}

/* What a dead worker left in stream i, up to FO_LAST_MAX; count the rest. */
static void
fo_last(struct session *ses, int i)
{
	static uint8_t buf[FO_READ];
	size_t sent = 0, want;
	ssize_t n;
	int left;

	while (ses->ses_out[i] != -1 && ses->ses_state != SES_ENDING) {
		if (sent >= FO_LAST_MAX) {
			if (ioctl(ses->ses_out[i], FIONREAD, &left) == 0 &&
			    left > 0)
				fo_drop(ses, i, (uint64_t)left);
			return;
		}
		want = FO_LAST_MAX - sent;
		n = read(ses->ses_out[i], buf,
		    want < sizeof(buf) ? want : sizeof(buf));
		if (n == -1 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		fo_send(ses, i, buf, (size_t)n);
		sent += (size_t)n;
	}
}

/*
 * The worker is dead: send on what it left in its pipes, up to
 * FO_LAST_MAX of each whatever the bucket holds (a C extension's message
 * before its abort, the fault handler's traceback), and the drops not yet
 * reported.
 */
void
front_output_last(struct session *ses)
{
	fo_last(ses, 0);
	fo_last(ses, 1);
	if (ses->ses_odropped > 0 && ses->ses_state != SES_ENDING)
		fo_send(ses, ses->ses_odropped_stream, NULL, 0);
}

/* Stop reading, and close the read ends. */
void
front_output_close(struct session *ses)
{
	int i;

	if (ses->ses_oreport != NULL) {
		event_free(ses->ses_oreport);
		ses->ses_oreport = NULL;
	}
	for (i = 0; i < 2; i++) {
		if (ses->ses_oread[i] != NULL) {
			event_free(ses->ses_oread[i]);
			ses->ses_oread[i] = NULL;
		}
		if (ses->ses_out[i] != -1) {
			close(ses->ses_out[i]);
			ses->ses_out[i] = -1;
		}
	}
}
