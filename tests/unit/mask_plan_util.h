/*
 * mask_plan_util: plans written as text for the rewriter suites (rows, COPY).
 *
 *   -                      clear
 *   whole                  masked whole (NULL)
 *   <strategy>:<type>:t|b  masked by strategy, as a column of that type in that format
 *
 * Entries are comma-separated, except inside parentheses (numeric(10,2)).
 */
#ifndef PGWARDEN_MASK_PLAN_UTIL_H
#define PGWARDEN_MASK_PLAN_UTIL_H

#include "mask/mask_plan.h"

#include "mask_test_util.h"

static inline bool mt_plan(const char *spec, const struct mask_env *e, struct mask_plan *p)
{
	char buf[1024], *items[256];
	unsigned n = 0;
	int depth = 0;
	char *start;

	if (strlen(spec) >= sizeof(buf))
		return false;
	strcpy(buf, spec);
	start = buf;
	for (char *q = buf;; q++) {
		if (*q == '(')
			depth++;
		if (*q == ')')
			depth--;
		if ((*q == ',' && depth == 0) || *q == '\0') {
			bool end = *q == '\0';

			*q = '\0';
			if (n == 256)
				return false;
			items[n++] = start;
			start = q + 1;
			if (end)
				break;
		}
	}
	memset(p, 0, sizeof(*p));
	p->cols = calloc(n, sizeof(*p->cols));
	p->ncols = (uint16_t)n;
	for (unsigned i = 0; i < n; i++) {
		struct mask_plan_col *c = &p->cols[i];
		char *f1, *f2;
		struct mask_strategy st;
		struct mask_type t;
		char err[128];

		c->rule_col = -1;
		if (strcmp(items[i], "-") == 0)
			continue;
		if (strcmp(items[i], "whole") == 0) {
			struct mask_strategy nul = {MASK_NULL, 0};
			struct mask_type any = {.tc = MASK_TC_OTHER, .typmod = -1};

			c->kind = MASK_COL_WHOLE;
			mask_action_init(&c->action, &nul, &any, 0, e, NULL);
			continue;
		}
		f1 = strchr(items[i], ':');
		f2 = f1 ? strrchr(items[i], ':') : NULL;
		if (!f1 || f2 == f1)
			return false;
		*f1 = *f2 = '\0';
		if (mask_strategy_parse(items[i], &st, err, sizeof(err)) < 0 || !mt_type(f1 + 1, &t))
			return false;
		c->kind = MASK_COL_MASKED;
		mask_action_init(&c->action, &st, &t, f2[1] == 'b' ? 1 : 0, e, NULL);
	}
	mask_plan_count(p);
	return true;
}

#endif
