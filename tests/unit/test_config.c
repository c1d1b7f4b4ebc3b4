/* Unit tests for the front's command-line parser (front_config.c). */
#include <sys/stat.h>

#include <setjmp.h>
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

#define ARGV(...) ((char *[]){"remotemediad", __VA_ARGS__, NULL})
#define ARGC(...) \
	((int)(sizeof((char *[]){"remotemediad", __VA_ARGS__}) / \
	    sizeof(char *)))

static struct front_config fc;
static char err[256];

static int
setup(void **state)
{
	front_config_defaults(&fc);
	fc.fc_config_default = NULL; /* never the host's own file */
	memset(err, 0, sizeof(err));
	return 0;
}

static int
teardown(void **state)
{
	front_config_free(&fc);
	memset(&fc, 0, sizeof(fc));
	return 0;
}

/* Parse argv into the fixture; the error buffer is cleared first. */
static int
parse(int argc, char **argv)
{
	memset(err, 0, sizeof(err));
	return front_config_parse(&fc, argc, argv, err, sizeof(err));
}

#define PARSE(...) parse(ARGC(__VA_ARGS__), ARGV(__VA_ARGS__))

/* Expect -1 and an error message that contains each given word. */
static void
expect_error(int rv, const char *word1, const char *word2)
{
	assert_int_equal(rv, -1);
	assert_true(err[0] != '\0');
	if (strstr(err, word1) == NULL)
		fail_msg("error '%s' does not name '%s'", err, word1);
	if (word2 != NULL && strstr(err, word2) == NULL)
		fail_msg("error '%s' does not mention '%s'", err, word2);
}

static void
test_defaults(void **state)
{
	const char *slash;

	assert_int_equal(parse(1, (char *[]){"remotemediad", NULL}), 0);
	assert_string_equal(fc.fc_host, "127.0.0.1");
	assert_int_equal(fc.fc_port, 50052);
	assert_int_equal(fc.fc_log_level, LOG_LEVEL_INFO);
	assert_string_equal(fc.fc_state_dir, "/var/lib/remotemedia");
	assert_int_equal(fc.fc_max_message, FRONT_MAX_MESSAGE);
	assert_true(fc.fc_max_value == 1024ULL * 1024 * 1024);
	assert_int_equal(fc.fc_grace_ms, 2000);
	assert_int_equal(fc.fc_exit_wait_ms, 2000);
	/* The worker binary defaults to the one beside this program. */
	assert_non_null(fc.fc_worker);
	slash = strrchr(fc.fc_worker, '/');
	assert_non_null(slash);
	assert_string_equal(slash + 1, "remotemedia-worker");
	assert_true(fc.fc_worker[0] == '/');
}

static void
test_listen_space(void **state)
{
	assert_int_equal(PARSE("--listen", "0.0.0.0:8080"), 0);
	assert_string_equal(fc.fc_host, "0.0.0.0");
	assert_int_equal(fc.fc_port, 8080);
}

static void
test_listen_eq(void **state)
{
	assert_int_equal(PARSE("--listen=10.1.2.3:1"), 0);
	assert_string_equal(fc.fc_host, "10.1.2.3");
	assert_int_equal(fc.fc_port, 1);
}

static void
test_listen_ipv6(void **state)
{
	assert_int_equal(PARSE("--listen", "[::1]:0"), 0);
	assert_string_equal(fc.fc_host, "::1");
	assert_int_equal(fc.fc_port, 0);
	assert_int_equal(PARSE("--listen=[::]:50053"), 0);
	assert_string_equal(fc.fc_host, "::");
	assert_int_equal(fc.fc_port, 50053);
}

static void
test_state_dir(void **state)
{
	assert_int_equal(PARSE("--state-dir", "/tmp/rm-a"), 0);
	assert_string_equal(fc.fc_state_dir, "/tmp/rm-a");
	assert_int_equal(PARSE("--state-dir=/tmp/rm-b"), 0);
	assert_string_equal(fc.fc_state_dir, "/tmp/rm-b");
}

static void
test_worker(void **state)
{
	assert_int_equal(PARSE("--worker", "/opt/rm/worker"), 0);
	assert_string_equal(fc.fc_worker, "/opt/rm/worker");
	assert_int_equal(PARSE("--worker=./w"), 0);
	assert_string_equal(fc.fc_worker, "./w");
}

