/*
 * read: typed readers for the messages the relay and its stages inspect, and the
 * RowDescription / DataRow walkers.
 *
 * Each reader checks the type, then reads its layout through a bounded cursor and accepts
 * the message only if the cursor consumed the body exactly ("message contents do not
 * agree with length" otherwise). Outputs are written only once the whole message has been
 * checked, so a caller never acts on half of a malformed message.
 */
#include "proto/proto_int.h"

#include <string.h>

/* Start reading m as a message of type t. */
int proto_reader_begin(const struct proto_msg *m, uint8_t t, struct proto_cursor *c)
{
	if (m->type != t)
		return PROTO_ERR_TYPE;
	if (!m->body && m->body_len != 0)
		return PROTO_ERR_FORMAT;
	proto_msg_cursor(c, m);
	return PROTO_OK;
}

int proto_reader_end(const struct proto_cursor *c)
{
	return proto_cursor_done(c) ? PROTO_OK : PROTO_ERR_FORMAT;
}

/* The bytes left in a cursor, as a length. */
static uint32_t cursor_left(const struct proto_cursor *c)
{
	return (uint32_t)(c->end - c->p);
}

/* ---- authentication -------------------------------------------------------------- */

/*
 * Read an 'R' message: the code and, in *rest, a cursor over what follows it, checked
 * against the code's layout. Codes that protocol 3 no longer defines (Kerberos 4, crypt,
 * SCM credentials) or never defined are format errors: no server sends them.
 */
static int auth_parse(const struct proto_msg *m, uint32_t *code, struct proto_cursor *rest)
{
	struct proto_cursor c;
	int rc = proto_reader_begin(m, PqMsg_AuthenticationRequest, &c);

	if (rc != PROTO_OK)
		return rc;
	*code = proto_get_u32(&c);
	if (c.err)
		return PROTO_ERR_FORMAT;
	*rest = c;
	switch (*code) {
	case AUTH_REQ_OK:
	case AUTH_REQ_KRB5:
	case AUTH_REQ_PASSWORD:
	case AUTH_REQ_GSS:
	case AUTH_REQ_SSPI:
		return proto_reader_end(&c);
	case AUTH_REQ_MD5:
		proto_get_bytes(&c, 4); /* salt */
		return proto_reader_end(&c);
	case AUTH_REQ_GSS_CONT:
	case AUTH_REQ_SASL_CONT:
	case AUTH_REQ_SASL_FIN:
		return PROTO_OK; /* opaque mechanism data, any length */
	case AUTH_REQ_SASL: {
		/* Mechanism names, in the server's order of preference, then an empty string.
		 * A list naming no mechanism offers nothing to answer: refused. */
		unsigned n = 0;
		const char *mech;

		while ((mech = proto_get_cstr(&c)) != NULL && mech[0] != '\0')
			n++;
		if (!mech || n == 0)
			return PROTO_ERR_FORMAT;
		return proto_reader_end(&c);
	}
	}
	return PROTO_ERR_FORMAT;
}

int proto_read_auth(const struct proto_msg *m, uint32_t *code)
{
	struct proto_cursor rest;
	uint32_t v;
	int rc = auth_parse(m, &v, &rest);

	if (rc == PROTO_OK)
		*code = v;
	return rc;
}

int proto_read_auth_data(const struct proto_msg *m, uint32_t *code, const uint8_t **data,
			 uint32_t *len)
{
	struct proto_cursor rest;
	uint32_t v;
	int rc = auth_parse(m, &v, &rest);

	if (rc != PROTO_OK)
		return rc;
	*code = v;
	*data = rest.p;
	*len = cursor_left(&rest);
	return PROTO_OK;
}

int proto_auth_sasl_begin(const struct proto_msg *m, struct proto_sasl_iter *it)
{
	struct proto_cursor rest;
	uint32_t code;
	int rc = auth_parse(m, &code, &rest);

	if (rc != PROTO_OK)
		return rc;
	if (code != AUTH_REQ_SASL) /* a valid message, just not this one */
		return PROTO_ERR_TYPE;
	it->c = rest;
	return PROTO_OK;
}

int proto_auth_sasl_next(struct proto_sasl_iter *it, const char **mech)
{
	const char *s = proto_get_cstr(&it->c);

	if (!s)
		return PROTO_ERR_FORMAT;
	if (s[0] == '\0') /* the list's terminator: it must end the message */
		return proto_cursor_done(&it->c) ? 0 : PROTO_ERR_FORMAT;
	*mech = s;
	return 1;
}

