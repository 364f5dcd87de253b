/* mask_classify: see mask_classify.h. */
#include "mask/mask_classify.h"

#include "sql/sql.h"

#include <string.h>

/* The analysis buffer: 30 KiB, one per worker thread (callbacks never nest). */
static __thread struct sql_analysis analysis;

/* A token cursor with the decoded text of identifiers and strings at hand. */
struct toks {
	struct sql_lexer lx;
	struct sql_token t;
};

static void toks_init(struct toks *k, const char *sql, size_t len, unsigned opts)
{
	sql_lex_init(&k->lx, sql, len, opts);
	sql_lex_next(&k->lx, &k->t);
}

static void next(struct toks *k)
{
	sql_lex_next(&k->lx, &k->t);
}

static bool is_kw(const struct toks *k, const char *kw)
{
	return sql_tok_is(&k->lx, &k->t, kw);
}

static bool is_punct(const struct toks *k, char c)
{
	return (k->t.kind == SQL_TOK_PUNCT || k->t.kind == SQL_TOK_OP) && k->t.len == 1 &&
	       k->lx.sql[k->t.off] == c;
}

static bool at_end(const struct toks *k)
{
	return k->t.kind == SQL_TOK_EOF || k->t.kind == SQL_TOK_SEMI;
}

/* An identifier as the server reads it (U&"" with UESCAPE is not followed: false). */
static bool ident(struct toks *k, char out[SQL_NAME_MAX])
{
	if ((k->t.kind != SQL_TOK_IDENT && k->t.kind != SQL_TOK_QIDENT) ||
	    (k->t.flags & SQL_TOKF_UNICODE))
		return false;
	if (!sql_ident_decode(&k->lx, &k->t, '\\', out))
		return false;
	next(k);
	return true;
}

/* An option's value: a string, a number or a bare word, as text. */
static bool value(struct toks *k, char *out, size_t cap)
{
	if (k->t.kind == SQL_TOK_STRING) {
		if (!sql_string_decode(&k->lx, &k->t, out, cap))
			return false;
		next(k);
		return true;
	}
	if (k->t.kind == SQL_TOK_NUMBER || k->t.kind == SQL_TOK_IDENT) {
		if (k->t.len >= cap)
			return false;
		for (size_t i = 0; i < k->t.len; i++) {
			char c = k->lx.sql[k->t.off + i];

			out[i] = c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
		}
		out[k->t.len] = '\0';
		next(k);
		return true;
	}
	return false;
}

/* ---- COPY ---------------------------------------------------------------------------------- */

/* What the options said, before the format's defaults fill the rest. */
struct copy_said {
	int format; /* -1: not said */
	int delim, quote, escape;
	bool null_said, header;
	char null_str[MASK_COPY_NULL_MAX + 1];
};

static bool one_byte(const char *v, int *out)
{
	if (strlen(v) != 1)
		return false;
	*out = (unsigned char)v[0];
	return true;
}

static bool boolean(const char *v, bool *out)
{
	static const char *const yes[] = {"true", "on", "1", "yes", "t", "y"};
	static const char *const no[] = {"false", "off", "0", "no", "f", "n"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcmp(v, yes[i]))
			return *out = true;
		if (!strcmp(v, no[i]))
			return !(*out = false);
	}
	return false;
}

/* FORCE_QUOTE's argument: * or (col, ...); it changes only which fields are quoted. */
static bool column_list_or_star(struct toks *k)
{
	char name[SQL_NAME_MAX];

	if (k->t.kind == SQL_TOK_OP && k->t.len == 1 && k->lx.sql[k->t.off] == '*') {
		next(k);
		return true;
	}
	if (!is_punct(k, '('))
		return ident(k, name);
	next(k);
	do {
		if (!ident(k, name))
			return false;
		if (!is_punct(k, ','))
			break;
		next(k);
	} while (1);
	if (!is_punct(k, ')'))
		return false;
	next(k);
	return true;
}

