/* rmctl's gRPC transport; include/rmctl.h says what it offers. */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>

#include <ctype.h>
#include <err.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "frame.h"
#include "log.h"
#include "rmctl.h"
#include "util.h"

static const char *rmctl_grpc_codes[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

/* Milliseconds to a short human string: 5s, 1500ms. */
static const char *
rmctl_fmt_ms(uint64_t ms)
{
	static char buf[32];

	if (ms % 1000 == 0)
		snprintf(buf, sizeof(buf), "%" PRIu64 "s", ms / 1000);
	else
		snprintf(buf, sizeof(buf), "%" PRIu64 "ms", ms);
	return buf;
}

uint64_t
rmctl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* Make room for n more bytes at the end of a buffer and return it. */
static uint8_t *
rmctl_buf_reserve(struct rmctl_buf *b, size_t n)
{
	size_t left = b->b_len - b->b_off, cap;

	if (b->b_off > 0 && b->b_cap - b->b_len < n) {
		memmove(b->b_data, b->b_data + b->b_off, left);
		b->b_off = 0;
		b->b_len = left;
	}
	if (b->b_cap - b->b_len < n) {
		cap = b->b_cap ? b->b_cap : 4096;
		while (cap - b->b_len < n)
			cap *= 2;
		b->b_data = xrealloc(b->b_data, cap);
		b->b_cap = cap;
	}
	return b->b_data + b->b_len;
}

static void
rmctl_buf_add(struct rmctl_buf *b, const void *p, size_t n)
{
	memcpy(rmctl_buf_reserve(b, n), p, n);
	b->b_len += n;
}

static size_t
rmctl_buf_left(const struct rmctl_buf *b)
{
	return b->b_len - b->b_off;
}

static void
rmctl_buf_free(struct rmctl_buf *b)
{
	free(b->b_data);
	memset(b, 0, sizeof(*b));
}

/* Copy a header value; grpc-message is percent-decoded (%XX). */
static char *
rmctl_hdr_value(const uint8_t *v, size_t len, int decode)
{
	char *s = xmalloc(len + 1), hex[3] = {0};
	size_t i, j;

	for (i = j = 0; i < len; i++) {
		if (decode && v[i] == '%' && i + 2 < len &&
		    isxdigit(v[i + 1]) && isxdigit(v[i + 2])) {
			hex[0] = (char)v[i + 1];
			hex[1] = (char)v[i + 2];
			s[j] = (char)strtoul(hex, NULL, 16);
			if (s[j++] == '\0')
				s[j - 1] = '?'; /* %00 would end the text */
			i += 2;
		} else
			s[j++] = (char)v[i];
	}
	s[j] = '\0';
	return s;
}

/*
 * Replace control characters, in place, so that server text prints on one
 * line and cannot drive the terminal (escape sequences).
 */
const char *
rmctl_printable(char *s)
{
	unsigned char *p = (unsigned char *)s;
	size_t n, i;
	uint32_t c;

	while (*p != '\0') {
		if (*p < 0x80) {
			if (*p < 0x20 || *p == 0x7f)
				*p = '?';
			p++;
			continue;
		}
		/* UTF-8: a whole sequence stays, unless it is a C1 control
		 * (U+0080-U+009F, such as CSI); a broken one is '?'. */
		n = *p >= 0xf0 && *p <= 0xf4   ? 4
		    : *p >= 0xe0 && *p <= 0xef ? 3
		    : *p >= 0xc2 && *p <= 0xdf ? 2
		                               : 0;
		c = n == 2 ? *p & 0x1f : n == 3 ? *p & 0x0f : *p & 0x07;
		for (i = 1; i < n && (p[i] & 0xc0) == 0x80; i++)
			c = c << 6 | (p[i] & 0x3f);
		if (n == 0 || i < n) {
			*p++ = '?';
			continue;
		}
		if (c <= 0x9f)
			memset(p, '?', n);
		p += n;
	}
	return s;
}

/* Parse a status code (HTTP or gRPC): 1 to 3 digits, else -2. */
static int
rmctl_parse_code(const uint8_t *v, size_t len)
{
	int code = 0;
	size_t i;

	if (len == 0 || len > 3)
		return -2;
	for (i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -2;
		code = code * 10 + (v[i] - '0');
	}
	return code;
}

static const char *
rmctl_code_name(int code)
{
	static char buf[32];

	if (code >= 0 &&
	    (size_t)code <
	        sizeof(rmctl_grpc_codes) / sizeof(rmctl_grpc_codes[0]))
		return rmctl_grpc_codes[code];
	snprintf(buf, sizeof(buf), "status %d", code);
	return buf;
}

/* Record the first local error of a call; it ends the call. */
static void __attribute__((format(printf, 2, 3)))
rmctl_call_error(struct rmctl_call *cl, const char *fmt, ...)
{
	va_list ap;

	if (cl->cl_err[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(cl->cl_err, sizeof(cl->cl_err), fmt, ap);
	va_end(ap);
}

void
rmctl_call_init(struct rmctl_call *cl, const char *name, size_t max)
{
	memset(cl, 0, sizeof(*cl));
	cl->cl_name = name;
	deframer_init(&cl->cl_df, DEFRAME_GRPC, max);
	TAILQ_INIT(&cl->cl_msgs);
	cl->cl_grpc_status = -1;
}

void
rmctl_call_free(struct rmctl_call *cl)
{
	struct rmctl_msg *m;

	while ((m = TAILQ_FIRST(&cl->cl_msgs)) != NULL) {
		TAILQ_REMOVE(&cl->cl_msgs, m, m_entry);
		free(m);
	}
	deframer_free(&cl->cl_df);
	rmctl_buf_free(&cl->cl_out);
	free(cl->cl_ctype);
	free(cl->cl_grpc_message);
}

/* Deframer callback: queue one complete response message. */
static int
rmctl_call_message(void *arg, uint8_t flag, const uint8_t *data, size_t len)
{
	struct rmctl_call *cl = arg;
	struct rmctl_msg *m;

	if (cl->cl_nmsgs >=
	    (cl->cl_queue_max ? cl->cl_queue_max : RMCTL_QUEUE_MAX)) {
		rmctl_call_error(
		    cl, "server sent more messages than asked for");
		return -1;
	}
	m = xmalloc(sizeof(*m) + len);
	m->m_len = len;
	memcpy(m->m_data, data, len);
	TAILQ_INSERT_TAIL(&cl->cl_msgs, m, m_entry);
	cl->cl_nmsgs++;
	return 0;
}

/* Take the oldest received message, or NULL. The caller frees it. */
struct rmctl_msg *
rmctl_call_pop(struct rmctl_call *cl)
{
	struct rmctl_msg *m;

	if ((m = TAILQ_FIRST(&cl->cl_msgs)) != NULL) {
		TAILQ_REMOVE(&cl->cl_msgs, m, m_entry);
		cl->cl_nmsgs--;
	}
	return m;
}

int
rmctl_call_finished(const struct rmctl_call *cl)
{
	return cl->cl_remote_ended || cl->cl_closed;
}

int
rmctl_call_readable(const struct rmctl_call *cl)
{
	return !TAILQ_EMPTY(&cl->cl_msgs) || rmctl_call_finished(cl);
}

/* Remember the response headers and trailers that gRPC cares about. */
static void
rmctl_call_header(struct rmctl_call *cl, const uint8_t *name, size_t namelen,
    const uint8_t *value, size_t valuelen)
{
#define RMCTL_IS(s) (namelen == sizeof(s) - 1 && memcmp(name, s, namelen) == 0)
	if (RMCTL_IS(":status"))
		cl->cl_http_status = rmctl_parse_code(value, valuelen);
	else if (RMCTL_IS("content-type")) {
		free(cl->cl_ctype);
		cl->cl_ctype = rmctl_hdr_value(value, valuelen, 0);
	} else if (RMCTL_IS("grpc-status"))
		cl->cl_grpc_status = rmctl_parse_code(value, valuelen);
	else if (RMCTL_IS("grpc-message")) {
		free(cl->cl_grpc_message);
		cl->cl_grpc_message = rmctl_hdr_value(value, valuelen, 1);
	}
#undef RMCTL_IS
}

/* The call that a stream id belongs to, or NULL. */
static struct rmctl_call *
rmctl_conn_call(struct rmctl_conn *cn, int32_t id)
{
	if (cn->cn_call == NULL || cn->cn_call->cl_id != id)
		return NULL;
	return cn->cn_call;
}

/* Pass the headers and trailers of our stream to the call. */
static int
rmctl_on_header(nghttp2_session *session, const nghttp2_frame *frame,
    const uint8_t *name, size_t namelen, const uint8_t *value, size_t valuelen,
    uint8_t flags, void *arg)
{
	struct rmctl_call *cl = rmctl_conn_call(arg, frame->hd.stream_id);

	if (cl != NULL && frame->hd.type == NGHTTP2_HEADERS)
		rmctl_call_header(cl, name, namelen, value, valuelen);
	return 0;
}

/* Whether a content-type is gRPC's: application/grpc, +proto and the like. */
static int
rmctl_is_grpc(const char *ct)
{
	return ct != NULL && strncmp(ct, "application/grpc", 16) == 0 &&
	    (ct[16] == '\0' || ct[16] == '+' || ct[16] == ';');
}

/* Feed response DATA to the call's deframer. */
static int
rmctl_on_data(nghttp2_session *session, uint8_t flags, int32_t id,
    const uint8_t *data, size_t len, void *arg)
{
	struct rmctl_call *cl = rmctl_conn_call(arg, id);
	int rv;

	if (cl == NULL || cl->cl_err[0] != '\0')
		return 0;
	if (cl->cl_http_status != 200) {
		rmctl_call_error(cl, "server answered HTTP status %d, not gRPC",
		    cl->cl_http_status);
		return 0;
	}
	if (!rmctl_is_grpc(cl->cl_ctype)) {
		rmctl_call_error(cl,
		    "server answered content-type %s, not gRPC",
		    cl->cl_ctype ? rmctl_printable(cl->cl_ctype) : "(none)");
		return 0;
	}
	rv = deframer_feed(&cl->cl_df, data, len, rmctl_call_message, cl);
	if (rv != DEFRAME_OK)
		rmctl_call_error(cl, "bad gRPC message from server: %s",
		    deframe_strerror(rv));
	return 0;
}

/* Note END_STREAM, RST_STREAM and GOAWAY as they arrive. */
static int
rmctl_on_frame(nghttp2_session *session, const nghttp2_frame *frame, void *arg)
{
	struct rmctl_conn *cn = arg;
	struct rmctl_call *cl = rmctl_conn_call(cn, frame->hd.stream_id);

	switch (frame->hd.type) {
	case NGHTTP2_GOAWAY:
		cn->cn_goaway = 1;
		cn->cn_goaway_error = frame->goaway.error_code;
		break;
	case NGHTTP2_RST_STREAM:
		if (cl != NULL)
			cl->cl_reset = 1;
		break;
	case NGHTTP2_HEADERS:
	case NGHTTP2_DATA:
		if (cl != NULL && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
			cl->cl_remote_ended = 1;
		break;
	}
	return 0;
}

/* The stream is gone: its error code explains a missing status. */
static int
rmctl_on_close(nghttp2_session *session, int32_t id, uint32_t error, void *arg)
{
	struct rmctl_call *cl = rmctl_conn_call(arg, id);

	if (cl != NULL) {
		cl->cl_closed = 1;
		cl->cl_error = error;
	}
	return 0;
}

/*
 * A GOAWAY with an error that rmctl itself sends: nghttp2 found the server
 * broke the protocol (its reason is the GOAWAY's debug data), which its
 * error callback does not always say.
 */
static int
rmctl_on_send(nghttp2_session *session, const nghttp2_frame *frame, void *arg)
{
	struct rmctl_conn *cn = arg;
	size_t len;

	if (frame->hd.type != NGHTTP2_GOAWAY ||
	    frame->goaway.error_code == NGHTTP2_NO_ERROR ||
	    cn->cn_h2err[0] != '\0')
		return 0;
	len = snprintf(cn->cn_h2err, sizeof(cn->cn_h2err),
	    "rmctl ended the connection (GOAWAY %s)%s",
	    nghttp2_http2_strerror(frame->goaway.error_code),
	    frame->goaway.opaque_data_len > 0 ? ": " : "");
	if (len < sizeof(cn->cn_h2err) - 1) {
		size_t n = frame->goaway.opaque_data_len;

		if (n > sizeof(cn->cn_h2err) - 1 - len)
			n = sizeof(cn->cn_h2err) - 1 - len;
		memcpy(cn->cn_h2err + len, frame->goaway.opaque_data, n);
		cn->cn_h2err[len + n] = '\0';
	}
	rmctl_printable(cn->cn_h2err);
	return 0;
}

/* Keep nghttp2's explanation of a protocol error for the final message. */
static int
rmctl_on_error(
    nghttp2_session *session, int code, const char *msg, size_t len, void *arg)
{
	struct rmctl_conn *cn = arg;

	if (len >= sizeof(cn->cn_h2err))
		len = sizeof(cn->cn_h2err) - 1;
	memcpy(cn->cn_h2err, msg, len);
	cn->cn_h2err[len] = '\0';
	rmctl_printable(cn->cn_h2err); /* it may quote the server's bytes */
	return 0;
}

/* Hand nghttp2 the queued request bytes; defer while there are none. */
static ssize_t
rmctl_read_body(nghttp2_session *session, int32_t id, uint8_t *buf, size_t len,
    uint32_t *flags, nghttp2_data_source *src, void *arg)
{
	struct rmctl_call *cl = src->ptr;
	size_t n = rmctl_buf_left(&cl->cl_out);

	if (n == 0 && !cl->cl_out_eof) {
		cl->cl_deferred = 1;
		return NGHTTP2_ERR_DEFERRED;
	}
	if (n > len)
		n = len;
	memcpy(buf, cl->cl_out.b_data + cl->cl_out.b_off, n);
	cl->cl_out.b_off += n;
	if (rmctl_buf_left(&cl->cl_out) == 0 && cl->cl_out_eof)
		*flags |= NGHTTP2_DATA_FLAG_EOF;
	return (ssize_t)n;
}

/* Wake nghttp2 up after queueing request bytes or a half-close. */
static void
rmctl_call_resume(struct rmctl_conn *cn, struct rmctl_call *cl)
{
	if (cl->cl_deferred) {
		cl->cl_deferred = 0;
		(void)nghttp2_session_resume_data(cn->cn_session, cl->cl_id);
	}
}

/* Queue one protobuf message, gRPC-framed, on the call's request body. */
void
rmctl_call_send(
    struct rmctl_conn *cn, struct rmctl_call *cl, const ProtobufCMessage *msg)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *p;

	if (len > UINT32_MAX)
		errx(RMCTL_EXIT_INVALID,
		    "request message too large (%zu bytes)", len);
	p = rmctl_buf_reserve(&cl->cl_out, FRAME_HDR_LEN + len);
	frame_grpc_header(p, (uint32_t)len);
	protobuf_c_message_pack(msg, p + FRAME_HDR_LEN);
	cl->cl_out.b_len += FRAME_HDR_LEN + len;
	rmctl_call_resume(cn, cl);
}

/* Half-close the request side once everything queued is sent. */
void
rmctl_call_close_send(struct rmctl_conn *cn, struct rmctl_call *cl)
{
	cl->cl_out_eof = 1;
	rmctl_call_resume(cn, cl);
}

static nghttp2_nv
rmctl_nv(const char *name, const char *value)
{
	nghttp2_nv nv;

	nv.name = (uint8_t *)name;
	nv.namelen = strlen(name);
	nv.value = (uint8_t *)value;
	nv.valuelen = strlen(value);
	nv.flags = NGHTTP2_NV_FLAG_NONE;
	return nv;
}

/* Open the call's stream: the gRPC request headers, the body to follow. */
void
rmctl_call_start(struct rmctl_conn *cn, struct rmctl_call *cl, const char *path,
    const char *timeout)
{
	nghttp2_nv nv[9];
	nghttp2_data_provider dp;
	char auth[1100];
	size_t n = 0;

	nv[n++] = rmctl_nv(":method", "POST");
	nv[n++] = rmctl_nv(":scheme", cn->cn_ssl != NULL ? "https" : "http");
	nv[n++] = rmctl_nv(":path", path);
	nv[n++] = rmctl_nv(":authority", cn->cn_authority);
	nv[n++] = rmctl_nv("content-type", "application/grpc");
	nv[n++] = rmctl_nv("te", "trailers");
	nv[n++] = rmctl_nv("user-agent", "rmctl/1");
	if (timeout != NULL)
		nv[n++] = rmctl_nv("grpc-timeout", timeout);
	if (cn->cn_token != NULL) {
		snprintf(auth, sizeof(auth), "Bearer %s", cn->cn_token);
		nv[n++] = rmctl_nv("authorization", auth);
	}
	dp.source.ptr = cl;
	dp.read_callback = rmctl_read_body;
	cl->cl_id = nghttp2_submit_request(
	    cn->cn_session, NULL, nv, n, &dp, NULL);
	if (cl->cl_id < 0)
		errx(RMCTL_EXIT_INTERNAL, "cannot start %s: %s", path,
		    nghttp2_strerror(cl->cl_id));
	cn->cn_call = cl;
}

/* poll(2) one descriptor until the deadline; 0 means it passed. */
static int
rmctl_poll(struct pollfd *pfd, uint64_t deadline)
{
	uint64_t now, left;
	int rv;

	for (;;) {
		if ((now = now_ms()) >= deadline)
			return 0;
		left = deadline - now;
		rv = poll(pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (rv != -1 || errno != EINTR)
			return rv;
	}
}

/* Try one address: connect without blocking, then wait for the outcome. */
static int
rmctl_connect_one(const struct addrinfo *ai, uint64_t deadline)
{
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int fd, rv, soerr = 0, one = 1, saved;

	fd = socket(ai->ai_family,
	    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
	if (fd == -1)
		return -1;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
		if (errno != EINPROGRESS)
			goto fail;
		pfd.fd = fd;
		pfd.events = POLLOUT;
		if ((rv = rmctl_poll(&pfd, deadline)) <= 0) {
			if (rv == 0)
				errno = ETIMEDOUT;
			goto fail;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == -1)
			goto fail;
		if (soerr != 0) {
			errno = soerr;
			goto fail;
		}
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
fail:
	saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* Connect to the first address of host:port that answers. */
static int
rmctl_connect(
    struct rmctl_conn *cn, const char *host, uint16_t port, uint64_t deadline)
{
	struct addrinfo hints, *res, *ai;
	char portstr[8];
	int fd = -1, error, saved = ECONNREFUSED;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%u", port);
	if ((error = getaddrinfo(host, portstr, &hints, &res)) != 0)
		errx(RMCTL_EXIT_UNAVAILABLE, "cannot connect to %s: %s",
		    cn->cn_authority, gai_strerror(error));
	for (ai = res; ai != NULL && fd == -1; ai = ai->ai_next)
		if ((fd = rmctl_connect_one(ai, deadline)) == -1)
			saved = errno;
	freeaddrinfo(res);
	if (fd == -1) {
		errno = saved;
		err(RMCTL_EXIT_UNAVAILABLE, "cannot connect to %s",
		    cn->cn_authority);
	}
	return fd;
}

/* A client session that sends the preface and our SETTINGS first. */
static void
rmctl_session_new(struct rmctl_conn *cn)
{
	nghttp2_session_callbacks *cbs;
	nghttp2_settings_entry iv[] = {
	    {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RMCTL_WINDOW},
	};

	if (nghttp2_session_callbacks_new(&cbs) != 0)
		errx(1, "out of memory");
	nghttp2_session_callbacks_set_on_header_callback(cbs, rmctl_on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(
	    cbs, rmctl_on_data);
	nghttp2_session_callbacks_set_on_frame_recv_callback(
	    cbs, rmctl_on_frame);
	nghttp2_session_callbacks_set_on_stream_close_callback(
	    cbs, rmctl_on_close);
	nghttp2_session_callbacks_set_error_callback2(cbs, rmctl_on_error);
	nghttp2_session_callbacks_set_on_frame_send_callback(
	    cbs, rmctl_on_send);
	if (nghttp2_session_client_new(&cn->cn_session, cbs, cn) != 0)
		errx(1, "out of memory");
	nghttp2_session_callbacks_del(cbs);
	if (nghttp2_submit_settings(cn->cn_session, NGHTTP2_FLAG_NONE, iv,
	        sizeof(iv) / sizeof(iv[0])) != 0 ||
	    nghttp2_session_set_local_window_size(
	        cn->cn_session, NGHTTP2_FLAG_NONE, 0, RMCTL_WINDOW) != 0)
		errx(1, "cannot set up the HTTP/2 session");
}

/* send(2), or SSL_write with --tls; -1 with errno EAGAIN when it would
 * block. */
static ssize_t
rmctl_send(struct rmctl_conn *cn, const uint8_t *p, size_t len)
{
	int n, e;

	if (cn->cn_ssl == NULL)
		return send(cn->cn_fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	ERR_clear_error();
	n = SSL_write(cn->cn_ssl, p, len > INT_MAX ? INT_MAX : (int)len);
	if (n > 0)
		return n;
	e = SSL_get_error(cn->cn_ssl, n);
	errno = e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? EAGAIN
	                                                              : EPIPE;
	return -1;
}

static const char *rmctl_tls_error(void);

/* recv(2), or SSL_read with --tls; 0 at the end of the stream. */
static ssize_t
rmctl_recv(struct rmctl_conn *cn, uint8_t *p, size_t len)
{
	int n, e;

	if (cn->cn_ssl == NULL)
		return recv(cn->cn_fd, p, len, 0);
	ERR_clear_error();
	n = SSL_read(cn->cn_ssl, p, len > INT_MAX ? INT_MAX : (int)len);
	if (n > 0)
		return n;
	e = SSL_get_error(cn->cn_ssl, n);
	/* A peer that closes TCP without close_notify: the end, as in
	 * cleartext, so that its GOAWAY or grpc-status explains it. */
	if (e == SSL_ERROR_ZERO_RETURN ||
	    (e == SSL_ERROR_SYSCALL && errno == 0) ||
	    (e == SSL_ERROR_SSL &&
	        ERR_GET_REASON(ERR_peek_error()) ==
	            SSL_R_UNEXPECTED_EOF_WHILE_READING))
		return 0;
	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
		errno = EAGAIN;
		return -1;
	}
	/* TLS 1.3 judges a client certificate after the handshake: its
	 * refusal (an alert) comes to the first read, and says why. */
	if (e == SSL_ERROR_SSL)
		snprintf(cn->cn_tlserr, sizeof(cn->cn_tlserr), "%s",
		    rmctl_tls_error());
	errno = ECONNRESET;
	return -1;
}

/* The first OpenSSL error, for messages. */
static const char *
rmctl_tls_error(void)
{
	static char buf[256];
	unsigned long e = ERR_get_error();

	if (e == 0)
		return "the handshake failed";
	ERR_error_string_n(e, buf, sizeof(buf));
	return buf;
}

/* A key with a passphrase is refused: rmctl asks nothing on a terminal. */
static int
rmctl_no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	return 0;
}

/*
 * --tls: a TLS 1.2+ handshake with ALPN h2, verifying the server's
 * certificate and name against --ca or the system's CA bundle.
 */
static void
rmctl_tls_start(
    struct rmctl_conn *cn, const struct rmctl_opts *o, uint64_t deadline)
{
	static const unsigned char alpn[] = "\x02h2";
	const unsigned char *sel = NULL;
	unsigned int sellen = 0;
	struct in6_addr a6;
	struct pollfd pfd;
	int rv, e, ip;

	if ((cn->cn_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		errx(RMCTL_EXIT_FAIL, "TLS: %s", rmctl_tls_error());
	SSL_CTX_set_min_proto_version(cn->cn_ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(cn->cn_ctx, SSL_VERIFY_PEER, NULL);
	if (o->o_ca != NULL) {
		if (SSL_CTX_load_verify_locations(cn->cn_ctx, o->o_ca, NULL) !=
		    1)
			errx(RMCTL_EXIT_FAIL, "--ca %s: %s", o->o_ca,
			    rmctl_tls_error());
	} else if (SSL_CTX_set_default_verify_paths(cn->cn_ctx) != 1)
		errx(RMCTL_EXIT_FAIL, "TLS: no system CA bundle: %s",
		    rmctl_tls_error());
	if (o->o_cert != NULL) {
		SSL_CTX_set_default_passwd_cb(cn->cn_ctx, rmctl_no_passphrase);
		if (SSL_CTX_use_certificate_chain_file(cn->cn_ctx, o->o_cert) !=
		        1 ||
		    SSL_CTX_use_PrivateKey_file(
		        cn->cn_ctx, o->o_key, SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(cn->cn_ctx) != 1)
			errx(RMCTL_EXIT_FAIL,
			    "--cert %s, --key %s: not a PEM certificate and "
			    "its key without a passphrase: %s",
			    o->o_cert, o->o_key, rmctl_tls_error());
	}
	if (SSL_CTX_set_alpn_protos(cn->cn_ctx, alpn, sizeof(alpn) - 1) != 0 ||
	    (cn->cn_ssl = SSL_new(cn->cn_ctx)) == NULL ||
	    SSL_set_fd(cn->cn_ssl, cn->cn_fd) != 1)
		errx(RMCTL_EXIT_FAIL, "TLS: %s", rmctl_tls_error());
	ip = inet_pton(AF_INET, o->o_host, &a6) == 1 ||
	    inet_pton(AF_INET6, o->o_host, &a6) == 1;
	if (ip)
		rv = X509_VERIFY_PARAM_set1_ip_asc(
		    SSL_get0_param(cn->cn_ssl), o->o_host);
	else
		rv = SSL_set_tlsext_host_name(cn->cn_ssl, o->o_host) == 1 &&
		    SSL_set1_host(cn->cn_ssl, o->o_host) == 1;
	if (rv != 1)
		errx(RMCTL_EXIT_FAIL, "TLS: cannot verify the name %s",
		    o->o_host);
	for (;;) {
		ERR_clear_error();
		if ((rv = SSL_connect(cn->cn_ssl)) == 1)
			break;
		e = SSL_get_error(cn->cn_ssl, rv);
		if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
			if (SSL_get_verify_result(cn->cn_ssl) != X509_V_OK)
				errx(RMCTL_EXIT_UNAVAILABLE,
				    "TLS to %s: certificate not trusted: %s",
				    cn->cn_authority,
				    X509_verify_cert_error_string(
				        SSL_get_verify_result(cn->cn_ssl)));
			errx(RMCTL_EXIT_UNAVAILABLE, "TLS to %s: %s",
			    cn->cn_authority, rmctl_tls_error());
		}
		pfd.fd = cn->cn_fd;
		pfd.events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT;
		if (rmctl_poll(&pfd, deadline) <= 0)
			errx(RMCTL_EXIT_DEADLINE,
			    "timed out in the TLS handshake with %s",
			    cn->cn_authority);
	}
	SSL_get0_alpn_selected(cn->cn_ssl, &sel, &sellen);
	if (sellen != 2 || memcmp(sel, "h2", 2) != 0)
		errx(RMCTL_EXIT_UNAVAILABLE,
		    "TLS to %s: the server did not choose HTTP/2 (ALPN h2)",
		    cn->cn_authority);
}

/* Connect and start an HTTP/2 session; the first wait is the deadline. */
void
rmctl_conn_open(
    struct rmctl_conn *cn, const struct rmctl_opts *o, uint64_t deadline)
{
	memset(cn, 0, sizeof(*cn));
	cn->cn_timeout_ms = o->o_timeout_ms;
	if (strchr(o->o_host, ':') != NULL)
		snprintf(cn->cn_authority, sizeof(cn->cn_authority), "[%s]:%u",
		    o->o_host, o->o_port);
	else
		snprintf(cn->cn_authority, sizeof(cn->cn_authority), "%s:%u",
		    o->o_host, o->o_port);
	cn->cn_fd = rmctl_connect(cn, o->o_host, o->o_port, deadline);
	cn->cn_token = o->o_token;
	if (o->o_tls)
		rmctl_tls_start(cn, o, deadline);
	rmctl_session_new(cn);
}

/* Say goodbye (GOAWAY, best effort) and release the connection. */
void
rmctl_conn_close(struct rmctl_conn *cn)
{
	const uint8_t *p;
	ssize_t n;

	if (nghttp2_session_terminate_session(
	        cn->cn_session, NGHTTP2_NO_ERROR) == 0 &&
	    cn->cn_werr == 0) {
		while ((n = nghttp2_session_mem_send(cn->cn_session, &p)) > 0)
			rmctl_buf_add(&cn->cn_out, p, (size_t)n);
		if (rmctl_buf_left(&cn->cn_out) > 0)
			(void)rmctl_send(cn,
			    cn->cn_out.b_data + cn->cn_out.b_off,
			    rmctl_buf_left(&cn->cn_out));
	}
	nghttp2_session_del(cn->cn_session);
	if (cn->cn_ssl != NULL) {
		(void)SSL_shutdown(cn->cn_ssl);
		SSL_free(cn->cn_ssl);
		SSL_CTX_free(cn->cn_ctx);
	}
	close(cn->cn_fd);
	rmctl_buf_free(&cn->cn_out);
}

/* Move up to RMCTL_FLUSH_LEN of nghttp2's pending frames to cn_out. */
static void
rmctl_conn_pull(struct rmctl_conn *cn)
{
	const uint8_t *p;
	ssize_t n;

	while (rmctl_buf_left(&cn->cn_out) < RMCTL_FLUSH_LEN) {
		n = nghttp2_session_mem_send(cn->cn_session, &p);
		if (n < 0)
			errx(RMCTL_EXIT_INTERNAL, "HTTP/2 error on %s: %s",
			    cn->cn_authority, nghttp2_strerror((int)n));
		if (n == 0)
			break;
		rmctl_buf_add(&cn->cn_out, p, (size_t)n);
	}
}

/*
 * Write what nghttp2 wants to send until it has no more or the socket is
 * full. A failed write is remembered, not fatal: the server may still have
 * sent the status that explains it.
 */
static void
rmctl_conn_flush(struct rmctl_conn *cn)
{
	ssize_t n;

	while (cn->cn_werr == 0) {
		if (rmctl_buf_left(&cn->cn_out) == 0)
			rmctl_conn_pull(cn);
		if (rmctl_buf_left(&cn->cn_out) == 0)
			return;
		n = rmctl_send(cn, cn->cn_out.b_data + cn->cn_out.b_off,
		    rmctl_buf_left(&cn->cn_out));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n == -1)
			cn->cn_werr = errno;
		else
			cn->cn_out.b_off += (size_t)n;
	}
}

/* Wait for the socket, then read what arrived and feed it to nghttp2. */
static void
rmctl_conn_io(struct rmctl_conn *cn, uint64_t deadline, const char *what)
{
	struct pollfd pfd;
	uint8_t buf[RMCTL_READ_LEN];
	ssize_t n, rv;

	pfd.fd = cn->cn_fd;
	pfd.events = POLLIN;
	if (cn->cn_werr == 0 && rmctl_buf_left(&cn->cn_out) > 0)
		pfd.events |= POLLOUT;
	if ((rv = rmctl_poll(&pfd, deadline)) == 0)
		errx(RMCTL_EXIT_DEADLINE,
		    "timed out after %s waiting for %s from %s",
		    rmctl_fmt_ms(cn->cn_timeout_ms), what, cn->cn_authority);
	if (rv == -1)
		err(1, "poll");
	if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) == 0)
		return;
	/* TLS may hold decrypted records that poll(2) cannot see: read
	 * until the socket would block. */
	do {
		n = rmctl_recv(cn, buf, sizeof(buf));
		if (n == -1 && (errno == EINTR || errno == EAGAIN))
			return;
		if (n == -1 && cn->cn_tlserr[0] != '\0')
			errx(RMCTL_EXIT_UNAVAILABLE,
			    "TLS to %s failed during %s: %s", cn->cn_authority,
			    what, cn->cn_tlserr);
		if (n == -1)
			err(RMCTL_EXIT_UNAVAILABLE,
			    "connection to %s lost during %s", cn->cn_authority,
			    what);
		if (n == 0) {
			cn->cn_eof = 1;
			return;
		}
		rv = nghttp2_session_mem_recv(cn->cn_session, buf, (size_t)n);
		if (rv < 0)
			errx(RMCTL_EXIT_INTERNAL, "HTTP/2 error from %s: %s",
			    cn->cn_authority, nghttp2_strerror((int)rv));
	} while (cn->cn_ssl != NULL && SSL_pending(cn->cn_ssl) > 0);
}

/* Explain why the connection ended under a call that had not finished. */
static void __attribute__((noreturn))
rmctl_conn_dead(struct rmctl_conn *cn, const char *what)
{
	if (cn->cn_h2err[0] != '\0')
		errx(RMCTL_EXIT_INTERNAL,
		    "HTTP/2 connection to %s failed during %s: %s",
		    cn->cn_authority, what, cn->cn_h2err);
	if (cn->cn_goaway)
		errx(RMCTL_EXIT_UNAVAILABLE,
		    "server %s closed the connection during %s "
		    "(GOAWAY %s)",
		    cn->cn_authority, what,
		    nghttp2_http2_strerror(cn->cn_goaway_error));
	if (cn->cn_werr != 0)
		errx(RMCTL_EXIT_UNAVAILABLE,
		    "connection to %s lost during %s: %s", cn->cn_authority,
		    what, strerror(cn->cn_werr));
	errx(RMCTL_EXIT_UNAVAILABLE,
	    "server %s closed the connection during %s", cn->cn_authority,
	    what);
}

/* Run the connection until ready(call) holds; exit on error or timeout. */
void
rmctl_conn_wait(struct rmctl_conn *cn, int (*ready)(const struct rmctl_call *),
    uint64_t deadline, const char *what)
{
	struct rmctl_call *cl = cn->cn_call;

	for (;;) {
		if (cl->cl_err[0] != '\0')
			errx(RMCTL_EXIT_INTERNAL, "%s: %s", cl->cl_name,
			    cl->cl_err);
		if (ready(cl))
			return;
		rmctl_conn_flush(cn);
		/* Sending may end the call too: nghttp2 closes a stream as it
		 * writes the RST_STREAM of a response it found invalid. */
		if (cl->cl_err[0] != '\0')
			errx(RMCTL_EXIT_INTERNAL, "%s: %s", cl->cl_name,
			    cl->cl_err);
		if (ready(cl))
			return;
		if (cn->cn_eof ||
		    (!nghttp2_session_want_read(cn->cn_session) &&
		        !nghttp2_session_want_write(cn->cn_session)))
			rmctl_conn_dead(cn, what);
		rmctl_conn_io(cn, deadline, what);
	}
}

/* A call ended without grpc-status: say what the server did instead. */
static void __attribute__((noreturn))
rmctl_call_nostatus(struct rmctl_conn *cn, struct rmctl_call *cl)
{
	const char *h2 = cn->cn_h2err, *what = cl->cl_name;

	if (cl->cl_http_status != 0 && cl->cl_http_status != 200)
		errx(RMCTL_EXIT_INTERNAL,
		    "%s: %s answered HTTP status %d, not gRPC", what,
		    cn->cn_authority, cl->cl_http_status);
	if (cl->cl_reset)
		errx(RMCTL_EXIT_UNAVAILABLE,
		    "%s: server %s reset the stream (%s)", what,
		    cn->cn_authority, nghttp2_http2_strerror(cl->cl_error));
	if (cn->cn_goaway && cl->cl_error == NGHTTP2_REFUSED_STREAM)
		errx(RMCTL_EXIT_UNAVAILABLE,
		    "%s: server %s refused the call (GOAWAY %s)", what,
		    cn->cn_authority,
		    nghttp2_http2_strerror(cn->cn_goaway_error));
	if (cl->cl_closed && cl->cl_error != NGHTTP2_NO_ERROR)
		errx(RMCTL_EXIT_INTERNAL, "%s: stream to %s failed (%s)%s%s",
		    what, cn->cn_authority,
		    nghttp2_http2_strerror(cl->cl_error), *h2 ? ": " : "", h2);
	errx(RMCTL_EXIT_INTERNAL,
	    "%s: response from %s ended without grpc-status", what,
	    cn->cn_authority);
}

/* Judge a finished call by its headers and trailers; exit 1 unless OK. */
void
rmctl_call_check(struct rmctl_conn *cn, struct rmctl_call *cl)
{
	const char *what = cl->cl_name;
	char *msg = cl->cl_grpc_message;

	if (cl->cl_grpc_status == -1)
		rmctl_call_nostatus(cn, cl);
	if (cl->cl_grpc_status == -2)
		errx(RMCTL_EXIT_INTERNAL, "%s: malformed grpc-status from %s",
		    what, cn->cn_authority);
	if (cl->cl_http_status != 200)
		errx(RMCTL_EXIT_INTERNAL, "%s: %s answered HTTP status %d",
		    what, cn->cn_authority, cl->cl_http_status);
	if (cl->cl_ctype != NULL && !rmctl_is_grpc(cl->cl_ctype))
		errx(RMCTL_EXIT_INTERNAL,
		    "%s: %s answered content-type %s, not gRPC", what,
		    cn->cn_authority, rmctl_printable(cl->cl_ctype));
	if (cl->cl_grpc_status != 0)
		errx(cl->cl_grpc_status > 0 && cl->cl_grpc_status < 17
		        ? cl->cl_grpc_status
		        : RMCTL_EXIT_INTERNAL,
		    "%s failed: %s%s%s", what,
		    rmctl_code_name(cl->cl_grpc_status), msg ? ": " : "",
		    msg ? rmctl_printable(msg) : "");
	if (deframer_partial(&cl->cl_df))
		errx(RMCTL_EXIT_INTERNAL, "%s: truncated gRPC message from %s",
		    what, cn->cn_authority);
}

/* Write a grpc-timeout value: at most 8 digits and a unit. */
void
rmctl_grpc_timeout(char *buf, size_t len, uint64_t ms)
{
	if (ms <= 99999999)
		snprintf(buf, len, "%" PRIu64 "m", ms);
	else
		snprintf(buf, len, "%" PRIu64 "S", ms / 1000);
}
