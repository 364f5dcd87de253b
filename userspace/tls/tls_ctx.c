/*
 * tls_ctx: the TLS snapshot (both legs' SSL_CTXs, built from a config), the store that
 * holds the current one, and the per-connection rules OpenSSL calls back into (see tls.h).
 *
 * Every file is checked before OpenSSL is handed it, so that an operator reads "cannot
 * read: Permission denied" or "does not match tls.client.cert_file" rather than an OpenSSL
 * error stack; OpenSSL's reason is appended only where it says something ours cannot.
 */
#include "tls/tls.h"

#include "base/clock.h"
#include "base/errbuf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Session ID context: without one OpenSSL refuses to resume a session that carried a
 * client certificate. Any constant will do; it only has to be the same across the
 * snapshot's connections. */
static const unsigned char session_id_context[] = "pgwarden";

static const unsigned char alpn_postgresql[] = "\x0a" TLS_ALPN_POSTGRESQL;

/* OpenSSL's most specific reason for the last failure ("no start line"), or "". */
static const char *openssl_reason(void)
{
	unsigned long e = ERR_peek_last_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	return r ? r : "";
}

/* ---- the per-connection state OpenSSL's callbacks reach ---------------------------- */

static int conn_index = -1;
static pthread_once_t conn_index_once = PTHREAD_ONCE_INIT;

static void conn_index_init(void)
{
	conn_index = SSL_get_ex_new_index(0, (void *)"pgwarden tls_conn", NULL, NULL, NULL);
}

static struct tls_conn *conn_of(const SSL *ssl)
{
	return conn_index >= 0 ? SSL_get_ex_data(ssl, conn_index) : NULL;
}

/* The reason a refusal keeps when there is no memory for its own (never freed). */
static char why_no_memory[] = "out of memory recording why";

void tls_conn_refuse(struct tls_conn *c, const char *fmt, ...)
{
	va_list ap;

	if (!c || c->why) /* the first reason is the real one */
		return;
	c->why = malloc(TLS_WHY_MAX);
	if (!c->why) {
		c->why = why_no_memory;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(c->why, TLS_WHY_MAX, fmt, ap);
	va_end(ap);
}

/*
 * Chain verification, called per certificate from the top down. OpenSSL has judged the
 * chain (CA, dates, CRL, purpose, depth); the peer's own certificate must in addition name
 * one clean identity, because that identity is who the session is.
 */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_conn *c = ssl ? conn_of(ssl) : NULL;
	const char *peer = c && c->leg == TLS_LEG_CLIENT ? "client" : "server";
	int depth = X509_STORE_CTX_get_error_depth(x);
	X509 *cert = X509_STORE_CTX_get_current_cert(x);
	const char *why;
	char *text;
	int rc;

	if (!ok) {
		tls_conn_refuse(c, "%s certificate refused: %s (depth %d)", peer,
				X509_verify_cert_error_string(X509_STORE_CTX_get_error(x)), depth);
		return 0;
	}
	if (depth != 0 || !cert)
		return 1;
	rc = tls_cert_identity(cert, &text, &why);
	if (rc == 0) {
		free(text);
		rc = tls_cert_subject(cert, &text);
		why = "a subject longer than 4096 bytes";
		free(text);
	}
	if (rc) {
		tls_conn_refuse(c, "%s certificate refused: %s", peer,
				rc == -ENOMEM ? "out of memory" : why);
		X509_STORE_CTX_set_error(x, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return 1;
}

/* Client leg: a client that offers ALPN must offer "postgresql" (PostgreSQL 17 refuses
 * any other the same way), and the answer is always that name. */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			  const unsigned char *in, unsigned int inlen, void *arg)
{
	const uint8_t *at;

	if (tls_alpn_find(in, inlen, TLS_ALPN_POSTGRESQL, &at) != 0) {
		tls_conn_refuse(conn_of(ssl), "the client offered ALPN without \"postgresql\"");
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	*out = at;
	*outlen = (unsigned char)strlen(TLS_ALPN_POSTGRESQL);
	return SSL_TLSEXT_ERR_OK;
}

/* Client leg: a direct SSL client must offer ALPN at all (the select callback only runs
 * when it does). Refused here, before any work on the handshake. */
static int client_hello_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_conn *c = conn_of(ssl);
	const unsigned char *ext;
	size_t len;

	if (!c || !c->direct)
		return SSL_CLIENT_HELLO_SUCCESS;
	if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_application_layer_protocol_negotiation,
				       &ext, &len)) {
		tls_conn_refuse(c, "direct TLS connection without ALPN \"postgresql\"");
		*alert = SSL_AD_NO_APPLICATION_PROTOCOL;
		return SSL_CLIENT_HELLO_ERROR;
	}
	return SSL_CLIENT_HELLO_SUCCESS;
}

