/*
 * test_mask_policy: what sits between the policy file and the rewriters: column references
 * and profiles (mask_policy.h), the catalog resolution query and its result
 * (mask_catalog.h), result plans and `policy explain` (mask_plan.h), and scrubbing
 * (mask_scrub.h).
 *
 * Table-driven: data/mask/colrefs.txt, data/mask/scrub.txt. The catalog result is checked
 * twice: rows written here (every row kind, hostile rows), and a real PostgreSQL 15 result
 * for a schema with domains, arrays, inheritance, partitions and views, recorded in
 * data/mask/capture/catalog.be (see its .txt for how it was made).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_catalog.h"
#include "mask/mask_plan.h"
#include "mask/mask_policy.h"
#include "mask/mask_scrub.h"

#include "mask_test_util.h"

#define DATA_DIR "data/mask/"
#define LINE_MAX_ 8192

static unsigned failures;

static void __attribute__((format(printf, 3, 4))) fail_line(const char *file, unsigned line,
							    const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s%s:%u: ", DATA_DIR, file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

/* ---- column references -------------------------------------------------------------------- */

static void test_colref_cases(void **state)
{
	FILE *f = fopen(DATA_DIR "colrefs.txt", "r");
	char line[LINE_MAX_];
	unsigned lineno = 0, cases = 0;

	assert_non_null(f);
	failures = 0;
	while (fgets(line, sizeof(line), f)) {
		char *fld[2], err[256], text[LINE_MAX_];
		uint8_t buf[LINE_MAX_];
		struct bytes in = {.p = buf};
		struct mask_colref r, again;
		char fmt[MASK_COLREF_STRLEN];
		int rc;

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (mt_fields(line, fld, 2) != 2 || !mt_bytes(fld[0], &in)) {
			fail_line("colrefs.txt", lineno, "malformed case");
			continue;
		}
		cases++;
		memcpy(text, buf, in.n);
		text[in.n] = '\0';
		rc = mask_colref_parse(in.null ? NULL : text, &r, err, sizeof(err));
		if (!strncmp(fld[1], "ERR:", 4)) {
			if (rc != -EINVAL || strncmp(err, fld[1] + 4, strlen(fld[1] + 4)))
				fail_line("colrefs.txt", lineno, "want error \"%s\", got %d \"%s\"",
					  fld[1] + 4, rc, err);
			continue;
		}
		{
			const char *p = fld[1];
			uint8_t pb[3][256];
			struct bytes parts[3] = {{.p = pb[0]}, {.p = pb[1]}, {.p = pb[2]}};
			const char *got[3] = {r.schema, r.table, r.column};

			for (int i = 0; i < 3; i++)
				if (!mt_token(&p, &parts[i])) {
					fail_line("colrefs.txt", lineno, "malformed expectation");
					goto next;
				}
			if (rc != 0) {
				fail_line("colrefs.txt", lineno, "refused: %s", err);
				goto next;
			}
			for (int i = 0; i < 3; i++)
				if (strlen(got[i]) != parts[i].n || memcmp(got[i], parts[i].p, parts[i].n))
					fail_line("colrefs.txt", lineno, "part %d is \"%s\"", i, got[i]);
			/* the formatted reference reads back as the same column */
			mask_colref_format(&r, fmt, sizeof(fmt));
			if (mask_colref_parse(fmt, &again, err, sizeof(err)) || !mask_colref_equal(&r, &again))
				fail_line("colrefs.txt", lineno, "%s does not read back", fmt);
		}
next:;
	}
	fclose(f);
	assert_true(cases > 20);
	assert_int_equal(failures, 0);
}

