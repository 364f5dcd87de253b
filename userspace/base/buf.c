/* buf: pooled fixed-capacity buffers (see buf.h). */
#include "base/buf.h"

#include <stdlib.h>
#include <string.h>

void buf_pool_init(struct buf_pool *pool, uint32_t size, uint32_t max_free)
{
	pool->free = NULL;
	pool->nfree = 0;
	pool->max_free = max_free;
	pool->size = size;
	pool->in_use = 0;
}

void buf_pool_destroy(struct buf_pool *pool)
{
	while (pool->free) {
		struct buf *b = pool->free;

		pool->free = b->next_free;
		free(b);
	}
	pool->nfree = 0;
}

static struct buf *buf_alloc(uint32_t cap)
{
	struct buf *b = malloc(sizeof(*b) + cap);

	if (!b)
		return NULL;
	b->cap = cap;
	return b;
}

struct buf *buf_get_cap(struct buf_pool *pool, uint32_t cap)
{
	struct buf *b;

	if (cap <= pool->size && pool->free) {
		b = pool->free;
		pool->free = b->next_free;
		pool->nfree--;
	} else {
		b = buf_alloc(cap > pool->size ? cap : pool->size);
		if (!b)
			return NULL;
	}
	b->next_free = NULL;
	b->head = b->tail = 0;
	pool->in_use++;
	return b;
}

struct buf *buf_get(struct buf_pool *pool)
{
	return buf_get_cap(pool, pool->size);
}

void buf_put(struct buf_pool *pool, struct buf *b)
{
	pool->in_use--;
	if (b->cap != pool->size || pool->nfree >= pool->max_free) {
		free(b);
		return;
	}
	b->next_free = pool->free;
	pool->free = b;
	pool->nfree++;
}

void buf_compact(struct buf *b)
{
	uint32_t n = buf_len(b);

	if (b->head == 0)
		return;
	if (n)
		memmove(b->data, b->data + b->head, n);
	b->head = 0;
	b->tail = n;
}
