/*
 * The embedded CPython and its builtin module _rmworker.
 *
 * The protocol stays here, in C: _rmworker.pump() reads fd 3, decodes the
 * front's frames, reassembles chunked values and hands the runtime a list
 * of plain event tuples; the send_* functions build ServerMessages, chunk
 * values and write them with the GIL released, so that a slow client
 * blocks only the write, not the session's other threads.
 *
 * The runtime (python/remotemedia/_worker_runtime.py, in the binary as
 * worker_runtime_source, both its text and its code compiled at build
 * time) holds the object semantics.
 *
 * Events, as the runtime receives them:
 *   ("open", format, object, python_version, cloudpickle_version, source,
 *    class_name, init_args_json)
 *   ("call", call_id, name, kind, args, timeout_ms)
 *   ("pull", call_id, n, timeout_ms)
 *   ("cancel", call_id)
 *   ("expired", call_id)    the front's word that its deadline passed
 *   ("close",)
 *   ("eof",)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <marshal.h>

#include <sys/queue.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "envelope.h"
#include "frame.h"
#include "log.h"
#include "remotemedia.pb-c.h"
#include "util.h"
#include "worker.h"
#include "worker.pb-c.h"
#include "worker_oob.h"
#include "worker_runtime.h"

#define WORKER_PY_MODULE "_rmworker"
#define WORKER_PY_RUNTIME "_remotemedia_runtime"
#define WORKER_PY_OOB "_remotemedia_oob"
#define WORKER_PY_EXECUTABLE L"/usr/bin/python3"

/* One pump reads at most this much, then lets the loop run. */
#define WORKER_PY_READ (256 * 1024)
#define WORKER_PY_ROUNDS 16

/* Bounds on the text of an Error or a Fatal, to keep it one frame. */
#define WORKER_PY_MAX_TEXT (64 * 1024)
#define WORKER_PY_MAX_TRACEBACK (256 * 1024)
#define WORKER_PY_MAX_PICKLED (512 * 1024)

/* A value arriving in chunks: Open.object (call id 0) or a call's args. */
struct worker_py_asm {
	LIST_ENTRY(worker_py_asm) wa_entry;
	uint64_t wa_id;
	int wa_open; /* Open.object, else Call.args */
	uint32_t wa_seq; /* next chunk expected */
	int wa_discard; /* refused: drop the chunks still to come */
	PyObject *wa_obj; /* the value: bytes, or bytearray if wa_buffered */
	size_t wa_len; /* bytes of it filled */
	size_t wa_cap; /* its size */
	PyObject *wa_event; /* the event as a list, its value slot None */
	Py_ssize_t wa_slot;
	int wa_buffered; /* chunk 0 had buffer_sizes: a bytearray, writable */
};
LIST_HEAD(worker_py_asms, worker_py_asm);

enum worker_py_carrier {
	WORKER_PY_RESULT,
	WORKER_PY_ITEM,
};

static const struct worker_conf *wp_conf;
static struct deframer wp_df;
static struct worker_py_asms wp_asms = LIST_HEAD_INITIALIZER(wp_asms);
static int wp_opened; /* the Open has arrived */
static int wp_eof; /* fd 3 is at EOF: only ("eof",) from now on */

/* The largest value accepted, either way. */
static uint64_t
worker_py_limit(void)
{
	return wp_conf->wc_max_value ? wp_conf->wc_max_value : UINT64_MAX;
}

/* Copy s, cut to at most max bytes on a UTF-8 character boundary. */
static char *
worker_py_clip(const char *s, size_t max)
{
	static const char more[] = "\n[truncated]";
	size_t n = strlen(s);
	char *p;

	if (n <= max)
		return xstrdup(s);
	n = max - sizeof(more);
	while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
		n--;
	p = xmalloc(n + sizeof(more));
	memcpy(p, s, n);
	memcpy(p + n, more, sizeof(more));
	return p;
}

/*
 * Send a ServerMessage after what user code has printed so far, with the
 * GIL released while it is written.
 */
static void
worker_py_send_nogil(Remotemedia__V1__ServerMessage *sm)
{
	Py_BEGIN_ALLOW_THREADS worker_output_flush();
	worker_send(FRAME_MSG, &sm->base);
	Py_END_ALLOW_THREADS
}

/* Send an Error, whether C or the runtime decided on it. */
static void
worker_py_send_err(Remotemedia__V1__Error *err)
{
	Remotemedia__V1__ServerMessage sm =
	    REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;

	sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ERROR;
	sm.error = err;
	worker_py_send_nogil(&sm);
}

/* Send an Error that C decides on its own (limits, early cancel). */
static void
worker_py_send_error_c(uint64_t id, const char *type, const char *module,
    const char *qualname, const char *message, int timeout)
{
	Remotemedia__V1__Error err = REMOTEMEDIA__V1__ERROR__INIT;

	err.call_id = id;
	err.timeout = timeout;
	err.type = (char *)type;
	err.module = (char *)module;
	err.qualname = (char *)qualname;
	err.message = (char *)message;
	worker_py_send_err(&err);
}

static struct worker_py_asm *
worker_py_asm_find(uint64_t id)
{
	struct worker_py_asm *wa;

	LIST_FOREACH (wa, &wp_asms, wa_entry)
		if (wa->wa_id == id)
			return wa;
	return NULL;
}

/* Let go of what a value has gathered (refused, cancelled or done). */
static void
worker_py_asm_drop(struct worker_py_asm *wa)
{
	Py_CLEAR(wa->wa_obj);
	wa->wa_len = wa->wa_cap = 0;
}

static void
worker_py_asm_free(struct worker_py_asm *wa)
{
	LIST_REMOVE(wa, wa_entry);
	Py_XDECREF(wa->wa_event);
	Py_XDECREF(wa->wa_obj);
	free(wa);
}

/*
 * Make the value's object cap bytes long, keeping what it holds. The
 * chunks are gathered in the bytes or bytearray that user code will get,
 * not in a buffer copied into one at the end: a 64 MiB argument is then
 * written once, not twice, and its pages are faulted in once.
 */
