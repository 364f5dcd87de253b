/*
 * write: the messages pgwarden itself originates (its own errors, mapped cancel keys,
 * upstream logins, ReadyForQuery after a denial).
 *
 * Each writer computes the exact size first and writes nothing unless all of it fits, so a
 * caller can retry with a larger buffer and never sends half a message. Every writer's
 * output is something the matching reader accepts.
 */
#include "proto/proto_int.h"

#include <string.h>

/* Sequential writer into out[0..cap) whose size was checked in advance. */
struct wr {
	uint8_t *p;
};

static void wr_u8(struct wr *w, uint8_t v)
{
	*w->p++ = v;
}

static void wr_u32(struct wr *w, uint32_t v)
{
	proto_write_u32(w->p, v);
	w->p += 4;
}

static void wr_bytes(struct wr *w, const void *b, size_t n)
{
	if (n > 0)
		memcpy(w->p, b, n);
	w->p += n;
}

static void wr_cstr(struct wr *w, const char *s)
{
	wr_bytes(w, s, strlen(s) + 1);
}

/*
 * Check a regular message with a body of body_len fits the protocol and out[0..cap), and
 * write its header. Returns the total size or a negative status.
 */
static int wr_begin(struct wr *w, uint8_t *out, size_t cap, uint8_t type, size_t body_len)
{
	size_t total;

	/* The result is returned as an int: keep every message well inside INT_MAX. */
	if (body_len > PROTO_LARGE_MESSAGE_LIMIT - 4)
		return PROTO_ERR_FORMAT;
	total = PROTO_HEADER_LEN + body_len;
	if (!out || cap < total)
		return PROTO_ERR_BUFFER;
	w->p = out;
	wr_u8(w, type);
	wr_u32(w, (uint32_t)(4 + body_len));
	return (int)total;
}

/* strlen bounded so a runaway string cannot make a size computation overflow. */
static bool str_len_ok(const char *s, size_t *len)
{
	if (!s)
		return false;
	*len = strnlen(s, PROTO_LARGE_MESSAGE_LIMIT);
	return *len < PROTO_LARGE_MESSAGE_LIMIT;
}

int proto_write_error(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
		      const char *message)
{
	size_t sev_len, msg_len, code_len, body;
	struct wr w;
	int total;

	if (!str_len_ok(severity, &sev_len) || !str_len_ok(message, &msg_len) ||
	    !str_len_ok(sqlstate, &code_len) || sev_len == 0 || code_len != 5)
		return PROTO_ERR_FORMAT;
	/* S and V (the same severity: we never localise), C, M, each code + string + NUL. */
	body = 2 * (1 + sev_len + 1) + (1 + code_len + 1) + (1 + msg_len + 1) + 1;
	total = wr_begin(&w, out, cap, PqMsg_ErrorResponse, body);
	if (total < 0)
		return total;
	wr_u8(&w, 'S');
	wr_cstr(&w, severity);
	wr_u8(&w, 'V');
	wr_cstr(&w, severity);
	wr_u8(&w, 'C');
	wr_cstr(&w, sqlstate);
	wr_u8(&w, 'M');
	wr_cstr(&w, message);
	wr_u8(&w, 0);
	return total;
}

static bool key_len_ok(const uint8_t *key, uint32_t key_len)
{
	return key && key_len >= PROTO_CANCEL_KEY_MIN && key_len <= PROTO_CANCEL_KEY_MAX;
}

int proto_write_backend_key(uint8_t *out, size_t cap, uint32_t pid, const uint8_t *key,
			    uint32_t key_len)
{
	struct wr w;
	int total;

	if (!key_len_ok(key, key_len))
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_BackendKeyData, 4 + (size_t)key_len);
	if (total < 0)
		return total;
	wr_u32(&w, pid);
	wr_bytes(&w, key, key_len);
	return total;
}

int proto_write_cancel(uint8_t *out, size_t cap, uint32_t pid, const uint8_t *key,
		       uint32_t key_len)
{
	size_t total = PROTO_STARTUP_HEADER_LEN + 4 + (size_t)key_len;
	struct wr w = { .p = out };

	if (!key_len_ok(key, key_len))
		return PROTO_ERR_FORMAT;
	if (!out || cap < total)
		return PROTO_ERR_BUFFER;
	wr_u32(&w, (uint32_t)total);
	wr_u32(&w, PROTO_CANCEL_REQUEST_CODE);
	wr_u32(&w, pid);
	wr_bytes(&w, key, key_len);
	return (int)total;
}

int proto_write_terminate(uint8_t *out, size_t cap)
{
	struct wr w;

	return wr_begin(&w, out, cap, PqMsg_Terminate, 0);
}

int proto_write_ready(uint8_t *out, size_t cap, uint8_t tx_status)
{
	struct wr w;
	int total;

	if (tx_status != 'I' && tx_status != 'T' && tx_status != 'E')
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_ReadyForQuery, 1);
	if (total < 0)
		return total;
	wr_u8(&w, tx_status);
	return total;
}

int proto_write_startup(uint8_t *out, size_t cap, uint32_t version,
			const struct proto_param *params, unsigned nparams)
{
	size_t total = PROTO_STARTUP_HEADER_LEN + 1; /* header, final terminator */
	struct wr w = { .p = out };

	if (PROTO_VERSION_MAJOR(version) != 3 || (nparams > 0 && !params) ||
	    nparams > PROTO_STARTUP_MAX_PARAMS)
		return PROTO_ERR_FORMAT;
	for (unsigned i = 0; i < nparams; i++) {
		size_t nl, vl;

		if (!str_len_ok(params[i].name, &nl) || !str_len_ok(params[i].value, &vl) ||
		    nl == 0)
			return PROTO_ERR_FORMAT;
		total += nl + 1 + vl + 1;
		if (total > PROTO_STARTUP_MAX_LEN)
			return PROTO_ERR_FORMAT;
	}
	if (!out || cap < total)
		return PROTO_ERR_BUFFER;
	wr_u32(&w, (uint32_t)total);
	wr_u32(&w, version);
	for (unsigned i = 0; i < nparams; i++) {
		wr_cstr(&w, params[i].name);
		wr_cstr(&w, params[i].value);
	}
	wr_u8(&w, 0);
	return (int)total;
}

