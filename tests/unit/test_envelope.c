/*
 * The envelope reader (src/envelope.c): what it takes from well-formed
 * messages, and what it refuses. tests/fuzz/fuzz_envelope.c checks it
 * against protobuf-c on arbitrary bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <string.h>

#include <cmocka.h>

#include "envelope.h"
#include "remotemedia.pb-c.h"

/* Pack a ServerMessage or ClientMessage into buf; its length. */
static size_t
pack(const ProtobufCMessage *m, uint8_t *buf, size_t cap)
{
	size_t n = protobuf_c_message_get_packed_size(m);

	assert_true(n <= cap);
	return protobuf_c_message_pack(m, buf);
}

static void
t_item_chunk(void **state)
{
	Remotemedia__V1__ServerMessage sm =
	    REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Item it = REMOTEMEDIA__V1__ITEM__INIT;
	Remotemedia__V1__Value v = REMOTEMEDIA__V1__VALUE__INIT;
	uint8_t data[3000], buf[4096];
	struct envelope ev;
	size_t n;

	memset(data, 'x', sizeof(data));
	v.call_id = 99; /* a carrier's own call id is the one that counts */
	v.more = 1;
	v.total_size = 1 << 20;
	v.data.data = data;
	v.data.len = sizeof(data);
	it.call_id = 7;
	it.index = 3;
	it.value = &v;
	sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ITEM;
	sm.item = &it;
	n = pack(&sm.base, buf, sizeof(buf));
	assert_int_equal(envelope_server(buf, n, &ev), 0);
	assert_int_equal(ev.ev_case, ENV_SERVER_ITEM);
	assert_int_equal(ev.ev_call_id, 7);
	assert_true(ev.ev_has_value);
	assert_int_equal(ev.ev_seq, 0);
	assert_true(ev.ev_more);
	assert_int_equal(ev.ev_total, 1 << 20);
	assert_int_equal(ev.ev_data_len, sizeof(data));
}

static void
t_call(void **state)
{
	Remotemedia__V1__ClientMessage cm =
	    REMOTEMEDIA__V1__CLIENT_MESSAGE__INIT;
	Remotemedia__V1__Call c = REMOTEMEDIA__V1__CALL__INIT;
	uint8_t buf[256];
	struct envelope ev;
	size_t n;

	c.call_id = 12;
	c.name = "process";
	c.timeout_ms = 2500;
	cm.msg_case = REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CALL;
	cm.call = &c;
	n = pack(&cm.base, buf, sizeof(buf));
	assert_int_equal(envelope_client(buf, n, &ev), 0);
	assert_int_equal(ev.ev_case, ENV_CLIENT_CALL);
	assert_int_equal(ev.ev_call_id, 12);
	assert_int_equal(ev.ev_timeout_ms, 2500);
	assert_int_equal(ev.ev_name_len, 7);
	assert_memory_equal(ev.ev_name, "process", 7);
	assert_false(ev.ev_has_value);
}

static void
t_pull_and_open(void **state)
{
	static const uint8_t pull[] = {
	    0x1a, 0x06, 0x08, 0x05, 0x10, 0x10, 0x18, 0x64};
	static const uint8_t open[] = {0x0a, 0x02, 0x08, 0x01};
	struct envelope ev;

	assert_int_equal(envelope_client(pull, sizeof(pull), &ev), 0);
	assert_int_equal(ev.ev_case, ENV_CLIENT_PULL);
	assert_int_equal(ev.ev_call_id, 5);
	assert_int_equal(ev.ev_n, 16);
	assert_int_equal(ev.ev_timeout_ms, 100);
	assert_int_equal(envelope_client(open, sizeof(open), &ev), 0);
	assert_int_equal(ev.ev_case, ENV_CLIENT_OPEN);
}

