/*
 * The sandbox: the worker's three processes and the order in which they
 * confine the session (architecture section 5; sandbox.h draws them).
 *
 *   W0  joins the session's cgroup, then clones W1 into new mount, PID,
 *       IPC, UTS and cgroup namespaces (and a network namespace unless the
 *       policy is host). W0 itself stays in the host's namespaces, so that
 *       it can start slirp4netns there for an isolated session; a child
 *       of W0 enters W1's network namespace to load the egress rules
 *       (sandbox_egress.c). Then W0 waits (and starts slirp4netns again
 *       if it ends), and ends as W2 ended: same exit code, or killed by
 *       the same signal.
 *   W1  builds the session's root and enters it (sandbox_ns.c), brings up
 *       lo, waits until W0 says the network is up, drops to the session's
 *       uid, forks W2, and is the session's init: it reaps, forwards
 *       SIGTERM, SIGINT and SIGHUP to W2, and reports W2's wait status.
 *   W2  returns from sandbox_prepare; sandbox_enter applies rlimits,
 *       Landlock and, last, seccomp.
 *
 * Two pipes lead to W0: W1 writes W2's wait status (or its own set-up
 * failure) on one, and W2's seccomp SIGSYS handler writes "seccomp <nr>"
 * on the other (sc_status_fd). A third, from W0 to W1, says the network
 * is up; its EOF tells W1 that W0 is gone.
 *
 * W0 dies with the front (PR_SET_PDEATHSIG), W1 with W0 (the same, re-armed
 * after the uid change), and W2 and every other process of the session
 * with W1, since W1 is their PID namespace's init. That takes a few
 * milliseconds: a SIGKILL to W0 alone does not stop W2 at once.
 *
 * With sc_enabled 0 (--sandbox off) nothing is confined, and each session
 * says so loudly.
 */
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "worker.h"
#include "sandbox.h"

/* rlimits, Landlock and seccomp (sandbox_rlimit.c and friends). */
#if __has_include("sandbox_policy.h")
#include "sandbox_policy.h"
#else
int sandbox_seccomp_load(int, int);
const char *sandbox_seccomp_name(int);
int sandbox_landlock_apply(
    const char *const *, size_t, const char *const *, size_t);
int sandbox_rlimits_apply(uint64_t, uint64_t, uint64_t);
void sandbox_thread_env(uint32_t);
#endif
/* The session's cgroup (sandbox_cgroup.c). */
#if __has_include("sandbox_cgroup.h")
#include "sandbox_cgroup.h"
#else
int cg_join(const char *, pid_t);
#endif

/* sandbox_ns.c */
int sandbox_ns_root(const struct sandbox_conf *);
int sandbox_ns_identity(const struct sandbox_conf *);
/* sandbox_net.c */
pid_t sandbox_net_start(const struct sandbox_conf *, pid_t, int);
int sandbox_net_inside(const struct sandbox_conf *);
int sandbox_net_egress(const struct sandbox_conf *, pid_t, char *, size_t);
char *sandbox_egress_rules(const struct sandbox_conf *);
/* sandbox_forward.c */
pid_t sandbox_forward_start(const struct sandbox_conf *, pid_t);

#define SANDBOX_NS_FLAGS \
	(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | \
	    CLONE_NEWCGROUP)
/* The session dir and /tmp tmpfs size when the front gives none. */
#define SANDBOX_DISK_DEFAULT (512ULL << 20)
#define SANDBOX_ABORTED 10 /* gRPC ABORTED */
/* slirp4netns restarts in a row, each within a minute of the first. */
#define SANDBOX_NET_RESTARTS 3
#define SANDBOX_NET_WINDOW_MS 60000

/* What W1 tells W0 on the status pipe. */
struct sandbox_status {
	int ss_kind;
	int ss_wstatus; /* W2's, for SANDBOX_ST_EXIT */
	char ss_reason[200]; /* why, for SANDBOX_ST_FAIL */
};
#define SANDBOX_ST_EXIT 1 /* W2 ended */
#define SANDBOX_ST_FAIL 2 /* W1 could not set up the sandbox */

/* The pipes between the three processes; each keeps only its ends. */
struct sandbox_pipes {
	int sp_status[2]; /* W1 -> W0: struct sandbox_status */
	int sp_seccomp[2]; /* W2 -> W0: "seccomp <nr>" */
	int sp_go[2]; /* W0 -> W1: the network is up, its rules loaded */
	int sp_log[2]; /* W1, W2 -> W0: their stderr, which W0 relays */
};

