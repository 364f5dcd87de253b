/*
 * auth: authentication at the relay, as pure message-in/message-out steps the connection
 * core calls from its authentication states. No sockets, no event loop, no timers: the
 * core frames messages, calls one function per message, and does what the returned
 * enum auth_action says.
 *
 * Three machines, one per job:
 *
 *   auth_observer   passthrough (the default): the server authenticates; pgwarden relays
 *                   the exchange byte for byte, checks every SCRAM message both ways,
 *                   records the method and outcome in struct session_auth, enforces
 *                   auth.server_methods before any secret byte leaves the client, and
 *                   applies the lockout.
 *   auth_terminate  terminate mode, client leg: pgwarden is the server. SCRAM-SHA-256(-PLUS)
 *                   against auth.users_file, a client certificate mapped by auth.cert_map,
 *                   or both (auth.require_cert_and_password). Unknown and locked users get a
 *                   mock exchange that fails exactly like a wrong password.
 *   auth_upstream   terminate mode, server leg: pgwarden is the client, with the ClientKey
 *                   recovered from the client's proof (the server must hold the same
 *                   verifier) or the user's password from auth.upstream_passwords, and it
 *                   verifies the server's signature.
 *
 * Buffers. Every step takes the message the core framed (struct proto_msg, whole body)
 * and an output buffer the core owns, out[0..cap) with cap >= AUTH_OUT_MAX, and sets
 * *out_len (0 when there is nothing to send). Nothing is kept pointing into either after
 * the call returns. The machines hold at most a few KiB each (SCRAM state); the core holds
 * one only while the session authenticates and calls *_end() right after, which cleanses
 * every key.
 *
 * Context. An auth_ctx is an immutable, reference-counted snapshot of the auth.* settings
 * with the files they name loaded (verifiers and passwords in secret memory). The runtime
 * (one per daemon) holds the current snapshot and the lockout table; a reload builds a new
 * snapshot and swaps it in, and sessions keep the snapshot they started with.
 *
 * Errors sent to the client are FATAL ErrorResponses with PostgreSQL's SQLSTATE and
 * wording: 28P01 "password authentication failed for user "x"" (wrong password, unknown
 * user, locked user or source: all identical), 28000 for certificate failures and for a
 * method pgwarden does not allow, 08P01 for protocol violations (SCRAM messages that do
 * not parse), 08006 when pgwarden cannot log in upstream for a reason of its own.
 */
#ifndef PGWARDEN_AUTH_H
#define PGWARDEN_AUTH_H

#include "auth/auth_types.h"
#include "auth/lockout.h"
#include "auth/scram.h"
#include "proto/proto.h"
#include "session/session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct userlist;
struct certmap;

/* Output buffer size that every step's output fits in (SASL messages are at most
 * SCRAM_MESSAGE_MAX bytes, errors are short; a server's ErrorResponse that is longer is
 * replaced by pgwarden's own). */
#define AUTH_OUT_MAX 1024

/* What the core does after a step. */
enum auth_action {
	AUTH_FORWARD = 0,  /* observer: forward the message unchanged */
	AUTH_TO_CLIENT,    /* send out to the client; wait for the client's next message */
	AUTH_TO_SERVER,    /* send out to the server; wait for the server's next message */
	AUTH_WAIT_SERVER,  /* send nothing; wait for the server's next message */
	AUTH_DONE,         /* this leg's login succeeded (see each machine for out) */
	AUTH_REFUSE,       /* send out (a FATAL ErrorResponse) to the client; close both legs */
	AUTH_ACTION_COUNT,
};
const char *auth_action_to_str(enum auth_action a);

/* ---- context ---------------------------------------------------------------------------- */

struct auth_ctx {
	int refcount; /* atomic */
	enum auth_mode mode;
	uint32_t server_methods; /* AUTH_METHOD_* bits */
	struct userlist *users;              /* auth.users_file, NULL when unset */
	struct userlist *upstream_passwords; /* auth.upstream_passwords, NULL when unset */
	struct certmap *certmap;             /* auth.cert_map, NULL when unset */
	char cert_map_name[64];
	bool require_cert_and_password;
	const uint8_t *mock_secret; /* 32 bytes in secret memory, owned by the runtime */
	uint32_t mock_iterations;
	size_t mock_salt_len;
	struct lockout *lockout; /* the runtime's; never NULL in a runtime's snapshot */
};

void auth_ctx_ref(struct auth_ctx *c);
void auth_ctx_unref(struct auth_ctx *c);

struct auth_runtime;

/* Build the runtime from cfg (loads every auth file). 0, or -1 with a one-line message. */
int auth_runtime_new(const struct config *cfg, struct auth_runtime **out, char *err,
		     size_t errlen) __attribute__((warn_unused_result));
/* A reload: a new snapshot from cfg, or, on any error, the old one stays (-1, message). */
int auth_runtime_reload(struct auth_runtime *rt, const struct config *cfg, char *err,
			size_t errlen) __attribute__((warn_unused_result));
