/*
 * The environment builder's network: a namespace with only lo, where pip
 * finds a listener for each configured index (host and port), and a
 * forwarder that carries each connection to that index and nowhere else.
 *
 * W0 forks the forwarder once W1's network namespace exists. As root, it
 * enters that namespace, brings lo up, gives lo the index addresses that
 * are not loopback ones, and opens the listeners there; then it returns to
 * the host's namespace, where every socket it makes from then on lives,
 * and drops to the builder's uid. A connection accepted inside is relayed
 * by a child of its own to the index's address, resolved by the builder
 * before the sandbox. Names resolve inside through the root's /etc/hosts
 * (sandbox_forward_hosts), which maps each to its loopback listener; there
 * is no DNS, so every other name fails, and every other address is
 * refused by the empty namespace. TLS goes through untouched, end to end.
 */
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sandbox.h"

/* What this file gives sandbox.c. */
pid_t sandbox_forward_start(const struct sandbox_conf *, pid_t);
/* From sandbox_net.c. */
int sandbox_net_lo_up(void);

#define FWD_READY_MS 10000 /* how long the listeners may take */
#define FWD_CONNECT_MS 30000 /* an index that does not answer */
#define FWD_MAX_CONNS 64 /* relays at once; pip keeps a few */
#define FWD_BUF 65536

/* Give lo an IPv4 address outside 127/8, as the alias lo:N. */
static int
fwd_lo_alias(int s, const struct sockaddr_in *sin, int n)
{
	struct ifreq ifr;

	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo:%d", n);
	memcpy(&ifr.ifr_addr, sin, sizeof(*sin));
	((struct sockaddr_in *)&ifr.ifr_addr)->sin_port = 0;
	if (ioctl(s, SIOCSIFADDR, &ifr) == -1)
		return -1;
	return 0;
}

/* Give lo an IPv6 address other than ::1. */
static int
fwd_lo_alias6(const struct sockaddr_in6 *sin6)
{
	struct fwd_in6_ifreq {
		struct in6_addr addr;
		uint32_t prefixlen;
		int ifindex;
	} ifr6;
	int s, rv;

	memset(&ifr6, 0, sizeof(ifr6));
	ifr6.addr = sin6->sin6_addr;
	ifr6.prefixlen = 128;
	if ((ifr6.ifindex = (int)if_nametoindex("lo")) == 0 ||
	    (s = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	rv = ioctl(s, SIOCSIFADDR, &ifr6);
	close(s);
	return rv;
}

/* A listener on the forward's inside address; -1 on failure. */
static int
fwd_listen(const struct sandbox_forward *f)
{
	int s, on = 1;

	s = socket(f->sf_inside.ss_family,
	    SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (s == -1)
		return -1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
	/* An address just given to lo may still be tentative. */
	if (f->sf_inside.ss_family == AF_INET6)
		setsockopt(s, IPPROTO_IPV6, IPV6_FREEBIND, &on, sizeof(on));
	if (bind(s, (const struct sockaddr *)&f->sf_inside, f->sf_insidelen) ==
	        -1 ||
	    listen(s, 16) == -1) {
		close(s);
		return -1;
	}
	return s;
}

/* Enter the namespace of pid, set lo up, and open every listener. */
static int
fwd_open_inside(const struct sandbox_conf *sc, pid_t target, int *ls)
{
	const struct sandbox_forward *f;
	const struct sockaddr_in *sin;
	const struct sockaddr_in6 *sin6;
	char path[64];
	size_t i;
	int fd, s, alias = 0;

	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)target);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1 ||
	    setns(fd, CLONE_NEWNET) == -1) {
		log_warn("forwarder: enter the build's network");
		return -1;
	}
	close(fd);
	if (sandbox_net_lo_up() == -1 ||
	    (s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1) {
		log_warn("forwarder: lo");
		return -1;
	}
	/*
	 * One index the namespace cannot take (IPv6 off in the kernel, say)
	 * loses its listener with a warning; pip then reports that index
	 * unreachable, and the others still work.
	 */
	for (i = 0; i < sc->sc_n_forward; i++) {
		f = &sc->sc_forward[i];
		sin = (const struct sockaddr_in *)&f->sf_inside;
		sin6 = (const struct sockaddr_in6 *)&f->sf_inside;
		ls[i] = -1;
		if (sin6->sin6_family == AF_INET6 &&
		    !IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr) &&
		    fwd_lo_alias6(sin6) == -1 && errno != EEXIST)
			log_warn(
			    "forwarder: %s: IPv6 address on lo", f->sf_name);
		else if (sin->sin_family == AF_INET &&
		    (ntohl(sin->sin_addr.s_addr) >> 24) != 127 &&
		    fwd_lo_alias(s, sin, alias++) == -1 && errno != EEXIST)
			log_warn("forwarder: %s: address on lo", f->sf_name);
		else if ((ls[i] = fwd_listen(f)) == -1)
			log_warn("forwarder: listen for %s", f->sf_name);
	}
	close(s);
	return 0;
}

