/*
 * conn_frontend: the client → server stream. Frames the startup family (SSLRequest,
 * GSSENCRequest, CancelRequest, StartupMessage) and every later message, admits each by the
 * state, runs the stages on the messages they want, and carries out their verdicts: a
 * rewrite is spliced in, a rejected message is replaced by the tracker's poison (so the
 * server itself fails exactly there), a paused one holds the stream.
 */
#include "relay/conn_internal.h"

#include "admin/admin.h"
#include "audit/audit.h"
#include "base/log.h"
#include "base/log_limit.h"
#include "proto/proto.h"
#include "relay/cancel.h"
#include "relay/handover.h"
#include "sql/sql.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

#define NEGOTIATED_SSL CONN_NEGOTIATED_SSL
#define NEGOTIATED_GSSENC CONN_NEGOTIATED_GSSENC

/* ---- the startup family ---------------------------------------------------------------- */

/* A client can send wrong cancel keys at will: logged within limits. */
static struct log_limit limit_cancel =
	LOG_LIMIT_INIT(LOG_LIMIT_PEER_BURST, LOG_LIMIT_PEER_INTERVAL_MS);

/* The client's CancelRequest (already consumed from the stream) with its pid and key. */
static void conn_cancel_request(struct conn *c, uint32_t pid, const uint8_t *key,
				uint32_t key_len)
{
	struct relay *r = c->worker->relay;
	struct cancel_target t;
	uint8_t pkt[PROTO_STARTUP_HEADER_LEN + 4 + PROTO_CANCEL_KEY_MAX];
	char outcome[96];
	int n, err;

	conn_set_state(c, CONN_CANCEL);
	/* Only a key that matches names its session in the record; a wrong one belongs to
	 * nobody, whatever pid it claims. */
	if (!cancel_map_lookup(r->cancels, pid, key, key_len, &t)) {
		/* A key of the pgwardend this one replaced, still draining its sessions? */
		if (handover_forward_cancel(pid, key, key_len)) {
			log_info("cancel_forwarded", "pid=%u to the previous pgwardend", pid);
			audit_event_cancel(r->audit, &c->session.client, NULL, pid,
					   "forwarded to the previous pgwardend");
			conn_close(c, "cancel forwarded");
			return;
		}
		/* Like the server: a wrong key gets no answer and cancels nothing. */
		log_limited(&limit_cancel, LOG_INFO, "cancel_refused",
			    "pid=%u no session holds this cancel key", pid);
		audit_event_cancel(r->audit, &c->session.client, NULL, pid, "refused: unknown key");
		conn_close(c, "cancel key did not match");
		return;
	}
	n = proto_write_cancel(pkt, sizeof(pkt), t.pid, t.server_key, t.key_len);
	err = n > 0 ? conn_upstream_start(c, &t.upstream,
					  t.upstream_unix[0] ? t.upstream_unix : NULL)
		    : -EINVAL;
	if (!err)
		err = conn_inject(c, CONN_C2S, pkt, (uint32_t)n);
	OPENSSL_cleanse(t.server_key, sizeof(t.server_key));
	if (err) {
		log_warn("cancel_failed", "session=%s pid=%u could not reach the server: %s",
			 t.session_id, t.pid, strerror(-err));
		snprintf(outcome, sizeof(outcome), "failed: %s", strerror(-err));
		audit_event_cancel(r->audit, &c->session.client, t.session_id, t.pid, outcome);
		conn_close(c, "cancel forward failed");
		return;
	}
	c->session.backend_pid = t.pid;
	log_info("cancel_forwarded", "session=%s pid=%u", t.session_id, t.pid);
	audit_event_cancel(r->audit, &c->session.client, t.session_id, t.pid, "forwarded");
}

