/*
 * fuzz_scram_server: what a hostile client can send the relay's SCRAM server (terminate
 * mode) and the passthrough observer: a client-first and a client-final, split from the
 * input at its first NUL (so the fuzzer can shape both), against a real verifier, with and
 * without channel binding offered.
 *
 * Invariants (abort on violation):
 *   - no crash, no read past the exact-size copies (ASan);
 *   - every status is one scram_error() knows, with a five-character SQLSTATE;
 *   - the exchange never succeeds (the fuzzer does not know the password), and a failed
 *     exchange recovers no ClientKey;
 *   - a client-first the parser accepts has its nonce inside the message and printable.
 */
#include "auth/scram.h"

#include "fuzz_check.h"

#include <string.h>

static struct scram_verifier verifier;

static void check_status(int rc)
{
	CHECK(rc <= 0 && rc >= SCRAM_STATUS_MIN);
	CHECK(strlen(scram_error(rc)->sqlstate) == 5);
}

static void run(const uint8_t *first, size_t flen, const uint8_t *final, size_t fin_len,
		bool plus)
{
	static const uint8_t hash[32] = {7};
	struct scram_server_params p = {.verifier = &verifier, .user = "fuzz",
					.cbind_data = plus ? hash : NULL, .cbind_len = plus ? 32 : 0,
					.server_nonce = "fuzzservernonce0"};
	struct scram_server s;
	struct scram_client_first cf;
	char out[SCRAM_MESSAGE_MAX];
	size_t n;
	int rc;

	rc = scram_parse_client_first((const char *)first, flen, &cf);
	check_status(rc);
	if (rc == SCRAM_OK) {
		CHECK(cf.nonce >= (const char *)first && cf.nonce + cf.nonce_len <= (const char *)first + flen);
		CHECK(scram_printable(cf.nonce, cf.nonce_len));
	}
	CHECK(scram_server_init(&s, &p) == SCRAM_OK);
	rc = scram_server_first(&s, plus && flen && first[0] == 'p' ? SCRAM_MECHANISM_PLUS : SCRAM_MECHANISM,
				first, flen, out, sizeof(out), &n);
	check_status(rc);
	if (rc == SCRAM_OK) {
		rc = scram_server_final(&s, final, fin_len, out, sizeof(out), &n);
		check_status(rc);
		CHECK(rc != SCRAM_OK);
	}
	CHECK(scram_server_client_key(&s) == NULL);
	scram_server_clear(&s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, 0, size);
	size_t flen = nul ? (size_t)(nul - data) : size;
	size_t fin_len = nul ? size - flen - 1 : 0;
	uint8_t *first, *final;
	struct scram_client_final cf;
	struct scram_verifier v;

	if (!verifier.iterations &&
	    scram_verifier_from_password("pencil", (const uint8_t *)"0123456789abcdef", 16, 4096,
					 &verifier) != SCRAM_OK)
		abort();
	first = malloc(flen ? flen : 1);
	final = malloc(fin_len ? fin_len : 1);
	if (!first || !final)
		abort();
	memcpy(first, data, flen);
	if (fin_len)
		memcpy(final, nul + 1, fin_len);
	run(first, flen, final, fin_len, false);
	run(first, flen, final, fin_len, true);
	/* The other parsers a client's bytes reach. */
	check_status(scram_parse_client_final((const char *)final, fin_len, &cf));
	check_status(scram_verifier_parse((const char *)first, flen, &v));
	free(first);
	free(final);
	return 0;
}