static int
worker_py_asm_resize(struct worker_py_asm *wa, size_t cap)
{
	if (cap > PY_SSIZE_T_MAX)
		return -1;
	if (wa->wa_obj == NULL) {
		wa->wa_obj = wa->wa_buffered
		    ? PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)cap)
		    : PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap);
		if (wa->wa_obj == NULL)
			return -1;
	} else if (wa->wa_buffered) {
		if (PyByteArray_Resize(wa->wa_obj, (Py_ssize_t)cap) == -1)
			return -1;
	} else if (_PyBytes_Resize(&wa->wa_obj, (Py_ssize_t)cap) == -1)
		return -1; /* it has freed the object and cleared wa_obj */
	wa->wa_cap = cap;
	return 0;
}

/* Where the value's bytes are. */
static char *
worker_py_asm_data(struct worker_py_asm *wa)
{
	return wa->wa_buffered ? PyByteArray_AS_STRING(wa->wa_obj)
	                       : PyBytes_AS_STRING(wa->wa_obj);
}

/* Why a value is refused: over the limit, or (nomem) not allocatable. */
static void
worker_py_asm_why(const struct worker_py_asm *wa, uint64_t size, int nomem,
    char *msg, size_t len)
{
	char what[64];

	if (wa->wa_open)
		snprintf(what, sizeof(what), "the object");
	else
		snprintf(what, sizeof(what), "the arguments of call %llu",
		    (unsigned long long)wa->wa_id);
	if (nomem)
		snprintf(msg, len,
		    "the server cannot allocate %llu bytes for %s: it is out "
		    "of memory, or the size was announced wrong",
		    (unsigned long long)size, what);
	else
		snprintf(msg, len,
		    "%s %s larger than the server's limit of %llu bytes per "
		    "value (max_value_bytes, at least %llu bytes arrived): %s",
		    what, wa->wa_open ? "is" : "are",
		    (unsigned long long)worker_py_limit(),
		    (unsigned long long)size,
		    wa->wa_open ? "keep large data out of the object, and load "
		                  "or pass it in calls"
		                : "split the data over several calls");
}

/*
 * Refuse a value over the limit, or one whose size cannot be allocated
 * (nomem): for a call, answer its Error now and drop its remaining
 * chunks; for the Open, the session cannot start.
 */
static void
worker_py_asm_refuse(struct worker_py_asm *wa, uint64_t size, int nomem)
{
	const char *type = nomem ? "MemoryError" : "ValueError";
	char msg[512];

	wa->wa_discard = 1;
	worker_py_asm_drop(wa);
	worker_py_asm_why(wa, size, nomem, msg, sizeof(msg));
	if (wa->wa_open) {
		worker_send_fatal(WORKER_RESOURCE_EXHAUSTED, msg);
		worker_exit(0);
	}
	log_info("%s", msg);
	worker_py_send_error_c(wa->wa_id, type, "builtins", type, msg, 0);
}

/*
 * Append one chunk's data; hint is the announced total size, if any. A
 * size that cannot be allocated refuses the value.
 */
static void
worker_py_asm_append(
    struct worker_py_asm *wa, const uint8_t *p, size_t n, uint64_t hint)
{
	size_t need, cap;

	if (wa->wa_discard)
		return;
	if ((uint64_t)wa->wa_len + n > worker_py_limit()) {
		worker_py_asm_refuse(wa, (uint64_t)wa->wa_len + n, 0);
		return;
	}
	need = wa->wa_len + n;
	if (need > wa->wa_cap || wa->wa_obj == NULL) {
		if (hint > need && hint <= worker_py_limit() &&
		    hint <= SIZE_MAX / 2)
			cap = (size_t)hint;
		else
			cap = need > wa->wa_cap * 2 ? need : wa->wa_cap * 2;
		if (worker_py_asm_resize(wa, cap) == -1) {
			PyErr_Clear();
			worker_py_asm_refuse(wa, cap, 1);
			return;
		}
	}
	if (n > 0)
		memcpy(worker_py_asm_data(wa) + wa->wa_len, p, n);
	wa->wa_len += n;
}

/* The value is whole: put it into its event and queue the event. */
static int
worker_py_asm_done(struct worker_py_asm *wa, PyObject *events)
{
	PyObject *bytes, *tuple;
	int rv = -1;

	if (wa->wa_discard) {
		worker_py_asm_free(wa);
		return 0;
	}
	/* Out-of-band buffers become the arrays' memory: a bytearray, so
	 * that it is writable. Cut to what arrived, in case fewer bytes
	 * came than announced. */
	if ((wa->wa_obj == NULL || wa->wa_len != wa->wa_cap) &&
	    worker_py_asm_resize(wa, wa->wa_len) == -1) {
		worker_py_asm_free(wa);
		return -1;
	}
	bytes = wa->wa_obj;
	wa->wa_obj = NULL;
	if (bytes != NULL &&
	    PyList_SetItem(wa->wa_event, wa->wa_slot, bytes) == 0 &&
	    (tuple = PyList_AsTuple(wa->wa_event)) != NULL) {
		rv = PyList_Append(events, tuple);
		Py_DECREF(tuple);
	}
	worker_py_asm_free(wa);
	return rv;
}

/* Chunk 0's buffer_sizes, as a tuple for the event's last slot. */
static int
worker_py_buffer_sizes(PyObject *ev, const Remotemedia__V1__Value *v)
{
	PyObject *sizes, *n;
	size_t i, count = v != NULL ? v->n_buffer_sizes : 0;

	if ((sizes = PyTuple_New((Py_ssize_t)count)) == NULL)
		return -1;
	for (i = 0; i < count; i++) {
		if ((n = PyLong_FromUnsignedLongLong(v->buffer_sizes[i])) ==
		    NULL) {
			Py_DECREF(sizes);
			return -1;
		}
		PyTuple_SET_ITEM(sizes, (Py_ssize_t)i, n);
	}
	return PyList_SetItem(ev, PyList_GET_SIZE(ev) - 1, sizes);
}

/*
 * Begin the value whose chunk 0 came in its carrier (v may be NULL: an
 * empty value). The event list ev is kept until the last chunk; its last
 * slot gets chunk 0's buffer_sizes.
 */
