/*
 * mask_copy: COPY TO data rewriters (see mask_copy.h).
 *
 * Text and CSV share one field machine: raw bytes are scanned for the field's end (an
 * unescaped delimiter or newline; in CSV, outside quotes), and each raw byte is also
 * decoded into content bytes. A clear field copies its raw bytes. A masked field first
 * collects enough raw bytes to tell whether it is the NULL string, then sends its content
 * through the transformer in chunks, and encodes the transformer's output for the format.
 * Binary is a walk over length-prefixed fields.
 */
#include "mask/mask_copy.h"
#include "mask/mask_row.h"

#include <errno.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

enum {
	/* text and CSV */
	S_FIELD = 0, /* a field starts */
	S_RAW,       /* unquoted field bytes */
	S_QUOTED,    /* CSV: inside quotes */
	S_QUOTE2,    /* CSV: a quote inside quotes: the end, or a doubled quote */
	S_QESC,      /* CSV: the escape character inside quotes */
	S_CONTENT,   /* content bytes waiting to go through the transformer */
	S_FINISH,    /* the field ended: the transformer's last output */
	S_END,       /* write the end byte, then the next field or row */
	/* binary */
	S_SIG,
	S_FLAGS,
	S_EXTLEN,
	S_EXT,
	S_TUPLE,
	S_FLEN,
	S_FCOPY,
	S_FSKIP,
	S_FXF,
	S_FFINISH,
	S_FHOLD,
	S_TRAILER,   /* after the trailer: nothing may follow */
	S_FAILED,
};

/* Text escapes (the de-escaper's states). */
enum { E_NONE = 0, E_BS, E_OCT, E_HEX };

static const uint8_t copy_signature[11] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0};

void mask_copy_opts_default(struct mask_copy_opts *o, enum mask_copy_format f)
{
	memset(o, 0, sizeof(*o));
	o->format = f;
	if (f == MASK_COPY_CSV) {
		o->delim = ',';
		o->quote = '"';
		o->escape = '"';
		o->null_len = 0;
	} else {
		o->delim = '\t';
		o->null_str[0] = '\\';
		o->null_str[1] = 'N';
		o->null_len = 2;
	}
}

void mask_copy_init(struct mask_copy *c, uint8_t *buf, uint32_t cap)
{
	memset(c, 0, sizeof(*c));
	c->buf = buf;
	c->buf_cap = cap;
	c->st = S_FAILED;
}

int mask_copy_begin(struct mask_copy *c, const struct mask_copy_opts *o,
		    const struct mask_plan *plan, const struct mask_env *env)
{
	if (o->format != MASK_COPY_BINARY) {
		if (o->delim == '\n' || o->delim == '\r' ||
		    (o->format == MASK_COPY_TEXT && o->delim == '\\') ||
		    (o->format == MASK_COPY_CSV &&
		     (o->quote == o->delim || o->quote == '\n' || o->quote == '\r' ||
		      o->escape == '\n' || o->escape == '\r')))
			return -EINVAL;
		if (o->null_len > MASK_COPY_NULL_MAX || memchr(o->null_str, '\n', o->null_len) ||
		    memchr(o->null_str, '\r', o->null_len))
			return -EINVAL;
		if (env->enc == MASK_ENC_UNSUPPORTED)
			return -EOPNOTSUPP;
	}
	c->o = *o;
	c->plan = plan;
	c->env = env;
	c->rows = 0;
	c->field = 0;
	c->pend_off = c->pend_len = 0;
	c->word_len = 0;
	c->buf_len = c->buf_pos = 0;
	c->from_buf = false;
	c->header_row = o->format != MASK_COPY_BINARY && o->header;
	c->st = o->format == MASK_COPY_BINARY ? S_SIG : S_FIELD;
	return 0;
}

static size_t pend_room(const struct mask_copy *c)
{
	return sizeof(c->pend) - c->pend_len;
}

static void put(struct mask_copy *c, const void *p, size_t n)
{
	if (c->pend_off + c->pend_len + n > sizeof(c->pend)) {
		memmove(c->pend, c->pend + c->pend_off, c->pend_len);
		c->pend_off = 0;
	}
	memcpy(c->pend + c->pend_off + c->pend_len, p, n);
	c->pend_len = (uint16_t)(c->pend_len + n);
}

static void put1(struct mask_copy *c, uint8_t b)
{
	put(c, &b, 1);
}

static void drain(struct mask_copy *c, uint8_t *out, size_t cap, size_t *o)
{
	size_t k = c->pend_len < cap - *o ? c->pend_len : cap - *o;

	if (!k)
		return; /* the common case, once per row: not even a call to memcpy */
	memcpy(out + *o, c->pend + c->pend_off, k);
	*o += k;
	c->pend_off = (uint16_t)(c->pend_off + k);
	c->pend_len = (uint16_t)(c->pend_len - k);
	if (!c->pend_len)
		c->pend_off = 0;
}

/* ---- text and CSV --------------------------------------------------------------------------- */

static const struct mask_plan_col *cur_col(const struct mask_copy *c)
{
	return &c->plan->cols[c->field];
}

static bool field_clear(const struct mask_copy *c)
{
	return c->header_row || cur_col(c)->kind == MASK_COL_CLEAR;
}

/* Encode transformer output for the format: text escapes as CopyAttributeOutText writes
 * them; CSV inside the quotes this field was opened with. */
/* Text: a byte CopyAttributeOutText would escape (or one of the control bytes it writes as
 * they are, which the encoder below takes one by one). */
static inline bool text_special(uint8_t b, uint8_t delim)
{
	return (b < 0x20) | (b == '\\') | (b == delim);
}

static bool needs_encoding(const struct mask_copy *c, uint8_t b)
{
	if (c->o.format == MASK_COPY_CSV)
		return b == c->o.quote || b == c->o.escape;
	return text_special(b, c->o.delim);
}

