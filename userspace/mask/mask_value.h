/*
 * mask_value: what one masking strategy does to one value of one column type, in text or
 * binary format, streaming in constant memory.
 *
 * Types are reduced to classes (struct mask_type): text-like (text, varchar(n), citext,
 * name; domains over them are resolved to their base type by the catalog query), bpchar
 * (char(n), whose padded length is kept), the integer, numeric and float types, date,
 * timestamp and timestamptz, and one-dimensional or multi-dimensional arrays of any of
 * those. Anything else is MASK_TC_OTHER, for which only `null` applies.
 *
 * Which strategy applies to which class (anything else falls back to `null`, valid for
 * every type, and mask_action_init() says so, so the resolution can warn):
 *
 *                 text  bpchar  int  numeric  float  date/ts  text[]  other[]
 *   null           x      x      x     x        x      x        x       x
 *   redact         x      x      x     x        x      x        x       x    ({} for arrays)
 *   partial-last-N x      x      x     x                        x
 *   hash           x      x      x     x                        x
 *   email          x      x                                     x
 *   phone          x      x                                     x
 *   date           x      x                            x
 *
 * Binary format is implemented for every cell of the table, so a masked column never needs
 * a client to give up binary results (docs/MASKING.md lists each type's binary behaviour).
 *
 * Character-based strategies (partial, email, phone, date on text) need character
 * boundaries: they run for UTF8 and the single-byte client encodings; under any other
 * client encoding they fall back to `null` rather than guess.
 *
 * Output lengths: a DataRow's length comes before its fields, so the row rewriter must know
 * each masked field's output length early. mask_out_len() gives it from the input length
 * alone for every action except those whose output depends on the content (hash on arrays,
 * binary numeric with partial or hash): those answer MASK_LEN_UNKNOWN, and their values
 * must be held whole (mask_row.h proves the bound) and measured by a dry run, which gives
 * the same bytes as the real run because every transformer is deterministic.
 *
 * A transformer (struct mask_xf) takes a value in pieces of any size, down to one byte, and
 * writes its output into room of any size, down to one byte; its state is fixed-size.
 */
#ifndef PGWARDEN_MASK_VALUE_H
#define PGWARDEN_MASK_VALUE_H

#include "mask/mask_key.h"
#include "mask/mask_strategy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Built-in type OIDs (PostgreSQL's pg_type.dat) the classes come from. */
#define MASK_OID_NAME 19
#define MASK_OID_INT8 20
#define MASK_OID_INT2 21
#define MASK_OID_INT4 23
#define MASK_OID_TEXT 25
#define MASK_OID_FLOAT4 700
#define MASK_OID_FLOAT8 701
#define MASK_OID_BPCHAR 1042
#define MASK_OID_VARCHAR 1043
#define MASK_OID_DATE 1082
#define MASK_OID_TIMESTAMP 1114
#define MASK_OID_TIMESTAMPTZ 1184
#define MASK_OID_NUMERIC 1700

enum mask_tclass {
	MASK_TC_OTHER = 0,
	MASK_TC_TEXT,   /* text, varchar, citext, name */
	MASK_TC_BPCHAR, /* char(n) */
	MASK_TC_INT2,
	MASK_TC_INT4,
	MASK_TC_INT8,
	MASK_TC_NUMERIC,
	MASK_TC_FLOAT4,
	MASK_TC_FLOAT8,
	MASK_TC_DATE,
	MASK_TC_TIMESTAMP,
	MASK_TC_TIMESTAMPTZ,
	MASK_TC_COUNT,
};

struct mask_type {
	enum mask_tclass tc; /* of the value, or of each element of an array */
	bool array;
	bool citext;         /* case-insensitive text: hashed with ASCII letters folded */
	int32_t typmod;      /* as RowDescription reports it (elements' for arrays); -1: none */
	uint32_t elem_oid;   /* arrays: the element type written into a redacted binary array */
};

