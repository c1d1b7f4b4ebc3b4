/*
 * Session cgroups (architecture section 5, step 1): the front discovers the
 * hierarchy once, creates one cgroup per session or environment build with
 * its limits, checks it for OOM kills and pids exhaustion when the worker
 * dies, and destroys it; the worker joins it before anything else runs.
 *
 * Layout.
 *   v2 (a delegated subtree, systemd Delegate=yes, detected from the
 *   controllers listed in the daemon's own cgroup.controllers):
 *     <own>/supervisor          the daemon itself (no internal processes)
 *     <own>/remotemedia         +memory +pids +cpu in subtree_control
 *     <own>/remotemedia/<name>  one session: memory.max, memory.swap.max=0,
 *                               pids.max, cpu.max "<quota> 100000"
 *   v1 (the dev machines):
 *     <mount>/memory/remotemedia/<name>  memory.limit_in_bytes and
 *                                        memory.memsw.limit_in_bytes
 *     <mount>/pids/remotemedia/<name>    pids.max
 *     <mount>/cpu/remotemedia/<name>     cpu.cfs_period_us, cpu.cfs_quota_us
 *   none: not root, or no usable cgroupfs; every call is a no-op.
 *
 * A session's cgroup is named by a ':'-separated list of directories, one
 * per hierarchy (one on v2, up to three on v1), which the front hands to
 * the worker as sandbox_conf.sc_cgroup. Only plain file I/O, mkdir and
 * rmdir touch the hierarchy, so the tests run it on a scratch directory.
 */
#ifndef RM_SANDBOX_CGROUP_H
#define RM_SANDBOX_CGROUP_H

#include <sys/types.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

enum cg_version {
	CG_NONE,
	CG_V1,
	CG_V2,
};

/* Controllers that sessions are limited by (cr_controllers). */
#define CG_C_MEMORY 0x1
#define CG_C_PIDS 0x2
#define CG_C_CPU 0x4
#define CG_C_SWAP 0x8 /* swap is capped too (memory.swap.max, memsw) */

/* Room for the paths list that cg_create writes. */
#define CG_PATHS_LEN (3 * PATH_MAX)

/* Limits of one cgroup; 0 leaves that limit off. */
struct cg_limits {
	uint64_t memory_bytes;
	uint32_t pids;
	uint32_t cpu_percent; /* of one CPU; 200 is two CPUs */
};

/* What cg_discover found, once at start. */
struct cg_root {
	enum cg_version cr_version;
	unsigned int cr_controllers; /* CG_C_* that sessions get */
	/* v2: <mount>/<own cgroup>/remotemedia */
	char cr_v2[PATH_MAX];
	/* v1: <controller mount>/remotemedia, or "" without the controller */
	char cr_memory[PATH_MAX];
	char cr_pids[PATH_MAX];
	char cr_cpu[PATH_MAX];
};

/*
 * The front, at start: cg_discover(&cr, "/sys/fs/cgroup",
 * "/proc/self/cgroup") always returns 0 and warns once about what is
 * missing (CG_NONE: every call below is a no-op returning 0); then
 * cg_cleanup_stale(&cr). Leftovers whose processes descend from a running
 * remotemediad are another daemon's and are left alone.
 *
 * Per session: cg_create(&cr, name, &limits, paths, CG_PATHS_LEN), name
 * being the session id or "build-<key>" ([A-Za-z0-9._-], at most 128, no
 * leading '.'; one that exists fails with EEXIST); the worker runs
 * cg_join(paths, 0) first thing; when it has died, cg_oom_killed(paths)
 * and cg_pids_exhausted(paths) say whether a limit killed it (1) or not
 * (0); then cg_destroy(paths), which kills what is left, removes the
 * directories, is idempotent, and refuses any directory that is not
 * <...>/remotemedia/<name>. All return -1 with errno on failure.
 */
int cg_discover(struct cg_root *, const char *, const char *);
int cg_create(const struct cg_root *, const char *, const struct cg_limits *,
    char *, size_t);
int cg_join(const char *, pid_t);
int cg_oom_killed(const char *);
int cg_pids_exhausted(const char *);
int cg_destroy(const char *);
int cg_cleanup_stale(const struct cg_root *);
/* Only cgroups whose names start with this prefix are this daemon's. */
void cg_set_owner(const char *);

/*
 * For the tests, which stand in for the kernel on a scratch directory:
 * kill(2), mkdir(2) (the kernel fills a new cgroup with its interface
 * files) and rmdir(2) (it refuses a populated cgroup and removes the
 * files). They default to the system calls.
 */
extern int (*cg_kill_hook)(pid_t, int);
extern int (*cg_mkdir_hook)(const char *, mode_t);
extern int (*cg_rmdir_hook)(const char *);

#endif
