/*
 * mask_value_array: strategies on each element of an array, in the text literal
 * ({a,"b c",NULL}, nested braces, "[0:1]=" bounds) and in the binary form (header,
 * dimensions, length-prefixed elements).
 *
 * In place (partial, email, phone): each character of an element is masked by a character
 * of the same byte length, and an escaped one ("\"" in a quoted element) by an escaped
 * masking character ("\X"), so the literal keeps its length, its quoting and its validity;
 * NULL elements stay NULL. With hash, each element becomes its token (quoted only when it
 * holds blanks, char(n) padding), so the length depends on the content (mask_out_len()
 * says MASK_LEN_UNKNOWN). Redact gives an empty array, null a NULL.
 */
#include "mask/mask_value_int.h"

#include <strings.h>

enum arr_state {
	AS_START = 0,    /* before '{' or a "[lb:ub]=" decoration */
	AS_DIMS,         /* inside the decoration, up to '=' */
	AS_OPEN_BRACE,   /* after the decoration: '{' */
	AS_OPEN,         /* after '{' or ',': an element, '{' or '}' */
	AS_UNQ_PROBE,    /* the first bytes of an unquoted element: is it NULL? */
	AS_UNQ_REPLAY,   /* it is not: its first bytes go through the strategy */
	AS_UNQ,          /* unquoted element content */
	AS_UNQ_ESC,      /* after a backslash in an unquoted element */
	AS_Q,            /* quoted element content */
	AS_Q_ESC,        /* after a backslash in a quoted element */
	AS_Q_CLOSED,     /* in place: a closing quote, written once it is known to end the
			  * element (the characters a strategy holds come before it) */
	AS_ELEM_END,     /* end the element, then the structure byte in probe[0] */
	AS_AFTER,        /* after an element or '}': ',' or '}' */
	AS_END,          /* after the outermost '}' */
	/* binary */
	AS_BHDR,
	AS_BWORD,
	AS_BELEM,
	AS_BELEM_END,
};

#define ARRAY_MAXDIM 6 /* PostgreSQL's MAXDIM */
#define ARRAY_DECOR_MAX 64
#define ARRAY_MAX_ELEMS (UINT64_C(1) << 28)

static bool hashing(const struct mask_xf *x)
{
	return x->a->st.kind == MASK_HASH;
}

size_t xf_array_redact(const struct mask_type *t, uint8_t format, uint8_t *out)
{
	if (!format) {
		memcpy(out, "{}", 2);
		return 2;
	}
	xf_set32(out, 0);            /* ndim */
	xf_set32(out + 4, 0);        /* no NULLs */
	xf_set32(out + 8, t->elem_oid);
	return 12;
}

void xf_array_begin(struct mask_xf *x)
{
	memset(&x->arr, 0, sizeof(x->arr));
	x->arr.st = x->a->format ? AS_BHDR : AS_START;
	x->arr.hdr_need = 12;
}

static void elem_begin(struct mask_xf *x)
{
	if (hashing(x))
		(void)xf_hash_begin(x);
	else
		xf_units_begin(x);
}

/* One byte of an element's content (esc: it followed a backslash). Returns false when the
 * byte was not taken: it ended the character before it, which went to the strategy first
 * (give the byte again once the strategy is ready). */
static bool elem_byte(struct mask_xf *x, uint8_t b, bool esc)
{
	int r;

	if (hashing(x)) {
		(void)xf_hash_bytes(x, &b, 1);
		return true;
	}
	r = xf_unit_add(x, b, esc);
	if (r != 0) {
		struct mask_unit u = x->cur;

		x->cur.rlen = 0;
		xf_units_unit(x, &u);
	}
	return r != 2;
}

/* A run of plain content bytes (no structure, no backslash) for the hash. */
static size_t elem_run_hash(struct mask_xf *x, const uint8_t *in, size_t n, bool quoted)
{
	size_t k = 0;

	while (k < n && in[k] != '\\' && in[k] != '"' && (quoted || (in[k] != ',' && in[k] != '}')))
		k++; /* stops before every byte with a meaning of its own: never at 0 there */
	if (k)
		(void)xf_hash_bytes(x, in, k);
	return k;
}

/* End the current element (its last strategy output is queued), then write `structure`
 * (0: nothing) after it. Returns false when it must wait for room. */
