/*
 * tls_pki: certificates and keys made at test time with the OpenSSL API, for the TLS suites.
 * Nothing is committed: each suite makes what it needs in a temporary directory and removes
 * it. The API lets a test make what a CA would never sign on purpose (a CN with a NUL in it,
 * two CNs, a certificate valid only last year), which the relay must refuse.
 *
 * Keys are P-256 (fast to make) unless a test asks for RSA or Ed25519. Every function
 * aborts the test on failure: a fixture that cannot be made is a broken test, not a pass.
 */
#ifndef PGWARDEN_TLS_PKI_H
#define PGWARDEN_TLS_PKI_H

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum pki_key_type { PKI_EC = 0, PKI_RSA, PKI_ED25519 };
enum pki_usage { PKI_ANY = 0, PKI_SERVER, PKI_CLIENT, PKI_CA };

#define PKI_MAX_NAMES 4

struct pki_name { /* one subject entry or SAN, with a length so it may hold a NUL */
	const char *field; /* subject: "CN", "O", ...; SAN: "DNS", "email", "URI", "IP" */
	const char *value;
	int len;           /* 0: strlen(value) */
};

struct pki_spec {
	struct pki_name subject[PKI_MAX_NAMES];
	struct pki_name san[PKI_MAX_NAMES];
	enum pki_usage usage;
	enum pki_key_type key_type;
	long not_before; /* seconds from now; default -3600 */
	long not_after;  /* seconds from now; default one day */
	bool expired;    /* valid from two days ago until yesterday */
	const char *md;  /* signature hash: "SHA256" (default), "SHA1", "SHA384" */
	long serial;     /* default: a counter */
	bool two_san_extensions;
};

struct pki_cert {
	X509 *cert;
	EVP_PKEY *key;
};

static inline void pki_die(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("tls_pki: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	abort();
}

static inline EVP_PKEY *pki_key(enum pki_key_type type)
{
	EVP_PKEY *k = NULL;

	switch (type) {
	case PKI_EC:
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
		break;
	case PKI_RSA:
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
		break;
	case PKI_ED25519:
		k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
		break;
	}
	if (!k)
		pki_die("keygen failed");
	return k;
}

static inline void pki_add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	if (!ext || !X509_add_ext(cert, ext, -1))
		pki_die("extension %d=%s", nid, value);
	X509_EXTENSION_free(ext);
}

/* A SAN extension built by hand, so that a name may hold any byte. */
static inline void pki_add_san(X509 *cert, const struct pki_name *san)
{
	GENERAL_NAMES *names = GENERAL_NAMES_new();

	for (int i = 0; i < PKI_MAX_NAMES && san[i].field; i++) {
		GENERAL_NAME *gn = GENERAL_NAME_new();
		int len = san[i].len ? san[i].len : (int)strlen(san[i].value);

		if (strcmp(san[i].field, "IP") == 0) {
			ASN1_OCTET_STRING *ip = a2i_IPADDRESS(san[i].value);

			if (!ip)
				pki_die("IP SAN %s", san[i].value);
			GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
		} else {
			ASN1_IA5STRING *s = ASN1_IA5STRING_new();
			int type = strcmp(san[i].field, "DNS") == 0	? GEN_DNS :
				   strcmp(san[i].field, "email") == 0 ? GEN_EMAIL :
									GEN_URI;

			ASN1_STRING_set(s, san[i].value, len);
			GENERAL_NAME_set0_value(gn, type, s);
		}
		sk_GENERAL_NAME_push(names, gn);
	}
	if (!X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_APPEND))
		pki_die("SAN");
	GENERAL_NAMES_free(names);
}

