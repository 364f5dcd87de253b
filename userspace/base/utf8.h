/*
 * utf8: the one strict UTF-8 decoder (RFC 3629): no overlong forms, no surrogates, nothing
 * past U+10FFFF, nothing cut short. Every module that must tell valid UTF-8 from bytes
 * (the sanitiser, the statement normaliser, configuration paths) asks it.
 */
#ifndef PGWARDEN_BASE_UTF8_H
#define PGWARDEN_BASE_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length of the valid UTF-8 sequence at s[0..n) (n >= 1), 0 when s does not start one.
 * *cp receives its code point. */
size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);

#endif
