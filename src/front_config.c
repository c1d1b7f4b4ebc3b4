/* The front's command-line flags (architecture section 9). */
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
	    "(default info)\n");
}

/* Apply one flag and its value; write a message to err on failure. */
static int
front_config_apply(struct front_config *fc, const char *flag, const char *val,
    char *err, size_t errlen)
{
	if (strcmp(flag, "--listen") == 0) {
		if (parse_hostport(val, fc->fc_host, sizeof(fc->fc_host),
		    &fc->fc_port) == -1) {
			snprintf(err, errlen, "--listen: expected HOST:PORT or "
			    "[IPv6]:PORT, got '%s'", val);
			return -1;
		}
	} else if (strcmp(flag, "--state-dir") == 0) {
		if (*val != '/') {
			snprintf(err, errlen, "--state-dir: '%s' is not an "
			    "absolute path", val);
			return -1;
		}
		free(fc->fc_state_dir);
		fc->fc_state_dir = xstrdup(val);
	} else if (strcmp(flag, "--worker") == 0) {
		free(fc->fc_worker);
		fc->fc_worker = xstrdup(val);
	} else if (strcmp(flag, "--log-level") == 0) {
		if ((fc->fc_log_level = log_parse_level(val)) == -1) {
			snprintf(err, errlen, "--log-level: expected error, "
			    "warn, info or debug, got '%s'", val);
			return -1;
		}
	} else {
		snprintf(err, errlen, "%s: unknown flag", flag);
		return -1;
	}
	return 0;
}

static const char *front_flags[] = {
	"--listen", "--state-dir", "--worker", "--log-level",
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
front_config_parse(struct front_config *fc, int argc, char **argv, char *err,
    size_t errlen)
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
				snprintf(err, errlen, "%.40s...: unknown flag",
				    arg);
				return -1;
			}
			memcpy(flag, arg, (size_t)(eq - arg));
			flag[eq - arg] = '\0';
			val = eq + 1;
		} else {
			if (strlen(arg) >= sizeof(flag)) {
				snprintf(err, errlen, "%.40s...: unknown flag",
				    arg);
				return -1;
			}
			strcpy(flag, arg);
			if (!front_config_known(flag)) {
				snprintf(err, errlen, "%s: unknown flag", flag);
				return -1;
			}
			if (i + 1 >= argc) {
				snprintf(err, errlen, "%s: missing value",
				    flag);
				return -1;
			}
			val = argv[++i];
		}
		if (front_config_apply(fc, flag, val, err, errlen) == -1)
			return -1;
	}
	return 0;
}
