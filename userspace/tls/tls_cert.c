/*
 * tls_cert: what pgwarden reads out of a certificate (see tls.h): the identity a session is
 * known by, the subject and fingerprint it logs, and the tls-server-end-point hash that
 * SCRAM-SHA-256-PLUS binds to.
 *
 * The identity decides who a client is (policy, role mapping, audit), so the rules are
 * strict: one name, unambiguous, printable. Certificates have been forged around each
 * laxity here: "good.example\0.evil.example" in a CN, a second CN that one parser reads and
 * another ignores, control characters that rewrite a log line.
 */
#include "tls/tls.h"

#include <errno.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>

/* Printable ASCII: what a DNS name, an email address or a URI in a SAN may hold. */
static bool ia5_printable(const unsigned char *p, int len)
{
	for (int i = 0; i < len; i++)
		if (p[i] < 0x20 || p[i] >= 0x7f)
			return false;
	return true;
}

/* UTF-8 (already validated by OpenSSL's conversion) without NUL, C0, DEL or C1. */
static bool utf8_printable(const unsigned char *p, int len)
{
	for (int i = 0; i < len; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			return false;
		if (p[i] == 0xc2 && i + 1 < len && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f)
			return false; /* U+0080..U+009F */
	}
	return true;
}

static int copy_name(const unsigned char *p, int len, char **out, const char **why)
{
	char *s;

	if (len <= 0) {
		*why = "an empty name";
		return -EBADMSG;
	}
	if (len > TLS_IDENTITY_MAX) {
		*why = "a name longer than 1024 bytes";
		return -EBADMSG;
	}
	s = malloc((size_t)len + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, p, (size_t)len);
	s[len] = '\0';
	*out = s;
	return 0;
}

/*
 * The first DNS, email or URI SAN into *out. 0, -ENOENT when there is none (or no SAN
 * extension), -EBADMSG with *why.
 */
static int identity_from_san(X509 *cert, char **out, const char **why)
{
	GENERAL_NAMES *names;
	const ASN1_IA5STRING *first = NULL;
	int crit = 0, rc = -ENOENT;

	names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
	if (!names) {
		if (crit == -2) {
			*why = "two subjectAltName extensions";
			return -EBADMSG;
		}
		if (crit >= 0) {
			*why = "a subjectAltName extension that does not decode";
			return -EBADMSG;
		}
		return -ENOENT;
	}
	/* Every name that could be the identity must be clean, not just the first: a
	 * consumer that picks another (a policy matching any SAN) must not meet a NUL. */
	for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
		const ASN1_IA5STRING *s;

		if (gn->type == GEN_DNS)
			s = gn->d.dNSName;
		else if (gn->type == GEN_EMAIL)
			s = gn->d.rfc822Name;
		else if (gn->type == GEN_URI)
			s = gn->d.uniformResourceIdentifier;
		else
			continue;
		if (ASN1_STRING_length(s) <= 0) {
			/* RFC 5280 4.2.1.6: a SAN is never an empty string. */
			*why = "an empty subject alternative name";
			rc = -EBADMSG;
			goto out;
		}
		if (!ia5_printable(ASN1_STRING_get0_data(s), ASN1_STRING_length(s))) {
			*why = "a subject alternative name with a NUL byte or a control character";
			rc = -EBADMSG;
			goto out;
		}
		if (!first)
			first = s;
	}
	if (first)
		rc = copy_name(ASN1_STRING_get0_data(first), ASN1_STRING_length(first), out, why);
out:
	GENERAL_NAMES_free(names);
	return rc;
}

/* The subject's common name into *out (the CN is checked even when a SAN is the identity:
 * a rule or a mapping may still read the CN, and must never meet two or a hidden NUL).
 * 0, -ENOENT when there is none, -EBADMSG with *why, -ENOMEM. */
