/*
 * conn_state: the connection's states, the one table of legal transitions, the single
 * writer of the state, and the deadline each state is bounded by.
 */
#include "relay/conn_internal.h"

#include "base/clock.h"
#include "base/log.h"

#include <stdlib.h>

#define BIT(s) (1u << (s))
#define ENDINGS (BIT(CONN_CLOSING) | BIT(CONN_CLOSED))
/* Where a logged-in session may go whatever it is doing: the client leaves, the server
 * breaks, or it ends. */
#define LOGGED_IN_EXITS (BIT(CONN_FAREWELL) | BIT(CONN_SERVER_GONE) | ENDINGS)

static const uint32_t conn_next_states[CONN_STATE_COUNT] = {
	[CONN_NEGOTIATE] = BIT(CONN_CLIENT_TLS) | BIT(CONN_CONNECTING) | BIT(CONN_CANCEL) | ENDINGS,
	/* The handshake done, the startup packet comes inside TLS. */
	[CONN_CLIENT_TLS] = BIT(CONN_NEGOTIATE) | ENDINGS,
	[CONN_CONNECTING] = BIT(CONN_SERVER_TLS) | BIT(CONN_AUTH) | ENDINGS,
	[CONN_SERVER_TLS] = BIT(CONN_AUTH) | ENDINGS,
	[CONN_AUTH] = BIT(CONN_AUTH_ANSWER) | BIT(CONN_READY) | LOGGED_IN_EXITS,
	[CONN_AUTH_ANSWER] = BIT(CONN_AUTH) | LOGGED_IN_EXITS,
	[CONN_READY] = BIT(CONN_BUSY) | LOGGED_IN_EXITS,
	[CONN_BUSY] = BIT(CONN_READY) | BIT(CONN_COPY_IN) | BIT(CONN_COPY_OUT) |
		      BIT(CONN_COPY_BOTH) | LOGGED_IN_EXITS,
	[CONN_COPY_IN] = BIT(CONN_BUSY) | BIT(CONN_READY) | LOGGED_IN_EXITS,
	[CONN_COPY_OUT] = BIT(CONN_BUSY) | BIT(CONN_READY) | LOGGED_IN_EXITS,
	[CONN_COPY_BOTH] = BIT(CONN_BUSY) | BIT(CONN_READY) | LOGGED_IN_EXITS,
	[CONN_CANCEL] = ENDINGS,
	[CONN_FAREWELL] = ENDINGS,
	[CONN_SERVER_GONE] = ENDINGS,
	[CONN_CLOSING] = BIT(CONN_CLOSED),
	[CONN_CLOSED] = 0,
};

static const char *const conn_state_names[CONN_STATE_COUNT] = {
	[CONN_NEGOTIATE] = "startup",    [CONN_CONNECTING] = "connecting",
	[CONN_CLIENT_TLS] = "client_tls", [CONN_SERVER_TLS] = "server_tls",
	[CONN_AUTH] = "auth",            [CONN_AUTH_ANSWER] = "auth",
	[CONN_READY] = "idle",           [CONN_BUSY] = "active",
	[CONN_COPY_IN] = "copy_in",      [CONN_COPY_OUT] = "copy_out",
	[CONN_COPY_BOTH] = "copy_both",  [CONN_CANCEL] = "cancel",
	[CONN_FAREWELL] = "farewell",    [CONN_SERVER_GONE] = "server_gone",
	[CONN_CLOSING] = "closing",      [CONN_CLOSED] = "closed",
};

const char *conn_state_to_str(enum conn_state s)
{
	return (unsigned)s < CONN_STATE_COUNT ? conn_state_names[s] : "unknown";
}

bool conn_transition_valid(enum conn_state from, enum conn_state to)
{
	return (unsigned)from < CONN_STATE_COUNT && (unsigned)to < CONN_STATE_COUNT &&
	       (conn_next_states[from] & BIT(to));
}

/* The metrics label of each state (a table: looked up twice per statement). */
static const uint8_t conn_mstate[CONN_STATE_COUNT] = {
	[CONN_NEGOTIATE] = MSTATE_STARTUP,  [CONN_CLIENT_TLS] = MSTATE_STARTUP,
	[CONN_CONNECTING] = MSTATE_CONNECTING, [CONN_SERVER_TLS] = MSTATE_CONNECTING,
	[CONN_AUTH] = MSTATE_AUTH,          [CONN_AUTH_ANSWER] = MSTATE_AUTH,
	[CONN_READY] = MSTATE_IDLE,         [CONN_BUSY] = MSTATE_ACTIVE,
	[CONN_COPY_IN] = MSTATE_COPY,       [CONN_COPY_OUT] = MSTATE_COPY,
	[CONN_COPY_BOTH] = MSTATE_COPY,     [CONN_CANCEL] = MSTATE_CANCEL,
	[CONN_FAREWELL] = MSTATE_CLOSING,   [CONN_SERVER_GONE] = MSTATE_CLOSING,
	[CONN_CLOSING] = MSTATE_CLOSING,    [CONN_CLOSED] = MSTATE_CLOSING,
};

