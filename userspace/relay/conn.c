/*
 * conn: the connection state machine (see conn.h for the picture).
 *
 * Data path per direction (conn_pump): send what is framed, read, frame, send. Reads go into
 * the worker's scratch buffer; only bytes that cannot leave at once (a partial message, or a
 * destination whose socket buffer is full) are copied into a pooled per-direction buffer,
 * and that buffer goes back to the pool as soon as it is empty. While a direction holds
 * unsent bytes its source is not read: backpressure, never unbounded buffering.
 */
#include "relay/conn.h"

#include "admin/admin.h"
#include "base/clock.h"
#include "base/log.h"
#include "config/config.h"
#include "proto/proto.h"
#include "relay/cancel.h"
#include "relay/handover.h" /* [ops #14] cancels for a predecessor's sessions */
#include "relay/relay.h"
#include "relay/worker.h"
#include "stage/stage.h"
#include "sql/sql.h"
#include "steer/steer.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* Messages the relay itself must see whole (all small, none on the bulk data path). */
#define CONN_INSPECT_MAX (1u << 20)
#define SQLSTATE_PROTOCOL_VIOLATION "08P01"
#define SQLSTATE_CONNECTION_FAILURE "08006"
#define SQLSTATE_TOO_MANY_CONNECTIONS "53300"
#define SQLSTATE_ADMIN_SHUTDOWN "57P01"

#define STARTUP_SEEN_SSL 1
#define STARTUP_SEEN_GSSENC 2

static const char *const conn_state_names[CONN_STATE_COUNT] = {
	[CONN_STARTUP] = "startup",   [CONN_CONNECTING] = "connecting", [CONN_AUTH] = "auth",
	[CONN_READY] = "idle",        [CONN_BUSY] = "active",           [CONN_COPY_IN] = "copy_in",
	[CONN_COPY_OUT] = "copy_out", [CONN_COPY_BOTH] = "copy_both",   [CONN_CANCEL] = "cancel",
	[CONN_CLOSING] = "closing",   [CONN_CLOSED] = "closed",
};

const char *conn_state_to_str(enum conn_state s)
{
	return (unsigned)s < CONN_STATE_COUNT ? conn_state_names[s] : "unknown";
}

static struct proto_typeset conn_backend_inspect; /* fixed at first use, read-only after */

static void conn_init_types(void)
{
	static const uint8_t backend[] = {
		PqMsg_AuthenticationRequest, PqMsg_BackendKeyData,  PqMsg_ReadyForQuery,
		PqMsg_ErrorResponse,         PqMsg_CopyInResponse,  PqMsg_CopyOutResponse,
		PqMsg_CopyBothResponse,      PqMsg_NegotiateProtocolVersion,
	};

	for (size_t i = 0; i < sizeof(backend); i++)
		typeset_add(&conn_backend_inspect, backend[i]);
}

static pthread_once_t conn_types_once = PTHREAD_ONCE_INIT;

static void conn_run(struct conn *c);
static void conn_close(struct conn *c, const char *reason);
static void conn_timer_update(struct conn *c);

/*
 * A connection that is winding down (CLOSING, or a client that said goodbye) gets a bounded
 * time to deliver its last bytes: a peer that stops reading cannot pin it, nor a drain.
 */
#define CONN_LINGER_MAX_MS 5000

static uint64_t conn_linger_ns(const struct conn *c)
{
	uint64_t ms = c->config->message_timeout_ms < CONN_LINGER_MAX_MS ? c->config->message_timeout_ms
									 : CONN_LINGER_MAX_MS;

	return ms * NSEC_PER_MSEC;
}

static void conn_linger(struct conn *c)
{
	if (!c->linger_deadline)
		c->linger_deadline = c->worker->loop.now + conn_linger_ns(c);
}

/* The metrics label of a state: the three COPY states fold into one. */
static unsigned conn_mstate(enum conn_state s)
{
	switch (s) {
	case CONN_STARTUP:
		return MSTATE_STARTUP;
	case CONN_CONNECTING:
		return MSTATE_CONNECTING;
	case CONN_AUTH:
		return MSTATE_AUTH;
	case CONN_READY:
		return MSTATE_IDLE;
	case CONN_BUSY:
		return MSTATE_ACTIVE;
	case CONN_COPY_IN:
	case CONN_COPY_OUT:
	case CONN_COPY_BOTH:
		return MSTATE_COPY;
	case CONN_CANCEL:
		return MSTATE_CANCEL;
	default:
		return MSTATE_CLOSING;
	}
}

/* This worker's metrics shard and the families' ids. */
static struct metrics_shard *conn_metrics(const struct conn *c)
{
	return c->worker->metrics;
}

static const struct metrics_std *conn_mstd(const struct conn *c)
{
	return &c->worker->relay->mstd;
}

/* A connection that never became a working session is a refusal; each counts once. */
static void conn_refused(struct conn *c, enum metrics_refuse_reason why)
{
	if (c->refusal_counted || conn_metrics(c) == NULL)
		return;
	c->refusal_counted = true;
	metrics_inc(conn_metrics(c), conn_mstd(c)->refused, why);
}

/* The single writer of c->state. */
static void conn_set_state(struct conn *c, enum conn_state s)
{
	struct metrics_shard *m = conn_metrics(c);

	if (c->state == s)
		return;
	log_debug("conn_state", "session=%s %s -> %s", c->session.id_hex,
		  conn_state_to_str(c->state), conn_state_to_str(s));
	if (m) {
		metrics_gauge_add(m, conn_mstd(c)->sessions, conn_mstate(c->state), -1);
		if (s != CONN_CLOSED)
			metrics_gauge_add(m, conn_mstd(c)->sessions, conn_mstate(s), 1);
	}
	__atomic_store_n(&c->state, s, __ATOMIC_RELAXED); /* the admin listing reads it */
	if (s == CONN_CLOSING)
		conn_linger(c);
}

json_t *conn_admin_json(struct conn *c, uint64_t now)
{
	char stmt[ADMIN_TEXT_MAX];
	struct admin_session_view v = {
		.state = conn_state_to_str(__atomic_load_n(&c->state, __ATOMIC_RELAXED)),
		.last_statement = stmt,
		.last_latency_ns = __atomic_load_n(&c->last_latency_ns, __ATOMIC_RELAXED),
		.now_mono_ns = now,
		.errors = __atomic_load_n(&c->errors, __ATOMIC_RELAXED),
	};

	char normalised[ADMIN_TEXT_MAX];
	size_t len = admin_text_get(&c->last_statement, stmt, sizeof(stmt));

	/* Literals leave the listing here, on the admin thread, never on the data path. */
	if (!len)
		v.last_statement = NULL;
	else if (sql_normalize(stmt, len, 0, normalised, sizeof(normalised), NULL) != -EINVAL)
		v.last_statement = normalised;
	return admin_session_json(&c->session, &v);
}

/* Tell live tools (admin "subscribe") about a session; one atomic load when nobody listens. */
static void conn_publish(struct conn *c, const char *event)
{
	struct admin_server *a = __atomic_load_n(&c->worker->relay->admin, __ATOMIC_ACQUIRE);

	if (admin_server_has_subscribers(a))
		admin_server_publish(a, event,
				     json_pack("{s:o}", "session", conn_admin_json(c, clock_mono_ns())));
}

static bool conn_logged_in(const struct conn *c)
{
	return c->state >= CONN_READY && c->state <= CONN_COPY_BOTH;
}

static void conn_set_reason(struct conn *c, const char *reason)
{
	if (!c->session.end_reason[0])
		snprintf(c->session.end_reason, sizeof(c->session.end_reason), "%s", reason);
}

/* ---- buffers ------------------------------------------------------------------------ */

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

static void conn_dir_release(struct conn *c, struct conn_dir *d)
{
	if (d->buf) {
		conn_buf_put(c, d->buf);
		d->buf = NULL;
	}
	d->framed = 0;
}

