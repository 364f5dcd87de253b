/*
 * scram: the SCRAM-SHA-256 messages, keys and verifiers (see scram.h). The two exchanges
 * built on these live in scram_server.c and scram_client.c.
 *
 * Parsers read one attribute at a time through a cursor over (ptr, len) and never look
 * past len; outputs are views into the message. Nothing here logs: callers decide what a
 * failure means and how it is reported.
 */
#include "auth/scram.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stringprep.h>
#include <string.h>

/* ---- errors --------------------------------------------------------------------------- */

static const struct scram_error_info scram_errors[] = {
	[0] = {"00000", "", NULL},
	[-SCRAM_ERR_MALFORMED] = {"08P01", "malformed SCRAM message", NULL},
	[-SCRAM_ERR_TOO_LONG] = {"08P01", "malformed SCRAM message",
				 "The message is longer than 512 bytes."},
	[-SCRAM_ERR_MECHANISM] = {"08P01",
				  "client selected an invalid SASL authentication mechanism", NULL},
	[-SCRAM_ERR_EXTENSION] = {"0A000", "client requires an unsupported SCRAM extension", NULL},
	[-SCRAM_ERR_AUTHZID] = {"0A000",
				"client uses authorization identity, but it is not supported", NULL},
	[-SCRAM_ERR_NONCE] = {"08P01", "non-printable characters in SCRAM nonce", NULL},
	[-SCRAM_ERR_NONCE_MISMATCH] = {"08P01", "invalid SCRAM response", "Nonce does not match."},
	[-SCRAM_ERR_CBIND_TYPE] = {"08P01", "unsupported SCRAM channel-binding type", NULL},
	[-SCRAM_ERR_CBIND_FLAG] = {"08P01", "malformed SCRAM message",
				   "The channel-binding flag does not agree with the selected "
				   "mechanism."},
	[-SCRAM_ERR_CBIND_DOWNGRADE] = {"28000", "SCRAM channel binding negotiation error",
					"The client supports SCRAM channel binding but thinks the "
					"server does not.  However, this server does support "
					"channel binding."},
	[-SCRAM_ERR_CBIND_CHECK] = {"28000", "SCRAM channel binding check failed", NULL},
	[-SCRAM_ERR_CBIND_ATTR] = {"08P01",
				   "unexpected SCRAM channel-binding attribute in "
				   "client-final-message",
				   NULL},
	[-SCRAM_ERR_PROOF] = {"08P01", "malformed SCRAM message",
			      "Malformed proof in client-final-message."},
	[-SCRAM_ERR_SALT] = {"08P01", "malformed SCRAM message (invalid salt)", NULL},
	[-SCRAM_ERR_ITERATIONS] = {"08P01", "malformed SCRAM message (invalid iteration count)",
				   NULL},
	[-SCRAM_ERR_SERVER_ERROR] = {"28000", "error received from server in SCRAM exchange",
				     NULL},
	[-SCRAM_ERR_SIGNATURE] = {"28000", "incorrect server signature", NULL},
	[-SCRAM_ERR_AUTH_FAILED] = {"28P01", "password authentication failed", NULL},
	[-SCRAM_ERR_STATE] = {"08P01", "invalid SCRAM exchange state", NULL},
	[-SCRAM_ERR_INTERNAL] = {"XX000", "could not compute SCRAM keys", NULL},
	[-SCRAM_ERR_VERIFIER] = {"28000", "invalid SCRAM secret", NULL},
	[-SCRAM_ERR_BUFFER] = {"XX000", "SCRAM message does not fit", NULL},
	[-SCRAM_ERR_NO_CREDENTIAL] = {"28000",
				      "no credential to log in to the server for this user", NULL},
};

const struct scram_error_info *scram_error(int status)
{
	if (status > 0 || status < SCRAM_STATUS_MIN)
		return &scram_errors[-SCRAM_ERR_INTERNAL];
	return &scram_errors[-status];
}

/* ---- base64 ----------------------------------------------------------------------------- */

int scram_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
	size_t need = SCRAM_B64_LEN(n);

	if (need + 1 > cap || n > INT32_MAX / 2)
		return SCRAM_ERR_BUFFER;
	if (n == 0) {
		out[0] = '\0';
		return 0;
	}
	return EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

static bool b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

int scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	/* Room for EVP_DecodeBlock's whole-quantum output and for the re-encoding. */
	uint8_t tmp[SCRAM_MESSAGE_MAX];
	char again[SCRAM_MESSAGE_MAX + 1];
	size_t pad = 0, len;
	int got;

	if (n == 0)
		return 0;
	if (n % 4 || n > sizeof(again) - 1)
		return -1;
	if (in[n - 1] == '=')
		pad = in[n - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < n - pad; i++)
		if (!b64_char(in[i]))
			return -1;
	got = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
	if (got < 0 || (size_t)got != n / 4 * 3)
		return -1;
	len = (size_t)got - pad;
	/* Canonical: exactly what encoding the bytes gives back (no stray trailing bits). */
	if (EVP_EncodeBlock((unsigned char *)again, tmp, (int)len) != (int)n ||
	    memcmp(again, in, n) != 0 || len > cap) {
		OPENSSL_cleanse(tmp, sizeof(tmp));
		return -1;
	}
	memcpy(out, tmp, len);
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return (int)len;
}

/* ---- message reading ----------------------------------------------------------------- */

struct attr_cursor {
	const char *p;
	const char *end;
};

bool scram_printable(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

/* Message-wide checks: not empty, bounded, no NUL. */
static int message_ok(const char *msg, size_t len)
{
	if (len == 0 || !msg)
		return SCRAM_ERR_MALFORMED;
	if (len > SCRAM_MESSAGE_MAX)
		return SCRAM_ERR_TOO_LONG;
	if (memchr(msg, '\0', len))
		return SCRAM_ERR_MALFORMED;
	return SCRAM_OK;
}

/*
 * Read "<attr>=<value>" up to the next ',' (consumed) or the end. The value view is
 * [*v, *v + *vlen). SCRAM_ERR_MALFORMED when the attribute is not there.
 */
static int read_attr(struct attr_cursor *c, char attr, const char **v, size_t *vlen)
{
	const char *comma;

	if (c->end - c->p < 2 || c->p[0] != attr || c->p[1] != '=')
		return SCRAM_ERR_MALFORMED;
	c->p += 2;
	comma = memchr(c->p, ',', (size_t)(c->end - c->p));
	*v = c->p;
	*vlen = (size_t)((comma ? comma : c->end) - c->p);
	c->p = comma ? comma + 1 : c->end;
	/* A trailing comma promises another attribute. */
	if (comma && c->p == c->end)
		return SCRAM_ERR_MALFORMED;
	return SCRAM_OK;
}

static bool is_alpha(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Letters RFC 5802 defines; an extension may not reuse one (that is an attribute out of
 * its place, or a repeated one). */
static bool attr_defined(char a)
{
	return a && strchr("amnrcspiev", a) != NULL;
}

/* One optional extension "<ALPHA>=<1*value-char>". */
static int read_extension(struct attr_cursor *c)
{
	const char *v;
	size_t vlen;
	char a;

	if (c->p >= c->end || !is_alpha(c->p[0]))
		return SCRAM_ERR_MALFORMED;
	a = c->p[0];
	if (a == 'm')
		return SCRAM_ERR_EXTENSION;
	if (attr_defined(a))
		return SCRAM_ERR_MALFORMED;
	if (read_attr(c, a, &v, &vlen) || vlen == 0)
		return SCRAM_ERR_MALFORMED;
	return SCRAM_OK;
}

/* saslname: '=' only as "=2C" or "=3D". Empty is allowed: libpq sends "n=,". */
static bool saslname_valid(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '=')
			continue;
		if (n - i < 3)
			return false;
		if (!((s[i + 1] == '2' && s[i + 2] == 'C') || (s[i + 1] == '3' && s[i + 2] == 'D')))
			return false;
		i += 2;
	}
	return true;
}

static bool nonce_ok(const char *s, size_t n)
{
	return n >= SCRAM_NONCE_MIN && n <= SCRAM_NONCE_MAX && scram_printable(s, n);
}

