/*
 * The sandbox's confinement mechanisms, applied by sandbox_enter() in W2
 * (sandbox.h) in this order: rlimits, Landlock and, last, seccomp.
 */
#ifndef RM_SANDBOX_POLICY_H
#define RM_SANDBOX_POLICY_H

#include <stddef.h>
#include <stdint.h>

/*
 * sandbox_seccomp.c: the syscall allow-list, loaded last. A violation
 * kills the process with SIGSYS; with status_fd >= 0 the SIGSYS handler
 * first writes "seccomp <nr>\n" there and names the syscall on fd 2.
 * log_only logs violations (SCMP_ACT_LOG) instead. Returns 0 or -1.
 */
int sandbox_seccomp_load(int log_only, int status_fd);

/* A syscall's name for messages, or "syscall N" (thread-local) if unknown. */
const char *sandbox_seccomp_name(int nr);

/*
 * sandbox_landlock.c: a second wall. Writes are allowed only beneath the
 * writable directories (and to a few /dev files); reads and execution only
 * beneath those, the readable paths, the Python installation, and the
 * system's commands, libraries and a few data trees. Pass every writable
 * mount: the session dir, /tmp and, if the minimal root has one, /dev/shm
 * (sem_open and joblib write there); and as readable the environment.
 */
int sandbox_landlock_abi(void); /* kernel ABI, 0 if none */
extern int (*sandbox_landlock_abi_hook)(void); /* tests replace the query */
uint64_t sandbox_landlock_fs_access(int abi); /* handled_access_fs */
/* Returns the ABI used (0: unsupported, skipped with a log line), or -1. */
int sandbox_landlock_apply(const char *const *writable, size_t n,
    const char *const *readable, size_t nr);

/*
 * sandbox_rlimit.c: NOFILE, FSIZE, CORE=0 and a CPU backstop; 0 leaves a
 * limit as it is (CORE is always 0). Never RLIMIT_AS. Returns 0 or -1.
 */
int sandbox_rlimits_apply(
    uint64_t nofile, uint64_t fsize_bytes, uint64_t cpu_seconds);
/*
 * OPENBLAS_, OMP_, MKL_ and NUMEXPR_NUM_THREADS (and NUMEXPR_MAX_THREADS)
 * from the CPU limit: max(1, ceil(cpu_percent / 100)), overriding; with
 * no limit (0), the CPUs the process may run on, at most
 * SANDBOX_THREADS_MAX (64, as --session-cpu's 6400 gives).
 */
#define SANDBOX_THREADS_MAX 64
void sandbox_thread_env(uint32_t cpu_percent);

/*
 * sandbox_egress.c: the nftables ruleset of an isolated session from the
 * allow and deny CIDRs and the host's addresses (NULL if one is not a
 * CIDR), and its loading inside the session's network namespace.
 */
char *sandbox_egress_ruleset(const char *const *allow, size_t nallow,
    const char *const *deny, size_t ndeny, const char *const *host,
    size_t nhost);
int sandbox_egress_apply(const char *rules);

#endif
