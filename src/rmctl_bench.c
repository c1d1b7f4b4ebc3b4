/*
 * rmctl bench: the server's figures measured by a C client (architecture
 * section 8), each beside its reference from the same run.
 *
 *   echo        ping-pong on the Echo RPC, answered by the front alone: the
 *               floor for the call figure
 *   call        round trips of a method call through a session: the front,
 *               the worker and the embedded Python
 *   session     open to first result: Open, Ready, one call answered; one
 *               open every --pace, so that spares (--session-pool) refill
 *
 * Each figure starts --pace after the sessions it uses are open, so that
 * what the server does in the background (starting spares) is not in it.
 *   stream      a generator's items of --item-size bytes, on Pull credit
 *   throughput  small calls per second over --parallel sessions at once,
 *               each keeping RMCTL_BENCH_WINDOW calls in flight
 *
 * The sessions are opened from Python source (Open.source), in the pickle
 * format, so that a C client needs no pickler: the methods take no
 * arguments and the constructor takes JSON ones. Every reply is checked; a
 * failure exits 1 with what the server said.
 */
#include <sys/types.h>
#include <sys/wait.h>

#include <err.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "envelope.h"
#include "log.h"
#include "rmctl.h"
#include "util.h"

#include "remotemedia.pb-c.h"

#define RMCTL_SESSION_PATH "/remotemedia.v1.RemoteExecution/Session"
#define RMCTL_BENCH_WINDOW 16 /* calls in flight per throughput session */
#define RMCTL_BENCH_MSG_MAX (2U * 1024 * 1024)

typedef Remotemedia__V1__ServerMessage ServerMessage;

/*
 * The object every bench session hosts. Its item is made by stream(), not
 * at construction, so that an open measures the server, not a 1 MiB
 * allocation that only the stream figure needs.
 */
static const char rmctl_bench_source[] =
    "class Bench:\n"
    "    def __init__(self, item_size=1048576, items=16):\n"
    "        self.item_size = item_size\n"
    "        self.items = items\n"
    "\n"
    "    def ping(self):\n"
    "        return None\n"
    "\n"
    "    def stream(self):\n"
    "        item = bytes(self.item_size)\n"
    "        for _ in range(self.items):\n"
    "            yield item\n";

/* One session: its stream on a connection of its own, and its next call. */
struct bench_session {
	struct rmctl_conn bs_conn;
	struct rmctl_call bs_call;
	uint64_t bs_next_id;
};

/* A percentile summary of samples in nanoseconds. */
struct bench_stats {
	size_t st_n;
	uint64_t st_p50;
	uint64_t st_p99;
};

/* What an item may hold beyond its bytes: the pickle around them. */
#define BENCH_ITEM_SLACK 4096

/* Wait for the next server message of a session and unpack it. */
static ServerMessage *
bench_next(struct bench_session *bs, const char *what)
{
	struct rmctl_conn *cn = &bs->bs_conn;
	struct rmctl_call *cl = &bs->bs_call;
	ServerMessage *sm;
	struct rmctl_msg *m;

	rmctl_conn_wait(
	    cn, rmctl_call_readable, now_ms() + cn->cn_timeout_ms, what);
	if ((m = rmctl_call_pop(cl)) == NULL) {
		rmctl_call_check(cn, cl);
		errx(1, "bench: the session ended while waiting for %s", what);
	}
	sm = remotemedia__v1__server_message__unpack(NULL, m->m_len, m->m_data);
	free(m);
	if (sm == NULL)
		errx(1, "bench: malformed ServerMessage during %s", what);
	if (sm->msg_case == REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR)
		errx(1, "bench: %s raised %s: %s", what, sm->error->type,
		    sm->error->message);
	return sm;
}

