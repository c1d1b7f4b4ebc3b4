/*
 * Fuzz target: the front's whole input path, from raw HTTP/2 bytes through
 * nghttp2 (front_h2.c), gRPC framing and routing (front_grpc.c), Echo and
 * Health, to the session state machine (front_session.c) and the
 * requirement validator (req.c). Only worker processes, environments, the
 * sandbox and the trash are fakes (tests/fake).
 *
 * Each input is one connection: a socketpair, front_h2_accept() on one end,
 * and on the other the client preface and then the input, written frame by
 * frame with a turn of the event loop after each, so that a fake worker's
 * answers (Ready, Result, Item, End) come back between the client's frames
 * as they would from a real one. PINGs with magic payloads (h2z_magic)
 * stand for SIGTERM, for time passing and for environment builds. Then the
 * client closes, and the connection, its streams and its sessions must all
 * be freed.
 */
#include <sys/socket.h>
#include <sys/wait.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "remotemedia.pb-c.h"

#include "fake.h"
#include "fuzz.h"

typedef Remotemedia__V1__ClientMessage ClientMessage;
typedef Remotemedia__V1__ServerMessage ServerMessage;
typedef Remotemedia__V1__Value Value;

#define H2Z_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2Z_FRAME_HDR 9
#define H2Z_PING 6
#define H2Z_STEPS 64 /* frames written one at a time */
#define H2Z_SETTLE 4 /* loop turns once everything is written */
#define H2Z_CLOSE_TURNS 64 /* loop turns for the connection to go */
#define H2Z_WRITE_TRIES 256
#define H2Z_GENS 8 /* generators a fake worker runs at once */
#define H2Z_ITEMS 3 /* items a fake generator has */

/*
 * A fake worker: it answers what the front relays to it as a well-behaved
 * worker would, and its answers reach the session from the loop, through
 * the session's deframer, as front_worker.c delivers them.
 */
struct fakew {
	LIST_ENTRY(fakew) fw_entry;
	struct session *fw_ses;
	struct evbuffer *fw_out; /* frames not delivered yet */
	struct event *fw_ev;
	int fw_open_more; /* Open.object chunks to come */
	int fw_close; /* Close seen: exit once delivered */
	uint64_t fw_args[H2Z_GENS]; /* calls whose args are still chunked */
	uint64_t fw_gens[H2Z_GENS]; /* running generators */
	uint64_t fw_items[H2Z_GENS]; /* items each one has sent */
};
static LIST_HEAD(, fakew) fakews = LIST_HEAD_INITIALIZER(fakews);

static struct fakew *
fakew_find(struct session *ses)
{
	struct fakew *fw;

	LIST_FOREACH (fw, &fakews, fw_entry)
		if (fw->fw_ses == ses)
			return fw;
	return NULL;
}

static int
fakew_frame_cb(void *arg, uint8_t type, const uint8_t *msg, size_t len)
{
	return front_session_worker_frame(arg, type, msg, len);
}

/* Deliver what the worker wrote; after a Close, exit and be reaped. */
static void
fakew_deliver_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct fakew *fw = arg;
	struct session *ses = fw->fw_ses;
	size_t len = evbuffer_get_length(fw->fw_out);
	int rv;

	if (len > 0 && ses->ses_state != SES_ENDING) {
		rv = deframer_feed(&ses->ses_win,
		    evbuffer_pullup(fw->fw_out, -1), len, fakew_frame_cb, ses);
		CHECK(rv == DEFRAME_OK || rv == DEFRAME_E_CALLBACK);
	}
	evbuffer_drain(fw->fw_out, evbuffer_get_length(fw->fw_out));
	if (fw->fw_close) {
		/* The session may free itself, and fw with it. */
		front_session_worker_eof(ses);
		ses->ses_exited = 1;
		front_session_worker_exited(ses, W_EXITCODE(0, 0));
	}
}

