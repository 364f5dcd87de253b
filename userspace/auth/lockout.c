/*
 * lockout: failure counting and locks per user and per source (see lockout.h).
 *
 * Entries sit in a glibc tsearch tree (balanced: O(log n) whatever names an attacker
 * picks) and on one list ordered by their last failure, oldest first, for eviction and
 * listings. Everything is under one mutex.
 */
#include "auth/lockout.h"

#include "base/log.h"

#include <pthread.h>
#include <search.h>
#include <stdlib.h>
#include <string.h>

#define EVICT_SCAN 64 /* oldest entries looked at for one that is not locked */

struct lockout_item {
	bool is_source;
	char name[LOCKOUT_KEY_MAX + 1];
	uint32_t failures;
	uint64_t window_start;
	uint64_t locked_until; /* 0: not locked */
	struct lockout_item *older, *newer;
};

struct lockout {
	pthread_mutex_t mu;
	struct lockout_params p;
	void *tree;
	struct lockout_item *oldest, *newest;
	size_t count;
};

static int item_cmp(const void *a, const void *b)
{
	const struct lockout_item *x = a, *y = b;

	if (x->is_source != y->is_source)
		return x->is_source ? 1 : -1;
	return strcmp(x->name, y->name);
}

struct lockout *lockout_new(const struct lockout_params *p)
{
	struct lockout *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	pthread_mutex_init(&l->mu, NULL);
	l->p = *p;
	if (l->p.max_entries == 0)
		l->p.max_entries = 1;
	return l;
}

static void nothing(void *p)
{
	(void)p;
}

void lockout_free(struct lockout *l)
{
	struct lockout_item *it, *next;

	if (!l)
		return;
	tdestroy(l->tree, nothing);
	for (it = l->oldest; it; it = next) {
		next = it->newer;
		free(it);
	}
	pthread_mutex_destroy(&l->mu);
	free(l);
}

void lockout_params_get(struct lockout *l, struct lockout_params *p)
{
	pthread_mutex_lock(&l->mu);
	*p = l->p;
	pthread_mutex_unlock(&l->mu);
}

void lockout_set_params(struct lockout *l, const struct lockout_params *p)
{
	pthread_mutex_lock(&l->mu);
	l->p = *p;
	if (l->p.max_entries == 0)
		l->p.max_entries = 1;
	pthread_mutex_unlock(&l->mu);
}

static void key_of(struct lockout_item *k, bool is_source, const char *name)
{
	k->is_source = is_source;
	strncpy(k->name, name, LOCKOUT_KEY_MAX);
	k->name[LOCKOUT_KEY_MAX] = '\0';
}

static struct lockout_item *find(struct lockout *l, bool is_source, const char *name)
{
	struct lockout_item k;
	void *found;

	key_of(&k, is_source, name);
	found = tfind(&k, &l->tree, item_cmp);
	return found ? *(struct lockout_item **)found : NULL;
}

static void unlink_item(struct lockout *l, struct lockout_item *it)
{
	if (it->older)
		it->older->newer = it->newer;
	else
		l->oldest = it->newer;
	if (it->newer)
		it->newer->older = it->older;
	else
		l->newest = it->older;
	it->older = it->newer = NULL;
}

static void append_item(struct lockout *l, struct lockout_item *it)
{
	it->older = l->newest;
	it->newer = NULL;
	if (l->newest)
		l->newest->newer = it;
	else
		l->oldest = it;
	l->newest = it;
}

static void remove_item(struct lockout *l, struct lockout_item *it)
{
	unlink_item(l, it);
	tdelete(it, &l->tree, item_cmp);
	l->count--;
	free(it);
}

/* An expired lock is over: the entry starts afresh. */
static bool locked_now(struct lockout_item *it, uint64_t now)
{
	if (it->locked_until && it->locked_until <= now) {
		it->locked_until = 0;
		it->failures = 0;
		it->window_start = 0;
	}
	return it->locked_until != 0;
}

static void evict_one(struct lockout *l, uint64_t now)
{
	struct lockout_item *it = l->oldest, *victim = NULL;

	for (unsigned i = 0; it && i < EVICT_SCAN; i++, it = it->newer) {
		if (!locked_now(it, now)) {
			victim = it;
			break;
		}
	}
	if (!victim && log_enabled(LOG_WARN)) {
		struct log_line ll;

		log_line_begin(&ll, LOG_WARN, "auth_lockout_evicted");
		log_kv_str(&ll, l->oldest->is_source ? "source" : "user", l->oldest->name);
		log_kv_u64(&ll, "max_entries", l->p.max_entries);
		log_kv_str(&ll, "msg", "the lockout table is full of locks; a lock was forgotten "
				       "(raise auth.lockout.max_entries)");
		log_line_end(&ll);
	}
	if (!victim)
		victim = l->oldest;
	remove_item(l, victim);
}

static struct lockout_item *get(struct lockout *l, bool is_source, const char *name, uint64_t now)
{
	struct lockout_item *it = find(l, is_source, name);

	if (it)
		return it;
	if (l->count >= l->p.max_entries)
		evict_one(l, now);
	it = calloc(1, sizeof(*it));
	if (!it)
		return NULL;
	key_of(it, is_source, name);
	if (!tsearch(it, &l->tree, item_cmp)) {
		free(it);
		return NULL;
	}
	append_item(l, it);
	l->count++;
	return it;
}

