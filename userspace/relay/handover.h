/*
 * handover: restart pgwardend without dropping a session or refusing a connection.
 *
 * The running daemon (the predecessor) starts the new one (the successor) itself, as its
 * child, from the binary now on disk and with its own command line, and hands it its
 * listening sockets over a private channel (a SOCK_SEQPACKET socketpair; the descriptors
 * travel as SCM_RIGHTS). They are the same sockets, not new ones bound to the same
 * address: the kernel queue of each keeps every connection it holds, nothing is ever
 * closed under a waiting client, and whatever points at them (steering to the relay's
 * address, an sk_lookup socket map holding them) keeps pointing at a live listener. Both
 * daemons accept from them for the moment the successor takes to start; once it says
 * READY, the predecessor stops accepting and drains its own sessions (restart_drain), and
 * tells systemd the successor is the main process now.
 *
 *   predecessor                                   successor (child, $PGWARDEN_HANDOVER_FD)
 *   releases the metrics socket and the gate
 *   fork + exec ──────────────────────────────▶   reads its config
 *   SOCKETS (entries + SCM_RIGHTS) ... END  ───▶  checks every socket against its entry,
 *                                                 adopts them (handover_take_*), starts
 *                                           ◀───  READY
 *   MAINPID=successor, stops accepting, drains
 *                                           ◀───  CANCEL / KILL for sessions it does not
 *   (matched here, or passed on to its own        know: they may be the predecessor's
 *    predecessor)
 *   exits when its sessions have ended      ───▶  EOF: "predecessor exited"
 *
 * The successor trusts nothing it receives: the channel must come from its parent (same
 * uid, SO_PEERCRED), every descriptor must be a listening stream socket bound exactly where
 * its entry says, and it fails to start rather than adopt anything else. Whatever fails
 * before READY leaves the predecessor as it was (it takes back its metrics socket and
 * gate). The predecessor's cancel keys stay valid: a CancelRequest the successor cannot
 * match is forwarded to the predecessor, which holds the real key.
 *
 * Process-wide state, like the process it describes: one predecessor channel, one
 * successor channel at most. handover_take_*() and the READY run on the main thread before
 * and during start-up; handover_forward_*() may be called from any thread.
 */
#ifndef PGWARDEN_HANDOVER_H
#define PGWARDEN_HANDOVER_H

#include "admin/admin.h"
#include "base/addr.h"
#include "relay/cancel.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#define HANDOVER_ENV "PGWARDEN_HANDOVER_FD"

enum handover_kind {
	HANDOVER_LISTEN = 1, /* a worker's listen socket (SO_REUSEPORT, one per worker) */
	HANDOVER_TPROXY,     /* a worker's IP_TRANSPARENT tproxy_listen socket */
	HANDOVER_UNIX,       /* the relay's Unix listener (one, shared by the workers) */
	HANDOVER_METRICS,    /* the metrics endpoint's socket */
};

/* ---- the successor ------------------------------------------------------------------ */

/*
 * When $PGWARDEN_HANDOVER_FD names a channel from the parent, receive its sockets (and
 * unset the variable). 0, also when there is no handover; -errno with a message in err
 * (start-up must fail: the predecessor carries on).
 */
int handover_receive(char *err, size_t errlen) __attribute__((warn_unused_result));
bool handover_is_successor(void);
pid_t handover_predecessor_pid(void);

/* The predecessor's listener for (a, transparent) of worker index, which the caller then
 * owns; -ENOENT when it handed over none. */
int handover_take_listener(const struct addr *a, bool transparent, unsigned index);
/* Did the predecessor hand over any listener for (a, transparent)? (Then the address is in
 * use by design, not by a stranger.) */
bool handover_has_listener(const struct addr *a, bool transparent);
/* The most listeners handed over for one address: the successor runs at least that many
 * workers, so that it takes every one (a socket left behind would take its queued
 * connections with it). */
unsigned handover_listeners_per_address(void);
/* The Unix listener bound at path, or the metrics socket: fd (the caller's), -ENOENT. */
int handover_take_unix(const char *path);
int handover_take_metrics(void);

/* Everything is up: tell the predecessor, and close the sockets nobody took. 0 or
 * -errno. */
int handover_send_ready(void) __attribute__((warn_unused_result));

/* A CancelRequest nobody here holds the key for, or a kill for a session not here: pass it
 * to the predecessor, whose session it may be. Any thread, never blocks. true when sent. */
bool handover_forward_cancel(uint32_t pid, const uint8_t *key, uint32_t key_len);
bool handover_forward_kill(const char *session, enum admin_kill_mode mode);

/* ---- the predecessor ---------------------------------------------------------------- */

struct handover_socket {
	enum handover_kind kind;
	uint16_t index;              /* the worker, for LISTEN and TPROXY */
	int fd;                      /* lent: handover_start() does not close it */
	struct addr addr;            /* LISTEN, TPROXY, METRICS */
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* UNIX */
};

struct handover_plan {
	const char *exe;            /* the binary to run (pgwardend as it is on disk now) */
	char *const *argv;          /* its arguments: the running daemon's own */
	const struct handover_socket *sockets;
	unsigned nsockets;
	const char *keep_fds;       /* "3,4,5": descriptors the successor inherits as they are
				     * (fail-open steering links, $PGWARDEN_STEER_FDS); NULL */
	uint64_t timeout_ms;        /* for the successor to say READY */
};

/*
 * Start the successor, hand it the sockets, wait for its READY. 0 with its pid in *child,
 * or -errno with a message in err: the successor was stopped (or never ran) and nothing
 * here changed. Blocks the calling thread for up to plan->timeout_ms.
 */
int handover_start(const struct handover_plan *plan, pid_t *child, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* ---- both --------------------------------------------------------------------------- */

/* The channels the main loop watches for readability; -1 when there is none. */
int handover_predecessor_fd(void);
int handover_successor_fd(void);

/* What a predecessor does with a kill its successor passed on: its own admin kill. */
typedef int (*handover_kill_fn)(void *ctx, const char *session, enum admin_kill_mode mode);

/*
 * Read what arrived on fd (one of the two channels). From the successor: CancelRequests,
 * matched in m and sent to their server (mark: the relay's SO_MARK; blocking for at most
 * timeout_ms) or passed on to our own predecessor; kills, run with kill_fn or passed on.
 * From the predecessor: only its end (EOF), after which nothing is forwarded any more.
 */
void handover_channel_event(int fd, struct cancel_map *m, uint32_t mark, uint64_t timeout_ms,
			    handover_kill_fn kill_fn, void *ctx);

/* Close both channels and free what handover_receive() kept (exit). */
void handover_close(void);

#endif
