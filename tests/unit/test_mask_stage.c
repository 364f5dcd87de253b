/*
 * test_mask_stage: the masking stage through the real stage pipeline (stage.c), message by
 * message, as the connection would run it: frontend messages are judged, backend messages
 * judged or streamed, and what the client would receive is recorded and read back.
 *
 * The classifier and the policy are test doubles with the documented interface
 * (mask_source); the catalog is built from rows shaped like the resolution query's result.
 * Hostile scenarios come first in each group: a client that redefines a prepared statement
 * the server refused to redefine, reads a computed column through a cursor, executes an
 * undescribed portal, calls functions by OID, copies a query; a server whose rows do not
 * fit the lookahead or disagree with their description.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mask/mask_catalog.h"
#include "mask/mask_classify.h"
#include "mask/mask_key.h"
#include "mask/mask_stage.h"
#include "proto/proto.h"
#include "stage/stage.h"

#include "mask_test_util.h"

#define CUSTOMERS 16384u
#define CUSTOMERS_V 16400u
#define OID_CITEXT 90001u

/* ---- message building ------------------------------------------------------------------------- */

struct mb {
	uint8_t b[65536];
	size_t n;
};

static void mb_start(struct mb *m, uint8_t type)
{
	m->b[0] = type;
	m->n = 5;
}

static void mb_u8(struct mb *m, uint8_t v)
{
	m->b[m->n++] = v;
}

static void mb_u16(struct mb *m, uint16_t v)
{
	mb_u8(m, (uint8_t)(v >> 8));
	mb_u8(m, (uint8_t)v);
}

static void mb_u32(struct mb *m, uint32_t v)
{
	mb_u16(m, (uint16_t)(v >> 16));
	mb_u16(m, (uint16_t)v);
}

static void mb_bytes(struct mb *m, const void *p, size_t n)
{
	memcpy(m->b + m->n, p, n);
	m->n += n;
}

static void mb_str(struct mb *m, const char *s)
{
	mb_bytes(m, s, strlen(s) + 1);
}

static const struct mb *mb_end(struct mb *m)
{
	proto_write_u32(m->b + 1, (uint32_t)(m->n - 1));
	return m;
}

static struct proto_msg as_msg(const struct mb *m)
{
	return (struct proto_msg){.type = m->b[0], .body_len = (uint32_t)(m->n - 5),
				  .body = m->b + 5};
}

/* ---- the world: policy, catalog, classifier, session --------------------------------------- */

static struct mask_policy *policy;
static const struct mask_profile *analyst, *strict;

struct fact {
	const char *sql;
	struct mask_stmt_info info;
};
static struct fact facts[32];
static unsigned nfacts;
static int stale_calls;

static struct mask_stmt_info *fact(const char *sql, enum mask_refs refs)
{
	struct fact *f = &facts[nfacts++];

	memset(f, 0, sizeof(*f));
	f->sql = sql;
	f->info.refs_known = true;
	f->info.refs = refs;
	return &f->info;
}

static const struct mask_profile *src_profile(void *arg, const struct stage_ctx *ctx)
{
	const char *u = session_verified_user(ctx->session);

	const struct mask_profile *p = NULL;

	if (u && !strcmp(u, "analyst"))
		p = analyst;
	if (u && !strcmp(u, "strict"))
		p = strict;
	if (p) /* the contract: a profile comes with a reference to its policy */
		mask_policy_get(mask_profile_policy(p));
	return p;
}

static int src_analyse(void *arg, const struct mask_profile *p, const char *sql, size_t len,
		       unsigned opts, struct mask_stmt_info *out, unsigned cap)
{
	for (unsigned i = 0; i < nfacts; i++)
		if (strlen(facts[i].sql) == len && !memcmp(facts[i].sql, sql, len)) {
			out[0] = facts[i].info;
			return 1;
		}
	return -1; /* unknown */
}

static void src_stale(void *arg)
{
	stale_calls++;
}

/* A row of the resolution query: kind, then the 12 other columns (NULL: absent). */
static void cat_row(struct mask_catalog_builder *b, const char *const v[13])
{
	struct mb m;
	struct proto_msg pm;

	mb_start(&m, 'D');
	mb_u16(&m, 13);
	for (int i = 0; i < 13; i++) {
		if (!v[i]) {
			mb_u32(&m, UINT32_MAX);
			continue;
		}
		mb_u32(&m, (uint32_t)strlen(v[i]));
		mb_bytes(&m, v[i], strlen(v[i]));
	}
	pm = as_msg(mb_end(&m));
	assert_int_equal(mask_catalog_builder_row(b, &pm), 0);
}

/* The statement as the real classifier describes it (names included). */
static struct mask_stmt_info *fact_classified(const char *sql)
{
	struct fact *f = &facts[nfacts++];

	memset(f, 0, sizeof(*f));
	f->sql = sql;
	mask_classify_one(sql, strlen(sql), 0, &f->info);
	return &f->info;
}

/*
 * The catalog of the tests: customers (masked), a view over it, and what computed columns
 * may be read from in clear: public.orders, pg_catalog.pg_class, a.dup (but b.dup is not
 * clean, so plain "dup" is not); max() shadowed outside pg_catalog; code_hooks as given.
 */