static int identity_from_cn(X509 *cert, char **out, const char **why)
{
	const X509_NAME *name = X509_get_subject_name(cert);
	const ASN1_STRING *data;
	unsigned char *utf8 = NULL;
	int idx, len, rc;

	idx = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (idx < 0)
		return -ENOENT;
	if (X509_NAME_get_index_by_NID(name, NID_commonName, idx) >= 0) {
		*why = "more than one common name";
		return -EBADMSG;
	}
	data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, idx));
	len = ASN1_STRING_to_UTF8(&utf8, data);
	if (len < 0) {
		*why = "a common name that is not valid text";
		return -EBADMSG;
	}
	if (!utf8_printable(utf8, len)) {
		*why = "a common name with a NUL byte or a control character";
		rc = -EBADMSG;
	} else {
		rc = copy_name(utf8, len, out, why);
	}
	OPENSSL_free(utf8);
	return rc;
}

int tls_cert_identity(X509 *cert, char **out, const char **why)
{
	char *cn = NULL;
	int rc;

	*out = NULL;
	*why = NULL;
	rc = identity_from_cn(cert, &cn, why);
	if (rc != 0 && rc != -ENOENT)
		return rc;
	rc = identity_from_san(cert, out, why);
	if (rc != -ENOENT) {
		free(cn);
		return rc;
	}
	/* RFC 6125: with no usable SAN, the CN. */
	if (!cn) {
		*why = "no DNS, email or URI subject alternative name and no common name";
		return -EBADMSG;
	}
	*out = cn;
	return 0;
}

int tls_cert_subject(X509 *cert, char **out)
{
	/* PostgreSQL's flags for the DN it shows (clientname=DN): RFC 2253, UTF-8 kept. */
	const unsigned long flags = XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB;
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *s;
	long len;

	*out = NULL;
	if (!b)
		return -ENOMEM;
	if (X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, flags) < 0) {
		BIO_free(b);
		return -ENOMEM;
	}
	len = BIO_get_mem_data(b, &data);
	if (len < 0 || len > TLS_SUBJECT_MAX) {
		BIO_free(b);
		return -EBADMSG;
	}
	s = malloc((size_t)len + 1);
	if (!s) {
		BIO_free(b);
		return -ENOMEM;
	}
	if (len)
		memcpy(s, data, (size_t)len); /* an empty subject has no data at all */
	s[len] = '\0';
	BIO_free(b);
	*out = s;
	return 0;
}

int tls_cert_fingerprint(X509 *cert, char hex[SESSION_FINGERPRINT_HEXLEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	EVP_MD *sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	int ok;

	hex[0] = '\0';
	if (!sha256)
		return -EIO;
	ok = X509_digest(cert, sha256, md, &len);
	EVP_MD_free(sha256);
	if (!ok || len * 2 != SESSION_FINGERPRINT_HEXLEN)
		return -EIO;
	for (unsigned int i = 0; i < len; i++) {
		hex[2 * i] = digits[md[i] >> 4];
		hex[2 * i + 1] = digits[md[i] & 15];
	}
	hex[2 * len] = '\0';
	return 0;
}

int tls_cert_end_point_hash(X509 *cert, uint8_t *out, size_t *len)
{
	int md_nid = NID_undef;
	unsigned int n = 0;
	EVP_MD *md;
	int ok;

	/* X509_get_signature_info() also reads the hash of an RSA-PSS signature from its
	 * parameters, where the signature NID alone names none. */
	if (!X509_get_signature_info(cert, &md_nid, NULL, NULL, NULL))
		return -EIO;
	if (md_nid == NID_undef)
		return -ENOTSUP;
	/* RFC 5929 section 4.1: MD5 and SHA-1 are replaced by SHA-256. */
	if (md_nid == NID_md5 || md_nid == NID_sha1)
		md_nid = NID_sha256;
	md = EVP_MD_fetch(NULL, OBJ_nid2sn(md_nid), NULL);
	if (!md)
		return -ENOTSUP;
	if ((size_t)EVP_MD_get_size(md) > TLS_CB_HASH_MAX) {
		EVP_MD_free(md);
		return -ENOTSUP;
	}
	ok = X509_digest(cert, md, out, &n);
	EVP_MD_free(md);
	if (!ok)
		return -EIO;
	*len = n;
	return 0;
}
