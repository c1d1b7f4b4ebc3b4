/*
 * rmctl's gRPC transport (rmctl_grpc.c): cleartext HTTP/2 with prior
 * knowledge through nghttp2's client session on a non-blocking socket and
 * poll(2). One connection carries one call at a time; every wait is bounded
 * by a deadline and every failure exits with a message that says what the
 * server did. The commands (rmctl.c, rmctl_bench.c) build on it.
 */
#ifndef RM_RMCTL_H
#define RM_RMCTL_H

#include <sys/queue.h>

#include <stddef.h>
#include <stdint.h>

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <protobuf-c/protobuf-c.h>

#include "frame.h"

/*
 * Exit statuses follow gRPC status codes: a call that failed exits with
 * its status; rmctl's own failures with the code that says what happened.
 * 1 is a failure with no better code (a health check that is not
 * SERVING is UNAVAILABLE), 2 a usage error.
 */
#define RMCTL_EXIT_FAIL 1
#define RMCTL_EXIT_USAGE 2
#define RMCTL_EXIT_INVALID 3 /* INVALID_ARGUMENT */
#define RMCTL_EXIT_DEADLINE 4 /* DEADLINE_EXCEEDED */
#define RMCTL_EXIT_INTERNAL 13 /* INTERNAL: the server broke the protocol */
#define RMCTL_EXIT_UNAVAILABLE 14 /* UNAVAILABLE: no connection, or lost */

#define RMCTL_MSG_MAX (4U * 1024 * 1024) /* gRPC's default receive limit */
#define RMCTL_QUEUE_MAX 64 /* received, not yet consumed messages */
#define RMCTL_WINDOW (16 * 1024 * 1024)
#define RMCTL_READ_LEN (256 * 1024)
/* Freed memory kept for reuse: a few of the largest messages. */
#define RMCTL_MALLOC_KEEP (64 * 1024 * 1024)
#define RMCTL_FLUSH_LEN (256 * 1024)

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
	size_t cl_queue_max; /* RMCTL_QUEUE_MAX unless the caller says */

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
	char cn_tlserr[256]; /* OpenSSL's, when a TLS read failed */
	int cn_goaway;
	uint32_t cn_goaway_error;
	const char *cn_token; /* sent as authorization: Bearer */
	SSL_CTX *cn_ctx; /* with --tls */
	SSL *cn_ssl;
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
	uint64_t o_sessions; /* bench: session opens */
	uint64_t o_items; /* bench: generator items */
	uint64_t o_parallel; /* bench: throughput sessions */
	uint64_t o_duration_ms; /* bench: throughput duration */
	uint64_t o_pace_ms; /* bench: between session opens, and figures */
	int o_json; /* bench: print JSON */
	const char *o_token; /* --token, or $REMOTEMEDIA_TOKEN */
	int o_tls; /* --tls */
	const char *o_ca; /* --ca FILE: verify the server against it */
	const char *o_cert; /* --cert FILE: present this client certificate */
	const char *o_key; /* --key FILE: its private key */
	const char *o_arg; /* kill: the session id */
	const char *o_source; /* run: --source FILE */
	const char *o_class; /* run: --class NAME */
	const char *o_call; /* run: --call METHOD */
	const char *o_args; /* run: --args JSON (a list) */
	const char *o_kwargs; /* run: --kwargs JSON (an object) */
	const char *o_init; /* run: --init JSON, the constructor's args */
	const char *o_pip[16]; /* run: --pip REQ, repeatable */
	size_t o_npip;
};

#define RMCTL_ECHO_PATH "/remotemedia.v1.RemoteExecution/Echo"

/* The commands' shared helpers (rmctl.c) and rmctl bench (rmctl_bench.c). */
int rmctl_cmp_u64(const void *, const void *);
uint64_t rmctl_percentile(const uint64_t *, size_t, unsigned int);
int rmctl_bench(const struct rmctl_opts *);
int rmctl_info(const struct rmctl_opts *);
int rmctl_sessions(const struct rmctl_opts *);
int rmctl_kill(const struct rmctl_opts *);
int rmctl_run(const struct rmctl_opts *);
void rmctl_unary(const struct rmctl_opts *, const char *, const char *,
    const ProtobufCMessage *, struct rmctl_msg **);

uint64_t rmctl_now_ns(void);
void rmctl_call_init(struct rmctl_call *cl, const char *name, size_t max);
void rmctl_call_free(struct rmctl_call *cl);
struct rmctl_msg *rmctl_call_pop(struct rmctl_call *cl);
int rmctl_call_finished(const struct rmctl_call *cl);
int rmctl_call_readable(const struct rmctl_call *cl);
void rmctl_call_send(
    struct rmctl_conn *cn, struct rmctl_call *cl, const ProtobufCMessage *msg);
void rmctl_call_close_send(struct rmctl_conn *cn, struct rmctl_call *cl);
void rmctl_call_start(struct rmctl_conn *cn, struct rmctl_call *cl,
    const char *path, const char *timeout);
void rmctl_conn_open(
    struct rmctl_conn *cn, const struct rmctl_opts *o, uint64_t deadline);
void rmctl_conn_close(struct rmctl_conn *cn);
void
rmctl_conn_wait(struct rmctl_conn *cn, int (*ready)(const struct rmctl_call *),
    uint64_t deadline, const char *what);
void rmctl_call_check(struct rmctl_conn *cn, struct rmctl_call *cl);
const char *rmctl_printable(char *);
void rmctl_grpc_timeout(char *buf, size_t len, uint64_t ms);

#endif
