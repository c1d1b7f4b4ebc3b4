/*
 * The worker's seccomp policy (architecture section 5, step 7), loaded last
 * in W2, in the manner of OpenSSH's sandbox-seccomp-filter.c: one readable
 * table, one line per syscall, in three sections.
 *
 *   deny softly  the call fails with an errno, and the process goes on;
 *   allow        what CPython, numpy, pandas, scipy, scikit-learn,
 *                matplotlib, requests, threads and subprocesses use
 *                (syscalls-observed.md), and what a healthy process
 *                plausibly needs beyond that census;
 *   default      everything else: SIGSYS. Only x86_64 is allowed; another
 *                architecture, or the x32 ABI, is killed outright.
 *
 * Two filters are loaded. libseccomp cannot express "allow ioctl except
 * TIOCSTI" in one filter: an unconditional rule silently replaces the
 * conditional ones of the same syscall. So the table's EXCEPT lines go to
 * a small second filter whose default is to allow; the kernel runs both
 * and the most restrictive answer wins, so an EXCEPT's errno beats the
 * main filter's ALLOW. Comparisons on int arguments look at the low 32
 * bits only (LO32), as the kernel does, so high garbage bits cannot slip
 * a value past a rule; allow rules compare all 64 bits (EQ), so such
 * values fall to the default.
 *
 * A violation traps: the SIGSYS handler writes "seccomp <nr>\n" to the
 * status fd, names the syscall on stderr and dies by SIGSYS. That is a
 * diagnostic, not the boundary: the trapped syscall never runs, whatever
 * the handler does. rt_sigaction(SIGSYS, act) fails with EPERM so that
 * user code cannot replace the handler and carry on; blocking or ignoring
 * SIGSYS only makes the kernel kill without the name. The handler is
 * SA_RESETHAND for the same reason: it could not reset itself.
 *
 * With log_only the default is SCMP_ACT_LOG (violations go to the audit
 * log and the call runs); the soft denials still apply.
 */
/* The tables below are laid out by hand. */
/* clang-format off */
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <linux/netlink.h>

#include <errno.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sandbox_policy.h"

#ifndef SYS_SECCOMP
#define SYS_SECCOMP	1	/* si_code of a seccomp SIGSYS */
#endif

/*
 * Syscalls newer than libseccomp 2.5's tables, by their x86_64 numbers (the
 * policy is loaded on x86_64 only): fchmodat2 is Linux 6.6's fchmodat with
 * flags, which newer C libraries call for lchmod.
 */
#ifndef __NR_fchmodat2
#define __NR_fchmodat2	452
#endif

/* Which filter a rule goes to. */
#define SC_MAIN		0
#define SC_EXCEPT	1	/* refines an unconditional ALLOW */
/* A table-only action: the default, listed so a reader sees it was meant. */
#define SC_DEFAULT	SCMP_ACT_KILL_PROCESS

struct sc_rule {
	int			 r_nr;
	const char		*r_name;
	uint32_t		 r_action;
	int			 r_filter;
	unsigned int		 r_argc;
	struct scmp_arg_cmp	 r_arg[2];
};

/* SCMP_SYS: libseccomp's number, a negative pseudo-number for a syscall
 * this architecture lacks, whose rule sc_add_rules skips (-EDOM). */
