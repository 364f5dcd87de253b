/* loop: epoll + timer heap + deferred callbacks (see loop.h). */
#include "loop/loop.h"

#include "base/clock.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 256

static void loop_wake_cb(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	uint64_t v;

	/* Drain the counter; the handler runs once per iteration that finds wake_pending set,
	 * so several wakes collapse into one run (loop_run). */
	while (read(w->fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		;
}

int loop_init(struct loop *loop, void (*on_wake)(struct loop *), void *owner)
{
	int err;

	memset(loop, 0, sizeof(*loop));
	loop->owner = owner;
	loop->on_wake = on_wake;
	loop->now = clock_mono_ns();
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epfd < 0)
		return -errno;
	loop->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (loop->wakefd < 0) {
		err = -errno;
		goto err_close_ep;
	}
	loop->wake_watch.cb = loop_wake_cb;
	err = loop_add(loop, &loop->wake_watch, loop->wakefd, EPOLLIN);
	if (err)
		goto err_close_wake;
	return 0;

err_close_wake:
	close(loop->wakefd);
err_close_ep:
	close(loop->epfd);
	return err;
}

void loop_destroy(struct loop *loop)
{
	close(loop->wakefd);
	close(loop->epfd);
	free(loop->heap);
	loop->heap = NULL;
}

/* Register fd edge-triggered under w (EPOLL_CTL_ADD), or hand it to w (EPOLL_CTL_MOD). */
static int loop_watch_fd(struct loop *loop, int op, struct loop_watch *w, int fd,
			 uint32_t events)
{
	struct epoll_event ev = {.events = events | EPOLLET, .data.ptr = w};

	w->fd = fd;
	if (epoll_ctl(loop->epfd, op, fd, &ev) < 0)
		return -errno;
	return 0;
}

int loop_add(struct loop *loop, struct loop_watch *w, int fd, uint32_t events)
{
	return loop_watch_fd(loop, EPOLL_CTL_ADD, w, fd, events);
}

void loop_del(struct loop *loop, struct loop_watch *w)
{
	epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
}

int loop_move(struct loop *loop, struct loop_watch *w, int fd, uint32_t events)
{
	return loop_watch_fd(loop, EPOLL_CTL_MOD, w, fd, events);
}

/* ---- timer heap ---------------------------------------------------------------- */

static void heap_set(struct loop *loop, uint32_t i, struct loop_timer *t)
{
	loop->heap[i] = t;
	t->heap_index = i;
}

static void heap_up(struct loop *loop, uint32_t i)
{
	struct loop_timer *t = loop->heap[i];

	while (i > 1 && loop->heap[i / 2]->deadline > t->deadline) {
		heap_set(loop, i, loop->heap[i / 2]);
		i /= 2;
	}
	heap_set(loop, i, t);
}

static void heap_down(struct loop *loop, uint32_t i)
{
	struct loop_timer *t = loop->heap[i];

	for (;;) {
		uint32_t c = i * 2;

		if (c > loop->heap_len)
			break;
		if (c + 1 <= loop->heap_len && loop->heap[c + 1]->deadline < loop->heap[c]->deadline)
			c++;
		if (loop->heap[c]->deadline >= t->deadline)
			break;
		heap_set(loop, i, loop->heap[c]);
		i = c;
	}
	heap_set(loop, i, t);
}

void loop_timer_cancel(struct loop *loop, struct loop_timer *t)
{
	uint32_t i = t->heap_index;
	struct loop_timer *last;

	if (!i)
		return;
	t->heap_index = 0;
	last = loop->heap[loop->heap_len--];
	if (last == t)
		return;
	heap_set(loop, i, last);
	heap_up(loop, i);
	heap_down(loop, last->heap_index);
}

int loop_timer_arm(struct loop *loop, struct loop_timer *t, uint64_t deadline)
{
	if (t->heap_index) {
		t->deadline = deadline;
		heap_up(loop, t->heap_index);
		heap_down(loop, t->heap_index);
		return 0;
	}
	if (loop->heap_len + 1 >= loop->heap_cap) {
		uint32_t cap = loop->heap_cap ? loop->heap_cap * 2 : 64;
		struct loop_timer **h = realloc(loop->heap, cap * sizeof(*h));

		if (!h)
			return -ENOMEM;
		loop->heap = h;
		loop->heap_cap = cap;
	}
	t->deadline = deadline;
	loop->heap_len++;
	heap_set(loop, loop->heap_len, t);
	heap_up(loop, loop->heap_len);
	return 0;
}

static int loop_next_timeout_ms(const struct loop *loop)
{
	uint64_t d;

	if (loop->deferred)
		return 0;
	if (!loop->heap_len)
		return -1;
	d = loop->heap[1]->deadline;
	if (d <= loop->now)
		return 0;
	/* Round up so a timer never fires early and spins. */
	d = (d - loop->now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC;
	return d > 60000 ? 60000 : (int)d;
}

static void loop_run_timers(struct loop *loop)
{
	while (loop->heap_len && loop->heap[1]->deadline <= loop->now) {
		struct loop_timer *t = loop->heap[1];

		loop_timer_cancel(loop, t);
		t->cb(loop, t);
	}
}

/* ---- deferred ------------------------------------------------------------------- */

void loop_defer(struct loop *loop, struct loop_deferred *d)
{
	if (d->queued)
		return;
	d->queued = true;
	d->next = loop->deferred;
	loop->deferred = d;
}

static void loop_run_deferred(struct loop *loop)
{
	while (loop->deferred) {
		struct loop_deferred *d = loop->deferred;

		loop->deferred = d->next;
		d->queued = false;
		d->cb(loop, d);
	}
}

void loop_tick(struct loop *loop, uint64_t now)
{
	loop->now = now;
	loop_run_timers(loop);
	loop_run_deferred(loop);
}

void loop_wake(struct loop *loop)
{
	uint64_t one = 1;
	ssize_t r;

	atomic_store(&loop->wake_pending, true);
	/* Awake: it checks wake_pending before it next sleeps (loop_run). A loop that went to
	 * sleep after this load saw the flag in its own check and did not block. */
	if (!atomic_load(&loop->asleep))
		return;
	r = write(loop->wakefd, &one, sizeof(one));
	(void)r; /* EAGAIN means the counter is already non-zero: the loop will wake. */
}

void loop_stop(struct loop *loop)
{
	loop->stopping = true;
}

/*
 * Not epoll_wait(): it is a cancellation point, and in a threaded process glibc switches
 * asynchronous cancellation on and off around it (two atomic updates, some 30 instructions a
 * wakeup, several wakeups per transaction). Nothing cancels a loop's thread (pgwarden never
 * calls pthread_cancel), so the system call is made directly, as transport_sock.c does for
 * recv and send. epoll_pwait without a signal mask is epoll_wait, and exists on every
 * architecture (arm64 has no epoll_wait).
 */
static int loop_epoll_wait(int epfd, struct epoll_event *events, int max, int timeout_ms)
{
	return (int)syscall(SYS_epoll_pwait, epfd, events, max, timeout_ms, NULL, _NSIG / 8);
}

int loop_run(struct loop *loop)
{
	struct epoll_event events[LOOP_MAX_EVENTS];

	while (!loop->stopping) {
		int timeout = loop_next_timeout_ms(loop), n;

		atomic_store(&loop->asleep, true);
		if (atomic_load(&loop->wake_pending))
			timeout = 0; /* a wake came while running: look, do not sleep */
		n = loop_epoll_wait(loop->epfd, events, LOOP_MAX_EVENTS, timeout);
		atomic_store_explicit(&loop->asleep, false, memory_order_relaxed);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		loop->now = clock_mono_ns();
		for (int i = 0; i < n; i++) {
			struct loop_watch *w = events[i].data.ptr;

			w->cb(loop, w, events[i].events);
		}
		if (atomic_exchange(&loop->wake_pending, false) && loop->on_wake)
			loop->on_wake(loop);
		loop_run_timers(loop);
		loop_run_deferred(loop);
	}
	return 0;
}
