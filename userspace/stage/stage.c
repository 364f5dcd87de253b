/* stage: the ordered pipeline of inspection stages and its per-session run (see stage.h). */
#include "stage/stage.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t stage_align(size_t n)
{
	return (n + STAGE_STATE_ALIGN - 1) & ~(size_t)(STAGE_STATE_ALIGN - 1);
}

const char *stage_verdict_to_str(enum stage_verdict v)
{
	static const char *const names[STAGE_VERDICT_COUNT] = {
		[STAGE_FORWARD] = "forward", [STAGE_REWRITE] = "rewrite", [STAGE_REJECT] = "reject",
		[STAGE_PAUSE] = "pause",     [STAGE_CLOSE] = "close",
	};

	return (unsigned)v < STAGE_VERDICT_COUNT ? names[v] : "unknown";
}

void stage_result_set(struct stage_result *r, enum stage_verdict v, const char *sqlstate,
		      const char *rule, const char *fmt, ...)
{
	va_list ap;

	r->verdict = v;
	snprintf(r->sqlstate, sizeof(r->sqlstate), "%s", sqlstate);
	snprintf(r->rule, sizeof(r->rule), "%s", rule ? rule : "");
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
}

void stage_result_rewrite(struct stage_result *r, const uint8_t *msg, uint32_t len)
{
	r->verdict = STAGE_REWRITE;
	r->rewrite = msg;
	r->rewrite_len = len;
}

void stage_result_pause(struct stage_result *r, uint64_t resume_at_ns)
{
	r->verdict = STAGE_PAUSE;
	r->resume_at_ns = resume_at_ns;
}

static void stage_result_clear(struct stage_result *r)
{
	r->verdict = STAGE_FORWARD;
	r->sqlstate[0] = r->message[0] = r->rule[0] = '\0';
	r->rewrite = NULL;
	r->rewrite_len = 0;
	r->resume_at_ns = 0;
	r->classes = NULL;
	r->nclasses = 0;
}

int stage_pipeline_add(struct stage_pipeline *p, const struct stage_ops *ops)
{
	if (p->count >= STAGE_MAX)
		return -E2BIG;
	p->stages[p->count++] = ops;
	p->state_size += stage_align(ops->state_size);
	p->wakes |= ops->wakes;
	if (ops->notice)
		p->notices |= ops->notices ? ops->notices : ~0u;
	return 0;
}

/* Is this stage's notice() called for notes of this kind? */
static bool stage_hears(const struct stage_ops *ops, enum stage_note_kind kind)
{
	return ops->notice && (!ops->notices || (ops->notices & STAGE_NOTE_BIT(kind)));
}

/* Each stage's state is a slice of one per-session block, in pipeline order. */
void *stage_chain_state(const struct stage_chain *ch, unsigned index)
{
	size_t off = 0;

	if (!ch->states)
		return NULL; /* no stage has a state */
	for (unsigned i = 0; i < index; i++)
		off += stage_align(ch->pipeline->stages[i]->state_size);
	return (char *)ch->states + off;
}

/*
 * Interests that sessions share. Most sessions' stages want the same (each stage's
 * defaults, or what policy and masking ask for in the common session), so a session points
 * at a shared interest instead of carrying its own (64 bytes and 48 a stage). Interests are
 * compared by content (plain data, zeroed padding: sessions of different pipelines may
 * share one), kept for the process's life, and at most STAGE_SHARED_INTERESTS of them: a
 * session whose interest is not among them keeps its own. Any worker reads them without a
 * lock (one is written before the count that publishes it); adding one takes the lock.
 */
#define STAGE_SHARED_INTERESTS 32

static struct {
	pthread_mutex_t lock;
	unsigned count;
	const struct stage_session_wants *interest[STAGE_SHARED_INTERESTS];
} shared_interests = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* An interest of count stages, as memcmp and memcpy see it. */
static size_t stage_interest_size(unsigned count)
{
	return sizeof(struct stage_session_wants) + count * sizeof(struct stage_wants);
}