#define SC_RULE(sys, act, f, n, ...) \
	{ SCMP_SYS(sys), #sys, (act), (f), (n), { __VA_ARGS__ } }
#define ALLOW(sys)		SC_RULE(sys, SCMP_ACT_ALLOW, SC_MAIN, 0)
#define ALLOW_IF(sys, a)	SC_RULE(sys, SCMP_ACT_ALLOW, SC_MAIN, 1, a)
#define ALLOW_IF2(sys, a, b)	SC_RULE(sys, SCMP_ACT_ALLOW, SC_MAIN, 2, a, b)
#define DENY(sys, e)		SC_RULE(sys, SCMP_ACT_ERRNO(e), SC_MAIN, 0)
#define DENY_IF(sys, e, a)	SC_RULE(sys, SCMP_ACT_ERRNO(e), SC_MAIN, 1, a)
#define DENY_IF2(sys, e, a, b)	\
	SC_RULE(sys, SCMP_ACT_ERRNO(e), SC_MAIN, 2, a, b)
#define EXCEPT(sys, e, a)	SC_RULE(sys, SCMP_ACT_ERRNO(e), SC_EXCEPT, 1, a)
#define EXCEPT2(sys, e, a, b)	\
	SC_RULE(sys, SCMP_ACT_ERRNO(e), SC_EXCEPT, 2, a, b)
#define KILL(sys)		SC_RULE(sys, SC_DEFAULT, SC_MAIN, 0)

/* Argument comparisons. */
#define SC_CMP(n, cmp, a, b) \
	{ .arg = (n), .op = (cmp), .datum_a = (a), .datum_b = (b) }
#define EQ(n, v)	SC_CMP(n, SCMP_CMP_EQ, (v), 0)		/* 64 bits */
#define NE(n, v)	SC_CMP(n, SCMP_CMP_NE, (v), 0)
#define GE(n, v)	SC_CMP(n, SCMP_CMP_GE, (v), 0)
#define MASK(n, m, v)	SC_CMP(n, SCMP_CMP_MASKED_EQ, (m), (v))	/* a&m == v */
#define LO32(n, v)	MASK(n, 0xffffffffULL, (v))		/* int args */
#define HAS(n, bits)	MASK(n, (bits), (bits))
#define STYPE(n, t)	MASK(n, SC_SOCK_TYPE, (t))	/* socket type */

#define SC_CLONE_NS	(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | \
	CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWCGROUP)
#define SC_SOCK_TYPE	0xf	/* SOCK_TYPE_MASK: type without its flags */

