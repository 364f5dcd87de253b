/*
 * test_auth_files: the authentication files: auth.users_file and auth.upstream_passwords
 * (PgBouncer's userlist format) and auth.cert_map (pg_ident's), against the table-driven
 * cases in data/auth/userlist_cases.txt and data/auth/certmap_cases.txt; the file checks
 * (permissions, ownership, type); secrets in memory excluded from core dumps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "auth/certmap.h"
#include "auth/secret.h"
#include "auth/userlist.h"
#include "auth_cases.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned failures;

static void case_fail(const struct auth_case *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void case_fail(const struct auth_case *c, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "data/auth/%s:%u: ", c->file, c->lineno);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	failures++;
}

/* expect is OK:<n> or ERR:<line>:<word_with_underscores>; check a loader's result. */
static void check_expect(const struct auth_case *c, const char *expect, int rc, size_t count,
			 const char *err)
{
	if (strncmp(expect, "OK:", 3) == 0) {
		if (rc != 0)
			case_fail(c, "refused: %s", err);
		else if (count != strtoul(expect + 3, NULL, 10))
			case_fail(c, "%zu entries, want %s", count, expect + 3);
		return;
	}
	if (strncmp(expect, "ERR:", 4) != 0 || !strchr(expect + 4, ':')) {
		case_fail(c, "bad expectation %s", expect);
		return;
	}
	char want_at[32], word[256];
	const char *colon = strchr(expect + 4, ':');

	snprintf(want_at, sizeof(want_at), "case:%.*s: ", (int)(colon - expect - 4), expect + 4);
	snprintf(word, sizeof(word), "%s", colon + 1);
	for (char *p = word; *p; p++)
		if (*p == '_')
			*p = ' ';
	if (rc == 0)
		case_fail(c, "accepted, want an error on line %s", want_at);
	else if (strncmp(err, want_at, strlen(want_at)) != 0 || !strstr(err, word))
		case_fail(c, "error \"%s\", want \"%s...%s\"", err, want_at, word);
	else if (strchr(err, '\n'))
		case_fail(c, "error is more than one line");
}

static void userlist_case(struct auth_case *c, void *arg)
{
	struct userlist *u = NULL;
	char err[USERLIST_ERR_MAX] = "";
	char *data;
	int rc;

	if (c->nfields != 2 || !c->has_bytes) {
		case_fail(c, "expected: V|P expect | \"file\"");
		return;
	}
	data = auth_case_copy(c->bytes, c->len);
	rc = userlist_parse("case", data, c->len,
			    c->fields[0][0] == 'P' ? USERLIST_PASSWORDS : USERLIST_VERIFIERS, &u, err,
			    sizeof(err));
	check_expect(c, c->fields[1], rc, userlist_count(u), err);
	/* An error never quotes a secret. */
	if (rc && (strstr(err, "wfPLwcE6nTWhTAmQ7tl2") || strstr(err, "45f2603610af")))
		case_fail(c, "error quotes the secret: %s", err);
	if ((rc == 0) != (u != NULL))
		case_fail(c, "result and list disagree");
	userlist_unref(u);
	free(data);
}

static void test_userlist_cases(void **state)
{
	failures = 0;
	assert_true(auth_cases_each("userlist_cases.txt", userlist_case, NULL) > 30);
	assert_int_equal(failures, 0);
}

#define VERIFIER_A                                                                            \
	"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:" \
	"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="
#define VERIFIER_B                                                                            \
	"SCRAM-SHA-256$10000:QUJDREVGR0hJSktMTU5PUFFSUw==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT" \
	"4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

static void test_userlist_lookup(void **state)
{
	static const char doc[] = "\"carol\" \"" VERIFIER_A "\"\n"
				  "\"alice\" \"" VERIFIER_A "\"\n"
				  "\"bob\" \"" VERIFIER_B "\"\n"
				  "\"dave\" \"" VERIFIER_A "\"\n";
	struct userlist *u;
	char err[USERLIST_ERR_MAX];

	assert_int_equal(userlist_parse("t", doc, strlen(doc), USERLIST_VERIFIERS, &u, err,
					sizeof(err)),
			 0);
	assert_int_equal(userlist_count(u), 4);
	assert_non_null(userlist_verifier(u, "alice"));
	assert_int_equal(userlist_verifier(u, "bob")->iterations, 10000);
	assert_int_equal(userlist_verifier(u, "bob")->salt_len, 19);
	assert_null(userlist_verifier(u, "eve"));
	assert_null(userlist_verifier(u, "Alice"));
	assert_null(userlist_verifier(u, ""));
	assert_null(userlist_password(u, "alice")); /* wrong kind */
	/* The mock exchange copies what most real entries look like. */
	assert_int_equal(userlist_common_iterations(u), 4096);
	assert_int_equal(userlist_common_salt_len(u), 16);
	assert_string_equal(userlist_name_at(u, 0), "alice");
	/* Everything lives in memory excluded from core dumps. */
	assert_true(secret_is_dontdump(userlist_verifier(u, "alice")));
	userlist_ref(u);
	userlist_unref(u);
	assert_non_null(userlist_verifier(u, "dave")); /* still held once */
	userlist_unref(u);
	assert_int_equal(userlist_common_iterations(NULL), 4096);
	assert_null(userlist_verifier(NULL, "x"));

	static const char pw[] = "\"app\" \"s3cr\"\"et\"\n";

	assert_int_equal(userlist_parse("t", pw, strlen(pw), USERLIST_PASSWORDS, &u, err,
					sizeof(err)),
			 0);
	assert_string_equal(userlist_password(u, "app"), "s3cr\"et");
	assert_true(secret_is_dontdump(userlist_password(u, "app")));
	userlist_unref(u);
}

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(chmod(path, mode), 0);
}