bool lockout_is_locked(struct lockout *l, const char *user, const char *source, uint64_t now_ms)
{
	struct lockout_item *it;
	bool locked = false;

	if (!l)
		return false;
	pthread_mutex_lock(&l->mu);
	if (user && (it = find(l, false, user)))
		locked |= locked_now(it, now_ms);
	if (source && (it = find(l, true, source)))
		locked |= locked_now(it, now_ms);
	pthread_mutex_unlock(&l->mu);
	return locked;
}

/* One failure for one key; true when it just became locked. */
static bool count_failure(struct lockout *l, struct lockout_item *it, uint64_t now)
{
	unlink_item(l, it);
	append_item(l, it); /* the most recently failed is evicted last */
	if (locked_now(it, now)) {
		it->failures++;
		return false;
	}
	if (!it->failures || now - it->window_start > l->p.window_ms) {
		it->failures = 0;
		it->window_start = now;
	}
	it->failures++;
	if (l->p.failures && it->failures >= l->p.failures) {
		it->locked_until = now + l->p.duration_ms;
		if (!it->locked_until)
			it->locked_until = 1;
		return true;
	}
	return false;
}

static void log_lock(const struct lockout *l, const struct lockout_item *it, const char *session)
{
	struct log_line ll;

	if (!log_enabled(LOG_WARN))
		return;
	log_line_begin(&ll, LOG_WARN, "auth_lockout");
	if (session)
		log_kv_str(&ll, "session", session);
	log_kv_str(&ll, it->is_source ? "source" : "user", it->name);
	log_kv_u64(&ll, "failures", it->failures);
	log_kv_u64(&ll, "window_ms", l->p.window_ms);
	log_kv_u64(&ll, "locked_ms", l->p.duration_ms);
	log_line_end(&ll);
}

int lockout_record_failure(struct lockout *l, const char *user, const char *source,
			   const char *session, uint64_t now_ms)
{
	struct lockout_item *u = NULL, *s = NULL;
	struct log_line ll;
	int result = 0;

	if (!l)
		return 0;
	pthread_mutex_lock(&l->mu);
	if (user && (u = get(l, false, user, now_ms)) && count_failure(l, u, now_ms))
		result |= LOCKOUT_USER_LOCKED;
	if (source && (s = get(l, true, source, now_ms)) && count_failure(l, s, now_ms))
		result |= LOCKOUT_SOURCE_LOCKED;
	if (!log_enabled(LOG_WARN))
		goto logged;
	log_line_begin(&ll, LOG_WARN, "auth_failure");
	if (session)
		log_kv_str(&ll, "session", session);
	if (user)
		log_kv_str(&ll, "user", user);
	if (source)
		log_kv_str(&ll, "source", source);
	if (u)
		log_kv_u64(&ll, "user_failures", u->failures);
	if (s)
		log_kv_u64(&ll, "source_failures", s->failures);
	log_kv_u64(&ll, "locked", (u && u->locked_until) || (s && s->locked_until));
	log_line_end(&ll);
logged:
	if (result & LOCKOUT_USER_LOCKED)
		log_lock(l, u, session);
	if (result & LOCKOUT_SOURCE_LOCKED)
		log_lock(l, s, session);
	pthread_mutex_unlock(&l->mu);
	return result;
}

void lockout_record_success(struct lockout *l, const char *user)
{
	struct lockout_item *it;

	if (!l || !user)
		return;
	pthread_mutex_lock(&l->mu);
	it = find(l, false, user);
	if (it && !it->locked_until)
		remove_item(l, it);
	pthread_mutex_unlock(&l->mu);
}

int lockout_unlock(struct lockout *l, const char *name)
{
	struct lockout_item *it;
	struct log_line ll;
	int cleared = 0;

	if (!l || !name)
		return 0;
	pthread_mutex_lock(&l->mu);
	if ((it = find(l, false, name))) {
		remove_item(l, it);
		cleared |= LOCKOUT_CLEARED_USER;
	}
	if ((it = find(l, true, name))) {
		remove_item(l, it);
		cleared |= LOCKOUT_CLEARED_SOURCE;
	}
	pthread_mutex_unlock(&l->mu);
	if (!log_enabled(LOG_INFO))
		return cleared;
	log_line_begin(&ll, LOG_INFO, "auth_unlock");
	log_kv_str(&ll, "name", name);
	log_kv_u64(&ll, "user", !!(cleared & LOCKOUT_CLEARED_USER));
	log_kv_u64(&ll, "source", !!(cleared & LOCKOUT_CLEARED_SOURCE));
	log_line_end(&ll);
	return cleared;
}

size_t lockout_each(struct lockout *l, uint64_t now_ms,
		    void (*fn)(const struct lockout_entry *, void *), void *arg)
{
	size_t n = 0;

	if (!l)
		return 0;
	pthread_mutex_lock(&l->mu);
	for (struct lockout_item *it = l->oldest; it; it = it->newer) {
		struct lockout_entry e = {.is_source = it->is_source, .failures = it->failures};

		e.locked = locked_now(it, now_ms);
		if (!e.locked && (!it->failures || now_ms - it->window_start > l->p.window_ms))
			continue;
		memcpy(e.name, it->name, sizeof(e.name));
		e.locked_for_ms = e.locked ? it->locked_until - now_ms : 0;
		fn(&e, arg);
		n++;
	}
	pthread_mutex_unlock(&l->mu);
	return n;
}

size_t lockout_size(struct lockout *l)
{
	size_t n;

	pthread_mutex_lock(&l->mu);
	n = l->count;
	pthread_mutex_unlock(&l->mu);
	return n;
}
