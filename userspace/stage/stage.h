/*
 * stage: the inspection-stage contract, and the pipeline that runs stages in order.
 *
 * Policy, masking, audit and the session log are stages, never code inside the connection
 * state machine. A stage is a table of callbacks and a per-session state block. It sees:
 *   - session_start: the client's identity as far as it is known (kernel-recorded route
 *     and process, addresses, TLS, the claimed StartupMessage); a stage may refuse here;
 *   - frontend / backend: each whole message of the types it wants, before it is
 *     forwarded; or, for types it wants streamed, the message's header and then its body
 *     piece by piece, to transform it in constant memory;
 *   - notices: what happened that it did not decide itself (the login's result, another
 *     stage's decision, an error that reached the client, a request that completed), so
 *     that audit sees everything;
 *   - session_end, always, whatever was decided before.
 * It answers with a verdict and never touches sockets or connection state.
 *
 * Verdicts:
 *   FORWARD  the message goes on unchanged.
 *   REWRITE  the message is replaced by result.rewrite (a whole message, header
 *            included; the relay checks its framing), lengths recomputed by the stage.
 *   REJECT   client messages only: not forwarded; the client gets ERROR sqlstate/message
 *            exactly where the server would have answered that message, behind every
 *            reply still owed for earlier pipelined messages, and the session stays
 *            usable. In an extended-protocol batch the rest up to Sync is skipped, and the
 *            transaction ends up as after a server error (an open one is failed, 'E'),
 *            because the relay makes the server itself fail at that point.
 *   PAUSE    hold this message, and everything behind it in its direction, until the
 *            stage calls stage_wake() or result.resume_at_ns passes (0: no deadline); the
 *            message is then offered to the same stage again with ctx->resumed set. Bytes
 *            already forwarded keep flowing.
 *   CLOSE    end the session: the client gets FATAL sqlstate/message.
 * The pipeline runs stages in order and stops at the first verdict that is not FORWARD
 * (a REWRITE is passed on: later stages see the rewritten message). Every later stage is
 * told the decision through a STAGE_NOTE_DECISION notice, so a denial is never silent; so
 * is every stage after one that closes the session while it streams a message.
 *
 * Interest is per session: stage_want() changes which message types a stage sees and how,
 * from any of its callbacks. Types nobody wants stream through by count and are never
 * buffered, so interest is also cost. A message wanted whole is held up to the
 * connection's inspection limit; a larger one is refused (54000) rather than grown.
 */
#ifndef PGWARDEN_STAGE_H
#define PGWARDEN_STAGE_H

#include "proto/proto.h"
#include "session/session.h"
#include "session/stmt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define STAGE_MAX STMT_STAGE_WORDS
#define STAGE_MESSAGE_MAX 256
#define STAGE_RULE_MAX 64

/* A set of message type bytes (all protocol types are 7-bit). */
struct proto_typeset {
	uint64_t bits[2];
};

/* Type t's bit in word w of a typeset: for sets known when compiling (t < 128), written as
 * {.bits = {TYPESET_BIT(0, a) | TYPESET_BIT(0, b), TYPESET_BIT(1, a) | TYPESET_BIT(1, b)}}. */
#define TYPESET_BIT(w, t) ((uint64_t)(((t) >> 6) == (w)) << ((t) & 63))

static inline void typeset_add(struct proto_typeset *s, uint8_t t)
{
	if (t < 128)
		s->bits[t >> 6] |= 1ULL << (t & 63);
}

static inline void typeset_del(struct proto_typeset *s, uint8_t t)
{
	if (t < 128)
		s->bits[t >> 6] &= ~(1ULL << (t & 63));
}

static inline bool typeset_has(const struct proto_typeset *s, uint8_t t)
{
	return t < 128 && ((s->bits[t >> 6] >> (t & 63)) & 1);
}

static inline void typeset_union(struct proto_typeset *into, const struct proto_typeset *s)
{
	into->bits[0] |= s->bits[0];
	into->bits[1] |= s->bits[1];
}

enum stage_verdict {
	STAGE_FORWARD = 0,
	STAGE_REWRITE,
	STAGE_REJECT,
	STAGE_PAUSE,
	STAGE_CLOSE,
	STAGE_VERDICT_COUNT,
};

