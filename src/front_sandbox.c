/*
 * The front's side of the sandbox: per-session uids, per-session cgroups,
 * and telling a limit that was hit from a plain death. The worker does the
 * confining itself (sandbox/), in the order of architecture section 5.
 */
#include <sys/syscall.h>
#include <sys/wait.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "front.h"
#include "log.h"
#include "util.h"

#include "sandbox.h"
#include "front_cgroup.h"

static struct cg_root front_cg;
static uint8_t *uid_used; /* one byte per uid of --session-uids */
static size_t uids_n, uids_in_use;

/*
 * Session cgroups whose processes were still dying when the session
 * ended: a timer comes back to them, so that a mass ending neither stalls
 * the loop nor leaves directories behind. Each keeps its session's uid
 * out of use until its processes are gone.
 */
struct cg_gone {
	TAILQ_ENTRY(cg_gone) cgg_entry;
	char *cgg_paths;
	long cgg_uid; /* -1: none */
	uint64_t cgg_since; /* now_ms() at the session's end */
	int cgg_warned;
};
static TAILQ_HEAD(, cg_gone) cg_going = TAILQ_HEAD_INITIALIZER(cg_going);
static struct event *cg_going_timer;
static uint64_t cg_going_ms; /* the timer's delay, doubled up to 1 s */

#define CG_GOING_WARN_MS 5000

/*
 * Several daemons may share a host's cgroup tree: this one's cgroups are
 * named "<tag>-<name>" (cg_create adds the tag), the tag a digest of its
 * state dir, so that its start-up cleanup only ever removes what an
 * earlier run of it left.
 */
