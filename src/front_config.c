/* The front's command-line flags (architecture section 9). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "front.h"
#include "log.h"
#include "util.h"

/* Fill in the defaults; --worker defaults to the binary beside ours. */
void
front_config_defaults(struct front_config *fc)
{
	char self[PATH_MAX], *slash;
	ssize_t n;

	memset(fc, 0, sizeof(*fc));
	strcpy(fc->fc_host, "127.0.0.1");
	fc->fc_port = 50052;
	fc->fc_state_dir = xstrdup("/var/lib/remotemedia");
	fc->fc_log_level = LOG_LEVEL_INFO;
	fc->fc_max_message = FRONT_MAX_MESSAGE;
	fc->fc_max_value = 1024ULL * 1024 * 1024;
	fc->fc_grace_ms = 2000;
	fc->fc_exit_wait_ms = 2000;
	fc->fc_pip_index_url = xstrdup("https://pypi.org/simple");
	fc->fc_pip_system_site = 1;
	fc->fc_pip_timeout_ms = 10 * 60 * 1000;
	fc->fc_env_cache_size = 10ULL * 1024 * 1024 * 1024;
	fc->fc_env_builds = 2;
	fc->fc_session_pool = 2;
	fc->fc_builder_uid = 60999;
	fc->fc_sandbox = 1;
	fc->fc_uid_first = 61000;
	fc->fc_uid_last = 61999;
	fc->fc_network = 1; /* isolated */
	fc->fc_session_memory = 1024ULL * 1024 * 1024;
	fc->fc_session_pids = 128;
	fc->fc_session_cpu = 100;
	fc->fc_session_disk = 256ULL * 1024 * 1024;
	fc->fc_session_lifetime_ms = 24ULL * 3600 * 1000;
	fc->fc_session_idle_ms = 0;
	fc->fc_max_sessions = 1000;
	fc->fc_max_sessions_per_token = 100;
	fc->fc_max_streams = 100;
	fc->fc_max_header_list = 16384;
	fc->fc_max_inflight = 1000;
	fc->fc_handshake_ms = 10 * 1000;
	fc->fc_conn_idle_ms = 10 * 60 * 1000;
	fc->fc_ping_rate = 10;
	n = readlink("/proc/self/exe", self, sizeof(self) - 32);
	if (n > 0) {
		self[n] = '\0';
		if ((slash = strrchr(self, '/')) != NULL) {
			strcpy(slash + 1, "remotemedia-worker");
			fc->fc_worker = xstrdup(self);
			return;
		}
	}
	fc->fc_worker = xstrdup("remotemedia-worker");
}

void
front_config_usage(void)
{
	fprintf(stderr,
	    "usage: remotemediad [--listen HOST:PORT] [--state-dir DIR]\n"
	    "                    [--worker PATH] [--log-level LEVEL]\n"
	    "  --listen HOST:PORT   address to serve on, [IPv6]:PORT too;\n"
	    "                       port 0 picks a free port "
	    "(default 127.0.0.1:50052)\n"
	    "  --state-dir DIR      session directories live here "
	    "(default /var/lib/remotemedia)\n"
	    "  --worker PATH        the worker binary "
	    "(default: remotemedia-worker beside remotemediad)\n"
	    "  --log-level LEVEL    error, warn, info or debug "
	    "(default info)\n"
	    "environments (pip_packages):\n"
	    "  --pip-index-url URL  the index pip uses, or 'none' "
	    "(default https://pypi.org/simple)\n"
	    "  --pip-extra-index-url URL   another index; repeatable\n"
	    "  --pip-find-links DIR        a directory of wheels; repeatable\n"
	    "  --pip-system-site-packages on|off  see the host's packages "
	    "(default on)\n"
	    "  --pip-allow-source on|off   allow source builds (setup.py) "
	    "(default off)\n"
	    "  --pip-timeout DURATION      bound on one install (default 10m)\n"
	    "  --env-cache-dir DIR         cached environments "
	    "(default STATE-DIR/envs)\n"
	    "  --env-cache-size SIZE       evict unused ones above this "
	    "(default 10G)\n"
	    "  --env-builds N              concurrent builds (default 2)\n"
	    "  --session-pool N            spare sessions started ahead, for "
	    "sessions\n"
	    "                              with no packages; 0: none "
	    "(default 2)\n"
	    "  --builder-uid UID           uid environment builds run as "
	    "(default 60999)\n"
	    "sessions and the sandbox:\n"
	    "  --sandbox on|off            confine sessions; off is for "
	    "development only (default on)\n"
	    "  --session-uids FIRST-LAST   one uid per session "
	    "(default 61000-61999)\n"
	    "  --session-network off|isolated|host  (default isolated)\n"
	    "  --session-memory SIZE       (default 1G)\n"
	    "  --session-pids N            (default 128)\n"
	    "  --session-cpu PERCENT       (default 100)\n"
	    "  --session-disk SIZE         session dir and /tmp, each "
	    "(default 256M)\n"
	    "  --session-max-lifetime DURATION  (default 24h)\n"
	    "  --session-idle-timeout DURATION  0 for none (default 0)\n"
	    "  --seccomp-log on|off        log violations instead of killing "
	    "(default off)\n"
	    "authentication:\n"
	    "  --token-file FILE           lines NAME:TOKEN[:admin]; clients "
	    "send\n"
	    "                              authorization: Bearer TOKEN "
	    "(re-read on SIGHUP)\n"
	    "  --allow-unauthenticated on|off  serve a non-loopback address "
	    "without\n"
	    "                              a token file (default off)\n"
	    "TLS (reloaded on SIGHUP):\n"
	    "  --tls-cert FILE --tls-key FILE  serve TLS 1.2/1.3 with ALPN h2\n"
	    "  --tls-client-ca FILE        require client certificates "
	    "signed by it\n"
	    "limits:\n"
	    "  --max-sessions N (1000)   --max-sessions-per-token N (100)\n"
	    "  --max-streams N (100, per connection)\n"
	    "  --max-message-size SIZE (4M)   --max-header-list-size SIZE "
	    "(16K)\n"
	    "  --max-value-size SIZE (1G, a chunked value)\n"
	    "  --max-inflight-calls N (1000, per session)\n"
	    "  --handshake-timeout DURATION (10s)   --idle-timeout DURATION "
	    "(10m)\n"
	    "  --max-ping-rate N (10 PINGs per second, sustained)\n");
}

