/*
 * The session's network policy (architecture section 5, --session-network):
 *
 *   off       a fresh network namespace with only lo, brought up by W1;
 *   isolated  a fresh network namespace, and slirp4netns started by W0 in
 *             the host's namespaces against W1's pid: it creates tap0 in
 *             the session's namespace and configures it (10.0.2.100/24,
 *             gateway 10.0.2.2, DNS 10.0.2.3), and relays TCP and UDP
 *             from the host's side. --disable-host-loopback keeps the
 *             host's 127.0.0.1 out of reach; --enable-sandbox and
 *             --enable-seccomp confine slirp4netns itself;
 *   host      no network namespace at all.
 *
 * slirp4netns is W0's child: it dies with W0 (PR_SET_PDEATHSIG and its
 * --exit-fd, whose other end only W0 holds), and its memory and pids are
 * charged to the session's cgroup, which W0 joined first.
 */
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <net/if.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"
#include "sandbox_policy.h"

/* What this file gives sandbox.c and sandbox_ns.c. */
pid_t sandbox_net_start(const struct sandbox_conf *, pid_t, int);
int sandbox_net_inside(const struct sandbox_conf *);
int sandbox_net_egress(const struct sandbox_conf *, pid_t, char *, size_t);
int sandbox_net_lo_up(void);
const char *sandbox_net_resolv(const struct sandbox_conf *);

#define NET_SLIRP "/usr/bin/slirp4netns"
#define NET_TAP "tap0"
#define NET_MTU "65520"
#define NET_READY_MS 10000 /* how long slirp4netns may take to be up */
/* slirp4netns's defaults, which --configure applies inside. */
#define NET_RESOLV "nameserver 10.0.2.3\n"

/*
 * In the child: slirp4netns gets --ready-fd on 3 and --exit-fd on 4 (fd 3,
 * the session's socket, is replaced), its stdout and stderr go to logfd
 * (the session's log, relayed by W0), and nothing else stays open.
 */
static void
net_exec_slirp(pid_t target, int ready, int exitfd, int logfd)
{
	char pid[32];
	char *const argv[] = {(char *)"slirp4netns", (char *)"--configure",
	    (char *)"--mtu=" NET_MTU, (char *)"--disable-host-loopback",
	    (char *)"--enable-sandbox", (char *)"--enable-seccomp",
	    (char *)"--ready-fd=3", (char *)"--exit-fd=4", pid, (char *)NET_TAP,
	    NULL};
	char *const envp[] = {(char *)"PATH=/usr/bin:/bin", NULL};
	sigset_t none;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1)
		_exit(127);
	/* W0 blocks the signals it waits for, and ignores SIGPIPE. */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_DFL);
	snprintf(pid, sizeof(pid), "%d", (int)target);
	/*
	 * slirp4netns's own sandbox (--enable-sandbox) unmounts the old root
	 * after its pivot_root, and without a private copy of the mounts
	 * that unmount propagates back: the host lost every shared mount
	 * below, such as the /run/netns/NAME of `ip netns add`. So it gets a
	 * mount namespace of its own, with nothing shared.
	 */
	if (unshare(CLONE_NEWNS) == -1 ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1) {
		log_warn("slirp4netns: private mount namespace");
		_exit(127);
	}
	if (dup2(ready, 3) == -1 || dup2(exitfd, 4) == -1 ||
	    dup2(logfd, 1) == -1 || dup2(logfd, 2) == -1)
		_exit(127);
	closefrom(5);
	execve(NET_SLIRP, argv, envp);
	log_warn("exec %s", NET_SLIRP);
	_exit(127);
}

/* Wait until slirp4netns writes "1" on its ready fd; -1 if it never does. */
static int
net_wait_ready(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	char c = 0;
	int n;

	do
		n = poll(&pfd, 1, NET_READY_MS);
	while (n == -1 && errno == EINTR);
	if (n <= 0 || read(fd, &c, 1) != 1 || c != '1') {
		log_warnx("slirp4netns did not bring the network up");
		return -1;
	}
	return 0;
}

/*
 * In W0: start the user-mode network stack for an isolated session whose
 * network namespace is W1's, and wait until tap0 is configured; again if
 * the last one ended (sandbox.c). Returns
 * slirp4netns's pid, 0 when the policy needs none, or -1.
 */
pid_t
sandbox_net_start(const struct sandbox_conf *sc, pid_t target, int logfd)
{
	static int exit_w = -1; /* the last one's --exit-fd, W0's end */
	int ready[2], exitp[2];
	pid_t pid;

	if (sc->sc_network != SANDBOX_NET_ISOLATED)
		return 0;
	if (exit_w != -1) { /* that slirp4netns has ended */
		close(exit_w);
		exit_w = -1;
	}
	if (pipe2(ready, O_CLOEXEC) == -1) {
		log_warn("pipe");
		return -1;
	}
	if (pipe2(exitp, O_CLOEXEC) == -1) {
		log_warn("pipe");
		close(ready[0]);
		close(ready[1]);
		return -1;
	}
	if ((pid = fork()) == -1)
		log_warn("fork");
	else if (pid == 0)
		net_exec_slirp(target, ready[1], exitp[0], logfd);
	close(ready[1]);
	close(exitp[0]);
	/* exitp[1] stays open in W0, close-on-exec, until W0 exits. */
	if (pid > 0 && net_wait_ready(ready[0]) == -1) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		pid = -1;
	}
	close(ready[0]);
	if (pid == -1)
		close(exitp[1]);
	else
		exit_w = exitp[1];
	return pid;
}