static const struct sc_rule sc_policy[] = {
	/* --- deny softly ------------------------------------------------ */
	/* glibc falls back to clone on ENOSYS; EPERM would fail threads. */
	DENY(clone3, ENOSYS),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWNS)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWUTS)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWIPC)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWUSER)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWPID)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWNET)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWCGROUP)),
	DENY_IF(socket, EPERM, EQ(0, AF_PACKET)),
	DENY_IF2(socket, EPERM, EQ(0, AF_INET), STYPE(1, SOCK_RAW)),
	DENY_IF2(socket, EPERM, EQ(0, AF_INET6), STYPE(1, SOCK_RAW)),
	DENY_IF2(socket, EPERM, EQ(0, AF_NETLINK), NE(2, NETLINK_ROUTE)),
	/* Families above AF_PACKET: bluetooth, alg, vsock, xdp... */
	DENY_IF(socket, EAFNOSUPPORT, GE(0, AF_PACKET + 1)),
	EXCEPT(ioctl, EPERM, LO32(1, TIOCSTI)),
	EXCEPT(ioctl, EPERM, LO32(1, TIOCLINUX)),
	EXCEPT(prctl, EPERM, LO32(0, PR_SET_MM)),
	EXCEPT(prctl, EPERM, LO32(0, PR_SET_PTRACER)),
	EXCEPT2(rt_sigaction, EPERM, LO32(0, SIGSYS), NE(1, 0)),
	EXCEPT(mknod, EPERM, MASK(1, S_IFMT, S_IFCHR)),
	EXCEPT(mknod, EPERM, MASK(1, S_IFMT, S_IFBLK)),
	EXCEPT(mknodat, EPERM, MASK(2, S_IFMT, S_IFCHR)),
	EXCEPT(mknodat, EPERM, MASK(2, S_IFMT, S_IFBLK)),
	DENY(io_uring_setup, EPERM),
	DENY(io_uring_enter, EPERM),
	DENY(io_uring_register, EPERM),
	/* Linux AIO: ENOSYS, so that libraries fall back to threads. */
	DENY(io_setup, ENOSYS),
	DENY(io_destroy, ENOSYS),
	DENY(io_submit, ENOSYS),
	DENY(io_cancel, ENOSYS),
	DENY(io_getevents, ENOSYS),
	DENY(io_pgetevents, ENOSYS),
	DENY(ptrace, EPERM),
	DENY(kcmp, EPERM),
	DENY(process_vm_readv, EPERM),
	DENY(process_vm_writev, EPERM),
	DENY(process_madvise, EPERM),
	DENY(pidfd_getfd, EPERM),
	DENY(bpf, EPERM),
	DENY(perf_event_open, EPERM),
	DENY(userfaultfd, EPERM),
	DENY(mount, EPERM),
	DENY(umount2, EPERM),
	DENY(pivot_root, EPERM),
	DENY(chroot, EPERM),
	DENY(open_tree, EPERM),
	DENY(move_mount, EPERM),
	DENY(fsopen, EPERM),
	DENY(fsconfig, EPERM),
	DENY(fsmount, EPERM),
	DENY(fspick, EPERM),
	DENY(mount_setattr, EPERM),
	DENY(setns, EPERM),
	DENY(unshare, EPERM),
	DENY(keyctl, EPERM),
	DENY(add_key, EPERM),
	DENY(request_key, EPERM),
	DENY(kexec_load, EPERM),
	DENY(kexec_file_load, EPERM),
	DENY(init_module, EPERM),
	DENY(finit_module, EPERM),
	DENY(delete_module, EPERM),
	DENY(swapon, EPERM),
	DENY(swapoff, EPERM),
	DENY(reboot, EPERM),
	DENY(acct, EPERM),
	DENY(syslog, EPERM),
	DENY(sethostname, EPERM),
	DENY(setdomainname, EPERM),
	DENY(settimeofday, EPERM),
	DENY(clock_settime, EPERM),
	DENY(adjtimex, EPERM),
	DENY(clock_adjtime, EPERM),
	DENY(open_by_handle_at, EPERM),
	DENY(name_to_handle_at, EPERM),
	DENY(lookup_dcookie, EPERM),
	DENY(quotactl, EPERM),
	DENY(quotactl_fd, EPERM),
	DENY(fanotify_init, EPERM),
	DENY(fanotify_mark, EPERM),
	/* The uid is already dropped: identity changes fail as they would. */
	DENY(setuid, EPERM),
	DENY(setgid, EPERM),
	DENY(setreuid, EPERM),
	DENY(setregid, EPERM),
	DENY(setresuid, EPERM),
	DENY(setresgid, EPERM),
	DENY(setgroups, EPERM),
	DENY(setfsuid, EPERM),
	DENY(setfsgid, EPERM),
	DENY(capset, EPERM),

	/* --- allow: files ----------------------------------------------- */
	ALLOW(read),
	ALLOW(write),
	ALLOW(open),
	ALLOW(openat),
	ALLOW(openat2),
	ALLOW(creat),
	ALLOW(close),
	ALLOW(close_range),
	ALLOW(lseek),
	ALLOW(pread64),
	ALLOW(pwrite64),
	ALLOW(readv),
	ALLOW(writev),
	ALLOW(preadv),
	ALLOW(pwritev),
	ALLOW(preadv2),
	ALLOW(pwritev2),
	ALLOW(dup),
	ALLOW(dup2),
	ALLOW(dup3),
	ALLOW(fcntl),
	ALLOW(flock),
	ALLOW(ioctl),		/* except TIOCSTI, TIOCLINUX */
	ALLOW(stat),
	ALLOW(fstat),
	ALLOW(lstat),
	ALLOW(newfstatat),
	ALLOW(statx),
	ALLOW(statfs),
	ALLOW(fstatfs),
	ALLOW(getdents),
	ALLOW(getdents64),
	ALLOW(access),
	ALLOW(faccessat),
	ALLOW(faccessat2),
	ALLOW(readlink),
	ALLOW(readlinkat),
	ALLOW(getcwd),
	ALLOW(chdir),
	ALLOW(fchdir),
	ALLOW(umask),
	ALLOW(mkdir),
	ALLOW(mkdirat),
	ALLOW(rmdir),
	ALLOW(unlink),
	ALLOW(unlinkat),
	ALLOW(rename),
	ALLOW(renameat),
	ALLOW(renameat2),
	ALLOW(link),
	ALLOW(linkat),
	ALLOW(symlink),
	ALLOW(symlinkat),
	ALLOW(mknod),		/* FIFOs, sockets, files; not devices */
	ALLOW(mknodat),
	ALLOW(chmod),
	ALLOW(fchmod),
	ALLOW(fchmodat),
	ALLOW(fchmodat2),
	ALLOW(chown),
	ALLOW(fchown),
	ALLOW(lchown),
	ALLOW(fchownat),
	ALLOW(truncate),
	ALLOW(ftruncate),
	ALLOW(fallocate),
	ALLOW(fsync),
	ALLOW(fdatasync),
	ALLOW(sync),
	ALLOW(syncfs),
	ALLOW(sync_file_range),
	ALLOW(fadvise64),
	ALLOW(readahead),
	ALLOW(utime),
	ALLOW(utimes),
	ALLOW(futimesat),
	ALLOW(utimensat),
	ALLOW(sendfile),
	ALLOW(copy_file_range),
	ALLOW(splice),
	ALLOW(tee),
	ALLOW(vmsplice),
	ALLOW(getxattr),	/* shutil.copy2 copies xattrs */
	ALLOW(lgetxattr),
	ALLOW(fgetxattr),
	ALLOW(listxattr),
	ALLOW(llistxattr),
	ALLOW(flistxattr),
	ALLOW(setxattr),
	ALLOW(lsetxattr),
	ALLOW(fsetxattr),
	ALLOW(removexattr),
	ALLOW(lremovexattr),
	ALLOW(fremovexattr),
	ALLOW(inotify_init),
	ALLOW(inotify_init1),
	ALLOW(inotify_add_watch),
	ALLOW(inotify_rm_watch),
	ALLOW(memfd_create),

	/* --- allow: memory ---------------------------------------------- */
	ALLOW(brk),
	ALLOW(mmap),
	ALLOW(munmap),
	ALLOW(mprotect),
	ALLOW(mremap),
	ALLOW(madvise),
	ALLOW(msync),		/* numpy.memmap flush */
	ALLOW(mincore),
	ALLOW(mlock),
	ALLOW(mlock2),
	ALLOW(munlock),
	ALLOW(mlockall),	/* bounded by RLIMIT_MEMLOCK */
	ALLOW(munlockall),
	ALLOW(membarrier),
	ALLOW(pkey_mprotect),
	ALLOW(pkey_alloc),
	ALLOW(pkey_free),
	ALLOW(get_mempolicy),	/* NUMA-aware BLAS and OpenMP */
	ALLOW(set_mempolicy),
	ALLOW(mbind),
	ALLOW_IF(move_pages, EQ(0, 0)),	/* own pages only (hwloc queries) */

	/* --- allow: time ------------------------------------------------ */
	ALLOW(clock_gettime),
	ALLOW(clock_getres),
	ALLOW(clock_nanosleep),
	ALLOW(nanosleep),
	ALLOW(gettimeofday),
	ALLOW(time),
	ALLOW(times),
	ALLOW(alarm),
	ALLOW(getitimer),
	ALLOW(setitimer),
	ALLOW(timer_create),
	ALLOW(timer_settime),
	ALLOW(timer_gettime),
	ALLOW(timer_getoverrun),
	ALLOW(timer_delete),
	ALLOW(timerfd_create),
	ALLOW(timerfd_settime),
	ALLOW(timerfd_gettime),

	/* --- allow: signals --------------------------------------------- */
	ALLOW(rt_sigaction),	/* except installing a SIGSYS handler */
	ALLOW(rt_sigprocmask),
	ALLOW(rt_sigreturn),
	ALLOW(rt_sigpending),
	ALLOW(rt_sigtimedwait),
	ALLOW(rt_sigsuspend),
	ALLOW(rt_sigqueueinfo),
	ALLOW(rt_tgsigqueueinfo),
	ALLOW(sigaltstack),	/* faulthandler */
	ALLOW(signalfd),
	ALLOW(signalfd4),
	ALLOW(kill),		/* the session's PID namespace only */
	ALLOW(tkill),
	ALLOW(tgkill),
	ALLOW(pause),
	ALLOW(restart_syscall),
	ALLOW(pidfd_open),
	ALLOW(pidfd_send_signal),

	/* --- allow: processes and threads ------------------------------- */
	ALLOW_IF(clone, MASK(0, SC_CLONE_NS, 0)),	/* fork, threads */
	ALLOW(fork),
	ALLOW(vfork),		/* _posixsubprocess */
	ALLOW(execve),
	ALLOW(execveat),
	ALLOW(exit),
	ALLOW(exit_group),
	ALLOW(wait4),
	ALLOW(waitid),
	ALLOW(set_tid_address),
	ALLOW(set_robust_list),
	ALLOW(get_robust_list),
	ALLOW(rseq),
	ALLOW(futex),
	ALLOW(futex_waitv),
	ALLOW(arch_prctl),
	ALLOW(prctl),		/* except PR_SET_MM, PR_SET_PTRACER */
	ALLOW_IF(personality, EQ(0, 0)),		/* PER_LINUX */
	ALLOW_IF(personality, EQ(0, 0xffffffffULL)),	/* the query */
	ALLOW(seccomp),		/* stacking only ever narrows */
	ALLOW(landlock_create_ruleset),
	ALLOW(landlock_add_rule),
	ALLOW(landlock_restrict_self),
	ALLOW(getpid),
	ALLOW(getppid),
	ALLOW(gettid),
	ALLOW(getuid),
	ALLOW(geteuid),
	ALLOW(getgid),
	ALLOW(getegid),
	ALLOW(getresuid),
	ALLOW(getresgid),
	ALLOW(getgroups),
	ALLOW(getpgid),
	ALLOW(getpgrp),
	ALLOW(setpgid),
	ALLOW(getsid),
	ALLOW(setsid),
	ALLOW(capget),
	ALLOW(getrusage),
	ALLOW(getrlimit),
	ALLOW(setrlimit),	/* hard limits only go down */
	ALLOW(prlimit64),
	ALLOW(getpriority),
	ALLOW(setpriority),
	ALLOW(ioprio_get),
	ALLOW(sched_yield),
	ALLOW(sched_getaffinity),
	ALLOW(sched_setaffinity),
	ALLOW(sched_getparam),
	ALLOW(sched_setparam),	/* realtime needs a capability */
	ALLOW(sched_getscheduler),
	ALLOW(sched_setscheduler),
	ALLOW(sched_getattr),
	ALLOW(sched_setattr),
	ALLOW(sched_get_priority_max),
	ALLOW(sched_get_priority_min),
	ALLOW(sched_rr_get_interval),
	ALLOW(getcpu),
	ALLOW(getrandom),
	ALLOW(sysinfo),
	ALLOW(uname),

	/* --- allow: polling, pipes, IPC --------------------------------- */
	ALLOW(poll),
	ALLOW(ppoll),
	ALLOW(select),
	ALLOW(pselect6),
	ALLOW(epoll_create),
	ALLOW(epoll_create1),
	ALLOW(epoll_ctl),
	ALLOW(epoll_wait),
	ALLOW(epoll_pwait),
	ALLOW(epoll_pwait2),
	ALLOW(eventfd),
	ALLOW(eventfd2),
	ALLOW(pipe),
	ALLOW(pipe2),
	ALLOW(shmget),		/* the IPC namespace is the session's */
	ALLOW(shmat),
	ALLOW(shmdt),
	ALLOW(shmctl),
	ALLOW(semget),
	ALLOW(semop),
	ALLOW(semtimedop),
	ALLOW(semctl),
	ALLOW(msgget),
	ALLOW(msgsnd),
	ALLOW(msgrcv),
	ALLOW(msgctl),
	ALLOW(mq_open),
	ALLOW(mq_unlink),
	ALLOW(mq_timedsend),
	ALLOW(mq_timedreceive),
	ALLOW(mq_notify),
	ALLOW(mq_getsetattr),

	/* --- allow: sockets --------------------------------------------- */
	ALLOW_IF(socket, EQ(0, AF_UNIX)),
	ALLOW_IF2(socket, EQ(0, AF_INET), STYPE(1, SOCK_STREAM)),
	ALLOW_IF2(socket, EQ(0, AF_INET), STYPE(1, SOCK_DGRAM)),
	ALLOW_IF2(socket, EQ(0, AF_INET6), STYPE(1, SOCK_STREAM)),
	ALLOW_IF2(socket, EQ(0, AF_INET6), STYPE(1, SOCK_DGRAM)),
	ALLOW_IF2(socket, EQ(0, AF_NETLINK), EQ(2, NETLINK_ROUTE)),
	ALLOW_IF(socketpair, EQ(0, AF_UNIX)),
	ALLOW(bind),
	ALLOW(listen),
	ALLOW(accept),
	ALLOW(accept4),
	ALLOW(connect),
	ALLOW(getsockname),
	ALLOW(getpeername),
	ALLOW(sendto),
	ALLOW(recvfrom),
	ALLOW(sendmsg),
	ALLOW(recvmsg),
	ALLOW(sendmmsg),
	ALLOW(recvmmsg),
	ALLOW(shutdown),
	ALLOW(setsockopt),
	ALLOW(getsockopt),

	/* --- default: SIGSYS; these are listed only to show intent ------- */
	KILL(modify_ldt),
	KILL(iopl),
	KILL(ioperm),
	KILL(vhangup),
	KILL(uselib),
	KILL(ustat),
	KILL(sysfs),
	KILL(migrate_pages),
	KILL(remap_file_pages),
	KILL(ioprio_set),
	KILL(memfd_secret),
};

