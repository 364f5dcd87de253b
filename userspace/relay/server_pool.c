/*
 * server_pool: kept server connections (see server_pool.h).
 *
 * A kept server is in one of two states. RESETTING: DISCARD ALL went out; the answer
 * allowed is its CommandComplete, ParameterStatus reports (RESET ALL reports every
 * parameter it changed back), notices and notifications that were already on their way,
 * then ReadyForQuery 'I'. IDLE: reset and waiting for a client; the server may report a
 * parameter or send a notice, and anything else it says (its FATAL before it goes, say) or
 * its end of stream closes the link. Every message is framed by the one codec and read
 * whole into a fixed buffer: a message that does not fit closes the link.
 */
#include "relay/server_pool.h"

#include "base/clock.h"
#include "base/log.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>

/* Messages a kept server sends are small; a bigger one is not one it should send. */
#define LINK_IN_MAX 4096u
/* How long the server gets to answer DISCARD ALL. */
#define LINK_RESET_TIMEOUT_MS 5000u

#define RESET_SQL "DISCARD ALL"

enum link_state {
	LINK_RESETTING = 0,
	LINK_IDLE,
	LINK_GONE, /* taken or closed: on p->gone until the iteration ends */
};

struct server_link {
	struct server_link *prev, *next;
	struct server_pool *pool;
	struct transport *t; /* the server leg: &sock, or a TLS transport */
	struct transport sock;
	struct loop_watch watch;
	struct loop_timer timer;
	struct server_keep *keep;
	enum link_state state;
	bool reset_done; /* RESETTING: the CommandComplete of DISCARD ALL arrived */
	uint64_t idle_ms; /* the idle timeout, from the limits it was kept under */
	uint32_t pid;
	uint32_t key_len;
	uint8_t key[PROTO_CANCEL_KEY_MAX];
	uint32_t in_len;
	uint8_t in[LINK_IN_MAX];
};

/* ---- server_keep ------------------------------------------------------------------------ */

int server_keep_new(struct server_keep **out, const char *upstream, const uint8_t *startup,
		    uint32_t startup_len, uint64_t now_ns)
{
	size_t ul = strlen(upstream) + 1;
	struct server_keep *k;

	*out = NULL;
	if (startup_len > PROTO_STARTUP_MAX_LEN || ul > 4096)
		return -E2BIG;
	k = calloc(1, sizeof(*k) + ul + startup_len);
	if (!k)
		return -ENOMEM;
	k->born_ns = now_ns;
	k->ident_len = (uint32_t)(ul + startup_len);
	memcpy(k->ident, upstream, ul);
	memcpy(k->ident + ul, startup, startup_len);
	*out = k;
	return 0;
}

/* The name of the ParameterStatus message at p (whole, framed when it was recorded). */
static const char *keep_param_name(const uint8_t *p)
{
	return (const char *)p + PROTO_HEADER_LEN;
}

int server_keep_param(struct server_keep *k, const char *name, const char *value)
{
	uint8_t msg[SERVER_KEEP_PARAMS_MAX];
	uint32_t keep_len = 0, old_len = 0;
	uint8_t *block;
	int n = proto_write_parameter_status(msg, sizeof(msg), name, value);

	if (n < 0)
		return -E2BIG;
	/* Every report but name's stays, in order; name's goes last. A report of the value
	 * already recorded changes nothing: a replayed login reports every one again. */
	for (uint32_t at = 0; at < k->params_len;) {
		uint32_t len = 1 + proto_read_u32(k->params + at + 1);

		if (strcmp(keep_param_name(k->params + at), name) == 0) {
			if (len == (uint32_t)n && memcmp(k->params + at, msg, len) == 0)
				return 0;
			old_len = len;
		}
		at += len;
	}
	keep_len = k->params_len - old_len;
	if (keep_len + (uint32_t)n > SERVER_KEEP_PARAMS_MAX)
		return -E2BIG;
	block = malloc(keep_len + (uint32_t)n);
	if (!block)
		return -ENOMEM;
	keep_len = 0;
	for (uint32_t at = 0; at < k->params_len;) {
		uint32_t len = 1 + proto_read_u32(k->params + at + 1);

		if (strcmp(keep_param_name(k->params + at), name) != 0) {
			memcpy(block + keep_len, k->params + at, len);
			keep_len += len;
		}
		at += len;
	}
	memcpy(block + keep_len, msg, (size_t)n);
	free(k->params);
	k->params = block;
	k->params_len = keep_len + (uint32_t)n;
	return 0;
}

