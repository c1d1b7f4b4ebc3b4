/*
 * Fuzz target: the front's checks of what a (hostile) worker sends,
 * front_session.c linked alone with the fake front (tests/fake), whose
 * front_grpc.c hands what reaches the client to the checks here.
 *
 * Each input gets a fresh session, driven to READY with a real Open and a
 * real Ready. The rest of the input is a small program (see the WF_OP_*
 * below): bytes from the worker, fed through the session's DEFRAME_WORKER
 * deframer as front_worker.c feeds them; client messages (Call, Pull,
 * Cancel, Value, Close, or raw bytes); and events (half-close, EOF, a slow
 * client, the stream reset, SIGTERM's kill and drain, time passing). The
 * worker's exit ends every input, and the session must then free itself,
 * having told the client how it ended.
 */
#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "remotemedia.pb-c.h"
#include "worker.pb-c.h"

#include "fake.h"
#include "fuzz.h"

typedef Remotemedia__V1__ClientMessage ClientMessage;
typedef Remotemedia__V1__ServerMessage ServerMessage;
typedef Remotemedia__V1__Value Value;

/* The operations of a program: an operation's first byte modulo WF_NOPS. */
enum wf_op {
	WF_OP_WORKER, /* n: 1 + next byte of worker bytes */
	WF_OP_WORKER2, /* the same */
	WF_OP_WORKER_BIG, /* n: the next two bytes (big-endian) */
	WF_OP_CALL, /* id, flags */
	WF_OP_PULL, /* id, n, flags */
	WF_OP_CLIENT, /* kind, then its operands */
	WF_OP_EVENT, /* kind */
	WF_OP_EXIT, /* wait status byte; ends the input */
	WF_NOPS,
};

#define WF_BUF 1024 /* a packed client message */

/* The stream the session talks to, and what front_grpc.c would have seen. */
static struct stream wf_str;
static struct session *wf_ses;
static struct {
	const uint8_t *wr_expect; /* the worker frame being relayed */
	size_t wr_expect_len;
	unsigned long wr_relayed;
} wr;

/* The input, consumed front to back. */
struct wf_in {
	const uint8_t *wi_p;
	size_t wi_n;
};

static int
wf_byte(struct wf_in *in)
{
	if (in->wi_n == 0)
		return -1;
	in->wi_n--;
	return *in->wi_p++;
}

/* front_grpc.c: the first status sticks, and nothing follows it. */
static void
wf_finish(struct stream *s, int code, const char *msg)
{
	CHECK(s == &wf_str);
	CHECK(code >= GRPC_OK && code <= GRPC_UNAUTHENTICATED);
	CHECK(msg == NULL || strlen(msg) < 4096);
	CHECK(!s->str_finished || code == s->str_status);
}

/* Only a frame being checked may reach the client, and unchanged. */
static void
wf_relay(struct stream *s, const uint8_t *msg, size_t len)
{
	CHECK(s == &wf_str);
	CHECK(!s->str_finished);
	CHECK(wr.wr_expect != NULL);
	CHECK(len == wr.wr_expect_len);
	CHECK(len == 0 || memcmp(msg, wr.wr_expect, len) == 0);
	wr.wr_relayed++;
}

/* Whether a control frame is a Flush, the one the session takes after
 * Ready (Taken comes before it). */
static int
wf_is_flush(const uint8_t *msg, size_t len)
{
	Remotemedia__Worker__V1__WorkerControl *c;
	int flush;

	c = remotemedia__worker__v1__worker_control__unpack(NULL, len, msg);
	flush = c != NULL &&
	    c->msg_case == REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_FLUSH;
	if (c != NULL)
		remotemedia__worker__v1__worker_control__free_unpacked(c, NULL);
	return flush;
}

/*
 * One deframed worker frame. It is refused (-1) exactly when the session
 * has ended; a ServerMessage that passes reaches a client that is still
 * there, and a control frame that passes (Flush) reaches nobody.
 */
