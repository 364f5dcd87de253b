/*
 * conn: a connection's life: accept, the run loop that moves both directions until nothing
 * more can move, the events of each leg, ending (with PostgreSQL's words where the protocol
 * allows them), and freeing. The state table and timers are in conn_state.c, the streams in
 * conn_io.c, conn_frontend.c and conn_backend.c.
 */
#include "relay/conn_internal.h"

#include "admin/admin.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/log_limit.h"
#include "proto/proto.h"
#include "relay/cancel.h"
#include "sql/sql.h"
#include "steer/steer_origin.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Events a peer that has not logged in can repeat at will are logged within limits. */
static struct log_limit limit_refused =
	LOG_LIMIT_INIT(LOG_LIMIT_PEER_BURST, LOG_LIMIT_PEER_INTERVAL_MS);
static struct log_limit limit_sessionless =
	LOG_LIMIT_INIT(LOG_LIMIT_PEER_BURST, LOG_LIMIT_PEER_INTERVAL_MS);

void conn_set_reason(struct conn *c, const char *reason)
{
	session_end_reason(&c->session, "%s", reason);
}

/* A connection that never became a working session is a refusal; each counts once. */
void conn_refused(struct conn *c, enum metrics_refuse_reason why)
{
	if (c->refusal_counted || conn_metrics(c) == NULL)
		return;
	c->refusal_counted = true;
	metrics_inc(conn_metrics(c), conn_mstd(c)->refused, why);
}

/* Tell live tools (admin "subscribe") about a session; one atomic load when nobody listens. */
void conn_publish(struct conn *c, const char *event)
{
	struct admin_server *a = __atomic_load_n(&c->worker->relay->admin, __ATOMIC_ACQUIRE);

	if (admin_server_has_subscribers(a))
		admin_server_publish(a, event,
				     json_pack("{s:o}", "session", conn_admin_json(c, clock_mono_ns())));
}

void conn_note(struct conn *c, const struct stage_note *n)
{
	if (c->session_started)
		stage_run_notice(&c->chain, n, NULL, conn_now(c));
}

/* ---- ending ---------------------------------------------------------------------------- */

/*
 * The request a FATAL raised now answers: the oldest one the server still owes an answer,
 * since the client reads the FATAL in its place; 0 (none) between requests, as at an idle
 * timeout, and before login.
 */
static uint64_t conn_request_owed(const struct conn *c)
{
	return c->session_started ? track_answering(&c->track, PqMsg_ErrorResponse) : 0;
}

void conn_fail(struct conn *c, const char *sqlstate, const char *message, const char *reason)
{
	conn_fail_answering(c, conn_request_owed(c), sqlstate, message, reason);
}

/*
 * End the session. The client hears `FATAL sqlstate: message` when its stream is at a
 * message boundary and the server has not already said its own last word; the stages hear
 * it as the answer to `request`. The server hears Terminate when the client stream is at a
 * boundary after login. Then both sides are flushed and closed.
 */
void conn_fail_answering(struct conn *c, uint64_t request, const char *sqlstate,
			 const char *message, const char *reason)
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
	/* A client in its TLS handshake could not read an ErrorResponse. */
	if (!s2c->stream_left && !s2c->skip_left && !c->stream_active &&
	    c->state != CONN_CANCEL && c->state != CONN_CLIENT_TLS && !c2s->eof) {
		n = proto_write_error(msg, sizeof(msg), "FATAL", sqlstate, message);
		if (n > 0) {
			struct stage_note note = {.kind = STAGE_NOTE_ERROR, .severity = "FATAL",
						  .sqlstate = sqlstate, .message = message,
						  .from_relay = true, .request = request};

			if (conn_inject(c, CONN_S2C, msg, (uint32_t)n))
				log_warn("conn_fail", "session=%s no memory for the final error",
					 c->session.id_hex);
			else
				conn_note(c, &note);
		}
	}
	s2c->stream_left = s2c->skip_left = 0;
	c->stream_active = false;
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
	c2s->skip_left = 0;
	conn_set_state(c, CONN_CLOSING);
}

void conn_fail_proto(struct conn *c, int status, const char *who)
{
	char text[160];

	snprintf(text, sizeof(text), "%s: %s", who, proto_err_str(status));
	conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION, text, text);
}