/*
 * W1's and W2's stderr as W0 relays it to the front's: line by line, each
 * line marked as the session's and stripped of control bytes, and no more
 * than SANDBOX_LOG_MAX bytes in all. The front's stderr itself (a file, a
 * journal stream) stays with W0, out of the session's reach.
 */
#define SANDBOX_LOG_MAX (256 * 1024)
struct sandbox_log {
	int sl_fd;
	const char *sl_session;
	char sl_line[1024];
	size_t sl_len;
	size_t sl_total;
};

static sigset_t sandbox_oldmask; /* W0's mask before the sandbox */
static char sandbox_reason[200]; /* W1's reason for a failed set-up */

static void sandbox_w1_fail(int) __attribute__((noreturn));
static void sandbox_w1_init(pid_t, int) __attribute__((noreturn));
static void sandbox_w0_relay(int) __attribute__((noreturn));

/* The signals W0 and W1 wait for instead of handling them. */
static void
sandbox_sigset(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
}

/* Open the three pipes, all close-on-exec. */
static int
sandbox_pipes_open(struct sandbox_pipes *p)
{
	if (pipe2(p->sp_status, O_CLOEXEC) == -1 ||
	    pipe2(p->sp_seccomp, O_CLOEXEC) == -1 ||
	    pipe2(p->sp_go, O_CLOEXEC) == -1 ||
	    pipe2(p->sp_log, O_CLOEXEC) == -1) {
		log_warn("pipe");
		return -1;
	}
	return 0;
}

/* W1 could not build the sandbox: tell W0 why (its last warning), and leave. */
static void
sandbox_w1_fail(int fd)
{
	struct sandbox_status ss = {SANDBOX_ST_FAIL, 0, {0}};

	snprintf(ss.ss_reason, sizeof(ss.ss_reason), "%s", log_lastwarn());

	if (write(fd, &ss, sizeof(ss)) != sizeof(ss))
		log_warn("%s: write", __func__);
	_exit(1);
}

/* Wait for W0's go; -1 if W0 closed the pipe instead (it is gone). */
static int
sandbox_w1_go(int fd)
{
	char c;
	ssize_t n;

	while ((n = read(fd, &c, 1)) == -1 && errno == EINTR)
		;
	return n == 1 ? 0 : -1;
}

/* Whether W0 still holds its end of the go pipe, that is, still lives. */
static int
sandbox_w1_parent_alive(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	return poll(&pfd, 1, 0) == 0 || (pfd.revents & POLLHUP) == 0;
}

/*
 * PID 1 of the session: reap every orphan, forward SIGTERM, SIGINT and
 * SIGHUP to W2, and when W2 ends, send its wait status to W0 and exit,
 * which makes the kernel kill whatever is left in the namespace.
 */
static void
sandbox_w1_init(pid_t w2, int fd)
{
	struct sandbox_status ss = {SANDBOX_ST_EXIT, 0, {0}};
	sigset_t set;
	pid_t pid;
	int sig, st;

	sandbox_sigset(&set);
	mem_release(); /* W1 only waits from here on */
	for (;;) {
		if ((sig = sigwaitinfo(&set, NULL)) == -1)
			continue;
		if (sig != SIGCHLD) {
			kill(w2, sig);
			continue;
		}
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			if (pid != w2)
				continue;
			ss.ss_wstatus = st;
			if (write(fd, &ss, sizeof(ss)) != sizeof(ss))
				log_warn("%s: write", __func__);
			_exit(0);
		}
	}
}

/*
 * W1, as root in the new namespaces: build and enter the root, wait for
 * the network, become the session's uid, and fork W2. Returns 0 in W2
 * only; W1 itself never returns.
 */
