/*
 * conn: THE connection state machine — one client connection, its upstream connection, and
 * the two byte streams between them.
 *
 *   STARTUP ──StartupMessage──▶ CONNECTING ──connected──▶ AUTH ──first ReadyForQuery──▶ READY
 *      │ SSLRequest/GSSENCRequest: answer 'N', stay            READY ⇄ BUSY ⇄ COPY_IN/OUT/BOTH
 *      └ CancelRequest ──▶ CANCEL (forward the mapped key, then close)
 *   any state ──error, Terminate, kill, drain──▶ CLOSING (flush the last bytes) ──▶ CLOSED
 *
 * conn_set_state() is the only writer of the state. Every decision is taken on a framed
 * message boundary, never on a read() boundary. Bodies of messages nobody must inspect are
 * streamed by count in constant memory; a connection holds a buffer only while it has bytes
 * that could not leave at once (a partial message, or a peer that is not reading).
 */
#ifndef PGWARDEN_CONN_H
#define PGWARDEN_CONN_H

#include "admin/admin_text.h"
#include "base/buf.h"
#include "loop/loop.h"
#include "session/session.h"
#include "stage/stage.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct config;

#define CONN_STMT_CACHE 8

enum conn_state {
	CONN_STATE_FIRST = 0,
	CONN_STARTUP = CONN_STATE_FIRST,
	CONN_CONNECTING,
	CONN_AUTH,
	CONN_READY,
	CONN_BUSY,
	CONN_COPY_IN,
	CONN_COPY_OUT,
	CONN_COPY_BOTH,
	CONN_CANCEL,
	CONN_CLOSING,
	CONN_CLOSED,
	CONN_STATE_COUNT
};

const char *conn_state_to_str(enum conn_state s);

enum conn_dir_id {
	CONN_C2S = 0, /* client → server */
	CONN_S2C = 1, /* server → client */
};

/* One byte stream. Bytes [buf->head, buf->head + framed) are whole-message-checked and may
 * be sent; the rest await framing. */
struct conn_dir {
	struct buf *buf;      /* NULL while every byte read has left */
	uint32_t framed;
	uint32_t stream_left; /* body bytes of the current message still to pass by count */
	uint32_t need;        /* bytes the next message needs whole (0: no constraint) */
	bool can_read;        /* edge-triggered: the source may have bytes */
	bool hup;             /* the source hung up: read until EOF, not until a short read */
	bool eof;
};

struct conn {
	struct conn *prev, *next; /* worker's list */
	struct worker *worker;
	struct config *config; /* snapshot taken at accept */
	enum conn_state state;
	int client_fd;
	int upstream_fd;
	bool client_writable;
	bool upstream_writable;
	bool server_sent_fatal; /* the server's last word was a FATAL: add nothing after it */
	bool auth_requested;    /* the server's last Authentication message awaits an answer */
	bool client_done;       /* the client said goodbye: read nothing more from it, but give it
				 * the server's remaining answers until the server closes */
	bool upstream_broken;   /* a send upstream failed: send nothing more, read its last words */
	bool holds_session;     /* counts against max_connections */
	bool refusal_counted;   /* connections_refused_total has this one */
	uint32_t syncs_since_exec; /* Syncs forwarded since the last Execute or Query */
	uint8_t startup_requests; /* SSL/GSSENC requests already answered */
	uint32_t pending; /* Query/Sync/FunctionCall forwarded, ReadyForQuery not yet seen */
	struct conn_dir dir[2];
	struct loop_watch client_watch;
	struct loop_watch upstream_watch;
	struct loop_timer timer;
	struct loop_deferred free_later;
	uint64_t startup_deadline; /* monotonic ns; until READY */
	uint64_t connect_deadline; /* monotonic ns; while the upstream connect is in progress */
	uint64_t linger_deadline;  /* monotonic ns; CLOSING ends by then at the latest */
	uint64_t client_blocked_since; /* monotonic ns: the client stopped taking bytes; 0: it takes */
	uint64_t msg_start;        /* monotonic ns: the client's incomplete message was first seen */
	bool msg_open;             /* the client stream is inside a message */
	void *cancel_handle;
	struct stage_chain chain;
	bool session_started;
	struct session session;
	/* For the admin listing and metrics. */
	uint64_t busy_since;     /* monotonic ns when the in-flight work started; 0: idle */
	uint64_t upstream_since; /* monotonic ns when it had all left for the server; 0: not yet */
	uint64_t rfq_owed_since; /* [ops #14] busy_since of a request whose ReadyForQuery is
				  * framed but not yet written to the client; 0: none */
	int64_t last_latency_ns; /* -1 before the first statement completes */
	uint64_t errors;         /* ErrorResponses sent to the client */
	struct admin_text last_statement;
	/* Statement classes for statements_total, in bounded memory: the unnamed prepared
	 * statement, the last few named ones (by name hash), and the class of the portal
	 * the last Bind made, which its Execute counts. */
	uint8_t unnamed_class;
	uint8_t portal_class;
	uint8_t stmt_cache_next;
	struct {
		uint64_t name_hash;
		uint8_t cls;
	} stmt_cache[CONN_STMT_CACHE];
};

/* The session as the admin socket lists it (docs/ADMIN.md). Any thread, under the owning
 * worker's lock; NULL on ENOMEM. */
struct json_t;
struct json_t *conn_admin_json(struct conn *c, uint64_t now_mono_ns);

/* Take ownership of an accepted, non-blocking client socket. On failure the socket is
 * closed and the reason logged. */
struct worker_listener;
void conn_accept(struct worker *w, const struct worker_listener *l, int fd,
		 const struct sockaddr *peer, socklen_t peer_len);

/* End the session with FATAL sqlstate/message (at a message boundary) and close. */
void conn_terminate(struct conn *c, const char *sqlstate, const char *message,
		    const char *reason);

#endif
