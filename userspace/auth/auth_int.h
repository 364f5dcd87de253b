/*
 * auth_int: what the three authentication machines share inside auth/ (not part of the
 * module's face, auth.h).
 */
#ifndef PGWARDEN_AUTH_INT_H
#define PGWARDEN_AUTH_INT_H

#include "auth/auth.h"

/* A FATAL ErrorResponse into out; *out_len set (0 when it cannot be written, which with
 * cap >= AUTH_OUT_MAX does not happen). Returns AUTH_REFUSE. */
enum auth_action auth_refuse(uint8_t *out, size_t cap, size_t *out_len, const char *sqlstate,
			     const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* The client's error for a SCRAM status: PostgreSQL's SQLSTATE and message, and for
 * SCRAM_ERR_AUTH_FAILED 'password authentication failed for user "<user>"'. */
enum auth_action auth_refuse_scram(uint8_t *out, size_t cap, size_t *out_len, int status,
				   const char *user);

/* 28P01 'password authentication failed for user "<user>"': wrong password, unknown user,
 * locked user or source; one text for all. */
enum auth_action auth_refuse_password(uint8_t *out, size_t cap, size_t *out_len,
				      const char *user);

/* One log line for an authentication event of session s (peer values sanitised). */
void auth_log(const struct session *s, int level, const char *event, const char *method,
	      const char *detail);

#endif
