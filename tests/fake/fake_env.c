/*
 * The fake of front_env.c: the canonical requirements decide. A name with
 * "broken" fails to install, one with "slow" keeps the session installing
 * until fake_env_done(), and anything else is ready at once. A session
 * attached holds an entry of its own, with its requirements, until it
 * releases it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "front.h"
#include "req.h"
#include "util.h"

#include "fake.h"

#define FAKE_WAITERS 16 /* sessions waiting for an environment */

/* The fake's own entry: what a session's environment holds here. */
struct env {
	struct req_list env_reqs;
	int env_refs;
};

const struct req_list *
front_env_reqs(const struct env *e)
{
	return &e->env_reqs;
}

static struct session *fake_waiters[FAKE_WAITERS];

static void
fake_env_hold(struct session *ses, const struct req_list *reqs)
{
	ses->ses_env = xcalloc(1, sizeof(*ses->ses_env));
	req_list_copy(&ses->ses_env->env_reqs, reqs);
	ses->ses_env->env_refs = 1;
}

/* The first requirement whose text holds word, or NULL. */
static const char *
fake_env_find(const struct req_list *reqs, const char *word)
{
	size_t i;

	for (i = 0; i < reqs->rl_n; i++)
		if (strstr(reqs->rl_v[i], word) != NULL)
			return reqs->rl_v[i];
	return NULL;
}

int
front_env_attach(
    struct session *ses, const struct req_list *reqs, const char **why)
{
	static char msg[600];
	const char *broken;
	int i;

	if ((broken = fake_env_find(reqs, "broken")) != NULL) {
		snprintf(msg, sizeof(msg),
		    "Failed to install %s: pip failed (fake)", broken);
		*why = msg;
		return -1;
	}
	if (fake_env_find(reqs, "slow") == NULL) {
		fake_env_hold(ses, reqs);
		return 1;
	}
	for (i = 0; i < FAKE_WAITERS; i++) {
		if (fake_waiters[i] == NULL) {
			fake_waiters[i] = ses;
			fake_env_hold(ses, reqs);
			return 0;
		}
	}
	*why = "too many installs (fake)";
	return -1;
}

void
front_env_release(struct session *ses)
{
	int i;

	if (ses->ses_env != NULL) {
		fake.fk_env_released++;
		req_list_free(&ses->ses_env->env_reqs);
		free(ses->ses_env);
	}
	ses->ses_env = NULL;
	for (i = 0; i < FAKE_WAITERS; i++)
		if (fake_waiters[i] == ses)
			fake_waiters[i] = NULL;
}

/* The builds of the waiting sessions report a line of pip's output. */
void
fake_env_progress(void)
{
	int i;

	for (i = 0; i < FAKE_WAITERS; i++)
		if (fake_waiters[i] != NULL)
			front_session_progress(fake_waiters[i], 1, "slowpkg",
			    "Collecting slowpkg");
}

/*
 * The builds end, well or not. A session may free itself when told, so
 * each is taken off the list first.
 */
void
fake_env_done(int ok)
{
	struct session *ses;
	int i;

	for (i = 0; i < FAKE_WAITERS; i++) {
		if ((ses = fake_waiters[i]) == NULL)
			continue;
		fake_waiters[i] = NULL;
		if (ok)
			front_session_env_ready(ses);
		else
			front_session_env_failed(ses, "pip failed (fake)");
	}
}

/* For the Admin service's Info. */
const char *
front_python_version(void)
{
	return "3.11";
}
