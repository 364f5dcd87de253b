/*
 * mask_row_bench: CPU per byte of the DataRow rewriter (userspace/mask/mask_row.h), masked
 * against pass-through, on rows shaped like the masking fixture's customers table.
 *
 *   make bench-mask            (builds build/bench/mask_row_bench and runs it)
 *   build/bench/mask_row_bench [ROWS] [ROUNDS]
 *
 * Each case rewrites ROWS DataRows ROUNDS times, one call per row with the whole body and
 * 64 KiB of room (what the relay's stream buffer gives a stage), as the mask stage takes a
 * whole row: mask_row_whole(), and the rewriter's machine when that declines (a value
 * mask_value_fast() does not take, such as one that is not ASCII). It reports the median
 * round: CPU ns per row and per byte of the input stream (type byte, length and body), and
 * the ratio to two baselines:
 *   copy    the row copied as it is (memcpy of the message: what forwarding a row costs
 *           the relay in user space, before any system call);
 *   clear   the rewriter streaming the row with nothing masked.
 * The relay's own CPU per byte of a SELECT stream on this machine is in docs/BENCHMARKS.md
 * (system calls included); MASKING.md combines the two into the projected ratio of the
 * target (masking a column costs at most 1.5x the relay's CPU per byte unmasked).
 * Single-threaded, CPU time of this process (CLOCK_PROCESS_CPUTIME_ID).
 */
#include "mask/mask_key.h"
#include "mask/mask_row.h"
#include "proto/proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NCOLS 10

struct row {
	uint8_t *msg; /* the whole DataRow */
	uint32_t len;
};

static const char *const names[] = {"Alice Example", "Bob Sample", "Zoë Müller",
				    "Dan \"The Man\" Smith", "Eve O'Neil"};

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)rng;
}

/* Rows lie back to back in one arena, as in a relay's read buffer. */
static uint8_t *arena, *arena_end;

/* id, name, ssn, card, email, phone, dob, balance, tags, created; wide: a long note last */
static struct row make_row(unsigned i, unsigned wide)
{
	char v[NCOLS + 1][4096];
	uint8_t *m;
	size_t n = 7;
	unsigned ncols = NCOLS + (wide ? 1 : 0), k = 0;
	struct row r;

	snprintf(v[k++], sizeof(v[0]), "%u", i + 1);
	snprintf(v[k++], sizeof(v[0]), "%s", names[i % 5]);
	snprintf(v[k++], sizeof(v[0]), "%03u-%02u-%04u", rnd() % 1000, rnd() % 100, rnd() % 10000);
	snprintf(v[k++], sizeof(v[0]), "4%03u%04u%04u%04u", rnd() % 1000, rnd() % 10000,
		 rnd() % 10000, rnd() % 10000);
	snprintf(v[k++], sizeof(v[0]), "user%u@example.com", rnd() % 100000);
	snprintf(v[k++], sizeof(v[0]), "+1 (555) %03u-%04u", rnd() % 1000, rnd() % 10000);
	snprintf(v[k++], sizeof(v[0]), "19%02u-%02u-%02u", rnd() % 100, 1 + rnd() % 12, 1 + rnd() % 28);
	snprintf(v[k++], sizeof(v[0]), "%u.%02u", rnd() % 100000, rnd() % 100);
	snprintf(v[k++], sizeof(v[0]), "{vip,\"new customer\",x%u}", rnd() % 100);
	snprintf(v[k++], sizeof(v[0]), "2024-03-%02u 12:34:56.%06u+00", 1 + rnd() % 28, rnd() % 1000000);
	if (wide) {
		memset(v[k], 'n', wide);
		v[k][wide] = '\0';
		k++;
	}
	m = arena_end;
	m[0] = 'D';
	m[5] = 0;
	m[6] = (uint8_t)ncols;
	for (unsigned c = 0; c < ncols; c++) {
		size_t l = strlen(v[c]);

		proto_write_u32(m + n, (uint32_t)l);
		memcpy(m + n + 4, v[c], l);
		n += 4 + l;
	}
	proto_write_u32(m + 1, (uint32_t)(n - 1));
	r.msg = m;
	r.len = (uint32_t)n;
	arena_end += n;
	return r;
}

/* The benchmark rows: SELECT g, md5(g::text) FROM generate_series(1, N) g. */
static struct row make_small(unsigned i)
{
	static const char hex[] = "0123456789abcdef";
	uint8_t *m = arena_end;
	char g[16];
	size_t n = 7, l = (size_t)snprintf(g, sizeof(g), "%u", i + 1);
	struct row r;

