/*
 * sql_shape: a statement's text with its numeric constants' digits left out, so that a
 * verdict judged for one literal can be found again for the next (pgbench -M simple, and
 * every application that inlines its ids). Contract in sql.h.
 *
 * Encoding, per token up to and including EOF:
 *   gap length (2 bytes, big-endian) | kind | flags | length (2) | gap bytes | bytes
 * where the gap is what the lexer skipped before the token (white space, comments) and a
 * NUMBER's length is 0 and its bytes absent. The lengths come first, so the bytes decode to
 * one token sequence only; the gap and the token lie side by side in the text, so they are
 * copied at once (the shape is made for every Query a policy judges).
 */
#include "sql/sql.h"

#include <errno.h>
#include <string.h>

#define SHAPE_RUN_MAX 0xffffu /* a gap or token longer than this does not get a shape */

int sql_shape(const char *sql, size_t len, unsigned opts, uint8_t *out, size_t cap,
	      size_t *out_len)
{
	struct sql_lexer lx;
	struct sql_token t;
	size_t n = 0, prev_end = 0;

	*out_len = 0;
	if (!sql) {
		sql = "";
		len = 0;
	}
	sql_lex_init(&lx, sql, len, opts);
	do {
		sql_lex_next(&lx, &t);
		size_t gap = t.off - prev_end, kept = t.kind == SQL_TOK_NUMBER ? 0 : t.len;

		if (gap > SHAPE_RUN_MAX || kept > SHAPE_RUN_MAX || cap - n < 6 + gap + kept)
			return -ENOSPC;
		out[n++] = (uint8_t)(gap >> 8);
		out[n++] = (uint8_t)gap;
		out[n++] = (uint8_t)t.kind;
		out[n++] = (uint8_t)t.flags;
		out[n++] = (uint8_t)(kept >> 8);
		out[n++] = (uint8_t)kept;
		if (gap + kept)
			memcpy(out + n, lx.sql + prev_end, gap + kept);
		n += gap + kept;
		prev_end = t.off + t.len;
	} while (t.kind != SQL_TOK_EOF);
	*out_len = n;
	return 0;
}
