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

#define SC_RULE(sys, act, f, n, ...) \
	{ __NR_##sys, #sys, (act), (f), (n), { __VA_ARGS__ } }
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
#ifdef __NR_clone3
	DENY(clone3, ENOSYS),
#endif
#ifdef __NR_clone
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWNS)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWUTS)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWIPC)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWUSER)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWPID)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWNET)),
	DENY_IF(clone, EPERM, HAS(0, CLONE_NEWCGROUP)),
#endif
#ifdef __NR_socket
	DENY_IF(socket, EPERM, EQ(0, AF_PACKET)),
	DENY_IF2(socket, EPERM, EQ(0, AF_INET), STYPE(1, SOCK_RAW)),
	DENY_IF2(socket, EPERM, EQ(0, AF_INET6), STYPE(1, SOCK_RAW)),
	DENY_IF2(socket, EPERM, EQ(0, AF_NETLINK), NE(2, NETLINK_ROUTE)),
	/* Families above AF_PACKET: bluetooth, alg, vsock, xdp... */
	DENY_IF(socket, EAFNOSUPPORT, GE(0, AF_PACKET + 1)),
#endif
#ifdef __NR_ioctl
	EXCEPT(ioctl, EPERM, LO32(1, TIOCSTI)),
	EXCEPT(ioctl, EPERM, LO32(1, TIOCLINUX)),
#endif
#ifdef __NR_prctl
	EXCEPT(prctl, EPERM, LO32(0, PR_SET_MM)),
	EXCEPT(prctl, EPERM, LO32(0, PR_SET_PTRACER)),
#endif
#ifdef __NR_rt_sigaction
	EXCEPT2(rt_sigaction, EPERM, LO32(0, SIGSYS), NE(1, 0)),
#endif
#ifdef __NR_mknod
	EXCEPT(mknod, EPERM, MASK(1, S_IFMT, S_IFCHR)),
	EXCEPT(mknod, EPERM, MASK(1, S_IFMT, S_IFBLK)),
#endif
#ifdef __NR_mknodat
	EXCEPT(mknodat, EPERM, MASK(2, S_IFMT, S_IFCHR)),
	EXCEPT(mknodat, EPERM, MASK(2, S_IFMT, S_IFBLK)),
#endif
#ifdef __NR_io_uring_setup
	DENY(io_uring_setup, EPERM),
#endif
#ifdef __NR_io_uring_enter
	DENY(io_uring_enter, EPERM),
#endif
#ifdef __NR_io_uring_register
	DENY(io_uring_register, EPERM),
#endif
	/* Linux AIO: ENOSYS, so that libraries fall back to threads. */
#ifdef __NR_io_setup
	DENY(io_setup, ENOSYS),
#endif
#ifdef __NR_io_destroy
	DENY(io_destroy, ENOSYS),
#endif
#ifdef __NR_io_submit
	DENY(io_submit, ENOSYS),
#endif
#ifdef __NR_io_cancel
	DENY(io_cancel, ENOSYS),
#endif
#ifdef __NR_io_getevents
	DENY(io_getevents, ENOSYS),
#endif
#ifdef __NR_io_pgetevents
	DENY(io_pgetevents, ENOSYS),
#endif
#ifdef __NR_ptrace
	DENY(ptrace, EPERM),
#endif
#ifdef __NR_kcmp
	DENY(kcmp, EPERM),
#endif
#ifdef __NR_process_vm_readv
	DENY(process_vm_readv, EPERM),
#endif
#ifdef __NR_process_vm_writev
	DENY(process_vm_writev, EPERM),
#endif
#ifdef __NR_process_madvise
	DENY(process_madvise, EPERM),
#endif
#ifdef __NR_pidfd_getfd
	DENY(pidfd_getfd, EPERM),
#endif
#ifdef __NR_bpf
	DENY(bpf, EPERM),
#endif
#ifdef __NR_perf_event_open
	DENY(perf_event_open, EPERM),
#endif
#ifdef __NR_userfaultfd
	DENY(userfaultfd, EPERM),
#endif
#ifdef __NR_mount
	DENY(mount, EPERM),
