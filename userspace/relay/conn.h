/*
 * conn: one client connection, its upstream connection, and the two byte streams between
 * them, driven by ONE state machine.
 *
 *   NEGOTIATE ──StartupMessage──▶ CONNECTING ──connected──▶ AUTH ⇄ AUTH_ANSWER
 *    │ ▲ │ GSSENCRequest, SSLRequest ('N'): answered, stay │    ▲      │ first ReadyForQuery
 *    │ │ └ CancelRequest ──▶ CANCEL (the key goes on)     │    │      ▼
 *    ▼ │ handshake done                  tls.server.mode ▼    │ 'S'+handshake, or 'N' (prefer)
 *   CLIENT_TLS (SSLRequest 'S', or a direct ClientHello)  SERVER_TLS (SSLRequest upstream)
 *                                        READY ⇄ BUSY ⇄ COPY_IN / COPY_OUT / COPY_BOTH
 *   logged in ──client Terminate or half-close──▶ FAREWELL (the server's last answers)
 *   logged in ──a send to the server failed──▶ SERVER_GONE (read its last words)
 *   any ──error, server FATAL, kill, drain, timeout──▶ CLOSING (flush) ──▶ CLOSED
 *
 * The transitions are one table (conn_state.c), checked in conn_set_state(), the only
 * writer of the state; each state names the deadline that bounds it. Framers report what
 * they did; the phase code decides. Every decision is taken on a framed message boundary,
 * never on a read() boundary. Bodies of messages nobody must inspect pass by count in
 * constant memory; a connection holds a buffer only while it has bytes that could not leave
 * at once. Which transport carries a leg (TCP, Unix, TLS) is the transport's business.
 *
 * Files: conn.c (lifecycle, events, the run loop), conn_state.c (the table, timers),
 * conn_io.c (buffers, reading, sending), conn_frontend.c (client → server framing, the
 * startup family, stages on client messages, rejects), conn_backend.c (server → client
 * framing, the login as the server tells it, stages on server messages, streaming),
 * conn_upstream.c (connecting to the server), conn_tls.c (TLS negotiation on both legs),
 * conn_admin.c (the admin view), track.c (which
 * answer belongs to which request).
 */
#ifndef PGWARDEN_CONN_H
#define PGWARDEN_CONN_H

#include "admin/admin_text.h"
#include "base/buf.h"
#include "loop/loop.h"
#include "relay/guard.h"
#include "relay/track.h"
#include "relay/transport.h"
#include "session/session.h"
#include "stage/stage.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct config;
struct conn_auth;
struct tls_snapshot;

enum conn_state {
	CONN_STATE_FIRST = 0,
	CONN_NEGOTIATE = CONN_STATE_FIRST, /* startup-family packets */
	CONN_CLIENT_TLS,  /* the client leg's TLS handshake (after 'S', or direct) */
	CONN_CONNECTING,  /* connecting to the server */
	CONN_SERVER_TLS,  /* the server leg's SSLRequest, its answer, its TLS handshake */
	CONN_AUTH,        /* the server's turn in the login */
	CONN_AUTH_ANSWER, /* the client owes an answer to the server's request */
	CONN_READY,       /* nothing owed: the last ReadyForQuery reached the client */
	CONN_BUSY,
	CONN_COPY_IN,
	CONN_COPY_OUT,
	CONN_COPY_BOTH,
	CONN_CANCEL,      /* forwarding a CancelRequest */
	CONN_FAREWELL,    /* the client said goodbye: it still gets what the server owes it */
	CONN_SERVER_GONE, /* sending to the server failed: read its last words, then end */
	CONN_CLOSING,     /* deliver the last bytes, then close */
	CONN_CLOSED,
	CONN_STATE_COUNT
};

const char *conn_state_to_str(enum conn_state s);

/* Is `to` a legal next state after `from`? (The table conn_set_state() enforces.) */
bool conn_transition_valid(enum conn_state from, enum conn_state to);

enum conn_dir_id {
	CONN_C2S = 0, /* client → server */
	CONN_S2C = 1, /* server → client */
};

/* Why a direction's framing has stopped at a message it has not judged yet. */
enum conn_hold {
	CONN_HOLD_NONE = 0,
	CONN_HOLD_STAGE, /* a stage paused the message until woken (or resume_at) */
};

/*
 * One byte stream. Invariant (asserted in debug and sanitizer builds): buf is NULL or
 * 0 <= framed <= buf_len(buf); bytes [buf->head, buf->head + framed) may be sent as they are;
 * the rest await framing. stream_left and skip_left are never both set.
 */
struct conn_dir {
	struct buf *buf;      /* NULL while every byte read has left */
	uint32_t framed;
	uint32_t stream_left; /* body bytes of the current message still to pass by count */
	uint32_t skip_left;   /* body bytes of the current message to drop unsent */
	uint32_t need;        /* bytes the next message needs whole (0: no constraint) */
	enum conn_hold hold;
	bool eof;             /* the source ended (or failed) */
	uint64_t msg_open_since; /* C2S: when the current incomplete message was first seen */
};