static void test_profiles(void **state)
{
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *a, *b;
	char err[256];

	assert_int_equal(mask_policy_add_profile(mp, "a", &a), 0);
	assert_int_equal(mask_policy_add_profile(mp, "b", &b), 0);
	assert_int_equal(mask_profile_add(a, "public.customers.ssn", "partial-last-4", err, sizeof(err)), 0);
	/* the same column spelled otherwise: one policy column, refused twice in one profile */
	assert_int_equal(mask_profile_add(a, "PUBLIC.Customers.SSN", "hash", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "masked twice"));
	assert_int_equal(mask_profile_add(b, "PUBLIC.Customers.SSN", "hash", err, sizeof(err)), 0);
	assert_int_equal(mask_profile_add(b, "public.customers.card", "nope", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "unknown masking strategy"));
	assert_int_equal(mask_profile_add(b, "customers.card", "hash", err, sizeof(err)), -EINVAL);
	assert_int_equal(mask_policy_ncolumns(mp), 1);
	assert_int_equal(mask_profile_strategy(a, 0)->kind, MASK_PARTIAL);
	assert_int_equal(mask_profile_strategy(b, 0)->kind, MASK_HASH);
	assert_int_equal(mask_profile_strategy(a, 7)->kind, MASK_NONE);
	assert_ptr_equal(mask_policy_find_profile(mp, "b"), b);
	mask_policy_seal(mp);
	assert_int_equal(mask_profile_add(a, "s.t.c", "null", err, sizeof(err)), -EBUSY);
	mask_policy_put(mp);
}

/* ---- the catalog -------------------------------------------------------------------------- */

/* Rule names cannot reach the SQL: they go in as hex, whatever bytes they hold. */
static void test_query_carries_names_as_hex(void **state)
{
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *p;
	char err[256];
	char *q;
	int rc;

	assert_int_equal(mask_policy_add_profile(mp, "r", &p), 0);
	assert_null(mask_catalog_query(mp, &rc));
	assert_int_equal(rc, -ENODATA);
	assert_int_equal(mask_profile_add(p, "\"x'); DROP TABLE t; --\".\"\\\\\".\"$$ü$$\"", "null", err,
					  sizeof(err)),
			 0);
	q = mask_catalog_query(mp, &rc);
	assert_non_null(q);
	assert_null(strstr(q, "DROP TABLE"));
	assert_null(strstr(q, "$$"));
	assert_null(strstr(q, "\\"));
	/* "x'); DROP" in hex */
	assert_non_null(strstr(q, "782729"));
	assert_true(strncmp(q, "WITH RECURSIVE", 14) == 0);
	/* every relation and operator is schema-qualified */
	assert_null(strstr(q, " pg_class "));
	assert_null(strstr(q, " = "));
	free(q);
	mask_policy_put(mp);
}

struct cat_fixture {
	struct mask_policy *mp;
	const struct mask_profile *p;
};

static void cat_row(struct mask_catalog_builder *b, const char *const v[13], int want)
{
	uint8_t buf[4096];
	size_t n = 7;
	struct proto_msg m;

	buf[0] = 'D';
	buf[5] = 0;
	buf[6] = 13;
	for (int i = 0; i < 13; i++) {
		if (!v[i]) {
			proto_write_u32(buf + n, UINT32_MAX);
			n += 4;
			continue;
		}
		proto_write_u32(buf + n, (uint32_t)strlen(v[i]));
		memcpy(buf + n + 4, v[i], strlen(v[i]));
		n += 4 + strlen(v[i]);
	}
	m = (struct proto_msg){'D', (uint32_t)(n - 5), buf + 5};
	assert_int_equal(mask_catalog_builder_row(b, &m), want);
}

