/*
 * conn_internal: what the files of the connection (conn*.c) share with each other and with
 * nothing else. Every function here runs on the connection's worker thread.
 */
#ifndef PGWARDEN_CONN_INTERNAL_H
#define PGWARDEN_CONN_INTERNAL_H

#include "config/config.h"
#include "metrics/metrics_std.h"
#include "relay/conn.h"
#include "relay/relay.h"
#include "relay/worker.h"

#include <assert.h>
#include <stddef.h>

/* Messages the relay itself must see whole are all small; anything bigger a stage wants
 * whole is refused at this size rather than grown (54000). */
#define CONN_INSPECT_MAX (1u << 20)

#define SQLSTATE_PROTOCOL_VIOLATION "08P01"
#define SQLSTATE_CONNECTION_FAILURE "08006"
#define SQLSTATE_TOO_MANY_CONNECTIONS "53300"
#define SQLSTATE_OUT_OF_MEMORY "53200"
#define SQLSTATE_PROGRAM_LIMIT "54000"
#define SQLSTATE_ADMIN_SHUTDOWN "57P01"
#define SQLSTATE_IDLE_SESSION "57P05"
#define SQLSTATE_IDLE_IN_TRANSACTION "25P03"
#define SQLSTATE_INTERNAL "XX000"

/* What one framing step did. */
enum conn_step {
	CONN_STEP_FAILED = -1, /* the connection failed (state is CLOSING or CLOSED now) */
	CONN_STEP_WAIT = 0,    /* nothing more can be done until more bytes or an event */
	CONN_STEP_PROGRESS = 1, /* bytes were framed, consumed, or the state moved */
};

/* ---- conn_state.c ---------------------------------------------------------------------- */
void conn_set_state(struct conn *c, enum conn_state s);
void conn_timer_update(struct conn *c);
void conn_timer_fired(struct loop *loop, struct loop_timer *t);
void conn_linger(struct conn *c);

/* ---- conn.c ---------------------------------------------------------------------------- */
/* The ends of a connection are cold (once per session at most, none per message): the
 * compiler moves the paths that lead to them out of the per-message code, which is what a
 * transaction runs through with caches other processes emptied (bench/levers.md). */
#define CONN_COLD __attribute__((cold))
void conn_run(struct conn *c);
void conn_close(struct conn *c, const char *reason) CONN_COLD;
/* End the session with FATAL sqlstate/message (see conn.c). conn_fail: the FATAL answers the
 * oldest request still owed an answer, if any; conn_fail_answering: it answers `request`
 * (a stage's close decided on a message of that request). */
void conn_fail(struct conn *c, const char *sqlstate, const char *message, const char *reason)
	CONN_COLD;
void conn_fail_answering(struct conn *c, uint64_t request, const char *sqlstate,
			 const char *message, const char *reason) CONN_COLD;
void conn_fail_proto(struct conn *c, int status, const char *who) CONN_COLD;
void conn_set_reason(struct conn *c, const char *reason);
void conn_refused(struct conn *c, enum metrics_refuse_reason why) CONN_COLD;
void conn_publish(struct conn *c, const char *event);
void conn_note(struct conn *c, const struct stage_note *n);

static inline struct metrics_shard *conn_metrics(const struct conn *c)
{
	return c->worker->metrics;
}

static inline const struct metrics_std *conn_mstd(const struct conn *c)
{
	return &c->worker->relay->mstd;
}

/* The relay's accept-time guard (relay/guard.h), or NULL (the unit tests run without). */
static inline struct guard *conn_guard(const struct conn *c)
{
	return c->worker->relay->guard;
}

/* Past the login and not ending: asked several times per message, hence inline. */
static inline bool conn_logged_in(const struct conn *c)
{
	return c->state >= CONN_READY && c->state <= CONN_COPY_BOTH;
}

static inline uint64_t conn_now(const struct conn *c)
{
	return c->worker->loop.now;
}

/* ---- conn_io.c ------------------------------------------------------------------------- */
void conn_dir_release(struct conn *c, struct conn_dir *d);
int conn_dir_reserve(struct conn *c, struct conn_dir *d, uint32_t extra)
	__attribute__((warn_unused_result));
