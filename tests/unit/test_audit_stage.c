/*
 * Unit tests for userspace/audit/audit_stage, with this file playing the connection core:
 * it runs the stage through the real pipeline (stage.c), provides stage_wake() and the
 * stmt table (the core's, not built yet), and feeds messages with no network.
 *
 * Covered: a statement's record is in the trail before the statement may go on (PAUSE,
 * wake, resume, FORWARD); a core without a waker is refused; passwords never reach the
 * trail in any mode (literals, E'' strings, dollar quotes, PREPARE/EXECUTE, DO, extended
 * Parse/Bind with parameters on); Parse text linked to Bind/Execute through a pipeline and
 * through the stmt table; identity fields with newlines, quotes, terminal escapes and
 * invalid UTF-8 stay one escaped field; multi-statement queries and COPY; notices; a
 * failing trail (53100, or continue), the write timeout, and backpressure from a full
 * queue (fdatasync is interposed here to fail or stall on demand).
 */
#include "audit/audit.h"
#include "audit/audit_sign.h"
#include "base/clock.h"
#include "base/sanitize.h"
#include "proto/proto.h"
#include "session/session.h"
#include "stage/stage.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- the core's side ---------------------------------------------------------------- */

struct stage_waker {
	int efd;
};

int stage_wake(const struct stage_waker *w)
{
	uint64_t one = 1;

	return write(w->efd, &one, sizeof(one)) == sizeof(one) ? 0 : -errno;
}

/* fdatasync, interposed: it can be made to fail (EIO) or to stall, as a sick disk does. */
static int sync_fail;
static int sync_stall;

int fdatasync(int fd)
{
	while (__atomic_load_n(&sync_stall, __ATOMIC_ACQUIRE))
		usleep(1000);
	if (__atomic_load_n(&sync_fail, __ATOMIC_ACQUIRE)) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fdatasync, fd);
}

/* ---- fixtures ------------------------------------------------------------------------ */

static char dir[64], key_path[128], trail_path[160];
static struct audit_trail *trail;
static struct stage_pipeline pipeline;
static struct stage_waker waker;
static struct stmt_table stmts;

static struct audit_stage_options options(bool literals, bool parameters)
{
	struct audit_stage_options o = {
		.literals = literals,
		.parameters = parameters,
		.max_text = 16384,
		.write_timeout_ns = 10 * NSEC_PER_SEC,
	};

	return o;
}

static enum config_audit_fsync fsync_mode = CONFIG_AUDIT_FSYNC_BATCH;

static void start_trail(const struct audit_stage_options *o, enum config_audit_on_failure of,
			size_t queue_size)
{
	struct audit_trail_config c = {
		.path = trail_path,
		.signing_key = key_path,
		.fsync = fsync_mode,
		.checkpoint_records = 1000,
		.checkpoint_interval_ns = 3600 * NSEC_PER_SEC,
		.retry_interval_ns = 50 * NSEC_PER_MSEC,
		.on_failure = of,
		.queue_size = queue_size,
		.version = "test",
	};
	char err[512];

	unlink(trail_path);
	if (audit_trail_open(&c, &trail, err, sizeof(err)))
		fail_msg("%s", err);
	audit_stage_bind(trail, o);
}

static void stop_trail(void)
{
	audit_trail_close(trail, "test");
	trail = NULL;
	audit_stage_bind(NULL, NULL);
}