static void build_catalog_hooks(const char *hooks)
{
	struct mask_catalog_builder *b = mask_catalog_builder_new(policy);
	struct mask_catalog *c;
	/* policy columns: 0 ssn, 1 card, 2 email, 3 dob (in the order the profiles name them) */
	const char *const rows[][13] = {
		{"c", "0", "16384", "3", "25", "-1", "text", "false", NULL, NULL, "true", NULL, NULL},
		{"c", "1", "16384", "4", "1043", "23", "varchar", "false", NULL, NULL, "true", NULL, NULL},
		{"c", "2", "16384", "5", "90001", "-1", "citext", "false", NULL, NULL, "true", NULL, NULL},
		{"c", "3", "16384", "6", "1082", "-1", "date", "false", NULL, NULL, "true", NULL, NULL},
		{"v", "0", "16400", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
		{"t", NULL, "16384", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "public", "customers"},
		{"a", NULL, "16384", "1", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "id"},
		{"a", NULL, "16384", "2", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "name"},
		{"a", NULL, "16384", "3", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "ssn"},
		{"a", NULL, "16384", "4", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "card"},
		{"a", NULL, "16384", "5", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "email"},
		{"a", NULL, "16384", "6", NULL, NULL, NULL, NULL, NULL, NULL, "false", NULL, "dob"},
		{"k", NULL, "17001", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "true", "public", "orders"},
		{"k", NULL, "17002", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "true", "pg_catalog",
		 "pg_class"},
		{"k", NULL, "17003", NULL, NULL, NULL, NULL, NULL, NULL, NULL, "false", "a", "dup"},
		{"f", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, "max"},
		{"h", NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, hooks, NULL, NULL},
	};

	assert_non_null(b);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		cat_row(b, rows[i]);
	assert_int_equal(mask_catalog_builder_finish(b, &c), 0);
	mask_catalog_publish(c);
}

static void build_catalog(void)
{
	build_catalog_hooks("false");
}

/* The audit hook: what the last masked result was reported as. */
static unsigned masked_calls;
static uint64_t masked_request;
static char masked_first[MASK_COLREF_STRLEN];
static unsigned masked_n;

static void src_masked(void *arg, const struct session *s, uint64_t request,
		       const struct mask_plan *p, const struct mask_policy *mp)
{
	masked_calls++;
	masked_request = request;
	masked_n = p->nmasked;
	masked_first[0] = '\0';
	for (unsigned i = 0; i < p->ncols; i++)
		if (p->cols[i].rule_col >= 0) {
			mask_colref_format(mask_policy_column(mp, (unsigned)p->cols[i].rule_col),
					   masked_first, sizeof(masked_first));
			break;
		}
}

static int setup(void **state)
{
	struct mask_profile *p;
	char err[256];
	struct mask_key *k;
	struct mask_stage_config cfg = {
		.source = {.profile = src_profile, .analyse = src_analyse, .catalog_stale = src_stale,
			   .masked = src_masked},
		.row_lookahead = 4096,
	};

	policy = mask_policy_new();
	assert_int_equal(mask_policy_add_profile(policy, "analyst", &p), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.ssn", "partial-last-4", err, sizeof(err)), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.card", "hash", err, sizeof(err)), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.email", "email", err, sizeof(err)), 0);
	assert_int_equal(mask_profile_add(p, "public.customers.dob", "date", err, sizeof(err)), 0);
	analyst = p;
	assert_int_equal(mask_policy_add_profile(policy, "strict", &p), 0);
	assert_int_equal(mask_profile_add(p, "Public.Customers.SSN", "null", err, sizeof(err)), 0);
	mask_profile_set_computed(p, MASK_COMPUTED_DENY);
	strict = p;
	mask_policy_seal(policy);
	assert_int_equal(mask_stage_configure(&cfg), 0);
	assert_int_equal(mask_key_from_bytes(MASK_TEST_KEY, 32, &k), 0);
	mask_stage_set_key(k);
	build_catalog();
	return 0;
}

static int teardown(void **state)
{
	mask_catalog_publish(NULL);
	mask_stage_set_key(NULL);
	mask_policy_put(policy);
	return 0;
}

/* One session through a pipeline holding only the mask stage. */
struct world {
	struct session s;
	struct stage_pipeline p;
	struct stage_chain ch;
	/* what the client received */
	uint8_t *seen;
	size_t seen_n;
	struct stage_result last;
	/* be_runs: streamed messages waiting to go to the stage as one run */
	uint8_t run[1u << 16];
	size_t run_n;
};

static const struct stage_ops *front_stage; /* a stage before masking (policy), or NULL */

static void world_start(struct world *w, const char *user)
{
	struct proto_startup st = {.kind = PROTO_STARTUP_MESSAGE, .code = PROTO_VERSION_3_0};
	struct stage_note auth = {.kind = STAGE_NOTE_AUTH};
	struct stage_limits lim = {0};
	struct stage_result r;

	memset(w, 0, sizeof(*w));
	st.user = user;
	st.database = "app";
	st.nparams = 2;
	st.params[0] = (struct proto_param){"user", user};
	st.params[1] = (struct proto_param){"application_name", "report-tool"};
	st.application_name = "report-tool";
	assert_int_equal(session_set_startup(&w->s, &st), 0);
	assert_int_equal(session_set_server_param(&w->s, "client_encoding", "UTF8"), 0);
	assert_int_equal(session_set_server_param(&w->s, "DateStyle", "ISO, MDY"), 0);
	assert_int_equal(session_set_server_param(&w->s, "standard_conforming_strings", "on"), 0);
	if (front_stage)
		assert_int_equal(stage_pipeline_add(&w->p, front_stage), 0);
	assert_int_equal(stage_pipeline_add(&w->p, &mask_stage), 0);
	assert_int_equal(stage_chain_init(&w->ch, &w->p, &w->s, NULL, NULL), 0);
	stage_run_session_start(&w->ch, &lim, 0, &r);
	assert_int_equal(r.verdict, STAGE_FORWARD);
	assert_int_equal(session_set_verified(&w->s, SESSION_AUTH_SCRAM, false, user), 0);
	stage_run_notice(&w->ch, &auth, &lim, 0);
	w->seen = malloc(1u << 20);
}

static void world_end(struct world *w)
{
	stage_chain_end(&w->ch, true);
	session_release(&w->s);
	free(w->seen);
}

static void seen_add(struct world *w, const uint8_t *p, size_t n)
{
	assert_true(w->seen_n + n <= (1u << 20));
	memcpy(w->seen + w->seen_n, p, n);
	w->seen_n += n;
}

static void be_flush(struct world *w);

static enum stage_verdict fe(struct world *w, const struct mb *m)
{
	struct proto_msg pm = as_msg(m);

	be_flush(w);
	if (!stage_chain_wants(&w->ch, PROTO_FRONTEND, pm.type))
		return STAGE_FORWARD;
	stage_run_frontend(&w->ch, &pm, 1, NULL, 0, &w->last);
	return w->last.verdict;
}

/* Nonzero: streamed messages arrive whole, into rooms of this many bytes, instead of in
 * pieces (the paths a relay takes when a whole message is in its buffer). */
static size_t be_room;
#define BE_ROOM_MAX (1u << 17)

/* With be_room: consecutive streamed messages of one type go to the stage as runs
 * (stage_run_stream_run), as a relay hands them over when they lie whole in its buffer. */
static bool be_runs;

static uint8_t be_out[BE_ROOM_MAX];

/* The rest of a streamed message from body_offset on, through stage_run_stream(). */
static enum stage_verdict be_stream(struct world *w, const struct proto_msg *pm,
				    uint32_t body_offset)
{
	struct stage_stream st = {.type = pm->type, .body_len = pm->body_len,
				  .body_offset = body_offset};
	unsigned idle = 0;

	for (;;) {
		size_t left = pm->body_len - st.body_offset;

		st.in = pm->body + st.body_offset;
		st.in_len = be_room ? left : left < 7 ? left : 7;
		st.out = be_out;
		st.out_cap = be_room ? be_room : 5;
		st.done = false;
		stage_run_stream(&w->ch, &st, 0, &w->last);
		if (w->last.verdict != STAGE_FORWARD)
			return w->last.verdict;
		seen_add(w, be_out, st.produced);
		st.body_offset += (uint32_t)st.consumed;
		if (st.done)
			break;
		if (!st.consumed && !st.produced)
			assert_true(++idle < 3 && left == 0);
	}
	assert_int_equal(st.body_offset, pm->body_len);
	return STAGE_FORWARD;
}

/* The waiting run, as the relay takes it: what the stage takes of it, then the message it
 * stopped in, or the one it would not take, through stage_run_stream(). */
static void be_flush(struct world *w)
{
	size_t off = 0;

	while (off < w->run_n) {
		struct stage_stream st = {.type = w->run[off], .in = w->run + off,
					  .in_len = w->run_n - off, .out = be_out,
					  .out_cap = be_room};
		struct proto_msg pm;
		size_t at = off, total;

		stage_run_stream_run(&w->ch, &st, 0, &w->last);
		assert_int_equal(w->last.verdict, STAGE_FORWARD);
		assert_true(st.consumed <= st.in_len && st.produced <= st.out_cap);
		seen_add(w, be_out, st.produced);
		/* at: the last message the stage took of the run (the first when it took none) */
		for (;;) {
			assert_int_equal(proto_frame(w->run + at, w->run_n - at, PROTO_BACKEND,
						     PROTO_MAX_BODY, &pm),
					 PROTO_OK);
			total = PROTO_HEADER_LEN + pm.body_len;
			if (at + total >= off + st.consumed)
				break;
			at += total;
		}
		if (st.partial) {
			assert_true(off + st.consumed >= at + PROTO_HEADER_LEN);
			assert_int_equal(be_stream(w, &pm, (uint32_t)(off + st.consumed - at -
								      PROTO_HEADER_LEN)),
					 STAGE_FORWARD);
		} else if (!st.consumed) { /* declined: this one streams the ordinary way */
			assert_int_equal(be_stream(w, &pm, 0), STAGE_FORWARD);
		} else {
			assert_int_equal(at + total, off + st.consumed); /* a message boundary */
			assert_int_equal(st.partial_produced, 0);
		}
		off = at + total;
	}
	w->run_n = 0;
}

/* A server message as the connection would handle it: streamed (in pieces of 7 bytes into
 * rooms of 5, whole into rooms of be_room, or in runs, see be_runs), judged whole, or
 * passed. What reaches the client is added to w->seen. */
static enum stage_verdict be(struct world *w, const struct mb *m)
{
	struct proto_msg pm = as_msg(m);

	if (be_runs && w->run_n && (w->run[0] != pm.type || w->run_n + m->n > sizeof(w->run) ||
				    m->n > STAGE_RUN_MESSAGE_MAX))
		be_flush(w);
	if (stage_chain_streams(&w->ch, pm.type) && be_runs && m->n <= STAGE_RUN_MESSAGE_MAX &&
	    (pm.type == PqMsg_DataRow || pm.type == PqMsg_CopyData)) {
		memcpy(w->run + w->run_n, m->b, m->n);
		w->run_n += m->n;
		return STAGE_FORWARD;
	}
	be_flush(w);
	if (stage_chain_streams(&w->ch, pm.type))
		return be_stream(w, &pm, 0);
	if (!stage_chain_wants(&w->ch, PROTO_BACKEND, pm.type)) {
		seen_add(w, m->b, m->n);
		return STAGE_FORWARD;
	}
	stage_run_backend(&w->ch, &pm, 0, 0, &w->last);
	if (w->last.verdict == STAGE_REWRITE)
		seen_add(w, w->last.rewrite, w->last.rewrite_len);
	else if (w->last.verdict == STAGE_FORWARD)
		seen_add(w, m->b, m->n);
	return w->last.verdict;
}

/* ---- messages the scenarios use --------------------------------------------------------------- */

static const struct mb *query(struct mb *m, const char *sql)
{
	mb_start(m, 'Q');
	mb_str(m, sql);
	return mb_end(m);
}

struct col {
	const char *name;
	uint32_t table, type;
	int16_t att;
	int32_t typmod;
	int16_t fmt;
};

static const struct mb *rowdesc(struct mb *m, const struct col *c, unsigned n)
{
	mb_start(m, 'T');
	mb_u16(m, (uint16_t)n);
	for (unsigned i = 0; i < n; i++) {
		mb_str(m, c[i].name);
		mb_u32(m, c[i].table);
		mb_u16(m, (uint16_t)c[i].att);
		mb_u32(m, c[i].type);
		mb_u16(m, 0xffff);
		mb_u32(m, (uint32_t)c[i].typmod);
		mb_u16(m, (uint16_t)c[i].fmt);
	}
	return mb_end(m);
}

/* A DataRow of text values (NULL pointer: SQL NULL). */
static const struct mb *datarow(struct mb *m, const char *const *v, unsigned n)
{
	mb_start(m, 'D');
	mb_u16(m, (uint16_t)n);
	for (unsigned i = 0; i < n; i++) {
		if (!v[i]) {
			mb_u32(m, UINT32_MAX);
			continue;
		}
		mb_u32(m, (uint32_t)strlen(v[i]));
		mb_bytes(m, v[i], strlen(v[i]));
	}
	return mb_end(m);
}

static const struct mb *simple(struct mb *m, uint8_t type, const char *s)
{
	mb_start(m, type);
	if (s)
		mb_str(m, s);
	return mb_end(m);
}

static const struct mb *ready(struct mb *m)
{
	mb_start(m, 'Z');
	mb_u8(m, 'I');
	return mb_end(m);
}

static const struct mb *m_parse(struct mb *m, const char *name, const char *sql)
{
	mb_start(m, 'P');
	mb_str(m, name);
	mb_str(m, sql);
	mb_u16(m, 0);
	return mb_end(m);
}

static const struct mb *m_bind(struct mb *m, const char *portal, const char *stmt, int16_t fmt)
{
	mb_start(m, 'B');
	mb_str(m, portal);
	mb_str(m, stmt);
	mb_u16(m, 0);
	mb_u16(m, 0);
	mb_u16(m, 1);
	mb_u16(m, (uint16_t)fmt);
	return mb_end(m);
}

static const struct mb *describe(struct mb *m, uint8_t what, const char *name)
{
	mb_start(m, 'D');
	mb_u8(m, what);
	mb_str(m, name);
	return mb_end(m);
}

static const struct mb *m_execute(struct mb *m, const char *portal)
{
	mb_start(m, 'E');
	mb_str(m, portal);
	mb_u32(m, 0);
	return mb_end(m);
}

static const struct mb *empty(struct mb *m, uint8_t type)
{
	mb_start(m, type);
	return mb_end(m);
}

/* Does the client's view contain these bytes? */
static bool seen_has(const struct world *w, const char *s)
{
	return memmem(w->seen, w->seen_n, s, strlen(s)) != NULL;
}

/* Every message the client got frames cleanly, back to back. */
static void assert_seen_frames(const struct world *w)
{
	size_t off = 0;

	while (off < w->seen_n) {
		struct proto_msg m;

		assert_int_equal(proto_frame(w->seen + off, w->seen_n - off, PROTO_BACKEND,
					     PROTO_MAX_BODY, &m),
				 PROTO_OK);
		assert_true(PROTO_HEADER_LEN + m.body_len <= w->seen_n - off);
		assert_int_equal(proto_validate(PROTO_BACKEND, &(struct proto_msg){m.type, m.body_len, w->seen + off + 5}), PROTO_OK);
		off += PROTO_HEADER_LEN + m.body_len;
	}
}

static const struct col customer_cols[] = {
	{"id", CUSTOMERS, 23, 1, -1, 0},      {"name", CUSTOMERS, 25, 2, -1, 0},
	{"ssn", CUSTOMERS, 25, 3, -1, 0},     {"card", CUSTOMERS, 1043, 4, 23, 0},
	{"email", CUSTOMERS, OID_CITEXT, 5, -1, 0}, {"dob", CUSTOMERS, 1082, 6, -1, 0},
};
static const char *const alice[] = {"1", "Alice", "123-45-6789", "4111111111111111",
				    "alice@example.com", "1985-07-23"};

/* ---- scenarios ---------------------------------------------------------------------------------- */

static void test_unmasked_identity_costs_nothing(void **state)
{
	struct world w;
	struct mb m;

	world_start(&w, "app");
	assert_false(stage_chain_wants(&w.ch, PROTO_FRONTEND, 'Q'));
	assert_false(stage_chain_wants(&w.ch, PROTO_BACKEND, 'T'));
	assert_false(stage_chain_streams(&w.ch, 'D'));
	be(&w, datarow(&m, alice, 6));
	assert_true(seen_has(&w, "123-45-6789")); /* clear, as it should be */
	world_end(&w);
}

static void test_simple_query_masks_every_strategy(void **state)
{
	struct world w;
	struct mb m;
	const char *const nulls[] = {"2", NULL, NULL, NULL, NULL, NULL};

	nfacts = 0;
	fact("SELECT * FROM customers", MASK_REFS_MASKED);
	world_start(&w, "analyst");
	assert_true(stage_chain_wants(&w.ch, PROTO_FRONTEND, 'Q'));
	masked_calls = 0;
	assert_int_equal(fe(&w, query(&m, "SELECT * FROM customers")), STAGE_FORWARD);
	assert_int_equal(masked_calls, 0); /* reported with its plan, not before */
	assert_int_equal(be(&w, rowdesc(&m, customer_cols, 6)), STAGE_FORWARD);
	/* the audit hook: one report for the result, with the request it answers */
	assert_int_equal(masked_calls, 1);
	assert_int_equal(masked_request, 1);
	assert_int_equal(masked_n, 4);
	assert_string_equal(masked_first, "public.customers.ssn");
	assert_true(stage_chain_streams(&w.ch, 'D'));
	assert_int_equal(be(&w, datarow(&m, alice, 6)), STAGE_FORWARD);
	assert_int_equal(be(&w, datarow(&m, nulls, 6)), STAGE_FORWARD);
	assert_int_equal(be(&w, simple(&m, 'C', "SELECT 2")), STAGE_FORWARD);
	assert_int_equal(be(&w, ready(&m)), STAGE_FORWARD);
	assert_false(seen_has(&w, "123-45-6789"));
	assert_false(seen_has(&w, "4111111111111111"));
	assert_false(seen_has(&w, "alice@"));
	assert_false(seen_has(&w, "07-23"));
	assert_true(seen_has(&w, "XXXXXXX6789"));
	assert_true(seen_has(&w, "xxxxx@example.com"));
	assert_true(seen_has(&w, "1985-01-01"));
	assert_true(seen_has(&w, "Alice")); /* name is not masked */
	assert_seen_frames(&w);
	{
		char sum[512];

		mask_stage_summary(stage_chain_state(&w.ch, 0), sum, sizeof(sum));
		assert_string_equal(sum, "public.customers.ssn=partial-last-4,public.customers.card=hash,"
					 "public.customers.email=email,public.customers.dob=date");
	}
	world_end(&w);
}

static void test_computed_columns(void **state)
{
	struct world w;
	struct mb m;
	static const struct col computed[] = {{"upper", 0, 25, 0, -1, 0}};
	static const struct col view[] = {{"ssn", CUSTOMERS_V, 25, 2, -1, 0}};
	const char *const v[] = {"123-45-6789"};

	nfacts = 0;
	fact("SELECT upper(ssn) FROM customers", MASK_REFS_MASKED);
	fact("SELECT upper('x')", MASK_REFS_NONE);
	fact("SELECT ssn FROM customers_v", MASK_REFS_NONE); /* a classifier that misses views */
	world_start(&w, "analyst");
	/* references masked data: masked whole */
	fe(&w, query(&m, "SELECT upper(ssn) FROM customers"));
	be(&w, rowdesc(&m, computed, 1));
	be(&w, datarow(&m, v, 1));
	be(&w, simple(&m, 'C', "SELECT 1"));
	be(&w, ready(&m));
	assert_false(seen_has(&w, "123-45-6789"));
	/* a view over a masked column: the catalog knows, whatever the classifier says */
	fe(&w, query(&m, "SELECT ssn FROM customers_v"));
	be(&w, rowdesc(&m, view, 1));
	be(&w, datarow(&m, v, 1));
	be(&w, simple(&m, 'C', "SELECT 1"));
	be(&w, ready(&m));
	assert_false(seen_has(&w, "123-45-6789"));
	/* unknown to the classifier: masked whole */
	fe(&w, query(&m, "SELECT md5(ssn) FROM customers"));
	be(&w, rowdesc(&m, computed, 1));
	be(&w, datarow(&m, v, 1));
	be(&w, simple(&m, 'C', "SELECT 1"));
	be(&w, ready(&m));
	assert_false(seen_has(&w, "123-45-6789"));
	/* surely clean: passes, and DataRow is not even streamed */
	fe(&w, query(&m, "SELECT upper('x')"));
	be(&w, rowdesc(&m, computed, 1));
	assert_false(stage_chain_streams(&w.ch, 'D'));
	be(&w, datarow(&m, v, 1));
	assert_true(seen_has(&w, "123-45-6789"));
	assert_seen_frames(&w);
	world_end(&w);
}

/* FETCH from a cursor says nothing about what the cursor reads: its DECLARE does. */
static void test_cursor_keeps_its_definitions_refs(void **state)
{
	struct world w;
	struct mb m;
	static const struct col computed[] = {{"upper", 0, 25, 0, -1, 0}};
	const char *const v[] = {"123-45-6789"};
	struct mask_stmt_info *f;

	nfacts = 0;
	f = fact("DECLARE c CURSOR WITH HOLD FOR SELECT upper(ssn) FROM customers", MASK_REFS_MASKED);
	f->name_use = MASK_NAME_DEFINES;
	strcpy(f->name, "c");
	f->no_rows = true;
	f = fact("FETCH ALL FROM c", MASK_REFS_NONE); /* a naive classifier */
	f->name_use = MASK_NAME_USES;
	strcpy(f->name, "c");
	world_start(&w, "analyst");
	fe(&w, query(&m, "DECLARE c CURSOR WITH HOLD FOR SELECT upper(ssn) FROM customers"));
	be(&w, simple(&m, 'C', "DECLARE CURSOR"));
	be(&w, ready(&m));
	fe(&w, query(&m, "FETCH ALL FROM c"));
	be(&w, rowdesc(&m, computed, 1));
	be(&w, datarow(&m, v, 1));
	be(&w, simple(&m, 'C', "FETCH 1"));
	be(&w, ready(&m));
	assert_false(seen_has(&w, "123-45-6789"));
	world_end(&w);
}

static void test_extended_binary_and_portals(void **state)
{
	struct world w;
	struct mb m, row;
	static const struct col two[] = {{"id", CUSTOMERS, 23, 1, -1, 0},
					 {"ssn", CUSTOMERS, 25, 3, -1, 0}};

	nfacts = 0;
	fact("SELECT id, ssn FROM customers", MASK_REFS_MASKED);
	world_start(&w, "analyst");
	/* describe the statement once, execute it twice in binary, the second time undescribed */
	fe(&w, m_parse(&m, "s1", "SELECT id, ssn FROM customers"));
	fe(&w, describe(&m, 'S', "s1"));
	fe(&w, empty(&m, 'S'));
	be(&w, empty(&m, '1'));
	mb_start(&m, 't');
	mb_u16(&m, 0);
	be(&w, mb_end(&m));
	be(&w, rowdesc(&m, two, 2));
	be(&w, ready(&m));
	for (int round = 0; round < 2; round++) {
		assert_int_equal(fe(&w, m_bind(&m, "", "s1", 1)), STAGE_FORWARD);
		assert_int_equal(fe(&w, m_execute(&m, "")), STAGE_FORWARD);
		fe(&w, empty(&m, 'S'));
		be(&w, empty(&m, '2'));
		mb_start(&row, 'D');
		mb_u16(&row, 2);
		mb_u32(&row, 4);
		mb_u32(&row, 7);
		mb_u32(&row, 11);
		mb_bytes(&row, "987-65-4321", 11);
		assert_int_equal(be(&w, mb_end(&row)), STAGE_FORWARD);
		be(&w, simple(&m, 'C', "SELECT 1"));
		be(&w, ready(&m));
	}
	assert_false(seen_has(&w, "987-65-4321"));
	assert_true(seen_has(&w, "XXXXXXX4321"));
	assert_seen_frames(&w);
	world_end(&w);
}

static void test_undescribed_portal_is_refused(void **state)
{
	struct world w;
	struct mb m;

	nfacts = 0;
	world_start(&w, "analyst");
	fe(&w, m_parse(&m, "", "SELECT ssn FROM customers"));
	fe(&w, m_bind(&m, "", "", 0));
	assert_int_equal(fe(&w, m_execute(&m, "")), STAGE_REJECT);
	assert_string_equal(w.last.sqlstate, "0A000");
	world_end(&w);
}

/* A Parse the server refuses must not change what the name means. */
static void test_refused_parse_keeps_the_old_statement(void **state)
{
	struct world w;
	struct mb m, row;
	static const struct col computed[] = {{"x", 0, 25, 0, -1, 0}};
	const char *const v[] = {"123-45-6789"};
	static const char err_dup[] = "prepared statement \"s1\" already exists";

	nfacts = 0;
	fact("SELECT ssn || '' FROM customers", MASK_REFS_MASKED);
	fact("SELECT 'harmless' || ''", MASK_REFS_NONE);
	world_start(&w, "analyst");
	fe(&w, m_parse(&m, "s1", "SELECT ssn || '' FROM customers"));
	fe(&w, describe(&m, 'S', "s1"));
	fe(&w, empty(&m, 'S'));
	be(&w, empty(&m, '1'));
	mb_start(&m, 't');
	mb_u16(&m, 0);
	be(&w, mb_end(&m));
	be(&w, rowdesc(&m, computed, 1));
	be(&w, ready(&m));
	/* the attack: redefine s1 as something the classifier calls clean */
	fe(&w, m_parse(&m, "s1", "SELECT 'harmless' || ''"));
	fe(&w, empty(&m, 'S'));
	mb_start(&m, 'E');
	mb_u8(&m, 'S');
	mb_str(&m, "ERROR");
	mb_u8(&m, 'C');
	mb_str(&m, "42P05");
	mb_u8(&m, 'M');
	mb_str(&m, err_dup);
	mb_u8(&m, 0);
	be(&w, mb_end(&m));
	be(&w, ready(&m));
	/* s1 is still the masked statement on the server */
	fe(&w, m_bind(&m, "", "s1", 0));
	assert_int_equal(fe(&w, m_execute(&m, "")), STAGE_FORWARD);
	fe(&w, empty(&m, 'S'));
	be(&w, empty(&m, '2'));
	be(&w, datarow(&row, v, 1));
	be(&w, simple(&m, 'C', "SELECT 1"));
	be(&w, ready(&m));
	assert_false(seen_has(&w, "123-45-6789"));
	assert_true(seen_has(&w, err_dup)); /* 42 is a class whose text is kept */
	world_end(&w);
}

static void test_scrubbing(void **state)
{
	struct world w;
	struct mb m;

	nfacts = 0;
	world_start(&w, "analyst");
	/* invalid input syntax echoes the value */
	mb_start(&m, 'E');
	mb_u8(&m, 'S');
	mb_str(&m, "ERROR");
	mb_u8(&m, 'C');
	mb_str(&m, "22P02");
	mb_u8(&m, 'M');
	mb_str(&m, "invalid input syntax for type integer: \"123-45-6789\"");
	mb_u8(&m, 'P');
	mb_str(&m, "8");
	mb_u8(&m, 0);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_REWRITE);
	/* unique violation's DETAIL */
	mb_start(&m, 'E');
	mb_u8(&m, 'S');
	mb_str(&m, "ERROR");
	mb_u8(&m, 'C');
	mb_str(&m, "23505");
	mb_u8(&m, 'M');
	mb_str(&m, "duplicate key value violates unique constraint \"c_ssn_key\"");
	mb_u8(&m, 'D');
	mb_str(&m, "Key (ssn)=(987-65-4321) already exists.");
	mb_u8(&m, 'n');
	mb_str(&m, "c_ssn_key");
	mb_u8(&m, 0);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_REWRITE);
	/* a notification payload */
	mb_start(&m, 'A');
	mb_u32(&m, 77);
	mb_str(&m, "audit");
	mb_str(&m, "ssn=555-12-3456");
	assert_int_equal(be(&w, mb_end(&m)), STAGE_REWRITE);
	/* application_name set from data; the client's own value passes */
	mb_start(&m, 'S');
	mb_str(&m, "application_name");
	mb_str(&m, "111-22-3333");
	assert_int_equal(be(&w, mb_end(&m)), STAGE_REWRITE);
	mb_start(&m, 'S');
	mb_str(&m, "application_name");
	mb_str(&m, "report-tool");
	assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
	mb_start(&m, 'S');
	mb_str(&m, "TimeZone");
	mb_str(&m, "UTC");
	assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
	assert_false(seen_has(&w, "123-45-6789"));
	assert_false(seen_has(&w, "987-65-4321"));
	assert_false(seen_has(&w, "555-12-3456"));
	assert_false(seen_has(&w, "111-22-3333"));
	assert_true(seen_has(&w, "c_ssn_key"));
	assert_true(seen_has(&w, "22P02"));
	assert_true(seen_has(&w, "report-tool"));
	assert_seen_frames(&w);
	world_end(&w);
}

