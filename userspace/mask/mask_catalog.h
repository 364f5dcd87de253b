/*
 * mask_catalog: rules resolved against the server's catalog: (table OID, attribute number)
 * of every masked column, with the type its values have on the wire.
 *
 * pgwarden runs mask_catalog_query() on a connection of its own (where that connection
 * lives is the relay's business): simple Query protocol, one result of text columns. The
 * query names every catalog relation, function and operator with its schema, so a
 * search_path the role could set cannot redirect it; run it with search_path=pg_catalog
 * anyway (mask_catalog_startup_params() has the startup parameter). Rule names go into the
 * text as hex and are decoded by the server (pg_catalog.decode), so no quoting rule, no
 * standard_conforming_strings setting and no encoding can turn a name into SQL.
 *
 * The result is fed row by row to a builder (mask_catalog_builder_row(), any order, each
 * DataRow checked), which makes an immutable, refcounted struct mask_catalog:
 *   - masked columns by (table OID, attnum): the named table's, and the same-named
 *     column of every table in its inheritance tree (partitions and children below it,
 *     parents above it), since rows of one are read through the others;
 *   - each column's type resolved through domains (also domains over arrays and arrays
 *     of domains) to the base type RowDescription reports, with its typmod;
 *   - derived relations: views and materialized views that read a masked column, and
 *     views over those, recursively. Their columns carry the view's OID in RowDescription,
 *     so they are treated like computed columns (mask_plan.h);
 *   - planner statistics (pg_statistic*, pg_stats, pg_stats_ext, pg_stats_ext_exprs) as
 *     derived relations of every rule, and views over them: they hold sampled values of
 *     every column, masked ones included;
 *   - the masked tables' names and columns, to order a COPY's columns;
 *   - what a computed column may be read from in clear (mask_catalog_relation_clean(),
 *     mask_catalog_function_clean(), mask_catalog_code_hooks()): the clean relations (plain
 *     and partitioned tables with no masked column, in no inheritance tree with a masked
 *     table, not statistics), at most MASK_CATALOG_CLEAN_MAX of them (beyond, none counts
 *     as clean); the built-in functions of a static list that compute from their
 *     arguments alone, less those a function of the same name outside pg_catalog could
 *     shadow; whether operators or casts outside pg_catalog and extensions exist;
 *   - warnings: rules that name nothing (yet), strategies that do not apply to a column's
 *     type and fall back to null.
 *
 * Refresh: build a new catalog on reload and after DDL (mask_ddl_invalidates()) and
 * publish it; sessions take the current one at each statement.
 */
#ifndef PGWARDEN_MASK_CATALOG_H
#define PGWARDEN_MASK_CATALOG_H

#include "mask/mask_policy.h"
#include "mask/mask_value.h"
#include "proto/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MASK_CATALOG_NCOLS 13 /* columns of the query's result */
#define MASK_CATALOG_CLEAN_MAX 10000u /* clean relations the catalog holds, at most */

/* One masked column of one table. */
struct mask_column {
	uint32_t table_oid;
	int16_t attnum;
	uint32_t type_oid;     /* the base type, as RowDescription reports it */
	struct mask_type type; /* its class; typmod as the catalog has it */
	/* The policy columns that name it: the table's own first (direct), then those that
	 * reach it through inheritance. */
	uint32_t *cols;
	uint8_t *direct;
	unsigned ncols;
};

struct mask_catalog;
struct mask_catalog_builder;

/*
 * The resolution query for every column the policy names, as a NUL-terminated string the
 * caller frees. NULL with *err set: -ENOMEM, or -ENODATA when the policy names no column
 * (nothing to resolve: use mask_catalog_empty()).
 */
char *mask_catalog_query(const struct mask_policy *mp, int *err)
	__attribute__((warn_unused_result));

/* The StartupMessage parameter pgwarden's own connection should send: options with
 * -c search_path=pg_catalog. */
const char *mask_catalog_startup_options(void);

/* A builder for mp's catalog (holds a reference to mp). NULL on -ENOMEM. */
struct mask_catalog_builder *mask_catalog_builder_new(struct mask_policy *mp);

/* The result's RowDescription: 0, or -EPROTO when it is not the query's shape. */
int mask_catalog_builder_rowdesc(struct mask_catalog_builder *b, const struct proto_msg *m)
	__attribute__((warn_unused_result));

/* One DataRow of the result: 0, -EPROTO (malformed, or not a row this query makes),
 * -ENOMEM. */
int mask_catalog_builder_row(struct mask_catalog_builder *b, const struct proto_msg *m)
	__attribute__((warn_unused_result));