/* Wait for a message of one kind, skipping Progress and Output. */
static ServerMessage *
bench_expect(struct bench_session *bs, int kind, const char *what)
{
	uint64_t until = now_ms() + bs->bs_conn.cn_timeout_ms;
	ServerMessage *sm;

	for (;;) {
		/* What is skipped does not restart the clock. */
		if (now_ms() > until)
			errx(RMCTL_EXIT_DEADLINE, "bench: no %s within %llu ms",
			    what,
			    (unsigned long long)bs->bs_conn.cn_timeout_ms);
		sm = bench_next(bs, what);
		if ((int)sm->msg_case == kind)
			return sm;
		if (sm->msg_case !=
		        REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_PROGRESS &&
		    sm->msg_case != REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_OUTPUT)
			errx(1, "bench: unexpected message %d during %s",
			    (int)sm->msg_case, what);
		remotemedia__v1__server_message__free_unpacked(sm, NULL);
	}
}

/* Send one ClientMessage on the session's stream. */
static void
bench_send(struct bench_session *bs, Remotemedia__V1__ClientMessage *cm)
{
	rmctl_call_send(&bs->bs_conn, &bs->bs_call, &cm->base);
}

/* Start a session stream on an open connection and send its Open. */
static void
bench_open_send(struct bench_session *bs, const struct rmctl_opts *o)
{
	Remotemedia__V1__ClientMessage cm =
	    REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Open op = REMOTEMEDIA__V1__OPEN__INIT;
	char args[96];

	snprintf(args, sizeof(args),
	    "{\"args\": [%" PRIu64 ", %" PRIu64 "], \"kwargs\": {}}", o->o_size,
	    o->o_items);
	op.protocol = REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1;
	op.format = REMOTEMEDIA__V1__FORMAT__FORMAT_PICKLE;
	op.source = (char *)rmctl_bench_source;
	op.class_name = "Bench";
	op.init_args_json.data = (uint8_t *)args;
	op.init_args_json.len = strlen(args);
	cm.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_OPEN;
	cm.open = &op;
	rmctl_call_init(&bs->bs_call, "session", RMCTL_BENCH_MSG_MAX);
	rmctl_call_start(&bs->bs_conn, &bs->bs_call, RMCTL_SESSION_PATH, NULL);
	bs->bs_next_id = 1;
	bench_send(bs, &cm);
}

/* Open a session on an open connection and wait until it is Ready. */
static void
bench_open(struct bench_session *bs, const struct rmctl_opts *o)
{
	ServerMessage *sm;

	bench_open_send(bs, o);
	sm = bench_expect(
	    bs, REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_READY, "the session");
	remotemedia__v1__server_message__free_unpacked(sm, NULL);
}

/* End a session: half-close, and expect the stream to end with OK. */
static void
bench_close(struct bench_session *bs)
{
	struct rmctl_conn *cn = &bs->bs_conn;

	rmctl_call_close_send(cn, &bs->bs_call);
	rmctl_conn_wait(cn, rmctl_call_finished, now_ms() + cn->cn_timeout_ms,
	    "the end of the session");
	rmctl_call_check(cn, &bs->bs_call);
	rmctl_call_free(&bs->bs_call);
}

/* Send a call of a method that takes no arguments; its call id. */
static uint64_t
bench_call_send(struct bench_session *bs, const char *name)
{
	Remotemedia__V1__ClientMessage cm =
	    REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Call call = REMOTEMEDIA__V1__CALL__INIT;

	call.call_id = bs->bs_next_id++;
	call.name = (char *)name;
	call.kind = REMOTEMEDIA__V1__CALL_KIND__CALL_METHOD;
	cm.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CALL;
	cm.call = &call;
	bench_send(bs, &cm);
	return call.call_id;
}

/* Wait for the Result of the oldest call; whether it is a generator. */
static int
bench_result(struct bench_session *bs, uint64_t id)
{
	ServerMessage *sm;
	int gen;

	sm = bench_expect(
	    bs, REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_RESULT, "a call's result");
	if (sm->result->call_id != id)
		errx(1, "bench: result for call %" PRIu64 ", expected %" PRIu64,
		    sm->result->call_id, id);
	if (sm->result->value != NULL && sm->result->value->more)
		errx(1, "bench: a small result came in chunks");
	gen = sm->result->generator;
	remotemedia__v1__server_message__free_unpacked(sm, NULL);
	return gen;
}