static int
sandbox_w1(struct sandbox_conf *sc, struct sandbox_pipes *p)
{
	pid_t w2;

	log_init("worker-init", log_getlevel());
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1)
		_exit(1);
	close(p->sp_status[0]);
	close(p->sp_seccomp[0]);
	close(p->sp_go[1]);
	close(p->sp_log[0]);
	/* From here on, W1 and W2 log through W0 (struct sandbox_log); a
	 * build's stderr is its output, which the front reads itself. */
	if (!sc->sc_build && dup2(p->sp_log[1], STDERR_FILENO) == -1)
		_exit(1);
	close(p->sp_log[1]);
	if (sandbox_ns_root(sc) == -1 || sandbox_net_inside(sc) == -1 ||
	    sandbox_w1_go(p->sp_go[0]) == -1 || sandbox_ns_identity(sc) == -1)
		sandbox_w1_fail(p->sp_status[1]);
	/* The uid change cleared PR_SET_PDEATHSIG: is W0 still there? */
	if (!sandbox_w1_parent_alive(p->sp_go[0]))
		_exit(1);
	malloc_trim(0);
	if ((w2 = fork()) == -1) {
		log_warn("fork");
		sandbox_w1_fail(p->sp_status[1]);
	}
	if (w2 == 0) {
		log_init("worker", log_getlevel());
		close(p->sp_status[1]);
		close(p->sp_go[0]);
		sigprocmask(SIG_SETMASK, &sandbox_oldmask, NULL);
		sc->sc_status_fd = p->sp_seccomp[1];
		return 0;
	}
	close(worker_fd);
	close(p->sp_seccomp[1]);
	close(p->sp_go[0]);
	sandbox_w1_init(w2, p->sp_status[1]);
}

/* The level of a relayed line: its level= if it is one of the worker's own,
 * info if none (slirp4netns's chatter). journald filters by it, and so does
 * --log-level; a session can only misstate its own. */
static int
sandbox_log_level(const struct sandbox_log *sl)
{
	const char *p, *name;
	size_t n;
	int level;

	if (sl->sl_len < 40 || memcmp(sl->sl_line, "ts=", 3) != 0)
		return LOG_LEVEL_INFO;
	p = memchr(sl->sl_line, ' ', 40);
	if (p == NULL || memcmp(p, " level=", 7) != 0)
		return LOG_LEVEL_INFO;
	p += 7;
	for (level = LOG_LEVEL_ERROR; level <= LOG_LEVEL_DEBUG; level++) {
		name = log_level_name(level);
		n = strlen(name);
		if ((size_t)(p - sl->sl_line) + n < sl->sl_len &&
		    memcmp(p, name, n) == 0 && p[n] == ' ')
			return level;
	}
	return LOG_LEVEL_INFO;
}

/* Relay one line of the session's log (struct sandbox_log). */
static void
sandbox_log_line(struct sandbox_log *sl)
{
	char ts[40], out[2 * sizeof(sl->sl_line) + 200];
	size_t i, n;
	int level;

	for (i = 0; i < sl->sl_len; i++)
		if ((unsigned char)sl->sl_line[i] < 0x20 ||
		    sl->sl_line[i] == 0x7f)
			sl->sl_line[i] = '?';
	level = sandbox_log_level(sl);
	if (sl->sl_total < SANDBOX_LOG_MAX && level <= log_getlevel()) {
		/* Whatever the session wrote is one quoted value: it cannot
		 * pass for a line of the front's own. */
		log_timestamp(ts, sizeof(ts));
		n = (size_t)snprintf(out, sizeof(out),
		    "ts=%s level=%s proc=session session=%s line=", ts,
		    log_level_name(level), sl->sl_session);
		n = log_quoted(out, n, sizeof(out), sl->sl_line, sl->sl_len);
		log_write_line(out, n, sizeof(out));
	}
	sl->sl_total += sl->sl_len + 1;
	sl->sl_len = 0;
}

/* Read and relay what the session logged; read()'s result. */
static ssize_t
sandbox_log_read(struct sandbox_log *sl)
{
	char buf[4096];
	ssize_t n, i;

	if ((n = read(sl->sl_fd, buf, sizeof(buf))) == -1)
		return -1;
	for (i = 0; i < n; i++) {
		if (buf[i] == '\n') {
			sandbox_log_line(sl);
			continue;
		}
		if (sl->sl_len == sizeof(sl->sl_line))
			sandbox_log_line(sl);
		sl->sl_line[sl->sl_len++] = buf[i];
	}
	if (n == 0 && sl->sl_len > 0)
		sandbox_log_line(sl);
	return n;
}

