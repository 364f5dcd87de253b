/*
 * audit_stage: sessions and statements into the audit trail, written before the statement
 * is forwarded (stage contract v2; see audit.h and docs/AUDIT.md).
 *
 * Write-ahead: a Query, an Execute or a FunctionCall gets its records built here (on the
 * worker: a flat copy of the fields, literals already replaced), handed to the writer
 * through this session's gate, and the message is PAUSEd. The writer wakes the session
 * (stage_wake) once the records are durable; the message is offered again (ctx->resumed),
 * and goes on, or is refused with 53100 when the trail could not take it. A full queue
 * also pauses (the writer wakes when there is room); nothing waits longer than
 * write_timeout.
 *
 * What a statement record says about its text never depends on the server having answered:
 * the stage follows the client's own Parse, Bind and Close messages (a pipeline sends
 * Parse/Bind/Execute before any reply), and falls back on the stmt table, which holds what
 * the server confirmed, for statements it no longer remembers.
 *
 * Redaction: statement text is normalised (every literal a $n) unless audit.literals; a
 * text that contains PASSWORD anywhere is normalised always and never gets its parameters
 * written; server error texts are written only with audit.literals. A client encoding the
 * lexer cannot follow (SJIS, BIG5, GBK, UHC, GB18030) gets no text at all.
 */
#include "audit/audit.h"
#include "base/clock.h"
#include "base/log.h"
#include "sql/sql.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SQLSTATE_AUDIT_FAILED "53100" /* disk_full: the class operators already alert on */
#define PREPARED_MAX 256              /* statements remembered per session */
#define PREPARED_BYTES (1u << 20)     /* and their text, at most */
#define PORTALS_MAX 32
#define RECORDS_MAX 4096              /* statements of one Query recorded one by one */

static struct audit_trail *bound_trail;
static struct audit_stage_options opts = {.max_text = 16384,
					  .write_timeout_ns = 10 * NSEC_PER_SEC};

void audit_stage_options_from(struct audit_stage_options *o, const struct config *cfg)
{
	o->literals = cfg->audit_literals;
	o->parameters = cfg->audit_parameters;
	o->max_text = cfg->audit_max_text;
	o->write_timeout_ns = cfg->audit_write_timeout_ms * NSEC_PER_MSEC;
}

void audit_stage_bind(struct audit_trail *t, const struct audit_stage_options *o)
{
	bound_trail = t;
	if (o)
		opts = *o;
}

/* ---- what the client prepared --------------------------------------------------------- */

/* A statement as the client defined it, and what a record needs of it. */
struct prepared {
	struct prepared *next; /* most recent first */
	unsigned refs;         /* the list's, plus one per portal bound from it */
	bool listed;
	char *name;
	char *text;            /* as a record shows it (normalised unless literals); NULL: omitted */
	size_t text_len, sql_len;
	bool truncated;
	bool password;         /* contains PASSWORD: normalised always, no parameters */
	const char *omitted;   /* why there is no text (static) */
	const char *class_name;
	const char *copy;      /* "in", "out" or NULL */
};

struct portal {
	struct portal *next;
	char *name;
	struct prepared *stmt;  /* NULL: bound to a statement we do not know */
	char *stmt_name;
	uint8_t *bind;          /* the Bind body, when parameters are recorded */
	uint32_t bind_len;
	const char *params_omitted; /* static */
};

enum audit_wait {
	WAIT_NONE = 0,
	WAIT_SPACE, /* the queue was full: held holds the records */
	WAIT_WRITE, /* submitted: the writer wakes us */
};

struct audit_session {
	struct audit_gate *gate;
	bool refused;             /* no waker: this core cannot resume a pause */
	enum audit_wait wait;
	uint64_t deadline_ns;
	uint64_t request;
	struct audit_rec **held;
	unsigned nheld;
	struct prepared *prepared;
	unsigned nprepared;
	size_t prepared_bytes;
	struct portal *portals;
	unsigned nportals;
	uint64_t statements;
	uint64_t alerts;          /* unaudited statements logged (continue mode) */
};
_Static_assert(_Alignof(struct audit_session) <= STAGE_STATE_ALIGN, "its slice is aligned for it");

static void prepared_unref(struct prepared *p)
{
	if (!p || --p->refs)
		return;
	if (p->text)
		OPENSSL_cleanse(p->text, p->text_len);
	free(p->text);
	free(p->name);
	free(p);
}

static void portal_free(struct portal *po)
{
	prepared_unref(po->stmt);
	if (po->bind)
		OPENSSL_cleanse(po->bind, po->bind_len);
	free(po->bind);
	free(po->name);
	free(po->stmt_name);
	free(po);
}