static void put_encoded(struct mask_copy *c, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t b = p[i];
		size_t run = 0;

		/* Bytes that stand for themselves go out as one run; the rest one by one below. */
		while (i + run < n && !needs_encoding(c, p[i + run]))
			run++;
		if (run) {
			put(c, p + i, run);
			i += run - 1;
			continue;
		}
		if (c->o.format == MASK_COPY_CSV) {
			if (b == c->o.quote || (b == c->o.escape && c->o.escape != c->o.quote))
				put1(c, c->o.escape);
			put1(c, b);
			continue;
		}
		if (b < 0x20) {
			static const char named[] = "\b\f\n\r\t\v";
			static const char letters[] = "bfnrtv";
			const char *k = memchr(named, b, 6);

			if (k) {
				uint8_t e[2] = {'\\', (uint8_t)letters[k - named]};

				put(c, e, 2);
				continue;
			}
		}
		if (b == '\\' || b == c->o.delim)
			put1(c, '\\');
		put1(c, b);
	}
}

/* The value of a masked field begins: NULL string output, or the transformer. */
static void value_begin(struct mask_copy *c)
{
	const struct mask_plan_col *col = cur_col(c);

	c->value_null = mask_action_is_null(&col->action);
	if (c->value_null) {
		put(c, c->o.null_str, c->o.null_len);
		return;
	}
	if (c->o.format == MASK_COPY_CSV)
		put1(c, c->o.quote);
	mask_xf_begin(&c->xf, &col->action, c->env, -1);
}

/* Give content bytes to the transformer (none for a value written as NULL). Returns bytes
 * taken; stops when pend lacks room for the encoded output. */
static size_t content(struct mask_copy *c, const uint8_t *p, size_t n)
{
	size_t taken = 0;

	if (c->value_null)
		return n;
	while (taken < n && pend_room(c) >= 2 * 128 + 8) {
		uint8_t scratch[128];
		size_t used, made;

		if (mask_xf_feed(&c->xf, p + taken, n - taken, &used, scratch, sizeof(scratch), &made) < 0)
			return SIZE_MAX;
		put_encoded(c, scratch, made);
		taken += used;
		if (!used && !made)
			break;
	}
	return taken;
}

/* The field ended: finish the transformer. true when done. SIZE_MAX-style errors via c->st. */
static int value_finish(struct mask_copy *c, bool *done)
{
	*done = true;
	if (c->value_null)
		return 0;
	*done = false;
	while (pend_room(c) >= 2 * 128 + 8) {
		uint8_t scratch[128];
		size_t made;
		bool fin;
		int rc = mask_xf_finish(&c->xf, scratch, sizeof(scratch), &made, &fin);

		if (rc < 0)
			return rc;
		put_encoded(c, scratch, made);
		if (fin) {
			if (c->o.format == MASK_COPY_CSV)
				put1(c, c->o.quote);
			*done = true;
			return 0;
		}
		if (!made)
			break;
	}
	return 0;
}

/* After the end byte: the next field, or the next row; checks the count of fields. */
static int field_next(struct mask_copy *c)
{
	bool row_end = c->end_byte == '\n';
	unsigned ncols = c->plan->ncols;

	if (!row_end) {
		c->field++;
		if (c->field >= ncols)
			return -EPROTO; /* more fields than columns */
	} else {
		if ((unsigned)c->field + 1 != ncols && !(ncols == 0 && c->field == 0))
			return -EPROTO; /* fewer fields than columns */
		c->field = 0;
		if (c->header_row)
			c->header_row = false;
		else
			c->rows++;
	}
	c->st = S_FIELD;
	return 0;
}

/*
 * Text: one raw byte of a field through the unescaper. Returns the content byte (0..255),
 * -1 for none yet, -2 when b ends the field, -3 when b completes a pending escape's value
 * (returned in *v) and must be given again.
 */
static int text_unescape(struct mask_copy *c, uint8_t b, uint8_t *v)
{
	static const char letters[] = "bfnrtv";
	static const char named[] = "\b\f\n\r\t\v";

	switch (c->esc) {
	case E_NONE:
		if (b == '\\') {
			c->esc = E_BS;
			return -1;
		}
		if (b == c->o.delim || b == '\n')
			return -2;
		return b;
	case E_BS: {
		const char *k = memchr(letters, b, 6);

		c->esc = E_NONE;
		if (k)
			return (uint8_t)named[k - letters];
		if (b >= '0' && b <= '7') {
			c->esc = E_OCT;
			c->esc_n = 1;
			c->esc_v = (uint8_t)(b - '0');
			return -1;
		}
		if (b == 'x') {
			c->esc = E_HEX;
			c->esc_n = 0;
			c->esc_v = 0;
			return -1;
		}
		return b; /* \\, \<delimiter>, \. and any other byte stand for themselves */
	}
	case E_OCT:
		if (b >= '0' && b <= '7' && c->esc_n < 3) {
			c->esc_v = (uint8_t)(c->esc_v * 8 + (b - '0'));
			if (++c->esc_n == 3) {
				c->esc = E_NONE;
				return c->esc_v;
			}
			return -1;
		}
		c->esc = E_NONE;
		*v = c->esc_v;
		return -3;
	case E_HEX: {
		int d = (b >= '0' && b <= '9') ? b - '0'
			: (b >= 'a' && b <= 'f') ? b - 'a' + 10
			: (b >= 'A' && b <= 'F') ? b - 'A' + 10 : -1;

		if (d >= 0 && c->esc_n < 2) {
			c->esc_v = (uint8_t)(c->esc_v * 16 + d);
			if (++c->esc_n == 2) {
				c->esc = E_NONE;
				return c->esc_v;
			}
			return -1;
		}
		c->esc = E_NONE;
		*v = c->esc_n ? c->esc_v : 'x'; /* "\x" without digits is an x */
		return -3;
	}
	}
	return -1;
}

/* The probe (a masked field's first raw bytes) decides: NULL, or a value. */
static bool probe_is_null(const struct mask_copy *c)
{
	return c->probe_len == c->o.null_len && memcmp(c->probe, c->o.null_str, c->o.null_len) == 0;
}

static void add_content(struct mask_copy *c, uint8_t v)
{
	c->cbuf[c->cbuf_len++] = v;
}

/* A masked value's content bytes, once it is known not to be NULL. */
static void stop_probing(struct mask_copy *c)
{
	c->probing = false;
	value_begin(c);
}

/* After a content byte: flush the content buffer when full. */
static void maybe_flush(struct mask_copy *c, uint8_t ret)
{
	if (!c->probing && c->cbuf_len == sizeof(c->cbuf)) {
		c->ret_st = ret;
		c->st = S_CONTENT;
	}
}

