/*
 * The fake of front_session.c, as front_env.c calls it: a build's progress
 * is counted, and its outcome goes to the hook for each waiting session.
 */
#include "front.h"

#include "fake.h"

void
front_session_env_ready(struct session *ses)
{
	if (fake.fk_on_env != NULL)
		fake.fk_on_env(ses, NULL);
}

void
front_session_env_failed(struct session *ses, const char *msg)
{
	if (fake.fk_on_env != NULL)
		fake.fk_on_env(ses, msg != NULL ? msg : "");
}

void
front_session_progress(
    struct session *ses, int stage, const char *pkg, const char *line)
{
	fake.fk_env_progress++;
}

/* For the metrics' sessions gauge. */
int
front_session_count(void)
{
	return 0;
}
