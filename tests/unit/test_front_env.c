/*
 * Unit tests for the environment cache (front_env.c): single flight,
 * reference counts, LRU eviction, the memory of failed builds, and the
 * cache key.
 *
 * front_env.c is linked with front_metrics.c, log.c and util.c; what it
 * calls in front_session.c, front_sandbox.c, front_pool.c and
 * front_trash.c is the fake front of tests/fake, whose hooks record here
 * what each waiting session was told and which trees were trashed (and
 * remove them, as front_trash does). The builders are real processes,
 * started by front_exec.c as remotemedia-worker would be: this program,
 * which then reads its BuildJob on stdin and leaves DIR as worker_venv.c
 * does (DIR/venv/lib/pythonX.Y/site-packages, DIR/venv/pyvenv.cfg, then
 * DIR/complete saying "size=N", exit 0), or fails as pip would, as the names it is given say. A build runs on the event loop until its output
 * ends, is reaped with waitpid and handed to front_env_reap, as front.c's
 * SIGCHLD handler does. No test waits longer than its builds take.
 */
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "front.h"
#include "log.h"
#include "req.h"
#include "util.h"

#include "fake.h"
#include "worker.pb-c.h"

#include <bsd/string.h>

#define ENV_SIZE 100 /* what every fake build weighs, in bytes */
#define FAIL_TTL_MS (30 * 1000) /* ENV_FAIL_TTL_MS in front_env.c */
#define LOOP_MS (10 * 1000) /* the longest a build may take */
#define TICK_MS 5 /* the loop's turn while a builder runs */
#define NSES 8 /* sessions in one test */
#define NTRASH 8 /* trees trashed in one test */

/*
 * The builder is this program itself, run as remotemedia-worker would be
 * (`--log-level L --build-env DIR`, the BuildJob on stdin: fake_builder).
 * It logs each run, writes a log line as its sandbox would, says
 * "Collecting NAME" as pip does, and a name with
 * "broken" fails as pip would, one with "killed" dies of SIGKILL; else it
 * leaves DIR as worker_venv.c does.
 */
/* The cache's clock, moved on by the tests to age remembered failures. */
static uint64_t clock_offset;

static uint64_t
test_clock(void)
{
	return now_ms() + clock_offset;
}

static int
fake_builder(const char *dir)
{
	static uint8_t buf[1 << 20];
	Remotemedia__Worker__V1__BuildJob *job;
	Remotemedia__Worker__V1__Build *b;
	char path[4200], log[4200], *slash;
	size_t len = 0, i;
	ssize_t n;
	FILE *f;

	while ((n = read(0, buf + len, sizeof(buf) - len)) > 0)
		len += (size_t)n;
	if ((job = remotemedia__worker__v1__build_job__unpack(
	         NULL, len, buf)) == NULL ||
	    (b = remotemedia__worker__v1__build__unpack(
	         NULL, job->build.len, job->build.data)) == NULL ||
	    b->n_requirements == 0)
		return 2;
	/* The log is beside the cache: DIR/../../spawned. */
	snprintf(log, sizeof(log), "%s", dir);
	for (i = 0; i < 2 && (slash = strrchr(log, '/')) != NULL; i++)
		*slash = '\0';
	strlcat(log, "/spawned", sizeof(log));
	if ((f = fopen(log, "a")) == NULL)
		return 2;
	fprintf(f, "%s", dir);
	for (i = 0; i < b->n_requirements; i++)
		fprintf(f, " %s", b->requirements[i]);
	fprintf(f, "\n");
	fclose(f);
	if (mkdir(dir, 0755) == -1)
		return 1;
	/* A log line of the builder's own (its sandbox's, at debug level):
	 * the front logs it, and no session sees it as progress. */
	printf("ts=2026-01-01T00:00:00.000Z level=debug proc=worker-init "
	       "msg=\"ns_bind: the host has no /libx32: skipped\"\n");
	printf("Collecting %s\n", b->requirements[0]);
	fflush(stdout);
	for (i = 0; i < b->n_requirements; i++) {
		if (strstr(b->requirements[i], "broken") != NULL) {
			printf("ERROR: No matching distribution found for %s\n",
			    b->requirements[0]);
			return 1;
		}
		if (strstr(b->requirements[i], "killed") != NULL)
			kill(getpid(), SIGKILL);
	}
	snprintf(path, sizeof(path), "%s/venv/lib/python%s/site-packages", dir,
	    b->python_version);
	if (mkdir_p(path, 0755) == -1)
		return 1;
	snprintf(path, sizeof(path), "%s/venv/pyvenv.cfg", dir);
	if ((f = fopen(path, "w")) == NULL || fclose(f) != 0)
		return 1;
	snprintf(path, sizeof(path), "%s/complete", dir);
	if ((f = fopen(path, "w")) == NULL)
		return 1;
	fprintf(f, "size=%d\n", ENV_SIZE);
	return fclose(f) == 0 ? 0 : 1;
}