int proto_read_password(const struct proto_msg *m, const char **password)
{
	struct proto_cursor c;
	const char *s;
	int rc = proto_reader_begin(m, PqMsg_PasswordMessage, &c);

	if (rc != PROTO_OK)
		return rc;
	s = proto_get_cstr(&c);
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*password = s;
	return PROTO_OK;
}

int proto_read_sasl_initial(const struct proto_msg *m, const char **mechanism,
			    const uint8_t **data, int32_t *len)
{
	struct proto_cursor c;
	const char *mech;
	const uint8_t *d = NULL;
	int32_t n;
	int rc = proto_reader_begin(m, PqMsg_SASLInitialResponse, &c);

	if (rc != PROTO_OK)
		return rc;
	mech = proto_get_cstr(&c);
	n = proto_get_i32(&c);
	if (c.err || n < -1 || mech[0] == '\0')
		return PROTO_ERR_FORMAT;
	if (n >= 0)
		d = proto_get_bytes(&c, (size_t)n);
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*mechanism = mech;
	*data = d;
	*len = n;
	return PROTO_OK;
}

/* ---- session start ---------------------------------------------------------------- */

int proto_read_backend_key(const struct proto_msg *m, uint32_t *pid, const uint8_t **key,
			   uint32_t *key_len)
{
	struct proto_cursor c;
	uint32_t p, n;
	int rc = proto_reader_begin(m, PqMsg_BackendKeyData, &c);

	if (rc != PROTO_OK)
		return rc;
	p = proto_get_u32(&c);
	n = cursor_left(&c);
	if (c.err || n < PROTO_CANCEL_KEY_MIN || n > PROTO_CANCEL_KEY_MAX)
		return PROTO_ERR_FORMAT;
	*pid = p;
	*key = c.p;
	*key_len = n;
	return PROTO_OK;
}

int proto_read_ready(const struct proto_msg *m, uint8_t *tx_status)
{
	struct proto_cursor c;
	uint8_t s;
	int rc = proto_reader_begin(m, PqMsg_ReadyForQuery, &c);

	if (rc != PROTO_OK)
		return rc;
	s = proto_get_u8(&c);
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	if (s != 'I' && s != 'T' && s != 'E')
		return PROTO_ERR_FORMAT;
	*tx_status = s;
	return PROTO_OK;
}

int proto_read_parameter_status(const struct proto_msg *m, const char **name,
				const char **value)
{
	struct proto_cursor c;
	const char *n, *v;
	int rc = proto_reader_begin(m, PqMsg_ParameterStatus, &c);

	if (rc != PROTO_OK)
		return rc;
	n = proto_get_cstr(&c);
	v = proto_get_cstr(&c);
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*name = n;
	*value = v;
	return PROTO_OK;
}

int proto_read_negotiate(const struct proto_msg *m, uint32_t *minor, uint32_t *noptions)
{
	struct proto_cursor c;
	uint32_t version;
	int32_t n;
	int rc = proto_reader_begin(m, PqMsg_NegotiateProtocolVersion, &c);

	if (rc != PROTO_OK)
		return rc;
	version = proto_get_u32(&c);
	n = proto_get_i32(&c);
	if (c.err || n < 0 || PROTO_VERSION_MAJOR(version) != 3)
		return PROTO_ERR_FORMAT;
	/* Each option name takes at least its terminator: bound the loop by the bytes. */
	if ((uint32_t)n > cursor_left(&c))
		return PROTO_ERR_FORMAT;
	for (int32_t i = 0; i < n; i++)
		proto_get_cstr(&c);
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*minor = PROTO_VERSION_MINOR(version);
	*noptions = (uint32_t)n;
	return PROTO_OK;
}

/* ---- errors and notices ----------------------------------------------------------- */

