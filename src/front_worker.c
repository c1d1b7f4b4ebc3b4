/*
 * Worker processes: a fresh exec of remotemedia-worker per session, never a
 * fork of the front, with the session's socketpair on fd 3. Spare sessions
 * (front_pool.c) start theirs the same way, before a client asks.
 */
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "remotemedia.pb-c.h"
#include "worker.pb-c.h"

#define WORKER_READ_MAX (1024 * 1024)
#define FW_READ_SIZE (256 * 1024) /* one read of a worker's socket */

static void fw_event_cb(struct bufferevent *, short, void *);

static int
fw_frame_cb(void *arg, uint8_t type, const uint8_t *msg, size_t len)
{
	return front_session_worker_frame(arg, type, msg, len);
}

/*
 * Feed bytes from the worker to the session; a protocol violation ends it.
 * -1 once the session is ending: what is left is dropped.
 */
static int
fw_feed(struct session *ses, const uint8_t *p, size_t n)
{
	char msg[128];
	int rv;

	if (ses->ses_state == SES_ENDING)
		return -1;
	rv = deframer_feed(&ses->ses_win, p, n, fw_frame_cb, ses);
	if (rv != DEFRAME_OK && rv != DEFRAME_E_CALLBACK &&
	    ses->ses_state != SES_ENDING) {
		snprintf(msg, sizeof(msg), "worker protocol violation: %s",
		    deframe_strerror(rv));
		front_session_end(ses, GRPC_INTERNAL, msg);
	}
	return rv == DEFRAME_OK ? 0 : -1;
}

/*
 * Read the worker's socket once and feed what came: what read(2) returned.
 * The bytes go from one buffer to the deframer, whole frames without a
 * copy. (libevent's bufferevent read asks the kernel how much is waiting,
 * FIONREAD, before each read, and allocates for it: a stream of large
 * values reads about 26 times per MiB.)
 */
static ssize_t
fw_read(struct session *ses, int fd)
{
	static uint8_t buf[FW_READ_SIZE];
	ssize_t n;

	if ((n = read(fd, buf, sizeof(buf))) > 0) {
		ses->ses_oflushed = 0;
		fw_feed(ses, buf, (size_t)n);
	}
	return n;
}

/* The worker's socket is readable, or at its end. */
static void
fw_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct session *ses = arg;
	ssize_t n;

	front_traffic(FRONT_FROM_WORKER);
	n = fw_read(ses, fd);
	if (n > 0 || (n == -1 && (errno == EAGAIN || errno == EINTR)))
		return;
	fw_event_cb(ses->ses_wbev,
	    BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR),
	    ses);
}

/*
 * Whether the front may give a worker it niced its own nice value back
 * (*base): that needs CAP_SYS_NICE in the host's user namespace, which
 * root in a container may lack. Found once; the trial runs in a child.
 */
static int
fw_nice_base(int *base)
{
	static int known, ok, n;
	pid_t pid;
	int st;

	if (!known) {
		known = 1;
		errno = 0;
		n = getpriority(PRIO_PROCESS, 0);
		if (errno == 0 && n < 19 && (pid = fork()) != -1) {
			if (pid == 0)
				_exit(
				    setpriority(PRIO_PROCESS, 0, n + 1) != 0 ||
				    setpriority(PRIO_PROCESS, 0, n) != 0);
			ok = waitpid(pid, &st, 0) == pid && WIFEXITED(st) &&
			    WEXITSTATUS(st) == 0;
		}
	}
	*base = n;
	return ok;
}

/*
 * Set every process and thread of the session's worker (its process
 * group) this much behind the front's own nice value; 0: level with it.
 * A front that could not set it back leaves it.
 */
void
front_worker_nice(struct session *ses, int behind)
{
	int base, nice;

	if (ses->ses_pid <= 0 || !fw_nice_base(&base))
		return;
	nice = base + behind > 19 ? 19 : base + behind;
	if (setpriority(PRIO_PGRP, (id_t)ses->ses_pid, nice) == -1 &&
	    errno != ESRCH)
		log_warn("session %s: setpriority %d", ses->ses_id, nice);
}

/* Start or stop reading the worker's socket. */
void
front_worker_reading(struct session *ses, int on)
{
	if (ses->ses_wread == NULL)
		return;
	if (on)
		event_add(ses->ses_wread, NULL);
	else
		event_del(ses->ses_wread);
}

/*
 * What this loop turn queued for the worker, in one write. Then, as
 * libevent would after its own write, the write callback runs once the
 * output is under the low watermark: it gives the client back the credit
 * held while the worker's backlog was high.
 */
