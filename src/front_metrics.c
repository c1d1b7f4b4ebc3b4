/*
 * Prometheus metrics (--metrics-listen ADDR): counters kept by the rest of
 * the front through front_metrics_*(), served as text format 0.0.4 on
 * GET /metrics, on an address of its own.
 *
 * The HTTP server is a small one of its own, because what a scrape needs
 * is small and what the front must not allow is not: one request per
 * connection (Connection: close), at most METRICS_CONNS_MAX connections,
 * each given METRICS_DEADLINE_MS from accept to its last byte out however
 * it trickles, and METRICS_REQUEST_MAX bytes of request line and headers.
 * A body is never read. Out of descriptors, it pauses accepting
 * (front_accept_failed), as the gRPC listener does.
 */
#include <sys/queue.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>

#include "front.h"
#include "log.h"
#include "util.h"

#define NBUCKETS_MAX 20

struct histogram {
	const double *le; /* upper bounds, seconds; +Inf is implicit */
	int nle;
	uint64_t counts[NBUCKETS_MAX]; /* per bucket, not cumulative */
	uint64_t count;
	double sum;
};

static const double call_le[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
static const double build_le[] = {
    0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600};

#define NLE(a) ((int)(sizeof(a) / sizeof((a)[0])))

static struct histogram call_hist = {call_le, NLE(call_le), {0}, 0, 0};
static struct histogram build_hist = {build_le, NLE(build_le), {0}, 0, 0};

/* Worker exits by cause; the names are the label values. */
static const char *exit_causes[] = {
    "clean", "limit", "deadline", "killed", "signal", "error"};
#define NCAUSES ((int)(sizeof(exit_causes) / sizeof(exit_causes[0])))

static struct {
	uint64_t sessions_total;
	uint64_t sessions_refused;
	uint64_t conns_refused;
	uint64_t calls_total;
	uint64_t env_hits, env_misses, env_evictions, env_failures;
	uint64_t worker_exits[NCAUSES];
	uint64_t spare_failures;
} m;

#define METRICS_CONNS_MAX 32
#define METRICS_REQUEST_MAX 8192
#define METRICS_DEADLINE_MS 10000
#define METRICS_PAUSE_MS 1000

/* One scrape's connection. */
struct mconn {
	TAILQ_ENTRY(mconn) mc_entry;
	struct bufferevent *mc_bev;
	struct event *mc_deadline;
};

static TAILQ_HEAD(, mconn) mconns = TAILQ_HEAD_INITIALIZER(mconns);
static unsigned mconns_n;
static struct evconnlistener *mlistener;
static struct event *mresume; /* after a pause (front_accept_failed) */
static time_t started;

static void
hist_add(struct histogram *h, double seconds)
{
	int i;

	for (i = 0; i < h->nle && seconds > h->le[i]; i++)
		;
	h->counts[i]++; /* i == nle: the +Inf bucket */
	h->count++;
	h->sum += seconds;
}

void
front_metrics_session(void)
{
	m.sessions_total++;
}

void
front_metrics_refused(void)
{
	m.sessions_refused++;
}

void
front_metrics_conn_refused(void)
{
	m.conns_refused++;
}

void
front_metrics_call_start(void)
{
	m.calls_total++;
}

void
front_metrics_call_done(uint64_t usec)
{
	hist_add(&call_hist, (double)usec / 1e6);
}

void
front_metrics_env(int hit)
{
	if (hit)
		m.env_hits++;
	else
		m.env_misses++;
}

void
front_metrics_env_built(uint64_t ms, int ok)
{
	if (ok)
		hist_add(&build_hist, (double)ms / 1e3);
	else
		m.env_failures++;
}

void
front_metrics_env_evicted(void)
{
	m.env_evictions++;
}

void
front_metrics_worker_exit(const char *cause)
{
	int i;

	for (i = 0; i < NCAUSES; i++)
		if (strcmp(cause, exit_causes[i]) == 0) {
			m.worker_exits[i]++;
			return;
		}
	m.worker_exits[NCAUSES - 1]++;
}

void
front_metrics_spare_failed(void)
{
	m.spare_failures++;
}

static void
put_head(
    struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(
	    b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void
put_hist(struct evbuffer *b, const char *name, const char *help,
    const struct histogram *h)
{
	uint64_t cum = 0;
	int i;

	put_head(b, name, "histogram", help);
	for (i = 0; i < h->nle; i++) {
		cum += h->counts[i];
		evbuffer_add_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n",
		    name, h->le[i], cum);
	}
	cum += h->counts[h->nle];
	evbuffer_add_printf(
	    b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
	evbuffer_add_printf(b, "%s_sum %.6f\n%s_count %" PRIu64 "\n", name,
	    h->sum, name, h->count);
}

static uint64_t
read_sessions(void)
{
	return (uint64_t)front_session_count();
}

static uint64_t
read_conns(void)
{
	return (uint64_t)front_h2_conns();
}

static uint64_t
read_spares(void)
{
	return (uint64_t)front_pool_count();
}

static uint64_t
read_started(void)
{
	return (uint64_t)started;
}

/*
 * One metric of the exposition: a counter kept in m (one per exit cause
 * with mt_bycause), a value read when served, or a histogram.
 */
struct metric {
	const char *mt_name;
	const char *mt_type;
	const char *mt_help;
	const uint64_t *mt_count;
	uint64_t (*mt_read)(void);
	const struct histogram *mt_hist;
	int mt_bycause;
};

/* clang-format off */
#define COUNTER(n, h, p)	{ n, "counter", h, p, NULL, NULL, 0 }
#define BY_CAUSE(n, h, p)	{ n, "counter", h, p, NULL, NULL, 1 }
#define GAUGE(n, h, fn)		{ n, "gauge", h, NULL, fn, NULL, 0 }
#define HISTOGRAM(n, h, hp)	{ n, "histogram", h, NULL, NULL, hp, 0 }

/* The whole exposition, in the order it is served. */
static const struct metric metrics[] = {
	GAUGE("remotemedia_sessions_active",
	    "Sessions open now.", read_sessions),
	COUNTER("remotemedia_sessions_total",
	    "Session streams started.", &m.sessions_total),
	COUNTER("remotemedia_sessions_refused_total",
	    "Sessions refused by a limit (--max-sessions and others).",
	    &m.sessions_refused),
	GAUGE("remotemedia_connections_active",
	    "Client connections open now.", read_conns),
	COUNTER("remotemedia_connections_refused_total",
	    "Client connections refused by --max-connections.",
	    &m.conns_refused),
	GAUGE("remotemedia_spare_sessions",
	    "Spare sessions ready (--session-pool).", read_spares),
	COUNTER("remotemedia_calls_total",
	    "Calls relayed to workers.", &m.calls_total),
	HISTOGRAM("remotemedia_call_duration_seconds",
	    "From a call's arrival to its last answer leaving the front.",
	    &call_hist),
	HISTOGRAM("remotemedia_env_build_duration_seconds",
	    "Successful environment builds.", &build_hist),
	COUNTER("remotemedia_env_cache_hits_total",
	    "Sessions whose environment was ready.", &m.env_hits),
	COUNTER("remotemedia_env_cache_misses_total",
	    "Sessions that waited for their environment to be built.",
	    &m.env_misses),
	COUNTER("remotemedia_env_cache_evictions_total",
	    "Environments evicted (--env-cache-size).", &m.env_evictions),
	COUNTER("remotemedia_env_build_failures_total",
	    "Environment builds that failed.", &m.env_failures),
	BY_CAUSE("remotemedia_worker_exits_total",
	    "Session workers reaped, by cause.", m.worker_exits),
	COUNTER("remotemedia_spare_restarts_total",
	    "Spare workers that failed or died unused, and were replaced.",
	    &m.spare_failures),
	GAUGE("remotemedia_start_time_seconds",
	    "When the daemon started, in seconds since the epoch.",
	    read_started),
};
/* clang-format on */

/* One metric: its HELP and TYPE lines, then its samples. */
static void
put_metric(struct evbuffer *b, const struct metric *mt)
{
	int i;

	if (mt->mt_hist != NULL) {
		put_hist(b, mt->mt_name, mt->mt_help, mt->mt_hist);
		return;
	}
	put_head(b, mt->mt_name, mt->mt_type, mt->mt_help);
	if (!mt->mt_bycause) {
		evbuffer_add_printf(b, "%s %" PRIu64 "\n", mt->mt_name,
		    mt->mt_read != NULL ? mt->mt_read() : *mt->mt_count);
		return;
	}
	for (i = 0; i < NCAUSES; i++)
		evbuffer_add_printf(b, "%s{cause=\"%s\"} %" PRIu64 "\n",
		    mt->mt_name, exit_causes[i], mt->mt_count[i]);
}

/* The whole exposition, in text format 0.0.4. */
void
front_metrics_write(struct evbuffer *b)
{
	size_t i;

	for (i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++)
		put_metric(b, &metrics[i]);
}

static void
mconn_free(struct mconn *mc)
{
	TAILQ_REMOVE(&mconns, mc, mc_entry);
	mconns_n--;
	bufferevent_free(mc->mc_bev);
	event_free(mc->mc_deadline);
	free(mc);
}

static void
mconn_deadline_cb(evutil_socket_t fd, short ev, void *arg)
{
	mconn_free(arg);
}

static void
mconn_event_cb(struct bufferevent *bev, short events, void *arg)
{
	if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
		mconn_free(arg);
}

/* All of the answer is out: the connection ends. */
static void
mconn_written_cb(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		mconn_free(arg);
}

/* Answer and close: status, headers, and body unless the method is HEAD. */
static void
mconn_reply(struct mconn *mc, int status, const char *reason, int head,
    const char *extra, struct evbuffer *body)
{
	struct evbuffer *out = bufferevent_get_output(mc->mc_bev);

	evbuffer_add_printf(out,
	    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	    "Connection: close\r\n%s\r\n",
	    status, reason,
	    status == 200 ? "text/plain; version=0.0.4; charset=utf-8"
	                  : "text/plain; charset=utf-8",
	    evbuffer_get_length(body), extra);
	if (!head)
		evbuffer_add_buffer(out, body);
	bufferevent_disable(mc->mc_bev, EV_READ);
	bufferevent_setcb(
	    mc->mc_bev, NULL, mconn_written_cb, mconn_event_cb, mc);
	bufferevent_enable(mc->mc_bev, EV_WRITE);
}

/* The request line, read: answer it. */
static void
mconn_request(struct mconn *mc, const char *line)
{
	char method[16], target[256], version[16];
	struct evbuffer *body = evbuffer_new();
	int head, n = 0;

	if (body == NULL)
		fatal("evbuffer_new");
	if (sscanf(line, "%15[A-Z] %255[^ ] %15[^ ]%n", method, target, version,
	        &n) != 3 ||
	    line[n] != '\0' || strncmp(version, "HTTP/1.", 7) != 0) {
		evbuffer_add_printf(body, "not an HTTP/1.x request line\n");
		mconn_reply(mc, 400, "Bad Request", 0, "", body);
	} else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
		evbuffer_add_printf(body, "only GET and HEAD\n");
		mconn_reply(mc, 405, "Method Not Allowed", 0,
		    "Allow: GET, HEAD\r\n", body);
	} else {
		head = strcmp(method, "HEAD") == 0;
		target[strcspn(target, "?")] = '\0';
		if (strcmp(target, "/metrics") != 0) {
			evbuffer_add_printf(body, "metrics are at /metrics\n");
			mconn_reply(mc, 404, "Not Found", head, "", body);
		} else {
			front_metrics_write(body);
			mconn_reply(mc, 200, "OK", head, "", body);
		}
	}
	evbuffer_free(body);
}

/*
 * Bytes of the request: once its headers have ended, answer by its first
 * line; past METRICS_REQUEST_MAX without their end, refuse it.
 */
static void
mconn_read_cb(struct bufferevent *bev, void *arg)
{
	struct mconn *mc = arg;
	struct evbuffer *in = bufferevent_get_input(bev), *body;
	struct evbuffer_ptr end;
	char *line;

	end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (end.pos == -1)
		end = evbuffer_search(in, "\n\n", 2, NULL);
	if (end.pos != -1) {
		line = evbuffer_readln(in, NULL, EVBUFFER_EOL_CRLF);
		mconn_request(mc, line != NULL ? line : "");
		free(line);
		return;
	}
	if (evbuffer_get_length(in) < METRICS_REQUEST_MAX)
		return;
	if ((body = evbuffer_new()) == NULL)
		fatal("evbuffer_new");
	evbuffer_add_printf(
	    body, "request headers over %d bytes\n", METRICS_REQUEST_MAX);
	mconn_reply(mc, 431, "Request Header Fields Too Large", 0, "", body);
	evbuffer_free(body);
}

static void
metrics_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int socklen, void *arg)
{
	/* Not front_timer_add: test_front_env links this without it. */
	struct timeval deadline = {METRICS_DEADLINE_MS / 1000, 0};
	struct mconn *mc;

	if (mconns_n >= METRICS_CONNS_MAX) {
		log_debug("metrics: %u connections already; closing a new one",
		    mconns_n);
		evutil_closesocket(fd);
		return;
	}
	mc = xcalloc(1, sizeof(*mc));
	if ((mc->mc_bev = bufferevent_socket_new(
	         front_base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL ||
	    (mc->mc_deadline = evtimer_new(
	         front_base, mconn_deadline_cb, mc)) == NULL)
		fatal("metrics: a new connection");
	TAILQ_INSERT_TAIL(&mconns, mc, mc_entry);
	mconns_n++;
	bufferevent_setwatermark(mc->mc_bev, EV_READ, 0, METRICS_REQUEST_MAX);
	bufferevent_setcb(mc->mc_bev, mconn_read_cb, NULL, mconn_event_cb, mc);
	bufferevent_enable(mc->mc_bev, EV_READ);
	evtimer_add(mc->mc_deadline, &deadline);
}

static void
metrics_error_cb(struct evconnlistener *l, void *arg)
{
	front_accept_failed(l, &mresume, "metrics", METRICS_PAUSE_MS);
}

/* --metrics-listen's address: a name (localhost) is resolved once, at start. */
static struct evutil_addrinfo *
metrics_resolve(void)
{
	struct evutil_addrinfo hints, *ai;
	char port_s[8];
	int rv;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = EVUTIL_AI_ADDRCONFIG;
	snprintf(port_s, sizeof(port_s), "%u", front_conf.fc_metrics_port);
	if ((rv = evutil_getaddrinfo(
	         front_conf.fc_metrics_host, port_s, &hints, &ai)) != 0)
		fatalx_config("--metrics-listen %s: %s",
		    front_conf.fc_metrics_host, evutil_gai_strerror(rv));
	return ai;
}

/* --check-config: what front_metrics_init would refuse. */
void
front_metrics_check(void)
{
	if (front_conf.fc_metrics_host[0] != '\0')
		evutil_freeaddrinfo(metrics_resolve());
}

/* Serve /metrics on --metrics-listen, if set. */
void
front_metrics_init(void)
{
	struct evutil_addrinfo *ai;
	char addr[64];
	uint16_t port;

	started = time(NULL);
	if (front_conf.fc_metrics_host[0] == '\0')
		return;
	ai = metrics_resolve();
	mlistener = evconnlistener_new_bind(front_base, metrics_accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    16, ai->ai_addr, (int)ai->ai_addrlen);
	evutil_freeaddrinfo(ai);
	if (mlistener == NULL)
		fatal("--metrics-listen %s:%u", front_conf.fc_metrics_host,
		    front_conf.fc_metrics_port);
	evconnlistener_set_error_cb(mlistener, metrics_error_cb);
	if (sock_hostport(evconnlistener_get_fd(mlistener), addr, sizeof(addr),
	        &port) == 0)
		log_info(strchr(addr, ':') != NULL ? "metrics on [%s]:%u"
		                                   : "metrics on %s:%u",
		    addr, port);
}

void
front_metrics_free(void)
{
	struct mconn *mc;

	while ((mc = TAILQ_FIRST(&mconns)) != NULL)
		mconn_free(mc);
	if (mlistener != NULL)
		evconnlistener_free(mlistener);
	mlistener = NULL;
	if (mresume != NULL)
		event_free(mresume);
	mresume = NULL;
}