static void
test_log_level(void **state)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	char buf[32];
	int i;

	for (i = 0; i < 4; i++) {
		assert_int_equal(PARSE("--log-level", (char *)names[i]), 0);
		assert_int_equal(fc.fc_log_level, i);
		fc.fc_log_level = -7;
		snprintf(buf, sizeof(buf), "--log-level=%s", names[i]);
		assert_int_equal(PARSE(buf), 0);
		assert_int_equal(fc.fc_log_level, i);
	}
}

/* Every flag at once, mixing both forms; the last of a repeat wins. */
static void
test_all_flags(void **state)
{
	assert_int_equal(PARSE("--listen=[::1]:0", "--state-dir", "/srv/rm",
	                     "--worker=/bin/w", "--log-level", "debug",
	                     "--listen", "127.0.0.1:9"),
	    0);
	assert_string_equal(fc.fc_host, "127.0.0.1");
	assert_int_equal(fc.fc_port, 9);
	assert_string_equal(fc.fc_state_dir, "/srv/rm");
	assert_string_equal(fc.fc_worker, "/bin/w");
	assert_int_equal(fc.fc_log_level, LOG_LEVEL_DEBUG);
}

static void
test_help(void **state)
{
	assert_int_equal(PARSE("--help"), 1);
	assert_int_equal(PARSE("-h"), 1);
	assert_int_equal(PARSE("--log-level", "debug", "--help"), 1);
}

static void
test_unknown_flag(void **state)
{
	expect_error(PARSE("--bogus"), "--bogus", "unknown");
	expect_error(PARSE("--bogus", "x"), "--bogus", "unknown");
	expect_error(PARSE("--bogus=x"), "--bogus", "unknown");
	expect_error(
	    PARSE("--listen=127.0.0.1:1", "--port", "2"), "--port", "unknown");
	/* A flag longer than the parser's buffer, in both forms. */
	expect_error(PARSE("--an-unreasonably-long-flag-name-that-goes-on-"
	                   "and-on-and-on-and-on"),
	    "--an-unreasonably", "unknown");
	expect_error(PARSE("--an-unreasonably-long-flag-name-that-goes-on-"
	                   "and-on-and-on-and-on=1"),
	    "--an-unreasonably", "unknown");
}

static void
test_positional(void **state)
{
	expect_error(PARSE("serve"), "serve", "unexpected");
	expect_error(PARSE("-v"), "-v", NULL);
}

static void
test_missing_value(void **state)
{
	static const char *flags[] = {
	    "--listen", "--state-dir", "--worker", "--log-level"};
	size_t i;

	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		expect_error(PARSE((char *)flags[i]), flags[i], "missing");
}

static void
test_bad_log_level(void **state)
{
	expect_error(PARSE("--log-level", "verbose"), "--log-level", "verbose");
	expect_error(PARSE("--log-level=INFO"), "--log-level", "INFO");
	expect_error(PARSE("--log-level="), "--log-level", NULL);
}

static void
test_relative_state_dir(void **state)
{
	expect_error(
	    PARSE("--state-dir", "var/lib/rm"), "--state-dir", "var/lib/rm");
	expect_error(PARSE("--state-dir=./rm"), "--state-dir", "./rm");
	expect_error(PARSE("--state-dir="), "--state-dir", NULL);
	assert_string_equal(fc.fc_state_dir, "/var/lib/remotemedia");
}

/* --session-uids: a range of non-root uids, small enough to track. */
static void
test_session_uids(void **state)
{
	static const char *bad[] = {"0-10", "10-9", "10", "1-4294967295",
	    "100000-4000000000", "100000-1148576", "-5", "a-b"};
	size_t i;

	assert_int_equal(PARSE("--session-uids", "100000-1148575"), 0);
	assert_int_equal(fc.fc_uid_first, 100000);
	assert_int_equal(fc.fc_uid_last, 1148575);
	assert_int_equal(PARSE("--session-uids", "70000-70000"), 0);
	assert_int_equal(fc.fc_uid_first, 70000);
	assert_int_equal(fc.fc_uid_last, 70000);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_error(PARSE("--session-uids", (char *)bad[i]),
		    "--session-uids", "at most 1048576");
	assert_int_equal(fc.fc_uid_last, 70000);
}

