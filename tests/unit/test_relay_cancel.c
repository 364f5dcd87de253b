/* Unit tests for userspace/relay/cancel: issued keys map back to server keys, nothing else
 * does. */
#include "base/addr.h"
#include "relay/cancel.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static const uint8_t server_key[4] = {0xde, 0xad, 0xbe, 0xef};
#define SID "00112233445566778899aabbccddeeff" /* a session's id_hex */

/* The session a key is issued to: its id and its server, which the map reads, not copies. */
static struct session owner_at(const char *id_hex, const struct addr *upstream,
			       const char *upstream_unix)
{
	struct session s = {.upstream = *upstream, .upstream_unix = upstream_unix};

	snprintf(s.id_hex, sizeof(s.id_hex), "%s", id_hex);
	return s;
}

static void test_issued_key_maps_to_server_key(void **state)
{
	struct cancel_map *m = cancel_map_new();
	struct cancel_target t;
	struct session owner;
	struct addr up;
	uint8_t client_key[4];
	void *h;

	assert_non_null(m);
	assert_int_equal(addr_parse("127.0.0.1:5432", &up), 0);
	owner = owner_at(SID, &up, NULL);
	h = cancel_map_issue(m, &owner, 4242, server_key, 4, client_key);
	assert_non_null(h);
	assert_true(cancel_map_lookup(m, 4242, client_key, 4, &t));
	assert_string_equal(t.session_id, SID);
	assert_int_equal(t.pid, 4242);
	assert_int_equal(t.key_len, 4);
	assert_memory_equal(t.server_key, server_key, 4);
	assert_true(addr_equal(&t.upstream.ss.sa, &up.ss.sa));
	assert_string_equal(t.upstream_unix, "");
	cancel_map_remove(m, h);
	assert_false(cancel_map_lookup(m, 4242, client_key, 4, &t));
	cancel_map_free(m);
}

static void test_wrong_keys_cancel_nothing(void **state)
{
	struct cancel_map *m = cancel_map_new();
	struct cancel_target t, untouched;
	struct session owner;
	struct addr up;
	uint8_t client_key[4], wrong[4];

	assert_int_equal(addr_parse("127.0.0.1:5432", &up), 0);
	owner = owner_at(SID, &up, NULL);
	assert_non_null(cancel_map_issue(m, &owner, 77, server_key, 4, client_key));
	/* The server's own key is not a key the client was given. */
	if (memcmp(client_key, server_key, 4) != 0)
		assert_false(cancel_map_lookup(m, 77, server_key, 4, &t));
	memcpy(wrong, client_key, 4);
	wrong[3] ^= 1;
	/* A miss leaves the target as it was: no session id (nor anything else) leaks. */
	memset(&t, 0x5a, sizeof(t));
	memcpy(&untouched, &t, sizeof(t));
	assert_false(cancel_map_lookup(m, 77, wrong, 4, &t));
	assert_false(cancel_map_lookup(m, 78, client_key, 4, &t)); /* right key, wrong pid */
	assert_false(cancel_map_lookup(m, 77, client_key, 3, &t)); /* wrong length */
	assert_memory_equal(&t, &untouched, sizeof(t));
	cancel_map_free(m); /* frees the entry still in it */
}

/* Protocol 3.2 keys up to 256 bytes; issued keys are as long as the server's. */
static void test_long_keys_and_many_sessions(void **state)
{
	struct cancel_map *m = cancel_map_new();
	struct cancel_target t;
	struct session owner;
	struct addr up;
	uint8_t skey[256], ckeys[300][32];
	struct session owners[300];
	char ids[300][SESSION_ID_HEXLEN + 1];
	void *handles[300];

	assert_int_equal(addr_parse("[::1]:5432", &up), 0);
	owner = owner_at(SID, &up, NULL);
	for (int i = 0; i < 256; i++)
		skey[i] = (uint8_t)i;
	for (int i = 0; i < 300; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%032x", i);
		owners[i] = owner_at(ids[i], &up, NULL);
		handles[i] = cancel_map_issue(m, &owners[i], (uint32_t)(1000 + i), skey, 32,
					      ckeys[i]);
		assert_non_null(handles[i]);
	}
	for (int i = 0; i < 300; i++) {
		assert_true(cancel_map_lookup(m, (uint32_t)(1000 + i), ckeys[i], 32, &t));
		assert_memory_equal(t.server_key, skey, 32);
		assert_string_equal(t.session_id, ids[i]); /* each key names its own session */
	}
	for (int i = 0; i < 300; i += 2)
		cancel_map_remove(m, handles[i]);
	for (int i = 0; i < 300; i++)
		assert_int_equal(cancel_map_lookup(m, (uint32_t)(1000 + i), ckeys[i], 32, &t), i % 2);
	cancel_map_free(m);

	/* The largest key protocol 3.2 allows round-trips too. */
	uint8_t big_client[256];

	m = cancel_map_new();
	assert_non_null(cancel_map_issue(m, &owner, 9, skey, 256, big_client));
	assert_true(cancel_map_lookup(m, 9, big_client, 256, &t));
	assert_memory_equal(t.server_key, skey, 256);
	cancel_map_free(m);
}

