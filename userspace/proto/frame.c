/*
 * frame: message framing, the per-direction type tables and error texts.
 *
 * proto_frame() runs on every message of the data path, so all it does is one lookup in a
 * 256-entry table for the direction and a few compares. The tables are per direction
 * because protocol 3 reuses letters: 'S' is Sync from the client and ParameterStatus from
 * the server, 'C' Close / CommandComplete, 'D' Describe / DataRow, 'E' Execute /
 * ErrorResponse, 'H' Flush / CopyOutResponse.
 *
 * Size ranges: min_body is the smallest body a well-formed message of the type can have
 * (so a ReadyForQuery without its status byte fails at framing, before anything buffers
 * it); max_body is the type's fixed size, or PostgreSQL's limit for the type
 * (postgres.c SocketBackend: PQ_SMALL_MESSAGE_LIMIT / PQ_LARGE_MESSAGE_LIMIT; auth.c:
 * PG_MAX_AUTH_TOKEN_LENGTH), both of which count the length field, hence the - 4.
 */
#include "proto/proto_int.h"

#define SMALL (PROTO_SMALL_MESSAGE_LIMIT - 4)
#define LARGE (PROTO_LARGE_MESSAGE_LIMIT - 4)
#define AUTH (PROTO_AUTH_MESSAGE_LIMIT - 4)
#define ANY PROTO_MAX_BODY

#define T(n, lo, hi) { .name = (n), .min_body = (lo), .max_body = (hi) }

static const struct proto_type_info frontend_types[256] = {
	/* simple query and function call: PQ_LARGE_MESSAGE_LIMIT */
	['Q'] = T("Query", 1, LARGE),                  /* String */
	['F'] = T("FunctionCall", 10, LARGE),          /* Int32 Int16 Int16 Int16 */
	/* extended query */
	['P'] = T("Parse", 4, LARGE),                  /* String String Int16 */
	['B'] = T("Bind", 8, LARGE),                   /* String String Int16 Int16 Int16 */
	['C'] = T("Close", 2, SMALL),                  /* Byte1 String */
	['D'] = T("Describe", 2, SMALL),               /* Byte1 String */
	['E'] = T("Execute", 5, SMALL),                /* String Int32 */
	['H'] = T("Flush", 0, 0),
	['S'] = T("Sync", 0, 0),
	['X'] = T("Terminate", 0, 0),
	/* COPY FROM STDIN */
	['d'] = T("CopyData", 0, LARGE),
	['c'] = T("CopyDone", 0, 0),
	['f'] = T("CopyFail", 1, SMALL),               /* String */
	/* authentication: GSSResponse, PasswordMessage, SASLInitialResponse, SASLResponse */
	['p'] = T("PasswordMessage", 0, AUTH),
};

static const struct proto_type_info backend_types[256] = {
	['R'] = T("Authentication", 4, ANY),           /* Int32 code, then per code */
	['K'] = T("BackendKeyData", 4 + PROTO_CANCEL_KEY_MIN, 4 + PROTO_CANCEL_KEY_MAX),
	['v'] = T("NegotiateProtocolVersion", 8, ANY), /* Int32 Int32 String[n] */
	['S'] = T("ParameterStatus", 2, ANY),          /* String String */
	['Z'] = T("ReadyForQuery", 1, 1),
	['1'] = T("ParseComplete", 0, 0),
	['2'] = T("BindComplete", 0, 0),
	['3'] = T("CloseComplete", 0, 0),
	['n'] = T("NoData", 0, 0),
	['I'] = T("EmptyQueryResponse", 0, 0),
	['s'] = T("PortalSuspended", 0, 0),
	['C'] = T("CommandComplete", 1, ANY),          /* String */
	['T'] = T("RowDescription", 2, ANY),           /* Int16 */
	['D'] = T("DataRow", 2, ANY),                  /* Int16 */
	['t'] = T("ParameterDescription", 2, ANY),     /* Int16 */
	['E'] = T("ErrorResponse", 1, ANY),            /* terminator */
	['N'] = T("NoticeResponse", 1, ANY),
	['A'] = T("NotificationResponse", 6, ANY),     /* Int32 String String */
	['V'] = T("FunctionCallResponse", 4, ANY),     /* Int32 */
	['G'] = T("CopyInResponse", 3, ANY),           /* Int8 Int16 */
	['H'] = T("CopyOutResponse", 3, ANY),
	['W'] = T("CopyBothResponse", 3, ANY),
	['d'] = T("CopyData", 0, ANY),
	['c'] = T("CopyDone", 0, 0),
};