static struct fakew *
fakew_get(struct session *ses)
{
	struct fakew *fw;

	if ((fw = fakew_find(ses)) != NULL)
		return fw;
	fw = xcalloc(1, sizeof(*fw));
	fw->fw_ses = ses;
	if ((fw->fw_out = evbuffer_new()) == NULL ||
	    (fw->fw_ev = event_new(front_base, -1, 0, fakew_deliver_cb, fw)) ==
	        NULL)
		abort();
	LIST_INSERT_HEAD(&fakews, fw, fw_entry);
	return fw;
}

/* front_worker_close: the session lets go of its worker. */
static void
fakew_close(struct session *ses)
{
	struct fakew *fw = fakew_find(ses);

	if (fw == NULL)
		return;
	LIST_REMOVE(fw, fw_entry);
	event_free(fw->fw_ev);
	evbuffer_free(fw->fw_out);
	free(fw);
}

/* Queue one ServerMessage as a worker frame. */
static void
fakew_put(struct fakew *fw, ServerMessage *m)
{
	uint8_t *buf;
	size_t len;

	len = remotemedia__v1__server_message__get_packed_size(m);
	buf = xmalloc(len + FRAME_HDR_LEN);
	frame_worker_header(buf, FRAME_MSG, (uint32_t)len);
	remotemedia__v1__server_message__pack(m, buf + FRAME_HDR_LEN);
	if (evbuffer_add(fw->fw_out, buf, len + FRAME_HDR_LEN) == -1)
		abort();
	free(buf);
}

static void
fakew_ready(struct fakew *fw)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Ready r = REMOTEMEDIA__V1__READY__INIT;

	r.session_id = fw->fw_ses->ses_id;
	r.python_version = (char *)"3.11";
	r.protocol = REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_READY;
	m.ready = &r;
	fakew_put(fw, &m);
}

/* Find id in a small set (0 is never a call id), or a free slot if 0. */
static int
fakew_slot(const uint64_t *set, uint64_t id)
{
	int i;

	for (i = 0; i < H2Z_GENS; i++)
		if (set[i] == id)
			return i;
	return -1;
}

/* A call's arguments are all there: answer as its name says. */
static void
fakew_answer(struct fakew *fw, uint64_t id, const char *name)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Result r = REMOTEMEDIA__V1__RESULT__INIT;
	Remotemedia__V1__Error e = REMOTEMEDIA__V1__ERROR__INIT;
	Value v = REMOTEMEDIA__V1__VALUE__INIT;
	Value v2 = REMOTEMEDIA__V1__VALUE__INIT;
	int i;

	if (name[0] == 'e') {
		e.call_id = id;
		e.type = (char *)"ValueError";
		e.message = (char *)"fake";
		m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR;
		m.error = &e;
		fakew_put(fw, &m);
		return;
	}
	r.call_id = id;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_RESULT;
	m.result = &r;
	if (name[0] == 'g' && (i = fakew_slot(fw->fw_gens, 0)) != -1) {
		fw->fw_gens[i] = id;
		fw->fw_items[i] = 0;
		r.generator = 1;
		fakew_put(fw, &m);
		return;
	}
	v.call_id = id;
	v.data.data = (uint8_t *)"result";
	v.data.len = 6;
	v.more = name[0] == 'b'; /* "big": the result in two chunks */
	r.value = &v;
	fakew_put(fw, &m);
	if (!v.more)
		return;
	v2.call_id = id;
	v2.seq = 1;
	v2.data = v.data;
	m = (ServerMessage)REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_VALUE;
	m.value = &v2;
	fakew_put(fw, &m);
}

/* Pull: up to n items, and End when the generator runs dry. */
static void
fakew_pull(struct fakew *fw, uint64_t id, uint32_t n, int cancel)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Item it = REMOTEMEDIA__V1__ITEM__INIT;
	Remotemedia__V1__End end = REMOTEMEDIA__V1__END__INIT;
	Value v = REMOTEMEDIA__V1__VALUE__INIT;
	int i;

	if (id == 0 || (i = fakew_slot(fw->fw_gens, id)) == -1)
		return;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ITEM;
	m.item = &it;
	it.call_id = v.call_id = id;
	it.value = &v;
	v.data.data = (uint8_t *)"item";
	v.data.len = 4;
	for (; !cancel && n > 0 && fw->fw_items[i] < H2Z_ITEMS; n--) {
		it.index = fw->fw_items[i]++;
		fakew_put(fw, &m);
	}
	if (!cancel && fw->fw_items[i] < H2Z_ITEMS)
		return;
	end.call_id = id;
	end.cancelled = cancel;
	m = (ServerMessage)REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_END;
	m.end = &end;
	fakew_put(fw, &m);
	fw->fw_gens[i] = 0;
}