/* Take the statement name out of the list (closed, or replaced by a new Parse). */
static void prepared_forget(struct audit_session *st, const char *name)
{
	for (struct prepared **pp = &st->prepared; *pp; pp = &(*pp)->next) {
		struct prepared *p = *pp;

		if (strcmp(p->name, name) != 0)
			continue;
		*pp = p->next;
		p->listed = false;
		st->nprepared--;
		st->prepared_bytes -= p->text_len + p->sql_len;
		prepared_unref(p);
		return;
	}
}

static struct prepared *prepared_find(struct audit_session *st, const char *name)
{
	for (struct prepared *p = st->prepared; p; p = p->next)
		if (strcmp(p->name, name) == 0)
			return p;
	return NULL;
}

static void portal_forget(struct audit_session *st, const char *name)
{
	for (struct portal **pp = &st->portals; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->name, name) == 0) {
			struct portal *po = *pp;

			*pp = po->next;
			st->nportals--;
			portal_free(po);
			return;
		}
	}
}

/* ---- statement text ------------------------------------------------------------------ */

/* Does the text mention PASSWORD anywhere (keyword, identifier, string, body)? Broad on
 * purpose: a false positive costs a literal in raw mode, a false negative a password. */
static bool mentions_password(const char *s, size_t n)
{
	static const char word[] = "password";

	for (size_t i = 0; i + sizeof(word) - 1 <= n; i++)
		if (strncasecmp(s + i, word, sizeof(word) - 1) == 0)
			return true;
	return false;
}

/* Encodings in which a multibyte character may end in a byte that looks like '\' or a
 * quote: the lexer could see a string end where the server does not (sql.h). */
static bool encoding_unsafe(const struct session *s)
{
	static const char *const unsafe[] = {"SJIS", "SHIFT_JIS", "BIG5", "GBK", "UHC", "GB18030",
					     "JOHAB", "WIN932", "WIN936", "WIN949", "WIN950"};
	const char *enc = session_server_param(s, "client_encoding");

	for (size_t i = 0; enc && i < sizeof(unsafe) / sizeof(unsafe[0]); i++)
		if (strcasecmp(enc, unsafe[i]) == 0)
			return true;
	return false;
}

static unsigned lex_opts(const struct session *s)
{
	const char *scs = session_server_param(s, "standard_conforming_strings");

	return scs && strcmp(scs, "off") == 0 ? SQL_LEX_BACKSLASH_QUOTES : 0;
}

/* What a record says about a statement's text. */
struct text_view {
	char *text;          /* malloc'd; NULL when omitted */
	size_t len;
	bool truncated;
	size_t sql_len;
	bool password;
	const char *omitted; /* why text is NULL */
	const char *redacted;/* why a raw-mode text was normalised anyway */
	const char *class_name;
	const char *copy;
};

/* Build the view of sql[0, len): normalised (or raw with literals), classified.
 * force_normalize: why a raw-mode text must be normalised anyway (NULL: it need not). */
static int text_view_make(const struct session *s, const char *sql, size_t len,
			  const char *force_normalize, struct text_view *v)
{
	unsigned lo = lex_opts(s);
	uint32_t classes = 0;
	enum sql_class cls;
	size_t cap = (size_t)opts.max_text + 1, out_len = 0;

	memset(v, 0, sizeof(*v));
	v->sql_len = len;
	v->password = mentions_password(sql, len);
	if (encoding_unsafe(s)) {
		v->omitted = "client_encoding cannot be lexed safely";
		v->class_name = sql_class_to_str(SQL_CLASS_UNKNOWN);
		return 0;
	}
	cls = sql_classify(sql, len, lo, &classes);
	v->class_name = sql_class_to_str(cls);
	if (cls == SQL_CLASS_COPY_IN || cls == SQL_CLASS_COPY_OUT || cls == SQL_CLASS_COPY_PROGRAM)
		v->copy = classes & SQL_CLASS_BIT(SQL_CLASS_COPY_IN) ? "in" : "out";
	v->text = malloc(cap);
	if (!v->text)
		return -ENOMEM;
	if (opts.literals && !v->password && !force_normalize) {
		out_len = len < opts.max_text ? len : opts.max_text;
		memcpy(v->text, sql, out_len);
		v->text[out_len] = '\0';
		v->truncated = out_len < len;
	} else {
		int rc = sql_normalize(sql, len, lo, v->text, cap, &out_len);

		v->truncated = rc == -ENOSPC;
		if (opts.literals)
			v->redacted = v->password ? "password" : force_normalize;
	}
	v->len = out_len;
	return 0;
}

static void text_view_release(struct text_view *v)
{
	if (v->text)
		OPENSSL_cleanse(v->text, v->len);
	free(v->text);
	v->text = NULL;
}

