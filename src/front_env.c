/*
 * The environment cache (architecture section 4). Entries are
 * content-addressed: the key hashes the Python version, the index
 * configuration and the canonical requirements. Each entry is built once,
 * at its final path, by a builder process (remotemedia-worker --build-env);
 * sessions that want it meanwhile wait on it (single flight) and see pip's
 * progress. Ready entries are reference-counted and evicted least recently
 * used first once the cache outgrows its size bound; they survive restarts.
 */
#include <sys/stat.h>
#include <sys/wait.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bsd/string.h>
#include <openssl/evp.h>

#include "front.h"
#include "log.h"
#include "req.h"
#include "util.h"

#include "remotemedia.pb-c.h"
#include "worker.pb-c.h"

#ifndef RM_PYTHON_VERSION
#define RM_PYTHON_VERSION "3.11"
#endif
#define ENV_FAIL_TTL_MS (30 * 1000)
/*
 * A session waiting on a build hears from it at least this often: pip can
 * be silent for minutes (a large download, a build without output), and a
 * client gives up on an open that says nothing for its timeout.
 */
#define ENV_BEAT_MS 2000

/* One entry of the environment cache, content-addressed by env_key. */
struct env {
	RB_ENTRY(env) env_entry;
	TAILQ_ENTRY(env) env_lru; /* ready entries, least recently used first */
	TAILQ_ENTRY(env) env_queue; /* queued builds */
	char env_key[65];
	char *env_dir;
	struct req_list env_reqs; /* canonical */
	uint8_t *env_build; /* the packed Build: the key's bytes, the job's */
	size_t env_build_len;
	enum env_state env_state;
	int env_refs; /* sessions using or waiting for it */
	int env_spare_refs; /* of which spares (front_pool.c): they give way */
	int env_busy; /* being notified: not to be evicted */
	int env_orphan; /* cancelled: out of the tree, being reaped */
	int env_damaged; /* ready, but no longer whole on disk */
	struct sessionlist env_waiters;
	pid_t env_pid;
	struct bufferevent *env_out; /* the builder's stdout and stderr */
	int env_exited;
	int env_eof;
	int env_wstatus;
	struct event *env_timer; /* pip timeout */
	struct event *env_beat; /* keeps waiters hearing (ENV_BEAT_MS) */
	uint64_t env_said_at; /* the last Progress to the waiters */
	uint64_t env_since; /* queued, then building, from then */
	char env_tail[2048]; /* the last lines of pip's output */
	char env_package[128]; /* the package pip is working on */
	int env_stage;
	char *env_error;
	char *env_builder_error; /* its own first error, not pip's */
	uint64_t env_failed_at;
	uint64_t env_size;
	uint64_t env_used_at;
	uint64_t env_started_at; /* the build's start, now_ms() */
	char *env_cgroup; /* the build's cgroup */
};

RB_HEAD(envtree, env);
static struct envtree envs = RB_INITIALIZER(&envs);
static TAILQ_HEAD(, env) env_lru = TAILQ_HEAD_INITIALIZER(env_lru);
static TAILQ_HEAD(, env) env_queue = TAILQ_HEAD_INITIALIZER(env_queue);
/* Cancelled builds, out of the tree until their builder is reaped. */
static TAILQ_HEAD(, env) env_orphans = TAILQ_HEAD_INITIALIZER(env_orphans);
static int env_building;
static int env_count;
static uint64_t env_total;

static int
env_cmp(struct env *a, struct env *b)
{
	return strcmp(a->env_key, b->env_key);
}

RB_GENERATE_STATIC(envtree, env, env_entry, env_cmp)

static void env_start_queued(void);
static int env_drop(struct env *);
static int env_read_marker(const char *, uint64_t *);
static void env_beat_cb(evutil_socket_t, short, void *);

/*
 * What pip would install from, as a packed Build: the server's pip
 * options and the canonical requirements. Everything that decides a
 * build is in it, and its hash is the cache key (env_key).
 */
static uint8_t *
env_pack_build(const struct req_list *reqs, size_t *len)
{
	Remotemedia__Worker__V1__Build b = REMOTEMEDIA__WORKER__V1__BUILD__INIT;
	uint8_t *out;

	b.python_version = (char *)RM_PYTHON_VERSION;
	b.index_url = front_conf.fc_pip_index_url != NULL
	    ? front_conf.fc_pip_index_url
	    : (char *)"";
	b.n_extra_index_url = (size_t)front_conf.fc_n_pip_extra_index;
	b.extra_index_url = front_conf.fc_pip_extra_index;
	b.n_find_links = (size_t)front_conf.fc_n_pip_find_links;
	b.find_links = front_conf.fc_pip_find_links;
	b.system_site_packages = front_conf.fc_pip_system_site;
	b.allow_source = front_conf.fc_pip_allow_source;
	b.n_requirements = reqs->rl_n;
	b.requirements = reqs->rl_v;
	*len = remotemedia__worker__v1__build__get_packed_size(&b);
	out = xmalloc(*len ? *len : 1);
	remotemedia__worker__v1__build__pack(&b, out);
	return out;
}