/* A certificate per spec, signed by issuer (NULL: self-signed). */
static inline struct pki_cert pki_make(const struct pki_spec *spec, const struct pki_cert *issuer)
{
	static long next_serial = 1000;
	struct pki_cert out = {.key = pki_key(spec->key_type)};
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	const EVP_MD *md = NULL;
	long nb = spec->not_before ? spec->not_before : -3600;
	long na = spec->not_after ? spec->not_after : 86400;

	if (spec->expired) {
		nb = -2 * 86400;
		na = -86400;
	}
	X509_set_version(cert, X509_VERSION_3);
	ASN1_INTEGER_set(X509_get_serialNumber(cert), spec->serial ? spec->serial : next_serial++);
	X509_gmtime_adj(X509_getm_notBefore(cert), nb);
	X509_gmtime_adj(X509_getm_notAfter(cert), na);
	for (int i = 0; i < PKI_MAX_NAMES && spec->subject[i].field; i++) {
		const struct pki_name *n = &spec->subject[i];
		int len = n->len ? n->len : (int)strlen(n->value);

		/* Appended with -1 each time: a second "CN" is a second entry, not a replacement. */
		if (!X509_NAME_add_entry_by_txt(name, n->field, MBSTRING_UTF8,
						(const unsigned char *)n->value, len, -1, 0))
			pki_die("subject %s", n->field);
	}
	X509_set_subject_name(cert, name);
	X509_set_issuer_name(cert, issuer ? X509_get_subject_name(issuer->cert) : name);
	X509_NAME_free(name);
	X509_set_pubkey(cert, out.key);
	switch (spec->usage) {
	case PKI_CA:
		pki_add_ext(cert, issuer ? issuer->cert : cert, NID_basic_constraints,
			    "critical,CA:TRUE");
		pki_add_ext(cert, issuer ? issuer->cert : cert, NID_key_usage,
			    "critical,keyCertSign,cRLSign");
		break;
	case PKI_SERVER:
		pki_add_ext(cert, issuer ? issuer->cert : cert, NID_ext_key_usage, "serverAuth");
		break;
	case PKI_CLIENT:
		pki_add_ext(cert, issuer ? issuer->cert : cert, NID_ext_key_usage, "clientAuth");
		break;
	case PKI_ANY:
		break;
	}
	pki_add_ext(cert, issuer ? issuer->cert : cert, NID_subject_key_identifier, "hash");
	if (issuer)
		pki_add_ext(cert, issuer->cert, NID_authority_key_identifier, "keyid:always");
	if (spec->san[0].field) {
		pki_add_san(cert, spec->san);
		if (spec->two_san_extensions) {
			/* X509_add1_ext_i2d refuses a duplicate; add the copy directly. */
			X509_EXTENSION *dup = X509_EXTENSION_dup(
				X509_get_ext(cert, X509_get_ext_by_NID(cert, NID_subject_alt_name, -1)));

			X509_add_ext(cert, dup, -1);
			X509_EXTENSION_free(dup);
		}
	}
	if ((issuer ? issuer->key : out.key) && EVP_PKEY_get_id(issuer ? issuer->key : out.key) !=
							  EVP_PKEY_ED25519)
		md = EVP_get_digestbyname(spec->md ? spec->md : "SHA256");
	if (!X509_sign(cert, issuer ? issuer->key : out.key, md))
		pki_die("sign");
	out.cert = cert;
	return out;
}

static inline void pki_free(struct pki_cert *c)
{
	X509_free(c->cert);
	EVP_PKEY_free(c->key);
	c->cert = NULL;
	c->key = NULL;
}

/* A CRL from ca revoking the given serials (n of them), valid for next_update seconds
 * (negative: already expired). */
static inline X509_CRL *pki_crl(const struct pki_cert *ca, const long *serials, int n,
				long next_update)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_new();

	X509_CRL_set_version(crl, X509_CRL_VERSION_2);
	X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca->cert));
	X509_gmtime_adj(t, next_update < 0 ? 2 * next_update : -3600);
	X509_CRL_set1_lastUpdate(crl, t);
	X509_gmtime_adj(t, next_update);
	X509_CRL_set1_nextUpdate(crl, t);
	for (int i = 0; i < n; i++) {
		X509_REVOKED *r = X509_REVOKED_new();
		ASN1_INTEGER *serial = ASN1_INTEGER_new();

		ASN1_INTEGER_set(serial, serials[i]);
		X509_REVOKED_set_serialNumber(r, serial);
		X509_gmtime_adj(t, -60);
		X509_REVOKED_set_revocationDate(r, t);
		X509_CRL_add0_revoked(crl, r);
		ASN1_INTEGER_free(serial);
	}
	ASN1_TIME_free(t);
	X509_CRL_sort(crl);
	if (!X509_CRL_sign(crl, ca->key, EVP_sha256()))
		pki_die("CRL sign");
	return crl;
}

/* ---- files ---------------------------------------------------------------------------- */

/* A temporary directory for a suite's files; pki_rmdir() removes it and everything in it. */
static inline char *pki_mkdir(void)
{
	char *dir = strdup("/tmp/pgwarden-tls-test.XXXXXX");

	if (!dir || !mkdtemp(dir))
		pki_die("mkdtemp");
	return dir;
}

static inline void pki_rmdir(char *dir)
{
	char cmd[300];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "tls_pki: could not remove %s\n", dir);
	free(dir);
}

static inline const char *pki_path(const char *dir, const char *name, char *buf, size_t n)
{
	snprintf(buf, n, "%s/%s", dir, name);
	return buf;
}

/* Write certificates (chain order), then close. */
static inline void pki_write_certs(const char *path, X509 *const *certs, int n)
{
	FILE *f = fopen(path, "w");

	if (!f)
		pki_die("open %s", path);
	for (int i = 0; i < n; i++)
		if (!PEM_write_X509(f, certs[i]))
			pki_die("write %s", path);
	fclose(f);
}

static inline void pki_write_cert(const char *path, X509 *cert)
{
	pki_write_certs(path, &cert, 1);
}

/* A private key, mode 0600 (pgwarden refuses keys others can read). */
static inline void pki_write_key(const char *path, EVP_PKEY *key)
{
	FILE *f = fopen(path, "w");

	if (!f || fchmod(fileno(f), 0600) != 0)
		pki_die("open %s", path);
	if (!PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL))
		pki_die("write %s", path);
	fclose(f);
}

static inline void pki_write_crls(const char *path, X509_CRL *const *crls, int n)
{
	FILE *f = fopen(path, "w");

	if (!f)
		pki_die("open %s", path);
	for (int i = 0; i < n; i++)
		if (!PEM_write_X509_CRL(f, crls[i]))
			pki_die("write %s", path);
	fclose(f);
}

#endif
