/*
 * mask_row: the DataRow rewriter. It takes one DataRow's body in pieces of any size (down
 * to one byte), and writes the replacement message, header included, into room of any
 * size (down to one byte), in memory that does not grow with the row or its values.
 *
 * The problem: a DataRow's length comes first, and masking changes field lengths, so the
 * new length must be known before the first byte is written; yet the fields that decide
 * it can sit behind values of any size, which cannot be held.
 *
 * The solution, and its bound:
 *   1. Every strategy's output length is a function of the input length alone
 *      (mask_out_len()), except hash on arrays and binary numeric with partial or hash,
 *      whose output depends on the content.
 *   2. So the new length is known as soon as the rewriter has read the length word of the
 *      plan's last masked column, and, for a content-dependent action, that column's whole
 *      value (measured by a dry run of the same deterministic transformer). Call that
 *      point the decision point; it depends only on the plan and the row's field lengths.
 *   3. The rewriter holds the row's bytes from its start up to the decision point in a
 *      lookahead buffer of L bytes (mask.row_lookahead), then writes the header, replays
 *      the held bytes through the field walker, and streams everything after the decision
 *      point straight through: unmasked values by copy, masked ones through their
 *      transformer (fixed-size state), with their promised lengths.
 *   4. Memory per session: L + sizeof(struct mask_row) + 8 bytes per result column,
 *      whatever the row or value sizes. A row whose decision point lies beyond L bytes
 *      (masked columns behind more than L bytes of other values in the same row) cannot
 *      be rewritten in that memory: mask_row_step() answers -E2BIG and the stage ends the
 *      session (54000) rather than hold it or pass it. Rows whose masked columns come
 *      first, or whose large values are masked, or that have no masked column, always
 *      stream, at any size.
 * Every promised length is checked against what was written; a mismatch (a bug, never
 * input) is -ENOTRECOVERABLE, so the stream can never lose its framing silently.
 */
#ifndef PGWARDEN_MASK_ROW_H
#define PGWARDEN_MASK_ROW_H

#include "mask/mask_plan.h"
#include "mask/mask_value.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MASK_ROW_LOOKAHEAD_DEFAULT (64u * 1024)
#define MASK_ROW_LOOKAHEAD_MIN 1024u

struct mask_row {
	const struct mask_plan *plan;
	const struct mask_env *env;
	uint8_t *la;         /* lookahead buffer: la_cap bytes, the caller's */
	uint32_t la_cap;
	int64_t *out_lens;   /* per column: the promised output length of a masked field */
	unsigned out_lens_cap;
	/* the message */
	uint32_t body_len;
	uint64_t out_body_len;
	uint8_t phase;
	uint32_t la_len;     /* input bytes held */
	uint32_t la_pos;     /* replayed so far */
	uint64_t taken;      /* input bytes consumed in all */
	/* lookahead analysis */
	uint32_t an_pos;
	uint32_t an_field;
	bool an_have_len;
	/* field walker */
	uint8_t w_state;
	uint16_t w_field;
	uint8_t w_word[4];
	uint8_t w_word_len;
	uint32_t w_left;     /* bytes of the current value still to come */
	int64_t w_out_left;  /* bytes the current transformer still owes */
	uint64_t w_walked;   /* body bytes the walker has seen */
	uint8_t pend[8];
	uint8_t pend_off, pend_len;
	struct mask_xf xf;
};

/* Bind a rewriter to its lookahead buffer (la_cap >= MASK_ROW_LOOKAHEAD_MIN). */
void mask_row_init(struct mask_row *r, uint8_t *la, uint32_t la_cap);
/* Release what the rewriter allocated (not the lookahead buffer). */
void mask_row_release(struct mask_row *r);

/* Start a DataRow of body_len bytes under plan (and env: both must outlive the row).
 * 0, -EPROTO (a body shorter than its column count) or -ENOMEM. */
int mask_row_begin(struct mask_row *r, const struct mask_plan *plan, const struct mask_env *env,
		   uint32_t body_len) __attribute__((warn_unused_result));

/*
 * Take body bytes in[0..n) and write the replacement message into out[0..cap). Sets
 * *consumed, *produced, and *done once the whole message has been written (then every
 * body byte has been consumed). Call again while input remains or output was produced.
 * Returns 0 or: -EPROTO (the row does not agree with its length or its RowDescription),
 * -E2BIG (the decision point lies beyond the lookahead: see above), -EOVERFLOW (the new
 * row would exceed the protocol's limit), -EIO (HMAC), -ENOTRECOVERABLE (a promised length
 * was not kept: a bug). Errors are final for this row.
 */