/* Make sure d->buf exists and can take `extra` more bytes at its tail. 0 or -ENOMEM. */
static int conn_dir_reserve(struct conn *c, struct conn_dir *d, uint32_t extra)
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

/*
 * Put bytes the proxy itself says into a stream, after what is already framed and before
 * any partial message: only called with the stream at a message boundary.
 */
static int conn_inject(struct conn *c, enum conn_dir_id id, const uint8_t *bytes, uint32_t n)
{
	struct conn_dir *d = &c->dir[id];
	uint8_t *at;
	uint32_t rest;

	if (conn_dir_reserve(c, d, n))
		return -ENOMEM;
	at = d->buf->data + d->buf->head + d->framed;
	rest = buf_len(d->buf) - d->framed;
	memmove(at + n, at, rest);
	memcpy(at, bytes, n);
	d->buf->tail += n;
	d->framed += n;
	return 0;
}

/* ---- errors ------------------------------------------------------------------------ */

/* Connected, authenticated or beyond, and not known to be gone. */
static bool conn_upstream_usable(const struct conn *c)
{
	return c->upstream_fd >= 0 && c->state >= CONN_AUTH && c->state != CONN_CANCEL &&
	       !c->dir[CONN_S2C].eof && !c->upstream_broken;
}

/* Close the upstream socket now; bytes still meant for it are dropped. */
static void conn_upstream_drop(struct conn *c);

/*
 * A send upstream failed (the server reset or closed). Its last words (a FATAL saying why)
 * may still be in the socket: stop sending, keep reading it until EOF.
 */
static void conn_upstream_broke(struct conn *c)
{
	c->upstream_broken = true;
	conn_dir_release(c, &c->dir[CONN_C2S]);
	c->dir[CONN_C2S].stream_left = 0;
	c->dir[CONN_S2C].can_read = true;
	c->dir[CONN_S2C].hup = true;
}

static void conn_upstream_drop(struct conn *c)
{
	if (c->upstream_fd >= 0) {
		loop_del(&c->worker->loop, &c->upstream_watch);
		close(c->upstream_fd);
		c->upstream_fd = -1;
	}
	conn_dir_release(c, &c->dir[CONN_C2S]);
	c->dir[CONN_C2S].stream_left = 0;
}

/*
 * End the session. The client hears `severity sqlstate: message` when its stream is at a
 * message boundary and the server has not already said its own last word; the server hears
 * Terminate when the client stream is at a boundary after login. Then both sides are
 * flushed and closed.
 */
static void conn_fail(struct conn *c, const char *sqlstate, const char *message,
		      const char *reason)
{
	struct conn_dir *s2c = &c->dir[CONN_S2C], *c2s = &c->dir[CONN_C2S];
	uint8_t msg[512];
	int n;

	if (c->state >= CONN_CLOSING)
		return;
	conn_set_reason(c, reason);
	log_debug("conn_fail", "session=%s sqlstate=%s %s", c->session.id_hex, sqlstate, message);

	/* A partial server message cannot be finished: drop it, and say nothing mid-message. */
	if (s2c->buf)
		s2c->buf->tail = s2c->buf->head + s2c->framed;
	if (s2c->stream_left == 0 && !c->server_sent_fatal && c->state != CONN_CANCEL &&
	    !c->dir[CONN_C2S].eof) {
		n = proto_write_error(msg, sizeof(msg), "FATAL", sqlstate, message);
		if (n > 0 && conn_inject(c, CONN_S2C, msg, (uint32_t)n))
			log_warn("conn_fail", "session=%s no memory for the final error",
				 c->session.id_hex);
	}
	/* Unframed client bytes are never forwarded: that is what failed. */
	if (c2s->buf)
		c2s->buf->tail = c2s->buf->head + c2s->framed;
	if (!conn_upstream_usable(c) || c2s->stream_left) {
		/* Not connected, gone, or holding half a message it will never get the rest
		 * of: nothing more goes upstream. */
		conn_upstream_drop(c);
	} else if (conn_logged_in(c)) {
		n = proto_write_terminate(msg, sizeof(msg));
		if (n > 0 && conn_inject(c, CONN_C2S, msg, (uint32_t)n))
			log_debug("conn_fail", "session=%s no memory for Terminate", c->session.id_hex);
	}
	conn_set_state(c, CONN_CLOSING);
}

void conn_terminate(struct conn *c, const char *sqlstate, const char *message,
		    const char *reason)
{
	if (c->state >= CONN_CLOSING || c->client_done) {
		conn_close(c, reason); /* nothing more is owed to anyone */
		return;
	}
	conn_fail(c, sqlstate, message, reason);
	conn_run(c);
}

static void conn_fail_proto(struct conn *c, int status, const char *who)
{
	char text[160];

	snprintf(text, sizeof(text), "%s: %s", who, proto_err_str(status));
	conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION, text, text);
}

/* ---- upstream ------------------------------------------------------------------------ */

static void conn_upstream_event(struct loop *loop, struct loop_watch *w, uint32_t events);
static void conn_client_event(struct loop *loop, struct loop_watch *w, uint32_t events);

