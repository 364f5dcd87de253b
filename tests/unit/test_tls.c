/*
 * tls unit tests: what the tls module decides without moving bytes. Certificate identity
 * (data/tls/identity_cases.txt), ALPN lists (data/tls/alpn_cases.txt), channel binding
 * hashes, the rules every context carries, every file problem as the one line an operator
 * reads, the store a reload swaps, the FIPS switch refusing where no provider is installed,
 * and the SSLRequest probe against fake servers. Handshakes are test_transport_tls.c's.
 *
 * Certificates and keys are made here (tls_pki.h) in a temporary directory, never
 * committed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "case_file.h"
#include "config/config.h"
#include "tls/tls.h"
#include "tls_pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/wait.h>

static char *dir;
static struct pki_cert ca, server, other_ca, client_cert;
static char ca_pem[256], server_pem[256], server_key[256], other_key[256], ca_crl[256],
	client_pem[256];

static const char *path(const char *name, char *buf, size_t n)
{
	return pki_path(dir, name, buf, n);
}

static int group_setup(void **state)
{
	struct pki_spec ca_spec = {.subject = {{"CN", "Test CA"}}, .usage = PKI_CA};
	struct pki_spec srv_spec = {.subject = {{"O", "Acme"}, {"CN", "db.example.com"}},
				    .san = {{"DNS", "db.example.com"}, {"IP", "127.0.0.1"}},
				    .usage = PKI_SERVER};
	struct pki_spec cli_spec = {.subject = {{"CN", "alice"}}, .usage = PKI_CLIENT};
	struct pki_spec other_spec = {.subject = {{"CN", "Other CA"}}, .usage = PKI_CA};
	X509_CRL *crl;

	dir = pki_mkdir();
	ca = pki_make(&ca_spec, NULL);
	other_ca = pki_make(&other_spec, NULL);
	server = pki_make(&srv_spec, &ca);
	client_cert = pki_make(&cli_spec, &ca);
	pki_write_cert(path("ca.pem", ca_pem, sizeof(ca_pem)), ca.cert);
	pki_write_cert(path("server.pem", server_pem, sizeof(server_pem)), server.cert);
	pki_write_key(path("server.key", server_key, sizeof(server_key)), server.key);
	pki_write_key(path("other.key", other_key, sizeof(other_key)), other_ca.key);
	pki_write_cert(path("client.pem", client_pem, sizeof(client_pem)), client_cert.cert);
	crl = pki_crl(&ca, NULL, 0, 86400);
	pki_write_crls(path("ca.crl", ca_crl, sizeof(ca_crl)), &crl, 1);
	X509_CRL_free(crl);
	return 0;
}

static int group_teardown(void **state)
{
	pki_free(&ca);
	pki_free(&server);
	pki_free(&other_ca);
	pki_free(&client_cert);
	pki_rmdir(dir);
	return 0;
}

/* A valid base config with the settings given as key, value pairs, NULL-terminated. */
static struct config *cfg_with(const char *key, ...)
{
	struct config *cfg = config_new();
	char err[CONFIG_ERR_MAX];
	va_list ap;

	assert_non_null(cfg);
	if (config_set(cfg, "listen", "127.0.0.1:6432", err, sizeof(err)) ||
	    config_set(cfg, "upstream", "127.0.0.1:5432", err, sizeof(err)))
		fail_msg("%s", err);
	va_start(ap, key);
	for (const char *k = key; k; k = va_arg(ap, const char *)) {
		const char *v = va_arg(ap, const char *);

		if (config_set(cfg, k, v, err, sizeof(err)))
			fail_msg("%s=%s: %s", k, v, err);
	}
	va_end(ap);
	if (config_validate(cfg, err, sizeof(err)))
		fail_msg("validate: %s", err);
	return cfg;
}

/* ---- identity ------------------------------------------------------------------------ */

/* "\x00" and friends in a case file into bytes; returns the decoded length. */
static int unescape(const char *in, char *out, size_t cap)
{
	size_t o = 0;

	for (size_t i = 0; in[i] && o + 1 < cap; i++) {
		if (in[i] == '\\' && in[i + 1] == 'x' && in[i + 2] && in[i + 3]) {
			char hex[3] = {in[i + 2], in[i + 3], 0};

			out[o++] = (char)strtol(hex, NULL, 16);
			i += 3;
		} else {
			out[o++] = in[i];
		}
	}
	out[o] = '\0';
	return (int)o;
}

/* "CN=a,O=b" into spec entries (values unescaped into store). */
static bool parse_names(char *list, struct pki_name *names, char store[][128])
{
	bool dup = false;
	int n = 0;

	if (strcmp(list, "-") == 0)
		return false;
	for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		char *eq = strchr(tok, '=');

		if (strcmp(tok, "+dup") == 0) {
			dup = true;
			continue;
		}
		assert_non_null(eq);
		assert_true(n < PKI_MAX_NAMES);
		*eq = '\0';
		names[n].field = tok;
		names[n].len = unescape(eq + 1, store[n], 128);
		names[n].value = store[n];
		n++;
	}
	return dup;
}

