/*
 * Unit tests for the sandbox's confinement mechanisms: the seccomp policy
 * (sandbox_seccomp.c), Landlock (sandbox_landlock.c) and the rlimits
 * (sandbox_rlimit.c). Run as root, as `make unit` does.
 *
 * Every case that confines runs in a forked child, which loads the real
 * filter (or ruleset) and then tries one thing, checking the exact errno or
 * signal, as bubblewrap's try-syscall probes do. The children report 0 for
 * "as expected", print what went wrong on stderr otherwise, and the parent
 * checks the wait status and what the SIGSYS handler wrote on the status
 * pipe. The last cases exec /usr/bin/python3 under the filter and Landlock
 * (both survive exec) and run numpy, pandas, scikit-learn, matplotlib,
 * requests and pip workloads, to show that the policy is not too tight.
 */
/* The tables below are laid out by hand. */
/* clang-format off */
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <linux/netlink.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <nftables/libnftables.h>

#include "log.h"
#include "sandbox_policy.h"

#define SKIP_CODE	77	/* a child's "not applicable here" */
#define PYTHON		"/usr/bin/python3"

static char base[64];	/* scratch directory for the whole run */
static int rec_fd = -1;		/* the child's end of the status pipe */

/* What a child left behind. */
struct child {
	int	ch_status;
	char	ch_record[64];	/* from the status pipe */
	char	ch_stderr[8192];
};

/* Read up to size - 1 bytes of fd into buf, NUL-terminated. */
static void
slurp(int fd, char *buf, size_t size)
{
	size_t off = 0;
	ssize_t n;

	while (off + 1 < size &&
	    (n = read(fd, buf + off, size - 1 - off)) > 0)
		off += (size_t)n;
	buf[off] = '\0';
}

/*
 * Fork; in the child send stderr to a file, hand fn the status pipe in
 * rec_fd and exit with what fn returns. Collect its status, its record
 * and its stderr.
 */
static void
run_child(int (*fn)(void), struct child *ch)
{
	char errpath[PATH_MAX];
	int rec[2], errfd;
	pid_t pid;

	snprintf(errpath, sizeof(errpath), "%s/stderr.XXXXXX", base);
	assert_int_not_equal(errfd = mkstemp(errpath), -1);
	unlink(errpath);
	assert_int_equal(pipe2(rec, O_CLOEXEC), 0);
	fflush(NULL);
	assert_int_not_equal(pid = fork(), -1);
	if (pid == 0) {
		close(rec[0]);
		dup2(errfd, STDERR_FILENO);
		rec_fd = rec[1];
		_exit(fn());
	}
	close(rec[1]);
	assert_int_equal(waitpid(pid, &ch->ch_status, 0), pid);
	slurp(rec[0], ch->ch_record, sizeof(ch->ch_record));
	close(rec[0]);
	lseek(errfd, 0, SEEK_SET);
	slurp(errfd, ch->ch_stderr, sizeof(ch->ch_stderr));
	close(errfd);
}

/* The end of a child's stderr, where a traceback says what failed. */
static const char *
err_tail(const char *err)
{
	size_t n = strlen(err);

	return n > 1500 ? err + n - 1500 : err;
}

/* The child must exit 0 (or SKIP_CODE, which skips the test). */
static void
expect_pass(int (*fn)(void), const char *name)
{
	struct child ch;

	run_child(fn, &ch);
	if (WIFEXITED(ch.ch_status) && WEXITSTATUS(ch.ch_status) == SKIP_CODE)
		skip();
	if (!WIFEXITED(ch.ch_status) || WEXITSTATUS(ch.ch_status) != 0)
		fail_msg("%s: status 0x%x (%s%d), record '%s', stderr:\n%s",
		    name, ch.ch_status, WIFSIGNALED(ch.ch_status) ?
		    "signal " : "exit ", WIFSIGNALED(ch.ch_status) ?
		    WTERMSIG(ch.ch_status) : WEXITSTATUS(ch.ch_status),
		    ch.ch_record, err_tail(ch.ch_stderr));
}

/* The child must die of SIGSYS; return its record and stderr. */
static void
expect_sigsys(int (*fn)(void), const char *name, struct child *ch)
{
	run_child(fn, ch);
	if (!WIFSIGNALED(ch->ch_status) || WTERMSIG(ch->ch_status) != SIGSYS)
		fail_msg("%s: status 0x%x, not SIGSYS; stderr:\n%s", name,
		    ch->ch_status, ch->ch_stderr);
}

/* In a child: rc must be -1 with errno err. */
static int
want_err(const char *what, long rc, int err)
{
	int saved = errno;

	if (rc == -1 && saved == err)
		return 0;
	fprintf(stderr, "%s: got %ld (%s), want %s\n", what, rc,
	    rc == -1 ? strerror(saved) : "success", strerror(err));
	return 1;
}

/* In a child: rc must not be -1. */
static int
want_ok(const char *what, long rc)
{
	if (rc != -1)
		return 0;
	fprintf(stderr, "%s: %s\n", what, strerror(errno));
	return 1;
}

/* In a child: load the enforcing filter, reporting to the status pipe. */
static int
enforce(void)
{
	if (sandbox_seccomp_load(0, rec_fd) == 0)
		return 0;
	fprintf(stderr, "sandbox_seccomp_load failed\n");
	_exit(100);
}

/* ---- seccomp: soft denials ------------------------------------------- */

static int
c_clone3(void)
{
	enforce();
	return want_err("clone3", syscall(__NR_clone3, NULL, 0), ENOSYS);
}

