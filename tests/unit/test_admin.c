/*
 * Admin socket: the JSON protocol as an operator's tool sees it. Malformed requests get a
 * JSON error and never a crash; the server keeps its socket private, bounds requests and
 * clients, and streams events to subscribers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "admin/admin.h"
#include "admin/admin_client.h"
#include "admin/admin_text.h"
#include "base/clock.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define LIVE_ID "00112233445566778899aabbccddeeff"

struct mock {
	struct session s[2];
	unsigned nsessions;
	char killed[SESSION_ID_HEXLEN + 1];
	int kills;
	bool reload_fails;
	int reloads;
	int restarts;
	enum admin_kill_mode kill_mode;
};

static int mock_sessions(void *ctx, json_t *arr)
{
	struct mock *m = ctx;
	struct admin_session_view v = {.state = "idle", .last_latency_ns = -1};

	for (unsigned i = 0; i < m->nsessions; i++)
		json_array_append_new(arr, admin_session_json(&m->s[i], &v));
	return 0;
}

static int mock_kill(void *ctx, const char *id, enum admin_kill_mode mode, json_t *result)
{
	struct mock *m = ctx;

	for (unsigned i = 0; i < m->nsessions; i++) {
		if (strcmp(m->s[i].id_hex, id) == 0) {
			snprintf(m->killed, sizeof(m->killed), "%s", id);
			m->kills++;
			m->kill_mode = mode;
			json_object_set_new(result, "backend_pid", json_integer(77));
			json_object_set_new(result, "server_cancel", json_true());
			return 0;
		}
	}
	return -ENOENT;
}

static int mock_reload(void *ctx, json_t *result, char *err, size_t n)
{
	struct mock *m = ctx;

	m->reloads++;
	if (m->reload_fails) {
		snprintf(err, n, "pgwarden.yaml:3: workers: expected a number");
		return -1;
	}
	json_object_set_new(result, "restarted", json_false());
	return 0;
}

static int mock_restart(void *ctx, json_t *result, char *err, size_t n)
{
	struct mock *m = ctx;

	m->restarts++;
	json_object_set_new(result, "pid", json_integer(4243));
	return 0;
}

static int mock_metrics(void *ctx, char **text)
{
	*text = strdup("pgwarden_build_info{version=\"t\",commit=\"c\"} 1\n");
	return *text ? 0 : -ENOMEM;
}

static int mock_status(void *ctx, json_t *obj)
{
	json_object_set_new(obj, "version", json_string("test"));
	json_object_set_new(obj, "workers", json_integer(2));
	return 0;
}

/* The mock lockout knows one locked user, "alice", and one source, "192.0.2.7". */
static int mock_unlock(void *ctx, const char *name)
{
	if (strcmp(name, "alice") == 0)
		return ADMIN_UNLOCKED_USER;
	if (strcmp(name, "192.0.2.7") == 0)
		return ADMIN_UNLOCKED_USER | ADMIN_UNLOCKED_SOURCE;
	return 0;
}

static int mock_locks(void *ctx, json_t *arr)
{
	return json_array_append_new(arr, json_pack("{s:s, s:s, s:i, s:b, s:i}", "kind", "user",
						    "name", "alice", "failures", 10, "locked", 1,
						    "locked_seconds", 1799));
}

/* The mock explain knows the rule "support" for user support in maskdb (or its own
 * database); "nobody" has no rule; database "other" is not the catalog's; the server
 * rejects "SELECT bad" with a message that quotes hostile bytes, and "SELECT slow" times
 * out. */
