/*
 * policy_stage: the policy as an inspection stage (stage contract v2).
 *
 *   session_start  the first rule that could admit the claimed identity (default deny:
 *                  FATAL 28000), replication and startup-parameter checks (a role or
 *                  session_authorization in the StartupMessage is a role switch, an unsafe
 *                  client_encoding is refused), session counts (53300), timeouts;
 *   AUTH notice    the same rules again with the verified identity and the login method;
 *                  the rule found here is the one the session runs under;
 *   frontend       Query (every statement), Parse (every one, re-Parse included), Bind and
 *                  Execute (the statement they run, judged again if the policy changed
 *                  since its Parse), FunctionCall: REJECT 42501 naming the rule, 54001 for
 *                  a statement over the analysis budget, 53400 or a PAUSE for the rate;
 *                  an allowed Query or Parse carries its statements' classes (for the
 *                  relay's statements_total, which then need not classify it again);
 *   SERVER_PARAM   client_encoding (an unsafe one ends the session at its next message),
 *                  standard_conforming_strings (how the lexer reads '' strings).
 * A session picks up a reloaded policy at its next message: its identity is matched again
 * against the new rules, and a session no rule admits any more is closed.
 */
#include "policy/policy.h"

#include "base/addr.h"
#include "base/log.h"
#include "base/sanitize.h"
#include "proto/proto.h"
#include "stage/stage.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* A statement word (stmt_entry.words[our index]): the policy generation it was judged
 * under and that it was allowed. 0: never judged by us. */
#define WORD_ALLOWED 0x80000000u
#define WORD_GEN_MASK 0x7fffffffu

/*
 * The last text of one kind (Query, Parse) this session was allowed to run, and under what:
 * the same text again under the same snapshot, rule, search_path knowledge and lexer
 * options gets the same verdict, so it is not analysed again (drivers re-send an unnamed
 * Parse of the same text for every execution). Compared byte for byte, never by hash
 * alone. Texts that EXECUTE a prepared statement are never remembered: their verdict
 * depends on the statement table.
 */
#define JUDGED_TEXT_MAX 2048

/*
 * The same for texts that differ only in their numeric constants (sql_shape: pgbench -M
 * simple, and every application that inlines its ids): the last SHAPES allowed shapes of
 * both kinds, each behind its message type byte. A shape is kept only when no statement's
 * verdict could rest on more than its shape (shape_decides()). Allocated at the first one
 * kept: at most SHAPES * (SHAPE_MAX + 1) bytes of text per session.
 */
#define SHAPES 16
#define SHAPE_MAX 512

/*
 * The classes of an allowed text's statements go with its verdict (stage_result.classes)
 * for the relay's statements_total, so that it does not classify the text again; they are
 * remembered with the text or shape, since sql_classify() reads no numeric constant. A
 * Query of more statements than this carries none: the relay classifies it itself.
 */
#define STATEMENT_CLASSES 16

struct judged {
	char *text;   /* NULL: empty; cap bytes once allocated */
	uint32_t len, cap;
	uint32_t generation;
	const struct policy_rule *rule;
	bool search_path_unknown;       /* before it was judged */
	bool search_path_unknown_after; /* after: the text may set search_path */
	unsigned lex_opts;
	unsigned statements; /* a Query's, for the rate limit */
	uint8_t classes[STATEMENT_CLASSES]; /* of the first statements */
};

struct policy_state {
	struct policy *snap;
	const struct policy_rule *rule;
	char rule_name[POLICY_NAME_MAX + 1];
	bool pending_close;  /* something only a notice saw: close at the next message */
	char close_sqlstate[6];
	char close_message[STAGE_MESSAGE_MAX];
	bool search_path_unknown;
	unsigned lex_opts;
	char user[SQL_NAME_MAX], database[SQL_NAME_MAX], appname[SQL_NAME_MAX];
	char *exe, *cgroup; /* resolved once at start when some rule needs them */
	struct policy_limit_entry *rate;
	struct policy_limit_entry *sessions[3];
	struct judged judged[2]; /* [0] Query, [1] Parse */
	struct judged *shapes;   /* SHAPES of them, or NULL */
	unsigned shape_next;     /* the slot the next kept shape takes */
	bool judged_execute;     /* judge() met an EXECUTE since this was cleared */
	bool judged_unshaped;    /* judge() met a statement its shape cannot stand for */
	/* The classes of the statements of the Query or Parse being judged, as judge() met
	 * them (nclasses counts beyond the array); the FORWARD verdict points at them. */
	uint8_t classes[STATEMENT_CLASSES];
	unsigned nclasses;
};

/* The stage's per-session block. The state is allocated at session start, and only when a
 * policy is loaded: without one the stage steps aside, and an idle session holds no more of
 * it than this pointer. */
struct policy_slot {
	struct policy_state *st; /* NULL: no policy when the session started */
};
_Static_assert(_Alignof(struct policy_slot) <= STAGE_STATE_ALIGN, "its slice is aligned for it");

static struct policy_state *slot_state(const void *slot)
{
	return slot ? ((const struct policy_slot *)slot)->st : NULL;
}

static struct policy_state *state_of(const struct stage_ctx *ctx)
{
	return slot_state(ctx->state);
}

/* The analysis buffer: 30 KiB, one per worker thread (callbacks never nest). */
static __thread struct sql_analysis analysis;
/* The shape of the text being judged: its message type, then sql_shape()'s bytes. */
static __thread uint8_t shape_buf[1 + SHAPE_MAX];

/* ---- identity ------------------------------------------------------------------------- */

