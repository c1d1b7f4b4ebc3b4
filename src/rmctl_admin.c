/*
 * rmctl info, sessions and kill (the Admin service), and rmctl run (a
 * json-format session opened from Python source, one call, its result or
 * each item of a generator as one JSON line).
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include <err.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"
#include "rmctl.h"
#include "util.h"

#include "remotemedia.pb-c.h"

#define RMCTL_SOURCE_MAX (1024 * 1024) /* --source: one Value chunk */
#define RMCTL_RUN_MSG_MAX (2 * 1024 * 1024) /* a 1 MiB chunk and more */
#define RMCTL_RUN_VALUE_MAX (256 * 1024 * 1024)
#define RMCTL_INIT_MAX (64 * 1024)
#define RMCTL_RUN_QUEUE_MAX 100000

typedef Remotemedia__V1__ServerMessage ServerMessage;

/* One unary call: send req on path, wait, and return the one reply. */
void
rmctl_unary(const struct rmctl_opts *o, const char *path, const char *what,
    const ProtobufCMessage *req, struct rmctl_msg **reply)
{
	struct rmctl_conn cn;
	struct rmctl_call cl;
	uint64_t deadline = now_ms() + o->o_timeout_ms;
	char tmo[32];

	rmctl_conn_open(&cn, o, deadline);
	rmctl_call_init(&cl, what, RMCTL_MSG_MAX);
	rmctl_grpc_timeout(tmo, sizeof(tmo), o->o_timeout_ms);
	rmctl_call_start(&cn, &cl, path, tmo);
	rmctl_call_send(&cn, &cl, req);
	rmctl_call_close_send(&cn, &cl);
	rmctl_conn_wait(&cn, rmctl_call_finished, deadline, what);
	rmctl_call_check(&cn, &cl);
	if ((*reply = rmctl_call_pop(&cl)) == NULL)
		errx(RMCTL_EXIT_INTERNAL, "%s: %s sent no reply", what,
		    cn.cn_authority);
	if (!TAILQ_EMPTY(&cl.cl_msgs))
		errx(RMCTL_EXIT_INTERNAL, "%s: %s sent more than one reply",
		    what, cn.cn_authority);
	rmctl_call_free(&cl);
	rmctl_conn_close(&cn);
}

/* Unpack a reply or exit: the server broke the protocol. */
static ProtobufCMessage *
rmctl_unpack(
    const ProtobufCMessageDescriptor *d, struct rmctl_msg *m, const char *what)
{
	ProtobufCMessage *r = protobuf_c_message_unpack(
	    d, NULL, m->m_len, m->m_data);

	free(m);
	if (r == NULL)
		errx(RMCTL_EXIT_INTERNAL, "%s: malformed reply", what);
	return r;
}

/* A string for a JSON document: quotes, backslashes and controls escaped. */
static void
json_string(FILE *f, const char *s)
{
	const unsigned char *p;

	fputc('"', f);
	for (p = (const unsigned char *)s; *p != '\0'; p++) {
		if (*p == '"' || *p == '\\')
			fprintf(f, "\\%c", *p);
		else if (*p < 0x20)
			fprintf(f, "\\u%04x", *p);
		else
			fputc(*p, f);
	}
	fputc('"', f);
}

/* A JSON list's strings, comma-separated, without its brackets. */
static void
json_strings(FILE *f, char **v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		fprintf(f, "%s", i ? ", " : "");
		json_string(f, v[i]);
	}
}

/*
 * One Admin call whose reply is printed: send req on path, unpack the reply
 * as d, print it and free it. A failure exits.
 */
static int
rmctl_admin_show(const struct rmctl_opts *o, const char *path, const char *what,
    const ProtobufCMessage *req, const ProtobufCMessageDescriptor *d,
    void (*print)(const struct rmctl_opts *, const ProtobufCMessage *))
{
	struct rmctl_msg *m;
	ProtobufCMessage *r;

	rmctl_unary(o, path, what, req, &m);
	r = rmctl_unpack(d, m, what);
	print(o, r);
	protobuf_c_message_free_unpacked(r, NULL);
	return 0;
}

