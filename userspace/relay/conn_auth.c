/*
 * conn_auth: the login, as the connection core drives the authentication machines
 * (auth/auth.h). The machines decide; this file frames their input and carries out what
 * they answer, in a few calls from the framers:
 *
 *   passthrough  every server AuthenticationRequest / ErrorResponse and every client
 *                PasswordMessage of the login goes through auth_observer_*: forwarded as it
 *                is, or refused (a method auth.server_methods does not allow, a SCRAM
 *                message that does not parse or continue the exchange, a locked login).
 *   terminate    pgwarden answers the client itself (auth_terminate_*): it sends
 *                AuthenticationSASL as soon as the StartupMessage is read, and the client's
 *                answers never go upstream. The server leg is started only once the client
 *                has proved itself (so an unauthenticated client costs the server nothing:
 *                no connection, no backend); then pgwarden logs in upstream
 *                (auth_upstream_*) and the client gets AuthenticationOk only when that
 *                succeeded.
 *
 * A refusal replaces what would have gone on with pgwarden's FATAL, drops the server leg
 * (nothing more reaches it), and ends the connection. The machines' state is held only
 * while the session logs in and is cleansed when the login ends either way.
 */
#include "relay/conn_internal.h"

#include "audit/audit.h"
#include "auth/auth.h"
#include "base/clock.h"
#include "base/log.h"
#include "proto/proto.h"
#include "relay/transport_tls.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

struct conn_auth {
	struct auth_ctx *ctx;
	bool terminate;
	bool client_done;    /* terminate: the client leg succeeded */
	bool upstream_begun; /* terminate: auth_upstream_begin() was called */
	bool reused;         /* terminate: a kept server (conn_reuse.c), logged in long ago */
	bool lock_audited;
	/* terminate: the client's StartupMessage, held back until the server leg starts (a
	 * framed packet left in the stream would hold the client's answers behind it). */
	uint8_t *startup;
	uint32_t startup_len;
	size_t size; /* allocated: a passthrough login holds only the observer */
	uint8_t out[AUTH_OUT_MAX];
	union {
		struct auth_observer obs;
		struct {
			struct auth_terminate term;
			struct auth_upstream up;
		};
	};
};

#define CONN_AUTH_PASSTHROUGH_SIZE (offsetof(struct conn_auth, obs) + sizeof(struct auth_observer))

static uint64_t conn_auth_now_ms(const struct conn *c)
{
	return conn_now(c) / NSEC_PER_MSEC;
}

void conn_auth_end(struct conn *c)
{
	struct conn_auth *a = c->auth;

	if (!a)
		return;
	if (a->terminate) {
		auth_terminate_end(&a->term);
		auth_upstream_end(&a->up);
	} else {
		auth_observer_end(&a->obs);
	}
	auth_ctx_unref(a->ctx);
	free(a->startup);
	OPENSSL_cleanse(a, a->size);
	free(a);
	c->auth = NULL;
}

/* tls-server-end-point data of a leg, when it is TLS and has a certificate; else 0. */
static size_t conn_auth_cbind(struct transport *t, uint8_t out[SCRAM_CBIND_DATA_MAX])
{
	struct tls_conn *tc = t ? transport_tls_conn(t) : NULL;
	size_t len = SCRAM_CBIND_DATA_MAX;

	if (!tc || tls_conn_channel_binding(tc, out, &len))
		return 0;
	return len;
}

/* A failure of this login locked its user or source: the audit trail records it once. */
static void conn_auth_audit_lock(struct conn *c)
{
	struct conn_auth *a = c->auth;
	int bits = a->terminate ? a->term.lock_result : a->obs.lock_result;
	struct lockout_params p;

	if (!bits || a->lock_audited || !a->ctx->lockout)
		return;
	a->lock_audited = true;
	lockout_params_get(a->ctx->lockout, &p);
	audit_event_lockout(c->worker->relay->audit,
			    (bits & LOCKOUT_USER_LOCKED) ? c->session.user : NULL,
			    &c->session.client, p.failures,
			    clock_wall_ns() + p.duration_ms * NSEC_PER_MSEC);
}

/* The stages hear how the login ended (session->auth has the method and outcome). */
static void conn_auth_note(struct conn *c)
{
	struct stage_note n = {.kind = STAGE_NOTE_AUTH};

	if (c->session_started)
		stage_run_notice(&c->chain, &n, &c->limits, conn_now(c));
}

