/*
 * The one spawn path: every process the front starts is a fresh exec of
 * remotemedia-worker, a session's worker or an environment's builder.
 */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <unistd.h>

#include "front.h"
#include "log.h"

/*
 * The one way the front starts remotemedia-worker, for a session and for
 * an environment build (OpenBSD httpd's proc_exec is the model): the same
 * argv head; the same cleaned environment, plus a session's HOME, TMPDIR
 * and REMOTEMEDIA_SESSION (session_env; by the last, a session's
 * processes are found in /proc/PID/environ); fds[i] on descriptor i for
 * i < nfds (-1: /dev/null for 0, the front's own for 1 and 2, none from
 * 3 on) and nothing else open; in a session and process group of its own,
 * so that what it starts dies with it. build_dir: the cache entry to
 * build, NULL for a session. Returns the pid, or -1.
 */
pid_t
front_worker_exec(const char *build_dir, const char *const session_env[3],
    const int *fds, int nfds)
{
	static const char *const base[] = {"PATH=/usr/local/bin:/usr/bin:/bin",
	    "LANG=C.UTF-8", "PYTHONDONTWRITEBYTECODE=1", "PYTHONNOUSERSITE=1"};
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	char *argv[6], *envp[8];
	int moved[WORKER_EXEC_FDS];
	pid_t pid;
	int i, n = 0, rv, last = 2;

	for (i = 0; i < 4; i++)
		envp[i] = (char *)base[i];
	for (; session_env != NULL && i < 7; i++)
		envp[i] = (char *)session_env[i - 4];
	envp[i] = NULL;
	argv[n++] = front_conf.fc_worker;
	argv[n++] = (char *)"--log-level";
	argv[n++] = (char *)log_level_name(log_getlevel());
	if (build_dir != NULL) {
		argv[n++] = (char *)"--build-env";
		argv[n++] = (char *)build_dir;
	}
	argv[n] = NULL;
	/* The dup2s go in order: a descriptor below nfds, other than its
	 * own target, could be overwritten before its turn. Copy it above. */
	for (i = 0; i < nfds; i++)
		moved[i] = fds[i] >= 0 && fds[i] < nfds && fds[i] != i
		    ? fcntl(fds[i], F_DUPFD_CLOEXEC, nfds)
		    : fds[i];
	for (i = 0, rv = 0; i < nfds; i++)
		if (moved[i] == -1 && fds[i] != -1)
			rv = errno;
	if (rv != 0)
		goto done;
	posix_spawn_file_actions_init(&fa);
	if (fds[0] == -1)
		posix_spawn_file_actions_addopen(
		    &fa, 0, "/dev/null", O_RDONLY, 0);
	for (i = 0; i < nfds; i++)
		if (fds[i] != -1) {
			/* glibc clears FD_CLOEXEC of a dup2 onto itself. */
			posix_spawn_file_actions_adddup2(&fa, moved[i], i);
			last = i;
		}
	posix_spawn_file_actions_addclosefrom_np(&fa, last + 1);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
	rv = posix_spawn(&pid, front_conf.fc_worker, &fa, &attr, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
done:
	for (i = 0; i < nfds; i++)
		if (moved[i] != fds[i] && moved[i] != -1)
			close(moved[i]);
	if (rv != 0) {
		errno = rv;
		log_warn("spawn %s", front_conf.fc_worker);
		return -1;
	}
	return pid;
}
