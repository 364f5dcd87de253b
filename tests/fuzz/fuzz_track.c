/*
 * fuzz_track: the request tracker (relay/track.c) on an arbitrary conversation: client
 * messages (Query texts with SQL PREPARE/DEALLOCATE/DISCARD, Parse, Bind, Execute, Close,
 * Sync, ...) and server answers in any order, as a hostile client and a broken server could
 * make them.
 *
 * Input: one control byte (bit 0: standard_conforming_strings off; bits 1-2: the statement
 * limit, 1..4; bit 3: a Parse comes unclassified, TRACK_CLASS_UNREAD, so that the tracker
 * classifies it or takes the class of the statement whose text it repeats), then records: a direction byte (even: client, odd: server), a message type,
 * a body length (one byte) and the body.
 *
 * Like the connection, the fuzzer stops feeding client messages while the queue is full,
 * refuses a Parse or Query the statement limits would exceed (track_reject, as the core's
 * conn_too_many_statements does), and starts over when the tracker says the server broke
 * the protocol (the core ends the session). Invariants (abort on violation):
 *   - the queue never holds more than its maximum, plus the one Sync a refused Query or
 *     FunctionCall's poison brings;
 *   - the statement table never holds more than its limit, and every statement in it
 *     that SQL PREPARE made is marked sql_level with a text no longer than the message;
 *     a class the tracker read is a class;
 *   - a REPLACE hands out a whole ErrorResponse;
 *   - everything is freed at the end (LeakSanitizer).
 */
#include "relay/track.h"
#include "session/session.h"
#include "sql/sql.h"

#include "fuzz_check.h"

#include <errno.h>
#include <string.h>

#define MAX_PIPELINE 8

static void on_done(void *arg, const struct track_done *d)
{
	(void)arg;
	CHECK(!(d->failed && d->skipped));
}

static void check_table(const struct track *t, unsigned max_statements)
{
	CHECK(t->count <= t->max + 1);
	CHECK(stmt_count(&t->stmts) <= max_statements);
	for (uint32_t b = 0; b < t->stmts.nbuckets; b++)
		for (const struct stmt_entry *e = t->stmts.buckets[b]; e; e = e->next) {
			CHECK(e->name != NULL);
			CHECK(!e->sql || strlen(e->sql) <= 255);
			CHECK(!e->cls_read || e->cls < SQL_CLASS_COUNT);
		}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct session s;
	struct track t;
	struct track_rings rings = {0};
	unsigned max_statements;
	uint8_t msg[5 + 256], poison[128], parse_cls;

	if (size < 1)
		return 0;
	memset(&s, 0, sizeof(s));
	if ((data[0] & 1) && session_set_server_param(&s, "standard_conforming_strings", "off"))
		return 0;
	max_statements = 1 + ((data[0] >> 1) & 3);
	parse_cls = (data[0] & 8) ? TRACK_CLASS_UNREAD : SQL_CLASS_READ;
	track_init(&t, &rings, MAX_PIPELINE, max_statements, 4096, true, "00ff", on_done,
		   NULL);
	t.session = &s;
	for (size_t i = 1; i + 3 <= size;) {
		uint8_t dir = data[i], type = data[i + 1], len = data[i + 2];
		const uint8_t *body = data + i + 3;

		if (i + 3 + len > size)
			break;
		i += 3 + (size_t)len;
		msg[0] = type;
		msg[1] = 0;
		msg[2] = 0;
		msg[3] = 0;
		msg[4] = (uint8_t)(len + 4);
		memcpy(msg + 5, body, len);
		if (!(dir & 1)) {
			int r;

			if (track_full(&t) || !track_answered(type, false))
				continue;
			r = track_frontend(&t, msg, 5 + (uint32_t)len, parse_cls, NULL, 1);
			if (r == -ENOSPC) {
				static const uint8_t err[] = "E\0\0\0\x0b" "C53400\0\0";

				r = track_reject(&t, type, err, sizeof(err) - 1, 1, poison,
						 sizeof(poison));
				CHECK(r >= 0 || r == -ENOMEM);
			} else {
				CHECK(r == 0 || r == -ENOMEM);
			}
		} else {
			struct proto_msg m = {.type = type, .body_len = len, .body = msg + 5};
			const uint8_t *reply = NULL;
			uint32_t reply_len = 0;
			enum track_action a = track_backend(&t, &m, 2, &reply, &reply_len);

			if (a == TRACK_REPLACE) {
				CHECK(reply && reply_len >= 5 && reply[0] == 'E');
			} else if (a == TRACK_INVALID) {
				track_release(&t);
				track_init(&t, &rings, MAX_PIPELINE, max_statements, 4096, true,
					   "00ff", on_done, NULL);
				t.session = &s;
			}
		}
		check_table(&t, max_statements);
	}
	track_release(&t);
	track_rings_destroy(&rings);
	session_release(&s);
	return 0;
}
