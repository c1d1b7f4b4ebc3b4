/*
 * HTTP/2 on libevent through nghttp2: connections and streams. gRPC
 * meaning is given to streams by front_grpc.c; this file only moves frames.
 */
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/string.h>

#include "front.h"
#include "log.h"
#include "util.h"

#define H2_STREAM_WINDOW (1024 * 1024)
#define H2_CONN_WINDOW (16 * 1024 * 1024)
#define H2_OUT_HIGH (256 * 1024)
#define H2_IO_MAX (256 * 1024)
/* Times one flush may refill H2_OUT_HIGH that the socket took whole. */
#define H2_FLUSH_ROUNDS 4
/* A closing connection gets this long to send its last frames (GOAWAY). */
#define H2_LINGER_MS 2000
/* A client still sending this long after its response ended is reset. */
#define H2_RST_AFTER_MS 1000
/*
 * Connections over --max-connections: each RPC on one is refused with
 * RESOURCE_EXHAUSTED, and the first refusal ends it (GOAWAY). At most this
 * many are held so, each for at most H2_REFUSED_MS; more are closed at
 * once, and their clients see the connection fail.
 */
#define H2_REFUSING_MAX 64
#define H2_REFUSED_MS 2000

/* One client connection: its HTTP/2 session and its streams. */
struct conn {
	TAILQ_ENTRY(conn) c_entry;
	struct bufferevent *c_bev;
	nghttp2_session *c_h2;
	struct streamlist c_streams;
	struct event *c_flush_ev; /* deferred send */
	struct event *c_timer; /* handshake, then idle timeout */
	int c_handshaken; /* the client's SETTINGS arrived */
	uint64_t c_ping_at; /* token bucket for PINGs */
	double c_ping_tokens;
	size_t c_hdr_bytes; /* header list size of the stream being read */
	size_t c_partial; /* bytes held in unfinished messages */
	size_t c_out; /* response bytes queued on its streams (str_out) */
	int c_out_waiting; /* streams wait for c_out to fall (conn_out_room) */
	char c_peer[80];
	int c_dead;
	int c_direct; /* cleartext: written by front_write_now */
	int c_local; /* from a loopback address: the client is on this host */
	int c_refused; /* over --max-connections: RPCs refused, then closed */
	int c_told; /* refused, and GOAWAY queued: lingers (conn_linger) */
	uint32_t c_max_streams; /* the MAX_CONCURRENT_STREAMS sent it */
	int c_said_streams; /* a Session's headers went out at its start */
};
TAILQ_HEAD(connlist, conn);

static struct connlist conns = TAILQ_HEAD_INITIALIZER(conns);
static unsigned conns_open; /* in conns and not refused */
static int streams_open; /* on every connection */
static unsigned conns_refusing; /* refused, saying so */

static void conn_free(struct conn *);
static void conn_schedule(struct conn *);
static void conn_arm_timer(struct conn *);
static void conn_close_soon(struct conn *);
static void conn_linger(struct conn *);
static void conn_out_room(struct conn *);

/*
 * Keep c_out: the connection's responses that the front makes itself, in
 * its streams' str_out. A session's are bounded by its own flow control,
 * and a slow reader of one must not hold back its siblings' Echo.
 */
static void
stream_out_cb(
    struct evbuffer *out, const struct evbuffer_cb_info *info, void *arg)
{
	struct stream *s = arg;

	if (s->str_rpc == RPC_SESSION)
		return;
	s->str_conn->c_out += info->n_added;
	s->str_conn->c_out -= info->n_deleted;
}

static struct stream *
stream_new(struct conn *c, int32_t id)
{
	struct stream *s = xcalloc(1, sizeof(*s));

	s->str_conn = c;
	s->str_id = id;
	s->str_bad_ct = 1; /* until a content-type header says otherwise */
	s->str_out = evbuffer_new();
	if (s->str_out == NULL ||
	    evbuffer_add_cb(s->str_out, stream_out_cb, s) == NULL)
		fatal("evbuffer_new");
	deframer_init(&s->str_in, DEFRAME_GRPC, front_conf.fc_max_message);
	TAILQ_INSERT_TAIL(&c->c_streams, s, str_entry);
	streams_open++;
	return s;
}

/* Forget the stream's authorization header, its bytes wiped first. */
static void
stream_drop_auth(struct stream *s)
{
	if (s->str_auth != NULL)
		explicit_bzero(s->str_auth, strlen(s->str_auth));
	free(s->str_auth);
	s->str_auth = NULL;
}

