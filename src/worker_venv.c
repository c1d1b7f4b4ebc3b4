/*
 * The environment builder: `remotemedia-worker --log-level L --build-env
 * DIR`, started by the front for one cache entry, with its job, a BuildJob
 * (proto/worker.proto), on stdin: the packed Build whose hash is DIR's
 * name, the builder uid, the build's cgroup and whether to sandbox it.
 *
 * As root it creates DIR for the builder uid, then runs, as that uid and
 * with rlimits and a scrubbed environment, `python3 -m venv --without-pip`
 * and the host's pip with --python against it. pip never reads a pip.conf
 * or a PIP_* variable of the host. When pip succeeds, the tree is made
 * root-owned and read-only, and the `complete` marker is written last: an
 * entry without it is never used.
 *
 * With BuildJob.sandbox (the front's sandbox on) both run inside the session
 * sandbox's build mode (sandbox.h): a mount namespace whose minimal root
 * has DIR as the only writable host directory, a PID namespace, the
 * builder uid with no capabilities and no_new_privs, Landlock and the
 * seccomp filter; and a network namespace where only the configured
 * indexes can be reached, through the forwarder of sandbox_forward.c.
 * Setup scripts that --allow-source lets run are confined the same way.
 */
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <grp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "worker.h"
#include "sandbox_cgroup.h"
#include "sandbox.h"
#include "worker.pb-c.h"

#define VENV_PYTHON "/usr/bin/python3"
#define VENV_MAX_ARGS 256
#define VENV_JOB_MAX (1 << 20) /* the largest BuildJob read from stdin */
/* Index names get 127.77.0.1 and on inside a build: out of the way of an
 * index that a URL gives as 127.0.0.1 on the same port. */
#define VENV_NAME_NET 0x7f4d0001U
#define VENV_FSIZE (4ULL << 30) /* RLIMIT_FSIZE; the build's /tmp size */

struct venv_conf {
	const char *vc_dir;
	uid_t vc_uid;
	const char *vc_cgroup; /* NULL: none */
	int vc_sandbox;
	/* What to build: the job's Build, unpacked. */
	const Remotemedia__Worker__V1__Build *vc_build;
};

/* What the build's sandbox gets from the pip options (venv_net_add). */
struct venv_net {
	struct sandbox_forward vn_fwd[SANDBOX_FORWARD_MAX];
	size_t vn_n_fwd;
	char vn_hosts[SANDBOX_FORWARD_MAX * 300];
	char vn_names[SANDBOX_FORWARD_MAX][256]; /* VENV_NAME_NET and on */
	size_t vn_n_names;
	const char *vn_readable[SANDBOX_READABLE_MAX];
	size_t vn_n_readable;
};

/* Host trees a build may read besides Python's: compilers and headers,
 * for the setup scripts that --allow-source lets run. */
static const char *const venv_build_readable[] = {
    "/usr/lib/gcc", "/usr/include", "/usr/libexec"};

/*
 * Read the job from stdin (the front writes it whole, then closes) and
 * fill vc from it. Exits 2 on anything but one well-formed job.
 */
