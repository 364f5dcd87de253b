/*
 * Unit tests for the connection state machine (userspace/relay/conn*.c, track.c) over the
 * scripted fake transport: no sockets, no threads, time driven by the test. A fake server
 * answers as PostgreSQL would; the test checks what each side receives, byte for byte, and
 * the states the connection goes through.
 *
 * Covered: the transition table (every pair), the login and each phase, one-byte reads and
 * writes, bytes held inside a transport, every timer, the stage contract at the connection
 * (reject in simple and extended mode with the transaction status the server reports,
 * earlier pipelined results intact; rewrite with a changed length; pause and resume by
 * wake and by deadline; injected replies in protocol order; per-session interest;
 * streaming rewrite; notices), the statement table and its limits, and the ways a
 * session ends (server FATAL, client Terminate, a server that breaks); the login through
 * the auth machines (conn_auth.c) against hostile peers: a server asking for a method
 * auth.server_methods forbids or skipping to AuthenticationOk, a password before any
 * request, garbage SCRAM either way, the lockout; terminate mode end to end with a real
 * SCRAM client and server, wrong passwords, hostile clients and a server that skips the
 * login. TLS negotiation on both legs (conn_tls.c): the client leg over a socketpair with a
 * real OpenSSL client (SSLRequest and direct), and the hostile cases: bytes after
 * SSLRequest, plaintext under require, a server that injects after 'S', answers 'N' under
 * require or an ErrorResponse.
 */
#include "auth/auth.h"
#include "base/log.h"
#include "proto/proto.h"
#include "relay/conn.h"
#include "relay/relay.h"
#include "relay/track_internal.h"
#include "relay/worker.h"
#include "stage/stage.h"
#include "tls/tls.h"

#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "fake_transport.h"
#include "tls_pki.h"

#define NS_PER_S 1000000000ULL

/* ---- messages --------------------------------------------------------------------------- */

struct msgs {
	uint8_t b[16384];
	size_t n;
};

static void put(struct msgs *m, uint8_t type, const void *body, size_t len)
{
	m->b[m->n] = type;
	proto_write_u32(m->b + m->n + 1, (uint32_t)len + 4);
	if (len)
		memcpy(m->b + m->n + 5, body, len);
	m->n += 5 + len;
}

static size_t cat(uint8_t *p, const char *s)
{
	size_t n = strlen(s) + 1;

	memcpy(p, s, n);
	return n;
}

static void m_query(struct msgs *m, const char *sql)
{
	uint8_t b[1024];

	put(m, 'Q', b, cat(b, sql));
}

static void m_parse(struct msgs *m, const char *name, const char *sql)
{
	uint8_t b[1024];
	size_t n = cat(b, name);

	n += cat(b + n, sql);
	b[n++] = 0;
	b[n++] = 0;
	put(m, 'P', b, n);
}

static void m_bind(struct msgs *m, const char *portal, const char *stmt)
{
	uint8_t b[256];
	size_t n = cat(b, portal);

	n += cat(b + n, stmt);
	memset(b + n, 0, 6); /* no formats, no parameters, no result formats */
	put(m, 'B', b, n + 6);
}

static void m_describe(struct msgs *m, char kind, const char *name)
{
	uint8_t b[256];

	b[0] = (uint8_t)kind;
	put(m, 'D', b, 1 + cat(b + 1, name));
}

static void m_execute(struct msgs *m, const char *portal)
{
	uint8_t b[256];
	size_t n = cat(b, portal);

	memset(b + n, 0, 4);
	put(m, 'E', b, n + 4);
}

static void m_close(struct msgs *m, char kind, const char *name)
{
	uint8_t b[256];

	b[0] = (uint8_t)kind;
	put(m, 'C', b, 1 + cat(b + 1, name));
}

static void m_sync(struct msgs *m)
{
	put(m, 'S', NULL, 0);
}

static void m_terminate(struct msgs *m)
{
	put(m, 'X', NULL, 0);
}

static void r_auth(struct msgs *m, uint32_t code)
{
	uint8_t b[4];

	proto_write_u32(b, code);
	put(m, 'R', b, 4);
}

static void r_param(struct msgs *m, const char *name, const char *value)
{
	uint8_t b[256];
	size_t n = cat(b, name);

	put(m, 'S', b, n + cat(b + n, value));
}

static void r_key(struct msgs *m)
{
	uint8_t b[8] = {0, 0, 0x10, 0x92, 0xde, 0xad, 0xbe, 0xef};

	put(m, 'K', b, 8);
}

static void r_ready(struct msgs *m, char tx)
{
	uint8_t b = (uint8_t)tx;

	put(m, 'Z', &b, 1);
}

static void r_complete(struct msgs *m, const char *tag)
{
	uint8_t b[64];

	put(m, 'C', b, cat(b, tag));
}

static void r_rowdesc(struct msgs *m)
{
	uint8_t b[64] = {0, 1};
	size_t n = 2 + cat(b + 2, "c");

	memset(b + n, 0, 18);
	b[n + 7] = 25; /* type text */
	b[n + 8] = 0xff;
	b[n + 9] = 0xff;
	b[n + 10] = 0xff;
	b[n + 11] = 0xff;
	put(m, 'T', b, n + 18);
}

static void r_datarow(struct msgs *m, const char *v)
{
	uint8_t b[1024] = {0, 1};
	size_t n = strlen(v);

	proto_write_u32(b + 2, (uint32_t)n);
	memcpy(b + 6, v, n);
	put(m, 'D', b, 6 + n);
}

static void r_error(struct msgs *m, const char *severity, const char *code, const char *text)
{
	int n = proto_write_error(m->b + m->n, sizeof(m->b) - m->n, severity, code, text);

	assert_true(n > 0);
	m->n += (size_t)n;
}

/* The type bytes of a run of messages: "1 2 T C Z" reads as "12TCZ". */
static void types_of(const uint8_t *p, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	while (n >= 5 && o + 1 < cap) {
		uint32_t len = proto_read_u32(p + 1) + 1;

		out[o++] = (char)p[0];
		assert_true(len <= n);
		p += len;
		n -= len;
	}
	assert_int_equal(n, 0);
	out[o] = '\0';
}

/* The SQLSTATE of the first ErrorResponse in p[0..n), or "" when there is none. */
static const char *first_error_code(const uint8_t *p, size_t n)
{
	static char code[6];

	code[0] = '\0';
	while (n >= 5) {
		uint32_t len = proto_read_u32(p + 1) + 1;
		struct proto_msg m = {.type = p[0], .body_len = len - 5, .body = p + 5};
		struct proto_error_fields ef;

		if (p[0] == 'E' && proto_read_error(&m, &ef) == PROTO_OK && ef.sqlstate) {
			snprintf(code, sizeof(code), "%s", ef.sqlstate);
			return code;
		}
		p += len;
		n -= len;
	}
	return code;
}

/* The last ReadyForQuery's transaction status in p[0..n), or 0. */
static char last_ready(const uint8_t *p, size_t n)
{
	char tx = 0;

	while (n >= 5) {
		uint32_t len = proto_read_u32(p + 1) + 1;

		if (p[0] == 'Z')
			tx = (char)p[5];
		p += len;
		n -= len;
	}
	return tx;
}

/* ---- test stages ------------------------------------------------------------------------ */

/* "judge": refuses statements that mention "forbidden", rewrites "SELECT 1" into a longer
 * statement, pauses "wait", streams DataRow for user "masked", wants DataRow whole for user
 * "watched" (and ends the session at a row that says "forbidden"). */
struct judge_state {
	int datarows_seen;
	uint64_t datarow_request; /* the request the last DataRow answered */
	uint8_t row[16384];
	uint32_t row_len;
	uint8_t outmsg[4096];
	uint32_t out_len, out_pos;
	bool built;
	int runs, run_rows; /* stream_run calls, and the rows they finished */
	int partial_runs;   /* runs that stopped inside a message */
};

static uint8_t judge_rewrite[64];
static uint64_t judge_resume_at;
static int judge_runs; /* stream_run calls in this test (a closed session's state is gone) */

static const char *msg_sql(const struct proto_msg *m)
{
	const char *sql = NULL, *name;
	uint16_t np;

	if (m->type == 'Q' && proto_read_query(m, &sql) == PROTO_OK)
		return sql;
	if (m->type == 'P' && proto_read_parse(m, &name, &sql, &np) == PROTO_OK)
		return sql;
	return "";
}

static void judge_start(struct stage_ctx *ctx, struct stage_result *r)
{
	const char *u = ctx->session->user;

	if (u && strcmp(u, "watched") == 0)
		assert_int_equal(stage_want(ctx, PROTO_BACKEND, 'D', STAGE_WHOLE), 0);
	if (u && strcmp(u, "masked") == 0)
		assert_int_equal(stage_want(ctx, PROTO_BACKEND, 'D', STAGE_STREAM), 0);
	if (u && strcmp(u, "idler") == 0)
		ctx->limits->idle_ms = 1000;
	if (u && strcmp(u, "slowlogin") == 0)
		ctx->limits->login_ms = 2000;
	if (u && strcmp(u, "refused") == 0)
		stage_result_set(r, STAGE_CLOSE, "28000", "no-rule",
				 "pgwarden: no rule admits user \"refused\"");
}

static void judge_frontend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	const char *sql = msg_sql(m);

	if (strstr(sql, "forbidden")) {
		stage_result_set(r, STAGE_REJECT, "42501", "no-forbidden",
				 "pgwarden: statement denied by rule \"no-forbidden\"");
	} else if (strcmp(sql, "SELECT 1") == 0) {
		int n = proto_write_query(judge_rewrite, sizeof(judge_rewrite),
					  "SELECT 1 + 100000 AS rewritten");

		stage_result_rewrite(r, judge_rewrite, (uint32_t)n);
	} else if (strcmp(sql, "wait") == 0 && !ctx->resumed) {
		stage_result_pause(r, judge_resume_at);
	} else if (strcmp(sql, "close now") == 0) {
		stage_result_set(r, STAGE_CLOSE, "28000", "revoked",
				 "pgwarden: the rule that admitted this session is gone");
	}
}

static void judge_backend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct judge_state *j = ctx->state;

	j->datarows_seen += m->type == 'D';
	j->datarow_request = ctx->request;
	if (m->type == 'D' && memmem(m->body, m->body_len, "forbidden", 9))
		stage_result_set(r, STAGE_CLOSE, "42501", "no-forbidden-rows",
				 "pgwarden: a row the rule \"no-forbidden-rows\" refuses");
}

/* The replacement of the row collected in j->row: every value "masked". */
static void judge_build(struct judge_state *j)
{
	uint16_t ncols = (uint16_t)(j->row[0] << 8 | j->row[1]);
	uint32_t in = 2, out = 7;

	j->outmsg[0] = 'D';
	j->outmsg[5] = j->row[0];
	j->outmsg[6] = j->row[1];
	for (uint16_t i = 0; i < ncols; i++) {
		int32_t len = (int32_t)proto_read_u32(j->row + in);

		in += 4 + (len > 0 ? (uint32_t)len : 0);
		if (len < 0) {
			proto_write_u32(j->outmsg + out, 0xffffffffu);
			out += 4;
			continue;
		}
		proto_write_u32(j->outmsg + out, 6);
		memcpy(j->outmsg + out + 4, "masked", 6);
		out += 10;
	}
	proto_write_u32(j->outmsg + 1, out - 1);
	j->out_len = out;
	j->out_pos = 0;
	j->built = true;
}

/* Streaming: read the whole row, then answer with every value replaced by "masked". */
static void judge_stream(struct stage_ctx *ctx, struct stage_stream *st, struct stage_result *r)
{
	struct judge_state *j = ctx->state;
	size_t room;

	if (!j->built) {
		size_t take = st->in_len;

		assert_true(j->row_len + take <= sizeof(j->row));
		memcpy(j->row + j->row_len, st->in, take);
		j->row_len += (uint32_t)take;
		st->consumed = take;
		if (st->body_offset + take == st->body_len)
			judge_build(j);
	}
	if (!j->built)
		return;
	if (j->out_pos == 0 && memmem(j->row, j->row_len, "refuse", 6)) {
		/* a row the stage cannot pass, decided before any of its replacement */
		j->built = false;
		j->row_len = 0;
		stage_result_set(r, STAGE_CLOSE, "54000", NULL, "row refused");
		return;
	}
	room = st->out_cap < j->out_len - j->out_pos ? st->out_cap : j->out_len - j->out_pos;
	memcpy(st->out, j->outmsg + j->out_pos, room);
	j->out_pos += (uint32_t)room;
	st->produced = room;
	if (j->out_pos == j->out_len) {
		st->done = true;
		j->built = false;
		j->row_len = 0;
	}
}

/* A run (stage.h): each row as judge_stream() would rewrite it; a row that says "refuse"
 * closes the session at its boundary, one that says "halfway" stops the run inside it with
 * half its body taken, and a replacement the room cannot hold stops the run inside its row
 * with what fits written; stream() finishes both. */
static void judge_stream_run(struct stage_ctx *ctx, struct stage_stream *st,
			     struct stage_result *r)
{
	struct judge_state *j = ctx->state;
	size_t in = 0, out = 0;

	assert_false(j->built);
	assert_int_equal(j->row_len, 0);
	j->runs++;
	judge_runs++;
	while (in < st->in_len) {
		uint32_t body_len = proto_read_u32(st->in + in + 1) - 4;
		const uint8_t *body = st->in + in + PROTO_HEADER_LEN;
		size_t room = st->out_cap - out;

		assert_int_equal(st->in[in], st->type);
		assert_true(in + PROTO_HEADER_LEN + body_len <= st->in_len);
		if (memmem(body, body_len, "halfway", 7)) {
			memcpy(j->row, body, body_len / 2);
			j->row_len = body_len / 2;
			in += PROTO_HEADER_LEN + body_len / 2;
			st->partial = true;
			j->partial_runs++;
			break;
		}
		if (memmem(body, body_len, "refuse", 6)) {
			stage_result_set(r, STAGE_CLOSE, "54000", NULL, "row refused");
			break;
		}
		memcpy(j->row, body, body_len);
		j->row_len = body_len;
		judge_build(j);
		in += PROTO_HEADER_LEN + body_len;
		if (room < j->out_len) {
			memcpy(st->out + out, j->outmsg, room);
			j->out_pos = (uint32_t)room;
			out += room;
			st->partial = true;
			st->partial_produced = room;
			j->partial_runs++;
			break;
		}
		memcpy(st->out + out, j->outmsg, j->out_len);
		out += j->out_len;
		j->built = false;
		j->row_len = 0;
		j->run_rows++;
	}
	st->consumed = in;
	st->produced = out;
}

static struct stage_ops judge_stage = {
	.name = "judge",
	.state_size = sizeof(struct judge_state),
	.wakes = true, /* its sessions have a waker (test_wake_after_the_end) */
	.session_start = judge_start,
	.frontend = judge_frontend,
	.backend = judge_backend,
	.stream = judge_stream,
	.stream_run = judge_stream_run,
};

/* "rec": records what every stage must hear. */
static struct {
	int decisions, errors, done, auths, params, ended;
	char last_decider[16], last_error[6], last_tag[32];
	uint64_t last_rows;
	uint64_t last_request;
	uint64_t decision_request; /* of the last decision */
	uint64_t failed_request;   /* of the last request the server failed */
	uint64_t error_request;    /* of the last error the client got */
	int skipped;
	char last_stmt[32];
} rec;

