/*
 * test_mask_catconn: pgwarden's catalog connection (mask_catconn.h) against hostile fake
 * servers on loopback: a server that asks for a cleartext password, one that sends bytes
 * that are not the protocol, one that never answers, one whose result is not the catalog
 * query's shape, one whose message is larger than the bound. Each must fail the resolution
 * (logged, retried later), publish nothing, and return within the time budget. Under
 * tls.server.mode require, servers that refuse TLS, answer the SSLRequest with an error, or
 * slip plaintext in after their 'S' (CVE-2021-23222) fail it the same way, before any
 * login. And the schedule of resolutions the thread makes by itself: the periodic refresh
 * after a catalog read, the back-off after a failure.
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
#include "tls/tls.h"

struct fake {
	int lfd;
	struct addr at;
	const uint8_t *script;
	size_t script_len;
	bool hold; /* keep the connection open after the script (the client must give up) */
	pthread_t th;
	uint8_t first[16]; /* the start of what the client sent first */
	size_t first_len;
};

static void *serve(void *arg)
{
	struct fake *f = arg;
	int fd = accept(f->lfd, NULL, NULL);
	uint8_t buf[4096];

	if (fd < 0)
		return NULL;
	ssize_t r = recv(fd, buf, sizeof(buf), 0); /* the StartupMessage, or an SSLRequest */

	if (r > 0) {
		f->first_len = (size_t)r < sizeof(f->first) ? (size_t)r : sizeof(f->first);
		memcpy(f->first, buf, f->first_len);
	}
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

static struct tls_snapshot *tls; /* tls.server.* of the next resolutions; NULL: plaintext */

/* One resolution against the fake: its result, and how long it took. */
static int resolve_against(struct fake *f, uint64_t *took)
{
	struct mask_catconn_settings cs = {.upstream = f->at, .user = "catalog",
					   .database = "app", .tls = tls, .timeout_ms = 300};
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

static void expect_failure_of(struct fake *out, const uint8_t *script, size_t n, bool hold,
			      uint64_t max_ms)
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
	if (out)
		*out = f;
}

static void expect_failure(const uint8_t *script, size_t n, bool hold, uint64_t max_ms)
{
	expect_failure_of(NULL, script, n, hold, max_ms);
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

/* ---- tls.server.mode require --------------------------------------------------------- */

static void use_tls_mode(const char *mode)
{
	struct config *cfg = config_new();
	char err[CONFIG_ERR_MAX];

	assert_non_null(cfg);
	assert_int_equal(config_set(cfg, "listen", "127.0.0.1:6432", err, sizeof(err)), 0);
	assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:5432", err, sizeof(err)), 0);
	assert_int_equal(config_set(cfg, "tls.server.mode", mode, err, sizeof(err)), 0);
	tls_snapshot_unref(tls);
	tls = NULL;
	if (tls_snapshot_build(cfg, &tls, err, sizeof(err)))
		fail_msg("%s", err);
	config_unref(cfg);
}

static int plaintext_again(void **state)
{
	tls_snapshot_unref(tls);
	tls = NULL;
	return 0;
}

/* The catalog role's login must not leave in clear: the SSLRequest comes first. */
static void expect_ssl_request_then_failure(const uint8_t *script, size_t n)
{
	uint8_t req[8];
	struct fake f;

	use_tls_mode("require");
	expect_failure_of(&f, script, n, true, 2000);
	assert_int_equal(proto_write_ssl_request(req, sizeof(req)), (int)sizeof(req));
	assert_int_equal(f.first_len, sizeof(req)); /* nothing after it, no StartupMessage */
	assert_memory_equal(f.first, req, sizeof(req));
}

static void test_require_refuses_a_server_without_tls(void **state)
{
	expect_ssl_request_then_failure((const uint8_t *)"N", 1);
}

static void test_require_refuses_an_error_to_the_ssl_request(void **state)
{
	/* a server from before SSLRequest, or one in the middle pretending to be */
	static const uint8_t m[] = "EFATAL: unsupported frontend protocol";

	expect_ssl_request_then_failure(m, sizeof(m));
}

static void test_plaintext_after_the_s_is_an_injection(void **state)
{
	/* 'S', then an AuthenticationOk and ReadyForQuery that no TLS record carried */
	static const uint8_t m[] = {'S', 'R', 0, 0, 0, 8, 0, 0, 0, 0, 'Z', 0, 0, 0, 5, 'I'};

	expect_ssl_request_then_failure(m, sizeof(m));
}

/* ---- the schedule ----------------------------------------------------------------------- */

static void test_refresh_follows_a_read_catalog(void **state)
{
	struct mask_catconn_schedule s = {0};

	mask_catconn_schedule_next(&s, MASK_CATCONN_READ, 1000, 60000);
	assert_int_equal(s.due_ms, 61000);
	mask_catconn_schedule_next(&s, MASK_CATCONN_READ, 61500, 60000);
	assert_int_equal(s.due_ms, 121500); /* from the end of the last one, not a fixed beat */
	mask_catconn_schedule_next(&s, MASK_CATCONN_READ, 2000, 0);
	assert_int_equal(s.due_ms, 0); /* 0: off */
}

static void test_failure_backs_off_then_refresh_resumes(void **state)
{
	static const uint64_t backoff[] = {1000, 2000, 4000, 8000, 16000, 30000, 30000};
	struct mask_catconn_schedule s = {0};
	uint64_t now = 5000;

	/* A refresh of 1 s does not make a failing server asked every second. */
	for (size_t i = 0; i < sizeof(backoff) / sizeof(backoff[0]); i++) {
		mask_catconn_schedule_next(&s, MASK_CATCONN_FAILED, now, 1000);
		assert_int_equal(s.retry_ms, backoff[i]);
		assert_int_equal(s.due_ms, now + backoff[i]);
		now = s.due_ms;
	}
	mask_catconn_schedule_next(&s, MASK_CATCONN_READ, now, 1000);
	assert_int_equal(s.due_ms, now + 1000);
	mask_catconn_schedule_next(&s, MASK_CATCONN_FAILED, now, 1000);
	assert_int_equal(s.retry_ms, 1000); /* the back-off starts over */
}

static void test_nothing_to_read_schedules_nothing(void **state)
{
	struct mask_catconn_schedule s = {.retry_ms = 4000, .due_ms = 9000};

	mask_catconn_schedule_next(&s, MASK_CATCONN_LOCAL, 10000, 60000);
	assert_int_equal(s.due_ms, 0);
	s = (struct mask_catconn_schedule){.retry_ms = 4000, .due_ms = 9000};
	mask_catconn_schedule_next(&s, MASK_CATCONN_UNCONFIGURED, 10000, 60000);
	assert_int_equal(s.due_ms, 0);
	assert_int_equal(s.retry_ms, 0);
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
		cmocka_unit_test_teardown(test_require_refuses_a_server_without_tls, plaintext_again),
		cmocka_unit_test_teardown(test_require_refuses_an_error_to_the_ssl_request,
					  plaintext_again),
		cmocka_unit_test_teardown(test_plaintext_after_the_s_is_an_injection,
					  plaintext_again),
		cmocka_unit_test(test_refresh_follows_a_read_catalog),
		cmocka_unit_test(test_failure_backs_off_then_refresh_resumes),
		cmocka_unit_test(test_nothing_to_read_schedules_nothing),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