static void rec_text(struct audit_rec *r, const char *text, size_t len, bool truncated,
		     size_t sql_len, const char *omitted, const char *redacted,
		     const char *class_name, const char *copy)
{
	if (text)
		audit_rec_strn(r, "text", text, len);
	else
		audit_rec_null(r, "text");
	if (omitted)
		audit_rec_str(r, "text_omitted", omitted);
	if (truncated)
		audit_rec_bool(r, "text_truncated", true);
	audit_rec_u64(r, "text_length", sql_len);
	if (redacted)
		audit_rec_str(r, "text_redacted", redacted);
	audit_rec_str(r, "class", class_name);
	if (copy)
		audit_rec_str(r, "copy", copy);
}

/* The fields every session record starts with. */
static struct audit_rec *session_rec(enum audit_event ev, const struct session *s)
{
	struct audit_rec *r = audit_rec_new(ev, clock_wall_ns());

	if (r)
		audit_rec_str(r, "session", s->id_hex);
	return r;
}

/* A statement record: the session's identity as it stands, so that one line says who ran
 * what. */
static struct audit_rec *statement_rec(const struct session *s, uint64_t request,
				       const char *protocol)
{
	struct audit_rec *r = session_rec(AUDIT_EV_STATEMENT, s);

	if (!r)
		return NULL;
	audit_rec_u64(r, "request", request);
	audit_rec_str(r, "protocol", protocol);
	audit_rec_str(r, "user", session_verified_user(s) ? session_verified_user(s) : s->user);
	audit_rec_str(r, "database", s->database);
	audit_rec_str(r, "application_name", s->application_name);
	audit_rec_addr(r, "client", &s->client);
	return r;
}

/* ---- following Parse, Bind, Close --------------------------------------------------- */

static void on_parse(struct audit_session *st, const struct session *s, const struct proto_msg *m)
{
	const char *name, *sql;
	struct prepared *p;
	struct text_view v;
	uint16_t n;

	if (proto_read_parse(m, &name, &sql, &n) != PROTO_OK)
		return; /* the server refuses it too */
	prepared_forget(st, name);
	p = calloc(1, sizeof(*p));
	if (!p || !(p->name = strdup(name)) || text_view_make(s, sql, strlen(sql), NULL, &v)) {
		if (p)
			free(p->name);
		free(p);
		return; /* out of memory: Execute falls back on the stmt table */
	}
	p->refs = 1;
	p->listed = true;
	p->text = v.text;
	p->text_len = v.len;
	p->sql_len = v.sql_len;
	p->truncated = v.truncated;
	p->password = v.password;
	p->omitted = v.omitted;
	p->class_name = v.class_name;
	p->copy = v.copy;
	/* Bounded: the oldest goes first (its portals keep their reference). */
	while (st->prepared && (st->nprepared >= PREPARED_MAX ||
				st->prepared_bytes + p->text_len + p->sql_len > PREPARED_BYTES)) {
		struct prepared *last = st->prepared;

		while (last->next)
			last = last->next;
		prepared_forget(st, last->name);
	}
	p->next = st->prepared;
	st->prepared = p;
	st->nprepared++;
	st->prepared_bytes += p->text_len + p->sql_len;
}

/* The statement a name stands for: the client's latest Parse of it, else what the server
 * confirmed (a new view, with a reference the caller drops). */
static struct prepared *resolve_statement(struct audit_session *st, const struct stage_ctx *ctx,
					  const char *name)
{
	struct prepared *p = prepared_find(st, name);
	const struct stmt_entry *e;
	struct text_view v;

	if (p) {
		p->refs++;
		return p;
	}
	e = ctx->stmts ? stmt_lookup(ctx->stmts, name) : NULL;
	if (!e || !(p = calloc(1, sizeof(*p))))
		return NULL;
	if (!(p->name = strdup(name)) ||
	    text_view_make(ctx->session, e->sql, e->sql_len, NULL, &v)) {
		free(p->name);
		free(p);
		return NULL;
	}
	p->refs = 1;
	p->text = v.text;
	p->text_len = v.len;
	p->sql_len = v.sql_len;
	p->truncated = v.truncated;
	p->password = v.password;
	p->omitted = v.omitted;
	p->class_name = v.class_name;
	p->copy = v.copy;
	return p;
}

static void on_bind(struct audit_session *st, const struct stage_ctx *ctx,
		    const struct proto_msg *m)
{
	const char *portal, *stmt;
	struct portal *po;
	uint16_t n;

	if (proto_read_bind(m, &portal, &stmt, &n) != PROTO_OK)
		return;
	portal_forget(st, portal);
	po = calloc(1, sizeof(*po));
	if (!po || !(po->name = strdup(portal)) || !(po->stmt_name = strdup(stmt))) {
		if (po) {
			free(po->name);
			free(po);
		}
		return;
	}
	po->stmt = resolve_statement(st, ctx, stmt);
	if (opts.parameters && n) {
		if (!po->stmt || po->stmt->password)
			po->params_omitted = po->stmt ? "password" : "statement unknown";
		else if (m->body_len > 2u * opts.max_text)
			po->params_omitted = "larger than audit.max_text";
		else if ((po->bind = malloc(m->body_len ? m->body_len : 1))) {
			memcpy(po->bind, m->body, m->body_len);
			po->bind_len = m->body_len;
		}
	}
	while (st->nportals >= PORTALS_MAX) {
		struct portal *last = st->portals;

		while (last->next)
			last = last->next;
		portal_forget(st, last->name);
	}
	po->next = st->portals;
	st->portals = po;
	st->nportals++;
}