/* The cache key: the SHA-256 of the packed Build, in hex. */
static void
env_key(const uint8_t *build, size_t len, char *out)
{
	static const char tag[] = "remotemedia-env-v2";
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned int n, i;
	EVP_MD_CTX *md = EVP_MD_CTX_new();

	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	EVP_DigestUpdate(md, tag, sizeof(tag));
	EVP_DigestUpdate(md, build, len);
	EVP_DigestFinal_ex(md, dig, &n);
	EVP_MD_CTX_free(md);
	for (i = 0; i < n && i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", dig[i]);
}

static struct env *
env_new(const char *key, const struct req_list *reqs)
{
	struct env *e = xcalloc(1, sizeof(*e));
	char path[4096];

	strlcpy(e->env_key, key, sizeof(e->env_key));
	snprintf(path, sizeof(path), "%s/%s", front_conf.fc_env_cache_dir, key);
	e->env_dir = xstrdup(path);
	if (reqs != NULL)
		req_list_copy(&e->env_reqs, reqs);
	e->env_pid = -1;
	TAILQ_INIT(&e->env_waiters);
	RB_INSERT(envtree, &envs, e);
	env_count++;
	return e;
}

static void
env_free(struct env *e)
{
	if (e->env_orphan)
		TAILQ_REMOVE(&env_orphans, e, env_queue);
	else
		RB_REMOVE(envtree, &envs, e);
	if (e->env_state == ENV_READY) {
		TAILQ_REMOVE(&env_lru, e, env_lru);
		env_total -= e->env_size;
	}
	if (e->env_state == ENV_QUEUED)
		TAILQ_REMOVE(&env_queue, e, env_queue);
	if (e->env_out != NULL)
		bufferevent_free(e->env_out);
	if (e->env_timer != NULL)
		event_free(e->env_timer);
	if (e->env_beat != NULL)
		event_free(e->env_beat);
	front_sandbox_cgroup_destroy(e->env_cgroup);
	free(e->env_dir);
	req_list_free(&e->env_reqs);
	free(e->env_build);
	free(e->env_error);
	free(e->env_builder_error);
	free(e);
	env_count--;
}

/* Remove an entry's tree: read-only dirs need their write bits back. */
static int
env_remove_tree(const char *dir)
{
	char trash[4200];

	snprintf(
	    trash, sizeof(trash), "%s/.trash", front_conf.fc_env_cache_dir);
	if (front_trash(dir, trash) == 0)
		return 0;
	log_warnx("cannot remove %s", dir);
	return -1;
}

/* Evict unused ready entries, oldest first, until under the bound. */
static void
env_evict(void)
{
	struct env *e, *tmp;

	TAILQ_FOREACH_SAFE (e, &env_lru, env_lru, tmp) {
		if (env_total <= front_conf.fc_env_cache_size)
			break;
		/* A damaged entry failed to go once: not again each time. */
		if (e->env_refs > e->env_spare_refs || e->env_busy ||
		    e->env_damaged)
			continue;
		log_info("environment %.12s: evicted (%llu bytes; cache %llu "
		         "of %llu)",
		    e->env_key, (unsigned long long)e->env_size,
		    (unsigned long long)env_total,
		    (unsigned long long)front_conf.fc_env_cache_size);
		if (env_drop(e) == 0)
			front_metrics_env_evicted();
	}
}

/*
 * Remove a ready entry that only spares hold, if any: they give way. An
 * entry that cannot be removed stays (-1), marked damaged: its directory
 * would be in the way of a new build, and it must not be used either.
 */
static int
env_drop(struct env *e)
{
	if (e->env_spare_refs > 0) {
		front_pool_forget_env(e);
		e->env_refs -= e->env_spare_refs;
		e->env_spare_refs = 0;
	}
	if (env_remove_tree(e->env_dir) == -1) {
		e->env_damaged = 1;
		return -1;
	}
	env_free(e);
	return 0;
}

/* Whether path is there, a directory (want_dir) or a regular file. */
static int
env_has(const char *path, int want_dir)
{
	struct stat sb;

	if (stat(path, &sb) == -1)
		return 0;
	return want_dir ? S_ISDIR(sb.st_mode) : S_ISREG(sb.st_mode);
}

/*
 * A ready entry whose completion marker, venv or site-packages is gone
 * (someone removed or truncated them on disk) is not to be used: dropped
 * now if nobody uses it, so that it is built again (-1: e is freed); else
 * kept, refused to new sessions, and dropped once its sessions end (0).
 * 1: e is fine. What site-packages holds is not checked, file by file.
 */
static int
env_check_disk(struct env *e)
{
	char cfg[4200], *site;
	const char *what = NULL;
	uint64_t size;

	if (e->env_damaged)
		return 0;
	if (e->env_state != ENV_READY)
		return 1;
	snprintf(cfg, sizeof(cfg), "%s/venv/pyvenv.cfg", e->env_dir);
	site = front_env_site_packages(e);
	if (env_read_marker(e->env_dir, &size) == -1)
		what = "its completion marker is gone or unreadable";
	else if (!env_has(cfg, 0))
		what = "its venv is gone";
	else if (!env_has(site, 1))
		what = "its site-packages is gone";
	free(site);
	if (what == NULL)
		return 1;
	log_warnx("environment %.12s: %s (%s): it is built again%s", e->env_key,
	    what, e->env_dir,
	    e->env_refs > e->env_spare_refs ? " once its sessions end" : "");
	if (e->env_refs > e->env_spare_refs || e->env_busy) {
		e->env_damaged = 1;
		return 0;
	}
	return env_drop(e) == 0 ? -1 : 0;
}

/* Read the size from a complete marker; -1 if the entry is not complete. */
static int
env_read_marker(const char *dir, uint64_t *size)
{
	char path[4200], buf[64];
	unsigned long long v = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/complete", dir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		log_debug("%s: %s: %s", __func__, path, strerror(errno));
		return -1;
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if (sscanf(buf, "size=%llu", &v) != 1)
		return -1;
	*size = v;
	return 0;
}

/*
 * Record the entry's use on disk, as its directory's modification time:
 * a restarted server orders its least recently used entries by it.
 */
static void
env_touch(const struct env *e)
{
	if (utimensat(AT_FDCWD, e->env_dir, NULL, 0) == -1 && errno != ENOENT)
		log_debug("utimensat %s: %s", e->env_dir, strerror(errno));
}

static void
env_mark_ready(struct env *e)
{
	e->env_state = ENV_READY;
	e->env_used_at = front_env_clock();
	TAILQ_INSERT_TAIL(&env_lru, e, env_lru);
	env_total += e->env_size;
}

/*
 * The builder uid and the sessions must reach the cache: give every
 * directory above it that we own the search bit (not the read bit).
 */
static void
env_make_traversable(void)
{
	char path[4096], *slash;
	struct stat sb;

	strlcpy(path, front_conf.fc_env_cache_dir, sizeof(path));
	for (;;) { /* the cache dir itself, then every one above it */
		if (stat(path, &sb) == 0 && sb.st_uid == geteuid() &&
		    (sb.st_mode & 0011) != 0011) {
			if (chmod(path, (sb.st_mode & 07777) | 0011) == -1)
				log_warn("chmod %s", path);
			else
				log_info("%s: made traversable (o+x) for the "
				         "builder and the sessions",
				    path);
		}
		if ((slash = strrchr(path, '/')) == NULL || slash == path)
			break;
		*slash = '\0';
	}
}

/* At start: load complete entries, remove anything half-built. */
/* An entry found at start, and when it was last used. */
struct env_found {
	char ef_key[65];
	uint64_t ef_size;
	struct timespec ef_used;
};

static int
env_found_cmp(const void *a, const void *b)
{
	const struct timespec *x = &((const struct env_found *)a)->ef_used;
	const struct timespec *y = &((const struct env_found *)b)->ef_used;

	if (x->tv_sec != y->tv_sec)
		return x->tv_sec < y->tv_sec ? -1 : 1;
	return x->tv_nsec < y->tv_nsec ? -1 : x->tv_nsec > y->tv_nsec;
}

void
front_env_init(void)
{
	struct dirent *de;
	struct env *e;
	struct env_found *found = NULL;
	struct stat sb, state;
	char path[4200];
	uint64_t size;
	size_t n = 0, cap = 0, i;
	DIR *d;

	if (mkdir_p(front_conf.fc_env_cache_dir, 0755) == -1)
		fatal("--env-cache-dir %s", front_conf.fc_env_cache_dir);
	/* Its entries are all it may hold: it would take the state's
	 * sessions/ for a half-built one, and remove it. */
	if (stat(front_conf.fc_env_cache_dir, &sb) == 0 &&
	    stat(front_conf.fc_state_dir, &state) == 0 &&
	    sb.st_dev == state.st_dev && sb.st_ino == state.st_ino)
		fatalx("--env-cache-dir %s is the state directory: give the "
		       "cache one of its own (by default STATE/envs)",
		    front_conf.fc_env_cache_dir);
	lock_dir(front_conf.fc_env_cache_dir, "--env-cache-dir");
	env_make_traversable();
	snprintf(path, sizeof(path), "%s/.trash", front_conf.fc_env_cache_dir);
	front_trash_empty(path);
	if ((d = opendir(front_conf.fc_env_cache_dir)) == NULL)
		fatal("opendir %s", front_conf.fc_env_cache_dir);
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s",
		    front_conf.fc_env_cache_dir, de->d_name);
		if (strlen(de->d_name) != 64 ||
		    env_read_marker(path, &size) == -1) {
			log_info("environment cache: removing incomplete %s",
			    de->d_name);
			env_remove_tree(path);
			continue;
		}
		if (n == cap) {
			cap = cap ? 2 * cap : 64;
			found = xrealloc(found, cap * sizeof(*found));
		}
		memcpy(found[n].ef_key, de->d_name, sizeof(found[n].ef_key));
		found[n].ef_size = size;
		found[n].ef_used = stat(path, &sb) == 0 ? sb.st_mtim
		                                        : (struct timespec){0};
		n++;
	}
	closedir(d);
	/* Least recently used first, as env_touch recorded it. */
	if (n > 0) /* found is NULL when none was found */
		qsort(found, n, sizeof(*found), env_found_cmp);
	for (i = 0; i < n; i++) {
		e = env_new(found[i].ef_key, NULL);
		e->env_size = found[i].ef_size;
		env_mark_ready(e);
	}
	free(found);
	log_info("environment cache %s: %d entries, %llu bytes",
	    front_conf.fc_env_cache_dir, env_count,
	    (unsigned long long)env_total);
	env_evict();
}