/* A tampered or careless deployment: the loader refuses files others can read or write. */
static void test_file_checks(void **state)
{
	char dir[] = "/tmp/pgw-auth-XXXXXX", path[128], err[USERLIST_ERR_MAX];
	static const char doc[] = "\"alice\" \"" VERIFIER_A "\"\n";
	struct userlist *u;
	struct certmap *m;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/users", dir);
	write_file(path, doc, 0600);
	assert_int_equal(userlist_load(path, USERLIST_VERIFIERS, &u, err, sizeof(err)), 0);
	assert_int_equal(userlist_count(u), 1);
	userlist_unref(u);
	write_file(path, doc, 0400);
	assert_int_equal(userlist_load(path, USERLIST_VERIFIERS, &u, err, sizeof(err)), 0);
	userlist_unref(u);
	static const mode_t bad[] = {0644, 0604, 0660, 0606, 0620, 0602, 0700 | 0040};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_file(path, doc, bad[i]);
		if (geteuid() == 0 && bad[i] == (0700 | 0040))
			continue; /* root-owned 0740: group read is allowed, like 0640 */
		assert_int_equal(userlist_load(path, USERLIST_VERIFIERS, &u, err, sizeof(err)), -1);
		assert_null(u);
		assert_non_null(strstr(err, "too open"));
		assert_int_equal(strncmp(err, path, strlen(path)), 0);
	}
	/* Root may let its group read (0640), as PostgreSQL allows for its key file. */
	if (geteuid() == 0) {
		write_file(path, doc, 0640);
		assert_int_equal(userlist_load(path, USERLIST_VERIFIERS, &u, err, sizeof(err)), 0);
		userlist_unref(u);
		/* Owned by someone else: refused. */
		assert_int_equal(chown(path, 65534, 65534), 0);
		write_file(path, doc, 0600);
		assert_int_equal(userlist_load(path, USERLIST_VERIFIERS, &u, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "owned by uid 65534"));
	}
	/* Not a regular file; missing. */
	assert_int_equal(userlist_load(dir, USERLIST_VERIFIERS, &u, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file"));
	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(userlist_load(path, USERLIST_VERIFIERS, &u, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "No such file"));
	/* The cert map holds no secret: others may read it, never write it. */
	snprintf(path, sizeof(path), "%s/map", dir);
	write_file(path, "pgwarden a b\n", 0644);
	assert_int_equal(certmap_load(path, &m, err, sizeof(err)), 0);
	assert_int_equal(certmap_count(m), 1);
	certmap_free(m);
	write_file(path, "pgwarden a b\n", 0666);
	assert_int_equal(certmap_load(path, &m, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "too open"));
	unlink(path);
	snprintf(path, sizeof(path), "%s/users", dir);
	unlink(path);
	rmdir(dir);
}

/* ---- cert map ---------------------------------------------------------------------------- */

static struct certmap *match_map;

static void certmap_case(struct auth_case *c, void *arg)
{
	if (strcmp(c->fields[0], "load") == 0) {
		struct certmap *m = NULL;
		char err[CERTMAP_ERR_MAX] = "";
		char *data;
		int rc;

		if (c->nfields != 2 || !c->has_bytes) {
			case_fail(c, "expected: load expect | \"file\"");
			return;
		}
		data = auth_case_copy(c->bytes, c->len);
		rc = certmap_parse("case", data, c->len, &m, err, sizeof(err));
		check_expect(c, c->fields[1], rc, certmap_count(m), err);
		certmap_free(m);
		free(data);
		return;
	}
	if (strcmp(c->fields[0], "match") == 0 && c->nfields == 5) {
		bool want = strcmp(c->fields[4], "yes") == 0;

		if (certmap_allows(match_map, c->fields[1], c->fields[2], c->fields[3]) != want)
			case_fail(c, "%s %s as %s: want %s", c->fields[1], c->fields[2], c->fields[3],
				  c->fields[4]);
		return;
	}
	case_fail(c, "unknown case");
}

static void test_certmap_cases(void **state)
{
	char err[CERTMAP_ERR_MAX];
	FILE *f = fopen("data/auth/certmap_match.conf", "r");
	char buf[4096];
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	if (certmap_parse("certmap_match.conf", buf, n, &match_map, err, sizeof(err)))
		fail_msg("%s", err);
	failures = 0;
	assert_true(auth_cases_each("certmap_cases.txt", certmap_case, NULL) > 30);
	assert_int_equal(failures, 0);
	/* Identities too long, or absent, never match. */
	{
		char longid[CERTMAP_IDENTITY_MAX + 2];

		memset(longid, 'a', sizeof(longid) - 1);
		longid[sizeof(longid) - 1] = '\0';
		assert_false(certmap_allows(match_map, "pgwarden", longid, "a"));
		assert_false(certmap_allows(match_map, "pgwarden", NULL, "alice"));
		assert_false(certmap_allows(NULL, "pgwarden", "alice@example.com", "alice"));
	}
	certmap_free(match_map);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_userlist_cases),
		cmocka_unit_test(test_userlist_lookup),
		cmocka_unit_test(test_file_checks),
		cmocka_unit_test(test_certmap_cases),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
