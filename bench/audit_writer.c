/*
 * audit_writer: how many records per second the audit writer sustains, per fsync mode,
 * and how long a statement waits for its record (the write-ahead cost a session pays).
 *
 *   audit_writer [--dir DIR] [--seconds S] [--mode always|batch|write|none|all]
 *                [--clients N[,N...]] [--window-us US] [--text BYTES]
 *
 * Closed loop, like pgbench: each client thread is a session that submits one statement
 * record through its gate, waits to be woken (the core's stage_wake), and submits the
 * next. A second run, open loop, has one thread queue records nobody waits for as fast as
 * it can: the writer's ceiling. Records are realistic in size: a statement record with a
 * session id, identity fields and TEXT bytes of normalised SQL.
 *
 * Output: one line per (mode, clients): records/s, fdatasync calls/s, records per sync,
 * and the wait a statement sees (mean, p50, p99, max), in microseconds. The trail is
 * verified at the end of each run (a benchmark that wrote a broken trail measured
 * nothing).
 */
#include "audit/audit_sign.h"
#include "audit/audit_trail.h"
#include "audit/audit_verify.h"
#include "base/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CLIENTS 256
#define MAX_SAMPLES (1u << 20)

struct client {
	pthread_t thread;
	struct audit_trail *trail;
	int efd;
	uint64_t done;
	uint64_t *samples; /* wait per statement, ns */
	size_t nsamples;
};

static volatile int stop;
static size_t text_len = 120;

static void wake(void *arg)
{
	uint64_t one = 1;

	if (write(((struct client *)arg)->efd, &one, sizeof(one)) != sizeof(one))
		abort();
}

static struct audit_rec *statement(uint64_t i)
{
	struct audit_rec *r = audit_rec_new(AUDIT_EV_STATEMENT, clock_wall_ns());
	char text[4096];
	size_t n = text_len < sizeof(text) - 1 ? text_len : sizeof(text) - 1;

	memset(text, 'a', n);
	memcpy(text, "SELECT abalance FROM pgbench_accounts WHERE aid = $1", n < 52 ? n : 52);
	text[n] = '\0';
	audit_rec_str(r, "session", "0123456789abcdef0123456789abcdef");
	audit_rec_u64(r, "request", i);
	audit_rec_str(r, "protocol", "simple");
	audit_rec_str(r, "user", "bench");
	audit_rec_str(r, "database", "bench");
	audit_rec_str(r, "application_name", "pgbench");
	audit_rec_str(r, "text", text);
	audit_rec_str(r, "class", "read");
	return r;
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	struct audit_gate *g = audit_gate_new(c->trail, wake, c);

