/*
 * The session state machine: it checks every message in both directions
 * and relays it unchanged. Neither the client nor the worker is trusted:
 * call ids, chunk sequences, credit and state transitions are all checked.
 */
#include <sys/wait.h>

#include <inttypes.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "front.h"
#include "log.h"
#include "req.h"
#include "util.h"

#include "remotemedia.pb-c.h"
#include "worker.pb-c.h"

typedef Remotemedia__V1__ClientMessage ClientMessage;

static struct sessionlist sessions = TAILQ_HEAD_INITIALIZER(sessions);
static int nsessions;

const char *
front_session_state_name(enum session_state st)
{
	switch (st) {
	case SES_OPENING:
		return "opening";
	case SES_INSTALLING:
		return "installing";
	case SES_STARTING:
		return "starting";
	case SES_READY:
		return "ready";
	case SES_CLOSING:
		return "closing";
	case SES_ENDING:
		return "ending";
	case SES_SPARE:
		return "spare";
	}
	return "?";
}

/* Every session, for the Admin service. */
struct sessionlist *
front_session_list(void)
{
	return &sessions;
}

int
front_session_count(void)
{
	return nsessions;
}

struct session *
front_session_by_pid(pid_t pid)
{
	struct session *ses;

	TAILQ_FOREACH (ses, &sessions, ses_entry)
		if (ses->ses_pid == pid && !ses->ses_exited)
			return ses;
	return NULL;
}

static void
session_limit_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *ses = arg;
	char msg[128], dur[32];
	int life = fd == -2;
	uint64_t ms = life ? front_conf.fc_session_lifetime_ms
	                   : front_conf.fc_session_idle_ms;

	(void)ev;
	if (ms % 1000 == 0)
		snprintf(dur, sizeof(dur), "%llu s",
		    (unsigned long long)(ms / 1000));
	else
		snprintf(dur, sizeof(dur), "%llu ms", (unsigned long long)ms);
	snprintf(msg, sizeof(msg), "session %s %s reached (%s)",
	    life ? "lifetime" : "idle time", dur,
	    life ? "--session-max-lifetime" : "--session-idle-timeout");
	front_session_end(ses, GRPC_RESOURCE_EXHAUSTED, msg);
}

static void
session_life_cb(evutil_socket_t fd, short ev, void *arg)
{
	session_limit_cb(-2, ev, arg);
}

static void session_touch(struct session *);

/*
 * The idle clock. While the Open arrives (--handshake-timeout bounds its
 * gaps), the environment installs or the worker starts, the client can
 * only send its object or wait for Ready: that is not idleness (the
 * lifetime still bounds it).
 */
static void
session_idle_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *ses = arg;

	/* Opening, installing, starting or running a call is not idleness. */
	if (ses->ses_state == SES_OPENING || ses->ses_state == SES_INSTALLING ||
	    ses->ses_state == SES_STARTING || ses->ses_inflight > 0) {
		session_touch(ses);
		return;
	}
	session_limit_cb(-1, ev, arg);
}

/* Arm a timer for ms milliseconds from now (the front's files share it). */
void
front_timer_add(struct event *ev, uint64_t ms)
{
	struct timeval tv;

	tv.tv_sec = (time_t)(ms / 1000);
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	evtimer_add(ev, &tv);
}

/* The session's lifetime and idle limits. */
static void
session_arm_limits(struct session *ses)
{
	if (front_conf.fc_session_lifetime_ms > 0) {
		ses->ses_life = evtimer_new(front_base, session_life_cb, ses);
		front_timer_add(
		    ses->ses_life, front_conf.fc_session_lifetime_ms);
	}
	if (front_conf.fc_session_idle_ms > 0) {
		ses->ses_idle = evtimer_new(front_base, session_idle_cb, ses);
		front_timer_add(ses->ses_idle, front_conf.fc_session_idle_ms);
	}
}

/* Activity: the idle clock starts again. */
static void
session_touch(struct session *ses)
{
	if (ses->ses_idle != NULL)
		front_timer_add(ses->ses_idle, front_conf.fc_session_idle_ms);
}

/*
 * Would one more session break --max-sessions or, for this token,
 * --max-sessions-per-token? Returns -1 with a message naming the limit.
 */
int
front_session_refuse(const char *owner, char *msg, size_t len)
{
	struct session *ses;
	uint32_t mine = 0;

	if ((uint32_t)nsessions >= front_conf.fc_max_sessions) {
		snprintf(msg, len,
		    "too many sessions: this server runs at most "
		    "%u (--max-sessions)",
		    front_conf.fc_max_sessions);
		return -1;
	}
	if (owner == NULL)
		return 0;
	TAILQ_FOREACH (ses, &sessions, ses_entry)
		if (ses->ses_owner != NULL &&
		    strcmp(ses->ses_owner, owner) == 0)
			mine++;
	if (mine >= front_conf.fc_max_sessions_per_token) {
		snprintf(msg, len,
		    "too many sessions for token '%s': at most "
		    "%u (--max-sessions-per-token)",
		    owner, front_conf.fc_max_sessions_per_token);
		return -1;
	}
	return 0;
}

/* The object is whole and a worker has it (or has it coming, from the
 * front's backlog), which has not answered Ready yet. */
static int
session_awaits_ready(const struct session *ses)
{
	return ses->ses_state == SES_STARTING && !ses->ses_open_more &&
	    !ses->ses_ready_seen;
}

/* From then on, the worker answers within --open-timeout: a spare that
 * hung, or an object whose loading does not end, ends the session rather
 * than hold a client that set no deadline. */
static void
session_arm_ready(struct session *ses)
{
	if (session_awaits_ready(ses) && front_conf.fc_open_timeout_ms > 0)
		front_timer_add(ses->ses_open, front_conf.fc_open_timeout_ms);
}

