/* worker: one thread, one loop, its listeners and its connections (see worker.h). */
#include "relay/worker.h"

#include "base/log.h"
#include "relay/conn.h"
#include "relay/relay.h"
#include "relay/handover.h"     /* listeners handed over by a predecessor */
#include "relay/session_kill.h" /* kill: cancel on the server, then terminate */
#include "steer/steer_origin.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define WORKER_POOL_MAX_FREE 8 /* pooled buffers kept per worker beyond those in use */
#define WORKER_ACCEPT_RETRY_NS (100 * 1000 * 1000ULL)
#define WORKER_LISTEN_BACKLOG 4096
void worker_conn_link(struct worker *w, struct conn *c)
{
	pthread_mutex_lock(&w->lock);
	c->prev = NULL;
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->nconns++;
	pthread_mutex_unlock(&w->lock);
}

static void worker_maybe_finish(struct worker *w)
{
	if (w->draining && w->nconns == 0)
		loop_stop(&w->loop);
}

void worker_conn_unlink(struct worker *w, struct conn *c)
{
	pthread_mutex_lock(&w->lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	w->nconns--;
	pthread_mutex_unlock(&w->lock);
	worker_maybe_finish(w);
}

/*
 * The relay's flag, not only the worker's own: a restart sets it before its reply goes out,
 * and a worker learns it only when it handles its DRAIN command. A client that dials after
 * the reply must reach the successor, which watches the same listening sockets.
 */
static bool worker_accepting(const struct worker *w)
{
	return !w->draining && !__atomic_load_n(&w->relay->draining, __ATOMIC_ACQUIRE);
}

static void worker_accept(struct worker *w, struct worker_listener *l)
{
	while (worker_accepting(w)) {
		struct addr peer = {.len = sizeof(peer.ss)};
		int fd = accept4(l->fd, &peer.ss.sa, &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			conn_accept(w, l, fd, &peer.ss.sa, peer.len);
			continue;
		}
		switch (errno) {
		case EINTR:
		case ECONNABORTED:
		/* accept(2): errors of the pending connection itself; the next one may be fine. */
		case EPROTO:
		case ENETDOWN:
		case ENOPROTOOPT:
		case EHOSTDOWN:
		case ENONET:
		case EHOSTUNREACH:
		case EOPNOTSUPP:
		case ENETUNREACH:
		case EPERM:
			continue;
		case EAGAIN:
			return;
		case EMFILE:
		case ENFILE:
		case ENOBUFS:
		case ENOMEM:
			/* Edge-triggered: the backlog will not signal again, so come back on a
			 * timer instead of leaving clients hanging in it. */
			log_warn("accept", "worker=%u out of descriptors or memory (%s); retrying in 100ms",
				 w->id, strerror(errno));
			if (loop_timer_arm(&w->loop, &w->accept_retry,
					   w->loop.now + WORKER_ACCEPT_RETRY_NS))
				log_error("accept", "worker=%u cannot arm the accept retry", w->id);
			return;
		default:
			log_error("accept", "worker=%u accept failed: %s", w->id, strerror(errno));
			return;
		}
	}
}

static void worker_listener_event(struct loop *loop, struct loop_watch *watch, uint32_t events)
{
	struct worker_listener *l = container_of(watch, struct worker_listener, watch);

	worker_accept(l->worker, l);
}

static void worker_accept_retry(struct loop *loop, struct loop_timer *t)
{
	struct worker *w = container_of(t, struct worker, accept_retry);

	for (unsigned i = 0; i < w->nlisteners; i++)
		worker_accept(w, &w->listeners[i]);
}

static void worker_close_listeners(struct worker *w)
{
	for (unsigned i = 0; i < w->nlisteners; i++) {
		if (w->listeners[i].fd < 0)
			continue;
		loop_del(&w->loop, &w->listeners[i].watch);
		if (!w->listeners[i].unix_socket)
			close(w->listeners[i].fd);
		w->listeners[i].fd = -1;
	}
}

static void worker_drain_expired(struct loop *loop, struct loop_timer *t)
{
	struct worker *w = container_of(t, struct worker, drain_timer);
	struct conn *c = w->conns;

	if (c)
		log_info("drain", "worker=%u drain timeout: closing %u sessions", w->id, w->nconns);
	while (c) {
		struct conn *next = c->next; /* conn_terminate may unlink c */

		conn_terminate(c, "57P01", "terminating connection due to administrator command",
			       "shutdown");
		c = next;
	}
}

/* ---- slots and wakes ------------------------------------------------------------------ */

#define WORKER_MIN_SLOTS 64

/* Double the slots (and the wake arrays with them). Worker thread, under lock. */
static int worker_slots_grow(struct worker *w)
{
	uint32_t n = w->nslots ? w->nslots * 2 : WORKER_MIN_SLOTS;
	struct worker_slot *slots = realloc(w->slots, n * sizeof(*slots));
	uint32_t *free_slots, *wakes, *spare;

	if (!slots)
		return -ENOMEM;
	w->slots = slots;
	free_slots = realloc(w->free_slots, n * sizeof(*free_slots));
	if (free_slots)
		w->free_slots = free_slots;
	wakes = free_slots ? realloc(w->wakes, n * sizeof(*wakes)) : NULL;
	if (wakes)
		w->wakes = wakes;
	spare = wakes ? realloc(w->wakes_spare, n * sizeof(*spare)) : NULL;
	if (!spare)
		return -ENOMEM; /* the arrays that did grow are fine to keep */
	w->wakes_spare = spare;
	memset(&w->slots[w->nslots], 0, (n - w->nslots) * sizeof(*slots));
	for (uint32_t i = n; i > w->nslots; i--)
		w->free_slots[w->nfree++] = i - 1;
	w->nslots = n;
	return 0;
}

int worker_slot_claim(struct worker *w, struct conn *c, struct stage_waker *waker)
{
	uint32_t slot;

	pthread_mutex_lock(&w->lock);
	if (!w->nfree && worker_slots_grow(w)) {
		pthread_mutex_unlock(&w->lock);
		return -ENOMEM;
	}
	slot = w->free_slots[--w->nfree];
	w->slots[slot].conn = c;
	w->slots[slot].gen++;
	waker->worker = w;
	waker->slot = slot;
	waker->gen = w->slots[slot].gen;
	pthread_mutex_unlock(&w->lock);
	return 0;
}

void worker_slot_release(struct worker *w, uint32_t slot)
{
	pthread_mutex_lock(&w->lock);
	if (slot < w->nslots && w->slots[slot].conn) {
		w->slots[slot].conn = NULL;
		w->slots[slot].gen++; /* a late wake names a generation that is gone */
		w->free_slots[w->nfree++] = slot;
	}
	pthread_mutex_unlock(&w->lock);
}

struct conn *worker_slot_conn(const struct worker *w, uint32_t slot, uint32_t gen)
{
	if (slot >= w->nslots || w->slots[slot].gen != gen)
		return NULL;
	return w->slots[slot].conn;
}

int stage_wake(const struct stage_waker *waker)
{
	struct worker *w = waker ? waker->worker : NULL;
	struct worker_slot *s;
	bool found = false, post = false;

	if (!w)
		return -ENOENT;
	pthread_mutex_lock(&w->lock);
	s = waker->slot < w->nslots ? &w->slots[waker->slot] : NULL;
	if (s && s->conn && s->gen == waker->gen) {
		found = true;
		/*
		 * Only the wake that makes the list non-empty posts: worker_run_wakes() takes
		 * the list only after the post's command bit is cleared and keeps taking until
		 * it finds the list empty, so a wake added to a non-empty list, or for a slot
		 * already queued (its conn_wake() comes after wake_queued is cleared), is
		 * served by the post already made. An audit group commit that completes many
		 * sessions' records then costs the writer one eventfd write, not one each.
		 */
		if (!s->wake_queued) {
			s->wake_queued = true;
			post = w->nwakes == 0;
			w->wakes[w->nwakes++] = waker->slot;
		}
	}
	pthread_mutex_unlock(&w->lock);
	if (!found)
		return -ENOENT;
	if (post)
		worker_post(w, WORKER_CMD_WAKE);
	return 0;
}

void worker_run_wakes(struct worker *w)
{
	uint32_t *batch, n, gens[64];

	for (;;) {
		pthread_mutex_lock(&w->lock);
		n = w->nwakes;
		if (!n) {
			pthread_mutex_unlock(&w->lock);
			return;
		}
		/* Take the batch out; wakes posted while it runs go to the other array. */
		batch = w->wakes;
		w->wakes = w->wakes_spare;
		w->wakes_spare = batch;
		w->nwakes = 0;
		pthread_mutex_unlock(&w->lock);
		for (uint32_t i = 0; i < n; i += 64) {
			uint32_t k = n - i < 64 ? n - i : 64;

			pthread_mutex_lock(&w->lock);
			for (uint32_t j = 0; j < k; j++) {
				w->slots[batch[i + j]].wake_queued = false;
				gens[j] = w->slots[batch[i + j]].gen;
			}
			pthread_mutex_unlock(&w->lock);
			for (uint32_t j = 0; j < k; j++)
				conn_wake(w, batch[i + j], gens[j]);
		}
	}
}

static void worker_on_wake(struct loop *loop)
{
	struct worker *w = loop->owner;
	uint32_t cmds = __atomic_exchange_n(&w->pending_cmds, 0, __ATOMIC_ACQ_REL);

	if (cmds & (1u << WORKER_CMD_DRAIN) && !w->draining) {
		struct config *cfg = relay_config_acquire(w->relay);

		w->draining = true;
		worker_close_listeners(w);
		server_pool_close_all(&w->servers); /* no client can come for them now */
		if (loop_timer_arm(loop, &w->drain_timer,
				   loop->now + cfg->drain_timeout_ms * 1000000ULL))
			worker_drain_expired(loop, &w->drain_timer);
		config_unref(cfg);
		worker_maybe_finish(w);
	}
	if (cmds & (1u << WORKER_CMD_DRAIN_NOW) && w->draining) {
		loop_timer_cancel(loop, &w->drain_timer);
		worker_drain_expired(loop, &w->drain_timer);
	}
	if (cmds & (1u << WORKER_CMD_KILL)) {
		char ids[WORKER_KILL_MAX][SESSION_ID_HEXLEN + 1];
		uint8_t modes[WORKER_KILL_MAX];
		unsigned n;

		pthread_mutex_lock(&w->lock);
		n = w->nkills;
		memcpy(ids, w->kill_ids, sizeof(ids[0]) * n);
		memcpy(modes, w->kill_modes, sizeof(modes[0]) * n);
		w->nkills = 0;
		pthread_mutex_unlock(&w->lock);
		for (unsigned i = 0; i < n; i++) {
			for (struct conn *c = w->conns; c; c = c->next) {
				if (strcmp(c->session.id_hex, ids[i]) == 0) {
					session_kill(c, (enum admin_kill_mode)modes[i]);
					break;
				}
			}
		}
	}
	if (cmds & (1u << WORKER_CMD_WAKE))
		worker_run_wakes(w);
	if (cmds & (1u << WORKER_CMD_STOP))
		loop_stop(loop);
}

int worker_post_kill(struct worker *w, const char *id, enum admin_kill_mode mode)
{
	bool found = false;

	pthread_mutex_lock(&w->lock);
	for (struct conn *c = w->conns; c; c = c->next)
		if (strcmp(c->session.id_hex, id) == 0)
			found = true;
	if (found && w->nkills >= WORKER_KILL_MAX) {
		pthread_mutex_unlock(&w->lock);
		return -ENOSPC;
	}
	if (found) {
		w->kill_modes[w->nkills] = (uint8_t)mode;
		memcpy(w->kill_ids[w->nkills++], id, SESSION_ID_HEXLEN + 1);
	}
	pthread_mutex_unlock(&w->lock);
	if (!found)
		return -ENOENT;
	worker_post(w, WORKER_CMD_KILL);
	return 0;
}

void worker_post(struct worker *w, enum worker_cmd cmd)
{
	__atomic_or_fetch(&w->pending_cmds, 1u << cmd, __ATOMIC_ACQ_REL);
	loop_wake(&w->loop);
}

static int worker_listen_socket(const struct addr *a);
static int worker_address_unclaimed(const struct addr *a);

static int worker_listen(struct worker *w, struct worker_listener *l, const struct addr *a,
			 bool transparent)
{
	char text[ADDR_STRLEN];
	int fd, err, one = 1;

	fd = handover_take_listener(a, transparent, w->id); /* a predecessor's socket */
	if (fd == -ENOENT)
		fd = w->id == 0 && !transparent && !handover_has_listener(a, transparent)
			     ? worker_address_unclaimed(a)
			     : 0;
	if (fd == 0)
		fd = transparent ? steer_listen_transparent(a, WORKER_LISTEN_BACKLOG, true)
				 : worker_listen_socket(a);
	/* Linux gives each accepted socket its listener's TCP_NODELAY: set once here rather
	 * than on every connection, and on a predecessor's socket too, whoever made it. */
	if (fd >= 0 && setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0) {
		err = -errno;
		close(fd);
		fd = err;
	}
	if (fd < 0) {
		log_error("listen", "cannot listen on %s%s: %s",
			  addr_format(&a->ss.sa, text, sizeof(text)),
			  transparent ? " (transparent)" : "", strerror(-fd));
		return fd;
	}
	l->worker = w;
	l->addr = *a;
	l->transparent = transparent;
	l->watch.cb = worker_listener_event;
	err = loop_add(&w->loop, &l->watch, fd, EPOLLIN);
	if (err) {
		close(fd);
		return err;
	}
	l->fd = fd;
	return 0;
}

/*
 * The relay's one Unix listener, watched by every worker. EPOLLEXCLUSIVE wakes one worker
 * (or a few) per connection instead of all of them; whoever wakes accepts until EAGAIN, so
 * a connection is never left behind when two race for it.
 */
static int worker_watch_unix(struct worker *w, struct worker_listener *l, int fd)
{
	int err;

	l->worker = w;
	l->unix_socket = true;
	l->watch.cb = worker_listener_event;
	err = loop_add(&w->loop, &l->watch, fd, EPOLLIN | EPOLLEXCLUSIVE);
	if (err) {
		log_error("listen", "cannot watch the Unix listener: %s", strerror(-err));
		return err;
	}
	l->fd = fd;
	return 0;
}

/*
 * SO_REUSEPORT lets any process of the same user bind the address too, and the kernel
 * would then split clients between the two daemons without a word. Before the first
 * worker binds, a plain bind (no SO_REUSEPORT) proves nobody else holds the address.
 */
static int worker_address_unclaimed(const struct addr *a)
{
	int one = 1, err = 0;
	int fd = socket(a->ss.sa.sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if ((a->ss.sa.sa_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, &a->ss.sa, a->len) < 0)
		err = -errno;
	close(fd);
	return err;
}

/* A plain non-blocking listener; every worker binds the same address and the kernel
 * spreads new connections (SO_REUSEPORT). fd or -errno. */
static int worker_listen_socket(const struct addr *a)
{
	int one = 1, fd, err;

	fd = socket(a->ss.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    (a->ss.sa.sa_family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, &a->ss.sa, a->len) < 0 || listen(fd, WORKER_LISTEN_BACKLOG) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

/*
 * The worker's view of the steering maps. Not attached (yet) is fine: the handle notices
 * an attach later. Any other failure leaves the worker in explicit mode, said loudly.
 */
static void worker_open_steer(struct worker *w, const struct config *cfg)
{
	int err;

	if (w->relay->steer_shared) {
		w->steer = w->relay->steer_shared;
		return;
	}
	err = steer_origin_open(cfg->steer_instance, &w->steer);
	if (err && err != -ENOENT) {
		if (w->id == 0)
			log_warn("steer", "steering lookups unavailable (%s): steered connections "
				 "will be treated as explicit", strerror(-err));
		w->steer = NULL;
		return;
	}
	w->steer_owned = true;
}

int worker_create(struct worker **out, unsigned id, struct relay *relay,
		  const struct config *cfg)
{
	struct worker *w = calloc(1, sizeof(*w));
	int err;

	if (!w)
		return -ENOMEM;
	w->id = id;
	w->cpu = -1;
	w->relay = relay;
	pthread_mutex_init(&w->lock, NULL);
	buf_pool_init(&w->pool, cfg->buffer_size, WORKER_POOL_MAX_FREE);
	w->scratch = buf_get(&w->pool);
	if (!w->scratch) {
		err = -ENOMEM;
		goto err_free;
	}
	err = loop_init(&w->loop, worker_on_wake, w);
	if (err)
		goto err_scratch;
	server_pool_init(&w->servers, &w->loop);
	if (relay->metrics) {
		w->metrics = metrics_shard_new(relay->metrics);
		if (!w->metrics) {
			err = -ENOMEM;
			goto err_listeners;
		}
	}
	w->accept_retry.cb = worker_accept_retry;
	w->drain_timer.cb = worker_drain_expired;
	for (unsigned i = 0; i < cfg->nlisten + cfg->ntproxy_listen; i++) {
		bool transparent = i >= cfg->nlisten;
		const struct addr *a = transparent ? &cfg->tproxy_listen[i - cfg->nlisten]
						   : &cfg->listen[i];

		err = worker_listen(w, &w->listeners[i], a, transparent);
		if (err)
			goto err_listeners;
		w->nlisteners++;
	}
	if (relay->unix_listener.fd >= 0) {
		err = worker_watch_unix(w, &w->listeners[w->nlisteners], relay->unix_listener.fd);
		if (err)
			goto err_listeners;
		w->nlisteners++;
	}
	worker_open_steer(w, cfg);
	*out = w;
	return 0;

err_listeners:
	metrics_shard_free(w->metrics);
	worker_close_listeners(w);
	loop_destroy(&w->loop);
err_scratch:
	buf_put(&w->pool, w->scratch);
err_free:
	buf_pool_destroy(&w->pool);
	pthread_mutex_destroy(&w->lock);
	free(w);
	return err;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	int err = loop_run(&w->loop);

	if (err)
		log_error("worker", "worker=%u event loop failed: %s", w->id, strerror(-err));
	__atomic_store_n(&w->finished, true, __ATOMIC_RELEASE);
	return NULL;
}

int worker_start(struct worker *w, int cpu)
{
	pthread_attr_t attr;
	cpu_set_t one;
	char name[16];
	int err = pthread_attr_init(&attr);

	if (err)
		return -err;
	/* Pinned from its first instruction, so its loop, connections and buffers stay in one
	 * CPU's caches instead of following the scheduler between CPUs it shares with
	 * PostgreSQL and the clients. */
	if (cpu >= 0) {
		CPU_ZERO(&one);
		CPU_SET(cpu, &one);
		err = pthread_attr_setaffinity_np(&attr, sizeof(one), &one);
	}
	if (!err)
		err = pthread_create(&w->thread, &attr, worker_main, w);
	pthread_attr_destroy(&attr);
	if (err)
		return -err;
	w->cpu = cpu;
	/* Named for top -H and ps -L; a name that does not fit is cut, never an error. */
	snprintf(name, sizeof(name), "pgw-worker-%u", w->id);
	pthread_setname_np(w->thread, name);
	return 0;
}

bool worker_finished(const struct worker *w)
{
	return __atomic_load_n(&w->finished, __ATOMIC_ACQUIRE);
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}

void worker_destroy(struct worker *w)
{
	worker_close_listeners(w);
	if (w->steer_owned)
		steer_origin_close(w->steer);
	metrics_shard_free(w->metrics);
	server_pool_destroy(&w->servers);
	loop_destroy(&w->loop);
	buf_put(&w->pool, w->scratch);
	buf_pool_destroy(&w->pool);
	track_rings_destroy(&w->track_rings);
	pthread_mutex_destroy(&w->lock);
	free(w->slots);
	free(w->free_slots);
	free(w->wakes);
	free(w->wakes_spare);
	free(w);
}
