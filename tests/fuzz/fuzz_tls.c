/*
 * fuzz_tls: the peer-controlled input the tls module reads itself, on top of OpenSSL's own
 * parsing. The first byte picks the parser:
 *
 *   'A'  the rest is a ClientHello's ALPN protocol list (tls_alpn_find());
 *   'C'  the rest describes a certificate's names, record by record (type, length, bytes):
 *        subject CNs and Os in any string type, DNS / email / URI / IP SANs, a second SAN
 *        extension; the certificate is built and tls_cert_identity() and
 *        tls_cert_subject() read it;
 *   'D'  the rest is a DER certificate as a peer would send it;
 *   'N'  the rest is a tls.server.server_name value (config_check_server_name()).
 *
 * Beyond no crash, leak or undefined behaviour, the target checks what the functions promise:
 * an ALPN name found lies inside the list and is "postgresql", and a list is malformed
 * exactly when an independent walk says so; an identity accepted is the first DNS/email/URI
 * SAN, else the only CN, is printable, holds no NUL and is at most TLS_IDENTITY_MAX bytes;
 * two CNs are always refused; a server name accepted holds only letters, digits, '-', '.',
 * and for an address ':'.
 */
#include "config/config.h"
#include "fuzz_check.h"
#include "tls/tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <string.h>

#define TLS_FUZZ_MAX_RECORDS 16

static void fuzz_alpn(const uint8_t *p, size_t n)
{
	const uint8_t *at = NULL;
	int rc = tls_alpn_find(p, n, TLS_ALPN_POSTGRESQL, &at);
	bool well_formed = n > 0, seen = false;

	for (size_t off = 0; well_formed && off < n;) {
		size_t len = p[off];

		if (len == 0 || off + 1 + len > n) {
			well_formed = false;
			break;
		}
		seen |= len == 10 && memcmp(p + off + 1, "postgresql", 10) == 0;
		off += 1 + len;
	}
	CHECK(rc == 0 || rc == -ENOENT || rc == -EBADMSG);
	CHECK((rc == -EBADMSG) == !well_formed);
	CHECK(!well_formed || (rc == 0) == seen);
	if (rc == 0) {
		CHECK(at > p && at + 10 <= p + n);
		CHECK(memcmp(at, "postgresql", 10) == 0 && at[-1] == 10);
	}
}

/* Record types of the 'C' mode. */
enum { R_CN, R_O, R_DNS, R_EMAIL, R_URI, R_IP, R_DUP_SAN, R_CN_BMP, R_TYPES };

static void check_identity(X509 *cert, const char *want, bool two_cn, bool refused_anyway)
{
	const char *why = NULL;
	char *id = NULL, *subject = NULL;
	int rc = tls_cert_identity(cert, &id, &why);

	CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
	if (rc == 0) {
		size_t len = strlen(id);

		CHECK(!two_cn && !refused_anyway);
		CHECK(len > 0 && len <= TLS_IDENTITY_MAX);
		for (size_t i = 0; i < len; i++)
			CHECK((unsigned char)id[i] >= 0x20 && id[i] != 0x7f);
		if (want)
			CHECK(strcmp(id, want) == 0);
	} else {
		CHECK(id == NULL);
		CHECK(rc != -EBADMSG || why != NULL);
	}
	free(id);
	rc = tls_cert_subject(cert, &subject);
	CHECK(rc == 0 || rc == -EBADMSG || rc == -ENOMEM);
	if (rc == 0) {
		CHECK(strlen(subject) <= TLS_SUBJECT_MAX);
		for (const char *s = subject; *s; s++)
			CHECK((unsigned char)*s >= 0x20 && *s != 0x7f); /* RFC 2253 escapes C0 */
	}
	free(subject);
}

static bool text_clean(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] >= 0x7f)
			return false;
	return n > 0;
}

static bool has_high(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] >= 0x80)
			return true;
	return false;
}