static const struct stage_session_wants *stage_interest_find(const struct stage_session_wants *in,
							unsigned from, unsigned to)
{
	for (unsigned i = from; i < to; i++) {
		const struct stage_session_wants *x = shared_interests.interest[i];

		if (x->count == in->count && !memcmp(x, in, stage_interest_size(in->count)))
			return x;
	}
	return NULL;
}

/* The shared interest equal to in, added as a copy when there is none and room. NULL: none
 * (no room, or no memory for the copy); in stays the caller's either way. */
static const struct stage_session_wants *stage_interest_shared(const struct stage_session_wants *in)
{
	unsigned have = __atomic_load_n(&shared_interests.count, __ATOMIC_ACQUIRE);
	const struct stage_session_wants *found = stage_interest_find(in, 0, have);
	struct stage_session_wants *copy;
	unsigned n;

	if (found)
		return found;
	pthread_mutex_lock(&shared_interests.lock);
	n = shared_interests.count;
	found = stage_interest_find(in, have, n);
	if (!found && n < STAGE_SHARED_INTERESTS &&
	    (copy = malloc(stage_interest_size(in->count)))) {
		memcpy(copy, in, stage_interest_size(in->count));
		shared_interests.interest[n] = copy;
		__atomic_store_n(&shared_interests.count, n + 1, __ATOMIC_RELEASE);
		found = copy;
	}
	pthread_mutex_unlock(&shared_interests.lock);
	return found;
}

/* Point the session at the shared interest equal to its own, and free its own. */
static void stage_chain_share_interest(struct stage_chain *ch)
{
	const struct stage_session_wants *shared;

	if (!ch->own_interest)
		return;
	shared = stage_interest_shared(ch->own_interest);
	if (!shared)
		return;
	free(ch->own_interest);
	ch->own_interest = NULL;
	ch->interest = shared;
}

/* An ended session's: no stage wants anything. */
static const struct stage_session_wants no_interest;

/* The unions of in's stages' wants (p: which stages take runs). */
static void stage_interest_recount(struct stage_session_wants *in, const struct stage_pipeline *p)
{
	memset(in->any_whole, 0, sizeof(in->any_whole));
	memset(&in->any_stream, 0, sizeof(in->any_stream));
	memset(&in->any_run, 0, sizeof(in->any_run));
	for (unsigned i = 0; i < in->count; i++) {
		typeset_union(&in->any_whole[PROTO_FRONTEND], &in->stage[i].whole[PROTO_FRONTEND]);
		typeset_union(&in->any_whole[PROTO_BACKEND], &in->stage[i].whole[PROTO_BACKEND]);
		typeset_union(&in->any_stream, &in->stage[i].stream);
		if (p->stages[i]->stream_run)
			typeset_union(&in->any_run, &in->stage[i].stream);
	}
}

int stage_chain_init(struct stage_chain *ch, const struct stage_pipeline *p,
		     const struct session *s, const struct stmt_table *stmts,
		     const struct stage_waker *waker)
{
	union {
		struct stage_session_wants in;
		unsigned char room[sizeof(struct stage_session_wants) +
				   STAGE_MAX * sizeof(struct stage_wants)];
	} defaults;
	size_t size = stage_interest_size(p->count);

	memset(ch, 0, sizeof(*ch));
	ch->pipeline = p;
	ch->session = s;
	ch->stmts = stmts;
	ch->waker = waker;
	ch->paused_at = STAGE_MAX;
	memset(&defaults, 0, sizeof(defaults));
	defaults.in.count = p->count;
	for (unsigned i = 0; i < p->count; i++) {
		defaults.in.stage[i].whole[PROTO_FRONTEND] = p->stages[i]->frontend_whole;
		defaults.in.stage[i].whole[PROTO_BACKEND] = p->stages[i]->backend_whole;
		defaults.in.stage[i].stream = p->stages[i]->backend_stream;
	}
	stage_interest_recount(&defaults.in, p);
	if (p->state_size && !(ch->states = calloc(1, p->state_size)))
		return -ENOMEM;
	ch->interest = stage_interest_shared(&defaults.in);
	if (!ch->interest) {
		ch->own_interest = malloc(size);
		if (!ch->own_interest) {
			free(ch->states);
			ch->states = NULL;
			return -ENOMEM;
		}
		memcpy(ch->own_interest, &defaults.in, size);
		ch->interest = ch->own_interest;
	}
	return 0;
}

