/*
 * rmctl: the command-line client for smoke tests, health checks and
 * benchmarks.
 *
 * It speaks gRPC over cleartext HTTP/2 with prior knowledge: nghttp2's client
 * session drives a plain non-blocking TCP socket through poll(2). There is one
 * connection and one call at a time, and every wait is bounded by a deadline,
 * so a server that misbehaves or goes quiet gives a clear error, never a hang.
 */
#include <sys/types.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <ctype.h>
#include <err.h>
#include <errno.h>
#include <getopt.h>
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

#include "frame.h"
#include "log.h"
#include "util.h"

#include "grpc/health/v1/health.pb-c.h"
#include "remotemedia.pb-c.h"

#define RMCTL_DEFAULT_HOST "127.0.0.1"
#define RMCTL_DEFAULT_PORT 50052
#define RMCTL_TIMEOUT_MS 10000ULL /* every wait, by default */
#define RMCTL_HEALTH_TIMEOUT_MS 5000ULL /* health: the call's deadline */
#define RMCTL_TIMEOUT_MAX_MS (24ULL * 3600 * 1000)

#define RMCTL_MSG_MAX (4U * 1024 * 1024) /* gRPC's default receive limit */
#define RMCTL_SIZE_MAX (64ULL * 1024 * 1024)
#define RMCTL_COUNT_MAX 10000000ULL
#define RMCTL_ECHO_SIZE 32 /* default --size */
#define RMCTL_QUEUE_MAX 64 /* received, not yet consumed messages */
#define RMCTL_WINDOW (16 * 1024 * 1024)
#define RMCTL_READ_LEN (64 * 1024)
#define RMCTL_FLUSH_LEN (256 * 1024)

#define RMCTL_HEALTH_PATH "/grpc.health.v1.Health/Check"
#define RMCTL_ECHO_PATH "/remotemedia.v1.RemoteExecution/Echo"

/* A byte queue: data from b_off to b_len. */
struct rmctl_buf {
	uint8_t *b_data;
	size_t b_off;
	size_t b_len;
	size_t b_cap;
};

/* One gRPC message received and not yet consumed. */
struct rmctl_msg {
	TAILQ_ENTRY(rmctl_msg) m_entry;
	size_t m_len;
	uint8_t m_data[];
};
TAILQ_HEAD(rmctl_msgs, rmctl_msg);

/* One gRPC call: an HTTP/2 stream, what is left to send, what came back. */
struct rmctl_call {
	const char *cl_name; /* for messages: "health check", "echo" */
	int32_t cl_id;
	struct rmctl_buf cl_out; /* framed messages not yet taken by nghttp2 */
	int cl_out_eof; /* half-close once cl_out drains */
	int cl_deferred; /* nghttp2 waits for rmctl_call_resume */

	struct deframer cl_df;
	struct rmctl_msgs cl_msgs;
	size_t cl_nmsgs;

	int cl_http_status; /* 0 until seen */
	char *cl_ctype;
	int cl_grpc_status; /* -1 until seen, -2 if malformed */
	char *cl_grpc_message;

	int cl_remote_ended; /* the server sent END_STREAM */
	int cl_closed; /* nghttp2 closed the stream */
	int cl_reset; /* the server sent RST_STREAM */
	uint32_t cl_error; /* the stream's HTTP/2 error code */
	char cl_err[256]; /* a local protocol error, fatal to the call */
};

/* The connection: one socket, one nghttp2 session, at most one call. */
struct rmctl_conn {
	int cn_fd;
	nghttp2_session *cn_session;
	char cn_authority[300];
	uint64_t cn_timeout_ms;
	struct rmctl_buf cn_out; /* bytes nghttp2 produced, not yet written */
	struct rmctl_call *cn_call;
	int cn_eof;
	int cn_werr; /* errno of a failed write; writing stops */
	char cn_h2err[256]; /* nghttp2's last error text */
	int cn_goaway;
	uint32_t cn_goaway_error;
};

struct rmctl_opts {
	const char *o_host;
	uint16_t o_port;
	uint64_t o_timeout_ms;
	const char *o_service;
	uint64_t o_count;
	uint64_t o_size;
	int o_size_set;
	const char *o_message;
};

struct rmctl_cmd {
	const char *c_name;
	const struct option *c_opts;
	uint64_t c_timeout_ms;
	int (*c_run)(const struct rmctl_opts *);
};