/*
 * A Session stream that never sends Open, or stops sending it or the
 * chunks of its object, must not hold its slot (and a worker): each
 * --handshake-timeout until the object is whole must bring bytes. So a
 * slow client's large Open still arrives. Bytes the front holds back
 * itself (its backlog to the worker, an install) are not the client's
 * stall.
 */
static void
session_open_timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *ses = arg;
	struct stream *s = ses->ses_stream;
	char msg[200];
	int opening = ses->ses_state == SES_OPENING;
	int chunks = (ses->ses_state == SES_INSTALLING ||
	                 ses->ses_state == SES_STARTING) &&
	    ses->ses_open_more;

	if (session_awaits_ready(ses)) {
		snprintf(msg, sizeof(msg),
		    "the worker did not answer the Open within %llu ms "
		    "(--open-timeout): loading the object took longer, or the "
		    "worker hung",
		    (unsigned long long)front_conf.fc_open_timeout_ms);
		front_session_end(ses, GRPC_DEADLINE_EXCEEDED, msg);
		return;
	}
	if (!opening && !chunks)
		return;
	if (s != NULL &&
	    (s->str_rx != ses->ses_open_rx || s->str_unconsumed > 0)) {
		ses->ses_open_rx = s->str_rx;
		front_timer_add(ses->ses_open, front_conf.fc_handshake_ms);
		return;
	}
	if (opening && ses->ses_open_rx == 0)
		snprintf(msg, sizeof(msg),
		    "no Open within %llu ms "
		    "(--handshake-timeout)",
		    (unsigned long long)front_conf.fc_handshake_ms);
	else if (opening)
		snprintf(msg, sizeof(msg),
		    "the Open stalled: no byte of it came within %llu ms "
		    "(--handshake-timeout)",
		    (unsigned long long)front_conf.fc_handshake_ms);
	else
		snprintf(msg, sizeof(msg),
		    "chunk %u of the object did not "
		    "come within %llu ms (--handshake-timeout)",
		    ses->ses_open_seq,
		    (unsigned long long)front_conf.fc_handshake_ms);
	front_session_end(ses, GRPC_DEADLINE_EXCEEDED, msg);
}

/* A new Session stream: the session waits for Open. */
struct session *
front_session_new(struct stream *s)
{
	struct session *ses = xcalloc(1, sizeof(*ses));

	random_hex(ses->ses_id, sizeof(ses->ses_id));
	ses->ses_state = SES_OPENING;
	ses->ses_stream = s;
	ses->ses_pid = -1;
	ses->ses_uid = -1;
	ses->ses_out[0] = ses->ses_out[1] = -1;
	ses->ses_started_at = now_ms();
	if (s->str_owner != NULL)
		ses->ses_owner = xstrdup(s->str_owner);
	session_arm_limits(ses);
	ses->ses_open = evtimer_new(front_base, session_open_timeout_cb, ses);
	front_timer_add(ses->ses_open, front_conf.fc_handshake_ms);
	RB_INIT(&ses->ses_calls);
	deframer_init(&ses->ses_win, DEFRAME_WORKER, FRAME_WORKER_MAX);
	TAILQ_INSERT_TAIL(&sessions, ses, ses_entry);
	nsessions++;
	front_metrics_session();
	log_debug("%s: session %s (owner %s)", __func__, ses->ses_id,
	    ses->ses_owner ? ses->ses_owner : "-");
	return ses;
}

static void session_drain(struct session *);
static int session_value_too_big(struct session *, uint64_t);
static int session_chunk_fits(struct session *, uint64_t, uint32_t, size_t);
static int
session_total_matches(struct session *, uint64_t, uint64_t, uint64_t);

/* Free a session whose worker is reaped: directory, socket, calls. */
static void
session_free(struct session *ses)
{
	if (ses->ses_stream != NULL)
		ses->ses_stream->str_session = NULL;
	front_call_free_all(ses);
	front_worker_close(ses);
	if (ses->ses_dir != NULL &&
	    front_trash(ses->ses_dir, front_worker_trash_dir()) == -1)
		log_warnx("cannot remove %s", ses->ses_dir);
	if (ses->ses_timer != NULL)
		event_free(ses->ses_timer);
	front_env_release(ses);
	front_sandbox_session_end(ses);
	if (ses->ses_life != NULL)
		event_free(ses->ses_life);
	if (ses->ses_idle != NULL)
		event_free(ses->ses_idle);
	if (ses->ses_open != NULL)
		event_free(ses->ses_open);
	if (ses->ses_pending != NULL)
		evbuffer_free(ses->ses_pending);
	deframer_free(&ses->ses_win);
	TAILQ_REMOVE(&sessions, ses, ses_entry);
	nsessions--;
	log_debug("%s: session %s freed", __func__, ses->ses_id);
	free(ses->ses_dir);
	free(ses->ses_owner);
	free(ses->ses_end_msg);
	free(ses);
	front_pool_poke();
	front_session_freed();
}

/*
 * End the session with a status: tell the client, stop the worker, and
 * free everything once the worker is reaped. The first status sticks.
 */
void
front_session_end(struct session *ses, int code, const char *msg)
{
	if (!ses->ses_end_set) {
		ses->ses_end_set = 1;
		ses->ses_end_code = code;
		ses->ses_end_msg = xstrdup(msg ? msg : "");
		if (code != GRPC_OK)
			log_info("session %s: %s", ses->ses_id, msg);
		else
			log_info("session %s: closed after %llu calls",
			    ses->ses_id,
			    (unsigned long long)ses->ses_last_call);
	}
	ses->ses_state = SES_ENDING;
	if (ses->ses_stream != NULL)
		front_grpc_finish(
		    ses->ses_stream, ses->ses_end_code, ses->ses_end_msg);
	if (ses->ses_pid > 0 && !ses->ses_reaped) {
		front_worker_kill(ses);
		return;
	}
	session_free(ses);
}

