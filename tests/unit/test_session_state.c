/*
 * Unit tests for the session state machine (front_session.c) in isolation.
 *
 * front_session.c is linked with frame.c, log.c, util.c and the protobuf-c
 * code only. What it uses from front.c, front_grpc.c, front_worker.c and
 * front_env.c is the fake front of tests/fake, shared with the fuzz
 * targets; its hooks record here what the session forwarded, and the
 * status it finished the stream with. The tests drive the session with
 * packed ClientMessage and ServerMessage bytes, and look at those records
 * and at the fake's counts (spawns, kills, pauses, frees).
 * No event loop runs except in the deadline tests, which wait 1 ms.
 */
#include <sys/types.h>
#include <sys/wait.h>

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "front.h"
#include "log.h"
#include "req.h"
#include "util.h"

#include "remotemedia.pb-c.h"
#include "worker.pb-c.h"

#include "fake.h"

typedef Remotemedia__V1__ClientMessage ClientMessage;
typedef Remotemedia__V1__ServerMessage ServerMessage;
typedef Remotemedia__V1__Value Value;

#define FAKE_PID FAKE_PID_FIRST /* the first worker after fake_reset() */
#define NREC 64

/* One recorded message: a frame type (or 0) and a copy of the bytes. */
struct msgrec {
	uint8_t mr_type;
	uint8_t *mr_buf;
	size_t mr_len;
};

/* What the fake's hooks saw during one test. */
static struct {
	int finish_n;
	int finish_code; /* the first status: the one the client sees */
	char finish_msg[512];
	int finish_mismatch; /* a later finish named another status */
	int other_finish_n; /* finishes of streams other than str */
	struct msgrec to_client[NREC];
	int to_client_n;
	struct msgrec to_worker[NREC];
	int to_worker_n;
} rec;

static struct stream str;
static struct session *ses;

/* The last message a helper packed, to compare with what was forwarded. */
static uint8_t last_buf[4096];
static size_t last_len;

static void
msgrec_add(struct msgrec *r, int *n, uint8_t type, const uint8_t *p, size_t len)
{
	assert_true(*n < NREC);
	r[*n].mr_type = type;
	r[*n].mr_len = len;
	r[*n].mr_buf = xmalloc(len);
	if (len > 0)
		memcpy(r[*n].mr_buf, p, len);
	(*n)++;
}

/* front_grpc.c, through the fake: the first status of str is the one. */
static void
rec_finish(struct stream *s, int code, const char *msg)
{
	if (s != &str) {
		rec.other_finish_n++;
		return;
	}
	rec.finish_n++;
	if (s->str_finished) {
		if (code != rec.finish_code)
			rec.finish_mismatch = 1;
		return;
	}
	rec.finish_code = code;
	snprintf(rec.finish_msg, sizeof(rec.finish_msg), "%s", msg ? msg : "");
}

static void
rec_to_client(struct stream *s, const uint8_t *msg, size_t len)
{
	assert_ptr_equal(s, &str);
	msgrec_add(rec.to_client, &rec.to_client_n, 0, msg, len);
}

/* front_worker.c, through the fake: a frame the worker would read. */
static void
rec_to_worker(struct session *s, uint8_t type, const uint8_t *msg, size_t len)
{
	msgrec_add(rec.to_worker, &rec.to_worker_n, type, msg, len);
}

/* Forget the records and the fake's counts and knobs; hook in again. */
static void
rec_reset(void)
{
	int i;

	for (i = 0; i < rec.to_client_n; i++)
		free(rec.to_client[i].mr_buf);
	for (i = 0; i < rec.to_worker_n; i++)
		free(rec.to_worker[i].mr_buf);
	memset(&rec, 0, sizeof(rec));
	rec.finish_code = -1;
	fake_reset();
	fake.fk_on_finish = rec_finish;
	fake.fk_on_relay = rec_to_client;
	fake.fk_on_send = rec_to_worker;
}

/* Fixture: a fresh event base and one session in OPENING. */
static int
setup(void **state)
{
	rec_reset();
	memset(&str, 0, sizeof(str));
	memset(&front_conf, 0, sizeof(front_conf));
	front_conf.fc_grace_ms = 2000;
	front_conf.fc_exit_wait_ms = 2000;
	front_conf.fc_max_inflight = 4;
	front_conf.fc_max_value = 64 * 1024;
	front_conf.fc_max_sessions = 3;
	front_conf.fc_max_sessions_per_token = 2;
	front_base = event_base_new();
	assert_non_null(front_base);
	assert_int_equal(front_session_count(), 0);
	ses = front_session_new(&str);
	str.str_session = ses;
	return 0;
}

static int
alive(void)
{
	return front_session_count() > 0;
}

/* End and free whatever the test left alive, then check the books. */
static int
teardown(void **state)
{
	if (alive()) {
		if (ses->ses_pid > 0 && !ses->ses_reaped)
			front_session_worker_exited(
			    ses, W_EXITCODE(0, SIGKILL));
		else
			front_session_end(ses, GRPC_CANCELLED, "teardown");
	}
	assert_int_equal(front_session_count(), 0);
	assert_false(rec.finish_mismatch);
	event_base_free(front_base);
	front_base = NULL;
	rec_reset();
	ses = NULL;
	return 0;
}

/* Pack a client message, keep a copy, and hand it to the session. */
static int
send_client(ClientMessage *m)
{
	last_len = remotemedia__v1__client_message__get_packed_size(m);
	assert_true(last_len <= sizeof(last_buf));
	remotemedia__v1__client_message__pack(m, last_buf);
	return front_session_client_msg(ses, last_buf, last_len);
}

static int
send_worker(ServerMessage *m)
{
	last_len = remotemedia__v1__server_message__get_packed_size(m);
	assert_true(last_len <= sizeof(last_buf));
	remotemedia__v1__server_message__pack(m, last_buf);
	return front_session_worker_frame(ses, FRAME_MSG, last_buf, last_len);
}

static void
set_data(Value *v, const char *s)
{
	v->data.data = (uint8_t *)s;
	v->data.len = strlen(s);
}

/* Client: Open with an object, optionally chunked or with requirements. */
static int
c_open_full(uint32_t protocol, int more, char **reqs, size_t nreqs,
    const char *object, const char *source)
{
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Open op = REMOTEMEDIA__V1__OPEN__INIT;
	Value obj = REMOTEMEDIA__V1__VALUE__INIT;

	op.protocol = protocol;
	if (object != NULL) {
		set_data(&obj, object);
		obj.more = more;
		op.object = &obj;
	}
	if (source != NULL) {
		op.source = (char *)source;
		op.class_name = (char *)"Echo";
	}
	op.requirements = reqs;
	op.n_requirements = nreqs;
	m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_OPEN;
	m.open = &op;
	return send_client(&m);
}

static int
c_open(void)
{
	return c_open_full(REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1, 0,
	    NULL, 0, "\x80\x05pickled-object.", NULL);
}

static int
c_call_full(
    uint64_t id, const char *name, uint64_t timeout_ms, int more, uint32_t seq)
{
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Call c = REMOTEMEDIA__V1__CALL__INIT;
	Value args = REMOTEMEDIA__V1__VALUE__INIT;

	c.call_id = id;
	c.name = (char *)name;
	c.timeout_ms = timeout_ms;
	args.call_id = id;
	args.seq = seq;
	args.more = more;
	set_data(&args, "args");
	c.args = &args;
	m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CALL;
	m.call = &c;
	return send_client(&m);
}

static int
c_call(uint64_t id)
{
	return c_call_full(id, "method", 0, 0, 0);
}

