/*
 * Unit tests for userspace/stage and userspace/session: the pipeline's order and verdicts,
 * decisions told to later stages, per-session interest, rewrite chaining, pause and resume,
 * and the session's startup and server parameters. The connection-level behaviour of the
 * verdicts (where a REJECT's error lands in a pipeline) is tested in test_conn.c.
 */
#include "proto/proto.h"
#include "stage/stage.h"

#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static char trace[128];

static void trace_add(char c)
{
	size_t n = strlen(trace);

	if (n + 1 < sizeof(trace)) {
		trace[n] = c;
		trace[n + 1] = '\0';
	}
}

struct counter_state {
	int messages;
	int ended;
	int released;
	int decisions;
	char last_decider[16];
	uint64_t last_decision_request;
	enum proto_dir last_decision_dir;
	uint8_t last_decision_type;
	bool last_decision_has_body;
	bool pause_next;
};

static void a_start(struct stage_ctx *ctx, struct stage_result *r)
{
	trace_add('a');
}

static void a_frontend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct counter_state *st = ctx->state;

	st->messages++;
	trace_add(ctx->resumed ? 'R' : 'A');
	if (st->pause_next && !ctx->resumed) {
		st->pause_next = false;
		stage_result_pause(r, 0);
	}
}

static void a_notice(struct stage_ctx *ctx, const struct stage_note *n)
{
	struct counter_state *st = ctx->state;

	if (n->kind == STAGE_NOTE_DECISION) {
		st->decisions++;
		snprintf(st->last_decider, sizeof(st->last_decider), "%s", n->stage);
		st->last_decision_request = n->request;
		st->last_decision_dir = n->dir;
		st->last_decision_type = n->msg ? n->msg->type : 0;
		st->last_decision_has_body = n->msg && n->msg->body;
	}
}

static void a_end(struct stage_ctx *ctx)
{
	((struct counter_state *)ctx->state)->ended++;
	trace_add('x');
}

static void a_release(void *state)
{
	((struct counter_state *)state)->released++;
}

static void b_start(struct stage_ctx *ctx, struct stage_result *r)
{
	trace_add('b');
}

static void b_frontend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	trace_add('B');
	if (m->type == PqMsg_Parse)
		stage_result_set(r, STAGE_REJECT, "42501", "no-parse", "rule %s refuses %c",
				 "no-parse", m->type);
}

/* A server message b cannot let through: the pipeline makes it a CLOSE. */
static void b_backend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	stage_result_set(r, STAGE_REJECT, "42501", NULL, "b refuses server messages");
}

static void b_end(struct stage_ctx *ctx)
{
	trace_add('y');
}

static struct stage_ops stage_a = {
	.name = "a",
	.state_size = sizeof(struct counter_state),
	.session_start = a_start,
	.frontend = a_frontend,
	.notice = a_notice,
	.session_end = a_end,
	.release = a_release,
};

static struct stage_ops stage_b = {
	.name = "b",
	.state_size = 1,
	.session_start = b_start,
	.frontend = b_frontend,
	.backend = b_backend,
	.session_end = b_end,
};

static void setup_interest(void)
{
	memset(&stage_a.frontend_whole, 0, sizeof(stage_a.frontend_whole));
	memset(&stage_b.frontend_whole, 0, sizeof(stage_b.frontend_whole));
	memset(&stage_b.backend_whole, 0, sizeof(stage_b.backend_whole));
	typeset_add(&stage_a.frontend_whole, PqMsg_Query);
	typeset_add(&stage_a.frontend_whole, PqMsg_Parse);
	typeset_add(&stage_b.frontend_whole, PqMsg_Parse);
	typeset_add(&stage_b.backend_whole, PqMsg_DataRow);
}

