/*
 * Unit tests for userspace/relay/server_pool: a kept server is reset before it is handed
 * out, its replay is the login's end as the server last told it, and a server that says
 * anything else, too much, or nothing in time is closed, never handed out. The "server" is
 * the far end of a socketpair that the test writes and reads.
 */
#include "base/clock.h"
#include "relay/server_pool.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

static const uint8_t key[4] = {0x01, 0x02, 0x03, 0x04};

/* The parking session's watch: after the park, the loop reports the leg to the pool. */
static void session_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	fail_msg("a parked leg's event reached the session that left it");
}

static struct loop_watch session_watch = {.cb = session_event};
static const uint8_t startup[] = {0, 0, 0, 17, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0, 'a', 0, 0, 0};

/* A backend message of type with body[0..n) into out; its length. */
static int message(uint8_t *out, size_t cap, uint8_t type, const uint8_t *body, uint32_t n)
{
	assert_true(cap >= PROTO_HEADER_LEN + n);
	out[0] = type;
	proto_write_u32(out + 1, 4 + n);
	memmove(out + PROTO_HEADER_LEN, body, n);
	return (int)(PROTO_HEADER_LEN + n);
}

struct fixture {
	struct loop loop;
	struct server_pool pool;
	struct server_pool_limits lim;
	int server; /* the test's end */
};

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	assert_int_equal(loop_init(&f.loop, NULL, NULL), 0);
	f.loop.now = 1000 * NSEC_PER_MSEC;
	server_pool_init(&f.pool, &f.loop);
	f.lim = (struct server_pool_limits){.max_idle = 2, .idle_ms = 60000,
					    .lifetime_ms = 3600000};
	f.server = -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	server_pool_destroy(&f->pool);
	if (f->server >= 0)
		close(f->server);
	loop_destroy(&f->loop);
	return 0;
}

static struct server_keep *keep_for(const char *upstream, uint64_t born)
{
	struct server_keep *k;

	assert_int_equal(server_keep_new(&k, upstream, startup, sizeof(startup), born), 0);
	return k;
}

/* Park a server whose login reported server_version and TimeZone, over a leg set up under
 * TLS settings tls_generation (0: plaintext); the test keeps the far end in f->server and
 * has read the DISCARD ALL it was sent. */
static void park_leg(struct fixture *f, const char *upstream, uint64_t tls_generation)
{
	struct server_keep *k = keep_for(upstream, f->loop.now);
	struct transport t;
	uint8_t got[64], want[64];
	int sv[2], n;

	assert_int_equal(server_keep_param(k, "server_version", "15.14"), 0);
	assert_int_equal(server_keep_param(k, "TimeZone", "UTC"), 0);
	k->tls_generation = tls_generation;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	transport_sock_init(&t, sv[0], true);
	/* Registered as a session's server leg is when it parks. */
	assert_int_equal(loop_add(&f->loop, &session_watch, sv[0], EPOLLIN | EPOLLOUT), 0);
	assert_int_equal(server_pool_park(&f->pool, &f->lim, &t, k, 4242, key, sizeof(key),
					  f->loop.now),
			 0);
	f->server = sv[1];
	n = proto_write_query(want, sizeof(want), "DISCARD ALL");
	assert_int_equal(read(f->server, got, sizeof(got)), n);
	assert_memory_equal(got, want, (size_t)n);
}

static void park(struct fixture *f, const char *upstream)
{
	park_leg(f, upstream, 0);
}

/* Deliver what the loop has for the pool's sockets. */
static void pump(struct fixture *f)
{
	struct epoll_event ev[8];
	int n = epoll_wait(f->loop.epfd, ev, 8, 50);

	for (int i = 0; i < n; i++) {
		struct loop_watch *w = ev[i].data.ptr;

		w->cb(&f->loop, w, ev[i].events);
	}
}

static void server_says(struct fixture *f, const uint8_t *bytes, size_t n)
{
	assert_int_equal(write(f->server, bytes, n), (ssize_t)n);
	pump(f);
}

/* The reset's answer: CommandComplete, then application_name reported back, then
 * ReadyForQuery 'I'. */
static size_t reset_answer(uint8_t *out, size_t cap)
{
	size_t n = 0;
	int w;

	w = message(out, cap, PqMsg_CommandComplete, (const uint8_t *)"DISCARD ALL", 12);
	assert_true(w > 0);
	n += (size_t)w;
	w = proto_write_parameter_status(out + n, cap - n, "TimeZone", "Europe/Paris");
	assert_true(w > 0);
	n += (size_t)w;
	w = proto_write_ready(out + n, cap - n, 'I');
	assert_true(w > 0);
	return n + (size_t)w;
}

