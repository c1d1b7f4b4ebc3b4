/*
 * remotemediad, the front: one libevent loop that speaks gRPC over HTTP/2
 * and relays each Session stream to its own worker process.
 *
 * The chain is conn (a TCP connection) -> stream (one HTTP/2 stream, one
 * RPC) -> session (one worker). A session outlives its stream until its
 * worker is reaped and its directory removed.
 */
#ifndef RM_FRONT_H
#define RM_FRONT_H

#include <sys/types.h>
#include <bsd/sys/queue.h>
#ifndef __unused
#define __unused __attribute__((__unused__))
#endif
#include <bsd/sys/tree.h>

#include <stdint.h>
#include <stdio.h>

#include <event2/event.h>
#include <event2/bufferevent.h>
#include <event2/buffer.h>
#include <nghttp2/nghttp2.h>

#include "frame.h"

/* gRPC status codes. */
enum grpc_status {
	GRPC_OK = 0,
	GRPC_CANCELLED = 1,
	GRPC_UNKNOWN = 2,
	GRPC_INVALID_ARGUMENT = 3,
	GRPC_DEADLINE_EXCEEDED = 4,
	GRPC_NOT_FOUND = 5,
	GRPC_PERMISSION_DENIED = 7,
	GRPC_RESOURCE_EXHAUSTED = 8,
	GRPC_FAILED_PRECONDITION = 9,
	GRPC_ABORTED = 10,
	GRPC_UNIMPLEMENTED = 12,
	GRPC_INTERNAL = 13,
	GRPC_UNAVAILABLE = 14,
	GRPC_UNAUTHENTICATED = 16,
};

/* The front's default cap on one received gRPC message. */
#define FRONT_MAX_MESSAGE (4 * 1024 * 1024)
/* The cap on one Session message: a 1 MiB chunk and its envelope. */
#define FRONT_SESSION_MAX_MESSAGE (FRAME_CHUNK_MAX + 32 * 1024)
/* Bytes one connection may hold in unfinished messages, all streams. */
#define FRONT_CONN_PARTIAL_MAX (16 * 1024 * 1024)
/*
 * Response bytes of the RPCs the front answers itself (Echo, Health,
 * Admin) queued on one connection, at which those streams get no more
 * flow-control credit until they fall under it again: a client that sends
 * and never reads holds at most this and its connection window.
 */
#define FRONT_CONN_OUT_HIGH (4 * 1024 * 1024)
/* Per-stream buffer bounds: above HIGH the producer pauses. */
#define FRONT_BUF_HIGH (2 * 1024 * 1024)
#define FRONT_BUF_LOW (512 * 1024)

#define FRONT_MAX_REPEAT 16
/* The most uids --session-uids may span: more sessions than it allows. */
#define FRONT_UIDS_MAX (1024 * 1024)

struct front_config {
	char *fc_config; /* --config FILE */
	const char *fc_config_default; /* read when present, without --config */
	char fc_host[256];
	uint16_t fc_port;
	char fc_metrics_host[256]; /* --metrics-listen; "" for none */
	uint16_t fc_metrics_port;
	char *fc_state_dir;
	char *fc_worker;
	int fc_log_level;
	uint64_t fc_max_message;
	uint64_t fc_max_value;
	uint64_t fc_grace_ms;
	uint64_t fc_exit_wait_ms;
	/* Environments (pip_packages). */
	char *fc_pip_index_url;
	char *fc_pip_extra_index[FRONT_MAX_REPEAT];
	int fc_n_pip_extra_index;
	char *fc_pip_find_links[FRONT_MAX_REPEAT];
	int fc_n_pip_find_links;
	int fc_pip_system_site;
	int fc_pip_allow_source;
	uint64_t fc_pip_timeout_ms;
	char *fc_env_cache_dir;
	uint64_t fc_env_cache_size;
	int fc_env_builds;
	uint32_t fc_session_pool; /* spare sessions kept ready */
	long fc_builder_uid;
	/* The sandbox (architecture section 5). */
	int fc_sandbox;
	uint32_t fc_uid_first;
	uint32_t fc_uid_last;
	int fc_network; /* enum sandbox_network */
	char *fc_egress_allow[FRONT_MAX_REPEAT]; /* --session-egress-allow */
	int fc_n_egress_allow;
	char *fc_egress_deny[FRONT_MAX_REPEAT]; /* --session-egress-deny */
	int fc_n_egress_deny;
	uint64_t fc_session_memory;
	uint32_t fc_session_pids;
	uint32_t fc_session_cpu;
	uint64_t fc_session_disk;
	uint64_t fc_session_lifetime_ms;
	uint64_t fc_session_idle_ms;
	int fc_seccomp_log;
	/* Authentication. */
	char *fc_token_file;
	int fc_allow_unauth;
	/* TLS. */
	char *fc_tls_cert;
	char *fc_tls_key;
	char *fc_tls_client_ca;
	/* Limits (issue 6). */
	uint32_t fc_max_sessions;
	uint32_t fc_max_sessions_per_token;
	uint32_t fc_max_streams;
	uint32_t fc_max_conns;
	uint64_t fc_max_header_list;
	uint32_t fc_max_inflight;
	uint64_t fc_handshake_ms;
	uint64_t fc_open_timeout_ms; /* the worker's Ready, object whole */
	uint64_t fc_conn_idle_ms;
	uint32_t fc_ping_rate; /* PINGs per second allowed, sustained */
	uint32_t fc_busy_poll_us; /* the front polls before sleeping */
	uint32_t fc_session_busy_poll_us; /* so do workers */
};

