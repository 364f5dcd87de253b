/* admission: pre-login limits per source and in total (see admission.h). */
#include "relay/admission.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define ADMISSION_PROBE 16 /* slots examined per source */
#define ADMISSION_MIN_SLOTS 64

struct admission_slot {
	struct admission_source src;
	uint32_t prelogin;  /* connections of this source logging in now */
	uint64_t last_ns;   /* 0: free */
	double tokens;
};

struct admission {
	pthread_mutex_t lock;
	struct admission_slot *table;
	uint32_t mask;
	uint32_t prelogin; /* all sources */
	uint64_t seed;
};

static const char *const verdict_names[ADMISSION_VERDICT_COUNT] = {
	[ADMISSION_ACCEPT] = "accepted",
	[ADMISSION_PRELOGIN_TOTAL] = "prelogin_total",
	[ADMISSION_PRELOGIN_SOURCE] = "prelogin_source",
	[ADMISSION_SOURCE_RATE] = "source_rate",
};

const char *admission_verdict_to_str(enum admission_verdict v)
{
	return (unsigned)v < ADMISSION_VERDICT_COUNT ? verdict_names[v] : "unknown";
}

void admission_source_addr(struct admission_source *s, const struct addr *a)
{
	struct addr u;

	memset(s, 0, sizeof(*s));
	addr_unmap(a, &u);
	s->kind = ADMISSION_SOURCE_ADDR;
	if (u.ss.sa.sa_family == AF_INET) {
		s->addr[10] = s->addr[11] = 0xff;
		memcpy(s->addr + 12, &u.ss.in4.sin_addr, 4);
	} else if (u.ss.sa.sa_family == AF_INET6) {
		memcpy(s->addr, &u.ss.in6.sin6_addr, 8); /* the /64 */
	}
}

void admission_source_uid(struct admission_source *s, uint32_t uid)
{
	memset(s, 0, sizeof(*s));
	s->kind = ADMISSION_SOURCE_UID;
	s->uid = uid;
}

const char *admission_source_format(const struct admission_source *s, char *buf, size_t n)
{
	char host[INET6_ADDRSTRLEN];
	static const uint8_t v4prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (s->kind == ADMISSION_SOURCE_UID)
		snprintf(buf, n, "uid %u", s->uid);
	else if (s->kind != ADMISSION_SOURCE_ADDR)
		snprintf(buf, n, "unknown");
	else if (memcmp(s->addr, v4prefix, 12) == 0)
		snprintf(buf, n, "%s", inet_ntop(AF_INET, s->addr + 12, host, sizeof(host)));
	else
		snprintf(buf, n, "%s/64", inet_ntop(AF_INET6, s->addr, host, sizeof(host)));
	return buf;
}

int admission_new(uint32_t max_sources, struct admission **out)
{
	struct admission *a = calloc(1, sizeof(*a));
	uint32_t slots = ADMISSION_MIN_SLOTS;

	*out = NULL;
	if (!a)
		return -ENOMEM;
	while (slots < max_sources && slots < (1u << 30))
		slots <<= 1;
	a->table = calloc(slots, sizeof(*a->table));
	if (!a->table) {
		free(a);
		return -ENOMEM;
	}
	a->mask = slots - 1;
	/* Unpredictable, so sources cannot be chosen to share a probe window. A failed
	 * getrandom() leaves a fixed seed: the table still works, only less evenly. */
	if (getrandom(&a->seed, sizeof(a->seed), GRND_NONBLOCK) != sizeof(a->seed))
		a->seed = 0x9e3779b97f4a7c15ull;
	pthread_mutex_init(&a->lock, NULL);
	*out = a;
	return 0;
}

void admission_free(struct admission *a)
{
	if (!a)
		return;
	pthread_mutex_destroy(&a->lock);
	free(a->table);
	free(a);
}

/* splitmix64 finaliser over the seeded words of the key. */
static uint64_t mix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint32_t source_hash(const struct admission *a, const struct admission_source *s)
{
	uint64_t w[3], h = a->seed;

	memcpy(w, s, sizeof(w));
	for (int i = 0; i < 3; i++)
		h = mix(h ^ w[i]);
	return (uint32_t)h;
}