/*
 * A connection that is winding down (CLOSING, a client that said goodbye and stopped
 * reading, a server whose last words are awaited) gets a bounded time to finish: a peer
 * that stops reading cannot pin it, nor a drain.
 */
#define CONN_LINGER_MAX_MS 5000

static uint64_t conn_linger_ns(const struct conn *c)
{
	uint64_t ms = c->config->message_timeout_ms < CONN_LINGER_MAX_MS ? c->config->message_timeout_ms
									 : CONN_LINGER_MAX_MS;

	return ms * NSEC_PER_MSEC;
}

void conn_linger(struct conn *c)
{
	if (!c->linger_deadline)
		c->linger_deadline = conn_now(c) + conn_linger_ns(c);
}

/*
 * The single writer of c->state. An illegal transition is a bug in pgwarden, never a
 * peer's doing: it aborts debug and sanitizer builds, and ends the connection otherwise.
 */
void conn_set_state(struct conn *c, enum conn_state s)
{
	struct metrics_shard *m = conn_metrics(c);
	enum conn_state from = c->state;

	if (from == s)
		return;
	if (!conn_transition_valid(from, s)) {
		log_error("conn_state", "session=%s illegal transition %s -> %s", c->session.id_hex,
			  conn_state_to_str(from), conn_state_to_str(s));
#ifndef NDEBUG
		abort();
#endif
		s = from < CONN_CLOSING ? CONN_CLOSING : CONN_CLOSED;
		if (from == s)
			return;
	}
	log_debug("conn_state", "session=%s %s -> %s", c->session.id_hex, conn_state_to_str(from),
		  conn_state_to_str(s));
	if (m && s == CONN_CLOSED)
		metrics_gauge_add(m, conn_mstd(c)->sessions, conn_mstate[from], -1);
	else if (m && conn_mstate[from] != conn_mstate[s])
		metrics_gauge_move(m, conn_mstd(c)->sessions, conn_mstate[from], conn_mstate[s]);
	__atomic_store_n(&c->state, s, __ATOMIC_RELAXED); /* the admin listing reads it */
	if (s == CONN_READY)
		c->ready_since = conn_now(c);
	if (s == CONN_CLOSING || s == CONN_SERVER_GONE)
		conn_linger(c);
}

/* ---- deadlines ------------------------------------------------------------------------- */

enum conn_deadline {
	CONN_DL_NONE = 0,
	CONN_DL_LINGER,
	CONN_DL_CONNECT,
	CONN_DL_LOGIN,
	CONN_DL_RESUME,
	CONN_DL_MESSAGE,
	CONN_DL_IDLE,
	CONN_DL_LIFETIME,
};

static void conn_dl_min(uint64_t *at, enum conn_deadline *which, uint64_t t, enum conn_deadline w)
{
	if (t && t < *at) {
		*at = t;
		*which = w;
	}
}

