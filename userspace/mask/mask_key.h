/*
 * mask_key: the secret key of the `hash` strategy, and the keyed HMAC-SHA-256 each session
 * computes with it.
 *
 * The key is the whole content of a file named in the configuration (mask.key_file). The
 * file must be a regular file owned by pgwarden's user or root, not readable or writable
 * by group or others (0600 or stricter), and hold MASK_KEY_MIN..MASK_KEY_MAX bytes; a
 * symlink is refused. `head -c 32 /dev/urandom > key && chmod 600 key` makes one.
 *
 * The bytes live in a page of their own that is locked in memory when the process may
 * (mlock), excluded from core dumps (MADV_DONTDUMP), and cleansed (OPENSSL_cleanse) before
 * it is unmapped. Nothing here logs or formats the key. OpenSSL keeps its own copy inside
 * each keyed context and cleanses it when the context is freed.
 *
 * A struct mask_key is immutable once loaded and may be shared by every worker; a struct
 * mask_mac is one session's (one thread's) HMAC context, re-keyed per value for free.
 */
#ifndef PGWARDEN_MASK_KEY_H
#define PGWARDEN_MASK_KEY_H

#include <stddef.h>
#include <stdint.h>

#define MASK_KEY_MIN 32   /* 256 bits: HMAC-SHA-256's own strength */
#define MASK_KEY_MAX 4096 /* one page */
#define MASK_MAC_LEN 32   /* SHA-256 */

struct mask_key;
struct mask_mac;

/*
 * Load the key file at path. Returns 0 and *out, or -errno with a one-line reason in
 * err[0..errlen): -ENOENT/-EACCES (cannot open), -EPERM (group/other permissions, or an
 * owner other than the effective user or root), -EINVAL (not a regular file, too short
 * or too long), -ENOMEM, -EIO (OpenSSL has no HMAC-SHA-256).
 */
int mask_key_load(const char *path, struct mask_key **out, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* The same from bytes in memory (tests, and a key handed over by a parent). */
int mask_key_from_bytes(const void *bytes, size_t len, struct mask_key **out)
	__attribute__((warn_unused_result));

/* Cleanse and release. NULL is fine. */
void mask_key_free(struct mask_key *k);

/* A per-session context keyed with k (k may be freed afterwards). 0, -ENOMEM or -EIO. */
int mask_mac_new(const struct mask_key *k, struct mask_mac **out)
	__attribute__((warn_unused_result));
void mask_mac_free(struct mask_mac *m);

/* One value: begin, update any number of times, final. final returns 0 or -EIO. */
int mask_mac_begin(struct mask_mac *m) __attribute__((warn_unused_result));
int mask_mac_update(struct mask_mac *m, const void *p, size_t n)
	__attribute__((warn_unused_result));
int mask_mac_final(struct mask_mac *m, uint8_t out[MASK_MAC_LEN])
	__attribute__((warn_unused_result));

#endif
