/*
 * Fuzz target: the incremental deframer (src/frame.c), in both kinds.
 *
 * Input: a config byte (kind, grpc-encoding, limit, split pattern), a byte
 * naming the message the callback refuses, then the byte stream. The stream
 * is fed in pieces; what is delivered, the errors and deframer_wanted() are
 * checked against a reference parse of the whole stream at once, so every
 * split must give the same messages, and an error must stick.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "log.h"
#include "util.h"

#include "fuzz.h"

/* One message of the reference parse: where its header starts. */
struct ref_msg {
	size_t rm_hdr;
	size_t rm_len;
	uint8_t rm_tag;
};

/* The reference parse of the whole stream, and the deframer's progress. */
struct dfz {
	enum deframe_kind dz_kind;
	int dz_allow;
	size_t dz_max;
	size_t dz_refuse; /* index of the refused message, or SIZE_MAX */
	const uint8_t *dz_p;
	size_t dz_n;
	struct ref_msg *dz_msgs;
	size_t dz_nmsgs; /* complete messages before the stop */
	size_t dz_partial; /* start of the unfinished or bad one, or n */
	int dz_err; /* the error the stream must end with */
	size_t dz_errpos; /* the byte that causes it */
	size_t dz_seen; /* messages delivered so far */
};

static const size_t dfz_limits[4] = {0, 7, 300, FRAME_WORKER_MAX};

/* Check one header as deframer_header does; *len is the message length. */
static int
ref_header(const struct dfz *z, const uint8_t *h, uint8_t *tag, size_t *len)
{
	uint32_t l;

	if (z->dz_kind == DEFRAME_GRPC) {
		*tag = h[0];
		l = get_be32(h + 1);
		if (*tag > 1)
			return DEFRAME_E_BAD_FLAG;
		if (*tag == 1 && !z->dz_allow)
			return DEFRAME_E_COMPRESSED;
	} else {
		l = get_be32(h);
		if (l < 1)
			return DEFRAME_E_BAD_TYPE;
		*tag = h[4];
		l -= 1;
		if (*tag != FRAME_MSG && *tag != FRAME_CTL)
			return DEFRAME_E_BAD_TYPE;
	}
	if (l > z->dz_max)
		return DEFRAME_E_TOO_BIG;
	*len = l;
	return DEFRAME_OK;
}

/* Parse the whole stream at once: the messages, and where it stops. */
static void
ref_parse(struct dfz *z)
{
	size_t pos = 0, len;
	uint8_t tag;
	int e;

	z->dz_msgs = xcalloc(z->dz_n / FRAME_HDR_LEN + 1, sizeof(*z->dz_msgs));
	z->dz_partial = z->dz_n;
	while (pos < z->dz_n) {
		if (z->dz_n - pos < FRAME_HDR_LEN) {
			z->dz_partial = pos;
			return;
		}
		if ((e = ref_header(z, z->dz_p + pos, &tag, &len)) != 0) {
			z->dz_partial = pos;
			z->dz_err = e;
			z->dz_errpos = pos + FRAME_HDR_LEN;
			return;
		}
		if (z->dz_n - pos - FRAME_HDR_LEN < len) {
			z->dz_partial = pos;
			return;
		}
		z->dz_msgs[z->dz_nmsgs].rm_hdr = pos;
		z->dz_msgs[z->dz_nmsgs].rm_len = len;
		z->dz_msgs[z->dz_nmsgs].rm_tag = tag;
		pos += FRAME_HDR_LEN + len;
		if (z->dz_nmsgs++ == z->dz_refuse) {
			z->dz_err = DEFRAME_E_CALLBACK;
			z->dz_errpos = pos;
			return;
		}
	}
}

/* The callback: each message must be the reference's next one. */
static int
dfz_cb(void *arg, uint8_t tag, const uint8_t *msg, size_t len)
{
	struct dfz *z = arg;
	const struct ref_msg *m;

	CHECK(len <= z->dz_max);
	CHECK(z->dz_seen < z->dz_nmsgs);
	m = &z->dz_msgs[z->dz_seen];
	CHECK(tag == m->rm_tag);
	CHECK(len == m->rm_len);
	CHECK(len == 0 ||
	    memcmp(msg, z->dz_p + m->rm_hdr + FRAME_HDR_LEN, len) == 0);
	if (z->dz_kind == DEFRAME_GRPC)
		CHECK(tag == 0 || (tag == 1 && z->dz_allow));
	else
		CHECK(tag == FRAME_MSG || tag == FRAME_CTL);
	return z->dz_seen++ == z->dz_refuse ? -1 : 0;
}