/* Pick the package name out of "Collecting NAME>=1" and the like. */
static void
env_take_name(struct env *e, const char *p)
{
	size_t n = strcspn(p, " <>=!~[;(,\n");

	if (n >= sizeof(e->env_package))
		n = sizeof(e->env_package) - 1;
	memcpy(e->env_package, p, n);
	e->env_package[n] = '\0';
}

/* PEP 503: lowercase, '_' and '.' as '-' (wheel names spell '-' as '_'). */
static void
env_norm_name(char *s)
{
	for (; *s != '\0'; s++) {
		if (*s == '_' || *s == '.')
			*s = '-';
		else if (*s >= 'A' && *s <= 'Z')
			*s = (char)(*s - 'A' + 'a');
	}
}

/* Map one line of pip's output to a stage and a package. */
static void
env_parse_line(struct env *e, const char *line)
{
	const char *p = line + strspn(line, " ");
	const char *slash;

	if (strncmp(p, "Collecting ", 11) == 0) {
		e->env_stage =
		    REMOTEMEDIA__V1__PROGRESS__STAGE__STAGE_RESOLVING;
		env_take_name(e, p + 11);
	} else if (strncmp(p, "Downloading ", 12) == 0) {
		e->env_stage =
		    REMOTEMEDIA__V1__PROGRESS__STAGE__STAGE_DOWNLOADING;
		p += 12;
		if ((slash = strrchr(p, '/')) != NULL &&
		    (size_t)(slash - p) < strcspn(p, " "))
			p = slash + 1;
		env_take_name(e, p);
		e->env_package[strcspn(e->env_package, "-")] = '\0';
		env_norm_name(e->env_package);
	} else if (strncmp(p, "Installing collected packages: ", 31) == 0) {
		e->env_stage =
		    REMOTEMEDIA__V1__PROGRESS__STAGE__STAGE_INSTALLING;
		env_take_name(e, p + 31);
	} else if (strncmp(p, "Successfully installed", 22) == 0) {
		e->env_stage = REMOTEMEDIA__V1__PROGRESS__STAGE__STAGE_DONE;
		e->env_package[0] = '\0';
	} else if (e->env_stage == 0)
		e->env_stage =
		    REMOTEMEDIA__V1__PROGRESS__STAGE__STAGE_RESOLVING;
}