static int
c_unshare(void)
{
	enforce();
	return want_err("unshare(CLONE_NEWNS)", unshare(CLONE_NEWNS), EPERM) |
	    want_err("unshare(CLONE_NEWUSER)", unshare(CLONE_NEWUSER), EPERM) |
	    want_err("setns", setns(0, 0), EPERM);
}

static int
c_clone_ns(void)
{
	static const unsigned long flags[] = { CLONE_NEWNET, CLONE_NEWNS,
	    CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWIPC, CLONE_NEWUTS,
	    CLONE_NEWCGROUP };
	size_t i;
	long rc;
	int bad = 0;

	enforce();
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		rc = syscall(SYS_clone, flags[i] | SIGCHLD, NULL, NULL, NULL,
		    0);
		if (rc == 0)
			_exit(0);
		bad |= want_err("clone(CLONE_NEW*)", rc, EPERM);
	}
	return bad;
}

static int
c_privileged(void)
{
	struct iovec local, remote;
	char buf[8];

	enforce();
	local.iov_base = remote.iov_base = buf;
	local.iov_len = remote.iov_len = sizeof(buf);
	return want_err("mount", mount("none", "/mnt", "tmpfs", 0, NULL),
	    EPERM) |
	    want_err("umount2", umount2("/", MNT_DETACH), EPERM) |
	    want_err("chroot", chroot("/"), EPERM) |
	    want_err("ptrace", ptrace(PTRACE_TRACEME, 0, 0, 0), EPERM) |
	    want_err("bpf", syscall(__NR_bpf, 0, NULL, 0), EPERM) |
	    want_err("io_uring_setup",
	    syscall(__NR_io_uring_setup, 1, NULL), EPERM) |
	    want_err("keyctl", syscall(__NR_keyctl, 0, -3, 0), EPERM) |
	    want_err("perf_event_open",
	    syscall(__NR_perf_event_open, NULL, 0, -1, -1, 0), EPERM) |
	    want_err("userfaultfd", syscall(__NR_userfaultfd, 0), EPERM) |
	    want_err("process_vm_readv", process_vm_readv(getppid(), &local,
	    1, &remote, 1, 0), EPERM) |
	    want_err("kcmp", syscall(__NR_kcmp, getpid(), getpid(), 0, 0, 0),
	    EPERM) |
	    want_err("init_module", syscall(__NR_init_module, NULL, 0, ""),
	    EPERM) |
	    want_err("io_setup", syscall(__NR_io_setup, 1, NULL), ENOSYS);
}

static int
c_identity(void)
{
	enforce();
	return want_err("setuid(0)", setuid(0), EPERM) |
	    want_err("setgid(0)", setgid(0), EPERM) |
	    want_err("setgroups", setgroups(0, NULL), EPERM) |
	    want_ok("getuid", getuid());
}

static int
c_sockets(void)
{
	enforce();
	return want_err("AF_PACKET", socket(AF_PACKET, SOCK_RAW, 0), EPERM) |
	    want_err("AF_INET raw", socket(AF_INET, SOCK_RAW, IPPROTO_ICMP),
	    EPERM) |
	    want_err("AF_INET6 raw", socket(AF_INET6, SOCK_RAW | SOCK_CLOEXEC,
	    IPPROTO_ICMPV6), EPERM) |
	    want_err("NETLINK_AUDIT", socket(AF_NETLINK, SOCK_RAW,
	    NETLINK_AUDIT), EPERM) |
	    want_err("AF_VSOCK", socket(40, SOCK_STREAM, 0), EAFNOSUPPORT) |
	    want_ok("AF_INET stream", socket(AF_INET, SOCK_STREAM |
	    SOCK_CLOEXEC, 0)) |
	    want_ok("AF_INET6 dgram", socket(AF_INET6, SOCK_DGRAM, 0)) |
	    want_ok("AF_UNIX", socket(AF_UNIX, SOCK_STREAM, 0)) |
	    want_ok("NETLINK_ROUTE", socket(AF_NETLINK, SOCK_RAW |
	    SOCK_CLOEXEC, NETLINK_ROUTE));
}

/* The kernel's struct for rt_sigaction(2), unlike glibc's. */
struct k_sigaction {
	void		*ksa_handler;
	unsigned long	 ksa_flags;
	void		*ksa_restorer;
	uint64_t	 ksa_mask;
};

static int
c_refinements(void)
{
	struct k_sigaction ksa = { .ksa_handler = SIG_IGN };
	struct sigaction sa, old;
	char c = 'x';
	int bad;

	enforce();
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	bad = want_err("sigaction(SIGSYS)", sigaction(SIGSYS, &sa, NULL),
	    EPERM) |
	    want_err("rt_sigaction(SIGSYS | 1 << 32)", syscall(
	    __NR_rt_sigaction, (1UL << 32) | SIGSYS, &ksa, NULL, 8), EPERM) |
	    want_ok("sigaction(SIGSYS) query", sigaction(SIGSYS, NULL, &old)) |
	    want_ok("sigaction(SIGUSR1)", sigaction(SIGUSR1, &sa, NULL)) |
	    want_err("TIOCSTI", ioctl(0, TIOCSTI, &c), EPERM) |
	    want_err("TIOCSTI | 1 << 32", syscall(__NR_ioctl, 0,
	    (1UL << 32) | TIOCSTI, &c), EPERM) |
	    want_err("TIOCLINUX", ioctl(0, TIOCLINUX, &c), EPERM) |
	    want_err("PR_SET_MM", prctl(PR_SET_MM, PR_SET_MM_START_BRK, 0, 0,
	    0), EPERM) |
	    want_err("PR_SET_PTRACER", prctl(PR_SET_PTRACER, 0, 0, 0, 0),
	    EPERM) |
	    want_ok("PR_SET_NAME", prctl(PR_SET_NAME, "policy", 0, 0, 0)) |
	    want_ok("personality query", personality(0xffffffff)) |
	    want_ok("personality(PER_LINUX)", personality(PER_LINUX)) |
	    want_ok("memfd_create", memfd_create("x", MFD_CLOEXEC));
	return bad;
}

