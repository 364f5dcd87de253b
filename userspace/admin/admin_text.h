/*
 * admin_text: a short text a worker rewrites while the admin thread reads it, without a
 * lock on the worker's side (a sequence lock).
 *
 * For the session's current statement: the worker sets it on every Query/Parse (the data
 * path pays two fence-free stores plus the copy), the admin listing reads it and retries
 * when it raced a write, so it never shows half of one statement and half of another.
 * One writer per text. Bytes are copied with relaxed atomic accesses so the race the
 * sequence number resolves is not undefined behaviour.
 */
#ifndef PGWARDEN_ADMIN_TEXT_H
#define PGWARDEN_ADMIN_TEXT_H

#include <stddef.h>
#include <stdint.h>

#define ADMIN_TEXT_MAX 256

struct admin_text {
	uint32_t seq; /* odd while a write is in progress */
	uint32_t len;
	char buf[ADMIN_TEXT_MAX];
};

/* Writer (the owning worker only): store the first n bytes of s, cut to ADMIN_TEXT_MAX - 1. */
static inline void admin_text_set(struct admin_text *t, const char *s, size_t n)
{
	uint32_t seq = __atomic_load_n(&t->seq, __ATOMIC_RELAXED);

	if (n > ADMIN_TEXT_MAX - 1)
		n = ADMIN_TEXT_MAX - 1;
	__atomic_store_n(&t->seq, seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	for (size_t i = 0; i < n; i++)
		__atomic_store_n(&t->buf[i], s[i], __ATOMIC_RELAXED);
	__atomic_store_n(&t->len, (uint32_t)n, __ATOMIC_RELAXED);
	__atomic_store_n(&t->seq, seq + 2, __ATOMIC_RELEASE);
}

/* Reader (any thread): a consistent copy into out (NUL-terminated, n > 0). Returns its
 * length; an empty string when a writer kept racing it (a listing can show nothing rather
 * than wait). */
static inline size_t admin_text_get(const struct admin_text *t, char *out, size_t n)
{
	for (int attempt = 0; attempt < 16; attempt++) {
		uint32_t s1 = __atomic_load_n(&t->seq, __ATOMIC_ACQUIRE), s2;
		size_t len;

		if (s1 & 1)
			continue;
		len = __atomic_load_n(&t->len, __ATOMIC_RELAXED);
		if (len > n - 1)
			len = n - 1;
		if (len > ADMIN_TEXT_MAX - 1)
			len = ADMIN_TEXT_MAX - 1;
		for (size_t i = 0; i < len; i++)
			out[i] = __atomic_load_n(&t->buf[i], __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		s2 = __atomic_load_n(&t->seq, __ATOMIC_RELAXED);
		if (s1 == s2) {
			out[len] = '\0';
			return len;
		}
	}
	out[0] = '\0';
	return 0;
}

#endif
