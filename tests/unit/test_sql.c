/*
 * test_sql: the SQL lexer, splitter, normaliser and classifier against table-driven cases
 * in tests/unit/data/sql/, plus generated inputs (very long, every byte value).
 *
 * Case files are plain text, one case per line, fields separated by '|' (write a literal
 * pipe as \|). Fields are trimmed; escapes inside fields: \n \r \t \f \\ \| \0 \xHH \s (a
 * space, for leading/trailing ones). Lines starting with '#' and blank lines are ignored.
 *
 *   cases.txt  input | normalised | class[:c1,c2,...]
 *              class is sql_class_to_str()'s name; after ':' every class of *classes
 *              (none given: exactly the primary). Each input is also classified with
 *              trailing ";" and " ; " appended (same answer) and split (one statement).
 *   lex.txt    [scs_off] input | kind:len[/FLAGS] ...    FLAGS: U unterminated, I invalid,
 *              W unicode (U&), D dollar-quoted; "eof/U" for input ending inside a comment.
 *   split.txt  input | statement text | statement text ...   ("-" for no statements)
 *   trunc.txt  cap | input | expected output | ok|nospc
 *
 * Inputs are copied into heap blocks of exactly their size so ASan catches any read past
 * the end. Every failing line is reported as file:line with what differed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metrics_std.h"
#include "sql/sql.h"

#define DATA_DIR "data/sql/"
#define MAX_LINE 8192
#define MAX_FIELDS 16

static unsigned failures;

struct line {
	const char *file;
	unsigned lineno;
	char *f[MAX_FIELDS]; /* decoded fields (NUL-terminated; may hold NULs inside) */
	size_t flen[MAX_FIELDS];
	unsigned n;
};