static int conn_socket_for(int family)
{
	int one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/*
 * Whether the server will see the real client. Remote (TPROXY) clients where it does not
 * are worth a line each; local steered clients all share the reason, so it is said once
 * per worker. Both are counted for `pgwardenctl status`.
 */
static void conn_note_upstream_source(struct conn *c, bool client_address, const char *why)
{
	struct relay *r = c->worker->relay;

	if (client_address) {
		__atomic_add_fetch(&r->upstream_from_client, 1, __ATOMIC_RELAXED);
		return;
	}
	why = why ? why : "unknown";
	__atomic_add_fetch(&r->upstream_from_relay, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&r->upstream_from_relay_why, why, __ATOMIC_RELAXED);
	if (c->session.route == SESSION_ROUTE_TPROXY) {
		log_info("upstream_source", "session=%s the server sees pgwarden's address, not the "
			 "client's: %s", c->session.id_hex, why);
	} else if (!c->worker->told_relay_source) {
		c->worker->told_relay_source = true;
		log_info("upstream_source", "steered local clients reach the server from pgwarden's "
			 "address, not their own (%s); their identity is in the session log", why);
	}
}

/*
 * Before connecting upstream: the relay's mark keeps the steering hooks and nft rules from
 * sending pgwarden's own connection back into pgwarden, and a TPROXY'd client's own address
 * as the source lets the server see the real client. 0 when the server will see the
 * client's address, 1 when pgwarden's (why set), -errno.
 */
static int conn_upstream_prepare(struct conn *c, int fd, const char **why)
{
	struct steer_origin *so = c->worker->steer;
	int r;

	/* Without the maps (no CAP_BPF, say) a TPROXY'd session is still one: it gets the
	 * relay's (default) mark and the client's address like any other. */
	*why = "explicit route";
	if (!so && c->session.route == SESSION_ROUTE_EXPLICIT)
		return 1;
	r = steer_upstream_prepare(fd, &c->session, steer_origin_relay_mark(so),
				   c->config->transparent_source, why);
	if (r == -EPERM && c->session.route == SESSION_ROUTE_EXPLICIT)
		return 1; /* unprivileged and explicit: nothing to protect against */
	return r;
}

/*
 * Start a non-blocking connect to the server: PostgreSQL's Unix socket at unix_path when
 * given, else `to`. Completion arrives as an upstream event. The server sees the real
 * client where it can: its address over TCP (TPROXY), its uid and gid over a Unix socket.
 */
static int conn_upstream_connect(struct conn *c, const struct addr *to, const char *unix_path)
{
	int fd = conn_socket_for(unix_path ? AF_UNIX : to->ss.sa.sa_family);
	const char *why = NULL;
	int r, err;

	if (fd < 0)
		return fd;
	r = conn_upstream_prepare(c, fd, &why);
	if (r >= 0 && unix_path)
		r = steer_upstream_connect_unix(fd, unix_path, &c->session,
						c->config->transparent_source, &why);
	else if (r >= 0 && connect(fd, &to->ss.sa, to->len) < 0 && errno != EINPROGRESS)
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	if (c->session.route != SESSION_ROUTE_EXPLICIT)
		conn_note_upstream_source(c, r == 0, why);
	err = loop_add(&c->worker->loop, &c->upstream_watch, fd,
		       EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	if (err) {
		close(fd);
		return err;
	}
	c->upstream_fd = fd;
	c->upstream_writable = false;
	c->connect_deadline = c->worker->loop.now + c->config->connect_timeout_ms * NSEC_PER_MSEC;
	return 0;
}

static void conn_upstream_connected(struct conn *c)
{
	int err = 0;
	socklen_t len = sizeof(err);
	char text[300], where[SESSION_UPSTREAM_STRLEN];

	if (getsockopt(c->upstream_fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY)
		return;
	if (err) {
		snprintf(text, sizeof(text), "could not connect to the database server at %s: %s",
			 c->state == CONN_CANCEL
				 ? "cancel target"
				 : session_upstream_text(&c->session, where, sizeof(where)),
			 strerror(err));
		conn_refused(c, MREFUSE_UPSTREAM);
		conn_fail(c, SQLSTATE_CONNECTION_FAILURE, text, "upstream connect failed");
		return;
	}
	c->upstream_writable = true;
	if (c->state == CONN_CONNECTING)
		conn_set_state(c, CONN_AUTH);
}

/* ---- the startup family ------------------------------------------------------------- */

/* The client's CancelRequest (already consumed from the stream) with its pid and key. */
static void conn_cancel_request(struct conn *c, uint32_t pid, const uint8_t *key,
				uint32_t key_len)
{
	struct relay *r = c->worker->relay;
	struct cancel_target t;
	uint8_t pkt[PROTO_STARTUP_HEADER_LEN + 4 + PROTO_CANCEL_KEY_MAX];
	int n, err;

	conn_set_state(c, CONN_CANCEL);
	if (!cancel_map_lookup(r->cancels, pid, key, key_len, &t)) {
		/* [ops #14] A key of the pgwardend this one replaced (still draining)? */
		if (handover_forward_cancel(pid, key, key_len)) {
			log_info("cancel_forwarded", "pid=%u to the previous pgwardend", pid);
			conn_close(c, "cancel forwarded");
			return;
		}
		/* Like the server: a wrong key gets no answer and cancels nothing. */
		log_info("cancel_refused", "pid=%u no session holds this cancel key", pid);
		conn_close(c, "cancel key did not match");
		return;
	}
	n = proto_write_cancel(pkt, sizeof(pkt), t.pid, t.server_key, t.key_len);
	err = n > 0 ? conn_upstream_connect(c, &t.upstream,
					    t.upstream_unix[0] ? t.upstream_unix : NULL)
		    : -EINVAL;
	if (!err)
		err = conn_inject(c, CONN_C2S, pkt, (uint32_t)n);
	if (err) {
		log_warn("cancel_failed", "pid=%u could not reach the server: %s", t.pid,
			 strerror(-err));
		conn_close(c, "cancel forward failed");
		return;
	}
	c->session.backend_pid = t.pid;
	log_info("cancel_forwarded", "pid=%u", t.pid);
}

static int conn_startup_message(struct conn *c, const struct proto_startup *st)
{
	struct session *s = &c->session;
	const struct stage_pipeline *p = &c->worker->relay->pipeline;
	struct stage_result res;
	int err;

	if (session_set_startup(s, st)) {
		conn_fail(c, "53200", "out of memory", "out of memory");
		return -ENOMEM;
	}
	if (!relay_session_reserve(c->worker->relay, c->config->max_connections)) {
		log_warn("connection_refused", "session=%s reason=max_connections (%u) reached",
			 s->id_hex, c->config->max_connections);
		conn_fail(c, SQLSTATE_TOO_MANY_CONNECTIONS, "sorry, too many clients already",
			  "max_connections reached");
		conn_refused(c, MREFUSE_MAX_CONNECTIONS);
		return -EAGAIN;
	}
	c->holds_session = true;
	if (stage_chain_init(&c->chain, p, s, NULL, NULL)) {
		conn_fail(c, "53200", "out of memory", "out of memory");
		return -ENOMEM;
	}
	__atomic_store_n(&c->session_started, true, __ATOMIC_RELEASE);
	conn_publish(c, "session_start");
	stage_run_session_start(&c->chain, NULL, c->worker->loop.now, &res);
	if (res.verdict != STAGE_FORWARD) {
		conn_fail(c, res.sqlstate, res.message, "refused at session start");
		return -EPERM;
	}
	err = conn_upstream_connect(c, &s->upstream, s->upstream_unix);
	if (err) {
		char text[300], where[SESSION_UPSTREAM_STRLEN];

		snprintf(text, sizeof(text), "could not connect to the database server at %s: %s",
			 session_upstream_text(s, where, sizeof(where)), strerror(-err));
		conn_refused(c, MREFUSE_UPSTREAM);
		conn_fail(c, SQLSTATE_CONNECTION_FAILURE, text, "upstream connect failed");
		return err;
	}
	conn_set_state(c, CONN_CONNECTING);
	return 0;
}

/*
 * Frame one startup-family packet at the start of the unframed bytes. Returns 1 when the
 * packet was handled and framing may go on, 0 to stop framing, < 0 after a failure.
 */
static int conn_frame_startup(struct conn *c, struct conn_dir *d, uint8_t *p, uint32_t avail)
{
	struct proto_startup st;
	uint32_t len;
	uint8_t no = 'N';
	int r;

	if (proto_startup_is_tls(p, avail)) {
		/* A direct-TLS ClientHello: it would not understand an ErrorResponse. */
		conn_refused(c, MREFUSE_TLS);
		conn_close(c, "direct TLS connection refused: TLS is not enabled");
		return -EPROTO;
	}
	r = proto_startup_frame(p, avail, &len);
	if (r == PROTO_NEED_MORE)
		return 0;
	if (r < 0) {
		conn_refused(c, MREFUSE_PROTOCOL);
		conn_fail_proto(c, r, "invalid startup packet");
		return -EPROTO;
	}
	if (avail < len) {
		d->need = len;
		return 0;
	}
	d->need = 0;
	r = proto_startup_parse(p, len, &st);
	if (r < 0) {
		char text[256];
		const char *sqlstate = SQLSTATE_PROTOCOL_VIOLATION;

		/* PostgreSQL's own words for a refused startup packet; an unknown protocol
		 * version is a protocol violation (08P01) whatever the server would say. */
		proto_startup_explain(p, len, text, sizeof(text), &sqlstate);
		conn_fail(c, r == PROTO_ERR_VERSION ? SQLSTATE_PROTOCOL_VIOLATION : sqlstate, text,
			  "invalid startup packet");
		conn_refused(c, MREFUSE_PROTOCOL);
		return -EPROTO;
	}
	switch (st.kind) {
	case PROTO_SSL_REQUEST:
	case PROTO_GSSENC_REQUEST: {
		uint8_t bit = st.kind == PROTO_SSL_REQUEST ? STARTUP_SEEN_SSL : STARTUP_SEEN_GSSENC;

		if (c->startup_requests & bit) {
			conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
				  "invalid startup packet: encryption was already negotiated",
				  "repeated encryption request");
			return -EPROTO;
		}
		c->startup_requests |= bit;
		/* Encryption is not offered yet: the request is answered and not forwarded. */
		d->buf->head += len;
		if (conn_inject(c, CONN_S2C, &no, 1)) {
			conn_close(c, "out of memory");
			return -ENOMEM;
		}
		return 1;
	}
	case PROTO_CANCEL_REQUEST: {
		uint8_t key[PROTO_CANCEL_KEY_MAX];
		uint32_t key_len = st.cancel_key_len;

		/* Consume the client's packet first: only the rewritten one may ever leave. */
		memcpy(key, st.cancel_key, key_len);
		d->buf->head += len;
		conn_cancel_request(c, st.cancel_pid, key, key_len);
		return 0;
	}
	case PROTO_STARTUP_MESSAGE:
		/* The packet goes upstream exactly as sent. */
		d->framed += len;
		return conn_startup_message(c, &st) ? -EPROTO : 0;
	}
	return 0;
}

/* ---- framing: client → server ------------------------------------------------------- */

/*
 * A message somebody must inspect is held until it is whole, up to CONN_INSPECT_MAX.
 * Returns 0 when it is all here, 1 to wait for the rest, < 0 after failing the session.
 */
static int conn_hold_whole(struct conn *c, struct conn_dir *d, uint32_t total, uint32_t avail,
			   const char *too_large)
{
	if (total > CONN_INSPECT_MAX) {
		conn_fail(c, "54000", too_large, "message too large for inspection");
		return -EMSGSIZE;
	}
	if (avail < total) {
		d->need = total;
		return 1;
	}
	d->need = 0;
	return 0;
}

enum conn_admit {
	CONN_ADMIT_FORWARD,
	CONN_ADMIT_WAIT,    /* valid, but not before login completes */
	CONN_ADMIT_INVALID, /* a protocol violation in this state */
};

/*
 * May this client message pass now? During authentication only answers to the server's
 * request may. A client that pipelined its first queries behind the StartupMessage (fine
 * with trust authentication) is held until login completes, as the server would read them.
 */
static enum conn_admit conn_frontend_admit(const struct conn *c, uint8_t type)
{
	bool answering = c->auth_requested && !c->session.auth.ok;

	if (c->state != CONN_AUTH)
		return type == PqMsg_PasswordMessage ? CONN_ADMIT_INVALID : CONN_ADMIT_FORWARD;
	if (type == PqMsg_Terminate)
		return CONN_ADMIT_FORWARD;
	if (type == PqMsg_PasswordMessage)
		return answering ? CONN_ADMIT_FORWARD : CONN_ADMIT_INVALID;
	return answering ? CONN_ADMIT_INVALID : CONN_ADMIT_WAIT;
}

/* FNV-1a: prepared statement names are short and chosen by the client, not an adversary
 * of the cache (a collision only mislabels a metric). */
static uint64_t conn_name_hash(const char *name)
{
	uint64_t h = 1469598103934665603ULL;

	for (; *name; name++)
		h = (h ^ (uint8_t)*name) * 1099511628211ULL;
	return h;
}

static void conn_stmt_remember(struct conn *c, const char *name, enum sql_class cls)
{
	uint64_t h;

	if (!name[0]) {
		c->unnamed_class = (uint8_t)cls;
		return;
	}
	h = conn_name_hash(name);
	for (unsigned i = 0; i < CONN_STMT_CACHE; i++)
		if (c->stmt_cache[i].name_hash == h) {
			c->stmt_cache[i].cls = (uint8_t)cls;
			return;
		}
	c->stmt_cache[c->stmt_cache_next].name_hash = h;
	c->stmt_cache[c->stmt_cache_next].cls = (uint8_t)cls;
	c->stmt_cache_next = (uint8_t)((c->stmt_cache_next + 1) % CONN_STMT_CACHE);
}

static enum sql_class conn_stmt_class(const struct conn *c, const char *name)
{
	uint64_t h;

	if (!name[0])
		return (enum sql_class)c->unnamed_class;
	h = conn_name_hash(name);
	for (unsigned i = 0; i < CONN_STMT_CACHE; i++)
		if (c->stmt_cache[i].name_hash == h)
			return (enum sql_class)c->stmt_cache[i].cls;
	return SQL_CLASS_OTHER; /* evicted, or prepared before pgwarden saw it */
}

static void conn_count_statement(struct conn *c, enum sql_class cls)
{
	if (conn_metrics(c))
		metrics_inc(conn_metrics(c), conn_mstd(c)->statements, sql_class_metric(cls));
}

/*
 * What a whole Query or Parse says: its text for the admin listing (the start of it), and
 * its statements' classes for statements_total (Query: now, each statement; Parse: when its
 * portals are executed).
 */
static void conn_note_statement(struct conn *c, const struct proto_msg *m)
{
	const char *sql = NULL, *name = "";
	uint16_t nparams;
	int r = m->type == PqMsg_Query ? proto_read_query(m, &sql)
				       : proto_read_parse(m, &name, &sql, &nparams);
	size_t len;

	if (r != PROTO_OK)
		return;
	len = strlen(sql);
	admin_text_set(&c->last_statement, sql, len < ADMIN_TEXT_MAX ? len : ADMIN_TEXT_MAX);
	if (m->type == PqMsg_Parse) {
		conn_stmt_remember(c, name, sql_classify(sql, len, 0, NULL));
		return;
	}
	struct sql_splitter sp;
	struct sql_stmt st;

	sql_split_init(&sp, sql, len, 0);
	while (sql_split_next(&sp, &st))
		conn_count_statement(c, sql_classify(sql + st.off, st.len, 0, NULL));
}

/* Bind names the statement its portal runs; only the start of a (possibly huge) Bind is
 * needed, so it is read from whatever bytes are at hand. */
static void conn_note_bind(struct conn *c, const uint8_t *at, uint32_t avail)
{
	const char *portal = (const char *)at + PROTO_HEADER_LEN, *stmt, *end;
	const char *limit = (const char *)at + avail;

	c->portal_class = SQL_CLASS_OTHER;
	end = memchr(portal, 0, (size_t)(limit - portal));
	if (!end)
		return;
	stmt = end + 1;
	if (stmt < limit && memchr(stmt, 0, (size_t)(limit - stmt)))
		c->portal_class = (uint8_t)conn_stmt_class(c, stmt);
}

/* Bookkeeping for a client message about to be forwarded. */
static void conn_frontend_seen(struct conn *c, uint8_t type)
{
	struct metrics_shard *m = conn_metrics(c);

	if (type == PqMsg_Execute)
		conn_count_statement(c, (enum sql_class)c->portal_class);
	else if (m && type == PqMsg_FunctionCall)
		metrics_inc(m, conn_mstd(c)->statements, MSTMT_FUNCTION);
	if (!c->busy_since &&
	    (type == PqMsg_Query || type == PqMsg_Execute || type == PqMsg_FunctionCall))
		c->busy_since = c->msg_open ? c->msg_start : c->worker->loop.now; /* [ops #14] */
	switch (type) {
	case PqMsg_Query:
	case PqMsg_FunctionCall:
		c->session.statements += type == PqMsg_Query;
		c->pending++;
		c->syncs_since_exec = 0;
		break;
	case PqMsg_Sync:
		/* The server ignores a Sync it reads in COPY IN mode: it owes no answer. */
		if (c->state != CONN_COPY_IN) {
			c->pending++;
			c->syncs_since_exec++;
		}
		break;
	case PqMsg_Execute:
		c->session.statements++;
		c->syncs_since_exec = 0;
		break;
	case PqMsg_CopyDone:
	case PqMsg_CopyFail:
		if (c->state == CONN_COPY_IN)
			conn_set_state(c, CONN_BUSY);
		break;
	default:
		break;
	}
	if (c->state == CONN_READY && c->pending)
		conn_set_state(c, CONN_BUSY);
}

static int conn_frame_c2s_messages(struct conn *c, struct conn_dir *d,
				   const struct stage_pipeline *p, struct buf *b);

/*
 * The client's message at the framing point is incomplete: its clock starts when it was
 * first seen incomplete, not at the last read, so trickling bytes does not extend it.
 */
static void conn_client_message_open(struct conn *c)
{
	if (!c->msg_open) {
		c->msg_open = true;
		c->msg_start = c->worker->loop.now;
	}
}

static int conn_frame_c2s(struct conn *c, struct conn_dir *d)
{
	const struct stage_pipeline *p = &c->worker->relay->pipeline;
	int r = conn_frame_c2s_messages(c, d, p, d->buf);

	/* A failure may have replaced or released the buffer: look again, not at b. */
	if (c->state >= CONN_CLOSING)
		return r;
	if (d->stream_left || (d->buf && buf_len(d->buf) > d->framed))
		conn_client_message_open(c);
	else
		c->msg_open = false;
	return r;
}

static int conn_frame_c2s_messages(struct conn *c, struct conn_dir *d,
				   const struct stage_pipeline *p, struct buf *b)
{
	while (d->framed < buf_len(b)) {
		uint8_t *at = b->data + b->head + d->framed;
		uint32_t avail = buf_len(b) - d->framed, total;
		enum conn_admit admit;
		struct proto_msg m;
		int r;

		if (d->stream_left) {
			uint32_t take = avail < d->stream_left ? avail : d->stream_left;

			d->framed += take;
			d->stream_left -= take;
			if (!d->stream_left)
				c->msg_open = false;
			continue;
		}
		if (c->state == CONN_STARTUP) {
			r = conn_frame_startup(c, d, at, avail);
			if (r <= 0)
				return r;
			continue;
		}
		if (c->state == CONN_CONNECTING || c->state == CONN_CANCEL)
			return 0; /* nothing may pass until the server has spoken */
		if (c->state >= CONN_CLOSING) {
			b->tail = b->head + d->framed; /* bytes after Terminate go nowhere */
			return 0;
		}
		r = proto_frame(at, avail, PROTO_FRONTEND, c->config->max_message_size, &m);
		if (r == PROTO_NEED_MORE)
			return 0;
		if (r < 0) {
			conn_fail_proto(c, r, "invalid message from client");
			return -EPROTO;
		}
		admit = conn_frontend_admit(c, m.type);
		if (admit == CONN_ADMIT_WAIT)
			return 0;
		if (admit == CONN_ADMIT_INVALID) {
			char text[120];

			snprintf(text, sizeof(text), "invalid frontend message type %d in state %s",
				 m.type, conn_state_to_str(c->state));
			conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION, text, "invalid message type");
			return -EPROTO;
		}
		total = PROTO_HEADER_LEN + m.body_len;
		/* A client message that fits in one buffer leaves only whole: a slow or
		 * stalled client never leaves the server holding half a message. Larger ones
		 * (COPY data, big parameters) stream by count. */
		if (avail < total && total <= c->config->buffer_size) {
			d->need = total;
			return 0;
		}
		d->need = 0;
		if (c->chain.pipeline && stage_chain_wants(&c->chain, PROTO_FRONTEND, m.type)) {
			struct stage_result res;

			r = conn_hold_whole(c, d, total, avail, "message too large for inspection");
			if (r)
				return r > 0 ? 0 : r;
			m.body = at + PROTO_HEADER_LEN;
			stage_run_frontend(&c->chain, &m, 0, NULL, c->worker->loop.now, &res);
			if (res.verdict != STAGE_FORWARD) {
				conn_fail(c, res.sqlstate, res.message, "closed by policy");
				return -EPERM;
			}
		}
		if ((m.type == PqMsg_Query || m.type == PqMsg_Parse) && avail >= total) {
			m.body = at + PROTO_HEADER_LEN;
			conn_note_statement(c, &m);
		} else if (m.type == PqMsg_Query) {
			conn_count_statement(c, SQL_CLASS_UNKNOWN); /* too large to hold: streamed */
		} else if (m.type == PqMsg_Bind) {
			conn_note_bind(c, at, avail);
		}
		conn_frontend_seen(c, m.type);
		if (m.type == PqMsg_Terminate) {
			/* Forward it and drop whatever follows; answers to what the client sent
			 * before it still reach the client until the server closes. */
			d->framed += total;
			b->tail = b->head + d->framed;
			conn_set_reason(c, "client terminated");
			c->client_done = true;
			return 0;
		}
		if (avail >= total) {
			d->framed += total;
			c->msg_open = false;
		} else {
			d->framed += avail;
			d->stream_left = total - avail;
		}
	}
	return 0;
}

/* ---- framing: server → client ------------------------------------------------------- */

static bool conn_backend_allowed(const struct conn *c, uint8_t type)
{
	if (c->state == CONN_AUTH)
		return type == PqMsg_AuthenticationRequest || type == PqMsg_ErrorResponse ||
		       type == PqMsg_NoticeResponse || type == PqMsg_NegotiateProtocolVersion ||
		       type == PqMsg_ParameterStatus || type == PqMsg_BackendKeyData ||
		       type == PqMsg_ReadyForQuery;
	return type != PqMsg_AuthenticationRequest && type != PqMsg_BackendKeyData;
}

/* A whole server message the relay inspects. 0, or < 0 after failing the connection. */
static int conn_backend_message(struct conn *c, struct proto_msg *m, uint8_t *body)
{
	struct proto_error_fields ef;
	uint32_t code, pid, key_len;
	const uint8_t *key;
	uint8_t tx;
	int r = PROTO_OK;

	switch (m->type) {
	case PqMsg_AuthenticationRequest:
		r = proto_read_auth(m, &code);
		if (r == PROTO_OK && code == AUTH_REQ_OK) {
			if (!c->session.auth.method)
				c->session.auth.method = SESSION_AUTH_TRUST;
			if (session_set_verified(&c->session, c->session.auth.method, false,
						 c->session.user)) {
				conn_fail(c, "53200", "out of memory", "out of memory");
				return -ENOMEM;
			}
		} else if (r == PROTO_OK) {
			c->auth_requested = code != AUTH_REQ_SASL_FIN;
			if (code == AUTH_REQ_PASSWORD)
				c->session.auth.method = SESSION_AUTH_PASSWORD;
			else if (code == AUTH_REQ_MD5)
				c->session.auth.method = SESSION_AUTH_MD5;
			else if (code == AUTH_REQ_SASL)
				c->session.auth.method = SESSION_AUTH_SCRAM;
			else if (code == AUTH_REQ_GSS)
				c->session.auth.method = SESSION_AUTH_GSS;
			else if (code == AUTH_REQ_SSPI)
				c->session.auth.method = SESSION_AUTH_SSPI;
		}
		break;
	case PqMsg_BackendKeyData:
		r = proto_read_backend_key(m, &pid, &key, &key_len);
		if (r != PROTO_OK)
			break;
		/* Protocol 3.0 keys are exactly 4 bytes; longer ones exist only from 3.2 on. */
		if (PROTO_VERSION_MINOR(c->session.protocol) < 2 && key_len != 4) {
			r = PROTO_ERR_FORMAT;
			break;
		}
		if (c->cancel_handle) {
			r = PROTO_ERR_FORMAT; /* a second key would orphan the first mapping */
			break;
		}
		/* The client gets the server's pid and a key only pgwarden can map back. */
		c->cancel_handle = cancel_map_issue(c->worker->relay->cancels, &c->session.upstream,
						    c->session.upstream_unix,
						    pid, key, key_len, body + 4);
		if (!c->cancel_handle) {
			conn_fail(c, "53200", "could not issue a cancel key", "out of memory");
			return -ENOMEM;
		}
		c->session.backend_pid = pid;
		break;
	case PqMsg_ReadyForQuery:
		r = proto_read_ready(m, &tx);
		if (r != PROTO_OK)
			break;
		c->session.tx_status = tx;
		if (c->pending)
			c->pending--;
		if (c->state == CONN_AUTH)
			c->pending = 0;
		if (!c->pending && c->busy_since && conn_logged_in(c)) {
			/* [ops #14] the client's clock stops when this ReadyForQuery has been
			 * written to the client (conn_flush), the server's here */
			c->rfq_owed_since = c->busy_since;
			if (conn_metrics(c) && c->upstream_since)
				metrics_observe(conn_metrics(c), conn_mstd(c)->upstream_duration, 0,
						c->worker->loop.now - c->upstream_since);
			c->busy_since = c->upstream_since = 0;
		}
		conn_set_state(c, c->pending ? CONN_BUSY : CONN_READY);
		break;
	case PqMsg_ErrorResponse:
		__atomic_store_n(&c->errors, c->errors + 1, __ATOMIC_RELAXED);
		if (conn_metrics(c))
			metrics_inc(conn_metrics(c), conn_mstd(c)->statement_errors, 0);
		r = proto_read_error(m, &ef);
		if (r == PROTO_OK && ef.severity &&
		    (strcmp(ef.severity, "FATAL") == 0 || strcmp(ef.severity, "PANIC") == 0)) {
			c->server_sent_fatal = true;
			if (!c->session.end_reason[0])
				snprintf(c->session.end_reason, sizeof(c->session.end_reason),
					 "server FATAL %s", ef.sqlstate ? ef.sqlstate : "");
			/* The server turning a login away (bad password, unknown role or
			 * database, no pg_hba entry, its own connection limit). */
			if (c->state == CONN_AUTH)
				conn_refused(c, ef.sqlstate && strcmp(ef.sqlstate, "53300") == 0
							? MREFUSE_MAX_CONNECTIONS
							: MREFUSE_AUTH);
		}
		break;
	case PqMsg_CopyInResponse:
		/* Syncs pipelined behind the COPY's Execute reach the server in COPY IN mode,
		 * where it ignores them. */
		c->pending -= c->syncs_since_exec < c->pending ? c->syncs_since_exec : c->pending;
		c->syncs_since_exec = 0;
		conn_set_state(c, CONN_COPY_IN);
		break;
	case PqMsg_CopyOutResponse:
		conn_set_state(c, CONN_COPY_OUT);
		break;
	case PqMsg_CopyBothResponse:
		conn_set_state(c, CONN_COPY_BOTH);
		break;
	default:
		break;
	}
	if (r < 0) {
		conn_fail_proto(c, r, "invalid message from server");
		return -EPROTO;
	}
	return 0;
}

static int conn_frame_s2c(struct conn *c, struct conn_dir *d)
{
	struct buf *b = d->buf;

	while (d->framed < buf_len(b)) {
		uint8_t *at = b->data + b->head + d->framed;
		uint32_t avail = buf_len(b) - d->framed, total;
		struct proto_msg m;
		bool relay_wants, stage_wants;
		int r;

		if (d->stream_left) {
			uint32_t take = avail < d->stream_left ? avail : d->stream_left;

			d->framed += take;
			d->stream_left -= take;
			continue;
		}
		if (c->state >= CONN_CLOSING)
			return 0;
		r = proto_frame(at, avail, PROTO_BACKEND, c->config->max_message_size, &m);
		if (r == PROTO_NEED_MORE)
			return 0;
		if (r < 0 || !conn_backend_allowed(c, m.type)) {
			conn_fail_proto(c, r < 0 ? r : PROTO_ERR_TYPE, "invalid message from server");
			return -EPROTO;
		}
		total = PROTO_HEADER_LEN + m.body_len;
		relay_wants = typeset_has(&conn_backend_inspect, m.type) && total <= CONN_INSPECT_MAX;
		stage_wants = c->chain.pipeline && stage_chain_wants(&c->chain, PROTO_BACKEND, m.type);
		if (relay_wants || stage_wants) {
			r = conn_hold_whole(c, d, total, avail,
					    "server message too large for inspection");
			if (r)
				return r > 0 ? 0 : r;
			m.body = at + PROTO_HEADER_LEN;
			if (relay_wants && conn_backend_message(c, &m, at + PROTO_HEADER_LEN))
				return -EPROTO;
			if (stage_wants) {
				struct stage_result res;

				stage_run_backend(&c->chain, &m, c->worker->loop.now, &res);
				if (res.verdict != STAGE_FORWARD) {
					conn_fail(c, res.sqlstate, res.message, "closed by policy");
					return -EPERM;
				}
			}
		} else if (m.type == PqMsg_CopyDone && c->state == CONN_COPY_OUT) {
			conn_set_state(c, CONN_BUSY);
		}
		if (avail >= total) {
			d->framed += total;
		} else {
			d->framed += avail;
			d->stream_left = total - avail;
		}
	}
	return 0;
}

/* ---- pumping ------------------------------------------------------------------------ */

static int conn_src_fd(const struct conn *c, enum conn_dir_id id)
{
	return id == CONN_C2S ? c->client_fd : c->upstream_fd;
}

static int conn_dst_fd(const struct conn *c, enum conn_dir_id id)
{
	return id == CONN_C2S ? c->upstream_fd : c->client_fd;
}

static bool *conn_dst_writable(struct conn *c, enum conn_dir_id id)
{
	return id == CONN_C2S ? &c->upstream_writable : &c->client_writable;
}

/* Remember when the client stopped taking bytes (its socket buffer is full). */
static void conn_note_blocked(struct conn *c, enum conn_dir_id id)
{
	if (id == CONN_S2C && !c->client_blocked_since)
		c->client_blocked_since = c->worker->loop.now;
}

/*
 * Send the framed bytes of d. Returns 0 when all left, 1 when the destination is full (or
 * not connected yet), < 0 when the destination failed.
 */
static int conn_flush(struct conn *c, enum conn_dir_id id)
{
	struct conn_dir *d = &c->dir[id];
	int fd = conn_dst_fd(c, id);
	bool *writable = conn_dst_writable(c, id);

	while (d->buf && d->framed) {
		ssize_t n;

		if (fd < 0 || !*writable)
			return 1;
		n = send(fd, d->buf->data + d->buf->head, d->framed, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				*writable = false;
				conn_note_blocked(c, id);
				return 1;
			}
			return -errno;
		}
		d->buf->head += (uint32_t)n;
		d->framed -= (uint32_t)n;
		if (d->framed) {
			*writable = false; /* a short send means the socket buffer is full */
			conn_note_blocked(c, id);
			return 1;
		}
	}
	if (id == CONN_S2C) {
		c->client_blocked_since = 0;
		if (c->rfq_owed_since) { /* [ops #14] the client's clock: its ReadyForQuery left */
			uint64_t took = c->worker->loop.now - c->rfq_owed_since;

			__atomic_store_n(&c->last_latency_ns, (int64_t)took, __ATOMIC_RELAXED);
			if (conn_metrics(c))
				metrics_observe(conn_metrics(c), conn_mstd(c)->query_duration, 0, took);
			c->rfq_owed_since = 0;
		}
	} else if (c->busy_since && !c->upstream_since)
		c->upstream_since = c->worker->loop.now;
	if (d->buf && buf_len(d->buf) == 0)
		conn_dir_release(c, d);
	return 0;
}

