/*
 * conn_backend: the server → client stream. Frames every server message, reads what the
 * relay must know (the login's progress, the cancel key, ReadyForQuery, errors, COPY modes,
 * parameters), matches it against the request tracker (a poison's answer is replaced by
 * the stage's error), and runs the stages: whole messages for those that want them, and
 * streamed bodies for a stage that rewrites as it goes.
 *
 * Two ways to pass bytes on. Normally a message is framed where it lies and sent from the
 * read buffer (no copy). While a stage streams some type in this session, or replacement
 * bytes are still waiting, everything for the client is copied into the stream buffer
 * instead, so nothing can overtake what a stage produced.
 */
#include "relay/conn_internal.h"

#include "base/log.h"
#include "proto/proto.h"
#include "relay/cancel.h"

#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

/* Server messages the relay itself must see whole (all small, none on the bulk path).
 * A constant: built when compiling, not once per process behind a pthread_once that every
 * framing call would ask. */
#define CONN_BACKEND_INSPECT(w)                                                               \
	(TYPESET_BIT(w, PqMsg_AuthenticationRequest) | TYPESET_BIT(w, PqMsg_BackendKeyData) |  \
	 TYPESET_BIT(w, PqMsg_ReadyForQuery) | TYPESET_BIT(w, PqMsg_ErrorResponse) |            \
	 TYPESET_BIT(w, PqMsg_CopyInResponse) | TYPESET_BIT(w, PqMsg_CopyOutResponse) |         \
	 TYPESET_BIT(w, PqMsg_CopyBothResponse) | TYPESET_BIT(w, PqMsg_NegotiateProtocolVersion) | \
	 TYPESET_BIT(w, PqMsg_ParameterStatus) | TYPESET_BIT(w, PqMsg_CommandComplete))

static const struct proto_typeset conn_backend_inspect = {
	.bits = {CONN_BACKEND_INSPECT(0), CONN_BACKEND_INSPECT(1)},
};

static bool conn_backend_allowed(const struct conn *c, uint8_t type)
{
	if (c->state == CONN_AUTH || c->state == CONN_AUTH_ANSWER)
		return type == PqMsg_AuthenticationRequest || type == PqMsg_ErrorResponse ||
		       type == PqMsg_NoticeResponse || type == PqMsg_NegotiateProtocolVersion ||
		       type == PqMsg_ParameterStatus || type == PqMsg_BackendKeyData ||
		       type == PqMsg_ReadyForQuery;
	return type != PqMsg_AuthenticationRequest && type != PqMsg_BackendKeyData &&
	       type != PqMsg_NegotiateProtocolVersion;
}

/* ---- passing bytes on -------------------------------------------------------------------- */

/* Pass up to n bytes of the message at the framing point; returns how many moved. */
static uint32_t conn_s2c_pass(struct conn *c, struct conn_dir *d, uint32_t n)
{
	uint32_t room;

	if (!conn_s2c_copying(c)) {
		d->framed += n;
		return n;
	}
	if (conn_out_reserve(c, 1))
		return 0;
	room = buf_room(c->stream.out);
	if (n > room)
		n = room;
	memcpy(c->stream.out->data + c->stream.out->tail, d->buf->data + d->buf->head + d->framed,
	       n);
	c->stream.out->tail += n;
	conn_consume(d, n);
	return n;
}

/* The message at the framing point (avail of its total bytes here) goes on as it is. */
static void conn_s2c_forward(struct conn *c, struct conn_dir *d, uint32_t total, uint32_t avail)
{
	uint32_t have = avail < total ? avail : total;

	if (!conn_s2c_copying(c)) {
		d->framed += have;
		d->stream_left = total - have;
		return;
	}
	d->stream_left = total; /* copied as the stream buffer makes room */
}

/* ---- the login, as the server tells it ---------------------------------------------------- */

static enum session_auth_method conn_auth_method_of(uint32_t code)
{
	switch (code) {
	case AUTH_REQ_PASSWORD:
		return SESSION_AUTH_PASSWORD;
	case AUTH_REQ_MD5:
		return SESSION_AUTH_MD5;
	case AUTH_REQ_SASL:
		return SESSION_AUTH_SCRAM;
	case AUTH_REQ_GSS:
		return SESSION_AUTH_GSS;
	case AUTH_REQ_SSPI:
		return SESSION_AUTH_SSPI;
	default:
		return SESSION_AUTH_PENDING;
	}
}

