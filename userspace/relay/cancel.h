/*
 * cancel: the map from the cancel keys pgwarden issued to clients to the servers' own keys.
 *
 * A client's BackendKeyData keeps the server's process id (so pg_backend_pid() and NOTIFY
 * sender pids still match what the client was told) but carries a random secret pgwarden
 * made. A CancelRequest is forwarded only when its (pid, secret) matches an entry, and then
 * with the server's secret, to the server that session uses. The server's secret never
 * leaves pgwarden. Shared by all workers: one mutex, taken at login, cancel and session
 * end only, never per message.
 */
#ifndef PGWARDEN_CANCEL_H
#define PGWARDEN_CANCEL_H

#include "base/addr.h"
#include "proto/proto.h"
#include "session/session.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/un.h>

struct cancel_map;

#define CANCEL_UNIX_PATH_MAX sizeof(((struct sockaddr_un *)0)->sun_path)

struct cancel_target {
	char session_id[SESSION_ID_HEXLEN + 1]; /* the session the key was issued to, in hex */
	struct addr upstream;
	char upstream_unix[CANCEL_UNIX_PATH_MAX]; /* PostgreSQL's Unix socket; "": TCP upstream */
	uint32_t pid;
	uint32_t key_len;
	uint8_t server_key[PROTO_CANCEL_KEY_MAX];
};

struct cancel_map *cancel_map_new(void);
void cancel_map_free(struct cancel_map *m);

/*
 * Record a session's server key and issue the client's key (same length, from the CSPRNG)
 * into client_key. The entry refers to owner, the session the key is issued to: a cancel
 * names it (id_hex, for the audit record) and goes to its server (upstream_unix when not
 * NULL, else upstream). owner stays valid, and those three fields unchanged, until
 * cancel_map_remove(). Returns an opaque handle for cancel_map_remove(), or NULL
 * (ENOMEM/EIO, or EINVAL: a key or Unix path too long).
 */
void *cancel_map_issue(struct cancel_map *m, const struct session *owner, uint32_t pid,
		       const uint8_t *server_key, uint32_t key_len, uint8_t *client_key)
	__attribute__((warn_unused_result));

/* Find the server key for a client's CancelRequest; compares keys in constant time. Fills
 * out (the session id included) only when the key matches: a wrong key learns nothing. */
bool cancel_map_lookup(struct cancel_map *m, uint32_t pid, const uint8_t *client_key,
		       uint32_t key_len, struct cancel_target *out);

void cancel_map_remove(struct cancel_map *m, void *handle);

/* The session, server, pid and server key behind a handle cancel_map_issue() returned (an admin
 * kill cancels the session's statement with it). The caller wipes out->server_key with
 * OPENSSL_cleanse() when done. */
void cancel_map_target(struct cancel_map *m, void *handle, struct cancel_target *out);

#endif