/* One call of ping(), answered; the round trip in nanoseconds. */
static uint64_t
bench_ping(struct bench_session *bs)
{
	uint64_t t0 = rmctl_now_ns(), id;

	id = bench_call_send(bs, "ping");
	bench_result(bs, id);
	return rmctl_now_ns() - t0;
}

/* Let the server's background work (refilling spares) settle. */
static void
bench_sleep_ms(uint64_t ms)
{
	struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};

	while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
		;
}

/* Sort samples and take their median and 99th percentile. */
static void
bench_summarize(uint64_t *v, size_t n, struct bench_stats *st)
{
	qsort(v, n, sizeof(*v), rmctl_cmp_u64);
	st->st_n = n;
	st->st_p50 = rmctl_percentile(v, n, 50);
	st->st_p99 = rmctl_percentile(v, n, 99);
}

/* Round trips on the Echo RPC: the reference for the call figure. */
static void
bench_echo(const struct rmctl_opts *o, struct bench_stats *st)
{
	Remotemedia__V1__EchoMessage msg = REMOTEMEDIA__V1__ECHO_MESSAGE__INIT;
	struct rmctl_conn cn;
	struct rmctl_call cl;
	struct rmctl_msg *m;
	uint64_t *rtt, i, t0;
	uint8_t payload[16] = "rmctl bench echo";

	msg.payload.data = payload;
	msg.payload.len = sizeof(payload);
	rtt = xcalloc((size_t)o->o_count, sizeof(*rtt));
	rmctl_conn_open(&cn, o, now_ms() + o->o_timeout_ms);
	rmctl_call_init(&cl, "echo", RMCTL_MSG_MAX);
	rmctl_call_start(&cn, &cl, RMCTL_ECHO_PATH, NULL);
	for (i = 0; i < o->o_count; i++) {
		t0 = rmctl_now_ns();
		rmctl_call_send(&cn, &cl, &msg.base);
		rmctl_conn_wait(&cn, rmctl_call_readable,
		    now_ms() + cn.cn_timeout_ms, "an echo reply");
		rtt[i] = rmctl_now_ns() - t0;
		if ((m = rmctl_call_pop(&cl)) == NULL)
			errx(1, "bench: the echo stream ended early");
		free(m);
	}
	rmctl_call_close_send(&cn, &cl);
	rmctl_conn_wait(&cn, rmctl_call_finished, now_ms() + cn.cn_timeout_ms,
	    "the end of the echo stream");
	rmctl_call_check(&cn, &cl);
	rmctl_call_free(&cl);
	rmctl_conn_close(&cn);
	bench_summarize(rtt, (size_t)o->o_count, st);
	free(rtt);
}

/* Round trips of ping() through one session. */
static void
bench_calls(const struct rmctl_opts *o, struct bench_stats *st)
{
	struct bench_session bs;
	uint64_t *rtt, i;

	rtt = xcalloc((size_t)o->o_count, sizeof(*rtt));
	rmctl_conn_open(&bs.bs_conn, o, now_ms() + o->o_timeout_ms);
	bench_open(&bs, o);
	bench_sleep_ms(o->o_pace_ms);
	for (i = 0; i < 10 && i < o->o_count; i++)
		(void)bench_ping(&bs); /* warm-up */
	for (i = 0; i < o->o_count; i++)
		rtt[i] = bench_ping(&bs);
	bench_close(&bs);
	rmctl_conn_close(&bs.bs_conn);
	bench_summarize(rtt, (size_t)o->o_count, st);
	free(rtt);
}

/*
 * Session open to first result, --sessions times on one connection, one
 * open every --pace: the latency of an open, not how many the server can
 * start back to back.
 */
