/*
 * mask_stage: the masking stage (see mask_stage.h). Frontend messages push requests onto
 * the tracker; backend messages pop them and plan results; DataRow and CopyData are
 * streamed through the rewriters; errors, notices, notifications and parameters are
 * rewritten whole.
 */
#include "mask/mask_stage.h"

#include "mask/mask_catalog.h"
#include "mask/mask_copy.h"
#include "mask/mask_plan.h"
#include "mask/mask_row.h"
#include "mask/mask_scrub.h"
#include "mask/mask_track.h"
#include "sql/sql.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- process-wide configuration ----------------------------------------------------------- */

/*
 * Whether a catalog may be trusted to list every shadow of a clean name. DDL by a masked
 * session (a view or temporary table named like a clean table, a function named like a
 * safe one, an operator) is not in the catalog until it is committed and read again. The
 * session that ran it waits for a catalog made after its transaction ended (its own
 * names_floor); every other masked session too (the process-wide names_floor below),
 * since the names are visible to them from the commit on. Catalogs are numbered as they
 * are made (mask_catalog.h).
 */
#define NAMES_PENDING UINT64_MAX /* a statement that may change the catalog has not ended */
static _Atomic uint64_t names_floor;

static pthread_mutex_t conf_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mask_stage_config conf = {.row_lookahead = MASK_ROW_LOOKAHEAD_DEFAULT};
static struct mask_key *conf_key;

int mask_stage_configure(const struct mask_stage_config *cfg)
{
	if (cfg->row_lookahead < MASK_ROW_LOOKAHEAD_MIN)
		return -EINVAL;
	pthread_mutex_lock(&conf_lock);
	conf = *cfg;
	pthread_mutex_unlock(&conf_lock);
	return 0;
}

void mask_stage_set_key(struct mask_key *k)
{
	struct mask_key *old;

	pthread_mutex_lock(&conf_lock);
	old = conf_key;
	conf_key = k;
	pthread_mutex_unlock(&conf_lock);
	mask_key_free(old);
}

/* ---- per session ---------------------------------------------------------------------------- */

enum { CD_IDLE = 0, CD_COLLECT, CD_HEADER, CD_BODY };

struct mask_sess {
	bool active;
	const struct session *session; /* for the audit hook; lives as long as this */
	const char *broken; /* why the stage cannot go on: every later message closes */
	struct mask_source src;
	struct mask_policy *policy;
	const struct mask_profile *profile;
	struct mask_catalog *cat;
	struct mask_mac *mac;
	struct mask_env env;
	struct mask_track track;
	bool track_ok;
	uint8_t *la; /* the lookahead (rows) and the held binary values (COPY) */
	uint32_t la_cap;
	/* the DataRow being rewritten */
	bool row_active;
	struct mask_row row;
	/* COPY TO */
	bool copy_active, copy_masks;
	struct mask_plan copy_plan;
	struct mask_env copy_env; /* the COPY's ENCODING option may differ from the session's */
	struct mask_copy *copy;
	uint8_t *cd_buf; /* one CopyData message's output, la_cap bytes */
	uint8_t cd_state;
	uint32_t cd_len, cd_pos;
	uint8_t cd_hdr[5];
	uint8_t cd_hdr_pos;
	/* whole-message rewrites: valid until the next call */
	uint8_t *rw;
	size_t rw_cap;
	/* current interest in DataRow and CopyData */
	enum stage_interest want_rows, want_copy;
	/* what the latest result masked, for the audit record (mask_stage_summary()) */
	char summary[512];
	/* names are trusted only from a catalog of this generation on (NAMES_PENDING: not
	 * before this session's transaction ends) */
	uint64_t names_floor;
};

/* The stage's per-session state: a pointer, so that sessions that are not masked hold
 * nothing more. */
struct mask_slot {
	struct mask_sess *s;
	bool no_memory; /* a masked identity whose state could not be made: it is closed */
};
_Static_assert(_Alignof(struct mask_slot) <= STAGE_STATE_ALIGN, "its slice is aligned for it");

static struct mask_sess *sess_of(const struct stage_ctx *ctx)
{
	return ((struct mask_slot *)ctx->state)->s;
}

static void sess_close(struct stage_result *r, const char *sqlstate, const char *msg)
{
	stage_result_set(r, STAGE_CLOSE, sqlstate, NULL, "pgwarden masking: %s", msg);
}

static void sess_reject(struct stage_result *r, const char *sqlstate, const char *msg)
{
	stage_result_set(r, STAGE_REJECT, sqlstate, NULL, "pgwarden masking: %s", msg);
}

static void sess_broken(struct mask_sess *s, const char *why)
{
	if (!s->broken)
		s->broken = why;
}

/* ---- interest --------------------------------------------------------------------------- */

static const uint8_t frontend_types[] = {PqMsg_Query,   PqMsg_Parse, PqMsg_Bind,
					 PqMsg_Describe, PqMsg_Execute, PqMsg_Close,
					 PqMsg_Sync,    PqMsg_FunctionCall};
static const uint8_t backend_types[] = {
	PqMsg_ParseComplete,   PqMsg_BindComplete,         PqMsg_CloseComplete,
	PqMsg_ParameterDescription, PqMsg_RowDescription,  PqMsg_NoData,
	PqMsg_CommandComplete, PqMsg_EmptyQueryResponse,   PqMsg_PortalSuspended,
	PqMsg_ErrorResponse,   PqMsg_ReadyForQuery,        PqMsg_CopyOutResponse,
	PqMsg_CopyInResponse,  PqMsg_CopyBothResponse,     PqMsg_CopyDone,
	PqMsg_NoticeResponse,  PqMsg_NotificationResponse, PqMsg_ParameterStatus,
	PqMsg_FunctionCallResponse,
};

static void want(struct stage_ctx *ctx, enum proto_dir dir, uint8_t type, enum stage_interest how)
{
	/* -EBUSY: another stage streams the type; masking cannot work then. */
	int r = stage_want(ctx, dir, type, how);

	if (r < 0)
		sess_broken(sess_of(ctx), r == -ENOMEM ? "out of memory"
					: "another stage already streams the messages masking rewrites");
}

static void set_interest(struct stage_ctx *ctx, uint8_t type, enum stage_interest how,
			 enum stage_interest *cur)
{
	if (*cur == how)
		return;
	*cur = how;
	want(ctx, PROTO_BACKEND, type, how);
}

static const struct mask_plan *head_plan(struct mask_sess *s);

/*
 * DataRow is streamed unless the result being received is known to mask nothing; states
 * that produce no rows stream too (it costs nothing there, and it fails safe). CopyData is
 * streamed in a COPY that masks, passed in one that does not, and seen whole outside a COPY,
 * where the server sends none (mask_backend() ends the session on one), rather than
 * streamed: while a stage streams any type, the relay copies every server message through
 * its stream buffer one by one, and a result that masks nothing then cost as much per row as
 * a masked one does.
 */