/* What parsers disagree on, or no parser takes, is refused. */
static void
t_refused(void **state)
{
	static const struct {
		const char *what;
		uint8_t b[16];
		size_t n;
	} bad[] = {
	    {"two oneof members", {0x3a, 0x00, 0x1a, 0x00}, 4},
	    {"one member twice", {0x3a, 0x00, 0x3a, 0x00}, 4},
	    {"a Value twice in an Item", {0x32, 0x04, 0x1a, 0x00, 0x1a, 0x00},
	        6},
	    {"a wrong wire type", {0x38, 0x01}, 2},
	    {"a truncated length", {0x3a, 0x05, 0x08}, 3},
	    {"field number 0", {0x02, 0x00}, 2},
	    {"a 6-byte key", {0xfa, 0x80, 0x80, 0x80, 0x80, 0x00, 0x00}, 7},
	    {"a 6-byte length", {0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00}, 7},
	    {"a group", {0x3b, 0x3c}, 2},
	    {"bad UTF-8 in Error.type", {0x22, 0x03, 0x12, 0x01, 0xff}, 5},
	    {"an overlong UTF-8 form", {0x22, 0x04, 0x12, 0x02, 0xc0, 0x80}, 6},
	    {"a varint past the end", {0x3a, 0x02, 0x08, 0x80}, 4},
	    {"Value.buffer_sizes as fixed32", {0x42, 0x05, 0x3d, 0, 0, 0, 0},
	        7},
	    {"a packed varint cut short", {0x42, 0x03, 0x3a, 0x01, 0x80}, 5},
	    /* Ready{limits{max_streams (11) as fixed32}}: protobuf-c knows
	     * the field and refuses the wire type. */
	    {"Limits.max_streams as fixed32",
	        {0x12, 0x07, 0x2a, 0x05, 0x5d, 0, 0, 0, 0}, 9},
	    /* End.call_id with bits past 64; then Value.more, whose bool is
	     * true to protobuf-c and 0 in 64 bits. */
	    {"a varint over 64 bits",
	        {0x3a, 0x0b, 0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
	            0x80, 0x80, 0x02},
	        13},
	    {"a bool over 64 bits",
	        {0x42, 0x0b, 0x18, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80,
	            0x80, 0x80, 0x02},
	        13},
	};
	struct envelope ev;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (envelope_server(bad[i].b, bad[i].n, &ev) != -1)
			fail_msg("accepted %s", bad[i].what);
}

/* A varint holds 64 bits, in at most 10 bytes: the 10th carries one. */
static void
t_varint_limits(void **state)
{
	static const uint8_t max[] = {
	    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
	static const uint8_t over[] = {
	    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02};
	static const uint8_t eleven[] = {
	    0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x81, 0x00};
	const uint8_t *p;
	uint64_t v;

	p = max;
	assert_int_equal(envelope_varint(&p, max + sizeof(max), &v), 0);
	assert_true(v == UINT64_MAX);
	assert_ptr_equal(p, max + sizeof(max));
	p = over;
	assert_int_equal(envelope_varint(&p, over + sizeof(over), &v), -1);
	p = eleven;
	assert_int_equal(envelope_varint(&p, eleven + sizeof(eleven), &v), -1);
}

/* Unknown fields are skipped, as protobuf does; a broken one is not. */
static void
t_unknown_skipped(void **state)
{
	/* End{call_id 4, field 31: 7}, then the same with a key cut short. */
	static const uint8_t end[] = {0x3a, 0x05, 0x08, 0x04, 0xf8, 0x01, 0x07};
	static const uint8_t cut[] = {
	    0x3a, 0x06, 0x08, 0x04, 0xf8, 0x01, 0x07, 0x10};
	struct envelope ev;

	assert_int_equal(envelope_server(end, sizeof(end), &ev), 0);
	assert_int_equal(ev.ev_case, ENV_SERVER_END);
	assert_int_equal(ev.ev_call_id, 4);
	assert_int_equal(envelope_server(cut, sizeof(cut), &ev), -1);
}

/* Value.buffer_sizes, packed or one by one, is a Value's field. */
static void
t_buffer_sizes(void **state)
{
	static const uint8_t packed[] = {
	    0x42, 0x07, 0x10, 0x01, 0x3a, 0x03, 0x80, 0x80, 0x04};
	static const uint8_t single[] = {0x42, 0x04, 0x38, 0x05, 0x38, 0x06};
	struct envelope ev;

	assert_int_equal(envelope_server(packed, sizeof(packed), &ev), 0);
	assert_int_equal(ev.ev_case, ENV_SERVER_VALUE);
	assert_int_equal(ev.ev_seq, 1);
	assert_int_equal(envelope_server(single, sizeof(single), &ev), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(t_item_chunk),
	    cmocka_unit_test(t_call),
	    cmocka_unit_test(t_pull_and_open),
	    cmocka_unit_test(t_refused),
	    cmocka_unit_test(t_varint_limits),
	    cmocka_unit_test(t_unknown_skipped),
	    cmocka_unit_test(t_buffer_sizes),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
