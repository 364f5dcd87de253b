/*
 * tls: pgwarden's TLS policy over OpenSSL 3, for both legs of a session.
 *
 * The client leg is the client's connection to pgwarden, where pgwarden is the TLS
 * server; the server leg is pgwarden's connection to PostgreSQL, where it is the TLS
 * client. This module decides everything about TLS except moving bytes (that is
 * relay/transport_tls.c, which drives a struct tls_conn over a socket):
 *
 *   - tls_process_init(): the secure heap for private keys and, with tls.fips, OpenSSL's
 *     FIPS and base providers, before any other cryptography in the process;
 *   - struct tls_snapshot: both legs' SSL_CTXs built from one config, checked file by file
 *     with one-line errors, immutable and refcounted, so a reload swaps in a new one while
 *     live sessions keep theirs (each SSL also holds its SSL_CTX);
 *   - struct tls_store: the current snapshot, published by the main thread, acquired by
 *     workers when a session starts;
 *   - struct tls_conn: one leg's SSL with the per-connection rules (direct SSL needs ALPN
 *     "postgresql", renegotiation ends the connection, the peer certificate must name
 *     exactly one identity) and what a session records of it;
 *   - certificate facts (identity, RFC 2253 subject, SHA-256 fingerprint) and channel
 *     binding (RFC 5929 tls-server-end-point).
 *
 * Invariants of every context this module builds: TLS 1.2 or 1.3 only (at least
 * tls.min_version); TLS 1.2 only with ECDHE key exchange, RSA or ECDSA authentication and
 * an AEAD cipher; no renegotiation, no compression, no 0-RTT; session tickets only with
 * tls.session_tickets (and then only to resume with this snapshot's in-memory keys);
 * certificate chains at most TLS_VERIFY_DEPTH intermediates deep, for the right purpose
 * (clientAuth for client certificates, serverAuth for the server's); with a CRL file,
 * every certificate of a chain checked against its issuer's CRL.
 *
 * Threads: build and publish on the main thread; a published snapshot is read-only and may
 * be used by every worker at once. A tls_conn belongs to the worker that owns the session.
 */
#ifndef PGWARDEN_TLS_H
#define PGWARDEN_TLS_H

#include "config/config.h"
#include "session/session.h"

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TLS_ERR_MAX 512
/* Intermediate CAs a peer's chain may have between its certificate and a trusted CA. */
#define TLS_VERIFY_DEPTH 4
/* The ALPN protocol PostgreSQL 17 defined for its connections. */
#define TLS_ALPN_POSTGRESQL "postgresql"
/* Longest channel binding hash (SHA-512). */
#define TLS_CB_HASH_MAX 64
/* Longest certificate identity and subject this module accepts (bytes, without NUL). */
#define TLS_IDENTITY_MAX 1024
#define TLS_SUBJECT_MAX 4096

/* ---- process ------------------------------------------------------------------------ */

/*
 * Prepare OpenSSL for the process, before any other cryptography: a secure heap (locked,
 * left out of core dumps) that holds private keys; with fips, OpenSSL's FIPS provider and
 * base provider loaded and "fips=yes" made the default property of every algorithm fetch.
 * Call once, first thing after the configuration is read. 0, or -errno with one line in
 * err: -ENOENT when no FIPS provider is installed or it does not load (never a fallback to
 * the default provider).
 *
 * The secure heap holds, besides the certificates' keys, the private half of every live
 * TLS session's key share: OpenSSL keeps it until the session ends, and a handshake fails
 * ("internal error") when the heap is full. So it is sized for tls_sessions sessions at
 * once (tls_sessions_for()); it cannot grow later. A heap that cannot be had or locked
 * (RLIMIT_MEMLOCK) is not an error: warning (warnlen bytes, "" when all is well) says
 * what the process got instead.
 */
#define TLS_SECURE_BYTES_PER_SESSION 96 /* a 64-byte block, and half one more for what a
					* handshake in flight holds (an ECDSA nonce, a P-256 share) */
int tls_process_init(bool fips, uint64_t tls_sessions, char *warning, size_t warnlen, char *err,
		     size_t errlen) __attribute__((warn_unused_result));

