/*
 * fuzz_proto: the regular-message codec on arbitrary bytes, both directions.
 *
 * Input: one control byte, then a byte stream as it would arrive on a connection. Bit 0 of
 * the control byte picks the direction, the other bits a max_body cap (small caps reach the
 * PROTO_ERR_TOO_LONG paths). The stream is framed message after message, as the relay
 * does; every whole message is validated, read by every typed reader and walked.
 *
 * Invariants (abort on violation, so libFuzzer reports them):
 *   - framing never claims bytes beyond its input: an OK frame's body starts at p + 5 and a
 *     complete message ends inside the stream; body_len respects max_body;
 *   - framing a prefix answers NEED_MORE or the same as the whole;
 *   - proto_validate() and the reader for the type agree; a reader accepts no other type;
 *   - walkers yield exactly ncols items, each inside the body, then end cleanly;
 *   - an ErrorResponse read and written back reads the same;
 *   - proto_frame_run() takes exactly the run of whole messages of the first one's type that
 *     proto_frame() accepts one by one, cut where the next would pass its limit.
 * Bodies are copied into exact-size heap blocks so ASan sees any read past a body.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

#include "fuzz_check.h"

static bool inside(const void *p, size_t n, const uint8_t *base, size_t len)
{
	const uint8_t *b = p;

	return b >= base && b <= base + len && n <= (size_t)(base + len - b);
}

static void walk_rowdesc(const struct proto_msg *m, int valid)
{
	struct proto_rowdesc_iter it;
	struct proto_column col;
	unsigned n = 0;
	int rc = proto_rowdesc_begin(m, &it);

	CHECK((rc == PROTO_OK) == (valid == PROTO_OK));
	if (rc != PROTO_OK)
		return;
	while ((rc = proto_rowdesc_next(&it, &col)) == 1) {
		CHECK(inside(col.name, strlen(col.name) + 1, m->body, m->body_len));
		CHECK(col.format == 0 || col.format == 1);
		n++;
	}
	CHECK(rc == 0 && n == it.ncols);
}

static void walk_datarow(const struct proto_msg *m, int valid)
{
	struct proto_datarow_iter it;
	const uint8_t *v;
	int32_t len;
	unsigned n = 0;
	size_t total = 2;
	int rc = proto_datarow_begin(m, &it);

	CHECK((rc == PROTO_OK) == (valid == PROTO_OK));
	if (rc != PROTO_OK)
		return;
	while ((rc = proto_datarow_next(&it, &v, &len)) == 1) {
		CHECK(len >= -1);
		CHECK((len == -1) == (v == NULL));
		if (len >= 0)
			CHECK(inside(v, (size_t)len, m->body, m->body_len));
		total += 4 + (len > 0 ? (size_t)len : 0);
		n++;
	}
	CHECK(rc == 0 && n == it.ncols);
	CHECK(total == m->body_len); /* the values account for every byte */
}

static void round_trip_error(const struct proto_error_fields *ef)
{
	uint8_t out[4096];
	struct proto_error_fields again;
	struct proto_msg m;
	int n;

	if (!ef->severity || !ef->sqlstate || !ef->message || strlen(ef->sqlstate) != 5 ||
	    !ef->severity[0])
		return;
	n = proto_write_error(out, sizeof(out), ef->severity, ef->sqlstate, ef->message);
	if (n == PROTO_ERR_BUFFER)
		return;
	CHECK(n > 0);
	CHECK(proto_frame(out, (size_t)n, PROTO_BACKEND, PROTO_MAX_BODY, &m) == PROTO_OK);
	CHECK((size_t)n == PROTO_HEADER_LEN + m.body_len);
	CHECK(proto_read_error(&m, &again) == PROTO_OK);
	CHECK(strcmp(again.severity, ef->severity) == 0);
	CHECK(strcmp(again.sqlstate, ef->sqlstate) == 0);
	CHECK(strcmp(again.message, ef->message) == 0);
}

