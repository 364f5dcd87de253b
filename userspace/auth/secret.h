/*
 * secret: memory for secrets (verifiers, passwords, files that hold them): its own
 * anonymous mapping, excluded from core dumps (MADV_DONTDUMP), locked in RAM when the
 * process may (mlock, best effort: a failure is not an error), and cleansed with
 * OPENSSL_cleanse before it is unmapped. Allocations are whole pages; use it for a few
 * long-lived blocks (one per loaded file), not per session.
 */
#ifndef PGWARDEN_SECRET_H
#define PGWARDEN_SECRET_H

#include <stdbool.h>
#include <stddef.h>

/* n zeroed bytes, or NULL (errno set). */
void *secret_alloc(size_t n) __attribute__((warn_unused_result));

/* Cleanse and unmap a block from secret_alloc(); NULL is fine. */
void secret_free(void *p);

/* Was the block excluded from core dumps? (For tests: reads /proc/self/smaps.) */
bool secret_is_dontdump(const void *p);

#endif
