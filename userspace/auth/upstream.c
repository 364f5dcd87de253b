/*
 * upstream: the server leg in terminate mode (see auth.h, auth_upstream_*).
 *
 * pgwarden logs in as the client's role with what it holds: the role's password from
 * auth.upstream_passwords, else the ClientKey the client's own proof gave away (valid only
 * against a server holding the same verifier). It answers only the methods
 * auth.server_methods allows, never sends a password in clear unless "password" is
 * allowed, and counts the login only once the server proved it knows ServerKey.
 */
#include "auth/auth_int.h"

#include "auth/userlist.h"
#include "base/log.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

void auth_upstream_begin(struct auth_upstream *u, const struct auth_ctx *ctx, struct session *s,
			 const struct auth_terminate *t, bool tls, const uint8_t *cbind_data,
			 size_t cbind_len)
{
	const uint8_t *ck = t ? auth_terminate_client_key(t) : NULL;

	memset(u, 0, sizeof(*u));
	u->ctx = ctx;
	u->s = s;
	u->password = userlist_password(ctx->upstream_passwords, s->user);
	if (ck && auth_terminate_verifier(t)) {
		memcpy(u->client_key, ck, SCRAM_KEY_LEN);
		u->verifier = auth_terminate_verifier(t);
		u->have_client_key = true;
	}
	u->tls = tls;
	if (cbind_data && cbind_len && cbind_len <= sizeof(u->cbind_data)) {
		memcpy(u->cbind_data, cbind_data, cbind_len);
		u->cbind_len = cbind_len;
	}
	u->state = AUTH_UP_START;
}

void auth_upstream_end(struct auth_upstream *u)
{
	scram_client_clear(&u->scram);
	OPENSSL_cleanse(u->client_key, sizeof(u->client_key));
	u->password = NULL;
	u->have_client_key = false;
}

static enum auth_action fail(struct auth_upstream *u, const char *sqlstate, const char *why,
			     uint8_t *out, size_t cap, size_t *out_len)
{
	u->state = AUTH_UP_FAILED;
	auth_log(u->s, LOG_WARN, "auth_upstream_failed", NULL, why);
	return auth_refuse(out, cap, out_len, sqlstate,
			   "pgwarden could not log in to the server as \"%.63s\": %s", u->s->user,
			   why);
}

static bool allowed(const struct auth_upstream *u, uint32_t bits)
{
	return (u->ctx->server_methods & bits) != 0;
}

/* "md5" + md5hex(md5hex(password || user) || salt), as libpq computes it. */
static int md5_password(const char *password, const char *user, const uint8_t salt[4],
			char out[36])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t d[16], inner[32 + 4];
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned int n;
	int ok;

	ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) &&
	     EVP_DigestUpdate(ctx, password, strlen(password)) &&
	     EVP_DigestUpdate(ctx, user, strlen(user)) && EVP_DigestFinal_ex(ctx, d, &n);
	for (int i = 0; ok && i < 16; i++) {
		inner[2 * i] = (uint8_t)hex[d[i] >> 4];
		inner[2 * i + 1] = (uint8_t)hex[d[i] & 15];
	}
	memcpy(inner + 32, salt, 4);
	ok = ok && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) &&
	     EVP_DigestUpdate(ctx, inner, sizeof(inner)) && EVP_DigestFinal_ex(ctx, d, &n);
	EVP_MD_CTX_free(ctx);
	OPENSSL_cleanse(inner, sizeof(inner));
	if (!ok)
		return -1;
	memcpy(out, "md5", 3);
	for (int i = 0; i < 16; i++) {
		out[3 + 2 * i] = hex[d[i] >> 4];
		out[4 + 2 * i] = hex[d[i] & 15];
	}
	out[35] = '\0';
	OPENSSL_cleanse(d, sizeof(d));
	return 0;
}

