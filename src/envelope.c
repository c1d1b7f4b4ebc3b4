/*
 * Reading a session message's envelope from its wire bytes (envelope.h).
 *
 * Each message type of proto/remotemedia.proto that the front relays has a
 * schema here: its fields' numbers and kinds. One walker checks a message
 * against its schema, field by field, and hands the fields the front cares
 * about to env_take. The protobuf rules it keeps: the last of a repeated
 * scalar wins, unknown fields are skipped. Where parsers differ (a message
 * field or a oneof given twice), it refuses the message.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "envelope.h"

#define ENV_DEPTH_MAX 8

enum env_kind {
	K_VARINT,
	K_VARINTS, /* repeated: packed (wire type 2) or one by one (0) */
	K_FIXED32,
	K_FIXED64,
	K_BYTES,
	K_STRING,
	K_MSG,
};

/* What a schema's fields mean to the envelope. */
enum env_role {
	R_NONE, /* only validated */
	R_VALUE_TOP, /* a stand-alone Value: its call_id counts */
	R_VALUE_IN, /* a carrier's Value */
	R_CARRIER, /* Result, Item, Call, Pull, Cancel, End, Error */
};

struct env_schema;

struct env_field {
	uint32_t f_num; /* at most 31 */
	enum env_kind f_kind;
	const struct env_schema *f_sub; /* K_MSG */
	int f_repeated;
};

struct env_schema {
	const struct env_field *s_fields;
	size_t s_n;
	enum env_role s_role;
};

#define F(num, kind) \
	{ \
		num, kind, NULL, 0 \
	}
#define M(num, sub) \
	{ \
		num, K_MSG, sub, 0 \
	}
#define MR(num, sub) \
	{ \
		num, K_MSG, sub, 1 \
	} /* repeated */
#define SCHEMA(name, role) \
	static const struct env_schema name##_s = { \
	    name##_f, sizeof(name##_f) / sizeof(name##_f[0]), role}

/* clang-format off */
static const struct env_field value_top_f[] = {
	F(1, K_VARINT), F(2, K_VARINT), F(3, K_VARINT),
	F(4, K_BYTES), F(5, K_VARINT), F(7, K_VARINTS),
};
SCHEMA(value_top, R_VALUE_TOP);
#define value_in_f value_top_f
SCHEMA(value_in, R_VALUE_IN);

static const struct env_field progress_f[] = {
	F(1, K_VARINT), F(2, K_STRING), F(3, K_FIXED32),
	F(4, K_STRING),
};
SCHEMA(progress, R_NONE);

static const struct env_field limits_f[] = {
	F(1, K_VARINT), F(2, K_VARINT), F(3, K_VARINT),
	F(4, K_VARINT), F(5, K_VARINT), F(6, K_VARINT),
	F(7, K_VARINT), F(8, K_VARINT), F(9, K_VARINT),
	F(10, K_VARINT), F(11, K_VARINT),
};
SCHEMA(limits, R_NONE);

static const struct env_field attr_entry_f[] = {
	F(1, K_STRING), F(2, K_VARINT),
};
SCHEMA(attr_entry, R_NONE);

static const struct env_field ready_f[] = {
	F(1, K_STRING), F(2, K_STRING), F(3, K_STRING),
	F(4, K_STRING), M(5, &limits_s), MR(6, &attr_entry_s),
	F(7, K_VARINT),
};
SCHEMA(ready, R_NONE);

static const struct env_field result_f[] = {
	F(1, K_VARINT), M(2, &value_in_s), F(3, K_VARINT),
};
SCHEMA(result, R_CARRIER);

static const struct env_field error_f[] = {
	F(1, K_VARINT), F(2, K_STRING), F(3, K_STRING),
	F(4, K_STRING), F(5, K_STRING), F(6, K_STRING),
	F(7, K_BYTES), F(8, K_VARINT),
};
SCHEMA(error, R_CARRIER);

static const struct env_field output_f[] = {
	F(1, K_VARINT), F(2, K_BYTES), F(3, K_VARINT),
};
SCHEMA(output, R_NONE);

static const struct env_field item_f[] = {
	F(1, K_VARINT), F(2, K_VARINT), M(3, &value_in_s),
};
SCHEMA(item, R_CARRIER);

