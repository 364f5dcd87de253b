/*
 * test_mask_catconn: pgwarden's catalog connection (mask_catconn.h) against hostile fake
 * servers on loopback: a server that asks for a cleartext password, one that sends bytes
 * that are not the protocol, one that never answers, one whose result is not the catalog
 * query's shape, one whose message is larger than the bound. Each must fail the resolution
 * (logged, retried later), publish nothing, and return within the time budget.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "mask/mask_catalog.h"
#include "mask/mask_catconn.h"
#include "mask/mask_rules.h"
#include "proto/proto.h"

struct fake {
	int lfd;
	struct addr at;
	const uint8_t *script;
	size_t script_len;
	bool hold; /* keep the connection open after the script (the client must give up) */
	pthread_t th;
};

static void *serve(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->lfd, NULL, NULL);
	uint8_t buf[4096];

	if (fd < 0)
		return NULL;
	(void)!recv(fd, buf, sizeof(buf), 0); /* the StartupMessage */
	if (f->script_len)
		(void)!send(fd, f->script, f->script_len, MSG_NOSIGNAL);
	if (f->hold)
		while (recv(fd, buf, sizeof(buf), 0) > 0)
			;
	close(fd);
	return NULL;
}

static void fake_start(struct fake *f, const uint8_t *script, size_t n, bool hold)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sin);

	memset(f, 0, sizeof(*f));
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(f->lfd, 4), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&sin, &len), 0);
	memcpy(&f->at.ss, &sin, sizeof(sin));
	f->at.len = sizeof(sin);
	f->script = script;
	f->script_len = n;
	f->hold = hold;
	assert_int_equal(pthread_create(&f->th, NULL, serve, f), 0);
}

static void fake_stop(struct fake *f)
{
	shutdown(f->lfd, SHUT_RDWR);
	close(f->lfd);
	pthread_join(f->th, NULL);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One resolution against the fake: its result, and how long it took. */
static int resolve_against(struct fake *f, uint64_t *took)
{
	struct mask_catconn_settings cs = {.upstream = f->at, .user = "catalog",
					   .database = "app", .timeout_ms = 300};
	char err[256];
	uint64_t t0 = now_ms();
	int rc;

	assert_int_equal(mask_catconn_configure(&cs, err, sizeof(err)), 0);
	rc = mask_catconn_wait(5000);
	*took = now_ms() - t0;
	return rc;
}

static int setup(void **state)
{
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *p;
	char err[256];

	assert_non_null(mp);
	assert_int_equal(mask_policy_add_profile(mp, "support", &p), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.ssn", "null", err, sizeof(err)), 0);
	mask_policy_seal(mp);
	mask_rules_publish(mp);
	assert_int_equal(mask_catconn_start(), 0);
	return 0;
}

static int teardown(void **state)
{
	mask_catconn_stop();
	mask_rules_publish(NULL);
	mask_catalog_publish(NULL);
	return 0;
}

static void expect_failure(const uint8_t *script, size_t n, bool hold, uint64_t max_ms)
{
	struct fake f;
	uint64_t took, ok0, failed0, ok1, failed1;

	mask_catconn_counts(&ok0, &failed0);
	fake_start(&f, script, n, hold);
	assert_int_equal(resolve_against(&f, &took), -EIO);
	mask_catconn_counts(&ok1, &failed1);
	assert_int_equal(ok1, ok0);
	assert_true(failed1 > failed0);
	assert_null(mask_catalog_acquire()); /* nothing published */
	assert_true(took <= max_ms);
	fake_stop(&f);
}

static void test_cleartext_password_is_refused(void **state)
{
	uint8_t m[16];
	int n = proto_write_auth(m, sizeof(m), AUTH_REQ_PASSWORD, NULL, 0);

	assert_true(n > 0);
	expect_failure(m, (size_t)n, true, 2000);
}

static void test_md5_is_refused(void **state)
{
	uint8_t m[16];
	int n = proto_write_auth(m, sizeof(m), AUTH_REQ_MD5, (const uint8_t *)"salt", 4);

	assert_true(n > 0);
	expect_failure(m, (size_t)n, true, 2000);
}

static void test_scram_without_a_password_is_refused(void **state)
{
	static const uint8_t mechs[] = "SCRAM-SHA-256\0";
	uint8_t m[64];
	int n = proto_write_auth(m, sizeof(m), AUTH_REQ_SASL, mechs, sizeof(mechs));

	assert_true(n > 0);
	expect_failure(m, (size_t)n, true, 2000);
}

static void test_garbage_is_refused(void **state)
{
	static const uint8_t junk[] = "HTTP/1.1 400 Bad Request\r\n\r\n";

	expect_failure(junk, sizeof(junk) - 1, true, 2000);
}

static void test_silent_server_times_out(void **state)
{
	expect_failure(NULL, 0, true, 2000); /* timeout_ms is 300 */
}

static void test_oversized_message_is_refused(void **state)
{
	/* AuthenticationOk, then a NoticeResponse claiming 64 MiB */
	static const uint8_t m[] = {'R', 0, 0, 0, 8, 0, 0, 0, 0, 'N', 0x04, 0, 0, 0};

	expect_failure(m, sizeof(m), true, 2000);
}

static void test_result_of_another_shape_is_refused(void **state)
{
	/* trust, ReadyForQuery, then a one-column result, CommandComplete, ReadyForQuery */
	uint8_t m[256];
	size_t n = 0;
	static const uint8_t rowdesc[] = {'T', 0, 0, 0, 29, 0, 1, 'x', 0, 0, 0, 0, 0, 0, 0,
					  0, 0, 0, 25, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0};
	int w;

	w = proto_write_auth(m + n, sizeof(m) - n, AUTH_REQ_OK, NULL, 0);
	n += (size_t)w;
	w = proto_write_ready(m + n, sizeof(m) - n, 'I');
	n += (size_t)w;
	memcpy(m + n, rowdesc, sizeof(rowdesc));
	m[n + 4] = (uint8_t)(sizeof(rowdesc) - 1);
	n += sizeof(rowdesc);
	memcpy(m + n, "C\0\0\0\015SELECT 0\0", 14);
	n += 14;
	w = proto_write_ready(m + n, sizeof(m) - n, 'I');
	n += (size_t)w;
	expect_failure(m, n, true, 2000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cleartext_password_is_refused),
		cmocka_unit_test(test_md5_is_refused),
		cmocka_unit_test(test_scram_without_a_password_is_refused),
		cmocka_unit_test(test_garbage_is_refused),
		cmocka_unit_test(test_silent_server_times_out),
		cmocka_unit_test(test_oversized_message_is_refused),
		cmocka_unit_test(test_result_of_another_shape_is_refused),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