#endif
#ifdef __NR_umount2
	DENY(umount2, EPERM),
#endif
#ifdef __NR_pivot_root
	DENY(pivot_root, EPERM),
#endif
#ifdef __NR_chroot
	DENY(chroot, EPERM),
#endif
#ifdef __NR_open_tree
	DENY(open_tree, EPERM),
#endif
#ifdef __NR_move_mount
	DENY(move_mount, EPERM),
#endif
#ifdef __NR_fsopen
	DENY(fsopen, EPERM),
#endif
#ifdef __NR_fsconfig
	DENY(fsconfig, EPERM),
#endif
#ifdef __NR_fsmount
	DENY(fsmount, EPERM),
#endif
#ifdef __NR_fspick
	DENY(fspick, EPERM),
#endif
#ifdef __NR_mount_setattr
	DENY(mount_setattr, EPERM),
#endif
#ifdef __NR_setns
	DENY(setns, EPERM),
#endif
#ifdef __NR_unshare
	DENY(unshare, EPERM),
#endif
#ifdef __NR_keyctl
	DENY(keyctl, EPERM),
#endif
#ifdef __NR_add_key
	DENY(add_key, EPERM),
#endif
#ifdef __NR_request_key
	DENY(request_key, EPERM),
#endif
#ifdef __NR_kexec_load
	DENY(kexec_load, EPERM),
#endif
#ifdef __NR_kexec_file_load
	DENY(kexec_file_load, EPERM),
#endif
#ifdef __NR_init_module
	DENY(init_module, EPERM),
#endif
#ifdef __NR_finit_module
	DENY(finit_module, EPERM),
#endif
#ifdef __NR_delete_module
	DENY(delete_module, EPERM),
#endif
#ifdef __NR_swapon
	DENY(swapon, EPERM),
#endif
#ifdef __NR_swapoff
	DENY(swapoff, EPERM),
#endif
#ifdef __NR_reboot
	DENY(reboot, EPERM),
#endif
#ifdef __NR_acct
	DENY(acct, EPERM),
#endif
#ifdef __NR_syslog
	DENY(syslog, EPERM),
#endif
#ifdef __NR_sethostname
	DENY(sethostname, EPERM),
#endif
#ifdef __NR_setdomainname
	DENY(setdomainname, EPERM),
#endif
#ifdef __NR_settimeofday
	DENY(settimeofday, EPERM),
#endif
#ifdef __NR_clock_settime
	DENY(clock_settime, EPERM),
#endif
#ifdef __NR_adjtimex
	DENY(adjtimex, EPERM),
#endif
#ifdef __NR_clock_adjtime
	DENY(clock_adjtime, EPERM),
#endif
#ifdef __NR_open_by_handle_at
	DENY(open_by_handle_at, EPERM),
#endif
#ifdef __NR_name_to_handle_at
	DENY(name_to_handle_at, EPERM),
#endif
#ifdef __NR_lookup_dcookie
	DENY(lookup_dcookie, EPERM),
#endif
#ifdef __NR_quotactl
	DENY(quotactl, EPERM),
#endif
#ifdef __NR_quotactl_fd
	DENY(quotactl_fd, EPERM),
#endif
#ifdef __NR_fanotify_init
	DENY(fanotify_init, EPERM),
#endif
#ifdef __NR_fanotify_mark
	DENY(fanotify_mark, EPERM),
#endif
	/* The uid is already dropped: identity changes fail as they would. */
#ifdef __NR_setuid
	DENY(setuid, EPERM),
#endif
#ifdef __NR_setgid
	DENY(setgid, EPERM),
#endif
#ifdef __NR_setreuid
	DENY(setreuid, EPERM),
#endif
#ifdef __NR_setregid
	DENY(setregid, EPERM),
#endif
#ifdef __NR_setresuid
	DENY(setresuid, EPERM),
#endif
#ifdef __NR_setresgid
	DENY(setresgid, EPERM),
#endif
#ifdef __NR_setgroups
	DENY(setgroups, EPERM),
#endif
#ifdef __NR_setfsuid
	DENY(setfsuid, EPERM),