/*
 * Frame one startup-family packet at the start of the unframed bytes: PostgreSQL's own
 * negotiation (postmaster.c ProcessStartupPacket): an SSLRequest and a GSSENCRequest are
 * each answered once, in either order, and the next packet must be a StartupMessage or a
 * CancelRequest.
 */
static enum conn_step conn_frame_startup(struct conn *c, struct conn_dir *d, uint8_t *p,
					 uint32_t avail)
{
	struct proto_startup st;
	uint32_t len;
	uint8_t no = 'N';
	int r;

	if (proto_startup_is_tls(p, avail)) /* a direct-TLS ClientHello (conn_tls.c) */
		return conn_tls_client_direct(c, d, avail);
	r = proto_startup_frame(p, avail, &len);
	if (r == PROTO_NEED_MORE)
		return CONN_STEP_WAIT;
	if (r < 0) {
		conn_refused(c, MREFUSE_PROTOCOL);
		conn_fail_proto(c, r, "invalid startup packet");
		return CONN_STEP_FAILED;
	}
	if (avail < len) {
		d->need = len;
		return CONN_STEP_WAIT;
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
		return CONN_STEP_FAILED;
	}
	switch (st.kind) {
	case PROTO_SSL_REQUEST:
	case PROTO_GSSENC_REQUEST: {
		uint8_t bit = st.kind == PROTO_SSL_REQUEST ? NEGOTIATED_SSL : NEGOTIATED_GSSENC;

		if (c->negotiated & bit) {
			conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
				  "invalid startup packet: encryption was already negotiated",
				  "repeated encryption request");
			return CONN_STEP_FAILED;
		}
		c->negotiated |= bit;
		if (bit == NEGOTIATED_SSL && conn_tls_client_offered(c))
			return conn_tls_client_request(c, d, len);
		/* Encryption is not offered: answered, not forwarded. */
		conn_consume(d, len);
		if (conn_inject(c, CONN_S2C, &no, 1)) {
			conn_close(c, "out of memory");
			return CONN_STEP_FAILED;
		}
		return CONN_STEP_PROGRESS;
	}
	case PROTO_CANCEL_REQUEST: {
		uint8_t key[PROTO_CANCEL_KEY_MAX];
		uint32_t key_len = st.cancel_key_len;

		/* Consume the client's packet first: only the rewritten one may ever leave. */
		memcpy(key, st.cancel_key, key_len);
		conn_consume(d, len);
		conn_cancel_request(c, st.cancel_pid, key, key_len);
		return CONN_STEP_PROGRESS;
	}
	case PROTO_STARTUP_MESSAGE:
		if (conn_tls_client_refuses_plain(c))
			return CONN_STEP_FAILED;
		/* The packet goes upstream exactly as sent. */
		d->framed += len;
		return conn_session_begin(c, &st) ? CONN_STEP_FAILED : CONN_STEP_PROGRESS;
	}
	return CONN_STEP_WAIT;
}

/* ---- admission --------------------------------------------------------------------------- */

enum conn_admit {
	CONN_ADMIT_FORWARD,
	CONN_ADMIT_WAIT,    /* valid, but not before login completes */
	CONN_ADMIT_INVALID, /* a protocol violation in this state */
};

/*
 * May this client message pass now? During the login only answers to the server's request
 * may. A client that pipelined its first queries behind the StartupMessage (fine with trust
 * authentication) is held until the login completes, as the server would read them.
 */
static enum conn_admit conn_frontend_admit(const struct conn *c, uint8_t type)
{
	switch (c->state) {
	case CONN_AUTH:
		if (type == PqMsg_Terminate)
			return CONN_ADMIT_FORWARD;
		return type == PqMsg_PasswordMessage ? CONN_ADMIT_INVALID : CONN_ADMIT_WAIT;
	case CONN_AUTH_ANSWER:
		return type == PqMsg_PasswordMessage || type == PqMsg_Terminate ? CONN_ADMIT_FORWARD
										 : CONN_ADMIT_INVALID;
	default:
		return type == PqMsg_PasswordMessage ? CONN_ADMIT_INVALID : CONN_ADMIT_FORWARD;
	}
}

