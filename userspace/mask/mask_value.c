/*
 * mask_value: type classes, actions, output lengths, and the streaming transformer with
 * its scalar strategies (see mask_value.h; arrays are in mask_value_array.c, dates in
 * mask_date.c, the numeric binary codec in mask_numeric.c).
 *
 * The transformer is a small machine with a fixed-size state. Input arrives in pieces of any
 * size; output goes into room of any size. Every strategy step writes at most
 * XF_STEP_ROOM bytes into `pend`, and longer output (held characters, padding, a whole
 * binary value) is drained from its own source, so a step never has to wait for room in the
 * middle. The driver takes a step only when pend has that room and the other sources are
 * empty: output order is therefore exactly the order in which steps produced it.
 */
#include "mask/mask_value_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

enum mask_tclass mask_tclass_of_oid(uint32_t oid)
{
	switch (oid) {
	case MASK_OID_TEXT:
	case MASK_OID_VARCHAR:
	case MASK_OID_NAME:
		return MASK_TC_TEXT;
	case MASK_OID_BPCHAR:
		return MASK_TC_BPCHAR;
	case MASK_OID_INT2:
		return MASK_TC_INT2;
	case MASK_OID_INT4:
		return MASK_TC_INT4;
	case MASK_OID_INT8:
		return MASK_TC_INT8;
	case MASK_OID_NUMERIC:
		return MASK_TC_NUMERIC;
	case MASK_OID_FLOAT4:
		return MASK_TC_FLOAT4;
	case MASK_OID_FLOAT8:
		return MASK_TC_FLOAT8;
	case MASK_OID_DATE:
		return MASK_TC_DATE;
	case MASK_OID_TIMESTAMP:
		return MASK_TC_TIMESTAMP;
	case MASK_OID_TIMESTAMPTZ:
		return MASK_TC_TIMESTAMPTZ;
	default:
		return MASK_TC_OTHER;
	}
}

const char *mask_tclass_to_str(enum mask_tclass tc)
{
	static const char *const names[MASK_TC_COUNT] = {
		[MASK_TC_OTHER] = "other",       [MASK_TC_TEXT] = "text",
		[MASK_TC_BPCHAR] = "bpchar",     [MASK_TC_INT2] = "int2",
		[MASK_TC_INT4] = "int4",         [MASK_TC_INT8] = "int8",
		[MASK_TC_NUMERIC] = "numeric",   [MASK_TC_FLOAT4] = "float4",
		[MASK_TC_FLOAT8] = "float8",     [MASK_TC_DATE] = "date",
		[MASK_TC_TIMESTAMP] = "timestamp", [MASK_TC_TIMESTAMPTZ] = "timestamptz",
	};

	return (unsigned)tc < MASK_TC_COUNT ? names[tc] : "unknown";
}

/* ---- session facts ---------------------------------------------------------------------- */

/* The names PostgreSQL reports (pg_encoding_to_char) for one-byte-per-character encodings. */
static const char *const single_byte_encodings[] = {
	"SQL_ASCII", "LATIN1",  "LATIN2",  "LATIN3",  "LATIN4",     "LATIN5",     "LATIN6",
	"LATIN7",    "LATIN8",  "LATIN9",  "LATIN10", "ISO_8859_5", "ISO_8859_6", "ISO_8859_7",
	"ISO_8859_8", "WIN1250", "WIN1251", "WIN1252", "WIN1253",   "WIN1254",    "WIN1255",
	"WIN1256",   "WIN1257", "WIN1258", "WIN866",  "WIN874",     "KOI8R",      "KOI8U",
};

static enum mask_encoding encoding_of(const char *name)
{
	if (!name || strcasecmp(name, "UTF8") == 0 || strcasecmp(name, "UNICODE") == 0)
		return MASK_ENC_UTF8;
	for (size_t i = 0; i < sizeof(single_byte_encodings) / sizeof(single_byte_encodings[0]); i++)
		if (strcasecmp(name, single_byte_encodings[i]) == 0)
			return MASK_ENC_SINGLE;
	return MASK_ENC_UNSUPPORTED;
}

void mask_env_init(struct mask_env *e, const char *client_encoding, const char *datestyle,
		   struct mask_mac *mac)
{
	const char *p = datestyle ? datestyle : "ISO, MDY";

	e->enc = encoding_of(client_encoding);
	e->ds = MASK_DS_ISO;
	e->dmy = false;
	e->mac = mac;
	e->plan_only = false;
	/* "Style, Order" as the server reports it; either part may come first in a SET, but the
	 * report is canonical. Read both words wherever they are. */
	while (*p) {
		size_t n;

		while (*p == ' ' || *p == ',')
			p++;
		n = strcspn(p, " ,");
		if (n == 3 && strncasecmp(p, "ISO", 3) == 0)
			e->ds = MASK_DS_ISO;
		else if (n == 3 && strncasecmp(p, "SQL", 3) == 0)
			e->ds = MASK_DS_SQL;
		else if (n == 8 && strncasecmp(p, "Postgres", 8) == 0)
			e->ds = MASK_DS_POSTGRES;
		else if (n == 6 && strncasecmp(p, "German", 6) == 0)
			e->ds = MASK_DS_GERMAN;
		else if (n == 3 && strncasecmp(p, "DMY", 3) == 0)
			e->dmy = true;
		else if (n == 3 && (strncasecmp(p, "MDY", 3) == 0 || strncasecmp(p, "YMD", 3) == 0))
			e->dmy = false;
		p += n;
	}
}

/* ---- which strategy applies where ---------------------------------------------------------- */

static bool tc_texty(enum mask_tclass tc)
{
	return tc == MASK_TC_TEXT || tc == MASK_TC_BPCHAR;
}

static bool tc_int(enum mask_tclass tc)
{
	return tc == MASK_TC_INT2 || tc == MASK_TC_INT4 || tc == MASK_TC_INT8;
}

static bool tc_number(enum mask_tclass tc)
{
	return tc_int(tc) || tc == MASK_TC_NUMERIC;
}

static bool tc_datetime(enum mask_tclass tc)
{
	return tc == MASK_TC_DATE || tc == MASK_TC_TIMESTAMP || tc == MASK_TC_TIMESTAMPTZ;
}

bool mask_strategy_applies(const struct mask_strategy *st, const struct mask_type *t)
{
	switch (st->kind) {
	case MASK_NONE:
	case MASK_NULL:
		return true;
	case MASK_REDACT:
		return t->array || t->tc != MASK_TC_OTHER;
	case MASK_PARTIAL:
	case MASK_HASH:
		return t->array ? tc_texty(t->tc) : (tc_texty(t->tc) || tc_number(t->tc));
	case MASK_EMAIL:
	case MASK_PHONE:
		return tc_texty(t->tc);
	case MASK_DATE:
		return !t->array && (tc_texty(t->tc) || tc_datetime(t->tc));
	default:
		return false;
	}
}

