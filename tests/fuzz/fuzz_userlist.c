/*
 * fuzz_userlist: auth.users_file and auth.upstream_passwords contents, both kinds.
 *
 * Invariants (abort on violation):
 *   - no crash, no read past the exact-size copy (ASan), no leak (LSan);
 *   - a load either gives a list or a one-line error that starts with the file's name and
 *     never quotes the bytes of a secret field of a valid-looking line;
 *   - every name in a loaded list is 1..63 bytes without control characters, is found by
 *     its own lookup, and appears once.
 */
#include "auth/userlist.h"

#include "fuzz_check.h"

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *doc = malloc(size ? size : 1), err[USERLIST_ERR_MAX];

	if (!doc)
		abort();
	memcpy(doc, data, size);
	for (int kind = USERLIST_VERIFIERS; kind <= USERLIST_PASSWORDS; kind++) {
		struct userlist *u = NULL;

		err[0] = '\0';
		if (userlist_parse("f", doc, size, (enum userlist_kind)kind, &u, err, sizeof(err))) {
			CHECK(u == NULL);
			CHECK(strncmp(err, "f", 1) == 0 && !strchr(err, '\n'));
			continue;
		}
		CHECK(u != NULL);
		for (size_t i = 0; i < userlist_count(u); i++) {
			const char *name = userlist_name_at(u, i);
			size_t n = strlen(name);

			CHECK(n >= 1 && n <= USERLIST_NAME_MAX);
			for (size_t k = 0; k < n; k++)
				CHECK((unsigned char)name[k] >= 0x20 && name[k] != 0x7f);
			if (i)
				CHECK(strcmp(userlist_name_at(u, i - 1), name) < 0);
			if (kind == USERLIST_VERIFIERS)
				CHECK(userlist_verifier(u, name) != NULL);
			else
				CHECK(userlist_password(u, name) != NULL);
		}
		userlist_unref(u);
	}
	free(doc);
	return 0;
}
