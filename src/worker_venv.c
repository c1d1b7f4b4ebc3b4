/*
 * The environment builder: `remotemedia-worker --build-env DIR [options]
 * -- REQUIREMENT...`, started by the front for one cache entry.
 *
 * As root it creates DIR for the builder uid, then runs, as that uid and
 * with rlimits and a scrubbed environment, `python3 -m venv --without-pip`
 * and the host's pip with --python against it. pip never reads a pip.conf
 * or a PIP_* variable of the host. When pip succeeds, the tree is made
 * root-owned and read-only, and the `complete` marker is written last: an
 * entry without it is never used.
 */
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "worker.h"
#include "sandbox_cgroup.h"

#define VENV_PYTHON "/usr/bin/python3"
#define VENV_MAX_ARGS 256

struct venv_conf {
	const char *vc_dir;
	uid_t vc_uid;
	int vc_system_site;
	int vc_allow_source;
	const char *vc_index_url;
	const char *vc_extra[16];
	int vc_n_extra;
	const char *vc_find_links[16];
	int vc_n_find_links;
	const char *vc_cgroup;
	char **vc_reqs;
	int vc_n_reqs;
};

static void
venv_usage(void)
{
	fprintf(stderr,
	    "usage: remotemedia-worker --build-env DIR --uid UID "
	    "[--system-site-packages] [--allow-source] [--index-url URL] "
	    "[--extra-index-url URL]... [--find-links DIR]... -- REQ...\n");
	exit(2);
}

static void
venv_parse(struct venv_conf *vc, int argc, char *argv[])
{
	static const struct option opts[] = {
	    {"build-env", required_argument, NULL, 'd'},
	    {"uid", required_argument, NULL, 'u'},
	    {"system-site-packages", no_argument, NULL, 's'},
	    {"allow-source", no_argument, NULL, 'a'},
	    {"index-url", required_argument, NULL, 'i'},
	    {"extra-index-url", required_argument, NULL, 'e'},
	    {"find-links", required_argument, NULL, 'f'},
	    {"cgroup", required_argument, NULL, 'c'},
	    {NULL, 0, NULL, 0},
	};
	int ch;

	memset(vc, 0, sizeof(*vc));
	vc->vc_uid = (uid_t)-1;
	while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (ch) {
		case 'd':
			vc->vc_dir = optarg;
			break;
		case 'u':
			vc->vc_uid = (uid_t)strtoul(optarg, NULL, 10);
			break;
		case 's':
			vc->vc_system_site = 1;
			break;
		case 'a':
			vc->vc_allow_source = 1;
			break;
		case 'i':
			vc->vc_index_url = optarg;
			break;
		case 'e':
			if (vc->vc_n_extra < 16)
				vc->vc_extra[vc->vc_n_extra++] = optarg;
			break;
		case 'c':
			vc->vc_cgroup = optarg;
			break;
		case 'f':
			if (vc->vc_n_find_links < 16)
				vc->vc_find_links[vc->vc_n_find_links++] =
				    optarg;
			break;
		default:
			venv_usage();
		}
	}
	if (vc->vc_dir == NULL || optind >= argc)
		venv_usage();
	vc->vc_reqs = argv + optind;
	vc->vc_n_reqs = argc - optind;
}

