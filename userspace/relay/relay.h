/*
 * relay: the process-wide context every worker shares: the published config snapshot, the
 * inspection pipeline, the cancel-key map, the connection budget and the drain flag.
 *
 * Written by the main thread (config publication, drain), read by workers. Nothing here is
 * touched per message.
 */
#ifndef PGWARDEN_RELAY_H
#define PGWARDEN_RELAY_H

#include "config/config.h"
#include "metrics/metrics_std.h"
#include "relay/cancel.h"
#include "stage/stage.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct worker;
struct steer_origin;
struct admin_server;
struct conn;
struct guard;
struct transport;
struct auth_runtime;
struct audit_trail;
struct tls_store;

/*
 * How the relay reaches a server: non-blocking sockets (conn_upstream.c) normally; the unit
 * tests of the connection put a scripted one here.
 */
struct relay_connector {
	/* Start connecting c's server leg to unix_path when given, else to `to`. On success
	 * *out is the leg's transport (its fd is watched when >= 0). 0 or -errno. */
	int (*start)(struct conn *c, const struct addr *to, const char *unix_path,
		     struct transport **out);
	/* The leg had an event while connecting: 0 connected, -EINPROGRESS, or -errno. */
	int (*finish)(struct conn *c, struct transport *t);
};

extern const struct relay_connector relay_socket_connector;

struct relay {
	pthread_mutex_t config_lock;
	struct config *config; /* current snapshot; guarded by config_lock */
	struct stage_pipeline pipeline;
	const struct relay_connector *connector;
	struct cancel_map *cancels;
	uint32_t connections; /* atomic: client sockets open across workers, of every kind */
	uint32_t sessions;    /* atomic: of those, sessions past their StartupMessage */
	bool draining;        /* atomic */
	/* Steered and TPROXY'd sessions by the source address of their upstream connection:
	 * the client's own (the server sees the real client), or pgwarden's, and why (a static
	 * text from steer_upstream_prepare(), e.g. "loopback client"). Atomics; for status. */
	uint64_t upstream_from_client;
	uint64_t upstream_from_relay;
	const char *upstream_from_relay_why;
	struct steer_origin *steer_shared; /* fail-open: the links' fds handed over by pgwardenctl */
	struct guard *guard; /* checks at accept, login, close (relay/guard.h); set before workers */
	/* Authentication (auth/auth.h): the daemon's runtime, whose snapshot each session takes
	 * at its StartupMessage, and the audit trail lockouts and cancels are recorded in (or
	 * NULL). Set before the workers start; NULL auth: no login is checked (the unit tests
	 * of the core). */
	struct auth_runtime *auth;
	struct audit_trail *audit;
	struct tls_store *tls; /* TLS settings new sessions take (tls/tls.h); NULL: no TLS */
	/* The Unix listener (unix_listen). Unix sockets have no SO_REUSEPORT spreading, so the
	 * one socket is watched by every worker (EPOLLEXCLUSIVE) and owned here. */
	struct relay_unix_listener {
		int fd; /* -1: none */
		char *path;
		dev_t dev; /* the socket file we made, so that only it is removed at exit */
		ino_t ino;
	} unix_listener;
	struct worker **workers;
	unsigned nworkers;
	struct admin_server *admin;      /* atomic: set once the admin socket is up; events go here */
	struct metrics_registry *metrics; /* families registered before workers start */
	struct metrics_std mstd;
};

/* Zero-initialise, then call this before anything else. */
void relay_init(struct relay *r);

/* Open the Unix listener at path before the workers start. 0 or -errno (logged). */
int relay_unix_listener_open(struct relay *r, const char *path)
	__attribute__((warn_unused_result));
/* After the workers have stopped: close it and remove its socket file, if still ours. */
void relay_unix_listener_close(struct relay *r);

/* Take a reference to the current config snapshot; release with config_unref(). */
struct config *relay_config_acquire(struct relay *r);

/* Publish a new snapshot (takes over the caller's reference). */
void relay_config_publish(struct relay *r, struct config *cfg);

/*
 * Two budgets. A session (a StartupMessage was accepted) counts against max_connections.
 * Every accepted socket also counts against a slightly larger socket budget, so that
 * CancelRequests and clients still in startup are served when the sessions are all taken
 * (PostgreSQL, too, answers a cancel at its connection limit), while a flood of sockets
 * that never start stays bounded.
 */
bool relay_conn_reserve(struct relay *r, uint32_t max_connections);
void relay_conn_release(struct relay *r);
bool relay_session_reserve(struct relay *r, uint32_t max_connections);
void relay_session_release(struct relay *r);

#endif
