/*
 * scram: SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677) as PostgreSQL speaks
 * them: strict parsers and builders for the four exchange messages, the key derivations,
 * PostgreSQL's verifier format, and the two exchanges built on them (scram_server: the
 * relay authenticates a client; scram_client: the relay logs in to a server).
 *
 * Pure functions over byte ranges; no sockets, no globals except OpenSSL's fetched
 * algorithms. Every crypto primitive is OpenSSL 3's (EVP_MAC HMAC, EVP_Digest SHA-256,
 * PKCS5_PBKDF2_HMAC, CRYPTO_memcmp, RAND_bytes, EVP_EncodeBlock/DecodeBlock); SASLprep is
 * libidn's stringprep profile, applied as PostgreSQL applies it.
 *
 * Strictness. A SCRAM message is at most SCRAM_MESSAGE_MAX bytes, holds no NUL, and is read
 * attribute by attribute in the order RFC 5802 fixes. Refused: a wrong mechanism; base64
 * that is not canonical (bad alphabet, bad padding, non-zero trailing bits); a proof or
 * signature that is not 32 bytes; a nonce that is not printable, shorter than
 * SCRAM_NONCE_MIN or longer than SCRAM_NONCE_MAX characters, or (from a server) that does
 * not extend the client's by at least SCRAM_NONCE_MIN characters; an iteration count
 * outside [SCRAM_ITERATIONS_MIN, SCRAM_ITERATIONS_MAX] or spelled with a sign or leading
 * zero; a salt of fewer than SCRAM_SALT_MIN_LEN or more than SCRAM_SALT_MAX_LEN bytes; the
 * mandatory-extension attribute "m=" anywhere; an extension that reuses the letter of a
 * defined attribute (an attribute out of order); an authzid; a gs2 header that disagrees
 * with the mechanism chosen or with what the server offered (y/n/p); anything after the
 * last attribute. Optional extensions are accepted where RFC 5802 allows them from a client
 * (after the nonce), as PostgreSQL does, and ignored; a server may send none (as libpq
 * requires).
 *
 * Bounds chosen here, and why:
 *   SCRAM_ITERATIONS_MIN 4096: RFC 7677 says a server SHOULD announce at least 4096, and
 *     PostgreSQL's default is 4096. Fewer lets a hostile server collect a proof it can
 *     brute-force cheaply, so a lower count is refused as a downgrade.
 *   SCRAM_ITERATIONS_MAX 1000000: PBKDF2-HMAC-SHA-256 costs about 0.22 us per iteration
 *     here (test_auth_scram prints it), so a hostile server can make the relay (or, in
 *     passthrough, the client) burn at most ~0.25 s of one core per login; OWASP's 2023
 *     advice is 600,000, so real servers stay inside.
 *   SCRAM_SALT_MIN_LEN 8 .. SCRAM_SALT_MAX_LEN 64 bytes: PostgreSQL uses 16.
 *   SCRAM_MESSAGE_MAX 512 bytes: the longest real message (a -PLUS client-final with a
 *     SHA-512 certificate hash) is under 200.
 *
 * Errors are enum scram_status values; scram_error() gives PostgreSQL's SQLSTATE, message
 * and detail for each (the server's wording for what a client sent, libpq's for what a
 * server sent). No error text ever quotes peer bytes.
 */
#ifndef PGWARDEN_SCRAM_H
#define PGWARDEN_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_MECHANISM "SCRAM-SHA-256"
#define SCRAM_MECHANISM_PLUS "SCRAM-SHA-256-PLUS"
#define SCRAM_CBIND_TYPE "tls-server-end-point"

#define SCRAM_KEY_LEN 32           /* SHA-256 */
#define SCRAM_RAW_NONCE_LEN 18     /* random bytes in a nonce we make (PostgreSQL's) */
#define SCRAM_NONCE_LEN 24         /* their base64 */
#define SCRAM_NONCE_MIN 8
#define SCRAM_NONCE_MAX 128
#define SCRAM_SALT_DEFAULT_LEN 16
#define SCRAM_SALT_MIN_LEN 8
#define SCRAM_SALT_MAX_LEN 64
#define SCRAM_ITERATIONS_DEFAULT 4096
#define SCRAM_ITERATIONS_MIN 4096
#define SCRAM_ITERATIONS_MAX 1000000
#define SCRAM_MESSAGE_MAX 512
#define SCRAM_CBIND_DATA_MAX 64    /* a certificate hash: SHA-512 at most */
#define SCRAM_PASSWORD_MAX 1024    /* longest password the relay will prepare */
/* "SCRAM-SHA-256$" iterations ":" salt "$" StoredKey ":" ServerKey, and a NUL. */
#define SCRAM_VERIFIER_MAX 256