static int mock_explain(void *ctx, const char *user, const char *database, const char *sql,
			json_t *result, char *err, size_t n)
{
	if (strcmp(user, "nobody") == 0) {
		snprintf(err, n, "no rule admits user \"%s\"", user);
		return -ENOENT;
	}
	if (strcmp(database, "other") == 0) {
		snprintf(err, n, "the masking catalog describes database \"maskdb\" only");
		return -EOPNOTSUPP;
	}
	if (strcmp(sql, "SELECT bad") == 0) {
		snprintf(err, n, "the server rejected the statement: 42703 column \"\x1b[2Jbad\" "
				 "does not exist");
		return -EINVAL;
	}
	if (strcmp(sql, "SELECT slow") == 0) {
		snprintf(err, n, "the server did not answer within mask.catalog_timeout (1000 ms)");
		return -ETIMEDOUT;
	}
	json_object_set_new(result, "rule", json_string("support"));
	json_object_set_new(result, "masks", json_true());
	json_object_set_new(result, "columns",
			    json_pack("[s]", "1\tssn\tmasked\tpartial-last-4\tpublic.customers.ssn"));
	json_object_set_new(result, "deny", json_null());
	return 0;
}

static const struct admin_ops mock_ops = {
	.explain = mock_explain,
	.sessions = mock_sessions,
	.kill = mock_kill,
	.reload = mock_reload,
	.status = mock_status,
	.unlock = mock_unlock,
	.locks = mock_locks,
	.metrics = mock_metrics,
	.restart = mock_restart,
};

static void mock_init(struct mock *m)
{
	static const struct session_process psql = {
		.known = true, .pid = 4242, .uid = 1000, .comm = "psql"};

	memset(m, 0, sizeof(*m));
	m->nsessions = 1;
	snprintf(m->s[0].id_hex, sizeof(m->s[0].id_hex), "%s", LIVE_ID);
	m->s[0].route = SESSION_ROUTE_STEERED;
	assert_int_equal(addr_parse("127.0.0.1:40000", &m->s[0].client), 0);
	assert_int_equal(session_set_process(&m->s[0], &psql), 0);
	m->s[0].user = strdup("alice");
	m->s[0].database = strdup("shop");
	m->s[0].statements = 12;
	m->s[0].bytes_from_client = 300;
	m->s[0].bytes_from_server = 4000;
	m->s[0].protocol = 3 << 16;
	m->s[0].tx_status = 'I';
	m->s[0].start_mono_ns = clock_mono_ns();
	m->s[0].start_wall_ns = clock_wall_ns();
}

static void mock_release(struct mock *m)
{
	/* The mock's own copies: session_release() only forgets user and database, which in
	 * a real session point into its startup parameters. */
	for (unsigned i = 0; i < 2; i++) {
		free((char *)m->s[i].user);
		free((char *)m->s[i].database);
		session_release(&m->s[i]);
	}
}

/* ---- protocol, table-driven ---------------------------------------------------------- */

static const char *reply_code(json_t *r)
{
	if (json_is_true(json_object_get(r, "ok")))
		return "ok";
	return json_string_value(json_object_get(json_object_get(r, "error"), "code"));
}

static void check_line_as(struct mock *m, const char *req, size_t len, const char *want,
			  enum admin_access access, const char *where)
{
	int cmd;
	char *out = admin_handle_line(&mock_ops, m, req, len, access, &cmd);
	json_t *r;
	size_t n;

	assert_non_null(out);
	n = strlen(out);
	/* Exactly one line, newline-terminated, a JSON object with a boolean "ok". */
	assert_true(n > 1 && out[n - 1] == '\n');
	assert_null(memchr(out, '\n', n - 1));
	r = json_loads(out, 0, NULL);
	if (!r || !json_is_boolean(json_object_get(r, "ok")))
		fail_msg("%s: reply is not a JSON object with \"ok\": %s", where, out);
	if (strcmp(reply_code(r) ? reply_code(r) : "(none)", want) != 0)
		fail_msg("%s: want %s, got %s", where, want, out);
	if (!json_is_true(json_object_get(r, "ok"))) {
		json_t *msg = json_object_get(json_object_get(r, "error"), "message");

		if (!json_is_string(msg) || !json_string_length(msg))
			fail_msg("%s: error without a message: %s", where, out);
	}
	json_decref(r);
	free(out);
}

static void check_line(struct mock *m, const char *req, size_t len, const char *want,
		       const char *where)
{
	check_line_as(m, req, len, want, ADMIN_ACCESS_FULL, where);
}