/* Keep the last lines of output for the error message. */
static void
env_keep_tail(struct env *e, const char *line)
{
	size_t have = strlen(e->env_tail), add = strlen(line) + 1;
	size_t room = sizeof(e->env_tail) - 1;

	if (add > room) {
		line += add - room;
		add = room;
	}
	if (have + add > room) {
		memmove(e->env_tail, e->env_tail + (have + add - room),
		    room - add + 1);
		have = strlen(e->env_tail);
	}
	snprintf(e->env_tail + have, sizeof(e->env_tail) - have, "%s\n", line);
}

/* Put "<index>" in place of line's [start, end), at least as long. */
static char *
env_redact(char *start, char *end)
{
	static const char tag[] = "<index>";

	if ((size_t)(end - start) < sizeof(tag) - 1)
		return end;
	memcpy(start, tag, sizeof(tag) - 1);
	memmove(start + sizeof(tag) - 1, end, strlen(end) + 1);
	return start + sizeof(tag) - 1;
}

/*
 * Hide where pip looks, in place: each URL's scheme, user and host
 * ("Downloading http://user@10.1.2.3:8080/p/x.whl" becomes "Downloading
 * <index>/p/x.whl"), and urllib3's "ConnectionPool(host='10.1.2.3',
 * port=8080)".
 */
static void
env_redact_urls(char *line)
{
	char *p, *start, *end;

	for (p = line; (p = strstr(p, "://")) != NULL;) {
		for (start = p; start > line &&
		     (isalnum((unsigned char)start[-1]) || start[-1] == '+' ||
		         start[-1] == '-' || start[-1] == '.');
		     start--)
			;
		for (end = p + 3; *end != '\0' && *end != '/' &&
		     !isspace((unsigned char)*end) && *end != ')' &&
		     *end != '\'';
		     end++)
			;
		p = start == p ? p + 3 : env_redact(start, end);
	}
	for (p = line; (p = strstr(p, "(host=")) != NULL;)
		p = (end = strchr(p, ')')) == NULL ? p + 6
		                                   : env_redact(p + 1, end);
}

/*
 * What a builder's error line says, for the client: its msg= and error=
 * values, unquoted ("mkdir /x: Read-only file system").
 */
