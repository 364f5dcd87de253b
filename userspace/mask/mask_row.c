/* mask_row: the streaming DataRow rewriter (see mask_row.h for the bound and its proof). */
#include "mask/mask_row.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { PH_LOOKAHEAD = 0, PH_EMIT, PH_DONE, PH_FAILED };
enum { W_NCOLS = 0, W_LEN, W_COPY, W_SKIP, W_XF, W_FINISH, W_END };

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

void mask_row_init(struct mask_row *r, uint8_t *la, uint32_t la_cap)
{
	memset(r, 0, sizeof(*r));
	r->la = la;
	r->la_cap = la_cap;
	r->phase = PH_DONE;
}

void mask_row_release(struct mask_row *r)
{
	free(r->out_lens);
	r->out_lens = NULL;
	r->out_lens_cap = 0;
}

int mask_row_begin(struct mask_row *r, const struct mask_plan *plan, const struct mask_env *env,
		   uint32_t body_len)
{
	if (body_len < 2)
		return -EPROTO;
	if (plan->ncols > r->out_lens_cap) {
		int64_t *n = realloc(r->out_lens, plan->ncols * sizeof(*n));

		if (!n)
			return -ENOMEM;
		r->out_lens = n;
		r->out_lens_cap = plan->ncols;
	}
	r->plan = plan;
	r->env = env;
	r->body_len = body_len;
	r->out_body_len = body_len;
	r->phase = PH_LOOKAHEAD;
	r->la_len = r->la_pos = 0;
	r->taken = 0;
	r->an_pos = 0;
	r->an_field = 0;
	r->an_have_len = false;
	r->w_state = W_NCOLS;
	r->w_field = 0;
	r->w_word_len = 0;
	r->w_left = 0;
	r->w_out_left = 0;
	r->w_walked = 0;
	r->pend_off = r->pend_len = 0;
	return 0;
}

/*
 * Read the held bytes as far as the decision point: the length word of the last masked
 * column (and its whole value when its output length depends on its content). Sets
 * *decided with r->out_body_len known, or leaves it clear to wait for more bytes.
 */
static int analyse(struct mask_row *r, const uint8_t *buf, uint32_t have, bool *decided)
{
	const struct mask_plan *p = r->plan;
	int64_t delta = (int64_t)r->out_body_len - (int64_t)r->body_len;

	*decided = false;
	if (!r->an_have_len) {
		if (have < 2)
			return 0;
		if (((uint16_t)buf[0] << 8 | buf[1]) != p->ncols)
			return -EPROTO; /* not the row the RowDescription announced */
		r->an_have_len = true;
		r->an_pos = 2;
		if (p->last_masked < 0) {
			*decided = true;
			return 0;
		}
	}
	for (;;) {
		const struct mask_plan_col *col = &p->cols[r->an_field];
		int32_t len;

		if (r->an_pos + 4 > have)
			return 0;
		len = (int32_t)get32(buf + r->an_pos);
		if (len < -1 || (len > 0 && (uint64_t)r->an_pos + 4 + (uint32_t)len > r->body_len))
			return -EPROTO;
		if (col->kind != MASK_COL_CLEAR) {
			int64_t olen = MASK_LEN_NULL;

			if (len >= 0) {
				olen = mask_out_len(&col->action, r->env, (uint32_t)len);
				if (olen == MASK_LEN_UNKNOWN) {
					if ((uint64_t)r->an_pos + 4 + (uint32_t)len > have)
						return 0; /* the whole value first */
					olen = mask_value_measure(&col->action, r->env,
								  buf + r->an_pos + 4, (size_t)len);
					if (olen < 0)
						return (int)olen;
				}
				delta += (olen < 0 ? 0 : olen) - len;
			}
			r->out_lens[r->an_field] = olen;
		}
		if ((int32_t)r->an_field == p->last_masked) {
			int64_t total = (int64_t)r->body_len + delta;

			if (total > (int64_t)PROTO_MAX_BODY)
				return -EOVERFLOW;
			r->out_body_len = (uint64_t)total;
			*decided = true;
			return 0;
		}
		r->an_pos += 4 + (uint32_t)(len > 0 ? len : 0);
		r->an_field++;
		/* out_body_len carries the running delta between calls */
		r->out_body_len = (uint64_t)((int64_t)r->body_len + delta);
	}
}