#endif
#ifdef __NR_setfsgid
	DENY(setfsgid, EPERM),
#endif
#ifdef __NR_capset
	DENY(capset, EPERM),
#endif

	/* --- allow: files ----------------------------------------------- */
#ifdef __NR_read
	ALLOW(read),
#endif
#ifdef __NR_write
	ALLOW(write),
#endif
#ifdef __NR_open
	ALLOW(open),
#endif
#ifdef __NR_openat
	ALLOW(openat),
#endif
#ifdef __NR_openat2
	ALLOW(openat2),
#endif
#ifdef __NR_creat
	ALLOW(creat),
#endif
#ifdef __NR_close
	ALLOW(close),
#endif
#ifdef __NR_close_range
	ALLOW(close_range),
#endif
#ifdef __NR_lseek
	ALLOW(lseek),
#endif
#ifdef __NR_pread64
	ALLOW(pread64),
#endif
#ifdef __NR_pwrite64
	ALLOW(pwrite64),
#endif
#ifdef __NR_readv
	ALLOW(readv),
#endif
#ifdef __NR_writev
	ALLOW(writev),
#endif
#ifdef __NR_preadv
	ALLOW(preadv),
#endif
#ifdef __NR_pwritev
	ALLOW(pwritev),
#endif
#ifdef __NR_preadv2
	ALLOW(preadv2),
#endif
#ifdef __NR_pwritev2
	ALLOW(pwritev2),
#endif
#ifdef __NR_dup
	ALLOW(dup),
#endif
#ifdef __NR_dup2
	ALLOW(dup2),
#endif
#ifdef __NR_dup3
	ALLOW(dup3),
#endif
#ifdef __NR_fcntl
	ALLOW(fcntl),
#endif
#ifdef __NR_flock
	ALLOW(flock),
#endif
#ifdef __NR_ioctl
	ALLOW(ioctl),		/* except TIOCSTI, TIOCLINUX */
#endif
#ifdef __NR_stat
	ALLOW(stat),
#endif
#ifdef __NR_fstat
	ALLOW(fstat),
#endif
#ifdef __NR_lstat
	ALLOW(lstat),
#endif
#ifdef __NR_newfstatat
	ALLOW(newfstatat),
#endif
#ifdef __NR_statx
	ALLOW(statx),
#endif
#ifdef __NR_statfs
	ALLOW(statfs),
#endif
#ifdef __NR_fstatfs
	ALLOW(fstatfs),
#endif
#ifdef __NR_getdents
	ALLOW(getdents),
#endif
#ifdef __NR_getdents64
	ALLOW(getdents64),
#endif
#ifdef __NR_access
	ALLOW(access),
#endif
#ifdef __NR_faccessat
	ALLOW(faccessat),
#endif
#ifdef __NR_faccessat2
	ALLOW(faccessat2),
#endif
#ifdef __NR_readlink
	ALLOW(readlink),
#endif
#ifdef __NR_readlinkat
	ALLOW(readlinkat),
#endif
#ifdef __NR_getcwd
	ALLOW(getcwd),
#endif
#ifdef __NR_chdir
	ALLOW(chdir),
#endif
#ifdef __NR_fchdir
	ALLOW(fchdir),
#endif
#ifdef __NR_umask
	ALLOW(umask),
#endif
#ifdef __NR_mkdir
	ALLOW(mkdir),
#endif
#ifdef __NR_mkdirat
	ALLOW(mkdirat),
#endif
#ifdef __NR_rmdir
	ALLOW(rmdir),
#endif
#ifdef __NR_unlink
	ALLOW(unlink),
#endif
#ifdef __NR_unlinkat
	ALLOW(unlinkat),
#endif
#ifdef __NR_rename
	ALLOW(rename),
#endif
#ifdef __NR_renameat
	ALLOW(renameat),
#endif
#ifdef __NR_renameat2
	ALLOW(renameat2),
#endif
#ifdef __NR_link
	ALLOW(link),
#endif
#ifdef __NR_linkat
	ALLOW(linkat),
