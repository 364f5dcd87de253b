/*
 * selfloop: is an accepted connection one of the relay's own upstream connections coming
 * back? A relay connected to itself forwards each StartupMessage to itself again, without
 * end (one psql once became 38,741 sessions in 4 s). config_validate() refuses every
 * spelling of an upstream that is one of the relay's listeners; this is the run-time half,
 * for what a configuration cannot show: NAT or a routing rule that sends the relay's
 * upstream back to it, an address that became local later.
 *
 * The relay registers each TCP upstream socket once its connect() has started (its local
 * endpoint is known then) and forgets it when the server answers on it or the socket
 * closes (a loop is refused at its accept, before anything can come back). At accept, a
 * connection whose peer is the local endpoint of a registered socket is that socket when
 * the accepted socket's own address is where that socket connected to (no NAT), or, when
 * it is not, when the kernel has no other socket with that 4-tuple (the connection was
 * translated on its way: it can only be ours). A client that merely shares a local port
 * with an upstream socket (the kernel reuses ports across destinations) is told apart by
 * that second look, a sock_diag query made only in that rare case.
 *
 * Thread-safe: one mutex, taken at an upstream connect, when it is forgotten, and at accept.
 */
#ifndef PGWARDEN_SELFLOOP_H
#define PGWARDEN_SELFLOOP_H

#include "base/addr.h"

#include <stdbool.h>

struct selfloop;
struct selfloop_entry;

int selfloop_new(struct selfloop **out) __attribute__((warn_unused_result));
void selfloop_free(struct selfloop *s);

/*
 * Remember the upstream TCP socket fd whose connect() to `to` has started. Returns the
 * entry to forget when the socket closes, or NULL (out of memory, not TCP/IP, no local
 * endpoint yet): that socket is then not recognised, which is never fatal.
 */
struct selfloop_entry *selfloop_add(struct selfloop *s, int fd, const struct addr *to);
void selfloop_forget(struct selfloop *s, struct selfloop_entry *e);

/* Is the connection accepted with this peer and local address one of ours? */
bool selfloop_is_own(struct selfloop *s, const struct addr *peer, const struct addr *local);

/* Registered sockets (tests). */
unsigned selfloop_count(struct selfloop *s);

#endif