static void on_close(struct audit_session *st, const struct proto_msg *m)
{
	const char *name;
	uint8_t kind;

	if (proto_read_target(m, PqMsg_Close, &kind, &name) != PROTO_OK)
		return;
	if (kind == 'S')
		prepared_forget(st, name);
	else
		portal_forget(st, name);
}

/* Bind parameters into r, within max_text bytes: text as text, binary as \x hex. */
static void rec_params(struct audit_rec *r, const struct portal *po)
{
	struct proto_msg m = {.type = PqMsg_Bind, .body_len = po->bind_len, .body = po->bind};
	struct proto_param_iter it;
	size_t budget = opts.max_text;
	const uint8_t *v;
	int32_t len;
	int16_t fmt;
	bool cut = false;

	if (proto_bind_params_begin(&m, &it) != PROTO_OK)
		return;
	audit_rec_array(r, "params");
	while (proto_param_next(&it, &v, &len, &fmt) == 1) {
		size_t want = len < 0 ? 0 : fmt ? 2 + 2 * (size_t)len : (size_t)len;

		if (want > budget) {
			cut = true;
			break;
		}
		budget -= want;
		if (len < 0) {
			audit_rec_null(r, NULL);
		} else if (fmt == 0) {
			audit_rec_strn(r, NULL, (const char *)v, (size_t)len);
		} else {
			char *hex = malloc(want + 1);

			if (!hex)
				break;
			hex[0] = '\\';
			hex[1] = 'x';
			audit_hex(v, (size_t)len, hex + 2);
			audit_rec_strn(r, NULL, hex, want);
			free(hex);
		}
	}
	audit_rec_end(r);
	if (cut)
		audit_rec_bool(r, "params_truncated", true);
}

/* ---- records for the messages that run something -------------------------------------- */

/* One record per statement of a simple Query. *out gets a malloc'd array. */
static int query_records(const struct stage_ctx *ctx, const struct proto_msg *m,
			 struct audit_rec ***out, unsigned *n)
{
	const struct session *s = ctx->session;
	struct sql_splitter sp;
	struct sql_stmt piece;
	struct audit_rec **recs;
	const char *sql;
	unsigned count = 0, total = 0;
	bool password;
	size_t len;

	if (proto_read_query(m, &sql) != PROTO_OK)
		return -EINVAL;
	len = strlen(sql);
	/* A PASSWORD anywhere in the message normalises every statement of it: PREPARE ... AS
	 * ALTER ROLE ... PASSWORD $1; EXECUTE p('secret') spreads one over two. */
	password = mentions_password(sql, len);
	sql_split_init(&sp, sql, len, lex_opts(s));
	while (sql_split_next(&sp, &piece))
		total++;
	if (total == 0)
		total = 1; /* an empty query is recorded as one (empty) statement */
	if (total > RECORDS_MAX)
		total = RECORDS_MAX;
	recs = calloc(total, sizeof(*recs));
	if (!recs)
		return -ENOMEM;
	sql_split_init(&sp, sql, len, lex_opts(s));
	for (;;) {
		struct text_view v;
		struct audit_rec *r;
		bool have = sql_split_next(&sp, &piece);
		const char *text = have ? sql + piece.text_off : sql;
		size_t tlen = have ? piece.text_len : len;
		bool is_execute;

		if (!have && count > 0)
			break;
		/* EXECUTE of an SQL-prepared statement: literal only if the statement it runs is
		 * known and harmless (its PREPARE may have held a PASSWORD). */
		is_execute = tlen >= 7 && strncasecmp(text, "execute", 7) == 0;
		if (text_view_make(s, text, tlen,
				   password ? "password elsewhere in the query" :
				   is_execute ? "EXECUTE of a prepared statement" : NULL,
				   &v))
			goto err_nomem;
		r = statement_rec(s, ctx->request, "simple");
		if (r) {
			audit_rec_u64(r, "index", count + 1);
			audit_rec_u64(r, "count", total);
			rec_text(r, v.text, v.len, v.truncated, v.sql_len, v.omitted, v.redacted,
				 v.class_name, v.copy);
		}
		text_view_release(&v);
		if (!r)
			goto err_nomem;
		recs[count++] = r;
		if (!have || count == total)
			break;
	}
	if (count == total && sql_split_next(&sp, &piece)) {
		/* More statements than one message may record one by one: the last record
		 * says so, and the text of the rest is in no record (never guessed at). */
		audit_rec_bool(recs[count - 1], "more_statements_not_recorded", true);
	}
	*out = recs;
	*n = count;
	return 0;
err_nomem:
	for (unsigned i = 0; i < count; i++)
		audit_rec_free(recs[i]);
	free(recs);
	return -ENOMEM;
}