/* The earliest moment something about c must be decided, and what; UINT64_MAX when none. */
static uint64_t conn_next_deadline(const struct conn *c, enum conn_deadline *which)
{
	const struct conn_dir *c2s = &c->dir[CONN_C2S];
	uint64_t at = UINT64_MAX;

	*which = CONN_DL_NONE;
	switch (c->state) {
	case CONN_CLOSING:
	case CONN_SERVER_GONE:
		conn_dl_min(&at, which, c->linger_deadline, CONN_DL_LINGER);
		return at;
	case CONN_FAREWELL:
		/* Owed the server's answers however long the server takes; but a client that
		 * also stopped reading them has given up on them. */
		if (c->client_blocked_since)
			conn_dl_min(&at, which, c->client_blocked_since + conn_linger_ns(c),
				    CONN_DL_LINGER);
		return at;
	case CONN_CANCEL:
	case CONN_CONNECTING:
		conn_dl_min(&at, which, c->connect_deadline, CONN_DL_CONNECT); /* 0 once connected */
		/* fall through */
	case CONN_NEGOTIATE:
	case CONN_CLIENT_TLS:
	case CONN_SERVER_TLS:
	case CONN_AUTH:
	case CONN_AUTH_ANSWER:
		conn_dl_min(&at, which, c->login_deadline, CONN_DL_LOGIN);
		return at;
	default:
		break;
	}
	/* Logged in. */
	if (c2s->hold == CONN_HOLD_STAGE)
		conn_dl_min(&at, which, c->resume_at, CONN_DL_RESUME);
	if (c2s->msg_open_since && c2s->hold == CONN_HOLD_NONE && !(c2s->buf && c2s->framed))
		conn_dl_min(&at, which, c2s->msg_open_since + c->config->message_timeout_ms * NSEC_PER_MSEC,
			    CONN_DL_MESSAGE);
	if (c->state == CONN_READY && c->ready_since) {
		uint64_t ms = c->session.tx_status == 'I' || !c->session.tx_status
				      ? c->limits.idle_ms
				      : c->limits.idle_in_transaction_ms;

		if (ms)
			conn_dl_min(&at, which, c->ready_since + ms * NSEC_PER_MSEC, CONN_DL_IDLE);
	}
	if (c->limits.lifetime_ms)
		conn_dl_min(&at, which, c->session.start_mono_ns + c->limits.lifetime_ms * NSEC_PER_MSEC,
			    CONN_DL_LIFETIME);
	return at;
}

void conn_timer_update(struct conn *c)
{
	struct loop *loop = &c->worker->loop;
	enum conn_deadline which;
	uint64_t deadline = conn_next_deadline(c, &which);

	if (deadline == UINT64_MAX) {
		loop_timer_cancel(loop, &c->timer);
		return;
	}
	/* Lazy: an armed timer that fires early re-checks; only an earlier deadline re-arms. */
	if (loop_timer_armed(&c->timer) && c->timer.deadline <= deadline)
		return;
	if (loop_timer_arm(loop, &c->timer, deadline))
		conn_close(c, "out of memory");
}

void conn_timer_fired(struct loop *loop, struct loop_timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);
	enum conn_deadline which;
	uint64_t deadline = conn_next_deadline(c, &which);

	if (c->state == CONN_CLOSED)
		return;
	if (deadline > loop->now) {
		conn_timer_update(c);
		return;
	}
	switch (which) {
	case CONN_DL_LINGER:
		conn_close(c, c->state == CONN_SERVER_GONE ? "server stopped answering while closing"
							   : "peer stopped reading while closing");
		return;
	case CONN_DL_CONNECT:
		conn_refused(c, MREFUSE_UPSTREAM);
		if (c->state == CONN_CANCEL) {
			conn_close(c, "cancel timeout");
			return;
		}
		conn_fail(c, SQLSTATE_CONNECTION_FAILURE, "timeout connecting to the database server",
			  "upstream connect timeout");
		break;
	case CONN_DL_LOGIN:
		if (c->state == CONN_CANCEL) {
			conn_close(c, "cancel timeout");
			return;
		}
		conn_refused(c, MREFUSE_TIMEOUT);
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
			  c->state == CONN_NEGOTIATE    ? "timeout waiting for the startup packet"
			  : c->state == CONN_CLIENT_TLS ? "timeout during the TLS handshake"
			  : c->state == CONN_SERVER_TLS ? "timeout negotiating TLS with the database server"
							: "timeout during authentication",
			  "startup timeout");
		break;
	case CONN_DL_RESUME:
		c->dir[CONN_C2S].hold = CONN_HOLD_NONE;
		c->resume_at = 0;
		break;
	case CONN_DL_MESSAGE:
		conn_fail(c, SQLSTATE_PROTOCOL_VIOLATION,
			  "timeout: the client sent an incomplete message and went silent",
			  "incomplete message timeout");
		break;
	case CONN_DL_IDLE:
		if (c->session.tx_status == 'T' || c->session.tx_status == 'E')
			conn_fail(c, SQLSTATE_IDLE_IN_TRANSACTION,
				  "terminating connection due to idle-in-transaction timeout",
				  "idle in transaction timeout");
		else
			conn_fail(c, SQLSTATE_IDLE_SESSION,
				  "terminating connection due to idle-session timeout",
				  "idle session timeout");
		break;
	case CONN_DL_LIFETIME:
		conn_fail(c, SQLSTATE_ADMIN_SHUTDOWN,
			  "terminating connection: the session reached its maximum lifetime",
			  "session lifetime exceeded");
		break;
	case CONN_DL_NONE:
		return;
	}
	conn_run(c);
}
