/* mask_key: the hash strategy's key and per-session HMAC (see mask_key.h). */
#include "mask/mask_key.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

struct mask_key {
	uint8_t *bytes; /* a private mapping of map_len bytes */
	size_t len;
	size_t map_len;
	EVP_MAC_CTX *keyed; /* template every session duplicates */
};

struct mask_mac {
	EVP_MAC_CTX *ctx;
};

/* A page for the key: locked if the process may lock, never in a core dump. */
static uint8_t *key_page(size_t *map_len)
{
	long page = sysconf(_SC_PAGESIZE);
	size_t n = page > 0 ? (size_t)page : 4096;
	void *p;

	if (n < MASK_KEY_MAX)
		n = MASK_KEY_MAX;
	p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	(void)madvise(p, n, MADV_DONTDUMP);
	(void)mlock(p, n); /* best effort: without CAP_IPC_LOCK the limit may refuse it */
	*map_len = n;
	return p;
}

static void key_page_free(uint8_t *p, size_t map_len)
{
	if (!p)
		return;
	OPENSSL_cleanse(p, map_len);
	(void)munlock(p, map_len);
	munmap(p, map_len);
}

static int key_make_template(struct mask_key *k)
{
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	OSSL_PARAM params[2];
	char digest[] = "SHA256";

	if (!mac)
		return -EIO;
	k->keyed = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac); /* the context holds its own reference */
	if (!k->keyed)
		return -ENOMEM;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(k->keyed, k->bytes, k->len, params))
		return -EIO;
	return 0;
}

void mask_key_free(struct mask_key *k)
{
	if (!k)
		return;
	EVP_MAC_CTX_free(k->keyed);
	key_page_free(k->bytes, k->map_len);
	free(k);
}

static int key_new(struct mask_key **out)
{
	struct mask_key *k = calloc(1, sizeof(*k));

	if (!k)
		return -ENOMEM;
	k->bytes = key_page(&k->map_len);
	if (!k->bytes) {
		free(k);
		return -ENOMEM;
	}
	*out = k;
	return 0;
}

int mask_key_from_bytes(const void *bytes, size_t len, struct mask_key **out)
{
	struct mask_key *k;
	int rc;

	if (len < MASK_KEY_MIN || len > MASK_KEY_MAX)
		return -EINVAL;
	rc = key_new(&k);
	if (rc < 0)
		return rc;
	memcpy(k->bytes, bytes, len);
	k->len = len;
	rc = key_make_template(k);
	if (rc < 0) {
		mask_key_free(k);
		return rc;
	}
	*out = k;
	return 0;
}

int mask_key_load(const char *path, struct mask_key **out, char *err, size_t errlen)
{
	struct mask_key *k = NULL;
	struct stat st;
	size_t got = 0;
	int fd, rc;

	if (errlen)
		err[0] = '\0';
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		rc = -errno;
		if (errlen)
			snprintf(err, errlen, "mask key file %s: %s", path,
				 rc == -ELOOP ? "is a symbolic link" : strerror(-rc));
		return rc == -ELOOP ? -EINVAL : rc;
	}
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		if (errlen)
			snprintf(err, errlen, "mask key file %s: %s", path, strerror(-rc));
		goto err_close;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = -EINVAL;
		if (errlen)
			snprintf(err, errlen, "mask key file %s: not a regular file", path);
		goto err_close;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		rc = -EPERM;
		if (errlen)
			snprintf(err, errlen,
				 "mask key file %s: mode %04o lets group or others in; chmod 600 it",
				 path, (unsigned)(st.st_mode & 07777));
		goto err_close;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		rc = -EPERM;
		if (errlen)
			snprintf(err, errlen,
				 "mask key file %s: owned by uid %u, not by pgwarden's user or root",
				 path, (unsigned)st.st_uid);
		goto err_close;
	}
	if (st.st_size < MASK_KEY_MIN || st.st_size > MASK_KEY_MAX) {
		rc = -EINVAL;
		if (errlen)
			snprintf(err, errlen,
				 "mask key file %s: %lld bytes; a key has %d to %d bytes", path,
				 (long long)st.st_size, MASK_KEY_MIN, MASK_KEY_MAX);
		goto err_close;
	}
	rc = key_new(&k);
	if (rc < 0)
		goto err_close;
	/* Read up to one byte more than stat said, to see a file that grew meanwhile. */
	while (got <= MASK_KEY_MAX) {
		ssize_t n = read(fd, k->bytes + got, k->map_len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			if (errlen)
				snprintf(err, errlen, "mask key file %s: %s", path,
					 strerror(-rc));
			goto err_free;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	if (got < MASK_KEY_MIN || got > MASK_KEY_MAX) {
		rc = -EINVAL;
		if (errlen)
			snprintf(err, errlen, "mask key file %s: changed while being read", path);
		goto err_free;
	}
	k->len = got;
	rc = key_make_template(k);
	if (rc < 0) {
		if (errlen)
			snprintf(err, errlen, "mask key file %s: OpenSSL has no HMAC-SHA-256",
				 path);
		goto err_free;
	}
	close(fd);
	*out = k;
	return 0;

err_free:
	mask_key_free(k);
err_close:
	close(fd);
	return rc;
}

int mask_mac_new(const struct mask_key *k, struct mask_mac **out)
{
	struct mask_mac *m = calloc(1, sizeof(*m));

	if (!m)
		return -ENOMEM;
	m->ctx = EVP_MAC_CTX_dup(k->keyed);
	if (!m->ctx) {
		free(m);
		return -ENOMEM;
	}
	*out = m;
	return 0;
}

void mask_mac_free(struct mask_mac *m)
{
	if (!m)
		return;
	EVP_MAC_CTX_free(m->ctx);
	free(m);
}

int mask_mac_begin(struct mask_mac *m)
{
	/* A NULL key re-initialises with the key the context already holds. */
	return EVP_MAC_init(m->ctx, NULL, 0, NULL) ? 0 : -EIO;
}

int mask_mac_update(struct mask_mac *m, const void *p, size_t n)
{
	if (!n)
		return 0;
	return EVP_MAC_update(m->ctx, p, n) ? 0 : -EIO;
}

int mask_mac_final(struct mask_mac *m, uint8_t out[MASK_MAC_LEN])
{
	size_t outl = 0;

	if (!EVP_MAC_final(m->ctx, out, &outl, MASK_MAC_LEN) || outl != MASK_MAC_LEN)
		return -EIO;
	return 0;
}
