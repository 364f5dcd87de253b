/*
 * cpus: the CPUs this process may run on, for sizing and placing the worker threads.
 *
 * The set is the process's affinity mask, not the machine's online CPUs: a cpuset, taskset
 * or systemd's CPUAffinity= narrows it, and the relay then neither starts more workers than
 * it may use nor pins one where it may not run.
 */
#ifndef PGWARDEN_BASE_CPUS_H
#define PGWARDEN_BASE_CPUS_H

#include <sched.h>

struct cpus {
	cpu_set_t set;
	unsigned count; /* CPUs in set, at least 1 */
};

/* The calling thread's affinity mask. 0 or -errno. */
int cpus_allowed(struct cpus *out) __attribute__((warn_unused_result));

/* The CPU for the i-th worker: the allowed CPUs taken in turn, so workers beyond the count
 * share CPUs round robin. */
int cpus_nth(const struct cpus *c, unsigned i);

#endif
