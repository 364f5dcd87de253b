/*
 * test_mask_classify: what masking is told about each statement (mask_classify.h), from
 * data/mask/classify.txt: references, rows, DDL, every COPY form and option (and those it
 * must refuse to guess at), cursors and SQL prepared names; and the daemon's masking policy
 * built from a policy file's `mask:` rules (mask_rules.h), hostile entries refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_classify.h"
#include "mask/mask_rules.h"
#include "policy/policy.h"

#define DATA "data/mask/classify.txt"

static unsigned failures;

static void __attribute__((format(printf, 2, 3))) fail_line(unsigned line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s:%u: ", DATA, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static const char *name_use_str(enum mask_name_use u)
{
	static const char *const s[] = {"none", "defines", "uses", "drops", "dropsall"};

	return s[u];
}

static void check(unsigned line, const struct mask_stmt_info *in, int n, char *want)
{
	for (char *w = strtok(want, " \n"); w; w = strtok(NULL, " \n")) {
		char *eq = strchr(w, '=');
		const char *v = eq ? eq + 1 : "";
		char got[1024] = "";

		if (eq)
			*eq = '\0';
		if (!strcmp(w, "refs"))
			snprintf(got, sizeof(got), "%s",
				 mask_stmt_refs(in) == MASK_REFS_NONE	 ? "none"
				 : mask_stmt_refs(in) == MASK_REFS_NAMES ? "names"
									 : "masked");
		else if (!strcmp(w, "names")) {
			/* relations, then functions: [schema.]name, comma-separated */
			const char *schema, *name;
			size_t pos = 0;

			for (unsigned i = 0; i < (unsigned)in->nrelations + in->nfunctions &&
					     mask_stmt_next_name(in, &pos, &schema, &name);
			     i++)
				snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s%s%s",
					 i ? "," : "", schema, schema[0] ? "." : "", name);
		}
		else if (!strcmp(w, "rows"))
			snprintf(got, sizeof(got), "%s", in->no_rows ? "no" : "maybe");
		else if (!strcmp(w, "ddl"))
			snprintf(got, sizeof(got), "%s", in->ddl ? "" : "not ddl");
		else if (!strcmp(w, "header"))
			snprintf(got, sizeof(got), "%s", in->copy_opts.header ? "" : "no header");
		else if (!strcmp(w, "copy"))
			snprintf(got, sizeof(got), "%s",
				 !in->copy_to ? "no" : in->copy_query ? "query" : "table");
		else if (!strcmp(w, "schema"))
			snprintf(got, sizeof(got), "%s", in->copy_schema);
		else if (!strcmp(w, "table"))
			snprintf(got, sizeof(got), "%s", in->copy_table);
		else if (!strcmp(w, "cols")) {
			const char *p = in->copy_cols;

			for (unsigned i = 0; i < in->ncopy_cols; i++, p += strlen(p) + 1)
				snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s",
					 i ? "," : "", p);
		} else if (!strcmp(w, "opts"))
			snprintf(got, sizeof(got), "%s", in->copy_opts_known ? "known" : "unknown");
		else if (!strcmp(w, "fmt"))
			snprintf(got, sizeof(got), "%s",
				 in->copy_opts.format == MASK_COPY_CSV	    ? "csv"
				 : in->copy_opts.format == MASK_COPY_BINARY ? "binary"
									    : "text");
		else if (!strcmp(w, "delim"))
			snprintf(got, sizeof(got), "%02x", in->copy_opts.delim);
		else if (!strcmp(w, "quote"))
			snprintf(got, sizeof(got), "%02x", in->copy_opts.quote);
		else if (!strcmp(w, "escape"))
			snprintf(got, sizeof(got), "%02x", in->copy_opts.escape);
		else if (!strcmp(w, "null"))
			snprintf(got, sizeof(got), "%.*s", in->copy_opts.null_len ? in->copy_opts.null_len : 1,
				 in->copy_opts.null_len ? in->copy_opts.null_str : "_");
		else if (!strcmp(w, "enc"))
			snprintf(got, sizeof(got), "%s", in->copy_encoding);
		else if (!strcmp(w, "name"))
			snprintf(got, sizeof(got), "%s:%s", name_use_str(in->name_use), in->name);
		else if (!strcmp(w, "n"))
			snprintf(got, sizeof(got), "%d", n);
		else {
			fail_line(line, "unknown expectation %s", w);
			continue;
		}
		if (strcmp(got, v))
			fail_line(line, "%s: want \"%s\", got \"%s\"", w, v, got);
	}
}

