/*
 * fuzz_mask_value: every strategy on every type class, in both formats, on arbitrary
 * values: the character assembly, the array literal and binary array walkers, the date
 * parser, the numeric codec.
 *
 * Input: one selector byte (strategy, type, format, encoding), then the value.
 *
 * Invariants (abort on violation):
 *   - the whole value and the same value one byte at a time into one byte of room give the
 *     same bytes or the same error;
 *   - mask_value_measure() agrees with the output, and so does mask_out_len() when it
 *     knows a length;
 *   - in-place strategies (partial, email, phone, date) on text keep the byte length, and
 *     under UTF8 turn valid UTF-8 into valid UTF-8;
 *   - a failure is -EPROTO or -EIO, never another code;
 *   - mask_value_fast(), when it takes a value, gives exactly the transformer's bytes.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_key.h"
#include "mask/mask_value.h"

#include "fuzz_check.h"

static struct mask_env utf8, latin1;

static bool valid_utf8(const uint8_t *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		uint8_t b = p[i];
		size_t k = b < 0x80 ? 1 : (b >= 0xC2 && b < 0xE0) ? 2 : (b >= 0xE0 && b < 0xF0) ? 3
			   : (b >= 0xF0 && b < 0xF5) ? 4 : 0;

		if (!k || i + k > n)
			return false;
		for (size_t j = 1; j < k; j++)
			if ((p[i + j] & 0xC0) != 0x80)
				return false;
		/* overlongs and surrogates: reject as strict decoders do */
		if (k == 3 && ((b == 0xE0 && p[i + 1] < 0xA0) || (b == 0xED && p[i + 1] >= 0xA0)))
			return false;
		if (k == 4 && ((b == 0xF0 && p[i + 1] < 0x90) || (b == 0xF4 && p[i + 1] >= 0x90)))
			return false;
		i += k;
	}
	return true;
}

static int64_t run_bytewise(const struct mask_action *a, const struct mask_env *e,
			    const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	struct mask_xf *x = malloc(sizeof(*x));
	size_t i = 0, o = 0;
	bool done = false;
	int rc = 0;

	mask_xf_begin(x, a, e, (int64_t)n);
	while (i < n && !rc) {
		size_t c, p;

		rc = mask_xf_feed(x, in + i, 1, &c, out + o, o < cap ? 1 : 0, &p);
		i += c;
		o += p;
		if (!c && !p && !rc)
			CHECK(o < cap); /* a stall with room */
	}
	while (!done && !rc) {
		size_t p;

		rc = mask_xf_finish(x, out + o, o < cap ? 1 : 0, &p, &done);
		o += p;
		if (!done && !p && !rc)
			CHECK(o < cap);
	}
	free(x);
	return rc < 0 ? rc : (int64_t)o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const enum mask_kind kinds[8] = {MASK_REDACT, MASK_PARTIAL, MASK_HASH, MASK_EMAIL,
						MASK_PHONE, MASK_DATE, MASK_PARTIAL, MASK_HASH};
	static const enum mask_tclass tcs[8] = {MASK_TC_TEXT, MASK_TC_BPCHAR, MASK_TC_INT4,
						MASK_TC_NUMERIC, MASK_TC_DATE, MASK_TC_TIMESTAMPTZ,
						MASK_TC_INT8, MASK_TC_TEXT};
	static bool ready;
	struct mask_strategy st;
	struct mask_type t = {.typmod = -1, .elem_oid = 25};
	struct mask_action a;
	const struct mask_env *e;
	uint8_t *in, *o1, *o2;
	size_t n, cap;
	int64_t x, y, m, len;
	uint8_t sel;

	if (!ready) {
		struct mask_key *k;
		struct mask_mac *mac;

		if (mask_key_from_bytes("fuzz-key-fuzz-key-fuzz-key-fuzz!", 32, &k) < 0 ||
		    mask_mac_new(k, &mac) < 0)
			abort();
		mask_key_free(k);
		mask_env_init(&utf8, "UTF8", "Postgres, DMY", mac);
		mask_env_init(&latin1, "LATIN1", "SQL, MDY", mac);
		ready = true;
	}
	if (size < 2 || size > 65536)
		return 0;
	sel = data[0];
	st.kind = kinds[sel & 7];
	st.keep = (uint16_t)(1 + (data[1] % MASK_PARTIAL_MAX));
	t.tc = tcs[(sel >> 3) & 7];
	t.array = (sel >> 6) & 1;
	if (t.tc == MASK_TC_BPCHAR)
		t.typmod = 4 + data[1] % 80;
	if (t.tc == MASK_TC_NUMERIC && (data[1] & 1))
		t.typmod = ((10 << 16) | 2) + 4;
	e = (sel >> 7) ? &latin1 : &utf8;
	mask_action_init(&a, &st, &t, (uint8_t)((data[1] >> 7) & 1), e, NULL);
	if (mask_action_is_null(&a))
		return 0;
	n = size - 2;
	in = malloc(n ? n : 1);
	memcpy(in, data + 2, n);
	cap = n * 128 + 4096; /* hash on char(n)[]: up to n + 3 bytes per 2-byte element */
	o1 = malloc(cap);
	o2 = malloc(cap);
	x = mask_value_apply(&a, e, in, n, o1, cap);
	y = run_bytewise(&a, e, in, n, o2, cap);
	m = mask_value_measure(&a, e, in, n);
	CHECK(x == y && x == m);
	CHECK(x >= 0 || x == -EPROTO || x == -EIO);
	{
		int64_t f = mask_value_fast(&a, e, in, n, o2, cap);

		if (f >= 0)
			CHECK(x >= 0 && f == x && memcmp(o1, o2, (size_t)x) == 0);
		if (x >= 0)
			y = run_bytewise(&a, e, in, n, o2, cap); /* o2 again: the streaming bytes */
	}
	if (x >= 0) {
		CHECK(memcmp(o1, o2, (size_t)x) == 0);
		len = mask_out_len(&a, e, (uint32_t)n);
		if (len != MASK_LEN_UNKNOWN)
			CHECK(len == x);
		if (!a.format && (a.type.tc == MASK_TC_TEXT || a.type.tc == MASK_TC_BPCHAR) &&
		    (st.kind == MASK_PARTIAL || st.kind == MASK_EMAIL || st.kind == MASK_PHONE ||
		     st.kind == MASK_DATE)) {
			CHECK((size_t)x == n);
			if (e == &utf8 && valid_utf8(in, n))
				CHECK(valid_utf8(o1, (size_t)x));
		}
	}
	free(in);
	free(o1);
	free(o2);
	return 0;
}