const char *stage_verdict_to_str(enum stage_verdict v);

struct stage_result {
	enum stage_verdict verdict;
	char sqlstate[6];
	char message[STAGE_MESSAGE_MAX];
	char rule[STAGE_RULE_MAX]; /* what decided (a policy rule's name), for logs and audit */
	/* REWRITE: the replacement message, owned by the stage, valid until its next call. */
	const uint8_t *rewrite;
	uint32_t rewrite_len;
	/* PAUSE: offer the message again at this monotonic time even if nobody wakes it. */
	uint64_t resume_at_ns;
	/* A Query or Parse a stage classified on its way to its verdict: the class of each of
	 * its statements in order (enum sql_class values, as sql_classify() gives them; a
	 * Parse has one), so that nobody classifies the same text again: the relay counts
	 * statements_total by them. NULL when the stage did not classify them all; nclasses
	 * 0 with classes set: the text holds no statement. Owned by the stage, valid until
	 * its next call. The pipeline passes on the first stage's, and only with a FORWARD:
	 * a rewrite drops them, since they describe the text as the client sent it. */
	const uint8_t *classes;
	uint32_t nclasses;
};

/*
 * Per-session limits a stage may set (policy) from session_start and from the AUTH notice;
 * the connection arms its timers from them. 0 means no limit. Each firing ends the session
 * with PostgreSQL's code for it: idle 57P05, idle in transaction 25P03, lifetime 57P01.
 * login_ms (set at session_start; counted from the StartupMessage) tightens the startup
 * timeout and fires like it: FATAL 08P01 "timeout during authentication".
 */
struct stage_limits {
	uint64_t login_ms;
	uint64_t idle_ms;
	uint64_t idle_in_transaction_ms;
	uint64_t lifetime_ms;
};