static void pend_put(struct mask_row *r, const void *p, size_t n)
{
	memcpy(r->pend + r->pend_off + r->pend_len, p, n);
	r->pend_len = (uint8_t)(r->pend_len + n);
}

static void next_field(struct mask_row *r)
{
	r->w_field++;
	r->w_word_len = 0;
	r->w_state = r->w_field == r->plan->ncols ? W_END : W_LEN;
}

/* The field's length word has been read: decide what follows. */
static int field_start(struct mask_row *r)
{
	const struct mask_plan_col *col = &r->plan->cols[r->w_field];
	int32_t len = (int32_t)get32(r->w_word);
	uint8_t w[4];

	if (len < -1 || (len > 0 && (uint64_t)len > r->body_len - r->w_walked))
		return -EPROTO;
	if (col->kind == MASK_COL_CLEAR || len == -1) {
		pend_put(r, r->w_word, 4);
		r->w_left = len > 0 ? (uint32_t)len : 0;
		r->w_state = W_COPY;
		if (!r->w_left)
			next_field(r);
		return 0;
	}
	if (mask_action_is_null(&col->action)) {
		put32(w, UINT32_MAX);
		pend_put(r, w, 4);
		r->w_left = (uint32_t)len;
		r->w_state = W_SKIP;
		if (!r->w_left)
			next_field(r);
		return 0;
	}
	if (r->out_lens[r->w_field] < 0)
		return -ENOTRECOVERABLE; /* analysed as NULL, yet not NULL */
	put32(w, (uint32_t)r->out_lens[r->w_field]);
	pend_put(r, w, 4);
	r->w_out_left = r->out_lens[r->w_field];
	r->w_left = (uint32_t)len;
	mask_xf_begin(&r->xf, &col->action, r->env, len);
	r->w_state = len ? W_XF : W_FINISH;
	return 0;
}

/*
 * One walker step on src[0..avail) with out room: returns 0 and sets *used and adds to *o,
 * or an error.
 */
static int walk(struct mask_row *r, const uint8_t *src, size_t avail, size_t *used, uint8_t *out,
		size_t cap, size_t *o)
{
	size_t k;

	*used = 0;
	switch (r->w_state) {
	case W_NCOLS:
	case W_LEN: {
		unsigned want = r->w_state == W_NCOLS ? 2 : 4;

		k = want - r->w_word_len;
		if (k > avail)
			k = avail;
		memcpy(r->w_word + r->w_word_len, src, k);
		r->w_word_len = (uint8_t)(r->w_word_len + k);
		*used = k;
		r->w_walked += k;
		if (r->w_word_len < want)
			return 0;
		if (r->w_state == W_NCOLS) {
			if (((uint16_t)r->w_word[0] << 8 | r->w_word[1]) != r->plan->ncols)
				return -EPROTO;
			pend_put(r, r->w_word, 2);
			r->w_field = 0;
			r->w_word_len = 0;
			r->w_state = r->plan->ncols ? W_LEN : W_END;
			return 0;
		}
		return field_start(r);
	}
	case W_COPY:
		k = r->w_left;
		if (k > avail)
			k = avail;
		if (k > cap - *o)
			k = cap - *o;
		memcpy(out + *o, src, k);
		*o += k;
		*used = k;
		r->w_walked += k;
		r->w_left -= (uint32_t)k;
		if (!r->w_left)
			next_field(r);
		return 0;
	case W_SKIP:
		k = r->w_left < avail ? r->w_left : avail;
		*used = k;
		r->w_walked += k;
		r->w_left -= (uint32_t)k;
		if (!r->w_left)
			next_field(r);
		return 0;
	case W_XF: {
		size_t c, p;
		int rc;

		k = r->w_left < avail ? r->w_left : avail;
		rc = mask_xf_feed(&r->xf, src, k, &c, out + *o, cap - *o, &p);
		if (rc < 0)
			return rc;
		if ((int64_t)p > r->w_out_left)
			return -ENOTRECOVERABLE;
		*o += p;
		r->w_out_left -= (int64_t)p;
		*used = c;
		r->w_walked += c;
		r->w_left -= (uint32_t)c;
		if (!r->w_left)
			r->w_state = W_FINISH;
		return 0;
	}
	case W_FINISH: {
		size_t p;
		bool done;
		int rc = mask_xf_finish(&r->xf, out + *o, cap - *o, &p, &done);

		if (rc < 0)
			return rc;
		if ((int64_t)p > r->w_out_left)
			return -ENOTRECOVERABLE;
		*o += p;
		r->w_out_left -= (int64_t)p;
		if (done) {
			if (r->w_out_left)
				return -ENOTRECOVERABLE;
			next_field(r);
		}
		return 0;
	}
	default:
		return -EPROTO;
	}
}

