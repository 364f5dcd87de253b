/*
 * startup: the startup family (StartupMessage, SSLRequest, GSSENCRequest, CancelRequest).
 *
 * These packets have no type byte, arrive before anything is authenticated, and decide
 * who the session is, so the parser follows PostgreSQL's ProcessStartupPacket
 * (backend_startup.c) rule for rule: the same length bounds, the same terminator rule,
 * last duplicate wins, database defaults to user. Where matching PostgreSQL would let a
 * policy look at a different name than the server uses (names PostgreSQL truncates), it
 * refuses instead. Every failure has a reason with PostgreSQL's own text and SQLSTATE, for
 * proto_startup_explain().
 */
#include "proto/proto_int.h"

#include <stdio.h>
#include <string.h>

enum startup_reason {
	SR_OK,
	SR_LENGTH,        /* invalid length of startup packet */
	SR_CANCEL_LENGTH, /* cancel packet without a whole pid */
	SR_CANCEL_KEY,    /* cancel key outside 4..256 */
	SR_VERSION,
	SR_LAYOUT,        /* terminator not exactly at the end / name without value */
	SR_NO_USER,
	SR_REPLICATION,
	SR_USER_TOO_LONG,
	SR_DATABASE_TOO_LONG,
};

bool proto_startup_is_tls(const uint8_t *p, size_t n)
{
	/* A TLS record of type handshake (22). No startup packet can begin with it: its
	 * length would be above 0x16000000, far beyond PROTO_STARTUP_MAX_LEN. */
	return n > 0 && p[0] == 0x16;
}

int proto_startup_frame(const uint8_t *p, size_t n, uint32_t *len)
{
	uint32_t l;

	if (n < 4)
		return PROTO_NEED_MORE;
	l = proto_read_u32(p);
	if (l < PROTO_STARTUP_HEADER_LEN)
		return PROTO_ERR_LENGTH;
	if (l > PROTO_STARTUP_MAX_LEN)
		return PROTO_ERR_TOO_LONG;
	if (n < PROTO_STARTUP_HEADER_LEN)
		return PROTO_NEED_MORE;
	*len = l;
	return PROTO_OK;
}