#endif
#ifdef __NR_symlink
	ALLOW(symlink),
#endif
#ifdef __NR_symlinkat
	ALLOW(symlinkat),
#endif
#ifdef __NR_mknod
	ALLOW(mknod),		/* FIFOs, sockets, files; not devices */
#endif
#ifdef __NR_mknodat
	ALLOW(mknodat),
#endif
#ifdef __NR_chmod
	ALLOW(chmod),
#endif
#ifdef __NR_fchmod
	ALLOW(fchmod),
#endif
#ifdef __NR_fchmodat
	ALLOW(fchmodat),
#endif
#ifdef __NR_fchmodat2
	ALLOW(fchmodat2),
#endif
#ifdef __NR_chown
	ALLOW(chown),
#endif
#ifdef __NR_fchown
	ALLOW(fchown),
#endif
#ifdef __NR_lchown
	ALLOW(lchown),
#endif
#ifdef __NR_fchownat
	ALLOW(fchownat),
#endif
#ifdef __NR_truncate
	ALLOW(truncate),
#endif
#ifdef __NR_ftruncate
	ALLOW(ftruncate),
#endif
#ifdef __NR_fallocate
	ALLOW(fallocate),
#endif
#ifdef __NR_fsync
	ALLOW(fsync),
#endif
#ifdef __NR_fdatasync
	ALLOW(fdatasync),
#endif
#ifdef __NR_sync
	ALLOW(sync),
#endif
#ifdef __NR_syncfs
	ALLOW(syncfs),
#endif
#ifdef __NR_sync_file_range
	ALLOW(sync_file_range),
#endif
#ifdef __NR_fadvise64
	ALLOW(fadvise64),
#endif
#ifdef __NR_readahead
	ALLOW(readahead),
#endif
#ifdef __NR_utime
	ALLOW(utime),
#endif
#ifdef __NR_utimes
	ALLOW(utimes),
#endif
#ifdef __NR_futimesat
	ALLOW(futimesat),
#endif
#ifdef __NR_utimensat
	ALLOW(utimensat),
#endif
#ifdef __NR_sendfile
	ALLOW(sendfile),
#endif
#ifdef __NR_copy_file_range
	ALLOW(copy_file_range),
#endif
#ifdef __NR_splice
	ALLOW(splice),
#endif
#ifdef __NR_tee
	ALLOW(tee),
#endif
#ifdef __NR_vmsplice
	ALLOW(vmsplice),
#endif
#ifdef __NR_getxattr
	ALLOW(getxattr),	/* shutil.copy2 copies xattrs */
#endif
#ifdef __NR_lgetxattr
	ALLOW(lgetxattr),
#endif
#ifdef __NR_fgetxattr
	ALLOW(fgetxattr),
#endif
#ifdef __NR_listxattr
	ALLOW(listxattr),
#endif
#ifdef __NR_llistxattr
	ALLOW(llistxattr),
#endif
#ifdef __NR_flistxattr
	ALLOW(flistxattr),
#endif
#ifdef __NR_setxattr
	ALLOW(setxattr),
#endif
#ifdef __NR_lsetxattr
	ALLOW(lsetxattr),
#endif
#ifdef __NR_fsetxattr
	ALLOW(fsetxattr),
#endif
#ifdef __NR_removexattr
	ALLOW(removexattr),
#endif
#ifdef __NR_lremovexattr
	ALLOW(lremovexattr),
#endif
#ifdef __NR_fremovexattr
	ALLOW(fremovexattr),
#endif
#ifdef __NR_inotify_init
	ALLOW(inotify_init),
#endif
#ifdef __NR_inotify_init1
	ALLOW(inotify_init1),
#endif
#ifdef __NR_inotify_add_watch
	ALLOW(inotify_add_watch),
#endif
#ifdef __NR_inotify_rm_watch
	ALLOW(inotify_rm_watch),
#endif
#ifdef __NR_memfd_create
	ALLOW(memfd_create),
#endif

	/* --- allow: memory ---------------------------------------------- */
#ifdef __NR_brk
	ALLOW(brk),
