/*
 * audit_sign: the Ed25519 keys that sign the audit trail's checkpoints (OpenSSL 3, EVP).
 *
 * The private key is a PEM file as `openssl genpkey -algorithm ed25519` or
 * `pgwardenctl audit keygen` writes it. Loading it refuses a file that is not a regular
 * file, that its group or others may read or write, or that belongs to neither the
 * caller's user nor root: a signing key others can read signs nothing an assessor can
 * trust. The file's bytes are wiped from memory once OpenSSL has parsed them.
 *
 * A key is named in the trail by its key id: the first 16 bytes of SHA-256 over the raw
 * 32-byte public key, in hex. The verifier matches checkpoints to keys by it.
 */
#ifndef PGWARDEN_AUDIT_SIGN_H
#define PGWARDEN_AUDIT_SIGN_H

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_PUBKEY_LEN 32
#define AUDIT_SIG_LEN 64
#define AUDIT_KEY_ID_HEXLEN 32

/* The private key at path, after the permission checks above. 0, or -errno with a
 * one-line message in err (naming the path, never key bytes). */
int audit_key_load_private(const char *path, EVP_PKEY **out, char *err, size_t n)
	__attribute__((warn_unused_result));

/* A public key for verification: a PEM public key, or (for convenience on the signing
 * host) a private key whose public half is used. No permission checks. 0 or -errno. */
int audit_key_load_public(const char *path, EVP_PKEY **out, char *err, size_t n)
	__attribute__((warn_unused_result));

/* An Ed25519 key from its raw 32-byte public key (the trail's daemon_start carries it). */
EVP_PKEY *audit_key_from_raw(const uint8_t pub[AUDIT_PUBKEY_LEN]);

/* The raw public key. 0 or -EINVAL (not an Ed25519 key). */
int audit_key_raw_public(EVP_PKEY *key, uint8_t pub[AUDIT_PUBKEY_LEN])
	__attribute__((warn_unused_result));

/* Key id of a raw public key: 32 lower-case hex digits and a NUL. */
void audit_key_id(const uint8_t pub[AUDIT_PUBKEY_LEN], char id[AUDIT_KEY_ID_HEXLEN + 1]);

/* Sign msg[0, n). 0 or -EIO. */
int audit_sign(EVP_PKEY *key, const void *msg, size_t n, uint8_t sig[AUDIT_SIG_LEN])
	__attribute__((warn_unused_result));

/* Does sig sign msg[0, n) under key? */
bool audit_sig_valid(EVP_PKEY *key, const void *msg, size_t n, const uint8_t sig[AUDIT_SIG_LEN]);

/*
 * Make a key pair: the private key to path (created, never overwritten, mode 0600) and
 * the public key to path + ".pub" (0644). 0, or -errno with a one-line message in err;
 * on failure nothing is left behind.
 */
int audit_keygen(const char *path, char *err, size_t n) __attribute__((warn_unused_result));

#endif