static int
wf_frame_cb(void *arg, uint8_t type, const uint8_t *msg, size_t len)
{
	unsigned long before = wr.wr_relayed;
	int rv;

	wr.wr_expect = msg;
	wr.wr_expect_len = len;
	rv = front_session_worker_frame(wf_ses, type, msg, len);
	wr.wr_expect = NULL;
	CHECK(rv == 0 || rv == -1);
	CHECK((rv == -1) == (wf_ses->ses_end_set != 0));
	CHECK(rv == -1 || type == FRAME_MSG || wf_is_flush(msg, len));
	if (rv == 0 && type == FRAME_MSG && wf_ses->ses_stream != NULL)
		CHECK(wr.wr_relayed == before + 1);
	else
		CHECK(wr.wr_relayed == before);
	return rv;
}

/* Bytes from the worker's socket, as front_worker.c's worker_feed. */
static void
wf_worker_bytes(const uint8_t *p, size_t n)
{
	int rv;

	if (wf_ses->ses_state == SES_ENDING)
		return;
	rv = deframer_feed(&wf_ses->ses_win, p, n, wf_frame_cb, NULL);
	if (rv != DEFRAME_OK && rv != DEFRAME_E_CALLBACK &&
	    wf_ses->ses_state != SES_ENDING)
		front_session_end(
		    wf_ses, GRPC_INTERNAL, "worker protocol violation");
	CHECK(rv != DEFRAME_E_CALLBACK || wf_ses->ses_end_set);
}

/* One worker frame built here (the Ready that makes the session READY). */
static void
wf_worker_msg(ServerMessage *m)
{
	uint8_t buf[WF_BUF];
	size_t len;

	len = remotemedia__v1__server_message__get_packed_size(m);
	CHECK(len + FRAME_HDR_LEN <= sizeof(buf));
	frame_worker_header(buf, FRAME_MSG, (uint32_t)len);
	remotemedia__v1__server_message__pack(m, buf + FRAME_HDR_LEN);
	wf_worker_bytes(buf, len + FRAME_HDR_LEN);
}

/* Hand raw bytes to the session as one client message; -1 means ended. */
static void
wf_client_bytes(const uint8_t *p, size_t len)
{
	int was = wf_ses->ses_end_set, rv;

	rv = front_session_client_msg(wf_ses, p, len);
	CHECK(rv == 0 || rv == -1);
	if (rv == -1)
		CHECK(wf_ses->ses_end_set);
	if (!was && wf_ses->ses_end_set)
		CHECK(rv == -1);
}

static void
wf_client_msg(ClientMessage *m)
{
	uint8_t buf[WF_BUF];
	size_t len;

	len = remotemedia__v1__client_message__get_packed_size(m);
	CHECK(len <= sizeof(buf));
	remotemedia__v1__client_message__pack(m, buf);
	wf_client_bytes(buf, len);
}

/* Call ids: a byte, with 255 standing for the largest id there is. */
static uint64_t
wf_id(int b)
{
	return b == 255 ? UINT64_MAX : (uint64_t)(b < 0 ? 0 : b);
}

/* A Value chunk of a call's arguments or of the object (id 0). */
static void
wf_value(Value *v, uint64_t id, int flags)
{
	v->call_id = id;
	v->seq = (flags & 4) ? (uint32_t)(flags >> 4) : 0;
	v->more = (flags & 2) != 0;
	v->data.data = (uint8_t *)"chunk";
	v->data.len = 5;
}

/* Call: flags pick the name, chunked arguments and a deadline. */
static void
wf_call(struct wf_in *in)
{
	static const char *names[] = {"", "m", "gen", "__getattr__"};
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Call c = REMOTEMEDIA__V1__CALL__INIT;
	Value args = REMOTEMEDIA__V1__VALUE__INIT;
	uint64_t id = wf_id(wf_byte(in));
	int flags = wf_byte(in);

	if (flags < 0)
		flags = 0;
	c.call_id = id;
	c.name = (char *)names[(flags >> 6) & 3];
	c.timeout_ms = (flags & 8) ? 1 + (uint64_t)(flags & 0x30) * 1000 : 0;
	if (flags & 1) {
		wf_value(&args, id, flags);
		c.args = &args;
	}
	m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CALL;
	m.call = &c;
	wf_client_msg(&m);
}