static void
front_sandbox_tag(void)
{
	unsigned char dig[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	char cg_tag[16];

	EVP_Digest(front_conf.fc_state_dir, strlen(front_conf.fc_state_dir),
	    dig, &n, EVP_sha256(), NULL);
	snprintf(cg_tag, sizeof(cg_tag), "%02x%02x%02x%02x-", dig[0], dig[1],
	    dig[2], dig[3]);
	cg_set_owner(cg_tag);
}

/* At start: the sandbox needs root; find the cgroup hierarchy. */
void
front_sandbox_init(void)
{
	uids_n = (size_t)(front_conf.fc_uid_last - front_conf.fc_uid_first) + 1;
	uid_used = xcalloc(uids_n, 1);
	if (!front_conf.fc_sandbox) {
		log_warnx(
		    "*** SANDBOX OFF: sessions run unconfined, as uid %d, "
		    "with the server's files, network and privileges. For "
		    "development only. ***",
		    (int)geteuid());
		return;
	}
	if (geteuid() != 0)
		fatalx("the sandbox needs root (namespaces, cgroups and a uid "
		       "per session): run as root, or pass --sandbox off for "
		       "development");
	if (cg_discover(&front_cg, "/sys/fs/cgroup", "/proc/self/cgroup") == -1)
		log_warnx("cgroups unusable: sessions get no memory, pids or "
		          "CPU limits");
	front_sandbox_tag();
	cg_cleanup_stale(&front_cg);
}

/* The lowest free uid of the range; -1 when all are in use. */
static long
uid_alloc(void)
{
	size_t i;

	if (uids_in_use == uids_n)
		return -1;
	for (i = 0; uid_used[i]; i++)
		;
	uid_used[i] = 1;
	uids_in_use++;
	return (long)(front_conf.fc_uid_first + i);
}

/* How many uids of --session-uids are free (all of them without sandbox). */
size_t
front_sandbox_uids_free(void)
{
	return uids_n - uids_in_use;
}

static void
uid_free(long uid)
{
	if (uid >= (long)front_conf.fc_uid_first &&
	    uid <= (long)front_conf.fc_uid_last &&
	    uid_used[uid - (long)front_conf.fc_uid_first]) {
		uid_used[uid - (long)front_conf.fc_uid_first] = 0;
		uids_in_use--;
	}
}

/*
 * Before the worker starts: a uid of its own and a cgroup with the
 * session's limits. Returns 0, or a gRPC status with a message in err:
 * RESOURCE_EXHAUSTED when every uid of --session-uids is in use.
 */
int
front_sandbox_session_start(struct session *ses, char *err, size_t errlen)
{
	struct cg_limits lim;
	char paths[4096], name[64];

	if (!front_conf.fc_sandbox) {
		log_warnx("*** SANDBOX OFF: session %s runs unconfined ***",
		    ses->ses_id);
		return 0;
	}
	snprintf(name, sizeof(name), "%s", ses->ses_id);
	if ((ses->ses_uid = uid_alloc()) == -1) {
		snprintf(err, errlen,
		    "no free session uid in %u-%u "
		    "(--session-uids)",
		    front_conf.fc_uid_first, front_conf.fc_uid_last);
		return GRPC_RESOURCE_EXHAUSTED;
	}
	lim.memory_bytes = front_conf.fc_session_memory;
	lim.pids = front_conf.fc_session_pids;
	lim.cpu_percent = front_conf.fc_session_cpu;
	if (cg_create(&front_cg, name, &lim, paths, sizeof(paths)) == -1) {
		snprintf(err, errlen, "cannot create the session's cgroup");
		uid_free(ses->ses_uid);
		ses->ses_uid = -1;
		return GRPC_UNAVAILABLE;
	}
	ses->ses_cgroup = xstrdup(paths);
	return 0;
}

/*
 * The CG_C_* limits that a session's cgroup enforces, none unsandboxed:
 * Init.cgroup_limits, whose bits worker.proto gives.
 */
unsigned int
front_sandbox_controllers(void)
{
	_Static_assert(CG_C_MEMORY == 1 && CG_C_PIDS == 2 && CG_C_CPU == 4,
	    "the bits of Init.cgroup_limits");
	unsigned int ctl = front_cg.cr_controllers;

	if (front_conf.fc_session_cpu == 0)
		ctl &= ~CG_C_CPU; /* no limit: none to report */
	return front_conf.fc_sandbox ? ctl : 0;
}

/* A cgroup for an environment build: the builder joins it first. */
char *
front_sandbox_build_cgroup(const char *key)
{
	struct cg_limits lim;
	char name[64], paths[4096];

	if (!front_conf.fc_sandbox)
		return NULL;
	snprintf(name, sizeof(name), "build-%.16s", key);
	lim.memory_bytes = front_conf.fc_session_memory;
	lim.pids = 256;
	lim.cpu_percent = 100;
	if (cg_create(&front_cg, name, &lim, paths, sizeof(paths)) == -1) {
		log_warn("environment build %.16s: no cgroup", key);
		return NULL;
	}
	return xstrdup(paths);
}

void
front_sandbox_cgroup_destroy(char *paths)
{
	if (paths == NULL)
		return;
	cg_destroy(paths);
	free(paths);
}

static void cg_going_cb(evutil_socket_t, short, void *);

static void
cg_going_free(struct cg_gone *g)
{
	TAILQ_REMOVE(&cg_going, g, cgg_entry);
	if (g->cgg_uid != -1)
		uid_free(g->cgg_uid);
	free(g->cgg_paths);
	free(g);
}

/* Come back to the cgroups still going, later each time. */
static void
cg_going_arm(void)
{
	if (cg_going_timer == NULL)
		cg_going_timer = evtimer_new(front_base, cg_going_cb, NULL);
	cg_going_ms = cg_going_ms == 0 ? 5 : cg_going_ms * 2;
	if (cg_going_ms > 1000)
		cg_going_ms = 1000;
	front_timer_add(cg_going_timer, cg_going_ms);
}

static void
cg_going_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct cg_gone *g, *tmp;
	uint64_t now = now_ms();
	int freed = 0;

	TAILQ_FOREACH_SAFE (g, &cg_going, cgg_entry, tmp) {
		if (cg_destroy_try(g->cgg_paths, 0) != 1) {
			freed |= g->cgg_uid != -1;
			cg_going_free(g);
			continue;
		}
		if (!g->cgg_warned && now - g->cgg_since >= CG_GOING_WARN_MS) {
			g->cgg_warned = 1;
			log_warnx(
			    "cgroup %s: processes still there %llu ms after "
			    "the session ended; trying again (uid %ld "
			    "stays out of use)",
			    g->cgg_paths,
			    (unsigned long long)(now - g->cgg_since),
			    g->cgg_uid);
		}
	}
	if (TAILQ_EMPTY(&cg_going))
		cg_going_ms = 0;
	else
		cg_going_arm();
	if (freed) /* the pool may have waited for a uid */
		front_pool_poke();
}

/*
 * After the worker is reaped: nothing of the session's stays behind. What
 * is left in its cgroup is killed, and the directories removed at once,
 * or, while those processes die, from a timer (their uid with them).
 */
void
front_sandbox_session_end(struct session *ses)
{
	struct cg_gone *g;

	if (ses->ses_cgroup != NULL) {
		if (cg_destroy_try(ses->ses_cgroup, 1) == 1) {
			g = xcalloc(1, sizeof(*g));
			g->cgg_paths = ses->ses_cgroup;
			g->cgg_uid = ses->ses_uid;
			g->cgg_since = now_ms();
			TAILQ_INSERT_TAIL(&cg_going, g, cgg_entry);
			if (cg_going_ms == 0)
				cg_going_arm();
			ses->ses_uid = -1;
		} else
			free(ses->ses_cgroup);
		ses->ses_cgroup = NULL;
	}
	if (ses->ses_uid != -1) {
		uid_free(ses->ses_uid);
		ses->ses_uid = -1;
	}
}