static void test_copy_text_is_masked(void **state)
{
	struct world w;
	struct mb m;
	struct mask_stmt_info *f;
	static const char rows[] = "1\tAlice\t123-45-6789\t4111111111111111\talice@example.com\t"
				   "1985-07-23\n";

	nfacts = 0;
	f = fact("COPY customers TO STDOUT", MASK_REFS_MASKED);
	f->copy_to = true;
	strcpy(f->copy_table, "customers");
	f->copy_opts_known = true;
	mask_copy_opts_default(&f->copy_opts, MASK_COPY_TEXT);
	world_start(&w, "analyst");
	assert_int_equal(fe(&w, query(&m, "COPY customers TO STDOUT")), STAGE_FORWARD);
	mb_start(&m, 'H');
	mb_u8(&m, 0);
	mb_u16(&m, 6);
	for (int i = 0; i < 6; i++)
		mb_u16(&m, 0);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
	assert_true(stage_chain_streams(&w.ch, 'd'));
	/* the row split across two CopyData messages */
	mb_start(&m, 'd');
	mb_bytes(&m, rows, 20);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
	mb_start(&m, 'd');
	mb_bytes(&m, rows + 20, sizeof(rows) - 1 - 20);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
	assert_int_equal(be(&w, empty(&m, 'c')), STAGE_FORWARD);
	be(&w, simple(&m, 'C', "COPY 1"));
	be(&w, ready(&m));
	assert_false(seen_has(&w, "123-45-6789"));
	assert_false(seen_has(&w, "alice@"));
	assert_true(seen_has(&w, "XXXXXXX6789"));
	assert_seen_frames(&w);
	world_end(&w);
}