static void
bench_sessions(const struct rmctl_opts *o, struct bench_stats *st)
{
	struct bench_session bs;
	uint64_t *t, i, t0;

	t = xcalloc((size_t)o->o_sessions, sizeof(*t));
	rmctl_conn_open(&bs.bs_conn, o, now_ms() + o->o_timeout_ms);
	for (i = 0; i < o->o_sessions; i++) {
		if (i > 0)
			bench_sleep_ms(o->o_pace_ms);
		t0 = rmctl_now_ns();
		bench_open(&bs, o);
		(void)bench_ping(&bs);
		t[i] = rmctl_now_ns() - t0;
		bench_close(&bs);
	}
	rmctl_conn_close(&bs.bs_conn);
	bench_summarize(t, (size_t)o->o_sessions, st);
	free(t);
}

/* A stream as bench_stream_next reads it. */
struct bench_stream {
	uint64_t bst_bytes, bst_items; /* so far */
	uint64_t bst_max_items, bst_max_bytes; /* asked for */
	int bst_more; /* an item's chunks are still coming */
	uint64_t bst_item_at; /* when its first came */
};

/*
 * The next stream message, read by its envelope (envelope.c), as the front
 * reads it: the items are counted, not unpacked. Whether it is End. More
 * items or bytes than were asked for, a chunk outside an item, or an
 * item whose chunks take longer than --timeout, is a server that broke
 * the protocol, and could otherwise stream for ever.
 */
static int
bench_stream_next(struct bench_session *bs, struct bench_stream *st)
{
	struct rmctl_conn *cn = &bs->bs_conn;
	struct rmctl_msg *m;
	struct envelope ev;
	int rv;

	rmctl_conn_wait(cn, rmctl_call_readable, now_ms() + cn->cn_timeout_ms,
	    "a stream item");
	if ((m = rmctl_call_pop(&bs->bs_call)) == NULL) {
		rmctl_call_check(cn, &bs->bs_call);
		errx(1, "bench: the session ended in the middle of a stream");
	}
	rv = envelope_server(m->m_data, m->m_len, &ev);
	free(m);
	if (rv == -1)
		errx(1, "bench: malformed ServerMessage in a stream");
	switch (ev.ev_case) {
	case ENV_SERVER_ITEM:
		if (st->bst_more || ++st->bst_items > st->bst_max_items)
			errx(RMCTL_EXIT_INTERNAL,
			    "bench: the server sent item %" PRIu64
			    " of a stream of %" PRIu64 "%s",
			    st->bst_items, st->bst_max_items,
			    st->bst_more ? " inside the one before" : "");
		st->bst_item_at = now_ms();
		break;
	case ENV_SERVER_VALUE:
		if (!st->bst_more)
			errx(RMCTL_EXIT_INTERNAL,
			    "bench: a value chunk outside an item of the "
			    "stream");
		if (now_ms() - st->bst_item_at > cn->cn_timeout_ms)
			errx(RMCTL_EXIT_DEADLINE,
			    "bench: item %" PRIu64 " did not come whole within "
			    "%" PRIu64 " ms",
			    st->bst_items, cn->cn_timeout_ms);
		break;
	case ENV_SERVER_END:
		return 1;
	default:
		errx(1, "bench: unexpected message %u in a stream", ev.ev_case);
	}
	st->bst_more = ev.ev_more;
	st->bst_bytes += ev.ev_data_len;
	if (st->bst_bytes > st->bst_max_bytes)
		errx(RMCTL_EXIT_INTERNAL,
		    "bench: the stream's items came to more than the %" PRIu64
		    " bytes asked for",
		    st->bst_max_bytes);
	return 0;
}