#endif
#ifdef __NR_mmap
	ALLOW(mmap),
#endif
#ifdef __NR_munmap
	ALLOW(munmap),
#endif
#ifdef __NR_mprotect
	ALLOW(mprotect),
#endif
#ifdef __NR_mremap
	ALLOW(mremap),
#endif
#ifdef __NR_madvise
	ALLOW(madvise),
#endif
#ifdef __NR_msync
	ALLOW(msync),		/* numpy.memmap flush */
#endif
#ifdef __NR_mincore
	ALLOW(mincore),
#endif
#ifdef __NR_mlock
	ALLOW(mlock),
#endif
#ifdef __NR_mlock2
	ALLOW(mlock2),
#endif
#ifdef __NR_munlock
	ALLOW(munlock),
#endif
#ifdef __NR_mlockall
	ALLOW(mlockall),	/* bounded by RLIMIT_MEMLOCK */
#endif
#ifdef __NR_munlockall
	ALLOW(munlockall),
#endif
#ifdef __NR_membarrier
	ALLOW(membarrier),
#endif
#ifdef __NR_pkey_mprotect
	ALLOW(pkey_mprotect),
#endif
#ifdef __NR_pkey_alloc
	ALLOW(pkey_alloc),
#endif
#ifdef __NR_pkey_free
	ALLOW(pkey_free),
#endif
#ifdef __NR_get_mempolicy
	ALLOW(get_mempolicy),	/* NUMA-aware BLAS and OpenMP */
#endif
#ifdef __NR_set_mempolicy
	ALLOW(set_mempolicy),
#endif
#ifdef __NR_mbind
	ALLOW(mbind),
#endif
#ifdef __NR_move_pages
	ALLOW_IF(move_pages, EQ(0, 0)),	/* own pages only (hwloc queries) */
#endif

	/* --- allow: time ------------------------------------------------ */
#ifdef __NR_clock_gettime
	ALLOW(clock_gettime),
#endif
#ifdef __NR_clock_getres
	ALLOW(clock_getres),
#endif
#ifdef __NR_clock_nanosleep
	ALLOW(clock_nanosleep),
#endif
#ifdef __NR_nanosleep
	ALLOW(nanosleep),
#endif
#ifdef __NR_gettimeofday
	ALLOW(gettimeofday),
#endif
#ifdef __NR_time
	ALLOW(time),
#endif
#ifdef __NR_times
	ALLOW(times),
#endif
#ifdef __NR_alarm
	ALLOW(alarm),
#endif
#ifdef __NR_getitimer
	ALLOW(getitimer),
#endif
#ifdef __NR_setitimer
	ALLOW(setitimer),
#endif
#ifdef __NR_timer_create
	ALLOW(timer_create),
#endif
#ifdef __NR_timer_settime
	ALLOW(timer_settime),
#endif
#ifdef __NR_timer_gettime
	ALLOW(timer_gettime),
#endif
#ifdef __NR_timer_getoverrun
	ALLOW(timer_getoverrun),
#endif
#ifdef __NR_timer_delete
	ALLOW(timer_delete),
#endif
#ifdef __NR_timerfd_create
	ALLOW(timerfd_create),
#endif
#ifdef __NR_timerfd_settime
	ALLOW(timerfd_settime),
#endif
#ifdef __NR_timerfd_gettime
	ALLOW(timerfd_gettime),
#endif

	/* --- allow: signals --------------------------------------------- */
#ifdef __NR_rt_sigaction
	ALLOW(rt_sigaction),	/* except installing a SIGSYS handler */
#endif
#ifdef __NR_rt_sigprocmask
	ALLOW(rt_sigprocmask),
#endif
#ifdef __NR_rt_sigreturn
	ALLOW(rt_sigreturn),
#endif
#ifdef __NR_rt_sigpending
	ALLOW(rt_sigpending),
#endif
#ifdef __NR_rt_sigtimedwait
	ALLOW(rt_sigtimedwait),
#endif
#ifdef __NR_rt_sigsuspend
	ALLOW(rt_sigsuspend),
#endif
#ifdef __NR_rt_sigqueueinfo
	ALLOW(rt_sigqueueinfo),