void server_keep_free(struct server_keep *k)
{
	if (!k)
		return;
	free(k->params);
	free(k);
}

/* Has the server connection k describes served as long as lim allows? */
static bool keep_expired(const struct server_keep *k, const struct server_pool_limits *lim,
			 uint64_t now_ns)
{
	return lim->lifetime_ms && now_ns - k->born_ns >= lim->lifetime_ms * NSEC_PER_MSEC;
}

static bool keep_fits(const struct server_keep *k, const struct server_keep *want,
		      const struct server_pool_accept *acc)
{
	if (k->tls_generation ? k->tls_generation != acc->tls_generation : !acc->plain_ok)
		return false;
	return k->ident_len == want->ident_len && memcmp(k->ident, want->ident, k->ident_len) == 0;
}

/* Close a server connection that is not (or no longer) kept: Terminate, best effort (it is
 * closed either way), TLS's close_notify, then the socket. */
static void leg_close(struct transport *t)
{
	uint8_t x[PROTO_HEADER_LEN];
	int n = proto_write_terminate(x, sizeof(x));

	if (n > 0)
		(void)transport_write(t, x, (size_t)n);
	(void)transport_shutdown(t);
	transport_destroy(t);
}

/* ---- links -------------------------------------------------------------------------------- */

static void link_unlink(struct server_link *l)
{
	struct server_pool *p = l->pool;

	if (l->prev)
		l->prev->next = l->next;
	else
		p->links = l->next;
	if (l->next)
		l->next->prev = l->prev;
	l->prev = l->next = NULL;
	__atomic_sub_fetch(&p->nlinks, 1, __ATOMIC_RELAXED);
}

/* Off the pool's list. Its memory waits on p->gone for the end of the loop's iteration. */
static void link_retire(struct server_link *l)
{
	struct server_pool *p = l->pool;

	link_unlink(l);
	server_keep_free(l->keep);
	l->keep = NULL;
	OPENSSL_cleanse(l->key, sizeof(l->key));
	l->state = LINK_GONE;
	l->next = p->gone;
	p->gone = l;
	loop_defer(p->loop, &p->reap);
}

static void pool_reap(struct loop *loop, struct loop_deferred *d)
{
	struct server_pool *p = container_of(d, struct server_pool, reap);

	(void)loop;
	while (p->gone) {
		struct server_link *l = p->gone;

		p->gone = l->next;
		free(l);
	}
}

static void link_close(struct server_link *l, const char *why)
{
	struct server_pool *p = l->pool;

	log_debug("server_pool", "pid=%u closed: %s", l->pid, why);
	loop_timer_cancel(p->loop, &l->timer);
	loop_del(p->loop, &l->watch);
	leg_close(l->t);
	__atomic_add_fetch(&p->closed, 1, __ATOMIC_RELAXED);
	link_retire(l);
}

static void link_timer_fired(struct loop *loop, struct loop_timer *t)
{
	struct server_link *l = container_of(t, struct server_link, timer);

	(void)loop;
	link_close(l, l->state == LINK_RESETTING ? "no answer to " RESET_SQL : "idle timeout");
}