	m[0] = 'D';
	m[5] = 0;
	m[6] = 2;
	proto_write_u32(m + n, (uint32_t)l);
	memcpy(m + n + 4, g, l);
	n += 4 + l;
	proto_write_u32(m + n, 32);
	for (int k = 0; k < 32; k++)
		m[n + 4 + k] = (uint8_t)hex[rnd() & 15];
	n += 36;
	proto_write_u32(m + 1, (uint32_t)(n - 1));
	r.msg = m;
	r.len = (uint32_t)n;
	arena_end += n;
	return r;
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static struct mask_env env;

/* A plan over the row's columns: strategies by column index (MASK_NONE: clear). */
static void make_plan(struct mask_plan *p, unsigned ncols, const enum mask_kind *k)
{
	static const struct mask_type types[NCOLS + 1] = {
		{.tc = MASK_TC_INT4, .typmod = -1},    {.tc = MASK_TC_TEXT, .typmod = -1},
		{.tc = MASK_TC_TEXT, .typmod = 15},    {.tc = MASK_TC_BPCHAR, .typmod = 20},
		{.tc = MASK_TC_TEXT, .typmod = -1, .citext = true},
		{.tc = MASK_TC_TEXT, .typmod = -1},    {.tc = MASK_TC_DATE, .typmod = -1},
		{.tc = MASK_TC_NUMERIC, .typmod = 655366},
		{.tc = MASK_TC_TEXT, .array = true, .typmod = -1, .elem_oid = 25},
		{.tc = MASK_TC_TIMESTAMPTZ, .typmod = -1}, {.tc = MASK_TC_TEXT, .typmod = -1},
	};

	memset(p, 0, sizeof(*p));
	p->ncols = (uint16_t)ncols;
	p->cols = calloc(ncols, sizeof(*p->cols));
	for (unsigned i = 0; i < ncols; i++) {
		struct mask_strategy st = {k ? k[i] : MASK_NONE, 4};

		p->cols[i].rule_col = -1;
		p->cols[i].kind = st.kind == MASK_NONE ? MASK_COL_CLEAR : MASK_COL_MASKED;
		mask_action_init(&p->cols[i].action, &st, &types[i], 0, &env, NULL);
	}
	mask_plan_count(p);
}

/* One round: every row through the rewriter (plan) or a plain copy (plan NULL). */
static double round_ns(const struct row *rows, unsigned n, const struct mask_plan *p,
		       struct mask_row *r, uint8_t *out, size_t cap, uint64_t *sink)
{
	double t0 = now_ns();