static void test_identity_cases(void **state)
{
	FILE *f = fopen("data/tls/identity_cases.txt", "r");
	char line[512];
	unsigned n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char subject_store[PKI_MAX_NAMES][128], san_store[PKI_MAX_NAMES][128], want[256];
		char *subj, *san, *expect, *bar1, *bar2, *got = NULL;
		struct pki_spec spec = {.usage = PKI_CLIENT};
		struct pki_cert c;
		const char *why = NULL;
		int rc;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		bar1 = strchr(line, '|');
		bar2 = bar1 ? strchr(bar1 + 1, '|') : NULL;
		assert_non_null(bar2);
		*bar1 = *bar2 = '\0';
		subj = trim(line);
		san = trim(bar1 + 1);
		expect = trim(bar2 + 1);
		parse_names(subj, spec.subject, subject_store);
		spec.two_san_extensions = parse_names(san, spec.san, san_store);
		c = pki_make(&spec, &ca);
		rc = tls_cert_identity(c.cert, &got, &why);
		if (strncmp(expect, "ok ", 3) == 0) {
			unescape(expect + 3, want, sizeof(want));
			if (rc != 0 || strcmp(got, want) != 0)
				fail_msg("%s | %s: got rc %d \"%s\" (%s), want \"%s\"", subj, san, rc,
					 got ? got : "", why ? why : "", want);
		} else {
			assert_int_equal(strncmp(expect, "err ", 4), 0);
			if (rc != -EBADMSG || !why || !strstr(why, expect + 4))
				fail_msg("%s | %s: got rc %d \"%s\" (%s), want refusal \"%s\"", subj,
					 san, rc, got ? got : "", why ? why : "", expect + 4);
			assert_null(got);
		}
		free(got);
		pki_free(&c);
		n++;
	}
	fclose(f);
	assert_true(n >= 20);
}

static void test_identity_length_bound(void **state)
{
	char name[TLS_IDENTITY_MAX + 2];
	struct pki_spec spec = {.subject = {{"CN", "x"}}, .san = {{"URI", name}}};
	struct pki_cert c;
	const char *why;
	char *got;

	memset(name, 'a', sizeof(name));
	memcpy(name, "uri:", 4);
	name[TLS_IDENTITY_MAX] = '\0'; /* the longest accepted */
	c = pki_make(&spec, &ca);
	assert_int_equal(tls_cert_identity(c.cert, &got, &why), 0);
	assert_int_equal(strlen(got), TLS_IDENTITY_MAX);
	free(got);
	pki_free(&c);
	name[TLS_IDENTITY_MAX] = 'a';
	name[TLS_IDENTITY_MAX + 1] = '\0';
	c = pki_make(&spec, &ca);
	assert_int_equal(tls_cert_identity(c.cert, &got, &why), -EBADMSG);
	assert_string_equal(why, "a name longer than 1024 bytes");
	pki_free(&c);
}

static void test_subject_and_fingerprint(void **state)
{
	unsigned char md[SHA256_DIGEST_LENGTH], *der = NULL;
	char hex[SESSION_FINGERPRINT_HEXLEN + 1], want[SESSION_FINGERPRINT_HEXLEN + 1];
	char *subject;
	int len = i2d_X509(server.cert, &der);

	assert_true(len > 0);
	SHA256(der, (size_t)len, md);
	OPENSSL_free(der);
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(want + 2 * i, 3, "%02x", md[i]);
	assert_int_equal(tls_cert_fingerprint(server.cert, hex), 0);
	assert_string_equal(hex, want);
	/* RFC 2253: most specific first, as PostgreSQL shows a DN. */
	assert_int_equal(tls_cert_subject(server.cert, &subject), 0);
	assert_string_equal(subject, "CN=db.example.com,O=Acme");
	free(subject);
	{
		/* Control characters are escaped, UTF-8 kept. */
		struct pki_spec spec = {.subject = {{"O", "caf\xc3\xa9\nx"}, {"CN", "a,b"}}};
		struct pki_cert c = pki_make(&spec, &ca);

		assert_int_equal(tls_cert_subject(c.cert, &subject), 0);
		assert_string_equal(subject, "CN=a\\,b,O=caf\xc3\xa9\\0Ax");
		free(subject);
		pki_free(&c);
	}
}

/* ---- channel binding ----------------------------------------------------------------- */