static struct portal *portal_find(struct audit_session *st, const char *name)
{
	for (struct portal *po = st->portals; po; po = po->next)
		if (strcmp(po->name, name) == 0)
			return po;
	return NULL;
}

static int execute_record(struct audit_session *st, const struct stage_ctx *ctx,
			  const struct proto_msg *m, struct audit_rec **out)
{
	const struct session *s = ctx->session;
	struct prepared *fallback = NULL, *p;
	const struct stmt_entry *e;
	struct portal *po;
	const char *portal;
	struct audit_rec *r;
	uint32_t max_rows;

	if (proto_read_execute(m, &portal, &max_rows) != PROTO_OK)
		return -EINVAL;
	r = statement_rec(s, ctx->request, "extended");
	if (!r)
		return -ENOMEM;
	po = portal_find(st, portal);
	p = po ? po->stmt : NULL;
	if (!po && ctx->stmts && (e = stmt_portal_lookup(ctx->stmts, portal)) && e->name)
		p = fallback = resolve_statement(st, ctx, e->name);
	audit_rec_str(r, "portal", portal);
	audit_rec_str(r, "statement_name", po ? po->stmt_name : p ? p->name : NULL);
	if (max_rows)
		audit_rec_u64(r, "max_rows", max_rows);
	if (p)
		rec_text(r, p->text, p->text_len, p->truncated, p->sql_len, p->omitted,
			 opts.literals && p->password ? "password" : NULL, p->class_name, p->copy);
	else
		rec_text(r, NULL, 0, false, 0, "statement unknown (not seen, not on the server)",
			 NULL, sql_class_to_str(SQL_CLASS_UNKNOWN), NULL);
	if (opts.parameters && po) {
		if (po->bind)
			rec_params(r, po);
		else if (po->params_omitted)
			audit_rec_str(r, "params_omitted", po->params_omitted);
	}
	prepared_unref(fallback);
	*out = r;
	return 0;
}

static int fcall_record(const struct stage_ctx *ctx, const struct proto_msg *m,
			struct audit_rec **out)
{
	struct proto_param_iter it;
	struct audit_rec *r;
	uint32_t oid;

	if (proto_fcall_args_begin(m, &oid, &it) != PROTO_OK)
		return -EINVAL;
	r = statement_rec(ctx->session, ctx->request, "function_call");
	if (!r)
		return -ENOMEM;
	audit_rec_u64(r, "function_oid", oid);
	audit_rec_u64(r, "nargs", it.n);
	/* Arguments are never written: nothing says what a function does with them. */
	audit_rec_str(r, "class", sql_class_to_str(SQL_CLASS_FUNCTION_CALL));
	*out = r;
	return 0;
}

/* ---- write-ahead -------------------------------------------------------------------- */

static void audit_stage_wake(void *arg)
{
	(void)stage_wake(arg);
}

static void held_free(struct audit_session *st)
{
	for (unsigned i = 0; i < st->nheld; i++)
		audit_rec_free(st->held[i]);
	free(st->held);
	st->held = NULL;
	st->nheld = 0;
}

/* The trail could not take the statement's records: refuse it, or let it run unaudited. */
static void on_write_failure(struct audit_session *st, struct stage_ctx *ctx, int err,
			     struct stage_result *r)
{
	st->wait = WAIT_NONE;
	held_free(st);
	if (audit_trail_on_failure(bound_trail) == CONFIG_AUDIT_CONTINUE) {
		if (st->alerts++ == 0)
			log_error("audit_unaudited", "session=%s statements run without an audit "
						     "record: %s (audit.on_failure: continue)",
				  ctx->session->id_hex, strerror(-err));
		return;
	}
	stage_result_set(r, STAGE_REJECT, SQLSTATE_AUDIT_FAILED, NULL,
			 "the audit trail cannot be written (%s): the statement was not run",
			 strerror(-err));
}

/* Hand the held records to the writer and pause; or refuse. */
static void submit_held(struct audit_session *st, struct stage_ctx *ctx, struct stage_result *r)
{
	int rc = audit_gate_submit(st->gate, st->held, st->nheld);

	if (rc == -EAGAIN) {
		st->wait = WAIT_SPACE; /* the writer wakes us when the queue has room */
		stage_result_pause(r, st->deadline_ns);
		return;
	}
	free(st->held); /* the trail took the records, or freed them */
	st->held = NULL;
	st->nheld = 0;
	if (rc) {
		on_write_failure(st, ctx, rc, r);
		return;
	}
	st->wait = WAIT_WRITE;
	stage_result_pause(r, st->deadline_ns);
}

