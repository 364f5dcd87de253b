/*
 * backend_cancel: ask a session's server to stop its running statement, the way a client's
 * CancelRequest would, with the server's real key (from the cancel map: the client only
 * ever saw pgwarden's). Used by the admin socket's kill, which is why "the client got
 * 57P01" also means "the backend stopped working and released its locks".
 *
 * The request is a short connection of its own: connect (carrying the relay's SO_MARK, so
 * the steering hooks never send it back into pgwarden), send the CancelRequest packet,
 * close. PostgreSQL does not answer a CancelRequest, so "sent" is the most anyone can
 * know; the outcome is logged either way. backend_cancel_start() runs it on a worker's
 * loop without blocking; backend_cancel_send() does the same synchronously, bounded by a
 * timeout, for a thread without a loop.
 *
 * The server key lives only in the packet buffer and the request object, both wiped with
 * OPENSSL_cleanse() once sent.
 */
#ifndef PGWARDEN_BACKEND_CANCEL_H
#define PGWARDEN_BACKEND_CANCEL_H

#include "relay/cancel.h"

#include <stdint.h>

struct loop;

/*
 * Start sending a CancelRequest for target on loop (the caller's thread owns loop), giving
 * up after timeout_ms. session names the session in the log (may be NULL). 0 when under way
 * (the request owns itself and logs its outcome), or -errno (nothing started; logged by
 * the caller).
 */
int backend_cancel_start(struct loop *loop, const struct cancel_target *target, uint32_t mark,
			 uint64_t timeout_ms, const char *session) __attribute__((warn_unused_result));

/* The same, blocking for at most timeout_ms. 0 once the packet was handed to the kernel,
 * or -errno. */
int backend_cancel_send(const struct cancel_target *target, uint32_t mark, uint64_t timeout_ms)
	__attribute__((warn_unused_result));

/* Free the requests still under way on any loop, once every loop has stopped (exit). */
void backend_cancel_free_all(void);

#endif
