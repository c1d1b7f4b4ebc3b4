/*
 * Unit tests for the session cgroups (src/front_cgroup*.c, and joining in
 * sandbox/sandbox_cgroup.c).
 *
 * The v2 and v1 logic runs against scratch directories laid out like
 * cgroupfs. The hooks stand in for the kernel: mkdir fills a new cgroup
 * with its interface files, rmdir refuses a populated cgroup (EBUSY) and
 * removes the files, and kill "kills" a pid by taking it out of every
 * cgroup.procs. The live tests then use this machine's real hierarchy,
 * as root: an OOM kill, pids exhaustion, and destroy killing leftovers.
 */
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
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

#include "log.h"
#include "util.h"
#include "front_cgroup.h"
#include "sandbox_cgroup.h"

#define FAKE_PID1 4194000 /* above any real pid on this host's pid_max */
#define FAKE_PID2 4194001
#define OWN_REL "/system.slice/remotemediad.service"

static char scratch[256]; /* the fake mount root */
static char selff[256]; /* the fake /proc/self/cgroup */
static int fake_v1; /* the fake kernel lays out v1 cgroups */
static int fake_cgkill; /* v2 cgroups get a cgroup.kill */
static int kill_wrote; /* cgroup.kill held "1" at rmdir */
static pid_t killed[64];
static size_t nkilled;
static pid_t kill_target; /* the pid fake_kill takes out */

/* Write s to the file at the path made from fmt. */
static void __attribute__((format(printf, 2, 3)))
put(const char *s, const char *fmt, ...)
{
	char path[PATH_MAX];
	va_list ap;
	FILE *fp;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	if ((fp = fopen(path, "w")) == NULL) {
		fail_msg("fopen %s: %s", path, strerror(errno));
		return;
	}
	fputs(s, fp);
	fclose(fp);
}