static void
test_bad_listen(void **state)
{
	static const char *bad[] = {"127.0.0.1", "127.0.0.1:70000", "::1:80",
	    "[::1]", ":80", "host:port", ""};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		expect_error(
		    PARSE("--listen", (char *)bad[i]), "--listen", NULL);
		assert_string_equal(fc.fc_host, "127.0.0.1");
		assert_int_equal(fc.fc_port, 50052);
	}
	expect_error(PARSE("--listen=[::1]"), "--listen", "[::1]");
	/* A value that is itself a flag is taken as the value. */
	expect_error(
	    PARSE("--listen", "--state-dir", "/x"), "--listen", "--state-dir");
}

/* A small error buffer truncates the message but stays terminated. */
static void
test_small_err_buffer(void **state)
{
	char small[8];

	memset(small, 'x', sizeof(small));
	assert_int_equal(front_config_parse(&fc, ARGC("--bogus-flag"),
	                     ARGV("--bogus-flag"), small, sizeof(small)),
	    -1);
	assert_int_equal(small[sizeof(small) - 1], '\0');
	assert_string_equal(small, "--bogus");
}

/* Write text to a new temporary file; its path goes to path. */
static void
write_file(char *path, size_t len, const char *text)
{
	FILE *f;
	int fd;

	snprintf(path, len, "/tmp/rm-test-config-XXXXXX");
	assert_true((fd = mkstemp(path)) != -1);
	assert_non_null(f = fdopen(fd, "w"));
	fputs(text, f);
	fclose(f);
}

static void
test_config_file(void **state)
{
	char path[64];

	write_file(path, sizeof(path),
	    "# a comment\n"
	    "\n"
	    "listen = 0.0.0.0:1\n"
	    "  state-dir   /srv/rm  \n"
	    "pip-find-links=/a\n"
	    "pip-find-links = /b\n"
	    "max-streams = 7\n"
	    "session-network = host\n");
	assert_int_equal(PARSE("--config", path), CONFIG_RUN);
	assert_string_equal(fc.fc_host, "0.0.0.0");
	assert_int_equal(fc.fc_port, 1);
	assert_string_equal(fc.fc_state_dir, "/srv/rm");
	assert_int_equal(fc.fc_n_pip_find_links, 2);
	assert_string_equal(fc.fc_pip_find_links[1], "/b");
	assert_int_equal(fc.fc_max_streams, 7);
	assert_int_equal(fc.fc_network, 2);

	/* Flags win, and a repeatable flag replaces the file's list. */
	teardown(state);
	setup(state);
	assert_int_equal(PARSE("--listen", "127.0.0.1:2", "--config", path,
	                     "--pip-find-links", "/c"),
	    CONFIG_RUN);
	assert_int_equal(fc.fc_port, 2);
	assert_int_equal(fc.fc_n_pip_find_links, 1);
	assert_string_equal(fc.fc_pip_find_links[0], "/c");
	assert_int_equal(fc.fc_max_streams, 7);
	unlink(path);
}