static int setup(void **state)
{
	char err[512];

	snprintf(dir, sizeof(dir), "/tmp/pgw-audit-stage-XXXXXX");
	if (!mkdtemp(dir))
		return -1;
	snprintf(key_path, sizeof(key_path), "%s/sign.key", dir);
	snprintf(trail_path, sizeof(trail_path), "%s/audit.jsonl", dir);
	if (audit_keygen(key_path, err, sizeof(err)))
		return -1;
	if (stage_pipeline_add(&pipeline, &audit_stage))
		return -1;
	waker.efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	return waker.efd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	char cmd[128];

	close(waker.efd);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- sessions and messages ------------------------------------------------------------ */

struct test_session {
	struct session s;
	struct stage_chain ch;
	uint64_t request;
};

static void session_begin(struct test_session *ts, const char *user, const char *appname,
			  const struct stage_waker *w, struct stage_result *r)
{
	uint8_t pkt[1024];
	struct proto_param params[3] = {
		{"user", user}, {"database", "shop"}, {"application_name", appname}};
	struct proto_startup st;
	int n;

	memset(ts, 0, sizeof(*ts));
	assert_int_equal(session_new_id(&ts->s), 0);
	n = proto_write_startup(pkt, sizeof(pkt), PROTO_VERSION_3_0, params, appname ? 3 : 2);
	assert_true(n > 0);
	assert_int_equal(proto_startup_parse(pkt, (uint32_t)n, &st), PROTO_OK);
	assert_int_equal(session_set_startup(&ts->s, &st), 0);
	assert_int_equal(addr_parse("192.0.2.10:40001", &ts->s.client), 0);
	assert_int_equal(addr_parse("127.0.0.1:5432", &ts->s.dialled), 0);
	ts->s.start_wall_ns = clock_wall_ns();
	ts->s.start_mono_ns = clock_mono_ns();
	assert_int_equal(stage_chain_init(&ts->ch, &pipeline, &ts->s, &stmts, w), 0);
	stage_run_session_start(&ts->ch, NULL, clock_mono_ns(), r);
}

static void session_finish(struct test_session *ts)
{
	session_end_reason(&ts->s, "client terminated");
	stage_chain_end(&ts->ch, true);
	session_release(&ts->s);
}

/* A message from bytes: type, then the body parts (C strings with their NUL, or raw). */
struct msgbuf {
	uint8_t b[70000];
	size_t n;
};

static void mb_begin(struct msgbuf *m, char type)
{
	m->b[0] = (uint8_t)type;
	m->n = 5;
}

static void mb_str(struct msgbuf *m, const char *s)
{
	size_t l = strlen(s) + 1;

	memcpy(m->b + m->n, s, l);
	m->n += l;
}

static void mb_u16(struct msgbuf *m, uint16_t v)
{
	m->b[m->n++] = (uint8_t)(v >> 8);
	m->b[m->n++] = (uint8_t)v;
}

static void mb_u32(struct msgbuf *m, uint32_t v)
{
	proto_write_u32(m->b + m->n, v);
	m->n += 4;
}

static void mb_end(struct msgbuf *m)
{
	proto_write_u32(m->b + 1, (uint32_t)(m->n - 1));
}

static void query_msg(struct msgbuf *m, const char *sql)
{
	mb_begin(m, 'Q');
	mb_str(m, sql);
	mb_end(m);
}

static void parse_msg(struct msgbuf *m, const char *name, const char *sql)
{
	mb_begin(m, 'P');
	mb_str(m, name);
	mb_str(m, sql);
	mb_u16(m, 0);
	mb_end(m);
}

/* Bind with text parameters. */
static void bind_msg(struct msgbuf *m, const char *portal, const char *stmt, unsigned n,
		     const char *const *values)
{
	mb_begin(m, 'B');
	mb_str(m, portal);
	mb_str(m, stmt);
	mb_u16(m, 0);
	mb_u16(m, (uint16_t)n);
	for (unsigned i = 0; i < n; i++) {
		mb_u32(m, (uint32_t)strlen(values[i]));
		memcpy(m->b + m->n, values[i], strlen(values[i]));
		m->n += strlen(values[i]);
	}
	mb_u16(m, 0);
	mb_end(m);
}

static void execute_msg(struct msgbuf *m, const char *portal)
{
	mb_begin(m, 'E');
	mb_str(m, portal);
	mb_u32(m, 0);
	mb_end(m);
}

static void drain_waker(void)
{
	uint64_t v;

	while (read(waker.efd, &v, sizeof(v)) == sizeof(v))
		;
}

/* Offer one message to the stages, as the core does: the first result. */
static enum stage_verdict offer(struct test_session *ts, const struct msgbuf *mb,
				uint64_t now, struct stage_result *r)
{
	struct proto_msg m;

	assert_int_equal(proto_frame(mb->b, mb->n, PROTO_FRONTEND, PROTO_MAX_BODY, &m), PROTO_OK);
	m.body = mb->b + PROTO_HEADER_LEN;
	stage_run_frontend(&ts->ch, &m, ts->request, NULL, now, r);
	return r->verdict;
}

/* The core's loop for one message: offer it; while paused, wait for a wake, offer again. */
static enum stage_verdict deliver(struct test_session *ts, const struct msgbuf *mb,
			       struct stage_result *r)
{
	enum stage_verdict v;

	ts->request++;
	v = offer(ts, mb, clock_mono_ns(), r);
	while (v == STAGE_PAUSE) {
		struct pollfd p = {.fd = waker.efd, .events = POLLIN};

		assert_int_equal(poll(&p, 1, 10000), 1);
		drain_waker();
		v = offer(ts, mb, clock_mono_ns(), r);
	}
	return v;
}

static void send_ok(struct test_session *ts, const struct msgbuf *mb)
{
	struct stage_result r;

	if (deliver(ts, mb, &r) != STAGE_FORWARD)
		fail_msg("verdict %s (%s %s)", stage_verdict_to_str(r.verdict), r.sqlstate,
			 r.message);
}

static void send_query(struct test_session *ts, const char *sql)
{
	struct msgbuf m;

	query_msg(&m, sql);
	send_ok(ts, &m);
}

static char *read_trail(void)
{
	FILE *f = fopen(trail_path, "r");
	char *buf;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static unsigned count_of(const char *text, const char *needle)
{
	unsigned n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

/* The records of an event, parsed (caller json_decref's the array). */
static json_t *records_of(const char *text, const char *event)
{
	json_t *arr = json_array();
	const char *line = text;
	char want[64];

	snprintf(want, sizeof(want), "\"event\":\"%s\"", event);
	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);

		if (memmem(line, len, want, strlen(want)))
			json_array_append_new(arr, json_loadb(line, len, 0, NULL));
		line += len + (nl ? 1 : 0);
	}
	return arr;
}

static const char *str_at(json_t *arr, size_t i, const char *key)
{
	return json_string_value(json_object_get(json_array_get(arr, i), key));
}

/* ---- the tests ---------------------------------------------------------------------- */

static void test_written_before_forwarded(void **state)
{
	struct audit_stage_options o = options(false, false);
	struct test_session ts;
	struct stage_result r;
	struct msgbuf m;
	json_t *recs;
	char *text;

	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, "alice", "psql", &waker, &r);
	assert_int_equal(r.verdict, STAGE_FORWARD);
	query_msg(&m, "SELECT * FROM cards WHERE number = '4111111111111111'");
	ts.request = 1;
	/* First offer: held until the record is durable. */
	assert_int_equal(offer(&ts, &m, clock_mono_ns(), &r), STAGE_PAUSE);
	{
		struct pollfd p = {.fd = waker.efd, .events = POLLIN};

		assert_int_equal(poll(&p, 1, 10000), 1);
		drain_waker();
	}
	/* The moment it may go on, its record is in the file. */
	text = read_trail();
	assert_non_null(strstr(text, "\"text\":\"SELECT * FROM cards WHERE number = $1\""));
	free(text);
	assert_int_equal(offer(&ts, &m, clock_mono_ns(), &r), STAGE_FORWARD);
	session_finish(&ts);
	stop_trail();
	text = read_trail();
	assert_null(strstr(text, "4111111111111111"));
	recs = records_of(text, "session_start");
	assert_int_equal(json_array_size(recs), 1);
	assert_string_equal(str_at(recs, 0, "user"), "alice");
	assert_string_equal(str_at(recs, 0, "database"), "shop");
	assert_string_equal(str_at(recs, 0, "application_name"), "psql");
	assert_string_equal(str_at(recs, 0, "dialled"), "127.0.0.1:5432");
	assert_string_equal(json_string_value(json_object_get(
				    json_object_get(json_array_get(recs, 0), "client"), "address")),
			    "192.0.2.10");
	json_decref(recs);
	recs = records_of(text, "statement");
	assert_int_equal(json_array_size(recs), 1);
	assert_string_equal(str_at(recs, 0, "class"), "read");
	assert_string_equal(str_at(recs, 0, "protocol"), "simple");
	assert_string_equal(str_at(recs, 0, "user"), "alice");
	json_decref(recs);
	recs = records_of(text, "session_end");
	assert_int_equal(json_array_size(recs), 1);
	assert_string_equal(str_at(recs, 0, "reason"), "client terminated");
	json_decref(recs);
	free(text);
}