/* One option of the parenthesised list: name [value]. */
static bool copy_option(struct toks *k, struct copy_said *s, struct mask_stmt_info *out)
{
	char name[SQL_NAME_MAX], v[MASK_COPY_NULL_MAX + 1];

	if (!ident(k, name))
		return false;
	if (!strcmp(name, "force_quote"))
		return column_list_or_star(k);
	if (!strcmp(name, "header") && (is_punct(k, ',') || is_punct(k, ')'))) {
		s->header = true;
		return true;
	}
	if (!value(k, v, sizeof(v)))
		return false;
	if (!strcmp(name, "format")) {
		s->format = !strcmp(v, "text")	   ? MASK_COPY_TEXT
			    : !strcmp(v, "csv")	   ? MASK_COPY_CSV
			    : !strcmp(v, "binary") ? MASK_COPY_BINARY
						   : -2;
		return s->format != -2;
	}
	if (!strcmp(name, "delimiter"))
		return one_byte(v, &s->delim);
	if (!strcmp(name, "quote"))
		return one_byte(v, &s->quote);
	if (!strcmp(name, "escape"))
		return one_byte(v, &s->escape);
	if (!strcmp(name, "null")) {
		s->null_said = true;
		memcpy(s->null_str, v, strlen(v) + 1);
		return true;
	}
	if (!strcmp(name, "header"))
		return boolean(v, &s->header);
	if (!strcmp(name, "encoding")) {
		if (strlen(v) >= sizeof(out->copy_encoding))
			return false;
		memcpy(out->copy_encoding, v, strlen(v) + 1);
		return true;
	}
	return false; /* freeze, force_not_null, ...: not for COPY TO; let the stage refuse */
}

/* The pre-9.0 spellings: BINARY, CSV, HEADER, DELIMITER [AS] 'x', NULL [AS] 'x', QUOTE,
 * ESCAPE, FORCE QUOTE. */
static bool copy_legacy_option(struct toks *k, struct copy_said *s)
{
	char v[MASK_COPY_NULL_MAX + 1];
	int *byte = NULL;

	if (is_kw(k, "binary") || is_kw(k, "csv")) {
		s->format = is_kw(k, "binary") ? MASK_COPY_BINARY : MASK_COPY_CSV;
		next(k);
		return true;
	}
	if (is_kw(k, "header")) {
		s->header = true;
		next(k);
		return true;
	}
	if (is_kw(k, "force")) {
		next(k);
		if (!is_kw(k, "quote"))
			return false;
		next(k);
		return column_list_or_star(k);
	}
	if (is_kw(k, "delimiter"))
		byte = &s->delim;
	else if (is_kw(k, "quote"))
		byte = &s->quote;
	else if (is_kw(k, "escape"))
		byte = &s->escape;
	else if (!is_kw(k, "null"))
		return false;
	next(k);
	if (is_kw(k, "as"))
		next(k);
	if (k->t.kind != SQL_TOK_STRING || !value(k, v, sizeof(v)))
		return false;
	if (byte)
		return one_byte(v, byte);
	s->null_said = true;
	memcpy(s->null_str, v, strlen(v) + 1);
	return true;
}

static bool copy_options(struct toks *k, struct mask_stmt_info *out)
{
	struct copy_said s = {.format = -1, .delim = -1, .quote = -1, .escape = -1};
	struct mask_copy_opts *o = &out->copy_opts;

	if (is_kw(k, "with"))
		next(k);
	if (is_punct(k, '(')) {
		next(k);
		do {
			if (!copy_option(k, &s, out))
				return false;
			if (!is_punct(k, ','))
				break;
			next(k);
		} while (1);
		if (!is_punct(k, ')'))
			return false;
		next(k);
	} else {
		while (!at_end(k))
			if (!copy_legacy_option(k, &s))
				return false;
	}
	if (!at_end(k))
		return false;
	mask_copy_opts_default(o, s.format < 0 ? MASK_COPY_TEXT : (enum mask_copy_format)s.format);
	if (s.delim >= 0)
		o->delim = (uint8_t)s.delim;
	if (s.quote >= 0) {
		o->quote = (uint8_t)s.quote;
		o->escape = (uint8_t)s.quote;
	}
	if (s.escape >= 0)
		o->escape = (uint8_t)s.escape;
	if (s.null_said) {
		o->null_len = (uint8_t)strlen(s.null_str);
		memcpy(o->null_str, s.null_str, o->null_len + 1u);
	}
	o->header = s.header;
	return true;
}