void conn_terminate(struct conn *c, const char *sqlstate, const char *message,
		    const char *reason)
{
	if (c->state >= CONN_CLOSING || c->state == CONN_FAREWELL) {
		conn_close(c, reason); /* nothing more is owed to anyone */
		return;
	}
	conn_fail(c, sqlstate, message, reason);
	conn_run(c);
}

static void conn_free(struct loop *loop, struct loop_deferred *dfr)
{
	struct conn *c = container_of(dfr, struct conn, free_later);

	stage_chain_end(&c->chain, false);
	track_release(&c->track);
	server_keep_free(c->keep);
	conn_tls_release(c);
	free(c->stream.st);
	session_release(&c->session);
	config_unref(c->config);
	free(c->rule);
	free(c->last_statement);
	free(c);
}

/* The end of a connection that never became a session: a cancel, or a refused client. */
static void conn_log_sessionless(const struct conn *c, bool was_cancel)
{
	struct log_line l;
	char peer[ADDR_STRLEN];
	uint64_t suppressed;

	if (!log_enabled(LOG_INFO) ||
	    !log_limit_allow(&limit_sessionless, c->worker->loop.now, &suppressed))
		return;
	log_line_begin(&l, LOG_INFO, was_cancel ? "cancel_end" : "connection_rejected");
	log_kv_str(&l, "session", c->session.id_hex);
	log_kv_str(&l, "peer", addr_format(&c->session.client.ss.sa, peer, sizeof(peer)));
	log_kv_u64(&l, "bytes_from_client", c->session.bytes_from_client);
	log_kv_str(&l, "reason", c->session.end_reason);
	if (suppressed)
		log_kv_u64(&l, "suppressed", suppressed);
	log_line_end(&l);
}

void conn_close(struct conn *c, const char *reason)
{
	struct worker *w = c->worker;
	struct relay *r = w->relay;
	bool was_cancel = c->state == CONN_CANCEL;

	if (c->state == CONN_CLOSED)
		return;
	conn_set_reason(c, reason);
	conn_set_state(c, CONN_CLOSED);
	loop_timer_cancel(&w->loop, &c->timer);
	conn_auth_end(c);
	if (c->session_started) {
		stage_chain_end(&c->chain, true);
		conn_publish(c, "session_end");
	} else {
		conn_log_sessionless(c, was_cancel);
	}
	cancel_map_remove(r->cancels, c->cancel_handle);
	c->cancel_handle = NULL;
	if (r->guard)
		guard_close(r->guard, &c->guard); /* before the upstream socket closes */
	if (c->client->fd >= 0)
		loop_del(&w->loop, &c->client_watch);
	(void)transport_shutdown(c->client); /* a TLS leg's close_notify; best effort */
	transport_destroy(c->client);
	conn_upstream_drop(c);
	for (int i = 0; i < 2; i++)
		if (c->dir[i].buf != w->scratch)
			conn_dir_release(c, &c->dir[i]);
	c->dir[0].buf = c->dir[1].buf = NULL;
	if (c->stream.out)
		buf_put(&w->pool, c->stream.out);
	c->stream.out = NULL;
	if (c->waker.worker)
		worker_slot_release(w, c->waker.slot);
	worker_conn_unlink(w, c);
	if (c->holds_session)
		relay_session_release(r);
	relay_conn_release(r);
	loop_defer(&w->loop, &c->free_later);
}

/* ---- the run loop ---------------------------------------------------------------------- */

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

	if (s2c->eof && c->server) {
		if (c->state == CONN_FAREWELL) {
			conn_finish(c); /* the server closed after the client's goodbye */
			return;
		}
		/* The server went away. Unless it said why itself (then this is CLOSING
		 * already), the client hears 08006. */
		conn_fail(c, SQLSTATE_CONNECTION_FAILURE, "server closed the connection unexpectedly",
			  c->state == CONN_SERVER_GONE ? "server connection lost" : "server closed");
		return;
	}
	if (!c2s->eof || c->state == CONN_FAREWELL || c->state == CONN_SERVER_GONE)
		return;
	conn_set_reason(c, c->state == CONN_NEGOTIATE && !c->session_started
				   ? "client closed before startup"
				   : "client closed without Terminate");
	if (conn_logged_in(c) && conn_upstream_usable(c) && !c2s->stream_left &&
	    !(c2s->buf && buf_len(c2s->buf) > c2s->framed)) {
		/* A client that half-closed may still read the answers it is owed: say
		 * Terminate for it and let the server finish. */
		uint8_t x[PROTO_HEADER_LEN];
		int n = proto_write_terminate(x, sizeof(x));

		if (n > 0 && conn_inject(c, CONN_C2S, x, (uint32_t)n) == 0) {
			conn_set_state(c, CONN_FAREWELL);
			return;
		}
	}
	conn_fail(c, SQLSTATE_CONNECTION_FAILURE, "client closed", "client closed");
}