/* One whole message from the kept server. false: the link must close (why set). */
static bool link_message(struct server_link *l, const struct proto_msg *m, const char **why)
{
	const char *name, *value, *tag;
	uint8_t tx;

	switch (m->type) {
	case PqMsg_ParameterStatus:
		if (proto_read_parameter_status(m, &name, &value) != PROTO_OK) {
			*why = "malformed ParameterStatus";
			return false;
		}
		if (server_keep_param(l->keep, name, value)) {
			*why = "too many parameters to replay";
			return false;
		}
		return true;
	case PqMsg_NoticeResponse:
	case PqMsg_NotificationResponse:
		/* The session that caused them has gone; the reset stops any more. */
		return true;
	case PqMsg_CommandComplete:
		if (l->state != LINK_RESETTING || l->reset_done ||
		    proto_read_command_complete(m, &tag) != PROTO_OK || strcmp(tag, RESET_SQL) != 0) {
			*why = "unexpected CommandComplete";
			return false;
		}
		l->reset_done = true;
		return true;
	case PqMsg_ReadyForQuery:
		if (l->state != LINK_RESETTING || !l->reset_done ||
		    proto_read_ready(m, &tx) != PROTO_OK || tx != 'I') {
			*why = "unexpected ReadyForQuery";
			return false;
		}
		l->state = LINK_IDLE;
		if (loop_timer_arm(l->pool->loop, &l->timer,
				   l->pool->loop->now + l->idle_ms * NSEC_PER_MSEC)) {
			*why = "out of memory";
			return false;
		}
		return true;
	case PqMsg_ErrorResponse:
		*why = l->state == LINK_RESETTING ? RESET_SQL " failed" : "the server ended it";
		return false;
	default:
		*why = "unexpected message";
		return false;
	}
}

/* Read and judge what the server sent; false when the link must close (why set). */
static bool link_read(struct server_link *l, const char **why)
{
	for (;;) {
		struct proto_msg m;
		uint32_t at = 0;
		ssize_t n;

		if (!transport_can_read(l->t))
			return true;
		n = transport_read(l->t, l->in + l->in_len, sizeof(l->in) - l->in_len);
		if (n == -EAGAIN)
			return true;
		if (n <= 0) {
			*why = n == 0 ? "the server closed it" : "read failed";
			return false;
		}
		l->in_len += (uint32_t)n;
		for (;;) {
			int r = proto_frame(l->in + at, l->in_len - at, PROTO_BACKEND, LINK_IN_MAX, &m);

			if (r == PROTO_NEED_MORE || (r == PROTO_OK && at + PROTO_HEADER_LEN +
								      m.body_len > l->in_len))
				break;
			if (r != PROTO_OK) {
				*why = proto_err_str(r);
				return false;
			}
			if (!link_message(l, &m, why))
				return false;
			at += PROTO_HEADER_LEN + m.body_len;
		}
		memmove(l->in, l->in + at, l->in_len - at);
		l->in_len -= at;
		if (l->in_len == sizeof(l->in)) {
			*why = "a message too large for a kept server";
			return false;
		}
	}
}

static void link_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	struct server_link *l = container_of(w, struct server_link, watch);
	const char *why = NULL;

	(void)loop;
	if (l->state == LINK_GONE)
		return; /* fetched in the same wait as whatever took or closed it */
	transport_note_events(l->t, events);
	if (!link_read(l, &why))
		link_close(l, why);
}

/* ---- the pool ------------------------------------------------------------------------------ */

void server_pool_init(struct server_pool *p, struct loop *loop)
{
	memset(p, 0, sizeof(*p));
	p->loop = loop;
	p->reap.cb = pool_reap;
}

void server_pool_stats_add(const struct server_pool *p, struct server_pool_stats *sum)
{
	sum->kept += __atomic_load_n(&p->kept, __ATOMIC_RELAXED);
	sum->reused += __atomic_load_n(&p->reused, __ATOMIC_RELAXED);
	sum->closed += __atomic_load_n(&p->closed, __ATOMIC_RELAXED);
	sum->held += __atomic_load_n(&p->nlinks, __ATOMIC_RELAXED);
}

void server_pool_close_all(struct server_pool *p)
{
	while (p->links)
		link_close(p->links, "shutting down");
}

void server_pool_destroy(struct server_pool *p)
{
	server_pool_close_all(p);
	pool_reap(p->loop, &p->reap);
}

