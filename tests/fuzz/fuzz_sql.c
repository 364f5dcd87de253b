/*
 * fuzz_sql: the SQL lexer, splitter, normaliser and classifier on arbitrary bytes.
 *
 * Input: one control byte, then the SQL text. Bit 0 of the control byte turns on
 * SQL_LEX_BACKSLASH_QUOTES (standard_conforming_strings off); the other bits pick a small
 * output capacity (0..127) for the normaliser's truncation paths.
 *
 * Invariants (abort on violation, so libFuzzer reports them):
 *   - lexing: tokens lie inside the input, in order, never overlap, each makes progress;
 *     EOF is sticky; the number of tokens is at most the input length;
 *   - split: pieces start at 0, follow each other without gaps, the last ends at the end
 *     of input; each statement's text lies inside its piece and starts and ends on a token;
 *     no statements only when the input has no token but ';';
 *   - normalise (small and large buffers): 0 / -ENOSPC / -EINVAL as documented, output
 *     NUL-terminated inside the buffer, bytes past it untouched, clean UTF-8 without
 *     control characters, deterministic, and a truncated output is marked; a fitting
 *     output is a prefix-consistent: the small result, unless truncated, equals the large;
 *   - classify: a class in range, the mask holds the primary (UNKNOWN: mask 0), and every
 *     split statement classifies the same with its trailing ';' or without;
 *   - analyze: counts within the arrays, every name NUL-terminated and at most 63 bytes, a
 *     column's relation index in range, the prepared body inside the text, only defined
 *     flags, the primary class sql_classify's, and the same answer twice;
 *   - shape: 0 or -ENOSPC, nothing written past the buffer, the same shape twice; the text
 *     with every number rewritten has, when its shape is the same, the same classes, flags
 *     and names (what the policy's verdict cache rests on).
 * The text is copied into an exact-size heap block so ASan sees any read past it.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics_std.h"
#include "sql/sql.h"

#include "fuzz_check.h"

#define BIG 8192
#define GUARD 16

static bool clean_utf8(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;

	for (size_t i = 0; i < n;) {
		unsigned char c = u[i];
		size_t k;

		if (c < 0x20 || c == 0x7f)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
		if (k == 0 || c > 0xf4 || i + k > n)
			return false;
		for (size_t j = 1; j < k; j++)
			if ((u[i + j] & 0xc0) != 0x80)
				return false;
		i += k;
	}
	return true;
}

static int normalise_checked(const char *sql, size_t len, unsigned opts, char *buf,
			     size_t cap)
{
	size_t olen = 12345;
	int rc;

	memset(buf, 'Z', cap + GUARD);
	rc = sql_normalize(sql, len, opts, buf, cap, &olen);
	for (size_t i = cap; i < cap + GUARD; i++)
		CHECK(buf[i] == 'Z');
	if (cap == 0) {
		CHECK(rc == -EINVAL && olen == 0);
		return rc;
	}
	CHECK(rc == 0 || rc == -ENOSPC);
	CHECK(olen < cap && buf[olen] == '\0' && strlen(buf) == olen);
	CHECK(clean_utf8(buf, olen));
	if (rc == -ENOSPC && cap > 4) {
		CHECK(olen >= 3 && !memcmp(buf + olen - 3, "...", 3));
	}
	return rc;
}

static void check_lex(const char *sql, size_t len, unsigned opts)
{
	struct sql_lexer lx;
	struct sql_token t;
	size_t prev_end = 0, count = 0;

	sql_lex_init(&lx, sql, len, opts);
	for (;;) {
		sql_lex_next(&lx, &t);
		CHECK(t.off >= prev_end && t.off <= len && t.len <= len - t.off);
		CHECK((unsigned)t.kind < SQL_TOK_COUNT);
		if (t.kind == SQL_TOK_EOF) {
			CHECK(t.len == 0 && t.off == len);
			break;
		}
		CHECK(t.len > 0);
		prev_end = t.off + t.len;
		CHECK(++count <= len);
	}
	sql_lex_next(&lx, &t);
	CHECK(t.kind == SQL_TOK_EOF);
}

static void check_split(const char *sql, size_t len, unsigned opts, char *buf)
{
	struct sql_splitter sp;
	struct sql_stmt st;
	size_t covered = 0, n = 0;

	sql_split_init(&sp, sql, len, opts);
	while (sql_split_next(&sp, &st)) {
		uint32_t m1, m2;

		CHECK(st.off == covered);
		CHECK(st.len > 0 && st.len <= len - st.off);
		CHECK(st.text_off >= st.off && st.text_len > 0 &&
		      st.text_off + st.text_len <= st.off + st.len);
		covered = st.off + st.len;
		CHECK(++n <= len);

		/* The statement text starts on a token and ends on one. */
		struct sql_lexer lx;
		struct sql_token t;
		sql_lex_init(&lx, sql, len, opts);
		lx.pos = st.text_off;
		sql_lex_next(&lx, &t);
		CHECK(t.off == st.text_off);

		enum sql_class c1 = sql_classify(sql + st.text_off, st.text_len, opts, &m1);
		enum sql_class c2 = sql_classify(sql + st.off, st.len, opts, &m2);
		CHECK((unsigned)c1 < SQL_CLASS_COUNT);
		CHECK(c1 == SQL_CLASS_UNKNOWN ? m1 == 0 : (m1 & SQL_CLASS_BIT(c1)) != 0);
		/* The piece (with separators, comments around it) classifies the same, unless
		 * the text alone cut a token (the statement ended inside an open comment). */
		if (!(st.flags & SQL_STMTF_UNTERMINATED))
			CHECK(c1 == c2 && m1 == m2);
		(void)normalise_checked(sql + st.text_off, st.text_len, opts, buf, 64);
	}
	if (n)
		CHECK(covered == len);
	else {
		struct sql_lexer lx;
		struct sql_token t;

		sql_lex_init(&lx, sql, len, opts);
		do
			sql_lex_next(&lx, &t);
		while (t.kind == SQL_TOK_SEMI);
		CHECK(t.kind == SQL_TOK_EOF);
	}
}

