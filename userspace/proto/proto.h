/*
 * proto: THE PostgreSQL frontend/backend wire codec (protocol 3.0 and 3.2).
 *
 * Pure functions over byte ranges: no sockets, no allocation, no globals. Every reader
 * takes the exact bytes of one message and checks that the contents agree with the length
 * before anything else trusts them (PostgreSQL's pq_getmsg* discipline).
 *
 * Layout of a regular message: type byte, int32 length that counts itself but not the
 * type byte, body. The startup family (StartupMessage, SSLRequest, GSSENCRequest,
 * CancelRequest) has no type byte: int32 length, int32 code, body.
 *
 * The relay frames with proto_frame()/proto_startup_frame() on every message and streams
 * bodies by count; it calls a typed reader only for messages it must inspect.
 *
 * Where PostgreSQL has a rule (limits, duplicate startup parameters, the format-count
 * rule of Bind, error texts) the codec follows the server, so that what pgwarden decides
 * about is what the server will act on; where following it would let a policy see
 * something other than what the server uses, the codec refuses instead and says so below.
 *
 * Files: frame.c (type tables, proto_frame, texts), cursor.c (bounded getters),
 * startup.c (startup family), read.c (typed readers, walkers), validate.c
 * (proto_validate), write.c (writers). Tests: tests/unit/test_proto.c with the cases in
 * tests/unit/data/proto/, fuzz targets tests/fuzz/fuzz_proto.c and fuzz_startup.c.
 */
#ifndef PGWARDEN_PROTO_H
#define PGWARDEN_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Message type bytes, named as in PostgreSQL's src/include/libpq/protocol.h. */
#define PqMsg_Bind 'B'
#define PqMsg_Close 'C'
#define PqMsg_Describe 'D'
#define PqMsg_Execute 'E'
#define PqMsg_FunctionCall 'F'
#define PqMsg_Flush 'H'
#define PqMsg_Parse 'P'
#define PqMsg_Query 'Q'
#define PqMsg_Sync 'S'
#define PqMsg_Terminate 'X'
#define PqMsg_CopyFail 'f'
#define PqMsg_GSSResponse 'p'
#define PqMsg_PasswordMessage 'p'
#define PqMsg_SASLInitialResponse 'p'
#define PqMsg_SASLResponse 'p'

#define PqMsg_ParseComplete '1'
#define PqMsg_BindComplete '2'
#define PqMsg_CloseComplete '3'
#define PqMsg_NotificationResponse 'A'
#define PqMsg_CommandComplete 'C'
#define PqMsg_DataRow 'D'
#define PqMsg_ErrorResponse 'E'
#define PqMsg_CopyInResponse 'G'
#define PqMsg_CopyOutResponse 'H'
#define PqMsg_EmptyQueryResponse 'I'
#define PqMsg_BackendKeyData 'K'
#define PqMsg_NoticeResponse 'N'
#define PqMsg_AuthenticationRequest 'R'
#define PqMsg_ParameterStatus 'S'
#define PqMsg_RowDescription 'T'
#define PqMsg_FunctionCallResponse 'V'
#define PqMsg_CopyBothResponse 'W'
#define PqMsg_ReadyForQuery 'Z'
#define PqMsg_NoData 'n'
#define PqMsg_PortalSuspended 's'
#define PqMsg_ParameterDescription 't'
#define PqMsg_NegotiateProtocolVersion 'v'

/* Both directions. */
#define PqMsg_CopyDone 'c'
#define PqMsg_CopyData 'd'

/* Authentication request codes (the int32 after 'R'). */
#define AUTH_REQ_OK 0
#define AUTH_REQ_KRB4 1
#define AUTH_REQ_KRB5 2
#define AUTH_REQ_PASSWORD 3
#define AUTH_REQ_CRYPT 4
#define AUTH_REQ_MD5 5
#define AUTH_REQ_GSS 7
#define AUTH_REQ_GSS_CONT 8
#define AUTH_REQ_SSPI 9
#define AUTH_REQ_SASL 10
#define AUTH_REQ_SASL_CONT 11
#define AUTH_REQ_SASL_FIN 12

