/*
 * fuzz_mask_catalog: the catalog builder (mask_catalog.h) on arbitrary result rows, as a
 * hostile or broken catalog connection could deliver them.
 *
 * Input: rows separated by '\n', fields by '\t', "\N" a NULL (psql -At -F'\t' -P null='\N'
 * output of the resolution query is a valid input; the seeds are that, for the masking
 * fixture). Each row becomes a DataRow of its fields (padded with NULLs, or cut, to the
 * query's 13 columns when the first byte of the input is even; as it comes when odd, so
 * rows of the wrong width are tried too).
 *
 * Invariants (abort on violation): every row is accepted (0) or refused (-EPROTO, -ENOMEM),
 * nothing else; finish() either makes a catalog or fails cleanly; the catalog's lookups
 * answer without fault; nothing is clean when no 'h' row was accepted (a result that is
 * not whole must not let computed columns through).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_catalog.h"
#include "proto/proto.h"

#include "fuzz_check.h"

#define MAX_FIELDS 20

static struct mask_policy *policy;

static struct mask_policy *make_policy(void)
{
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *p;
	char err[256];

	CHECK(mp && mask_policy_add_profile(mp, "r", &p) == 0);
	CHECK(mask_profile_add(p, "public.customers.ssn", "partial-last-4", err, sizeof(err)) == 0);
	CHECK(mask_profile_add(p, "public.customers.card", "hash", err, sizeof(err)) == 0);
	CHECK(mask_profile_add(p, "public.payments.card", "null", err, sizeof(err)) == 0);
	mask_policy_seal(mp);
	return mp;
}

/* One DataRow from fields[0..n) (NULL fields: length -1) into buf. */
static size_t datarow(uint8_t *buf, const char *const *fields, const size_t *lens, unsigned n)
{
	size_t o = 7;

	buf[0] = 'D';
	buf[5] = (uint8_t)(n >> 8);
	buf[6] = (uint8_t)n;
	for (unsigned i = 0; i < n; i++) {
		uint32_t l = fields[i] ? (uint32_t)lens[i] : UINT32_MAX;

		proto_write_u32(buf + o, l);
		o += 4;
		if (fields[i]) {
			memcpy(buf + o, fields[i], lens[i]);
			o += lens[i];
		}
	}
	proto_write_u32(buf + 1, (uint32_t)(o - 1));
	return o;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mask_catalog_builder *b;
	struct mask_catalog *c = NULL;
	const char *text = (const char *)data;
	bool pad, saw_hooks = false;
	size_t pos = 1;

	if (size < 1)
		return 0;
	if (!policy)
		policy = make_policy();
	pad = (data[0] & 1) == 0;
	b = mask_catalog_builder_new(policy);
	CHECK(b);
	while (pos < size) {
		const char *end = memchr(text + pos, '\n', size - pos);
		size_t line_end = end ? (size_t)(end - text) : size;
		const char *fields[MAX_FIELDS];
		size_t lens[MAX_FIELDS];
		unsigned n = 0;
		size_t f = pos;
		uint8_t *buf;
		struct proto_msg m;
		int rc;

		while (n < MAX_FIELDS) {
			const char *tab = memchr(text + f, '\t', line_end - f);
			size_t fe = tab ? (size_t)(tab - text) : line_end;

			lens[n] = fe - f;
			fields[n] = lens[n] == 2 && !memcmp(text + f, "\\N", 2) ? NULL : text + f;
			n++;
			if (!tab)
				break;
			f = fe + 1;
		}
		if (pad) {
			while (n < MASK_CATALOG_NCOLS)
				fields[n++] = NULL;
			n = MASK_CATALOG_NCOLS;
		}
		buf = malloc(7 + (size_t)n * 4 + (line_end - pos));
		CHECK(buf);
		m.type = 'D';
		m.body_len = (uint32_t)(datarow(buf, fields, lens, n) - 5);
		m.body = buf + 5;
		rc = mask_catalog_builder_row(b, &m);
		CHECK(rc == 0 || rc == -EPROTO || rc == -ENOMEM);
		if (rc == 0 && fields[0] && lens[0] == 1 && fields[0][0] == 'h')
			saw_hooks = true;
		free(buf);
		pos = line_end + 1;
	}
	if (mask_catalog_builder_finish(b, &c) != 0)
		return 0;
	/* lookups on names of the input: any answer, no fault */
	(void)mask_catalog_relation_clean(c, NULL, "orders");
	(void)mask_catalog_relation_clean(c, "public", "orders");
	(void)mask_catalog_function_clean(c, NULL, "count");
	(void)mask_catalog_relid_listed(c, 16384);
	(void)mask_catalog_lookup(c, 16384, 1);
	if (!saw_hooks)
		CHECK(mask_catalog_code_hooks(c) && !mask_catalog_relation_clean(c, NULL, "orders") &&
		      !mask_catalog_relation_clean(c, "public", "orders"));
	for (unsigned i = 0; i < mask_catalog_nwarnings(c); i++)
		CHECK(mask_catalog_warning(c, i));
	mask_catalog_put(c);
	return 0;
}
