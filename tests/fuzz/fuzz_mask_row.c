/*
 * fuzz_mask_row: the streaming DataRow rewriter on arbitrary row bodies.
 *
 * Input: one selector byte, then a DataRow body (the seeds are real rows of the masking
 * fixture, from tests/integration/capture_mask.py). Selector bits 0-2 pick a plan (plans
 * shaped like the fixture's customers table, in text and binary, all clear, masked whole,
 * content-dependent lengths), bits 3-4 the lookahead (1 KiB to 64 KiB), bits 5-7 how the
 * second run is cut into pieces.
 *
 * Invariants (abort on violation):
 *   - no internal inconsistency (-ENOTRECOVERABLE): a promised length is always kept;
 *   - a second run in small pieces into small rooms gives the same bytes or the same error;
 *   - a success is exactly one DataRow that frames, walks cleanly with the plan's column
 *     count, and consumed the whole body; a call never takes nothing and gives nothing
 *     while it has input;
 *   - an all-clear plan gives the body back unchanged (byte-exact pass-through);
 *   - a masked field whose length mask_out_len() knows has exactly that length;
 *   - the one-pass mask_row_whole(), into all the room and into less, declines or writes
 *     exactly the first run's message, and declines every row the machine refuses;
 *   - the in-place mask_fields_in_place() on a copy declines or leaves exactly the first
 *     run's body, and under an in-place plan takes exactly the rows mask_row_whole() takes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_key.h"
#include "mask/mask_row.h"
#include "proto/proto.h"

#include "fuzz_check.h"

#define NCOLS 10
#define NPLANS 8

static struct mask_env env;
static struct mask_plan plans[NPLANS];

/* customers: id int4, name text, ssn varchar(11), card char(16), email citext, phone text,
 * dob date, balance numeric(10,2), tags text[], created timestamptz */
static const struct {
	enum mask_tclass tc;
	bool array, citext;
	int32_t typmod;
} cols[NCOLS] = {
	{MASK_TC_INT4, false, false, -1},     {MASK_TC_TEXT, false, false, -1},
	{MASK_TC_TEXT, false, false, 15},     {MASK_TC_BPCHAR, false, false, 20},
	{MASK_TC_TEXT, false, true, -1},      {MASK_TC_TEXT, false, false, -1},
	{MASK_TC_DATE, false, false, -1},     {MASK_TC_NUMERIC, false, false, 655366},
	{MASK_TC_TEXT, true, false, -1},      {MASK_TC_TIMESTAMPTZ, false, false, -1},
};

static void plan_set(struct mask_plan *p, unsigned i, enum mask_kind k, uint16_t keep,
		     uint8_t format)
{
	struct mask_strategy st = {k, keep};
	struct mask_type t = {.tc = cols[i].tc, .array = cols[i].array, .citext = cols[i].citext,
			      .typmod = cols[i].typmod, .elem_oid = 25};

	p->cols[i].kind = k == MASK_NONE ? MASK_COL_CLEAR : MASK_COL_MASKED;
	p->cols[i].rule_col = -1;
	mask_action_init(&p->cols[i].action, &st, &t, format, &env, NULL);
}

static void init(void)
{
	static const enum mask_kind fixture[NCOLS] = {
		MASK_NONE, MASK_NONE,  MASK_PARTIAL, MASK_PARTIAL, MASK_EMAIL,
		MASK_PHONE, MASK_DATE, MASK_REDACT,  MASK_HASH,    MASK_DATE,
	};
	static const enum mask_kind other[NCOLS] = {
		MASK_HASH, MASK_HASH, MASK_HASH, MASK_HASH,    MASK_NULL,
		MASK_PARTIAL, MASK_REDACT, MASK_PARTIAL, MASK_PARTIAL, MASK_REDACT,
	};
	struct mask_key *k;
	struct mask_mac *mac;

	if (mask_key_from_bytes("fuzz-key-fuzz-key-fuzz-key-fuzz!", 32, &k) < 0 ||
	    mask_mac_new(k, &mac) < 0)
		abort();
	mask_key_free(k);
	mask_env_init(&env, "UTF8", "ISO, MDY", mac);
	for (int p = 0; p < NPLANS; p++) {
		plans[p].ncols = NCOLS;
		plans[p].cols = calloc(NCOLS, sizeof(*plans[p].cols));
		for (unsigned i = 0; i < NCOLS; i++) {
			switch (p) {
			case 0: /* the fixture's policy, text */
			case 1: /* ... binary */
				plan_set(&plans[p], i, fixture[i], 4, p == 1);
				break;
			case 2: /* nothing masked */
				plan_set(&plans[p], i, MASK_NONE, 0, 0);
				break;
			case 3: /* everything null */
				plan_set(&plans[p], i, MASK_NULL, 0, 0);
				break;
			case 4: /* other strategies, text */
			case 5: /* ... binary: content-dependent lengths (numeric, arrays) */
				plan_set(&plans[p], i, other[i], 2, p == 5);
				break;
			case 6: /* only the last column masked (in place): the longest lookahead */
				plan_set(&plans[p], i, i == NCOLS - 1 ? MASK_DATE : MASK_NONE, 0, 0);
				break;
			default: /* only the first: the shortest */
				plan_set(&plans[p], i, i == 0 ? MASK_HASH : MASK_NONE, 0, 0);
				break;
			}
		}
		mask_plan_count(&plans[p]);
	}
}

/* Returns the output length, or the error; *stalled when a call with input made no
 * progress. */
