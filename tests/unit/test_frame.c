/*
 * Unit tests for the incremental deframer (gRPC messages and worker frames)
 * and for the string parsers in util.c.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "frame.h"
#include "util.h"

#define REC_MAX 64

/* What the callback saw: one entry per delivered message. */
struct rec {
	int rc_n;
	uint8_t rc_tag[REC_MAX];
	size_t rc_len[REC_MAX];
	uint8_t *rc_msg[REC_MAX];
	size_t rc_total;
	int rc_refuse_at; /* refuse the message with this index; -1: never */
	size_t rc_max_len; /* largest length delivered */
};

static void
rec_init(struct rec *r)
{
	memset(r, 0, sizeof(*r));
	r->rc_refuse_at = -1;
}

static void
rec_free(struct rec *r)
{
	int i;

	for (i = 0; i < r->rc_n && i < REC_MAX; i++)
		free(r->rc_msg[i]);
	rec_init(r);
}

/* Record a copy of each delivered message; refuse one on request. */
static int
rec_cb(void *arg, uint8_t tag, const uint8_t *msg, size_t len)
{
	struct rec *r = arg;
	int idx = r->rc_n++;

	r->rc_total += len;
	if (len > r->rc_max_len)
		r->rc_max_len = len;
	if (idx < REC_MAX) {
		r->rc_tag[idx] = tag;
		r->rc_len[idx] = len;
		r->rc_msg[idx] = malloc(len ? len : 1);
		assert_non_null(r->rc_msg[idx]);
		if (len > 0)
			memcpy(r->rc_msg[idx], msg, len);
	}
	return idx == r->rc_refuse_at ? -1 : 0;
}

/* Append one framed message of the given kind to buf; returns its size. */
static size_t
put_msg(uint8_t *buf, enum deframe_kind kind, uint8_t tag, const void *p,
    size_t len)
{
	if (kind == DEFRAME_GRPC) {
		frame_grpc_header(buf, (uint32_t)len);
		buf[0] = tag;
	} else
		frame_worker_header(buf, tag, (uint32_t)len);
	if (len > 0)
		memcpy(buf + FRAME_HDR_LEN, p, len);
	return FRAME_HDR_LEN + len;
}

static void
check_msg(const struct rec *r, int i, uint8_t tag, const void *p, size_t len)
{
	assert_true(i < r->rc_n);
	assert_int_equal(r->rc_tag[i], tag);
	assert_int_equal(r->rc_len[i], len);
	if (len > 0)
		assert_memory_equal(r->rc_msg[i], p, len);
}

static const char payload[] = "hello, deframer";

static uint8_t
kind_tag(enum deframe_kind kind)
{
	return kind == DEFRAME_GRPC ? 0 : FRAME_MSG;
}