static void test_unmaskable_requests_are_refused(void **state)
{
	struct world w;
	struct mb m;
	struct mask_stmt_info *f;

	nfacts = 0;
	f = fact("COPY (SELECT ssn FROM customers) TO STDOUT", MASK_REFS_MASKED);
	f->copy_to = true;
	f->copy_query = true;
	f->copy_opts_known = true;
	world_start(&w, "analyst");
	assert_int_equal(fe(&w, query(&m, "COPY (SELECT ssn FROM customers) TO STDOUT")),
			 STAGE_REJECT);
	assert_string_equal(w.last.sqlstate, "0A000");
	/* the fastpath function call */
	mb_start(&m, 'F');
	mb_u32(&m, 2275);
	mb_u16(&m, 0);
	mb_u16(&m, 0);
	mb_u16(&m, 0);
	assert_int_equal(fe(&w, mb_end(&m)), STAGE_REJECT);
	assert_string_equal(w.last.sqlstate, "42501");
	/* a COPY nobody analysed: closed at CopyOutResponse, never passed */
	assert_int_equal(fe(&w, query(&m, "COPY customers TO STDOUT WITH (FORMAT csv)")),
			 STAGE_FORWARD);
	mb_start(&m, 'H');
	mb_u8(&m, 0);
	mb_u16(&m, 1);
	mb_u16(&m, 0);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_CLOSE);
	world_end(&w);
}

/*
 * A result that masks nothing leaves no server message type streamed, so the relay can send
 * its rows as they are (it copies every message through its stream buffer while a stage
 * streams any type); CopyData outside a COPY is then seen whole, and still ends the session.
 */
static void test_unmasked_result_streams_nothing(void **state)
{
	struct world w;
	struct mb m;
	static const struct col one[] = {{"name", CUSTOMERS, 25, 2, -1, 0}};
	const char *v[] = {"Alice"};

	nfacts = 0;
	world_start(&w, "analyst");
	assert_true(stage_chain_streams(&w.ch, 'D')); /* no result known yet: fail safe */
	assert_false(stage_chain_streams(&w.ch, 'd'));
	fe(&w, query(&m, "SELECT name FROM customers"));
	assert_int_equal(be(&w, rowdesc(&m, one, 1)), STAGE_FORWARD);
	assert_false(stage_chain_streams_any(&w.ch));
	assert_int_equal(be(&w, datarow(&m, v, 1)), STAGE_FORWARD);
	assert_true(seen_has(&w, "Alice"));
	mb_start(&m, 'd');
	mb_bytes(&m, "1\tAlice\n", 8);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_CLOSE);
	assert_string_equal(w.last.sqlstate, "XX000");
	world_end(&w);
}

static void test_server_rows_that_cannot_be_masked_close(void **state)
{
	struct world w;
	struct mb m;
	static const struct col two[] = {{"name", CUSTOMERS, 25, 2, -1, 0},
					 {"ssn", CUSTOMERS, 25, 3, -1, 0}};
	static char big[8192];
	const char *v[] = {big, "123-45-6789"};

	memset(big, 'a', sizeof(big) - 1);
	nfacts = 0;
	world_start(&w, "analyst");
	fe(&w, query(&m, "SELECT name, ssn FROM customers"));
	be(&w, rowdesc(&m, two, 2));
	/* the masked column lies beyond the 4 KiB lookahead */
	assert_int_equal(be(&w, datarow(&m, v, 2)), STAGE_CLOSE);
	assert_string_equal(w.last.sqlstate, "54000");
	assert_false(seen_has(&w, "123-45-6789"));
	world_end(&w);

	world_start(&w, "analyst");
	fe(&w, query(&m, "SELECT name, ssn FROM customers"));
	be(&w, rowdesc(&m, two, 2));
	v[0] = "x";
	v[1] = "123-45-6789";
	/* three columns where two were described */
	mb_start(&m, 'D');
	mb_u16(&m, 3);
	for (int i = 0; i < 3; i++) {
		mb_u32(&m, 1);
		mb_u8(&m, 'z');
	}
	assert_int_equal(be(&w, mb_end(&m)), STAGE_CLOSE);
	assert_string_equal(w.last.sqlstate, "08P01");
	world_end(&w);

	/* a row for no result at all */
	world_start(&w, "analyst");
	assert_int_equal(be(&w, datarow(&m, v, 2)), STAGE_CLOSE);
	world_end(&w);
}