static int
worker_py_value_start(uint64_t id, int is_open, PyObject *ev, Py_ssize_t slot,
    const Remotemedia__V1__Value *v, PyObject *events)
{
	struct worker_py_asm *wa;

	if (ev == NULL)
		return -1;
	if (worker_py_buffer_sizes(ev, v) == -1) {
		Py_DECREF(ev);
		return -1;
	}
	if ((v != NULL && v->seq != 0) || worker_py_asm_find(id) != NULL) {
		log_warnx("%s: bad chunk 0 for call %llu", __func__,
		    (unsigned long long)id);
		Py_DECREF(ev);
		return -1;
	}
	wa = xcalloc(1, sizeof(*wa));
	wa->wa_id = id;
	wa->wa_open = is_open;
	wa->wa_seq = 1;
	wa->wa_event = ev;
	wa->wa_slot = slot;
	wa->wa_buffered = v != NULL && v->n_buffer_sizes > 0;
	LIST_INSERT_HEAD(&wp_asms, wa, wa_entry);
	if (v == NULL)
		return worker_py_asm_done(wa, events);
	if (v->total_size > worker_py_limit())
		worker_py_asm_refuse(wa, v->total_size, 0);
	else
		worker_py_asm_append(
		    wa, v->data.data, v->data.len, v->total_size);
	return v->more ? 0 : worker_py_asm_done(wa, events);
}

/* A continuation chunk: it must be the next of a value in progress. */
static int
worker_py_value_more(uint64_t id, uint32_t seq, int more, const uint8_t *data,
    size_t len, PyObject *events)
{
	struct worker_py_asm *wa;

	wa = worker_py_asm_find(id);
	if (wa == NULL || seq != wa->wa_seq) {
		log_warnx("%s: unexpected chunk %u for call %llu", __func__,
		    seq, (unsigned long long)id);
		return -1;
	}
	wa->wa_seq++;
	worker_py_asm_append(wa, data, len, 0);
	return more ? 0 : worker_py_asm_done(wa, events);
}

/* Queue an event built by Py_BuildValue; -1 if it could not be built. */
static int
worker_py_queue(PyObject *events, PyObject *ev)
{
	int rv;

	if (ev == NULL)
		return -1;
	rv = PyList_Append(events, ev);
	Py_DECREF(ev);
	return rv;
}

static int
worker_py_open(const Remotemedia__V1__Open *o, PyObject *events)
{
	Remotemedia__Worker__V1__WorkerControl ctl =
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__INIT;
	Remotemedia__Worker__V1__Taken taken =
	    REMOTEMEDIA__WORKER__V1__TAKEN__INIT;
	PyObject *ev;

	if (wp_opened) {
		log_warnx("%s: a second Open", __func__);
		return -1;
	}
	wp_opened = 1;
	/* Before any code of the session runs: until the front reads this, a
	 * spare that fails is not the session's failure (front_session.c). */
	ctl.msg_case = REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_TAKEN;
	ctl.taken = &taken;
	if (worker_send(FRAME_CTL, &ctl.base) == -1)
		return -1;
	/* y# makes None of a NULL pointer: the event always carries bytes. */
	ev = Py_BuildValue("[siOssssy#O]", "open", (int)o->format, Py_None,
	    o->python_version, o->cloudpickle_version, o->source, o->class_name,
	    o->init_args_json.data ? (const char *)o->init_args_json.data : "",
	    (Py_ssize_t)o->init_args_json.len, Py_None);
	return worker_py_value_start(0, 1, ev, 2, o->object, events);
}

static int
worker_py_call(const Remotemedia__V1__Call *c, PyObject *events)
{
	PyObject *ev;

	if (c->call_id == 0) {
		log_warnx("%s: call id 0", __func__);
		return -1;
	}
	ev = Py_BuildValue("[sKsiOKO]", "call", (unsigned long long)c->call_id,
	    c->name, (int)c->kind, Py_None, (unsigned long long)c->timeout_ms,
	    Py_None);
	return worker_py_value_start(c->call_id, 0, ev, 4, c->args, events);
}

/*
 * A Cancel from the client, or the front's word that a call's deadline
 * passed ("expired"): a call whose arguments are still arriving is
 * answered here and what comes of them dropped; otherwise the runtime gets
 * the event (and drops the call if it has not started it).
 */
static int
worker_py_end_call(uint64_t id, const char *event, PyObject *events)
{
	struct worker_py_asm *wa;
	int expired = strcmp(event, "expired") == 0;

	wa = worker_py_asm_find(id);
	if (wa == NULL || wa->wa_open)
		return worker_py_queue(events,
		    Py_BuildValue("(sK)", event, (unsigned long long)id));
	if (wa->wa_discard)
		return 0;
	wa->wa_discard = 1;
	worker_py_asm_drop(wa);
	if (expired)
		worker_py_send_error_c(id, "TimeoutError", "builtins",
		    "TimeoutError",
		    "the call's deadline passed while its arguments were "
		    "arriving",
		    1);
	else
		worker_py_send_error_c(id, "asyncio.CancelledError",
		    "asyncio.exceptions", "CancelledError",
		    "cancelled by the client", 0);
	return 0;
}

/* A WorkerControl after Init: only Expired comes then. */
static int
worker_py_control(const uint8_t *p, size_t len, PyObject *events)
{
	Remotemedia__Worker__V1__WorkerControl *ctl;
	int rv = -1;

	ctl = remotemedia__worker__v1__worker_control__unpack(NULL, len, p);
	if (ctl == NULL)
		log_warnx("%s: cannot decode a %zu-byte WorkerControl",
		    __func__, len);
	else if (ctl->msg_case ==
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_EXPIRED)
		rv = worker_py_end_call(
		    ctl->expired->call_id, "expired", events);
	else
		log_warnx("%s: unexpected control %d after Init", __func__,
		    (int)ctl->msg_case);
	if (ctl != NULL)
		remotemedia__worker__v1__worker_control__free_unpacked(
		    ctl, NULL);
	return rv;
}