/* Read once from the source of d into the scratch buffer or d's own buffer. */
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
	do {
		n = recv(conn_src_fd(c, id), d->buf->data + d->buf->tail, room, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n > 0) {
		d->buf->tail += (uint32_t)n;
		/* Edge-triggered: a short read drained the socket, unless a hang-up is pending. */
		if ((uint32_t)n < room && !d->hup)
			d->can_read = false;
		if (id == CONN_C2S)
			c->session.bytes_from_client += (uint64_t)n;
		else
			c->session.bytes_from_server += (uint64_t)n;
		if (conn_metrics(c))
			metrics_add(conn_metrics(c), conn_mstd(c)->bytes,
				    id == CONN_C2S ? MDIR_FROM_CLIENT : MDIR_FROM_SERVER, (uint64_t)n);
	} else if (n == 0) {
		d->eof = true;
		d->can_read = false;
	} else if (errno == EAGAIN || errno == EWOULDBLOCK) {
		d->can_read = false;
	} else {
		n = -errno;
		d->eof = true;
		d->can_read = false;
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

static int conn_frame(struct conn *c, enum conn_dir_id id)
{
	return id == CONN_C2S ? conn_frame_c2s(c, &c->dir[id]) : conn_frame_s2c(c, &c->dir[id]);
}

static const char *conn_lost_reason(enum conn_dir_id id)
{
	return id == CONN_C2S ? "server connection lost" : "client connection lost";
}

/*
 * Move one direction forward as far as it can go: send, frame what is unframed (also bytes
 * that waited for a state change), read. Stops when the source is drained, the destination
 * is full, or the connection is closing.
 */
static void conn_pump(struct conn *c, enum conn_dir_id id)
{
	struct conn_dir *d = &c->dir[id];
	/* Nothing more is read from a client whose bytes have nowhere to go. */
	bool source_closed = id == CONN_C2S && (c->client_done || c->upstream_broken);
	int r;

	for (;;) {
		r = conn_flush(c, id);
		if (r < 0 && id == CONN_C2S) {
			conn_upstream_broke(c);
			break;
		}
		if (r < 0) {
			conn_close(c, conn_lost_reason(id));
			return;
		}
		if (r > 0 || c->state >= CONN_CLOSING || source_closed)
			break;
		if (d->buf && buf_len(d->buf) > d->framed) {
			uint32_t framed = d->framed, head = d->buf->head, tail = d->buf->tail;

			r = conn_frame(c, id);
			if (c->state == CONN_CLOSED)
				return;
			if (r < 0)
				break;
			if (d->framed != framed || d->buf->head != head || d->buf->tail != tail ||
			    c->state >= CONN_CLOSING)
				continue; /* progress: send it */
		}
		if (!d->can_read || d->eof || conn_src_fd(c, id) < 0)
			break;
		if (conn_read(c, id) <= 0)
			break;
		source_closed = id == CONN_C2S && (c->client_done || c->upstream_broken);
	}
	if (conn_settle(c, d))
		conn_close(c, "out of memory");
}

/* Wind down without a word to the client: it already said goodbye, or has gone. */
static void conn_finish(struct conn *c)
{
	conn_upstream_drop(c);
	conn_set_state(c, CONN_CLOSING);
}

/* A source reached end of stream (or failed): decide what the other side hears. */
static void conn_handle_eof(struct conn *c)
{
	struct conn_dir *c2s = &c->dir[CONN_C2S], *s2c = &c->dir[CONN_S2C];

	if (s2c->eof) {
		if (c->client_done) {
			conn_finish(c); /* the server closed after the client's goodbye */
			return;
		}
		/* The server went away. Unless it said why itself, the client hears 08006. */
		conn_fail(c, SQLSTATE_CONNECTION_FAILURE,
			  "server closed the connection unexpectedly",
			  c->server_sent_fatal ? "server closed after FATAL" : "server closed");
		return;
	}
	if (!c2s->eof || c->client_done)
		return;
	conn_set_reason(c, c->state == CONN_STARTUP && !c->session_started
				   ? "client closed before startup"
				   : "client closed without Terminate");
	if (conn_logged_in(c) && conn_upstream_usable(c) && !c2s->stream_left &&
	    !(c2s->buf && buf_len(c2s->buf) > c2s->framed)) {
		/* A client that half-closed may still read the answers it is owed: say
		 * Terminate for it and let the server finish. */
		uint8_t x[PROTO_HEADER_LEN];
		int n = proto_write_terminate(x, sizeof(x));

		if (n > 0 && conn_inject(c, CONN_C2S, x, (uint32_t)n) == 0) {
			c->client_done = true;
			return;
		}
	}
	conn_fail(c, SQLSTATE_CONNECTION_FAILURE, "client closed", "client closed");
}

static bool conn_has_output(const struct conn *c)
{
	return (c->dir[CONN_C2S].buf && c->dir[CONN_C2S].framed && c->upstream_fd >= 0) ||
	       (c->dir[CONN_S2C].buf && c->dir[CONN_S2C].framed);
}

static void conn_run(struct conn *c)
{
	enum conn_state before;
	bool done_before;

	/* Repeat while the state moves: a failure or a login can unblock the other side. */
	do {
		before = c->state;
		done_before = c->client_done;
		conn_pump(c, CONN_C2S);
		if (c->state == CONN_CLOSED)
			return;
		conn_pump(c, CONN_S2C);
		if (c->state == CONN_CLOSED)
			return;
		if ((c->dir[CONN_C2S].eof || c->dir[CONN_S2C].eof) && c->state < CONN_CANCEL)
			conn_handle_eof(c);
	} while (c->state != before || c->client_done != done_before);

	if (c->state == CONN_CLOSING && !conn_has_output(c)) {
		conn_close(c, "closed");
		return;
	}
	if (c->state == CONN_CANCEL && c->upstream_writable && !conn_has_output(c) &&
	    c->dir[CONN_S2C].eof) {
		conn_close(c, "cancel forwarded");
		return;
	}
	conn_timer_update(c);
}

/* ---- events -------------------------------------------------------------------------- */

/* What an epoll event says about one socket: its stream may be read, it may be written. */
static void conn_note_event(struct conn_dir *source, bool *writable, uint32_t events)
{
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		source->can_read = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		source->hup = true;
	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		*writable = true;
}

static void conn_client_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	struct conn *c = container_of(w, struct conn, client_watch);

	if (c->state == CONN_CLOSED)
		return;
	conn_note_event(&c->dir[CONN_C2S], &c->client_writable, events);
	conn_run(c);
}

static void conn_upstream_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	struct conn *c = container_of(w, struct conn, upstream_watch);
	bool connecting = !c->upstream_writable &&
			  (c->state == CONN_CONNECTING || c->state == CONN_CANCEL);

	if (c->state == CONN_CLOSED)
		return;
	conn_note_event(&c->dir[CONN_S2C], &c->upstream_writable, events);
	/* The first writable event of a non-blocking connect carries its outcome. */
	if (connecting && c->upstream_writable) {
		c->upstream_writable = false;
		conn_upstream_connected(c);
	}
	conn_run(c);
}

