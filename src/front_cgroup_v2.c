/*
 * cgroup v2 (a delegated subtree): discovery, which moves the daemon into
 * <own>/supervisor and enables the controllers in <own>/remotemedia, a
 * session's limits, and its OOM kills (include/front_cgroup.h has the
 * layout).
 */
#include <sys/types.h>

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "front_cgroup.h"
#include "sandbox_cgroup.h"

#define CG_SUPERVISOR "supervisor"
#define CG_V2_WANT (CG_C_MEMORY | CG_C_PIDS | CG_C_CPU)

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
int
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
	return 0;
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

/* Create <cr_v2>/name with its limits. */
int
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
 * Whether the memory controller OOM-killed in dir, by its v2
 * memory.events: 1 or 0, or -1 when dir has none (a v1 directory).
 */
int
cg_v2_oom(const char *dir)
{
	char buf[1024];
	uint64_t v;

	if (cg_read_at(dir, "memory.events", buf, sizeof(buf)) == -1)
		return -1;
	return cg_key(buf, "oom_kill", &v) == 0 && v > 0;
}
