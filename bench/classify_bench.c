/*
 * classify_bench: SQL classification throughput on one core over a corpus (PostgreSQL's
 * regression SQL: `make bench-classify` fetches it), as the policy stage spends it.
 *
 *   classify_bench FILE...
 *
 * Loads every file, splits each into statements once (pgwarden's splitter), then times
 * three passes over all statements, each repeated until it has run for at least a second:
 *   split    sql_split over the whole files (what a Query costs before judging);
 *   classify sql_classify per statement (what the statements_total metric costs);
 *   analyze  sql_analyze per statement (classes, relations, functions, columns, flags:
 *            what the policy stage runs for every statement it judges).
 * Prints statements per second per core and bytes per second for each, single-threaded
 * (pin it with taskset for a stable number).
 */
#include "sql/sql.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct piece {
	const char *sql;
	size_t len;
};

static struct sql_analysis analysis;

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct piece *pieces = NULL;
	char **files = calloc((size_t)argc, sizeof(char *));
	size_t *lens = calloc((size_t)argc, sizeof(size_t));
	size_t n = 0, cap = 0, bytes = 0, total = 0;
	volatile unsigned sink = 0;

	if (argc < 2 || !files || !lens) {
		fprintf(stderr, "usage: classify_bench FILE...\n");
		return 2;
	}
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		long len;

		if (!f || fseek(f, 0, SEEK_END) || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
			fprintf(stderr, "classify_bench: %s: cannot read\n", argv[i]);
			return 2;
		}
		files[i] = malloc((size_t)len + 1);
		if (!files[i] || fread(files[i], 1, (size_t)len, f) != (size_t)len)
			return 2;
		fclose(f);
		lens[i] = (size_t)len;
		total += (size_t)len;

		struct sql_splitter sp;
		struct sql_stmt st;

		sql_split_init(&sp, files[i], lens[i], 0);
		while (sql_split_next(&sp, &st)) {
			if (n == cap) {
				cap = cap ? 2 * cap : 4096;
				pieces = realloc(pieces, cap * sizeof(*pieces));
				if (!pieces)
					return 2;
			}
			pieces[n].sql = files[i] + st.off;
			pieces[n].len = st.len;
			bytes += st.len;
			n++;
		}
	}
	printf("corpus: %d files, %zu bytes, %zu statements\n", argc - 1, total, n);

	/* split */
	double t0 = now(), t;
	unsigned long rounds = 0;

	do {
		for (int i = 1; i < argc; i++) {
			struct sql_splitter sp;
			struct sql_stmt st;

			sql_split_init(&sp, files[i], lens[i], 0);
			while (sql_split_next(&sp, &st))
				sink += (unsigned)st.len;
		}
		rounds++;
	} while ((t = now() - t0) < 1.0);
	printf("split:    %12.0f statements/s  %8.1f MB/s\n", (double)n * rounds / t,
	       (double)total * rounds / t / 1e6);

	/* classify */
	rounds = 0;
	t0 = now();
	do {
		for (size_t i = 0; i < n; i++)
			sink += (unsigned)sql_classify(pieces[i].sql, pieces[i].len, 0, NULL);
		rounds++;
	} while ((t = now() - t0) < 1.0);
	printf("classify: %12.0f statements/s  %8.1f MB/s\n", (double)n * rounds / t,
	       (double)bytes * rounds / t / 1e6);

	/* analyze */
	rounds = 0;
	t0 = now();
	do {
		for (size_t i = 0; i < n; i++) {
			sql_analyze(pieces[i].sql, pieces[i].len, 0, &analysis);
			sink += analysis.nrelations;
		}
		rounds++;
	} while ((t = now() - t0) < 1.0);
	printf("analyze:  %12.0f statements/s  %8.1f MB/s\n", (double)n * rounds / t,
	       (double)bytes * rounds / t / 1e6);
	(void)sink;
	return 0;
}