/* Startup-family codes (the int32 after the length). */
#define PROTO_VERSION(major, minor) (((uint32_t)(major) << 16) | (uint32_t)(minor))
#define PROTO_VERSION_MAJOR(v) ((v) >> 16)
#define PROTO_VERSION_MINOR(v) ((v)&0xffff)
#define PROTO_VERSION_3_0 PROTO_VERSION(3, 0)
#define PROTO_VERSION_3_2 PROTO_VERSION(3, 2)
#define PROTO_CANCEL_REQUEST_CODE PROTO_VERSION(1234, 5678)
#define PROTO_SSL_REQUEST_CODE PROTO_VERSION(1234, 5679)
#define PROTO_GSSENC_REQUEST_CODE PROTO_VERSION(1234, 5680)

#define PROTO_HEADER_LEN 5          /* type byte + int32 length */
#define PROTO_STARTUP_HEADER_LEN 8  /* int32 length + int32 code */
#define PROTO_STARTUP_MAX_LEN 10000 /* PostgreSQL's MAX_STARTUP_PACKET_LENGTH */
#define PROTO_CANCEL_KEY_MAX 256    /* protocol 3.2 caps the cancel key at 256 bytes */
#define PROTO_SMALL_MESSAGE_LIMIT 10000 /* PostgreSQL's PQ_SMALL_MESSAGE_LIMIT */

/*
 * Further limits, as PostgreSQL applies them. Like PostgreSQL's own, the message limits
 * count the int32 length field but not the type byte, so the largest body is limit - 4.
 */
#define PROTO_LARGE_MESSAGE_LIMIT 0x3ffffffe /* PQ_LARGE_MESSAGE_LIMIT: MaxAllocSize - 1 */
#define PROTO_AUTH_MESSAGE_LIMIT 65535       /* PG_MAX_AUTH_TOKEN_LENGTH, for 'p' messages */
#define PROTO_MAX_BODY (0x7fffffffu - 4)     /* the length field is a signed int32 */
#define PROTO_CANCEL_KEY_MIN 4               /* 3.0 keys are exactly 4 bytes */
#define PROTO_NAMEDATALEN 64                 /* role and database names: at most 63 bytes */

enum proto_dir {
	PROTO_FRONTEND = 0, /* sent by the client */
	PROTO_BACKEND = 1,  /* sent by the server */
};

/*
 * Outcome of framing or reading. Values below zero are protocol violations; every one has
 * a fixed human text from proto_err_str() that the relay puts in an 08P01 ErrorResponse.
 */
enum proto_status {
	PROTO_OK = 0,
	PROTO_NEED_MORE = 1,       /* not enough bytes yet to decide */
	PROTO_ERR_LENGTH = -1,     /* length below the minimum for the message */
	PROTO_ERR_TOO_LONG = -2,   /* length above the configured cap or the type's limit */
	PROTO_ERR_TYPE = -3,       /* type byte that protocol 3 does not define for this side */
	PROTO_ERR_FORMAT = -4,     /* contents do not agree with the length */
	PROTO_ERR_VERSION = -5,    /* startup packet with a protocol version we do not speak */
	PROTO_ERR_STARTUP = -6,    /* malformed startup packet (parameters, missing user) */
	PROTO_ERR_BUFFER = -7,     /* writer: output buffer too small */
};

/*
 * Fixed text for a negative proto_status, suitable for an ErrorResponse message field
 * (SQLSTATE 08P01, protocol_violation). Texts follow PostgreSQL's own wording, e.g.
 * PROTO_ERR_FORMAT is "invalid message format". Never NULL, for any int.
 */
const char *proto_err_str(int status);

/* One framed message: type and body (the bytes after the length field). */
struct proto_msg {
	uint8_t type;
	uint32_t body_len;
	const uint8_t *body; /* NULL when only the header has been seen */
};