/* Base64 length of n bytes (with padding). */
#define SCRAM_B64_LEN(n) ((((n) + 2) / 3) * 4)

enum scram_status {
	SCRAM_OK = 0,
	SCRAM_ERR_MALFORMED = -1,        /* 08P01 malformed SCRAM message */
	SCRAM_ERR_TOO_LONG = -2,         /* 08P01 longer than SCRAM_MESSAGE_MAX */
	SCRAM_ERR_MECHANISM = -3,        /* 08P01 mechanism not offered */
	SCRAM_ERR_EXTENSION = -4,        /* 0A000 "m=" mandatory extension */
	SCRAM_ERR_AUTHZID = -5,          /* 0A000 authorization identity */
	SCRAM_ERR_NONCE = -6,            /* 08P01 nonce not printable, too short or long */
	SCRAM_ERR_NONCE_MISMATCH = -7,   /* 08P01 nonce does not continue the exchange's */
	SCRAM_ERR_CBIND_TYPE = -8,       /* 08P01 channel binding other than tls-server-end-point */
	SCRAM_ERR_CBIND_FLAG = -9,       /* 08P01 gs2 flag disagrees with the mechanism */
	SCRAM_ERR_CBIND_DOWNGRADE = -10, /* 28000 "y": client thinks we cannot bind, we can */
	SCRAM_ERR_CBIND_CHECK = -11,     /* 28000 binding data is not the certificate's */
	SCRAM_ERR_CBIND_ATTR = -12,      /* 08P01 c= does not repeat the gs2 header */
	SCRAM_ERR_PROOF = -13,           /* 08P01 proof is not 32 bytes of canonical base64 */
	SCRAM_ERR_SALT = -14,            /* 08P01 salt empty, huge, or not base64 */
	SCRAM_ERR_ITERATIONS = -15,      /* 08P01 iteration count out of bounds */
	SCRAM_ERR_SERVER_ERROR = -16,    /* 28000 the server answered e=... */
	SCRAM_ERR_SIGNATURE = -17,       /* 28000 the server's signature is wrong */
	SCRAM_ERR_AUTH_FAILED = -18,     /* 28P01 wrong password (or mock, or locked) */
	SCRAM_ERR_STATE = -19,           /* 08P01 message out of order */
	SCRAM_ERR_INTERNAL = -20,        /* XX000 a crypto call failed */
	SCRAM_ERR_VERIFIER = -21,        /* not a verifier in PostgreSQL's format */
	SCRAM_ERR_BUFFER = -22,          /* output buffer too small */
	SCRAM_ERR_NO_CREDENTIAL = -23,   /* 28000 nothing to log in upstream with */
};
#define SCRAM_STATUS_MIN SCRAM_ERR_NO_CREDENTIAL

struct scram_error_info {
	const char *sqlstate; /* five characters */
	const char *message;  /* PostgreSQL's primary text */
	const char *detail;   /* NULL or PostgreSQL's detail */
};

/* The texts for a status (never NULL, for any int; SCRAM_OK gives an empty message). */
const struct scram_error_info *scram_error(int status);

/* ---- base64, strict ------------------------------------------------------------------ */

/* Encode in[0..n) into out (NUL-terminated); returns the length or SCRAM_ERR_BUFFER. */
int scram_b64_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/*
 * Decode canonical base64 in[0..n) into out[0..cap): length a multiple of 4, only the
 * standard alphabet, '=' only as the final one or two characters, unused bits zero (the
 * one spelling EVP_EncodeBlock gives back). Returns the decoded length, or -1.
 */
int scram_b64_decode(const char *in, size_t n, uint8_t *out, size_t cap);