/*
 * Renegotiation is switched off (SSL_OP_NO_RENEGOTIATION): OpenSSL answers a peer's
 * attempt with a no_renegotiation warning and goes on. pgwarden ends the connection
 * instead: a peer that tries is either broken or probing, and renegotiation has a history
 * of attacks (CVE-2009-3555, renegotiation DoS). The attempt shows as that alert being
 * written, or, should a handshake ever start on an established TLS 1.2 connection, as its
 * start. (In TLS 1.3 the handshake callbacks also fire for KeyUpdate and tickets, which
 * are fine.)
 */
static void info_cb(const SSL *ssl, int where, int ret)
{
	struct tls_conn *c = conn_of(ssl);

	if (!c)
		return;
	if (((where & SSL_CB_WRITE_ALERT) && (ret & 0xff) == SSL_AD_NO_RENEGOTIATION) ||
	    ((where & SSL_CB_HANDSHAKE_START) && c->established &&
	     SSL_version(ssl) <= TLS1_2_VERSION)) {
		c->renegotiate = true;
		tls_conn_refuse(c, "the %s tried to renegotiate TLS",
				c->leg == TLS_LEG_CLIENT ? "client" : "server");
	}
}

/* An encrypted key would make OpenSSL prompt on the terminal: never. */
static int no_passphrase_cb(char *buf, int size, int rwflag, void *u)
{
	return 0;
}

/* ---- files -------------------------------------------------------------------------- */

/* path can be opened for reading and is a regular file; stat in *st. 0 or -errno. */
static int file_check(const char *key, const char *path, struct stat *st, char *err,
		      size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	int rc = 0;

	if (fd < 0) {
		rc = -errno;
		errbuf_set(err, errlen, "%s: %s: cannot read: %s", key, path, strerror(errno));
		return rc;
	}
	if (fstat(fd, st) != 0) {
		rc = -errno;
		errbuf_set(err, errlen, "%s: %s: cannot read: %s", key, path, strerror(errno));
	} else if (!S_ISREG(st->st_mode)) {
		rc = -EINVAL;
		errbuf_set(err, errlen, "%s: %s: not a regular file", key, path);
	}
	close(fd);
	return rc;
}

/*
 * A private key must not be open to other users, nor writable by its group (PostgreSQL's
 * own rule for ssl_key_file allows 0640 for a root-owned key, as Debian's ssl-cert group
 * uses). pgwarden runs as root and can read any key; the mode says whether anyone else can.
 */
static int key_mode_check(const char *key, const char *path, const struct stat *st,
			  char *err, size_t errlen)
{
	mode_t bad = S_IRWXO | S_IWGRP | S_IXGRP;

	if (st->st_mode & bad) {
		errbuf_set(err, errlen,
			   "%s: %s is open to other users (mode %04o); allow at most 0640 (chmod "
			   "0600 %s)",
			   key, path, (unsigned)(st->st_mode & 07777), path);
		return -EPERM;
	}
	return 0;
}

static EVP_PKEY *key_load(const char *key, const char *path, char *err, size_t errlen)
{
	BIO *b = BIO_new_file(path, "r");
	EVP_PKEY *pkey;

	if (!b) {
		errbuf_set(err, errlen, "%s: %s: cannot read: %s", key, path, openssl_reason());
		return NULL;
	}
	pkey = PEM_read_bio_PrivateKey_ex(b, NULL, no_passphrase_cb, NULL, NULL, NULL);
	BIO_free(b);
	if (!pkey)
		errbuf_set(err, errlen,
			   "%s: %s: no unencrypted PEM private key in it (OpenSSL: %s)",
			   key, path, openssl_reason());
	return pkey;
}