static void update_interest(struct stage_ctx *ctx)
{
	struct mask_sess *s = sess_of(ctx);
	const struct mask_plan *p = head_plan(s);

	set_interest(ctx, PqMsg_DataRow, !p || mask_plan_masks(p) ? STAGE_STREAM : STAGE_SKIP,
		     &s->want_rows);
	set_interest(ctx, PqMsg_CopyData,
		     !s->copy_active ? STAGE_WHOLE : s->copy_masks ? STAGE_STREAM : STAGE_SKIP,
		     &s->want_copy);
}

/* ---- starting ---------------------------------------------------------------------------- */

static void sess_refresh_env(struct mask_sess *s, const struct session *ss)
{
	mask_env_init(&s->env, session_server_param(ss, "client_encoding"),
		      session_server_param(ss, "DateStyle"), s->mac);
}

static void sess_set_profile(struct mask_sess *s, const struct mask_profile *p)
{
	struct mask_policy *mp = mask_profile_policy(p);

	if (s->policy != mp) {
		mask_policy_get(mp);
		mask_policy_put(s->policy);
		s->policy = mp;
	}
	s->profile = p;
}

static void sess_activate(struct stage_ctx *ctx, const struct mask_profile *p)
{
	struct mask_sess *s = calloc(1, sizeof(*s));
	struct mask_key *k;

	if (!s) {
		((struct mask_slot *)ctx->state)->no_memory = true; /* closed at its next message */
		return;
	}
	((struct mask_slot *)ctx->state)->s = s;

	pthread_mutex_lock(&conf_lock);
	s->src = conf.source;
	s->la_cap = conf.row_lookahead;
	k = conf_key;
	if (k && mask_mac_new(k, &s->mac) < 0)
		s->mac = NULL;
	pthread_mutex_unlock(&conf_lock);
	sess_set_profile(s, p);
	s->session = ctx->session;
	s->active = true;
	s->la = malloc(s->la_cap);
	s->copy = malloc(sizeof(*s->copy));
	if (!s->la || !s->copy || mask_track_init(&s->track) < 0) {
		sess_broken(s, "out of memory");
		return;
	}
	s->track_ok = true;
	mask_row_init(&s->row, s->la, s->la_cap);
	sess_refresh_env(s, ctx->session);
	for (size_t i = 0; i < sizeof(frontend_types); i++)
		want(ctx, PROTO_FRONTEND, frontend_types[i], STAGE_WHOLE);
	for (size_t i = 0; i < sizeof(backend_types); i++)
		want(ctx, PROTO_BACKEND, backend_types[i], STAGE_WHOLE);
	s->want_rows = s->want_copy = STAGE_SKIP;
	update_interest(ctx);
}

/*
 * A refused Query or FunctionCall still ends with a ReadyForQuery: the connection sends the
 * server a "poison" in its place and hides the server's error. Its place in the queue is
 * kept by an empty Query, so that ReadyForQuery is not taken for a later request's. (A
 * refused extended-protocol message needs none: the server skips to Sync.)
 */
static void placeholder(struct mask_sess *s, uint8_t type)
{
	if ((type == PqMsg_Query || type == PqMsg_FunctionCall) && s->track_ok &&
	    !mask_track_push(&s->track, MREQ_QUERY))
		sess_broken(s, "too many requests in flight");
}

static void mask_notice(struct stage_ctx *ctx, const struct stage_note *n)
{
	struct mask_sess *s = sess_of(ctx);
	const struct mask_profile *p;
	const struct mask_source *src;

	if (n->kind == STAGE_NOTE_DECISION && s && s->active && n->result &&
	    n->result->verdict == STAGE_REJECT && n->msg) {
		/* an earlier stage (policy) refused a client message */
		placeholder(s, n->msg->type);
		return;
	}
	if (n->kind != STAGE_NOTE_AUTH || s || !ctx->session->auth.ok)
		return;
	pthread_mutex_lock(&conf_lock);
	src = &conf.source;
	p = src->profile ? src->profile(src->arg, ctx) : NULL;
	pthread_mutex_unlock(&conf_lock);
	if (p && mask_profile_masks(p))
		sess_activate(ctx, p);
	if (p)
		mask_policy_put(mask_profile_policy(p)); /* the source's; the session took its own */
}

/* At a statement boundary with nothing in flight: a reloaded policy, a fresh catalog. */
static void sess_refresh_idle(struct stage_ctx *ctx)
{
	struct mask_sess *s = sess_of(ctx);
	const struct mask_profile *p;

	if (mask_track_len(&s->track) && s->cat)
		return; /* requests in flight were planned with these; a first catalog is taken now */
	if (s->src.profile) {
		p = s->src.profile(s->src.arg, ctx);
		/* A session once masked stays masked: a reload may change how, never whether
		 * (a profile that no longer masks anything still holds its plans). */
		if (p && mask_profile_masks(p))
			sess_set_profile(s, p);
		if (p)
			mask_policy_put(mask_profile_policy(p));
	}
	{
		struct mask_catalog *c = mask_catalog_acquire();

		mask_catalog_put(s->cat);
		s->cat = c;
	}
	sess_refresh_env(s, ctx->session);
}

static bool catalog_ready(const struct mask_sess *s)
{
	return s->cat && mask_catalog_policy(s->cat) == s->policy;
}

/* ---- reading the client's messages ------------------------------------------------------- */

static unsigned lex_opts(const struct session *ss)
{
	const char *scs = session_server_param(ss, "standard_conforming_strings");

	return scs && strcmp(scs, "off") == 0 ? SQL_LEX_BACKSLASH_QUOTES : 0;
}

/* The classifier's view of sql: infos[0..cap) filled, count returned (at least 1). */
static unsigned analyse(struct stage_ctx *ctx, const char *sql, struct mask_stmt_info *infos,
			unsigned cap)
{
	struct mask_sess *s = sess_of(ctx);
	int n = -1;

	memset(infos, 0, cap * sizeof(*infos));
	if (s->src.analyse)
		n = s->src.analyse(s->src.arg, s->profile, sql, strlen(sql), lex_opts(ctx->session),
				   infos, cap);
	if (n <= 0) {
		memset(infos, 0, cap * sizeof(*infos)); /* all unknown */
		return 1;
	}
	for (int i = 0; i < n; i++)
		if (infos[i].ddl)
			s->names_floor = NAMES_PENDING;
	return (unsigned)n;
}

static char *dupstr(const char *s)
{
	return strdup(s ? s : "");
}

static void fe_query(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	struct mask_stmt_info *infos;
	struct mask_req *q;
	const char *sql;
	unsigned n;

	if (proto_read_query(m, &sql) != PROTO_OK)
		return; /* the core refuses malformed messages before stages see them */
	infos = calloc(MASK_STMTS_PER_QUERY, sizeof(*infos));
	if (!infos) {
		sess_reject(r, "53200", "out of memory");
		return;
	}
	n = analyse(ctx, sql, infos, MASK_STMTS_PER_QUERY);
	for (unsigned i = 0; i < n; i++) {
		if (mask_stmt_copy_unmaskable(&infos[i])) {
			free(infos);
			sess_reject(r, "0A000",
				    "COPY of masked data is only possible from a table, with a column "
				    "list the policy can read; use SELECT");
			return;
		}
	}
	q = mask_track_push(&s->track, MREQ_QUERY);
	if (q)
		q->request = ctx->request;
	if (!q) {
		free(infos);
		sess_reject(r, "54000", "too many requests in flight");
		return;
	}
	q->infos = infos;
	q->ninfos = (uint16_t)n;
}

