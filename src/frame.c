/* The incremental deframer for gRPC messages and worker frames. */
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "util.h"

void
deframer_init(struct deframer *df, enum deframe_kind kind, size_t max)
{
	memset(df, 0, sizeof(*df));
	df->df_kind = kind;
	df->df_max = max;
}

void
deframer_free(struct deframer *df)
{
	free(df->df_buf);
	df->df_buf = NULL;
	df->df_len = df->df_have = df->df_hdrlen = df->df_cap = 0;
}

/*
 * Make room for n more bytes of the current message. The buffer grows
 * with what arrives (doubling, up to df_len), never with what a header
 * merely promises.
 */
static void
deframer_reserve(struct deframer *df, size_t n)
{
	size_t cap;

	if (df->df_have + n <= df->df_cap)
		return;
	cap = df->df_cap < 4096 ? 4096 : df->df_cap * 2;
	if (cap < df->df_have + n)
		cap = df->df_have + n;
	if (cap > df->df_len)
		cap = df->df_len;
	df->df_buf = xrealloc(df->df_buf, cap);
	df->df_cap = cap;
}

/* Whether a message has been started but not finished. */
int
deframer_partial(const struct deframer *df)
{
	return df->df_hdrlen > 0;
}

/* How many more bytes the current message needs (0 between messages). */
size_t
deframer_wanted(const struct deframer *df)
{
	if (df->df_hdrlen == 0)
		return 0;
	if (df->df_hdrlen < FRAME_HDR_LEN)
		return FRAME_HDR_LEN - df->df_hdrlen;
	return df->df_len - df->df_have;
}

const char *
deframe_strerror(int e)
{
	switch (e) {
	case DEFRAME_OK:
		return "ok";
	case DEFRAME_E_TOO_BIG:
		return "message larger than the limit";
	case DEFRAME_E_COMPRESSED:
		return "compressed message without grpc-encoding";
	case DEFRAME_E_BAD_FLAG:
		return "invalid gRPC message flag";
	case DEFRAME_E_BAD_TYPE:
		return "unknown frame type";
	case DEFRAME_E_CALLBACK:
		return "message refused";
	}
	return "unknown error";
}

/* Decode a complete header into tag and length; check both. */
static int
deframer_header(struct deframer *df)
{
	uint32_t len;

	if (df->df_kind == DEFRAME_GRPC) {
		df->df_tag = df->df_hdr[0];
		len = get_be32(df->df_hdr + 1);
		if (df->df_tag > 1)
			return DEFRAME_E_BAD_FLAG;
		if (df->df_tag == 1 && !df->df_allow_compressed)
			return DEFRAME_E_COMPRESSED;
	} else {
		len = get_be32(df->df_hdr);
		if (len < 1)
			return DEFRAME_E_BAD_TYPE;
		df->df_tag = df->df_hdr[4];
		len -= 1;
		if (df->df_tag != FRAME_MSG && df->df_tag != FRAME_CTL)
			return DEFRAME_E_BAD_TYPE;
	}
	if (len > df->df_max)
		return DEFRAME_E_TOO_BIG;
	df->df_len = len;
	df->df_have = 0;
	return DEFRAME_OK;
}

/* Deliver the message now complete and reset for the next header. */
static int
deframer_deliver(
    struct deframer *df, const uint8_t *msg, deframe_cb cb, void *arg)
{
	int rv;

	rv = cb(arg, df->df_tag, msg, df->df_len);
	df->df_hdrlen = 0;
	df->df_have = df->df_len = 0;
	return rv == 0 ? DEFRAME_OK : DEFRAME_E_CALLBACK;
}

/*
 * Feed bytes; call cb for each complete message. A message that arrives
 * whole in one feed is passed without a copy. Returns DEFRAME_OK or an
 * error, which sticks.
 */
int
deframer_feed(
    struct deframer *df, const uint8_t *p, size_t n, deframe_cb cb, void *arg)
{
	size_t take;
	int rv;

	if (df->df_error)
		return df->df_error;
	while (n > 0) {
		if (df->df_hdrlen < FRAME_HDR_LEN) {
			take = FRAME_HDR_LEN - df->df_hdrlen;
			if (take > n)
				take = n;
			memcpy(df->df_hdr + df->df_hdrlen, p, take);
			df->df_hdrlen += take;
			p += take;
			n -= take;
			if (df->df_hdrlen < FRAME_HDR_LEN)
				break;
			if ((rv = deframer_header(df)) != DEFRAME_OK)
				return df->df_error = rv;
			if (df->df_len <= n) {
				/* Whole message present: no copy. */
				take = df->df_len;
				if ((rv = deframer_deliver(df, p, cb, arg)) !=
				    0)
					return df->df_error = rv;
				p += take;
				n -= take;
				continue;
			}
			continue;
		}
		take = df->df_len - df->df_have;
		if (take > n)
			take = n;
		deframer_reserve(df, take);
		memcpy(df->df_buf + df->df_have, p, take);
		df->df_have += take;
		p += take;
		n -= take;
		if (df->df_have == df->df_len) {
			rv = deframer_deliver(df, df->df_buf, cb, arg);
			/* Hold no memory between messages. */
			free(df->df_buf);
			df->df_buf = NULL;
			df->df_cap = 0;
			if (rv != 0)
				return df->df_error = rv;
		}
	}
	return DEFRAME_OK;
}

void
frame_grpc_header(uint8_t *hdr, uint32_t len)
{
	hdr[0] = 0;
	put_be32(hdr + 1, len);
}

void
frame_worker_header(uint8_t *hdr, uint8_t type, uint32_t len)
{
	put_be32(hdr, len + 1);
	hdr[4] = type;
}

/*
 * The largest chunk of data a client may send (Ready.limits.max_chunk_bytes):
 * 1 MiB, or less where the front takes smaller messages (--max-message-size),
 * leaving room for the envelope (32 KiB, or half a message that small).
 */
uint64_t
frame_client_chunk(uint64_t max_message)
{
	uint64_t room;

	if (max_message == 0)
		return FRAME_CHUNK_MAX;
	room = max_message / 2 < 32 * 1024 ? max_message / 2 : 32 * 1024;
	return max_message - room < FRAME_CHUNK_MAX ? max_message - room
	                                            : FRAME_CHUNK_MAX;
}