static void rec_notice(struct stage_ctx *ctx, const struct stage_note *n)
{
	switch (n->kind) {
	case STAGE_NOTE_DECISION:
		rec.decisions++;
		snprintf(rec.last_decider, sizeof(rec.last_decider), "%s", n->stage);
		rec.decision_request = n->request;
		break;
	case STAGE_NOTE_ERROR:
		rec.errors++;
		snprintf(rec.last_error, sizeof(rec.last_error), "%s", n->sqlstate ? n->sqlstate : "");
		rec.error_request = n->request;
		break;
	case STAGE_NOTE_REQUEST_DONE:
		rec.done++;
		rec.skipped += n->skipped;
		rec.last_request = n->request;
		if (n->failed)
			rec.failed_request = n->request;
		if (n->stmt)
			snprintf(rec.last_stmt, sizeof(rec.last_stmt), "%s", n->stmt->name);
		if (n->command_tag) {
			snprintf(rec.last_tag, sizeof(rec.last_tag), "%s", n->command_tag);
			rec.last_rows = n->rows;
		}
		break;
	case STAGE_NOTE_AUTH:
		rec.auths++;
		break;
	case STAGE_NOTE_SERVER_PARAM:
		rec.params++;
		break;
	}
}

static void rec_end(struct stage_ctx *ctx)
{
	rec.ended++;
}

static struct stage_ops rec_stage = {
	.name = "rec",
	.notice = rec_notice,
	.session_end = rec_end,
};

/* ---- the fixture ------------------------------------------------------------------------ */

static struct {
	struct relay relay;
	struct tls_store tls;
	struct worker *w;
	struct fake client, server;
	/* A test may give the server leg a real socket (the relay's end of a socketpair). */
	int server_fd;
	struct transport server_plain;
	bool connect_pending;
	int connects;
	uint64_t now;
} F;

static int fake_connect_start(struct conn *c, const struct addr *to, const char *unix_path,
			      struct transport **out)
{
	fake_init(&F.server);
	F.connects++;
	if (F.server_fd > 0) {
		transport_sock_init(&F.server_plain, F.server_fd, false);
		F.server_plain.ready = TRANSPORT_WRITE;
		*out = &F.server_plain;
		return 0;
	}
	*out = &F.server.t;
	return 0;
}

static int fake_connect_finish(struct conn *c, struct transport *t)
{
	return F.connect_pending ? -EINPROGRESS : 0;
}

static const struct relay_connector fake_connector = {
	.start = fake_connect_start,
	.finish = fake_connect_finish,
};

static int setup(void **state)
{
	struct config *cfg = config_new();
	char err[256];

	memset(&F, 0, sizeof(F));
	memset(&rec, 0, sizeof(rec));
	judge_resume_at = 0;
	judge_runs = 0;
	relay_init(&F.relay);
	tls_store_init(&F.tls);
	F.relay.tls = &F.tls; /* empty: no TLS unless a test publishes a snapshot */
	F.relay.connector = &fake_connector;
	F.relay.cancels = cancel_map_new();
	assert_non_null(F.relay.cancels);
	assert_int_equal(stage_pipeline_add(&F.relay.pipeline, &judge_stage), 0);
	assert_int_equal(stage_pipeline_add(&F.relay.pipeline, &rec_stage), 0);
	typeset_add(&judge_stage.frontend_whole, 'Q');
	typeset_add(&judge_stage.frontend_whole, 'P');
	assert_non_null(cfg);
	assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:5432", err, sizeof(err)), 0);
	assert_int_equal(config_set(cfg, "session.max_prepared_statements", "3", err, sizeof(err)),
			 0);
	relay_config_publish(&F.relay, cfg);
	assert_int_equal(worker_create(&F.w, 0, &F.relay, F.relay.config), 0);
	F.now = 1000 * NS_PER_S;
	F.w->loop.now = F.now;
	fake_init(&F.client);
	return 0;
}

static int teardown(void **state)
{
	/* Whatever is still open ends now; its memory goes at the deferred free. */
	while (F.w->conns)
		conn_terminate(F.w->conns, "57P01", "test over", "test over");
	loop_tick(&F.w->loop, F.now);
	worker_destroy(F.w);
	auth_runtime_free(F.relay.auth);
	cancel_map_free(F.relay.cancels);
	config_unref(F.relay.config);
	tls_store_destroy(&F.tls);
	return 0;
}

static struct conn *the_conn(void)
{
	return F.w->conns;
}

static void tick(uint64_t ns)
{
	F.now += ns;
	loop_tick(&F.w->loop, F.now);
}

static void client_sends(const struct msgs *m)
{
	fake_feed(&F.client, m->b, m->n);
	if (the_conn())
		conn_client_events(the_conn(), EPOLLIN);
}

static void server_sends(const struct msgs *m)
{
	fake_feed(&F.server, m->b, m->n);
	if (the_conn())
		conn_server_events(the_conn(), EPOLLIN);
}

static void startup_packet(struct msgs *m, const char *user)
{
	const struct proto_param params[] = {{"user", user}, {"database", "db"}};
	int n = proto_write_startup(m->b + m->n, sizeof(m->b) - m->n, PROTO_VERSION_3_0, params, 2);

	assert_true(n > 0);
	m->n += (size_t)n;
}

/* A new connection whose client has sent its StartupMessage. */
static struct conn *connect_client(const char *user)
{
	struct session proto = {0};
	struct msgs m = {.n = 0};

	assert_int_equal(session_new_id(&proto), 0);
	proto.upstream = F.relay.config->upstream;
	assert_int_equal(conn_start(F.w, &F.client.t, &proto), 0);
	startup_packet(&m, user);
	client_sends(&m);
	return the_conn();
}

/* Connected, logged in with trust, READY. */
static struct conn *login(const char *user)
{
	struct conn *c = connect_client(user);
	struct msgs m = {.n = 0};
	const uint8_t *p;
	char t[64];

	assert_int_equal(c->state, CONN_CONNECTING);
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_AUTH);
	r_auth(&m, AUTH_REQ_OK);
	r_param(&m, "client_encoding", "UTF8");
	r_key(&m);
	r_ready(&m, 'I');
	server_sends(&m);
	assert_int_equal(c->state, CONN_READY);
	types_of(p = F.client.out, fake_take(&F.client, &p), t, sizeof(t));
	assert_string_equal(t, "RSKZ");
	fake_take(&F.server, &p); /* the startup packet */
	return c;
}

/* ---- the table -------------------------------------------------------------------------- */

static void test_transition_table(void **state)
{
	/* The legal transitions, spelled out independently of conn_state.c. */
	static const char *const legal[] = {
		"startup>connecting", "startup>cancel", "startup>closing", "startup>closed",
		"connecting>auth", "connecting>closing", "connecting>closed",
		"startup>client_tls", "client_tls>startup", "connecting>server_tls",
		"server_tls>auth", "server_tls>closing",
	};
	int legal_count = 0;

	for (int from = CONN_STATE_FIRST; from < CONN_STATE_COUNT; from++) {
		for (int to = CONN_STATE_FIRST; to < CONN_STATE_COUNT; to++) {
			bool ok = conn_transition_valid(from, to);

			legal_count += ok;
			/* Nothing leaves CLOSED; CLOSING only closes. */
			if (from == CONN_CLOSED)
				assert_false(ok);
			if (from == CONN_CLOSING)
				assert_int_equal(ok, to == CONN_CLOSED);
			/* Nothing comes back to the negotiation but a finished client TLS
			 * handshake, nor skips the login. */
			if (to == CONN_NEGOTIATE)
				assert_int_equal(ok, from == CONN_CLIENT_TLS);
			if (to == CONN_READY)
				assert_true(!ok || from == CONN_AUTH || from == CONN_BUSY ||
					    from == CONN_COPY_IN || from == CONN_COPY_OUT ||
					    from == CONN_COPY_BOTH);
			/* Every live state can end. */
			if (from < CONN_CLOSING)
				assert_true(conn_transition_valid(from, CONN_CLOSING) &&
					    conn_transition_valid(from, CONN_CLOSED));
			/* A cancel never becomes a session. */
			if (from == CONN_CANCEL)
				assert_true(!ok || to >= CONN_CLOSING);
		}
	}
	for (size_t i = 0; i < sizeof(legal) / sizeof(legal[0]); i++) {
		char from[32], to[32];
		int f = -1, t = -1;

		assert_int_equal(sscanf(legal[i], "%31[^>]>%31s", from, to), 2);
		for (int s = 0; s < CONN_STATE_COUNT; s++) {
			if (f < 0 && strcmp(conn_state_to_str(s), from) == 0)
				f = s;
			if (t < 0 && strcmp(conn_state_to_str(s), to) == 0)
				t = s;
		}
		assert_true(f >= 0 && t >= 0);
		assert_true(conn_transition_valid(f, t));
	}
	assert_false(conn_transition_valid(CONN_READY, CONN_AUTH));
	assert_false(conn_transition_valid(CONN_NEGOTIATE, CONN_READY));
	assert_false(conn_transition_valid(CONN_CONNECTING, CONN_READY));
	assert_false(conn_transition_valid(CONN_CLIENT_TLS, CONN_CONNECTING)); /* no skipping */
	assert_false(conn_transition_valid(CONN_SERVER_TLS, CONN_READY));
	assert_false(conn_transition_valid(CONN_SERVER_TLS, CONN_CONNECTING));
	assert_false(conn_transition_valid(CONN_FAREWELL, CONN_READY));
	assert_false(conn_transition_valid(CONN_STATE_COUNT, CONN_CLOSED));
	assert_true(legal_count > 40 && legal_count < 90);
	assert_string_equal(conn_state_to_str(CONN_STATE_COUNT), "unknown");
}

/* ---- phases ----------------------------------------------------------------------------- */

static void test_login_phases_and_query(void **state)
{
	struct conn *c = connect_client("alice");
	struct msgs m = {.n = 0};
	const uint8_t *p;
	size_t n;

	assert_int_equal(c->state, CONN_CONNECTING);
	assert_int_equal(F.server.out_len, 0); /* nothing before the connect finished */
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_AUTH);
	n = fake_take(&F.server, &p);
	assert_int_equal(n, F.client.in_len); /* the startup packet, exactly as sent */
	assert_memory_equal(p, F.client.in, n);
	/* SCRAM-like: the server asks, the client answers, the server finishes. */
	put(&m, 'R', "\0\0\0\x0aSCRAM-SHA-256\0", 19);
	server_sends(&m);
	assert_int_equal(c->state, CONN_AUTH_ANSWER);
	m.n = 0;
	put(&m, 'p', "SCRAM-SHA-256\0\0\0\0\0", 18);
	client_sends(&m);
	assert_int_equal(c->state, CONN_AUTH);
	m.n = 0;
	put(&m, 'R', "\0\0\0\x0cv=c2lnbmF0dXJl", 18);
	server_sends(&m);
	assert_int_equal(c->state, CONN_AUTH);
	assert_false(c->session.auth.ok);
	m.n = 0;
	r_auth(&m, AUTH_REQ_OK);
	r_key(&m);
	r_ready(&m, 'I');
	server_sends(&m);
	assert_int_equal(c->state, CONN_READY);
	assert_true(c->session.auth.ok);
	assert_string_equal(c->session.auth.verified_user, "alice");
	assert_int_equal(c->session.auth.method, SESSION_AUTH_SCRAM);
	assert_int_equal(rec.auths, 1);
	fake_take(&F.client, &p);
	fake_take(&F.server, &p);

	m.n = 0;
	m_query(&m, "SELECT 2");
	client_sends(&m);
	assert_int_equal(c->state, CONN_BUSY);
	n = fake_take(&F.server, &p);
	assert_int_equal(n, m.n);
	assert_memory_equal(p, m.b, n);
	m.n = 0;
	r_rowdesc(&m);
	r_datarow(&m, "2");
	r_complete(&m, "SELECT 1");
	r_ready(&m, 'I');
	server_sends(&m);
	assert_int_equal(c->state, CONN_READY);
	n = fake_take(&F.client, &p);
	assert_int_equal(n, m.n);
	assert_memory_equal(p, m.b, n); /* byte-exact */
	assert_string_equal(rec.last_tag, "SELECT 1");
	assert_int_equal(rec.last_rows, 1);
	assert_int_equal(c->session.statements, 1);
}

/* Every byte read and written one at a time, both legs: the same bytes arrive. */
static void test_one_byte_at_a_time(void **state)
{
	struct conn *c;
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	F.client.read_chunk = F.client.write_chunk = 1;
	c = login("alice");
	F.server.read_chunk = F.server.write_chunk = 1;
	m_parse(&q, "", "SELECT $1::int");
	m_bind(&q, "", "");
	m_execute(&q, "");
	m_sync(&q);
	for (size_t i = 0; i < q.n; i++) {
		fake_feed(&F.client, q.b + i, 1);
		conn_client_events(c, EPOLLIN);
	}
	n = fake_take(&F.server, &p);
	assert_int_equal(n, q.n);
	assert_memory_equal(p, q.b, n);
	put(&a, '1', NULL, 0);
	put(&a, '2', NULL, 0);
	r_datarow(&a, "7");
	r_complete(&a, "SELECT 1");
	r_ready(&a, 'I');
	for (size_t i = 0; i < a.n; i++) {
		fake_feed(&F.server, a.b + i, 1);
		conn_server_events(c, EPOLLIN);
		conn_client_events(c, EPOLLOUT);
	}
	n = fake_take(&F.client, &p);
	assert_int_equal(n, a.n);
	assert_memory_equal(p, a.b, n);
	assert_int_equal(c->state, CONN_READY);
}

/* Bytes the transport holds (decrypted TLS records) are read without any socket event. */
static void test_pending_bytes_held_by_the_transport(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0};
	const uint8_t *p;

	F.client.held = true;
	F.client.t.ready = 0; /* no readiness: only pending says there is something */
	F.client.read_chunk = 3;
	m_query(&q, "SELECT 'held'");
	fake_feed(&F.client, q.b, q.n);
	conn_client_events(c, 0);
	assert_int_equal(fake_take(&F.server, &p), q.n);
	assert_memory_equal(p, q.b, q.n);
}

/* ---- timers ----------------------------------------------------------------------------- */

static void test_startup_timeout(void **state)
{
	struct session proto = {0};
	const uint8_t *p;
	size_t n;

	assert_int_equal(session_new_id(&proto), 0);
	assert_int_equal(conn_start(F.w, &F.client.t, &proto), 0);
	tick(59 * NS_PER_S);
	assert_non_null(the_conn());
	tick(2 * NS_PER_S);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08P01");
	assert_null(the_conn()); /* closed, and freed at the tick */
}

/* A stage's login limit (a policy rule's login_timeout) tightens the startup timeout: a
 * client that stops answering the server's authentication request is ended at it. */
static void test_login_limit_from_a_stage(void **state)
{
	struct conn *c = connect_client("slowlogin");
	struct msgs m = {.n = 0};
	const uint8_t *p;
	size_t n;

	assert_int_equal(c->limits.login_ms, 2000);
	conn_server_events(c, EPOLLOUT);
	r_auth(&m, AUTH_REQ_PASSWORD);
	server_sends(&m);
	assert_int_equal(c->state, CONN_AUTH_ANSWER);
	fake_take(&F.client, &p);
	tick(NS_PER_S);
	assert_non_null(the_conn());
	tick(NS_PER_S + NS_PER_S / 2);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08P01");
	assert_null(the_conn());
}

static void test_connect_timeout(void **state)
{
	const uint8_t *p;
	size_t n;

	F.connect_pending = true;
	connect_client("alice");
	conn_server_events(the_conn(), EPOLLOUT);
	assert_int_equal(the_conn()->state, CONN_CONNECTING);
	tick(11 * NS_PER_S);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08006");
	assert_null(the_conn());
	assert_int_equal(rec.ended, 1); /* the stages heard the end */
}