/*
 * The login is refused: err (a whole FATAL ErrorResponse) replaces everything not yet
 * framed towards the client, nothing more goes upstream, and the connection ends.
 */
static void conn_auth_refuse(struct conn *c, const uint8_t *err, size_t n, const char *reason)
{
	struct conn_dir *s2c = &c->dir[CONN_S2C], *c2s = &c->dir[CONN_C2S];
	struct proto_error_fields ef;
	struct proto_msg m;

	conn_auth_audit_lock(c);
	if (c->auth->terminate)
		c->session.auth.at_relay = true; /* pgwarden, not the server, refused it */
	conn_set_reason(c, reason);
	conn_refused(c, MREFUSE_AUTH);
	if (s2c->buf)
		s2c->buf->tail = s2c->buf->head + s2c->framed;
	if (c2s->buf)
		c2s->buf->tail = c2s->buf->head + c2s->framed;
	c2s->stream_left = c2s->skip_left = 0;
	conn_upstream_drop(c);
	if (n > PROTO_HEADER_LEN && !s2c->stream_left && !s2c->skip_left && !c2s->eof) {
		if (conn_inject(c, CONN_S2C, err, (uint32_t)n)) {
			log_warn("conn_auth", "session=%s no memory for the refusal",
				 c->session.id_hex);
		} else {
			struct stage_note note = {.kind = STAGE_NOTE_ERROR, .from_relay = true};

			m.type = err[0];
			m.body = err + PROTO_HEADER_LEN;
			m.body_len = (uint32_t)n - PROTO_HEADER_LEN;
			if (proto_read_error(&m, &ef) == PROTO_OK) {
				note.severity = ef.severity;
				note.sqlstate = ef.sqlstate;
				note.message = ef.message;
				conn_note(c, &note);
			}
		}
	}
	conn_auth_note(c);
	conn_auth_end(c);
	conn_set_state(c, CONN_CLOSING);
}

/* The login succeeded (the client is about to get AuthenticationOk). */
static void conn_auth_logged_in(struct conn *c)
{
	if (conn_guard(c))
		guard_login(conn_guard(c), &c->guard);
	conn_auth_note(c);
	conn_auth_end(c);
}

/*
 * Terminate mode, the client proved itself: a kept server whose login matches startup
 * (conn_reuse.c), logged in already. 1 when one was taken, 0 when the caller starts a new
 * server leg and sends it startup, < 0 after failing the connection.
 */
static int conn_auth_server_leg(struct conn *c, const uint8_t *startup, uint32_t len)
{
	int taken;

	conn_reuse_begin(c, startup, len);
	taken = conn_reuse_take(c);
	if (taken > 0)
		c->auth->reused = true;
	return taken;
}

bool conn_auth_reused(const struct conn *c)
{
	return c->auth && c->auth->reused;
}

int conn_auth_begin(struct conn *c)
{
	struct auth_runtime *rt = c->worker->relay->auth;
	struct conn_auth *a;
	uint8_t cbind[SCRAM_CBIND_DATA_MAX];
	size_t cbind_len, n = 0;
	enum auth_action act;
	struct auth_ctx *ctx;
	bool terminate;
	size_t size;

	if (!rt)
		return 0;
	ctx = auth_runtime_acquire(rt);
	terminate = ctx->mode == AUTH_MODE_TERMINATE;
	size = terminate ? sizeof(*a) : CONN_AUTH_PASSTHROUGH_SIZE;
	a = calloc(1, size);
	if (!a) {
		auth_ctx_unref(ctx);
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return -ENOMEM;
	}
	a->ctx = ctx;
	a->terminate = terminate;
	a->size = size;
	c->auth = a;
	if (!a->terminate) {
		auth_observer_begin(&a->obs, a->ctx, &c->session, conn_auth_now_ms(c));
		return 0;
	}
	/* The client leg's TLS (if any) finished before its StartupMessage. */
	cbind_len = conn_auth_cbind(c->client, cbind);
	act = auth_terminate_begin(&a->term, a->ctx, &c->session, cbind_len ? cbind : NULL,
				   cbind_len, conn_auth_now_ms(c), a->out, sizeof(a->out), &n);
	OPENSSL_cleanse(cbind, sizeof(cbind));
	switch (act) {
	case AUTH_TO_CLIENT: {
		struct conn_dir *d = &c->dir[CONN_C2S];

		/* The StartupMessage is all that is framed: hold it here until the server
		 * leg starts (conn_auth_terminate_client), so the client's answers can pass. */
		a->startup_len = d->framed;
		a->startup = malloc(a->startup_len ? a->startup_len : 1);
		if (!a->startup || conn_inject(c, CONN_S2C, a->out, (uint32_t)n)) {
			conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
			return -ENOMEM;
		}
		memcpy(a->startup, d->buf->data + d->buf->head, a->startup_len);
		d->buf->head += a->startup_len;
		d->framed = 0;
		return 0;
	}
	case AUTH_DONE: { /* a certificate alone: AuthenticationOk once upstream accepts */
		struct conn_dir *d = &c->dir[CONN_C2S];
		int taken;

		a->client_done = true;
		taken = conn_auth_server_leg(c, d->buf->data + d->buf->head, d->framed);
		if (taken <= 0)
			return taken; /* 0: the caller starts a new server leg */
		/* The kept server logged in long ago: this StartupMessage goes nowhere. */
		d->buf->head += d->framed;
		d->framed = 0;
		return 0;
	}
	default:
		conn_auth_refuse(c, a->out, n, "authentication refused");
		return -EACCES;
	}
}