/* The one switch over what the front sends; -1 ends the worker. */
static int
worker_py_dispatch_front(
    const Remotemedia__V1__ClientMessage *cm, PyObject *events)
{
	if (!wp_opened &&
	    cm->msg_case != REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_OPEN) {
		log_warnx(
		    "%s: message %d before Open", __func__, (int)cm->msg_case);
		return -1;
	}
	switch (cm->msg_case) {
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_OPEN:
		return worker_py_open(cm->open, events);
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CALL:
		return worker_py_call(cm->call, events);
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_VALUE:
		return worker_py_value_more(cm->value->call_id, cm->value->seq,
		    cm->value->more, cm->value->data.data, cm->value->data.len,
		    events);
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_PULL:
		return worker_py_queue(events,
		    Py_BuildValue("(sKIK)", "pull",
		        (unsigned long long)cm->pull->call_id, cm->pull->n,
		        (unsigned long long)cm->pull->timeout_ms));
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CANCEL:
		return worker_py_end_call(
		    cm->cancel->call_id, "cancel", events);
	case REMOTEMEDIA__V1__CLIENT_MESSAGE__MSG_CLOSE:
		return worker_py_queue(events, Py_BuildValue("(s)", "close"));
	default:
		log_warnx(
		    "%s: unknown message %d", __func__, (int)cm->msg_case);
		return -1;
	}
}

/* Decode one frame from the front (deframer callback). */
static int
worker_py_frame(void *arg, uint8_t type, const uint8_t *p, size_t len)
{
	Remotemedia__V1__ClientMessage *cm;
	struct envelope ev;
	int rv;

	if (type == FRAME_CTL)
		return worker_py_control(p, len, arg);
	if (type != FRAME_MSG) {
		log_warnx(
		    "%s: unexpected frame type %u after Init", __func__, type);
		return -1;
	}
	/*
	 * A continuation chunk (field 6 first: what the client writes) is
	 * read in place, as the front reads it: protobuf-c would copy its
	 * data out of the frame only for it to be copied again.
	 */
	if (wp_opened && len > 0 && p[0] == ((ENV_CLIENT_VALUE << 3) | 2) &&
	    envelope_client(p, len, &ev) == 0 && ev.ev_case == ENV_CLIENT_VALUE)
		return worker_py_value_more(ev.ev_call_id, ev.ev_seq,
		    ev.ev_more, ev.ev_data, ev.ev_data_len, arg);
	if ((cm = remotemedia__v1__client_message__unpack(NULL, len, p)) ==
	    NULL) {
		log_warnx("%s: cannot decode a %zu-byte ClientMessage",
		    __func__, len);
		return -1;
	}
	rv = worker_py_dispatch_front(cm, arg);
	remotemedia__v1__client_message__free_unpacked(cm, NULL);
	return rv;
}

/* Malformed input from the front: the session is broken beyond repair. */
static void
worker_py_malformed(int rv)
{
	if (PyErr_Occurred())
		PyErr_Print();
	log_warnx("malformed frame from the front (%s): exiting",
	    deframe_strerror(rv));
	worker_exit(1);
}

/* _rmworker.pump(): read what fd 3 has, without blocking; list events. */
static PyObject *
worker_py_pump(PyObject *self, PyObject *unused)
{
	static uint8_t buf[WORKER_PY_READ];
	PyObject *events;
	ssize_t n;
	int i, rv;

	if ((events = PyList_New(0)) == NULL)
		return NULL;
	for (i = 0; i < WORKER_PY_ROUNDS && !wp_eof; i++) {
		n = read(worker_fd, buf, sizeof(buf));
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			if (n == -1)
				log_warn("%s: read", __func__);
			else if (deframer_partial(&wp_df))
				log_warnx("the front closed mid-frame");
			wp_eof = 1;
			break;
		}
		rv = deframer_feed(
		    &wp_df, buf, (size_t)n, worker_py_frame, events);
		if (rv != DEFRAME_OK)
			worker_py_malformed(rv);
		if ((size_t)n < sizeof(buf))
			break; /* drained: the loop polls fd 3 again */
	}
	if ((wp_eof || worker_dead()) &&
	    worker_py_queue(events, Py_BuildValue("(s)", "eof")) == -1) {
		Py_DECREF(events);
		return NULL;
	}
	return events;
}

/* _rmworker.fileno(): the descriptor the loop watches. */
static PyObject *
worker_py_fileno(PyObject *self, PyObject *unused)
{
	return PyLong_FromLong(worker_fd);
}

/*
 * _rmworker.compile(source, filename): what compile(source, filename,
 * "exec") returns for a str, without its first step: a check of whether
 * source is an AST, which the first time sets up the AST's Python types
 * (~2 ms and 100 KiB of the worker's memory) that an Open never uses.
 */
static PyObject *
worker_py_compile(PyObject *self, PyObject *args)
{
	PyCompilerFlags cf = _PyCompilerFlags_INIT;
	const char *source, *filename;

	if (!PyArg_ParseTuple(args, "ss:compile", &source, &filename))
		return NULL;
	cf.cf_flags = PyCF_IGNORE_COOKIE; /* text, not bytes: no coding line */
	return Py_CompileStringExFlags(
	    source, filename, Py_file_input, &cf, -1);
}

/* The list of sys_path entries from Init. */
static PyObject *
worker_py_sys_path_list(void)
{
	PyObject *list, *s;
	size_t i;

	if ((list = PyList_New(0)) == NULL)
		return NULL;
	for (i = 0; i < wp_conf->wc_n_sys_path; i++) {
		s = PyUnicode_DecodeFSDefault(wp_conf->wc_sys_path[i]);
		if (s == NULL || PyList_Append(list, s) == -1) {
			Py_XDECREF(s);
			Py_DECREF(list);
			return NULL;
		}
		Py_DECREF(s);
	}
	return list;
}

/* _rmworker.init_info(): what Init said, as a dict. */
static PyObject *
worker_py_init_info(PyObject *self, PyObject *unused)
{
	PyObject *sys_path;

	if ((sys_path = worker_py_sys_path_list()) == NULL)
		return NULL;
	return Py_BuildValue("{sssssKsKsIsIsNsO}", "session_id",
	    wp_conf->wc_session_id, "session_dir", wp_conf->wc_session_dir,
	    "max_value_bytes", (unsigned long long)wp_conf->wc_max_value,
	    "grace_ms", (unsigned long long)wp_conf->wc_grace_ms,
	    "prefetch_items", wp_conf->wc_prefetch, "busy_poll_us",
	    wp_conf->wc_busy_poll_us, "sys_path", sys_path, "isolate_site",
	    wp_conf->wc_isolate_site ? Py_True : Py_False);
}