/* PostgreSQL cuts names (user, database, application_name) to 63 bytes on a character
 * boundary; rules compare what the server will use. */
static void cut63(char *out, const char *in)
{
	size_t n = in ? strlen(in) : 0;

	if (n > SQL_NAME_MAX - 1) {
		n = SQL_NAME_MAX - 1;
		while (n > 0 && ((unsigned char)in[n] & 0xc0) == 0x80)
			n--;
	}
	if (n)
		memcpy(out, in, n);
	out[n] = '\0';
}

static bool is_local(const struct session *s)
{
	return s->route == SESSION_ROUTE_STEERED ||
	       ((const struct sockaddr *)&s->client.ss)->sa_family == AF_UNIX;
}

static void identity(struct policy_state *st, const struct session *s,
		     struct policy_identity *id)
{
	const char *verified = session_verified_user(s);
	const struct session_process *proc = session_process(s);

	cut63(st->user, verified ? verified : s->user);
	cut63(st->database, s->database);
	cut63(st->appname, s->application_name);
	memset(id, 0, sizeof(*id));
	id->user = s->user || verified ? st->user : NULL;
	id->database = s->database ? st->database : NULL;
	id->application_name = s->application_name ? st->appname : NULL;
	id->client = &s->client;
	id->local = is_local(s);
	id->tls_identity = session_client_tls(s)->peer_identity;
	id->auth_method = s->auth.ok ? s->auth.method : SESSION_AUTH_PENDING;
	id->process_known = proc->known;
	id->uid = proc->uid;
	id->gid = proc->gid;
	id->comm = proc->known ? proc->comm : NULL;
	id->exe = st->exe;
	id->cgroup = st->cgroup;
}

static void resolve_process(struct policy_state *st, const struct session *s)
{
	const struct session_process *proc = session_process(s);
	char path[PATH_MAX];

	if (!proc->known || st->exe || st->cgroup)
		return;
	if (proc->cgroup_id && !policy_proc_cgroup_path(proc->cgroup_id, path, sizeof(path)))
		st->cgroup = strdup(path);
	if (!policy_proc_exe(proc->tgid ? proc->tgid : proc->pid, proc->uid, proc->cgroup_id, path,
			     sizeof(path)))
		st->exe = strdup(path);
}

/* ---- startup parameters ----------------------------------------------------------------- */

static bool name_is(const char *a, size_t n, const char *b)
{
	if (strlen(b) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = a[i] == '-' ? '_' : a[i];

		if ((c >= 'A' && c <= 'Z' ? c | 0x20 : c) != b[i])
			return false;
	}
	return true;
}

/* A setting given at startup (directly, or as -c name=value / --name=value in options)
 * that policy cares about. */
struct startup_facts {
	bool role;         /* role or session_authorization */
	bool search_path;
	const char *encoding; /* the last client_encoding seen, in a static-lifetime buffer */
	bool bad_encoding;
};

static void note_setting(struct startup_facts *f, const char *name, size_t n, const char *value,
			 size_t vn)
{
	char enc[64];

	if (name_is(name, n, "role") || name_is(name, n, "session_authorization"))
		f->role = true;
	else if (name_is(name, n, "search_path"))
		f->search_path = true;
	else if (name_is(name, n, "client_encoding")) {
		if (vn >= sizeof(enc))
			vn = sizeof(enc) - 1;
		memcpy(enc, value, vn);
		enc[vn] = '\0';
		if (sql_encoding_is_unsafe(enc))
			f->bad_encoding = true;
	}
}

/* PostgreSQL's options: words split at unescaped white space, backslash escapes the next
 * character; "-c name=value", "-cname=value" and "--name=value" set a setting. */
static void scan_options(struct startup_facts *f, const char *opt)
{
	char word[1024];
	bool after_c = false; /* the previous word was a bare -c */

	while (*opt) {
		size_t n = 0;

		while (*opt == ' ' || *opt == '\t' || *opt == '\n' || *opt == '\r')
			opt++;
		if (!*opt)
			break;
		while (*opt && !(*opt == ' ' || *opt == '\t' || *opt == '\n' || *opt == '\r')) {
			if (*opt == '\\' && opt[1])
				opt++;
			if (n + 1 < sizeof(word))
				word[n++] = *opt;
			opt++;
		}
		word[n] = '\0';
		const char *setting = NULL;

		if (after_c)
			setting = word;
		else if (!strncmp(word, "-c", 2) && word[2])
			setting = word + 2;
		else if (!strncmp(word, "--", 2))
			setting = word + 2;
		if (setting) {
			const char *eq = strchr(setting, '=');

			if (eq)
				note_setting(f, setting, (size_t)(eq - setting), eq + 1, strlen(eq + 1));
			else /* a setting whose value we cannot see: assume the worst */
				f->role = f->search_path = true;
		}
		after_c = !strcmp(word, "-c");
	}
}

static void startup_facts(const struct session *s, struct startup_facts *f)
{
	memset(f, 0, sizeof(*f));
	for (unsigned i = 0; i < s->startup.nparams; i++) {
		const char *n = s->startup.names[i], *v = s->startup.values[i];

		if (!strcmp(n, "options"))
			scan_options(f, v);
		else
			note_setting(f, n, strlen(n), v, strlen(v));
	}
}

/* ---- verdict helpers -------------------------------------------------------------------- */

static void set_rule(struct policy_state *st, const struct policy_rule *r)
{
	st->rule = r;
	snprintf(st->rule_name, sizeof(st->rule_name), "%s", r ? r->name : "");
}

