/*
 * scram_client: the relay as SCRAM client to a PostgreSQL server (see scram.h).
 *
 * With a password it does what libpq does. With a ClientKey recovered from the client's
 * proof (terminate mode, PgBouncer's trick) it never needs the password: the proof is
 * ClientKey XOR HMAC(H(ClientKey), AuthMessage), which is valid only when the server's
 * verifier has the same salt and iteration count as the one the key came from, so those
 * are checked first. Either way the server must prove it knows ServerKey before the login
 * counts (mutual authentication).
 */
#include "auth/scram.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <string.h>

int scram_client_init(struct scram_client *c, const struct scram_client_params *p)
{
	size_t n;

	memset(c, 0, sizeof(*c));
	c->state = SCRAM_CLIENT_FAILED;
	if (p->password) {
		n = strlen(p->password);
		if (n > SCRAM_PASSWORD_MAX)
			return SCRAM_ERR_NO_CREDENTIAL;
		memcpy(c->password, p->password, n + 1);
		c->use_password = true;
	} else if (p->client_key && p->verifier) {
		memcpy(c->client_key, p->client_key, SCRAM_KEY_LEN);
		memcpy(c->server_key, p->verifier->server_key, SCRAM_KEY_LEN);
		c->expect_params = true;
		c->expect_iterations = p->verifier->iterations;
		c->expect_salt_len = p->verifier->salt_len;
		memcpy(c->expect_salt, p->verifier->salt, p->verifier->salt_len);
	} else {
		return SCRAM_ERR_NO_CREDENTIAL;
	}
	if (p->tls && p->cbind_data) {
		if (p->cbind_len == 0 || p->cbind_len > SCRAM_CBIND_DATA_MAX)
			return SCRAM_ERR_INTERNAL;
		memcpy(c->cbind_data, p->cbind_data, p->cbind_len);
		c->cbind_len = p->cbind_len;
	}
	c->cbind_flag = p->tls ? 'y' : 'n';
	if (p->client_nonce) {
		n = strlen(p->client_nonce);
		if (n < SCRAM_NONCE_MIN || n > SCRAM_NONCE_MAX || !scram_printable(p->client_nonce, n))
			return SCRAM_ERR_INTERNAL;
		memcpy(c->nonce, p->client_nonce, n + 1);
	} else if (scram_random_nonce(c->nonce)) {
		return SCRAM_ERR_INTERNAL;
	}
	c->state = SCRAM_CLIENT_INIT;
	return SCRAM_OK;
}

static int fail(struct scram_client *c, int status)
{
	c->state = SCRAM_CLIENT_FAILED;
	return status;
}

int scram_client_first(struct scram_client *c, const uint8_t *mechs, size_t mechs_len,
		       const char **mechanism, char *out, size_t cap, size_t *out_len)
{
	bool plain = false, plus = false;
	size_t off = 0;
	int n;

	if (c->state != SCRAM_CLIENT_INIT)
		return fail(c, SCRAM_ERR_STATE);
	/* The list proto_read_auth_data gives: NUL-terminated names, then an empty one. */
	while (off < mechs_len && mechs[off]) {
		const char *name = (const char *)mechs + off;
		size_t len = strnlen(name, mechs_len - off);

		if (len == mechs_len - off)
			return fail(c, SCRAM_ERR_MALFORMED);
		plain |= strcmp(name, SCRAM_MECHANISM) == 0;
		plus |= strcmp(name, SCRAM_MECHANISM_PLUS) == 0;
		off += len + 1;
	}
	if (plus && c->cbind_flag == 'y' && c->cbind_len) {
		c->plus = true;
		c->cbind_flag = 'p';
	} else if (plus && c->cbind_flag == 'y') {
		/* TLS, and the server can bind, but we do not know its certificate's hash: "y"
		 * would be refused as a downgrade, so say we cannot bind at all. */
		c->cbind_flag = 'n';
	}
	if (!c->plus && !plain)
		return fail(c, SCRAM_ERR_MECHANISM);
	if (c->plus)
		n = snprintf(c->client_first, sizeof(c->client_first), "p=" SCRAM_CBIND_TYPE ",,n=,r=%s",
			     c->nonce);
	else
		n = snprintf(c->client_first, sizeof(c->client_first), "%c,,n=,r=%s", c->cbind_flag,
			     c->nonce);
	if (n < 0 || (size_t)n >= sizeof(c->client_first) || (size_t)n > cap)
		return fail(c, SCRAM_ERR_BUFFER);
	c->client_first_len = (size_t)n;
	c->gs2_len = (size_t)(strstr(c->client_first, ",,") + 2 - c->client_first);
	memcpy(out, c->client_first, (size_t)n);
	*out_len = (size_t)n;
	*mechanism = c->plus ? SCRAM_MECHANISM_PLUS : SCRAM_MECHANISM;
	c->state = SCRAM_CLIENT_FIRST_SENT;
	return SCRAM_OK;
}