/* ---- statement bookkeeping -------------------------------------------------------------- */

static void conn_count_statement(struct conn *c, enum sql_class cls)
{
	if (conn_metrics(c))
		metrics_inc(conn_metrics(c), conn_mstd(c)->statements, metrics_std_stmt_type(cls));
}

/*
 * A whole Query or Parse: its text for the admin listing (the start of it), and for a
 * Query its statements' classes for statements_total (a Parse's class is counted when its
 * portals are executed). Returns the Parse's class for track_frontend: TRACK_CLASS_UNREAD
 * leaves reading it to the tracker, which knows whether the text repeats a statement's.
 * judged: the stages' verdict on it when they forwarded it unchanged, whose classes
 * (stage_result.classes) spare classifying the text again; NULL when no stage saw it.
 */
static uint8_t conn_note_statement(struct conn *c, const struct proto_msg *m,
				   const struct stage_result *judged)
{
	const char *sql = NULL, *name = "";
	uint16_t nparams;
	int r = m->type == PqMsg_Query ? proto_read_query(m, &sql)
				       : proto_read_parse(m, &name, &sql, &nparams);
	struct sql_splitter sp;
	struct sql_stmt st;
	size_t len;

	if (r != PROTO_OK)
		return SQL_CLASS_UNKNOWN;
	len = strlen(sql);
	conn_publish_statement(c, sql, len);
	if (judged && judged->classes) {
		if (m->type == PqMsg_Parse)
			return judged->nclasses == 1 ? judged->classes[0] : SQL_CLASS_UNKNOWN;
		for (uint32_t i = 0; i < judged->nclasses; i++)
			conn_count_statement(c, (enum sql_class)judged->classes[i]);
		return SQL_CLASS_UNKNOWN;
	}
	if (m->type == PqMsg_Parse)
		return TRACK_CLASS_UNREAD;
	if (sql_split_single(sql, len)) { /* one statement: lexed once, by the classifier */
		conn_count_statement(c, sql_classify(sql, len, 0, NULL));
		return SQL_CLASS_UNKNOWN;
	}
	sql_split_init(&sp, sql, len, 0);
	while (sql_split_next(&sp, &st))
		conn_count_statement(c, sql_classify(sql + st.off, st.len, 0, NULL));
	return SQL_CLASS_UNKNOWN;
}

/* A client message is about to leave: what it changes. 0 or -ENOSPC / -ENOMEM (tracker).
 * judged: the stages' FORWARD verdict on it, NULL when none saw it or it was rewritten. */
static int conn_frontend_forwarding(struct conn *c, const uint8_t *at, uint32_t avail,
				    uint32_t total, const uint32_t *words,
				    const struct stage_result *judged)
{
	uint8_t type = at[0];
	uint8_t cls = SQL_CLASS_UNKNOWN;
	int err;

	if (!conn_logged_in(c)) {
		if (c->state == CONN_AUTH_ANSWER && type == PqMsg_PasswordMessage)
			conn_set_state(c, CONN_AUTH);
		return 0;
	}
	if ((type == PqMsg_Query || type == PqMsg_Parse) && avail >= total) {
		struct proto_msg m = {.type = type, .body_len = total - PROTO_HEADER_LEN,
				      .body = at + PROTO_HEADER_LEN};

		cls = conn_note_statement(c, &m, judged);
	} else if (type == PqMsg_Query) {
		conn_count_statement(c, SQL_CLASS_UNKNOWN); /* too large to hold: streamed */
	}
	if (track_answered(type, c->state == CONN_COPY_IN)) {
		err = track_frontend(&c->track, at, avail, cls, words, conn_now(c));
		if (err)
			return err;
	}
	/* The client's clock starts at the request's first byte, also when it came in pieces. */
	if (!c->busy_since &&
	    (type == PqMsg_Query || type == PqMsg_Execute || type == PqMsg_FunctionCall))
		c->busy_since = c->dir[CONN_C2S].msg_open_since ? c->dir[CONN_C2S].msg_open_since
								: conn_now(c);
	if (type == PqMsg_Query || type == PqMsg_Execute)
		c->session.statements++;
	if (c->state == CONN_COPY_IN && (type == PqMsg_CopyDone || type == PqMsg_CopyFail))
		conn_set_state(c, CONN_BUSY);
	if (c->state == CONN_READY && c->track.owed_ready)
		conn_set_state(c, CONN_BUSY);
	return 0;
}

