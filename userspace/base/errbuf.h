/*
 * errbuf: the message half of the "char *err, size_t errlen" convention that loaders and
 * set-up code share: on failure a function formats one line for its caller into the
 * caller's buffer and returns its error code. err may be NULL or errlen 0 when the caller
 * only wants the code; the line is cut to fit, always NUL-terminated.
 */
#ifndef PGWARDEN_ERRBUF_H
#define PGWARDEN_ERRBUF_H

#include <stddef.h>

void errbuf_set(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