static char mknod_dir[PATH_MAX];

static int
c_mknod(void)
{
	char fifo[PATH_MAX + 8], dev[PATH_MAX + 8];

	snprintf(fifo, sizeof(fifo), "%s/fifo", mknod_dir);
	snprintf(dev, sizeof(dev), "%s/null", mknod_dir);
	enforce();
	return want_ok("mkfifo", mkfifo(fifo, 0600)) |
	    want_err("mknod char", mknod(dev, S_IFCHR | 0600, makedev(1, 3)),
	    EPERM) |
	    want_err("mknodat block", mknodat(AT_FDCWD, dev, S_IFBLK | 0600,
	    makedev(7, 0)), EPERM);
}

/* ---- seccomp: what must keep working --------------------------------- */

static void *
thread_main(void *arg)
{
	return arg;
}

static int
c_thread(void)
{
	pthread_t t;
	void *ret = NULL;

	enforce();
	if (pthread_create(&t, NULL, thread_main, &rec_fd) != 0 ||
	    pthread_join(t, &ret) != 0 || ret != &rec_fd) {
		fprintf(stderr, "pthread_create/join failed\n");
		return 1;
	}
	return 0;
}

static int
c_fork(void)
{
	pid_t pid;
	int st;

	enforce();
	if ((pid = fork()) == 0)
		_exit(7);
	if (want_ok("fork", pid) || want_ok("waitpid", waitpid(pid, &st, 0)))
		return 1;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 7) {
		fprintf(stderr, "fork child status 0x%x\n", st);
		return 1;
	}
	if ((pid = vfork()) == 0)
		_exit(8);
	return want_ok("vfork", pid) |
	    want_ok("waitpid", waitpid(pid, &st, 0)) |
	    (WEXITSTATUS(st) != 8);
}

/* ---- seccomp: violations --------------------------------------------- */

static int
c_iopl(void)
{
	enforce();
	syscall(__NR_iopl, 0);
	fprintf(stderr, "iopl returned\n");
	return 1;
}

static int
c_iopl_log(void)
{
	if (sandbox_seccomp_load(1, rec_fd) == -1)
		return 100;
	syscall(__NR_iopl, 0);	/* logged, runs */
	return want_err("unshare, log mode", unshare(CLONE_NEWNS), EPERM);
}

static int
c_iopl_blocked(void)
{
	sigset_t set;

	enforce();
	sigemptyset(&set);
	sigaddset(&set, SIGSYS);
	sigprocmask(SIG_BLOCK, &set, NULL);
	syscall(__NR_iopl, 0);
	fprintf(stderr, "iopl returned with SIGSYS blocked\n");
	return 1;
}

static int
c_personality(void)
{
	enforce();
	personality(ADDR_NO_RANDOMIZE);
	return 1;
}

static int
c_x32(void)
{
	enforce();
	syscall(0x40000000 | __NR_getpid);
	fprintf(stderr, "an x32 syscall returned\n");
	return 1;
}

static void
t_seccomp_soft(void **state)
{
	expect_pass(c_clone3, "clone3");
	expect_pass(c_unshare, "unshare");
	expect_pass(c_clone_ns, "clone with namespace flags");
	expect_pass(c_privileged, "privileged calls");
	expect_pass(c_identity, "identity");
	expect_pass(c_sockets, "sockets");
	expect_pass(c_refinements, "refinements");
	expect_pass(c_mknod, "mknod");
}

static void
t_seccomp_works(void **state)
{
	expect_pass(c_thread, "pthread_create");
	expect_pass(c_fork, "fork");
}

static void
t_seccomp_violation(void **state)
{
	struct child ch;
	char want[64];

	expect_sigsys(c_iopl, "iopl", &ch);
	snprintf(want, sizeof(want), "seccomp %d\n", __NR_iopl);
	assert_string_equal(ch.ch_record, want);
	snprintf(want, sizeof(want), "blocked syscall iopl (%d)", __NR_iopl);
	if (strstr(ch.ch_stderr, want) == NULL)
		fail_msg("stderr lacks '%s': %s", want, ch.ch_stderr);

	expect_sigsys(c_personality, "personality", &ch);
	snprintf(want, sizeof(want), "seccomp %d\n", __NR_personality);
	assert_string_equal(ch.ch_record, want);

	/* Blocking SIGSYS does not let code go on; the kernel kills. */
	expect_sigsys(c_iopl_blocked, "iopl, SIGSYS blocked", &ch);
	/* x32 is another ABI: killed by the filter, not trapped. */
	expect_sigsys(c_x32, "x32", &ch);
	assert_string_equal(ch.ch_record, "");

	expect_pass(c_iopl_log, "iopl in log mode");
}

static void
t_seccomp_name(void **state)
{
	assert_string_equal(sandbox_seccomp_name(__NR_read), "read");
	assert_string_equal(sandbox_seccomp_name(__NR_iopl), "iopl");
	assert_string_equal(sandbox_seccomp_name(__NR_clone3), "clone3");
	assert_string_equal(sandbox_seccomp_name(99999), "syscall 99999");
	assert_string_equal(sandbox_seccomp_name(-1), "syscall -1");
}