static char ascii_lower(char ch)
{
	return (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
}

/* Is s[0..len) a case-insensitive prefix of word, at least minlen long? */
static bool prefix_of(const char *s, size_t len, const char *word, size_t minlen)
{
	if (len < minlen || len > strlen(word))
		return false;
	for (size_t i = 0; i < len; i++)
		if (ascii_lower(s[i]) != word[i])
			return false;
	return true;
}

bool proto_parse_bool(const char *s, bool *value)
{
	size_t len = strlen(s);

	/* PostgreSQL's parse_bool_with_len(): unique prefixes, "on"/"off" need two letters. */
	if (prefix_of(s, len, "true", 1) || prefix_of(s, len, "yes", 1) ||
	    prefix_of(s, len, "on", 2) || (len == 1 && s[0] == '1')) {
		*value = true;
		return true;
	}
	if (prefix_of(s, len, "false", 1) || prefix_of(s, len, "no", 1) ||
	    prefix_of(s, len, "off", 2) || (len == 1 && s[0] == '0')) {
		*value = false;
		return true;
	}
	return false;
}

static int parse_cancel(const uint8_t *p, uint32_t len, struct proto_startup *out,
			enum startup_reason *why)
{
	uint32_t key_len;

	if (len < PROTO_STARTUP_HEADER_LEN + 4 + PROTO_CANCEL_KEY_MIN) {
		*why = len < PROTO_STARTUP_HEADER_LEN + 4 ? SR_CANCEL_LENGTH : SR_CANCEL_KEY;
		return PROTO_ERR_LENGTH;
	}
	key_len = len - PROTO_STARTUP_HEADER_LEN - 4;
	if (key_len > PROTO_CANCEL_KEY_MAX) {
		*why = SR_CANCEL_KEY;
		return PROTO_ERR_TOO_LONG;
	}
	out->cancel_pid = proto_read_u32(p + 8);
	out->cancel_key = p + 12;
	out->cancel_key_len = key_len;
	*why = SR_OK;
	return PROTO_OK;
}

/* The name/value list of a StartupMessage, body p[8..len). */
static int parse_params(const uint8_t *p, uint32_t len, struct proto_startup *out,
			enum startup_reason *why)
{
	bool walsender = false, db_walsender = false;
	uint32_t off = PROTO_STARTUP_HEADER_LEN;

	for (;;) {
		const uint8_t *name_end, *value_end;
		const char *name, *value;

		if (off >= len) { /* ran off the end without the final terminator */
			*why = SR_LAYOUT;
			return PROTO_ERR_STARTUP;
		}
		if (p[off] == 0)
			break;
		name = (const char *)p + off;
		name_end = memchr(p + off, 0, len - off);
		if (!name_end || (uint32_t)(name_end - p) + 1 >= len) {
			*why = SR_LAYOUT; /* name without a value */
			return PROTO_ERR_STARTUP;
		}
		off = (uint32_t)(name_end - p) + 1;
		value = (const char *)p + off;
		value_end = memchr(p + off, 0, len - off);
		if (!value_end) {
			*why = SR_LAYOUT;
			return PROTO_ERR_STARTUP;
		}
		off = (uint32_t)(value_end - p) + 1;

		/* PostgreSQL takes any number of parameters within the packet's 10,000 bytes;
		 * so does pgwarden, and keeps a view of the first PROTO_STARTUP_MAX_PARAMS. */
		if (out->nparams < PROTO_STARTUP_MAX_PARAMS) {
			out->params[out->nparams].name = name;
			out->params[out->nparams].value = value;
		}
		out->nparams++;

		/* Later duplicates replace earlier ones, as in ProcessStartupPacket. */
		if (strcmp(name, "user") == 0)
			out->user = value;
		else if (strcmp(name, "database") == 0)
			out->database = value;
		else if (strcmp(name, "application_name") == 0)
			out->application_name = value;
		else if (strcmp(name, "replication") == 0) {
			/* Same state and order as PostgreSQL: "database" makes a walsender
			 * connected to a database (and stays so), a boolean switches walsender
			 * on or off, anything else is refused on the spot. */
			if (strcmp(value, "database") == 0) {
				walsender = true;
				db_walsender = true;
			} else if (!proto_parse_bool(value, &walsender)) {
				*why = SR_REPLICATION;
				return PROTO_ERR_STARTUP;
			}
		}
	}
	/* The terminator must be the packet's last byte. */
	if (off != len - 1) {
		*why = SR_LAYOUT;
		return PROTO_ERR_STARTUP;
	}

	if (!out->user || out->user[0] == '\0') {
		*why = SR_NO_USER;
		return PROTO_ERR_STARTUP;
	}
	if (!out->database || out->database[0] == '\0')
		out->database = out->user;

	out->replication = walsender;
	if (walsender && !db_walsender)
		out->database = ""; /* physical replication: no database, as the server does */

	if (strlen(out->user) >= PROTO_NAMEDATALEN) {
		*why = SR_USER_TOO_LONG;
		return PROTO_ERR_STARTUP;
	}
	if (strlen(out->database) >= PROTO_NAMEDATALEN) {
		*why = SR_DATABASE_TOO_LONG;
		return PROTO_ERR_STARTUP;
	}
	return PROTO_OK;
}

static int startup_parse(const uint8_t *p, uint32_t len, struct proto_startup *out,
			 enum startup_reason *why)
{
	memset(out, 0, sizeof(*out));
	*why = SR_LENGTH;
	if (len < PROTO_STARTUP_HEADER_LEN || proto_read_u32(p) != len)
		return PROTO_ERR_LENGTH;
	if (len > PROTO_STARTUP_MAX_LEN)
		return PROTO_ERR_TOO_LONG;

	out->code = proto_read_u32(p + 4);
	switch (out->code) {
	case PROTO_CANCEL_REQUEST_CODE:
		out->kind = PROTO_CANCEL_REQUEST;
		return parse_cancel(p, len, out, why);
	case PROTO_SSL_REQUEST_CODE:
	case PROTO_GSSENC_REQUEST_CODE:
		out->kind = out->code == PROTO_SSL_REQUEST_CODE ? PROTO_SSL_REQUEST
								: PROTO_GSSENC_REQUEST;
		if (len != PROTO_STARTUP_HEADER_LEN)
			return PROTO_ERR_TOO_LONG;
		*why = SR_OK;
		return PROTO_OK;
	}

	out->kind = PROTO_STARTUP_MESSAGE;
	if (PROTO_VERSION_MAJOR(out->code) != 3) {
		*why = SR_VERSION;
		return PROTO_ERR_VERSION;
	}
	if (parse_params(p, len, out, why) != PROTO_OK) {
		/* Views into a refused packet must not be mistaken for an identity. */
		out->user = out->database = out->application_name = NULL;
		return PROTO_ERR_STARTUP;
	}
	*why = SR_OK;
	return PROTO_OK;
}

int proto_startup_parse(const uint8_t *p, uint32_t len, struct proto_startup *out)
{
	enum startup_reason why;

	return startup_parse(p, len, out, &why);
}

int proto_startup_explain(const uint8_t *p, uint32_t len, char *msg, size_t cap,
			  const char **sqlstate)
{
	struct proto_startup st;
	enum startup_reason why;
	const char *text = "";
	int status;

	status = startup_parse(p, len, &st, &why);
	*sqlstate = "08P01"; /* protocol_violation, PostgreSQL's code for most of these */
	switch (why) {
	case SR_OK:
		*sqlstate = "00000";
		break;
	case SR_LENGTH:
		text = "invalid length of startup packet";
		break;
	case SR_CANCEL_LENGTH:
		text = "invalid length of query cancel packet";
		break;
	case SR_CANCEL_KEY:
		text = "invalid length of query cancel key";
		break;
	case SR_VERSION:
		*sqlstate = "0A000"; /* feature_not_supported */
		if (cap > 0)
			snprintf(msg, cap,
				 "unsupported frontend protocol %u.%u: server supports 3.0 to 3.2",
				 (unsigned)PROTO_VERSION_MAJOR(st.code),
				 (unsigned)PROTO_VERSION_MINOR(st.code));
		return status;
	case SR_LAYOUT:
		text = "invalid startup packet layout: expected terminator as last byte";
		break;
	case SR_NO_USER:
		*sqlstate = "28000"; /* invalid_authorization_specification */
		text = "no PostgreSQL user name specified in startup packet";
		break;
	case SR_REPLICATION:
		*sqlstate = "22023"; /* invalid_parameter_value */
		text = "invalid value for parameter \"replication\"";
		break;
	case SR_USER_TOO_LONG:
		*sqlstate = "42622"; /* name_too_long */
		text = "user name in startup packet is longer than 63 bytes";
		break;
	case SR_DATABASE_TOO_LONG:
		*sqlstate = "42622";
		text = "database name in startup packet is longer than 63 bytes";
		break;
	}
	if (cap > 0)
		snprintf(msg, cap, "%s", text);
	return status;
}
