/*
 * Session cgroups, the front's side: what v1 and v2 share (file I/O, the
 * paths list, names), discovery, creation and the checks made when a
 * worker dies, dispatched to front_cgroup_v1.c or front_cgroup_v2.c;
 * destruction; and, at start, the cleanup of what an earlier run left.
 * Only plain file I/O, mkdir and rmdir touch the hierarchy.
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
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "front_cgroup.h"
#include "sandbox_cgroup.h"

#define CG_NAME_MAX 128
#define CG_FRONT_COMM "remotemediad" /* the front's comm, in /proc */
#define CG_DESTROY_WAIT_MS 400 /* cg_destroy's wait for what it killed */
#define CG_DEPTH_MAX 8 /* nested cgroups destroy looks into */
#define CG_ANCESTRY_MAX 32 /* parents cg_in_use walks up */

int (*cg_kill_hook)(pid_t, int) = kill;
int (*cg_mkdir_hook)(const char *, mode_t) = mkdir;
int (*cg_rmdir_hook)(const char *) = rmdir;

/* The controllers the module uses, by bit, name and v1 mount. */
const struct cg_ctl cg_ctls[CG_NCTLS] = {
    {CG_C_MEMORY, "memory", offsetof(struct cg_root, cr_memory),
        "memory.limit_in_bytes"},
    {CG_C_PIDS, "pids", offsetof(struct cg_root, cr_pids), "pids.max"},
    {CG_C_CPU, "cpu", offsetof(struct cg_root, cr_cpu), "cpu.cfs_quota_us"},
};

/*
 * The names this daemon gives its cgroups start with this tag (one per
 * state dir, cg_set_owner); cg_create puts it there and cg_mine looks
 * for it.
 */
static char cg_owner[64];

static int cg_destroy_dir(const char *);
static int cg_destroy_round(const char *, int, int);

/* Read a small file whole into buf, NUL-terminated. */
int
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

int
cg_read_at(const char *dir, const char *file, char *buf, size_t len)
{
	char path[PATH_MAX];

	if (cg_path(path, sizeof(path), dir, file) == -1)
		return -1;
	return cg_read(path, buf, len);
}

/* Find the line "key N" in buf; 0 and its value, or -1. */
int
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

/* The CG_C_* bits named in a controller list ("cpu memory" or "+cpu"). */
unsigned int
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
int
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
int
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
	cg_log_missing(
	    cr->cr_version == CG_V2 ? "v2" : "v1", cr->cr_controllers);
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
int
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
 * Make parent/name. One that exists is never taken over (EEXIST): on a
 * shared v1 hierarchy it may be another daemon's, and our own leftovers
 * are gone since cg_cleanup_stale.
 */
int
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
int
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
void
cg_undo_dir(const char *dir)
{
	int saved = errno;

	cg_destroy_dir(dir);
	errno = saved;
}

/* The CFS quota in microseconds per CG_CPU_PERIOD. */
uint64_t
cg_quota(const struct cg_limits *lim)
{
	return (uint64_t)lim->cpu_percent * (CG_CPU_PERIOD / 100);
}

/*
 * Create the cgroup of a session or an environment build, named
 * "<tag><name>" (cg_set_owner), with its limits, and write the
 * directories the worker joins into paths (':'-separated; "" with no
 * cgroups). Nothing is left behind on failure.
 */
