/*
 * The front's options (architecture section 9). One table names each
 * option once: its type, where it is stored, its bounds, its default and
 * its help. The same table parses flags and the config file, prints
 * --help and the man page, and fills in the defaults, so an option cannot
 * be known to one of them and missing from another.
 */
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <arpa/inet.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "front.h"
#include "log.h"
#include "util.h"

#define FRONT_CONFIG_FILE "/etc/remotemedia/remotemediad.conf"

enum opt_type {
	OPT_STRING, /* char *, any text */
	OPT_PATH, /* char *, an absolute path */
	OPT_URL, /* char *, or "none" for NULL */
	OPT_LIST, /* char *[FRONT_MAX_REPEAT] and a count; repeatable */
	OPT_CIDRS, /* the same, of IPv4 or IPv6 CIDRs */
	OPT_ONOFF, /* int, on or off */
	OPT_U32, /* uint32_t in [lo, hi] */
	OPT_INT, /* int in [lo, hi] */
	OPT_LONG, /* long in [lo, hi] */
	OPT_SIZE, /* uint64_t bytes in [lo, hi]: 512K, 10G */
	OPT_MS, /* uint64_t milliseconds in [lo, hi]: 30s, 10m; 0 if lo 0 */
	OPT_LISTEN, /* char[256] host at off, uint16_t port at count */
	OPT_LEVEL, /* int, a log level */
	OPT_NETWORK, /* int, off, isolated or host */
	OPT_UIDS, /* fc_uid_first and fc_uid_last */
};

struct opt {
	const char *name; /* without the leading "--" */
	enum opt_type type;
	size_t off; /* the field in struct front_config */
	size_t count; /* OPT_LIST: its count field */
	uint64_t lo, hi;
	const char *dflt; /* parsed as a value; NULL: none */
	const char *arg; /* the value's name in --help */
	const char *help;
};

#define F(field) offsetof(struct front_config, field)

/* Section headings: an entry with no type of its own. */
#define SECTION(title) \
	{ \
		title, 0, SIZE_MAX, 0, 0, 0, NULL, NULL, NULL \
	}