static void test_end_point_hash(void **state)
{
	static const struct {
		const char *md;
		enum pki_key_type key;
		const char *want_md; /* NULL: no hash defined */
	} cases[] = {
		{"SHA256", PKI_EC, "SHA256"},
		{"SHA384", PKI_EC, "SHA384"},
		{"SHA512", PKI_RSA, "SHA512"},
		/* RFC 5929 4.1: MD5 and SHA-1 become SHA-256 */
		{"SHA1", PKI_RSA, "SHA256"},
		{"SHA1", PKI_EC, "SHA256"},
		{NULL, PKI_ED25519, NULL},
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct pki_spec spec = {.subject = {{"CN", "cb"}}, .md = cases[i].md,
					.key_type = cases[i].key};
		struct pki_cert issuer = {0}, c;
		uint8_t out[TLS_CB_HASH_MAX], want[EVP_MAX_MD_SIZE];
		unsigned int wlen = 0;
		size_t len = 0;

		/* Self-signed, so the signature (and its hash) is made with this key type. */
		c = pki_make(&spec, NULL);
		(void)issuer;
		if (!cases[i].want_md) {
			assert_int_equal(tls_cert_end_point_hash(c.cert, out, &len), -ENOTSUP);
			pki_free(&c);
			continue;
		}
		assert_int_equal(tls_cert_end_point_hash(c.cert, out, &len), 0);
		assert_true(X509_digest(c.cert, EVP_get_digestbyname(cases[i].want_md), want, &wlen));
		assert_int_equal(len, wlen);
		assert_memory_equal(out, want, len);
		pki_free(&c);
	}
}

/* ---- ALPN ---------------------------------------------------------------------------- */

static size_t from_hex(const char *hex, uint8_t *out, size_t cap)
{
	size_t n = 0;

	if (strcmp(hex, "-") == 0)
		return 0;
	for (; hex[0] && hex[1] && n < cap; hex += 2) {
		char b[3] = {hex[0], hex[1], 0};

		out[n++] = (uint8_t)strtol(b, NULL, 16);
	}
	return n;
}

static void test_alpn_cases(void **state)
{
	FILE *f = fopen("data/tls/alpn_cases.txt", "r");
	char line[512];
	unsigned n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		uint8_t list[256];
		const uint8_t *at = NULL;
		char *bar, *in, *want;
		size_t len;
		int rc;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		bar = strchr(line, '|');
		assert_non_null(bar);
		*bar = '\0';
		in = trim(line);
		want = trim(bar + 1);
		len = from_hex(in, list, sizeof(list));
		rc = tls_alpn_find(list, len, TLS_ALPN_POSTGRESQL, &at);
		if (strncmp(want, "found ", 6) == 0) {
			if (rc != 0 || at != list + atoi(want + 6))
				fail_msg("%s: rc %d, offset %td, want %s", in, rc, at ? at - list : -1,
					 want);
		} else if (rc != (strcmp(want, "ENOENT") == 0 ? -ENOENT : -EBADMSG)) {
			fail_msg("%s: rc %d, want %s", in, rc, want);
		}
		n++;
	}
	fclose(f);
	assert_true(n >= 10);
}

/* ---- snapshot ------------------------------------------------------------------------ */