/*
 * slirp4netns ended while the session lives (killed, out of memory in the
 * session's cgroup): tap0 went with it. Start another one on the same
 * namespace, whose egress rules stay loaded, so that the session's network
 * comes back, and no spare is given out without one. A slirp4netns that
 * keeps ending (SANDBOX_NET_RESTARTS times within a minute) is left ended.
 * Returns the new pid, or 0.
 */
static pid_t
sandbox_w0_net_again(
    const struct sandbox_conf *sc, pid_t w1, int st, int logw, uint64_t *last)
{
	uint64_t now = now_ms();
	siginfo_t si;
	pid_t pid;
	int i;

	/* W1 ending too (the session's end kills its namespace's slirp4netns
	 * first, at times): nothing to start it for. Looked at, not reaped. */
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)w1, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	    si.si_pid == w1)
		return 0;
	if (last[0] != 0 && now - last[0] < SANDBOX_NET_WINDOW_MS) {
		log_warnx("slirp4netns ended (status %d) %d times within a "
		          "minute: the session has no network",
		    st, SANDBOX_NET_RESTARTS + 1);
		return 0;
	}
	for (i = 0; i < SANDBOX_NET_RESTARTS - 1; i++)
		last[i] = last[i + 1];
	last[i] = now;
	if ((pid = sandbox_net_start(sc, w1, logw)) <= 0) {
		log_warnx("slirp4netns ended (status %d) and did not start "
		          "again: the session has no network",
		    st);
		return 0;
	}
	log_warnx("slirp4netns ended (status %d): started again", st);
	return pid;
}

/*
 * W0 waits for W1, forwarding SIGTERM, SIGINT and SIGHUP to it, reaping
 * slirp4netns (and starting it again) or a build's forwarder if it ends
 * first (so that no pid is killed after its reuse), and relaying the
 * session's log. logw is the log's write end for a new slirp4netns.
 * Returns W1's wait status.
 */
static int
sandbox_w0_wait(const struct sandbox_conf *sc, pid_t w1, pid_t *slirp,
    pid_t *fwd, struct sandbox_log *sl, int logw)
{
	uint64_t restarts[SANDBOX_NET_RESTARTS] = {0};
	struct signalfd_siginfo si;
	struct pollfd pfd[2];
	sigset_t set;
	pid_t pid;
	int st;

	sandbox_sigset(&set);
	if ((pfd[0].fd = signalfd(-1, &set, SFD_CLOEXEC)) == -1) {
		log_warn("signalfd");
		kill(w1, SIGKILL);
		waitpid(w1, &st, 0);
		return st;
	}
	pfd[0].events = POLLIN;
	pfd[1].fd = sl->sl_fd;
	pfd[1].events = POLLIN;
	mem_release(); /* W0 only waits and relays from here on */
	for (;;) {
		if (poll(pfd, 2, -1) == -1)
			continue;
		if (pfd[1].revents != 0 && sandbox_log_read(sl) == 0)
			pfd[1].fd = -1; /* every writer is gone */
		if ((pfd[0].revents & POLLIN) == 0 ||
		    read(pfd[0].fd, &si, sizeof(si)) != sizeof(si))
			continue;
		if (si.ssi_signo != SIGCHLD) {
			kill(w1, (int)si.ssi_signo);
			continue;
		}
		while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
			if (pid == w1) {
				close(pfd[0].fd);
				return st;
			}
			if (pid == *slirp)
				*slirp = sandbox_w0_net_again(
				    sc, w1, st, logw, restarts);
			if (pid == *fwd) {
				log_warnx("the build's network forwarder "
				          "ended (status %d)",
				    st);
				*fwd = 0;
			}
		}
	}
}

/* End W0 the way W2 ended: killed by the same signal, or its exit code. */
static void
sandbox_w0_relay(int st)
{
	struct rlimit rl = {0, 0};
	sigset_t set;
	int sig;

	if (WIFEXITED(st))
		_exit(WEXITSTATUS(st));
	sig = WIFSIGNALED(st) ? WTERMSIG(st) : SIGKILL;
	setrlimit(RLIMIT_CORE, &rl); /* W0's core says nothing */
	signal(sig, SIG_DFL);
	sigemptyset(&set);
	sigaddset(&set, sig);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	kill(getpid(), sig); /* W0 has one thread */
	_exit(128 + sig);
}

/*
 * If W2's seccomp SIGSYS handler wrote "seccomp <nr>" on its pipe, end the
 * session with a Fatal that names the syscall. Every writer is dead now.
 */
