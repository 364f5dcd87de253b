/*
 * sql_lex: PostgreSQL's lexical rules (scan.l, PostgreSQL 16) as a hand-written, bounded,
 * allocation-free scanner. Only token boundaries and kinds are computed; literal values
 * are never decoded, because nothing on the data path needs them and decoding is where
 * lexers grow buffers.
 */
#include "sql/sql.h"

#include <string.h>

/* Character classes, one table lookup per byte on the hot path (GNU range designators). */
enum {
	C_SPACE = 0x01,	      /* [ \t\n\r\f] */
	C_NEWLINE = 0x02,     /* [\n\r] */
	C_DIGIT = 0x04,	      /* [0-9] */
	C_IDENT_START = 0x08, /* [A-Za-z\200-\377_] */
	C_DOLLAR = 0x10,      /* $: continues an identifier, not a dollar-quote tag */
	C_OP = 0x20,	      /* op_chars: ~ ! @ # ^ & | ` ? + - * / % < > = */
	C_OP_SPECIAL = 0x40,  /* ~ ! @ # ^ & | ` ? %: an operator holding one may end in +/- */
	C_PUNCT = 0x80,	      /* , ( ) [ ] . : */
	C_QUOTE_PREFIX = 0x100, /* [bBeEnNuUxX]: may prefix a quote (E'', U&"", ...) */
};

static const uint16_t cclass[256] = {
	[' '] = C_SPACE, ['\t'] = C_SPACE, ['\f'] = C_SPACE,
	['\n'] = C_SPACE | C_NEWLINE, ['\r'] = C_SPACE | C_NEWLINE,
	['0' ... '9'] = C_DIGIT,
	/* Letters; b e n u x may also prefix a quote. */
	['a'] = C_IDENT_START, ['b'] = C_IDENT_START | C_QUOTE_PREFIX,
	['c' ... 'd'] = C_IDENT_START, ['e'] = C_IDENT_START | C_QUOTE_PREFIX,
	['f' ... 'm'] = C_IDENT_START, ['n'] = C_IDENT_START | C_QUOTE_PREFIX,
	['o' ... 't'] = C_IDENT_START, ['u'] = C_IDENT_START | C_QUOTE_PREFIX,
	['v' ... 'w'] = C_IDENT_START, ['x'] = C_IDENT_START | C_QUOTE_PREFIX,
	['y' ... 'z'] = C_IDENT_START,
	['A'] = C_IDENT_START, ['B'] = C_IDENT_START | C_QUOTE_PREFIX,
	['C' ... 'D'] = C_IDENT_START, ['E'] = C_IDENT_START | C_QUOTE_PREFIX,
	['F' ... 'M'] = C_IDENT_START, ['N'] = C_IDENT_START | C_QUOTE_PREFIX,
	['O' ... 'T'] = C_IDENT_START, ['U'] = C_IDENT_START | C_QUOTE_PREFIX,
	['V' ... 'W'] = C_IDENT_START, ['X'] = C_IDENT_START | C_QUOTE_PREFIX,
	['Y' ... 'Z'] = C_IDENT_START,
	['_'] = C_IDENT_START, [0x80 ... 0xff] = C_IDENT_START,
	['$'] = C_DOLLAR,
	[','] = C_PUNCT, ['('] = C_PUNCT, [')'] = C_PUNCT, ['['] = C_PUNCT, [']'] = C_PUNCT,
	['.'] = C_PUNCT, [':'] = C_PUNCT,
	['+'] = C_OP, ['-'] = C_OP, ['*'] = C_OP, ['/'] = C_OP, ['<'] = C_OP, ['>'] = C_OP,
	['='] = C_OP,
	['~'] = C_OP | C_OP_SPECIAL, ['!'] = C_OP | C_OP_SPECIAL, ['@'] = C_OP | C_OP_SPECIAL,
	['#'] = C_OP | C_OP_SPECIAL, ['^'] = C_OP | C_OP_SPECIAL, ['&'] = C_OP | C_OP_SPECIAL,
	['|'] = C_OP | C_OP_SPECIAL, ['`'] = C_OP | C_OP_SPECIAL, ['?'] = C_OP | C_OP_SPECIAL,
	['%'] = C_OP | C_OP_SPECIAL,
};

