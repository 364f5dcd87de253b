/*
 * Unit tests for the relay's guard pieces: the pre-login admission limits
 * (relay/admission.h: per source, in total, rate, a table that cannot be flooded), the
 * self-loop registry (relay/selfloop.h, with real loopback sockets) and the log limiter
 * (base/log_limit.h), each with the hostile case first.
 */
#include "base/log_limit.h"
#include "relay/admission.h"
#include "relay/selfloop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define SEC 1000000000ULL

static struct addr ip(const char *text)
{
	struct addr a;

	memset(&a, 0, sizeof(a));
	if (strchr(text, ':')) {
		a.ss.in6.sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &a.ss.in6.sin6_addr), 1);
		a.len = sizeof(a.ss.in6);
	} else {
		a.ss.in4.sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &a.ss.in4.sin_addr), 1);
		a.len = sizeof(a.ss.in4);
	}
	return a;
}

static struct admission_source src_ip(const char *text)
{
	struct admission_source s;
	struct addr a = ip(text);

	admission_source_addr(&s, &a);
	return s;
}

/* One attacker cannot hold more than its share of connections still logging in; others
 * are not affected, and a slot comes back when a connection logs in or closes. */
static void test_per_source_cap(void **state)
{
	struct admission_limits lim = {.prelogin_max = 100, .prelogin_per_source = 3};
	struct admission_source evil = src_ip("192.0.2.66"), good = src_ip("198.51.100.7");
	struct admission *a;

	assert_int_equal(admission_new(64, &a), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(admission_enter(a, &lim, &evil, SEC), ADMISSION_ACCEPT);
	for (int i = 0; i < 1000; i++)
		assert_int_equal(admission_enter(a, &lim, &evil, SEC), ADMISSION_PRELOGIN_SOURCE);
	assert_int_equal(admission_enter(a, &lim, &good, SEC), ADMISSION_ACCEPT);
	assert_int_equal(admission_prelogin(a), 4);
	assert_int_equal(admission_prelogin_of(a, &evil), 3);
	admission_leave(a, &evil);
	assert_int_equal(admission_enter(a, &lim, &evil, SEC), ADMISSION_ACCEPT);
	admission_free(a);
}

static void test_total_cap(void **state)
{
	struct admission_limits lim = {.prelogin_max = 5, .prelogin_per_source = 5};
	struct admission *a;
	char text[32];

	assert_int_equal(admission_new(1024, &a), 0);
	for (int i = 0; i < 5; i++) {
		struct admission_source s;

		snprintf(text, sizeof(text), "10.0.0.%d", i + 1);
		s = src_ip(text);
		assert_int_equal(admission_enter(a, &lim, &s, SEC), ADMISSION_ACCEPT);
	}
	struct admission_source late = src_ip("10.0.1.1");

	assert_int_equal(admission_enter(a, &lim, &late, SEC), ADMISSION_PRELOGIN_TOTAL);
	struct admission_source first = src_ip("10.0.0.1");

	admission_leave(a, &first); /* logged in */
	assert_int_equal(admission_enter(a, &lim, &late, SEC), ADMISSION_ACCEPT);
	admission_free(a);
}

/* A token bucket per source: burst at once, then the rate. */
static void test_rate(void **state)
{
	struct admission_limits lim = {.prelogin_max = 1000, .prelogin_per_source = 1000,
				       .rate_per_sec = 2, .burst = 3};
	struct admission_source s = src_ip("192.0.2.1"), other = src_ip("192.0.2.2");
	struct admission *a;

	assert_int_equal(admission_new(64, &a), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(admission_enter(a, &lim, &s, 10 * SEC), ADMISSION_ACCEPT);
	assert_int_equal(admission_enter(a, &lim, &s, 10 * SEC), ADMISSION_SOURCE_RATE);
	assert_int_equal(admission_enter(a, &lim, &other, 10 * SEC), ADMISSION_ACCEPT);
	/* Half a second later: one token back. */
	assert_int_equal(admission_enter(a, &lim, &s, 10 * SEC + SEC / 2), ADMISSION_ACCEPT);
	assert_int_equal(admission_enter(a, &lim, &s, 10 * SEC + SEC / 2), ADMISSION_SOURCE_RATE);
	/* Leaving does not give tokens back: the rate counts openings, not concurrency. */
	admission_leave(a, &s);
	assert_int_equal(admission_enter(a, &lim, &s, 10 * SEC + SEC / 2), ADMISSION_SOURCE_RATE);
	admission_free(a);
}

/* Who a source is: a local uid, an IPv4 address (also when v4-mapped), an IPv6 /64. */
static void test_sources(void **state)
{
	struct admission_limits lim = {.prelogin_max = 100, .prelogin_per_source = 1};
	struct admission_source a1 = src_ip("2001:db8:1:2::1"), a2 = src_ip("2001:db8:1:2:ffff::9");
	struct admission_source b = src_ip("2001:db8:1:3::1");
	struct admission_source m = src_ip("::ffff:192.0.2.5"), v4 = src_ip("192.0.2.5");
	struct admission_source u1, u2;
	struct admission *a;
	char text[ADMISSION_SOURCE_STRLEN];

	admission_source_uid(&u1, 1000);
	admission_source_uid(&u2, 1001);
	assert_int_equal(admission_new(64, &a), 0);
	assert_int_equal(admission_enter(a, &lim, &a1, SEC), ADMISSION_ACCEPT);
	assert_int_equal(admission_enter(a, &lim, &a2, SEC), ADMISSION_PRELOGIN_SOURCE); /* same /64 */
	assert_int_equal(admission_enter(a, &lim, &b, SEC), ADMISSION_ACCEPT);
	assert_int_equal(admission_enter(a, &lim, &v4, SEC), ADMISSION_ACCEPT);
	assert_int_equal(admission_enter(a, &lim, &m, SEC), ADMISSION_PRELOGIN_SOURCE);
	assert_int_equal(admission_enter(a, &lim, &u1, SEC), ADMISSION_ACCEPT);
	assert_int_equal(admission_enter(a, &lim, &u2, SEC), ADMISSION_ACCEPT);
	assert_int_equal(admission_enter(a, &lim, &u1, SEC), ADMISSION_PRELOGIN_SOURCE);
	assert_string_equal(admission_source_format(&a2, text, sizeof(text)), "2001:db8:1:2::/64");
	assert_string_equal(admission_source_format(&m, text, sizeof(text)), "192.0.2.5");
	assert_string_equal(admission_source_format(&u1, text, sizeof(text)), "uid 1000");
	admission_free(a);
}

/* Sources with connections logging in are never evicted, so a flood of new sources cannot
 * erase an attacker's count; when the table is full of them, new sources are refused as
 * a full house. Idle sources make room again. */
static void test_table_cannot_be_flooded(void **state)
{
	struct admission_limits lim = {.prelogin_max = 100000, .prelogin_per_source = 2};
	struct admission_source evil = src_ip("192.0.2.66"), s;
	unsigned accepted = 0, refused = 0;
	struct admission *a;
	char text[32];

	assert_int_equal(admission_new(64, &a), 0);
	assert_int_equal(admission_enter(a, &lim, &evil, SEC), ADMISSION_ACCEPT);
	assert_int_equal(admission_enter(a, &lim, &evil, SEC), ADMISSION_ACCEPT);
	for (int i = 0; i < 1000; i++) {
		snprintf(text, sizeof(text), "10.%d.%d.1", i / 250, i % 250);
		s = src_ip(text);
		if (admission_enter(a, &lim, &s, SEC) == ADMISSION_ACCEPT)
			accepted++;
		else
			refused++;
	}
	assert_true(accepted <= 63);
	assert_true(refused >= 937);
	/* The attacker's own count survived the flood. */
	assert_int_equal(admission_prelogin_of(a, &evil), 2);
	assert_int_equal(admission_enter(a, &lim, &evil, SEC), ADMISSION_PRELOGIN_SOURCE);
	admission_free(a);
}

struct worker_arg {
	struct admission *a;
	int id;
};

static void *enter_leave(void *p)
{
	struct worker_arg *w = p;
	struct admission_limits lim = {.prelogin_max = 1000000, .prelogin_per_source = 1000000};
	struct admission_source s;

	admission_source_uid(&s, (uint32_t)(w->id % 3));
	for (int i = 0; i < 20000; i++) {
		if (admission_enter(w->a, &lim, &s, SEC + (uint64_t)i) == ADMISSION_ACCEPT)
			admission_leave(w->a, &s);
	}
	return NULL;
}

static void test_threads(void **state)
{
	pthread_t t[4];
	struct worker_arg args[4];
	struct admission *a;

	assert_int_equal(admission_new(64, &a), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct worker_arg){a, i};
		assert_int_equal(pthread_create(&t[i], NULL, enter_leave, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(admission_prelogin(a), 0);
	admission_free(a);
}

/* ---- selfloop, with loopback sockets ---- */

static int listen_any(struct addr *a)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	*a = ip("127.0.0.1");
	assert_int_equal(bind(fd, &a->ss.sa, a->len), 0);
	assert_int_equal(listen(fd, 8), 0);
	a->len = sizeof(a->ss);
	assert_int_equal(getsockname(fd, &a->ss.sa, &a->len), 0);
	return fd;
}

static int accept_addrs(int lfd, struct addr *peer, struct addr *local)
{
	int fd;

	peer->len = sizeof(peer->ss);
	fd = accept(lfd, &peer->ss.sa, &peer->len);
	assert_true(fd >= 0);
	local->len = sizeof(local->ss);
	assert_int_equal(getsockname(fd, &local->ss.sa, &local->len), 0);
	return fd;
}

static void test_selfloop_recognises_its_own(void **state)
{
	struct selfloop *s;
	struct selfloop_entry *e;
	struct addr l, peer, local, any;
	int lfd = listen_any(&l), up, afd, other, ofd;

	assert_int_equal(selfloop_new(&s), 0);
	/* The relay's upstream socket connects to "itself" (its listener). */
	up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(up, &l.ss.sa, l.len), 0);
	e = selfloop_add(s, up, &l);
	assert_non_null(e);
	afd = accept_addrs(lfd, &peer, &local);
	assert_true(selfloop_is_own(s, &peer, &local));
	/* A client that is not ours is not. */
	other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(other, &l.ss.sa, l.len), 0);
	ofd = accept_addrs(lfd, &peer, &local);
	assert_false(selfloop_is_own(s, &peer, &local));
	close(ofd);
	close(other);
	selfloop_forget(s, e);
	close(afd);
	close(up);
	assert_int_equal(selfloop_count(s), 0);

	/* Dialled as 0.0.0.0: the kernel takes it to 127.0.0.1, and so does the registry. */
	any = ip("0.0.0.0");
	any.ss.in4.sin_port = l.ss.in4.sin_port;
	up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(connect(up, &any.ss.sa, any.len), 0);
	e = selfloop_add(s, up, &any);
	afd = accept_addrs(lfd, &peer, &local);
	assert_true(selfloop_is_own(s, &peer, &local));
	selfloop_forget(s, e);
	assert_false(selfloop_is_own(s, &peer, &local));
	close(afd);
	close(up);
	close(lfd);
	selfloop_free(s);
}

/* The kernel reuses a local port for connections to different destinations: a client that
 * shares its local endpoint with one of our upstream sockets is not one of ours. */
static void test_selfloop_shared_port_is_not_a_loop(void **state)
{
	struct selfloop *s;
	struct selfloop_entry *e;
	struct addr l1, l2, mine, peer, local;
	int one = 1, lfd1 = listen_any(&l1), lfd2 = listen_any(&l2), up, cl, a1, a2;

	assert_int_equal(selfloop_new(&s), 0);
	up = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	cl = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(setsockopt(up, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	assert_int_equal(setsockopt(cl, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	mine = ip("127.0.0.1");
	assert_int_equal(bind(up, &mine.ss.sa, mine.len), 0);
	mine.len = sizeof(mine.ss);
	assert_int_equal(getsockname(up, &mine.ss.sa, &mine.len), 0);
	assert_int_equal(bind(cl, &mine.ss.sa, mine.len), 0); /* the same local endpoint */
	assert_int_equal(connect(up, &l1.ss.sa, l1.len), 0);  /* ours, to the "server" */
	assert_int_equal(connect(cl, &l2.ss.sa, l2.len), 0);  /* someone else's, to us */
	e = selfloop_add(s, up, &l1);
	assert_non_null(e);
	a1 = accept_addrs(lfd1, &peer, &local);
	a2 = accept_addrs(lfd2, &peer, &local);
	assert_false(selfloop_is_own(s, &peer, &local));
	selfloop_forget(s, e);
	close(a1);
	close(a2);
	close(up);
	close(cl);
	close(lfd1);
	close(lfd2);
	selfloop_free(s);
}

/* ---- log_limit ---- */

static void test_log_limit(void **state)
{
	struct log_limit l = LOG_LIMIT_INIT(3, 1000);
	uint64_t suppressed = 99;

	for (int i = 0; i < 3; i++) {
		assert_true(log_limit_allow(&l, SEC + (uint64_t)i, &suppressed));
		assert_int_equal(suppressed, 0);
	}
	for (int i = 0; i < 5000; i++)
		assert_false(log_limit_allow(&l, SEC + 10 + (uint64_t)i, &suppressed));
	/* The next interval: allowed again, with the count of what was held back. */
	assert_true(log_limit_allow(&l, 2 * SEC + 1, &suppressed));
	assert_int_equal(suppressed, 5000);
	assert_true(log_limit_allow(&l, 2 * SEC + 2, &suppressed));
	assert_int_equal(suppressed, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_per_source_cap),
		cmocka_unit_test(test_total_cap),
		cmocka_unit_test(test_rate),
		cmocka_unit_test(test_sources),
		cmocka_unit_test(test_table_cannot_be_flooded),
		cmocka_unit_test(test_threads),
		cmocka_unit_test(test_selfloop_recognises_its_own),
		cmocka_unit_test(test_selfloop_shared_port_is_not_a_loop),
		cmocka_unit_test(test_log_limit),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