static int
c_pull_full(uint64_t id, uint32_t n, uint64_t timeout_ms)
{
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Pull p = REMOTEMEDIA__V1__PULL__INIT;

	p.call_id = id;
	p.n = n;
	p.timeout_ms = timeout_ms;
	m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_PULL;
	m.pull = &p;
	return send_client(&m);
}

static int
c_pull(uint64_t id, uint32_t n)
{
	return c_pull_full(id, n, 0);
}

static int
c_cancel(uint64_t id)
{
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Cancel c = REMOTEMEDIA__V1__CANCEL__INIT;

	c.call_id = id;
	m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CANCEL;
	m.cancel = &c;
	return send_client(&m);
}

static int
c_close(void)
{
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Close c = REMOTEMEDIA__V1__CLOSE__INIT;

	m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CLOSE;
	m.close = &c;
	return send_client(&m);
}

static int
c_value(uint64_t id, uint32_t seq, int more)
{
	ClientMessage m = REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Value v = REMOTEMEDIA__V1__VALUE__INIT;

	v.call_id = id;
	v.seq = seq;
	v.more = more;
	set_data(&v, "chunk");
	m.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_VALUE;
	m.value = &v;
	return send_client(&m);
}

/* Worker: the ServerMessages it may send. */
static int
w_ready(void)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Ready r = REMOTEMEDIA__V1__READY__INIT;

	r.session_id = (char *)"s1";
	r.python_version = (char *)"3.11";
	r.protocol = REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_READY;
	m.ready = &r;
	return send_worker(&m);
}

static int
w_progress(void)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Progress p = REMOTEMEDIA__V1__PROGRESS__INIT;

	p.stage = REMOTEMEDIA__V1__PROGRESS__STAGE__STAGE_LOG;
	p.log_line = (char *)"loading";
	p.fraction = -1;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_PROGRESS;
	m.progress = &p;
	return send_worker(&m);
}

static void
pack_output(ServerMessage *m, Remotemedia__V1__Output *o)
{
	o->data.data = (uint8_t *)"printed\n";
	o->data.len = 8;
	m->msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_OUTPUT;
	m->output = o;
}

/* An Output on the worker's socket: a violation, as the front reads the
 * output pipes itself. */
static int
w_output(void)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Output o = REMOTEMEDIA__V1__OUTPUT__INIT;

	pack_output(&m, &o);
	return send_worker(&m);
}

/* An Output the front made of the worker's pipes (front_output.c). */
static void
f_output(void)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Output o = REMOTEMEDIA__V1__OUTPUT__INIT;

	pack_output(&m, &o);
	last_len = remotemedia__v1__server_message__get_packed_size(&m);
	remotemedia__v1__server_message__pack(&m, last_buf);
	front_session_output(ses, last_buf, last_len);
}

/* The worker's Flush, as it writes it (0x2a 0x00), or padded with an
 * unknown field, which takes the unpack path. */
static int
w_flush(int padded)
{
	static const uint8_t plain[] = {0x2a, 0x00};
	static const uint8_t pad[] = {0x2a, 0x00, 0xf8, 0x01, 0x01};

	return front_session_worker_frame(ses, FRAME_CTL, padded ? pad : plain,
	    padded ? sizeof(pad) : sizeof(plain));
}

static int
w_result_full(uint64_t id, int generator, int more, uint32_t seq)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Result r = REMOTEMEDIA__V1__RESULT__INIT;
	Value v = REMOTEMEDIA__V1__VALUE__INIT;

	r.call_id = id;
	r.generator = generator;
	if (!generator) {
		v.call_id = id;
		v.seq = seq;
		v.more = more;
		set_data(&v, "result");
		r.value = &v;
	}
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_RESULT;
	m.result = &r;
	return send_worker(&m);
}

static int
w_result(uint64_t id)
{
	return w_result_full(id, 0, 0, 0);
}

static int
w_item_seq(uint64_t id, uint64_t index, int more, uint32_t seq)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Item it = REMOTEMEDIA__V1__ITEM__INIT;
	Value v = REMOTEMEDIA__V1__VALUE__INIT;

	it.call_id = id;
	it.index = index;
	v.call_id = id;
	v.seq = seq;
	v.more = more;
	set_data(&v, "item");
	it.value = &v;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ITEM;
	m.item = &it;
	return send_worker(&m);
}

static int
w_item(uint64_t id, uint64_t index, int more)
{
	return w_item_seq(id, index, more, 0);
}

static int
w_value(uint64_t id, uint32_t seq, int more)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Value v = REMOTEMEDIA__V1__VALUE__INIT;

	v.call_id = id;
	v.seq = seq;
	v.more = more;
	set_data(&v, "more bytes");
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_VALUE;
	m.value = &v;
	return send_worker(&m);
}

static int
w_end(uint64_t id)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__End e = REMOTEMEDIA__V1__END__INIT;

	e.call_id = id;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_END;
	m.end = &e;
	return send_worker(&m);
}

static int
w_error(uint64_t id)
{
	ServerMessage m = REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Error e = REMOTEMEDIA__V1__ERROR__INIT;

	e.call_id = id;
	e.type = (char *)"ValueError";
	e.message = (char *)"bad value";
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR;
	m.error = &e;
	return send_worker(&m);
}

static int
w_control(Remotemedia__Worker__V1__WorkerControl *c)
{
	last_len = remotemedia__worker__v1__worker_control__get_packed_size(c);
	assert_true(last_len <= sizeof(last_buf));
	remotemedia__worker__v1__worker_control__pack(c, last_buf);
	return front_session_worker_frame(ses, FRAME_CTL, last_buf, last_len);
}

static int
w_fatal(uint32_t code, const char *msg)
{
	Remotemedia__Worker__V1__WorkerControl c =
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__INIT;
	Remotemedia__Worker__V1__Fatal f = REMOTEMEDIA__WORKER__V1__FATAL__INIT;

	f.code = code;
	f.message = (char *)msg;
	c.msg_case = REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_FATAL;
	c.fatal = &f;
	return w_control(&c);
}

/* Checks. */

/* The last message sent to the worker is the last one packed, unchanged. */
static void
check_forwarded_to_worker(int n)
{
	struct msgrec *r;

	assert_int_equal(rec.to_worker_n, n);
	r = &rec.to_worker[n - 1];
	assert_int_equal(r->mr_type, FRAME_MSG);
	assert_int_equal(r->mr_len, last_len);
	assert_memory_equal(r->mr_buf, last_buf, last_len);
}

static void
check_forwarded_to_client(int n)
{
	struct msgrec *r;

	assert_int_equal(rec.to_client_n, n);
	r = &rec.to_client[n - 1];
	assert_int_equal(r->mr_len, last_len);
	assert_memory_equal(r->mr_buf, last_buf, last_len);
}

/* The session has not ended. */
static void
check_running(void)
{
	assert_true(alive());
	assert_int_equal(rec.finish_n, 0);
	assert_int_equal(fake.fk_killed, 0);
	assert_false(ses->ses_end_set);
}

/* The stream finished with code, and msg (if given) is in its message. */
static void
check_finished(int code, const char *msg)
{
	assert_true(rec.finish_n >= 1);
	if (rec.finish_code != code)
		fail_msg("status %d ('%s'), expected %d", rec.finish_code,
		    rec.finish_msg, code);
	if (msg != NULL && strstr(rec.finish_msg, msg) == NULL)
		fail_msg("status message '%s' lacks '%s'", rec.finish_msg, msg);
}

/* A worker violation: INTERNAL, the worker killed, the session ENDING. */
static void
check_violation(const char *what)
{
	check_finished(GRPC_INTERNAL, "worker protocol violation");
	if (what != NULL)
		check_finished(GRPC_INTERNAL, what);
	assert_true(alive());
	assert_int_equal(ses->ses_state, SES_ENDING);
	assert_int_equal(fake.fk_killed, 1);
}

