/*
 * rand_pool: random bytes for what every session draws (its id, its cancel key), taken
 * from OpenSSL's CSPRNG a block at a time into a pool per thread. A RAND_bytes() call
 * costs about 6,600 instructions and a getpid() (OpenSSL's fork check) whatever its size;
 * two per session were a sixth of the relay's own instructions per session.
 *
 * Each byte is handed out once and wiped from the pool as it goes. Nothing else changes:
 * the bytes are OpenSSL's. The process forks only to exec (relay/handover.c), so no child
 * draws from a copy of a pool.
 */
#ifndef PGWARDEN_RAND_POOL_H
#define PGWARDEN_RAND_POOL_H

#include <stddef.h>

/* Fill out[0..n) with random bytes: 0, or -EIO when OpenSSL's generator failed. */
int rand_pool_bytes(void *out, size_t n) __attribute__((warn_unused_result));

#endif
