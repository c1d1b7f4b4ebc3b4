/*
 * The calls the front tracks for a session, from the client's Call to its
 * terminal answer: chunk order both ways, the items a generator may still
 * send (the client's Pull credit), and the kill timer of a call's
 * deadline plus the grace. front_session.c decides what a broken rule
 * costs (a client error or a worker violation); this file says which rule
 * broke.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"
#include "front.h"
#include "util.h"

/* A call the front is tracking on behalf of the client. */
struct call {
	RB_ENTRY(call) cl_entry;
	uint64_t cl_id;
	struct session *cl_session;
	int cl_generator; /* Result said generator */
	int cl_answered; /* Result seen (plain calls end there) */
	uint32_t cl_in_seq; /* next expected client chunk seq */
	int cl_in_more; /* args chunks still expected */
	uint32_t cl_out_seq; /* next expected worker chunk seq */
	int cl_out_more; /* result/item chunks still expected */
	uint64_t cl_credit; /* items the worker may still send */
	uint64_t cl_timeout_ms;
	int cl_expired; /* its deadline passed: the worker was told */
	int cl_deadline_hit; /* fired while the front was not reading */
	int cl_overdue; /* its grace passed too */
	uint64_t cl_seq; /* when it last gave the worker work: Call, Pull */
	int cl_waiting; /* overdue, but maybe behind another call */
	char *cl_name;
	uint64_t cl_in_bytes; /* bytes of the arguments so far */
	uint64_t cl_in_total; /* what chunk 0 declared; 0: nothing */
	uint64_t cl_started_us; /* arrival, for the latency histogram */
	struct event *cl_deadline;
};

static int
call_cmp(struct call *a, struct call *b)
{
	return a->cl_id < b->cl_id ? -1 : a->cl_id > b->cl_id;
}

RB_GENERATE_STATIC(calltree, call, cl_entry, call_cmp)

struct call *
front_call_find(struct session *ses, uint64_t id)
{
	struct call key;

	key.cl_id = id;
	return RB_FIND(calltree, &ses->ses_calls, &key);
}

static void call_settled(struct session *);

/* Forget a call, finished or not. */
void
front_call_free(struct call *cl)
{
	struct session *ses = cl->cl_session;

	RB_REMOVE(calltree, &ses->ses_calls, cl);
	ses->ses_inflight--;
	if (cl->cl_waiting)
		ses->ses_waiting--;
	if (cl->cl_deadline != NULL)
		event_free(cl->cl_deadline);
	free(cl->cl_name);
	free(cl);
	call_settled(ses);
}

void
front_call_free_all(struct session *ses)
{
	struct call *cl;

	while ((cl = RB_MIN(calltree, &ses->ses_calls)) != NULL)
		front_call_free(cl);
}

/* A call whose terminal answer has gone by: count it, and forget it. */
void
front_call_done(struct call *cl)
{
	front_metrics_call_done(now_us() - cl->cl_started_us);
	front_call_free(cl);
}

static void call_grace(struct call *);

/* Whether the worker may be running cl now: a call not yet answered, or
 * a generator with items asked for. */
static int
call_busy(const struct call *cl)
{
	return !cl->cl_answered || (cl->cl_generator && cl->cl_credit > 0);
}

/* The order in which calls and Pulls reached the front. */
static uint64_t call_seq_next;

/*
 * Whether the worker may be running another call than cl, one that came
 * before it (whole) and is still within its deadline and grace, or has
 * none: then cl may not have started, waiting behind it (the worker runs
 * one synchronous call at a time), and the worker answers it once that
 * one is done. A call that came after cl cannot hold it up.
 */
static int
call_maybe_behind(const struct call *cl)
{
	struct call *o;

	RB_FOREACH (o, calltree, &cl->cl_session->ses_calls)
		if (o != cl && o->cl_seq < cl->cl_seq && !o->cl_in_more &&
		    call_busy(o) && !o->cl_overdue)
			return 1;
	return 0;
}

