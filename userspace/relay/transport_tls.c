/*
 * transport_tls: TLS over a socket (see transport_tls.h).
 *
 * OpenSSL talks to the socket through our BIO, not its socket BIO, for two reasons: the
 * BIO is where a receive or send learns that the socket is drained or full, which is what
 * the transport's readiness must record under edge-triggered epoll; and it can serve the
 * bytes the relay read before it knew the connection was TLS (a direct SSL ClientHello)
 * before any from the socket.
 */
#include "relay/transport_tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct tls_transport {
	struct transport t; /* first: the relay holds a struct transport * */
	struct tls_conn conn;
	/* Bytes read before the transport existed, served first; freed once read. */
	uint8_t *preread;
	size_t preread_len, preread_off;
	int sys_errno; /* the socket's errno behind the last failure; 0 */
	bool failed;   /* a fatal TLS error: no close_notify may follow */
};

static const struct transport_ops tls_ops;

static struct tls_transport *tls_of(struct transport *t)
{
	return (struct tls_transport *)t;
}

static const struct tls_transport *ctls_of(const struct transport *t)
{
	return (const struct tls_transport *)t;
}

/* ---- the BIO ------------------------------------------------------------------------ */

static BIO_METHOD *bio_method;
static pthread_once_t bio_method_once = PTHREAD_ONCE_INIT;

static int bio_read(BIO *b, char *buf, int len)
{
	struct tls_transport *tt = BIO_get_data(b);
	struct transport *t = &tt->t;
	ssize_t r;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (tt->preread) {
		size_t n = tt->preread_len - tt->preread_off;

		if (n > (size_t)len)
			n = (size_t)len;
		memcpy(buf, tt->preread + tt->preread_off, n);
		tt->preread_off += n;
		if (tt->preread_off == tt->preread_len) {
			free(tt->preread);
			tt->preread = NULL;
		}
		return (int)n;
	}
	if (!(t->ready & TRANSPORT_READ)) {
		/* Drained, and no edge since (transport_sock's rule): a receive could only say
		 * EAGAIN, and bytes that come later bring an edge that sets the bit again. OpenSSL
		 * asks anyway: after each handshake flight it sends (the peer's answer is not
		 * here yet) and after a record that emptied the socket; answer for the socket. */
		BIO_set_retry_read(b);
		return -1;
	}
	r = transport_sock_recv(t->fd, buf, (size_t)len);
	if (r > 0) {
		/* Short: the receive queue is drained until the next edge (see transport_sock). */
		if (r < len && !t->hup)
			t->ready &= ~TRANSPORT_READ;
		return (int)r;
	}
	if (r == 0)
		return 0;
	if (errno == EAGAIN || errno == EWOULDBLOCK) {
		t->ready &= ~TRANSPORT_READ;
		BIO_set_retry_read(b);
		return -1;
	}
	tt->sys_errno = errno;
	return -1;
}

static int bio_write(BIO *b, const char *buf, int len)
{
	struct tls_transport *tt = BIO_get_data(b);
	struct transport *t = &tt->t;
	ssize_t r;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	r = transport_sock_send(t->fd, buf, (size_t)len);
	if (r > 0) {
		if (r < len)
			t->ready &= ~TRANSPORT_WRITE; /* the send buffer is full */
		return (int)r;
	}
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		t->ready &= ~TRANSPORT_WRITE;
		BIO_set_retry_write(b);
		return -1;
	}
	tt->sys_errno = r < 0 ? errno : EPIPE;
	return -1;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	/* Writes go straight to the socket: there is never anything to flush. */
	return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void bio_method_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
				     "pgwarden socket");

	if (!m)
		return;
	if (!BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
	    !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
		BIO_meth_free(m);
		return;
	}
	bio_method = m;
}

/* ---- failures ----------------------------------------------------------------------- */

/*
 * Turn an OpenSSL failure (ret <= 0 from an I/O call) into the transport's answer:
 * -EAGAIN with *needs set, 0 for close_notify (reads), or -errno with the reason recorded.
 */