/* The statement waited too long: refuse it, and say so in the trail. */
static void on_timeout(struct audit_session *st, struct stage_ctx *ctx, struct stage_result *r)
{
	struct audit_rec *rec = session_rec(AUDIT_EV_STATEMENT_REFUSED, ctx->session);

	held_free(st);
	st->wait = WAIT_NONE;
	if (rec) {
		audit_rec_u64(rec, "request", st->request);
		audit_rec_str(rec, "reason", "the audit record was not written within "
					     "audit.write_timeout");
		audit_trail_submit(bound_trail, rec);
	}
	stage_result_set(r, STAGE_REJECT, SQLSTATE_AUDIT_FAILED, NULL,
			 "the audit trail did not confirm the statement's record within %llu ms: "
			 "the statement was not run",
			 (unsigned long long)(opts.write_timeout_ns / NSEC_PER_MSEC));
}

/* A message offered again after our pause. */
static void resume(struct audit_session *st, struct stage_ctx *ctx, struct stage_result *r)
{
	int rc;

	if (st->wait == WAIT_SPACE) {
		if (ctx->now_ns >= st->deadline_ns) {
			on_timeout(st, ctx, r);
			return;
		}
		submit_held(st, ctx, r);
		return;
	}
	rc = audit_gate_poll(st->gate);
	if (rc == 1) {
		st->wait = WAIT_NONE;
		return; /* durable: forward */
	}
	if (rc < 0) {
		on_write_failure(st, ctx, rc, r);
		return;
	}
	if (ctx->now_ns >= st->deadline_ns) {
		on_timeout(st, ctx, r);
		return;
	}
	stage_result_pause(r, st->deadline_ns); /* woken early: still pending */
}

static void audit_frontend(struct stage_ctx *ctx, const struct proto_msg *m,
			   struct stage_result *r)
{
	struct audit_session *st = ctx->state;
	struct audit_rec **recs = NULL, *one = NULL;
	unsigned n = 0;
	int rc;

	if (!bound_trail || st->refused)
		return;
	if (st->wait != WAIT_NONE) {
		resume(st, ctx, r);
		return;
	}
	switch (m->type) {
	case PqMsg_Parse:
		on_parse(st, ctx->session, m);
		return;
	case PqMsg_Bind:
		on_bind(st, ctx, m);
		return;
	case PqMsg_Close:
		on_close(st, m);
		return;
	case PqMsg_Query:
		rc = query_records(ctx, m, &recs, &n);
		break;
	case PqMsg_Execute:
		rc = execute_record(st, ctx, m, &one);
		break;
	case PqMsg_FunctionCall:
		rc = fcall_record(ctx, m, &one);
		break;
	default:
		return;
	}
	if (rc == -EINVAL)
		return; /* malformed: the server refuses it, and runs nothing */
	if (rc) {
		/* No memory for the record: no record, no statement. */
		stage_result_set(r, STAGE_REJECT, "53200", NULL,
				 "out of memory for the statement's audit record");
		return;
	}
	if (one) {
		recs = malloc(sizeof(*recs));
		if (!recs) {
			audit_rec_free(one);
			stage_result_set(r, STAGE_REJECT, "53200", NULL,
					 "out of memory for the statement's audit record");
			return;
		}
		recs[0] = one;
		n = 1;
	}
	st->statements += n;
	st->held = recs;
	st->nheld = n;
	st->request = ctx->request;
	st->deadline_ns = ctx->now_ns + opts.write_timeout_ns;
	submit_held(st, ctx, r);
}

/* ---- the session --------------------------------------------------------------------- */

static const char *upstream_of(const struct session *s, char *buf, size_t n)
{
	return session_upstream_text(s, buf, n)[0] ? buf : NULL;
}

static void rec_tls(struct audit_rec *r, const char *key, const struct session_tls *tls)
{
	if (!tls->version) {
		audit_rec_null(r, key);
		return;
	}
	audit_rec_object(r, key);
	audit_rec_str(r, "version", tls->version);
	audit_rec_str(r, "cipher", tls->cipher);
	if (tls->peer_subject || tls->peer_fingerprint) {
		audit_rec_object(r, "peer_certificate");
		audit_rec_str(r, "subject", tls->peer_subject);
		audit_rec_str(r, "identity", tls->peer_identity);
		audit_rec_str(r, "sha256", tls->peer_fingerprint);
		audit_rec_end(r);
	}
	audit_rec_end(r);
}