static bool elem_end(struct mask_xf *x, uint8_t structure)
{
	if (hashing(x)) {
		(void)xf_hash_end(x, true);
	} else {
		if (!xf_units_settle(x))
			return false;
		xf_units_end(x);
	}
	if (structure)
		x->post[x->post_len++] = structure;
	return true;
}

/* After an element or a brace: the structure byte b. */
static int after(struct mask_xf *x, uint8_t b)
{
	if (b == ',') {
		x->arr.st = AS_OPEN;
		return 0;
	}
	if (b == '}') {
		if (--x->arr.depth == 0)
			x->arr.st = AS_END;
		else
			x->arr.st = AS_AFTER;
		return 0;
	}
	return -EPROTO;
}

static bool probe_is_null(const struct mask_xf *x)
{
	return x->arr.probe_len == 4 && strncasecmp((const char *)x->arr.probe, "NULL", 4) == 0;
}

/* One step of the text walker on in[0..n); returns bytes taken (0 with *wait when it must
 * wait for room or replay first). */
static size_t text_step(struct mask_xf *x, const uint8_t *in, size_t n)
{
	uint8_t b = n ? in[0] : 0;

	switch (x->arr.st) {
	case AS_START:
		if (b == '[') {
			x->arr.st = AS_DIMS;
			x->arr.probe_len = 0;
		} else if (b == '{') {
			x->arr.depth = 1;
			x->arr.st = AS_OPEN;
		} else {
			x->err = -EPROTO;
			return 0;
		}
		xf_put(x, &b, 1);
		return 1;
	case AS_DIMS:
		if (++x->arr.probe_pos > ARRAY_DECOR_MAX) {
			x->err = -EPROTO;
			return 0;
		}
		if (b == '=')
			x->arr.st = AS_OPEN_BRACE;
		xf_put(x, &b, 1);
		return 1;
	case AS_OPEN_BRACE:
		x->arr.probe_pos = 0;
		if (b != '{') {
			x->err = -EPROTO;
			return 0;
		}
		x->arr.depth = 1;
		x->arr.st = AS_OPEN;
		xf_put(x, &b, 1);
		return 1;
	case AS_OPEN:
		if (b == '{') {
			if (++x->arr.depth > ARRAY_MAXDIM) {
				x->err = -EPROTO;
				return 0;
			}
			xf_put(x, &b, 1);
			return 1;
		}
		if (b == '}') {
			xf_put(x, &b, 1);
			if (after(x, b) < 0)
				x->err = -EPROTO;
			return 1;
		}
		if (b == ',') {
			x->err = -EPROTO;
			return 0;
		}
		elem_begin(x);
		x->arr.close_quote = false;
		if (b == '"') {
			if (!hashing(x))
				xf_put(x, &b, 1); /* nothing is held yet: in place at once */
			x->arr.st = AS_Q;
			return 1;
		}
		x->arr.st = AS_UNQ_PROBE;
		x->arr.probe_len = x->arr.probe_pos = 0;
		return 0; /* the byte is the element's first: AS_UNQ_PROBE takes it */
	case AS_UNQ_PROBE:
		if (b == ',' || b == '}') {
			if (probe_is_null(x)) {
				xf_put(x, x->arr.probe, 4); /* a NULL element, as it is */
				xf_put(x, &b, 1);
				if (after(x, b) < 0)
					x->err = -EPROTO;
				return 1;
			}
			x->arr.st = AS_UNQ_REPLAY;
			return 0;
		}
		if (b == '\\' || b == '"' || x->arr.probe_len == 4) {
			x->arr.st = AS_UNQ_REPLAY; /* not the NULL keyword: the bytes are content */
			return 0;
		}
		x->arr.probe[x->arr.probe_len++] = b;
		return 1;
	case AS_UNQ_REPLAY:
		if (x->arr.probe_pos < x->arr.probe_len) {
			if (elem_byte(x, x->arr.probe[x->arr.probe_pos], false))
				x->arr.probe_pos++;
			return 0;
		}
		x->arr.st = AS_UNQ;
		return 0;
	case AS_UNQ:
		if (b == ',' || b == '}') {
			x->arr.probe[0] = b;
			x->arr.st = AS_ELEM_END;
			return 1;
		}
		if (b == '"') {
			/* quotes may open anywhere in an element (array_in toggles them); what a
			 * strategy holds goes out first, masked, so the quote stays in its place */
			if (!hashing(x)) {
				if (!xf_units_settle(x))
					return 0;
				xf_units_cut(x);
				x->post[x->post_len++] = b;
			}
			x->arr.st = AS_Q;
			return 1;
		}
		if (b == '\\') {
			x->arr.st = AS_UNQ_ESC;
			return 1;
		}
		if (hashing(x))
			return elem_run_hash(x, in, n, false);
		return elem_byte(x, b, false) ? 1 : 0;
	case AS_Q_CLOSED:
		if (b == ',' || b == '}') {
			x->arr.probe[0] = b;
			x->arr.close_quote = true; /* it goes out after what the element holds */
			x->arr.st = AS_ELEM_END;
			return 1;
		}
		/* more of the element after its quotes: hold nothing across the quote */
		if (!xf_units_settle(x))
			return 0;
		xf_units_cut(x);
		x->post[x->post_len++] = '"';
		x->arr.st = AS_UNQ;
		return 0;
	case AS_UNQ_ESC:
	case AS_Q_ESC:
		if (!elem_byte(x, b, !hashing(x)))
			return 0;
		x->arr.st = x->arr.st == AS_Q_ESC ? AS_Q : AS_UNQ;
		return 1;
	case AS_Q:
		if (b == '"') {
			/* the quotes close; the element goes on until an unquoted , or } */
			x->arr.st = hashing(x) ? AS_UNQ : AS_Q_CLOSED;
			return 1;
		}
		if (b == '\\') {
			x->arr.st = AS_Q_ESC;
			return 1;
		}
		if (hashing(x))
			return elem_run_hash(x, in, n, true);
		return elem_byte(x, b, false) ? 1 : 0;
	case AS_AFTER:
		if (b != ',' && b != '}') {
			x->err = -EPROTO;
			return 0;
		}
		xf_put(x, &b, 1);
		if (after(x, b) < 0)
			x->err = -EPROTO;
		return 1;
	case AS_END:
	default:
		x->err = -EPROTO;
		return 0;
	}
}