/* A client error after Open: the code, the worker killed, ENDING. */
static void
check_client_error(int code, const char *what)
{
	check_finished(code, what);
	assert_true(alive());
	assert_int_equal(ses->ses_state, SES_ENDING);
	assert_int_equal(fake.fk_killed, 1);
}

/*
 * A client message the session refuses after Ready. The state checks that
 * follow are what matter; the return value is checked, as a known bug, by
 * test_refused_returns_error alone.
 */
#define REFUSED(expr) ((void)(expr))

/* Open the session and let the worker say Ready. */
static void
make_ready(void)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(w_ready(), 0);
	assert_int_equal(ses->ses_state, SES_READY);
	assert_int_equal(rec.to_worker_n, 1);
	assert_int_equal(rec.to_client_n, 1);
}

/* Call `id`, answered with Result{generator}. */
static void
make_generator(uint64_t id)
{
	int nw = rec.to_worker_n, nc = rec.to_client_n;

	assert_int_equal(c_call(id), 0);
	check_forwarded_to_worker(nw + 1);
	assert_int_equal(w_result_full(id, 1, 0, 0), 0);
	check_forwarded_to_client(nc + 1);
}

/* ---- Open ---- */

static void
test_first_not_open(void **state)
{
	assert_int_equal(c_call(1), -1);
	check_finished(GRPC_INVALID_ARGUMENT, "first message");
	/* No worker yet: the session is freed at once, nothing spawned. */
	assert_false(alive());
	assert_int_equal(fake.fk_sessions_freed, 1);
	assert_int_equal(fake.fk_spawned, 0);
	assert_int_equal(fake.fk_killed, 0);
	assert_int_equal(rec.to_worker_n, 0);
	assert_null(str.str_session);
}

static int
c_pull_first(void)
{
	return c_pull(1, 1);
}

static int
c_value_first(void)
{
	return c_value(0, 1, 0);
}

/* Every other kind of first message is refused the same way. */
static void
test_first_not_open_kinds(void **state)
{
	int (*first[])(void) = {c_pull_first, c_close, c_value_first};
	size_t i;

	for (i = 0; i < sizeof(first) / sizeof(first[0]); i++) {
		if (i > 0) {
			rec_reset();
			memset(&str, 0, sizeof(str));
			ses = front_session_new(&str);
		}
		assert_int_equal(first[i](), -1);
		check_finished(GRPC_INVALID_ARGUMENT, "must be Open");
		assert_false(alive());
		assert_int_equal(fake.fk_spawned, 0);
		assert_int_equal(rec.to_worker_n, 0);
	}
}

static void
test_open_requirements_invalid(void **state)
{
	char *reqs[] = {(char *)"pandas", (char *)"-r /etc/shadow"};

	assert_int_equal(c_open_full(1, 0, reqs, 2, "obj", NULL), -1);
	check_finished(GRPC_INVALID_ARGUMENT, "options are not allowed");
	assert_int_equal(fake.fk_spawned, 0);
	assert_false(alive());
}

static void
test_open_requirements_wait_then_ready(void **state)
{
	/* The fake's environment for a "slow" name waits to be built. */
	char *reqs[] = {(char *)"Slowpkg>=1.3", (char *)"numpy"};
	const struct req_list *canon;

	assert_int_equal(c_open_full(1, 0, reqs, 2, "obj", NULL), 0);
	assert_non_null(ses->ses_env);
	canon = front_env_reqs(ses->ses_env);
	assert_int_equal(canon->rl_n, 2);
	assert_string_equal(canon->rl_v[0], "numpy");
	assert_string_equal(canon->rl_v[1], "slowpkg>=1.3");
	assert_int_equal(ses->ses_state, SES_INSTALLING);
	assert_int_equal(fake.fk_spawned, 0);
	front_session_env_ready(ses);
	assert_int_equal(fake.fk_spawned, 1);
	assert_int_equal(ses->ses_state, SES_STARTING);
	front_session_client_gone(ses);
	front_session_worker_exited(ses, W_EXITCODE(0, 9));
	assert_int_equal(fake.fk_env_released, 1);
}

/*
 * Only the front acts on Open.requirements: its worker gets the Open
 * without them, and with everything else as the client sent it.
 */
static void
test_open_requirements_not_forwarded(void **state)
{
	char *reqs[] = {(char *)"Slowpkg>=1.3", (char *)"numpy"};
	ClientMessage *cm;
	struct msgrec *r;

	assert_int_equal(c_open_full(1, 0, reqs, 2, "obj", NULL), 0);
	front_session_env_ready(ses);
	assert_int_equal(rec.to_worker_n, 1);
	r = &rec.to_worker[0];
	assert_int_equal(r->mr_type, FRAME_MSG);
	assert_true(r->mr_len < last_len);
	cm = remotemedia__v1__client_message__unpack(
	    NULL, r->mr_len, r->mr_buf);
	assert_non_null(cm);
	assert_non_null(cm->open);
	assert_int_equal(cm->open->n_requirements, 0);
	assert_int_equal(cm->open->protocol, 1);
	assert_non_null(cm->open->object);
	assert_int_equal(cm->open->object->data.len, 3);
	assert_memory_equal(cm->open->object->data.data, "obj", 3);
	remotemedia__v1__client_message__free_unpacked(cm, NULL);
	front_session_client_gone(ses);
	front_session_worker_exited(ses, W_EXITCODE(0, 9));
}

static void
test_open_requirements_failed(void **state)
{
	/* The fake's environment for a "broken" name fails. */
	char *reqs[] = {(char *)"rmtest-broken"};

	assert_int_equal(c_open_full(1, 0, reqs, 1, "obj", NULL), -1);
	check_finished(
	    GRPC_FAILED_PRECONDITION, "Failed to install rmtest-broken");
	assert_int_equal(fake.fk_spawned, 0);
	assert_false(alive());
}

static void
test_open_protocol_too_new(void **state)
{
	assert_int_equal(c_open_full(2, 0, NULL, 0, "obj", NULL), -1);
	check_finished(GRPC_FAILED_PRECONDITION, "protocol version 2");
	assert_int_equal(fake.fk_spawned, 0);
}

static void
test_open_no_object(void **state)
{
	assert_int_equal(c_open_full(1, 0, NULL, 0, NULL, NULL), -1);
	check_finished(GRPC_INVALID_ARGUMENT, "no object");
	assert_int_equal(fake.fk_spawned, 0);
}

static void
test_open_ok(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(fake.fk_spawned, 1);
	assert_int_equal(ses->ses_pid, FAKE_PID);
	assert_int_equal(ses->ses_state, SES_STARTING);
	check_forwarded_to_worker(1);
	assert_int_equal(rec.to_client_n, 0);
	check_running();
	assert_ptr_equal(front_session_by_pid(FAKE_PID), ses);
	assert_null(front_session_by_pid(FAKE_PID + 1));
}

/* A JSON client may send source and class name instead of an object. */
static void
test_open_source_only(void **state)
{
	assert_int_equal(
	    c_open_full(1, 0, NULL, 0, NULL, "class Echo:\n    pass\n"), 0);
	assert_int_equal(ses->ses_state, SES_STARTING);
	check_forwarded_to_worker(1);
}

static void
test_open_spawn_fails(void **state)
{
	fake.fk_spawn_fail = 1;
	assert_int_equal(c_open(), -1);
	check_finished(GRPC_UNAVAILABLE, "cannot start a worker");
	assert_false(alive());
	assert_int_equal(fake.fk_killed, 0);
}

