/*
 * buf: fixed-capacity byte buffers from a per-worker pool.
 *
 * A connection holds a buffer only while bytes are in it; an idle connection holds none.
 * The pool keeps at most max_free buffers of its standard size and gives the rest back to
 * the allocator, so a burst does not pin memory forever. Pools are single-threaded: each
 * worker owns one.
 *
 * Invariant: 0 <= head <= tail <= cap. Bytes [head, tail) are live.
 */
#ifndef PGWARDEN_BUF_H
#define PGWARDEN_BUF_H

#include <stdint.h>

struct buf {
	struct buf *next_free;
	uint32_t cap;
	uint32_t head;
	uint32_t tail;
	uint8_t data[];
};

struct buf_pool {
	struct buf *free;
	uint32_t nfree;
	uint32_t max_free;
	uint32_t size; /* capacity of a standard buffer */
	uint64_t in_use; /* buffers handed out and not yet returned, for metrics */
};

void buf_pool_init(struct buf_pool *pool, uint32_t size, uint32_t max_free);
void buf_pool_destroy(struct buf_pool *pool);

/* An empty standard buffer, or NULL (errno ENOMEM). */
struct buf *buf_get(struct buf_pool *pool) __attribute__((warn_unused_result));

/* An empty buffer of at least cap bytes (a standard one when cap fits), or NULL. */
struct buf *buf_get_cap(struct buf_pool *pool, uint32_t cap) __attribute__((warn_unused_result));

void buf_put(struct buf_pool *pool, struct buf *b);

static inline uint32_t buf_len(const struct buf *b)
{
	return b->tail - b->head;
}

static inline uint32_t buf_room(const struct buf *b)
{
	return b->cap - b->tail;
}

/* Move live bytes to the front so the room at the end is as large as it can be. */
void buf_compact(struct buf *b);

#endif