/* Connect to one address, waiting at most FWD_CONNECT_MS; -1 if not. */
static int
fwd_connect_one(const struct sockaddr_storage *to, socklen_t tolen)
{
	struct pollfd pfd;
	socklen_t len = sizeof(int);
	int s, err = 0, on = 1;

	if ((s = socket(to->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	fcntl(s, F_SETFL, O_NONBLOCK);
	if (connect(s, (const struct sockaddr *)to, tolen) == -1 &&
	    errno != EINPROGRESS) {
		close(s);
		return -1;
	}
	pfd.fd = s;
	pfd.events = POLLOUT;
	if (poll(&pfd, 1, FWD_CONNECT_MS) != 1 ||
	    getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err != 0) {
		close(s);
		errno = err != 0 ? err : ETIMEDOUT;
		return -1;
	}
	fcntl(s, F_SETFL, 0);
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
	return s;
}

/* Connect to the index at the first of its addresses that answers. */
static int
fwd_connect(const struct sandbox_forward *f)
{
	int i, s = -1;

	for (i = 0; i < f->sf_nto && s == -1; i++)
		s = fwd_connect_one(&f->sf_to[i], f->sf_tolen[i]);
	return s;
}

/* Copy what one side has to the other; 0 at its EOF, -1 on an error. */
static int
fwd_copy(int from, int to)
{
	static char buf[FWD_BUF];
	ssize_t n, w, off;

	if ((n = read(from, buf, sizeof(buf))) <= 0)
		return n == 0 ? 0 : -1;
	for (off = 0; off < n; off += w)
		if ((w = write(to, buf + off, (size_t)(n - off))) <= 0)
			return -1;
	return 1;
}

/* One connection's child: relay both ways until both sides are done. */
static void __attribute__((noreturn))
fwd_relay(const struct sandbox_forward *f, int in)
{
	struct pollfd pfd[2];
	int out, i, done = 0;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1 || getppid() == 1)
		_exit(1);
	if ((out = fwd_connect(f)) == -1) {
		log_warn("forwarder: connect to %s", f->sf_name);
		_exit(1);
	}
	pfd[0].fd = in;
	pfd[1].fd = out;
	pfd[0].events = pfd[1].events = POLLIN;
	while (done < 2) {
		if (poll(pfd, 2, -1) == -1) {
			if (errno == EINTR)
				continue;
			_exit(1);
		}
		for (i = 0; i < 2; i++) {
			if (pfd[i].revents == 0)
				continue;
			switch (fwd_copy(pfd[i].fd, pfd[1 - i].fd)) {
			case -1:
				_exit(1);
			case 0:
				/* Half-close: the other side may still talk. */
				shutdown(pfd[1 - i].fd, SHUT_WR);
				pfd[i].fd = -1;
				done++;
			}
		}
	}
	_exit(0);
}

/* Accept on the listeners and fork a relay for each connection. */
static void __attribute__((noreturn))
fwd_loop(const struct sandbox_conf *sc, const int *ls)
{
	struct pollfd pfd[SANDBOX_FORWARD_MAX];
	size_t i, n = sc->sc_n_forward;
	int c, live = 0;
	pid_t pid;

	for (i = 0; i < n; i++) {
		pfd[i].fd = ls[i];
		pfd[i].events = POLLIN;
	}
	for (;;) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			live--;
		if (poll(pfd, n, 500) <= 0)
			continue;
		for (i = 0; i < n; i++) {
			if (pfd[i].revents == 0 ||
			    (c = accept4(ls[i], NULL, NULL, SOCK_CLOEXEC)) ==
			        -1)
				continue;
			if (live >= FWD_MAX_CONNS || (pid = fork()) == -1) {
				log_warnx("forwarder: too many connections");
				close(c);
				continue;
			}
			if (pid == 0)
				fwd_relay(&sc->sc_forward[i], c);
			live++;
			close(c);
		}
	}
}

/* The forwarder process: listeners inside, then the builder's uid. */
static void __attribute__((noreturn))
fwd_main(const struct sandbox_conf *sc, pid_t target, int ready)
{
	int ls[SANDBOX_FORWARD_MAX], host;
	sigset_t none;

	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_IGN);
	/* None of W0's pipes: W1 must see W0's end of its own go away. */
	if (dup2(ready, 3) == -1)
		_exit(1);
	ready = 3;
	closefrom(4);
	if ((host = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)) == -1 ||
	    fwd_open_inside(sc, target, ls) == -1)
		_exit(1);
	if (setns(host, CLONE_NEWNET) == -1) {
		log_warn("forwarder: back to the host's network");
		_exit(1);
	}
	close(host);
	if (setgroups(0, NULL) == -1 ||
	    setresgid(sc->sc_gid, sc->sc_gid, sc->sc_gid) == -1 ||
	    setresuid(sc->sc_uid, sc->sc_uid, sc->sc_uid) == -1 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1) {
		log_warn("forwarder: drop to uid %u", (unsigned)sc->sc_uid);
		_exit(1);
	}
	if (getppid() == 1 || write(ready, "1", 1) != 1)
		_exit(1);
	close(ready);
	fwd_loop(sc, ls);
}