static void
test_open_forward_fails(void **state)
{
	fake.fk_send_fail = 1;
	assert_int_equal(c_open(), -1);
	check_client_error(GRPC_ABORTED, "worker is gone");
}

static void
test_open_twice(void **state)
{
	make_ready();
	assert_int_equal(c_open(), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "Open sent twice");
}

/* The same before Ready: the second Open is named as such. */
static void
test_open_twice_before_ready(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(ses->ses_state, SES_STARTING);
	assert_int_equal(c_open(), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "Open sent twice");
}

/* Open.object in chunks: call id 0, seq 1, 2, ... before Ready. */
static void
test_open_chunks(void **state)
{
	assert_int_equal(c_open_full(1, 1, NULL, 0, "part0", NULL), 0);
	assert_int_equal(c_value(0, 1, 1), 0);
	check_forwarded_to_worker(2);
	assert_int_equal(c_value(0, 2, 0), 0);
	check_forwarded_to_worker(3);
	check_running();
	/* The object is complete: one chunk more is an error. */
	assert_int_equal(c_value(0, 3, 0), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "chunk 3");
	assert_int_equal(rec.to_worker_n, 3);
}

static void
test_open_chunk_wrong_seq(void **state)
{
	assert_int_equal(c_open_full(1, 1, NULL, 0, "part0", NULL), 0);
	assert_int_equal(c_value(0, 2, 0), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "unexpected chunk 2");
}

/* ---- Ready ---- */

/* The front reads the output: an Output on the socket gets round its cap. */
static void
test_output_on_the_socket(void **state)
{
	make_ready();
	assert_int_equal(w_output(), -1);
	check_violation("Output on its socket");
	assert_int_equal(rec.to_client_n, 1); /* Ready alone */
}

static void
test_ready(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(w_progress(), 0);
	check_forwarded_to_client(1);
	f_output();
	check_forwarded_to_client(2);
	assert_int_equal(w_flush(0), 0);
	assert_int_equal(w_flush(1), 0);
	assert_int_equal(rec.to_client_n, 2); /* Flush is not relayed */
	assert_int_equal(ses->ses_state, SES_STARTING);
	assert_int_equal(w_ready(), 0);
	assert_int_equal(ses->ses_state, SES_READY);
	check_forwarded_to_client(3);
	check_running();
}

static void
test_ready_twice(void **state)
{
	make_ready();
	assert_int_equal(w_ready(), -1);
	check_violation("unexpected Ready");
	assert_int_equal(rec.to_client_n, 1);
}

static void
test_progress_after_ready(void **state)
{
	make_ready();
	assert_int_equal(w_progress(), -1);
	check_violation("progress after Ready");
}

static void
test_answer_before_ready(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(w_result(1), -1);
	check_violation("answer before Ready");
	assert_int_equal(rec.to_client_n, 0);
}

/* A session-level Error (the exception of an object that cannot be
 * loaded) passes before Ready; an Error of a call does not. */
static void
test_session_error_before_ready(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(w_error(0), 0);
	check_forwarded_to_client(1);
	assert_int_equal(w_error(1), -1);
	check_violation("answer before Ready");
}

static void
test_call_before_ready(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(c_call(1), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "before Ready");
	assert_int_equal(rec.to_worker_n, 1);
}

/* ---- Calls ---- */

static void
test_call_ids_increase(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	check_forwarded_to_worker(2);
	assert_int_equal(c_call(2), 0);
	check_forwarded_to_worker(3);
	assert_int_equal(c_call(7), 0); /* gaps are allowed */
	check_forwarded_to_worker(4);
	check_running();
	REFUSED(c_call(7)); /* repeated */
	check_client_error(GRPC_INVALID_ARGUMENT, "call id 7");
	assert_int_equal(rec.to_worker_n, 4);
}

static void
test_call_id_decreasing(void **state)
{
	make_ready();
	assert_int_equal(c_call(5), 0);
	REFUSED(c_call(4));
	check_client_error(GRPC_INVALID_ARGUMENT, "call id 4");
}

static void
test_call_id_zero(void **state)
{
	make_ready();
	REFUSED(c_call(0));
	check_client_error(GRPC_INVALID_ARGUMENT, "call id 0");
}

static void
test_call_without_name(void **state)
{
	make_ready();
	REFUSED(c_call_full(1, "", 0, 0, 0));
	check_client_error(GRPC_INVALID_ARGUMENT, "no name");
}

static void
test_call_args_not_chunk0(void **state)
{
	make_ready();
	REFUSED(c_call_full(1, "m", 0, 0, 1));
	check_client_error(GRPC_INVALID_ARGUMENT, "chunk 0");
}

/* Call.args in chunks; a chunk for a call that expects none is refused. */
static void
test_call_args_chunks(void **state)
{
	make_ready();
	assert_int_equal(c_call_full(1, "m", 0, 1, 0), 0);
	assert_int_equal(c_value(1, 1, 1), 0);
	check_forwarded_to_worker(3);
	assert_int_equal(c_value(1, 2, 0), 0);
	check_forwarded_to_worker(4);
	check_running();
	REFUSED(c_value(1, 3, 0));
	check_client_error(GRPC_INVALID_ARGUMENT, "chunk 3 for call 1");
}

static void
test_pull_never_sent(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(c_pull(2, 1), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "unknown call id 2");
	assert_int_equal(rec.to_worker_n, 2);
}

static void
test_pull_id_zero(void **state)
{
	make_ready();
	assert_int_equal(c_pull(0, 1), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "unknown call id 0");
}

static void
test_cancel_never_sent(void **state)
{
	make_ready();
	assert_int_equal(c_cancel(3), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "unknown call id 3");
}

/* Pull and Cancel for a finished call race with End: dropped, no error. */
static void
test_pull_finished(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(w_result(1), 0);
	check_forwarded_to_client(2);
	assert_true(RB_EMPTY(&ses->ses_calls));
	assert_int_equal(c_pull(1, 5), 0);
	assert_int_equal(c_cancel(1), 0);
	assert_int_equal(rec.to_worker_n, 2);
	check_running();
	assert_int_equal(ses->ses_state, SES_READY);
	/* The session goes on. */
	assert_int_equal(c_call(2), 0);
	check_forwarded_to_worker(3);
}

/* Pull and Cancel of a running generator are forwarded. */
static void
test_pull_cancel_forwarded(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(c_pull(1, 3), 0);
	check_forwarded_to_worker(3);
	assert_int_equal(c_pull(1, 0), 0); /* no credit: dropped */
	assert_int_equal(rec.to_worker_n, 3);
	assert_int_equal(c_cancel(1), 0);
	check_forwarded_to_worker(4);
	assert_int_equal(w_end(1), 0);
	assert_true(RB_EMPTY(&ses->ses_calls));
	check_running();
}

/* ---- Worker answers ---- */

static void
test_result_unknown_call(void **state)
{
	make_ready();
	assert_int_equal(w_result(1), -1);
	check_violation("result for an unknown call");
	assert_int_equal(rec.to_client_n, 1);
	assert_true(ses->ses_killed);
	/* The reap frees it with the status decided before. */
	front_session_worker_exited(ses, W_EXITCODE(0, SIGKILL));
	assert_false(alive());
	assert_int_equal(rec.finish_code, GRPC_INTERNAL);
	assert_int_equal(fake.fk_described, 0);
	assert_int_equal(fake.fk_closed, 1);
}

static void
test_result_twice(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(w_result_full(1, 1, 0, 0), -1);
	check_violation("result for an unknown call");
}

static void
test_result_not_chunk0(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(w_result_full(1, 0, 1, 1), -1);
	check_violation("out of order");
}