/* ---- parsed messages: views into the caller's message bytes -------------------------- */

struct scram_client_first {
	char cbind_flag;         /* 'n', 'y' or 'p' (p: tls-server-end-point) */
	size_t gs2_len;          /* the gs2 header is msg[0..gs2_len) */
	const char *bare;        /* client-first-message-bare */
	size_t bare_len;
	const char *nonce;
	size_t nonce_len;
};

struct scram_server_first {
	const char *nonce; /* the whole nonce: the client's and the server's part */
	size_t nonce_len;
	const char *salt_b64;
	size_t salt_b64_len;
	uint8_t salt[SCRAM_SALT_MAX_LEN];
	size_t salt_len;
	uint32_t iterations;
};

struct scram_client_final {
	uint8_t cbind_input[SCRAM_MESSAGE_MAX]; /* c= decoded: gs2 header + binding data */
	size_t cbind_input_len;
	const char *nonce;
	size_t nonce_len;
	size_t without_proof_len; /* msg[0..without_proof_len) is client-final-without-proof */
	uint8_t proof[SCRAM_KEY_LEN];
};

struct scram_server_final {
	bool is_error;                     /* e=...: the server refused */
	uint8_t signature[SCRAM_KEY_LEN];  /* v=... */
};

/*
 * Parsers. Each returns SCRAM_OK with *out filled, or a negative status with *out
 * unspecified. msg need not be NUL-terminated; a NUL inside it is malformed.
 * scram_parse_server_first also checks that the nonce extends client_nonce.
 */
int scram_parse_client_first(const char *msg, size_t len, struct scram_client_first *out);
int scram_parse_server_first(const char *msg, size_t len, const char *client_nonce,
			     size_t client_nonce_len, struct scram_server_first *out);
int scram_parse_client_final(const char *msg, size_t len, struct scram_client_final *out);
int scram_parse_server_final(const char *msg, size_t len, struct scram_server_final *out);

/*
 * Does a client-final's c= agree with its client-first's gs2 header (and, for 'p', carry
 * exactly cbind_data after it)? cbind_data NULL: 'p' cannot be checked here (an observer
 * that does not hold the certificate) and only the header is compared.
 * SCRAM_OK, SCRAM_ERR_CBIND_ATTR or SCRAM_ERR_CBIND_CHECK.
 */
int scram_check_cbind(const char *gs2, size_t gs2_len, const struct scram_client_final *cf,
		      const uint8_t *cbind_data, size_t cbind_len);

/* Is nonce[0..n) printable as RFC 5802 defines it (0x21..0x7e except ',')? */
bool scram_printable(const char *s, size_t n);

/* ---- keys ---------------------------------------------------------------------------- */

/*
 * The password as PostgreSQL hashes it: ASCII as is; otherwise SASLprep (stored-strings
 * rules) when that succeeds, else the raw bytes. Writes into out[0..cap) (the caller's,
 * ideally secret memory) and returns out, or NULL when the password is longer than
 * SCRAM_PASSWORD_MAX or does not fit.
 */
const char *scram_prepare_password(const char *password, char *out, size_t cap);

/* SaltedPassword = PBKDF2-HMAC-SHA-256(prepared password, salt, iterations). */
int scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
			  uint32_t iterations, uint8_t out[SCRAM_KEY_LEN])
	__attribute__((warn_unused_result));
/* HMAC-SHA-256(key, a || "," || b || "," || c); b and c may be NULL (then only a). */
int scram_hmac(const uint8_t key[SCRAM_KEY_LEN], const char *a, size_t alen, const char *b,
	       size_t blen, const char *c, size_t clen, uint8_t out[SCRAM_KEY_LEN])
	__attribute__((warn_unused_result));
/* SHA-256. */
int scram_hash(const uint8_t *in, size_t n, uint8_t out[SCRAM_KEY_LEN])
	__attribute__((warn_unused_result));
/* ClientKey = HMAC(SaltedPassword, "Client Key"), ServerKey = HMAC(.., "Server Key"). */
int scram_client_key(const uint8_t salted[SCRAM_KEY_LEN], uint8_t out[SCRAM_KEY_LEN])
	__attribute__((warn_unused_result));
