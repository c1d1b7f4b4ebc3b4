/*
 * Joining a session's cgroup: the worker moves itself into it before
 * anything else runs. A cgroup is named by a ':'-separated list of
 * directories, one per hierarchy (one on v2, up to three on v1), made by
 * the front (include/front_cgroup.h) and handed to the worker as
 * sandbox_conf.sc_cgroup. The front's cgroup code uses the primitives
 * below too.
 */
#ifndef RM_SANDBOX_CGROUP_H
#define RM_SANDBOX_CGROUP_H

#include <sys/types.h>

#include <stddef.h>

/* Move pid (0: the caller) into every directory of paths; -1 and errno. */
int cg_join(const char *, pid_t);

/* dir/file into buf, or -1 with ENAMETOOLONG. */
int cg_path(char *, size_t, const char *, const char *);
/* Whether dir/file exists. */
int cg_has(const char *, const char *);
/* Write a value to dir/file in one write(2), as cgroupfs wants. */
int cg_write(const char *, const char *, const char *);
/* The next directory of a paths list into dir, advancing; 0 at the end. */
int cg_paths_next(const char **, char *, size_t);

#endif