static void
test_config_file_errors(void **state)
{
	char path[64], want[96];

	write_file(path, sizeof(path), "listen = 0.0.0.0:1\nmax-streams 0\n");
	expect_error(PARSE("--config", path), path, "--max-streams");
	snprintf(want, sizeof(want), "%s:2:", path);
	expect_error(PARSE("--config", path), want, "'0'");
	unlink(path);

	write_file(path, sizeof(path), "\n\nbogus = 1\n");
	snprintf(want, sizeof(want), "%s:3: bogus: unknown key", path);
	expect_error(PARSE("--config", path), want, NULL);
	unlink(path);

	write_file(path, sizeof(path), "state-dir =\n");
	expect_error(PARSE("--config", path), "state-dir", "missing value");
	unlink(path);

	/* A file cannot name another file. */
	write_file(path, sizeof(path), "config = /etc/passwd\n");
	expect_error(PARSE("--config", path), "config", "unknown key");
	unlink(path);

	expect_error(PARSE("--config", "/nonexistent/rm.conf"),
	    "/nonexistent/rm.conf", "No such file");
	expect_error(PARSE("--config", "rm.conf"), "--config", "absolute");

	/* A NUL byte was taken for a line too long. */
	write_file(path, sizeof(path), "");
	{
		static const char text[] = "max-streams = 7\n# x\0y\n";
		FILE *f = fopen(path, "w");

		assert_non_null(f);
		fwrite(text, 1, sizeof(text) - 1, f);
		fclose(f);
	}
	snprintf(want, sizeof(want), "%s:2: a NUL byte", path);
	expect_error(PARSE("--config", path), want, NULL);
	unlink(path);

	/* A FIFO would block the start: refused without waiting. */
	snprintf(
	    path, sizeof(path), "/tmp/rm-test-config-fifo-%d", (int)getpid());
	assert_int_equal(mkfifo(path, 0600), 0);
	expect_error(PARSE("--config", path), path, "not a regular file");
	unlink(path);
	expect_error(
	    PARSE("--config", "/dev/zero"), "/dev/zero", "not a regular file");
}

/* Where pip looks: http(s) URLs or absolute paths, nothing else. */
static void
test_pip_locations(void **state)
{
	static const char *bad[] = {"", "relative", "ftp://h/simple", "http://",
	    "https://", "http://h\n/simple", "file://srv/w", "http://h\x01",
	    "/srv/w\x7f"};
	static const char *good[] = {"http://127.0.0.1:1/simple", "https://h/s",
	    "/srv/wheels", "/srv/my wheels", "file:///srv/w",
	    "file://localhost/srv/w"};
	static const char *flags[] = {
	    "--pip-index-url", "--pip-extra-index-url", "--pip-find-links"};
	size_t i, j;

	for (j = 0; j < 3; j++)
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			expect_error(PARSE((char *)flags[j], (char *)bad[i]),
			    flags[j], "an http://, https:// or file:// URL");
	for (i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		assert_int_equal(PARSE("--pip-find-links", (char *)good[i]), 0);
	assert_int_equal(PARSE("--pip-index-url", "http://127.0.0.1:1/simple",
	                     "--pip-extra-index-url", "https://h/s",
	                     "--pip-find-links", "/srv/wheels"),
	    0);
	assert_string_equal(fc.fc_pip_index_url, "http://127.0.0.1:1/simple");
	assert_int_equal(PARSE("--pip-index-url", "none"), 0);
	assert_null(fc.fc_pip_index_url);
}

/* --listen and --metrics-listen take an address of this host, not a name. */
static void
test_listen_needs_an_address(void **state)
{
	static const char *bad[] = {
	    "a b:80", "localhost:80", "host\xff:80", "[nope]:80", "1.2.3:80"};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		expect_error(PARSE("--listen", (char *)bad[i]), "--listen",
		    "IPv4:PORT or [IPv6]:PORT");
		assert_string_equal(fc.fc_host, "127.0.0.1");
	}
	/* Metrics may name a host, resolved at start; not any string. */
	assert_int_equal(PARSE("--metrics-listen", "localhost:9464"), 0);
	assert_string_equal(fc.fc_metrics_host, "localhost");
	assert_int_equal(PARSE("--metrics-listen", "[::1]:9464"), 0);
	expect_error(PARSE("--metrics-listen", "a b:80"), "--metrics-listen",
	    "HOST:PORT");
	expect_error(
	    PARSE("--metrics-listen", "host\xff:80"), "--metrics-listen", NULL);
}

/* Repeatable options keep their own checks: CIDRs are not locations. */
static void
test_cidrs(void **state)
{
	assert_int_equal(PARSE("--session-egress-allow", "10.77.0.0/24",
	                     "--session-egress-deny", "fd00::/8"),
	    0);
	expect_error(PARSE("--session-egress-allow", "/srv/w"),
	    "--session-egress-allow", "CIDR");
}