static void audit_session_start(struct stage_ctx *ctx, struct stage_result *res)
{
	struct audit_session *st = ctx->state;
	const struct session *s = ctx->session;
	const struct session_process *proc = session_process(s);
	char ts[AUDIT_TS_LEN], dialled[ADDR_STRLEN], up[SESSION_UPSTREAM_STRLEN];
	struct audit_rec *r;

	if (!bound_trail)
		return;
	/* Write-ahead needs a core that can hold a message and resume it. Without one the
	 * trail would miss statements, so the session is refused (fail closed). */
	if (!ctx->waker) {
		st->refused = true;
		stage_result_set(res, STAGE_CLOSE, SQLSTATE_AUDIT_FAILED, NULL,
				 "the audit trail cannot be kept for this connection (the relay "
				 "cannot hold a statement until its record is written)");
		return;
	}
	st->gate = audit_gate_new(bound_trail, audit_stage_wake, (void *)ctx->waker);
	if (!st->gate) {
		st->refused = true;
		stage_result_set(res, STAGE_CLOSE, "53200", NULL,
				 "out of memory for the session's audit");
		return;
	}
	r = session_rec(AUDIT_EV_SESSION_START, s);
	if (!r)
		return; /* counted by nobody: the session_end will still be recorded */
	audit_rec_str(r, "connected_at", audit_format_ts(s->start_wall_ns, ts, sizeof(ts)));
	audit_rec_str(r, "route", session_route_to_str(s->route));
	audit_rec_addr(r, "client", &s->client);
	audit_rec_str(r, "dialled", s->dialled.len ? addr_format(&s->dialled.ss.sa, dialled,
								 sizeof(dialled)) :
						     NULL);
	audit_rec_str(r, "upstream", upstream_of(s, up, sizeof(up)));
	if (proc->known) {
		audit_rec_object(r, "process");
		audit_rec_u64(r, "pid", proc->tgid);
		audit_rec_u64(r, "tid", proc->pid);
		audit_rec_u64(r, "uid", proc->uid);
		audit_rec_u64(r, "gid", proc->gid);
		audit_rec_strn(r, "comm", proc->comm, strnlen(proc->comm, sizeof(proc->comm)));
		audit_rec_u64(r, "cgroup_id", proc->cgroup_id);
		audit_rec_end(r);
	} else {
		audit_rec_null(r, "process");
	}
	rec_tls(r, "tls", session_client_tls(s));
	audit_rec_str(r, "user", s->user);
	audit_rec_str(r, "database", s->database);
	audit_rec_str(r, "application_name", s->application_name);
	audit_rec_str(r, "protocol", s->protocol == PROTO_VERSION_3_2 ? "3.2" : "3.0");
	audit_rec_bool(r, "replication", s->replication);
	audit_trail_submit(bound_trail, r);
}

static void note_auth(const struct stage_ctx *ctx)
{
	const struct session *s = ctx->session;
	struct audit_rec *r = session_rec(AUDIT_EV_AUTH, s);

	if (!r)
		return;
	audit_rec_str(r, "method", session_auth_method_to_str(s->auth.method));
	audit_rec_bool(r, "at_relay", s->auth.at_relay);
	audit_rec_bool(r, "ok", s->auth.ok);
	audit_rec_str(r, "verified_user", session_verified_user(s));
	audit_rec_str(r, "claimed_user", s->user);
	rec_tls(r, "upstream_tls", session_server_tls(s));
	audit_trail_submit(bound_trail, r);
}

/* The request a decision or an error belongs to, numbered as statement records number it,
 * so that an assessor joins a refusal to the rest of its request; null when none. */
static void rec_request(struct audit_rec *r, uint64_t request)
{
	if (request)
		audit_rec_u64(r, "request", request);
	else
		audit_rec_null(r, "request");
}

static void note_decision(const struct stage_ctx *ctx, const struct stage_note *n)
{
	struct audit_rec *r = session_rec(AUDIT_EV_DECISION, ctx->session);
	const char *sql;

	if (!r)
		return;
	audit_rec_str(r, "stage", n->stage);
	rec_request(r, n->request);
	audit_rec_str(r, "verdict", stage_verdict_to_str(n->result->verdict));
	audit_rec_str(r, "sqlstate", n->result->sqlstate[0] ? n->result->sqlstate : NULL);
	audit_rec_str(r, "rule", n->result->rule[0] ? n->result->rule : NULL);
	audit_rec_str(r, "message", n->result->message[0] ? n->result->message : NULL);
	/* What was refused, as a statement record would show it. */
	if (n->msg && n->msg->body && n->dir == PROTO_FRONTEND && n->msg->type == PqMsg_Query &&
	    proto_read_query(n->msg, &sql) == PROTO_OK) {
		struct text_view v;

		if (!text_view_make(ctx->session, sql, strlen(sql), NULL, &v)) {
			rec_text(r, v.text, v.len, v.truncated, v.sql_len, v.omitted, v.redacted,
				 v.class_name, v.copy);
			text_view_release(&v);
		}
	} else if (n->msg) {
		audit_rec_str(r, "message_type", proto_type_name(n->dir, n->msg->type));
	}
	audit_trail_submit(bound_trail, r);
}

