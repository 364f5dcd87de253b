/* mask_track: requests in flight and named objects (see mask_track.h). */
#include "mask/mask_track.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define NBUCKETS 256

static void req_release(struct mask_req *r)
{
	free(r->name);
	free(r->stmt);
	free(r->formats);
	free(r->infos);
	mask_plan_free(&r->plan);
	memset(r, 0, sizeof(*r));
}

int mask_track_init(struct mask_track *t)
{
	memset(t, 0, sizeof(*t));
	t->queue = calloc(MASK_TRACK_QUEUE, sizeof(*t->queue));
	if (!t->queue)
		return -ENOMEM;
	t->nbuckets = NBUCKETS;
	for (int ns = 0; ns < MASK_NS_COUNT; ns++) {
		t->buckets[ns] = calloc(NBUCKETS, sizeof(*t->buckets[ns]));
		if (!t->buckets[ns]) {
			mask_track_release(t);
			return -ENOMEM;
		}
	}
	return 0;
}

static void named_free(struct mask_named *n)
{
	free(n->name);
	free(n->info);
	mask_desc_free(&n->desc);
	free(n);
}

void mask_track_release(struct mask_track *t)
{
	while (t->queue && t->len)
		mask_track_pop(t);
	free(t->queue);
	t->queue = NULL;
	for (int ns = 0; ns < MASK_NS_COUNT; ns++) {
		if (!t->buckets[ns])
			continue;
		mask_track_drop_all(t, (enum mask_ns)ns);
		free(t->buckets[ns]);
		t->buckets[ns] = NULL;
	}
}

struct mask_req *mask_track_push(struct mask_track *t, enum mask_req_kind kind)
{
	struct mask_req *r;

	if (t->len == MASK_TRACK_QUEUE)
		return NULL;
	r = &t->queue[(t->head + t->len) % MASK_TRACK_QUEUE];
	memset(r, 0, sizeof(*r));
	r->plan.last_masked = -1;
	r->kind = kind;
	t->len++;
	return r;
}

struct mask_req *mask_track_head(struct mask_track *t)
{
	return t->len ? &t->queue[t->head] : NULL;
}

struct mask_req *mask_track_at(struct mask_track *t, unsigned i)
{
	return i < t->len ? &t->queue[(t->head + i) % MASK_TRACK_QUEUE] : NULL;
}

void mask_track_pop(struct mask_track *t)
{
	if (!t->len)
		return;
	req_release(&t->queue[t->head]);
	t->head = (t->head + 1) % MASK_TRACK_QUEUE;
	t->len--;
}

static unsigned name_hash(const char *s)
{
	unsigned h = 5381;

	while (*s)
		h = h * 33 ^ (unsigned char)*s++;
	return h;
}

struct mask_named *mask_track_find(struct mask_track *t, enum mask_ns ns, const char *name)
{
	struct mask_named *n = t->buckets[ns][name_hash(name) % t->nbuckets];

	for (; n; n = n->next)
		if (strcmp(n->name, name) == 0)
			return n;
	return NULL;
}

struct mask_named *mask_track_put(struct mask_track *t, enum mask_ns ns, const char *name)
{
	struct mask_named **slot = &t->buckets[ns][name_hash(name) % t->nbuckets];
	struct mask_named *n = mask_track_find(t, ns, name);

	if (n) {
		free(n->info);
		n->info = NULL;
		mask_desc_free(&n->desc);
		n->described = false;
		return n;
	}
	if (t->count >= MASK_TRACK_NAMES)
		return NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->next = *slot;
	*slot = n;
	t->count++;
	return n;
}

void mask_track_drop(struct mask_track *t, enum mask_ns ns, const char *name)
{
	struct mask_named **p = &t->buckets[ns][name_hash(name) % t->nbuckets];

	for (; *p; p = &(*p)->next) {
		if (strcmp((*p)->name, name) == 0) {
			struct mask_named *n = *p;

			*p = n->next;
			named_free(n);
			t->count--;
			return;
		}
	}
}

void mask_track_drop_all(struct mask_track *t, enum mask_ns ns)
{
	for (unsigned b = 0; b < t->nbuckets; b++) {
		while (t->buckets[ns][b]) {
			struct mask_named *n = t->buckets[ns][b];

			t->buckets[ns][b] = n->next;
			named_free(n);
			t->count--;
		}
	}
}

struct mask_stmt_info *mask_stmt_info_dup(const struct mask_stmt_info *s)
{
	struct mask_stmt_info *d;

	if (!s)
		return NULL;
	d = malloc(sizeof(*d));
	if (d)
		*d = *s;
	return d;
}
