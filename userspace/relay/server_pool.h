/*
 * server_pool: PostgreSQL server connections kept between client sessions, per worker
 * (server_reuse.*; auth.mode terminate only).
 *
 * When pgwarden authenticated the client itself and logged in upstream on its behalf, the
 * server's session is pgwarden's, not the client's. A client that says Terminate with the
 * session clean (idle, no transaction, nothing owed either way) leaves the server
 * connection behind: pgwarden sends it DISCARD ALL, which ends everything a session can
 * leave on a backend (prepared statements, portals, temporary tables, settings and roles,
 * session authorization, advisory locks, LISTENs, cached plans, sequences' state), and keeps
 * it once the server answered that with ReadyForQuery 'I'. The next client whose
 * StartupMessage is byte-identical (the same user, database, options and protocol version)
 * to the same upstream authenticates to pgwarden exactly as before, and then gets the kept
 * backend instead of a new one: pgwarden replays the login's end (AuthenticationOk, the
 * server's ParameterStatus as it last reported each, its BackendKeyData, ReadyForQuery) to
 * the connection core as if the server had just sent it, so the core, the stages and the
 * cancel map read it as they read any login.
 *
 * Which sessions may leave a server behind is the connection's decision (conn_reuse.c);
 * this module owns what is kept: the leg (a socket, or TLS over one), a bounded reader for
 * the reset's answer and for what an idle server may say (a ParameterStatus, a notice, its
 * FATAL when it goes), and the idle and lifetime clocks. One worker's thread touches its
 * pool.
 */
#ifndef PGWARDEN_SERVER_POOL_H
#define PGWARDEN_SERVER_POOL_H

#include "loop/loop.h"
#include "proto/proto.h"
#include "relay/transport.h"

#include <stdbool.h>
#include <stdint.h>

/* What the server reported with ParameterStatus over a session is at most this (PostgreSQL
 * reports about 15 parameters, a few hundred bytes): a server that says more is not kept. */
#define SERVER_KEEP_PARAMS_MAX 8192u

/*
 * What makes a server connection fit a client, and what its login told: allocated when a
 * session that may leave its server behind starts its server leg, owned by the connection,
 * then by the pool while the server is kept, then by the next connection.
 */
struct server_keep {
	uint64_t born_ns;   /* monotonic: when the server connection was made */
	/* The TLS settings the leg's TLS was set up under (tls_snapshot.generation); 0: the
	 * leg is plaintext. Set when the server is kept. */
	uint64_t tls_generation;
	uint8_t *params;    /* ParameterStatus messages, whole, the last report of each name */
	uint32_t params_len;
	uint32_t ident_len;
	uint8_t ident[];    /* the upstream as text, NUL, then the client's StartupMessage */
};

/* 0, -ENOMEM, -E2BIG (a StartupMessage over PROTO_STARTUP_MAX_LEN). */
int server_keep_new(struct server_keep **out, const char *upstream, const uint8_t *startup,
		    uint32_t startup_len, uint64_t now_ns) __attribute__((warn_unused_result));
/* Record the server's report of name (replacing its last). 0, -ENOMEM, -E2BIG (over
 * SERVER_KEEP_PARAMS_MAX: then the server is not to be kept). */
int server_keep_param(struct server_keep *k, const char *name, const char *value)
	__attribute__((warn_unused_result));
void server_keep_free(struct server_keep *k);

/* The server_reuse.* settings a pool applies. */
struct server_pool_limits {
	uint32_t max_idle;     /* kept servers per worker; 0: none kept */
	uint64_t idle_ms;      /* a kept server unused this long is closed */
	uint64_t lifetime_ms;  /* a server connection older than this is not kept again */
};

struct server_link;

/* What a pool did, for `pgwardenctl status`: counters since start, and servers held now. */
struct server_pool_stats {
	uint64_t kept;   /* servers a client left behind that were kept (reset begun) */
	uint64_t reused; /* sessions that got a kept server instead of a new one */
	uint64_t closed; /* kept servers closed (idle, lifetime, the server's end, shutdown) */
	uint64_t held;   /* kept now, resetting or idle */
};

struct server_pool {
	struct loop *loop;
	struct server_link *links; /* resetting and idle, the newest first */
	/* Taken or closed, freed at the end of the loop's iteration: an event the loop fetched
	 * for one in the same wait must still find it (and ignore it). */
	struct server_link *gone;
	struct loop_deferred reap;
	/* Written by the worker, read by the admin thread: atomic. */
	uint32_t nlinks;
	uint64_t kept, reused, closed;
};

void server_pool_init(struct server_pool *p, struct loop *loop);
/* Any thread: add p's figures to *sum. */
void server_pool_stats_add(const struct server_pool *p, struct server_pool_stats *sum);
/* Close every kept server (Terminate, then the socket): the worker drains or ends. */
void server_pool_close_all(struct server_pool *p);
/* The worker's loop has stopped: close every kept server and free what the pool holds. */
void server_pool_destroy(struct server_pool *p);

/*
 * Keep a server connection whose client left cleanly. t: its transport, registered with
 * p's loop under the caller's watch, which the pool moves to its own (loop_move): a socket
 * transport is copied into the pool's own storage (the caller's is then free), any other
 * (TLS) is taken over as it is. keep: its identity and parameters, with
 * tls_generation set. Both are owned by the pool from here on, whatever the result. pid and
 * key: its BackendKeyData. Sends DISCARD ALL at once. 0 when kept; -ENOSPC (the pool is
 * full), -ETIME (older than the lifetime), -ENOMEM, or a send failure: then the server got
 * Terminate and the connection is closed.
 */
int server_pool_park(struct server_pool *p, const struct server_pool_limits *lim,
		     struct transport *t, struct server_keep *keep, uint32_t pid,
		     const uint8_t *key, uint32_t key_len, uint64_t now_ns);

/* Which kept servers a session may take: a TLS leg set up under the settings of
 * tls_generation (0: none), and a plaintext leg when plain_ok. */
struct server_pool_accept {
	uint64_t tls_generation;
	bool plain_ok;
};

/*
 * A kept, reset server for want's identity (want->ident) that acc allows, or NULL. On
 * success the server leaves the pool: *leg is its transport (still registered with p's loop
 * under the pool's watch, for the caller to move to its own with loop_move(); a socket
 * transport is copied into *storage and *leg points there), *keep its keep (the
 * caller owns it and frees want), and login[0..*login_len) the bytes of the login's end to
 * replay (at most cap; a server whose replay does not fit is not taken).
 */
bool server_pool_take(struct server_pool *p, const struct server_pool_limits *lim,
		      const struct server_keep *want, const struct server_pool_accept *acc,
		      uint64_t now_ns, struct transport *storage, struct transport **leg,
		      struct server_keep **keep, uint8_t *login, uint32_t cap, uint32_t *login_len)
	__attribute__((warn_unused_result));

/* The bytes of the login's end a kept server's replay takes, for a keep of params_len. */
#define SERVER_POOL_LOGIN_MAX (SERVER_KEEP_PARAMS_MAX + 64u + PROTO_CANCEL_KEY_MAX)

#endif