/* A continuation chunk from the client: of the object, or of args. */
static void
fakew_value(struct fakew *fw, Value *v)
{
	int i;

	if (v->call_id == 0) {
		if (fw->fw_open_more && !v->more) {
			fw->fw_open_more = 0;
			fakew_ready(fw);
		}
		return;
	}
	if (v->more || (i = fakew_slot(fw->fw_args, v->call_id)) == -1)
		return;
	fw->fw_args[i] = 0;
	fakew_answer(fw, v->call_id, "m");
}

static void
fakew_call(struct fakew *fw, Remotemedia__V1__Call *c)
{
	int i;

	if (c->args != NULL && c->args->more) {
		if ((i = fakew_slot(fw->fw_args, 0)) != -1)
			fw->fw_args[i] = c->call_id;
		return;
	}
	fakew_answer(fw, c->call_id, c->name);
}

/* front_worker_send: what the front relays, a ClientMessage it checked. */
static void
fakew_recv(struct session *ses, uint8_t type, const uint8_t *msg, size_t len)
{
	struct fakew *fw = fakew_get(ses);
	ClientMessage *m;

	if (type != FRAME_MSG)
		return;
	m = remotemedia__v1__client_message__unpack(NULL, len, msg);
	CHECK(m != NULL);
	switch (m->msg_case) {
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_OPEN:
		if (m->open->object != NULL && m->open->object->more)
			fw->fw_open_more = 1;
		else
			fakew_ready(fw);
		break;
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_VALUE:
		fakew_value(fw, m->value);
		break;
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CALL:
		fakew_call(fw, m->call);
		break;
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_PULL:
		fakew_pull(fw, m->pull->call_id, m->pull->n, 0);
		break;
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CANCEL:
		fakew_pull(fw, m->cancel->call_id, 0, 1);
		break;
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CLOSE:
		fw->fw_close = 1;
		break;
	default:
		break;
	}
	remotemedia__v1__client_message__free_unpacked(m, NULL);
	event_active(fw->fw_ev, EV_TIMEOUT, 0);
}

/* RM_FUZZ_DUMP=FILE keeps what the server wrote, to study a finding. */
static FILE *h2z_dump;

/* Read and drop whatever the server wrote. */
static void
h2z_drain(int fd)
{
	char buf[65536];
	ssize_t n;

	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (h2z_dump != NULL)
			fwrite(buf, 1, (size_t)n, h2z_dump);
}

static void
h2z_turn(int fd)
{
	event_base_loop(front_base, EVLOOP_NONBLOCK);
	h2z_drain(fd);
}

/* Write all of p, turning the loop while the socket is full. */
static void
h2z_write(int fd, const uint8_t *p, size_t n)
{
	ssize_t w;
	int tries = 0;

	while (n > 0 && tries++ < H2Z_WRITE_TRIES) {
		if ((w = write(fd, p, n)) > 0) {
			p += w;
			n -= (size_t)w;
			continue;
		}
		if (w == -1 && errno != EAGAIN && errno != EINTR)
			return; /* the server closed the connection */
		h2z_turn(fd);
	}
}

/* What front.c does on SIGTERM: the GOAWAY notice, sessions drain, and
 * (a timer later, here at once) the final GOAWAY. */
static void
h2z_sigterm(void)
{
	if (fake.fk_draining)
		return;
	fake.fk_draining = 1;
	front_h2_goaway_all(0, 0);
	front_session_drain_all();
	front_h2_goaway_all(1, 0);
}

static void
h2z_env_ok(void)
{
	fake_env_done(1);
}

static void
h2z_env_fail(void)
{
	fake_env_done(0);
}