/* Bind values or FunctionCall arguments: exactly n, each inside the body, formats 0/1. */
static void walk_params(const struct proto_msg *m, int valid)
{
	struct proto_param_iter it;
	const uint8_t *v;
	int32_t len;
	int16_t fmt;
	uint32_t oid;
	unsigned n = 0;
	int rc = m->type == 'B' ? proto_bind_params_begin(m, &it) :
				   proto_fcall_args_begin(m, &oid, &it);

	CHECK((rc == PROTO_OK) == (valid == PROTO_OK));
	if (rc != PROTO_OK)
		return;
	while ((rc = proto_param_next(&it, &v, &len, &fmt)) == 1) {
		CHECK(len >= -1 && (len == -1) == (v == NULL));
		CHECK(fmt == 0 || fmt == 1);
		if (len > 0)
			CHECK(inside(v, (size_t)len, m->body, m->body_len));
		n++;
	}
	CHECK(rc == 0 && n == it.n);
}

/* Every reader on m: OK only for its own type, and then in agreement with validation. */
static void read_all(enum proto_dir dir, const struct proto_msg *m, int valid)
{
	const char *s1, *s2;
	const uint8_t *b;
	uint32_t u1, u2;
	uint16_t n16;
	uint8_t u8;
	int32_t i32;
	struct proto_error_fields ef;
	struct proto_sasl_iter sit;
	int rc;

#define AGREE(call, own_type)                                                             \
	do {                                                                              \
		rc = (call);                                                              \
		if (!(own_type))                                                          \
			CHECK(rc == PROTO_ERR_TYPE);                                      \
		else if (rc != PROTO_ERR_TYPE)                                            \
			CHECK((rc == PROTO_OK) == (valid == PROTO_OK));                   \
	} while (0)

	bool be = dir == PROTO_BACKEND, fe = dir == PROTO_FRONTEND;
	uint8_t t = m->type;

	if (be) {
		AGREE(proto_read_auth(m, &u1), t == 'R');
		AGREE(proto_read_auth_data(m, &u1, &b, &u2), t == 'R');
		if (rc == PROTO_OK)
			CHECK(inside(b, u2, m->body, m->body_len));
		AGREE(proto_read_backend_key(m, &u1, &b, &u2), t == 'K');
		if (rc == PROTO_OK)
			CHECK(u2 >= 4 && u2 <= 256 && inside(b, u2, m->body, m->body_len));
		AGREE(proto_read_ready(m, &u8), t == 'Z');
		AGREE(proto_read_parameter_status(m, &s1, &s2), t == 'S');
		AGREE(proto_read_negotiate(m, &u1, &u2), t == 'v');
		AGREE(proto_read_error(m, &ef), t == 'E' || t == 'N');
		if (rc == PROTO_OK)
			round_trip_error(&ef);
		AGREE(proto_read_copy_response(m, &u8, &n16), t == 'G' || t == 'H' || t == 'W');
		AGREE(proto_read_command_complete(m, &s1), t == 'C');
		rc = proto_auth_sasl_begin(m, &sit);
		if (rc == PROTO_OK) {
			const char *mech;
			unsigned k = 0;

			CHECK(valid == PROTO_OK);
			while ((rc = proto_auth_sasl_next(&sit, &mech)) == 1)
				CHECK(mech[0] && ++k < 65536);
			CHECK(rc == 0 && k > 0);
		}
		if (t == 'T')
			walk_rowdesc(m, valid);
		if (t == 'D')
			walk_datarow(m, valid);
	}
	if (fe) {
		AGREE(proto_read_query(m, &s1), t == 'Q');
		AGREE(proto_read_parse(m, &s1, &s2, &n16), t == 'P');
		AGREE(proto_read_bind(m, &s1, &s2, &n16), t == 'B');
		AGREE(proto_read_execute(m, &s1, &u1), t == 'E');
		AGREE(proto_read_target(m, 'C', &u8, &s1), t == 'C');
		if (rc == PROTO_OK)
			CHECK(u8 == 'S' || u8 == 'P');
		AGREE(proto_read_target(m, 'D', &u8, &s1), t == 'D');
		if (t == 'B' || t == 'F')
			walk_params(m, valid);
		/* 'p' has no single layout: its readers answer for themselves. */
		rc = proto_read_password(m, &s1);
		CHECK(t == 'p' || rc == PROTO_ERR_TYPE);
		rc = proto_read_sasl_initial(m, &s1, &b, &i32);
		CHECK(t == 'p' || rc == PROTO_ERR_TYPE);
		if (rc == PROTO_OK)
			CHECK(i32 == -1 ? b == NULL : inside(b, (size_t)i32, m->body, m->body_len));
	}
#undef AGREE
}