static char tmpdir[] = "/tmp/test_front_env.XXXXXX";
static char cachedir[64], trashdir[80], builder[PATH_MAX], spawnlog[64];
static struct event *tick;

/* A test's sessions, and what each was told of its build. */
static struct tses {
	struct session *ts_ses;
	int ts_told; /* outcomes heard */
	int ts_failed;
	char ts_why[4096];
} tses[NSES];
static int ntses;

/* The trees front_env.c trashed, each of which existed. */
static char trashed[NTRASH][200];
static int ntrashed;

static struct tses *
tses_of(struct session *s)
{
	int i;

	for (i = 0; i < ntses; i++)
		if (tses[i].ts_ses == s)
			return &tses[i];
	fail_msg("a session the test does not know");
	return NULL;
}

/* front_session.c, through the fake: a build's outcome. */
static void
told(struct session *s, const char *why)
{
	struct tses *t = tses_of(s);

	t->ts_told++;
	t->ts_failed = why != NULL;
	snprintf(t->ts_why, sizeof(t->ts_why), "%s", why ? why : "");
}

/* front_trash.c, through the fake: remove the tree, and remember it. */
static int
trash(const char *path, const char *dir)
{
	struct stat sb;

	assert_string_equal(dir, trashdir);
	if (lstat(path, &sb) == -1)
		return 0; /* nothing there: front_trash's answer too */
	assert_true(ntrashed < NTRASH);
	snprintf(trashed[ntrashed++], sizeof(trashed[0]), "%s", path);
	return rm_rf(path);
}

static int
exists(const char *path)
{
	struct stat sb;

	return lstat(path, &sb) == 0;
}

/* How many builders ran since the test began. */
static int
spawned(void)
{
	char line[256];
	FILE *f;
	int n = 0;

	if ((f = fopen(spawnlog, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL)
		n++;
	fclose(f);
	return n;
}

/*
 * What the builder for e was given to install, in the Build's order and
 * separated by spaces, as it logged it beside the cache.
 */
static void
spawned_reqs(const struct env *e, char *out, size_t len)
{
	const char *dir = front_env_dir(e);
	size_t n = strlen(dir);
	char line[256];
	FILE *f;

	out[0] = '\0';
	assert_non_null(f = fopen(spawnlog, "r"));
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, "\n")] = '\0';
		if (strncmp(line, dir, n) == 0 && line[n] == ' ')
			snprintf(out, len, "%s", line + n + 1);
	}
	fclose(f);
}

/*
 * A new session attaches to the n canonical requirements in reqs;
 * front_env_attach must answer want.
 */
static struct session *
attachv(const char **reqs, size_t n, int want, const char **err)
{
	struct req_list rl = {(char **)reqs, n};
	struct session *s;
	const char *why = NULL;

	assert_true(ntses < NSES);
	s = xcalloc(1, sizeof(*s));
	s->ses_state = SES_INSTALLING;
	tses[ntses++].ts_ses = s;
	assert_int_equal(front_env_attach(s, &rl, &why), want);
	if (want == -1) {
		assert_non_null(why);
		assert_null(s->ses_env);
	} else
		assert_non_null(s->ses_env);
	if (err != NULL)
		*err = why;
	return s;
}

/* A new session attaches to one requirement. */
static struct session *
attach(const char *req, int want, const char **err)
{
	return attachv(&req, 1, want, err);
}

static void
tick_cb(evutil_socket_t fd, short ev, void *arg)
{
}

/*
 * Run the loop until e's builder has ended and all it wrote is read, then
 * reap it and tell front_env.c, as front.c's SIGCHLD handler does.
 */
static void
finish_build(struct env *e)
{
	uint64_t deadline = now_ms() + LOOP_MS;
	pid_t pid = front_env_info(e).ei_builder, r;
	int st;

	assert_int_equal(front_env_info(e).ei_state, ENV_BUILDING);
	assert_true(front_env_is_builder(pid));
	while (!front_env_info(e).ei_output_done) {
		assert_true(now_ms() < deadline);
		event_base_loop(front_base, EVLOOP_ONCE);
	}
	while ((r = waitpid(pid, &st, WNOHANG)) == 0) {
		assert_true(now_ms() < deadline);
		event_base_loop(front_base, EVLOOP_ONCE);
	}
	assert_int_equal(r, pid);
	front_env_reap(pid, st);
	assert_false(front_env_is_builder(pid));
}

