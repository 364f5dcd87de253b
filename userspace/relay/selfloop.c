/* selfloop: the relay's own upstream connections, recognised when they come back (see
 * selfloop.h). */
#include "relay/selfloop.h"

#include <errno.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define SELFLOOP_BUCKETS 4096 /* chains by local port: upstream sockets spread over ports */

/* An endpoint as compared here: v4-mapped folded to IPv4, port in network order. */
struct endpoint {
	int family;
	uint8_t addr[16];
	uint16_t port;
};

struct selfloop_entry {
	struct selfloop_entry *next, **pprev;
	struct endpoint local;  /* the upstream socket's own end */
	struct endpoint remote; /* where it connected to, as the kernel routes it */
};

struct selfloop {
	pthread_mutex_t lock;
	struct selfloop_entry *buckets[SELFLOOP_BUCKETS];
	unsigned count;
};

static bool endpoint_of(const struct addr *a, struct endpoint *e)
{
	struct addr u;

	memset(e, 0, sizeof(*e));
	addr_unmap(a, &u);
	if (u.ss.sa.sa_family == AF_INET) {
		e->family = AF_INET;
		memcpy(e->addr, &u.ss.in4.sin_addr, 4);
		e->port = u.ss.in4.sin_port;
		return true;
	}
	if (u.ss.sa.sa_family == AF_INET6) {
		e->family = AF_INET6;
		memcpy(e->addr, &u.ss.in6.sin6_addr, 16);
		e->port = u.ss.in6.sin6_port;
		return true;
	}
	return false;
}

static bool endpoint_equal(const struct endpoint *x, const struct endpoint *y)
{
	return x->family == y->family && x->port == y->port && memcmp(x->addr, y->addr, 16) == 0;
}

static unsigned bucket_of(const struct endpoint *e)
{
	return ntohs(e->port) % SELFLOOP_BUCKETS;
}

int selfloop_new(struct selfloop **out)
{
	struct selfloop *s = calloc(1, sizeof(*s));

	*out = s;
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	return 0;
}

void selfloop_free(struct selfloop *s)
{
	if (!s)
		return;
	for (unsigned i = 0; i < SELFLOOP_BUCKETS; i++) {
		struct selfloop_entry *e = s->buckets[i];

		while (e) {
			struct selfloop_entry *next = e->next;

			free(e);
			e = next;
		}
	}
	pthread_mutex_destroy(&s->lock);
	free(s);
}

struct selfloop_entry *selfloop_add(struct selfloop *s, int fd, const struct addr *to)
{
	struct selfloop_entry *e;
	struct addr local = {.len = sizeof(local.ss)};
	unsigned b;

	if (getsockname(fd, &local.ss.sa, &local.len) != 0)
		return NULL;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	if (!endpoint_of(&local, &e->local) || !endpoint_of(to, &e->remote) || !e->local.port) {
		free(e);
		return NULL;
	}
	/* A connect to 0.0.0.0 or :: goes to the socket's own address (the kernel sets the
	 * destination to the chosen source: loopback, or the bound address). */
	if (addr_is_unspecified(to))
		memcpy(e->remote.addr, e->local.addr, 16);
	b = bucket_of(&e->local);
	pthread_mutex_lock(&s->lock);
	e->next = s->buckets[b];
	if (e->next)
		e->next->pprev = &e->next;
	e->pprev = &s->buckets[b];
	s->buckets[b] = e;
	s->count++;
	pthread_mutex_unlock(&s->lock);
	return e;
}

void selfloop_forget(struct selfloop *s, struct selfloop_entry *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&s->lock);
	*e->pprev = e->next;
	if (e->next)
		e->next->pprev = e->pprev;
	s->count--;
	pthread_mutex_unlock(&s->lock);
	free(e);
}

unsigned selfloop_count(struct selfloop *s)
{
	unsigned n;

	pthread_mutex_lock(&s->lock);
	n = s->count;
	pthread_mutex_unlock(&s->lock);
	return n;
}

/*
 * Does the kernel have a TCP socket (not a listener) whose local end is src and whose peer
 * is dst? One sock_diag exact lookup. 1 yes, 0 no, -errno when the kernel could not say.
 */
static int tcp_socket_exists(const struct endpoint *src, const struct endpoint *dst)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 r;
	} req;
	struct sockaddr_nl nl = {.nl_family = AF_NETLINK};
	struct timeval tv = {.tv_sec = 1};
	union {
		struct nlmsghdr h;
		char buf[1024];
	} resp;
	ssize_t n;
	int fd, rc;

	memset(&req, 0, sizeof(req));
	req.nlh.nlmsg_len = sizeof(req);
	req.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	req.nlh.nlmsg_flags = NLM_F_REQUEST;
	req.r.sdiag_family = (uint8_t)src->family;
	req.r.sdiag_protocol = IPPROTO_TCP;
	req.r.idiag_states = ~0u;
	req.r.id.idiag_sport = src->port;
	req.r.id.idiag_dport = dst->port;
	memcpy(req.r.id.idiag_src, src->addr, src->family == AF_INET ? 4 : 16);
	memcpy(req.r.id.idiag_dst, dst->addr, dst->family == AF_INET ? 4 : 16);
	req.r.id.idiag_cookie[0] = req.r.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	if (fd < 0)
		return -errno;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (sendto(fd, &req, sizeof(req), 0, (struct sockaddr *)&nl, sizeof(nl)) < 0) {
		rc = -errno;
		goto out;
	}
	n = recv(fd, &resp, sizeof(resp), 0);
	if (n < (ssize_t)sizeof(struct nlmsghdr)) {
		rc = n < 0 ? -errno : -EPROTO;
		goto out;
	}
	if (resp.h.nlmsg_type == NLMSG_ERROR) {
		const struct nlmsgerr *e = NLMSG_DATA(&resp.h);

		rc = e->error == -ENOENT ? 0 : e->error ? e->error : -EPROTO;
		goto out;
	}
	if (resp.h.nlmsg_type != SOCK_DIAG_BY_FAMILY ||
	    resp.h.nlmsg_len < NLMSG_LENGTH(sizeof(struct inet_diag_msg))) {
		rc = -EPROTO;
		goto out;
	}
	/* The exact lookup falls back to listeners; a listener is not a connection. */
	rc = ((const struct inet_diag_msg *)NLMSG_DATA(&resp.h))->idiag_state != TCP_LISTEN;
out:
	close(fd);
	return rc;
}

bool selfloop_is_own(struct selfloop *s, const struct addr *peer, const struct addr *local)
{
	struct endpoint p, l;
	const struct selfloop_entry *e;
	bool ours = false, translated = false;

	if (!endpoint_of(peer, &p) || !endpoint_of(local, &l))
		return false;
	pthread_mutex_lock(&s->lock);
	for (e = s->buckets[bucket_of(&p)]; e; e = e->next) {
		if (!endpoint_equal(&e->local, &p))
			continue;
		if (endpoint_equal(&e->remote, &l)) {
			ours = true; /* the very 4-tuple of our socket */
			break;
		}
		translated = true;
	}
	pthread_mutex_unlock(&s->lock);
	if (ours || !translated)
		return ours;
	/* Our socket's local end, but it connected elsewhere: either the connection was
	 * translated on its way back to us (then no socket has this 4-tuple as its own), or
	 * another client happens to use the same local port (then the kernel has it). */
	return tcp_socket_exists(&p, &l) == 0;
}