enum rpc_kind {
	RPC_NONE,
	RPC_SESSION,
	RPC_ECHO,
	RPC_HEALTH,
	RPC_ADMIN_INFO,
	RPC_ADMIN_LIST,
	RPC_ADMIN_END,
	RPC_UNKNOWN,
};

struct conn;
struct session;

/* One HTTP/2 stream carrying one RPC. */
struct stream {
	TAILQ_ENTRY(stream) str_entry;
	struct conn *str_conn;
	int32_t str_id;
	enum rpc_kind str_rpc;
	char *str_path;
	char *str_auth; /* the authorization header */
	int str_bad_auth; /* one that HTTP/2 forbids (an edge space) */
	char *str_owner; /* the token's name, once authenticated */
	int str_admin; /* and it is an admin token */
	int str_bad_ct; /* content-type is not application/grpc */
	int str_bad_method; /* :method is not POST */
	int str_encoded; /* grpc-encoding other than identity */
	uint64_t str_timeout_ms;
	int str_bad_timeout; /* a grpc-timeout that does not parse */
	struct event *str_deadline;
	struct event *str_rst; /* resets a client still sending after */
	struct deframer str_in;
	struct evbuffer *str_out; /* gRPC-framed response bytes */
	int str_started; /* response HEADERS submitted */
	int str_finished; /* status decided; trailers follow str_out */
	int str_status;
	char *str_message;
	int str_http_status; /* non-zero: plain HTTP error response */
	int str_remote_closed; /* client half-closed */
	size_t str_unconsumed; /* received bytes not yet given back */
	uint64_t str_rx; /* DATA bytes received, in all */
	size_t str_partial; /* counted in c_partial */
	struct session *str_session;
};
TAILQ_HEAD(streamlist, stream);

/* One client connection. */

enum session_state {
	SES_OPENING, /* waiting for Open */
	SES_INSTALLING, /* waiting for its environment */
	SES_STARTING, /* worker started, waiting for Ready */
	SES_READY, /* calls flow */
	SES_CLOSING, /* Close sent to the worker, waiting for its exit */
	SES_ENDING, /* status decided, waiting for the worker to be reaped */
	SES_SPARE, /* a spare: no stream yet (front_pool.c) */
};

/* A call the front tracks for a client (front_call.c). */
struct call;
RB_HEAD(calltree, call);