static const struct env_field end_f[] = {
	F(1, K_VARINT), F(2, K_VARINT),
};
SCHEMA(end, R_CARRIER);

static const struct env_field server_f[] = {
	M(1, &progress_s), M(2, &ready_s), M(3, &result_s),
	M(4, &error_s), M(5, &output_s), M(6, &item_s),
	M(7, &end_s), M(8, &value_top_s),
};
SCHEMA(server, R_NONE);

static const struct env_field call_f[] = {
	F(1, K_VARINT), F(2, K_STRING), F(3, K_VARINT),
	M(4, &value_in_s), F(5, K_VARINT),
};
SCHEMA(call, R_CARRIER);

static const struct env_field pull_f[] = {
	F(1, K_VARINT), F(2, K_VARINT), F(3, K_VARINT),
};
SCHEMA(pull, R_CARRIER);

static const struct env_field cancel_f[] = {
	F(1, K_VARINT),
};
SCHEMA(cancel, R_CARRIER);

static const struct env_field close_f[] = {
	F(0, K_VARINT), /* no fields: a placeholder never matched */
};
SCHEMA(close, R_NONE);

/* Open is only recognised here: the front unpacks it whole. */
#define open_any_f close_f
SCHEMA(open_any, R_NONE);

static const struct env_field client_f[] = {
	M(1, &open_any_s), M(2, &call_s), M(3, &pull_s),
	M(4, &cancel_s), M(5, &close_s), M(6, &value_top_s),
};
SCHEMA(client, R_NONE);
/* clang-format on */

/*
 * Read one varint; -1 if it runs past end, over 10 bytes, or over 64
 * bits. Parsers differ on those bits: protobuf-c's bool is true if any
 * is set, its integers drop them, upb refuses them.
 */
int
envelope_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	unsigned int shift;
	uint8_t b;

	*v = 0;
	for (shift = 0; shift < 70 && *p < end; shift += 7) {
		b = *(*p)++;
		if (shift == 63 && b > 1)
			return -1;
		*v |= (uint64_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0)
			return 0;
	}
	return -1;
}