static int write_request(uint8_t *out, size_t cap, uint32_t code)
{
	struct wr w = { .p = out };

	if (!out || cap < PROTO_STARTUP_HEADER_LEN)
		return PROTO_ERR_BUFFER;
	wr_u32(&w, PROTO_STARTUP_HEADER_LEN);
	wr_u32(&w, code);
	return PROTO_STARTUP_HEADER_LEN;
}

int proto_write_ssl_request(uint8_t *out, size_t cap)
{
	return write_request(out, cap, PROTO_SSL_REQUEST_CODE);
}

int proto_write_gssenc_request(uint8_t *out, size_t cap)
{
	return write_request(out, cap, PROTO_GSSENC_REQUEST_CODE);
}

int proto_write_auth(uint8_t *out, size_t cap, uint32_t code, const uint8_t *data,
		     uint32_t len)
{
	struct proto_msg m;
	struct wr w;
	int total;

	if (len > 0 && !data)
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_AuthenticationRequest, 4 + (size_t)len);
	if (total < 0)
		return total;
	wr_u32(&w, code);
	wr_bytes(&w, data, len);
	/* The layout per code has one definition, in the reader: check the result with it,
	 * and take the message back if the code and data disagree. */
	m.type = PqMsg_AuthenticationRequest;
	m.body_len = 4 + len;
	m.body = out + PROTO_HEADER_LEN;
	if (proto_validate(PROTO_BACKEND, &m) != PROTO_OK) {
		memset(out, 0, (size_t)total);
		return PROTO_ERR_FORMAT;
	}
	return total;
}

int proto_write_password(uint8_t *out, size_t cap, const char *password)
{
	size_t len;
	struct wr w;
	int total;

	if (!str_len_ok(password, &len) || len + 1 > PROTO_AUTH_MESSAGE_LIMIT - 4)
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_PasswordMessage, len + 1);
	if (total < 0)
		return total;
	wr_cstr(&w, password);
	return total;
}

int proto_write_sasl_initial(uint8_t *out, size_t cap, const char *mechanism,
			     const uint8_t *data, uint32_t len)
{
	size_t mlen, body;
	struct wr w;
	int total;

	if (!str_len_ok(mechanism, &mlen) || mlen == 0 || (!data && len > 0))
		return PROTO_ERR_FORMAT;
	body = mlen + 1 + 4 + (data ? (size_t)len : 0);
	if (body > PROTO_AUTH_MESSAGE_LIMIT - 4)
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_SASLInitialResponse, body);
	if (total < 0)
		return total;
	wr_cstr(&w, mechanism);
	wr_u32(&w, data ? len : 0xffffffffu); /* -1: no initial response */
	if (data)
		wr_bytes(&w, data, len);
	return total;
}

int proto_write_sasl_response(uint8_t *out, size_t cap, const uint8_t *data, uint32_t len)
{
	struct wr w;
	int total;

	if ((!data && len > 0) || len > PROTO_AUTH_MESSAGE_LIMIT - 4)
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_SASLResponse, len);
	if (total < 0)
		return total;
	wr_bytes(&w, data, len);
	return total;
}

int proto_write_parameter_status(uint8_t *out, size_t cap, const char *name,
				 const char *value)
{
	size_t nl, vl;
	struct wr w;
	int total;

	if (!str_len_ok(name, &nl) || !str_len_ok(value, &vl) || nl == 0)
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_ParameterStatus, nl + 1 + vl + 1);
	if (total < 0)
		return total;
	wr_cstr(&w, name);
	wr_cstr(&w, value);
	return total;
}

int proto_write_query(uint8_t *out, size_t cap, const char *sql)
{
	size_t len;
	struct wr w;
	int total;

	if (!str_len_ok(sql, &len))
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_Query, len + 1);
	if (total < 0)
		return total;
	wr_cstr(&w, sql);
	return total;
}

int proto_write_parse(uint8_t *out, size_t cap, const char *stmt, const char *sql)
{
	size_t nl, sl;
	struct wr w;
	int total;

	if (!str_len_ok(stmt, &nl) || !str_len_ok(sql, &sl))
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_Parse, nl + 1 + sl + 1 + 2);
	if (total < 0)
		return total;
	wr_cstr(&w, stmt);
	wr_cstr(&w, sql);
	wr_u8(&w, 0); /* no parameter types: the server infers them */
	wr_u8(&w, 0);
	return total;
}

int proto_write_describe(uint8_t *out, size_t cap, uint8_t what, const char *name)
{
	size_t nl;
	struct wr w;
	int total;

	if ((what != 'S' && what != 'P') || !str_len_ok(name, &nl))
		return PROTO_ERR_FORMAT;
	total = wr_begin(&w, out, cap, PqMsg_Describe, 1 + nl + 1);
	if (total < 0)
		return total;
	wr_u8(&w, what);
	wr_cstr(&w, name);
	return total;
}

int proto_write_sync(uint8_t *out, size_t cap)
{
	struct wr w;

	return wr_begin(&w, out, cap, PqMsg_Sync, 0);
}