/* A client that starts a message and goes silent is cut off; a whole message is not. */
static void test_message_timeout(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0};
	const uint8_t *p;
	size_t n;

	m_query(&q, "SELECT 'half a message'");
	fake_feed(&F.client, q.b, 7);
	conn_client_events(c, EPOLLIN);
	tick(29 * NS_PER_S);
	assert_int_equal(c->state, CONN_READY);
	tick(2 * NS_PER_S);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08P01");
	assert_null(the_conn());
}

/* A stage's limit arms the idle timer: the session ends with 57P05 after it. */
static void test_idle_limit_from_a_stage(void **state)
{
	struct conn *c = login("idler");
	const uint8_t *p;
	size_t n;

	assert_int_equal(c->limits.idle_ms, 1000);
	tick(NS_PER_S / 2);
	assert_non_null(the_conn());
	rec.error_request = UINT64_MAX;
	tick(NS_PER_S);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "57P05");
	n = fake_take(&F.server, &p);
	assert_int_equal(p[0], 'X'); /* the server got a clean Terminate */
	/* The FATAL came between requests: it answers none. */
	assert_int_equal(rec.errors, 1);
	assert_int_equal(rec.error_request, 0);
}

/* pgwarden's own FATAL while the server still owes an answer (an operator's kill, a
 * session's lifetime) is what the client reads in that answer's place: the stages hear it
 * as the answer to the oldest request owed. */
static void test_relay_fatal_answers_the_request_in_flight(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	m_query(&q, "SELECT 3");
	client_sends(&q);
	r_rowdesc(&a);
	r_complete(&a, "SELECT 0");
	r_ready(&a, 'I');
	server_sends(&a); /* request 1, answered */
	q.n = 0;
	m_query(&q, "SELECT pg_sleep(60)");
	m_query(&q, "SELECT 4");
	client_sends(&q); /* requests 2 and 3, both owed */
	conn_terminate(c, "57P01", "terminating connection due to administrator command",
		       "admin_kill");
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "57P01");
	assert_int_equal(rec.errors, 1);
	assert_int_equal(rec.error_request, 2);
}

/* A stage that closes the session on a client message: the FATAL answers that message, the
 * request its decision names, even behind a request the server still owes. */
static void test_stage_close_answers_the_refused_message(void **state)
{
	struct msgs q = {.n = 0};
	const uint8_t *p;
	size_t n;

	login("alice");
	m_query(&q, "SELECT pg_sleep(60)");
	m_query(&q, "close now");
	client_sends(&q);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "28000");
	assert_int_equal(rec.decisions, 1);
	assert_int_equal(rec.decision_request, 2);
	assert_int_equal(rec.errors, 1);
	assert_int_equal(rec.error_request, 2);
	assert_true(the_conn() == NULL || the_conn()->state >= CONN_CLOSING);
}

/* A client that stops reading while the session closes is not waited for forever. */
static void test_linger_when_the_client_stops_reading(void **state)
{
	struct conn *c = login("alice");

	F.client.write_room = 0;
	conn_terminate(c, "57P01", "terminating connection due to administrator command",
		       "admin_kill");
	assert_int_equal(c->state, CONN_CLOSING);
	tick(6 * NS_PER_S);
	assert_null(the_conn());
}

/* ---- the stage contract at the connection ------------------------------------------------ */

/* Simple protocol: the server gets a poison instead, the client the stage's error and the
 * server's ReadyForQuery; the session goes on. */
static void test_reject_simple_query(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;
	char t[32];

	m_query(&q, "DROP TABLE forbidden");
	client_sends(&q);
	n = fake_take(&F.server, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "DS"); /* Describe of a statement nobody has, then Sync */
	assert_null(memmem(p, n, "forbidden", 9)); /* nothing of it reached the server */
	r_error(&a, "ERROR", "26000", "prepared statement does not exist");
	r_ready(&a, 'I');
	server_sends(&a);
	n = fake_take(&F.client, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "EZ");
	assert_string_equal(first_error_code(p, n), "42501");
	assert_non_null(memmem(p, n, "no-forbidden", 12));
	assert_int_equal(last_ready(p, n), 'I');
	assert_int_equal(c->state, CONN_READY);
	assert_int_equal(c->session.denied, 1);
	assert_int_equal(rec.decisions, 1);
	assert_string_equal(rec.last_decider, "judge");
	assert_string_equal(rec.last_error, "42501");
	/* Still usable. */
	q.n = 0;
	m_query(&q, "SELECT 3");
	client_sends(&q);
	assert_int_equal(fake_take(&F.server, &p), q.n);
}

/* Inside a transaction the refusal leaves it failed, as the server itself reports. */
static void test_reject_in_transaction(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	m_query(&q, "BEGIN");
	client_sends(&q);
	r_complete(&a, "BEGIN");
	r_ready(&a, 'T');
	server_sends(&a);
	fake_take(&F.client, &p);
	fake_take(&F.server, &p);
	q.n = a.n = 0;
	m_query(&q, "DELETE FROM forbidden");
	client_sends(&q);
	r_error(&a, "ERROR", "26000", "prepared statement does not exist");
	r_ready(&a, 'E');
	server_sends(&a);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "42501");
	assert_int_equal(last_ready(p, n), 'E');
	assert_int_equal(c->session.tx_status, 'E');
}

/* Extended protocol: a refused Parse in the middle of a batch; what came before it arrives
 * intact, the rest up to Sync is skipped by the server, and one ReadyForQuery ends it. */
static void test_reject_in_an_extended_pipeline(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;
	char t[32];

	m_parse(&q, "", "INSERT INTO ok VALUES (1)");
	m_bind(&q, "", "");
	m_describe(&q, 'P', "");
	m_execute(&q, "");
	m_parse(&q, "s2", "INSERT INTO forbidden VALUES (2)");
	m_bind(&q, "", "s2");
	m_execute(&q, "");
	m_sync(&q);
	client_sends(&q);
	n = fake_take(&F.server, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "PBDEDBES");
	assert_null(memmem(p, n, "forbidden", 9));
	/* The server runs the first four, fails at the poison, skips to Sync. */
	put(&a, '1', NULL, 0);
	put(&a, '2', NULL, 0);
	put(&a, 'n', NULL, 0);
	r_complete(&a, "INSERT 0 1");
	r_error(&a, "ERROR", "26000", "prepared statement does not exist");
	r_ready(&a, 'I');
	server_sends(&a);
	n = fake_take(&F.client, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "12nCEZ");
	assert_string_equal(first_error_code(p, n), "42501");
	assert_int_equal(c->state, CONN_READY);
	assert_null(stmt_lookup(&c->track.stmts, "s2")); /* never created */
	assert_true(track_idle(&c->track));
	/* The refused Parse was the batch's fifth request: its decision, the error the client
	 * got and its failure say so, so the audit trail joins them. */
	assert_int_equal(rec.decisions, 1);
	assert_int_equal(rec.decision_request, 5);
	assert_int_equal(rec.error_request, 5);
	assert_int_equal(rec.failed_request, 5);
}

/* Replies pgwarden makes land behind the answers still owed for earlier requests. */
static void test_injected_reply_keeps_protocol_order(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;
	char t[32];

	m_query(&q, "SELECT 'one'");
	m_query(&q, "SELECT forbidden");
	m_query(&q, "SELECT 'three'");
	client_sends(&q);
	n = fake_take(&F.client, &p);
	assert_int_equal(n, 0); /* nothing for the client before the server answers */
	r_rowdesc(&a);
	r_datarow(&a, "one");
	r_complete(&a, "SELECT 1");
	r_ready(&a, 'I');
	r_error(&a, "ERROR", "26000", "prepared statement does not exist");
	r_ready(&a, 'I');
	r_rowdesc(&a);
	r_datarow(&a, "three");
	r_complete(&a, "SELECT 1");
	r_ready(&a, 'I');
	server_sends(&a);
	n = fake_take(&F.client, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "TDCZEZTDCZ");
	assert_non_null(memmem(p, n, "one", 3));
	assert_true((const uint8_t *)memmem(p, n, "no-forbidden", 12) <
		    (const uint8_t *)memmem(p, n, "three", 5));
	assert_int_equal(c->state, CONN_READY);
}

/* A rewrite goes out with its own length, and is what the tracker follows. */
static void test_rewrite_with_a_changed_length(void **state)
{
	login("alice");
	struct msgs q = {.n = 0};
	const uint8_t *p;
	size_t n;
	struct proto_msg m;
	const char *sql;

	m_query(&q, "SELECT 1");
	client_sends(&q);
	n = fake_take(&F.server, &p);
	assert_int_equal(proto_frame(p, n, PROTO_FRONTEND, 1 << 20, &m), PROTO_OK);
	assert_int_equal(n, 5 + m.body_len);
	m.body = p + 5;
	assert_int_equal(proto_read_query(&m, &sql), PROTO_OK);
	assert_string_equal(sql, "SELECT 1 + 100000 AS rewritten");
}

/* A paused message waits for its stage's wake; what follows waits behind it. */
static void test_pause_and_wake(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0};
	const uint8_t *p;

	m_query(&q, "wait");
	m_query(&q, "SELECT 'after'");
	client_sends(&q);
	assert_int_equal(fake_take(&F.server, &p), 0);
	assert_int_equal(c->dir[CONN_C2S].hold, CONN_HOLD_STAGE);
	tick(3600 * NS_PER_S); /* no deadline: a pause without one waits, and is no timeout */
	assert_non_null(the_conn());
	assert_int_equal(stage_wake(&c->waker), 0);
	assert_int_equal(stage_wake(&c->waker), 0); /* a second wake before the first ran */
	worker_run_wakes(F.w);
	assert_int_equal(fake_take(&F.server, &p), q.n);
}

static void test_pause_until_a_deadline(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0};
	const uint8_t *p;

	judge_resume_at = F.now + NS_PER_S;
	m_query(&q, "wait");
	client_sends(&q);
	assert_int_equal(fake_take(&F.server, &p), 0);
	tick(NS_PER_S / 2);
	assert_int_equal(fake_take(&F.server, &p), 0);
	tick(NS_PER_S);
	assert_int_equal(fake_take(&F.server, &p), q.n);
	assert_int_equal(c->dir[CONN_C2S].hold, CONN_HOLD_NONE);
}

/* A wake for a session that has ended finds nobody, even when its slot is taken again. */
static void test_wake_after_the_end(void **state)
{
	struct conn *c = login("alice");
	struct stage_waker old = c->waker;

	conn_terminate(c, "57P01", "bye", "test");
	tick(0);
	assert_null(the_conn());
	fake_init(&F.client);
	c = login("bob");
	assert_int_equal(c->waker.slot, old.slot);
	assert_int_not_equal(c->waker.gen, old.gen);
	assert_int_equal(stage_wake(&old), -ENOENT);
}

/* A pipeline whose stages never wake gives its sessions no waker, and so no slot in the
 * worker's wake table. */
static void test_no_waker_without_a_waking_stage(void **state)
{
	struct conn *c;

	F.relay.pipeline.wakes = false; /* as if judge did not wake */
	c = login("alice");
	assert_null(c->waker.worker);
	assert_null(c->chain.waker);
	assert_int_equal(F.w->nslots - F.w->nfree, 0);
}

/* Interest is per session: only the session whose stage asked sees its DataRows. */
static void test_interest_per_session(void **state)
{
	struct conn *c = login("watched");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	struct judge_state *js;
	size_t n;

	m_query(&q, "SELECT 'x'");
	client_sends(&q);
	r_rowdesc(&a);
	r_datarow(&a, "x");
	r_datarow(&a, "y");
	r_complete(&a, "SELECT 2");
	r_ready(&a, 'I');
	server_sends(&a);
	js = stage_chain_state(&c->chain, 0);
	assert_int_equal(js->datarows_seen, 2);
	assert_int_equal(js->datarow_request, 1); /* the rows answer the session's first request */
	assert_int_equal(fake_take(&F.client, &p), a.n);
	assert_false(stage_chain_wants(&c->chain, PROTO_BACKEND, 'T'));
	/* A server message a stage refuses ends the session; its decision names the request
	 * the message answered. */
	q.n = a.n = 0;
	m_query(&q, "SELECT 'z'");
	client_sends(&q);
	r_rowdesc(&a);
	r_datarow(&a, "forbidden");
	server_sends(&a);
	assert_int_equal(rec.decisions, 1);
	assert_string_equal(rec.last_decider, "judge");
	assert_int_equal(rec.decision_request, 2);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "42501");
	assert_true(the_conn() == NULL || the_conn()->state >= CONN_CLOSING);
	/* The FATAL the client got answers the same request. */
	assert_string_equal(rec.last_error, "42501");
	assert_int_equal(rec.error_request, 2);
}

/* A stage streams DataRow: every value is rewritten with new lengths; the messages around
 * keep their order and bytes. */
static void test_streaming_rewrite(void **state)
{
	struct conn *c;
	struct msgs q = {.n = 0}, a = {.n = 0}, want = {.n = 0};
	const uint8_t *p;
	size_t n;

	c = login("masked");
	F.server.read_chunk = 3; /* the rows arrive in pieces */
	m_query(&q, "SELECT ssn FROM people");
	client_sends(&q);
	r_rowdesc(&a);
	r_datarow(&a, "123-45-6789");
	r_datarow(&a, "987-65-4321 and a much longer value than the mask");
	r_complete(&a, "SELECT 2");
	r_ready(&a, 'I');
	server_sends(&a);
	while (F.server.in_pos < F.server.in_len)
		conn_server_events(c, EPOLLIN);
	r_rowdesc(&want);
	r_datarow(&want, "masked");
	r_datarow(&want, "masked");
	r_complete(&want, "SELECT 2");
	r_ready(&want, 'I');
	n = fake_take(&F.client, &p);
	assert_int_equal(n, want.n);
	assert_memory_equal(p, want.b, n);
	assert_int_equal(c->state, CONN_READY);
}

/* A streaming stage ends the session on a row before writing any of its replacement: the
 * client gets what came before, whole, then the FATAL with the stage's SQLSTATE, and nothing
 * of the row. */
static void test_streaming_close_tells_the_client(void **state)
{
	struct conn *c;
	struct msgs q = {.n = 0}, a = {.n = 0}, want = {.n = 0};
	const uint8_t *p;
	size_t n;

	c = login("masked");
	F.server.read_chunk = 3;
	m_query(&q, "SELECT ssn FROM people");
	client_sends(&q);
	r_rowdesc(&a);
	r_datarow(&a, "fine");
	r_datarow(&a, "refuse this one");
	r_complete(&a, "SELECT 2");
	r_ready(&a, 'I');
	server_sends(&a);
	while (F.server.in_pos < F.server.in_len && c->state < CONN_CLOSING)
		conn_server_events(c, EPOLLIN);
	r_rowdesc(&want);
	r_datarow(&want, "masked");
	r_error(&want, "FATAL", "54000", "row refused");
	n = fake_take(&F.client, &p);
	assert_int_equal(n, want.n);
	assert_memory_equal(p, want.b, n);
	assert_true(c->state >= CONN_CLOSING);
	/* The close is a decision, told with the request the row answered, as is the FATAL. */
	assert_int_equal(rec.decisions, 1);
	assert_string_equal(rec.last_decider, "judge");
	assert_int_equal(rec.decision_request, 1);
	assert_int_equal(rec.errors, 1);
	assert_int_equal(rec.error_request, 1);
}