static void fe_parse(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	struct mask_stmt_info infos[2];
	struct mask_req *q;
	const char *name, *sql;
	uint16_t nparams;
	unsigned n;

	if (proto_read_parse(m, &name, &sql, &nparams) != PROTO_OK)
		return;
	n = analyse(ctx, sql, infos, 2);
	if (n != 1)
		memset(infos, 0, sizeof(infos)); /* the server refuses several; unknown anyway */
	if (mask_stmt_copy_unmaskable(&infos[0])) {
		sess_reject(r, "0A000",
			    "COPY of masked data is only possible from a table, with a column list "
			    "the policy can read; use SELECT");
		return;
	}
	q = mask_track_push(&s->track, MREQ_PARSE);
	if (!q || !(q->name = dupstr(name)) || !(q->infos = mask_stmt_info_dup(&infos[0]))) {
		sess_reject(r, "54000", "too many requests in flight");
		return;
	}
	q->ninfos = 1;
}

/* Bind: portal, statement, and the result-format codes at the end of the message. */
static void fe_bind(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	struct proto_cursor c;
	const char *portal, *stmt;
	uint16_t npf, np, nrf;
	struct mask_req *q;

	proto_cursor_init(&c, m->body, m->body_len);
	portal = proto_get_cstr(&c);
	stmt = proto_get_cstr(&c);
	npf = proto_get_u16(&c);
	for (unsigned i = 0; i < npf; i++)
		(void)proto_get_u16(&c);
	np = proto_get_u16(&c);
	for (unsigned i = 0; i < np && !c.err; i++) {
		int32_t len = proto_get_i32(&c);

		if (len > 0)
			(void)proto_get_bytes(&c, (size_t)len);
	}
	nrf = proto_get_u16(&c);
	if (c.err)
		return;
	q = mask_track_push(&s->track, MREQ_BIND);
	if (!q || !(q->name = dupstr(portal)) || !(q->stmt = dupstr(stmt)) ||
	    !(q->formats = calloc(nrf ? nrf : 1, sizeof(int16_t)))) {
		sess_reject(r, "54000", "too many requests in flight");
		return;
	}
	q->nformats = nrf;
	for (unsigned i = 0; i < nrf; i++)
		q->formats[i] = proto_get_i16(&c);
}

static void fe_describe_close(struct stage_ctx *ctx, const struct proto_msg *m,
			      struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	struct proto_cursor c;
	struct mask_req *q;
	uint8_t what;
	const char *name;
	enum mask_req_kind kind;

	proto_cursor_init(&c, m->body, m->body_len);
	what = proto_get_u8(&c);
	name = proto_get_cstr(&c);
	if (!proto_cursor_done(&c) || (what != 'S' && what != 'P'))
		return;
	if (m->type == PqMsg_Describe)
		kind = what == 'S' ? MREQ_DESCRIBE_S : MREQ_DESCRIBE_P;
	else
		kind = what == 'S' ? MREQ_CLOSE_S : MREQ_CLOSE_P;
	q = mask_track_push(&s->track, kind);
	if (!q || !(q->name = dupstr(name)))
		sess_reject(r, "54000", "too many requests in flight");
}

/*
 * Will the portal's result be described by the time its rows come? A confirmed portal
 * that was; a Describe('P') of it still in flight; a Bind of it (in flight) from a
 * statement described, or being described. Also: the statement cannot return rows.
 */
static bool execute_describable(struct mask_sess *s, const char *portal)
{
	const struct mask_named *pn = mask_track_find(&s->track, MASK_NS_PORTAL, portal);
	const char *stmt = NULL;
	bool stmt_pending_desc = false;

	if (pn && (pn->described || (pn->info && pn->info->no_rows)))
		return true;
	for (unsigned i = 0; i < mask_track_len(&s->track); i++) {
		const struct mask_req *q = mask_track_at(&s->track, i);

		if (q->kind == MREQ_DESCRIBE_P && strcmp(q->name, portal) == 0)
			return true;
		if (q->kind == MREQ_BIND && strcmp(q->name, portal) == 0) {
			stmt = q->stmt;
			stmt_pending_desc = false;
		}
		if (stmt && q->kind == MREQ_DESCRIBE_S && strcmp(q->name, stmt) == 0)
			stmt_pending_desc = true;
		if (q->kind == MREQ_PARSE && stmt && strcmp(q->name, stmt) == 0 && q->infos &&
		    q->infos[0].no_rows)
			stmt_pending_desc = true;
	}
	if (!stmt)
		return false; /* no Bind in flight, and the confirmed portal was not described */
	if (stmt_pending_desc)
		return true;
	{
		const struct mask_named *sn = mask_track_find(&s->track, MASK_NS_STMT, stmt);

		return sn && (sn->described || (sn->info && sn->info->no_rows));
	}
}

static void fe_execute(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	struct proto_cursor c;
	struct mask_req *q;
	const char *portal;

	proto_cursor_init(&c, m->body, m->body_len);
	portal = proto_get_cstr(&c);
	(void)proto_get_u32(&c);
	if (!proto_cursor_done(&c))
		return;
	if (!execute_describable(s, portal)) {
		sess_reject(r, "0A000",
			    "a masked session must describe a statement or portal (Describe) before "
			    "executing it, so that its columns are known");
		return;
	}
	q = mask_track_push(&s->track, MREQ_EXECUTE);
	if (q)
		q->request = ctx->request;
	if (!q || !(q->name = dupstr(portal)))
		sess_reject(r, "54000", "too many requests in flight");
}

static void mask_frontend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);

	if (((struct mask_slot *)ctx->state)->no_memory) {
		sess_close(r, "53200", "out of memory");
		return;
	}
	if (!s || !s->active)
		return;
	if (s->broken) {
		sess_close(r, "XX000", s->broken);
		return;
	}
	if (ctx->session->replication) {
		sess_close(r, "42501", "replication connections are not available to masked identities");
		return;
	}
	if (m->type == PqMsg_Query || m->type == PqMsg_Parse) {
		sess_refresh_idle(ctx);
		if (s->src.covers && !s->src.covers(s->src.arg, ctx->session)) {
			sess_reject(r, "55000",
				    "masked identities may only use the database the masking catalog "
				    "describes");
			return;
		}
		if (!catalog_ready(s)) {
			sess_reject(r, "55000",
				    "the catalog for the current masking policy is not resolved yet; "
				    "try again");
			return;
		}
	}
	switch (m->type) {
	case PqMsg_Query:
		fe_query(ctx, m, r);
		break;
	case PqMsg_Parse:
		fe_parse(ctx, m, r);
		break;
	case PqMsg_Bind:
		fe_bind(ctx, m, r);
		break;
	case PqMsg_Describe:
	case PqMsg_Close:
		fe_describe_close(ctx, m, r);
		break;
	case PqMsg_Execute:
		fe_execute(ctx, m, r);
		break;
	case PqMsg_Sync:
		if (!mask_track_push(&s->track, MREQ_SYNC))
			sess_close(r, "54000", "too many requests in flight");
		break;
	case PqMsg_FunctionCall:
		sess_reject(r, "42501", "the function-call protocol is not available to masked "
				       "identities");
		break;
	default:
		break;
	}
	if (r->verdict == STAGE_REJECT)
		placeholder(s, m->type);
	update_interest(ctx);
}