int mask_row_step(struct mask_row *r, const uint8_t *in, size_t n, size_t *consumed,
		  uint8_t *out, size_t cap, size_t *produced, bool *done)
	__attribute__((warn_unused_result));

/*
 * The fields of a row in the binary layout (a DataRow's body, a binary COPY tuple: the
 * count, then each length word and value) at in[0..n), rewritten in one pass into out[0..cap):
 * the output's length (at least the 2-byte count), *consumed the input's. 0 when it
 * declines, as mask_row_whole() below says; the last masked field's length word must end
 * within la_cap (SIZE_MAX: no limit).
 */
size_t mask_fields_whole(const struct mask_plan *plan, const struct mask_env *env,
			 const uint8_t *in, size_t n, size_t la_cap, uint8_t *out, size_t cap,
			 size_t *consumed);

/* The field whose length word is at in[pos..n): false when the word or its value does not
 * lie whole there, or the word is no length; else its length word and value length. */
static inline bool mask_field_at(const uint8_t *in, size_t n, size_t pos, int32_t *len,
				 size_t *vlen)
{
	if (n - pos < 4)
		return false;
	*len = (int32_t)proto_read_u32(in + pos);
	*vlen = *len > 0 ? (size_t)*len : 0;
	return *len >= -1 && *vlen <= n - pos - 4;
}

/*
 * mask_fields_whole() where plan->in_place, into out[0..n) that holds a copy of in[0..n): the
 * row's masked values are written where they lie (its length and framing stay), everything
 * read from in (the bytes just received, where the copy's may have left the cache). Returns
 * the row's length, or 0 when it declines as mask_fields_whole() would (out's bytes then
 * undefined: copy the input again). Inline: the run loops of DataRow and COPY binary call it
 * once a row, and a call cost more than the walk.
 */
static inline size_t mask_cols_in_place(const struct mask_plan_col *cols, unsigned ncols,
					unsigned last_masked, const struct mask_env *env,
					const uint8_t *in, uint8_t *out, size_t n, size_t la_cap)
{
	size_t pos = 2;

	if (n < 2 || ((unsigned)in[0] << 8 | in[1]) != ncols)
		return 0;
	for (unsigned f = 0; f < ncols; f++) {
		int32_t len;
		size_t vlen;

		if (!mask_field_at(in, n, pos, &len, &vlen))
			return 0;
		if (f == last_masked && pos + 4 > la_cap)
			return 0; /* the machine answers -E2BIG */
		if (cols[f].kind != MASK_COL_CLEAR && len != -1 &&
		    !mask_value_in_copy_inline(&cols[f].action, env, in + pos + 4, out + pos + 4,
					       vlen))
			return 0;
		pos += 4 + vlen;
	}
	return pos;
}

/* The plan's pieces are taken apart by the caller of mask_cols_in_place() so that they stay
 * in locals, not read again after every call that writes through out; a loop over rows
 * holds them across the rows. */
static inline size_t mask_fields_in_place(const struct mask_plan *plan,
					  const struct mask_env *env, const uint8_t *in,
					  uint8_t *out, size_t n, size_t la_cap)
{
	return mask_cols_in_place(plan->cols, plan->ncols, (unsigned)plan->last_masked, env, in,
				  out, n, la_cap);
}

/*
 * mask_fields_in_place() over the DataRow messages, header included, at the start of
 * in[0..n), out[0..n) holding a copy of them. Returns the bytes of the messages done, in and
 * out alike: it stops before a message cut by the end of in and before the first row
 * mask_fields_in_place() declines (out's bytes from there on undefined: copy them again).
 */
size_t mask_rows_in_place(const struct mask_plan *plan, const struct mask_env *env,
			  const uint8_t *in, uint8_t *out, size_t n, size_t la_cap);

/*
 * The same rewrite for a row whose whole body is in[0..body_len), in one pass straight into
 * out[0..cap), header included: no lookahead, no field walker, nothing kept between calls.
 * Returns the replacement's length, or 0 when it declines: the row is malformed, a masked
 * length depends on the content, a value is not one mask_value_fast() takes, the decision
 * point lies beyond la_cap, or out is too small. Then mask_row_begin() and mask_row_step()
 * take the row from its start and give what they always give, bytes or error; whatever
 * this writes is exactly what they would write.
 */
size_t mask_row_whole(const struct mask_plan *plan, const struct mask_env *env,
		      const uint8_t *in, uint32_t body_len, uint32_t la_cap, uint8_t *out,
		      size_t cap);

#endif
