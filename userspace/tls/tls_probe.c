/*
 * tls_probe: ask a PostgreSQL server whether it offers TLS, as a client would (see tls.h).
 * For tools (pgwardenctl attach), never for the relay's workers: it blocks, within a
 * timeout.
 */
#include "tls/tls.h"

#include "proto/proto.h"
#include "base/errbuf.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/err.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Connect within timeout_ms, then leave the socket blocking with that timeout on every
 * send and receive. The connected socket, or -errno. */
static int probe_connect(const struct sockaddr *addr, socklen_t addrlen, uint32_t mark,
			 int timeout_ms)
{
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int rc = 0, soerr = 0;
	socklen_t len = sizeof(soerr);

	if (fd < 0)
		return -errno;
	if (mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
		goto err_close;
	if (connect(fd, addr, addrlen) != 0) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};

		if (errno != EINPROGRESS)
			goto err_close;
		rc = poll(&pfd, 1, timeout_ms);
		if (rc == 0) {
			close(fd);
			return -ETIMEDOUT;
		}
		if (rc < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
			goto err_close;
		if (soerr) {
			close(fd);
			return -soerr;
		}
	}
	if (fcntl(fd, F_SETFL, 0) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
		goto err_close;
	return fd;

err_close:
	rc = -errno;
	close(fd);
	return rc;
}

/* After 'S': a handshake that verifies nothing, for the certificate's name and so that
 * the server sees a client that finished, not an error to log. */
static void probe_handshake(int fd, char *subject, size_t n)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx ? SSL_new(ctx) : NULL;
	const struct timespec now = {0};
	sigset_t pipe, old;
	char *text = NULL;

	/* OpenSSL's socket BIO writes with write(): a server that hung up would raise SIGPIPE
	 * in the calling tool. Held back for the handshake, then discarded. */
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	pthread_sigmask(SIG_BLOCK, &pipe, &old);
	if (ssl && SSL_set_fd(ssl, fd) == 1 && SSL_connect(ssl) == 1) {
		X509 *cert = SSL_get0_peer_certificate(ssl);

		if (cert && tls_cert_subject(cert, &text) == 0)
			snprintf(subject, n, "%s", text);
		(void)SSL_shutdown(ssl);
	}
	free(text);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	ERR_clear_error();
	while (sigtimedwait(&pipe, NULL, &now) == SIGPIPE)
		;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

int tls_probe_server(const struct sockaddr *addr, socklen_t addrlen, uint32_t mark,
		     int timeout_ms, bool *offers, char *subject, size_t n, char *err,
		     size_t errlen)
{
	uint8_t req[8], answer;
	ssize_t r;
	int fd;

	if (n)
		subject[0] = '\0';
	fd = probe_connect(addr, addrlen, mark, timeout_ms);
	if (fd < 0) {
		errbuf_set(err, errlen, "cannot connect: %s", strerror(-fd));
		return fd;
	}
	if (proto_write_ssl_request(req, sizeof(req)) != (int)sizeof(req) ||
	    send(fd, req, sizeof(req), MSG_NOSIGNAL) != (ssize_t)sizeof(req)) {
		int rc = errno ? -errno : -EIO;

		errbuf_set(err, errlen, "cannot send an SSLRequest: %s", strerror(-rc));
		close(fd);
		return rc;
	}
	do {
		r = recv(fd, &answer, 1, 0);
	} while (r < 0 && errno == EINTR);
	if (r != 1) {
		int rc = r == 0 ? -ECONNRESET : (errno == EAGAIN ? -ETIMEDOUT : -errno);

		errbuf_set(err, errlen, "no answer to an SSLRequest: %s",
			   r == 0 ? "the server closed the connection" : strerror(-rc));
		close(fd);
		return rc;
	}
	switch (answer) {
	case 'S':
		*offers = true;
		probe_handshake(fd, subject, n);
		break;
	case 'N':
	case 'E': /* servers from before SSLRequest answered with an error */
		*offers = false;
		break;
	default:
		errbuf_set(err, errlen, "answered an SSLRequest with 0x%02x, not 'S' or 'N': is it "
					"PostgreSQL?",
			   answer);
		close(fd);
		return -EPROTO;
	}
	close(fd);
	return 0;
}