/* Stream the generator once; its bytes, and the seconds it took. */
static double
bench_stream(const struct rmctl_opts *o, uint64_t *bytes)
{
	Remotemedia__V1__ClientMessage cm =
	    REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Pull pull = REMOTEMEDIA__V1__PULL__INIT;
	struct bench_session bs;
	struct bench_stream st = {
	    .bst_max_items = o->o_items,
	    .bst_max_bytes = o->o_items * (o->o_size + BENCH_ITEM_SLACK),
	};
	uint64_t t0, id;
	int end = 0;

	rmctl_conn_open(&bs.bs_conn, o, now_ms() + o->o_timeout_ms);
	bench_open(&bs, o);
	bench_sleep_ms(o->o_pace_ms);
	t0 = rmctl_now_ns();
	id = bench_call_send(&bs, "stream");
	if (!bench_result(&bs, id))
		errx(1, "bench: stream() is not a generator");
	pull.call_id = id;
	/* One more than the items: the generator ends only when pulled. */
	pull.n = (uint32_t)o->o_items + 1;
	cm.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_PULL;
	cm.pull = &pull;
	bench_send(&bs, &cm);
	while (!end)
		end = bench_stream_next(&bs, &st);
	t0 = rmctl_now_ns() - t0;
	*bytes = st.bst_bytes;
	if (st.bst_items != o->o_items)
		errx(1, "bench: %" PRIu64 " items streamed of %" PRIu64,
		    st.bst_items, o->o_items);
	bench_close(&bs);
	rmctl_conn_close(&bs.bs_conn);
	return (double)t0 / 1e9;
}

/*
 * One throughput session, in a child: open, say so on `ready`, wait for
 * the go on `go`, keep RMCTL_BENCH_WINDOW calls in flight for the
 * duration, and write the count of answered calls on `ready`.
 */
static void __attribute__((noreturn))
bench_worker(const struct rmctl_opts *o, int ready, int go)
{
	struct bench_session bs;
	uint64_t done = 0, sent = 0, deadline;
	char c;

	rmctl_conn_open(&bs.bs_conn, o, now_ms() + o->o_timeout_ms);
	bench_open(&bs, o);
	if (write(ready, "r", 1) != 1 || read(go, &c, 1) != 1)
		_exit(1);
	deadline = now_ms() + o->o_duration_ms;
	while (sent < RMCTL_BENCH_WINDOW)
		sent = bench_call_send(&bs, "ping");
	while (done < sent) {
		bench_result(&bs, done + 1);
		done++;
		if (now_ms() < deadline)
			sent = bench_call_send(&bs, "ping");
	}
	bench_close(&bs);
	rmctl_conn_close(&bs.bs_conn);
	if (write(ready, &done, sizeof(done)) != sizeof(done))
		_exit(1);
	_exit(0);
}

/* Wait for every throughput child; -1 if one failed. */
static int
bench_reap(pid_t *pids, size_t n)
{
	size_t i;
	int st, failed = 0;

	for (i = 0; i < n; i++) {
		if (pids[i] <= 0)
			continue;
		while (waitpid(pids[i], &st, 0) == -1 && errno == EINTR)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed = 1;
	}
	return failed ? -1 : 0;
}

/*
 * Read one child's "ready" byte within timeout_ms; -1 if none came, or if
 * a child exited first (it failed, and said why on stderr).
 */
static int
bench_read_ready(int fd, uint64_t timeout_ms)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	uint64_t deadline = now_ms() + timeout_ms;
	siginfo_t si;
	char c;
	int rv;

	do {
		rv = poll(&pfd, 1, 50);
		if (rv == 1)
			return read(fd, &c, 1) == 1 ? 0 : -1;
		memset(&si, 0, sizeof(si));
		if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
		    si.si_pid != 0)
			return -1;
	} while ((rv == 0 || errno == EINTR) && now_ms() < deadline);
	return -1;
}