/* An InfoReply, as JSON or as text. */
static void
rmctl_info_print(const struct rmctl_opts *o, const ProtobufCMessage *msg)
{
	const Remotemedia__V1__InfoReply *r =
	    (const Remotemedia__V1__InfoReply *)msg;
	size_t i;

	if (o->o_json) {
		printf("{\"version\": ");
		json_string(stdout, r->version);
		printf(", \"python\": ");
		json_string(stdout, r->python_version);
		printf(", \"sessions\": %u, \"spares\": %u, \"draining\": %s, "
		       "\"uptime_ms\": %" PRIu64 ", \"limits\": {",
		    r->sessions, r->spares, r->draining ? "true" : "false",
		    r->uptime_ms);
		for (i = 0; i < r->n_limits; i++) {
			printf("%s", i ? ", " : "");
			json_string(stdout, r->limits[i]->key);
			printf(": ");
			json_string(stdout, r->limits[i]->value);
		}
		printf("}, \"sandbox\": [");
		json_strings(stdout, r->sandbox, r->n_sandbox);
		printf("]}\n");
	} else {
		printf("version         %s (protocol %d)\n", r->version,
		    (int)r->protocol);
		printf("python          %s\n", r->python_version);
		printf("sessions        %u open, %u spare%s\n", r->sessions,
		    r->spares, r->draining ? ", draining" : "");
		printf("uptime          %" PRIu64 " s\n", r->uptime_ms / 1000);
		printf("sandbox         %s\n",
		    r->n_sandbox == 0 ? "OFF: sessions run unconfined" : "on");
		for (i = 0; i < r->n_sandbox; i++)
			printf("  %s\n", r->sandbox[i]);
		printf("limits\n");
		for (i = 0; i < r->n_limits; i++)
			printf("  %-24s %s\n", r->limits[i]->key,
			    r->limits[i]->value);
	}
}

/* rmctl info: version, limits and the sandbox in force. */
int
rmctl_info(const struct rmctl_opts *o)
{
	Remotemedia__V1__InfoRequest req = REMOTEMEDIA__V1__INFO_REQUEST__INIT;

	return rmctl_admin_show(o, "/remotemedia.v1.Admin/Info", "info",
	    &req.base, &remotemedia__v1__info_reply__descriptor,
	    rmctl_info_print);
}

/* A ListSessionsReply: a table, or one JSON object a line. */
static void
rmctl_sessions_print(const struct rmctl_opts *o, const ProtobufCMessage *msg)
{
	const Remotemedia__V1__ListSessionsReply *r =
	    (const Remotemedia__V1__ListSessionsReply *)msg;
	Remotemedia__V1__SessionInfo *s;
	size_t i, j;

	if (!o->o_json)
		printf("%-32s  %-10s %-12s %8s %7s %7s %6s  %s\n", "SESSION",
		    "OWNER", "STATE", "AGE", "CALLS", "PID", "UID",
		    "REQUIREMENTS");
	for (i = 0; i < r->n_sessions; i++) {
		s = r->sessions[i];
		if (o->o_json) {
			printf("{\"session_id\": ");
			json_string(stdout, s->session_id);
			printf(", \"owner\": ");
			json_string(stdout, s->owner);
			printf(", \"state\": ");
			json_string(stdout, s->state);
			printf(", \"age_ms\": %" PRIu64 ", \"calls\": %" PRIu64
			       ", \"calls_in_flight\": %u, \"pid\": %d, "
			       "\"uid\": %" PRId64 ", \"requirements\": [",
			    s->age_ms, s->calls, s->calls_in_flight, s->pid,
			    s->uid);
			json_strings(
			    stdout, s->requirements, s->n_requirements);
			printf("]}\n");
			continue;
		}
		printf("%-32s  %-10s %-12s %7" PRIu64 "s %7" PRIu64
		       " %7d %6" PRId64 "  ",
		    s->session_id, s->owner[0] ? s->owner : "-", s->state,
		    s->age_ms / 1000, s->calls, s->pid, s->uid);
		for (j = 0; j < s->n_requirements; j++)
			printf("%s%s", j ? "," : "", s->requirements[j]);
		printf("%s\n", s->n_requirements ? "" : "-");
	}
}

/* rmctl sessions: one line each (or JSON); an admin token sees all. */
int
rmctl_sessions(const struct rmctl_opts *o)
{
	Remotemedia__V1__ListSessionsRequest req =
	    REMOTEMEDIA__V1__LIST_SESSIONS_REQUEST__INIT;

	return rmctl_admin_show(o, "/remotemedia.v1.Admin/ListSessions",
	    "sessions", &req.base,
	    &remotemedia__v1__list_sessions_reply__descriptor,
	    rmctl_sessions_print);
}

/* rmctl kill SESSION: end it; its client sees ABORTED. */
int
rmctl_kill(const struct rmctl_opts *o)
{
	Remotemedia__V1__EndSessionRequest req =
	    REMOTEMEDIA__V1__END_SESSION_REQUEST__INIT;
	struct rmctl_msg *m;

	req.session_id = (char *)o->o_arg;
	rmctl_unary(
	    o, "/remotemedia.v1.Admin/EndSession", "kill", &req.base, &m);
	free(m);
	printf("ended %s\n", o->o_arg);
	return 0;
}

