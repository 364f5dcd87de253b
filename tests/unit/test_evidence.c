/*
 * test_evidence: signing and verifying compliance evidence reports. Hostile first: every
 * way to pass off a changed report, another report's signature, another key's signature
 * or a hand-made signature file must fail with a message that says which.
 */
#include "audit/audit_sign.h"
#include "evidence/evidence.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "case_file.h"

static const char report[] =
	"{\"format\": \"pgwarden-evidence/1\", \"kind\": \"test-run\",\n"
	" \"summary\": {\"controls\": 2, \"proven\": 1, \"not_proven\": 1},\n"
	" \"controls\": [{\"id\": \"NIST-AU-9\", \"status\": \"proven\"},\n"
	"              {\"id\": \"NIST-SC-8\", \"status\": \"not proven\"}]}\n";

struct keys {
	EVP_PKEY *signer, *other;
};

static int setup(void **state)
{
	static struct keys k;

	k.signer = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	k.other = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	*state = &k;
	return k.signer && k.other ? 0 : -1;
}

static int teardown(void **state)
{
	struct keys *k = *state;

	EVP_PKEY_free(k->signer);
	EVP_PKEY_free(k->other);
	return 0;
}

static char *sign_text(EVP_PKEY *key, const char *text)
{
	char err[256], *sig = NULL;

	assert_int_equal(evidence_sign(key, text, strlen(text), &sig, err, sizeof(err)), 0);
	return sig;
}

static enum evidence_verdict verify(const char *text, size_t len, const char *sig,
				    EVP_PKEY *trusted, char *msg, size_t n)
{
	EVP_PKEY *keys[1] = {trusted};

	return evidence_verify(text, len, sig, strlen(sig), keys, trusted ? 1 : 0, NULL, msg, n);
}

static void test_signed_report_verifies(void **state)
{
	struct keys *k = *state;
	char msg[512], id[AUDIT_KEY_ID_HEXLEN + 1];
	char *sig = sign_text(k->signer, report);
	EVP_PKEY *keys[2] = {k->other, k->signer};

	assert_int_equal(verify(report, strlen(report), sig, k->signer, msg, sizeof(msg)),
			 EVIDENCE_VALID);
	assert_non_null(strstr(msg, "unchanged since it was signed"));
	/* Any of several trusted keys. */
	assert_int_equal(evidence_verify(report, strlen(report), sig, strlen(sig), keys, 2, id,
					 msg, sizeof(msg)),
			 EVIDENCE_VALID);
	assert_int_equal(strlen(id), AUDIT_KEY_ID_HEXLEN);
	/* Without a key: the signature holds, but nothing vouches for its key. */
	assert_int_equal(verify(report, strlen(report), sig, NULL, msg, sizeof(msg)),
			 EVIDENCE_UNVOUCHED);
	assert_non_null(strstr(msg, "no public key was given"));
	free(sig);
}

/* Every single byte of the report changed, one at a time: each change is caught. */
static void test_every_changed_byte_fails(void **state)
{
	struct keys *k = *state;
	char *sig = sign_text(k->signer, report), copy[sizeof(report)], msg[512];

	for (size_t i = 0; i < strlen(report); i++) {
		memcpy(copy, report, sizeof(report));
		copy[i] ^= 0x01;
		assert_int_equal(verify(copy, strlen(report), sig, k->signer, msg, sizeof(msg)),
				 EVIDENCE_INVALID);
		assert_non_null(strstr(msg, "changed after it was signed"));
	}
	/* Cut short, or with a byte added at the end. */
	assert_int_equal(verify(report, strlen(report) - 1, sig, k->signer, msg, sizeof(msg)),
			 EVIDENCE_INVALID);
	memcpy(copy, report, sizeof(report));
	assert_int_equal(verify(copy, strlen(report) + 1, sig, k->signer, msg, sizeof(msg)),
			 EVIDENCE_INVALID);
	free(sig);
}

/* Another report's signature file, whole or just its signature field. */
static void test_swapped_signature_fails(void **state)
{
	struct keys *k = *state;
	static const char second[] = "{\"format\": \"pgwarden-evidence/1\", \"kind\": \"live\"}";
	char *sig = sign_text(k->signer, report), *sig2 = sign_text(k->signer, second), msg[512];
	json_t *a = json_loads(sig, 0, NULL), *b = json_loads(sig2, 0, NULL);
	char *mixed;

	assert_int_equal(verify(report, strlen(report), sig2, k->signer, msg, sizeof(msg)),
			 EVIDENCE_INVALID);
	assert_non_null(strstr(msg, "another report's"));
	/* The digest of this report, the signature of the other: the signature is wrong. */
	json_object_set(a, "signature", json_object_get(b, "signature"));
	mixed = json_dumps(a, 0);
	assert_int_equal(verify(report, strlen(report), mixed, k->signer, msg, sizeof(msg)),
			 EVIDENCE_INVALID);
	assert_non_null(strstr(msg, "does not verify"));
	free(mixed);
	json_decref(a);
	json_decref(b);
	free(sig);
	free(sig2);
}

/* Signed by another key, named honestly or passed off as the trusted one. */
static void test_other_key_fails(void **state)
{
	struct keys *k = *state;
	char *sig = sign_text(k->other, report), *good = sign_text(k->signer, report), msg[512];
	json_t *forged = json_loads(sig, 0, NULL), *g = json_loads(good, 0, NULL);
	char *text;

	assert_int_equal(verify(report, strlen(report), sig, k->signer, msg, sizeof(msg)),
			 EVIDENCE_INVALID);
	assert_non_null(strstr(msg, "none of the keys given"));
	/* The other key's signature under the trusted key's name and id. */
	json_object_set(forged, "public_key", json_object_get(g, "public_key"));
	json_object_set(forged, "key_id", json_object_get(g, "key_id"));
	text = json_dumps(forged, 0);
	assert_int_equal(verify(report, strlen(report), text, k->signer, msg, sizeof(msg)),
			 EVIDENCE_INVALID);
	assert_non_null(strstr(msg, "does not verify"));
	free(text);
	json_decref(forged);
	json_decref(g);
	free(sig);
	free(good);
}

