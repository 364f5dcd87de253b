/*
 * mask_value_int: what the files of the mask_value module share (mask_value.c: the
 * transformer and scalar strategies; mask_value_array.c: array literals and binary arrays;
 * mask_date.c: dates and times; mask_numeric.c: the numeric binary codec). Not for other
 * modules: mask_value.h is the face.
 */
#ifndef PGWARDEN_MASK_VALUE_INT_H
#define PGWARDEN_MASK_VALUE_INT_H

#include "mask/mask_value.h"

#include <errno.h>
#include <string.h>

/* Transformer modes. */
enum xf_mode {
	XF_FIXED = 1, /* redact: skip the input, write a fixed value at the end */
	XF_HASH,      /* feed the HMAC, write the token at the end */
	XF_UNITS,     /* character by character: partial, email, phone */
	XF_DATE_TEXT, /* hold a short date/time text, rewrite it in place */
	XF_SMALL,     /* hold a short binary value whole, rewrite it at the end */
	XF_ARRAY_TEXT,
	XF_ARRAY_BIN,
};

/* How a masked character is written. */
enum xf_family {
	FAM_UPPER = 0, /* 'X', or an X-like character of the same byte length */
	FAM_LOWER,     /* 'x' (e-mail local parts) */
	FAM_DIGIT,     /* digits become '0', anything else stays (numbers) */
	FAM_PHONE,     /* digits '0', letters 'X', ASCII punctuation and blanks stay */
};

/* Room the driver guarantees in pend before one step of a strategy. */
#define XF_STEP_ROOM 96

/* The longest date/time text held for an in-place rewrite. */
#define MASK_DATE_TEXT_MAX 64

/* Output helpers (mask_value.c). */
void xf_put(struct mask_xf *x, const void *p, size_t n);
void xf_put_unit(struct mask_xf *x, const struct mask_unit *u, bool masked,
		 enum xf_family fam);
bool xf_step_ready(const struct mask_xf *x);
/* Strategy steps on one character, and their begin/end per value or array element. */
void xf_units_begin(struct mask_xf *x);
/* Add one byte to the character being assembled: 0 taken, 1 taken and x->cur complete,
 * 2 not taken and x->cur complete without it. */
int xf_unit_add(struct mask_xf *x, uint8_t b, bool esc);
/* Do pending work between characters; true when nothing is pending and a step has room. */
bool xf_units_ready(struct mask_xf *x);
/* xf_units_ready(), and a character cut short by the end counts as one. */
bool xf_units_settle(struct mask_xf *x);
void xf_units_unit(struct mask_xf *x, const struct mask_unit *u);
/* Feed n bytes of character content (no escapes) through character assembly. Returns the
 * bytes taken (it stops when a step would need more room). */
size_t xf_units_bytes(struct mask_xf *x, const uint8_t *p, size_t n);
/* Something that is not a character must be written now (a quote inside an array
 * element): what is held so far goes out masked first (call when settled). */
void xf_units_cut(struct mask_xf *x);
/* End of a value or element: queue what is held. */
void xf_units_end(struct mask_xf *x);
/* Hash of a value or element: begin, content, end (queues the token). */
int xf_hash_begin(struct mask_xf *x);
int xf_hash_bytes(struct mask_xf *x, const uint8_t *p, size_t n);
int xf_hash_end(struct mask_xf *x, bool quote_if_blank);
/* Token length of hash on one scalar of type t in format (text or binary). */
uint32_t xf_hash_token_len(const struct mask_type *t, uint8_t format);
/* Length of a character starting with byte b in encoding enc (1..4). */
uint8_t xf_char_len(enum mask_encoding enc, uint8_t b);
bool xf_unit_is_blank(const struct mask_unit *u);

/* Arrays (mask_value_array.c). */
void xf_array_begin(struct mask_xf *x);
size_t xf_array_text_feed(struct mask_xf *x, const uint8_t *in, size_t n, bool *worked);
int xf_array_text_finish(struct mask_xf *x);
size_t xf_array_bin_feed(struct mask_xf *x, const uint8_t *in, size_t n, bool *worked);
int xf_array_bin_finish(struct mask_xf *x);
/* The redacted value of an array: "{}" or an empty binary array. */
size_t xf_array_redact(const struct mask_type *t, uint8_t format, uint8_t *out);

/* Dates and times (mask_date.c). */
/* Rewrite a date/time text in place to January 1st of its year, midnight. Returns true
 * when v was understood (then rewritten), false when not (v unchanged). */
bool mask_date_text_rewrite(uint8_t *v, size_t n, enum mask_tclass tc,
			    const struct mask_env *e);
/* The redacted text (1970-01-01, midnight, UTC) of tc in the session's DateStyle. */
size_t mask_date_redact_text(enum mask_tclass tc, const struct mask_env *e, char *out,
			     size_t cap);
int32_t mask_date_bin_year_start(int32_t days);
int64_t mask_ts_bin_year_start(int64_t usecs);
/* PostgreSQL's Julian-day calendar (src/backend/utils/adt/datetime.c). */
int mask_date2j(int year, int month, int day);
void mask_j2date(int jd, int *year, int *month, int *day);
#define MASK_PG_EPOCH_JDATE 2451545 /* 2000-01-01 */
#define MASK_UNIX_EPOCH_DAYS (-10957) /* 1970-01-01 - 2000-01-01 */
#define MASK_USECS_PER_DAY INT64_C(86400000000)

/* Numeric binary (mask_numeric.c). */
/* Decode a numeric's binary form into numeric_out's text. Returns the length, or -EPROTO,
 * or -ENOSPC. */
int mask_numeric_to_text(const uint8_t *b, size_t n, char *out, size_t cap);
/* Encode a decimal text ([-]digits[.digits], or NaN/Infinity/-Infinity) as numeric
 * binary with the given display scale. Returns the length, -EINVAL or -ENOSPC. */
int mask_numeric_from_text(const char *s, size_t n, uint8_t *out, size_t cap);
/* The display scale a numeric typmod gives (0 without typmod or for a negative scale). */
int mask_numeric_typmod_scale(int32_t typmod);
int mask_numeric_typmod_precision(int32_t typmod);

static inline uint16_t xf_get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline uint32_t xf_get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t xf_get64(const uint8_t *p)
{
	return (uint64_t)xf_get32(p) << 32 | xf_get32(p + 4);
}

static inline void xf_set16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void xf_set32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void xf_set64(uint8_t *p, uint64_t v)
{
	xf_set32(p, (uint32_t)(v >> 32));
	xf_set32(p + 4, (uint32_t)v);
}

#endif