static void end_field(struct mask_copy *c, uint8_t b)
{
	c->end_byte = b;
	c->st = field_clear(c) ? S_END : S_FINISH;
}

static size_t proto_err(struct mask_copy *c, int *err)
{
	*err = -EPROTO;
	c->st = S_FAILED;
	return SIZE_MAX;
}

#define WHOLE_VALUE_MAX 120 /* escaped, its output fits the room every step has in pend */

/*
 * Text: a masked field that lies whole in in[0..n), short, without a backslash (so its raw
 * bytes are its content) and not the NULL string, masked in one pass by mask_value_fast()
 * (the transformer's output, byte for byte) and encoded; the field's end byte is taken
 * too. Returns the bytes taken, or 0 to leave the field to the byte machine.
 */
static size_t text_whole_value(struct mask_copy *c, const uint8_t *in, size_t n)
{
	const struct mask_plan_col *col = cur_col(c);
	uint8_t out[WHOLE_VALUE_MAX + 8];
	size_t k = 0;
	int64_t got;

	while (k < n && k <= WHOLE_VALUE_MAX && in[k] != c->o.delim && in[k] != '\n') {
		if (in[k] == '\\')
			return 0;
		k++;
	}
	if (k == n || k > WHOLE_VALUE_MAX || mask_action_is_null(&col->action) ||
	    (k == c->o.null_len && memcmp(in, c->o.null_str, k) == 0))
		return 0;
	got = mask_value_fast(&col->action, c->env, in, k, out, WHOLE_VALUE_MAX);
	if (got < 0)
		return 0;
	put_encoded(c, out, (size_t)got);
	c->probing = false;
	c->end_byte = in[k];
	c->st = S_END;
	return k + 1;
}

/*
 * One step of the text/CSV machine on in[0..n). Returns bytes taken (0 when it waits for
 * input or room, or only changed state), or SIZE_MAX with *err set.
 */
static size_t tc_step(struct mask_copy *c, const uint8_t *in, size_t n, int *err)
{
	bool csv = c->o.format == MASK_COPY_CSV;
	uint8_t b = n ? in[0] : 0, v = 0;
	int r;

	switch (c->st) {
	case S_FIELD:
		if (!n)
			return 0;
		c->esc = E_NONE;
		c->probe_len = 0;
		c->cbuf_len = c->cbuf_off = 0;
		c->value_null = false;
		if (c->plan->ncols == 0 && !c->header_row) {
			if (b != '\n')
				return proto_err(c, err); /* a row of no columns is an empty line */
			c->end_byte = b;
			c->st = S_END;
			return 1;
		}
		c->probing = !field_clear(c);
		if (c->probing && !csv) {
			size_t k = text_whole_value(c, in, n);

			if (k)
				return k;
		}
		c->st = S_RAW;
		return 0;
	case S_RAW:
		if (!n)
			return 0;
		if (field_clear(c)) {
			size_t k = 0;

			if (c->esc == E_BS) {
				put1(c, b);
				c->esc = E_NONE;
				return 1;
			}
			while (k < n && k < 128 && in[k] != c->o.delim && in[k] != '\n' &&
			       (csv ? in[k] != c->o.quote : in[k] != '\\'))
				k++;
			if (k) {
				put(c, in, k);
				return k;
			}
			if (b == c->o.delim || b == '\n') {
				end_field(c, b);
				return 1;
			}
			put1(c, b);
			if (csv)
				c->st = S_QUOTED;
			else
				c->esc = E_BS;
			return 1;
		}
		if (!csv && !c->probing && c->esc == E_NONE) {
			/* A masked value's plain bytes (no escape, no end) are its content as they
			 * are: taken as one run, up to the content buffer's room. */
			size_t k = 0, room = sizeof(c->cbuf) - c->cbuf_len;

			while (k < n && k < room && in[k] != c->o.delim && in[k] != '\n' &&
			       in[k] != '\\')
				k++;
			if (k) {
				memcpy(c->cbuf + c->cbuf_len, in, k);
				c->cbuf_len = (uint16_t)(c->cbuf_len + k);
				maybe_flush(c, S_RAW);
				return k;
			}
		}
		if (csv) {
			if (b == c->o.delim || b == '\n') {
				end_field(c, b);
				return 1;
			}
			if (b == c->o.quote) {
				if (c->probing)
					stop_probing(c); /* a quoted field is never NULL */
				c->st = S_QUOTED;
				return 1;
			}
			r = b;
		} else {
			r = text_unescape(c, b, &v);
			if (r == -2) {
				end_field(c, b);
				return 1;
			}
			if (r == -3) {
				add_content(c, v); /* the byte completes an escape: give it again */
				maybe_flush(c, S_RAW);
				return 0;
			}
		}
		if (c->probing)
			c->probe[c->probe_len++] = b;
		if (r >= 0)
			add_content(c, (uint8_t)r);
		if (c->probing && c->probe_len > c->o.null_len)
			stop_probing(c);
		maybe_flush(c, S_RAW);
		return 1;
	case S_QUOTED:
		if (!n)
			return 0;
		if (field_clear(c)) {
			size_t k = 0;

			while (k < n && k < 128 && in[k] != c->o.quote && in[k] != c->o.escape)
				k++;
			if (k) {
				put(c, in, k);
				return k;
			}
			put1(c, b);
		} else if (b != c->o.quote && b != c->o.escape) {
			add_content(c, b);
			maybe_flush(c, S_QUOTED);
			return 1;
		}
		if (b == c->o.escape && c->o.escape != c->o.quote)
			c->st = S_QESC;
		else
			c->st = S_QUOTE2; /* the end, or (escape == quote) a doubled quote */
		return 1;
	case S_QESC:
		if (!n)
			return 0;
		c->st = S_QUOTED;
		if (b == c->o.quote || b == c->o.escape) {
			if (field_clear(c))
				put1(c, b);
			else
				add_content(c, b);
			maybe_flush(c, S_QUOTED);
			return 1;
		}
		if (!field_clear(c)) {
			add_content(c, c->o.escape); /* an escape before anything else is itself */
			maybe_flush(c, S_QUOTED);
		}
		return 0;
	case S_QUOTE2:
		if (!n)
			return 0;
		if (c->o.escape == c->o.quote && b == c->o.quote) {
			if (field_clear(c))
				put1(c, b);
			else
				add_content(c, b);
			c->st = S_QUOTED;
			maybe_flush(c, S_QUOTED);
			return 1;
		}
		c->st = S_RAW; /* the quotes closed; the field goes on unquoted */
		return 0;
	case S_CONTENT: {
		size_t t = content(c, c->cbuf + c->cbuf_off, c->cbuf_len - c->cbuf_off);

		if (t == SIZE_MAX) {
			*err = c->xf.err ? c->xf.err : -EIO;
			c->st = S_FAILED;
			return SIZE_MAX;
		}
		c->cbuf_off = (uint16_t)(c->cbuf_off + t);
		if (c->cbuf_off == c->cbuf_len) {
			c->cbuf_off = c->cbuf_len = 0;
			c->st = c->ret_st;
		}
		return 0;
	}
	case S_FINISH: {
		bool done;
		int rc;

		/* (an escape's digits cut by the end were completed before the end byte) */
		if (c->probing) {
			c->probing = false;
			if (probe_is_null(c)) {
				put(c, c->o.null_str, c->o.null_len); /* NULL stays NULL */
				c->st = S_END;
				return 0;
			}
			value_begin(c);
		}
		if (c->cbuf_off < c->cbuf_len) {
			size_t t = content(c, c->cbuf + c->cbuf_off, c->cbuf_len - c->cbuf_off);

			if (t == SIZE_MAX) {
				*err = c->xf.err ? c->xf.err : -EIO;
				c->st = S_FAILED;
				return SIZE_MAX;
			}
			c->cbuf_off = (uint16_t)(c->cbuf_off + t);
			return 0;
		}
		rc = value_finish(c, &done);
		if (rc < 0) {
			*err = rc;
			c->st = S_FAILED;
			return SIZE_MAX;
		}
		if (done)
			c->st = S_END;
		return 0;
	}
	case S_END:
		if (pend_room(c) < 1)
			return 0;
		put1(c, c->end_byte);
		if (field_next(c) < 0)
			return proto_err(c, err);
		return 0;
	default:
		return proto_err(c, err);
	}
}

