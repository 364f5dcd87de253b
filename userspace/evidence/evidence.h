/*
 * evidence: Ed25519 signatures over compliance evidence reports (docs/COMPLIANCE.md).
 *
 * A report is a JSON document (`make evidence` writes one from test results,
 * `pgwardenctl evidence collect` from a live daemon) whose "format" is EVIDENCE_FORMAT.
 * Its signature is a detached JSON file, REPORT.sig by convention:
 *
 *   {"format": "pgwarden-evidence-signature/1", "algorithm": "ed25519",
 *    "key_id": "<32 hex>", "public_key": "<64 hex>",
 *    "report_sha256": "<64 hex>", "signature": "<128 hex>"}
 *
 * Keys are audit_sign's (the audit signing key, or any Ed25519 PEM key): there is one
 * signing implementation. The signed message is EVIDENCE_DOMAIN followed by the report's
 * raw SHA-256, so a signature the same key made over anything else (an audit checkpoint)
 * can never pass as a report's, and the other way round.
 *
 * Verification trusts nothing in the signature file: the digest is recomputed from the
 * report's bytes, the key id from the public key, and only a key the verifier was given
 * vouches for the report (without one the verdict is at best UNVOUCHED, as for audit
 * verify).
 */
#ifndef PGWARDEN_EVIDENCE_H
#define PGWARDEN_EVIDENCE_H

#include <openssl/evp.h>
#include <stddef.h>

#define EVIDENCE_FORMAT "pgwarden-evidence/1"
#define EVIDENCE_SIG_FORMAT "pgwarden-evidence-signature/1"
#define EVIDENCE_DOMAIN "pgwarden evidence report v1\n"
/* A signature file is a few hundred bytes; anything far larger is not one. */
#define EVIDENCE_SIG_MAX 4096

enum evidence_verdict {
	EVIDENCE_VALID = 0,     /* signed, unchanged, by a key the verifier gave */
	EVIDENCE_INVALID = 1,   /* changed, malformed, or not signed by a given key */
	EVIDENCE_UNVOUCHED = 4, /* unchanged under the key it names; no key given to trust */
};

/* Is report[0, len) a JSON object whose "format" is EVIDENCE_FORMAT? 0, or -EINVAL with
 * a one-line reason in err. */
int evidence_report_check(const char *report, size_t len, char *err, size_t n)
	__attribute__((warn_unused_result));

/* Sign report[0, len) (which must pass evidence_report_check) with key. On success 0 and
 * *sig_text, the signature file's text ending in a newline (caller frees); -EINVAL (not a
 * report, or not an Ed25519 key), -EIO or -ENOMEM with a message in err. */
int evidence_sign(EVP_PKEY *key, const char *report, size_t len, char **sig_text, char *err,
		  size_t n) __attribute__((warn_unused_result));

/*
 * Check sig[0, siglen) against report[0, len) and the trusted keys. The verdict, with one
 * line in msg saying why (for INVALID: what is wrong, e.g. the report changed after it
 * was signed, or it was signed by a key that was not given); key_id (33 bytes, may be
 * NULL) receives the id of the key the signature file names when it could be read.
 */
enum evidence_verdict evidence_verify(const char *report, size_t len, const char *sig,
				      size_t siglen, EVP_PKEY *const *keys, unsigned nkeys,
				      char *key_id, char *msg, size_t n);

/*
 * What `pgwardenctl evidence collect` checks on a live host, and the controls of
 * docs/compliance-map.json each check bears on (test_compliance_map fails when one of
 * these identifiers is not in the map). A control is proven on the host when every check
 * that bears on it passed.
 */
#define EVIDENCE_FACT_CONTROLS_MAX 12
struct evidence_live_fact {
	const char *name;
	const char *controls[EVIDENCE_FACT_CONTROLS_MAX]; /* NULL-terminated */
};
enum {
	EVIDENCE_FACT_TLS,
	EVIDENCE_FACT_FIPS,
	EVIDENCE_FACT_POLICY,
	EVIDENCE_FACT_AUDIT,
	EVIDENCE_FACT_STEERING,
	EVIDENCE_FACT_COUNT,
};
extern const struct evidence_live_fact evidence_live_facts[EVIDENCE_FACT_COUNT];

#endif