static void log_decision(const struct stage_ctx *ctx, const struct policy_state *st,
			 const char *what, const char *sqlstate, const char *reason,
			 const char *sql, size_t len)
{
	struct log_line ll;
	char norm[512];

	log_line_begin(&ll, LOG_WARN, what);
	log_kv_str(&ll, "session", ctx->session->id_hex);
	log_kv_str(&ll, "rule", st->rule_name[0] ? st->rule_name : "(none)");
	log_kv_str(&ll, "sqlstate", sqlstate);
	log_kv_str(&ll, "reason", reason);
	if (sql) {
		/* Literals replaced: a denied statement's secrets stay out of the log. */
		(void)sql_normalize(sql, len, st->lex_opts, norm, sizeof(norm), NULL);
		log_kv_str(&ll, "statement", norm);
	}
	log_line_end(&ll);
}

static void reject(struct stage_ctx *ctx, struct policy_state *st, struct stage_result *r,
		   const char *sqlstate, const char *reason, const char *sql, size_t len)
{
	stage_result_set(r, STAGE_REJECT, sqlstate, st->rule_name[0] ? st->rule_name : NULL,
			 "pgwarden: policy rule \"%s\" denies this: %s",
			 st->rule_name[0] ? st->rule_name : "(none)", reason);
	policy_count_denial(st->rule_name);
	if (!strcmp(sqlstate, "54001"))
		policy_count_firing(POLICY_FIRE_TOO_COMPLEX);
	log_decision(ctx, st, "policy_denied", sqlstate, reason, sql, len);
}

static void close_session(struct stage_ctx *ctx, struct policy_state *st,
			  struct stage_result *r, const char *sqlstate, const char *msg)
{
	stage_result_set(r, STAGE_CLOSE, sqlstate, st->rule_name[0] ? st->rule_name : NULL, "%s",
			 msg);
	policy_count_denial(st->rule_name);
	log_decision(ctx, st, "policy_closed", sqlstate, msg, NULL, 0);
}

static void tighten(uint64_t *have, uint64_t want)
{
	if (want && (!*have || want < *have))
		*have = want;
}

static void apply_limits(const struct policy_rule *r, struct stage_limits *l)
{
	if (!l || !r)
		return;
	tighten(&l->login_ms, r->limits.login_timeout_ms);
	tighten(&l->idle_ms, r->limits.idle_ms);
	tighten(&l->idle_in_transaction_ms, r->limits.idle_in_transaction_ms);
	tighten(&l->lifetime_ms, r->limits.lifetime_ms);
}

/* The connection-refusal text: pgwarden's own wording (docs/POLICY.md), naming what the
 * client claimed, never what the rules are. */
static void refusal(const struct session *s, const struct policy_state *st, char *out, size_t n)
{
	char addr[ADDR_STRLEN] = "local", u[64], d[64];

	if (!is_local(s))
		addr_format((const struct sockaddr *)&s->client.ss, addr, sizeof(addr));
	sanitize_str(u, sizeof(u), st->user, SANITIZE_LOG, NULL);
	sanitize_str(d, sizeof(d), st->database, SANITIZE_LOG, NULL);
	snprintf(out, n, "pgwarden: no policy rule admits user \"%s\" to database \"%s\" from %s",
		 u, d, addr);
}

static const char *source_key(const struct session *s, char *buf, size_t n)
{
	const struct sockaddr *sa = (const struct sockaddr *)&s->client.ss;
	char *colon;

	if (is_local(s))
		return "local";
	addr_format(sa, buf, n);
	/* Without the port: sessions per source are per address. */
	colon = strrchr(buf, ':');
	if (colon)
		*colon = '\0';
	return buf;
}

/* ---- session_start ------------------------------------------------------------------- */

static void want_frontend(struct stage_ctx *ctx, enum stage_interest how)
{
	static const uint8_t types[] = {PqMsg_Query, PqMsg_Parse, PqMsg_Bind, PqMsg_Execute,
					PqMsg_FunctionCall};

	for (size_t i = 0; i < sizeof(types); i++)
		if (stage_want(ctx, PROTO_FRONTEND, types[i], how))
			continue; /* refused: streaming, or no memory for the change (a session
				   * without policy then still sees its messages pass unjudged) */
}

