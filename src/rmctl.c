/*
 * rmctl: the command-line client for smoke tests, health checks and
 * benchmarks.
 *
 * The commands and their flags live here; the gRPC transport they share is
 * rmctl_grpc.c, and `rmctl bench` is rmctl_bench.c.
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

#include "envelope.h"
#include "frame.h"
#include "log.h"
#include "rmctl.h"
#include "util.h"

#include "grpc/health/v1/health.pb-c.h"
#include "remotemedia.pb-c.h"

#define RMCTL_DEFAULT_HOST "127.0.0.1"
#define RMCTL_DEFAULT_PORT 50052
#define RMCTL_TIMEOUT_MS 10000ULL /* every wait, by default */
#define RMCTL_HEALTH_TIMEOUT_MS 5000ULL /* health: the call's deadline */
#define RMCTL_RUN_TIMEOUT_MS 600000ULL /* run: installs take a while */
#define RMCTL_TIMEOUT_MAX_MS (24ULL * 3600 * 1000)

#define RMCTL_SIZE_MAX (64ULL * 1024 * 1024)
#define RMCTL_COUNT_MAX 10000000ULL
#define RMCTL_PARALLEL_MAX 256ULL /* bench: throughput sessions */
#define RMCTL_ECHO_SIZE 32 /* default --size */
#define RMCTL_TOKEN_MAX 1024 /* a line of the server's token file */

#define RMCTL_HEALTH_PATH "/grpc.health.v1.Health/Check"

struct rmctl_cmd {
	const char *c_name;
	unsigned int c_cmd; /* its bit in rmctl_flags' f_cmds */
	uint64_t c_timeout_ms;
	int (*c_run)(const struct rmctl_opts *);
	int c_nargs; /* positional arguments: kill takes the session id */
};

enum {
	OPT_HOST = 256,
	OPT_PORT,
	OPT_TIMEOUT,
	OPT_SERVICE,
	OPT_COUNT,
	OPT_SIZE,
	OPT_MESSAGE,
	OPT_ITEM_SIZE,
	OPT_SESSIONS,
	OPT_ITEMS,
	OPT_PARALLEL,
	OPT_DURATION,
	OPT_PACE,
	OPT_JSON,
	OPT_HELP,
	OPT_TOKEN,
	OPT_TLS,
	OPT_CA,
	OPT_CERT,
	OPT_KEY,
	OPT_SOURCE,
	OPT_CLASS,
	OPT_CALL,
	OPT_ARGS,
	OPT_KWARGS,
	OPT_INIT,
	OPT_PIP,
};

/* The commands, one bit each, to say which take a flag. */
enum {
	CMD_HEALTH = 1 << 0,
	CMD_ECHO = 1 << 1,
	CMD_BENCH = 1 << 2,
	CMD_INFO = 1 << 3,
	CMD_SESSIONS = 1 << 4,
	CMD_KILL = 1 << 5,
	CMD_RUN = 1 << 6,
};

/* Accepted by every command, before or after its name. */
static const struct option rmctl_common_opts[] = {
    {"host", required_argument, NULL, OPT_HOST},
    {"port", required_argument, NULL, OPT_PORT},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"tls", no_argument, NULL, OPT_TLS},
    {"ca", required_argument, NULL, OPT_CA},
    {"cert", required_argument, NULL, OPT_CERT},
    {"key", required_argument, NULL, OPT_KEY},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};
#define RMCTL_NCOMMON (sizeof(rmctl_common_opts) / sizeof(rmctl_common_opts[0]))

/*
 * The other flags, each with the commands that take it and, for one whose
 * value is kept as given, the field it goes to (KEPT); rmctl_parse_opt
 * parses the rest.
 */
struct rmctl_flag {
	struct option f_opt;
	unsigned int f_cmds;
	size_t f_kept; /* 0, or KEPT: 1 + a const char * field's offset */
};
#define KEPT(field) (1 + offsetof(struct rmctl_opts, field))