static void
sandbox_w0_seccomp(const struct sandbox_conf *sc, int fd)
{
	char buf[64], msg[160];
	ssize_t n;
	int nr;

	if (fcntl(fd, F_SETFL, O_NONBLOCK) == -1 ||
	    (n = read(fd, buf, sizeof(buf) - 1)) <= 0)
		return;
	buf[n] = '\0';
	if (sscanf(buf, "seccomp %d", &nr) != 1) {
		log_warnx("unreadable seccomp report");
		return;
	}
	snprintf(msg, sizeof(msg), "seccomp: blocked syscall %s (%d)",
	    sandbox_seccomp_name(nr), nr);
	if (sc->sc_build)
		fprintf(stderr, "ERROR: %s\n", msg);
	else
		worker_send_fatal(SANDBOX_ABORTED, msg);
}

/* Read W1's report; 0 if it wrote none. */
static int
sandbox_w0_status(int fd, struct sandbox_status *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (fcntl(fd, F_SETFL, O_NONBLOCK) == -1 ||
	    read(fd, ss, sizeof(*ss)) != sizeof(*ss))
		return 0;
	return ss->ss_kind;
}

/*
 * W0: start the network, let W1 go on, wait, and end as W2 ended. Returns
 * -1 when the sandbox could not be set up (W1 is gone by then).
 */
static int
sandbox_w0(struct sandbox_conf *sc, struct sandbox_pipes *p, pid_t w1)
{
	struct sandbox_status ss;
	struct sandbox_log sl = {p->sp_log[0], sc->sc_session_id, {0}, 0, 0};
	char why[sizeof(sandbox_reason)] = "";
	pid_t slirp, fwd = 0;
	int st, failed = 0;

	log_init("worker-relay", log_getlevel());
	close(p->sp_status[1]);
	close(p->sp_seccomp[1]);
	close(p->sp_go[0]);
	/* slirp4netns writes to the session's log, which W0 relays. */
	slirp = sandbox_net_start(sc, w1, p->sp_log[1]);
	if (slirp <= 0) { /* W0 keeps the log's end for another one */
		close(p->sp_log[1]);
		p->sp_log[1] = -1;
	}
	if (slirp != -1)
		fwd = sandbox_forward_start(sc, w1);
	if (slirp == -1 || fwd == -1 ||
	    sandbox_net_egress(sc, w1, why, sizeof(why)) == -1) {
		if (why[0] != '\0') /* the egress child logged it */
			snprintf(
			    sandbox_reason, sizeof(sandbox_reason), "%s", why);
		kill(w1, SIGKILL);
		failed = 1;
	} else if (write(p->sp_go[1], "g", 1) != 1)
		log_debug("%s: W1 is gone before the go", __func__);
	st = sandbox_w0_wait(sc, w1, &slirp, &fwd, &sl, p->sp_log[1]);
	if (p->sp_log[1] != -1)
		close(p->sp_log[1]);
	/* What the session's last processes logged as they went. */
	if (fcntl(sl.sl_fd, F_SETFL, O_NONBLOCK) == 0)
		while (sandbox_log_read(&sl) > 0)
			;
	close(sl.sl_fd);
	if (slirp > 0) {
		kill(slirp, SIGKILL);
		waitpid(slirp, NULL, 0);
	}
	if (fwd > 0) {
		kill(fwd, SIGKILL);
		waitpid(fwd, NULL, 0);
	}
	switch (sandbox_w0_status(p->sp_status[0], &ss)) {
	case SANDBOX_ST_EXIT:
		if (!sc->sc_seccomp_log)
			sandbox_w0_seccomp(sc, p->sp_seccomp[0]);
		sandbox_w0_relay(ss.ss_wstatus);
	case SANDBOX_ST_FAIL:
		snprintf(sandbox_reason, sizeof(sandbox_reason), "%.*s",
		    (int)sizeof(ss.ss_reason) - 1, ss.ss_reason);
		failed = 1;
		break;
	}
	if (failed) {
		sigprocmask(SIG_SETMASK, &sandbox_oldmask, NULL);
		return -1;
	}
	log_warnx("the session's init ended without a status (%d)", st);
	sandbox_w0_relay(st);
}