/* Detach a stream from gRPC and its session, then free it. */
static void
stream_free(struct stream *s)
{
	struct conn *c = s->str_conn;

	front_grpc_stream_closed(s);
	/* A reset stream's held-back bytes still count against the
	 * connection window: give them back there. */
	if (s->str_unconsumed > 0 && !s->str_conn->c_dead)
		nghttp2_session_consume_connection(
		    s->str_conn->c_h2, s->str_unconsumed);
	TAILQ_REMOVE(&s->str_conn->c_streams, s, str_entry);
	s->str_conn->c_partial -= s->str_partial;
	if (s->str_rpc != RPC_SESSION)
		s->str_conn->c_out -= evbuffer_get_length(s->str_out);
	if (s->str_deadline)
		event_free(s->str_deadline);
	if (s->str_rst != NULL)
		event_free(s->str_rst);
	deframer_free(&s->str_in);
	evbuffer_free(s->str_out);
	free(s->str_message);
	free(s->str_path);
	stream_drop_auth(s);
	free(s->str_owner);
	free(s);
	streams_open--;
	/* Its responses may have been what its siblings wait for. */
	if (!c->c_dead)
		conn_out_room(c);
	front_stream_freed();
}

/* nghttp2 wants to write: queue into the bufferevent, pausing when full. */
static ssize_t
h2_send_cb(
    nghttp2_session *h2, const uint8_t *data, size_t len, int flags, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *out = bufferevent_get_output(c->c_bev);

	if (evbuffer_get_length(out) >= H2_OUT_HIGH)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (evbuffer_add(out, data, len) == -1)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	return (ssize_t)len;
}

static int
h2_begin_headers_cb(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
	struct conn *c = arg;
	struct stream *s;

	c->c_hdr_bytes = 0;
	if (frame->hd.type != NGHTTP2_HEADERS ||
	    frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	s = stream_new(c, frame->hd.stream_id);
	nghttp2_session_set_stream_user_data(h2, frame->hd.stream_id, s);
	c->c_hdr_bytes = 0;
	return 0;
}

/* Record the request headers that gRPC cares about. */
static int
h2_header_cb(nghttp2_session *h2, const nghttp2_frame *frame,
    const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen,
    uint8_t flags, void *arg)
{
	struct conn *c = arg;
	struct stream *s;
	char buf[32];

	if (frame->hd.type != NGHTTP2_HEADERS)
		return 0;
	/* --max-header-list-size, counted as HTTP/2 does (RFC 9113 6.5.2):
	 * past it, the stream is reset (an HPACK bomb expands here). */
	c->c_hdr_bytes += namelen + valuelen + 32;
	if (c->c_hdr_bytes > front_conf.fc_max_header_list)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
	if (s == NULL)
		return 0;
	if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
		s->str_rpc = front_grpc_route((const char *)value, valuelen);
		free(s->str_path);
		s->str_path = strndup(
		    (const char *)value, valuelen > 200 ? 200 : valuelen);
	} else if (namelen == 7 && memcmp(name, ":method", 7) == 0)
		s->str_bad_method = !(
		    valuelen == 4 && memcmp(value, "POST", 4) == 0);
	else if (namelen == 12 && memcmp(name, "content-type", 12) == 0)
		s->str_bad_ct = !(valuelen >= 16 &&
		    memcmp(value, "application/grpc", 16) == 0 &&
		    (valuelen == 16 || value[16] == '+' || value[16] == ';'));
	else if (namelen == 13 && memcmp(name, "authorization", 13) == 0) {
		/* All of it, or the token is compared cut short; nghttp2
		 * refuses a NUL in a value, and "" matches no token. */
		stream_drop_auth(s);
		s->str_bad_auth = 0;
		s->str_auth = memchr(value, '\0', valuelen) != NULL
		    ? xstrdup("")
		    : xstrndup((const char *)value, valuelen);
	} else if (namelen == 13 && memcmp(name, "grpc-encoding", 13) == 0) {
		s->str_encoded = !(
		    valuelen == 8 && memcmp(value, "identity", 8) == 0);
	} else if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
		if (valuelen >= sizeof(buf) ||
		    (memcpy(buf, value, valuelen), buf[valuelen] = '\0',
		        front_grpc_parse_timeout(buf, &s->str_timeout_ms) ==
		            -1)) {
			s->str_timeout_ms = 0;
			s->str_bad_timeout = 1;
		}
	}
	return 0;
}

/*
 * A field that RFC 9113 forbids and nghttp2 asks about (8.2.1: whitespace
 * at either end of a value, a control character; an upper-case name or a
 * bad pseudo-header it resets by itself). nghttp2 would reset the stream
 * (PROTOCOL_ERROR), which a client reports without a reason. An
 * authorization header so spelt (a token pasted with its newline or a
 * space) is answered instead: UNAUTHENTICATED, saying what is wrong
 * (front_grpc.c). Any other such field resets the stream, as before, and
 * the debug log names it. Both count against --max-header-list-size.
 */
