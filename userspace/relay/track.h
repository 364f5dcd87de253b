/*
 * track: the request tracker of one logged-in session. Every client message the server will
 * answer is pushed when it is forwarded; every server message is matched against the oldest
 * request still owed an answer. From that one queue come:
 *   - replies pgwarden makes itself that land exactly where the server would have answered
 *     (a rejected message is replaced by a "poison" message that makes the server fail at
 *     that point, and the server's error is replaced by the stage's, so earlier pipelined
 *     results arrive intact and the transaction ends up exactly as after a server error);
 *   - each request's completion: command tag, duration, or its error, or that the
 *     server skipped it after an earlier error;
 *   - the prepared statements and portals the server really has (session/stmt.h),
 *     changed only at the server's confirmations;
 *   - how many ReadyForQuery messages are still owed (READY vs BUSY).
 *
 * Protocol rules it follows (PostgreSQL's postgres.c): after an error in an extended-query
 * batch the server skips every message up to Sync; a simple Query, a FunctionCall and a
 * Sync each end with exactly one ReadyForQuery; Flush and the copy-in messages are not
 * answered; Sync and Flush are ignored during copy-in. NoticeResponse, ParameterStatus and
 * NotificationResponse can arrive at any time and answer nothing.
 *
 * The queue holds at most `max` requests; the caller stops reading the client when
 * track_full() (backpressure: a client cannot make pgwarden remember without bound).
 * Single-threaded: the connection's worker only.
 */
#ifndef PGWARDEN_TRACK_H
#define PGWARDEN_TRACK_H

#include "proto/proto.h"
#include "session/session.h"
#include "session/stmt.h"

#include <stdbool.h>
#include <stdint.h>

enum track_kind {
	TRACK_QUERY = 1,
	TRACK_FUNCTION,
	TRACK_PARSE,
	TRACK_BIND,
	TRACK_DESCRIBE,
	TRACK_EXECUTE,
	TRACK_CLOSE,
	TRACK_SYNC,
	TRACK_POISON, /* stands in for a rejected message: its answer is replaced */
};

/* What one statement of a simple Query does to the prepared statements, applied when the
 * server confirms that statement (its CommandComplete): SQL PREPARE, DEALLOCATE, DISCARD.
 * PostgreSQL's prepared statements are not transactional: a confirmed PREPARE outlives a
 * rollback, and one the server never ran (an earlier error) never existed. */
enum track_sql_op {
	TRACK_SQL_PREPARE = 1,    /* stmt becomes the statement of its name */
	TRACK_SQL_DEALLOCATE,     /* name is removed */
	TRACK_SQL_DEALLOCATE_ALL, /* DEALLOCATE ALL, DISCARD ALL */
};

struct track_sql_change {
	uint32_t part;           /* which statement of the Query (0-based) */
	uint8_t op;              /* enum track_sql_op */
	char *name;              /* DEALLOCATE */
	struct stmt_entry *stmt; /* PREPARE: the statement to commit (sql_level) */
};

struct track_entry {
	uint8_t kind;          /* enum track_kind */
	uint8_t target;        /* Describe/Close: 'S' or 'P' */
	bool errored;          /* Query/Function/Sync: an error was reported, 'Z' still owed */
	bool preparing;        /* Execute: runs an SQL PREPARE (counts against the limits) */
	uint32_t parts;        /* Query: statements completed so far */
	uint64_t request;
	uint64_t started_ns;
	struct stmt_entry *stmt; /* Parse: the statement to commit; Bind/Execute: what runs */
	/* What the entry holds of its own depends on its kind, and no kind holds two: one
	 * word, so that a ring stays small. Read by kind; `held`
	 * says whether any is set. */
	union {
		void *held;       /* NULL: the entry holds none of these */
		char *name;       /* Bind: portal; Close: the name; NULL: none */
		struct track_sql_change *changes; /* Query: its SQL PREPARE/DEALLOCATE/DISCARD */
		uint8_t *reply;   /* POISON: the ErrorResponse that replaces the server's answer */
	};
	union {
		uint32_t nchanges; /* Query */
		uint32_t reply_len; /* POISON */
	};
};

