/*
 * The sandbox's filesystem and identity, run by W1 (sandbox.h): PID 1 of
 * the session's new PID namespace, in its own mount namespace, still root.
 *
 * The new root is built the way bubblewrap builds one. A scratch tmpfs is
 * mounted on /tmp and pivoted to, so that the host's root sits at /oldroot
 * (with its /tmp uncovered) while the session's root is put together in
 * /newroot, another tmpfs:
 *
 *   /usr, /lib*          read-only binds (or the host's symlinks, merged /usr)
 *   /bin, /sbin          the same
 *   /etc                 the few files Python, libc and DNS need, read-only,
 *                        each skipped where the host lacks it; passwd, group,
 *                        hosts, hostname, nsswitch.conf, resolv.conf written
 *   /dev                 null zero full random urandom tty, /dev/shm tmpfs,
 *                        fd and std* links; the tmpfs itself read-only
 *   /proc                a new proc of the session's PID namespace
 *   /tmp                 a size-limited tmpfs, 1777
 *   <session dir>        a size-limited tmpfs, 0700, the session's own,
 *                        at the host path, so that cwd and HOME stay valid
 *   <env dir>            the environment, read-only at the host path, so
 *                        that its sys.path entries stay valid
 *
 * Then a second pivot_root makes /newroot the root, the old trees are
 * detached, and the root tmpfs is made read-only. Nothing else of the host
 * is reachable: no other session, no state dir, no keys, no /sys.
 */
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

#include <linux/capability.h>

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "sandbox.h"

/* What this file gives sandbox.c (there is no private header). */
int sandbox_ns_root(const struct sandbox_conf *);
int sandbox_ns_identity(const struct sandbox_conf *);
/* From sandbox_net.c. */
const char *sandbox_net_resolv(const struct sandbox_conf *);

#define NS_SCRATCH "/tmp" /* where the scratch tmpfs goes, at first */
#define NS_OLD "/oldroot" /* the host's root, after the first pivot */
#define NS_NEW "/newroot" /* the session's root, being built */
#define NS_HOSTNAME "remotemedia"
#define NS_USER "remotemedia"
#define NS_INODES 65536
#define NS_BUILD_TMPFS (256ULL << 20)
/* How the host's trees are bound: read-only, no setuid, no devices. */
#define NS_RO (MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)

/* Host paths mirrored read-only at the top: a bind, or the host's symlink. */
static const char *const ns_top[] = {
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};

/* /etc entries bound read-only when the host has them. */
static const char *const ns_etc_files[] = {"localtime", "timezone",
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl/certs", "ssl/openssl.cnf",
    "ca-certificates", "alternatives", "mime.types", "protocols", "services",
    "host.conf", "gai.conf", "matplotlibrc", "fonts", "os-release"};

/* Device nodes bound from the host's /dev. */
static const char *const ns_devices[] = {
    "null", "zero", "full", "random", "urandom", "tty"};

/* Links in the new /dev: name, target. */
static const char *const ns_dev_links[][2] = {{"fd", "/proc/self/fd"},
    {"stdin", "/proc/self/fd/0"}, {"stdout", "/proc/self/fd/1"},
    {"stderr", "/proc/self/fd/2"}};

/* Join a prefix and an absolute path; -1 if it does not fit. */
static int
ns_path(char *buf, const char *prefix, const char *path)
{
	int n;

	n = snprintf(buf, PATH_MAX, "%s%s", prefix, path);
	if (n < 0 || n >= PATH_MAX) {
		log_warnx("path too long: %s%s", prefix, path);
		return -1;
	}
	return 0;
}

/* Mount a tmpfs on dst with the given flags and options. */
static int
ns_tmpfs(const char *dst, unsigned long flags, const char *opts)
{
	if (mount("tmpfs", dst, "tmpfs", flags, opts) == -1) {
		log_warn("mount tmpfs on %s (%s)", dst, opts);
		return -1;
	}
	return 0;
}

/* Set mount attributes on dst and every mount under it. */
static int
ns_setattr(const char *dst, uint64_t attrs)
{
	struct mount_attr ma;

	memset(&ma, 0, sizeof(ma));
	ma.attr_set = attrs;
	if (mount_setattr(AT_FDCWD, dst, AT_RECURSIVE, &ma, sizeof(ma)) == 0)
		return 0;
	log_warn("mount_setattr %s", dst);
	return -1;
}