static void fuzz_names(const uint8_t *p, size_t n)
{
	X509 *cert = X509_new();
	X509_NAME *name = X509_NAME_new();
	GENERAL_NAMES *sans = GENERAL_NAMES_new();
	char first_san[TLS_IDENTITY_MAX + 2] = "", cn[TLS_IDENTITY_MAX + 2] = "";
	bool have_san = false, dup = false, bad = false, unknown = false;
	unsigned cns = 0, records = 0;

	if (!cert || !name || !sans)
		goto out;
	for (size_t off = 0; off + 2 <= n && records < TLS_FUZZ_MAX_RECORDS; records++) {
		unsigned type = p[off] % R_TYPES;
		size_t len = p[off + 1];
		const uint8_t *v = p + off + 2;

		if (off + 2 + len > n)
			len = n - off - 2;
		off += 2 + len;
		switch (type) {
		case R_CN:
		case R_O:
		case R_CN_BMP: {
			int nid = type == R_O ? NID_organizationName : NID_commonName;
			int kind = type == R_CN_BMP ? V_ASN1_BMPSTRING : V_ASN1_UTF8STRING;

			if (type == R_CN_BMP && len % 2)
				len--;
			if (!X509_NAME_add_entry_by_NID(name, nid, kind, v, (int)len, -1, 0))
				continue; /* OpenSSL refused the bytes: nothing was added */
			if (nid == NID_commonName) {
				cns++;
				cn[0] = '\0';
				/* Non-ASCII (valid UTF-8 or not, C1 or not) and BMP text are
				 * judged by OpenSSL's conversion first: only their refusal when
				 * they also break a rule is checked. */
				if (kind == V_ASN1_BMPSTRING || has_high(v, len)) {
					unknown = true;
				} else if (!text_clean(v, len)) {
					bad = true; /* empty, NUL, C0 or DEL */
				} else {
					memcpy(cn, v, len);
					cn[len] = '\0';
				}
			}
			break;
		}
		case R_DNS:
		case R_EMAIL:
		case R_URI: {
			GENERAL_NAME *gn = GENERAL_NAME_new();
			ASN1_IA5STRING *s = ASN1_IA5STRING_new();

			if (!gn || !s || !ASN1_STRING_set(s, v, (int)len)) {
				GENERAL_NAME_free(gn);
				ASN1_IA5STRING_free(s);
				break;
			}
			GENERAL_NAME_set0_value(gn, type == R_DNS ? GEN_DNS : type == R_EMAIL ?
								GEN_EMAIL : GEN_URI, s);
			if (!sk_GENERAL_NAME_push(sans, gn)) {
				GENERAL_NAME_free(gn);
				break;
			}
			if (!text_clean(v, len))
				bad = true; /* any unclean DNS/email/URI SAN refuses the certificate */
			if (!have_san) {
				have_san = true;
				memcpy(first_san, v, len);
				first_san[len] = '\0';
			}
			break;
		}
		case R_IP: {
			GENERAL_NAME *gn = GENERAL_NAME_new();
			ASN1_OCTET_STRING *ip = ASN1_OCTET_STRING_new();

			if (!gn || !ip || !ASN1_OCTET_STRING_set(ip, v, (int)(len >= 16 ? 16 : len >= 4 ? 4 : len))) {
				GENERAL_NAME_free(gn);
				ASN1_OCTET_STRING_free(ip);
				break;
			}
			GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
			if (!sk_GENERAL_NAME_push(sans, gn))
				GENERAL_NAME_free(gn);
			break;
		}
		case R_DUP_SAN:
			dup = true;
			break;
		}
	}
	/* The name is copied through DER: one OpenSSL would not decode (invalid UTF-8 in a
	 * UTF8String) is refused here, as a peer's certificate holding it would be refused by
	 * d2i_X509(). The certificate then has an empty subject. */
	if (!X509_set_subject_name(cert, name)) {
		cns = 0;
		bad = unknown = false;
		cn[0] = '\0';
		ERR_clear_error();
	}
	if (sk_GENERAL_NAME_num(sans) > 0) {
		if (!X509_add1_ext_i2d(cert, NID_subject_alt_name, sans, 0, X509V3_ADD_APPEND))
			goto out;
		if (dup) {
			X509_EXTENSION *e = X509_EXTENSION_dup(
				X509_get_ext(cert, X509_get_ext_by_NID(cert, NID_subject_alt_name, -1)));

			if (e && !X509_add_ext(cert, e, -1))
				dup = false;
			X509_EXTENSION_free(e);
		}
	} else {
		dup = false;
	}
	/* What the identity must be, when it is accepted: the first SAN, else the CN. Names
	 * longer than the limit, and CNs in other string types, are only checked for
	 * cleanliness above. */
	{
		const char *want = have_san ? first_san : (cn[0] ? cn : NULL);

		check_identity(cert, unknown || cns > 1 ? NULL : want, cns > 1,
			       dup || bad || (!have_san && cns == 0));
	}
out:
	GENERAL_NAMES_free(sans);
	X509_NAME_free(name);
	X509_free(cert);
	ERR_clear_error();
}

static void fuzz_der(const uint8_t *p, size_t n)
{
	const unsigned char *q = p;
	X509 *cert = d2i_X509(NULL, &q, (long)n);
	char *id = NULL, *subject = NULL, hex[SESSION_FINGERPRINT_HEXLEN + 1];
	uint8_t cb[TLS_CB_HASH_MAX];
	const char *why;
	size_t cblen = 0;

	if (!cert) {
		ERR_clear_error();
		return;
	}
	if (tls_cert_identity(cert, &id, &why) == 0) {
		CHECK(strlen(id) <= TLS_IDENTITY_MAX);
		for (const char *s = id; *s; s++)
			CHECK((unsigned char)*s >= 0x20 && *s != 0x7f);
	}
	if (tls_cert_subject(cert, &subject) == 0)
		CHECK(strlen(subject) <= TLS_SUBJECT_MAX);
	if (tls_cert_fingerprint(cert, hex) == 0)
		CHECK(strlen(hex) == SESSION_FINGERPRINT_HEXLEN);
	if (tls_cert_end_point_hash(cert, cb, &cblen) == 0)
		CHECK(cblen >= 32 && cblen <= TLS_CB_HASH_MAX);
	free(id);
	free(subject);
	X509_free(cert);
	ERR_clear_error();
}

static void fuzz_server_name(const uint8_t *p, size_t n)
{
	char text[300];
	bool ip;

	if (n >= sizeof(text) || memchr(p, '\0', n))
		return;
	memcpy(text, p, n);
	text[n] = '\0';
	if (config_check_server_name(text) != 0)
		return;
	ip = strchr(text, ':') != NULL;
	CHECK(n > 0 && n <= 253);
	for (size_t i = 0; i < n; i++)
		CHECK((text[i] >= 'a' && text[i] <= 'z') || (text[i] >= 'A' && text[i] <= 'Z') ||
		      (text[i] >= '0' && text[i] <= '9') || text[i] == '-' || text[i] == '.' ||
		      (ip && (text[i] == ':' || (text[i] >= 'a' && text[i] <= 'f'))));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	switch (data[0]) {
	case 'A':
		fuzz_alpn(data + 1, size - 1);
		break;
	case 'C':
		fuzz_names(data + 1, size - 1);
		break;
	case 'D':
		fuzz_der(data + 1, size - 1);
		break;
	case 'N':
		fuzz_server_name(data + 1, size - 1);
		break;
	default:
		break;
	}
	return 0;
}