/* One session: a Session stream and its worker. */
struct session {
	TAILQ_ENTRY(session) ses_entry;
	char ses_id[33];
	enum session_state ses_state;
	struct stream *ses_stream;
	pid_t ses_pid;
	int ses_exited; /* waitpid saw it; the pid is no longer ours */
	int ses_reaped; /* and its last frames were read */
	int ses_wstatus;
	int ses_eof;
	uint64_t ses_exit_wait_ms; /* the worker's time to exit, once armed */
	int ses_exit_killed; /* it did not exit in time: the front killed it */
	struct bufferevent *ses_wbev;
	int ses_out[2]; /* read ends of its stdout and stderr, or -1 */
	struct event *ses_oread[2]; /* read ses_out (front_output.c) */
	struct event *ses_oreport; /* reports drops nothing else carried */
	double ses_otokens; /* the Output rate cap's bucket */
	uint64_t ses_olast; /* now_us() at its last refill */
	uint64_t ses_odropped; /* Output bytes dropped, not yet reported */
	int ses_odropped_stream;
	int ses_oflushed; /* read since this read of the socket began */
	struct event *ses_wflush; /* writes ses_wbev once per loop turn */
	struct event *ses_wread; /* reads ses_wbev's socket (fw_read_cb) */
	int ses_adopted; /* its worker was a spare's */
	int ses_taken; /* the worker said it has the Open (Taken) */
	struct deframer ses_win; /* frames from the worker */
	char *ses_dir;
	uint64_t ses_last_call;
	uint64_t ses_ncalls; /* calls accepted so far */
	int ses_open_more; /* Open.object chunks still expected */
	uint64_t ses_open_rx; /* the stream's str_rx when last checked */
	uint32_t ses_open_seq;
	int ses_ready_seen;
	int ses_killed;
	int ses_paused; /* not reading the worker: the client is slow */
	uint32_t ses_inflight; /* calls not yet answered */
	uint32_t ses_waiting; /* overdue calls behind another (front_call.c) */
	uint32_t ses_max_inflight; /* the bound its Init, so its Ready, said */
	uint64_t ses_max_value; /* likewise, --max-value-size */
	uint64_t ses_max_chunk; /* likewise, Ready.limits.max_chunk_bytes */
	int ses_draining; /* the server drains: Close once idle */
	uint64_t ses_value_bytes; /* bytes of the client value being received */
	uint64_t ses_value_total; /* its chunk 0's total_size; 0: none */
	struct calltree ses_calls;
	int ses_end_code; /* status to report, once decided */
	char *ses_end_msg;
	int ses_end_set;
	struct event *ses_timer; /* exit wait after EOF or kill */
	struct env *ses_env; /* the environment it uses or waits for */
	TAILQ_ENTRY(session) ses_env_entry; /* on env_waiters */
	struct evbuffer *ses_pending; /* frames held until the worker runs */
	long ses_uid; /* its own uid, -1 without the sandbox */
	char *ses_owner; /* the name of the token that opened it */
	uint64_t ses_started_at; /* now_ms() at its stream's start */
	char *ses_cgroup; /* its cgroup path(s) */
	struct event *ses_life; /* --session-max-lifetime */
	struct event *ses_idle; /* --session-idle-timeout */
	struct event *ses_open; /* Open due within --handshake-timeout */
	int ses_retired; /* a spare killed to make room: no failure */
};
TAILQ_HEAD(sessionlist, session);

enum env_state {
	ENV_QUEUED, /* waiting for a build slot */
	ENV_BUILDING, /* its builder runs */
	ENV_READY, /* complete and read-only */
	ENV_FAILED, /* remembered for a short time */
};

/*
 * One entry of the environment cache, content-addressed by its key; its
 * fields are front_env.c's (and the fake's, which stands in for it).
 */
struct env;
struct req_list;
const char *front_env_dir(const struct env *);
/*
 * Its canonical requirements (req.h); empty for an entry found on disk at
 * start until a session asks for it again.
 */
const struct req_list *front_env_reqs(const struct env *);

/* What the unit tests look at in an entry (front_env_info). */
struct env_info {
	const char *ei_key;
	enum env_state ei_state;
	int ei_refs; /* sessions using or waiting for it */
	uint64_t ei_size;
	pid_t ei_builder; /* -1: none */
	int ei_output_done; /* the builder's output is all read */
};
struct env_info front_env_info(const struct env *);
/* The cache's clock, now_ms(); tests move it to age remembered failures. */
extern uint64_t (*front_env_clock)(void);

/* front.c */
extern struct front_config front_conf;
extern struct event_base *front_base;
void front_conn_closed(struct conn *);
int front_draining(void);
void front_session_freed(void);
void front_stream_freed(void);