static int
h2_invalid_header_cb(nghttp2_session *h2, const nghttp2_frame *frame,
    const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen,
    uint8_t flags, void *arg)
{
	struct conn *c = arg;
	struct stream *s = NULL;

	(void)value;
	(void)flags;
	c->c_hdr_bytes += namelen + valuelen + 32;
	if (c->c_hdr_bytes > front_conf.fc_max_header_list)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	if (frame->hd.type == NGHTTP2_HEADERS &&
	    frame->headers.cat == NGHTTP2_HCAT_REQUEST)
		s = nghttp2_session_get_stream_user_data(
		    h2, frame->hd.stream_id);
	if (s != NULL && namelen == 13 &&
	    memcmp(name, "authorization", 13) == 0) {
		stream_drop_auth(s);
		s->str_bad_auth = 1;
		return 0;
	}
	log_debug("%s: stream %d reset: a header field that HTTP/2 forbids "
	          "(name \"%.*s\")",
	    c->c_peer, frame->hd.stream_id, namelen > 64 ? 64 : (int)namelen,
	    (const char *)name);
	return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/*
 * The keepalive policy: PINGs are answered up to --max-ping-rate per second
 * sustained (a burst of twice that); a flood ends the connection with
 * ENHANCE_YOUR_CALM.
 */
static int
conn_ping_allowed(struct conn *c)
{
	uint64_t now = now_ms();
	double rate = front_conf.fc_ping_rate;

	c->c_ping_tokens += (double)(now - c->c_ping_at) * rate / 1000.0;
	if (c->c_ping_tokens > 2 * rate)
		c->c_ping_tokens = 2 * rate;
	c->c_ping_at = now;
	if (c->c_ping_tokens < 1)
		return 0;
	c->c_ping_tokens -= 1;
	return 1;
}

/*
 * Connection-level frames: the handshake, PINGs; then the idle clock, which
 * only requests restart (HEADERS, DATA), as gRPC's MAX_CONNECTION_IDLE: a
 * client's keepalive PINGs do not keep a connection without calls.
 */
static int
conn_frame(struct conn *c, const nghttp2_frame *frame)
{
	int restart = frame->hd.type == NGHTTP2_HEADERS ||
	    frame->hd.type == NGHTTP2_DATA;

	if (frame->hd.type == NGHTTP2_SETTINGS &&
	    !(frame->hd.flags & NGHTTP2_FLAG_ACK) && !c->c_handshaken)
		c->c_handshaken = restart = 1;
	if (frame->hd.type == NGHTTP2_PING &&
	    !(frame->hd.flags & NGHTTP2_FLAG_ACK) && !conn_ping_allowed(c)) {
		log_info("%s: PING flood; closing (--max-ping-rate %u)",
		    c->c_peer, front_conf.fc_ping_rate);
		/* "too_many_pings" tells a gRPC client to send keepalive
		 * PINGs half as often (gRFC A8); the second GOAWAY, which
		 * says no more, closes the connection once out. */
		nghttp2_submit_goaway(c->c_h2, NGHTTP2_FLAG_NONE,
		    nghttp2_session_get_last_proc_stream_id(c->c_h2),
		    NGHTTP2_ENHANCE_YOUR_CALM,
		    (const uint8_t *)"too_many_pings",
		    sizeof("too_many_pings") - 1);
		nghttp2_session_terminate_session(
		    c->c_h2, NGHTTP2_ENHANCE_YOUR_CALM);
		return -1;
	}
	if (restart)
		conn_arm_timer(c);
	return 0;
}

static int
h2_frame_recv_cb(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
	struct stream *s;

	if (conn_frame(arg, frame) == -1)
		return 0;
	if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA)
		return 0;
	s = nghttp2_session_get_stream_user_data(h2, frame->hd.stream_id);
	if (s == NULL)
		return 0;
	if (frame->hd.type == NGHTTP2_HEADERS &&
	    frame->headers.cat == NGHTTP2_HCAT_REQUEST)
		front_grpc_headers_done(s);
	if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
	    !s->str_remote_closed) {
		s->str_remote_closed = 1;
		front_grpc_remote_closed(s);
	}
	return 0;
}

static int
h2_data_chunk_cb(nghttp2_session *h2, uint8_t flags, int32_t id,
    const uint8_t *data, size_t len, void *arg)
{
	struct stream *s = nghttp2_session_get_stream_user_data(h2, id);

	if (s == NULL) {
		nghttp2_session_consume(h2, id, len);
		return 0;
	}
	front_client_local(s->str_conn->c_local);
	front_traffic(FRONT_FROM_CLIENT); /* a message: it asks for an answer */
	if (front_grpc_data(s, data, len) == -1)
		log_debug("%s: stream %d data refused", __func__, id);
	return 0;
}

static int
h2_stream_close_cb(nghttp2_session *h2, int32_t id, uint32_t code, void *arg)
{
	struct stream *s = nghttp2_session_get_stream_user_data(h2, id);

	if (s == NULL)
		return 0;
	log_debug("%s: stream %d closed (h2 error %u)", __func__, id, code);
	nghttp2_session_set_stream_user_data(h2, id, NULL);
	if (s->str_conn->c_refused && !s->str_conn->c_told) {
		s->str_conn->c_told = 1; /* its refusal is out: end it */
		nghttp2_submit_goaway(h2, NGHTTP2_FLAG_NONE,
		    nghttp2_session_get_last_proc_stream_id(h2),
		    NGHTTP2_NO_ERROR, NULL, 0);
		conn_schedule(s->str_conn);
	}
	stream_free(s);
	return 0;
}

