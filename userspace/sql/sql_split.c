/*
 * sql_split: the statements of a multi-statement Query string, as pieces that partition
 * the input (see sql.h for the contract and why routine bodies are split too).
 */
#include "sql/sql.h"

#include <string.h>

void sql_split_init(struct sql_splitter *s, const char *sql, size_t len, unsigned opts)
{
	sql_lex_init(&s->lx, sql, len, opts);
	s->piece_start = 0;
	/* Leading separators belong to the first piece: skip to its first token. */
	do
		sql_lex_next(&s->lx, &s->next);
	while (s->next.kind == SQL_TOK_SEMI);
}

static unsigned stmt_flags(const struct sql_token *t)
{
	unsigned f = 0;

	if (t->flags & SQL_TOKF_UNTERMINATED)
		f |= SQL_STMTF_UNTERMINATED;
	if (t->flags & SQL_TOKF_INVALID)
		f |= SQL_STMTF_INVALID;
	return f;
}

bool sql_split_next(struct sql_splitter *s, struct sql_stmt *st)
{
	struct sql_token t = s->next;

	if (t.kind == SQL_TOK_EOF)
		return false;

	st->off = s->piece_start;
	st->text_off = t.off;
	st->flags = 0;

	size_t last_end = t.off;

	while (t.kind != SQL_TOK_EOF && t.kind != SQL_TOK_SEMI) {
		st->flags |= stmt_flags(&t);
		last_end = t.off + t.len;
		sql_lex_next(&s->lx, &t);
	}
	st->text_len = last_end - st->text_off;

	/* The piece takes its run of separators; after the last statement, everything. */
	size_t piece_end = t.off + t.len;

	while (t.kind == SQL_TOK_SEMI) {
		piece_end = t.off + t.len;
		sql_lex_next(&s->lx, &t);
	}
	if (t.kind == SQL_TOK_EOF) {
		st->flags |= stmt_flags(&t); /* input ended inside a comment */
		piece_end = s->lx.len;
	}
	st->len = piece_end - st->off;
	s->piece_start = piece_end;
	s->next = t;
	return true;
}

/* The lexer's whitespace ([ \t\n\r\f], sql_lex.c), and the separator. */
static bool split_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f';
}

bool sql_split_single(const char *sql, size_t len)
{
	size_t i = 0;
	const char *semi;

	while (i < len && split_blank(sql[i]))
		i++;
	if (i == len || !((sql[i] | 0x20) >= 'a' && (sql[i] | 0x20) <= 'z'))
		return false;
	semi = memchr(sql + i, ';', len - i);
	if (!semi)
		return true;
	for (i = (size_t)(semi - sql); i < len; i++)
		if (sql[i] != ';' && !split_blank(sql[i]))
			return false;
	return true;
}