/* ---- planning results ------------------------------------------------------------------------- */

/* The statement facts of a QUERY's current statement or an EXECUTE's portal. */
static const struct mask_stmt_info *req_info(struct mask_sess *s, const struct mask_req *q)
{
	if (q->kind == MREQ_QUERY)
		return q->cur < q->ninfos ? &q->infos[q->cur] : NULL;
	if (q->kind == MREQ_EXECUTE) {
		const struct mask_named *pn = mask_track_find(&s->track, MASK_NS_PORTAL, q->name);

		return pn ? pn->info : NULL;
	}
	return NULL;
}

/* Is cat at least as new as the newest DDL any masked session saw pass? */
static bool catalog_past_names_floor(const struct mask_catalog *cat)
{
	return mask_catalog_generation(cat) >= atomic_load(&names_floor);
}

static bool names_trusted(const struct mask_sess *s)
{
	return s->names_floor != NAMES_PENDING &&
	       mask_catalog_generation(s->cat) >= s->names_floor &&
	       catalog_past_names_floor(s->cat);
}

/* One statement's own references, against cat: NONE only when the classifier is sure of
 * every name and the catalog, whose names are trusted, calls each one clean. */
static enum mask_refs resolve_against(const struct mask_catalog *cat, bool trusted,
				      const struct mask_stmt_info *in)
{
	enum mask_refs refs = mask_stmt_refs(in);
	const char *schema, *name;
	size_t pos = 0;

	if (refs != MASK_REFS_NONE && refs != MASK_REFS_NAMES)
		return refs;
	/* an operator or a cast can run any code, even in SELECT 1 + 1 */
	if (!cat || !trusted || mask_catalog_code_hooks(cat))
		return MASK_REFS_MASKED;
	if (refs == MASK_REFS_NONE)
		return MASK_REFS_NONE;
	for (unsigned i = 0; i < in->nrelations; i++)
		if (!mask_stmt_next_name(in, &pos, &schema, &name) ||
		    !mask_catalog_relation_clean(cat, schema, name))
			return MASK_REFS_MASKED;
	for (unsigned i = 0; i < in->nfunctions; i++)
		if (!mask_stmt_next_name(in, &pos, &schema, &name) ||
		    !mask_catalog_function_clean(cat, schema, name))
			return MASK_REFS_MASKED;
	return MASK_REFS_NONE;
}

static enum mask_refs resolve_one(const struct mask_sess *s, const struct mask_stmt_info *in)
{
	return resolve_against(s->cat, s->cat && names_trusted(s), in);
}

enum mask_refs mask_stage_statement_refs(const struct mask_catalog *cat,
					 const struct mask_stmt_info *in)
{
	return resolve_against(cat, cat && catalog_past_names_floor(cat), in);
}

/*
 * The one place a statement's references are decided, for planning. A FETCH or an SQL
 * EXECUTE reads what its DECLARE or PREPARE defined, and an EXECUTE's arguments are
 * expressions of their own (EXECUTE p(customer_ssn(1))): both must be clean.
 */
static enum mask_refs info_refs(struct mask_sess *s, const struct mask_stmt_info *in)
{
	enum mask_refs own = resolve_one(s, in);

	if (in && in->name_use == MASK_NAME_USES) {
		const struct mask_named *d = mask_track_find(&s->track, MASK_NS_SQLNAME, in->name);
		enum mask_refs def = d ? resolve_one(s, d->info) : MASK_REFS_UNKNOWN;

		return own == MASK_REFS_NONE ? def : own;
	}
	return own;
}

/* "ssn=partial-last-4,card=hash,#3=null(computed)": what a plan masks, for audit. */
static void plan_summary(struct mask_sess *s, const struct mask_plan *p, uint64_t request)
{
	if (s->src.masked && mask_plan_masks(p) && s->cat)
		s->src.masked(s->src.arg, s->session, request, p, mask_catalog_policy(s->cat));
	size_t o = 0;

	s->summary[0] = '\0';
	for (unsigned i = 0; i < p->ncols && o + 1 < sizeof(s->summary); i++) {
		const struct mask_plan_col *c = &p->cols[i];
		char st[MASK_STRATEGY_STRLEN], name[MASK_COLREF_STRLEN];
		int k;

		if (c->kind == MASK_COL_CLEAR)
			continue;
		if (c->rule_col >= 0 && s->cat)
			mask_colref_format(mask_policy_column(mask_catalog_policy(s->cat),
							      (unsigned)c->rule_col),
					   name, sizeof(name));
		else
			snprintf(name, sizeof(name), "#%u", i + 1);
		k = snprintf(s->summary + o, sizeof(s->summary) - o, "%s%s=%s%s", o ? "," : "",
			     name, mask_strategy_format(&c->action.st, st, sizeof(st)),
			     c->why == MASK_WHY_COLUMN     ? ""
			     : c->why == MASK_WHY_COMPUTED ? "(computed)"
			     : c->why == MASK_WHY_DERIVED  ? "(view)"
			     : c->why == MASK_WHY_UNLISTED ? "(unlisted)"
						       : "(fallback)");
		if (k < 0 || (size_t)k >= sizeof(s->summary) - o) {
			s->summary[o] = '\0'; /* whole entries only */
			break;
		}
		o += (size_t)k;
	}
}

size_t mask_stage_summary(const void *stage_state, char *out, size_t cap)
{
	const struct mask_slot *slot = stage_state;

	if (!cap)
		return 0;
	snprintf(out, cap, "%s", slot && slot->s ? slot->s->summary : "");
	return strlen(out);
}

/* Plan an EXECUTE from its portal's description, when there is one. */
static void plan_execute(struct mask_sess *s, struct mask_req *q)
{
	const struct mask_named *pn;

	if (q->planned)
		return;
	pn = mask_track_find(&s->track, MASK_NS_PORTAL, q->name);
	if (!pn || !pn->described || !s->cat)
		return;
	if (mask_plan_build(&q->plan, &pn->desc, s->profile, s->cat, &s->env,
			    info_refs(s, pn->info), names_trusted(s)) == 0) {
		q->planned = true;
		plan_summary(s, &q->plan, q->request);
	}
}

/* The plan of the result rows would belong to now, or NULL when not known (yet). */
static const struct mask_plan *head_plan(struct mask_sess *s)
{
	struct mask_req *q = s->track_ok ? mask_track_head(&s->track) : NULL;

	if (!q)
		return NULL;
	if (q->kind == MREQ_EXECUTE)
		plan_execute(s, q);
	if ((q->kind == MREQ_QUERY || q->kind == MREQ_EXECUTE) && q->planned)
		return &q->plan;
	return NULL;
}

/* ---- the server's messages ------------------------------------------------------------------ */

static struct mask_req *head_is(struct mask_sess *s, enum mask_req_kind a, enum mask_req_kind b)
{
	struct mask_req *q = mask_track_head(&s->track);