static void test_core_without_waker_is_refused(void **state)
{
	struct audit_stage_options o = options(false, false);
	struct test_session ts;
	struct stage_result r;

	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, "alice", NULL, NULL, &r);
	assert_int_equal(r.verdict, STAGE_CLOSE);
	assert_string_equal(r.sqlstate, "53100");
	assert_non_null(strstr(r.message, "cannot hold a statement"));
	stage_chain_end(&ts.ch, true);
	session_release(&ts.s);
	stop_trail();
}

/* Passwords in CREATE/ALTER ROLE never reach the trail, in any mode. */
static void run_password_workload(bool literals, bool parameters)
{
	static const char *const queries[] = {
		"ALTER ROLE alice PASSWORD 'pw-literal-1'",
		"CREATE ROLE bob WITH LOGIN PASSWORD E'pw\\x2dliteral-2'",
		"ALTER USER carol PASSWORD $tag$pw-literal-3$tag$",
		"alter role dave encrypted password 'pw-literal-4' valid until 'infinity'",
		"PREPARE pwp AS ALTER ROLE eve PASSWORD $1; EXECUTE pwp('pw-literal-5')",
		"EXECUTE pwp('pw-literal-6')",
		"DO $$BEGIN EXECUTE 'ALTER ROLE f PASSWORD ''pw-literal-7'''; END$$",
		"ALTER ROLE g PASSWORD 'pw-literal-8' /* trailing */ ; SELECT 'pw-literal-8b'",
		"CREATE USER h PASSWORD U&'pw\\002dliteral-9'",
	};
	struct audit_stage_options o = options(literals, parameters);
	struct test_session ts;
	struct stage_result r;
	struct msgbuf m;
	const char *vals[1] = {"pw-literal-10"};
	char *text;

	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, "admin", "psql", &waker, &r);
	for (size_t i = 0; i < sizeof(queries) / sizeof(queries[0]); i++)
		send_query(&ts, queries[i]);
	/* Extended: the password as a parameter, and as a literal in the Parse. */
	parse_msg(&m, "", "ALTER ROLE g PASSWORD $1");
	send_ok(&ts, &m);
	bind_msg(&m, "", "", 1, vals);
	send_ok(&ts, &m);
	execute_msg(&m, "");
	send_ok(&ts, &m);
	parse_msg(&m, "named", "ALTER ROLE h PASSWORD 'pw-literal-11'");
	send_ok(&ts, &m);
	bind_msg(&m, "", "named", 0, NULL);
	send_ok(&ts, &m);
	execute_msg(&m, "");
	send_ok(&ts, &m);
	session_finish(&ts);
	stop_trail();
	text = read_trail();
	if (strstr(text, "pw-literal") || strstr(text, "literal-") || strstr(text, "pw\\\\x2d"))
		fail_msg("a password reached the trail (literals=%d parameters=%d):\n%s", literals,
			 parameters, text);
	/* Every statement was still recorded. */
	assert_int_equal(count_of(text, "\"event\":\"statement\""), 13);
	if (literals)
		assert_non_null(strstr(text, "\"text_redacted\":\"password\""));
	if (parameters)
		assert_non_null(strstr(text, "\"params_omitted\":\"password\""));
	free(text);
}