/* Create an empty file or directory at dst for a bind of src's type. */
static int
ns_mountpoint(const char *dst, const struct stat *st)
{
	int fd;

	if (S_ISDIR(st->st_mode)) {
		if (mkdir_p(dst, 0755) == -1) {
			log_warn("mkdir %s", dst);
			return -1;
		}
		return 0;
	}
	if ((fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0444)) == -1) {
		log_warn("create %s", dst);
		return -1;
	}
	close(fd);
	return 0;
}

/*
 * Bind the host's path (seen under NS_OLD) at the same path under NS_NEW,
 * with the given mount attributes. A symlink is copied as a symlink, and a
 * path the host lacks is skipped unless it is required.
 */
static int
ns_bind(const char *path, uint64_t attrs, int required)
{
	char src[PATH_MAX], dst[PATH_MAX], target[PATH_MAX];
	struct stat st;
	ssize_t n;

	if (ns_path(src, NS_OLD, path) == -1 ||
	    ns_path(dst, NS_NEW, path) == -1)
		return -1;
	if (lstat(src, &st) == -1) {
		if (required || errno != ENOENT) {
			log_warn("bind %s", path);
			return -1;
		}
		log_debug("%s: the host has no %s: skipped", __func__, path);
		return 0;
	}
	if (S_ISLNK(st.st_mode)) {
		if ((n = readlink(src, target, sizeof(target) - 1)) == -1) {
			log_warn("readlink %s", path);
			return -1;
		}
		target[n] = '\0';
		if (symlink(target, dst) == -1) {
			log_warn("symlink %s", path);
			return -1;
		}
		return 0;
	}
	if (ns_mountpoint(dst, &st) == -1)
		return -1;
	if (mount(src, dst, NULL, MS_BIND | MS_REC, NULL) == -1) {
		log_warn("bind %s", path);
		return -1;
	}
	return ns_setattr(dst, attrs);
}

/* Write a small generated file under NS_NEW. */
static int
ns_write(const char *path, const char *text, mode_t mode)
{
	char dst[PATH_MAX];
	size_t len = strlen(text);
	int fd;

	if (ns_path(dst, NS_NEW, path) == -1)
		return -1;
	if ((fd = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode)) ==
	    -1) {
		log_warn("create %s", dst);
		return -1;
	}
	if (write(fd, text, len) != (ssize_t)len) {
		log_warn("write %s", dst);
		close(fd);
		return -1;
	}
	return close(fd);
}

/*
 * The first pivot: a scratch tmpfs becomes the root and the host's root
 * moves to /oldroot, so that every host path stays reachable as a bind
 * source while /newroot is built.
 */
static int
ns_scratch(void)
{
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == -1) {
		/* EINVAL: "/" is no mount point, as in a plain chroot. */
		log_warn("make / private%s",
		    errno == EINVAL ? " (the root must be a mount point)" : "");
		return -1;
	}
	if (ns_tmpfs(NS_SCRATCH, MS_NOSUID | MS_NODEV, "mode=0755,size=64k") ==
	    -1)
		return -1;
	if (mkdir(NS_SCRATCH NS_OLD, 0755) == -1 ||
	    mkdir(NS_SCRATCH NS_NEW, 0755) == -1) {
		log_warn("mkdir in the scratch root");
		return -1;
	}
	if (syscall(SYS_pivot_root, NS_SCRATCH, NS_SCRATCH NS_OLD) == -1) {
		log_warn("pivot_root to the scratch root");
		return -1;
	}
	if (chdir("/") == -1) {
		log_warn("chdir /");
		return -1;
	}
	return ns_tmpfs(NS_NEW, MS_NOSUID | MS_NODEV, "mode=0755,size=1m");
}

/* /usr and the top-level /bin, /sbin, /lib*: read-only, or symlinks. */
static int
ns_system(void)
{
	size_t i;

	for (i = 0; i < sizeof(ns_top) / sizeof(ns_top[0]); i++)
		if (ns_bind(ns_top[i], NS_RO, strcmp(ns_top[i], "/usr") == 0) ==
		    -1)
			return -1;
	return 0;
}

/*
 * Bind /etc/python3* (Debian's sitecustomize, which /usr/lib/python3.X
 * links to: the worker does not run it, but a session may import it).
 */
