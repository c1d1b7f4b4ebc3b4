/*
 * Session cgroups: discovery, creation with limits, joining, the checks the
 * front makes when a worker dies, and destruction (sandbox_cgroup.h has the
 * layout). Only plain file I/O, mkdir and rmdir touch the hierarchy.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sandbox_cgroup.h"

#define CG_PARENT "remotemedia"
#define CG_SUPERVISOR "supervisor"
#define CG_FRONT_COMM "remotemediad" /* the front's comm, in /proc */
#define CG_NAME_MAX 128
#define CG_CPU_PERIOD 100000 /* microseconds, v2 and v1 */
#define CG_KILL_ROUNDS 12 /* about 0.4 s of waiting, at most */
#define CG_DEPTH_MAX 8 /* nested cgroups destroy looks into */
#define CG_ANCESTRY_MAX 32 /* parents cg_in_use walks up */
#define CG_LIMIT_SLACK (256 * 1024) /* v1: max usage this near is "at" */
#define CG_V2_WANT (CG_C_MEMORY | CG_C_PIDS | CG_C_CPU)

int (*cg_kill_hook)(pid_t, int) = kill;
int (*cg_mkdir_hook)(const char *, mode_t) = mkdir;
int (*cg_rmdir_hook)(const char *) = rmdir;

/* The controllers the module uses, by bit, name and v1 mount. */
static const struct cg_ctl {
	unsigned int cc_bit;
	const char *cc_name;
	size_t cc_v1_off; /* its directory in struct cg_root on v1 */
	const char *cc_v1_file; /* v1: the limit that must be there */
} cg_ctls[] = {
    {CG_C_MEMORY, "memory", offsetof(struct cg_root, cr_memory),
        "memory.limit_in_bytes"},
    {CG_C_PIDS, "pids", offsetof(struct cg_root, cr_pids), "pids.max"},
    {CG_C_CPU, "cpu", offsetof(struct cg_root, cr_cpu), "cpu.cfs_quota_us"},
};
#define CG_NCTLS (sizeof(cg_ctls) / sizeof(cg_ctls[0]))

static int cg_destroy_dir(const char *, int);

/* Join dir and name into buf, or fail with ENAMETOOLONG. */
static int
cg_path(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

static int
cg_has(const char *dir, const char *file)
{
	char path[PATH_MAX];

	return cg_path(path, sizeof(path), dir, file) == 0 &&
	    access(path, F_OK) == 0;
}

/* Write val to dir/file in one write(2), as cgroupfs wants. */
static int
cg_write(const char *dir, const char *file, const char *val)
{
	char path[PATH_MAX];
	size_t len = strlen(val);
	ssize_t n;
	int fd, saved, tries;

	if (cg_path(path, sizeof(path), dir, file) == -1)
		return -1;
	if ((fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC)) == -1)
		return -1;
	/* A signal (the front's SIGCHLD) can interrupt a limit write. */
	for (tries = 0;
	     (n = write(fd, val, len)) == -1 && errno == EINTR && tries < 100;
	     tries++)
		;
	saved = errno;
	close(fd);
	errno = saved;
	if (n >= 0 && (size_t)n != len)
		errno = EIO;
	return (n >= 0 && (size_t)n == len) ? 0 : -1;
}

/* Read a small file whole into buf, NUL-terminated. */
static int
cg_read(const char *path, char *buf, size_t len)
{
	size_t off = 0;
	ssize_t n = 0;
	int fd, saved;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		return -1;
	while (off + 1 < len && (n = read(fd, buf + off, len - off - 1)) > 0)
		off += (size_t)n;
	saved = errno;
	close(fd);
	buf[off] = '\0';
	errno = saved;
	return n < 0 ? -1 : 0;
}

static int
cg_read_at(const char *dir, const char *file, char *buf, size_t len)
{
	char path[PATH_MAX];

	if (cg_path(path, sizeof(path), dir, file) == -1)
		return -1;
	return cg_read(path, buf, len);
}

/* Find the line "key N" in buf; 0 and its value, or -1. */
static int
cg_key(const char *buf, const char *key, uint64_t *val)
{
	size_t klen = strlen(key);
	const char *p = buf;

	while (p != NULL && *p != '\0') {
		if (strncmp(p, key, klen) == 0 && p[klen] == ' ') {
			*val = strtoull(p + klen + 1, NULL, 10);
			return 0;
		}
		if ((p = strchr(p, '\n')) != NULL)
			p++;
	}
	return -1;
}