static void
wf_pull(struct wf_in *in)
{
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Pull p = REMOTEMEDIA__V1__PULL__INIT;
	int n, flags;

	p.call_id = wf_id(wf_byte(in));
	n = wf_byte(in);
	flags = wf_byte(in);
	p.n = n == 255 ? UINT32_MAX : (uint32_t)(n < 0 ? 1 : n);
	p.timeout_ms = flags > 0 ? (uint64_t)flags * 1000 : 0;
	m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_PULL;
	m.pull = &p;
	wf_client_msg(&m);
}

/* Cancel, Value, Close, Open (again) or raw bytes, by kind. */
static void
wf_client(struct wf_in *in)
{
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Cancel cancel = REMOTEMEDIA__V1__CANCEL__INIT;
	Remotemedia__V1__Close close = REMOTEMEDIA__V1__CLOSE__INIT;
	Remotemedia__V1__Open op = REMOTEMEDIA__V1__OPEN__INIT;
	Value v = REMOTEMEDIA__V1__VALUE__INIT;
	int kind = wf_byte(in), n, flags;

	switch (kind < 0 ? 0 : kind % 5) {
	case 0:
		cancel.call_id = wf_id(wf_byte(in));
		m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CANCEL;
		m.cancel = &cancel;
		break;
	case 1:
		v.call_id = wf_id(wf_byte(in));
		flags = wf_byte(in);
		wf_value(&v, v.call_id, flags < 0 ? 0 : flags);
		m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_VALUE;
		m.value = &v;
		break;
	case 2:
		m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CLOSE;
		m.close = &close;
		break;
	case 3:
		op.source = (char *)"class A: pass";
		m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_OPEN;
		m.open = &op;
		break;
	default:
		n = wf_byte(in);
		n = n < 0 ? 0 : (size_t)n > in->wi_n ? (int)in->wi_n : n;
		wf_client_bytes(in->wi_p, (size_t)n);
		in->wi_p += n;
		in->wi_n -= (size_t)n;
		return;
	}
	wf_client_msg(&m);
}

/* Things that happen around the session: its client and its worker. */
static void
wf_event(struct wf_in *in)
{
	int kind = wf_byte(in);

	switch (kind < 0 ? 0 : kind % 8) {
	case 0:
		front_session_client_closed(wf_ses);
		break;
	case 1:
		front_session_worker_eof(wf_ses);
		break;
	case 2:
		fake.fk_grpc_pending = FRONT_BUF_HIGH;
		break;
	case 3:
		fake.fk_grpc_pending = 0;
		front_session_drained(wf_ses);
		break;
	case 4:
		/* The stream is reset: front_grpc_stream_closed. */
		if (wf_ses->ses_stream == NULL)
			break;
		wf_str.str_session = NULL;
		wf_ses->ses_stream = NULL;
		front_session_client_gone(wf_ses);
		break;
	case 5:
		front_session_kill_all();
		break;
	case 6:
		/* SIGTERM: idle sessions close, busy ones finish first. */
		front_session_drain_all();
		break;
	default:
		/* Time passes: deadlines, idle and lifetime limits fire. */
		fake_fire_timers();
		event_base_loop(front_base, EVLOOP_NONBLOCK);
		break;
	}
}