/*
 * After the server → client pump moved: could another pass do anything? The client → server
 * pump can only if it stopped with bytes held, or while the client still had bytes to read
 * (it was not let read them: the tracker full, the login not done); otherwise it stopped on
 * an empty socket, which only the client's next event refills. The server → client pump
 * can only if it stopped with bytes it did not send (a failure framed its last words).
 */
static bool conn_pass_owed(const struct conn *c)
{
	const struct conn_dir *c2s = &c->dir[CONN_C2S], *s2c = &c->dir[CONN_S2C];

	return c2s->buf || c2s->stream_left || c2s->skip_left ||
	       (!c2s->eof && transport_can_read(c->client)) || (s2c->buf && s2c->framed) ||
	       c->stream.out;
}

/* The moves every transaction makes (READY ⇄ BUSY) unblock nothing a pump waits for: both
 * directions admit, read and frame alike in the two. */
static bool conn_state_moved_matters(enum conn_state from, enum conn_state to)
{
	bool from_tx = from == CONN_READY || from == CONN_BUSY;
	bool to_tx = to == CONN_READY || to == CONN_BUSY;

	return from != to && !(from_tx && to_tx);
}

void conn_run(struct conn *c)
{
	bool moved;

	/* Repeat while anything moves that a pass has not yet answered: a login, a failure or
	 * an answer can unblock the other direction. What the client → server pump moves,
	 * the server → client pump after it already saw; what the server → client pump moves
	 * needs another pass only when something waits for it (conn_pass_owed). So a pass
	 * repeats when the handshake moved, when the state moved in a way that matters
	 * (conn_state_moved_matters), or when the server → client pump moved and a pass is
	 * owed: an event of either side in a running session takes one pass. Every pass that
	 * moves consumes or sends bytes, or moves the state towards CLOSED, so this ends. */
	do {
		enum conn_state before = c->state;
		bool s2c_moved;

		/* Asked only in the handshake states: this loop runs for every event. */
		moved = (c->state == CONN_CLIENT_TLS || c->state == CONN_SERVER_TLS) &&
			conn_tls_negotiate(c);
		if (c->state == CONN_CLOSED)
			return;
		conn_pump(c, CONN_C2S);
		if (c->state == CONN_CLOSED)
			return;
		s2c_moved = conn_pump(c, CONN_S2C);
		if (c->state == CONN_CLOSED)
			return;
		if ((c->dir[CONN_C2S].eof || c->dir[CONN_S2C].eof) && c->state != CONN_CANCEL &&
		    c->state < CONN_CLOSING)
			conn_handle_eof(c);
		moved |= conn_state_moved_matters(before, c->state) ||
			 (s2c_moved && conn_pass_owed(c));
	} while (moved && c->state != CONN_CLOSED);
	if (c->state == CONN_CLOSED)
		return;
	if (c->state == CONN_CLOSING && !conn_has_output(c)) {
		conn_close(c, "closed");
		return;
	}
	if (c->state == CONN_CANCEL && c->server && !c->connect_deadline && !conn_has_output(c) &&
	    c->dir[CONN_S2C].eof) {
		conn_close(c, "cancel forwarded");
		return;
	}
	conn_timer_update(c);
}

/* ---- events ---------------------------------------------------------------------------- */

void conn_client_events(struct conn *c, uint32_t events)
{
	if (c->state == CONN_CLOSED)
		return;
	transport_note_events(c->client, events);
	conn_run(c);
}

void conn_server_events(struct conn *c, uint32_t events)
{
	if (c->state == CONN_CLOSED || !c->server)
		return;
	transport_note_events(c->server, events);
	/* The first writable event of a non-blocking connect carries its outcome. */
	if (c->connect_deadline && !conn_upstream_check(c))
		return;
	if (c->state != CONN_CLOSED)
		conn_run(c);
}