static void
venv_read_job(struct venv_conf *vc, const char *dir)
{
	static uint8_t buf[VENV_JOB_MAX];
	Remotemedia__Worker__V1__BuildJob *job;
	Remotemedia__Worker__V1__Build *build;
	size_t len = 0;
	ssize_t n;

	while (len < sizeof(buf) &&
	    (n = read(STDIN_FILENO, buf + len, sizeof(buf) - len)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			fatal("read the build job");
		len += (size_t)n;
	}
	if (len == sizeof(buf))
		fatalx("the build job is larger than %d bytes", VENV_JOB_MAX);
	job = remotemedia__worker__v1__build_job__unpack(NULL, len, buf);
	if (job == NULL)
		fatalx("the build job on stdin is not a BuildJob");
	build = remotemedia__worker__v1__build__unpack(
	    NULL, job->build.len, job->build.data);
	if (build == NULL || build->n_requirements == 0)
		fatalx("the build job carries no Build with requirements");
	memset(vc, 0, sizeof(*vc));
	vc->vc_dir = dir;
	vc->vc_uid = job->uid < 0 ? (uid_t)-1 : (uid_t)job->uid;
	vc->vc_cgroup = job->cgroup[0] != '\0' ? xstrdup(job->cgroup) : NULL;
	vc->vc_sandbox = job->sandbox;
	vc->vc_build = build;
	remotemedia__worker__v1__build_job__free_unpacked(job, NULL);
}

/* In the child: become the builder uid with no groups and tight limits. */
static void
venv_drop(const struct venv_conf *vc)
{
	struct rlimit core = {0, 0}, nofile = {4096, 4096};
	struct rlimit fsize = {VENV_FSIZE, VENV_FSIZE};

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
		/* pip takes a requirement that names a file in its working
		 * directory, "name==1.0.tar.gz", for that file: let it look
		 * in the new entry, where nobody else puts files. */
		if (chdir(vc->vc_dir) == -1) {
			fprintf(stderr, "chdir %s: %s\n", vc->vc_dir,
			    strerror(errno));
			_exit(127);
		}
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
	const Remotemedia__Worker__V1__Build *b = vc->vc_build;
	size_t i, n = 0;

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
	if (!b->allow_source)
		argv[n++] = (char *)"--only-binary=:all:";
	if (b->index_url[0] != '\0') {
		argv[n++] = (char *)"--index-url";
		argv[n++] = b->index_url;
	} else
		argv[n++] = (char *)"--no-index";
	for (i = 0; i < b->n_extra_index_url && n < VENV_MAX_ARGS - 4; i++) {
		argv[n++] = (char *)"--extra-index-url";
		argv[n++] = b->extra_index_url[i];
	}
	for (i = 0; i < b->n_find_links && n < VENV_MAX_ARGS - 4; i++) {
		argv[n++] = (char *)"--find-links";
		argv[n++] = b->find_links[i];
	}
	argv[n++] = (char *)"--";
	for (i = 0; i < b->n_requirements && n < VENV_MAX_ARGS - 1; i++)
		argv[n++] = b->requirements[i];
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
	char path[4096], text[64];
	int dfd, fd, n, rv = -1;

	snprintf(path, sizeof(path), "%s/.home", vc->vc_dir);
	rm_rf(path);
	snprintf(path, sizeof(path), "%s/.tmp", vc->vc_dir);
	rm_rf(path);
	venv_bytes = 0;
	if (nftw(vc->vc_dir, venv_seal_one, 32, FTW_PHYS | FTW_DEPTH) == -1)
		return -1;
	/*
	 * The build owned this directory: whatever it left under the
	 * marker's names goes, and the marker is created, never followed.
	 */
	if ((dfd = open(vc->vc_dir,
	         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) == -1)
		return -1;
	fchmod(dfd, 0755);
	if ((fd = openat(dfd, "complete.tmp",
	         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444)) ==
	    -1)
		goto out;
	n = snprintf(
	    text, sizeof(text), "size=%llu\n", (unsigned long long)venv_bytes);
	if (write(fd, text, (size_t)n) != n || fsync(fd) == -1) {
		close(fd);
		goto out;
	}
	close(fd);
	if (renameat(dfd, "complete.tmp", dfd, "complete") == -1)
		goto out;
	rv = fchmod(dfd, 0555);
out:
	close(dfd);
	return rv;
}

/* Remove what a build may have left under the marker's names. */
static void
venv_unmark(const struct venv_conf *vc)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/complete", vc->vc_dir);
	rm_rf(path);
	snprintf(path, sizeof(path), "%s/complete.tmp", vc->vc_dir);
	rm_rf(path);
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

/*
 * The readable list, for a find-links path (a directory or an HTML file),
 * relative ones made absolute here as pip would; a missing one is left to
 * pip to report.
 */
static int
venv_net_readable(struct venv_net *vn, const char *path)
{
	char *abs;

	if ((abs = realpath(path, NULL)) == NULL) {
		fprintf(stderr, "WARNING: --find-links %s: %s\n", path,
		    strerror(errno));
		return 0;
	}
	if (vn->vn_n_readable == SANDBOX_READABLE_MAX) {
		fprintf(stderr, "ERROR: too many --find-links paths\n");
		free(abs);
		return -1;
	}
	vn->vn_readable[vn->vn_n_readable++] = abs;
	return 0;
}

/*
 * Split an http(s) URL's authority into host and port (the scheme's when
 * none is given); -1 if the URL is not one.
 */
static int
venv_url_host(
    const char *url, char *host, size_t hostsz, char *port, size_t portsz)
{
	const char *a, *end, *at, *h, *he, *p;
	int https;

	if (strncmp(url, "http://", 7) == 0)
		https = 0;
	else if (strncmp(url, "https://", 8) == 0)
		https = 1;
	else
		return -1;
	a = url + (https ? 8 : 7);
	end = a + strcspn(a, "/?#");
	for (at = end; at > a && at[-1] != '@'; at--)
		;
	h = at; /* past any user:password@ */
	if (*h == '[') {
		if ((he = memchr(h, ']', (size_t)(end - h))) == NULL)
			return -1;
		h++;
		p = he + 1;
	} else {
		he = memchr(h, ':', (size_t)(end - h));
		if (he == NULL)
			he = end;
		p = he;
	}
	if (he == h || (size_t)(he - h) >= hostsz)
		return -1;
	memcpy(host, h, (size_t)(he - h));
	host[he - h] = '\0';
	if (p < end && *p == ':' && end - p > 1 &&
	    (size_t)(end - p - 1) < portsz) {
		memcpy(port, p + 1, (size_t)(end - p - 1));
		port[end - p - 1] = '\0';
	} else if (p == end)
		snprintf(port, portsz, "%s", https ? "443" : "80");
	else
		return -1;
	return 0;
}

/*
 * Where pip finds host:port inside the build's namespace: the address
 * itself when the URL gives one (the forwarder gives it to lo), else
 * 127.0.0.N, which
 * /etc/hosts gives the name. A name keeps one address for all its ports.
 */
static int
venv_net_inside(struct venv_net *vn, const char *host, uint16_t port,
    struct sandbox_forward *f)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)&f->sf_inside;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&f->sf_inside;
	char addr[INET_ADDRSTRLEN];
	size_t i, len;

	memset(&f->sf_inside, 0, sizeof(f->sf_inside));
	if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		f->sf_insidelen = sizeof(*sin6);
		return 0;
	}
	sin->sin_family = AF_INET;
	sin->sin_port = htons(port);
	f->sf_insidelen = sizeof(*sin);
	if (inet_pton(AF_INET, host, &sin->sin_addr) == 1)
		return 0;
	/* A name: the address it was given, or the next one. */
	for (i = 0; i < vn->vn_n_names; i++)
		if (strcasecmp(vn->vn_names[i], host) == 0)
			break;
	if (i == SANDBOX_FORWARD_MAX || strlen(host) >= sizeof(vn->vn_names[0]))
		return -1;
	sin->sin_addr.s_addr = htonl(VENV_NAME_NET + (uint32_t)i);
	if (i < vn->vn_n_names)
		return 0;
	snprintf(vn->vn_names[vn->vn_n_names++], sizeof(vn->vn_names[0]), "%s",
	    host);
	len = strlen(vn->vn_hosts);
	snprintf(vn->vn_hosts + len, sizeof(vn->vn_hosts) - len, "%s\t%s\n",
	    inet_ntop(AF_INET, &sin->sin_addr, addr, sizeof(addr)), host);
	return 0;
}