int scram_parse_client_first(const char *msg, size_t len, struct scram_client_first *out)
{
	struct attr_cursor c = {msg, msg + len};
	const char *v;
	size_t vlen;
	int rc = message_ok(msg, len);

	if (rc)
		return rc;
	/* gs2-cbind-flag */
	switch (msg[0]) {
	case 'n':
	case 'y':
		if (len < 2 || msg[1] != ',')
			return SCRAM_ERR_MALFORMED;
		out->cbind_flag = msg[0];
		c.p += 2;
		break;
	case 'p':
		if (read_attr(&c, 'p', &v, &vlen))
			return SCRAM_ERR_MALFORMED;
		for (size_t i = 0; i < vlen; i++)
			if (!is_alpha(v[i]) && !(v[i] >= '0' && v[i] <= '9') && v[i] != '.' &&
			    v[i] != '-')
				return SCRAM_ERR_MALFORMED;
		if (vlen == 0)
			return SCRAM_ERR_MALFORMED;
		if (vlen != strlen(SCRAM_CBIND_TYPE) || memcmp(v, SCRAM_CBIND_TYPE, vlen) != 0)
			return SCRAM_ERR_CBIND_TYPE;
		out->cbind_flag = 'p';
		break;
	default:
		return SCRAM_ERR_MALFORMED;
	}
	/* [authzid] "," */
	if (c.p < c.end && c.p[0] == 'a')
		return SCRAM_ERR_AUTHZID;
	if (c.p >= c.end || c.p[0] != ',')
		return SCRAM_ERR_MALFORMED;
	c.p++;
	out->gs2_len = (size_t)(c.p - msg);
	out->bare = c.p;
	out->bare_len = (size_t)(c.end - c.p);
	/* [reserved-mext ","] username "," nonce ["," extensions] */
	if (c.p < c.end && c.p[0] == 'm')
		return SCRAM_ERR_EXTENSION;
	if (read_attr(&c, 'n', &v, &vlen) || !saslname_valid(v, vlen))
		return SCRAM_ERR_MALFORMED;
	if (read_attr(&c, 'r', &out->nonce, &out->nonce_len))
		return SCRAM_ERR_MALFORMED;
	if (!nonce_ok(out->nonce, out->nonce_len))
		return SCRAM_ERR_NONCE;
	while (c.p < c.end) {
		rc = read_extension(&c);
		if (rc)
			return rc;
	}
	return SCRAM_OK;
}

/* posit-number without a sign, spaces or leading zeros, within the bounds. */
static int parse_iterations(const char *s, size_t n, uint32_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 10 || s[0] == '0')
		return SCRAM_ERR_ITERATIONS;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return SCRAM_ERR_ITERATIONS;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v < SCRAM_ITERATIONS_MIN || v > SCRAM_ITERATIONS_MAX)
		return SCRAM_ERR_ITERATIONS;
	*out = (uint32_t)v;
	return SCRAM_OK;
}

static int parse_salt(const char *s, size_t n, uint8_t *salt, size_t *salt_len)
{
	int got;

	if (n == 0 || n > SCRAM_B64_LEN(SCRAM_SALT_MAX_LEN))
		return SCRAM_ERR_SALT;
	got = scram_b64_decode(s, n, salt, SCRAM_SALT_MAX_LEN);
	if (got < SCRAM_SALT_MIN_LEN)
		return SCRAM_ERR_SALT;
	*salt_len = (size_t)got;
	return SCRAM_OK;
}

int scram_parse_server_first(const char *msg, size_t len, const char *client_nonce,
			     size_t client_nonce_len, struct scram_server_first *out)
{
	struct attr_cursor c = {msg, msg + len};
	const char *v;
	size_t vlen;
	int rc = message_ok(msg, len);

	if (rc)
		return rc;
	if (msg[0] == 'm')
		return SCRAM_ERR_EXTENSION;
	if (read_attr(&c, 'r', &out->nonce, &out->nonce_len))
		return SCRAM_ERR_MALFORMED;
	if (!scram_printable(out->nonce, out->nonce_len) || out->nonce_len > SCRAM_NONCE_MAX)
		return SCRAM_ERR_NONCE;
	/* The server's part must be there, and the client's part must be what we sent. */
	if (out->nonce_len < client_nonce_len + SCRAM_NONCE_MIN ||
	    memcmp(out->nonce, client_nonce, client_nonce_len) != 0)
		return SCRAM_ERR_NONCE_MISMATCH;
	if (read_attr(&c, 's', &out->salt_b64, &out->salt_b64_len))
		return SCRAM_ERR_MALFORMED;
	rc = parse_salt(out->salt_b64, out->salt_b64_len, out->salt, &out->salt_len);
	if (rc)
		return rc;
	if (read_attr(&c, 'i', &v, &vlen))
		return SCRAM_ERR_MALFORMED;
	rc = parse_iterations(v, vlen, &out->iterations);
	if (rc)
		return rc;
	/* libpq: "garbage at end of server-first-message". */
	return c.p == c.end ? SCRAM_OK : SCRAM_ERR_MALFORMED;
}