/* As the front exits: wait for the cgroups still going (a bounded while). */
void
front_sandbox_flush(void)
{
	struct cg_gone *g;

	while ((g = TAILQ_FIRST(&cg_going)) != NULL) {
		(void)cg_destroy(g->cgg_paths);
		cg_going_free(g);
	}
	if (cg_going_timer != NULL) {
		event_free(cg_going_timer);
		cg_going_timer = NULL;
	}
}

/* Format a size in the units people read: 512 MiB, 1 GiB. */
static void
front_sandbox_size(uint64_t v, char *buf, size_t len)
{
	if (v % (1024ULL * 1024 * 1024) == 0)
		snprintf(buf, len, "%llu GiB", (unsigned long long)(v >> 30));
	else
		snprintf(buf, len, "%llu MiB", (unsigned long long)(v >> 20));
}

/* The message for a limit in bytes: "memory limit 1 GiB reached (FLAG)". */
static char *
front_sandbox_size_hit(const char *what, uint64_t v, const char *flag)
{
	char buf[160], size[32];

	front_sandbox_size(v, size, sizeof(size));
	snprintf(
	    buf, sizeof(buf), "%s limit %s reached (%s)", what, size, flag);
	return xstrdup(buf);
}

/*
 * Did the worker die because it hit a limit? Returns a message naming the
 * limit (to end the session with RESOURCE_EXHAUSTED), or NULL.
 */
char *
front_sandbox_limit_hit(struct session *ses, int wstatus)
{
	if (ses->ses_cgroup != NULL && cg_oom_killed(ses->ses_cgroup) == 1)
		return front_sandbox_size_hit(
		    "memory", front_conf.fc_session_memory, "--session-memory");
	if (WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGXCPU)
		return xstrdup("CPU time limit reached");
	if (WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGXFSZ)
		return front_sandbox_size_hit(
		    "file size", front_conf.fc_session_disk, "--session-disk");
	return NULL;
}

/* The kernel's Landlock ABI version, or 0 without Landlock. */
static int
landlock_abi(void)
{
#ifdef SYS_landlock_create_ruleset
	long v = syscall(SYS_landlock_create_ruleset, NULL, 0, 1U << 0);

	return v > 0 ? (int)v : 0;
#else
	return 0;
#endif
}

/*
 * The confinement sessions get, one line per mechanism (rmctl info); none
 * with --sandbox off. Returns the number of lines written.
 */
int
front_sandbox_describe(char lines[][160], int max)
{
	static const char *nets[] = {"off (loopback only)",
	    "isolated (own namespace, slirp4netns)", "the host's"};
	char mem[32], disk[32], cpu[32];
	int n = 0, abi = landlock_abi();

	if (!front_conf.fc_sandbox || max < 7)
		return 0;
	if (front_conf.fc_session_cpu == 0)
		snprintf(cpu, sizeof(cpu), "no limit");
	else
		snprintf(cpu, sizeof(cpu), "%u%%", front_conf.fc_session_cpu);
	front_sandbox_size(front_conf.fc_session_memory, mem, sizeof(mem));
	front_sandbox_size(front_conf.fc_session_disk, disk, sizeof(disk));
	snprintf(lines[n++], 160, "uids: one per session from %u-%u",
	    front_conf.fc_uid_first, front_conf.fc_uid_last);
	snprintf(lines[n++], 160, "namespaces: mount, pid, ipc, uts, cgroup%s",
	    front_conf.fc_network == 2 ? "" : ", net");
	snprintf(
	    lines[n++], 160, "network: %s", nets[front_conf.fc_network % 3]);
	if (front_cg.cr_version == CG_NONE)
		snprintf(lines[n++], 160, "cgroups: none usable");
	else
		snprintf(lines[n++], 160,
		    "cgroup %s: memory %s%s, pids %u, cpu %s",
		    front_cg.cr_version == CG_V2 ? "v2" : "v1",
		    (front_cg.cr_controllers & CG_C_MEMORY) ? mem : "(none)",
		    (front_cg.cr_controllers & CG_C_SWAP) ? " (swap too)" : "",
		    front_conf.fc_session_pids, cpu);
	snprintf(lines[n++], 160,
	    "rlimits: nofile %d, fsize %s, core 0, cpu from the lifetime",
	    SANDBOX_NOFILE, disk);
	if (abi > 0)
		snprintf(lines[n++], 160,
		    "landlock: ABI %d, writes only to the session directory, "
		    "/tmp and /dev/shm",
		    abi);
	else
		snprintf(lines[n++], 160, "landlock: not in this kernel");
	snprintf(lines[n++], 160, "seccomp: %s on a denied system call",
	    front_conf.fc_seccomp_log ? "log" : "kill the worker");
	return n;
}