/* Read "key N" from dir/file; 0 if the file or the key is missing. */
static uint64_t
cg_counter(const char *dir, const char *file, const char *key)
{
	char buf[1024];
	uint64_t v;

	if (cg_read_at(dir, file, buf, sizeof(buf)) == -1 ||
	    cg_key(buf, key, &v) == -1)
		return 0;
	return v;
}

/* Read a file that holds one number; 0 and the number, or -1. */
static int
cg_number(const char *dir, const char *file, uint64_t *val)
{
	char buf[64];

	if (cg_read_at(dir, file, buf, sizeof(buf)) == -1 || buf[0] < '0' ||
	    buf[0] > '9')
		return -1;
	*val = strtoull(buf, NULL, 10);
	return 0;
}

/* The CG_C_* bits named in a controller list ("cpu memory" or "+cpu"). */
static unsigned int
cg_ctl_parse(const char *s)
{
	char buf[1024], *tok, *save = NULL;
	unsigned int mask = 0;
	size_t i;

	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, " \t\n,", &save); tok != NULL;
	     tok = strtok_r(NULL, " \t\n,", &save)) {
		if (*tok == '+')
			tok++;
		for (i = 0; i < CG_NCTLS; i++)
			if (strcmp(tok, cg_ctls[i].cc_name) == 0)
				mask |= cg_ctls[i].cc_bit;
	}
	return mask;
}

/* Format mask as "+memory +pids +cpu" for cgroup.subtree_control. */
static void
cg_ctl_format(unsigned int mask, char *buf, size_t len)
{
	size_t i, used = 0;
	int n;

	buf[0] = '\0';
	for (i = 0; i < CG_NCTLS && used < len; i++) {
		if ((mask & cg_ctls[i].cc_bit) == 0)
			continue;
		n = snprintf(buf + used, len - used, "%s+%s", used ? " " : "",
		    cg_ctls[i].cc_name);
		if (n > 0)
			used += (size_t)n;
	}
}

/* Say once, at discovery, which limits sessions will not have. */
static void
cg_log_missing(const char *what, unsigned int mask)
{
	size_t i;

	for (i = 0; i < CG_NCTLS; i++)
		if ((mask & cg_ctls[i].cc_bit) == 0)
			log_warnx("cgroup %s: no %s controller: sessions get "
			          "no %s limit",
			    what, cg_ctls[i].cc_name, cg_ctls[i].cc_name);
}

/* mkdir that accepts an existing directory. */
static int
cg_mkdir_exist(const char *path)
{
	if (cg_mkdir_hook(path, 0755) == -1 && errno != EEXIST)
		return -1;
	return 0;
}

/* Whether a controller list is v2's (ctl NULL: empty) or has ctl. */
static int
cg_line_is(const char *list, const char *ctl)
{
	if (ctl == NULL)
		return list[0] == '\0';
	return list[0] != '\0' && (cg_ctl_parse(list) & cg_ctl_parse(ctl));
}

/*
 * Find this process's line in a /proc/self/cgroup text: the v2 line
 * (ctl NULL) or the v1 line whose controller list has ctl. Its list and
 * path are copied out.
 */
static int
cg_self_line(const char *text, const char *ctl, char *list, size_t llen,
    char *path, size_t plen)
{
	char buf[8192], *line, *save = NULL, *c1, *c2;

	snprintf(buf, sizeof(buf), "%s", text);
	for (line = strtok_r(buf, "\n", &save); line != NULL;
	     line = strtok_r(NULL, "\n", &save)) {
		if ((c1 = strchr(line, ':')) == NULL ||
		    (c2 = strchr(c1 + 1, ':')) == NULL)
			continue;
		*c2 = '\0';
		if (!cg_line_is(c1 + 1, ctl))
			continue;
		snprintf(list, llen, "%s", c1 + 1);
		snprintf(path, plen, "%s", c2 + 1);
		return 0;
	}
	return -1;
}

/* Our own v2 cgroup directory, out of the supervisor leaf if we are in it. */
static int
cg_v2_own(const char *mount, const char *self, char *own, size_t len)
{
	char list[64], rel[PATH_MAX];
	size_t rl, sl = strlen("/" CG_SUPERVISOR);
	int n;

	if (cg_self_line(self, NULL, list, sizeof(list), rel, sizeof(rel)) ==
	    -1) {
		log_warnx("cgroup v2: no 0:: line for this process");
		return -1;
	}
	rl = strlen(rel);
	if (rl > sl && strcmp(rel + rl - sl, "/" CG_SUPERVISOR) == 0)
		rel[rl - sl] = '\0';
	while ((rl = strlen(rel)) > 0 && rel[rl - 1] == '/')
		rel[rl - 1] = '\0';
	n = snprintf(own, len, "%s%s", mount, rel);
	if (n < 0 || (size_t)n >= len || strchr(own, ':') != NULL) {
		log_warnx("cgroup v2: unusable cgroup path %s%s", mount, rel);
		return -1;
	}
	return 0;
}