static int
ns_etc_python(void)
{
	glob_t g;
	size_t i;
	int rv = 0;

	if (glob(NS_OLD "/etc/python3*", 0, NULL, &g) != 0)
		return 0;
	for (i = 0; i < g.gl_pathc && rv == 0; i++)
		rv = ns_bind(g.gl_pathv[i] + strlen(NS_OLD), NS_RO, 0);
	globfree(&g);
	return rv;
}

/*
 * The session's own name service: its passwd, group and hosts are ours,
 * and the host's modules (systemd, sss, ldap) have nothing to reach here.
 */
#define NS_NSSWITCH \
	"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n" \
	"networks: files\nprotocols: files\nservices: files\n"

/* The session's own passwd, group, hosts, hostname and nsswitch.conf. */
static int
ns_etc_identity(const struct sandbox_conf *sc)
{
	char buf[PATH_MAX + 8192];

	snprintf(buf, sizeof(buf),
	    "root:x:0:0:root:/root:/usr/sbin/nologin\n"
	    "%s:x:%u:%u:remotemedia session:%s:/usr/sbin/nologin\n"
	    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
	    NS_USER, (unsigned)sc->sc_uid, (unsigned)sc->sc_gid,
	    sc->sc_session_dir);
	if (ns_write("/etc/passwd", buf, 0644) == -1)
		return -1;
	snprintf(buf, sizeof(buf), "root:x:0:\n%s:x:%u:\nnogroup:x:65534:\n",
	    NS_USER, (unsigned)sc->sc_gid);
	if (ns_write("/etc/group", buf, 0644) == -1)
		return -1;
	/* A build's index names map to its forwarder's listeners. */
	snprintf(buf, sizeof(buf),
	    "127.0.0.1\tlocalhost\n"
	    "127.0.1.1\t" NS_HOSTNAME "\n"
	    "::1\tlocalhost ip6-localhost ip6-loopback\n%s",
	    sc->sc_hosts != NULL ? sc->sc_hosts : "");
	if (ns_write("/etc/hosts", buf, 0644) == -1)
		return -1;
	if (ns_write("/etc/nsswitch.conf", NS_NSSWITCH, 0644) == -1)
		return -1;
	return ns_write("/etc/hostname", NS_HOSTNAME "\n", 0644);
}

/* /etc: the few host files that Python and libc need, and our own. */
static int
ns_etc(const struct sandbox_conf *sc)
{
	const char *resolv;
	char path[PATH_MAX];
	size_t i;

	/* /etc/ssl: the CA certificates, never the host's private keys. */
	if (mkdir(NS_NEW "/etc", 0755) == -1 ||
	    mkdir(NS_NEW "/etc/ssl", 0755) == -1) {
		log_warn("mkdir /etc");
		return -1;
	}
	for (i = 0; i < sizeof(ns_etc_files) / sizeof(ns_etc_files[0]); i++) {
		snprintf(path, sizeof(path), "/etc/%s", ns_etc_files[i]);
		if (ns_bind(path, NS_RO, 0) == -1)
			return -1;
	}
	if (ns_etc_python() == -1 || ns_etc_identity(sc) == -1)
		return -1;
	if (sc->sc_network == SANDBOX_NET_HOST)
		return ns_bind("/etc/resolv.conf", NS_RO, 0);
	if ((resolv = sandbox_net_resolv(sc)) != NULL)
		return ns_write("/etc/resolv.conf", resolv, 0644);
	return 0;
}

/* A minimal /dev: a few host nodes, /dev/shm, and links into /proc. */
static int
ns_dev(uint64_t shm_bytes)
{
	char path[PATH_MAX], opts[128];
	size_t i;

	if (mkdir(NS_NEW "/dev", 0755) == -1 ||
	    ns_tmpfs(NS_NEW "/dev", MS_NOSUID | MS_NOEXEC,
	        "mode=0755,size=64k,nr_inodes=64") == -1)
		return -1;
	for (i = 0; i < sizeof(ns_devices) / sizeof(ns_devices[0]); i++) {
		snprintf(path, sizeof(path), "/dev/%s", ns_devices[i]);
		if (ns_bind(path, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
		        strcmp(ns_devices[i], "tty") != 0) == -1)
			return -1;
	}
	for (i = 0; i < sizeof(ns_dev_links) / sizeof(ns_dev_links[0]); i++) {
		snprintf(
		    path, sizeof(path), NS_NEW "/dev/%s", ns_dev_links[i][0]);
		if (symlink(ns_dev_links[i][1], path) == -1) {
			log_warn("symlink %s", path);
			return -1;
		}
	}
	snprintf(opts, sizeof(opts),
	    "mode=1777,size=%" PRIu64 ",nr_inodes=4096", shm_bytes);
	if (mkdir(NS_NEW "/dev/shm", 0755) == -1 ||
	    ns_tmpfs(NS_NEW "/dev/shm", MS_NOSUID | MS_NODEV, opts) == -1)
		return -1;
	if (mount(NULL, NS_NEW "/dev", NULL,
	        MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
	        NULL) == -1) {
		log_warn("remount /dev read-only");
		return -1;
	}
	return 0;
}