/*
 * One index or find-links location: a forward for an http(s) URL, with
 * the host resolved here on the host's network; a readable directory for
 * a path. Returns -1 only when the build cannot go on.
 */
static int
venv_net_add(struct venv_net *vn, const char *url)
{
	struct addrinfo hints, *res, *ai;
	struct sandbox_forward *f;
	char host[256], port[16], name[sizeof(f->sf_name)];
	unsigned long pnum;
	size_t i;
	int rc;

	if (strncmp(url, "file://localhost/", 17) == 0)
		return venv_net_readable(vn, url + 16);
	if (strncmp(url, "file://", 7) == 0)
		return venv_net_readable(vn, url + 7);
	if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0)
		return venv_net_readable(vn, url);
	if (venv_url_host(url, host, sizeof(host), port, sizeof(port)) == -1) {
		fprintf(stderr, "ERROR: cannot use the index URL %s\n", url);
		return -1;
	}
	pnum = strtoul(port, NULL, 10);
	if (port[strspn(port, "0123456789")] != '\0' || pnum == 0 ||
	    pnum > 65535) {
		fprintf(stderr, "ERROR: bad port in the index URL %s\n", url);
		return -1;
	}
	snprintf(name, sizeof(name), "%.200s:%s", host, port);
	for (i = 0; i < vn->vn_n_fwd; i++)
		if (strcasecmp(vn->vn_fwd[i].sf_name, name) == 0)
			return 0;
	if (vn->vn_n_fwd == SANDBOX_FORWARD_MAX) {
		fprintf(stderr, "ERROR: too many index addresses\n");
		return -1;
	}
	f = &vn->vn_fwd[vn->vn_n_fwd];
	memset(f, 0, sizeof(*f));
	snprintf(f->sf_name, sizeof(f->sf_name), "%s", name);
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_ADDRCONFIG;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		/* pip says so too, as it would for any unreachable index. */
		fprintf(stderr,
		    "WARNING: cannot resolve the index host %s: %s\n", host,
		    gai_strerror(rc));
		return 0;
	}
	/* The forwarder tries them in getaddrinfo's order. */
	for (ai = res; ai != NULL && f->sf_nto < SANDBOX_FORWARD_ADDRS;
	     ai = ai->ai_next) {
		memcpy(&f->sf_to[f->sf_nto], ai->ai_addr, ai->ai_addrlen);
		f->sf_tolen[f->sf_nto++] = ai->ai_addrlen;
	}
	freeaddrinfo(res);
	if (venv_net_inside(vn, host, (uint16_t)pnum, f) == -1) {
		fprintf(stderr, "ERROR: the build sandbox cannot reach %s\n",
		    f->sf_name);
		return -1;
	}
	vn->vn_n_fwd++;
	return 0;
}