/* ---- timers -------------------------------------------------------------------------- */

/* The earliest moment something about c must be decided; UINT64_MAX when none. */
static uint64_t conn_next_deadline(const struct conn *c)
{
	const struct conn_dir *d = &c->dir[CONN_C2S];
	uint64_t deadline = UINT64_MAX;

	if (c->state <= CONN_AUTH || c->state == CONN_CANCEL)
		deadline = c->startup_deadline;
	if (c->upstream_fd >= 0 && !c->upstream_writable &&
	    (c->state == CONN_CONNECTING || c->state == CONN_CANCEL) && c->connect_deadline < deadline)
		deadline = c->connect_deadline;
	if (c->state == CONN_CLOSING && c->linger_deadline < deadline)
		deadline = c->linger_deadline;
	/* A client that said goodbye is owed the server's answers, however long the server
	 * takes; but one that also stopped reading them has given up on them. */
	if (c->client_done && c->client_blocked_since) {
		uint64_t t = c->client_blocked_since + conn_linger_ns(c);

		if (t < deadline)
			deadline = t;
	}
	/* A half-sent client message, and pgwarden waiting on the client, not the server. */
	if (conn_logged_in(c) && !c->client_done && c->msg_open && !(d->buf && d->framed)) {
		uint64_t t = c->msg_start + c->config->message_timeout_ms * NSEC_PER_MSEC;

		if (t < deadline)
			deadline = t;
	}
	return deadline;
}

