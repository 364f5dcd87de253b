/*
 * metrics_steer: a metrics collector for the kernel steering state of one instance: the
 * per-CPU counters the BPF programs keep (summed), whether the hooks are attached, and how
 * many leftovers a crash left behind. Read at scrape time from the pinned maps through
 * steer_status_json(), so the data path pays nothing.
 *
 *   pgwarden_steer_attached              gauge   1 while the instance's hooks are attached
 *   pgwarden_steer_events_total{event=}  counter steered_ipv4, steered_ipv6, skipped_relay_mark,
 *                                                refused_no_relay, ... (docs/STEERING.md)
 *   pgwarden_steer_leftovers             gauge   stale pins, tables, rules awaiting cleanup
 *
 * and, when pgwardend reads the admission gate's queue, a second collector for the gate's
 * counters (metrics_steer_gate_register()).
 */
#ifndef PGWARDEN_METRICS_STEER_H
#define PGWARDEN_METRICS_STEER_H

#include "metrics/metrics.h"

/* Register the collector for instance (NULL: $PGWARDEN_INSTANCE, else "pgwarden"; the
 * string must outlive the registry). 0 or -errno from metrics_collector_add(). */
int metrics_steer_register(struct metrics_registry *r, const char *instance)
	__attribute__((warn_unused_result));

/* The collector itself (ctx: the instance name or NULL), for tests. */
void metrics_steer_collect(void *ctx, struct metrics_writer *w);

struct steer_gate;

/*
 * The admission gate's counters (pgwardend reads the queue; docs/STEERING.md), read at
 * scrape time from the gate, which must outlive the registry's scrapes:
 *
 *   pgwarden_gate_syns_total{verdict=}   counter accepted, denied_list, denied_rate
 *   pgwarden_gate_queue_overruns_total   counter times the queue overran (SYNs lost
 *                                                undecided, so dropped)
 *
 * 0 or -errno from metrics_collector_add().
 */
int metrics_steer_gate_register(struct metrics_registry *r, const struct steer_gate *g)
	__attribute__((warn_unused_result));

#endif
