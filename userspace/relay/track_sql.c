/*
 * track_sql: the SQL-level prepared statements the request tracker follows (see track.h):
 * a Query's PREPARE, DEALLOCATE and DISCARD ALL statements, read when it is sent and applied
 * when the server confirms each, and an Execute whose statement text is one of them.
 */
#include "relay/track_internal.h"
#include "sql/sql.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void track_sql_changes_free(struct track_entry *e)
{
	for (uint32_t i = 0; i < e->nchanges; i++) {
		free(e->changes[i].name);
		stmt_put(e->changes[i].stmt);
	}
	free(e->changes);
	e->changes = NULL;
	e->nchanges = 0;
}

#define TRACK_SQL_BYTES(b) (0x0101010101010101ull * (uint8_t)(b))
#define TRACK_SQL_LAST_BYTE (0x80ull << 56)

/* The high bit of every byte of x equal to c (x - 0x01.. & ~x & 0x80.. flags every zero
 * byte, and at most some byte above one: a candidate too many, never one too few). */
static uint64_t track_sql_bytes_equal(uint64_t x, uint8_t c)
{
	x ^= TRACK_SQL_BYTES(c);
	return (x - TRACK_SQL_BYTES(1)) & ~x & TRACK_SQL_BYTES(0x80);
}

/*
 * May a word begin in these eight bytes (byte i at bits 8i)? Where, in ASCII lower case,
 * a 'p' is followed by an 'r', or a 'd' by an 'e' or an 'i'; the last byte's next one is in
 * the next block, so a 'p' or a 'd' there may begin one too. The second letter rules out
 * most of the 'p's and 'd's of ordinary SQL (pgbench_accounts, id, and).
 */
static bool track_sql_block_may_start(uint64_t block)
{
	uint64_t lower = block | TRACK_SQL_BYTES(0x20);
	uint64_t p = track_sql_bytes_equal(lower, 'p'), d = track_sql_bytes_equal(lower, 'd');
	uint64_t pr, de;

	if (!(p | d)) /* most blocks: the second letters need not be looked for */
		return false;
	pr = track_sql_bytes_equal(lower, 'r') >> 8 | TRACK_SQL_LAST_BYTE;
	de = (track_sql_bytes_equal(lower, 'e') | track_sql_bytes_equal(lower, 'i')) >> 8 |
	     TRACK_SQL_LAST_BYTE;
	return (p & pr) || (d & de);
}

/*
 * Does the text hold PREPARE, DEALLOC(ATE) or DISCARD, in any case? One pass over it, no
 * lexer and no server parameter lookup: a keyword is never split by a comment or a quote,
 * so a text without these words changes nothing, and most texts (every Query, every
 * Execute of a prepared statement) are spared the rest. Runs for every Query: eight bytes
 * where no word may begin are passed over at once.
 */
bool track_sql_mentions_statement_words(const char *sql, size_t len)
{
	static const size_t word_len = 7; /* "prepare", "dealloc", "discard" */
	size_t i = 0;

	while (i + word_len <= len) {
		uint64_t block;
		size_t stop = len; /* the tail shorter than a block: byte by byte */

		if (i + sizeof(block) <= len) {
			memcpy(&block, sql + i, sizeof(block));
			block = le64toh(block);
			stop = i + sizeof(block);
			if (!track_sql_block_may_start(block)) {
				i = stop;
				continue;
			}
		}
		for (; i < stop && i + word_len <= len; i++) {
			char c = (char)(sql[i] | 0x20); /* ASCII lower case */

			if (c == 'p' && strncasecmp(sql + i, "prepare", word_len) == 0)
				return true;
			if (c == 'd' && (strncasecmp(sql + i, "dealloc", word_len) == 0 ||
					 strncasecmp(sql + i, "discard", word_len) == 0))
				return true;
		}
	}
	return false;
}

/*
 * Does this statement begin with PREPARE, DEALLOCATE or DISCARD? The cheap test that spares
 * every other statement the analysis.
 */