/* Read --source whole; it travels in one Open message. */
static char *
rmctl_read_source(const char *path)
{
	struct stat st;
	char *buf;
	ssize_t n;
	size_t off = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		err(RMCTL_EXIT_INVALID, "--source %s", path);
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode))
		errx(RMCTL_EXIT_INVALID, "--source %s: not a regular file",
		    path);
	if (st.st_size > RMCTL_SOURCE_MAX)
		errx(RMCTL_EXIT_INVALID, "--source %s: larger than %d bytes",
		    path, RMCTL_SOURCE_MAX);
	buf = xcalloc(1, (size_t)st.st_size + 1);
	while (off < (size_t)st.st_size &&
	    (n = read(fd, buf + off, (size_t)st.st_size - off)) > 0)
		off += (size_t)n;
	close(fd);
	buf[off] = '\0';
	if (strlen(buf) != off)
		errx(RMCTL_EXIT_INVALID, "--source %s: contains a NUL byte",
		    path);
	return buf;
}

struct run {
	struct rmctl_conn r_conn;
	struct rmctl_call r_call;
	const struct rmctl_opts *r_opts;
	char *r_value; /* a chunked value being reassembled */
	size_t r_len;
	int r_get; /* --call names a property or attribute: read it */
};

/* The next message; Output lines go to stderr, Progress is skipped. */
static ServerMessage *
run_next(struct run *r, const char *what)
{
	struct rmctl_conn *cn = &r->r_conn;
	uint64_t until = now_ms() + cn->cn_timeout_ms;
	ServerMessage *sm;
	struct rmctl_msg *m;

	for (;;) {
		/* Progress (a build) restarts the clock; Output does not: a
		 * server could otherwise keep rmctl waiting for ever. */
		rmctl_conn_wait(cn, rmctl_call_readable, until, what);
		if ((m = rmctl_call_pop(&r->r_call)) == NULL) {
			rmctl_call_check(cn, &r->r_call);
			errx(RMCTL_EXIT_INTERNAL,
			    "run: the session ended during %s", what);
		}
		sm = remotemedia__v1__server_message__unpack(
		    NULL, m->m_len, m->m_data);
		free(m);
		if (sm == NULL)
			errx(RMCTL_EXIT_INTERNAL, "run: malformed message");
		if (sm->msg_case ==
		    REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_OUTPUT) {
			fwrite(sm->output->data.data, 1, sm->output->data.len,
			    stderr);
		} else if (sm->msg_case !=
		    REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_PROGRESS)
			return sm;
		else
			until = now_ms() + cn->cn_timeout_ms;
		remotemedia__v1__server_message__free_unpacked(sm, NULL);
	}
}

/* A remote exception: its type and message, and exit 1 like Python. */
static void __attribute__((noreturn)) run_raised(ServerMessage *sm)
{
	char *tb = sm->error->traceback, *line;

	/* The server's text: line by line, with no escape sequences. */
	if (tb != NULL)
		while ((line = strsep(&tb, "\n")) != NULL)
			if (*line != '\0' || tb != NULL)
				fprintf(stderr, "%s\n", rmctl_printable(line));
	errx(RMCTL_EXIT_FAIL, "remote %s: %s", rmctl_printable(sm->error->type),
	    rmctl_printable(sm->error->message));
}

/* The one call run makes: every answer must be for it. */
#define RUN_CALL_ID 1

static void
run_check_id(uint64_t id, const char *what)
{
	if (id != RUN_CALL_ID)
		errx(RMCTL_EXIT_INTERNAL,
		    "run: %s for call %" PRIu64 ", not the call made (%d)",
		    what, id, RUN_CALL_ID);
}

