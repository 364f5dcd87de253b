/*
 * track_internal: what the request tracker's two files share with each other and with
 * nothing else: track.c (the queue of requests and their answers) and track_sql.c (the
 * SQL-level PREPARE, DEALLOCATE and DISCARD a Query or an Execute runs, which change the
 * statement table when the server confirms them).
 */
#ifndef PGWARDEN_TRACK_INTERNAL_H
#define PGWARDEN_TRACK_INTERNAL_H

#include "relay/track.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The i-th request still owed an answer, oldest first (i < t->count). */
static inline struct track_entry *track_at(const struct track *t, uint32_t i)
{
	return &t->ring[(t->head + i) & (t->cap - 1)];
}

/*
 * Would one more statement of this name and text length fit the limits, counting what the
 * requests still on their way may create (pipelined Parses, a Query's PREPAREs, Executes of
 * an SQL PREPARE) and extra_count/extra_bytes more? (track.c)
 */
bool track_fits(const struct track *t, const char *name, uint32_t sql_len, uint32_t extra_count,
		size_t extra_bytes);

/* ---- track_sql.c ---- */

/* Does the text hold PREPARE, DEALLOC(ATE) or DISCARD, in any case? The one-pass test that
 * spares every other text the lexer (stmt_entry.may_name_statements caches it). */
bool track_sql_mentions_statement_words(const char *sql, size_t len);

/*
 * The SQL-level changes a whole Query's statements would make, kept on e until the server
 * confirms each; words go with what a Query of one PREPARE prepares. 0, -ENOSPC when its
 * PREPAREs would exceed the statement limits, -ENOMEM (e then holds no changes).
 */
int track_sql_query_changes(struct track *t, struct track_entry *e, const char *sql, size_t len,
			    const uint32_t *words) __attribute__((warn_unused_result));

/* Does an Execute of statement s run an SQL PREPARE? 1 (it does, and what it prepares fits
 * the limits), 0 (it prepares nothing, or pgwarden does not know its text), -ENOSPC (it
 * would exceed the limits), -ENOMEM. */
int track_sql_execute_prepares(const struct track *t, const struct stmt_entry *s)
	__attribute__((warn_unused_result));

/* The server confirmed one SQL statement of request e with this command tag (NULL: none):
 * apply what it changed in the statement table. */
void track_sql_confirmed(struct track *t, struct track_entry *e, const char *tag);

/* Release the changes a Query's entry still holds. */
void track_sql_changes_free(struct track_entry *e);

#endif