static void test_deny_profile_and_catalog_not_ready(void **state)
{
	struct world w;
	struct mb m;
	static const struct col computed[] = {{"x", 0, 25, 0, -1, 0}};
	const char *const v[] = {"123-45-6789"};

	nfacts = 0;
	fact("SELECT ssn || 'x' FROM customers", MASK_REFS_MASKED);
	world_start(&w, "strict");
	fe(&w, query(&m, "SELECT ssn || 'x' FROM customers"));
	be(&w, rowdesc(&m, computed, 1));
	be(&w, datarow(&m, v, 1)); /* too late to refuse a simple Query: masked whole */
	assert_false(seen_has(&w, "123-45-6789"));
	world_end(&w);

	/* no catalog for the current policy: statements wait, nothing passes unmasked */
	mask_catalog_publish(NULL);
	world_start(&w, "analyst");
	assert_int_equal(fe(&w, query(&m, "SELECT ssn FROM customers")), STAGE_REJECT);
	assert_string_equal(w.last.sqlstate, "55000");
	world_end(&w);
	build_catalog();
}

static void test_ddl_asks_for_a_refresh(void **state)
{
	struct world w;
	struct mb m;

	nfacts = 0;
	stale_calls = 0;
	world_start(&w, "analyst");
	fe(&w, query(&m, "ALTER TABLE customers ADD COLUMN x int"));
	be(&w, simple(&m, 'C', "ALTER TABLE"));
	be(&w, ready(&m));
	assert_int_equal(stale_calls, 1);
	world_end(&w);
}


/* One computed column of sql's result, carrying marker: did the client see it clear? */
static bool computed_clear(struct world *w, const char *sql, const char *marker)
{
	static const struct col computed[] = {{"f", 0, 25, 0, -1, 0}};
	const char *const v[] = {marker};
	struct mb m;

	fe(w, query(&m, sql));
	be(w, rowdesc(&m, computed, 1));
	be(w, datarow(&m, v, 1));
	be(w, simple(&m, 'C', "SELECT 1"));
	be(w, ready(&m));
	return seen_has(w, marker);
}

/*
 * Computed columns pass clear only when every name the statement uses is clean in the
 * catalog: clean tables (qualified exactly, or unqualified and clean in every schema) and
 * safe built-ins nobody shadows; anything else (a masked table, a view, an unknown name, a
 * shadowed or unlisted function, a qualified name elsewhere) masks them whole.
 */
static void test_computed_columns_of_clean_names(void **state)
{
	static const struct {
		const char *sql;
		bool clear;
	} cases[] = {
		{"SELECT count(*) FROM orders", true},
		{"SELECT count(*) FROM public.orders", true},
		{"SELECT pg_catalog.count(*) FROM orders o JOIN pg_class c ON true", true},
		{"SELECT pg_backend_pid()", true},
		{"SELECT upper('x'), now(), version()", true},
		{"SELECT count(*) FROM a.dup", true},
		{"SELECT upper(ssn) FROM customers", false},
		{"SELECT count(*) FROM customers_v", false},
		{"SELECT count(*) FROM dup", false},          /* b.dup is not clean */
		{"SELECT count(*) FROM b.orders", false},     /* qualified: exact only */
		{"SELECT count(*) FROM maskdb.public.orders", false},
		{"SELECT count(*) FROM tmp_new", false},      /* not in the catalog */
		{"SELECT max(id) FROM orders", false},        /* shadowed outside pg_catalog */
		{"SELECT public.count(*) FROM orders", false},
		{"SELECT current_setting('x.y')", false},    /* set_config() can fill it */
		{"SELECT query_to_xml('SELECT ssn FROM customers', true, true, '')", false},
		{"SELECT customer_ssn(1)", false},
		{"SELECT count(*) FROM orders WHERE id IN (SELECT id FROM customers)", false},
	};
	char marker[32];
	struct world w;

	nfacts = 0;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		fact_classified(cases[i].sql);
	build_catalog(); /* read after any DDL of earlier tests */
	world_start(&w, "analyst");
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(marker, sizeof(marker), "secret-%zu", i);
		if (computed_clear(&w, cases[i].sql, marker) != cases[i].clear)
			fail_msg("%s: want %s", cases[i].sql, cases[i].clear ? "clear" : "masked");
	}
	world_end(&w);
}

/*
 * DDL by a masked session may shadow a clean name (CREATE TEMP VIEW orders over customers,
 * a function named like a safe one): until a catalog read after its transaction ended,
 * nothing counts as clean, SELECT 1 included; an operator or cast outside pg_catalog makes
 * no statement clean at all.
 */
static void test_ddl_and_code_hooks_distrust_names(void **state)
{
	static const struct col new_view[] = {{"ssn", 99999, 25, 1, -1, 0}};
	static const struct col clean_col[] = {{"id", 17001, 25, 1, -1, 0}};
	const char *const v_new[] = {"view-ssn"}, *const v_clean[] = {"order-id"};
	struct world w;
	struct mb m;

	nfacts = 0;
	stale_calls = 0;
	fact_classified("SELECT count(*) FROM orders");
	fact_classified("SELECT 1");
	fact_classified("BEGIN");
	fact_classified("CREATE TEMP VIEW orders AS SELECT ssn FROM customers");
	fact_classified("COMMIT");
	fact_classified("SELECT ssn FROM orders");
	fact_classified("SELECT id FROM public.orders");
	build_catalog();
	world_start(&w, "analyst");
	assert_true(computed_clear(&w, "SELECT count(*) FROM orders", "before"));
	fe(&w, query(&m, "BEGIN"));
	be(&w, simple(&m, 'C', "BEGIN"));
	mb_start(&m, 'Z');
	mb_u8(&m, 'T');
	be(&w, mb_end(&m));
	fe(&w, query(&m, "CREATE TEMP VIEW orders AS SELECT ssn FROM customers"));
	be(&w, simple(&m, 'C', "CREATE VIEW"));
	mb_start(&m, 'Z');
	mb_u8(&m, 'T');
	be(&w, mb_end(&m));
	assert_int_equal(stale_calls, 0); /* not committed: a read now would not see it */
	assert_false(computed_clear(&w, "SELECT count(*) FROM orders", "in-transaction"));
	/* the new view's own columns: a relation the catalog does not list */
	fe(&w, query(&m, "SELECT ssn FROM orders"));
	be(&w, rowdesc(&m, new_view, 1));
	be(&w, datarow(&m, v_new, 1));
	be(&w, simple(&m, 'C', "SELECT 1"));
	mb_start(&m, 'Z');
	mb_u8(&m, 'T');
	be(&w, mb_end(&m));
	assert_false(seen_has(&w, "view-ssn"));
	/* a listed clean table's columns still pass */
	fe(&w, query(&m, "SELECT id FROM public.orders"));
	be(&w, rowdesc(&m, clean_col, 1));
	be(&w, datarow(&m, v_clean, 1));
	be(&w, simple(&m, 'C', "SELECT 1"));
	mb_start(&m, 'Z');
	mb_u8(&m, 'T');
	be(&w, mb_end(&m));
	assert_true(seen_has(&w, "order-id"));
	fe(&w, query(&m, "COMMIT"));
	be(&w, simple(&m, 'C', "COMMIT"));
	be(&w, ready(&m));
	assert_int_equal(stale_calls, 1);
	/* the catalog the session holds was read before the commit */
	assert_false(computed_clear(&w, "SELECT count(*) FROM orders", "stale"));
	assert_false(computed_clear(&w, "SELECT 1", "stale-1"));
	build_catalog(); /* read again: trusted from the next statement on */
	assert_true(computed_clear(&w, "SELECT count(*) FROM orders", "fresh"));
	fe(&w, query(&m, "SELECT ssn FROM orders"));
	be(&w, rowdesc(&m, new_view, 1));
	be(&w, datarow(&m, (const char *const[]){"unlisted-later"}, 1));
	be(&w, simple(&m, 'C', "SELECT 1"));
	be(&w, ready(&m));
	assert_true(seen_has(&w, "unlisted-later")); /* the catalog says: no masked data */
	build_catalog_hooks("true");
	assert_false(computed_clear(&w, "SELECT 1", "hooks-1"));
	assert_false(computed_clear(&w, "SELECT count(*) FROM orders", "hooks"));
	build_catalog();
	world_end(&w);
}

/* An SQL EXECUTE's arguments are expressions of their own: EXECUTE p(customer_ssn(1)) runs
 * a function the PREPARE never named. */
static void test_execute_arguments_count(void **state)
{
	struct world w;
	struct mb m;

	nfacts = 0;
	fact_classified("PREPARE p(text) AS SELECT $1");
	fact_classified("EXECUTE p('x')");
	fact_classified("EXECUTE p(customer_ssn(1))");
	build_catalog();
	world_start(&w, "analyst");
	fe(&w, query(&m, "PREPARE p(text) AS SELECT $1"));
	be(&w, simple(&m, 'C', "PREPARE"));
	be(&w, ready(&m));
	assert_true(computed_clear(&w, "EXECUTE p('x')", "literal"));
	assert_false(computed_clear(&w, "EXECUTE p(customer_ssn(1))", "123-45-6789"));
	world_end(&w);
}

/* A policy double: refuses any Query whose text starts with "DENY". */
static void deny_frontend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	const char *sql;

	if (proto_read_query(m, &sql) == PROTO_OK && !strncmp(sql, "DENY", 4))
		stage_result_set(r, STAGE_REJECT, "42501", "deny", "denied by policy");
}

static const struct stage_ops deny_stage = {
	.name = "policy-double",
	.frontend_whole = {{0, 1ull << ('Q' - 64)}}, /* 'Q' is 81: word 1, bit 17 */
	.frontend = deny_frontend,
};