enum {
	OPT_HOST = 256,
	OPT_PORT,
	OPT_TIMEOUT,
	OPT_SERVICE,
	OPT_COUNT,
	OPT_SIZE,
	OPT_MESSAGE,
	OPT_HELP,
};

static int rmctl_health(const struct rmctl_opts *);
static int rmctl_echo(const struct rmctl_opts *);

static const struct option rmctl_health_opts[] = {
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"service", required_argument, NULL, OPT_SERVICE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const struct option rmctl_echo_opts[] = {
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"count", required_argument, NULL, OPT_COUNT},
    {"size", required_argument, NULL, OPT_SIZE},
    {"message", required_argument, NULL, OPT_MESSAGE},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static const struct rmctl_cmd rmctl_cmds[] = {
    {"health", rmctl_health_opts, RMCTL_HEALTH_TIMEOUT_MS, rmctl_health},
    {"echo", rmctl_echo_opts, RMCTL_TIMEOUT_MS, rmctl_echo},
};

static const char rmctl_usage_text[] =
    "usage: rmctl health [--host HOST] [--port PORT] [--service NAME]\n"
    "                    [--timeout DURATION]\n"
    "       rmctl echo [--host HOST] [--port PORT] [--count N] "
    "[--size BYTES]\n"
    "                  [--message TEXT] [--timeout DURATION]\n"
    "       rmctl --help\n"
    "\n"
    "  health  call grpc.health.v1.Health/Check; print the serving status\n"
    "          and exit 0 only if it is SERVING\n"
    "  echo    ping-pong N messages on one RemoteExecution/Echo stream;\n"
    "          print the echoed text (--count 1 --message TEXT) or\n"
    "          \"count N p50 Xus p99 Yus\"\n"
    "\n"
    "  --host HOST         server address (default " RMCTL_DEFAULT_HOST ")\n"
    "  --port PORT         server port (default 50052)\n"
    "  --service NAME      service to check (default \"\", the server)\n"
    "  --count N           messages to echo (default 1)\n"
    "  --size BYTES        payload size: 512, 64K, 1M (default 32)\n"
    "  --message TEXT      payload text, instead of --size\n"
    "  --timeout DURATION  500ms, 30s, 5m; health: the call's deadline\n"
    "                      (default 5s); echo: each wait (default 10s)\n"
    "\n"
    "Exit status: 0 on success, 1 on failure, 2 on a usage error.\n";

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

/* Print the usage text to stdout for --help. */
static void __attribute__((noreturn)) rmctl_help(void)
{
	fputs(rmctl_usage_text, stdout);
	exit(0);
}

/* Report a usage error, naming the flag at fault, and exit 2. */
static void __attribute__((format(printf, 1, 2), noreturn))
rmctl_usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vwarnx(fmt, ap);
	va_end(ap);
	fputs("run 'rmctl --help' for usage\n", stderr);
	exit(2);
}

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

static uint64_t
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
			s[j++] = (char)strtoul(hex, NULL, 16);
			i += 2;
		} else
			s[j++] = (char)v[i];
	}
	s[j] = '\0';
	return s;
}