/* ---- stage verdicts ------------------------------------------------------------------------ */

/* Messages PostgreSQL answers with an error in place, so that a refusal keeps the session:
 * every message it answers but Sync, whose answer (ReadyForQuery) ends the batch. */
static bool conn_rejectable(uint8_t type)
{
	return type != PqMsg_Sync && track_answered(type, false);
}

enum conn_step conn_stage_verdict_c2s(struct conn *c, const struct proto_msg *m,
				      uint32_t total, uint32_t avail,
				      const struct stage_result *r)
{
	uint8_t err[512], poison[128];
	int elen, plen;

	if (r->verdict == STAGE_CLOSE || !conn_rejectable(m->type) || !conn_logged_in(c)) {
		/* The FATAL answers the refused message: the number its decision carries. */
		conn_fail_answering(c, track_next_request(&c->track),
				    r->sqlstate[0] ? r->sqlstate : SQLSTATE_INTERNAL, r->message,
				    "closed by a stage");
		return CONN_STEP_FAILED;
	}
	elen = proto_write_error(err, sizeof(err), "ERROR", r->sqlstate, r->message);
	if (elen < 0) {
		conn_fail(c, SQLSTATE_INTERNAL, "could not encode a refusal", "stage refusal");
		return CONN_STEP_FAILED;
	}
	plen = track_reject(&c->track, m->type, err, (uint32_t)elen, conn_now(c), poison,
			    sizeof(poison));
	if (plen < 0 || conn_replace(c, CONN_C2S, total, avail, poison, (uint32_t)plen)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return CONN_STEP_FAILED;
	}
	c->session.denied++;
	if (c->state == CONN_READY && c->track.owed_ready)
		conn_set_state(c, CONN_BUSY);
	return CONN_STEP_PROGRESS;
}

/* A message the stages want whole but which is larger than pgwarden inspects. */
static enum conn_step conn_too_large(struct conn *c, const struct proto_msg *m, uint32_t total,
				     uint32_t avail)
{
	struct stage_result r = {.verdict = STAGE_REJECT};

	snprintf(r.sqlstate, sizeof(r.sqlstate), "%s", SQLSTATE_PROGRAM_LIMIT);
	snprintf(r.message, sizeof(r.message),
		 "pgwarden: %s message of %u bytes is larger than it can inspect (%u)",
		 proto_type_name(PROTO_FRONTEND, m->type), total, CONN_INSPECT_MAX);
	return conn_stage_verdict_c2s(c, m, total, avail, &r);
}

/* The statement limits: the Parse is refused in place and the session goes on. */
static enum conn_step conn_too_many_statements(struct conn *c, const struct proto_msg *m,
					       uint32_t total, uint32_t avail)
{
	struct stage_result r = {.verdict = STAGE_REJECT};

	snprintf(r.sqlstate, sizeof(r.sqlstate), "53400");
	snprintf(r.message, sizeof(r.message),
		 "pgwarden: too many prepared statements in this session (limits: %u statements, "
		 "%llu bytes)", c->config->max_prepared_statements,
		 (unsigned long long)c->config->max_prepared_bytes);
	return conn_stage_verdict_c2s(c, m, total, avail, &r);
}