static bool is_space(unsigned char c)
{
	return cclass[c] & C_SPACE;
}

static bool is_newline(unsigned char c)
{
	return cclass[c] & C_NEWLINE;
}

static bool is_digit(unsigned char c)
{
	return cclass[c] & C_DIGIT;
}

static bool is_ident_start(unsigned char c)
{
	return cclass[c] & C_IDENT_START;
}

static bool is_ident_cont(unsigned char c)
{
	return cclass[c] & (C_IDENT_START | C_DIGIT | C_DOLLAR);
}

/* dolq_cont: an identifier character other than '$'. */
static bool is_dolq_cont(unsigned char c)
{
	return cclass[c] & (C_IDENT_START | C_DIGIT);
}

static bool is_op_char(unsigned char c)
{
	return cclass[c] & C_OP;
}

static bool is_radix_digit(unsigned char c, unsigned radix)
{
	if (radix == 16)
		return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
	if (radix == 8)
		return c >= '0' && c <= '7';
	return c == '0' || c == '1';
}

void sql_lex_init(struct sql_lexer *lx, const char *sql, size_t len, unsigned opts)
{
	lx->sql = sql;
	lx->len = sql ? len : 0;
	lx->pos = 0;
	lx->opts = opts;
}

static unsigned char at(const struct sql_lexer *lx, size_t i)
{
	return i < lx->len ? (unsigned char)lx->sql[i] : 0;
}

/*
 * Skip whitespace and comments from *p. Returns true if anything was skipped; sets
 * *unterminated when the input ends inside a slash-star comment. Nested comments count
 * depth as PostgreSQL does; the depth can never exceed len, so a size_t cannot overflow.
 */
static bool skip_space(const struct sql_lexer *lx, size_t *p, bool *unterminated)
{
	const unsigned char *s = (const unsigned char *)lx->sql;
	size_t i = *p, n = lx->len;

	while (i < n) {
		unsigned char c = s[i];

		if (is_space(c)) {
			i++;
		} else if (c == '-' && at(lx, i + 1) == '-') {
			while (i < n && !is_newline(s[i]))
				i++;
		} else if (c == '/' && at(lx, i + 1) == '*') {
			size_t depth = 1;

			i += 2;
			while (depth > 0 && i < lx->len) {
				if (at(lx, i) == '*' && at(lx, i + 1) == '/') {
					depth--;
					i += 2;
				} else if (at(lx, i) == '/' && at(lx, i + 1) == '*') {
					depth++;
					i += 2;
				} else {
					i++;
				}
			}
			if (depth > 0) {
				*unterminated = true;
				i = lx->len;
			}
		} else {
			break;
		}
	}
	bool skipped = i != *p;
	*p = i;
	return skipped;
}

/*
 * After a quote that closed a string, PostgreSQL continues the same literal when only
 * whitespace containing a newline (and -- comments) separates it from another quote
 * ({quotecontinue}). Returns the position after that next quote, or 0 if there is none.
 */
static size_t quote_continue(const struct sql_lexer *lx, size_t i)
{
	bool newline = false;

	for (;;) {
		unsigned char c = at(lx, i);

		if (i >= lx->len)
			return 0;
		if (is_newline(c)) {
			newline = true;
			i++;
		} else if (is_space(c)) {
			i++;
		} else if (c == '-' && at(lx, i + 1) == '-') {
			while (i < lx->len && !is_newline(at(lx, i)))
				i++;
		} else if (c == '\'' && newline) {
			return i + 1;
		} else {
			return 0;
		}
	}
}

enum quote_mode {
	QM_STANDARD, /* '' doubles a quote; backslash is a plain character */
	QM_ESCAPE,   /* E'': backslash escapes the next byte, '' doubles a quote */
	QM_BITS,     /* B'' X'': no escapes at all; the first quote ends it */
};

/* Scan a quoted literal body from i (just after the opening quote), including any
 * continuations. Returns the end; sets UNTERMINATED when the input runs out. */