/* AS_ELEM_END: end the element, then its structure byte (, or }). */
static bool text_elem_end(struct mask_xf *x)
{
	uint8_t s = x->arr.probe[0];

	if (x->arr.close_quote) {
		if (!xf_units_settle(x))
			return false;
		xf_units_end(x);
		x->post[x->post_len++] = '"';
		x->post[x->post_len++] = s;
		x->arr.close_quote = false;
		if (after(x, s) < 0)
			x->err = -EPROTO;
		return true;
	}
	if (!elem_end(x, s))
		return false;
	if (after(x, s) < 0)
		x->err = -EPROTO;
	return true;
}

/* Snapshot of everything a step can change, to tell whether one did anything. */
static uint64_t progress_mark(const struct mask_xf *x)
{
	return (uint64_t)x->arr.st << 56 ^ (uint64_t)x->arr.probe_pos << 48 ^
	       (uint64_t)x->pend_len << 32 ^ (uint64_t)x->flush_kind << 24 ^ x->rep_count ^
	       (uint64_t)x->post_len << 40 ^ (uint64_t)x->cur.rlen << 20 ^
	       (uint64_t)x->has_deferred << 19 ^ (uint64_t)x->has_trigger << 18 ^
	       x->push_blanks << 8 ^ x->held_blanks;
}

size_t xf_array_text_feed(struct mask_xf *x, const uint8_t *in, size_t n, bool *worked)
{
	size_t i = 0;

	while (!x->err && xf_units_ready(x)) {
		uint64_t mark = progress_mark(x);
		size_t took;

		if (x->arr.st == AS_ELEM_END) {
			if (!text_elem_end(x))
				break;
			*worked = true;
			continue;
		}
		if (x->arr.st != AS_UNQ_REPLAY && i == n)
			break;
		took = text_step(x, in + i, n - i);
		i += took;
		if (took || progress_mark(x) != mark)
			*worked = true;
		else if (!x->err)
			break; /* a step that did nothing: wait for the caller */
	}
	return i;
}