/*
 * Enable want in dir's subtree_control: all at once, then one by one so
 * that one refusal does not cost the others. Returns what is enabled.
 */
static unsigned int
cg_v2_enable(const char *dir, unsigned int want)
{
	char buf[256];
	unsigned int on = 0;
	size_t i;

	if (cg_read_at(dir, "cgroup.subtree_control", buf, sizeof(buf)) == 0)
		on = cg_ctl_parse(buf);
	if ((want & ~on) == 0)
		return want;
	cg_ctl_format(want & ~on, buf, sizeof(buf));
	if (cg_write(dir, "cgroup.subtree_control", buf) == 0)
		return want;
	log_warn("cgroup v2: %s/cgroup.subtree_control \"%s\"", dir, buf);
	for (i = 0; i < CG_NCTLS; i++) {
		if ((want & ~on & cg_ctls[i].cc_bit) == 0)
			continue;
		cg_ctl_format(cg_ctls[i].cc_bit, buf, sizeof(buf));
		if (cg_write(dir, "cgroup.subtree_control", buf) == 0)
			on |= cg_ctls[i].cc_bit;
	}
	return want & on;
}

/*
 * Move the daemon into <own>/supervisor: a v2 cgroup with children must
 * hold no processes itself, and sessions are <own>'s children.
 */