static size_t scan_quoted(const struct sql_lexer *lx, size_t i, enum quote_mode m,
			  unsigned *flags)
{
	for (;;) {
		if (i >= lx->len) {
			*flags |= SQL_TOKF_UNTERMINATED;
			return lx->len;
		}
		unsigned char c = at(lx, i);

		if (c == '\\' && m == QM_ESCAPE) {
			if (i + 1 >= lx->len) {
				*flags |= SQL_TOKF_UNTERMINATED;
				return lx->len;
			}
			i += 2;
		} else if (c == '\'') {
			size_t next;

			if (m != QM_BITS && at(lx, i + 1) == '\'' && i + 1 < lx->len) {
				i += 2;
				continue;
			}
			next = quote_continue(lx, i + 1);
			if (!next)
				return i + 1;
			i = next;
		} else {
			i++;
		}
	}
}

/* $tag$ at i: the delimiter's length, or 0 if there is none. */
static size_t dolq_delim(const struct sql_lexer *lx, size_t i)
{
	size_t j = i + 1;

	if (at(lx, i) != '$')
		return 0;
	if (j < lx->len && is_ident_start(at(lx, j))) {
		while (j < lx->len && is_dolq_cont(at(lx, j)))
			j++;
	}
	if (j < lx->len && at(lx, j) == '$')
		return j + 1 - i;
	return 0;
}

/*
 * A dollar-quoted body: ends at the first exact repeat of the opening delimiter.
 * Comparing at every '$' is what scan.l's rescanning amounts to, and stays linear: a
 * comparison stops at the first byte that differs, and the tag holds no '$'.
 */
static size_t scan_dollar(const struct sql_lexer *lx, size_t body, size_t dlen,
			  size_t dstart, unsigned *flags)
{
	const char *d = lx->sql + dstart;
	size_t i = body;

	while (i < lx->len) {
		const char *p = memchr(lx->sql + i, '$', lx->len - i);

		if (!p)
			break;
		i = (size_t)(p - lx->sql);
		if (lx->len - i >= dlen && memcmp(p, d, dlen) == 0)
			return i + dlen;
		i++;
	}
	*flags |= SQL_TOKF_UNTERMINATED;
	return lx->len;
}

/* {decdigit}(_?{decdigit})* from i (a digit); returns the end. */
static size_t dec_run(const struct sql_lexer *lx, size_t i)
{
	i++;
	for (;;) {
		if (i < lx->len && is_digit(at(lx, i)))
			i++;
		else if (at(lx, i) == '_' && i + 1 < lx->len && is_digit(at(lx, i + 1)))
			i += 2;
		else
			return i;
	}
}

/* Trailing junk: identifier characters glued to a literal make one invalid token. */
static size_t junk(const struct sql_lexer *lx, size_t i, unsigned *flags)
{
	if (i < lx->len && is_ident_start(at(lx, i))) {
		while (i < lx->len && is_ident_cont(at(lx, i)))
			i++;
		*flags |= SQL_TOKF_INVALID;
	}
	return i;
}

static size_t scan_number(const struct sql_lexer *lx, size_t i, unsigned *flags)
{
	unsigned char c1 = at(lx, i + 1) | 0x20;

	if (at(lx, i) == '0' && i + 1 < lx->len && (c1 == 'x' || c1 == 'o' || c1 == 'b')) {
		unsigned radix = c1 == 'x' ? 16 : c1 == 'o' ? 8 : 2;
		size_t j = i + 2, digits = 0;

		for (;;) {
			size_t k = j + (at(lx, j) == '_' && j < lx->len);

			if (k < lx->len && is_radix_digit(at(lx, k), radix)) {
				j = k + 1;
				digits++;
			} else {
				break;
			}
		}
		/* No digit ({hexfail}), or identifier characters after the digits: scan.l's
		 * longest match is then {decinteger}{identifier}, "0" plus "x1g": one junk token
		 * over the whole run. */
		if (digits == 0 || (j < lx->len && is_ident_cont(at(lx, j)))) {
			j = i + 1;
			while (j < lx->len && is_ident_cont(at(lx, j)))
				j++;
			*flags |= SQL_TOKF_INVALID;
		}
		return j;
	}

	size_t j = is_digit(at(lx, i)) ? dec_run(lx, i) : i;

	if (at(lx, j) == '.' && j < lx->len) {
		if (at(lx, j + 1) == '.' && j > i) /* {numericfail}: 1..10 is 1 then .. */
			return j;
		j++;
		if (j < lx->len && is_digit(at(lx, j)))
			j = dec_run(lx, j);
	}
	if ((at(lx, j) | 0x20) == 'e' && j < lx->len) {
		size_t k = j + 1;
		bool sign = at(lx, k) == '+' || at(lx, k) == '-';

		if (sign)
			k++;
		if (k < lx->len && is_digit(at(lx, k))) {
			j = dec_run(lx, k);
		} else if (sign) { /* {realfail}: 1e+ */
			*flags |= SQL_TOKF_INVALID;
			return k;
		}
	}
	return junk(lx, j, flags);
}