static void conn_note_auth(struct conn *c)
{
	struct stage_note n = {.kind = STAGE_NOTE_AUTH};

	stage_run_notice(&c->chain, &n, &c->limits, conn_now(c));
	conn_publish_rule(c);
}

/* An Authentication message. 0, or < 0 after failing the connection. */
static int conn_backend_auth(struct conn *c, const struct proto_msg *m)
{
	struct session *s = &c->session;
	uint32_t code;
	int r = proto_read_auth(m, &code);

	if (r != PROTO_OK)
		return r;
	if (code == AUTH_REQ_OK) {
		if (!s->auth.method)
			s->auth.method = SESSION_AUTH_TRUST;
		if (session_set_verified(s, s->auth.method, false, s->user)) {
			conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
			return -ENOMEM;
		}
		if (conn_guard(c)) {
			guard_login(conn_guard(c), &c->guard); /* no longer logging in */
			guard_upstream_forget(conn_guard(c), &c->guard); /* not a loop */
		}
		conn_note_auth(c);
		conn_set_state(c, CONN_AUTH);
		return 0;
	}
	if (code != AUTH_REQ_SASL_CONT && code != AUTH_REQ_SASL_FIN && code != AUTH_REQ_GSS_CONT)
		s->auth.method = conn_auth_method_of(code);
	/* SASLFinal needs no answer: AuthenticationOk (or an error) follows. */
	conn_set_state(c, code == AUTH_REQ_SASL_FIN ? CONN_AUTH : CONN_AUTH_ANSWER);
	return 0;
}

/* BackendKeyData: the client gets the server's pid and a key only pgwarden can map back. */
static int conn_backend_key(struct conn *c, const struct proto_msg *m, uint8_t *body)
{
	uint32_t pid, key_len;
	const uint8_t *key;
	int r = proto_read_backend_key(m, &pid, &key, &key_len);

	if (r != PROTO_OK)
		return r;
	/* Protocol 3.0 keys are exactly 4 bytes; longer ones exist only from 3.2 on. */
	if (PROTO_VERSION_MINOR(c->session.protocol) < 2 && key_len != 4)
		return PROTO_ERR_FORMAT;
	if (c->cancel_handle)
		return PROTO_ERR_FORMAT; /* a second key would orphan the first mapping */
	c->cancel_handle = cancel_map_issue(c->worker->relay->cancels, &c->session, pid, key,
					    key_len, body + 4);
	if (!c->cancel_handle) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "could not issue a cancel key", "out of memory");
		return -ENOMEM;
	}
	c->session.backend_pid = pid;
	return 0;
}

static int conn_backend_param(struct conn *c, const struct proto_msg *m)
{
	const char *name, *value;
	struct stage_note n = {.kind = STAGE_NOTE_SERVER_PARAM};
	int r = proto_read_parameter_status(m, &name, &value);

	if (r != PROTO_OK)
		return r;
	if (session_set_server_param(&c->session, name, value)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return -ENOMEM;
	}
	if (c->keep)
		conn_reuse_param(c, name, value);
	n.name = name;
	n.value = value;
	stage_run_notice(&c->chain, &n, NULL, conn_now(c));
	return 0;
}

static int conn_backend_negotiate(struct conn *c, const struct proto_msg *m)
{
	uint32_t minor, noptions;
	int r = proto_read_negotiate(m, &minor, &noptions);

	if (r != PROTO_OK)
		return r;
	/* The session speaks the older minor the server offers from here on. */
	if (minor < PROTO_VERSION_MINOR(c->session.protocol))
		c->session.protocol = PROTO_VERSION(3, minor);
	conn_reuse_forget(c); /* a kept server's replay would lack this answer */
	return 0;
}

/* ---- the relay's own reading of whole messages ------------------------------------------ */

/* Does the server's word still move the session (login, queries)? Not once the client
 * has left or the server broke: then its answers are only delivered. */
static bool conn_follows_server(const struct conn *c)
{
	return c->state == CONN_AUTH || c->state == CONN_AUTH_ANSWER || conn_logged_in(c);
}

