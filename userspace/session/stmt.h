/*
 * stmt: the prepared statements and portals one session has on its server, as the server
 * has them, for the stages that judge or record what a Bind or Execute will run.
 *
 * The connection's request tracker is the only writer, and it writes only what the server
 * confirmed: a Parse becomes a statement at its ParseComplete, a Close removes at its
 * CloseComplete, a Bind makes a portal at its BindComplete; SQL PREPARE, DEALLOCATE and
 * DISCARD take effect at their CommandComplete (PostgreSQL keeps SQL-level and protocol-
 * level prepared statements in one namespace, so one table holds both). Portals end with
 * their transaction (ReadyForQuery 'I') or a Close. Nothing is ever evicted silently: a
 * session that would hold more than the configured number of statements, or bytes of
 * statement text, has that Parse or PREPARE refused with an error.
 *
 * Stages read the table during their callbacks (the connection's worker thread only) and
 * may keep one word per statement each (stmt_entry.words[stage index]) for what they
 * concluded at Parse time, so that a Bind or Execute costs them a lookup, not a re-parse.
 */
#ifndef PGWARDEN_STMT_H
#define PGWARDEN_STMT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STMT_STAGE_WORDS 8 /* == STAGE_MAX: one annotation word per stage */

struct stmt_entry {
	char *name;       /* "" for the unnamed statement */
	char *sql;        /* the statement text as the client sent it (NUL-terminated) */
	uint32_t sql_len;
	uint16_t nparams; /* parameter types the Parse declared */
	bool sql_level;   /* made by SQL PREPARE (its text is the statement after AS) */
	uint32_t refs;    /* portals bound from it, plus one while it is named */
	uint32_t words[STMT_STAGE_WORDS];
};

struct stmt_portal {
	char *name; /* "" for the unnamed portal */
	struct stmt_entry *stmt;
};

struct stmt_table;

/* The statement name resolves to, or NULL (never prepared, or closed). */
const struct stmt_entry *stmt_lookup(const struct stmt_table *t, const char *name);

/* The statement a portal was bound from, or NULL. */
const struct stmt_entry *stmt_portal_lookup(const struct stmt_table *t, const char *portal);

/* Statements and text bytes held now (for listings and tests). */
unsigned stmt_count(const struct stmt_table *t);
size_t stmt_bytes(const struct stmt_table *t);

#endif