/* One message in one feed. */
static void
run_whole(enum deframe_kind kind)
{
	struct deframer df;
	struct rec r;
	uint8_t buf[64];
	size_t n;

	rec_init(&r);
	deframer_init(&df, kind, 1024);
	n = put_msg(buf, kind, kind_tag(kind), payload, sizeof(payload));
	assert_int_equal(deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(r.rc_n, 1);
	check_msg(&r, 0, kind_tag(kind), payload, sizeof(payload));
	assert_false(deframer_partial(&df));
	assert_int_equal(deframer_wanted(&df), 0);
	assert_null(df.df_buf); /* delivered in place, no copy */
	deframer_free(&df);
	rec_free(&r);
}

static void
test_whole_grpc(void **state)
{
	run_whole(DEFRAME_GRPC);
}

static void
test_whole_worker(void **state)
{
	run_whole(DEFRAME_WORKER);
}

/* Builds three messages back to back (the middle one empty). */
static size_t
build_three(uint8_t *buf, enum deframe_kind kind)
{
	size_t n = 0;
	uint8_t t2 = kind == DEFRAME_GRPC ? 0 : FRAME_CTL;

	n += put_msg(buf + n, kind, kind_tag(kind), "one", 3);
	n += put_msg(buf + n, kind, t2, NULL, 0);
	n += put_msg(buf + n, kind, kind_tag(kind), payload, sizeof(payload));
	return n;
}

static void
check_three(const struct rec *r, enum deframe_kind kind)
{
	uint8_t t2 = kind == DEFRAME_GRPC ? 0 : FRAME_CTL;

	assert_int_equal(r->rc_n, 3);
	check_msg(r, 0, kind_tag(kind), "one", 3);
	check_msg(r, 1, t2, NULL, 0);
	check_msg(r, 2, kind_tag(kind), payload, sizeof(payload));
}

/* Several messages coalesced in one feed. */
static void
run_coalesced(enum deframe_kind kind)
{
	struct deframer df;
	struct rec r;
	uint8_t buf[128];
	size_t n;

	rec_init(&r);
	deframer_init(&df, kind, 1024);
	n = build_three(buf, kind);
	assert_int_equal(deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_OK);
	check_three(&r, kind);
	assert_false(deframer_partial(&df));
	deframer_free(&df);
	rec_free(&r);
}

static void
test_coalesced_grpc(void **state)
{
	run_coalesced(DEFRAME_GRPC);
}

static void
test_coalesced_worker(void **state)
{
	run_coalesced(DEFRAME_WORKER);
}

/* The same stream fed one byte at a time. */
static void
run_bytewise(enum deframe_kind kind)
{
	struct deframer df;
	struct rec r;
	uint8_t buf[128];
	size_t n, i;

	rec_init(&r);
	deframer_init(&df, kind, 1024);
	n = build_three(buf, kind);
	for (i = 0; i < n; i++) {
		assert_int_equal(
		    deframer_feed(&df, buf + i, 1, rec_cb, &r), DEFRAME_OK);
		if (i + 1 < n)
			assert_true(
			    deframer_partial(&df) || i + 1 == 8 || i + 1 == 13);
	}
	check_three(&r, kind);
	assert_false(deframer_partial(&df));
	assert_null(df.df_buf); /* a buffered message's copy is released */
	deframer_free(&df);
	rec_free(&r);
}

static void
test_bytewise_grpc(void **state)
{
	run_bytewise(DEFRAME_GRPC);
}

static void
test_bytewise_worker(void **state)
{
	run_bytewise(DEFRAME_WORKER);
}

/* The same stream split in two at every possible point, and in three. */
static void
run_every_split(enum deframe_kind kind)
{
	struct deframer df;
	struct rec r;
	uint8_t buf[128];
	size_t n, i, j;

	n = build_three(buf, kind);
	for (i = 0; i <= n; i++) {
		for (j = i; j <= n; j++) {
			rec_init(&r);
			deframer_init(&df, kind, 1024);
			assert_int_equal(
			    deframer_feed(&df, buf, i, rec_cb, &r), DEFRAME_OK);
			assert_int_equal(
			    deframer_feed(&df, buf + i, j - i, rec_cb, &r),
			    DEFRAME_OK);
			assert_int_equal(
			    deframer_feed(&df, buf + j, n - j, rec_cb, &r),
			    DEFRAME_OK);
			check_three(&r, kind);
			assert_false(deframer_partial(&df));
			deframer_free(&df);
			rec_free(&r);
		}
	}
}

static void
test_every_split_grpc(void **state)
{
	run_every_split(DEFRAME_GRPC);
}

static void
test_every_split_worker(void **state)
{
	run_every_split(DEFRAME_WORKER);
}

/* deframer_wanted counts down through the header and the body. */
static void
test_wanted(void **state)
{
	struct deframer df;
	struct rec r;
	uint8_t buf[64];
	size_t n;

	rec_init(&r);
	deframer_init(&df, DEFRAME_GRPC, 1024);
	n = put_msg(buf, DEFRAME_GRPC, 0, "abcdefgh", 8);
	assert_int_equal(deframer_wanted(&df), 0);
	assert_int_equal(deframer_feed(&df, buf, 2, rec_cb, &r), DEFRAME_OK);
	assert_true(deframer_partial(&df));
	assert_int_equal(deframer_wanted(&df), 3);
	assert_int_equal(
	    deframer_feed(&df, buf + 2, 3, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(deframer_wanted(&df), 8);
	assert_int_equal(
	    deframer_feed(&df, buf + 5, 5, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(deframer_wanted(&df), 3);
	assert_int_equal(
	    deframer_feed(&df, buf + 10, n - 10, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(deframer_wanted(&df), 0);
	assert_false(deframer_partial(&df));
	check_msg(&r, 0, 0, "abcdefgh", 8);
	deframer_free(&df);
	rec_free(&r);
}

/* A zero-length message is delivered, alone and at the end of a feed. */
static void
run_zero_length(enum deframe_kind kind)
{
	struct deframer df;
	struct rec r;
	uint8_t buf[16];
	size_t n;

	rec_init(&r);
	deframer_init(&df, kind, 1024);
	n = put_msg(buf, kind, kind_tag(kind), NULL, 0);
	assert_int_equal(n, FRAME_HDR_LEN);
	assert_int_equal(deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(r.rc_n, 1);
	check_msg(&r, 0, kind_tag(kind), NULL, 0);
	/* And split: four header bytes, then the fifth. */
	assert_int_equal(deframer_feed(&df, buf, 4, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(r.rc_n, 1);
	assert_true(deframer_partial(&df));
	assert_int_equal(
	    deframer_feed(&df, buf + 4, 1, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(r.rc_n, 2);
	check_msg(&r, 1, kind_tag(kind), NULL, 0);
	assert_false(deframer_partial(&df));
	deframer_free(&df);
	rec_free(&r);
}

static void
test_zero_length_grpc(void **state)
{
	run_zero_length(DEFRAME_GRPC);
}

static void
test_zero_length_worker(void **state)
{
	run_zero_length(DEFRAME_WORKER);
}

/* A message of exactly df_max passes; one byte more does not. */
static void
run_at_limit(enum deframe_kind kind)
{
	struct deframer df;
	struct rec r;
	uint8_t buf[FRAME_HDR_LEN + 33], body[33];
	size_t n;

	memset(body, 'x', sizeof(body));
	rec_init(&r);
	deframer_init(&df, kind, 32);
	n = put_msg(buf, kind, kind_tag(kind), body, 32);
	assert_int_equal(deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(r.rc_n, 1);
	n = put_msg(buf, kind, kind_tag(kind), body, 33);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_TOO_BIG);
	assert_int_equal(r.rc_n, 1);
	deframer_free(&df);
	rec_free(&r);
}

static void
test_at_limit_grpc(void **state)
{
	run_at_limit(DEFRAME_GRPC);
}

static void
test_at_limit_worker(void **state)
{
	run_at_limit(DEFRAME_WORKER);
}

/*
 * A 4 GiB - 1 length prefix against a 1 KiB limit: refused from the header
 * alone, nothing allocated, and every later feed fails the same way.
 */
static void
test_too_big_grpc(void **state)
{
	static const uint8_t hdr[] = {0, 0xff, 0xff, 0xff, 0xff};
	uint8_t good[32];
	struct deframer df;
	struct rec r;
	size_t n;

	rec_init(&r);
	deframer_init(&df, DEFRAME_GRPC, 1024);
	/* Header split, so the check runs on the buffered copy. */
	assert_int_equal(deframer_feed(&df, hdr, 3, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(
	    deframer_feed(&df, hdr + 3, 2, rec_cb, &r), DEFRAME_E_TOO_BIG);
	assert_null(df.df_buf);
	assert_int_equal(df.df_len, 0);
	/* Sticky: a valid message afterwards is not delivered. */
	n = put_msg(good, DEFRAME_GRPC, 0, "ok", 2);
	assert_int_equal(
	    deframer_feed(&df, good, n, rec_cb, &r), DEFRAME_E_TOO_BIG);
	assert_int_equal(
	    deframer_feed(&df, good, 0, rec_cb, &r), DEFRAME_E_TOO_BIG);
	assert_int_equal(r.rc_n, 0);
	assert_null(df.df_buf);
	assert_string_equal(deframe_strerror(DEFRAME_E_TOO_BIG),
	    "message larger than the limit");
	deframer_free(&df);
	rec_free(&r);
}

/* The worker form against its real limit, FRAME_WORKER_MAX. */
static void
test_too_big_worker(void **state)
{
	uint8_t hdr[FRAME_HDR_LEN];
	struct deframer df;
	struct rec r;

	rec_init(&r);
	deframer_init(&df, DEFRAME_WORKER, FRAME_WORKER_MAX);
	frame_worker_header(hdr, FRAME_MSG, FRAME_WORKER_MAX + 1);
	assert_int_equal(deframer_feed(&df, hdr, sizeof(hdr), rec_cb, &r),
	    DEFRAME_E_TOO_BIG);
	assert_null(df.df_buf);
	deframer_free(&df);
	deframer_init(&df, DEFRAME_WORKER, FRAME_WORKER_MAX);
	put_be32(hdr, 0xffffffffu);
	hdr[4] = FRAME_CTL;
	assert_int_equal(deframer_feed(&df, hdr, sizeof(hdr), rec_cb, &r),
	    DEFRAME_E_TOO_BIG);
	assert_null(df.df_buf);
	assert_int_equal(r.rc_n, 0);
	deframer_free(&df);
	rec_free(&r);
}

/*
 * A prefix that claims 2 bytes followed by 10: the first 2 are a message,
 * and what follows is read as the next header. Here that header has flag
 * byte 'c' and the stream fails with BAD_FLAG.
 */
static void
test_lying_short_bad_flag(void **state)
{
	uint8_t buf[32];
	struct deframer df;
	struct rec r;
	size_t n;

	rec_init(&r);
	deframer_init(&df, DEFRAME_GRPC, 1024);
	n = put_msg(buf, DEFRAME_GRPC, 0, "abcdefghij", 10);
	buf[4] = 2;
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_BAD_FLAG);
	assert_int_equal(r.rc_n, 1);
	check_msg(&r, 0, 0, "ab", 2);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_BAD_FLAG);
	assert_int_equal(r.rc_n, 1);
	deframer_free(&df);
	rec_free(&r);
}

/*
 * The same lie where the trailing bytes happen to look like a header with
 * a huge length: TOO_BIG, and nothing of that size is allocated.
 */
static void
test_lying_short_too_big(void **state)
{
	static const uint8_t tail[] = {0, 0x7f, 0xff, 0xff, 0xff, 'z'};
	uint8_t buf[32];
	struct deframer df;
	struct rec r;
	size_t n;

	rec_init(&r);
	deframer_init(&df, DEFRAME_GRPC, 1024);
	n = put_msg(buf, DEFRAME_GRPC, 0, "ab", 2);
	memcpy(buf + n, tail, sizeof(tail));
	n += sizeof(tail);
	put_be32(buf + 1, 2);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_TOO_BIG);
	assert_int_equal(r.rc_n, 1);
	assert_null(df.df_buf);
	deframer_free(&df);
	rec_free(&r);
}

/*
 * The same lie where the trailing bytes form a plausible header: the result
 * is mis-framed but bounded (never more bytes delivered than fed, never a
 * message over df_max), and the deframer is left waiting, not crashed.
 */
static void
test_lying_short_misframed(void **state)
{
	uint8_t buf[32];
	struct deframer df;
	struct rec r;
	size_t n;

	rec_init(&r);
	deframer_init(&df, DEFRAME_WORKER, 1024);
	/* Claims 1 byte of payload; sends 9: "A", then 0 0 0 3 1 "xy", "!!" */
	frame_worker_header(buf, FRAME_MSG, 1);
	memcpy(buf + 5, "A\0\0\0\3\1xy!!", 10);
	n = 15;
	assert_int_equal(deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(r.rc_n, 2);
	check_msg(&r, 0, FRAME_MSG, "A", 1);
	check_msg(&r, 1, FRAME_MSG, "xy", 2);
	assert_true(r.rc_total <= n);
	/* "!!" is read as the start of the next header. */
	assert_true(deframer_partial(&df));
	assert_int_equal(deframer_wanted(&df), 3);
	deframer_free(&df);
	rec_free(&r);
}

/* A small deterministic PRNG (xorshift32) for the garbage feeds. */
static uint32_t
xs32(uint32_t *s)
{
	uint32_t x = *s;

	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	return *s = x;
}

/*
 * Garbage in random splits, with a fixed seed: every outcome is either an
 * error that sticks or messages within df_max whose bytes sum to no more
 * than what was fed.
 */
static void
run_garbage(enum deframe_kind kind)
{
	uint8_t buf[4096];
	struct deframer df;
	struct rec r;
	uint32_t seed = 0x2545f491u;
	size_t i, off, take;
	int round, rv, last, delivered = 0, failed = 0;

	for (round = 0; round < 500; round++) {
		for (i = 0; i < sizeof(buf); i++)
			buf[i] = (uint8_t)xs32(&seed);
		/* Bias toward plausible headers: small lengths, good tags. */
		if (round % 2 == 0) {
			memset(buf, 0, 3);
			if (kind == DEFRAME_GRPC)
				buf[3] = 0;
			else
				buf[4] = (uint8_t)(1 + xs32(&seed) % 2);
		}
		rec_init(&r);
		deframer_init(&df, kind, 700);
		last = DEFRAME_OK;
		for (off = 0; off < sizeof(buf); off += take) {
			take = 1 + xs32(&seed) % 300;
			if (take > sizeof(buf) - off)
				take = sizeof(buf) - off;
			rv = deframer_feed(&df, buf + off, take, rec_cb, &r);
			if (last != DEFRAME_OK)
				assert_int_equal(rv, last);
			last = rv;
		}
		assert_true(r.rc_total <= sizeof(buf));
		assert_true(r.rc_max_len <= 700);
		delivered += r.rc_n;
		failed += last != DEFRAME_OK;
		assert_true(last == DEFRAME_OK || last == DEFRAME_E_TOO_BIG ||
		    last == DEFRAME_E_COMPRESSED ||
		    last == DEFRAME_E_BAD_FLAG || last == DEFRAME_E_BAD_TYPE);
		deframer_free(&df);
		rec_free(&r);
	}
	/* The seed gives both outcomes many times over. */
	assert_true(delivered > 200);
	assert_true(failed > 200);
}

static void
test_garbage_grpc(void **state)
{
	run_garbage(DEFRAME_GRPC);
}

static void
test_garbage_worker(void **state)
{
	run_garbage(DEFRAME_WORKER);
}

/* A prefix claiming more than is ever sent leaves a partial message. */
static void
run_truncated(enum deframe_kind kind)
{
	uint8_t buf[64];
	struct deframer df;
	struct rec r;
	size_t n;

	rec_init(&r);
	deframer_init(&df, kind, 1024);
	n = put_msg(buf, kind, kind_tag(kind), payload, sizeof(payload));
	if (kind == DEFRAME_GRPC)
		put_be32(buf + 1, 100);
	else
		put_be32(buf, 101);
	assert_int_equal(deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(r.rc_n, 0);
	assert_true(deframer_partial(&df));
	assert_int_equal(deframer_wanted(&df), 100 - sizeof(payload));
	assert_non_null(df.df_buf);
	deframer_free(&df); /* releases the partial buffer */
	assert_null(df.df_buf);
	rec_free(&r);
}

static void
test_truncated_grpc(void **state)
{
	run_truncated(DEFRAME_GRPC);
}

static void
test_truncated_worker(void **state)
{
	run_truncated(DEFRAME_WORKER);
}

/* gRPC flag 1 is refused unless an encoding was negotiated. */
static void
test_compressed(void **state)
{
	uint8_t buf[32];
	struct deframer df;
	struct rec r;
	size_t n;

	rec_init(&r);
	deframer_init(&df, DEFRAME_GRPC, 1024);
	n = put_msg(buf, DEFRAME_GRPC, 1, "zz", 2);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_COMPRESSED);
	assert_int_equal(r.rc_n, 0);
	n = put_msg(buf, DEFRAME_GRPC, 0, "ok", 2);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_COMPRESSED);
	deframer_free(&df);

	deframer_init(&df, DEFRAME_GRPC, 1024);
	df.df_allow_compressed = 1;
	n = put_msg(buf, DEFRAME_GRPC, 1, "zz", 2);
	assert_int_equal(deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_OK);
	assert_int_equal(r.rc_n, 1);
	check_msg(&r, 0, 1, "zz", 2);
	deframer_free(&df);
	rec_free(&r);
}

/* gRPC flag bytes 2 and 0xff are invalid, compression allowed or not. */
static void
test_bad_flag(void **state)
{
	uint8_t buf[32];
	struct deframer df;
	struct rec r;
	size_t n;

	rec_init(&r);
	deframer_init(&df, DEFRAME_GRPC, 1024);
	df.df_allow_compressed = 1;
	n = put_msg(buf, DEFRAME_GRPC, 2, "zz", 2);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_BAD_FLAG);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_BAD_FLAG);
	deframer_free(&df);
	deframer_init(&df, DEFRAME_GRPC, 1024);
	n = put_msg(buf, DEFRAME_GRPC, 0xff, "zz", 2);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_BAD_FLAG);
	assert_int_equal(r.rc_n, 0);
	deframer_free(&df);
	rec_free(&r);
}

/* Worker frame types other than 1 and 2 are refused, 0 and 9 included. */
static void
test_bad_type(void **state)
{
	static const uint8_t types[] = {0, 3, 9, 0xff};
	uint8_t buf[32];
	struct deframer df;
	struct rec r;
	size_t i, n;

	rec_init(&r);
	for (i = 0; i < sizeof(types); i++) {
		deframer_init(&df, DEFRAME_WORKER, 1024);
		n = put_msg(buf, DEFRAME_WORKER, types[i], "zz", 2);
		assert_int_equal(
		    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_BAD_TYPE);
		assert_int_equal(
		    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_BAD_TYPE);
		deframer_free(&df);
	}
	assert_int_equal(r.rc_n, 0);
	rec_free(&r);
}

/* A worker length of 0 leaves no room for the type byte: an error. */
static void
test_worker_len_zero(void **state)
{
	static const uint8_t hdr[] = {0, 0, 0, 0, FRAME_MSG, 'x'};
	struct deframer df;
	struct rec r;
	int rv;

	rec_init(&r);
	deframer_init(&df, DEFRAME_WORKER, 1024);
	rv = deframer_feed(&df, hdr, sizeof(hdr), rec_cb, &r);
	assert_true(rv < 0);
	assert_int_equal(rv, DEFRAME_E_BAD_TYPE);
	assert_int_equal(r.rc_n, 0);
	assert_int_equal(deframer_feed(&df, hdr, sizeof(hdr), rec_cb, &r), rv);
	deframer_free(&df);
	rec_free(&r);
}

/*
 * A callback that refuses a message stops the feed: later messages in the
 * same feed are not delivered, and the error sticks. Both the in-place and
 * the buffered delivery paths.
 */
static void
run_callback_refuses(enum deframe_kind kind)
{
	uint8_t buf[128];
	struct deframer df;
	struct rec r;
	size_t n, i;
	int rv = DEFRAME_OK;

	n = build_three(buf, kind);
	rec_init(&r);
	r.rc_refuse_at = 1;
	deframer_init(&df, kind, 1024);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_CALLBACK);
	assert_int_equal(r.rc_n, 2);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_CALLBACK);
	assert_int_equal(r.rc_n, 2);
	deframer_free(&df);
	rec_free(&r);

	r.rc_refuse_at = 2; /* the last one, delivered from the buffer */
	deframer_init(&df, kind, 1024);
	for (i = 0; i < n && rv == DEFRAME_OK; i++)
		rv = deframer_feed(&df, buf + i, 1, rec_cb, &r);
	assert_int_equal(rv, DEFRAME_E_CALLBACK);
	assert_int_equal(i, n);
	assert_int_equal(r.rc_n, 3);
	assert_null(df.df_buf);
	assert_int_equal(
	    deframer_feed(&df, buf, n, rec_cb, &r), DEFRAME_E_CALLBACK);
	assert_int_equal(r.rc_n, 3);
	deframer_free(&df);
	rec_free(&r);
}

static void
test_callback_refuses_grpc(void **state)
{
	run_callback_refuses(DEFRAME_GRPC);
}

static void
test_callback_refuses_worker(void **state)
{
	run_callback_refuses(DEFRAME_WORKER);
}

/* The header writers produce what the deframer and get_be32 read back. */
static void
test_header_roundtrip(void **state)
{
	static const uint32_t lens[] = {
	    0, 1, 255, 256, 65536, 0x01020304, 0x7fffffff, 0xfffffffe};
	uint8_t hdr[FRAME_HDR_LEN];
	size_t i;

	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		memset(hdr, 0xaa, sizeof(hdr));
		frame_grpc_header(hdr, lens[i]);
		assert_int_equal(hdr[0], 0);
		assert_int_equal(get_be32(hdr + 1), lens[i]);
		memset(hdr, 0xaa, sizeof(hdr));
		frame_worker_header(hdr, FRAME_CTL, lens[i]);
		assert_int_equal(get_be32(hdr), lens[i] + 1);
		assert_int_equal(hdr[4], FRAME_CTL);
	}
	frame_grpc_header(hdr, 0x01020304);
	assert_int_equal(hdr[1], 1);
	assert_int_equal(hdr[2], 2);
	assert_int_equal(hdr[3], 3);
	assert_int_equal(hdr[4], 4);
}

/* Every error code has its own text. */
static void
test_strerror(void **state)
{
	assert_string_equal(deframe_strerror(DEFRAME_OK), "ok");
	assert_string_equal(deframe_strerror(DEFRAME_E_COMPRESSED),
	    "compressed message without grpc-encoding");
	assert_string_equal(
	    deframe_strerror(DEFRAME_E_BAD_FLAG), "invalid gRPC message flag");
	assert_string_equal(
	    deframe_strerror(DEFRAME_E_BAD_TYPE), "unknown frame type");
	assert_string_equal(
	    deframe_strerror(DEFRAME_E_CALLBACK), "message refused");
	assert_string_equal(deframe_strerror(-99), "unknown error");
}

/* A large message split over many reads arrives intact. */
static void
test_large_split(void **state)
{
	const size_t len = 3 * 65536 + 7;
	uint8_t *buf = malloc(FRAME_HDR_LEN + len);
	struct deframer df;
	struct rec r;
	size_t i, off, take;

	assert_non_null(buf);
	for (i = 0; i < len; i++)
		buf[FRAME_HDR_LEN + i] = (uint8_t)(i * 31 + 7);
	frame_worker_header(buf, FRAME_MSG, (uint32_t)len);
	rec_init(&r);
	deframer_init(&df, DEFRAME_WORKER, FRAME_WORKER_MAX);
	for (off = 0, take = 1; off < FRAME_HDR_LEN + len; off += take) {
		take = take * 3 + 1;
		if (take > FRAME_HDR_LEN + len - off)
			take = FRAME_HDR_LEN + len - off;
		assert_int_equal(
		    deframer_feed(&df, buf + off, take, rec_cb, &r),
		    DEFRAME_OK);
	}
	assert_int_equal(r.rc_n, 1);
	check_msg(&r, 0, FRAME_MSG, buf + FRAME_HDR_LEN, len);
	deframer_free(&df);
	rec_free(&r);
	free(buf);
}

/* parse_size: plain bytes and powers of 1024; junk and overflow refused. */
static void
test_parse_size(void **state)
{
	uint64_t v;

	assert_int_equal(parse_size("512", &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(parse_size("512B", &v), 0);
	assert_int_equal(v, 512);
	assert_int_equal(parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_size("64K", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(parse_size("1M", &v), 0);
	assert_int_equal(v, 1048576);
	assert_int_equal(parse_size("1G", &v), 0);
	assert_int_equal(v, 1073741824ULL);
	assert_int_equal(parse_size("2T", &v), 0);
	assert_int_equal(v, 2ULL << 40);
	assert_int_equal(parse_size("16777215T", &v), 0);
	assert_int_equal(v, 16777215ULL << 40);

	v = 42;
	assert_int_equal(parse_size("1X", &v), -1);
	assert_int_equal(parse_size("1k", &v), -1);
	assert_int_equal(parse_size("1KB", &v), -1);
	assert_int_equal(parse_size("1 K", &v), -1);
	assert_int_equal(parse_size("", &v), -1);
	assert_int_equal(parse_size("K", &v), -1);
	assert_int_equal(parse_size("-1", &v), -1);
	assert_int_equal(parse_size(" 1", &v), -1);
	assert_int_equal(parse_size("+1", &v), -1);
	assert_int_equal(parse_size(NULL, &v), -1);
	/* Overflow: of strtoull itself, and of the multiplication. */
	assert_int_equal(parse_size("18446744073709551616", &v), -1);
	assert_int_equal(parse_size("17179869184G", &v), -1);
	assert_int_equal(parse_size("16777216T", &v), -1);
	assert_int_equal(v, 42);
	assert_int_equal(parse_size("18446744073709551615", &v), 0);
	assert_true(v == UINT64_MAX);
}

/* parse_duration_ms: ms, s, m and h; a bare number is refused. */
static void
test_parse_duration(void **state)
{
	uint64_t v;

	assert_int_equal(parse_duration_ms("500ms", &v), 0);
	assert_int_equal(v, 500);
	assert_int_equal(parse_duration_ms("30s", &v), 0);
	assert_int_equal(v, 30000);
	assert_int_equal(parse_duration_ms("5m", &v), 0);
	assert_int_equal(v, 300000);
	assert_int_equal(parse_duration_ms("2h", &v), 0);
	assert_int_equal(v, 7200000);
	assert_int_equal(parse_duration_ms("0s", &v), 0);
	assert_int_equal(v, 0);

	v = 42;
	assert_int_equal(parse_duration_ms("500", &v), -1);
	assert_int_equal(parse_duration_ms("5x", &v), -1);
	assert_int_equal(parse_duration_ms("5S", &v), -1);
	assert_int_equal(parse_duration_ms("5 s", &v), -1);
	assert_int_equal(parse_duration_ms("1d", &v), -1);
	assert_int_equal(parse_duration_ms("ms", &v), -1);
	assert_int_equal(parse_duration_ms("", &v), -1);
	assert_int_equal(parse_duration_ms("-5s", &v), -1);
	assert_int_equal(parse_duration_ms("1.5s", &v), -1);
	assert_int_equal(parse_duration_ms("18446744073709551615h", &v), -1);
	assert_int_equal(parse_duration_ms("99999999999999999999ms", &v), -1);
	assert_int_equal(v, 42);
}

static void
check_hostport(const char *s, const char *host, int port)
{
	char h[64];
	uint16_t p = 1;

	assert_int_equal(parse_hostport(s, h, sizeof(h), &p), 0);
	assert_string_equal(h, host);
	assert_int_equal(p, port);
}

/* parse_hostport: HOST:PORT and [IPv6]:PORT only. */
/* The addresses whose clients the front takes to be on its own host. */
static void
test_sock_is_loopback(void **state)
{
	static const struct {
		int family;
		const char *addr;
		int loopback;
	} cases[] = {
	    {AF_INET, "127.0.0.1", 1},
	    {AF_INET, "127.255.0.9", 1},
	    {AF_INET, "128.0.0.1", 0},
	    {AF_INET, "10.0.0.1", 0},
	    {AF_INET, "0.0.0.0", 0},
	    {AF_INET6, "::1", 1},
	    {AF_INET6, "::ffff:127.0.0.1", 1},
	    {AF_INET6, "::ffff:10.0.0.1", 0},
	    {AF_INET6, "::2", 0},
	    {AF_INET6, "fe80::1", 0},
	    {AF_INET6, "::", 0},
	};
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
	struct sockaddr sa;
	int v4;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(&sin, 0, sizeof(sin));
		memset(&sin6, 0, sizeof(sin6));
		sin.sin_family = AF_INET;
		sin6.sin6_family = AF_INET6;
		v4 = cases[i].family == AF_INET;
		assert_int_equal(
		    inet_pton(cases[i].family, cases[i].addr,
		        v4 ? (void *)&sin.sin_addr : (void *)&sin6.sin6_addr),
		    1);
		assert_int_equal(
		    sock_is_loopback(v4 ? (struct sockaddr *)&sin
		                        : (struct sockaddr *)&sin6),
		    cases[i].loopback);
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_family = AF_UNIX;
	assert_int_equal(sock_is_loopback(&sa), 0);
}

static void
test_parse_hostport(void **state)
{
	static const char *bad[] = {
	    "127.0.0.1",
	    "127.0.0.1:",
	    ":50052",
	    "127.0.0.1:70000",
	    "127.0.0.1:65536",
	    "127.0.0.1:-1",
	    "127.0.0.1:80x",
	    "::1",
	    "::1:80",
	    "fe80::1:443",
	    "[::1]",
	    "[::1]:",
	    "[::1]80",
	    "[::1:80",
	    "[]:80",
	    "",
	};
	char h[64];
	uint16_t p = 7;
	size_t i;

	check_hostport("127.0.0.1:50052", "127.0.0.1", 50052);
	check_hostport("[::1]:0", "::1", 0);
	check_hostport("localhost:65535", "localhost", 65535);
	check_hostport("[fe80::1%lo]:443", "fe80::1%lo", 443);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (parse_hostport(bad[i], h, sizeof(h), &p) != -1)
			fail_msg("parse_hostport accepted '%s'", bad[i]);
	}
	assert_int_equal(p, 7);
	/* A host that does not fit the caller's buffer. */
	assert_int_equal(parse_hostport("abcdefgh:1", h, 8, &p), -1);
	assert_int_equal(parse_hostport("abcdefg:1", h, 8, &p), 0);
	assert_string_equal(h, "abcdefg");
}

static void
test_parse_onoff(void **state)
{
	int v = -1;

	assert_int_equal(parse_onoff("on", &v), 0);
	assert_int_equal(v, 1);
	assert_int_equal(parse_onoff("off", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(parse_onoff("yes", &v), -1);
	assert_int_equal(parse_onoff("", &v), -1);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_whole_grpc),
	    cmocka_unit_test(test_whole_worker),
	    cmocka_unit_test(test_coalesced_grpc),
	    cmocka_unit_test(test_coalesced_worker),
	    cmocka_unit_test(test_bytewise_grpc),
	    cmocka_unit_test(test_bytewise_worker),
	    cmocka_unit_test(test_every_split_grpc),
	    cmocka_unit_test(test_every_split_worker),
	    cmocka_unit_test(test_wanted),
	    cmocka_unit_test(test_zero_length_grpc),
	    cmocka_unit_test(test_zero_length_worker),
	    cmocka_unit_test(test_at_limit_grpc),
	    cmocka_unit_test(test_at_limit_worker),
	    cmocka_unit_test(test_too_big_grpc),
	    cmocka_unit_test(test_too_big_worker),
	    cmocka_unit_test(test_lying_short_bad_flag),
	    cmocka_unit_test(test_lying_short_too_big),
	    cmocka_unit_test(test_lying_short_misframed),
	    cmocka_unit_test(test_garbage_grpc),
	    cmocka_unit_test(test_garbage_worker),
	    cmocka_unit_test(test_truncated_grpc),
	    cmocka_unit_test(test_truncated_worker),
	    cmocka_unit_test(test_compressed),
	    cmocka_unit_test(test_bad_flag),
	    cmocka_unit_test(test_bad_type),
	    cmocka_unit_test(test_worker_len_zero),
	    cmocka_unit_test(test_callback_refuses_grpc),
	    cmocka_unit_test(test_callback_refuses_worker),
	    cmocka_unit_test(test_header_roundtrip),
	    cmocka_unit_test(test_strerror),
	    cmocka_unit_test(test_large_split),
	    cmocka_unit_test(test_parse_size),
	    cmocka_unit_test(test_parse_duration),
	    cmocka_unit_test(test_parse_hostport),
	    cmocka_unit_test(test_sock_is_loopback),
	    cmocka_unit_test(test_parse_onoff),
	};

	return cmocka_run_group_tests_name("frame", tests, NULL, NULL);
}
