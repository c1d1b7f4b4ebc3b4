/*
 * Landlock, the second wall (architecture section 5, step 6): W2 may write,
 * create, remove, rename and truncate only beneath the writable directories
 * it is given (the session directory and /tmp), and write to a few device
 * files. It may read and execute only beneath those, the readable paths it
 * is given (the environment), the Python installation it was built with,
 * the system's libraries and commands, and the few data trees that the
 * scientific stack reads (ll_read_system). The rest of what the mount
 * namespace shows (/usr/share, /usr/local, /usr/include, /usr/sbin, the
 * root's own listing) is refused with EACCES.
 *
 * Debian 12's <linux/landlock.h> stops at ABI 2 while the kernel may be
 * newer, so the newer constants are defined here and the ABI is negotiated
 * at run time: only the rights that the running kernel knows are handled.
 */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <linux/landlock.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sandbox_policy.h"

#ifndef LANDLOCK_CREATE_RULESET_VERSION
#define LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#endif
#ifndef LANDLOCK_ACCESS_FS_REFER
#define LANDLOCK_ACCESS_FS_REFER (1ULL << 13) /* ABI 2 */
#endif
#ifndef LANDLOCK_ACCESS_FS_TRUNCATE
#define LANDLOCK_ACCESS_FS_TRUNCATE (1ULL << 14) /* ABI 3 */
#endif
#ifndef LANDLOCK_ACCESS_FS_IOCTL_DEV
#define LANDLOCK_ACCESS_FS_IOCTL_DEV (1ULL << 15) /* ABI 5 */
#endif
#ifndef LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET
#define LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0) /* ABI 6 */
#endif

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_add_rule
#define __NR_landlock_add_rule 445
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif

/* The read-type rights, all of ABI 1. */
#define LL_READ \
	(LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR | \
	    LANDLOCK_ACCESS_FS_EXECUTE)

/* Every write-type right of ABI 1. */
#define LL_WRITE_ABI1 \
	(LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR | \
	    LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR | \
	    LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | \
	    LANDLOCK_ACCESS_FS_MAKE_SOCK | LANDLOCK_ACCESS_FS_MAKE_FIFO | \
	    LANDLOCK_ACCESS_FS_MAKE_BLOCK | LANDLOCK_ACCESS_FS_MAKE_SYM)

/* The rights that may be granted on a file rather than a directory. */
#define LL_FILE_RIGHTS \
	(LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_WRITE_FILE | \
	    LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_TRUNCATE | \
	    LANDLOCK_ACCESS_FS_IOCTL_DEV)

/*
 * Our own copy of the ruleset attribute: the system header lacks the
 * fields of ABI 4 and 6. Passing the whole struct is fine on older
 * kernels, since the fields they do not know are zero there.
 */
struct ll_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net; /* ABI 4; not handled here */
	uint64_t scoped; /* ABI 6 */
};

/*
 * Device files that any process may write (as files, not as directories:
 * a rule on a directory would apply to everything beneath it). Missing
 * ones are skipped. /dev/pts is a directory, given file rights only.
 */
static const char *const ll_dev_files[] = {
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
};

/*
 * The Python installation the worker embeds: its standard library and its
 * site directories, from the build's sysconfig (the Makefile sets it), as
 * a ':'-separated list. The environment's own site-packages is passed by
 * the caller; entries that a .pth file adds to sys.path are not trusted.
 */
#ifndef RM_PY_READ_PATHS
#define RM_PY_READ_PATHS "/usr/lib/python3:/usr/local/lib/python3/dist-packages"
#endif
/*
 * The shared libraries' directories, ':'-separated: Python's LIBDIR and
 * the system's multiarch ones (the Makefile sets them from sysconfig).
 */
#ifndef RM_LIB_PATHS
#define RM_LIB_PATHS "/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu"
#endif

/*
 * What every session may read besides its own trees: the commands and the
 * shared libraries (read and executed by execve and ld.so), the locale
 * archive, os-release (pip and platform read it), and the data that the
 * CA bundle, time zones and matplotlib's fonts live in; /etc, /proc and /dev, which the minimal root already
 * reduces to what a session needs, are read but not executed. Missing
 * paths are skipped.
 */
