/*
 * conn_io: the connection's buffers, and moving bytes through the transports.
 *
 * Per direction (conn_pump): send what is framed, frame what is unframed, read. Reads go
 * into the worker's scratch buffer; only bytes that cannot leave at once (a partial
 * message, or a destination that is not taking bytes) are copied into a pooled buffer of
 * the direction's own, which goes back to the pool as soon as it is empty. While a
 * direction holds unsent bytes its source is not read: backpressure, never unbounded
 * buffering. Whether the source has bytes, or the destination room, is the transports'
 * knowledge (transport_can_read/_write), never guessed from the size of a read.
 */
#include "relay/conn_internal.h"

#include "base/log.h"
#include "base/log_limit.h"

#include <errno.h>
#include <string.h>

void conn_assert_dir(const struct conn_dir *d)
{
	assert(!d->buf || d->framed <= buf_len(d->buf));
	assert(!d->buf || (d->buf->head <= d->buf->tail && d->buf->tail <= d->buf->cap));
	assert(!(d->stream_left && d->skip_left));
	(void)d;
}

static struct buf_pool *conn_pool(struct conn *c)
{
	return &c->worker->pool;
}

/* Give a buffer back; the worker's scratch buffer is only emptied, never pooled. */
static void conn_buf_put(struct conn *c, struct buf *b)
{
	if (b == c->worker->scratch)
		b->head = b->tail = 0;
	else
		buf_put(conn_pool(c), b);
}

void conn_dir_release(struct conn *c, struct conn_dir *d)
{
	if (d->buf) {
		conn_buf_put(c, d->buf);
		d->buf = NULL;
	}
	d->framed = 0;
}

int conn_dir_reserve(struct conn *c, struct conn_dir *d, uint32_t extra)
{
	struct buf *nb;
	uint32_t need;

	if (!d->buf) {
		d->buf = buf_get_cap(conn_pool(c), extra);
		return d->buf ? 0 : -ENOMEM;
	}
	if (buf_room(d->buf) >= extra)
		return 0;
	buf_compact(d->buf);
	if (buf_room(d->buf) >= extra)
		return 0;
	need = buf_len(d->buf) + extra;
	nb = buf_get_cap(conn_pool(c), need);
	if (!nb)
		return -ENOMEM;
	memcpy(nb->data, d->buf->data + d->buf->head, buf_len(d->buf));
	nb->tail = buf_len(d->buf);
	conn_buf_put(c, d->buf);
	d->buf = nb;
	return 0;
}

int conn_out_reserve(struct conn *c, uint32_t n)
{
	struct buf *o = c->stream.out, *nb;

	if (!o) {
		c->stream.out = buf_get_cap(conn_pool(c), n);
		return c->stream.out ? 0 : -ENOMEM;
	}
	if (buf_room(o) >= n)
		return 0;
	buf_compact(o);
	if (buf_room(o) >= n)
		return 0;
	nb = buf_get_cap(conn_pool(c), buf_len(o) + n);
	if (!nb)
		return -ENOMEM;
	memcpy(nb->data, o->data + o->head, buf_len(o));
	nb->tail = buf_len(o);
	buf_put(conn_pool(c), o);
	c->stream.out = nb;
	return 0;
}

int conn_replace(struct conn *c, enum conn_dir_id id, uint32_t total, uint32_t avail,
		 const uint8_t *bytes, uint32_t n)
{
	struct conn_dir *d = &c->dir[id];
	uint32_t have = avail < total ? avail : total;
	uint8_t *at;
	uint32_t rest;

	if (id == CONN_S2C && conn_s2c_copying(c)) {
		/* Everything for the client goes through the stream buffer now: so must this,
		 * or it would overtake what is waiting there. */
		if (conn_out_reserve(c, n))
			return -ENOMEM;
		if (have)
			conn_consume(d, have);
		d->skip_left = total - have;
		memcpy(c->stream.out->data + c->stream.out->tail, bytes, n);
		c->stream.out->tail += n;
		return 0;
	}

	if (n > have && conn_dir_reserve(c, d, n - have))
		return -ENOMEM;
	if (!d->buf) /* nothing to replace and nothing to add */
		return 0;
	at = d->buf->data + d->buf->head + d->framed;
	rest = buf_len(d->buf) - d->framed - have;
	memmove(at + n, at + have, rest);
	memcpy(at, bytes, n);
	d->buf->tail = d->buf->tail - have + n;
	d->framed += n;
	d->skip_left = total - have;
	conn_assert_dir(d);
	return 0;
}

int conn_inject(struct conn *c, enum conn_dir_id id, const uint8_t *bytes, uint32_t n)
{
	return conn_replace(c, id, 0, 0, bytes, n);
}

void conn_consume(struct conn_dir *d, uint32_t n)
{
	uint8_t *at = d->buf->data + d->buf->head + d->framed;

	if (!d->framed) {
		d->buf->head += n; /* at the front: nothing to move */
		return;
	}
	memmove(at, at + n, buf_len(d->buf) - d->framed - n);
	d->buf->tail -= n;
}

