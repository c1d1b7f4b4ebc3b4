/*
 * remotemedia-worker: start-up and the one writer of fd 3.
 *
 * The front exec's this program with fd 3 on the session's socketpair. It
 * reads the front's Init, checks that the front is its parent, enters the
 * session directory and the sandbox, captures its stdout and stderr, and
 * hands the session to the embedded Python runtime (worker_py.c).
 *
 * Every frame the worker writes goes through worker_send, under one lock,
 * so that no thread splits another's frame. Writes block: when
 * the front stops reading, the worker stops, and that is the flow control.
 */
#include <sys/stat.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "frame.h"
#include "log.h"
#include "util.h"
#include "worker.h"
#include "worker.pb-c.h"
#include "../sandbox/sandbox.h"

/* The socket to the front: WORKER_FD at exec, moved by worker_setup_fd. */
int worker_fd = WORKER_FD;

static pthread_mutex_t worker_wlock;
static uint8_t *worker_wbuf; /* one frame being written, under the lock */
static size_t worker_wcap;
static atomic_int worker_gone; /* a write failed: the front is gone */

static void usage(void) __attribute__((noreturn));

static void
usage(void)
{
	fprintf(stderr,
	    "usage: remotemedia-worker [--log-level LEVEL] "
	    "[--build-env DIR < BuildJob]\n");
	exit(1);
}