int proto_read_error(const struct proto_msg *m, struct proto_error_fields *out)
{
	struct proto_error_fields f = { 0 };
	const char *severity_s = NULL;
	struct proto_cursor c;
	int rc;

	if (m->type != PqMsg_ErrorResponse && m->type != PqMsg_NoticeResponse)
		return PROTO_ERR_TYPE;
	if ((rc = proto_reader_begin(m, m->type, &c)) != PROTO_OK)
		return rc;
	/* (code byte, string) pairs up to a zero byte. Unknown codes are skipped, as the
	 * protocol asks of frontends; a repeated code keeps its last value. */
	for (;;) {
		uint8_t code = proto_get_u8(&c);
		const char *v;

		if (c.err)
			return PROTO_ERR_FORMAT;
		if (code == 0)
			break;
		v = proto_get_cstr(&c);
		if (!v)
			return PROTO_ERR_FORMAT;
		switch (code) {
		case 'S':
			severity_s = v;
			break;
		case 'V':
			f.severity = v;
			break;
		case 'C':
			f.sqlstate = v;
			break;
		case 'M':
			f.message = v;
			break;
		case 'D':
			f.detail = v;
			break;
		}
	}
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	if (!f.severity)
		f.severity = severity_s;
	*out = f;
	return PROTO_OK;
}

/* ---- queries ---------------------------------------------------------------------- */

/* A message whose whole body is one NUL-terminated string (Query, CommandComplete). */
static int proto_read_one_cstr(const struct proto_msg *m, uint8_t type, const char **out)
{
	struct proto_cursor c;
	const char *s;
	int rc = proto_reader_begin(m, type, &c);

	if (rc != PROTO_OK)
		return rc;
	s = proto_get_cstr(&c);
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*out = s;
	return PROTO_OK;
}

int proto_read_query(const struct proto_msg *m, const char **sql)
{
	return proto_read_one_cstr(m, PqMsg_Query, sql);
}

int proto_read_parse(const struct proto_msg *m, const char **stmt, const char **sql,
		     uint16_t *nparams)
{
	struct proto_cursor c;
	const char *st, *q;
	uint16_t n;
	int rc = proto_reader_begin(m, PqMsg_Parse, &c);

	if (rc != PROTO_OK)
		return rc;
	st = proto_get_cstr(&c);
	q = proto_get_cstr(&c);
	n = proto_get_u16(&c);
	proto_get_bytes(&c, (size_t)n * 4); /* parameter type OIDs */
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*stmt = st;
	*sql = q;
	*nparams = n;
	return PROTO_OK;
}

/* n format codes, each 0 (text) or 1 (binary). */
bool proto_cursor_formats(struct proto_cursor *c, uint16_t n)
{
	for (uint16_t i = 0; i < n; i++) {
		int16_t f = proto_get_i16(c);

		if (c->err || (f != 0 && f != 1))
			return false;
	}
	return true;
}

/* n values, each an Int32 length (-1: NULL) and that many bytes. */
bool proto_cursor_values(struct proto_cursor *c, uint16_t n)
{
	for (uint16_t i = 0; i < n; i++) {
		int32_t len = proto_get_i32(c);

		if (c->err || len < -1)
			return false;
		if (len > 0 && !proto_get_bytes(c, (size_t)len))
			return false;
	}
	return true;
}

/*
 * Parameter formats then parameter values, as in Bind and FunctionCall: the format count
 * must be 0 (all text), 1 (one for all) or the value count, as PostgreSQL requires.
 */
bool proto_cursor_params(struct proto_cursor *c, uint16_t *nvalues)
{
	uint16_t nfmt = proto_get_u16(c), n;

	if (c->err || !proto_cursor_formats(c, nfmt))
		return false;
	n = proto_get_u16(c);
	if (c->err || (nfmt > 1 && nfmt != n))
		return false;
	*nvalues = n;
	return proto_cursor_values(c, n);
}

int proto_read_bind(const struct proto_msg *m, const char **portal, const char **stmt,
		    uint16_t *nparams)
{
	struct proto_cursor c;
	const char *po, *st;
	uint16_t n, nres;
	int rc = proto_reader_begin(m, PqMsg_Bind, &c);

	if (rc != PROTO_OK)
		return rc;
	po = proto_get_cstr(&c);
	st = proto_get_cstr(&c);
	if (c.err || !proto_cursor_params(&c, &n))
		return PROTO_ERR_FORMAT;
	nres = proto_get_u16(&c);
	if (c.err || !proto_cursor_formats(&c, nres))
		return PROTO_ERR_FORMAT;
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*portal = po;
	*stmt = st;
	*nparams = n;
	return PROTO_OK;
}

/* ---- results ---------------------------------------------------------------------- */

