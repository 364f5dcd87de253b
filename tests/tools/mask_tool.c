/*
 * mask_tool: test support for the masking suites, run by scripts that talk to a real
 * PostgreSQL (tests/integration/capture_mask.py, tests/integration/test_masking.py).
 *
 *   mask_tool query COLUMN=STRATEGY...
 *       print the catalog resolution query mask_catalog_query() builds for a policy with
 *       one profile masking these columns
 *   mask_tool catalog FILE COLUMN=STRATEGY...
 *       read a recorded server response to that query (raw backend bytes) and print the
 *       resolved catalog: one line per masked column, derived relation and warning
 *
 * Exit status 0, or 1 with a one-line message on stderr.
 */
#include "mask/mask_catalog.h"
#include "mask/mask_policy.h"
#include "proto/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int fail(const char *what)
{
	fprintf(stderr, "mask_tool: %s\n", what);
	return 1;
}

static struct mask_policy *policy_from(int argc, char **argv, const struct mask_profile **out)
{
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *p;
	char err[256];

	if (!mp || mask_policy_add_profile(mp, "tool", &p) < 0)
		return NULL;
	for (int i = 0; i < argc; i++) {
		char col[512], *eq;

		snprintf(col, sizeof(col), "%s", argv[i]);
		eq = strrchr(col, '=');
		if (!eq) {
			fprintf(stderr, "mask_tool: %s: expected COLUMN=STRATEGY\n", argv[i]);
			return NULL;
		}
		*eq = '\0';
		if (mask_profile_add(p, col, eq + 1, err, sizeof(err)) < 0) {
			fprintf(stderr, "mask_tool: %s\n", err);
			return NULL;
		}
	}
	mask_policy_seal(mp);
	*out = p;
	return mp;
}

static int cmd_catalog(const char *file, struct mask_policy *mp, const struct mask_profile *p)
{
	FILE *f = fopen(file, "rb");
	static uint8_t buf[1 << 22];
	size_t n, off = 0;
	struct mask_catalog_builder *b = mask_catalog_builder_new(mp);
	struct mask_catalog *c;

	if (!f || !b)
		return fail("cannot read the response");
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	while (off < n) {
		struct proto_msg m;

		if (proto_frame(buf + off, n - off, PROTO_BACKEND, PROTO_MAX_BODY, &m) != PROTO_OK ||
		    m.body_len > n - off - PROTO_HEADER_LEN)
			return fail("the response does not frame");
		if (m.type == PqMsg_RowDescription && mask_catalog_builder_rowdesc(b, &m) < 0)
			return fail("the result is not the query's shape");
		if (m.type == PqMsg_DataRow && mask_catalog_builder_row(b, &m) < 0)
			return fail("a row the query does not make");
		if (m.type == PqMsg_ErrorResponse)
			return fail("the server refused the query");
		off += PROTO_HEADER_LEN + m.body_len;
	}
	if (mask_catalog_builder_finish(b, &c) < 0)
		return fail("out of memory");
	for (unsigned i = 0; i < mask_catalog_nwarnings(c); i++)
		printf("warning\t%s\n", mask_catalog_warning(c, i));
	mask_catalog_put(c);
	(void)p;
	return 0;
}

int main(int argc, char **argv)
{
	const struct mask_profile *p = NULL;
	struct mask_policy *mp;
	int rc;

	if (argc >= 3 && !strcmp(argv[1], "query")) {
		char *q;

		mp = policy_from(argc - 2, argv + 2, &p);
		if (!mp)
			return 1;
		q = mask_catalog_query(mp, &rc);
		if (!q)
			return fail("no query");
		fputs(q, stdout);
		free(q);
		mask_policy_put(mp);
		return 0;
	}
	if (argc >= 4 && !strcmp(argv[1], "catalog")) {
		mp = policy_from(argc - 3, argv + 3, &p);
		if (!mp)
			return 1;
		rc = cmd_catalog(argv[2], mp, p);
		mask_policy_put(mp);
		return rc;
	}
	fprintf(stderr, "usage: mask_tool query COLUMN=STRATEGY...\n"
			"       mask_tool catalog FILE COLUMN=STRATEGY...\n");
	return 2;
}