/*
 * In W0: start the forwarder for the build whose network namespace is
 * target's, and wait until its listeners are open. Returns its pid, 0
 * when there is nothing to forward, or -1.
 */
pid_t
sandbox_forward_start(const struct sandbox_conf *sc, pid_t target)
{
	struct pollfd pfd;
	int ready[2], n;
	char c = 0;
	pid_t pid;

	if (sc->sc_n_forward == 0)
		return 0;
	if (sc->sc_n_forward > SANDBOX_FORWARD_MAX) {
		log_warnx("more than %d index addresses", SANDBOX_FORWARD_MAX);
		return -1;
	}
	if (pipe2(ready, O_CLOEXEC) == -1) {
		log_warn("pipe");
		return -1;
	}
	if ((pid = fork()) == -1) {
		log_warn("fork");
		close(ready[0]);
		close(ready[1]);
		return -1;
	}
	if (pid == 0) {
		close(ready[0]);
		fwd_main(sc, target, ready[1]);
	}
	close(ready[1]);
	pfd.fd = ready[0];
	pfd.events = POLLIN;
	do
		n = poll(&pfd, 1, FWD_READY_MS);
	while (n == -1 && errno == EINTR);
	if (n <= 0 || read(ready[0], &c, 1) != 1 || c != '1') {
		log_warnx("the build's network forwarder did not start");
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		pid = -1;
	}
	close(ready[0]);
	return pid;
}
