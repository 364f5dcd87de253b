/*
 * mask_test_util: what the masking suites share: reading the byte and type notations of
 * their case files, the test key, and the session facts.
 *
 * Byte notation (one token):
 *   "text"   the bytes of text; escapes \0 \n \r \t \\ \" \xHH
 *   x:0a1b   hex bytes (blanks may group the digits)
 *   pad:N    N bytes of 'A'
 *   NULL     no value (SQL NULL)
 * Several tokens separated by '+' are concatenated ("abc"+x:00+"d").
 *
 * Type notation: text, varchar(N), char(N), bpchar, name, citext, int2, int4, int8,
 * numeric, numeric(P,S), float4, float8, date, timestamp, timestamptz, bytea (any other
 * name: a type no strategy applies to); a trailing [] makes it an array of that.
 *
 * Environment notation: comma-separated words: utf8 latin1 sjis (client encoding),
 * iso sql postgres german (DateStyle), mdy dmy, nokey (hash has no key).
 */
#ifndef PGWARDEN_MASK_TEST_UTIL_H
#define PGWARDEN_MASK_TEST_UTIL_H

#include "mask/mask_key.h"
#include "mask/mask_value.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The key every suite's expected tokens were computed with (Python's hmac, independently):
 * the 32 ASCII bytes below. */
#define MASK_TEST_KEY "pgwarden-test-key-0123456789abcd"

struct bytes {
	uint8_t *p;
	size_t n;
	bool null;
};

static inline int mt_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Parse one byte token at *s (advancing it); false on a malformed token. */
static inline bool mt_token(const char **s, struct bytes *b)
{
	const char *p = *s;

	while (*p == ' ')
		p++;
	if (strncmp(p, "NULL", 4) == 0 && (p[4] == '\0' || p[4] == ' ' || p[4] == '|')) {
		b->null = true;
		*s = p + 4;
		return true;
	}
	if (strncmp(p, "pad:", 4) == 0) {
		long k = strtol(p + 4, (char **)&p, 10);

		memset(b->p + b->n, 'A', (size_t)k);
		b->n += (size_t)k;
		*s = p;
		return true;
	}
	if (strncmp(p, "x:", 2) == 0) {
		p += 2;
		for (;;) {
			const char *q = p;

			while (*q == ' ')
				q++; /* blanks may group the hex digits */
			if (mt_hexval((unsigned char)q[0]) < 0 || mt_hexval((unsigned char)q[1]) < 0)
				break;
			b->p[b->n++] = (uint8_t)(mt_hexval((unsigned char)q[0]) << 4 |
						mt_hexval((unsigned char)q[1]));
			p = q + 2;
		}
		*s = p;
		return true;
	}
	if (*p != '"')
		return false;
	p++;
	while (*p && *p != '"') {
		if (*p != '\\') {
			b->p[b->n++] = (uint8_t)*p++;
			continue;
		}
		p++;
		switch (*p) {
		case '0': b->p[b->n++] = 0; p++; break;
		case 'n': b->p[b->n++] = '\n'; p++; break;
		case 'r': b->p[b->n++] = '\r'; p++; break;
		case 't': b->p[b->n++] = '\t'; p++; break;
		case '\\': b->p[b->n++] = '\\'; p++; break;
		case '"': b->p[b->n++] = '"'; p++; break;
		case 'x':
			if (mt_hexval((unsigned char)p[1]) < 0 || mt_hexval((unsigned char)p[2]) < 0)
				return false;
			b->p[b->n++] = (uint8_t)(mt_hexval((unsigned char)p[1]) << 4 |
						mt_hexval((unsigned char)p[2]));
			p += 3;
			break;
		default:
			return false;
		}
	}
	if (*p != '"')
		return false;
	*s = p + 1;
	return true;
}

/* A '+'-joined byte field; b->p must have room (the caller sizes it by the line). */
static inline bool mt_bytes(const char *s, struct bytes *b)
{
	b->n = 0;
	b->null = false;
	for (;;) {
		if (!mt_token(&s, b))
			return false;
		while (*s == ' ')
			s++;
		if (*s != '+')
			break;
		s++;
	}
	while (*s == ' ')
		s++;
	return *s == '\0';
}