static bool take_accepting(struct fixture *f, const char *upstream,
			   const struct server_pool_accept *acc, uint8_t *login, uint32_t *len)
{
	struct server_keep *want = keep_for(upstream, f->loop.now), *got = NULL;
	struct transport storage, *leg = NULL;
	bool ok = server_pool_take(&f->pool, &f->lim, want, acc, f->loop.now, &storage, &leg,
				   &got, login, SERVER_POOL_LOGIN_MAX, len);

	server_keep_free(want);
	if (ok) {
		assert_non_null(got);
		assert_ptr_equal(leg, &storage); /* a socket leg is copied out */
		server_keep_free(got);
		transport_destroy(leg);
	}
	return ok;
}

/* A session that wants no TLS towards the server. */
static bool take(struct fixture *f, const char *upstream, uint8_t *login, uint32_t *len)
{
	const struct server_pool_accept plain = {.tls_generation = 0, .plain_ok = true};

	return take_accepting(f, upstream, &plain, login, len);
}

static void assert_closed(struct fixture *f)
{
	uint8_t b[64];
	size_t got = 0;
	ssize_t n;

	assert_int_equal(f->pool.nlinks, 0);
	/* Terminate, then the end of stream (or a reset, where the server's bytes were left
	 * unread). */
	while ((n = read(f->server, b + got, sizeof(b) - got)) > 0)
		got += (size_t)n;
	assert_true(n == 0 || errno == ECONNRESET);
	if (got) {
		assert_int_equal(got, 5);
		assert_int_equal(b[0], 'X');
	}
}

/* A freshly kept server answers the reset with bytes[0..n): it must be closed. */
static void assert_answer_closes(struct fixture *f, const uint8_t *bytes, size_t n)
{
	park(f, "127.0.0.1:5432");
	server_says(f, bytes, n);
	assert_closed(f);
	close(f->server);
	f->server = -1;
}

static void test_reset_then_taken_with_replay(void **state)
{
	struct fixture *f = *state;
	uint8_t answer[256], login[SERVER_POOL_LOGIN_MAX], want[512];
	size_t n = reset_answer(answer, sizeof(answer)), w = 0;
	uint32_t len = 0;

	park(f, "127.0.0.1:5432");
	/* Not handed out while it resets. */
	assert_false(take(f, "127.0.0.1:5432", login, &len));
	/* Byte by byte: the reader frames across reads. */
	for (size_t i = 0; i < n; i++)
		server_says(f, answer + i, 1);
	assert_false(take(f, "127.0.0.1:5433", login, &len)); /* another upstream */
	assert_true(take(f, "127.0.0.1:5432", login, &len));
	w += (size_t)proto_write_auth(want, sizeof(want), AUTH_REQ_OK, NULL, 0);
	w += (size_t)proto_write_parameter_status(want + w, sizeof(want) - w, "server_version",
						  "15.14");
	w += (size_t)proto_write_parameter_status(want + w, sizeof(want) - w, "TimeZone",
						  "Europe/Paris");
	w += (size_t)proto_write_backend_key(want + w, sizeof(want) - w, 4242, key, sizeof(key));
	w += (size_t)proto_write_ready(want + w, sizeof(want) - w, 'I');
	assert_int_equal(len, w);
	assert_memory_equal(login, want, w);
	assert_int_equal(f->pool.nlinks, 0);
	assert_int_equal(f->pool.reused, 1);
}

static void test_error_to_reset_closes(void **state)
{
	struct fixture *f = *state;
	uint8_t err[256];
	int n = proto_write_error(err, sizeof(err), "ERROR", "25001",
				  "DISCARD ALL cannot run inside a transaction block");

	assert_answer_closes(f, err, (size_t)n);
}

