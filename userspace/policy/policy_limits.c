/*
 * policy_limits: the state sessions share for the limits (session counts per user,
 * database and source; statement token buckets per identity), keyed by rule name so that
 * counts survive a reload that keeps the rule.
 *
 * One table under one mutex: these are touched at session start and end, and once per
 * statement only by rules with a rate limit. Entries are reference-counted by the sessions
 * that use them and freed when the last one ends, so the table holds at most one entry per
 * live session and limit: a client cannot grow it by inventing names.
 */
#include "policy/policy.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 1024

struct policy_limit_entry {
	struct policy_limit_entry *next;
	uint32_t hash;
	uint32_t refs;
	uint32_t sessions;
	enum policy_limit_kind kind;
	/* token bucket, in tokens * 1e9 (nanotokens) so refills stay integral */
	int64_t nanotokens;
	uint64_t last_ns;
	bool primed;
	char key[]; /* "rule\0identity\0" */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct policy_limit_entry *table[BUCKETS];
static unsigned nentries;

static uint32_t hash_key(enum policy_limit_kind kind, const char *rule, const char *key)
{
	uint32_t h = 2166136261u ^ (uint32_t)kind;

	for (const char *p = rule; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	h = (h ^ 0xff) * 16777619u;
	for (const char *p = key; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	return h;
}

/* Find or add; returns the entry with a reference added, or NULL on ENOMEM. Lock held. */
static struct policy_limit_entry *get(enum policy_limit_kind kind, const char *rule,
				      const char *key)
{
	uint32_t h = hash_key(kind, rule, key);
	size_t rl = strlen(rule), kl = strlen(key);
	struct policy_limit_entry *e;

	for (e = table[h % BUCKETS]; e; e = e->next)
		if (e->hash == h && e->kind == kind && !strcmp(e->key, rule) &&
		    !strcmp(e->key + rl + 1, key)) {
			e->refs++;
			return e;
		}
	e = calloc(1, sizeof(*e) + rl + kl + 2);
	if (!e)
		return NULL;
	e->hash = h;
	e->kind = kind;
	e->refs = 1;
	memcpy(e->key, rule, rl + 1);
	memcpy(e->key + rl + 1, key, kl + 1);
	e->next = table[h % BUCKETS];
	table[h % BUCKETS] = e;
	nentries++;
	return e;
}

static void put_locked(struct policy_limit_entry *e)
{
	struct policy_limit_entry **pp;

	if (--e->refs)
		return;
	for (pp = &table[e->hash % BUCKETS]; *pp; pp = &(*pp)->next)
		if (*pp == e) {
			*pp = e->next;
			break;
		}
	nentries--;
	free(e);
}

struct policy_limit_entry *policy_limit_session_take(const char *rule,
						     enum policy_limit_kind kind,
						     const char *key, uint32_t max)
{
	struct policy_limit_entry *e;

	pthread_mutex_lock(&lock);
	e = get(kind, rule, key ? key : "");
	if (e && max && e->sessions >= max) {
		put_locked(e);
		e = NULL;
	} else if (e) {
		e->sessions++;
	}
	pthread_mutex_unlock(&lock);
	return e;
}

struct policy_limit_entry *policy_limit_bucket(const char *rule, const char *identity)
{
	struct policy_limit_entry *e;

	pthread_mutex_lock(&lock);
	e = get(POLICY_LIMIT_RATE, rule, identity ? identity : "");
	pthread_mutex_unlock(&lock);
	return e;
}

#define NANO 1000000000LL

uint64_t policy_limit_take_tokens(struct policy_limit_entry *e, uint32_t rate, uint32_t burst,
				  uint32_t n, uint64_t now_ns, bool reserve)
{
	uint64_t wait = 0;
	int64_t need = (int64_t)n * NANO, cap = (int64_t)burst * NANO;

	if (!rate)
		return 0;
	pthread_mutex_lock(&lock);
	if (!e->primed) {
		e->nanotokens = cap;
		e->last_ns = now_ns;
		e->primed = true;
	}
	if (now_ns > e->last_ns) {
		/* tokens += elapsed * rate, up to the burst; the bucket may be in debt (waiters
		 * reserved ahead), so saturate on the room left rather than multiply past int64 */
		uint64_t el = now_ns - e->last_ns;
		uint64_t room = (uint64_t)(cap - e->nanotokens);

		if (el >= room / rate + 1)
			e->nanotokens = cap;
		else
			e->nanotokens = e->nanotokens + (int64_t)(el * rate) > cap
						? cap
						: e->nanotokens + (int64_t)(el * rate);
		e->last_ns = now_ns;
	}
	if (e->nanotokens >= need) {
		e->nanotokens -= need;
	} else {
		wait = (uint64_t)((need - e->nanotokens + rate - 1) / rate);
		if (reserve)
			e->nanotokens -= need;
	}
	pthread_mutex_unlock(&lock);
	return wait;
}

void policy_limit_put(struct policy_limit_entry *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&lock);
	if (e->kind != POLICY_LIMIT_RATE && e->sessions)
		e->sessions--;
	put_locked(e);
	pthread_mutex_unlock(&lock);
}

unsigned policy_limit_entries(void)
{
	unsigned n;

	pthread_mutex_lock(&lock);
	n = nentries;
	pthread_mutex_unlock(&lock);
	return n;
}
