/*
 * cursor: bounded big-endian getters over one message body.
 *
 * Every read checks the bytes left first; a short read sets err, returns zero/NULL and
 * leaves the position alone, and every later read fails too, so a parser can read a whole
 * layout and test the cursor once at the end (proto_cursor_done) without ever touching a
 * byte outside the body.
 */
#include "proto/proto_int.h"

#include <string.h>

static const uint8_t empty_body[1];

void proto_msg_cursor(struct proto_cursor *c, const struct proto_msg *m)
{
	/* proto_cursor_init() computes p + n, which is undefined for a NULL p. */
	if (m->body)
		proto_cursor_init(c, m->body, m->body_len);
	else
		proto_cursor_init(c, empty_body, 0);
}

static bool cursor_have(struct proto_cursor *c, size_t n)
{
	if (c->err || (size_t)(c->end - c->p) < n) {
		c->err = true;
		return false;
	}
	return true;
}

uint8_t proto_get_u8(struct proto_cursor *c)
{
	if (!cursor_have(c, 1))
		return 0;
	return *c->p++;
}

uint16_t proto_get_u16(struct proto_cursor *c)
{
	uint16_t v;

	if (!cursor_have(c, 2))
		return 0;
	v = (uint16_t)((uint16_t)c->p[0] << 8 | c->p[1]);
	c->p += 2;
	return v;
}

int16_t proto_get_i16(struct proto_cursor *c)
{
	return (int16_t)proto_get_u16(c);
}

uint32_t proto_get_u32(struct proto_cursor *c)
{
	uint32_t v;

	if (!cursor_have(c, 4))
		return 0;
	v = proto_read_u32(c->p);
	c->p += 4;
	return v;
}

int32_t proto_get_i32(struct proto_cursor *c)
{
	return (int32_t)proto_get_u32(c);
}

const char *proto_get_cstr(struct proto_cursor *c)
{
	const uint8_t *nul;
	const char *s;

	if (c->err) /* keep a failed cursor failed, as the other getters do */
		return NULL;
	nul = memchr(c->p, 0, (size_t)(c->end - c->p));
	if (!nul) {
		c->err = true;
		return NULL;
	}
	s = (const char *)c->p;
	c->p = nul + 1;
	return s;
}

const uint8_t *proto_get_bytes(struct proto_cursor *c, size_t n)
{
	const uint8_t *b;

	if (!cursor_have(c, n))
		return NULL;
	b = c->p;
	c->p += n;
	return b;
}