/* A DataRow of one value of n bytes of c (beyond r_datarow's 1 KiB). */
static void r_datarow_of(struct msgs *m, char c, size_t n)
{
	static uint8_t b[16384];

	assert_true(6 + n <= sizeof(b));
	b[0] = 0;
	b[1] = 1;
	proto_write_u32(b + 2, (uint32_t)n);
	memset(b + 6, c, n);
	put(m, 'D', b, 6 + n);
}

/* Rows that lie whole in the read buffer go to a stage that takes runs several at a time:
 * a run stopped inside a row (half its body taken) and a row over the run limit among small
 * ones (streamed header then pieces) leave the client the same bytes as row by row; so do
 * rows cut by reads (runs end before the cut row, which streams in pieces). */
static void test_streaming_runs(void **state)
{
	static const size_t chunks[] = {0, 23, 97};

	for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
		struct conn *c;
		struct msgs q = {.n = 0}, a = {.n = 0}, want = {.n = 0};
		struct judge_state *js;
		const uint8_t *p;
		size_t n;

		c = login("masked");
		F.server.read_chunk = chunks[k];
		m_query(&q, "SELECT ssn FROM people");
		client_sends(&q);
		r_rowdesc(&a);
		r_datarow(&a, "123-45-6789");
		r_datarow(&a, "987-65-4321");
		r_datarow(&a, "stops halfway through this one");
		r_datarow(&a, "after the stop");
		r_datarow_of(&a, 'h', STAGE_RUN_MESSAGE_MAX); /* one over the limit, header included */
		r_datarow(&a, "after the big one");
		r_datarow(&a, "and the last");
		r_complete(&a, "SELECT 7");
		r_ready(&a, 'I');
		server_sends(&a);
		while (F.server.in_pos < F.server.in_len)
			conn_server_events(c, EPOLLIN);
		r_rowdesc(&want);
		for (int i = 0; i < 7; i++)
			r_datarow(&want, "masked");
		r_complete(&want, "SELECT 7");
		r_ready(&want, 'I');
		n = fake_take(&F.client, &p);
		assert_int_equal(n, want.n);
		assert_memory_equal(p, want.b, n);
		assert_int_equal(c->state, CONN_READY);
		js = stage_chain_state(&c->chain, 0);
		if (!chunks[k]) {
			/* two rows, the stop; the row after it; the two after the big one */
			assert_int_equal(js->runs, 3);
			assert_int_equal(js->run_rows, 5);
			assert_int_equal(js->partial_runs, 1);
		}
		conn_terminate(c, "57P01", "test over", "test");
		tick(6 * NS_PER_S);
		F.server.in_len = F.server.in_pos = 0;
		F.client.out_len = F.client.out_seen = 0;
		F.server.out_len = F.server.out_seen = 0;
	}
}

/* The masked session's query, answered by a RowDescription that reaches the client, then
 * blocks of rows of value (each fills most of a struct msgs) waiting at the fake server
 * with the query's end behind them (in *tail). How many rows; *head_len: the
 * RowDescription's length. */
static size_t stream_row_blocks(int blocks, const char *value, struct msgs *tail,
				size_t *head_len)
{
	struct msgs q = {.n = 0}, a = {.n = 0};
	size_t rows = 0;

	m_query(&q, "SELECT ssn FROM people");
	client_sends(&q);
	r_rowdesc(&a);
	server_sends(&a);
	*head_len = a.n;
	for (int block = 0; block < blocks; block++) {
		a.n = 0;
		while (a.n + 64 < sizeof(a.b)) {
			r_datarow(&a, value);
			rows++;
		}
		fake_feed(&F.server, a.b, a.n);
	}
	tail->n = 0;
	r_complete(tail, "SELECT n");
	r_ready(tail, 'I');
	fake_feed(&F.server, tail->b, tail->n);
	return rows;
}

/* The client took the RowDescription, rows masked rows, whole and in order, then tail. */
static void assert_client_took_masked_rows(size_t head_len, size_t rows,
					   const struct msgs *tail)
{
	struct msgs one = {.n = 0};
	const uint8_t *p;
	size_t n;

	r_datarow(&one, "masked");
	n = fake_take(&F.client, &p);
	assert_int_equal(n, head_len + rows * one.n + tail->n);
	assert_int_equal(p[0], 'T');
	p += head_len;
	for (size_t i = 0; i < rows; i++, p += one.n)
		assert_memory_equal(p, one.b, one.n);
	assert_memory_equal(p, tail->b, tail->n);
}

/* A client that does not read: the stream buffer fills in the middle of runs (a row's
 * replacement cut where the room ends, finished by stream() once the client takes some);
 * every row still arrives whole and in order, and the relay stops reading meanwhile. */
static void test_streaming_runs_fill_the_buffer(void **state)
{
	struct conn *c = login("masked");
	struct judge_state *js;
	struct msgs tail;
	size_t rows, head_len;

	F.client.write_room = 0;
	/* 4 x ~1300 rows of 12 bytes, each 17 bytes when rewritten: far over the buffers */
	rows = stream_row_blocks(4, "x", &tail, &head_len);
	conn_server_events(c, EPOLLIN);
	assert_true(F.server.in_pos < F.server.in_len); /* it stopped reading */
	for (int i = 0; i < 10000 && c->state != CONN_READY; i++) {
		F.client.write_room += 1000;
		conn_client_events(c, EPOLLOUT);
		conn_server_events(c, EPOLLIN);
	}
	F.client.write_room = FAKE_CAP;
	conn_client_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_READY);
	assert_client_took_masked_rows(head_len, rows, &tail);
	js = stage_chain_state(&c->chain, 0);
	assert_true(js->runs > 1);
	assert_true(js->partial_runs > 0); /* the room ended inside a replacement */
}

/* A client that takes everything, rows whose replacements are as long as they are: the
 * stream buffer is sent before a row it has no room for, so no row is cut where the buffer
 * ends (no run stops inside one) and the buffer never grows past its size (no write hands
 * the client more); every row arrives whole and in order. */
static void test_streaming_runs_send_a_full_buffer_first(void **state)
{
	struct conn *c = login("masked");
	struct judge_state *js;
	struct msgs tail;
	size_t rows, head_len;

	F.client.max_write = 0;
	rows = stream_row_blocks(8, "sixsix", &tail, &head_len); /* 17 bytes, as its replacement */
	for (int i = 0; i < 1000 && c->state != CONN_READY; i++)
		conn_server_events(c, EPOLLIN);
	assert_int_equal(c->state, CONN_READY);
	assert_client_took_masked_rows(head_len, rows, &tail);
	js = stage_chain_state(&c->chain, 0);
	assert_true(js->runs > 1);
	assert_int_equal(js->partial_runs, 0);
	assert_true(F.client.max_write <= c->worker->pool.size);
}

/* A run that reaches a row the stage refuses: the rows before it arrive rewritten and whole,
 * then the FATAL; nothing of the refused row; the decision and the error name its request. */
static void streaming_run_close(const char *refused)
{
	struct conn *c;
	struct msgs q = {.n = 0}, a = {.n = 0}, want = {.n = 0};
	const uint8_t *p;
	size_t n;

	c = login("masked");
	m_query(&q, "SELECT ssn FROM people");
	client_sends(&q);
	r_rowdesc(&a);
	r_datarow(&a, "fine");
	r_datarow(&a, "fine too");
	r_datarow(&a, refused);
	r_datarow(&a, "never seen");
	r_complete(&a, "SELECT 4");
	r_ready(&a, 'I');
	server_sends(&a);
	r_rowdesc(&want);
	r_datarow(&want, "masked");
	r_datarow(&want, "masked");
	r_error(&want, "FATAL", "54000", "row refused");
	n = fake_take(&F.client, &p);
	assert_int_equal(n, want.n);
	assert_memory_equal(p, want.b, n);
	assert_true(c->state >= CONN_CLOSING);
	assert_int_equal(judge_runs, 1);
	assert_int_equal(rec.decisions, 1);
	assert_string_equal(rec.last_decider, "judge");
	assert_int_equal(rec.decision_request, 1);
	assert_int_equal(rec.errors, 1);
	assert_int_equal(rec.error_request, 1);
}

static void test_streaming_run_close_tells_the_client(void **state)
{
	streaming_run_close("refuse this one");
}

/* The run stopped inside the row, and stream() refuses it: nothing of its replacement was
 * written (whatever the run wrote before it), so the client is still told why. */
static void test_streaming_run_stopped_in_a_refused_row(void **state)
{
	streaming_run_close("refuse it halfway");
}

/* ---- the statement table ------------------------------------------------------------------ */

static void test_statement_table_follows_the_server(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	m_parse(&q, "s1", "SELECT 10");
	m_parse(&q, "bad", "SELEKT");
	m_sync(&q);
	client_sends(&q);
	assert_null(stmt_lookup(&c->track.stmts, "s1")); /* not before the server says so */
	put(&a, '1', NULL, 0);
	r_error(&a, "ERROR", "42601", "syntax error");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_non_null(stmt_lookup(&c->track.stmts, "s1"));
	assert_null(stmt_lookup(&c->track.stmts, "bad"));
	q.n = a.n = 0;
	m_close(&q, 'S', "s1");
	m_sync(&q);
	client_sends(&q);
	put(&a, '3', NULL, 0);
	r_ready(&a, 'I');
	server_sends(&a);
	assert_null(stmt_lookup(&c->track.stmts, "s1"));
	/* The limit (3 in this fixture): the fourth is refused in place, 53400. */
	q.n = a.n = 0;
	m_parse(&q, "a", "SELECT 10");
	m_parse(&q, "b", "SELECT 10");
	m_parse(&q, "c", "SELECT 10");
	m_sync(&q);
	client_sends(&q);
	put(&a, '1', NULL, 0);
	put(&a, '1', NULL, 0);
	put(&a, '1', NULL, 0);
	r_ready(&a, 'I');
	server_sends(&a);
	fake_take(&F.client, &p);
	fake_take(&F.server, &p);
	q.n = a.n = 0;
	m_parse(&q, "d", "SELECT 10");
	m_sync(&q);
	client_sends(&q);
	r_error(&a, "ERROR", "26000", "prepared statement does not exist");
	r_ready(&a, 'I');
	server_sends(&a);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "53400");
	assert_int_equal(stmt_count(&c->track.stmts), 3);
	assert_int_equal(c->state, CONN_READY);
}

/* The request queue: one transaction's batch takes a spare ring of the worker's (no
 * allocation per transaction) and gives it back when answered; more pipelined behind them
 * move to a heap ring, freed as soon as they are all answered, so an idle session holds no
 * ring at all. */
static void test_request_queue_storage(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	struct track_entry *small;

	assert_null(c->track.ring);
	for (int i = 0; i < TRACK_RING_MIN; i++)
		m_query(&q, "SELECT 2");
	client_sends(&q);
	assert_int_equal(c->track.count, TRACK_RING_MIN);
	assert_int_equal(c->track.cap, TRACK_RING_MIN);
	small = c->track.ring;
	for (int i = 0; i < TRACK_RING_MIN; i++) {
		r_complete(&a, "SELECT 1");
		r_ready(&a, 'I');
	}
	server_sends(&a);
	assert_int_equal(c->track.count, 0);
	assert_null(c->track.ring);
	assert_ptr_equal(c->worker->track_rings.spare, small);

	q.n = a.n = 0;
	m_query(&q, "SELECT 3");
	client_sends(&q);
	assert_ptr_equal(c->track.ring, small); /* the spare, not a new one */
	assert_null(c->worker->track_rings.spare);
	q.n = 0;
	for (int i = 0; i < TRACK_RING_MIN; i++)
		m_query(&q, "SELECT 3");
	client_sends(&q);
	assert_int_equal(c->track.count, TRACK_RING_MIN + 1);
	assert_int_equal(c->track.cap, 2 * TRACK_RING_MIN);
	assert_ptr_equal(c->worker->track_rings.spare, small);
	for (int i = 0; i <= TRACK_RING_MIN; i++) {
		r_complete(&a, "SELECT 1");
		r_ready(&a, 'I');
	}
	server_sends(&a);
	assert_int_equal(c->track.count, 0);
	assert_null(c->track.ring);
	assert_int_equal(c->state, CONN_READY);
}

/* A worker keeps at most TRACK_RINGS_SPARE_MAX spare rings: a burst of sessions that each
 * had a batch in flight at once does not leave a ring per session held by the worker once
 * they all sit idle. */
static void test_request_queue_spares_bounded(void **state)
{
	enum { N = TRACK_RINGS_SPARE_MAX + 3 };
	static const uint8_t query[] = "Q\0\0\0\x0dSELECT 1";
	static struct track t[N];
	struct track_rings rings = {0};

	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < N; i++) {
			/* The second round's first TRACK_RINGS_SPARE_MAX batches find a spare. */
			if (round)
				assert_true((rings.spare != NULL) == (i < TRACK_RINGS_SPARE_MAX));
			track_init(&t[i], &rings, 16, 0, 0, false, "00ff", NULL, NULL);
			assert_int_equal(track_frontend(&t[i], query, sizeof(query),
							SQL_CLASS_UNKNOWN, NULL, 1),
					 0);
			assert_int_equal(t[i].cap, TRACK_RING_MIN);
		}
		for (int i = 0; i < N; i++)
			track_release(&t[i]);
		assert_int_equal(rings.count, TRACK_RINGS_SPARE_MAX);
	}
	track_rings_destroy(&rings);
	assert_null(rings.spare);
	assert_int_equal(rings.count, 0);
}

/* The tracker finds PREPARE, DEALLOC(ATE) and DISCARD in any case wherever they lie in a
 * text, its first bytes, its last, or across the eight-byte blocks it reads at once; and
 * nothing in a text full of their first letters, or with a word cut short by the end. */
static void test_statement_words_anywhere(void **state)
{
	static const char *const words[] = {"prepare", "DEALLOC", "Discard"};
	static const char filler[] = "pdPD xpr_dEq.Di";
	char text[64];

	for (size_t w = 0; w < 3; w++) {
		for (size_t at = 0; at < 24; at++) {
			for (size_t tail = 0; tail < 10; tail++) {
				size_t n = at + 7 + tail;

				for (size_t i = 0; i < n; i++)
					text[i] = filler[i % (sizeof(filler) - 1)];
				memcpy(text + at, words[w], 7);
				assert_true(track_sql_mentions_statement_words(text, n));
				assert_false(track_sql_mentions_statement_words(text, at + 6));
			}
		}
	}
	for (size_t n = 0; n < sizeof(text); n++) {
		for (size_t i = 0; i < n; i++)
			text[i] = filler[i % (sizeof(filler) - 1)];
		assert_false(track_sql_mentions_statement_words(text, n));
	}
	assert_false(track_sql_mentions_statement_words("PREPAR DEALLO DISCAR prepar", 27));
}

/* One extended-protocol statement with the unnamed statement: Parse, Bind, Execute, Sync,
 * answered with the command tag given. */
static void unnamed_round(const char *sql, const char *tag)
{
	struct msgs q = {.n = 0}, a = {.n = 0};

	m_parse(&q, "", sql);
	m_bind(&q, "", "");
	m_execute(&q, "");
	m_sync(&q);
	client_sends(&q);
	put(&a, '1', NULL, 0);
	put(&a, '2', NULL, 0);
	r_complete(&a, tag);
	r_ready(&a, 'I');
	server_sends(&a);
}

/* A Parse that repeats the unnamed statement's text is that statement again: its entry is
 * shared, its class read once; another text, or the same one under another name, is read
 * on its own. */