static void test_passwords_never_written(void **state)
{
	run_password_workload(false, false);
	run_password_workload(true, false);
	run_password_workload(false, true);
	run_password_workload(true, true);
}

/* In literals mode, ordinary statements keep their literals (it is what the option is
 * for); in the default mode none survives. */
static void test_literals_option(void **state)
{
	for (int lit = 0; lit < 2; lit++) {
		struct audit_stage_options o = options(lit, false);
		struct test_session ts;
		struct stage_result r;
		char *text;

		start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
		session_begin(&ts, "alice", "psql", &waker, &r);
		send_query(&ts, "INSERT INTO cards VALUES ('4111111111111111', 12.5, x'ff', $q$card$q$)");
		session_finish(&ts);
		stop_trail();
		text = read_trail();
		assert_int_equal(strstr(text, "4111111111111111") != NULL, lit);
		if (!lit)
			assert_non_null(strstr(text, "INSERT INTO cards VALUES ($1, $2, $3, $4)"));
		free(text);
	}
}

static void test_extended_links_parse_to_execute(void **state)
{
	struct audit_stage_options o = options(false, true);
	struct test_session ts;
	struct stage_result r;
	struct msgbuf m;
	const char *vals[2] = {"7", "it's"};
	json_t *recs;
	char *text;

	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	/* The server already has "srv" and portal "c9" (e.g. from before): the table. */
	{
		struct stmt_entry *srv = stmt_new("srv", "SELECT name FROM t WHERE id = 5", 31, 0,
						  false);

		assert_non_null(srv);
		stmt_commit(&stmts, srv);
		assert_int_equal(stmt_portal_bind(&stmts, "c9", srv), 0);
	}
	session_begin(&ts, "alice", "app", &waker, &r);
	/* A pipeline: Parse, Bind, Execute with no reply in between. */
	parse_msg(&m, "s1", "SELECT $1::int + 42, $2::text");
	send_ok(&ts, &m);
	bind_msg(&m, "", "s1", 2, vals);
	send_ok(&ts, &m);
	execute_msg(&m, "");
	send_ok(&ts, &m);
	execute_msg(&m, "c9");
	send_ok(&ts, &m);
	execute_msg(&m, "nowhere");
	send_ok(&ts, &m);
	session_finish(&ts);
	stop_trail();
	stmt_table_release(&stmts);
	text = read_trail();
	recs = records_of(text, "statement");
	assert_int_equal(json_array_size(recs), 3);
	assert_string_equal(str_at(recs, 0, "text"), "SELECT $1::int + $3, $2::text");
	assert_string_equal(str_at(recs, 0, "statement_name"), "s1");
	assert_string_equal(str_at(recs, 0, "protocol"), "extended");
	{
		json_t *p = json_object_get(json_array_get(recs, 0), "params");

		assert_int_equal(json_array_size(p), 2);
		assert_string_equal(json_string_value(json_array_get(p, 0)), "7");
		assert_string_equal(json_string_value(json_array_get(p, 1)), "it's");
	}
	assert_string_equal(str_at(recs, 1, "text"), "SELECT name FROM t WHERE id = $1");
	assert_string_equal(str_at(recs, 1, "statement_name"), "srv");
	assert_null(str_at(recs, 2, "text"));
	assert_non_null(str_at(recs, 2, "text_omitted"));
	json_decref(recs);
	free(text);
}