static void test_pipeline_runs_stages_in_order(void **state)
{
	struct stage_pipeline p = {0};
	struct stage_chain ch;
	struct stage_result r;
	struct session s = {0};
	struct proto_msg q = {.type = PqMsg_Query}, parse = {.type = PqMsg_Parse},
			 sync = {.type = PqMsg_Sync};

	setup_interest();
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_pipeline_add(&p, &stage_b), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	/* The connection asks for the union of what the stages want, nothing more. */
	assert_true(stage_chain_wants(&ch, PROTO_FRONTEND, PqMsg_Query));
	assert_true(stage_chain_wants(&ch, PROTO_FRONTEND, PqMsg_Parse));
	assert_false(stage_chain_wants(&ch, PROTO_FRONTEND, PqMsg_Sync));
	assert_false(stage_chain_wants(&ch, PROTO_BACKEND, PqMsg_Parse));
	assert_false(stage_chain_wants(&ch, PROTO_FRONTEND, 200));

	trace[0] = '\0';
	stage_run_session_start(&ch, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_FORWARD);
	stage_run_frontend(&ch, &q, 1, NULL, 1, &r); /* only a wants Query */
	assert_int_equal(r.verdict, STAGE_FORWARD);
	stage_run_frontend(&ch, &sync, 2, NULL, 1, &r); /* nobody wants Sync */
	stage_run_frontend(&ch, &parse, 3, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_REJECT);
	assert_string_equal(r.sqlstate, "42501");
	assert_string_equal(r.rule, "no-parse");
	assert_string_equal(r.message, "rule no-parse refuses P");
	struct counter_state *a = stage_chain_state(&ch, 0);

	assert_int_equal(a->messages, 2);
	stage_chain_end(&ch, true);
	assert_string_equal(trace, "abAABxy");
}

/* A denial by an early stage is never silent: later stages hear of it. */
static void test_decision_reaches_later_stages(void **state)
{
	struct stage_pipeline p = {0};
	struct stage_chain ch;
	struct stage_result r;
	struct session s = {0};
	struct proto_msg parse = {.type = PqMsg_Parse}, row = {.type = PqMsg_DataRow};
	struct counter_state *a;

	setup_interest();
	assert_int_equal(stage_pipeline_add(&p, &stage_b), 0);
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	trace[0] = '\0';
	stage_run_frontend(&ch, &parse, 41, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_REJECT);
	assert_string_equal(trace, "B"); /* a never judged what b refused ... */
	a = stage_chain_state(&ch, 1);
	assert_int_equal(a->decisions, 1); /* ... but was told, */
	assert_string_equal(a->last_decider, "b");
	assert_int_equal(a->last_decision_request, 41); /* with the request refused */
	assert_int_equal(a->last_decision_dir, PROTO_FRONTEND);
	assert_int_equal(a->last_decision_type, PqMsg_Parse);
	/* A server message's decision names the request it answers, and its side: the same
	 * type byte means another message from the client ('D' DataRow, 'D' Describe). */
	stage_run_backend(&ch, &row, 40, 2, &r);
	assert_int_equal(r.verdict, STAGE_CLOSE);
	assert_int_equal(a->decisions, 2);
	assert_int_equal(a->last_decision_request, 40);
	assert_int_equal(a->last_decision_dir, PROTO_BACKEND);
	assert_int_equal(a->last_decision_type, PqMsg_DataRow);
	stage_chain_end(&ch, true);
}

/* A stage that streams a message and ends the session midway (a row it cannot mask), or
 * answers with a verdict streaming cannot carry out: either is a close, and later stages
 * are told, with the request the message answers. */
static uint64_t stream_saw_request;

static void close_stream(struct stage_ctx *ctx, struct stage_stream *st, struct stage_result *r)
{
	stream_saw_request = ctx->request;
	if (st->body_offset == 0)
		stage_result_set(r, STAGE_CLOSE, "54000", NULL, "a row beyond the lookahead");
	else
		stage_result_set(r, STAGE_REJECT, "42501", NULL, "no verdict for a stream");
}