/* TLS sessions a configuration can hold at once: one per TLS leg of each of its
 * max_connections (the client leg unless tls.client.mode is disable, the server leg unless
 * tls.server.mode is disable). */
uint64_t tls_sessions_for(const struct config *cfg);

/* TLS sessions the secure heap holds at once; UINT64_MAX when there is no secure heap
 * (keys then live in the ordinary heap, which has no such bound). */
uint64_t tls_secure_heap_sessions(void);

/* Is every algorithm fetch in this process restricted to the FIPS provider? For the
 * daemon's start line and `pgwardenctl status`. */
bool tls_fips_enabled(void);

/* ---- snapshot ----------------------------------------------------------------------- */

/* How many servers the prefer-mode 'N' table remembers (more are asked every time), and
 * for how long: a server whose TLS is switched on is used with TLS within this time. */
#define TLS_PLAIN_SERVERS 8
#define TLS_PLAIN_SERVER_RECHECK_NS (60ull * 1000000000ull)

struct tls_snapshot {
	int refcount; /* atomic */
	/* NULL when that leg's mode is disable. */
	SSL_CTX *client_ctx; /* pgwarden as TLS server, towards clients */
	SSL_CTX *server_ctx; /* pgwarden as TLS client, towards PostgreSQL */
	enum config_tls_client_mode client_mode;
	enum config_tls_verify client_verify;
	enum config_tls_server_mode server_mode;
	char *server_name; /* tls.server.server_name; NULL: the upstream address */
	/* What the client leg presents, for status and logs: RFC 2253 subject and SHA-256
	 * fingerprint of the leaf; NULL / "" when the client leg is off. */
	char *client_cert_subject;
	char client_cert_fingerprint[SESSION_FINGERPRINT_HEXLEN + 1];
	uint64_t built_wall_ns; /* when the files were read */
	/* This snapshot's number, one more than the last built in this process (never 0):
	 * what a server leg's TLS was set up under, for matching it later (relay/server_pool.h). */
	uint64_t generation;
	/* Under tls.server.mode prefer: servers that answered an SSLRequest with 'N' lately
	 * (tls_server_known_plain). Mutable, so behind its own lock; a reload builds a new
	 * snapshot, and with it an empty table. */
	pthread_mutex_t plain_lock;
	struct tls_plain_server {
		struct addr addr;
		uint64_t until_ns; /* monotonic; 0: a free entry */
	} plain[TLS_PLAIN_SERVERS];
};

/*
 * Build a snapshot from cfg (already config_validate()d): read every file, build both
 * legs' contexts, check them. 0 with *out (refcount 1), or -errno with one line in err
 * naming the key ("tls.client.key_file: /k.pem does not match tls.client.cert_file
 * /c.pem"). Never prompts for a passphrase: an encrypted key is an error.
 */
int tls_snapshot_build(const struct config *cfg, struct tls_snapshot **out, char *err,
		       size_t errlen) __attribute__((warn_unused_result));

struct tls_snapshot *tls_snapshot_ref(struct tls_snapshot *s);
void tls_snapshot_unref(struct tls_snapshot *s); /* frees at zero; NULL is fine */

/*
 * Does a connection to PostgreSQL begin with an SSLRequest under s? Not when s is NULL or
 * tls.server.mode is disable, nor over a Unix socket (PostgreSQL offers no TLS there, and
 * libpq asks for none). The relay's server leg and the mask catalog connection both ask.
 */
bool tls_server_leg_wanted(const struct tls_snapshot *s, bool unix_socket);

/*
 * Under tls.server.mode prefer, a server that answered 'N' would answer 'N' again, and
 * asking costs every session a round trip to a backend that was just forked (PgBouncer's
 * and libpq's sslmode=disable skip it). So the relay's server leg remembers the 'N' of
 * upstream for TLS_PLAIN_SERVER_RECHECK_NS and sends the StartupMessage at once meanwhile.
 * That weakens nothing prefer promised: prefer already takes an 'N' from whoever answers,
 * and require and stronger never consult or fill the table. An 'S' forgets the server.
 */
bool tls_server_known_plain(struct tls_snapshot *s, const struct addr *upstream,
			    uint64_t now_ns);