/* Bring lo up in the current network namespace. */
int
sandbox_net_lo_up(void)
{
	struct ifreq ifr;
	int s, rv = -1;

	if ((s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1) {
		log_warn("socket");
		return -1;
	}
	memset(&ifr, 0, sizeof(ifr));
	strncpy(ifr.ifr_name, "lo", sizeof(ifr.ifr_name) - 1);
	if (ioctl(s, SIOCGIFFLAGS, &ifr) == -1)
		log_warn("SIOCGIFFLAGS lo");
	else {
		ifr.ifr_flags |= IFF_UP;
		if ((rv = ioctl(s, SIOCSIFFLAGS, &ifr)) == -1)
			log_warn("SIOCSIFFLAGS lo");
	}
	close(s);
	return rv;
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434 /* Linux 5.3, every architecture */
#endif

/*
 * A descriptor of child's network namespace. /proc/CHILD names it when
 * this /proc is of W0's own PID namespace (/proc/self is W0): the child
 * is not reaped, so its pid is its own. In a /proc of another PID
 * namespace, the same number would name another process: then a pidfd,
 * which setns() takes since Linux 5.8.
 */
static int
net_ns_fd(pid_t child)
{
	char path[64], self[32];
	ssize_t n;
	int fd;

	if ((n = readlink("/proc/self", self, sizeof(self) - 1)) > 0) {
		self[n] = '\0';
		if (strtol(self, NULL, 10) == (long)getpid()) {
			snprintf(
			    path, sizeof(path), "/proc/%d/ns/net", (int)child);
			if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
				log_warn("%s", path);
			return fd;
		}
	}
	if ((fd = (int)syscall(SYS_pidfd_open, child, 0)) == -1)
		log_warn("pidfd_open");
	return fd;
}

/*
 * In W0, before W1 may go on: load the egress rules into the session's
 * network namespace (W1's, target) from a child that enters it and ends
 * with them. Not in W1: libnftables leaves the heap of the process that
 * ran it about 100 KiB larger, its free space scattered, and W2 is forked
 * from W1, so a worker's interpreter spread over that heap held 0.1 MiB
 * more private memory, for the session's life. Not in a child of W1
 * either, which would take the session's PID 2 from the worker. The
 * child logs why it failed, and sends that back over a pipe into why
 * (why stays "" where W0 itself logged the failure).
 */
int
sandbox_net_egress(
    const struct sandbox_conf *sc, pid_t target, char *why, size_t whylen)
{
	pid_t pid, w0 = getpid();
	ssize_t n;
	int fd, err[2], st;

	why[0] = '\0';
	if (sc->sc_egress_rules == NULL)
		return 0;
	if ((fd = net_ns_fd(target)) == -1)
		return -1;
	if (pipe2(err, O_CLOEXEC) == -1) {
		log_warn("pipe");
		close(fd);
		return -1;
	}
	if ((pid = fork()) == -1) {
		log_warn("fork");
		close(fd);
		close(err[0]);
		close(err[1]);
		return -1;
	}
	if (pid == 0) {
		close(err[0]);
		if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1 ||
		    getppid() != w0)
			_exit(1);
		if (setns(fd, CLONE_NEWNET) == -1)
			log_warn(
			    "egress policy: entering the session's network");
		else if (sandbox_egress_apply(sc->sc_egress_rules) == 0)
			_exit(0);
		n = write(err[1], log_lastwarn(), strlen(log_lastwarn()));
		_exit(n < 0 ? 2 : 1);
	}
	close(fd);
	close(err[1]);
	do
		n = read(err[0], why, whylen - 1);
	while (n == -1 && errno == EINTR);
	close(err[0]);
	why[n > 0 ? n : 0] = '\0';
	while (waitpid(pid, &st, 0) == -1)
		if (errno != EINTR) {
			log_warn("waitpid");
			return -1;
		}
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (why[0] == '\0')
		snprintf(why, whylen,
		    "egress policy: the rules were not loaded "
		    "(status %d)",
		    st);
	return -1;
}

/* In W1: bring lo up in the session's own network namespace. */
int
sandbox_net_inside(const struct sandbox_conf *sc)
{
	if (sc->sc_network == SANDBOX_NET_HOST)
		return 0;
	return sandbox_net_lo_up();
}

/*
 * The sandbox's /etc/resolv.conf: slirp4netns's DNS for isolated, none
 * for off (there is nothing to ask). For host, the host's file is bound.
 */
const char *
sandbox_net_resolv(const struct sandbox_conf *sc)
{
	return sc->sc_network == SANDBOX_NET_ISOLATED ? NET_RESOLV : NULL;
}
