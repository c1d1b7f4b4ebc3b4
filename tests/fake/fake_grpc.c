/*
 * The fake of front_grpc.c, as front_session.c calls it: messages for the
 * client go to a hook, and a stream's first status sticks, as in the real
 * one. How much the client has not read yet is a knob.
 */
#include <stdint.h>

#include "front.h"

#include "fake.h"

int
front_grpc_send(struct stream *s, const uint8_t *msg, size_t len)
{
	if (fake.fk_on_relay != NULL)
		fake.fk_on_relay(s, msg, len);
	return 0;
}

void
front_grpc_finish(struct stream *s, int code, const char *msg)
{
	if (fake.fk_on_finish != NULL)
		fake.fk_on_finish(s, code, msg);
	if (s->str_finished)
		return;
	s->str_finished = 1;
	s->str_status = code;
}

size_t
front_grpc_pending_out(struct stream *s)
{
	return fake.fk_grpc_pending;
}