static void
fw_flush_cb(evutil_socket_t fd, short ev, void *arg)
{
	front_write_now(arg);
	bufferevent_trigger(arg, EV_WRITE, 0); /* checks the watermark */
}

static void
fw_write_cb(struct bufferevent *bev, void *arg)
{
	struct session *ses = arg;

	front_write_done(bev);
	if (ses->ses_stream != NULL)
		front_grpc_worker_drained(ses->ses_stream);
}

/* The worker is gone or misbehaves: if it does not exit soon, kill it. */
static void
fw_exit_timer_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct session *ses = arg;

	if (!ses->ses_exited) {
		log_warnx("session %s: worker %d did not exit; killing it",
		    ses->ses_id, (int)ses->ses_pid);
		ses->ses_exit_killed = 1;
		kill(-ses->ses_pid, SIGKILL);
		kill(ses->ses_pid, SIGKILL);
	}
}

/* The worker should exit within ms: kill it if it does not. */
void
front_worker_expect_exit(struct session *ses, uint64_t ms)
{
	if (ses->ses_pid <= 0 || ses->ses_exited)
		return;
	if (ses->ses_timer == NULL)
		ses->ses_timer = evtimer_new(front_base, fw_exit_timer_cb, ses);
	if (evtimer_pending(ses->ses_timer, NULL))
		return;
	ses->ses_exit_wait_ms = ms;
	front_timer_add(ses->ses_timer, ms);
}

static void
fw_arm_exit_timer(struct session *ses)
{
	front_worker_expect_exit(ses, front_conf.fc_exit_wait_ms);
}

static void
fw_event_cb(struct bufferevent *bev, short events, void *arg)
{
	struct session *ses = arg;

	if (events & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		bufferevent_disable(bev, EV_WRITE);
		front_worker_reading(ses, 0);
		front_session_worker_eof(ses);
		fw_arm_exit_timer(ses);
	}
}

/*
 * Route the events of the session's worker socket to the session, and read
 * it (fw_read_cb): a new worker's, or a spare's that becomes a session.
 */
void
front_worker_attach(struct session *ses)
{
	bufferevent_setcb(ses->ses_wbev, NULL, fw_write_cb, fw_event_cb, ses);
	ses->ses_wread = event_new(front_base, bufferevent_getfd(ses->ses_wbev),
	    EV_READ | EV_PERSIST, fw_read_cb, ses);
	if (ses->ses_wread == NULL)
		fatalx("%s: event_new", __func__);
	front_worker_reading(ses, 1);
	front_output_attach(ses);
}

/*
 * exec the worker with fd on WORKER_FD, /dev/null on 0, the pipes of its
 * stdout and stderr after it (frame.h: write end, then read end), and
 * nothing else open. The front keeps the pipes' read ends, nonblocking,
 * and reads them (front_output.c). The worker's read ends, which it only
 * polls, are other open files of the same pipes: O_NONBLOCK belongs to
 * an open file, and user code could clear it on one it holds.
 */
static int
fw_exec(struct session *ses, int fd)
{
	int fds[WORKER_EXEC_FDS], p[2], r[2] = {-1, -1};
	char home[4200], tmp[4200], id[128], path[64];
	const char *const env[3] = {home, tmp, id};
	int i;

	/* Every entry -1 (an initializer would leave the rest 0, and a
	 * failure below would close the front's fd 0), then the socket. */
	for (i = 0; i < WORKER_EXEC_FDS; i++)
		fds[i] = -1;
	fds[WORKER_FD] = fd;
	ses->ses_pid = -1;
	for (i = 0; i < 2; i++) {
		if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == -1) {
			log_warn("%s: pipe2", __func__);
			goto done;
		}
		r[i] = p[0];
		fds[WORKER_OUT_FD + 2 * i] = p[1];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", p[0]);
		if ((fds[WORKER_OUT_FD + 2 * i + 1] = open(
		         path, O_RDONLY | O_CLOEXEC)) == -1) {
			log_warn("%s: open %s", __func__, path);
			goto done;
		}
	}
	snprintf(home, sizeof(home), "HOME=%s", ses->ses_dir);
	snprintf(tmp, sizeof(tmp), "TMPDIR=%s/tmp", ses->ses_dir);
	snprintf(id, sizeof(id), "REMOTEMEDIA_SESSION=%s", ses->ses_id);
	ses->ses_pid = front_worker_exec(NULL, env, fds, WORKER_EXEC_FDS);
	if (ses->ses_pid != -1)
		for (i = 0; i < 2; i++) {
			ses->ses_out[i] = r[i];
			r[i] = -1;
		}
