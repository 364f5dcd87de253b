/*
 * guard: what the relay checks about a client connection before it serves it, so that the
 * connection core only asks one question at accept and reports three moments of the
 * connection's life. Each check is its own module; this is their face towards conn.c.
 *
 *   at accept       self-loop (relay/selfloop.h: the relay's own upstream connection came
 *                   back), TPROXY destination (a remote client may name any address; only
 *                   protected ones are served), pre-login admission (relay/admission.h)
 *   at login        the connection stops counting as logging in (AuthenticationOk)
 *   upstream        its TCP socket is remembered for the self-loop check until the server
 *                   answers on it (AuthenticationOk) or it closes
 *   at close        whatever of the above it still holds is released
 *
 * A refusal is counted (pgwarden_connections_refused_total{reason}) and logged as
 * event=connection_refused within limits (base/log_limit.h: a flood of refusals is not a
 * flood of log); a self-loop is logged once per process, then only counted. The caller
 * sends the refusal's FATAL and closes the socket.
 *
 * Thread-safe: any worker may call any function, for its own connections.
 */
#ifndef PGWARDEN_GUARD_H
#define PGWARDEN_GUARD_H

#include "config/config.h"
#include "metrics/metrics_std.h"
#include "relay/admission.h"
#include "session/session.h"

#include <stdbool.h>

struct steer_origin;
struct selfloop_entry;

/* What a connection holds from the guard: zero-initialised with the connection. */
struct guard_slot {
	struct admission_source source;
	bool prelogin;                   /* counted as logging in */
	struct selfloop_entry *upstream; /* its TCP upstream socket, until it answers */
};

/* Why a client was refused, for the FATAL it gets. */
struct guard_refusal {
	const char *sqlstate;
	char message[160];
};

struct guard;

/* admission.max_sources comes from cfg (bound at start). 0 or -ENOMEM. */
int guard_new(const struct config *cfg, struct guard **out) __attribute__((warn_unused_result));
void guard_free(struct guard *g);

/*
 * A client accepted on fd and classified (s: route, client, dialled, process; so: the
 * worker's steering handle or NULL). 0: serve it, its slot now holds what it must give
 * back. -EPERM: refuse it with *r; the refusal is already counted in shard (may be NULL)
 * and logged.
 */
int guard_accept(struct guard *g, const struct config *cfg, struct steer_origin *so,
		 const struct session *s, struct guard_slot *slot, struct metrics_shard *shard,
		 const struct metrics_std *mstd, struct guard_refusal *r)
	__attribute__((warn_unused_result));

/* Login completed (the server's AuthenticationOk): no longer logging in. Idempotent. */
void guard_login(struct guard *g, struct guard_slot *slot);

/* The connection's TCP upstream socket fd has started its connect() to `to`. */
void guard_upstream(struct guard *g, struct guard_slot *slot, int fd, const struct addr *to);

/*
 * Stop recognising its upstream socket: the socket is about to be closed, or the server
 * has answered on it. A loop back to the relay is refused at its accept, before the looped
 * side could send a byte, so once anything came back the entry has done its work and an
 * idle session need not keep it. Idempotent.
 */
void guard_upstream_forget(struct guard *g, struct guard_slot *slot);

/* The connection is closing: release everything the slot holds. Idempotent. */
void guard_close(struct guard *g, struct guard_slot *slot);

/* Connections logging in now (status). */
uint32_t guard_prelogin(struct guard *g);

#endif
