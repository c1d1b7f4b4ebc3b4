/*
 * Differential fuzzing of the envelope reader (src/envelope.c) against
 * protobuf-c: whatever bytes the envelope accepts as a ServerMessage or a
 * ClientMessage, protobuf-c must accept too, and both must agree on every
 * field the front checks. (The envelope may refuse more: groups, and
 * strings that are not UTF-8.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "remotemedia.pb-c.h"

typedef Remotemedia__V1__ServerMessage ServerMessage;
typedef Remotemedia__V1__ClientMessage ClientMessage;
typedef Remotemedia__V1__Value Value;

/* The carrier's Value against the envelope's view of it. */
static void
check_value(const struct envelope *ev, const Value *v, int top)
{
	if (v == NULL) {
		if (ev->ev_has_value || ev->ev_seq != 0 || ev->ev_more ||
		    ev->ev_data_len != 0 || ev->ev_total != 0)
			abort();
		return;
	}
	if (!ev->ev_has_value || ev->ev_seq != v->seq ||
	    ev->ev_more != (v->more != 0) || ev->ev_data_len != v->data.len ||
	    ev->ev_total != v->total_size)
		abort();
	if (top && ev->ev_call_id != v->call_id)
		abort();
}

static void
check_server(const struct envelope *ev, const ServerMessage *m)
{
	if ((uint32_t)m->msg_case != ev->ev_case)
		abort();
	switch (m->msg_case) {
	case REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_RESULT:
		if (ev->ev_call_id != m->result->call_id ||
		    ev->ev_generator != (m->result->generator != 0))
			abort();
		check_value(ev, m->result->value, 0);
		break;
	case REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ITEM:
		if (ev->ev_call_id != m->item->call_id)
			abort();
		check_value(ev, m->item->value, 0);
		break;
	case REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_VALUE:
		check_value(ev, m->value, 1);
		break;
	case REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_END:
		if (ev->ev_call_id != m->end->call_id)
			abort();
		break;
	case REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR:
		if (ev->ev_call_id != m->error->call_id)
			abort();
		break;
	default:
		break;
	}
}

static void
check_client(const struct envelope *ev, const ClientMessage *m)
{
	if ((uint32_t)m->msg_case != ev->ev_case)
		abort();
	switch (m->msg_case) {
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CALL:
		if (ev->ev_call_id != m->call->call_id ||
		    ev->ev_timeout_ms != m->call->timeout_ms ||
		    ev->ev_name_len < strlen(m->call->name) ||
		    (m->call->name[0] != '\0' &&
		        memcmp(ev->ev_name, m->call->name,
		            strlen(m->call->name)) != 0))
			abort();
		check_value(ev, m->call->args, 0);
		break;
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_PULL:
		if (ev->ev_call_id != m->pull->call_id ||
		    ev->ev_n != m->pull->n ||
		    ev->ev_timeout_ms != m->pull->timeout_ms)
			abort();
		break;
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CANCEL:
		if (ev->ev_call_id != m->cancel->call_id)
			abort();
		break;
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_VALUE:
		check_value(ev, m->value, 1);
		break;
	default:
		break;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope ev;
	ServerMessage *sm;
	ClientMessage *cm;

	if (envelope_server(data, size, &ev) == 0) {
		if ((sm = remotemedia__v1__server_message__unpack(
		         NULL, size, data)) == NULL)
			abort();
		check_server(&ev, sm);
		remotemedia__v1__server_message__free_unpacked(sm, NULL);
	}
	/* The front unpacks an Open whole itself. */
	if (envelope_client(data, size, &ev) == 0 &&
	    ev.ev_case != ENV_CLIENT_OPEN) {
		if ((cm = remotemedia__v1__client_message__unpack(
		         NULL, size, data)) == NULL)
			abort();
		check_client(&ev, cm);
		remotemedia__v1__client_message__free_unpacked(cm, NULL);
	}
	return 0;
}