int xf_array_text_finish(struct mask_xf *x)
{
	if (x->err)
		return x->err;
	if (!xf_units_ready(x))
		return -EAGAIN;
	if (x->arr.st == AS_ELEM_END) {
		text_elem_end(x);
		return x->err ? x->err : -EAGAIN;
	}
	return x->arr.st == AS_END ? 0 : -EPROTO;
}

/* ---- binary ----------------------------------------------------------------------------- */

static int bin_header(struct mask_xf *x)
{
	uint32_t ndim = xf_get32(x->arr.hdr), flags = xf_get32(x->arr.hdr + 4);
	uint64_t elems = ndim ? 1 : 0;

	if (x->arr.hdr_len == 12) {
		if (ndim > ARRAY_MAXDIM || flags > 1)
			return -EPROTO;
		x->arr.hdr_need = 12 + 8 * ndim;
		if (ndim)
			return 0; /* the dimensions next */
	}
	for (uint32_t d = 0; d < ndim; d++) {
		int32_t dim = (int32_t)xf_get32(x->arr.hdr + 12 + 8 * d);

		if (dim < 0)
			return -EPROTO;
		elems *= (uint64_t)dim;
		if (elems > ARRAY_MAX_ELEMS)
			return -EPROTO;
	}
	x->arr.elems_left = elems;
	xf_put(x, x->arr.hdr, x->arr.hdr_len);
	x->arr.st = AS_BWORD;
	return 0;
}

static void put_word(struct mask_xf *x, uint32_t v)
{
	uint8_t w[4];

	xf_set32(w, v);
	xf_put(x, w, 4);
}

size_t xf_array_bin_feed(struct mask_xf *x, const uint8_t *in, size_t n, bool *worked)
{
	size_t i = 0;

	while (!x->err && xf_units_ready(x)) {
		switch (x->arr.st) {
		case AS_BHDR:
			if (i == n)
				return i;
			x->arr.hdr[x->arr.hdr_len++] = in[i++];
			if (x->arr.hdr_len == x->arr.hdr_need && bin_header(x) < 0)
				x->err = -EPROTO;
			continue;
		case AS_BWORD: {
			int32_t len;

			if (i == n)
				return i;
			if (!x->arr.elems_left) {
				x->err = -EPROTO; /* bytes after the last element */
				return i;
			}
			x->arr.word[x->arr.word_len++] = in[i++];
			if (x->arr.word_len < 4)
				continue;
			x->arr.word_len = 0;
			len = (int32_t)xf_get32(x->arr.word);
			if (len == -1) {
				xf_put(x, x->arr.word, 4);
				x->arr.elems_left--;
				continue;
			}
			if (len < 0) {
				x->err = -EPROTO;
				return i;
			}
			if (hashing(x))
				put_word(x, xf_hash_token_len(&x->a->type, 1));
			else
				xf_put(x, x->arr.word, 4); /* in place: the same length */
			elem_begin(x);
			x->arr.elem_left = (uint32_t)len;
			x->arr.st = len ? AS_BELEM : AS_BELEM_END;
			continue;
		}
		case AS_BELEM: {
			size_t k = n - i, took;

			if (!k)
				return i;
			if (k > x->arr.elem_left)
				k = x->arr.elem_left;
			if (hashing(x)) {
				(void)xf_hash_bytes(x, in + i, k);
				took = k;
			} else {
				took = xf_units_bytes(x, in + i, k);
			}
			i += took;
			x->arr.elem_left -= (uint32_t)took;
			if (!x->arr.elem_left)
				x->arr.st = AS_BELEM_END;
			if (!took)
				return i;
			continue;
		}
		case AS_BELEM_END:
			if (!elem_end(x, 0))
				return i;
			*worked = true;
			x->arr.elems_left--;
			x->arr.st = AS_BWORD;
			continue;
		default:
			x->err = -EPROTO;
			return i;
		}
	}
	return i;
}

int xf_array_bin_finish(struct mask_xf *x)
{
	if (x->err)
		return x->err;
	if (!xf_units_ready(x))
		return -EAGAIN;
	if (x->arr.st == AS_BELEM_END) {
		if (!elem_end(x, 0))
			return -EAGAIN;
		x->arr.elems_left--;
		x->arr.st = AS_BWORD;
		return -EAGAIN;
	}
	if (x->arr.st == AS_BWORD && !x->arr.word_len && !x->arr.elems_left)
		return 0;
	return -EPROTO;
}