/* What the connection hears back from the tracker (then it tells the stages). */
struct track_done {
	uint64_t request;
	enum track_kind kind;
	const char *command_tag; /* NULL when the request failed, was skipped or had none;
				  * track_tag_rows() reads its row count */
	uint64_t duration_ns;
	bool failed;   /* the server answered it with an error */
	bool skipped;  /* the server skipped it after an earlier error in its batch */
	bool final;    /* the request needs no more answers (a Query: its ReadyForQuery) */
	const struct stmt_entry *stmt; /* Execute/Bind: the statement it ran, if known */
	unsigned part; /* Query: which statement of it (0-based) */
};

typedef void (*track_done_fn)(void *arg, const struct track_done *d);

/* The ring a batch takes: a prepared statement's Bind, Describe, Execute and Sync, or an
 * unnamed one's Parse, Bind, Describe, Execute and Sync (libpq's PQexecParams: five, which
 * a ring of four sent to the heap for every transaction), the batches most clients send for
 * every transaction. A power of two (the ring's indices wrap by mask). */
#define TRACK_RING_MIN 8

/*
 * Rings of TRACK_RING_MIN entries that no session holds, kept for the next session that
 * has a request in flight: the worker's sessions share them, so an idle session holds no
 * ring and a batch takes one without a heap allocation. It keeps at most
 * TRACK_RINGS_SPARE_MAX: as many as were in use at once would be one per session after a
 * burst of logins, held by a worker whose sessions then sit idle; past it a batch's ring
 * comes from the heap. Single-threaded: the worker's. track_rings_destroy() frees them.
 */
#define TRACK_RINGS_SPARE_MAX 64
struct track_ring_spare;
struct track_rings {
	struct track_ring_spare *spare; /* a list through the rings' own memory */
	uint32_t count;                 /* rings on it */
};

void track_rings_destroy(struct track_rings *r);

struct track {
	/* cap entries, a power of two, while requests are in flight; NULL (cap 0) when none
	 * are: a TRACK_RING_MIN ring from rings, or, once more are in flight than it holds, a
	 * heap ring that is freed when the queue empties. */
	struct track_entry *ring;
	struct track_rings *rings;
	uint32_t cap;
	uint32_t head;
	uint32_t count;
	uint32_t max;
	uint32_t owed_ready; /* ReadyForQuery messages still owed */
	/* The kinds of request done hears of (TRACK_KIND_BIT each; track_init: all, when
	 * there is a listener). Every transaction completes several requests: a listener
	 * that counts only some spares building and handing over the others. */
	uint32_t done_kinds;
	/* The server reported an error in an extended batch and skips every message up to
	 * the next Sync, and that Sync has not been sent yet: what the client sends until
	 * then is answered by nothing. */
	bool skipping;
	bool keep_text;      /* statement texts are kept (a stage wants them) */
	uint64_t next_request;
	struct stmt_table stmts;
	const char *session_id_hex; /* names the poison statement (owned by the session) */
	/* The session, for the server's standard_conforming_strings when SQL text is read as
	 * the server reads it (NULL: on). Set by the connection after track_init(). */
	const struct session *session;
	uint8_t *last_reply;  /* what the last TRACK_REPLACE handed out; freed at the next call */
	track_done_fn done;
	void *done_arg;
};

#define TRACK_KIND_BIT(kind) (1u << (kind))

/* max: requests in flight; rings: where the ring comes from (the worker's); session_id_hex
 * names the poison statement. */
void track_init(struct track *t, struct track_rings *rings, uint32_t max,
		uint32_t max_statements, size_t max_stmt_bytes, bool keep_text,
		const char *session_id_hex, track_done_fn done, void *arg);
void track_release(struct track *t);

static inline bool track_full(const struct track *t)
{
	return t->count >= t->max;
}

static inline bool track_idle(const struct track *t)
{
	return t->count == 0;
}

/* The number the next tracked client message gets (what stages see as ctx->request). */
static inline uint64_t track_next_request(const struct track *t)
{
	return t->next_request;
}

/*
 * Is this client message one the server answers (so it would be tracked), given whether the
 * server is in copy-in mode? Flush, Terminate and the copy messages are not. Inline: asked
 * for every client message.
 */
static inline bool track_answered(uint8_t type, bool copy_in)
{
	switch (type) {
	case PqMsg_Query:
	case PqMsg_FunctionCall:
	case PqMsg_Parse:
	case PqMsg_Bind:
	case PqMsg_Describe:
	case PqMsg_Execute:
	case PqMsg_Close:
		return true;
	case PqMsg_Sync:
		return !copy_in;
	default:
		return false;
	}
}