/*
 * A proc of the session's PID namespace (W1 is its PID 1, so the kernel
 * takes the namespace from W1), with other users' processes hidden.
 */
static int
ns_proc(void)
{
	static const char *const opts[] = {
	    "hidepid=invisible", "hidepid=2", NULL};
	size_t i;

	if (mkdir(NS_NEW "/proc", 0555) == -1) {
		log_warn("mkdir /proc");
		return -1;
	}
	for (i = 0; i < sizeof(opts) / sizeof(opts[0]); i++)
		if (mount("proc", NS_NEW "/proc", "proc",
		        MS_NOSUID | MS_NODEV | MS_NOEXEC, opts[i]) == 0)
			return 0;
	log_warn("mount /proc");
	return -1;
}

/* Create the directories of path under NS_NEW, as root, mode 0755. */
static int
ns_mkdirs(const char *path, char *dst)
{
	if (ns_path(dst, NS_NEW, path) == -1)
		return -1;
	if (mkdir_p(dst, 0755) == -1) {
		log_warn("mkdir %s", dst);
		return -1;
	}
	return 0;
}

/*
 * /tmp and the session directory: fresh size-limited tmpfs. The session
 * directory is the session uid's own, at its host path, with the tmp/ in
 * it that TMPDIR names. /tmp comes first: the session directory may lie
 * under it.
 */
static int
ns_session(const struct sandbox_conf *sc, uint64_t bytes)
{
	char dst[PATH_MAX], tmp[PATH_MAX], opts[256];

	snprintf(opts, sizeof(opts), "mode=1777,size=%" PRIu64 ",nr_inodes=%d",
	    bytes, NS_INODES);
	if (mkdir(NS_NEW "/tmp", 01777) == -1 ||
	    ns_tmpfs(NS_NEW "/tmp", MS_NOSUID | MS_NODEV, opts) == -1)
		return -1;
	if (ns_mkdirs(sc->sc_session_dir, dst) == -1)
		return -1;
	/* A build writes the host's entry itself, and nothing else. */
	if (sc->sc_build)
		return ns_bind(sc->sc_session_dir,
		    MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 1);
	snprintf(opts, sizeof(opts),
	    "mode=0700,uid=%u,gid=%u,size=%" PRIu64 ",nr_inodes=%d",
	    (unsigned)sc->sc_uid, (unsigned)sc->sc_gid, bytes, NS_INODES);
	if (ns_tmpfs(dst, MS_NOSUID | MS_NODEV, opts) == -1)
		return -1;
	if (ns_path(tmp, dst, "/tmp") == -1)
		return -1;
	if (mkdir(tmp, 0700) == -1 ||
	    chown(tmp, sc->sc_uid, sc->sc_gid) == -1) {
		log_warn("the session's tmp %s", tmp);
		return -1;
	}
	return 0;
}

/* A host directory or file, read-only at its path, unless the root shows
 * it already. */
static int
ns_readonly(const char *path)
{
	char dst[PATH_MAX], parent[PATH_MAX], *slash;
	struct stat st;

	if (path[0] != '/') {
		log_warnx("not an absolute path: %s", path);
		return -1;
	}
	if (ns_path(dst, NS_NEW, path) == -1)
		return -1;
	if (stat(dst, &st) == 0)
		return 0;
	snprintf(parent, sizeof(parent), "%s", path);
	if ((slash = strrchr(parent, '/')) != NULL && slash != parent) {
		*slash = '\0';
		if (ns_mkdirs(parent, dst) == -1)
			return -1;
	}
	return ns_bind(path, NS_RO, 1);
}

/* The environment and the other readable directories, read-only. */
static int
ns_env(const struct sandbox_conf *sc)
{
	size_t i;

	if (sc->sc_env_dir != NULL && sc->sc_env_dir[0] != '\0' &&
	    ns_readonly(sc->sc_env_dir) == -1)
		return -1;
	for (i = 0; i < sc->sc_n_readable; i++)
		if (ns_readonly(sc->sc_readable[i]) == -1)
			return -1;
	return 0;
}