/* H2_RST_AFTER_MS after its response, the client still sends: reset. */
static void
stream_rst_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct stream *s = arg;
	struct conn *c = s->str_conn;

	if (c->c_dead ||
	    nghttp2_session_get_stream_remote_close(c->c_h2, s->str_id) != 0)
		return;
	nghttp2_submit_rst_stream(
	    c->c_h2, NGHTTP2_FLAG_NONE, s->str_id, NGHTTP2_NO_ERROR);
	conn_schedule(c);
}

/*
 * The response ended (trailers, or a bare HTTP error) while the client was
 * still sending: unless it half-closes soon, tell it to stop, as RFC 9113
 * 8.1 allows, so that the stream does not wait half-closed for as long as
 * the client likes. Not at once: some HTTP/2 client libraries report a
 * reset that comes before they have read the trailers instead of the
 * status.
 */
static int
h2_frame_send_cb(nghttp2_session *h2, const nghttp2_frame *frame, void *arg)
{
	int32_t id = frame->hd.stream_id;
	struct stream *s;

	if ((frame->hd.type != NGHTTP2_HEADERS &&
	        frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM) ||
	    nghttp2_session_get_stream_remote_close(h2, id) != 0 ||
	    (s = nghttp2_session_get_stream_user_data(h2, id)) == NULL ||
	    s->str_rst != NULL)
		return 0;
	s->str_rst = evtimer_new(front_base, stream_rst_cb, s);
	if (s->str_rst == NULL)
		fatalx("%s: evtimer_new", __func__);
	front_timer_add(s->str_rst, H2_RST_AFTER_MS);
	return 0;
}

/*
 * Is the connection holding too many response bytes for its client to
 * get more credit on a stream the front answers itself? If so, the
 * caller's stream is to wait, and conn_out_room will wake it.
 */
int
front_conn_out_full(struct conn *c)
{
	if (c->c_out < FRONT_CONN_OUT_HIGH)
		return 0;
	c->c_out_waiting = 1;
	return 1;
}

/*
 * Responses left, or a stream went: once the connection is under its
 * bound, the streams that waited may go on. The same bound as the test
 * above, so that no stream waits on a connection that would take it.
 */
static void
conn_out_room(struct conn *c)
{
	struct stream *s;

	if (!c->c_out_waiting || c->c_out >= FRONT_CONN_OUT_HIGH)
		return;
	c->c_out_waiting = 0;
	TAILQ_FOREACH (s, &c->c_streams, str_entry)
		front_grpc_consume(s);
}

/* Feed the response body from str_out; end with trailers once finished. */
static ssize_t
h2_data_read_cb(nghttp2_session *h2, int32_t id, uint8_t *buf, size_t len,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct stream *s = src->ptr;
	size_t have = evbuffer_get_length(s->str_out);
	nghttp2_nv trailers[2];
	char status[16];
	int n;

	if (have > 0) {
		/* The bytes move in h2_send_data_cb, without a copy. */
		*flags |= NGHTTP2_DATA_FLAG_NO_COPY;
		return (ssize_t)(have < len ? have : len);
	}
	if (!s->str_finished)
		return NGHTTP2_ERR_DEFERRED;
	snprintf(status, sizeof(status), "%d", s->str_status);
	trailers[0] = (nghttp2_nv){(uint8_t *)"grpc-status", (uint8_t *)status,
	    11, strlen(status), NGHTTP2_NV_FLAG_NONE};
	n = 1;
	if (s->str_message != NULL && *s->str_message != '\0') {
		trailers[1] = (nghttp2_nv){(uint8_t *)"grpc-message",
		    (uint8_t *)s->str_message, 12, strlen(s->str_message),
		    NGHTTP2_NV_FLAG_NONE};
		n = 2;
	}
	*flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
	if (nghttp2_submit_trailer(h2, id, trailers, (size_t)n) != 0)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	return 0;
}

/*
 * A DATA frame of a response: its 9-byte header, then its payload moved
 * from the stream's str_out to the connection's output buffer, whole
 * evbuffer chains moving without a copy.
 */
static int
h2_send_data_cb(nghttp2_session *h2, nghttp2_frame *frame,
    const uint8_t *framehd, size_t length, nghttp2_data_source *src, void *arg)
{
	struct conn *c = arg;
	struct stream *s = src->ptr;
	struct evbuffer *out = bufferevent_get_output(c->c_bev);

	if (evbuffer_get_length(out) >= H2_OUT_HIGH)
		return NGHTTP2_ERR_WOULDBLOCK;
	if (evbuffer_add(out, framehd, 9) == -1 ||
	    evbuffer_remove_buffer(s->str_out, out, length) != (int)length)
		return NGHTTP2_ERR_CALLBACK_FAILURE;
	front_grpc_drained(s);
	conn_out_room(c);
	return 0;
}

/*
 * Submit the response headers: 200 with a body, or a bare HTTP error. A
 * session's say how many streams this connection takes at once
 * (remotemedia-max-streams): a client that opens a burst of sessions on a
 * new connection learns there, one round trip after its first stream
 * (front_h2_session_started), how many more that connection takes; the
 * others would wait, unsent, in its own library for a stream to end.
 */