/* Print a value (one JSON document) as one line, reassembling chunks. */
static void
run_value(struct run *r, const Remotemedia__V1__Value *v)
{
	ServerMessage *sm = NULL;
	uint32_t seq = 0;
	int more;

	r->r_len = 0;
	for (;;) {
		if (r->r_len + v->data.len > RMCTL_RUN_VALUE_MAX)
			errx(RMCTL_EXIT_FAIL, "run: a value over %d bytes",
			    RMCTL_RUN_VALUE_MAX);
		r->r_value = realloc(r->r_value, r->r_len + v->data.len + 1);
		if (r->r_value == NULL)
			errx(RMCTL_EXIT_FAIL, "out of memory");
		memcpy(r->r_value + r->r_len, v->data.data, v->data.len);
		r->r_len += v->data.len;
		more = v->more;
		if (sm != NULL)
			remotemedia__v1__server_message__free_unpacked(
			    sm, NULL);
		if (!more)
			break;
		sm = run_next(r, "a value's next chunk");
		if (sm->msg_case != REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_VALUE)
			errx(RMCTL_EXIT_INTERNAL, "run: a value was cut off");
		v = sm->value;
		if (v->call_id != RUN_CALL_ID || v->seq != ++seq) {
			uint64_t id = v->call_id;
			uint32_t got = v->seq;

			/* Freed first: exit leaves nothing for LeakSanitizer. */
			remotemedia__v1__server_message__free_unpacked(
			    sm, NULL);
			run_check_id(id, "a value's chunk");
			errx(RMCTL_EXIT_INTERNAL,
			    "run: chunk %u of a value came where %u was due",
			    got, seq);
		}
	}
	fwrite(r->r_value, 1, r->r_len, stdout);
	fputc('\n', stdout);
	fflush(stdout);
}

static void
run_send(struct run *r, Remotemedia__V1__ClientMessage *cm)
{
	rmctl_call_send(&r->r_conn, &r->r_call, &cm->base);
}

/* Pull n more items of the generator call 1. */
static void
run_pull(struct run *r, uint32_t n)
{
	Remotemedia__V1__ClientMessage cm =
	    REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Pull pull = REMOTEMEDIA__V1__PULL__INIT;

	pull.call_id = 1;
	pull.n = n;
	pull.timeout_ms = r->r_opts->o_timeout_ms;
	cm.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_PULL;
	cm.pull = &pull;
	run_send(r, &cm);
}

/* Whether json is the empty list or object (empty), spaces aside. */
static int
run_json_empty(const char *json, const char *empty)
{
	json += strspn(json, " \t\r\n");
	if (*json++ != empty[0])
		return 0;
	json += strspn(json, " \t\r\n");
	if (*json++ != empty[1])
		return 0;
	return json[strspn(json, " \t\r\n")] == '\0';
}

/* Whether Ready's attribute map says name is read, not called. */
static int
run_is_data(const Remotemedia__V1__Ready *ready, const char *name)
{
	size_t i;

	for (i = 0; i < ready->n_attributes; i++)
		if (strcmp(ready->attributes[i]->key, name) == 0)
			return ready->attributes[i]->value ==
			    REMOTEMEDIA__V1__ATTR_KIND__ATTR_PROPERTY ||
			    ready->attributes[i]->value ==
			    REMOTEMEDIA__V1__ATTR_KIND__ATTR_ATTRIBUTE;
	return 0;
}

/* Open the session: Open with the source and the constructor's args. */
static void
run_open(struct run *r, char *source)
{
	const struct rmctl_opts *o = r->r_opts;
	Remotemedia__V1__ClientMessage cm =
	    REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Open op = REMOTEMEDIA__V1__OPEN__INIT;
	ServerMessage *sm;
	char init[RMCTL_INIT_MAX + 32];

	if (strlen(o->o_init) > RMCTL_INIT_MAX)
		errx(RMCTL_EXIT_INVALID, "--init: longer than %d bytes",
		    RMCTL_INIT_MAX);
	op.protocol = REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1;
	op.format = REMOTEMEDIA__V1__FORMAT__FORMAT_JSON;
	op.source = source;
	op.class_name = (char *)o->o_class;
	snprintf(
	    init, sizeof(init), "{\"args\": %s, \"kwargs\": {}}", o->o_init);
	op.init_args_json.data = (uint8_t *)init;
	op.init_args_json.len = strlen(init);
	op.n_requirements = o->o_npip;
	op.requirements = (char **)o->o_pip;
	cm.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_OPEN;
	cm.open = &op;
	rmctl_call_init(&r->r_call, "session", RMCTL_RUN_MSG_MAX);
	/* pip's Progress and the object's Output come unasked, many at once. */
	r->r_call.cl_queue_max = RMCTL_RUN_QUEUE_MAX;
	rmctl_call_start(&r->r_conn, &r->r_call,
	    "/remotemedia.v1.RemoteExecution/Session", NULL);
	run_send(r, &cm);
	sm = run_next(r, "the session to open");
	if (sm->msg_case == REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR &&
	    sm->error->call_id == 0) {
		/* The exception behind the status that ends the stream next
		 * (the object cannot be loaded): its traceback, then that. */
		if (sm->error->traceback != NULL)
			fprintf(stderr, "%s", sm->error->traceback);
		remotemedia__v1__server_message__free_unpacked(sm, NULL);
		sm = run_next(r, "the session to open");
	}
	if (sm->msg_case == REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR)
		run_raised(sm);
	if (sm->msg_case != REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_READY)
		errx(RMCTL_EXIT_INTERNAL, "run: expected Ready, got message %d",
		    (int)sm->msg_case);
	r->r_get = run_is_data(sm->ready, o->o_call);
	remotemedia__v1__server_message__free_unpacked(sm, NULL);
	if (r->r_get &&
	    (!run_json_empty(o->o_args, "[]") ||
	        !run_json_empty(o->o_kwargs, "{}")))
		errx(RMCTL_EXIT_INVALID,
		    "run: --call %s is not a method but a property or an "
		    "attribute: it is read, with no --args or --kwargs",
		    o->o_call);
}