/*
 * An operator run, cut where a comment starts inside it, and (for SQL compatibility,
 * as scan.l does) without a trailing + or - unless the operator also holds one of
 * ~ ! @ # ^ & | ` ? %, so that "=-1" is = then -1's minus.
 */
static size_t scan_operator(const struct sql_lexer *lx, size_t i)
{
	size_t j = i;
	bool special = false;

	while (j < lx->len && is_op_char(at(lx, j))) {
		if (j > i && ((at(lx, j) == '-' && at(lx, j + 1) == '-') ||
			      (at(lx, j) == '/' && at(lx, j + 1) == '*')))
			break;
		j++;
	}
	for (size_t k = i; k < j; k++)
		if (cclass[at(lx, k)] & C_OP_SPECIAL)
			special = true;
	if (!special)
		while (j - i > 1 && (at(lx, j - 1) == '+' || at(lx, j - 1) == '-'))
			j--;
	return j;
}

/* Does the letter at i begin a literal (E'', N'', B'', X'', U&'', U&"") rather than an
 * identifier? Asked only of the letters with C_QUOTE_PREFIX. */
static bool literal_prefix_at(const struct sql_lexer *lx, size_t i)
{
	unsigned char c1 = at(lx, i + 1), c2 = at(lx, i + 2);

	if ((at(lx, i) | 0x20) == 'u')
		return c1 == '&' && (c2 == '\'' || c2 == '"');
	return c1 == '\'';
}