/*
 * Frame the regular message at p[0..n). Needs PROTO_HEADER_LEN bytes; returns PROTO_OK
 * and fills *out (type, body_len; body points at p + 5 whether or not it is all there),
 * PROTO_NEED_MORE, or a negative status. Checks: the type is defined for dir; the length
 * is at least 4; the body is at most max_body, and at most the type's own limit where
 * PostgreSQL has one (fixed-size messages must have exactly their size; small frontend
 * messages obey PROTO_SMALL_MESSAGE_LIMIT).
 *
 * In detail, in this order:
 *   - n == 0: PROTO_NEED_MORE. The type byte is judged as soon as it arrives (as
 *     PostgreSQL's SocketBackend does), so garbage is refused before a length is awaited:
 *     PROTO_ERR_TYPE.
 *   - n < 5: PROTO_NEED_MORE.
 *   - length field below 4 or negative as an int32: PROTO_ERR_LENGTH.
 *   - body shorter than the smallest well-formed message of the type (e.g. ReadyForQuery
 *     without its status byte, Query without its terminator): PROTO_ERR_LENGTH.
 *   - body longer than the type allows (fixed-size messages; frontend Close, Describe,
 *     Execute, Flush, Sync, Terminate, CopyDone, CopyFail at PROTO_SMALL_MESSAGE_LIMIT;
 *     'p' at PROTO_AUTH_MESSAGE_LIMIT; everything else at PROTO_LARGE_MESSAGE_LIMIT
 *     frontend, PROTO_MAX_BODY backend) or than max_body: PROTO_ERR_TOO_LONG.
 * Backend messages get no libpq-style 30000-byte rule: other drivers accept longer ones,
 * and max_body already bounds what the relay buffers.
 * Cost: one table lookup and a few compares; safe to run on every message.
 */
int proto_frame(const uint8_t *p, size_t n, enum proto_dir dir, uint32_t max_body,
		struct proto_msg *out);

/*
 * A run of messages of one type at p[0..n): how many bytes of whole messages of type lie
 * there one after another, each one proto_frame() accepts (with max_body) and at most
 * msg_max bytes long, taken while they fit in limit bytes. 0 when the first does not. One
 * call walks the run (the type's table entry looked up once).
 */
uint32_t proto_frame_run(const uint8_t *p, uint32_t n, enum proto_dir dir, uint32_t max_body,
			 uint8_t type, uint32_t msg_max, uint32_t limit)
	__attribute__((warn_unused_result));

/* Is type a message protocol 3 defines for dir? */
bool proto_type_valid(enum proto_dir dir, uint8_t type);

/* PostgreSQL's name for a message type, e.g. "Query"; "unknown" if none. */
const char *proto_type_name(enum proto_dir dir, uint8_t type);

/*
 * Validate a whole message body against the layout of its type (every field inside the
 * length, strings terminated, counts that agree with the bytes, no trailing bytes).
 * Returns PROTO_OK or PROTO_ERR_FORMAT (PROTO_ERR_TYPE for a type not defined for dir).
 * m->body must hold all m->body_len bytes. Beyond layout it checks the enumerations a
 * reader depends on: format codes 0/1, Close/Describe target 'S'/'P', ReadyForQuery status
 * 'I'/'T'/'E', Bind/FunctionCall format counts of 0, 1 or the parameter count, value lengths
 * >= -1, known authentication codes (SASL: at least one mechanism, then an empty string),
 * BackendKeyData keys of 4..256 bytes. Counts in Int16 fields are unsigned, as PostgreSQL
 * and libpq read them. A frontend 'p' is GSSResponse, PasswordMessage,
 * SASLInitialResponse or SASLResponse depending on the authentication exchange, which this
 * function cannot see, so any body is accepted: use proto_read_password() or
 * proto_read_sasl_initial() where the exchange is known.
 */
int proto_validate(enum proto_dir dir, const struct proto_msg *m);

/* ---- startup family --------------------------------------------------------------- */

