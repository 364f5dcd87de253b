/*
 * fuzz_startup: the startup family (StartupMessage, SSL/GSSENC requests, CancelRequest)
 * on arbitrary bytes, as the first bytes of a new connection.
 *
 * Invariants (abort on violation):
 *   - proto_startup_frame() decides from at most 8 bytes, prefixes answer NEED_MORE or the
 *     same, and an OK length lies in 8..PROTO_STARTUP_MAX_LEN;
 *   - proto_startup_explain() gives the same status as proto_startup_parse() and a text;
 *   - an accepted StartupMessage names a non-empty user and a database shorter than
 *     PROTO_NAMEDATALEN, and every string it hands out is terminated inside the packet;
 *   - written back with proto_write_startup() / proto_write_cancel(), an accepted packet
 *     is byte for byte the packet that came in.
 * The packet is copied into an exact-size heap block so ASan sees any read past it.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

#include "fuzz_check.h"

/* s is a string that starts and ends (with its NUL) inside p[0..len). */
static bool cstr_inside(const char *s, const uint8_t *p, uint32_t len)
{
	const uint8_t *b = (const uint8_t *)s;

	return b >= p && b < p + len && memchr(b, 0, (size_t)(p + len - b)) != NULL;
}

static void check_startup_message(const uint8_t *p, uint32_t len,
				  const struct proto_startup *st)
{
	static uint8_t out[PROTO_STARTUP_MAX_LEN];
	int n;

	CHECK(PROTO_VERSION_MAJOR(st->code) == 3);
	CHECK(st->user && st->user[0] && strlen(st->user) < PROTO_NAMEDATALEN);
	CHECK(cstr_inside(st->user, p, len));
	CHECK(st->database && strlen(st->database) < PROTO_NAMEDATALEN);
	CHECK(st->database[0] == '\0' || cstr_inside(st->database, p, len));
	CHECK(!st->application_name || cstr_inside(st->application_name, p, len));
	CHECK(st->nparams >= 1);
	/* Only packets whose every parameter is in the view can be re-encoded from it. */
	if (st->nparams > PROTO_STARTUP_MAX_PARAMS)
		return;
	for (unsigned i = 0; i < st->nparams; i++) {
		CHECK(cstr_inside(st->params[i].name, p, len) && st->params[i].name[0]);
		CHECK(cstr_inside(st->params[i].value, p, len));
	}
	n = proto_write_startup(out, sizeof(out), st->code, st->params, st->nparams);
	CHECK(n == (int)len && memcmp(out, p, len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_startup st;
	const char *sqlstate = NULL;
	char text[256];
	uint32_t len = 0;
	uint8_t *p;
	int fs, ps, es;

	fs = proto_startup_frame(data, size, &len);
	for (size_t k = 0; k < size && k <= PROTO_STARTUP_HEADER_LEN; k++) {
		uint32_t kl = 0;
		int ks = proto_startup_frame(data, k, &kl);

		CHECK(ks == PROTO_NEED_MORE || ks == fs);
		if (ks == PROTO_OK)
			CHECK(kl == len);
	}
	if (size >= PROTO_STARTUP_HEADER_LEN)
		CHECK(fs != PROTO_NEED_MORE);
	if (fs != PROTO_OK) {
		CHECK(fs == PROTO_NEED_MORE || fs == PROTO_ERR_LENGTH || fs == PROTO_ERR_TOO_LONG);
		return 0;
	}
	CHECK(len >= PROTO_STARTUP_HEADER_LEN && len <= PROTO_STARTUP_MAX_LEN);
	CHECK(!proto_startup_is_tls(data, size));

	/* Parse exactly what the frame claims when it is all here, else what there is (a
	 * length field that disagrees must be refused, not trusted). */
	if (size > len)
		size = len;
	p = malloc(size);
	if (!p)
		abort();
	memcpy(p, data, size);

	ps = proto_startup_parse(p, (uint32_t)size, &st);
	es = proto_startup_explain(p, (uint32_t)size, text, sizeof(text), &sqlstate);
	CHECK(es == ps);
	CHECK(sqlstate && strlen(sqlstate) == 5 && strlen(text) < sizeof(text));
	CHECK((ps == PROTO_OK) == (text[0] == '\0'));
	if (size < len)
		CHECK(ps == PROTO_ERR_LENGTH);

	if (ps == PROTO_OK) {
		switch (st.kind) {
		case PROTO_STARTUP_MESSAGE:
			check_startup_message(p, (uint32_t)size, &st);
			break;
		case PROTO_SSL_REQUEST:
		case PROTO_GSSENC_REQUEST:
			CHECK(size == PROTO_STARTUP_HEADER_LEN);
			break;
		case PROTO_CANCEL_REQUEST: {
			uint8_t out[PROTO_STARTUP_HEADER_LEN + 4 + PROTO_CANCEL_KEY_MAX];
			int n;

			CHECK(st.cancel_key_len >= 4 && st.cancel_key_len <= PROTO_CANCEL_KEY_MAX);
			n = proto_write_cancel(out, sizeof(out), st.cancel_pid, st.cancel_key,
					       st.cancel_key_len);
			CHECK(n == (int)size && memcmp(out, p, size) == 0);
			break;
		}
		}
	} else if (ps == PROTO_ERR_STARTUP) {
		CHECK(st.user == NULL && st.database == NULL);
	}
	free(p);
	return 0;
}
