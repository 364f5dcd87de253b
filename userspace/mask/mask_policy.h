/*
 * mask_policy: the masking part of one policy snapshot, as the policy loader builds it.
 *
 * Each policy rule with a `mask:` map becomes a profile: schema.table.column → strategy,
 * plus what happens to computed columns (no table origin) of statements that reference a
 * masked column: masked whole, or the statement denied. The distinct columns every profile
 * names form one list, which the catalog query resolves to (table OID, attribute number)
 * once for all profiles (mask_catalog.h).
 *
 * Column references are written as SQL identifiers: schema.table.column, each part
 * unquoted (folded to lower case, as PostgreSQL folds it) or "double quoted" (exact, with
 * "" for a quote inside), at most 63 bytes each, no NUL. public.Customers.SSN and
 * public.customers.ssn are the same column; "Customers" is another.
 *
 * Lifetime: built by one thread, then sealed and shared read-only; the refcount (atomic)
 * lets a catalog, a stage and the policy snapshot hold it independently. Profiles belong
 * to their policy.
 */
#ifndef PGWARDEN_MASK_POLICY_H
#define PGWARDEN_MASK_POLICY_H

#include "mask/mask_strategy.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MASK_IDENT_MAX 63 /* NAMEDATALEN - 1 */
/* A formatted reference: three quoted identifiers with doubled quotes, two dots. */
#define MASK_COLREF_STRLEN (3 * (2 * MASK_IDENT_MAX + 2) + 3)

struct mask_colref {
	char schema[MASK_IDENT_MAX + 1];
	char table[MASK_IDENT_MAX + 1];
	char column[MASK_IDENT_MAX + 1];
};

/*
 * Parse "schema.table.column". Returns 0, or -EINVAL with a one-line reason in err
 * (NUL-terminated when errlen > 0): not three parts, an empty or over-long part, an
 * unterminated quote, a NUL or control byte, blanks around the dots.
 */
int mask_colref_parse(const char *text, struct mask_colref *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The reference as a rule would write it, quoting the parts that need it. Returns buf. */
const char *mask_colref_format(const struct mask_colref *r, char *buf, size_t n);

static inline bool mask_colref_equal(const struct mask_colref *a, const struct mask_colref *b)
{
	return __builtin_strcmp(a->schema, b->schema) == 0 &&
	       __builtin_strcmp(a->table, b->table) == 0 &&
	       __builtin_strcmp(a->column, b->column) == 0;
}

/* What computed columns (table OID 0) of a statement that references a masked column get. */
enum mask_computed {
	MASK_COMPUTED_MASK = 0, /* masked whole: NULL, in every format */
	MASK_COMPUTED_DENY,     /* the statement is refused (42501) where the relay can still
				 * refuse it; masked whole where it cannot (see MASKING.md) */
};

struct mask_policy;
struct mask_profile;

struct mask_policy *mask_policy_new(void) __attribute__((warn_unused_result));

/* A profile for the rule named rule_name (copied). 0, -ENOMEM, or -EBUSY once sealed. */
int mask_policy_add_profile(struct mask_policy *mp, const char *rule_name,
			    struct mask_profile **out) __attribute__((warn_unused_result));

/*
 * Add `column: strategy` to a profile: both texts are parsed here (mask_colref_parse(),
 * mask_strategy_parse()). Returns 0, or -EINVAL with the reason in err (also for a column
 * the profile already names), -ENOMEM, -EBUSY once sealed.
 */
int mask_profile_add(struct mask_profile *p, const char *column, const char *strategy,
		     char *err, size_t errlen) __attribute__((warn_unused_result));

void mask_profile_set_computed(struct mask_profile *p, enum mask_computed c);

/* No more changes: from here on the policy may be shared. */
void mask_policy_seal(struct mask_policy *mp);

void mask_policy_get(struct mask_policy *mp);
void mask_policy_put(struct mask_policy *mp); /* frees at zero; NULL is fine */

/* The distinct columns all profiles name, in the order first named. */
unsigned mask_policy_ncolumns(const struct mask_policy *mp);
const struct mask_colref *mask_policy_column(const struct mask_policy *mp, unsigned i);
unsigned mask_policy_nprofiles(const struct mask_policy *mp);
const struct mask_profile *mask_policy_profile(const struct mask_policy *mp, unsigned i);
/* A profile by its rule name, or NULL. */
const struct mask_profile *mask_policy_find_profile(const struct mask_policy *mp,
						    const char *rule_name);

const char *mask_profile_name(const struct mask_profile *p);
enum mask_computed mask_profile_computed(const struct mask_profile *p);
struct mask_policy *mask_profile_policy(const struct mask_profile *p);
/* The strategy for column i of the policy (MASK_NONE: this profile does not mask it). */
const struct mask_strategy *mask_profile_strategy(const struct mask_profile *p, unsigned col);
/* Does the profile mask anything at all? */
bool mask_profile_masks(const struct mask_profile *p);

#endif
