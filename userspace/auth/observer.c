/*
 * observer: passthrough authentication (see auth.h, auth_observer_*).
 *
 * The server authenticates; this machine sees each message of the exchange before it is
 * forwarded and answers forward or refuse. A refusal happens at the message that would
 * otherwise carry the problem on: a request for a method auth.server_methods does not
 * allow is never shown to the client (so the client never answers it with a secret); a
 * malformed SCRAM message from either side never reaches the other; a server that accepts
 * a login the lockout forbids has its acceptance replaced by the 28P01 a wrong password
 * gets (for SCRAM, already at the server-final, which a real failure never carries).
 */
#include "auth/auth_int.h"

#include "base/log.h"

#include <string.h>

static const char *method_name(uint8_t bit)
{
	for (unsigned i = 0; i < AUTH_METHOD_NAMES_COUNT; i++)
		if (bit == (1u << i))
			return auth_method_names[i];
	return "unknown";
}

void auth_observer_begin(struct auth_observer *o, const struct auth_ctx *ctx, struct session *s,
			 uint64_t now_ms)
{
	memset(o, 0, sizeof(*o));
	o->ctx = ctx;
	o->s = s;
	auth_source_key(s, o->source, sizeof(o->source));
	o->locked = lockout_is_locked(ctx->lockout, s->user, o->source, now_ms);
}

void auth_observer_end(struct auth_observer *o)
{
	memset(o->nonce, 0, sizeof(o->nonce));
	memset(o->gs2, 0, sizeof(o->gs2));
}

static enum auth_action refuse_method(struct auth_observer *o, uint8_t bit, uint8_t *out,
				      size_t cap, size_t *out_len)
{
	char allowed[160];
	struct log_line l;

	o->state = AUTH_OBS_FAILED;
	if (!log_enabled(LOG_WARN))
		goto logged;
	log_line_begin(&l, LOG_WARN, "auth_method_refused");
	log_kv_str(&l, "session", o->s->id_hex);
	log_kv_str(&l, "user", o->s->user);
	log_kv_str(&l, "method", method_name(bit));
	log_kv_str(&l, "allowed", auth_methods_format(o->ctx->server_methods, allowed,
						      sizeof(allowed)));
	log_line_end(&l);
logged:
	return auth_refuse(out, cap, out_len, "28000",
			   "server requested %s authentication, which pgwarden does not allow "
			   "(auth.server_methods)",
			   method_name(bit));
}

static enum auth_action violation(struct auth_observer *o, const char *from, int scram_status,
				  const char *what, uint8_t *out, size_t cap, size_t *out_len)
{
	o->state = AUTH_OBS_FAILED;
	auth_log(o->s, LOG_WARN, "auth_protocol_violation", from,
		 what ? what : scram_error(scram_status)->message);
	if (what)
		return auth_refuse(out, cap, out_len, "08P01", "%s", what);
	return auth_refuse_scram(out, cap, out_len, scram_status, o->s->user);
}

static bool allowed(const struct auth_observer *o, uint32_t bits)
{
	return (o->ctx->server_methods & bits) != 0;
}

/* The mechanism list of AuthenticationSASL: which SCRAM variants it offers. */
static bool sasl_list(const uint8_t *d, uint32_t len, bool *plain, bool *plus)
{
	uint32_t off = 0;

	*plain = *plus = false;
	while (off < len && d[off]) {
		const char *name = (const char *)d + off;
		size_t n = strnlen(name, len - off);

		if (n == len - off)
			return false;
		*plain |= strcmp(name, SCRAM_MECHANISM) == 0;
		*plus |= strcmp(name, SCRAM_MECHANISM_PLUS) == 0;
		off += (uint32_t)n + 1;
	}
	return off + 1 == len;
}

static enum auth_action login_ok(struct auth_observer *o, uint8_t *out, size_t cap,
				 size_t *out_len)
{
	enum session_auth_method method;

	if (o->locked) {
		o->state = AUTH_OBS_FAILED;
		auth_log(o->s, LOG_WARN, "auth_locked", method_name(o->requested),
			 "the server accepted the login, but the user or source is locked");
		return auth_refuse_password(out, cap, out_len, o->s->user);
	}
	switch (o->requested) {
	case AUTH_METHOD_PASSWORD: method = SESSION_AUTH_PASSWORD; break;
	case AUTH_METHOD_MD5: method = SESSION_AUTH_MD5; break;
	case AUTH_METHOD_SCRAM: method = o->plus_chosen ? SESSION_AUTH_SCRAM_PLUS : SESSION_AUTH_SCRAM; break;
	case AUTH_METHOD_GSS: method = SESSION_AUTH_GSS; break;
	case AUTH_METHOD_SSPI: method = SESSION_AUTH_SSPI; break;
	default: method = SESSION_AUTH_TRUST; break;
	}
	if (session_set_verified(o->s, method, false, o->s->user)) {
		o->state = AUTH_OBS_FAILED;
		return auth_refuse(out, cap, out_len, "53200", "out of memory");
	}
	lockout_record_success(o->ctx->lockout, o->s->user);
	o->state = AUTH_OBS_DONE;
	return AUTH_DONE;
}

