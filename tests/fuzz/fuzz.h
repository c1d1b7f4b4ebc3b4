/* What every fuzz target shares: the libFuzzer entry points and CHECK. */
#ifndef RM_FUZZ_H
#define RM_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerInitialize(int *, char ***);
int LLVMFuzzerTestOneInput(const uint8_t *, size_t);

/* An invariant of the code under test: a failure is a finding. */
#define CHECK(c) \
	do { \
		if (!(c)) { \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, \
			    __LINE__, #c); \
			abort(); \
		} \
	} while (0)

#endif