static int tls_failure(struct tls_transport *tt, int ret, uint8_t *needs, const char *what)
{
	int e = SSL_get_error(tt->conn.ssl, ret);
	unsigned long code;

	switch (e) {
	case SSL_ERROR_WANT_READ:
		*needs = TRANSPORT_READ;
		return -EAGAIN;
	case SSL_ERROR_WANT_WRITE:
		*needs = TRANSPORT_WRITE;
		return -EAGAIN;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		tt->failed = true;
		if (tt->sys_errno) {
			tls_conn_refuse(&tt->conn, "%s: %s", what, strerror(tt->sys_errno));
			return -tt->sys_errno;
		}
		/* End of stream at the socket with no close_notify before it. */
		tls_conn_refuse(&tt->conn,
				"%s: the peer closed the connection without a TLS close_notify", what);
		return -ECONNRESET;
	default:
		break;
	}
	tt->failed = true;
	if (tt->conn.renegotiate)
		return -EPROTO; /* conn.why names it */
	code = ERR_peek_last_error();
	if (ERR_GET_LIB(code) == ERR_LIB_SSL && ERR_GET_REASON(code) == SSL_R_PROTOCOL_IS_SHUTDOWN) {
		/* Writing after either side's close_notify: nobody will read it. */
		tls_conn_refuse(&tt->conn, "%s: the TLS connection was shut down", what);
		ERR_clear_error();
		return -EPIPE;
	}
	if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
	    ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
		tls_conn_refuse(&tt->conn,
				"%s: the peer closed the connection without a TLS close_notify", what);
		ERR_clear_error();
		return -ECONNRESET;
	}
	if (code)
		tls_conn_refuse(&tt->conn, "%s: %s", what,
				ERR_reason_error_string(code) ? ERR_reason_error_string(code)
							      : "TLS error");
	else
		tls_conn_refuse(&tt->conn, "%s: TLS error", what);
	ERR_clear_error();
	return -EPROTO;
}

/* ---- ops ---------------------------------------------------------------------------- */

/*
 * SSL_get_error() reads this thread's error queue, so it must be empty before an I/O call.
 * It almost always is already (tls_failure() clears what an error leaves), and
 * ERR_clear_error() costs about 840 instructions even on an empty queue (OpenSSL 3.0 walks
 * all 16 slots, freeing each one's strings): two calls per transaction were 6% of the
 * relay's user-space instructions over TLS (callgrind, pgbench -S -M prepared). Looking
 * first costs about 200.
 */
static void tls_error_queue_empty(void)
{
	if (ERR_peek_error())
		ERR_clear_error();
}

static int tls_handshake(struct transport *t)
{
	struct tls_transport *tt = tls_of(t);
	int r;

	if (tt->conn.established)
		return 0;
	if (tt->failed)
		return -EPROTO;
	tls_error_queue_empty();
	tt->sys_errno = 0;
	r = SSL_do_handshake(tt->conn.ssl);
	if (r == 1) {
		t->write_needs = 0;
		t->read_needs = 0;
		if (tls_conn_established(&tt->conn)) {
			tt->failed = true;
			return -EPROTO;
		}
		return 0;
	}
	r = tls_failure(tt, r, &t->write_needs, "TLS handshake failed");
	/* A handshake cannot end in close_notify: the peer went away. */
	return r == 0 ? -ECONNRESET : r;
}

static ssize_t tls_read(struct transport *t, void *buf, size_t n)
{
	struct tls_transport *tt = tls_of(t);
	size_t got = 0;
	int r;

	if (!tt->conn.established) {
		r = tls_handshake(t);
		if (r == -EAGAIN)
			t->read_needs = t->write_needs; /* a read waits for what the handshake needs */
		if (r)
			return r;
	}
	if (tt->failed || tt->conn.renegotiate)
		return -EPROTO;
	if (n == 0)
		return 0;
	tls_error_queue_empty();
	tt->sys_errno = 0;
	r = SSL_read_ex(tt->conn.ssl, buf, n, &got);
	/* The attempt may have been answered inside this very call, with data after it. */
	if (tt->conn.renegotiate) {
		tt->failed = true;
		return -EPROTO;
	}
	if (r == 1) {
		/* The socket's drain rule, for TLS: a short receive (bio_read) drained the socket,
		 * and when OpenSSL holds no record either, decrypted or not, the next read could
		 * only say EAGAIN: wait for the next edge instead of paying for that call. */
		t->read_needs = !(t->ready & TRANSPORT_READ) && !SSL_has_pending(tt->conn.ssl)
					? TRANSPORT_READ
					: 0;
		return (ssize_t)got;
	}
	return tls_failure(tt, r, &t->read_needs, "TLS read failed");
}

static ssize_t tls_write(struct transport *t, const void *buf, size_t n)
{
	struct tls_transport *tt = tls_of(t);
	size_t put = 0;
	int r;

	if (!tt->conn.established) {
		r = tls_handshake(t);
		if (r)
			return r;
	}
	if (tt->failed || tt->conn.renegotiate)
		return -EPROTO;
	if (n == 0)
		return 0;
	tls_error_queue_empty();
	tt->sys_errno = 0;
	r = SSL_write_ex(tt->conn.ssl, buf, n, &put);
	if (tt->conn.renegotiate) {
		tt->failed = true;
		return -EPROTO;
	}
	if (r == 1) {
		t->write_needs = 0;
		return (ssize_t)put;
	}
	r = tls_failure(tt, r, &t->write_needs, "TLS write failed");
	return r == 0 ? -EPIPE : r; /* close_notify received: nobody reads what we send */
}

