/*
 * gRPC on an HTTP/2 stream: routing, content-type and deadline checks,
 * message framing, the Echo and Health services, and the ending trailers.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "remotemedia.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

#define PATH_SESSION "/remotemedia.v1.RemoteExecution/Session"
#define PATH_ECHO "/remotemedia.v1.RemoteExecution/Echo"
#define PATH_HEALTH "/grpc.health.v1.Health/Check"
#define PATH_ADMIN "/remotemedia.v1.Admin/"
/* A HealthCheckRequest only names a service. */
#define HEALTH_MAX_MESSAGE 1024

/* Map a :path to the RPC it names. */
enum rpc_kind
front_grpc_route(const char *path, size_t len)
{
	if (len == strlen(PATH_SESSION) && memcmp(path, PATH_SESSION, len) == 0)
		return RPC_SESSION;
	if (len == strlen(PATH_ECHO) && memcmp(path, PATH_ECHO, len) == 0)
		return RPC_ECHO;
	if (len == strlen(PATH_HEALTH) && memcmp(path, PATH_HEALTH, len) == 0)
		return RPC_HEALTH;
	if (len > strlen(PATH_ADMIN) &&
	    memcmp(path, PATH_ADMIN, strlen(PATH_ADMIN)) == 0) {
		path += strlen(PATH_ADMIN);
		len -= strlen(PATH_ADMIN);
		if (len == 4 && memcmp(path, "Info", 4) == 0)
			return RPC_ADMIN_INFO;
		if (len == 12 && memcmp(path, "ListSessions", 12) == 0)
			return RPC_ADMIN_LIST;
		if (len == 10 && memcmp(path, "EndSession", 10) == 0)
			return RPC_ADMIN_END;
	}
	return RPC_UNKNOWN;
}

/* Parse a grpc-timeout value: up to 8 digits and a unit (H M S m u n). */
int
front_grpc_parse_timeout(const char *v, uint64_t *ms)
{
	uint64_t n = 0;
	size_t i, len = strlen(v);

	if (len < 2 || len > 9)
		return -1;
	for (i = 0; i + 1 < len; i++) {
		if (!isdigit((unsigned char)v[i]))
			return -1;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	switch (v[len - 1]) {
	case 'H':
		*ms = n * 3600 * 1000;
		break;
	case 'M':
		*ms = n * 60 * 1000;
		break;
	case 'S':
		*ms = n * 1000;
		break;
	case 'm':
		*ms = n;
		break;
	case 'u':
		*ms = (n + 999) / 1000;
		break;
	case 'n':
		*ms = (n + 999999) / 1000000;
		break;
	default:
		return -1;
	}
	if (*ms == 0)
		*ms = 1;
	return 0;
}

/* Percent-encode a grpc-message value, as the gRPC spec asks. */
char *
front_grpc_percent_encode(const char *msg)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i, o = 0, len = strlen(msg);
	char *out = xmalloc(len * 3 + 1);
	unsigned char ch;

	for (i = 0; i < len; i++) {
		ch = (unsigned char)msg[i];
		/* A field value must not begin or end with a space (RFC 9113
		 * 8.2.1): such an edge is encoded too. */
		if (ch >= 0x20 && ch <= 0x7e && ch != '%' &&
		    !(ch == ' ' && (i == 0 || i == len - 1))) {
			out[o++] = (char)ch;
		} else {
			out[o++] = '%';
			out[o++] = hex[ch >> 4];
			out[o++] = hex[ch & 0xf];
		}
	}
	out[o] = '\0';
	return out;
}

/* Decide the stream's status; the trailers go once str_out has drained. */
void
front_grpc_finish(struct stream *s, int code, const char *msg)
{
	if (s->str_finished)
		return;
	s->str_finished = 1;
	s->str_status = code;
	s->str_message = front_grpc_percent_encode(msg ? msg : "");
	/* What was held back for the sink is dropped: give the credit back. */
	front_h2_consume(s, s->str_unconsumed);
	s->str_unconsumed = 0;
	if (code != GRPC_OK)
		log_debug("%s: stream %d: status %d: %s", __func__, s->str_id,
		    code, msg ? msg : "");
	front_h2_resume(s);
}