/* In the child: become the builder uid with no groups and tight limits. */
static void
venv_drop(const struct venv_conf *vc)
{
	struct rlimit core = {0, 0}, nofile = {4096, 4096};
	struct rlimit fsize = {4ULL << 30, 4ULL << 30};

	setrlimit(RLIMIT_CORE, &core);
	setrlimit(RLIMIT_NOFILE, &nofile);
	setrlimit(RLIMIT_FSIZE, &fsize);
	if (geteuid() == 0 && vc->vc_uid != (uid_t)-1) {
		if (setgroups(0, NULL) == -1 || setgid(vc->vc_uid) == -1 ||
		    setuid(vc->vc_uid) == -1)
			fatal("cannot drop to builder uid %u",
			    (unsigned)vc->vc_uid);
		/* setuid cleared it: the builder must die with the front. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
	}
	prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
}

/* Run argv as the builder uid with a scrubbed environment; return status. */
static int
venv_run(const struct venv_conf *vc, char *const argv[])
{
	char home[4096], tmp[4096], *env[8];
	pid_t pid;
	int st;

	snprintf(home, sizeof(home), "HOME=%s/.home", vc->vc_dir);
	snprintf(tmp, sizeof(tmp), "TMPDIR=%s/.tmp", vc->vc_dir);
	env[0] = (char *)"PATH=/usr/bin:/bin";
	env[1] = (char *)"LANG=C.UTF-8";
	env[2] = home;
	env[3] = tmp;
	env[4] = (char *)"PIP_CONFIG_FILE=/dev/null";
	env[5] = (char *)"PYTHONNOUSERSITE=1";
	env[6] = NULL;
	if ((pid = fork()) == -1)
		fatal("fork");
	if (pid == 0) {
		venv_drop(vc);
		execve(argv[0], argv, env);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	while (waitpid(pid, &st, 0) == -1)
		if (errno != EINTR)
			fatal("waitpid");
	return st;
}

/* pip's command line: isolated, the server's index only, binaries only. */
static void
venv_pip_argv(const struct venv_conf *vc, char **argv, char *python)
{
	int i, n = 0;

	argv[n++] = (char *)VENV_PYTHON;
	argv[n++] = (char *)"-m";
	argv[n++] = (char *)"pip";
	argv[n++] = (char *)"--isolated";
	argv[n++] = (char *)"--python";
	argv[n++] = python;
	argv[n++] = (char *)"install";
	argv[n++] = (char *)"--no-input";
	argv[n++] = (char *)"--disable-pip-version-check";
	argv[n++] = (char *)"--no-cache-dir";
	argv[n++] = (char *)"--progress-bar";
	argv[n++] = (char *)"off";
	if (!vc->vc_allow_source)
		argv[n++] = (char *)"--only-binary=:all:";
	if (vc->vc_index_url != NULL) {
		argv[n++] = (char *)"--index-url";
		argv[n++] = (char *)vc->vc_index_url;
	} else
		argv[n++] = (char *)"--no-index";
	for (i = 0; i < vc->vc_n_extra; i++) {
		argv[n++] = (char *)"--extra-index-url";
		argv[n++] = (char *)vc->vc_extra[i];
	}
	for (i = 0; i < vc->vc_n_find_links; i++) {
		argv[n++] = (char *)"--find-links";
		argv[n++] = (char *)vc->vc_find_links[i];
	}
	argv[n++] = (char *)"--";
	for (i = 0; i < vc->vc_n_reqs && n < VENV_MAX_ARGS - 1; i++)
		argv[n++] = vc->vc_reqs[i];
	argv[n] = NULL;
}

static uint64_t venv_bytes;

/* Make one node root-owned and read-only, and count its size. */
static int
venv_seal_one(
    const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	if (lchown(path, 0, 0) == -1 && geteuid() == 0)
		log_warn("chown %s", path);
	if (!S_ISLNK(sb->st_mode) &&
	    chmod(path,
	        sb->st_mode &
	            ~(mode_t)(S_IWUSR | S_IWGRP | S_IWOTH | S_ISUID |
	                S_ISGID)) == -1)
		log_warn("chmod %s", path);
	venv_bytes += (uint64_t)sb->st_blocks * 512;
	return 0;
}

/* Seal the tree and write the completion marker last. */
static int
venv_seal(const struct venv_conf *vc)
{
	char path[4096], final[4096], text[64];
	int fd, n;

	snprintf(path, sizeof(path), "%s/.home", vc->vc_dir);
	rm_rf(path);
	snprintf(path, sizeof(path), "%s/.tmp", vc->vc_dir);
	rm_rf(path);
	venv_bytes = 0;
	if (nftw(vc->vc_dir, venv_seal_one, 32, FTW_PHYS | FTW_DEPTH) == -1)
		return -1;
	snprintf(path, sizeof(path), "%s/complete.tmp", vc->vc_dir);
	chmod(vc->vc_dir, 0755);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0444)) == -1)
		return -1;
	n = snprintf(
	    text, sizeof(text), "size=%llu\n", (unsigned long long)venv_bytes);
	if (write(fd, text, (size_t)n) != n || fsync(fd) == -1) {
		close(fd);
		return -1;
	}
	close(fd);
	snprintf(final, sizeof(final), "%s/complete", vc->vc_dir);
	if (rename(path, final) == -1)
		return -1;
	return chmod(vc->vc_dir, 0555);
}

/* Create DIR and its scratch dirs for the builder uid. */
static void
venv_prepare(const struct venv_conf *vc)
{
	char path[4096];
	const char *sub[] = {"", "/.home", "/.tmp"};
	size_t i;

	for (i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s%s", vc->vc_dir, sub[i]);
		if (mkdir(path, 0755) == -1)
			fatal("mkdir %s", path);
		if (geteuid() == 0 && vc->vc_uid != (uid_t)-1 &&
		    chown(path, vc->vc_uid, vc->vc_uid) == -1)
			fatal("chown %s", path);
	}
}

static int
venv_status(const char *what, int st)
{
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	if (WIFSIGNALED(st))
		fprintf(stderr, "ERROR: %s killed by signal %d\n", what,
		    WTERMSIG(st));
	else
		fprintf(stderr, "ERROR: %s exited with status %d\n", what,
		    WEXITSTATUS(st));
	return -1;
}

/* The builder's main: venv, pip, seal. Exit 0 only with a complete entry. */
int
worker_venv_main(int argc, char *argv[])
{
	struct venv_conf vc;
	char *venv[8], *pip[VENV_MAX_ARGS], python[4200], target[4096];
	int n = 0;

	log_init("builder", LOG_LEVEL_INFO);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	venv_parse(&vc, argc, argv);
	/* Into the build's cgroup before anything else runs. */
	if (vc.vc_cgroup != NULL && cg_join(vc.vc_cgroup, 0) == -1)
		fatal("cannot join the build's cgroup");
	umask(022);
	venv_prepare(&vc);
	snprintf(target, sizeof(target), "%s/venv", vc.vc_dir);
	snprintf(python, sizeof(python), "%s/bin/python", target);
	venv[n++] = (char *)VENV_PYTHON;
	venv[n++] = (char *)"-m";
	venv[n++] = (char *)"venv";
	venv[n++] = (char *)"--without-pip";
	if (vc.vc_system_site)
		venv[n++] = (char *)"--system-site-packages";
	venv[n++] = target;
	venv[n] = NULL;
	printf("Creating environment\n");
	fflush(stdout);
	if (venv_status("python3 -m venv", venv_run(&vc, venv)) == -1)
		return 1;
	venv_pip_argv(&vc, pip, python);
	if (venv_status("pip", venv_run(&vc, pip)) == -1)
		return 1;
	if (venv_seal(&vc) == -1) {
		fprintf(stderr, "ERROR: cannot seal the environment: %s\n",
		    strerror(errno));
		return 1;
	}
	return 0;
}