static char *
env_builder_words(const char *line)
{
	const char *m = strstr(line, " msg=");
	char *out, *o;

	out = o = xstrdup(m != NULL ? m + 5 : line);
	for (m = out; *m != '\0'; m++) {
		if (strncmp(m, "\" error=", 8) == 0) {
			memcpy(o, ": ", 2);
			o += 2;
			m += 7;
		} else if (*m != '"' && *m != '\\')
			*o++ = *m;
	}
	*o = '\0';
	return out;
}

/* One line from the builder: progress for every waiting session. */
static void
env_line(struct env *e, char *line)
{
	struct session *ses, *tmp;
	size_t i;

	for (i = 0; line[i] != '\0'; i++)
		if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
			line[i] = ' ';
	/*
	 * The builder's own log lines (its sandbox's, at --log-level debug
	 * or on a warning) go to the front's log: they are the server's
	 * business, not pip's output for the client.
	 */
	if (strncmp(line, "ts=", 3) == 0 && strstr(line, " proc=") != NULL) {
		log_info("environment %.12s: builder: %s", e->env_key, line);
		if (e->env_builder_error == NULL &&
		    strstr(line, " level=error ") != NULL)
			e->env_builder_error = env_builder_words(line);
		return;
	}
	log_debug("environment %.12s: %s", e->env_key, line);
	/*
	 * Where pip looks is the server's configuration (an internal index's
	 * host, its user name): the operator's log has it, clients do not.
	 */
	if (strncmp(line, "Looking in indexes:", 19) == 0 ||
	    strncmp(line, "Looking in links:", 17) == 0)
		return;
	env_redact_urls(line);
	env_parse_line(e, line);
	env_keep_tail(e, line);
	TAILQ_FOREACH_SAFE (ses, &e->env_waiters, ses_env_entry, tmp)
		front_session_progress(ses, e->env_stage, e->env_package, line);
	e->env_said_at = front_env_clock();
}

/*
 * Arm e's heartbeat (env_beat_cb), unless it is armed. Not front_timer_add:
 * test_front_env links this file without front_session.c.
 */
static void
env_beat_arm(struct env *e)
{
	struct timeval tv = {ENV_BEAT_MS / 1000, (ENV_BEAT_MS % 1000) * 1000};

	if (e->env_beat == NULL &&
	    (e->env_beat = evtimer_new(front_base, env_beat_cb, e)) == NULL)
		fatal("evtimer_new");
	if (!evtimer_pending(e->env_beat, NULL))
		evtimer_add(e->env_beat, &tv);
}

/*
 * While sessions wait on a queued or running build, each ENV_BEAT_MS
 * without a line from pip sends them a Progress that says so: a client's
 * timeout bounds the silence, not the build (--pip-timeout does that).
 */
static void
env_beat_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct env *e = arg;
	struct session *ses, *tmp;
	uint64_t now = front_env_clock();
	char line[96];

	if ((e->env_state != ENV_QUEUED && e->env_state != ENV_BUILDING) ||
	    e->env_orphan || TAILQ_EMPTY(&e->env_waiters))
		return;
	if (now - e->env_said_at >= ENV_BEAT_MS) {
		snprintf(line, sizeof(line), "%s (%llu s)",
		    e->env_state == ENV_QUEUED
		        ? "waiting for a build slot (--env-builds)"
		        : "pip is still working",
		    (unsigned long long)((now - e->env_since) / 1000));
		TAILQ_FOREACH_SAFE (ses, &e->env_waiters, ses_env_entry, tmp)
			front_session_progress(ses,
			    e->env_stage
			        ? e->env_stage
			        : REMOTEMEDIA__V1__PROGRESS__STAGE__STAGE_RESOLVING,
			    e->env_package, line);
		e->env_said_at = now;
	}
	env_beat_arm(e);
}

static void
env_read_cb(struct bufferevent *bev, void *arg)
{
	struct env *e = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	char *line;
	size_t n;

	while ((line = evbuffer_readln(in, &n, EVBUFFER_EOL_CRLF)) != NULL) {
		if (n > 1000)
			line[1000] = '\0';
		env_line(e, line);
		free(line);
	}
	if (evbuffer_get_length(in) > 64 * 1024)
		evbuffer_drain(in, evbuffer_get_length(in)); /* no newline */
}

static void
env_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct env *e = arg;

	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		bufferevent_disable(bev, EV_READ);
		e->env_eof = 1;
	}
}

static void
env_timeout_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct env *e = arg;
	char msg[128];

	snprintf(msg, sizeof(msg),
	    "pip did not finish within %llu s "
	    "(--pip-timeout)",
	    (unsigned long long)(front_conf.fc_pip_timeout_ms / 1000));
	free(e->env_error);
	e->env_error = xstrdup(msg);
	if (e->env_pid > 0 && !e->env_exited)
		kill(-e->env_pid, SIGKILL);
}

/*
 * The builder's job on a pipe that becomes its stdin: the packed Build
 * (the bytes of its key), the builder uid, its cgroup and the sandbox. It
 * fits in the pipe (REQ_MAX_COUNT requirements of REQ_MAX_LEN bytes, and
 * the options, are far below the 64 KiB of a pipe), so it is written
 * whole before the builder starts. Returns the read end, or -1.
 */