static void stage_ctx_init(struct stage_ctx *ctx, struct stage_chain *ch, unsigned index,
			   uint64_t now)
{
	*ctx = (struct stage_ctx){
		.session = ch->session,
		.stmts = ch->stmts,
		.state = stage_chain_state(ch, index),
		.chain = ch,
		.waker = ch->waker,
		.index = index,
		.now_ns = now,
	};
}

void stage_chain_end(struct stage_chain *ch, bool started)
{
	const struct stage_pipeline *p = ch->pipeline;
	struct stage_ctx ctx;

	if (!p)
		return;
	/* Every stage hears the end, whatever an earlier one decided. */
	for (unsigned i = 0; i < p->count && started; i++) {
		if (!p->stages[i]->session_end)
			continue;
		stage_ctx_init(&ctx, ch, i, 0);
		p->stages[i]->session_end(&ctx);
	}
	for (unsigned i = 0; i < p->count && ch->interest; i++)
		if (p->stages[i]->release)
			p->stages[i]->release(stage_chain_state(ch, i));
	free(ch->own_interest);
	free(ch->states);
	ch->own_interest = NULL;
	ch->interest = &no_interest; /* what an ended session still asks wants nothing */
	ch->states = NULL;
	ch->pipeline = NULL;
}

int stage_want(struct stage_ctx *ctx, enum proto_dir dir, uint8_t type,
	       enum stage_interest how)
{
	struct stage_chain *ch = ctx->chain;
	unsigned i = ctx->index;
	struct stage_wants want;

	if (how == STAGE_STREAM) {
		if (dir != PROTO_BACKEND)
			return -EINVAL;
		for (unsigned j = 0; j < ch->pipeline->count; j++)
			if (j != i && typeset_has(&ch->interest->stage[j].stream, type))
				return -EBUSY;
	}
	want = ch->interest->stage[i];
	typeset_del(&want.whole[dir], type);
	if (dir == PROTO_BACKEND)
		typeset_del(&want.stream, type);
	if (how == STAGE_WHOLE)
		typeset_add(&want.whole[dir], type);
	else if (how == STAGE_STREAM)
		typeset_add(&want.stream, type);
	if (!memcmp(&want, &ch->interest->stage[i], sizeof(want)))
		return 0; /* no change: a shared table stays shared */
	if (!ch->own_interest) {
		size_t size = stage_interest_size(ch->interest->count);

		ch->own_interest = malloc(size);
		if (!ch->own_interest)
			return -ENOMEM;
		memcpy(ch->own_interest, ch->interest, size);
		ch->interest = ch->own_interest;
	}
	ch->own_interest->stage[i] = want;
	stage_interest_recount(ch->own_interest, ch->pipeline);
	return 0;
}

/* Tell every stage after `from` that stage `from` did not forward m (a message from dir), of
 * request `request`. */
static void stage_note_decision(struct stage_chain *ch, unsigned from, const struct proto_msg *m,
				enum proto_dir dir, uint64_t request,
				const struct stage_result *r, uint64_t now)
{
	struct stage_note n = {
		.kind = STAGE_NOTE_DECISION,
		.stage = ch->pipeline->stages[from]->name,
		.result = r,
		.msg = m,
		.dir = dir,
		.request = request,
	};

	for (unsigned i = from + 1; i < ch->pipeline->count; i++) {
		struct stage_ctx ctx;

		if (!stage_hears(ch->pipeline->stages[i], STAGE_NOTE_DECISION))
			continue;
		stage_ctx_init(&ctx, ch, i, now);
		ch->pipeline->stages[i]->notice(&ctx, &n);
	}
}

