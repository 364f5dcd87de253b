/*
 * sql_names: identifier and string-literal values as the server reads them, and the client
 * encodings the lexer cannot follow. Bounded: every output has a fixed capacity, and a
 * value that does not fit is cut (identifiers, as the server cuts them) or refused
 * (strings, whose exact value a caller relies on).
 */
#include "sql/sql.h"

#include <string.h>

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Append code point cp as UTF-8 to out[*n] (cap bytes); false when it does not fit. */
static bool put_utf8(char *out, size_t cap, size_t *n, uint32_t cp)
{
	unsigned char b[4];
	size_t k;

	if (cp < 0x80) {
		b[0] = (unsigned char)cp;
		k = 1;
	} else if (cp < 0x800) {
		b[0] = (unsigned char)(0xc0 | cp >> 6);
		b[1] = (unsigned char)(0x80 | (cp & 0x3f));
		k = 2;
	} else if (cp < 0x10000) {
		b[0] = (unsigned char)(0xe0 | cp >> 12);
		b[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[2] = (unsigned char)(0x80 | (cp & 0x3f));
		k = 3;
	} else {
		b[0] = (unsigned char)(0xf0 | cp >> 18);
		b[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
		b[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		b[3] = (unsigned char)(0x80 | (cp & 0x3f));
		k = 4;
	}
	if (*n + k > cap)
		return false;
	memcpy(out + *n, b, k);
	*n += k;
	return true;
}

/*
 * One U&"" escape at s[i] (s[i] is the escape character): \XXXX or \+XXXXXX, or the escape
 * character doubled. *cp receives the code point, or ~0 for a literal escape character.
 * Returns the bytes consumed, 0 when malformed (PostgreSQL: "invalid Unicode escape").
 */
static size_t uescape_one(const char *s, size_t n, size_t i, char esc, uint32_t *cp)
{
	size_t digits = 4, start = i + 1;
	uint32_t v = 0;

	if (start < n && s[start] == esc) {
		*cp = ~0u;
		return 2;
	}
	if (start < n && s[start] == '+') {
		digits = 6;
		start++;
	}
	if (start + digits > n)
		return 0;
	for (size_t k = 0; k < digits; k++) {
		int h = hexval((unsigned char)s[start + k]);

		if (h < 0)
			return 0;
		v = v << 4 | (uint32_t)h;
	}
	*cp = v;
	return start + digits - i;
}

/* Cut a string of n bytes to at most max bytes without splitting a character, as
 * PostgreSQL's pg_mbcliplen does for UTF-8: walk forward by each lead byte's length (a stray
 * continuation byte counts as one), stop before the character that would not fit. */
static size_t clip_utf8(const char *s, size_t n, size_t max)
{
	size_t i = 0;

	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		size_t k = (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 1;

		if (i + k > max || i + k > n)
			break;
		i += k;
	}
	return i;
}

bool sql_ident_decode(const struct sql_lexer *lx, const struct sql_token *t, char esc,
		      char out[SQL_NAME_MAX])
{
	/* Decoded into a larger scratch first, then cut as the server cuts (63 bytes). */
	char tmp[4 * SQL_NAME_MAX];
	const char *s = lx->sql + t->off;
	size_t n = 0, len = t->len;

	out[0] = '\0';
	if (t->kind == SQL_TOK_IDENT) {
		for (size_t i = 0; i < len && n < sizeof(tmp); i++) {
			char c = s[i];

			tmp[n++] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
		}
	} else if (t->kind == SQL_TOK_QIDENT && !(t->flags & (SQL_TOKF_UNTERMINATED | SQL_TOKF_INVALID))) {
		bool uni = (t->flags & SQL_TOKF_UNICODE) != 0;
		size_t i = uni ? 3 : 1, end = len - 1; /* between the quotes */
		uint32_t high = 0;

		if (len < 2 || end < i)
			return false;
		while (i < end) {
			if (s[i] == '"') { /* "" inside: one quote */
				if (high || n >= sizeof(tmp))
					return false;
				tmp[n++] = '"';
				i += 2;
			} else if (uni && s[i] == esc) {
				uint32_t cp;
				size_t used = uescape_one(s, end, i, esc, &cp);

				if (!used)
					return false;
				i += used;
				if (cp == ~0u) {
					if (high || n >= sizeof(tmp))
						return false;
					tmp[n++] = esc;
					continue;
				}
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (high)
						return false;
					high = cp;
					continue;
				}
				if (cp >= 0xdc00 && cp <= 0xdfff) {
					if (!high)
						return false;
					cp = 0x10000 + ((high - 0xd800) << 10) + (cp - 0xdc00);
					high = 0;
				} else if (high) {
					return false;
				}
				if (cp == 0 || cp > 0x10ffff || !put_utf8(tmp, sizeof(tmp), &n, cp))
					return false;
			} else {
				if (high || n >= sizeof(tmp))
					return false;
				tmp[n++] = s[i++];
			}
		}
		if (high)
			return false;
	} else {
		return false;
	}
	/* A NUL cannot be part of a name the server sees (its strings end there). */
	if (n == 0 || memchr(tmp, '\0', n))
		return false;
	n = clip_utf8(tmp, n, SQL_NAME_MAX - 1);
	if (n == 0)
		return false;
	memcpy(out, tmp, n);
	out[n] = '\0';
	return true;
}

bool sql_string_decode(const struct sql_lexer *lx, const struct sql_token *t, char *out,
		       size_t cap)
{
	const char *s = lx->sql + t->off;
	size_t len = t->len, i, n = 0;
	bool esc_mode = false;

	if (cap == 0 || t->kind != SQL_TOK_STRING ||
	    (t->flags & (SQL_TOKF_UNTERMINATED | SQL_TOKF_INVALID | SQL_TOKF_UNICODE)))
		return false;
	out[0] = '\0';
	if (t->flags & SQL_TOKF_DOLLAR) {
		size_t d = 1;

		while (d < len && s[d] != '$')
			d++;
		d++; /* delimiter length */
		if (2 * d > len || len - 2 * d >= cap)
			return false;
		memcpy(out, s + d, len - 2 * d);
		out[len - 2 * d] = '\0';
		return true;
	}
	i = 0;
	if (s[0] == 'E' || s[0] == 'e') {
		esc_mode = true;
		i = 1;
	} else if (s[0] == 'N' || s[0] == 'n') {
		i = 1;
	}
	if (lx->opts & SQL_LEX_BACKSLASH_QUOTES)
		esc_mode = true;
	if (i >= len || s[i] != '\'')
		return false;
	i++;
	while (i < len) {
		char c = s[i];

		if (c == '\\' && esc_mode) {
			char e = i + 1 < len ? s[i + 1] : 0;
			char v;

			switch (e) {
			case 'b': v = '\b'; break;
			case 'f': v = '\f'; break;
			case 'n': v = '\n'; break;
			case 'r': v = '\r'; break;
			case 't': v = '\t'; break;
			case '\\': case '\'': case '"': v = e; break;
			default: return false; /* octal, hex, unicode: not followed */
			}
			if (n + 1 >= cap)
				return false;
			out[n++] = v;
			i += 2;
		} else if (c == '\'') {
			if (i + 1 < len && s[i + 1] == '\'') {
				if (n + 1 >= cap)
					return false;
				out[n++] = '\'';
				i += 2;
				continue;
			}
			/* The end of this part; a continuation ('a'\n'b') starts after space. */
			i++;
			while (i < len && s[i] != '\'') {
				if (s[i] == '-' && i + 1 < len && s[i + 1] == '-') {
					while (i < len && s[i] != '\n' && s[i] != '\r')
						i++;
				} else {
					i++;
				}
			}
			if (i < len)
				i++; /* the continuation's opening quote */
		} else {
			if (n + 1 >= cap)
				return false;
			out[n++] = c;
			i++;
		}
	}
	out[n] = '\0';
	return true;
}

/* PostgreSQL's clean_encoding_name: lower case, only letters and digits. */
static void clean_name(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	for (; *in && n + 1 < cap; in++) {
		char c = *in;

		if (c >= 'A' && c <= 'Z')
			out[n++] = (char)(c | 0x20);
		else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
			out[n++] = c;
	}
	out[n] = '\0';
}

bool sql_encoding_is_unsafe(const char *name)
{
	/* pg_encname_tbl (src/common/encnames.c) entries for the client-only encodings whose
	 * second byte may fall in the ASCII range. */
	static const char *const unsafe[] = {
		"big5",	  "cp932",    "cp936",	 "cp949",	 "cp950", "gb18030",
		"gbk",	  "johab",    "mskanji", "shiftjis",	 "shiftjis2004",
		"sjis",	  "uhc",      "win932",	 "win936",	 "win949", "win950",
		NULL,
	};
	char clean[64];

	if (!name)
		return false;
	clean_name(name, clean, sizeof(clean));
	for (const char *const *u = unsafe; *u; u++)
		if (strcmp(clean, *u) == 0)
			return true;
	return false;
}