static void test_snapshot_rules(void **state)
{
	struct config *cfg = cfg_with("tls.client.mode", "prefer", "tls.client.cert_file",
				      server_pem, "tls.client.key_file", server_key, NULL);
	struct tls_snapshot *s;
	char err[TLS_ERR_MAX] = "", fp[SESSION_FINGERPRINT_HEXLEN + 1];

	if (tls_snapshot_build(cfg, &s, err, sizeof(err)))
		fail_msg("%s", err);
	assert_non_null(s->client_ctx);
	assert_non_null(s->server_ctx); /* tls.server.mode defaults to prefer */
	for (int leg = 0; leg < 2; leg++) {
		SSL_CTX *ctx = leg ? s->server_ctx : s->client_ctx;
		uint64_t opts = SSL_CTX_get_options(ctx);

		assert_true(opts & SSL_OP_NO_RENEGOTIATION);
		assert_true(opts & SSL_OP_NO_COMPRESSION);
		assert_false(opts & SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION);
		assert_true(opts & SSL_OP_NO_TICKET);
		assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
		assert_true(SSL_CTX_get_mode(ctx) & SSL_MODE_RELEASE_BUFFERS);
		assert_int_equal(SSL_CTX_get_max_early_data(ctx), 0);
		assert_int_equal(SSL_CTX_get_recv_max_early_data(ctx), 0);
		assert_int_equal(SSL_CTX_get_verify_depth(ctx), TLS_VERIFY_DEPTH);
		/* Every TLS 1.2 cipher on offer is ECDHE + AEAD. */
		STACK_OF(SSL_CIPHER) *ciphers = SSL_CTX_get_ciphers(ctx);

		for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); i++) {
			const SSL_CIPHER *c = sk_SSL_CIPHER_value(ciphers, i);

			if (SSL_CIPHER_get_kx_nid(c) == NID_kx_any)
				continue;
			assert_int_equal(SSL_CIPHER_get_kx_nid(c), NID_kx_ecdhe);
			assert_true(SSL_CIPHER_is_aead(c));
		}
	}
	assert_int_equal(SSL_CTX_get_session_cache_mode(s->client_ctx), SSL_SESS_CACHE_OFF);
	assert_int_equal(SSL_CTX_get_num_tickets(s->client_ctx), 0);
	assert_int_equal(SSL_CTX_get_verify_mode(s->client_ctx), SSL_VERIFY_NONE);
	assert_int_equal(SSL_CTX_get_verify_mode(s->server_ctx), SSL_VERIFY_NONE);
	assert_string_equal(s->client_cert_subject, "CN=db.example.com,O=Acme");
	assert_int_equal(tls_cert_fingerprint(server.cert, fp), 0);
	assert_string_equal(s->client_cert_fingerprint, fp);
	assert_int_equal(s->client_mode, CONFIG_TLS_CLIENT_PREFER);
	assert_int_equal(s->server_mode, CONFIG_TLS_SERVER_PREFER);
	tls_snapshot_unref(s);
	config_unref(cfg);

	/* Both legs off: no contexts at all. */
	cfg = cfg_with("tls.server.mode", "disable", NULL);
	assert_int_equal(tls_snapshot_build(cfg, &s, err, sizeof(err)), 0);
	assert_null(s->client_ctx);
	assert_null(s->server_ctx);
	tls_snapshot_unref(s);
	config_unref(cfg);

	/* mTLS and tickets, TLS 1.3 only. */
	cfg = cfg_with("tls.client.mode", "require", "tls.client.cert_file", server_pem,
		       "tls.client.key_file", server_key, "tls.client.verify", "required",
		       "tls.client.ca_file", ca_pem, "tls.client.crl_file", ca_crl,
		       "tls.session_tickets", "true", "tls.min_version", "TLSv1.3",
		       "tls.server.mode", "verify-full", "tls.server.ca_file", ca_pem, NULL);
	if (tls_snapshot_build(cfg, &s, err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(SSL_CTX_get_verify_mode(s->client_ctx),
			 SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT | SSL_VERIFY_CLIENT_ONCE);
	assert_int_equal(SSL_CTX_get_verify_mode(s->server_ctx), SSL_VERIFY_PEER);
	assert_false(SSL_CTX_get_options(s->client_ctx) & SSL_OP_NO_TICKET);
	assert_int_equal(SSL_CTX_get_num_tickets(s->client_ctx), 1);
	assert_int_equal(SSL_CTX_get_min_proto_version(s->client_ctx), TLS1_3_VERSION);
	assert_true(X509_VERIFY_PARAM_get_flags(X509_STORE_get0_param(
			    SSL_CTX_get_cert_store(s->client_ctx))) &
		    X509_V_FLAG_CRL_CHECK_ALL);
	assert_int_equal(sk_X509_NAME_num(SSL_CTX_get_client_CA_list(s->client_ctx)), 1);
	tls_snapshot_unref(s);
	config_unref(cfg);
}

struct snapshot_error_case {
	const char *settings[8][2];
	/* The exact message, with "DIR" for the test directory; ending in "...": a prefix
	 * (OpenSSL's own reason follows). */
	const char *want;
};

static void write_file(const char *name, const char *text, mode_t mode)
{
	char p[256];
	FILE *f = fopen(path(name, p, sizeof(p)), "w");

	assert_non_null(f);
	fputs(text, f);
	assert_int_equal(fchmod(fileno(f), mode), 0);
	fclose(f);
}

static void copy_key(const char *name, mode_t mode)
{
	char p[256];
	FILE *f = fopen(path(name, p, sizeof(p)), "w");

	assert_non_null(f);
	assert_true(PEM_write_PrivateKey(f, server.key, NULL, NULL, 0, NULL, NULL));
	assert_int_equal(fchmod(fileno(f), mode), 0);
	fclose(f);
}

static void test_snapshot_errors(void **state)
{
	static const struct snapshot_error_case cases[] = {
		{{{"tls.client.cert_file", "DIR/missing.pem"}},
		 "tls.client.cert_file: DIR/missing.pem: cannot read: No such file or directory"},
		{{{"tls.client.cert_file", "DIR"}}, "tls.client.cert_file: DIR: not a regular file"},
		{{{"tls.client.cert_file", "DIR/server.key"}},
		 "tls.client.cert_file: DIR/server.key: no usable PEM certificate in it (OpenSSL: ..."},
		{{{"tls.client.cert_file", "DIR/empty"}},
		 "tls.client.cert_file: DIR/empty: no usable PEM certificate in it (OpenSSL: ..."},
		{{{"tls.client.key_file", "DIR/other.key"}},
		 "tls.client.key_file: DIR/other.key does not match tls.client.cert_file DIR/server.pem"},
		{{{"tls.client.key_file", "DIR/missing.key"}},
		 "tls.client.key_file: DIR/missing.key: cannot read: No such file or directory"},
		{{{"tls.client.key_file", "DIR/k0644.key"}},
		 "tls.client.key_file: DIR/k0644.key is open to other users (mode 0644); allow at most 0640 (chmod 0600 DIR/k0644.key)"},
		{{{"tls.client.key_file", "DIR/k0660.key"}},
		 "tls.client.key_file: DIR/k0660.key is open to other users (mode 0660); allow at most 0640 (chmod 0600 DIR/k0660.key)"},
		{{{"tls.client.key_file", "DIR/k0604.key"}},
		 "tls.client.key_file: DIR/k0604.key is open to other users (mode 0604); allow at most 0640 (chmod 0600 DIR/k0604.key)"},
		{{{"tls.client.key_file", "DIR/encrypted.key"}},
		 "tls.client.key_file: DIR/encrypted.key: no unencrypted PEM private key in it (OpenSSL: ..."},
		{{{"tls.client.key_file", "DIR/cert0600.pem"}},
		 "tls.client.key_file: DIR/cert0600.pem: no unencrypted PEM private key in it (OpenSSL: ..."},
		{{{"tls.client.verify", "required"}, {"tls.client.ca_file", "DIR/ca.crl"}},
		 "tls.client.ca_file: DIR/ca.crl: no PEM CA certificate in it (OpenSSL: ..."},
		{{{"tls.client.verify", "required"}, {"tls.client.ca_file", "DIR/ca.pem"},
		  {"tls.client.crl_file", "DIR/ca.pem"}},
		 "tls.client.crl_file: DIR/ca.pem: no PEM CRL in it (OpenSSL: ..."},
		{{{"tls.client.verify", "optional"}, {"tls.client.ca_file", "DIR/ca.pem"},
		  {"tls.client.crl_file", "DIR/nope.crl"}},
		 "tls.client.crl_file: DIR/nope.crl: cannot read: No such file or directory"},
		{{{"tls.ciphers", "AES128-GCM-SHA256"}},
		 "tls.ciphers: AES128-GCM-SHA256 is not ECDHE with an AEAD cipher (pgwarden offers no other TLS 1.2 cipher)"},
		{{{"tls.ciphers", "ECDHE-RSA-AES128-SHA256"}},
		 "tls.ciphers: ECDHE-RSA-AES128-SHA256 is not ECDHE with an AEAD cipher (pgwarden offers no other TLS 1.2 cipher)"},
		{{{"tls.ciphers", "DHE-RSA-AES128-GCM-SHA256"}},
		 "tls.ciphers: DHE-RSA-AES128-GCM-SHA256 is not ECDHE with an AEAD cipher (pgwarden offers no other TLS 1.2 cipher)"},
		{{{"tls.ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256:AES128-SHA"}},
		 "tls.ciphers: AES128-SHA is not ECDHE with an AEAD cipher (pgwarden offers no other TLS 1.2 cipher)"},
		{{{"tls.ciphers", "ECDHE-PSK-CHACHA20-POLY1305"}},
		 "tls.ciphers: ECDHE-PSK-CHACHA20-POLY1305 is not ECDHE with an AEAD cipher (pgwarden offers no other TLS 1.2 cipher)"},
		{{{"tls.ciphers", "BOGUS"}}, "tls.ciphers: OpenSSL selects no cipher from \"BOGUS\""},
		{{{"tls.ciphersuites", "TLS_AES_256_GCM_SHA384:TLS_BOGUS"}},
		 "tls.ciphersuites: TLS_BOGUS is not a TLS 1.3 cipher suite OpenSSL knows"},
		{{{"tls.groups", "X25519:BOGUS"}},
		 "tls.groups: OpenSSL does not offer every group of \"X25519:BOGUS\""},
		/* the server leg: its own files, its own keys in the messages */
		{{{"tls.server.mode", "verify-ca"}, {"tls.server.ca_file", "DIR/missing-ca.pem"}},
		 "tls.server.ca_file: DIR/missing-ca.pem: cannot read: No such file or directory"},
		{{{"tls.server.cert_file", "DIR/server.pem"}, {"tls.server.key_file", "DIR/other.key"}},
		 "tls.server.key_file: DIR/other.key does not match tls.server.cert_file DIR/server.pem"},
		{{{"tls.server.mode", "require"}, {"tls.server.cert_file", "DIR/server.pem"},
		  {"tls.server.key_file", "DIR/k0644.key"}},
		 "tls.server.key_file: DIR/k0644.key is open to other users (mode 0644); allow at most 0640 (chmod 0600 DIR/k0644.key)"},
	};
	char p[256];
	FILE *f;

	write_file("empty", "", 0644);
	pki_write_cert(path("cert0600.pem", p, sizeof(p)), server.cert);
	assert_int_equal(chmod(p, 0600), 0);
	copy_key("k0644.key", 0644);
	copy_key("k0660.key", 0660);
	copy_key("k0604.key", 0604);
	copy_key("k0640.key", 0640);
	f = fopen(path("encrypted.key", p, sizeof(p)), "w");
	assert_non_null(f);
	assert_true(PEM_write_PrivateKey(f, server.key, EVP_aes_256_cbc(), NULL, 0, NULL,
					 (void *)"secret"));
	assert_int_equal(fchmod(fileno(f), 0600), 0);
	fclose(f);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct config *cfg = config_new();
		char err[TLS_ERR_MAX] = "", want[1024], cerr[CONFIG_ERR_MAX], value[300];
		struct tls_snapshot *s = NULL;
		const char *w = cases[i].want;
		bool prefix;
		size_t o = 0;

		assert_non_null(cfg);
		assert_int_equal(config_set(cfg, "listen", "127.0.0.1:6432", cerr, sizeof(cerr)), 0);
		assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:5432", cerr, sizeof(cerr)), 0);
		/* A client leg with the good pair, then the case's settings over it. */
		assert_int_equal(config_set(cfg, "tls.client.mode", "prefer", cerr, sizeof(cerr)), 0);
		assert_int_equal(config_set(cfg, "tls.client.cert_file", server_pem, cerr, sizeof(cerr)), 0);
		assert_int_equal(config_set(cfg, "tls.client.key_file", server_key, cerr, sizeof(cerr)), 0);
		for (int k = 0; k < 8 && cases[i].settings[k][0]; k++) {
			const char *v = cases[i].settings[k][1];

			if (strncmp(v, "DIR", 3) == 0)
				snprintf(value, sizeof(value), "%s%s", dir, v + 3);
			else
				snprintf(value, sizeof(value), "%s", v);
			if (config_set(cfg, cases[i].settings[k][0], value, cerr, sizeof(cerr)))
				fail_msg("case %zu: %s", i, cerr);
		}
		for (; *w && o + strlen(dir) < sizeof(want); w++) {
			if (strncmp(w, "DIR", 3) == 0) {
				o += (size_t)snprintf(want + o, sizeof(want) - o, "%s", dir);
				w += 2;
			} else {
				want[o++] = *w;
			}
		}
		want[o] = '\0';
		prefix = o > 3 && strcmp(want + o - 3, "...") == 0;
		if (prefix)
			want[o - 3] = '\0';
		if (config_validate(cfg, cerr, sizeof(cerr)))
			fail_msg("case %zu: %s", i, cerr);
		if (tls_snapshot_build(cfg, &s, err, sizeof(err)) == 0)
			fail_msg("case %zu: built, want \"%s\"", i, want);
		assert_null(s);
		if (prefix ? strncmp(err, want, strlen(want)) != 0 : strcmp(err, want) != 0)
			fail_msg("case %zu:\n got  \"%s\"\n want \"%s\"%s", i, err, want,
				 prefix ? "..." : "");
		assert_null(strchr(err, '\n'));
		assert_int_equal(ERR_peek_error(), 0); /* nothing left on OpenSSL's error queue */
		config_unref(cfg);
	}
	/* 0640 is allowed: Debian's ssl-cert group reads the snakeoil key that way. */
	{
		struct config *cfg = cfg_with("tls.client.mode", "prefer", "tls.client.cert_file",
					      server_pem, "tls.client.key_file",
					      path("k0640.key", p, sizeof(p)), NULL);
		struct tls_snapshot *s;
		char err[TLS_ERR_MAX];

		if (tls_snapshot_build(cfg, &s, err, sizeof(err)))
			fail_msg("%s", err);
		tls_snapshot_unref(s);
		config_unref(cfg);
	}
}

