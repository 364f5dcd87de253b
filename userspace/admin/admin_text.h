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
#define ADMIN_NAME_MAX 64 /* a name: a policy rule's (POLICY_NAME_MAX + 1) */

/* A statement's start. */
struct admin_text {
	uint32_t seq; /* odd while a write is in progress */
	uint32_t len;
	char buf[ADMIN_TEXT_MAX];
};

/* The same for a short name, which an idle session should not pay 256 bytes for. */
struct admin_name {
	uint32_t seq;
	uint32_t len;
	char buf[ADMIN_NAME_MAX];
};

/* Writer (the owning worker only): store the first n bytes of s, cut to the text's size - 1.
 * t: a struct admin_text or admin_name. */
#define admin_text_set(t, s, n) admin_text_store(&(t)->seq, &(t)->len, (t)->buf, sizeof((t)->buf), s, n)

/* Reader (any thread): a consistent copy into out (NUL-terminated, n > 0). Returns its
 * length; an empty string when a writer kept racing it (a listing can show nothing rather
 * than wait). */
#define admin_text_get(t, out, n) admin_text_load(&(t)->seq, &(t)->len, (t)->buf, sizeof((t)->buf), out, n)

static inline void admin_text_store(uint32_t *seqp, uint32_t *lenp, char *buf, size_t cap,
				    const char *s, size_t n)
{
	uint32_t seq = __atomic_load_n(seqp, __ATOMIC_RELAXED);

	if (n > cap - 1)
		n = cap - 1;
	__atomic_store_n(seqp, seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	for (size_t i = 0; i < n; i++)
		__atomic_store_n(&buf[i], s[i], __ATOMIC_RELAXED);
	__atomic_store_n(lenp, (uint32_t)n, __ATOMIC_RELAXED);
	__atomic_store_n(seqp, seq + 2, __ATOMIC_RELEASE);
}

static inline size_t admin_text_load(const uint32_t *seqp, const uint32_t *lenp,
				     const char *buf, size_t cap, char *out, size_t n)
{
	for (int attempt = 0; attempt < 16; attempt++) {
		uint32_t s1 = __atomic_load_n(seqp, __ATOMIC_ACQUIRE), s2;
		size_t len;

		if (s1 & 1)
			continue;
		len = __atomic_load_n(lenp, __ATOMIC_RELAXED);
		if (len > n - 1)
			len = n - 1;
		if (len > cap - 1)
			len = cap - 1;
		for (size_t i = 0; i < len; i++)
			out[i] = __atomic_load_n(&buf[i], __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		s2 = __atomic_load_n(seqp, __ATOMIC_RELAXED);
		if (s1 == s2) {
			out[len] = '\0';
			return len;
		}
	}
	out[0] = '\0';
	return 0;
}

#endif
