/*
 * secret: page-granular blocks for secrets (see secret.h). Each block starts with a header
 * page-aligned with the data: the mapping's length, so secret_free needs only the pointer.
 */
#include "auth/secret.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct secret_header {
	size_t map_len;
	size_t pad; /* keeps the data 16-byte aligned */
};

void *secret_alloc(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), len;
	struct secret_header *h;

	if (n > SIZE_MAX - sizeof(*h) - page) {
		errno = ENOMEM;
		return NULL;
	}
	len = (n + sizeof(*h) + page - 1) / page * page;
	h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (h == MAP_FAILED)
		return NULL;
	/* Out of core dumps (this one must work: it is the promise), in RAM if allowed. */
	if (madvise(h, len, MADV_DONTDUMP) != 0) {
		int e = errno;

		munmap(h, len);
		errno = e;
		return NULL;
	}
	(void)mlock(h, len);
	h->map_len = len;
	return h + 1;
}

void secret_free(void *p)
{
	struct secret_header *h;
	size_t len;

	if (!p)
		return;
	h = (struct secret_header *)p - 1;
	len = h->map_len;
	OPENSSL_cleanse(h, len);
	munlock(h, len);
	munmap(h, len);
}

bool secret_is_dontdump(const void *p)
{
	uintptr_t want = (uintptr_t)((const struct secret_header *)p - 1);
	char line[256];
	bool in = false, found = false;
	FILE *f = fopen("/proc/self/smaps", "r");

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, ' ') &&
		    line[strcspn(line, " ")] == ' ' && strchr(line, '-') < strchr(line, ' ')) {
			in = want >= lo && want < hi;
			continue;
		}
		if (in && strncmp(line, "VmFlags:", 8) == 0) {
			found = strstr(line, " dd") != NULL;
			break;
		}
	}
	fclose(f);
	return found;
}