/* Read exactly n bytes from fd 3; -1 on EOF or error. */
static int
worker_read_full(uint8_t *p, size_t n)
{
	ssize_t r;

	while (n > 0) {
		r = read(worker_fd, p, n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Keep the first frame if it is a WorkerControl carrying an Init. */
static int
worker_init_frame(void *arg, uint8_t type, const uint8_t *msg, size_t len)
{
	Remotemedia__Worker__V1__WorkerControl **ctl = arg;

	if (type != FRAME_CTL)
		return -1;
	*ctl = remotemedia__worker__v1__worker_control__unpack(NULL, len, msg);
	if (*ctl == NULL)
		return -1;
	if ((*ctl)->msg_case !=
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_INIT) {
		remotemedia__worker__v1__worker_control__free_unpacked(
		    *ctl, NULL);
		*ctl = NULL;
		return -1;
	}
	return 0;
}

/*
 * Read the front's Init with blocking reads of exactly its header and its
 * body, so that no byte of the frames after it is consumed here.
 */
static Remotemedia__Worker__V1__WorkerControl *
worker_read_init(void)
{
	Remotemedia__Worker__V1__WorkerControl *ctl = NULL;
	struct deframer df;
	uint8_t hdr[FRAME_HDR_LEN], *body;
	size_t want;
	int rv;

	deframer_init(&df, DEFRAME_WORKER, FRAME_WORKER_MAX);
	if (worker_read_full(hdr, sizeof(hdr)) == -1)
		fatalx("no Init from the front on fd %d", worker_fd);
	rv = deframer_feed(&df, hdr, sizeof(hdr), worker_init_frame, &ctl);
	if (rv == DEFRAME_OK && (want = deframer_wanted(&df)) > 0) {
		body = xmalloc(want);
		if (worker_read_full(body, want) == -1)
			fatalx("the front closed fd %d during Init", worker_fd);
		rv = deframer_feed(&df, body, want, worker_init_frame, &ctl);
		free(body);
	}
	deframer_free(&df);
	if (rv != DEFRAME_OK || ctl == NULL)
		fatalx(
		    "the first frame is not an Init: %s", deframe_strerror(rv));
	return ctl;
}

/*
 * Ready.limits: the bounds in force, from Init. The sandbox's are those
 * the session's cgroup enforces (Init.cgroup_limits), 0 for the others.
 */
static void
worker_limits_init(
    Remotemedia__V1__Limits *lim, const Remotemedia__Worker__V1__Init *init)
{
	remotemedia__v1__limits__init(lim);
	lim->max_message_bytes = init->max_message_bytes;
	lim->max_value_bytes = init->max_value_bytes;
	lim->max_chunk_bytes = frame_client_chunk(init->max_message_bytes);
	lim->max_inflight_calls = init->max_inflight_calls;
	if (init->sandbox && (init->cgroup_limits & 0x1))
		lim->memory_bytes = init->memory_bytes;
	if (init->sandbox && (init->cgroup_limits & 0x2))
		lim->pids = init->pids;
	if (init->sandbox && (init->cgroup_limits & 0x4))
		lim->cpu_percent = init->cpu_percent;
	lim->idle_timeout_ms = init->idle_timeout_ms;
	lim->max_lifetime_ms = init->max_lifetime_ms;
	lim->prefetch_items = init->prefetch_items;
	lim->max_streams = init->max_streams;
}

/* Copy what the worker needs from Init into its configuration. */
static void
worker_conf_init(
    struct worker_conf *wc, const Remotemedia__Worker__V1__Init *init)
{
	size_t i;

	memset(wc, 0, sizeof(*wc));
	wc->wc_session_id = xstrdup(init->session_id);
	wc->wc_session_dir = xstrdup(init->session_dir);
	wc->wc_max_value = init->max_value_bytes;
	wc->wc_grace_ms = init->grace_ms;
	wc->wc_prefetch = init->prefetch_items;
	wc->wc_busy_poll_us = init->busy_poll_us;
	worker_limits_init(&wc->wc_limits, init);
	wc->wc_n_sys_path = init->n_sys_path;
	wc->wc_isolate_site = init->isolate_site_packages;
	wc->wc_sys_path = xcalloc(init->n_sys_path + 1, sizeof(char *));
	for (i = 0; i < init->n_sys_path; i++)
		wc->wc_sys_path[i] = xstrdup(init->sys_path[i]);
}

/*
 * Parse the command line the front gives every worker process (sessions'
 * and builders'); returns the log level, or -1 if not given, and the
 * environment to build in *build_dir (NULL for a session's worker).
 */
static int
worker_parse_args(int argc, char *argv[], const char **build_dir)
{
	static const struct option opts[] = {
	    {"log-level", required_argument, NULL, 'l'},
	    {"build-env", required_argument, NULL, 'b'},
	    {NULL, 0, NULL, 0},
	};
	int ch, level = -1;

	*build_dir = NULL;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'l':
			if ((level = log_parse_level(optarg)) == -1)
				usage();
			break;
		case 'b':
			*build_dir = optarg;
			break;
		default:
			usage();
		}
	}
	if (optind != argc)
		usage();
	return level;
}

/*
 * Move the socket off fd 3, close-on-exec and non-blocking, for the loop
 * that reads it. User code (or a library) that takes fd 3 for its own
 * use, dup2 onto it as for a child, sent the session's answers elsewhere:
 * with the sandbox, whose outer processes hold the socket too, the front
 * saw no end, and the call hung.
 */
static void
worker_setup_fd(void)
{
	int fl, fd;

	if ((fd = fcntl(WORKER_FD, F_DUPFD_CLOEXEC, 10)) == -1)
		fatal("fcntl F_DUPFD_CLOEXEC");
	worker_fd = fd;
	/* /dev/null holds fd 3, so that the worker's own descriptors never
	 * land there: user code used to it may close it. */
	if ((fd = open("/dev/null", O_RDWR | O_CLOEXEC)) == -1 ||
	    dup3(fd, WORKER_FD, O_CLOEXEC) == -1)
		fatal("/dev/null on fd %d", WORKER_FD);
	close(fd);
	/* The output pipes' ends, until worker_output_start takes them:
	 * nothing the sandbox execs (slirp4netns) gets them. */
	for (fd = WORKER_OUT_FD; fd < WORKER_EXEC_FDS; fd++)
		(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	if ((fl = fcntl(worker_fd, F_GETFL)) == -1 ||
	    fcntl(worker_fd, F_SETFL, fl | O_NONBLOCK) == -1)
		fatal("fcntl O_NONBLOCK");
}

/* Enter the session directory and the sandbox that Init describes. */
static void
worker_confine(
    const struct worker_conf *wc, const Remotemedia__Worker__V1__Init *init)
{
	struct sandbox_conf sc = {0};
	char msg[256];

	if (chdir(wc->wc_session_dir) == -1)
		fatal("chdir %s", wc->wc_session_dir);
	sc.sc_session_id = wc->wc_session_id;
	sc.sc_session_dir = wc->wc_session_dir;
	sc.sc_enabled = init->sandbox;
	sc.sc_uid = init->uid;
	sc.sc_gid = init->gid;
	sc.sc_network = init->network == 1 ? SANDBOX_NET_ISOLATED
	    : init->network == 2           ? SANDBOX_NET_HOST
	                                   : SANDBOX_NET_OFF;
	sc.sc_egress_allow = (const char *const *)init->egress_allow;
	sc.sc_n_egress_allow = init->n_egress_allow;
	sc.sc_egress_deny = (const char *const *)init->egress_deny;
	sc.sc_n_egress_deny = init->n_egress_deny;
	sc.sc_cgroup = init->cgroup;
	sc.sc_env_dir = init->env_dir;
	sc.sc_disk_bytes = init->disk_bytes;
	sc.sc_memory_bytes = init->memory_bytes;
	sc.sc_pids = init->pids;
	sc.sc_cpu_percent = init->cpu_percent;
	sc.sc_cpu_seconds = init->cpu_seconds;
	sc.sc_seccomp_log = init->seccomp_log;
	sc.sc_status_fd = -1;
	if (sandbox_prepare(&sc) == -1 || sandbox_enter(&sc) == -1) {
		snprintf(msg, sizeof(msg), "sandbox: %s", sandbox_error());
		worker_send_fatal(WORKER_INTERNAL, msg);
		fatalx("the sandbox could not be set up: %s", sandbox_error());
	}
}

/* The write lock is recursive, so that a chunked value holds it whole. */
static void
worker_lock_init(void)
{
	pthread_mutexattr_t attr;

	if (pthread_mutexattr_init(&attr) != 0 ||
	    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE) != 0 ||
	    pthread_mutex_init(&worker_wlock, &attr) != 0)
		fatalx("cannot create the write lock");
	pthread_mutexattr_destroy(&attr);
}

int
main(int argc, char *argv[])
{
	Remotemedia__Worker__V1__WorkerControl *ctl;
	Remotemedia__Worker__V1__Init *init;
	struct worker_conf wc;
	const char *build_dir;
	int level;

	/* The sandbox's root is made of directories other uids must enter,
	 * created with the modes written here; a service's UMask=0077 would
	 * make them 0700. What a session creates is its own business. */
	umask(022);
	level = worker_parse_args(argc, argv, &build_dir);
	if (build_dir != NULL)
		return worker_venv_main(
		    build_dir, level == -1 ? LOG_LEVEL_INFO : level);
	log_init("worker", level == -1 ? LOG_LEVEL_INFO : level);
	signal(SIGPIPE, SIG_IGN);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1)
		fatal("prctl PR_SET_PDEATHSIG");
	worker_lock_init();

	ctl = worker_read_init();
	init = ctl->init;
	if (getppid() != init->parent_pid) {
		log_warnx("parent is %d, not the front %d: exiting",
		    (int)getppid(), init->parent_pid);
		exit(1);
	}
	if (level == -1 && init->log_level >= LOG_LEVEL_ERROR &&
	    init->log_level <= LOG_LEVEL_DEBUG)
		log_setlevel(init->log_level);
	worker_setup_fd();
	worker_conf_init(&wc, init);
	log_set_session(wc.wc_session_id);
	log_debug("%s: session %s in %s", __func__, wc.wc_session_id,
	    wc.wc_session_dir);

	worker_confine(&wc, init);
	remotemedia__worker__v1__worker_control__free_unpacked(ctl, NULL);
	worker_output_start();
	worker_exit(worker_py_run(&wc));
}

