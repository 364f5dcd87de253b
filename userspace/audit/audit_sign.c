/* audit_sign: Ed25519 keys for audit checkpoints (see audit_sign.h). */
#include "audit/audit_sign.h"
#include "audit/audit_record.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_FILE_MAX (64 * 1024) /* an Ed25519 PEM is about 120 bytes */

/* OpenSSL would prompt on the terminal for a passphrase; a daemon has nobody to ask. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/* The whole file at fd into a buffer the caller wipes and frees. 0 or -errno. */
static int read_key_file(int fd, char **out, size_t *len)
{
	char *buf = malloc(KEY_FILE_MAX + 1);
	size_t n = 0;

	if (!buf)
		return -ENOMEM;
	while (n <= KEY_FILE_MAX) {
		ssize_t r = read(fd, buf + n, KEY_FILE_MAX + 1 - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			int err = -errno;

			OPENSSL_cleanse(buf, n);
			free(buf);
			return err;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > KEY_FILE_MAX) {
		OPENSSL_cleanse(buf, n);
		free(buf);
		return -EFBIG;
	}
	*out = buf;
	*len = n;
	return 0;
}

/* Parse PEM bytes: a private key when want_private, else a public key or the public half
 * of a private one. NULL when the bytes are neither. */
static EVP_PKEY *parse_pem(const char *buf, size_t len, bool want_private)
{
	BIO *bio = BIO_new_mem_buf(buf, (int)len);
	EVP_PKEY *key;

	if (!bio)
		return NULL;
	key = PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL);
	if (!key && !want_private) {
		BIO_free(bio);
		bio = BIO_new_mem_buf(buf, (int)len);
		if (!bio)
			return NULL;
		key = PEM_read_bio_PUBKEY(bio, NULL, no_passphrase, NULL);
	}
	BIO_free(bio);
	return key;
}

static int load_key(const char *path, bool private_key, EVP_PKEY **out, char *err, size_t n)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	EVP_PKEY *key;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, n, "%s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st)) {
		rc = -errno;
		snprintf(err, n, "%s: %s", path, strerror(errno));
		close(fd);
		return rc;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, n, "%s: not a regular file", path);
		close(fd);
		return -EINVAL;
	}
	if (private_key && (st.st_mode & 077)) {
		snprintf(err, n,
			 "%s: mode %04o lets its group or others at the signing key; make it 0600 "
			 "(chmod 600)",
			 path, (unsigned)(st.st_mode & 07777));
		close(fd);
		return -EPERM;
	}
	if (private_key && st.st_uid != geteuid() && st.st_uid != 0) {
		snprintf(err, n, "%s: owned by uid %u, neither this user nor root", path,
			 (unsigned)st.st_uid);
		close(fd);
		return -EPERM;
	}
	rc = read_key_file(fd, &buf, &len);
	close(fd);
	if (rc) {
		snprintf(err, n, "%s: %s", path, rc == -EFBIG ? "too large for a key" : strerror(-rc));
		return rc;
	}
	key = parse_pem(buf, len, private_key);
	OPENSSL_cleanse(buf, len);
	free(buf);
	if (!key) {
		snprintf(err, n, "%s: not a PEM %s key (encrypted keys are not supported)", path,
			 private_key ? "private" : "public or private");
		return -EINVAL;
	}
	if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519) {
		snprintf(err, n, "%s: not an Ed25519 key (make one with pgwardenctl audit keygen)",
			 path);
		EVP_PKEY_free(key);
		return -EINVAL;
	}
	*out = key;
	return 0;
}

int audit_key_load_private(const char *path, EVP_PKEY **out, char *err, size_t n)
{
	return load_key(path, true, out, err, n);
}

int audit_key_load_public(const char *path, EVP_PKEY **out, char *err, size_t n)
{
	return load_key(path, false, out, err, n);
}

EVP_PKEY *audit_key_from_raw(const uint8_t pub[AUDIT_PUBKEY_LEN])
{
	return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, AUDIT_PUBKEY_LEN);
}