static void
test_item_without_credit(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(w_item(1, 0, 0), -1);
	check_violation("item without credit");
}

static void
test_item_for_plain_call(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(c_pull(1, 1), 0);
	assert_int_equal(w_item(1, 0, 0), -1);
	check_violation("unknown generator");
}

/* Result{generator}, Pull(2), two Items: fine; a third: no credit. */
static void
test_generator_credit(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(c_pull(1, 2), 0);
	check_forwarded_to_worker(3);
	assert_int_equal(w_item(1, 0, 0), 0);
	check_forwarded_to_client(3);
	assert_int_equal(w_item(1, 1, 0), 0);
	check_forwarded_to_client(4);
	check_running();
	assert_int_equal(w_item(1, 2, 0), -1);
	check_violation("item without credit (call 1)");
	assert_int_equal(rec.to_client_n, 4);
}

/* Credit accumulates over Pulls and is spent across them. */
static void
test_generator_credit_accumulates(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(c_pull(1, 1), 0);
	assert_int_equal(c_pull(1, 2), 0);
	assert_int_equal(w_item(1, 0, 0), 0);
	assert_int_equal(w_item(1, 1, 0), 0);
	assert_int_equal(w_item(1, 2, 0), 0);
	check_running();
	assert_int_equal(w_item(1, 3, 0), -1);
	check_violation("item without credit");
}

/* An item's value in chunks, then End retires the generator. */
static void
test_generator_chunked_item(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(c_pull(1, 2), 0);
	assert_int_equal(w_item(1, 0, 1), 0);
	/* No new item, and no End, while the item's chunks are due. */
	assert_int_equal(w_value(1, 1, 1), 0);
	assert_int_equal(w_value(1, 2, 0), 0);
	assert_false(RB_EMPTY(&ses->ses_calls));
	assert_int_equal(w_item(1, 1, 0), 0);
	assert_int_equal(w_end(1), 0);
	assert_true(RB_EMPTY(&ses->ses_calls));
	assert_int_equal(rec.to_client_n, 7);
	check_running();
	assert_int_equal(w_end(1), -1);
	check_violation("end of an unknown generator");
}

static void
test_generator_item_during_chunks(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(c_pull(1, 2), 0);
	assert_int_equal(w_item(1, 0, 1), 0);
	assert_int_equal(w_item(1, 1, 0), -1);
	check_violation("unknown generator");
}

static void
test_end_of_plain_call(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(w_end(1), -1);
	check_violation("end of an unknown generator");
}

/* Result more=true, Value seq 1, Value seq 2 last: the call is retired. */
static void
test_chunked_result(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(w_result_full(1, 0, 1, 0), 0);
	check_forwarded_to_client(2);
	assert_false(RB_EMPTY(&ses->ses_calls));
	assert_int_equal(w_value(1, 1, 1), 0);
	check_forwarded_to_client(3);
	assert_int_equal(w_value(1, 2, 0), 0);
	check_forwarded_to_client(4);
	assert_true(RB_EMPTY(&ses->ses_calls));
	check_running();
	/* Retired: a late Pull is dropped, a late chunk is a violation. */
	assert_int_equal(c_pull(1, 1), 0);
	assert_int_equal(rec.to_worker_n, 2);
	assert_int_equal(w_value(1, 3, 0), -1);
	check_violation("unexpected value chunk");
}

static void
test_chunked_result_wrong_seq(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(w_result_full(1, 0, 1, 0), 0);
	assert_int_equal(w_value(1, 2, 0), -1);
	check_violation("unexpected value chunk (call 1)");
	assert_int_equal(rec.to_client_n, 2);
}

static void
test_chunked_result_repeated_seq(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(w_result_full(1, 0, 1, 0), 0);
	assert_int_equal(w_value(1, 1, 1), 0);
	assert_int_equal(w_value(1, 1, 0), -1);
	check_violation("unexpected value chunk");
}

static void
test_value_without_result(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(w_value(1, 1, 0), -1);
	check_violation("unexpected value chunk");
}

/* Error retires a call; Error for call 0 is session-level and passes. */
static void
test_worker_error(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(w_error(1), 0);
	check_forwarded_to_client(2);
	assert_true(RB_EMPTY(&ses->ses_calls));
	assert_int_equal(w_error(0), 0);
	check_forwarded_to_client(3);
	check_running();
	assert_int_equal(w_error(1), -1);
	check_violation("error for an unknown call");
}

/* Calls are tracked independently; answers may come in any order. */
static void
test_interleaved_calls(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(c_call(2), 0);
	assert_int_equal(c_pull(1, 1), 0);
	assert_int_equal(w_result_full(2, 0, 1, 0), 0);
	assert_int_equal(w_item(1, 0, 0), 0);
	assert_int_equal(w_value(2, 1, 0), 0);
	assert_int_equal(w_end(1), 0);
	assert_true(RB_EMPTY(&ses->ses_calls));
	check_running();
}

static void
test_malformed_server_message(void **state)
{
	static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0x0f};

	make_ready();
	assert_int_equal(
	    front_session_worker_frame(ses, FRAME_MSG, junk, sizeof(junk)), -1);
	check_violation("malformed message");
}

/* An empty ServerMessage (no oneof set) is not a message at all. */
static void
test_empty_server_message(void **state)
{
	make_ready();
	assert_int_equal(
	    front_session_worker_frame(ses, FRAME_MSG, (const uint8_t *)"", 0),
	    -1);
	check_violation("unknown message");
}

/* ---- Control frames ---- */

static void
test_worker_fatal(void **state)
{
	make_ready();
	assert_int_equal(
	    w_fatal(GRPC_FAILED_PRECONDITION,
	        "cloudpickle 3 cannot load an object from cloudpickle 2"),
	    -1);
	check_finished(GRPC_FAILED_PRECONDITION,
	    "cloudpickle 3 cannot load an object from cloudpickle 2");
	assert_int_equal(ses->ses_state, SES_ENDING);
	assert_int_equal(fake.fk_killed, 1);
	assert_int_equal(rec.to_client_n, 1);
}

/* Fatal while starting: the Open could not be served. */
static void
test_worker_fatal_starting(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(w_fatal(GRPC_RESOURCE_EXHAUSTED, "too big"), -1);
	check_finished(GRPC_RESOURCE_EXHAUSTED, "too big");
	front_session_worker_exited(ses, W_EXITCODE(1, 0));
	assert_false(alive());
	assert_int_equal(rec.finish_code, GRPC_RESOURCE_EXHAUSTED);
}

/* A worker cannot claim OK, or a code outside gRPC's range. */
static void
test_worker_fatal_bad_code(void **state)
{
	make_ready();
	assert_int_equal(w_fatal(GRPC_OK, "all fine"), -1);
	check_finished(GRPC_INTERNAL, "all fine");
	teardown(state);
	setup(state);
	make_ready();
	assert_int_equal(w_fatal(99, "odd"), -1);
	check_finished(GRPC_INTERNAL, "odd");
}

static void
test_worker_control_not_fatal(void **state)
{
	Remotemedia__Worker__V1__WorkerControl c =
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__INIT;
	Remotemedia__Worker__V1__Init in = REMOTEMEDIA__WORKER__V1__INIT__INIT;

	make_ready();
	in.session_id = (char *)"x";
	c.msg_case = REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_INIT;
	c.init = &in;
	assert_int_equal(w_control(&c), -1);
	check_violation("bad control frame");
}

static int
w_taken(void)
{
	Remotemedia__Worker__V1__WorkerControl c =
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__INIT;
	Remotemedia__Worker__V1__Taken t = REMOTEMEDIA__WORKER__V1__TAKEN__INIT;

	c.msg_case = REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_TAKEN;
	c.taken = &t;
	return w_control(&c);
}