#endif
#ifdef __NR_rt_tgsigqueueinfo
	ALLOW(rt_tgsigqueueinfo),
#endif
#ifdef __NR_sigaltstack
	ALLOW(sigaltstack),	/* faulthandler */
#endif
#ifdef __NR_signalfd
	ALLOW(signalfd),
#endif
#ifdef __NR_signalfd4
	ALLOW(signalfd4),
#endif
#ifdef __NR_kill
	ALLOW(kill),		/* the session's PID namespace only */
#endif
#ifdef __NR_tkill
	ALLOW(tkill),
#endif
#ifdef __NR_tgkill
	ALLOW(tgkill),
#endif
#ifdef __NR_pause
	ALLOW(pause),
#endif
#ifdef __NR_restart_syscall
	ALLOW(restart_syscall),
#endif
#ifdef __NR_pidfd_open
	ALLOW(pidfd_open),
#endif
#ifdef __NR_pidfd_send_signal
	ALLOW(pidfd_send_signal),
#endif

	/* --- allow: processes and threads ------------------------------- */
#ifdef __NR_clone
	ALLOW_IF(clone, MASK(0, SC_CLONE_NS, 0)),	/* fork, threads */
#endif
#ifdef __NR_fork
	ALLOW(fork),
#endif
#ifdef __NR_vfork
	ALLOW(vfork),		/* _posixsubprocess */
#endif
#ifdef __NR_execve
	ALLOW(execve),
#endif
#ifdef __NR_execveat
	ALLOW(execveat),
#endif
#ifdef __NR_exit
	ALLOW(exit),
#endif
#ifdef __NR_exit_group
	ALLOW(exit_group),
#endif
#ifdef __NR_wait4
	ALLOW(wait4),
#endif
#ifdef __NR_waitid
	ALLOW(waitid),
#endif
#ifdef __NR_set_tid_address
	ALLOW(set_tid_address),
#endif
#ifdef __NR_set_robust_list
	ALLOW(set_robust_list),
#endif
#ifdef __NR_get_robust_list
	ALLOW(get_robust_list),
#endif
#ifdef __NR_rseq
	ALLOW(rseq),
#endif
#ifdef __NR_futex
	ALLOW(futex),
#endif
#ifdef __NR_futex_waitv
	ALLOW(futex_waitv),
#endif
#ifdef __NR_arch_prctl
	ALLOW(arch_prctl),
#endif
#ifdef __NR_prctl
	ALLOW(prctl),		/* except PR_SET_MM, PR_SET_PTRACER */
#endif
#ifdef __NR_personality
	ALLOW_IF(personality, EQ(0, 0)),		/* PER_LINUX */
	ALLOW_IF(personality, EQ(0, 0xffffffffULL)),	/* the query */
#endif
#ifdef __NR_seccomp
	ALLOW(seccomp),		/* stacking only ever narrows */
#endif
#ifdef __NR_landlock_create_ruleset
	ALLOW(landlock_create_ruleset),
#endif
#ifdef __NR_landlock_add_rule
	ALLOW(landlock_add_rule),
#endif
#ifdef __NR_landlock_restrict_self
	ALLOW(landlock_restrict_self),
#endif
#ifdef __NR_getpid
	ALLOW(getpid),
#endif
#ifdef __NR_getppid
	ALLOW(getppid),
#endif
#ifdef __NR_gettid
	ALLOW(gettid),
#endif
#ifdef __NR_getuid
	ALLOW(getuid),
#endif
#ifdef __NR_geteuid
	ALLOW(geteuid),
#endif
#ifdef __NR_getgid
	ALLOW(getgid),
#endif
#ifdef __NR_getegid
	ALLOW(getegid),
#endif
#ifdef __NR_getresuid
	ALLOW(getresuid),
#endif
#ifdef __NR_getresgid
	ALLOW(getresgid),
#endif
#ifdef __NR_getgroups
	ALLOW(getgroups),
#endif
#ifdef __NR_getpgid
	ALLOW(getpgid),
#endif
#ifdef __NR_getpgrp
	ALLOW(getpgrp),