/* Add a value to a repeatable flag's list. */
static int
front_config_repeat(char **list, int *n, const char *flag, const char *val,
    char *err, size_t errlen)
{
	if (*n >= FRONT_MAX_REPEAT) {
		snprintf(err, errlen, "%s: at most %d times", flag,
		    FRONT_MAX_REPEAT);
		return -1;
	}
	list[(*n)++] = xstrdup(val);
	return 0;
}

static int
front_config_bad(char *err, size_t errlen, const char *flag, const char *want,
    const char *val)
{
	snprintf(err, errlen, "%s: expected %s, got '%s'", flag, want, val);
	return -1;
}

/* Parse an unsigned number in [lo, hi]. */
static int
front_config_number(const char *val, uint64_t lo, uint64_t hi, uint64_t *out)
{
	char *end;

	if (*val < '0' || *val > '9')
		return -1;
	errno = 0;
	*out = strtoull(val, &end, 10);
	if (errno != 0 || *end != '\0' || *out < lo || *out > hi)
		return -1;
	return 0;
}

/* --session-uids FIRST-LAST: a range of non-root uids. */
static int
front_config_uids(struct front_config *fc, const char *val)
{
	char first[32];
	const char *dash = strchr(val, '-');
	uint64_t a, b;

	if (dash == NULL || (size_t)(dash - val) >= sizeof(first))
		return -1;
	memcpy(first, val, (size_t)(dash - val));
	first[dash - val] = '\0';
	if (front_config_number(first, 1, 4294967294ULL, &a) == -1 ||
	    front_config_number(dash + 1, 1, 4294967294ULL, &b) == -1 || b < a)
		return -1;
	fc->fc_uid_first = (uint32_t)a;
	fc->fc_uid_last = (uint32_t)b;
	return 0;
}

/* A number flag in [lo, hi] into a uint32_t. */
static int
front_config_u32(const char *flag, const char *val, uint64_t lo, uint64_t hi,
    uint32_t *out, char *err, size_t errlen)
{
	uint64_t v;
	char want[64];

	if (front_config_number(val, lo, hi, &v) == -1) {
		snprintf(want, sizeof(want), "a number from %llu to %llu",
		    (unsigned long long)lo, (unsigned long long)hi);
		return front_config_bad(err, errlen, flag, want, val);
	}
	*out = (uint32_t)v;
	return 0;
}