/* Whether s[0..len) is UTF-8: no overlong forms, surrogates or > U+10FFFF. */
int
envelope_utf8(const uint8_t *s, size_t len)
{
	size_t i = 0, n, k;
	uint32_t c;

	while (i < len) {
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		if ((s[i] & 0xe0) == 0xc0) {
			n = 1;
			c = s[i] & 0x1f;
		} else if ((s[i] & 0xf0) == 0xe0) {
			n = 2;
			c = s[i] & 0x0f;
		} else if ((s[i] & 0xf8) == 0xf0) {
			n = 3;
			c = s[i] & 0x07;
		} else
			return 0;
		if (len - i <= n)
			return 0;
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			c = (c << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 1 && c < 0x80) || (n == 2 && c < 0x800) ||
		    (n == 3 && c < 0x10000) || c > 0x10ffff ||
		    (c >= 0xd800 && c <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

static const struct env_field *
env_lookup(const struct env_schema *s, uint32_t num)
{
	size_t i;

	for (i = 0; i < s->s_n; i++)
		if (s->s_fields[i].f_num == num)
			return &s->s_fields[i];
	return NULL;
}

/* Keep what the front checks of one scalar or bytes field. */
static void
env_take(struct envelope *ev, enum env_role role, const struct env_schema *s,
    uint32_t num, uint64_t v, const uint8_t *val, size_t vlen)
{
	if (role == R_VALUE_TOP || role == R_VALUE_IN) {
		ev->ev_has_value = 1;
		if (num == 1 && role == R_VALUE_TOP)
			ev->ev_call_id = v;
		else if (num == 2)
			ev->ev_seq = (uint32_t)v;
		else if (num == 3)
			ev->ev_more = v != 0;
		else if (num == 4) {
			ev->ev_data = val;
			ev->ev_data_len = vlen;
		} else if (num == 5)
			ev->ev_total = v;
		return;
	}
	if (role != R_CARRIER)
		return;
	if (num == 1)
		ev->ev_call_id = v;
	else if (s == &result_s && num == 3)
		ev->ev_generator = v != 0;
	else if (s == &pull_s && num == 2)
		ev->ev_n = (uint32_t)v;
	else if ((s == &pull_s && num == 3) || (s == &call_s && num == 5))
		ev->ev_timeout_ms = v;
}

static int env_walk(const uint8_t *, const uint8_t *, const struct env_schema *,
    struct envelope *, int);

/* Check one length-delimited field of a known kind. */
static int
env_delimited(const struct env_field *f, const uint8_t *val, size_t vlen,
    struct envelope *ev, int depth)
{
	const uint8_t *end = val + vlen;
	uint64_t v;

	if (f->f_kind == K_STRING && !envelope_utf8(val, vlen))
		return -1;
	if (f->f_kind == K_VARINTS) {
		/* Packed: nothing but whole varints. */
		while (val < end)
			if (envelope_varint(&val, end, &v) == -1)
				return -1;
		return 0;
	}
	if (f->f_kind == K_MSG)
		return env_walk(val, val + vlen, f->f_sub, ev, depth + 1);
	return 0;
}

/* The wire type a kind is written with. */
static unsigned int
env_wire(enum env_kind k)
{
	switch (k) {
	case K_VARINT:
		return 0;
	case K_FIXED64:
		return 1;
	case K_FIXED32:
		return 5;
	default:
		return 2;
	}
}

/* Walk one message of schema s; -1 if it is not valid. */
static int
env_walk(const uint8_t *p, const uint8_t *end, const struct env_schema *s,
    struct envelope *ev, int depth)
{
	const struct env_field *f;
	const uint8_t *val, *start;
	uint64_t key, v = 0;
	unsigned int wire;
	uint32_t num, seen = 0;
	size_t vlen = 0;

	if (depth > ENV_DEPTH_MAX)
		return -1;
	while (p < end) {
		start = p;
		/* A key of at most 5 bytes, as protobuf-c reads one. */
		if (envelope_varint(&p, end, &key) == -1 || p - start > 5 ||
		    key >> 3 == 0 || key >> 3 > 0x1fffffff)
			return -1;
		num = (uint32_t)(key >> 3);
		wire = (unsigned int)(key & 7);
		val = NULL;
		if (wire == 0) {
			if (envelope_varint(&p, end, &v) == -1)
				return -1;
		} else if (wire == 1 || wire == 5) {
			vlen = wire == 1 ? 8 : 4;
			if ((size_t)(end - p) < vlen)
				return -1;
			p += vlen;
		} else if (wire == 2) {
			start = p;
			/* A length of at most 5 bytes, as protobuf-c reads. */
			if (envelope_varint(&p, end, &v) == -1 ||
			    p - start > 5 || v > (uint64_t)(end - p))
				return -1;
			val = p;
			vlen = (size_t)v;
			p += vlen;
		} else
			return -1;
		if ((f = env_lookup(s, num)) == NULL)
			continue; /* unknown: skipped */
		if (env_wire(f->f_kind) != wire &&
		    !(f->f_kind == K_VARINTS && wire == 0))
			return -1;
		/*
		 * A singular message field, or a oneof member, given twice is
		 * merged by some parsers and replaced by others (protobuf-c
		 * does that for a oneof): refused, so that the front and the
		 * peer never see two different messages.
		 */
		if (f->f_kind == K_MSG && !f->f_repeated) {
			if (seen & (1u << num))
				return -1;
			seen |= 1u << num;
		}
		if (s == &server_s || s == &client_s) {
			if (ev->ev_case != 0)
				return -1;
			ev->ev_case = num;
		} else if (s == &call_s && num == 2) {
			ev->ev_name = val;
			ev->ev_name_len = vlen;
		}
		if (f->f_sub == &value_in_s || f->f_sub == &value_top_s)
			ev->ev_has_value = 1;
		if (wire == 2 && env_delimited(f, val, vlen, ev, depth) == -1)
			return -1;
		env_take(ev, s->s_role, s, num, v, val, vlen);
	}
	return p == end ? 0 : -1;
}

int
envelope_server(const uint8_t *msg, size_t len, struct envelope *ev)
{
	memset(ev, 0, sizeof(*ev));
	return env_walk(msg, msg + len, &server_s, ev, 0);
}

/* A ClientMessage; for an Open (ev_case), only that it is one. */
int
envelope_client(const uint8_t *msg, size_t len, struct envelope *ev)
{
	memset(ev, 0, sizeof(*ev));
	return env_walk(msg, msg + len, &client_s, ev, 0);
}