/* Syscall names, resolved before the filter so the handler can read them. */
#define SC_NAMES	512
#define SC_NAMELEN	32
static char sc_names[SC_NAMES][SC_NAMELEN];
static int sc_names_done;
static int sc_status_fd = -1;

/* Resolve every native syscall number below SC_NAMES once. */
static void
sc_names_fill(void)
{
	char *name;
	int nr;

	if (sc_names_done)
		return;
	for (nr = 0; nr < SC_NAMES; nr++) {
		name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
		if (name == NULL)
			continue;
		strncpy(sc_names[nr], name, SC_NAMELEN - 1);
		free(name);
	}
	sc_names_done = 1;
}

const char *
sandbox_seccomp_name(int nr)
{
	static __thread char unknown[32];

	sc_names_fill();
	if (nr >= 0 && nr < SC_NAMES && sc_names[nr][0] != '\0')
		return sc_names[nr];
	snprintf(unknown, sizeof(unknown), "syscall %d", nr);
	return unknown;
}

/* Append s to buf at *off, async-signal-safely. */
static void
sc_append(char *buf, size_t size, size_t *off, const char *s)
{
	while (*s != '\0' && *off + 1 < size)
		buf[(*off)++] = *s++;
	buf[*off] = '\0';
}

/* Append a decimal number, async-signal-safely. */
static void
sc_append_num(char *buf, size_t size, size_t *off, int v)
{
	char tmp[16];
	unsigned int u = v < 0 ? 0U - (unsigned int)v : (unsigned int)v;
	size_t i = sizeof(tmp) - 1;

	tmp[i] = '\0';
	do {
		tmp[--i] = (char)('0' + u % 10);
		u /= 10;
	} while (u != 0 && i > 1);
	if (v < 0)
		tmp[--i] = '-';
	sc_append(buf, size, off, tmp + i);
}