enum proto_startup_kind {
	PROTO_STARTUP_MESSAGE,
	PROTO_SSL_REQUEST,
	PROTO_GSSENC_REQUEST,
	PROTO_CANCEL_REQUEST,
};

/*
 * Frame a startup-family packet at p[0..n): needs 8 bytes; sets *len (the whole packet,
 * length field included). Returns PROTO_OK, PROTO_NEED_MORE, PROTO_ERR_LENGTH (below 8) or
 * PROTO_ERR_TOO_LONG (above PROTO_STARTUP_MAX_LEN).
 * The length is judged as soon as its 4 bytes are in, so a bad one never waits for more.
 * PostgreSQL itself allows 4 bytes more (it caps the length minus its own field at
 * 10000); the whole-packet cap here keeps buffers of PROTO_STARTUP_MAX_LEN sufficient.
 * A direct-TLS client starts with a ClientHello, not a length: check
 * proto_startup_is_tls() first.
 */
int proto_startup_frame(const uint8_t *p, size_t n, uint32_t *len);

#define PROTO_STARTUP_MAX_PARAMS 64

struct proto_param {
	const char *name;
	const char *value;
};

struct proto_startup {
	enum proto_startup_kind kind;
	uint32_t code; /* protocol version or request code */
	/* StartupMessage: views into the packet, valid as long as the packet bytes are. */
	const char *user;     /* the last "user" parameter, as the server takes it */
	const char *database; /* defaults to user when absent or empty, as the server does;
			       * "" for a physical replication connection (no database) */
	const char *application_name; /* NULL when absent */
	bool replication; /* a walsender connection: "replication" is true-ish or "database",
			   * read as the server reads it (false when absent or false-ish) */
	unsigned nparams; /* every parameter in the packet */
	struct proto_param params[PROTO_STARTUP_MAX_PARAMS]; /* the first ones of them */
	/* CancelRequest */
	uint32_t cancel_pid;
	const uint8_t *cancel_key;
	uint32_t cancel_key_len;
};

/*
 * Parse a whole startup-family packet p[0..len) as framed by proto_startup_frame().
 * StartupMessage: major version 3 (any minor: the server negotiates), name/value pairs of
 * NUL-terminated strings ending in one NUL, a "user" parameter. SSL/GSSENC requests: exactly
 * 8 bytes. CancelRequest: pid plus a key of 4..PROTO_CANCEL_KEY_MAX bytes.
 *
 * Returns PROTO_OK or:
 *   PROTO_ERR_LENGTH    len below 8, length field != len, CancelRequest key below 4 bytes;
 *   PROTO_ERR_TOO_LONG  len above PROTO_STARTUP_MAX_LEN, cancel key above 256 bytes,
 *                       SSL/GSSENC request longer than 8 bytes;
 *   PROTO_ERR_VERSION   StartupMessage with a major version other than 3 (out->code set);
 *   PROTO_ERR_STARTUP   parameter list not terminated exactly at the last byte, a name
 *                       without a value,
 *                       no or empty "user", a "replication" value the server would refuse,
 *                       or a user or database name of PROTO_NAMEDATALEN bytes or more.
 * Duplicate parameters are accepted and the last one wins, exactly as PostgreSQL does, so
 * that user/database here are the ones the server will use. PostgreSQL would truncate an
 * over-long role or database name to 63 bytes; a policy matched against the untruncated
 * name could then be bypassed, so such names are refused instead.
 * proto_startup_explain() gives PostgreSQL's own text and SQLSTATE for a failure.
 */
int proto_startup_parse(const uint8_t *p, uint32_t len, struct proto_startup *out);

/* ---- bounded cursor ----------------------------------------------------------------- */

/*
 * A read cursor; any read past the end sets err and returns zero/NULL, never faults.
 * Once err is set every later read fails too, so a layout can be read whole and the
 * cursor tested once. Integers are big-endian (network order). p must not be NULL.
 */
struct proto_cursor {
	const uint8_t *p;
	const uint8_t *end;
	bool err;
};