static void conn_client_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	conn_client_events(container_of(w, struct conn, client_watch), events);
}

static void conn_server_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	conn_server_events(container_of(w, struct conn, server_watch), events);
}

void conn_wake(struct worker *w, uint32_t slot, uint32_t gen)
{
	struct conn *c = worker_slot_conn(w, slot, gen);

	if (!c || c->state == CONN_CLOSED)
		return;
	for (int i = 0; i < 2; i++)
		if (c->dir[i].hold == CONN_HOLD_STAGE)
			c->dir[i].hold = CONN_HOLD_NONE;
	c->resume_at = 0;
	conn_run(c);
}

/* ---- the session ----------------------------------------------------------------------- */

/* The tracker completed a request: count it, and tell the stages. */
static void conn_request_done(void *arg, const struct track_done *d)
{
	struct conn *c = arg;
	struct stage_note n;

	if (d->kind == TRACK_EXECUTE && !d->skipped && conn_metrics(c))
		metrics_inc(conn_metrics(c), conn_mstd(c)->statements,
			    metrics_std_stmt_type(d->stmt ? (enum sql_class)d->stmt->cls
						  : SQL_CLASS_PREPARE));
	if (d->kind == TRACK_FUNCTION && d->final && conn_metrics(c))
		metrics_inc(conn_metrics(c), conn_mstd(c)->statements, MSTMT_FUNCTION);
	/* Several per transaction, and no stage hears them unless auditing: the note is
	 * built only for a listener. */
	if (!c->session_started || !stage_chain_hears(&c->chain, STAGE_NOTE_REQUEST_DONE))
		return;
	n = (struct stage_note){
		.kind = STAGE_NOTE_REQUEST_DONE,
		.request = d->request,
		.command_tag = d->command_tag,
		.rows = d->command_tag ? track_tag_rows(d->command_tag) : 0,
		.duration_ns = d->duration_ns,
		.failed = d->failed,
		.skipped = d->skipped,
		.stmt = d->stmt,
	};
	conn_note(c, &n);
}

static bool conn_stages_keep_text(const struct stage_pipeline *p)
{
	for (unsigned i = 0; i < p->count; i++)
		if (p->stages[i]->keep_statement_text)
			return true;
	return false;
}

int conn_session_begin(struct conn *c, const struct proto_startup *st)
{
	struct session *s = &c->session;
	const struct stage_pipeline *p = &c->worker->relay->pipeline;
	struct stage_result res;
	int err;

	if (session_set_startup(s, st)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return -ENOMEM;
	}
	if (!relay_session_reserve(c->worker->relay, c->config->max_connections)) {
		log_limited(&limit_refused, LOG_WARN, "connection_refused",
			    "session=%s reason=max_connections (%u) reached", s->id_hex,
			    c->config->max_connections);
		conn_fail(c, SQLSTATE_TOO_MANY_CONNECTIONS, "sorry, too many clients already",
			  "max_connections reached");
		conn_refused(c, MREFUSE_MAX_CONNECTIONS);
		return -EAGAIN;
	}
	c->holds_session = true;
	track_init(&c->track, &c->worker->track_rings, c->config->max_pipeline,
		   c->config->max_prepared_statements, c->config->max_prepared_bytes,
		   conn_stages_keep_text(p), s->id_hex, conn_request_done, c);
	c->track.session = s; /* SQL PREPAREs are read as the server reads them */
	/* A waker only where a stage wakes: the others' sessions take no slot in the
	 * worker's wake table, nor its lock at start and end. */
	if ((p->wakes && worker_slot_claim(c->worker, c, &c->waker)) ||
	    stage_chain_init(&c->chain, p, s, &c->track.stmts, p->wakes ? &c->waker : NULL)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return -ENOMEM;
	}
	/* conn_request_done counts Executes and FunctionCalls (statements_total); it needs
	 * every kind only for a stage that hears REQUEST_DONE. */
	if (stage_chain_hears(&c->chain, STAGE_NOTE_REQUEST_DONE))
		c->track.done_kinds = UINT32_MAX;
	else if (conn_metrics(c))
		c->track.done_kinds =
			TRACK_KIND_BIT(TRACK_EXECUTE) | TRACK_KIND_BIT(TRACK_FUNCTION);
	else
		c->track.done_kinds = 0;
	__atomic_store_n(&c->session_started, true, __ATOMIC_RELEASE);
	conn_publish(c, "session_start");
	stage_run_session_start(&c->chain, &c->limits, conn_now(c), &res);
	if (res.verdict != STAGE_FORWARD) {
		conn_fail(c, res.sqlstate, res.message, "refused at session start");
		return -EPERM;
	}
	/* A stage's login limit (a policy rule's login_timeout) tightens the startup timeout. */
	if (c->limits.login_ms &&
	    conn_now(c) + c->limits.login_ms * NSEC_PER_MSEC < c->login_deadline)
		c->login_deadline = conn_now(c) + c->limits.login_ms * NSEC_PER_MSEC;
	err = conn_auth_begin(c);
	if (err)
		return err;
	if (conn_auth_early(c)) {
		/* pgwarden authenticates the client first (terminate mode): the server hears
		 * of the session only once the client proved itself (conn_session_connect). */
		conn_set_state(c, CONN_CONNECTING);
		return 0;
	}
	if (conn_auth_reused(c))
		return 0; /* a certificate login given a kept server: state AUTH, login replayed */
	return conn_session_connect(c);
}

