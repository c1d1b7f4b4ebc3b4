/* Unit tests for mem_release (util.c): the stack's pages below the call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util.h"

#define DEPTH 64 /* frames of deep() */
#define FRAME 4096 /* bytes each frame fills */

/* Kilobytes of the [stack] mapping that are in memory (smaps' Rss). */
static long
stack_rss_kib(void)
{
	char line[256];
	unsigned long lo, hi;
	long kib = -1;
	int in_stack = 0;
	FILE *f;

	if ((f = fopen("/proc/self/smaps", "re")) == NULL)
		fail_msg("cannot read /proc/self/smaps");
	while (fgets(line, sizeof(line), f) != NULL) {
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			in_stack = strstr(line, "[stack]") != NULL;
		else if (in_stack && sscanf(line, "Rss: %ld kB", &kib) == 1)
			break;
	}
	fclose(f);
	return kib;
}

/*
 * Fill FRAME bytes a frame, DEPTH frames down, and check on the way back up
 * that each frame still holds what it wrote: a sum of them all.
 */
static __attribute__((noinline)) unsigned long
deep(int n)
{
	volatile unsigned char buf[FRAME];
	unsigned long sum = 0;
	size_t i;

	for (i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(n + i);
	if (n > 0)
		sum = deep(n - 1);
	for (i = 0; i < sizeof(buf); i++)
		sum += buf[i];
	return sum;
}

/* What deep(depth) sums when every frame kept what it wrote. */
static unsigned long
deep_expected(int depth)
{
	unsigned long sum = 0;
	size_t i;
	int n;

	for (n = 0; n <= depth; n++)
		for (i = 0; i < FRAME; i++)
			sum += (unsigned char)(n + i);
	return sum;
}

/* A stack that went deep is given back, and works as before after it. */
static void
test_stack_given_back(void **state)
{
	long deep_kib, after_kib;

	(void)state;
	assert_int_equal(deep(DEPTH), deep_expected(DEPTH));
	deep_kib = stack_rss_kib();
	assert_true(deep_kib >= DEPTH * FRAME / 1024);
	mem_release();
	after_kib = stack_rss_kib();
	assert_true(after_kib >= 0);
	assert_true(after_kib <= deep_kib - DEPTH * FRAME / 1024 / 2);
	/* The pages come back as zeros, and a frame keeps what it writes. */
	assert_int_equal(deep(DEPTH), deep_expected(DEPTH));
	mem_release();
	assert_int_equal(deep(DEPTH / 2), deep_expected(DEPTH / 2));
	assert_int_equal(deep(DEPTH), deep_expected(DEPTH));
}

/* The caller's own frame, and those above it, are untouched. */
static __attribute__((noinline)) void
release_under(volatile unsigned char *mine, size_t len)
{
	mem_release();
	for (size_t i = 0; i < len; i++)
		assert_int_equal(mine[i], (unsigned char)(i * 7));
}

static void
test_callers_frames_kept(void **state)
{
	volatile unsigned char mine[3 * 4096];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(mine); i++)
		mine[i] = (unsigned char)(i * 7);
	assert_int_equal(deep(DEPTH), deep_expected(DEPTH));
	release_under(mine, sizeof(mine));
	mem_release();
	for (i = 0; i < sizeof(mine); i++)
		assert_int_equal(mine[i], (unsigned char)(i * 7));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_stack_given_back),
	    cmocka_unit_test(test_callers_frames_kept),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
