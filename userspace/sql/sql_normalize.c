/*
 * sql_normalize: the display form of a statement for the admin listing and logs: literals
 * out (they carry data: card numbers, passwords), shape kept. Contract in sql.h.
 */
#include "sql/sql.h"

#include "base/utf8.h"

#include <errno.h>
#include <string.h>

struct norm_out {
	char *b;
	size_t cap; /* >= 1; b[len] is always writable for the NUL */
	size_t len;
};

/* Copy n bytes (the caller checked they fit): invalid UTF-8 and control bytes become '?',
 * one for one, so the output length equals n. */
static void put_clean(struct norm_out *o, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;

	while (i < n) {
		uint32_t cp;
		size_t k = utf8_decode(u + i, n - i, &cp);

		if (k == 1 && (u[i] < 0x20 || u[i] == 0x7f))
			k = 0;
		if (k == 0) {
			o->b[o->len++] = '?';
			i++;
		} else {
			memcpy(o->b + o->len, u + i, k);
			o->len += k;
			i += k;
		}
	}
}

/* "$k" into num (24 bytes hold "$" and any uint64_t); returns its length. Not snprintf:
 * this runs once per literal on the data path. */
static size_t param_text(char *num, uint64_t k)
{
	char tmp[20];
	size_t n = 0, len = 0;

	do {
		tmp[n++] = (char)('0' + k % 10);
		k /= 10;
	} while (k);
	num[len++] = '$';
	while (n)
		num[len++] = tmp[--n];
	return len;
}

static bool tok_is_literal(const struct sql_token *t)
{
	return t->kind == SQL_TOK_STRING || t->kind == SQL_TOK_BITSTRING ||
	       t->kind == SQL_TOK_NUMBER;
}

/* The highest $n in the text (0 if none); only lexed when a '$' is present at all. */
static uint64_t max_param(const char *sql, size_t len, unsigned opts)
{
	struct sql_lexer lx;
	struct sql_token t;
	uint64_t max = 0;

	if (len == 0 || !memchr(sql, '$', len))
		return 0;
	sql_lex_init(&lx, sql, len, opts);
	for (sql_lex_next(&lx, &t); t.kind != SQL_TOK_EOF; sql_lex_next(&lx, &t)) {
		uint64_t n = 0;

		if (t.kind != SQL_TOK_PARAM)
			continue;
		for (size_t i = 1; i < t.len && sql[t.off + i] >= '0' && sql[t.off + i] <= '9';
		     i++) {
			n = n * 10 + (uint64_t)(sql[t.off + i] - '0');
			if (n > INT32_MAX) /* invalid anyway; keep the arithmetic bounded */
				break;
		}
		if (n > max)
			max = n;
	}
	return max;
}

static bool is_identish(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '$' || c >= 0x80;
}

static bool ident_char_at_end(const struct norm_out *o)
{
	return o->len && is_identish((unsigned char)o->b[o->len - 1]);
}

/* Skip a UESCAPE 'c' clause after a U&'' literal: part of the literal's syntax, and the
 * escape character would otherwise show as data. Leaves *t at the next token. */
static void skip_uescape(struct sql_lexer *lx, struct sql_token *t)
{
	struct sql_lexer save = *lx;
	struct sql_token kw = *t;

	if (!sql_tok_is(lx, &kw, "uescape"))
		return;
	sql_lex_next(lx, t);
	if (t->kind == SQL_TOK_STRING) {
		sql_lex_next(lx, t);
		return;
	}
	*lx = save; /* not a clause we know: show UESCAPE as written */
	*t = kw;
}

int sql_normalize(const char *sql, size_t len, unsigned opts, char *out, size_t cap,
		  size_t *out_len)
{
	static const char marker[] = " " SQL_NORM_TRUNCATED;
	struct norm_out o = {.b = out, .cap = cap, .len = 0};
	struct sql_lexer lx;
	struct sql_token t, next;
	uint64_t k;
	int rc = 0;

	if (out_len)
		*out_len = 0;
	if (cap == 0 || !out)
		return -EINVAL;
	if (!sql)
		len = 0;
	k = max_param(sql, len, opts);
	/* Single pass with a rollback point: safe is the output length after the last token
	 * that still leaves room for the marker. Tokens are written while they fit at all;
	 * the first that does not rolls the output back to safe and marks it. */
	size_t safe = 0;
	sql_lex_init(&lx, sql, len, opts);
	sql_lex_next(&lx, &t);
	while (t.kind != SQL_TOK_EOF) {
		char num[24];
		const char *text = sql + t.off;
		size_t n = t.len;
		bool clean = true;

		/* A UNICODE literal swallows its UESCAPE clause: look at the next token first. */
		sql_lex_next(&lx, &next);
		if (tok_is_literal(&t)) {
			if ((t.flags & SQL_TOKF_UNICODE) && t.kind == SQL_TOK_STRING)
				skip_uescape(&lx, &next);
			n = param_text(num, ++k);
			text = num;
			clean = false;
		}

		bool space = o.len > 0 && ((t.flags & SQL_TOKF_SPACE_BEFORE) ||
					   /* $1 glued to an identifier would read as one */
					   (ident_char_at_end(&o) && is_identish((unsigned char)text[0])));
		size_t room = cap - 1 - o.len; /* bytes left before the NUL */

		if ((space ? 1 : 0) + n > room) {
			o.len = safe;
			rc = -ENOSPC;
			break;
		}
		if (space)
			o.b[o.len++] = ' ';
		if (clean) {
			put_clean(&o, text, n);
		} else {
			memcpy(o.b + o.len, text, n);
			o.len += n;
		}
		if (o.len + sizeof(marker) - 1 <= cap - 1)
			safe = o.len;
		t = next;
	}
	if (rc == -ENOSPC) {
		const char *m = o.len ? marker : marker + 1;
		size_t ml = strlen(m);

		if (ml > cap - 1 - o.len)
			ml = cap - 1 - o.len;
		memcpy(o.b + o.len, m, ml);
		o.len += ml;
	}
	o.b[o.len] = '\0';
	if (out_len)
		*out_len = o.len;
	return rc;
}
