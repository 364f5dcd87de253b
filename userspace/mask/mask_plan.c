/* mask_plan: per-column decisions for one result (see mask_plan.h). */
#include "mask/mask_plan.h"

#include "base/sanitize.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *mask_reason_to_str(enum mask_reason r)
{
	switch (r) {
	case MASK_WHY_NONE:
		return "clear";
	case MASK_WHY_COLUMN:
		return "masked column";
	case MASK_WHY_FELL_BACK:
		return "strategy does not apply to the type: null";
	case MASK_WHY_COMPUTED:
		return "computed from a statement that references masked data";
	case MASK_WHY_DERIVED:
		return "column of a view over a masked column";
	case MASK_WHY_TYPE_CHANGED:
		return "masked column whose type changed since the catalog was read";
	case MASK_WHY_UNKNOWN:
		return "COPY column that cannot be placed";
	case MASK_WHY_UNLISTED:
		return "column of a relation made since the catalog was read";
	}
	return "unknown";
}

int mask_desc_from_rowdesc(struct mask_desc *d, const struct proto_msg *m)
{
	struct proto_rowdesc_iter it;
	struct proto_column col;
	unsigned i = 0;
	int rc;

	memset(d, 0, sizeof(*d));
	if (proto_rowdesc_begin(m, &it) != PROTO_OK)
		return -EPROTO;
	d->cols = calloc(it.ncols ? it.ncols : 1, sizeof(*d->cols));
	if (!d->cols)
		return -ENOMEM;
	d->ncols = it.ncols;
	while ((rc = proto_rowdesc_next(&it, &col)) == 1) {
		d->cols[i++] = (struct mask_coldesc){
			.table_oid = col.table_oid,
			.attnum = col.attnum,
			.type_oid = col.type_oid,
			.typmod = col.type_mod,
			.format = col.format,
		};
	}
	if (rc != 0 || i != d->ncols) {
		mask_desc_free(d);
		return -EPROTO;
	}
	return 0;
}

int mask_desc_copy(struct mask_desc *to, const struct mask_desc *from)
{
	to->ncols = from->ncols;
	to->cols = calloc(from->ncols ? from->ncols : 1, sizeof(*to->cols));
	if (!to->cols)
		return -ENOMEM;
	memcpy(to->cols, from->cols, from->ncols * sizeof(*to->cols));
	return 0;
}

int mask_desc_set_formats(struct mask_desc *d, const int16_t *formats, unsigned nformats)
{
	if (nformats > 1 && nformats != d->ncols)
		return -EPROTO;
	for (unsigned i = 0; i < nformats; i++)
		if (formats[i] != 0 && formats[i] != 1)
			return -EPROTO;
	for (unsigned i = 0; i < d->ncols; i++)
		d->cols[i].format = nformats == 0 ? 0 : nformats == 1 ? formats[0] : formats[i];
	return 0;
}

void mask_desc_free(struct mask_desc *d)
{
	free(d->cols);
	d->cols = NULL;
	d->ncols = 0;
}

static void set_whole(struct mask_plan_col *c, enum mask_reason why, uint8_t format)
{
	static const struct mask_strategy null_st = {MASK_NULL, 0};
	static const struct mask_type any = {.tc = MASK_TC_OTHER, .typmod = -1};
	struct mask_env env = {0};

	c->kind = MASK_COL_WHOLE;
	c->why = why;
	mask_action_init(&c->action, &null_st, &any, format, &env, NULL);
}