static void test_repeated_parse_shares_its_statement(void **state)
{
	struct conn *c;
	struct msgs q = {.n = 0}, a = {.n = 0};
	const struct stmt_entry *first, *e;

	judge_stage.keep_statement_text = true;
	c = login("alice");
	unnamed_round("SELECT 10", "SELECT 1");
	first = stmt_lookup(&c->track.stmts, "");
	assert_non_null(first);
	assert_int_equal(first->cls, SQL_CLASS_READ);
	assert_true(first->cls_read);
	unnamed_round("SELECT 10", "SELECT 1");
	assert_ptr_equal(stmt_lookup(&c->track.stmts, ""), first);
	assert_int_equal(first->refs, 1); /* the table's: the Parse's and the portal's are gone */
	assert_int_equal(stmt_count(&c->track.stmts), 1);
	assert_int_equal(stmt_bytes(&c->track.stmts), 9);
	unnamed_round("DELETE FROM t", "DELETE 0");
	e = stmt_lookup(&c->track.stmts, "");
	assert_non_null(e);
	assert_int_equal(e->cls, SQL_CLASS_WRITE);
	assert_memory_equal(e->sql, "DELETE FROM t", e->sql_len);

	/* Pipelined twice before any answer, and the second fails: the unnamed one is gone. */
	m_parse(&q, "", "PREPARE x AS SELECT 1");
	m_sync(&q);
	m_parse(&q, "", "PREPARE x AS SELECT 1");
	m_sync(&q);
	client_sends(&q);
	e = stmt_lookup(&c->track.stmts, "");
	assert_memory_equal(e->sql, "DELETE FROM t", e->sql_len);
	put(&a, '1', NULL, 0);
	r_ready(&a, 'I');
	server_sends(&a);
	e = stmt_lookup(&c->track.stmts, "");
	assert_int_equal(e->cls, SQL_CLASS_PREPARE);
	assert_true(e->may_name_statements);
	assert_int_equal(e->refs, 2); /* the table's and the second Parse's */
	a.n = 0;
	r_error(&a, "ERROR", "42601", "syntax error");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_null(stmt_lookup(&c->track.stmts, ""));

	/* The same text under a name of its own is a statement of its own. */
	unnamed_round("SELECT 10", "SELECT 1");
	q.n = a.n = 0;
	m_parse(&q, "s", "SELECT 10");
	m_sync(&q);
	client_sends(&q);
	put(&a, '1', NULL, 0);
	r_ready(&a, 'I');
	server_sends(&a);
	assert_ptr_not_equal(stmt_lookup(&c->track.stmts, "s"), stmt_lookup(&c->track.stmts, ""));
	assert_int_equal(stmt_lookup(&c->track.stmts, "s")->cls, SQL_CLASS_READ);
	assert_int_equal(stmt_count(&c->track.stmts), 2);
	judge_stage.keep_statement_text = false;
}

/* SQL PREPARE, DEALLOCATE and DISCARD ALL change the statement table at the server's
 * CommandComplete, and only then: a PREPARE the server never ran (an error before it in the
 * same Query) makes nothing; a confirmed one outlives a ROLLBACK, as in PostgreSQL. */
static void test_sql_level_prepared_statements(void **state)
{
	struct conn *c;
	struct msgs q = {.n = 0}, a = {.n = 0};
	const struct stmt_entry *e;

	judge_stage.keep_statement_text = true;
	c = login("alice");
	m_query(&q, "SELECT 1; PREPARE p AS SELECT 42; PREPARE \"Q\" (int) AS "
		    "DELETE FROM t WHERE id = $1");
	client_sends(&q);
	assert_null(stmt_lookup(&c->track.stmts, "p")); /* not before the server says so */
	r_complete(&a, "SELECT 1");
	r_complete(&a, "PREPARE");
	server_sends(&a);
	e = stmt_lookup(&c->track.stmts, "p");
	assert_non_null(e);
	assert_true(e->sql_level);
	assert_non_null(e->sql);
	assert_memory_equal(e->sql, "SELECT 42", e->sql_len);
	assert_int_equal(e->sql_len, 9);
	assert_null(stmt_lookup(&c->track.stmts, "Q"));
	q.n = a.n = 0;
	r_complete(&a, "PREPARE");
	r_ready(&a, 'I');
	server_sends(&a);
	e = stmt_lookup(&c->track.stmts, "Q");
	assert_non_null(e);
	assert_memory_equal(e->sql, "DELETE FROM t WHERE id = $1", e->sql_len);
	assert_null(stmt_lookup(&c->track.stmts, "q")); /* the quoted name kept its case */

	/* An error before a PREPARE in the same Query: the server never ran it. */
	q.n = a.n = 0;
	m_query(&q, "SELECT 1/0; PREPARE never AS SELECT 1");
	client_sends(&q);
	r_error(&a, "ERROR", "22012", "division by zero");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_null(stmt_lookup(&c->track.stmts, "never"));

	/* A PREPARE the server refused (the name is taken) changes nothing. */
	q.n = a.n = 0;
	m_query(&q, "PREPARE p AS SELECT 'other'");
	client_sends(&q);
	r_error(&a, "ERROR", "42P05", "prepared statement \"p\" already exists");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_memory_equal(stmt_lookup(&c->track.stmts, "p")->sql, "SELECT 42", 9);

	/* Confirmed inside a transaction that rolls back: it stays (PostgreSQL's prepared
	 * statements are not transactional). */
	q.n = a.n = 0;
	m_query(&q, "BEGIN; PREPARE r AS SELECT 7; ROLLBACK");
	client_sends(&q);
	r_complete(&a, "BEGIN");
	r_complete(&a, "PREPARE");
	r_complete(&a, "ROLLBACK");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_non_null(stmt_lookup(&c->track.stmts, "r"));

	/* DEALLOCATE name, then a new body under the same name. */
	q.n = a.n = 0;
	m_query(&q, "DEALLOCATE p; PREPARE p AS SELECT 'second'");
	client_sends(&q);
	r_complete(&a, "DEALLOCATE");
	server_sends(&a);
	assert_null(stmt_lookup(&c->track.stmts, "p"));
	q.n = a.n = 0;
	r_complete(&a, "PREPARE");
	r_ready(&a, 'I');
	server_sends(&a);
	e = stmt_lookup(&c->track.stmts, "p");
	assert_non_null(e);
	assert_memory_equal(e->sql, "SELECT 'second'", e->sql_len);

	/* A quoted name is deallocated by its quoted spelling. */
	q.n = a.n = 0;
	m_query(&q, "DEALLOCATE \"Q\"");
	client_sends(&q);
	r_complete(&a, "DEALLOCATE");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_null(stmt_lookup(&c->track.stmts, "Q"));
	assert_int_equal(stmt_count(&c->track.stmts), 2);

	/* Any case, and the keyword as the text's last bytes: still followed. */
	q.n = a.n = 0;
	m_query(&q, "prepare tail as select 1; dEaLlOcAtE tail");
	client_sends(&q);
	r_complete(&a, "PREPARE");
	server_sends(&a);
	assert_non_null(stmt_lookup(&c->track.stmts, "tail"));
	q.n = a.n = 0;
	r_complete(&a, "DEALLOCATE");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_null(stmt_lookup(&c->track.stmts, "tail"));
	assert_int_equal(stmt_count(&c->track.stmts), 2);

	/* A protocol-level statement shares the namespace; DEALLOCATE ALL drops all. */
	q.n = a.n = 0;
	m_parse(&q, "proto", "SELECT 10");
	m_sync(&q);
	client_sends(&q);
	put(&a, '1', NULL, 0);
	r_ready(&a, 'I');
	server_sends(&a);
	assert_int_equal(stmt_count(&c->track.stmts), 3);
	q.n = a.n = 0;
	m_query(&q, "DEALLOCATE PREPARE ALL");
	client_sends(&q);
	r_complete(&a, "DEALLOCATE ALL");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_int_equal(stmt_count(&c->track.stmts), 0);

	/* Empty statements answer nothing, in the server and in the count of parts. */
	q.n = a.n = 0;
	m_query(&q, "PREPARE e1 AS SELECT 3;; ;PREPARE e2 AS SELECT 4");
	client_sends(&q);
	r_complete(&a, "PREPARE");
	r_complete(&a, "PREPARE");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_memory_equal(stmt_lookup(&c->track.stmts, "e2")->sql, "SELECT 4", 8);
	q.n = a.n = 0;
	m_query(&q, "DEALLOCATE e1; DEALLOCATE e2");
	client_sends(&q);
	r_complete(&a, "DEALLOCATE");
	r_complete(&a, "DEALLOCATE");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_null(stmt_lookup(&c->track.stmts, "e1"));
	assert_null(stmt_lookup(&c->track.stmts, "e2"));

	/* PREPARE through the extended protocol (Parse of PREPARE text, then Execute), and
	 * DISCARD ALL through a Query. */
	unnamed_round("PREPARE x AS SELECT 5", "PREPARE");
	e = stmt_lookup(&c->track.stmts, "x");
	assert_non_null(e);
	assert_true(e->sql_level);
	assert_memory_equal(e->sql, "SELECT 5", e->sql_len);
	q.n = a.n = 0;
	m_query(&q, "DISCARD ALL");
	client_sends(&q);
	r_complete(&a, "DISCARD ALL");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_int_equal(stmt_count(&c->track.stmts), 0);
	assert_int_equal(c->state, CONN_READY);
	judge_stage.keep_statement_text = false;
}

/* With standard_conforming_strings off, a backslash escapes a quote: the PREPARE's body
 * is read as the server reads it, not cut at a ';' inside a string. */
static void test_sql_prepare_read_as_the_server_reads_it(void **state)
{
	struct conn *c;
	struct msgs q = {.n = 0}, a = {.n = 0};
	const struct stmt_entry *e;
	static const char body[] = "SELECT 'a\\'; PREPARE q AS SELECT 1; '";

	judge_stage.keep_statement_text = true;
	c = login("alice");
	r_param(&a, "standard_conforming_strings", "off");
	server_sends(&a);
	a.n = 0;
	m_query(&q, "PREPARE p AS SELECT 'a\\'; PREPARE q AS SELECT 1; '");
	client_sends(&q);
	r_complete(&a, "PREPARE");
	r_ready(&a, 'I');
	server_sends(&a);
	e = stmt_lookup(&c->track.stmts, "p");
	assert_non_null(e);
	assert_int_equal(e->sql_len, sizeof(body) - 1);
	assert_memory_equal(e->sql, body, e->sql_len);
	assert_null(stmt_lookup(&c->track.stmts, "q"));
	judge_stage.keep_statement_text = false;
}

/* SQL PREPAREs count against the statement limits (3 here): a Query whose PREPAREs would
 * exceed them is refused whole, in place, with 53400. */
static void test_sql_prepare_limit(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	m_query(&q, "PREPARE a AS SELECT 1; PREPARE b AS SELECT 1; PREPARE c AS SELECT 1; "
		    "PREPARE d AS SELECT 1");
	client_sends(&q);
	r_error(&a, "ERROR", "26000", "prepared statement does not exist");
	r_ready(&a, 'I');
	server_sends(&a);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "53400");
	assert_int_equal(stmt_count(&c->track.stmts), 0);
	assert_int_equal(c->state, CONN_READY);
}

/* An Execute of an unnamed statement whose text is an SQL PREPARE creates a statement too:
 * over the limit (3 here, with the unnamed one counted) it is refused in place, 53400. */
static void test_sql_prepare_by_execute_limit(void **state)
{
	struct conn *c;
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	judge_stage.keep_statement_text = true;
	c = login("alice");
	m_parse(&q, "a", "SELECT 10");
	m_parse(&q, "b", "SELECT 10");
	m_sync(&q);
	client_sends(&q);
	put(&a, '1', NULL, 0);
	put(&a, '1', NULL, 0);
	r_ready(&a, 'I');
	server_sends(&a);
	fake_take(&F.client, &p);
	q.n = a.n = 0;
	m_parse(&q, "", "PREPARE x AS SELECT 5");
	m_bind(&q, "", "");
	m_execute(&q, "");
	m_sync(&q);
	client_sends(&q);
	put(&a, '1', NULL, 0);
	put(&a, '2', NULL, 0);
	r_error(&a, "ERROR", "26000", "prepared statement does not exist"); /* the poison's */
	r_ready(&a, 'I');
	server_sends(&a);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "53400");
	assert_null(stmt_lookup(&c->track.stmts, "x"));
	assert_int_equal(stmt_count(&c->track.stmts), 3);
	assert_int_equal(c->state, CONN_READY);
	judge_stage.keep_statement_text = false;
}

/* A Bind and an Execute pipelined behind their Parse run the statement that Parse makes,
 * not the one the server had before; an error skips the rest of the batch, and what the
 * client sends before its Sync is skipped too. */
static void test_pipelined_statements_and_skips(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};

	m_parse(&q, "old", "SELECT 10");
	m_sync(&q);
	client_sends(&q);
	put(&a, '1', NULL, 0);
	r_ready(&a, 'I');
	server_sends(&a);
	q.n = a.n = 0;
	m_parse(&q, "new", "SELECT 20");
	m_bind(&q, "p", "new");
	m_execute(&q, "p");
	client_sends(&q);
	put(&a, '1', NULL, 0);
	put(&a, '2', NULL, 0);
	r_datarow(&a, "20");
	r_complete(&a, "SELECT 1");
	server_sends(&a);
	assert_string_equal(rec.last_stmt, "new");
	assert_int_equal(rec.last_rows, 1);
	/* An error with no Sync sent yet: the server skips what comes until the Sync. */
	q.n = a.n = 0;
	m_execute(&q, "nope");
	client_sends(&q);
	r_error(&a, "ERROR", "34000", "portal \"nope\" does not exist");
	server_sends(&a);
	assert_true(c->track.skipping);
	q.n = a.n = 0;
	m_parse(&q, "skipped", "SELECT 30");
	m_bind(&q, "", "skipped");
	m_sync(&q);
	client_sends(&q);
	assert_int_equal(rec.skipped, 2);
	r_ready(&a, 'I');
	server_sends(&a);
	assert_int_equal(c->state, CONN_READY);
	assert_null(stmt_lookup(&c->track.stmts, "skipped"));
	assert_true(track_idle(&c->track));
}

/* A server answer that answers nothing the client asked: the server broke the protocol. */
static void test_unexpected_answer_ends_the_session(void **state)
{
	login("alice");
	struct msgs a = {.n = 0};
	const uint8_t *p;
	size_t n;

	put(&a, '1', NULL, 0);
	server_sends(&a);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08P01");
	assert_true(the_conn() == NULL || the_conn()->state >= CONN_CLOSING);
}

/* Rows nothing reads pass in runs (conn_s2c_rows_extent), byte for byte; the tracker's
 * word on them still holds: a row that answers nothing ends the session. */
static void test_rows_pass_in_runs(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	m_query(&q, "SELECT x FROM t");
	client_sends(&q);
	r_rowdesc(&a);
	r_datarow(&a, "x");
	r_datarow(&a, "yy");
	r_datarow(&a, "");
	r_complete(&a, "SELECT 3");
	r_ready(&a, 'I');
	server_sends(&a);
	n = fake_take(&F.client, &p);
	assert_int_equal(n, a.n);
	assert_memory_equal(p, a.b, a.n);
	assert_int_equal(c->state, CONN_READY);
	assert_true(track_idle(&c->track));
	a.n = 0;
	r_datarow(&a, "x");
	r_datarow(&a, "y");
	server_sends(&a);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08P01");
	assert_true(the_conn() == NULL || the_conn()->state >= CONN_CLOSING);
}

/* ---- endings ---------------------------------------------------------------------------- */

