/*
 * mask_plan: which columns of one result are masked, and how, for one profile.
 *
 * A result is described by the server (RowDescription: per column its origin table OID
 * and attribute number, type, typmod, format) or, for COPY, by the statement (the column
 * list or the table's columns, resolved by mask_catalog_copy_columns()). Each column gets
 * one of:
 *   CLEAR   the profile does not mask it: its bytes pass unchanged;
 *   MASKED  a masked column (found by origin in the catalog): its strategy, as an action
 *           for its type and format (mask_value.h), possibly `null` where the strategy
 *           does not apply;
 *   WHOLE   masked whole (NULL) because its data may come from a masked column without
 *           the server saying so:
 *             - computed (table OID 0: casts, concatenation, functions, row_to_json,
 *               whole-row values, aggregates, UNION) in a statement whose references are
 *               not NONE (the stage resolves NAMES against the catalog first);
 *             - a column of a view or materialized view that reads a masked column
 *               (mask_catalog_derived());
 *             - a column of a relation the catalog does not list, while the catalog may
 *               be older than DDL a masked session ran (catalog_current false): a view
 *               over a masked column made in the same transaction is one;
 *             - a masked column whose type is no longer the one resolved (ALTER TABLE
 *               since the last refresh);
 *             - in a COPY whose columns cannot be told (COPY (query), an ambiguous name).
 * When the profile says computed columns are denied and the result has a computed column
 * that references masked data, plan.deny is set: the stage refuses the statement where it
 * still can, and the columns stay WHOLE where it cannot (never clear).
 *
 * The classifier says whether a statement references a masked column (enum mask_refs);
 * NONE must only be said when it is sure, because computed columns then pass clear. NAMES
 * says the statement names exactly the relations and functions the classifier lists; only
 * the catalog can tell whether those are clean (mask_catalog_relation_clean() and
 * mask_catalog_function_clean(), asked by the stage), so the stage
 * turns NAMES into NONE or MASKED before it plans: a plan given NAMES masks as for MASKED.
 */
#ifndef PGWARDEN_MASK_PLAN_H
#define PGWARDEN_MASK_PLAN_H

#include "mask/mask_catalog.h"
#include "mask/mask_policy.h"
#include "mask/mask_value.h"
#include "proto/proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum mask_refs {
	MASK_REFS_NONE = 0, /* the statement references no masked column: sure */
	MASK_REFS_MASKED,   /* it references one */
	MASK_REFS_UNKNOWN,  /* cannot tell (no classifier, an opaque construct) */
	MASK_REFS_NAMES,    /* names exactly these relations and functions (mask_stmt_info) */
};

enum mask_col_kind {
	MASK_COL_CLEAR = 0,
	MASK_COL_MASKED,
	MASK_COL_WHOLE,
};

enum mask_reason {
	MASK_WHY_NONE = 0,
	MASK_WHY_COLUMN,       /* a masked column */
	MASK_WHY_FELL_BACK,    /* a masked column whose strategy does not apply: null */
	MASK_WHY_COMPUTED,     /* computed in a statement that references masked data */
	MASK_WHY_DERIVED,      /* a column of a view over a masked column */
	MASK_WHY_TYPE_CHANGED, /* the column's type changed since the catalog was read */
	MASK_WHY_UNKNOWN,      /* a COPY column nobody can place */
	MASK_WHY_UNLISTED,     /* a relation made since the catalog was read */
};

const char *mask_reason_to_str(enum mask_reason r);

/* One column as the server describes it. */
struct mask_coldesc {
	uint32_t table_oid;
	int16_t attnum;
	uint32_t type_oid;
	int32_t typmod;
	int16_t format;
};

struct mask_desc {
	uint16_t ncols;
	struct mask_coldesc *cols;
};

/* From a RowDescription (validated here). 0, -EPROTO or -ENOMEM. */
int mask_desc_from_rowdesc(struct mask_desc *d, const struct proto_msg *m)
	__attribute__((warn_unused_result));