static inline void proto_cursor_init(struct proto_cursor *c, const uint8_t *p, size_t n)
{
	c->p = p;
	c->end = p + n;
	c->err = false;
}

uint8_t proto_get_u8(struct proto_cursor *c);
uint16_t proto_get_u16(struct proto_cursor *c);
int16_t proto_get_i16(struct proto_cursor *c);
uint32_t proto_get_u32(struct proto_cursor *c);
int32_t proto_get_i32(struct proto_cursor *c);
/* A NUL-terminated string inside the cursor; NULL (and err) when unterminated. */
const char *proto_get_cstr(struct proto_cursor *c);
const uint8_t *proto_get_bytes(struct proto_cursor *c, size_t n);
/* True when the cursor consumed exactly all bytes without error. */
static inline bool proto_cursor_done(const struct proto_cursor *c)
{
	return !c->err && c->p == c->end;
}

static inline uint32_t proto_read_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void proto_write_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* ---- typed readers (each validates its message completely) ------------------------- */

/*
 * Every typed reader below returns PROTO_OK, PROTO_ERR_TYPE when m is not the message it
 * reads, or PROTO_ERR_FORMAT (as proto_validate() would). Outputs are set only on
 * PROTO_OK; strings and byte pointers are views into m->body.
 */

/* 'R': the request code; for SASL the mechanism list is left to proto_auth_sasl_next(). */
int proto_read_auth(const struct proto_msg *m, uint32_t *code);

/*
 * 'K': process id and cancel key (4 bytes in 3.0, 4..256 in 3.2). The message does not
 * say which protocol the session speaks, so any key of 4..256 bytes is accepted; a caller
 * that negotiated 3.0 checks *key_len == 4 itself.
 */
int proto_read_backend_key(const struct proto_msg *m, uint32_t *pid, const uint8_t **key,
			   uint32_t *key_len);

/* 'Z': transaction status 'I', 'T' or 'E'. */
int proto_read_ready(const struct proto_msg *m, uint8_t *tx_status);

/* 'S' backend: parameter name and value. */
int proto_read_parameter_status(const struct proto_msg *m, const char **name,
				const char **value);

/*
 * 'v': newest minor version the server supports and the count of unrecognised options.
 * The message carries a whole version number; its major must be 3.
 */
int proto_read_negotiate(const struct proto_msg *m, uint32_t *minor, uint32_t *noptions);

/* 'E'/'N' backend: the fields a log line or a test needs. Absent fields are NULL. */
struct proto_error_fields {
	const char *severity; /* 'V' when present (non-localised), else 'S' */
	const char *sqlstate; /* 'C' */
	const char *message;  /* 'M' */
	const char *detail;   /* 'D' */
};
int proto_read_error(const struct proto_msg *m, struct proto_error_fields *out);

/* 'Q': the query text (NUL-terminated inside the body). */
int proto_read_query(const struct proto_msg *m, const char **sql);

/* 'P': statement name, query text, parameter type count (types not decoded). */
int proto_read_parse(const struct proto_msg *m, const char **stmt, const char **sql,
		     uint16_t *nparams);

/* 'B': portal, statement and parameter count (values not decoded). */
int proto_read_bind(const struct proto_msg *m, const char **portal, const char **stmt,
		    uint16_t *nparams);

/* 'G'/'H'/'W': overall format and column count. */
int proto_read_copy_response(const struct proto_msg *m, uint8_t *format, uint16_t *ncols);

/* 'C' backend: the command tag. */
int proto_read_command_complete(const struct proto_msg *m, const char **tag);

/*
 * RowDescription ('T') walk: call proto_rowdesc_next() until it returns 0 (done) or < 0.
 * DataRow ('D') walk: likewise; a NULL column has len -1 and value NULL.
 */