static void test_wrong_answers_close(void **state)
{
	struct fixture *f = *state;
	uint8_t msg[256];
	int n;

	/* ReadyForQuery before the reset completed. */
	n = proto_write_ready(msg, sizeof(msg), 'I');
	assert_answer_closes(f, msg, (size_t)n);
	/* The reset completed in a transaction block. */
	n = message(msg, sizeof(msg), PqMsg_CommandComplete, (const uint8_t *)"DISCARD ALL", 12);
	n += proto_write_ready(msg + n, sizeof(msg) - (size_t)n, 'T');
	assert_answer_closes(f, msg, (size_t)n);
	/* Another command's completion. */
	n = message(msg, sizeof(msg), PqMsg_CommandComplete, (const uint8_t *)"SELECT 1", 9);
	assert_answer_closes(f, msg, (size_t)n);
	/* Rows: a kept server has no query to answer. */
	n = message(msg, sizeof(msg), PqMsg_DataRow, (const uint8_t *)"\0\0", 2);
	assert_answer_closes(f, msg, (size_t)n);
	/* Garbage. */
	assert_answer_closes(f, (const uint8_t *)"\x00\x01\x02\x03\x04\x05", 6);
}

static void test_oversized_message_closes(void **state)
{
	struct fixture *f = *state;
	static uint8_t big[6000];

	park(f, "127.0.0.1:5432");
	memset(big, 'x', sizeof(big));
	big[sizeof(big) - 1] = 0;
	/* A notice larger than the reader holds: closed, not grown. */
	big[0] = PqMsg_NoticeResponse;
	proto_write_u32(big + 1, sizeof(big) - 1);
	(void)!write(f->server, big, sizeof(big));
	pump(f);
	assert_closed(f);
}

static void test_server_gone_is_never_handed_out(void **state)
{
	struct fixture *f = *state;
	uint8_t answer[256], login[SERVER_POOL_LOGIN_MAX];
	size_t n = reset_answer(answer, sizeof(answer));
	uint8_t fatal[256];
	uint32_t len;
	int e;

	park(f, "127.0.0.1:5432");
	server_says(f, answer, n);
	/* The server's FATAL, not yet reported by the loop: take() looks first. */
	e = proto_write_error(fatal, sizeof(fatal), "FATAL", "57P01",
			      "terminating connection due to administrator command");
	assert_int_equal(write(f->server, fatal, (size_t)e), e);
	assert_false(take(f, "127.0.0.1:5432", login, &len));
	assert_closed(f);
	close(f->server);

	/* Its end of stream, likewise. */
	park(f, "127.0.0.1:5432");
	server_says(f, answer, n);
	shutdown(f->server, SHUT_WR);
	assert_false(take(f, "127.0.0.1:5432", login, &len));
	assert_int_equal(f->pool.nlinks, 0);
}

/* Events the loop fetched in one wait, handed out after whatever came earlier in the
 * batch, then the end of the loop's iteration. */
static void finish_batch(struct fixture *f, const struct epoll_event *ev, int n)
{
	for (int i = 0; i < n; i++) {
		struct loop_watch *w = ev[i].data.ptr;

		w->cb(&f->loop, w, ev[i].events);
	}
	loop_tick(&f->loop, f->loop.now);
}

/*
 * One wait of the loop fetched an event for a kept server, and a client earlier in the
 * same batch took that server, or found it gone and closed it: the event must reach no
 * freed link (ASan reports the use after free).
 */
static void test_event_fetched_before_a_take_or_close(void **state)
{
	struct fixture *f = *state;
	uint8_t answer[256], login[SERVER_POOL_LOGIN_MAX], notice[64];
	size_t n = reset_answer(answer, sizeof(answer));
	struct epoll_event ev[8];
	uint32_t len;
	int k, e;

	/* A notice while idle: the loop has the event, a client takes the server first. */
	park(f, "127.0.0.1:5432");
	server_says(f, answer, n);
	e = message(notice, sizeof(notice), PqMsg_NoticeResponse, (const uint8_t *)"SNOTICE\0", 9);
	assert_int_equal(write(f->server, notice, (size_t)e), e);
	k = epoll_wait(f->loop.epfd, ev, 8, 50);
	assert_int_equal(k, 1);
	assert_true(take(f, "127.0.0.1:5432", login, &len));
	finish_batch(f, ev, k);
	assert_int_equal(f->pool.nlinks, 0);
	close(f->server);

	/* The server's end of stream: the loop has the event, a client's take finds it first
	 * and closes the server. */
	park(f, "127.0.0.1:5432");
	server_says(f, answer, n);
	shutdown(f->server, SHUT_WR);
	k = epoll_wait(f->loop.epfd, ev, 8, 50);
	assert_int_equal(k, 1);
	assert_false(take(f, "127.0.0.1:5432", login, &len));
	finish_batch(f, ev, k);
	assert_closed(f);
}