static enum auth_action server_auth(struct auth_observer *o, const struct proto_msg *m,
				    uint8_t *out, size_t cap, size_t *out_len)
{
	const uint8_t *data;
	uint32_t code, len;
	int rc;

	if (proto_read_auth_data(m, &code, &data, &len) != PROTO_OK)
		return violation(o, "server", 0, "invalid authentication request from the server",
				 out, cap, out_len);
	switch (code) {
	case AUTH_REQ_OK:
		if (o->state == AUTH_OBS_START) {
			o->requested = AUTH_METHOD_TRUST;
			if (!allowed(o, AUTH_METHOD_TRUST))
				return refuse_method(o, AUTH_METHOD_TRUST, out, cap, out_len);
		} else if (o->state != AUTH_OBS_PASSWORD && o->state != AUTH_OBS_SASL_DONE &&
			   o->state != AUTH_OBS_GSS) {
			/* A server that skips the SCRAM exchange's end never proved it knows the
			 * verifier: mutual authentication would silently not happen. */
			return violation(o, "server", 0,
					 "server sent AuthenticationOk before the authentication "
					 "exchange finished",
					 out, cap, out_len);
		}
		return login_ok(o, out, cap, out_len);
	case AUTH_REQ_PASSWORD:
	case AUTH_REQ_MD5:
		if (o->state != AUTH_OBS_START)
			break;
		o->requested = code == AUTH_REQ_MD5 ? AUTH_METHOD_MD5 : AUTH_METHOD_PASSWORD;
		if (!allowed(o, o->requested))
			return refuse_method(o, o->requested, out, cap, out_len);
		o->s->auth.method = code == AUTH_REQ_MD5 ? SESSION_AUTH_MD5 : SESSION_AUTH_PASSWORD;
		o->state = AUTH_OBS_PASSWORD;
		return AUTH_FORWARD;
	case AUTH_REQ_SASL: {
		bool plain, plus;

		if (o->state != AUTH_OBS_START)
			break;
		o->requested = AUTH_METHOD_SCRAM;
		if (!sasl_list(data, len, &plain, &plus))
			return violation(o, "server", 0, "invalid SASL mechanism list from the server",
					 out, cap, out_len);
		if (!((allowed(o, AUTH_METHOD_SCRAM) && (plain || plus)) ||
		      (allowed(o, AUTH_METHOD_SCRAM_PLUS) && plus)))
			return refuse_method(o, AUTH_METHOD_SCRAM, out, cap, out_len);
		o->plus_offered = plus;
		o->s->auth.method = SESSION_AUTH_SCRAM;
		o->state = AUTH_OBS_SASL;
		return AUTH_FORWARD;
	}
	case AUTH_REQ_SASL_CONT: {
		struct scram_server_first sf;

		if (o->state != AUTH_OBS_SASL_FIRST)
			break;
		rc = scram_parse_server_first((const char *)data, len, o->nonce, o->nonce_len, &sf);
		if (rc)
			return violation(o, "server", rc, NULL, out, cap, out_len);
		memcpy(o->nonce, sf.nonce, sf.nonce_len);
		o->nonce_len = sf.nonce_len;
		o->state = AUTH_OBS_SASL_CONTINUE;
		return AUTH_FORWARD;
	}
	case AUTH_REQ_SASL_FIN: {
		struct scram_server_final sf;

		if (o->state != AUTH_OBS_SASL_FINAL)
			break;
		rc = scram_parse_server_final((const char *)data, len, &sf);
		if (rc)
			return violation(o, "server", rc, NULL, out, cap, out_len);
		o->state = AUTH_OBS_SASL_DONE;
		if (o->locked && !sf.is_error)
			return login_ok(o, out, cap, out_len); /* refuses: locked */
		return AUTH_FORWARD;
	}
	case AUTH_REQ_GSS:
	case AUTH_REQ_SSPI:
		if (o->state != AUTH_OBS_START)
			break;
		o->requested = code == AUTH_REQ_GSS ? AUTH_METHOD_GSS : AUTH_METHOD_SSPI;
		if (!allowed(o, o->requested))
			return refuse_method(o, o->requested, out, cap, out_len);
		o->s->auth.method = code == AUTH_REQ_GSS ? SESSION_AUTH_GSS : SESSION_AUTH_SSPI;
		o->state = AUTH_OBS_GSS;
		return AUTH_FORWARD;
	case AUTH_REQ_GSS_CONT:
		if (o->state != AUTH_OBS_GSS)
			break;
		return AUTH_FORWARD;
	default:
		return violation(o, "server", 0,
				 "server requested an authentication method pgwarden does not know",
				 out, cap, out_len);
	}
	return violation(o, "server", 0, "server sent an unexpected authentication request", out,
			 cap, out_len);
}

