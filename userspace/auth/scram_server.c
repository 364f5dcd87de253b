/*
 * scram_server: the relay as SCRAM server to a client (terminate mode), see scram.h.
 *
 * Follows PostgreSQL's auth-scram.c: the username inside the exchange is ignored (the
 * StartupMessage's is the one that counts); an unknown user gets a mock exchange whose salt
 * is derived from the user name and a server-side secret, so it is the same on every try
 * and indistinguishable from a real one; the proof is always computed and compared before
 * the mock/doomed flag is looked at, so every failure costs the same.
 */
#include "auth/scram.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

/* Mock salt: HMAC-SHA-256(secret, "pgwarden mock salt" || user), cut to the length real
 * verifiers use. Keyed, so nobody without the secret can tell it from a real salt. */
static int mock_salt(const struct scram_server_params *p, uint8_t *salt, size_t salt_len)
{
	uint8_t key[SCRAM_KEY_LEN], mac[SCRAM_KEY_LEN];
	int rc;

	/* The secret may be any length: hash it to an HMAC key of ours. */
	rc = scram_hash(p->mock_secret, p->mock_secret_len, key);
	if (!rc)
		rc = scram_hmac(key, "pgwarden mock salt", 18, p->user, strlen(p->user), NULL, 0,
				mac);
	if (!rc)
		memcpy(salt, mac, salt_len);
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(mac, sizeof(mac));
	return rc;
}

int scram_server_init(struct scram_server *s, const struct scram_server_params *p)
{
	size_t n;

	memset(s, 0, sizeof(*s));
	s->state = SCRAM_SERVER_FAILED;
	s->doomed = p->doomed || !p->verifier;
	if (p->verifier) {
		s->iterations = p->verifier->iterations;
		s->salt_len = p->verifier->salt_len;
		memcpy(s->salt, p->verifier->salt, s->salt_len);
		memcpy(s->stored_key, p->verifier->stored_key, SCRAM_KEY_LEN);
		memcpy(s->server_key, p->verifier->server_key, SCRAM_KEY_LEN);
	} else {
		if (!p->mock_secret || !p->user || p->mock_salt_len < SCRAM_SALT_MIN_LEN ||
		    p->mock_salt_len > SCRAM_KEY_LEN || p->mock_iterations < SCRAM_ITERATIONS_MIN ||
		    p->mock_iterations > SCRAM_ITERATIONS_MAX)
			return SCRAM_ERR_INTERNAL;
		s->iterations = p->mock_iterations;
		s->salt_len = p->mock_salt_len;
		if (mock_salt(p, s->salt, s->salt_len))
			return SCRAM_ERR_INTERNAL;
		/* The keys of a mock exchange are never matched by anything: random ones make
		 * its proof check cost exactly what a real one costs. */
		if (RAND_bytes(s->stored_key, SCRAM_KEY_LEN) != 1 ||
		    RAND_bytes(s->server_key, SCRAM_KEY_LEN) != 1)
			return SCRAM_ERR_INTERNAL;
	}
	if (p->cbind_data) {
		if (p->cbind_len == 0 || p->cbind_len > SCRAM_CBIND_DATA_MAX)
			return SCRAM_ERR_INTERNAL;
		memcpy(s->cbind_data, p->cbind_data, p->cbind_len);
		s->cbind_len = p->cbind_len;
		s->plus_offered = true;
	}
	if (p->server_nonce) {
		n = strlen(p->server_nonce);
		if (n < SCRAM_NONCE_MIN || n > SCRAM_NONCE_MAX || !scram_printable(p->server_nonce, n))
			return SCRAM_ERR_INTERNAL;
		memcpy(s->server_nonce, p->server_nonce, n + 1);
	} else if (scram_random_nonce(s->server_nonce)) {
		return SCRAM_ERR_INTERNAL;
	}
	s->state = SCRAM_SERVER_INIT;
	return SCRAM_OK;
}

const uint8_t *scram_server_mechanisms(const struct scram_server *s, uint32_t *len)
{
	static const char both[] = SCRAM_MECHANISM_PLUS "\0" SCRAM_MECHANISM "\0";
	static const char plain[] = SCRAM_MECHANISM "\0";

	/* sizeof counts the literal's own final NUL: the list's terminating empty string. */
	*len = s->plus_offered ? sizeof(both) : sizeof(plain);
	return (const uint8_t *)(s->plus_offered ? both : plain);
}

static int fail(struct scram_server *s, int status)
{
	s->state = SCRAM_SERVER_FAILED;
	return status;
}