/* The contents of the file at the path made from fmt, or "<missing>". */
static const char *__attribute__((format(printf, 1, 2)))
get(const char *fmt, ...)
{
	static char buf[4096];
	char path[PATH_MAX];
	va_list ap;
	size_t n;
	FILE *fp;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	if ((fp = fopen(path, "r")) == NULL)
		return "<missing>";
	n = fread(buf, 1, sizeof(buf) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static int __attribute__((format(printf, 1, 2))) exists(const char *fmt, ...)
{
	char path[PATH_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(path, sizeof(path), fmt, ap);
	va_end(ap);
	return access(path, F_OK) == 0;
}

/* The fake kernel's v2 mkdir: files for the parent's subtree_control. */
static void
fake_v2_files(const char *path)
{
	char parent[PATH_MAX], *slash;
	const char *sub;
	char ctl[64] = "";

	snprintf(parent, sizeof(parent), "%s", path);
	if ((slash = strrchr(parent, '/')) != NULL)
		*slash = '\0';
	sub = get("%s/cgroup.subtree_control", parent);
	if (strstr(sub, "memory") != NULL) {
		strcat(ctl, "memory ");
		put("max\n", "%s/memory.max", path);
		put("max\n", "%s/memory.swap.max", path);
		put("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
		    "%s/memory.events", path);
	}
	if (strstr(sub, "pids") != NULL) {
		strcat(ctl, "pids ");
		put("max\n", "%s/pids.max", path);
		put("max 0\n", "%s/pids.events", path);
	}
	if (strstr(sub, "cpu") != NULL) {
		strcat(ctl, "cpu");
		put("max 100000\n", "%s/cpu.max", path);
	}
	put(ctl, "%s/cgroup.controllers", path);
	put("", "%s/cgroup.subtree_control", path);
	if (fake_cgkill)
		put("", "%s/cgroup.kill", path);
}

/* The fake kernel's v1 mkdir: the files of the controller's hierarchy. */
static void
fake_v1_files(const char *path)
{
	put("", "%s/tasks", path);
	if (strstr(path + strlen(scratch), "/memory/") != NULL) {
		put("9223372036854771712\n", "%s/memory.limit_in_bytes", path);
		put("9223372036854771712\n", "%s/memory.memsw.limit_in_bytes",
		    path);
		put("oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
		    "%s/memory.oom_control", path);
		put("0\n", "%s/memory.failcnt", path);
		put("0\n", "%s/memory.max_usage_in_bytes", path);
	} else if (strstr(path + strlen(scratch), "/pids/") != NULL) {
		put("max\n", "%s/pids.max", path);
		put("max 0\n", "%s/pids.events", path);
	} else if (strstr(path + strlen(scratch), "/cpu") != NULL) {
		put("100000\n", "%s/cpu.cfs_period_us", path);
		put("-1\n", "%s/cpu.cfs_quota_us", path);
	}
}

static int
fake_mkdir(const char *path, mode_t mode)
{
	if (mkdir(path, mode) == -1)
		return -1;
	put("", "%s/cgroup.procs", path);
	if (fake_v1)
		fake_v1_files(path);
	else
		fake_v2_files(path);
	return 0;
}

static int
unlink_one(const char *path, const struct stat *st, int type, struct FTW *f)
{
	return type == FTW_F ? unlink(path) : 0;
}

/* The fake kernel's rmdir: EBUSY while populated or with children. */
static int
fake_rmdir(const char *path)
{
	char sub[PATH_MAX];
	const char *procs;
	struct dirent *de;
	struct stat st;
	int has_child = 0;
	DIR *d;

	if (access(path, F_OK) == -1)
		return -1;
	procs = get("%s/cgroup.procs", path);
	if (procs[0] != '\0' && strcmp(procs, "<missing>") != 0) {
		errno = EBUSY;
		return -1;
	}
	if ((d = opendir(path)) != NULL) {
		while ((de = readdir(d)) != NULL)
			if (de->d_name[0] != '.' &&
			    snprintf(sub, sizeof(sub), "%s/%s", path,
			        de->d_name) > 0 &&
			    stat(sub, &st) == 0 && S_ISDIR(st.st_mode))
				has_child = 1;
		closedir(d);
	}
	if (has_child) {
		errno = EBUSY;
		return -1;
	}
	if (strcmp(get("%s/cgroup.kill", path), "1") == 0)
		kill_wrote = 1;
	if (stat(path, &st) == 0)
		nftw(path, unlink_one, 8, FTW_PHYS);
	return rmdir(path);
}

/* Take kill_target out of a cgroup.procs file: it has died. */
static int
drop_pid(const char *path, const struct stat *st, int type, struct FTW *f)
{
	char out[4096] = "", line[64];
	FILE *fp;

	if (type != FTW_F || strcmp(path + f->base, "cgroup.procs") != 0)
		return 0;
	if ((fp = fopen(path, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (atol(line) != (long)kill_target)
			strncat(out, line, sizeof(out) - strlen(out) - 1);
	fclose(fp);
	put(out, "%s", path);
	return 0;
}

static int
fake_kill(pid_t pid, int sig)
{
	assert_int_equal(sig, SIGKILL);
	if (nkilled < sizeof(killed) / sizeof(killed[0]))
		killed[nkilled++] = pid;
	kill_target = pid;
	nftw(scratch, drop_pid, 16, FTW_PHYS);
	return 0;
}

static int
was_killed(pid_t pid)
{
	size_t i;

	for (i = 0; i < nkilled; i++)
		if (killed[i] == pid)
			return 1;
	return 0;
}

/* A scratch v2 mount with our cgroup delegated, as systemd makes it. */
static void
layout_v2(const char *controllers)
{
	char own[PATH_MAX];

	put("cpuset cpu io memory hugetlb pids rdma misc\n",
	    "%s/cgroup.controllers", scratch);
	snprintf(own, sizeof(own), "%s%s", scratch, OWN_REL);
	assert_int_equal(mkdir_p(own, 0755), 0);
	put(controllers, "%s/cgroup.controllers", own);
	put("", "%s/cgroup.subtree_control", own);
	put("", "%s/cgroup.procs", own);
	put("0::" OWN_REL "\n", "%s", selff);
}

/* A scratch v1 layout: memory, pids and a joint cpu,cpuacct mount. */
static void
layout_v1(int with_pids)
{
	static const char *mounts[] = {"memory", "pids", "cpu,cpuacct"};
	char dir[PATH_MAX];
	size_t i;

	fake_v1 = 1;
	for (i = 0; i < 3; i++) {
		if (i == 1 && !with_pids)
			continue;
		snprintf(dir, sizeof(dir), "%s/%s", scratch, mounts[i]);
		assert_int_equal(mkdir(dir, 0755), 0);
		put("", "%s/cgroup.procs", dir);
		put("", "%s/tasks", dir);
	}
	put("", "%s/memory/memory.limit_in_bytes", scratch);
	put("9:name=systemd:/\n8:pids:/\n4:memory:/user\n"
	    "1:cpu,cpuacct:/\n0::/\n",
	    "%s", selff);
}

static int
setup_scratch(void **state)
{
	char tmpl[] = "/tmp/test_cgroup.XXXXXX";

	if (mkdtemp(tmpl) == NULL)
		return -1;
	snprintf(scratch, sizeof(scratch), "%s/fs", tmpl);
	snprintf(selff, sizeof(selff), "%s/self_cgroup", tmpl);
	if (mkdir(scratch, 0755) == -1)
		return -1;
	cg_kill_hook = fake_kill;
	cg_mkdir_hook = fake_mkdir;
	cg_rmdir_hook = fake_rmdir;
	fake_v1 = fake_cgkill = kill_wrote = 0;
	nkilled = 0;
	return 0;
}

static int
teardown_scratch(void **state)
{
	char *slash = strrchr(scratch, '/');

	*slash = '\0';
	rm_rf(scratch);
	cg_kill_hook = kill;
	cg_mkdir_hook = mkdir;
	cg_rmdir_hook = rmdir;
	return 0;
}

/* v2: supervisor move, subtree_control in own and remotemedia. */
static void
test_v2_discover(void **state)
{
	struct cg_root cr;
	char want[PATH_MAX + 32];

	layout_v2("cpu memory pids\n");
	assert_int_equal(cg_discover(&cr, scratch, selff), 0);
	assert_int_equal(cr.cr_version, CG_V2);
	snprintf(want, sizeof(want), "%s%s/remotemedia", scratch, OWN_REL);
	assert_string_equal(cr.cr_v2, want);
	assert_int_equal(
	    cr.cr_controllers, CG_C_MEMORY | CG_C_PIDS | CG_C_CPU | CG_C_SWAP);
	snprintf(want, sizeof(want), "%d", (int)getpid());
	assert_string_equal(
	    get("%s%s/supervisor/cgroup.procs", scratch, OWN_REL), want);
	assert_string_equal(
	    get("%s%s/cgroup.subtree_control", scratch, OWN_REL),
	    "+memory +pids +cpu");
	assert_string_equal(
	    get("%s%s/remotemedia/cgroup.subtree_control", scratch, OWN_REL),
	    "+memory +pids +cpu");

	/* Started again from the supervisor leaf: the same subtree. */
	put("0::" OWN_REL "/supervisor\n", "%s", selff);
	assert_int_equal(cg_discover(&cr, scratch, selff), 0);
	assert_int_equal(cr.cr_version, CG_V2);
	snprintf(want, sizeof(want), "%s%s/remotemedia", scratch, OWN_REL);
	assert_string_equal(cr.cr_v2, want);
}

/* v2: the limit files, the paths list, and join writing the pid. */
static void
test_v2_create_join(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {512ULL << 20, 64, 150};
	char paths[CG_PATHS_LEN], want[PATH_MAX + 32];

	layout_v2("cpu memory pids\n");
	cg_discover(&cr, scratch, selff);
	assert_int_equal(
	    cg_create(&cr, "sess1", &lim, paths, sizeof(paths)), 0);
	snprintf(
	    want, sizeof(want), "%s%s/remotemedia/sess1", scratch, OWN_REL);
	assert_string_equal(paths, want);
	assert_string_equal(get("%s/memory.max", paths), "536870912");
	assert_string_equal(get("%s/memory.swap.max", paths), "0");
	assert_string_equal(get("%s/pids.max", paths), "64");
	assert_string_equal(get("%s/cpu.max", paths), "150000 100000");

	assert_int_equal(cg_join(paths, 4242), 0);
	assert_string_equal(get("%s/cgroup.procs", paths), "4242");
	assert_int_equal(cg_join(paths, 0), 0);
	snprintf(want, sizeof(want), "%d", (int)getpid());
	assert_string_equal(get("%s/cgroup.procs", paths), want);
	put("", "%s/cgroup.procs", paths);
	assert_int_equal(cg_destroy(paths), 0);
	assert_false(exists("%s", paths));
}

/* v2: 0 leaves a limit off; a missing controller means no such limit. */
static void
test_v2_partial(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {64ULL << 20, 0, 50};
	char paths[CG_PATHS_LEN];

	layout_v2("memory pids\n");
	cg_discover(&cr, scratch, selff);
	assert_int_equal(cr.cr_version, CG_V2);
	assert_int_equal(
	    cr.cr_controllers, CG_C_MEMORY | CG_C_PIDS | CG_C_SWAP);
	assert_string_equal(
	    get("%s%s/cgroup.subtree_control", scratch, OWN_REL),
	    "+memory +pids");
	assert_int_equal(cg_create(&cr, "s", &lim, paths, sizeof(paths)), 0);
	assert_string_equal(get("%s/memory.max", paths), "67108864");
	assert_string_equal(get("%s/pids.max", paths), "max\n");
	assert_false(exists("%s/cpu.max", paths));
	assert_int_equal(cg_destroy(paths), 0);
}

/* v2 without delegation: CG_NONE, and every call is a no-op. */
static void
test_v2_not_delegated(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {1 << 20, 1, 1};
	char paths[CG_PATHS_LEN] = "junk";

	layout_v2("\n");
	assert_int_equal(cg_discover(&cr, scratch, selff), 0);
	assert_int_equal(cr.cr_version, CG_NONE);
	assert_int_equal(cr.cr_controllers, 0);
	assert_int_equal(cg_create(&cr, "s", &lim, paths, sizeof(paths)), 0);
	assert_string_equal(paths, "");
	assert_int_equal(cg_join(paths, 0), 0);
	assert_int_equal(cg_oom_killed(paths), 0);
	assert_int_equal(cg_pids_exhausted(paths), 0);
	assert_int_equal(cg_destroy(paths), 0);
	assert_int_equal(cg_cleanup_stale(&cr), 0);

	/* No cgroupfs at all, or no /proc/self/cgroup: the same. */
	rm_rf(scratch);
	assert_int_equal(cg_discover(&cr, scratch, selff), 0);
	assert_int_equal(cr.cr_version, CG_NONE);
	assert_int_equal(cg_discover(&cr, "/nonexistent", "/nonexistent"), 0);
	assert_int_equal(cr.cr_version, CG_NONE);
}

/* v2: OOM kills from memory.events, pids exhaustion from pids.events. */
static void
test_v2_events(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {1 << 20, 4, 0};
	char paths[CG_PATHS_LEN];

	layout_v2("cpu memory pids\n");
	cg_discover(&cr, scratch, selff);
	assert_int_equal(cg_create(&cr, "s", &lim, paths, sizeof(paths)), 0);
	assert_int_equal(cg_oom_killed(paths), 0);
	assert_int_equal(cg_pids_exhausted(paths), 0);
	/* Hitting memory.max without a kill is not an OOM kill. */
	put("low 0\nhigh 0\nmax 17\noom 1\noom_kill 0\n", "%s/memory.events",
	    paths);
	assert_int_equal(cg_oom_killed(paths), 0);
	put("low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\noom_group_kill 0\n",
	    "%s/memory.events", paths);
	assert_int_equal(cg_oom_killed(paths), 1);
	put("max 3\n", "%s/pids.events", paths);
	assert_int_equal(cg_pids_exhausted(paths), 1);
	assert_int_equal(cg_destroy(paths), 0);
}

/* v2 destroy: cgroup.kill, then SIGKILL per pid; nested; idempotent. */
static void
test_v2_destroy(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {0, 0, 0};
	char paths[CG_PATHS_LEN], inner[CG_PATHS_LEN + 16];

	fake_cgkill = 1;
	layout_v2("cpu memory pids\n");
	cg_discover(&cr, scratch, selff);
	assert_int_equal(cg_create(&cr, "s", &lim, paths, sizeof(paths)), 0);
	put("4194000\n4194001\n", "%s/cgroup.procs", paths);
	snprintf(inner, sizeof(inner), "%s/inner", paths);
	assert_int_equal(fake_mkdir(inner, 0755), 0);
	put("4194002\n", "%s/cgroup.procs", inner);

	assert_int_equal(cg_destroy(paths), 0);
	assert_false(exists("%s", paths));
	assert_true(kill_wrote);
	assert_true(was_killed(FAKE_PID1));
	assert_true(was_killed(FAKE_PID2));
	assert_true(was_killed(4194002));
	assert_int_equal(cg_destroy(paths), 0);
	assert_true(exists("%s", cr.cr_v2));
}

/*
 * One round without waiting (cg_destroy_try, a session's end and then a
 * timer): 1 while the cgroup lists processes, cgroup.kill on the first
 * round only and SIGKILL per pid on later ones, 0 once it is removed;
 * idempotent; -1 for a directory that is not a session cgroup.
 */
static void
test_v2_destroy_try(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {0, 0, 0};
	char paths[CG_PATHS_LEN];

	fake_cgkill = 1;
	layout_v2("cpu memory pids\n");
	cg_discover(&cr, scratch, selff);
	assert_int_equal(cg_create(&cr, "s", &lim, paths, sizeof(paths)), 0);
	put("4194000\n", "%s/cgroup.procs", paths);

	assert_int_equal(cg_destroy_try(paths, 1), 1);
	assert_string_equal(get("%s/cgroup.kill", paths), "1");
	assert_false(was_killed(FAKE_PID1));
	assert_int_equal(cg_destroy_try(paths, 0), 1);
	assert_true(was_killed(FAKE_PID1));
	assert_int_equal(cg_destroy_try(paths, 0), 0);
	assert_false(exists("%s", paths));
	assert_int_equal(cg_destroy_try(paths, 0), 0);
	assert_int_equal(cg_destroy_try(cr.cr_v2, 1), -1);
}

/* A name is one path component of a safe alphabet. */
static void
test_names(void **state)
{
	static const char *bad[] = {
	    "", ".", "..", "../x", ".hidden", "a/b", "a:b", "a b", "a\nb"};
	struct cg_root cr;
	struct cg_limits lim = {0, 0, 0};
	char paths[CG_PATHS_LEN], big[200];
	size_t i;

	layout_v2("cpu memory pids\n");
	cg_discover(&cr, scratch, selff);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		if (cg_create(&cr, bad[i], &lim, paths, sizeof(paths)) != -1)
			fail_msg("name \"%s\" was accepted", bad[i]);
		assert_int_equal(errno, EINVAL);
		assert_string_equal(paths, "");
	}
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(cg_create(&cr, big, &lim, paths, sizeof(paths)), -1);
	assert_int_equal(
	    cg_create(&cr, "build-0123abcdef_x.y", &lim, paths, sizeof(paths)),
	    0);
	assert_int_equal(cg_destroy(paths), 0);
	/* A paths buffer too small fails and leaves nothing behind. */
	assert_int_equal(cg_create(&cr, "s", &lim, paths, 8), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	assert_false(exists("%s/s", cr.cr_v2));
}

/*
 * A name that exists is never taken over; destroy acts only on
 * <...>/remotemedia/<name>.
 */
static void
test_v2_exists(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {1 << 20, 0, 0};
	char paths[CG_PATHS_LEN], again[CG_PATHS_LEN];

	layout_v2("cpu memory pids\n");
	cg_discover(&cr, scratch, selff);
	assert_int_equal(cg_create(&cr, "s", &lim, paths, sizeof(paths)), 0);
	put("4194000\n", "%s/cgroup.procs", paths);
	assert_int_equal(cg_create(&cr, "s", &lim, again, sizeof(again)), -1);
	assert_int_equal(errno, EEXIST);
	assert_string_equal(again, "");
	assert_string_equal(get("%s/cgroup.procs", paths), "4194000\n");
	assert_int_equal(nkilled, 0);

	assert_int_equal(cg_destroy(cr.cr_v2), -1);
	assert_int_equal(cg_destroy(scratch), -1);
	snprintf(again, sizeof(again), "%s/../remotemedia/s", cr.cr_v2);
	assert_int_equal(cg_destroy(again), -1);
	assert_int_equal(nkilled, 0);
	assert_true(exists("%s", paths));
	assert_int_equal(cg_destroy(paths), 0);
	assert_true(was_killed(FAKE_PID1));
}

/*
 * Stale cleanup removes leftovers, but not one whose processes descend
 * from a running front: that is another daemon's session.
 */
static void
test_v2_stale(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {0, 0, 0};
	char oldp[CG_PATHS_LEN], livep[CG_PATHS_LEN], comm[16], pid[32], c;
	int pfd[2], status;
	pid_t child;

	layout_v2("cpu memory pids\n");
	cg_discover(&cr, scratch, selff);
	assert_int_equal(cg_create(&cr, "old", &lim, oldp, sizeof(oldp)), 0);
	assert_int_equal(cg_create(&cr, "live", &lim, livep, sizeof(livep)), 0);
	put("4194000\n", "%s/cgroup.procs", oldp);

	assert_int_equal(pipe(pfd), 0);
	if ((child = fork()) == 0) {
		prctl(PR_SET_NAME, "rm-worker-test");
		alarm(10);
		if (write(pfd[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	assert_true(child > 0);
	assert_int_equal(read(pfd[0], &c, 1), 1);
	close(pfd[0]);
	close(pfd[1]);
	snprintf(pid, sizeof(pid), "%d\n", (int)child);
	put(pid, "%s/cgroup.procs", livep);

	/* While we are called remotemediad, the child is a front's. */
	prctl(PR_GET_NAME, comm);
	prctl(PR_SET_NAME, "remotemediad");
	assert_int_equal(cg_cleanup_stale(&cr), 0);
	prctl(PR_SET_NAME, comm);
	assert_false(exists("%s", oldp));
	assert_true(was_killed(FAKE_PID1));
	assert_true(exists("%s", livep));
	assert_false(was_killed(child));

	/* ...so without a front above it, the same cgroup is stale. */
	assert_int_equal(cg_cleanup_stale(&cr), 0);
	assert_false(exists("%s", livep));
	assert_true(was_killed(child));
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
}

/* v1: discovery, the joint cpu,cpuacct mount, limits, join. */
static void
test_v1_create_join(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {64ULL << 20, 16, 50};
	char paths[CG_PATHS_LEN], want[3 * PATH_MAX];
	const char *p;

	layout_v1(1);
	assert_int_equal(cg_discover(&cr, scratch, selff), 0);
	assert_int_equal(cr.cr_version, CG_V1);
	assert_int_equal(
	    cr.cr_controllers, CG_C_MEMORY | CG_C_PIDS | CG_C_CPU | CG_C_SWAP);
	snprintf(want, sizeof(want), "%s/memory/remotemedia", scratch);
	assert_string_equal(cr.cr_memory, want);
	snprintf(want, sizeof(want), "%s/cpu,cpuacct/remotemedia", scratch);
	assert_string_equal(cr.cr_cpu, want);
	assert_string_equal(cr.cr_v2, "");

	assert_int_equal(cg_create(&cr, "s1", &lim, paths, sizeof(paths)), 0);
	snprintf(want, sizeof(want),
	    "%s/memory/remotemedia/s1:"
	    "%s/pids/remotemedia/s1:%s/cpu,cpuacct/remotemedia/s1",
	    scratch, scratch, scratch);
	assert_string_equal(paths, want);
	assert_string_equal(get("%s/memory/remotemedia/s1/"
	                        "memory.limit_in_bytes",
	                        scratch),
	    "67108864");
	assert_string_equal(get("%s/memory/remotemedia/s1/"
	                        "memory.memsw.limit_in_bytes",
	                        scratch),
	    "67108864");
	assert_string_equal(
	    get("%s/pids/remotemedia/s1/pids.max", scratch), "16");
	p = get("%s/cpu,cpuacct/remotemedia/s1/cpu.cfs_period_us", scratch);
	assert_string_equal(p, "100000");
	p = get("%s/cpu,cpuacct/remotemedia/s1/cpu.cfs_quota_us", scratch);
	assert_string_equal(p, "50000");

	assert_int_equal(cg_join(paths, 4242), 0);
	assert_string_equal(
	    get("%s/memory/remotemedia/s1/cgroup.procs", scratch), "4242");
	assert_string_equal(
	    get("%s/pids/remotemedia/s1/cgroup.procs", scratch), "4242");
	assert_string_equal(
	    get("%s/cpu,cpuacct/remotemedia/s1/cgroup.procs", scratch), "4242");
	assert_int_equal(cg_destroy(paths), 0);
	assert_true(was_killed(4242));
	assert_false(exists("%s/memory/remotemedia/s1", scratch));
	assert_false(exists("%s/pids/remotemedia/s1", scratch));
	assert_false(exists("%s/cpu,cpuacct/remotemedia/s1", scratch));
}

/* No CPU limit (--session-cpu 0): no directory under the cpu controller,
 * whose scheduling would cost the session for nothing; the others as ever. */
static void
test_v1_no_cpu_limit(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {64ULL << 20, 16, 0};
	char paths[CG_PATHS_LEN], want[3 * PATH_MAX];

	layout_v1(1);
	assert_int_equal(cg_discover(&cr, scratch, selff), 0);
	assert_int_equal(cg_create(&cr, "s1", &lim, paths, sizeof(paths)), 0);
	snprintf(want, sizeof(want),
	    "%s/memory/remotemedia/s1:%s/pids/remotemedia/s1", scratch,
	    scratch);
	assert_string_equal(paths, want);
	assert_false(exists("%s/cpu,cpuacct/remotemedia/s1", scratch));
	assert_string_equal(
	    get("%s/pids/remotemedia/s1/pids.max", scratch), "16");
	assert_int_equal(cg_join(paths, 4242), 0);
	assert_string_equal(
	    get("%s/memory/remotemedia/s1/cgroup.procs", scratch), "4242");
	assert_int_equal(cg_destroy(paths), 0);
	assert_false(exists("%s/memory/remotemedia/s1", scratch));
	assert_false(exists("%s/pids/remotemedia/s1", scratch));
	(void)state;
}

/* v1: oom_control, the pre-4.13 failcnt rule, and pids.events. */
static void
test_v1_events(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {64ULL << 20, 16, 0};
	char paths[CG_PATHS_LEN], mem[PATH_MAX + 64];

	layout_v1(1);
	cg_discover(&cr, scratch, selff);
	assert_int_equal(cg_create(&cr, "s", &lim, paths, sizeof(paths)), 0);
	snprintf(mem, sizeof(mem), "%s/s", cr.cr_memory);
	assert_int_equal(cg_oom_killed(paths), 0);
	put("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
	    "%s/memory.oom_control", mem);
	assert_int_equal(cg_oom_killed(paths), 1);
	put("oom_kill_disable 0\nunder_oom 1\noom_kill 0\n",
	    "%s/memory.oom_control", mem);
	assert_int_equal(cg_oom_killed(paths), 1);

	/* An old kernel counts no kills: failcnt with max usage at limit. */
	put("oom_kill_disable 0\nunder_oom 0\n", "%s/memory.oom_control", mem);
	put("5\n", "%s/memory.failcnt", mem);
	put("1048576\n", "%s/memory.max_usage_in_bytes", mem);
	assert_int_equal(cg_oom_killed(paths), 0);
	put("67108864\n", "%s/memory.max_usage_in_bytes", mem);
	assert_int_equal(cg_oom_killed(paths), 1);

	assert_int_equal(cg_pids_exhausted(paths), 0);
	put("max 1\n", "%s/pids/remotemedia/s/pids.events", scratch);
	assert_int_equal(cg_pids_exhausted(paths), 1);
	assert_int_equal(cg_destroy(paths), 0);
}

/* v1 without a pids mount: the others still work, paths lists two. */
static void
test_v1_missing(void **state)
{
	struct cg_root cr;
	struct cg_limits lim = {64ULL << 20, 16, 50};
	char paths[CG_PATHS_LEN], want[3 * PATH_MAX];

	layout_v1(0);
	assert_int_equal(cg_discover(&cr, scratch, selff), 0);
	assert_int_equal(cr.cr_version, CG_V1);
	assert_int_equal(cr.cr_controllers, CG_C_MEMORY | CG_C_CPU | CG_C_SWAP);
	assert_string_equal(cr.cr_pids, "");
	assert_int_equal(cg_create(&cr, "s", &lim, paths, sizeof(paths)), 0);
	snprintf(want, sizeof(want),
	    "%s/memory/remotemedia/s:"
	    "%s/cpu,cpuacct/remotemedia/s",
	    scratch, scratch);
	assert_string_equal(paths, want);
	assert_int_equal(cg_destroy(paths), 0);

	/* A stale leftover in each hierarchy goes at the next start. */
	assert_int_equal(cg_create(&cr, "t", &lim, paths, sizeof(paths)), 0);
	put("4194001\n", "%s/memory/remotemedia/t/cgroup.procs", scratch);
	assert_int_equal(cg_cleanup_stale(&cr), 0);
	assert_true(was_killed(FAKE_PID2));
	assert_false(exists("%s/memory/remotemedia/t", scratch));
	assert_false(exists("%s/cpu,cpuacct/remotemedia/t", scratch));
}

/* ---- live tests on this machine's real hierarchy, as root ---- */

static struct cg_root live_root;
static char live_paths[CG_PATHS_LEN];
static pid_t live_child = -1;

/*
 * Discover the real hierarchy; skip unless root with memory and pids. On
 * a v2 host discovery moves the test into a supervisor leaf, so that
 * only runs when RM_TEST_CGROUP_V2 is set.
 */
static int
setup_live(void **state)
{
	live_paths[0] = '\0';
	live_child = -1;
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	return 0;
}

static void
live_discover(void)
{
	unsigned int need = CG_C_MEMORY | CG_C_PIDS;

	if (geteuid() != 0)
		skip();
	if (access("/sys/fs/cgroup/cgroup.controllers", F_OK) == 0 &&
	    getenv("RM_TEST_CGROUP_V2") == NULL)
		skip();
	cg_discover(&live_root, "/sys/fs/cgroup", "/proc/self/cgroup");
	if (live_root.cr_version == CG_NONE ||
	    (live_root.cr_controllers & need) != need)
		skip();
}

/* Reap children that were left to us, for at most a second. */
static void
reap_all(void)
{
	int i;

	for (i = 0; i < 100; i++) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD)
			return;
		usleep(10000);
	}
}

/* Whatever happened, nothing is left: no child, no cgroup. */
static int
teardown_live(void **state)
{
	if (live_child > 0) {
		kill(live_child, SIGKILL);
		waitpid(live_child, NULL, 0);
	}
	cg_destroy(live_paths);
	reap_all();
	prctl(PR_SET_CHILD_SUBREAPER, 0);
	return 0;
}

/* Wait for pid for at most secs seconds, then kill it. */
static int
wait_bounded(pid_t pid, int secs)
{
	int status, i;

	for (i = 0; i < secs * 100; i++) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			live_child = -1;
			return status;
		}
		usleep(10000);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	live_child = -1;
	fail_msg("child %d did not finish in %d s", (int)pid, secs);
	return -1;
}

/* Each directory of paths is gone. */
static void
assert_all_gone(const char *paths)
{
	char buf[CG_PATHS_LEN], *dir, *save = NULL;

	snprintf(buf, sizeof(buf), "%s", paths);
	for (dir = strtok_r(buf, ":", &save); dir != NULL;
	     dir = strtok_r(NULL, ":", &save))
		if (access(dir, F_OK) == 0)
			fail_msg("%s is still there", dir);
}

/* The child: join, then touch 200 MB under a 64 MB limit. */
static void __attribute__((noreturn)) live_hog(void)
{
	size_t i, mb = 1 << 20;
	char *p;

	alarm(20);
	if (cg_join(live_paths, 0) == -1)
		_exit(3);
	for (i = 0; i < 200; i++) {
		if ((p = malloc(mb)) == NULL)
			_exit(4);
		memset(p, (int)i, mb);
	}
	_exit(0);
}

/* 64 MB memory: a child touching 200 MB is OOM-killed, and we can tell. */
static void
test_live_oom(void **state)
{
	struct cg_limits lim = {64ULL << 20, 16, 50};
	char name[64];
	int status;

	live_discover();
	snprintf(name, sizeof(name), "test-%d-oom", (int)getpid());
	assert_int_equal(
	    cg_create(&live_root, name, &lim, live_paths, sizeof(live_paths)),
	    0);
	if (live_root.cr_version == CG_V1 && live_root.cr_cpu[0] != '\0')
		assert_string_equal(
		    get("%s/%s/cpu.cfs_quota_us", live_root.cr_cpu, name),
		    "50000\n");
	assert_int_equal(cg_oom_killed(live_paths), 0);
	if ((live_child = fork()) == 0)
		live_hog();
	assert_true(live_child > 0);
	status = wait_bounded(live_child, 25);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("child was not OOM-killed: status 0x%x", status);
	assert_int_equal(cg_oom_killed(live_paths), 1);
	assert_int_equal(cg_pids_exhausted(live_paths), 0);
	assert_int_equal(cg_destroy(live_paths), 0);
	assert_all_gone(live_paths);
	assert_int_equal(cg_destroy(live_paths), 0);
}

/*
 * The child: join, then fork 50 sleepers. Exit status: how many forks
 * succeeded, plus 100 if one failed with EAGAIN. The sleepers outlive it.
 */
static void __attribute__((noreturn)) live_forker(void)
{
	int i, ok = 0, eagain = 0;
	pid_t p;

	alarm(20);
	if (cg_join(live_paths, 0) == -1)
		_exit(255);
	for (i = 0; i < 50; i++) {
		if ((p = fork()) == 0) {
			alarm(30);
			pause();
			_exit(0);
		}
		if (p > 0)
			ok++;
		else if (errno == EAGAIN)
			eagain = 1;
	}
	_exit(ok + (eagain ? 100 : 0));
}

/*
 * 16 pids: the 16th fork fails with EAGAIN and we can tell; destroy
 * kills the 15 sleepers left in the cgroup and removes it.
 */
static void
test_live_pids(void **state)
{
	struct cg_limits lim = {64ULL << 20, 16, 0};
	char name[64];
	int status;

	live_discover();
	snprintf(name, sizeof(name), "test-%d-pids", (int)getpid());
	assert_int_equal(
	    cg_create(&live_root, name, &lim, live_paths, sizeof(live_paths)),
	    0);
	assert_int_equal(cg_pids_exhausted(live_paths), 0);
	if ((live_child = fork()) == 0)
		live_forker();
	assert_true(live_child > 0);
	status = wait_bounded(live_child, 25);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 100 + 15);
	assert_int_equal(cg_pids_exhausted(live_paths), 1);
	assert_int_equal(cg_oom_killed(live_paths), 0);
	assert_int_equal(cg_destroy(live_paths), 0);
	assert_all_gone(live_paths);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define SCRATCH(t) \
	cmocka_unit_test_setup_teardown(t, setup_scratch, teardown_scratch)
	    SCRATCH(test_v2_discover),
	    SCRATCH(test_v2_create_join),
	    SCRATCH(test_v2_partial),
	    SCRATCH(test_v2_not_delegated),
	    SCRATCH(test_v2_events),
	    SCRATCH(test_v2_destroy),
	    SCRATCH(test_v2_destroy_try),
	    SCRATCH(test_names),
	    SCRATCH(test_v2_exists),
	    SCRATCH(test_v2_stale),
	    SCRATCH(test_v1_create_join),
	    SCRATCH(test_v1_no_cpu_limit),
	    SCRATCH(test_v1_events),
	    SCRATCH(test_v1_missing),
#undef SCRATCH
	    cmocka_unit_test_setup_teardown(
	        test_live_oom, setup_live, teardown_live),
	    cmocka_unit_test_setup_teardown(
	        test_live_pids, setup_live, teardown_live),
	};

	log_init("test_cgroup",
	    getenv("CG_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