static void note_error(const struct stage_ctx *ctx, const struct stage_note *n)
{
	struct audit_rec *r = session_rec(AUDIT_EV_ERROR, ctx->session);

	if (!r)
		return;
	audit_rec_str(r, "severity", n->severity);
	rec_request(r, n->request);
	audit_rec_str(r, "sqlstate", n->sqlstate);
	audit_rec_bool(r, "from_relay", n->from_relay);
	/* The server's texts quote data ("Key (card)=(4111...) already exists"): only with
	 * literals. pgwarden's own are ours. */
	if (opts.literals || n->from_relay)
		audit_rec_str(r, "message", n->message);
	audit_trail_submit(bound_trail, r);
}

static void note_done(const struct stage_ctx *ctx, const struct stage_note *n)
{
	struct audit_rec *r = session_rec(AUDIT_EV_STATEMENT_DONE, ctx->session);

	if (!r)
		return;
	audit_rec_u64(r, "request", n->request);
	audit_rec_str(r, "command_tag", n->command_tag);
	audit_rec_u64(r, "rows", n->rows);
	audit_rec_u64(r, "duration_us", n->duration_ns / 1000);
	audit_trail_submit(bound_trail, r);
}

static void audit_notice(struct stage_ctx *ctx, const struct stage_note *n)
{
	struct audit_session *st = ctx->state;

	if (!bound_trail || st->refused)
		return;
	switch (n->kind) {
	case STAGE_NOTE_AUTH:
		note_auth(ctx);
		break;
	case STAGE_NOTE_DECISION:
		note_decision(ctx, n);
		break;
	case STAGE_NOTE_ERROR:
		note_error(ctx, n);
		break;
	case STAGE_NOTE_REQUEST_DONE:
		note_done(ctx, n);
		break;
	case STAGE_NOTE_SERVER_PARAM:
		break; /* read from the session when a statement needs them */
	}
}

static void audit_session_end(struct stage_ctx *ctx)
{
	struct audit_session *st = ctx->state;
	const struct session *s = ctx->session;
	struct audit_rec *r;

	if (!bound_trail)
		return;
	r = session_rec(AUDIT_EV_SESSION_END, s);
	if (!r)
		return;
	audit_rec_str(r, "reason", s->end_reason ? s->end_reason : "unknown");
	audit_rec_u64(r, "bytes_from_client", s->bytes_from_client);
	audit_rec_u64(r, "bytes_from_server", s->bytes_from_server);
	audit_rec_u64(r, "statements", s->statements);
	audit_rec_u64(r, "statements_recorded", st->statements);
	audit_rec_u64(r, "denied", s->denied);
	if (s->backend_pid)
		audit_rec_u64(r, "backend_pid", s->backend_pid);
	audit_rec_u64(r, "duration_us", (clock_mono_ns() - s->start_mono_ns) / 1000);
	audit_trail_submit(bound_trail, r);
}

static void audit_release(void *state)
{
	struct audit_session *st = state;

	audit_gate_release(st->gate); /* no wake after this */
	st->gate = NULL;
	held_free(st);
	while (st->prepared)
		prepared_forget(st, st->prepared->name);
	while (st->portals)
		portal_forget(st, st->portals->name);
}

void audit_note_masked(const struct session *s, uint64_t request,
		       const struct audit_masked_column *cols, unsigned n)
{
	struct audit_rec *r;

	if (!bound_trail || !n)
		return;
	r = session_rec(AUDIT_EV_MASKED, s);
	if (!r)
		return;
	audit_rec_u64(r, "request", request);
	audit_rec_array(r, "columns");
	for (unsigned i = 0; i < n; i++) {
		audit_rec_object(r, NULL);
		audit_rec_str(r, "name", cols[i].name);
		audit_rec_u64(r, "table_oid", cols[i].table_oid);
		audit_rec_i64(r, "attnum", cols[i].attnum);
		audit_rec_str(r, "strategy", cols[i].strategy);
		audit_rec_end(r);
	}
	audit_rec_end(r);
	audit_trail_submit(bound_trail, r);
}

/* Types at or above 64 sit in the second word of a typeset. */
#define HI(t) (1ULL << ((t)-64))

const struct stage_ops audit_stage = {
	.name = "audit",
	.state_size = sizeof(struct audit_session),
	/* EXECUTE of an SQL-prepared statement is recorded with its text. */
	.keep_statement_text = true,
	.wakes = true, /* write-ahead: a statement waits for its record (audit_gate) */
	.frontend_whole = {.bits = {0, HI(PqMsg_Query) | HI(PqMsg_Parse) | HI(PqMsg_Bind) |
					       HI(PqMsg_Execute) | HI(PqMsg_Close) |
					       HI(PqMsg_FunctionCall)}},
	.session_start = audit_session_start,
	.frontend = audit_frontend,
	.notice = audit_notice,
	.session_end = audit_session_end,
	.release = audit_release,
};