int conn_session_connect(struct conn *c)
{
	struct session *s = &c->session;
	int err = conn_upstream_start(c, &s->upstream, s->upstream_unix);

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

/* ---- accepting ------------------------------------------------------------------------- */

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
 * A new connection's state, with its client leg on t (owned by the connection from here
 * on), or, when t is NULL, on the accepted socket fd. The caller reserved its place in the
 * connection budget; on failure the caller still owns t or fd.
 */
static int conn_create(struct worker *w, struct config *cfg, struct transport *t, int fd,
		       bool unix_socket, const struct session *proto,
		       const struct guard_slot *slot, struct conn **out)
{
	struct conn *c = calloc(1, sizeof(*c));
	int err;

	if (!c)
		return -ENOMEM;
	if (!t) {
		transport_sock_init(&c->client_sock, fd, unix_socket);
		t = &c->client_sock;
	}
	c->worker = w;
	c->config = cfg;
	c->session = *proto;
	if (slot)
		c->guard = *slot;
	c->state = CONN_NEGOTIATE;
	c->last_latency_ns = -1;
	c->timer.cb = conn_timer_fired;
	c->free_later.cb = conn_free;
	c->client_watch.cb = conn_client_event;
	c->server_watch.cb = conn_server_event;
	c->login_deadline = w->loop.now + cfg->startup_timeout_ms * NSEC_PER_MSEC;
	c->session.start_wall_ns = clock_wall_ns();
	c->session.start_mono_ns = clock_mono_ns();
	c->client = t;
	if (c->client->fd >= 0) {
		err = loop_add(&w->loop, &c->client_watch, c->client->fd,
			       EPOLLIN | EPOLLOUT | EPOLLRDHUP);
		if (err) {
			free(c);
			return err;
		}
	}
	if (w->metrics) {
		metrics_inc(w->metrics, w->relay->mstd.accepted, 0);
		metrics_gauge_add(w->metrics, w->relay->mstd.sessions, MSTATE_STARTUP, 1);
	}
	worker_conn_link(w, c);
	conn_timer_update(c);
	*out = c;
	return 0;
}

int conn_start(struct worker *w, struct transport *t, const struct session *proto)
{
	struct relay *r = w->relay;
	struct config *cfg = relay_config_acquire(r);
	struct conn *c;
	int err;

	if (!relay_conn_reserve(r, cfg->max_connections)) {
		config_unref(cfg);
		transport_destroy(t);
		return -EAGAIN;
	}
	err = conn_create(w, cfg, t, -1, false, proto, NULL, &c);
	if (err) {
		relay_conn_release(r);
		config_unref(cfg);
		transport_destroy(t);
		return err;
	}
	return 0;
}

/*
 * Where the client meant to go and who it is, as the kernel recorded it. A steered or
 * TPROXY'd connection goes on to the address it dialled; an explicit one to the upstream.
 * 0, or -ENOMEM: the client's process, which the guard and the policy read, could not be
 * recorded, and the connection is refused.
 */
