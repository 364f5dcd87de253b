/*
 * fuzz_certmap: auth.cert_map contents, then a few identities matched against the map.
 *
 * Invariants (abort on violation):
 *   - no crash, no read past the exact-size copy (ASan), no leak (LSan);
 *   - a load gives a map or a one-line error naming the file;
 *   - matching never crashes, and an identity longer than CERTMAP_IDENTITY_MAX never
 *     matches.
 */
#include "auth/certmap.h"

#include "fuzz_check.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char longid[CERTMAP_IDENTITY_MAX + 2];
	char *doc = malloc(size ? size : 1), err[CERTMAP_ERR_MAX];
	struct certmap *m = NULL;

	if (!doc)
		abort();
	memcpy(doc, data, size);
	if (certmap_parse("f", doc, size, &m, err, sizeof(err))) {
		CHECK(m == NULL && err[0] == 'f' && !strchr(err, '\n'));
		free(doc);
		return 0;
	}
	(void)certmap_allows(m, "pgwarden", "alice@example.com", "alice");
	(void)certmap_allows(m, "pgwarden", "", "");
	(void)certmap_allows(m, "x", "CN=bob,O=Example", "bob");
	memset(longid, 'a', sizeof(longid) - 1);
	CHECK(!certmap_allows(m, "pgwarden", longid, "a"));
	certmap_free(m);
	free(doc);
	return 0;
}