/* A real Open, then a real Ready: the session is READY. */
static void
wf_make_ready(int chunked)
{
	ClientMessage cm = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Open op = REMOTEMEDIA__V1__OPEN__INIT;
	Value obj = REMOTEMEDIA__V1__VALUE__INIT;
	ServerMessage sm = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Ready r = REMOTEMEDIA__V1__READY__INIT;

	op.protocol = REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1;
	obj.data.data = (uint8_t *)"\x80\x05pickled-object.";
	obj.data.len = 18;
	obj.more = chunked;
	op.object = &obj;
	cm.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_OPEN;
	cm.open = &op;
	wf_client_msg(&cm);
	CHECK(wf_ses->ses_state == SES_STARTING && wf_ses->ses_pid > 0);
	r.session_id = wf_ses->ses_id;
	r.python_version = (char *)"3.11";
	r.protocol = REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1;
	sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_READY;
	sm.ready = &r;
	wf_worker_msg(&sm);
	CHECK(wf_ses->ses_state == SES_READY);
}

/* Run the program; returns the worker's wait status for the end. */
static int
wf_run(struct wf_in *in)
{
	size_t n;
	int op, b;

	while ((op = wf_byte(in)) != -1) {
		switch (op % WF_NOPS) {
		case WF_OP_WORKER:
		case WF_OP_WORKER2:
		case WF_OP_WORKER_BIG:
			n = 1 + (size_t)(wf_byte(in) & 0xff);
			if (op % WF_NOPS == WF_OP_WORKER_BIG)
				n = (n - 1) << 8 | (size_t)(wf_byte(in) & 0xff);
			n = n < in->wi_n ? n : in->wi_n;
			wf_worker_bytes(in->wi_p, n);
			in->wi_p += n;
			in->wi_n -= n;
			break;
		case WF_OP_CALL:
			wf_call(in);
			break;
		case WF_OP_PULL:
			wf_pull(in);
			break;
		case WF_OP_CLIENT:
			wf_client(in);
			break;
		case WF_OP_EVENT:
			wf_event(in);
			break;
		default:
			/* An exit status, or a signal (SIGXCPU: a limit). */
			if ((b = wf_byte(in)) < 0)
				return 0;
			return (b & 0x80) ? W_EXITCODE(b & 0x7f, 0) : b & 0x7f;
		}
	}
	return W_EXITCODE(0, SIGKILL);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* RM_FUZZ_DEBUG=1 shows what the front logs, to study a finding. */
	log_init("fuzz_worker_frames",
	    getenv("RM_FUZZ_DEBUG") != NULL ? LOG_LEVEL_DEBUG
	                                    : LOG_LEVEL_ERROR);
	/* The daemon's defaults, with limits small enough to reach. */
	front_config_defaults(&front_conf);
	front_conf.fc_session_idle_ms = 600 * 1000;
	front_conf.fc_max_inflight = 4;
	front_conf.fc_max_value = 64;
	if ((front_base = event_base_new()) == NULL)
		abort();
	fake.fk_on_relay = wf_relay;
	fake.fk_on_finish = wf_finish;
	return 0;
}

/*
 * The first byte: bit 0 opens with a chunked object. Then the program.
 * At the end the worker is reaped, and the session must be gone.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct wf_in in;
	unsigned long freed = fake.fk_sessions_freed;
	int wstatus, attached;

	if (size < 1)
		return 0;
	in.wi_p = data + 1;
	in.wi_n = size - 1;
	memset(&wf_str, 0, sizeof(wf_str));
	memset(&wr, 0, sizeof(wr));
	fake.fk_grpc_pending = 0;
	wf_ses = front_session_new(&wf_str);
	wf_str.str_session = wf_ses;
	wf_make_ready(data[0] & 1);
	wstatus = wf_run(&in);
	attached = wf_ses->ses_stream != NULL;
	fake_reap_all(wstatus);
	CHECK(front_session_count() == 0);
	CHECK(fake.fk_sessions_freed == freed + 1);
	CHECK(!attached || wf_str.str_finished);
	CHECK(wf_str.str_session == NULL);
	CHECK(
	    event_base_get_num_events(front_base, EVENT_BASE_COUNT_ADDED) == 0);
	wf_ses = NULL;
	return 0;
}