/* A server message a stage is rewriting as it streams (masking DataRow, CopyData); its
 * two flags are the conn's stream_active and stream_produced, which sit in the conn's
 * small fields instead of padding this struct. */
struct conn_stream {
	struct stage_stream *st; /* allocated at the session's first streamed message */
	struct buf *out;         /* replacement bytes not sent yet */
};

/* How another thread reaches a connection that paused for it: worker slot + generation.
 * Claimed at session start when a stage wakes (stage_pipeline.wakes); worker NULL: none. */
struct stage_waker {
	struct worker *worker;
	uint32_t slot;
	uint32_t gen;
};

struct conn {
	struct conn *prev, *next; /* worker's list */
	struct worker *worker;
	struct config *config; /* snapshot taken at accept */
	struct transport *client; /* the client leg's transport */
	struct transport *server; /* the server leg's; NULL before the upstream connect */
	struct transport client_sock; /* storage for the plain transports */
	struct transport server_sock;
	struct loop_watch client_watch;
	struct loop_watch server_watch;
	struct conn_dir dir[2];
	struct conn_stream stream;
	struct track track;
	struct stage_chain chain;
	struct stage_limits limits;
	struct stage_waker waker;
	struct loop_timer timer;
	struct loop_deferred free_later;
	/* Monotonic ns. A session logs in once and never goes back: the login's deadline and
	 * the idle clock, read only before and after it (conn_next_deadline), share a word. */
	union {
		uint64_t login_deadline; /* NEGOTIATE..AUTH_ANSWER and CANCEL end by then */
		uint64_t ready_since;    /* logged in: READY since (idle timeouts) */
	};
	uint64_t connect_deadline; /* CONNECTING (and CANCEL's connect) ends by then */
	uint64_t linger_deadline;  /* CLOSING ends by then at the latest */
	uint64_t resume_at;        /* a stage's PAUSE ends by then (0: only a wake) */
	uint64_t client_blocked_since; /* the client stopped taking bytes; 0: it takes */
	struct tls_snapshot *tls;  /* the TLS settings this session started with; NULL: none */
	enum conn_state state;
	uint8_t negotiated;        /* encryption requests answered (PostgreSQL's ssl/gss_done) */
	uint8_t server_tls_step;   /* SERVER_TLS: where the upstream negotiation is (conn_tls.c) */
	uint8_t server_tls_sent;   /* SERVER_TLS: SSLRequest bytes sent so far */
	bool holds_session;        /* counts against max_connections (owns a slot) */
	bool refusal_counted;      /* connections_refused_total has this one */
	bool session_started;      /* stages have seen session_start (atomic: admin reads) */
	bool stream_active;        /* the stage has the message: its body goes to the stage */
	bool stream_produced;      /* some of the current message's replacement was written: a
				    * CLOSE can then no longer be told to the client */
	bool server_sees_client;   /* the server leg came from the client's own address */
	void *cancel_handle;
	/* Terminate mode with server_reuse: what the server leg is, for keeping it when the
	 * client leaves (conn_reuse.c); NULL when it may not be kept. */
	struct server_keep *keep;
	struct conn_auth *auth; /* the login's authentication machines (conn_auth.c); NULL after */
	struct guard_slot guard; /* what the accept-time guard counts for it (relay/guard.h) */
	struct session session;
	/* For the admin listing and metrics. */
	uint64_t busy_since;     /* monotonic ns when the in-flight work started; 0: idle */
	uint64_t upstream_since; /* monotonic ns when it had all left for the server; 0: not yet */
	uint64_t rfq_owed_since; /* busy_since of a request whose ReadyForQuery is framed but
				  * not yet written to the client (the client's clock); 0: none */
	int64_t last_latency_ns; /* -1 before the first statement completes */
	uint64_t errors;         /* ErrorResponses sent to the client */
	/* The start of the last Query or Parse, allocated at the session's first: a session
	 * that never sent one does not carry the 264 bytes. Published by the worker
	 * (release), read by the admin thread (acquire); freed with the connection. */
	struct admin_text *last_statement;
	/* The policy rule that admitted the session, allocated when there is one: a session
	 * that no rule admitted (no policy) does not carry the 72 bytes. Set once by the worker
	 * (release), read by the admin thread (acquire); freed with the connection. */
	struct admin_name *rule;
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

/*
 * Take ownership of a client transport (the accept path, and tests over a scripted fake
 * transport). route and addresses are filled by the caller in *proto (a session template:
 * id, route, client, dialled, upstream, process). 0, or -errno with t destroyed.
 */
int conn_start(struct worker *w, struct transport *t, const struct session *proto)
	__attribute__((warn_unused_result));

/* End the session with FATAL sqlstate/message (at a message boundary) and close. */
void conn_terminate(struct conn *c, const char *sqlstate, const char *message,
		    const char *reason);

/* On the worker's thread: a stage's wake for the connection in slot (if still gen). */
void conn_wake(struct worker *w, uint32_t slot, uint32_t gen);

/* The loop saw events on one of the connection's legs (also what tests call). */
void conn_client_events(struct conn *c, uint32_t events);
void conn_server_events(struct conn *c, uint32_t events);

#endif