int
cg_create(const struct cg_root *cr, const char *name,
    const struct cg_limits *lim, char *paths, size_t len)
{
	char full[CG_NAME_MAX + 2];
	int rc, saved;

	if (len == 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	paths[0] = '\0';
	if (cr->cr_version == CG_NONE)
		return 0;
	snprintf(full, sizeof(full), "%s%s", cg_owner, name);
	if (!cg_name_ok(full)) {
		log_warnx("cgroup: bad cgroup name \"%s\"", full);
		errno = EINVAL;
		return -1;
	}
	if (cr->cr_version == CG_V2)
		rc = cg_create_v2(cr, full, lim, paths, len);
	else
		rc = cg_create_v1(cr, full, lim, paths, len);
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

/* Whether the memory controller of one directory OOM-killed in it. */
static int
cg_dir_oom(const char *dir)
{
	int rc;

	if ((rc = cg_v2_oom(dir)) != -1)
		return rc;
	return cg_v1_oom(dir);
}

/* Whether a fork in dir failed at its pids limit (v1 and v2 alike). */
static int
cg_dir_pids(const char *dir)
{
	return cg_counter(dir, "pids.events", "max") > 0;
}

/* 1 if check holds for any directory of paths, else 0. */
static int
cg_paths_any(const char *paths, int (*check)(const char *))
{
	char dir[PATH_MAX];
	const char *p = paths;

	while (cg_paths_next(&p, dir, sizeof(dir)))
		if (check(dir))
			return 1;
	return 0;
}

/* 1 if the memory controller OOM-killed a process of the cgroup. */
int
cg_oom_killed(const char *paths)
{
	return cg_paths_any(paths, cg_dir_oom);
}

/* 1 if a fork in the cgroup failed at its pids limit. */
int
cg_pids_exhausted(const char *paths)
{
	return cg_paths_any(paths, cg_dir_pids);
}

/* Open dir/cgroup.procs for cg_procs_next, or NULL. */
static FILE *
cg_procs_open(const char *dir)
{
	char path[PATH_MAX];

	if (cg_path(path, sizeof(path), dir, "cgroup.procs") == -1)
		return NULL;
	return fopen(path, "re");
}

/* The next pid in a cgroup.procs list, past any other line; 0 at its end. */
static long
cg_procs_next(FILE *fp)
{
	char line[64];
	long pid;

	while (fgets(line, sizeof(line), fp) != NULL)
		if ((pid = strtol(line, NULL, 10)) > 0)
			return pid;
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
	FILE *fp;
	long pid;
	int n = 0;

	if ((fp = cg_procs_open(dir)) == NULL)
		return -1;
	while ((pid = cg_procs_next(fp)) > 0) {
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

/*
 * A round on the cgroups nested in dir, depth first: 0 once all are gone,
 * 1 while some still hold processes, -1 if one cannot be removed.
 */
static int
cg_destroy_children(const char *dir, int depth, int first)
{
	char sub[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *d;
	int rc = 0, r;

	if ((d = opendir(dir)) == NULL)
		return errno == ENOENT ? 0 : -1;
	while ((de = readdir(d)) != NULL) {
		/* A cgroup holds dozens of files and seldom a directory:
		 * the entry's type spares a stat of each file. */
		if (strcmp(de->d_name, ".") == 0 ||
		    strcmp(de->d_name, "..") == 0 ||
		    (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN) ||
		    cg_path(sub, sizeof(sub), dir, de->d_name) == -1 ||
		    lstat(sub, &st) == -1 || !S_ISDIR(st.st_mode))
			continue;
		r = cg_destroy_round(sub, depth + 1, first);
		if (r == -1 || (r == 1 && rc == 0))
			rc = r;
	}
	closedir(d);
	return rc;
}

/*
 * One round on dir: the cgroups nested in it first, then kill what it
 * holds (cgroup.kill on the first round where there is one, else SIGKILL
 * to each listed pid) and remove it once empty. Returns 0 once dir is
 * gone (or was), 1 while processes are still in it, -1 on any other
 * failure. The processes it kills take a while to go: a caller that must
 * see dir gone comes back later, or waits (cg_destroy_dir).
 */
static int
cg_destroy_round(const char *dir, int depth, int first)
{
	int n, rc;

	if (depth > CG_DEPTH_MAX ||
	    (rc = cg_destroy_children(dir, depth, first)) == -1)
		return -1;
	n = cg_kill_procs(dir, first && cg_has(dir, "cgroup.kill"));
	if (n == -1 && access(dir, F_OK) == -1 && errno == ENOENT)
		return 0;
	if (n > 0 || rc == 1)
		return 1;
	if (cg_rmdir_hook(dir) == 0 || errno == ENOENT)
		return 0;
	if (errno == EBUSY)
		return 1;
	log_warn("cgroup: rmdir %s", dir);
	return -1;
}

/*
 * Destroy dir, waiting up to CG_DESTROY_WAIT_MS for what it kills: by the
 * clock, since the signals of a mass ending (SIGCHLD) cut sleeps short.
 * A directory that is already gone is success.
 */
static int
cg_destroy_dir(const char *dir)
{
	uint64_t until = now_ms() + CG_DESTROY_WAIT_MS, now, ms;
	struct timespec ts;
	int round, rc;

	for (round = 0;; round++) {
		if ((rc = cg_destroy_round(dir, 0, round == 0)) != 1)
			return rc;
		if ((now = now_ms()) >= until)
			break;
		ms = round < 6 ? 1U << round : 50;
		if (ms > until - now)
			ms = until - now;
		ts.tv_sec = 0;
		ts.tv_nsec = (long)ms * 1000000;
		while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
			;
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

/* Whether a process of dir descends from a running front (cg_mine). */
static int
cg_in_use(const char *dir)
{
	FILE *fp;
	long pid;
	int used = 0;

	if ((fp = cg_procs_open(dir)) == NULL)
		return 0;
	while (!used && (pid = cg_procs_next(fp)) > 0)
		used = cg_front_descendant(pid);
	fclose(fp);
	return used;
}

/* Set the tag this daemon's cgroup names start with (cg_mine). */
void
cg_set_owner(const char *prefix)
{
	snprintf(cg_owner, sizeof(cg_owner), "%s", prefix ? prefix : "");
}

/*
 * Whether dir is this daemon's cgroup: the one test of "mine", which
 * destroy and the stale cleanup at start both make. dir must be
 * <...>/remotemedia/<name> (a wrong path must not make destroy kill every
 * process of a hierarchy), and <name> must start with this daemon's tag
 * (cg_set_owner; any name while none is set). A leftover found at start
 * must also hold no process descending from a running remotemediad: v1
 * hierarchies, and v2 subtrees on a dev machine, are shared by every
 * daemon on the host, and such a cgroup is another daemon's session.
 */
static int
cg_mine(const char *dir, int leftover)
{
	const char *base = strrchr(dir, '/');

	if (!cg_session_dir(dir) ||
	    strncmp(base + 1, cg_owner, strlen(cg_owner)) != 0)
		return 0;
	if (leftover && cg_in_use(dir)) {
		log_info(
		    "cgroup: %s belongs to a running front: left alone", dir);
		return 0;
	}
	return 1;
}

/*
 * Kill whatever is left in the cgroup's directories and remove them, with
 * wait set waiting for what it killed (up to CG_DESTROY_WAIT_MS a
 * directory); without, one round only (cg_destroy_round), first telling
 * whether it is the first. Returns 0 once all are gone (idempotent:
 * directories already gone count as destroyed), 1 while some still hold
 * processes (without wait), -1 on failure.
 */
static int
cg_destroy_paths(const char *paths, int wait, int first)
{
	char dir[PATH_MAX];
	const char *p = paths;
	int rc = 0, r;

	while (cg_paths_next(&p, dir, sizeof(dir))) {
		if (!cg_mine(dir, 0)) {
			log_warnx("cgroup: not destroying %s", dir);
			errno = EINVAL;
			rc = -1;
			continue;
		}
		r = wait ? cg_destroy_dir(dir)
		         : cg_destroy_round(dir, 0, first);
		if (r == -1 || (r == 1 && rc == 0))
			rc = r;
	}
	return rc;
}

int
cg_destroy(const char *paths)
{
	return cg_destroy_paths(paths, 1, 1);
}

int
cg_destroy_try(const char *paths, int first)
{
	return cg_destroy_paths(paths, 0, first);
}

/* Destroy each stale session cgroup of this daemon's under parent. */
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
		    cg_path(dir, sizeof(dir), parent, de->d_name) == -1 ||
		    lstat(dir, &st) == -1 || !S_ISDIR(st.st_mode) ||
		    !cg_mine(dir, 1))
			continue;
		log_info("cgroup: removing stale %s", dir);
		if (cg_destroy_dir(dir) == -1)
			rc = -1;
	}
	closedir(d);
	return rc;
}

/*
 * At start, destroy the session cgroups a previous run left behind: those
 * cg_mine says are this daemon's.
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