/* Small calls per second over --parallel sessions, one process each. */
static double
bench_throughput(const struct rmctl_opts *o, uint64_t *calls)
{
	int ready[2], go[2];
	pid_t *pids;
	uint64_t i, n = o->o_parallel, count;

	if (pipe(ready) == -1 || pipe(go) == -1)
		err(1, "pipe");
	pids = xcalloc((size_t)n, sizeof(*pids));
	fflush(stdout);
	for (i = 0; i < n; i++) {
		if ((pids[i] = fork()) == -1)
			err(1, "fork");
		if (pids[i] == 0) {
			close(ready[0]);
			close(go[1]);
			bench_worker(o, ready[1], go[0]);
		}
	}
	close(ready[1]);
	close(go[0]);
	for (i = 0; i < n; i++)
		if (bench_read_ready(ready[0], o->o_timeout_ms) == -1) {
			for (i = 0; i < n; i++)
				kill(pids[i], SIGKILL);
			(void)bench_reap(pids, (size_t)n);
			errx(1, "bench: a throughput session did not open");
		}
	/* Let the server settle (spares refill) before measuring. */
	bench_sleep_ms(o->o_pace_ms);
	for (i = 0; i < n; i++)
		if (write(go[1], "g", 1) != 1)
			err(1, "bench: write");
	*calls = 0;
	for (i = 0; i < n; i++) {
		if (read(ready[0], &count, sizeof(count)) != sizeof(count))
			break;
		*calls += count;
	}
	if (bench_reap(pids, (size_t)n) == -1)
		errx(1, "bench: a throughput session failed");
	close(ready[0]);
	close(go[1]);
	free(pids);
	return (double)o->o_duration_ms / 1000.0;
}

/* Print one latency figure: a table row, or a JSON member. */
static void
bench_print_stats(const struct rmctl_opts *o, const char *name,
    const struct bench_stats *st, int last)
{
	if (o->o_json)
		printf("  \"%s\": {\"count\": %zu, \"p50_us\": %.1f, "
		       "\"p99_us\": %.1f}%s\n",
		    name, st->st_n, st->st_p50 / 1e3, st->st_p99 / 1e3,
		    last ? "" : ",");
	else
		printf("%-10s %8zu %12.1f %12.1f\n", name, st->st_n,
		    st->st_p50 / 1e3, st->st_p99 / 1e3);
}

/* rmctl bench: every figure, as a table or (--json) one JSON object. */
int
rmctl_bench(const struct rmctl_opts *o)
{
	struct bench_stats echo, call, ses;
	uint64_t bytes, calls;
	double secs, tsecs;

	signal(SIGPIPE, SIG_IGN);
	bench_sleep_ms(o->o_pace_ms);
	bench_echo(o, &echo);
	bench_calls(o, &call);
	bench_sessions(o, &ses);
	bench_sleep_ms(o->o_pace_ms);
	secs = bench_stream(o, &bytes);
	bench_sleep_ms(o->o_pace_ms);
	tsecs = bench_throughput(o, &calls);
	if (o->o_json)
		printf("{\n");
	else
		printf("%-10s %8s %12s %12s\n", "figure", "count", "p50 us",
		    "p99 us");
	bench_print_stats(o, "echo", &echo, 0);
	bench_print_stats(o, "call", &call, 0);
	bench_print_stats(o, "session", &ses, 0);
	if (o->o_json) {
		printf("  \"stream\": {\"items\": %" PRIu64
		       ", \"item_bytes\": %" PRIu64 ", \"bytes\": %" PRIu64
		       ", \"seconds\": %.6f, \"mb_per_s\": %.1f},\n",
		    o->o_items, o->o_size, bytes, secs, bytes / secs / 1e6);
		printf("  \"throughput\": {\"sessions\": %" PRIu64
		       ", \"calls\": %" PRIu64
		       ", \"seconds\": %.3f, \"calls_per_s\": %.0f}\n}\n",
		    o->o_parallel, calls, tsecs, calls / tsecs);
		return 0;
	}
	printf("call/echo  %.2f x at p50\n",
	    (double)call.st_p50 / (double)echo.st_p50);
	printf("stream     %" PRIu64 " items of %" PRIu64 " bytes: %.1f MB/s\n",
	    o->o_items, o->o_size, bytes / secs / 1e6);
	printf("throughput %" PRIu64 " sessions, %" PRIu64
	       " calls in %.1f s: %.0f calls/s\n",
	    o->o_parallel, calls, tsecs, calls / tsecs);
	return 0;
}
