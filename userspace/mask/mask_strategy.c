/* mask_strategy: strategy names and their parser (see mask_strategy.h). */
#include "mask/mask_strategy.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const char *const kind_names[MASK_KIND_COUNT] = {
	[MASK_NONE] = "none",   [MASK_NULL] = "null",   [MASK_REDACT] = "redact",
	[MASK_PARTIAL] = "partial", [MASK_HASH] = "hash", [MASK_EMAIL] = "email",
	[MASK_PHONE] = "phone", [MASK_DATE] = "date",
};

const char *mask_kind_to_str(enum mask_kind k)
{
	return (unsigned)k < MASK_KIND_COUNT ? kind_names[k] : "unknown";
}

#define PARTIAL_PREFIX "partial-last-"
#define EXPECTED                                                                            \
	"expected one of null, redact, partial-last-N (N from 1 to 64), hash, email, phone, " \
	"date"

/* N of partial-last-N: 1..MASK_PARTIAL_MAX, plain decimal digits, no leading zero. */
static int parse_keep(const char *s, uint16_t *out)
{
	unsigned v = 0;

	if (!*s || *s == '0')
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(*s - '0');
		if (v > MASK_PARTIAL_MAX)
			return -EINVAL;
	}
	*out = (uint16_t)v;
	return 0;
}

int mask_strategy_parse(const char *text, struct mask_strategy *out, char *err, size_t errlen)
{
	struct mask_strategy st = {0};

	if (errlen)
		err[0] = '\0';
	if (!text || !*text) {
		if (errlen)
			snprintf(err, errlen, "empty masking strategy: %s", EXPECTED);
		return -EINVAL;
	}
	if (strncmp(text, PARTIAL_PREFIX, sizeof(PARTIAL_PREFIX) - 1) == 0) {
		if (parse_keep(text + sizeof(PARTIAL_PREFIX) - 1, &st.keep) < 0) {
			if (errlen)
				snprintf(err, errlen,
					 "masking strategy %.40s: N of partial-last-N must be a "
					 "whole number from 1 to 64",
					 text);
			return -EINVAL;
		}
		st.kind = MASK_PARTIAL;
		*out = st;
		return 0;
	}
	for (unsigned k = MASK_NULL; k < MASK_KIND_COUNT; k++) {
		if (k == MASK_PARTIAL || strcmp(text, kind_names[k]) != 0)
			continue;
		st.kind = (enum mask_kind)k;
		*out = st;
		return 0;
	}
	if (errlen)
		snprintf(err, errlen, "unknown masking strategy %.40s%s: %s", text,
			 strlen(text) > 40 ? "..." : "", EXPECTED);
	return -EINVAL;
}

const char *mask_strategy_format(const struct mask_strategy *s, char *buf, size_t n)
{
	if (!n)
		return buf;
	if (s->kind == MASK_PARTIAL)
		snprintf(buf, n, PARTIAL_PREFIX "%u", (unsigned)s->keep);
	else
		snprintf(buf, n, "%s", mask_kind_to_str(s->kind));
	return buf;
}