int scram_parse_client_final(const char *msg, size_t len, struct scram_client_final *out)
{
	struct attr_cursor c = {msg, msg + len};
	const char *v, *proof_at;
	size_t vlen;
	int rc = message_ok(msg, len), got;

	if (rc)
		return rc;
	if (read_attr(&c, 'c', &v, &vlen))
		return SCRAM_ERR_MALFORMED;
	if (vlen == 0)
		return SCRAM_ERR_CBIND_ATTR;
	got = scram_b64_decode(v, vlen, out->cbind_input, sizeof(out->cbind_input));
	if (got <= 0)
		return SCRAM_ERR_CBIND_ATTR;
	out->cbind_input_len = (size_t)got;
	if (read_attr(&c, 'r', &out->nonce, &out->nonce_len))
		return SCRAM_ERR_MALFORMED;
	if (!scram_printable(out->nonce, out->nonce_len) || out->nonce_len > 2 * SCRAM_NONCE_MAX)
		return SCRAM_ERR_NONCE;
	/* Extensions, then the proof, which is last. */
	for (;;) {
		if (c.p >= c.end)
			return SCRAM_ERR_MALFORMED; /* no proof */
		if (c.p[0] == 'p')
			break;
		rc = read_extension(&c);
		if (rc)
			return rc;
	}
	proof_at = c.p;
	if (read_attr(&c, 'p', &v, &vlen))
		return SCRAM_ERR_MALFORMED;
	if (c.p != c.end)
		return SCRAM_ERR_MALFORMED; /* "Garbage found at the end of client-final-message." */
	if (vlen != SCRAM_B64_LEN(SCRAM_KEY_LEN) ||
	    scram_b64_decode(v, vlen, out->proof, sizeof(out->proof)) != SCRAM_KEY_LEN)
		return SCRAM_ERR_PROOF;
	out->without_proof_len = (size_t)(proof_at - 1 - msg);
	return SCRAM_OK;
}

int scram_parse_server_final(const char *msg, size_t len, struct scram_server_final *out)
{
	struct attr_cursor c = {msg, msg + len};
	const char *v;
	size_t vlen;
	int rc = message_ok(msg, len);

	if (rc)
		return rc;
	if (msg[0] == 'e') {
		if (read_attr(&c, 'e', &v, &vlen) || vlen == 0 || c.p != c.end)
			return SCRAM_ERR_MALFORMED;
		out->is_error = true;
		return SCRAM_OK;
	}
	if (read_attr(&c, 'v', &v, &vlen) || c.p != c.end)
		return SCRAM_ERR_MALFORMED;
	if (vlen != SCRAM_B64_LEN(SCRAM_KEY_LEN) ||
	    scram_b64_decode(v, vlen, out->signature, sizeof(out->signature)) != SCRAM_KEY_LEN)
		return SCRAM_ERR_MALFORMED;
	out->is_error = false;
	return SCRAM_OK;
}

int scram_check_cbind(const char *gs2, size_t gs2_len, const struct scram_client_final *cf,
		      const uint8_t *cbind_data, size_t cbind_len)
{
	if (cf->cbind_input_len < gs2_len || memcmp(cf->cbind_input, gs2, gs2_len) != 0)
		return SCRAM_ERR_CBIND_ATTR;
	if (gs2[0] != 'p')
		return cf->cbind_input_len == gs2_len ? SCRAM_OK : SCRAM_ERR_CBIND_ATTR;
	if (cf->cbind_input_len == gs2_len)
		return SCRAM_ERR_CBIND_CHECK; /* 'p' without data */
	if (!cbind_data)
		return SCRAM_OK;
	if (cf->cbind_input_len - gs2_len != cbind_len ||
	    CRYPTO_memcmp(cf->cbind_input + gs2_len, cbind_data, cbind_len) != 0)
		return SCRAM_ERR_CBIND_CHECK;
	return SCRAM_OK;
}

/* ---- keys -------------------------------------------------------------------------------- */

static pthread_once_t mac_once = PTHREAD_ONCE_INIT;
static EVP_MD *sha256_alg;
/* HMAC-SHA-256 with its digest set and no key, never used itself: each HMAC works on a copy
 * (EVP_MAC_CTX_dup only reads it, so the workers share it). Setting the digest by name at
 * every init would fetch it again each time: a third of a login's HMAC cost. */