static void conn_ready_for_query(struct conn *c, uint8_t tx)
{
	uint64_t now = conn_now(c);

	c->session.tx_status = tx;
	if (c->track.owed_ready == 0 && c->busy_since && conn_logged_in(c)) {
		/* Two clocks (docs/ADMIN.md): the server's stops here; the client's when this
		 * ReadyForQuery has been written to the client (conn_flush). */
		c->rfq_owed_since = c->busy_since;
		if (conn_metrics(c) && c->upstream_since)
			metrics_observe(conn_metrics(c), conn_mstd(c)->upstream_duration, 0,
					now - c->upstream_since);
		c->busy_since = c->upstream_since = 0;
	}
	conn_set_state(c, c->track.owed_ready ? CONN_BUSY : CONN_READY);
}

/* An error the client will see, in answer to request (0: none), for the stages. True for
 * the server's FATAL: its last word. */
static bool conn_backend_error(struct conn *c, const struct proto_msg *m, uint64_t request,
			       bool from_relay)
{
	struct proto_error_fields ef;
	struct stage_note n = {.kind = STAGE_NOTE_ERROR, .from_relay = from_relay,
			       .request = request};
	bool fatal;

	__atomic_store_n(&c->errors, c->errors + 1, __ATOMIC_RELAXED);
	if (conn_metrics(c))
		metrics_inc(conn_metrics(c), conn_mstd(c)->statement_errors, 0);
	if (proto_read_error(m, &ef) != PROTO_OK)
		return false;
	n.severity = ef.severity;
	n.sqlstate = ef.sqlstate;
	n.message = ef.message;
	if (c->session_started)
		stage_run_notice(&c->chain, &n, NULL, conn_now(c));
	fatal = ef.severity && (strcmp(ef.severity, "FATAL") == 0 || strcmp(ef.severity, "PANIC") == 0);
	if (!fatal || from_relay)
		return false;
	session_end_reason(&c->session, "server FATAL %s", ef.sqlstate ? ef.sqlstate : "");
	/* The server turning a login away (bad password, unknown role or database, no
	 * pg_hba entry, its own connection limit). */
	if (c->state == CONN_AUTH || c->state == CONN_AUTH_ANSWER) {
		conn_refused(c, ef.sqlstate && strcmp(ef.sqlstate, "53300") == 0
					? MREFUSE_MAX_CONNECTIONS
					: MREFUSE_AUTH);
		if (!c->session.auth.ok)
			conn_note_auth(c);
	}
	return true;
}

/*
 * A whole server message the relay reads. 0, or a negative proto status (the server broke
 * the protocol), or -ENOMEM after failing the connection.
 */
static int conn_backend_inspect_msg(struct conn *c, const struct proto_msg *m, uint8_t *body)
{
	uint8_t tx, fmt;
	uint16_t ncols;
	int r = PROTO_OK;

	switch (m->type) {
	case PqMsg_AuthenticationRequest:
		return conn_backend_auth(c, m);
	case PqMsg_BackendKeyData:
		return conn_backend_key(c, m, body);
	case PqMsg_NegotiateProtocolVersion:
		return conn_backend_negotiate(c, m);
	case PqMsg_ParameterStatus:
		return conn_backend_param(c, m);
	case PqMsg_ReadyForQuery:
		r = proto_read_ready(m, &tx);
		if (r == PROTO_OK)
			conn_ready_for_query(c, tx);
		return r;
	case PqMsg_CopyInResponse:
	case PqMsg_CopyOutResponse:
	case PqMsg_CopyBothResponse:
		r = proto_read_copy_response(m, &fmt, &ncols);
		if (r != PROTO_OK)
			return r;
		if (m->type == PqMsg_CopyInResponse)
			track_copy_in(&c->track);
		conn_set_state(c, m->type == PqMsg_CopyInResponse    ? CONN_COPY_IN
				  : m->type == PqMsg_CopyOutResponse ? CONN_COPY_OUT
								     : CONN_COPY_BOTH);
		return 0;
	default:
		return 0;
	}
}

/* ---- streaming stages ------------------------------------------------------------------- */

/* Feed the body at the framing point to the stage that streams this message. */
static enum conn_step conn_stream_step(struct conn *c, struct conn_dir *d)
{
	struct stage_stream *st = c->stream.st;
	struct stage_result res;
	uint32_t avail = d->buf ? buf_len(d->buf) - d->framed : 0;
	uint32_t left = st->body_len - st->body_offset;

