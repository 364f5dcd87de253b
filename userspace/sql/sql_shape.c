/*
 * sql_shape: a statement's text with its numeric constants' digits left out, so that a
 * verdict judged for one literal can be found again for the next (pgbench -M simple, and
 * every application that inlines its ids). Contract in sql.h.
 *
 * Encoding, per token up to and including EOF:
 *   gap length (2 bytes, big-endian) | gap bytes | kind | flags | length (2) | bytes
 * where the gap is what the lexer skipped before the token (white space, comments) and a
 * NUMBER's length is 0 and its bytes absent. Every field that varies is length-prefixed,
 * so the bytes decode to one token sequence only.
 */
#include "sql/sql.h"

#include <errno.h>
#include <string.h>

#define SHAPE_RUN_MAX 0xffffu /* a gap or token longer than this does not get a shape */

static bool put_run(uint8_t *out, size_t cap, size_t *n, const char *s, size_t len)
{
	if (len > SHAPE_RUN_MAX || cap - *n < 2 + len)
		return false;
	out[(*n)++] = (uint8_t)(len >> 8);
	out[(*n)++] = (uint8_t)len;
	if (len)
		memcpy(out + *n, s, len);
	*n += len;
	return true;
}

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
		if (!put_run(out, cap, &n, lx.sql + prev_end, t.off - prev_end) || cap - n < 2)
			return -ENOSPC;
		out[n++] = (uint8_t)t.kind;
		out[n++] = (uint8_t)t.flags;
		if (!put_run(out, cap, &n, lx.sql + t.off, t.kind == SQL_TOK_NUMBER ? 0 : t.len))
			return -ENOSPC;
		prev_end = t.off + t.len;
	} while (t.kind != SQL_TOK_EOF);
	*out_len = n;
	return 0;
}