static void conn_timer_update(struct conn *c)
{
	struct loop *loop = &c->worker->loop;
	uint64_t deadline = conn_next_deadline(c);

	if (deadline == UINT64_MAX) {
		loop_timer_cancel(loop, &c->timer);
		return;
	}
	/* Lazy: an armed timer that fires early re-checks; only an earlier deadline re-arms. */
	if (loop_timer_armed(&c->timer) && c->timer.deadline <= deadline)
		return;
	if (loop_timer_arm(loop, &c->timer, deadline))
		conn_close(c, "out of memory");
}

static void conn_timer_fired(struct loop *loop, struct loop_timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);
	uint64_t deadline = conn_next_deadline(c);

	if (c->state == CONN_CLOSED)
		return;
	if (deadline > loop->now) {
		conn_timer_update(c);
		return;
	}
	if (c->state == CONN_CLOSING || c->client_done) {
		conn_close(c, "peer stopped reading while closing");
		return;
	}
	if (c->state == CONN_CONNECTING && loop->now >= c->connect_deadline) {
		conn_fail(c, SQLSTATE_CONNECTION_FAILURE, "timeout connecting to the database server",
			  "upstream connect timeout");
		conn_refused(c, MREFUSE_UPSTREAM);
	} else if (c->state <= CONN_AUTH) {
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
			  c->state == CONN_STARTUP ? "timeout waiting for the startup packet"
						   : "timeout during authentication",
			  "startup timeout");
		conn_refused(c, MREFUSE_TIMEOUT);
	} else if (c->state == CONN_CANCEL) {
		conn_close(c, "cancel timeout");
	} else {
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
			  "timeout: the client sent an incomplete message and went silent",
			  "incomplete message timeout");
	}
	conn_run(c);
}