	if (q && (q->kind == a || q->kind == b))
		return q;
	sess_broken(s, "lost track of which request a server message answers");
	return NULL;
}

static void be_parse_complete(struct mask_sess *s)
{
	struct mask_req *q = head_is(s, MREQ_PARSE, MREQ_PARSE);
	struct mask_named *n;

	if (!q)
		return;
	n = mask_track_put(&s->track, MASK_NS_STMT, q->name);
	if (!n)
		sess_broken(s, "too many prepared statements to follow");
	else
		n->info = mask_stmt_info_dup(q->infos);
	mask_track_pop(&s->track);
}

static void be_bind_complete(struct mask_sess *s)
{
	struct mask_req *q = head_is(s, MREQ_BIND, MREQ_BIND);
	const struct mask_named *sn;
	struct mask_named *pn;

	if (!q)
		return;
	sn = mask_track_find(&s->track, MASK_NS_STMT, q->stmt);
	if (!sn) /* an SQL PREPAREd statement: its definition's facts */
		sn = mask_track_find(&s->track, MASK_NS_SQLNAME, q->stmt);
	pn = mask_track_put(&s->track, MASK_NS_PORTAL, q->name);
	if (!pn) {
		sess_broken(s, "too many portals to follow");
		mask_track_pop(&s->track);
		return;
	}
	if (sn && sn->info)
		pn->info = mask_stmt_info_dup(sn->info);
	if (sn && sn->described && mask_desc_copy(&pn->desc, &sn->desc) == 0) {
		if (mask_desc_set_formats(&pn->desc, q->formats, q->nformats) == 0)
			pn->described = true;
		else
			mask_desc_free(&pn->desc);
	}
	mask_track_pop(&s->track);
}

static void be_close_complete(struct mask_sess *s)
{
	struct mask_req *q = head_is(s, MREQ_CLOSE_S, MREQ_CLOSE_P);

	if (!q)
		return;
	mask_track_drop(&s->track, q->kind == MREQ_CLOSE_S ? MASK_NS_STMT : MASK_NS_PORTAL, q->name);
	mask_track_pop(&s->track);
}

static void be_row_description(struct mask_sess *s, const struct proto_msg *m, bool nodata)
{
	struct mask_req *q = mask_track_head(&s->track);
	struct mask_desc d = {0};

	if (!q) {
		sess_broken(s, "a row description answers no request");
		return;
	}
	if (!nodata && mask_desc_from_rowdesc(&d, m) < 0) {
		sess_broken(s, "the server sent a malformed RowDescription");
		return;
	}
	if (q->kind == MREQ_DESCRIBE_S || q->kind == MREQ_DESCRIBE_P) {
		struct mask_named *n = mask_track_find(
			&s->track, q->kind == MREQ_DESCRIBE_S ? MASK_NS_STMT : MASK_NS_PORTAL, q->name);

		if (n) {
			mask_desc_free(&n->desc);
			n->desc = d;
			n->described = true;
			d.cols = NULL;
		}
		mask_desc_free(&d);
		mask_track_pop(&s->track);
		return;
	}
	if (q->kind == MREQ_QUERY && !nodata) {
		const struct mask_stmt_info *in = req_info(s, q);

		mask_plan_free(&q->plan);
		q->planned = s->cat && mask_plan_build(&q->plan, &d, s->profile, s->cat, &s->env,
						      info_refs(s, in), names_trusted(s)) == 0;
		if (q->planned)
			plan_summary(s, &q->plan, q->request);
		mask_desc_free(&d);
		return;
	}
	mask_desc_free(&d);
	sess_broken(s, "a row description answers no describe or query");
}

/* A statement completed: cursors and SQL prepared names it made or dropped; DDL. */
static void statement_done(struct mask_sess *s, const struct mask_stmt_info *in, const char *tag)
{
	/* read the catalog again once the transaction has ended (be_ready()) */
	if ((in && in->ddl) || mask_ddl_invalidates(tag))
		s->names_floor = NAMES_PENDING;
	if (!in || !tag)
		return;
	switch (in->name_use) {
	case MASK_NAME_DEFINES:
		if (!strcmp(tag, "DECLARE CURSOR") || !strcmp(tag, "PREPARE")) {
			struct mask_named *n = mask_track_put(&s->track, MASK_NS_SQLNAME, in->name);

			if (n)
				n->info = mask_stmt_info_dup(in);
			else
				sess_broken(s, "too many cursors to follow");
		}
		break;
	case MASK_NAME_DROPS:
		mask_track_drop(&s->track, MASK_NS_SQLNAME, in->name);
		if (!strcmp(tag, "DEALLOCATE"))
			mask_track_drop(&s->track, MASK_NS_STMT, in->name);
		break;
	case MASK_NAME_DROPS_ALL:
		mask_track_drop_all(&s->track, MASK_NS_SQLNAME);
		if (strcmp(tag, "CLOSE CURSOR ALL") != 0)
			mask_track_drop_all(&s->track, MASK_NS_STMT);
		break;
	default:
		break;
	}
}

static void end_copy(struct mask_sess *s)
{
	s->copy_active = false;
	s->copy_masks = false;
	mask_plan_free(&s->copy_plan);
	s->cd_state = CD_IDLE;
}

static void be_complete(struct mask_sess *s, const struct proto_msg *m)
{
	struct mask_req *q = mask_track_head(&s->track);
	const char *tag = NULL;

	if (m->type == PqMsg_CommandComplete && proto_read_command_complete(m, &tag) != PROTO_OK)
		tag = NULL;
	if (!q || (q->kind != MREQ_QUERY && q->kind != MREQ_EXECUTE)) {
		sess_broken(s, "a completion answers no query or execute");
		return;
	}
	end_copy(s);
	if (m->type != PqMsg_PortalSuspended)
		statement_done(s, req_info(s, q), tag);
	if (q->kind == MREQ_EXECUTE) {
		mask_track_pop(&s->track);
		return;
	}
	q->cur++;
	mask_plan_free(&q->plan);
	q->planned = false;
}

static void be_error(struct mask_sess *s)
{
	struct mask_req *q = mask_track_head(&s->track);

	end_copy(s);
	if (!q)
		return;
	if (q->kind == MREQ_QUERY) {
		q->cur = q->ninfos; /* a Query ends at its first error; ReadyForQuery follows */
		mask_plan_free(&q->plan);
		q->planned = false;
		return;
	}
	/* extended protocol: the server skips to Sync */
	while ((q = mask_track_head(&s->track)) && q->kind != MREQ_SYNC && q->kind != MREQ_QUERY)
		mask_track_pop(&s->track);
}

static void be_ready(struct mask_sess *s, const struct proto_msg *m)
{
	struct mask_req *q;
	uint8_t status = 0;

	end_copy(s);
	while ((q = mask_track_head(&s->track))) {
		bool last = q->kind == MREQ_SYNC || q->kind == MREQ_QUERY;

		mask_track_pop(&s->track);
		if (last)
			break;
	}
	if (proto_read_ready(m, &status) != PROTO_OK || status != 'I')
		return;
	mask_track_drop_all(&s->track, MASK_NS_PORTAL); /* portals end with their transaction */
	if (s->names_floor == NAMES_PENDING) {
		/* The DDL is committed (or gone): a catalog made from now on sees it. */
		uint64_t floor = mask_catalog_next_generation(), cur;

		s->names_floor = floor;
		cur = atomic_load(&names_floor);
		while (cur < floor && !atomic_compare_exchange_weak(&names_floor, &cur, floor))
			;
		if (s->src.catalog_stale)
			s->src.catalog_stale(s->src.arg);
	}
}

