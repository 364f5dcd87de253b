/* backend_cancel: CancelRequests to a session's server with its real key (see
 * backend_cancel.h). */
#include "relay/backend_cancel.h"

#include "base/clock.h"
#include "base/log.h"
#include "loop/loop.h"
#include "proto/proto.h"
#include "session/session.h"

#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CANCEL_PKT_MAX (PROTO_STARTUP_HEADER_LEN + 4 + PROTO_CANCEL_KEY_MAX)

struct backend_cancel {
	struct backend_cancel *next, **pprev; /* in_flight, under in_flight_lock */
	struct loop *loop;
	struct loop_watch watch;
	struct loop_timer timer;
	uint32_t pid;
	int pkt_len;
	uint8_t pkt[CANCEL_PKT_MAX];
	char session[SESSION_ID_HEXLEN + 1];
};

/* Requests under way on every loop: only so that an exit can free them. */
static pthread_mutex_t in_flight_lock = PTHREAD_MUTEX_INITIALIZER;
static struct backend_cancel *in_flight;

static void in_flight_add(struct backend_cancel *bc)
{
	pthread_mutex_lock(&in_flight_lock);
	bc->next = in_flight;
	if (bc->next)
		bc->next->pprev = &bc->next;
	bc->pprev = &in_flight;
	in_flight = bc;
	pthread_mutex_unlock(&in_flight_lock);
}

static void in_flight_del(struct backend_cancel *bc)
{
	pthread_mutex_lock(&in_flight_lock);
	*bc->pprev = bc->next;
	if (bc->next)
		bc->next->pprev = bc->pprev;
	pthread_mutex_unlock(&in_flight_lock);
}

static void backend_cancel_free(struct backend_cancel *bc)
{
	OPENSSL_cleanse(bc, sizeof(*bc));
	free(bc);
}

/* A non-blocking socket connecting to target's server: fd or -errno. Completion (or
 * failure) shows as writability. */
static int cancel_connect(const struct cancel_target *t, uint32_t mark)
{
	bool unix_path = t->upstream_unix[0] != '\0';
	int fd = socket(unix_path ? AF_UNIX : t->upstream.ss.sa.sa_family,
			SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc;

	if (fd < 0)
		return -errno;
	if (!unix_path && mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0)
		goto err_close;
	if (unix_path) {
		struct sockaddr_un sun = {.sun_family = AF_UNIX};
		size_t len = strnlen(t->upstream_unix, sizeof(t->upstream_unix));

		if (len >= sizeof(sun.sun_path)) {
			close(fd);
			return -ENAMETOOLONG;
		}
		memcpy(sun.sun_path, t->upstream_unix, len);
		rc = connect(fd, (struct sockaddr *)&sun,
			     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1));
	} else {
		rc = connect(fd, &t->upstream.ss.sa, t->upstream.len);
	}
	if (rc < 0 && errno != EINPROGRESS)
		goto err_close;
	return fd;
err_close:
	rc = -errno;
	close(fd);
	return rc;
}