/*
 * Whole fields at once, when a field lies entirely in src and its output fits in out:
 * clear ones copied with their length word, masked ones through mask_value_fast(). Stops
 * at the first field that does not qualify, for walk() to take byte by byte. Returns the
 * bytes taken, or SIZE_MAX when a masked field's output broke its promised length.
 */
static size_t walk_fast(struct mask_row *r, const uint8_t *src, size_t avail, uint8_t *out,
			size_t cap, size_t *o)
{
	size_t used = 0;

	while (r->w_state == W_LEN && !r->w_word_len && avail - used >= 4) {
		const struct mask_plan_col *col = &r->plan->cols[r->w_field];
		int32_t len = (int32_t)get32(src + used);
		size_t vlen = len > 0 ? (size_t)len : 0, room = cap - *o;

		if (len < -1 || vlen > avail - used - 4 || vlen > r->body_len - r->w_walked - 4)
			break; /* not all here, or wrong: the machine decides */
		if (col->kind == MASK_COL_CLEAR || len == -1) {
			/* this field and the clear ones right after it, in one copy */
			size_t run = 4 + vlen;

			if (room < run)
				break;
			used += run;
			r->w_walked += run;
			next_field(r);
			while (r->w_state == W_LEN && avail - used >= 4) {
				int32_t l2 = (int32_t)get32(src + used);
				size_t v2 = l2 > 0 ? (size_t)l2 : 0;

				if ((r->plan->cols[r->w_field].kind != MASK_COL_CLEAR && l2 != -1) ||
				    l2 < -1 || v2 > avail - used - 4 ||
				    v2 > r->body_len - r->w_walked - 4 || room < run + 4 + v2)
					break;
				run += 4 + v2;
				used += 4 + v2;
				r->w_walked += 4 + v2;
				next_field(r);
			}
			memcpy(out + *o, src + used - run, run);
			*o += run;
			continue;
		} else if (mask_action_is_null(&col->action)) {
			if (room < 4)
				break;
			put32(out + *o, UINT32_MAX);
			*o += 4;
		} else {
			int64_t want = r->out_lens[r->w_field], got;

			if (want < 0 || room < 4 + (size_t)want)
				break;
			got = mask_value_fast(&col->action, r->env, src + used + 4, vlen, out + *o + 4,
					      (size_t)want);
			if (got < 0)
				break;
			if (got != want)
				return SIZE_MAX;
			put32(out + *o, (uint32_t)want);
			*o += 4 + (size_t)want;
		}
		used += 4 + vlen;
		r->w_walked += 4 + vlen;
		next_field(r);
	}
	return used;
}

static int fail(struct mask_row *r, int rc)
{
	r->phase = PH_FAILED;
	return rc;
}