void stage_run_session_start(struct stage_chain *ch, struct stage_limits *limits, uint64_t now,
			     struct stage_result *r)
{
	const struct stage_pipeline *p = ch->pipeline;

	stage_result_clear(r);
	for (unsigned i = 0; i < p->count; i++) {
		struct stage_ctx ctx;

		if (!p->stages[i]->session_start)
			continue;
		stage_ctx_init(&ctx, ch, i, now);
		ctx.limits = limits;
		p->stages[i]->session_start(&ctx, r);
		/* Only a refusal means anything here. */
		if (r->verdict != STAGE_CLOSE) {
			stage_result_clear(r);
			continue;
		}
		stage_note_decision(ch, i, NULL, PROTO_FRONTEND, 0, r, now);
		return;
	}
	/* The stages have said what they want of this session: most sessions want the same. */
	stage_chain_share_interest(ch);
}

/*
 * One message through the stages that want it, in order; a run after a PAUSE starts at the
 * stage that paused. A REWRITE is what later stages judge; a bad one, and a REJECT of a
 * server message (there is no request to answer), end the session instead.
 */
static void stage_run_msg(struct stage_chain *ch, enum proto_dir dir, const struct proto_msg *m,
			  uint64_t request, uint32_t *stmt_words, uint64_t now,
			  struct stage_result *r)
{
	const struct stage_pipeline *p = ch->pipeline;
	struct proto_msg cur = *m;
	unsigned first = ch->paused_at < p->count ? ch->paused_at : 0;
	bool resumed = ch->paused_at < p->count;

	ch->paused_at = STAGE_MAX;
	stage_result_clear(r);
	for (unsigned i = first; i < p->count; i++) {
		const struct stage_ops *ops = p->stages[i];
		void (*cb)(struct stage_ctx *, const struct proto_msg *, struct stage_result *) =
			dir == PROTO_FRONTEND ? ops->frontend : ops->backend;
		struct stage_ctx ctx;
		struct stage_result mine;

		if (!cb || !typeset_has(&ch->interest->stage[i].whole[dir], cur.type))
			continue;
		stage_ctx_init(&ctx, ch, i, now);
		ctx.request = request;
		ctx.resumed = resumed && i == first;
		ctx.stmt_word = stmt_words ? &stmt_words[i] : NULL;
		stage_result_clear(&mine);
		cb(&ctx, &cur, &mine);
		if (mine.verdict == STAGE_FORWARD) {
			if (r->verdict == STAGE_FORWARD && !r->classes) {
				r->classes = mine.classes;
				r->nclasses = mine.nclasses;
			}
			continue;
		}
		*r = mine;
		r->classes = NULL;
		r->nclasses = 0;
		if (mine.verdict == STAGE_PAUSE) {
			ch->paused_at = i;
			return;
		}
		if (mine.verdict == STAGE_REWRITE && mine.rewrite_len >= PROTO_HEADER_LEN &&
		    proto_read_u32(mine.rewrite + 1) == mine.rewrite_len - 1) {
			cur.type = mine.rewrite[0];
			cur.body_len = mine.rewrite_len - PROTO_HEADER_LEN;
			cur.body = mine.rewrite + PROTO_HEADER_LEN;
			continue;
		}
		if (mine.verdict == STAGE_REWRITE)
			stage_result_set(r, STAGE_CLOSE, "XX000", NULL,
					 "stage %s produced an invalid message", ops->name);
		else if (mine.verdict == STAGE_REJECT && dir == PROTO_BACKEND)
			stage_result_set(r, STAGE_CLOSE, "XX000", NULL,
					 "stage %s rejected a server message", ops->name);
		stage_note_decision(ch, i, &cur, dir, request, r, now);
		return;
	}
}