/*
 * A Query refused before masking still gets its ReadyForQuery from the server (the relay
 * sends a poison and hides the error); it must not be taken for the next pipelined Query's.
 */
static void test_refused_query_keeps_the_queue_in_order(void **state)
{
	struct world w;
	struct mb m;
	static const struct col two[] = {{"id", CUSTOMERS, 23, 1, -1, 0},
					 {"ssn", CUSTOMERS, 25, 3, -1, 0}};
	const char *const v[] = {"1", "123-45-6789"};

	nfacts = 0;
	fact("SELECT id, ssn FROM customers", MASK_REFS_MASKED);
	front_stage = &deny_stage;
	world_start(&w, "analyst");
	assert_int_equal(fe(&w, query(&m, "DENY this")), STAGE_REJECT);
	assert_int_equal(fe(&w, query(&m, "SELECT id, ssn FROM customers")), STAGE_FORWARD);
	assert_int_equal(be(&w, ready(&m)), STAGE_FORWARD); /* the refused one's */
	assert_int_equal(be(&w, rowdesc(&m, two, 2)), STAGE_FORWARD);
	assert_int_equal(be(&w, datarow(&m, v, 2)), STAGE_FORWARD);
	assert_int_equal(be(&w, simple(&m, 'C', "SELECT 1")), STAGE_FORWARD);
	assert_int_equal(be(&w, ready(&m)), STAGE_FORWARD);
	assert_false(seen_has(&w, "123-45-6789"));
	assert_true(seen_has(&w, "XXXXXXX6789"));
	world_end(&w);
	front_stage = NULL;
}

/* ---- real server bytes ------------------------------------------------------------------------ */

/*
 * The captures of data/mask/capture/ (tests/integration/capture_mask.py): a real PostgreSQL
 * 15 answering the masking fixture's statements, replayed message by message through a
 * masked session whose catalog is the one the same server resolved. Nothing of the
 * fixture's sensitive values may reach the client, and every message must still frame.
 */
static uint8_t *read_file(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	uint8_t *b = malloc(1u << 20);

	assert_non_null(f);
	*n = fread(b, 1, 1u << 20, f);
	fclose(f);
	return b;
}

static struct mask_policy *capture_policy(const struct mask_profile **out)
{
	FILE *f = fopen("../integration/masking_policy.txt", "r");
	struct mask_policy *mp = mask_policy_new();
	struct mask_profile *p;
	char line[256], err[256];

	assert_non_null(f);
	assert_int_equal(mask_policy_add_profile(mp, "capture", &p), 0);
	while (fgets(line, sizeof(line), f)) {
		char *eq = strrchr(line, '=');

		if (!eq || line[0] == '#')
			continue;
		*eq = '\0';
		eq[strcspn(eq + 1, "\n") + 1] = '\0';
		assert_int_equal(mask_profile_add(p, line, eq + 1, err, sizeof(err)), 0);
	}
	fclose(f);
	mask_policy_seal(mp);
	*out = p;
	return mp;
}

static const struct mask_profile *capture_profile;

static const struct mask_profile *capture_source(void *arg, const struct stage_ctx *ctx)
{
	mask_policy_get(mask_profile_policy(capture_profile));
	return capture_profile;
}

/* Every backend message of a capture file through the session. */
static void replay(struct world *w, const char *name)
{
	char path[256];
	size_t n, off = 0;
	uint8_t *raw;

	snprintf(path, sizeof(path), "data/mask/capture/%s.be", name);
	raw = read_file(path, &n);
	while (off < n) {
		struct proto_msg pm;
		struct mb m;

		assert_int_equal(proto_frame(raw + off, n - off, PROTO_BACKEND, PROTO_MAX_BODY, &pm),
				 PROTO_OK);
		memcpy(m.b, raw + off, PROTO_HEADER_LEN + pm.body_len);
		m.n = PROTO_HEADER_LEN + pm.body_len;
		assert_int_not_equal(be(w, &m), STAGE_CLOSE);
		off += m.n;
	}
	be_flush(w);
	free(raw);
}

/* What the client saw in the last run of test_real_server_captures. */
static uint8_t *captured_seen;
static size_t captured_seen_n;

static void test_real_server_captures(void **state)
{
	static const char *const secrets[] = {
		"123-45-6789", "987-65-4321", "111-22-3333", "555-12-3456", "4111111111111111",
		"5500000000000004", "340000000000009", "alice@example.com", "Bob@Example.org",
		"dan+tag@", "+1 (555) 123-4567", "7946 0018", "1985-07-23", "1990-01-31",
		"2000-02-29", "1234.56", "new customer", "vip",
	};
	struct mask_policy *mp;
	struct mask_catalog_builder *b;
	struct mask_catalog *c;
	struct mask_stage_config cfg = {.source = {.profile = capture_source, .analyse = src_analyse},
					.row_lookahead = 4096};
	struct mask_stmt_info *f;
	struct world w;
	struct mb m;
	size_t n, off = 0;
	uint8_t *raw;

	mp = capture_policy(&capture_profile);
	b = mask_catalog_builder_new(mp);
	raw = read_file("data/mask/capture/catalog.be", &n);
	while (off < n) {
		struct proto_msg pm;

		assert_int_equal(proto_frame(raw + off, n - off, PROTO_BACKEND, PROTO_MAX_BODY, &pm),
				 PROTO_OK);
		if (pm.type == 'T')
			assert_int_equal(mask_catalog_builder_rowdesc(b, &pm), 0);
		if (pm.type == 'D')
			assert_int_equal(mask_catalog_builder_row(b, &pm), 0);
		off += PROTO_HEADER_LEN + pm.body_len;
	}
	free(raw);
	assert_int_equal(mask_catalog_builder_finish(b, &c), 0);
	mask_catalog_publish(c);
	assert_int_equal(mask_stage_configure(&cfg), 0);

	nfacts = 0;
	fact("SELECT * FROM customers ORDER BY id", MASK_REFS_MASKED);
	fact("SELECT * FROM customers_archive", MASK_REFS_MASKED);
	fact("SELECT * FROM customer_ssn_view ORDER BY id", MASK_REFS_NONE);
	fact("SELECT upper(ssn), id::text || ssn FROM customers ORDER BY id", MASK_REFS_MASKED);
	f = fact("COPY customers TO STDOUT", MASK_REFS_MASKED);
	f->copy_to = f->copy_opts_known = true;
	strcpy(f->copy_table, "customers");
	mask_copy_opts_default(&f->copy_opts, MASK_COPY_TEXT);
	f = fact("COPY customers TO STDOUT (FORMAT csv, HEADER)", MASK_REFS_MASKED);
	f->copy_to = f->copy_opts_known = true;
	strcpy(f->copy_table, "customers");
	mask_copy_opts_default(&f->copy_opts, MASK_COPY_CSV);
	f->copy_opts.header = true;
	f = fact("COPY customers TO STDOUT (FORMAT binary)", MASK_REFS_MASKED);
	f->copy_to = f->copy_opts_known = true;
	strcpy(f->copy_table, "customers");
	mask_copy_opts_default(&f->copy_opts, MASK_COPY_BINARY);
	f = fact("COPY customers (ssn, id) TO STDOUT (DELIMITER '|', NULL 'NULL')", MASK_REFS_MASKED);
	f->copy_to = f->copy_opts_known = true;
	strcpy(f->copy_table, "customers");
	memcpy(f->copy_cols, "ssn\0id\0", 7);
	f->ncopy_cols = 2;
	mask_copy_opts_default(&f->copy_opts, MASK_COPY_TEXT);
	f->copy_opts.delim = '|';
	f->copy_opts.null_len = 4;
	memcpy(f->copy_opts.null_str, "NULL", 4);

	world_start(&w, "capture");
	{
		static const char *const simple_ones[][2] = {
			{"select_text", "SELECT * FROM customers ORDER BY id"},
			{"select_inherited", "SELECT * FROM customers_archive"},
			{"select_view", "SELECT * FROM customer_ssn_view ORDER BY id"},
			{"select_computed", "SELECT upper(ssn), id::text || ssn FROM customers ORDER BY id"},
			{"copy_text", "COPY customers TO STDOUT"},
			{"copy_csv", "COPY customers TO STDOUT (FORMAT csv, HEADER)"},
			{"copy_binary", "COPY customers TO STDOUT (FORMAT binary)"},
			{"copy_cols", "COPY customers (ssn, id) TO STDOUT (DELIMITER '|', NULL 'NULL')"},
			{"error_syntax", "SELECT ssn::int FROM customers WHERE id = 1"},
			{"error_unique", "INSERT INTO customers (id, ssn) VALUES (99, '123-45-6789')"},
			{"notify", "LISTEN audit; NOTIFY audit, 'ssn=555-12-3456'; SELECT "
				   "set_config('application_name', ssn, false) FROM customers WHERE id = 2"},
		};

		for (size_t i = 0; i < sizeof(simple_ones) / sizeof(simple_ones[0]); i++) {
			assert_int_equal(fe(&w, query(&m, simple_ones[i][1])), STAGE_FORWARD);
			replay(&w, simple_ones[i][0]);
		}
	}
	/* the extended protocol, binary results */
	assert_int_equal(fe(&w, m_parse(&m, "s1", "SELECT * FROM customers ORDER BY id")),
			 STAGE_FORWARD);
	assert_int_equal(fe(&w, m_bind(&m, "", "s1", 1)), STAGE_FORWARD);
	assert_int_equal(fe(&w, describe(&m, 'P', "")), STAGE_FORWARD);
	assert_int_equal(fe(&w, m_execute(&m, "")), STAGE_FORWARD);
	fe(&w, empty(&m, 'S'));
	replay(&w, "select_binary");

	for (size_t i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		if (seen_has(&w, secrets[i]))
			fail_msg("the client saw \"%s\"", secrets[i]);
	assert_true(seen_has(&w, "XXXXXXX6789"));      /* ssn, partial-last-4 */
	assert_true(seen_has(&w, "XXXXXXXXXXXX1111")); /* card */
	assert_true(seen_has(&w, "xxxxx@example.com"));
	assert_true(seen_has(&w, "1985-01-01"));
	assert_true(seen_has(&w, "Alice"));
	assert_seen_frames(&w);
	free(captured_seen);
	captured_seen = malloc(w.seen_n);
	assert_non_null(captured_seen);
	memcpy(captured_seen, w.seen, w.seen_n);
	captured_seen_n = w.seen_n;
	world_end(&w);

	cfg.source = (struct mask_source){.profile = src_profile, .analyse = src_analyse,
					  .catalog_stale = src_stale};
	assert_int_equal(mask_stage_configure(&cfg), 0);
	mask_policy_put(mp);
	build_catalog();
}

/* The session's end: what the client saw, framed correctly, handed to the caller (who frees
 * it); returns its length. */
static size_t world_take_seen(struct world *w, uint8_t **seen)
{
	size_t n = w->seen_n;

	assert_seen_frames(w);
	*seen = malloc(n);
	assert_non_null(*seen);
	memcpy(*seen, w->seen, n);
	world_end(w);
	return n;
}

/* A binary COPY whose masked column comes last, one row per CopyData message as the
 * server sends them; what the client saw, in *seen (the caller frees it). */
static size_t copy_binary_masked_last(uint8_t **seen)
{
	static const uint8_t sig[] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0,
				      0, 0, 0, 0, 0, 0, 0, 0};
	struct mask_stmt_info *f;
	struct world w;
	struct mb m;

	nfacts = 0;
	f = fact("COPY customers (id, ssn) TO STDOUT (FORMAT binary)", MASK_REFS_MASKED);
	f->copy_to = f->copy_opts_known = true;
	strcpy(f->copy_table, "customers");
	memcpy(f->copy_cols, "id\0ssn\0", 7);
	f->ncopy_cols = 2;
	mask_copy_opts_default(&f->copy_opts, MASK_COPY_BINARY);
	world_start(&w, "analyst");
	assert_int_equal(fe(&w, query(&m, "COPY customers (id, ssn) TO STDOUT (FORMAT binary)")),
			 STAGE_FORWARD);
	mb_start(&m, 'H');
	mb_u8(&m, 1);
	mb_u16(&m, 2);
	mb_u16(&m, 1);
	mb_u16(&m, 1);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
	for (uint32_t id = 1; id <= 3; id++) {
		mb_start(&m, 'd');
		if (id == 1)
			mb_bytes(&m, sig, sizeof(sig));
		mb_u16(&m, 2);
		mb_u32(&m, 4);
		mb_u32(&m, id);
		mb_u32(&m, 11);
		mb_bytes(&m, "123-45-6789", 11);
		assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
	}
	mb_start(&m, 'd');
	mb_u16(&m, 0xffff);
	assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
	assert_int_equal(be(&w, empty(&m, 'c')), STAGE_FORWARD);
	be(&w, simple(&m, 'C', "COPY 3"));
	be(&w, ready(&m));
	assert_false(seen_has(&w, "123-45-6789"));
	assert_true(seen_has(&w, "XXXXXXX6789"));
	return world_take_seen(&w, seen);
}