/* A certificate chain and its key into ctx. keys: "tls.client" or "tls.server". */
static int ctx_use_cert_key(SSL_CTX *ctx, const char *leg, const char *cert_path,
			    const char *key_path, char *err, size_t errlen)
{
	char cert_key[40], key_key[40];
	struct stat st;
	EVP_PKEY *pkey;
	int rc;

	snprintf(cert_key, sizeof(cert_key), "%s.cert_file", leg);
	snprintf(key_key, sizeof(key_key), "%s.key_file", leg);
	rc = file_check(cert_key, cert_path, &st, err, errlen);
	if (rc)
		return rc;
	if (SSL_CTX_use_certificate_chain_file(ctx, cert_path) != 1) {
		errbuf_set(err, errlen, "%s: %s: no usable PEM certificate in it (OpenSSL: %s)",
			   cert_key, cert_path, openssl_reason());
		return -EINVAL;
	}
	rc = file_check(key_key, key_path, &st, err, errlen);
	if (rc)
		return rc;
	rc = key_mode_check(key_key, key_path, &st, err, errlen);
	if (rc)
		return rc;
	pkey = key_load(key_key, key_path, err, errlen);
	if (!pkey)
		return -EINVAL;
	if (!X509_check_private_key(SSL_CTX_get0_certificate(ctx), pkey)) {
		errbuf_set(err, errlen, "%s: %s does not match %s %s", key_key, key_path, cert_key,
			   cert_path);
		EVP_PKEY_free(pkey);
		return -EINVAL;
	}
	rc = SSL_CTX_use_PrivateKey(ctx, pkey) == 1 ? 0 : -EINVAL;
	if (rc)
		errbuf_set(err, errlen, "%s: %s: OpenSSL refuses the key (OpenSSL: %s)",
			   key_key, key_path, openssl_reason());
	EVP_PKEY_free(pkey); /* ctx holds its own reference */
	return rc;
}

/* CAs (and, with crl_path, their CRLs) into ctx's store, for verifying the peer. */
static int ctx_use_ca_crl(SSL_CTX *ctx, const char *leg, const char *ca_path,
			  const char *crl_path, char *err, size_t errlen)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	char ca_key[40], crl_key[40];
	X509_LOOKUP *lookup;
	struct stat st;
	int rc;

	snprintf(ca_key, sizeof(ca_key), "%s.ca_file", leg);
	snprintf(crl_key, sizeof(crl_key), "%s.crl_file", leg);
	rc = file_check(ca_key, ca_path, &st, err, errlen);
	if (rc)
		return rc;
	lookup = X509_STORE_add_lookup(store, X509_LOOKUP_file());
	if (!lookup)
		return -ENOMEM;
	/* X509_load_cert_file() counts what it loaded: 0 means the file held no
	 * certificate (a key, a CRL, or nothing in PEM). */
	if (X509_load_cert_file(lookup, ca_path, X509_FILETYPE_PEM) <= 0) {
		errbuf_set(err, errlen, "%s: %s: no PEM CA certificate in it (OpenSSL: %s)",
			   ca_key, ca_path, openssl_reason());
		return -EINVAL;
	}
	if (crl_path) {
		rc = file_check(crl_key, crl_path, &st, err, errlen);
		if (rc)
			return rc;
		if (X509_load_crl_file(lookup, crl_path, X509_FILETYPE_PEM) <= 0) {
			errbuf_set(err, errlen, "%s: %s: no PEM CRL in it (OpenSSL: %s)",
				   crl_key, crl_path, openssl_reason());
			return -EINVAL;
		}
		/* Every certificate of the chain, not only the peer's: a revoked
		 * intermediate revokes everything below it. */
		X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	}
	return 0;
}

/* ---- what both legs share ----------------------------------------------------------- */