/*
 * PINGs with these payloads stand for what does not come from the client:
 * SIGTERM, time passing (every timer fires), and the environment builds
 * of installing sessions reporting, succeeding or failing.
 */
static const struct {
	const char *hm_payload;
	void (*hm_fn)(void);
} h2z_magic[] = {
    {"SIGTERM!", h2z_sigterm},
    {"TIMEOUT!", fake_fire_timers},
    {"PROGRESS", fake_env_progress},
    {"ENVREADY", h2z_env_ok},
    {"ENVFAIL!", h2z_env_fail},
};

/* If this frame is one of the magic PINGs, do what it stands for. */
static void
h2z_event(int fd, const uint8_t *p, size_t len)
{
	size_t i;

	if (len != H2Z_FRAME_HDR + 8 || p[3] != H2Z_PING)
		return;
	for (i = 0; i < sizeof(h2z_magic) / sizeof(h2z_magic[0]); i++) {
		if (memcmp(p + H2Z_FRAME_HDR, h2z_magic[i].hm_payload, 8) ==
		    0) {
			h2z_magic[i].hm_fn();
			h2z_turn(fd);
		}
	}
}

/* The input, frame by frame for the first H2Z_STEPS frames. */
static void
h2z_feed(int fd, const uint8_t *p, size_t n)
{
	size_t len;
	int i;

	for (i = 0; i < H2Z_STEPS && n > 0; i++) {
		len = n < H2Z_FRAME_HDR ? n
		                        : H2Z_FRAME_HDR +
		        ((size_t)p[0] << 16 | (size_t)p[1] << 8 | p[2]);
		len = len < n ? len : n;
		h2z_write(fd, p, len);
		h2z_turn(fd);
		h2z_event(fd, p, len);
		p += len;
		n -= len;
	}
	h2z_write(fd, p, n);
	for (i = 0; i < H2Z_SETTLE; i++)
		h2z_turn(fd);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	/* RM_FUZZ_DEBUG=1 shows what the front logs, to study a finding. */
	log_init("fuzz_front_h2",
	    getenv("RM_FUZZ_DEBUG") != NULL ? LOG_LEVEL_DEBUG
	                                    : LOG_LEVEL_ERROR);
	signal(SIGPIPE, SIG_IGN);
	/* The daemon's defaults, with limits small enough to reach. */
	front_config_defaults(&front_conf);
	front_conf.fc_session_idle_ms = 600 * 1000;
	front_conf.fc_max_sessions = 4;
	front_conf.fc_max_inflight = 8;
	front_conf.fc_max_value = 4096;
	if ((front_base = event_base_new()) == NULL)
		abort();
	fake.fk_on_send = fakew_recv;
	fake.fk_on_close = fakew_close;
	if (getenv("RM_FUZZ_DUMP") != NULL &&
	    (h2z_dump = fopen(getenv("RM_FUZZ_DUMP"), "w")) == NULL)
		abort();
	return 0;
}

/*
 * One connection per input. Once the client has gone, the connection must
 * be freed, and, once their workers are reaped, every session, with no
 * event left behind.
 */
int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned long closed = fake.fk_conns_closed;
	int sv[2], i;

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == -1 ||
	    evutil_make_socket_nonblocking(sv[0]) == -1 ||
	    evutil_make_socket_nonblocking(sv[1]) == -1)
		abort();
	CHECK(front_h2_accept(sv[0], "fuzz", 1) != NULL);
	h2z_write(sv[1], (const uint8_t *)H2Z_PREFACE, strlen(H2Z_PREFACE));
	h2z_feed(sv[1], data, size);
	close(sv[1]);
	for (i = 0; i < H2Z_CLOSE_TURNS && fake.fk_conns_closed == closed; i++)
		event_base_loop(front_base, EVLOOP_NONBLOCK);
	CHECK(fake.fk_conns_closed == closed + 1);
	fake_reap_all(W_EXITCODE(0, SIGKILL));
	CHECK(front_session_count() == 0);
	CHECK(LIST_EMPTY(&fakews));
	CHECK(event_base_get_num_events(front_base,
	          EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE) == 0);
	fake.fk_draining = 0;
	return 0;
}