int server_pool_park(struct server_pool *p, const struct server_pool_limits *lim,
		     struct transport *t, struct server_keep *keep, uint32_t pid,
		     const uint8_t *key, uint32_t key_len, uint64_t now_ns)
{
	uint8_t q[64];
	struct server_link *l;
	int n, err = 0;

	if (p->nlinks >= lim->max_idle)
		err = -ENOSPC;
	else if (keep_expired(keep, lim, now_ns))
		err = -ETIME;
	else if (key_len > PROTO_CANCEL_KEY_MAX)
		err = -EINVAL;
	l = err ? NULL : malloc(sizeof(*l));
	if (!l) {
		leg_close(t);
		server_keep_free(keep);
		return err ? err : -ENOMEM;
	}
	/* All but the reader's buffer, which holds nothing until the server answers. */
	memset(l, 0, offsetof(struct server_link, in));
	l->pool = p;
	if (transport_is_sock(t)) {
		l->sock = *t;
		l->t = &l->sock;
	} else {
		l->t = t;
	}
	l->keep = keep;
	l->pid = pid;
	l->key_len = key_len;
	memcpy(l->key, key, key_len);
	l->idle_ms = lim->idle_ms;
	l->watch.cb = link_event;
	l->timer.cb = link_timer_fired;
	l->next = p->links;
	if (p->links)
		p->links->prev = l;
	p->links = l;
	__atomic_add_fetch(&p->nlinks, 1, __ATOMIC_RELAXED);
	err = loop_move(p->loop, &l->watch, l->t->fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP);
	/* The reset is 17 bytes into an idle socket's empty send buffer: it goes whole or the
	 * server is not worth keeping. */
	n = proto_write_query(q, sizeof(q), RESET_SQL);
	if (!err && (n <= 0 || transport_write(l->t, q, (size_t)n) != n))
		err = -EIO;
	if (!err)
		err = loop_timer_arm(p->loop, &l->timer,
				     p->loop->now + LINK_RESET_TIMEOUT_MS * NSEC_PER_MSEC);
	if (err) {
		link_close(l, "could not start the reset");
		return err;
	}
	__atomic_add_fetch(&p->kept, 1, __ATOMIC_RELAXED);
	log_debug("server_pool", "pid=%u kept, resetting", pid);
	return 0;
}

/*
 * Is a kept server still there? Its FATAL or end of stream may be waiting unread (the loop
 * has not yet reported it): look before handing it to a client, at the cost of one
 * receive. Closes it when it is not.
 */
static bool link_alive(struct server_link *l)
{
	const char *why = NULL;
	uint8_t b;
	ssize_t n = recv(l->t->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		return true;
	if (n > 0) {
		l->t->ready |= TRANSPORT_READ;
		l->t->read_needs = 0;
		if (link_read(l, &why) && l->state == LINK_IDLE)
			return true;
	}
	link_close(l, why ? why : n == 0 ? "the server closed it" : "its socket failed");
	return false;
}

bool server_pool_take(struct server_pool *p, const struct server_pool_limits *lim,
		      const struct server_keep *want, const struct server_pool_accept *acc,
		      uint64_t now_ns, struct transport *storage, struct transport **leg,
		      struct server_keep **keep, uint8_t *login, uint32_t cap, uint32_t *login_len)
{
	struct server_link *l, *next;

	for (l = p->links; l; l = next) {
		uint32_t len = 0;
		int n;

		next = l->next;
		if (l->state != LINK_IDLE || !keep_fits(l->keep, want, acc))
			continue;
		if (keep_expired(l->keep, lim, now_ns)) {
			link_close(l, "lifetime reached");
			continue;
		}
		if (!link_alive(l))
			continue;
		n = proto_write_auth(login, cap, AUTH_REQ_OK, NULL, 0);
		if (n < 0 || (uint32_t)n + l->keep->params_len > cap)
			continue;
		len = (uint32_t)n;
		memcpy(login + len, l->keep->params, l->keep->params_len);
		len += l->keep->params_len;
		n = proto_write_backend_key(login + len, cap - len, l->pid, l->key, l->key_len);
		if (n < 0)
			continue;
		len += (uint32_t)n;
		n = proto_write_ready(login + len, cap - len, 'I');
		if (n < 0)
			continue;
		*login_len = len + (uint32_t)n;
		loop_timer_cancel(p->loop, &l->timer);
		if (l->t == &l->sock) {
			*storage = l->sock;
			*leg = storage;
		} else {
			*leg = l->t;
		}
		*keep = l->keep;
		l->keep = NULL;
		link_retire(l);
		__atomic_add_fetch(&p->reused, 1, __ATOMIC_RELAXED);
		return true;
	}
	return false;
}
