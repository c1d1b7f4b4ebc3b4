/*
 * The worker's sandbox behind a two-call interface, so that it can be
 * tested alone and switched off for development. sandbox_prepare runs
 * first (cgroup, environment), sandbox_enter last (namespaces, identity,
 * rlimits, landlock, seccomp). This tree only has the null backend.
 */
#ifndef RM_SANDBOX_H
#define RM_SANDBOX_H

/* What the sandbox needs to know about the session. */
struct sandbox_conf {
	const char *sc_session_id;
	const char *sc_session_dir;
};

int sandbox_prepare(const struct sandbox_conf *);
int sandbox_enter(const struct sandbox_conf *);

#endif