/* ---- store --------------------------------------------------------------------------- */

static void test_store_swap(void **state)
{
	struct config *cfg = cfg_with("tls.client.mode", "prefer", "tls.client.cert_file",
				      server_pem, "tls.client.key_file", server_key, NULL);
	struct tls_snapshot *a, *b, *held;
	struct tls_store st;
	char err[TLS_ERR_MAX];

	tls_store_init(&st);
	assert_null(tls_store_acquire(&st));
	assert_int_equal(tls_snapshot_build(cfg, &a, err, sizeof(err)), 0);
	assert_int_equal(tls_snapshot_build(cfg, &b, err, sizeof(err)), 0);
	tls_store_publish(&st, a);
	held = tls_store_acquire(&st); /* a session starts with a */
	assert_ptr_equal(held, a);
	assert_int_equal(a->refcount, 2);
	tls_store_publish(&st, b); /* reload */
	assert_int_equal(a->refcount, 1); /* only the session holds it now */
	assert_non_null(a->client_ctx);
	{
		struct tls_snapshot *now = tls_store_acquire(&st);

		assert_ptr_equal(now, b);
		tls_snapshot_unref(now);
	}
	tls_snapshot_unref(held); /* the session ends: a is freed (ASan: no leak, no reuse) */
	tls_store_destroy(&st);
	config_unref(cfg);
}