/* A protocol violation by the worker ends the session. */
static int
from_worker_violation(struct session *ses, const char *what, uint64_t id)
{
	char msg[200];

	snprintf(msg, sizeof(msg),
	    "worker protocol violation: %s (call %" PRIu64 ")", what, id);
	front_session_end(ses, GRPC_INTERNAL, msg);
	return -1;
}

/* A malformed or out-of-place client message ends the session. */
static int client_error(struct session *ses, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
client_error(struct session *ses, int code, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	front_session_end(ses, code, msg);
	return -1;
}

static int
session_forward(struct session *ses, const uint8_t *msg, size_t len)
{
	if (ses->ses_eof)
		return 0; /* the worker is going: its exit decides the status */
	if (ses->ses_state == SES_CLOSING)
		front_worker_expect_exit(
		    ses, front_conf.fc_grace_ms + front_conf.fc_exit_wait_ms);
	if (front_worker_send(ses, FRAME_MSG, msg, len) == -1)
		return client_error(ses, GRPC_ABORTED, "worker is gone");
	return 0;
}

/*
 * Step over one protobuf field; for a length-delimited one, *val and *vlen
 * are its bytes (else *val is NULL). -1 at the end or on malformed input.
 */
static int
pb_field(const uint8_t **p, const uint8_t *end, uint64_t *num,
    const uint8_t **val, size_t *vlen)
{
	uint64_t key, v;

	*val = NULL;
	*vlen = 0;
	if (*p >= end || envelope_varint(p, end, &key) == -1)
		return -1;
	*num = key >> 3;
	switch (key & 7) {
	case 0:
		return envelope_varint(p, end, &v);
	case 1:
	case 5:
		v = (key & 7) == 1 ? 8 : 4;
		break;
	case 2:
		if (envelope_varint(p, end, &v) == -1)
			return -1;
		*val = *p;
		*vlen = (size_t)v;
		break;
	default:
		return -1;
	}
	if (v > (uint64_t)(end - *p))
		return -1;
	*p += v;
	return 0;
}

/*
 * protobuf-c hands string fields over as C strings, so a NUL inside a
 * requirement would cut it short unseen. Find Open.requirements in the raw
 * ClientMessage (field 1, then field 4): the 1-based index of the first
 * one holding a NUL, and the NUL's offset; 0 if none does.
 */
static size_t
open_requirement_with_nul(const uint8_t *msg, size_t len, size_t *offset)
{
	const uint8_t *p = msg, *end = msg + len, *o, *oend, *val, *nul;
	uint64_t num;
	size_t vlen, i = 0;

	while (pb_field(&p, end, &num, &o, &vlen) == 0) {
		if (num != 1 || o == NULL)
			continue;
		for (oend = o + vlen;
		     pb_field(&o, oend, &num, &val, &vlen) == 0;) {
			if (num != 4 || val == NULL)
				continue;
			i++;
			if ((nul = memchr(val, 0, vlen)) != NULL) {
				*offset = (size_t)(nul - val);
				return i;
			}
		}
	}
	return 0;
}

/* Append v as a varint at out + *n. */
static void
pb_put_varint(uint8_t *out, size_t *n, uint64_t v)
{
	while (v >= 0x80) {
		out[(*n)++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	out[(*n)++] = (uint8_t)v;
}

/*
 * The Open as its worker gets it: the ClientMessage without
 * Open.requirements (field 1, then field 4), which only the front acts on.
 * Dropping fields never lengthens a message, so the copy fits in len
 * bytes; the message was unpacked already, so it parses.
 */
static uint8_t *
open_without_requirements(const uint8_t *msg, size_t len, size_t *outlen)
{
	const uint8_t *p = msg, *end = msg + len, *start, *o, *ostart, *val;
	const uint8_t *ival;
	uint8_t *out = xmalloc(len ? len : 1), *inner;
	size_t n = 0, m, vlen, ilen;
	uint64_t num, inum;

	while ((start = p) < end && pb_field(&p, end, &num, &val, &vlen) == 0) {
		if (num != 1 || val == NULL) {
			memcpy(out + n, start, (size_t)(p - start));
			n += (size_t)(p - start);
			continue;
		}
		inner = xmalloc(vlen ? vlen : 1);
		m = 0;
		for (o = val; (ostart = o) < val + vlen &&
		     pb_field(&o, val + vlen, &inum, &ival, &ilen) == 0;) {
			if (inum == 4)
				continue;
			memcpy(inner + m, ostart, (size_t)(o - ostart));
			m += (size_t)(o - ostart);
		}
		pb_put_varint(out, &n, (1 << 3) | 2);
		pb_put_varint(out, &n, m);
		memcpy(out + n, inner, m);
		n += m;
		free(inner);
	}
	*outlen = n;
	return out;
}

/* Validate the requirements and attach the session to its environment. */
static int
session_requirements(struct session *ses, Remotemedia__V1__Open *op)
{
	struct req_list canon;
	char err[512];
	const char *why = NULL;
	int rv;

	if (req_validate_list((const char *const *)op->requirements,
	        op->n_requirements, &canon, err, sizeof(err)) == -1)
		return client_error(ses, GRPC_INVALID_ARGUMENT, "%s", err);
	rv = front_env_attach(ses, &canon, &why);
	req_list_free(&canon);
	if (rv == -1) {
		/* not client_error(): its buffer would cut pip's tail off */
		front_session_end(ses, GRPC_FAILED_PRECONDITION, why);
		return -1;
	}
	return rv;
}

/*
 * The first string field of Open that is not UTF-8, or NULL. protobuf-c
 * does not check, and the worker, which reads them as Python str, would
 * fail on one.
 */
static const char *
open_not_utf8(const Remotemedia__V1__Open *op)
{
	static const char *names[] = {
	    "python_version", "cloudpickle_version", "source", "class_name"};
	const char *v[] = {op->python_version, op->cloudpickle_version,
	    op->source, op->class_name};
	size_t i;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (!envelope_utf8((const uint8_t *)v[i], strlen(v[i])))
			return names[i];
	for (i = 0; i < op->n_requirements; i++)
		if (!envelope_utf8((const uint8_t *)op->requirements[i],
		        strlen(op->requirements[i])))
			return "requirements";
	return NULL;
}

/* Check Open; start the worker now, or once its environment is built. */
static int
session_open(struct session *ses, Remotemedia__V1__Open *op, const uint8_t *msg,
    size_t len)
{
	char err[256];
	const char *what;
	uint8_t *stripped;
	size_t bad, off = 0, slen;
	int code, rv, ready = 1;

	if (op->protocol > REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1)
		return client_error(ses, GRPC_FAILED_PRECONDITION,
		    "protocol version %d is not supported (this server "
		    "speaks 1)",
		    op->protocol);
	if ((what = open_not_utf8(op)) != NULL)
		return client_error(
		    ses, GRPC_INVALID_ARGUMENT, "Open.%s is not UTF-8", what);
	if ((op->object == NULL || op->object->data.len == 0) &&
	    op->source[0] == '\0')
		return client_error(
		    ses, GRPC_INVALID_ARGUMENT, "Open carries no object");
	if (op->object != NULL && op->object->seq != 0)
		return client_error(
		    ses, GRPC_INVALID_ARGUMENT, "Open.object must be chunk 0");
	if (op->object != NULL && op->object->more) {
		ses->ses_open_more = 1;
		ses->ses_open_seq = 1;
		ses->ses_open_rx = ses->ses_stream->str_rx;
		front_timer_add(ses->ses_open, front_conf.fc_handshake_ms);
	}
	ses->ses_value_bytes = op->object != NULL ? op->object->data.len : 0;
	ses->ses_value_total = op->object != NULL ? op->object->total_size : 0;
	if (op->object != NULL &&
	    (ses->ses_value_bytes > front_conf.fc_max_value ||
	        op->object->total_size > front_conf.fc_max_value))
		return session_value_too_big(ses, 0);
	if (op->object != NULL &&
	    (session_chunk_fits(ses, 0, 0, op->object->data.len) == -1 ||
	        (!op->object->more &&
	            session_total_matches(ses, 0, op->object->data.len,
	                op->object->total_size) == -1)))
		return -1;
	if (op->n_requirements > 0 &&
	    (bad = open_requirement_with_nul(msg, len, &off)) != 0)
		return client_error(ses, GRPC_INVALID_ARGUMENT,
		    "requirement %zu of %zu: control character \\x00 at offset "
		    "%zu is not allowed",
		    bad, op->n_requirements, off);
	if (op->n_requirements > 0 &&
	    (ready = session_requirements(ses, op)) == -1)
		return -1;
	if (!ready)
		ses->ses_state = SES_INSTALLING;
	else {
		if (front_pool_adopt(ses) == -1) {
			if ((code = front_worker_spawn(
			         ses, err, sizeof(err))) != 0)
				return client_error(ses, code, "%s", err);
			if (ses->ses_env != NULL)
				front_pool_want(ses->ses_env);
		}
		ses->ses_state = SES_STARTING;
		session_arm_ready(ses);
	}
	if (op->n_requirements == 0)
		return session_forward(ses, msg, len);
	stripped = open_without_requirements(msg, len, &slen);
	rv = session_forward(ses, stripped, slen);
	free(stripped);
	return rv;
}

/* The environment is ready: start the worker, which gets the held Open. */
void
front_session_env_ready(struct session *ses)
{
	char err[256];
	int code;

	if (ses->ses_state != SES_INSTALLING)
		return;
	ses->ses_state = SES_STARTING;
	if ((code = front_worker_spawn(ses, err, sizeof(err))) != 0)
		client_error(ses, code, "%s", err);
	else {
		front_pool_want(ses->ses_env);
		session_arm_ready(ses);
	}
}

void
front_session_env_failed(struct session *ses, const char *msg)
{
	front_session_end(ses, GRPC_FAILED_PRECONDITION, msg);
}

/* Relay one line of the environment build as a Progress message. */
void
front_session_progress(
    struct session *ses, int stage, const char *pkg, const char *line)
{
	Remotemedia__V1__ServerMessage m =
	    REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Progress p = REMOTEMEDIA__V1__PROGRESS__INIT;
	uint8_t *buf;
	size_t len;

	if (ses->ses_stream == NULL)
		return;
	p.stage = (Remotemedia__V1__Progress__Stage)stage;
	p.package = (char *)pkg;
	p.fraction = -1;
	p.log_line = (char *)line;
	m.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_PROGRESS;
	m.progress = &p;
	len = remotemedia__v1__server_message__get_packed_size(&m);
	buf = xmalloc(len);
	remotemedia__v1__server_message__pack(&m, buf);
	front_grpc_send(ses->ses_stream, buf, len);
	free(buf);
}

/*
 * The largest value of a call: what the session's Ready stated, which a
 * SIGHUP since does not change under its client; before Init, the flag's.
 */
static uint64_t
session_max_value(const struct session *ses)
{
	return ses->ses_max_value ? ses->ses_max_value
	                          : front_conf.fc_max_value;
}

/* A chunked value outgrew --max-value-size. */
static int
session_value_too_big(struct session *ses, uint64_t id)
{
	char size[32];

	snprintf(size, sizeof(size), "%llu MiB",
	    (unsigned long long)((id == 0 ? front_conf.fc_max_value
	                                  : session_max_value(ses)) >>
	        20));
	if (id == 0)
		return client_error(ses, GRPC_RESOURCE_EXHAUSTED,
		    "the object is "
		    "larger than %s (--max-value-size)",
		    size);
	return client_error(ses, GRPC_RESOURCE_EXHAUSTED,
	    "the arguments of "
	    "call %" PRIu64 " are larger than %s (--max-value-size)",
	    id, size);
}

/* Name the client's value of call id (0: the object) in what. */
static const char *
session_value_name(char *what, size_t len, uint64_t id)
{
	if (id == 0)
		snprintf(what, len, "the object");
	else
		snprintf(what, len, "the arguments of call %" PRIu64, id);
	return what;
}

/*
 * A chunk of a call's arguments holds at most the max_chunk_bytes its
 * session's Ready stated (a SIGHUP since does not change it); the
 * object's, sent before Ready, at most 1 MiB, in a message that fits.
 */
static int
session_chunk_fits(struct session *ses, uint64_t id, uint32_t seq, size_t len)
{
	uint64_t max = id == 0 || ses->ses_max_chunk == 0 ? FRAME_CHUNK_MAX
	                                                  : ses->ses_max_chunk;
	char what[64];

	if (len <= max)
		return 0;
	session_value_name(what, sizeof(what), id);
	return client_error(ses, GRPC_INVALID_ARGUMENT,
	    "chunk %u of %s holds %zu bytes of data, over the %" PRIu64
	    " a chunk may hold%s",
	    seq, what, len, max,
	    id == 0 ? "" : " (Ready.limits.max_chunk_bytes)");
}

/* A value's last chunk came: it adds up to what chunk 0 declared. */
static int
session_total_matches(
    struct session *ses, uint64_t id, uint64_t bytes, uint64_t total)
{
	char what[64];

	if (total == 0 || bytes == total)
		return 0;
	session_value_name(what, sizeof(what), id);
	return client_error(ses, GRPC_INVALID_ARGUMENT,
	    "%s came to %" PRIu64 " bytes, not the %" PRIu64
	    " that chunk 0's total_size declared",
	    what, bytes, total);
}

/*
 * A continuation chunk from the client, for Open.object or Call.args.
 * Returns 1 to forward, 0 to drop (the call already ended: the worker
 * answered before the last chunk arrived), -1 once the session ended.
 */
static int
session_client_value(struct session *ses, const struct envelope *v)
{
	struct call *cl;
	int64_t bytes;

	if (v->ev_call_id == 0) {
		if (!ses->ses_open_more || v->ev_seq != ses->ses_open_seq)
			return client_error(ses, GRPC_INVALID_ARGUMENT,
			    "unexpected chunk %u of the object", v->ev_seq);
		if (session_chunk_fits(ses, 0, v->ev_seq, v->ev_data_len) == -1)
			return -1;
		ses->ses_open_seq++;
		ses->ses_open_more = v->ev_more;
		ses->ses_value_bytes += v->ev_data_len;
		if (ses->ses_value_bytes > front_conf.fc_max_value)
			return session_value_too_big(ses, 0);
		if (!v->ev_more &&
		    session_total_matches(ses, 0, ses->ses_value_bytes,
		        ses->ses_value_total) == -1)
			return -1;
		session_arm_ready(ses);
		return 1;
	}
	cl = front_call_find(ses, v->ev_call_id);
	if (cl == NULL && v->ev_call_id <= ses->ses_last_call)
		return 0;
	if (cl == NULL || (bytes = front_call_client_chunk(cl, v)) == -1)
		return client_error(ses, GRPC_INVALID_ARGUMENT,
		    "unexpected chunk %u for call %" PRIu64, v->ev_seq,
		    v->ev_call_id);
	if (session_chunk_fits(ses, v->ev_call_id, v->ev_seq, v->ev_data_len) ==
	    -1)
		return -1;
	if ((uint64_t)bytes > session_max_value(ses))
		return session_value_too_big(ses, v->ev_call_id);
	if (!v->ev_more &&
	    session_total_matches(ses, v->ev_call_id, (uint64_t)bytes,
	        front_call_args_total(cl)) == -1)
		return -1;
	return 1;
}

/* A new call: ids strictly increase; track it until its terminal answer. */
static int
session_call(struct session *ses, const struct envelope *c)
{
	uint32_t max;

	if (c->ev_call_id <= ses->ses_last_call)
		return client_error(ses, GRPC_INVALID_ARGUMENT,
		    "call id %" PRIu64 " is not greater than the previous "
		    "call id %" PRIu64,
		    c->ev_call_id, ses->ses_last_call);
	if (c->ev_name_len == 0 || c->ev_name[0] == '\0')
		return client_error(ses, GRPC_INVALID_ARGUMENT,
		    "call %" PRIu64 " has no name", c->ev_call_id);
	if (memchr(c->ev_name, '\0', c->ev_name_len) != NULL)
		/* The worker would call what precedes it. */
		return client_error(ses, GRPC_INVALID_ARGUMENT,
		    "the name of call %" PRIu64 " holds a NUL character",
		    c->ev_call_id);
	if (c->ev_has_value && c->ev_seq != 0)
		return client_error(
		    ses, GRPC_INVALID_ARGUMENT, "Call.args must be chunk 0");
	/* The bound the session's Ready stated: a SIGHUP since does not
	 * change it under a client that keeps within it. */
	max = ses->ses_max_inflight ? ses->ses_max_inflight
	                            : front_conf.fc_max_inflight;
	if (ses->ses_inflight >= max)
		return client_error(ses, GRPC_RESOURCE_EXHAUSTED,
		    "more than %u calls in flight (--max-inflight-calls)", max);
	/* The declared total (chunk 0's total_size) counts as well: the
	 * worker refuses on it too, and the front must be the one to say. */
	if (c->ev_data_len > session_max_value(ses) ||
	    c->ev_total > session_max_value(ses))
		return session_value_too_big(ses, c->ev_call_id);
	if (session_chunk_fits(ses, c->ev_call_id, 0, c->ev_data_len) == -1 ||
	    (c->ev_has_value && !c->ev_more &&
	        session_total_matches(
	            ses, c->ev_call_id, c->ev_data_len, c->ev_total) == -1))
		return -1;
	ses->ses_last_call = c->ev_call_id;
	ses->ses_ncalls++;
	front_call_start(ses, c);
	return 0;
}

/*
 * Pull and Cancel name a call: an id never sent is an error, a finished
 * one is ignored (it raced with End). Returns 1 to forward, 0 to drop.
 */
static int
session_call_ref(struct session *ses, uint64_t id, struct call **clp)
{
	if (id == 0 || id > ses->ses_last_call) {
		client_error(
		    ses, GRPC_INVALID_ARGUMENT, "unknown call id %" PRIu64, id);
		return -1;
	}
	*clp = front_call_find(ses, id);
	return *clp != NULL;
}

static int
session_pull(struct session *ses, const struct envelope *p)
{
	struct call *cl;
	int rv;

	if ((rv = session_call_ref(ses, p->ev_call_id, &cl)) <= 0)
		return rv;
	if (p->ev_n == 0)
		return 0;
	front_call_pull(cl, p->ev_n, p->ev_timeout_ms);
	return 1;
}

/* Dispatch a message of a ready session; returns 1 to forward it. */
static int
session_ready_msg(struct session *ses, const struct envelope *m)
{
	struct call *cl;

	switch (m->ev_case) {
	case ENV_CLIENT_CALL:
		return session_call(ses, m) == 0 ? 1 : -1;
	case ENV_CLIENT_VALUE:
		return session_client_value(ses, m);
	case ENV_CLIENT_PULL:
		return session_pull(ses, m);
	case ENV_CLIENT_CANCEL:
		return session_call_ref(ses, m->ev_call_id, &cl);
	case ENV_CLIENT_CLOSE:
		ses->ses_state = SES_CLOSING;
		return 1;
	case ENV_CLIENT_OPEN:
		return client_error(
		    ses, GRPC_INVALID_ARGUMENT, "Open sent twice");
	default:
		return client_error(
		    ses, GRPC_INVALID_ARGUMENT, "unknown client message");
	}
}

/* The Open, unpacked whole: the one message the front reads in full. */
static int
session_client_open(struct session *ses, const uint8_t *msg, size_t len)
{
	ClientMessage *m;
	int rv;

	m = remotemedia__v1__client_message__unpack(NULL, len, msg);
	if (m == NULL)
		return client_error(ses, GRPC_INVALID_ARGUMENT,
		    "malformed ClientMessage (%zu bytes)", len);
	rv = session_open(ses, m->open, msg, len);
	remotemedia__v1__client_message__free_unpacked(m, NULL);
	return rv;
}

/* Route one client message, by its envelope, by session state. */
static int
session_client_dispatch(struct session *ses, const struct envelope *m,
    const uint8_t *msg, size_t len)
{
	int fwd;

	switch (ses->ses_state) {
	case SES_OPENING:
		if (m->ev_case != ENV_CLIENT_OPEN)
			return client_error(ses, GRPC_INVALID_ARGUMENT,
			    "the first message of a session must be Open");
		return session_client_open(ses, msg, len);
	case SES_INSTALLING:
	case SES_STARTING:
		if (m->ev_case == ENV_CLIENT_VALUE) {
			if (m->ev_call_id != 0)
				return client_error(ses, GRPC_INVALID_ARGUMENT,
				    "message before Ready");
			if (session_client_value(ses, m) == -1)
				return -1;
			return session_forward(ses, msg, len);
		}
		if (m->ev_case == ENV_CLIENT_CLOSE) {
			if (ses->ses_state == SES_INSTALLING) {
				front_session_end(ses, GRPC_OK, NULL);
				return -1;
			}
			ses->ses_state = SES_CLOSING;
			return session_forward(ses, msg, len);
		}
		return client_error(ses, GRPC_INVALID_ARGUMENT,
		    m->ev_case == ENV_CLIENT_OPEN ? "Open sent twice"
		                                  : "message before Ready");
	case SES_READY:
		if ((fwd = session_ready_msg(ses, m)) <= 0)
			return fwd;
		return session_forward(ses, msg, len);
	default:
		return 0; /* closing or ending: drop */
	}
}

/* One message from the client. Returns -1 once the session has ended. */
int
front_session_client_msg(struct session *ses, const uint8_t *msg, size_t len)
{
	struct envelope ev;

	session_touch(ses);
	if (envelope_client(msg, len, &ev) == -1)
		return client_error(ses, GRPC_INVALID_ARGUMENT,
		    "malformed ClientMessage (%zu bytes)", len);
	return session_client_dispatch(ses, &ev, msg, len) < 0 ? -1 : 0;
}

/* The client half-closed: that ends the session as Close does. */
void
front_session_client_closed(struct session *ses)
{
	static const uint8_t close_msg[] = {0x2a, 0x00}; /* close = 5 */

	switch (ses->ses_state) {
	case SES_OPENING:
		client_error(
		    ses, GRPC_INVALID_ARGUMENT, "the stream ended before Open");
		break;
	case SES_INSTALLING:
		front_session_end(ses, GRPC_OK, NULL);
		break;
	case SES_STARTING:
	case SES_READY:
		ses->ses_state = SES_CLOSING;
		session_forward(ses, close_msg, sizeof(close_msg));
		break;
	default:
		break;
	}
}

/* The client's stream is gone: nobody waits for this worker any more. */
void
front_session_client_gone(struct session *ses)
{
	log_debug("%s: session %s (%s)", __func__, ses->ses_id,
	    front_session_state_name(ses->ses_state));
	front_session_end(ses, GRPC_CANCELLED, "the client went away");
}

/* Retire a call whose terminal answer has gone by. */
static void
call_retire(struct session *ses, struct call *cl)
{
	front_call_done(cl);
	if (ses->ses_draining)
		session_drain(ses);
}

/*
 * A worker's answer to call id, checked by front_call.c: a broken rule is
 * a violation, a terminal answer retires the call.
 */
static int
from_worker_answer(struct session *ses, uint64_t id, struct call *cl,
    const char *why, int done)
{
	if (why != NULL)
		return from_worker_violation(ses, why, id);
	if (done)
		call_retire(ses, cl);
	return 0;
}

/* Result, Value, Item, End and Error of a call. */
static int
from_worker_call(struct session *ses, const struct envelope *m)
{
	struct call *cl;
	const char *why;
	int done = 0;

	if (m->ev_case == ENV_SERVER_ERROR && m->ev_call_id == 0)
		return 0;
	cl = front_call_find(ses, m->ev_call_id);
	switch (m->ev_case) {
	case ENV_SERVER_RESULT:
		why = front_call_result(cl, m, &done);
		break;
	case ENV_SERVER_VALUE:
		why = front_call_value(cl, m, &done);
		break;
	case ENV_SERVER_ITEM:
		why = front_call_item(cl, m);
		break;
	case ENV_SERVER_END:
		why = front_call_end(cl);
		done = 1;
		break;
	default: /* ENV_SERVER_ERROR */
		why = front_call_error(cl);
		done = 1;
		break;
	}
	return from_worker_answer(ses, m->ev_call_id, cl, why, done);
}

/* Check one worker message against the session state. */
static int
session_worker_check(struct session *ses, const struct envelope *m)
{
	/* A Close may cross the worker's Progress and Ready: CLOSING
	 * alone does not say whether Ready was seen. */
	int ready = ses->ses_ready_seen;

	switch (m->ev_case) {
	case ENV_SERVER_PROGRESS:
		return !ses->ses_ready_seen
		    ? 0
		    : from_worker_violation(ses, "progress after Ready", 0);
	case ENV_SERVER_READY:
		if (ses->ses_ready_seen)
			return from_worker_violation(
			    ses, "unexpected Ready", 0);
		ses->ses_ready_seen = 1;
		/* A spare's processes forked while it became this session
		 * missed that; all of them are there by now. */
		if (ses->ses_adopted)
			front_worker_nice(ses, 0);
		if (ses->ses_state == SES_STARTING)
			ses->ses_state = SES_READY;
		log_info("session %s: ready in %llu ms (owner %s, uid %ld, "
		         "worker %d)",
		    ses->ses_id,
		    (unsigned long long)(now_ms() - ses->ses_started_at),
		    ses->ses_owner ? ses->ses_owner : "-", ses->ses_uid,
		    (int)ses->ses_pid);
		return 0;
	case ENV_SERVER_OUTPUT:
		/* The front reads the output (front_output.c): an Output on
		 * the socket would get round the rate cap. */
		return from_worker_violation(ses, "Output on its socket", 0);
	default:
		break;
	}
	/* A session-level Error: the exception behind the Fatal to come
	 * (an object that cannot be loaded), with its type and traceback. */
	if (m->ev_case == ENV_SERVER_ERROR && m->ev_call_id == 0)
		return 0;
	if (!ready)
		return from_worker_violation(ses, "answer before Ready", 0);
	switch (m->ev_case) {
	case ENV_SERVER_RESULT:
	case ENV_SERVER_VALUE:
	case ENV_SERVER_ITEM:
	case ENV_SERVER_END:
	case ENV_SERVER_ERROR:
		return from_worker_call(ses, m);
	default:
		return from_worker_violation(ses, "unknown message", 0);
	}
}

/*
 * The session's worker failed (how): end the session with code. A spare's
 * that fails before it took the Open died between its last check and the
 * adoption, or its sandbox failed after: no code of the session ran and
 * another worker would do, so the session ends UNAVAILABLE instead, which
 * clients retry (the Python client does), and the pool counts a failed
 * spare.
 */
static void
session_worker_failed(struct session *ses, int code, const char *how)
{
	char msg[512];

	if (!ses->ses_adopted || ses->ses_taken || ses->ses_ready_seen) {
		front_session_end(ses, code, how);
		return;
	}
	snprintf(msg, sizeof(msg),
	    "the spare worker given to the session failed before it took the "
	    "Open (no code of the session ran; try again): %s",
	    how);
	front_pool_adopted_failed();
	front_session_end(ses, GRPC_UNAVAILABLE, msg);
}

/* A control frame: a worker may send Fatal, Flush, and Taken once. */
static int
session_worker_control(struct session *ses, const uint8_t *msg, size_t len)
{
	Remotemedia__Worker__V1__WorkerControl *c;
	int code;

	/* Flush, as the worker writes it, without an unpack: it may come
	 * before every answer. */
	if (len == 2 && msg[0] == 0x2a && msg[1] == 0x00) {
		front_output_flush(ses);
		return ses->ses_state == SES_ENDING ? -1 : 0;
	}
	c = remotemedia__worker__v1__worker_control__unpack(NULL, len, msg);
	if (c != NULL &&
	    c->msg_case == REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_TAKEN) {
		remotemedia__worker__v1__worker_control__free_unpacked(c, NULL);
		if (ses->ses_taken || ses->ses_ready_seen)
			return from_worker_violation(
			    ses, "unexpected Taken", 0);
		ses->ses_taken = 1;
		if (ses->ses_adopted)
			front_pool_adopted_ok();
		return 0;
	}
	if (c != NULL &&
	    c->msg_case == REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_FLUSH) {
		remotemedia__worker__v1__worker_control__free_unpacked(c, NULL);
		front_output_flush(ses);
		return ses->ses_state == SES_ENDING ? -1 : 0;
	}
	if (c == NULL ||
	    c->msg_case != REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_FATAL) {
		if (c != NULL)
			remotemedia__worker__v1__worker_control__free_unpacked(
			    c, NULL);
		return from_worker_violation(ses, "bad control frame", 0);
	}
	code = (int)c->fatal->code;
	if (code <= 0 || code > GRPC_UNAUTHENTICATED)
		code = GRPC_INTERNAL;
	session_worker_failed(ses, code, c->fatal->message);
	remotemedia__worker__v1__worker_control__free_unpacked(c, NULL);
	return -1;
}

/* Send a ServerMessage to the client; over the high mark, pause. */
static void
session_relay(struct session *ses, const uint8_t *msg, size_t len)
{
	if (ses->ses_stream == NULL)
		return;
	front_grpc_send(ses->ses_stream, msg, len);
	if (front_grpc_pending_out(ses->ses_stream) >= FRONT_BUF_HIGH)
		front_worker_pause(ses, 1);
}

/* One frame from the worker: check it, then relay it unchanged. */
int
front_session_worker_frame(
    struct session *ses, uint8_t type, const uint8_t *msg, size_t len)
{
	struct envelope ev;
	int rv;

	if (ses->ses_state == SES_ENDING)
		return -1;
	if (type == FRAME_CTL)
		return session_worker_control(ses, msg, len);
	if (envelope_server(msg, len, &ev) == -1)
		return from_worker_violation(ses, "malformed message", 0);
	rv = session_worker_check(ses, &ev);
	session_touch(ses);
	if (rv == -1)
		return -1;
	session_relay(ses, msg, len);
	return 0;
}

/* An Output the front made of the worker's pipes (front_output.c). */
void
front_session_output(struct session *ses, const uint8_t *msg, size_t len)
{
	if (ses->ses_state == SES_ENDING)
		return;
	session_touch(ses);
	session_relay(ses, msg, len);
}

/* The client drained our queue: read the worker again. */
void
front_session_drained(struct session *ses)
{
	if (!ses->ses_paused)
		return;
	front_worker_pause(ses, 0);
	front_call_regrace(ses);
}

/* The worker closed its socket; it should exit now. */
void
front_session_worker_eof(struct session *ses)
{
	ses->ses_eof = 1;
}

/*
 * The worker was reaped: decide the status from how it ended, and count
 * the cause (remotemedia_worker_exits_total).
 */
void
front_session_worker_exited(struct session *ses, int wstatus)
{
	char *how;

	ses->ses_reaped = 1;
	ses->ses_wstatus = wstatus;
	if (ses->ses_end_set) {
		front_metrics_worker_exit(
		    ses->ses_end_code == GRPC_DEADLINE_EXCEEDED ? "deadline"
		                                                : "killed");
		front_session_end(ses, ses->ses_end_code, ses->ses_end_msg);
		return;
	}
	if (ses->ses_state == SES_CLOSING && WIFEXITED(wstatus) &&
	    WEXITSTATUS(wstatus) == 0) {
		front_metrics_worker_exit("clean");
		if (ses->ses_draining)
			front_session_end(ses, GRPC_UNAVAILABLE,
			    "the server is shutting down");
		else
			front_session_end(ses, GRPC_OK, NULL);
		return;
	}
	if ((how = front_sandbox_limit_hit(ses, wstatus)) != NULL) {
		front_metrics_worker_exit("limit");
		session_worker_failed(ses, GRPC_RESOURCE_EXHAUSTED, how);
		free(how);
		return;
	}
	if (ses->ses_exit_killed && WIFSIGNALED(wstatus) &&
	    WTERMSIG(wstatus) == SIGKILL) {
		char msg[200];

		/* The front's own kill: say why, not "signal 9". */
		front_metrics_worker_exit("killed");
		snprintf(msg, sizeof(msg),
		    "the worker did not exit within %llu ms of %s; the server "
		    "killed it",
		    (unsigned long long)ses->ses_exit_wait_ms,
		    ses->ses_state == SES_CLOSING ? "Close"
		        : ses->ses_eof ? "closing its socket to the server"
		                       : "being told to");
		front_session_end(ses, GRPC_ABORTED, msg);
		return;
	}
	front_metrics_worker_exit(WIFSIGNALED(wstatus) ? "signal" : "error");
	how = front_worker_describe_exit(wstatus);
	session_worker_failed(ses, GRPC_ABORTED, how);
	free(how);
}

/* Draining: a ready session with nothing in flight is closed now. */
static void
session_drain(struct session *ses)
{
	static const uint8_t close_msg[] = {0x2a, 0x00}; /* close = 5 */

	if (ses->ses_state != SES_READY || ses->ses_inflight > 0)
		return;
	ses->ses_state = SES_CLOSING;
	session_forward(ses, close_msg, sizeof(close_msg));
}

/*
 * SIGTERM: sessions with calls running may finish them; idle ones are
 * closed; those not ready yet end at once. All end UNAVAILABLE.
 */
void
front_session_drain_all(void)
{
	struct session *ses, *tmp;

	TAILQ_FOREACH_SAFE (ses, &sessions, ses_entry, tmp) {
		ses->ses_draining = 1;
		if (ses->ses_state == SES_READY)
			session_drain(ses);
		else if (ses->ses_state != SES_CLOSING &&
		    ses->ses_state != SES_ENDING)
			front_session_end(ses, GRPC_UNAVAILABLE,
			    "the server is shutting down");
	}
}

/* SIGTERM: end every session; the loop exits when the last is freed. */
void
front_session_kill_all(void)
{
	struct session *ses, *tmp;

	TAILQ_FOREACH_SAFE (ses, &sessions, ses_entry, tmp)
		front_session_end(
		    ses, GRPC_UNAVAILABLE, "the server is shutting down");
}