	for (unsigned i = 0; i < n; i++) {
		size_t c, pr;
		bool done;

		if (!p) {
			memcpy(out, rows[i].msg, rows[i].len);
			*sink += out[rows[i].len - 1];
			continue;
		}
		pr = mask_row_whole(p, &env, rows[i].msg + 5, rows[i].len - 5, r->la_cap, out, cap);
		if (pr) {
			*sink += out[pr - 1];
			continue;
		}
		if (mask_row_begin(r, p, &env, rows[i].len - 5) ||
		    mask_row_step(r, rows[i].msg + 5, rows[i].len - 5, &c, out, cap, &pr, &done) ||
		    !done) {
			fprintf(stderr, "mask_row_bench: row %u did not rewrite in one call\n", i);
			exit(1);
		}
		*sink += out[pr - 1];
	}
	return now_ns() - t0;
}

struct result {
	double ns_row, ns_byte;
};

static struct result run_case(const struct row *rows, unsigned n, unsigned rounds,
			      const struct mask_plan *p)
{
	static uint8_t la[MASK_ROW_LOOKAHEAD_DEFAULT], out[65536];
	double *t = calloc(rounds, sizeof(double));
	struct mask_row r;
	uint64_t bytes = 0, sink = 0;
	struct result res;

	mask_row_init(&r, la, sizeof(la));
	for (unsigned i = 0; i < n; i++)
		bytes += rows[i].len;
	(void)round_ns(rows, n, p, &r, out, sizeof(out), &sink); /* warm caches */
	for (unsigned k = 0; k < rounds; k++)
		t[k] = round_ns(rows, n, p, &r, out, sizeof(out), &sink);
	qsort(t, rounds, sizeof(double), cmp_double);
	res.ns_row = t[rounds / 2] / n;
	res.ns_byte = t[rounds / 2] / (double)bytes;
	mask_row_release(&r);
	free(t);
	if (sink == 42)
		putchar(' '); /* keeps the copies from being optimised away */
	return res;
}

int main(int argc, char **argv)
{
	unsigned n = argc > 1 ? (unsigned)atoi(argv[1]) : 200000;
	unsigned rounds = argc > 2 ? (unsigned)atoi(argv[2]) : 7;
	struct mask_key *key;
	struct mask_mac *mac;
	struct row *narrow = calloc(n, sizeof(*narrow)), *wide = calloc(n / 8, sizeof(*wide));
	struct row *small = calloc(n, sizeof(*small));
	uint64_t nb = 0, wb = 0, sb = 0;
	static const struct {
		const char *name;
		enum mask_kind k[NCOLS + 1];
		int shape; /* 0 narrow, 1 wide, 2 small */
	} cases[] = {
		{"copy (baseline)", {0}, 0},
		{"clear plan (stream, nothing masked)", {0}, 0},
		{"ssn partial-last-4", {[2] = MASK_PARTIAL}, 0},
		{"ssn hash", {[2] = MASK_HASH}, 0},
		{"ssn redact", {[2] = MASK_REDACT}, 0},
		{"ssn null", {[2] = MASK_NULL}, 0},
		{"email email", {[4] = MASK_EMAIL}, 0},
		{"phone phone", {[5] = MASK_PHONE}, 0},
		{"dob date", {[6] = MASK_DATE}, 0},
		{"ssn+card partial, email", {[2] = MASK_PARTIAL, [3] = MASK_PARTIAL, [4] = MASK_EMAIL}, 0},
		{"wide: copy (baseline)", {0}, 1},
		{"wide: clear plan", {0}, 1},
		{"wide: ssn partial-last-4", {[2] = MASK_PARTIAL}, 1},
		{"wide: ssn hash", {[2] = MASK_HASH}, 1},
		{"small: copy (baseline)", {0}, 2},
		{"small: clear plan", {0}, 2},
		{"small: md5 partial-last-4", {[1] = MASK_PARTIAL}, 2},
		{"small: md5 hash", {[1] = MASK_HASH}, 2},
	};
	double copy_b = 0, clear_b = 0;

	if (mask_key_from_bytes("bench-key-bench-key-bench-key-12", 32, &key) < 0 ||
	    mask_mac_new(key, &mac) < 0)
		return 1;
	mask_env_init(&env, "UTF8", "ISO, MDY", mac);
	arena_end = arena = malloc((size_t)n * 360 + (size_t)(n / 8) * 2300);
	for (unsigned i = 0; i < n; i++) {
		narrow[i] = make_row(i, 0);
		nb += narrow[i].len;
	}
	for (unsigned i = 0; i < n / 8; i++) {
		wide[i] = make_row(i, 2000);
		wb += wide[i].len;
	}
	for (unsigned i = 0; i < n; i++) {
		small[i] = make_small(i);
		sb += small[i].len;
	}
	printf("rows: %u narrow (%.1f bytes each), %u wide (%.1f bytes each), %u small "
	       "(%.1f bytes each); %u rounds, median\n\n",
	       n, (double)nb / n, n / 8, (double)wb / (n / 8), n, (double)sb / n, rounds);
	printf("| case | ns/row | ns/byte | x copy | x clear |\n|---|---|---|---|---|\n");
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct mask_plan plan;
		const struct row *rows = cases[c].shape == 1 ? wide : cases[c].shape == 2 ? small : narrow;
		unsigned count = cases[c].shape == 1 ? n / 8 : n;
		bool copy = strstr(cases[c].name, "copy") != NULL;
		struct result res;

		make_plan(&plan, cases[c].shape == 1 ? NCOLS + 1 : cases[c].shape == 2 ? 2 : NCOLS,
			  cases[c].k);
		res = run_case(rows, count, rounds, copy ? NULL : &plan);
		if (copy)
			copy_b = res.ns_byte;
		else if (strstr(cases[c].name, "clear"))
			clear_b = res.ns_byte;
		printf("| %s | %.1f | %.3f | %.2f | %.2f |\n", cases[c].name, res.ns_row, res.ns_byte,
		       res.ns_byte / copy_b, clear_b ? res.ns_byte / clear_b : 1.0);
		mask_plan_free(&plan);
	}
	return 0;
}