/* Queue one response message, gRPC-framed. */
int
front_grpc_send(struct stream *s, const uint8_t *msg, size_t len)
{
	uint8_t hdr[FRAME_HDR_LEN];

	if (s->str_finished || s->str_http_status)
		return -1;
	frame_grpc_header(hdr, (uint32_t)len);
	if (evbuffer_add(s->str_out, hdr, sizeof(hdr)) == -1 ||
	    evbuffer_add(s->str_out, msg, len) == -1)
		fatalx("%s: evbuffer_add", __func__);
	front_h2_resume(s);
	return 0;
}

size_t
front_grpc_pending_out(struct stream *s)
{
	return evbuffer_get_length(s->str_out);
}

static void
stream_deadline_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct stream *s = arg;

	if (s->str_session != NULL)
		front_session_end(s->str_session, GRPC_DEADLINE_EXCEEDED,
		    "deadline exceeded (grpc-timeout)");
	else
		front_grpc_finish(s, GRPC_DEADLINE_EXCEEDED,
		    "deadline exceeded (grpc-timeout)");
}

static int
grpc_is_admin(const struct stream *s)
{
	return s->str_rpc == RPC_ADMIN_INFO || s->str_rpc == RPC_ADMIN_LIST ||
	    s->str_rpc == RPC_ADMIN_END;
}

/* The request headers are complete: accept, refuse or route the RPC. */
void
front_grpc_headers_done(struct stream *s)
{
	char msgbuf[200];

	if (s->str_bad_method) {
		s->str_http_status = 405;
		front_h2_resume(s);
		return;
	}
	if (s->str_bad_ct) {
		s->str_http_status = 415;
		front_h2_resume(s);
		return;
	}
	if (s->str_rpc == RPC_UNKNOWN || s->str_rpc == RPC_NONE) {
		char msg[300];

		snprintf(msg, sizeof(msg), "unknown method %s",
		    s->str_path ? s->str_path : "(no :path)");
		front_grpc_finish(s, GRPC_UNIMPLEMENTED, msg);
		return;
	}
	if (front_h2_refused(s)) {
		snprintf(msgbuf, sizeof(msgbuf),
		    "too many connections: the server holds %u "
		    "(--max-connections); try again later",
		    front_conf.fc_max_conns);
		front_grpc_finish(s, GRPC_RESOURCE_EXHAUSTED, msgbuf);
		return;
	}
	if (s->str_rpc != RPC_HEALTH && front_auth_enabled()) {
		int idx = front_auth_check(s->str_auth);

		if (idx == -1) {
			front_grpc_finish(s, GRPC_UNAUTHENTICATED,
			    s->str_bad_auth
			        ? "malformed authorization header: HTTP/2 "
			          "forbids whitespace at either end of a "
			          "value, and control characters; send "
			          "'authorization: Bearer TOKEN'"
			        : s->str_auth == NULL
			        ? "missing token: send "
			          "'authorization: Bearer TOKEN'"
			        : "invalid token");
			return;
		}
		s->str_owner = xstrdup(front_auth_name(idx));
		s->str_admin = front_auth_is_admin(idx);
	}
	if (s->str_bad_timeout) {
		/* A deadline that the client meant to set: never run without. */
		front_grpc_finish(s, GRPC_INTERNAL,
		    "malformed grpc-timeout header: write 1 to 8 digits and a "
		    "unit, one of H M S m u n");
		return;
	}
	if (front_draining() && s->str_rpc == RPC_SESSION) {
		front_grpc_finish(
		    s, GRPC_UNAVAILABLE, "the server is shutting down");
		return;
	}
	if (s->str_timeout_ms > 0) {
		s->str_deadline = evtimer_new(
		    front_base, stream_deadline_cb, s);
		front_timer_add(s->str_deadline, s->str_timeout_ms);
	}
	if (s->str_rpc == RPC_SESSION &&
	    front_session_refuse(s->str_owner, msgbuf, sizeof(msgbuf)) == -1) {
		front_metrics_refused();
		front_grpc_finish(s, GRPC_RESOURCE_EXHAUSTED, msgbuf);
		return;
	}
	if (s->str_rpc == RPC_SESSION) {
		/* Values travel in chunks of 1 MiB: a Session message is
		 * never larger than what one worker frame carries. */
		if (s->str_in.df_max > FRONT_SESSION_MAX_MESSAGE)
			s->str_in.df_max = FRONT_SESSION_MAX_MESSAGE;
		s->str_session = front_session_new(s);
		front_h2_session_started(s);
		return;
	}
	/* Health needs no token: it may not make the front hold megabytes. */
	if (s->str_rpc == RPC_HEALTH && s->str_in.df_max > HEALTH_MAX_MESSAGE)
		s->str_in.df_max = HEALTH_MAX_MESSAGE;
	/* Admin requests hold a session id at most. */
	if (grpc_is_admin(s) && s->str_in.df_max > HEALTH_MAX_MESSAGE)
		s->str_in.df_max = HEALTH_MAX_MESSAGE;
	front_h2_resume(s); /* send the response headers now */
}

