/*
 * conn_reuse: the connection's side of server_reuse (relay/server_pool.h): which sessions
 * may leave their server connection behind, handing it to the worker's pool when the
 * client leaves, and taking a kept one instead of connecting.
 *
 * A session may leave its server behind only when nothing about that server is the
 * client's own: pgwarden authenticated the client and logged in upstream itself (terminate
 * mode, after a SCRAM exchange with pgwarden or a certificate login), the server saw
 * pgwarden's address rather than the client's (its pg_hba and pg_stat_activity would keep
 * the first client's), and the server did not negotiate the protocol down. A kept leg goes
 * only to a session whose TLS settings it meets (conn_tls_server_reuse_accept()): a TLS leg
 * to one under the very settings it was set up under, a plaintext one where plaintext is
 * allowed, so a reused leg is never weaker than the taker's settings ask. And only when the
 * session ends clean: the client's Terminate, idle, no transaction, nothing owed or
 * half-sent either way. Every other ending closes the server as before.
 */
#include "relay/conn_internal.h"

#include "base/log.h"
#include "relay/cancel.h"
#include "relay/transport_tls.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

static void conn_reuse_limits(const struct conn *c, struct server_pool_limits *lim)
{
	lim->max_idle = c->config->server_reuse_max_idle;
	lim->idle_ms = c->config->server_reuse_idle_ms;
	lim->lifetime_ms = c->config->server_reuse_lifetime_ms;
}

void conn_reuse_forget(struct conn *c)
{
	server_keep_free(c->keep);
	c->keep = NULL;
}

void conn_reuse_begin(struct conn *c, const uint8_t *startup, uint32_t len)
{
	char where[SESSION_UPSTREAM_STRLEN];

	if (!c->config->server_reuse_max_idle)
		return;
	/* Out of memory: this session's server is not kept, which costs only a login. */
	if (server_keep_new(&c->keep, session_upstream_text(&c->session, where, sizeof(where)),
			    startup, len, conn_now(c)))
		log_debug("server_pool", "session=%s its server will not be kept: out of memory",
			  c->session.id_hex);
}

int conn_reuse_take(struct conn *c)
{
	struct server_pool_limits lim;
	struct server_pool_accept acc;
	struct conn_dir *d = &c->dir[CONN_S2C];
	struct server_keep *kept = NULL;
	uint8_t login[SERVER_POOL_LOGIN_MAX];
	uint32_t n = 0;

	if (!c->keep)
		return 0;
	conn_reuse_limits(c, &lim);
	conn_tls_server_reuse_accept(c, &acc);
	if (!server_pool_take(&c->worker->servers, &lim, c->keep, &acc, conn_now(c),
			      &c->server_sock, &c->server, &kept, login, sizeof(login), &n))
		return 0;
	server_keep_free(c->keep);
	c->keep = kept;
	if (loop_move(&c->worker->loop, &c->server_watch, c->server->fd,
		      EPOLLIN | EPOLLOUT | EPOLLRDHUP) ||
	    conn_tls_server_adopted(c) || conn_dir_reserve(c, d, n)) {
		OPENSSL_cleanse(login, n);
		conn_fail(c, SQLSTATE_OUT_OF_MEMORY, "out of memory", "out of memory");
		return -ENOMEM;
	}
	/* The kept server's login, as it said it: the core reads it as it reads any. */
	memcpy(d->buf->data + d->buf->tail, login, n);
	d->buf->tail += n;
	OPENSSL_cleanse(login, n);
	/* The kept server stands in for a connect (a certificate login comes from startup). */
	conn_set_state(c, CONN_CONNECTING);
	conn_set_state(c, CONN_AUTH);
	log_debug("server_pool", "session=%s reuses a kept server", c->session.id_hex);
	return 1;
}

void conn_reuse_param(struct conn *c, const char *name, const char *value)
{
	if (server_keep_param(c->keep, name, value))
		conn_reuse_forget(c);
}

/* Is the session at a clean end, with its server leg fit to keep? */
static bool conn_reuse_clean(const struct conn *c, const struct conn_dir *c2s)
{
	const struct conn_dir *s2c = &c->dir[CONN_S2C];
	const struct transport *t = c->server;

	return c->keep && t && t->fd >= 0 &&
	       (transport_is_sock(t) ? t == &c->server_sock
				     : transport_tls_conn(c->server) != NULL) &&
	       !(t->ops->pending && t->ops->pending(t)) && !c->server_sees_client &&
	       c->cancel_handle && !c->worker->draining && c->state == CONN_READY &&
	       c->session.tx_status == 'I' && track_idle(&c->track) && c2s->framed == 0 &&
	       !c2s->stream_left && c2s->hold == CONN_HOLD_NONE && !s2c->eof &&
	       !s2c->stream_left && !s2c->skip_left && !(s2c->buf && buf_len(s2c->buf)) &&
	       !c->stream_active;
}

bool conn_reuse_park(struct conn *c, struct conn_dir *c2s, uint32_t total, uint32_t avail)
{
	struct relay *r = c->worker->relay;
	struct server_pool_limits lim;
	struct cancel_target target;
	struct transport *leg;
	struct server_keep *keep = c->keep;
	int err;

	if (avail < total || !conn_reuse_clean(c, c2s))
		return false;
	/* The client's key stops reaching this backend now, before another client's can. */
	cancel_map_target(r->cancels, c->cancel_handle, &target);
	cancel_map_remove(r->cancels, c->cancel_handle);
	c->cancel_handle = NULL;
	if (conn_guard(c))
		guard_upstream_forget(conn_guard(c), &c->guard);
	keep->tls_generation = conn_tls_server_generation(c);
	leg = c->server;
	c->server = NULL;
	c->keep = NULL;
	conn_reuse_limits(c, &lim);
	err = server_pool_park(&c->worker->servers, &lim, leg, keep, target.pid,
			       target.server_key, target.key_len, conn_now(c));
	c->server_sock.fd = -1; /* a plaintext leg's socket is the pool's now */
	OPENSSL_cleanse(target.server_key, sizeof(target.server_key));
	if (err)
		log_debug("server_pool", "session=%s server not kept: %s", c->session.id_hex,
			  strerror(-err));
	/* The Terminate stays here; nothing after it goes anywhere. */
	conn_consume(c2s, total);
	c2s->buf->tail = c2s->buf->head + c2s->framed;
	conn_set_state(c, CONN_CLOSING);
	return true;
}