static void test_stream_close_is_a_decision(void **state)
{
	struct stage_ops streamer = {.name = "streamer", .stream = close_stream};
	struct stage_pipeline p = {0};
	struct stage_chain ch;
	struct stage_result r;
	struct session s = {0};
	struct stage_stream st = {.type = PqMsg_DataRow, .body_len = 9000, .request = 7};
	struct counter_state *a;

	setup_interest();
	typeset_add(&streamer.backend_stream, PqMsg_DataRow);
	assert_int_equal(stage_pipeline_add(&p, &streamer), 0);
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	a = stage_chain_state(&ch, 1);
	stage_run_stream(&ch, &st, 1, &r);
	assert_int_equal(r.verdict, STAGE_CLOSE);
	assert_string_equal(r.sqlstate, "54000");
	assert_int_equal(stream_saw_request, 7);
	assert_int_equal(a->decisions, 1);
	assert_string_equal(a->last_decider, "streamer");
	assert_int_equal(a->last_decision_request, 7);
	assert_int_equal(a->last_decision_dir, PROTO_BACKEND);
	assert_int_equal(a->last_decision_type, PqMsg_DataRow);
	assert_false(a->last_decision_has_body); /* only the header was seen whole */
	/* Any other verdict mid-stream becomes a close, told the same way. */
	st.body_offset = 100;
	st.request = 8;
	stage_run_stream(&ch, &st, 2, &r);
	assert_int_equal(r.verdict, STAGE_CLOSE);
	assert_string_equal(r.sqlstate, "XX000");
	assert_int_equal(a->decisions, 2);
	assert_int_equal(a->last_decision_request, 8);
	stage_chain_end(&ch, true);
}

/* A run of whole messages (stage.h): only a stage with stream_run is offered one (the chain
 * says which types), and a close in a run is a decision on the refused message's header,
 * the one at consumed. */
static void close_run(struct stage_ctx *ctx, struct stage_stream *st, struct stage_result *r)
{
	stream_saw_request = ctx->request;
	st->consumed = 12; /* the first message, whole; the second is refused */
	st->produced = 3;
	stage_result_set(r, STAGE_CLOSE, "54000", NULL, "a row it cannot mask");
}