/* Answer a health check: SERVING for us, NOT_FOUND for other services. */
static void
grpc_health(struct stream *s, const uint8_t *msg, size_t len)
{
	Grpc__Health__V1__HealthCheckRequest *req;
	Grpc__Health__V1__HealthCheckResponse resp =
	    GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	uint8_t buf[16];
	int known;

	req = grpc__health__v1__health_check_request__unpack(NULL, len, msg);
	if (req == NULL) {
		front_grpc_finish(
		    s, GRPC_INVALID_ARGUMENT, "malformed HealthCheckRequest");
		return;
	}
	known = req->service[0] == '\0' ||
	    strcmp(req->service, "remotemedia.v1.RemoteExecution") == 0;
	grpc__health__v1__health_check_request__free_unpacked(req, NULL);
	if (!known) {
		front_grpc_finish(s, GRPC_NOT_FOUND, "unknown service");
		return;
	}
	resp.status = front_draining()
	    ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
	    : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	len = grpc__health__v1__health_check_response__pack(&resp, buf);
	front_grpc_send(s, buf, len);
	front_grpc_finish(s, GRPC_OK, NULL);
}

/* Echo a message back unchanged, once it parses as an EchoMessage. */
static void
grpc_echo(struct stream *s, const uint8_t *msg, size_t len)
{
	Remotemedia__V1__EchoMessage *m;

	m = remotemedia__v1__echo_message__unpack(NULL, len, msg);
	if (m == NULL) {
		front_grpc_finish(
		    s, GRPC_INVALID_ARGUMENT, "malformed EchoMessage");
		return;
	}
	remotemedia__v1__echo_message__free_unpacked(m, NULL);
	front_grpc_send(s, msg, len);
}

/* One complete request message: hand it to its RPC. */
static int
grpc_message_cb(void *arg, uint8_t flag, const uint8_t *msg, size_t len)
{
	struct stream *s = arg;

	if (s->str_finished)
		return 0;
	if (s->str_rpc != RPC_SESSION)
		front_traffic(FRONT_ANSWERED); /* the front answers it itself */
	switch (s->str_rpc) {
	case RPC_ECHO:
		grpc_echo(s, msg, len);
		return 0;
	case RPC_HEALTH:
		grpc_health(s, msg, len);
		return 0;
	case RPC_ADMIN_INFO:
	case RPC_ADMIN_LIST:
	case RPC_ADMIN_END:
		front_admin_call(s, msg, len);
		return 0;
	case RPC_SESSION:
		if (s->str_session == NULL)
			return 0;
		return front_session_client_msg(s->str_session, msg, len);
	default:
		return 0;
	}
}

/* How much the sink of this stream's requests has queued. */
static size_t
grpc_backlog(struct stream *s)
{
	if (s->str_rpc == RPC_SESSION && s->str_session != NULL)
		return front_worker_pending_out(s->str_session);
	return evbuffer_get_length(s->str_out);
}

/*
 * Give back flow-control credit once the sink is below its bound: for the
 * RPCs the front answers itself, the connection's responses too.
 */
void
front_grpc_consume(struct stream *s)
{
	if (s->str_unconsumed == 0 || grpc_backlog(s) >= FRONT_BUF_HIGH)
		return;
	if (s->str_rpc != RPC_SESSION && front_conn_out_full(s->str_conn))
		return;
	front_h2_consume(s, s->str_unconsumed);
	s->str_unconsumed = 0;
}