/* ---- Landlock -------------------------------------------------------- */

static int fake_abi_value;

static int
fake_abi(void)
{
	return fake_abi_value;
}

static void
t_landlock_masks(void **state)
{
	static const struct {
		int		abi;
		uint64_t	mask;
	} cases[] = {
		{ 0, 0 }, { 1, 0x1fff }, { 2, 0x3fff }, { 3, 0x7fff },
		{ 4, 0x7fff }, { 5, 0xffff }, { 7, 0xffff },
	};
	int (*saved)(void) = sandbox_landlock_abi_hook;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fake_abi_value = cases[i].abi;
		sandbox_landlock_abi_hook = fake_abi;
		assert_int_equal(sandbox_landlock_fs_access(
		    sandbox_landlock_abi_hook()), cases[i].mask);
	}
	sandbox_landlock_abi_hook = saved;
	/* Reads and execution are handled from ABI 1. */
	assert_int_equal(sandbox_landlock_fs_access(1) & 0xd, 0xd);
}

static char ll_t[PATH_MAX], ll_u[PATH_MAX], ll_r[PATH_MAX];
static int ll_want_abi;

/* Create path for writing. */
static long
create(const char *dir, const char *name)
{
	char path[PATH_MAX * 2];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1)
		return -1;
	close(fd);
	return 0;
}

static long
read_file(const char *path)
{
	char buf[256];
	int fd;
	ssize_t n;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	return n;
}

/* Apply Landlock with T writable, then probe T, U and the rest. */
static int
c_landlock(void)
{
	const char *writable[] = { ll_t };
	const char *readable[] = { ll_r };
	char a[PATH_MAX + 8], b[PATH_MAX + 8], d[PATH_MAX + 8];
	char pre[PATH_MAX + 8], ud[PATH_MAX + 8], rpre[PATH_MAX + 8];
	int abi, bad = 0;

	if (ll_want_abi >= 0) {
		fake_abi_value = ll_want_abi;
		sandbox_landlock_abi_hook = fake_abi;
	}
	abi = sandbox_landlock_apply(writable, 1, readable, 1);
	if (abi != (ll_want_abi >= 0 ? ll_want_abi : sandbox_landlock_abi())) {
		fprintf(stderr, "sandbox_landlock_apply returned %d\n", abi);
		return 1;
	}
	snprintf(a, sizeof(a), "%s/a", ll_t);
	snprintf(d, sizeof(d), "%s/d", ll_t);
	snprintf(b, sizeof(b), "%s/d/b", ll_t);
	snprintf(pre, sizeof(pre), "%s/pre", ll_u);
	snprintf(ud, sizeof(ud), "%s/d", ll_u);
	snprintf(rpre, sizeof(rpre), "%s/pre", ll_r);
	bad |= want_ok("create in T", create(ll_t, "a"));
	bad |= want_ok("mkdir in T", mkdir(d, 0700));
	bad |= want_ok("read /etc/hostname", read_file("/etc/hostname"));
	bad |= want_ok("write /dev/null", open("/dev/null", O_WRONLY |
	    O_TRUNC));
	if (abi == 0)
		return bad | want_ok("create in U, no Landlock", create(ll_u,
		    "a"));
	bad |= want_err("create in U", create(ll_u, "a"), EACCES);
	/* Reads: T and R are read, U (as any other host path) is not. */
	bad |= want_ok("read R/pre", read_file(rpre));
	bad |= want_err("read U/pre", read_file(pre), EACCES);
	bad |= want_err("create in R", create(ll_r, "b"), EACCES);
	bad |= want_err("mkdir in U", mkdir(ud, 0700), EACCES);
	bad |= want_err("unlink in U", unlink(pre), EACCES);
	bad |= want_err("open U/pre for writing", open(pre, O_WRONLY), EACCES);
	/* Moving between directories needs REFER, from ABI 2. */
	bad |= abi >= 2 ? want_ok("rename within T", rename(a, b)) :
	    want_err("rename within T, ABI 1", rename(a, b), EXDEV);
	/* truncate(2) is covered from ABI 3. */
	bad |= abi >= 3 ? want_err("truncate U/pre", truncate(pre, 0), EACCES) :
	    want_ok("truncate U/pre, before ABI 3", truncate(pre, 0));
	return bad;
}

/* Make fresh T and U (with U/pre) for one run, for the given ABI. */
static void
landlock_dirs(const char *tag)
{
	snprintf(ll_t, sizeof(ll_t), "%s/t-%s", base, tag);
	snprintf(ll_u, sizeof(ll_u), "%s/u-%s", base, tag);
	snprintf(ll_r, sizeof(ll_r), "%s/r-%s", base, tag);
	assert_int_equal(mkdir(ll_t, 0700), 0);
	assert_int_equal(mkdir(ll_u, 0700), 0);
	assert_int_equal(mkdir(ll_r, 0700), 0);
	assert_int_equal(create(ll_u, "pre"), 0);
	assert_int_equal(create(ll_r, "pre"), 0);
}

static void
t_landlock_apply(void **state)
{
	static const int abis[] = { 0, 1, 2, 3, 5 };
	char tag[16];
	size_t i;

	for (i = 0; i < sizeof(abis) / sizeof(abis[0]); i++) {
		if (abis[i] > sandbox_landlock_abi())
			continue;	/* the kernel cannot handle those rights */
		snprintf(tag, sizeof(tag), "abi%d", abis[i]);
		landlock_dirs(tag);
		ll_want_abi = abis[i];
		expect_pass(c_landlock, tag);
	}
	landlock_dirs("real");
	ll_want_abi = -1;
	expect_pass(c_landlock, "the kernel's ABI");
}

