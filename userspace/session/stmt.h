/*
 * stmt: the prepared statements and portals one session has on its server, as the server
 * has them, for the stages that judge or record what a Bind or Execute will run.
 *
 * The connection's request tracker is the only writer, and it writes only what the server
 * confirmed: a Parse becomes a statement at its ParseComplete, a Close removes at its
 * CloseComplete, a Bind makes a portal at its BindComplete. Portals end with their
 * transaction (ReadyForQuery 'I') or a Close. Nothing is ever evicted silently: a session
 * that would hold more than the configured number of statements, or bytes of statement
 * text, has that Parse refused with an error. (PostgreSQL keeps SQL-level PREPARE in the
 * same namespace; those are the SQL layer's to follow, and sql_level marks such entries.)
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
	struct stmt_entry *next; /* hash chain */
	char *name;       /* "" for the unnamed statement */
	char *sql;        /* the statement text (NULL unless a stage keeps texts, or the
			   * message was too large to hold whole) */
	uint32_t sql_len;
	uint16_t nparams; /* parameter types the Parse declared */
	uint8_t cls;      /* the relay's own classification (enum sql_class), for metrics */
	bool sql_level;   /* made by SQL PREPARE (its text is the statement after AS) */
	/* cls is sql_classify()'s reading of sql, not the class a stage's verdict carried: a
	 * Parse that repeats this text may take it over without reading the text again. */
	bool cls_read;
	/* The text mentions PREPARE, DEALLOC(ATE) or DISCARD: an Execute of it may change this
	 * table (set by the request tracker when it makes the entry, so that an Execute of any
	 * other statement is not scanned again). */
	bool may_name_statements;
	uint32_t refs;    /* the table's own, plus one per portal bound from it */
	uint32_t words[STMT_STAGE_WORDS];
};

struct stmt_portal {
	struct stmt_portal *next;
	char *name; /* "" for the unnamed portal */
	struct stmt_entry *stmt;
};

/* Owned by the session's connection; zero-initialised is an empty table. */
struct stmt_table {
	struct stmt_entry **buckets;
	uint32_t nbuckets; /* 0 or a power of two */
	uint32_t count;
	size_t bytes;      /* names and texts held */
	struct stmt_portal *portals; /* named ones */
	/* What the unnamed portal runs (NULL: not bound, or bound from a statement pgwarden
	 * does not know). Held here, not in the list, since extended-protocol clients bind it
	 * once per statement: one reference, no allocation. */
	struct stmt_entry *unnamed_portal;
	uint32_t max_count; /* limits; 0: none */
	size_t max_bytes;
};

/* The statement name resolves to, or NULL (never prepared, or closed). */
struct stmt_entry *stmt_lookup(const struct stmt_table *t, const char *name);

/* The statement a portal was bound from, or NULL. */
struct stmt_entry *stmt_portal_lookup(const struct stmt_table *t, const char *portal);

/* Statements and text bytes held now (for listings and tests). */
static inline unsigned stmt_count(const struct stmt_table *t)
{
	return t->count;
}

static inline size_t stmt_bytes(const struct stmt_table *t)
{
	return t->bytes;
}

/* ---- the writer's side: the connection's request tracker only --------------------- */

/*
 * A statement the server has not confirmed yet (from a Parse or PREPARE on its way).
 * stmt_new() makes one; stmt_commit() moves it into the table at the server's
 * confirmation, replacing a statement of the same name; stmt_put() drops a reference.
 */
struct stmt_entry *stmt_new(const char *name, const char *sql, uint32_t sql_len,
			    uint16_t nparams, bool sql_level) __attribute__((warn_unused_result));
void stmt_commit(struct stmt_table *t, struct stmt_entry *e);
void stmt_put(struct stmt_entry *e);

/* Would one more statement of this name and text fit the limits? */
bool stmt_fits(const struct stmt_table *t, const char *name, uint32_t sql_len);

/* The server closed (Close 'S', DEALLOCATE) a statement. */
void stmt_remove(struct stmt_table *t, const char *name);
/* DEALLOCATE ALL, DISCARD ALL. */
void stmt_remove_all(struct stmt_table *t);

/* Bind confirmed: portal name now runs stmt (NULL when the statement was not known). 0 or
 * -ENOMEM. */
int stmt_portal_bind(struct stmt_table *t, const char *portal, struct stmt_entry *stmt)
	__attribute__((warn_unused_result));
void stmt_portal_close(struct stmt_table *t, const char *portal);
/* The transaction ended: its portals are gone. */
void stmt_portals_end(struct stmt_table *t);

/* Free everything the table holds. */
void stmt_table_release(struct stmt_table *t);

#endif