/* The class of a built-in scalar type OID (MASK_TC_OTHER when it has none). */
enum mask_tclass mask_tclass_of_oid(uint32_t oid);
const char *mask_tclass_to_str(enum mask_tclass tc);

/* What text in a session looks like: from its ParameterStatus reports. */
enum mask_encoding {
	MASK_ENC_UTF8 = 0,
	MASK_ENC_SINGLE,      /* SQL_ASCII and every one-byte-per-character encoding */
	MASK_ENC_UNSUPPORTED, /* multibyte encodings other than UTF8 */
};

enum mask_datestyle {
	MASK_DS_ISO = 0,
	MASK_DS_SQL,
	MASK_DS_POSTGRES,
	MASK_DS_GERMAN,
};

struct mask_env {
	enum mask_encoding enc;
	enum mask_datestyle ds;
	bool dmy;             /* DateStyle's order is DMY (SQL and Postgres styles show it) */
	struct mask_mac *mac; /* the session's keyed HMAC; NULL: `hash` falls back to null */
	bool plan_only;       /* deciding, not masking (explain): take a key as present */
};

/* Fill env from the values of client_encoding and DateStyle (NULL: PostgreSQL's defaults,
 * UTF8 and "ISO, MDY"). */
void mask_env_init(struct mask_env *e, const char *client_encoding, const char *datestyle,
		   struct mask_mac *mac);

/* What happens to every value of one column in one result. */
struct mask_action {
	struct mask_strategy st; /* effective: after any fallback to null */
	struct mask_type type;
	uint8_t format; /* 0 text, 1 binary */
	/* partial on a value that is neither padded (char(n)) nor a number nor an array: an
	 * ASCII value becomes 'X' but for its last st.keep bytes (mask_value_in_copy_inline()) */
	bool x_fill;
};

/* Does st apply to values of type t at all (the table above, encodings aside)? */
bool mask_strategy_applies(const struct mask_strategy *st, const struct mask_type *t);

/*
 * Build the action for strategy st on a column of type t in format (0/1) under env. When st
 * does not apply (type, client encoding, no key for hash) the action is `null` and
 * *fell_back (optional) is set. MASK_NONE gives MASK_NONE.
 */
void mask_action_init(struct mask_action *a, const struct mask_strategy *st,
		      const struct mask_type *t, uint8_t format, const struct mask_env *env,
		      bool *fell_back);

static inline bool mask_action_is_null(const struct mask_action *a)
{
	return a->st.kind == MASK_NULL;
}

#define MASK_LEN_NULL (-1)
#define MASK_LEN_UNKNOWN (-2)

/*
 * The output length of a non-NULL value of in_len bytes: MASK_LEN_NULL when the action
 * makes it NULL, a length (the same for every value of that length), or MASK_LEN_UNKNOWN
 * when it depends on the content. NULL inputs stay NULL whatever the action.
 */
int64_t mask_out_len(const struct mask_action *a, const struct mask_env *e, uint32_t in_len);

/* ---- the transformer ----------------------------------------------------------------- */

#define MASK_XF_PEND 256         /* output waiting for room; the largest single emission */
#define MASK_XF_SMALL 1024       /* values held whole: binary numbers, dates */
#define MASK_EMAIL_DOMAIN_MAX 255 /* longest domain (RFC 1035) kept after the last '@' */

/* One character as it appears in the stream: its bytes, or a backslash and its bytes
 * inside an array literal. */
struct mask_unit {
	uint8_t raw[5];
	uint8_t rlen; /* bytes in raw */
	uint8_t clen; /* bytes of the character itself */
	uint8_t esc;  /* raw[0] is an array-literal backslash */
};