int mask_row_step(struct mask_row *r, const uint8_t *in, size_t n, size_t *consumed,
		  uint8_t *out, size_t cap, size_t *produced, bool *done)
{
	size_t i = 0, o = 0;
	int rc;

	if (!in)
		in = (const uint8_t *)""; /* no input: never a NULL source for memcpy */

	*consumed = *produced = 0;
	*done = r->phase == PH_DONE;
	if (r->phase == PH_FAILED)
		return -EPROTO;
	if (n > r->body_len - r->taken)
		n = (size_t)(r->body_len - r->taken); /* never read past the message */
	if (r->phase == PH_LOOKAHEAD && !r->la_len && n == r->body_len - r->taken) {
		/* The whole body is here: decide on it in place, nothing to hold. The decision
		 * point must still lie within the lookahead, so that a row is rewritten or
		 * refused the same way however the network cut it. */
		bool decided;
		uint32_t have = n < r->la_cap ? (uint32_t)n : r->la_cap;

		rc = analyse(r, in, have, &decided);
		if (rc < 0)
			return fail(r, rc);
		if (!decided)
			return fail(r, have < n ? -E2BIG : -EPROTO);
		r->pend[0] = PqMsg_DataRow;
		put32(r->pend + 1, (uint32_t)(r->out_body_len + 4));
		r->pend_len = 5;
		r->phase = PH_EMIT;
	}
	if (r->phase == PH_LOOKAHEAD) {
		bool decided;
		size_t k = r->la_cap - r->la_len;

		if (k > n)
			k = n;
		memcpy(r->la + r->la_len, in, k);
		r->la_len += (uint32_t)k;
		r->taken += k;
		i = k;
		rc = analyse(r, r->la, r->la_len, &decided);
		if (rc < 0)
			return fail(r, rc);
		if (!decided) {
			*consumed = i;
			if (r->la_len == r->la_cap)
				return fail(r, -E2BIG);
			if (r->taken == r->body_len)
				return fail(r, -EPROTO); /* ended before its columns did */
			return 0;
		}
		r->pend[0] = PqMsg_DataRow;
		put32(r->pend + 1, (uint32_t)(r->out_body_len + 4));
		r->pend_len = 5;
		r->phase = PH_EMIT;
	}
	while (r->phase == PH_EMIT) {
		const uint8_t *src;
		size_t avail, used, o0;
		uint8_t state0;
		uint16_t field0;
		bool replay;

		if (r->pend_len) {
			size_t k = r->pend_len < cap - o ? r->pend_len : cap - o;

			memcpy(out + o, r->pend + r->pend_off, k);
			o += k;
			r->pend_off = (uint8_t)(r->pend_off + k);
			r->pend_len = (uint8_t)(r->pend_len - k);
			if (r->pend_len)
				break;
			r->pend_off = 0;
		}
		if (r->w_state == W_END) {
			if (r->w_walked != r->body_len)
				return fail(r, -EPROTO); /* bytes after the last column */
			r->phase = PH_DONE;
			*done = true;
			break;
		}
		replay = r->la_pos < r->la_len;
		src = replay ? r->la + r->la_pos : in + i;
		avail = replay ? r->la_len - r->la_pos : n - i;
		used = walk_fast(r, src, avail, out, cap, &o);
		if (used == SIZE_MAX)
			return fail(r, -ENOTRECOVERABLE);
		if (used) {
			if (replay) {
				r->la_pos += (uint32_t)used;
			} else {
				i += used;
				r->taken += used;
			}
			continue;
		}
		o0 = o;
		state0 = r->w_state;
		field0 = r->w_field;
		rc = walk(r, src, avail, &used, out, cap, &o);
		if (rc < 0)
			return fail(r, rc);
		if (replay) {
			r->la_pos += (uint32_t)used;
		} else {
			i += used;
			r->taken += used;
		}
		if (!used && o == o0 && !r->pend_len && state0 == r->w_state && field0 == r->w_field) {
			if (r->w_walked == r->body_len && r->w_state != W_FINISH &&
			    r->w_state != W_END)
				return fail(r, -EPROTO); /* the body ended inside a column */
			break;
		}
	}
	*consumed = i;
	*produced = o;
	return 0;
}

