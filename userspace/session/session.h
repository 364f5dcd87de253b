/*
 * session: who one client session is and what it has done, as every inspection stage, log
 * line, audit record and admin listing sees it.
 *
 * Identity comes in three grades, and nothing may confuse them:
 *   - kernel-recorded (route, addresses, process): the client cannot forge these;
 *   - claimed (the StartupMessage: user, database, application_name, every parameter):
 *     what the client says, known before anyone checked it;
 *   - verified (auth.verified_user, TLS peer certificate): set only once the server
 *     (passthrough) or pgwarden itself (terminate) accepted the login.
 * A rule keyed on a role must use the claimed user only for decisions the server will
 * re-check (connection admission before login) and the verified one afterwards.
 *
 * Written only by the connection's worker thread. Strings are owned by the session and
 * immutable once set (the server parameters are replaced whole, never edited); counters
 * may be read by other threads without locks (64-bit aligned loads are atomic on the
 * architectures pgwarden supports; a slightly stale value is fine for a listing).
 */
#ifndef PGWARDEN_SESSION_H
#define PGWARDEN_SESSION_H

#include "base/addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSION_ID_LEN 16
#define SESSION_ID_HEXLEN (SESSION_ID_LEN * 2)
/* "unix:" and a sun_path, or an address: what session_upstream_text() writes. */
#define SESSION_UPSTREAM_STRLEN (sizeof("unix:") + 108)
#define SESSION_FINGERPRINT_HEXLEN 64 /* SHA-256 */

/* The local process that opened a steered connection, as the kernel recorded it. */
struct session_process {
	bool known;
	uint32_t pid;
	uint32_t tgid;
	uint32_t uid;
	uint32_t gid;
	uint64_t cgroup_id;
	char comm[16];
};

enum session_route {
	SESSION_ROUTE_EXPLICIT = 0, /* client dialled pgwarden's listen address */
	SESSION_ROUTE_STEERED,      /* local client redirected by the cgroup hooks */
	SESSION_ROUTE_TPROXY,       /* remote client redirected by nftables TPROXY */
};

/* One leg's TLS, once its handshake finished; version == NULL while the leg is plain. */
struct session_tls {
	const char *version; /* OpenSSL's static text, e.g. "TLSv1.3" */
	const char *cipher;  /* OpenSSL's static text */
	/* The peer's certificate, when it presented one that verified. */
	char *peer_subject;  /* RFC 2253 one-line form */
	char *peer_identity; /* first DNS, email or URI SAN, else the single CN */
	char peer_fingerprint[SESSION_FINGERPRINT_HEXLEN + 1]; /* SHA-256, lower-case hex */
};

enum session_auth_method {
	SESSION_AUTH_PENDING = 0, /* not finished yet */
	SESSION_AUTH_TRUST,       /* the server asked for nothing */
	SESSION_AUTH_PASSWORD,    /* cleartext password */
	SESSION_AUTH_MD5,
	SESSION_AUTH_SCRAM,       /* SCRAM-SHA-256 */
	SESSION_AUTH_SCRAM_PLUS,  /* SCRAM-SHA-256-PLUS (channel binding) */
	SESSION_AUTH_CERT,        /* a client certificate alone (terminate mode) */
	SESSION_AUTH_CERT_SCRAM,  /* certificate and SCRAM together (terminate, two factors) */
	SESSION_AUTH_GSS,
	SESSION_AUTH_SSPI,
	SESSION_AUTH_METHOD_COUNT,
};

struct session_auth {
	enum session_auth_method method;
	bool at_relay; /* pgwarden authenticated the client (terminate); else the server did */
	bool ok;       /* the login succeeded; verified_user is set from here on */
	char *verified_user; /* the role the login was verified for */
};

/* The client's StartupMessage, every parameter, in the order sent (duplicates included,
 * as PostgreSQL reads them: the last one wins). */
struct session_startup {
	uint32_t protocol;
	unsigned nparams;
	char **names;  /* nparams entries; one allocation holds names, values and text */
	char **values;
};

struct session {
	uint8_t id[SESSION_ID_LEN];
	char id_hex[SESSION_ID_HEXLEN + 1];
	enum session_route route;
	struct addr client;     /* the peer of the accepted socket */
	struct addr dialled;    /* the address the client connected to */
	struct addr upstream;   /* where pgwarden forwards, unless upstream_unix is set */
	/* PostgreSQL's Unix socket for a client of the relay's Unix listener: the connection's
	 * config snapshot owns the text (unix_upstream), and outlives the session. */
	const char *upstream_unix;
	struct session_process process;
	uint64_t start_wall_ns;
	uint64_t start_mono_ns;
	/* Claimed, from the StartupMessage (NULL until it arrives). */
	struct session_startup startup;
	const char *user;             /* views into startup: the values the server will use */
	const char *database;         /* user when absent or empty, as the server does */
	const char *application_name; /* NULL when absent */
	uint32_t protocol;            /* as negotiated (the server may lower the minor) */
	bool replication;
	/* TLS on each leg, and how the login was verified. */
	struct session_tls client_tls;
	struct session_tls server_tls;
	struct session_auth auth;
	/* From the server. */
	uint32_t backend_pid;
	uint8_t tx_status; /* 'I', 'T', 'E'; 0 before the first ReadyForQuery */
	/* The server's ParameterStatus reports, latest value per name: one block of
	 * "name\0value\0" pairs, replaced whole when a value changes (rare). */
	char *server_params;
	uint32_t server_params_len;
	/* Counters. */
	uint64_t bytes_from_client;
	uint64_t bytes_from_server;
	uint64_t statements; /* Query and Execute messages forwarded */
	uint64_t denied;     /* client messages a stage rejected */
	char end_reason[64]; /* why the session ended, set once */
};

/* Fill id and id_hex from the CSPRNG. 0 or -EIO. */
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

/* Record a ParameterStatus report. 0 or -ENOMEM (the old value stays). */
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

const char *session_route_to_str(enum session_route r);
/* "scram-sha-256", "md5", "trust", ...; "pending" before the login finished. */
const char *session_auth_method_to_str(enum session_auth_method m);

/* Where the session goes, as logs and listings show it: "unix:/path" or "host:port";
 * "" when not known. buf has SESSION_UPSTREAM_STRLEN bytes; returns buf. */
const char *session_upstream_text(const struct session *s, char *buf, size_t n);

#endif