static size_t tls_pending(const struct transport *t)
{
	const struct tls_transport *tt = ctls_of(t);
	size_t raw = tt->preread ? tt->preread_len - tt->preread_off : 0;
	int dec = tt->conn.established ? SSL_pending(tt->conn.ssl) : 0;

	return raw + (dec > 0 ? (size_t)dec : 0);
}

static int tls_shutdown(struct transport *t)
{
	struct tls_transport *tt = tls_of(t);
	int r;

	/* Nothing was agreed to close (no handshake), or the session is broken: OpenSSL must
	 * not write a close_notify after a fatal error. The socket's end is enough. */
	if (!tt->conn.established || tt->failed)
		return shutdown(t->fd, SHUT_WR) < 0 && errno != ENOTCONN ? -errno : 0;
	tls_error_queue_empty();
	tt->sys_errno = 0;
	r = SSL_shutdown(tt->conn.ssl);
	if (r < 0) {
		uint8_t needs = 0;

		r = tls_failure(tt, r, &needs, "TLS shutdown failed");
		if (r == -EAGAIN && needs == TRANSPORT_WRITE) {
			t->write_needs = needs;
			return -EAGAIN;
		}
		if (r < 0 && r != -EAGAIN)
			return r;
	}
	/* close_notify is out (r 0: the peer's is not in yet; the relay does not wait). */
	t->write_needs = 0;
	return shutdown(t->fd, SHUT_WR) < 0 && errno != ENOTCONN ? -errno : 0;
}

static const char *tls_error(const struct transport *t)
{
	const struct tls_transport *tt = ctls_of(t);

	return tt->conn.why;
}

static void tls_destroy(struct transport *t)
{
	struct tls_transport *tt = tls_of(t);

	tls_conn_release(&tt->conn); /* SSL_free() frees the BIO and cleanses the keys */
	free(tt->preread);
	if (t->fd >= 0)
		close(t->fd);
	free(tt);
}

static const struct transport_ops tls_ops = {
	.name = "tls",
	.read = tls_read,
	.write = tls_write,
	.pending = tls_pending,
	.handshake = tls_handshake,
	.shutdown = tls_shutdown,
	.error = tls_error,
	.destroy = tls_destroy,
};

struct transport *transport_tls_new(struct transport *plain, const struct tls_snapshot *s,
				    enum tls_leg leg, const struct tls_conn_params *p,
				    const void *preread, size_t len, int *err)
{
	struct tls_transport *tt;
	BIO *bio;
	int rc;

	if (plain->fd < 0) {
		*err = -EBADF;
		return NULL;
	}
	if (len > TRANSPORT_TLS_PREREAD_MAX) {
		*err = -EMSGSIZE;
		return NULL;
	}
	pthread_once(&bio_method_once, bio_method_init);
	if (!bio_method) {
		*err = -ENOMEM;
		return NULL;
	}
	tt = calloc(1, sizeof(*tt));
	if (!tt) {
		*err = -ENOMEM;
		return NULL;
	}
	if (len) {
		tt->preread = malloc(len);
		if (!tt->preread) {
			rc = -ENOMEM;
			goto err_free;
		}
		memcpy(tt->preread, preread, len);
		tt->preread_len = len;
	}
	rc = tls_conn_init(&tt->conn, s, leg, p);
	if (rc)
		goto err_free;
	bio = BIO_new(bio_method);
	if (!bio) {
		rc = -ENOMEM;
		goto err_conn;
	}
	BIO_set_data(bio, tt);
	SSL_set_bio(tt->conn.ssl, bio, bio); /* the SSL owns the BIO from here */
	/* Read-ahead: one receive takes whatever the socket holds (several records, or one
	 * record's header and body) instead of a header, then a body, then an EAGAIN; what
	 * OpenSSL holds undecrypted counts as pending for the drain rule (tls_read). */
	SSL_set_read_ahead(tt->conn.ssl, 1);
	tt->t = (struct transport){
		.ops = &tls_ops,
		.ready = plain->ready,
		.hup = plain->hup,
	};
	tt->t.fd = transport_sock_release(plain);
	return &tt->t;

err_conn:
	tls_conn_release(&tt->conn);
err_free:
	free(tt->preread);
	free(tt);
	*err = rc;
	return NULL;
}

struct tls_conn *transport_tls_conn(struct transport *t)
{
	return t && t->ops == &tls_ops ? &tls_of(t)->conn : NULL;
}
