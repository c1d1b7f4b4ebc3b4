/*
 * The worker's sandbox behind a small interface, so that it can be tested
 * alone and switched off for development (architecture section 5).
 *
 * Process layout when the sandbox is on (the worker is exec'd as root):
 *
 *   W0  remotemedia-worker, the front's child, host namespaces, root.
 *       sandbox_prepare(): joins the session's cgroup (created by the front
 *       with cg_create) before anything else runs; then
 *       unshares mount, PID, IPC, UTS (and network unless the policy is
 *       host) namespaces and forks W1. W0 only waits: it starts the user
 *       mode network stack for `isolated` and, from a short-lived child,
 *       loads the egress rules into W1's network namespace, relays W1's
 *       final status (the exact wait status of W2, over a pipe) as its own
 *       exit, and dies with the front (PR_SET_PDEATHSIG).
 *   W1  PID 1 of the new PID namespace: builds the minimal root with
 *       pivot_root, drops to the session uid, and forks W2; then it is the
 *       tiny init: it reaps orphans and forwards SIGTERM/SIGINT to W2.
 *   W2  the worker proper: sandbox_enter() applies rlimits, Landlock and,
 *       last, seccomp; then the embedded Python runs the session.
 *
 * sandbox_prepare returns in W2 (0) or never returns in W0/W1; it returns
 * -1 on a set-up failure, which the worker reports as a Fatal frame.
 */
#ifndef RM_SANDBOX_H
#define RM_SANDBOX_H

#include <sys/socket.h>
#include <sys/types.h>

#include <stddef.h>
#include <stdint.h>

enum sandbox_network {
	SANDBOX_NET_OFF, /* loopback only */
	SANDBOX_NET_ISOLATED, /* outbound through slirp4netns; no host loopback */
	SANDBOX_NET_HOST, /* the host's network namespace */
};

/*
 * A build's way to one index (sandbox_forward.c): pip connects to inside,
 * in the build's network namespace, and the forwarder to `to` on the host.
 */
#define SANDBOX_FORWARD_ADDRS 4
struct sandbox_forward {
	char sf_name[256]; /* host[:port], for messages */
	struct sockaddr_storage sf_inside;
	socklen_t sf_insidelen;
	struct sockaddr_storage
	    sf_to[SANDBOX_FORWARD_ADDRS]; /* tried in turn */
	socklen_t sf_tolen[SANDBOX_FORWARD_ADDRS];
	int sf_nto;
};
#define SANDBOX_FORWARD_MAX 32
#define SANDBOX_READABLE_MAX 32

/* What the sandbox needs to know about the session. */
struct sandbox_conf {
	const char *sc_session_id;
	const char *sc_session_dir; /* host path; becomes the cwd */
	int sc_enabled; /* 0: the null sandbox (--sandbox off) */
	uid_t sc_uid; /* the session's own uid and gid */
	gid_t sc_gid;
	enum sandbox_network sc_network;
	const char *sc_cgroup; /* cgroup path(s) to join, ':'-separated */
	const char *sc_env_dir; /* env cache entry to bind read-only, or NULL */
	uint64_t sc_disk_bytes; /* size of the session dir and /tmp tmpfs */
	uint64_t sc_memory_bytes;
	uint32_t sc_pids;
	uint32_t sc_cpu_percent;
	uint64_t sc_cpu_seconds; /* RLIMIT_CPU backstop; 0: none */
	int sc_seccomp_log; /* log violations instead of killing */
	/* Isolated network: CIDRs reached despite the policy's denials, and
	 * CIDRs denied besides them (sandbox_egress.c). */
	const char *const *sc_egress_allow;
	size_t sc_n_egress_allow;
	const char *const *sc_egress_deny;
	size_t sc_n_egress_deny;
	char *sc_egress_rules; /* the ruleset, made before the clone */
	int sc_status_fd; /* W2 -> W0: a seccomp violation's syscall */
	/*
	 * The environment builder's sandbox: sc_session_dir is the entry
	 * being built, bound read-write from the host rather than a fresh
	 * tmpfs, and stderr stays the builder's (the front shows it as the
	 * build's output). The network is SANDBOX_NET_OFF plus forwards to
	 * the indexes, whose names sc_hosts maps in /etc/hosts.
	 */
	int sc_build;
	const char *sc_hosts; /* lines added to /etc/hosts */
	const struct sandbox_forward *sc_forward;
	size_t sc_n_forward;
	/* Host directories bound read-only (if not in the root yet) and
	 * readable under Landlock, besides the environment. */
	const char *const *sc_readable;
	size_t sc_n_readable;
};

/* RLIMIT_NOFILE of a session's processes. */
#define SANDBOX_NOFILE 1024

int sandbox_prepare(struct sandbox_conf *);
int sandbox_enter(struct sandbox_conf *);
const char *sandbox_error(void);

#endif
