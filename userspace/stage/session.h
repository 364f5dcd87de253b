/*
 * session: the identity and counters of one client session, as every inspection stage,
 * log line and admin listing sees them.
 *
 * Written only by the connection's worker thread. Strings are owned by the session and
 * immutable once set; counters may be read by the admin thread without locks (64-bit
 * aligned loads are atomic on the architectures pgwarden supports; a slightly stale value
 * is fine for a listing).
 */
#ifndef PGWARDEN_SESSION_H
#define PGWARDEN_SESSION_H

#include "base/addr.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSION_ID_LEN 16
#define SESSION_ID_HEXLEN (SESSION_ID_LEN * 2)
/* "unix:" and a sun_path, or an address: what session_upstream_text() writes. */
#define SESSION_UPSTREAM_STRLEN (sizeof("unix:") + 108)

/* The local process that opened a steered connection, as the kernel recorded it. */
struct session_process {
	bool known;
	uint32_t pid;
	uint32_t tgid;
	uint32_t uid;
	uint32_t gid;
	uint64_t cgroup_id;
	char comm[16];
};

enum session_route {
	SESSION_ROUTE_EXPLICIT = 0, /* client dialled pgwarden's listen address */
	SESSION_ROUTE_STEERED,      /* local client redirected by the cgroup hooks */
	SESSION_ROUTE_TPROXY,       /* remote client redirected by nftables TPROXY */
};

struct session {
	uint8_t id[SESSION_ID_LEN];
	char id_hex[SESSION_ID_HEXLEN + 1];
	enum session_route route;
	struct addr client;     /* the peer of the accepted socket */
	struct addr dialled;    /* the address the client connected to */
	struct addr upstream;   /* where pgwarden forwards, unless upstream_unix is set */
	/* PostgreSQL's Unix socket for a client of the relay's Unix listener: the connection's
	 * config snapshot owns the text (unix_upstream), and outlives the session. */
	const char *upstream_unix;
	struct session_process process;
	uint64_t start_wall_ns;
	uint64_t start_mono_ns;
	/* From the StartupMessage (NULL until it arrives). */
	char *user;
	char *database;
	char *application_name;
	uint32_t protocol;
	bool replication;
	/* From the server. */
	uint32_t backend_pid;
	bool authenticated;
	uint8_t tx_status; /* 'I', 'T', 'E'; 0 before the first ReadyForQuery */
	/* Counters. */
	uint64_t bytes_from_client;
	uint64_t bytes_from_server;
	uint64_t statements; /* Query and Execute messages forwarded */
	char end_reason[64]; /* why the session ended, set once */
};

/* Fill id and id_hex from the CSPRNG. 0 or -EIO. */
int session_new_id(struct session *s) __attribute__((warn_unused_result));

/* Release owned strings; the struct itself belongs to the caller. */
void session_release(struct session *s);

const char *session_route_to_str(enum session_route r);

/* Where the session goes, as logs and listings show it: "unix:/path" or "host:port";
 * "" when not known. buf has SESSION_UPSTREAM_STRLEN bytes; returns buf. */
const char *session_upstream_text(const struct session *s, char *buf, size_t n);

#endif