/*
 * Run the stages on the whole message at the framing point. Returns CONN_STEP_PROGRESS
 * with *forward set when the message goes on as it is (words filled for a Parse, res the
 * stages' verdict), or the step taken otherwise (a rewrite or a refusal framed, a hold, a
 * failure).
 */
static enum conn_step conn_frontend_stages(struct conn *c, struct conn_dir *d, struct proto_msg *m,
					   uint32_t total, uint32_t *words,
					   struct stage_result *res, bool *forward)
{
	uint8_t *at = d->buf->data + d->buf->head + d->framed;
	int err;

	*forward = false;
	m->body = at + PROTO_HEADER_LEN;
	stage_run_frontend(&c->chain, m, track_next_request(&c->track),
			   m->type == PqMsg_Parse || m->type == PqMsg_Query ? words : NULL,
			   conn_now(c), res);
	conn_publish_rule(c); /* a reload may have moved the session to another rule */
	switch (res->verdict) {
	case STAGE_FORWARD:
		*forward = true;
		return CONN_STEP_PROGRESS;
	case STAGE_REWRITE:
		if (conn_replace(c, CONN_C2S, total, total, res->rewrite, res->rewrite_len))
			break;
		/* What leaves is the rewrite: that is what the tracker must know. */
		at = d->buf->data + d->buf->head + d->framed - res->rewrite_len;
		err = conn_frontend_forwarding(c, at, res->rewrite_len, res->rewrite_len, words,
					       NULL);
		if (err)
			break;
		return CONN_STEP_PROGRESS;
	case STAGE_PAUSE:
		d->hold = CONN_HOLD_STAGE;
		c->resume_at = res->resume_at_ns;
		return CONN_STEP_WAIT;
	default:
		return conn_stage_verdict_c2s(c, m, total, total, res);
	}
	conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
	return CONN_STEP_FAILED;
}

/* ---- framing ----------------------------------------------------------------------------- */

/* One message at the framing point of a session past its startup packet. */
static enum conn_step conn_frame_one(struct conn *c, struct conn_dir *d, uint8_t *at,
				     uint32_t avail)
{
	uint32_t words[STAGE_MAX] = {0};
	struct stage_result res;
	const struct stage_result *judged = NULL;
	enum conn_admit admit;
	enum conn_step step;
	struct proto_msg m;
	uint32_t total;
	int r;

	r = proto_frame(at, avail, PROTO_FRONTEND, c->config->max_message_size, &m);
	if (r == PROTO_NEED_MORE)
		return CONN_STEP_WAIT;
	if (r < 0) {
		conn_fail_proto(c, r, "invalid message from client");
		return CONN_STEP_FAILED;
	}
	if (c->auth && conn_auth_client(c, d, &m, PROTO_HEADER_LEN + m.body_len, avail, &step))
		return step;
	admit = conn_frontend_admit(c, m.type);
	if (admit == CONN_ADMIT_WAIT)
		return CONN_STEP_WAIT;
	if (admit == CONN_ADMIT_INVALID) {
		char text[120];

		snprintf(text, sizeof(text), "invalid frontend message type %d in state %s", m.type,
			 conn_state_to_str(c->state));
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION, text, "invalid message type");
		return CONN_STEP_FAILED;
	}
	total = PROTO_HEADER_LEN + m.body_len;
	/* A client message that fits in one buffer leaves only whole: a slow or stalled
	 * client never leaves the server holding half a message. Larger ones (COPY data, big
	 * parameters) stream by count. */
	if (avail < total && total <= c->config->buffer_size) {
		d->need = total;
		return CONN_STEP_WAIT;
	}
	d->need = 0;
	if (conn_logged_in(c) && stage_chain_wants(&c->chain, PROTO_FRONTEND, m.type)) {
		enum conn_step s;
		bool forward;

		if (total > CONN_INSPECT_MAX)
			return conn_too_large(c, &m, total, avail);
		if (avail < total) {
			d->need = total;
			return CONN_STEP_WAIT;
		}
		s = conn_frontend_stages(c, d, &m, total, words, &res, &forward);
		if (!forward)
			return s;
		judged = &res;
	}
	r = conn_frontend_forwarding(c, at, avail, total, words, judged);
	if (r == -ENOSPC)
		return conn_too_many_statements(c, &m, total, avail);
	if (r) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return CONN_STEP_FAILED;
	}
	if (m.type == PqMsg_Terminate) {
		conn_set_reason(c, "client terminated");
		if (conn_reuse_park(c, d, total, avail))
			return CONN_STEP_PROGRESS;
		/* Forward it and drop whatever follows; answers to what the client sent before
		 * it still reach the client until the server closes. */
		d->framed += total;
		d->buf->tail = d->buf->head + d->framed;
		conn_set_state(c, c->server ? CONN_FAREWELL : CONN_CLOSING);
		return CONN_STEP_PROGRESS;
	}
	if (avail >= total) {
		d->framed += total;
	} else {
		d->framed += avail;
		d->stream_left = total - avail;
	}
	return CONN_STEP_PROGRESS;
}