static void test_server_fatal_is_the_last_word(void **state)
{
	struct conn *c = connect_client("alice");
	struct msgs a = {.n = 0};
	const uint8_t *p;
	size_t n;
	char t[16];

	conn_server_events(c, EPOLLOUT);
	r_error(&a, "FATAL", "28P01", "password authentication failed for user \"alice\"");
	server_sends(&a);
	n = fake_take(&F.client, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "E"); /* the server's own FATAL, and nothing after it */
	assert_memory_equal(p, a.b, n);
	assert_null(the_conn());
	assert_int_equal(rec.auths, 1); /* the login's failure was told */
}

static void test_client_terminate_then_server_answers(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	m_query(&q, "SELECT 'last'");
	m_terminate(&q);
	m_query(&q, "SELECT 'after terminate'");
	client_sends(&q);
	assert_int_equal(c->state, CONN_FAREWELL);
	n = fake_take(&F.server, &p);
	assert_null(memmem(p, n, "after terminate", 15));
	assert_int_equal(p[n - 5], 'X');
	r_rowdesc(&a);
	r_datarow(&a, "last");
	r_complete(&a, "SELECT 1");
	r_ready(&a, 'I');
	server_sends(&a);
	assert_int_equal(fake_take(&F.client, &p), a.n); /* owed answers still arrive */
	F.server.eof = true;
	conn_server_events(c, EPOLLIN | EPOLLRDHUP);
	tick(0);
	assert_null(the_conn());
}

static void test_server_breaks_while_sending(void **state)
{
	struct conn *c = login("alice");
	struct msgs q = {.n = 0}, a = {.n = 0};
	const uint8_t *p;
	size_t n;

	F.server.fail_write = -ECONNRESET;
	r_error(&a, "FATAL", "57P01", "terminating connection due to administrator command");
	fake_feed(&F.server, a.b, a.n);
	F.server.eof = true;
	m_query(&q, "SELECT 1");
	client_sends(&q);
	conn_server_events(c, EPOLLIN | EPOLLRDHUP);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "57P01"); /* its last words reached the client */
	tick(0);
	assert_null(the_conn());
}

static void test_refused_at_session_start(void **state)
{
	const uint8_t *p;
	size_t n;

	connect_client("refused");
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "28000");
	assert_int_equal(F.connects, 0); /* never connected upstream */
	assert_int_equal(rec.decisions, 1);
	tick(0);
	assert_null(the_conn());
}

/* ---- authentication at the relay (relay/conn_auth.c) ------------------------------------ */

#define AUTH_PASSWORD "pencil"

/* The relay gets an auth runtime from these auth.* settings (the daemon's path). */
static void use_auth(const char *const *kv)
{
	struct config *cfg = config_new();
	char err[512];

	assert_non_null(cfg);
	assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:5432", err, sizeof(err)), 0);
	for (; kv && kv[0]; kv += 2)
		if (config_set(cfg, kv[0], kv[1], err, sizeof(err)))
			fail_msg("%s: %s", kv[0], err);
	if (auth_runtime_new(cfg, &F.relay.auth, err, sizeof(err)))
		fail_msg("%s", err);
	config_unref(cfg);
	log_set_level(LOG_ERROR);
}

/* A users file (auth.users_file) holding alice's verifier for AUTH_PASSWORD. */
static char users_path[64];
static struct scram_verifier alice_verifier;

static const char *users_file(void)
{
	char line[SCRAM_VERIFIER_MAX + 32], v[SCRAM_VERIFIER_MAX];
	int fd;

	assert_int_equal(scram_verifier_from_password(AUTH_PASSWORD,
						      (const uint8_t *)"0123456789abcdef", 16,
						      4096, &alice_verifier),
			 SCRAM_OK);
	assert_true(scram_verifier_format(&alice_verifier, v, sizeof(v)) > 0);
	snprintf(users_path, sizeof(users_path), "/tmp/pgwarden-test-users-XXXXXX");
	fd = mkstemp(users_path);
	assert_true(fd >= 0);
	snprintf(line, sizeof(line), "\"alice\" \"%s\"\n", v);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	close(fd);
	return users_path;
}

/* The first message in p[0..n) as a proto_msg (of the given direction's types). */
static struct proto_msg first_msg(const uint8_t *p, size_t n)
{
	struct proto_msg m;

	assert_true(n >= 5);
	m.type = p[0];
	m.body_len = proto_read_u32(p + 1) - 4;
	assert_true(m.body_len + 5 <= n);
	m.body = p + 5;
	return m;
}

static void sasl_request(struct msgs *m)
{
	static const uint8_t mechs[] = "SCRAM-SHA-256\0";
	uint8_t b[64];

	proto_write_u32(b, AUTH_REQ_SASL);
	memcpy(b + 4, mechs, sizeof(mechs));
	put(m, 'R', b, 4 + sizeof(mechs));
}

/* After the StartupMessage: the server's turn in a passthrough login. */
static struct conn *passthrough_connected(const char *methods)
{
	const char *kv[] = {"auth.server_methods", methods, NULL};
	struct conn *c;
	const uint8_t *p;

	use_auth(kv);
	c = connect_client("alice");
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_AUTH);
	fake_take(&F.server, &p); /* the startup packet */
	return c;
}

/* The connection ended with sqlstate to the client, and nothing after the startup packet
 * reached the server. */
static void assert_refused(const char *sqlstate, const char *fragment)
{
	const uint8_t *p;
	size_t n = fake_take(&F.client, &p);
	char text[4096];

	assert_string_equal(first_error_code(p, n), sqlstate);
	if (fragment) {
		assert_true(n < sizeof(text));
		memcpy(text, p, n);
		text[n] = '\0';
		for (size_t i = 0; i < n; i++)
			if (!text[i])
				text[i] = ' ';
		if (!strstr(text, fragment))
			fail_msg("\"%s\" not in the client's error", fragment);
	}
	assert_int_equal(fake_take(&F.server, &p), 0);
	tick(0);
	assert_null(the_conn());
}

/* Hostile server: asks for a cleartext password where only SCRAM is allowed. The client
 * never sees the request (so never answers with its password). */
static void test_auth_server_asks_cleartext(void **state)
{
	struct msgs m = {.n = 0};
	const uint8_t *p;
	size_t n;

	passthrough_connected("scram-sha-256");
	r_auth(&m, AUTH_REQ_PASSWORD);
	server_sends(&m);
	n = fake_take(&F.client, &p);
	assert_true(n > 0);
	assert_int_equal(p[0], 'E'); /* not the 'R' */
	F.client.out_seen = 0;
	assert_refused("28000", "server requested password authentication, which pgwarden does "
				"not allow");
	assert_int_equal(rec.auths, 1); /* the stages heard the login fail */
}

/* Hostile server: AuthenticationOk with no exchange (trust) where only SCRAM is allowed. */
static void test_auth_server_skips_to_ok(void **state)
{
	struct msgs m = {.n = 0};

	passthrough_connected("scram-sha-256");
	r_auth(&m, AUTH_REQ_OK);
	r_key(&m);
	r_ready(&m, 'I');
	server_sends(&m);
	assert_int_equal(rec.auths, 1);
	assert_refused("28000", "trust");
}

/* Hostile client: a PasswordMessage before the server asked for anything. */
static void test_auth_password_before_asked(void **state)
{
	struct msgs m = {.n = 0};

	passthrough_connected("scram-sha-256");
	put(&m, 'p', "secret\0", 7);
	client_sends(&m);
	assert_refused("08P01", NULL);
}

/* Hostile client: garbage where a SCRAM client-first belongs; it never reaches the server. */
static void test_auth_sasl_garbage_from_client(void **state)
{
	struct msgs m = {.n = 0};
	const uint8_t *p;

	passthrough_connected("scram-sha-256");
	sasl_request(&m);
	server_sends(&m);
	assert_int_equal(the_conn()->state, CONN_AUTH_ANSWER);
	fake_take(&F.client, &p);
	m.n = 0;
	put(&m, 'p', "SCRAM-SHA-256\0\0\0\0\x05zzzzz", 23);
	client_sends(&m);
	assert_refused("08P01", NULL);
}

/* Hostile server: a SASLContinue that does not continue the client's nonce. */
static void test_auth_sasl_garbage_from_server(void **state)
{
	static const char first[] = "n,,n=,r=rOprNGfwEbeRWgbNEkqO";
	static const char bad[] = "r=someoneelsesnonce,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
	struct msgs m = {.n = 0};
	uint8_t b[256];
	size_t n;
	const uint8_t *p;

	passthrough_connected("scram-sha-256");
	sasl_request(&m);
	server_sends(&m);
	n = cat(b, "SCRAM-SHA-256");
	proto_write_u32(b + n, sizeof(first) - 1);
	memcpy(b + n + 4, first, sizeof(first) - 1);
	m.n = 0;
	put(&m, 'p', b, n + 4 + sizeof(first) - 1);
	client_sends(&m);
	assert_int_equal(the_conn()->state, CONN_AUTH);
	assert_int_equal(fake_take(&F.server, &p), m.n); /* a valid client-first goes on */
	fake_take(&F.client, &p);
	m.n = 0;
	proto_write_u32(b, AUTH_REQ_SASL_CONT);
	memcpy(b + 4, bad, sizeof(bad) - 1);
	put(&m, 'R', b, 4 + sizeof(bad) - 1);
	server_sends(&m);
	n = fake_take(&F.client, &p);
	assert_true(n > 0 && p[0] == 'E'); /* the garbage never reached the client */
	F.client.out_seen -= n;
	assert_refused("08P01", NULL);
}

/* Passthrough: a server refusing the password counts towards the lockout; once locked, a
 * login the server accepts is refused with the same 28P01. */
static void test_auth_passthrough_lockout(void **state)
{
	const char *kv[] = {"auth.lockout.failures", "2", NULL};
	struct msgs m = {.n = 0};
	const uint8_t *p;
	size_t n;

	use_auth(kv);
	for (int i = 0; i < 3; i++) {
		struct conn *c = connect_client("alice");

		conn_server_events(c, EPOLLOUT);
		fake_take(&F.server, &p);
		m.n = 0;
		r_auth(&m, AUTH_REQ_PASSWORD);
		server_sends(&m);
		m.n = 0;
		put(&m, 'p', "pw\0", 3);
		client_sends(&m);
		m.n = 0;
		if (i < 2)
			r_error(&m, "FATAL", "28P01", "password authentication failed for user \"alice\"");
		else
			r_auth(&m, AUTH_REQ_OK); /* the right password, but alice is locked */
		server_sends(&m);
		n = fake_take(&F.client, &p);
		assert_string_equal(first_error_code(p, n), "28P01");
		tick(0);
		assert_null(the_conn());
		fake_init(&F.client);
	}
	assert_true(lockout_is_locked(auth_runtime_lockout(F.relay.auth), "alice", NULL,
				      F.now / 1000000));
}

/* ---- terminate mode ---- */

struct scram_peer {
	struct scram_client cli;
	struct scram_server srv;
};

static struct conn *terminate_connect(struct scram_peer *sp, const char *user,
				      const char *password, uint32_t failures)
{
	char fails[16];
	const char *kv[] = {"auth.mode", "terminate", "auth.users_file", users_file(),
			    "auth.lockout.failures", fails, NULL};
	struct scram_client_params cp = {.password = password};
	struct conn *c;

	snprintf(fails, sizeof(fails), "%u", failures);
	if (!F.relay.auth)
		use_auth(kv);
	c = connect_client(user);
	assert_int_equal(scram_client_init(&sp->cli, &cp), 0);
	return c;
}

/* The client side of the relay's SCRAM: reads what the relay sent, answers. Returns false
 * when the relay sent an error instead. */
static bool client_scram_step(struct scram_peer *sp, int step)
{
	const uint8_t *p;
	size_t n = fake_take(&F.client, &p);
	struct proto_msg m = first_msg(p, n);
	const uint8_t *data = m.body + 4;
	uint32_t dlen = m.body_len - 4;
	char a[SCRAM_MESSAGE_MAX];
	uint8_t b[SCRAM_MESSAGE_MAX + 64];
	const char *mech;
	size_t an, k;
	struct msgs out = {.n = 0};

	if (m.type != 'R')
		return false;
	if (step == 0) {
		assert_int_equal(proto_read_u32(m.body), AUTH_REQ_SASL);
		assert_int_equal(scram_client_first(&sp->cli, data, dlen, &mech, a, sizeof(a), &an), 0);
		k = cat(b, mech);
		proto_write_u32(b + k, (uint32_t)an);
		memcpy(b + k + 4, a, an);
		put(&out, 'p', b, k + 4 + an);
	} else {
		assert_int_equal(proto_read_u32(m.body), AUTH_REQ_SASL_CONT);
		assert_int_equal(scram_client_final(&sp->cli, data, dlen, a, sizeof(a), &an), 0);
		put(&out, 'p', a, an);
	}
	F.client.out_seen -= n - (m.body_len + 5); /* leave what follows for the caller */
	client_sends(&out);
	return true;
}

/* The fake server's SCRAM side, holding alice's verifier. */
static void server_scram_login(struct scram_peer *sp)
{
	struct scram_server_params pp = {.verifier = &alice_verifier, .user = "alice"};
	struct msgs m = {.n = 0};
	const uint8_t *p;
	char b[SCRAM_MESSAGE_MAX];
	uint8_t rb[SCRAM_MESSAGE_MAX + 8];
	size_t n, bn;
	struct proto_msg pm;
	const char *mech;
	const uint8_t *data;
	int32_t dl;

	assert_int_equal(scram_server_init(&sp->srv, &pp), 0);
	sasl_request(&m);
	server_sends(&m);
	n = fake_take(&F.server, &p);
	assert_int_equal(proto_frame(p, n, PROTO_FRONTEND, 1 << 20, &pm), PROTO_OK);
	assert_int_equal(proto_read_sasl_initial(&pm, &mech, &data, &dl), PROTO_OK);
	assert_int_equal(scram_server_first(&sp->srv, mech, data, (size_t)dl, b, sizeof(b), &bn), 0);
	proto_write_u32(rb, AUTH_REQ_SASL_CONT);
	memcpy(rb + 4, b, bn);
	m.n = 0;
	put(&m, 'R', rb, 4 + bn);
	server_sends(&m);
	n = fake_take(&F.server, &p);
	assert_int_equal(proto_frame(p, n, PROTO_FRONTEND, 1 << 20, &pm), PROTO_OK);
	assert_int_equal(scram_server_final(&sp->srv, pm.body, pm.body_len, b, sizeof(b), &bn), 0);
	proto_write_u32(rb, AUTH_REQ_SASL_FIN);
	memcpy(rb + 4, b, bn);
	m.n = 0;
	put(&m, 'R', rb, 4 + bn);
	r_auth(&m, AUTH_REQ_OK);
	r_param(&m, "client_encoding", "UTF8");
	r_key(&m);
	r_ready(&m, 'I');
	server_sends(&m);
	scram_server_clear(&sp->srv);
}

static void terminate_cleanup(struct scram_peer *sp)
{
	scram_client_clear(&sp->cli);
	unlink(users_path);
}

/* The relay answers the client itself, and connects to the server only once the client
 * proved itself; then logs in upstream with the ClientKey from the client's proof: no
 * password anywhere. */