void
worker_send_lock(void)
{
	pthread_mutex_lock(&worker_wlock);
}

void
worker_send_unlock(void)
{
	pthread_mutex_unlock(&worker_wlock);
}

/* Whether a write to the front has failed: nobody reads fd 3 any more. */
int
worker_dead(void)
{
	return atomic_load(&worker_gone);
}

/* Wait until fd 3 can take more bytes; -1 if it never will. */
static int
worker_wait_writable(void)
{
	struct pollfd pfd;

	pfd.fd = worker_fd;
	pfd.events = POLLOUT;
	pfd.revents = 0;
	while (poll(&pfd, 1, -1) == -1) {
		if (errno != EINTR) {
			log_warn("%s: poll", __func__);
			return -1;
		}
	}
	return 0;
}

/* Write all of p, blocking as long as the front does not read. */
static int
worker_write_all(const uint8_t *p, size_t n)
{
	ssize_t w;

	while (n > 0 && !worker_dead()) {
		w = write(worker_fd, p, n);
		if (w > 0) {
			p += w;
			n -= (size_t)w;
		} else if (w == -1 && errno == EINTR)
			continue;
		else if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (worker_wait_writable() == -1)
				atomic_store(&worker_gone, 1);
		} else {
			log_debug("%s: write: %s", __func__, strerror(errno));
			atomic_store(&worker_gone, 1);
		}
	}
	return worker_dead() ? -1 : 0;
}