static long run(const struct mask_plan *p, uint8_t *la, uint32_t la_cap, const uint8_t *body,
		size_t n, uint8_t *out, size_t cap, unsigned cut, bool *stalled)
{
	struct mask_row r;
	size_t i = 0, o = 0;
	uint32_t seed = cut * 2654435761u + 1;
	bool done = false;
	long rc;

	*stalled = false;
	mask_row_init(&r, la, la_cap);
	rc = mask_row_begin(&r, p, &env, (uint32_t)n);
	while (!rc && !done) {
		size_t is = cut ? 1 + (seed = seed * 1103515245u + 12345u) % (cut * 7) : n - i;
		size_t os = cut ? 1 + (seed >> 8) % (cut * 5 + 1) : cap - o;
		size_t c, pr;

		if (is > n - i)
			is = n - i;
		if (os > cap - o)
			os = cap - o;
		rc = mask_row_step(&r, body + i, is, &c, out + o, os, &pr, &done);
		if (rc)
			break;
		if (!c && !pr && !done && is)
			*stalled = true;
		if (!c && !pr && !done && !is && i == n) {
			rc = -9999; /* finished input, yet neither done nor producing */
			break;
		}
		i += c;
		o += pr;
	}
	mask_row_release(&r);
	if (!rc && i != n)
		return -9998;
	return rc ? rc : (long)o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	static const uint32_t la_caps[4] = {1024, 4096, 16384, 65536};
	const struct mask_plan *p;
	uint8_t *la, *out1, *out2, *out3, *body;
	size_t n, cap, w, room;
	long a, b;
	bool st1, st2;

	if (!ready) {
		init();
		ready = true;
	}
	if (size < 1 || size > (1u << 20))
		return 0;
	p = &plans[data[0] & 7];
	n = size - 1;
	body = malloc(n ? n : 1); /* exact size: ASan sees any read past the body */
	memcpy(body, data + 1, n);
	cap = 5 + n * 4 + 4096;
	out1 = malloc(cap);
	out2 = malloc(cap);
	out3 = malloc(cap);
	la = malloc(la_caps[(data[0] >> 3) & 3]);
	a = run(p, la, la_caps[(data[0] >> 3) & 3], body, n, out1, cap, 0, &st1);
	b = run(p, la, la_caps[(data[0] >> 3) & 3], body, n, out2, cap, 1 + (data[0] >> 5), &st2);
	CHECK(a != -ENOTRECOVERABLE && b != -ENOTRECOVERABLE);
	CHECK(a > -9990 && b > -9990);
	CHECK(a == b);
	CHECK(!st2);
	w = mask_row_whole(p, &env, body, (uint32_t)n, la_caps[(data[0] >> 3) & 3], out3, cap);
	CHECK(!w || (a >= 0 && w == (size_t)a && memcmp(out3, out1, w) == 0));
	room = a > 0 ? (size_t)a - 1 - (data[0] >> 5) % (size_t)a : 0;
	w = mask_row_whole(p, &env, body, (uint32_t)n, la_caps[(data[0] >> 3) & 3], out3, room);
	CHECK(!w); /* less room than the message: never a message */
	/* the in-place pass on a copy of the body (any plan: it declines what it cannot take):
	 * the first run's body, and where the plan is in place, exactly when the one pass
	 * takes the row */
	memcpy(out3, body, n);
	w = mask_fields_in_place(p, &env, body, out3, n, la_caps[(data[0] >> 3) & 3]);
	if (w != n)
		w = 0;
	CHECK(!w || (a == (long)(PROTO_HEADER_LEN + n) &&
		     memcmp(out3, out1 + PROTO_HEADER_LEN, n) == 0));
	CHECK(!p->in_place || !w == !mask_row_whole(p, &env, body, (uint32_t)n,
						     la_caps[(data[0] >> 3) & 3], out3, cap));
	if (a >= 0) {
		struct proto_msg m;
		struct proto_datarow_iter it, in_it;
		struct proto_msg in_msg = {PqMsg_DataRow, (uint32_t)n, body};
		const uint8_t *v, *iv;
		int32_t len, ilen;
		unsigned i = 0;
		int rc;

		CHECK(memcmp(out1, out2, (size_t)a) == 0);
		CHECK(proto_frame(out1, (size_t)a, PROTO_BACKEND, PROTO_MAX_BODY, &m) == PROTO_OK);
		CHECK(m.type == PqMsg_DataRow && PROTO_HEADER_LEN + m.body_len == (size_t)a);
		CHECK(proto_datarow_begin(&m, &it) == PROTO_OK && it.ncols == p->ncols);
		CHECK(proto_datarow_begin(&in_msg, &in_it) == PROTO_OK);
		while ((rc = proto_datarow_next(&it, &v, &len)) == 1) {
			CHECK(proto_datarow_next(&in_it, &iv, &ilen) == 1);
			if (p->cols[i].kind == MASK_COL_CLEAR) {
				CHECK(len == ilen && (len <= 0 || memcmp(v, iv, (size_t)len) == 0));
			} else if (ilen < 0) {
				CHECK(len == -1); /* NULL stays NULL */
			} else {
				int64_t want = mask_out_len(&p->cols[i].action, &env, (uint32_t)ilen);

				if (want != MASK_LEN_UNKNOWN)
					CHECK(want == len);
			}
			i++;
		}
		CHECK(rc == 0 && i == p->ncols);
		if (!p->nmasked)
			CHECK(m.body_len == n && memcmp(m.body, body, n) == 0);
	}
	free(la);
	free(out1);
	free(out2);
	free(out3);
	free(body);
	return 0;
}
