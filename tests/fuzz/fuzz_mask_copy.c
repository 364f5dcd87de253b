/*
 * fuzz_mask_copy: the COPY TO parsers and rewriters on arbitrary COPY data.
 *
 * Input: one selector byte, then a COPY data stream (the seeds are real COPY output of the
 * masking fixture in text, CSV with HEADER, binary, and text with a column list, '|' and
 * NULL 'NULL'). Selector bits 0-1 pick the format and options (as the seeds), bit 2 a
 * masked plan or an all-clear one, bits 3-7 how the second run is cut.
 *
 * Invariants (abort on violation):
 *   - no internal inconsistency (-ENOTRECOVERABLE);
 *   - whole and cut runs agree: same bytes, or both fail (the first error may be found at
 *     a different byte, but success is all or nothing); cut runs mostly cut where rows
 *     end (as the server cuts CopyData messages), and odd cuts offer each piece to
 *     mask_copy_whole() before the machine (every other one to the stage's in-place pass,
 *     mask_copy_messages_in_place(), on a copy before that);
 *   - an all-clear plan gives the stream back unchanged (byte-exact);
 *   - a masked success is itself valid COPY data: read again with an all-clear plan it
 *     passes unchanged, with the same number of rows.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_copy.h"
#include "mask/mask_key.h"

#include "fuzz_check.h"
#include "../unit/mask_copy_util.h"

#define NCOLS 10

static struct mask_env env;
static struct mask_plan masked[4], clear[4];

static struct mask_copy_opts opts[4];

static const struct {
	enum mask_tclass tc;
	bool array;
	int32_t typmod;
	enum mask_kind k;
} cols[NCOLS] = {
	{MASK_TC_INT4, false, -1, MASK_HASH},       {MASK_TC_TEXT, false, -1, MASK_NONE},
	{MASK_TC_TEXT, false, 15, MASK_PARTIAL},    {MASK_TC_BPCHAR, false, 20, MASK_PARTIAL},
	{MASK_TC_TEXT, false, -1, MASK_EMAIL},      {MASK_TC_TEXT, false, -1, MASK_PHONE},
	{MASK_TC_DATE, false, -1, MASK_DATE},       {MASK_TC_NUMERIC, false, 655366, MASK_HASH},
	{MASK_TC_TEXT, true, -1, MASK_HASH},        {MASK_TC_TIMESTAMPTZ, false, -1, MASK_NULL},
};

static void make_plan(struct mask_plan *p, unsigned n, bool mask, uint8_t format)
{
	p->ncols = (uint16_t)n;
	p->cols = calloc(n, sizeof(*p->cols));
	for (unsigned i = 0; i < n; i++) {
		/* the column-list seed is (ssn, id), both partial: a plan in place */
		unsigned c = n == 2 ? (i == 0 ? 2 : 0) : i;
		struct mask_strategy st = {mask ? (n == 2 ? MASK_PARTIAL : cols[c].k) : MASK_NONE, 4};
		struct mask_type t = {.tc = cols[c].tc, .array = cols[c].array,
				      .typmod = cols[c].typmod, .elem_oid = 25};

		p->cols[i].rule_col = -1;
		p->cols[i].kind = st.kind == MASK_NONE ? MASK_COL_CLEAR : MASK_COL_MASKED;
		mask_action_init(&p->cols[i].action, &st, &t, format, &env, NULL);
	}
	mask_plan_count(p);
}

static void init(void)
{
	struct mask_key *k;
	struct mask_mac *mac;

	if (mask_key_from_bytes("fuzz-key-fuzz-key-fuzz-key-fuzz!", 32, &k) < 0 ||
	    mask_mac_new(k, &mac) < 0)
		abort();
	mask_key_free(k);
	mask_env_init(&env, "UTF8", "ISO, MDY", mac);
	mask_copy_opts_default(&opts[0], MASK_COPY_TEXT);
	mask_copy_opts_default(&opts[1], MASK_COPY_CSV);
	opts[1].header = true;
	mask_copy_opts_default(&opts[2], MASK_COPY_BINARY);
	mask_copy_opts_default(&opts[3], MASK_COPY_TEXT);
	opts[3].delim = '|';
	opts[3].null_len = 4;
	memcpy(opts[3].null_str, "NULL", 4);
	for (int f = 0; f < 4; f++) {
		make_plan(&masked[f], f == 3 ? 2 : NCOLS, true, f == 2);
		make_plan(&clear[f], f == 3 ? 2 : NCOLS, false, f == 2);
	}
}

#define ENDS_MAX 4096
#define ENDS_INPUT_MAX 16384 /* longer inputs are not walked byte by byte for row ends */

/* Where rows end in in[0..n): the byte after each, as the machine counts rows fed one byte
 * at a time; up to the first error. */