/* An admin kill reads the target by handle: the same session, server and key. */
static void test_target_by_handle(void **state)
{
	struct cancel_map *m = cancel_map_new();
	struct cancel_target t;
	struct session owner;
	struct addr up;
	uint8_t client_key[4];
	void *h;

	assert_int_equal(addr_parse("127.0.0.1:5432", &up), 0);
	owner = owner_at(SID, &up, NULL);
	h = cancel_map_issue(m, &owner, 4243, server_key, 4, client_key);
	assert_non_null(h);
	cancel_map_target(m, h, &t);
	assert_string_equal(t.session_id, SID);
	assert_int_equal(t.pid, 4243);
	assert_memory_equal(t.server_key, server_key, 4);
	cancel_map_free(m);
}

static void test_rejects_bad_key_lengths(void **state)
{
	struct cancel_map *m = cancel_map_new();
	struct session owner;
	struct addr up;
	uint8_t out[PROTO_CANCEL_KEY_MAX + 1];

	assert_int_equal(addr_parse("127.0.0.1:5432", &up), 0);
	owner = owner_at(SID, &up, NULL);
	assert_null(cancel_map_issue(m, &owner, 1, server_key, 0, out));
	assert_null(cancel_map_issue(m, &owner, 1, out, PROTO_CANCEL_KEY_MAX + 1, out));
	cancel_map_free(m);
}

/* A session on PostgreSQL's Unix socket is cancelled there (the owner's path, read when the
 * cancel comes); a path longer than sun_path holds is refused at issue. */
static void test_unix_upstream_target(void **state)
{
	struct cancel_map *m = cancel_map_new();
	struct cancel_target t;
	struct session owner;
	struct addr up = {0};
	char path[CANCEL_UNIX_PATH_MAX + 1];
	uint8_t skey[32], ckey[32];
	void *h;

	assert_non_null(m);
	for (unsigned i = 0; i < sizeof(skey); i++)
		skey[i] = (uint8_t)(0xa0 + i);
	strcpy(path, "/var/run/postgresql/.s.PGSQL.5432");
	owner = owner_at(SID, &up, path);
	h = cancel_map_issue(m, &owner, 31337, skey, 32, ckey);
	assert_non_null(h);
	assert_true(cancel_map_lookup(m, 31337, ckey, 32, &t));
	assert_string_equal(t.upstream_unix, "/var/run/postgresql/.s.PGSQL.5432");
	assert_memory_equal(t.server_key, skey, 32);
	cancel_map_remove(m, h);

	/* The longest path sun_path holds, and one byte more. */
	memset(path, 'p', CANCEL_UNIX_PATH_MAX - 1);
	path[0] = '/';
	path[CANCEL_UNIX_PATH_MAX - 1] = '\0';
	assert_non_null(cancel_map_issue(m, &owner, 1, skey, 4, ckey));
	assert_true(cancel_map_lookup(m, 1, ckey, 4, &t));
	assert_string_equal(t.upstream_unix, path);
	path[CANCEL_UNIX_PATH_MAX - 1] = 'p';
	path[CANCEL_UNIX_PATH_MAX] = '\0';
	assert_null(cancel_map_issue(m, &owner, 2, skey, 4, ckey));
	cancel_map_free(m); /* before the owner's path goes */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_issued_key_maps_to_server_key),
		cmocka_unit_test(test_wrong_keys_cancel_nothing),
		cmocka_unit_test(test_long_keys_and_many_sessions),
		cmocka_unit_test(test_target_by_handle),
		cmocka_unit_test(test_rejects_bad_key_lengths),
		cmocka_unit_test(test_unix_upstream_target),
	};

	return cmocka_run_group_tests_name("relay_cancel", tests, NULL, NULL);
}