/* Every TLS 1.2 cipher ctx would use is ECDHE, signed with RSA or ECDSA, and AEAD. */
static int ctx_check_ciphers(SSL_CTX *ctx, const char *list, char *err, size_t errlen)
{
	STACK_OF(SSL_CIPHER) *ciphers = SSL_CTX_get_ciphers(ctx);
	bool any12 = false;

	for (int i = 0; i < sk_SSL_CIPHER_num(ciphers); i++) {
		const SSL_CIPHER *c = sk_SSL_CIPHER_value(ciphers, i);
		int auth = SSL_CIPHER_get_auth_nid(c), kx = SSL_CIPHER_get_kx_nid(c);

		if (kx == NID_kx_any)
			continue; /* a TLS 1.3 suite (tls.ciphersuites): no key exchange named */
		if (kx != NID_kx_ecdhe || !SSL_CIPHER_is_aead(c) ||
		    (auth != NID_auth_rsa && auth != NID_auth_ecdsa)) {
			errbuf_set(err, errlen,
				   "tls.ciphers: %s is not ECDHE with an AEAD cipher (pgwarden "
				   "offers no other TLS 1.2 cipher)",
				   SSL_CIPHER_get_name(c));
			return -EINVAL;
		}
		any12 = true;
	}
	if (!any12) {
		errbuf_set(err, errlen,
			   "tls.ciphers: OpenSSL selects no TLS 1.2 cipher from \"%s\"",
			   list);
		return -EINVAL;
	}
	return 0;
}

/* Each name of the TLS 1.3 list must be one OpenSSL knows: it ignores unknown names in a
 * list that has a known one, which would hide a typo. */
static int ctx_set_ciphersuites(SSL_CTX *ctx, const char *list, char *err, size_t errlen)
{
	char name[128]; /* longer than any suite name */
	const char *p = list;

	while (*p) {
		size_t n = strcspn(p, ":");

		if (n == 0 || n >= sizeof(name)) {
			errbuf_set(err, errlen, "tls.ciphersuites: an empty name in \"%s\"", list);
			return -EINVAL;
		}
		memcpy(name, p, n);
		name[n] = '\0';
		if (SSL_CTX_set_ciphersuites(ctx, name) != 1) {
			errbuf_set(err, errlen,
				   "tls.ciphersuites: %s is not a TLS 1.3 cipher suite OpenSSL "
				   "knows",
				   name);
			return -EINVAL;
		}
		p += n + (p[n] == ':');
	}
	if (SSL_CTX_set_ciphersuites(ctx, list) != 1) {
		errbuf_set(err, errlen, "tls.ciphersuites: OpenSSL refuses \"%s\"", list);
		return -EINVAL;
	}
	return 0;
}