/* _rmworker.log(level, message): a line in the worker's own log. */
static PyObject *
worker_py_log(PyObject *self, PyObject *args)
{
	const char *msg;
	int level;

	if (!PyArg_ParseTuple(args, "is", &level, &msg))
		return NULL;
	if (level <= LOG_LEVEL_ERROR || level == LOG_LEVEL_WARN)
		log_warnx("%s", msg);
	else if (level == LOG_LEVEL_INFO)
		log_info("%s", msg);
	else
		log_debug("%s", msg);
	Py_RETURN_NONE;
}

/*
 * A value to send: its pickle (or JSON document), then its out-of-band
 * buffers, each a segment of the data the chunks carry in order.
 */
struct worker_py_out {
	Py_buffer *wo_seg;
	size_t wo_nseg;
	uint64_t *wo_sizes; /* the buffers' sizes: segments 1 and on */
	uint64_t wo_total;
};

/*
 * Send the chunks after the first of a value, as ServerMessage.value: each
 * at most FRAME_CHUNK_MAX bytes of one segment, from (seg, off) on, written
 * straight from the segment (worker_send_chunk).
 */
static int
worker_py_value_rest(
    uint64_t id, const struct worker_py_out *wo, size_t seg, size_t off)
{
	const uint8_t *p;
	uint32_t seq = 1;
	size_t n, left, k;
	int more;

	for (; seg < wo->wo_nseg; seg++, off = 0) {
		while ((left = (size_t)wo->wo_seg[seg].len - off) > 0) {
			n = left > FRAME_CHUNK_MAX ? FRAME_CHUNK_MAX : left;
			p = (const uint8_t *)wo->wo_seg[seg].buf + off;
			off += n;
			/* More: this segment goes on, or a later one has bytes. */
			more = off < (size_t)wo->wo_seg[seg].len;
			for (k = seg + 1; !more && k < wo->wo_nseg; k++)
				more = wo->wo_seg[k].len > 0;
			if (worker_send_chunk(id, seq++, more, p, n) == -1)
				return -1;
		}
	}
	return 0;
}

/* Chunk 0 of a value: the first bytes of its first segment. */
static void
worker_py_value_first(
    Remotemedia__V1__Value *v, uint64_t id, const struct worker_py_out *wo)
{
	size_t len = wo->wo_nseg > 0 ? (size_t)wo->wo_seg[0].len : 0;
	size_t n = len > FRAME_CHUNK_MAX ? FRAME_CHUNK_MAX : len;

	v->call_id = id;
	v->more = wo->wo_total > n;
	v->total_size = wo->wo_total;
	v->n_buffer_sizes = wo->wo_nseg > 1 ? wo->wo_nseg - 1 : 0;
	v->buffer_sizes = wo->wo_sizes;
	v->data.data = n > 0 ? (uint8_t *)wo->wo_seg[0].buf : NULL;
	v->data.len = n;
}

/*
 * Send a Result or an Item with its value in chunks of at most
 * FRAME_CHUNK_MAX: chunk 0 in the carrier, the rest right after it, all
 * under the write lock. Called without the GIL.
 */
static int
worker_py_value_out(enum worker_py_carrier carrier, uint64_t id, uint64_t index,
    int generator, const struct worker_py_out *wo)
{
	Remotemedia__V1__ServerMessage sm =
	    REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Result res = REMOTEMEDIA__V1__RESULT__INIT;
	Remotemedia__V1__Item item = REMOTEMEDIA__V1__ITEM__INIT;
	Remotemedia__V1__Value v = REMOTEMEDIA__V1__VALUE__INIT;
	int rv;

	worker_py_value_first(&v, id, wo);
	if (carrier == WORKER_PY_RESULT) {
		res.call_id = id;
		res.generator = generator;
		res.value = generator ? NULL : &v;
		sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_RESULT;
		sm.result = &res;
	} else {
		item.call_id = id;
		item.index = index;
		item.value = &v;
		sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_ITEM;
		sm.item = &item;
	}
	worker_output_flush();
	worker_send_lock();
	rv = worker_send(FRAME_MSG, &sm.base);
	if (rv == 0 && v.more)
		rv = worker_py_value_rest(id, wo, 0, v.data.len);
	worker_send_unlock();
	return rv;
}

/* Release what worker_py_out_take took. */
static void
worker_py_out_free(struct worker_py_out *wo)
{
	size_t i;

	for (i = 0; i < wo->wo_nseg; i++)
		if (wo->wo_seg[i].obj != NULL)
			PyBuffer_Release(&wo->wo_seg[i]);
	free(wo->wo_seg);
	free(wo->wo_sizes);
}

/*
 * Take the segments of a value: data (bytes-like, or None for nothing) and
 * buffers (a sequence of contiguous bytes-like objects, or None). -1 with
 * a Python exception set if one is not a contiguous buffer.
 */
static int
worker_py_out_take(struct worker_py_out *wo, PyObject *data, PyObject *buffers)
{
	PyObject *seq = NULL;
	Py_ssize_t i, nbuf = 0;

	memset(wo, 0, sizeof(*wo));
	if (buffers != NULL && buffers != Py_None) {
		if ((seq = PySequence_Fast(buffers,
		         "buffers must be a "
		         "sequence")) == NULL)
			return -1;
		nbuf = PySequence_Fast_GET_SIZE(seq);
	}
	wo->wo_seg = xcalloc((size_t)nbuf + 1, sizeof(*wo->wo_seg));
	wo->wo_sizes = xcalloc((size_t)nbuf + 1, sizeof(*wo->wo_sizes));
	wo->wo_nseg = 1;
	if (data != Py_None &&
	    PyObject_GetBuffer(data, &wo->wo_seg[0], PyBUF_SIMPLE) == -1)
		goto fail;
	wo->wo_total = (uint64_t)wo->wo_seg[0].len;
	for (i = 0; i < nbuf; i++) {
		if (PyObject_GetBuffer(PySequence_Fast_GET_ITEM(seq, i),
		        &wo->wo_seg[i + 1], PyBUF_SIMPLE) == -1)
			goto fail;
		wo->wo_nseg++;
		wo->wo_sizes[i] = (uint64_t)wo->wo_seg[i + 1].len;
		wo->wo_total += wo->wo_sizes[i];
	}
	Py_XDECREF(seq);
	return 0;
fail:
	Py_XDECREF(seq);
	worker_py_out_free(wo);
	return -1;
}