/* Newlines, quotes, terminal escapes and invalid UTF-8 in names stay one escaped field. */
static void test_hostile_identity_stays_one_field(void **state)
{
	static const char app[] = "app\n{\"event\":\"checkpoint\",\"seq\":1}\r\x1b[2J\x1b]0;x\x07\xff\xc0\xaf\\";
	static const char user[] = "ev\"il\n\\u0000";
	struct audit_stage_options o = options(false, false);
	struct test_session ts;
	struct stage_result r;
	char want_app[512], want_user[128], *text;
	json_t *recs;
	unsigned lines = 0;

	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, user, app, &waker, &r);
	send_query(&ts, "SELECT 1");
	session_finish(&ts);
	stop_trail();
	text = read_trail();
	for (const char *p = text; *p; p++) {
		lines += *p == '\n';
		assert_true((unsigned char)*p >= 0x20 || *p == '\n');
	}
	/* file_start, daemon_start, checkpoint, session_start, statement, session_end,
	 * daemon_stop, checkpoint: nothing more, nothing forged. */
	assert_int_equal(lines, 8);
	assert_int_equal(count_of(text, "\"event\":\"checkpoint\""), 2);
	sanitize_str(want_app, sizeof(want_app), app, SANITIZE_JSON, NULL);
	sanitize_str(want_user, sizeof(want_user), user, SANITIZE_JSON, NULL);
	recs = records_of(text, "session_start");
	assert_string_equal(str_at(recs, 0, "application_name"), want_app);
	assert_string_equal(str_at(recs, 0, "user"), want_user);
	json_decref(recs);
	free(text);
}

static void test_multi_statement_and_copy(void **state)
{
	struct audit_stage_options o = options(false, false);
	struct test_session ts;
	struct stage_result r;
	json_t *recs;
	char *text;

	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, "alice", NULL, &waker, &r);
	send_query(&ts, "BEGIN; INSERT INTO t VALUES (1); COPY t FROM STDIN; COMMIT");
	send_query(&ts, "COPY (SELECT * FROM t) TO STDOUT");
	session_finish(&ts);
	stop_trail();
	text = read_trail();
	recs = records_of(text, "statement");
	assert_int_equal(json_array_size(recs), 5);
	for (size_t i = 0; i < 4; i++) {
		assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, i), "index")),
				 i + 1);
		assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, i), "count")),
				 4);
		assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, i), "request")),
				 1);
	}
	assert_string_equal(str_at(recs, 1, "text"), "INSERT INTO t VALUES ($1)");
	assert_string_equal(str_at(recs, 2, "class"), "copy_in");
	assert_string_equal(str_at(recs, 2, "copy"), "in");
	assert_string_equal(str_at(recs, 4, "copy"), "out");
	assert_null(str_at(recs, 1, "copy"));
	json_decref(recs);
	free(text);
}

