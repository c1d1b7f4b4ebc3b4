/*
 * Length-prefixed framing, in both of its forms:
 *  - gRPC messages on an HTTP/2 stream: 1 flag byte (compressed or not),
 *    then a 4-byte big-endian length, then the message;
 *  - worker frames on a session's socketpair: a 4-byte big-endian length of
 *    what follows, 1 type byte, then the payload (see proto/worker.proto).
 * One incremental deframer handles both, fed with arbitrary splits of the
 * byte stream: a message split over many reads, or many in one.
 */
#ifndef RM_FRAME_H
#define RM_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HDR_LEN 5

/* Worker frame types. */
#define FRAME_MSG 1 /* ClientMessage (to worker) or ServerMessage (from it) */
#define FRAME_CTL 2 /* remotemedia.worker.v1.WorkerControl */

/*
 * A session's worker starts with its end of the socketpair on WORKER_FD,
 * then the pipes of its stdout and stderr: stdout's write end on
 * WORKER_OUT_FD, its read end next, then stderr's two ends. The front
 * reads the pipes (front_output.c) through read ends of its own, other
 * open files than the worker's, which the worker only polls.
 */
#define WORKER_FD 3
#define WORKER_OUT_FD 4
#define WORKER_EXEC_FDS 8

/* Largest value chunk; a chunked Value's data is at most this. */
#define FRAME_CHUNK_MAX (1024 * 1024)
/* Largest worker frame: a chunk plus its envelope. */
#define FRAME_WORKER_MAX (FRAME_CHUNK_MAX + 64 * 1024)

enum deframe_kind {
	DEFRAME_GRPC,
	DEFRAME_WORKER,
};

enum deframe_error {
	DEFRAME_OK = 0,
	DEFRAME_E_TOO_BIG = -1, /* length over df_max */
	DEFRAME_E_COMPRESSED = -2, /* gRPC compressed flag, no encoding */
	DEFRAME_E_BAD_FLAG = -3, /* gRPC flag byte other than 0 or 1 */
	DEFRAME_E_BAD_TYPE = -4, /* worker frame of unknown type */
	DEFRAME_E_CALLBACK = -5, /* the callback refused the message */
};

/*
 * Called once per complete message. tag is the gRPC flag byte or the worker
 * frame type. msg is valid only during the call. Return 0 to go on.
 */
typedef int (*deframe_cb)(void *, uint8_t, const uint8_t *, size_t);

struct deframer {
	enum deframe_kind df_kind;
	size_t df_max; /* largest message accepted */
	int df_allow_compressed; /* gRPC: a grpc-encoding was negotiated */
	uint8_t df_hdr[FRAME_HDR_LEN];
	size_t df_hdrlen;
	uint8_t df_tag;
	uint8_t *df_buf; /* partial message, df_have of df_len bytes */
	size_t df_len;
	size_t df_have;
	size_t df_cap; /* df_buf's size: grown as bytes arrive */
	int df_error; /* sticky: once failed, the stream is dead */
};

void deframer_init(struct deframer *, enum deframe_kind, size_t);
void deframer_free(struct deframer *);
int
deframer_feed(struct deframer *, const uint8_t *, size_t, deframe_cb, void *);
int deframer_partial(const struct deframer *);
size_t deframer_wanted(const struct deframer *);
const char *deframe_strerror(int);

void frame_grpc_header(uint8_t *, uint32_t);
uint64_t frame_client_chunk(uint64_t);
void frame_worker_header(uint8_t *, uint8_t, uint32_t);

#endif