static const struct {
	const char *path;
	uint64_t access;
} ll_read_system[] = {
    {"/usr/bin", LL_READ},
    {"/usr/lib64", LL_READ},
    /* Where /usr is not merged; ll_add_optional skips them as symlinks,
     * which would otherwise grant all of /usr/lib. */
    {"/bin", LL_READ},
    {"/lib64", LL_READ},
    {"/usr/lib/locale", LL_READ},
    {"/usr/lib/os-release", LANDLOCK_ACCESS_FS_READ_FILE},
    {"/usr/share/ca-certificates", LL_READ & ~LANDLOCK_ACCESS_FS_EXECUTE},
    {"/usr/share/zoneinfo", LL_READ & ~LANDLOCK_ACCESS_FS_EXECUTE},
    {"/usr/share/fonts", LL_READ & ~LANDLOCK_ACCESS_FS_EXECUTE},
    {"/usr/share/matplotlib", LL_READ & ~LANDLOCK_ACCESS_FS_EXECUTE},
    {"/etc", LL_READ & ~LANDLOCK_ACCESS_FS_EXECUTE},
    {"/proc", LL_READ & ~LANDLOCK_ACCESS_FS_EXECUTE},
    {"/dev", LL_READ & ~LANDLOCK_ACCESS_FS_EXECUTE},
};

static int ll_kernel_abi(void);

int (*sandbox_landlock_abi_hook)(void) = ll_kernel_abi;

/* The ABI version query of landlock_create_ruleset(2), 0 if none. */
static int
ll_kernel_abi(void)
{
	long abi;

	abi = syscall(__NR_landlock_create_ruleset, NULL, 0,
	    LANDLOCK_CREATE_RULESET_VERSION);
	if (abi < 0)
		return 0; /* ENOSYS, or EOPNOTSUPP when disabled at boot */
	return (int)abi;
}

int
sandbox_landlock_abi(void)
{
	return ll_kernel_abi();
}

uint64_t
sandbox_landlock_fs_access(int abi)
{
	uint64_t access = 0;

	if (abi >= 1)
		access |= LL_READ | LL_WRITE_ABI1;
	if (abi >= 2)
		access |= LANDLOCK_ACCESS_FS_REFER;
	if (abi >= 3)
		access |= LANDLOCK_ACCESS_FS_TRUNCATE;
	if (abi >= 5)
		access |= LANDLOCK_ACCESS_FS_IOCTL_DEV;
	return access;
}

/* Allow access beneath path (or on it, for a file). */
static int
ll_add_path(int ruleset, const char *path, uint64_t access)
{
	struct landlock_path_beneath_attr pb;
	int fd, rc, saved;

	if ((fd = open(path, O_PATH | O_CLOEXEC)) == -1)
		return -1;
	memset(&pb, 0, sizeof(pb));
	pb.allowed_access = access;
	pb.parent_fd = fd;
	rc = (int)syscall(__NR_landlock_add_rule, ruleset,
	    LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
	saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

/* The writable directories: every handled right, beneath each. */
static int
ll_add_writable(
    int ruleset, const char *const *writable, size_t n, uint64_t handled)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (ll_add_path(ruleset, writable[i], handled) == -1) {
			log_warn("%s: %s", __func__, writable[i]);
			return -1;
		}
	}
	return 0;
}

/*
 * Allow access on path, or on nothing if it is missing or a symlink (the
 * rule would apply to its target) and not required; a file gets only the
 * rights a file can take. -1 only on a real failure, or a required path
 * that cannot take a rule.
 */
static int
ll_add_existing(int ruleset, const char *path, uint64_t access, int required)
{
	struct stat st;

	if (lstat(path, &st) == -1 || S_ISLNK(st.st_mode)) {
		if (required)
			goto fail;
		log_debug("landlock: %s: skipped", path);
		return 0;
	}
	if (!S_ISDIR(st.st_mode))
		access &= LL_FILE_RIGHTS;
	if (access == 0 || ll_add_path(ruleset, path, access) == 0)
		return 0;
	if (!required &&
	    (errno == ENOENT || errno == ENOTDIR || errno == EACCES)) {
		log_debug("landlock: %s: skipped", path);
		return 0;
	}
fail:
	log_warn("landlock: %s", path);
	return -1;
}