static void policy_session_start(struct stage_ctx *ctx, struct stage_result *r)
{
	struct policy_slot *slot = ctx->state;
	struct policy *snap = policy_acquire();
	const struct session *s = ctx->session;
	struct policy_state *st;
	struct policy_identity id;
	struct startup_facts f;
	const struct policy_rule *rule;
	char msg[STAGE_MESSAGE_MAX], key[ADDR_STRLEN];

	if (!snap) {
		want_frontend(ctx, STAGE_SKIP);
		return;
	}
	st = slot->st = calloc(1, sizeof(*st));
	if (!st) {
		policy_unref(snap);
		stage_result_set(r, STAGE_CLOSE, "53200", NULL, "out of memory");
		return;
	}
	st->snap = snap;
	if (st->snap->needs_process_paths)
		resolve_process(st, s);
	identity(st, s, &id);
	startup_facts(s, &f);
	if (f.bad_encoding) {
		close_session(ctx, st, r, "0A000",
			      "pgwarden: this client_encoding can hide quotes inside multibyte "
			      "characters and cannot be inspected; use UTF8");
		return;
	}
	rule = policy_match_connection(st->snap, &id, false);
	if (!rule) {
		refusal(s, st, msg, sizeof(msg));
		policy_count_firing(POLICY_FIRE_CONNECTION_DENIED);
		close_session(ctx, st, r, "28000", msg);
		return;
	}
	set_rule(st, rule);
	if (s->replication && !rule->replication) {
		snprintf(msg, sizeof(msg), "pgwarden: policy rule \"%s\" does not allow replication "
					   "connections", rule->name);
		close_session(ctx, st, r, "28000", msg);
		return;
	}
	if (f.role && !rule->role_switch) {
		snprintf(msg, sizeof(msg), "pgwarden: policy rule \"%s\" does not allow a role or "
					   "session_authorization in the startup parameters",
			 rule->name);
		close_session(ctx, st, r, "28000", msg);
		return;
	}
	st->search_path_unknown = f.search_path;

	static const enum policy_limit_kind kinds[3] = {POLICY_LIMIT_USER, POLICY_LIMIT_DATABASE,
							 POLICY_LIMIT_SOURCE};
	const uint32_t max[3] = {rule->limits.sessions_per_user, rule->limits.sessions_per_database,
				 rule->limits.sessions_per_source};
	const char *keys[3] = {st->user, st->database, source_key(s, key, sizeof(key))};
	static const char *const what[3] = {"user", "database", "source"};

	for (int i = 0; i < 3; i++) {
		if (!max[i])
			continue;
		st->sessions[i] = policy_limit_session_take(rule->name, kinds[i], keys[i], max[i]);
		if (!st->sessions[i]) {
			snprintf(msg, sizeof(msg), "pgwarden: too many sessions for this %s under "
						   "policy rule \"%s\" (at most %u)",
				 what[i], rule->name, max[i]);
			policy_count_firing(POLICY_FIRE_SESSIONS);
			close_session(ctx, st, r, "53300", msg);
			return;
		}
	}
	apply_limits(rule, ctx->limits);
	want_frontend(ctx, STAGE_WHOLE);
}

/* ---- notices ------------------------------------------------------------------------------ */

static void pend_close(struct policy_state *st, const char *sqlstate, const char *msg)
{
	if (st->pending_close)
		return;
	st->pending_close = true;
	snprintf(st->close_sqlstate, sizeof(st->close_sqlstate), "%s", sqlstate);
	snprintf(st->close_message, sizeof(st->close_message), "%s", msg);
}

static void policy_notice(struct stage_ctx *ctx, const struct stage_note *n)
{
	struct policy_state *st = state_of(ctx);
	struct policy_identity id;
	const struct policy_rule *rule;
	char msg[STAGE_MESSAGE_MAX];

	if (!st)
		return;
	if (n->kind == STAGE_NOTE_AUTH && ctx->session->auth.ok) {
		identity(st, ctx->session, &id);
		rule = policy_match_connection(st->snap, &id, true);
		if (!rule) {
			refusal(ctx->session, st, msg, sizeof(msg));
			policy_count_firing(POLICY_FIRE_CONNECTION_DENIED);
			set_rule(st, NULL);
			pend_close(st, "28000", msg);
			return;
		}
		set_rule(st, rule);
		apply_limits(rule, ctx->limits);
	} else if (n->kind == STAGE_NOTE_SERVER_PARAM && n->name && n->value) {
		if (!strcmp(n->name, "client_encoding") && sql_encoding_is_unsafe(n->value))
			pend_close(st, "0A000",
				   "pgwarden: this client_encoding can hide quotes inside multibyte "
				   "characters and cannot be inspected; use UTF8");
		else if (!strcmp(n->name, "standard_conforming_strings"))
			st->lex_opts = strcmp(n->value, "on") ? SQL_LEX_BACKSLASH_QUOTES : 0;
	}
}

/* ---- statements --------------------------------------------------------------------------- */

static struct policy_stmt_ctx stmt_ctx(const struct policy_state *st)
{
	return (struct policy_stmt_ctx){.user = st->user,
					.search_path_unknown = st->search_path_unknown};
}

/*
 * The SQL PREPAREs and DEALLOCATEs of the Query being judged, in order: "PREPARE p AS ...;
 * EXECUTE p" runs p's body before the server has confirmed anything, so the statement table
 * does not have it yet. A name deallocated earlier in the Query is gone (body NULL).
 */
#define QUERY_PREPARES_MAX 16

struct query_prepares {
	unsigned n;
	bool all_gone; /* DEALLOCATE ALL or DISCARD ALL earlier in the Query */
	struct {
		char name[SQL_NAME_MAX];
		const char *body; /* NULL: deallocated */
		size_t len;
	} e[QUERY_PREPARES_MAX];
};

/* DISCARD ALL (the analysis flags it as a role switch that moves search_path). */
static bool is_discard_all(const struct sql_analysis *a, const char *sql, size_t len)
{
	struct sql_lexer lx;
	struct sql_token t;

	if ((a->flags & (SQL_AF_ROLE_SWITCH | SQL_AF_SEARCH_PATH)) !=
	    (SQL_AF_ROLE_SWITCH | SQL_AF_SEARCH_PATH))
		return false;
	sql_lex_init(&lx, sql, len, 0);
	sql_lex_next(&lx, &t);
	return sql_tok_is(&lx, &t, "discard");
}