#endif
#ifdef __NR_setpgid
	ALLOW(setpgid),
#endif
#ifdef __NR_getsid
	ALLOW(getsid),
#endif
#ifdef __NR_setsid
	ALLOW(setsid),
#endif
#ifdef __NR_capget
	ALLOW(capget),
#endif
#ifdef __NR_getrusage
	ALLOW(getrusage),
#endif
#ifdef __NR_getrlimit
	ALLOW(getrlimit),
#endif
#ifdef __NR_setrlimit
	ALLOW(setrlimit),	/* hard limits only go down */
#endif
#ifdef __NR_prlimit64
	ALLOW(prlimit64),
#endif
#ifdef __NR_getpriority
	ALLOW(getpriority),
#endif
#ifdef __NR_setpriority
	ALLOW(setpriority),
#endif
#ifdef __NR_ioprio_get
	ALLOW(ioprio_get),
#endif
#ifdef __NR_sched_yield
	ALLOW(sched_yield),
#endif
#ifdef __NR_sched_getaffinity
	ALLOW(sched_getaffinity),
#endif
#ifdef __NR_sched_setaffinity
	ALLOW(sched_setaffinity),
#endif
#ifdef __NR_sched_getparam
	ALLOW(sched_getparam),
#endif
#ifdef __NR_sched_setparam
	ALLOW(sched_setparam),	/* realtime needs a capability */
#endif
#ifdef __NR_sched_getscheduler
	ALLOW(sched_getscheduler),
#endif
#ifdef __NR_sched_setscheduler
	ALLOW(sched_setscheduler),
#endif
#ifdef __NR_sched_getattr
	ALLOW(sched_getattr),
#endif
#ifdef __NR_sched_setattr
	ALLOW(sched_setattr),
#endif
#ifdef __NR_sched_get_priority_max
	ALLOW(sched_get_priority_max),
#endif
#ifdef __NR_sched_get_priority_min
	ALLOW(sched_get_priority_min),
#endif
#ifdef __NR_sched_rr_get_interval
	ALLOW(sched_rr_get_interval),
#endif
#ifdef __NR_getcpu
	ALLOW(getcpu),
#endif
#ifdef __NR_getrandom
	ALLOW(getrandom),
#endif
#ifdef __NR_sysinfo
	ALLOW(sysinfo),
#endif
#ifdef __NR_uname
	ALLOW(uname),
#endif

	/* --- allow: polling, pipes, IPC --------------------------------- */
#ifdef __NR_poll
	ALLOW(poll),
#endif
#ifdef __NR_ppoll
	ALLOW(ppoll),
#endif
#ifdef __NR_select
	ALLOW(select),
#endif
#ifdef __NR_pselect6
	ALLOW(pselect6),
#endif
#ifdef __NR_epoll_create
	ALLOW(epoll_create),
#endif
#ifdef __NR_epoll_create1
	ALLOW(epoll_create1),
#endif
#ifdef __NR_epoll_ctl
	ALLOW(epoll_ctl),
#endif
#ifdef __NR_epoll_wait
	ALLOW(epoll_wait),
#endif
#ifdef __NR_epoll_pwait
	ALLOW(epoll_pwait),
#endif
#ifdef __NR_epoll_pwait2
	ALLOW(epoll_pwait2),
#endif
#ifdef __NR_eventfd
	ALLOW(eventfd),
#endif
#ifdef __NR_eventfd2
	ALLOW(eventfd2),
#endif
#ifdef __NR_pipe
	ALLOW(pipe),
#endif
#ifdef __NR_pipe2
	ALLOW(pipe2),
#endif
#ifdef __NR_shmget
	ALLOW(shmget),		/* the IPC namespace is the session's */
#endif
#ifdef __NR_shmat
	ALLOW(shmat),
#endif
#ifdef __NR_shmdt
	ALLOW(shmdt),
#endif
#ifdef __NR_shmctl
	ALLOW(shmctl),
#endif
#ifdef __NR_semget
	ALLOW(semget),
#endif
#ifdef __NR_semop
	ALLOW(semop),
