/*
 * mask_stmt: what the SQL classifier tells masking about one statement.
 *
 * The policy engineer's classifier (userspace/sql/) fills one struct per statement of a
 * Query's text or a Parse's text, through the mask_source.analyse callback
 * (mask_stage.h). Everything defaults to the fail-closed answer: a zeroed struct says
 * "references unknown, may return rows, not a COPY we can read", which masks every computed
 * column and refuses what cannot be masked.
 */
#ifndef PGWARDEN_MASK_STMT_H
#define PGWARDEN_MASK_STMT_H

#include "mask/mask_copy.h"
#include "mask/mask_plan.h"
#include "mask/mask_policy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MASK_COPY_COLS_BYTES 512 /* a longer COPY column list is treated as unknown */
/* The names of a MASK_REFS_NAMES statement: more than fit, and it references MASKED. */
#define MASK_STMT_NAMES_BYTES 512

enum mask_name_use {
	MASK_NAME_NONE = 0,
	MASK_NAME_DEFINES, /* DECLARE name CURSOR FOR q, PREPARE name AS q: refs are q's */
	MASK_NAME_USES,    /* FETCH/MOVE name, EXECUTE name: refs come from the definition */
	MASK_NAME_DROPS,   /* CLOSE name, DEALLOCATE name */
	MASK_NAME_DROPS_ALL, /* CLOSE ALL, DEALLOCATE ALL, DISCARD ALL */
};

struct mask_stmt_info {
	/* Zero is UNKNOWN, not NONE: set refs_known to say refs is the classifier's answer. */
	bool refs_known;
	enum mask_refs refs;
	/* The statement cannot return rows (INSERT/UPDATE/DELETE without RETURNING, DDL, SET,
	 * transaction control...). A portal of such a statement may run undescribed. */
	bool no_rows;
	/* The statement is DDL: the catalog must be read again once it completes. */
	bool ddl;
	/* COPY ... TO STDOUT */
	bool copy_to;
	bool copy_query;       /* COPY (query) TO: the columns cannot be placed */
	char copy_schema[MASK_IDENT_MAX + 1]; /* "" when the name is unqualified */
	char copy_table[MASK_IDENT_MAX + 1];
	/* the column list as the server resolves the names, each NUL-terminated, one after
	 * the other; ncopy_cols 0: no list (every column) */
	char copy_cols[MASK_COPY_COLS_BYTES];
	uint16_t ncopy_cols;
	bool copy_cols_overflow; /* the list did not fit: its columns count as unknown */
	bool copy_opts_known;  /* the options below could be read */
	struct mask_copy_opts copy_opts;
	char copy_encoding[32]; /* ENCODING option, "" when absent */
	/* refs NAMES: the relations, then the functions, the statement names, each as two
	 * NUL-terminated strings one after the other, schema ("" when unqualified) and name,
	 * as the server resolves them (mask_stmt_next_name() walks them) */
	char names[MASK_STMT_NAMES_BYTES];
	uint8_t nrelations, nfunctions;
	/* cursors and SQL-level prepared statements */
	enum mask_name_use name_use;
	char name[MASK_IDENT_MAX + 1];
};

static inline enum mask_refs mask_stmt_refs(const struct mask_stmt_info *s)
{
	return s && s->refs_known ? s->refs : MASK_REFS_UNKNOWN;
}

/* A COPY TO whose data cannot be masked as it comes: its columns or options are unknown.
 * The stage refuses the Query or Parse holding it (0A000); pgwardenctl policy explain says
 * so. */
static inline bool mask_stmt_copy_unmaskable(const struct mask_stmt_info *in)
{
	return in->copy_to && (in->copy_query || in->copy_cols_overflow || !in->copy_opts_known) &&
	       mask_stmt_refs(in) != MASK_REFS_NONE;
}

/* The (schema, name) pair at *pos of s->names, advancing *pos; false past the end or when
 * the buffer does not hold a whole pair (then the names count as unknown). */
static inline bool mask_stmt_next_name(const struct mask_stmt_info *s, size_t *pos,
				       const char **schema, const char **name)
{
	const char *end = s->names + sizeof(s->names);
	const char *a = s->names + *pos, *a_end, *b_end;

	if (*pos >= sizeof(s->names) || !(a_end = memchr(a, 0, (size_t)(end - a))) ||
	    !(b_end = memchr(a_end + 1, 0, (size_t)(end - a_end - 1))))
		return false;
	*schema = a;
	*name = a_end + 1;
	*pos = (size_t)(b_end + 1 - s->names);
	return true;
}

#endif