/* ---- binary ---------------------------------------------------------------------------------- */

#define COPY_FLAG_OIDS (1u << 16)
#define COPY_FLAGS_CRITICAL 0xffff0000u

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put_be32(struct mask_copy *c, uint32_t v)
{
	uint8_t w[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};

	put(c, w, 4);
}

/* Collect `want` bytes into c->word; true once complete. */
static bool collect(struct mask_copy *c, const uint8_t *in, size_t n, size_t want, size_t *used)
{
	size_t k = want - c->word_len;

	if (k > n)
		k = n;
	memcpy(c->word + c->word_len, in, k);
	c->word_len = (uint8_t)(c->word_len + k);
	*used = k;
	return c->word_len == want;
}

static void bin_next_field(struct mask_copy *c)
{
	c->word_len = 0;
	if (++c->field == c->plan->ncols) {
		c->field = 0;
		c->rows++;
		c->st = S_TUPLE;
	} else {
		c->st = S_FLEN;
	}
}

/* A field's length word is in: what follows. */
static int bin_field(struct mask_copy *c)
{
	const struct mask_plan_col *col = cur_col(c);
	int32_t len = (int32_t)be32(c->word);
	int64_t olen;

	c->word_len = 0;
	if (len < -1)
		return -EPROTO;
	if (col->kind == MASK_COL_CLEAR || len == -1) {
		put_be32(c, (uint32_t)len);
		c->left = len > 0 ? (uint32_t)len : 0;
		c->st = S_FCOPY;
		if (!c->left)
			bin_next_field(c);
		return 0;
	}
	if (mask_action_is_null(&col->action)) {
		put_be32(c, UINT32_MAX);
		c->left = (uint32_t)len;
		c->st = S_FSKIP;
		if (!c->left)
			bin_next_field(c);
		return 0;
	}
	c->left = (uint32_t)len;
	olen = mask_out_len(&col->action, c->env, (uint32_t)len);
	if (olen == MASK_LEN_UNKNOWN) {
		if ((uint32_t)len > c->buf_cap)
			return -E2BIG;
		c->buf_len = 0;
		c->st = S_FHOLD;
		if (!len)
			return -EPROTO; /* no content-dependent type is empty in binary */
		return 0;
	}
	put_be32(c, (uint32_t)olen);
	c->out_left = olen;
	mask_xf_begin(&c->xf, &col->action, c->env, len);
	c->xf_fresh = len > 0;
	c->st = len ? S_FXF : S_FFINISH;
	return 0;
}