/*
 * A spare's worker that fails before it took the Open: no code of the
 * session ran, so UNAVAILABLE (clients retry it) with the worker's words,
 * and the pool counts a failed spare.
 */
static void
test_spare_fatal_before_taken(void **state)
{
	assert_int_equal(c_open(), 0);
	ses->ses_adopted = 1;
	assert_int_equal(
	    w_fatal(GRPC_INTERNAL, "slirp4netns did not start"), -1);
	check_finished(GRPC_UNAVAILABLE, "failed before it took the Open");
	check_finished(GRPC_UNAVAILABLE, "slirp4netns did not start");
	assert_int_equal(fake.fk_spares_failed, 1);
	front_session_worker_exited(ses, W_EXITCODE(1, 0));
	assert_false(alive());
	assert_int_equal(rec.finish_code, GRPC_UNAVAILABLE);
}

static void
test_spare_death_before_taken(void **state)
{
	assert_int_equal(c_open(), 0);
	ses->ses_adopted = 1;
	front_session_worker_exited(ses, W_EXITCODE(0, SIGKILL));
	assert_false(alive());
	check_finished(GRPC_UNAVAILABLE, "failed before it took the Open");
	assert_int_equal(fake.fk_spares_failed, 1);
}

/* Once it took the Open, the session's code may have run: its own status. */
static void
test_spare_fatal_after_taken(void **state)
{
	assert_int_equal(c_open(), 0);
	ses->ses_adopted = 1;
	assert_int_equal(w_taken(), 0);
	check_running();
	assert_int_equal(rec.to_client_n, 0); /* Taken is the front's alone */
	assert_int_equal(fake.fk_spares_ok, 1); /* the pool's backoff ends */
	assert_int_equal(w_fatal(GRPC_FAILED_PRECONDITION, "cannot load"), -1);
	check_finished(GRPC_FAILED_PRECONDITION, "cannot load");
	teardown(state);
	setup(state);
	assert_int_equal(c_open(), 0);
	ses->ses_adopted = 1;
	assert_int_equal(w_taken(), 0);
	front_session_worker_exited(ses, W_EXITCODE(0, SIGSEGV));
	assert_false(alive());
	assert_int_equal(rec.finish_code, GRPC_ABORTED);
	assert_int_equal(fake.fk_spares_failed, 0);
}

/* A worker of the session's own fails as it fails, Taken or not. */
static void
test_own_worker_fatal_before_taken(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(w_fatal(GRPC_INTERNAL, "no sandbox"), -1);
	check_finished(GRPC_INTERNAL, "no sandbox");
	assert_int_equal(fake.fk_spares_failed, 0);
}

static void
test_taken_twice_or_after_ready(void **state)
{
	assert_int_equal(c_open(), 0);
	assert_int_equal(w_taken(), 0);
	assert_int_equal(fake.fk_spares_ok, 0); /* not a spare's */
	assert_int_equal(w_taken(), -1);
	check_violation("unexpected Taken");
	teardown(state);
	setup(state);
	make_ready();
	assert_int_equal(w_taken(), -1);
	check_violation("unexpected Taken");
}

static void
test_worker_control_malformed(void **state)
{
	static const uint8_t junk[] = {0x12, 0x7f, 0x00};

	make_ready();
	assert_int_equal(
	    front_session_worker_frame(ses, FRAME_CTL, junk, sizeof(junk)), -1);
	check_violation("bad control frame");
}

/* ---- Closing and the worker's exit ---- */

static void
test_half_close_ready(void **state)
{
	static const uint8_t close_msg[] = {0x2a, 0x00};
	ClientMessage *m;

	make_ready();
	front_session_client_closed(ses);
	assert_int_equal(ses->ses_state, SES_CLOSING);
	assert_int_equal(rec.to_worker_n, 2);
	assert_int_equal(rec.to_worker[1].mr_type, FRAME_MSG);
	assert_int_equal(rec.to_worker[1].mr_len, sizeof(close_msg));
	assert_memory_equal(
	    rec.to_worker[1].mr_buf, close_msg, sizeof(close_msg));
	/* What was sent decodes as a Close. */
	m = remotemedia__v1__client_message__unpack(
	    NULL, rec.to_worker[1].mr_len, rec.to_worker[1].mr_buf);
	assert_non_null(m);
	assert_int_equal(
	    m->msg_case, REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CLOSE);
	remotemedia__v1__client_message__free_unpacked(m, NULL);
	check_running();
}

/* Close in READY, answers still allowed, then exit 0: OK. */
static void
test_close_then_exit_ok(void **state)
{
	make_ready();
	assert_int_equal(c_call(1), 0);
	assert_int_equal(c_close(), 0);
	check_forwarded_to_worker(3);
	assert_int_equal(ses->ses_state, SES_CLOSING);
	/* In-flight answers still pass while closing. */
	assert_int_equal(w_result(1), 0);
	check_forwarded_to_client(2);
	/* Client messages after Close are dropped. */
	assert_int_equal(c_call(2), 0);
	assert_int_equal(rec.to_worker_n, 3);
	check_running();
	front_session_worker_eof(ses);
	assert_true(ses->ses_eof);
	front_session_worker_exited(ses, W_EXITCODE(0, 0));
	assert_false(alive());
	check_finished(GRPC_OK, NULL);
	assert_string_equal(rec.finish_msg, "");
	assert_int_equal(fake.fk_described, 0);
	assert_int_equal(fake.fk_killed, 0);
	assert_int_equal(fake.fk_sessions_freed, 1);
}

static void
test_half_close_then_exit_ok(void **state)
{
	make_ready();
	front_session_client_closed(ses);
	front_session_worker_exited(ses, W_EXITCODE(0, 0));
	assert_false(alive());
	check_finished(GRPC_OK, NULL);
}

/* Killed by a signal while ready: ABORTED, described by front_worker. */
static void
test_exit_signal_ready(void **state)
{
	make_ready();
	front_session_worker_exited(ses, W_EXITCODE(0, SIGKILL));
	assert_false(alive());
	check_finished(GRPC_ABORTED, NULL);
	assert_string_equal(rec.finish_msg, "described exit 0x9");
	assert_int_equal(fake.fk_described, 1);
	assert_int_equal(fake.fk_killed, 0);
}

/* Exit 0 without a Close is not OK: the worker quit on its own. */
static void
test_exit_zero_ready(void **state)
{
	make_ready();
	front_session_worker_exited(ses, W_EXITCODE(0, 0));
	assert_false(alive());
	check_finished(GRPC_ABORTED, "described exit 0");
}

/* Exit 1 while closing is not a clean close either. */
static void
test_exit_failure_closing(void **state)
{
	make_ready();
	assert_int_equal(c_close(), 0);
	front_session_worker_exited(ses, W_EXITCODE(1, 0));
	assert_false(alive());
	check_finished(GRPC_ABORTED, "described exit 0x100");
}

/* Died while starting: ABORTED. */
static void
test_exit_while_starting(void **state)
{
	assert_int_equal(c_open(), 0);
	front_session_worker_exited(ses, W_EXITCODE(0, SIGSEGV));
	assert_false(alive());
	check_finished(GRPC_ABORTED, "described exit 0xb");
}

static void
test_half_close_before_open(void **state)
{
	front_session_client_closed(ses);
	assert_false(alive());
	check_finished(GRPC_INVALID_ARGUMENT, "before Open");
}

static void
test_half_close_forward_fails(void **state)
{
	make_ready();
	fake.fk_send_fail = 1;
	front_session_client_closed(ses);
	check_client_error(GRPC_ABORTED, "worker is gone");
}