/*
 * One pass over fields in the binary layout: the checks analyse() and walk() make, each
 * answered by declining (0) rather than by an error, so that the machine, taking the row
 * again from its start, is what decides how a row fails. Clear fields next to each other
 * are copied in one go.
 */
size_t mask_fields_whole(const struct mask_plan *plan, const struct mask_env *env,
			 const uint8_t *in, size_t n, size_t la_cap, uint8_t *out, size_t cap,
			 size_t *consumed)
{
	size_t pos = 2, o = 0, clear_from = 0; /* in[clear_from..pos): to copy */

	if (n < 2 || ((uint16_t)in[0] << 8 | in[1]) != plan->ncols)
		return 0;
	for (unsigned f = 0; f < plan->ncols; f++) {
		const struct mask_plan_col *col = &plan->cols[f];
		int32_t len;
		size_t vlen;

		if (!mask_field_at(in, n, pos, &len, &vlen))
			return 0;
		if ((int32_t)f == plan->last_masked && pos + 4 > la_cap)
			return 0; /* the machine answers -E2BIG */
		if (col->kind == MASK_COL_CLEAR || len == -1) {
			pos += 4 + vlen; /* copied with the clear fields next to it, in one go */
			continue;
		}
		if (cap - o < pos - clear_from)
			return 0;
		memcpy(out + o, in + clear_from, pos - clear_from);
		o += pos - clear_from;
		if (mask_action_is_null(&col->action)) {
			if (cap - o < 4)
				return 0;
			put32(out + o, UINT32_MAX);
			o += 4;
		} else {
			int64_t want = mask_out_len(&col->action, env, (uint32_t)len);

			if (want < 0 || cap - o < 4 + (uint64_t)want ||
			    mask_value_fast(&col->action, env, in + pos + 4, vlen, out + o + 4,
					    (size_t)want) != want)
				return 0; /* content-dependent lengths are the machine's */
			put32(out + o, (uint32_t)want);
			o += 4 + (size_t)want;
		}
		pos += 4 + vlen;
		clear_from = pos;
	}
	if (cap - o < pos - clear_from)
		return 0;
	if (pos > clear_from) { /* clear fields after the last masked one */
		memcpy(out + o, in + clear_from, pos - clear_from);
		o += pos - clear_from;
	}
	*consumed = pos;
	return o;
}

/* mask_cols_in_place() inlines here: a call per row cost more than the walk. */
size_t mask_rows_in_place(const struct mask_plan *plan, const struct mask_env *env,
			  const uint8_t *in, uint8_t *out, size_t n, size_t la_cap)
{
	const struct mask_plan_col *cols = plan->cols;
	const unsigned ncols = plan->ncols, last_masked = (unsigned)plan->last_masked;
	size_t at = 0;

	while (n - at >= PROTO_HEADER_LEN) {
		size_t body_len = get32(in + at + 1) - (size_t)4;

		if (n - at - PROTO_HEADER_LEN < body_len ||
		    mask_cols_in_place(cols, ncols, last_masked, env, in + at + PROTO_HEADER_LEN,
				       out + at + PROTO_HEADER_LEN, body_len, la_cap) != body_len)
			break;
		at += PROTO_HEADER_LEN + body_len;
	}
	return at;
}

/* The length word is written last, once the output is known, where the machine must know
 * it first because it writes as it goes. */
size_t mask_row_whole(const struct mask_plan *plan, const struct mask_env *env,
		      const uint8_t *in, uint32_t body_len, uint32_t la_cap, uint8_t *out,
		      size_t cap)
{
	size_t body, consumed;

	if (cap < PROTO_HEADER_LEN)
		return 0;
	body = mask_fields_whole(plan, env, in, body_len, la_cap, out + PROTO_HEADER_LEN,
				 cap - PROTO_HEADER_LEN, &consumed);
	if (!body || consumed != body_len || body > PROTO_MAX_BODY)
		return 0;
	out[0] = PqMsg_DataRow;
	put32(out + 1, (uint32_t)(body + 4));
	return PROTO_HEADER_LEN + body;
}