static struct sockaddr_un ll_abstract;
static socklen_t ll_abstract_len;

/* From ABI 6, abstract unix sockets made outside the domain are out. */
static int
c_landlock_abstract(void)
{
	const char *writable[] = { base };
	int fd, abi;

	if ((abi = sandbox_landlock_apply(writable, 1, NULL, 0)) < 6)
		return abi < 0 ? 1 : SKIP_CODE;
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	return want_err("connect to an outside abstract socket", connect(fd,
	    (struct sockaddr *)&ll_abstract, ll_abstract_len), EPERM);
}

static void
t_landlock_abstract(void **state)
{
	int srv, cli;

	memset(&ll_abstract, 0, sizeof(ll_abstract));
	ll_abstract.sun_family = AF_UNIX;
	snprintf(ll_abstract.sun_path + 1, sizeof(ll_abstract.sun_path) - 1,
	    "rm-policy-%d", (int)getpid());
	ll_abstract_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
	    1 + strlen(ll_abstract.sun_path + 1));
	assert_int_not_equal(srv = socket(AF_UNIX, SOCK_STREAM, 0), -1);
	assert_int_equal(bind(srv, (struct sockaddr *)&ll_abstract,
	    ll_abstract_len), 0);
	assert_int_equal(listen(srv, 4), 0);
	cli = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(connect(cli, (struct sockaddr *)&ll_abstract,
	    ll_abstract_len), 0);	/* reachable without Landlock */
	close(cli);
	expect_pass(c_landlock_abstract, "abstract socket scope");
	close(srv);
}

/* ---- rlimits and thread counts --------------------------------------- */

static int
want_limit(const char *what, int res, rlim_t cur, rlim_t max)
{
	struct rlimit rl;

	getrlimit(res, &rl);
	if (rl.rlim_cur == cur && rl.rlim_max == max)
		return 0;
	fprintf(stderr, "%s: %ju/%ju, want %ju/%ju\n", what,
	    (uintmax_t)rl.rlim_cur, (uintmax_t)rl.rlim_max, (uintmax_t)cur,
	    (uintmax_t)max);
	return 1;
}

static int
c_rlimits(void)
{
	struct rlimit as;
	char buf[4096], path[PATH_MAX];
	int fd, bad;
	size_t i;
	ssize_t n = 0;

	getrlimit(RLIMIT_AS, &as);
	signal(SIGXFSZ, SIG_IGN);	/* as Python does */
	if (sandbox_rlimits_apply(64, 64 * 1024, 30) == -1)
		return 1;
	bad = want_limit("NOFILE", RLIMIT_NOFILE, 64, 64) |
	    want_limit("FSIZE", RLIMIT_FSIZE, 64 * 1024, 64 * 1024) |
	    want_limit("CORE", RLIMIT_CORE, 0, 0) |
	    want_limit("CPU", RLIMIT_CPU, 30, 32) |
	    want_limit("AS untouched", RLIMIT_AS, as.rlim_cur, as.rlim_max);
	snprintf(path, sizeof(path), "%s/big", base);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600)) == -1)
		return 1;
	memset(buf, 'x', sizeof(buf));
	for (i = 0; i < 32 && (n = write(fd, buf, sizeof(buf))) > 0; i++)
		;
	bad |= want_err("write past FSIZE", n, EFBIG);
	/* A second call cannot raise what the first lowered. */
	bad |= want_ok("again", sandbox_rlimits_apply(1024, 0, 0));
	bad |= want_limit("NOFILE kept", RLIMIT_NOFILE, 64, 64);
	return bad;
}

static void
t_rlimits(void **state)
{
	expect_pass(c_rlimits, "rlimits");
}

/*
 * A CPU backstop too large for the kernel's nanoseconds (or for its own
 * grace) is none, rather than one that wraps to a few seconds.
 */
static int
c_rlimits_cpu_no_wrap(void)
{
	if (sandbox_rlimits_apply(0, 0, UINT64_MAX) == -1 ||
	    sandbox_rlimits_apply(0, 0, 20000000000ULL) == -1)
		return 1;
	return want_limit("CPU", RLIMIT_CPU, RLIM_INFINITY, RLIM_INFINITY);
}

static void
t_rlimits_cpu_no_wrap(void **state)
{
	expect_pass(c_rlimits_cpu_no_wrap, "rlimits cpu no wrap");
}