static void
test_client_gone(void **state)
{
	make_ready();
	str.str_session = NULL;
	ses->ses_stream = NULL;
	front_session_client_gone(ses);
	assert_int_equal(ses->ses_state, SES_ENDING);
	assert_int_equal(fake.fk_killed, 1);
	assert_int_equal(rec.finish_n, 0); /* no stream to tell */
	/* Frames the worker had in flight go nowhere. */
	assert_int_equal(w_output(), -1);
	assert_int_equal(rec.to_client_n, 1);
	front_session_worker_exited(ses, W_EXITCODE(0, SIGKILL));
	assert_false(alive());
}

static void
test_malformed_client_message(void **state)
{
	static const uint8_t junk[] = {0x0a, 0x05, 0x01};

	make_ready();
	assert_int_equal(front_session_client_msg(ses, junk, sizeof(junk)), -1);
	check_client_error(GRPC_INVALID_ARGUMENT, "malformed ClientMessage");
	assert_int_equal(rec.to_worker_n, 1);
}

static void
test_malformed_first_message(void **state)
{
	static const uint8_t junk[] = {0xff};

	assert_int_equal(front_session_client_msg(ses, junk, sizeof(junk)), -1);
	assert_false(alive());
	check_finished(GRPC_INVALID_ARGUMENT, "malformed ClientMessage");
}

/* Once the status is decided, nothing more flows either way. */
static void
test_after_end_dropped(void **state)
{
	make_ready();
	make_generator(1);
	assert_int_equal(c_pull(1, 5), 0);
	assert_int_equal(w_fatal(GRPC_UNAVAILABLE, "first"), -1);
	check_finished(GRPC_UNAVAILABLE, "first");
	assert_int_equal(rec.to_client_n, 2);
	assert_int_equal(rec.to_worker_n, 3);
	/* Worker frames: refused, not relayed, status unchanged. */
	assert_int_equal(w_item(1, 0, 0), -1);
	assert_int_equal(w_end(1), -1);
	assert_int_equal(w_ready(), -1);
	assert_int_equal(w_fatal(GRPC_INTERNAL, "second"), -1);
	assert_int_equal(rec.to_client_n, 2);
	/* Client messages: dropped, not forwarded. */
	c_call(2);
	c_pull(1, 1);
	c_close();
	front_session_client_closed(ses);
	assert_int_equal(rec.to_worker_n, 3);
	/* A later end keeps the first status. */
	front_session_end(ses, GRPC_CANCELLED, "later");
	assert_int_equal(rec.finish_code, GRPC_UNAVAILABLE);
	assert_string_equal(rec.finish_msg, "first");
	assert_true(alive());
	front_session_worker_exited(ses, W_EXITCODE(0, SIGKILL));
	assert_false(alive());
	assert_int_equal(rec.finish_code, GRPC_UNAVAILABLE);
	assert_int_equal(fake.fk_described, 0);
}

/* ---- Flow control and deadlines ---- */

static void
test_backpressure(void **state)
{
	make_ready();
	assert_int_equal(fake.fk_paused, 0);
	fake.fk_grpc_pending = FRONT_BUF_HIGH;
	f_output();
	assert_int_equal(fake.fk_paused, 1);
	assert_int_equal(ses->ses_paused, 1);
	fake.fk_grpc_pending = 0;
	front_session_drained(ses);
	assert_int_equal(fake.fk_paused, 2);
	assert_int_equal(ses->ses_paused, 0);
	check_running();
}

/* A call that ignores its deadline plus grace gets the worker killed. */
static void
test_call_deadline(void **state)
{
	front_conf.fc_grace_ms = 0;
	make_ready();
	assert_int_equal(c_call_full(1, "slow", 1, 0, 0), 0);
	event_base_dispatch(front_base);
	check_client_error(GRPC_DEADLINE_EXCEEDED, "call 1 ('slow')");
}

/*
 * At the deadline the worker is told (Expired), so that a call it has not
 * started never runs; an answer within the grace after it disarms the
 * kill.
 */
static void
test_call_deadline_tells_the_worker(void **state)
{
	struct timeval tv = {0, 20000};

	front_conf.fc_grace_ms = 10000;
	make_ready();
	assert_int_equal(c_call_full(1, "slow", 1, 0, 0), 0);
	/* 20 ms: past the deadline (1 ms), within the grace. */
	event_base_loopexit(front_base, &tv);
	event_base_dispatch(front_base);
	assert_int_equal(fake.fk_expired, 1);
	assert_int_equal(fake.fk_expired_id, 1);
	check_running();
	assert_int_equal(w_error(1), 0);
	event_base_dispatch(front_base); /* nothing left to fire */
	check_running();
	assert_int_equal(fake.fk_expired, 1);
}

/*
 * While the front is not reading the worker (its client is slow), a
 * deadline that passes is not held against the worker: once reading
 * resumes, the call gets the grace from then on.
 */
static void
test_call_deadline_while_paused(void **state)
{
	front_conf.fc_grace_ms = 0;
	make_ready();
	assert_int_equal(c_call_full(1, "slow", 1, 0, 0), 0);
	fake.fk_grpc_pending = FRONT_BUF_HIGH;
	f_output();
	assert_true(ses->ses_paused);
	event_base_dispatch(front_base);
	check_running();
	fake.fk_grpc_pending = 0;
	front_session_drained(ses);
	event_base_dispatch(front_base);
	check_client_error(GRPC_DEADLINE_EXCEEDED, "call 1 ('slow')");
}

/* --max-inflight-calls: one call too many ends the session, naming it. */
static void
test_inflight_limit(void **state)
{
	uint64_t id;

	make_ready();
	for (id = 1; id <= 4; id++)
		assert_int_equal(c_call(id), 0);
	assert_int_equal(c_call(5), -1);
	check_client_error(GRPC_RESOURCE_EXHAUSTED, "--max-inflight-calls");
}

/* An answered call frees its place. */
static void
test_inflight_limit_frees(void **state)
{
	uint64_t id;

	make_ready();
	for (id = 1; id <= 4; id++)
		assert_int_equal(c_call(id), 0);
	assert_int_equal(w_error(1), 0);
	assert_int_equal(c_call(5), 0);
	check_running();
}

/* --max-sessions-per-token and --max-sessions. */
static void
test_session_limits(void **state)
{
	char msg[200];

	ses->ses_owner = xstrdup("alice");
	assert_int_equal(front_session_refuse("alice", msg, sizeof(msg)), 0);
	assert_int_equal(front_session_refuse("bob", msg, sizeof(msg)), 0);
	struct stream s2 = {0};
	struct session *b = front_session_new(&s2);
	b->ses_owner = xstrdup("alice");
	assert_int_equal(front_session_refuse("alice", msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "--max-sessions-per-token"));
	struct stream s3 = {0};
	struct session *c = front_session_new(&s3);
	assert_int_equal(front_session_refuse("bob", msg, sizeof(msg)), -1);
	assert_non_null(strstr(msg, "--max-sessions"));
	front_session_end(b, GRPC_OK, NULL);
	front_session_end(c, GRPC_OK, NULL);
}

/* A Result disarms the deadline: the loop has nothing left to run. */
static void
test_call_deadline_disarmed(void **state)
{
	front_conf.fc_grace_ms = 0;
	make_ready();
	assert_int_equal(c_call_full(1, "gen", 1, 0, 0), 0);
	assert_int_equal(w_result_full(1, 1, 0, 0), 0);
	event_base_dispatch(front_base);
	check_running();
}