/* Needs character boundaries in the client encoding (or finds structure in an array
 * literal, which a non-ASCII-safe encoding could hide). */
static bool needs_characters(const struct mask_strategy *st, const struct mask_type *t)
{
	if (st->kind == MASK_NULL || st->kind == MASK_REDACT)
		return false;
	if (t->array)
		return true;
	if (st->kind == MASK_HASH)
		return false;
	return tc_texty(t->tc);
}

void mask_action_init(struct mask_action *a, const struct mask_strategy *st,
		      const struct mask_type *t, uint8_t format, const struct mask_env *env,
		      bool *fell_back)
{
	bool fb = false;

	a->st = *st;
	a->type = *t;
	a->format = format ? 1 : 0;
	if (st->kind != MASK_NONE && st->kind != MASK_NULL) {
		if (!mask_strategy_applies(st, t) ||
		    (env->enc == MASK_ENC_UNSUPPORTED && needs_characters(st, t)) ||
		    (st->kind == MASK_HASH && !env->mac && !env->plan_only))
			fb = true;
	}
	if (fb) {
		a->st.kind = MASK_NULL;
		a->st.keep = 0;
	}
	/* mask_value_in_copy()'s partial on unpadded text: no trimming, every masked unit 'X' */
	a->x_fill = a->st.kind == MASK_PARTIAL && !t->array && t->tc != MASK_TC_BPCHAR &&
		    !tc_number(t->tc) && (!a->format || tc_texty(t->tc));
	if (fell_back)
		*fell_back = fb;
}

/* ---- fixed values ------------------------------------------------------------------------ */

#define REDACTED_TEXT "REDACTED"
#define VARHDRSZ 4

/* varchar(n), char(n): n; 0 when there is no limit. */
static uint32_t char_limit(const struct mask_type *t)
{
	return t->typmod >= VARHDRSZ ? (uint32_t)(t->typmod - VARHDRSZ) : 0;
}

static unsigned int_width(enum mask_tclass tc)
{
	return tc == MASK_TC_INT2 ? 2 : tc == MASK_TC_INT4 ? 4 : 8;
}

/*
 * The redacted value of a (scalar or array) type: bytes into buf (at least 64), then *rep
 * copies of *rep_byte. Returns the length in buf.
 */
static size_t render_redact(const struct mask_action *a, const struct mask_env *e, uint8_t *buf,
			    uint64_t *rep, uint8_t *rep_byte)
{
	const struct mask_type *t = &a->type;
	bool bin = a->format == 1;
	size_t n = 0;

	*rep = 0;
	*rep_byte = ' ';
	if (t->array)
		return xf_array_redact(t, a->format, buf);
	switch (t->tc) {
	case MASK_TC_TEXT:
	case MASK_TC_BPCHAR: {
		uint32_t lim = char_limit(t);

		n = sizeof(REDACTED_TEXT) - 1;
		if (lim && lim < n)
			n = lim;
		memcpy(buf, REDACTED_TEXT, n);
		if (t->tc == MASK_TC_BPCHAR && lim > n)
			*rep = lim - n;
		return n;
	}
	case MASK_TC_INT2:
	case MASK_TC_INT4:
	case MASK_TC_INT8:
		if (!bin) {
			buf[0] = '0';
			return 1;
		}
		memset(buf, 0, int_width(t->tc));
		return int_width(t->tc);
	case MASK_TC_FLOAT4:
	case MASK_TC_FLOAT8:
		if (!bin) {
			buf[0] = '0';
			return 1;
		}
		n = t->tc == MASK_TC_FLOAT4 ? 4 : 8; /* +0.0 is all zero bits */
		memset(buf, 0, n);
		return n;
	case MASK_TC_NUMERIC: {
		int scale = mask_numeric_typmod_scale(t->typmod);

		if (bin) {
			memset(buf, 0, 8);
			xf_set16(buf + 6, (uint16_t)scale);
			return 8;
		}
		buf[n++] = '0';
		if (scale > 0) {
			buf[n++] = '.';
			*rep = (uint64_t)scale;
			*rep_byte = '0';
		}
		return n;
	}
	case MASK_TC_DATE:
		if (bin) {
			xf_set32(buf, (uint32_t)MASK_UNIX_EPOCH_DAYS);
			return 4;
		}
		return mask_date_redact_text(t->tc, e, (char *)buf, 64);
	case MASK_TC_TIMESTAMP:
	case MASK_TC_TIMESTAMPTZ:
		if (bin) {
			xf_set64(buf, (uint64_t)((int64_t)MASK_UNIX_EPOCH_DAYS * MASK_USECS_PER_DAY));
			return 8;
		}
		return mask_date_redact_text(t->tc, e, (char *)buf, 64);
	default:
		return 0; /* never: redact does not apply */
	}
}

/* ---- hash tokens ---------------------------------------------------------------------------- */

#define TOKEN_HEX 32 /* 128 bits of the MAC, in lower-case hex */

static uint64_t pow10u(unsigned k)
{
	uint64_t v = 1;

	while (k--)
		v *= 10;
	return v;
}

/* A k-digit number (1 <= k <= 18) with no leading zero, from 64 bits of the MAC. */
static size_t put_digits(uint8_t *buf, uint64_t bits, unsigned k)
{
	uint64_t lo = pow10u(k - 1);
	uint64_t v = lo + bits % (9 * lo);

	for (unsigned i = k; i-- > 0;) {
		buf[i] = (uint8_t)('0' + v % 10);
		v /= 10;
	}
	return k;
}

/* Decimal digits, any count up to 18, leading zeros allowed. */
static size_t put_raw_digits(uint8_t *buf, uint64_t bits, unsigned k)
{
	uint64_t v = bits % pow10u(k);

	for (unsigned i = k; i-- > 0;) {
		buf[i] = (uint8_t)('0' + v % 10);
		v /= 10;
	}
	return k;
}

/*
 * numeric's token in text: as many digits as the column's precision and scale allow (at
 * most 18 random ones before and 18 after the point), so the value is valid for the column.
 */