/* ---- FIPS ---------------------------------------------------------------------------- */

/* Run fn in a child process (provider loading is process-wide); its exit status. */
static int in_child(int (*fn)(void))
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0)
		_exit(fn());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

static int fips_absent_child(void)
{
	static const char head[] = "tls.fips: no FIPS provider is installed (OpenSSL looked for ",
			  tail[] = "/fips.so); see docs/TLS.md";
	char err[TLS_ERR_MAX] = "", modules[TLS_ERR_MAX];
	char warning[256];
	struct stat st;
	size_t len;
	int rc;

	unsetenv("OPENSSL_MODULES");
	rc = tls_process_init(true, 0, warning, sizeof(warning), err, sizeof(err));
	len = strlen(err);
	/* The message names the directory OpenSSL searched: a real one, written plainly. */
	if (rc != -ENOENT || strncmp(err, head, sizeof(head) - 1) != 0 ||
	    len < sizeof(head) + sizeof(tail) || strcmp(err + len - (sizeof(tail) - 1), tail) != 0) {
		fprintf(stderr, "rc %d err \"%s\"\n", rc, err);
		return 1;
	}
	snprintf(modules, sizeof(modules), "%.*s", (int)(len - (sizeof(head) - 1) - (sizeof(tail) - 1)),
		 err + sizeof(head) - 1);
	if (modules[0] != '/' || strchr(modules, '"') || stat(modules, &st) != 0 ||
	    !S_ISDIR(st.st_mode)) {
		fprintf(stderr, "modules directory \"%s\" in \"%s\"\n", modules, err);
		return 3;
	}
	/* Never a silent fallback: FIPS is not reported on, and nothing was switched. */
	return tls_fips_enabled() ? 2 : 0;
}