/* The limits flags. */
static int
front_config_apply_limits(struct front_config *fc, const char *flag,
    const char *val, char *err, size_t errlen)
{
	uint64_t v;

	if (strcmp(flag, "--max-sessions") == 0)
		return front_config_u32(
		    flag, val, 1, 1000000, &fc->fc_max_sessions, err, errlen);
	if (strcmp(flag, "--max-sessions-per-token") == 0)
		return front_config_u32(flag, val, 1, 1000000,
		    &fc->fc_max_sessions_per_token, err, errlen);
	if (strcmp(flag, "--max-streams") == 0)
		return front_config_u32(
		    flag, val, 1, 100000, &fc->fc_max_streams, err, errlen);
	if (strcmp(flag, "--max-inflight-calls") == 0)
		return front_config_u32(
		    flag, val, 1, 1000000, &fc->fc_max_inflight, err, errlen);
	if (strcmp(flag, "--max-ping-rate") == 0)
		return front_config_u32(
		    flag, val, 1, 100000, &fc->fc_ping_rate, err, errlen);
	if (strcmp(flag, "--max-header-list-size") == 0) {
		if (parse_size(val, &v) == -1 || v < 1024 || v > (1U << 24))
			return front_config_bad(
			    err, errlen, flag, "a size from 1K to 16M", val);
		fc->fc_max_header_list = (uint32_t)v;
	} else if (strcmp(flag, "--max-message-size") == 0) {
		if (parse_size(val, &fc->fc_max_message) == -1 ||
		    fc->fc_max_message < 1024 ||
		    fc->fc_max_message > (1ULL << 31))
			return front_config_bad(
			    err, errlen, flag, "a size from 1K to 2G", val);
	} else if (strcmp(flag, "--max-value-size") == 0) {
		if (parse_size(val, &fc->fc_max_value) == -1 ||
		    fc->fc_max_value < 1024)
			return front_config_bad(
			    err, errlen, flag, "a size of at least 1K", val);
	} else if (strcmp(flag, "--handshake-timeout") == 0 ||
	    strcmp(flag, "--idle-timeout") == 0) {
		if (parse_duration_ms(val, &v) == -1 || v == 0)
			return front_config_bad(err, errlen, flag,
			    "a duration such as 10s or 5m", val);
		if (flag[2] == 'h')
			fc->fc_handshake_ms = v;
		else
			fc->fc_conn_idle_ms = v;
	} else {
		snprintf(err, errlen, "%s: unknown flag", flag);
		return -1;
	}
	return 0;
}

/* The session and sandbox flags. */
static int
front_config_apply_session(struct front_config *fc, const char *flag,
    const char *val, char *err, size_t errlen)
{
	uint64_t v;

	if (strcmp(flag, "--sandbox") == 0) {
		if (parse_onoff(val, &fc->fc_sandbox) == -1)
			return front_config_bad(
			    err, errlen, flag, "on or off", val);
	} else if (strcmp(flag, "--token-file") == 0) {
		if (*val != '/')
			return front_config_bad(
			    err, errlen, flag, "an absolute path", val);
		free(fc->fc_token_file);
		fc->fc_token_file = xstrdup(val);
	} else if (strcmp(flag, "--tls-cert") == 0) {
		free(fc->fc_tls_cert);
		fc->fc_tls_cert = xstrdup(val);
	} else if (strcmp(flag, "--tls-key") == 0) {
		free(fc->fc_tls_key);
		fc->fc_tls_key = xstrdup(val);
	} else if (strcmp(flag, "--tls-client-ca") == 0) {
		free(fc->fc_tls_client_ca);
		fc->fc_tls_client_ca = xstrdup(val);
	} else if (strcmp(flag, "--allow-unauthenticated") == 0) {
		if (parse_onoff(val, &fc->fc_allow_unauth) == -1)
			return front_config_bad(
			    err, errlen, flag, "on or off", val);
	} else if (strcmp(flag, "--seccomp-log") == 0) {
		if (parse_onoff(val, &fc->fc_seccomp_log) == -1)
			return front_config_bad(
			    err, errlen, flag, "on or off", val);
	} else if (strcmp(flag, "--session-uids") == 0) {
		if (front_config_uids(fc, val) == -1)
			return front_config_bad(err, errlen, flag,
			    "FIRST-LAST, non-root uids", val);
	} else if (strcmp(flag, "--session-network") == 0) {
		if (strcmp(val, "off") == 0)
			fc->fc_network = 0;
		else if (strcmp(val, "isolated") == 0)
			fc->fc_network = 1;
		else if (strcmp(val, "host") == 0)
			fc->fc_network = 2;
		else
			return front_config_bad(
			    err, errlen, flag, "off, isolated or host", val);
	} else if (strcmp(flag, "--session-memory") == 0 ||
	    strcmp(flag, "--session-disk") == 0) {
		if (parse_size(val, &v) == -1 || v < 1024 * 1024)
			return front_config_bad(
			    err, errlen, flag, "a size of at least 1M", val);
		if (flag[10] == 'm')
			fc->fc_session_memory = v;
		else
			fc->fc_session_disk = v;
	} else if (strcmp(flag, "--session-pids") == 0) {
		if (front_config_number(val, 4, 1000000, &v) == -1)
			return front_config_bad(err, errlen, flag,
			    "a number from 4 to 1000000", val);
		fc->fc_session_pids = (uint32_t)v;
	} else if (strcmp(flag, "--session-cpu") == 0) {
		if (front_config_number(val, 1, 6400, &v) == -1)
			return front_config_bad(err, errlen, flag,
			    "a percentage from 1 to 6400", val);
		fc->fc_session_cpu = (uint32_t)v;
	} else if (strcmp(flag, "--session-max-lifetime") == 0 ||
	    strcmp(flag, "--session-idle-timeout") == 0) {
		if (parse_duration_ms(val, &v) == -1 && strcmp(val, "0") != 0)
			return front_config_bad(err, errlen, flag,
			    "a duration such as 30s, 10m or 2h", val);
		if (strcmp(val, "0") == 0)
			v = 0;
		if (flag[10] == 'm')
			fc->fc_session_lifetime_ms = v;
		else
			fc->fc_session_idle_ms = v;
	} else
		return front_config_apply_limits(fc, flag, val, err, errlen);
	return 0;
}