static inline bool mt_type(const char *s, struct mask_type *t)
{
	char name[32];
	size_t n = strcspn(s, "([ ");
	int a = -1, b = -1;
	const char *q = s + n;

	memset(t, 0, sizeof(*t));
	t->typmod = -1;
	if (n >= sizeof(name))
		return false;
	memcpy(name, s, n);
	name[n] = '\0';
	if (*q == '(') {
		if (sscanf(q, "(%d,%d)", &a, &b) != 2 && sscanf(q, "(%d)", &a) != 1)
			return false;
		q = strchr(q, ')') + 1;
	}
	t->array = strncmp(q, "[]", 2) == 0;
	if (!strcmp(name, "text") || !strcmp(name, "varchar") || !strcmp(name, "name"))
		t->tc = MASK_TC_TEXT;
	else if (!strcmp(name, "citext")) {
		t->tc = MASK_TC_TEXT;
		t->citext = true;
	} else if (!strcmp(name, "char") || !strcmp(name, "bpchar"))
		t->tc = MASK_TC_BPCHAR;
	else if (!strcmp(name, "int2"))
		t->tc = MASK_TC_INT2;
	else if (!strcmp(name, "int4"))
		t->tc = MASK_TC_INT4;
	else if (!strcmp(name, "int8"))
		t->tc = MASK_TC_INT8;
	else if (!strcmp(name, "numeric"))
		t->tc = MASK_TC_NUMERIC;
	else if (!strcmp(name, "float4"))
		t->tc = MASK_TC_FLOAT4;
	else if (!strcmp(name, "float8"))
		t->tc = MASK_TC_FLOAT8;
	else if (!strcmp(name, "date"))
		t->tc = MASK_TC_DATE;
	else if (!strcmp(name, "timestamp"))
		t->tc = MASK_TC_TIMESTAMP;
	else if (!strcmp(name, "timestamptz"))
		t->tc = MASK_TC_TIMESTAMPTZ;
	else
		t->tc = MASK_TC_OTHER;
	if (a >= 0 && t->tc == MASK_TC_NUMERIC)
		t->typmod = ((a << 16) | ((b < 0 ? 0 : b) & 0x7ff)) + 4;
	else if (a >= 0)
		t->typmod = a + 4;
	t->elem_oid = t->tc == MASK_TC_TEXT ? MASK_OID_TEXT : t->tc == MASK_TC_BPCHAR ? MASK_OID_BPCHAR : 0;
	return true;
}

/* The test key's HMAC context, made once per process. */
static inline struct mask_mac *mt_mac(void)
{
	static struct mask_mac *mac;
	struct mask_key *k;

	if (mac)
		return mac;
	if (mask_key_from_bytes(MASK_TEST_KEY, strlen(MASK_TEST_KEY), &k) < 0)
		abort();
	if (mask_mac_new(k, &mac) < 0)
		abort();
	mask_key_free(k);
	return mac;
}

static inline void mt_env(const char *s, struct mask_env *e)
{
	const char *enc = "UTF8", *style = "ISO", *order = "MDY";
	char ds[32];
	bool key = true;

	if (strstr(s, "latin1"))
		enc = "LATIN1";
	if (strstr(s, "sjis"))
		enc = "SJIS";
	if (strstr(s, "sql"))
		style = "SQL";
	if (strstr(s, "postgres"))
		style = "Postgres";
	if (strstr(s, "german"))
		style = "German";
	if (strstr(s, "dmy"))
		order = "DMY";
	if (strstr(s, "nokey"))
		key = false;
	snprintf(ds, sizeof(ds), "%s, %s", style, order);
	mask_env_init(e, enc, ds, key ? mt_mac() : NULL);
}

/* Split a line at '|' into at most max trimmed fields; returns the count. */
static inline unsigned mt_fields(char *line, char **f, unsigned max)
{
	unsigned n = 0;
	bool quoted = false;
	char *start = line;

	for (char *p = line;; p++) {
		if (*p == '\\' && quoted && p[1]) {
			p++;
			continue;
		}
		if (*p == '"')
			quoted = !quoted;
		if ((*p == '|' && !quoted) || *p == '\0' || *p == '\n') {
			bool end = *p != '|';
			char *e = p;

			*p = '\0';
			while (*start == ' ')
				start++;
			while (e > start && (e[-1] == ' ' || e[-1] == '\n'))
				*--e = '\0';
			if (n < max)
				f[n++] = start;
			if (end)
				break;
			start = p + 1;
		}
	}
	return n;
}

/* A deterministic pseudo-random generator for chunk sizes. */
static inline uint32_t mt_rand(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

#endif
