/* mask_policy: profiles and the columns they name (see mask_policy.h). */
#include "mask/mask_policy.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mask_profile {
	struct mask_policy *policy;
	char *name;
	enum mask_computed computed;
	/* Indexed by policy column; grown as columns are added (NONE where not named). */
	struct mask_strategy *by_col;
	unsigned ncols;
	bool any;
};

struct mask_policy {
	atomic_uint refs;
	bool sealed;
	struct mask_colref *cols;
	unsigned ncols, cols_cap;
	struct mask_profile **profiles;
	unsigned nprofiles, profiles_cap;
};

/* ---- column references -------------------------------------------------------------------- */

/* One identifier at *s; stops at '.' or the end. */
static int ident_parse(const char **s, char *out, const char *what, char *err, size_t errlen)
{
	const char *p = *s;
	size_t n = 0;

	if (*p == '"') {
		p++;
		for (;;) {
			if (*p == '\0') {
				if (errlen)
					snprintf(err, errlen, "unterminated quoted %s name", what);
				return -EINVAL;
			}
			if (*p == '"') {
				if (p[1] != '"')
					break;
				p++; /* "" is one quote */
			}
			if ((unsigned char)*p < 0x20 || *p == 0x7f) {
				if (errlen)
					snprintf(err, errlen, "control character in %s name", what);
				return -EINVAL;
			}
			if (n == MASK_IDENT_MAX) {
				if (errlen)
					snprintf(err, errlen, "%s name longer than 63 bytes", what);
				return -EINVAL;
			}
			out[n++] = *p++;
		}
		p++;
		if (n == 0) {
			if (errlen)
				snprintf(err, errlen, "empty quoted %s name", what);
			return -EINVAL;
		}
	} else {
		while (*p && *p != '.') {
			unsigned char c = (unsigned char)*p;

			if (c <= 0x20 || c == 0x7f || c == '"') {
				if (errlen)
					snprintf(err, errlen,
						 "%s name has %s; quote it (\"...\") if it is really part "
						 "of the name",
						 what, c == ' ' ? "a blank" : c == '"' ? "a stray quote"
									   : "a control character");
				return -EINVAL;
			}
			if (n == MASK_IDENT_MAX) {
				if (errlen)
					snprintf(err, errlen, "%s name longer than 63 bytes", what);
				return -EINVAL;
			}
			/* PostgreSQL folds unquoted ASCII letters only. */
			out[n++] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : (char)c;
			p++;
		}
		if (n == 0) {
			if (errlen)
				snprintf(err, errlen, "empty %s name", what);
			return -EINVAL;
		}
	}
	out[n] = '\0';
	*s = p;
	return 0;
}

int mask_colref_parse(const char *text, struct mask_colref *out, char *err, size_t errlen)
{
	static const char *const what[3] = {"schema", "table", "column"};
	struct mask_colref r;
	char *parts[3] = {r.schema, r.table, r.column};
	const char *p = text;

	if (errlen)
		err[0] = '\0';
	if (!text || !*text) {
		if (errlen)
			snprintf(err, errlen, "empty column reference: expected schema.table.column");
		return -EINVAL;
	}
	for (int i = 0; i < 3; i++) {
		if (ident_parse(&p, parts[i], what[i], err, errlen) < 0)
			return -EINVAL;
		if (i < 2) {
			if (*p != '.') {
				if (errlen)
					snprintf(err, errlen,
						 "column reference %.80s: expected schema.table.column",
						 text);
				return -EINVAL;
			}
			p++;
		}
	}
	if (*p) {
		if (errlen)
			snprintf(err, errlen, "column reference %.80s: expected schema.table.column",
				 text);
		return -EINVAL;
	}
	*out = r;
	return 0;
}

static bool needs_quotes(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return true;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '$' ||
		      (unsigned char)*s >= 0x80))
			return true;
	return false;
}

static size_t put_ident(char *buf, size_t n, size_t at, const char *s)
{
	bool q = needs_quotes(s);

	if (q && at + 1 < n)
		buf[at++] = '"';
	for (; *s && at + 1 < n; s++) {
		if (*s == '"' && at + 2 < n)
			buf[at++] = '"';
		buf[at++] = *s;
	}
	if (q && at + 1 < n)
		buf[at++] = '"';
	return at;
}

const char *mask_colref_format(const struct mask_colref *r, char *buf, size_t n)
{
	size_t at = 0;

	if (!n)
		return buf;
	at = put_ident(buf, n, at, r->schema);
	if (at + 1 < n)
		buf[at++] = '.';
	at = put_ident(buf, n, at, r->table);
	if (at + 1 < n)
		buf[at++] = '.';
	at = put_ident(buf, n, at, r->column);
	buf[at] = '\0';
	return buf;
}

/* ---- policies and profiles ------------------------------------------------------------------ */

struct mask_policy *mask_policy_new(void)
{
	struct mask_policy *mp = calloc(1, sizeof(*mp));

	if (mp)
		atomic_init(&mp->refs, 1);
	return mp;
}

int mask_policy_add_profile(struct mask_policy *mp, const char *rule_name,
			    struct mask_profile **out)
{
	struct mask_profile *p;