static int
env_job_pipe(struct env *e)
{
	Remotemedia__Worker__V1__BuildJob job =
	    REMOTEMEDIA__WORKER__V1__BUILD_JOB__INIT;
	uint8_t *buf;
	size_t len;
	ssize_t w;
	int p[2];

	job.build.data = e->env_build;
	job.build.len = e->env_build_len;
	job.uid = front_conf.fc_builder_uid >= 0 ? front_conf.fc_builder_uid
	                                         : -1;
	job.cgroup = e->env_cgroup != NULL ? e->env_cgroup : (char *)"";
	job.sandbox = front_conf.fc_sandbox;
	len = remotemedia__worker__v1__build_job__get_packed_size(&job);
	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) == -1)
		return -1;
	buf = xmalloc(len ? len : 1);
	remotemedia__worker__v1__build_job__pack(&job, buf);
	w = write(p[1], buf, len);
	free(buf);
	close(p[1]);
	if (w != (ssize_t)len) {
		log_warnx(
		    "environment %.12s: the build job does not fit a pipe",
		    e->env_key);
		close(p[0]);
		return -1;
	}
	return p[0];
}

/* The requirements for a person to read: separated by spaces, cut to fit. */
static void
env_reqs_text(const struct env *e, char *out, size_t len)
{
	size_t i;

	if (len == 0)
		return;
	out[0] = '\0';
	for (i = 0; i < e->env_reqs.rl_n; i++) {
		if (i > 0)
			strlcat(out, " ", len);
		strlcat(out, e->env_reqs.rl_v[i], len);
	}
}

/* Start the builder in its own process group, its output on a pipe. */
static int
env_spawn(struct env *e)
{
	struct timeval tv;
	char reqs[2048];
	int p[2], fds[4];

	env_remove_tree(e->env_dir);
	e->env_cgroup = front_sandbox_build_cgroup(e->env_key);
	if ((fds[0] = env_job_pipe(e)) == -1)
		return -1;
	if (pipe2(p, O_CLOEXEC) == -1) {
		close(fds[0]);
		return -1;
	}
	fds[1] = fds[2] = p[1];
	fds[3] = -1;
	e->env_started_at = front_env_clock();
	free(e->env_builder_error);
	e->env_builder_error = NULL;
	e->env_pid = front_worker_exec(e->env_dir, NULL, fds, 4);
	close(fds[0]);
	close(p[1]);
	if (e->env_pid == -1) {
		close(p[0]);
		log_warnx("cannot start the environment builder");
		return -1;
	}
	evutil_make_socket_nonblocking(p[0]);
	e->env_out = bufferevent_socket_new(
	    front_base, p[0], BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(e->env_out, env_read_cb, NULL, env_event_cb, e);
	bufferevent_enable(e->env_out, EV_READ);
	e->env_timer = evtimer_new(front_base, env_timeout_cb, e);
	tv.tv_sec = (time_t)(front_conf.fc_pip_timeout_ms / 1000);
	tv.tv_usec = (suseconds_t)(front_conf.fc_pip_timeout_ms % 1000) * 1000;
	evtimer_add(e->env_timer, &tv);
	e->env_state = ENV_BUILDING;
	e->env_since = e->env_started_at;
	env_building++;
	env_reqs_text(e, reqs, sizeof(reqs));
	log_info("environment %.12s: building [%s] (builder %d)", e->env_key,
	    reqs, (int)e->env_pid);
	return 0;
}

/* Name the failing package from pip's output, or fall back to the list. */
static void
env_failed_package(struct env *e, char *out, size_t len)
{
	static const char *marks[] = {"No matching distribution found for ",
	    "ERROR: Wheel '", "satisfies the requirement ", "Failed to build "};
	const char *p;
	size_t i, n;

	for (i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
		if ((p = strstr(e->env_tail, marks[i])) == NULL)
			continue;
		p += strlen(marks[i]);
		n = strcspn(p, " '\n<>=!~[;(");
		snprintf(out, len, "%.*s", (int)n, p);
		return;
	}
	if (e->env_package[0] != '\0') {
		snprintf(out, len, "%s", e->env_package);
		return;
	}
	env_reqs_text(e, out, len);
}

/* The message a session gets when its environment could not be built. */
static char *
env_failure_message(struct env *e)
{
	char pkg[160], *msg;
	size_t len;

	env_failed_package(e, pkg, sizeof(pkg));
	len = strlen(pkg) + strlen(e->env_tail) + 256;
	msg = xmalloc(len);
	snprintf(msg, len, "Failed to install %s: %s%s", pkg,
	    e->env_error ? e->env_error : "pip failed",
	    e->env_tail[0] ? "; pip's output ends with:\n" : "");
	strlcat(msg, e->env_tail, len);
	return msg;
}

/* Hand the outcome of a build to every session waiting for it. */
static void
env_notify(struct env *e)
{
	struct session *ses;

	e->env_busy++; /* sessions may end here: keep e from eviction */
	while ((ses = TAILQ_FIRST(&e->env_waiters)) != NULL) {
		TAILQ_REMOVE(&e->env_waiters, ses, ses_env_entry);
		if (e->env_state == ENV_READY)
			front_session_env_ready(ses);
		else
			front_session_env_failed(ses, e->env_error);
	}
	e->env_busy--;
}

/* The builder is done: a complete entry, or a failure to remember. */
static void
env_build_done(struct env *e, int st)
{
	char *msg;
	int timed_out;

	env_building--;
	if (e->env_timer != NULL)
		evtimer_del(e->env_timer);
	if (e->env_out != NULL) {
		env_read_cb(e->env_out, e);
		bufferevent_free(e->env_out);
		e->env_out = NULL;
	}
	log_debug(
	    "%s: builder %d: wait status %#x", __func__, (int)e->env_pid, st);
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0 &&
	    env_read_marker(e->env_dir, &e->env_size) == 0) {
		log_info("environment %.12s: ready, %llu bytes", e->env_key,
		    (unsigned long long)e->env_size);
		front_metrics_env_built(
		    front_env_clock() - e->env_started_at, 1);
		env_mark_ready(e);
		env_notify(e);
		env_evict();
		return;
	}
	timed_out = e->env_error != NULL;
	if (e->env_error == NULL && e->env_builder_error != NULL) {
		/* The server failed, not pip: say how, and do not hold it
		 * against the requirements. */
		char buf[512];

		snprintf(buf, sizeof(buf), "the environment builder failed: %s",
		    e->env_builder_error);
		e->env_error = xstrdup(buf);
	}
	if (WIFSIGNALED(st) && e->env_error == NULL) {
		char buf[96];

		snprintf(buf, sizeof(buf),
		    "the environment builder was "
		    "killed by signal %d",
		    WTERMSIG(st));
		e->env_error = xstrdup(buf);
	}
	front_metrics_env_built(front_env_clock() - e->env_started_at, 0);
	msg = env_failure_message(e);
	free(e->env_error);
	e->env_error = msg;
	log_info("environment %.12s: %s", e->env_key, msg);
	env_remove_tree(e->env_dir);
	e->env_state = ENV_FAILED;
	e->env_failed_at = front_env_clock();
	env_notify(e);
	if ((WIFSIGNALED(st) && !timed_out) ||
	    (!timed_out && e->env_builder_error != NULL))
		e->env_failed_at = 0; /* this says nothing of the reqs */
}

