/*
 * terminate: the client leg in terminate mode (see auth.h, auth_terminate_*).
 *
 * Which factor is asked for:
 *   require_cert_and_password  a certificate that auth.cert_map maps to the role, then SCRAM;
 *   a mapped certificate       is enough on its own (SESSION_AUTH_CERT);
 *   otherwise                  SCRAM against auth.users_file, when there is one.
 * Every SCRAM failure (wrong password, unknown user: a mock exchange, a locked user or
 * source: a doomed one) ends with the same 28P01 at the same step, after the same work.
 */
#include "auth/auth_int.h"

#include "auth/certmap.h"
#include "auth/userlist.h"
#include "base/log.h"

#include <openssl/crypto.h>
#include <string.h>

static enum auth_action fail_cert(struct auth_terminate *t, uint64_t now_ms, uint8_t *out,
				  size_t cap, size_t *out_len)
{
	const char *identity = session_client_tls(t->s)->peer_identity;

	t->state = AUTH_TERM_FAILED;
	t->lock_result |= lockout_record_failure(t->ctx->lockout, t->s->user, t->source,
						  t->s->id_hex, now_ms);
	if (!identity) {
		auth_log(t->s, LOG_WARN, "auth_refused", "cert", "no verified client certificate");
		return auth_refuse(out, cap, out_len, "28000",
				   "connection requires a valid client certificate");
	}
	auth_log(t->s, LOG_WARN, "auth_refused", "cert",
		 t->locked ? "user or source is locked" :
			     "certificate identity not mapped to this role by auth.cert_map");
	return auth_refuse(out, cap, out_len, "28000",
			   "certificate authentication failed for user \"%.63s\"", t->s->user);
}

static enum auth_action set_verified(struct auth_terminate *t, enum session_auth_method method,
				     uint8_t *out, size_t cap, size_t *out_len)
{
	if (session_set_verified(t->s, method, true, t->s->user)) {
		t->state = AUTH_TERM_FAILED;
		return auth_refuse(out, cap, out_len, "53200", "out of memory");
	}
	lockout_record_success(t->ctx->lockout, t->s->user);
	t->state = AUTH_TERM_DONE;
	return AUTH_DONE;
}

enum auth_action auth_terminate_begin(struct auth_terminate *t, const struct auth_ctx *ctx,
				      struct session *s, const uint8_t *cbind_data,
				      size_t cbind_len, uint64_t now_ms, uint8_t *out, size_t cap,
				      size_t *out_len)
{
	struct scram_server_params p;
	const char *cert_identity = session_client_tls(s)->peer_identity;
	const uint8_t *mechs;
	uint32_t mlen;
	int n;

	memset(t, 0, sizeof(*t));
	t->ctx = ctx;
	t->s = s;
	t->state = AUTH_TERM_FAILED;
	*out_len = 0;
	auth_source_key(s, t->source, sizeof(t->source));
	t->locked = lockout_is_locked(ctx->lockout, s->user, t->source, now_ms);
	t->cert_ok = ctx->certmap && cert_identity &&
		     certmap_allows(ctx->certmap, ctx->cert_map_name, cert_identity, s->user);
	if (ctx->require_cert_and_password && !t->cert_ok)
		return fail_cert(t, now_ms, out, cap, out_len);
	if (t->cert_ok && !ctx->require_cert_and_password) {
		if (t->locked)
			return fail_cert(t, now_ms, out, cap, out_len);
		auth_log(s, LOG_INFO, "auth_ok", "cert", NULL);
		return set_verified(t, SESSION_AUTH_CERT, out, cap, out_len);
	}
	if (!ctx->users)
		return fail_cert(t, now_ms, out, cap, out_len);
	t->verifier = userlist_verifier(ctx->users, s->user);
	p = (struct scram_server_params){
		.verifier = t->verifier,
		.user = s->user,
		.mock_secret = ctx->mock_secret,
		.mock_secret_len = 32,
		.mock_iterations = ctx->mock_iterations,
		.mock_salt_len = ctx->mock_salt_len,
		.cbind_data = cbind_data,
		.cbind_len = cbind_len,
		.doomed = t->locked,
	};
	if (scram_server_init(&t->scram, &p))
		return auth_refuse(out, cap, out_len, "XX000", "could not start SCRAM authentication");
	mechs = scram_server_mechanisms(&t->scram, &mlen);
	n = proto_write_auth(out, cap, AUTH_REQ_SASL, mechs, mlen);
	if (n < 0)
		return auth_refuse(out, cap, out_len, "XX000", "could not write AuthenticationSASL");
	*out_len = (size_t)n;
	t->state = AUTH_TERM_SASL_SENT;
	return AUTH_TO_CLIENT;
}