static void test_notices_are_recorded(void **state)
{
	for (int lit = 0; lit < 2; lit++) {
		struct audit_stage_options o = options(lit, false);
		struct test_session ts;
		struct stage_result r, denied;
		struct stage_note n;
		struct msgbuf m;
		struct proto_msg pm, row, describe;
		char *text;
		json_t *recs;

		start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
		session_begin(&ts, "alice", NULL, &waker, &r);
		assert_int_equal(session_set_verified(&ts.s, SESSION_AUTH_SCRAM, false, "alice"), 0);
		n = (struct stage_note){.kind = STAGE_NOTE_AUTH};
		stage_run_notice(&ts.ch, &n, NULL, clock_mono_ns());
		/* Another stage denied a query (audit hears it as a decision). */
		query_msg(&m, "DELETE FROM cards WHERE number = '4111111111111111'");
		proto_frame(m.b, m.n, PROTO_FRONTEND, PROTO_MAX_BODY, &pm);
		pm.body = m.b + 5;
		stage_result_set(&denied, STAGE_REJECT, "42501", "no-deletes",
				 "policy: DELETE is not allowed for role alice");
		n = (struct stage_note){.kind = STAGE_NOTE_DECISION, .stage = "policy",
					.result = &denied, .msg = &pm, .request = 3};
		stage_run_notice(&ts.ch, &n, NULL, clock_mono_ns());
		/* A decision tied to no request (a server message that answers none). */
		n = (struct stage_note){.kind = STAGE_NOTE_DECISION, .stage = "mask",
					.result = &denied};
		stage_run_notice(&ts.ch, &n, NULL, clock_mono_ns());
		/* The same type byte from each side, named by its own side's names: a server
		 * DataRow a stage closed on while it streamed (only its header was seen), and a
		 * client Describe. */
		row = (struct proto_msg){.type = PqMsg_DataRow, .body_len = 9000};
		n = (struct stage_note){.kind = STAGE_NOTE_DECISION, .stage = "mask",
					.result = &denied, .msg = &row, .dir = PROTO_BACKEND,
					.request = 5};
		stage_run_notice(&ts.ch, &n, NULL, clock_mono_ns());
		describe = (struct proto_msg){.type = PqMsg_Describe, .body_len = 2,
					      .body = (const uint8_t *)"P"};
		n = (struct stage_note){.kind = STAGE_NOTE_DECISION, .stage = "policy",
					.result = &denied, .msg = &describe, .dir = PROTO_FRONTEND,
					.request = 6};
		stage_run_notice(&ts.ch, &n, NULL, clock_mono_ns());
		n = (struct stage_note){.kind = STAGE_NOTE_ERROR, .severity = "ERROR",
					.sqlstate = "23505", .request = 4,
					.message = "duplicate key: Key (number)=(4111111111111111)"};
		stage_run_notice(&ts.ch, &n, NULL, clock_mono_ns());
		n = (struct stage_note){.kind = STAGE_NOTE_REQUEST_DONE, .request = 3,
					.command_tag = "SELECT 12", .rows = 12,
					.duration_ns = 2500000};
		stage_run_notice(&ts.ch, &n, NULL, clock_mono_ns());
		session_finish(&ts);
		stop_trail();
		text = read_trail();
		recs = records_of(text, "auth");
		assert_string_equal(str_at(recs, 0, "method"), "scram-sha-256");
		assert_string_equal(str_at(recs, 0, "verified_user"), "alice");
		json_decref(recs);
		recs = records_of(text, "decision");
		assert_string_equal(str_at(recs, 0, "stage"), "policy");
		assert_string_equal(str_at(recs, 0, "rule"), "no-deletes");
		assert_string_equal(str_at(recs, 0, "sqlstate"), "42501");
		assert_string_equal(str_at(recs, 0, "verdict"), "reject");
		/* It joins the statement_done of the same request. */
		assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, 0),
								    "request")),
				 3);
		assert_true(json_is_null(json_object_get(json_array_get(recs, 1), "request")));
		assert_string_equal(str_at(recs, 2, "message_type"), "DataRow");
		assert_null(str_at(recs, 2, "text"));
		assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, 2),
								    "request")),
				 5);
		assert_string_equal(str_at(recs, 3, "message_type"), "Describe");
		assert_string_equal(str_at(recs, 0, "text"),
				    lit ? "DELETE FROM cards WHERE number = '4111111111111111'" :
					  "DELETE FROM cards WHERE number = $1");
		json_decref(recs);
		recs = records_of(text, "error");
		assert_string_equal(str_at(recs, 0, "sqlstate"), "23505");
		assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, 0),
								    "request")),
				 4);
		/* The server's text quotes data: only with literals. */
		assert_int_equal(str_at(recs, 0, "message") != NULL, lit);
		json_decref(recs);
		recs = records_of(text, "statement_done");
		assert_string_equal(str_at(recs, 0, "command_tag"), "SELECT 12");
		assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, 0), "rows")), 12);
		assert_int_equal(json_integer_value(json_object_get(json_array_get(recs, 0),
								    "duration_us")),
				 2500);
		json_decref(recs);
		assert_int_equal(strstr(text, "4111111111111111") != NULL, lit);
		free(text);
	}
}

/* The lexer follows standard_conforming_strings; encodings it cannot follow get no text. */
static void test_string_rules_of_the_session(void **state)
{
	struct audit_stage_options o = options(false, false);
	struct test_session ts;
	struct stage_result r;
	char *text;

	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, "alice", NULL, &waker, &r);
	assert_int_equal(session_set_server_param(&ts.s, "standard_conforming_strings", "off"), 0);
	/* With backslash escapes the whole thing is one string: the word inside it is data. */
	send_query(&ts, "SELECT 'a\\' secretword '");
	assert_int_equal(session_set_server_param(&ts.s, "standard_conforming_strings", "on"), 0);
	assert_int_equal(session_set_server_param(&ts.s, "client_encoding", "SJIS"), 0);
	send_query(&ts, "SELECT 'x' || othersecret");
	session_finish(&ts);
	stop_trail();
	text = read_trail();
	assert_null(strstr(text, "secretword"));
	assert_null(strstr(text, "othersecret"));
	assert_non_null(strstr(text, "\"text_omitted\":\"client_encoding cannot be lexed safely\""));
	free(text);
}