/* front_config.c */
enum front_config_result {
	CONFIG_ERROR = -1,
	CONFIG_RUN, /* serve */
	CONFIG_HELP, /* --help */
	CONFIG_CHECK, /* --check-config */
	CONFIG_MAN, /* --man */
};
void front_config_defaults(struct front_config *);
int front_config_parse(struct front_config *, int, char **, char *, size_t);
int
front_config_reload(struct front_config *, int, char **, int *, char *, size_t);
void front_config_free(struct front_config *);
void front_config_keep(const struct front_config *);
void front_config_listen_passed(void);
void front_config_usage(void);
void front_config_section(const struct front_config *, const char *,
    void (*)(void *, const char *, const char *), void *);
void front_config_man(FILE *);

/* front_admin.c */
void front_admin_init(void);
void front_admin_call(struct stream *, const uint8_t *, size_t);

/* front_metrics.c */
struct evconnlistener;
void front_accept_failed(
    struct evconnlistener *, struct event **, const char *, uint64_t);
void front_metrics_init(void);
void front_metrics_check(void);
void front_metrics_free(void);
void front_metrics_session(void);
void front_metrics_refused(void);
void front_metrics_conn_refused(void);
/* front_call.c: a session's calls, from Call to their terminal answer. */
struct envelope;
struct call *front_call_find(struct session *, uint64_t);
void front_call_start(struct session *, const struct envelope *);
int64_t front_call_client_chunk(struct call *, const struct envelope *);
uint64_t front_call_args_total(const struct call *);
void front_call_pull(struct call *, uint32_t, uint64_t);
const char *front_call_result(struct call *, const struct envelope *, int *);
const char *front_call_value(struct call *, const struct envelope *, int *);
const char *front_call_item(struct call *, const struct envelope *);
const char *front_call_end(struct call *);
const char *front_call_error(struct call *);
void front_call_done(struct call *);
void front_call_free(struct call *);
void front_call_free_all(struct session *);
void front_call_regrace(struct session *);

void front_metrics_call_start(void);
void front_metrics_call_done(uint64_t);
void front_metrics_env(int);
void front_metrics_env_built(uint64_t, int);
void front_metrics_env_evicted(void);
void front_metrics_worker_exit(const char *);
void front_metrics_spare_failed(void);
struct evbuffer;
void front_metrics_write(struct evbuffer *);

/* front_systemd.c */
void front_notify(const char *, ...) __attribute__((format(printf, 1, 2)));
void front_systemd_init(void);
void front_systemd_ready(void);
void front_systemd_stopping(void);
void front_systemd_free(void);
int front_systemd_listen_fd(void);

/* front.c */
/* What front_traffic() counts: a message from a client, one from a
 * worker, an answer that the front gave a client itself (Echo, Health,
 * the admin RPCs), or any bytes from a client. */
#define FRONT_FROM_CLIENT 0
#define FRONT_FROM_WORKER 1
#define FRONT_ANSWERED 2
#define FRONT_CLIENT_BYTES 3
#define FRONT_TRAFFIC_KINDS 4
void front_traffic(int);
void front_client_local(int);

/* front_h2.c */
struct conn *front_h2_accept(int, const char *, int);
unsigned front_h2_conns(void);
int front_h2_refused(const struct stream *);
void front_h2_session_started(struct stream *);
void front_h2_flush(struct conn *);
size_t front_write_now(struct bufferevent *);
void front_write_done(struct bufferevent *);
const char *front_conn_peer(const struct conn *);
int front_conn_hold(struct conn *, size_t, size_t);
int front_conn_out_full(struct conn *);
void front_h2_resume(struct stream *);
void front_h2_consume(struct stream *, size_t);
void front_h2_goaway_all(int, int);
int front_h2_streams(void);
void front_h2_end_streams(const char *);
void front_h2_settings_all(void);
void front_h2_free_all(void);

/* front_grpc.c */
void front_grpc_headers_done(struct stream *);
int front_grpc_data(struct stream *, const uint8_t *, size_t);
void front_grpc_remote_closed(struct stream *);
void front_grpc_stream_closed(struct stream *);
int front_grpc_send(struct stream *, const uint8_t *, size_t);
void front_grpc_finish(struct stream *, int, const char *);
void front_grpc_drained(struct stream *);
void front_grpc_consume(struct stream *);
void front_grpc_worker_drained(struct stream *);
size_t front_grpc_pending_out(struct stream *);
char *front_grpc_percent_encode(const char *);
int front_grpc_parse_timeout(const char *, uint64_t *);
enum rpc_kind front_grpc_route(const char *, size_t);

