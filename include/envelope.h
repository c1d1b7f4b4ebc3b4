/*
 * The envelope of a session message: what the front checks of a
 * ClientMessage or ServerMessage (proto/remotemedia.proto), read straight
 * from the wire bytes, which it then relays untouched. Reading it validates
 * the whole message as protobuf-c would (wire types, lengths, UTF-8 of
 * strings, nested messages) but copies and allocates nothing, so that a
 * 1 MiB chunk crosses the front without being unpacked. The worker reads
 * a continuation chunk's data the same way, in place (ev_data).
 */
#ifndef RM_ENVELOPE_H
#define RM_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

struct envelope {
	uint32_t ev_case; /* the oneof member's field number; 0: none */
	uint64_t ev_call_id;
	int ev_has_value; /* a Value: the carrier's, or the message itself */
	uint32_t ev_seq; /* of that Value */
	int ev_more;
	uint64_t ev_total; /* its total_size */
	const uint8_t *ev_data; /* its data, inside the message */
	size_t ev_data_len; /* its data's length */
	int ev_generator; /* Result.generator */
	uint32_t ev_n; /* Pull.n */
	uint64_t ev_timeout_ms; /* Call.timeout_ms, Pull.timeout_ms */
	const uint8_t *ev_name; /* Call.name, not NUL-terminated */
	size_t ev_name_len;
};

/* The oneof members, by field number. */
enum {
	ENV_SERVER_PROGRESS = 1,
	ENV_SERVER_READY = 2,
	ENV_SERVER_RESULT = 3,
	ENV_SERVER_ERROR = 4,
	ENV_SERVER_OUTPUT = 5,
	ENV_SERVER_ITEM = 6,
	ENV_SERVER_END = 7,
	ENV_SERVER_VALUE = 8,
};
enum {
	ENV_CLIENT_OPEN = 1,
	ENV_CLIENT_CALL = 2,
	ENV_CLIENT_PULL = 3,
	ENV_CLIENT_CANCEL = 4,
	ENV_CLIENT_CLOSE = 5,
	ENV_CLIENT_VALUE = 6,
};

/* 0, or -1 if the bytes are not a valid message of that type. */
int envelope_server(const uint8_t *, size_t, struct envelope *);
int envelope_client(const uint8_t *, size_t, struct envelope *);

/* One varint, read at *p and stepped over; -1 past end or over 10 bytes. */
int envelope_varint(const uint8_t **, const uint8_t *, uint64_t *);
int envelope_utf8(const uint8_t *, size_t);

#endif