/* A copy (for a portal made from a described statement). 0 or -ENOMEM. */
int mask_desc_copy(struct mask_desc *to, const struct mask_desc *from)
	__attribute__((warn_unused_result));
/*
 * Set the formats as a Bind's result-format codes give them: none (all text), one (all
 * that one) or one per column. 0, or -EPROTO when the count fits neither rule (the server
 * refuses such a Bind) or a code is not 0 or 1.
 */
int mask_desc_set_formats(struct mask_desc *d, const int16_t *formats, unsigned nformats)
	__attribute__((warn_unused_result));
void mask_desc_free(struct mask_desc *d);

struct mask_plan_col {
	enum mask_col_kind kind;
	enum mask_reason why;
	struct mask_action action; /* MASKED; WHOLE: null */
	uint32_t table_oid;        /* origin, for explain and audit */
	int16_t attnum;
	int32_t rule_col;          /* the policy column (MASKED), -1 otherwise */
};

struct mask_plan {
	uint16_t ncols;
	uint16_t nmasked;     /* MASKED and WHOLE columns */
	int32_t last_masked;  /* index of the last such column; -1 when none */
	bool deny;            /* computed masked data under a profile that denies it */
	/* Every masked column's action is mask_fast_in_place(): a row's masked values can be
	 * rewritten where they lie in a copy of it (mask_fields_in_place()). */
	bool in_place;
	struct mask_plan_col *cols;
};

/* Plan a described result. 0 or -ENOMEM. env must stay valid while the plan is used.
 * catalog_current: the catalog was read after the last DDL a masked session ran (false:
 * columns of relations it does not list are masked whole). */
int mask_plan_build(struct mask_plan *p, const struct mask_desc *d,
		    const struct mask_profile *prof, const struct mask_catalog *cat,
		    const struct mask_env *env, enum mask_refs refs, bool catalog_current)
	__attribute__((warn_unused_result));

/*
 * Plan a COPY TO: origins (n of them, NULL when the columns cannot be told) and the
 * CopyOutResponse's per-column formats (n of them; all 0 or all 1 as the server sends
 * them). 0 or -ENOMEM.
 */
int mask_plan_copy(struct mask_plan *p, const struct mask_origin *origins, unsigned n,
		   uint8_t format, const struct mask_profile *prof, const struct mask_catalog *cat,
		   const struct mask_env *env, enum mask_refs refs)
	__attribute__((warn_unused_result));

/* Set nmasked, last_masked and in_place from the columns: the builders above call it; so
 * does code that sets a plan's columns by hand (tests, benchmarks). */
void mask_plan_count(struct mask_plan *p);

void mask_plan_free(struct mask_plan *p);

static inline bool mask_plan_masks(const struct mask_plan *p)
{
	return p->nmasked > 0;
}

/*
 * `pgwardenctl policy explain --online`: which columns of a statement would be masked for
 * a profile. The daemon sends Parse/Describe('S')/Sync for the statement on a connection of
 * its own (mask_explain_request(), mask_catconn_explain()), hands the RowDescription (or
 * NoData) to mask_explain(), and the tool prints the text: one line per column,
 *   <n>\t<result name>\t<clear|masked|whole>\t<strategy or reason>\t<origin>
 * followed, when the statement would be refused, by a line "deny\t<why>". The result name
 * is the server's echo of the client's alias, so it is sanitised here (SANITIZE_JSON: a
 * control character, a tab or a newline is \xHH, a backslash \\) and cannot forge a field
 * or a line. Returns the length written (NUL-terminated, truncated at cap), or -EPROTO for
 * a message that is not a RowDescription or NoData. Describe cannot see result formats:
 * text is assumed.
 */
int mask_explain(const struct proto_msg *rowdesc, const struct mask_profile *prof,
		 const struct mask_catalog *cat, enum mask_refs refs, char *out, size_t cap);

/* Parse (unnamed statement, sql), Describe('S', ""), Sync into out. Returns the length, or
 * PROTO_ERR_BUFFER / PROTO_ERR_FORMAT as the proto writers do. */
int mask_explain_request(uint8_t *out, size_t cap, const char *sql);

#endif