	if (conn_out_reserve(c, 1)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return CONN_STEP_FAILED;
	}
	st->in = d->buf ? d->buf->data + d->buf->head + d->framed : NULL;
	st->in_len = avail < left ? avail : left;
	st->out = c->stream.out->data + c->stream.out->tail;
	st->out_cap = buf_room(c->stream.out);
	st->done = false;
	stage_run_stream(&c->chain, st, conn_now(c), &res);
	if (res.verdict == STAGE_CLOSE || st->consumed > st->in_len || st->produced > st->out_cap) {
		/* Nothing of this message's replacement was written: what waits in the stream
		 * buffer ends at a message boundary, so the client can still be told why the
		 * session ends (conn_fail puts the error after it). */
		if (res.verdict == STAGE_CLOSE && !c->stream_produced && !st->produced)
			c->stream_active = false;
		conn_fail_answering(c, st->request,
				    res.verdict == STAGE_CLOSE ? res.sqlstate : SQLSTATE_INTERNAL,
				    res.verdict == STAGE_CLOSE ? res.message
							       : "a stage misused the stream",
				    "closed by a stage");
		return CONN_STEP_FAILED;
	}
	if (st->consumed)
		conn_consume(d, (uint32_t)st->consumed);
	st->body_offset += (uint32_t)st->consumed;
	c->stream.out->tail += (uint32_t)st->produced;
	c->stream_produced = c->stream_produced || st->produced;
	if (st->done && st->body_offset == st->body_len) {
		c->stream_active = false;
		return CONN_STEP_PROGRESS;
	}
	if (st->consumed || st->produced)
		return CONN_STEP_PROGRESS;
	/* Nothing moved: fine while it waits for more body bytes, or for the client to take
	 * what waits in the stream buffer (the stage may need more room than is left). */
	if ((!st->in_len && st->body_offset < st->body_len) || buf_len(c->stream.out))
		return CONN_STEP_WAIT;
	conn_fail(c, SQLSTATE_INTERNAL, "a stage made no progress on a streamed message",
		  "stage stream stalled");
	return CONN_STEP_FAILED;
}

/* The stage's view of a streamed message or run, cleared for type and request; NULL (the
 * session failed) when there is no memory for it. */
static struct stage_stream *conn_stream_open(struct conn *c, uint8_t type, uint64_t request)
{
	if (!c->stream.st && !(c->stream.st = malloc(sizeof(*c->stream.st)))) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return NULL;
	}
	memset(c->stream.st, 0, sizeof(*c->stream.st));
	c->stream.st->type = type;
	c->stream.st->request = request;
	return c->stream.st;
}

static enum conn_step conn_stream_begin(struct conn *c, struct conn_dir *d, const struct proto_msg *m,
					uint64_t request)
{
	if (!conn_stream_open(c, m->type, request))
		return CONN_STEP_FAILED;
	c->stream_active = true;
	c->stream_produced = false;
	c->stream.st->body_len = m->body_len;
	conn_consume(d, PROTO_HEADER_LEN); /* the stage writes the header of what replaces it */
	return CONN_STEP_PROGRESS;
}

/* The bulk types a run may hold: the tracker passes them without changing its state, and
 * the relay reads nothing of them, so taking several at once skips nothing it would do. */
static bool conn_run_type(uint8_t type)
{
	return type == PqMsg_DataRow || type == PqMsg_CopyData;
}

/*
 * The streamed message at the framing point lies whole in the buffer: it and the like
 * messages behind it go to the stage in one call (stage.h, "A run"). CONN_STEP_WAIT when
 * the stage took none of them: the caller streams the first one the ordinary way.
 */