/* The environment flags (pip_packages). */
static int
front_config_apply_env(struct front_config *fc, const char *flag,
    const char *val, char *err, size_t errlen)
{
	uint64_t v;
	char *end;

	if (strcmp(flag, "--pip-index-url") == 0) {
		free(fc->fc_pip_index_url);
		fc->fc_pip_index_url = strcmp(val, "none") == 0 ? NULL
		                                                : xstrdup(val);
	} else if (strcmp(flag, "--pip-extra-index-url") == 0)
		return front_config_repeat(fc->fc_pip_extra_index,
		    &fc->fc_n_pip_extra_index, flag, val, err, errlen);
	else if (strcmp(flag, "--pip-find-links") == 0)
		return front_config_repeat(fc->fc_pip_find_links,
		    &fc->fc_n_pip_find_links, flag, val, err, errlen);
	else if (strcmp(flag, "--pip-system-site-packages") == 0) {
		if (parse_onoff(val, &fc->fc_pip_system_site) == -1)
			return front_config_bad(
			    err, errlen, flag, "on or off", val);
	} else if (strcmp(flag, "--pip-allow-source") == 0) {
		if (parse_onoff(val, &fc->fc_pip_allow_source) == -1)
			return front_config_bad(
			    err, errlen, flag, "on or off", val);
	} else if (strcmp(flag, "--pip-timeout") == 0) {
		if (parse_duration_ms(val, &fc->fc_pip_timeout_ms) == -1 ||
		    fc->fc_pip_timeout_ms == 0)
			return front_config_bad(err, errlen, flag,
			    "a duration such as 90s or 10m", val);
	} else if (strcmp(flag, "--env-cache-dir") == 0) {
		if (*val != '/')
			return front_config_bad(
			    err, errlen, flag, "an absolute path", val);
		free(fc->fc_env_cache_dir);
		fc->fc_env_cache_dir = xstrdup(val);
	} else if (strcmp(flag, "--env-cache-size") == 0) {
		if (parse_size(val, &fc->fc_env_cache_size) == -1)
			return front_config_bad(err, errlen, flag,
			    "a size such as 512M or 10G", val);
	} else if (strcmp(flag, "--env-builds") == 0) {
		v = strtoull(val, &end, 10);
		if (*val < '0' || *val > '9' || *end != '\0' || v < 1 || v > 64)
			return front_config_bad(
			    err, errlen, flag, "a number from 1 to 64", val);
		fc->fc_env_builds = (int)v;
	} else if (strcmp(flag, "--session-pool") == 0) {
		v = strtoull(val, &end, 10);
		if (*val < '0' || *val > '9' || *end != '\0' || v > 64)
			return front_config_bad(
			    err, errlen, flag, "a number from 0 to 64", val);
		fc->fc_session_pool = (uint32_t)v;
	} else if (strcmp(flag, "--builder-uid") == 0) {
		v = strtoull(val, &end, 10);
		if (*val < '0' || *val > '9' || *end != '\0' || v == 0 ||
		    v > 4294967294ULL)
			return front_config_bad(
			    err, errlen, flag, "a non-root uid", val);
		fc->fc_builder_uid = (long)v;
	} else
		return front_config_apply_session(fc, flag, val, err, errlen);
	return 0;
}