/*
 * The second pivot: /newroot becomes the root, the scratch root and the
 * host's tree under it are detached, and the root tmpfs goes read-only.
 */
static int
ns_enter(const char *cwd)
{
	if (chdir(NS_NEW) == -1 || syscall(SYS_pivot_root, ".", ".") == -1) {
		log_warn("pivot_root to the new root");
		return -1;
	}
	if (umount2(".", MNT_DETACH) == -1 || chdir("/") == -1) {
		log_warn("detach the old root");
		return -1;
	}
	if (mount(NULL, "/", NULL,
	        MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
	        NULL) == -1) {
		log_warn("remount / read-only");
		return -1;
	}
	if (chdir(cwd) == -1) {
		log_warn("chdir %s", cwd);
		return -1;
	}
	return 0;
}

/*
 * Build the session's root and enter it (see the top of this file), and
 * name the UTS namespace. Runs in W1, as root, in fresh namespaces.
 */
int
sandbox_ns_root(const struct sandbox_conf *sc)
{
	/* sandbox.c never leaves 0; a build's tmpfs (its TMPDIR is in the
	 * entry) need not be big, and is memory. */
	uint64_t bytes = sc->sc_build ? NS_BUILD_TMPFS : sc->sc_disk_bytes;

	if (sc->sc_session_dir == NULL || sc->sc_session_dir[0] != '/') {
		log_warnx("the session directory must be an absolute path");
		return -1;
	}
	if (ns_scratch() == -1 || ns_system() == -1 || ns_etc(sc) == -1 ||
	    ns_dev(bytes) == -1 || ns_proc() == -1 ||
	    ns_session(sc, bytes) == -1 || ns_env(sc) == -1 ||
	    ns_enter(sc->sc_session_dir) == -1)
		return -1;
	if (sethostname(NS_HOSTNAME, strlen(NS_HOSTNAME)) == -1) {
		log_warn("sethostname");
		return -1;
	}
	return 0;
}

/* Empty the bounding set: no later execve can regain a capability. */
static int
ns_drop_bounding(void)
{
	int cap;

	for (cap = 0; cap <= 63; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1) {
			if (errno == EINVAL)
				break; /* past the kernel's last capability */
			log_warn("PR_CAPBSET_DROP %d", cap);
			return -1;
		}
	}
	return 0;
}

/* Clear the permitted, effective, inheritable and ambient sets. */
static int
ns_drop_caps(void)
{
	struct __user_cap_header_struct hdr;
	struct __user_cap_data_struct data[2];

	memset(&hdr, 0, sizeof(hdr));
	memset(data, 0, sizeof(data));
	hdr.version = _LINUX_CAPABILITY_VERSION_3;
	if (syscall(SYS_capset, &hdr, data) == -1) {
		log_warn("capset");
		return -1;
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1 &&
	    errno != EINVAL) {
		log_warn("PR_CAP_AMBIENT_CLEAR_ALL");
		return -1;
	}
	return 0;
}

/*
 * Become the session's uid and gid for good: no supplementary groups, no
 * capabilities in any set, no new privileges, and the parent-death signal
 * re-armed, since the change of uid cleared it.
 */
int
sandbox_ns_identity(const struct sandbox_conf *sc)
{
	uid_t r, e, s;

	if (sc->sc_uid == 0 || sc->sc_gid == 0) {
		log_warnx("refusing to run a session as uid or gid 0");
		return -1;
	}
	if (ns_drop_bounding() == -1)
		return -1;
	if (setgroups(0, NULL) == -1 ||
	    setresgid(sc->sc_gid, sc->sc_gid, sc->sc_gid) == -1 ||
	    setresuid(sc->sc_uid, sc->sc_uid, sc->sc_uid) == -1) {
		log_warn("cannot become uid %u gid %u", (unsigned)sc->sc_uid,
		    (unsigned)sc->sc_gid);
		return -1;
	}
	if (getresuid(&r, &e, &s) == -1 || r != sc->sc_uid || e != sc->sc_uid ||
	    s != sc->sc_uid || setuid(0) != -1) {
		log_warnx("the uid change did not hold");
		return -1;
	}
	if (ns_drop_caps() == -1)
		return -1;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == -1 ||
	    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) == -1) {
		log_warn("prctl");
		return -1;
	}
	return 0;
}
