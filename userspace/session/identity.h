/*
 * identity: who a client session is, in the types every stage, log line, audit record and
 * admin listing reads through struct session (session/session.h).
 *
 * Identity comes in three grades, and nothing may confuse them:
 *   - kernel-recorded (route, addresses, process): the client cannot forge these;
 *   - claimed (the StartupMessage: user, database, application_name, every parameter):
 *     what the client says, known before anyone checked it;
 *   - verified (auth.verified_user, TLS peer certificate): set only once the server
 *     (passthrough) or pgwarden itself (terminate) accepted the login.
 * A rule keyed on a role must use the claimed user only for decisions the server will
 * re-check (connection admission before login) and the verified one afterwards.
 */
#ifndef PGWARDEN_SESSION_IDENTITY_H
#define PGWARDEN_SESSION_IDENTITY_H

#include <stdbool.h>
#include <stdint.h>

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
	/* SHA-256, lower-case hex (SESSION_FINGERPRINT_HEXLEN); allocated, as the two above,
	 * only for a session that has a peer certificate. */
	char *peer_fingerprint;
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
	bool verified_copied; /* verified_user is the session's own copy, not a view */
	/* The role the login was verified for: a view into the session's user (its startup
	 * text) when they are the same, as they are for a server-verified login. */
	const char *verified_user;
};

const char *session_route_to_str(enum session_route r);
/* "scram-sha-256", "md5", "trust", ...; "pending" before the login finished. */
const char *session_auth_method_to_str(enum session_auth_method m);

#endif
