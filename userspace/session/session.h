/*
 * session: who one client session is and what it has done, as every inspection stage, log
 * line, audit record and admin listing sees it.
 *
 * Who the session is (the identity types and their three grades) is session/identity.h.
 *
 * Written only by the connection's worker thread. Strings are owned by the session and
 * immutable once set (the server parameters are replaced whole, never edited); counters
 * may be read by other threads without locks (64-bit aligned loads are atomic on the
 * architectures pgwarden supports; a slightly stale value is fine for a listing).
 */
#ifndef PGWARDEN_SESSION_H
#define PGWARDEN_SESSION_H

#include "base/addr.h"
#include "session/identity.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSION_ID_LEN 16
#define SESSION_ID_HEXLEN (SESSION_ID_LEN * 2)
/* "unix:" and a sun_path, or an address: what session_upstream_text() writes. */
#define SESSION_UPSTREAM_STRLEN (sizeof("unix:") + 108)

/* The client's StartupMessage, every parameter, in the order sent (duplicates included,
 * as PostgreSQL reads them: the last one wins). */
struct session_startup {
	uint32_t protocol;
	unsigned nparams;
	char **names;  /* nparams entries; one allocation holds names, values and text */
	char **values;
};

struct session {
	char id_hex[SESSION_ID_HEXLEN + 1]; /* SESSION_ID_LEN random bytes, only ever shown */
	enum session_route route;
	struct addr client;     /* the peer of the accepted socket */
	struct addr dialled;    /* the address the client connected to */
	struct addr upstream;   /* where pgwarden forwards, unless upstream_unix is set */
	/* PostgreSQL's Unix socket for a client of the relay's Unix listener: the connection's
	 * config snapshot owns the text (unix_upstream), and outlives the session. */
	const char *upstream_unix;
	/* The local process behind a steered or Unix-socket client, allocated when known:
	 * NULL for a TCP client of the listener, most sessions. Read it with
	 * session_process(). */
	struct session_process *process;
	uint64_t start_wall_ns;
	uint64_t start_mono_ns;
	/* Claimed, from the StartupMessage (NULL until it arrives). */
	struct session_startup startup;
	const char *user;             /* views into startup: the values the server will use */
	const char *database;         /* user when absent or empty, as the server does */
	const char *application_name; /* NULL when absent */
	uint32_t protocol;            /* as negotiated (the server may lower the minor) */
	bool replication;
	/* From the server (the small fields together, so that they leave no holes). */
	uint8_t tx_status; /* 'I', 'T', 'E'; 0 before the first ReadyForQuery */
	uint32_t backend_pid;
	/* The server's ParameterStatus reports that pgwarden reads, latest value per name: one
	 * block of pairs, a byte that stands for the name then "value\0", replaced whole when
	 * a value changes (rare). */
	uint32_t server_params_len;
	char *server_params;
	/* TLS on each leg, allocated when the first leg's handshake finished: NULL in a
	 * plaintext session, which so carries no 80 bytes of empty fields. Read it with
	 * session_client_tls() and session_server_tls(). */
	struct session_tls_legs *tls;
	struct session_auth auth; /* how the login was verified */
	/* Counters. */
	uint64_t bytes_from_client;
	uint64_t bytes_from_server;
	uint64_t statements; /* Query and Execute messages forwarded */
	uint64_t denied;     /* client messages a stage rejected */
	/* Why the session ended (session_end_reason()), allocated when it ends: a live
	 * session does not carry the text. Set once by the worker (release), read by the
	 * admin thread (acquire). NULL: not ended, or no memory for the text. */
	char *end_reason;
};

struct session_tls_legs {
	struct session_tls client;
	struct session_tls server;
};

/* A plain leg: every field NULL. */
extern const struct session_tls session_tls_plain;

/* A leg's TLS as the handshake left it; session_tls_plain until it finished. Published by
 * the worker with release, so the admin thread may read it too. */
static inline const struct session_tls *session_client_tls(const struct session *s)
{
	const struct session_tls_legs *legs = __atomic_load_n(&s->tls, __ATOMIC_ACQUIRE);

	return legs ? &legs->client : &session_tls_plain;
}

static inline const struct session_tls *session_server_tls(const struct session *s)
{
	const struct session_tls_legs *legs = __atomic_load_n(&s->tls, __ATOMIC_ACQUIRE);

	return legs ? &legs->server : &session_tls_plain;
}

/* The leg to fill when its handshake finished (server: the upstream leg), its fields NULL
 * until then; allocates both legs with the first. NULL: -ENOMEM. */
struct session_tls *session_tls_leg(struct session *s, bool server);

/* A process not known: known false, every field 0. */
extern const struct session_process session_process_unknown;

/* The client's process, or session_process_unknown. Set before the session starts. */
static inline const struct session_process *session_process(const struct session *s)
{
	return s->process ? s->process : &session_process_unknown;
}

/* The client's process is p (copied; p->known true). 0 or -ENOMEM (nothing changed). */
int session_set_process(struct session *s, const struct session_process *p)
	__attribute__((warn_unused_result));

/* The client's process is not known (any record of it is released). */
void session_forget_process(struct session *s);

/* Fill id_hex from the CSPRNG. 0 or -EIO. */
int session_new_id(struct session *s) __attribute__((warn_unused_result));

/*
 * Keep the client's StartupMessage parameters (proto_startup_parse()'s view of a packet the
 * caller may then release) and point user, database and application_name into the copy.
 * 0 or -ENOMEM (nothing changed).
 */
struct proto_startup;
int session_set_startup(struct session *s, const struct proto_startup *st)
	__attribute__((warn_unused_result));

/* The value of a startup parameter as the server reads it (the last one sent), or NULL. */
const char *session_startup_param(const struct session *s, const char *name);

/* Record a ParameterStatus report, if it is one pgwarden reads (client_encoding, DateStyle,
 * standard_conforming_strings; the others only pass to the client and to the stages'
 * SERVER_PARAM notices). 0 or -ENOMEM (the old value stays). */
int session_set_server_param(struct session *s, const char *name, const char *value)
	__attribute__((warn_unused_result));

/* The server's last report for name, or NULL. */
const char *session_server_param(const struct session *s, const char *name);

/* The login succeeded for user: sets auth.ok and auth.verified_user. 0 or -ENOMEM. */
int session_set_verified(struct session *s, enum session_auth_method method, bool at_relay,
			 const char *user) __attribute__((warn_unused_result));

/* The user a rule may rely on: verified once the login succeeded, else NULL. */
static inline const char *session_verified_user(const struct session *s)
{
	return s->auth.ok ? s->auth.verified_user : NULL;
}

/* Release owned strings; the struct itself belongs to the caller. */
void session_release(struct session *s);

#define SESSION_END_REASON_MAX 64 /* bytes of end_reason, with its NUL */

/* Set end_reason (the first reason is the one kept: what follows is consequence). */
void session_end_reason(struct session *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Where the session goes, as logs and listings show it: "unix:/path" or "host:port";
 * "" when not known. buf has SESSION_UPSTREAM_STRLEN bytes; returns buf. */
const char *session_upstream_text(const struct session *s, char *buf, size_t n);

#endif