/* Record the trapped syscall on the status fd and name it on stderr. */
static void
sc_report(int nr)
{
	char buf[128];
	size_t off = 0;
	const char *name = "unknown";
	ssize_t rc;

	if (nr >= 0 && nr < SC_NAMES && sc_names[nr][0] != '\0')
		name = sc_names[nr];
	if (sc_status_fd >= 0) {
		sc_append(buf, sizeof(buf), &off, "seccomp ");
		sc_append_num(buf, sizeof(buf), &off, nr);
		sc_append(buf, sizeof(buf), &off, "\n");
		rc = write(sc_status_fd, buf, off);
		off = 0;
	}
	sc_append(buf, sizeof(buf), &off,
	    "remotemedia: seccomp: blocked syscall ");
	sc_append(buf, sizeof(buf), &off, name);
	sc_append(buf, sizeof(buf), &off, " (");
	sc_append_num(buf, sizeof(buf), &off, nr);
	sc_append(buf, sizeof(buf), &off, ")\n");
	rc = write(STDERR_FILENO, buf, off);
	(void)rc;
}

/*
 * The SIGSYS handler. SA_RESETHAND has already put back SIG_DFL (the filter
 * would refuse rt_sigaction here), so raising SIGSYS again ends the process
 * with that signal, which W1 and W0 relay as the session's end.
 */