/* The run at p[0..n) as proto_frame() frames it message by message, against
 * proto_frame_run() with that limit. */
static void check_frame_run(const uint8_t *p, size_t n, enum proto_dir dir, uint32_t max_body,
			    uint32_t limit)
{
	uint32_t want = 0;

	while (want < n && p[want] == p[0]) {
		struct proto_msg m;
		uint32_t total;

		if (proto_frame(p + want, n - want, dir, max_body, &m) != PROTO_OK)
			break;
		total = PROTO_HEADER_LEN + m.body_len;
		if (total > n - want || total > limit - want)
			break;
		want += total;
	}
	CHECK(proto_frame_run(p, (uint32_t)n, dir, max_body, p[0], UINT32_MAX, limit) == want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint32_t caps[] = { PROTO_MAX_BODY, 0, 1, 4, 16, 64, 1024, 9996 };
	enum proto_dir dir;
	uint32_t max_body;
	size_t off = 1;

	if (size < 1)
		return 0;
	dir = (data[0] & 1) ? PROTO_BACKEND : PROTO_FRONTEND;
	max_body = caps[(data[0] >> 1) % (sizeof(caps) / sizeof(caps[0]))];

	while (off < size) {
		const uint8_t *p = data + off;
		size_t n = size - off;
		struct proto_msg m;
		int st = proto_frame(p, n, dir, max_body, &m);

		if (n <= UINT32_MAX) {
			check_frame_run(p, n, dir, max_body, (uint32_t)n);
			check_frame_run(p, n, dir, max_body, (uint32_t)n / 2);
		}

		/* Any shorter view answers NEED_MORE or the same. */
		for (size_t k = 0; k < n && k <= PROTO_HEADER_LEN; k++) {
			struct proto_msg pm;
			int ps = proto_frame(p, k, dir, max_body, &pm);

			CHECK(ps == PROTO_NEED_MORE || ps == st);
			if (ps == PROTO_OK)
				CHECK(pm.type == m.type && pm.body_len == m.body_len);
		}
		if (st != PROTO_OK) {
			CHECK(st == PROTO_NEED_MORE || st < 0);
			CHECK(proto_err_str(st) != NULL);
			if (st == PROTO_ERR_TYPE)
				CHECK(!proto_type_valid(dir, p[0]));
			break;
		}
		CHECK(n >= PROTO_HEADER_LEN);
		CHECK(m.type == p[0] && proto_type_valid(dir, m.type));
		CHECK(m.body == p + PROTO_HEADER_LEN);
		CHECK(m.body_len <= max_body && m.body_len <= PROTO_MAX_BODY);
		CHECK(strcmp(proto_type_name(dir, m.type), "unknown") != 0);
		if (m.body_len > n - PROTO_HEADER_LEN)
			break; /* the body is not all here yet: nothing more to check */
		CHECK(inside(m.body, m.body_len, data, size));

		{
			uint8_t *body = malloc(m.body_len ? m.body_len : 1);
			struct proto_msg cm = m;
			int valid;

			if (!body)
				abort();
			memcpy(body, m.body, m.body_len);
			cm.body = m.body_len ? body : NULL;
			valid = proto_validate(dir, &cm);
			CHECK(valid == PROTO_OK || valid == PROTO_ERR_FORMAT);
			read_all(dir, &cm, valid);
			free(body);
		}
		off += PROTO_HEADER_LEN + m.body_len;
	}
	return 0;
}