static void test_copy_binary_whole_or_in_pieces_alike(void **state)
{
	uint8_t *pieces, *whole;
	size_t n = copy_binary_masked_last(&pieces);

	for (size_t room = 6; room <= 80; room++) {
		for (int runs = 0; runs <= 1; runs++) {
			be_room = room < 80 ? room : BE_ROOM_MAX;
			be_runs = runs;
			assert_int_equal(copy_binary_masked_last(&whole), n);
			be_room = 0;
			be_runs = false;
			assert_memory_equal(whole, pieces, n);
			free(whole);
		}
	}
	free(pieces);
}

/* Whole messages take other paths than pieces (rows and CopyData rewritten in place, in
 * one pass, when the room allows; rooms short of a row make them give up half-way, at
 * every byte of the captured rows), and so do runs of them in one stage call (a run stops
 * before a message the room cannot hold, or inside one whose output outgrew it, and the
 * message goes on through stream()): the client must see the same bytes, in the same
 * messages, every way. */
static void test_captures_whole_or_in_pieces_alike(void **state)
{
	uint8_t *pieces;
	size_t n;

	test_real_server_captures(state);
	pieces = captured_seen;
	n = captured_seen_n;
	captured_seen = NULL;
	for (size_t room = 6; room <= 201; room++) {
		for (int runs = 0; runs <= 1; runs++) {
			be_room = room < 201 ? room : BE_ROOM_MAX;
			be_runs = runs;
			test_real_server_captures(state);
			be_room = 0;
			be_runs = false;
			assert_int_equal(captured_seen_n, n);
			assert_memory_equal(captured_seen, pieces, n);
			free(captured_seen);
			captured_seen = NULL;
		}
	}
	free(pieces);
}

/*
 * Rows as varied as runs meet them, of a text result and then a binary one: NULLs, four
 * masked columns (partial, hash, e-mail, date), empty values, masked values that are not
 * ASCII (the one pass leaves those rows to the row machine), a clear value after the last
 * masked column long enough that its row is larger than a run may hold
 * (STAGE_RUN_MESSAGE_MAX), and more rows than one run of the harness holds. What the
 * client saw, in *seen (the caller frees it).
 */
static size_t varied_rows(uint8_t **seen)
{
	static const struct col cols[] = {
		{"id", CUSTOMERS, 23, 1, -1, 0},	  {"name", CUSTOMERS, 25, 2, -1, 0},
		{"ssn", CUSTOMERS, 25, 3, -1, 0},	  {"card", CUSTOMERS, 1043, 4, 23, 0},
		{"email", CUSTOMERS, OID_CITEXT, 5, -1, 0}, {"dob", CUSTOMERS, 1082, 6, -1, 0},
		{"note", CUSTOMERS, 25, 2, -1, 0},
	};
	static const struct col two[] = {{"id", CUSTOMERS, 23, 1, -1, 0},
					 {"ssn", CUSTOMERS, 25, 3, -1, 0}};
	static char long_note[STAGE_RUN_MESSAGE_MAX + 100];
	struct world w;
	struct mb m, row;

	nfacts = 0;
	fact("SELECT *, name AS note FROM customers", MASK_REFS_MASKED);
	fact("SELECT id, ssn FROM customers", MASK_REFS_MASKED);
	memset(long_note, 'n', sizeof(long_note) - 1);
	world_start(&w, "analyst");
	assert_int_equal(fe(&w, query(&m, "SELECT *, name AS note FROM customers")), STAGE_FORWARD);
	assert_int_equal(be(&w, rowdesc(&m, cols, 7)), STAGE_FORWARD);
	for (unsigned i = 0; i < 700; i++) {
		char id[16], ssn[16], card[24], email[32], dob[16];
		const char *v[7] = {id, "Alice", ssn, card, email, dob, "a note"};

		snprintf(id, sizeof(id), "%u", i + 1);
		snprintf(ssn, sizeof(ssn), "123-45-%04u", i);
		snprintf(card, sizeof(card), "41111111111%05u", i);
		snprintf(email, sizeof(email), "user%u@example.com", i);
		snprintf(dob, sizeof(dob), "1985-07-%02u", 1 + i % 28);
		if (i % 7 == 3)
			v[1] = NULL;
		if (i % 11 == 5)
			v[1] = "Zo\xc3\xab"; /* not ASCII, but clear */
		if (i % 5 == 1)
			v[2] = NULL;
		if (i % 9 == 2)
			v[2] = "";
		if (i % 4 == 0)
			v[3] = NULL;
		if (i % 6 == 2)
			v[4] = "zo\xc3\xab@ex\xc3\xa4mple.com"; /* the row machine's */
		if (i % 8 == 7)
			v[5] = NULL;
		if (i % 3 == 0)
			v[6] = NULL;
		if (i == 350)
			v[6] = long_note;
		assert_int_equal(be(&w, datarow(&m, v, 7)), STAGE_FORWARD);
	}
	assert_int_equal(be(&w, simple(&m, 'C', "SELECT 700")), STAGE_FORWARD);
	be(&w, ready(&m));

	/* binary result columns, through the extended protocol */
	assert_int_equal(fe(&w, m_parse(&m, "", "SELECT id, ssn FROM customers")), STAGE_FORWARD);
	assert_int_equal(fe(&w, m_bind(&m, "", "", 1)), STAGE_FORWARD);
	assert_int_equal(fe(&w, describe(&m, 'P', "")), STAGE_FORWARD);
	assert_int_equal(fe(&w, m_execute(&m, "")), STAGE_FORWARD);
	fe(&w, empty(&m, 'S'));
	be(&w, empty(&m, '1'));
	be(&w, empty(&m, '2'));
	{
		struct col bin[2];

		memcpy(bin, two, sizeof(bin));
		bin[0].fmt = bin[1].fmt = 1;
		assert_int_equal(be(&w, rowdesc(&m, bin, 2)), STAGE_FORWARD);
	}
	for (unsigned i = 0; i < 300; i++) {
		char ssn[16];

		snprintf(ssn, sizeof(ssn), "987-65-%04u", i);
		mb_start(&row, 'D');
		mb_u16(&row, 2);
		mb_u32(&row, 4);
		mb_u32(&row, i);
		if (i % 5 == 1) {
			mb_u32(&row, UINT32_MAX);
		} else {
			mb_u32(&row, (uint32_t)strlen(ssn));
			mb_bytes(&row, ssn, strlen(ssn));
		}
		assert_int_equal(be(&w, mb_end(&row)), STAGE_FORWARD);
	}
	assert_int_equal(be(&w, simple(&m, 'C', "SELECT 300")), STAGE_FORWARD);
	be(&w, ready(&m));

	assert_false(seen_has(&w, "123-45-0000"));
	assert_false(seen_has(&w, "987-65-0000"));
	assert_false(seen_has(&w, "user0@example.com"));
	assert_true(seen_has(&w, "XXXXXXX0000"));
	assert_true(seen_has(&w, "XXXXXXX0299"));
	return world_take_seen(&w, seen);
}