static enum auth_action scram_failed(struct auth_terminate *t, int rc, uint64_t now_ms,
				     uint8_t *out, size_t cap, size_t *out_len)
{
	t->state = AUTH_TERM_FAILED;
	if (rc == SCRAM_ERR_AUTH_FAILED) {
		t->lock_result |= lockout_record_failure(t->ctx->lockout, t->s->user, t->source,
							  t->s->id_hex, now_ms);
		/* Why, for the operator only: the client sees one text for all three. */
		auth_log(t->s, LOG_WARN, "auth_refused", "scram-sha-256",
			 t->locked ? "user or source is locked" :
			 !t->verifier ? "no such user in auth.users_file" :
					"wrong password");
	} else {
		auth_log(t->s, LOG_WARN, "auth_protocol_violation", "scram-sha-256",
			 scram_error(rc)->message);
	}
	return auth_refuse_scram(out, cap, out_len, rc, t->s->user);
}

enum auth_action auth_terminate_client(struct auth_terminate *t, const struct proto_msg *m,
				       uint64_t now_ms, uint8_t *out, size_t cap, size_t *out_len)
{
	char msg[SCRAM_MESSAGE_MAX];
	const char *mech;
	const uint8_t *data;
	int32_t dlen;
	size_t n = 0;
	int rc, w;

	*out_len = 0;
	if (t->state != AUTH_TERM_SASL_SENT && t->state != AUTH_TERM_CONTINUE_SENT)
		return auth_refuse(out, cap, out_len, "08P01", "invalid SCRAM exchange state");
	if (m->type != PqMsg_SASLResponse) {
		t->state = AUTH_TERM_FAILED;
		return auth_refuse(out, cap, out_len, "08P01",
				   "expected SASL response, got message type %d", m->type);
	}
	if (t->state == AUTH_TERM_SASL_SENT) {
		if (proto_read_sasl_initial(m, &mech, &data, &dlen) != PROTO_OK || dlen < 0)
			return scram_failed(t, SCRAM_ERR_MALFORMED, now_ms, out, cap, out_len);
		rc = scram_server_first(&t->scram, mech, data, (size_t)dlen, msg, sizeof(msg), &n);
		if (rc)
			return scram_failed(t, rc, now_ms, out, cap, out_len);
		w = proto_write_auth(out, cap, AUTH_REQ_SASL_CONT, (const uint8_t *)msg, (uint32_t)n);
		if (w < 0)
			return scram_failed(t, SCRAM_ERR_BUFFER, now_ms, out, cap, out_len);
		*out_len = (size_t)w;
		t->state = AUTH_TERM_CONTINUE_SENT;
		return AUTH_TO_CLIENT;
	}
	rc = scram_server_final(&t->scram, m->body, m->body_len, msg, sizeof(msg), &n);
	if (rc)
		return scram_failed(t, rc, now_ms, out, cap, out_len);
	w = proto_write_auth(out, cap, AUTH_REQ_SASL_FIN, (const uint8_t *)msg, (uint32_t)n);
	if (w < 0)
		return scram_failed(t, SCRAM_ERR_BUFFER, now_ms, out, cap, out_len);
	auth_log(t->s, LOG_INFO, "auth_ok",
		 t->cert_ok ? "cert+scram-sha-256" :
		 t->scram.plus_selected ? "scram-sha-256-plus" : "scram-sha-256",
		 NULL);
	if (set_verified(t, t->cert_ok ? SESSION_AUTH_CERT_SCRAM :
			 t->scram.plus_selected ? SESSION_AUTH_SCRAM_PLUS : SESSION_AUTH_SCRAM,
			 out, cap, out_len) != AUTH_DONE)
		return AUTH_REFUSE;
	*out_len = (size_t)w;
	return AUTH_DONE;
}

const uint8_t *auth_terminate_client_key(const struct auth_terminate *t)
{
	return t->state == AUTH_TERM_DONE ? scram_server_client_key(&t->scram) : NULL;
}

const struct scram_verifier *auth_terminate_verifier(const struct auth_terminate *t)
{
	return t->state == AUTH_TERM_DONE && scram_server_client_key(&t->scram) ? t->verifier : NULL;
}

void auth_terminate_end(struct auth_terminate *t)
{
	scram_server_clear(&t->scram);
	t->verifier = NULL;
}