bool conn_auth_early(const struct conn *c)
{
	return c->auth && c->auth->terminate && !c->auth->client_done;
}

/* terminate: a client message while pgwarden is the server. It never goes upstream. */
static enum conn_step conn_auth_terminate_client(struct conn *c, struct conn_dir *d,
						 const struct proto_msg *m, uint32_t total)
{
	struct conn_auth *a = c->auth;
	size_t n = 0;
	enum auth_action act;

	if (m->type == PqMsg_Terminate) {
		/* Gone before it proved itself: the server never heard of it. */
		conn_consume(d, total);
		conn_set_reason(c, "client terminated during authentication");
		conn_upstream_drop(c);
		conn_auth_end(c);
		conn_set_state(c, CONN_CLOSING);
		return CONN_STEP_PROGRESS;
	}
	act = auth_terminate_client(&a->term, m, conn_auth_now_ms(c), a->out, sizeof(a->out), &n);
	conn_consume(d, total);
	switch (act) {
	case AUTH_TO_CLIENT:
		break;
	case AUTH_DONE: /* out: the server-final; AuthenticationOk waits for the server */
		a->client_done = true;
		break;
	default:
		conn_auth_refuse(c, a->out, n, "authentication failed");
		return CONN_STEP_FAILED;
	}
	if (conn_inject(c, CONN_S2C, a->out, (uint32_t)n)) {
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return CONN_STEP_FAILED;
	}
	/* Only now does the server hear of this session: its StartupMessage goes first. */
	if (a->client_done && a->startup) {
		int taken = conn_auth_server_leg(c, a->startup, a->startup_len);

		if (taken < 0)
			return CONN_STEP_FAILED;
		if (!taken && conn_session_connect(c))
			return CONN_STEP_FAILED;
		if (!taken && conn_inject(c, CONN_C2S, a->startup, a->startup_len)) {
			conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
			return CONN_STEP_FAILED;
		}
		free(a->startup);
		a->startup = NULL;
	}
	return CONN_STEP_PROGRESS;
}

bool conn_auth_client(struct conn *c, struct conn_dir *d, const struct proto_msg *m,
		      uint32_t total, uint32_t avail, enum conn_step *step)
{
	struct conn_auth *a = c->auth;
	size_t n = 0;
	struct proto_msg whole = *m;

	if (!a || conn_logged_in(c))
		return false;
	if (a->terminate ? a->client_done : (m->type != PqMsg_PasswordMessage ||
					     c->state != CONN_AUTH_ANSWER))
		return false; /* the core's admission decides */
	if (a->terminate && m->type == PqMsg_Terminate) {
		*step = conn_auth_terminate_client(c, d, m, total);
		return true;
	}
	/* Whole: the framer bounds a PasswordMessage as PostgreSQL does (65535 bytes). */
	if (avail < total) {
		d->need = total;
		*step = CONN_STEP_WAIT;
		return true;
	}
	whole.body = d->buf->data + d->buf->head + d->framed + PROTO_HEADER_LEN;
	if (a->terminate) {
		*step = conn_auth_terminate_client(c, d, &whole, total);
		return true;
	}
	if (auth_observer_client(&a->obs, &whole, a->out, sizeof(a->out), &n) == AUTH_FORWARD)
		return false;
	conn_auth_refuse(c, a->out, n, "authentication refused");
	*step = CONN_STEP_FAILED;
	return true;
}