static enum auth_action send_password(struct auth_upstream *u, uint32_t code,
				      const uint8_t *data, uint32_t len, uint8_t *out, size_t cap,
				      size_t *out_len)
{
	uint32_t bit = code == AUTH_REQ_MD5 ? AUTH_METHOD_MD5 : AUTH_METHOD_PASSWORD;
	char md5[36];
	int n;

	if (u->state != AUTH_UP_START)
		return fail(u, "08P01", "the server sent an unexpected password request", out, cap,
			    out_len);
	if (!allowed(u, bit))
		return fail(u, "28000",
			    code == AUTH_REQ_MD5 ?
				    "the server asked for md5, which auth.server_methods does not allow" :
				    "the server asked for a cleartext password, which "
				    "auth.server_methods does not allow",
			    out, cap, out_len);
	if (!u->password)
		return fail(u, "28000",
			    "the server asked for a password and auth.upstream_passwords has none "
			    "for this user",
			    out, cap, out_len);
	if (code == AUTH_REQ_MD5) {
		if (len != 4 || md5_password(u->password, u->s->user, data, md5))
			return fail(u, "08006", "cannot compute the md5 answer (FIPS mode?)", out, cap,
				    out_len);
		n = proto_write_password(out, cap, md5);
		OPENSSL_cleanse(md5, sizeof(md5));
	} else {
		n = proto_write_password(out, cap, u->password);
	}
	if (n < 0)
		return fail(u, "08006", "the password does not fit in a message", out, cap, out_len);
	*out_len = (size_t)n;
	u->state = AUTH_UP_PASSWORD_SENT;
	return AUTH_TO_SERVER;
}

static enum auth_action scram_fail(struct auth_upstream *u, int rc, uint8_t *out, size_t cap,
				   size_t *out_len)
{
	const struct scram_error_info *e = scram_error(rc);

	if (rc == SCRAM_ERR_NO_CREDENTIAL)
		return fail(u, "28000",
			    u->have_client_key ?
				    "the server's verifier for this user is not the one in "
				    "auth.users_file (salt or iterations differ); give its password "
				    "in auth.upstream_passwords" :
				    "no password in auth.upstream_passwords and no SCRAM key from the "
				    "client",
			    out, cap, out_len);
	return fail(u, rc == SCRAM_ERR_SIGNATURE || rc == SCRAM_ERR_SERVER_ERROR ? "28000" : "08P01",
		    e->message, out, cap, out_len);
}

