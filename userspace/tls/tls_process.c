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

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/provider.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Private keys of a snapshot or two (a reload holds both briefly), a few KiB each. The
 * secure heap is mlock()ed and madvise(MADV_DONTDUMP)ed: keys never reach swap or a core
 * dump. 64 KiB fits the default RLIMIT_MEMLOCK.
 */
#define TLS_SECURE_HEAP_SIZE (64 * 1024)
#define TLS_SECURE_HEAP_MIN 64

static void errf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

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
			errf(err, errlen,
			     "tls.fips: no FIPS provider is installed (OpenSSL looked for %s); see "
			     "docs/TLS.md",
			     path);
		} else {
			fclose(f);
			errf(err, errlen,
			     "tls.fips: the FIPS provider %s did not load (%s): is fipsmodule.cnf "
			     "installed and included by openssl.cnf? see docs/TLS.md",
			     path, last_openssl_error(why, sizeof(why)));
		}
		ERR_clear_error();
		return -ENOENT;
	}
	/* Encoders and decoders (PEM keys and certificates) live in the base provider. */
	base = OSSL_PROVIDER_load(NULL, "base");
	if (!base) {
		errf(err, errlen, "tls.fips: the base provider did not load (%s)",
		     last_openssl_error(why, sizeof(why)));
		OSSL_PROVIDER_unload(fips);
		ERR_clear_error();
		return -ENOENT;
	}
	if (!EVP_default_properties_enable_fips(NULL, 1)) {
		errf(err, errlen, "tls.fips: cannot make fips=yes the default property (%s)",
		     last_openssl_error(why, sizeof(why)));
		OSSL_PROVIDER_unload(base);
		OSSL_PROVIDER_unload(fips);
		ERR_clear_error();
		return -EIO;
	}
	return 0;
}

int tls_process_init(bool fips, const char **warning, char *err, size_t errlen)
{
	*warning = NULL;
	if (fips) {
		int rc = fips_enable(err, errlen);

		if (rc)
			return rc;
	}
	if (!CRYPTO_secure_malloc_initialized() &&
	    CRYPTO_secure_malloc_init(TLS_SECURE_HEAP_SIZE, TLS_SECURE_HEAP_MIN) == 0)
		*warning = "no secure heap for private keys (RLIMIT_MEMLOCK below 64 KiB?): keys "
			   "live in the ordinary heap";
	return 0;
}

bool tls_fips_enabled(void)
{
	return EVP_default_properties_is_fips_enabled(NULL) &&
	       OSSL_PROVIDER_available(NULL, "fips");
}