/* ---- lifecycle ----------------------------------------------------------------------- */

static void conn_free(struct loop *loop, struct loop_deferred *dfr)
{
	struct conn *c = container_of(dfr, struct conn, free_later);

	stage_chain_end(&c->chain, false);
	session_release(&c->session);
	config_unref(c->config);
	free(c);
}

/* The end of a connection that never became a session: a cancel, or a refused client. */
static void conn_log_sessionless(const struct conn *c, bool was_cancel)
{
	struct log_line l;
	char peer[ADDR_STRLEN];

	if (!log_enabled(LOG_INFO))
		return;
	log_line_begin(&l, LOG_INFO, was_cancel ? "cancel_end" : "connection_rejected");
	log_kv_str(&l, "session", c->session.id_hex);
	log_kv_str(&l, "peer", addr_format(&c->session.client.ss.sa, peer, sizeof(peer)));
	log_kv_u64(&l, "bytes_from_client", c->session.bytes_from_client);
	log_kv_str(&l, "reason", c->session.end_reason);
	log_line_end(&l);
}

static void conn_close(struct conn *c, const char *reason)
{
	struct worker *w = c->worker;
	struct relay *r = w->relay;
	bool was_cancel = c->state == CONN_CANCEL;

	if (c->state == CONN_CLOSED)
		return;
	conn_set_reason(c, reason);
	conn_set_state(c, CONN_CLOSED);
	loop_timer_cancel(&w->loop, &c->timer);
	if (c->session_started) {
		stage_chain_end(&c->chain, true);
		conn_publish(c, "session_end");
	} else
		conn_log_sessionless(c, was_cancel);
	cancel_map_remove(r->cancels, c->cancel_handle);
	c->cancel_handle = NULL;
	loop_del(&w->loop, &c->client_watch);
	close(c->client_fd);
	c->client_fd = -1;
	if (c->upstream_fd >= 0) {
		loop_del(&w->loop, &c->upstream_watch);
		close(c->upstream_fd);
		c->upstream_fd = -1;
	}
	for (int i = 0; i < 2; i++)
		if (c->dir[i].buf != w->scratch)
			conn_dir_release(c, &c->dir[i]);
	c->dir[0].buf = c->dir[1].buf = NULL;
	worker_conn_unlink(w, c);
	if (c->holds_session)
		relay_session_release(r);
	relay_conn_release(r);
	loop_defer(&w->loop, &c->free_later);
}