static struct transport *conn_src(const struct conn *c, enum conn_dir_id id)
{
	return id == CONN_C2S ? c->client : c->server;
}

static struct transport *conn_dst(const struct conn *c, enum conn_dir_id id)
{
	return id == CONN_C2S ? c->server : c->client;
}

/* Remember when the client stopped taking bytes (its socket buffer is full). */
static void conn_note_blocked(struct conn *c, enum conn_dir_id id)
{
	if (id == CONN_S2C && !c->client_blocked_since)
		c->client_blocked_since = conn_now(c);
}

/* Send from b[head, head + *len). 0 when all left, 1 when the destination is full, < 0 when
 * it failed. */
static int conn_send(struct conn *c, enum conn_dir_id id, struct buf *b, uint32_t *len)
{
	struct transport *t = conn_dst(c, id);

	/* Nothing goes to a server whose connect has not finished, whatever its transport
	 * thinks of its readiness. */
	if (id == CONN_C2S && (c->connect_deadline || c->state == CONN_SERVER_TLS))
		return 1;
	while (*len) {
		ssize_t n;

		if (!t || !transport_can_write(t))
			return 1;
		n = transport_write(t, b->data + b->head, *len);
		if (n == -EAGAIN) {
			conn_note_blocked(c, id);
			return 1;
		}
		if (n < 0)
			return (int)n;
		b->head += (uint32_t)n;
		*len -= (uint32_t)n;
	}
	return 0;
}

/*
 * Send the framed bytes of a direction, then (server → client) what a streaming stage
 * produced. Returns 0 when all left, 1 when the destination is full or not connected, < 0
 * when the destination failed.
 */
static int conn_flush(struct conn *c, enum conn_dir_id id)
{
	struct conn_dir *d = &c->dir[id];
	int r = 0;

	if (d->buf && d->framed) {
		r = conn_send(c, id, d->buf, &d->framed);
		if (r)
			return r;
		if (buf_len(d->buf) == 0)
			conn_dir_release(c, d);
	}
	if (id == CONN_S2C && c->stream.out) {
		uint32_t len = buf_len(c->stream.out);

		r = conn_send(c, id, c->stream.out, &len);
		if (r)
			return r;
		buf_put(conn_pool(c), c->stream.out);
		c->stream.out = NULL;
	}
	if (id == CONN_S2C) {
		c->client_blocked_since = 0;
		if (c->rfq_owed_since) { /* the client's clock: its ReadyForQuery left */
			uint64_t took = conn_now(c) - c->rfq_owed_since;

			__atomic_store_n(&c->last_latency_ns, (int64_t)took, __ATOMIC_RELAXED);
			if (conn_metrics(c))
				metrics_observe(conn_metrics(c), conn_mstd(c)->query_duration, 0, took);
			c->rfq_owed_since = 0;
		}
	} else if (c->busy_since && !c->upstream_since) {
		c->upstream_since = conn_now(c);
	}
	return 0;
}

/* Peers can make their legs fail at will: logged within limits. */
static struct log_limit limit_leg_failed =
	LOG_LIMIT_INIT(LOG_LIMIT_PEER_BURST, LOG_LIMIT_PEER_INTERVAL_MS);

/* A read failed: what the transport knows of why (a TLS alert, a renegotiation attempt, a
 * truncation) is logged and becomes the session's end reason. */
static void conn_read_failed(struct conn *c, enum conn_dir_id id)
{
	const char *why = transport_error(conn_src(c, id));

	if (!why)
		return;
	log_limited(&limit_leg_failed, LOG_INFO, "leg_failed", "session=%s leg=%s %s",
		    c->session.id_hex, id == CONN_C2S ? "client" : "server", why);
	conn_set_reason(c, why);
}

/* Read once from the source into the scratch buffer or the direction's own buffer. */
static ssize_t conn_read(struct conn *c, enum conn_dir_id id)
{
	struct conn_dir *d = &c->dir[id];
	struct buf *scratch = c->worker->scratch;
	uint32_t room;
	ssize_t n;

	if (!d->buf) {
		scratch->head = scratch->tail = 0;
		d->buf = scratch;
	} else {
		buf_compact(d->buf);
		/* A message that must be seen whole gets a buffer it fits in. */
		if (d->need && d->buf->cap < d->framed + d->need &&
		    conn_dir_reserve(c, d, d->framed + d->need - buf_len(d->buf)))
			return -ENOMEM;
	}
	room = buf_room(d->buf);
	if (!room)
		return -ENOBUFS; /* bytes that may not pass yet fill the buffer: wait */
	n = transport_read(conn_src(c, id), d->buf->data + d->buf->tail, room);
	if (n > 0) {
		d->buf->tail += (uint32_t)n;
		if (id == CONN_C2S)
			c->session.bytes_from_client += (uint64_t)n;
		else
			c->session.bytes_from_server += (uint64_t)n;
		if (conn_metrics(c))
			metrics_add(conn_metrics(c), conn_mstd(c)->bytes,
				    id == CONN_C2S ? MDIR_FROM_CLIENT : MDIR_FROM_SERVER, (uint64_t)n);
	} else if (n == 0 || n != -EAGAIN) {
		d->eof = true;
		if (n < 0)
			conn_read_failed(c, id);
	}
	return n;
}