/* A session that produce() plays, with the server's messages in runs of one stage call into
 * rooms of every size up to a few rows (runs that stop before a message the room cannot
 * hold, or inside one whose output outgrew it) and in pieces: the client sees the same
 * bytes either way. */
static void assert_runs_write_as_pieces(size_t (*produce)(uint8_t **seen))
{
	static const size_t big_rooms[] = {300, 1000, STAGE_RUN_MESSAGE_MAX, BE_ROOM_MAX};
	uint8_t *pieces, *runs;
	size_t n = produce(&pieces);

	for (size_t k = 6; k < 130 + sizeof(big_rooms) / sizeof(big_rooms[0]); k++) {
		for (int in_runs = 0; in_runs <= 1; in_runs++) {
			be_room = k < 130 ? k : big_rooms[k - 130];
			be_runs = in_runs;
			assert_int_equal(produce(&runs), n);
			be_room = 0;
			be_runs = false;
			assert_memory_equal(runs, pieces, n);
			free(runs);
		}
	}
	free(pieces);
}

/* Rows in runs of one stage call, into rooms of every size up to a few rows (runs that stop
 * before a row the room cannot hold, or inside one whose output outgrew it): the client
 * sees the bytes the row machine writes when the same rows come in pieces. */
static void test_rows_in_runs_as_the_machine_writes_them(void **state)
{
	assert_runs_write_as_pieces(varied_rows);
}

/* A field of a text or CSV row as the server writes it (NULL as \N or nothing). */
static size_t copy_field(uint8_t *p, const char *v, enum mask_copy_format fmt)
{
	size_t n = 0;
	bool quote;

	if (!v) {
		if (fmt == MASK_COPY_TEXT) {
			memcpy(p, "\\N", 2);
			return 2;
		}
		return 0;
	}
	if (fmt == MASK_COPY_TEXT) {
		for (; *v; v++) {
			if (*v == '\\' || *v == '\t' || *v == '\n')
				p[n++] = '\\';
			p[n++] = *v == '\t' ? 't' : *v == '\n' ? 'n' : (uint8_t)*v;
		}
		return n;
	}
	quote = !*v || strpbrk(v, ",\"\n\r") != NULL;
	if (quote)
		p[n++] = '"';
	for (; *v; v++) {
		if (*v == '"')
			p[n++] = '"';
		p[n++] = (uint8_t)*v;
	}
	if (quote)
		p[n++] = '"';
	return n;
}

/*
 * COPY of customers in text, CSV and binary, with rows as varied as varied_rows()'s
 * (NULLs, empty and non-ASCII values, escapes, quotes, newlines inside quoted values; CSV
 * with a second masked column), one to three rows per CopyData message and every so often
 * a row split across two messages; binary's signature with the first rows, its trailer
 * with the last. Text and binary rows without NULLs or escapes are what the one pass
 * takes. What the client saw, in *seen (the caller frees it).
 */
static size_t varied_copy(uint8_t **seen)
{
	static const uint8_t sig[] = {'P', 'G', 'C', 'O', 'P', 'Y', '\n', 0xff, '\r', '\n', 0,
				      0, 0, 0, 0, 0, 0, 0, 0};
	static const char *const sqls[] = {
		"COPY customers (id, name, ssn) TO STDOUT",
		"COPY customers (id, name, ssn, email) TO STDOUT (FORMAT csv)",
		"COPY customers (id, name, ssn) TO STDOUT (FORMAT binary)"};
	static uint8_t data[1u << 16];
	struct world w;
	struct mb m;

	nfacts = 0;
	for (int fmt = MASK_COPY_TEXT; fmt <= MASK_COPY_BINARY; fmt++) {
		struct mask_stmt_info *f = fact(sqls[fmt], MASK_REFS_MASKED);

		f->copy_to = f->copy_opts_known = true;
		strcpy(f->copy_table, "customers");
		mask_copy_opts_default(&f->copy_opts, (enum mask_copy_format)fmt);
		if (fmt != MASK_COPY_CSV) {
			memcpy(f->copy_cols, "id\0name\0ssn\0", 12);
			f->ncopy_cols = 3;
		} else {
			memcpy(f->copy_cols, "id\0name\0ssn\0email\0", 18);
			f->ncopy_cols = 4;
		}
	}
	world_start(&w, "analyst");
	for (int fmt = MASK_COPY_TEXT; fmt <= MASK_COPY_BINARY; fmt++) {
		const unsigned ncols = fmt == MASK_COPY_CSV ? 4 : 3;
		size_t ends[400], len = 0, at = 0;
		unsigned rows = 0;

		assert_int_equal(fe(&w, query(&m, sqls[fmt])), STAGE_FORWARD);
		mb_start(&m, 'H');
		mb_u8(&m, fmt == MASK_COPY_BINARY);
		mb_u16(&m, (uint16_t)ncols);
		for (unsigned i = 0; i < ncols; i++)
			mb_u16(&m, fmt == MASK_COPY_BINARY);
		assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
		if (fmt == MASK_COPY_BINARY) {
			memcpy(data, sig, sizeof(sig));
			len = sizeof(sig);
		}
		for (unsigned i = 0; i < 400; i++) {
			char id[16], ssn[16], email[32];
			const char *v[4] = {id, "Alice", ssn, email};

			snprintf(id, sizeof(id), "%u", i + 1);
			snprintf(ssn, sizeof(ssn), "123-45-%04u", i);
			snprintf(email, sizeof(email), "user%u@example.com", i);
			if (i % 7 == 3)
				v[1] = NULL;
			if (i % 11 == 5)
				v[1] = "Zo\xc3\xab, \"the\"\n\tsecond"; /* escaped, quoted */
			if (i % 5 == 1)
				v[2] = NULL;
			if (i % 9 == 2)
				v[2] = "";
			if (i % 13 == 4)
				v[2] = "12\\3-4\t5\n6"; /* masked, escaped or quoted */
			if (i % 3 != 1)
				v[3] = NULL;
			if (i % 6 == 1)
				v[3] = "zo\xc3\xab@ex\xc3\xa4mple.com";
			if (fmt == MASK_COPY_BINARY) {
				data[len++] = 0;
				data[len++] = 3;
				for (unsigned c = 0; c < 3; c++) {
					uint32_t k = c == 0 ? 4 : v[c] ? (uint32_t)strlen(v[c]) : UINT32_MAX;

					proto_write_u32(data + len, k);
					len += 4;
					if (c == 0)
						proto_write_u32(data + len, i);
					else if (v[c])
						memcpy(data + len, v[c], k);
					len += k == UINT32_MAX ? 0 : k;
				}
			} else {
				for (unsigned c = 0; c < ncols; c++) {
					len += copy_field(data + len, v[c], (enum mask_copy_format)fmt);
					data[len++] = c + 1 < ncols ? (fmt == MASK_COPY_CSV ? ',' : '\t') : '\n';
				}
			}
			ends[rows++] = len;
		}
		if (fmt == MASK_COPY_BINARY) {
			data[len++] = 0xff;
			data[len++] = 0xff;
			ends[rows - 1] = len; /* the trailer goes with the last row */
		}
		assert_true(len <= sizeof(data));
		for (unsigned r = 0, k = 0; r < rows; k++) {
			size_t end;

			r += 1 + k % 3;
			end = ends[r < rows ? r - 1 : rows - 1];
			if (k % 5 == 4 && r < rows)
				end += (ends[r] - end) / 2; /* into the next row */
			mb_start(&m, 'd');
			mb_bytes(&m, data + at, end - at);
			assert_int_equal(be(&w, mb_end(&m)), STAGE_FORWARD);
			at = end;
		}
		assert_int_equal(at, len);
		assert_int_equal(be(&w, empty(&m, 'c')), STAGE_FORWARD);
		assert_int_equal(be(&w, simple(&m, 'C', "COPY 400")), STAGE_FORWARD);
		be(&w, ready(&m));
	}
	assert_false(seen_has(&w, "123-45-0000"));
	assert_false(seen_has(&w, "user4@example.com"));
	assert_true(seen_has(&w, "XXXXXXX0000"));
	assert_true(seen_has(&w, "XXXXXXX0399"));
	return world_take_seen(&w, seen);
}

/* CopyData messages in runs of one stage call, into rooms of every size up to a few rows:
 * the client sees the bytes, in the same messages, that the streaming machine writes when
 * the same messages come in pieces. */
static void test_copy_in_runs_as_the_machine_writes_it(void **state)
{
	assert_runs_write_as_pieces(varied_copy);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unmasked_identity_costs_nothing),
		cmocka_unit_test(test_simple_query_masks_every_strategy),
		cmocka_unit_test(test_computed_columns),
		cmocka_unit_test(test_cursor_keeps_its_definitions_refs),
		cmocka_unit_test(test_extended_binary_and_portals),
		cmocka_unit_test(test_undescribed_portal_is_refused),
		cmocka_unit_test(test_refused_parse_keeps_the_old_statement),
		cmocka_unit_test(test_scrubbing),
		cmocka_unit_test(test_copy_text_is_masked),
		cmocka_unit_test(test_unmaskable_requests_are_refused),
		cmocka_unit_test(test_unmasked_result_streams_nothing),
		cmocka_unit_test(test_server_rows_that_cannot_be_masked_close),
		cmocka_unit_test(test_deny_profile_and_catalog_not_ready),
		cmocka_unit_test(test_ddl_asks_for_a_refresh),
		cmocka_unit_test(test_computed_columns_of_clean_names),
		cmocka_unit_test(test_ddl_and_code_hooks_distrust_names),
		cmocka_unit_test(test_execute_arguments_count),
		cmocka_unit_test(test_real_server_captures),
		cmocka_unit_test(test_captures_whole_or_in_pieces_alike),
		cmocka_unit_test(test_copy_binary_whole_or_in_pieces_alike),
		cmocka_unit_test(test_rows_in_runs_as_the_machine_writes_them),
		cmocka_unit_test(test_copy_in_runs_as_the_machine_writes_it),
		cmocka_unit_test(test_refused_query_keeps_the_queue_in_order),
	};

	return cmocka_run_group_tests_name("mask_stage", tests, setup, teardown);
}
