/*
 * fuzz_scram_client: what a hostile server can send the relay as SCRAM client (upstream
 * login) and the passthrough observer: a server-first and a server-final, split at the
 * first NUL, after a fixed client-first.
 *
 * Invariants (abort on violation):
 *   - no crash, no read past the exact-size copies (ASan);
 *   - statuses are known ones; the exchange never verifies (the fuzzer does not know the
 *     ServerKey);
 *   - an accepted server-first extends the client's nonce, has an iteration count inside
 *     the bounds and a salt of 8..64 bytes.
 */
#include "auth/scram.h"

#include "fuzz_check.h"

#include <string.h>

#define CLIENT_NONCE "fuzzclientnonce123456789"

static void check_status(int rc)
{
	CHECK(rc <= 0 && rc >= SCRAM_STATUS_MIN);
	CHECK(strlen(scram_error(rc)->sqlstate) == 5);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t mechs[] = SCRAM_MECHANISM "\0";
	const uint8_t *nul = memchr(data, 0, size);
	size_t flen = nul ? (size_t)(nul - data) : size;
	size_t fin_len = nul ? size - flen - 1 : 0;
	struct scram_client_params p = {.password = "pencil", .client_nonce = CLIENT_NONCE};
	struct scram_server_first sf;
	struct scram_server_final sfin;
	struct scram_client c;
	char out[SCRAM_MESSAGE_MAX];
	const char *mech;
	uint8_t *first, *final;
	size_t n;
	int rc;

	first = malloc(flen ? flen : 1);
	final = malloc(fin_len ? fin_len : 1);
	if (!first || !final)
		abort();
	memcpy(first, data, flen);
	if (fin_len)
		memcpy(final, nul + 1, fin_len);
	rc = scram_parse_server_first((const char *)first, flen, CLIENT_NONCE,
				      strlen(CLIENT_NONCE), &sf);
	check_status(rc);
	if (rc == SCRAM_OK) {
		CHECK(sf.nonce_len >= strlen(CLIENT_NONCE) + SCRAM_NONCE_MIN);
		CHECK(memcmp(sf.nonce, CLIENT_NONCE, strlen(CLIENT_NONCE)) == 0);
		CHECK(sf.iterations >= SCRAM_ITERATIONS_MIN && sf.iterations <= SCRAM_ITERATIONS_MAX);
		CHECK(sf.salt_len >= SCRAM_SALT_MIN_LEN && sf.salt_len <= SCRAM_SALT_MAX_LEN);
	}
	check_status(scram_parse_server_final((const char *)final, fin_len, &sfin));
	/* The whole client: PBKDF2 only runs for a server-first that parsed, and the fuzzer's
	 * iteration counts are capped by the parser (at most 1e6: slow, but bounded). Keep
	 * the fuzzer fast by skipping counts above 8192. */
	if (rc == SCRAM_OK && sf.iterations <= 8192) {
		CHECK(scram_client_init(&c, &p) == SCRAM_OK);
		CHECK(scram_client_first(&c, mechs, sizeof(mechs), &mech, out, sizeof(out), &n) == 0);
		rc = scram_client_final(&c, first, flen, out, sizeof(out), &n);
		check_status(rc);
		if (rc == SCRAM_OK) {
			rc = scram_client_verify(&c, final, fin_len);
			check_status(rc);
			CHECK(rc != SCRAM_OK);
		}
		scram_client_clear(&c);
	}
	free(first);
	free(final);
	return 0;
}
