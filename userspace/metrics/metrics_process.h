/*
 * metrics_process: families about the pgwardend process itself, read when Prometheus
 * scrapes (nothing on the data path):
 *
 *   pgwarden_build_info{version,commit}                      gauge  1 (scripts/version.sh)
 *   process_cpu_seconds_total                                counter user + system CPU
 *   process_resident_memory_bytes, process_virtual_memory_bytes gauge
 *   process_open_fds, process_max_fds                        gauge  descriptors used, limit
 *   process_start_time_seconds                               gauge  Unix time of the start
 *   pgwarden_config_last_reload_successful                   gauge  1 or 0
 *   pgwarden_config_last_reload_success_timestamp_seconds    gauge  Unix time
 *
 * The process_* names are the ones Prometheus client libraries' process collectors use,
 * so existing dashboards and alerts (fd exhaustion, memory growth) work unchanged. The two
 * reload families follow Prometheus' own prometheus_config_last_reload_*: the start-up
 * load counts as a successful reload.
 */
#ifndef PGWARDEN_METRICS_PROCESS_H
#define PGWARDEN_METRICS_PROCESS_H

#include "metrics/metrics.h"

#include <stdbool.h>

/* Register the collector (once, at start: the start time is taken now). 0 or -errno. */
int metrics_process_register(struct metrics_registry *r) __attribute__((warn_unused_result));

/* Record a reload's outcome. Any thread. */
void metrics_process_reload_done(bool ok);

/* The collector itself, for tests. */
void metrics_process_collect(void *ctx, struct metrics_writer *w);

#endif