/* An audit checkpoint's signature (the same key, another message) is no report's. */
static void test_domain_separation(void **state)
{
	struct keys *k = *state;
	uint8_t raw[AUDIT_SIG_LEN], pub[AUDIT_PUBKEY_LEN];
	char *sig = sign_text(k->signer, report), hex[2 * AUDIT_SIG_LEN + 1], msg[512];
	unsigned char md[32];
	unsigned int mdlen;
	json_t *o = json_loads(sig, 0, NULL);
	char *text;

	/* A signature over the bare digest, as a careless signer might make. */
	assert_true(EVP_Digest(report, strlen(report), md, &mdlen, EVP_sha256(), NULL));
	assert_int_equal(audit_sign(k->signer, md, mdlen, raw), 0);
	assert_int_equal(audit_key_raw_public(k->signer, pub), 0);
	for (size_t i = 0; i < sizeof(raw); i++)
		sprintf(hex + 2 * i, "%02x", raw[i]);
	json_object_set_new(o, "signature", json_string(hex));
	text = json_dumps(o, 0);
	assert_int_equal(verify(report, strlen(report), text, k->signer, msg, sizeof(msg)),
			 EVIDENCE_INVALID);
	free(text);
	json_decref(o);
	free(sig);
}

static void test_not_a_report_is_not_signed(void **state)
{
	struct keys *k = *state;
	static const char *const bad[] = {"", "{}", "[]", "{\"format\": \"pgwarden-evidence/2\"}",
					  "{\"format\": 1}", "not json"};
	char err[256], *sig = (char *)"untouched";

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(evidence_sign(k->signer, bad[i], strlen(bad[i]), &sig, err,
					       sizeof(err)),
				 -EINVAL);
		assert_null(sig);
		assert_int_equal(evidence_report_check(bad[i], strlen(bad[i]), err, sizeof(err)),
				 -EINVAL);
	}
}

static void substitute(const char *in, const char *const from[], const char *const to[],
		       size_t nsub, char *out, size_t cap)
{
	size_t n = 0;

	while (*in && n + 1 < cap) {
		size_t s;

		for (s = 0; s < nsub; s++)
			if (strncmp(in, from[s], strlen(from[s])) == 0)
				break;
		if (s < nsub) {
			n += (size_t)snprintf(out + n, cap - n, "%s", to[s]);
			in += strlen(from[s]);
		} else {
			out[n++] = *in++;
		}
	}
	out[n < cap ? n : cap - 1] = '\0';
}

/* data/evidence/signature_cases.txt: hand-made signature files and what is said of each. */
static void test_signature_file_cases(void **state)
{
	struct keys *k = *state;
	char *sig = sign_text(k->signer, report), line[2048], text[2048], msg[512], upper[160];
	json_t *o = json_loads(sig, 0, NULL);
	const char *from[] = {"{id}", "{pub}", "{sha}", "{sig}", "{SIG}"};
	const char *to[5];
	FILE *f = fopen("data/evidence/signature_cases.txt", "r");
	unsigned cases = 0;

	assert_non_null(f);
	to[0] = json_string_value(json_object_get(o, "key_id"));
	to[1] = json_string_value(json_object_get(o, "public_key"));
	to[2] = json_string_value(json_object_get(o, "report_sha256"));
	to[3] = json_string_value(json_object_get(o, "signature"));
	snprintf(upper, sizeof(upper), "%s", to[3]);
	for (char *p = upper; *p; p++)
		*p = (char)toupper((unsigned char)*p);
	to[4] = upper;
	while (fgets(line, sizeof(line), f)) {
		char *arrow = strstr(line, "→"), *input, *want;
		enum evidence_verdict v;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		assert_non_null(arrow);
		*arrow = '\0';
		input = trim(line);
		want = trim(arrow + strlen("→"));
		substitute(input, from, to, 5, text, sizeof(text));
		v = verify(report, strlen(report), text, k->signer, msg, sizeof(msg));
		if (strcmp(want, "OK") == 0) {
			assert_int_equal(v, EVIDENCE_VALID);
		} else {
			if (v != EVIDENCE_INVALID || !strstr(msg, want))
				fail_msg("case %s: verdict %d, message \"%s\", want \"%s\"", input, v,
					 msg, want);
		}
		cases++;
	}
	fclose(f);
	assert_true(cases >= 15);
	json_decref(o);
	free(sig);
}

static void test_oversized_signature_refused(void **state)
{
	struct keys *k = *state;
	size_t n = EVIDENCE_SIG_MAX + 1;
	char *big = malloc(n + 1), msg[512];
	EVP_PKEY *keys[1] = {k->signer};

	assert_non_null(big);
	memset(big, ' ', n);
	big[n] = '\0';
	assert_int_equal(evidence_verify(report, strlen(report), big, n, keys, 1, NULL, msg,
					 sizeof(msg)),
			 EVIDENCE_INVALID);
	assert_non_null(strstr(msg, "not a signature"));
	free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_signed_report_verifies),
		cmocka_unit_test(test_every_changed_byte_fails),
		cmocka_unit_test(test_swapped_signature_fails),
		cmocka_unit_test(test_other_key_fails),
		cmocka_unit_test(test_domain_separation),
		cmocka_unit_test(test_not_a_report_is_not_signed),
		cmocka_unit_test(test_signature_file_cases),
		cmocka_unit_test(test_oversized_signature_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
