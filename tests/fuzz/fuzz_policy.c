/*
 * fuzz_policy: arbitrary bytes as a policy file, and for the files that load, statements
 * judged against every rule.
 *
 * Invariants (abort on violation):
 *   - a failed load returns NULL with one line "NAME:LINE: what", no newline in it;
 *   - a loaded policy has 0..POLICY_MAX_RULES rules, each named (1..63 bytes, unique), its
 *     allow mask within the known classes, its lists' names NUL-terminated within
 *     SQL_NAME_MAX, a search_path, a burst whenever there is a rate;
 *   - loading the same bytes again gives the same SHA-256 and rule count;
 *   - describing it writes something; judging a few statements against each rule returns a
 *     verdict whose SQLSTATE, when denied, is 42501 or 54001;
 *   - matching any identity returns NULL or one of its own rules.
 * The input is copied into an exact-size heap block so ASan sees any read past it.
 */
#include "policy/policy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_check.h"

static struct sql_analysis analysis;

static void check_names(const struct policy_names *l)
{
	for (unsigned i = 0; i < l->n; i++) {
		CHECK(memchr(l->v[i].schema, '\0', SQL_NAME_MAX) != NULL);
		CHECK(memchr(l->v[i].name, '\0', SQL_NAME_MAX) != NULL);
		CHECK(l->v[i].name[0] != '\0');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const stmts[] = {
		"SELECT * FROM public.t",
		"SELECT pg_read_file('x')",
		"SET ROLE admin",
		"DELETE FROM s.t USING u WHERE true",
		"DO $$ BEGIN END $$",
	};
	char err[POLICY_ERR_MAX], err2[POLICY_ERR_MAX];
	char *buf = malloc(size ? size : 1);
	struct policy *p, *q;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	err[0] = '\0';
	p = policy_load_buffer("fuzz.yaml", buf, size, err, sizeof(err));
	if (!p) {
		CHECK(!strncmp(err, "fuzz.yaml", 9) && strchr(err, ':') && !strchr(err, '\n'));
		q = policy_load_buffer("fuzz.yaml", buf, size, err2, sizeof(err2));
		CHECK(!q && !strcmp(err, err2)); /* deterministic */
		free(buf);
		return 0;
	}
	CHECK(p->nrules <= POLICY_MAX_RULES);
	for (unsigned i = 0; i < p->nrules; i++) {
		const struct policy_rule *r = &p->rules[i];

		CHECK(r->name && r->name[0] && strlen(r->name) <= POLICY_NAME_MAX);
		for (unsigned j = 0; j < i; j++)
			CHECK(strcmp(p->rules[j].name, r->name) != 0);
		CHECK((r->allow & ~(SQL_CLASS_BIT(SQL_CLASS_UNKNOWN) - 1)) == 0);
		CHECK(r->search_path.n > 0);
		CHECK(!r->limits.statements_per_second || r->limits.burst);
		check_names(&r->relation_allow);
		check_names(&r->relation_deny);
		check_names(&r->function_deny);
		for (unsigned k = 0; k < r->nmasks; k++)
			CHECK(r->masks[k].strategy && r->masks[k].strategy[0]);
		for (size_t s = 0; s < sizeof(stmts) / sizeof(stmts[0]); s++) {
			struct policy_verdict v;
			struct policy_stmt_ctx ctx = {.user = "u", .search_path_unknown = s & 1};

			sql_analyze(stmts[s], strlen(stmts[s]), 0, &analysis);
			policy_check_statement(r, &analysis, &ctx, &v);
			CHECK(v.allowed || !strcmp(v.sqlstate, "42501") || !strcmp(v.sqlstate, "54001"));
		}
	}
	q = policy_load_buffer("fuzz.yaml", buf, size, err, sizeof(err));
	CHECK(q && q->nrules == p->nrules && !strcmp(q->sha256_hex, p->sha256_hex));
	policy_unref(q);

	struct policy_identity id = {.user = "u", .database = "d", .local = true,
				     .process_known = true, .comm = "psql", .cgroup = "/a/b"};
	const struct policy_rule *m = policy_match_connection(p, &id, true);

	CHECK(!m || (m >= p->rules && m < p->rules + p->nrules));
	char *out = NULL;
	size_t olen = 0;
	FILE *f = open_memstream(&out, &olen);

	if (f) {
		policy_describe(p, f);
		fclose(f);
		CHECK(olen > 0);
		free(out);
	}
	policy_unref(p);
	free(buf);
	return 0;
}
