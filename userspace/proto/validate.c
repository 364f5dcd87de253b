/*
 * validate: proto_validate(), the full structural check of any message of either side.
 *
 * Messages with a typed reader are checked by that reader (one definition of each layout);
 * the rest have their layout here. Framing limits are checked again, so proto_validate()
 * is complete on its own for a message that did not come through proto_frame().
 */
#include "proto/proto_int.h"

/* Byte1 target ('S' statement, 'P' portal) and a name: Close and Describe. */
static int check_target(const struct proto_msg *m)
{
	struct proto_cursor c;
	uint8_t kind;
	int rc = proto_reader_begin(m, m->type, &c);

	if (rc != PROTO_OK)
		return rc;
	kind = proto_get_u8(&c);
	proto_get_cstr(&c);
	if (!c.err && kind != 'S' && kind != 'P')
		return PROTO_ERR_FORMAT;
	return proto_reader_end(&c);
}

/* A body that is exactly one string: CopyFail. */
static int check_cstr(const struct proto_msg *m)
{
	struct proto_cursor c;
	int rc = proto_reader_begin(m, m->type, &c);

	if (rc != PROTO_OK)
		return rc;
	proto_get_cstr(&c);
	return proto_reader_end(&c);
}

static int check_execute(const struct proto_msg *m)
{
	struct proto_cursor c;
	int rc = proto_reader_begin(m, m->type, &c);

	if (rc != PROTO_OK)
		return rc;
	proto_get_cstr(&c); /* portal */
	proto_get_i32(&c);  /* row limit; zero or negative means all rows */
	return proto_reader_end(&c);
}

static int check_function_call(const struct proto_msg *m)
{
	struct proto_cursor c;
	uint16_t n;
	int rc = proto_reader_begin(m, m->type, &c);

	if (rc != PROTO_OK)
		return rc;
	proto_get_u32(&c); /* function OID */
	if (c.err || !proto_cursor_params(&c, &n) || !proto_cursor_formats(&c, 1))
		return PROTO_ERR_FORMAT; /* the last format is the result's */
	return proto_reader_end(&c);
}

static int check_notification(const struct proto_msg *m)
{
	struct proto_cursor c;
	int rc = proto_reader_begin(m, m->type, &c);

	if (rc != PROTO_OK)
		return rc;
	proto_get_u32(&c);  /* notifying backend's pid */
	proto_get_cstr(&c); /* channel */
	proto_get_cstr(&c); /* payload */
	return proto_reader_end(&c);
}

static int check_parameter_description(const struct proto_msg *m)
{
	struct proto_cursor c;
	uint16_t n;
	int rc = proto_reader_begin(m, m->type, &c);

	if (rc != PROTO_OK)
		return rc;
	n = proto_get_u16(&c);
	proto_get_bytes(&c, (size_t)n * 4); /* type OIDs */
	return proto_reader_end(&c);
}

static int check_function_result(const struct proto_msg *m)
{
	struct proto_cursor c;
	int rc = proto_reader_begin(m, m->type, &c);

	if (rc != PROTO_OK)
		return rc;
	if (!proto_cursor_values(&c, 1)) /* one value, -1 for NULL */
		return PROTO_ERR_FORMAT;
	return proto_reader_end(&c);
}

static int check_rowdesc(const struct proto_msg *m)
{
	struct proto_rowdesc_iter it;

	return proto_rowdesc_begin(m, &it);
}

static int check_datarow(const struct proto_msg *m)
{
	struct proto_datarow_iter it;

	return proto_datarow_begin(m, &it);
}

static int validate_frontend(const struct proto_msg *m)
{
	const char *s1, *s2;
	uint16_t n;

	switch (m->type) {
	case PqMsg_Query:
		return proto_read_query(m, &s1);
	case PqMsg_Parse:
		return proto_read_parse(m, &s1, &s2, &n);
	case PqMsg_Bind:
		return proto_read_bind(m, &s1, &s2, &n);
	case PqMsg_Close:
	case PqMsg_Describe:
		return check_target(m);
	case PqMsg_Execute:
		return check_execute(m);
	case PqMsg_FunctionCall:
		return check_function_call(m);
	case PqMsg_CopyFail:
		return check_cstr(m);
	case PqMsg_CopyData:
	case PqMsg_PasswordMessage: /* shape depends on the auth exchange: see proto.h */
		return PROTO_OK;
	}
	return PROTO_ERR_TYPE;
}

static int validate_backend(const struct proto_msg *m)
{
	struct proto_error_fields ef;
	const uint8_t *key;
	const char *s1, *s2;
	uint32_t u1, u2;
	uint16_t n;
	uint8_t b;

	switch (m->type) {
	case PqMsg_AuthenticationRequest:
		return proto_read_auth(m, &u1);
	case PqMsg_BackendKeyData:
		return proto_read_backend_key(m, &u1, &key, &u2);
	case PqMsg_NegotiateProtocolVersion:
		return proto_read_negotiate(m, &u1, &u2);
	case PqMsg_ParameterStatus:
		return proto_read_parameter_status(m, &s1, &s2);
	case PqMsg_ReadyForQuery:
		return proto_read_ready(m, &b);
	case PqMsg_CommandComplete:
		return proto_read_command_complete(m, &s1);
	case PqMsg_RowDescription:
		return check_rowdesc(m);
	case PqMsg_DataRow:
		return check_datarow(m);
	case PqMsg_ParameterDescription:
		return check_parameter_description(m);
	case PqMsg_ErrorResponse:
	case PqMsg_NoticeResponse:
		return proto_read_error(m, &ef);
	case PqMsg_NotificationResponse:
		return check_notification(m);
	case PqMsg_FunctionCallResponse:
		return check_function_result(m);
	case PqMsg_CopyInResponse:
	case PqMsg_CopyOutResponse:
	case PqMsg_CopyBothResponse:
		return proto_read_copy_response(m, &b, &n);
	case PqMsg_CopyData:
		return PROTO_OK;
	}
	return PROTO_ERR_TYPE;
}

int proto_validate(enum proto_dir dir, const struct proto_msg *m)
{
	const struct proto_type_info *ti = proto_type_lookup(dir, m->type);

	if (!ti->name)
		return PROTO_ERR_TYPE;
	if (!m->body && m->body_len != 0)
		return PROTO_ERR_FORMAT;
	if (m->body_len < ti->min_body || m->body_len > ti->max_body)
		return PROTO_ERR_FORMAT;
	/* Fixed-size messages (Sync, Flush, ParseComplete, ...) are complete once sized. */
	if (ti->min_body == ti->max_body && m->type != PqMsg_ReadyForQuery)
		return PROTO_OK;
	return dir == PROTO_FRONTEND ? validate_frontend(m) : validate_backend(m);
}