struct proto_column {
	const char *name;
	uint32_t table_oid;
	int16_t attnum;
	uint32_t type_oid;
	int16_t type_len;
	int32_t type_mod;
	int16_t format;
};
struct proto_rowdesc_iter {
	struct proto_cursor c;
	uint16_t ncols;
	uint16_t index;
};
int proto_rowdesc_begin(const struct proto_msg *m, struct proto_rowdesc_iter *it);
/* 1 and *col filled, 0 at the end (the message was consumed exactly), or < 0. */
int proto_rowdesc_next(struct proto_rowdesc_iter *it, struct proto_column *col);

struct proto_datarow_iter {
	struct proto_cursor c;
	uint16_t ncols;
	uint16_t index;
};
int proto_datarow_begin(const struct proto_msg *m, struct proto_datarow_iter *it);
int proto_datarow_next(struct proto_datarow_iter *it, const uint8_t **value, int32_t *len);

/* ---- extended query: what a Bind binds, what an Execute runs, what a Close closes -- */

/* 'E' frontend: the portal and the row limit (0: all rows). */
int proto_read_execute(const struct proto_msg *m, const char **portal, uint32_t *max_rows);

/* 'C' frontend (Close) or 'D' frontend (Describe): 'S' for a statement or 'P' for a
 * portal, and its name. The type byte says which message; both have this layout. */
int proto_read_target(const struct proto_msg *m, uint8_t type, uint8_t *kind,
		      const char **name);

/*
 * The parameter values of a Bind or the arguments of a FunctionCall, one by one with the
 * format each is in (the format count is 0: all text, 1: one for all, or one each).
 * proto_bind_params_begin()/proto_fcall_args_begin() check the whole message first.
 */
struct proto_param_iter {
	struct proto_cursor formats; /* the format codes, when there is one per value */
	uint16_t nformats;
	int16_t format_for_all;      /* with one format code (or none: text) */
	struct proto_cursor values;  /* the values: Int32 length (-1: NULL) and bytes */
	uint16_t n;
	uint16_t index;
};
int proto_bind_params_begin(const struct proto_msg *m, struct proto_param_iter *it);
int proto_fcall_args_begin(const struct proto_msg *m, uint32_t *function_oid,
			   struct proto_param_iter *it);
/* 1 with the next value (NULL and -1 for SQL NULL) and its format (0 text, 1 binary),
 * 0 after the last. */
int proto_param_next(struct proto_param_iter *it, const uint8_t **value, int32_t *len,
		     int16_t *format);

/* ---- additions: authentication exchange, startup helpers ------------------------- */

/* 'R' SASL (code 10): walk the mechanism names. */
struct proto_sasl_iter {
	struct proto_cursor c;
};
/* PROTO_OK when m is a valid AuthenticationSASL; PROTO_ERR_TYPE for another message or
 * another authentication code; PROTO_ERR_FORMAT when malformed. */
int proto_auth_sasl_begin(const struct proto_msg *m, struct proto_sasl_iter *it);
/* 1 and *mech set, 0 after the last mechanism, or < 0. */
int proto_auth_sasl_next(struct proto_sasl_iter *it, const char **mech);

/*
 * 'R': the bytes after the request code: the MD5 salt (4 bytes), GSS/SSPI continuation
 * data, SASLContinue/SASLFinal data, the SASL mechanism list; empty for the other codes.
 */
int proto_read_auth_data(const struct proto_msg *m, uint32_t *code, const uint8_t **data,
			 uint32_t *len);

/* 'p' as PasswordMessage: exactly one NUL-terminated string (cleartext or MD5 hash). */
int proto_read_password(const struct proto_msg *m, const char **password);

/* 'p' as SASLInitialResponse: mechanism, then data (NULL and -1 when the client sent none). */
int proto_read_sasl_initial(const struct proto_msg *m, const char **mechanism,
			    const uint8_t **data, int32_t *len);

/*
 * Does a new connection start with a TLS handshake record (direct SSL, PostgreSQL 17+)
 * rather than a startup packet? PostgreSQL decides on the first byte, 0x16; so does this.
 * False when n == 0.
 */
bool proto_startup_is_tls(const uint8_t *p, size_t n);

