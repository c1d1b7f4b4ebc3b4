/*
 * Joining a session's cgroup, which the worker does on itself before
 * anything else runs, and the cgroupfs primitives it needs: a path, a
 * one-write(2) file write, and the ':'-separated list of directories the
 * front hands over. The front's cgroup code (src/front_cgroup*.c) uses
 * these too; the worker links nothing else of it.
 */
#include <sys/types.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "sandbox_cgroup.h"

/* Join dir and name into buf, or fail with ENAMETOOLONG. */
int
cg_path(char *buf, size_t len, const char *dir, const char *name)
{
	int n = snprintf(buf, len, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int
cg_has(const char *dir, const char *file)
{
	char path[PATH_MAX];

	return cg_path(path, sizeof(path), dir, file) == 0 &&
	    access(path, F_OK) == 0;
}

/* Write val to dir/file in one write(2), as cgroupfs wants. */
int
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

/*
 * Copy the next directory of a ':'-separated list into dir and advance
 * *pp; 0 at the end of the list. One too long for dir is skipped, never
 * cut short into some other directory.
 */
int
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