static size_t numeric_token_text(const struct mask_type *t, const uint8_t *mac, uint8_t *buf,
				 uint64_t *rep, uint8_t *rep_byte)
{
	uint64_t hi = xf_get64(mac), lo = xf_get64(mac + 8);
	int p = mask_numeric_typmod_precision(t->typmod);
	int s_raw, intd;
	size_t n = 0;

	*rep = 0;
	*rep_byte = '0';
	if (t->typmod < VARHDRSZ || p <= 0)
		return put_digits(buf, hi, 18);
	s_raw = ((((t->typmod - VARHDRSZ) & 0x7ff) ^ 1024) - 1024);
	if (s_raw < 0) {
		n = put_digits(buf, hi, p < 18 ? (unsigned)p : 18);
		*rep = (uint64_t)-s_raw; /* the integer digits the scale rounds away */
		return n;
	}
	intd = p - s_raw;
	if (intd > 0)
		n = put_digits(buf, hi, intd < 18 ? (unsigned)intd : 18);
	else
		buf[n++] = '0';
	if (s_raw > 0) {
		int lead = intd < 0 ? -intd : 0, rnd;

		buf[n++] = '.';
		if (lead > 64)
			lead = s_raw; /* all zeros: still valid, nothing random fits usefully */
		memset(buf + n, '0', (size_t)(lead < 64 ? lead : 0));
		n += (size_t)(lead < 64 ? lead : 0);
		rnd = s_raw - lead < 18 ? s_raw - lead : 18;
		if (lead >= 64) {
			*rep = (uint64_t)s_raw;
			return n;
		}
		n += put_raw_digits(buf + n, lo, (unsigned)rnd);
		*rep = (uint64_t)(s_raw - lead - rnd);
	}
	return n;
}

/*
 * The token of a scalar of type t (arrays: of one element) in format, from the MAC: bytes
 * into buf (at least 128), then *rep copies of *rep_byte. Returns the length in buf.
 */
