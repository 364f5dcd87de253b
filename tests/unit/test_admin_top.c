/*
 * pgwarden-top's model (tools/pgwarden-top/top_model.c): rates from two snapshots, filters,
 * sort orders and the 80-column layout, without a terminal. The tool's sources are not in
 * libpgwarden.a, so the model is compiled into this test directly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "../../tools/pgwarden-top/top_model.c"

static json_t *session(const char *id, const char *user, const char *db, const char *comm,
		       long long pid, double dur, long long stmts, long long in, long long out)
{
	json_t *s = json_pack("{s:s, s:s, s:s, s:s, s:s, s:f, s:I, s:I, s:I, s:s, s:n}", "id", id,
			      "user", user, "database", db, "state", "idle", "client",
			      "127.0.0.1:5000", "duration_seconds", dur, "statements",
			      (json_int_t)stmts, "bytes_from_client", (json_int_t)in,
			      "bytes_from_server", (json_int_t)out, "last_statement",
			      "SELECT 1\nFROM t", "tls");

	if (comm)
		json_object_set_new(s, "process",
				    json_pack("{s:s, s:I}", "comm", comm, "pid", (json_int_t)pid));
	else
		json_object_set_new(s, "process", json_null());
	return s;
}

#define ID_A "aaaaaaaa000000000000000000000000"
#define ID_B "bbbbbbbb000000000000000000000000"
#define ID_C "cccccccc000000000000000000000000"

static void snapshot(struct top_model *m, double t, long long a_stmts, long long b_stmts,
		     bool with_c)
{
	json_t *arr = json_array();

	json_array_append_new(arr, session(ID_A, "alice", "shop", "psql", 42, 100 + t, a_stmts,
					   10 * a_stmts, 100 * a_stmts));
	json_array_append_new(arr, session(ID_B, "bob", "erp", NULL, 0, 50 + t, b_stmts, 0, 0));
	if (with_c)
		json_array_append_new(arr, session(ID_C, "carol", "shop", "pgbench", 7, 0.5, 20, 0, 0));
	assert_int_equal(top_model_update(m, arr, t), 0);
	json_decref(arr);
}

static const struct top_row *view_row(const struct top_model *m, size_t i)
{
	assert_true(i < m->nview);
	return &m->rows[m->view[i]];
}

static void test_rates_and_totals(void **state)
{
	struct top_model m;

	top_model_init(&m);
	snapshot(&m, 10.0, 100, 5, false);
	/* First snapshot: no rates yet. */
	assert_int_equal(m.totals.sessions, 2);
	assert_true(m.totals.qps == 0);
	snapshot(&m, 12.0, 140, 5, true);
	assert_int_equal(m.totals.sessions, 3);
	assert_int_equal(m.totals.by_state_idle, 3);
	/* Default sort: busiest first. alice 20/s, carol (new, 0.5 s old) 40/s, bob 0. */
	assert_string_equal(view_row(&m, 0)->id, ID_C);
	assert_true(view_row(&m, 0)->qps > 39.9 && view_row(&m, 0)->qps < 40.1);
	assert_string_equal(view_row(&m, 1)->id, ID_A);
	assert_true(view_row(&m, 1)->qps > 19.9 && view_row(&m, 1)->qps < 20.1);
	assert_true(view_row(&m, 1)->bps > 2199 && view_row(&m, 1)->bps < 2201); /* (400+4000)/2 */
	assert_string_equal(view_row(&m, 2)->id, ID_B);
	assert_true(m.totals.qps > 59.9 && m.totals.qps < 60.1);
	/* Identity columns. */
	assert_string_equal(view_row(&m, 1)->who, "psql[42]");
	assert_string_equal(view_row(&m, 2)->who, "127.0.0.1:5000");
	/* A raw newline (the daemon flattens a statement's whitespace before it sends it) is
	 * an escape here: a row stays one line, and nothing reaches the terminal raw. */
	assert_string_equal(view_row(&m, 1)->last, "SELECT 1\\x0aFROM t");
	assert_string_equal(view_row(&m, 1)->tls, "no");
	top_model_free(&m);
}