static void
stream_start(struct stream *s)
{
	nghttp2_session *h2 = s->str_conn->c_h2;
	nghttp2_data_provider prd;
	nghttp2_nv hdrs[4];
	char status[8], streams[16];
	size_t n = 3;

	s->str_started = 1;
	if (s->str_http_status) {
		snprintf(status, sizeof(status), "%d", s->str_http_status);
		hdrs[0] = (nghttp2_nv){(uint8_t *)":status", (uint8_t *)status,
		    7, strlen(status), NGHTTP2_NV_FLAG_NONE};
		/* A 405 says which method would do (RFC 9110 15.5.6). */
		hdrs[1] = (nghttp2_nv){(uint8_t *)"allow", (uint8_t *)"POST", 5,
		    4, NGHTTP2_NV_FLAG_NONE};
		nghttp2_submit_response(h2, s->str_id, hdrs,
		    s->str_http_status == 405 ? 2 : 1, NULL);
		return;
	}
	hdrs[0] = (nghttp2_nv){
	    (uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE};
	hdrs[1] = (nghttp2_nv){(uint8_t *)"content-type",
	    (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE};
	hdrs[2] = (nghttp2_nv){(uint8_t *)"grpc-accept-encoding",
	    (uint8_t *)"identity", 20, 8, NGHTTP2_NV_FLAG_NONE};
	if (s->str_rpc == RPC_SESSION) {
		/* What SETTINGS said, which the client may not have
		 * acknowledged yet (nghttp2 knows acknowledged ones only). */
		snprintf(
		    streams, sizeof(streams), "%u", s->str_conn->c_max_streams);
		hdrs[n++] = (nghttp2_nv){(uint8_t *)"remotemedia-max-streams",
		    (uint8_t *)streams, 23, strlen(streams),
		    NGHTTP2_NV_FLAG_NONE};
	}
	prd.source.ptr = s;
	prd.read_callback = h2_data_read_cb;
	nghttp2_submit_response(h2, s->str_id, hdrs, n, &prd);
}

/*
 * There is something new to send on this stream: wake nghttp2 up. The send
 * itself runs from the loop, never nested in a caller that still holds the
 * stream, because sending can close and free it.
 */
void
front_h2_resume(struct stream *s)
{
	if (!s->str_started)
		stream_start(s);
	else
		nghttp2_session_resume_data(s->str_conn->c_h2, s->str_id);
	conn_schedule(s->str_conn);
}

/* Give received bytes back to the peer's flow-control window. */
void
front_h2_consume(struct stream *s, size_t n)
{
	if (n == 0)
		return;
	nghttp2_session_consume(s->str_conn->c_h2, s->str_id, n);
	conn_schedule(s->str_conn); /* the WINDOW_UPDATE must go out */
}

/* Handshake not done in time, or idle with no stream: close. */
static void
conn_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct conn *c = arg;
	struct stream *s;

	if (c->c_dead || c->c_refused) {
		log_debug("%s: %s within %d ms; dropping", c->c_peer,
		    c->c_dead ? "output not taken" : "refused, not done",
		    c->c_dead ? H2_LINGER_MS : H2_REFUSED_MS);
		conn_free(c);
		return;
	}
	if (!c->c_handshaken) {
		log_info("%s: no HTTP/2 handshake within %llu ms; closing",
		    c->c_peer, (unsigned long long)front_conf.fc_handshake_ms);
		c->c_dead = 1;
		conn_free(c);
		return;
	}
	TAILQ_FOREACH (s, &c->c_streams, str_entry)
		if (s->str_session != NULL) {
			conn_arm_timer(
			    c); /* sessions have limits of their own */
			return;
		}
	/* No frame for --idle-timeout, and no session: streams of Health,
	 * Echo or Admin that wait for the client do not keep it open. */
	log_debug("%s: idle%s; closing", c->c_peer,
	    TAILQ_EMPTY(&c->c_streams) ? "" : " with streams but no session");
	nghttp2_session_terminate_session(c->c_h2, NGHTTP2_NO_ERROR);
	conn_schedule(c);
}

/* Arm the handshake timeout, or once handshaken the idle timeout. */
static void
conn_arm_timer(struct conn *c)
{
	uint64_t ms = c->c_handshaken ? front_conf.fc_conn_idle_ms
	                              : front_conf.fc_handshake_ms;

	if (c->c_refused) {
		if (evtimer_pending(c->c_timer, NULL))
			return; /* traffic does not extend it */
		ms = H2_REFUSED_MS;
	}
	front_timer_add(c->c_timer, ms);
}

static void
conn_schedule(struct conn *c)
{
	event_active(c->c_flush_ev, EV_TIMEOUT, 0);
}

static void
conn_flush_cb(evutil_socket_t fd, short ev, void *arg)
{
	front_h2_flush(arg);
}

/*
 * Send what nghttp2 has; free the connection when both sides are done.
 * Called only from the top of a loop callback.
 */
void
front_h2_flush(struct conn *c)
{
	struct evbuffer *out;
	size_t had;
	int i, full;

	out = bufferevent_get_output(c->c_bev);
	for (i = 0; !c->c_dead; i++) {
		had = evbuffer_get_length(out);
		if (nghttp2_session_send(c->c_h2) != 0) {
			log_debug("%s: %s: send failed", __func__, c->c_peer);
			conn_close_soon(c);
		} else if (c->c_told)
			conn_linger(c);
		else if (!nghttp2_session_want_read(c->c_h2) &&
		    !nghttp2_session_want_write(c->c_h2))
			conn_close_soon(c);
		if (!c->c_direct)
			break; /* libevent writes; its callback flushes again */
		/* nghttp2 stops at H2_OUT_HIGH (h2_send_cb) with more to say. */
		full = evbuffer_get_length(out) >= H2_OUT_HIGH &&
		    evbuffer_get_length(out) != had;
		if (front_write_now(c->c_bev) > 0 || !full)
			break; /* the write callback flushes again, or all is out */
		if (i + 1 == H2_FLUSH_ROUNDS) {
			conn_schedule(c); /* the rest after other connections */
			break;
		}
	}
	if (c->c_direct)
		front_write_now(c->c_bev);
	if (c->c_dead && !c->c_told && evbuffer_get_length(out) == 0)
		conn_free(c);
}

/*
 * Write what bev holds now, rather than in a later turn of the loop, which
 * costs an epoll_ctl to watch for writability, an epoll_wait and another
 * epoll_ctl to stop. libevent writes only what the socket would not take
 * (its write callback turns this off again once all is out), and reports
 * a broken socket as usual. Returns the bytes still queued.
 */
size_t
front_write_now(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	int fd = bufferevent_getfd(bev);

	ssize_t n;

	if (evbuffer_get_length(out) == 0 ||
	    (bufferevent_get_enabled(bev) & EV_WRITE))
		return evbuffer_get_length(out);
	/* A bufferevent keeps its output's start frozen but while it writes. */
	evbuffer_unfreeze(out, 1);
	n = fd == -1 ? -1 : evbuffer_write(out, fd);
	evbuffer_freeze(out, 1);
	if (n == -1 && errno != EAGAIN && errno != EINTR) {
		bufferevent_enable(bev, EV_WRITE); /* libevent reports it */
		return evbuffer_get_length(out);
	}
	if (evbuffer_get_length(out) > 0)
		bufferevent_enable(bev, EV_WRITE);
	return evbuffer_get_length(out);
}

/* libevent wrote what front_write_now left: write directly again. */
void
front_write_done(struct bufferevent *bev)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		bufferevent_disable(bev, EV_WRITE);
}