/* A Pull's timeout arms the deadline again; spending the credit disarms. */
static void
test_pull_deadline(void **state)
{
	front_conf.fc_grace_ms = 0;
	make_ready();
	make_generator(1);
	assert_int_equal(c_pull_full(1, 1, 1), 0);
	assert_int_equal(w_item(1, 0, 0), 0);
	event_base_dispatch(front_base);
	check_running();
	assert_int_equal(c_pull_full(1, 1, 1), 0);
	event_base_dispatch(front_base);
	check_client_error(GRPC_DEADLINE_EXCEEDED, "call 1");
}

/* ---- Session table ---- */

static void
test_kill_all(void **state)
{
	struct stream str2;
	struct session *ses2;

	memset(&str2, 0, sizeof(str2));
	ses2 = front_session_new(&str2);
	assert_int_equal(front_session_count(), 2);
	make_ready();
	front_session_kill_all();
	check_finished(GRPC_UNAVAILABLE, "shutting down");
	/* ses2 had no worker: freed at once; ses waits for its reap. */
	assert_int_equal(front_session_count(), 1);
	assert_int_equal(fake.fk_killed, 1);
	assert_int_equal(fake.fk_sessions_freed, 1);
	assert_int_equal(rec.other_finish_n, 1);
	(void)ses2;
	front_session_worker_exited(ses, W_EXITCODE(0, SIGKILL));
	assert_int_equal(front_session_count(), 0);
}

static void
test_state_names(void **state)
{
	assert_string_equal(front_session_state_name(SES_OPENING), "opening");
	assert_string_equal(front_session_state_name(SES_STARTING), "starting");
	assert_string_equal(front_session_state_name(SES_READY), "ready");
	assert_string_equal(front_session_state_name(SES_CLOSING), "closing");
	assert_string_equal(front_session_state_name(SES_ENDING), "ending");
	assert_string_equal(
	    front_session_state_name((enum session_state)42), "?");
	assert_int_equal(strlen(ses->ses_id), 32);
}

/*
 * Regression: the client closes while the worker
 * is still starting, and the worker's Ready crosses the Close. front_session
 * calls that Ready "unexpected" and ends a clean close with INTERNAL.
 */
static void
test_close_before_ready(void **state)
{
	assert_int_equal(c_open(), 0);
	front_session_client_closed(ses);
	assert_int_equal(ses->ses_state, SES_CLOSING);
	assert_int_equal(w_progress(), 0);
	assert_int_equal(w_ready(), 0);
	assert_false(ses->ses_end_set);
	check_forwarded_to_client(2);
	assert_int_equal(ses->ses_state, SES_CLOSING);
	front_session_worker_exited(ses, W_EXITCODE(0, 0));
	assert_false(alive());
	check_finished(GRPC_OK, NULL);
}

/*
 * Regression: a Call or Value refused in READY
 * ends the session but front_session_client_msg returns 0, not -1, because
 * session_ready_msg maps "failed" to "do not forward".
 */
static void
test_refused_returns_error(void **state)
{
	int rv;

	make_ready();
	assert_int_equal(c_call(1), 0);
	rv = c_call(1);
	check_client_error(GRPC_INVALID_ARGUMENT, "call id 1");
	assert_int_equal(rv, -1);
}

/*
 * Regression: Result.value must be chunk 0 and
 * is checked; Item.value is not, so an item claiming seq 5 is relayed.
 */
static void
test_item_not_chunk0(void **state)
{
	int rv;

	make_ready();
	make_generator(1);
	assert_int_equal(c_pull(1, 1), 0);
	rv = w_item_seq(1, 0, 0, 5);
	assert_int_equal(rv, -1);
	check_violation("out of order");
}

/*
 * Regression: call_arm adds the grace to the
 * client's timeout_ms without an overflow check, so timeout_ms near
 * UINT64_MAX wraps to a deadline of (almost) zero and the worker is killed
 * at once with DEADLINE_EXCEEDED.
 */
static void
test_deadline_overflow(void **state)
{
	front_conf.fc_grace_ms = 1;
	make_ready();
	assert_int_equal(c_call_full(1, "m", UINT64_MAX, 0, 0), 0);
	event_base_loop(front_base, EVLOOP_NONBLOCK);
	assert_false(ses->ses_end_set);
	check_running();
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_call_deadline_tells_the_worker),
	    T(test_first_not_open),
	    T(test_first_not_open_kinds),
	    T(test_open_requirements_invalid),
	    T(test_open_requirements_wait_then_ready),
	    T(test_open_requirements_not_forwarded),
	    T(test_open_requirements_failed),
	    T(test_open_protocol_too_new),
	    T(test_open_no_object),
	    T(test_open_ok),
	    T(test_open_source_only),
	    T(test_open_spawn_fails),
	    T(test_open_forward_fails),
	    T(test_open_twice),
	    T(test_open_twice_before_ready),
	    T(test_open_chunks),
	    T(test_open_chunk_wrong_seq),
	    T(test_ready),
	    T(test_output_on_the_socket),
	    T(test_ready_twice),
	    T(test_progress_after_ready),
	    T(test_answer_before_ready),
	    T(test_session_error_before_ready),
	    T(test_call_before_ready),
	    T(test_call_ids_increase),
	    T(test_call_id_decreasing),
	    T(test_call_id_zero),
	    T(test_call_without_name),
	    T(test_call_args_not_chunk0),
	    T(test_call_args_chunks),
	    T(test_pull_never_sent),
	    T(test_pull_id_zero),
	    T(test_cancel_never_sent),
	    T(test_pull_finished),
	    T(test_pull_cancel_forwarded),
	    T(test_result_unknown_call),
	    T(test_result_twice),
	    T(test_result_not_chunk0),
	    T(test_item_without_credit),
	    T(test_item_for_plain_call),
	    T(test_generator_credit),
	    T(test_generator_credit_accumulates),
	    T(test_generator_chunked_item),
	    T(test_generator_item_during_chunks),
	    T(test_end_of_plain_call),
	    T(test_chunked_result),
	    T(test_chunked_result_wrong_seq),
	    T(test_chunked_result_repeated_seq),
	    T(test_value_without_result),
	    T(test_worker_error),
	    T(test_interleaved_calls),
	    T(test_malformed_server_message),
	    T(test_empty_server_message),
	    T(test_worker_fatal),
	    T(test_worker_fatal_starting),
	    T(test_worker_fatal_bad_code),
	    T(test_worker_control_not_fatal),
	    T(test_worker_control_malformed),
	    T(test_spare_fatal_before_taken),
	    T(test_spare_death_before_taken),
	    T(test_spare_fatal_after_taken),
	    T(test_own_worker_fatal_before_taken),
	    T(test_taken_twice_or_after_ready),
	    T(test_half_close_ready),
	    T(test_close_then_exit_ok),
	    T(test_half_close_then_exit_ok),
	    T(test_exit_signal_ready),
	    T(test_exit_zero_ready),
	    T(test_exit_failure_closing),
	    T(test_exit_while_starting),
	    T(test_half_close_before_open),
	    T(test_half_close_forward_fails),
	    T(test_client_gone),
	    T(test_malformed_client_message),
	    T(test_malformed_first_message),
	    T(test_after_end_dropped),
	    T(test_backpressure),
	    T(test_call_deadline),
	    T(test_inflight_limit),
	    T(test_inflight_limit_frees),
	    T(test_session_limits),
	    T(test_call_deadline_while_paused),
	    T(test_call_deadline_disarmed),
	    T(test_pull_deadline),
	    T(test_kill_all),
	    T(test_state_names),
	    T(test_close_before_ready),
	    T(test_refused_returns_error),
	    T(test_item_not_chunk0),
	    T(test_deadline_overflow),
	};

	log_init("test", LOG_LEVEL_ERROR);
	return cmocka_run_group_tests_name("session_state", tests, NULL, NULL);
}
