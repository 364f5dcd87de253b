/*
 * evidence: signing and verifying compliance evidence reports (see evidence.h).
 */
#include "evidence/evidence.h"

#include "base/sanitize.h"

#include "audit/audit_record.h"
#include "audit/audit_sign.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVIDENCE_SHA256_LEN 32

const struct evidence_live_fact evidence_live_facts[EVIDENCE_FACT_COUNT] = {
	[EVIDENCE_FACT_TLS] = {"tls_in_force", {"PCI-4.2.1", "HIPAA-164.312(e)(1)", "SOC2-CC6.7",
						"NIST-SC-8", "NIST-SC-23", NULL}},
	[EVIDENCE_FACT_FIPS] = {"fips_mode", {"NIST-SC-13", NULL}},
	[EVIDENCE_FACT_POLICY] = {"policy_loaded", {"PCI-7.2.x", "NIST-AC-3", "NIST-AC-6",
						    "SOC2-CC6.1", NULL}},
	[EVIDENCE_FACT_AUDIT] = {"audit_trail_verified",
				 {"PCI-10.2.x", "PCI-10.3.x", "PCI-10.5.1", "HIPAA-164.312(b)",
				  "HIPAA-164.312(c)(1)", "NIST-AU-9", "NIST-AU-10", "NIST-AU-12",
				  "SOC2-CC7.2", NULL}},
	[EVIDENCE_FACT_STEERING] = {"steering_fail_closed", {"NIST-SC-7", "SOC2-CC6.6", NULL}},
};
#define DOMAIN_LEN (sizeof(EVIDENCE_DOMAIN) - 1)

static void say(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A one-line message; it may quote bytes of the file checked, so it goes through the one
 * sanitiser before anyone prints it. */
static void say(char *buf, size_t n, const char *fmt, ...)
{
	char raw[1024];
	va_list ap;

	if (!buf || !n)
		return;
	va_start(ap, fmt);
	vsnprintf(raw, sizeof(raw), fmt, ap);
	va_end(ap);
	sanitize_str(buf, n, raw, SANITIZE_TERMINAL, NULL);
}

int evidence_report_check(const char *report, size_t len, char *err, size_t n)
{
	json_error_t je;
	json_t *doc = json_loadb(report, len, JSON_REJECT_DUPLICATES, &je);
	const char *format;
	int rc = 0;

	if (!doc) {
		say(err, n, "not JSON (line %d: %s)", je.line, je.text);
		return -EINVAL;
	}
	format = json_string_value(json_object_get(doc, "format"));
	if (!json_is_object(doc) || !format || strcmp(format, EVIDENCE_FORMAT) != 0) {
		say(err, n, "not a pgwarden evidence report (its \"format\" is not \"%s\")",
		    EVIDENCE_FORMAT);
		rc = -EINVAL;
	}
	json_decref(doc);
	return rc;
}

/* The message a report's signature covers: the domain, then the report's SHA-256. */
static int signed_message(const char *report, size_t len,
			  uint8_t msg[DOMAIN_LEN + EVIDENCE_SHA256_LEN])
{
	unsigned int dlen = 0;

	memcpy(msg, EVIDENCE_DOMAIN, DOMAIN_LEN);
	if (!EVP_Digest(report, len, msg + DOMAIN_LEN, &dlen, EVP_sha256(), NULL) ||
	    dlen != EVIDENCE_SHA256_LEN)
		return -EIO;
	return 0;
}

int evidence_sign(EVP_PKEY *key, const char *report, size_t len, char **sig_text, char *err,
		  size_t n)
{
	uint8_t msg[DOMAIN_LEN + EVIDENCE_SHA256_LEN], pub[AUDIT_PUBKEY_LEN], sig[AUDIT_SIG_LEN];
	char id[AUDIT_KEY_ID_HEXLEN + 1], pub_hex[2 * AUDIT_PUBKEY_LEN + 1];
	char sha_hex[2 * EVIDENCE_SHA256_LEN + 1], sig_hex[2 * AUDIT_SIG_LEN + 1];
	json_t *o;
	char *text;
	int rc;

	*sig_text = NULL;
	rc = evidence_report_check(report, len, err, n);
	if (rc)
		return rc;
	if (audit_key_raw_public(key, pub)) {
		say(err, n, "the key is not an Ed25519 key");
		return -EINVAL;
	}
	if (signed_message(report, len, msg) || audit_sign(key, msg, sizeof(msg), sig)) {
		say(err, n, "signing failed (OpenSSL)");
		return -EIO;
	}
	audit_key_id(pub, id);
	audit_hex(pub, sizeof(pub), pub_hex);
	audit_hex(msg + DOMAIN_LEN, EVIDENCE_SHA256_LEN, sha_hex);
	audit_hex(sig, sizeof(sig), sig_hex);
	o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "format", EVIDENCE_SIG_FORMAT,
		      "algorithm", "ed25519", "key_id", id, "public_key", pub_hex,
		      "report_sha256", sha_hex, "signature", sig_hex);
	text = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	json_decref(o);
	if (!text) {
		say(err, n, "out of memory");
		return -ENOMEM;
	}
	/* One trailing newline, as a text file should end. */
	*sig_text = malloc(strlen(text) + 2);
	if (!*sig_text) {
		free(text);
		say(err, n, "out of memory");
		return -ENOMEM;
	}
	sprintf(*sig_text, "%s\n", text);
	free(text);
	return 0;
}

/* The signature file's fields, every one required, none other allowed. */
struct sig_fields {
	uint8_t pub[AUDIT_PUBKEY_LEN];
	uint8_t sha[EVIDENCE_SHA256_LEN];
	uint8_t sig[AUDIT_SIG_LEN];
	char key_id[AUDIT_KEY_ID_HEXLEN + 1];
};