static void test_failing_trail(void **state)
{
	for (int of = 0; of < 2; of++) {
		struct audit_stage_options o = options(false, false);
		struct test_session ts;
		struct stage_result r;
		struct msgbuf m;
		char *text;

		start_trail(&o, of ? CONFIG_AUDIT_CONTINUE : CONFIG_AUDIT_REJECT, 1 << 20);
		session_begin(&ts, "alice", NULL, &waker, &r);
		send_query(&ts, "SELECT 1");
		__atomic_store_n(&sync_fail, 1, __ATOMIC_RELEASE);
		query_msg(&m, "SELECT 2");
		if (of == 0) {
			assert_int_equal(deliver(&ts, &m, &r), STAGE_REJECT);
			assert_string_equal(r.sqlstate, "53100");
			assert_non_null(strstr(r.message, "the audit trail cannot be written"));
			assert_non_null(strstr(r.message, "not run"));
			/* The next one is refused at once. */
			assert_int_equal(offer(&ts, &m, clock_mono_ns(), &r), STAGE_REJECT);
		} else {
			assert_int_equal(deliver(&ts, &m, &r), STAGE_FORWARD);
			assert_int_equal(offer(&ts, &m, clock_mono_ns(), &r), STAGE_FORWARD);
		}
		__atomic_store_n(&sync_fail, 0, __ATOMIC_RELEASE);
		/* It heals by itself: within a few retries statements are recorded again. */
		for (int i = 0; i < 200 && audit_trail_failing(trail); i++)
			usleep(10000);
		assert_false(audit_trail_failing(trail));
		send_query(&ts, "SELECT 3");
		session_finish(&ts);
		stop_trail();
		text = read_trail();
		assert_int_equal(count_of(text, "\"event\":\"gap\""), 1);
		assert_non_null(strstr(text, "\"error\":\"Input/output error\""));
		assert_non_null(strstr(text, of ? "\"statements_unaudited\":2" :
						  "\"statements_refused\":2"));
		assert_non_null(strstr(text, "\"text\":\"SELECT $1\""));
		free(text);
	}
}

/* write mode: a statement goes on once its record is written; a sync that fails after that
 * stops the next statements and the gap record names what may not be durable. */
static void test_write_mode_sync_failure(void **state)
{
	struct audit_stage_options o = options(false, false);
	struct test_session ts;
	struct stage_result r;
	struct msgbuf m;
	char *text;

	bool ran;

	fsync_mode = CONFIG_AUDIT_FSYNC_WRITE;
	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, "alice", NULL, &waker, &r);
	send_query(&ts, "SELECT 1");
	__atomic_store_n(&sync_fail, 1, __ATOMIC_RELEASE);
	/* Goes on if it is written before a failed sync is noticed (its own, or SELECT 1's,
	 * which may still be running); refused if after. */
	query_msg(&m, "SELECT 2");
	ran = deliver(&ts, &m, &r) == STAGE_FORWARD;
	for (int i = 0; i < 200 && !audit_trail_failing(trail); i++)
		usleep(1000);
	assert_true(audit_trail_failing(trail));
	query_msg(&m, "SELECT 3");
	assert_int_equal(deliver(&ts, &m, &r), STAGE_REJECT);
	assert_string_equal(r.sqlstate, "53100");
	__atomic_store_n(&sync_fail, 0, __ATOMIC_RELEASE);
	for (int i = 0; i < 200 && audit_trail_failing(trail); i++)
		usleep(10000);
	send_query(&ts, "SELECT 4");
	session_finish(&ts);
	stop_trail();
	fsync_mode = CONFIG_AUDIT_FSYNC_BATCH;
	text = read_trail();
	/* What ran is in the trail; the gap says a sync failed after records were let go. */
	assert_int_equal(count_of(text, "\"event\":\"statement\""), ran ? 3 : 2);
	assert_non_null(strstr(text, "\"not_durable_through_seq\":"));
	assert_non_null(strstr(text, ran ? "\"statements_refused\":1" : "\"statements_refused\":2"));
	free(text);
}

static void test_write_timeout(void **state)
{
	struct audit_stage_options o = options(false, false);
	struct test_session ts;
	struct stage_result r;
	struct msgbuf m;
	char *text;
	uint64_t t0;

	o.write_timeout_ns = 200 * NSEC_PER_MSEC;
	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, "alice", NULL, &waker, &r);
	__atomic_store_n(&sync_stall, 1, __ATOMIC_RELEASE);
	query_msg(&m, "SELECT pg_sleep(0)");
	ts.request = 7;
	t0 = clock_mono_ns();
	assert_int_equal(offer(&ts, &m, t0, &r), STAGE_PAUSE);
	/* The core offers it again at the resume time it was given. */
	assert_int_equal(r.resume_at_ns, t0 + o.write_timeout_ns);
	assert_int_equal(offer(&ts, &m, t0 + o.write_timeout_ns, &r), STAGE_REJECT);
	assert_string_equal(r.sqlstate, "53100");
	assert_non_null(strstr(r.message, "did not confirm the statement's record within 200 ms"));
	__atomic_store_n(&sync_stall, 0, __ATOMIC_RELEASE);
	session_finish(&ts);
	stop_trail();
	text = read_trail();
	assert_non_null(strstr(text, "\"event\":\"statement_refused\""));
	assert_non_null(strstr(text, "\"request\":7"));
	free(text);
}