static size_t bin_step(struct mask_copy *c, const uint8_t *in, size_t n, uint8_t *out, size_t cap,
		       size_t *o, int *err)
{
	size_t used = 0, k;
	int rc = 0;

	switch (c->st) {
	case S_SIG:
		if (!collect(c, in, n, sizeof(copy_signature), &used))
			return used;
		if (memcmp(c->word, copy_signature, sizeof(copy_signature)) != 0)
			goto proto;
		put(c, c->word, sizeof(copy_signature));
		c->word_len = 0;
		c->st = S_FLAGS;
		return used;
	case S_FLAGS:
		if (!collect(c, in, n, 4, &used))
			return used;
		/* OIDs (bit 16) and every other critical bit: not a stream we can read */
		if (be32(c->word) & COPY_FLAGS_CRITICAL)
			goto proto;
		put(c, c->word, 4);
		c->word_len = 0;
		c->st = S_EXTLEN;
		return used;
	case S_EXTLEN:
		if (!collect(c, in, n, 4, &used))
			return used;
		if ((int32_t)be32(c->word) < 0)
			goto proto;
		put(c, c->word, 4);
		c->ext_left = be32(c->word);
		c->word_len = 0;
		c->st = c->ext_left ? S_EXT : S_TUPLE;
		return used;
	case S_EXT:
		k = c->ext_left < n ? c->ext_left : n;
		if (k > cap - *o)
			k = cap - *o;
		memcpy(out + *o, in, k);
		*o += k;
		c->ext_left -= (uint32_t)k;
		if (!c->ext_left)
			c->st = S_TUPLE;
		return k;
	case S_TUPLE: {
		int16_t nf;

		if (!collect(c, in, n, 2, &used))
			return used;
		nf = (int16_t)((uint16_t)c->word[0] << 8 | c->word[1]);
		put(c, c->word, 2);
		c->word_len = 0;
		if (nf == -1) {
			c->st = S_TRAILER;
			return used;
		}
		if (nf != c->plan->ncols)
			goto proto;
		c->field = 0;
		c->st = nf ? S_FLEN : S_TUPLE;
		if (!nf)
			c->rows++;
		return used;
	}
	case S_FLEN:
		if (!collect(c, in, n, 4, &used))
			return used;
		rc = bin_field(c);
		if (rc < 0)
			goto fail;
		return used;
	case S_FCOPY:
		k = c->left < n ? c->left : n;
		if (k > cap - *o)
			k = cap - *o;
		memcpy(out + *o, in, k);
		*o += k;
		c->left -= (uint32_t)k;
		if (!c->left)
			bin_next_field(c);
		return k;
	case S_FSKIP:
		k = c->left < n ? c->left : n;
		c->left -= (uint32_t)k;
		if (!c->left)
			bin_next_field(c);
		return k;
	case S_FHOLD:
		k = c->left < n ? c->left : n;
		memcpy(c->buf + c->buf_len, in, k);
		c->buf_len += (uint32_t)k;
		c->left -= (uint32_t)k;
		if (!c->left) {
			const struct mask_plan_col *col = cur_col(c);
			int64_t olen = mask_value_measure(&col->action, c->env, c->buf, c->buf_len);

			if (olen < 0) {
				rc = (int)olen;
				goto fail;
			}
			put_be32(c, (uint32_t)olen);
			c->out_left = olen;
			mask_xf_begin(&c->xf, &col->action, c->env, c->buf_len);
			c->left = c->buf_len; /* replayed from buf now */
			c->buf_pos = 0;
			c->from_buf = true;
			c->st = S_FXF;
		}
		return k;
	case S_FXF: {
		const uint8_t *src = c->from_buf ? c->buf + c->buf_pos : in;
		size_t avail = c->from_buf ? c->left : n, cu, pr;

		if (c->xf_fresh && !c->from_buf && n >= c->left && cap - *o >= (uint64_t)c->out_left) {
			/* The whole value is here and its output fits: one pass, the same bytes. */
			int64_t got = mask_value_fast(&cur_col(c)->action, c->env, in, c->left,
						      out + *o, (size_t)c->out_left);

			if (got >= 0) {
				if (got != c->out_left) {
					rc = -ENOTRECOVERABLE;
					goto fail;
				}
				k = c->left;
				*o += (size_t)got;
				c->out_left = 0;
				c->left = 0;
				c->xf_fresh = false;
				bin_next_field(c);
				return k;
			}
		}
		c->xf_fresh = false;

		k = c->left < avail ? c->left : avail;
		rc = mask_xf_feed(&c->xf, src, k, &cu, out + *o, cap - *o, &pr);
		if (rc < 0)
			goto fail;
		if ((int64_t)pr > c->out_left) {
			rc = -ENOTRECOVERABLE;
			goto fail;
		}
		*o += pr;
		c->out_left -= (int64_t)pr;
		c->left -= (uint32_t)cu;
		if (c->from_buf)
			c->buf_pos += (uint32_t)cu;
		if (!c->left)
			c->st = S_FFINISH;
		return c->from_buf ? 0 : cu;
	}
	case S_FFINISH: {
		size_t pr;
		bool done;

		rc = mask_xf_finish(&c->xf, out + *o, cap - *o, &pr, &done);
		if (rc < 0)
			goto fail;
		if ((int64_t)pr > c->out_left) {
			rc = -ENOTRECOVERABLE;
			goto fail;
		}
		*o += pr;
		c->out_left -= (int64_t)pr;
		if (done) {
			if (c->out_left) {
				rc = -ENOTRECOVERABLE;
				goto fail;
			}
			c->from_buf = false;
			bin_next_field(c);
		}
		return 0;
	}
	case S_TRAILER:
		if (n)
			goto proto; /* nothing after the trailer */
		return 0;
	default:
		goto proto;
	}
proto:
	rc = -EPROTO;
fail:
	*err = rc;
	c->st = S_FAILED;
	return SIZE_MAX;
}

/* ---- whole rows ------------------------------------------------------------------------------ */

/*
 * A row that lies whole in in[0..n) and is plain enough is rewritten in one pass straight
 * into out[0..cap): the same bytes the machines above would write, without their per-field
 * steps. Anything else (a row cut by the end of in, too little room, a masked text value
 * with an escape, a value mask_value_fast() does not take, an output byte that would need
 * escaping, a row that is not what the server writes) returns 0 having changed nothing,
 * and the machines take the row, reporting whatever is wrong with it.
 */

/* Eight bytes at a time (the bit tricks are exact for "is there any"; which byte, the
 * byte loops after them find). */
#define BYTES_01 UINT64_C(0x0101010101010101)
#define BYTES_80 UINT64_C(0x8080808080808080)

static inline uint64_t word_at(const uint8_t *p)
{
	uint64_t w;

	memcpy(&w, p, sizeof(w));
	return w;
}

/* Nonzero when a byte of w is below n (n at most 128). */
static inline uint64_t word_has_below(uint64_t w, uint8_t n)
{
	return (w - BYTES_01 * n) & ~w & BYTES_80;
}

/* Nonzero when a byte of w is b. */
static inline uint64_t word_has(uint64_t w, uint8_t b)
{
	return word_has_below(w ^ (BYTES_01 * b), 1);
}

/* Text: the bytes of w that text_special() flags, as high bits. Every such byte is flagged,
 * and a byte is flagged wrongly only above (more significant than) one flagged rightly, so
 * the least significant flag is the first such byte (little-endian). */
static inline uint64_t word_specials(uint64_t w, uint8_t delim)
{
	return word_has_below(w, 0x20) | word_has(w, '\\') | word_has(w, delim);
}

#ifdef __SSE2__
/* Text: the bytes of p[0..16) that end a field (the delimiter, a newline) in *ends, the
 * other bytes text_special() flags (a backslash, a control byte) in *odd, lowest bit first. */