/* Set a REJECT or CLOSE verdict with its SQLSTATE and message; rule may be NULL. */
void stage_result_set(struct stage_result *r, enum stage_verdict v, const char *sqlstate,
		      const char *rule, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

/* Set a REWRITE verdict. */
void stage_result_rewrite(struct stage_result *r, const uint8_t *msg, uint32_t len);

/* Set a PAUSE verdict; resume_at_ns 0: only stage_wake() resumes it. */
void stage_result_pause(struct stage_result *r, uint64_t resume_at_ns);

enum stage_interest {
	STAGE_SKIP = 0, /* not seen */
	STAGE_WHOLE,    /* the whole message, before it is forwarded */
	STAGE_STREAM,   /* the header, then the body in pieces (backend messages only); at most
			 * one stage per type streams in a session */
};

struct stage_chain;
struct stage_waker;

/* What one callback sees. */
struct stage_ctx {
	const struct session *session;
	const struct stmt_table *stmts; /* prepared statements and portals, as the server has them */
	void *state;                    /* this stage's per-session block, zeroed at start */
	struct stage_chain *chain;      /* for stage_want() */
	const struct stage_waker *waker; /* for stage_wake() after a PAUSE */
	unsigned index;                 /* this stage's position in the pipeline */
	uint64_t now_ns;                /* the worker's monotonic clock for this event */
	/* Frontend, backend and stream calls: the client request this message belongs to (the
	 * numbering that STAGE_NOTE_REQUEST_DONE uses; a server message: the request it
	 * answers, 0 when it answers none), and whether this call follows the stage's own
	 * PAUSE. */
	uint64_t request;
	bool resumed;
	/* Parse, and a Query that is an SQL PREPARE: a word this stage may set for the
	 * statement, kept in stmt_entry.words[index] once the server created it. NULL
	 * otherwise. */
	uint32_t *stmt_word;
	/* session_start and the AUTH notice: the session's limits, to tighten or set. NULL
	 * otherwise. */
	struct stage_limits *limits;
};

/* Change what this stage sees of dir's type from the next message on. 0, -EBUSY when
 * another stage already streams that type in this session, or -ENOMEM (a session that
 * shares its interest table copies it to change it; the interest then stays as it was). */
int stage_want(struct stage_ctx *ctx, enum proto_dir dir, uint8_t type,
	       enum stage_interest how) __attribute__((warn_unused_result));

/*
 * Resume a paused message: safe from any thread, at any time (a session that has ended in
 * the meantime is simply not found). Returns 0 or -ENOENT.
 */
int stage_wake(const struct stage_waker *w);

/* A streamed backend message: the header was seen; body bytes arrive in order. */
struct stage_stream {
	uint8_t type;
	uint32_t body_len;     /* of the message as the server sent it */
	uint64_t request;      /* the client request it answers (ctx->request), 0: none */
	uint32_t body_offset;  /* body bytes consumed by earlier calls */
	const uint8_t *in;     /* the next body bytes */
	size_t in_len;
	uint8_t *out;          /* room for output bytes */
	size_t out_cap;
	/* Set by the stage: input bytes consumed, output bytes produced. The stage writes the
	 * whole replacement message, header included, over as many calls as it needs; it is
	 * called again while input remains or it produced output. Consuming nothing and
	 * producing nothing with input available is an error (the session closes). */
	size_t consumed;
	size_t produced;
	bool done; /* set by the stage when the replacement message is complete */
	/* A run only (below), set by the stage: it stopped inside the last message it took,
	 * which stream() calls are to finish; of produced, partial_produced bytes are the
	 * start of that message's replacement. */
	bool partial;
	size_t partial_produced;
};

/*
 * A run: many small streamed messages in one call (stage_ops.stream_run), so that a result
 * of narrow rows does not pay a stage call per row. The relay offers one when DataRow or
 * CopyData messages of a streamed type lie whole in its read buffer one after another (the
 * tracker passes those types without changing its state, so nothing the relay does between
 * them is lost). st->in holds those messages back to back, headers included, each at most
 * STAGE_RUN_MESSAGE_MAX bytes and together at most out_cap, framing already checked;
 * body_len and body_offset are 0, and every message answers st->request. The stage
 * rewrites them in order, exactly as stream() would one by one, and sets consumed and
 * produced. It stops:
 *   - at a message boundary, whenever it likes (out lacks room, a message it would rather
 *     take through stream()); consuming nothing is fine: the relay streams the first message
 *     the ordinary way, header then pieces;
 *   - inside a message it could not finish (partial), having begun it as stream() would
 *     begin it: its header and some or all of its body taken, the last partial_produced
 *     bytes of produced being the start of its replacement; stream() calls continue that
 *     message at body_offset, as they would after the stage's first call on it;
 *   - with a CLOSE, at the boundary before the message it refuses: the messages before it
 *     and their replacements are consumed and produced, nothing of the refused one.
 * A stage that changes its interest in st->type (stage_want) during a run stops it there.
 */
#define STAGE_RUN_MESSAGE_MAX 8192

enum stage_note_kind {
	STAGE_NOTE_AUTH = 1,     /* the login finished: session->auth says how and whether */
	STAGE_NOTE_DECISION,     /* a stage before this one did not FORWARD a message, or
				  * closed the session while a message streamed */
	STAGE_NOTE_ERROR,        /* an ErrorResponse reached the client (server's or pgwarden's) */
	STAGE_NOTE_REQUEST_DONE, /* a client request completed */
	STAGE_NOTE_SERVER_PARAM, /* the server reported a parameter (ParameterStatus) */
};

/* A stage_ops.notices bit: the stage's notice() hears this kind. */
#define STAGE_NOTE_BIT(kind) (1u << (kind))

struct stage_note {
	enum stage_note_kind kind;
	/* DECISION */
	const char *stage;               /* the deciding stage's name */
	const struct stage_result *result;
	const struct proto_msg *msg;     /* the message decided on (a streamed one: its header,
					  * body NULL); NULL at session start */
	enum proto_dir dir;              /* whose message msg is: its type byte's meaning */
	/* ERROR (and request, below) */
	const char *severity;
	const char *sqlstate;
	const char *message;
	bool from_relay;                 /* pgwarden raised it, not the server */
	/* DECISION, ERROR and REQUEST_DONE: the request number stage callbacks saw
	 * (ctx->request), so that a refusal, the error the client got for it and the
	 * request's completion join. DECISION: the request the decided message belongs to;
	 * ERROR: the request the error answers (pgwarden's own FATAL: the request of the
	 * message a stage closed the session on, else the oldest one still owed an answer,
	 * which the client reads it in place of). 0 when there is none (a refusal at session
	 * start, a server message that answers no request, a FATAL between requests such as
	 * an idle timeout). */
	uint64_t request;
	/* REQUEST_DONE: the server's command tag (NULL when the request ended in an error or
	 * had none), the rows it reported, and how long from the request's first byte
	 * forwarded to its completion. */
	const char *command_tag;
	uint64_t rows;
	uint64_t duration_ns;
	bool failed;  /* the server answered it with an error */
	bool skipped; /* the server skipped it after an earlier error in its batch */
	const struct stmt_entry *stmt; /* Bind/Execute: the prepared statement it ran */
	/* SERVER_PARAM */
	const char *name;
	const char *value;
};

/* Each stage's state starts at a multiple of this in the session's block: the states hold
 * pointers and 64-bit integers (8, not max_align_t's 16, so that the default pipeline's
 * two small states fit a 32-byte malloc chunk instead of 48). A stage's file asserts its
 * state's alignment fits. */
#define STAGE_STATE_ALIGN 8

struct stage_ops {
	const char *name;
	size_t state_size; /* per-session state, zeroed, owned by the pipeline */
	/* The stage reads prepared statements' texts (stmt_entry.sql): the relay keeps them
	 * only when some stage does, since they cost memory per session. */
	bool keep_statement_text;
	/* The stage holds a message until another thread calls stage_wake(): its sessions
	 * need a waker (stage_ctx.waker). The relay claims one, a slot in its worker's wake
	 * table, only for the sessions of a pipeline with such a stage. */
	bool wakes;
	/* Interest every session starts with (stage_want() changes it per session). */
	struct proto_typeset frontend_whole;
	struct proto_typeset backend_whole;
	struct proto_typeset backend_stream;
	/* Each callback is optional. */
	void (*session_start)(struct stage_ctx *ctx, struct stage_result *r);
	void (*frontend)(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r);
	void (*backend)(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r);
	void (*stream)(struct stage_ctx *ctx, struct stage_stream *st, struct stage_result *r);
	/* A run of whole small messages of a type this stage streams (above); without it the
	 * relay offers each message to stream(). */
	void (*stream_run)(struct stage_ctx *ctx, struct stage_stream *st, struct stage_result *r);
	void (*notice)(struct stage_ctx *ctx, const struct stage_note *n);
	/* The kinds notice() hears (STAGE_NOTE_BIT each); 0: every kind, so a stage that does
	 * not say misses nothing. A request completes on every transaction: a stage that does
	 * not read REQUEST_DONE leaves it out and costs nothing there. */
	uint32_t notices;
	void (*session_end)(struct stage_ctx *ctx);
	/* Release what the state block holds (after session_end). */
	void (*release)(void *state);
};

/* An ordered, immutable list of stages; built at start-up. */
struct stage_pipeline {
	const struct stage_ops *stages[STAGE_MAX];
	unsigned count;
	size_t state_size; /* sum of stage states, each aligned */
	uint32_t notices;  /* the kinds some stage's notice() hears (STAGE_NOTE_BIT each) */
	bool wakes;        /* some stage wakes (stage_ops.wakes) */
};

/* 0 or -E2BIG when the pipeline is full. */
int stage_pipeline_add(struct stage_pipeline *p, const struct stage_ops *ops)
	__attribute__((warn_unused_result));

/* What one stage wants of one session. */
struct stage_wants {
	struct proto_typeset whole[2]; /* [proto_dir] */
	struct proto_typeset stream;   /* backend, streamed */
};

/* What a session's stages want: the unions the connection checks, then each stage's. */
struct stage_session_wants {
	struct proto_typeset any_whole[2]; /* [proto_dir] */
	struct proto_typeset any_stream;
	struct proto_typeset any_run; /* streamed by a stage that takes runs */
	unsigned count;               /* stages */
	struct stage_wants stage[];   /* [count] */
};

/*
 * The per-session run of a pipeline: interest, states, the waker. The states live in one
 * allocation sized by the pipeline, so a session pays only for the stages there are. The
 * interest is shared by the sessions whose stages want the same (stage.c): a session copies
 * it only when a stage changes it, and gives the copy up again when the change made it
 * equal to a shared one at session start.
 */
struct stage_chain {
	const struct stage_pipeline *pipeline;
	const struct stage_session_wants *interest;   /* shared (never written), or own_interest */
	struct stage_session_wants *own_interest;     /* the session's own copy; NULL: shared */
	const struct session *session;
	const struct stmt_table *stmts;
	const struct stage_waker *waker;
	unsigned paused_at; /* the stage that paused the held message; STAGE_MAX: none */
	void *states;       /* pipeline->state_size bytes; NULL when that is 0 */
};

/* Allocate the states and set the initial interest. 0 or -ENOMEM. */
int stage_chain_init(struct stage_chain *ch, const struct stage_pipeline *p,
		     const struct session *s, const struct stmt_table *stmts,
		     const struct stage_waker *waker) __attribute__((warn_unused_result));
/* The state block of the stage at index (for tests and diagnostics). */
void *stage_chain_state(const struct stage_chain *ch, unsigned index);

/* session_end to every stage (if started), release, free. */
void stage_chain_end(struct stage_chain *ch, bool started);

/* Does some stage's notice() hear this kind? (A caller can spare building the note.) */
static inline bool stage_chain_hears(const struct stage_chain *ch, enum stage_note_kind kind)
{
	return ch->pipeline->notices & STAGE_NOTE_BIT(kind);
}

static inline bool stage_chain_wants(const struct stage_chain *ch, enum proto_dir dir,
				     uint8_t type)
{
	return typeset_has(&ch->interest->any_whole[dir], type);
}

static inline bool stage_chain_streams(const struct stage_chain *ch, uint8_t type)
{
	return typeset_has(&ch->interest->any_stream, type);
}

/* Is type streamed by a stage that takes runs of whole messages (stage_ops.stream_run)? */
static inline bool stage_chain_runs(const struct stage_chain *ch, uint8_t type)
{
	return typeset_has(&ch->interest->any_run, type);
}

/* Does any stage stream any server message type in this session? */
static inline bool stage_chain_streams_any(const struct stage_chain *ch)
{
	return ch->interest->any_stream.bits[0] || ch->interest->any_stream.bits[1];
}

/* Runs used by the connection; each sets *r (FORWARD when no stage objects). */
void stage_run_session_start(struct stage_chain *ch, struct stage_limits *limits, uint64_t now,
			     struct stage_result *r);
/* stmt_words (STAGE_MAX entries, NULL unless m is a Parse or an SQL PREPARE) receives what
 * each stage wants kept with the statement. A run after a PAUSE starts at the stage that
 * paused. */
void stage_run_frontend(struct stage_chain *ch, const struct proto_msg *m, uint64_t request,
			uint32_t *stmt_words, uint64_t now, struct stage_result *r);
/* request: the client request m answers (0: none), as the connection's tracker matched it. */
void stage_run_backend(struct stage_chain *ch, const struct proto_msg *m, uint64_t request,
		       uint64_t now, struct stage_result *r);
/* A CLOSE here (the stage's, or any other verdict, which streaming cannot carry out) is
 * told to the later stages as a decision on the message's header, of st->request. */
void stage_run_stream(struct stage_chain *ch, struct stage_stream *st, uint64_t now,
		      struct stage_result *r);
/* A run of whole messages (see struct stage_stream) to the stage that streams st->type; a
 * CLOSE (or any other verdict, turned into one) is told to the later stages as a decision
 * on the header of the message refused, the one at st->consumed. */
void stage_run_stream_run(struct stage_chain *ch, struct stage_stream *st, uint64_t now,
			  struct stage_result *r);
/* limits: non-NULL with the AUTH notice, as for session_start. */
void stage_run_notice(struct stage_chain *ch, const struct stage_note *n,
		      struct stage_limits *limits, uint64_t now);

/* The session log: one line at session start, one at end. */
extern const struct stage_ops sessionlog_stage;

#endif