static int conn_classify(struct worker *w, const struct worker_listener *l, int fd,
			 struct session *s)
{
	struct addr local = s->dialled;
	int err;

	if (l->unix_socket)
		return steer_origin_lookup_unix(w->steer, fd, s);
	if (!w->steer && !l->transparent)
		return 0;
	err = steer_origin_lookup(w->steer, fd, &l->addr, &s->client, &local, s);
	if (err) {
		log_warn("steer", "session=%s origin lookup failed: %s", s->id_hex, strerror(-err));
		return err;
	}
	if (s->route != SESSION_ROUTE_EXPLICIT)
		s->upstream = s->dialled;
	return 0;
}

/* An accepted connection refused before it became one: give back what was taken for it. */
static void conn_accept_refuse(struct relay *r, struct config *cfg, struct session *proto,
			       int fd, const char *sqlstate, const char *message)
{
	session_release(proto);
	relay_conn_release(r);
	config_unref(cfg);
	conn_refuse_now(fd, sqlstate, message);
}

void conn_accept(struct worker *w, const struct worker_listener *l, int fd,
		 const struct sockaddr *peer, socklen_t peer_len)
{
	struct relay *r = w->relay;
	struct config *cfg = relay_config_acquire(r);
	struct session proto = {0};
	struct guard_slot slot = {0};
	struct guard_refusal refusal;
	struct conn *c;
	int err;

	if (!relay_conn_reserve(r, cfg->max_connections)) {
		char text[ADDR_STRLEN];

		log_limited(&limit_refused, LOG_WARN, "connection_refused",
			    "peer=%s reason=max_connections (%u) reached",
			    addr_format(peer, text, sizeof(text)), cfg->max_connections);
		if (w->metrics)
			metrics_inc(w->metrics, r->mstd.refused, MREFUSE_MAX_CONNECTIONS);
		conn_refuse_now(fd, SQLSTATE_TOO_MANY_CONNECTIONS, "sorry, too many clients already");
		config_unref(cfg);
		return;
	}
	if (session_new_id(&proto)) {
		conn_accept_refuse(r, cfg, &proto, fd, SQLSTATE_OUT_OF_MEMORY, "out of memory");
		return;
	}
	proto.route = SESSION_ROUTE_EXPLICIT;
	proto.upstream = cfg->upstream;
	if (l->unix_socket) {
		/* Its peer has no address and the path it dialled is not recorded; who it is
		 * comes from its credentials (conn_classify). */
		proto.client.ss.sa.sa_family = AF_UNIX;
		proto.client.len = sizeof(sa_family_t);
		if (cfg->unix_upstream) {
			proto.upstream_unix = cfg->unix_upstream;
			proto.upstream.len = 0;
		}
	} else {
		memcpy(&proto.client.ss, peer,
		       peer_len < sizeof(proto.client.ss) ? peer_len : sizeof(proto.client.ss));
		proto.client.len = peer_len;
		proto.dialled.len = sizeof(proto.dialled.ss);
		if (getsockname(fd, &proto.dialled.ss.sa, &proto.dialled.len) < 0)
			proto.dialled.len = 0;
		/* TCP_NODELAY came with the socket: its listener has it (worker_listen). */
	}
	if (conn_classify(w, l, fd, &proto)) {
		conn_accept_refuse(r, cfg, &proto, fd, SQLSTATE_OUT_OF_MEMORY, "out of memory");
		return;
	}
	/* The guard (relay/guard.h): self-loop, TPROXY destination, pre-login admission. */
	if (r->guard && guard_accept(r->guard, cfg, w->steer, &proto, &slot, w->metrics, &r->mstd,
				     &refusal)) {
		conn_accept_refuse(r, cfg, &proto, fd, refusal.sqlstate, refusal.message);
		return;
	}
	/* From here the connection owns what proto holds (its process), unless refused. */
	err = conn_create(w, cfg, NULL, fd, l->unix_socket, &proto, &slot, &c);
	if (err) {
		if (r->guard)
			guard_close(r->guard, &slot);
		log_warn("accept", "cannot take the connection: %s", strerror(-err));
		session_release(&proto);
		relay_conn_release(r);
		config_unref(cfg);
		close(fd);
	}
}