static SSL_CTX *ctx_common(const struct config *cfg, const SSL_METHOD *method, char *err,
			   size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new_ex(NULL, NULL, method);

	if (!ctx) {
		errbuf_set(err, errlen, "tls: cannot create a TLS context (%s)", openssl_reason());
		return NULL;
	}
	if (!SSL_CTX_set_min_proto_version(ctx, cfg->tls_min_version == CONFIG_TLS_V1_3 ?
							TLS1_3_VERSION :
							TLS1_2_VERSION) ||
	    !SSL_CTX_set_max_proto_version(ctx, 0)) {
		errbuf_set(err, errlen, "tls.min_version: OpenSSL refuses it (%s)",
			   openssl_reason());
		goto err_free;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_clear_options(ctx, SSL_OP_ALLOW_UNSAFE_LEGACY_RENEGOTIATION |
					   SSL_OP_LEGACY_SERVER_CONNECT);
	/* RELEASE_BUFFERS: an idle connection holds no record buffers. PARTIAL_WRITE and
	 * MOVING_WRITE_BUFFER: write() may return a short count and be retried from where
	 * the relay's buffer now is. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE |
				      SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase_cb);
	SSL_CTX_set_info_callback(ctx, info_cb);
	SSL_CTX_set_max_early_data(ctx, 0);
	SSL_CTX_set_recv_max_early_data(ctx, 0);
	SSL_CTX_set_verify_depth(ctx, TLS_VERIFY_DEPTH);
	if (SSL_CTX_set_cipher_list(ctx, cfg->tls_ciphers) != 1) {
		errbuf_set(err, errlen, "tls.ciphers: OpenSSL selects no cipher from \"%s\"",
			   cfg->tls_ciphers);
		goto err_free;
	}
	if (ctx_check_ciphers(ctx, cfg->tls_ciphers, err, errlen) ||
	    ctx_set_ciphersuites(ctx, cfg->tls_ciphersuites, err, errlen))
		goto err_free;
	if (SSL_CTX_set1_groups_list(ctx, cfg->tls_groups) != 1) {
		errbuf_set(err, errlen, "tls.groups: OpenSSL does not offer every group of \"%s\"",
			   cfg->tls_groups);
		goto err_free;
	}
	return ctx;

err_free:
	SSL_CTX_free(ctx);
	return NULL;
}

/* pgwarden as TLS server, towards clients. */
static SSL_CTX *ctx_client_leg(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_common(cfg, TLS_server_method(), err, errlen);
	int verify;

	if (!ctx)
		return NULL;
	if (ctx_use_cert_key(ctx, "tls.client", cfg->tls_client_cert_file,
			     cfg->tls_client_key_file, err, errlen))
		goto err_free;
	SSL_CTX_set_session_id_context(ctx, session_id_context, sizeof(session_id_context) - 1);
	if (cfg->tls_session_tickets) {
		/* Stateless tickets only, keyed by this context's random keys: a reload
		 * (a new context) ends every earlier ticket. */
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER |
							    SSL_SESS_CACHE_NO_INTERNAL);
		SSL_CTX_set_num_tickets(ctx, 1);
	} else {
		SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
	}
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select_cb, NULL);
	SSL_CTX_set_client_hello_cb(ctx, client_hello_cb, NULL);
	if (cfg->tls_client_verify == CONFIG_TLS_VERIFY_NONE) {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	if (ctx_use_ca_crl(ctx, "tls.client", cfg->tls_client_ca_file, cfg->tls_client_crl_file,
			   err, errlen))
		goto err_free;
	{
		STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls_client_ca_file);

		/* The CA names tell a client which of its certificates to send. */
		if (!names) {
			errbuf_set(err, errlen,
				   "tls.client.ca_file: %s: no CA names in it (OpenSSL: %s)",
				   cfg->tls_client_ca_file, openssl_reason());
			goto err_free;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
	}
	if (!SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT)) {
		errbuf_set(err, errlen, "tls.client: cannot set the clientAuth purpose (%s)",
			   openssl_reason());
		goto err_free;
	}
	verify = SSL_VERIFY_PEER | SSL_VERIFY_CLIENT_ONCE;
	if (cfg->tls_client_verify == CONFIG_TLS_VERIFY_REQUIRED)
		verify |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	SSL_CTX_set_verify(ctx, verify, verify_cb);
	return ctx;

err_free:
	SSL_CTX_free(ctx);
	return NULL;
}

