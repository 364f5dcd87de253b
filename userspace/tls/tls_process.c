/*
 * tls_process: what OpenSSL needs once per process (see tls.h): the secure heap, and the
 * FIPS switch.
 *
 * FIPS must come before any other cryptography: once an algorithm has been fetched from
 * the default provider, a later switch would leave that one in use. With tls.fips the
 * default provider is never loaded at all (loading any provider explicitly stops OpenSSL
 * from loading the default one), so nothing can fall back to it: a fetch that the FIPS
 * provider cannot serve fails instead.
 */
#include "tls/tls.h"
#include "base/errbuf.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * The secure heap is mlock()ed and madvise(MADV_DONTDUMP)ed: keys never reach swap or a
 * core dump. It holds the private keys of a snapshot or two (a reload holds both briefly),
 * a few KiB each, in TLS_SECURE_HEAP_KEYS; and the private half of each live session's
 * key share (32 to 56 bytes: one TLS_SECURE_HEAP_MIN block), which OpenSSL keeps until
 * the session ends; TLS_SECURE_BYTES_PER_SESSION (tls.h) budgets for it. The heap's size
 * must be a power of two.
 */
#define TLS_SECURE_HEAP_KEYS (64 * 1024)
#define TLS_SECURE_HEAP_MIN 64
#define TLS_SECURE_HEAP_MAX ((size_t)1 << 30)

/* 0 until tls_process_init() made a secure heap (UINT64_MAX sessions: no bound). */
static size_t secure_heap_size;

/* Where OpenSSL looks for provider modules, for the message that says none was found.
 * OpenSSL_version() spells its build-time default 'MODULESDIR: "/path"'. */
static const char *modules_dir(char *buf, size_t n)
{
	const char *env = getenv("OPENSSL_MODULES"), *v, *q;

	if (env && *env)
		return env;
	v = OpenSSL_version(OPENSSL_MODULES_DIR);
	q = strchr(v, '"');
	if (!q) {
		snprintf(buf, n, "%s", v);
		return buf;
	}
	snprintf(buf, n, "%.*s", (int)strcspn(q + 1, "\""), q + 1);
	return buf;
}

/* OpenSSL's last error as text, for the end of a message; "" when none. */
static const char *last_openssl_error(char *buf, size_t n)
{
	unsigned long e = ERR_peek_last_error();

	buf[0] = '\0';
	if (e)
		ERR_error_string_n(e, buf, n);
	return buf;
}

static int fips_enable(char *err, size_t errlen)
{
	OSSL_PROVIDER *fips, *base;
	char why[256];

	/* OSSL_PROVIDER_load() reports "not found" and "self-test failed" alike; the file
	 * tells them apart for the operator. */
	fips = OSSL_PROVIDER_load(NULL, "fips");
	if (!fips) {
		char path[1024], dir[900];
		FILE *f;

		snprintf(path, sizeof(path), "%s/fips.so", modules_dir(dir, sizeof(dir)));
		f = fopen(path, "r");
		if (!f) {
			errbuf_set(err, errlen,
				   "tls.fips: no FIPS provider is installed (OpenSSL looked for "
				   "%s); see docs/TLS.md",
				   path);
		} else {
			fclose(f);
			errbuf_set(err, errlen,
				   "tls.fips: the FIPS provider %s did not load (%s): is "
				   "fipsmodule.cnf installed and included by openssl.cnf? see "
				   "docs/TLS.md",
				   path, last_openssl_error(why, sizeof(why)));
		}
		ERR_clear_error();
		return -ENOENT;
	}
	/* Encoders and decoders (PEM keys and certificates) live in the base provider. */
	base = OSSL_PROVIDER_load(NULL, "base");
	if (!base) {
		errbuf_set(err, errlen, "tls.fips: the base provider did not load (%s)",
			   last_openssl_error(why, sizeof(why)));
		OSSL_PROVIDER_unload(fips);
		ERR_clear_error();
		return -ENOENT;
	}
	if (!EVP_default_properties_enable_fips(NULL, 1)) {
		errbuf_set(err, errlen, "tls.fips: cannot make fips=yes the default property (%s)",
			   last_openssl_error(why, sizeof(why)));
		OSSL_PROVIDER_unload(base);
		OSSL_PROVIDER_unload(fips);
		ERR_clear_error();
		return -EIO;
	}
	return 0;
}

static size_t secure_heap_size_for(uint64_t tls_sessions)
{
	size_t size = TLS_SECURE_HEAP_KEYS;
	uint64_t want = TLS_SECURE_HEAP_KEYS;

	if (tls_sessions > (TLS_SECURE_HEAP_MAX - TLS_SECURE_HEAP_KEYS) / TLS_SECURE_BYTES_PER_SESSION)
		return TLS_SECURE_HEAP_MAX;
	want += tls_sessions * TLS_SECURE_BYTES_PER_SESSION;
	while (size < want)
		size *= 2;
	return size;
}

int tls_process_init(bool fips, uint64_t tls_sessions, char *warning, size_t warnlen, char *err,
		     size_t errlen)
{
	size_t size = secure_heap_size_for(tls_sessions);
	int rc;

	errbuf_set(warning, warnlen, "%s", "");
	if (fips) {
		rc = fips_enable(err, errlen);
		if (rc)
			return rc;
	}
	if (CRYPTO_secure_malloc_initialized())
		return 0; /* a second call (tests): the first one's heap stays */
	rc = CRYPTO_secure_malloc_init(size, TLS_SECURE_HEAP_MIN);
	if (rc == 0) {
		errbuf_set(warning, warnlen,
			   "no secure heap of %zu KiB for private keys (RLIMIT_MEMLOCK?): keys "
			   "live in the ordinary heap, where they can reach swap and core dumps",
			   size / 1024);
		return 0;
	}
	secure_heap_size = size;
	if (rc == 2)
		errbuf_set(warning, warnlen,
			   "the secure heap (%zu KiB) for private keys could not be locked in "
			   "memory (RLIMIT_MEMLOCK below it? LimitMEMLOCK= in the systemd unit): "
			   "keys can reach swap",
			   size / 1024);
	return 0;
}

uint64_t tls_sessions_for(const struct config *cfg)
{
	unsigned legs = (cfg->tls_client_mode != CONFIG_TLS_CLIENT_DISABLE) +
			(cfg->tls_server_mode != CONFIG_TLS_SERVER_DISABLE);

	return (uint64_t)legs * cfg->max_connections;
}

uint64_t tls_secure_heap_sessions(void)
{
	if (!secure_heap_size)
		return UINT64_MAX;
	return (secure_heap_size - TLS_SECURE_HEAP_KEYS) / TLS_SECURE_BYTES_PER_SESSION;
}

bool tls_fips_enabled(void)
{
	return EVP_default_properties_is_fips_enabled(NULL) &&
	       OSSL_PROVIDER_available(NULL, "fips");
}