static struct mask_catalog *synthetic(struct mask_policy **mpo, const struct mask_profile **po)
{
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *p;
	struct mask_catalog_builder *b;
	struct mask_catalog *c;
	char err[256];
	const char *const rows[][13] = {
		/* 0 ssn: table 100 att 3 (direct) and its partition 101 att 2 */
		{"c", "0", "100", "3", "25", "-1", "text", "false", NULL, NULL, "true", NULL, NULL},
		{"c", "0", "101", "2", "25", "-1", "text", "false", NULL, NULL, "false", NULL, NULL},
		/* 1 id (int4): email does not apply */
		{"c", "1", "100", "1", "23", "-1", "int4", "false", NULL, NULL, "true", NULL, NULL},
		/* 2 tags: an array of a domain over varchar(5) */
		{"c", "2", "100", "4", "7001", "9", "_ssn_t", "true", "1043", "varchar", "true", NULL, NULL},
		{"v", "0", "200", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
		{"m", "3", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
		{"a", NULL, "100", "3", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "ssn"},
		{"a", NULL, "100", "1", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "id"},
		{"a", NULL, "100", "5", NULL, NULL, NULL, NULL, NULL, NULL, "true", NULL, "gen"},
		{"a", NULL, "100", "4", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "tags"},
		{"t", NULL, "100", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "public", "customers"},
		{"t", NULL, "101", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "public", "customers_2024"},
		{"t", NULL, "300", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "other", "customers"},
		{"a", NULL, "101", "2", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "ssn"},
		{"a", NULL, "101", "1", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "id"},
	};

	assert_int_equal(mask_policy_add_profile(mp, "analyst", &p), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.ssn", "partial-last-4", err, sizeof(err)), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.id", "email", err, sizeof(err)), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.tags", "hash", err, sizeof(err)), 0);
	assert_int_equal(mask_profile_add(p, "public.gone.x", "null", err, sizeof(err)), 0);
	mask_policy_seal(mp);
	b = mask_catalog_builder_new(mp);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		cat_row(b, rows[i], 0);
	assert_int_equal(mask_catalog_builder_finish(b, &c), 0);
	*mpo = mp;
	*po = p;
	return c;
}

static void test_catalog_lookups(void **state)
{
	struct mask_policy *mp;
	const struct mask_profile *p;
	struct mask_catalog *c = synthetic(&mp, &p);
	const struct mask_column *col;
	struct mask_origin o[8];
	const char *cols[] = {"tags", "ssn"};
	unsigned warned_missing = 0, warned_type = 0;

	col = mask_catalog_lookup(c, 100, 3);
	assert_non_null(col);
	assert_int_equal(mask_column_strategy(col, p)->kind, MASK_PARTIAL);
	assert_int_equal(col->type.tc, MASK_TC_TEXT);
	col = mask_catalog_lookup(c, 101, 2); /* the partition's own attnum */
	assert_non_null(col);
	assert_int_equal(mask_column_strategy(col, p)->kind, MASK_PARTIAL);
	col = mask_catalog_lookup(c, 100, 4);
	assert_non_null(col);
	assert_true(col->type.array);
	assert_int_equal(col->type.tc, MASK_TC_TEXT);
	assert_int_equal(col->type.typmod, 9);
	assert_int_equal(col->type.elem_oid, 1043);
	assert_null(mask_catalog_lookup(c, 100, 2));
	assert_null(mask_catalog_lookup(c, 0, 3));
	assert_true(mask_catalog_derived(c, 200, p));
	assert_false(mask_catalog_derived(c, 100, p));
	/* COPY columns: default list skips generated columns, in attnum order */
	assert_int_equal(mask_catalog_copy_columns(c, "public", "customers", NULL, 0, o, 8), 3);
	assert_int_equal(o[0].attnum, 1);
	assert_int_equal(o[1].attnum, 3);
	assert_int_equal(o[2].attnum, 4);
	assert_int_equal(mask_catalog_copy_columns(c, "public", "customers", cols, 2, o, 8), 2);
	assert_int_equal(o[0].attnum, 4);
	assert_int_equal(o[1].attnum, 3);
	assert_int_equal(mask_catalog_copy_columns(c, NULL, "customers", NULL, 0, o, 8), -EDOM);
	assert_int_equal(mask_catalog_copy_columns(c, NULL, "customers_2024", NULL, 0, o, 8), 2);
	assert_int_equal(mask_catalog_copy_columns(c, "public", "nothere", NULL, 0, o, 8), 0);
	cols[0] = "nope";
	assert_int_equal(mask_catalog_copy_columns(c, "public", "customers", cols, 2, o, 8), -ENOENT);
	assert_int_equal(mask_catalog_copy_columns(c, "public", "customers", NULL, 0, o, 2), -E2BIG);
	for (unsigned i = 0; i < mask_catalog_nwarnings(c); i++) {
		const char *w = mask_catalog_warning(c, i);

		warned_missing += strstr(w, "public.gone.x") != NULL;
		warned_type += strstr(w, "email does not apply to column public.customers.id") != NULL;
	}
	assert_int_equal(warned_missing, 1);
	assert_int_equal(warned_type, 1);
	mask_catalog_put(c);
	mask_policy_put(mp);
}

/* Rows the query never makes are refused, not half-believed. */
static void test_catalog_hostile_rows(void **state)
{
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *p;
	struct mask_catalog_builder *b;
	char err[256];
	const char *const bad[][13] = {
		{"c", "1", "100", "3", "25", "-1", "text", "false", NULL, NULL, "true", NULL, NULL},
		{"c", "0", "100", "0", "25", "-1", "text", "false", NULL, NULL, "true", NULL, NULL},
		{"c", "0", "-1", "3", "25", "-1", "text", "false", NULL, NULL, "true", NULL, NULL},
		{"c", "0", "100", "3", "25x", "-1", "text", "false", NULL, NULL, "true", NULL, NULL},
		{"c", "0", "100", "3", "25", "-1", "text", "maybe", NULL, NULL, "true", NULL, NULL},
		{"c", "0", "100", "3", "1009", "-1", "_text", "true", NULL, NULL, "true", NULL, NULL},
		{"c", "0", "100", "40000", "25", "-1", "text", "false", NULL, NULL, "true", NULL, NULL},
		{"x", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
		{NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
		{"t", NULL, "100", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "customers"},
		{"a", NULL, "100", "0", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "x"},
	};
	const char *const ok_c[13] = {"c", "0", "100", "3", "25", "-1", "text", "false", NULL, NULL,
				      "true", NULL, NULL};
	const char *const clash[13] = {"c", "0", "100", "3", "23", "-1", "int4", "false", NULL, NULL,
				       "false", NULL, NULL};
	const char *const dup_t[13] = {"t", NULL, "100", NULL, NULL, NULL, NULL, NULL, NULL, NULL,
				       NULL, "public", "customers"};
	uint8_t buf[64];
	struct proto_msg m;

	assert_int_equal(mask_policy_add_profile(mp, "r", &p), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.ssn", "null", err, sizeof(err)), 0);
	mask_policy_seal(mp);
	b = mask_catalog_builder_new(mp);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cat_row(b, bad[i], -EPROTO);
	cat_row(b, ok_c, 0);
	cat_row(b, clash, -EPROTO); /* one column, two types */
	cat_row(b, dup_t, 0);
	cat_row(b, dup_t, -EPROTO);
	/* a DataRow of 12 columns; a value with a NUL; a value longer than any name */
	buf[0] = 'D';
	buf[5] = 0;
	buf[6] = 12;
	m = (struct proto_msg){'D', 2, buf + 5};
	assert_int_equal(mask_catalog_builder_row(b, &m), -EPROTO);
	mask_catalog_builder_free(b);
	mask_policy_put(mp);
}

/*
 * What computed columns may be read from in clear: clean relations (qualified exactly;
 * unqualified only when clean in every schema), safe built-ins less those shadowed outside
 * pg_catalog, and nothing at all while the result is not whole (no 'h' row) or is over the
 * cap. Hostile rows of the new kinds are refused.
 */
static struct mask_policy *one_column_policy(void)
{
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *p;
	char err[256];

	assert_int_equal(mask_policy_add_profile(mp, "r", &p), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.ssn", "null", err, sizeof(err)), 0);
	mask_policy_seal(mp);
	return mp;
}

static void test_catalog_clean_names(void **state)
{
	struct mask_policy *mp = one_column_policy();
	struct mask_catalog_builder *b = mask_catalog_builder_new(mp);
	struct mask_catalog *c;
	const char *const rows[][13] = {
		{"k", NULL, "17001", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "true", "public", "orders"},
		{"k", NULL, "17002", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "false", "a", "dup"},
		{"k", NULL, "17003", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "true", "pg_catalog",
		 "pg_class"},
		{"f", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "upper"},
		{"h", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, NULL},
	};
	const char *const bad[][13] = {
		{"k", NULL, "17004", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "yes", "public", "t"},
		{"k", NULL, "17005", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "true", NULL, "t"},
		{"k", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "true", "public", "t"},
		{"f", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "ssn_leak"},
		{"f", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
		{"h", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
		{"h", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, NULL},
	};

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		cat_row(b, rows[i], 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		cat_row(b, bad[i], -EPROTO); /* the last: a second 'h' */
	assert_int_equal(mask_catalog_builder_finish(b, &c), 0);
	assert_true(mask_catalog_relation_clean(c, "public", "orders"));
	assert_true(mask_catalog_relation_clean(c, NULL, "orders"));
	assert_true(mask_catalog_relation_clean(c, "", "pg_class"));
	assert_true(mask_catalog_relation_clean(c, "a", "dup"));
	assert_false(mask_catalog_relation_clean(c, NULL, "dup")); /* another dup is not clean */
	assert_false(mask_catalog_relation_clean(c, "b", "dup"));
	assert_false(mask_catalog_relation_clean(c, "other", "orders"));
	assert_false(mask_catalog_relation_clean(c, NULL, "customers"));
	assert_false(mask_catalog_relation_clean(c, NULL, "zzz"));
	assert_true(mask_catalog_function_clean(c, NULL, "count"));
	assert_true(mask_catalog_function_clean(c, "pg_catalog", "pg_backend_pid"));
	assert_true(mask_catalog_function_clean(c, "", "width_bucket")); /* the list's ends */
	assert_true(mask_catalog_function_clean(c, "", "abs"));
	assert_false(mask_catalog_function_clean(c, NULL, "upper")); /* shadowed */
	assert_false(mask_catalog_function_clean(c, "public", "count"));
	assert_false(mask_catalog_function_clean(c, NULL, "query_to_xml"));
	assert_false(mask_catalog_function_clean(c, NULL, "current_setting"));
	assert_false(mask_catalog_function_clean(c, NULL, "pg_read_file"));
	assert_false(mask_catalog_code_hooks(c));
	assert_true(mask_catalog_relid_listed(c, 17001));
	assert_true(mask_catalog_relid_listed(c, 17003));
	assert_false(mask_catalog_relid_listed(c, 17004)); /* its row was refused */
	assert_false(mask_catalog_relid_listed(c, 99999));
	assert_true(mask_catalog_generation(c) < mask_catalog_next_generation());
	mask_catalog_put(c);

	/* no 'h' row: the result was not whole; nothing is clean, code hooks assumed */
	b = mask_catalog_builder_new(mp);
	cat_row(b, rows[0], 0);
	assert_int_equal(mask_catalog_builder_finish(b, &c), 0);
	assert_false(mask_catalog_relation_clean(c, "public", "orders"));
	assert_true(mask_catalog_code_hooks(c));
	mask_catalog_put(c);

	/* over the cap: no clean set, and a warning says so */
	b = mask_catalog_builder_new(mp);
	for (unsigned i = 0; i <= MASK_CATALOG_CLEAN_MAX; i++) {
		char rel[32];
		char oid[16];
		const char *row[13] = {"k", NULL, oid, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
				       "true", "public", rel};

		snprintf(rel, sizeof(rel), "t%u", i);
		snprintf(oid, sizeof(oid), "%u", 20000 + i);
		cat_row(b, row, 0);
	}
	cat_row(b, rows[4], 0);
	assert_int_equal(mask_catalog_builder_finish(b, &c), 0);
	assert_false(mask_catalog_relation_clean(c, "public", "t1"));
	assert_int_equal(mask_catalog_nwarnings(c), 1);
	assert_non_null(strstr(mask_catalog_warning(c, 0), "more than 10000 tables"));
	mask_catalog_put(c);
	mask_policy_put(mp);
}

/* The query asks about planner statistics, clean relations, shadowing functions and code
 * hooks, names the safe list, and bounds the clean set. */
static void test_query_asks_for_clean_names(void **state)
{
	struct mask_policy *mp = one_column_policy();
	int rc;
	char *q = mask_catalog_query(mp, &rc);

	assert_non_null(q);
	assert_non_null(strstr(q, "pg_stats_ext_exprs"));
	assert_non_null(strstr(q, "'k'"));
	assert_non_null(strstr(q, "LIMIT 10001)"));
	assert_non_null(strstr(q, "'{abs,age,"));
	assert_non_null(strstr(q, ",width_bucket}'::pg_catalog.name[])"));
	assert_null(strstr(q, "current_setting"));
	assert_null(strstr(q, " = "));
	free(q);
	mask_policy_put(mp);
}

/* ---- plans and explain ----------------------------------------------------------------------- */

static void rowdesc(uint8_t *buf, size_t *n, const char *const *names, const uint32_t *tab,
		    const int16_t *att, const uint32_t *typ, unsigned k)
{
	size_t o = 7;

	buf[0] = 'T';
	buf[5] = 0;
	buf[6] = (uint8_t)k;
	for (unsigned i = 0; i < k; i++) {
		memcpy(buf + o, names[i], strlen(names[i]) + 1);
		o += strlen(names[i]) + 1;
		proto_write_u32(buf + o, tab[i]);
		buf[o + 4] = (uint8_t)(att[i] >> 8);
		buf[o + 5] = (uint8_t)att[i];
		proto_write_u32(buf + o + 6, typ[i]);
		buf[o + 10] = 0xff;
		buf[o + 11] = 0xff;
		proto_write_u32(buf + o + 12, UINT32_MAX);
		buf[o + 16] = 0;
		buf[o + 17] = 0;
		o += 18;
	}
	proto_write_u32(buf + 1, (uint32_t)(o - 1));
	*n = o;
}

static void test_plan_and_explain(void **state)
{
	struct mask_policy *mp;
	const struct mask_profile *p;
	struct mask_catalog *c = synthetic(&mp, &p);
	/* c: SELECT c FROM customers c, a whole-row reference: the server names the table
	 * with attribute number 0; ctid: a system column (negative attribute number) */
	const char *names[] = {"ssn", "id", "upper", "v_ssn", "ssn_now_int", "name", "c", "ctid"};
	const uint32_t tab[] = {100, 100, 0, 200, 101, 100, 100, 100};
	const int16_t att[] = {3, 1, 0, 1, 2, 2, 0, -1};
	const uint32_t typ[] = {25, 23, 25, 25, 23, 25, 16496, 27};
	uint8_t buf[1024], req[256];
	size_t n;
	struct proto_msg m;
	char out[2048];
	int len;

	rowdesc(buf, &n, names, tab, att, typ, 8);
	m = (struct proto_msg){'T', (uint32_t)(n - 5), buf + 5};
	len = mask_explain(&m, p, c, MASK_REFS_MASKED, out, sizeof(out));
	assert_true(len > 0);
	assert_non_null(strstr(out, "1\tssn\tmasked\tpartial-last-4\tpublic.customers.ssn\n"));
	assert_non_null(strstr(out, "2\tid\tmasked\tnull (strategy does not apply"));
	assert_non_null(strstr(out, "3\tupper\twhole\tnull (computed"));
	assert_non_null(strstr(out, "4\tv_ssn\twhole\tnull (column of a view"));
	assert_non_null(strstr(out, "5\tssn_now_int\twhole\tnull (masked column whose type changed"));
	assert_non_null(strstr(out, "6\tname\tclear\t-\ttable 100 column 2\n"));
	assert_non_null(strstr(out, "7\tc\twhole\tnull (computed"));
	assert_non_null(strstr(out, "8\tctid\tclear"));
	assert_null(strstr(out, "deny"));
	len = mask_explain(&m, p, c, MASK_REFS_NONE, out, sizeof(out));
	assert_non_null(strstr(out, "3\tupper\tclear"));
	/* NoData: nothing to mask */
	m = (struct proto_msg){'n', 0, buf};
	assert_int_equal(mask_explain(&m, p, c, MASK_REFS_MASKED, out, sizeof(out)), 0);
	/* a result name is the server's echo of the client's alias: an escape sequence, a tab
	 * or a newline in it must neither reach a terminal nor forge a field or a line */
	{
		const char *hostile[] = {"\x1b]0;owned\a\x1b[2J", "a\tb\nforged\tline"};

		rowdesc(buf, &n, hostile, tab, att, typ, 2);
		m = (struct proto_msg){'T', (uint32_t)(n - 5), buf + 5};
		len = mask_explain(&m, p, c, MASK_REFS_MASKED, out, sizeof(out));
		assert_true(len > 0);
		assert_string_equal(out, "1\t\\x1b]0;owned\\x07\\x1b[2J\tmasked\tpartial-last-4\t"
					 "public.customers.ssn\n"
					 "2\ta\\x09b\\x0aforged\\x09line\tmasked\tnull (strategy "
					 "does not apply to the type: null)\tpublic.customers.id\n");
	}
	/* what the tool sends to describe a statement without running it */
	len = mask_explain_request(req, sizeof(req), "SELECT ssn FROM customers");
	assert_true(len > 0);
	assert_int_equal(req[0], 'P');
	assert_int_equal(mask_explain_request(req, 10, "SELECT 1"), PROTO_ERR_BUFFER);
	mask_catalog_put(c);
	mask_policy_put(mp);
}

/* ---- scrubbing ------------------------------------------------------------------------------- */

/* Items '~'-separated: TYPE=text (errors), or byte tokens as NUL-terminated strings / x: raw. */
static bool build_body(const char *kind, const char *s, uint8_t *out, size_t *n)
{
	char buf[LINE_MAX_], *save = NULL, *tok;
	bool error = !strcmp(kind, "error");

	*n = 0;
	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, "~", &save); tok; tok = strtok_r(NULL, "~", &save)) {
		if (error) {
			if (tok[1] != '=')
				return false;
			out[(*n)++] = (uint8_t)tok[0];
			memcpy(out + *n, tok + 2, strlen(tok + 2) + 1);
			*n += strlen(tok + 2) + 1;
			continue;
		}
		{
			uint8_t tb[1024];
			struct bytes b = {.p = tb};
			bool raw = !strncmp(tok, "x:", 2);

			if (!mt_bytes(tok, &b))
				return false;
			memcpy(out + *n, b.p, b.n);
			*n += b.n;
			if (!raw)
				out[(*n)++] = 0;
		}
	}
	if (error)
		out[(*n)++] = 0;
	return true;
}

static void test_scrub_cases(void **state)
{
	FILE *f = fopen(DATA_DIR "scrub.txt", "r");
	char line[LINE_MAX_];
	unsigned lineno = 0, cases = 0;

	assert_non_null(f);
	failures = 0;
	while (fgets(line, sizeof(line), f)) {
		char *fld[4];
		uint8_t in[4096], want[4096], out[4096 + MASK_SCRUB_SLACK];
		size_t in_n, want_n;
		struct proto_msg m;
		uint8_t type;
		int rc;

		lineno++;
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (mt_fields(line, fld, 4) != 4 || !build_body(fld[0], fld[2], in + 5, &in_n)) {
			fail_line("scrub.txt", lineno, "malformed case");
			continue;
		}
		cases++;
		type = !strcmp(fld[0], "error") ? (fld[2][2] == 'N' ? 'N' : 'E')
		       : !strcmp(fld[0], "notify") ? 'A' : 'S';
		if (!strcmp(fld[0], "error") && strstr(fld[2], "S=NOTICE"))
			type = 'N';
		in[0] = type;
		proto_write_u32(in + 1, (uint32_t)(in_n + 4));
		m = (struct proto_msg){type, (uint32_t)in_n, in + 5};
		if (type == 'E' || type == 'N')
			rc = mask_scrub_error(&m, out, sizeof(out));
		else if (type == 'A')
			rc = mask_scrub_notification(&m, out, sizeof(out));
		else
			rc = mask_scrub_parameter(&m, strcmp(fld[1], "-") ? fld[1] : NULL, out,
						  sizeof(out));
		if (!strcmp(fld[3], "ERR")) {
			if (rc != -EPROTO)
				fail_line("scrub.txt", lineno, "want -EPROTO, got %d", rc);
			continue;
		}
		if (!strcmp(fld[3], "SAME")) {
			if (rc != 0)
				fail_line("scrub.txt", lineno, "want unchanged, got %d", rc);
			continue;
		}
		if (!build_body(fld[0], fld[3], want + 5, &want_n)) {
			fail_line("scrub.txt", lineno, "malformed expectation");
			continue;
		}
		want[0] = type;
		proto_write_u32(want + 1, (uint32_t)(want_n + 4));
		if (rc != (int)(want_n + 5) || memcmp(out, want, want_n + 5)) {
			fail_line("scrub.txt", lineno, "wrong rewrite (rc %d, want %zu)", rc, want_n + 5);
			if (rc > 0) {
				fprintf(stderr, "    got: ");
				for (int k = 5; k < rc; k++)
					fputc(out[k] >= 0x20 ? out[k] : '|', stderr);
				fputc('\n', stderr);
			}
		} else {
			/* the rewrite is itself a valid message of its type */
			struct proto_msg back = {type, (uint32_t)want_n, out + 5};

			if (proto_validate(PROTO_BACKEND, &back) != PROTO_OK)
				fail_line("scrub.txt", lineno, "the rewrite does not validate");
		}
		/* too little room is said, never half-written */
		if (rc > 0 && (type == 'E' || type == 'N') && mask_scrub_error(&m, out, 8) != -ENOSPC)
			fail_line("scrub.txt", lineno, "small room not refused");
	}
	fclose(f);
	assert_true(cases > 20);
	assert_int_equal(failures, 0);
}

static void test_ddl_tags(void **state)
{
	assert_true(mask_ddl_invalidates("ALTER TABLE"));
	assert_true(mask_ddl_invalidates("CREATE VIEW"));
	assert_true(mask_ddl_invalidates("DROP DOMAIN"));
	assert_true(mask_ddl_invalidates("IMPORT FOREIGN SCHEMA"));
	assert_false(mask_ddl_invalidates("SELECT 5"));
	assert_false(mask_ddl_invalidates("INSERT 0 1"));
	assert_false(mask_ddl_invalidates(NULL));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_colref_cases),
		cmocka_unit_test(test_profiles),
		cmocka_unit_test(test_query_carries_names_as_hex),
		cmocka_unit_test(test_catalog_lookups),
		cmocka_unit_test(test_catalog_hostile_rows),
		cmocka_unit_test(test_catalog_clean_names),
		cmocka_unit_test(test_query_asks_for_clean_names),
		cmocka_unit_test(test_plan_and_explain),
		cmocka_unit_test(test_scrub_cases),
		cmocka_unit_test(test_ddl_tags),
	};

	return cmocka_run_group_tests_name("mask_policy", tests, NULL, NULL);
}
