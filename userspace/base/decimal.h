/*
 * decimal: an unsigned integer's decimal digits, written without printf. The session
 * trail's lines and the addresses in them are built several times per session, and
 * printf's formatting was most of that work.
 */
#ifndef PGWARDEN_DECIMAL_H
#define PGWARDEN_DECIMAL_H

#include <stdint.h>

#define DECIMAL_U64_DIGITS 20 /* UINT64_MAX has 20 */

/* The digits of v at p, unterminated (at most DECIMAL_U64_DIGITS); returns their end. */
static inline char *decimal_put_u64(char *p, uint64_t v)
{
	char rev[DECIMAL_U64_DIGITS];
	int n = 0;

	do {
		rev[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	while (n)
		*p++ = rev[--n];
	return p;
}

#endif
