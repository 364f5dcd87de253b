/*
 * read_extended: readers for the extended-query messages that stages follow from Bind to
 * Execute (see proto.h): Execute, Close and Describe targets, and the parameter values of
 * Bind and FunctionCall. Same discipline as read.c: the whole message is checked before
 * any output is written.
 */
#include "proto/proto_int.h"

int proto_read_execute(const struct proto_msg *m, const char **portal, uint32_t *max_rows)
{
	struct proto_cursor c;
	const char *po;
	uint32_t rows;
	int rc = proto_reader_begin(m, PqMsg_Execute, &c);

	if (rc != PROTO_OK)
		return rc;
	po = proto_get_cstr(&c);
	rows = proto_get_u32(&c);
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*portal = po;
	*max_rows = rows;
	return PROTO_OK;
}

int proto_read_target(const struct proto_msg *m, uint8_t type, uint8_t *kind, const char **name)
{
	struct proto_cursor c;
	const char *nm;
	uint8_t k;
	int rc;

	if (type != PqMsg_Close && type != PqMsg_Describe)
		return PROTO_ERR_TYPE;
	rc = proto_reader_begin(m, type, &c);
	if (rc != PROTO_OK)
		return rc;
	k = proto_get_u8(&c);
	nm = proto_get_cstr(&c);
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	if (k != 'S' && k != 'P')
		return PROTO_ERR_FORMAT;
	*kind = k;
	*name = nm;
	return PROTO_OK;
}

/* Set it up over the formats and values at c (already checked by the caller). */
static void param_iter_init(struct proto_param_iter *it, const struct proto_cursor *formats,
			    uint16_t nformats, const struct proto_cursor *values, uint16_t n)
{
	it->formats = *formats;
	it->nformats = nformats;
	it->format_for_all = 0;
	if (nformats == 1)
		it->format_for_all = proto_get_i16(&it->formats);
	it->values = *values;
	it->n = n;
	it->index = 0;
}

/* Read formats and values at c, leaving cursors at their starts in fstart/vstart. */
static bool params_layout(struct proto_cursor *c, struct proto_cursor *fstart, uint16_t *nfmt,
			  struct proto_cursor *vstart, uint16_t *n)
{
	*nfmt = proto_get_u16(c);
	*fstart = *c;
	if (c->err || !proto_cursor_formats(c, *nfmt))
		return false;
	*n = proto_get_u16(c);
	*vstart = *c;
	if (c->err || (*nfmt > 1 && *nfmt != *n))
		return false;
	return proto_cursor_values(c, *n);
}

int proto_bind_params_begin(const struct proto_msg *m, struct proto_param_iter *it)
{
	struct proto_cursor c, fstart, vstart;
	uint16_t nfmt, n, nres;
	int rc = proto_reader_begin(m, PqMsg_Bind, &c);

	if (rc != PROTO_OK)
		return rc;
	proto_get_cstr(&c); /* portal */
	proto_get_cstr(&c); /* statement */
	if (c.err || !params_layout(&c, &fstart, &nfmt, &vstart, &n))
		return PROTO_ERR_FORMAT;
	nres = proto_get_u16(&c);
	if (c.err || !proto_cursor_formats(&c, nres))
		return PROTO_ERR_FORMAT;
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	param_iter_init(it, &fstart, nfmt, &vstart, n);
	return PROTO_OK;
}

int proto_fcall_args_begin(const struct proto_msg *m, uint32_t *function_oid,
			   struct proto_param_iter *it)
{
	struct proto_cursor c, fstart, vstart;
	uint16_t nfmt, n;
	uint32_t oid;
	int16_t result_format;
	int rc = proto_reader_begin(m, PqMsg_FunctionCall, &c);

	if (rc != PROTO_OK)
		return rc;
	oid = proto_get_u32(&c);
	if (c.err || !params_layout(&c, &fstart, &nfmt, &vstart, &n))
		return PROTO_ERR_FORMAT;
	result_format = proto_get_i16(&c);
	if (c.err || (result_format != 0 && result_format != 1))
		return PROTO_ERR_FORMAT;
	if ((rc = proto_reader_end(&c)) != PROTO_OK)
		return rc;
	*function_oid = oid;
	param_iter_init(it, &fstart, nfmt, &vstart, n);
	return PROTO_OK;
}

int proto_param_next(struct proto_param_iter *it, const uint8_t **value, int32_t *len,
		     int16_t *format)
{
	int16_t f = it->format_for_all;
	int32_t l;

	if (it->index >= it->n)
		return 0;
	/* One format each, or one for all (none: text). Checked by _begin. */
	if (it->nformats > 1)
		f = proto_get_i16(&it->formats);
	l = proto_get_i32(&it->values);
	*value = l > 0 ? proto_get_bytes(&it->values, (size_t)l) : l == 0 ? it->values.p : NULL;
	if (it->values.err || it->formats.err)
		return PROTO_ERR_FORMAT;
	*len = l;
	*format = f;
	it->index++;
	return 1;
}