int proto_read_copy_response(const struct proto_msg *m, uint8_t *format, uint16_t *ncols)
{
	struct proto_cursor c;
	uint8_t f;
	uint16_t n;
	int rc;

	if (m->type != PqMsg_CopyInResponse && m->type != PqMsg_CopyOutResponse &&
	    m->type != PqMsg_CopyBothResponse)
		return PROTO_ERR_TYPE;
	if ((rc = proto_reader_begin(m, m->type, &c)) != PROTO_OK)
		return rc;
	f = proto_get_u8(&c);
	n = proto_get_u16(&c);
	if (c.err || f > 1)
		return PROTO_ERR_FORMAT;
	for (uint16_t i = 0; i < n; i++) {
		int16_t cf = proto_get_i16(&c);

		/* Column formats are 0 or 1, and all 0 when the overall format is text. */
		if (c.err || (cf != 0 && cf != 1) || (f == 0 && cf != 0))
			return PROTO_ERR_FORMAT;
	}
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*format = f;
	*ncols = n;
	return PROTO_OK;
}

int proto_read_command_complete(const struct proto_msg *m, const char **tag)
{
	return proto_read_one_cstr(m, PqMsg_CommandComplete, tag);
}

/* ---- RowDescription walk ---------------------------------------------------------- */

static bool read_column(struct proto_cursor *c, struct proto_column *col)
{
	col->name = proto_get_cstr(c);
	col->table_oid = proto_get_u32(c);
	col->attnum = proto_get_i16(c);
	col->type_oid = proto_get_u32(c);
	col->type_len = proto_get_i16(c);
	col->type_mod = proto_get_i32(c);
	col->format = proto_get_i16(c);
	return !c->err && (col->format == 0 || col->format == 1);
}

int proto_rowdesc_begin(const struct proto_msg *m, struct proto_rowdesc_iter *it)
{
	struct proto_column col;
	struct proto_cursor c;
	uint16_t n;
	int rc = proto_reader_begin(m, PqMsg_RowDescription, &c);

	if (rc != PROTO_OK)
		return rc;
	n = proto_get_u16(&c);
	if (c.err)
		return PROTO_ERR_FORMAT;
	it->c = c;
	/* Check the whole message before handing out its first column, so a stage never
	 * acts on a prefix of a message that turns out malformed. */
	for (uint16_t i = 0; i < n; i++)
		if (!read_column(&c, &col))
			return PROTO_ERR_FORMAT;
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	it->ncols = n;
	it->index = 0;
	return PROTO_OK;
}

int proto_rowdesc_next(struct proto_rowdesc_iter *it, struct proto_column *col)
{
	if (it->index == it->ncols)
		return proto_cursor_done(&it->c) ? 0 : PROTO_ERR_FORMAT;
	if (!read_column(&it->c, col))
		return PROTO_ERR_FORMAT;
	it->index++;
	return 1;
}

/* ---- DataRow walk ----------------------------------------------------------------- */

int proto_datarow_begin(const struct proto_msg *m, struct proto_datarow_iter *it)
{
	struct proto_cursor c;
	uint16_t n;
	int rc = proto_reader_begin(m, PqMsg_DataRow, &c);

	if (rc != PROTO_OK)
		return rc;
	n = proto_get_u16(&c);
	if (c.err)
		return PROTO_ERR_FORMAT;
	it->c = c;
	/* One pass over the lengths (not the values) to validate the whole row first. */
	if (!proto_cursor_values(&c, n) || (rc = proto_reader_end(&c)) != PROTO_OK)
		return PROTO_ERR_FORMAT;
	it->ncols = n;
	it->index = 0;
	return PROTO_OK;
}

int proto_datarow_next(struct proto_datarow_iter *it, const uint8_t **value, int32_t *len)
{
	int32_t n;
	const uint8_t *v = NULL;

	if (it->index == it->ncols)
		return proto_cursor_done(&it->c) ? 0 : PROTO_ERR_FORMAT;
	n = proto_get_i32(&it->c);
	if (it->c.err || n < -1)
		return PROTO_ERR_FORMAT;
	if (n >= 0) {
		/* A zero-length value is an empty string, not NULL: point at the cursor. */
		v = n > 0 ? proto_get_bytes(&it->c, (size_t)n) : it->c.p;
		if (!v)
			return PROTO_ERR_FORMAT;
	}
	*value = v;
	*len = n;
	it->index++;
	return 1;
}