static struct sql_analysis an1, an2;

static void check_name(const char *n)
{
	CHECK(memchr(n, '\0', SQL_NAME_MAX) != NULL && strlen(n) < SQL_NAME_MAX);
}

static void check_analyze(const char *sql, size_t len, unsigned opts)
{
	const unsigned defined = SQL_AF_RELATIONS_UNSURE | SQL_AF_FUNCTIONS_UNSURE |
				 SQL_AF_COLUMNS_UNSURE | SQL_AF_ROLE_SWITCH | SQL_AF_OPAQUE_BODY |
				 SQL_AF_TOO_COMPLEX | SQL_AF_SEARCH_PATH | SQL_AF_BAD_ENCODING |
				 SQL_AF_ENCODING_CHANGE;
	uint32_t mask;

	sql_analyze(sql, len, opts, &an1);
	CHECK(an1.primary == sql_classify(sql, len, opts, &mask));
	CHECK((an1.flags & ~defined) == 0);
	CHECK(an1.nrelations <= SQL_ANALYZE_MAX_RELATIONS);
	CHECK(an1.nfunctions <= SQL_ANALYZE_MAX_FUNCTIONS);
	CHECK(an1.ncolumns <= SQL_ANALYZE_MAX_COLUMNS);
	for (unsigned i = 0; i < an1.nrelations; i++) {
		check_name(an1.relations[i].catalog);
		check_name(an1.relations[i].schema);
		check_name(an1.relations[i].name);
		check_name(an1.relations[i].alias);
		CHECK(an1.relations[i].name[0] != '\0');
	}
	for (unsigned i = 0; i < an1.nfunctions; i++) {
		check_name(an1.functions[i].schema);
		check_name(an1.functions[i].name);
	}
	for (unsigned i = 0; i < an1.ncolumns; i++) {
		check_name(an1.columns[i].name);
		CHECK(an1.columns[i].relation < (int)an1.nrelations);
	}
	check_name(an1.prep_name);
	if (an1.prep == SQL_PREP_PREPARE)
		CHECK(an1.prep_body_off <= len);
	sql_analyze(sql, len, opts, &an2);
	CHECK(an1.flags == an2.flags && an1.nrelations == an2.nrelations &&
	      an1.nfunctions == an2.nfunctions && an1.ncolumns == an2.ncolumns &&
	      an1.classes == an2.classes);
}