struct mask_xf {
	const struct mask_action *a;
	const struct mask_env *env;
	int64_t in_len; /* the value's length when known (DataRow, binary COPY); -1 otherwise */
	uint64_t seen;  /* input bytes consumed */
	uint8_t mode;   /* how this value is processed (mask_value.c) */
	uint8_t fam;    /* how masked characters are written */
	uint8_t step;   /* progress of finish */
	int err;        /* sticky: the first error */
	/* Output, drained in this order: pend, the flush source, rep_count copies of
	 * rep_byte, post, then val[val_pos..val_len) when val_emit. */
	uint8_t pend[MASK_XF_PEND];
	uint16_t pend_off, pend_len;
	uint8_t flush_kind;   /* 0, or which held characters are being written */
	bool flush_masked;
	uint16_t flush_pos;
	uint64_t rep_count;
	uint8_t rep_byte;
	uint8_t post[2];
	uint8_t post_len;
	bool val_emit;
	uint32_t val_pos;
	/* character assembly */
	struct mask_unit cur;
	uint8_t need;
	/* per value (or array element) */
	uint64_t held_blanks; /* bpchar: blanks not yet known to be padding */
	uint64_t push_blanks; /* blanks that turned out not to be padding, still to handle */
	struct mask_unit trigger; /* the character after those blanks, handled after them */
	bool has_trigger;
	uint64_t tail_blanks; /* date text turned characters: blanks after the replayed text */
	struct mask_unit deferred; /* a strategy's own: handled again once its flush is out */
	bool has_deferred;
	union {
		struct {
			struct mask_unit win[MASK_PARTIAL_MAX];
			uint16_t head, count;
		} partial;
		struct {
			struct mask_unit hold[MASK_EMAIL_DOMAIN_MAX + 1];
			uint16_t count;
			bool holding;
		} email;
	} h;
	/* values held whole (binary scalars, date texts); replayed as characters when a date
	 * text turns out not to be one */
	uint8_t val[MASK_XF_SMALL];
	uint32_t val_len;
	bool val_over;
	uint32_t replay_pos, replay_len;
	/* arrays */
	struct {
		uint8_t st;       /* walker state */
		uint16_t depth;
		uint8_t probe[4]; /* first bytes of an unquoted element: is it NULL? */
		uint8_t probe_len, probe_pos;
		bool close_quote; /* a closing quote waits for the element's end */
		uint8_t hdr[12 + 6 * 8]; /* binary: ndim, flags, element type, dimensions */
		uint32_t hdr_len, hdr_need;
		uint64_t elems_left;
		uint32_t elem_left; /* binary: bytes left in the current element */
		uint8_t word[4];
		uint8_t word_len;
	} arr;
};

/* Start a value. in_len: its length when known, -1 when it ends where the caller says
 * (COPY text and CSV). The action must not be MASK_NONE or null (the caller writes those). */
void mask_xf_begin(struct mask_xf *x, const struct mask_action *a, const struct mask_env *e,
		   int64_t in_len);

/*
 * Feed input in[0..n) and write output into out[0..cap). Sets *consumed and *produced. A
 * call with cap > 0 always makes progress while input remains. Returns 0, -EPROTO (a value
 * the server could not have sent: a binary integer of the wrong size, a malformed array) or
 * -EIO (the HMAC failed); an error is sticky.
 */
int mask_xf_feed(struct mask_xf *x, const uint8_t *in, size_t n, size_t *consumed,
		 uint8_t *out, size_t cap, size_t *produced) __attribute__((warn_unused_result));

/* The value ended: write the rest. *done once everything is out (call again with more room
 * until then). Returns 0, -EPROTO or -EIO. */
int mask_xf_finish(struct mask_xf *x, uint8_t *out, size_t cap, size_t *produced, bool *done)
	__attribute__((warn_unused_result));

/*
 * Run the whole action over one complete value into out[0..cap) (tests, dry runs, small
 * values). Returns the output length, or -ENOSPC when it does not fit (*need says how much
 * it has, when non-NULL), or the transformer's error. Use mask_out_len() first for NULL.
 */