/* front_session.c */
void front_timer_add(struct event *, uint64_t);
struct session *front_session_new(struct stream *);
int front_session_client_msg(struct session *, const uint8_t *, size_t);
void front_session_client_closed(struct session *);
void front_session_client_gone(struct session *);
int
front_session_worker_frame(struct session *, uint8_t, const uint8_t *, size_t);
void front_session_output(struct session *, const uint8_t *, size_t);
void front_session_worker_exited(struct session *, int);
void front_session_worker_eof(struct session *);
void front_session_end(struct session *, int, const char *);
void front_session_drained(struct session *);
void front_session_kill_all(void);
void front_session_drain_all(void);
int front_session_count(void);
struct sessionlist *front_session_list(void);
struct session *front_session_by_pid(pid_t);
int front_session_refuse(const char *, char *, size_t);
const char *front_session_state_name(enum session_state);

/* front_env.c */
void front_env_init(void);
int front_env_attach(struct session *, const struct req_list *, const char **);
void front_env_release(struct session *);
void front_env_hold(struct session *, struct env *);
void front_env_reap(pid_t, int);
int front_env_is_builder(pid_t);
char *front_env_site_packages(struct env *);
const char *front_python_version(void);
void front_env_kill_all(void);

/* front_session.c, for front_env.c */
void front_session_env_ready(struct session *);
void front_session_env_failed(struct session *, const char *);
void front_session_progress(struct session *, int, const char *, const char *);

/* front_trash.c */
int front_trash(const char *, const char *);
void front_trash_empty(const char *);

/* front_tls.c */
void front_tls_init(void);
void front_tls_reload(void);
int front_tls_enabled(void);
struct bufferevent *front_tls_bufferevent(int);
const char *front_tls_last_error(struct bufferevent *);
int front_tls_alpn_ok(struct bufferevent *);

/* front_auth.c */
void front_auth_init(void);
void front_auth_reload(void);
int front_auth_enabled(void);
int front_auth_check(const char *);
const char *front_auth_name(int);
int front_auth_is_admin(int);

/* front_sandbox.c */
void front_sandbox_init(void);
int front_sandbox_session_start(struct session *, char *, size_t);
void front_sandbox_session_end(struct session *);
size_t front_sandbox_uids_free(void);
void front_sandbox_flush(void);
char *front_sandbox_limit_hit(struct session *, int);
int front_sandbox_describe(char[][160], int);
char *front_sandbox_build_cgroup(const char *);
unsigned int front_sandbox_controllers(void);
void front_sandbox_cgroup_destroy(char *);

/* front_output.c */
void front_output_attach(struct session *);
void front_output_reading(struct session *, int);
void front_output_flush(struct session *);
void front_output_last(struct session *);
void front_output_close(struct session *);

/* front_worker.c */
int front_worker_spawn(struct session *, char *, size_t);
pid_t front_worker_exec(const char *, const char *const[3], const int *, int);
int front_worker_send(struct session *, uint8_t, const uint8_t *, size_t);
int front_worker_send_init(struct session *);
int front_worker_send_expired(struct session *, uint64_t);
size_t front_worker_pending_out(struct session *);
void front_worker_pause(struct session *, int);
void front_worker_reading(struct session *, int);
void front_worker_nice(struct session *, int);
void front_worker_kill(struct session *);
void front_worker_expect_exit(struct session *, uint64_t);
void front_worker_reap(void);
void front_worker_drain(struct session *);
void front_worker_close(struct session *);
void front_worker_attach(struct session *);

/* front_pool.c */
void front_pool_init(void);
void front_pool_poke(void);
void front_pool_adopted_failed(void);
void front_pool_adopted_ok(void);
int front_pool_adopt(struct session *);
int front_pool_count(void);
void front_pool_want(struct env *);
void front_pool_forget_env(struct env *);
void front_pool_reloaded(void);
void front_pool_retire_all(void);
int front_pool_reap(pid_t, int);
void front_pool_stop(int);
char *front_worker_describe_exit(int);
void front_worker_clean_state_dir(void);
const char *front_worker_trash_dir(void);

#endif