/* The first busy call that is overdue, with its arguments all in. */
static struct call *
call_first_overdue(struct call *cl)
{
	struct call *o;

	RB_FOREACH (o, calltree, &cl->cl_session->ses_calls)
		if (call_busy(o) && o->cl_overdue && !o->cl_in_more)
			return o;
	return cl;
}

/*
 * A busy call stopped being busy: the overdue calls that waited behind one
 * get their grace again, from now, for the worker to answer them.
 */
static void
call_settled(struct session *ses)
{
	struct call *cl;

	if (ses->ses_waiting == 0)
		return;
	RB_FOREACH (cl, calltree, &ses->ses_calls)
		if (cl->cl_waiting) {
			cl->cl_waiting = 0;
			ses->ses_waiting--;
			call_grace(cl);
		}
}

/*
 * The call's deadline: the worker is told, so that a call that has not
 * started yet (it waited behind another, or for its arguments) never
 * does; one that runs has the grace to stop. Past the grace, the worker
 * is killed, unless the call may still wait behind another (a call
 * without a deadline may run as long as it needs, and one queued behind
 * it fails alone once the worker gets to it).
 */
static void
call_deadline_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct call *cl = arg;
	char msg[256];
	int late;

	if (!cl->cl_expired) {
		cl->cl_expired = 1;
		front_worker_send_expired(cl->cl_session, cl->cl_id);
		call_grace(cl);
		return;
	}
	if (cl->cl_session->ses_paused) {
		/* Its answer may be sitting unread behind a slow client:
		 * judge the worker once the front reads it again. */
		cl->cl_deadline_hit = 1;
		return;
	}
	cl->cl_overdue = 1;
	if (!cl->cl_in_more) {
		if (call_maybe_behind(cl)) {
			cl->cl_waiting = 1;
			cl->cl_session->ses_waiting++;
			return;
		}
		/* Every busy call is overdue: name the first, which the
		 * others most likely waited behind. */
		cl = call_first_overdue(cl);
	}
	/* With arguments still to come, the worker never had the whole
	 * call: the client was slow, not the worker. */
	late = cl->cl_in_more;
	snprintf(msg, sizeof(msg),
	    "%s %" PRIu64 " ('%s') %s %" PRIu64
	    " ms %s its deadline of %" PRIu64 " ms; %s",
	    late ? "the arguments of call" : "call", cl->cl_id, cl->cl_name,
	    late ? "were still arriving" : "did not stop within",
	    front_conf.fc_grace_ms, late ? "after" : "of", cl->cl_timeout_ms,
	    late ? "the session ends" : "the worker was killed");
	front_session_end(cl->cl_session, GRPC_DEADLINE_EXCEEDED, msg);
}

static void
call_grace(struct call *cl)
{
	front_timer_add(cl->cl_deadline, front_conf.fc_grace_ms);
}

/* Arm (or, with 0, disarm) the deadline timer. */
static void
call_arm(struct call *cl, uint64_t timeout_ms)
{
	if (cl->cl_deadline != NULL)
		evtimer_del(cl->cl_deadline);
	cl->cl_deadline_hit = 0;
	cl->cl_expired = 0;
	cl->cl_overdue = 0;
	if (cl->cl_waiting) {
		cl->cl_waiting = 0;
		cl->cl_session->ses_waiting--;
	}
	if (timeout_ms == 0)
		return;
	if (cl->cl_deadline == NULL)
		cl->cl_deadline = evtimer_new(front_base, call_deadline_cb, cl);
	cl->cl_timeout_ms = timeout_ms;
	front_timer_add(cl->cl_deadline, timeout_ms);
}

/* The front reads the worker again: deadlines that passed meanwhile get
 * their grace from now on. */
void
front_call_regrace(struct session *ses)
{
	struct call *cl;

	RB_FOREACH (cl, calltree, &ses->ses_calls) {
		if (!cl->cl_deadline_hit)
			continue;
		cl->cl_deadline_hit = 0;
		call_grace(cl);
	}
}