int64_t mask_value_apply(const struct mask_action *a, const struct mask_env *e,
			 const uint8_t *in, size_t n, uint8_t *out, size_t cap)
	__attribute__((warn_unused_result));

/*
 * The same output as the transformer, computed in one pass when the whole value is at
 * hand and simple: redact of anything; an ASCII scalar under partial, phone, email, date
 * (text) or hash (text types, and numbers in text). Returns the output length, or -1 when the value is not one
 * of those (or cap is too small): then use the transformer. Never a different result:
 * fuzz_mask_value checks the two against each other.
 */
int64_t mask_value_fast(const struct mask_action *a, const struct mask_env *e,
			const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* Does mask_value_fast() write a's output at its input's length, characters and digits
 * rewritten where they stand (partial, phone, email, date)? Then a row's masked values can
 * be written into a copy of the row where they lie, its framing unchanged. */
static inline bool mask_fast_in_place(const struct mask_action *a)
{
	return a->st.kind == MASK_PARTIAL || a->st.kind == MASK_PHONE ||
	       a->st.kind == MASK_EMAIL || a->st.kind == MASK_DATE;
}

/*
 * mask_value_fast() for an action mask_fast_in_place() takes, into out[0..n) that already
 * holds a copy of in[0..n) (the in-place passes copy a run of messages whole first, so the
 * value is not copied a second time). true when it takes the value, its output then in
 * out[0..n); false when it declines (out's bytes then undefined).
 */
bool mask_value_in_copy(const struct mask_action *a, const struct mask_env *e, const uint8_t *in,
			uint8_t *out, size_t n) __attribute__((warn_unused_result));

/* Are p[0..n) all ASCII? Every masked value of the one passes is checked first, so sixteen
 * bytes a step where SSE2 is (every x86-64), the tail read as the last block; eight
 * elsewhere. */
static inline bool mask_all_ascii(const uint8_t *p, size_t n)
{
	uint64_t acc = 0;
	size_t i = 0;

#ifdef __SSE2__
	if (n >= 16) {
		__m128i high = _mm_loadu_si128((const __m128i *)(const void *)(p + n - 16));

		for (; n - i > 16; i += 16)
			high = _mm_or_si128(high,
					    _mm_loadu_si128((const __m128i *)(const void *)(p + i)));
		return !_mm_movemask_epi8(high);
	}
#endif

	for (; i + 8 <= n; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, 8);
		acc |= w;
	}
	for (; i < n; i++)
		acc |= p[i];
	return !(acc & UINT64_C(0x8080808080808080));
}

/* mask_value_in_copy(), the commonest action (a->x_fill) inline: the in-place row passes
 * call it for every masked value, and the call and the checks cost as much as the rewrite. */
static inline bool mask_value_in_copy_inline(const struct mask_action *a,
					     const struct mask_env *e, const uint8_t *in,
					     uint8_t *out, size_t n)
{
	if (!a->x_fill)
		return mask_value_in_copy(a, e, in, out, n);
	if (!mask_all_ascii(in, n))
		return false;
	memset(out, 'X', n - (a->st.keep < n ? a->st.keep : n));
	return true;
}

/* Is every byte mask_value_fast() writes for a either its input's byte at the same place or
 * one of 'X', 'x' and '0' (partial, phone, email)? Then its output needs escaping in a COPY
 * text row only where its input did, or where the delimiter is one of those three. */
static inline bool mask_fast_keeps_bytes(const struct mask_action *a)
{
	return a->st.kind == MASK_PARTIAL || a->st.kind == MASK_PHONE || a->st.kind == MASK_EMAIL;
}

/* The output length of one complete value by a dry run (for MASK_LEN_UNKNOWN), or an
 * error. */
int64_t mask_value_measure(const struct mask_action *a, const struct mask_env *e,
			   const uint8_t *in, size_t n) __attribute__((warn_unused_result));

#endif