/* Clone W1 into the new namespaces; W0 stays where it is. */
static pid_t
sandbox_clone(const struct sandbox_conf *sc)
{
	unsigned long flags = SANDBOX_NS_FLAGS | SIGCHLD;

	if (sc->sc_network != SANDBOX_NET_HOST)
		flags |= CLONE_NEWNET;
	/*
	 * No new stack: the child goes on from here, as after fork. glibc's
	 * cached thread id stays W0's in W1, which therefore takes no
	 * pthread mutex and calls no raise(); W2 comes from a real fork().
	 */
	return (pid_t)syscall(SYS_clone, flags, NULL, NULL, NULL, NULL);
}

/*
 * Why sandbox_prepare or sandbox_enter failed, for the session's error:
 * W1's reason when it was W1 that failed, else this process's last warning.
 */
const char *
sandbox_error(void)
{
	if (sandbox_reason[0] != '\0')
		return sandbox_reason;
	if (log_lastwarn()[0] != '\0')
		return log_lastwarn();
	return "unknown failure";
}

/* Say loudly that a session runs unconfined (--sandbox off). */
static void
sandbox_warn_off(const struct sandbox_conf *sc)
{
	log_warnx("SANDBOX OFF: session %s runs unconfined as uid %u, with "
	          "the front's filesystem, network and limits",
	    sc->sc_session_id, (unsigned)getuid());
}

/*
 * Join the cgroup, create W1 in new namespaces and, through it, W2. Returns
 * 0 in W2, -1 in W0 if the sandbox could not be set up, and never returns
 * in W0 or W1 otherwise.
 */
int
sandbox_prepare(struct sandbox_conf *sc)
{
	struct sandbox_pipes p;
	sigset_t set;
	pid_t w1;

	if (!sc->sc_enabled) {
		sandbox_warn_off(sc);
		return 0;
	}
	if (geteuid() != 0) {
		log_warnx("the sandbox needs root (or --sandbox off)");
		return -1;
	}
	if (sc->sc_disk_bytes == 0)
		sc->sc_disk_bytes = SANDBOX_DISK_DEFAULT;
	if (sc->sc_cgroup != NULL && sc->sc_cgroup[0] != '\0' &&
	    cg_join(sc->sc_cgroup, getpid()) == -1) {
		log_warnx("cannot join the cgroup %s", sc->sc_cgroup);
		return -1;
	}
	/* The host's addresses are known here, before the new namespace. */
	if (sc->sc_network == SANDBOX_NET_ISOLATED &&
	    (sc->sc_egress_rules = sandbox_egress_rules(sc)) == NULL)
		return -1;
	if (sandbox_pipes_open(&p) == -1)
		return -1;
	sandbox_sigset(&set);
	sigprocmask(SIG_BLOCK, &set, &sandbox_oldmask);
	if ((w1 = sandbox_clone(sc)) == -1) {
		log_warn("clone into new namespaces");
		sigprocmask(SIG_SETMASK, &sandbox_oldmask, NULL);
		return -1;
	}
	if (w1 == 0)
		return sandbox_w1(sc, &p);
	return sandbox_w0(sc, &p, w1);
}

/*
 * In W2, after the environment is attached: rlimits, the thread count of
 * the numeric libraries, Landlock, and seccomp last of all.
 */
int
sandbox_enter(struct sandbox_conf *sc)
{
	const char *writable[] = {sc->sc_session_dir, "/tmp", "/dev/shm"};
	const char *readable[1 + SANDBOX_READABLE_MAX];
	size_t i, nr = 0;

	if (!sc->sc_enabled)
		return 0;
	if (sandbox_rlimits_apply(
	        SANDBOX_NOFILE, sc->sc_disk_bytes, sc->sc_cpu_seconds) == -1)
		return -1;
	sandbox_thread_env(sc->sc_cpu_percent);
	if (sc->sc_env_dir != NULL && sc->sc_env_dir[0] != '\0')
		readable[nr++] = sc->sc_env_dir;
	for (i = 0; i < sc->sc_n_readable && i < SANDBOX_READABLE_MAX; i++)
		readable[nr++] = sc->sc_readable[i];
	if (sandbox_landlock_apply(writable,
	        sizeof(writable) / sizeof(writable[0]), readable, nr) == -1)
		return -1;
	return sandbox_seccomp_load(sc->sc_seccomp_log, sc->sc_status_fd);
}