static const struct proto_type_info undefined_type;

const struct proto_type_info *proto_type_lookup(enum proto_dir dir, uint8_t type)
{
	switch (dir) {
	case PROTO_FRONTEND:
		return &frontend_types[type];
	case PROTO_BACKEND:
		return &backend_types[type];
	}
	return &undefined_type;
}

bool proto_type_valid(enum proto_dir dir, uint8_t type)
{
	return proto_type_lookup(dir, type)->name != NULL;
}

const char *proto_type_name(enum proto_dir dir, uint8_t type)
{
	const char *name = proto_type_lookup(dir, type)->name;

	return name ? name : "unknown";
}

int proto_frame(const uint8_t *p, size_t n, enum proto_dir dir, uint32_t max_body,
		struct proto_msg *out)
{
	const struct proto_type_info *ti;
	uint32_t len, body_len;

	if (n == 0)
		return PROTO_NEED_MORE;
	ti = proto_type_lookup(dir, p[0]);
	if (!ti->name)
		return PROTO_ERR_TYPE;
	if (n < PROTO_HEADER_LEN)
		return PROTO_NEED_MORE;
	len = proto_read_u32(p + 1);
	/* PostgreSQL reads the length as an int32: "negative" lengths are below 4 to it. */
	if (len < 4 || len > 0x7fffffffu)
		return PROTO_ERR_LENGTH;
	body_len = len - 4;
	if (body_len < ti->min_body)
		return PROTO_ERR_LENGTH;
	if (body_len > ti->max_body || body_len > max_body)
		return PROTO_ERR_TOO_LONG;
	out->type = p[0];
	out->body_len = body_len;
	out->body = p + PROTO_HEADER_LEN;
	return PROTO_OK;
}

uint32_t proto_frame_run(const uint8_t *p, uint32_t n, enum proto_dir dir, uint32_t max_body,
			 uint8_t type, uint32_t msg_max, uint32_t limit)
{
	const struct proto_type_info *ti = proto_type_lookup(dir, type);
	uint32_t body_max = ti->max_body < max_body ? ti->max_body : max_body, len = 0;

	if (!ti->name)
		return 0;
	while (n - len >= PROTO_HEADER_LEN && p[len] == type) {
		uint32_t field = proto_read_u32(p + len + 1), total;

		/* proto_frame()'s checks, the length below 4 or "negative" among them */
		if (field < 4 || field > 0x7fffffffu || field - 4 < ti->min_body ||
		    field - 4 > body_max)
			break;
		total = 1 + field;
		if (total > msg_max || total > n - len || total > limit - len)
			break;
		len += total;
	}
	return len;
}

const char *proto_err_str(int status)
{
	switch (status) {
	case PROTO_OK:
		return "no error";
	case PROTO_NEED_MORE:
		return "incomplete message";
	case PROTO_ERR_LENGTH:
		return "invalid message length";
	case PROTO_ERR_TOO_LONG:
		return "invalid message length: message too long";
	case PROTO_ERR_TYPE:
		return "invalid message type";
	case PROTO_ERR_FORMAT:
		return "invalid message format";
	case PROTO_ERR_VERSION:
		return "unsupported frontend protocol: server supports 3.0 to 3.2";
	case PROTO_ERR_STARTUP:
		return "invalid startup packet parameters";
	case PROTO_ERR_BUFFER:
		return "message too large for the output buffer";
	}
	return "protocol violation";
}