/* A column with an origin: masked by the catalog, derived, or clear. */
static void plan_origin(struct mask_plan_col *pc, const struct mask_coldesc *cd,
			const struct mask_profile *prof, const struct mask_catalog *cat,
			const struct mask_env *env, bool catalog_current)
{
	const struct mask_column *col = mask_catalog_lookup(cat, cd->table_oid, cd->attnum);
	const struct mask_strategy *st;
	struct mask_type t;
	bool fb = false;

	if (!col) {
		if (mask_catalog_derived(cat, cd->table_oid, prof))
			set_whole(pc, MASK_WHY_DERIVED, (uint8_t)cd->format);
		else if (!catalog_current && !mask_catalog_relid_listed(cat, cd->table_oid))
			set_whole(pc, MASK_WHY_UNLISTED, (uint8_t)cd->format);
		return;
	}
	st = mask_column_strategy(col, prof);
	if (st->kind == MASK_NONE)
		return;
	for (unsigned i = 0; i < col->ncols; i++)
		if (mask_profile_strategy(prof, col->cols[i])->kind != MASK_NONE) {
			pc->rule_col = (int32_t)col->cols[i];
			break;
		}
	if (cd->type_oid != col->type_oid) {
		set_whole(pc, MASK_WHY_TYPE_CHANGED, (uint8_t)cd->format);
		return;
	}
	t = col->type;
	t.typmod = cd->typmod; /* what the values on the wire were made with */
	pc->kind = MASK_COL_MASKED;
	mask_action_init(&pc->action, st, &t, (uint8_t)cd->format, env, &fb);
	pc->why = fb ? MASK_WHY_FELL_BACK : MASK_WHY_COLUMN;
}

static int plan_alloc(struct mask_plan *p, unsigned n)
{
	memset(p, 0, sizeof(*p));
	p->cols = calloc(n ? n : 1, sizeof(*p->cols));
	if (!p->cols)
		return -ENOMEM;
	p->ncols = (uint16_t)n;
	p->last_masked = -1;
	for (unsigned i = 0; i < n; i++)
		p->cols[i].rule_col = -1;
	return 0;
}

void mask_plan_count(struct mask_plan *p)
{
	p->nmasked = 0;
	p->last_masked = -1;
	p->in_place = true;
	for (unsigned i = 0; i < p->ncols; i++) {
		if (p->cols[i].kind == MASK_COL_CLEAR)
			continue;
		p->nmasked++;
		p->last_masked = (int32_t)i;
		p->in_place = p->in_place && mask_fast_in_place(&p->cols[i].action);
	}
	p->in_place = p->in_place && p->nmasked;
}

int mask_plan_build(struct mask_plan *p, const struct mask_desc *d,
		    const struct mask_profile *prof, const struct mask_catalog *cat,
		    const struct mask_env *env, enum mask_refs refs, bool catalog_current)
{
	if (plan_alloc(p, d->ncols) < 0)
		return -ENOMEM;
	for (unsigned i = 0; i < d->ncols; i++) {
		const struct mask_coldesc *cd = &d->cols[i];
		struct mask_plan_col *pc = &p->cols[i];

		pc->table_oid = cd->table_oid;
		pc->attnum = cd->attnum;
		/* Attribute number 0 is a whole-row reference (SELECT c FROM customers c): the
		 * server names the table, but the value is the composite of every column,
		 * masked ones included; it is computed like any other expression. */
		if (cd->table_oid && cd->attnum != 0) {
			plan_origin(pc, cd, prof, cat, env, catalog_current);
			continue;
		}
		if (refs == MASK_REFS_NONE)
			continue;
		set_whole(pc, MASK_WHY_COMPUTED, (uint8_t)cd->format);
		if (mask_profile_computed(prof) == MASK_COMPUTED_DENY)
			p->deny = true;
	}
	mask_plan_count(p);
	return 0;
}

int mask_plan_copy(struct mask_plan *p, const struct mask_origin *origins, unsigned n,
		   uint8_t format, const struct mask_profile *prof, const struct mask_catalog *cat,
		   const struct mask_env *env, enum mask_refs refs)
{
	if (plan_alloc(p, n) < 0)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		struct mask_plan_col *pc = &p->cols[i];

		if (!origins) {
			if (refs != MASK_REFS_NONE)
				set_whole(pc, MASK_WHY_UNKNOWN, format);
			continue;
		}
		pc->table_oid = origins[i].table_oid;
		pc->attnum = origins[i].attnum;
		if (!origins[i].table_oid)
			continue;
		{
			const struct mask_column *col =
				mask_catalog_lookup(cat, origins[i].table_oid, origins[i].attnum);
			struct mask_coldesc cd = {
				.table_oid = origins[i].table_oid,
				.attnum = origins[i].attnum,
				.type_oid = col ? col->type_oid : 0,
				.typmod = col ? col->type.typmod : -1,
				.format = format,
			};

			plan_origin(pc, &cd, prof, cat, env, true); /* the catalog's own tables */
		}
	}
	mask_plan_count(p);
	return 0;
}