/* A session waits for reqs to be built, and is told they are ready. */
static struct session *
build(const char *reqs)
{
	struct session *s = attach(reqs, 0, NULL);

	finish_build(s->ses_env);
	assert_int_equal(tses_of(s)->ts_told, 1);
	assert_false(tses_of(s)->ts_failed);
	assert_int_equal(front_env_info(s->ses_env).ei_state, ENV_READY);
	return s;
}

static int
group_setup(void **state)
{
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	snprintf(cachedir, sizeof(cachedir), "%s/cache", tmpdir);
	snprintf(trashdir, sizeof(trashdir), "%s/.trash", cachedir);
	snprintf(spawnlog, sizeof(spawnlog), "%s/spawned", tmpdir);
	if (realpath("/proc/self/exe", builder) == NULL)
		return -1;
	front_conf.fc_worker = builder;
	front_conf.fc_env_cache_dir = cachedir;
	front_conf.fc_env_builds = NSES;
	front_conf.fc_pip_timeout_ms = 60 * 1000;
	front_conf.fc_builder_uid = -1;
	if ((front_base = event_base_new()) == NULL ||
	    (tick = event_new(front_base, -1, EV_PERSIST, tick_cb, NULL)) ==
	        NULL)
		return -1;
	event_add(tick, &(struct timeval){0, TICK_MS * 1000});
	front_env_init();
	return 0;
}

static int
group_teardown(void **state)
{
	event_free(tick);
	event_base_free(front_base);
	return rm_rf(tmpdir);
}

/* Each test starts with an empty cache, no builder, no session. */
static int
setup(void **state)
{
	fake_reset();
	clock_offset = 0;
	front_env_clock = test_clock;
	fake.fk_on_env = told;
	fake.fk_on_trash = trash;
	memset(tses, 0, sizeof(tses));
	ntses = 0;
	ntrashed = 0;
	front_conf.fc_env_cache_size = 1 << 30;
	front_conf.fc_pip_index_url = NULL;
	return truncate(spawnlog, 0) == -1 && errno != ENOENT ? -1 : 0;
}

/*
 * Release every session with a bound of 0, which evicts every entry: no
 * builder may be left, nor any tree a builder made.
 */
static int
teardown(void **state)
{
	char line[256];
	FILE *f;
	int i;

	front_conf.fc_env_cache_size = 0;
	for (i = 0; i < ntses; i++) {
		front_env_release(tses[i].ts_ses);
		free(tses[i].ts_ses);
	}
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	if ((f = fopen(spawnlog, "r")) == NULL)
		return 0;
	while (fgets(line, sizeof(line), f) != NULL) {
		line[strcspn(line, " \n")] = '\0';
		if (exists(line))
			fail_msg("%s is still there", line);
	}
	fclose(f);
	return 0;
}

/*
 * Two sessions want the same requirements while they are built: one
 * builder runs, both see its progress and both are told it is ready. Then
 * a third gets the entry at once.
 */
static void
test_single_flight(void **state)
{
	struct session *a, *b, *c;
	struct env *e;
	char *site;
	struct stat sb;

	a = attach("sf-pkg", 0, NULL);
	e = a->ses_env;
	assert_int_equal(front_env_info(e).ei_state, ENV_BUILDING);
	b = attach("sf-pkg", 0, NULL);
	assert_ptr_equal(b->ses_env, e);
	assert_int_equal(front_env_info(e).ei_refs, 2);
	assert_int_equal(fake.fk_build_cgroups, 1);
	assert_int_equal(tses_of(a)->ts_told + tses_of(b)->ts_told, 0);
	finish_build(e);
	assert_int_equal(spawned(), 1);
	assert_int_equal(fake.fk_env_progress, 2);
	assert_int_equal(tses_of(a)->ts_told, 1);
	assert_int_equal(tses_of(b)->ts_told, 1);
	assert_false(tses_of(a)->ts_failed || tses_of(b)->ts_failed);
	assert_int_equal(front_env_info(e).ei_state, ENV_READY);
	assert_int_equal(front_env_info(e).ei_size, ENV_SIZE);
	site = front_env_site_packages(e);
	assert_int_equal(stat(site, &sb), 0);
	assert_true(S_ISDIR(sb.st_mode));
	free(site);

	c = attach("sf-pkg", 1, NULL);
	assert_ptr_equal(c->ses_env, e);
	assert_int_equal(front_env_info(e).ei_refs, 3);
	assert_int_equal(fake.fk_build_cgroups, 1);
	assert_int_equal(tses_of(c)->ts_told, 0);
	assert_int_equal(spawned(), 1);
}