	for (uint64_t i = 0; !stop; i++) {
		struct audit_rec *rec = statement(i);
		uint64_t t0 = clock_mono_ns(), v;
		int rc;

		while ((rc = audit_gate_submit(g, &rec, 1)) == -EAGAIN) {
			struct pollfd p = {.fd = c->efd, .events = POLLIN};

			poll(&p, 1, 1000);
			(void)!read(c->efd, &v, sizeof(v));
		}
		if (rc)
			abort();
		while ((rc = audit_gate_poll(g)) == 0) {
			struct pollfd p = {.fd = c->efd, .events = POLLIN};

			poll(&p, 1, 1000);
			(void)!read(c->efd, &v, sizeof(v));
		}
		if (rc != 1)
			abort();
		if (c->nsamples < MAX_SAMPLES)
			c->samples[c->nsamples++] = clock_mono_ns() - t0;
		c->done++;
	}
	audit_gate_release(g);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static struct audit_trail *open_trail(const char *dir, enum config_audit_fsync mode,
				      uint64_t window_ns)
{
	char path[512], key[512], err[512];
	struct audit_trail_config c = {
		.path = path,
		.signing_key = key,
		.fsync = mode,
		.batch_window_ns = window_ns,
		.queue_size = 16u << 20,
		.checkpoint_records = 1000,
		.checkpoint_interval_ns = 60 * NSEC_PER_SEC,
		.version = "bench",
	};
	struct audit_trail *t;

	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	snprintf(key, sizeof(key), "%s/bench.key", dir);
	unlink(path);
	if (access(key, F_OK) && audit_keygen(key, err, sizeof(err))) {
		fprintf(stderr, "audit_writer: %s\n", err);
		exit(2);
	}
	if (audit_trail_open(&c, &t, err, sizeof(err))) {
		fprintf(stderr, "audit_writer: %s\n", err);
		exit(2);
	}
	return t;
}

/* The trail a run wrote must verify, or the run measured nothing. */
static void verify(const char *dir)
{
	char path[512], pub[512], err[512];
	struct audit_verify_file f;
	struct audit_verify_result res;
	EVP_PKEY *key;
	struct audit_verify_opts o = {.keys = &key, .nkeys = 1};
	struct stat st;
	int fd;

	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	snprintf(pub, sizeof(pub), "%s/bench.key.pub", dir);
	if (audit_key_load_public(pub, &key, err, sizeof(err))) {
		fprintf(stderr, "audit_writer: %s\n", err);
		exit(2);
	}
	fd = open(path, O_RDONLY);
	if (fd < 0 || fstat(fd, &st))
		exit(2);
	f.name = path;
	f.len = (size_t)st.st_size;
	f.data = mmap(NULL, f.len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (f.data == MAP_FAILED)
		exit(2);
	audit_verify(&f, 1, &o, &res);
	munmap((void *)f.data, f.len);
	close(fd);
	EVP_PKEY_free(key);
	if (res.verdict != AUDIT_VERIFY_INTACT) {
		fprintf(stderr, "audit_writer: the trail does not verify: %s\n", res.message);
		exit(1);
	}
}

static const char *mode_name(enum config_audit_fsync m)
{
	static const char *const names[] = {"always", "batch", "none", "write"};

	return names[m];
}

static void run_closed(const char *dir, enum config_audit_fsync mode, unsigned nclients,
		       double seconds, uint64_t window_ns)
{
	static struct client clients[MAX_CLIENTS];
	struct audit_trail_stats before, after;
	struct audit_trail *t = open_trail(dir, mode, window_ns);
	uint64_t total = 0, t0, t1, *all, nall = 0, sum = 0;

	audit_trail_stats(t, &before);
	stop = 0;
	for (unsigned i = 0; i < nclients; i++) {
		clients[i] = (struct client){.trail = t, .efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)};
		clients[i].samples = malloc(MAX_SAMPLES * sizeof(uint64_t));
		if (!clients[i].samples || clients[i].efd < 0)
			exit(2);
	}
	t0 = clock_mono_ns();
	for (unsigned i = 0; i < nclients; i++)
		pthread_create(&clients[i].thread, NULL, client_main, &clients[i]);
	usleep((useconds_t)(seconds * 1e6));
	stop = 1;
	for (unsigned i = 0; i < nclients; i++)
		pthread_join(clients[i].thread, NULL);
	t1 = clock_mono_ns();
	audit_trail_stats(t, &after);
	all = malloc(nclients * (size_t)MAX_SAMPLES * sizeof(uint64_t));
	for (unsigned i = 0; i < nclients; i++) {
		total += clients[i].done;
		memcpy(all + nall, clients[i].samples, clients[i].nsamples * sizeof(uint64_t));
		nall += clients[i].nsamples;
		free(clients[i].samples);
		close(clients[i].efd);
	}
	for (uint64_t i = 0; i < nall; i++)
		sum += all[i];
	qsort(all, nall, sizeof(uint64_t), cmp_u64);
	{
		double secs = (double)(t1 - t0) / 1e9;
		uint64_t syncs = after.syncs - before.syncs;

		printf("closed  %-6s clients=%-3u window=%-5llu  %9.0f rec/s  %8.0f syncs/s  %6.1f "
		       "rec/sync  wait us: mean %7.1f p50 %7.1f p99 %8.1f max %8.1f\n",
		       mode_name(mode), nclients, (unsigned long long)(window_ns / 1000),
		       (double)total / secs, (double)syncs / secs,
		       syncs ? (double)(after.records - before.records) / (double)syncs : 0.0,
		       nall ? (double)sum / (double)nall / 1e3 : 0.0,
		       nall ? (double)all[nall / 2] / 1e3 : 0.0,
		       nall ? (double)all[nall * 99 / 100] / 1e3 : 0.0,
		       nall ? (double)all[nall - 1] / 1e3 : 0.0);
		fflush(stdout);
	}
	free(all);
	audit_trail_close(t, "bench");
	verify(dir);
}

/* The writer's ceiling: records nobody waits for, queued as fast as one thread can. */
static void run_open(const char *dir, enum config_audit_fsync mode, double seconds)
{
	struct audit_trail_stats st;
	struct audit_trail *t = open_trail(dir, mode, 0);
	uint64_t t0 = clock_mono_ns(), queued = 0, written, t1;

	while (clock_mono_ns() - t0 < (uint64_t)(seconds * 1e9)) {
		audit_trail_stats(t, &st);
		/* Keep the queue fed but bounded (as gated statements would). */
		if (st.queued_bytes > (8u << 20)) {
			usleep(100);
			continue;
		}
		for (int i = 0; i < 64; i++)
			audit_trail_submit(t, statement(queued++));
	}
	audit_trail_stats(t, &st);
	written = st.records;
	t1 = clock_mono_ns();
	printf("open    %-6s                        %9.0f rec/s written (%llu queued)\n",
	       mode_name(mode), (double)written / ((double)(t1 - t0) / 1e9),
	       (unsigned long long)queued);
	fflush(stdout);
	audit_trail_close(t, "bench");
	verify(dir);
}

int main(int argc, char **argv)
{
	static const enum config_audit_fsync modes[] = {
		CONFIG_AUDIT_FSYNC_ALWAYS, CONFIG_AUDIT_FSYNC_BATCH, CONFIG_AUDIT_FSYNC_WRITE,
		CONFIG_AUDIT_FSYNC_NONE};
	const char *dir = NULL, *mode = "all", *clients = "1,8,64";
	char tmp[] = "/var/tmp/pgw-audit-bench-XXXXXX";
	double seconds = 5;
	uint64_t window_ns = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--dir") && i + 1 < argc)
			dir = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = atof(argv[++i]);
		else if (!strcmp(argv[i], "--mode") && i + 1 < argc)
			mode = argv[++i];
		else if (!strcmp(argv[i], "--clients") && i + 1 < argc)
			clients = argv[++i];
		else if (!strcmp(argv[i], "--window-us") && i + 1 < argc)
			window_ns = strtoull(argv[++i], NULL, 10) * 1000;
		else if (!strcmp(argv[i], "--text") && i + 1 < argc)
			text_len = strtoul(argv[++i], NULL, 10);
		else {
			fprintf(stderr, "usage: audit_writer [--dir DIR] [--seconds S] [--mode "
					"always|batch|write|none|all] [--clients N[,N...]] [--window-us US] "
					"[--text BYTES]\n");
			return 2;
		}
	}
	if (!dir) {
		dir = mkdtemp(tmp);
		if (!dir)
			return 2;
	}
	printf("# audit writer, trail in %s, %.0f s per run, statement text %zu bytes\n", dir,
	       seconds, text_len);
	for (size_t m = 0; m < 4; m++) {
		char list[256], *save = NULL;

		if (strcmp(mode, "all") && strcmp(mode, mode_name(modes[m])))
			continue;
		snprintf(list, sizeof(list), "%s", clients);
		for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			unsigned n = (unsigned)atoi(tok);

			if (n == 0 || n > MAX_CLIENTS)
				return 2;
			run_closed(dir, modes[m], n, seconds, window_ns);
		}
		run_open(dir, modes[m], seconds);
	}
	if (dir == tmp) {
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
		if (system(cmd))
			return 1;
	}
	return 0;
}
