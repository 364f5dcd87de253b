/*
 * lockout: failed logins counted per user and per source address; after `failures` of them
 * within `window` the user (or the source) is locked for `duration` (defaults follow
 * PCI DSS 8.3.4: 10 failures, 30 minutes).
 *
 * The window starts at the first failure of a run and is fixed (not sliding): a run of
 * failures older than the window is forgotten when the next one comes. A success clears
 * the user's run, never the source's (an attacker holding one good password must not be
 * able to reset the count of its guesses at others). Failures while locked are counted
 * and logged but do not extend the lock (a lock an attacker can extend forever is a denial
 * of service on the real user). The caller makes a locked login fail exactly like a wrong
 * password (same exchange, same 28P01): the lock is no oracle.
 *
 * Memory is bounded: at most max_entries users and sources together; a new one evicts the
 * least recently failed entry that is not locked (looking at the oldest 64), or, if all of
 * those are locked, the oldest lock (logged: the table is too small for the attack).
 *
 * Thread-safe: one mutex; workers call it at login start (two lookups) and on each failure,
 * the admin thread for unlock and listings. Lookups are O(log n) (a balanced tree), so a
 * flood of distinct names costs no more than any other.
 *
 * Logging (base/log.h, peer values through log_kv_str): event=auth_failure per failure
 * (user, source, counts), event=auth_lockout when a user or source becomes locked,
 * event=auth_lockout_evicted, event=auth_unlock.
 */
#ifndef PGWARDEN_LOCKOUT_H
#define PGWARDEN_LOCKOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LOCKOUT_KEY_MAX 64 /* user names are < 64 bytes; addresses shorter */

struct lockout_params {
	uint32_t failures;    /* 0: lockout off (failures are still logged) */
	uint64_t window_ms;
	uint64_t duration_ms;
	uint32_t max_entries;
};

struct lockout;

struct lockout *lockout_new(const struct lockout_params *p);
void lockout_free(struct lockout *l);

/* The limits in force (for the audit record of a lockout). */
void lockout_params_get(struct lockout *l, struct lockout_params *p);

/* New limits (a reload); existing counts and locks stay. */
void lockout_set_params(struct lockout *l, const struct lockout_params *p);

/* Is user or source locked at now_ms (monotonic)? Either may be NULL. */
bool lockout_is_locked(struct lockout *l, const char *user, const char *source, uint64_t now_ms);

enum lockout_result {
	LOCKOUT_NONE = 0,
	LOCKOUT_USER_LOCKED = 1,   /* this failure locked the user */
	LOCKOUT_SOURCE_LOCKED = 2, /* this failure locked the source */
};

/* Count one failed login (logged). Returns what became locked (bits). session may be NULL. */
int lockout_record_failure(struct lockout *l, const char *user, const char *source,
			   const char *session, uint64_t now_ms);

/* A successful login: clears the user's run. */
void lockout_record_success(struct lockout *l, const char *user);

#define LOCKOUT_CLEARED_USER 1
#define LOCKOUT_CLEARED_SOURCE 2
/* Forget name as a user and as a source (counts and lock). Returns the bits of what was
 * there, 0 when nothing was. Logged. */
int lockout_unlock(struct lockout *l, const char *name);

struct lockout_entry {
	bool is_source;
	char name[LOCKOUT_KEY_MAX + 1];
	uint32_t failures;      /* in the current window */
	bool locked;
	uint64_t locked_for_ms; /* remaining */
};

/* Call fn for every entry with a count or a lock (under the lock: fn must not call back).
 * Returns how many. */
size_t lockout_each(struct lockout *l, uint64_t now_ms,
		    void (*fn)(const struct lockout_entry *, void *), void *arg);

size_t lockout_size(struct lockout *l);

#endif
