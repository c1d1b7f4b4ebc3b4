/*
 * Removing trees the sessions wrote, without trusting their shape: a tree
 * is renamed into a trash directory at once (so the name is free and the
 * session is gone), then /bin/rm removes it in its own process. A tree of
 * any depth or size can neither crash the front nor stall its loop.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "front.h"
#include "log.h"
#include "util.h"

/*
 * Start /bin/rm on path; with wait set, wait for it. Not as root, the
 * directories of a sealed environment (read-only) keep their entries
 * from their owner: chmod gives the owner write back first.
 */
static void
trash_rm(const char *path, int wait)
{
	char *argv[] = {(char *)"rm", (char *)"-rf",
	    (char *)"--one-file-system", (char *)"--", (char *)path, NULL};
	char *argv_user[] = {(char *)"sh", (char *)"-c",
	    (char *)"chmod -R u+w -- \"$1\" 2>/dev/null; "
	            "exec rm -rf --one-file-system -- \"$1\"",
	    (char *)"sh", (char *)path, NULL};
	char *envp[] = {(char *)"PATH=/usr/bin:/bin", NULL};
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int st, rv;

	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addclosefrom_np(&fa, 3);
	if (geteuid() == 0)
		rv = posix_spawn(&pid, "/bin/rm", &fa, NULL, argv, envp);
	else
		rv = posix_spawn(&pid, "/bin/sh", &fa, NULL, argv_user, envp);
	posix_spawn_file_actions_destroy(&fa);
	if (rv != 0) {
		errno = rv;
		log_warn("cannot start /bin/rm for %s", path);
		return;
	}
	if (wait)
		while (waitpid(pid, &st, 0) == -1 && errno == EINTR)
			;
}

/* Remove path where it is, and wait: 0 once it is gone. */
static int
trash_in_place(const char *path)
{
	struct stat sb;

	trash_rm(path, 1);
	return lstat(path, &sb) == -1 ? 0 : -1;
}

/*
 * Move path into trashdir under a fresh name and remove it in the
 * background (the SIGCHLD handler reaps rm). Returns 0 once path is gone.
 * Where the move cannot be made (no inode left for the trash directory,
 * another file system), path is removed in place.
 */
int
front_trash(const char *path, const char *trashdir)
{
	char dest[4200], name[17];
	struct stat sb;

	if (lstat(path, &sb) == -1)
		return errno == ENOENT ? 0 : -1;
	if (mkdir(trashdir, 0700) == -1 && errno != EEXIST) {
		log_warn("mkdir %s", trashdir);
		return trash_in_place(path);
	}
	random_hex(name, sizeof(name));
	snprintf(dest, sizeof(dest), "%s/%s", trashdir, name);
	/* Not as root, a read-only directory cannot change parents (its ..
	 * changes): its owner gives it write back. */
	if (geteuid() != 0 && S_ISDIR(sb.st_mode) && !(sb.st_mode & S_IWUSR))
		(void)chmod(path, (sb.st_mode & 07777) | S_IWUSR);
	if (rename(path, dest) == -1) {
		log_warn("rename %s", path);
		return trash_in_place(path);
	}
	trash_rm(dest, 0);
	return 0;
}

/* At start: empty a trash directory a previous run left, and wait. */
void
front_trash_empty(const char *trashdir)
{
	struct stat sb;

	if (lstat(trashdir, &sb) == -1)
		return;
	trash_rm(trashdir, 1);
	if (lstat(trashdir, &sb) == 0)
		log_warnx("could not empty %s", trashdir);
}