static EVP_MAC_CTX *hmac_sha256;

static void fetch_algorithms(void)
{
	EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	sha256_alg = EVP_MD_fetch(NULL, "SHA256", NULL);
	hmac_sha256 = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
	EVP_MAC_free(hmac); /* the context holds its own reference */
	if (hmac_sha256 && !EVP_MAC_CTX_set_params(hmac_sha256, params)) {
		EVP_MAC_CTX_free(hmac_sha256);
		hmac_sha256 = NULL;
	}
}

static bool algorithms(void)
{
	pthread_once(&mac_once, fetch_algorithms);
	return hmac_sha256 && sha256_alg;
}

static bool is_ascii(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s >= 0x80)
			return false;
	return true;
}

const char *scram_prepare_password(const char *password, char *out, size_t cap)
{
	size_t n = strlen(password);

	if (n > SCRAM_PASSWORD_MAX || n + 1 > cap)
		return NULL;
	memcpy(out, password, n + 1);
	if (is_ascii(password))
		return out; /* PostgreSQL: pure ASCII needs no preparation */
	/* SASLprep for stored strings (unassigned code points refused), in place in the
	 * caller's buffer. Any failure: the raw bytes, as PostgreSQL falls back. */
	if (stringprep(out, cap, STRINGPREP_NO_UNASSIGNED, stringprep_saslprep) != STRINGPREP_OK)
		memcpy(out, password, n + 1);
	return out;
}

int scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
			  uint32_t iterations, uint8_t out[SCRAM_KEY_LEN])
{
	char prepared[SCRAM_PASSWORD_MAX * 4 + 1];
	int ok;

	if (!algorithms() || !scram_prepare_password(password, prepared, sizeof(prepared)))
		return SCRAM_ERR_INTERNAL;
	ok = PKCS5_PBKDF2_HMAC(prepared, (int)strlen(prepared), salt, (int)salt_len,
			       (int)iterations, sha256_alg, SCRAM_KEY_LEN, out);
	OPENSSL_cleanse(prepared, sizeof(prepared));
	return ok == 1 ? SCRAM_OK : SCRAM_ERR_INTERNAL;
}

int scram_hmac(const uint8_t key[SCRAM_KEY_LEN], const char *a, size_t alen, const char *b,
	       size_t blen, const char *c, size_t clen, uint8_t out[SCRAM_KEY_LEN])
{
	EVP_MAC_CTX *ctx;
	size_t outl = 0;
	int ok;

	if (!algorithms() || !(ctx = EVP_MAC_CTX_dup(hmac_sha256)))
		return SCRAM_ERR_INTERNAL;
	ok = EVP_MAC_init(ctx, key, SCRAM_KEY_LEN, NULL) &&
	     EVP_MAC_update(ctx, (const unsigned char *)a, alen) &&
	     (!b || (EVP_MAC_update(ctx, (const unsigned char *)",", 1) &&
		     EVP_MAC_update(ctx, (const unsigned char *)b, blen))) &&
	     (!c || (EVP_MAC_update(ctx, (const unsigned char *)",", 1) &&
		     EVP_MAC_update(ctx, (const unsigned char *)c, clen))) &&
	     EVP_MAC_final(ctx, out, &outl, SCRAM_KEY_LEN) && outl == SCRAM_KEY_LEN;
	EVP_MAC_CTX_free(ctx);
	return ok ? SCRAM_OK : SCRAM_ERR_INTERNAL;
}

int scram_hash(const uint8_t *in, size_t n, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int outl = 0;

	if (!algorithms() || !EVP_Digest(in, n, out, &outl, sha256_alg, NULL) ||
	    outl != SCRAM_KEY_LEN)
		return SCRAM_ERR_INTERNAL;
	return SCRAM_OK;
}

int scram_client_key(const uint8_t salted[SCRAM_KEY_LEN], uint8_t out[SCRAM_KEY_LEN])
{
	return scram_hmac(salted, "Client Key", 10, NULL, 0, NULL, 0, out);
}

int scram_server_key(const uint8_t salted[SCRAM_KEY_LEN], uint8_t out[SCRAM_KEY_LEN])
{
	return scram_hmac(salted, "Server Key", 10, NULL, 0, NULL, 0, out);
}