/* A full queue pauses statements until the writer makes room; nothing is dropped. */
static void test_full_queue_pauses(void **state)
{
	enum { SESSIONS = 24 };
	struct audit_stage_options o = options(false, false);
	static struct test_session ts[SESSIONS];
	struct stage_result r;
	struct audit_trail_stats st;
	static struct msgbuf m;
	char sql[9000], *text;
	bool done[SESSIONS] = {false};
	unsigned left = SESSIONS;

	start_trail(&o, CONFIG_AUDIT_REJECT, 64 * 1024);
	for (int i = 0; i < SESSIONS; i++) {
		session_begin(&ts[i], "alice", NULL, &waker, &r);
		ts[i].request = 1;
	}
	memset(sql, 0, sizeof(sql));
	memcpy(sql, "SELECT ", 7);
	memset(sql + 7, 'c', 8000);
	query_msg(&m, sql);
	/* The writer is stuck in fdatasync: the queue fills, then pushes back. */
	__atomic_store_n(&sync_stall, 1, __ATOMIC_RELEASE);
	for (int i = 0; i < SESSIONS; i++)
		assert_int_equal(offer(&ts[i], &m, clock_mono_ns(), &r), STAGE_PAUSE);
	audit_trail_stats(trail, &st);
	assert_true(st.queued_bytes <= 64 * 1024 + 16 * 1024);
	__atomic_store_n(&sync_stall, 0, __ATOMIC_RELEASE);
	/* Offer each paused message again whenever anything wakes, as the core would. */
	for (int rounds = 0; left && rounds < 1000; rounds++) {
		struct pollfd p = {.fd = waker.efd, .events = POLLIN};

		(void)poll(&p, 1, 100);
		drain_waker();
		for (int i = 0; i < SESSIONS; i++) {
			if (done[i])
				continue;
			if (offer(&ts[i], &m, clock_mono_ns(), &r) == STAGE_FORWARD) {
				done[i] = true;
				left--;
			} else {
				assert_int_equal(r.verdict, STAGE_PAUSE);
			}
		}
	}
	assert_int_equal(left, 0);
	for (int i = 0; i < SESSIONS; i++)
		session_finish(&ts[i]);
	stop_trail();
	text = read_trail();
	assert_int_equal(count_of(text, "\"event\":\"statement\""), SESSIONS);
	free(text);
}

static void test_masked_hook(void **state)
{
	struct audit_stage_options o = options(false, false);
	struct audit_masked_column cols[2] = {
		{.name = "number", .table_oid = 16384, .attnum = 2, .strategy = "partial"},
		{.name = "cvv\n", .table_oid = 16384, .attnum = 3, .strategy = "null"},
	};
	struct test_session ts;
	struct stage_result r;
	json_t *recs;
	char *text;

	start_trail(&o, CONFIG_AUDIT_REJECT, 1 << 20);
	session_begin(&ts, "alice", NULL, &waker, &r);
	audit_note_masked(&ts.s, 4, cols, 2);
	session_finish(&ts);
	stop_trail();
	text = read_trail();
	recs = records_of(text, "masked");
	assert_int_equal(json_array_size(recs), 1);
	{
		json_t *c = json_object_get(json_array_get(recs, 0), "columns");

		assert_int_equal(json_array_size(c), 2);
		assert_string_equal(json_string_value(json_object_get(json_array_get(c, 1), "name")),
				    "cvv\\x0a");
	}
	json_decref(recs);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_written_before_forwarded),
		cmocka_unit_test(test_core_without_waker_is_refused),
		cmocka_unit_test(test_passwords_never_written),
		cmocka_unit_test(test_literals_option),
		cmocka_unit_test(test_extended_links_parse_to_execute),
		cmocka_unit_test(test_hostile_identity_stays_one_field),
		cmocka_unit_test(test_multi_statement_and_copy),
		cmocka_unit_test(test_notices_are_recorded),
		cmocka_unit_test(test_string_rules_of_the_session),
		cmocka_unit_test(test_failing_trail),
		cmocka_unit_test(test_write_mode_sync_failure),
		cmocka_unit_test(test_write_timeout),
		cmocka_unit_test(test_full_queue_pauses),
		cmocka_unit_test(test_masked_hook),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
