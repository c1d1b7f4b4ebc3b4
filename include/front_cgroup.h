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
 *                               (left at "max" with cpu_percent 0)
 *   v1 (the dev machines):
 *     <mount>/memory/remotemedia/<name>  memory.limit_in_bytes and
 *                                        memory.memsw.limit_in_bytes
 *     <mount>/pids/remotemedia/<name>    pids.max
 *     <mount>/cpu/remotemedia/<name>     cpu.cfs_period_us, cpu.cfs_quota_us
 *                                        (none with cpu_percent 0: the
 *                                        session stays out of the cpu
 *                                        controller)
 *   none: not root, or no usable cgroupfs; every call is a no-op.
 *
 * A session's cgroup is named by a ':'-separated list of directories, one
 * per hierarchy (one on v2, up to three on v1), which the front hands to
 * the worker as sandbox_conf.sc_cgroup. Only plain file I/O, mkdir and
 * rmdir touch the hierarchy, so the tests run it on a scratch directory.
 *
 * The front's code: front_cgroup.c (what v1 and v2 share, stale cleanup),
 * front_cgroup_v1.c and front_cgroup_v2.c; the worker only joins
 * (sandbox/sandbox_cgroup.c, whose primitives the front uses too).
 */
#ifndef RM_FRONT_CGROUP_H
#define RM_FRONT_CGROUP_H

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

/* Limits of one cgroup; 0 leaves that limit off (cpu_percent 0 on v1:
 * no directory under the cpu controller at all). */
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
 * cg_set_owner(tag), cg_cleanup_stale(&cr). Leftovers without this
 * daemon's tag, or whose processes descend from a running remotemediad,
 * are another daemon's and are left alone (cg_mine in front_cgroup.c is
 * the one test of "this daemon's").
 *
 * Per session: cg_create(&cr, name, &limits, paths, CG_PATHS_LEN), name
 * being the session id or "build-<key>", made "<tag><name>" with the tag
 * of cg_set_owner ([A-Za-z0-9._-], at most 128, no leading '.'; one that
 * exists fails with EEXIST); the worker runs cg_join(paths, 0)
 * (sandbox_cgroup.h) first thing; when it has died, cg_oom_killed(paths)
 * and cg_pids_exhausted(paths) say whether a limit killed it (1) or not
 * (0); then cg_destroy(paths), which kills what is left, removes the
 * directories, is idempotent, and refuses any directory that is not
 * <...>/remotemedia/<tag><name>. All return -1 with errno on failure.
 */
int cg_discover(struct cg_root *, const char *, const char *);
int cg_create(const struct cg_root *, const char *, const struct cg_limits *,
    char *, size_t);
int cg_oom_killed(const char *);
int cg_pids_exhausted(const char *);
int cg_destroy(const char *);
/* One round of cg_destroy, without waiting: 0 all gone, 1 some still
 * busy (the processes it killed are going), -1 failure; first on the
 * first round of a cgroup, later ones from a timer. */
int cg_destroy_try(const char *, int);
int cg_cleanup_stale(const struct cg_root *);
/* The tag this daemon's cgroup names start with; before cg_cleanup_stale. */
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

/* Between front_cgroup.c and its v1 and v2 halves. */
#define CG_PARENT "remotemedia"
#define CG_CPU_PERIOD 100000 /* microseconds, v2 and v1 */

/* The controllers the module uses, by bit, name and v1 mount. */
struct cg_ctl {
	unsigned int cc_bit;
	const char *cc_name;
	size_t cc_v1_off; /* its directory in struct cg_root on v1 */
	const char *cc_v1_file; /* v1: the limit that must be there */
};
#define CG_NCTLS 3
extern const struct cg_ctl cg_ctls[CG_NCTLS];

/* front_cgroup.c */
int cg_read(const char *, char *, size_t);
int cg_read_at(const char *, const char *, char *, size_t);
int cg_key(const char *, const char *, uint64_t *);
unsigned int cg_ctl_parse(const char *);
int cg_mkdir_exist(const char *);
int cg_self_line(const char *, const char *, char *, size_t, char *, size_t);
int cg_paths_add(char *, size_t, const char *);
int cg_mkdir_new(const char *, const char *, char *, size_t);
int cg_limit(const char *, const char *, uint64_t);
void cg_undo_dir(const char *);
uint64_t cg_quota(const struct cg_limits *);

/* front_cgroup_v1.c */
int cg_discover_v1(struct cg_root *, const char *, const char *);
int cg_create_v1(const struct cg_root *, const char *, const struct cg_limits *,
    char *, size_t);
int cg_v1_oom(const char *);

/* front_cgroup_v2.c */
int cg_discover_v2(struct cg_root *, const char *, const char *);
int cg_create_v2(const struct cg_root *, const char *, const struct cg_limits *,
    char *, size_t);
int cg_v2_oom(const char *);

#endif