#endif
#ifdef __NR_semtimedop
	ALLOW(semtimedop),
#endif
#ifdef __NR_semctl
	ALLOW(semctl),
#endif
#ifdef __NR_msgget
	ALLOW(msgget),
#endif
#ifdef __NR_msgsnd
	ALLOW(msgsnd),
#endif
#ifdef __NR_msgrcv
	ALLOW(msgrcv),
#endif
#ifdef __NR_msgctl
	ALLOW(msgctl),
#endif
#ifdef __NR_mq_open
	ALLOW(mq_open),
#endif
#ifdef __NR_mq_unlink
	ALLOW(mq_unlink),
#endif
#ifdef __NR_mq_timedsend
	ALLOW(mq_timedsend),
#endif
#ifdef __NR_mq_timedreceive
	ALLOW(mq_timedreceive),
#endif
#ifdef __NR_mq_notify
	ALLOW(mq_notify),
#endif
#ifdef __NR_mq_getsetattr
	ALLOW(mq_getsetattr),
#endif

	/* --- allow: sockets --------------------------------------------- */
#ifdef __NR_socket
	ALLOW_IF(socket, EQ(0, AF_UNIX)),
	ALLOW_IF2(socket, EQ(0, AF_INET), STYPE(1, SOCK_STREAM)),
	ALLOW_IF2(socket, EQ(0, AF_INET), STYPE(1, SOCK_DGRAM)),
	ALLOW_IF2(socket, EQ(0, AF_INET6), STYPE(1, SOCK_STREAM)),
	ALLOW_IF2(socket, EQ(0, AF_INET6), STYPE(1, SOCK_DGRAM)),
	ALLOW_IF2(socket, EQ(0, AF_NETLINK), EQ(2, NETLINK_ROUTE)),
#endif
#ifdef __NR_socketpair
	ALLOW_IF(socketpair, EQ(0, AF_UNIX)),
#endif
#ifdef __NR_bind
	ALLOW(bind),
#endif
#ifdef __NR_listen
	ALLOW(listen),
#endif
#ifdef __NR_accept
	ALLOW(accept),
#endif
#ifdef __NR_accept4
	ALLOW(accept4),
#endif
#ifdef __NR_connect
	ALLOW(connect),
#endif
#ifdef __NR_getsockname
	ALLOW(getsockname),
#endif
#ifdef __NR_getpeername
	ALLOW(getpeername),
#endif
#ifdef __NR_sendto
	ALLOW(sendto),
#endif
#ifdef __NR_recvfrom
	ALLOW(recvfrom),
#endif
#ifdef __NR_sendmsg
	ALLOW(sendmsg),
#endif
#ifdef __NR_recvmsg
	ALLOW(recvmsg),
#endif
#ifdef __NR_sendmmsg
	ALLOW(sendmmsg),
#endif
#ifdef __NR_recvmmsg
	ALLOW(recvmmsg),
#endif
#ifdef __NR_shutdown
	ALLOW(shutdown),
#endif
#ifdef __NR_setsockopt
	ALLOW(setsockopt),
#endif
#ifdef __NR_getsockopt
	ALLOW(getsockopt),
#endif

	/* --- default: SIGSYS; these are listed only to show intent ------- */
#ifdef __NR_modify_ldt
	KILL(modify_ldt),
#endif
#ifdef __NR_iopl
	KILL(iopl),
#endif
#ifdef __NR_ioperm
	KILL(ioperm),
#endif
#ifdef __NR_vhangup
	KILL(vhangup),
#endif
#ifdef __NR_uselib
	KILL(uselib),
#endif
#ifdef __NR_ustat
	KILL(ustat),
#endif
#ifdef __NR_sysfs
	KILL(sysfs),
#endif
#ifdef __NR_migrate_pages
	KILL(migrate_pages),
#endif
#ifdef __NR_remap_file_pages
	KILL(remap_file_pages),
#endif
#ifdef __NR_ioprio_set
	KILL(ioprio_set),
#endif
#ifdef __NR_memfd_secret
	KILL(memfd_secret),
#endif
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