/* Track the client's new call c (checked by the session) from now on. */
void
front_call_start(struct session *ses, const struct envelope *c)
{
	struct call *cl = xcalloc(1, sizeof(*cl));

	cl->cl_id = c->ev_call_id;
	cl->cl_session = ses;
	cl->cl_name = strndup((const char *)c->ev_name,
	    c->ev_name_len < 128 ? c->ev_name_len : 128);
	if (c->ev_more) {
		cl->cl_in_more = 1;
		cl->cl_in_seq = 1;
	}
	RB_INSERT(calltree, &ses->ses_calls, cl);
	ses->ses_inflight++;
	cl->cl_started_us = now_us();
	front_metrics_call_start();
	cl->cl_in_bytes = c->ev_data_len;
	cl->cl_in_total = c->ev_total;
	cl->cl_seq = ++call_seq_next;
	call_arm(cl, c->ev_timeout_ms);
}

/*
 * A continuation chunk of the client's arguments: -1 if the call expects
 * none or another seq, else the arguments' bytes so far.
 */
int64_t
front_call_client_chunk(struct call *cl, const struct envelope *v)
{
	if (!cl->cl_in_more || v->ev_seq != cl->cl_in_seq)
		return -1;
	cl->cl_in_seq++;
	cl->cl_in_more = v->ev_more;
	cl->cl_in_bytes += v->ev_data_len;
	return (int64_t)cl->cl_in_bytes;
}

/* What chunk 0 of the call's arguments declared as their total_size. */
uint64_t
front_call_args_total(const struct call *cl)
{
	return cl->cl_in_total;
}

/* The client's Pull: n more items, and a new deadline if it gives one. */
void
front_call_pull(struct call *cl, uint32_t n, uint64_t timeout_ms)
{
	if (cl->cl_credit + n > cl->cl_credit)
		cl->cl_credit += n;
	cl->cl_seq = ++call_seq_next;
	if (timeout_ms > 0)
		call_arm(cl, timeout_ms);
}

/*
 * The worker's answers, one function per message. Each returns what rule
 * the message breaks (NULL if none) and sets *done when it was the call's
 * terminal answer, for front_call_done.
 */
const char *
front_call_result(struct call *cl, const struct envelope *r, int *done)
{
	*done = 0;
	if (cl == NULL || cl->cl_answered)
		return "result for an unknown call";
	if (r->ev_seq != 0)
		return "result chunk out of order";
	cl->cl_answered = 1;
	call_arm(cl, 0);
	call_settled(cl->cl_session);
	if (r->ev_generator)
		cl->cl_generator = 1;
	else if (r->ev_more) {
		cl->cl_out_more = 1;
		cl->cl_out_seq = 1;
	} else
		*done = 1;
	return NULL;
}

/* A continuation chunk of a result or an item. */
const char *
front_call_value(struct call *cl, const struct envelope *v, int *done)
{
	*done = 0;
	if (cl == NULL || !cl->cl_out_more || v->ev_seq != cl->cl_out_seq)
		return "unexpected value chunk";
	cl->cl_out_seq++;
	cl->cl_out_more = v->ev_more;
	*done = !v->ev_more && !cl->cl_generator;
	return NULL;
}

/* An item needs credit from a Pull, and a generator to belong to. */
const char *
front_call_item(struct call *cl, const struct envelope *it)
{
	if (cl == NULL || !cl->cl_generator || cl->cl_out_more)
		return "item for an unknown generator";
	if (it->ev_seq != 0)
		return "item chunk out of order";
	if (cl->cl_credit == 0)
		return "item without credit";
	if (--cl->cl_credit == 0) {
		call_arm(cl, 0);
		call_settled(cl->cl_session);
	}
	if (it->ev_more) {
		cl->cl_out_more = 1;
		cl->cl_out_seq = 1;
	}
	return NULL;
}

/* A generator's End; always terminal. */
const char *
front_call_end(struct call *cl)
{
	if (cl == NULL || !cl->cl_generator || cl->cl_out_more)
		return "end of an unknown generator";
	return NULL;
}

/* A call's Error; always terminal. */
const char *
front_call_error(struct call *cl)
{
	if (cl == NULL)
		return "error for an unknown call";
	if (cl->cl_out_more)
		return "error inside a chunked value";
	return NULL;
}