/* After a pass over d: bytes still in the scratch buffer move to a buffer of d's own. */
static int conn_settle(struct conn *c, struct conn_dir *d)
{
	struct buf *scratch = c->worker->scratch;
	uint32_t len;

	if (d->buf != scratch)
		return 0;
	len = buf_len(scratch);
	d->buf = NULL;
	if (!len)
		return 0;
	d->buf = buf_get_cap(conn_pool(c), len > d->need ? len : d->need);
	if (!d->buf)
		return -ENOMEM;
	memcpy(d->buf->data, scratch->data + scratch->head, len);
	d->buf->tail = len;
	scratch->head = scratch->tail = 0;
	return 0;
}

/* May the source of this direction be read now? */
static bool conn_may_read(const struct conn *c, enum conn_dir_id id)
{
	const struct conn_dir *d = &c->dir[id];
	struct transport *t = conn_src(c, id);

	if (!t || d->eof || !transport_can_read(t))
		return false;
	if (id == CONN_S2C) /* in SERVER_TLS, conn_tls.c reads the answer itself */
		return c->state != CONN_CLOSING && !c->connect_deadline &&
		       c->state != CONN_SERVER_TLS;
	switch (c->state) {
	case CONN_CLIENT_TLS: /* the handshake reads; nothing may be read before it */
	case CONN_CANCEL:
	case CONN_FAREWELL:
	case CONN_SERVER_GONE:
	case CONN_CLOSING:
	case CONN_CLOSED:
		return false; /* nothing more from the client goes anywhere */
	default:
		/* A client that keeps pgwarden owing more answers than it will remember
		 * waits until some are answered. */
		return !conn_logged_in(c) || !track_full(&c->track);
	}
}

/*
 * A send to the server failed (it reset or closed). What it said last (a FATAL saying why)
 * may still be readable: send it nothing more and read on until it ends.
 */
static void conn_server_broke(struct conn *c)
{
	struct conn_dir *c2s = &c->dir[CONN_C2S];

	conn_dir_release(c, c2s);
	c2s->stream_left = c2s->skip_left = 0;
	switch (c->state) {
	case CONN_CANCEL:
		conn_close(c, "cancel forward failed");
		return;
	case CONN_FAREWELL:
	case CONN_CLOSING:
		conn_upstream_drop(c);
		conn_set_state(c, CONN_CLOSING);
		return;
	case CONN_AUTH:
	case CONN_AUTH_ANSWER:
		conn_set_state(c, CONN_SERVER_GONE);
		return;
	default:
		if (conn_logged_in(c))
			conn_set_state(c, CONN_SERVER_GONE);
		else
			conn_fail(c, SQLSTATE_CONNECTION_FAILURE,
				  "could not send data to the database server", "server send failed");
		return;
	}
}

static int conn_frame(struct conn *c, enum conn_dir_id id)
{
	return id == CONN_C2S ? conn_frame_c2s(c) : conn_frame_s2c(c);
}

static bool conn_has_unframed(const struct conn_dir *d)
{
	return d->buf && buf_len(d->buf) > d->framed;
}

bool conn_pump(struct conn *c, enum conn_dir_id id)
{
	struct conn_dir *d = &c->dir[id];
	bool moved = false;

	for (;;) {
		int r = conn_flush(c, id);

		if (r < 0 && id == CONN_C2S) {
			conn_server_broke(c);
			return true;
		}
		if (r < 0) {
			conn_close(c, "client connection lost");
			return true;
		}
		if (r > 0 || c->state == CONN_CLOSED)
			break;
		if (conn_has_unframed(d) || d->stream_left || d->skip_left) {
			enum conn_step s = conn_frame(c, id);

			if (c->state == CONN_CLOSED)
				return true;
			if (s == CONN_STEP_PROGRESS) {
				moved = true;
				continue;
			}
			if (s == CONN_STEP_FAILED) {
				moved = true;
				break;
			}
		}
		if (!conn_may_read(c, id))
			break;
		if (conn_read(c, id) <= 0)
			break;
		moved = true;
	}
	if (c->state != CONN_CLOSED && conn_settle(c, d))
		conn_close(c, "out of memory");
	if (d->buf)
		conn_assert_dir(d);
	return moved;
}

bool conn_has_output(const struct conn *c)
{
	return (c->dir[CONN_C2S].buf && c->dir[CONN_C2S].framed && c->server) ||
	       (c->dir[CONN_S2C].buf && c->dir[CONN_S2C].framed) || c->stream.out;
}