/* Make the catalog (the builder is freed either way). 0 or -ENOMEM. */
int mask_catalog_builder_finish(struct mask_catalog_builder *b, struct mask_catalog **out)
	__attribute__((warn_unused_result));
void mask_catalog_builder_free(struct mask_catalog_builder *b);

/* A catalog with nothing masked, for a policy that names no column. */
int mask_catalog_empty(struct mask_policy *mp, struct mask_catalog **out)
	__attribute__((warn_unused_result));

void mask_catalog_get(struct mask_catalog *c);
void mask_catalog_put(struct mask_catalog *c); /* NULL is fine */

/* The policy this catalog resolves (a profile of another policy must not use it). */
const struct mask_policy *mask_catalog_policy(const struct mask_catalog *c);

/* The masked column at (table_oid, attnum), or NULL. */
const struct mask_column *mask_catalog_lookup(const struct mask_catalog *c, uint32_t table_oid,
					      int16_t attnum);

/* The strategy a profile gives a catalog column: its direct rule first. */
const struct mask_strategy *mask_column_strategy(const struct mask_column *col,
						 const struct mask_profile *p);

/* Is relid a view or materialized view that reads a column this profile masks? */
bool mask_catalog_derived(const struct mask_catalog *c, uint32_t relid,
			  const struct mask_profile *p);

/*
 * The columns `COPY [schema.]table [(col, ...)] TO` writes, in order, as (table OID,
 * attnum), when table is one of the tables this catalog knows (a masked table, or a table
 * in the inheritance tree of one). Names are identifiers as the server resolves them
 * (unquoted ones already folded to lower case). schema NULL: the name is unqualified and
 * the session's search_path picks the table; every known table of that name is a
 * candidate, and they must agree.
 *
 * Returns the count of columns written to out[0..cap); 0 when no known table has that
 * name (nothing in it is masked); -ENOENT when a listed column does not exist (the server
 * will refuse the COPY too); -E2BIG when cap is too small; -EDOM when an unqualified name
 * matches several known tables (the caller must treat every column as unknown).
 * Generated columns are left out of the default list, as PostgreSQL 12 to 17 do.
 */
struct mask_origin {
	uint32_t table_oid; /* 0: not a column of a masked table */
	int16_t attnum;
};
int mask_catalog_copy_columns(const struct mask_catalog *c, const char *schema,
			      const char *table, const char *const *cols, unsigned ncols,
			      struct mask_origin *out, unsigned cap)
	__attribute__((warn_unused_result));

/*
 * May a computed column read from relation [schema.]rel carry no masked data? True only
 * when the catalog lists it as clean: a plain or partitioned table with no masked column,
 * in no inheritance tree with a masked table. schema NULL or "": the name is unqualified,
 * and every relation of that name in the database must be clean (search_path picks one).
 * A name the catalog does not know (created since it was read, a temporary table, a view,
 * a foreign table) is not clean.
 */
bool mask_catalog_relation_clean(const struct mask_catalog *c, const char *schema,
				 const char *rel);

/* Does the catalog know relation relid: a masked table, a derived relation, or a clean
 * relation? A relation it does not know was made since it was read, or is of a kind the
 * clean set leaves out (views over no masked column, foreign tables, ...). */
bool mask_catalog_relid_listed(const struct mask_catalog *c, uint32_t relid);

/* Is a call of [schema.]name one of the safe built-ins (computed from its arguments
 * alone), written unqualified or as pg_catalog.name, with no function of that name
 * outside pg_catalog that search_path could put first? */
bool mask_catalog_function_clean(const struct mask_catalog *c, const char *schema,
				 const char *name);

/* Are there operators or casts whose functions lie outside pg_catalog and extensions
 * (any expression may run them)? True when the query could not tell. */
bool mask_catalog_code_hooks(const struct mask_catalog *c);

/* Catalogs are numbered as they are made (before their query is sent): a catalog whose
 * generation is at least mask_catalog_next_generation() taken at a moment was read after
 * that moment. */
uint64_t mask_catalog_generation(const struct mask_catalog *c);
uint64_t mask_catalog_next_generation(void);

/* Warnings of the resolution, one line each (valid while the catalog is). */
unsigned mask_catalog_nwarnings(const struct mask_catalog *c);
const char *mask_catalog_warning(const struct mask_catalog *c, unsigned i);

/* Does a statement with this command tag change what the catalog says (DDL)? */
bool mask_ddl_invalidates(const char *command_tag);

/*
 * The catalog sessions use now. publish() takes over the caller's reference and drops
 * the previous catalog's; acquire() returns a new reference, or NULL before the first
 * publish. Safe from any thread.
 */
void mask_catalog_publish(struct mask_catalog *c);
struct mask_catalog *mask_catalog_acquire(void);

#endif