static inline void block_classes(const uint8_t *p, __m128i delim, unsigned *ends, unsigned *odd)
{
	__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
	__m128i control = _mm_cmpeq_epi8(_mm_min_epu8(v, _mm_set1_epi8(0x1f)), v);
	__m128i e = _mm_or_si128(_mm_cmpeq_epi8(v, delim), _mm_cmpeq_epi8(v, _mm_set1_epi8('\n')));

	*ends = (unsigned)_mm_movemask_epi8(e);
	*odd = (unsigned)_mm_movemask_epi8(
		       _mm_or_si128(control, _mm_cmpeq_epi8(v, _mm_set1_epi8('\\')))) &
	       ~*ends;
}

/* Text: one bit per byte of p[0..16) that text_special() flags (a control byte, a backslash,
 * the delimiter), exact, lowest bit first: both classes (a newline is a control byte). */
static inline unsigned block_specials(const uint8_t *p, __m128i delim)
{
	unsigned ends, odd;

	block_classes(p, delim, &ends, &odd);
	return ends | odd;
}
#endif

/* Text: block_classes() for in[i..i+64), the bytes before n (bit k for in[i + k]). Sixteen
 * bytes at a time where SSE2 is, the last few read as the last block of in; else (and for a
 * row under sixteen bytes) byte by byte. */
static inline __attribute__((always_inline)) void
text_classes(const uint8_t *in, size_t i, size_t n, uint8_t delim, uint64_t *ends,
	     uint64_t *odd)
{
	const size_t left = n - i < 64 ? n - i : 64;
	uint64_t e = 0, o = 0;
	size_t k = 0;

#ifdef __SSE2__
	const __m128i d = _mm_set1_epi8((char)delim);
	unsigned be, bo;

	for (; left - k >= 16; k += 16) {
		block_classes(in + i + k, d, &be, &bo);
		e |= (uint64_t)be << k;
		o |= (uint64_t)bo << k;
	}
	if (k < left && n >= 16) { /* then i + left == n: the block ending at n holds the rest */
		const unsigned shift = 16 - (unsigned)(left - k);

		block_classes(in + n - 16, d, &be, &bo);
		e |= (uint64_t)(be >> shift) << k;
		o |= (uint64_t)(bo >> shift) << k;
		k = left;
	}
#endif
	for (; k < left; k++) {
		const uint8_t b = in[i + k];

		if (b == delim || b == '\n')
			e |= UINT64_C(1) << k;
		else if (text_special(b, delim))
			o |= UINT64_C(1) << k;
	}
	*ends = e;
	*odd = o;
}

/* Text: where the first byte of in[from..n) that text_special() flags is, or n. Sixteen
 * bytes at a time where SSE2 is (every x86-64), the last few read as the last block of in;
 * else eight at a time, the last few too (read as the last word of in, when in has eight
 * bytes: the flag found there is checked, since bytes before from may have set it wrongly).
 * This scan is most of what a COPY text row costs the one pass: inline, as a call for each
 * field cost about as much as the scan of a short one. */
static inline __attribute__((always_inline)) size_t
text_special_from(const uint8_t *in, size_t from, size_t n, uint8_t delim)
{
	size_t i = from;

#ifdef __SSE2__
	const __m128i d = _mm_set1_epi8((char)delim);

	for (; n - i >= 16; i += 16) {
		unsigned s = block_specials(in + i, d);

		if (s)
			return i + (size_t)__builtin_ctz(s);
	}
	if (i < n && n >= 16) {
		unsigned s = block_specials(in + n - 16, d) >> (16 - (n - i));

		return s ? i + (size_t)__builtin_ctz(s) : n;
	}
#endif
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	for (; n - i >= 8; i += 8) {
		uint64_t s = word_specials(word_at(in + i), delim);

		if (s)
			return i + ((size_t)__builtin_ctzll(s) >> 3);
	}
	if (i < n && n >= 8) {
		uint64_t s = word_specials(word_at(in + n - 8), delim) >> ((8 - (n - i)) * 8);
		size_t at = s ? i + ((size_t)__builtin_ctzll(s) >> 3) : n;

		if (at == n || text_special(in[at], delim))
			return at;
	}
#endif
	while (i < n && !text_special(in[i], delim))
		i++;
	return i;
}

/* Text: do these bytes stand for themselves (put_encoded() would write them as they are)? */
static bool text_plain(const uint8_t *p, size_t n, uint8_t delim)
{
	uint64_t special = 0;
	size_t i = 0;

	for (; n - i >= 8; i += 8)
		special |= word_specials(word_at(p + i), delim);
	for (; i < n; i++)
		special |= text_special(p[i], delim);
	return !special;
}

/*
 * The end of the text COPY field that starts at in[start]: the index of the delimiter or the
 * newline after it, or n when the row does not end within in[0..n). Sets *escaped when the
 * field holds a backslash escape and *control when it holds another byte the scan stops at
 * (a control byte the server wrote as it is). Inline: runs for every field of every row.
 */
static inline __attribute__((always_inline)) size_t
text_field_end(const uint8_t *in, size_t start, size_t n, uint8_t delim, bool *escaped,
	       bool *control)
{
	size_t end = start;

	for (;;) {
		end = text_special_from(in, end, n, delim);
		if (end == n || in[end] == delim || in[end] == '\n')
			return end;
		if (in[end] == '\\') {
			if (n - end < 2)
				return n;
			*escaped = true;
			end += 2;
			continue;
		}
		*control = true;
		end++;
	}
}

/* Text: fields split at the delimiter, the row ends at the newline; a backslash and the
 * byte after it, whatever that is, are an escape (where the machines end a field too). A
 * clear field's raw bytes are copied as they are, escapes and all; so is a field whose raw
 * bytes are the NULL string (the default \N has a backslash). Any other masked field is
 * taken only without an escape, where every raw byte is its content. One scan per field
 * finds its end and tells whether it holds a control byte (the server writes most as they
 * are): a masked value whose output keeps its input's bytes or writes 'X', 'x' or '0'
 * (mask_fast_keeps_bytes) needs no second look at its output when it held none and the
 * delimiter is none of those. */