/* What venv_net_readable allocated. */
static void
venv_net_free(struct venv_net *vn)
{
	size_t i;

	for (i = 0; i < vn->vn_n_readable; i++)
		free((char *)vn->vn_readable[i]);
	vn->vn_n_readable = 0;
}

/* Every location pip is given, and the compilers' trees. */
static int
venv_net_init(const struct venv_conf *vc, struct venv_net *vn)
{
	size_t i, j;

	const Remotemedia__Worker__V1__Build *b = vc->vc_build;

	memset(vn, 0, sizeof(*vn));
	for (i = 0;
	     i < sizeof(venv_build_readable) / sizeof(venv_build_readable[0]);
	     i++)
		if (access(venv_build_readable[i], F_OK) == 0 &&
		    venv_net_readable(vn, venv_build_readable[i]) == -1)
			return -1;
	if (b->index_url[0] != '\0' && venv_net_add(vn, b->index_url) == -1)
		return -1;
	for (j = 0; j < b->n_extra_index_url; j++)
		if (venv_net_add(vn, b->extra_index_url[j]) == -1)
			return -1;
	for (j = 0; j < b->n_find_links; j++)
		if (venv_net_add(vn, b->find_links[j]) == -1)
			return -1;
	return 0;
}

/*
 * Run venv and pip in the build's sandbox: a child becomes the sandbox's
 * W0 and ends as its W2 ends, and W2 runs the two commands. Returns the
 * child's wait status.
 */