/* The entry whose builder has this pid, in the tree or cancelled. */
static struct env *
env_by_builder(pid_t pid)
{
	struct env *e;

	RB_FOREACH (e, envtree, &envs)
		if (e->env_pid == pid && e->env_state == ENV_BUILDING)
			return e;
	TAILQ_FOREACH (e, &env_orphans, env_queue)
		if (e->env_pid == pid)
			return e;
	return NULL;
}

int
front_env_is_builder(pid_t pid)
{
	return env_by_builder(pid) != NULL;
}

/* SIGCHLD for a builder. A cancelled build is removed quietly. */
void
front_env_reap(pid_t pid, int st)
{
	struct env *e;

	if ((e = env_by_builder(pid)) == NULL)
		return;
	e->env_exited = 1;
	kill(-pid, SIGKILL); /* anything the builder left in its group */
	front_sandbox_cgroup_destroy(e->env_cgroup);
	e->env_cgroup = NULL;
	if (e->env_refs == 0) {
		env_building--;
		log_info("environment %.12s: build cancelled", e->env_key);
		/* A newer build of the same key owns the path now. */
		if (RB_FIND(envtree, &envs, e) == NULL)
			env_remove_tree(e->env_dir);
		env_free(e);
	} else
		env_build_done(e, st);
	env_start_queued();
}

/* Start queued builds while there are free slots. */
static void
env_start_queued(void)
{
	struct env *e;

	while (env_building < front_conf.fc_env_builds &&
	    (e = TAILQ_FIRST(&env_queue)) != NULL) {
		TAILQ_REMOVE(&env_queue, e, env_queue);
		if (env_spawn(e) == -1) {
			e->env_state = ENV_FAILED;
			e->env_failed_at = front_env_clock();
			e->env_error = xstrdup("Failed to install the "
			                       "requirements: cannot start the "
			                       "environment builder");
			env_notify(e);
		}
	}
}

/* Forget failures that nobody refers to once they are old enough. */
static void
env_prune_failed(void)
{
	struct env *e, *tmp;
	uint64_t now = front_env_clock();

	RB_FOREACH_SAFE (e, envtree, &envs, tmp)
		if (e->env_state == ENV_FAILED && e->env_refs == 0 &&
		    now - e->env_failed_at >= ENV_FAIL_TTL_MS)
			env_free(e);
}