static size_t text_whole_row(struct mask_copy *c, const uint8_t *in, size_t n, uint8_t *out,
			     size_t cap, size_t *produced)
{
	const uint8_t delim = c->o.delim;
	const bool delim_masks = delim == 'X' || delim == 'x' || delim == '0';
	size_t start = 0, o = 0;
	unsigned f = 0;

	for (;;) {
		size_t end, flen;
		const struct mask_plan_col *col;
		const uint8_t *src = in + start;
		bool control = false, escaped = false, last;

		end = text_field_end(in, start, n, delim, &escaped, &control);
		if (end == n)
			return 0; /* the row does not end here */
		flen = end - start;
		last = in[end] == '\n';

		if (f >= c->plan->ncols)
			return 0;
		col = &c->plan->cols[f++];
		if (col->kind != MASK_COL_CLEAR &&
		    (mask_action_is_null(&col->action) ||
		     (flen == c->o.null_len && memcmp(src, c->o.null_str, flen) == 0))) {
			src = (const uint8_t *)c->o.null_str; /* NULL stays NULL, or becomes it */
			flen = c->o.null_len;
		} else if (col->kind != MASK_COL_CLEAR) {
			if (escaped)
				return 0; /* its content is not its raw bytes: the machine decodes it */
			int64_t got = mask_value_fast(&col->action, c->env, src, flen, out + o, cap - o);

			if (got < 0)
				return 0;
			if ((control || delim_masks || !mask_fast_keeps_bytes(&col->action)) &&
			    !text_plain(out + o, (size_t)got, delim))
				return 0;
			o += (size_t)got;
			src = NULL;
		}
		if (src) {
			if (cap - o < flen)
				return 0;
			memcpy(out + o, src, flen);
			o += flen;
		}
		if (cap - o < 1)
			return 0;
		out[o++] = last ? '\n' : delim;
		start = end + 1;
		if (last)
			break;
	}
	if (f != c->plan->ncols)
		return 0;
	c->rows++;
	*produced = o;
	return start;
}

/* Binary: the field count, then each field's length word and value (a DataRow's layout). */
static size_t bin_whole_row(struct mask_copy *c, const uint8_t *in, size_t n, uint8_t *out,
			    size_t cap, size_t *produced)
{
	size_t used, o;

	if (!c->plan->ncols)
		return 0;
	o = mask_fields_whole(c->plan, c->env, in, n, SIZE_MAX, out, cap, &used);
	if (!o)
		return 0;
	c->rows++;
	*produced = o;
	return used;
}

/* Is the parser at a row's start, with nothing pending, in a format the one pass takes? */
static bool one_pass_ready(const struct mask_copy *c)
{
	if (c->pend_len || !c->plan->ncols)
		return false;
	if (c->o.format == MASK_COPY_BINARY)
		return c->st == S_TUPLE && !c->word_len;
	return c->o.format == MASK_COPY_TEXT && c->st == S_FIELD && !c->field && !c->header_row;
}

/* At a row's start, with nothing pending: the row in one pass, or 0. */
static size_t whole_row(struct mask_copy *c, const uint8_t *in, size_t n, uint8_t *out,
			size_t cap, size_t *produced)
{
	if (!one_pass_ready(c))
		return 0;
	if (c->o.format == MASK_COPY_BINARY)
		return bin_whole_row(c, in, n, out, cap, produced);
	return text_whole_row(c, in, n, out, cap, produced);
}

/* What the in-place passes read of the parser, taken into a local once per run: a store
 * through out may alias anything the parser points to, so the compiler would read these
 * again after every masked value. */
struct run_consts {
	const struct mask_plan_col *cols;
	const struct mask_env *env;
	const char *null_str;
	size_t null_len;
	unsigned ncols, last_masked;
	uint8_t delim;
	bool delim_masks; /* the delimiter is a byte a masked value may be written with */
};

/* Text: is the field in[start..start + flen) of column col taken where it lies in out (a copy
 * of in)? A clear field is, and so is the NULL string; a masked value only when it is plain
 * (no escape, no control byte), the in-place rewrite takes it and its output needs no
 * escaping. The masked value is written into out[start..). */
static inline __attribute__((always_inline)) bool
text_field_in_place(const struct run_consts *k, const struct mask_plan_col *col,
		    const uint8_t *in, uint8_t *out, size_t start, size_t flen, bool plain)
{
	return col->kind == MASK_COL_CLEAR ||
	       (flen == k->null_len && memcmp(in + start, k->null_str, flen) == 0) ||
	       (plain &&
		mask_value_in_copy_inline(&col->action, k->env, in + start, out + start, flen) &&
		((!k->delim_masks && mask_fast_keeps_bytes(&col->action)) ||
		 text_plain(out + start, flen, k->delim)));
}

/* Text: text_whole_row() into a copy of the row at out[0..n) (of in[0..n)), where the plan's
 * masked values keep their place (plan->in_place): only those are written. It declines a
 * masked value with an escape, and one with a control byte (rare: the one pass copies it
 * out to check). Not inline: it runs only for rows text_rows_by_class() does not take, and
 * inlined into the run loop it made the binary rows' pass there dearer. */
static __attribute__((noinline)) size_t text_row_in_place(const struct run_consts *k, const uint8_t *in, uint8_t *out,
				size_t n)
{
	size_t start = 0;
	unsigned f = 0;

	for (;;) {
		bool escaped = false, control = false;
		const size_t end = text_field_end(in, start, n, k->delim, &escaped, &control);

		if (end == n)
			return 0; /* the row does not end here */
		if (f >= k->ncols ||
		    !text_field_in_place(k, &k->cols[f++], in, out, start, end - start,
					 !escaped && !control))
			return 0;
		start = end + 1;
		if (in[end] == '\n')
			break;
	}
	return f == k->ncols ? start : 0;
}

/*
 * Text: the rows of one CopyData message's data in[0..n) (n > 0) into out[0..n) holding a
 * copy, text_row_in_place() row by row, found another way: the message's bytes are
 * classified sixty-four at a time, and when none is a backslash or a control byte other than
 * the delimiter and the newline (what the server writes for rows without escapes), the
 * fields end exactly at the bits left, without a scan per field. Returns the rows taken, or
 * 0 when it declines: anything this does not take, text_row_in_place() decides. What it
 * wrote by then is what text_row_in_place() writes for the same fields (they lie before the
 * first byte it does not take, where the two read the row alike).
 */
