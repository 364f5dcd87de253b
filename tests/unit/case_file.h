/*
 * case_file: what the suites that read data/ case files share. Case lines are
 * "input → expected" text; trim() takes the blanks off both ends of a field in place;
 * case_decode() turns a field's \xHH into a raw byte and \\ into a backslash.
 */
#ifndef PGWARDEN_CASE_FILE_H
#define PGWARDEN_CASE_FILE_H

#include <stdio.h>
#include <string.h>

static inline char *trim(char *s)
{
	char *e;

	while (*s == ' ')
		s++;
	e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* Decode a case field: \xHH is a raw byte, \\ a backslash. Returns the length. */
static inline size_t case_decode(const char *in, char *out, size_t cap)
{
	size_t n = 0;

	while (*in && n + 1 < cap) {
		unsigned v;

		if (in[0] == '\\' && in[1] == '\\') {
			out[n++] = '\\';
			in += 2;
		} else if (in[0] == '\\' && in[1] == 'x' && sscanf(in + 2, "%2x", &v) == 1) {
			out[n++] = (char)v;
			in += 4;
		} else {
			out[n++] = *in++;
		}
	}
	out[n] = '\0';
	return n;
}

#endif
