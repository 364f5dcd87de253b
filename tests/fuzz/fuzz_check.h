/*
 * fuzz_check: what every fuzz target shares. CHECK aborts on a broken invariant, which
 * libFuzzer reports with the input that broke it; a plain assert() would vanish under
 * NDEBUG.
 */
#ifndef PGWARDEN_FUZZ_CHECK_H
#define PGWARDEN_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(cond)                                                                       \
	do {                                                                              \
		if (!(cond)) {                                                            \
			fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, \
				__LINE__);                                                \
			abort();                                                          \
		}                                                                         \
	} while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
