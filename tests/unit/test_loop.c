/* Unit tests for userspace/loop: timer heap order, re-arm, cancel, deferred work, moving an
 * fd between watches, wake. */
#include "base/clock.h"
#include "loop/loop.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#define NTIMERS 200

static int fired_order[NTIMERS];
static int nfired;
static struct loop_timer timers[NTIMERS];

static void record_fire(struct loop *loop, struct loop_timer *t)
{
	fired_order[nfired++] = (int)(t - timers);
	if (nfired == NTIMERS)
		loop_stop(loop);
}

/* Timers armed in a scrambled order fire in deadline order, each exactly once. */
static void test_timers_fire_in_order(void **state)
{
	struct loop loop;
	uint64_t base;

	assert_int_equal(loop_init(&loop, NULL, NULL), 0);
	base = clock_mono_ns();
	nfired = 0;
	for (int i = 0; i < NTIMERS; i++) {
		int slot = (i * 7919) % NTIMERS; /* scrambled arming order */

		timers[slot].cb = record_fire;
		timers[slot].heap_index = 0;
		assert_int_equal(loop_timer_arm(&loop, &timers[slot], base + (uint64_t)slot * 1000), 0);
	}
	assert_int_equal(loop_run(&loop), 0);
	assert_int_equal(nfired, NTIMERS);
	for (int i = 0; i < NTIMERS; i++)
		assert_int_equal(fired_order[i], i);
	loop_destroy(&loop);
}

static void test_timer_cancel_and_rearm(void **state)
{
	struct loop loop;
	uint64_t now = clock_mono_ns();

	assert_int_equal(loop_init(&loop, NULL, NULL), 0);
	nfired = 0;
	for (int i = 0; i < 3; i++) {
		timers[i].cb = record_fire;
		timers[i].heap_index = 0;
	}
	assert_int_equal(loop_timer_arm(&loop, &timers[0], now + 1000), 0);
	assert_int_equal(loop_timer_arm(&loop, &timers[1], now + 2000), 0);
	assert_int_equal(loop_timer_arm(&loop, &timers[2], now + 3000), 0);
	loop_timer_cancel(&loop, &timers[1]);
	assert_false(loop_timer_armed(&timers[1]));
	loop_timer_cancel(&loop, &timers[1]); /* twice is harmless */
	/* Re-arm the first one later than the last: order must follow. */
	assert_int_equal(loop_timer_arm(&loop, &timers[0], now + 4000), 0);
	assert_int_equal(loop.heap_len, 2);
	assert_ptr_equal(loop.heap[1], &timers[2]);
	loop_timer_cancel(&loop, &timers[0]);
	loop_timer_cancel(&loop, &timers[2]);
	assert_int_equal(loop.heap_len, 0);
	loop_destroy(&loop);
}

static int deferred_runs;

static void deferred_cb(struct loop *loop, struct loop_deferred *d)
{
	deferred_runs++;
	loop_stop(loop);
}

static void test_defer_runs_once(void **state)
{
	struct loop loop;
	struct loop_deferred d = {.cb = deferred_cb};

	assert_int_equal(loop_init(&loop, NULL, NULL), 0);
	deferred_runs = 0;
	loop_defer(&loop, &d);
	loop_defer(&loop, &d); /* queued once, however often asked */
	assert_int_equal(loop_run(&loop), 0);
	assert_int_equal(deferred_runs, 1);
	loop_destroy(&loop);
}

static struct loop_watch *seen_by;

static void note_watch(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	seen_by = w;
	loop_stop(loop);
}

static void give_up(struct loop *loop, struct loop_timer *t)
{
	loop_stop(loop);
}

/* A moved fd's events go to its new watch; moving an fd the loop does not have fails. */
static void test_move_hands_the_fd_to_another_watch(void **state)
{
	struct loop_watch first = {.cb = note_watch}, second = {.cb = note_watch};
	struct loop_timer deadline = {.cb = give_up};
	struct loop loop;
	int sv[2];

	assert_int_equal(loop_init(&loop, NULL, NULL), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	assert_int_equal(loop_add(&loop, &first, sv[0], EPOLLIN), 0);
	assert_int_equal(loop_move(&loop, &second, sv[0], EPOLLIN), 0);
	assert_int_equal(second.fd, sv[0]);
	assert_int_equal(write(sv[1], "x", 1), 1);
	seen_by = NULL;
	assert_int_equal(loop_timer_arm(&loop, &deadline, clock_mono_ns() + 5 * NSEC_PER_SEC), 0);
	assert_int_equal(loop_run(&loop), 0);
	assert_ptr_equal(seen_by, &second);
	loop_timer_cancel(&loop, &deadline);
	assert_int_equal(loop_move(&loop, &first, sv[1], EPOLLIN), -ENOENT);
	close(sv[0]);
	close(sv[1]);
	loop_destroy(&loop);
}

static int wakes;

static void on_wake(struct loop *loop)
{
	wakes++;
	loop_stop(loop);
}

static void test_wake_runs_handler(void **state)
{
	struct loop loop;

	assert_int_equal(loop_init(&loop, on_wake, NULL), 0);
	wakes = 0;
	loop_wake(&loop);
	loop_wake(&loop); /* several wakes collapse into one handler run */
	assert_int_equal(loop_run(&loop), 0);
	assert_int_equal(wakes, 1);
	loop_destroy(&loop);
}

/* A wake asked for while the loop runs (from one of its own callbacks, as a stage's wake
 * from the worker itself) must run the handler without the eventfd: nothing written. */
static int counter_readable;

static void wake_from_inside(struct loop *loop, struct loop_deferred *d)
{
	struct pollfd p = {.fd = loop->wakefd, .events = POLLIN};

	loop_wake(loop);
	/* Still running: the counter must be untouched (looked at, not read). */
	counter_readable = poll(&p, 1, 0);
}

static void test_wake_while_running_writes_nothing(void **state)
{
	struct loop loop;
	struct loop_deferred d = {.cb = wake_from_inside};

	assert_int_equal(loop_init(&loop, on_wake, NULL), 0);
	wakes = 0;
	counter_readable = -1;
	loop_defer(&loop, &d);
	assert_int_equal(loop_run(&loop), 0);
	assert_int_equal(counter_readable, 0);
	assert_int_equal(wakes, 1);
	loop_destroy(&loop);
}

/* A wake from another thread while the loop sleeps in epoll_wait (no timers: forever) must
 * end the sleep. Repeated so that the wake races the loop's way into the sleep too. */
static void *waker_main(void *arg)
{
	struct loop *loop = arg;

	while (!atomic_load(&loop->asleep))
		sched_yield();
	loop_wake(loop);
	return NULL;
}

static void test_wake_from_another_thread(void **state)
{
	for (int i = 0; i < 2000; i++) {
		struct loop loop;
		pthread_t th;

		assert_int_equal(loop_init(&loop, on_wake, NULL), 0);
		wakes = 0;
		assert_int_equal(pthread_create(&th, NULL, waker_main, &loop), 0);
		assert_int_equal(loop_run(&loop), 0);
		assert_int_equal(pthread_join(th, NULL), 0);
		assert_int_equal(wakes, 1);
		loop_destroy(&loop);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timers_fire_in_order),
		cmocka_unit_test(test_timer_cancel_and_rearm),
		cmocka_unit_test(test_defer_runs_once),
		cmocka_unit_test(test_move_hands_the_fd_to_another_watch),
		cmocka_unit_test(test_wake_runs_handler),
		cmocka_unit_test(test_wake_while_running_writes_nothing),
		cmocka_unit_test(test_wake_from_another_thread),
	};

	return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