/* Send one value, taken from bytes-like objects, without the GIL. */
static PyObject *
worker_py_send_value(enum worker_py_carrier carrier, uint64_t id,
    uint64_t index, int generator, PyObject *data, PyObject *buffers)
{
	struct worker_py_out wo;

	if (worker_py_out_take(&wo, data, buffers) == -1)
		return NULL;
	Py_BEGIN_ALLOW_THREADS worker_py_value_out(
	    carrier, id, index, generator, &wo);
	Py_END_ALLOW_THREADS worker_py_out_free(&wo);
	Py_RETURN_NONE;
}

/* _rmworker.send_result(call_id, data_or_None, is_generator[, buffers]) */
static PyObject *
worker_py_send_result(PyObject *self, PyObject *args)
{
	unsigned long long id;
	PyObject *data, *buffers = Py_None;
	int generator;

	if (!PyArg_ParseTuple(args, "KOp|O", &id, &data, &generator, &buffers))
		return NULL;
	if (generator) {
		data = Py_None;
		buffers = Py_None;
	}
	return worker_py_send_value(
	    WORKER_PY_RESULT, id, 0, generator, data, buffers);
}

/* _rmworker.send_item(call_id, index, data[, buffers]) */
static PyObject *
worker_py_send_item(PyObject *self, PyObject *args)
{
	unsigned long long id, index;
	PyObject *data, *buffers = Py_None;

	if (!PyArg_ParseTuple(args, "KKO|O", &id, &index, &data, &buffers))
		return NULL;
	if (data == Py_None) {
		PyErr_SetString(PyExc_TypeError, "an item needs its data");
		return NULL;
	}
	return worker_py_send_value(
	    WORKER_PY_ITEM, id, index, 0, data, buffers);
}

/* Fill an Error from the runtime's strings, clipped to fit one frame. */
static void
worker_py_error_fill(
    Remotemedia__V1__Error *err, const char **s, const Py_buffer *pickled)
{
	err->type = worker_py_clip(s[0], 1024);
	err->module = worker_py_clip(s[1], 1024);
	err->qualname = worker_py_clip(s[2], 1024);
	err->message = worker_py_clip(s[3], WORKER_PY_MAX_TEXT);
	err->traceback = worker_py_clip(s[4], WORKER_PY_MAX_TRACEBACK);
	if ((size_t)pickled->len <= WORKER_PY_MAX_PICKLED) {
		err->pickled.data = pickled->buf;
		err->pickled.len = (size_t)pickled->len;
	}
}

/*
 * _rmworker.send_error(call_id, type, module, qualname, message,
 * traceback, pickled, timeout)
 */
static PyObject *
worker_py_send_error(PyObject *self, PyObject *args)
{
	Remotemedia__V1__Error err = REMOTEMEDIA__V1__ERROR__INIT;
	unsigned long long id;
	const char *s[5];
	Py_buffer pickled;
	int timeout;

	if (!PyArg_ParseTuple(args, "Ksssssy*p", &id, &s[0], &s[1], &s[2],
	        &s[3], &s[4], &pickled, &timeout))
		return NULL;
	err.call_id = id;
	err.timeout = timeout;
	worker_py_error_fill(&err, s, &pickled);
	worker_py_send_err(&err);
	PyBuffer_Release(&pickled);
	free(err.type);
	free(err.module);
	free(err.qualname);
	free(err.message);
	free(err.traceback);
	Py_RETURN_NONE;
}

/* _rmworker.send_end(call_id, cancelled) */
static PyObject *
worker_py_send_end(PyObject *self, PyObject *args)
{
	Remotemedia__V1__ServerMessage sm =
	    REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__End end = REMOTEMEDIA__V1__END__INIT;
	unsigned long long id;
	int cancelled;

	if (!PyArg_ParseTuple(args, "Kp", &id, &cancelled))
		return NULL;
	end.call_id = id;
	end.cancelled = cancelled;
	sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_END;
	sm.end = &end;
	worker_py_send_nogil(&sm);
	Py_RETURN_NONE;
}

/* _rmworker.send_fatal(code, message): the session cannot go on. */
static PyObject *
worker_py_send_fatal(PyObject *self, PyObject *args)
{
	unsigned int code;
	const char *msg;
	char *clipped;

	if (!PyArg_ParseTuple(args, "Is", &code, &msg))
		return NULL;
	clipped = worker_py_clip(msg, WORKER_PY_MAX_TEXT);
	Py_BEGIN_ALLOW_THREADS worker_output_flush();
	worker_send_fatal(code, clipped);
	Py_END_ALLOW_THREADS free(clipped);
	Py_RETURN_NONE;
}

/* Fill Ready's attribute map from a dict of name to AttrKind. */
static int
worker_py_ready_attrs(Remotemedia__V1__Ready *r, PyObject *attrs)
{
	Remotemedia__V1__Ready__AttributesEntry *e;
	PyObject *key, *val;
	Py_ssize_t pos = 0;
	const char *name;
	long kind;

	r->n_attributes = 0;
	r->attributes = xcalloc(
	    (size_t)PyDict_Size(attrs) + 1, sizeof(*r->attributes));
	while (PyDict_Next(attrs, &pos, &key, &val)) {
		if ((name = PyUnicode_AsUTF8(key)) == NULL)
			return -1;
		if ((kind = PyLong_AsLong(val)) == -1 && PyErr_Occurred())
			return -1;
		e = xmalloc(sizeof(*e));
		remotemedia__v1__ready__attributes_entry__init(e);
		e->key = xstrdup(name);
		e->value = (Remotemedia__V1__AttrKind)kind;
		r->attributes[r->n_attributes++] = e;
	}
	return 0;
}

/* Fill Ready's installed list from a sequence of "name==version". */
static int
worker_py_ready_installed(Remotemedia__V1__Ready *r, PyObject *seq)
{
	PyObject *fast;
	const char *s;
	Py_ssize_t i, n;

	if (seq == NULL || seq == Py_None)
		return 0;
	if ((fast = PySequence_Fast(seq, "installed must be a sequence")) ==
	    NULL)
		return -1;
	n = PySequence_Fast_GET_SIZE(fast);
	r->installed = xcalloc((size_t)n + 1, sizeof(char *));
	for (i = 0; i < n; i++) {
		s = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(fast, i));
		if (s == NULL) {
			Py_DECREF(fast);
			return -1;
		}
		r->installed[r->n_installed++] = xstrdup(s);
	}
	Py_DECREF(fast);
	return 0;
}

