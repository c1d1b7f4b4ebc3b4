/*
 * cgroup v1 (one hierarchy per controller): discovery of the memory, pids
 * and cpu mounts and remotemedia/ under each, a session's limits in each,
 * and OOM kills, including the pre-4.13 kernels that counted none.
 */
#include <sys/stat.h>
#include <sys/types.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "front_cgroup.h"
#include "sandbox_cgroup.h"

#define CG_LIMIT_SLACK (256 * 1024) /* max usage this near is "at" */

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
int
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
int
cg_create_v1(const struct cg_root *cr, const char *name,
    const struct cg_limits *lim, char *paths, size_t len)
{
	char dir[PATH_MAX];
	const char *parent;
	size_t i;

	for (i = 0; i < CG_NCTLS; i++) {
		parent = (const char *)cr + cg_ctls[i].cc_v1_off;
		if (parent[0] == '\0' ||
		    (cg_ctls[i].cc_bit == CG_C_CPU && lim->cpu_percent == 0))
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

/* Whether the memory controller OOM-killed in dir, by v1's oom_control. */
int
cg_v1_oom(const char *dir)
{
	char buf[1024];
	uint64_t v;

	if (cg_read_at(dir, "memory.oom_control", buf, sizeof(buf)) == -1)
		return 0;
	if (cg_key(buf, "under_oom", &v) == 0 && v > 0)
		return 1;
	if (cg_key(buf, "oom_kill", &v) == 0)
		return v > 0;
	return cg_v1_hit_limit(dir);
}