static const struct opt opts[] = {
    SECTION("general"),
    {"config", OPT_PATH, F(fc_config), 0, 0, 0, NULL, "FILE",
        "read options from FILE first (default " FRONT_CONFIG_FILE
        " when it exists); flags override it"},
    {"listen", OPT_LISTEN, F(fc_host), F(fc_port), 0, 0, "127.0.0.1:50052",
        "HOST:PORT",
        "address to serve on, [IPv6]:PORT too; port 0 picks a free port"},
    {"metrics-listen", OPT_LISTEN, F(fc_metrics_host), F(fc_metrics_port), 0, 0,
        NULL, "HOST:PORT",
        "serve Prometheus metrics on GET /metrics at this address (default: "
        "none)"},
    {"state-dir", OPT_PATH, F(fc_state_dir), 0, 0, 0, "/var/lib/remotemedia",
        "DIR", "session directories live here"},
    {"worker", OPT_STRING, F(fc_worker), 0, 0, 0, NULL, "PATH",
        "the worker binary (default: remotemedia-worker beside "
        "remotemediad)"},
    {"log-level", OPT_LEVEL, F(fc_log_level), 0, 0, 0, "info", "LEVEL",
        "error, warn, info or debug"},
    {"busy-poll", OPT_U32, F(fc_busy_poll_us), 0, 0, 10000, "100",
        "MICROSECONDS",
        "after a message the front polls this long for the answer (a "
        "worker's to a client's, a client's next one to a worker's) before "
        "it sleeps, while polling pays: lower latency for a little CPU; 0: "
        "sleep at once"},
    {"session-busy-poll", OPT_U32, F(fc_session_busy_poll_us), 0, 0, 10000,
        "400", "MICROSECONDS",
        "the same for each worker after its own traffic, while polling pays "
        "(its calls come within about this long of each other); 0: sleep "
        "at once"},
    SECTION("environments (pip_packages)"),
    {"pip-index-url", OPT_URL, F(fc_pip_index_url), 0, 0, 0,
        "https://pypi.org/simple", "URL", "the index pip uses, or none"},
    {"pip-extra-index-url", OPT_LIST, F(fc_pip_extra_index),
        F(fc_n_pip_extra_index), 0, 0, NULL, "URL",
        "another index; repeatable"},
    {"pip-find-links", OPT_LIST, F(fc_pip_find_links), F(fc_n_pip_find_links),
        0, 0, NULL, "DIR", "a directory of wheels; repeatable"},
    {"pip-system-site-packages", OPT_ONOFF, F(fc_pip_system_site), 0, 0, 0,
        "on", "on|off", "environments see the host's Python packages"},
    {"pip-allow-source", OPT_ONOFF, F(fc_pip_allow_source), 0, 0, 0, "off",
        "on|off", "allow source builds (setup.py)"},
    {"pip-timeout", OPT_MS, F(fc_pip_timeout_ms), 0, 1, UINT64_MAX, "10m",
        "DURATION", "bound on one install"},
    {"env-cache-dir", OPT_PATH, F(fc_env_cache_dir), 0, 0, 0, NULL, "DIR",
        "cached environments (default STATE-DIR/envs)"},
    {"env-cache-size", OPT_SIZE, F(fc_env_cache_size), 0, 0, UINT64_MAX, "10G",
        "SIZE", "evict unused environments above this"},
    {"env-builds", OPT_INT, F(fc_env_builds), 0, 1, 64, "2", "N",
        "concurrent builds"},
    {"session-pool", OPT_U32, F(fc_session_pool), 0, 0, 64, "2", "N",
        "spare sessions started ahead, for sessions with no packages; "
        "0: none"},
    {"builder-uid", OPT_LONG, F(fc_builder_uid), 0, 1, 4294967294ULL, "60999",
        "UID", "uid environment builds run as (not root)"},
    SECTION("sessions and the sandbox"),
    {"sandbox", OPT_ONOFF, F(fc_sandbox), 0, 0, 0, "on", "on|off",
        "confine sessions; off is for development only"},
    {"session-uids", OPT_UIDS, 0, 0, 0, 0, "61000-61999", "FIRST-LAST",
        "one uid per session, none of them root"},
    {"session-network", OPT_NETWORK, F(fc_network), 0, 0, 0, "isolated",
        "off|isolated|host", "what network a session sees"},
    {"session-egress-allow", OPT_CIDRS, F(fc_egress_allow),
        F(fc_n_egress_allow), 0, 0, NULL, "CIDR",
        "an isolated session may reach these addresses despite the denials; "
        "repeatable"},
    {"session-egress-deny", OPT_CIDRS, F(fc_egress_deny), F(fc_n_egress_deny),
        0, 0, NULL, "CIDR",
        "an isolated session may not reach these, besides the host's own "
        "addresses and the private, link-local, loopback and multicast "
        "ranges; repeatable"},
    {"session-memory", OPT_SIZE, F(fc_session_memory), 0, 1 << 20, UINT64_MAX,
        "1G", "SIZE", "memory of one session"},
    {"session-pids", OPT_U32, F(fc_session_pids), 0, 4, 1000000, "128", "N",
        "processes and threads of one session"},
    {"session-cpu", OPT_U32, F(fc_session_cpu), 0, 0, 6400, "100", "PERCENT",
        "CPU share of one session (200: two cores); 0: no CPU limit, and "
        "sessions stay out of the cpu controller (v1), whose scheduling costs "
        "busy sessions CPU time"},
    {"session-disk", OPT_SIZE, F(fc_session_disk), 0, 1 << 20, UINT64_MAX,
        "256M", "SIZE", "session directory and /tmp, each"},
    {"session-max-lifetime", OPT_MS, F(fc_session_lifetime_ms), 0, 0,
        UINT64_MAX, "24h", "DURATION", "a session ends after this; 0: never"},
    {"session-idle-timeout", OPT_MS, F(fc_session_idle_ms), 0, 0, UINT64_MAX,
        "0", "DURATION", "a session with no call for this long ends; 0: never"},
    {"seccomp-log", OPT_ONOFF, F(fc_seccomp_log), 0, 0, 0, "off", "on|off",
        "log seccomp violations instead of killing"},
    SECTION("authentication"),
    {"token-file", OPT_PATH, F(fc_token_file), 0, 0, 0, NULL, "FILE",
        "lines NAME:TOKEN[:admin]; clients send authorization: Bearer "
        "TOKEN (re-read on SIGHUP)"},
    {"allow-unauthenticated", OPT_ONOFF, F(fc_allow_unauth), 0, 0, 0, "off",
        "on|off", "serve a non-loopback address without a token file"},
    SECTION("TLS (reloaded on SIGHUP)"),
    {"tls-cert", OPT_STRING, F(fc_tls_cert), 0, 0, 0, NULL, "FILE",
        "serve TLS 1.2/1.3 with ALPN h2, with --tls-key"},
    {"tls-key", OPT_STRING, F(fc_tls_key), 0, 0, 0, NULL, "FILE",
        "the certificate's private key"},
    {"tls-client-ca", OPT_STRING, F(fc_tls_client_ca), 0, 0, 0, NULL, "FILE",
        "require client certificates signed by it"},
    SECTION("limits"),
    {"max-sessions", OPT_U32, F(fc_max_sessions), 0, 1, 1000000, "1000", "N",
        "sessions at once"},
    {"max-sessions-per-token", OPT_U32, F(fc_max_sessions_per_token), 0, 1,
        1000000, "100", "N", "sessions at once for one token"},
    {"max-streams", OPT_U32, F(fc_max_streams), 0, 1, 100000, "100", "N",
        "concurrent streams per connection"},
    {"max-connections", OPT_U32, F(fc_max_conns), 0, 1, 1000000, "4096", "N",
        "client connections open at once; an RPC on one more fails with "
        "RESOURCE_EXHAUSTED, and that connection is closed"},
    {"max-message-size", OPT_SIZE, F(fc_max_message), 0, 1024, 1ULL << 31, "4M",
        "SIZE", "one gRPC message"},
    {"max-header-list-size", OPT_SIZE, F(fc_max_header_list), 0, 1024, 1U << 24,
        "16K", "SIZE", "the headers of one request"},
    {"max-value-size", OPT_SIZE, F(fc_max_value), 0, 1024, UINT64_MAX, "1G",
        "SIZE", "one chunked value"},
    {"max-inflight-calls", OPT_U32, F(fc_max_inflight), 0, 1, 1000000, "1000",
        "N", "calls in flight in one session"},
    {"handshake-timeout", OPT_MS, F(fc_handshake_ms), 0, 1, UINT64_MAX, "10s",
        "DURATION",
        "a connection's TLS and HTTP/2 preface; a Session's Open, each this "
        "long bringing bytes of it until its object is whole"},
    {"open-timeout", OPT_MS, F(fc_open_timeout_ms), 0, 0, UINT64_MAX, "60s",
        "DURATION",
        "a Session's worker must answer its Open (its object loaded) this "
        "long after the object is whole; 0: no bound"},
    {"idle-timeout", OPT_MS, F(fc_conn_idle_ms), 0, 1, UINT64_MAX, "10m",
        "DURATION",
        "a connection without a session that sends no HEADERS or DATA "
        "(PINGs do not count) for this long is closed"},
    {"max-ping-rate", OPT_U32, F(fc_ping_rate), 0, 1, 100000, "10", "N",
        "PINGs per second allowed, sustained"},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

static int
opt_is_section(const struct opt *o)
{
	return o->off == SIZE_MAX;
}

static int
opt_is_config(const struct opt *o)
{
	return o->type == OPT_PATH && o->off == F(fc_config);
}

static const struct opt *
opt_find(const char *name)
{
	size_t i;

	for (i = 0; i < NOPTS; i++)
		if (!opt_is_section(&opts[i]) &&
		    strcmp(opts[i].name, name) == 0)
			return &opts[i];
	return NULL;
}

static void *
opt_field(struct front_config *fc, size_t off)
{
	return (char *)fc + off;
}

static int
opt_bad(char *err, size_t errlen, const struct opt *o, const char *want,
    const char *val)
{
	snprintf(
	    err, errlen, "--%s: expected %s, got '%s'", o->name, want, val);
	return -1;
}

/* An unsigned decimal number, digits only. */
static int
opt_number(const char *val, uint64_t *out)
{
	char *end;

	if (*val < '0' || *val > '9')
		return -1;
	errno = 0;
	*out = strtoull(val, &end, 10);
	return errno != 0 || *end != '\0' ? -1 : 0;
}

/* What a bounded value must look like, for error messages. */
static void
opt_want(const struct opt *o, const char *what, char *want, size_t len)
{
	if (o->hi == UINT64_MAX && o->lo == 0)
		snprintf(want, len, "%s", what);
	else if (o->hi == UINT64_MAX)
		snprintf(want, len, "%s of at least %llu", what,
		    (unsigned long long)o->lo);
	else
		snprintf(want, len, "%s from %llu to %llu", what,
		    (unsigned long long)o->lo, (unsigned long long)o->hi);
}

/* A size as a person writes it: 1024 as 1K, 1 << 20 as 1M. */
static void
opt_fmt_size(uint64_t v, char *buf, size_t len)
{
	const char *units = "KMGT";
	int u = -1;

	while (v >= 1024 && v % 1024 == 0 && u < 3) {
		v /= 1024;
		u++;
	}
	if (u < 0)
		snprintf(buf, len, "%llu", (unsigned long long)v);
	else
		snprintf(buf, len, "%llu%c", (unsigned long long)v, units[u]);
}

static void
opt_want_size(const struct opt *o, char *want, size_t len)
{
	char lo[32], hi[32];

	opt_fmt_size(o->lo, lo, sizeof(lo));
	opt_fmt_size(o->hi, hi, sizeof(hi));
	if (o->lo == 0 && o->hi == UINT64_MAX)
		snprintf(want, len, "a size such as 512K, 4M or 10G");
	else if (o->hi == UINT64_MAX)
		snprintf(want, len, "a size of at least %s", lo);
	else
		snprintf(want, len, "a size from %s to %s", lo, hi);
}

static int
opt_set_string(char **field, const char *val)
{
	free(*field);
	*field = xstrdup(val);
	return 0;
}

#define OPT_LOCATION_WANT \
	"an http://, https:// or file:// URL, or an absolute path"

/*
 * Where pip finds packages: an http(s) URL, which builds reach through a
 * forward, or a local directory (an absolute path or a file:// URL),
 * which they may read. Nothing else would work; control characters would
 * only confuse pip and the log.
 */
static int
opt_location(const char *v)
{
	const char *c;

	for (c = v; *c != '\0'; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return 0;
	return (strncmp(v, "http://", 7) == 0 && v[7] != '\0') ||
	    (strncmp(v, "https://", 8) == 0 && v[8] != '\0') ||
	    strncmp(v, "file:///", 8) == 0 ||
	    strncmp(v, "file://localhost/", 17) == 0 || v[0] == '/';
}

/* Whether host is an IPv4 or IPv6 address (the front listens on one). */
static int
opt_ip_literal(const char *host)
{
	struct in6_addr a;

	return inet_pton(AF_INET, host, &a) == 1 ||
	    inet_pton(AF_INET6, host, &a) == 1;
}

/* Whether host is an address, or a name made of what names are made of. */
static int
opt_host_name(const char *host)
{
	return opt_ip_literal(host) ||
	    host[strspn(host,
	        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	        ".-")] == '\0';
}

/* FIRST-LAST: a range of non-root uids. */
static int
opt_uids(struct front_config *fc, const char *val)
{
	char first[32];
	const char *dash = strchr(val, '-');
	uint64_t a, b;

	if (dash == NULL || (size_t)(dash - val) >= sizeof(first))
		return -1;
	memcpy(first, val, (size_t)(dash - val));
	first[dash - val] = '\0';
	if (opt_number(first, &a) == -1 || opt_number(dash + 1, &b) == -1 ||
	    a < 1 || b > 4294967294ULL || b < a || b - a >= FRONT_UIDS_MAX)
		return -1;
	fc->fc_uid_first = (uint32_t)a;
	fc->fc_uid_last = (uint32_t)b;
	return 0;
}

/* A number, size or duration in [lo, hi]; the type says which. */
static int
opt_scalar(struct front_config *fc, const struct opt *o, const char *val,
    char *err, size_t errlen)
{
	char want[96];
	uint64_t v;
	int rv;

	switch (o->type) {
	case OPT_SIZE:
		rv = parse_size(val, &v);
		opt_want_size(o, want, sizeof(want));
		break;
	case OPT_MS:
		rv = parse_duration_ms(val, &v);
		if (rv == -1 && o->lo == 0 && strcmp(val, "0") == 0) {
			v = 0;
			rv = 0;
		}
		snprintf(want, sizeof(want),
		    "a duration such as 30s, 10m or 2h%s",
		    o->lo == 0 ? ", or 0" : "");
		break;
	default:
		rv = opt_number(val, &v);
		opt_want(o, "a number", want, sizeof(want));
		break;
	}
	if (rv == -1 || v < o->lo || v > o->hi)
		return opt_bad(err, errlen, o, want, val);
	switch (o->type) {
	case OPT_U32:
		*(uint32_t *)opt_field(fc, o->off) = (uint32_t)v;
		break;
	case OPT_INT:
		*(int *)opt_field(fc, o->off) = (int)v;
		break;
	case OPT_LONG:
		*(long *)opt_field(fc, o->off) = (long)v;
		break;
	default: /* OPT_SIZE, OPT_MS */
		*(uint64_t *)opt_field(fc, o->off) = v;
		break;
	}
	return 0;
}

/* One more value of a repeatable option. */
static int
opt_add_list(struct front_config *fc, const struct opt *o, const char *val,
    char *err, size_t errlen)
{
	int *count = opt_field(fc, o->count);

	if (*count >= FRONT_MAX_REPEAT) {
		snprintf(err, errlen, "--%s: at most %d times", o->name,
		    FRONT_MAX_REPEAT);
		return -1;
	}
	((char **)opt_field(fc, o->off))[(*count)++] = xstrdup(val);
	return 0;
}

/* Apply one option's value; write a message to err on failure. */
static int
opt_apply(struct front_config *fc, const struct opt *o, const char *val,
    char *err, size_t errlen)
{
	static const char *networks[] = {"off", "isolated", "host"};
	char cidr[64], host[sizeof(fc->fc_host)];
	uint16_t port;
	size_t i;
	int grpc;

	switch (o->type) {
	case OPT_STRING:
		return opt_set_string(opt_field(fc, o->off), val);
	case OPT_PATH:
		if (*val != '/')
			return opt_bad(err, errlen, o, "an absolute path", val);
		return opt_set_string(opt_field(fc, o->off), val);
	case OPT_URL:
		if (strcmp(val, "none") == 0) {
			free(*(char **)opt_field(fc, o->off));
			*(char **)opt_field(fc, o->off) = NULL;
			return 0;
		}
		if (!opt_location(val))
			return opt_bad(err, errlen, o, OPT_LOCATION_WANT, val);
		return opt_set_string(opt_field(fc, o->off), val);
	case OPT_CIDRS:
		if (parse_cidr(val, cidr, sizeof(cidr)) == 0)
			return opt_bad(err, errlen, o,
			    "an IPv4 or IPv6 CIDR such as 10.1.0.0/16", val);
		return opt_add_list(fc, o, val, err, errlen);
	case OPT_LIST: /* the pip locations */
		if (!opt_location(val))
			return opt_bad(err, errlen, o, OPT_LOCATION_WANT, val);
		return opt_add_list(fc, o, val, err, errlen);
	case OPT_ONOFF:
		if (parse_onoff(val, opt_field(fc, o->off)) == -1)
			return opt_bad(err, errlen, o, "on or off", val);
		return 0;
	case OPT_LISTEN:
		/* The gRPC address is what token rules judge: an address.
		 * Metrics may name a host (localhost), resolved at start. */
		grpc = o->off == offsetof(struct front_config, fc_host);
		if (parse_hostport(val, host, sizeof(host), &port) == -1 ||
		    !(grpc ? opt_ip_literal(host) : opt_host_name(host)))
			return opt_bad(err, errlen, o,
			    grpc ? "IPv4:PORT or [IPv6]:PORT, an address of "
			           "this host"
			         : "HOST:PORT or [IPv6]:PORT",
			    val);
		memcpy(opt_field(fc, o->off), host, sizeof(host));
		memcpy(opt_field(fc, o->count), &port, sizeof(port));
		return 0;
	case OPT_LEVEL:
		if ((fc->fc_log_level = log_parse_level(val)) == -1)
			return opt_bad(
			    err, errlen, o, "error, warn, info or debug", val);
		return 0;
	case OPT_NETWORK:
		for (i = 0; i < sizeof(networks) / sizeof(networks[0]); i++)
			if (strcmp(val, networks[i]) == 0) {
				fc->fc_network = (int)i;
				return 0;
			}
		return opt_bad(err, errlen, o, "off, isolated or host", val);
	case OPT_UIDS:
		if (opt_uids(fc, val) == -1)
			return opt_bad(err, errlen, o,
			    "FIRST-LAST, non-root uids, at most 1048576 of "
			    "them",
			    val);
		return 0;
	default:
		return opt_scalar(fc, o, val, err, errlen);
	}
}

/* Empty a repeatable option's list (flags replace the file's values). */
static void
opt_clear_list(struct front_config *fc, const struct opt *o)
{
	char **list = opt_field(fc, o->off);
	int *count = opt_field(fc, o->count), i;

	for (i = 0; i < *count; i++) {
		free(list[i]);
		list[i] = NULL;
	}
	*count = 0;
}

/* A duration as a person writes it: 600000 ms as 10m. */
static void
opt_fmt_ms(uint64_t ms, char *buf, size_t len)
{
	if (ms == 0)
		snprintf(buf, len, "0");
	else if (ms % 3600000 == 0)
		snprintf(buf, len, "%lluh", (unsigned long long)(ms / 3600000));
	else if (ms % 60000 == 0)
		snprintf(buf, len, "%llum", (unsigned long long)(ms / 60000));
	else if (ms % 1000 == 0)
		snprintf(buf, len, "%llus", (unsigned long long)(ms / 1000));
	else
		snprintf(buf, len, "%llums", (unsigned long long)ms);
}

/* A repeatable option's values, comma-separated ("none" for none). */
static void
opt_format_list(
    const struct front_config *fc, const struct opt *o, char *buf, size_t len)
{
	char *const *list = (char *const *)((const char *)fc + o->off);
	int n = *(const int *)((const char *)fc + o->count), i;
	size_t off = 0;

	snprintf(buf, len, "none");
	for (i = 0; i < n && off < len; i++)
		off += (size_t)snprintf(
		    buf + off, len - off, "%s%s", i ? "," : "", list[i]);
}

/* An option's current value, written as its flag would take it. */
static void
opt_format(
    const struct front_config *fc, const struct opt *o, char *buf, size_t len)
{
	static const char *networks[] = {"off", "isolated", "host"};
	const void *f = (const char *)fc + o->off;
	const char *str;

	switch (o->type) {
	case OPT_STRING:
	case OPT_PATH:
	case OPT_URL:
		str = *(char *const *)f;
		snprintf(buf, len, "%s", str != NULL ? str : "none");
		break;
	case OPT_LIST:
	case OPT_CIDRS:
		opt_format_list(fc, o, buf, len);
		break;
	case OPT_ONOFF:
		snprintf(buf, len, "%s", *(const int *)f ? "on" : "off");
		break;
	case OPT_U32:
		snprintf(buf, len, "%u", *(const uint32_t *)f);
		break;
	case OPT_INT:
		snprintf(buf, len, "%d", *(const int *)f);
		break;
	case OPT_LONG:
		snprintf(buf, len, "%ld", *(const long *)f);
		break;
	case OPT_SIZE:
		opt_fmt_size(*(const uint64_t *)f, buf, len);
		break;
	case OPT_MS:
		opt_fmt_ms(*(const uint64_t *)f, buf, len);
		break;
	case OPT_LISTEN:
		snprintf(buf, len,
		    strchr((const char *)f, ':') != NULL ? "[%s]:%u" : "%s:%u",
		    (const char *)f,
		    *(const uint16_t *)((const char *)fc + o->count));
		break;
	case OPT_LEVEL:
		snprintf(buf, len, "%s", log_level_name(*(const int *)f));
		break;
	case OPT_NETWORK:
		snprintf(buf, len, "%s", networks[fc->fc_network % 3]);
		break;
	case OPT_UIDS:
		snprintf(buf, len, "%u-%u", fc->fc_uid_first, fc->fc_uid_last);
		break;
	}
}

/*
 * Call cb with the name and current value of each option of a section
 * ("limits", "sessions and the sandbox"): what rmctl info shows.
 */
void
front_config_section(const struct front_config *fc, const char *section,
    void (*cb)(void *, const char *, const char *), void *arg)
{
	char value[300];
	size_t i;
	int in = 0;

	for (i = 0; i < NOPTS; i++) {
		if (opt_is_section(&opts[i])) {
			in = strcmp(opts[i].name, section) == 0;
			continue;
		}
		if (!in)
			continue;
		opt_format(fc, &opts[i], value, sizeof(value));
		cb(arg, opts[i].name, value);
	}
}

/* Free what a parsed configuration holds (strings and lists). */
void
front_config_free(struct front_config *fc)
{
	char **list;
	size_t i;
	int j;

	for (i = 0; i < NOPTS; i++) {
		if (opt_is_section(&opts[i]))
			continue;
		switch (opts[i].type) {
		case OPT_STRING:
		case OPT_PATH:
		case OPT_URL:
			free(*(char **)opt_field(fc, opts[i].off));
			break;
		case OPT_LIST:
		case OPT_CIDRS:
			list = opt_field(fc, opts[i].off);
			for (j = 0; j < *(int *)opt_field(fc, opts[i].count);
			     j++)
				free(list[j]);
			break;
		default:
			break;
		}
	}
}

/*
 * What SIGHUP may change: the options of the "limits" section, and the
 * session limits. They apply to what comes next (connections, sessions,
 * calls); the rest (addresses, the sandbox, uids, environments) is fixed
 * at start.
 */
static int
opt_reloadable(const struct opt *o, const char *section)
{
	return strcmp(section, "limits") == 0 ||
	    (strcmp(section, "sessions and the sandbox") == 0 &&
	        (o->type == OPT_SIZE || o->type == OPT_U32 ||
	            o->type == OPT_MS));
}

/*
 * SIGHUP: read the config file and argv again and take the reloadable
 * options from them, logging each change. Returns how many changed, and
 * in *sessions how many of them a spare, started before, holds in its
 * Init: the session limits, and the limits that its Ready reports
 * (--max-value-size, which the worker enforces too, --max-message-size,
 * --max-inflight-calls); -1 with a message in err, and nothing changed,
 * if the file is wrong.
 */
/* The options as parsed at start, before the server set any itself: what a
 * SIGHUP compares the options it cannot apply with. */
static struct front_config conf_at_start;
static int conf_kept, listen_passed;

void
front_config_keep(const struct front_config *fc)
{
	conf_at_start = *fc;
	conf_kept = 1;
}

/* Socket activation: the passed socket, not --listen, is served. */
void
front_config_listen_passed(void)
{
	listen_passed = 1;
}

static int
opt_str_equal(const char *a, const char *b)
{
	return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Whether o has the same value in a and b, whatever its length. */
static int
opt_equal(const struct front_config *a, const struct front_config *b,
    const struct opt *o)
{
	char va[300], vb[300];
	int n, i;

	switch (o->type) {
	case OPT_STRING:
	case OPT_PATH:
	case OPT_URL:
		return opt_str_equal(*(char *const *)((const char *)a + o->off),
		    *(char *const *)((const char *)b + o->off));
	case OPT_LIST:
	case OPT_CIDRS:
		n = *(const int *)((const char *)a + o->count);
		if (n != *(const int *)((const char *)b + o->count))
			return 0;
		for (i = 0; i < n; i++)
			if (!opt_str_equal(
			        ((char *const *)((const char *)a + o->off))[i],
			        ((char *const *)((const char *)b + o->off))[i]))
				return 0;
		return 1;
	default: /* numbers, an address, a range: short */
		opt_format(a, o, va, sizeof(va));
		opt_format(b, o, vb, sizeof(vb));
		return strcmp(va, vb) == 0;
	}
}

/* An option a SIGHUP cannot apply changed: say so, rather than nothing. */
static void
opt_not_reloaded(const struct front_config *nc, const struct opt *o)
{
	char was[300], now[300];

	if (!conf_kept || opt_is_config(o) ||
	    (listen_passed && o->type == OPT_LISTEN))
		return;
	if (opt_equal(&conf_at_start, nc, o))
		return;
	opt_format(&conf_at_start, o, was, sizeof(was));
	opt_format(nc, o, now, sizeof(now));
	log_warnx("SIGHUP: --%s %s (was %s) takes effect only when the server "
	          "restarts",
	    o->name, now, was);
}

int
front_config_reload(struct front_config *fc, int argc, char **argv,
    int *sessions, char *err, size_t errlen)
{
	struct front_config *nc = xmalloc(sizeof(*nc));
	const char *section = "";
	char was[300], now[300];
	size_t i, size;
	int n = 0, rv;

	*sessions = 0;
	front_config_defaults(nc);
	nc->fc_config_default = fc->fc_config_default;
	rv = front_config_parse(nc, argc, argv, err, errlen);
	for (i = 0; rv == CONFIG_RUN && i < NOPTS; i++) {
		if (opt_is_section(&opts[i])) {
			section = opts[i].name;
			continue;
		}
		if (!opt_reloadable(&opts[i], section)) {
			opt_not_reloaded(nc, &opts[i]);
			continue;
		}
		opt_format(fc, &opts[i], was, sizeof(was));
		opt_format(nc, &opts[i], now, sizeof(now));
		if (strcmp(was, now) == 0)
			continue;
		size = opts[i].type == OPT_U32 ? sizeof(uint32_t)
		                               : sizeof(uint64_t);
		memcpy(opt_field(fc, opts[i].off), opt_field(nc, opts[i].off),
		    size);
		log_info("SIGHUP: --%s %s (was %s)", opts[i].name, now, was);
		*sessions += strcmp(section, "limits") != 0 ||
		    opts[i].off == F(fc_max_value) ||
		    opts[i].off == F(fc_max_message) ||
		    opts[i].off == F(fc_max_inflight) ||
		    opts[i].off == F(fc_max_streams);
		n++;
	}
	if (rv != CONFIG_RUN && rv != CONFIG_ERROR)
		snprintf(err, errlen, "unexpected result %d", rv);
	front_config_free(nc);
	free(nc);
	return rv == CONFIG_RUN ? n : -1;
}

/* Fill in the defaults; --worker defaults to the binary beside ours. */
void
front_config_defaults(struct front_config *fc)
{
	char self[PATH_MAX], *slash, err[256];
	ssize_t n;
	size_t i;

	memset(fc, 0, sizeof(*fc));
	for (i = 0; i < NOPTS; i++)
		if (!opt_is_section(&opts[i]) && opts[i].dflt != NULL &&
		    opt_apply(fc, &opts[i], opts[i].dflt, err, sizeof(err)) ==
		        -1)
			fatalx("default of --%s: %s", opts[i].name, err);
	fc->fc_config_default = FRONT_CONFIG_FILE;
	fc->fc_grace_ms = 2000;
	fc->fc_exit_wait_ms = 2000;
	n = readlink("/proc/self/exe", self, sizeof(self) - 32);
	if (n > 0) {
		self[n] = '\0';
		if ((slash = strrchr(self, '/')) != NULL) {
			strcpy(slash + 1, "remotemedia-worker");
			fc->fc_worker = xstrdup(self);
			return;
		}
	}
	fc->fc_worker = xstrdup("remotemedia-worker");
}

/* Wrap text at width columns, each line indented by indent. */
static void
print_wrapped(FILE *f, const char *text, int indent, int width)
{
	const char *p = text, *space;
	int col = indent, len;

	while (*p != '\0') {
		space = strchr(p, ' ');
		len = space == NULL ? (int)strlen(p) : (int)(space - p);
		if (col > indent && col + 1 + len > width) {
			fprintf(f, "\n%*s", indent, "");
			col = indent;
		} else if (col > indent) {
			fputc(' ', f);
			col++;
		}
		fprintf(f, "%.*s", len, p);
		col += len;
		p += len;
		while (*p == ' ')
			p++;
	}
	fputc('\n', f);
}

void
front_config_usage(void)
{
	char flag[96], help[512];
	const struct opt *o;
	size_t i;

	fprintf(stderr,
	    "usage: remotemediad [--config FILE] [--OPTION VALUE ...]\n"
	    "       remotemediad --check-config [--config FILE] "
	    "[--OPTION VALUE ...]\n"
	    "Every option is also a key of the config file: "
	    "\"listen = 0.0.0.0:50052\".\n");
	for (i = 0; i < NOPTS; i++) {
		o = &opts[i];
		if (opt_is_section(o)) {
			fprintf(stderr, "%s:\n", o->name);
			continue;
		}
		snprintf(flag, sizeof(flag), "  --%s %s", o->name, o->arg);
		if (o->dflt != NULL)
			snprintf(help, sizeof(help), "%s (default %s)", o->help,
			    o->dflt);
		else
			snprintf(help, sizeof(help), "%s", o->help);
		if (strlen(flag) < 30)
			fprintf(stderr, "%-30s", flag);
		else
			fprintf(stderr, "%s\n%30s", flag, "");
		print_wrapped(stderr, help, 30, 78);
	}
	fprintf(stderr,
	    "other:\n"
	    "  --check-config                validate the options and the "
	    "config file, then exit\n"
	    "  --help                        this text\n"
	    "  --man                         print the man page (roff)\n");
}

/* Text for roff: a leading dot or quote, and backslashes, escaped. */
static void
man_text(FILE *f, const char *s)
{
	if (*s == '.' || *s == '\'')
		fputs("\\&", f);
	for (; *s != '\0'; s++) {
		if (*s == '\\')
			fputs("\\e", f);
		else if (*s == '-')
			fputs("\\-", f);
		else
			fputc(*s, f);
	}
}

/* remotemediad.8, from the same table as --help. */
void
front_config_man(FILE *f)
{
	const struct opt *o;
	size_t i;

	fputs(".TH REMOTEMEDIAD 8 \"\" \"remotemedia\" \"System Manager's "
	      "Manual\"\n"
	      ".SH NAME\nremotemediad \\- run live Python objects in "
	      "sandboxed sessions over gRPC\n"
	      ".SH SYNOPSIS\n.B remotemediad\n[\\fB\\-\\-config\\fR "
	      "\\fIFILE\\fR] [\\fB\\-\\-\\fIoption\\fR \\fIvalue\\fR ...]\n"
	      ".br\n.B remotemediad \\-\\-check\\-config\n"
	      "[\\fB\\-\\-config\\fR \\fIFILE\\fR] [\\fB\\-\\-\\fIoption\\fR "
	      "\\fIvalue\\fR ...]\n"
	      ".SH DESCRIPTION\n"
	      "remotemediad serves the gRPC service remotemedia.v1."
	      "RemoteExecution. Each session runs a client's Python object in "
	      "a worker process of its own, confined by namespaces, a cgroup, "
	      "its own uid, resource limits, Landlock and seccomp.\n"
	      ".PP\nOptions are read from the config file, then from the "
	      "command line, which wins. An option is written "
	      "\\fB\\-\\-name value\\fR or \\fB\\-\\-name=value\\fR on the "
	      "command line, and \\fBname = value\\fR on a line of the file.\n"
	      ".SH OPTIONS\n",
	    f);
	for (i = 0; i < NOPTS; i++) {
		o = &opts[i];
		if (opt_is_section(o)) {
			fputs(".SS ", f);
			man_text(f, o->name);
			fputs("\n", f);
			continue;
		}
		fputs(".TP\n.BI \"\\-\\-", f);
		man_text(f, o->name);
		fputs(" \" \"", f);
		man_text(f, o->arg);
		fputs("\"\n", f);
		man_text(f, o->help);
		if (o->dflt != NULL) {
			fputs(" (default ", f);
			man_text(f, o->dflt);
			fputs(")", f);
		}
		fputs(".\n", f);
	}
	fputs(
	    ".SS other\n.TP\n.B \\-\\-check\\-config\nValidate the options "
	    "and the config file, print the result and exit: 0 when valid, "
	    "2 when not.\n"
	    ".TP\n.B \\-\\-help\nPrint the options.\n"
	    ".TP\n.B \\-\\-man\nPrint this page.\n"
	    ".SH FILES\n.TP\n.I " FRONT_CONFIG_FILE
	    "\nThe config file, when it exists and no \\fB\\-\\-config\\fR is "
	    "given: lines \\fBkey = value\\fR, one option each, with the "
	    "keys of the options above; blank lines and lines starting with "
	    "# are ignored; a repeatable option is given on several lines.\n"
	    ".SH SIGNALS\n.TP\n.B SIGHUP\nRe-read the config file and the "
	    "command line for the limits, the token file and the TLS files; "
	    "sessions stay.\n.TP\n.B SIGTERM\nDrain: refuse new sessions, "
	    "let running calls finish within a grace, then stop.\n"
	    ".SH SEE ALSO\n.BR rmctl (1),\n.BR systemd.service (5)\n",
	    f);
}

/* Strip leading and trailing blanks in place. */
static char *
trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

#define CONFIG_FILE_MAX (1024 * 1024)

/*
 * Read a config file: "key = value" (or "key value") per line, # comments.
 * Errors are "FILE:LINE: ...". A missing default file is not an error.
 */
static int
front_config_file(struct front_config *fc, const char *path, int required,
    char *err, size_t errlen)
{
	char *line = NULL, msg[256], *key, *val, *p;
	const char *why = NULL;
	const struct opt *o;
	struct stat sb;
	size_t cap = 0;
	ssize_t n;
	FILE *f;
	int fd, lineno = 0;

	/* Without blocking: a FIFO is refused, not waited on. */
	if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)) ==
	    -1) {
		if (!required && errno == ENOENT)
			return 0;
		snprintf(err, errlen, "--config %s: %s", path, strerror(errno));
		return -1;
	}
	if (fstat(fd, &sb) == -1)
		why = strerror(errno);
	else if (!S_ISREG(sb.st_mode) &&
	    !(S_ISCHR(sb.st_mode) && sb.st_rdev == makedev(1, 3)))
		why = "not a regular file"; /* /dev/null is empty: fine */
	else if (sb.st_size > CONFIG_FILE_MAX)
		why = "larger than 1 MiB";
	else if ((f = fdopen(fd, "r")) == NULL)
		why = strerror(errno);
	if (why != NULL) {
		snprintf(err, errlen, "--config %s: %s", path, why);
		close(fd);
		return -1;
	}
	while ((n = getline(&line, &cap, f)) != -1) {
		lineno++;
		if (n > 4095) {
			snprintf(
			    err, errlen, "%s:%d: line too long", path, lineno);
			goto fail;
		}
		if (memchr(line, '\0', (size_t)n) != NULL) {
			snprintf(
			    err, errlen, "%s:%d: a NUL byte", path, lineno);
			goto fail;
		}
		key = trim(line);
		if (*key == '\0' || *key == '#')
			continue;
		p = key + strcspn(key, " \t=");
		val = p + strspn(p, " \t");
		if (*val == '=')
			val++;
		*p = '\0';
		val = trim(val);
		if ((o = opt_find(key)) == NULL || opt_is_config(o)) {
			snprintf(err, errlen, "%s:%d: %s: unknown key", path,
			    lineno, key);
			goto fail;
		}
		if (*val == '\0') {
			snprintf(err, errlen, "%s:%d: %s: missing value", path,
			    lineno, key);
			goto fail;
		}
		if (opt_apply(fc, o, val, msg, sizeof(msg)) == -1) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
			goto fail;
		}
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	free(line);
	fclose(f);
	return 0;
fail:
	free(line);
	fclose(f);
	return -1;
}