/* pgwarden as TLS client, towards PostgreSQL. */
static SSL_CTX *ctx_server_leg(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_common(cfg, TLS_client_method(), err, errlen);

	if (!ctx)
		return NULL;
	/* Nothing is resumed towards the server: no session is kept. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	if (SSL_CTX_set_alpn_protos(ctx, alpn_postgresql, sizeof(alpn_postgresql) - 1) != 0) {
		errbuf_set(err, errlen, "tls.server: cannot offer ALPN (%s)", openssl_reason());
		goto err_free;
	}
	if (cfg->tls_server_cert_file &&
	    ctx_use_cert_key(ctx, "tls.server", cfg->tls_server_cert_file,
			     cfg->tls_server_key_file, err, errlen))
		goto err_free;
	if (cfg->tls_server_mode < CONFIG_TLS_SERVER_VERIFY_CA) {
		/* require and prefer encrypt without checking who answers, as libpq's do. */
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
		return ctx;
	}
	if (ctx_use_ca_crl(ctx, "tls.server", cfg->tls_server_ca_file, cfg->tls_server_crl_file,
			   err, errlen))
		goto err_free;
	if (!SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_SERVER)) {
		errbuf_set(err, errlen, "tls.server: cannot set the serverAuth purpose (%s)",
			   openssl_reason());
		goto err_free;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
	return ctx;

err_free:
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- snapshot ----------------------------------------------------------------------- */

static void snapshot_free(struct tls_snapshot *s)
{
	SSL_CTX_free(s->client_ctx);
	SSL_CTX_free(s->server_ctx);
	free(s->server_name);
	free(s->client_cert_subject);
	pthread_mutex_destroy(&s->plain_lock);
	free(s);
}

/* Snapshots built so far in this process (tls_snapshot.generation). */
static uint64_t tls_snapshot_generations;

int tls_snapshot_build(const struct config *cfg, struct tls_snapshot **out, char *err,
		       size_t errlen)
{
	struct tls_snapshot *s = calloc(1, sizeof(*s));
	int rc = -EINVAL;

	*out = NULL;
	if (!s) {
		errbuf_set(err, errlen, "tls: out of memory");
		return -ENOMEM;
	}
	pthread_once(&conn_index_once, conn_index_init);
	if (conn_index < 0) {
		errbuf_set(err, errlen, "tls: cannot register connection state with OpenSSL");
		free(s);
		return -ENOMEM;
	}
	s->refcount = 1;
	pthread_mutex_init(&s->plain_lock, NULL);
	s->client_mode = cfg->tls_client_mode;
	s->client_verify = cfg->tls_client_verify;
	s->server_mode = cfg->tls_server_mode;
	s->built_wall_ns = clock_wall_ns();
	s->generation = __atomic_add_fetch(&tls_snapshot_generations, 1, __ATOMIC_RELAXED);
	ERR_clear_error();
	if (cfg->tls_server_name && !(s->server_name = strdup(cfg->tls_server_name)))
		goto err_nomem;
	if (cfg->tls_client_mode != CONFIG_TLS_CLIENT_DISABLE) {
		X509 *leaf;

		s->client_ctx = ctx_client_leg(cfg, err, errlen);
		if (!s->client_ctx)
			goto err_free;
		leaf = SSL_CTX_get0_certificate(s->client_ctx);
		rc = tls_cert_subject(leaf, &s->client_cert_subject);
		if (rc == 0)
			rc = tls_cert_fingerprint(leaf, s->client_cert_fingerprint);
		if (rc == -ENOMEM)
			goto err_nomem;
		if (rc) {
			errbuf_set(err, errlen, "tls.client.cert_file: %s: cannot read its subject",
				   cfg->tls_client_cert_file);
			goto err_free;
		}
	}
	if (cfg->tls_server_mode != CONFIG_TLS_SERVER_DISABLE) {
		s->server_ctx = ctx_server_leg(cfg, err, errlen);
		if (!s->server_ctx)
			goto err_free;
	}
	ERR_clear_error();
	*out = s;
	return 0;

err_nomem:
	errbuf_set(err, errlen, "tls: out of memory");
	rc = -ENOMEM;
err_free:
	ERR_clear_error();
	snapshot_free(s);
	return rc < 0 ? rc : -EINVAL;
}

bool tls_server_leg_wanted(const struct tls_snapshot *s, bool unix_socket)
{
	return s && s->server_ctx && s->server_mode != CONFIG_TLS_SERVER_DISABLE && !unix_socket;
}

static struct tls_plain_server *plain_server_find(struct tls_snapshot *s,
						  const struct addr *upstream)
{
	for (unsigned i = 0; i < TLS_PLAIN_SERVERS; i++)
		if (s->plain[i].until_ns && addr_equal(&s->plain[i].addr.ss.sa, &upstream->ss.sa))
			return &s->plain[i];
	return NULL;
}

bool tls_server_known_plain(struct tls_snapshot *s, const struct addr *upstream,
			    uint64_t now_ns)
{
	struct tls_plain_server *e;
	bool plain;

	if (!s || s->server_mode != CONFIG_TLS_SERVER_PREFER || !upstream->len)
		return false;
	pthread_mutex_lock(&s->plain_lock);
	e = plain_server_find(s, upstream);
	plain = e && now_ns < e->until_ns;
	if (e && !plain)
		e->until_ns = 0; /* expired: ask again, and remember the new answer */
	pthread_mutex_unlock(&s->plain_lock);
	return plain;
}

void tls_server_note_answer(struct tls_snapshot *s, const struct addr *upstream,
			    bool offers_tls, uint64_t now_ns)
{
	struct tls_plain_server *e;

	if (!s || s->server_mode != CONFIG_TLS_SERVER_PREFER || !upstream->len)
		return;
	pthread_mutex_lock(&s->plain_lock);
	e = plain_server_find(s, upstream);
	if (!e && !offers_tls) { /* a free entry, else the one that expires first */
		e = &s->plain[0];
		for (unsigned i = 1; i < TLS_PLAIN_SERVERS && e->until_ns; i++)
			if (s->plain[i].until_ns < e->until_ns)
				e = &s->plain[i];
		e->addr = *upstream;
	}
	if (e)
		e->until_ns = offers_tls ? 0 : now_ns + TLS_PLAIN_SERVER_RECHECK_NS;
	pthread_mutex_unlock(&s->plain_lock);
}

const char *tls_server_host(const struct tls_snapshot *s, const struct addr *upstream,
			    char *buf, size_t n)
{
	if (s->server_name)
		return s->server_name;
	if (!upstream->len || getnameinfo(&upstream->ss.sa, upstream->len, buf, (socklen_t)n, NULL,
					  0, NI_NUMERICHOST))
		return NULL;
	return buf;
}

struct tls_snapshot *tls_snapshot_ref(struct tls_snapshot *s)
{
	if (s)
		__atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
	return s;
}

void tls_snapshot_unref(struct tls_snapshot *s)
{
	if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0)
		snapshot_free(s);
}