static enum conn_step conn_stream_run(struct conn *c, struct conn_dir *d, const struct proto_msg *m,
				      uint64_t request, const uint8_t *at, uint32_t avail)
{
	struct stage_stream *st;
	struct stage_result res;
	uint32_t off = 0, total = 0;
	bool inside;

	if (conn_out_reserve(c, 1)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return CONN_STEP_FAILED;
	}
	st = conn_stream_open(c, m->type, request);
	if (!st)
		return CONN_STEP_FAILED;
	/* The first message and the like ones behind it, as many as the stream buffer's room
	 * holds as they are (more could not be written anyway, unless they shrink). */
	st->in = at;
	st->in_len = proto_frame_run(at, avail, PROTO_BACKEND, c->config->max_message_size, m->type,
				     STAGE_RUN_MESSAGE_MAX, buf_room(c->stream.out));
	if (!st->in_len)
		return CONN_STEP_WAIT;
	st->out = c->stream.out->data + c->stream.out->tail;
	st->out_cap = buf_room(c->stream.out);
	stage_run_stream_run(&c->chain, st, conn_now(c), &res);
	/* off: the start of the last message the stage took (of total bytes), 0 if none; not
	 * needed when it took the whole run, which ends where a message does. */
	while (st->consumed && st->consumed <= st->in_len &&
	       (st->partial || st->consumed != st->in_len)) {
		total = PROTO_HEADER_LEN + proto_read_u32(at + off + 1) - 4;
		if (off + total >= st->consumed)
			break;
		off += total;
	}
	inside = st->consumed && off + total > st->consumed; /* stopped in the middle of it */
	if (st->consumed > st->in_len || st->produced > st->out_cap ||
	    st->partial_produced > st->produced ||
	    (!st->partial && (inside || st->partial_produced)) ||
	    (st->partial && (!st->consumed || st->consumed - off < PROTO_HEADER_LEN ||
			     res.verdict != STAGE_FORWARD))) {
		conn_fail_answering(c, request, SQLSTATE_INTERNAL, "a stage misused the stream",
				    "closed by a stage");
		return CONN_STEP_FAILED;
	}
	if (st->consumed)
		conn_consume(d, (uint32_t)st->consumed);
	c->stream.out->tail += (uint32_t)st->produced;
	if (res.verdict != STAGE_FORWARD) {
		/* At a boundary: what went before is whole, so the client can be told why. */
		conn_fail_answering(c, request, res.sqlstate, res.message, "closed by a stage");
		return CONN_STEP_FAILED;
	}
	if (st->partial) {
		c->stream_active = true;
		c->stream_produced = st->partial_produced != 0;
		st->body_len = total - PROTO_HEADER_LEN;
		st->body_offset = (uint32_t)(st->consumed - off - PROTO_HEADER_LEN);
	}
	return st->consumed ? CONN_STEP_PROGRESS : CONN_STEP_WAIT;
}

/* ---- one message ---------------------------------------------------------------------- */

/* Are the server's messages matched against the tracker? From login on, and still while
 * the answers to what the client sent last are delivered. */
static bool conn_s2c_tracked(const struct conn *c)
{
	return conn_logged_in(c) || c->state == CONN_FAREWELL || c->state == CONN_SERVER_GONE;
}

/* What the tracker says of a logged-in server message, carried out. */
static enum conn_step conn_backend_track(struct conn *c, struct conn_dir *d, const struct proto_msg *m,
					 uint64_t request, uint32_t total, uint32_t avail,
					 bool *pass)
{
	const uint8_t *reply = NULL;
	uint32_t reply_len = 0;
	enum track_action a = track_backend(&c->track, m, conn_now(c), &reply, &reply_len);

	*pass = false;
	switch (a) {
	case TRACK_PASS:
		*pass = true;
		return CONN_STEP_PROGRESS;
	case TRACK_DROP:
		if (conn_replace(c, CONN_S2C, total, avail, NULL, 0))
			break;
		return CONN_STEP_PROGRESS;
	case TRACK_REPLACE: {
		struct proto_msg err;

		if (conn_replace(c, CONN_S2C, total, avail, reply, reply_len))
			break;
		err.type = PqMsg_ErrorResponse;
		err.body_len = reply_len - PROTO_HEADER_LEN;
		err.body = reply + PROTO_HEADER_LEN;
		(void)conn_backend_error(c, &err, request, true);
		return CONN_STEP_PROGRESS;
	}
	case TRACK_INVALID: {
		char text[160];

		snprintf(text, sizeof(text), "invalid message from server: unexpected %s",
			 proto_type_name(PROTO_BACKEND, m->type));
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION, text, text);
		return CONN_STEP_FAILED;
	}
	}
	conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
	return CONN_STEP_FAILED;
}