/* COPY name [(cols)] TO STDOUT [options], or COPY (query) TO STDOUT. */
static void copy_statement(const char *sql, size_t len, unsigned opts, struct mask_stmt_info *out)
{
	struct toks k;
	char a[SQL_NAME_MAX], b[SQL_NAME_MAX];
	size_t used = 0;

	toks_init(&k, sql, len, opts);
	next(&k); /* COPY */
	out->copy_to = true;
	if (is_punct(&k, '(')) {
		out->copy_query = true;
		return;
	}
	if (!ident(&k, a))
		return;
	if (is_punct(&k, '.')) {
		next(&k);
		if (!ident(&k, b))
			return;
		memcpy(out->copy_schema, a, strlen(a) + 1);
		memcpy(out->copy_table, b, strlen(b) + 1);
	} else {
		memcpy(out->copy_table, a, strlen(a) + 1);
	}
	if (is_punct(&k, '(')) {
		next(&k);
		do {
			size_t n;

			if (!ident(&k, a))
				return;
			n = strlen(a) + 1;
			if (used + n > sizeof(out->copy_cols) || out->ncopy_cols == UINT16_MAX)
				out->copy_cols_overflow = true;
			else {
				memcpy(out->copy_cols + used, a, n);
				used += n;
				out->ncopy_cols++;
			}
			if (!is_punct(&k, ','))
				break;
			next(&k);
		} while (1);
		if (!is_punct(&k, ')'))
			return;
		next(&k);
	}
	if (!is_kw(&k, "to"))
		return;
	next(&k);
	if (!is_kw(&k, "stdout"))
		return;
	next(&k);
	out->copy_opts_known = copy_options(&k, out);
}

/* ---- names: cursors and SQL prepared statements -------------------------------------------- */

static void cursor_name(const char *sql, size_t len, unsigned opts, struct mask_stmt_info *out)
{
	struct toks k;
	char name[SQL_NAME_MAX];

	toks_init(&k, sql, len, opts);
	if (is_kw(&k, "declare")) {
		next(&k);
		if (ident(&k, name)) {
			out->name_use = MASK_NAME_DEFINES;
			memcpy(out->name, name, strlen(name) + 1);
		}
		return;
	}
	if (is_kw(&k, "close")) {
		next(&k);
		if (is_kw(&k, "all")) {
			out->name_use = MASK_NAME_DROPS_ALL;
		} else if (ident(&k, name)) {
			out->name_use = MASK_NAME_DROPS;
			memcpy(out->name, name, strlen(name) + 1);
		}
		return;
	}
	if (is_kw(&k, "fetch") || is_kw(&k, "move")) {
		/* FETCH [direction [count]] [FROM | IN] name: the name is the last token */
		bool have = false;

		next(&k);
		while (!at_end(&k)) {
			if (k.t.kind == SQL_TOK_IDENT || k.t.kind == SQL_TOK_QIDENT) {
				have = ident(&k, name);
				if (!have)
					return;
			} else {
				have = false;
				next(&k);
			}
		}
		if (have) {
			out->name_use = MASK_NAME_USES;
			memcpy(out->name, name, strlen(name) + 1);
		}
	}
}

static bool first_word(const char *sql, size_t len, unsigned opts, const char *kw)
{
	struct toks k;

	toks_init(&k, sql, len, opts);
	return is_kw(&k, kw);
}

static bool has_word(const char *sql, size_t len, unsigned opts, const char *kw)
{
	struct toks k;

	for (toks_init(&k, sql, len, opts); k.t.kind != SQL_TOK_EOF; next(&k))
		if (is_kw(&k, kw))
			return true;
	return false;
}

/* ---- references ------------------------------------------------------------------------------ */

/* Append (schema, name) to out->names; false when it does not fit. */
static bool put_name(struct mask_stmt_info *out, size_t *used, const char *schema,
		     const char *name)
{
	size_t a = strlen(schema) + 1, b = strlen(name) + 1;

	if (*used + a + b > sizeof(out->names))
		return false;
	memcpy(out->names + *used, schema, a);
	memcpy(out->names + *used + a, name, b);
	*used += a + b;
	return true;
}

/*
 * What the statement references, as far as the text tells: NONE when it names nothing,
 * NAMES with the exact list when the analysis is sure of every name (the stage asks the
 * catalog whether they are clean), MASKED otherwise: an unsure or opaque analysis, a name
 * written db.schema.table, or more names than the info holds.
 */
static enum mask_refs references(const struct sql_analysis *a, struct mask_stmt_info *out)
{
	const unsigned unsure = SQL_AF_RELATIONS_UNSURE | SQL_AF_FUNCTIONS_UNSURE |
				SQL_AF_OPAQUE_BODY | SQL_AF_TOO_COMPLEX;
	size_t used = 0;