static int
ll_add_optional(int ruleset, const char *path, uint64_t access)
{
	return ll_add_existing(ruleset, path, access, 0);
}

/* The device files: writing, truncating (O_TRUNC) and device ioctls. */
static int
ll_add_devices(int ruleset, uint64_t handled)
{
	uint64_t access = handled & LL_FILE_RIGHTS;
	size_t i;

	for (i = 0; i < sizeof(ll_dev_files) / sizeof(ll_dev_files[0]); i++)
		if (ll_add_optional(ruleset, ll_dev_files[i], access) == -1)
			return -1;
	return 0;
}

/*
 * What may be read and executed: the caller's readable paths (each must
 * exist), the Python installation and the system's (ll_read_system).
 */
static int
ll_add_readable(
    int ruleset, const char *const *readable, size_t n, uint64_t handled)
{
	char paths[] = RM_PY_READ_PATHS ":" RM_LIB_PATHS, *p, *last;
	size_t i;

	for (i = 0; i < n; i++)
		if (ll_add_existing(
		        ruleset, readable[i], handled & LL_READ, 1) == -1)
			return -1;
	for (p = strtok_r(paths, ":", &last); p != NULL;
	     p = strtok_r(NULL, ":", &last))
		if (ll_add_optional(ruleset, p, handled & LL_READ) == -1)
			return -1;
	for (i = 0; i < sizeof(ll_read_system) / sizeof(ll_read_system[0]); i++)
		if (ll_add_optional(ruleset, ll_read_system[i].path,
		        handled & ll_read_system[i].access) == -1)
			return -1;
	return 0;
}

/*
 * Build the ruleset for abi and restrict the calling thread (and its
 * future children) to it. From ABI 6 the domain also may not connect to
 * abstract unix sockets created outside it, which matters with the host
 * network policy, where those of the host would otherwise be reachable.
 */
static int
ll_restrict(int abi, const char *const *writable, size_t n,
    const char *const *readable, size_t nr)
{
	struct ll_ruleset_attr attr;
	int ruleset, rc = -1;

	memset(&attr, 0, sizeof(attr));
	attr.handled_access_fs = sandbox_landlock_fs_access(abi);
	if (abi >= 6)
		attr.scoped = LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET;
	ruleset = (int)syscall(
	    __NR_landlock_create_ruleset, &attr, sizeof(attr), 0);
	if (ruleset == -1) {
		log_warn("%s: landlock_create_ruleset (ABI %d)", __func__, abi);
		return -1;
	}
	if (ll_add_writable(ruleset, writable, n, attr.handled_access_fs) ==
	        -1 ||
	    ll_add_readable(ruleset, readable, nr, attr.handled_access_fs) ==
	        -1 ||
	    ll_add_devices(ruleset, attr.handled_access_fs) == -1)
		goto out;
	if (syscall(__NR_landlock_restrict_self, ruleset, 0) == -1) {
		log_warn("%s: landlock_restrict_self", __func__);
		goto out;
	}
	rc = 0;
out:
	close(ruleset);
	return rc;
}

int
sandbox_landlock_apply(const char *const *writable, size_t n,
    const char *const *readable, size_t nr)
{
	int abi;

	/* Required for an unprivileged restrict_self; seccomp needs it too. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1) {
		log_warn("%s: PR_SET_NO_NEW_PRIVS", __func__);
		return -1;
	}
	abi = sandbox_landlock_abi_hook();
	if (abi <= 0) {
		log_info("landlock: not supported by this kernel; skipped "
		         "(seccomp and the mount namespace still apply)");
		return 0;
	}
	if (ll_restrict(abi, writable, n, readable, nr) == -1)
		return -1;
	log_debug("%s: landlock ABI %d, %zu writable and %zu readable paths",
	    __func__, abi, n, nr);
	return abi;
}
