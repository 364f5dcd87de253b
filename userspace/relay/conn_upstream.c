/*
 * conn_upstream: the server leg: connecting it (a non-blocking socket, marked so that the
 * steering hooks and nft rules never send pgwarden's own connection back into pgwarden,
 * from the client's own address or with its uid and gid where the server should see the
 * real client), and noticing when the connect finished.
 */
#include "relay/conn_internal.h"

#include "base/clock.h"
#include "base/log.h"
#include "steer/steer_origin.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static int conn_socket_for(int family)
{
	int one = 1;
	int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (family != AF_UNIX)
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/*
 * Whether the server will see the real client. Remote (TPROXY) clients where it does not
 * are worth a line each; local steered clients all share the reason, so it is said once
 * per worker. Both are counted for `pgwardenctl status`.
 */
static void conn_note_upstream_source(struct conn *c, bool client_address, const char *why)
{
	struct relay *r = c->worker->relay;

	if (client_address) {
		__atomic_add_fetch(&r->upstream_from_client, 1, __ATOMIC_RELAXED);
		return;
	}
	why = why ? why : "unknown";
	__atomic_add_fetch(&r->upstream_from_relay, 1, __ATOMIC_RELAXED);
	__atomic_store_n(&r->upstream_from_relay_why, why, __ATOMIC_RELAXED);
	if (c->session.route == SESSION_ROUTE_TPROXY) {
		log_info("upstream_source", "session=%s the server sees pgwarden's address, not the "
			 "client's: %s", c->session.id_hex, why);
	} else if (!c->worker->told_relay_source) {
		c->worker->told_relay_source = true;
		log_info("upstream_source", "steered local clients reach the server from pgwarden's "
			 "address, not their own (%s); their identity is in the session log", why);
	}
}

/*
 * Before connecting: the relay's mark, and a TPROXY'd client's own address as the source.
 * 0 when the server will see the client's address, 1 when pgwarden's (why set), -errno.
 */
static int conn_upstream_prepare(struct conn *c, int fd, const char **why)
{
	struct steer_origin *so = c->worker->steer;
	int r;

	/* Without the maps (no CAP_BPF, say) a TPROXY'd session is still one: it gets the
	 * relay's (default) mark and the client's address like any other. */
	*why = "explicit route";
	if (!so && c->session.route == SESSION_ROUTE_EXPLICIT)
		return 1;
	r = steer_upstream_prepare(fd, &c->session, steer_origin_relay_mark(so),
				   c->config->transparent_source, why);
	if (r == -EPERM && c->session.route == SESSION_ROUTE_EXPLICIT)
		return 1; /* unprivileged and explicit: nothing to protect against */
	return r;
}

static int socket_start(struct conn *c, const struct addr *to, const char *unix_path,
			struct transport **out)
{
	int fd = conn_socket_for(unix_path ? AF_UNIX : to->ss.sa.sa_family);
	const char *why = NULL;
	int r;

	if (fd < 0)
		return fd;
	r = conn_upstream_prepare(c, fd, &why);
	if (r >= 0 && unix_path)
		r = steer_upstream_connect_unix(fd, unix_path, &c->session,
						c->config->transparent_source, &why);
	else if (r >= 0 && connect(fd, &to->ss.sa, to->len) < 0 && errno != EINPROGRESS)
		r = -errno;
	if (r < 0) {
		close(fd);
		return r;
	}
	c->server_sees_client = r == 0;
	if (c->session.route != SESSION_ROUTE_EXPLICIT)
		conn_note_upstream_source(c, r == 0, why);
	if (!unix_path && conn_guard(c)) /* recognised if it comes back to us */
		guard_upstream(conn_guard(c), &c->guard, fd, to);
	transport_sock_init(&c->server_sock, fd, unix_path != NULL);
	/* Not writable until the connect says so (its first writable event). */
	c->server_sock.ready = 0;
	c->server_sock.write_needs = TRANSPORT_WRITE;
	*out = &c->server_sock;
	return 0;
}

static int socket_finish(struct conn *c, struct transport *t)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (!(t->ready & TRANSPORT_WRITE))
		return -EINPROGRESS;
	/* Writable, and no error or hang-up reported with it: connected. A connect that
	 * failed reports EPOLLERR and EPOLLHUP (transport_note_events() sets hup), so only
	 * then is the kernel asked why (one getsockopt() less per session). */
	if (!t->hup)
		return 0;
	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY) {
		t->ready &= ~TRANSPORT_WRITE;
		return -EINPROGRESS;
	}
	return -err;
}

const struct relay_connector relay_socket_connector = {
	.start = socket_start,
	.finish = socket_finish,
};

int conn_upstream_start(struct conn *c, const struct addr *to, const char *unix_path)
{
	struct transport *t = NULL;
	int err = c->worker->relay->connector->start(c, to, unix_path, &t);

	if (err)
		return err;
	if (t->fd >= 0) {
		err = loop_add(&c->worker->loop, &c->server_watch, t->fd,
			       EPOLLIN | EPOLLOUT | EPOLLRDHUP);
		if (err) {
			if (conn_guard(c))
				guard_upstream_forget(conn_guard(c), &c->guard);
			transport_destroy(t);
			return err;
		}
	}
	c->server = t;
	c->connect_deadline = conn_now(c) + c->config->connect_timeout_ms * NSEC_PER_MSEC;
	return 0;
}

bool conn_upstream_check(struct conn *c)
{
	char text[300], where[SESSION_UPSTREAM_STRLEN];
	int err = c->worker->relay->connector->finish(c, c->server);

	if (err == -EINPROGRESS)
		return false;
	c->connect_deadline = 0;
	if (err) {
		snprintf(text, sizeof(text), "could not connect to the database server at %s: %s",
			 c->state == CONN_CANCEL
				 ? "cancel target"
				 : session_upstream_text(&c->session, where, sizeof(where)),
			 strerror(-err));
		conn_refused(c, MREFUSE_UPSTREAM);
		if (c->state == CONN_CANCEL) {
			log_warn("cancel_failed", "pid=%u %s", c->session.backend_pid, text);
			conn_close(c, "cancel forward failed");
		} else {
			conn_fail(c, SQLSTATE_CONNECTION_FAILURE, text, "upstream connect failed");
		}
		return true;
	}
	if (conn_tls_server_wanted(c))
		conn_tls_server_begin(c); /* an SSLRequest first (conn_tls.c) */
	else if (c->state == CONN_CONNECTING)
		conn_set_state(c, CONN_AUTH);
	return true;
}

void conn_upstream_drop(struct conn *c)
{
	if (c->server) {
		if (conn_guard(c))
			guard_upstream_forget(conn_guard(c), &c->guard);
		if (c->server->fd >= 0)
			loop_del(&c->worker->loop, &c->server_watch);
		(void)transport_shutdown(c->server); /* a TLS leg's close_notify; best effort */
		transport_destroy(c->server);
		c->server = NULL;
	}
	c->connect_deadline = 0;
	conn_dir_release(c, &c->dir[CONN_C2S]);
	c->dir[CONN_C2S].stream_left = 0;
}

bool conn_upstream_usable(const struct conn *c)
{
	/* During SERVER_TLS nothing of the client's may reach a server not yet known to be
	 * the one TLS was required of. */
	return c->server && !c->connect_deadline && c->state != CONN_CANCEL &&
	       c->state != CONN_SERVER_TLS && c->state != CONN_SERVER_GONE &&
	       !c->dir[CONN_S2C].eof;
}