/*
 * The connection is over: read no more, and free it once its output is out
 * (conn_write_cb, front_h2_flush) or H2_LINGER_MS passed (conn_timer_cb),
 * whichever comes first: a peer that never reads cannot keep it.
 */
static void
conn_close_soon(struct conn *c)
{
	if (c->c_dead)
		return;
	conn_linger(c);
	c->c_told = 0; /* nothing more is read: freed once all is out */
	bufferevent_disable(c->c_bev, EV_READ);
}

static void
conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len = evbuffer_get_length(in);
	unsigned char *data = evbuffer_pullup(in, -1);
	ssize_t rv;

	front_traffic(FRONT_CLIENT_BYTES);
	if (c->c_dead) { /* closing: what the peer still sends is dropped */
		evbuffer_drain(in, len);
		return;
	}
	rv = nghttp2_session_mem_recv(c->c_h2, data, len);
	if (rv < 0) {
		log_debug("%s: %s: %s", __func__, c->c_peer,
		    nghttp2_strerror((int)rv));
		evbuffer_drain(in, len);
		conn_close_soon(c);
		front_h2_flush(c);
		return;
	}
	evbuffer_drain(in, (size_t)rv);
	front_h2_flush(c);
}

static void
conn_write_cb(struct bufferevent *bev, void *arg)
{
	struct conn *c = arg;

	if (c->c_dead) {
		/* Called at each write once under the low watermark. */
		if (c->c_direct)
			front_write_done(bev);
		if (!c->c_told &&
		    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
			conn_free(c);
		return;
	}
	if (c->c_direct)
		front_write_done(bev);
	front_h2_flush(c);
}

static void
conn_event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct conn *c = arg;

	if ((events & BEV_EVENT_CONNECTED) && !front_tls_alpn_ok(bev)) {
		log_debug("%s: %s: TLS without ALPN h2; closing", __func__,
		    c->c_peer);
		conn_free(c);
		return;
	}
	if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		log_debug("%s: %s: connection closed %s", __func__, c->c_peer,
		    front_tls_last_error(bev));
		conn_free(c);
	}
}

/* Free a connection and every stream on it. */
static void
conn_free(struct conn *c)
{
	struct stream *s;

	c->c_dead = 1; /* its streams go: nothing is to be sent or consumed */
	TAILQ_REMOVE(&conns, c, c_entry);
	if (c->c_refused)
		conns_refusing--;
	else
		conns_open--;
	while ((s = TAILQ_FIRST(&c->c_streams)) != NULL)
		stream_free(s);
	nghttp2_session_del(c->c_h2);
	bufferevent_free(c->c_bev);
	event_free(c->c_flush_ev);
	event_free(c->c_timer);
	front_conn_closed(c);
	free(c);
}

