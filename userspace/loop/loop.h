/*
 * loop: one epoll event loop per worker thread, with a timer heap and deferred work.
 *
 * Descriptors are registered once, edge-triggered, for both directions (EPOLLIN | EPOLLOUT
 * | EPOLLRDHUP | EPOLLET): the relay keeps "can read" / "can write" flags itself, so the
 * data path makes no epoll_ctl calls. Timers are a binary min-heap on monotonic time; a
 * timer fires at most once per arming. Deferred callbacks run at the end of the current
 * iteration: that is where connections are freed, so no callback ever sees freed memory.
 *
 * Single-threaded: only the owning thread touches a loop, except loop_wake(), which any
 * thread may call to make loop_run() look at its wake handler.
 */
#ifndef PGWARDEN_LOOP_H
#define PGWARDEN_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;

/* The struct a watch, timer or deferred callback's argument is a member of: how every
 * callback finds its owner. */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct loop_watch {
	int fd;
	void (*cb)(struct loop *loop, struct loop_watch *w, uint32_t events);
};

struct loop_timer {
	uint64_t deadline; /* monotonic ns */
	uint32_t heap_index; /* 0 when not armed */
	void (*cb)(struct loop *loop, struct loop_timer *t);
};

struct loop_deferred {
	struct loop_deferred *next;
	bool queued;
	void (*cb)(struct loop *loop, struct loop_deferred *d);
};

struct loop {
	int epfd;
	int wakefd; /* eventfd */
	bool stopping;
	uint64_t now; /* monotonic ns, refreshed once per iteration */
	struct loop_timer **heap; /* 1-based */
	uint32_t heap_len;
	uint32_t heap_cap;
	struct loop_deferred *deferred;
	struct loop_watch wake_watch;
	/* loop_wake() sets wake_pending and writes the eventfd only while the loop thread is
	 * (about to be) in epoll_wait (asleep): a loop that is running will see the flag before
	 * it sleeps, which saves the waker the write and the loop the wake-up and the read.
	 * Both are sequentially consistent so that one side always sees the other's store. */
	_Atomic bool wake_pending;
	_Atomic bool asleep;
	void (*on_wake)(struct loop *loop);
	void *owner;
};

/* 0 or -errno. on_wake runs on the loop thread after any loop_wake(). */
int loop_init(struct loop *loop, void (*on_wake)(struct loop *), void *owner)
	__attribute__((warn_unused_result));
void loop_destroy(struct loop *loop);

/* Register fd edge-triggered for in, out and peer hang-up. 0 or -errno. */
int loop_add(struct loop *loop, struct loop_watch *w, int fd, uint32_t events)
	__attribute__((warn_unused_result));
/* Forget fd (before close(2)). */
void loop_del(struct loop *loop, struct loop_watch *w);
/* Hand fd, registered with this loop under another watch, to w: its events go to w from
 * the next wait on (one epoll_ctl where loop_del and loop_add make two). 0 or -errno. */
int loop_move(struct loop *loop, struct loop_watch *w, int fd, uint32_t events)
	__attribute__((warn_unused_result));

/* Arm or re-arm t at an absolute monotonic deadline. 0 or -ENOMEM. */
int loop_timer_arm(struct loop *loop, struct loop_timer *t, uint64_t deadline)
	__attribute__((warn_unused_result));
void loop_timer_cancel(struct loop *loop, struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t)
{
	return t->heap_index != 0;
}

/* Run d->cb at the end of this iteration (once, however often queued). */
void loop_defer(struct loop *loop, struct loop_deferred *d);

/* Set the clock to now and run the timers due and the deferred work, without waiting for
 * events: what loop_run() does after each wait, for tests that drive time themselves. */
void loop_tick(struct loop *loop, uint64_t now);

/* Thread-safe: wake the loop and run its on_wake handler. */
void loop_wake(struct loop *loop);

/* Run until loop_stop(). Returns 0 or -errno from epoll_wait. */
int loop_run(struct loop *loop);
void loop_stop(struct loop *loop);

#endif