static void
worker_py_ready_free(Remotemedia__V1__Ready *r)
{
	size_t i;

	for (i = 0; i < r->n_attributes; i++) {
		free(r->attributes[i]->key);
		free(r->attributes[i]);
	}
	free(r->attributes);
	for (i = 0; i < r->n_installed; i++)
		free(r->installed[i]);
	free(r->installed);
}

/*
 * _rmworker.send_ready(session_id, attrs, python_version,
 * cloudpickle_version[, installed]): the session is open.
 */
static PyObject *
worker_py_send_ready(PyObject *self, PyObject *args)
{
	Remotemedia__V1__ServerMessage sm =
	    REMOTEMEDIA__V1__SERVER_MESSAGE__INIT;
	Remotemedia__V1__Ready r = REMOTEMEDIA__V1__READY__INIT;
	PyObject *attrs, *installed = NULL, *rv = NULL;
	const char *sid, *pyv, *cpv;

	if (!PyArg_ParseTuple(args, "sO!ss|O", &sid, &PyDict_Type, &attrs, &pyv,
	        &cpv, &installed))
		return NULL;
	r.session_id = (char *)sid;
	r.python_version = (char *)pyv;
	r.cloudpickle_version = (char *)cpv;
	r.protocol = REMOTEMEDIA__V1__PROTOCOL_VERSION__PROTOCOL_V1;
	r.limits = (Remotemedia__V1__Limits *)&wp_conf->wc_limits;
	if (worker_py_ready_attrs(&r, attrs) == 0 &&
	    worker_py_ready_installed(&r, installed) == 0) {
		sm.msg_case = REMOTEMEDIA__V1__SERVER_MESSAGE__MSG_READY;
		sm.ready = &r;
		worker_py_send_nogil(&sm);
		rv = Py_NewRef(Py_None);
	}
	worker_py_ready_free(&r);
	return rv;
}

/* _rmworker.gone(): whether a write to the front has failed. */
static PyObject *
worker_py_gone(PyObject *self, PyObject *unused)
{
	return PyBool_FromLong(worker_dead());
}

/*
 * _rmworker.trim(): give back what start-up used and an idle session would
 * keep (mem_release): the C heap's free pages (the compiler's and the
 * importer's garbage) and the stack below the runtime's main().
 */
static PyObject *
worker_py_trim(PyObject *self, PyObject *unused)
{
	mem_release();
	Py_RETURN_NONE;
}