static void copy_begin(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	struct mask_req *q = mask_track_head(&s->track);
	const struct mask_stmt_info *in = q ? req_info(s, q) : NULL;
	struct mask_origin origins[1664]; /* MaxTupleAttributeNumber */
	const size_t max_origins = sizeof(origins) / sizeof(origins[0]);
	enum mask_refs refs;
	uint8_t format;
	uint16_t ncols;
	int n = -EDOM, rc;

	if (proto_read_copy_response(m, &format, &ncols) != PROTO_OK) {
		sess_close(r, "08P01", "the server sent a malformed CopyOutResponse");
		return;
	}
	if (!q || !in || !in->copy_to || !in->copy_opts_known ||
	    mask_copy_wire_format(&in->copy_opts) != format) {
		sess_close(r, "0A000", "a COPY TO whose statement masking could not read");
		return;
	}
	refs = info_refs(s, in);
	if (!in->copy_query && !in->copy_cols_overflow) {
		const char *cols[MASK_COPY_COLS_BYTES / 2];
		const char *p = in->copy_cols;

		for (unsigned i = 0; i < in->ncopy_cols; i++) {
			cols[i] = p;
			p += strlen(p) + 1;
		}
		n = mask_catalog_copy_columns(s->cat, in->copy_schema[0] ? in->copy_schema : NULL,
					      in->copy_table, cols, in->ncopy_cols, origins,
					      max_origins);
	}
	if (n == 0 && ncols <= max_origins) {
		/* no masked table of that name: nothing in it is masked */
		for (unsigned i = 0; i < ncols; i++)
			origins[i] = (struct mask_origin){0, 0};
		n = ncols;
	} else if (n < 0) {
		/* a masked table's name, but its columns cannot be placed: all of them masked */
		refs = MASK_REFS_MASKED;
	}
	if (n > 0 && n != ncols) {
		sess_close(r, "0A000", "a COPY whose columns do not match what masking expected");
		return;
	}
	s->copy_env = s->env;
	if (in->copy_encoding[0])
		mask_env_init(&s->copy_env, in->copy_encoding,
			      session_server_param(ctx->session, "DateStyle"), s->mac);
	rc = mask_plan_copy(&s->copy_plan, n > 0 ? origins : NULL, ncols, format, s->profile, s->cat,
			    &s->copy_env, refs);
	if (rc < 0) {
		sess_close(r, "53200", "out of memory");
		return;
	}
	s->copy_masks = mask_plan_masks(&s->copy_plan);
	plan_summary(s, &s->copy_plan, q ? q->request : 0);
	if (s->copy_masks && !s->cd_buf && !(s->cd_buf = malloc(s->la_cap))) {
		end_copy(s);
		sess_close(r, "53200", "out of memory");
		return;
	}
	mask_copy_init(s->copy, s->la, s->la_cap);
	rc = mask_copy_begin(s->copy, &in->copy_opts, &s->copy_plan, &s->copy_env);
	if (rc < 0) {
		end_copy(s);
		sess_close(r, "0A000", rc == -EOPNOTSUPP
					       ? "COPY of masked data in an encoding that is not "
						 "ASCII-safe"
					       : "COPY options masking cannot read");
		return;
	}
	s->copy_active = true;
	s->cd_state = CD_IDLE;
}

/* Room for a whole-message rewrite. */
static uint8_t *rw_room(struct mask_sess *s, size_t need)
{
	if (s->rw_cap < need) {
		uint8_t *p = realloc(s->rw, need);

		if (!p)
			return NULL;
		s->rw = p;
		s->rw_cap = need;
	}
	return s->rw;
}

static void scrub(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	size_t need = PROTO_HEADER_LEN + m->body_len + MASK_SCRUB_SLACK;
	uint8_t *out = rw_room(s, need);
	int n;

	if (!out) {
		sess_close(r, "53200", "out of memory");
		return;
	}
	if (m->type == PqMsg_ParameterStatus) {
		const char *name, *value;

		if (proto_read_parameter_status(m, &name, &value) != PROTO_OK)
			return;
		/* results from here on are in the new encoding or DateStyle */
		if (!strcmp(name, "client_encoding"))
			mask_env_init(&s->env, value, session_server_param(ctx->session, "DateStyle"),
				      s->mac);
		else if (!strcmp(name, "DateStyle"))
			mask_env_init(&s->env, session_server_param(ctx->session, "client_encoding"),
				      value, s->mac);
		n = mask_scrub_parameter(m, session_startup_param(ctx->session, name), out, need);
	} else if (m->type == PqMsg_NotificationResponse) {
		n = mask_scrub_notification(m, out, need);
	} else {
		n = mask_scrub_error(m, out, need);
	}
	if (n < 0) {
		sess_close(r, "08P01", "the server sent a malformed message");
		return;
	}
	if (n > 0)
		stage_result_rewrite(r, out, (uint32_t)n);
}

static void mask_backend(struct stage_ctx *ctx, const struct proto_msg *m, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);

	if (!s || !s->active)
		return;
	if (s->broken) {
		sess_close(r, "XX000", s->broken);
		return;
	}
	switch (m->type) {
	case PqMsg_ParseComplete:
		be_parse_complete(s);
		break;
	case PqMsg_BindComplete:
		be_bind_complete(s);
		break;
	case PqMsg_CloseComplete:
		be_close_complete(s);
		break;
	case PqMsg_ParameterDescription:
		break; /* a Describe('S') goes on with RowDescription or NoData */
	case PqMsg_RowDescription:
		be_row_description(s, m, false);
		break;
	case PqMsg_NoData:
		be_row_description(s, m, true);
		break;
	case PqMsg_CommandComplete:
	case PqMsg_EmptyQueryResponse:
	case PqMsg_PortalSuspended:
		be_complete(s, m);
		break;
	case PqMsg_ErrorResponse:
		be_error(s);
		scrub(ctx, m, r);
		break;
	case PqMsg_ReadyForQuery:
		be_ready(s, m);
		break;
	case PqMsg_CopyOutResponse:
		copy_begin(ctx, m, r);
		break;
	case PqMsg_CopyDone:
		if (s->copy_active && s->copy_masks &&
		    (s->cd_state != CD_IDLE || mask_copy_end(s->copy) < 0))
			sess_close(r, "08P01", "the COPY data ended inside a row");
		break;
	case PqMsg_CopyBothResponse:
		sess_close(r, "42501", "COPY BOTH (replication) is not available to masked identities");
		break;
	case PqMsg_CopyData: /* seen whole only outside a COPY (update_interest()) */
		sess_close(r, "XX000", "COPY data outside a COPY");
		break;
	case PqMsg_FunctionCallResponse:
		sess_close(r, "XX000", "a function-call result answers no request");
		break;
	case PqMsg_NoticeResponse:
	case PqMsg_NotificationResponse:
	case PqMsg_ParameterStatus:
		scrub(ctx, m, r);
		break;
	default:
		break;
	}
	if (s->broken && r->verdict == STAGE_FORWARD)
		sess_close(r, "XX000", s->broken);
	update_interest(ctx);
}