void mask_plan_free(struct mask_plan *p)
{
	free(p->cols);
	memset(p, 0, sizeof(*p));
	p->last_masked = -1;
}

/* ---- explain ------------------------------------------------------------------------------ */

struct out {
	char *p;
	size_t n, cap;
};

static void __attribute__((format(printf, 2, 3))) outf(struct out *o, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (o->n + 1 >= o->cap)
		return;
	va_start(ap, fmt);
	k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
	va_end(ap);
	if (k < 0)
		return;
	o->n = o->n + (size_t)k < o->cap ? o->n + (size_t)k : o->cap - 1;
}

int mask_explain(const struct proto_msg *rowdesc, const struct mask_profile *prof,
		 const struct mask_catalog *cat, enum mask_refs refs, char *out, size_t cap)
{
	struct out o = {.p = out, .cap = cap};
	struct mask_desc d;
	struct mask_plan plan;
	struct mask_env env;
	struct proto_rowdesc_iter it;
	struct proto_column col;
	char st[MASK_STRATEGY_STRLEN], name[MASK_COLREF_STRLEN];
	/* a name of up to 63 bytes with every byte escaped (\xHH); longer ones are cut */
	char safe_name[PROTO_NAMEDATALEN * 4];

	if (cap)
		out[0] = '\0';
	if (rowdesc->type == PqMsg_NoData && rowdesc->body_len == 0)
		return 0; /* no result columns: nothing to mask */
	if (mask_desc_from_rowdesc(&d, rowdesc) < 0)
		return -EPROTO;
	/* A session's encoding and DateStyle change only which values a strategy gives, not
	 * whether a column is masked; with a key present, hash never falls back. */
	mask_env_init(&env, "UTF8", NULL, NULL);
	env.plan_only = true;
	if (mask_plan_build(&plan, &d, prof, cat, &env, refs, true) < 0) {
		mask_desc_free(&d);
		return -ENOMEM;
	}
	if (proto_rowdesc_begin(rowdesc, &it) != PROTO_OK) {
		mask_plan_free(&plan);
		mask_desc_free(&d);
		return -EPROTO;
	}
	for (unsigned i = 0; proto_rowdesc_next(&it, &col) == 1; i++) {
		const struct mask_plan_col *pc = &plan.cols[i];
		const char *what = pc->kind == MASK_COL_CLEAR    ? "clear"
				   : pc->kind == MASK_COL_MASKED ? "masked"
								 : "whole";

		/* The name is the server's echo of the client's alias: peer text, which must
		 * neither reach a terminal nor forge a field or a line of this text. */
		sanitize_str(safe_name, sizeof(safe_name), col.name, SANITIZE_JSON, NULL);
		outf(&o, "%u\t%s\t%s\t", i + 1, safe_name, what);
		if (pc->kind == MASK_COL_MASKED && pc->why == MASK_WHY_COLUMN)
			outf(&o, "%s", mask_strategy_format(&pc->action.st, st, sizeof(st)));
		else if (pc->kind != MASK_COL_CLEAR)
			outf(&o, "null (%s)", mask_reason_to_str(pc->why));
		else
			outf(&o, "-");
		if (pc->rule_col >= 0)
			outf(&o, "\t%s", mask_colref_format(mask_policy_column(mask_catalog_policy(cat),
									       (unsigned)pc->rule_col),
							    name, sizeof(name)));
		else if (col.table_oid)
			outf(&o, "\ttable %u column %d", col.table_oid, col.attnum);
		else
			outf(&o, "\tcomputed");
		outf(&o, "\n");
	}
	if (plan.deny)
		outf(&o, "deny\trule %s denies computed columns from masked data\n",
		     mask_profile_name(prof));
	mask_plan_free(&plan);
	mask_desc_free(&d);
	return (int)o.n;
}

int mask_explain_request(uint8_t *out, size_t cap, const char *sql)
{
	int a, b, c;

	a = proto_write_parse(out, cap, "", sql);
	if (a < 0)
		return a;
	b = proto_write_describe(out + a, cap - (size_t)a, 'S', "");
	if (b < 0)
		return b;
	c = proto_write_sync(out + a + b, cap - (size_t)a - (size_t)b);
	if (c < 0)
		return c;
	return a + b + c;
}