static const struct rmctl_flag rmctl_flags[] = {
    {{"service", required_argument, NULL, OPT_SERVICE}, CMD_HEALTH,
        KEPT(o_service)},
    {{"count", required_argument, NULL, OPT_COUNT}, CMD_ECHO | CMD_BENCH, 0},
    {{"size", required_argument, NULL, OPT_SIZE}, CMD_ECHO, 0},
    {{"message", required_argument, NULL, OPT_MESSAGE}, CMD_ECHO,
        KEPT(o_message)},
    {{"sessions", required_argument, NULL, OPT_SESSIONS}, CMD_BENCH, 0},
    {{"items", required_argument, NULL, OPT_ITEMS}, CMD_BENCH, 0},
    {{"item-size", required_argument, NULL, OPT_ITEM_SIZE}, CMD_BENCH, 0},
    {{"parallel", required_argument, NULL, OPT_PARALLEL}, CMD_BENCH, 0},
    {{"duration", required_argument, NULL, OPT_DURATION}, CMD_BENCH, 0},
    {{"pace", required_argument, NULL, OPT_PACE}, CMD_BENCH, 0},
    {{"json", no_argument, NULL, OPT_JSON}, CMD_BENCH | CMD_INFO | CMD_SESSIONS,
        0},
    {{"source", required_argument, NULL, OPT_SOURCE}, CMD_RUN, KEPT(o_source)},
    {{"class", required_argument, NULL, OPT_CLASS}, CMD_RUN, KEPT(o_class)},
    {{"init", required_argument, NULL, OPT_INIT}, CMD_RUN, KEPT(o_init)},
    {{"call", required_argument, NULL, OPT_CALL}, CMD_RUN, KEPT(o_call)},
    {{"args", required_argument, NULL, OPT_ARGS}, CMD_RUN, KEPT(o_args)},
    {{"kwargs", required_argument, NULL, OPT_KWARGS}, CMD_RUN, KEPT(o_kwargs)},
    {{"pip", required_argument, NULL, OPT_PIP}, CMD_RUN, 0},
};
#define RMCTL_NFLAGS (sizeof(rmctl_flags) / sizeof(rmctl_flags[0]))

static int rmctl_health(const struct rmctl_opts *);
static int rmctl_echo(const struct rmctl_opts *);

static const struct rmctl_cmd rmctl_cmds[] = {
    {"health", CMD_HEALTH, RMCTL_HEALTH_TIMEOUT_MS, rmctl_health, 0},
    {"echo", CMD_ECHO, RMCTL_TIMEOUT_MS, rmctl_echo, 0},
    {"bench", CMD_BENCH, RMCTL_TIMEOUT_MS, rmctl_bench, 0},
    {"info", CMD_INFO, RMCTL_TIMEOUT_MS, rmctl_info, 0},
    {"sessions", CMD_SESSIONS, RMCTL_TIMEOUT_MS, rmctl_sessions, 0},
    {"kill", CMD_KILL, RMCTL_TIMEOUT_MS, rmctl_kill, 1},
    {"run", CMD_RUN, RMCTL_RUN_TIMEOUT_MS, rmctl_run, 0},
};