static int
cg_v2_supervise(const char *own)
{
	char sup[PATH_MAX], pid[32];

	if (cg_path(sup, sizeof(sup), own, CG_SUPERVISOR) == -1 ||
	    cg_mkdir_exist(sup) == -1) {
		log_warn("cgroup v2: mkdir %s/%s", own, CG_SUPERVISOR);
		return -1;
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	if (cg_write(sup, "cgroup.procs", pid) == -1) {
		log_warn("cgroup v2: moving the daemon to %s", sup);
		return -1;
	}
	return 0;
}

/* Set up the delegated v2 subtree: supervisor, remotemedia, controllers. */
static int
cg_discover_v2(struct cg_root *cr, const char *mount, const char *self)
{
	char own[PATH_MAX], buf[256];
	unsigned int avail;

	if (cg_v2_own(mount, self, own, sizeof(own)) == -1)
		return -1;
	if (cg_read_at(own, "cgroup.controllers", buf, sizeof(buf)) == -1 ||
	    (avail = cg_ctl_parse(buf) & CG_V2_WANT) == 0) {
		log_warnx("cgroup v2: no controllers delegated to %s "
		          "(run under systemd with Delegate=yes)",
		    own);
		return -1;
	}
	if (access(own, W_OK) == -1 || !cg_has(own, "cgroup.procs")) {
		log_warn("cgroup v2: %s is not ours to manage", own);
		return -1;
	}
	if (cg_v2_supervise(own) == -1)
		return -1;
	avail = cg_v2_enable(own, avail);
	if (cg_path(cr->cr_v2, sizeof(cr->cr_v2), own, CG_PARENT) == -1 ||
	    cg_mkdir_exist(cr->cr_v2) == -1) {
		log_warn("cgroup v2: mkdir %s/%s", own, CG_PARENT);
		return -1;
	}
	avail = cg_v2_enable(cr->cr_v2, avail);
	if (avail == 0) {
		log_warnx(
		    "cgroup v2: no controller could be enabled in %s", own);
		return -1;
	}
	if ((avail & CG_C_MEMORY) && cg_has(cr->cr_v2, "memory.swap.max"))
		avail |= CG_C_SWAP;
	cr->cr_controllers = avail;
	cg_log_missing("v2", avail);
	return 0;
}

/* Find ctl's v1 mount under mount: <mount>/<ctl>, or <mount>/<its list>. */
static int
cg_v1_mount(
    const char *mount, const char *self, const char *ctl, char *dir, size_t len)
{
	char list[256], rel[PATH_MAX], try[PATH_MAX];
	struct stat st;

	if (cg_self_line(self, ctl, list, sizeof(list), rel, sizeof(rel)) == -1)
		return -1;
	if (cg_path(try, sizeof(try), mount, ctl) == 0 && stat(try, &st) == 0 &&
	    S_ISDIR(st.st_mode)) {
		snprintf(dir, len, "%s", try);
		return 0;
	}
	if (cg_path(try, sizeof(try), mount, list) == 0 &&
	    stat(try, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(dir, len, "%s", try);
		return 0;
	}
	return -1;
}

/*
 * Make <mount of ctl>/remotemedia, the parent of ctl's session cgroups,
 * if ctl is mounted, ours to write and has the limit we set.
 */
static int
cg_v1_parent(const char *mount, const char *self, const struct cg_ctl *cc,
    char *parent, size_t len)
{
	char dir[PATH_MAX];

	if (cg_v1_mount(mount, self, cc->cc_name, dir, sizeof(dir)) == -1 ||
	    !cg_has(dir, "cgroup.procs"))
		return -1;
	if (cg_path(parent, len, dir, CG_PARENT) == -1 ||
	    strchr(parent, ':') != NULL) {
		log_warnx("cgroup v1: unusable path %s/%s", dir, CG_PARENT);
		return -1;
	}
	if (cg_mkdir_exist(parent) == -1 || access(parent, W_OK) == -1) {
		log_warn("cgroup v1: %s", parent);
		return -1;
	}
	if (!cg_has(parent, cc->cc_v1_file)) {
		log_warnx("cgroup v1: %s has no %s", parent, cc->cc_v1_file);
		return -1;
	}
	return 0;
}

/* Set up remotemedia/ under each v1 controller that is there and ours. */
static int
cg_discover_v1(struct cg_root *cr, const char *mount, const char *self)
{
	unsigned int avail = 0;
	size_t i;
	char *dir;

	for (i = 0; i < CG_NCTLS; i++) {
		dir = (char *)cr + cg_ctls[i].cc_v1_off;
		if (cg_v1_parent(mount, self, &cg_ctls[i], dir, PATH_MAX) == 0)
			avail |= cg_ctls[i].cc_bit;
		else
			dir[0] = '\0';
	}
	if (avail == 0)
		return -1;
	if ((avail & CG_C_MEMORY) &&
	    cg_has(cr->cr_memory, "memory.memsw.limit_in_bytes"))
		avail |= CG_C_SWAP;
	else if (avail & CG_C_MEMORY)
		log_info("cgroup v1: swap is not accounted (no memsw): the "
		         "memory limit does not cover swap");
	cr->cr_controllers = avail;
	cg_log_missing("v1", avail);
	return 0;
}

/* The directory discovery reports sessions under. */
static const char *
cg_where(const struct cg_root *cr)
{
	if (cr->cr_version == CG_V2)
		return cr->cr_v2;
	if (cr->cr_memory[0] != '\0')
		return cr->cr_memory;
	return cr->cr_pids[0] != '\0' ? cr->cr_pids : cr->cr_cpu;
}

/*
 * Find the hierarchy to use, once at start: v2 when mount_root is a v2
 * mount and our own cgroup has controllers delegated to it (the daemon
 * then moves itself to <own>/supervisor), else the v1 controller mounts
 * under mount_root, else none. Always returns 0; cr_version says which.
 */
int
cg_discover(struct cg_root *cr, const char *mount_root, const char *self_file)
{
	char self[8192];

	memset(cr, 0, sizeof(*cr));
	if (cg_read(self_file, self, sizeof(self)) == -1) {
		log_warn("cgroup: %s", self_file);
		self[0] = '\0';
	}
	if (self[0] != '\0' && cg_has(mount_root, "cgroup.controllers")) {
		if (cg_discover_v2(cr, mount_root, self) == 0)
			cr->cr_version = CG_V2;
	} else if (self[0] != '\0' && cg_discover_v1(cr, mount_root, self) == 0)
		cr->cr_version = CG_V1;
	if (cr->cr_version == CG_NONE) {
		memset(cr, 0, sizeof(*cr));
		log_warnx("cgroup: no usable cgroup hierarchy under %s: "
		          "sessions run without memory, pids and CPU limits",
		    mount_root);
		return 0;
	}
	log_info("cgroup v%d: session cgroups under %s",
	    cr->cr_version == CG_V2 ? 2 : 1, cg_where(cr));
	return 0;
}

/* A cgroup name: letters, digits, '.', '_', '-'; not starting with '.'. */
static int
cg_name_ok(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > CG_NAME_MAX || name[0] == '.')
		return 0;
	return strspn(name,
	           "abcdefghijklmnopqrstuvwxyz"
	           "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == len;
}

/* Append dir to the ':'-separated list in paths. */
static int
cg_paths_add(char *paths, size_t len, const char *dir)
{
	size_t used = strlen(paths);
	int n;

	n = snprintf(paths + used, len - used, "%s%s", used ? ":" : "", dir);
	if (n < 0 || (size_t)n >= len - used) {
		paths[used] = '\0';
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/*
 * Copy the next directory of a ':'-separated list into dir and advance
 * *pp; 0 at the end of the list. One too long for dir is skipped, never
 * cut short into some other directory.
 */
static int
cg_paths_next(const char **pp, char *dir, size_t len)
{
	const char *p = *pp, *end;
	size_t n;

	for (;; p = end) {
		while (*p == ':')
			p++;
		if (*p == '\0')
			return 0;
		end = strchrnul(p, ':');
		if ((n = (size_t)(end - p)) < len)
			break;
		log_warnx("cgroup: a path of %zu bytes skipped", n);
	}
	memcpy(dir, p, n);
	dir[n] = '\0';
	*pp = end;
	return 1;
}

/*
 * Make parent/name. One that exists is never taken over (EEXIST): on a
 * shared v1 hierarchy it may be another daemon's, and our own leftovers
 * are gone since cg_cleanup_stale.
 */
static int
cg_mkdir_new(const char *parent, const char *name, char *dir, size_t len)
{
	if (cg_path(dir, len, parent, name) == -1)
		return -1;
	if (cg_mkdir_hook(dir, 0755) == -1) {
		log_warn("cgroup: mkdir %s", dir);
		return -1;
	}
	return 0;
}

/* Write one number to a limit file, saying which on failure. */
static int
cg_limit(const char *dir, const char *file, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%" PRIu64, v);
	if (cg_write(dir, file, buf) == -1) {
		log_warn("cgroup: %s/%s \"%s\"", dir, file, buf);
		return -1;
	}
	return 0;
}

/* Remove a cgroup just made, keeping the errno that made us give up. */
static void
cg_undo_dir(const char *dir)
{
	int saved = errno;

	cg_destroy_dir(dir, 0);
	errno = saved;
}

/* The CFS quota in microseconds per CG_CPU_PERIOD. */
static uint64_t
cg_quota(const struct cg_limits *lim)
{
	return (uint64_t)lim->cpu_percent * (CG_CPU_PERIOD / 100);
}

/* The v2 limits: memory.max, memory.swap.max, pids.max, cpu.max. */
static int
cg_v2_limits(const char *dir, const struct cg_limits *lim, unsigned int ctl)
{
	char buf[64];

	if ((ctl & CG_C_MEMORY) && lim->memory_bytes != 0) {
		if (cg_limit(dir, "memory.max", lim->memory_bytes) == -1)
			return -1;
		if ((ctl & CG_C_SWAP) &&
		    cg_limit(dir, "memory.swap.max", 0) == -1)
			return -1;
	}
	if ((ctl & CG_C_PIDS) && lim->pids != 0 &&
	    cg_limit(dir, "pids.max", lim->pids) == -1)
		return -1;
	if ((ctl & CG_C_CPU) && lim->cpu_percent != 0) {
		snprintf(buf, sizeof(buf), "%" PRIu64 " %d", cg_quota(lim),
		    CG_CPU_PERIOD);
		if (cg_write(dir, "cpu.max", buf) == -1) {
			log_warn("cgroup: %s/cpu.max \"%s\"", dir, buf);
			return -1;
		}
	}
	return 0;
}

/*
 * The v1 memory limit, then memory+swap at the same value where swap is
 * accounted; a kernel that refuses memsw leaves the limit without swap.
 */
static int
cg_v1_memory(const char *dir, const struct cg_limits *lim, unsigned int ctl)
{
	char buf[32];

	if (lim->memory_bytes == 0)
		return 0;
	if (cg_limit(dir, "memory.limit_in_bytes", lim->memory_bytes) == -1)
		return -1;
	if ((ctl & CG_C_SWAP) == 0)
		return 0;
	snprintf(buf, sizeof(buf), "%" PRIu64, lim->memory_bytes);
	if (cg_write(dir, "memory.memsw.limit_in_bytes", buf) == -1 &&
	    errno != EINVAL && errno != ENOENT) {
		log_warn("cgroup: %s/memory.memsw.limit_in_bytes", dir);
		return -1;
	}
	return 0;
}

/* One v1 controller's limits in its session directory. */
static int
cg_v1_limits(const char *dir, const struct cg_limits *lim, unsigned int bit,
    unsigned int ctl)
{
	switch (bit) {
	case CG_C_MEMORY:
		return cg_v1_memory(dir, lim, ctl);
	case CG_C_PIDS:
		if (lim->pids == 0)
			return 0;
		return cg_limit(dir, "pids.max", lim->pids);
	case CG_C_CPU:
		if (lim->cpu_percent == 0)
			return 0;
		if (cg_limit(dir, "cpu.cfs_period_us", CG_CPU_PERIOD) == -1)
			return -1;
		return cg_limit(dir, "cpu.cfs_quota_us", cg_quota(lim));
	}
	return 0;
}

/* Create name under every v1 controller we have, with its limits. */
static int
cg_create_v1(const struct cg_root *cr, const char *name,
    const struct cg_limits *lim, char *paths, size_t len)
{
	char dir[PATH_MAX];
	const char *parent;
	size_t i;

	for (i = 0; i < CG_NCTLS; i++) {
		parent = (const char *)cr + cg_ctls[i].cc_v1_off;
		if (parent[0] == '\0')
			continue;
		if (cg_mkdir_new(parent, name, dir, sizeof(dir)) == -1)
			return -1;
		if (cg_paths_add(paths, len, dir) == -1) {
			cg_undo_dir(dir);
			return -1;
		}
		if (cg_v1_limits(
		        dir, lim, cg_ctls[i].cc_bit, cr->cr_controllers) == -1)
			return -1;
	}
	return 0;
}

/* Create <cr_v2>/name with its limits. */
static int
cg_create_v2(const struct cg_root *cr, const char *name,
    const struct cg_limits *lim, char *paths, size_t len)
{
	char dir[PATH_MAX];

	if (cg_mkdir_new(cr->cr_v2, name, dir, sizeof(dir)) == -1)
		return -1;
	if (cg_paths_add(paths, len, dir) == -1) {
		cg_undo_dir(dir);
		return -1;
	}
	return cg_v2_limits(dir, lim, cr->cr_controllers);
}

/*
 * Create the cgroup of a session or an environment build, with its
 * limits, and write the directories the worker joins into paths
 * (':'-separated; "" with no cgroups). Nothing is left behind on failure.
 */
int
cg_create(const struct cg_root *cr, const char *name,
    const struct cg_limits *lim, char *paths, size_t len)
{
	int rc, saved;

	if (len == 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	paths[0] = '\0';
	if (cr->cr_version == CG_NONE)
		return 0;
	if (!cg_name_ok(name)) {
		log_warnx("cgroup: bad cgroup name \"%s\"", name);
		errno = EINVAL;
		return -1;
	}
	if (cr->cr_version == CG_V2)
		rc = cg_create_v2(cr, name, lim, paths, len);
	else
		rc = cg_create_v1(cr, name, lim, paths, len);
	if (rc == -1) {
		saved = errno;
		cg_destroy(paths);
		paths[0] = '\0';
		errno = saved;
		return -1;
	}
	log_debug("%s: %s", __func__, paths);
	return 0;
}

/*
 * Move pid (0: the caller) into every cgroup of paths. The worker calls
 * this on itself before anything else runs.
 */
int
cg_join(const char *paths, pid_t pid)
{
	char dir[PATH_MAX], buf[32];
	const char *p = paths, *file;

	if (pid == 0)
		pid = getpid();
	snprintf(buf, sizeof(buf), "%d", (int)pid);
	while (cg_paths_next(&p, dir, sizeof(dir))) {
		file = cg_has(dir, "cgroup.procs") ? "cgroup.procs" : "tasks";
		if (cg_write(dir, file, buf) == -1) {
			log_warn("cgroup: joining %s", dir);
			return -1;
		}
	}
	return 0;
}

/* v1 before oom_kill was counted (4.13): it failed a charge at the limit. */
static int
cg_v1_hit_limit(const char *dir)
{
	uint64_t failcnt, maxuse, limit;

	if (cg_number(dir, "memory.failcnt", &failcnt) == -1 ||
	    cg_number(dir, "memory.max_usage_in_bytes", &maxuse) == -1 ||
	    cg_number(dir, "memory.limit_in_bytes", &limit) == -1)
		return 0;
	return failcnt > 0 && maxuse + CG_LIMIT_SLACK >= limit;
}

/* Whether the memory controller of one directory OOM-killed in it. */
static int
cg_dir_oom(const char *dir)
{
	char buf[1024];
	uint64_t v;

	if (cg_read_at(dir, "memory.events", buf, sizeof(buf)) == 0)
		return cg_key(buf, "oom_kill", &v) == 0 && v > 0;
	if (cg_read_at(dir, "memory.oom_control", buf, sizeof(buf)) == -1)
		return 0;
	if (cg_key(buf, "under_oom", &v) == 0 && v > 0)
		return 1;
	if (cg_key(buf, "oom_kill", &v) == 0)
		return v > 0;
	return cg_v1_hit_limit(dir);
}

/* 1 if the memory controller OOM-killed a process of the cgroup. */
int
cg_oom_killed(const char *paths)
{
	char dir[PATH_MAX];
	const char *p = paths;

	while (cg_paths_next(&p, dir, sizeof(dir)))
		if (cg_dir_oom(dir))
			return 1;
	return 0;
}

/* 1 if a fork in the cgroup failed at its pids limit. */
int
cg_pids_exhausted(const char *paths)
{
	char dir[PATH_MAX];
	const char *p = paths;

	while (cg_paths_next(&p, dir, sizeof(dir)))
		if (cg_counter(dir, "pids.events", "max") > 0)
			return 1;
	return 0;
}

/*
 * Signal every process listed in dir/cgroup.procs: with cgroup.kill when
 * killfile is set, else SIGKILL one by one. Returns how many were listed,
 * or -1 when the list cannot be read. The daemon never kills itself.
 */
static int
cg_kill_procs(const char *dir, int killfile)
{
	char path[PATH_MAX], line[64];
	FILE *fp;
	long pid;
	int n = 0;

	if (cg_path(path, sizeof(path), dir, "cgroup.procs") == -1 ||
	    (fp = fopen(path, "re")) == NULL)
		return -1;
	while (fgets(line, sizeof(line), fp) != NULL) {
		if ((pid = strtol(line, NULL, 10)) <= 0)
			continue;
		n++;
		if (pid == 1 || pid == (long)getpid())
			log_warnx(
			    "cgroup: %s holds pid %ld: not killed", dir, pid);
		else if (!killfile && cg_kill_hook((pid_t)pid, SIGKILL) == -1 &&
		    errno != ESRCH)
			log_warn("cgroup: kill %ld", pid);
	}
	fclose(fp);
	if (n > 0 && killfile && cg_write(dir, "cgroup.kill", "1") == -1)
		log_warn("cgroup: %s/cgroup.kill", dir);
	return n;
}

/* Destroy the cgroups nested in dir, depth first. */
static int
cg_destroy_children(const char *dir, int depth)
{
	char sub[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d;
	int rc = 0;

	if ((d = opendir(dir)) == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0 ||
		    cg_path(sub, sizeof(sub), dir, de->d_name) == -1 ||
		    lstat(sub, &st) == -1 || !S_ISDIR(st.st_mode))
			continue;
		if (cg_destroy_dir(sub, depth + 1) == -1)
			rc = -1;
	}
	closedir(d);
	return rc;
}

/*
 * Kill what is left in dir and remove it: cgroup.kill first where there
 * is one, then SIGKILL to each listed pid, for a bounded few rounds.
 * A directory that is already gone is success.
 */
static int
cg_destroy_dir(const char *dir, int depth)
{
	int round, n, killfile = cg_has(dir, "cgroup.kill");

	if (depth > CG_DEPTH_MAX || cg_destroy_children(dir, depth) == -1)
		return -1;
	for (round = 0; round < CG_KILL_ROUNDS; round++) {
		n = cg_kill_procs(dir, killfile && round == 0);
		if (n == -1 && access(dir, F_OK) == -1 && errno == ENOENT)
			return 0;
		if (n <= 0) {
			if (cg_rmdir_hook(dir) == 0 || errno == ENOENT)
				return 0;
			if (errno != EBUSY) {
				log_warn("cgroup: rmdir %s", dir);
				return -1;
			}
		}
		usleep(1000U * (round < 6 ? 1U << round : 50U));
	}
	log_warnx("cgroup: %s is still busy; left for the next start", dir);
	errno = EBUSY;
	return -1;
}

/*
 * Whether dir is <...>/remotemedia/<name>, the only kind destroy acts on:
 * a wrong path must not make it kill every process of a hierarchy.
 */
static int
cg_session_dir(const char *dir)
{
	static const char parent[] = "/" CG_PARENT;
	const char *base = strrchr(dir, '/');
	size_t plen = sizeof(parent) - 1;

	if (base == NULL || !cg_name_ok(base + 1) ||
	    strstr(dir, "/.") != NULL || (size_t)(base - dir) < plen)
		return 0;
	return strncmp(base - plen, parent, plen) == 0;
}

/*
 * Kill whatever is left in the cgroup's directories and remove them.
 * Idempotent: directories already gone count as destroyed.
 */
int
cg_destroy(const char *paths)
{
	char dir[PATH_MAX];
	const char *p = paths;
	int rc = 0;

	while (cg_paths_next(&p, dir, sizeof(dir))) {
		if (!cg_session_dir(dir)) {
			log_warnx("cgroup: not destroying %s", dir);
			errno = EINVAL;
			rc = -1;
		} else if (cg_destroy_dir(dir, 0) == -1)
			rc = -1;
	}
	return rc;
}

/* Read the comm and parent of pid from /proc; -1 if it is gone. */
static int
cg_proc_parent(long pid, char *comm, size_t len, long *ppid)
{
	char path[64], buf[512], *lp, *rp;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	if (cg_read(path, buf, sizeof(buf)) == -1 ||
	    (lp = strchr(buf, '(')) == NULL ||
	    (rp = strrchr(buf, ')')) == NULL || rp < lp ||
	    sscanf(rp + 1, " %*c %ld", ppid) != 1)
		return -1;
	*rp = '\0';
	snprintf(comm, len, "%s", lp + 1);
	return 0;
}

/* Whether pid descends from a running front (possibly another daemon's). */
static int
cg_front_descendant(long pid)
{
	char comm[64];
	long ppid;
	int hops;

	for (hops = 0; hops < CG_ANCESTRY_MAX && pid > 1; hops++) {
		if (cg_proc_parent(pid, comm, sizeof(comm), &ppid) == -1)
			return 0;
		if (strcmp(comm, CG_FRONT_COMM) == 0)
			return 1;
		pid = ppid;
	}
	return 0;
}

/*
 * Whether a leftover cgroup is still some front's: v1 hierarchies, and v2
 * subtrees on a dev machine, are shared by every daemon on the host.
 */
static int
cg_in_use(const char *dir)
{
	char path[PATH_MAX], line[64];
	FILE *fp;
	long pid;
	int used = 0;

	if (cg_path(path, sizeof(path), dir, "cgroup.procs") == -1 ||
	    (fp = fopen(path, "re")) == NULL)
		return 0;
	while (!used && fgets(line, sizeof(line), fp) != NULL)
		if ((pid = strtol(line, NULL, 10)) > 0)
			used = cg_front_descendant(pid);
	fclose(fp);
	return used;
}

/*
 * The names this daemon gives its cgroups start with this prefix (one per
 * state dir): stale cleanup leaves every other daemon's cgroups alone,
 * even an empty one that is about to be joined.
 */
static char cg_owner[64];

void
cg_set_owner(const char *prefix)
{
	snprintf(cg_owner, sizeof(cg_owner), "%s", prefix ? prefix : "");
}

/* Destroy each stale session cgroup under parent. */
static int
cg_cleanup_parent(const char *parent)
{
	char dir[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d;
	int rc = 0;

	if (parent[0] == '\0' || (d = opendir(parent)) == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.' ||
		    (cg_owner[0] != '\0' &&
		        strncmp(de->d_name, cg_owner, strlen(cg_owner)) != 0) ||
		    cg_path(dir, sizeof(dir), parent, de->d_name) == -1 ||
		    lstat(dir, &st) == -1 || !S_ISDIR(st.st_mode))
			continue;
		if (cg_in_use(dir)) {
			log_info("cgroup: %s belongs to a running front: "
			         "left alone",
			    dir);
			continue;
		}
		log_info("cgroup: removing stale %s", dir);
		if (cg_destroy_dir(dir, 0) == -1)
			rc = -1;
	}
	closedir(d);
	return rc;
}

/*
 * At start, destroy the session cgroups a previous run left behind. Those
 * whose processes descend from a running front are another daemon's.
 */
int
cg_cleanup_stale(const struct cg_root *cr)
{
	int rc = 0;

	switch (cr->cr_version) {
	case CG_V2:
		return cg_cleanup_parent(cr->cr_v2);
	case CG_V1:
		if (cg_cleanup_parent(cr->cr_memory) == -1)
			rc = -1;
		if (cg_cleanup_parent(cr->cr_pids) == -1)
			rc = -1;
		if (cg_cleanup_parent(cr->cr_cpu) == -1)
			rc = -1;
		return rc;
	case CG_NONE:
		break;
	}
	return 0;
}