enum conn_step conn_frame_c2s(struct conn *c)
{
	struct conn_dir *d = &c->dir[CONN_C2S];
	enum conn_step step = CONN_STEP_WAIT, s = CONN_STEP_WAIT;

	while (d->buf && d->framed < buf_len(d->buf)) {
		uint8_t *at = d->buf->data + d->buf->head + d->framed;
		uint32_t avail = buf_len(d->buf) - d->framed;

		if (d->skip_left) {
			uint32_t n = avail < d->skip_left ? avail : d->skip_left;

			conn_consume(d, n);
			d->skip_left -= n;
			step = CONN_STEP_PROGRESS;
			continue;
		}
		if (d->stream_left) {
			uint32_t n = avail < d->stream_left ? avail : d->stream_left;

			d->framed += n;
			d->stream_left -= n;
			step = CONN_STEP_PROGRESS;
			continue;
		}
		switch (c->state) {
		case CONN_NEGOTIATE:
			s = conn_frame_startup(c, d, at, avail);
			break;
		case CONN_CONNECTING:
		case CONN_SERVER_TLS:
			/* Nothing may pass until the server has spoken; but in terminate mode
			 * the client answers pgwarden meanwhile (its answers never pass). */
			s = conn_auth_early(c) && d->hold == CONN_HOLD_NONE
				    ? conn_frame_one(c, d, at, avail)
				    : CONN_STEP_WAIT;
			break;
		case CONN_CLIENT_TLS:
		case CONN_CANCEL:
			s = CONN_STEP_WAIT;
			break;
		case CONN_FAREWELL:
		case CONN_SERVER_GONE:
		case CONN_CLOSING:
		case CONN_CLOSED:
			d->buf->tail = d->buf->head + d->framed; /* goes nowhere */
			s = CONN_STEP_WAIT;
			break;
		default:
			s = d->hold != CONN_HOLD_NONE ? CONN_STEP_WAIT : conn_frame_one(c, d, at, avail);
			break;
		}
		if (s != CONN_STEP_PROGRESS)
			break;
		step = CONN_STEP_PROGRESS;
		if (c->state >= CONN_CLOSING)
			break;
	}
	if (s == CONN_STEP_FAILED)
		return CONN_STEP_FAILED;
	/* The clock of an incomplete client message starts when it was first seen incomplete,
	 * not at the last read, so trickling bytes does not extend it. */
	if (c->state < CONN_CLOSING) {
		bool open = d->stream_left || (d->buf && buf_len(d->buf) > d->framed);

		if (!open)
			d->msg_open_since = 0;
		else if (!d->msg_open_since)
			d->msg_open_since = conn_now(c);
	}
	return step;
}