/* What deframer_wanted() must say once the first pos bytes are fed. */
static size_t
ref_wanted(const struct dfz *z, size_t pos)
{
	size_t i, h = z->dz_partial, end;

	for (i = 0; i < z->dz_nmsgs; i++) {
		end = z->dz_msgs[i].rm_hdr + FRAME_HDR_LEN +
		    z->dz_msgs[i].rm_len;
		if (pos < end) {
			h = z->dz_msgs[i].rm_hdr;
			if (pos == h)
				return 0;
			if (pos - h < FRAME_HDR_LEN)
				return FRAME_HDR_LEN - (pos - h);
			return end - pos;
		}
	}
	if (pos <= h)
		return 0;
	if (pos - h < FRAME_HDR_LEN)
		return FRAME_HDR_LEN - (pos - h);
	return get_be32(z->dz_p + h + (z->dz_kind == DEFRAME_GRPC)) -
	    (z->dz_kind == DEFRAME_WORKER) - (pos - h - FRAME_HDR_LEN);
}

/* The next piece's length: whole, 1, 5, or pseudo-random by the seed. */
static size_t
dfz_piece(unsigned int mode, uint32_t *seed, size_t left)
{
	size_t n;

	switch (mode) {
	case 0:
		n = left;
		break;
	case 1:
		n = 1;
		break;
	case 2:
		n = FRAME_HDR_LEN;
		break;
	default:
		*seed ^= *seed << 13;
		*seed ^= *seed >> 17;
		*seed ^= *seed << 5;
		n = 1 + *seed % (1u << (mode % 12));
		break;
	}
	return n < left ? n : left;
}

/* Feed the stream in pieces and check each step against the reference. */
static void
dfz_feed(struct dfz *z, struct deframer *df, unsigned int mode, uint32_t seed)
{
	size_t pos = 0, n;
	int rv, failed = 0;

	while (pos < z->dz_n) {
		n = dfz_piece(mode, &seed, z->dz_n - pos);
		rv = deframer_feed(df, z->dz_p + pos, n, dfz_cb, z);
		if (failed) {
			CHECK(rv == z->dz_err);
		} else if (z->dz_err != 0 && pos < z->dz_errpos &&
		    z->dz_errpos <= pos + n) {
			CHECK(rv == z->dz_err);
			CHECK(df->df_error == z->dz_err);
			failed = 1;
		} else {
			CHECK(rv == DEFRAME_OK);
			CHECK(deframer_wanted(df) == ref_wanted(z, pos + n));
			CHECK(deframer_partial(df) ==
			    (ref_wanted(z, pos + n) != 0));
		}
		pos += n;
	}
	/* Sticky: an empty feed and one more byte change nothing. */
	if (failed) {
		CHECK(deframer_feed(df, z->dz_p, 0, dfz_cb, z) == z->dz_err);
		CHECK(deframer_feed(df, (const uint8_t *)"\0", 1, dfz_cb, z) ==
		    z->dz_err);
	}
	CHECK(z->dz_seen == z->dz_nmsgs);
	CHECK(failed == (z->dz_err != 0));
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_init("fuzz_deframe", LOG_LEVEL_ERROR);
	return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct deframer df;
	struct dfz z;
	uint8_t cfg;

	if (size < 2)
		return 0;
	cfg = data[0];
	memset(&z, 0, sizeof(z));
	z.dz_kind = (cfg & 1) ? DEFRAME_WORKER : DEFRAME_GRPC;
	z.dz_allow = (cfg >> 1) & 1;
	z.dz_max = dfz_limits[(cfg >> 2) & 3];
	z.dz_refuse = data[1] == 0xff ? SIZE_MAX : data[1];
	z.dz_p = data + 2;
	z.dz_n = size - 2;
	ref_parse(&z);
	deframer_init(&df, z.dz_kind, z.dz_max);
	df.df_allow_compressed = z.dz_allow;
	dfz_feed(&z, &df, cfg >> 4, 0x9e3779b9u ^ data[1] ^ (uint32_t)size);
	deframer_free(&df);
	CHECK(df.df_buf == NULL && !deframer_partial(&df));
	free(z.dz_msgs);
	return 0;
}