static void test_stream_run_close_is_a_decision(void **state)
{
	struct stage_ops streamer = {.name = "streamer", .stream = close_stream};
	struct stage_ops runner = {.name = "runner", .stream = close_stream,
				   .stream_run = close_run};
	struct stage_pipeline p = {0}, q = {0};
	struct stage_chain ch;
	struct stage_result r;
	struct session s = {0};
	/* two DataRows of 7 body bytes, then a CopyData header */
	static const uint8_t run[] = {'D', 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, 'a',
				      'D', 0, 0, 0, 11, 0, 1, 0, 0, 0, 1, 'b'};
	uint8_t out[64];
	struct stage_stream st = {.type = PqMsg_DataRow, .request = 9, .in = run,
				  .in_len = sizeof(run), .out = out, .out_cap = sizeof(out)};
	struct counter_state *a;

	setup_interest();
	typeset_add(&streamer.backend_stream, PqMsg_DataRow);
	assert_int_equal(stage_pipeline_add(&p, &streamer), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	assert_true(stage_chain_streams(&ch, PqMsg_DataRow));
	assert_false(stage_chain_runs(&ch, PqMsg_DataRow)); /* no stream_run: no runs */
	stage_chain_end(&ch, true);

	typeset_add(&runner.backend_stream, PqMsg_DataRow);
	assert_int_equal(stage_pipeline_add(&q, &runner), 0);
	assert_int_equal(stage_pipeline_add(&q, &stage_a), 0);
	assert_int_equal(stage_chain_init(&ch, &q, &s, NULL, NULL), 0);
	assert_true(stage_chain_runs(&ch, PqMsg_DataRow));
	assert_false(stage_chain_runs(&ch, PqMsg_CopyData));
	a = stage_chain_state(&ch, 1);
	st.partial = true; /* left over from an earlier run: cleared for the stage */
	stage_run_stream_run(&ch, &st, 1, &r);
	assert_int_equal(r.verdict, STAGE_CLOSE);
	assert_string_equal(r.sqlstate, "54000");
	assert_int_equal(st.consumed, 12);
	assert_false(st.partial);
	assert_int_equal(stream_saw_request, 9);
	assert_int_equal(a->decisions, 1);
	assert_string_equal(a->last_decider, "runner");
	assert_int_equal(a->last_decision_request, 9);
	assert_int_equal(a->last_decision_dir, PROTO_BACKEND);
	assert_int_equal(a->last_decision_type, PqMsg_DataRow);
	assert_false(a->last_decision_has_body);
	stage_chain_end(&ch, true);
}

/* Interest is per session: one session's change does not touch another's. */
/* A stage hears the notice kinds it names, and all of them when it names none. */
static int heard[STAGE_NOTE_SERVER_PARAM + 1];

static void count_notice(struct stage_ctx *ctx, const struct stage_note *n)
{
	heard[n->kind] += *(int *)ctx->state;
}

static void test_notice_kinds(void **state)
{
	struct stage_ops picky = {.name = "picky", .state_size = sizeof(int),
				  .notice = count_notice,
				  .notices = STAGE_NOTE_BIT(STAGE_NOTE_AUTH)};
	struct stage_ops all = {.name = "all", .state_size = sizeof(int), .notice = count_notice};
	struct stage_pipeline only_picky = {0}, both = {0};
	struct stage_chain ch;
	struct session s = {0};
	struct stage_note auth = {.kind = STAGE_NOTE_AUTH},
			  done = {.kind = STAGE_NOTE_REQUEST_DONE};

	/* Nobody hears a kind nobody names: the run returns before any stage. */
	memset(heard, 0, sizeof(heard));
	assert_int_equal(stage_pipeline_add(&only_picky, &picky), 0);
	assert_int_equal(stage_chain_init(&ch, &only_picky, &s, NULL, NULL), 0);
	*(int *)stage_chain_state(&ch, 0) = 1;
	stage_run_notice(&ch, &done, NULL, 0);
	stage_run_notice(&ch, &auth, NULL, 0);
	assert_int_equal(heard[STAGE_NOTE_REQUEST_DONE], 0);
	assert_int_equal(heard[STAGE_NOTE_AUTH], 1);
	stage_chain_end(&ch, false);

	/* A stage naming no kinds hears every kind, beside one that names some. */
	memset(heard, 0, sizeof(heard));
	assert_int_equal(stage_pipeline_add(&both, &picky), 0);
	assert_int_equal(stage_pipeline_add(&both, &all), 0);
	assert_int_equal(stage_chain_init(&ch, &both, &s, NULL, NULL), 0);
	*(int *)stage_chain_state(&ch, 0) = 1;   /* picky counts 1 */
	*(int *)stage_chain_state(&ch, 1) = 100; /* all counts 100 */
	stage_run_notice(&ch, &done, NULL, 0);
	stage_run_notice(&ch, &auth, NULL, 0);
	assert_int_equal(heard[STAGE_NOTE_REQUEST_DONE], 100);
	assert_int_equal(heard[STAGE_NOTE_AUTH], 101);
	stage_chain_end(&ch, false);
}

static void test_interest_is_per_session(void **state)
{
	struct stage_pipeline p = {0};
	struct stage_chain one, two;
	struct session s = {0};
	struct stage_ctx ctx = {0};

	setup_interest();
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_chain_init(&one, &p, &s, NULL, NULL), 0);
	assert_int_equal(stage_chain_init(&two, &p, &s, NULL, NULL), 0);
	ctx.chain = &one;
	ctx.index = 0;
	assert_int_equal(stage_want(&ctx, PROTO_BACKEND, PqMsg_DataRow, STAGE_WHOLE), 0);
	assert_int_equal(stage_want(&ctx, PROTO_FRONTEND, PqMsg_Query, STAGE_SKIP), 0);
	assert_true(stage_chain_wants(&one, PROTO_BACKEND, PqMsg_DataRow));
	assert_false(stage_chain_wants(&one, PROTO_FRONTEND, PqMsg_Query));
	assert_false(stage_chain_wants(&two, PROTO_BACKEND, PqMsg_DataRow));
	assert_true(stage_chain_wants(&two, PROTO_FRONTEND, PqMsg_Query));
	/* Streaming: backend only, and one stage per type. */
	assert_int_equal(stage_want(&ctx, PROTO_FRONTEND, PqMsg_Query, STAGE_STREAM), -EINVAL);
	assert_int_equal(stage_want(&ctx, PROTO_BACKEND, PqMsg_DataRow, STAGE_STREAM), 0);
	assert_true(stage_chain_streams(&one, PqMsg_DataRow));
	assert_false(stage_chain_wants(&one, PROTO_BACKEND, PqMsg_DataRow));
	stage_chain_end(&one, true);
	stage_chain_end(&two, true);
}

