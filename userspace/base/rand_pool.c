/* rand_pool: per-thread pool of CSPRNG bytes (see rand_pool.h). */
#include "base/rand_pool.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <string.h>

#define RAND_POOL_SIZE 256        /* a refill serves about a dozen sessions */
#define RAND_POOL_MAX_TAKE 64     /* larger requests go to OpenSSL directly */

struct rand_pool {
	uint8_t bytes[RAND_POOL_SIZE];
	size_t left; /* bytes[0..left) are unused; the rest were handed out and wiped */
};

static __thread struct rand_pool pool;

int rand_pool_bytes(void *out, size_t n)
{
	struct rand_pool *p = &pool;

	if (n > RAND_POOL_MAX_TAKE)
		return RAND_bytes(out, (int)n) == 1 ? 0 : -EIO;
	if (p->left < n) {
		if (RAND_bytes(p->bytes, sizeof(p->bytes)) != 1) {
			OPENSSL_cleanse(p->bytes, sizeof(p->bytes));
			p->left = 0;
			return -EIO;
		}
		p->left = sizeof(p->bytes);
	}
	p->left -= n;
	memcpy(out, p->bytes + p->left, n);
	OPENSSL_cleanse(p->bytes + p->left, n);
	return 0;
}
