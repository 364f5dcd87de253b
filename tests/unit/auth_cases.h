/*
 * auth_cases: what the authentication suites share: reading their case files under
 * data/auth/ (one case per line, "fields | "quoted bytes"", '#' comments) and naming
 * statuses in them.
 */
#ifndef PGWARDEN_AUTH_CASES_H
#define PGWARDEN_AUTH_CASES_H

#include "case_file.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define AUTH_CASE_MAX 4096

struct auth_case {
	const char *file;
	unsigned lineno;
	char *fields[8]; /* before '|', split on blanks */
	unsigned nfields;
	char bytes[AUTH_CASE_MAX]; /* the quoted part, escapes applied */
	size_t len;
	bool has_bytes;
};

static inline int auth_case_hex(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Unquote s (at its opening quote) into c->bytes. false on a syntax error. */
static inline bool auth_case_unquote(struct auth_case *c, const char *s)
{
	c->len = 0;
	if (*s++ != '"')
		return false;
	while (*s && *s != '"') {
		int ch = (unsigned char)*s++;

		if (ch == '\\') {
			switch (*s++) {
			case '0': ch = 0; break;
			case 'n': ch = '\n'; break;
			case 'r': ch = '\r'; break;
			case 't': ch = '\t'; break;
			case '\\': ch = '\\'; break;
			case '"': ch = '"'; break;
			case 'x': {
				int hi = auth_case_hex((unsigned char)s[0]);
				int lo = hi < 0 ? -1 : auth_case_hex((unsigned char)s[1]);

				if (lo < 0)
					return false;
				ch = hi << 4 | lo;
				s += 2;
				break;
			}
			default:
				return false;
			}
		}
		if (c->len >= sizeof(c->bytes))
			return false;
		c->bytes[c->len++] = (char)ch;
	}
	return *s == '"' && trim((char *)s + 1)[0] == '\0';
}

/*
 * Call fn for each case line of data/auth/<name>. A line that does not parse fails the
 * suite (reported with file:line). Returns the number of cases.
 */
static inline unsigned auth_cases_each(const char *name, void (*fn)(struct auth_case *, void *),
				       void *arg)
{
	char path[256], line[AUTH_CASE_MAX * 2];
	unsigned lineno = 0, n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "data/auth/%s", name);
	f = fopen(path, "r");
	if (!f) {
		fprintf(stderr, "cannot open %s\n", path);
		abort();
	}
	while (fgets(line, sizeof(line), f)) {
		struct auth_case c = {.file = name, .lineno = ++lineno};
		char *bar, *tok, *save = NULL, *s = trim(line);

		if (!*s || *s == '#')
			continue;
		bar = strstr(s, " | ");
		if (bar) {
			*bar = '\0';
			if (!auth_case_unquote(&c, trim(bar + 3))) {
				fprintf(stderr, "%s:%u: bad quoted bytes\n", name, lineno);
				abort();
			}
			c.has_bytes = true;
		}
		for (tok = strtok_r(s, " ", &save); tok && c.nfields < 8;
		     tok = strtok_r(NULL, " ", &save))
			c.fields[c.nfields++] = tok;
		fn(&c, arg);
		n++;
	}
	fclose(f);
	return n;
}

/* c->bytes in an exact-size heap block (so ASan sees any read past the end). */
static inline char *auth_case_copy(const char *bytes, size_t len)
{
	char *p = malloc(len ? len : 1);

	if (!p)
		abort();
	memcpy(p, bytes, len);
	return p;
}

#endif