void tls_server_note_answer(struct tls_snapshot *s, const struct addr *upstream,
			    bool offers_tls, uint64_t now_ns);

/*
 * The name the server's certificate must carry, for tls_conn_params.host:
 * tls.server.server_name, else upstream as numeric text written to buf; NULL when neither
 * can be had.
 */
const char *tls_server_host(const struct tls_snapshot *s, const struct addr *upstream,
			    char *buf, size_t n);

/* ---- store -------------------------------------------------------------------------- */

/* The current snapshot. Embed it where the workers can reach it (struct relay). */
struct tls_store {
	pthread_mutex_t lock;
	struct tls_snapshot *current; /* guarded by lock; NULL until the first publish */
};

void tls_store_init(struct tls_store *st);
/* Drop the current snapshot (live sessions keep theirs). */
void tls_store_destroy(struct tls_store *st);
/* Make s current; takes over the caller's reference. */
void tls_store_publish(struct tls_store *st, struct tls_snapshot *s);
/* A reference to the current snapshot (release with tls_snapshot_unref()); NULL when
 * nothing was published. */
struct tls_snapshot *tls_store_acquire(struct tls_store *st);

/* ---- one leg's connection ----------------------------------------------------------- */

enum tls_leg {
	TLS_LEG_CLIENT = 0, /* towards a client: pgwarden accepts (TLS server) */
	TLS_LEG_SERVER,     /* towards PostgreSQL: pgwarden connects (TLS client) */
};

struct tls_conn_params {
	/* Client leg: the client opened with a TLS ClientHello (PostgreSQL 17
	 * sslnegotiation=direct) rather than an SSLRequest; it must then offer ALPN
	 * "postgresql". */
	bool direct;
	/* Server leg: the name to send as SNI and, under verify-full, to find in the
	 * certificate: the snapshot's server_name when set, else the upstream address as
	 * text. An IP address is matched against IP SANs and sends no SNI. NULL: none. */
	const char *host;
};

/* One leg's TLS state. Owned by the transport that drives it; ssl holds a reference to
 * its snapshot's context, so the connection outlives a reload. */
struct tls_conn {
	SSL *ssl;
	/* Why the handshake or a later record was refused (at most TLS_WHY_MAX bytes with its
	 * NUL), allocated with the first reason: a session that is never refused does not
	 * carry it. NULL: none. */
	char *why;
	enum tls_leg leg;
	bool direct;
	bool established;  /* the handshake finished */
	bool renegotiate;  /* the peer tried to renegotiate: the connection must end */
};

#define TLS_WHY_MAX 160

/*
 * Make c's SSL for leg from snapshot s (whose context for that leg must exist). The caller
 * then attaches a BIO and drives the handshake. 0, -ENOTCONN when s has no context for leg
 * (that leg is disable), -ENOMEM, or -EINVAL for a host OpenSSL refuses.
 */
int tls_conn_init(struct tls_conn *c, const struct tls_snapshot *s, enum tls_leg leg,
		  const struct tls_conn_params *p) __attribute__((warn_unused_result));

/* Free the SSL (after a shutdown or not) and the reason; c may be reused. */
void tls_conn_release(struct tls_conn *c);

/* Record why c is refused. The first reason is kept: it is the cause, what follows is
 * consequence. Out of memory: c->why says that instead. */