/* Refuse a connection before any state exists for it: best effort, never blocks. */
static void conn_refuse_now(int fd, const char *sqlstate, const char *message)
{
	uint8_t msg[256];
	int n = proto_write_error(msg, sizeof(msg), "FATAL", sqlstate, message);

	if (n > 0 && send(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("refuse", "could not tell the client: %s", strerror(errno));
	close(fd);
}

/*
 * Where the client meant to go and who it is, as the kernel recorded it. A steered or
 * TPROXY'd connection goes on to the address it dialled; an explicit one to the upstream.
 */
static void conn_classify(struct conn *c, const struct worker_listener *l, int fd)
{
	struct session *s = &c->session;
	struct addr local = s->dialled;
	int err;

	if (l->unix_socket) {
		steer_origin_lookup_unix(c->worker->steer, fd, s);
		return;
	}
	if (!c->worker->steer && !l->transparent)
		return;
	err = steer_origin_lookup(c->worker->steer, fd, &l->addr, &s->client, &local, s);
	if (err)
		log_warn("steer", "session=%s origin lookup failed: %s", s->id_hex, strerror(-err));
	if (s->route != SESSION_ROUTE_EXPLICIT)
		s->upstream = s->dialled;
}

void conn_accept(struct worker *w, const struct worker_listener *l, int fd,
		 const struct sockaddr *peer, socklen_t peer_len)
{
	struct relay *r = w->relay;
	struct config *cfg = relay_config_acquire(r);
	struct conn *c;
	int one = 1, err;

	pthread_once(&conn_types_once, conn_init_types);
	if (!relay_conn_reserve(r, cfg->max_connections)) {
		char text[ADDR_STRLEN];

		log_warn("connection_refused", "peer=%s reason=max_connections (%u) reached",
			 addr_format(peer, text, sizeof(text)), cfg->max_connections);
		if (w->metrics)
			metrics_inc(w->metrics, r->mstd.refused, MREFUSE_MAX_CONNECTIONS);
		conn_refuse_now(fd, SQLSTATE_TOO_MANY_CONNECTIONS, "sorry, too many clients already");
		config_unref(cfg);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c || session_new_id(&c->session)) {
		free(c);
		relay_conn_release(r);
		config_unref(cfg);
		conn_refuse_now(fd, "53200", "out of memory");
		return;
	}
	c->worker = w;
	c->config = cfg;
	c->client_fd = fd;
	c->upstream_fd = -1;
	c->client_writable = true;
	c->state = CONN_STARTUP;
	c->last_latency_ns = -1;
	c->unnamed_class = c->portal_class = SQL_CLASS_OTHER;
	c->timer.cb = conn_timer_fired;
	c->free_later.cb = conn_free;
	c->client_watch.cb = conn_client_event;
	c->upstream_watch.cb = conn_upstream_event;
	c->startup_deadline = w->loop.now + cfg->startup_timeout_ms * NSEC_PER_MSEC;

	struct session *s = &c->session;

	s->route = SESSION_ROUTE_EXPLICIT;
	s->start_wall_ns = clock_wall_ns();
	s->start_mono_ns = clock_mono_ns();
	s->upstream = cfg->upstream;
	if (l->unix_socket) {
		/* Its peer has no address and the path it dialled is not recorded; who it is
		 * comes from its credentials (conn_classify). */
		s->client.ss.sa.sa_family = AF_UNIX;
		s->client.len = sizeof(sa_family_t);
		if (cfg->unix_upstream) {
			s->upstream_unix = cfg->unix_upstream;
			s->upstream.len = 0;
		}
	} else {
		memcpy(&s->client.ss, peer,
		       peer_len < sizeof(s->client.ss) ? peer_len : sizeof(s->client.ss));
		s->client.len = peer_len;
		s->dialled.len = sizeof(s->dialled.ss);
		if (getsockname(fd, &s->dialled.ss.sa, &s->dialled.len) < 0)
			s->dialled.len = 0;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	conn_classify(c, l, fd);

	err = loop_add(&w->loop, &c->client_watch, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	if (err) {
		log_warn("accept", "cannot watch client socket: %s", strerror(-err));
		relay_conn_release(r);
		config_unref(cfg);
		free(c);
		close(fd);
		return;
	}
	if (w->metrics) {
		metrics_inc(w->metrics, r->mstd.accepted, 0);
		metrics_gauge_add(w->metrics, r->mstd.sessions, MSTATE_STARTUP, 1);
	}
	worker_conn_link(w, c);
	conn_timer_update(c);
}