/*
 * Explain why proto_startup_parse() refused p[0..len): PostgreSQL's own message text for
 * the failure (formatted into msg[0..cap), always NUL-terminated when cap > 0) and its
 * SQLSTATE (e.g. "08P01"; "28000" for a missing user; "0A000" for an unsupported
 * version). Returns the same status proto_startup_parse() returns; on PROTO_OK msg is "".
 */
int proto_startup_explain(const uint8_t *p, uint32_t len, char *msg, size_t cap,
			  const char **sqlstate);

/* ---- writers: return bytes written or PROTO_ERR_BUFFER ---------------------------- */
/*
 * Arguments a message cannot carry (a NULL or over-long string, a SQLSTATE that is not
 * five characters, a key outside 4..256 bytes, a status that is not 'I'/'T'/'E') give
 * PROTO_ERR_FORMAT and write nothing. Nothing is written either on PROTO_ERR_BUFFER.
 */

/*
 * ErrorResponse with S and V = severity, C = sqlstate, M = message, the fields a libpq
 * client shows. severity is "ERROR" or "FATAL".
 */
int proto_write_error(uint8_t *out, size_t cap, const char *severity, const char *sqlstate,
		      const char *message);

/* BackendKeyData 'K' with pid and key. */
int proto_write_backend_key(uint8_t *out, size_t cap, uint32_t pid, const uint8_t *key,
			    uint32_t key_len);

/* CancelRequest packet (startup family). */
int proto_write_cancel(uint8_t *out, size_t cap, uint32_t pid, const uint8_t *key,
		       uint32_t key_len);

/* Terminate 'X'. */
int proto_write_terminate(uint8_t *out, size_t cap);

/* ReadyForQuery 'Z' with tx_status. */
int proto_write_ready(uint8_t *out, size_t cap, uint8_t tx_status);

/* ---- additional writers ---------------------------------------------------------- */

/*
 * StartupMessage with version and the given name/value pairs (used to log in upstream).
 * Fails with PROTO_ERR_FORMAT when the packet would exceed PROTO_STARTUP_MAX_LEN.
 */
int proto_write_startup(uint8_t *out, size_t cap, uint32_t version,
			const struct proto_param *params, unsigned nparams);

/* SSLRequest / GSSENCRequest (8 bytes). */
int proto_write_ssl_request(uint8_t *out, size_t cap);
int proto_write_gssenc_request(uint8_t *out, size_t cap);

/* Authentication request 'R' with code and the bytes that follow it (data may be NULL if
 * len is 0). The layout the code requires is checked as proto_read_auth() checks it. */
int proto_write_auth(uint8_t *out, size_t cap, uint32_t code, const uint8_t *data,
		     uint32_t len);

/* PasswordMessage 'p' with a NUL-terminated password. */
int proto_write_password(uint8_t *out, size_t cap, const char *password);

/* SASLInitialResponse 'p': mechanism and data (data NULL: length -1, no data). */
int proto_write_sasl_initial(uint8_t *out, size_t cap, const char *mechanism,
			     const uint8_t *data, uint32_t len);

/* SASLResponse 'p': raw data. */
int proto_write_sasl_response(uint8_t *out, size_t cap, const uint8_t *data, uint32_t len);

/* ParameterStatus 'S' (backend). */
int proto_write_parameter_status(uint8_t *out, size_t cap, const char *name,
				 const char *value);

/* Query 'Q' (frontend), e.g. the catalog query masking needs. */
int proto_write_query(uint8_t *out, size_t cap, const char *sql);

/* Parse 'P' (frontend): statement name and text, no parameter types (the server infers
 * them), e.g. to describe a statement without running it (pgwardenctl policy explain). */
int proto_write_parse(uint8_t *out, size_t cap, const char *stmt, const char *sql);

/* Describe 'D' (frontend) of a statement ('S') or portal ('P'). */
int proto_write_describe(uint8_t *out, size_t cap, uint8_t what, const char *name);

/* Sync 'S' (frontend). */
int proto_write_sync(uint8_t *out, size_t cap);

#endif /* PGWARDEN_PROTO_H */