static void
conn_setup_h2(struct conn *c)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_option *opt;
	nghttp2_settings_entry iv[3] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
	        front_conf.fc_max_streams},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
	    {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
	        front_conf.fc_max_header_list},
	};

	nghttp2_session_callbacks_new(&cbs);
	nghttp2_session_callbacks_set_send_callback(cbs, h2_send_cb);
	nghttp2_session_callbacks_set_send_data_callback(cbs, h2_send_data_cb);
	nghttp2_session_callbacks_set_on_begin_headers_callback(
	    cbs, h2_begin_headers_cb);
	nghttp2_session_callbacks_set_on_header_callback(cbs, h2_header_cb);
	nghttp2_session_callbacks_set_on_invalid_header_callback(
	    cbs, h2_invalid_header_cb);
	nghttp2_session_callbacks_set_on_frame_recv_callback(
	    cbs, h2_frame_recv_cb);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
	    cbs, h2_data_chunk_cb);
	nghttp2_session_callbacks_set_on_stream_close_callback(
	    cbs, h2_stream_close_cb);
	nghttp2_session_callbacks_set_on_frame_send_callback(
	    cbs, h2_frame_send_cb);
	nghttp2_option_new(&opt);
	nghttp2_option_set_no_auto_window_update(opt, 1);
	/* Floods: queued ACKs, SETTINGS entries, and the rapid-reset
	 * pattern (CVE-2023-44487) are bounded by nghttp2 itself. */
	nghttp2_option_set_max_outbound_ack(opt, 1000);
	nghttp2_option_set_max_settings(opt, 32);
	nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
	nghttp2_option_set_max_continuations(opt, 8);
	if (nghttp2_session_server_new2(&c->c_h2, cbs, c, opt) != 0)
		fatalx("nghttp2_session_server_new2");
	nghttp2_option_del(opt);
	nghttp2_session_callbacks_del(cbs);
	/* SETTINGS first, or grpcio waits for them until its deadline. */
	nghttp2_submit_settings(c->c_h2, NGHTTP2_FLAG_NONE, iv, 3);
	c->c_max_streams = front_conf.fc_max_streams;
	nghttp2_session_set_local_window_size(
	    c->c_h2, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW);
}

/* Client connections open now, beside those being refused. */
unsigned
front_h2_conns(void)
{
	return conns_open;
}

/*
 * Over --max-connections: say so once a second at most, and count it.
 * Returns whether the connection may still be told why (its RPCs'
 * RESOURCE_EXHAUSTED).
 */
static int
conn_over_limit(const char *peer)
{
	static uint64_t said_at;
	uint64_t now = now_ms();

	front_metrics_conn_refused();
	if (said_at == 0 || now - said_at >= 1000) {
		said_at = now;
		log_warnx(
		    "%s: refused: %u connections open (--max-connections)",
		    peer, conns_open);
	}
	return conns_refusing < H2_REFUSING_MAX;
}

/*
 * The connection is over, but for what it still sends: a refused one, once
 * its GOAWAY is queued, is read (and what comes dropped) until the client
 * closes, so that the client sees its status and GOAWAY rather than a
 * reset, which closing with its frames unread would send. It goes after
 * H2_LINGER_MS, or a refused one H2_REFUSED_MS after it came, whichever
 * its timer says first. conn_close_soon stops the reading too.
 */
static void
conn_linger(struct conn *c)
{
	if (c->c_dead)
		return;
	c->c_dead = 1;
	if (!c->c_refused || !evtimer_pending(c->c_timer, NULL))
		front_timer_add(c->c_timer, H2_LINGER_MS);
}

/*
 * A Session stream was accepted: the first of its connection gets its
 * response headers now, which say the connection's bound of streams
 * (stream_start). A client learns it there, a round trip after its first
 * stream and before any Ready. The others' headers go with their first
 * message: at once, they would cost a client that opens one session after
 * another a wake-up and a read each.
 */
void
front_h2_session_started(struct stream *s)
{
	if (s->str_conn->c_said_streams)
		return;
	s->str_conn->c_said_streams = 1;
	front_h2_resume(s);
}

/* Whether the stream's connection is over --max-connections. */
int
front_h2_refused(const struct stream *s)
{
	return s->str_conn->c_refused;
}