/* SIGHUP: the limits and session limits come again from file and flags. */
static void
test_reload(void **state)
{
	char path[64];
	char *argv[] = {"remotemediad", "--config", path,
	    "--max-inflight-calls", "9", "--state-dir", "/srv/rm", NULL};
	int sessions;
	FILE *f;

	write_file(path, sizeof(path),
	    "max-sessions = 1\nmax-inflight-calls = 7\nlisten = 127.0.0.1:7\n");
	assert_int_equal(parse(7, argv), CONFIG_RUN);
	assert_int_equal(fc.fc_max_sessions, 1);
	assert_int_equal(fc.fc_max_inflight, 9);
	assert_non_null(f = fopen(path, "w"));
	fputs(
	    "max-sessions = 5\nsession-memory = 512M\nmax-inflight-calls = 3\n"
	    "listen = 127.0.0.1:8\nstate-dir = /elsewhere\n",
	    f);
	fclose(f);
	/* max-sessions and session-memory; the flag keeps max-inflight-calls,
	 * and the address and state dir are not reloaded. */
	assert_int_equal(
	    front_config_reload(&fc, 7, argv, &sessions, err, sizeof(err)), 2);
	assert_int_equal(sessions, 1);
	assert_int_equal(fc.fc_max_sessions, 5);
	assert_true(fc.fc_session_memory == 512ULL << 20);
	assert_int_equal(fc.fc_max_inflight, 9);
	assert_int_equal(fc.fc_port, 7);
	assert_string_equal(fc.fc_state_dir, "/srv/rm");
	assert_int_equal(
	    front_config_reload(&fc, 7, argv, &sessions, err, sizeof(err)), 0);
	/* A file that does not parse changes nothing. */
	assert_non_null(f = fopen(path, "w"));
	fputs("max-sessions = 0\n", f);
	fclose(f);
	assert_int_equal(
	    front_config_reload(&fc, 7, argv, &sessions, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "--max-sessions"));
	assert_int_equal(fc.fc_max_sessions, 5);
	unlink(path);
}

static void
test_default_config_file(void **state)
{
	char path[64];

	write_file(path, sizeof(path), "max-sessions = 9\n");
	fc.fc_config_default = path;
	assert_int_equal(PARSE("--log-level", "debug"), CONFIG_RUN);
	assert_int_equal(fc.fc_max_sessions, 9);
	/* --config replaces the default file, which is then not read. */
	teardown(state);
	setup(state);
	fc.fc_config_default = path;
	assert_int_equal(PARSE("--config", "/dev/null"), CONFIG_RUN);
	assert_int_equal(fc.fc_max_sessions, 1000);
	unlink(path);
	/* A default file that is absent is no error. */
	teardown(state);
	setup(state);
	fc.fc_config_default = path;
	assert_int_equal(PARSE("--log-level", "debug"), CONFIG_RUN);
}

static void
test_check_config_and_man(void **state)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f;

	assert_int_equal(PARSE("--check-config"), CONFIG_CHECK);
	assert_int_equal(
	    PARSE("--max-streams", "5", "--check-config"), CONFIG_CHECK);
	expect_error(PARSE("--check-config", "--max-streams", "0"),
	    "--max-streams", "'0'");
	assert_int_equal(PARSE("--man"), CONFIG_MAN);

	assert_non_null(f = open_memstream(&text, &len));
	front_config_man(f);
	fclose(f);
	assert_non_null(strstr(text, ".TH REMOTEMEDIAD 8"));
	assert_non_null(strstr(text, "\\-\\-max\\-streams"));
	assert_non_null(strstr(text, "(default 127.0.0.1:50052)"));
	free(text);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_defaults),
	    T(test_listen_space),
	    T(test_listen_eq),
	    T(test_listen_ipv6),
	    T(test_state_dir),
	    T(test_worker),
	    T(test_log_level),
	    T(test_all_flags),
	    T(test_help),
	    T(test_unknown_flag),
	    T(test_positional),
	    T(test_missing_value),
	    T(test_bad_log_level),
	    T(test_relative_state_dir),
	    T(test_bad_listen),
	    T(test_session_uids),
	    T(test_small_err_buffer),
	    T(test_config_file),
	    T(test_config_file_errors),
	    T(test_pip_locations),
	    T(test_listen_needs_an_address),
	    T(test_cidrs),
	    T(test_default_config_file),
	    T(test_reload),
	    T(test_check_config_and_man),
	};

	return cmocka_run_group_tests_name("config", tests, NULL, NULL);
}