int scram_server_key(const uint8_t salted[SCRAM_KEY_LEN], uint8_t out[SCRAM_KEY_LEN])
	__attribute__((warn_unused_result));

/* A fresh nonce: SCRAM_RAW_NONCE_LEN random bytes in base64 (SCRAM_NONCE_LEN + NUL). */
int scram_random_nonce(char out[SCRAM_NONCE_LEN + 1]) __attribute__((warn_unused_result));

/* ---- verifiers: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> ------------ */

struct scram_verifier {
	uint32_t iterations;
	size_t salt_len;
	uint8_t salt[SCRAM_SALT_MAX_LEN];
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
};

/* Parse text[0..len) (canonical base64, plain decimal iterations within the bounds above).
 * SCRAM_OK or SCRAM_ERR_VERIFIER / SCRAM_ERR_SALT / SCRAM_ERR_ITERATIONS. */
int scram_verifier_parse(const char *text, size_t len, struct scram_verifier *out);
/* The text form into out[0..cap); returns its length or SCRAM_ERR_BUFFER. */
int scram_verifier_format(const struct scram_verifier *v, char *out, size_t cap);
/* A verifier for password, as CREATE ROLE ... PASSWORD makes it. */
int scram_verifier_from_password(const char *password, const uint8_t *salt, size_t salt_len,
				 uint32_t iterations, struct scram_verifier *out)
	__attribute__((warn_unused_result));

/* ---- the relay as SCRAM server (terminate mode) -------------------------------------- */

struct scram_server_params {
	/* The role's verifier; NULL runs a mock exchange (an unknown user, or one without a
	 * SCRAM verifier) that always ends in SCRAM_ERR_AUTH_FAILED. */
	const struct scram_verifier *verifier;
	/* The role name from the StartupMessage: salts the mock exchange. */
	const char *user;
	/* Server-side secret for mock salts (PostgreSQL uses the cluster's mock nonce), the
	 * iteration count and salt length a mock exchange announces. */
	const uint8_t *mock_secret;
	size_t mock_secret_len;
	uint32_t mock_iterations;
	size_t mock_salt_len;
	/* tls-server-end-point data of the certificate the client saw (the TLS layer's);
	 * NULL when the client leg is plain or the hash is unknown: -PLUS is then not offered
	 * and a client that asks for it is refused. */
	const uint8_t *cbind_data;
	size_t cbind_len;
	/* Fail at the end whatever the proof (a locked user or source): the exchange looks
	 * and takes the same as a wrong password. */
	bool doomed;
	/* The server's nonce part; NULL: random. Tests only. */
	const char *server_nonce;
};

enum scram_server_state {
	SCRAM_SERVER_INIT = 0,
	SCRAM_SERVER_FIRST_SENT,
	SCRAM_SERVER_DONE,
	SCRAM_SERVER_FAILED,
};

struct scram_server {
	enum scram_server_state state;
	bool doomed;
	bool plus_offered;
	bool plus_selected;
	char cbind_flag;
	uint32_t iterations;
	size_t salt_len;
	uint8_t salt[SCRAM_SALT_MAX_LEN];
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	uint8_t client_key[SCRAM_KEY_LEN]; /* recovered from the proof once it verified */
	size_t cbind_len;
	uint8_t cbind_data[SCRAM_CBIND_DATA_MAX];
	char server_nonce[SCRAM_NONCE_MAX + 1];
	size_t gs2_len;
	char gs2[SCRAM_MESSAGE_MAX];
	size_t client_first_bare_len;
	char client_first_bare[SCRAM_MESSAGE_MAX];
	size_t server_first_len;
	char server_first[SCRAM_MESSAGE_MAX];
};

/* Set up an exchange. SCRAM_OK or SCRAM_ERR_INTERNAL (no randomness). */
int scram_server_init(struct scram_server *s, const struct scram_server_params *p)
	__attribute__((warn_unused_result));

/* The mechanisms to offer in AuthenticationSASL, "\0"-separated with a final "\0\0"
 * (proto_write_auth's data for AUTH_REQ_SASL); *len set. -PLUS first when offered. */
const uint8_t *scram_server_mechanisms(const struct scram_server *s, uint32_t *len);

