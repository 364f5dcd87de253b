/*
 * case_file: what the suites that read data/ case files share. Case lines are
 * "input → expected" text; trim() takes the blanks off both ends of a field in place.
 */
#ifndef PGWARDEN_CASE_FILE_H
#define PGWARDEN_CASE_FILE_H

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

#endif