static size_t row_ends(const struct mask_copy_opts *o, const struct mask_plan *p,
		       const uint8_t *in, size_t n, uint8_t *out, size_t cap, size_t *ends)
{
	struct mask_copy *c = malloc(sizeof(*c));
	static uint8_t buf[4096];
	size_t op = 0, k = 0;

	mask_copy_init(c, buf, sizeof(buf));
	if (n <= ENDS_INPUT_MAX && mask_copy_begin(c, o, p, &env) == 0) {
		for (size_t i = 0; i < n && k < ENDS_MAX;) {
			uint64_t rows = c->rows;
			size_t used, made;

			if (mask_copy_feed(c, in + i, 1, &used, out + op, cap - op, &made) < 0 || !used)
				break;
			i += used;
			op += made;
			if (c->rows != rows)
				ends[k++] = i;
		}
	}
	free(c);
	return k;
}

/* The whole stream through a rewriter; returns the output length or the error. Cut runs
 * with row ends (nends) mostly cut at them, as the server cuts CopyData messages. */
static long run(const struct mask_copy_opts *o, const struct mask_plan *p, const uint8_t *in,
		size_t n, uint8_t *out, size_t cap, unsigned cut, const size_t *ends, size_t nends,
		uint64_t *rows)
{
	size_t next = 0;
	struct mask_copy *c = malloc(sizeof(*c));
	static uint8_t buf[4096];
	size_t i = 0, op = 0;
	uint32_t seed = cut * 40503u + 7;
	long rc;
	unsigned idle = 0;

	mask_copy_init(c, buf, sizeof(buf));
	rc = mask_copy_begin(c, o, p, &env);
	while (!rc && (i < n || mask_copy_pending(c))) {
		size_t is = cut ? 1 + (seed = seed * 1103515245u + 12345u) % (cut * 3) : n - i;
		size_t os = cut ? 1 + (seed >> 9) % (cut * 4 + 3) : cap - op;
		size_t used, made;

		while (next < nends && ends[next] <= i)
			next++;
		if (next < nends && seed % 4) {
			size_t more = (seed >> 3) % 3;

			is = ends[next + more < nends ? next + more : nends - 1] - i;
			if (seed & 0x100)
				os = cap - op; /* room for the whole piece, or less */
		}
		if (is > n - i)
			is = n - i;
		if (os > cap - op)
			os = cap - op;
		/* odd cuts offer each piece to the one pass first, as the stage offers a
		 * CopyData message of a run: it must write what the machine writes */
		if (cut & 1) {
			/* and, where the plan allows, half the time to the in-place pass on a copy
			 * first, as the stage's run offers it */
			if ((cut & 2) && os >= is) {
				memcpy(out + op, in + i, is);
				if (copy_message_in_place(c, in + i, out + op, is)) {
					i += is;
					op += is;
					idle = 0;
					continue;
				}
			}
			made = mask_copy_whole(c, in + i, is, out + op, os);
			if (made) {
				i += is;
				op += made;
				idle = 0;
				continue;
			}
		}
		rc = mask_copy_feed(c, in + i, is, &used, out + op, os, &made);
		i += used;
		op += made;
		if (!used && !made && ++idle > 3) {
			rc = -9999; /* no progress with room: a stall */
			break;
		}
		if (used || made)
			idle = 0;
	}
	for (int k = 0; k < 4 && !rc; k++) {
		size_t used, made;

		rc = mask_copy_feed(c, NULL, 0, &used, out + op, cap - op, &made);
		op += made;
	}
	if (!rc)
		rc = mask_copy_end(c);
	*rows = c->rows;
	free(c);
	return rc ? rc : (long)op;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	unsigned f;
	const struct mask_plan *p;
	uint8_t *in, *out1, *out2;
	size_t n, cap;
	uint64_t rows1, rows2, rows3;
	static size_t ends[ENDS_MAX];
	size_t nends;
	long a, b;

	if (!ready) {
		init();
		ready = true;
	}
	if (size < 1 || size > (1u << 18))
		return 0;
	f = data[0] & 3;
	p = (data[0] & 4) ? &clear[f] : &masked[f];
	n = size - 1;
	in = malloc(n ? n : 1);
	memcpy(in, data + 1, n);
	cap = n * 8 + 65536;
	out1 = malloc(cap);
	out2 = malloc(cap);
	nends = row_ends(&opts[f], p, in, n, out2, cap, ends);
	a = run(&opts[f], p, in, n, out1, cap, 0, NULL, 0, &rows1);
	b = run(&opts[f], p, in, n, out2, cap, 1 + (data[0] >> 3), ends, nends, &rows2);
	CHECK(a != -ENOTRECOVERABLE && b != -ENOTRECOVERABLE);
	CHECK(a != -9999 && b != -9999);
	CHECK((a >= 0) == (b >= 0));
	if (a >= 0) {
		CHECK(a == b && memcmp(out1, out2, (size_t)a) == 0 && rows1 == rows2);
		if (!p->nmasked)
			CHECK((size_t)a == n && memcmp(out1, in, n) == 0);
		/* the rewritten data is COPY data of the same shape */
		b = run(&opts[f], &clear[f], out1, (size_t)a, out2, cap, 0, NULL, 0, &rows3);
		CHECK(b == a && memcmp(out1, out2, (size_t)a) == 0 && rows3 == rows1);
	}
	free(in);
	free(out1);
	free(out2);
	return 0;
}