int audit_key_raw_public(EVP_PKEY *key, uint8_t pub[AUDIT_PUBKEY_LEN])
{
	size_t len = AUDIT_PUBKEY_LEN;

	if (EVP_PKEY_get_id(key) != EVP_PKEY_ED25519 ||
	    EVP_PKEY_get_raw_public_key(key, pub, &len) != 1 || len != AUDIT_PUBKEY_LEN)
		return -EINVAL;
	return 0;
}

void audit_key_id(const uint8_t pub[AUDIT_PUBKEY_LEN], char id[AUDIT_KEY_ID_HEXLEN + 1])
{
	uint8_t digest[SHA256_DIGEST_LENGTH];

	SHA256(pub, AUDIT_PUBKEY_LEN, digest);
	audit_hex(digest, AUDIT_KEY_ID_HEXLEN / 2, id);
}

int audit_sign(EVP_PKEY *key, const void *msg, size_t n, uint8_t sig[AUDIT_SIG_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t len = AUDIT_SIG_LEN;
	int ok;

	if (!ctx)
		return -ENOMEM;
	ok = EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
	     EVP_DigestSign(ctx, sig, &len, msg, n) == 1 && len == AUDIT_SIG_LEN;
	EVP_MD_CTX_free(ctx);
	return ok ? 0 : -EIO;
}

bool audit_sig_valid(EVP_PKEY *key, const void *msg, size_t n, const uint8_t sig[AUDIT_SIG_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;

	if (!ctx)
		return false;
	ok = EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1 &&
	     EVP_DigestVerify(ctx, sig, AUDIT_SIG_LEN, msg, n) == 1;
	EVP_MD_CTX_free(ctx);
	return ok;
}

/* Write a PEM (made by write into a memory BIO) to a new file of the given mode. */
static int write_pem_file(const char *path, mode_t mode, EVP_PKEY *key, bool private_key,
			  char *err, size_t n)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *data;
	long len;
	int fd, rc = 0;

	if (!bio)
		return -ENOMEM;
	if ((private_key ? PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) :
			   PEM_write_bio_PUBKEY(bio, key)) != 1) {
		BIO_free(bio);
		snprintf(err, n, "%s: could not encode the key", path);
		return -EIO;
	}
	len = BIO_get_mem_data(bio, &data);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		rc = -errno;
		snprintf(err, n, "%s: %s", path,
			 errno == EEXIST ? "already exists (keygen never overwrites a key)" :
					   strerror(errno));
		goto out;
	}
	/* The umask may have narrowed the mode, never widened it; make it exact. */
	if (fchmod(fd, mode) == 0) {
		for (long off = 0; off < len;) {
			ssize_t w = write(fd, data + off, (size_t)(len - off));

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				rc = -errno;
				break;
			}
			off += w;
		}
	} else {
		rc = -errno;
	}
	if (!rc && fsync(fd))
		rc = -errno;
	if (close(fd) && !rc)
		rc = -errno;
	if (rc) {
		snprintf(err, n, "%s: %s", path, strerror(-rc));
		unlink(path);
	}
out:
	if (private_key)
		OPENSSL_cleanse(data, (size_t)len);
	BIO_free(bio);
	return rc;
}

int audit_keygen(const char *path, char *err, size_t n)
{
	char pub_path[4096];
	EVP_PKEY *key;
	int rc;

	if (snprintf(pub_path, sizeof(pub_path), "%s.pub", path) >= (int)sizeof(pub_path)) {
		snprintf(err, n, "%s: path too long", path);
		return -ENAMETOOLONG;
	}
	if (access(pub_path, F_OK) == 0) {
		snprintf(err, n, "%s: already exists (keygen never overwrites a key)", pub_path);
		return -EEXIST;
	}
	key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	if (!key) {
		snprintf(err, n, "could not generate an Ed25519 key");
		return -EIO;
	}
	rc = write_pem_file(path, 0600, key, true, err, n);
	if (!rc) {
		rc = write_pem_file(pub_path, 0644, key, false, err, n);
		if (rc)
			unlink(path);
	}
	EVP_PKEY_free(key);
	return rc;
}