static void test_terminate_scram_login(void **state)
{
	struct scram_peer sp;
	struct conn *c = terminate_connect(&sp, "alice", AUTH_PASSWORD, 10);
	const uint8_t *p;
	size_t n;
	char t[64];

	assert_int_equal(c->state, CONN_CONNECTING);
	assert_true(client_scram_step(&sp, 0));
	assert_int_equal(F.connects, 0); /* the server knows nothing of it yet */
	assert_true(client_scram_step(&sp, 1));
	assert_int_equal(F.connects, 1); /* proved: now the server leg starts */
	n = fake_take(&F.client, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "R"); /* server-final; AuthenticationOk waits for the server */
	assert_int_equal(proto_read_u32(p + 5), AUTH_REQ_SASL_FIN);
	assert_int_equal(scram_client_verify(&sp.cli, p + 9, n - 9), 0);
	assert_true(c->session.auth.ok);
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_AUTH);
	n = fake_take(&F.server, &p);
	assert_int_equal(p[0], 0); /* the startup packet as sent, and none of the client's SCRAM */
	assert_int_equal(n, proto_read_u32(p));
	assert_memory_equal(p, F.client.in, n);
	server_scram_login(&sp);
	assert_int_equal(c->state, CONN_READY);
	n = fake_take(&F.client, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "RSKZ");
	assert_int_equal(proto_read_u32(p + 5), AUTH_REQ_OK);
	assert_true(c->session.auth.ok && c->session.auth.at_relay);
	assert_string_equal(c->session.auth.verified_user, "alice");
	assert_int_equal(c->session.auth.method, SESSION_AUTH_SCRAM);
	assert_int_equal(rec.auths, 1);
	assert_null(c->auth); /* the machines and their keys are gone */
	terminate_cleanup(&sp);
}

/* A wrong password: PostgreSQL's 28P01, and the server never hears of the session; after
 * the configured failures, the right password fails the same way. */
static void test_terminate_wrong_password_and_lockout(void **state)
{
	for (int i = 0; i < 3; i++) {
		struct scram_peer sp;
		struct conn *c = terminate_connect(&sp, "alice", i < 2 ? "wrong" : AUTH_PASSWORD, 2);
		assert_int_equal(c->state, CONN_CONNECTING);
		assert_true(client_scram_step(&sp, 0));
		assert_true(client_scram_step(&sp, 1));
		F.client.out_seen = 0;
		assert_int_equal(F.connects, 0);
		assert_refused("28P01", "password authentication failed for user \"alice\"");
		scram_client_clear(&sp.cli);
		fake_init(&F.client);
	}
	unlink(users_path);
}

/* Hostile client in terminate mode: a query instead of a SASL answer, and garbage SCRAM. */
static void test_terminate_hostile_client(void **state)
{
	struct scram_peer sp;
	struct msgs m = {.n = 0};
	const uint8_t *p;

	terminate_connect(&sp, "alice", AUTH_PASSWORD, 10);
	fake_take(&F.client, &p); /* AuthenticationSASL */
	m_query(&m, "SELECT 1");
	client_sends(&m);
	assert_refused("08P01", NULL);
	scram_client_clear(&sp.cli);

	fake_init(&F.client);
	terminate_connect(&sp, "alice", AUTH_PASSWORD, 10);
	m.n = 0;
	put(&m, 'p', "SCRAM-SHA-256\0\0\0\0\x05zzzzz", 23);
	client_sends(&m);
	assert_refused("08P01", NULL);
	assert_int_equal(F.connects, 0);
	terminate_cleanup(&sp);
}

/* Hostile server in terminate mode: BackendKeyData and ReadyForQuery where pgwarden's
 * login belongs: the session ends there, nothing of it is relayed. */
static void test_terminate_server_skips_login(void **state)
{
	struct scram_peer sp;
	struct msgs m = {.n = 0};
	const uint8_t *p;
	size_t n;
	char t[16];
	struct conn *c = terminate_connect(&sp, "alice", AUTH_PASSWORD, 10);

	assert_true(client_scram_step(&sp, 0));
	assert_true(client_scram_step(&sp, 1));
	fake_take(&F.client, &p); /* the server-final */
	conn_server_events(c, EPOLLOUT);
	fake_take(&F.server, &p);
	r_key(&m);
	r_ready(&m, 'I');
	server_sends(&m);
	n = fake_take(&F.client, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "E");
	assert_string_equal(first_error_code(p, n), "08P01");
	tick(0);
	assert_null(the_conn());
	terminate_cleanup(&sp);
}

/* Hostile client: a PasswordMessage claiming more than PostgreSQL would ever read for one
 * (65535 bytes): refused at its header by the framer, nothing buffered or forwarded. */
static void test_auth_oversized_password_message(void **state)
{
	struct msgs m = {.n = 0};
	uint8_t hdr[5] = {'p'};
	const uint8_t *p;

	passthrough_connected("scram-sha-256");
	sasl_request(&m);
	server_sends(&m);
	fake_take(&F.client, &p);
	proto_write_u32(hdr + 1, 100000);
	fake_feed(&F.client, hdr, sizeof(hdr));
	fake_feed(&F.client, "SCRAM-SHA-256", 13);
	conn_client_events(the_conn(), EPOLLIN);
	assert_refused("08P01", "invalid message from client");
}

/* Terminate mode with every byte read and written one at a time, both legs. */
static void test_terminate_one_byte_at_a_time(void **state)
{
	struct scram_peer sp;
	struct conn *c;
	const uint8_t *p;
	size_t n;
	char t[64];

	F.client.read_chunk = F.client.write_chunk = 1;
	c = terminate_connect(&sp, "alice", AUTH_PASSWORD, 10);
	assert_true(client_scram_step(&sp, 0));
	assert_true(client_scram_step(&sp, 1));
	n = fake_take(&F.client, &p);
	assert_int_equal(scram_client_verify(&sp.cli, p + 9, n - 9), 0);
	conn_server_events(c, EPOLLOUT);
	F.server.read_chunk = F.server.write_chunk = 1;
	fake_take(&F.server, &p);
	server_scram_login(&sp);
	assert_int_equal(c->state, CONN_READY);
	n = fake_take(&F.client, &p);
	types_of(p, n, t, sizeof(t));
	assert_string_equal(t, "RSKZ");
	terminate_cleanup(&sp);
}

/* A terminate-mode client that stops answering pgwarden's AuthenticationSASL: the login
 * deadline ends it, and the server never heard of it. */
static void test_terminate_silent_client_times_out(void **state)
{
	struct scram_peer sp;
	const uint8_t *p;
	size_t n;

	terminate_connect(&sp, "alice", AUTH_PASSWORD, 10);
	assert_true(client_scram_step(&sp, 0));
	tick(59 * NS_PER_S);
	assert_non_null(the_conn());
	tick(2 * NS_PER_S);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08P01");
	assert_null(the_conn());
	assert_int_equal(F.connects, 0);
	terminate_cleanup(&sp);
}

/* ---- TLS negotiation (conn_tls.c) --------------------------------------------------------- */

/* Made once for the TLS tests: a CA and a server certificate (tls_pki.h). */
static struct {
	char *dir;
	struct pki_cert ca, server;
	char ca_pem[256], server_pem[256], server_key[256];
} P;

static void pki_once(void)
{
	struct pki_spec ca = {.subject = {{"CN", "Test CA"}}, .usage = PKI_CA};
	struct pki_spec srv = {.subject = {{"CN", "db.example.com"}},
			       .san = {{"DNS", "db.example.com"}, {"IP", "127.0.0.1"}},
			       .usage = PKI_SERVER};

	if (P.dir)
		return;
	P.dir = pki_mkdir();
	P.ca = pki_make(&ca, NULL);
	P.server = pki_make(&srv, &P.ca);
	pki_write_cert(pki_path(P.dir, "ca.pem", P.ca_pem, sizeof(P.ca_pem)), P.ca.cert);
	pki_write_cert(pki_path(P.dir, "server.pem", P.server_pem, sizeof(P.server_pem)),
		       P.server.cert);
	pki_write_key(pki_path(P.dir, "server.key", P.server_key, sizeof(P.server_key)),
		      P.server.key);
}

static int tls_group_teardown(void **state)
{
	if (P.dir) {
		pki_free(&P.ca);
		pki_free(&P.server);
		pki_rmdir(P.dir);
	}
	return 0;
}

/* Publish a TLS snapshot for new sessions: client leg client_mode (NULL: disable) with the
 * server certificate, server leg server_mode (NULL: disable). */
static void tls_publish_named(const char *client_mode, const char *server_mode,
			      const char *server_name)
{
	struct config *cfg = config_new();
	struct tls_snapshot *s = NULL;
	char err[CONFIG_ERR_MAX];

	pki_once();
	assert_non_null(cfg);
	assert_int_equal(config_set(cfg, "listen", "127.0.0.1:6432", err, sizeof(err)), 0);
	assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:5432", err, sizeof(err)), 0);
	if (client_mode) {
		assert_int_equal(config_set(cfg, "tls.client.mode", client_mode, err, sizeof(err)), 0);
		assert_int_equal(config_set(cfg, "tls.client.cert_file", P.server_pem, err,
					    sizeof(err)), 0);
		assert_int_equal(config_set(cfg, "tls.client.key_file", P.server_key, err,
					    sizeof(err)), 0);
	}
	if (!server_mode) { /* prefer is the default, as libpq's sslmode */
		assert_int_equal(config_set(cfg, "tls.server.mode", "disable", err, sizeof(err)), 0);
	} else {
		assert_int_equal(config_set(cfg, "tls.server.mode", server_mode, err, sizeof(err)), 0);
		if (strncmp(server_mode, "verify", 6) == 0)
			assert_int_equal(config_set(cfg, "tls.server.ca_file", P.ca_pem, err,
						    sizeof(err)), 0);
		if (server_name)
			assert_int_equal(config_set(cfg, "tls.server.server_name", server_name, err,
						    sizeof(err)), 0);
	}
	if (config_validate(cfg, err, sizeof(err)) || tls_snapshot_build(cfg, &s, err, sizeof(err)))
		fail_msg("%s", err);
	config_unref(cfg);
	tls_store_publish(&F.tls, s);
}

static void tls_publish(const char *client_mode, const char *server_mode)
{
	tls_publish_named(client_mode, server_mode, NULL);
}

static void ssl_request(struct msgs *m)
{
	int n = proto_write_ssl_request(m->b + m->n, sizeof(m->b) - m->n);

	assert_int_equal(n, 8);
	m->n += 8;
}

static struct conn *start_bare(void)
{
	struct session proto = {0};

	assert_int_equal(session_new_id(&proto), 0);
	proto.upstream = F.relay.config->upstream;
	assert_int_equal(conn_start(F.w, &F.client.t, &proto), 0);
	return the_conn();
}

/* CVE-2021-23214: a StartupMessage pipelined behind the SSLRequest was never encrypted. */
static void test_tls_bytes_after_sslrequest_are_refused(void **state)
{
	struct msgs m = {.n = 0};
	const uint8_t *p;
	size_t n;

	tls_publish("prefer", NULL);
	start_bare();
	ssl_request(&m);
	startup_packet(&m, "alice");
	client_sends(&m);
	n = fake_take(&F.client, &p);
	assert_true(n > 0);
	assert_int_not_equal(p[0], 'S'); /* no 'S', no 'N': only the refusal */
	assert_string_equal(first_error_code(p, n), "08P01");
	assert_non_null(memmem(p, n, "unencrypted data after SSL request", 34));
	assert_int_equal(F.connects, 0); /* nothing went anywhere */
	tick(0);
	assert_null(the_conn());
}

/* Under require, a StartupMessage without TLS gets 28000 and never reaches a server. */
static void test_tls_plaintext_under_require_is_refused(void **state)
{
	const uint8_t *p;
	size_t n;

	tls_publish("require", NULL);
	connect_client("alice");
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "28000");
	assert_non_null(memmem(p, n, "SSL connection is required", 26));
	assert_int_equal(F.connects, 0);
	tick(0);
	assert_null(the_conn());
}

/* Under prefer a plaintext client still logs in; GSSENCRequest is answered 'N'. */
static void test_tls_prefer_accepts_plaintext(void **state)
{
	struct msgs m = {.n = 0};
	const uint8_t *p;

	tls_publish("prefer", NULL);
	start_bare();
	proto_write_u32(m.b, 8); /* GSSENCRequest */
	proto_write_u32(m.b + 4, PROTO_GSSENC_REQUEST_CODE);
	m.n = 8;
	client_sends(&m);
	assert_int_equal(fake_take(&F.client, &p), 1);
	assert_int_equal(p[0], 'N');
	m.n = 0;
	startup_packet(&m, "alice");
	client_sends(&m);
	assert_int_equal(the_conn()->state, CONN_CONNECTING);
	assert_null(session_client_tls(&the_conn()->session)->version);
}

/* The server leg under tls.server.mode: what the server sent after SSLRequest. */
static struct conn *server_leg(const char *mode, const void *answer, size_t n)
{
	struct conn *c;
	const uint8_t *p;
	uint8_t req[8];
	struct msgs a = {.n = 0};

	tls_publish(NULL, mode);
	c = connect_client("alice");
	assert_int_equal(c->state, CONN_CONNECTING);
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_SERVER_TLS);
	/* Exactly the SSLRequest went: the StartupMessage waits for TLS. */
	assert_int_equal(fake_take(&F.server, &p), 8);
	assert_int_equal(proto_write_ssl_request(req, sizeof(req)), 8);
	assert_memory_equal(p, req, 8);
	memcpy(a.b, answer, n);
	a.n = n;
	server_sends(&a);
	return the_conn();
}

/* CVE-2021-23222: the server's answer to the SSLRequest, answer[0..n), came with bytes
 * behind it, which were injected: the client gets 08006 and nothing reaches the server. */
static void server_answer_injected(const char *mode, const uint8_t *answer, size_t n)
{
	const uint8_t *p;
	size_t got;

	server_leg(mode, answer, n);
	got = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, got), "08006");
	assert_non_null(memmem(p, got, "unencrypted data after SSL response", 35));
	assert_int_equal(fake_take(&F.server, &p), 0); /* the StartupMessage never left */
}

/* Bytes after the server's 'S', before any ServerHello. */
static void test_tls_server_injects_after_s(void **state)
{
	static const uint8_t answer[] = "S\x00\x00\x00\x08garbage";

	server_answer_injected("require", answer, sizeof(answer) - 1);
	tick(0);
	assert_null(the_conn());
}

/* The session under way ends; the next one starts on a fresh client leg. */
static void next_session(void)
{
	if (the_conn())
		conn_terminate(the_conn(), "57P01", "test over", "test over");
	tick(0);
	assert_null(the_conn());
	fake_init(&F.client);
}

/* The next session (after tick_ns) sends the server an SSLRequest again, nothing else. */
static void next_session_asks_for_tls(uint64_t tick_ns)
{
	const uint8_t *p;
	struct conn *c;

	next_session();
	tick(tick_ns);
	c = connect_client("alice");
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_SERVER_TLS);
	assert_int_equal(fake_take(&F.server, &p), 8); /* the SSLRequest again */
}

/* 'N' under require: never a silent downgrade, nor remembered: the next session asks. */
static void test_tls_server_n_under_require(void **state)
{
	const uint8_t *p;
	size_t n;

	server_leg("require", "N", 1);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08001");
	assert_int_equal(fake_take(&F.server, &p), 0);
	next_session_asks_for_tls(0);
}

/* Under prefer a server's 'N' is remembered (tls_server_known_plain): the next session's
 * StartupMessage leaves at once, without the round trip; after the recheck time the
 * SSLRequest goes again. */
static void test_tls_server_n_under_prefer_remembered(void **state)
{
	struct conn *c = server_leg("prefer", "N", 1);
	const uint8_t *p;
	size_t n;

	assert_int_equal(c->state, CONN_AUTH);
	next_session();
	c = connect_client("alice");
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_AUTH);
	n = fake_take(&F.server, &p);
	assert_true(n > 8 && proto_read_u32(p) == n); /* the StartupMessage, whole, alone */
	assert_null(session_server_tls(&c->session)->version);
	next_session_asks_for_tls(TLS_PLAIN_SERVER_RECHECK_NS);
}