/* track_frontend's cls for a whole Parse whose text nobody has classified yet: the
 * tracker reads it (sql_classify), or takes the reading of the statement the Parse's name
 * means when the Parse repeats its text (clients that send the unnamed statement's Parse
 * with every execution send the same text each time). */
#define TRACK_CLASS_UNREAD 0xff

/*
 * A client message is being forwarded. head[0..avail) is the message from its type byte
 * on (all of it when avail covers the length; otherwise its start, from which names are
 * read where they fit). For a Parse: cls is the relay's classification (enum sql_class, or
 * TRACK_CLASS_UNREAD) and words (STMT_STAGE_WORDS, or NULL) what the stages want kept with
 * the statement; a Parse that repeats the text, parameter count, class and words of the
 * statement its name means shares that statement's entry, as nothing tells them apart; for a
 * whole Query of one statement that is an SQL PREPARE, words go with what it prepares.
 * A whole Query's SQL PREPARE, DEALLOCATE and DISCARD ALL statements are followed: each
 * changes the statement table when the server confirms it.
 * 0, -ENOSPC when a Parse, a Query's PREPAREs or an Execute of an SQL PREPARE would exceed
 * the statement limits, counting what requests still on their way may create (the caller
 * rejects it instead, before anything is pushed), -ENOMEM.
 */
int track_frontend(struct track *t, const uint8_t *head, uint32_t avail, uint8_t cls,
		   const uint32_t *words, uint64_t now) __attribute__((warn_unused_result));

/*
 * A client message was rejected: write into poison[cap] the message(s) that go to the
 * server instead, and remember that reply (a whole ErrorResponse, copied) replaces its
 * answer. For a Query or FunctionCall the poison ends with a Sync, as the original would
 * have ended with a ReadyForQuery. While the server skips to a Sync the message would have
 * been skipped too: nothing goes (0). Returns the poison's length, or -ENOMEM / -ENOSPC.
 */
int track_reject(struct track *t, uint8_t type, const uint8_t *reply, uint32_t reply_len,
		 uint64_t now, uint8_t *poison, uint32_t cap) __attribute__((warn_unused_result));

enum track_action {
	TRACK_PASS = 0, /* forward the server's message */
	TRACK_DROP,     /* an answer to a poison: do not forward */
	TRACK_REPLACE,  /* forward *reply instead (the stage's error) */
	TRACK_INVALID,  /* an answer to nothing owed, or of the wrong kind: the server broke the
			 * protocol (the connection ends the session with 08P01) */
};

/*
 * A server message arrived. m->body must be whole for CommandComplete, ReadyForQuery,
 * ErrorResponse and the copy responses (the connection holds those whole anyway); for the
 * others the type is enough. Calls the done callback for every request it completes.
 * *reply and *reply_len are set for TRACK_REPLACE (owned by the tracker, valid until the
 * next call).
 */
enum track_action track_backend(struct track *t, const struct proto_msg *m, uint64_t now,
				const uint8_t **reply, uint32_t *reply_len);

/* Server messages that can arrive at any time and answer no request. Asked twice for every
 * server message: always inlined (the relay's framing function is large enough that the
 * compiler's inlining budget otherwise leaves this a call). */
static inline __attribute__((always_inline)) bool track_async(uint8_t type)
{
	return type == PqMsg_NoticeResponse || type == PqMsg_ParameterStatus ||
	       type == PqMsg_NotificationResponse;
}

/*
 * The request a server message of this type answers: the oldest one still owed; 0 for the
 * asynchronous messages, which answer nothing, and when nothing is owed. Ask before
 * track_backend(), which may complete that request. Inline: asked for every server message.
 */
static inline uint64_t track_answering(const struct track *t, uint8_t type)
{
	return t->count && !track_async(type) ? t->ring[t->head].request : 0;
}

/* The row count at the end of a command tag ("SELECT 5", "INSERT 0 3", "COPY 7"); 0 when
 * it ends in none. */
uint64_t track_tag_rows(const char *tag);

/*
 * Would track_backend() pass a DataRow or CopyData now, and change nothing? (It does when
 * the oldest request owed is a Query or an Execute.) Lets the connection frame a run of
 * them without asking once per message.
 */
bool track_passes_rows(const struct track *t);

/*
 * The server entered copy-in mode (CopyInResponse): Syncs the client pipelined behind the
 * COPY reach the server while it copies, and it ignores them; they are owed nothing.
 */
void track_copy_in(struct track *t);

#endif