void tls_conn_refuse(struct tls_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * The handshake just finished: check what OpenSSL leaves to the caller (a direct SSL
 * client negotiated ALPN) and mark c established. 0, or -EPROTO with c->why set.
 */
int tls_conn_established(struct tls_conn *c) __attribute__((warn_unused_result));

/*
 * What the session records of an established leg: protocol version and cipher (OpenSSL's
 * static text), and, when the peer presented a certificate that verified, its subject,
 * identity and fingerprint (owned strings, freed by session_release()). out must hold no
 * strings yet. 0, or -ENOMEM (out then holds nothing owned).
 */
int tls_conn_fill_session(const struct tls_conn *c, struct session_tls *out)
	__attribute__((warn_unused_result));

/*
 * tls-server-end-point channel binding data (RFC 5929) for SCRAM-SHA-256-PLUS: on the client
 * leg, the hash of the certificate pgwarden presents; on the server leg, of the one the
 * server presented. 0 with *len bytes in out (TLS_CB_HASH_MAX), -ENOTCONN before the
 * handshake, -ENOENT without a certificate, -ENOTSUP when the certificate's signature has
 * no hash (Ed25519: RFC 5929 defines none).
 */
int tls_conn_channel_binding(const struct tls_conn *c, uint8_t *out, size_t *len)
	__attribute__((warn_unused_result));

/*
 * Can SCRAM-SHA-256-PLUS pass between client and server untouched? Only when both legs
 * are TLS, established, and pgwarden presents to the client the very certificate the
 * server presented to pgwarden: the client then binds to the hash the server binds to.
 * Otherwise the binding cannot succeed, and the relay must not offer it (docs/TLS.md).
 */
bool tls_binding_passes_through(const struct tls_conn *client_leg,
				const struct tls_conn *server_leg);

/* ---- certificates ------------------------------------------------------------------- */

/*
 * The identity a certificate names: its first DNS, email or URI subject alternative name,
 * else its common name. Refused (-EBADMSG, *why a static reason): a name holding a NUL
 * byte or a control character (in any DNS, email or URI SAN, or the CN), a subject with
 * more than one CN, a certificate with neither, two subjectAltName extensions or one that
 * does not decode, a name longer than TLS_IDENTITY_MAX. The CN is held to these rules even
 * when a SAN is the identity: whatever reads the CN must never meet two or a hidden NUL.
 * 0 with a malloc'd *out, or -ENOMEM.
 */
int tls_cert_identity(X509 *cert, char **out, const char **why)
	__attribute__((warn_unused_result));

/* The subject in RFC 2253 form (UTF-8 kept, control characters escaped), malloc'd.
 * 0, -EBADMSG when longer than TLS_SUBJECT_MAX, -ENOMEM. */
int tls_cert_subject(X509 *cert, char **out) __attribute__((warn_unused_result));

/* SHA-256 of the DER certificate, lower-case hex. 0 or -EIO. */
int tls_cert_fingerprint(X509 *cert, char hex[SESSION_FINGERPRINT_HEXLEN + 1])
	__attribute__((warn_unused_result));

/*
 * RFC 5929 tls-server-end-point hash of cert: with the hash of its signature algorithm,
 * SHA-256 when that is MD5 or SHA-1. 0 with *len bytes in out (TLS_CB_HASH_MAX),
 * -ENOTSUP when the signature uses no hash, -EIO.
 */
int tls_cert_end_point_hash(X509 *cert, uint8_t *out, size_t *len)
	__attribute__((warn_unused_result));

/* ---- ALPN --------------------------------------------------------------------------- */

/*
 * Find proto in an ALPN protocol list in wire format (each name a length byte and that
 * many bytes). 0 with *at pointing at the name inside list, -ENOENT when the well-formed
 * list lacks it, -EBADMSG when the list is malformed (empty, a zero length, a name running
 * past the end).
 */
int tls_alpn_find(const uint8_t *list, size_t len, const char *proto, const uint8_t **at)
	__attribute__((warn_unused_result));

/* ---- probing a server --------------------------------------------------------------- */

/*
 * Does the PostgreSQL server at addr offer TLS? Sends an SSLRequest and reads the one-byte
 * answer; after 'S' completes a handshake (no verification) so the server logs nothing,
 * and names the certificate it presented. Blocking, bounded by timeout_ms. mark, when not
 * 0, is set as SO_MARK first (the steering hooks let the relay's own sockets through, so a
 * probe reaches the server even while steering is attached). 0 with *offers (and, when
 * offered, the certificate's subject in subject[n], "" if the handshake failed), or
 * -errno with one line in err (-ECONNREFUSED, -ETIMEDOUT, -EPROTO for an answer that is
 * neither 'S' nor 'N').
 */
int tls_probe_server(const struct sockaddr *addr, socklen_t addrlen, uint32_t mark,
		     int timeout_ms, bool *offers, char *subject, size_t n, char *err,
		     size_t errlen) __attribute__((warn_unused_result));

#endif