/* End the stream for a framing error of the request. */
static void
grpc_framing_error(struct stream *s, int err)
{
	char msg[256];
	int code = GRPC_INTERNAL;

	if (err == DEFRAME_E_TOO_BIG) {
		code = GRPC_RESOURCE_EXHAUSTED;
		snprintf(msg, sizeof(msg),
		    "received message of %u bytes is "
		    "larger than the limit of %zu bytes (%s)",
		    get_be32(s->str_in.df_hdr + 1), s->str_in.df_max,
		    s->str_in.df_max == front_conf.fc_max_message
		        ? "--max-message-size"
		        : s->str_rpc == RPC_SESSION
		        ? "a Session message carries at most "
		          "one 1 MiB chunk of a value"
		        : "a Health or Admin request is small");
	} else if (err == DEFRAME_E_COMPRESSED && s->str_encoded) {
		code = GRPC_UNIMPLEMENTED;
		snprintf(msg, sizeof(msg),
		    "compressed messages are not "
		    "supported (grpc-accept-encoding: identity)");
	} else
		snprintf(msg, sizeof(msg), "%s", deframe_strerror(err));
	if (s->str_session != NULL)
		front_session_end(s->str_session, code, msg);
	else
		front_grpc_finish(s, code, msg);
}

/*
 * Keep the connection's count of bytes held in unfinished messages. Past
 * FRONT_CONN_PARTIAL_MAX, the stream that grows it is failed: one client
 * cannot make the front hold a full message on every stream at once.
 */
static int
grpc_partial_account(struct stream *s)
{
	size_t now = s->str_in.df_have;

	if (front_conn_hold(s->str_conn, s->str_partial, now) == 0) {
		s->str_partial = now;
		return 0;
	}
	s->str_partial = 0;
	deframer_free(&s->str_in);
	s->str_in.df_error = DEFRAME_E_TOO_BIG;
	if (s->str_session != NULL)
		front_session_end(s->str_session, GRPC_RESOURCE_EXHAUSTED,
		    "too many bytes held in unfinished messages on this "
		    "connection");
	else
		front_grpc_finish(s, GRPC_RESOURCE_EXHAUSTED,
		    "too many bytes "
		    "held in unfinished messages on this connection");
	return -1;
}

/* A DATA chunk arrived: deframe it and count it for flow control. */
int
front_grpc_data(struct stream *s, const uint8_t *data, size_t len)
{
	int rv = 0;

	s->str_rx += len;
	s->str_unconsumed += len;
	if (!s->str_finished && !s->str_http_status) {
		rv = deframer_feed(&s->str_in, data, len, grpc_message_cb, s);
		if (rv != DEFRAME_OK && rv != DEFRAME_E_CALLBACK)
			grpc_framing_error(s, rv);
		else if (grpc_partial_account(s) == -1)
			rv = DEFRAME_E_TOO_BIG;
	}
	if (s->str_finished || s->str_http_status) {
		front_h2_consume(s, s->str_unconsumed);
		s->str_unconsumed = 0;
	} else
		front_grpc_consume(s);
	return rv == DEFRAME_OK ? 0 : -1;
}

/* Response bytes left str_out: the producer or the reader may go on. */
void
front_grpc_drained(struct stream *s)
{
	if (evbuffer_get_length(s->str_out) > FRONT_BUF_LOW)
		return;
	if (s->str_rpc == RPC_SESSION && s->str_session != NULL)
		front_session_drained(s->str_session);
	front_grpc_consume(s);
}

/* Called by the session when its worker took its bytes. */
void
front_grpc_worker_drained(struct stream *s)
{
	front_grpc_consume(s);
}

/* The client half-closed its side of the stream. */
void
front_grpc_remote_closed(struct stream *s)
{
	if (s->str_finished || s->str_http_status)
		return;
	if (deframer_partial(&s->str_in)) {
		if (s->str_session != NULL)
			front_session_end(s->str_session, GRPC_INTERNAL,
			    "stream ended inside a message");
		else
			front_grpc_finish(
			    s, GRPC_INTERNAL, "stream ended inside a message");
		return;
	}
	switch (s->str_rpc) {
	case RPC_SESSION:
		if (s->str_session != NULL)
			front_session_client_closed(s->str_session);
		break;
	case RPC_HEALTH:
		front_grpc_finish(
		    s, GRPC_INVALID_ARGUMENT, "missing HealthCheckRequest");
		break;
	case RPC_ADMIN_INFO:
	case RPC_ADMIN_LIST:
	case RPC_ADMIN_END:
		front_grpc_finish(s, GRPC_INVALID_ARGUMENT, "missing request");
		break;
	default:
		front_grpc_finish(s, GRPC_OK, NULL);
		break;
	}
}

/* The stream is gone (reset, or closed after our trailers). */
void
front_grpc_stream_closed(struct stream *s)
{
	struct session *ses = s->str_session;

	if (ses == NULL)
		return;
	s->str_session = NULL;
	ses->ses_stream = NULL;
	front_session_client_gone(ses);
}