static void test_sort_and_filter(void **state)
{
	struct top_model m;
	char err[128], buf[128];

	top_model_init(&m);
	snapshot(&m, 1.0, 1, 1, true);
	m.sort = TOP_COL_USER;
	top_model_refresh_view(&m);
	assert_string_equal(view_row(&m, 0)->user, "alice");
	assert_string_equal(view_row(&m, 2)->user, "carol");
	m.reverse = true;
	top_model_refresh_view(&m);
	assert_string_equal(view_row(&m, 0)->user, "carol");
	m.sort = TOP_COL_TIME;
	m.reverse = false;
	top_model_refresh_view(&m);
	assert_string_equal(view_row(&m, 0)->user, "alice"); /* oldest first */

	assert_int_equal(top_filter_parse(&m.filter, "db=shop", err, sizeof(err)), 0);
	top_model_refresh_view(&m);
	assert_int_equal(m.nview, 2);
	assert_int_equal(top_filter_parse(&m.filter, "db=SHOP proc=pgbench", err, sizeof(err)), 0);
	top_model_refresh_view(&m);
	assert_int_equal(m.nview, 1);
	assert_string_equal(view_row(&m, 0)->user, "carol");
	assert_int_equal(top_filter_parse(&m.filter, "proc=42", err, sizeof(err)), 0);
	top_model_refresh_view(&m);
	assert_int_equal(m.nview, 1);
	assert_string_equal(view_row(&m, 0)->user, "alice");
	assert_int_equal(top_filter_parse(&m.filter, "user=bo", err, sizeof(err)), 0);
	top_model_refresh_view(&m);
	assert_int_equal(m.nview, 1);
	assert_string_equal(top_filter_format(&m.filter, buf, sizeof(buf)), "user=bo");
	assert_int_equal(top_filter_parse(&m.filter, "erp", err, sizeof(err)), 0); /* free text */
	top_model_refresh_view(&m);
	assert_int_equal(m.nview, 1);
	assert_int_equal(top_filter_parse(&m.filter, "colour=red", err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "colour"));
	/* A bad filter leaves the old one. */
	assert_string_equal(top_filter_format(&m.filter, buf, sizeof(buf)), "erp");
	top_model_free(&m);
}

static void test_layout_80_columns(void **state)
{
	struct top_layout l;
	struct top_model m;
	char line[256];

	top_layout_compute(&l, 80);
	assert_true(l.width[TOP_COL_LAST] >= 8);
	assert_int_equal(l.start[TOP_COL_LAST] + l.width[TOP_COL_LAST], 80);
	top_format_header(&l, TOP_COL_QPS, false, line, sizeof(line));
	assert_int_equal(strlen(line), 80);
	assert_string_equal(line, "ID       PROCESS/CLIENT USER     DATABASE STATE  TLS   TIME ST/Sv   B/S LAST STA");

	top_model_init(&m);
	snapshot(&m, 1.0, 1, 1, false);
	m.sort = TOP_COL_USER;
	top_model_refresh_view(&m);
	top_format_row(&l, view_row(&m, 0), line, sizeof(line));
	assert_int_equal(strlen(line), 80);
	assert_string_equal(line, "aaaaaaaa psql[42]       alice    shop     idle   no    1m41     0     0 SELECT 1");
	/* Wider terminals give the statement the room. */
	top_layout_compute(&l, 200);
	assert_true(l.width[TOP_COL_LAST] > 100);
	top_model_free(&m);
}

static void test_formats(void **state)
{
	char b[32];

	assert_string_equal(top_fmt_duration(59.9, b, sizeof(b)), "59s");
	assert_string_equal(top_fmt_duration(725, b, sizeof(b)), "12m05");
	assert_string_equal(top_fmt_duration(3 * 3600 + 4 * 60, b, sizeof(b)), "3h04");
	assert_string_equal(top_fmt_duration(2 * 86400 + 3600, b, sizeof(b)), "2d01");
	assert_string_equal(top_fmt_rate(0, b, sizeof(b)), "0");
	assert_string_equal(top_fmt_rate(2.54, b, sizeof(b)), "2.5");
	assert_string_equal(top_fmt_rate(512, b, sizeof(b)), "512");
	assert_string_equal(top_fmt_rate(1234, b, sizeof(b)), "1.2K");
	assert_string_equal(top_fmt_rate(56789012, b, sizeof(b)), "57M");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rates_and_totals),
		cmocka_unit_test(test_sort_and_filter),
		cmocka_unit_test(test_layout_80_columns),
		cmocka_unit_test(test_formats),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