	if (mp->sealed)
		return -EBUSY;
	if (mp->nprofiles == mp->profiles_cap) {
		unsigned cap = mp->profiles_cap ? 2 * mp->profiles_cap : 8;
		struct mask_profile **np = realloc(mp->profiles, cap * sizeof(*np));

		if (!np)
			return -ENOMEM;
		mp->profiles = np;
		mp->profiles_cap = cap;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->name = strdup(rule_name ? rule_name : "");
	if (!p->name) {
		free(p);
		return -ENOMEM;
	}
	p->policy = mp;
	mp->profiles[mp->nprofiles++] = p;
	*out = p;
	return 0;
}

/* The index of r in the policy's column list, adding it. -ENOMEM or the index. */
static int policy_intern(struct mask_policy *mp, const struct mask_colref *r)
{
	for (unsigned i = 0; i < mp->ncols; i++)
		if (mask_colref_equal(&mp->cols[i], r))
			return (int)i;
	if (mp->ncols == mp->cols_cap) {
		unsigned cap = mp->cols_cap ? 2 * mp->cols_cap : 16;
		struct mask_colref *nc = realloc(mp->cols, cap * sizeof(*nc));

		if (!nc)
			return -ENOMEM;
		mp->cols = nc;
		mp->cols_cap = cap;
	}
	mp->cols[mp->ncols] = *r;
	return (int)mp->ncols++;
}

int mask_profile_add(struct mask_profile *p, const char *column, const char *strategy,
		     char *err, size_t errlen)
{
	struct mask_policy *mp = p->policy;
	struct mask_colref r;
	struct mask_strategy st;
	char name[MASK_COLREF_STRLEN];
	int idx;

	if (mp->sealed)
		return -EBUSY;
	if (mask_colref_parse(column, &r, err, errlen) < 0)
		return -EINVAL;
	if (mask_strategy_parse(strategy, &st, err, errlen) < 0)
		return -EINVAL;
	idx = policy_intern(mp, &r);
	if (idx < 0)
		return idx;
	if ((unsigned)idx < p->ncols && p->by_col[idx].kind != MASK_NONE) {
		if (errlen)
			snprintf(err, errlen, "column %s is masked twice in rule %s",
				 mask_colref_format(&r, name, sizeof(name)), p->name);
		return -EINVAL;
	}
	if ((unsigned)idx >= p->ncols) {
		unsigned n = (unsigned)idx + 1;
		struct mask_strategy *nb = realloc(p->by_col, n * sizeof(*nb));

		if (!nb)
			return -ENOMEM;
		for (unsigned i = p->ncols; i < n; i++)
			nb[i] = (struct mask_strategy){MASK_NONE, 0};
		p->by_col = nb;
		p->ncols = n;
	}
	p->by_col[idx] = st;
	p->any = true;
	return 0;
}

void mask_profile_set_computed(struct mask_profile *p, enum mask_computed c)
{
	if (!p->policy->sealed)
		p->computed = c;
}

void mask_policy_seal(struct mask_policy *mp)
{
	mp->sealed = true;
}

void mask_policy_get(struct mask_policy *mp)
{
	atomic_fetch_add_explicit(&mp->refs, 1, memory_order_relaxed);
}

void mask_policy_put(struct mask_policy *mp)
{
	if (!mp || atomic_fetch_sub_explicit(&mp->refs, 1, memory_order_acq_rel) != 1)
		return;
	for (unsigned i = 0; i < mp->nprofiles; i++) {
		free(mp->profiles[i]->name);
		free(mp->profiles[i]->by_col);
		free(mp->profiles[i]);
	}
	free(mp->profiles);
	free(mp->cols);
	free(mp);
}

unsigned mask_policy_ncolumns(const struct mask_policy *mp)
{
	return mp->ncols;
}

const struct mask_colref *mask_policy_column(const struct mask_policy *mp, unsigned i)
{
	return i < mp->ncols ? &mp->cols[i] : NULL;
}

unsigned mask_policy_nprofiles(const struct mask_policy *mp)
{
	return mp->nprofiles;
}

const struct mask_profile *mask_policy_profile(const struct mask_policy *mp, unsigned i)
{
	return i < mp->nprofiles ? mp->profiles[i] : NULL;
}

const struct mask_profile *mask_policy_find_profile(const struct mask_policy *mp,
						    const char *rule_name)
{
	for (unsigned i = 0; i < mp->nprofiles; i++)
		if (strcmp(mp->profiles[i]->name, rule_name) == 0)
			return mp->profiles[i];
	return NULL;
}

const char *mask_profile_name(const struct mask_profile *p)
{
	return p->name;
}

enum mask_computed mask_profile_computed(const struct mask_profile *p)
{
	return p->computed;
}

struct mask_policy *mask_profile_policy(const struct mask_profile *p)
{
	return p->policy;
}

const struct mask_strategy *mask_profile_strategy(const struct mask_profile *p, unsigned col)
{
	static const struct mask_strategy none = {MASK_NONE, 0};

	return col < p->ncols ? &p->by_col[col] : &none;
}

bool mask_profile_masks(const struct mask_profile *p)
{
	return p->any;
}