static void test_protocol_cases(void **state)
{
	FILE *f = fopen("test_admin_protocol.cases", "r");
	char line[4096];
	int lineno = 0, ncases = 0;
	struct mock m;

	assert_non_null(f);
	mock_init(&m);
	while (fgets(line, sizeof(line), f)) {
		char *tab, where[64];
		size_t len;

		lineno++;
		len = strcspn(line, "\n");
		line[len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		tab = strchr(line, '\t');
		assert_non_null(tab);
		*tab = '\0';
		snprintf(where, sizeof(where), "test_admin_protocol.cases:%d", lineno);
		/* "CODE@read": the request of a member of admin_read_group. */
		{
			char *at = strchr(line, '@');
			enum admin_access access = ADMIN_ACCESS_FULL;

			if (at) {
				assert_string_equal(at + 1, "read");
				*at = '\0';
				access = ADMIN_ACCESS_READ;
			}
			check_line_as(&m, tab + 1, strlen(tab + 1), line, access, where);
		}
		ncases++;
	}
	fclose(f);
	assert_true(ncases >= 40);
	/* the live id in both spellings and with each mode; nothing a reader sent */
	assert_int_equal(m.kills, 4);
	assert_int_equal(m.restarts, 1);
	mock_release(&m);
}

static void test_protocol_binary_input(void **state)
{
	static const char nul[] = "{\"cmd\":\"status\"}\0{\"cmd\":\"kill\"}";
	static const char bad_utf8[] = "{\"cmd\":\"\xff\xfe\"}";
	struct mock m;
	char *big;

	mock_init(&m);
	check_line(&m, nul, sizeof(nul) - 1, "bad_json", "embedded NUL");
	check_line(&m, bad_utf8, sizeof(bad_utf8) - 1, "bad_json", "invalid UTF-8");
	check_line(&m, "{\"cmd\":\"status\"}\r", 17, "ok", "CRLF");
	big = malloc(100000);
	memset(big, '[', 100000);
	check_line(&m, big, 100000, "bad_json", "deep nesting");
	free(big);
	mock_release(&m);
}

static void test_reply_contents(void **state)
{
	struct mock m;
	json_t *r, *s, *p;
	char *out;
	int cmd;

	mock_init(&m);
	out = admin_handle_line(&mock_ops, &m, "{\"cmd\":\"sessions\",\"id\":\"q1\"}", 28,
				ADMIN_ACCESS_FULL, &cmd);
	assert_int_equal(cmd, ADMIN_CMD_SESSIONS);
	r = json_loads(out, 0, NULL);
	free(out);
	assert_string_equal(json_string_value(json_object_get(r, "id")), "q1");
	assert_int_equal(json_array_size(json_object_get(r, "sessions")), 1);
	s = json_array_get(json_object_get(r, "sessions"), 0);
	assert_string_equal(json_string_value(json_object_get(s, "id")), LIVE_ID);
	assert_string_equal(json_string_value(json_object_get(s, "route")), "steered");
	assert_string_equal(json_string_value(json_object_get(s, "client")), "127.0.0.1:40000");
	assert_string_equal(json_string_value(json_object_get(s, "user")), "alice");
	assert_string_equal(json_string_value(json_object_get(s, "database")), "shop");
	assert_string_equal(json_string_value(json_object_get(s, "state")), "idle");
	assert_string_equal(json_string_value(json_object_get(s, "protocol")), "3.0");
	assert_string_equal(json_string_value(json_object_get(s, "tx_status")), "I");
	assert_int_equal(json_integer_value(json_object_get(s, "statements")), 12);
	assert_int_equal(json_integer_value(json_object_get(s, "bytes_from_client")), 300);
	assert_int_equal(json_integer_value(json_object_get(s, "bytes_from_server")), 4000);
	assert_true(json_is_null(json_object_get(s, "last_latency_seconds")));
	assert_true(json_is_null(json_object_get(s, "tls")));
	assert_true(json_is_null(json_object_get(s, "application_name")));
	p = json_object_get(s, "process");
	assert_int_equal(json_integer_value(json_object_get(p, "pid")), 4242);
	assert_string_equal(json_string_value(json_object_get(p, "comm")), "psql");
	json_decref(r);

	m.reload_fails = true;
	out = admin_handle_line(&mock_ops, &m, "{\"cmd\":\"reload\"}", 16, ADMIN_ACCESS_FULL, &cmd);
	r = json_loads(out, 0, NULL);
	free(out);
	assert_string_equal(reply_code(r), "reload_failed");
	assert_non_null(strstr(json_string_value(json_object_get(json_object_get(r, "error"),
								 "message")),
			       "workers: expected a number"));
	json_decref(r);

	/* explain: the database defaults to the user's name; the server's error text comes
	 * back sanitised; a statement over ADMIN_EXPLAIN_SQL_MAX is refused before the daemon
	 * is asked. */
	{
		const char *line = "{\"cmd\":\"explain\",\"user\":\"support\",\"sql\":\"SELECT 1\"}";
		char *big = malloc(ADMIN_EXPLAIN_SQL_MAX + 128);
		int k;

		out = admin_handle_line(&mock_ops, &m, line, strlen(line), ADMIN_ACCESS_FULL, &cmd);
		r = json_loads(out, 0, NULL);
		free(out);
		assert_int_equal(cmd, ADMIN_CMD_EXPLAIN);
		assert_string_equal(json_string_value(json_object_get(r, "database")), "support");
		assert_string_equal(json_string_value(json_object_get(r, "rule")), "support");
		json_decref(r);
		line = "{\"cmd\":\"explain\",\"user\":\"support\",\"sql\":\"SELECT bad\"}";
		out = admin_handle_line(&mock_ops, &m, line, strlen(line), ADMIN_ACCESS_FULL, &cmd);
		r = json_loads(out, 0, NULL);
		free(out);
		assert_string_equal(reply_code(r), "rejected");
		assert_non_null(strstr(json_string_value(json_object_get(json_object_get(r, "error"),
									 "message")),
				       "column \"\\x1b[2Jbad\" does not exist"));
		json_decref(r);
		assert_non_null(big);
		k = snprintf(big, ADMIN_EXPLAIN_SQL_MAX + 128,
			     "{\"cmd\":\"explain\",\"user\":\"support\",\"sql\":\"SELECT 1");
		memset(big + k, ' ', ADMIN_EXPLAIN_SQL_MAX);
		memcpy(big + k + ADMIN_EXPLAIN_SQL_MAX, "\"}", 3);
		out = admin_handle_line(&mock_ops, &m, big, strlen(big), ADMIN_ACCESS_FULL, &cmd);
		r = json_loads(out, 0, NULL);
		free(out);
		assert_string_equal(reply_code(r), "too_large");
		json_decref(r);
		/* exactly the limit is accepted */
		memcpy(big + k - strlen("SELECT 1"), "        ", 8);
		memset(big + k + ADMIN_EXPLAIN_SQL_MAX - 9, 'x', 1);
		memcpy(big + k + ADMIN_EXPLAIN_SQL_MAX - 8, "\"}", 3);
		out = admin_handle_line(&mock_ops, &m, big, strlen(big), ADMIN_ACCESS_FULL, &cmd);
		r = json_loads(out, 0, NULL);
		free(out);
		assert_true(json_is_true(json_object_get(r, "ok")));
		json_decref(r);
		free(big);
	}

	/* A daemon without a kill callback says so instead of pretending. */
	{
		struct admin_ops none = {0};

		out = admin_handle_line(&none, &m, "{\"cmd\":\"kill\",\"session\":\"" LIVE_ID "\"}",
					strlen("{\"cmd\":\"kill\",\"session\":\"" LIVE_ID "\"}"),
					ADMIN_ACCESS_FULL, &cmd);
		r = json_loads(out, 0, NULL);
		free(out);
		assert_string_equal(reply_code(r), "unsupported");
		json_decref(r);
	}
	mock_release(&m);
}

static void test_json_text(void **state)
{
	json_t *j;

	j = admin_json_text("caf\xc3\xa9", 100);
	assert_string_equal(json_string_value(j), "caf\xc3\xa9");
	json_decref(j);
	/* Invalid bytes, an overlong '/', a surrogate: each byte becomes \xHH (the one
	 * spelling of base/sanitize.h), and so do controls, C1 and the backslash's own. */
	j = admin_json_text("a\xff" "b\xc0\xaf" "c\xed\xa0\x80", 100);
	assert_string_equal(json_string_value(j), "a\\xff" "b\\xc0\\xaf" "c\\xed\\xa0\\x80");
	json_decref(j);
	j = admin_json_text("\x1b]0;t\x07 \xc2\x9b \\", 100);
	assert_string_equal(json_string_value(j), "\\x1b]0;t\\x07 \\xc2\\x9b \\\\");
	json_decref(j);
	/* Cut at max bytes without splitting a character. */
	j = admin_json_text("ab\xc3\xa9", 3);
	assert_string_equal(json_string_value(j), "ab");
	json_decref(j);
	j = admin_json_text(NULL, 10);
	assert_true(json_is_null(j));
}

/* A worker rewriting the statement while the listing reads it: never a mix of two. */
static int text_stop;

static void *text_writer(void *arg)
{
	struct admin_text *t = arg;
	char a[200], b[120];

	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	/* A worker rewrites the text once per statement, not in a tight loop: pause a little
	 * between writes so reads both race writes and complete between them. */
	while (!__atomic_load_n(&text_stop, __ATOMIC_RELAXED)) {
		admin_text_set(t, a, sizeof(a));
		for (volatile int k = 0; k < 500; k++)
			;
		admin_text_set(t, b, sizeof(b));
		usleep(20);
	}
	return NULL;
}

/* Copied a word at a time: a length that is no multiple of a word, a text cut to its size. */
static void test_text_words(void **state)
{
	static struct admin_text t;
	char out[ADMIN_TEXT_MAX], longer[ADMIN_TEXT_MAX + 40];

	admin_text_set(&t, "SELECT 12345;", 13);
	assert_int_equal(admin_text_get(&t, out, sizeof(out)), 13);
	assert_string_equal(out, "SELECT 12345;");
	assert_int_equal(admin_text_get(&t, out, 11), 10);
	assert_string_equal(out, "SELECT 123");
	for (size_t i = 0; i < sizeof(longer); i++)
		longer[i] = (char)('a' + i % 26);
	admin_text_set(&t, longer, sizeof(longer));
	assert_int_equal(admin_text_get(&t, out, sizeof(out)), ADMIN_TEXT_MAX - 1);
	assert_memory_equal(out, longer, ADMIN_TEXT_MAX - 1);
	assert_int_equal(out[ADMIN_TEXT_MAX - 1], '\0');
}

static void test_text_seqlock(void **state)
{
	static struct admin_text t;
	pthread_t th;
	char out[ADMIN_TEXT_MAX];
	unsigned seen_a = 0, seen_b = 0;

	admin_text_set(&t, "SELECT 1", 8);
	assert_int_equal(admin_text_get(&t, out, sizeof(out)), 8);
	assert_string_equal(out, "SELECT 1");
	assert_int_equal(admin_text_get(&t, out, 4), 3); /* cut to the reader's buffer */
	assert_string_equal(out, "SEL");
	assert_int_equal(pthread_create(&th, NULL, text_writer, &t), 0);
	/* At least 100000 reads and 100 whole ones (bounded by 20 s on a busy machine). */
	uint64_t deadline = clock_mono_ns() + 20 * NSEC_PER_SEC;

	for (int i = 0; (i < 100000 || seen_a + seen_b < 100) && clock_mono_ns() < deadline; i++) {
		size_t n = admin_text_get(&t, out, sizeof(out));

		if (n == 0)
			continue;
		if (n == 200 && strspn(out, "a") == 200)
			seen_a++;
		else if (n == 120 && strspn(out, "b") == 120)
			seen_b++;
		else if (!(n == 8 && !strcmp(out, "SELECT 1")))
			fail_msg("torn read: %zu bytes \"%.40s...\"", n, out);
	}
	__atomic_store_n(&text_stop, 1, __ATOMIC_RELAXED);
	pthread_join(th, NULL);
	assert_true(seen_a + seen_b >= 100);
}

/* ---- the server ------------------------------------------------------------------------ */

struct fixture {
	char dir[64];
	char path[128];
	struct mock m;
	struct admin_server *srv;
};

static int server_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct admin_server_config cfg = {0};
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "/tmp/pgw-admin-test-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	/* A directory the server must create, 0700. */
	snprintf(f->path, sizeof(f->path), "%s/run/admin.sock", f->dir);
	mock_init(&f->m);
	cfg.path = f->path;
	cfg.max_clients = 3;
	cfg.max_request = 1024;
	cfg.idle_timeout_ms = 400;
	if (admin_server_start(&cfg, &mock_ops, &f->m, &f->srv, err, sizeof(err)) != 0) {
		fprintf(stderr, "admin_server_start: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

static int server_teardown(void **state)
{
	struct fixture *f = *state;
	char run[160];

	admin_server_stop(f->srv);
	mock_release(&f->m);
	snprintf(run, sizeof(run), "%s/run", f->dir);
	rmdir(run);
	rmdir(f->dir);
	free(f);
	return 0;
}

static json_t *call(struct admin_conn *c, const char *text)
{
	json_t *req = json_loads(text, 0, NULL), *reply = NULL;

	assert_non_null(req);
	assert_int_equal(admin_conn_call(c, req, &reply, 5000, NULL, NULL), 0);
	json_decref(req);
	return reply;
}

/* Send raw bytes and read one reply line. */
static json_t *raw(int fd, const char *bytes, size_t n)
{
	char buf[4096];
	size_t len = 0;

	if (n)
		assert_int_equal(send(fd, bytes, n, MSG_NOSIGNAL), (ssize_t)n);
	while (len < sizeof(buf) - 1) {
		ssize_t r = recv(fd, buf + len, 1, 0);

		if (r <= 0)
			break;
		len++;
		if (buf[len - 1] == '\n')
			break;
	}
	buf[len] = '\0';
	return json_loads(buf, 0, NULL);
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return fd;
}

static void test_server_socket_is_private(void **state)
{
	struct fixture *f = *state;
	struct admin_server_config cfg = {.path = f->path};
	struct admin_server *second;
	char run[160], err[256];
	struct stat st;

	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(run, sizeof(run), "%s/run", f->dir);
	assert_int_equal(stat(run, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0700);
	/* A second daemon on the same path is refused, and the first keeps its socket. */
	assert_int_equal(admin_server_start(&cfg, &mock_ops, &f->m, &second, err, sizeof(err)),
			 -EADDRINUSE);
	assert_non_null(strstr(err, "in use"));
	assert_int_equal(lstat(f->path, &st), 0);
}

static void test_server_requests(void **state)
{
	struct fixture *f = *state;
	struct admin_conn *c;
	json_t *r, *st;
	int fd;

	assert_int_equal(admin_conn_open(f->path, 1000, &c), 0);
	r = call(c, "{\"cmd\":\"status\"}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	st = json_object_get(r, "status");
	assert_string_equal(json_string_value(json_object_get(st, "version")), "test");
	assert_int_equal(json_integer_value(json_object_get(st, "pid")), getpid());
	assert_int_equal(json_integer_value(json_object_get(st, "protocol")), ADMIN_PROTOCOL_VERSION);
	assert_int_equal(json_integer_value(json_object_get(st, "admin_clients")), 1);
	assert_string_equal(json_string_value(json_object_get(st, "admin_socket")), f->path);
	json_decref(r);

	r = call(c, "{\"cmd\":\"kill\",\"session\":\"" LIVE_ID "\"}");
	assert_true(json_is_true(json_object_get(r, "ok")));
	assert_string_equal(f->m.killed, LIVE_ID);
	json_decref(r);

	/* Garbage on a live connection: a JSON error, and the connection still works. */
	fd = raw_connect(f->path);
	r = raw(fd, "this is not json\n", 17);
	assert_non_null(r);
	assert_string_equal(reply_code(r), "bad_json");
	json_decref(r);
	r = raw(fd, "\n", 1);
	assert_string_equal(reply_code(r), "bad_request");
	json_decref(r);
	/* Two requests in one write, answered in order. */
	r = raw(fd, "{\"cmd\":\"ping\",\"id\":1}\n{\"cmd\":\"ping\",\"id\":2}\n", 44);
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 1);
	json_decref(r);
	r = raw(fd, "", 0);
	assert_int_equal(json_integer_value(json_object_get(r, "id")), 2);
	json_decref(r);
	close(fd);
	admin_conn_close(c);
}

static void test_server_bounds(void **state)
{
	struct fixture *f = *state;
	char big[2048];
	int fds[3], extra;
	ssize_t n;
	json_t *r;
	char b;

	/* A request longer than max_request: an error, then the server hangs up. */
	fds[0] = raw_connect(f->path);
	memset(big, 'x', sizeof(big));
	r = raw(fds[0], big, sizeof(big));
	assert_non_null(r);
	assert_string_equal(reply_code(r), "too_large");
	json_decref(r);
	/* Hung up: EOF, or a reset because the rest of the line was never read. */
	n = recv(fds[0], &b, 1, 0);
	assert_true(n == 0 || (n < 0 && errno == ECONNRESET));
	close(fds[0]);

	/* max_clients = 3: the fourth is told why and closed. */
	for (int i = 0; i < 3; i++) {
		fds[i] = raw_connect(f->path);
		r = raw(fds[i], "{\"cmd\":\"ping\"}\n", 15);
		assert_string_equal(reply_code(r), "ok");
		json_decref(r);
	}
	extra = raw_connect(f->path);
	r = raw(extra, "", 0);
	assert_non_null(r);
	assert_string_equal(reply_code(r), "too_many_clients");
	json_decref(r);
	close(extra);
	for (int i = 0; i < 3; i++)
		close(fds[i]);
}

static void test_server_events(void **state)
{
	struct fixture *f = *state;
	struct admin_conn *sub;
	json_t *r, *ev = NULL;
	uint64_t deadline;

	assert_false(admin_server_has_subscribers(f->srv));
	assert_int_equal(admin_conn_open(f->path, 1000, &sub), 0);
	r = call(sub, "{\"cmd\":\"subscribe\"}");
	assert_true(json_is_true(json_object_get(r, "subscribed")));
	json_decref(r);
	deadline = clock_mono_ns() + 5 * NSEC_PER_SEC;
	while (!admin_server_has_subscribers(f->srv) && clock_mono_ns() < deadline)
		usleep(1000);
	assert_true(admin_server_has_subscribers(f->srv));

	admin_server_publish(f->srv, "session_start",
			     json_pack("{s:o}", "session",
				       admin_session_json(&f->m.s[0], NULL)));
	assert_int_equal(admin_conn_next(sub, &ev, 5000), 0);
	assert_string_equal(json_string_value(json_object_get(ev, "event")), "session_start");
	assert_non_null(json_string_value(json_object_get(ev, "time")));
	assert_string_equal(json_string_value(json_object_get(json_object_get(ev, "session"),
							      "id")),
			    LIVE_ID);
	json_decref(ev);

	/* A kill through another client shows up on the stream too. */
	{
		struct admin_conn *c;

		assert_int_equal(admin_conn_open(f->path, 1000, &c), 0);
		r = call(c, "{\"cmd\":\"kill\",\"session\":\"" LIVE_ID "\"}");
		json_decref(r);
		admin_conn_close(c);
	}
	assert_int_equal(admin_conn_next(sub, &ev, 5000), 0);
	assert_string_equal(json_string_value(json_object_get(ev, "event")), "session_kill");
	assert_string_equal(json_string_value(json_object_get(ev, "session")), LIVE_ID);
	json_decref(ev);

	admin_conn_close(sub);
	deadline = clock_mono_ns() + 5 * NSEC_PER_SEC;
	while (admin_server_has_subscribers(f->srv) && clock_mono_ns() < deadline)
		usleep(1000);
	assert_false(admin_server_has_subscribers(f->srv));
	/* Nobody listening: publishing is a no-op that frees its argument. */
	admin_server_publish(f->srv, "session_end", json_pack("{s:s}", "x", "y"));
}

static void test_server_idle_clients_closed_subscribers_kept(void **state)
{
	struct fixture *f = *state;
	struct admin_conn *sub, *idle;
	json_t *r, *ev;
	char b;
	int fd;

	assert_int_equal(admin_conn_open(f->path, 1000, &sub), 0);
	r = call(sub, "{\"cmd\":\"subscribe\"}");
	json_decref(r);
	assert_int_equal(admin_conn_open(f->path, 1000, &idle), 0);
	r = call(idle, "{\"cmd\":\"ping\"}");
	json_decref(r);
	fd = raw_connect(f->path); /* never says anything */
	usleep(1200 * 1000); /* three idle timeouts */
	/* The silent request clients are gone... */
	assert_int_equal(recv(fd, &b, 1, 0), 0);
	close(fd);
	r = json_pack("{s:s}", "cmd", "ping");
	assert_true(admin_conn_call(idle, r, &ev, 2000, NULL, NULL) < 0);
	json_decref(r);
	admin_conn_close(idle);
	/* ...the subscriber is not: it still gets events. */
	admin_server_publish(f->srv, "reload", NULL);
	assert_int_equal(admin_conn_next(sub, &ev, 5000), 0);
	assert_string_equal(json_string_value(json_object_get(ev, "event")), "reload");
	json_decref(ev);
	admin_conn_close(sub);
}

static void test_server_stale_socket_and_cleanup(void **state)
{
	char dir[] = "/tmp/pgw-admin-stale-XXXXXX", path[100], err[256];
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct admin_server_config cfg = {0};
	struct admin_server *srv;
	struct mock m;
	struct stat st;
	int fd;

	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/admin.sock", dir);
	/* A socket left behind by a daemon that died: bound, never listening. */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(strlen(path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	mock_init(&m);
	cfg.path = path;
	assert_int_equal(admin_server_start(&cfg, &mock_ops, &m, &srv, err, sizeof(err)), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	admin_server_stop(srv);
	assert_int_equal(stat(path, &st), -1);

	/* A regular file where the socket should be is not ours to remove. */
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	close(fd);
	assert_true(admin_server_start(&cfg, &mock_ops, &m, &srv, err, sizeof(err)) < 0);
	assert_non_null(strstr(err, "not a socket"));
	unlink(path);
	rmdir(dir);
	mock_release(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_protocol_cases),
		cmocka_unit_test(test_protocol_binary_input),
		cmocka_unit_test(test_reply_contents),
		cmocka_unit_test(test_json_text),
		cmocka_unit_test(test_text_words), cmocka_unit_test(test_text_seqlock),
		cmocka_unit_test_setup_teardown(test_server_socket_is_private, server_setup,
						server_teardown),
		cmocka_unit_test_setup_teardown(test_server_requests, server_setup, server_teardown),
		cmocka_unit_test_setup_teardown(test_server_bounds, server_setup, server_teardown),
		cmocka_unit_test_setup_teardown(test_server_events, server_setup, server_teardown),
		cmocka_unit_test_setup_teardown(test_server_idle_clients_closed_subscribers_kept,
						server_setup, server_teardown),
		cmocka_unit_test(test_server_stale_socket_and_cleanup),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