/* Put bytes pgwarden says itself at the framing point of a stream that is at a message
 * boundary, framed (they leave next, after what is already framed). 0 or -ENOMEM. */
int conn_inject(struct conn *c, enum conn_dir_id id, const uint8_t *bytes, uint32_t n)
	__attribute__((warn_unused_result));
/*
 * Replace the message at the framing point (total bytes, of which avail are in the buffer)
 * with bytes, framed; what of it has not arrived yet is dropped as it comes (skip_left).
 * 0 or -ENOMEM.
 */
int conn_replace(struct conn *c, enum conn_dir_id id, uint32_t total, uint32_t avail,
		 const uint8_t *bytes, uint32_t n) __attribute__((warn_unused_result));
/* Does the server → client stream go through the stream buffer (a stage streams a type in
 * this session, or bytes already wait there)? Inline: asked for every server message. */
static inline bool conn_s2c_copying(const struct conn *c)
{
	return c->stream.out || (c->chain.pipeline && stage_chain_streams_any(&c->chain));
}
/* Room for n more bytes in the stream buffer. 0 or -ENOMEM. */
int conn_out_reserve(struct conn *c, uint32_t n) __attribute__((warn_unused_result));
/* Consume n unframed bytes at the framing point without sending them. */
void conn_consume(struct conn_dir *d, uint32_t n);
bool conn_has_output(const struct conn *c);
/* Move one direction as far as it can go; true when anything moved. */
bool conn_pump(struct conn *c, enum conn_dir_id id);
void conn_assert_dir(const struct conn_dir *d);

/* ---- conn_frontend.c / conn_backend.c -------------------------------------------------- */
enum conn_step conn_frame_c2s(struct conn *c);
enum conn_step conn_frame_s2c(struct conn *c);
/* A whole stage REJECT / CLOSE verdict on a client message at the framing point. */
enum conn_step conn_stage_verdict_c2s(struct conn *c, const struct proto_msg *m,
				      uint32_t total, uint32_t avail,
				      const struct stage_result *r);
/* Start the session for a StartupMessage (the packet is already framed). */
int conn_session_begin(struct conn *c, const struct proto_startup *st);
/* Start the session's server leg (state CONNECTING). 0, or -errno after failing the
 * connection. */
int conn_session_connect(struct conn *c) __attribute__((warn_unused_result));

/* ---- conn_auth.c ----------------------------------------------------------------------- */
/* The session's StartupMessage was read: take the auth snapshot and start the login
 * (terminate mode: pgwarden's AuthenticationSASL goes to the client, and the server leg is
 * started only once the client proved itself). 0, or < 0 after failing the connection. */
int conn_auth_begin(struct conn *c) __attribute__((warn_unused_result));
/* Terminate mode, the client still owes pgwarden its proof: its messages are read while
 * the state is CONNECTING and there is no server leg yet. */
bool conn_auth_early(const struct conn *c);
/* Terminate mode: the session was given a kept server (conn_reuse.c), logged in already,
 * so no server leg is started for it. */
bool conn_auth_reused(const struct conn *c);
/* A framed client (server) message during the login, total bytes of which avail are here:
 * true when the login took it (what was done in *step), false when the core goes on with
 * it as usual. */
bool conn_auth_client(struct conn *c, struct conn_dir *d, const struct proto_msg *m,
		      uint32_t total, uint32_t avail, enum conn_step *step);
bool conn_auth_server(struct conn *c, struct conn_dir *d, const struct proto_msg *m,
		      uint32_t total, uint32_t avail, enum conn_step *step);
/* Release the machines (keys cleansed); nothing when the login already ended. */
void conn_auth_end(struct conn *c);