/* A file named fips.so that is not a provider: it exists, and does not load. */
static int fips_broken_child(void)
{
	char err[TLS_ERR_MAX] = "", p[256];
	char warning[256];
	FILE *f;
	int rc;

	setenv("OPENSSL_MODULES", dir, 1);
	f = fopen(path("fips.so", p, sizeof(p)), "w");
	if (!f)
		return 3;
	fputs("not a shared object\n", f);
	fclose(f);
	rc = tls_process_init(true, 0, warning, sizeof(warning), err, sizeof(err));
	if (rc != -ENOENT || !strstr(err, "tls.fips: the FIPS provider ") ||
	    !strstr(err, "/fips.so did not load (") || strchr(err, '\n')) {
		fprintf(stderr, "rc %d err \"%s\"\n", rc, err);
		return 1;
	}
	return tls_fips_enabled() ? 2 : 0;
}

static int fips_off_child(void)
{
	char err[TLS_ERR_MAX] = "";
	char warning[256] = "unset";

	if (tls_process_init(false, 0, warning, sizeof(warning), err, sizeof(err)) != 0)
		return 1;
	if (!CRYPTO_secure_malloc_initialized() && !warning[0])
		return 4; /* no secure heap must be said */
	return tls_fips_enabled() ? 2 : 0;
}

/* The secure heap holds a session's key share until it ends: it is sized for the sessions
 * the configuration can open, not for the keys alone (64 KiB held about 990 sessions). */
static int secure_heap_child(void)
{
	char err[TLS_ERR_MAX] = "", warning[256];

	if (tls_secure_heap_sessions() != UINT64_MAX)
		return 1; /* no heap yet: no bound */
	if (tls_process_init(false, 20000, warning, sizeof(warning), err, sizeof(err)) != 0)
		return 2;
	if (!CRYPTO_secure_malloc_initialized())
		return warning[0] ? 0 : 3; /* no heap at all must be said */
	if (tls_secure_heap_sessions() < 20000)
		return 4;
	if (CRYPTO_secure_used() != 0)
		return 5; /* nothing allocated yet */
	return 0;
}

static void test_secure_heap_sized_for_sessions(void **state)
{
	struct config *both = cfg_with("max_connections", "1500", "tls.client.mode", "prefer",
				       "tls.client.cert_file", server_pem, "tls.client.key_file",
				       server_key, "tls.server.mode", "prefer", NULL);
	struct config *client = cfg_with("max_connections", "1500", "tls.client.mode", "prefer",
					 "tls.client.cert_file", server_pem, "tls.client.key_file",
					 server_key, "tls.server.mode", "disable", NULL);
	struct config *none = cfg_with("max_connections", "1500", "tls.client.mode", "disable",
				       "tls.server.mode", "disable", NULL);

	assert_int_equal(tls_sessions_for(both), 3000);
	assert_int_equal(tls_sessions_for(client), 1500);
	assert_int_equal(tls_sessions_for(none), 0);
	config_unref(both);
	config_unref(client);
	config_unref(none);
	assert_int_equal(in_child(secure_heap_child), 0);
}

static void test_fips(void **state)
{
	/* Debian 12 ships no FIPS provider: this host has none, and the switch must refuse. */
	assert_int_equal(in_child(fips_absent_child), 0);
	assert_int_equal(in_child(fips_broken_child), 0);
	assert_int_equal(in_child(fips_off_child), 0);
}

/* ---- the probe ----------------------------------------------------------------------- */

struct fake_pg {
	int listen_fd;
	const char *answer; /* bytes to send after the SSLRequest; NULL: close at once */
	size_t answer_len;
	struct tls_snapshot *tls; /* after 'S': a TLS server with this snapshot */
	bool got_ssl_request;
	bool handshake_done;
};