static void
sc_sigsys(int sig, siginfo_t *si, void *uctx)
{
	sigset_t set;

	if (si->si_code == SYS_SECCOMP)
		sc_report(si->si_syscall);
	sigemptyset(&set);
	sigaddset(&set, SIGSYS);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(SIGSYS);
	_exit(128 + SIGSYS);
}

/* Install the handler; it must precede the filter, which forbids it. */
static int
sc_install_handler(int status_fd)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = sc_sigsys;
	sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	sc_status_fd = status_fd;
	if (sigaction(SIGSYS, &sa, NULL) == -1) {
		log_warn("%s: sigaction SIGSYS", __func__);
		return -1;
	}
	return 0;
}

/* A filter for the native architecture only; x32 and others are killed. */
static scmp_filter_ctx
sc_new(uint32_t def)
{
	scmp_filter_ctx ctx;

	if ((ctx = seccomp_init(def)) == NULL) {
		log_warnx("%s: seccomp_init failed", __func__);
		return NULL;
	}
	if (seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH,
	    SCMP_ACT_KILL_PROCESS) != 0 ||
	    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 1) != 0 ||
	    seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1) != 0) {
		log_warnx("%s: seccomp_attr_set failed", __func__);
		seccomp_release(ctx);
		return NULL;
	}
	/* A binary tree over syscall numbers rather than a long chain. */
	if (seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2) != 0)
		log_debug("%s: no binary-tree optimisation", __func__);
	return ctx;
}