/*
 * With a bound of 0 every unused entry is one too many: an entry in use
 * stays all the same, each release drops its count, and the last one
 * evicts it. The requirements are then built afresh.
 */
static void
test_refcounts(void **state)
{
	struct session *a, *b, *c;
	struct env *e;
	char dir[200];

	front_conf.fc_env_cache_size = 0;
	a = build("rc-pkg");
	e = a->ses_env;
	snprintf(dir, sizeof(dir), "%s", front_env_dir(e));
	assert_int_equal(front_env_info(e).ei_refs, 1);
	assert_true(exists(dir));
	b = attach("rc-pkg", 1, NULL);
	assert_int_equal(front_env_info(e).ei_refs, 2);

	front_env_release(a);
	assert_null(a->ses_env);
	assert_int_equal(front_env_info(e).ei_refs, 1);
	assert_int_equal(front_env_info(e).ei_state, ENV_READY);
	assert_int_equal(ntrashed, 0);
	assert_true(exists(dir));

	front_env_release(b);
	assert_int_equal(ntrashed, 1);
	assert_string_equal(trashed[0], dir);
	assert_false(exists(dir));

	c = attach("rc-pkg", 0, NULL);
	assert_int_equal(front_env_info(c->ses_env).ei_state, ENV_BUILDING);
	assert_string_equal(front_env_dir(c->ses_env), dir);
	assert_int_equal(fake.fk_build_cgroups, 2);
	finish_build(c->ses_env);
	assert_int_equal(spawned(), 2);
}

/*
 * Two entries fit. Once a third is ready the least recently used unused
 * entry goes, not the oldest one built; an entry in use never goes, even
 * when that leaves the cache over its bound.
 */
static void
test_lru(void **state)
{
	struct session *a, *b, *c, *d;
	char da[200], db[200], dc[200], dd[200];

	front_conf.fc_env_cache_size = 2 * ENV_SIZE + ENV_SIZE / 2;
	a = build("lru-a");
	b = build("lru-b");
	snprintf(da, sizeof(da), "%s", front_env_dir(a->ses_env));
	snprintf(db, sizeof(db), "%s", front_env_dir(b->ses_env));
	front_env_release(a);
	front_env_release(b);
	assert_int_equal(ntrashed, 0);

	/* a is used again: b is now the least recently used. */
	front_env_release(attach("lru-a", 1, NULL));
	c = build("lru-c");
	snprintf(dc, sizeof(dc), "%s", front_env_dir(c->ses_env));
	assert_int_equal(ntrashed, 1);
	assert_string_equal(trashed[0], db);
	assert_false(exists(db));
	assert_true(exists(da));
	assert_true(exists(dc));

	/* a, c and d in use: three entries, over the bound, all kept. */
	attach("lru-a", 1, NULL);
	d = build("lru-d");
	snprintf(dd, sizeof(dd), "%s", front_env_dir(d->ses_env));
	assert_int_equal(ntrashed, 1);
	assert_true(exists(da) && exists(dc) && exists(dd));

	/* c, now the least recently used, goes once it is let go. */
	front_env_release(c);
	assert_int_equal(ntrashed, 2);
	assert_string_equal(trashed[1], dc);
	assert_false(exists(dc));
	assert_true(exists(da) && exists(dd));
	assert_int_equal(spawned(), 4);
}

/*
 * A failed build tells every waiting session why, naming the package from
 * pip's output; its tree goes. For 30 s the failure is remembered: the
 * same requirements are refused at once, with no build. After that they
 * are built again.
 */