static void
t_thread_env(void **state)
{
	static const struct {
		uint32_t	 pct;
		const char	*want;
	} cases[] = {
		{ 1, "1" }, { 100, "1" }, { 101, "2" },
		{ 250, "3" }, { 400, "4" }, { UINT32_MAX, "42949673" },
	};
	cpu_set_t set, one;
	char usable[24];
	int cpu;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sandbox_thread_env(cases[i].pct);
		assert_string_equal(getenv("OPENBLAS_NUM_THREADS"),
		    cases[i].want);
		assert_string_equal(getenv("OMP_NUM_THREADS"), cases[i].want);
		assert_string_equal(getenv("MKL_NUM_THREADS"), cases[i].want);
	}
	/* No CPU limit (--session-cpu 0): a thread per CPU it may use. */
	assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
	snprintf(usable, sizeof(usable), "%d",
	    CPU_COUNT(&set) > SANDBOX_THREADS_MAX ? SANDBOX_THREADS_MAX
	                                          : CPU_COUNT(&set));
	sandbox_thread_env(0);
	assert_string_equal(getenv("OPENBLAS_NUM_THREADS"), usable);
	assert_string_equal(getenv("NUMEXPR_MAX_THREADS"), usable);
	/* Held to one CPU, as a cpuset or AllowedCPUs= may hold it. */
	CPU_ZERO(&one);
	for (cpu = 0; cpu < CPU_SETSIZE && !CPU_ISSET(cpu, &set); cpu++)
		;
	CPU_SET(cpu, &one);
	assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
	sandbox_thread_env(0);
	assert_int_equal(sched_setaffinity(0, sizeof(set), &set), 0);
	assert_string_equal(getenv("OMP_NUM_THREADS"), "1");
	unsetenv("OPENBLAS_NUM_THREADS");
	unsetenv("OMP_NUM_THREADS");
	unsetenv("MKL_NUM_THREADS");
	unsetenv("NUMEXPR_NUM_THREADS");
	unsetenv("NUMEXPR_MAX_THREADS");
}

/* ---- Python under the whole policy ----------------------------------- */

#define PY_PRELUDE \
	"import os, sys\n" \
	"tmp = os.environ['TMPDIR']\n" \
	"def need(*mods):\n" \
	"    import importlib\n" \
	"    try:\n" \
	"        return [importlib.import_module(m) for m in mods]\n" \
	"    except ImportError:\n" \
	"        sys.exit(77)\n"

static const char py_core[] = PY_PRELUDE
	"import asyncio, concurrent.futures, faulthandler, mmap, shutil\n"
	"import multiprocessing, signal, socket, subprocess, tempfile\n"
	"import threading, time\n"
	"np, = need('numpy')\n"
	"faulthandler.enable()\n"
	"a = np.random.default_rng(1).random((300, 300))\n"
	"assert (a @ a).shape == (300, 300)\n"
	"assert np.ones((1000, 1000)).sum() == 1e6\n"
	"t = threading.Thread(target=time.sleep, args=(0.01,))\n"
	"t.start(); t.join()\n"
	"threading.Timer(0.01, lambda: None).start()\n"
	"with concurrent.futures.ThreadPoolExecutor(4) as ex:\n"
	"    assert sum(ex.map(abs, range(-5, 5))) == 25\n"
	"subprocess.run(['/bin/true'], check=True)\n"
	"out = subprocess.run(['/bin/sh', '-c', 'echo hi | tr a-z A-Z'],\n"
	"    capture_output=True, check=True).stdout\n"
	"assert out == b'HI\\n', out\n"
	"s1, s2 = socket.socketpair(); s1.sendall(b'x')\n"
	"assert s2.recv(1) == b'x'\n"
	"srv = socket.create_server(('127.0.0.1', 0))\n"
	"c = socket.create_connection(srv.getsockname(), timeout=5)\n"
	"conn, _ = srv.accept(); c.sendall(b'y'); assert conn.recv(1) == b'y'\n"
	"socket.if_nameindex()\n"
	/* A name lookup through NSS where the host resolves localhost (a
	 * minimal root has no /etc/hosts); the sandbox writes its own. */
	"socket.getaddrinfo('localhost' if os.path.exists('/etc/hosts')\n"
	"    else '127.0.0.1', 80)\n"
	"with tempfile.NamedTemporaryFile() as f:\n"
	"    f.write(b'x'); f.flush()\n"
	"with tempfile.TemporaryFile() as f:\n"
	"    f.write(b'x')\n"
	"d = tempfile.mkdtemp(); os.mkfifo(os.path.join(d, 'fifo'))\n"
	"open(os.path.join(d, 'a'), 'w').write('a')\n"
	"shutil.copy2(os.path.join(d, 'a'), os.path.join(d, 'b'))\n"
	"os.listdir(d); shutil.rmtree(d)\n"
	"pid = os.fork()\n"
	"if pid == 0:\n"
	"    os._exit(3)\n"
	"assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 3\n"
	"got = []\n"
	"signal.signal(signal.SIGUSR1, lambda *a: got.append(1))\n"
	"os.kill(os.getpid(), signal.SIGUSR1); assert got\n"
	"async def main():\n"
	"    q = asyncio.Queue()\n"
	"    await asyncio.gather(*(q.put(i) for i in range(5)))\n"
	"    await asyncio.sleep(0.01)\n"
	"    p = await asyncio.create_subprocess_exec('/bin/true')\n"
	"    assert await p.wait() == 0\n"
	"asyncio.run(main())\n"
	"ctx = multiprocessing.get_context('fork')\n"
	"with ctx.Pool(2) as pool:\n"
	"    assert pool.map(abs, [-1, -2]) == [1, 2]\n"
	"m = mmap.mmap(-1, 4096); m[:1] = b'a'; m.flush()\n"
	"os.sched_getaffinity(0); os.uname(); os.getloadavg()\n";

static const char py_pandas[] = PY_PRELUDE
	"np, pd, stats = need('numpy', 'pandas', 'scipy.stats')\n"
	"df = pd.DataFrame(np.random.default_rng(0).random((200, 6)),\n"
	"    columns=list('abcdef'))\n"
	"df['g'] = np.arange(200) % 4\n"
	"df.describe(); df.corr(); df.groupby('g').mean(); df.sort_values('a')\n"
	"stats.shapiro(df['a'])\n"
	"df.to_csv(os.path.join(tmp, 'x.csv'))\n"
	"assert len(pd.read_csv(os.path.join(tmp, 'x.csv'))) == 200\n";

