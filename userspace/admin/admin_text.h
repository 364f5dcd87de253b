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

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ADMIN_TEXT_MAX 256
#define ADMIN_NAME_MAX 64 /* a name: a policy rule's (POLICY_NAME_MAX + 1) */

/* The bytes are held and copied a word at a time: the data path writes a statement's start
 * for every Query, and a byte at a time that cost more than classifying it. */
typedef uint64_t __attribute__((may_alias)) admin_word;

/* A statement's start. */
struct admin_text {
	uint32_t seq; /* odd while a write is in progress */
	uint32_t len;
	admin_word buf[ADMIN_TEXT_MAX / sizeof(admin_word)];
};

/* The same for a short name, which an idle session should not pay 256 bytes for. */
struct admin_name {
	uint32_t seq;
	uint32_t len;
	admin_word buf[ADMIN_NAME_MAX / sizeof(admin_word)];
};

/* Writer (the owning worker only): store the first n bytes of s, cut to the text's size - 1.
 * t: a struct admin_text or admin_name. */
#define admin_text_set(t, s, n) admin_text_store(&(t)->seq, &(t)->len, (t)->buf, sizeof((t)->buf), s, n)

/* Writer (the owning worker only): does t hold the first n bytes of s, as admin_text_set
 * would store them? Read in place: no other thread writes t, so it needs no sequence. */
#define admin_text_holds(t, s, n) admin_text_equal(&(t)->len, (t)->buf, sizeof((t)->buf), s, n)

/* Reader (any thread): a consistent copy into out (NUL-terminated, n > 0). Returns its
 * length; an empty string when a writer kept racing it (a listing can show nothing rather
 * than wait). */
#define admin_text_get(t, out, n) admin_text_load(&(t)->seq, &(t)->len, (t)->buf, sizeof((t)->buf), out, n)

static inline void admin_text_store(uint32_t *seqp, uint32_t *lenp, admin_word *buf, size_t cap,
				    const char *s, size_t n)
{
	uint32_t seq = __atomic_load_n(seqp, __ATOMIC_RELAXED);
	size_t i = 0;
	admin_word w;

	if (n > cap - 1)
		n = cap - 1;
	__atomic_store_n(seqp, seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	for (; i + sizeof(w) <= n; i += sizeof(w)) {
		memcpy(&w, s + i, sizeof(w));
		__atomic_store_n(&buf[i / sizeof(w)], w, __ATOMIC_RELAXED);
	}
	if (i < n) { /* the last bytes, never read past s + n */
		w = 0;
		for (size_t k = 0; i + k < n; k++)
			((unsigned char *)&w)[k] = (unsigned char)s[i + k];
		__atomic_store_n(&buf[i / sizeof(w)], w, __ATOMIC_RELAXED);
	}
	__atomic_store_n(lenp, (uint32_t)n, __ATOMIC_RELAXED);
	__atomic_store_n(seqp, seq + 2, __ATOMIC_RELEASE);
}

static inline bool admin_text_equal(const uint32_t *lenp, const admin_word *buf, size_t cap,
				    const char *s, size_t n)
{
	if (n > cap - 1)
		n = cap - 1;
	return __atomic_load_n(lenp, __ATOMIC_RELAXED) == n && memcmp(buf, s, n) == 0;
}

static inline size_t admin_text_load(const uint32_t *seqp, const uint32_t *lenp,
				     const admin_word *buf, size_t cap, char *out, size_t n)
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
		for (size_t i = 0; i < len; i += sizeof(admin_word)) {
			admin_word w = __atomic_load_n(&buf[i / sizeof(w)], __ATOMIC_RELAXED);

			memcpy(out + i, &w, len - i < sizeof(w) ? len - i : sizeof(w));
		}
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