static void __attribute__((format(printf, 2, 3))) fail_case(const struct line *l, const char *fmt,
						       ...)
{
	va_list ap;

	fprintf(stderr, "%s%s:%u: ", DATA_DIR, l->file, l->lineno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Split raw at unescaped '|', trim, decode escapes. false on a malformed line. */
static bool parse_line(char *raw, struct line *l)
{
	char *p = raw;

	l->n = 0;
	while (l->n < MAX_FIELDS) {
		char *start = p, *out;
		size_t n = 0;

		while (*p && *p != '|')
			p += (*p == '\\' && p[1]) ? 2 : 1;
		/* trim */
		char *end = p;
		while (start < end && (*start == ' ' || *start == '\t'))
			start++;
		while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
			end--;
		out = malloc((size_t)(end - start) + 1);
		assert_non_null(out);
		for (char *s = start; s < end; s++) {
			if (*s != '\\' || s + 1 >= end) {
				out[n++] = *s;
				continue;
			}
			s++;
			switch (*s) {
			case 'n': out[n++] = '\n'; break;
			case 'r': out[n++] = '\r'; break;
			case 't': out[n++] = '\t'; break;
			case 'f': out[n++] = '\f'; break;
			case 's': out[n++] = ' '; break;
			case '0': out[n++] = '\0'; break;
			case 'x':
				if (s + 2 < end && hexval(s[1]) >= 0 && hexval(s[2]) >= 0) {
					out[n++] = (char)(hexval(s[1]) << 4 | hexval(s[2]));
					s += 2;
					break;
				}
				free(out);
				return false;
			default: out[n++] = *s; break; /* \\ \| and anything else literal */
			}
		}
		out[n] = '\0';
		l->f[l->n] = out;
		l->flen[l->n] = n;
		l->n++;
		if (!*p)
			return true;
		p++;
	}
	return false;
}

static void free_line(struct line *l)
{
	for (unsigned i = 0; i < l->n; i++)
		free(l->f[i]);
	l->n = 0;
}

/* Run fn on every case line of file; returns the number of cases. */
static unsigned each_case(const char *file, void (*fn)(struct line *l))
{
	char path[256], raw[MAX_LINE];
	unsigned count = 0, lineno = 0;
	FILE *fp;

	snprintf(path, sizeof(path), DATA_DIR "%s", file);
	fp = fopen(path, "r");
	if (!fp) {
		fprintf(stderr, "cannot open %s\n", path);
		fail_msg("missing case file");
	}
	while (fgets(raw, sizeof(raw), fp)) {
		struct line l = {.file = file, .lineno = ++lineno};
		size_t n = strlen(raw);

		if (n && raw[n - 1] == '\n')
			raw[--n] = '\0';
		if (n == sizeof(raw) - 1) {
			fail_case(&l, "line too long");
			continue;
		}
		if (n == 0 || raw[0] == '#')
			continue;
		if (!parse_line(raw, &l)) {
			fail_case(&l, "malformed line");
			free_line(&l);
			continue;
		}
		fn(&l);
		free_line(&l);
		count++;
	}
	fclose(fp);
	return count;
}

/* An exact-size heap copy, so ASan sees a read past the end. */
static char *exact(const char *s, size_t n)
{
	char *b = malloc(n ? n : 1);

	assert_non_null(b);
	memcpy(b, s, n);
	return b;
}

/* ---- classification + normalisation -------------------------------------------------- */

static enum sql_class class_by_name(const char *s, size_t n)
{
	for (unsigned c = 0; c <= SQL_CLASS_UNKNOWN; c++)
		if (strlen(sql_class_to_str(c)) == n && !strncmp(sql_class_to_str(c), s, n))
			return c;
	return SQL_CLASS_COUNT;
}

static void mask_str(uint32_t m, char *buf, size_t cap)
{
	size_t n = 0;

	buf[0] = '\0';
	for (unsigned c = 0; c < SQL_CLASS_COUNT; c++)
		if (m & SQL_CLASS_BIT(c))
			n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "," : "",
					      sql_class_to_str(c));
}

static void check_class(const struct line *l, const char *in, size_t len, const char *what)
{
	const char *want = l->f[2], *colon = strchr(want, ':');
	enum sql_class wc = class_by_name(want, colon ? (size_t)(colon - want) : strlen(want));
	uint32_t wmask = 0, mask = 0xffffffffu;
	char *b = exact(in, len);
	enum sql_class got = sql_classify(b, len, 0, &mask);

	free(b);
	if (wc == SQL_CLASS_COUNT) {
		fail_case(l, "unknown class name '%s'", want);
		return;
	}
	if (colon) {
		for (const char *s = colon + 1; *s;) {
			size_t n = strcspn(s, ",");
			enum sql_class c = class_by_name(s, n);

			if (c == SQL_CLASS_COUNT) {
				fail_case(l, "unknown class name in '%s'", want);
				return;
			}
			wmask |= SQL_CLASS_BIT(c);
			s += n + (s[n] == ',');
		}
	} else if (wc != SQL_CLASS_UNKNOWN) {
		wmask = SQL_CLASS_BIT(wc);
	}
	if (got != wc || mask != wmask) {
		char gm[128], wm[128];

		mask_str(mask, gm, sizeof(gm));
		mask_str(wmask, wm, sizeof(wm));
		fail_case(l, "%s: class %s [%s], want %s [%s]", what, sql_class_to_str(got), gm,
		     sql_class_to_str(wc), wm);
	}
}

static void case_main(struct line *l)
{
	char out[4096];
	size_t olen = 0;

	if (l->n != 3) {
		fail_case(l, "want 3 fields, have %u", l->n);
		return;
	}
	char *b = exact(l->f[0], l->flen[0]);
	int rc = sql_normalize(b, l->flen[0], 0, out, sizeof(out), &olen);

	if (rc != 0 || olen != strlen(out) || strcmp(out, l->f[1]) != 0)
		fail_case(l, "normalised: rc %d \"%s\", want \"%s\"", rc, out, l->f[1]);

	/* Deterministic: the same input again gives the same bytes. */
	char again[4096];
	if (sql_normalize(b, l->flen[0], 0, again, sizeof(again), NULL) != rc ||
	    strcmp(again, out) != 0)
		fail_case(l, "normalisation not deterministic");
	free(b);

	check_class(l, l->f[0], l->flen[0], "classify");
	if (strcmp(l->f[2], "unknown") != 0) {
		char buf[MAX_LINE];

		if (l->flen[0] + 4 < sizeof(buf)) {
			memcpy(buf, l->f[0], l->flen[0]);
			memcpy(buf + l->flen[0], " ; ", 3);
			check_class(l, buf, l->flen[0] + 3, "classify with ' ; '");
			buf[l->flen[0]] = ';';
			check_class(l, buf, l->flen[0] + 1, "classify with ';'");
		}
	}
}

static void test_cases(void **state)
{
	failures = 0;
	unsigned n = each_case("cases.txt", case_main);

	printf("cases.txt: %u cases\n", n);
	assert_true(n > 100);
	assert_int_equal(failures, 0);
}

/* ---- lexer ---------------------------------------------------------------------------- */

static void tok_str(const struct sql_token *t, char *buf, size_t cap)
{
	char fl[8];
	size_t n = 0;

	if (t->flags & SQL_TOKF_UNTERMINATED)
		fl[n++] = 'U';
	if (t->flags & SQL_TOKF_INVALID)
		fl[n++] = 'I';
	if (t->flags & SQL_TOKF_UNICODE)
		fl[n++] = 'W';
	if (t->flags & SQL_TOKF_DOLLAR)
		fl[n++] = 'D';
	fl[n] = '\0';
	if (t->kind == SQL_TOK_EOF)
		snprintf(buf, cap, "eof%s%s", n ? "/" : "", fl);
	else
		snprintf(buf, cap, "%s:%zu%s%s", sql_tok_kind_to_str(t->kind), t->len,
			 n ? "/" : "", fl);
}

static void case_lex(struct line *l)
{
	const char *in = l->f[0];
	size_t len = l->flen[0];
	unsigned opts = 0;
	char got[MAX_LINE] = "";
	size_t gn = 0;
	struct sql_lexer lx;
	struct sql_token t;

	if (l->n != 2) {
		fail_case(l, "want 2 fields, have %u", l->n);
		return;
	}
	if (len >= 8 && !memcmp(in, "scs_off ", 8)) {
		opts = SQL_LEX_BACKSLASH_QUOTES;
		in += 8;
		len -= 8;
	}
	char *b = exact(in, len);
	size_t prev_end = 0;

	sql_lex_init(&lx, b, len, opts);
	for (unsigned i = 0; i < 10000; i++) {
		char ts[64];

		sql_lex_next(&lx, &t);
		if (t.off < prev_end || t.off + t.len > len)
			fail_case(l, "token [%zu,+%zu) out of order or bounds", t.off, t.len);
		prev_end = t.off + t.len;
		if (t.kind == SQL_TOK_EOF && !(t.flags & SQL_TOKF_UNTERMINATED))
			break;
		tok_str(&t, ts, sizeof(ts));
		gn += (size_t)snprintf(got + gn, sizeof(got) - gn, "%s%s", gn ? " " : "", ts);
		if (t.kind == SQL_TOK_EOF)
			break;
	}
	/* EOF is sticky. */
	sql_lex_next(&lx, &t);
	if (t.kind != SQL_TOK_EOF)
		fail_case(l, "token after EOF");
	free(b);
	if (strcmp(got, l->f[1]) != 0)
		fail_case(l, "tokens \"%s\", want \"%s\"", got, l->f[1]);
}

static void test_lex(void **state)
{
	failures = 0;
	unsigned n = each_case("lex.txt", case_lex);

	printf("lex.txt: %u cases\n", n);
	assert_true(n > 50);
	assert_int_equal(failures, 0);
}

/* ---- splitting ------------------------------------------------------------------------ */

static void case_split(struct line *l)
{
	struct sql_splitter sp;
	struct sql_stmt st;
	unsigned k = 1;
	size_t covered = 0;
	char *b = exact(l->f[0], l->flen[0]);
	bool none = l->n == 2 && !strcmp(l->f[1], "-");

	sql_split_init(&sp, b, l->flen[0], 0);
	while (sql_split_next(&sp, &st)) {
		if (st.off != covered)
			fail_case(l, "piece %u starts at %zu, previous ended at %zu", k, st.off, covered);
		if (st.text_off < st.off || st.text_off + st.text_len > st.off + st.len)
			fail_case(l, "statement %u text outside its piece", k);
		covered = st.off + st.len;
		if (none || k >= l->n) {
			fail_case(l, "extra statement %u: \"%.*s\"", k, (int)st.text_len, b + st.text_off);
		} else if (st.text_len != l->flen[k] || memcmp(b + st.text_off, l->f[k], st.text_len)) {
			fail_case(l, "statement %u \"%.*s\", want \"%s\"", k, (int)st.text_len,
			     b + st.text_off, l->f[k]);
		}
		k++;
		if (k > 1000)
			break;
	}
	if (!none && k != l->n)
		fail_case(l, "%u statements, want %u", k - 1, l->n - 1);
	if (k > 1 && covered != l->flen[0])
		fail_case(l, "pieces cover %zu of %zu bytes", covered, l->flen[0]);
	/* The shortcut may only ever claim what the splitter finds: one piece, all of it. */
	if (sql_split_single(b, l->flen[0]) && k != 2)
		fail_case(l, "sql_split_single said one statement; the splitter found %u", k - 1);
	free(b);
}

static void test_split(void **state)
{
	failures = 0;
	unsigned n = each_case("split.txt", case_split);

	printf("split.txt: %u cases\n", n);
	assert_true(n > 15);
	assert_int_equal(failures, 0);
}

/* The one-statement shortcut against the splitter, on texts built to fool it: a ';' in a
 * string, comment or identifier with more after it, a second statement after blanks, a
 * text that is all separators or comments. */
static void test_split_single(void **state)
{
	static const struct {
		const char *sql;
		bool single;
	} cases[] = {
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 1;", true},
		{"  select 1", true},
		{"SELECT 1;;  \n\t;", true},
		{"SELECT 'a;", true},           /* unterminated string: one statement */
		{"SELECT 1 -- c;\n;", true},    /* the ';' is in a comment; then a separator */
		{"SELECT 1; SELECT 2", false},
		{"SELECT 'a;b'", false},        /* not known without lexing: split it */
		{"SELECT 1;\v", false},         /* \v is not the lexer's whitespace */
		{"SELECT 1 /* ; */", false},
		{"SELECT $$;$$", false},
		{"SELECT \"x;y\"", false},
		{"(SELECT 1)", false},           /* no letter first: split it */
		{";", false},
		{"", false},
		{"   ", false},
		{"-- only a comment", false},
		{"/* c */ SELECT 1", false},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *sql = cases[i].sql;
		size_t len = strlen(sql);
		struct sql_splitter sp;
		struct sql_stmt st;
		unsigned pieces = 0;
		bool whole = false;

		sql_split_init(&sp, sql, len, 0);
		while (sql_split_next(&sp, &st)) {
			pieces++;
			whole = st.off == 0 && st.len == len;
		}
		if (sql_split_single(sql, len) != cases[i].single)
			fail_msg("\"%s\": sql_split_single %d, want %d", sql, !cases[i].single,
				 cases[i].single);
		if (cases[i].single && (pieces != 1 || !whole))
			fail_msg("\"%s\": the splitter found %u pieces", sql, pieces);
	}
}

/* ---- truncation ----------------------------------------------------------------------- */

static void case_trunc(struct line *l)
{
	char out[512];
	size_t cap, olen = 99;
	char *end;

	if (l->n != 4) {
		fail_case(l, "want 4 fields, have %u", l->n);
		return;
	}
	cap = strtoul(l->f[0], &end, 10);
	if (*end || cap > sizeof(out) - 8) {
		fail_case(l, "bad cap");
		return;
	}
	memset(out, 'Z', sizeof(out));
	char *b = exact(l->f[1], l->flen[1]);
	int rc = sql_normalize(b, l->flen[1], 0, out, cap, &olen);
	free(b);
	int want = !strcmp(l->f[3], "ok") ? 0 : !strcmp(l->f[3], "nospc") ? -ENOSPC : -EINVAL;

	if (rc != want)
		fail_case(l, "rc %d, want %d", rc, want);
	if (cap == 0) {
		if (out[0] != 'Z')
			fail_case(l, "wrote into a zero-size buffer");
		return;
	}
	if (olen >= cap || out[olen] != '\0' || strlen(out) != olen)
		fail_case(l, "output not terminated within cap (len %zu cap %zu)", olen, cap);
	for (size_t i = cap; i < sizeof(out); i++)
		if (out[i] != 'Z') {
			fail_case(l, "wrote past cap at %zu", i);
			break;
		}
	if (strcmp(out, l->f[2]) != 0)
		fail_case(l, "output \"%s\", want \"%s\"", out, l->f[2]);
}

static void test_trunc(void **state)
{
	failures = 0;
	unsigned n = each_case("trunc.txt", case_trunc);

	printf("trunc.txt: %u cases\n", n);
	assert_true(n > 10);
	assert_int_equal(failures, 0);
}

/* ---- generated inputs ----------------------------------------------------------------- */

/* A statement of a few MB: linear time, bounded output, correct class. */
static void test_long_input(void **state)
{
	const size_t n = 4u << 20;
	char *b = malloc(n);
	char out[256];
	size_t olen;
	uint32_t mask;

	assert_non_null(b);
	/* SELECT 1,1,1,... */
	memcpy(b, "SELECT ", 7);
	for (size_t i = 7; i < n; i += 2) {
		b[i] = '1';
		if (i + 1 < n)
			b[i + 1] = ',';
	}
	b[n - 1] = '1';
	assert_int_equal(sql_classify(b, n, 0, &mask), SQL_CLASS_READ);
	assert_int_equal(sql_normalize(b, n, 0, out, sizeof(out), &olen), -ENOSPC);
	assert_true(olen < sizeof(out));
	assert_string_equal(out + olen - 4, " ...");
	assert_memory_equal(out, "SELECT $1,$2,$3,", 16);

	/* One huge dollar-quoted body with many near-miss tags, then the real end. */
	memcpy(b, "SELECT $abc$", 12);
	for (size_t i = 12; i < n - 6; i++)
		b[i] = (i % 4 == 0) ? '$' : "ab$c"[i % 4];
	memcpy(b + n - 6, "$abc$;", 6);
	struct sql_lexer lx;
	struct sql_token t;
	sql_lex_init(&lx, b, n, 0);
	sql_lex_next(&lx, &t);
	sql_lex_next(&lx, &t);
	assert_int_equal(t.kind, SQL_TOK_STRING);
	assert_int_equal(t.off + t.len, n - 1);
	assert_int_equal(t.flags & SQL_TOKF_UNTERMINATED, 0);

	/* Nested comments a million deep, unterminated. */
	for (size_t i = 0; i + 1 < n; i += 2) {
		b[i] = '/';
		b[i + 1] = '*';
	}
	sql_lex_init(&lx, b, n, 0);
	sql_lex_next(&lx, &t);
	assert_int_equal(t.kind, SQL_TOK_EOF);
	assert_true(t.flags & SQL_TOKF_UNTERMINATED);
	assert_int_equal(sql_classify(b, n, 0, NULL), SQL_CLASS_UNKNOWN);
	assert_int_equal(sql_normalize(b, n, 0, out, sizeof(out), &olen), 0);
	assert_string_equal(out, "");
	free(b);
}

/* Every single byte and every pair: defined results, output clean UTF-8 without controls. */
static void test_all_bytes(void **state)
{
	char in[3], out[64];

	for (unsigned a = 0; a < 256; a++) {
		for (unsigned c = 0; c < 257; c++) {
			size_t n = c == 256 ? 1 : 2, olen;
			in[0] = (char)a;
			in[1] = (char)c;
			char *b = exact(in, n);

			(void)sql_classify(b, n, 0, NULL);
			(void)sql_classify(b, n, SQL_LEX_BACKSLASH_QUOTES, NULL);
			int rc = sql_normalize(b, n, 0, out, sizeof(out), &olen);
			assert_int_equal(rc, 0);
			for (size_t i = 0; i < olen; i++) {
				unsigned char u = (unsigned char)out[i];
				assert_true(u >= 0x20 && u != 0x7f);
			}
			free(b);
		}
	}
}

/* ---- analysis ------------------------------------------------------------------------ */

static void cat(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void cat(char *buf, size_t cap, const char *fmt, ...)
{
	size_t n = strlen(buf);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf + n, cap - n, fmt, ap);
	va_end(ap);
}

/* The analysis as the case files spell it: relations | functions | flags | columns. */
static void render_analysis(const struct sql_analysis *a, char *rels, char *fns, char *flags,
			    char *cols, size_t cap)
{
	static const struct {
		unsigned bit;
		const char *name;
	} fl[] = {
		{SQL_AF_RELATIONS_UNSURE, "rel?"}, {SQL_AF_FUNCTIONS_UNSURE, "fn?"},
		{SQL_AF_COLUMNS_UNSURE, "col?"},   {SQL_AF_ROLE_SWITCH, "role"},
		{SQL_AF_OPAQUE_BODY, "opaque"},    {SQL_AF_TOO_COMPLEX, "complex"},
		{SQL_AF_SEARCH_PATH, "search_path"}, {SQL_AF_BAD_ENCODING, "bad_encoding"},
		{SQL_AF_ENCODING_CHANGE, "encoding?"},
	};
	static const char *const prep[] = {"", "prepare:", "execute:", "deallocate:",
					   "deallocate_all"};

	rels[0] = fns[0] = flags[0] = cols[0] = '\0';
	for (unsigned i = 0; i < a->nrelations; i++) {
		const struct sql_relation *r = &a->relations[i];

		cat(rels, cap, "%s%s%s%s%s%s%s%s%s", i ? ", " : "", r->catalog,
		    r->catalog[0] ? "." : "", r->schema, r->schema[0] ? "." : "", r->name,
		    r->alias[0] ? "@" : "", r->alias,
		    (r->flags & SQL_RELF_WRITE) ? "!w" : (r->flags & SQL_RELF_DDL) ? "!d" : "");
	}
	for (unsigned i = 0; i < a->nfunctions; i++)
		cat(fns, cap, "%s%s%s%s", i ? ", " : "", a->functions[i].schema,
		    a->functions[i].schema[0] ? "." : "", a->functions[i].name);
	for (unsigned i = 0; i < sizeof(fl) / sizeof(fl[0]); i++)
		if (a->flags & fl[i].bit)
			cat(flags, cap, "%s%s", flags[0] ? ", " : "", fl[i].name);
	if (a->prep != SQL_PREP_NONE)
		cat(flags, cap, "%s%s%s", flags[0] ? ", " : "", prep[a->prep],
		    a->prep == SQL_PREP_DEALLOCATE_ALL ? "" : a->prep_name);
	for (unsigned i = 0; i < a->ncolumns; i++) {
		const struct sql_column *c = &a->columns[i];

		cat(cols, cap, "%s%s%s%s%s%s", i ? ", " : "", c->schema, c->schema[0] ? "." : "",
		    c->qualifier, c->qualifier[0] ? "." : "", c->name);
		if (c->relation >= 0)
			cat(cols, cap, "=%d", c->relation);
	}
	if (!rels[0])
		strcpy(rels, "-");
	if (!fns[0])
		strcpy(fns, "-");
	if (!flags[0])
		strcpy(flags, "-");
	if (!cols[0])
		strcpy(cols, "-");
}

static struct sql_analysis analysis; /* 30 KiB: off the test's stack */
static struct sql_analysis renumbered;

/* text[len) with every numeric constant's bytes replaced by "98765" (to out[cap]). */
static size_t renumber(const char *text, size_t len, char *out, size_t cap)
{
	struct sql_lexer lx;
	struct sql_token t;
	size_t n = 0, from = 0;

	sql_lex_init(&lx, text, len, 0);
	for (sql_lex_next(&lx, &t); t.kind != SQL_TOK_EOF; sql_lex_next(&lx, &t)) {
		if (t.kind != SQL_TOK_NUMBER)
			continue;
		assert_true(n + (t.off - from) + 5 <= cap);
		memcpy(out + n, text + from, t.off - from);
		n += t.off - from;
		memcpy(out + n, "98765", 5);
		n += 5;
		from = t.off + t.len;
	}
	assert_true(n + (len - from) <= cap);
	memcpy(out + n, text + from, len - from);
	return n + (len - from);
}

/*
 * What the policy's shape cache rests on (sql_shape in sql.h): a text of the same shape
 * has the same classes and the same analysis. Checked on every analyze.txt case whose
 * numbers can be changed without changing its shape; returns 1 for those.
 */
static unsigned check_renumbered(const struct line *l, const char *b)
{
	char other[4096], rels[2][2048], fns[2][1024], flags[2][256], cols[2][2048];
	uint8_t shape[2][8192];
	size_t olen = renumber(b, l->flen[0], other, sizeof(other)), slen[2];

	if (olen == l->flen[0] && !memcmp(other, b, olen))
		return 0; /* no number in it */
	assert_int_equal(sql_shape(b, l->flen[0], 0, shape[0], sizeof(shape[0]), &slen[0]), 0);
	assert_int_equal(sql_shape(other, olen, 0, shape[1], sizeof(shape[1]), &slen[1]), 0);
	if (slen[0] != slen[1] || memcmp(shape[0], shape[1], slen[0]))
		return 0; /* "1.a" renumbered is "98765a": lexed otherwise, so another shape */
	sql_analyze(other, olen, 0, &renumbered);
	render_analysis(&analysis, rels[0], fns[0], flags[0], cols[0], sizeof(rels[0]));
	render_analysis(&renumbered, rels[1], fns[1], flags[1], cols[1], sizeof(rels[1]));
	if (analysis.primary != renumbered.primary || analysis.classes != renumbered.classes ||
	    strcmp(rels[0], rels[1]) || strcmp(fns[0], fns[1]) || strcmp(flags[0], flags[1]) ||
	    strcmp(cols[0], cols[1]))
		fail_case(l, "renumbered, one shape, another analysis: %s | %s | %s | %s",
			  rels[1], fns[1], flags[1], cols[1]);
	return 1;
}

static unsigned renumbered_cases;

/* analyze.txt: input | relations | functions | flags [| columns] */
static void run_analyze_case(struct line *l)
{
	char rels[2048], fns[1024], flags[256], cols[2048];
	char *b;

	if (l->n < 4 || l->n > 5) {
		fail_case(l, "want 4 or 5 fields, got %u", l->n);
		return;
	}
	b = malloc(l->flen[0] ? l->flen[0] : 1);
	assert_non_null(b);
	memcpy(b, l->f[0], l->flen[0]);
	sql_analyze(b, l->flen[0], 0, &analysis);
	render_analysis(&analysis, rels, fns, flags, cols, sizeof(rels));
	if (strcmp(rels, l->f[1]) || strcmp(fns, l->f[2]) || strcmp(flags, l->f[3]) ||
	    (l->n == 5 && strcmp(cols, l->f[4])))
		fail_case(l, "got  %s | %s | %s | %s", rels, fns, flags, cols);
	renumbered_cases += check_renumbered(l, b);
	free(b);
}

static void test_analyze(void **state)
{
	failures = 0;
	renumbered_cases = 0;
	unsigned n = each_case("analyze.txt", run_analyze_case);

	fprintf(stderr, "analyze.txt: %u cases, %u renumbered\n", n, renumbered_cases);
	assert_int_equal(failures, 0);
	assert_true(renumbered_cases > 40);
}

/* sql_shape: numeric constants' digits out, everything else kept, length-prefixed. */
static void test_shape(void **state)
{
	static const struct {
		const char *a, *b;
		bool same;
	} pairs[] = {
		{"SELECT abalance FROM pgbench_accounts WHERE aid = 17;",
		 "SELECT abalance FROM pgbench_accounts WHERE aid = 123456;", true},
		{"SELECT 1.5, 2e10, .5, 0x1F, 1_000", "SELECT 7, 8, 9, 10, 11", true},
		{"UPDATE t SET b = b + -4020 WHERE a = 3", "UPDATE t SET b = b + -1 WHERE a = 99", true},
		/* hostile: every literal the analysis reads is kept */
		{"SELECT set_config('role', 'x', false)", "SELECT set_config('role', 'y', false)",
		 false},
		{"SELECT set_config('application_name', 'x', false)",
		 "SELECT set_config('role', 'x', false)", false},
		{"SET ROLE a", "SET ROLE b", false},
		{"SET client_encoding = 'UTF8'", "SET client_encoding = 'SJIS'", false},
		{"DO $$BEGIN PERFORM 1; END$$", "DO $$BEGIN PERFORM 2; END$$", false},
		{"EXECUTE p1", "EXECUTE p2", false},
		{"SELECT U&\"d!0061t\" UESCAPE '!' FROM t", "SELECT U&\"d!0061t\" UESCAPE '#' FROM t",
		 false},
		{"SELECT $1", "SELECT $2", false},
		{"SELECT B'01'", "SELECT B'10'", false},
		/* and what is not a number stays apart */
		{"UPDATE t SET b = b + -4020", "UPDATE t SET b = b + 4020", false},
		{"SELECT 1..5", "SELECT 1.5", false},
		{"SELECT 123abc", "SELECT 123", false}, /* trailing junk: flagged */
		{"SELECT 1 FROM t", "SELECT 1  FROM t", false},
		{"SELECT 1 /* a */", "SELECT 1 /* b */", false},
		{"SELECT 1; SELECT 2", "SELECT 1; SELECT 2; SELECT 3", false},
		{"SELECT a FROM t", "select a from t", false},
		/* a token's bytes cannot pass for a gap or another token: lengths are prefixed */
		{"SELECT ab", "SELECT a b", false},
		{"SELECT 'a''b'", "SELECT 'a' 'b'", false},
	};
	uint8_t sa[512], sb[512];
	size_t la, lb;

	for (size_t i = 0; i < sizeof(pairs) / sizeof(pairs[0]); i++) {
		assert_int_equal(sql_shape(pairs[i].a, strlen(pairs[i].a), 0, sa, sizeof(sa), &la), 0);
		assert_int_equal(sql_shape(pairs[i].b, strlen(pairs[i].b), 0, sb, sizeof(sb), &lb), 0);
		if ((la == lb && !memcmp(sa, sb, la)) != pairs[i].same)
			fail_msg("pair %zu: \"%s\" and \"%s\": want %s shapes", i, pairs[i].a,
				 pairs[i].b, pairs[i].same ? "equal" : "different");
	}
	/* too long for the buffer: -ENOSPC, never a cut shape */
	assert_int_equal(sql_shape("SELECT a FROM t", 15, 0, sa, 10, &la), -ENOSPC);
	assert_int_equal(la, 0);
	/* empty and NULL text: the EOF token alone */
	assert_int_equal(sql_shape(NULL, 5, 0, sa, sizeof(sa), &la), 0);
	assert_int_equal(sql_shape("", 0, 0, sb, sizeof(sb), &lb), 0);
	assert_true(la == lb && !memcmp(sa, sb, la));
}

/* The budget: nesting past SQL_ANALYZE_MAX_DEPTH stops the walk (54001), never the stack;
 * a long flat statement is walked in linear time. */
static void test_analyze_budget(void **state)
{
	assert_true(sql_analyze_tables_sorted());
	size_t n = 200000;
	char *b = malloc(n + 16);

	assert_non_null(b);
	memcpy(b, "SELECT ", 7);
	memset(b + 7, '(', n);
	sql_analyze(b, n + 7, 0, &analysis);
	assert_true(analysis.flags & SQL_AF_TOO_COMPLEX);
	assert_true(analysis.flags & SQL_AF_RELATIONS_UNSURE);
	/* Just under the depth budget: fine. */
	memset(b + 7, '(', SQL_ANALYZE_MAX_DEPTH - 1);
	b[7 + SQL_ANALYZE_MAX_DEPTH - 1] = '1';
	memset(b + 8 + SQL_ANALYZE_MAX_DEPTH - 1, ')', SQL_ANALYZE_MAX_DEPTH - 1);
	sql_analyze(b, 8 + 2 * (SQL_ANALYZE_MAX_DEPTH - 1), 0, &analysis);
	assert_false(analysis.flags & SQL_AF_TOO_COMPLEX);
	free(b);

	/* More relations than the array holds: reported, and unsure. */
	char q[4096] = "SELECT 1 FROM t0";
	for (int i = 1; i < 40; i++)
		snprintf(q + strlen(q), sizeof(q) - strlen(q), ", t%d", i);
	sql_analyze(q, strlen(q), 0, &analysis);
	assert_int_equal(analysis.nrelations, SQL_ANALYZE_MAX_RELATIONS);
	assert_true(analysis.flags & SQL_AF_RELATIONS_UNSURE);

	/* Quoted names keep dots and case; names are cut to 63 bytes on a character boundary. */
	static const char dotted[] = "SELECT 1 FROM \"a.b\".\"C,d\"";
	sql_analyze(dotted, sizeof(dotted) - 1, 0, &analysis);
	assert_int_equal(analysis.nrelations, 1);
	assert_string_equal(analysis.relations[0].schema, "a.b");
	assert_string_equal(analysis.relations[0].name, "C,d");
	char longname[200] = "SELECT 1 FROM ";
	for (int i = 0; i < 62; i++)
		strcat(longname, "x");
	strcat(longname, "\xc3\xa9tail"); /* é straddles byte 63 */
	sql_analyze(longname, strlen(longname), 0, &analysis);
	assert_int_equal(strlen(analysis.relations[0].name), 62);

	/* A NUL inside a quoted name: no such name for the server; never an empty name here. */
	static const char nul[] = "SELECT a FROM \"\0\0x\"";
	sql_analyze(nul, sizeof(nul) - 1, 0, &analysis);
	assert_int_equal(analysis.nrelations, 0);
	assert_true(analysis.flags & SQL_AF_RELATIONS_UNSURE);

	/* Encodings whose bytes can fake quotes, under every alias the server accepts. */
	assert_true(sql_encoding_is_unsafe("SJIS"));
	assert_true(sql_encoding_is_unsafe("Shift_JIS"));
	assert_true(sql_encoding_is_unsafe("win-932"));
	assert_true(sql_encoding_is_unsafe("GB18030"));
	assert_true(sql_encoding_is_unsafe("johab"));
	assert_true(sql_encoding_is_unsafe("UHC"));
	assert_false(sql_encoding_is_unsafe("UTF8"));
	assert_false(sql_encoding_is_unsafe("EUC_JP"));
	assert_false(sql_encoding_is_unsafe(NULL));
}

/* Every class has its own name, read back by sql_class_from_str; the metric folds them. */
static void test_class_names(void **state)
{
	for (unsigned c = 0; c < SQL_CLASS_COUNT; c++) {
		const char *n = sql_class_to_str(c);

		assert_int_equal(sql_class_from_str(n, strlen(n)), c);
		assert_true((unsigned)metrics_std_stmt_type(c) < MSTMT_COUNT);
	}
	assert_int_equal(sql_class_from_str("dcl", 3), SQL_CLASS_COUNT);
	assert_string_equal(sql_class_to_str(SQL_CLASS_COUNT), "?");
	assert_int_equal(metrics_std_stmt_type(SQL_CLASS_ROLE), MSTMT_DCL);
	assert_int_equal(metrics_std_stmt_type(SQL_CLASS_COPY_PROGRAM), MSTMT_COPY);
	assert_int_equal(metrics_std_stmt_type(SQL_CLASS_UNKNOWN), MSTMT_UNKNOWN);
	assert_int_equal(metrics_std_stmt_type(SQL_CLASS_COUNT), MSTMT_UNKNOWN);
	/* NULL text is empty text. */
	assert_int_equal(sql_classify(NULL, 5, 0, NULL), SQL_CLASS_UNKNOWN);
	char out[4];
	assert_int_equal(sql_normalize(NULL, 5, 0, out, sizeof(out), NULL), 0);
	assert_string_equal(out, "");
	assert_int_equal(sql_normalize("x", 1, 0, out, 0, NULL), -EINVAL);
}

/* standard_conforming_strings off moves a string's end: the classifier must follow. */
static void test_scs_off(void **state)
{
	static const char q[] = "SELECT '\\'; DELETE FROM t; --'";
	uint32_t mask;
	struct sql_splitter sp;
	struct sql_stmt st;
	unsigned n = 0;

	/* on: one string '\' then DELETE is a second statement */
	sql_split_init(&sp, q, sizeof(q) - 1, 0);
	while (sql_split_next(&sp, &st))
		n++;
	assert_int_equal(n, 3 - 1);
	/* off: the backslash escapes the quote, the string runs on to the last quote */
	n = 0;
	sql_split_init(&sp, q, sizeof(q) - 1, SQL_LEX_BACKSLASH_QUOTES);
	while (sql_split_next(&sp, &st))
		n++;
	assert_int_equal(n, 1);
	assert_int_equal(sql_classify(q, sizeof(q) - 1, SQL_LEX_BACKSLASH_QUOTES, &mask),
			 SQL_CLASS_READ);
	assert_int_equal(sql_classify(q, sizeof(q) - 1, 0, &mask), SQL_CLASS_UNKNOWN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),	     cmocka_unit_test(test_lex),
		cmocka_unit_test(test_split),	     cmocka_unit_test(test_split_single),	     cmocka_unit_test(test_trunc),
		cmocka_unit_test(test_long_input),   cmocka_unit_test(test_all_bytes),
		cmocka_unit_test(test_class_names), cmocka_unit_test(test_scs_off),
		cmocka_unit_test(test_analyze),
		cmocka_unit_test(test_analyze_budget),
		cmocka_unit_test(test_shape),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
