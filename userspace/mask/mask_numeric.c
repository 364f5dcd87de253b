/*
 * mask_numeric: numeric's binary form (numeric_send/numeric_recv) to and from the text
 * numeric_out writes, so that partial and hash give a binary client the same value a text
 * client sees.
 *
 * Binary layout: int16 ndigits, int16 weight, uint16 sign, int16 dscale, then ndigits
 * base-10000 digits; the value is sum(digit[i] * 10000^(weight - i)).
 */
#include "mask/mask_value_int.h"

#include <stdio.h>

#define NUMERIC_POS 0x0000
#define NUMERIC_NEG 0x4000
#define NUMERIC_NAN 0xC000
#define NUMERIC_PINF 0xD000
#define NUMERIC_NINF 0xF000
#define NUMERIC_DSCALE_MAX 0x3FFF
#define NBASE 10000
#define DEC_DIGITS 4
#define VARHDRSZ 4

int mask_numeric_typmod_scale(int32_t typmod)
{
	int s;

	if (typmod < VARHDRSZ)
		return 0;
	s = ((((typmod - VARHDRSZ) & 0x7ff) ^ 1024) - 1024);
	return s > 0 ? s : 0;
}

int mask_numeric_typmod_precision(int32_t typmod)
{
	if (typmod < VARHDRSZ)
		return 0;
	return ((typmod - VARHDRSZ) >> 16) & 0xffff;
}

struct sbuf {
	char *p;
	size_t n, cap;
	bool over;
};

static void sb_put(struct sbuf *b, const char *s, size_t n)
{
	if (b->n + n > b->cap) {
		b->over = true;
		return;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
}

int mask_numeric_to_text(const uint8_t *b, size_t n, char *out, size_t cap)
{
	struct sbuf sb = {.p = out, .cap = cap};
	int ndigits, weight, dscale;
	uint16_t sign;
	char grp[8];

	if (n < 8)
		return -EPROTO;
	ndigits = (int16_t)xf_get16(b);
	weight = (int16_t)xf_get16(b + 2);
	sign = xf_get16(b + 4);
	dscale = (int16_t)xf_get16(b + 6);
	if (ndigits < 0 || n != 8 + 2 * (size_t)ndigits || dscale < 0 || dscale > NUMERIC_DSCALE_MAX)
		return -EPROTO;
	for (int i = 0; i < ndigits; i++)
		if (xf_get16(b + 8 + 2 * i) >= NBASE)
			return -EPROTO;
	switch (sign) {
	case NUMERIC_NAN:
		sb_put(&sb, "NaN", 3);
		goto done;
	case NUMERIC_PINF:
		sb_put(&sb, "Infinity", 8);
		goto done;
	case NUMERIC_NINF:
		sb_put(&sb, "-Infinity", 9);
		goto done;
	case NUMERIC_NEG:
		sb_put(&sb, "-", 1);
		break;
	case NUMERIC_POS:
		break;
	default:
		return -EPROTO;
	}
	if (weight < 0) {
		sb_put(&sb, "0", 1);
	} else {
		for (int d = 0; d <= weight && !sb.over; d++) {
			unsigned dig = d < ndigits ? xf_get16(b + 8 + 2 * d) : 0;
			int len = snprintf(grp, sizeof(grp), d == 0 ? "%u" : "%04u", dig);

			sb_put(&sb, grp, (size_t)len);
		}
	}
	if (dscale > 0) {
		int printed = 0;

		sb_put(&sb, ".", 1);
		for (int d = weight + 1; printed < dscale && !sb.over; d++) {
			unsigned dig = (d >= 0 && d < ndigits) ? xf_get16(b + 8 + 2 * d) : 0;
			int take = dscale - printed < DEC_DIGITS ? dscale - printed : DEC_DIGITS;

			snprintf(grp, sizeof(grp), "%04u", dig);
			sb_put(&sb, grp, (size_t)take);
			printed += take;
		}
	}
done:
	return sb.over ? -ENOSPC : (int)sb.n;
}

int mask_numeric_from_text(const char *s, size_t n, uint8_t *out, size_t cap)
{
	size_t i = 0, int_start, int_len, frac_start = 0, frac_len = 0;
	uint16_t sign = NUMERIC_POS;
	int ngroups_int, ngroups_frac, total, first, last, weight;

	if (n == 3 && memcmp(s, "NaN", 3) == 0)
		sign = NUMERIC_NAN;
	else if (n == 8 && memcmp(s, "Infinity", 8) == 0)
		sign = NUMERIC_PINF;
	else if (n == 9 && memcmp(s, "-Infinity", 9) == 0)
		sign = NUMERIC_NINF;
	if (sign != NUMERIC_POS) {
		if (cap < 8)
			return -ENOSPC;
		xf_set16(out, 0);
		xf_set16(out + 2, 0);
		xf_set16(out + 4, sign);
		xf_set16(out + 6, 0);
		return 8;
	}
	if (i < n && s[i] == '-') {
		sign = NUMERIC_NEG;
		i++;
	}
	int_start = i;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	int_len = i - int_start;
	if (i < n && s[i] == '.') {
		frac_start = ++i;
		while (i < n && s[i] >= '0' && s[i] <= '9')
			i++;
		frac_len = i - frac_start;
	}
	if (i != n || int_len + frac_len == 0 || frac_len > NUMERIC_DSCALE_MAX)
		return -EINVAL;
	ngroups_int = (int)((int_len + DEC_DIGITS - 1) / DEC_DIGITS);
	ngroups_frac = (int)((frac_len + DEC_DIGITS - 1) / DEC_DIGITS);
	total = ngroups_int + ngroups_frac;
	if (ngroups_int > 0x7fff || (size_t)(8 + 2 * total) > cap)
		return (size_t)(8 + 2 * (size_t)total) > cap ? -ENOSPC : -EINVAL;
	/* Groups left to right: integer digits right-aligned, fraction digits left-aligned. */
	for (int g = 0; g < total; g++) {
		unsigned v = 0;

		for (int k = 0; k < DEC_DIGITS; k++) {
			long pos; /* index into the integer or fraction digits */
			char c = '0';

			if (g < ngroups_int) {
				pos = (long)g * DEC_DIGITS + k - (ngroups_int * DEC_DIGITS - (long)int_len);
				if (pos >= 0)
					c = s[int_start + (size_t)pos];
			} else {
				pos = (long)(g - ngroups_int) * DEC_DIGITS + k;
				if (pos < (long)frac_len)
					c = s[frac_start + (size_t)pos];
			}
			v = v * 10 + (unsigned)(c - '0');
		}
		xf_set16(out + 8 + 2 * g, (uint16_t)v);
	}
	/* Strip zero groups at both ends, as numeric's make_result does. */
	first = 0;
	last = total - 1;
	while (first <= last && xf_get16(out + 8 + 2 * first) == 0)
		first++;
	while (last >= first && xf_get16(out + 8 + 2 * last) == 0)
		last--;
	weight = ngroups_int - 1 - first;
	if (first > last) {
		total = 0;
		weight = 0;
		sign = NUMERIC_POS;
	} else {
		total = last - first + 1;
		memmove(out + 8, out + 8 + 2 * first, 2 * (size_t)total);
	}
	xf_set16(out, (uint16_t)total);
	xf_set16(out + 2, (uint16_t)(int16_t)weight);
	xf_set16(out + 4, sign);
	xf_set16(out + 6, (uint16_t)frac_len);
	return 8 + 2 * total;
}