/* 0 once the whole packet is in the kernel, 1 to wait for writability, or -errno. */
static int cancel_try_send(int fd, const uint8_t *pkt, int len)
{
	int err = 0;
	socklen_t elen = sizeof(err);
	ssize_t n;

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
		return -errno;
	if (err == EINPROGRESS || err == EALREADY)
		return 1;
	if (err)
		return -err;
	n = send(fd, pkt, (size_t)len, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN ? 1 : -errno;
	/* A fresh connection's send buffer takes 16 (or up to 268) bytes whole. */
	return n == len ? 0 : -EIO;
}

static void cancel_log(const char *session, uint32_t pid, int err)
{
	struct log_line l;

	log_trail_begin(&l, err ? "backend_cancel_failed" : "backend_cancel_sent", err != 0);
	if (session && session[0])
		log_kv_str(&l, "session", session);
	log_kv_u64(&l, "backend_pid", pid);
	if (err)
		log_kv_str(&l, "error", strerror(-err));
	log_line_end(&l);
}

static void backend_cancel_finish(struct backend_cancel *bc, int err)
{
	cancel_log(bc->session, bc->pid, err);
	loop_timer_cancel(bc->loop, &bc->timer);
	loop_del(bc->loop, &bc->watch);
	close(bc->watch.fd);
	in_flight_del(bc);
	backend_cancel_free(bc);
}

static void backend_cancel_event(struct loop *loop, struct loop_watch *w, uint32_t events)
{
	struct backend_cancel *bc = container_of(w, struct backend_cancel, watch);
	int rc = cancel_try_send(w->fd, bc->pkt, bc->pkt_len);

	if (rc <= 0)
		backend_cancel_finish(bc, rc);
}

static void backend_cancel_timeout(struct loop *loop, struct loop_timer *t)
{
	backend_cancel_finish(container_of(t, struct backend_cancel, timer), -ETIMEDOUT);
}

int backend_cancel_start(struct loop *loop, const struct cancel_target *target, uint32_t mark,
			 uint64_t timeout_ms, const char *session)
{
	struct backend_cancel *bc = calloc(1, sizeof(*bc));
	int fd, err;

	if (!bc)
		return -ENOMEM;
	bc->pkt_len = proto_write_cancel(bc->pkt, sizeof(bc->pkt), target->pid,
					 target->server_key, target->key_len);
	if (bc->pkt_len <= 0) {
		backend_cancel_free(bc);
		return -EINVAL;
	}
	bc->loop = loop;
	bc->pid = target->pid;
	if (session)
		snprintf(bc->session, sizeof(bc->session), "%s", session);
	fd = cancel_connect(target, mark);
	if (fd < 0) {
		backend_cancel_free(bc);
		return fd;
	}
	bc->watch.cb = backend_cancel_event;
	bc->timer.cb = backend_cancel_timeout;
	err = loop_add(loop, &bc->watch, fd, EPOLLOUT | EPOLLIN | EPOLLRDHUP);
	if (err)
		goto err_close;
	err = loop_timer_arm(loop, &bc->timer, clock_mono_ns() + timeout_ms * NSEC_PER_MSEC);
	if (err) {
		loop_del(loop, &bc->watch);
		goto err_close;
	}
	in_flight_add(bc);
	return 0;

err_close:
	close(fd);
	backend_cancel_free(bc);
	return err;
}

int backend_cancel_send(const struct cancel_target *target, uint32_t mark, uint64_t timeout_ms)
{
	uint8_t pkt[CANCEL_PKT_MAX];
	uint64_t deadline = clock_mono_ns() + timeout_ms * NSEC_PER_MSEC;
	int len = proto_write_cancel(pkt, sizeof(pkt), target->pid, target->server_key,
				     target->key_len);
	int fd, rc;

	if (len <= 0)
		return -EINVAL;
	fd = cancel_connect(target, mark);
	if (fd < 0) {
		OPENSSL_cleanse(pkt, sizeof(pkt));
		return fd;
	}
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		uint64_t now = clock_mono_ns();

		rc = cancel_try_send(fd, pkt, len);
		if (rc <= 0)
			break;
		if (now >= deadline) {
			rc = -ETIMEDOUT;
			break;
		}
		if (poll(&pfd, 1, (int)((deadline - now) / NSEC_PER_MSEC) + 1) < 0 && errno != EINTR) {
			rc = -errno;
			break;
		}
	}
	OPENSSL_cleanse(pkt, sizeof(pkt));
	close(fd);
	return rc;
}

void backend_cancel_free_all(void)
{
	pthread_mutex_lock(&in_flight_lock);
	while (in_flight) {
		struct backend_cancel *bc = in_flight;

		in_flight = bc->next;
		close(bc->watch.fd);
		backend_cancel_free(bc);
	}
	pthread_mutex_unlock(&in_flight_lock);
}
