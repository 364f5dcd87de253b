/*
 * proto_int: what the codec's own files share and nobody else should use.
 *
 * The per-direction type table is the heart of framing: one entry per type byte with the
 * message's PostgreSQL name and the body size range a well-formed message of that type can
 * have. A type with no name is not defined for that direction.
 */
#ifndef PGWARDEN_PROTO_INT_H
#define PGWARDEN_PROTO_INT_H

#include "proto/proto.h"

struct proto_type_info {
	const char *name; /* NULL: not a message of this direction */
	uint32_t min_body;
	uint32_t max_body;
};

/* Table entry for type in dir; an entry with name NULL for undefined types or dirs. */
const struct proto_type_info *proto_type_lookup(enum proto_dir dir, uint8_t type);

/*
 * A cursor over a message body. A NULL body (header seen, nothing else) with a zero
 * length gives an empty cursor; the caller treats NULL with a non-zero length as a format
 * error before getting here.
 */
void proto_msg_cursor(struct proto_cursor *c, const struct proto_msg *m);

/* Is s a PostgreSQL boolean spelling (parse_bool: prefixes of true/false/yes/no, on/off,
 * 1/0, case-insensitive)? Sets *value. */
bool proto_parse_bool(const char *s, bool *value);

/* Readers' common start and end: check the type and get a cursor; check exact consumption.
 * PROTO_OK, PROTO_ERR_TYPE or PROTO_ERR_FORMAT. */
int proto_reader_begin(const struct proto_msg *m, uint8_t t, struct proto_cursor *c);
int proto_reader_end(const struct proto_cursor *c);

/* Layout pieces shared by Bind and FunctionCall, false on any error (c->err set or a value
 * out of range): n format codes of 0 or 1; n values of Int32 length (-1 NULL) + bytes;
 * formats then values, the format count 0, 1 or the value count. */
bool proto_cursor_formats(struct proto_cursor *c, uint16_t n);
bool proto_cursor_values(struct proto_cursor *c, uint16_t n);
bool proto_cursor_params(struct proto_cursor *c, uint16_t *nvalues);

#endif
