/*
 * fuzz_evidence_sig: an evidence signature file checked against a fixed report.
 *
 * Invariants (abort on violation):
 *   - no crash, no read past the exact-size copy (ASan), no leak (LSan);
 *   - a random file never verifies as VALID: the fixed key made no signature here, so a
 *     VALID verdict would be a forgery;
 *   - the message is one line.
 */
#include "evidence/evidence.h"

#include "fuzz_check.h"

#include <openssl/evp.h>
#include <string.h>

static const char report[] = "{\"format\": \"pgwarden-evidence/1\", \"kind\": \"fuzz\"}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static EVP_PKEY *key;
	char *sig = malloc(size ? size : 1), msg[512];
	enum evidence_verdict v;

	if (!key)
		key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!sig || !key)
		abort();
	memcpy(sig, data, size);
	v = evidence_verify(report, sizeof(report) - 1, sig, size, &key, 1, NULL, msg,
			    sizeof(msg));
	CHECK(v != EVIDENCE_VALID);
	CHECK(!strchr(msg, '\n'));
	free(sig);
	return 0;
}
