/* auth_common: errors and log lines the authentication machines share (auth_int.h). */
#include "auth/auth_int.h"

#include "base/log.h"

#include <stdarg.h>
#include <stdio.h>

enum auth_action auth_refuse(uint8_t *out, size_t cap, size_t *out_len, const char *sqlstate,
			     const char *fmt, ...)
{
	char msg[256];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	n = proto_write_error(out, cap, "FATAL", sqlstate, msg);
	*out_len = n > 0 ? (size_t)n : 0;
	return AUTH_REFUSE;
}

enum auth_action auth_refuse_password(uint8_t *out, size_t cap, size_t *out_len,
				      const char *user)
{
	return auth_refuse(out, cap, out_len, "28P01",
			   "password authentication failed for user \"%.63s\"", user ? user : "");
}

enum auth_action auth_refuse_scram(uint8_t *out, size_t cap, size_t *out_len, int status,
				   const char *user)
{
	const struct scram_error_info *e = scram_error(status);

	if (status == SCRAM_ERR_AUTH_FAILED)
		return auth_refuse_password(out, cap, out_len, user);
	if (e->detail)
		return auth_refuse(out, cap, out_len, e->sqlstate, "%s: %s", e->message, e->detail);
	return auth_refuse(out, cap, out_len, e->sqlstate, "%s", e->message);
}

void auth_log(const struct session *s, int level, const char *event, const char *method,
	      const char *detail)
{
	struct log_line l;

	if (!log_enabled(level))
		return;
	log_line_begin(&l, (enum log_level)level, event);
	if (s) {
		log_kv_str(&l, "session", s->id_hex);
		log_kv_str(&l, "user", s->user);
	}
	if (method)
		log_kv_str(&l, "method", method);
	if (detail)
		log_kv_str(&l, "detail", detail);
	log_line_end(&l);
}
