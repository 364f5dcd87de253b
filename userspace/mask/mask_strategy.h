/*
 * mask_strategy: the masking strategies a policy rule names, parsed from their text.
 *
 * A rule says `mask: { public.customers.ssn: partial-last-4 }`; the policy loader calls
 * mask_strategy_parse() on the value. The spellings are exact (lower case, no blanks):
 *
 *   null            every value becomes SQL NULL (any type, any format)
 *   redact          a fixed value valid for the column's type ("REDACTED", 0, 1970-01-01, {})
 *   partial-last-N  keep the last N characters (1 <= N <= MASK_PARTIAL_MAX), mask the rest
 *   hash            keyed HMAC-SHA-256 token, deterministic (joins and GROUP BY still work)
 *   email           mask the local part, keep '@' and the domain
 *   phone           keep punctuation and the count of digits; digits become 0
 *   date            keep the year; month and day become 1, the time of day midnight
 *
 * What each does per type and format is mask_value.h's business; this module only names
 * them. Pure, no allocation.
 */
#ifndef PGWARDEN_MASK_STRATEGY_H
#define PGWARDEN_MASK_STRATEGY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The longest window partial-last-N keeps: it is buffered while a value streams. */
#define MASK_PARTIAL_MAX 64
/* Room for any strategy's canonical text ("partial-last-64") and its NUL. */
#define MASK_STRATEGY_STRLEN 24

enum mask_kind {
	MASK_NONE = 0, /* not masked: the column passes unchanged */
	MASK_NULL,
	MASK_REDACT,
	MASK_PARTIAL,
	MASK_HASH,
	MASK_EMAIL,
	MASK_PHONE,
	MASK_DATE,
	MASK_KIND_COUNT,
};

struct mask_strategy {
	enum mask_kind kind;
	uint16_t keep; /* MASK_PARTIAL: N; 0 otherwise */
};

/*
 * Parse a strategy's text. Returns 0 and fills *out, or -EINVAL with a one-line reason in
 * err[0..errlen) (always NUL-terminated when errlen > 0), naming what was expected. text
 * may be NULL (an empty YAML value): that is an error too.
 */
int mask_strategy_parse(const char *text, struct mask_strategy *out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The canonical text ("partial-last-4"), as mask_strategy_parse() reads it back; "none" for
 * MASK_NONE. Writes at most n bytes, NUL-terminated; returns buf. */
const char *mask_strategy_format(const struct mask_strategy *s, char *buf, size_t n);

/* "null", "redact", "partial", "hash", "email", "phone", "date"; "none"; "unknown". */
const char *mask_kind_to_str(enum mask_kind k);

static inline bool mask_strategy_equal(const struct mask_strategy *a,
				       const struct mask_strategy *b)
{
	return a->kind == b->kind && a->keep == b->keep;
}

#endif
