/*
 * The fake of front_h2.c, for the programs that link front_metrics.c
 * without it: no client connections.
 */
#include "front.h"

unsigned
front_h2_conns(void)
{
	return 0;
}