static const char rmctl_usage_text[] =
    "usage: rmctl [OPTIONS] COMMAND [COMMAND OPTIONS]\n"
    "\n"
    "commands:\n"
    "  health [--service NAME]\n"
    "          call grpc.health.v1.Health/Check; print the serving status\n"
    "          and exit 0 only if it is SERVING (UNAVAILABLE, 14, if not)\n"
    "  info [--json]\n"
    "          the server's version, limits and the sandbox in force\n"
    "  sessions [--json]\n"
    "          the sessions open now: all of them with an admin token,\n"
    "          the token's own with another\n"
    "  kill SESSION\n"
    "          end a session (an admin token, or the token that opened it);\n"
    "          its client sees ABORTED\n"
    "  run --source FILE --class NAME [--init JSON] [--pip REQ ...]\n"
    "      --call METHOD [--args JSON] [--kwargs JSON]\n"
    "          open a json-format session from Python source, construct\n"
    "          NAME with --init (a JSON list, default []), call METHOD once\n"
    "          with --args (a JSON list) and --kwargs (a JSON object), and\n"
    "          print the result as JSON; a generator prints one JSON line\n"
    "          per item; a property or attribute METHOD is read instead.\n"
    "          What the object prints goes to stderr; a remote\n"
    "          exception prints its traceback and exits 1\n"
    "  echo [--count N] [--size BYTES | --message TEXT]\n"
    "          ping-pong N messages on one RemoteExecution/Echo stream;\n"
    "          print the echoed text (--count 1 --message TEXT) or\n"
    "          \"count N p50 Xus p99 Yus\"\n"
    "  bench [--count N] [--sessions N] [--items N] [--item-size BYTES]\n"
    "        [--parallel N] [--duration DURATION] [--pace DURATION] [--json]\n"
    "          measure, each beside its reference: Echo round trips, method\n"
    "          call round trips through a session (--count, default 2000),\n"
    "          session open to first result (--sessions, default 20), a\n"
    "          generator's --items items of --item-size bytes (default 64\n"
    "          of 1M), and calls per second over --parallel sessions\n"
    "          (default 4) for --duration (default 2s); a table, or JSON.\n"
    "          Session opens, and figures, are --pace apart (default\n"
    "          200ms), so that the server's spares refill\n"
    "\n"
    "options, before or after the command:\n"
    "  --host HOST         server address (default " RMCTL_DEFAULT_HOST ")\n"
    "  --port PORT         server port (default 50052)\n"
    "  --token TOKEN       send authorization: Bearer TOKEN (default\n"
    "                      $REMOTEMEDIA_TOKEN)\n"
    "  --tls               TLS 1.2+ with ALPN h2, the server verified against\n"
    "                      the system CA bundle, or --ca\n"
    "  --ca FILE           CA certificates to verify the server with\n"
    "                      (implies --tls)\n"
    "  --cert FILE --key FILE\n"
    "                      a client certificate (PEM, with its chain) and\n"
    "                      its key, for a server with --tls-client-ca\n"
    "                      (implies --tls; a key with a passphrase is\n"
    "                      refused, not asked for)\n"
    "  --timeout DURATION  500ms, 30s, 5m; health: the call's deadline\n"
    "                      (default 5s); run: each wait (default 10m);\n"
    "                      others: each wait (default 10s)\n"
    "  --help              this text\n"
    "\n"
    "Exit status: 0 on success; a call the server failed exits with its\n"
    "gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND, 7\n"
    "PERMISSION_DENIED, 8 RESOURCE_EXHAUSTED, 16 UNAUTHENTICATED, ...); no\n"
    "connection or a lost one 14 (UNAVAILABLE), a timeout 4\n"
    "(DEADLINE_EXCEEDED), a server that broke the protocol 13 (INTERNAL);\n"
    "1 another failure; 2 a usage error. See rmctl(1).\n";

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

/* rmctl health: one unary Health/Check; exit 0 only when SERVING. */
static int
rmctl_health(const struct rmctl_opts *o)
{
	Grpc__Health__V1__HealthCheckRequest req =
	    GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	Grpc__Health__V1__HealthCheckResponse *resp;
	struct rmctl_msg *m;
	int status;

	req.service = (char *)o->o_service;
	rmctl_unary(o, RMCTL_HEALTH_PATH, "health check", &req.base, &m);
	resp = grpc__health__v1__health_check_response__unpack(
	    NULL, m->m_len, m->m_data);
	free(m);
	if (resp == NULL)
		errx(RMCTL_EXIT_INTERNAL,
		    "health check: malformed "
		    "HealthCheckResponse");
	status = (int)resp->status;
	grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
	printf("%s\n", rmctl_serving_name(status));
	return status ==
	        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
	    ? 0
	    : RMCTL_EXIT_UNAVAILABLE;
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

/*
 * Check that a reply is the EchoMessage that was sent as message i; free
 * the reply (m) either way, so that exit leaves nothing for LeakSanitizer.
 */
static void
rmctl_echo_verify(struct rmctl_conn *cn, struct rmctl_msg *m,
    const uint8_t *sent, size_t len, uint64_t i)
{
	Remotemedia__V1__EchoMessage *reply;
	const char *why = NULL;
	size_t got = 0;

	reply = remotemedia__v1__echo_message__unpack(
	    NULL, m->m_len, m->m_data);
	free(m);
	if (reply == NULL)
		why = "is not an EchoMessage (malformed EchoMessage)";
	else if ((got = reply->payload.len) != len)
		why = "has another size";
	else if (len > 0 && memcmp(reply->payload.data, sent, len) != 0)
		why = "differs from what was sent";
	if (reply != NULL)
		remotemedia__v1__echo_message__free_unpacked(reply, NULL);
	if (why != NULL)
		errx(RMCTL_EXIT_INTERNAL,
		    "echo: reply %" PRIu64 " from %s %s (%zu bytes, sent %zu)",
		    i, cn->cn_authority, why, got, len);
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
		errx(RMCTL_EXIT_INTERNAL,
		    "echo: server ended the stream after %" PRIu64
		    " of %" PRIu64 " replies",
		    i, count);
	}
	rmctl_echo_verify(cn, m, msg->payload.data, msg->payload.len, i);
	return t1 - t0;
}