/* The current snapshot, referenced (auth_ctx_unref when the session ends). Any thread. */
struct auth_ctx *auth_runtime_acquire(struct auth_runtime *rt);
struct lockout *auth_runtime_lockout(struct auth_runtime *rt);
void auth_runtime_free(struct auth_runtime *rt);

/* --check-config: load what cfg names without keeping it. 0 or -1 with a message. */
int auth_check_config(const struct config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* "scram-sha-256, md5" for a method set, into buf; returns buf. */
const char *auth_methods_format(uint32_t methods, char *buf, size_t n);

/* The lockout key for a session's source: its IP address ("192.0.2.7", "2001:db8::1",
 * v4-mapped addresses as IPv4), or "local" (with ":uid=N" when the kernel named the
 * process) for a Unix-socket client. buf has AUTH_SOURCE_MAX bytes; returns buf. */
#define AUTH_SOURCE_MAX 64
const char *auth_source_key(const struct session *s, char *buf, size_t n);

/* ---- passthrough: the observer ------------------------------------------------------------ */

enum auth_observer_state {
	AUTH_OBS_START = 0,      /* no request from the server yet */
	AUTH_OBS_PASSWORD,       /* the server asked for a password (cleartext or md5) */
	AUTH_OBS_SASL,           /* AuthenticationSASL seen; the client chooses */
	AUTH_OBS_SASL_FIRST,     /* the client's SASLInitialResponse seen */
	AUTH_OBS_SASL_CONTINUE,  /* the server's server-first seen */
	AUTH_OBS_SASL_FINAL,     /* the client's client-final seen */
	AUTH_OBS_SASL_DONE,      /* the server's server-final seen */
	AUTH_OBS_GSS,            /* GSSAPI/SSPI tokens pass as they are */
	AUTH_OBS_DONE,           /* AuthenticationOk seen */
	AUTH_OBS_FAILED,         /* refused, or the server refused the login */
	AUTH_OBS_STATE_COUNT,
};

struct auth_observer {
	enum auth_observer_state state;
	const struct auth_ctx *ctx;
	struct session *s;
	bool locked;
	int lock_result; /* LOCKOUT_* bits: what this login's failure locked (the core audits it) */
	bool plus_offered;
	bool plus_chosen;
	uint8_t requested; /* the AUTH_METHOD_* bit the server asked for */
	char source[AUTH_SOURCE_MAX];
	size_t gs2_len;
	char gs2[SCRAM_MESSAGE_MAX];
	size_t nonce_len; /* the client's, then the whole nonce */
	char nonce[2 * SCRAM_NONCE_MAX + 1];
};

/*
 * Start observing s's login (s->user set from the StartupMessage; s->client and
 * s->process for the lockout source). ctx must outlive the observer.
 */
void auth_observer_begin(struct auth_observer *o, const struct auth_ctx *ctx, struct session *s,
			 uint64_t now_ms);

/*
 * A whole server message during authentication (any type; only 'R' and 'E' matter).
 * AUTH_FORWARD: forward it. AUTH_DONE: forward it (it is AuthenticationOk): the login
 * succeeded and s->auth is set (method, ok, verified_user); send the AUTH notice.
 * AUTH_REFUSE: do not forward it; send out to the client and close both legs. Refused:
 * a method auth.server_methods does not allow (nothing has been sent to the server yet
 * by the client for it), a SCRAM server message that does not parse or does not continue
 * the exchange (bad nonce, iteration count out of bounds, bad salt), AuthenticationOk
 * before the SCRAM exchange finished, a request out of order, and the server accepting a
 * login the lockout forbids (the client then sees the same 28P01 a wrong password gives).
 * A server ErrorResponse 28P01 (or 28000 once a credential was exchanged) is counted as a
 * failed login, then forwarded.
 */
enum auth_action auth_observer_server(struct auth_observer *o, const struct proto_msg *m,
				      uint8_t *out, size_t cap, size_t *out_len, uint64_t now_ms);

/*
 * A whole client message during authentication. Only 'p' is inspected: it must answer an
 * outstanding request (else 08P01), a SASLInitialResponse must choose a mechanism the
 * server offered and auth.server_methods allows, and SCRAM messages must parse and agree
 * (gs2 flag against the mechanism, c= against the gs2 header, nonce). AUTH_FORWARD or
 * AUTH_REFUSE.
 */
enum auth_action auth_observer_client(struct auth_observer *o, const struct proto_msg *m,
				      uint8_t *out, size_t cap, size_t *out_len);

/* Nothing to release (no secret is kept), but the nonce is cleared. */
void auth_observer_end(struct auth_observer *o);

/* ---- terminate mode: the client leg ---------------------------------------------------- */

enum auth_terminate_state {
	AUTH_TERM_START = 0,
	AUTH_TERM_SASL_SENT,     /* AuthenticationSASL sent; waiting for SASLInitialResponse */
	AUTH_TERM_CONTINUE_SENT, /* server-first sent; waiting for client-final */
	AUTH_TERM_DONE,
	AUTH_TERM_FAILED,
	AUTH_TERM_STATE_COUNT,
};

struct auth_terminate {
	enum auth_terminate_state state;
	const struct auth_ctx *ctx;
	struct session *s;
	bool locked;
	int lock_result; /* LOCKOUT_* bits: what this login's failure locked (the core audits it) */
	bool cert_ok;
	const struct scram_verifier *verifier; /* in ctx->users; NULL: mock */
	char source[AUTH_SOURCE_MAX];
	struct scram_server scram;
};

/*
 * Start authenticating s (StartupMessage seen; TLS finished if the leg is TLS, so
 * session_client_tls(s)->peer_identity is known). cbind_data: tls-server-end-point data of the
 * certificate the client leg presented (the TLS layer's), NULL when plain or unknown
 * (then -PLUS is not offered).
 *   AUTH_TO_CLIENT  out = AuthenticationSASL; feed the client's answer to
 *                   auth_terminate_client().
 *   AUTH_DONE       certificate login, nothing to send (out_len 0); s->auth is set.
 *   AUTH_REFUSE     out = the error (no certificate where one is required, ...).
 */
enum auth_action auth_terminate_begin(struct auth_terminate *t, const struct auth_ctx *ctx,
				      struct session *s, const uint8_t *cbind_data,
				      size_t cbind_len, uint64_t now_ms, uint8_t *out, size_t cap,
				      size_t *out_len);

/*
 * A whole client message ('p' expected).
 *   AUTH_TO_CLIENT  out = AuthenticationSASLContinue (server-first).
 *   AUTH_DONE       out = AuthenticationSASLFinal (server-final); send it, then log in
 *                   upstream (auth_upstream_*) and send AuthenticationOk only when that
 *                   succeeded. s->auth is set.
 *   AUTH_REFUSE     out = the error (28P01 for any failed proof; 08P01 / 0A000 / 28000
 *                   for protocol violations).
 */
enum auth_action auth_terminate_client(struct auth_terminate *t, const struct proto_msg *m,
				       uint64_t now_ms, uint8_t *out, size_t cap, size_t *out_len);

/* After AUTH_DONE: the client's ClientKey (SCRAM logins) and the verifier it matches, for
 * auth_upstream_begin(). NULL for a certificate-only login. */
const uint8_t *auth_terminate_client_key(const struct auth_terminate *t);
const struct scram_verifier *auth_terminate_verifier(const struct auth_terminate *t);

void auth_terminate_end(struct auth_terminate *t);

/* ---- terminate mode: the server leg ----------------------------------------------------- */

enum auth_upstream_state {
	AUTH_UP_START = 0,
	AUTH_UP_PASSWORD_SENT,
	AUTH_UP_SASL_FIRST_SENT,
	AUTH_UP_SASL_FINAL_SENT,
	AUTH_UP_SASL_VERIFIED,
	AUTH_UP_DONE,
	AUTH_UP_FAILED,
	AUTH_UP_STATE_COUNT,
};

struct auth_upstream {
	enum auth_upstream_state state;
	const struct auth_ctx *ctx;
	struct session *s;
	const char *password; /* in ctx->upstream_passwords */
	bool have_client_key;
	uint8_t client_key[SCRAM_KEY_LEN];
	const struct scram_verifier *verifier;
	bool tls;
	size_t cbind_len;
	uint8_t cbind_data[SCRAM_CBIND_DATA_MAX];
	struct scram_client scram;
};

/*
 * Prepare to log in upstream as s->user, after the client leg succeeded. t is the client
 * leg (its ClientKey is copied; t may be ended right after), NULL when there is none.
 * tls: the upstream leg is TLS; cbind_data: tls-server-end-point data of the server's
 * certificate (NULL when unknown). The credential: the user's password in
 * auth.upstream_passwords if there is one, else the ClientKey.
 */
void auth_upstream_begin(struct auth_upstream *u, const struct auth_ctx *ctx, struct session *s,
			 const struct auth_terminate *t, bool tls, const uint8_t *cbind_data,
			 size_t cbind_len);

/*
 * A whole server message (after the StartupMessage pgwarden sent upstream).
 *   AUTH_TO_SERVER    out = PasswordMessage / SASLInitialResponse / SASLResponse.
 *   AUTH_WAIT_SERVER  nothing to send (server-final verified; a NoticeResponse).
 *   AUTH_DONE         AuthenticationOk: out = AuthenticationOk for the client; send it,
 *                     then relay the server's startup messages (ParameterStatus,
 *                     BackendKeyData, ReadyForQuery) as usual.
 *   AUTH_REFUSE       out = the error for the client: the server's own ErrorResponse,
 *                     copied, or pgwarden's (a method not allowed, no credential, a
 *                     server that fails to prove it knows the verifier).
 */
enum auth_action auth_upstream_server(struct auth_upstream *u, const struct proto_msg *m,
				      uint8_t *out, size_t cap, size_t *out_len);

void auth_upstream_end(struct auth_upstream *u);

#endif