static bool same_names(const struct sql_analysis *a, const struct sql_analysis *b)
{
	if (a->primary != b->primary || a->classes != b->classes || a->flags != b->flags ||
	    a->prep != b->prep || strcmp(a->prep_name, b->prep_name) ||
	    a->nrelations != b->nrelations || a->nfunctions != b->nfunctions ||
	    a->ncolumns != b->ncolumns)
		return false;
	for (unsigned i = 0; i < a->nrelations; i++) {
		const struct sql_relation *x = &a->relations[i], *y = &b->relations[i];

		if (strcmp(x->catalog, y->catalog) || strcmp(x->schema, y->schema) ||
		    strcmp(x->name, y->name) || strcmp(x->alias, y->alias) || x->flags != y->flags)
			return false;
	}
	for (unsigned i = 0; i < a->nfunctions; i++)
		if (strcmp(a->functions[i].schema, b->functions[i].schema) ||
		    strcmp(a->functions[i].name, b->functions[i].name))
			return false;
	for (unsigned i = 0; i < a->ncolumns; i++)
		if (strcmp(a->columns[i].schema, b->columns[i].schema) ||
		    strcmp(a->columns[i].qualifier, b->columns[i].qualifier) ||
		    strcmp(a->columns[i].name, b->columns[i].name) ||
		    a->columns[i].relation != b->columns[i].relation)
			return false;
	return true;
}

static void check_shape(const char *sql, size_t len, unsigned opts, unsigned cap)
{
	static uint8_t s1[BIG + GUARD], s2[BIG + GUARD];
	static char other[3 * BIG];
	struct sql_lexer lx;
	struct sql_token t;
	size_t n1, n2, on = 0, from = 0;

	memset(s1, 'Z', cap + GUARD);
	CHECK(sql_shape(sql, len, opts, s1, cap, &n1) == 0 || n1 == 0);
	for (size_t i = cap; i < cap + GUARD; i++)
		CHECK(s1[i] == 'Z');
	memset(s1, 'Z', BIG + GUARD);
	if (sql_shape(sql, len, opts, s1, BIG, &n1))
		return;
	for (size_t i = BIG; i < BIG + GUARD; i++)
		CHECK(s1[i] == 'Z');
	CHECK(n1 <= BIG && sql_shape(sql, len, opts, s2, BIG, &n2) == 0 && n1 == n2 &&
	      !memcmp(s1, s2, n1));
	/* every number rewritten as "98765" */
	sql_lex_init(&lx, sql, len, opts);
	for (sql_lex_next(&lx, &t); t.kind != SQL_TOK_EOF; sql_lex_next(&lx, &t)) {
		if (t.kind != SQL_TOK_NUMBER)
			continue;
		if (on + (t.off - from) + 5 > sizeof(other))
			return;
		memcpy(other + on, sql + from, t.off - from);
		on += t.off - from;
		memcpy(other + on, "98765", 5);
		on += 5;
		from = t.off + t.len;
	}
	if (from == 0 || on + (len - from) > sizeof(other))
		return; /* no number */
	memcpy(other + on, sql + from, len - from);
	on += len - from;
	if (sql_shape(other, on, opts, s2, BIG, &n2) || n1 != n2 || memcmp(s1, s2, n1))
		return; /* lexed otherwise once renumbered ("1.a" -> "98765a"): another shape */
	sql_analyze(sql, len, opts, &an1);
	sql_analyze(other, on, opts, &an2);
	CHECK(same_names(&an1, &an2));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char big[BIG + GUARD], big2[BIG + GUARD], small[128 + GUARD];
	unsigned opts, cap;
	char *sql;
	size_t len;

	if (size < 1)
		return 0;
	opts = (data[0] & 1) ? SQL_LEX_BACKSLASH_QUOTES : 0;
	cap = data[0] >> 1;
	len = size - 1;
	sql = malloc(len ? len : 1);
	if (!sql)
		return 0;
	memcpy(sql, data + 1, len);

	check_lex(sql, len, opts);
	check_split(sql, len, opts, big);

	int rbig = normalise_checked(sql, len, opts, big, BIG);
	int rbig2 = normalise_checked(sql, len, opts, big2, BIG);
	CHECK(rbig == rbig2 && strcmp(big, big2) == 0);
	int rsmall = normalise_checked(sql, len, opts, small, cap);
	if (rsmall == 0 && rbig == 0)
		CHECK(strcmp(small, big) == 0);
	if (rbig == 0 && cap > 0 && strlen(big) < cap)
		CHECK(rsmall == 0);

	uint32_t mask;
	enum sql_class c = sql_classify(sql, len, opts, &mask);
	CHECK((unsigned)c < SQL_CLASS_COUNT);
	CHECK(c == SQL_CLASS_UNKNOWN ? mask == 0 : (mask & SQL_CLASS_BIT(c)) != 0);
	CHECK(sql_class_to_str(c) != NULL);
	CHECK((unsigned)metrics_std_stmt_type(c) < MSTMT_COUNT);
	check_analyze(sql, len, opts);
	check_shape(sql, len, opts, cap);

	free(sql);
	return 0;
}