/* Split one argument into flag and value; i moves past a separate value. */
static const struct opt *
front_config_arg(
    int argc, char **argv, int *i, const char **val, char *err, size_t errlen)
{
	char flag[64];
	const char *arg = argv[*i], *eq;
	const struct opt *o;
	size_t len;

	if (strncmp(arg, "--", 2) != 0) {
		snprintf(err, errlen, "%s: unexpected argument", arg);
		return NULL;
	}
	eq = strchr(arg, '=');
	len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
	if (len >= sizeof(flag)) {
		snprintf(err, errlen, "%.40s...: unknown flag", arg);
		return NULL;
	}
	memcpy(flag, arg, len);
	flag[len] = '\0';
	if ((o = opt_find(flag + 2)) == NULL) {
		snprintf(err, errlen, "%s: unknown flag", flag);
		return NULL;
	}
	if (eq != NULL)
		*val = eq + 1;
	else if (*i + 1 >= argc) {
		snprintf(err, errlen, "%s: missing value", flag);
		return NULL;
	} else
		*val = argv[++*i];
	return o;
}

/* Checks across options, after all of them are read. */
static int
front_config_check(struct front_config *fc, char *err, size_t errlen)
{
	if (fc->fc_builder_uid >= (long)fc->fc_uid_first &&
	    fc->fc_builder_uid <= (long)fc->fc_uid_last) {
		snprintf(err, errlen,
		    "--builder-uid %ld is inside "
		    "--session-uids %u-%u: builds need a uid of their own",
		    fc->fc_builder_uid, fc->fc_uid_first, fc->fc_uid_last);
		return -1;
	}
	return 0;
}

