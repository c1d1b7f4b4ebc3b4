/*
 * Prometheus metrics (--metrics-listen ADDR): counters kept by the rest of
 * the front through front_metrics_*(), served as text format 0.0.4 on
 * GET /metrics by libevent's HTTP server on an address of its own.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/http.h>

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

static struct evhttp *http;
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
metrics_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *b;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "Allow", "GET, HEAD");
		evhttp_send_error(req, 405, "only GET");
		return;
	}
	if ((b = evbuffer_new()) == NULL) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	front_metrics_write(b);
	evhttp_add_header(evhttp_request_get_output_headers(req),
	    "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
other_cb(struct evhttp_request *req, void *arg)
{
	evhttp_send_error(req, 404, "metrics are at /metrics");
}

/* Serve /metrics on --metrics-listen, if set. */
void
front_metrics_init(void)
{
	struct evhttp_bound_socket *bound;
	const char *host = front_conf.fc_metrics_host;
	char addr[64];
	uint16_t port;

	started = time(NULL);
	if (front_conf.fc_metrics_host[0] == '\0')
		return;
	if ((http = evhttp_new(front_base)) == NULL)
		fatalx("metrics: evhttp_new");
	/* Other methods get 405 from metrics_cb, not 501 from libevent. */
	evhttp_set_allowed_methods(http,
	    EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
	        EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_max_headers_size(http, 16384);
	evhttp_set_max_body_size(http, 0);
	evhttp_set_timeout(http, 10);
	evhttp_set_cb(http, "/metrics", metrics_cb, NULL);
	evhttp_set_gencb(http, other_cb, NULL);
	bound = evhttp_bind_socket_with_handle(
	    http, host, front_conf.fc_metrics_port);
	if (bound == NULL)
		fatal(
		    "--metrics-listen %s:%u", host, front_conf.fc_metrics_port);
	if (sock_hostport(evhttp_bound_socket_get_fd(bound), addr, sizeof(addr),
	        &port) == 0)
		log_info(strchr(addr, ':') != NULL ? "metrics on [%s]:%u"
		                                   : "metrics on %s:%u",
		    addr, port);
}

void
front_metrics_free(void)
{
	if (http != NULL)
		evhttp_free(http);
	http = NULL;
}