void sql_lex_next(struct sql_lexer *lx, struct sql_token *t)
{
	bool unterminated = false;
	size_t i = lx->pos;
	unsigned flags = 0;

	if (skip_space(lx, &i, &unterminated))
		flags |= SQL_TOKF_SPACE_BEFORE;
	t->off = i;
	t->kind = SQL_TOK_EOF;
	if (i >= lx->len) {
		t->len = 0;
		t->flags = flags | (unterminated ? SQL_TOKF_UNTERMINATED : 0);
		lx->pos = lx->len;
		return;
	}

	unsigned char c = at(lx, i), c1 = at(lx, i + 1), lc = c | 0x20;
	bool has1 = i + 1 < lx->len;
	size_t end;

	if (is_ident_start(c) && !((cclass[c] & C_QUOTE_PREFIX) && literal_prefix_at(lx, i))) {
		/* First: most tokens are identifiers and keywords, and most bytes theirs. */
		const unsigned char *s = (const unsigned char *)lx->sql;
		size_t n = lx->len;

		t->kind = SQL_TOK_IDENT;
		end = i + 1;
		while (end < n && is_ident_cont(s[end]))
			end++;
	} else if (c == '\'') {
		t->kind = SQL_TOK_STRING;
		end = scan_quoted(lx, i + 1,
				  (lx->opts & SQL_LEX_BACKSLASH_QUOTES) ? QM_ESCAPE : QM_STANDARD,
				  &flags);
	} else if ((lc == 'e' || lc == 'n') && has1 && c1 == '\'') {
		/* N'' is an ordinary string to the lexer, taking escapes when '' would. */
		t->kind = SQL_TOK_STRING;
		end = scan_quoted(lx, i + 2,
				  lc == 'e' || (lx->opts & SQL_LEX_BACKSLASH_QUOTES) ? QM_ESCAPE
										   : QM_STANDARD,
				  &flags);
	} else if ((lc == 'b' || lc == 'x') && has1 && c1 == '\'') {
		t->kind = SQL_TOK_BITSTRING;
		end = scan_quoted(lx, i + 2, QM_BITS, &flags);
	} else if (lc == 'u' && c1 == '&' && i + 2 < lx->len &&
		   (at(lx, i + 2) == '\'' || at(lx, i + 2) == '"')) {
		flags |= SQL_TOKF_UNICODE;
		if (at(lx, i + 2) == '\'') {
			t->kind = SQL_TOK_STRING;
			/* The server refuses U&'' when standard_conforming_strings is off. */
			if (lx->opts & SQL_LEX_BACKSLASH_QUOTES)
				flags |= SQL_TOKF_INVALID;
			end = scan_quoted(lx, i + 3, QM_STANDARD, &flags);
		} else {
			goto quoted_ident;
		}
	} else if (c == '"') {
quoted_ident:;
		size_t j = (c == '"') ? i + 1 : i + 3, body = j;

		t->kind = SQL_TOK_QIDENT;
		for (;;) {
			const char *q = j < lx->len ? memchr(lx->sql + j, '"', lx->len - j) : NULL;

			if (!q) {
				flags |= SQL_TOKF_UNTERMINATED;
				end = lx->len;
				break;
			}
			j = (size_t)(q - lx->sql);
			if (at(lx, j + 1) == '"' && j + 1 < lx->len) {
				j += 2;
				continue;
			}
			end = j + 1;
			if (j == body) /* zero-length delimited identifier */
				flags |= SQL_TOKF_INVALID;
			break;
		}
	} else if (c == '$') {
		size_t dlen = dolq_delim(lx, i);

		if (dlen) {
			t->kind = SQL_TOK_STRING;
			flags |= SQL_TOKF_DOLLAR;
			end = scan_dollar(lx, i + dlen, dlen, i, &flags);
		} else if (has1 && is_digit(c1)) {
			uint64_t n = 0;

			t->kind = SQL_TOK_PARAM;
			end = i + 1;
			while (end < lx->len && is_digit(at(lx, end))) {
				if (n <= INT32_MAX)
					n = n * 10 + (at(lx, end) - '0');
				end++;
			}
			if (n > INT32_MAX)
				flags |= SQL_TOKF_INVALID;
			end = junk(lx, end, &flags);
		} else {
			/* {dolqfailed} or a lone '$': the '$' alone, the rest is rescanned */
			t->kind = SQL_TOK_OTHER;
			end = i + 1;
		}
	} else if (is_digit(c) || (c == '.' && has1 && is_digit(c1))) {
		t->kind = SQL_TOK_NUMBER;
		end = scan_number(lx, i, &flags);
	} else if (c == ';') {
		t->kind = SQL_TOK_SEMI;
		end = i + 1;
	} else if (c == ':' && (c1 == ':' || c1 == '=') && has1) {
		t->kind = SQL_TOK_PUNCT; /* :: typecast, := */
		end = i + 2;
	} else if (c == '.' && c1 == '.' && has1) {
		t->kind = SQL_TOK_PUNCT; /* .. */
		end = i + 2;
	} else if (cclass[c] & C_PUNCT) {
		t->kind = SQL_TOK_PUNCT;
		end = i + 1;
	} else if (is_op_char(c)) {
		t->kind = SQL_TOK_OP;
		end = scan_operator(lx, i);
	} else {
		t->kind = SQL_TOK_OTHER;
		if (c == 0) /* a Query/Parse string cannot hold one: the server would stop */
			flags |= SQL_TOKF_INVALID;
		end = i + 1;
	}
	t->len = end - i;
	t->flags = flags;
	lx->pos = end;
}

const char *sql_tok_kind_to_str(enum sql_tok_kind k)
{
	static const char *const names[SQL_TOK_COUNT] = {
		[SQL_TOK_EOF] = "eof",		 [SQL_TOK_IDENT] = "ident",
		[SQL_TOK_QIDENT] = "qident",	 [SQL_TOK_STRING] = "string",
		[SQL_TOK_BITSTRING] = "bitstring", [SQL_TOK_NUMBER] = "number",
		[SQL_TOK_PARAM] = "param",	 [SQL_TOK_OP] = "op",
		[SQL_TOK_PUNCT] = "punct",	 [SQL_TOK_SEMI] = "semi",
		[SQL_TOK_OTHER] = "other",
	};

	return (unsigned)k < SQL_TOK_COUNT ? names[k] : "?";
}