static const char py_sklearn[] = PY_PRELUDE
	"ens, ms, ds = need('sklearn.ensemble', 'sklearn.model_selection',\n"
	"    'sklearn.datasets')\n"
	"X, y = ds.make_classification(n_samples=200, random_state=0)\n"
	"ens.RandomForestClassifier(n_estimators=20, n_jobs=2).fit(X, y)\n"
	"s = ms.cross_val_score(ens.RandomForestClassifier(n_estimators=10,\n"
	"    n_jobs=-1), X, y, cv=3, n_jobs=2)\n"
	"assert len(s) == 3\n";

static const char py_matplotlib[] = PY_PRELUDE
	"mpl, = need('matplotlib')\n"
	"mpl.use('Agg')\n"
	"import matplotlib.pyplot as plt\n"
	"fig, ax = plt.subplots(); ax.plot([1, 2, 3]); ax.set_title('t')\n"
	"fig.savefig(os.path.join(tmp, 'x.png'))\n"
	"assert os.path.getsize(os.path.join(tmp, 'x.png')) > 0\n";

static const char py_requests[] = PY_PRELUDE
	"requests, bs4 = need('requests', 'bs4')\n"
	"import http.server, threading\n"
	"os.chdir(tmp)\n"
	"open('index.html', 'w').write('<html><body><p>hi</p></body></html>')\n"
	"class H(http.server.SimpleHTTPRequestHandler):\n"
	"    def log_message(self, *a): pass\n"
	"srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)\n"
	"threading.Thread(target=srv.serve_forever, daemon=True).start()\n"
	"r = requests.get('http://127.0.0.1:%d/index.html'\n"
	"    % srv.server_address[1], timeout=10)\n"
	"assert bs4.BeautifulSoup(r.text, 'html.parser').p.text == 'hi'\n"
	"srv.shutdown()\n";

/* The pip phase: a venv without pip, and the host's pip installing a wheel. */
static const char py_pip[] = PY_PRELUDE
	"import base64, hashlib, subprocess, zipfile\n"
	"need('pip', 'venv')\n"
	"wh = os.path.join(tmp, 'wheels'); os.mkdir(wh)\n"
	"files = {'censusdemo/__init__.py': b'X = 1\\n',\n"
	"    'censusdemo-1.0.dist-info/METADATA':\n"
	"        b'Metadata-Version: 2.1\\nName: censusdemo\\nVersion: 1.0\\n',\n"
	"    'censusdemo-1.0.dist-info/WHEEL': b'Wheel-Version: 1.0\\n'\n"
	"        b'Generator: t\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'}\n"
	"def rec(p, d):\n"
	"    h = base64.urlsafe_b64encode(hashlib.sha256(d).digest())\n"
	"    return '%s,sha256=%s,%d' % (p, h.rstrip(b'=').decode(), len(d))\n"
	"record = '\\n'.join([rec(p, d) for p, d in files.items()]\n"
	"    + ['censusdemo-1.0.dist-info/RECORD,,']) + '\\n'\n"
	"with zipfile.ZipFile(os.path.join(wh,\n"
	"        'censusdemo-1.0-py3-none-any.whl'), 'w') as z:\n"
	"    for p, d in files.items():\n"
	"        z.writestr(p, d)\n"
	"    z.writestr('censusdemo-1.0.dist-info/RECORD', record)\n"
	"venv = os.path.join(tmp, 'venv')\n"
	"subprocess.run([sys.executable, '-m', 'venv', '--without-pip', venv],\n"
	"    check=True)\n"
	"py = os.path.join(venv, 'bin', 'python')\n"
	"subprocess.run([sys.executable, '-m', 'pip', '--isolated',\n"
	"    '--disable-pip-version-check', '--python', py, 'install',\n"
	"    '--no-index', '--find-links', wh, 'censusdemo'], check=True,\n"
	"    env=dict(os.environ, PIP_CONFIG_FILE='/dev/null'),\n"
	"    stdout=subprocess.DEVNULL)\n"
	"subprocess.run([py, '-c', 'import censusdemo'], check=True)\n";

static const char *py_code;
static char py_dir[PATH_MAX];

/*
 * In a child, as W2 would: rlimits, thread counts, Landlock (py_dir and
 * /dev/shm writable), the filter; then exec Python, which inherits them.
 */
static int
c_python(void)
{
	const char *writable[] = { py_dir, "/dev/shm" };
	/* The host's cgroup files, which loky reads where they exist: a
	 * session's root has no /sys at all. */
	const char *readable[] = { "/sys/fs/cgroup" };
	char mpl[PATH_MAX + 8];
	char *argv[] = { PYTHON, "-c", (char *)py_code, NULL };

	snprintf(mpl, sizeof(mpl), "%s/mpl", py_dir);
	clearenv();
	setenv("PATH", "/usr/bin:/bin", 1);
	setenv("LANG", "C.UTF-8", 1);
	setenv("HOME", py_dir, 1);
	setenv("TMPDIR", py_dir, 1);
	setenv("MPLCONFIGDIR", mpl, 1);
	setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
	sandbox_thread_env(200);
	if (sandbox_rlimits_apply(1024, 1ULL << 30, 0) == -1 ||
	    sandbox_landlock_apply(writable, 2, readable, 1) == -1)
		return 100;
	alarm(300);		/* survives exec: a hang fails, not blocks */
	enforce();
	execv(PYTHON, argv);
	fprintf(stderr, "execv: %s\n", strerror(errno));
	return 1;
}