static void query_prepares_note(struct query_prepares *qp, const struct sql_analysis *a,
				const char *sql, size_t len)
{
	if (!qp)
		return;
	if (a->prep == SQL_PREP_DEALLOCATE_ALL || is_discard_all(a, sql, len)) {
		qp->n = 0;
		qp->all_gone = true;
		return;
	}
	if (a->prep != SQL_PREP_PREPARE && a->prep != SQL_PREP_DEALLOCATE)
		return;
	if (qp->n == QUERY_PREPARES_MAX) {
		/* No room to follow it: what it names becomes unknown, which is denied. */
		memmove(&qp->e[0], &qp->e[1], sizeof(qp->e[0]) * (QUERY_PREPARES_MAX - 1));
		qp->n--;
		qp->all_gone = true;
	}
	memcpy(qp->e[qp->n].name, a->prep_name, sizeof(qp->e[qp->n].name));
	qp->e[qp->n].body = a->prep == SQL_PREP_PREPARE ? sql + a->prep_body_off : NULL;
	qp->e[qp->n].len = a->prep == SQL_PREP_PREPARE && len > a->prep_body_off
				   ? len - a->prep_body_off : 0;
	qp->n++;
}

static void deny_unknown(struct policy_verdict *v, const char *name)
{
	v->allowed = false;
	snprintf(v->sqlstate, sizeof(v->sqlstate), "42501");
	snprintf(v->reason, sizeof(v->reason),
		 "EXECUTE of prepared statement \"%.63s\", whose text pgwarden has not seen", name);
}

static bool judged_hit(struct policy_state *st, const struct judged *j, const char *sql,
		       size_t len)
{
	if (!j->text || j->len != len || j->generation != (uint32_t)st->snap->generation ||
	    j->rule != st->rule || j->search_path_unknown != st->search_path_unknown ||
	    j->lex_opts != st->lex_opts || memcmp(j->text, sql, len) != 0)
		return false;
	/* Where the judgement left the session, and what it found. */
	st->search_path_unknown = j->search_path_unknown_after;
	st->nclasses = j->statements;
	memcpy(st->classes, j->classes, sizeof(st->classes));
	return true;
}

/* Fill j with an allowed text (at most JUDGED_TEXT_MAX bytes), as judged with search_path
 * knowledge sp_before; j stays empty when its buffer cannot grow. */
static void judged_set(struct policy_state *st, struct judged *j, const char *sql, size_t len,
		       bool sp_before, unsigned statements)
{
	j->len = 0;
	j->rule = NULL; /* nothing matches until it is filled */
	if (len > j->cap) {
		char *grown = realloc(j->text, len);

		if (!grown)
			return;
		j->text = grown;
		j->cap = (uint32_t)len;
	}
	memcpy(j->text, sql, len);
	j->len = (uint32_t)len;
	j->generation = (uint32_t)st->snap->generation;
	j->rule = st->rule;
	j->search_path_unknown = sp_before;
	j->search_path_unknown_after = st->search_path_unknown;
	j->lex_opts = st->lex_opts;
	j->statements = statements;
	memcpy(j->classes, st->classes, sizeof(j->classes));
}

/* Remember an allowed text, as judged with search_path knowledge sp_before. */
static void judged_keep(struct policy_state *st, struct judged *j, const char *sql, size_t len,
			bool sp_before, unsigned statements)
{
	if (st->judged_execute || len > JUDGED_TEXT_MAX) {
		j->len = 0;
		j->rule = NULL; /* nothing matches */
		return;
	}
	judged_set(st, j, sql, len, sp_before, statements);
}

/*
 * Whether an allowed statement's verdict rests on nothing but its shape. The shape keeps
 * every byte but a numeric constant's digits, which no analysis reads; these are the
 * statements whose analysis reads literals (set_config's arguments, SET's values, a DO or
 * routine body) or offsets into the text (PREPARE's body), or whose verdict depends on
 * more than the text (EXECUTE: the statement table). None of them is ever shape-cached.
 */
static bool shape_decides(const struct sql_analysis *a)
{
	return a->prep == SQL_PREP_NONE && a->primary != SQL_CLASS_SESSION &&
	       !(a->classes & SQL_CLASS_BIT(SQL_CLASS_SESSION)) &&
	       !(a->flags & (SQL_AF_ROLE_SWITCH | SQL_AF_OPAQUE_BODY | SQL_AF_TOO_COMPLEX |
			     SQL_AF_SEARCH_PATH | SQL_AF_BAD_ENCODING | SQL_AF_ENCODING_CHANGE));
}

/* The shape of a text of message type `type` into shape_buf: a Query and a Parse of one
 * text are judged differently (several statements, replication commands). false: none. */
static bool shape_of(const struct policy_state *st, uint8_t type, const char *sql, size_t len,
		     size_t *n)
{
	if (len > JUDGED_TEXT_MAX)
		return false; /* its shape would not fit: do not lex it for nothing */
	shape_buf[0] = type;
	if (sql_shape(sql, len, st->lex_opts, shape_buf + 1, SHAPE_MAX, n))
		return false;
	(*n)++;
	return true;
}

/* The kept shape equal to shape_buf[0, n) under the session's present rule and state. */
static const struct judged *shape_hit(struct policy_state *st, size_t n)
{
	for (unsigned i = 0; st->shapes && i < SHAPES; i++)
		if (judged_hit(st, &st->shapes[i], (const char *)shape_buf, n))
			return &st->shapes[i];
	return NULL;
}

/* Keep shape_buf[0, n) for an allowed text, unless one of its statements cannot be judged
 * by its shape. */
static void shape_keep(struct policy_state *st, size_t n, bool sp_before, unsigned statements)
{
	if (st->judged_execute || st->judged_unshaped)
		return;
	if (!st->shapes && !(st->shapes = calloc(SHAPES, sizeof(*st->shapes))))
		return;
	judged_set(st, &st->shapes[st->shape_next], (const char *)shape_buf, n, sp_before,
		   statements);
	st->shape_next = (st->shape_next + 1) % SHAPES;
}