int
rmctl_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The nearest-rank percentile p of n sorted samples. */
uint64_t
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

/* Take --sessions, --items or --parallel: a count in [1, its bound]. */
static void
rmctl_parse_bench_count(struct rmctl_opts *o, int ch, const char *arg)
{
	uint64_t *out = ch == OPT_SESSIONS ? &o->o_sessions
	    : ch == OPT_ITEMS              ? &o->o_items
	                                   : &o->o_parallel;
	uint64_t max = ch == OPT_PARALLEL ? RMCTL_PARALLEL_MAX
	                                  : RMCTL_COUNT_MAX;
	const char *name = ch == OPT_SESSIONS ? "--sessions"
	    : ch == OPT_ITEMS                 ? "--items"
	                                      : "--parallel";

	if (rmctl_parse_count(arg, max, out) == -1)
		rmctl_usage_error("%s: invalid count '%s' (1 to %llu)", name,
		    arg, (unsigned long long)max);
}

/* Where the value of flag ch goes if it is kept as given, else NULL. */
static const char **
rmctl_kept(struct rmctl_opts *o, int ch)
{
	size_t i;

	for (i = 0; i < RMCTL_NFLAGS; i++)
		if (rmctl_flags[i].f_opt.val == ch &&
		    rmctl_flags[i].f_kept != 0)
			return (const char **)((char *)o +
			    rmctl_flags[i].f_kept - 1);
	return NULL;
}

/* A token the server can take: 1 to RMCTL_TOKEN_MAX printable ASCII. */
static int
rmctl_token_ok(const char *tok)
{
	size_t n;

	for (n = 0; tok[n] != '\0'; n++)
		if (tok[n] < 0x20 || tok[n] > 0x7e || n >= RMCTL_TOKEN_MAX)
			return 0;
	return n > 0 && tok[0] != ' ' && tok[n - 1] != ' ';
}