static void *fake_pg_run(void *arg)
{
	struct fake_pg *f = arg;
	uint8_t req[8];
	int fd = accept(f->listen_fd, NULL, NULL);
	ssize_t n = 0;

	if (fd < 0)
		return NULL;
	while (n < 8) {
		ssize_t r = recv(fd, req + n, sizeof(req) - (size_t)n, 0);

		if (r <= 0)
			break;
		n += r;
	}
	f->got_ssl_request = n == 8 && memcmp(req, "\x00\x00\x00\x08\x04\xd2\x16\x2f", 8) == 0;
	if (f->answer)
		(void)!send(fd, f->answer, f->answer_len, MSG_NOSIGNAL);
	if (f->tls) {
		SSL *ssl = SSL_new(f->tls->client_ctx);

		SSL_set_fd(ssl, fd);
		f->handshake_done = SSL_accept(ssl) == 1;
		if (f->handshake_done) {
			char b;

			(void)SSL_read(ssl, &b, 1); /* the probe's close_notify */
		}
		SSL_free(ssl);
	}
	close(fd);
	return NULL;
}

static void probe_case(struct fake_pg *f, int want_rc, bool want_offers, const char *want_subject,
		       const char *want_err)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);
	char subject[256] = "x", err[256] = "";
	bool offers = !want_offers;
	pthread_t th;
	int rc;

	f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->listen_fd >= 0);
	assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(f->listen_fd, 4), 0);
	assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&sin, &len), 0);
	assert_int_equal(pthread_create(&th, NULL, fake_pg_run, f), 0);
	rc = tls_probe_server((struct sockaddr *)&sin, sizeof(sin), 0, 2000, &offers, subject,
			      sizeof(subject), err, sizeof(err));
	pthread_join(th, NULL);
	close(f->listen_fd);
	assert_true(f->got_ssl_request);
	if (rc != want_rc)
		fail_msg("rc %d (%s), want %d", rc, err, want_rc);
	if (rc == 0) {
		assert_int_equal(offers, want_offers);
		assert_string_equal(subject, want_subject);
	} else {
		assert_string_equal(err, want_err);
	}
}

static void test_probe(void **state)
{
	struct config *cfg = cfg_with("tls.client.mode", "prefer", "tls.client.cert_file",
				      server_pem, "tls.client.key_file", server_key, NULL);
	struct tls_snapshot *s;
	char err[TLS_ERR_MAX];
	struct fake_pg f;

	assert_int_equal(tls_snapshot_build(cfg, &s, err, sizeof(err)), 0);
	f = (struct fake_pg){.answer = "N", .answer_len = 1};
	probe_case(&f, 0, false, "", NULL);
	f = (struct fake_pg){.answer = "E\x00\x00\x00\x05x", .answer_len = 6};
	probe_case(&f, 0, false, "", NULL);
	/* 'S', then a real handshake: the certificate's name comes back. */
	f = (struct fake_pg){.answer = "S", .answer_len = 1, .tls = s};
	probe_case(&f, 0, true, "CN=db.example.com,O=Acme", NULL);
	assert_true(f.handshake_done);
	/* 'S' and then nothing sensible: TLS is still what it offered. */
	f = (struct fake_pg){.answer = "S", .answer_len = 1};
	probe_case(&f, 0, true, "", NULL);
	f = (struct fake_pg){.answer = "HTTP/1.1 400", .answer_len = 12};
	probe_case(&f, -EPROTO, false, NULL,
		   "answered an SSLRequest with 0x48, not 'S' or 'N': is it PostgreSQL?");
	f = (struct fake_pg){0};
	probe_case(&f, -ECONNRESET, false, NULL,
		   "no answer to an SSLRequest: the server closed the connection");
	tls_snapshot_unref(s);
	config_unref(cfg);

	/* Nobody listening. */
	{
		struct sockaddr_in sin = {.sin_family = AF_INET,
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t len = sizeof(sin);
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		bool offers;
		char subject[64];

		assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
		assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
		close(fd); /* the port is now (almost certainly) closed */
		assert_int_equal(tls_probe_server((struct sockaddr *)&sin, sizeof(sin), 0, 2000,
						  &offers, subject, sizeof(subject), err, sizeof(err)),
				 -ECONNREFUSED);
		assert_string_equal(err, "cannot connect: Connection refused");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_identity_cases),
		cmocka_unit_test(test_identity_length_bound),
		cmocka_unit_test(test_subject_and_fingerprint),
		cmocka_unit_test(test_end_point_hash),
		cmocka_unit_test(test_alpn_cases),
		cmocka_unit_test(test_snapshot_rules),
		cmocka_unit_test(test_snapshot_errors),
		cmocka_unit_test(test_store_swap),
		cmocka_unit_test(test_fips),
		cmocka_unit_test(test_secure_heap_sized_for_sessions),
		cmocka_unit_test(test_probe),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