/* Apply one flag and its value; write a message to err on failure. */
static int
front_config_apply(struct front_config *fc, const char *flag, const char *val,
    char *err, size_t errlen)
{
	if (strcmp(flag, "--listen") == 0) {
		if (parse_hostport(val, fc->fc_host, sizeof(fc->fc_host),
		        &fc->fc_port) == -1) {
			snprintf(err, errlen,
			    "--listen: expected HOST:PORT or "
			    "[IPv6]:PORT, got '%s'",
			    val);
			return -1;
		}
	} else if (strcmp(flag, "--state-dir") == 0) {
		if (*val != '/') {
			snprintf(err, errlen,
			    "--state-dir: '%s' is not an "
			    "absolute path",
			    val);
			return -1;
		}
		free(fc->fc_state_dir);
		fc->fc_state_dir = xstrdup(val);
	} else if (strcmp(flag, "--worker") == 0) {
		free(fc->fc_worker);
		fc->fc_worker = xstrdup(val);
	} else if (strcmp(flag, "--log-level") == 0) {
		if ((fc->fc_log_level = log_parse_level(val)) == -1) {
			snprintf(err, errlen,
			    "--log-level: expected error, "
			    "warn, info or debug, got '%s'",
			    val);
			return -1;
		}
	} else
		return front_config_apply_env(fc, flag, val, err, errlen);
	return 0;
}

static const char *front_flags[] = {
    "--listen",
    "--state-dir",
    "--worker",
    "--log-level",
    "--pip-index-url",
    "--pip-extra-index-url",
    "--pip-find-links",
    "--pip-system-site-packages",
    "--pip-allow-source",
    "--pip-timeout",
    "--env-cache-dir",
    "--env-cache-size",
    "--env-builds",
    "--session-pool",
    "--builder-uid",
    "--sandbox",
    "--session-uids",
    "--session-network",
    "--session-memory",
    "--session-pids",
    "--session-cpu",
    "--session-disk",
    "--session-max-lifetime",
    "--session-idle-timeout",
    "--seccomp-log",
    "--token-file",
    "--allow-unauthenticated",
    "--tls-cert",
    "--tls-key",
    "--tls-client-ca",
    "--max-sessions",
    "--max-sessions-per-token",
    "--max-streams",
    "--max-message-size",
    "--max-header-list-size",
    "--max-value-size",
    "--max-inflight-calls",
    "--handshake-timeout",
    "--idle-timeout",
    "--max-ping-rate",
};

static int
front_config_known(const char *flag)
{
	size_t i;

	for (i = 0; i < sizeof(front_flags) / sizeof(front_flags[0]); i++)
		if (strcmp(flag, front_flags[i]) == 0)
			return 1;
	return 0;
}

/*
 * Parse argv. Flags are long only, written "--flag value" or
 * "--flag=value". Returns 0, 1 for --help, or -1 with a message in err.
 */
int
front_config_parse(
    struct front_config *fc, int argc, char **argv, char *err, size_t errlen)
{
	char flag[64];
	const char *arg, *val, *eq;
	int i;

	for (i = 1; i < argc; i++) {
		arg = argv[i];
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
			return 1;
		if (strncmp(arg, "--", 2) != 0) {
			snprintf(err, errlen, "%s: unexpected argument", arg);
			return -1;
		}
		if ((eq = strchr(arg, '=')) != NULL) {
			if ((size_t)(eq - arg) >= sizeof(flag)) {
				snprintf(
				    err, errlen, "%.40s...: unknown flag", arg);
				return -1;
			}
			memcpy(flag, arg, (size_t)(eq - arg));
			flag[eq - arg] = '\0';
			val = eq + 1;
		} else {
			if (strlen(arg) >= sizeof(flag)) {
				snprintf(
				    err, errlen, "%.40s...: unknown flag", arg);
				return -1;
			}
			strcpy(flag, arg);
			if (!front_config_known(flag)) {
				snprintf(err, errlen, "%s: unknown flag", flag);
				return -1;
			}
			if (i + 1 >= argc) {
				snprintf(
				    err, errlen, "%s: missing value", flag);
				return -1;
			}
			val = argv[++i];
		}
		if (front_config_apply(fc, flag, val, err, errlen) == -1)
			return -1;
	}
	if (fc->fc_builder_uid >= (long)fc->fc_uid_first &&
	    fc->fc_builder_uid <= (long)fc->fc_uid_last) {
		snprintf(err, errlen,
		    "--builder-uid %ld is inside "
		    "--session-uids %u-%u: builds need a uid of their own",
		    fc->fc_builder_uid, fc->fc_uid_first, fc->fc_uid_last);
		return -1;
	}
	return 0;
}