enum auth_action auth_observer_server(struct auth_observer *o, const struct proto_msg *m,
				      uint8_t *out, size_t cap, size_t *out_len, uint64_t now_ms)
{
	struct proto_error_fields ef;

	*out_len = 0;
	if (o->state == AUTH_OBS_DONE || o->state == AUTH_OBS_FAILED)
		return AUTH_FORWARD;
	if (m->type == PqMsg_AuthenticationRequest)
		return server_auth(o, m, out, cap, out_len);
	if (m->type == PqMsg_ErrorResponse && proto_read_error(m, &ef) == PROTO_OK && ef.sqlstate &&
	    (strcmp(ef.sqlstate, "28P01") == 0 ||
	     (strcmp(ef.sqlstate, "28000") == 0 && o->state != AUTH_OBS_START))) {
		/* The server refused the credential: a failed login. */
		o->lock_result |= lockout_record_failure(o->ctx->lockout, o->s->user, o->source,
							  o->s->id_hex, now_ms);
		o->state = AUTH_OBS_FAILED;
	}
	return AUTH_FORWARD;
}

static enum auth_action client_initial(struct auth_observer *o, const struct proto_msg *m,
				       uint8_t *out, size_t cap, size_t *out_len)
{
	struct scram_client_first cf;
	const char *mech;
	const uint8_t *data;
	int32_t len;
	int rc;

	if (proto_read_sasl_initial(m, &mech, &data, &len) != PROTO_OK || len < 0)
		return violation(o, "client", SCRAM_ERR_MALFORMED, NULL, out, cap, out_len);
	if (strcmp(mech, SCRAM_MECHANISM_PLUS) == 0 && o->plus_offered)
		o->plus_chosen = true;
	else if (strcmp(mech, SCRAM_MECHANISM) != 0)
		return violation(o, "client", SCRAM_ERR_MECHANISM, NULL, out, cap, out_len);
	/* "scram-sha-256-plus" alone in auth.server_methods: only a bound exchange will do. */
	if (!o->plus_chosen && !allowed(o, AUTH_METHOD_SCRAM))
		return refuse_method(o, AUTH_METHOD_SCRAM, out, cap, out_len);
	rc = scram_parse_client_first((const char *)data, (size_t)len, &cf);
	if (!rc && o->plus_chosen != (cf.cbind_flag == 'p'))
		rc = SCRAM_ERR_CBIND_FLAG;
	if (rc)
		return violation(o, "client", rc, NULL, out, cap, out_len);
	memcpy(o->gs2, data, cf.gs2_len);
	o->gs2_len = cf.gs2_len;
	memcpy(o->nonce, cf.nonce, cf.nonce_len);
	o->nonce_len = cf.nonce_len;
	o->s->auth.method = o->plus_chosen ? SESSION_AUTH_SCRAM_PLUS : SESSION_AUTH_SCRAM;
	o->state = AUTH_OBS_SASL_FIRST;
	return AUTH_FORWARD;
}

enum auth_action auth_observer_client(struct auth_observer *o, const struct proto_msg *m,
				      uint8_t *out, size_t cap, size_t *out_len)
{
	struct scram_client_final cf;
	const char *pw;
	int rc;

	*out_len = 0;
	if (m->type != PqMsg_PasswordMessage || o->state == AUTH_OBS_DONE)
		return AUTH_FORWARD;
	switch (o->state) {
	case AUTH_OBS_PASSWORD:
		if (proto_read_password(m, &pw) != PROTO_OK)
			return violation(o, "client", 0, "invalid password packet", out, cap, out_len);
		return AUTH_FORWARD;
	case AUTH_OBS_SASL:
		return client_initial(o, m, out, cap, out_len);
	case AUTH_OBS_SASL_CONTINUE:
		rc = scram_parse_client_final((const char *)m->body, m->body_len, &cf);
		if (!rc)
			rc = scram_check_cbind(o->gs2, o->gs2_len, &cf, NULL, 0);
		if (!rc && (cf.nonce_len != o->nonce_len || memcmp(cf.nonce, o->nonce, o->nonce_len)))
			rc = SCRAM_ERR_NONCE_MISMATCH;
		if (rc)
			return violation(o, "client", rc, NULL, out, cap, out_len);
		o->state = AUTH_OBS_SASL_FINAL;
		return AUTH_FORWARD;
	case AUTH_OBS_GSS:
		return AUTH_FORWARD;
	default:
		return violation(o, "client", 0,
				 "unexpected password packet: the server asked for nothing", out,
				 cap, out_len);
	}
}