/* Apply one flag's value; a bad value is a usage error naming the flag. */
static void
rmctl_parse_opt(struct rmctl_opts *o, int ch, char *arg)
{
	const char **kept;
	uint64_t v;

	if ((kept = rmctl_kept(o, ch)) != NULL) {
		*kept = arg;
		return;
	}
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
	case OPT_COUNT:
		if (rmctl_parse_count(arg, RMCTL_COUNT_MAX, &o->o_count) == -1)
			rmctl_usage_error("--count: invalid count '%s' "
			                  "(1 to %llu)",
			    arg, RMCTL_COUNT_MAX);
		break;
	case OPT_SIZE:
	case OPT_ITEM_SIZE:
		if (parse_size(arg, &o->o_size) == -1 ||
		    o->o_size > RMCTL_SIZE_MAX)
			rmctl_usage_error("%s: invalid size '%s' "
			                  "(write 512, 64K, 1M; at most 64M)",
			    ch == OPT_SIZE ? "--size" : "--item-size", arg);
		o->o_size_set = 1;
		break;
	case OPT_SESSIONS:
	case OPT_ITEMS:
	case OPT_PARALLEL:
		rmctl_parse_bench_count(o, ch, arg);
		break;
	case OPT_DURATION:
		if (parse_duration_ms(arg, &o->o_duration_ms) == -1 ||
		    o->o_duration_ms == 0 ||
		    o->o_duration_ms > RMCTL_TIMEOUT_MAX_MS)
			rmctl_usage_error("--duration: invalid duration '%s' "
			                  "(write 500ms, 30s, 5m)",
			    arg);
		break;
	case OPT_PACE:
		if (strcmp(arg, "0") == 0)
			o->o_pace_ms = 0;
		else if (parse_duration_ms(arg, &o->o_pace_ms) == -1 ||
		    o->o_pace_ms > 60000)
			rmctl_usage_error("--pace: invalid duration '%s' "
			                  "(write 0, 200ms, 1s; at most 1m)",
			    arg);
		break;
	case OPT_JSON:
		o->o_json = 1;
		break;
	case OPT_TOKEN:
		if (!rmctl_token_ok(arg))
			rmctl_usage_error(
			    "--token: a token is 1 to %d printable "
			    "ASCII characters, without a space at either "
			    "end (it travels in an HTTP header)",
			    RMCTL_TOKEN_MAX);
		o->o_token = arg;
		break;
	case OPT_TLS:
		o->o_tls = 1;
		break;
	case OPT_CA:
		o->o_ca = arg;
		o->o_tls = 1;
		break;
	case OPT_CERT:
		o->o_cert = arg;
		o->o_tls = 1;
		break;
	case OPT_KEY:
		o->o_key = arg;
		o->o_tls = 1;
		break;
	case OPT_PIP:
		if (o->o_npip >= sizeof(o->o_pip) / sizeof(o->o_pip[0]))
			rmctl_usage_error("--pip: at most %zu",
			    sizeof(o->o_pip) / sizeof(o->o_pip[0]));
		o->o_pip[o->o_npip++] = arg;
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

/* --args, --kwargs and --init: a JSON list or object (the server parses
 * it; this catches a value that is plainly of the wrong kind). */
static void
rmctl_check_json(const char *flag, const char *v, char open)
{
	size_t len;

	while (*v == ' ' || *v == '\t' || *v == '\n')
		v++;
	len = strlen(v);
	while (len > 0 &&
	    (v[len - 1] == ' ' || v[len - 1] == '\t' || v[len - 1] == '\n'))
		len--;
	if (len < 2 || v[0] != open || v[len - 1] != (open == '[' ? ']' : '}'))
		rmctl_usage_error("%s: expected a JSON %s, got '%s'", flag,
		    open == '[' ? "list [...]" : "object {...}", v);
}

/*
 * A flag before the command: it must be a common option. Whether the next
 * argument is its value (--flag VALUE rather than --flag=VALUE).
 */
static int
rmctl_common_takes_value(const char *arg)
{
	const struct option *opt;
	char name[64];
	size_t len;

	if (strncmp(arg, "--", 2) != 0)
		rmctl_usage_error("unknown flag %s", arg);
	len = strcspn(arg + 2, "=");
	if (len >= sizeof(name))
		rmctl_usage_error("unknown flag %.40s", arg);
	memcpy(name, arg + 2, len);
	name[len] = '\0';
	for (opt = rmctl_common_opts; opt->name != NULL; opt++)
		if (strcmp(opt->name, name) == 0)
			break;
	if (opt->name == NULL)
		rmctl_usage_error("--%s: not an option before the command "
		                  "(put it after it)",
		    name);
	return opt->has_arg == required_argument && arg[2 + len] != '=';
}

/*
 * The getopt_long table of cmd's flags, the common ones and its own, ended
 * by a zeroed entry: at most RMCTL_NCOMMON + RMCTL_NFLAGS entries.
 */
static void
rmctl_cmd_opts(const struct rmctl_cmd *cmd, struct option *opts)
{
	const struct option *opt;
	size_t i, n = 0;

	for (opt = rmctl_common_opts; opt->name != NULL; opt++)
		opts[n++] = *opt;
	for (i = 0; i < RMCTL_NFLAGS; i++)
		if (rmctl_flags[i].f_cmds & cmd->c_cmd)
			opts[n++] = rmctl_flags[i].f_opt;
	memset(&opts[n], 0, sizeof(opts[n]));
}

/* Parse the flags of one command; argv[0] is the command's name. */
static void
rmctl_parse(
    const struct rmctl_cmd *cmd, int argc, char **argv, struct rmctl_opts *o)
{
	struct option opts[RMCTL_NCOMMON + RMCTL_NFLAGS];
	int ch;

	memset(o, 0, sizeof(*o));
	o->o_host = RMCTL_DEFAULT_HOST;
	o->o_port = RMCTL_DEFAULT_PORT;
	o->o_timeout_ms = cmd->c_timeout_ms;
	o->o_service = "";
	o->o_count = cmd->c_run == rmctl_bench ? 2000 : 1;
	o->o_size = cmd->c_run == rmctl_bench ? 1024 * 1024 : RMCTL_ECHO_SIZE;
	o->o_sessions = 20;
	o->o_items = 64;
	o->o_parallel = 4;
	o->o_duration_ms = 2000;
	o->o_pace_ms = 200;
	opterr = 0;
	optind = 1;
	o->o_token = getenv("REMOTEMEDIA_TOKEN");
	if (o->o_token != NULL && *o->o_token == '\0')
		o->o_token = NULL;
	o->o_args = "[]";
	o->o_kwargs = "{}";
	o->o_init = "[]";
	rmctl_cmd_opts(cmd, opts);
	while ((ch = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		if (ch == '?' || ch == ':')
			rmctl_bad_flag(ch, argv[optind - 1]);
		rmctl_parse_opt(o, ch, optarg);
	}
	if (argc - optind < cmd->c_nargs)
		rmctl_usage_error("%s: missing SESSION", cmd->c_name);
	if (cmd->c_nargs == 1)
		o->o_arg = argv[optind++];
	if (optind < argc)
		rmctl_usage_error(
		    "%s: unexpected argument '%s'", cmd->c_name, argv[optind]);
	if (cmd->c_run == rmctl_run) {
		if (o->o_source == NULL || o->o_class == NULL ||
		    o->o_call == NULL)
			rmctl_usage_error(
			    "run: --source, --class and --call are required");
		/* Names travel as protobuf strings, which must be UTF-8. */
		if (!envelope_utf8(
		        (const uint8_t *)o->o_class, strlen(o->o_class)))
			rmctl_usage_error("--class: not UTF-8");
		if (!envelope_utf8(
		        (const uint8_t *)o->o_call, strlen(o->o_call)))
			rmctl_usage_error("--call: not UTF-8");
		rmctl_check_json("--args", o->o_args, '[');
		rmctl_check_json("--kwargs", o->o_kwargs, '{');
		rmctl_check_json("--init", o->o_init, '[');
	}
	if (o->o_message != NULL && o->o_size_set)
		rmctl_usage_error("--message and --size cannot be used "
		                  "together");
	if ((o->o_cert == NULL) != (o->o_key == NULL))
		rmctl_usage_error("--cert and --key go together");
}

/*
 * The common options given before the command are moved after its name,
 * so that one parse sees them all; later ones win.
 */
int
main(int argc, char **argv)
{
	struct rmctl_opts o;
	char **args;
	int i, n, first;
	size_t c;

	log_init("rmctl", LOG_LEVEL_WARN);
	log_plain();
	malloc_keep(RMCTL_MALLOC_KEEP);
	for (first = 1; first < argc && argv[first][0] == '-'; first++) {
		if (strcmp(argv[first], "--help") == 0 ||
		    strcmp(argv[first], "-h") == 0)
			rmctl_help();
		if (rmctl_common_takes_value(argv[first]))
			first++; /* its value */
	}
	if (first >= argc)
		rmctl_usage_error("missing command (health, info, sessions, "
		                  "kill, run, echo or bench)");
	for (c = 0; c < sizeof(rmctl_cmds) / sizeof(rmctl_cmds[0]); c++) {
		if (strcmp(argv[first], rmctl_cmds[c].c_name) != 0)
			continue;
		args = xcalloc((size_t)argc + 1, sizeof(char *));
		n = 0;
		args[n++] = argv[first];
		for (i = 1; i < first; i++)
			args[n++] = argv[i];
		for (i = first + 1; i < argc; i++)
			args[n++] = argv[i];
		rmctl_parse(&rmctl_cmds[c], n, args, &o);
		n = rmctl_cmds[c].c_run(&o); /* o points into argv, not args */
		free(args);
		return n;
	}
	if (argv[first][0] == '-')
		rmctl_usage_error("unknown flag %s", argv[first]);
	rmctl_usage_error("unknown command '%s'", argv[first]);
}
