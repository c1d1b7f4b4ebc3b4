/* The null sandbox: confines nothing, for development and for tests. */
#include "log.h"
#include "sandbox.h"

/* Nothing to set up before the session's environment is attached. */
int
sandbox_prepare(struct sandbox_conf *sc)
{
	log_debug("%s: sandbox off: session %s is not confined", __func__,
	    sc->sc_session_id);
	return 0;
}

/* Nothing to enter: the worker keeps the front's uid and namespaces. */
int
sandbox_enter(struct sandbox_conf *sc)
{
	log_debug("%s: sandbox off: %s is writable as the front's user",
	    __func__, sc->sc_session_dir);
	return 0;
}