/* Write all of two pieces with writev, blocking as worker_write_all does. */
static int
worker_writev_all(struct iovec *iov, int n)
{
	ssize_t w;

	while (n > 0 && !worker_dead()) {
		w = writev(worker_fd, iov, n);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (worker_wait_writable() == -1)
				atomic_store(&worker_gone, 1);
			continue;
		}
		if (w == -1) {
			log_debug("%s: writev: %s", __func__, strerror(errno));
			atomic_store(&worker_gone, 1);
			break;
		}
		for (; n > 0 && (size_t)w >= iov->iov_len; iov++, n--)
			w -= (ssize_t)iov->iov_len;
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return worker_dead() ? -1 : 0;
}

/* Append a protobuf varint to p; the bytes written. */
static size_t
worker_varint(uint8_t *p, uint64_t v)
{
	size_t n = 0;

	do {
		p[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
		v >>= 7;
	} while (v > 0);
	return n;
}

/*
 * Send a continuation chunk, ServerMessage{value: Value{call_id, seq,
 * more, data}}, as one frame, without copying data: the frame's head is
 * encoded here (data, field 4, last) and data follows it in one writev.
 */
int
worker_send_chunk(
    uint64_t id, uint32_t seq, int more, const uint8_t *data, size_t len)
{
	uint8_t fields[40], head[80];
	size_t nf = 0, nh, vlen;
	struct iovec iov[2];
	int rv;

	fields[nf++] = 0x08; /* call_id */
	nf += worker_varint(fields + nf, id);
	fields[nf++] = 0x10; /* seq */
	nf += worker_varint(fields + nf, seq);
	if (more) {
		fields[nf++] = 0x18; /* more */
		fields[nf++] = 0x01;
	}
	fields[nf++] = 0x22; /* data */
	nf += worker_varint(fields + nf, len);
	vlen = nf + len;
	nh = FRAME_HDR_LEN;
	head[nh++] = 0x42; /* ServerMessage.value */
	nh += worker_varint(head + nh, vlen);
	memcpy(head + nh, fields, nf);
	nh += nf;
	if (nh - FRAME_HDR_LEN + len > FRAME_WORKER_MAX)
		return -1;
	frame_worker_header(
	    head, FRAME_MSG, (uint32_t)(nh - FRAME_HDR_LEN + len));
	iov[0].iov_base = head;
	iov[0].iov_len = nh;
	iov[1].iov_base = (void *)data;
	iov[1].iov_len = len;
	worker_send_lock();
	rv = worker_writev_all(iov, len > 0 ? 2 : 1);
	worker_send_unlock();
	return rv;
}

/*
 * Send one message as one frame of the given type. Returns -1 when the
 * front is gone or the message cannot be a frame; the caller goes on, and
 * the reader sees EOF.
 */
int
worker_send(uint8_t type, const ProtobufCMessage *msg)
{
	size_t len;
	int rv;

	len = protobuf_c_message_get_packed_size(msg);
	if (len > FRAME_WORKER_MAX) {
		log_warnx("%s: a %zu-byte message is over the frame limit",
		    __func__, len);
		return -1;
	}
	worker_send_lock();
	if (worker_wcap < len + FRAME_HDR_LEN) {
		worker_wcap = len + FRAME_HDR_LEN;
		worker_wbuf = xrealloc(worker_wbuf, worker_wcap);
	}
	frame_worker_header(worker_wbuf, type, (uint32_t)len);
	protobuf_c_message_pack(msg, worker_wbuf + FRAME_HDR_LEN);
	rv = worker_write_all(worker_wbuf, len + FRAME_HDR_LEN);
	worker_send_unlock();
	return rv;
}

/* Tell the front the session cannot go on, with a gRPC status code. */
int
worker_send_fatal(uint32_t code, const char *message)
{
	Remotemedia__Worker__V1__WorkerControl ctl =
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__INIT;
	Remotemedia__Worker__V1__Fatal f = REMOTEMEDIA__WORKER__V1__FATAL__INIT;

	log_info("session fails with status %u: %s", code, message);
	f.code = code;
	f.message = (char *)message;
	ctl.msg_case = REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_FATAL;
	ctl.fatal = &f;
	return worker_send(FRAME_CTL, &ctl.base);
}

/*
 * Leave without running Python's finalization, which could wait forever
 * on threads that user code left behind. What is in the output pipes, the
 * front reads once the worker is gone.
 */
void
worker_exit(int code)
{
	fflush(stdout);
	log_debug("%s: exit %d", __func__, code);
	fflush(stderr);
	_exit(code);
}