/* Send the one call: {"args": [...], "kwargs": {...}}. */
static void
run_call(struct run *r)
{
	const struct rmctl_opts *o = r->r_opts;
	Remotemedia__V1__ClientMessage cm =
	    REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Call call = REMOTEMEDIA__V1__CALL__INIT;
	Remotemedia__V1__Value args = REMOTEMEDIA__V1__VALUE__INIT;
	size_t len = strlen(o->o_args) + strlen(o->o_kwargs) + 32;
	char *doc = xcalloc(1, len);

	snprintf(
	    doc, len, "{\"args\": %s, \"kwargs\": %s}", o->o_args, o->o_kwargs);
	args.call_id = 1;
	args.data.data = (uint8_t *)doc;
	args.data.len = strlen(doc);
	args.total_size = args.data.len;
	call.call_id = 1;
	call.name = (char *)o->o_call;
	call.kind = REMOTEMEDIA__V1__CALL_KIND__CALL_METHOD;
	call.args = &args;
	if (r->r_get) {
		call.kind = REMOTEMEDIA__V1__CALL_KIND__CALL_GET;
		call.args = NULL;
	}
	call.timeout_ms = o->o_timeout_ms;
	cm.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CALL;
	cm.call = &call;
	run_send(r, &cm);
	free(doc);
}

/* Stream a generator's items, one JSON line each, until End. */
static void
run_items(struct run *r)
{
	ServerMessage *sm;
	uint32_t credit = 0;

	for (;;) {
		if (credit == 0) {
			run_pull(r, 16);
			credit = 16;
		}
		sm = run_next(r, "the next item");
		switch (sm->msg_case) {
		case REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ITEM:
			run_check_id(sm->item->call_id, "an item");
			credit--;
			if (sm->item->value == NULL)
				errx(RMCTL_EXIT_INTERNAL,
				    "run: an item without a value");
			run_value(r, sm->item->value);
			break;
		case REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_END:
			run_check_id(sm->end->call_id, "an End");
			remotemedia__v1__server_message__free_unpacked(
			    sm, NULL);
			return;
		case REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR:
			run_raised(sm);
		default:
			errx(RMCTL_EXIT_INTERNAL,
			    "run: unexpected message %d in a generator",
			    (int)sm->msg_case);
		}
		remotemedia__v1__server_message__free_unpacked(sm, NULL);
	}
}

/*
 * rmctl run: open a json-format session from --source, instantiate
 * --class, call --call once, print the result as JSON (or each item of a
 * generator on a line of its own), and close the session.
 */
int
rmctl_run(const struct rmctl_opts *o)
{
	struct run r;
	ServerMessage *sm;
	char *source = rmctl_read_source(o->o_source);

	memset(&r, 0, sizeof(r));
	r.r_opts = o;
	rmctl_conn_open(&r.r_conn, o, now_ms() + o->o_timeout_ms);
	run_open(&r, source);
	free(source);
	run_call(&r);
	sm = run_next(&r, "the result");
	if (sm->msg_case == REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR)
		run_raised(sm);
	if (sm->msg_case != REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_RESULT)
		errx(RMCTL_EXIT_INTERNAL,
		    "run: expected Result, got message %d", (int)sm->msg_case);
	run_check_id(sm->result->call_id, "a Result");
	if (sm->result->generator)
		run_items(&r);
	else if (sm->result->value != NULL)
		run_value(&r, sm->result->value);
	else
		printf("null\n");
	remotemedia__v1__server_message__free_unpacked(sm, NULL);
	rmctl_call_close_send(&r.r_conn, &r.r_call);
	rmctl_conn_wait(&r.r_conn, rmctl_call_finished,
	    now_ms() + o->o_timeout_ms, "the end of the session");
	rmctl_call_check(&r.r_conn, &r.r_call);
	rmctl_call_free(&r.r_call);
	rmctl_conn_close(&r.r_conn);
	free(r.r_value);
	return 0;
}