/* Take a new TCP connection: no Nagle, an nghttp2 session, SETTINGS. */
struct conn *
front_h2_accept(int fd, const char *peer, int local)
{
	struct conn *c;
	int one = 1, refused = conns_open >= front_conf.fc_max_conns;

	if (refused && !conn_over_limit(peer)) {
		close(fd);
		return NULL;
	}
	c = xcalloc(1, sizeof(*c));
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == -1)
		log_debug("%s: TCP_NODELAY: %s", __func__, strerror(errno));
	TAILQ_INIT(&c->c_streams);
	strlcpy(c->c_peer, peer, sizeof(c->c_peer));
	if ((c->c_bev = front_tls_bufferevent(fd)) == NULL) {
		log_warnx("%s: cannot set up the connection", peer);
		close(fd);
		free(c);
		return NULL;
	}
	/* libevent moves 16 KiB per read or write by default: a 1 MiB value
	 * would cost 64 writes, each waking the peer. */
	bufferevent_set_max_single_read(c->c_bev, H2_IO_MAX);
	bufferevent_set_max_single_write(c->c_bev, H2_IO_MAX);
	c->c_flush_ev = event_new(front_base, -1, 0, conn_flush_cb, c);
	c->c_timer = evtimer_new(front_base, conn_timer_cb, c);
	c->c_ping_at = now_ms();
	c->c_ping_tokens = 2.0 * front_conf.fc_ping_rate;
	c->c_local = local;
	if ((c->c_refused = refused))
		conns_refusing++;
	else
		conns_open++;
	conn_arm_timer(c);
	TAILQ_INSERT_TAIL(&conns, c, c_entry);
	conn_setup_h2(c);
	bufferevent_setcb(
	    c->c_bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
	bufferevent_setwatermark(c->c_bev, EV_WRITE, H2_OUT_HIGH / 2, 0);
	/* TLS writes go through OpenSSL: libevent does them all. A new
	 * bufferevent has EV_WRITE on. */
	c->c_direct = !front_tls_enabled();
	bufferevent_enable(c->c_bev, EV_READ | EV_WRITE);
	if (c->c_direct)
		bufferevent_disable(c->c_bev, EV_WRITE);
	front_h2_flush(c);
	log_debug("%s: connection from %s", __func__, peer);
	return c;
}

/* Tell every client that no new streams will be accepted. */
/*
 * The drain's GOAWAYs (RFC 9113 6.8): first a notice that refuses no stream
 * yet (last stream id 2^31-1), so that streams already on their way are
 * still taken (a Session gets UNAVAILABLE, Health NOT_SERVING); then the
 * final one, naming the last stream taken, which streams up to it may
 * outlive. now: send at once (from the top of a loop callback).
 */
void
front_h2_goaway_all(int final, int now)
{
	struct conn *c, *tmp;

	TAILQ_FOREACH_SAFE (c, &conns, c_entry, tmp) {
		if (!final)
			nghttp2_submit_shutdown_notice(c->c_h2);
		else
			nghttp2_submit_goaway(c->c_h2, NGHTTP2_FLAG_NONE,
			    nghttp2_session_get_last_proc_stream_id(c->c_h2),
			    NGHTTP2_NO_ERROR, NULL, 0);
		if (now)
			front_h2_flush(c);
		else
			conn_schedule(c);
	}
}

/*
 * SIGHUP raised --max-streams: tell every connection, so that the streams
 * a connection takes are at least what the Ready of a session on it says
 * (max_streams), whenever it was opened.
 */
void
front_h2_settings_all(void)
{
	struct conn *c;
	nghttp2_settings_entry iv[1] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
	        front_conf.fc_max_streams},
	};

	TAILQ_FOREACH (c, &conns, c_entry) {
		if (c->c_refused || c->c_dead)
			continue;
		nghttp2_submit_settings(c->c_h2, NGHTTP2_FLAG_NONE, iv, 1);
		c->c_max_streams = front_conf.fc_max_streams;
		conn_schedule(c);
	}
}

/* Streams open on every connection. */
int
front_h2_streams(void)
{
	return streams_open;
}

/*
 * The drain's final GOAWAY is out: end the streams that no session ends
 * (an Echo or Health stream that waits for its client) with UNAVAILABLE,
 * or reset one whose request never got past its headers, so that the
 * server does not wait out its grace for them.
 */
void
front_h2_end_streams(const char *msg)
{
	struct conn *c;
	struct stream *s;

	TAILQ_FOREACH (c, &conns, c_entry) {
		TAILQ_FOREACH (s, &c->c_streams, str_entry) {
			if (s->str_rpc == RPC_SESSION || s->str_finished)
				continue;
			if (s->str_rpc == RPC_NONE)
				nghttp2_submit_rst_stream(c->c_h2,
				    NGHTTP2_FLAG_NONE, s->str_id,
				    NGHTTP2_CANCEL);
			else
				front_grpc_finish(s, GRPC_UNAVAILABLE, msg);
		}
		conn_schedule(c);
	}
}

void
front_h2_free_all(void)
{
	struct conn *c;

	while ((c = TAILQ_FIRST(&conns)) != NULL)
		conn_free(c);
}

/* The client's address, for logs and the Admin service. */
const char *
front_conn_peer(const struct conn *c)
{
	return c->c_peer;
}

/*
 * Account a stream's bytes held in unfinished messages going from old to
 * now: 0 if the connection stays within FRONT_CONN_PARTIAL_MAX, else -1,
 * and the stream then holds none.
 */
int
front_conn_hold(struct conn *c, size_t old, size_t now)
{
	c->c_partial = c->c_partial - old + now;
	if (c->c_partial <= FRONT_CONN_PARTIAL_MAX)
		return 0;
	c->c_partial -= now;
	return -1;
}