_Static_assert(sizeof(struct admission_source) == 24, "admission_source is hashed as 3 words");

static bool same_source(const struct admission_source *x, const struct admission_source *y)
{
	return memcmp(x, y, sizeof(*x)) == 0;
}

/* The slot of src, or NULL. */
static struct admission_slot *slot_find(struct admission *a, const struct admission_source *src)
{
	uint32_t h = source_hash(a, src);

	for (unsigned i = 0; i < ADMISSION_PROBE; i++) {
		struct admission_slot *s = &a->table[(h + i) & a->mask];

		if (s->last_ns && same_source(&s->src, src))
			return s;
	}
	return NULL;
}

/* A slot for a new source: free, else the least recently seen idle one; NULL when every
 * slot of the window has connections logging in. */
static struct admission_slot *slot_claim(struct admission *a, const struct admission_source *src)
{
	uint32_t h = source_hash(a, src);
	struct admission_slot *best = NULL;

	for (unsigned i = 0; i < ADMISSION_PROBE; i++) {
		struct admission_slot *s = &a->table[(h + i) & a->mask];

		if (s->prelogin)
			continue;
		if (!best || s->last_ns < best->last_ns)
			best = s; /* a free slot has last_ns 0: it wins */
	}
	return best;
}

enum admission_verdict admission_enter(struct admission *a, const struct admission_limits *l,
				       const struct admission_source *src, uint64_t now_ns)
{
	enum admission_verdict v = ADMISSION_ACCEPT;
	struct admission_slot *s;
	bool fresh = false;

	if (!now_ns)
		now_ns = 1; /* last_ns 0 means free */
	pthread_mutex_lock(&a->lock);
	s = slot_find(a, src);
	if (!s) {
		s = slot_claim(a, src);
		if (!s) {
			v = ADMISSION_PRELOGIN_TOTAL;
			goto out;
		}
		memset(s, 0, sizeof(*s));
		s->src = *src;
		s->tokens = (double)l->burst;
		fresh = true;
	} else if (l->rate_per_sec > 0) {
		s->tokens += (double)(now_ns - s->last_ns) / 1e9 * l->rate_per_sec;
		if (s->tokens > (double)l->burst)
			s->tokens = (double)l->burst;
	}
	s->last_ns = now_ns;
	if (l->rate_per_sec > 0 && s->tokens < 1.0)
		v = ADMISSION_SOURCE_RATE;
	else if (a->prelogin >= l->prelogin_max)
		v = ADMISSION_PRELOGIN_TOTAL;
	else if (s->prelogin >= l->prelogin_per_source)
		v = ADMISSION_PRELOGIN_SOURCE;
	if (v == ADMISSION_ACCEPT) {
		if (l->rate_per_sec > 0)
			s->tokens -= 1.0;
		s->prelogin++;
		a->prelogin++;
	} else if (fresh && !s->prelogin && l->rate_per_sec <= 0) {
		/* Nothing to remember about a refused new source without a rate. */
		s->last_ns = 0;
	}
out:
	pthread_mutex_unlock(&a->lock);
	return v;
}

void admission_leave(struct admission *a, const struct admission_source *src)
{
	struct admission_slot *s;

	pthread_mutex_lock(&a->lock);
	s = slot_find(a, src);
	if (s && s->prelogin)
		s->prelogin--;
	if (a->prelogin)
		a->prelogin--;
	pthread_mutex_unlock(&a->lock);
}

uint32_t admission_prelogin(struct admission *a)
{
	uint32_t n;

	pthread_mutex_lock(&a->lock);
	n = a->prelogin;
	pthread_mutex_unlock(&a->lock);
	return n;
}

uint32_t admission_prelogin_of(struct admission *a, const struct admission_source *src)
{
	struct admission_slot *s;
	uint32_t n;

	pthread_mutex_lock(&a->lock);
	s = slot_find(a, src);
	n = s ? s->prelogin : 0;
	pthread_mutex_unlock(&a->lock);
	return n;
}
