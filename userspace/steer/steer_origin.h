/*
 * steer_origin: the relay's side of steering (pgwardend's workers). For each accepted
 * connection: the route it took (explicit, steered, TPROXY), the address the client dialled
 * and, for steered connections, the process that dialled it, as the BPF hooks recorded it;
 * for each upstream socket: the relay mark and, where it can, the client's own source
 * address; the relay's transparent and Unix listeners.
 *
 * Invariants: a lookup is one BPF map lookup and one delete (no locks of ours); a handle is
 * one worker's (see steer_origin_open()). A connection on the attach's steering address
 * without a kernel record is refused by the caller (steer_origin_unrecorded()), never
 * served as explicit. Errors: 0 or -errno.
 */
#ifndef PGWARDEN_STEER_ORIGIN_H
#define PGWARDEN_STEER_ORIGIN_H

#include "base/addr.h"
#include "session/session.h"

#include <stdbool.h>
#include <stdint.h>

struct steer_handle; /* steer/steer.h: a fail-open attach held by this process */

struct steer_origin;

/*
 * A lookup handle for a fail-closed (pinned) attach of instance (NULL: $PGWARDEN_INSTANCE,
 * else "pgwarden"). Open one per worker: a handle is not thread-safe. The handle finds the
 * pinned maps by itself when they appear (attach after the daemon started) or are replaced
 * (detach, attach), checking at every lookup while not attached (so the first steered
 * connection after an attach finds its record) and at most every second on a lookup miss. Returns 0, or -ENOENT when not attached *yet* (*out is still a valid handle:
 * keep it), or another -errno (then *out is NULL).
 */
int steer_origin_open(const char *instance, struct steer_origin **out)
	__attribute__((warn_unused_result));
/* The same over a fail-open handle this process owns. Handles over fds (this one and
 * steer_origin_adopt()'s) never refresh: they may be shared by all workers. */
int steer_origin_from_handle(struct steer_handle *h, struct steer_origin **out)
	__attribute__((warn_unused_result));
/*
 * Fail-open hand-over, daemon side: fds is $PGWARDEN_STEER_FDS as set by
 * `pgwardenctl attach --fail-open ... -- pgwardend ...`. Marks the inherited link fds
 * close-on-exec (the daemon's children must not keep steering alive), keeps them open for
 * the life of the process, and opens the origin maps through them. -ENOENT when fds is
 * NULL/empty, -EBADF when an fd is not a BPF link.
 */
int steer_origin_adopt(const char *fds, struct steer_origin **out)
	__attribute__((warn_unused_result));
void steer_origin_close(struct steer_origin *o);

/* The relay mark the attach configured, or STEER_DEFAULT_RELAY_MARK (steer.h) before any attach was
 * seen (for steer_upstream_prepare()). */
uint32_t steer_origin_relay_mark(const struct steer_origin *o);

/*
 * Classify an accepted connection and fill s->route, s->client, s->dialled and, for
 * steered connections, s->process. listen is the address of the listener that accepted
 * it, peer and local what accept() and getsockname() returned (local differs from listen
 * only for TPROXY). o may be NULL (not attached: explicit or TPROXY only).
 *   SESSION_ROUTE_STEERED  the hooks' record, found by 4-tuple and removed
 *   SESSION_ROUTE_TPROXY   local is not the listener's address: it is the dialled one
 *   SESSION_ROUTE_EXPLICIT anything else; dialled = local (the address it connected to)
 * Returns 0, or -ENOMEM when a steered connection's process could not be recorded. A
 * missing record leaves the route EXPLICIT: the caller must then ask
 * steer_origin_unrecorded() and refuse what arrived on the steering address.
 */
int steer_origin_lookup(struct steer_origin *o, int fd, const struct addr *listen,
			const struct addr *peer, const struct addr *local, struct session *s)
	__attribute__((warn_unused_result));

/*
 * Did this connection arrive on the attach's steering address (--relay) without an origin
 * record? s as steer_origin_lookup() left it. That address takes steered connections only
 * (the hooks record each one before its SYN leaves; sk_lookup drops a SYN without a
 * record), so such a connection is one the kernel could not record (origin map full,
 * kernel without sk_lookup) or one dialled straight at the steering address: the relay
 * refuses it, never serves it as explicit. False when o is NULL or not attached.
 */
bool steer_origin_unrecorded(struct steer_origin *o, const struct session *s);

/*
 * May the relay connect to where a TPROXY'd client was going? TPROXY diverts by port
 * alone, so a remote client can name any address at all; the relay goes on only to a
 * protected one: an address of this host (addr_is_local()), or one the attach names
 * explicitly (--address). o may be NULL (no maps: local addresses only).
 */
bool steer_origin_destination_allowed(struct steer_origin *o, const struct addr *dialled);

/*
 * A connection accepted on the relay's Unix listener (connect_unix steering): s->process
 * from SO_PEERCRED (pid, uid, gid: kernel-filled) plus comm and cgroup from /proc (best
 * effort); route STEERED when the attach steers Unix sockets, else EXPLICIT. s->client and
 * s->dialled are left alone (struct addr holds IP addresses only). 0, or -ENOMEM: the
 * process is not recorded.
 */
int steer_origin_lookup_unix(struct steer_origin *o, int fd, struct session *s)
	__attribute__((warn_unused_result));

/*
 * Prepare an unconnected upstream socket before connect(): set SO_MARK = mark (so neither
 * the BPF hooks nor the nft rules capture it), and, when transparent_source is true and
 * the session's client address can be used as the source (a TPROXY'd remote client),
 * IP_TRANSPARENT + bind to the client's address so the server sees the real client.
 * Returns 0 when the real client address is used, 1 when not (why gets a static reason:
 * "loopback client", "explicit route", "disabled"), -errno when a setsockopt failed.
 */
int steer_upstream_prepare(int fd, const struct session *s, uint32_t mark,
			   bool transparent_source, const char **why)
	__attribute__((warn_unused_result));

/* A non-blocking listening TCP socket with IP_TRANSPARENT (and SO_REUSEADDR, SO_REUSEPORT
 * when reuseport) bound to a, for TPROXY. fd or -errno. */
int steer_listen_transparent(const struct addr *a, int backlog, bool reuseport)
	__attribute__((warn_unused_result));

/* A non-blocking listening Unix socket at path, mode 0666 so every local client can reach
 * it, for connect_unix steering. A socket file left by an earlier run is replaced; one that
 * something still accepts on is -EADDRINUSE, another kind of file -EEXIST. fd or -errno. */
int steer_listen_unix(const char *path, int backlog) __attribute__((warn_unused_result));

/*
 * Connect a Unix upstream socket (marked by steer_upstream_prepare() first) to PostgreSQL's
 * socket at path. With as_client, and the client's credentials known (SO_PEERCRED), connect()
 * runs with the client's uid and gid as this thread's effective ids, so that the server's
 * peer authentication sees the client, as it would without pgwarden, and with pgwardend's
 * own file-system ids, so that the path is looked up as pgwardend: the server's socket sits
 * in a directory only root and the server's user may search (docs/STEERING.md), which the
 * client itself cannot enter. The thread's own ids are back before this returns. A Unix
 * connect completes at once or fails: a full listen
 * backlog is -EAGAIN, as a direct client is told. Returns 0 when connected as the client,
 * 1 when connected as pgwardend (why gets a static reason), -errno when connect() failed.
 */
int steer_upstream_connect_unix(int fd, const char *path, const struct session *s,
				bool as_client, const char **why) __attribute__((warn_unused_result));

#endif
