/*
 * Resource limits for W2 (architecture section 5, step 5). Memory, pids
 * and CPU share are the cgroup's job; these are per-process backstops.
 * RLIMIT_AS is never set: numpy and OpenBLAS reserve large address space.
 */
#include <sys/resource.h>

#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"
#include "sandbox_policy.h"

/* Seconds between SIGXCPU at the soft CPU limit and SIGKILL at the hard. */
#define RLIMIT_CPU_GRACE 2
#define RLIMIT_CPU_MAX 1000000000ULL /* seconds */

/*
 * Set one limit, soft and hard. An unprivileged process cannot raise its
 * hard limit, so a value above it is clamped to it.
 */
static int
rlimit_set(int resource, const char *name, rlim_t soft, rlim_t hard)
{
	struct rlimit rl;

	if (getrlimit(resource, &rl) == -1) {
		log_warn("%s: getrlimit %s", __func__, name);
		return -1;
	}
	if (rl.rlim_max != RLIM_INFINITY && hard > rl.rlim_max) {
		log_debug("%s: %s: hard limit %ju kept", __func__, name,
		    (uintmax_t)rl.rlim_max);
		hard = rl.rlim_max;
	}
	if (soft > hard)
		soft = hard;
	rl.rlim_cur = soft;
	rl.rlim_max = hard;
	if (setrlimit(resource, &rl) == -1) {
		log_warn(
		    "%s: setrlimit %s %ju", __func__, name, (uintmax_t)soft);
		return -1;
	}
	return 0;
}

int
sandbox_rlimits_apply(
    uint64_t nofile, uint64_t fsize_bytes, uint64_t cpu_seconds)
{
	if (rlimit_set(RLIMIT_CORE, "CORE", 0, 0) == -1)
		return -1;
	if (nofile != 0 &&
	    rlimit_set(RLIMIT_NOFILE, "NOFILE", nofile, nofile) == -1)
		return -1;
	/* Python ignores SIGXFSZ, so an over-long write fails with EFBIG. */
	if (fsize_bytes != 0 &&
	    rlimit_set(RLIMIT_FSIZE, "FSIZE", fsize_bytes, fsize_bytes) == -1)
		return -1;
	/* SIGXCPU at the limit names the cause; SIGKILL follows if caught. */
	/* The kernel counts the limit in nanoseconds, in 64 bits: a larger
	 * one would wrap there to a small one. Past 31 years, none. */
	if (cpu_seconds > RLIMIT_CPU_MAX)
		cpu_seconds = 0;
	if (cpu_seconds != 0 &&
	    rlimit_set(RLIMIT_CPU, "CPU", cpu_seconds,
	        cpu_seconds + RLIMIT_CPU_GRACE) == -1)
		return -1;
	return 0;
}

/*
 * The CPUs this process may run on (its affinity, which a cpuset or
 * systemd's AllowedCPUs= narrows), at most SANDBOX_THREADS_MAX: a thread
 * per CPU must stay well within the pids limit.
 */
static uint64_t
sandbox_usable_cpus(void)
{
	cpu_set_t set;
	long n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) == 0)
		n = CPU_COUNT(&set);
	if (n <= 0)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n <= 0)
		n = 1;
	return n > SANDBOX_THREADS_MAX ? SANDBOX_THREADS_MAX : (uint64_t)n;
}

void
sandbox_thread_env(uint32_t cpu_percent)
{
	static const char *vars[] = {
	    "OPENBLAS_NUM_THREADS",
	    "OMP_NUM_THREADS",
	    "MKL_NUM_THREADS",
	    "NUMEXPR_NUM_THREADS",
	    "NUMEXPR_MAX_THREADS",
	};
	uint64_t n;
	char buf[24];
	size_t i;

	n = ((uint64_t)cpu_percent + 99) / 100;
	if (cpu_percent == 0) /* no CPU limit: the CPUs it may run on */
		n = sandbox_usable_cpus();
	if (n < 1)
		n = 1;
	snprintf(buf, sizeof(buf), "%" PRIu64, n);
	for (i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
		if (setenv(vars[i], buf, 1) == -1)
			log_warn("%s: setenv %s", __func__, vars[i]);
}