static bool track_sql_may_change(const char *sql, size_t len, unsigned opts)
{
	struct sql_lexer lx;
	struct sql_token tok;

	sql_lex_init(&lx, sql, len, opts);
	sql_lex_next(&lx, &tok);
	return sql_tok_is(&lx, &tok, "prepare") || sql_tok_is(&lx, &tok, "deallocate") ||
	       sql_tok_is(&lx, &tok, "discard");
}

/* SQL text is split as the server splits it: with standard_conforming_strings off, a
 * backslash escapes a quote in '' strings. */
static unsigned track_sql_lex_opts(const struct track *t)
{
	const char *scs = t->session ? session_server_param(t->session,
							    "standard_conforming_strings") : NULL;

	return scs && strcmp(scs, "on") ? SQL_LEX_BACKSLASH_QUOTES : 0;
}

/*
 * What one SQL statement (a Query's, or an executed Parse's text) would change in the
 * statement table: *c filled and 1, 0 when nothing, -ENOMEM. *a is the caller's scratch
 * analysis (allocated at the first need, freed by the caller). DISCARD is told by its tag.
 */
static int track_sql_change_of(const struct track *t, const char *sql, size_t len,
			       size_t text_end, struct sql_analysis **a,
			       struct track_sql_change *c)
{
	unsigned opts;

	memset(c, 0, sizeof(*c));
	if (!track_sql_mentions_statement_words(sql, len))
		return 0;
	opts = track_sql_lex_opts(t);
	if (!track_sql_may_change(sql, len, opts))
		return 0;
	if (!*a && !(*a = malloc(sizeof(**a))))
		return -ENOMEM;
	sql_analyze(sql, len, opts, *a);
	switch ((*a)->prep) {
	case SQL_PREP_PREPARE: {
		const char *body = sql + (*a)->prep_body_off;
		size_t body_len = text_end > (*a)->prep_body_off ? text_end - (*a)->prep_body_off : 0;

		c->op = TRACK_SQL_PREPARE;
		c->stmt = stmt_new((*a)->prep_name, t->keep_text ? body : NULL, (uint32_t)body_len,
				   0, true);
		if (!c->stmt)
			return -ENOMEM;
		c->stmt->cls = (uint8_t)sql_classify(body, body_len, opts, NULL);
		c->stmt->may_name_statements = c->stmt->sql &&
					       track_sql_mentions_statement_words(body, body_len);
		return 1;
	}
	case SQL_PREP_DEALLOCATE:
		c->op = TRACK_SQL_DEALLOCATE;
		c->name = strdup((*a)->prep_name);
		return c->name ? 1 : -ENOMEM;
	case SQL_PREP_DEALLOCATE_ALL:
		c->op = TRACK_SQL_DEALLOCATE_ALL;
		return 1;
	default:
		return 0;
	}
}

int track_sql_query_changes(struct track *t, struct track_entry *e, const char *sql, size_t len,
			    const uint32_t *words)
{
	struct sql_analysis *a = NULL;
	struct sql_splitter sp;
	struct sql_stmt st;
	uint32_t part = 0, cap = 0, added = 0;
	size_t added_bytes = 0;
	int r = 0;

	/* Most Queries change nothing: a text without these words needs no split. */
	if (!track_sql_mentions_statement_words(sql, len))
		return 0;
	sql_split_init(&sp, sql, len, track_sql_lex_opts(t));
	for (; sql_split_next(&sp, &st); part++) {
		struct track_sql_change c;

		r = track_sql_change_of(t, sql + st.off, st.len, st.text_off + st.text_len - st.off,
					&a, &c);
		if (r < 0)
			break;
		if (r == 0)
			continue;
		r = 0;
		c.part = part;
		if (c.op == TRACK_SQL_PREPARE) {
			/* Counted against what the Query's earlier PREPAREs add too. */
			if (!track_fits(t, c.stmt->name, c.stmt->sql_len, added, added_bytes)) {
				stmt_put(c.stmt);
				r = -ENOSPC;
				break;
			}
		}
		if (c.stmt) {
			added++;
			added_bytes += strlen(c.stmt->name) + c.stmt->sql_len;
		}
		if (e->nchanges == cap) {
			struct track_sql_change *n;

			cap = cap ? cap * 2 : 2;
			n = realloc(e->changes, cap * sizeof(*n));
			if (!n) {
				free(c.name);
				stmt_put(c.stmt);
				r = -ENOMEM;
				break;
			}
			e->changes = n;
		}
		e->changes[e->nchanges++] = c;
	}
	free(a);
	/* A Query that is one PREPARE: the stages' words are about what it prepares. */
	if (!r && part == 1 && e->nchanges == 1 && e->changes[0].stmt && words)
		memcpy(e->changes[0].stmt->words, words, sizeof(e->changes[0].stmt->words));
	if (r)
		track_sql_changes_free(e);
	return r;
}