/* One more statement of the text being judged is of class cls. */
static void note_class(struct policy_state *st, enum sql_class cls)
{
	if (st->nclasses < STATEMENT_CLASSES)
		st->classes[st->nclasses] = (uint8_t)cls;
	st->nclasses++;
}

/* The text being judged is allowed: its statements' classes go with the verdict, when
 * there is room for all of them. */
static void pass_classes(const struct policy_state *st, struct stage_result *r)
{
	if (st->nclasses > STATEMENT_CLASSES)
		return;
	r->classes = st->classes;
	r->nclasses = st->nclasses;
}

/* Judge one statement's text; v receives the verdict. Remembers search_path changes and
 * notes the statement's class. */
static void judge(struct policy_state *st, const struct stmt_table *stmts, const char *sql,
		  size_t len, struct policy_verdict *v, unsigned depth, struct query_prepares *qp)
{
	struct policy_stmt_ctx c = stmt_ctx(st);
	char name[SQL_NAME_MAX];
	const struct stmt_entry *e;

	sql_analyze(sql, len, st->lex_opts, &analysis);
	if (depth == 0)
		note_class(st, analysis.primary);
	if (!shape_decides(&analysis))
		st->judged_unshaped = true;
	policy_check_statement(st->rule, &analysis, &c, v);
	if (!v->allowed)
		return;
	if (analysis.flags & SQL_AF_SEARCH_PATH)
		st->search_path_unknown = true;
	if (depth == 0)
		query_prepares_note(qp, &analysis, sql, len);
	/* EXECUTE name runs the prepared text: judge that too, and deny when it is unknown
	 * (prepared where pgwarden could not follow, or its text not kept). */
	if (analysis.prep != SQL_PREP_EXECUTE || depth > 0)
		return;
	st->judged_execute = true;
	memcpy(name, analysis.prep_name, sizeof(name));
	for (unsigned i = qp ? qp->n : 0; i-- > 0;) {
		if (strcmp(qp->e[i].name, name))
			continue;
		if (!qp->e[i].body)
			deny_unknown(v, name);
		else
			judge(st, stmts, qp->e[i].body, qp->e[i].len, v, depth + 1, NULL);
		return;
	}
	e = stmts && !(qp && qp->all_gone) ? stmt_lookup(stmts, name) : NULL;
	if (!e || !e->sql)
		deny_unknown(v, name);
	else
		judge(st, stmts, e->sql, e->sql_len, v, depth + 1, NULL);
}

static uint32_t word_for(const struct policy_state *st, bool allowed)
{
	uint32_t gen = (uint32_t)(st->snap->generation & WORD_GEN_MASK);

	return allowed ? (WORD_ALLOWED | gen) : gen;
}

/* The rate limit: 0 to go on, 1 when r is set (REJECT or PAUSE). */
static int rate(struct stage_ctx *ctx, struct policy_state *st, uint32_t n,
		struct stage_result *r)
{
	const struct policy_limits *l = &st->rule->limits;
	uint64_t wait;
	char reason[128];

	if (!l->statements_per_second || ctx->resumed || n == 0)
		return 0;
	if (!st->rate) {
		st->rate = policy_limit_bucket(st->rule->name, st->user);
		if (!st->rate)
			return 0;
	}
	wait = policy_limit_take_tokens(st->rate, l->statements_per_second, l->burst, n,
					ctx->now_ns, false);
	if (!wait)
		return 0;
	if (l->over == POLICY_OVER_WAIT && wait <= l->max_wait_ms * 1000000ULL) {
		wait = policy_limit_take_tokens(st->rate, l->statements_per_second, l->burst, n,
						ctx->now_ns, true);
		policy_count_firing(POLICY_FIRE_RATE_WAIT);
		stage_result_pause(r, ctx->now_ns + (wait ? wait : 1));
		return 1;
	}
	snprintf(reason, sizeof(reason), "more than %u statements per second",
		 l->statements_per_second);
	policy_count_firing(POLICY_FIRE_RATE_REJECT);
	reject(ctx, st, r, "53400", reason, NULL, 0);
	return 1;
}

/*
 * A walsender command (the replication protocol's grammar, not SQL): in a replication
 * session a rule with replication: true allows these; they are not statements the
 * classifier knows. BASE_BACKUP and START_REPLICATION read everything: that is what the
 * replication allowance means.
 */
static bool replication_command(const char *sql, size_t len, unsigned opts)
{
	static const char *const cmds[] = {
		"identify_system", "start_replication", "create_replication_slot",
		"drop_replication_slot", "read_replication_slot", "timeline_history",
		"base_backup", "upload_manifest", NULL,
	};
	struct sql_lexer lx;
	struct sql_token t;

	sql_lex_init(&lx, sql, len, opts);
	do
		sql_lex_next(&lx, &t);
	while (t.kind == SQL_TOK_SEMI);
	for (const char *const *c = cmds; *c; c++)
		if (sql_tok_is(&lx, &t, *c))
			return true;
	return false;
}

static void on_query(struct stage_ctx *ctx, struct policy_state *st, const struct proto_msg *m,
		     struct stage_result *r)
{
	struct proto_cursor c;
	const char *sql;
	size_t len;
	struct sql_splitter sp;
	struct sql_stmt stmt;
	unsigned n = 0;
	struct policy_verdict v;
	char reason[sizeof(v.reason) + 32];
	struct query_prepares qp = {.n = 0};
	const struct judged *j;
	bool sp_before, shaped;
	size_t shape_len;

