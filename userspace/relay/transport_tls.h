/*
 * transport_tls: TLS as a transport (relay/transport.h), over the socket of a plain
 * transport, in either role: towards a client pgwarden is the TLS server (TLS_LEG_CLIENT),
 * towards PostgreSQL the TLS client (TLS_LEG_SERVER). What TLS is allowed to be is the tls
 * module's (tls/tls.h); this file moves the bytes.
 *
 * Non-blocking throughout. OpenSSL reads and writes the socket through a BIO of ours,
 * which keeps the transport's readiness exact under edge-triggered epoll: a receive or send
 * that finds the socket drained or full clears the ready bit, and an operation OpenSSL
 * cannot finish records in read_needs / write_needs the readiness it waits for (a read may
 * need the socket writable, a write readable). The handshake's needs go in write_needs,
 * as transport.h says. OpenSSL reads ahead, and a read that returned data after a short
 * receive, with no record left inside OpenSSL, marks the socket drained (the TCP
 * transport's rule): no further receive that could only say EAGAIN.
 *
 * Memory: OpenSSL's record buffers exist only while a record is in flight
 * (SSL_MODE_RELEASE_BUFFERS); an idle session holds its SSL, its session and the peer's
 * certificate, and nothing else (docs/TLS.md has the numbers).
 *
 * Rules a caller must keep:
 *   - write() is all-or-part: it may take fewer bytes than offered. After -EAGAIN the next
 *     write() must offer the same bytes again (more may follow them): OpenSSL has already
 *     committed to them. The buffer may have moved.
 *   - read() returns 0 only for the peer's close_notify; a peer that closes the socket
 *     without it is -ECONNRESET (a truncation, as libpq and PostgreSQL treat it).
 *   - A peer that tries to renegotiate gets -EPROTO from the next operation: the
 *     connection must end.
 *   - transport_error() names why the last failure happened (a certificate refused, a
 *     protocol refused, an alert), or NULL.
 *   - Byte counters count payload (decrypted) bytes, from zero.
 */
#ifndef PGWARDEN_TRANSPORT_TLS_H
#define PGWARDEN_TRANSPORT_TLS_H

#include "relay/transport.h"
#include "tls/tls.h"

/* Bytes read before TLS began that a transport may be handed: a ClientHello is at most a
 * few records. More is refused (-EMSGSIZE). */
#define TRANSPORT_TLS_PREREAD_MAX (64 * 1024)

/*
 * A TLS transport for leg of snapshot s, over plain's socket. plain must be a socket
 * transport (transport_sock_init()) holding no unread bytes; on success its socket moves to
 * the new transport (transport_sock_release()) and plain is left holding none, so
 * destroying it is harmless. preread[0, len) are bytes already read from the socket that
 * belong to TLS: the start of a direct SSL ClientHello that identified the connection
 * (client leg). After an SSLRequest there must be none: any byte between the request and
 * the handshake is an injection the caller refuses instead (CVE-2021-23214).
 * The transport is allocated here and freed by transport_destroy().
 * Returns it, or NULL with *err: -ENOTCONN (the leg is disable in s), -ENOMEM, -EINVAL (a
 * host OpenSSL refuses), -EMSGSIZE (preread too long), -EBADF (plain has no socket).
 */
struct transport *transport_tls_new(struct transport *plain, const struct tls_snapshot *s,
				    enum tls_leg leg, const struct tls_conn_params *p,
				    const void *preread, size_t len, int *err);

/* The leg's TLS state (identity, channel binding, session facts), or NULL when t is not a
 * TLS transport. */
struct tls_conn *transport_tls_conn(struct transport *t);

#endif