/* Find or create the entry for these requirements. */
static struct env *
env_lookup(const struct req_list *reqs)
{
	struct env key, *e;
	uint8_t *build;
	size_t len;
	int created = 0;

	/* Failures old enough to forget go first: such a key builds anew. */
	env_prune_failed();
	build = env_pack_build(reqs, &len);
	env_key(build, len, key.env_key);
	if ((e = RB_FIND(envtree, &envs, &key)) != NULL &&
	    env_check_disk(e) == -1)
		e = NULL; /* dropped: built anew */
	if (e == NULL) {
		e = env_new(key.env_key, reqs);
		e->env_state = ENV_QUEUED;
		e->env_since = e->env_said_at = front_env_clock();
		TAILQ_INSERT_TAIL(&env_queue, e, env_queue);
		created = 1;
	} else if (e->env_build == NULL) {
		/* loaded from disk at start */
		req_list_free(&e->env_reqs);
		req_list_copy(&e->env_reqs, reqs);
	}
	if (e->env_build == NULL) {
		e->env_build = build;
		e->env_build_len = len;
	} else
		free(build);
	if (created)
		env_start_queued();
	return e;
}

/*
 * Attach a session to the environment for its canonical requirements.
 * Returns 1 if it is ready now, 0 if the session must wait (progress and
 * the outcome come through front_session_*), -1 if it failed recently; the
 * message is then in *err.
 */
int
front_env_attach(
    struct session *ses, const struct req_list *reqs, const char **err)
{
	struct env *e = env_lookup(reqs);

	if (e->env_state == ENV_FAILED) {
		*err = e->env_error;
		return -1;
	}
	if (e->env_damaged) {
		*err = "Failed to install the requirements: the environment "
		       "was damaged on disk while sessions use it; it is built "
		       "again once they end";
		return -1;
	}
	e->env_refs++;
	ses->ses_env = e;
	front_metrics_env(e->env_state == ENV_READY);
	if (e->env_state == ENV_READY) {
		e->env_used_at = front_env_clock();
		TAILQ_REMOVE(&env_lru, e, env_lru);
		TAILQ_INSERT_TAIL(&env_lru, e, env_lru);
		env_touch(e);
		return 1;
	}
	TAILQ_INSERT_TAIL(&e->env_waiters, ses, ses_env_entry);
	env_beat_arm(e);
	return 0;
}

/* A session is done with its environment; nobody waiting cancels a build. */
void
front_env_release(struct session *ses)
{
	struct env *e = ses->ses_env;
	struct session *w;

	if (e == NULL)
		return;
	ses->ses_env = NULL;
	TAILQ_FOREACH (w, &e->env_waiters, ses_env_entry)
		if (w == ses) {
			TAILQ_REMOVE(&e->env_waiters, ses, ses_env_entry);
			break;
		}
	e->env_used_at = front_env_clock();
	if (ses->ses_state == SES_SPARE)
		e->env_spare_refs--;
	/* Spares (only ever of a ready entry) do not keep it from eviction. */
	if (--e->env_refs > e->env_spare_refs)
		return;
	if (e->env_state == ENV_BUILDING && !e->env_exited) {
		log_info("environment %.12s: nobody waits any more; cancelling",
		    e->env_key);
		kill(-e->env_pid, SIGKILL);
		/* A new request builds afresh instead of joining this one. */
		RB_REMOVE(envtree, &envs, e);
		e->env_orphan = 1;
		TAILQ_INSERT_TAIL(&env_orphans, e, env_queue);
	} else if (e->env_state == ENV_QUEUED)
		env_free(e);
	else if (e->env_state == ENV_READY && e->env_damaged && !e->env_busy)
		env_drop(e);
	else if (e->env_state == ENV_READY)
		env_evict();
}

/*
 * A spare session (front_pool.c) holds a ready environment, as a session
 * does, but gives way when the cache must evict it (env_evict).
 */
void
front_env_hold(struct session *ses, struct env *e)
{
	ses->ses_env = e;
	e->env_refs++;
	e->env_spare_refs++;
}

/* The site-packages directory a session puts first on sys.path. */
char *
front_env_site_packages(struct env *e)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/venv/lib/python%s/site-packages",
	    e->env_dir, RM_PYTHON_VERSION);
	return xstrdup(path);
}

/* Shutdown: stop every builder; their half-built trees go at next start. */
void
front_env_kill_all(void)
{
	struct env *e;

	RB_FOREACH (e, envtree, &envs)
		if (e->env_state == ENV_BUILDING && !e->env_exited)
			kill(-e->env_pid, SIGKILL);
}

/* The Python version sessions run (rmctl info). */
const char *
front_python_version(void)
{
	return RM_PYTHON_VERSION;
}

uint64_t (*front_env_clock)(void) = now_ms;

const char *
front_env_dir(const struct env *e)
{
	return e->env_dir;
}

const struct req_list *
front_env_reqs(const struct env *e)
{
	return &e->env_reqs;
}

/* What the unit tests look at in an entry. */
struct env_info
front_env_info(const struct env *e)
{
	struct env_info ei = {
	    .ei_key = e->env_key,
	    .ei_state = e->env_state,
	    .ei_refs = e->env_refs,
	    .ei_size = e->env_size,
	    .ei_builder = e->env_pid,
	    .ei_output_done = e->env_eof,
	};

	return ei;
}
