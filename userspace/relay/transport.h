/*
 * transport: how the relay moves bytes over one leg (client or server), whatever carries
 * them: plain TCP, a Unix socket, TLS over either, or a scripted fake in tests. Framing,
 * stages and the connection state machine never know which one a leg uses.
 *
 * The transport owns readiness and whatever bytes it holds. The loop reports socket events
 * with transport_note_events(); an operation that finds the socket drained or full records
 * which readiness would let it continue (read_needs / write_needs), and the relay asks only
 * transport_can_read() / transport_can_write(). So "a short read means drained" is the TCP
 * transport's own knowledge, and TLS (which returns a record at a time, holds decrypted
 * bytes, and may need the socket writable to read) keeps its own rules.
 *
 * Every operation is non-blocking. Return conventions: a byte count (> 0), 0 for end of
 * stream (read only), -EAGAIN when nothing can happen until the readiness in read_needs /
 * write_needs arrives, or another -errno when the leg failed (transport_error() may say
 * more, e.g. a TLS alert).
 */
#ifndef PGWARDEN_TRANSPORT_H
#define PGWARDEN_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TRANSPORT_READ 0x1u  /* the socket may be read */
#define TRANSPORT_WRITE 0x2u /* the socket may be written */

struct transport;

struct transport_ops {
	const char *name; /* "tcp", "unix", "tls", "fake" */
	ssize_t (*read)(struct transport *t, void *buf, size_t n);
	ssize_t (*write)(struct transport *t, const void *buf, size_t n);
	/* Bytes inside the transport that read() returns without the socket (TLS records
	 * already decrypted). NULL: none ever. */
	size_t (*pending)(const struct transport *t);
	/* Drive a handshake: 0 when done, -EAGAIN, -errno. NULL: nothing to do. */
	int (*handshake)(struct transport *t);
	/* Orderly end of what we send (TLS close_notify; shutdown(SHUT_WR)): 0, -EAGAIN,
	 * -errno. NULL: closing is enough. */
	int (*shutdown)(struct transport *t);
	/* Why the last operation failed, for a log line; NULL: strerror says it all. */
	const char *(*error)(const struct transport *t);
	/* Close the descriptor and free everything (the struct too, when the transport
	 * allocated it). */
	void (*destroy)(struct transport *t);
};

/* Each connection embeds two (conn.h): the readiness fields are bytes, so that the four of
 * them share the word after fd instead of padding the struct. No byte counters: the
 * session's (conn_io.c) count what the relay reads, once. */
struct transport {
	const struct transport_ops *ops;
	int fd;             /* the socket the loop watches; -1 for a fake without one */
	uint8_t ready;      /* TRANSPORT_READ/WRITE as the loop last reported, minus what an
			     * operation found exhausted */
	uint8_t read_needs;  /* readiness a blocked read() waits for; 0: not blocked */
	uint8_t write_needs; /* likewise for write() and handshake() */
	bool hup;           /* the peer hung up: read on until end of stream */
};

/* A loop event on t->fd (EPOLLIN, EPOLLOUT, EPOLLRDHUP, EPOLLHUP, EPOLLERR bits). */
void transport_note_events(struct transport *t, uint32_t events);

/* May read() make progress now? */
static inline bool transport_can_read(const struct transport *t)
{
	if (t->ops->pending && t->ops->pending(t))
		return true;
	return !t->read_needs || (t->ready & t->read_needs);
}

/* May write() make progress now? */
static inline bool transport_can_write(const struct transport *t)
{
	return !t->write_needs || (t->ready & t->write_needs);
}

static inline ssize_t transport_read(struct transport *t, void *buf, size_t n)
{
	return t->ops->read(t, buf, n);
}

static inline ssize_t transport_write(struct transport *t, const void *buf, size_t n)
{
	return t->ops->write(t, buf, n);
}

static inline int transport_handshake(struct transport *t)
{
	return t->ops->handshake ? t->ops->handshake(t) : 0;
}

static inline int transport_shutdown(struct transport *t)
{
	return t->ops->shutdown ? t->ops->shutdown(t) : 0;
}

static inline const char *transport_error(const struct transport *t)
{
	return t->ops->error ? t->ops->error(t) : NULL;
}

static inline void transport_destroy(struct transport *t)
{
	if (t)
		t->ops->destroy(t);
}

/*
 * The socket transports: TCP and Unix stream sockets, read and written with
 * transport_sock_recv() and transport_sock_send(). t is storage the caller owns (embedded
 * in the connection); destroy closes fd and leaves the storage alone. unix_socket only
 * changes the name.
 */
void transport_sock_init(struct transport *t, int fd, bool unix_socket);

/* Is t a socket transport (storage its owner holds, which a copy may take over)? */
bool transport_is_sock(const struct transport *t);

/*
 * Hand the socket of a plain transport over to a new transport built on it (TLS after
 * SSLRequest): returns the descriptor and leaves t holding none (destroy is then a no-op
 * for the socket). The caller checks first that t holds no unread bytes.
 */
int transport_sock_release(struct transport *t);

/*
 * One nonblocking receive from, or send (MSG_NOSIGNAL) to, a socket, retried on EINTR: the
 * system calls both the socket transports and the TLS transport's BIO make. The result and
 * errno are recv()'s and send()'s.
 */
ssize_t transport_sock_recv(int fd, void *buf, size_t n);
ssize_t transport_sock_send(int fd, const void *buf, size_t n);

#endif