/* A forged 'N' that carries injected bytes behind it is refused, and the table never hears
 * it: the next session asks again instead of skipping TLS for the recheck time. */
static void test_tls_server_injected_n_not_remembered(void **state)
{
	static const uint8_t answer[] = "Ngarbage";

	server_answer_injected("prefer", answer, sizeof(answer) - 1);
	next_session_asks_for_tls(0);
}

/* 'N' under prefer: plaintext, and the StartupMessage follows the SSLRequest. */
static void test_tls_server_n_under_prefer(void **state)
{
	struct msgs a = {.n = 0};
	struct conn *c = server_leg("prefer", "N", 1);
	const uint8_t *p;
	size_t n;

	assert_int_equal(c->state, CONN_AUTH);
	n = fake_take(&F.server, &p);
	assert_true(n > 8 && proto_read_u32(p) == n); /* the client's StartupMessage, whole */
	assert_null(session_server_tls(&c->session)->version);
	r_auth(&a, AUTH_REQ_OK);
	r_ready(&a, 'I');
	server_sends(&a);
	assert_int_equal(c->state, CONN_READY);
}

/* The server's plaintext ErrorResponse to SSLRequest is never shown to the client. */
static void test_tls_server_error_response_hidden(void **state)
{
	struct msgs a = {.n = 0};
	const uint8_t *p;
	size_t n;

	r_error(&a, "FATAL", "08P01", "phishing text from the server");
	server_leg("prefer", a.b, a.n);
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08001");
	assert_null(memmem(p, n, "phishing", 8));
	assert_int_equal(fake_take(&F.server, &p), 0);
}

/* SCRAM-SHA-256-PLUS offered across legs that do not share a certificate (here: plain)
 * would make a binding client fail obscurely: the client sees the offer without it. */
static void test_tls_plus_not_offered_when_binding_cannot_pass(void **state)
{
	static const char offer[] = "SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0";
	struct msgs a = {.n = 0}, want = {.n = 0};
	struct conn *c = connect_client("alice");
	const uint8_t *p;
	size_t n;
	uint8_t body[64];

	conn_server_events(c, EPOLLOUT);
	proto_write_u32(body, AUTH_REQ_SASL);
	memcpy(body + 4, offer, sizeof(offer)); /* with the list's final NUL */
	put(&a, 'R', body, 4 + sizeof(offer));
	server_sends(&a);
	proto_write_u32(body, AUTH_REQ_SASL);
	memcpy(body + 4, "SCRAM-SHA-256\0", 15);
	put(&want, 'R', body, 4 + 15);
	n = fake_take(&F.client, &p);
	assert_int_equal(n, want.n);
	assert_memory_equal(p, want.b, n);
	assert_int_equal(c->state, CONN_AUTH_ANSWER);
}

/* A real OpenSSL client over a socketpair: SSLRequest and 'S', or direct SSL with ALPN. */
struct tls_peer {
	int sp[2];
	struct transport sock; /* the relay's plain client transport (storage outlives it) */
	SSL_CTX *ctx;
	SSL *ssl;
};

static void tls_peer_open(struct tls_peer *t, bool direct)
{
	static const unsigned char alpn[] = "\x0apostgresql";

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, t->sp), 0);
	transport_sock_init(&t->sock, t->sp[0], false);
	t->ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(t->ctx);
	assert_int_equal(SSL_CTX_load_verify_locations(t->ctx, P.ca_pem, NULL), 1);
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
	t->ssl = SSL_new(t->ctx);
	assert_non_null(t->ssl);
	SSL_set_fd(t->ssl, t->sp[1]);
	SSL_set_tlsext_host_name(t->ssl, "db.example.com");
	assert_int_equal(SSL_set1_host(t->ssl, "db.example.com"), 1);
	if (direct)
		assert_int_equal(SSL_set_alpn_protos(t->ssl, alpn, sizeof(alpn) - 1), 0);
}

static void tls_peer_close(struct tls_peer *t)
{
	SSL_free(t->ssl);
	SSL_CTX_free(t->ctx);
	close(t->sp[1]);
}

/* Step the client's handshake and the relay until the client is done (or fails). */
static int tls_peer_handshake(struct tls_peer *t, struct conn *c)
{
	for (int i = 0; i < 200; i++) {
		int r = SSL_connect(t->ssl);

		if (r == 1)
			return 1;
		if (SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_READ &&
		    SSL_get_error(t->ssl, r) != SSL_ERROR_WANT_WRITE)
			return r;
		if (the_conn())
			conn_client_events(c, EPOLLIN | EPOLLOUT);
	}
	return -1;
}

static void tls_client_leg(bool direct)
{
	struct tls_peer t;
	struct msgs m = {.n = 0};
	struct session proto = {0};
	struct conn *c;
	const uint8_t *p;
	uint8_t answer;

	tls_publish("require", NULL);
	tls_peer_open(&t, direct);
	assert_int_equal(session_new_id(&proto), 0);
	proto.upstream = F.relay.config->upstream;
	assert_int_equal(conn_start(F.w, &t.sock, &proto), 0);
	c = the_conn();
	if (!direct) {
		ssl_request(&m);
		assert_int_equal(write(t.sp[1], m.b, m.n), (ssize_t)m.n);
		conn_client_events(c, EPOLLIN);
		assert_int_equal(read(t.sp[1], &answer, 1), 1);
		assert_int_equal(answer, 'S');
		assert_int_equal(c->state, CONN_CLIENT_TLS);
	}
	assert_int_equal(tls_peer_handshake(&t, c), 1);
	conn_client_events(c, EPOLLIN | EPOLLOUT);
	assert_int_equal(c->state, CONN_NEGOTIATE);
	assert_non_null(session_client_tls(&c->session)->version);
	assert_true(strncmp(session_client_tls(&c->session)->version, "TLSv1.", 6) == 0);
	/* The StartupMessage inside TLS reaches the server in plaintext (its leg is plain). */
	m.n = 0;
	startup_packet(&m, "alice");
	assert_int_equal(SSL_write(t.ssl, m.b, (int)m.n), (int)m.n);
	conn_client_events(c, EPOLLIN);
	assert_int_equal(c->state, CONN_CONNECTING);
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(fake_take(&F.server, &p), m.n);
	assert_memory_equal(p, m.b, m.n);
	conn_terminate(c, "57P01", "test over", "test over");
	tls_peer_close(&t);
}

/* The server leg over a socketpair against an OpenSSL server presenting P.server:
 * SSLRequest, 'S', the handshake under verify-full (the name: server_name, else the
 * upstream address 127.0.0.1), then the client's StartupMessage inside TLS. */
static bool tls_server_leg(const char *server_name)
{
	int sp[2];
	SSL_CTX *ctx;
	SSL *ssl;
	struct conn *c;
	struct msgs m = {.n = 0};
	uint8_t req[8], got[256];
	bool ok = false;
	int r = 0, n;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp), 0);
	F.server_fd = sp[0];
	tls_publish_named(NULL, "verify-full", server_name);
	ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_use_certificate(ctx, P.server.cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(ctx, P.server.key), 1);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, sp[1]);

	c = connect_client("alice");
	conn_server_events(c, EPOLLOUT);
	assert_int_equal(c->state, CONN_SERVER_TLS);
	assert_int_equal(read(sp[1], req, sizeof(req)), 8); /* the SSLRequest, nothing more */
	assert_int_equal(proto_read_u32(req + 4), PROTO_SSL_REQUEST_CODE);
	assert_int_equal(write(sp[1], "S", 1), 1);
	for (int i = 0; i < 200 && the_conn() && c->state == CONN_SERVER_TLS; i++) {
		conn_server_events(c, EPOLLIN | EPOLLOUT);
		r = SSL_accept(ssl);
	}
	if (the_conn() && c->state == CONN_AUTH) {
		assert_non_null(session_server_tls(&c->session)->version);
		startup_packet(&m, "alice");
		for (int i = 0; i < 200; i++) {
			n = SSL_read(ssl, got, sizeof(got));
			if (n > 0) {
				assert_int_equal(n, m.n); /* the StartupMessage, only inside TLS */
				assert_memory_equal(got, m.b, m.n);
				ok = true;
				break;
			}
			conn_server_events(c, EPOLLOUT);
		}
		assert_true(ok);
		(void)r;
	}
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(sp[1]);
	return ok;
}

static void test_tls_server_leg_verify_full(void **state)
{
	assert_true(tls_server_leg(NULL)); /* by address: the certificate's IP SAN */
	conn_terminate(the_conn(), "57P01", "test over", "test over");
}

/*
 * A restart sets the relay's draining flag and only then replies; each worker hears its
 * DRAIN command later, after the socket events of the same wait. A connection that arrives
 * in between must stay in the listening socket's queue for the successor, which watches
 * the same socket, not be accepted by the retiring daemon's worker.
 */
static void test_no_accept_once_the_relay_drains(void **state)
{
	struct config *cfg = config_new();
	struct worker *w = NULL;
	struct worker_listener *l;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char err[256];
	int client, taken;

	assert_non_null(cfg);
	assert_int_equal(config_set(cfg, "listen", "127.0.0.1:0", err, sizeof(err)), 0);
	assert_int_equal(config_set(cfg, "upstream", "127.0.0.1:5432", err, sizeof(err)), 0);
	assert_int_equal(worker_create(&w, 1, &F.relay, cfg), 0);
	assert_int_equal(w->nlisteners, 1);
	l = &w->listeners[0];
	assert_int_equal(getsockname(l->fd, (struct sockaddr *)&ss, &len), 0);
	client = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(client >= 0);
	assert_int_equal(connect(client, (struct sockaddr *)&ss, len), 0);

	__atomic_store_n(&F.relay.draining, true, __ATOMIC_RELEASE);
	l->watch.cb(&w->loop, &l->watch, EPOLLIN); /* the listener's event, before the DRAIN */
	assert_null(w->conns);
	taken = accept(l->fd, NULL, NULL); /* still queued: the successor's to take */
	assert_true(taken >= 0);

	close(taken);
	close(client);
	__atomic_store_n(&F.relay.draining, false, __ATOMIC_RELEASE);
	worker_destroy(w);
	config_unref(cfg);
}

static void test_tls_server_leg_wrong_name_refused(void **state)
{
	const uint8_t *p;
	size_t n;

	assert_false(tls_server_leg("other.example.com"));
	n = fake_take(&F.client, &p);
	assert_string_equal(first_error_code(p, n), "08006");
	assert_non_null(memmem(p, n, "SSL connection to the database server failed", 44));
	tick(0);
	assert_null(the_conn());
}

/* A client that stops in the middle of its handshake: closed at the login deadline, and
 * nothing is written after the 'S' (it could not read an ErrorResponse). */
static void test_tls_client_handshake_timeout(void **state)
{
	struct tls_peer t;
	struct msgs m = {.n = 0};
	struct session proto = {0};
	uint8_t b[64];

	tls_publish("prefer", NULL);
	tls_peer_open(&t, false);
	assert_int_equal(session_new_id(&proto), 0);
	proto.upstream = F.relay.config->upstream;
	assert_int_equal(conn_start(F.w, &t.sock, &proto), 0);
	ssl_request(&m);
	assert_int_equal(write(t.sp[1], m.b, m.n), (ssize_t)m.n);
	conn_client_events(the_conn(), EPOLLIN);
	assert_int_equal(read(t.sp[1], b, sizeof(b)), 1);
	assert_int_equal(b[0], 'S');
	assert_int_equal(the_conn()->state, CONN_CLIENT_TLS);
	tick(F.relay.config->startup_timeout_ms * 1000000ULL + 1);
	tick(0);
	assert_null(the_conn());
	assert_int_equal(read(t.sp[1], b, sizeof(b)), 0); /* closed, nothing said */
	tls_peer_close(&t);
}

static void test_tls_client_leg_after_sslrequest(void **state)
{
	tls_client_leg(false);
}

static void test_tls_client_leg_direct(void **state)
{
	tls_client_leg(true);
}

/* Direct SSL without ALPN "postgresql" is refused (the tls module's rule, in the core). */
static void test_tls_direct_without_alpn_refused(void **state)
{
	struct tls_peer t;
	struct session proto = {0};

	tls_publish("prefer", NULL);
	tls_peer_open(&t, false); /* no ALPN */
	assert_int_equal(session_new_id(&proto), 0);
	proto.upstream = F.relay.config->upstream;
	assert_int_equal(conn_start(F.w, &t.sock, &proto), 0);
	assert_int_not_equal(tls_peer_handshake(&t, the_conn()), 1);
	tick(0);
	assert_null(the_conn());
	assert_int_equal(F.connects, 0);
	tls_peer_close(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transition_table),
		cmocka_unit_test_setup_teardown(test_login_phases_and_query, setup, teardown),
		cmocka_unit_test_setup_teardown(test_one_byte_at_a_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pending_bytes_held_by_the_transport, setup, teardown),
		cmocka_unit_test_setup_teardown(test_startup_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_message_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idle_limit_from_a_stage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_fatal_answers_the_request_in_flight,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_stage_close_answers_the_refused_message,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_login_limit_from_a_stage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_linger_when_the_client_stops_reading, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_simple_query, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_in_transaction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reject_in_an_extended_pipeline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_injected_reply_keeps_protocol_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewrite_with_a_changed_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_and_wake, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_queue_storage, setup, teardown),
		cmocka_unit_test(test_request_queue_spares_bounded),
		cmocka_unit_test(test_statement_words_anywhere),
		cmocka_unit_test_setup_teardown(test_repeated_parse_shares_its_statement, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_sql_level_prepared_statements, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sql_prepare_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sql_prepare_by_execute_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sql_prepare_read_as_the_server_reads_it, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_pause_until_a_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_wake_after_the_end, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_waker_without_a_waking_stage, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_interest_per_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streaming_rewrite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streaming_close_tells_the_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streaming_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streaming_runs_fill_the_buffer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streaming_runs_send_a_full_buffer_first, setup, teardown),
		cmocka_unit_test_setup_teardown(test_streaming_run_close_tells_the_client, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_streaming_run_stopped_in_a_refused_row, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_statement_table_follows_the_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined_statements_and_skips, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unexpected_answer_ends_the_session, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rows_pass_in_runs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_fatal_is_the_last_word, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_terminate_then_server_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_server_breaks_while_sending, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refused_at_session_start, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_server_asks_cleartext, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_server_skips_to_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_password_before_asked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_sasl_garbage_from_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_sasl_garbage_from_server, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_passthrough_lockout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_terminate_scram_login, setup, teardown),
		cmocka_unit_test_setup_teardown(test_terminate_wrong_password_and_lockout, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_terminate_hostile_client, setup, teardown),
		cmocka_unit_test_setup_teardown(test_terminate_server_skips_login, setup, teardown),
		cmocka_unit_test_setup_teardown(test_auth_oversized_password_message, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_terminate_one_byte_at_a_time, setup, teardown),
		cmocka_unit_test_setup_teardown(test_terminate_silent_client_times_out, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tls_bytes_after_sslrequest_are_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tls_plaintext_under_require_is_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tls_prefer_accepts_plaintext, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_server_injects_after_s, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_server_n_under_require, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_server_n_under_prefer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_server_n_under_prefer_remembered, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tls_server_injected_n_not_remembered, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tls_server_error_response_hidden, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_plus_not_offered_when_binding_cannot_pass,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_client_leg_after_sslrequest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_server_leg_verify_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_server_leg_wrong_name_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_client_handshake_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_client_leg_direct, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_direct_without_alpn_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_no_accept_once_the_relay_drains, setup,
						teardown),
	};

	return cmocka_run_group_tests_name("conn", tests, NULL, tls_group_teardown);
}
