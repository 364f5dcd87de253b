/*
 * gate: pgwardend's admission gate reader (docs/STEERING.md, "Optional admission gate").
 *
 * `pgwardenctl attach --gate-queue N` makes the kernel queue every new connection from the
 * network to a protected port (its SYN) on NFQUEUE N. This module reads that queue for the
 * daemon with the steering library's gate (steer_gate_*: the decisions, a token bucket per
 * source and a deny list), and binds it to the daemon's configuration:
 *
 *   - gate_open() binds the queue of gate.queue with the limits of the starting config;
 *   - gate_dispatch() first takes the limits (gate.rate, gate.burst, gate.deny) of the
 *     snapshot it is given when that is not the one it applied last, so a reload holds for
 *     the next SYN, then gives every queued SYN its verdict;
 *   - refusals are logged as a summary, never per SYN: at most one line per
 *     GATE_LOG_INTERVAL_NS with the counts since the previous line and the latest refused
 *     source (gate_log_due()), so a flood of refused SYNs is not also a log flood.
 *
 * Threads: the main thread owns the gate and calls everything here, except gate_stats() and
 * gate_status_json(), which the admin and metrics threads may call at any time.
 */
#ifndef PGWARDEN_GATE_H
#define PGWARDEN_GATE_H

#include "base/clock.h"
#include "config/config.h"
#include "steer/steer_gate.h"

#include <jansson.h>
#include <stdint.h>

#define GATE_LOG_INTERVAL_NS (10 * NSEC_PER_SEC)

struct gate;

/*
 * Bind NFQUEUE cfg->gate_queue (cfg->gate_enabled must be true) and decide with cfg's limits.
 * 0, or -errno with one line for the operator in err (-EPERM without CAP_NET_ADMIN, and
 * also when another process reads that queue).
 */
int gate_open(struct config *cfg, struct gate **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* A seamless restart: unbind the queue so that the successor can bind it (the kernel drops
 * SYNs meanwhile, or lets them through with a fail-open attach; clients retry). The
 * counters stay. gate_reopen() binds it again when the successor failed: 0 or -errno. */
void gate_release(struct gate *g);
int gate_reopen(struct gate *g, struct config *cfg, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The queue's fd, for poll (POLLIN; -1 while released). */
int gate_fd(const struct gate *g);

/*
 * Follow cfg (the current snapshot: its rate, burst and deny list from now on; the gate
 * keeps a reference), then give verdicts to what is queued. 0, or -errno when the queue's
 * socket failed: the gate cannot read any more, and the kernel drops what it would queue.
 */
int gate_dispatch(struct gate *g, struct config *cfg) __attribute__((warn_unused_result));

/* Log the refusal summary if one is pending and due at now_ns. Returns how long until the
 * next one is due in milliseconds (a poll timeout), or -1 when nothing is pending. */
int gate_log_due(struct gate *g, uint64_t now_ns);

/* The counters (any thread). */
void gate_stats(const struct gate *g, struct steer_gate_stats *out);
/* The library gate, for a metrics collector (any thread may read its counters). */
const struct steer_gate *gate_steer(const struct gate *g);

/* The gate as the admin status shows it (any thread): queue and max_sources as bound at
 * start, rate, burst and deny of cfg (the snapshot the next SYN is decided with), and the
 * counters. NULL on ENOMEM. */
json_t *gate_status_json(const struct gate *g, const struct config *cfg);

/* Log what is still unlogged, unbind the queue, free. NULL is fine. */
void gate_close(struct gate *g);

#endif