/* Replace control characters so that server text prints on one line. */
static const char *
rmctl_printable(char *s)
{
	char *p;

	for (p = s; *p != '\0'; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
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

static void
rmctl_call_init(struct rmctl_call *cl, const char *name, size_t max)
{
	memset(cl, 0, sizeof(*cl));
	cl->cl_name = name;
	deframer_init(&cl->cl_df, DEFRAME_GRPC, max);
	TAILQ_INIT(&cl->cl_msgs);
	cl->cl_grpc_status = -1;
}

static void
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

	if (cl->cl_nmsgs >= RMCTL_QUEUE_MAX) {
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
static struct rmctl_msg *
rmctl_call_pop(struct rmctl_call *cl)
{
	struct rmctl_msg *m;

	if ((m = TAILQ_FIRST(&cl->cl_msgs)) != NULL) {
		TAILQ_REMOVE(&cl->cl_msgs, m, m_entry);
		cl->cl_nmsgs--;
	}
	return m;
}

static int
rmctl_call_finished(const struct rmctl_call *cl)
{
	return cl->cl_remote_ended || cl->cl_closed;
}

static int
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
static void
rmctl_call_send(
    struct rmctl_conn *cn, struct rmctl_call *cl, const ProtobufCMessage *msg)
{
	size_t len = protobuf_c_message_get_packed_size(msg);
	uint8_t *p;

	if (len > UINT32_MAX)
		errx(1, "request message too large (%zu bytes)", len);
	p = rmctl_buf_reserve(&cl->cl_out, FRAME_HDR_LEN + len);
	frame_grpc_header(p, (uint32_t)len);
	protobuf_c_message_pack(msg, p + FRAME_HDR_LEN);
	cl->cl_out.b_len += FRAME_HDR_LEN + len;
	rmctl_call_resume(cn, cl);
}

/* Half-close the request side once everything queued is sent. */
static void
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
static void
rmctl_call_start(struct rmctl_conn *cn, struct rmctl_call *cl, const char *path,
    const char *timeout)
{
	nghttp2_nv nv[8];
	nghttp2_data_provider dp;
	size_t n = 0;

	nv[n++] = rmctl_nv(":method", "POST");
	nv[n++] = rmctl_nv(":scheme", "http");
	nv[n++] = rmctl_nv(":path", path);
	nv[n++] = rmctl_nv(":authority", cn->cn_authority);
	nv[n++] = rmctl_nv("content-type", "application/grpc");
	nv[n++] = rmctl_nv("te", "trailers");
	nv[n++] = rmctl_nv("user-agent", "rmctl/1");
	if (timeout != NULL)
		nv[n++] = rmctl_nv("grpc-timeout", timeout);
	dp.source.ptr = cl;
	dp.read_callback = rmctl_read_body;
	cl->cl_id = nghttp2_submit_request(
	    cn->cn_session, NULL, nv, n, &dp, NULL);
	if (cl->cl_id < 0)
		errx(1, "cannot start %s: %s", path,
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
		errx(1, "cannot connect to %s: %s", cn->cn_authority,
		    gai_strerror(error));
	for (ai = res; ai != NULL && fd == -1; ai = ai->ai_next)
		if ((fd = rmctl_connect_one(ai, deadline)) == -1)
			saved = errno;
	freeaddrinfo(res);
	if (fd == -1) {
		errno = saved;
		err(1, "cannot connect to %s", cn->cn_authority);
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
	if (nghttp2_session_client_new(&cn->cn_session, cbs, cn) != 0)
		errx(1, "out of memory");
	nghttp2_session_callbacks_del(cbs);
	if (nghttp2_submit_settings(cn->cn_session, NGHTTP2_FLAG_NONE, iv,
	        sizeof(iv) / sizeof(iv[0])) != 0 ||
	    nghttp2_session_set_local_window_size(
	        cn->cn_session, NGHTTP2_FLAG_NONE, 0, RMCTL_WINDOW) != 0)
		errx(1, "cannot set up the HTTP/2 session");
}

/* Connect and start an HTTP/2 session; the first wait is the deadline. */
static void
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
	rmctl_session_new(cn);
}

/* Say goodbye (GOAWAY, best effort) and release the connection. */
static void
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
			(void)send(cn->cn_fd,
			    cn->cn_out.b_data + cn->cn_out.b_off,
			    rmctl_buf_left(&cn->cn_out),
			    MSG_NOSIGNAL | MSG_DONTWAIT);
	}
	nghttp2_session_del(cn->cn_session);
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
			errx(1, "HTTP/2 error on %s: %s", cn->cn_authority,
			    nghttp2_strerror((int)n));
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
		n = send(cn->cn_fd, cn->cn_out.b_data + cn->cn_out.b_off,
		    rmctl_buf_left(&cn->cn_out), MSG_NOSIGNAL);
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
		errx(1, "timed out after %s waiting for %s from %s",
		    rmctl_fmt_ms(cn->cn_timeout_ms), what, cn->cn_authority);
	if (rv == -1)
		err(1, "poll");
	if ((pfd.revents & (POLLIN | POLLHUP | POLLERR)) == 0)
		return;
	n = recv(cn->cn_fd, buf, sizeof(buf), 0);
	if (n == -1 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n == -1)
		err(1, "connection to %s lost during %s", cn->cn_authority,
		    what);
	if (n == 0) {
		cn->cn_eof = 1;
		return;
	}
	rv = nghttp2_session_mem_recv(cn->cn_session, buf, (size_t)n);
	if (rv < 0)
		errx(1, "HTTP/2 error from %s: %s", cn->cn_authority,
		    nghttp2_strerror((int)rv));
}

/* Explain why the connection ended under a call that had not finished. */
static void __attribute__((noreturn))
rmctl_conn_dead(struct rmctl_conn *cn, const char *what)
{
	if (cn->cn_h2err[0] != '\0')
		errx(1, "HTTP/2 connection to %s failed during %s: %s",
		    cn->cn_authority, what, cn->cn_h2err);
	if (cn->cn_goaway)
		errx(1,
		    "server %s closed the connection during %s "
		    "(GOAWAY %s)",
		    cn->cn_authority, what,
		    nghttp2_http2_strerror(cn->cn_goaway_error));
	if (cn->cn_werr != 0)
		errx(1, "connection to %s lost during %s: %s", cn->cn_authority,
		    what, strerror(cn->cn_werr));
	errx(1, "server %s closed the connection during %s", cn->cn_authority,
	    what);
}

/* Run the connection until ready(call) holds; exit on error or timeout. */
static void
rmctl_conn_wait(struct rmctl_conn *cn, int (*ready)(const struct rmctl_call *),
    uint64_t deadline, const char *what)
{
	struct rmctl_call *cl = cn->cn_call;

	for (;;) {
		if (cl->cl_err[0] != '\0')
			errx(1, "%s: %s", cl->cl_name, cl->cl_err);
		if (ready(cl))
			return;
		rmctl_conn_flush(cn);
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
		errx(1, "%s: %s answered HTTP status %d, not gRPC", what,
		    cn->cn_authority, cl->cl_http_status);
	if (cl->cl_reset)
		errx(1, "%s: server %s reset the stream (%s)", what,
		    cn->cn_authority, nghttp2_http2_strerror(cl->cl_error));
	if (cn->cn_goaway && cl->cl_error == NGHTTP2_REFUSED_STREAM)
		errx(1, "%s: server %s refused the call (GOAWAY %s)", what,
		    cn->cn_authority,
		    nghttp2_http2_strerror(cn->cn_goaway_error));
	if (cl->cl_closed && cl->cl_error != NGHTTP2_NO_ERROR)
		errx(1, "%s: stream to %s failed (%s)%s%s", what,
		    cn->cn_authority, nghttp2_http2_strerror(cl->cl_error),
		    *h2 ? ": " : "", h2);
	errx(1, "%s: response from %s ended without grpc-status", what,
	    cn->cn_authority);
}

/* Judge a finished call by its headers and trailers; exit 1 unless OK. */
static void
rmctl_call_check(struct rmctl_conn *cn, struct rmctl_call *cl)
{
	const char *what = cl->cl_name;
	char *msg = cl->cl_grpc_message;

	if (cl->cl_grpc_status == -1)
		rmctl_call_nostatus(cn, cl);
	if (cl->cl_grpc_status == -2)
		errx(1, "%s: malformed grpc-status from %s", what,
		    cn->cn_authority);
	if (cl->cl_http_status != 200)
		errx(1, "%s: %s answered HTTP status %d", what,
		    cn->cn_authority, cl->cl_http_status);
	if (cl->cl_ctype != NULL && !rmctl_is_grpc(cl->cl_ctype))
		errx(1, "%s: %s answered content-type %s, not gRPC", what,
		    cn->cn_authority, rmctl_printable(cl->cl_ctype));
	if (cl->cl_grpc_status != 0)
		errx(1, "%s failed: %s%s%s", what,
		    rmctl_code_name(cl->cl_grpc_status), msg ? ": " : "",
		    msg ? rmctl_printable(msg) : "");
	if (deframer_partial(&cl->cl_df))
		errx(1, "%s: truncated gRPC message from %s", what,
		    cn->cn_authority);
}

/* Write a grpc-timeout value: at most 8 digits and a unit. */
static void
rmctl_grpc_timeout(char *buf, size_t len, uint64_t ms)
{
	if (ms <= 99999999)
		snprintf(buf, len, "%" PRIu64 "m", ms);
	else
		snprintf(buf, len, "%" PRIu64 "S", ms / 1000);
}

static const char *
rmctl_serving_name(int status)
{
	static char buf[32];

	switch (status) {
	case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__UNKNOWN:
		return "UNKNOWN";
	case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING:
		return "SERVING";
	case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING:
		return "NOT_SERVING";
	case GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN:
		return "SERVICE_UNKNOWN";
	}
	snprintf(buf, sizeof(buf), "STATUS_%d", status);
	return buf;
}

/* Decode the one HealthCheckResponse of a finished call: its status. */
static int
rmctl_health_status(struct rmctl_conn *cn, struct rmctl_call *cl)
{
	Grpc__Health__V1__HealthCheckResponse *resp;
	struct rmctl_msg *m;
	int status;

	if ((m = rmctl_call_pop(cl)) == NULL)
		errx(1, "health check: %s sent no response message",
		    cn->cn_authority);
	if (!TAILQ_EMPTY(&cl->cl_msgs))
		errx(1, "health check: %s sent more than one response message",
		    cn->cn_authority);
	resp = grpc__health__v1__health_check_response__unpack(
	    NULL, m->m_len, m->m_data);
	free(m);
	if (resp == NULL)
		errx(1, "health check: malformed HealthCheckResponse from %s",
		    cn->cn_authority);
	status = (int)resp->status;
	grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
	return status;
}

/* rmctl health: one unary Health/Check; exit 0 only when SERVING. */
static int
rmctl_health(const struct rmctl_opts *o)
{
	Grpc__Health__V1__HealthCheckRequest req =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	struct rmctl_conn cn;
	struct rmctl_call cl;
	uint64_t deadline = now_ms() + o->o_timeout_ms;
	char tmo[32];
	int status;

	req.service = (char *)o->o_service;
	rmctl_conn_open(&cn, o, deadline);
	rmctl_call_init(&cl, "health check", RMCTL_MSG_MAX);
	rmctl_grpc_timeout(tmo, sizeof(tmo), o->o_timeout_ms);
	rmctl_call_start(&cn, &cl, RMCTL_HEALTH_PATH, tmo);
	rmctl_call_send(&cn, &cl, &req.base);
	rmctl_call_close_send(&cn, &cl);
	rmctl_conn_wait(&cn, rmctl_call_finished, deadline, "the health check");
	rmctl_call_check(&cn, &cl);
	status = rmctl_health_status(&cn, &cl);
	printf("%s\n", rmctl_serving_name(status));
	rmctl_call_free(&cl);
	rmctl_conn_close(&cn);
	return status ==
	        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
	    ? 0
	    : 1;
}

/* Build the echo payload: --message, or --size bytes of a pattern. */
static uint8_t *
rmctl_echo_payload(const struct rmctl_opts *o, size_t *len)
{
	uint8_t *p;
	size_t i;

	if (o->o_message != NULL) {
		*len = strlen(o->o_message);
		p = xmalloc(*len);
		memcpy(p, o->o_message, *len);
		return p;
	}
	*len = (size_t)o->o_size;
	p = xmalloc(*len);
	for (i = 0; i < *len; i++)
		p[i] = (uint8_t)('a' + i % 26);
	return p;
}

/* Stamp message i into a sized payload so a stale reply cannot pass. */
static void
rmctl_echo_stamp(uint8_t *p, size_t len, uint64_t i)
{
	char seq[24];
	size_t n;

	n = (size_t)snprintf(seq, sizeof(seq), "%" PRIu64 ":", i);
	memcpy(p, seq, n < len ? n : len);
}

/* Check that a reply is the EchoMessage that was sent as message i. */
static void
rmctl_echo_verify(struct rmctl_conn *cn, struct rmctl_msg *m,
    const uint8_t *sent, size_t len, uint64_t i)
{
	Remotemedia__V1__EchoMessage *reply;

	reply = remotemedia__v1__echo_message__unpack(
	    NULL, m->m_len, m->m_data);
	if (reply == NULL)
		errx(1, "echo: malformed EchoMessage %" PRIu64 " from %s", i,
		    cn->cn_authority);
	if (reply->payload.len != len)
		errx(1, "echo: reply %" PRIu64 " has %zu bytes, sent %zu", i,
		    reply->payload.len, len);
	if (len > 0 && memcmp(reply->payload.data, sent, len) != 0)
		errx(
		    1, "echo: reply %" PRIu64 " differs from what was sent", i);
	remotemedia__v1__echo_message__free_unpacked(reply, NULL);
}

/* Send message i and wait for its reply; return the round trip in ns. */
static uint64_t
rmctl_echo_one(struct rmctl_conn *cn, struct rmctl_call *cl,
    Remotemedia__V1__EchoMessage *msg, uint64_t i, uint64_t count)
{
	struct rmctl_msg *m;
	uint64_t t0, t1;

	t0 = rmctl_now_ns();
	rmctl_call_send(cn, cl, &msg->base);
	rmctl_conn_wait(cn, rmctl_call_readable, now_ms() + cn->cn_timeout_ms,
	    "an echo reply");
	t1 = rmctl_now_ns();
	if ((m = rmctl_call_pop(cl)) == NULL) {
		rmctl_call_check(cn, cl);
		errx(1,
		    "echo: server ended the stream after %" PRIu64
		    " of %" PRIu64 " replies",
		    i, count);
	}
	rmctl_echo_verify(cn, m, msg->payload.data, msg->payload.len, i);
	free(m);
	return t1 - t0;
}

static int
rmctl_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The nearest-rank percentile p of n sorted samples. */
static uint64_t
rmctl_percentile(const uint64_t *v, size_t n, unsigned int p)
{
	size_t rank = ((size_t)p * n + 99) / 100;

	return v[rank > 0 ? rank - 1 : 0];
}

/* Print "count N p50 Xus p99 Yus" from round trips in nanoseconds. */
static void
rmctl_echo_stats(uint64_t *rtt, size_t n)
{
	qsort(rtt, n, sizeof(*rtt), rmctl_cmp_u64);
	printf("count %zu p50 %" PRIu64 "us p99 %" PRIu64 "us\n", n,
	    (rmctl_percentile(rtt, n, 50) + 500) / 1000,
	    (rmctl_percentile(rtt, n, 99) + 500) / 1000);
}

/* Half-close the echo stream and expect it to end with grpc-status 0. */
static void
rmctl_echo_finish(struct rmctl_conn *cn, struct rmctl_call *cl)
{
	rmctl_call_close_send(cn, cl);
	rmctl_conn_wait(cn, rmctl_call_finished, now_ms() + cn->cn_timeout_ms,
	    "the end of the echo stream");
	rmctl_call_check(cn, cl);
	if (!TAILQ_EMPTY(&cl->cl_msgs))
		errx(
		    1, "echo: %s sent a reply to no message", cn->cn_authority);
}

/* rmctl echo: ping-pong messages on one Echo stream, check each reply. */
static int
rmctl_echo(const struct rmctl_opts *o)
{
	Remotemedia__V1__EchoMessage msg = REMOTEMEDIA__V1__ECHO_MESSAGE__INIT;
	struct rmctl_conn cn;
	struct rmctl_call cl;
	uint64_t *rtt, i;
	size_t len;

	msg.payload.data = rmctl_echo_payload(o, &len);
	msg.payload.len = len;
	rtt = xcalloc((size_t)o->o_count, sizeof(*rtt));
	rmctl_conn_open(&cn, o, now_ms() + o->o_timeout_ms);
	rmctl_call_init(
	    &cl, "echo", len + 16 > RMCTL_MSG_MAX ? len + 16 : RMCTL_MSG_MAX);
	rmctl_call_start(&cn, &cl, RMCTL_ECHO_PATH, NULL);
	for (i = 0; i < o->o_count; i++) {
		if (o->o_message == NULL)
			rmctl_echo_stamp(msg.payload.data, len, i);
		rtt[i] = rmctl_echo_one(&cn, &cl, &msg, i, o->o_count);
	}
	rmctl_echo_finish(&cn, &cl);
	if (o->o_message != NULL && o->o_count == 1) {
		fwrite(msg.payload.data, 1, len, stdout);
		putchar('\n');
	} else
		rmctl_echo_stats(rtt, (size_t)o->o_count);
	rmctl_call_free(&cl);
	rmctl_conn_close(&cn);
	free(msg.payload.data);
	free(rtt);
	return 0;
}

/* Parse a decimal count in [1, max]. */
static int
rmctl_parse_count(const char *s, uint64_t max, uint64_t *out)
{
	char *end;
	unsigned long long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > max)
		return -1;
	*out = v;
	return 0;
}

/* Take --host: a name or address, [IPv6] brackets allowed. */
static const char *
rmctl_parse_host(char *s)
{
	size_t len = strlen(s);

	if (len >= 2 && s[0] == '[' && s[len - 1] == ']') {
		s[len - 1] = '\0';
		s++;
		len -= 2;
	}
	if (len == 0 || len > 253)
		rmctl_usage_error("--host: invalid host '%s'", s);
	return s;
}

/* Apply one flag's value; a bad value is a usage error naming the flag. */
static void
rmctl_parse_opt(struct rmctl_opts *o, int ch, char *arg)
{
	uint64_t v;

	switch (ch) {
	case OPT_HOST:
		o->o_host = rmctl_parse_host(arg);
		break;
	case OPT_PORT:
		if (rmctl_parse_count(arg, 65535, &v) == -1)
			rmctl_usage_error("--port: invalid port '%s'", arg);
		o->o_port = (uint16_t)v;
		break;
	case OPT_TIMEOUT:
		if (parse_duration_ms(arg, &v) == -1 || v == 0 ||
		    v > RMCTL_TIMEOUT_MAX_MS)
			rmctl_usage_error("--timeout: invalid duration '%s' "
			                  "(write 500ms, 30s, 5m)",
			    arg);
		o->o_timeout_ms = v;
		break;
	case OPT_SERVICE:
		o->o_service = arg;
		break;
	case OPT_COUNT:
		if (rmctl_parse_count(arg, RMCTL_COUNT_MAX, &o->o_count) == -1)
			rmctl_usage_error("--count: invalid count '%s' "
			                  "(1 to %llu)",
			    arg, RMCTL_COUNT_MAX);
		break;
	case OPT_SIZE:
		if (parse_size(arg, &o->o_size) == -1 ||
		    o->o_size > RMCTL_SIZE_MAX)
			rmctl_usage_error("--size: invalid size '%s' "
			                  "(write 512, 64K, 1M; at most 64M)",
			    arg);
		o->o_size_set = 1;
		break;
	case OPT_MESSAGE:
		o->o_message = arg;
		break;
	case OPT_HELP:
		rmctl_help();
	}
}

/* Name the flag that getopt_long refused, without any "=value". */
static void __attribute__((noreturn)) rmctl_bad_flag(int ch, char *arg)
{
	char *eq;

	if (ch == ':')
		rmctl_usage_error("%s needs a value", arg);
	if (optopt >= OPT_HOST) {
		if ((eq = strchr(arg, '=')) != NULL)
			*eq = '\0';
		rmctl_usage_error("%s takes no value", arg);
	}
	if (optopt != 0)
		rmctl_usage_error("unknown flag -%c", optopt);
	if ((eq = strchr(arg, '=')) != NULL)
		*eq = '\0';
	rmctl_usage_error("unknown flag %s", arg);
}

/* Parse the flags of one command; argv[0] is the command's name. */
static void
rmctl_parse(
    const struct rmctl_cmd *cmd, int argc, char **argv, struct rmctl_opts *o)
{
	int ch;

	memset(o, 0, sizeof(*o));
	o->o_host = RMCTL_DEFAULT_HOST;
	o->o_port = RMCTL_DEFAULT_PORT;
	o->o_timeout_ms = cmd->c_timeout_ms;
	o->o_service = "";
	o->o_count = 1;
	o->o_size = RMCTL_ECHO_SIZE;
	opterr = 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+:", cmd->c_opts, NULL)) != -1) {
		if (ch == '?' || ch == ':')
			rmctl_bad_flag(ch, argv[optind - 1]);
		rmctl_parse_opt(o, ch, optarg);
	}
	if (optind < argc)
		rmctl_usage_error(
		    "%s: unexpected argument '%s'", cmd->c_name, argv[optind]);
	if (o->o_message != NULL && o->o_size_set)
		rmctl_usage_error("--message and --size cannot be used "
		                  "together");
}

int
main(int argc, char **argv)
{
	struct rmctl_opts o;
	size_t i;

	log_init("rmctl", LOG_LEVEL_WARN);
	if (argc < 2)
		rmctl_usage_error("missing command (health or echo)");
	if (strcmp(argv[1], "--help") == 0)
		rmctl_help();
	for (i = 0; i < sizeof(rmctl_cmds) / sizeof(rmctl_cmds[0]); i++) {
		if (strcmp(argv[1], rmctl_cmds[i].c_name) != 0)
			continue;
		rmctl_parse(&rmctl_cmds[i], argc - 1, argv + 1, &o);
		return rmctl_cmds[i].c_run(&o);
	}
	if (argv[1][0] == '-')
		rmctl_usage_error("unknown flag %s", argv[1]);
	rmctl_usage_error("unknown command '%s'", argv[1]);
}