static const char *const sig_keys[] = {"format", "algorithm", "key_id", "public_key",
				       "report_sha256", "signature"};

static int sig_parse(const char *text, size_t len, struct sig_fields *f, char *msg, size_t n)
{
	json_error_t je;
	json_t *o;
	const char *key, *s;
	json_t *v;
	int rc = -EINVAL;

	if (len > EVIDENCE_SIG_MAX) {
		say(msg, n, "the signature file is %zu bytes, not a signature (at most %d)", len,
		    EVIDENCE_SIG_MAX);
		return -EINVAL;
	}
	o = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
	if (!o || !json_is_object(o)) {
		say(msg, n, "the signature file is not a JSON object");
		goto out;
	}
	json_object_foreach(o, key, v) {
		bool known = false;

		for (size_t i = 0; i < sizeof(sig_keys) / sizeof(sig_keys[0]); i++)
			known |= strcmp(key, sig_keys[i]) == 0;
		if (!known || !json_is_string(v)) {
			say(msg, n, "the signature file has %s field \"%.40s\"",
			    known ? "a non-string" : "an unknown", key);
			goto out;
		}
	}
	s = json_string_value(json_object_get(o, "format"));
	if (!s || strcmp(s, EVIDENCE_SIG_FORMAT) != 0) {
		say(msg, n, "the signature file's format is not \"%s\"", EVIDENCE_SIG_FORMAT);
		goto out;
	}
	s = json_string_value(json_object_get(o, "algorithm"));
	if (!s || strcmp(s, "ed25519") != 0) {
		say(msg, n, "the signature file's algorithm is not ed25519");
		goto out;
	}
	s = json_string_value(json_object_get(o, "public_key"));
	if (!s || audit_unhex(s, f->pub, sizeof(f->pub))) {
		say(msg, n, "the signature file's public_key is not 64 lower-case hex digits");
		goto out;
	}
	s = json_string_value(json_object_get(o, "report_sha256"));
	if (!s || audit_unhex(s, f->sha, sizeof(f->sha))) {
		say(msg, n, "the signature file's report_sha256 is not 64 lower-case hex digits");
		goto out;
	}
	s = json_string_value(json_object_get(o, "signature"));
	if (!s || audit_unhex(s, f->sig, sizeof(f->sig))) {
		say(msg, n, "the signature file's signature is not 128 lower-case hex digits");
		goto out;
	}
	audit_key_id(f->pub, f->key_id);
	s = json_string_value(json_object_get(o, "key_id"));
	if (!s || strcmp(s, f->key_id) != 0) {
		say(msg, n, "the signature file's key_id is not the id of its public_key (%s)",
		    f->key_id);
		goto out;
	}
	rc = 0;
out:
	json_decref(o);
	return rc;
}

enum evidence_verdict evidence_verify(const char *report, size_t len, const char *sig,
				      size_t siglen, EVP_PKEY *const *keys, unsigned nkeys,
				      char *key_id, char *msg, size_t n)
{
	uint8_t m[DOMAIN_LEN + EVIDENCE_SHA256_LEN];
	char have[2 * EVIDENCE_SHA256_LEN + 1], want[2 * EVIDENCE_SHA256_LEN + 1];
	char why[256];
	struct sig_fields f;
	EVP_PKEY *named;
	bool good;

	if (key_id)
		key_id[0] = '\0';
	if (sig_parse(sig, siglen, &f, msg, n))
		return EVIDENCE_INVALID;
	if (key_id)
		memcpy(key_id, f.key_id, sizeof(f.key_id));
	if (signed_message(report, len, m)) {
		say(msg, n, "cannot compute SHA-256 (OpenSSL)");
		return EVIDENCE_INVALID;
	}
	if (CRYPTO_memcmp(m + DOMAIN_LEN, f.sha, sizeof(f.sha)) != 0) {
		audit_hex(m + DOMAIN_LEN, EVIDENCE_SHA256_LEN, have);
		audit_hex(f.sha, sizeof(f.sha), want);
		say(msg, n,
		    "the report was changed after it was signed, or the signature is another "
		    "report's: its SHA-256 is %s, the signature covers %s",
		    have, want);
		return EVIDENCE_INVALID;
	}
	named = audit_key_from_raw(f.pub);
	if (!named) {
		say(msg, n, "the signature file's public_key is not a valid Ed25519 key");
		return EVIDENCE_INVALID;
	}
	good = audit_sig_valid(named, m, sizeof(m), f.sig);
	EVP_PKEY_free(named);
	if (!good) {
		say(msg, n, "the signature does not verify under key %s: the signature file was "
			    "altered or forged",
		    f.key_id);
		return EVIDENCE_INVALID;
	}
	/* The key the file names made the signature; is it a key the verifier trusts? */
	for (unsigned i = 0; i < nkeys; i++) {
		uint8_t pub[AUDIT_PUBKEY_LEN];

		if (!audit_key_raw_public(keys[i], pub) &&
		    CRYPTO_memcmp(pub, f.pub, sizeof(pub)) == 0) {
			say(msg, n, "report unchanged since it was signed by key %s", f.key_id);
			return EVIDENCE_VALID;
		}
	}
	if (nkeys) {
		say(msg, n, "signed by key %s, which is none of the keys given: not trusted",
		    f.key_id);
		return EVIDENCE_INVALID;
	}
	snprintf(why, sizeof(why), "unchanged under the key it names (%s), but no public key was "
				   "given to vouch for that key", f.key_id);
	say(msg, n, "%s", why);
	return EVIDENCE_UNVOUCHED;
}
