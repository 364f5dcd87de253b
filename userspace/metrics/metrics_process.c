/* metrics_process: the process's own families (see metrics_process.h). */
#include "metrics/metrics_process.h"

#include "base/clock.h"
#include "base/version.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <unistd.h>

static uint64_t start_wall_ns;
static int last_reload_ok = 1;              /* atomic */
static uint64_t last_reload_success_ns;     /* atomic */

void metrics_process_reload_done(bool ok)
{
	__atomic_store_n(&last_reload_ok, ok ? 1 : 0, __ATOMIC_RELAXED);
	if (ok)
		__atomic_store_n(&last_reload_success_ns, clock_wall_ns(), __ATOMIC_RELAXED);
}

/* Descriptors open now (/proc/self/fd, minus the directory's own). -1 when unknown. */
static long open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;
}

/* Resident and virtual size in bytes (/proc/self/statm counts pages). */
static bool memory(double *rss, double *vsz)
{
	FILE *f = fopen("/proc/self/statm", "re");
	unsigned long long size, resident;
	long page = sysconf(_SC_PAGESIZE);
	bool ok;

	if (!f)
		return false;
	ok = fscanf(f, "%llu %llu", &size, &resident) == 2;
	fclose(f);
	*vsz = (double)size * (double)page;
	*rss = (double)resident * (double)page;
	return ok;
}

void metrics_process_collect(void *ctx, struct metrics_writer *w)
{
	static const char *const build_labels[] = {"version", "commit"};
	const char *const build_values[] = {pgwarden_version, pgwarden_commit};
	struct rusage ru;
	struct rlimit rl;
	double rss, vsz;
	long fds = open_fds();

	metrics_writer_family(w, "pgwarden_build_info", METRICS_GAUGE,
			      "Always 1; the labels say which build is running.");
	metrics_writer_sample_labels(w, build_labels, build_values, 2, 1);
	if (getrusage(RUSAGE_SELF, &ru) == 0) {
		metrics_writer_family(w, "process_cpu_seconds_total", METRICS_COUNTER,
				      "User and system CPU time spent, in seconds.");
		metrics_writer_sample(w, NULL, NULL,
				      (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
					      ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6);
	}
	if (memory(&rss, &vsz)) {
		metrics_writer_family(w, "process_resident_memory_bytes", METRICS_GAUGE,
				      "Resident memory size in bytes.");
		metrics_writer_sample(w, NULL, NULL, rss);
		metrics_writer_family(w, "process_virtual_memory_bytes", METRICS_GAUGE,
				      "Virtual memory size in bytes.");
		metrics_writer_sample(w, NULL, NULL, vsz);
	}
	if (fds >= 0) {
		metrics_writer_family(w, "process_open_fds", METRICS_GAUGE,
				      "Open file descriptors (two per session, plus listeners).");
		metrics_writer_sample(w, NULL, NULL, (double)fds);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		metrics_writer_family(w, "process_max_fds", METRICS_GAUGE,
				      "The open-file limit (RLIMIT_NOFILE, soft).");
		metrics_writer_sample(w, NULL, NULL, (double)rl.rlim_cur);
	}
	metrics_writer_family(w, "process_start_time_seconds", METRICS_GAUGE,
			      "Start time of the process, in seconds since the Unix epoch.");
	metrics_writer_sample(w, NULL, NULL, (double)start_wall_ns / 1e9);
	metrics_writer_family(w, "pgwarden_config_last_reload_successful", METRICS_GAUGE,
			      "1 when the last configuration reload (or the start-up load) "
			      "succeeded, 0 when it was refused and the previous one kept.");
	metrics_writer_sample(w, NULL, NULL, __atomic_load_n(&last_reload_ok, __ATOMIC_RELAXED));
	metrics_writer_family(w, "pgwarden_config_last_reload_success_timestamp_seconds",
			      METRICS_GAUGE,
			      "When the configuration was last loaded successfully, in seconds "
			      "since the Unix epoch.");
	metrics_writer_sample(w, NULL, NULL,
			      (double)__atomic_load_n(&last_reload_success_ns, __ATOMIC_RELAXED) /
				      1e9);
}

int metrics_process_register(struct metrics_registry *r)
{
	start_wall_ns = clock_wall_ns();
	__atomic_store_n(&last_reload_success_ns, start_wall_ns, __ATOMIC_RELAXED);
	return metrics_collector_add(r, metrics_process_collect, NULL);
}