static void test_classify_cases(void **state)
{
	FILE *f = fopen(DATA, "r");
	char line[2048];
	unsigned lineno = 0, cases = 0;

	assert_non_null(f);
	failures = 0;
	while (fgets(line, sizeof(line), f)) {
		struct mask_stmt_info in[4];
		char *sep;
		int n;

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		sep = strstr(line, " || ");
		if (!sep) {
			fail_line(lineno, "malformed case");
			continue;
		}
		*sep = '\0';
		cases++;
		/* one byte of the text at a time would be a different statement: whole only */
		n = mask_classify(line, strlen(line), 0, in, 4);
		if (n < 1) {
			fail_line(lineno, "no statement described");
			continue;
		}
		check(lineno, &in[0], n, sep + 4);
	}
	fclose(f);
	assert_true(cases >= 40);
	assert_int_equal(failures, 0);
}

/* A statement cut anywhere: never a crash, never options read from half a list. */
static void test_prefixes_fail_closed(void **state)
{
	static const char *const sql[] = {
		"COPY public.customers (ssn, \"Id\") TO STDOUT (FORMAT csv, NULL 'x', HEADER)",
		"DECLARE \"c\" CURSOR FOR SELECT ssn FROM customers WHERE name = 'a;b'",
	};

	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++)
		for (size_t n = 0; n <= strlen(sql[i]); n++) {
			struct mask_stmt_info in[2];
			int k = mask_classify(sql[i], n, 0, in, 2);

			assert_true(k >= 1 && k <= 2);
			/* a prefix ending inside the options never counts as read: only the
			 * whole text, or one that stops before any option (plain text) */
			if (in[0].copy_to && in[0].copy_opts_known)
				assert_true(n == strlen(sql[i]) ||
					    in[0].copy_opts.format == MASK_COPY_TEXT);
		}
}

static const char policy_text[] = "rules:\n"
				  "  - name: support\n"
				  "    match: { user: support }\n"
				  "    allow: [read]\n"
				  "    mask:\n"
				  "      public.customers.ssn: partial-last-4\n"
				  "      '\"Odd\".\"T\".\"c\"': hash\n"
				  "  - name: auditor\n"
				  "    match: { user: auditor }\n"
				  "    allow: [read]\n";

static void test_rules_from_policy(void **state)
{
	char err[POLICY_ERR_MAX];
	struct policy *p = policy_load_buffer("p.yaml", policy_text, sizeof(policy_text) - 1, err,
					      sizeof(err));
	struct mask_policy *mp;
	char buf[MASK_COLREF_STRLEN];

	assert_non_null(p);
	assert_int_equal(mask_rules_build(p, &mp, err, sizeof(err)), 0);
	assert_int_equal(mask_policy_nprofiles(mp), 1);
	assert_non_null(mask_policy_find_profile(mp, "support"));
	assert_null(mask_policy_find_profile(mp, "auditor"));
	assert_int_equal(mask_policy_ncolumns(mp), 2);
	assert_string_equal(mask_colref_format(mask_policy_column(mp, 1), buf, sizeof(buf)),
			    "\"Odd\".\"T\".c");
	mask_rules_publish(mp);
	mp = mask_rules_acquire();
	assert_non_null(mp);
	mask_policy_put(mp);
	mask_rules_publish(NULL);
	assert_null(mask_rules_acquire());
	policy_unref(p);
}

static void test_rules_refuse_unknown_strategy(void **state)
{
	static const char bad[] = "rules:\n"
				  "  - name: support\n"
				  "    match: { user: support }\n"
				  "    allow: [read]\n"
				  "    mask:\n"
				  "      public.customers.ssn: partial-last-4\n"
				  "      public.customers.card: reveal\n";
	char err[POLICY_ERR_MAX];
	struct policy *p = policy_load_buffer("p.yaml", bad, sizeof(bad) - 1, err, sizeof(err));
	struct mask_policy *mp = (struct mask_policy *)1;

	assert_non_null(p);
	assert_int_equal(mask_rules_build(p, &mp, err, sizeof(err)), -EINVAL);
	assert_null(mp);
	assert_non_null(strstr(err, "p.yaml:7: mask: "));
	policy_unref(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify_cases),
		cmocka_unit_test(test_prefixes_fail_closed),
		cmocka_unit_test(test_rules_from_policy),
		cmocka_unit_test(test_rules_refuse_unknown_strategy),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