static PyMethodDef worker_py_methods[] = {
    {"fileno", worker_py_fileno, METH_NOARGS,
        "The descriptor of the front's socket, for loop.add_reader."},
    {"gone", worker_py_gone, METH_NOARGS,
        "Whether a write to the front failed: the session cannot go on."},
    {"pump", worker_py_pump, METH_NOARGS,
        "Read what the front sent, without blocking; a list of events."},
    {"compile", worker_py_compile, METH_VARARGS,
        "compile(source, filename): the code of str source, as compile() "
        "in 'exec' mode makes it."},
    {"init_info", worker_py_init_info, METH_NOARGS,
        "What the front's Init said about the session."},
    {"log", worker_py_log, METH_VARARGS,
        "log(level, message): a line in the worker's own log."},
    {"trim", worker_py_trim, METH_NOARGS,
        "Give back the free pages that start-up left, in the C heap and "
        "the stack."},
    {"send_ready", worker_py_send_ready, METH_VARARGS,
        "send_ready(session_id, attrs, py_ver, cp_ver[, installed])"},
    {"send_result", worker_py_send_result, METH_VARARGS,
        "send_result(call_id, data_or_None, is_generator)"},
    {"send_error", worker_py_send_error, METH_VARARGS,
        "send_error(call_id, type, module, qualname, message, traceback, "
        "pickled, timeout)"},
    {"send_item", worker_py_send_item, METH_VARARGS,
        "send_item(call_id, index, data)"},
    {"send_end", worker_py_send_end, METH_VARARGS,
        "send_end(call_id, cancelled)"},
    {"send_fatal", worker_py_send_fatal, METH_VARARGS,
        "send_fatal(code, message): the session cannot go on."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef worker_py_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = WORKER_PY_MODULE,
    .m_doc = "The worker's side of the front's socket (remotemedia).",
    .m_size = -1,
    .m_methods = worker_py_methods,
};

static PyObject *
worker_py_module_init(void)
{
	return PyModule_Create(&worker_py_module);
}

/* Python could not start or the runtime failed: say so, and leave. */
static void
worker_py_failed(const char *what, const char *detail)
{
	char msg[1024];

	snprintf(msg, sizeof(msg), "the worker's Python runtime failed: %s%s%s",
	    what, detail ? ": " : "", detail ? detail : "");
	log_warnx("%s", msg);
	worker_send_fatal(WORKER_INTERNAL, msg);
	worker_exit(1);
}

/* The pending Python exception with its traceback, as text for the log. */
static char *
worker_py_exc_text(void)
{
	PyObject *type, *value, *tb, *mod = NULL, *lines = NULL, *text = NULL;
	PyObject *empty = NULL;
	char *out = NULL;

	PyErr_Fetch(&type, &value, &tb);
	if (type == NULL)
		return xstrdup("no exception");
	PyErr_NormalizeException(&type, &value, &tb);
	if ((mod = PyImport_ImportModule("traceback")) != NULL &&
	    (lines = PyObject_CallMethod(mod, "format_exception", "OOO", type,
	         value ? value : Py_None, tb ? tb : Py_None)) != NULL &&
	    (empty = PyUnicode_FromString("")) != NULL &&
	    (text = PyUnicode_Join(empty, lines)) != NULL &&
	    PyUnicode_AsUTF8(text) != NULL)
		out = xstrdup(PyUnicode_AsUTF8(text));
	PyErr_Clear();
	Py_XDECREF(mod);
	Py_XDECREF(lines);
	Py_XDECREF(empty);
	Py_XDECREF(text);
	Py_XDECREF(type);
	Py_XDECREF(value);
	Py_XDECREF(tb);
	return out ? out : xstrdup("(cannot format the exception)");
}

/*
 * Start CPython as /usr/bin/python3 would be, so that sys.executable and
 * sys.path are those of the system Python: no user site, no bytecode
 * written, no argv parsing. Without site, though: the runtime adds the
 * site directories itself (_setup_site), and does not run the host's
 * .pth import lines and sitecustomize.
 */
static void
worker_py_start(void)
{
	PyConfig cfg;
	PyStatus st;

	if (PyImport_AppendInittab(WORKER_PY_MODULE, worker_py_module_init) ==
	    -1)
		fatalx("cannot register %s", WORKER_PY_MODULE);
	PyConfig_InitPythonConfig(&cfg);
	cfg.parse_argv = 0;
	cfg.site_import = 0;
	cfg.user_site_directory = 0;
	cfg.write_bytecode = 0;
	cfg.install_signal_handlers = 1;
	st = PyConfig_SetString(&cfg, &cfg.program_name, WORKER_PY_EXECUTABLE);
	if (!PyStatus_Exception(st))
		st = PyConfig_SetString(
		    &cfg, &cfg.executable, WORKER_PY_EXECUTABLE);
	if (!PyStatus_Exception(st))
		st = Py_InitializeFromConfig(&cfg); /* sys.stderr: fd 2 */
	PyConfig_Clear(&cfg);
	if (PyStatus_Exception(st))
		worker_py_failed("cannot initialise CPython",
		    st.err_msg ? st.err_msg : "unknown error");
}

/* Put Init's sys_path entries, in order, at the front of sys.path. */
static void
worker_py_sys_path(void)
{
	PyObject *path, *entries;
	Py_ssize_t i;

	if ((path = PySys_GetObject("path")) == NULL || !PyList_Check(path))
		worker_py_failed("sys.path is not a list", NULL);
	if ((entries = worker_py_sys_path_list()) == NULL ||
	    PyList_SetSlice(path, 0, 0, entries) == -1)
		worker_py_failed(
		    "cannot extend sys.path", worker_py_exc_text());
	for (i = 0; i < PyList_GET_SIZE(entries); i++)
		log_debug("%s: %s", __func__,
		    PyUnicode_AsUTF8(PyList_GET_ITEM(entries, i)));
	Py_DECREF(entries);
}

/* A module compiled into the binary by scripts/embed-source. */
struct worker_py_embedded {
	const char *we_name; /* imported as */
	const char *we_file; /* its code's file name */
	const char *we_source;
	const unsigned char *we_code; /* compiled at build time, marshalled */
	size_t we_code_len;
	long we_magic; /* the bytecode magic number of we_code */
};

static const struct worker_py_embedded worker_py_oob = {
    WORKER_PY_OOB,
    worker_oob_source_file,
    worker_oob_source,
    worker_oob_source_code,
    sizeof(worker_oob_source_code),
    worker_oob_source_magic,
};

static const struct worker_py_embedded worker_py_runtime = {
    WORKER_PY_RUNTIME,
    worker_runtime_source_file,
    worker_runtime_source,
    worker_runtime_source_code,
    sizeof(worker_runtime_source_code),
    worker_runtime_source_magic,
};

/*
 * The code of an embedded module: the one compiled at build time if this
 * interpreter reads its bytecode, or else its source compiled now (which
 * costs the worker's start about 10 ms, and 1 MiB of memory that the
 * compiler's garbage leaves in use).
 */
static PyObject *
worker_py_embedded_code(const struct worker_py_embedded *we)
{
	PyObject *code;
	char *why;
	long magic;

	if ((magic = PyImport_GetMagicNumber()) == -1)
		PyErr_Clear(); /* no code compiled here is taken then */
	if (we->we_magic == magic) {
		code = PyMarshal_ReadObjectFromString(
		    (const char *)we->we_code, (Py_ssize_t)we->we_code_len);
		if (code != NULL && PyCode_Check(code)) {
			log_debug("%s: %s: compiled at build time", __func__,
			    we->we_name);
			return code;
		}
		why = code != NULL ? xstrdup("not a code object")
		                   : worker_py_exc_text();
		log_warnx("%s: the compiled %s does not load (%s): compiling "
		          "its source",
		    __func__, we->we_name, why);
		free(why);
		Py_XDECREF(code);
	} else
		log_debug("%s: %s was compiled for bytecode %ld, this Python "
		          "has %ld: compiling its source",
		    __func__, we->we_name, we->we_magic, magic);
	if ((code = Py_CompileString(
	         we->we_source, we->we_file, Py_file_input)) == NULL)
		worker_py_failed(
		    "cannot compile the runtime", worker_py_exc_text());
	return code;
}

/* Import an embedded module under its name. */
static PyObject *
worker_py_import_embedded(const struct worker_py_embedded *we)
{
	PyObject *code, *mod;

	code = worker_py_embedded_code(we);
	mod = PyImport_ExecCodeModuleEx(we->we_name, code, we->we_file);
	Py_DECREF(code);
	if (mod == NULL)
		worker_py_failed(
		    "cannot import the runtime", worker_py_exc_text());
	return mod;
}

/*
 * Import the embedded runtime as _remotemedia_runtime, after the module of
 * out-of-band buffers it shares with the client (_remotemedia_oob).
 */
static PyObject *
worker_py_load_runtime(void)
{
	Py_DECREF(worker_py_import_embedded(&worker_py_oob));
	return worker_py_import_embedded(&worker_py_runtime);
}

/*
 * Run the session: start Python, load the runtime and call its main(),
 * which returns when the session ends. Returns the exit status.
 */
int
worker_py_run(const struct worker_conf *wc)
{
	PyObject *mod, *rv;
	long code;

	wp_conf = wc;
	deframer_init(&wp_df, DEFRAME_WORKER, FRAME_WORKER_MAX);
	worker_py_start();
	worker_py_sys_path();
	mod = worker_py_load_runtime();
	if ((rv = PyObject_CallMethod(mod, "main", NULL)) == NULL)
		worker_py_failed("main() raised", worker_py_exc_text());
	code = PyLong_Check(rv) ? PyLong_AsLong(rv) : 0;
	Py_DECREF(rv);
	Py_DECREF(mod);
	log_debug("%s: the runtime returned %ld", __func__, code);
	return (int)code;
}
