/* Unit tests for userspace/stage: pipeline order, type sets, per-stage state, verdicts. */
#include "stage/stage.h"

#include <setjmp.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static char trace[64];

static void trace_add(char c)
{
	size_t n = strlen(trace);

	trace[n] = c;
	trace[n + 1] = '\0';
}

struct counter_state {
	int messages;
	int ended;
};

static void a_start(void *st, const struct session *s, struct stage_result *r)
{
	trace_add('a');
}

static void a_frontend(void *st, const struct session *s, const struct proto_msg *m,
		       struct stage_result *r)
{
	((struct counter_state *)st)->messages++;
	trace_add('A');
}

static void a_end(void *st, const struct session *s)
{
	((struct counter_state *)st)->ended++;
	trace_add('x');
}

static void b_start(void *st, const struct session *s, struct stage_result *r)
{
	trace_add('b');
}

static void b_frontend(void *st, const struct session *s, const struct proto_msg *m,
		       struct stage_result *r)
{
	trace_add('B');
	if (m->type == PqMsg_Parse)
		stage_result_set(r, STAGE_CLOSE, "42501", "rule %s refuses %c", "no-parse", m->type);
}

static void b_end(void *st, const struct session *s)
{
	trace_add('y');
}

static struct stage_ops stage_a = {
	.name = "a",
	.state_size = sizeof(struct counter_state),
	.session_start = a_start,
	.frontend = a_frontend,
	.session_end = a_end,
};

static struct stage_ops stage_b = {
	.name = "b",
	.state_size = 1,
	.session_start = b_start,
	.frontend = b_frontend,
	.session_end = b_end,
};

static void test_pipeline_runs_stages_in_order(void **state)
{
	struct stage_pipeline p = {0};
	struct stage_result r;
	struct session s = {0};
	unsigned char st[256] = {0};
	struct proto_msg q = {.type = PqMsg_Query}, parse = {.type = PqMsg_Parse},
			 sync = {.type = PqMsg_Sync};

	typeset_add(&stage_a.frontend_types, PqMsg_Query);
	typeset_add(&stage_a.frontend_types, PqMsg_Parse);
	typeset_add(&stage_b.frontend_types, PqMsg_Parse);
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	assert_int_equal(stage_pipeline_add(&p, &stage_b), 0);
	assert_true(p.state_size <= sizeof(st));
	/* The pipeline asks the relay for the union of what its stages want, nothing more. */
	assert_true(typeset_has(&p.frontend_types, PqMsg_Query));
	assert_true(typeset_has(&p.frontend_types, PqMsg_Parse));
	assert_false(typeset_has(&p.frontend_types, PqMsg_Sync));
	assert_false(typeset_has(&p.frontend_types, 200));

	trace[0] = '\0';
	stage_session_start(&p, st, &s, &r);
	assert_int_equal(r.verdict, STAGE_FORWARD);
	stage_frontend(&p, st, &s, &q, &r); /* only a wants Query */
	assert_int_equal(r.verdict, STAGE_FORWARD);
	stage_frontend(&p, st, &s, &sync, &r); /* nobody wants Sync */
	stage_frontend(&p, st, &s, &parse, &r);
	assert_int_equal(r.verdict, STAGE_CLOSE);
	assert_string_equal(r.sqlstate, "42501");
	assert_string_equal(r.message, "rule no-parse refuses P");
	stage_session_end(&p, st, &s);
	assert_string_equal(trace, "abAABxy");
	/* Stage a's slice of the state block is its own. */
	assert_int_equal(((struct counter_state *)st)->messages, 2);
	assert_int_equal(((struct counter_state *)st)->ended, 1);
}

static void test_first_close_wins(void **state)
{
	struct stage_pipeline p = {0};
	struct stage_result r;
	struct session s = {0};
	unsigned char st[256] = {0};
	struct proto_msg parse = {.type = PqMsg_Parse};

	assert_int_equal(stage_pipeline_add(&p, &stage_b), 0);
	assert_int_equal(stage_pipeline_add(&p, &stage_a), 0);
	trace[0] = '\0';
	stage_frontend(&p, st, &s, &parse, &r);
	assert_int_equal(r.verdict, STAGE_CLOSE);
	assert_string_equal(trace, "B"); /* a never saw a message b refused */
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
	assert_memory_not_equal(a.id, b.id, SESSION_ID_LEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pipeline_runs_stages_in_order),
		cmocka_unit_test(test_first_close_wins),
		cmocka_unit_test(test_pipeline_is_bounded),
		cmocka_unit_test(test_session_ids_are_random_hex),
	};

	return cmocka_run_group_tests_name("stage", tests, NULL, NULL);
}