/* passthrough: a whole server message of the login. */
static bool conn_auth_observe_server(struct conn *c, const struct proto_msg *m,
				     enum conn_step *step)
{
	struct conn_auth *a = c->auth;
	size_t n = 0;
	enum auth_action act;

	act = auth_observer_server(&a->obs, m, a->out, sizeof(a->out), &n, conn_auth_now_ms(c));
	conn_auth_audit_lock(c);
	switch (act) {
	case AUTH_FORWARD:
		if (a->obs.state == AUTH_OBS_FAILED) /* the server refused: its FATAL goes on */
			conn_auth_end(c);
		return false;
	case AUTH_DONE:
		/* AuthenticationOk goes on; the core's reading of it (conn_backend_auth) tells
		 * the guard and the stages. */
		conn_auth_end(c);
		return false;
	default:
		conn_auth_refuse(c, a->out, n, "authentication refused");
		*step = CONN_STEP_FAILED;
		return true;
	}
}

/* terminate: a whole server message while pgwarden logs in upstream. */
static enum conn_step conn_auth_upstream_server(struct conn *c, struct conn_dir *d,
						const struct proto_msg *m, uint32_t total)
{
	struct conn_auth *a = c->auth;
	size_t n = 0;
	enum auth_action act;

	if (a->reused) {
		/* The kept server's replayed AuthenticationOk (conn_reuse.c): that server
		 * logged in long ago, and the client gets pgwarden's own, as after a login. */
		n = (size_t)proto_write_auth(a->out, sizeof(a->out), AUTH_REQ_OK, NULL, 0);
		act = AUTH_DONE;
	} else {
		if (!a->upstream_begun) {
			uint8_t cbind[SCRAM_CBIND_DATA_MAX];
			size_t cbind_len = conn_auth_cbind(c->server, cbind);

			auth_upstream_begin(&a->up, a->ctx, &c->session, &a->term,
					    c->server && transport_tls_conn(c->server) != NULL,
					    cbind_len ? cbind : NULL, cbind_len);
			auth_terminate_end(&a->term); /* the ClientKey was copied */
			a->upstream_begun = true;
		}
		act = auth_upstream_server(&a->up, m, a->out, sizeof(a->out), &n);
	}
	switch (act) {
	case AUTH_TO_SERVER:
		conn_consume(d, total);
		if (conn_inject(c, CONN_C2S, a->out, (uint32_t)n))
			break;
		OPENSSL_cleanse(a->out, n);
		return CONN_STEP_PROGRESS;
	case AUTH_WAIT_SERVER:
		conn_consume(d, total);
		return CONN_STEP_PROGRESS;
	case AUTH_DONE:
		/* The server's AuthenticationOk becomes pgwarden's own to the client. */
		if (conn_replace(c, CONN_S2C, total, total, a->out, (uint32_t)n))
			break;
		conn_auth_logged_in(c);
		return CONN_STEP_PROGRESS;
	default:
		conn_auth_refuse(c, a->out, n, "upstream login failed");
		return CONN_STEP_FAILED;
	}
	conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
	return CONN_STEP_FAILED;
}

bool conn_auth_server(struct conn *c, struct conn_dir *d, const struct proto_msg *m,
		      uint32_t total, uint32_t avail, enum conn_step *step)
{
	struct conn_auth *a = c->auth;

	if (!a || (c->state != CONN_AUTH && c->state != CONN_AUTH_ANSWER))
		return false;
	if (m->type != PqMsg_AuthenticationRequest && m->type != PqMsg_ErrorResponse) {
		if (!a->terminate || m->type == PqMsg_NoticeResponse ||
		    m->type == PqMsg_NegotiateProtocolVersion)
			return false;
		/* Past the login before pgwarden accepted it upstream: the server skipped it. */
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
			  "invalid message from server: unexpected message during authentication",
			  "server skipped authentication");
		*step = CONN_STEP_FAILED;
		return true;
	}
	if (avail < total) {
		d->need = total;
		*step = CONN_STEP_WAIT;
		return true;
	}
	if (!a->terminate)
		return conn_auth_observe_server(c, m, step);
	if (!a->client_done) {
		*step = CONN_STEP_WAIT; /* the server waits until the client has proved itself */
		return true;
	}
	*step = conn_auth_upstream_server(c, d, m, total);
	return true;
}