/* ---- streamed messages ---------------------------------------------------------------------- */

static void close_for(struct stage_result *r, int rc, uint32_t la_cap)
{
	char msg[160];

	switch (rc) {
	case -E2BIG:
	case -EOVERFLOW:
		snprintf(msg, sizeof(msg),
			 "a row whose masked columns lie beyond the %u-byte lookahead "
			 "(mask.row_lookahead) cannot be masked",
			 la_cap);
		sess_close(r, "54000", msg);
		return;
	case -EPROTO:
		sess_close(r, "08P01", "the server sent data that does not agree with its description");
		return;
	case -ENOMEM:
		sess_close(r, "53200", "out of memory");
		return;
	default:
		sess_close(r, "XX000", "masking failed");
		return;
	}
}

/* The row machine on a DataRow as stream() gives it, from the row's start under plan p when
 * no row is under way; it goes on with the row over as many calls as it needs. */
static void row_machine(struct mask_sess *s, const struct mask_plan *p, struct stage_stream *st,
			struct stage_result *r)
{
	bool done;
	int rc;

	if (!s->row_active) {
		rc = mask_row_begin(&s->row, p, &s->env, st->body_len);
		if (rc < 0) {
			close_for(r, rc, s->la_cap);
			return;
		}
		s->row_active = true;
	}
	rc = mask_row_step(&s->row, st->in, st->in_len, &st->consumed, st->out, st->out_cap,
			   &st->produced, &done);
	if (rc < 0) {
		s->row_active = false;
		close_for(r, rc, s->la_cap);
		return;
	}
	if (done) {
		s->row_active = false;
		st->done = true;
	}
}

/* The plan rows are rewritten under now, or NULL with r closing the session: rows of a
 * result whose columns are not known cannot be masked. */
static const struct mask_plan *row_plan(struct mask_sess *s, struct stage_result *r)
{
	const struct mask_plan *p = head_plan(s);

	if (!p)
		sess_close(r, "XX000", "a row of a result whose columns are not known");
	return p;
}

static void stream_row(struct mask_sess *s, struct stage_stream *st, struct stage_result *r)
{
	const struct mask_plan *p = s->row_active ? s->row.plan : row_plan(s, r);

	if (!p)
		return;
	if (!s->row_active && !st->body_offset && st->in_len >= st->body_len) {
		/* here whole: one pass, or the machine when that declines */
		st->produced = mask_row_whole(p, &s->env, st->in, st->body_len, s->la_cap, st->out,
					      st->out_cap);
		if (st->produced) {
			st->consumed = st->body_len;
			st->done = true;
			return;
		}
	}
	row_machine(s, p, st, r);
}

/*
 * A CopyData message that is here whole, rewritten straight into the stream buffer behind
 * room for its header: when it all fits and nothing is left pending, the header goes in
 * front and the message is done (true; true also when it failed, the session closed as
 * the collection would have closed it). Otherwise what was written becomes the start of
 * the collected output, exactly as if it had been collected (the same feed into no more
 * room than the collection has), and stream_copy() goes on from there.
 */
static bool copy_in_place(struct mask_sess *s, struct stage_stream *st, struct stage_result *r,
			  size_t *in_used)
{
	size_t used, made, cap;
	int rc;

	if (st->body_offset || st->in_len != st->body_len || st->out_cap <= 5)
		return false;
	cap = st->out_cap - 5 < s->la_cap ? st->out_cap - 5 : s->la_cap;
	rc = mask_copy_feed(s->copy, st->in, st->in_len, &used, st->out + 5, cap, &made);
	/* Done only with room to spare: a rewriter that filled the room may still owe output
	 * for input it has taken (a transformer holds some), which belongs in this message. */
	if (rc == 0 && used == st->in_len && !mask_copy_pending(s->copy) && made < cap) {
		st->out[0] = PqMsg_CopyData;
		proto_write_u32(st->out + 1, (uint32_t)made + 4);
		st->consumed = used;
		st->produced = 5 + made;
		s->cd_state = CD_IDLE;
		st->done = true;
		return true;
	}
	if (rc < 0) {
		end_copy(s);
		close_for(r, rc, s->la_cap);
		return true;
	}
	memcpy(s->cd_buf, st->out + 5, made);
	s->cd_len = (uint32_t)made;
	*in_used = used;
	return false;
}

/*
 * CopyData: the rewritten bytes of one input message are collected (up to la_cap), then
 * written as one CopyData message; output that outgrows la_cap goes out as further CopyData
 * messages, in order (the COPY stream is the concatenation, whatever the message bounds).
 */
static void stream_copy(struct stage_ctx *ctx, struct stage_stream *st, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	size_t in_used = 0, out_used = 0;

	if (!s->copy_active) {
		sess_close(r, "XX000", "COPY data outside a COPY");
		return;
	}
	if (s->cd_state == CD_IDLE) {
		s->cd_state = CD_COLLECT;
		s->cd_len = 0;
		if (copy_in_place(s, st, r, &in_used))
			return;
	}
	for (;;) {
		if (s->cd_state == CD_COLLECT) {
			bool input_done;
			size_t used, made;
			int rc = mask_copy_feed(s->copy, st->in + in_used, st->in_len - in_used, &used,
						s->cd_buf + s->cd_len, s->la_cap - s->cd_len, &made);

			if (rc < 0) {
				end_copy(s);
				close_for(r, rc, s->la_cap);
				break;
			}
			in_used += used;
			s->cd_len += (uint32_t)made;
			input_done = st->body_offset + in_used == st->body_len &&
				     !mask_copy_pending(s->copy);
			if (!input_done && s->cd_len < s->la_cap) {
				if (used || made)
					continue;
				break; /* the rest of the message comes in later calls */
			}
			s->cd_hdr[0] = PqMsg_CopyData;
			proto_write_u32(s->cd_hdr + 1, s->cd_len + 4);
			s->cd_hdr_pos = 0;
			s->cd_pos = 0;
			s->cd_state = CD_HEADER;
		}
		if (s->cd_state == CD_HEADER) {
			size_t k = 5 - s->cd_hdr_pos;

			if (k > st->out_cap - out_used)
				k = st->out_cap - out_used;
			memcpy(st->out + out_used, s->cd_hdr + s->cd_hdr_pos, k);
			out_used += k;
			s->cd_hdr_pos = (uint8_t)(s->cd_hdr_pos + k);
			if (s->cd_hdr_pos < 5)
				break;
			s->cd_state = CD_BODY;
		}
		if (s->cd_state == CD_BODY) {
			size_t k = s->cd_len - s->cd_pos;

			if (k > st->out_cap - out_used)
				k = st->out_cap - out_used;
			memcpy(st->out + out_used, s->cd_buf + s->cd_pos, k);
			out_used += k;
			s->cd_pos += (uint32_t)k;
			if (s->cd_pos < s->cd_len)
				break;
			s->cd_len = 0;
			if (st->body_offset + in_used == st->body_len && !mask_copy_pending(s->copy)) {
				s->cd_state = CD_IDLE;
				st->done = true;
				break;
			}
			s->cd_state = CD_COLLECT; /* the message's output goes on in another one */
		}
	}
	st->consumed = in_used;
	st->produced = out_used;
}

