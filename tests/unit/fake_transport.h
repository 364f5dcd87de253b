/*
 * fake_transport: a scripted transport (relay/transport.h) for driving the connection state
 * machine without sockets. The test writes what the peer "sent" into `in` and reads what the
 * relay wrote from `out`; it decides how many bytes each read and write may move (one at a
 * time, say), how much the "socket buffer" takes before a write says EAGAIN, whether the
 * bytes count as held inside the transport (as TLS holds decrypted records), and when the
 * peer ends the stream or fails.
 */
#ifndef PGWARDEN_FAKE_TRANSPORT_H
#define PGWARDEN_FAKE_TRANSPORT_H

#include "relay/transport.h"

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>

#define FAKE_CAP (1u << 20)

struct fake {
	struct transport t;
	uint8_t in[FAKE_CAP];
	size_t in_len, in_pos;
	bool eof;          /* after in: end of stream */
	int fail_read;     /* after in: this -errno instead */
	size_t read_chunk; /* at most this many bytes per read (0: no limit) */
	bool held;         /* unread bytes are held by the transport: readable without events */
	uint8_t out[FAKE_CAP];
	size_t out_len, out_seen;
	size_t write_room; /* bytes the "socket buffer" still takes */
	size_t write_chunk; /* at most this many bytes per write (0: no limit) */
	size_t max_write;   /* the most bytes one write handed over */
	int fail_write;    /* every write fails with this -errno */
	int destroyed;
};

#define FAKE_OF(tp) ((struct fake *)(tp))

static ssize_t fake_read(struct transport *t, void *buf, size_t n)
{
	struct fake *f = FAKE_OF(t);
	size_t k = f->in_len - f->in_pos;

	if (k) {
		if (k > n)
			k = n;
		if (f->read_chunk && k > f->read_chunk)
			k = f->read_chunk;
		memcpy(buf, f->in + f->in_pos, k);
		f->in_pos += k;
		t->read_needs = 0;
		return (ssize_t)k;
	}
	if (f->fail_read)
		return f->fail_read;
	if (f->eof)
		return 0;
	t->ready &= ~TRANSPORT_READ;
	t->read_needs = TRANSPORT_READ;
	return -EAGAIN;
}

static ssize_t fake_write(struct transport *t, const void *buf, size_t n)
{
	struct fake *f = FAKE_OF(t);
	size_t k = n < f->write_room ? n : f->write_room;

	if (f->fail_write)
		return f->fail_write;
	if (f->write_chunk && k > f->write_chunk)
		k = f->write_chunk;
	if (f->out_len + k > FAKE_CAP)
		k = FAKE_CAP - f->out_len;
	if (!k) {
		t->ready &= ~TRANSPORT_WRITE;
		t->write_needs = TRANSPORT_WRITE;
		return -EAGAIN;
	}
	memcpy(f->out + f->out_len, buf, k);
	f->out_len += k;
	if (n > f->max_write)
		f->max_write = n;
	f->write_room -= k;
	t->write_needs = 0;
	return (ssize_t)k;
}

static size_t fake_pending(const struct transport *t)
{
	const struct fake *f = FAKE_OF(t);

	return f->held ? f->in_len - f->in_pos : 0;
}

static void fake_destroy(struct transport *t)
{
	FAKE_OF(t)->destroyed++;
}

static const struct transport_ops fake_ops = {
	.name = "fake",
	.read = fake_read,
	.write = fake_write,
	.pending = fake_pending,
	.destroy = fake_destroy,
};

static inline void fake_init(struct fake *f)
{
	memset(f, 0, sizeof(*f));
	f->t.ops = &fake_ops;
	f->t.fd = -1;
	f->t.ready = TRANSPORT_WRITE;
	f->write_room = FAKE_CAP;
}

/* The peer sent bytes. */
static inline void fake_feed(struct fake *f, const void *p, size_t n)
{
	memcpy(f->in + f->in_len, p, n);
	f->in_len += n;
}

/* What the relay wrote since the last call. */
static inline size_t fake_take(struct fake *f, const uint8_t **p)
{
	size_t n = f->out_len - f->out_seen;

	*p = f->out + f->out_seen;
	f->out_seen = f->out_len;
	return n;
}

#endif