static enum conn_step conn_frame_s2c_one(struct conn *c, struct conn_dir *d, uint8_t *at,
					 uint32_t avail)
{
	bool relay_wants, stage_whole, server_fatal = false;
	bool logged_in = conn_s2c_tracked(c);
	struct proto_msg m;
	uint64_t request;
	uint32_t total;
	int r;

	r = proto_frame(at, avail, PROTO_BACKEND, c->config->max_message_size, &m);
	if (r == PROTO_NEED_MORE)
		return CONN_STEP_WAIT;
	if (r < 0 || !conn_backend_allowed(c, m.type)) {
		conn_fail_proto(c, r < 0 ? r : PROTO_ERR_TYPE, "invalid message from server");
		return CONN_STEP_FAILED;
	}
	total = PROTO_HEADER_LEN + m.body_len;
	relay_wants = typeset_has(&conn_backend_inspect, m.type) && total <= CONN_INSPECT_MAX;
	stage_whole = c->session_started && stage_chain_wants(&c->chain, PROTO_BACKEND, m.type);
	if (stage_whole && total > CONN_INSPECT_MAX) {
		conn_fail(c, SQLSTATE_PROGRAM_LIMIT, "server message too large for inspection",
			  "message too large for inspection");
		return CONN_STEP_FAILED;
	}
	if ((relay_wants || stage_whole) && avail < total) {
		d->need = total;
		return CONN_STEP_WAIT;
	}
	d->need = 0;
	m.body = at + PROTO_HEADER_LEN;
	if (c->auth) {
		enum conn_step s;

		if (conn_auth_server(c, d, &m, total, avail, &s))
			return s;
	}
	/* Before the tracker, which may complete the request this message ends. */
	request = logged_in ? track_answering(&c->track, m.type) : 0;
	if (logged_in) {
		bool pass;
		enum conn_step s = conn_backend_track(c, d, &m, request, total, avail, &pass);

		if (!pass)
			return s;
	}
	if (relay_wants) {
		if (m.type == PqMsg_ErrorResponse)
			server_fatal = conn_backend_error(c, &m, request, false);
		r = conn_follows_server(c) ? conn_backend_inspect_msg(c, &m, at + PROTO_HEADER_LEN)
					   : PROTO_OK;
		if (r == -ENOMEM || c->state == CONN_CLOSED)
			return CONN_STEP_FAILED;
		if (r < 0) {
			conn_fail_proto(c, r, "invalid message from server");
			return CONN_STEP_FAILED;
		}
	} else if (m.type == PqMsg_CopyDone && c->state == CONN_COPY_OUT) {
		conn_set_state(c, CONN_BUSY);
	}
	if (relay_wants && m.type == PqMsg_AuthenticationRequest && !stage_whole) {
		uint8_t offer[300];
		uint32_t n = conn_tls_sasl_offer(c, &m, offer, sizeof(offer)); /* conn_tls.c */

		if (n && conn_replace(c, CONN_S2C, total, total, offer, n)) {
			conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
			return CONN_STEP_FAILED;
		}
		if (n)
			return CONN_STEP_PROGRESS;
	}
	if (stage_whole) {
		struct stage_result res;

		stage_run_backend(&c->chain, &m, request, conn_now(c), &res);
		switch (res.verdict) {
		case STAGE_FORWARD:
			break;
		case STAGE_REWRITE:
			if (conn_replace(c, CONN_S2C, total, total, res.rewrite, res.rewrite_len)) {
				conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
				return CONN_STEP_FAILED;
			}
			return CONN_STEP_PROGRESS;
		default: /* the pipeline turned anything else into CLOSE */
			conn_fail_answering(c, request, res.sqlstate, res.message,
					    "closed by a stage");
			return CONN_STEP_FAILED;
		}
	} else if (c->session_started && stage_chain_streams(&c->chain, m.type)) {
		if (logged_in && avail >= total && total <= STAGE_RUN_MESSAGE_MAX &&
		    conn_run_type(m.type) && stage_chain_runs(&c->chain, m.type)) {
			enum conn_step s = conn_stream_run(c, d, &m, request, at, avail);

			if (s != CONN_STEP_WAIT)
				return s;
		}
		return conn_stream_begin(c, d, &m, request);
	}
	conn_s2c_forward(c, d, total, avail);
	/* A server's FATAL is its last word: deliver it, add nothing, and end. */
	if (server_fatal && c->state < CONN_CLOSING) {
		conn_dir_release(c, &c->dir[CONN_C2S]);
		conn_set_state(c, CONN_CLOSING);
	}
	return CONN_STEP_PROGRESS;
}