static enum auth_action server_auth(struct auth_upstream *u, const struct proto_msg *m,
				    uint8_t *out, size_t cap, size_t *out_len)
{
	char msg[SCRAM_MESSAGE_MAX];
	const uint8_t *data;
	const char *mech;
	uint32_t code, len;
	size_t n = 0;
	int rc, w;

	if (proto_read_auth_data(m, &code, &data, &len) != PROTO_OK)
		return fail(u, "08P01", "invalid authentication request from the server", out, cap,
			    out_len);
	switch (code) {
	case AUTH_REQ_OK:
		if (u->state == AUTH_UP_START) {
			if (!allowed(u, AUTH_METHOD_TRUST))
				return fail(u, "28000",
					    "the server accepted the login without any exchange "
					    "(trust), which auth.server_methods does not allow",
					    out, cap, out_len);
		} else if (u->state != AUTH_UP_PASSWORD_SENT && u->state != AUTH_UP_SASL_VERIFIED) {
			return fail(u, "08P01",
				    "the server sent AuthenticationOk before the exchange finished",
				    out, cap, out_len);
		}
		w = proto_write_auth(out, cap, AUTH_REQ_OK, NULL, 0);
		*out_len = w > 0 ? (size_t)w : 0;
		u->state = AUTH_UP_DONE;
		auth_log(u->s, LOG_INFO, "auth_upstream_ok", NULL, NULL);
		return AUTH_DONE;
	case AUTH_REQ_PASSWORD:
	case AUTH_REQ_MD5:
		return send_password(u, code, data, len, out, cap, out_len);
	case AUTH_REQ_SASL: {
		struct scram_client_params p = {
			.password = u->password,
			.client_key = u->password ? NULL : (u->have_client_key ? u->client_key : NULL),
			.verifier = u->password ? NULL : u->verifier,
			.tls = u->tls,
			.cbind_data = u->cbind_len ? u->cbind_data : NULL,
			.cbind_len = u->cbind_len,
		};

		if (u->state != AUTH_UP_START)
			break;
		if (!allowed(u, AUTH_METHOD_SCRAM | AUTH_METHOD_SCRAM_PLUS))
			return fail(u, "28000",
				    "the server asked for SCRAM, which auth.server_methods does not "
				    "allow",
				    out, cap, out_len);
		rc = scram_client_init(&u->scram, &p);
		if (!rc)
			rc = scram_client_first(&u->scram, data, len, &mech, msg, sizeof(msg), &n);
		if (rc)
			return scram_fail(u, rc, out, cap, out_len);
		if (!u->scram.plus && !allowed(u, AUTH_METHOD_SCRAM))
			return fail(u, "28000",
				    "auth.server_methods requires channel binding, which this upstream "
				    "leg cannot offer",
				    out, cap, out_len);
		w = proto_write_sasl_initial(out, cap, mech, (const uint8_t *)msg, (uint32_t)n);
		if (w < 0)
			return scram_fail(u, SCRAM_ERR_BUFFER, out, cap, out_len);
		*out_len = (size_t)w;
		u->state = AUTH_UP_SASL_FIRST_SENT;
		return AUTH_TO_SERVER;
	}
	case AUTH_REQ_SASL_CONT:
		if (u->state != AUTH_UP_SASL_FIRST_SENT)
			break;
		rc = scram_client_final(&u->scram, data, len, msg, sizeof(msg), &n);
		if (rc)
			return scram_fail(u, rc, out, cap, out_len);
		w = proto_write_sasl_response(out, cap, (const uint8_t *)msg, (uint32_t)n);
		OPENSSL_cleanse(msg, sizeof(msg));
		if (w < 0)
			return scram_fail(u, SCRAM_ERR_BUFFER, out, cap, out_len);
		*out_len = (size_t)w;
		u->state = AUTH_UP_SASL_FINAL_SENT;
		return AUTH_TO_SERVER;
	case AUTH_REQ_SASL_FIN:
		if (u->state != AUTH_UP_SASL_FINAL_SENT)
			break;
		rc = scram_client_verify(&u->scram, data, len);
		if (rc)
			return scram_fail(u, rc, out, cap, out_len);
		u->state = AUTH_UP_SASL_VERIFIED;
		return AUTH_WAIT_SERVER;
	default:
		return fail(u, "28000",
			    "the server asked for a method pgwarden cannot answer in terminate mode",
			    out, cap, out_len);
	}
	return fail(u, "08P01", "the server sent an unexpected authentication request", out, cap,
		    out_len);
}

enum auth_action auth_upstream_server(struct auth_upstream *u, const struct proto_msg *m,
				      uint8_t *out, size_t cap, size_t *out_len)
{
	*out_len = 0;
	if (u->state == AUTH_UP_DONE || u->state == AUTH_UP_FAILED)
		return fail(u, "08P01", "authentication already finished", out, cap, out_len);
	if (m->type == PqMsg_AuthenticationRequest)
		return server_auth(u, m, out, cap, out_len);
	if (m->type == PqMsg_ErrorResponse) {
		/* The server's own refusal reaches the client as the server wrote it. */
		u->state = AUTH_UP_FAILED;
		auth_log(u->s, LOG_WARN, "auth_upstream_failed", NULL, "the server refused the login");
		if (PROTO_HEADER_LEN + (size_t)m->body_len <= cap && m->body) {
			out[0] = m->type;
			proto_write_u32(out + 1, m->body_len + 4);
			memcpy(out + PROTO_HEADER_LEN, m->body, m->body_len);
			*out_len = PROTO_HEADER_LEN + m->body_len;
			return AUTH_REFUSE;
		}
		return auth_refuse(out, cap, out_len, "08006",
				   "the server refused pgwarden's login as \"%.63s\"", u->s->user);
	}
	return AUTH_WAIT_SERVER; /* NoticeResponse, NegotiateProtocolVersion: the core's */
}