static void test_stream_is_exclusive(void **state)
{
	struct stage_pipeline p = {0};
	struct stage_chain ch;
	struct session s = {0};
	struct stage_ctx ctx = {0};

	setup_interest();
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_pipeline_add(&p, &stage_b), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	ctx.chain = &ch;
	ctx.index = 0;
	assert_int_equal(stage_want(&ctx, PROTO_BACKEND, PqMsg_DataRow, STAGE_STREAM), 0);
	ctx.index = 1;
	assert_int_equal(stage_want(&ctx, PROTO_BACKEND, PqMsg_DataRow, STAGE_STREAM), -EBUSY);
	assert_int_equal(stage_want(&ctx, PROTO_BACKEND, PqMsg_CopyData, STAGE_STREAM), 0);
	stage_chain_end(&ch, true);
}

/* A rewrite is what later stages judge. */
static uint8_t rewritten[64];
static uint32_t rewritten_len;

static void rw_frontend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	rewritten_len = (uint32_t)proto_write_query(rewritten, sizeof(rewritten), "SELECT 2");
	stage_result_rewrite(r, rewritten, rewritten_len);
}

static char seen_sql[64];

static void see_frontend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	const char *sql;

	if (proto_read_query(m, &sql) == PROTO_OK)
		snprintf(seen_sql, sizeof(seen_sql), "%s", sql);
}

static void bad_rw_frontend(struct stage_ctx *ctx, const struct proto_msg *m,
			    struct stage_result *r)
{
	static const uint8_t bad[] = {'Q', 0, 0, 0, 99, 'x'};

	stage_result_rewrite(r, bad, sizeof(bad));
}

/* "SELECT 1" as a Query message written into q, and the message as a stage sees it. */
static struct proto_msg query_select_1(uint8_t q[32])
{
	int n = proto_write_query(q, 32, "SELECT 1");

	assert_true(n > PROTO_HEADER_LEN);
	return (struct proto_msg){.type = PqMsg_Query, .body = q + PROTO_HEADER_LEN,
				  .body_len = (uint32_t)n - PROTO_HEADER_LEN};
}

