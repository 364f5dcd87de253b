/*
 * admin_client: the tools' side of the admin socket (pgwardenctl, pgwarden-top, tests).
 *
 * Blocking with deadlines: every call takes a timeout, so a wedged daemon turns into an
 * error message, never a hung tool. Replies are matched by order (the server answers in
 * order); event lines that arrive between replies are handed to the event callback or
 * dropped.
 */
#ifndef PGWARDEN_ADMIN_CLIENT_H
#define PGWARDEN_ADMIN_CLIENT_H

#include <jansson.h>
#include <stddef.h>

#define ADMIN_CLIENT_MAX_LINE (256 * 1024 * 1024)

struct admin_conn;

/* The socket path the tools use: $PGWARDEN_ADMIN_SOCKET, else CONFIG_DEFAULT_ADMIN_SOCKET. */
const char *admin_client_default_path(void);

/* Connect. 0, or -errno (-ENOENT / -ECONNREFUSED: no daemon; -EACCES: not allowed). */
int admin_conn_open(const char *path, int timeout_ms, struct admin_conn **out)
	__attribute__((warn_unused_result));
void admin_conn_close(struct admin_conn *c);

/*
 * Send req (a JSON object; reference kept by the caller) and wait for its reply.
 * 0 with *reply set (caller decrefs), or -errno: -ETIMEDOUT, -EPIPE/-ECONNRESET (daemon
 * went away), -EPROTO (a line that is not a JSON object). Events received meanwhile go to
 * on_event (may be NULL; the object is borrowed for the call).
 */
int admin_conn_call(struct admin_conn *c, json_t *req, json_t **reply, int timeout_ms,
		    void (*on_event)(void *ctx, json_t *ev), void *ctx)
	__attribute__((warn_unused_result));

/* The next line as a JSON object (reply or event). 0, -ETIMEDOUT, -EPIPE, -EPROTO. */
int admin_conn_next(struct admin_conn *c, json_t **msg, int timeout_ms)
	__attribute__((warn_unused_result));

/* The error message of a {"ok":false} reply ("not_found: no live session ..."), or NULL. */
const char *admin_reply_error(json_t *reply, char *buf, size_t n);

#endif