static int
venv_sandboxed(const struct venv_conf *vc, char *const *venv, char *const *pip)
{
	struct sandbox_conf sc;
	struct venv_net vn;
	pid_t pid;
	int st;

	if (venv_net_init(vc, &vn) == -1) {
		venv_net_free(&vn);
		return 1 << 8;
	}
	fflush(NULL);
	if ((pid = fork()) == -1)
		fatal("fork");
	if (pid == 0) {
		/* fork cleared it: the build dies with the builder. */
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) == -1 || getppid() == 1)
			_exit(1);
		memset(&sc, 0, sizeof(sc));
		sc.sc_session_id = "build";
		sc.sc_session_dir = vc->vc_dir;
		sc.sc_enabled = 1;
		sc.sc_uid = vc->vc_uid;
		sc.sc_gid = vc->vc_uid;
		sc.sc_network = SANDBOX_NET_OFF;
		sc.sc_disk_bytes = VENV_FSIZE;
		sc.sc_status_fd = -1;
		sc.sc_build = 1;
		sc.sc_hosts = vn.vn_hosts;
		sc.sc_forward = vn.vn_fwd;
		sc.sc_n_forward = vn.vn_n_fwd;
		sc.sc_readable = vn.vn_readable;
		sc.sc_n_readable = vn.vn_n_readable;
		if (sandbox_prepare(&sc) == -1 || sandbox_enter(&sc) == -1) {
			fprintf(stderr, "ERROR: the build sandbox: %s\n",
			    sandbox_error());
			_exit(1);
		}
		if (venv_status("python3 -m venv", venv_run(vc, venv)) == -1 ||
		    venv_status("pip", venv_run(vc, pip)) == -1)
			_exit(1);
		_exit(0);
	}
	while (waitpid(pid, &st, 0) == -1)
		if (errno != EINTR)
			fatal("waitpid");
	venv_net_free(&vn);
	return st;
}

/* Create the venv, run pip in it, and seal it; 0 only if it is complete. */
static int
venv_build(const struct venv_conf *vc)
{
	char *venv[8], *pip[VENV_MAX_ARGS], python[4200], target[4096];
	int n = 0, st;

	snprintf(target, sizeof(target), "%s/venv", vc->vc_dir);
	snprintf(python, sizeof(python), "%s/bin/python", target);
	venv[n++] = (char *)VENV_PYTHON;
	venv[n++] = (char *)"-m";
	venv[n++] = (char *)"venv";
	venv[n++] = (char *)"--without-pip";
	if (vc->vc_build->system_site_packages)
		venv[n++] = (char *)"--system-site-packages";
	venv[n++] = target;
	venv[n] = NULL;
	printf("Creating environment\n");
	fflush(stdout);
	venv_pip_argv(vc, pip, python);
	if (vc->vc_sandbox) {
		/* Its W0 reported whatever failed, W2's commands included. */
		st = venv_sandboxed(vc, venv, pip);
		venv_unmark(vc);
		if (st != 0)
			return -1;
	} else if (venv_status("python3 -m venv", venv_run(vc, venv)) == -1 ||
	    venv_status("pip", venv_run(vc, pip)) == -1)
		return -1;
	if (venv_seal(vc) == -1) {
		fprintf(stderr, "ERROR: cannot seal the environment: %s\n",
		    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * The front died (PR_SET_PDEATHSIG): take the build's whole process group
 * along. pip and the venv die with the builder by their own death signal,
 * but what pip starts (itself again, under the venv's python) does not,
 * and went on writing into an entry that the next server builds afresh.
 */
static void
venv_orphaned(int sig)
{
	(void)sig;
	kill(0, SIGKILL);
	_exit(1);
}

/* The builder's main: venv, pip, seal. Exit 0 only with a complete entry. */
int
worker_venv_main(const char *dir, int level)
{
	struct venv_conf vc;
	int rv;

	log_init("builder", level);
	signal(SIGTERM, venv_orphaned);
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	venv_read_job(&vc, dir);
	/* Into the build's cgroup before anything else runs. */
	if (vc.vc_cgroup != NULL && cg_join(vc.vc_cgroup, 0) == -1)
		fatal("cannot join the build's cgroup");
	umask(022);
	venv_prepare(&vc);
	rv = venv_build(&vc);
	remotemedia__worker__v1__build__free_unpacked(
	    (Remotemedia__Worker__V1__Build *)vc.vc_build, NULL);
	free((char *)vc.vc_cgroup);
	return rv == 0 ? 0 : 1;
}