int scram_client_final(struct scram_client *c, const uint8_t *data, size_t len, char *out,
		       size_t cap, size_t *out_len)
{
	struct scram_server_first sf;
	uint8_t cbind[SCRAM_MESSAGE_MAX], stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN];
	uint8_t proof[SCRAM_KEY_LEN];
	char msg[SCRAM_MESSAGE_MAX + 1], b64[SCRAM_MESSAGE_MAX];
	const char *server_first = (const char *)data;
	size_t cbind_len = c->gs2_len, wp;
	int rc, n;

	if (c->state != SCRAM_CLIENT_FIRST_SENT)
		return fail(c, SCRAM_ERR_STATE);
	if (!data)
		return fail(c, SCRAM_ERR_MALFORMED);
	rc = scram_parse_server_first(server_first, len, c->nonce, strlen(c->nonce), &sf);
	if (rc)
		return fail(c, rc);
	if (c->expect_params) {
		if (sf.iterations != c->expect_iterations || sf.salt_len != c->expect_salt_len ||
		    memcmp(sf.salt, c->expect_salt, sf.salt_len) != 0)
			return fail(c, SCRAM_ERR_NO_CREDENTIAL);
	} else {
		uint8_t salted[SCRAM_KEY_LEN];

		rc = scram_salted_password(c->password, sf.salt, sf.salt_len, sf.iterations, salted);
		if (!rc)
			rc = scram_client_key(salted, c->client_key);
		if (!rc)
			rc = scram_server_key(salted, c->server_key);
		OPENSSL_cleanse(salted, sizeof(salted));
		if (rc)
			return fail(c, rc);
	}
	/* client-final-message-without-proof: c=base64(gs2 header [+ binding data]),r=nonce */
	memcpy(cbind, c->client_first, c->gs2_len);
	if (c->plus) {
		memcpy(cbind + c->gs2_len, c->cbind_data, c->cbind_len);
		cbind_len += c->cbind_len;
	}
	if (scram_b64_encode(cbind, cbind_len, b64, sizeof(b64)) < 0)
		return fail(c, SCRAM_ERR_BUFFER);
	n = snprintf(msg, sizeof(msg), "c=%s,r=%.*s", b64, (int)sf.nonce_len, sf.nonce);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return fail(c, SCRAM_ERR_BUFFER);
	wp = (size_t)n;
	const char *bare = c->client_first + c->gs2_len;
	size_t bare_len = c->client_first_len - c->gs2_len;

	rc = scram_hash(c->client_key, SCRAM_KEY_LEN, stored);
	if (!rc)
		rc = scram_hmac(stored, bare, bare_len, server_first, len, msg, wp, sig);
	if (!rc)
		rc = scram_hmac(c->server_key, bare, bare_len, server_first, len, msg, wp,
				c->server_signature);
	if (rc)
		return fail(c, rc);
	for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = c->client_key[i] ^ sig[i];
	rc = scram_b64_encode(proof, SCRAM_KEY_LEN, b64, sizeof(b64));
	OPENSSL_cleanse(proof, sizeof(proof));
	n = snprintf(msg + wp, sizeof(msg) - wp, ",p=%s", b64);
	OPENSSL_cleanse(b64, sizeof(b64));
	if (rc < 0 || n < 0 || (size_t)n >= sizeof(msg) - wp || wp + (size_t)n > cap)
		return fail(c, SCRAM_ERR_BUFFER);
	memcpy(out, msg, wp + (size_t)n);
	*out_len = wp + (size_t)n;
	OPENSSL_cleanse(msg, sizeof(msg));
	c->state = SCRAM_CLIENT_FINAL_SENT;
	return SCRAM_OK;
}

int scram_client_verify(struct scram_client *c, const uint8_t *data, size_t len)
{
	struct scram_server_final sf;
	int rc;

	if (c->state != SCRAM_CLIENT_FINAL_SENT)
		return fail(c, SCRAM_ERR_STATE);
	if (!data)
		return fail(c, SCRAM_ERR_MALFORMED);
	rc = scram_parse_server_final((const char *)data, len, &sf);
	if (rc)
		return fail(c, rc);
	if (sf.is_error)
		return fail(c, SCRAM_ERR_SERVER_ERROR);
	if (CRYPTO_memcmp(sf.signature, c->server_signature, SCRAM_KEY_LEN) != 0)
		return fail(c, SCRAM_ERR_SIGNATURE);
	c->state = SCRAM_CLIENT_DONE;
	return SCRAM_OK;
}

void scram_client_clear(struct scram_client *c)
{
	OPENSSL_cleanse(c, sizeof(*c));
	c->state = SCRAM_CLIENT_FAILED;
}