int track_sql_execute_prepares(const struct track *t, const struct stmt_entry *s)
{
	struct sql_analysis *an = NULL;
	struct track_sql_change c;
	bool fits;
	int r;

	if (!s->sql || !s->may_name_statements)
		return 0;
	r = track_sql_change_of(t, s->sql, s->sql_len, s->sql_len, &an, &c);
	free(an);
	free(c.name);
	if (r != 1 || c.op != TRACK_SQL_PREPARE) {
		stmt_put(c.stmt);
		return r < 0 ? r : 0;
	}
	fits = track_fits(t, c.stmt->name, c.stmt->sql_len, 0, 0);
	stmt_put(c.stmt);
	return fits ? 1 : -ENOSPC;
}

/* What one confirmed change does to the statement table. */
static void track_sql_apply(struct track *t, struct track_sql_change *c)
{
	switch (c->op) {
	case TRACK_SQL_PREPARE:
		stmt_commit(&t->stmts, c->stmt);
		c->stmt = NULL;
		break;
	case TRACK_SQL_DEALLOCATE:
		stmt_remove(&t->stmts, c->name);
		break;
	default:
		stmt_remove_all(&t->stmts);
		break;
	}
}

/*
 * The server confirmed one SQL statement with this tag: what it changed in the statement
 * table. A Query's changes were read when it was sent (part: which statement this is); an
 * Execute's are read from the text of the statement it ran. The tag must agree with what
 * pgwarden read: where it does not, DISCARD ALL and DEALLOCATE ALL still empty the table,
 * and a PREPARE pgwarden could not follow leaves its name unknown (policy denies
 * EXECUTE of a name it does not know).
 */
void track_sql_confirmed(struct track *t, struct track_entry *e, const char *tag)
{
	uint8_t want;

	if (!tag || (tag[0] != 'P' && tag[0] != 'D')) /* spares every other tag the compares */
		return;
	if (!strcmp(tag, "PREPARE"))
		want = TRACK_SQL_PREPARE;
	else if (!strcmp(tag, "DEALLOCATE"))
		want = TRACK_SQL_DEALLOCATE;
	else if (!strcmp(tag, "DEALLOCATE ALL") || !strcmp(tag, "DISCARD ALL"))
		want = TRACK_SQL_DEALLOCATE_ALL;
	else
		return;
	if (e->kind == TRACK_QUERY) {
		for (uint32_t i = 0; i < e->nchanges; i++)
			if (e->changes[i].part == e->parts && e->changes[i].op == want) {
				track_sql_apply(t, &e->changes[i]);
				return;
			}
	} else if (e->kind == TRACK_EXECUTE && e->stmt && e->stmt->sql &&
		   e->stmt->may_name_statements) {
		struct sql_analysis *a = NULL;
		struct track_sql_change c;

		if (track_sql_change_of(t, e->stmt->sql, e->stmt->sql_len, e->stmt->sql_len, &a,
					&c) == 1 && c.op == want)
			track_sql_apply(t, &c);
		free(c.name);
		stmt_put(c.stmt);
		free(a);
		return;
	}
	if (want == TRACK_SQL_DEALLOCATE_ALL)
		stmt_remove_all(&t->stmts);
}
