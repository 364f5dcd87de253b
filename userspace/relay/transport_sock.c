/*
 * transport_sock: plain TCP and Unix stream sockets (see transport.h), and the readiness
 * bookkeeping every transport shares.
 *
 * Sockets are registered edge-triggered, so a readiness bit stays set until an operation
 * proves it exhausted. For a stream socket a read shorter than the room it was given
 * drained the receive queue (unless a hang-up is pending, when the relay must read on to
 * the end of stream), and a short send filled the send buffer: both clear the bit without
 * paying for a further system call that would only say EAGAIN.
 */
#include "relay/transport.h"

#include <errno.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

void transport_note_events(struct transport *t, uint32_t events)
{
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		t->ready |= TRANSPORT_READ;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		t->hup = true;
	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
		t->ready |= TRANSPORT_WRITE;
}

/*
 * Not recv() and send(): they are cancellation points, and in a threaded process glibc
 * switches asynchronous cancellation on and off around each call (two atomic updates, some
 * 70 instructions, four times per transaction). Nothing cancels a worker (pgwarden never
 * calls pthread_cancel), so the same system calls are made directly.
 */
ssize_t transport_sock_recv(int fd, void *buf, size_t n)
{
	ssize_t r;

	do {
		r = syscall(SYS_recvfrom, fd, buf, n, MSG_DONTWAIT, NULL, NULL);
	} while (r < 0 && errno == EINTR);
	return r;
}

ssize_t transport_sock_send(int fd, const void *buf, size_t n)
{
	ssize_t r;

	do {
		r = syscall(SYS_sendto, fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT, NULL, 0);
	} while (r < 0 && errno == EINTR);
	return r;
}

static ssize_t sock_read(struct transport *t, void *buf, size_t n)
{
	ssize_t r = transport_sock_recv(t->fd, buf, n);

	if (r > 0) {
		t->read_needs = 0;
		if ((size_t)r < n && !t->hup) {
			t->ready &= ~TRANSPORT_READ; /* drained: wait for the next edge */
			t->read_needs = TRANSPORT_READ;
		}
		return r;
	}
	if (r == 0)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		t->ready &= ~TRANSPORT_READ;
		t->read_needs = TRANSPORT_READ;
		return -EAGAIN;
	}
	return -errno;
}

static ssize_t sock_write(struct transport *t, const void *buf, size_t n)
{
	ssize_t r = transport_sock_send(t->fd, buf, n);

	if (r > 0) {
		t->write_needs = 0;
		if ((size_t)r < n) {
			t->ready &= ~TRANSPORT_WRITE; /* the send buffer is full */
			t->write_needs = TRANSPORT_WRITE;
		}
		return r;
	}
	if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
		return -errno;
	t->ready &= ~TRANSPORT_WRITE;
	t->write_needs = TRANSPORT_WRITE;
	return -EAGAIN;
}

static void sock_destroy(struct transport *t)
{
	if (t->fd >= 0)
		close(t->fd);
	t->fd = -1;
}

/* No shutdown: every caller destroys the transport right after it, and close() sends the
 * same FIN that shutdown(SHUT_WR) would (two system calls per session fewer). */
static const struct transport_ops tcp_ops = {
	.name = "tcp",
	.read = sock_read,
	.write = sock_write,
	.destroy = sock_destroy,
};

static const struct transport_ops unix_ops = {
	.name = "unix",
	.read = sock_read,
	.write = sock_write,
	.destroy = sock_destroy,
};

void transport_sock_init(struct transport *t, int fd, bool unix_socket)
{
	*t = (struct transport){
		.ops = unix_socket ? &unix_ops : &tcp_ops,
		.fd = fd,
		/* Writable until a send says otherwise; readable once the first edge says so,
		 * but a read is attempted anyway (read_needs 0), which costs one EAGAIN. */
		.ready = TRANSPORT_WRITE,
	};
}

bool transport_is_sock(const struct transport *t)
{
	return t->ops == &tcp_ops || t->ops == &unix_ops;
}

int transport_sock_release(struct transport *t)
{
	int fd = t->fd;

	t->fd = -1;
	return fd;
}