int scram_random_nonce(char out[SCRAM_NONCE_LEN + 1])
{
	uint8_t raw[SCRAM_RAW_NONCE_LEN];

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return SCRAM_ERR_INTERNAL;
	return scram_b64_encode(raw, sizeof(raw), out, SCRAM_NONCE_LEN + 1) == SCRAM_NONCE_LEN ?
		       SCRAM_OK :
		       SCRAM_ERR_INTERNAL;
}

/* ---- verifiers --------------------------------------------------------------------------- */

#define VERIFIER_PREFIX "SCRAM-SHA-256$"

/* The next field of text, up to sep (consumed) or, with sep 0, the end. */
static bool next_field(const char **p, const char *end, char sep, const char **f, size_t *n)
{
	const char *at = sep ? memchr(*p, sep, (size_t)(end - *p)) : end;

	if (!at)
		return false;
	*f = *p;
	*n = (size_t)(at - *p);
	*p = sep ? at + 1 : end;
	return true;
}

int scram_verifier_parse(const char *text, size_t len, struct scram_verifier *out)
{
	const char *p = text, *end = text + len, *f;
	struct scram_verifier v;
	size_t n;
	int rc;

	memset(&v, 0, sizeof(v));
	if (len >= SCRAM_VERIFIER_MAX || len < strlen(VERIFIER_PREFIX) ||
	    memcmp(text, VERIFIER_PREFIX, strlen(VERIFIER_PREFIX)) != 0 ||
	    memchr(text, '\0', len))
		return SCRAM_ERR_VERIFIER;
	p += strlen(VERIFIER_PREFIX);
	if (!next_field(&p, end, ':', &f, &n))
		return SCRAM_ERR_VERIFIER;
	rc = parse_iterations(f, n, &v.iterations);
	if (rc)
		return rc;
	if (!next_field(&p, end, '$', &f, &n))
		return SCRAM_ERR_VERIFIER;
	rc = parse_salt(f, n, v.salt, &v.salt_len);
	if (rc)
		return rc;
	if (!next_field(&p, end, ':', &f, &n) ||
	    scram_b64_decode(f, n, v.stored_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN ||
	    !next_field(&p, end, 0, &f, &n) ||
	    scram_b64_decode(f, n, v.server_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN) {
		OPENSSL_cleanse(&v, sizeof(v));
		return SCRAM_ERR_VERIFIER;
	}
	memcpy(out, &v, sizeof(v));
	OPENSSL_cleanse(&v, sizeof(v));
	return SCRAM_OK;
}

int scram_verifier_format(const struct scram_verifier *v, char *out, size_t cap)
{
	char salt[SCRAM_B64_LEN(SCRAM_SALT_MAX_LEN) + 1];
	char stored[SCRAM_B64_LEN(SCRAM_KEY_LEN) + 1], server[SCRAM_B64_LEN(SCRAM_KEY_LEN) + 1];
	int n;

	if (scram_b64_encode(v->salt, v->salt_len, salt, sizeof(salt)) < 0 ||
	    scram_b64_encode(v->stored_key, SCRAM_KEY_LEN, stored, sizeof(stored)) < 0 ||
	    scram_b64_encode(v->server_key, SCRAM_KEY_LEN, server, sizeof(server)) < 0)
		return SCRAM_ERR_BUFFER;
	n = snprintf(out, cap, VERIFIER_PREFIX "%u:%s$%s:%s", v->iterations, salt, stored, server);
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(server, sizeof(server));
	return n < 0 || (size_t)n >= cap ? SCRAM_ERR_BUFFER : n;
}

int scram_verifier_from_password(const char *password, const uint8_t *salt, size_t salt_len,
				 uint32_t iterations, struct scram_verifier *out)
{
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
	int rc;

	if (salt_len < SCRAM_SALT_MIN_LEN || salt_len > SCRAM_SALT_MAX_LEN ||
	    iterations < SCRAM_ITERATIONS_MIN || iterations > SCRAM_ITERATIONS_MAX)
		return SCRAM_ERR_VERIFIER;
	rc = scram_salted_password(password, salt, salt_len, iterations, salted);
	if (!rc)
		rc = scram_client_key(salted, client_key);
	if (!rc)
		rc = scram_hash(client_key, SCRAM_KEY_LEN, out->stored_key);
	if (!rc)
		rc = scram_server_key(salted, out->server_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (rc)
		return rc;
	out->iterations = iterations;
	out->salt_len = salt_len;
	memset(out->salt, 0, sizeof(out->salt));
	memcpy(out->salt, salt, salt_len);
	return SCRAM_OK;
}