static size_t render_token(const struct mask_type *t, uint8_t format, const uint8_t *mac,
			   uint8_t *buf, uint64_t *rep, uint8_t *rep_byte)
{
	static const char hex[] = "0123456789abcdef";

	*rep = 0;
	*rep_byte = ' ';
	switch (t->tc) {
	case MASK_TC_TEXT:
	case MASK_TC_BPCHAR: {
		uint32_t lim = char_limit(t), n = TOKEN_HEX;

		if (lim && lim < n)
			n = lim;
		for (uint32_t i = 0; i < n; i++)
			buf[i] = (uint8_t)hex[(mac[i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
		if (t->tc == MASK_TC_BPCHAR && lim > n)
			*rep = lim - n;
		return n;
	}
	case MASK_TC_INT2:
	case MASK_TC_INT4:
	case MASK_TC_INT8: {
		unsigned k = t->tc == MASK_TC_INT2 ? 4 : t->tc == MASK_TC_INT4 ? 9 : 18;
		uint8_t digits[20];
		uint64_t v = 0;

		put_digits(digits, xf_get64(mac), k);
		if (!format) {
			memcpy(buf, digits, k);
			return k;
		}
		for (unsigned i = 0; i < k; i++)
			v = v * 10 + (uint64_t)(digits[i] - '0');
		if (t->tc == MASK_TC_INT2)
			xf_set16(buf, (uint16_t)v);
		else if (t->tc == MASK_TC_INT4)
			xf_set32(buf, (uint32_t)v);
		else
			xf_set64(buf, v);
		return int_width(t->tc);
	}
	case MASK_TC_NUMERIC:
		return numeric_token_text(t, mac, buf, rep, rep_byte); /* binary: see small_numeric */
	default:
		return 0;
	}
}

uint32_t xf_hash_token_len(const struct mask_type *t, uint8_t format)
{
	static const uint8_t zero_mac[MASK_MAC_LEN];
	uint8_t buf[128];
	uint64_t rep;
	uint8_t rb;
	struct mask_type scalar = *t;

	scalar.array = false;
	return (uint32_t)(render_token(&scalar, format, zero_mac, buf, &rep, &rb) + rep);
}

int64_t mask_out_len(const struct mask_action *a, const struct mask_env *e, uint32_t in_len)
{
	const struct mask_type *t = &a->type;
	uint8_t buf[128];
	uint64_t rep;
	uint8_t rb;

	switch (a->st.kind) {
	case MASK_NONE:
		return in_len;
	case MASK_NULL:
		return MASK_LEN_NULL;
	case MASK_REDACT:
		return (int64_t)(render_redact(a, e, buf, &rep, &rb) + rep);
	case MASK_HASH:
		if (t->array || (a->format && t->tc == MASK_TC_NUMERIC))
			return MASK_LEN_UNKNOWN;
		return xf_hash_token_len(t, a->format);
	case MASK_PARTIAL:
		if (a->format && t->tc == MASK_TC_NUMERIC && !t->array)
			return MASK_LEN_UNKNOWN;
		return in_len;
	case MASK_EMAIL:
	case MASK_PHONE:
	case MASK_DATE:
		return in_len; /* characters and digits are rewritten in place */
	default:
		return MASK_LEN_UNKNOWN;
	}
}

/* ---- output ----------------------------------------------------------------------------- */

enum { FLUSH_NONE = 0, FLUSH_EMAIL, FLUSH_PARTIAL };

static size_t pend_room(const struct mask_xf *x)
{
	return MASK_XF_PEND - x->pend_len;
}

void xf_put(struct mask_xf *x, const void *p, size_t n)
{
	if (x->pend_off && x->pend_off + x->pend_len + n > MASK_XF_PEND) {
		memmove(x->pend, x->pend + x->pend_off, x->pend_len);
		x->pend_off = 0;
	}
	if (x->pend_off + x->pend_len + n > MASK_XF_PEND) {
		x->err = -EOVERFLOW; /* a step wrote more than it may: a bug, never silent */
		return;
	}
	memcpy(x->pend + x->pend_off + x->pend_len, p, n);
	x->pend_len = (uint16_t)(x->pend_len + n);
}

bool xf_step_ready(const struct mask_xf *x)
{
	return !x->flush_kind && !x->rep_count && !x->post_len && !x->val_emit &&
	       pend_room(x) >= XF_STEP_ROOM;
}

static const struct mask_unit *flush_unit(const struct mask_xf *x)
{
	if (x->flush_kind == FLUSH_EMAIL)
		return &x->h.email.hold[x->flush_pos];
	return &x->h.partial.win[(x->h.partial.head + x->flush_pos) % x->a->st.keep];
}

static uint16_t flush_count(const struct mask_xf *x)
{
	return x->flush_kind == FLUSH_EMAIL ? x->h.email.count : x->h.partial.count;
}

static void flush_done(struct mask_xf *x)
{
	if (x->flush_kind == FLUSH_EMAIL) {
		x->h.email.count = 0;
		x->h.email.holding = false;
	} else {
		x->h.partial.count = 0;
		x->h.partial.head = 0;
	}
	x->flush_kind = FLUSH_NONE;
	x->flush_pos = 0;
}

/* Move queued output into out[*o..cap), in order. */
static void xf_drain(struct mask_xf *x, uint8_t *out, size_t cap, size_t *o)
{
	for (;;) {
		size_t room = cap - *o, n;

		if (x->pend_len) {
			n = x->pend_len < room ? x->pend_len : room;
			memcpy(out + *o, x->pend + x->pend_off, n);
			*o += n;
			x->pend_off = (uint16_t)(x->pend_off + n);
			x->pend_len = (uint16_t)(x->pend_len - n);
			if (!x->pend_len)
				x->pend_off = 0;
			if (x->pend_len)
				return; /* out is full */
			continue;
		}
		if (!room)
			return;
		if (x->flush_kind) {
			/* Refill pend from the held characters; one unit is at most 5 bytes. */
			while (x->flush_pos < flush_count(x) && pend_room(x) >= 8) {
				xf_put_unit(x, flush_unit(x), x->flush_masked,
					    x->flush_kind == FLUSH_EMAIL ? FAM_LOWER : (enum xf_family)x->fam);
				x->flush_pos++;
			}
			if (x->flush_pos == flush_count(x))
				flush_done(x);
			continue;
		}
		if (x->rep_count) {
			n = x->rep_count < room ? (size_t)x->rep_count : room;
			memset(out + *o, x->rep_byte, n);
			*o += n;
			x->rep_count -= n;
			continue;
		}
		if (x->post_len) {
			xf_put(x, x->post, x->post_len);
			x->post_len = 0;
			continue;
		}
		if (x->val_emit) {
			n = x->val_len - x->val_pos;
			if (n > room)
				n = room;
			memcpy(out + *o, x->val + x->val_pos, n);
			*o += n;
			x->val_pos += (uint32_t)n;
			if (x->val_pos == x->val_len)
				x->val_emit = false;
			continue;
		}
		return;
	}
}

static bool xf_drained(const struct mask_xf *x)
{
	return !x->pend_len && !x->flush_kind && !x->rep_count && !x->post_len && !x->val_emit;
}

/* ---- characters ------------------------------------------------------------------------ */

uint8_t xf_char_len(enum mask_encoding enc, uint8_t b)
{
	if (enc != MASK_ENC_UTF8 || b < 0xC2)
		return 1; /* ASCII, a one-byte encoding, or not a valid UTF-8 lead byte */
	if (b < 0xE0)
		return 2;
	if (b < 0xF0)
		return 3;
	if (b < 0xF5)
		return 4;
	return 1;
}

bool xf_unit_is_blank(const struct mask_unit *u)
{
	return !u->esc && u->rlen == 1 && u->raw[0] == ' ';
}

/* An X of each UTF-8 length: X, U+00D7, U+FF38, U+1D417; same bytes, same characters. */
static const uint8_t x_utf8[5][4] = {
	{0}, {'X'}, {0xC3, 0x97}, {0xEF, 0xBC, 0xB8}, {0xF0, 0x9D, 0x90, 0x97},
};

static bool ascii_letter(uint8_t c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

void xf_put_unit(struct mask_xf *x, const struct mask_unit *u, bool masked, enum xf_family fam)
{
	uint8_t b[5];
	size_t n = 0;
	uint8_t c = u->raw[u->esc];

	if (!masked) {
		xf_put(x, u->raw, u->rlen);
		return;
	}
	if (u->clen == 1 && (fam == FAM_DIGIT || fam == FAM_PHONE)) {
		if (c >= '0' && c <= '9')
			c = '0';
		else if (fam == FAM_PHONE && ascii_letter(c))
			c = 'X';
		else if (fam == FAM_DIGIT || c < 0x80) {
			xf_put(x, u->raw, u->rlen); /* structure: signs, points, punctuation */
			return;
		} else {
			c = 'X';
		}
		if (u->esc)
			b[n++] = '\\';
		b[n++] = c;
		xf_put(x, b, n);
		return;
	}
	if (fam == FAM_DIGIT) {
		xf_put(x, u->raw, u->rlen);
		return;
	}
	if (u->esc)
		b[n++] = '\\';
	if (u->clen == 1) {
		b[n++] = fam == FAM_LOWER ? 'x' : 'X';
	} else {
		memcpy(b + n, x_utf8[u->clen], u->clen);
		n += u->clen;
	}
	xf_put(x, b, n);
}

/*
 * Add byte b to the character being assembled (esc: b follows an array-literal backslash,
 * which is part of the character's raw form). Returns 0: taken, character not complete;
 * 1: taken, x->cur complete; 2: not taken, x->cur complete without it (b cannot continue
 * it: give b again).
 */
int xf_unit_add(struct mask_xf *x, uint8_t b, bool esc)
{
	struct mask_unit *u = &x->cur;

	if (u->rlen == 0) {
		u->esc = esc ? 1 : 0;
		if (esc)
			u->raw[u->rlen++] = '\\';
		u->raw[u->rlen++] = b;
		u->clen = 1;
		x->need = (uint8_t)(xf_char_len(x->env->enc, b) - 1);
		return x->need ? 0 : 1;
	}
	if (esc || (b & 0xC0) != 0x80)
		return 2; /* an invalid sequence ends early: its bytes are one character each */
	u->raw[u->rlen++] = b;
	u->clen++;
	return --x->need ? 0 : 1;
}

/* ---- character strategies: partial, email, phone (and date's fallback) -------------------- */

static void partial_push(struct mask_xf *x, const struct mask_unit *u)
{
	uint16_t keep = x->a->st.keep;

	if (x->h.partial.count == keep) {
		xf_put_unit(x, &x->h.partial.win[x->h.partial.head], true, (enum xf_family)x->fam);
		x->h.partial.win[x->h.partial.head] = *u;
		x->h.partial.head = (uint16_t)((x->h.partial.head + 1) % keep);
		return;
	}
	x->h.partial.win[(x->h.partial.head + x->h.partial.count) % keep] = *u;
	x->h.partial.count++;
}

static void flush_start(struct mask_xf *x, int kind, bool masked)
{
	x->flush_kind = (uint8_t)kind;
	x->flush_masked = masked;
	x->flush_pos = 0;
}

/* Everything before the last '@' is the local part; hold what follows the latest '@' until
 * it is known to be the domain (the value ends) or not (another '@', or too long). */
static void email_step(struct mask_xf *x, const struct mask_unit *u)
{
	bool at = u->clen == 1 && u->raw[u->esc] == '@';

	if (x->h.email.holding) {
		if (!at && x->h.email.count <= MASK_EMAIL_DOMAIN_MAX) {
			x->h.email.hold[x->h.email.count++] = *u;
			return;
		}
		flush_start(x, FLUSH_EMAIL, true); /* it was local part after all */
		x->deferred = *u;
		x->has_deferred = true;
		return;
	}
	if (at) {
		x->h.email.holding = true;
		x->h.email.count = 0;
		x->h.email.hold[x->h.email.count++] = *u;
		return;
	}
	xf_put_unit(x, u, true, FAM_LOWER);
}

static void unit_step(struct mask_xf *x, const struct mask_unit *u)
{
	switch (x->a->st.kind) {
	case MASK_PARTIAL:
		partial_push(x, u);
		break;
	case MASK_EMAIL:
		email_step(x, u);
		break;
	default: /* phone, and date text that is not a date */
		xf_put_unit(x, u, true, (enum xf_family)x->fam);
		break;
	}
}

void xf_units_begin(struct mask_xf *x)
{
	memset(&x->cur, 0, sizeof(x->cur));
	x->need = 0;
	x->held_blanks = 0;
	x->push_blanks = 0;
	x->has_deferred = false;
	x->has_trigger = false;
	x->h.partial.head = x->h.partial.count = 0;
	x->h.email.count = 0;
	x->h.email.holding = false;
}

void xf_units_unit(struct mask_xf *x, const struct mask_unit *u)
{
	/* char(n): blanks at the end are padding, kept as they are and not counted; blanks
	 * followed by more text are characters like any other. */
	if (x->a->type.tc == MASK_TC_BPCHAR && xf_unit_is_blank(u)) {
		x->held_blanks++;
		return;
	}
	if (x->held_blanks) {
		x->push_blanks = x->held_blanks;
		x->held_blanks = 0;
		x->trigger = *u;
		x->has_trigger = true;
		return;
	}
	unit_step(x, u);
}

/*
 * Pending work between characters, oldest first: a character a strategy put back while
 * its held characters go out (e-mail), blanks that turned out not to be padding (char(n)),
 * then the character that came after those blanks.
 */
static bool units_pending(struct mask_xf *x, bool *worked)
{
	static const struct mask_unit blank = {.raw = {' '}, .rlen = 1, .clen = 1};

	while (xf_step_ready(x)) {
		if (x->has_deferred) {
			struct mask_unit u = x->deferred;

			x->has_deferred = false;
			unit_step(x, &u);
			*worked = true;
			continue;
		}
		if (x->push_blanks) {
			unit_step(x, &blank);
			x->push_blanks--;
			*worked = true;
			continue;
		}
		if (x->has_trigger) {
			struct mask_unit u = x->trigger;

			x->has_trigger = false;
			unit_step(x, &u);
			*worked = true;
			continue;
		}
		return true; /* nothing pending, and room for a step */
	}
	return false;
}

/* Feed character bytes; returns how many were taken. */
static size_t units_feed(struct mask_xf *x, const uint8_t *p, size_t n, bool *worked)
{
	size_t i = 0;

	while (units_pending(x, worked) && i < n) {
		int r = xf_unit_add(x, p[i], false);

		if (r != 2)
			i++;
		*worked = true;
		if (r == 0)
			continue;
		{
			struct mask_unit u = x->cur;

			x->cur.rlen = 0;
			xf_units_unit(x, &u);
		}
	}
	return i;
}

size_t xf_units_bytes(struct mask_xf *x, const uint8_t *p, size_t n)
{
	bool worked = false;

	return units_feed(x, p, n, &worked);
}

bool xf_units_ready(struct mask_xf *x)
{
	bool worked = false;

	return units_pending(x, &worked);
}

/* Ready to end: a character cut short by the end of the value counts as one. */
static bool units_settle(struct mask_xf *x, bool *worked)
{
	if (!units_pending(x, worked))
		return false;
	if (x->cur.rlen) {
		struct mask_unit u = x->cur;

		x->cur.rlen = 0;
		xf_units_unit(x, &u);
		*worked = true;
		return units_pending(x, worked);
	}
	return true;
}

void xf_units_cut(struct mask_xf *x)
{
	if (x->a->st.kind == MASK_PARTIAL && x->h.partial.count)
		flush_start(x, FLUSH_PARTIAL, true);
	else if (x->a->st.kind == MASK_EMAIL && x->h.email.holding)
		flush_start(x, FLUSH_EMAIL, true);
	if (x->held_blanks) {
		x->rep_byte = 'X';
		x->rep_count = x->held_blanks;
		x->held_blanks = 0;
	}
}

bool xf_units_settle(struct mask_xf *x)
{
	bool worked = false;

	return units_settle(x, &worked);
}

void xf_units_end(struct mask_xf *x)
{
	if (x->a->st.kind == MASK_PARTIAL && x->h.partial.count)
		flush_start(x, FLUSH_PARTIAL, false);
	else if (x->a->st.kind == MASK_EMAIL && x->h.email.holding)
		flush_start(x, FLUSH_EMAIL, false); /* '@' and the domain, as they are */
	if (x->held_blanks) {
		x->rep_byte = ' ';
		x->rep_count = x->held_blanks;
		x->held_blanks = 0;
	}
}

/* ---- hash ------------------------------------------------------------------------------ */

int xf_hash_begin(struct mask_xf *x)
{
	x->held_blanks = 0;
	if (mask_mac_begin(x->env->mac) < 0)
		return x->err = -EIO;
	return 0;
}

static int mac_blanks(struct mask_xf *x, uint64_t n)
{
	static const uint8_t blanks[64] = "                                                                ";

	while (n) {
		size_t k = n < sizeof(blanks) ? (size_t)n : sizeof(blanks);

		if (mask_mac_update(x->env->mac, blanks, k) < 0)
			return -EIO;
		n -= k;
	}
	return 0;
}

/*
 * What is hashed is the value as equality sees it, so equal values get equal tokens across
 * columns: char(n) without its trailing blanks (bpchar equality ignores them), citext with
 * ASCII letters folded to lower case.
 */
int xf_hash_bytes(struct mask_xf *x, const uint8_t *p, size_t n)
{
	const struct mask_type *t = &x->a->type;
	int rc = 0;

	if (t->tc == MASK_TC_BPCHAR) {
		size_t last = n;

		while (last > 0 && p[last - 1] == ' ')
			last--;
		if (last == 0) {
			x->held_blanks += n;
			return 0;
		}
		if (mac_blanks(x, x->held_blanks) < 0)
			return x->err = -EIO;
		x->held_blanks = n - last;
		n = last;
	}
	if (t->citext) {
		uint8_t low[256];

		while (n && !rc) {
			size_t k = n < sizeof(low) ? n : sizeof(low);

			for (size_t i = 0; i < k; i++)
				low[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (uint8_t)(p[i] + 32) : p[i];
			rc = mask_mac_update(x->env->mac, low, k);
			p += k;
			n -= k;
		}
	} else {
		rc = mask_mac_update(x->env->mac, p, n);
	}
	if (rc < 0)
		return x->err = -EIO;
	return 0;
}

int xf_hash_end(struct mask_xf *x, bool quote_if_blank)
{
	uint8_t mac[MASK_MAC_LEN], buf[128];
	uint64_t rep;
	uint8_t rb;
	size_t n;
	struct mask_type scalar = x->a->type;

	if (mask_mac_final(x->env->mac, mac) < 0)
		return x->err = -EIO;
	scalar.array = false;
	n = render_token(&scalar, x->a->format, mac, buf, &rep, &rb);
	if (quote_if_blank && rep && rb == ' ') {
		xf_put(x, "\"", 1);
		x->post[0] = '"';
		x->post_len = 1;
	}
	xf_put(x, buf, n);
	x->rep_count = rep;
	x->rep_byte = rb;
	return 0;
}

/* ---- binary values held whole --------------------------------------------------------------- */

static void small_bytes(struct mask_xf *x, const uint8_t *p, size_t n)
{
	size_t room = MASK_XF_SMALL - x->val_len;

	if (n > room) {
		x->val_over = true;
		n = room;
	}
	memcpy(x->val + x->val_len, p, n);
	x->val_len += (uint32_t)n;
}

/* Keep the last `keep` characters of an ASCII number, digits before them become 0. */
static void zero_digits_before_last(char *s, size_t n, unsigned keep)
{
	for (size_t i = 0; i + keep < n; i++)
		if (s[i] >= '0' && s[i] <= '9')
			s[i] = '0';
}

static int mac_of(struct mask_xf *x, const void *p, size_t n, uint8_t mac[MASK_MAC_LEN])
{
	if (mask_mac_begin(x->env->mac) < 0 || mask_mac_update(x->env->mac, p, n) < 0 ||
	    mask_mac_final(x->env->mac, mac) < 0)
		return -EIO;
	return 0;
}

static int small_int(struct mask_xf *x)
{
	enum mask_tclass tc = x->a->type.tc;
	unsigned w = int_width(tc);
	char txt[24];
	int64_t v;
	int n;

	if (x->val_over || x->val_len != w)
		return -EPROTO;
	v = tc == MASK_TC_INT2 ? (int16_t)xf_get16(x->val)
	    : tc == MASK_TC_INT4 ? (int32_t)xf_get32(x->val) : (int64_t)xf_get64(x->val);
	n = snprintf(txt, sizeof(txt), "%lld", (long long)v); /* int2/4/8out's text */
	if (x->a->st.kind == MASK_PARTIAL) {
		zero_digits_before_last(txt, (size_t)n, x->a->st.keep);
		v = strtoll(txt, NULL, 10); /* |v| only shrinks: it fits the type */
		if (tc == MASK_TC_INT2)
			xf_set16(x->val, (uint16_t)(int16_t)v);
		else if (tc == MASK_TC_INT4)
			xf_set32(x->val, (uint32_t)(int32_t)v);
		else
			xf_set64(x->val, (uint64_t)v);
		return 0;
	}
	{
		uint8_t mac[MASK_MAC_LEN];
		uint64_t rep;
		uint8_t rb;

		if (mac_of(x, txt, (size_t)n, mac) < 0)
			return -EIO;
		render_token(&x->a->type, 1, mac, x->val, &rep, &rb);
	}
	return 0;
}

static void numeric_redact_bin(struct mask_xf *x)
{
	memset(x->val, 0, 8);
	xf_set16(x->val + 6, (uint16_t)mask_numeric_typmod_scale(x->a->type.typmod));
	x->val_len = 8;
}

/* Binary numeric through numeric_out's text, so binary and text clients agree. A value too
 * long to hold (far beyond any identifier or amount) gets the redacted value instead. */
static int small_numeric(struct mask_xf *x)
{
	char txt[4096];
	int n, len;

	if (x->val_over) {
		numeric_redact_bin(x);
		return 0;
	}
	n = mask_numeric_to_text(x->val, x->val_len, txt, sizeof(txt));
	if (n == -EPROTO)
		return -EPROTO;
	if (n < 0) {
		numeric_redact_bin(x);
		return 0;
	}
	if (x->a->st.kind == MASK_HASH) {
		uint8_t mac[MASK_MAC_LEN];
		uint64_t rep;
		uint8_t rb;
		size_t k;

		if (mac_of(x, txt, (size_t)n, mac) < 0)
			return -EIO;
		k = numeric_token_text(&x->a->type, mac, (uint8_t *)txt, &rep, &rb);
		if (k + rep > sizeof(txt)) {
			numeric_redact_bin(x);
			return 0;
		}
		memset(txt + k, rb, (size_t)rep);
		n = (int)(k + rep);
	} else if (!(n == 3 && !memcmp(txt, "NaN", 3)) && !(n == 8 && !memcmp(txt, "Infinity", 8)) &&
		   !(n == 9 && !memcmp(txt, "-Infinity", 9))) {
		/* (txt holds n bytes and no NUL: compare by length) */
		zero_digits_before_last(txt, (size_t)n, x->a->st.keep);
	}
	len = mask_numeric_from_text(txt, (size_t)n, x->val, MASK_XF_SMALL);
	if (len < 0)
		numeric_redact_bin(x);
	else
		x->val_len = (uint32_t)len;
	return 0;
}

static int small_finish(struct mask_xf *x)
{
	enum mask_tclass tc = x->a->type.tc;
	int rc = 0;

	if (tc_int(tc)) {
		rc = small_int(x);
		x->val_len = int_width(tc);
	} else if (tc == MASK_TC_NUMERIC) {
		rc = small_numeric(x);
	} else if (tc == MASK_TC_DATE) {
		if (x->val_over || x->val_len != 4)
			return -EPROTO;
		xf_set32(x->val, (uint32_t)mask_date_bin_year_start((int32_t)xf_get32(x->val)));
	} else if (tc == MASK_TC_TIMESTAMP || tc == MASK_TC_TIMESTAMPTZ) {
		if (x->val_over || x->val_len != 8)
			return -EPROTO;
		xf_set64(x->val, (uint64_t)mask_ts_bin_year_start((int64_t)xf_get64(x->val)));
	} else {
		return -EPROTO;
	}
	if (rc < 0)
		return rc;
	x->val_pos = 0;
	x->val_emit = true;
	return 0;
}

/* ---- date text ----------------------------------------------------------------------------- */

/* Hold the text (char(n): trailing blanks counted apart); past MASK_DATE_TEXT_MAX it cannot
 * be a date, and it is masked character by character instead. */
static void date_to_units(struct mask_xf *x)
{
	x->mode = XF_UNITS;
	x->fam = FAM_PHONE;
	x->replay_pos = 0;
	x->replay_len = x->val_len;
}

static size_t date_bytes(struct mask_xf *x, const uint8_t *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (x->a->type.tc == MASK_TC_BPCHAR && p[i] == ' ' && x->val_len) {
			x->held_blanks++;
			continue;
		}
		if (x->val_len + x->held_blanks + 1 > MASK_DATE_TEXT_MAX) {
			/* Blanks held so far come after the text and before p[i]. */
			x->tail_blanks = x->held_blanks;
			x->held_blanks = 0;
			date_to_units(x);
			return i; /* p[i] on is fed as characters, after the replay */
		}
		if (x->held_blanks) {
			memset(x->val + x->val_len, ' ', (size_t)x->held_blanks);
			x->val_len += (uint32_t)x->held_blanks;
			x->held_blanks = 0;
		}
		x->val[x->val_len++] = p[i];
	}
	return i;
}

/* After a replayed date text, the blanks that followed it. */
static void units_untail(struct mask_xf *x)
{
	x->held_blanks += x->tail_blanks;
	x->tail_blanks = 0;
}

/* ---- whole ASCII values, without the character machinery ---------------------------------- */

static size_t trim_blanks(const struct mask_type *t, const uint8_t *p, size_t n)
{
	if (t->tc != MASK_TC_BPCHAR)
		return n;
	while (n && p[n - 1] == ' ')
		n--;
	return n;
}

static uint8_t fast_unit(uint8_t c, enum xf_family fam)
{
	bool digit = c >= '0' && c <= '9';

	switch (fam) {
	case FAM_LOWER:
		return 'x';
	case FAM_DIGIT:
		return digit ? '0' : c;
	case FAM_PHONE:
		return digit ? '0' : ascii_letter(c) ? 'X' : c;
	default:
		return 'X';
	}
}

/* Everything is read from in, the bytes just received: out may have left the cache since the
 * copy was made. Only the bytes the mask changes are written. */
bool mask_value_in_copy(const struct mask_action *a, const struct mask_env *e, const uint8_t *in,
			uint8_t *out, size_t n)
{
	const struct mask_type *t = &a->type;
	size_t m, keep, at = SIZE_MAX, end;

	if (t->array || (a->format && !tc_texty(t->tc)) || !mask_all_ascii(in, n))
		return false;
	switch (a->st.kind) {
	case MASK_PARTIAL: {
		enum xf_family fam = tc_number(t->tc) ? FAM_DIGIT : FAM_UPPER;

		m = trim_blanks(t, in, n); /* char(n) padding is not counted, and stays */
		keep = a->st.keep < m ? a->st.keep : m;
		if (fam == FAM_UPPER)
			memset(out, 'X', m - keep); /* what fast_unit() makes of every byte */
		else
			for (size_t i = 0; i < m - keep; i++)
				out[i] = fast_unit(in[i], fam);
		return true;
	}
	case MASK_PHONE:
		for (size_t i = 0; i < n; i++)
			out[i] = fast_unit(in[i], FAM_PHONE);
		return true;
	case MASK_EMAIL:
		m = trim_blanks(t, in, n);
		for (size_t i = m; i-- > 0;)
			if (in[i] == '@') {
				at = i;
				break;
			}
		/* the '@' and what follows are kept when they could be a domain (the streaming
		 * path holds at most MASK_EMAIL_DOMAIN_MAX characters after the '@') */
		end = (at != SIZE_MAX && m - at <= MASK_EMAIL_DOMAIN_MAX + 1) ? at : m;
		memset(out, 'x', end);
		return true;
	case MASK_DATE: /* rare: rewritten on the copy, which holds the value */
		m = trim_blanks(t, in, n);
		return !a->format && m <= MASK_DATE_TEXT_MAX &&
		       mask_date_text_rewrite(out, m, t->tc, e);
	default:
		return false;
	}
}

int64_t mask_value_fast(const struct mask_action *a, const struct mask_env *e, const uint8_t *in,
			size_t n, uint8_t *out, size_t cap)
{
	const struct mask_type *t = &a->type;
	uint8_t mac[MASK_MAC_LEN], buf[128];
	uint64_t rep;
	uint8_t rb;
	size_t k, m;

	if (a->st.kind == MASK_REDACT) {
		k = render_redact(a, e, buf, &rep, &rb);
		if (cap < k + rep)
			return -1;
		memcpy(out, buf, k);
		memset(out + k, rb, (size_t)rep);
		return (int64_t)(k + rep);
	}
	if (mask_fast_in_place(a)) {
		if (cap < n)
			return -1;
		memcpy(out, in, n);
		return mask_value_in_copy(a, e, in, out, n) ? (int64_t)n : -1;
	}
	if (a->st.kind != MASK_HASH || t->array || !mask_all_ascii(in, n) ||
	    (!tc_texty(t->tc) && (a->format || !tc_number(t->tc))))
		return -1;
	m = trim_blanks(t, in, n);
	if (mask_mac_begin(e->mac) < 0)
		return -1;
	if (t->citext) {
		uint8_t low[256];

		for (size_t i = 0; i < m; i += sizeof(low)) {
			size_t c = m - i < sizeof(low) ? m - i : sizeof(low);

			for (size_t j = 0; j < c; j++)
				low[j] = (in[i + j] >= 'A' && in[i + j] <= 'Z') ? (uint8_t)(in[i + j] + 32)
									     : in[i + j];
			if (mask_mac_update(e->mac, low, c) < 0)
				return -1;
		}
	} else if (mask_mac_update(e->mac, in, m) < 0) {
		return -1;
	}
	if (mask_mac_final(e->mac, mac) < 0)
		return -1;
	k = render_token(t, a->format, mac, buf, &rep, &rb);
	if (cap < k + rep)
		return -1;
	memcpy(out, buf, k);
	memset(out + k, rb, (size_t)rep);
	return (int64_t)(k + rep);
}

/* ---- the driver ------------------------------------------------------------------------------ */

void mask_xf_begin(struct mask_xf *x, const struct mask_action *a, const struct mask_env *e,
		   int64_t in_len)
{
	const struct mask_type *t = &a->type;
	bool bin = a->format == 1;

	x->a = a;
	x->env = e;
	x->in_len = in_len;
	x->seen = 0;
	x->step = 0;
	x->err = 0;
	x->pend_off = x->pend_len = 0;
	x->flush_kind = FLUSH_NONE;
	x->flush_pos = 0;
	x->rep_count = 0;
	x->post_len = 0;
	x->val_emit = false;
	x->val_len = x->val_pos = 0;
	x->val_over = false;
	x->replay_pos = x->replay_len = 0;
	x->tail_blanks = 0;
	xf_units_begin(x);
	x->fam = a->st.kind == MASK_EMAIL ? FAM_LOWER
		 : a->st.kind == MASK_PARTIAL ? (tc_number(t->tc) ? FAM_DIGIT : FAM_UPPER)
					      : FAM_PHONE;
	switch (a->st.kind) {
	case MASK_REDACT:
		x->mode = XF_FIXED;
		return;
	case MASK_HASH:
		if (t->array)
			break;
		if (bin && tc_number(t->tc)) {
			x->mode = XF_SMALL;
			return;
		}
		x->mode = XF_HASH;
		(void)xf_hash_begin(x);
		return;
	case MASK_PARTIAL:
		if (t->array)
			break;
		x->mode = (bin && tc_number(t->tc)) ? XF_SMALL : XF_UNITS;
		return;
	case MASK_EMAIL:
	case MASK_PHONE:
		if (t->array)
			break;
		x->mode = XF_UNITS;
		return;
	case MASK_DATE:
		x->mode = (bin && tc_datetime(t->tc)) ? XF_SMALL : XF_DATE_TEXT;
		return;
	default:
		x->mode = XF_FIXED; /* none and null never get here: the caller writes them */
		x->err = -EINVAL;
		return;
	}
	x->mode = bin ? XF_ARRAY_BIN : XF_ARRAY_TEXT;
	xf_array_begin(x);
}

/* One round of work on in[0..n): returns the bytes taken; *worked when anything happened. */
static size_t xf_work(struct mask_xf *x, const uint8_t *in, size_t n, bool *worked)
{
	size_t took = 0;

	switch (x->mode) {
	case XF_FIXED:
		took = n;
		break;
	case XF_HASH:
		if (n)
			(void)xf_hash_bytes(x, in, n);
		took = n;
		break;
	case XF_SMALL:
		small_bytes(x, in, n);
		took = n;
		break;
	case XF_DATE_TEXT:
		took = date_bytes(x, in, n);
		if (took < n)
			*worked = true; /* switched to characters */
		break;
	case XF_UNITS:
		if (x->replay_pos < x->replay_len) {
			size_t r = units_feed(x, x->val + x->replay_pos, x->replay_len - x->replay_pos,
					      worked);

			x->replay_pos += (uint32_t)r;
			if (x->replay_pos < x->replay_len)
				return 0;
		}
		units_untail(x);
		took = units_feed(x, in, n, worked);
		break;
	case XF_ARRAY_TEXT:
		took = xf_array_text_feed(x, in, n, worked);
		break;
	case XF_ARRAY_BIN:
		took = xf_array_bin_feed(x, in, n, worked);
		break;
	}
	if (took)
		*worked = true;
	return took;
}

int mask_xf_feed(struct mask_xf *x, const uint8_t *in, size_t n, size_t *consumed,
		 uint8_t *out, size_t cap, size_t *produced)
{
	size_t i = 0, o = 0;

	if (!in)
		in = (const uint8_t *)""; /* no input: never a NULL source for memcpy */

	*consumed = *produced = 0;
	while (!x->err) {
		size_t o0;
		bool worked = false;

		xf_drain(x, out, cap, &o);
		o0 = o;
		i += xf_work(x, in + i, n - i, &worked);
		if (x->err)
			break;
		xf_drain(x, out, cap, &o);
		if (!worked && o == o0)
			break;
		if (i == n && !worked)
			break;
	}
	x->seen += i;
	*consumed = i;
	*produced = o;
	return x->err;
}

enum { FIN_WORK = 0, FIN_DONE };

/* One step of finishing: false when it must wait for room. */
static bool xf_finish_step(struct mask_xf *x)
{
	bool worked = false;
	uint8_t buf[128];
	size_t n;

	switch (x->mode) {
	case XF_FIXED:
		n = render_redact(x->a, x->env, buf, &x->rep_count, &x->rep_byte);
		xf_put(x, buf, n);
		x->step = FIN_DONE;
		return true;
	case XF_HASH:
		if (x->a->type.tc == MASK_TC_BPCHAR)
			x->held_blanks = 0; /* trailing blanks: padding, not hashed */
		(void)xf_hash_end(x, false);
		x->step = FIN_DONE;
		return true;
	case XF_SMALL: {
		int rc = small_finish(x);

		if (rc < 0)
			x->err = rc;
		x->step = FIN_DONE;
		return true;
	}
	case XF_DATE_TEXT: {
		size_t len = x->val_len;

		if (mask_date_text_rewrite(x->val, len, x->a->type.tc, x->env)) {
			xf_put(x, x->val, len);
			x->rep_byte = ' ';
			x->rep_count = x->held_blanks;
			x->held_blanks = 0;
			x->step = FIN_DONE;
		} else {
			date_to_units(x); /* not a date: masked character by character */
			x->tail_blanks = x->held_blanks;
			x->held_blanks = 0;
		}
		return true;
	}
	case XF_UNITS:
		if (x->replay_pos < x->replay_len) {
			size_t r = units_feed(x, x->val + x->replay_pos, x->replay_len - x->replay_pos,
					      &worked);

			x->replay_pos += (uint32_t)r;
			return worked;
		}
		units_untail(x);
		if (!units_settle(x, &worked))
			return worked;
		xf_units_end(x);
		x->step = FIN_DONE;
		return true;
	case XF_ARRAY_TEXT: {
		int rc = xf_array_text_finish(x);

		if (rc == -EAGAIN)
			return false;
		if (rc < 0)
			x->err = rc;
		x->step = FIN_DONE;
		return true;
	}
	case XF_ARRAY_BIN: {
		int rc = xf_array_bin_finish(x);

		if (rc == -EAGAIN)
			return false;
		if (rc < 0)
			x->err = rc;
		x->step = FIN_DONE;
		return true;
	}
	}
	x->err = -EINVAL;
	return false;
}

int mask_xf_finish(struct mask_xf *x, uint8_t *out, size_t cap, size_t *produced, bool *done)
{
	size_t o = 0;

	*done = false;
	while (!x->err) {
		size_t o0;

		xf_drain(x, out, cap, &o);
		if (x->step == FIN_DONE) {
			*done = xf_drained(x);
			break;
		}
		o0 = o;
		if (!xf_step_ready(x) || (!xf_finish_step(x) && o == o0)) {
			xf_drain(x, out, cap, &o);
			if (o == o0)
				break;
		}
	}
	*produced = o;
	return x->err;
}

int64_t mask_value_apply(const struct mask_action *a, const struct mask_env *e,
			 const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	struct mask_xf *x = malloc(sizeof(*x));
	size_t i = 0, o = 0;
	int64_t ret;
	bool done = false;
	int rc = 0;

	if (!x)
		return -ENOMEM;
	mask_xf_begin(x, a, e, (int64_t)n);
	while (i < n && !rc) {
		size_t c, p;

		rc = mask_xf_feed(x, in + i, n - i, &c, out + o, cap - o, &p);
		i += c;
		o += p;
		if (!c && !p && !rc) {
			rc = -ENOSPC;
			break;
		}
	}
	while (!done && !rc) {
		size_t p;

		rc = mask_xf_finish(x, out + o, cap - o, &p, &done);
		o += p;
		if (!done && !p && !rc)
			rc = -ENOSPC;
	}
	ret = rc < 0 ? rc : (int64_t)o;
	free(x);
	return ret;
}

int64_t mask_value_measure(const struct mask_action *a, const struct mask_env *e,
			   const uint8_t *in, size_t n)
{
	struct mask_xf *x = malloc(sizeof(*x));
	uint8_t scratch[512];
	size_t i = 0;
	int64_t total = 0;
	bool done = false;
	int rc = 0;

	if (!x)
		return -ENOMEM;
	mask_xf_begin(x, a, e, (int64_t)n);
	while (i < n && !rc) {
		size_t c, p;

		rc = mask_xf_feed(x, in + i, n - i, &c, scratch, sizeof(scratch), &p);
		i += c;
		total += (int64_t)p;
	}
	while (!done && !rc) {
		size_t p;

		rc = mask_xf_finish(x, scratch, sizeof(scratch), &p, &done);
		total += (int64_t)p;
	}
	free(x);
	return rc < 0 ? rc : total;
}