/* ---- conn_tls.c ----------------------------------------------------------------------- */
#define CONN_NEGOTIATED_SSL 1u
#define CONN_NEGOTIATED_GSSENC 2u
enum conn_server_tls_step {
	CONN_SERVER_TLS_NONE = 0,
	CONN_SERVER_TLS_ASK,       /* sending the SSLRequest */
	CONN_SERVER_TLS_ANSWER,    /* reading the one-byte answer */
	CONN_SERVER_TLS_HANDSHAKE, /* 'S': the TLS handshake */
};
/* Does this session offer TLS to its client (tls.client.mode prefer or require)? */
bool conn_tls_client_offered(struct conn *c);
/* Is the client leg TLS? */
bool conn_tls_client_on(const struct conn *c);
/* The SSLRequest of len bytes at the framing point, when TLS is offered: answer 'S'. */
enum conn_step conn_tls_client_request(struct conn *c, struct conn_dir *d, uint32_t len);
/* A TLS ClientHello first (direct SSL): the avail bytes at the framing point go to TLS. */
enum conn_step conn_tls_client_direct(struct conn *c, struct conn_dir *d, uint32_t avail);
/* A StartupMessage arrived: true (and the connection failed with 28000) when the client
 * leg is plaintext and tls.client.mode is require. */
bool conn_tls_client_refuses_plain(struct conn *c);
/* After the server leg connected: should an SSLRequest go first? Then begin it. */
bool conn_tls_server_wanted(struct conn *c);
void conn_tls_server_begin(struct conn *c);
/* Which kept server legs this session may take (relay/server_pool.h): a TLS leg set up
 * under its TLS settings when it wants TLS towards the server, a plaintext one when
 * plaintext is allowed (tls.server.mode disable or prefer, or a Unix socket). */
struct server_pool_accept;
void conn_tls_server_reuse_accept(struct conn *c, struct server_pool_accept *acc);
/* The TLS settings the server leg's TLS was set up under (tls_snapshot.generation); 0 when
 * the leg is plaintext. */
uint64_t conn_tls_server_generation(const struct conn *c);
/* A kept TLS server leg was taken: the session records its TLS as after a handshake. 0 or
 * -ENOMEM; nothing for a plaintext leg. */
int conn_tls_server_adopted(struct conn *c) __attribute__((warn_unused_result));
/* Drive the handshake state the connection is in; true when anything moved. */
bool conn_tls_negotiate(struct conn *c);
void conn_tls_release(struct conn *c);
/*
 * A whole AuthenticationRequest from the server: when it offers SCRAM-SHA-256-PLUS but the
 * binding cannot pass through pgwarden (tls_binding_passes_through()), the same offer
 * without it, n bytes in out, so that a client does not bind to a certificate the server
 * never presented; 0 when the message passes as it is.
 */
uint32_t conn_tls_sasl_offer(struct conn *c, const struct proto_msg *m, uint8_t *out,
			     uint32_t cap);

/* ---- conn_upstream.c ------------------------------------------------------------------- */
int conn_upstream_start(struct conn *c, const struct addr *to, const char *unix_path)
	__attribute__((warn_unused_result));
/* The server leg's connect may have finished: true when it did (successfully or not). */
bool conn_upstream_check(struct conn *c);
void conn_upstream_drop(struct conn *c);
bool conn_upstream_usable(const struct conn *c);

/* ---- conn_reuse.c ---------------------------------------------------------------------- */
/* The server leg is about to start for the held StartupMessage: record what it is when the
 * session may leave it behind (server_reuse). */
void conn_reuse_begin(struct conn *c, const uint8_t *startup, uint32_t len);
/* Take a kept server for the session instead of connecting: 1 when taken (state AUTH, its
 * login's end waiting to be framed), 0 when none fits, < 0 after failing the connection. */
int conn_reuse_take(struct conn *c) __attribute__((warn_unused_result));
/* The server reported a parameter: remember it for a replay. */
void conn_reuse_param(struct conn *c, const char *name, const char *value);
/* The server leg may not be kept after all. */
void conn_reuse_forget(struct conn *c);
/* The client's Terminate at the framing point (avail of total bytes here): true when the
 * session ended clean and its server leg went to the pool (the Terminate consumed, the
 * state CLOSING); false when the core goes on with it as usual. */
bool conn_reuse_park(struct conn *c, struct conn_dir *c2s, uint32_t total, uint32_t avail);

/* Publish the policy rule the session runs under for the admin listing (conn_admin.c);
 * called where it can change: after the login's notice and after frontend stage runs. */
void conn_publish_rule(struct conn *c);
/* The admin listing's last statement: the start of sql (len bytes). Out of memory: the
 * listing shows none until a later statement manages. */
void conn_publish_statement(struct conn *c, const char *sql, size_t len);

#endif