/*
 * Should framing stop so that the pump first sends what waits in the stream buffer? When it
 * is full, or the small message at the framing point would not fit in the room left: written
 * into those last bytes, that message would go in pieces, the buffer grown and copied
 * for each piece (conn_out_reserve()); sent first, it goes whole (in a run) into an empty
 * buffer. conn_pump() sends after every framing call that made progress and frames only
 * once the stream buffer has gone, so the caller stops only after progress (never stalls).
 */
static bool conn_out_flush_first(const struct conn *c, const struct conn_dir *d,
				 const uint8_t *at, uint32_t avail)
{
	const struct buf *o = c->stream.out;
	uint64_t total;

	if (!o || !buf_len(o))
		return false;
	if (!buf_room(o))
		return true;
	if (c->stream_active || d->skip_left || d->stream_left || avail < PROTO_HEADER_LEN)
		return false;
	total = 1 + (uint64_t)proto_read_u32(at + 1);
	return total <= STAGE_RUN_MESSAGE_MAX && buf_room(o) < total;
}

/*
 * How many bytes at the framing point are whole DataRows, or whole CopyData, that the
 * relay would pass exactly as they are: nothing waits in the stream buffer, no stage wants
 * or streams the type, the tracker passes it without a change (track_passes_rows), and
 * the relay reads nothing of it. A result set or a COPY is mostly such messages; framing
 * them in one go spares the per-message work of conn_frame_s2c_one, which would do the
 * same to each one. 0 when the first message is not one of them.
 */
static uint32_t conn_s2c_rows_extent(const struct conn *c, const uint8_t *at, uint32_t avail)
{
	uint8_t type = at[0];

	if (type != PqMsg_DataRow && type != PqMsg_CopyData)
		return 0;
	if (c->auth || !conn_s2c_tracked(c) || conn_s2c_copying(c) || !track_passes_rows(&c->track))
		return 0;
	if (c->session_started && (stage_chain_wants(&c->chain, PROTO_BACKEND, type) ||
				   stage_chain_streams(&c->chain, type)))
		return 0;
	return proto_frame_run(at, avail, PROTO_BACKEND, c->config->max_message_size, type,
			       UINT32_MAX, avail);
}

enum conn_step conn_frame_s2c(struct conn *c)
{
	struct conn_dir *d = &c->dir[CONN_S2C];
	enum conn_step step = CONN_STEP_WAIT, s = CONN_STEP_WAIT;

	for (;;) {
		uint32_t avail = d->buf ? buf_len(d->buf) - d->framed : 0;
		uint8_t *at = d->buf ? d->buf->data + d->buf->head + d->framed : NULL;
		uint32_t rows;

		if (step == CONN_STEP_PROGRESS && conn_out_flush_first(c, d, at, avail)) {
			s = CONN_STEP_WAIT;
			break;
		}
		if (c->stream_active) {
			s = conn_stream_step(c, d);
		} else if (!avail) {
			break;
		} else if (d->skip_left) {
			uint32_t n = avail < d->skip_left ? avail : d->skip_left;

			conn_consume(d, n);
			d->skip_left -= n;
			s = CONN_STEP_PROGRESS;
		} else if (d->stream_left) {
			uint32_t n = conn_s2c_pass(c, d, avail < d->stream_left ? avail : d->stream_left);

			d->stream_left -= n;
			s = n ? CONN_STEP_PROGRESS : CONN_STEP_WAIT;
		} else if (c->state == CONN_CANCEL || c->state >= CONN_CLOSING) {
			/* A cancel connection is owed nothing; a closing one adds nothing. */
			d->buf->tail = d->buf->head + d->framed;
			s = CONN_STEP_WAIT;
		} else if (d->hold != CONN_HOLD_NONE) {
			s = CONN_STEP_WAIT;
		} else if ((rows = conn_s2c_rows_extent(c, at, avail))) {
			d->framed += rows;
			d->need = 0;
			s = CONN_STEP_PROGRESS;
		} else {
			s = conn_frame_s2c_one(c, d, at, avail);
		}
		if (s != CONN_STEP_PROGRESS)
			break;
		step = CONN_STEP_PROGRESS;
		if (c->state == CONN_CLOSED)
			break;
	}
	return s == CONN_STEP_FAILED ? CONN_STEP_FAILED : step;
}