	if (a->primary == SQL_CLASS_UNKNOWN || (a->flags & unsure))
		return MASK_REFS_MASKED;
	if (a->nrelations == 0 && a->nfunctions == 0)
		return MASK_REFS_NONE;
	if (a->nrelations > UINT8_MAX || a->nfunctions > UINT8_MAX)
		return MASK_REFS_MASKED;
	for (unsigned i = 0; i < a->nrelations; i++)
		if (a->relations[i].catalog[0] ||
		    !put_name(out, &used, a->relations[i].schema, a->relations[i].name))
			return MASK_REFS_MASKED;
	for (unsigned i = 0; i < a->nfunctions; i++)
		if (!put_name(out, &used, a->functions[i].schema, a->functions[i].name))
			return MASK_REFS_MASKED;
	out->nrelations = (uint8_t)a->nrelations;
	out->nfunctions = (uint8_t)a->nfunctions;
	return MASK_REFS_NAMES;
}

/* ---- one statement -------------------------------------------------------------------------- */

void mask_classify_one(const char *sql, size_t len, unsigned opts, struct mask_stmt_info *out)
{
	const struct sql_analysis *a = &analysis;

	memset(out, 0, sizeof(*out));
	sql_analyze(sql, len, opts, &analysis);
	out->refs_known = true;
	out->refs = references(a, out);
	if (out->refs != MASK_REFS_NAMES) {
		memset(out->names, 0, sizeof(out->names));
		out->nrelations = out->nfunctions = 0;
	}
	/* a DO block or a routine body may run DDL too */
	out->ddl = (a->classes & SQL_CLASS_BIT(SQL_CLASS_DDL)) != 0 ||
		   (a->flags & SQL_AF_OPAQUE_BODY) != 0;
	switch (a->primary) {
	case SQL_CLASS_TRANSACTION:
	case SQL_CLASS_COPY_IN:
		out->no_rows = true;
		break;
	case SQL_CLASS_DDL:
		out->no_rows = !(a->classes & SQL_CLASS_BIT(SQL_CLASS_READ));
		break;
	case SQL_CLASS_SESSION:
		out->no_rows = !first_word(sql, len, opts, "show") &&
			       !first_word(sql, len, opts, "select");
		break;
	case SQL_CLASS_LISTEN_NOTIFY:
		out->no_rows = first_word(sql, len, opts, "listen") ||
			       first_word(sql, len, opts, "unlisten") ||
			       first_word(sql, len, opts, "notify");
		break;
	case SQL_CLASS_WRITE:
		out->no_rows = !has_word(sql, len, opts, "returning") &&
			       !first_word(sql, len, opts, "select") &&
			       !first_word(sql, len, opts, "with");
		break;
	case SQL_CLASS_COPY_OUT:
		copy_statement(sql, len, opts, out);
		break;
	default:
		break;
	}
	switch (a->prep) {
	case SQL_PREP_PREPARE:
		out->name_use = MASK_NAME_DEFINES;
		out->no_rows = true;
		break;
	case SQL_PREP_EXECUTE:
		out->name_use = MASK_NAME_USES;
		break;
	case SQL_PREP_DEALLOCATE:
		out->name_use = MASK_NAME_DROPS;
		out->no_rows = true;
		break;
	case SQL_PREP_DEALLOCATE_ALL:
		out->name_use = MASK_NAME_DROPS_ALL;
		out->no_rows = true;
		return;
	default:
		break;
	}
	if (a->prep == SQL_PREP_PREPARE || a->prep == SQL_PREP_EXECUTE ||
	    a->prep == SQL_PREP_DEALLOCATE) {
		memcpy(out->name, a->prep_name, sizeof(out->name) - 1);
		out->name[sizeof(out->name) - 1] = '\0';
		return;
	}
	if (first_word(sql, len, opts, "discard") && has_word(sql, len, opts, "all")) {
		out->name_use = MASK_NAME_DROPS_ALL;
		out->no_rows = true;
		return;
	}
	cursor_name(sql, len, opts, out);
	if (out->name_use == MASK_NAME_DEFINES || out->name_use == MASK_NAME_DROPS ||
	    out->name_use == MASK_NAME_DROPS_ALL || first_word(sql, len, opts, "move"))
		out->no_rows = true;
}

int mask_classify(const char *sql, size_t len, unsigned opts, struct mask_stmt_info *out,
		  unsigned cap)
{
	struct sql_splitter sp;
	struct sql_stmt st;
	unsigned n = 0;

	if (!cap)
		return 0;
	sql_split_init(&sp, sql, len, opts);
	while (n < cap && sql_split_next(&sp, &st))
		mask_classify_one(sql + st.text_off, st.text_len, opts, &out[n++]);
	if (!n) {
		/* an empty query: nothing it says can return rows */
		memset(out, 0, sizeof(*out));
		out->refs_known = true;
		out->refs = MASK_REFS_NONE;
		out->no_rows = true;
		n = 1;
	}
	return (int)n;
}