/*
 * A CopyData message of a run whose rows all lie whole in it and all go through the one
 * pass (mask_copy_whole()): its header and rewritten rows straight into out[0..room), the
 * bytes stream_copy() writes for it, without a trip through the streaming machine and the
 * collection. 0 when that declines (a COPY not under way or a message not at its start, a
 * row cut by the message's end, a row the one pass does not take): stream_copy() takes it.
 * The output stays one byte short of the room stream_copy() writes a message whole into
 * (copy_in_place()): beyond that it would split the output into further messages.
 */
static size_t copy_message_whole(struct mask_sess *s, const uint8_t *body, uint32_t body_len,
				 uint8_t *out, size_t room)
{
	size_t cap, made;

	if (!s->copy_active || s->cd_state != CD_IDLE || room <= PROTO_HEADER_LEN + 1)
		return 0;
	cap = room - PROTO_HEADER_LEN < s->la_cap ? room - PROTO_HEADER_LEN : s->la_cap;
	made = mask_copy_whole(s->copy, body, body_len, out + PROTO_HEADER_LEN, cap - 1);
	if (!made)
		return 0;
	out[0] = PqMsg_CopyData;
	proto_write_u32(out + 1, (uint32_t)made + 4);
	return PROTO_HEADER_LEN + made;
}

/*
 * The messages of a run whose masked values keep their place (mask_plan.in_place): copied to
 * out in one go, then each message's masked values rewritten where they lie in the copy,
 * its framing as it was; the unmasked relay's one walk over a run, plus those values. Under
 * plan for DataRow, else CopyData. Returns the bytes of the messages done, in and out alike;
 * it stops before the first message the in-place pass declines (the caller takes it as it
 * takes a message alone), and before a CopyData message copy_message_whole() would decline
 * for want of room, so a message comes out the same whichever way it goes.
 */
static size_t run_in_place(struct mask_sess *s, const struct mask_plan *plan,
			   const struct stage_stream *st)
{
	size_t n = st->in_len < st->out_cap ? st->in_len : st->out_cap, copy_end;

	if (plan ? !plan->in_place : !s->copy_active || s->cd_state != CD_IDLE)
		return 0;
	memcpy(st->out, st->in, n);
	if (plan)
		return mask_rows_in_place(plan, &s->env, st->in, st->out, n, s->la_cap);
	/* within copy_message_whole()'s room: a message ends a byte short of out_cap, its data
	 * a byte short of la_cap */
	copy_end = st->in_len < st->out_cap ? n : n - (n > 0);
	return mask_copy_messages_in_place(s->copy, st->in, st->out, copy_end,
					   s->la_cap ? s->la_cap - 1 : 0);
}

/* Can this session rewrite streamed messages? If not, r says why it ends. */
static bool stream_usable(const struct mask_sess *s, struct stage_result *r)
{
	if (!s || !s->active) {
		sess_close(r, "XX000", "a streamed message in a session that masks nothing");
		return false;
	}
	if (s->broken) {
		sess_close(r, "XX000", s->broken);
		return false;
	}
	return true;
}

static void mask_stream(struct stage_ctx *ctx, struct stage_stream *st, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);

	if (!stream_usable(s, r))
		return;
	if (st->type == PqMsg_DataRow)
		stream_row(s, st, r);
	else if (st->type == PqMsg_CopyData)
		stream_copy(ctx, st, r);
}

/*
 * A run of whole messages (stage.h): each goes through the same code as a message that
 * came alone and whole (so the bytes out are the same), without a stage call per message.
 * What a message alone looks up first is looked up once: nothing in a run can change it
 * (only the server's other messages move requests and plans on), and a run starts between
 * messages, so no row is under way in the machine. A row goes straight to the one pass,
 * and to the machine only when that declines; a CopyData message of whole rows likewise
 * (copy_message_whole()), to stream_copy() only when that declines. The run stops before
 * a message the room left cannot hold as long as it is (the relay streams that one once the
 * client has taken some), and inside one whose replacement outgrew the room (stream()
 * finishes it).
 */
static void mask_stream_run(struct stage_ctx *ctx, struct stage_stream *st, struct stage_result *r)
{
	struct mask_sess *s = sess_of(ctx);
	const struct mask_plan *plan = NULL;
	size_t in = 0, out = 0;

	if (!stream_usable(s, r))
		return;
	if (st->type == PqMsg_DataRow && !(plan = row_plan(s, r)))
		return;
	in = out = run_in_place(s, plan, st);
	while (st->in_len - in >= PROTO_HEADER_LEN) {
		const uint8_t *body = st->in + in + PROTO_HEADER_LEN;
		uint32_t body_len = proto_read_u32(st->in + in + 1) - 4;
		size_t room = st->out_cap - out, made = 0;
		struct stage_stream one;

		if (room < PROTO_HEADER_LEN + (size_t)body_len)
			break;
		if (plan)
			made = mask_row_whole(plan, &s->env, body, body_len, s->la_cap, st->out + out,
					      room);
		else
			made = copy_message_whole(s, body, body_len, st->out + out, room);
		if (made) {
			in += PROTO_HEADER_LEN + body_len;
			out += made;
			continue;
		}
		one = (struct stage_stream){
			.type = st->type,
			.body_len = body_len,
			.request = st->request,
			.in = body,
			.in_len = body_len,
			.out = st->out + out,
			.out_cap = room,
		};
		if (plan)
			row_machine(s, plan, &one, r);
		else
			stream_copy(ctx, &one, r);
		if (r->verdict != STAGE_FORWARD)
			break; /* nothing of the refused message counts */
		in += PROTO_HEADER_LEN + one.consumed;
		out += one.produced;
		if (!one.done || one.consumed != body_len) {
			st->partial = true;
			st->partial_produced = one.produced;
			break;
		}
	}
	st->consumed = in;
	st->produced = out;
}

/* ---- ending ---------------------------------------------------------------------------------- */

static void mask_release(void *state)
{
	struct mask_slot *slot = state;
	struct mask_sess *s = slot->s;

	if (!s)
		return;
	if (s->track_ok)
		mask_track_release(&s->track);
	mask_row_release(&s->row);
	mask_plan_free(&s->copy_plan);
	mask_mac_free(s->mac);
	mask_catalog_put(s->cat);
	mask_policy_put(s->policy);
	free(s->la);
	free(s->cd_buf);
	free(s->copy);
	free(s->rw);
	free(s);
	slot->s = NULL;
}

const struct stage_ops mask_stage = {
	.name = "mask",
	.state_size = sizeof(struct mask_slot),
	.frontend = mask_frontend,
	.backend = mask_backend,
	.stream = mask_stream,
	.stream_run = mask_stream_run,
	.notice = mask_notice,
	.notices = STAGE_NOTE_BIT(STAGE_NOTE_AUTH) | STAGE_NOTE_BIT(STAGE_NOTE_DECISION),
	.release = mask_release,
};