	proto_cursor_init(&c, m->body, m->body_len);
	sql = proto_get_cstr(&c);
	if (!sql || !proto_cursor_done(&c)) {
		reject(ctx, st, r, "08P01", "malformed Query message", NULL, 0);
		return;
	}
	len = strlen(sql);
	if (judged_hit(st, &st->judged[0], sql, len)) {
		n = st->judged[0].statements;
		goto allowed;
	}
	shaped = shape_of(st, PqMsg_Query, sql, len, &shape_len);
	if (shaped && (j = shape_hit(st, shape_len))) {
		n = j->statements;
		goto allowed;
	}
	sp_before = st->search_path_unknown;
	st->judged_execute = false;
	st->judged_unshaped = false;
	st->nclasses = 0;
	sql_split_init(&sp, sql, len, st->lex_opts);
	while (sql_split_next(&sp, &stmt)) {
		n++;
		if (n > 1 && st->rule->one_statement_per_query) {
			reject(ctx, st, r, "42501", "one statement per Query message", sql, len);
			return;
		}
		if (ctx->session->replication && st->rule->replication &&
		    replication_command(sql + stmt.off, stmt.len, st->lex_opts)) {
			st->judged_unshaped = true; /* allowed unanalysed */
			note_class(st, sql_classify(sql + stmt.off, stmt.len, st->lex_opts, NULL));
			continue;
		}
		judge(st, ctx->stmts, sql + stmt.off, stmt.len, &v, 0, &qp);
		if (!v.allowed) {
			/* Any denied statement denies the whole Query: nothing of it runs. */
			snprintf(reason, sizeof(reason), "statement %u: %s", n, v.reason);
			reject(ctx, st, r, v.sqlstate, reason, sql + stmt.text_off, stmt.text_len);
			return;
		}
	}
	judged_keep(st, &st->judged[0], sql, len, sp_before, n);
	if (shaped)
		shape_keep(st, shape_len, sp_before, n);
allowed:
	/* A Query that is one SQL PREPARE: remember that we allowed it. */
	if (n == 1 && ctx->stmt_word)
		*ctx->stmt_word = word_for(st, true);
	if (!rate(ctx, st, n, r))
		pass_classes(st, r);
}

static void on_parse(struct stage_ctx *ctx, struct policy_state *st, const struct proto_msg *m,
		     struct stage_result *r)
{
	struct proto_cursor c;
	const char *sql;
	struct policy_verdict v;
	bool sp_before, shaped;
	size_t len, shape_len;

	proto_cursor_init(&c, m->body, m->body_len);
	(void)proto_get_cstr(&c); /* the statement's name */
	sql = proto_get_cstr(&c);
	if (!sql || c.err) {
		reject(ctx, st, r, "08P01", "malformed Parse message", NULL, 0);
		return;
	}
	len = strlen(sql);
	if (judged_hit(st, &st->judged[1], sql, len))
		goto allowed;
	shaped = shape_of(st, PqMsg_Parse, sql, len, &shape_len);
	if (shaped && shape_hit(st, shape_len))
		goto allowed;
	sp_before = st->search_path_unknown;
	st->judged_execute = false;
	st->judged_unshaped = false;
	st->nclasses = 0;
	judge(st, ctx->stmts, sql, len, &v, 0, NULL);
	if (!v.allowed) {
		reject(ctx, st, r, v.sqlstate, v.reason, sql, len);
		return;
	}
	judged_keep(st, &st->judged[1], sql, len, sp_before, 1);
	if (shaped)
		shape_keep(st, shape_len, sp_before, 1);
allowed:
	if (ctx->stmt_word)
		*ctx->stmt_word = word_for(st, true);
	pass_classes(st, r);
}

/* Bind and Execute run a statement judged at its Parse; judge it again when the policy or
 * the session's rule changed since (the word says under which generation it passed). */
static void recheck(struct stage_ctx *ctx, struct policy_state *st, const struct stmt_entry *e,
		    struct stage_result *r)
{
	struct policy_verdict v;
	uint32_t w;

	if (!e || !e->sql)
		return; /* unknown to the server too, or its Parse is still on the way */
	w = e->words[ctx->index];
	if (w == word_for(st, true))
		return;
	judge(st, ctx->stmts, e->sql, e->sql_len, &v, 0, NULL);
	if (!v.allowed)
		reject(ctx, st, r, v.sqlstate, v.reason, e->sql, e->sql_len);
}

static void on_bind(struct stage_ctx *ctx, struct policy_state *st, const struct proto_msg *m,
		    struct stage_result *r)
{
	struct proto_cursor c;
	const char *stmt;

	proto_cursor_init(&c, m->body, m->body_len);
	(void)proto_get_cstr(&c); /* portal */
	stmt = proto_get_cstr(&c);
	if (!stmt) {
		reject(ctx, st, r, "08P01", "malformed Bind message", NULL, 0);
		return;
	}
	recheck(ctx, st, ctx->stmts ? stmt_lookup(ctx->stmts, stmt) : NULL, r);
}

static void on_execute(struct stage_ctx *ctx, struct policy_state *st,
		       const struct proto_msg *m, struct stage_result *r)
{
	struct proto_cursor c;
	const char *portal;

	proto_cursor_init(&c, m->body, m->body_len);
	portal = proto_get_cstr(&c);
	if (!portal) {
		reject(ctx, st, r, "08P01", "malformed Execute message", NULL, 0);
		return;
	}
	recheck(ctx, st, ctx->stmts ? stmt_portal_lookup(ctx->stmts, portal) : NULL, r);
	if (r->verdict == STAGE_FORWARD)
		(void)rate(ctx, st, 1, r);
}