static void
test_failed_build(void **state)
{
	struct session *a, *b, *d;
	struct env *e;
	const char *err;
	char dir[200];

	a = attach("broken-pkg", 0, NULL);
	b = attach("broken-pkg", 0, NULL);
	e = a->ses_env;
	snprintf(dir, sizeof(dir), "%s", front_env_dir(e));
	finish_build(e);
	assert_int_equal(spawned(), 1);
	assert_int_equal(tses_of(a)->ts_told, 1);
	assert_int_equal(tses_of(b)->ts_told, 1);
	assert_true(tses_of(a)->ts_failed && tses_of(b)->ts_failed);
	assert_non_null(strstr(
	    tses_of(a)->ts_why, "Failed to install broken-pkg: pip failed"));
	assert_non_null(strstr(tses_of(a)->ts_why,
	    "No matching distribution found for broken-pkg"));
	assert_string_equal(tses_of(a)->ts_why, tses_of(b)->ts_why);
	assert_int_equal(front_env_info(e).ei_state, ENV_FAILED);
	assert_int_equal(ntrashed, 1);
	assert_string_equal(trashed[0], dir);
	assert_false(exists(dir));
	front_env_release(a);
	front_env_release(b);

	attach("broken-pkg", -1, &err);
	assert_string_equal(err, tses_of(a)->ts_why);
	clock_offset += FAIL_TTL_MS - 1000;
	attach("broken-pkg", -1, &err);
	assert_int_equal(fake.fk_build_cgroups, 1);

	clock_offset += 1000;
	d = attach("broken-pkg", 0, NULL);
	assert_int_equal(fake.fk_build_cgroups, 2);
	finish_build(d->ses_env);
	assert_int_equal(tses_of(d)->ts_told, 1);
	assert_true(tses_of(d)->ts_failed);
	assert_int_equal(spawned(), 2);
}

/* A builder killed by a signal says nothing of the requirements. */
static void
test_killed_build_forgotten(void **state)
{
	struct session *a, *b;

	a = attach("killed-pkg", 0, NULL);
	finish_build(a->ses_env);
	assert_true(tses_of(a)->ts_failed);
	assert_non_null(strstr(tses_of(a)->ts_why, "killed by signal 9"));
	front_env_release(a);

	b = attach("killed-pkg", 0, NULL);
	assert_int_equal(fake.fk_build_cgroups, 2);
	finish_build(b->ses_env);
	assert_int_equal(spawned(), 2);
}

/*
 * The key, and with it the entry and its directory, is the requirement
 * list's (and the index configuration's): a different list is another
 * entry, the same list the same one. The builder gets the list as given,
 * in order, and the entry keeps a copy of its own.
 */
static void
test_key(void **state)
{
	static char url[] = "http://127.0.0.1:9/simple";
	const char *both[] = {"key-a", "key-b"};
	const struct req_list *kept;
	struct session *s[5];
	char dir[200], got[200];
	int i, j;

	s[0] = attach("key-a", 0, NULL);
	s[1] = attach("key-b", 0, NULL);
	s[2] = attachv(both, 2, 0, NULL);
	front_conf.fc_pip_index_url = url;
	s[3] = attach("key-a", 0, NULL);
	front_conf.fc_pip_index_url = NULL;
	s[4] = attach("key-a", 0, NULL);
	assert_ptr_equal(s[4]->ses_env, s[0]->ses_env);
	for (i = 0; i < 4; i++) {
		assert_int_equal(
		    strlen(front_env_info(s[i]->ses_env).ei_key), 64);
		assert_int_equal(strspn(front_env_info(s[i]->ses_env).ei_key,
		                     "0123456789abcdef"),
		    64);
		snprintf(dir, sizeof(dir), "%s/%s", cachedir,
		    front_env_info(s[i]->ses_env).ei_key);
		assert_string_equal(front_env_dir(s[i]->ses_env), dir);
		for (j = 0; j < i; j++)
			assert_string_not_equal(
			    front_env_info(s[i]->ses_env).ei_key,
			    front_env_info(s[j]->ses_env).ei_key);
	}
	kept = front_env_reqs(s[2]->ses_env);
	assert_int_equal(kept->rl_n, 2);
	assert_ptr_not_equal(kept->rl_v, both);
	assert_string_equal(kept->rl_v[0], "key-a");
	assert_string_equal(kept->rl_v[1], "key-b");
	for (i = 0; i < 4; i++)
		finish_build(s[i]->ses_env);
	assert_int_equal(spawned(), 4);
	assert_int_equal(tses_of(s[4])->ts_told, 1);
	spawned_reqs(s[2]->ses_env, got, sizeof(got));
	assert_string_equal(got, "key-a key-b");
	spawned_reqs(s[3]->ses_env, got, sizeof(got));
	assert_string_equal(got, "key-a");
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(int argc, char *argv[])
{
	const struct CMUnitTest tests[] = {
	    T(test_single_flight),
	    T(test_refcounts),
	    T(test_lru),
	    T(test_failed_build),
	    T(test_killed_build_forgotten),
	    T(test_key),
	};

	int i;

	for (i = 1; i + 1 < argc; i++)
		if (strcmp(argv[i], "--build-env") == 0)
			return fake_builder(argv[i + 1]);
	log_init("test", LOG_LEVEL_ERROR);
	return cmocka_run_group_tests_name(
	    "front_env", tests, group_setup, group_teardown);
}