void stage_run_frontend(struct stage_chain *ch, const struct proto_msg *m, uint64_t request,
			uint32_t *stmt_words, uint64_t now, struct stage_result *r)
{
	stage_run_msg(ch, PROTO_FRONTEND, m, request, stmt_words, now, r);
}

void stage_run_backend(struct stage_chain *ch, const struct proto_msg *m, uint64_t request,
		       uint64_t now, struct stage_result *r)
{
	stage_run_msg(ch, PROTO_BACKEND, m, request, NULL, now, r);
}

/* A streaming stage's verdict: FORWARD, or a CLOSE (any other verdict is turned into one)
 * that ends a result midway, as much a decision as a refused message, told to the later
 * stages on the header of the message it cut. */
static void stream_verdict(struct stage_chain *ch, unsigned i, const struct proto_msg *header,
			   uint64_t request, struct stage_result *r, uint64_t now)
{
	if (r->verdict == STAGE_FORWARD)
		return;
	if (r->verdict != STAGE_CLOSE)
		stage_result_set(r, STAGE_CLOSE, "XX000", NULL,
				 "stage %s gave verdict %s while streaming",
				 ch->pipeline->stages[i]->name, stage_verdict_to_str(r->verdict));
	stage_note_decision(ch, i, header, PROTO_BACKEND, request, r, now);
}

void stage_run_stream(struct stage_chain *ch, struct stage_stream *st, uint64_t now,
		      struct stage_result *r)
{
	const struct stage_pipeline *p = ch->pipeline;

	stage_result_clear(r);
	for (unsigned i = 0; i < p->count; i++) {
		struct stage_ctx ctx;
		struct proto_msg header = {.type = st->type, .body_len = st->body_len};

		if (!p->stages[i]->stream || !typeset_has(&ch->interest->stage[i].stream, st->type))
			continue;
		stage_ctx_init(&ctx, ch, i, now);
		ctx.request = st->request;
		st->consumed = st->produced = 0;
		p->stages[i]->stream(&ctx, st, r);
		stream_verdict(ch, i, &header, st->request, r, now);
		return; /* one stage streams a type */
	}
}

void stage_run_stream_run(struct stage_chain *ch, struct stage_stream *st, uint64_t now,
			  struct stage_result *r)
{
	const struct stage_pipeline *p = ch->pipeline;

	stage_result_clear(r);
	st->consumed = st->produced = st->partial_produced = 0;
	st->partial = false;
	for (unsigned i = 0; i < p->count; i++) {
		struct stage_ctx ctx;
		struct proto_msg header = {.type = st->type};

		if (!p->stages[i]->stream_run || !typeset_has(&ch->interest->stage[i].stream, st->type))
			continue;
		stage_ctx_init(&ctx, ch, i, now);
		ctx.request = st->request;
		p->stages[i]->stream_run(&ctx, st, r);
		/* The refused message is the one at consumed (the relay checks that it is
		 * there); its header, as for a streamed message. */
		if (r->verdict != STAGE_FORWARD && st->consumed + PROTO_HEADER_LEN <= st->in_len) {
			header.type = st->in[st->consumed];
			header.body_len = proto_read_u32(st->in + st->consumed + 1) - 4;
		}
		stream_verdict(ch, i, &header, st->request, r, now);
		return; /* one stage streams a type */
	}
}

void stage_run_notice(struct stage_chain *ch, const struct stage_note *n,
		      struct stage_limits *limits, uint64_t now)
{
	const struct stage_pipeline *p = ch->pipeline;

	if (!stage_chain_hears(ch, n->kind))
		return; /* nobody listens */
	for (unsigned i = 0; i < p->count; i++) {
		struct stage_ctx ctx;

		if (!stage_hears(p->stages[i], n->kind))
			continue;
		stage_ctx_init(&ctx, ch, i, now);
		ctx.limits = n->kind == STAGE_NOTE_AUTH ? limits : NULL;
		p->stages[i]->notice(&ctx, n);
	}
}
