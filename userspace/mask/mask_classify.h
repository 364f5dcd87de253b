/*
 * mask_classify: the classifier masking asks about each statement (mask_source.analyse):
 * the SQL analysis of sql/ (THE lexer, splitter and analyser) turned into
 * struct mask_stmt_info, one per statement of a Query's or a Parse's text.
 *
 * Everything it cannot tell stays at the fail-closed answer of mask_stmt.h:
 *   - refs: NONE for a statement that names no relation and calls no function and whose
 *     analysis is sure of both (SELECT 1, SET, BEGIN); NAMES, with the exact relations and
 *     functions in names[], when it is sure of every name (the stage asks the catalog
 *     whether they are clean: this file knows no catalog); MASKED otherwise (an unsure or
 *     opaque analysis, db.schema.table, more names than MASK_STMT_NAMES_BYTES hold), and
 *     computed columns then come out NULL for masked identities;
 *   - COPY ... TO STDOUT: the table, its column list and every option read exactly
 *     (FORMAT, DELIMITER, NULL, HEADER, QUOTE, ESCAPE, ENCODING, FORCE_QUOTE, and the
 *     pre-9.0 spellings); an option it does not know leaves copy_opts_known false, and
 *     the stage refuses such a COPY (0A000) rather than guess at its format;
 *   - cursors (DECLARE, FETCH, MOVE, CLOSE) and SQL prepared statements (PREPARE,
 *     EXECUTE, DEALLOCATE, DISCARD ALL) by name, so a FETCH or an EXECUTE is masked as
 *     the statement that defined it;
 *   - ddl for the classes that change the catalog (and DO blocks and string bodies, which
 *     may), no_rows for statements that cannot
 *     return rows (transaction control, SET, DDL, writes without RETURNING, COPY FROM).
 */
#ifndef PGWARDEN_MASK_CLASSIFY_H
#define PGWARDEN_MASK_CLASSIFY_H

#include "mask/mask_stmt.h"

#include <stddef.h>

/* Describe each statement of sql[0..len) into out[0..cap), in order; lex_opts are sql.h's.
 * Returns how many were described (at least 1 for any text, empty included). */
int mask_classify(const char *sql, size_t len, unsigned lex_opts, struct mask_stmt_info *out,
		  unsigned cap);

/* One statement (no splitting). */
void mask_classify_one(const char *sql, size_t len, unsigned lex_opts,
		       struct mask_stmt_info *out);

#endif