static void
run_python(const char *name, const char *code)
{
	snprintf(py_dir, sizeof(py_dir), "%s/py-%s", base, name);
	assert_int_equal(mkdir(py_dir, 0700), 0);
	py_code = code;
	expect_pass(c_python, name);
}

static void
t_python_core(void **state)
{
	run_python("core", py_core);
}

static void
t_python_pandas(void **state)
{
	run_python("pandas", py_pandas);
}

static void
t_python_sklearn(void **state)
{
	run_python("sklearn", py_sklearn);
}

static void
t_python_matplotlib(void **state)
{
	run_python("matplotlib", py_matplotlib);
}

static void
t_python_requests(void **state)
{
	run_python("requests", py_requests);
}

static void
t_python_pip(void **state)
{
	run_python("pip", py_pip);
}

/* ---- set-up ---------------------------------------------------------- */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int
setup(void **state)
{
	if (geteuid() != 0) {
		fprintf(stderr, "test_sandbox_policy: needs root\n");
		return -1;
	}
	strcpy(base, "/tmp/rm-policy-XXXXXX");
	if (mkdtemp(base) == NULL)
		return -1;
	snprintf(mknod_dir, sizeof(mknod_dir), "%s/mknod", base);
	return mkdir(mknod_dir, 0700);
}

static int
teardown(void **state)
{
	return nftw(base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The egress ruleset: allows first, then the denials, then the defaults. */
static void
t_egress_ruleset(void **state)
{
	const char *allow[] = {"10.77.0.9/24"}, *deny[] = {"198.51.100.0/24"};
	const char *host[] = {"192.0.2.10/32", "fe80::1/128"}, *bad[] = {"x"};
	char *r, *a, *d, *h, *def;

	(void)state;
	r = sandbox_egress_ruleset(allow, 1, deny, 1, host, 2);
	assert_non_null(r);
	a = strstr(r, "ip daddr 10.77.0.0/24 accept"); /* host bits cleared */
	d = strstr(r, "ip daddr 198.51.100.0/24 reject");
	h = strstr(r, "ip daddr 192.0.2.10/32 reject");
	def = strstr(r, "ip daddr 169.254.0.0/16 reject");
	assert_non_null(a);
	assert_non_null(d);
	assert_non_null(h);
	assert_non_null(def);
	assert_true(a < d && d < h && h < def);
	assert_non_null(strstr(r, "ip6 daddr fe80::1/128 reject"));
	assert_non_null(strstr(r, "ip6 daddr fe80::/10 reject"));
	assert_non_null(strstr(r, "ip daddr 10.0.2.3 udp dport 53 accept"));
	assert_non_null(strstr(r, "type filter hook output"));
	free(r);
	assert_null(sandbox_egress_ruleset(bad, 1, NULL, 0, NULL, 0));
	assert_null(sandbox_egress_ruleset(NULL, 0, bad, 1, NULL, 0));
}

/* The ruleset loads in a network namespace of the test's own (the escape
 * suite shows what it refuses), and nftables reads it back. */
static int
egress_loaded(const char *rules)
{
	struct nft_ctx *nft;
	const char *out;
	int ok;

	if (unshare(CLONE_NEWNET) == -1 || sandbox_egress_apply(rules) == -1)
		return 0;
	if ((nft = nft_ctx_new(NFT_CTX_DEFAULT)) == NULL)
		return 0;
	nft_ctx_buffer_output(nft);
	ok = nft_run_cmd_from_buffer(nft, "list table inet remotemedia_egress") ==
	    0;
	out = nft_ctx_get_output_buffer(nft);
	ok = ok && out != NULL && strstr(out, "192.0.2.0/24") != NULL &&
	    strstr(out, "hook output") != NULL;
	nft_ctx_free(nft);
	return ok;
}

static void
t_egress_apply(void **state)
{
	const char *deny[] = {"192.0.2.0/24"};
	char *r;
	pid_t pid;
	int st;

	(void)state;
	if (geteuid() != 0)
		skip();
	r = sandbox_egress_ruleset(NULL, 0, deny, 1, NULL, 0);
	assert_non_null(r);
	if ((pid = fork()) == 0)
		_exit(egress_loaded(r) ? 0 : 1);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* A ruleset nftables refuses is an error, not a crash. */
	if ((pid = fork()) == 0)
		_exit(unshare(CLONE_NEWNET) == 0 &&
		        sandbox_egress_apply("table inet x { bogus }") == -1
		    ? 0
		    : 1);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(WEXITSTATUS(st), 0);
	free(r);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(t_egress_ruleset),
		cmocka_unit_test(t_egress_apply),
		cmocka_unit_test(t_seccomp_name),
		cmocka_unit_test(t_seccomp_soft),
		cmocka_unit_test(t_seccomp_works),
		cmocka_unit_test(t_seccomp_violation),
		cmocka_unit_test(t_landlock_masks),
		cmocka_unit_test(t_landlock_apply),
		cmocka_unit_test(t_landlock_abstract),
		cmocka_unit_test(t_rlimits),
		cmocka_unit_test(t_rlimits_cpu_no_wrap),
		cmocka_unit_test(t_thread_env),
		cmocka_unit_test(t_python_core),
		cmocka_unit_test(t_python_pandas),
		cmocka_unit_test(t_python_sklearn),
		cmocka_unit_test(t_python_matplotlib),
		cmocka_unit_test(t_python_requests),
		cmocka_unit_test(t_python_pip),
	};

	log_init("test", LOG_LEVEL_WARN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
/* clang-format on */
