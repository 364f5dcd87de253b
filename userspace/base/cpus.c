#include "base/cpus.h"

#include <errno.h>

int cpus_allowed(struct cpus *out)
{
	CPU_ZERO(&out->set);
	if (sched_getaffinity(0, sizeof(out->set), &out->set) < 0)
		return -errno;
	out->count = (unsigned)CPU_COUNT(&out->set);
	/* The kernel never returns an empty mask, but a zero count must not divide below. */
	return out->count ? 0 : -EINVAL;
}

int cpus_nth(const struct cpus *c, unsigned i)
{
	unsigned want = i % c->count;

	for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
		if (CPU_ISSET(cpu, &c->set) && want-- == 0)
			return cpu;
	return -1; /* not reached: count is the number of CPUs in set */
}