static inline __attribute__((always_inline)) uint64_t
text_rows_by_class(const struct run_consts *k, const uint8_t *in, uint8_t *out, size_t n)
{
	size_t start = 0;
	unsigned f = 0;
	uint64_t rows = 0;

	for (size_t i = 0; i < n; i += 64) {
		uint64_t ends, odd;

		text_classes(in, i, n, k->delim, &ends, &odd);
		if (odd)
			return 0;
		for (; ends; ends &= ends - 1) {
			const size_t end = i + (size_t)__builtin_ctzll(ends);

			if (f >= k->ncols ||
			    !text_field_in_place(k, &k->cols[f++], in, out, start, end - start, true))
				return 0;
			start = end + 1;
			if (in[end] == '\n') {
				if (f != k->ncols)
					return 0;
				f = 0;
				rows++;
			}
		}
	}
	return start == n && !f ? rows : 0;
}

/* One CopyData message's data in[0..n), out[0..n) holding a copy, at a row's start
 * (one_pass_ready()): the rows taken, or 0 when not every row was. */
static inline __attribute__((always_inline)) uint64_t
message_in_place(const struct run_consts *k, bool binary, const uint8_t *in, uint8_t *out,
		 size_t n)
{
	uint64_t rows = 0;
	size_t i = 0;

	if (!n)
		return 0;
	if (!binary) {
		rows = text_rows_by_class(k, in, out, n);
		if (rows)
			return rows;
	}
	while (i < n) {
		size_t used = binary ? mask_cols_in_place(k->cols, k->ncols, k->last_masked, k->env,
							  in + i, out + i, n - i, SIZE_MAX)
				     : text_row_in_place(k, in + i, out + i, n - i);

		if (!used)
			return 0;
		rows++;
		i += used;
	}
	return rows;
}

/* The walk over the messages is here, next to the row passes, so that they inline into it:
 * a call per message (a row, as the server sends COPY) cost more than the walk. The parser's
 * state is asked once: taking whole rows changes nothing of it but the row count. */
size_t mask_copy_messages_in_place(struct mask_copy *c, const uint8_t *in, uint8_t *out,
				   size_t n, size_t body_max)
{
	struct run_consts k;
	bool binary;
	size_t at = 0;
	uint64_t rows = 0;

	if (!c->plan->in_place || !one_pass_ready(c)) /* one_pass_ready(): not S_FAILED */
		return 0;
	k = (struct run_consts){
		.cols = c->plan->cols,
		.env = c->env,
		.null_str = c->o.null_str,
		.null_len = c->o.null_len,
		.ncols = c->plan->ncols,
		.last_masked = (unsigned)c->plan->last_masked,
		.delim = c->o.delim,
		.delim_masks = c->o.delim == 'X' || c->o.delim == 'x' || c->o.delim == '0',
	};
	binary = c->o.format == MASK_COPY_BINARY;
	while (n - at >= PROTO_HEADER_LEN) {
		size_t body_len = proto_read_u32(in + at + 1) - (size_t)4;
		uint64_t taken;

		if (n - at - PROTO_HEADER_LEN < body_len || body_len > body_max)
			break;
		taken = message_in_place(&k, binary, in + at + PROTO_HEADER_LEN,
					 out + at + PROTO_HEADER_LEN, body_len);
		if (!taken)
			break;
		rows += taken;
		at += PROTO_HEADER_LEN + body_len;
	}
	c->rows += rows;
	return at;
}

size_t mask_copy_whole(struct mask_copy *c, const uint8_t *in, size_t n, uint8_t *out,
		       size_t cap)
{
	const uint64_t rows = c->rows; /* the one thing whole_row() changes */
	size_t i = 0, o = 0;

	if (c->st == S_FAILED)
		return 0;
	while (i < n) {
		size_t made = 0, used = whole_row(c, in + i, n - i, out + o, cap - o, &made);

		if (!used) {
			c->rows = rows;
			return 0;
		}
		i += used;
		o += made;
	}
	return o;
}

/* ---- the driver ------------------------------------------------------------------------------ */

static uint64_t mark(const struct mask_copy *c)
{
	return (uint64_t)c->st << 56 ^ (uint64_t)c->pend_len << 40 ^ (uint64_t)c->cbuf_off << 24 ^
	       (uint64_t)c->field << 8 ^ c->esc ^ (uint64_t)c->probing << 4 ^
	       (uint64_t)c->buf_len << 20 ^ (uint64_t)c->buf_pos << 32 ^ c->left;
}

int mask_copy_feed(struct mask_copy *c, const uint8_t *in, size_t n, size_t *consumed,
		   uint8_t *out, size_t cap, size_t *produced)
{
	size_t i = 0, o = 0;
	int err = 0;

	if (!in)
		in = (const uint8_t *)""; /* no input: never a NULL source for memcpy */

	*consumed = *produced = 0;
	if (c->st == S_FAILED)
		return -EPROTO;
	for (;;) {
		uint64_t m0;
		size_t o0, t;

		drain(c, out, cap, &o);
		if (c->pend_len)
			break; /* out is full */
		if (pend_room(c) < 2 * 128 + 16)
			break;
		{
			size_t made = 0, used = whole_row(c, in + i, n - i, out + o, cap - o, &made);

			if (used) {
				i += used;
				o += made;
				if (i == n)
					break; /* at a row's start, nothing owed: nothing more to do */
				continue;
			}
		}
		m0 = mark(c);
		o0 = o;
		if (c->o.format == MASK_COPY_BINARY)
			t = bin_step(c, in + i, n - i, out, cap, &o, &err);
		else
			t = tc_step(c, in + i, n - i, &err);
		if (t == SIZE_MAX) {
			*consumed = i;
			*produced = o;
			return err;
		}
		i += t;
		if (!t && o == o0 && mark(c) == m0)
			break;
	}
	*consumed = i;
	*produced = o;
	return 0;
}

int mask_copy_end(const struct mask_copy *c)
{
	if (c->pend_len)
		return -EPROTO;
	if (c->o.format == MASK_COPY_BINARY)
		return c->st == S_TRAILER ? 0 : -EPROTO;
	return c->st == S_FIELD && c->field == 0 && !c->header_row ? 0 : -EPROTO;
}