/*
 * The client's SASLInitialResponse (mechanism and data) → server-first-message in
 * out[0..cap), *out_len set. SCRAM_OK, or a negative status (the exchange is over).
 */
int scram_server_first(struct scram_server *s, const char *mechanism, const uint8_t *data,
		       size_t len, char *out, size_t cap, size_t *out_len);

/*
 * The client's SASLResponse (client-final-message) → server-final-message ("v=...") in
 * out. SCRAM_OK when the proof verified (scram_server_client_key() is then valid);
 * SCRAM_ERR_AUTH_FAILED for a wrong proof, a mock or a doomed exchange (out is then
 * "e=invalid-proof", which PostgreSQL never actually sends: the caller sends 28P01); other
 * negative statuses for protocol violations. The proof is checked in constant time and
 * before the doomed flag, as PostgreSQL does, so all failures cost the same.
 */
int scram_server_final(struct scram_server *s, const uint8_t *data, size_t len, char *out,
		       size_t cap, size_t *out_len);

/* The client's ClientKey, recovered from its proof (ClientProof XOR ClientSignature);
 * NULL unless the exchange succeeded. Valid until scram_server_clear(). */
const uint8_t *scram_server_client_key(const struct scram_server *s);

/* Cleanse every key and message. */
void scram_server_clear(struct scram_server *s);

/* ---- the relay as SCRAM client (logging in upstream) --------------------------------- */

struct scram_client_params {
	/* Either a password ... */
	const char *password;
	/* ... or a ClientKey recovered from the client's proof, with the ServerKey, salt and
	 * iteration count of the verifier it belongs to: the server must announce that same
	 * salt and count (it holds the same verifier), else SCRAM_ERR_NO_CREDENTIAL. */
	const uint8_t *client_key;
	const struct scram_verifier *verifier;
	/* Upstream leg: TLS or not, and the tls-server-end-point data of the server's
	 * certificate (NULL when unknown). */
	bool tls;
	const uint8_t *cbind_data;
	size_t cbind_len;
	const char *client_nonce; /* NULL: random. Tests only. */
};

enum scram_client_state {
	SCRAM_CLIENT_INIT = 0,
	SCRAM_CLIENT_FIRST_SENT,
	SCRAM_CLIENT_FINAL_SENT,
	SCRAM_CLIENT_DONE,
	SCRAM_CLIENT_FAILED,
};

struct scram_client {
	enum scram_client_state state;
	bool use_password;
	bool plus;
	char cbind_flag;
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	bool expect_params;
	uint32_t expect_iterations;
	size_t expect_salt_len;
	uint8_t expect_salt[SCRAM_SALT_MAX_LEN];
	size_t cbind_len;
	uint8_t cbind_data[SCRAM_CBIND_DATA_MAX];
	char password[SCRAM_PASSWORD_MAX + 1];
	char nonce[SCRAM_NONCE_MAX + 1];
	size_t gs2_len;
	size_t client_first_len;
	char client_first[SCRAM_MESSAGE_MAX];
	uint8_t server_signature[SCRAM_KEY_LEN];
};

int scram_client_init(struct scram_client *c, const struct scram_client_params *p)
	__attribute__((warn_unused_result));

/*
 * Choose the mechanism from the server's AuthenticationSASL list (data as
 * proto_read_auth_data gives it) and write the client-first-message. *mechanism is
 * SCRAM_MECHANISM or SCRAM_MECHANISM_PLUS (-PLUS when the server offers it, the leg is TLS
 * and binding data is known; "y" when TLS without -PLUS; "n" on a plain leg).
 */
int scram_client_first(struct scram_client *c, const uint8_t *mechs, size_t mechs_len,
		       const char **mechanism, char *out, size_t cap, size_t *out_len);

/* server-first-message → client-final-message. */
int scram_client_final(struct scram_client *c, const uint8_t *data, size_t len, char *out,
		       size_t cap, size_t *out_len);

/* server-final-message: SCRAM_OK when the signature proves the server knows ServerKey. */
int scram_client_verify(struct scram_client *c, const uint8_t *data, size_t len);

void scram_client_clear(struct scram_client *c);

#endif