/* ---- store -------------------------------------------------------------------------- */

void tls_store_init(struct tls_store *st)
{
	pthread_mutex_init(&st->lock, NULL);
	st->current = NULL;
}

void tls_store_destroy(struct tls_store *st)
{
	tls_snapshot_unref(st->current);
	st->current = NULL;
	pthread_mutex_destroy(&st->lock);
}

void tls_store_publish(struct tls_store *st, struct tls_snapshot *s)
{
	struct tls_snapshot *old;

	pthread_mutex_lock(&st->lock);
	old = st->current;
	st->current = s;
	pthread_mutex_unlock(&st->lock);
	tls_snapshot_unref(old);
}

struct tls_snapshot *tls_store_acquire(struct tls_store *st)
{
	struct tls_snapshot *s;

	pthread_mutex_lock(&st->lock);
	s = tls_snapshot_ref(st->current);
	pthread_mutex_unlock(&st->lock);
	return s;
}

/* ---- one leg's connection ----------------------------------------------------------- */

static bool host_is_ip(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Server leg: SNI for a host name, and under verify-full the name or address the
 * certificate must carry. */
static int conn_set_host(struct tls_conn *c, const struct tls_snapshot *s, const char *host)
{
	bool ip = host && host_is_ip(host);

	if (host && !ip && SSL_set_tlsext_host_name(c->ssl, host) != 1)
		return -EINVAL;
	if (s->server_mode != CONFIG_TLS_SERVER_VERIFY_FULL)
		return 0;
	if (!host)
		return -EINVAL; /* nothing to verify the certificate against */
	if (ip)
		return X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), host) == 1 ? 0 :
											  -EINVAL;
	/* Wildcards as libpq reads them: a whole leftmost label only. */
	SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	return SSL_set1_host(c->ssl, host) == 1 ? 0 : -EINVAL;
}