/* Add the table's rules to the main and the except filter. */
static int
sc_add_rules(scmp_filter_ctx main_ctx, scmp_filter_ctx except_ctx)
{
	const struct sc_rule *r;
	size_t i;
	int rc;

	for (i = 0; i < sizeof(sc_policy) / sizeof(sc_policy[0]); i++) {
		r = &sc_policy[i];
		if (r->r_action == SC_DEFAULT)
			continue;
		rc = seccomp_rule_add_exact_array(r->r_filter == SC_EXCEPT ?
		    except_ctx : main_ctx, r->r_action, r->r_nr, r->r_argc,
		    r->r_arg);
		if (rc == -EDOM) {	/* not a syscall of this architecture */
			log_debug("%s: %s: skipped", __func__, r->r_name);
			continue;
		}
		if (rc != 0) {
			log_warnx("%s: %s: %s", __func__, r->r_name,
			    strerror(-rc));
			return -1;
		}
	}
	return 0;
}

/* Load the except filter first: it lets the main filter's seccomp() in. */
static int
sc_load(scmp_filter_ctx main_ctx, scmp_filter_ctx except_ctx)
{
	int rc;

	if ((rc = seccomp_load(except_ctx)) != 0 ||
	    (rc = seccomp_load(main_ctx)) != 0) {
		log_warnx("%s: seccomp_load: %s", __func__, strerror(-rc));
		return -1;
	}
	return 0;
}

int
sandbox_seccomp_load(int log_only, int status_fd)
{
	scmp_filter_ctx main_ctx = NULL, except_ctx = NULL;
	int rc = -1;

	if (seccomp_arch_native() != SCMP_ARCH_X86_64) {
		log_warnx("%s: the policy is written for x86_64 only",
		    __func__);
		return -1;
	}
	sc_names_fill();
	if ((main_ctx = sc_new(log_only ? SCMP_ACT_LOG : SCMP_ACT_TRAP)) ==
	    NULL || (except_ctx = sc_new(SCMP_ACT_ALLOW)) == NULL)
		goto out;
	if (sc_add_rules(main_ctx, except_ctx) == -1)
		goto out;
	if (!log_only && sc_install_handler(status_fd) == -1)
		goto out;
	if (sc_load(main_ctx, except_ctx) == -1)
		goto out;
	log_debug("%s: %s, %zu rules", __func__, log_only ?
	    "logging violations" : "enforcing",
	    sizeof(sc_policy) / sizeof(sc_policy[0]));
	rc = 0;
out:
	if (main_ctx != NULL)
		seccomp_release(main_ctx);
	if (except_ctx != NULL)
		seccomp_release(except_ctx);
	return rc;
}
/* clang-format on */