static void test_rewrite_chains_and_is_checked(void **state)
{
	struct stage_ops rw = {.name = "rw", .frontend = rw_frontend};
	struct stage_ops see = {.name = "see", .frontend = see_frontend};
	struct stage_ops bad = {.name = "bad", .frontend = bad_rw_frontend};
	struct stage_pipeline p = {0}, pbad = {0};
	struct stage_chain ch;
	struct stage_result r;
	struct session s = {0};
	uint8_t q[32];
	struct proto_msg m = query_select_1(q);

	typeset_add(&rw.frontend_whole, PqMsg_Query);
	typeset_add(&see.frontend_whole, PqMsg_Query);
	typeset_add(&bad.frontend_whole, PqMsg_Query);
	assert_int_equal(stage_pipeline_add(&p, &rw), 0);
	assert_int_equal(stage_pipeline_add(&p, &see), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	stage_run_frontend(&ch, &m, 1, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_REWRITE);
	assert_int_equal(r.rewrite_len, rewritten_len);
	assert_string_equal(seen_sql, "SELECT 2");
	stage_chain_end(&ch, true);

	/* A message whose length field disagrees with its size ends the session. */
	assert_int_equal(stage_pipeline_add(&pbad, &bad), 0);
	assert_int_equal(stage_chain_init(&ch, &pbad, &s, NULL, NULL), 0);
	stage_run_frontend(&ch, &m, 1, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_CLOSE);
	assert_string_equal(r.sqlstate, "XX000");
	stage_chain_end(&ch, true);
}

/* A stage that classified the statements says so; the first such stage's classes go with the
 * pipeline's FORWARD, and a rewrite anywhere drops them (they describe the text as sent). */
static const uint8_t classes_a[] = {3, 1}, classes_b[] = {7};

static void classes_a_frontend(struct stage_ctx *ctx, const struct proto_msg *m,
			       struct stage_result *r)
{
	r->classes = classes_a;
	r->nclasses = sizeof(classes_a);
}

static void classes_b_frontend(struct stage_ctx *ctx, const struct proto_msg *m,
			       struct stage_result *r)
{
	r->classes = classes_b;
	r->nclasses = sizeof(classes_b);
}

static void test_statement_classes_go_with_forward_only(void **state)
{
	struct stage_ops ca = {.name = "ca", .frontend = classes_a_frontend};
	struct stage_ops cb = {.name = "cb", .frontend = classes_b_frontend};
	struct stage_ops see = {.name = "see", .frontend = see_frontend};
	struct stage_ops rw = {.name = "rw", .frontend = rw_frontend};
	struct stage_pipeline p = {0}, prw = {0};
	struct stage_chain ch;
	struct stage_result r;
	struct session s = {0};
	uint8_t q[32];
	struct proto_msg m = query_select_1(q);

	typeset_add(&ca.frontend_whole, PqMsg_Query);
	typeset_add(&cb.frontend_whole, PqMsg_Query);
	typeset_add(&see.frontend_whole, PqMsg_Query);
	typeset_add(&rw.frontend_whole, PqMsg_Query);
	/* nobody classifies: none */
	assert_int_equal(stage_pipeline_add(&p, &see), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	stage_run_frontend(&ch, &m, 1, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_FORWARD);
	assert_null(r.classes);
	stage_chain_end(&ch, true);
	/* the first classifying stage's, through later stages that forward */
	assert_int_equal(stage_pipeline_add(&p, &ca), 0);
	assert_int_equal(stage_pipeline_add(&p, &cb), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	stage_run_frontend(&ch, &m, 1, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_FORWARD);
	assert_ptr_equal(r.classes, classes_a);
	assert_int_equal(r.nclasses, 2);
	stage_chain_end(&ch, true);
	/* a rewrite after a stage classified, or before one does: none */
	assert_int_equal(stage_pipeline_add(&prw, &ca), 0);
	assert_int_equal(stage_pipeline_add(&prw, &rw), 0);
	assert_int_equal(stage_pipeline_add(&prw, &cb), 0);
	assert_int_equal(stage_chain_init(&ch, &prw, &s, NULL, NULL), 0);
	stage_run_frontend(&ch, &m, 1, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_REWRITE);
	assert_null(r.classes);
	stage_chain_end(&ch, true);
}

/* A paused message is offered again to the stage that paused it, and only from there on. */
static void test_pause_resumes_at_the_pausing_stage(void **state)
{
	struct stage_ops first = {.name = "first", .frontend = b_frontend};
	struct stage_pipeline p = {0};
	struct stage_chain ch;
	struct stage_result r;
	struct session s = {0};
	struct proto_msg q = {.type = PqMsg_Query};
	struct counter_state *a;

	setup_interest();
	typeset_add(&first.frontend_whole, PqMsg_Query);
	assert_int_equal(stage_pipeline_add(&p, &first), 0);
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	a = stage_chain_state(&ch, 1);
	a->pause_next = true;
	trace[0] = '\0';
	stage_run_frontend(&ch, &q, 7, NULL, 1, &r);
	assert_int_equal(r.verdict, STAGE_PAUSE);
	stage_run_frontend(&ch, &q, 7, NULL, 2, &r); /* the wake */
	assert_int_equal(r.verdict, STAGE_FORWARD);
	stage_run_frontend(&ch, &q, 8, NULL, 3, &r); /* the next message: from the start */
	assert_string_equal(trace, "BARBA");
	stage_chain_end(&ch, true);
}

/* Statement words go to the caller's array, one per stage. */
static void word_frontend(struct stage_ctx *ctx, const struct proto_msg *m,
			  struct stage_result *r)
{
	if (ctx->stmt_word)
		*ctx->stmt_word = 0x40u + ctx->index;
}

static void test_statement_words(void **state)
{
	struct stage_ops w = {.name = "w", .frontend = word_frontend};
	struct stage_pipeline p = {0};
	struct stage_chain ch;
	struct stage_result r;
	struct session s = {0};
	struct proto_msg parse = {.type = PqMsg_Parse};
	uint32_t words[STAGE_MAX] = {0};

	typeset_add(&w.frontend_whole, PqMsg_Parse);
	assert_int_equal(stage_pipeline_add(&p, &w), 0);
	assert_int_equal(stage_pipeline_add(&p, &w), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	stage_run_frontend(&ch, &parse, 1, words, 1, &r);
	assert_int_equal(words[0], 0x40);
	assert_int_equal(words[1], 0x41);
	stage_run_frontend(&ch, &parse, 2, NULL, 1, &r); /* no words wanted: no crash */
	stage_chain_end(&ch, true);
}

static void test_release_runs_without_start(void **state)
{
	struct stage_pipeline p = {0};
	struct stage_chain ch;
	struct session s = {0};

	setup_interest();
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_chain_init(&ch, &p, &s, NULL, NULL), 0);
	trace[0] = '\0';
	stage_chain_end(&ch, false); /* never started: no session_end, but release */
	assert_string_equal(trace, "");
	stage_chain_end(&ch, false); /* twice is harmless */
}

static void test_pipeline_is_bounded(void **state)
{
	struct stage_pipeline p = {0};

	for (int i = 0; i < STAGE_MAX; i++)
		assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_pipeline_add(&p, &stage_a), -E2BIG);
}

static void test_session_ids_are_random_hex(void **state)
{
	struct session a = {0}, b = {0};

	assert_int_equal(session_new_id(&a), 0);
	assert_int_equal(session_new_id(&b), 0);
	assert_int_equal(strlen(a.id_hex), SESSION_ID_HEXLEN);
	assert_int_equal(strspn(a.id_hex, "0123456789abcdef"), SESSION_ID_HEXLEN);
	assert_string_not_equal(a.id_hex, b.id_hex);
}

/* The session keeps every startup parameter, duplicates as the server reads them. */
static void test_session_startup_params(void **state)
{
	static const struct proto_param params[] = {
		{"user", "alice"}, {"options", "-c x=1"}, {"user", "bob"}, {"database", ""},
	};
	struct proto_startup st = {
		.kind = PROTO_STARTUP_MESSAGE,
		.code = PROTO_VERSION_3_0,
		.user = "bob",
		.database = "bob",
		.nparams = 4,
	};
	struct session s = {0};

	memcpy(st.params, params, sizeof(params));
	assert_int_equal(session_set_startup(&s, &st), 0);
	assert_string_equal(s.user, "bob");
	assert_string_equal(s.database, "bob");
	assert_null(s.application_name);
	assert_string_equal(session_startup_param(&s, "user"), "bob");
	assert_string_equal(session_startup_param(&s, "options"), "-c x=1");
	assert_null(session_startup_param(&s, "nope"));
	assert_int_equal(s.startup.nparams, 4);
	assert_string_equal(s.startup.values[0], "alice");
	assert_null(session_verified_user(&s)); /* claimed, not verified */
	assert_int_equal(session_set_verified(&s, SESSION_AUTH_SCRAM, false, s.user), 0);
	assert_string_equal(session_verified_user(&s), "bob");
	assert_ptr_equal(session_verified_user(&s), s.user); /* the claimed user's text, no copy */
	assert_string_equal(session_auth_method_to_str(s.auth.method), "scram-sha-256");
	/* Another role is a copy of the session's own (released with it). */
	assert_int_equal(session_set_verified(&s, SESSION_AUTH_SCRAM, false, "carol"), 0);
	assert_string_equal(session_verified_user(&s), "carol");
	assert_ptr_not_equal(session_verified_user(&s), s.user);
	/* A new startup keeps the verified user's text valid. */
	assert_int_equal(session_set_verified(&s, SESSION_AUTH_SCRAM, false, s.user), 0);
	assert_int_equal(session_set_startup(&s, &st), 0);
	assert_string_equal(session_verified_user(&s), "bob");
	session_release(&s);
}

/* libpq's usual startup (database named after the user) keeps "carol" once: the second
 * value, the user and the database are views of the first. */
static void test_session_startup_shares_equal_values(void **state)
{
	static const struct proto_param params[] = {{"user", "carol"}, {"database", "carol"}};
	struct proto_startup st = {
		.kind = PROTO_STARTUP_MESSAGE,
		.code = PROTO_VERSION_3_0,
		.user = "carol",
		.database = "carol",
		.nparams = 2,
	};
	struct session s = {0};

	memcpy(st.params, params, sizeof(params));
	assert_int_equal(session_set_startup(&s, &st), 0);
	assert_string_equal(session_startup_param(&s, "database"), "carol");
	assert_ptr_equal(s.startup.values[1], s.startup.values[0]);
	assert_ptr_equal(s.user, s.startup.values[0]);
	assert_ptr_equal(s.database, s.startup.values[0]);
	session_release(&s);
}

static void test_session_server_params(void **state)
{
	struct session s = {0};

	assert_null(session_server_param(&s, "client_encoding"));
	assert_int_equal(session_set_server_param(&s, "client_encoding", "UTF8"), 0);
	assert_int_equal(session_set_server_param(&s, "standard_conforming_strings", "on"), 0);
	assert_int_equal(session_set_server_param(&s, "client_encoding", "SQL_ASCII"), 0);
	assert_string_equal(session_server_param(&s, "client_encoding"), "SQL_ASCII");
	assert_string_equal(session_server_param(&s, "standard_conforming_strings"), "on");
	/* A byte stands for each name. */
	assert_int_equal(s.server_params_len, 1 + sizeof("on") + 1 + sizeof("SQL_ASCII"));
	/* What nothing reads is not kept: a login's dozen other reports cost no memory. */
	assert_int_equal(session_set_server_param(&s, "server_version", "15.18"), 0);
	assert_int_equal(session_set_server_param(&s, "TimeZone", "Etc/UTC"), 0);
	assert_null(session_server_param(&s, "server_version"));
	assert_int_equal(session_set_server_param(&s, "DateStyle", "ISO, MDY"), 0);
	assert_string_equal(session_server_param(&s, "DateStyle"), "ISO, MDY");
	assert_int_equal(s.server_params_len,
			 1 + sizeof("on") + 1 + sizeof("SQL_ASCII") + 1 + sizeof("ISO, MDY"));
	session_release(&s);
	assert_null(session_server_param(&s, "client_encoding"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pipeline_runs_stages_in_order),
		cmocka_unit_test(test_decision_reaches_later_stages),
		cmocka_unit_test(test_stream_close_is_a_decision),
		cmocka_unit_test(test_stream_run_close_is_a_decision),
		cmocka_unit_test(test_notice_kinds),
		cmocka_unit_test(test_interest_is_per_session),
		cmocka_unit_test(test_stream_is_exclusive),
		cmocka_unit_test(test_rewrite_chains_and_is_checked),
		cmocka_unit_test(test_statement_classes_go_with_forward_only),
		cmocka_unit_test(test_pause_resumes_at_the_pausing_stage),
		cmocka_unit_test(test_statement_words),
		cmocka_unit_test(test_release_runs_without_start),
		cmocka_unit_test(test_pipeline_is_bounded),
		cmocka_unit_test(test_session_ids_are_random_hex),
		cmocka_unit_test(test_session_startup_params),
		cmocka_unit_test(test_session_startup_shares_equal_values),
		cmocka_unit_test(test_session_server_params),
	};

	return cmocka_run_group_tests_name("stage", tests, NULL, NULL);
}