done:
	for (i = 0; i < 2; i++)
		if (r[i] != -1)
			close(r[i]);
	for (i = WORKER_OUT_FD; i < WORKER_EXEC_FDS; i++)
		if (fds[i] != -1)
			close(fds[i]);
	return ses->ses_pid == -1 ? -1 : 0;
}

/* Create the session directory (with its tmp/) under the state dir. */
static int
fw_mkdir(struct session *ses)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/sessions/%s", front_conf.fc_state_dir,
	    ses->ses_id);
	ses->ses_dir = xstrdup(path);
	if (mkdir(path, 0700) == -1) {
		log_warn("mkdir %s", path);
		return -1;
	}
	snprintf(path, sizeof(path), "%s/tmp", ses->ses_dir);
	if (mkdir(path, 0700) == -1) {
		log_warn("mkdir %s", path);
		return -1;
	}
	return 0;
}

/*
 * Start the session's worker and send it Init. Returns 0, or a gRPC status
 * with the reason, for the client, in err.
 */
int
front_worker_spawn(struct session *ses, char *err, size_t errlen)
{
	int sv[2], child, code;

	snprintf(err, errlen, "cannot start a worker for the session");
	if (fw_mkdir(ses) == -1)
		return GRPC_UNAVAILABLE;
	if ((code = front_sandbox_session_start(ses, err, errlen)) != 0) {
		log_warnx("session %s: %s", ses->ses_id, err);
		return code;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
		log_warn("socketpair");
		return GRPC_UNAVAILABLE;
	}
	child = sv[1];
	if (child == WORKER_FD) {
		/* dup2 onto itself would keep FD_CLOEXEC. */
		child = fcntl(sv[1], F_DUPFD_CLOEXEC, WORKER_FD + 1);
		close(sv[1]);
	}
	if (child == -1 || fw_exec(ses, child) == -1) {
		close(sv[0]);
		if (child != -1)
			close(child);
		return GRPC_UNAVAILABLE;
	}
	close(child);
	evutil_make_socket_nonblocking(sv[0]);
	ses->ses_wbev = bufferevent_socket_new(
	    front_base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	/* A spare's socket is read by front_pool.c's callbacks until it
	 * becomes a session (front_pool_adopt attaches it then). */
	if (ses->ses_state != SES_SPARE)
		front_worker_attach(ses);
	bufferevent_setwatermark(ses->ses_wbev, EV_WRITE, FRONT_BUF_LOW, 0);
	bufferevent_set_max_single_read(ses->ses_wbev, WORKER_READ_MAX);
	/* Written by front_write_now; a new bufferevent has EV_WRITE on. */
	bufferevent_disable(ses->ses_wbev, EV_WRITE);
	ses->ses_wflush = event_new(
	    front_base, -1, 0, fw_flush_cb, ses->ses_wbev);
	log_debug("%s: session %s: worker %d", __func__, ses->ses_id,
	    (int)ses->ses_pid);
	return front_worker_send_init(ses) == 0 ? 0 : GRPC_UNAVAILABLE;
}

/* The sandbox part of Init: identity, cgroup, network and limits. */
static void
fw_init_sandbox(struct session *ses, Remotemedia__Worker__V1__Init *init)
{
	uint64_t cpu_s, life_s, share;

	init->sandbox = front_conf.fc_sandbox;
	if (!front_conf.fc_sandbox)
		return;
	init->uid = (uint32_t)ses->ses_uid;
	init->gid = (uint32_t)ses->ses_uid;
	init->network = (uint32_t)front_conf.fc_network;
	init->n_egress_allow = (size_t)front_conf.fc_n_egress_allow;
	init->egress_allow = front_conf.fc_egress_allow;
	init->n_egress_deny = (size_t)front_conf.fc_n_egress_deny;
	init->egress_deny = front_conf.fc_egress_deny;
	init->cgroup = ses->ses_cgroup ? ses->ses_cgroup : (char *)"";
	init->disk_bytes = front_conf.fc_session_disk;
	init->memory_bytes = front_conf.fc_session_memory;
	init->pids = front_conf.fc_session_pids;
	init->cpu_percent = front_conf.fc_session_cpu;
	/* RLIMIT_CPU is a backstop: the whole lifetime at the CPU share. */
	life_s = front_conf.fc_session_lifetime_ms / 1000;
	share = front_conf.fc_session_cpu;
	if (share == 0) { /* no limit: all the CPUs there are */
		long online = sysconf(_SC_NPROCESSORS_ONLN);
		share = 100 * (uint64_t)(online > 0 ? online : 1);
	}
	if (share < 100)
		share = 100;
	cpu_s = life_s > UINT64_MAX / share ? UINT64_MAX : life_s * share / 100;
	init->cpu_seconds = cpu_s;
	init->seccomp_log = front_conf.fc_seccomp_log;
	init->cgroup_limits = front_sandbox_controllers();
}

/* The first frame: who the worker is and where it lives. */
int
front_worker_send_init(struct session *ses)
{
	Remotemedia__Worker__V1__WorkerControl ctl =
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__INIT;
	Remotemedia__Worker__V1__Init init =
	    REMOTEMEDIA__WORKER__V1__INIT__INIT;
	uint8_t *buf;
	char *site = NULL;
	size_t len;
	int rv;

	init.session_id = ses->ses_id;
	init.session_dir = ses->ses_dir;
	init.parent_pid = (int32_t)getpid();
	init.log_level = log_getlevel();
	init.max_value_bytes = ses->ses_max_value = front_conf.fc_max_value;
	init.grace_ms = front_conf.fc_grace_ms;
	init.busy_poll_us = front_conf.fc_session_busy_poll_us;
	init.max_message_bytes = front_conf.fc_max_message <
	        FRONT_SESSION_MAX_MESSAGE
	    ? front_conf.fc_max_message
	    : FRONT_SESSION_MAX_MESSAGE;
	ses->ses_max_chunk = frame_client_chunk(init.max_message_bytes);
	init.max_inflight_calls = ses->ses_max_inflight =
	    front_conf.fc_max_inflight;
	init.idle_timeout_ms = front_conf.fc_session_idle_ms;
	init.max_lifetime_ms = front_conf.fc_session_lifetime_ms;
	init.max_streams = front_conf.fc_max_streams;
	if (ses->ses_env != NULL) {
		site = front_env_site_packages(ses->ses_env);
		init.n_sys_path = 1;
		init.sys_path = &site;
		init.env_dir = (char *)front_env_dir(ses->ses_env);
		init.isolate_site_packages = !front_conf.fc_pip_system_site;
	}
	fw_init_sandbox(ses, &init);
	ctl.msg_case = REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_INIT;
	ctl.init = &init;
	len = remotemedia__worker__v1__worker_control__get_packed_size(&ctl);
	buf = xmalloc(len);
	remotemedia__worker__v1__worker_control__pack(&ctl, buf);
	rv = front_worker_send(ses, FRAME_CTL, buf, len);
	free(buf);
	free(site);
	if (rv == 0 && ses->ses_pending != NULL) {
		/* Open and the object's chunks, held during the install. */
		evbuffer_add_buffer(
		    bufferevent_get_output(ses->ses_wbev), ses->ses_pending);
		event_active(ses->ses_wflush, EV_TIMEOUT, 0);
	}
	return rv;
}

/* Tell the worker that a call's deadline has passed. */
int
front_worker_send_expired(struct session *ses, uint64_t id)
{
	Remotemedia__Worker__V1__WorkerControl ctl =
	    REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__INIT;
	Remotemedia__Worker__V1__Expired ex =
	    REMOTEMEDIA__WORKER__V1__EXPIRED__INIT;
	uint8_t buf[32];
	size_t len;

	ex.call_id = id;
	ctl.msg_case = REMOTEMEDIA__WORKER__V1__WORKER_CONTROL__MSG_EXPIRED;
	ctl.expired = &ex;
	len = remotemedia__worker__v1__worker_control__pack(&ctl, buf);
	return front_worker_send(ses, FRAME_CTL, buf, len);
}

/* Queue one frame to the worker. */
int
front_worker_send(
    struct session *ses, uint8_t type, const uint8_t *msg, size_t len)
{
	struct evbuffer *out;
	uint8_t hdr[FRAME_HDR_LEN];

	if (ses->ses_wbev == NULL && ses->ses_state == SES_INSTALLING) {
		/* Held until the environment is ready and the worker runs. */
		if (ses->ses_pending == NULL)
			ses->ses_pending = evbuffer_new();
		out = ses->ses_pending;
	} else if (ses->ses_wbev == NULL || ses->ses_eof)
		return -1;
	else
		out = bufferevent_get_output(ses->ses_wbev);
	frame_worker_header(hdr, type, (uint32_t)len);
	if (evbuffer_add(out, hdr, sizeof(hdr)) == -1 ||
	    evbuffer_add(out, msg, len) == -1)
		fatalx("%s: evbuffer_add", __func__);
	if (out != ses->ses_pending)
		event_active(ses->ses_wflush, EV_TIMEOUT, 0);
	return 0;
}

size_t
front_worker_pending_out(struct session *ses)
{
	if (ses->ses_wbev == NULL)
		return ses->ses_pending ? evbuffer_get_length(ses->ses_pending)
		                        : 0;
	return evbuffer_get_length(bufferevent_get_output(ses->ses_wbev));
}

/*
 * Stop or resume reading the worker, its socket and its pipes: end-to-end
 * flow control. The pipes may outlive the socket's end.
 */
void
front_worker_pause(struct session *ses, int pause)
{
	if (ses->ses_wbev == NULL)
		return;
	ses->ses_paused = pause;
	front_output_reading(ses, !pause);
	if (!ses->ses_eof)
		front_worker_reading(ses, !pause);
}

/* Kill the worker (once), and make sure it is reaped soon. */
void
front_worker_kill(struct session *ses)
{
	if (ses->ses_pid <= 0 || ses->ses_exited)
		return;
	if (!ses->ses_killed) {
		ses->ses_killed = 1;
		kill(-ses->ses_pid, SIGKILL);
		kill(ses->ses_pid, SIGKILL);
	}
	front_worker_reading(ses, 0);
}

void
front_worker_close(struct session *ses)
{
	if (ses->ses_wflush != NULL) {
		event_free(ses->ses_wflush);
		ses->ses_wflush = NULL;
	}
	if (ses->ses_wread != NULL) {
		event_free(ses->ses_wread);
		ses->ses_wread = NULL;
	}
	if (ses->ses_wbev != NULL) {
		bufferevent_free(ses->ses_wbev);
		ses->ses_wbev = NULL;
	}
	front_output_close(ses);
}

/*
 * Read the frames a dead worker left in its socket, then what it left in
 * its stdout and stderr.
 */
void
front_worker_drain(struct session *ses)
{
	int i;

	if (ses->ses_wbev == NULL)
		return;
	for (i = 0; i < 64 && ses->ses_state != SES_ENDING; i++)
		if (fw_read(ses, bufferevent_getfd(ses->ses_wbev)) <= 0)
			break;
	front_output_last(ses);
}

/* Describe a wait status for a person: how the worker died. */
char *
front_worker_describe_exit(int wstatus)
{
	char buf[128];

	if (WIFSIGNALED(wstatus))
		snprintf(buf, sizeof(buf), "worker killed by signal %d (%s)%s",
		    WTERMSIG(wstatus), strsignal(WTERMSIG(wstatus)),
		    WCOREDUMP(wstatus) ? ", core dumped" : "");
	else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0)
		snprintf(buf, sizeof(buf),
		    "worker exited with status 0 "
		    "before the session was closed");
	else if (WIFEXITED(wstatus))
		snprintf(buf, sizeof(buf), "worker exited with status %d",
		    WEXITSTATUS(wstatus));
	else
		snprintf(buf, sizeof(buf), "worker ended (wait status %#x)",
		    wstatus);
	return xstrdup(buf);
}

/* SIGCHLD: reap every exited worker and end its session. */
void
front_worker_reap(void)
{
	struct session *ses;
	pid_t pid;
	int st;

	while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
		if ((ses = front_session_by_pid(pid)) == NULL) {
			if (!front_pool_reap(pid, st))
				front_env_reap(pid, st);
			continue;
		}
		ses->ses_exited = 1;
		kill(-pid, SIGKILL); /* whatever it started, in its group */
		front_worker_drain(ses);
		front_session_worker_exited(ses, st);
	}
}

/* The trash directory of the state dir (see front_trash.c). */
const char *
front_worker_trash_dir(void)
{
	static char path[4096];

	if (path[0] == '\0')
		snprintf(
		    path, sizeof(path), "%s/trash", front_conf.fc_state_dir);
	return path;
}

/* At start: remove session directories a previous run left behind. */
void
front_worker_clean_state_dir(void)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/sessions", front_conf.fc_state_dir);
	if (front_trash(path, front_worker_trash_dir()) == -1)
		log_warnx("cannot clean %s", path);
	front_trash_empty(front_worker_trash_dir());
	if (mkdir_p(path, 0700) == -1)
		fatal("mkdir %s", path);
}
