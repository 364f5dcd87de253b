/*
 * fuzz_mask_classify: masking's classifier (mask_classify.h) on arbitrary bytes.
 *
 * Input: one control byte (bit 0: SQL_LEX_BACKSLASH_QUOTES; bits 1-3: capacity 1..8), then
 * the SQL text, copied into an exact-size heap block so ASan sees any read past it.
 *
 * Invariants: between 1 and cap statements; every name and COPY name NUL-terminated within
 * its array; the COPY column list's names lie inside copy_cols and are counted; a NULL
 * string within its bound; options read only for a COPY TO; the same answer twice; a
 * statement said to reference nothing never names a relation or function (fail closed); a
 * statement said to name exactly some relations and functions lists them whole.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_classify.h"
#include "sql/sql.h"

#include "fuzz_check.h"

static void check_info(const struct mask_stmt_info *in)
{
	size_t used = 0;

	CHECK(memchr(in->name, 0, sizeof(in->name)));
	CHECK(memchr(in->copy_schema, 0, sizeof(in->copy_schema)));
	CHECK(memchr(in->copy_table, 0, sizeof(in->copy_table)));
	CHECK(memchr(in->copy_encoding, 0, sizeof(in->copy_encoding)));
	for (unsigned i = 0; i < in->ncopy_cols; i++) {
		const char *end = memchr(in->copy_cols + used, 0, sizeof(in->copy_cols) - used);

		CHECK(end);
		used = (size_t)(end - in->copy_cols) + 1;
	}
	CHECK(in->copy_opts.null_len <= MASK_COPY_NULL_MAX);
	CHECK(!in->copy_opts_known || in->copy_to);
	CHECK(in->copy_opts.format <= MASK_COPY_BINARY);
	CHECK(in->name_use <= MASK_NAME_DROPS_ALL);
	CHECK(in->refs_known);
	if (in->refs == MASK_REFS_NAMES) {
		/* every listed name lies whole inside the buffer */
		const char *schema, *name;
		size_t pos = 0;

		CHECK(in->nrelations + in->nfunctions > 0);
		for (unsigned i = 0; i < (unsigned)in->nrelations + in->nfunctions; i++)
			CHECK(mask_stmt_next_name(in, &pos, &schema, &name));
	} else {
		CHECK(in->nrelations == 0 && in->nfunctions == 0);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mask_stmt_info a[8], b[8];
	unsigned opts, cap;
	char *sql;
	int n, m;

	if (size < 1)
		return 0;
	opts = data[0] & 1 ? SQL_LEX_BACKSLASH_QUOTES : 0;
	cap = 1 + ((data[0] >> 1) & 7);
	sql = malloc(size - 1 ? size - 1 : 1);
	if (!sql)
		return 0;
	memcpy(sql, data + 1, size - 1);
	n = mask_classify(sql, size - 1, opts, a, cap);
	CHECK(n >= 1 && (unsigned)n <= cap);
	for (int i = 0; i < n; i++)
		check_info(&a[i]);
	m = mask_classify(sql, size - 1, opts, b, cap);
	CHECK(m == n && memcmp(a, b, (size_t)n * sizeof(a[0])) == 0);
	if (n == 1 && mask_stmt_refs(&a[0]) == MASK_REFS_NONE && size > 1) {
		static struct sql_analysis an;
		struct sql_splitter sp;
		struct sql_stmt st;

		sql_split_init(&sp, sql, size - 1, opts);
		if (sql_split_next(&sp, &st)) {
			sql_analyze(sql + st.text_off, st.text_len, opts, &an);
			CHECK(an.nrelations == 0 && an.nfunctions == 0);
		}
	}
	free(sql);
	return 0;
}