static void test_idle_timeout_and_lifetime(void **state)
{
	struct fixture *f = *state;
	uint8_t answer[256], login[SERVER_POOL_LOGIN_MAX];
	size_t n = reset_answer(answer, sizeof(answer));
	uint32_t len;

	park(f, "127.0.0.1:5432");
	server_says(f, answer, n);
	loop_tick(&f->loop, f->loop.now + f->lim.idle_ms * NSEC_PER_MSEC + 1);
	assert_closed(f);
	close(f->server);

	/* Older than the lifetime when a client asks: closed, not handed out. */
	park(f, "127.0.0.1:5432");
	server_says(f, answer, n);
	f->loop.now += f->lim.lifetime_ms * NSEC_PER_MSEC;
	assert_false(take(f, "127.0.0.1:5432", login, &len));
	assert_closed(f);
}

static void test_no_answer_to_reset_closes(void **state)
{
	struct fixture *f = *state;

	park(f, "127.0.0.1:5432");
	loop_tick(&f->loop, f->loop.now + 5001 * NSEC_PER_MSEC);
	assert_closed(f);
}

static void test_tls_settings_must_match(void **state)
{
	struct fixture *f = *state;
	uint8_t answer[256], login[SERVER_POOL_LOGIN_MAX];
	size_t n = reset_answer(answer, sizeof(answer));
	const struct server_pool_accept require_tls7 = {.tls_generation = 7, .plain_ok = false};
	const struct server_pool_accept prefer_tls8 = {.tls_generation = 8, .plain_ok = true};
	const struct server_pool_accept prefer_tls7 = {.tls_generation = 7, .plain_ok = true};
	uint32_t len;

	/* A plaintext leg: never to a session that requires TLS. */
	park(f, "127.0.0.1:5432");
	server_says(f, answer, n);
	assert_false(take_accepting(f, "127.0.0.1:5432", &require_tls7, login, &len));
	assert_true(take_accepting(f, "127.0.0.1:5432", &prefer_tls8, login, &len));
	close(f->server);

	/* A TLS leg set up under settings 7: not under 8 (a reload since), even where
	 * plaintext would do; under 7, yes. */
	park_leg(f, "127.0.0.1:5432", 7);
	server_says(f, answer, n);
	assert_false(take_accepting(f, "127.0.0.1:5432", &prefer_tls8, login, &len));
	assert_false(take(f, "127.0.0.1:5432", login, &len));
	assert_true(take_accepting(f, "127.0.0.1:5432", &prefer_tls7, login, &len));
}

static void test_bounds(void **state)
{
	struct fixture *f = *state;
	struct server_keep *k;
	struct transport t;
	char value[SERVER_KEEP_PARAMS_MAX];
	int sv[2];

	/* A full pool keeps no more: the server is told Terminate and closed. */
	park(f, "127.0.0.1:5432");
	close(f->server);
	park(f, "127.0.0.1:5432");
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	transport_sock_init(&t, sv[0], true);
	/* Registered as a session's server leg is when it parks. */
	assert_int_equal(loop_add(&f->loop, &session_watch, sv[0], EPOLLIN | EPOLLOUT), 0);
	assert_int_equal(server_pool_park(&f->pool, &f->lim, &t, keep_for("x", f->loop.now), 1,
					  key, sizeof(key), f->loop.now),
			 -ENOSPC);
	assert_int_equal(f->pool.nlinks, 2);
	assert_int_equal(read(sv[1], value, sizeof(value)), 5);
	assert_int_equal(value[0], 'X');
	close(sv[1]);

	/* Reports replace; too many bytes of them are refused. */
	k = keep_for("x", 0);
	assert_int_equal(server_keep_param(k, "a", "1"), 0);
	assert_int_equal(server_keep_param(k, "b", "2"), 0);
	assert_int_equal(server_keep_param(k, "a", "3"), 0);
	assert_int_equal(k->params_len, 2 * (5 + 4));
	assert_int_equal(k->params[5], 'b');
	assert_int_equal(k->params[9 + 5], 'a');
	assert_int_equal(k->params[9 + 7], '3');
	memset(value, 'v', sizeof(value) - 1);
	value[sizeof(value) - 1] = 0;
	assert_int_equal(server_keep_param(k, "big", value), -E2BIG);
	server_keep_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reset_then_taken_with_replay, setup, teardown),
		cmocka_unit_test_setup_teardown(test_error_to_reset_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wrong_answers_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_oversized_message_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_gone_is_never_handed_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_event_fetched_before_a_take_or_close, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_idle_timeout_and_lifetime, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_answer_to_reset_closes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_settings_must_match, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