static void on_function_call(struct stage_ctx *ctx, struct policy_state *st,
			     struct stage_result *r)
{
	if (!(st->rule->allow & SQL_CLASS_BIT(SQL_CLASS_FUNCTION_CALL))) {
		reject(ctx, st, r, "42501", "statement class function_call is not allowed", NULL, 0);
		return;
	}
	if (st->rule->function_deny.n) {
		/* FunctionCall names its function by OID: no name to check the list against. */
		reject(ctx, st, r, "42501",
		       "a FunctionCall names its function by OID, which deny_functions cannot "
		       "check",
		       NULL, 0);
		return;
	}
	(void)rate(ctx, st, 1, r);
}

/* A reload happened: match the session's identity against the new rules. */
static bool refresh(struct stage_ctx *ctx, struct policy_state *st, struct stage_result *r)
{
	struct policy *p;
	struct policy_identity id;
	const struct policy_rule *rule;
	char msg[STAGE_MESSAGE_MAX];

	if (policy_generation() == st->snap->generation)
		return true;
	p = policy_acquire();
	if (!p) {
		/* Policy switched off: the session keeps the rules it was admitted under. */
		return true;
	}
	identity(st, ctx->session, &id);
	rule = policy_match_connection(p, &id, ctx->session->auth.ok);
	policy_unref(st->snap);
	st->snap = p;
	if (!rule) {
		refusal(ctx->session, st, msg, sizeof(msg));
		set_rule(st, NULL);
		close_session(ctx, st, r, "28000", msg);
		return false;
	}
	set_rule(st, rule);
	return true;
}

static void policy_frontend(struct stage_ctx *ctx, const struct proto_msg *m,
			    struct stage_result *r)
{
	struct policy_state *st = state_of(ctx);

	if (!st)
		return;
	if (st->pending_close) {
		close_session(ctx, st, r, st->close_sqlstate, st->close_message);
		return;
	}
	if (!refresh(ctx, st, r))
		return;
	if (!st->rule) {
		close_session(ctx, st, r, "28000", "pgwarden: no policy rule admits this session");
		return;
	}
	if (!m->body && m->body_len) {
		reject(ctx, st, r, "54000", "message too large to inspect", NULL, 0);
		return;
	}
	switch (m->type) {
	case PqMsg_Query:
		on_query(ctx, st, m, r);
		break;
	case PqMsg_Parse:
		on_parse(ctx, st, m, r);
		break;
	case PqMsg_Bind:
		on_bind(ctx, st, m, r);
		break;
	case PqMsg_Execute:
		on_execute(ctx, st, m, r);
		break;
	case PqMsg_FunctionCall:
		on_function_call(ctx, st, r);
		break;
	default:
		break;
	}
}

static void policy_session_end(struct stage_ctx *ctx)
{
	struct policy_state *st = state_of(ctx);

	if (!st)
		return;
	policy_limit_put(st->rate);
	st->rate = NULL;
	for (int i = 0; i < 3; i++) {
		policy_limit_put(st->sessions[i]);
		st->sessions[i] = NULL;
	}
}

static void policy_release(void *state)
{
	struct policy_slot *slot = state;
	struct policy_state *st = slot->st;

	if (!st)
		return;

	/* session_end may not have run (the session never started): drop what it holds. */
	policy_limit_put(st->rate);
	for (int i = 0; i < 3; i++)
		policy_limit_put(st->sessions[i]);
	st->rate = NULL;
	memset(st->sessions, 0, sizeof(st->sessions));
	free(st->exe);
	free(st->cgroup);
	for (int i = 0; i < 2; i++) {
		free(st->judged[i].text);
		st->judged[i].text = NULL;
	}
	for (unsigned i = 0; st->shapes && i < SHAPES; i++)
		free(st->shapes[i].text);
	free(st->shapes);
	st->shapes = NULL;
	policy_unref(st->snap);
	free(st);
	slot->st = NULL;
}

const struct stage_ops policy_stage = {
	.name = "policy",
	.state_size = sizeof(struct policy_slot),
	/* EXECUTE and a Bind after a reload are judged by the prepared text. */
	.keep_statement_text = true,
	.frontend_whole = {.bits = {
		/* Query, Parse, Bind, Execute, FunctionCall: 'Q' 'P' 'B' 'E' 'F' (all >= 64) */
		0,
		(1ULL << ('Q' - 64)) | (1ULL << ('P' - 64)) | (1ULL << ('B' - 64)) |
			(1ULL << ('E' - 64)) | (1ULL << ('F' - 64)),
	}},
	.session_start = policy_session_start,
	.frontend = policy_frontend,
	.notice = policy_notice,
	.notices = STAGE_NOTE_BIT(STAGE_NOTE_AUTH) | STAGE_NOTE_BIT(STAGE_NOTE_SERVER_PARAM),
	.session_end = policy_session_end,
	.release = policy_release,
};

const char *policy_stage_rule(const struct stage_chain *ch, unsigned index)
{
	const struct policy_state *st;

	if (!ch || !ch->pipeline || index >= ch->pipeline->count ||
	    ch->pipeline->stages[index] != &policy_stage)
		return "";
	st = slot_state(stage_chain_state(ch, index));
	return st ? st->rule_name : "";
}

enum policy_audit policy_stage_audit(const struct stage_chain *ch, unsigned index)
{
	const struct policy_state *st;

	if (!ch || !ch->pipeline || index >= ch->pipeline->count ||
	    ch->pipeline->stages[index] != &policy_stage)
		return POLICY_AUDIT_NONE;
	st = slot_state(stage_chain_state(ch, index));
	return st && st->rule ? st->rule->audit : POLICY_AUDIT_NONE;
}