int tls_conn_init(struct tls_conn *c, const struct tls_snapshot *s, enum tls_leg leg,
		  const struct tls_conn_params *p)
{
	SSL_CTX *ctx = leg == TLS_LEG_CLIENT ? s->client_ctx : s->server_ctx;
	int rc;

	*c = (struct tls_conn){.leg = leg, .direct = leg == TLS_LEG_CLIENT && p && p->direct};
	if (!ctx)
		return -ENOTCONN;
	c->ssl = SSL_new(ctx);
	if (!c->ssl)
		return -ENOMEM;
	if (!SSL_set_ex_data(c->ssl, conn_index, c)) {
		rc = -ENOMEM;
		goto err_free;
	}
	if (leg == TLS_LEG_CLIENT) {
		SSL_set_accept_state(c->ssl);
		return 0;
	}
	SSL_set_connect_state(c->ssl);
	rc = conn_set_host(c, s, p ? p->host : NULL);
	if (rc)
		goto err_free;
	return 0;

err_free:
	SSL_free(c->ssl);
	c->ssl = NULL;
	ERR_clear_error();
	return rc;
}

void tls_conn_release(struct tls_conn *c)
{
	if (c->ssl)
		SSL_free(c->ssl);
	c->ssl = NULL;
	c->established = false;
	if (c->why != why_no_memory)
		free(c->why);
	c->why = NULL;
}

int tls_conn_established(struct tls_conn *c)
{
	const unsigned char *alpn = NULL;
	unsigned int alpn_len = 0;

	if (c->direct) {
		SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
		if (!alpn_len) {
			tls_conn_refuse(c, "direct TLS connection without ALPN \"postgresql\"");
			return -EPROTO;
		}
	}
	c->established = true;
	return 0;
}

/* The peer presented a certificate and it verified (not only "was received"). */
static X509 *conn_verified_peer(const struct tls_conn *c)
{
	X509 *peer = SSL_get0_peer_certificate(c->ssl);

	if (!peer || !(SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER) ||
	    SSL_get_verify_result(c->ssl) != X509_V_OK)
		return NULL;
	return peer;
}

int tls_conn_fill_session(const struct tls_conn *c, struct session_tls *out)
{
	X509 *peer;
	const char *why;
	int rc;

	if (!c->ssl || !c->established)
		return -ENOTCONN;
	out->version = SSL_get_version(c->ssl);
	out->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl));
	peer = conn_verified_peer(c);
	if (!peer)
		return 0;
	rc = tls_cert_subject(peer, &out->peer_subject);
	if (rc == 0)
		rc = tls_cert_identity(peer, &out->peer_identity, &why);
	if (rc == 0) {
		out->peer_fingerprint = malloc(SESSION_FINGERPRINT_HEXLEN + 1);
		rc = out->peer_fingerprint ? tls_cert_fingerprint(peer, out->peer_fingerprint)
					   : -ENOMEM;
	}
	if (rc) {
		/* The verify callback accepted this certificate, so only memory can fail. */
		free(out->peer_subject);
		free(out->peer_identity);
		free(out->peer_fingerprint);
		out->peer_subject = NULL;
		out->peer_identity = NULL;
		out->peer_fingerprint = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* The certificate channel binding hashes on c's leg: ours to clients, the server's to us. */
static X509 *conn_binding_cert(const struct tls_conn *c)
{
	return c->leg == TLS_LEG_CLIENT ? SSL_get_certificate(c->ssl) :
					  SSL_get0_peer_certificate(c->ssl);
}

int tls_conn_channel_binding(const struct tls_conn *c, uint8_t *out, size_t *len)
{
	X509 *cert;

	if (!c->ssl || !c->established)
		return -ENOTCONN;
	cert = conn_binding_cert(c);
	if (!cert)
		return -ENOENT;
	return tls_cert_end_point_hash(cert, out, len);
}

bool tls_binding_passes_through(const struct tls_conn *client_leg,
				const struct tls_conn *server_leg)
{
	uint8_t a[TLS_CB_HASH_MAX], b[TLS_CB_HASH_MAX];
	size_t alen, blen;

	if (!client_leg || !server_leg || client_leg->leg != TLS_LEG_CLIENT ||
	    server_leg->leg != TLS_LEG_SERVER)
		return false;
	if (tls_conn_channel_binding(client_leg, a, &alen) ||
	    tls_conn_channel_binding(server_leg, b, &blen))
		return false;
	return alen == blen && CRYPTO_memcmp(a, b, alen) == 0;
}