int scram_server_first(struct scram_server *s, const char *mechanism, const uint8_t *data,
		       size_t len, char *out, size_t cap, size_t *out_len)
{
	struct scram_client_first cf;
	char salt[SCRAM_B64_LEN(SCRAM_SALT_MAX_LEN) + 1];
	int rc, n;

	if (s->state != SCRAM_SERVER_INIT)
		return fail(s, SCRAM_ERR_STATE);
	if (mechanism && strcmp(mechanism, SCRAM_MECHANISM_PLUS) == 0 && s->plus_offered)
		s->plus_selected = true;
	else if (!mechanism || strcmp(mechanism, SCRAM_MECHANISM) != 0)
		return fail(s, SCRAM_ERR_MECHANISM);
	if (!data)
		return fail(s, SCRAM_ERR_MALFORMED);
	rc = scram_parse_client_first((const char *)data, len, &cf);
	if (rc)
		return fail(s, rc);
	/* The gs2 flag must agree with the mechanism, and "y" is a downgrade when we offered
	 * binding (PostgreSQL's rules). */
	if (s->plus_selected != (cf.cbind_flag == 'p'))
		return fail(s, SCRAM_ERR_CBIND_FLAG);
	if (cf.cbind_flag == 'y' && s->plus_offered)
		return fail(s, SCRAM_ERR_CBIND_DOWNGRADE);
	s->cbind_flag = cf.cbind_flag;
	memcpy(s->gs2, data, cf.gs2_len);
	s->gs2_len = cf.gs2_len;
	memcpy(s->client_first_bare, cf.bare, cf.bare_len);
	s->client_first_bare_len = cf.bare_len;
	if (scram_b64_encode(s->salt, s->salt_len, salt, sizeof(salt)) < 0)
		return fail(s, SCRAM_ERR_INTERNAL);
	n = snprintf(s->server_first, sizeof(s->server_first), "r=%.*s%s,s=%s,i=%u",
		     (int)cf.nonce_len, cf.nonce, s->server_nonce, salt, s->iterations);
	if (n < 0 || (size_t)n >= sizeof(s->server_first) || (size_t)n >= cap)
		return fail(s, SCRAM_ERR_BUFFER);
	s->server_first_len = (size_t)n;
	memcpy(out, s->server_first, (size_t)n);
	*out_len = (size_t)n;
	s->state = SCRAM_SERVER_FIRST_SENT;
	return SCRAM_OK;
}

/* r= of client-final is exactly the client's nonce followed by ours: the one in our
 * server-first ("r=" then the nonce, up to the first ','). */
static bool final_nonce_ok(const struct scram_server *s, const struct scram_client_final *cf)
{
	const char *nonce = s->server_first + 2;
	size_t n = strcspn(nonce, ",");

	return cf->nonce_len == n && memcmp(cf->nonce, nonce, n) == 0;
}

int scram_server_final(struct scram_server *s, const uint8_t *data, size_t len, char *out,
		       size_t cap, size_t *out_len)
{
	struct scram_client_final cf;
	uint8_t signature[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	char b64[SCRAM_B64_LEN(SCRAM_KEY_LEN) + 1];
	const char *msg = (const char *)data;
	bool proof_ok;
	int rc;

	if (s->state != SCRAM_SERVER_FIRST_SENT)
		return fail(s, SCRAM_ERR_STATE);
	if (!data)
		return fail(s, SCRAM_ERR_MALFORMED);
	rc = scram_parse_client_final(msg, len, &cf);
	if (rc)
		return fail(s, rc);
	rc = scram_check_cbind(s->gs2, s->gs2_len, &cf, s->plus_selected ? s->cbind_data : NULL,
			       s->cbind_len);
	if (rc)
		return fail(s, rc);
	if (!final_nonce_ok(s, &cf))
		return fail(s, SCRAM_ERR_NONCE_MISMATCH);
	/* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); H(ClientKey) = StoredKey. */
	rc = scram_hmac(s->stored_key, s->client_first_bare, s->client_first_bare_len,
			s->server_first, s->server_first_len, msg, cf.without_proof_len, signature);
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		client_key[i] = cf.proof[i] ^ signature[i];
	if (!rc)
		rc = scram_hash(client_key, SCRAM_KEY_LEN, stored);
	if (rc) {
		OPENSSL_cleanse(client_key, sizeof(client_key));
		return fail(s, SCRAM_ERR_INTERNAL);
	}
	proof_ok = CRYPTO_memcmp(stored, s->stored_key, SCRAM_KEY_LEN) == 0;
	if (!proof_ok || s->doomed) {
		OPENSSL_cleanse(client_key, sizeof(client_key));
		if (cap > strlen("e=invalid-proof")) {
			memcpy(out, "e=invalid-proof", 15);
			*out_len = 15;
		}
		return fail(s, SCRAM_ERR_AUTH_FAILED);
	}
	memcpy(s->client_key, client_key, SCRAM_KEY_LEN);
	OPENSSL_cleanse(client_key, sizeof(client_key));
	rc = scram_hmac(s->server_key, s->client_first_bare, s->client_first_bare_len,
			s->server_first, s->server_first_len, msg, cf.without_proof_len, signature);
	if (rc || scram_b64_encode(signature, SCRAM_KEY_LEN, b64, sizeof(b64)) < 0)
		return fail(s, SCRAM_ERR_INTERNAL);
	if (cap < 2 + strlen(b64))
		return fail(s, SCRAM_ERR_BUFFER);
	memcpy(out, "v=", 2);
	memcpy(out + 2, b64, strlen(b64));
	*out_len = 2 + strlen(b64);
	s->state = SCRAM_SERVER_DONE;
	return SCRAM_OK;
}

const uint8_t *scram_server_client_key(const struct scram_server *s)
{
	return s->state == SCRAM_SERVER_DONE ? s->client_key : NULL;
}

void scram_server_clear(struct scram_server *s)
{
	OPENSSL_cleanse(s, sizeof(*s));
	s->state = SCRAM_SERVER_FAILED;
}