/*
 * Parse the config file and argv. Flags are long only, written "--flag
 * value" or "--flag=value", and override the file. Returns CONFIG_RUN,
 * CONFIG_HELP, CONFIG_MAN, CONFIG_CHECK, or CONFIG_ERROR with a message in
 * err.
 */
int
front_config_parse(
    struct front_config *fc, int argc, char **argv, char *err, size_t errlen)
{
	const struct opt *o;
	const char *val;
	int i, check = 0, cleared[NOPTS];

	/* First the words that are not options, and --config. */
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0)
			return CONFIG_HELP;
		if (strcmp(argv[i], "--man") == 0)
			return CONFIG_MAN;
	}
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check-config") == 0) {
			check = 1;
			continue;
		}
		/* Errors are reported in order by the second pass. */
		if ((o = front_config_arg(argc, argv, &i, &val, err, errlen)) ==
		    NULL)
			break;
		if (opt_is_config(o) &&
		    opt_apply(fc, o, val, err, errlen) == -1)
			return CONFIG_ERROR;
	}
	if (fc->fc_config != NULL) {
		if (front_config_file(fc, fc->fc_config, 1, err, errlen) == -1)
			return CONFIG_ERROR;
	} else if (fc->fc_config_default != NULL &&
	    front_config_file(fc, fc->fc_config_default, 0, err, errlen) == -1)
		return CONFIG_ERROR;
	memset(cleared, 0, sizeof(cleared));
	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--check-config") == 0)
			continue;
		if ((o = front_config_arg(argc, argv, &i, &val, err, errlen)) ==
		    NULL)
			return CONFIG_ERROR;
		if (opt_is_config(o))
			continue;
		if ((o->type == OPT_LIST || o->type == OPT_CIDRS) &&
		    !cleared[o - opts]) {
			opt_clear_list(fc, o);
			cleared[o - opts] = 1;
		}
		if (opt_apply(fc, o, val, err, errlen) == -1)
			return CONFIG_ERROR;
	}
	if (front_config_check(fc, err, errlen) == -1)
		return CONFIG_ERROR;
	return check ? CONFIG_CHECK : CONFIG_RUN;
}
