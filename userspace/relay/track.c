/* track: which server answer belongs to which client request (see track.h); the SQL-level
 * PREPARE, DEALLOCATE and DISCARD are followed in track_sql.c. */
#include "relay/track_internal.h"
#include "sql/sql.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A spare ring's first bytes, while no session holds it. */
struct track_ring_spare {
	struct track_ring_spare *next;
};

_Static_assert(sizeof(struct track_ring_spare) <= TRACK_RING_MIN * sizeof(struct track_entry),
	       "a spare ring holds its link");

void track_rings_destroy(struct track_rings *r)
{
	while (r->spare) {
		struct track_ring_spare *next = r->spare->next;

		free(r->spare);
		r->spare = next;
	}
	r->count = 0;
}

void track_init(struct track *t, struct track_rings *rings, uint32_t max,
		uint32_t max_statements, size_t max_stmt_bytes, bool keep_text,
		const char *session_id_hex, track_done_fn done, void *arg)
{
	memset(t, 0, sizeof(*t));
	t->rings = rings;
	t->max = max ? max : 1;
	t->next_request = 1;
	t->stmts.max_count = max_statements;
	t->stmts.max_bytes = max_stmt_bytes;
	t->keep_text = keep_text;
	t->done = done;
	t->done_arg = arg;
	t->done_kinds = done ? UINT32_MAX : 0;
	t->session_id_hex = session_id_hex;
}

/* The unnamed portal or statement, by far the most common name: never allocated. */
static char track_unnamed[1];

static char *track_name_dup(const char *name)
{
	return name[0] ? strdup(name) : track_unnamed;
}

/* Runs for every request: most hold nothing of their own, and their fields are set again
 * by track_push, so only what is held is released (what by the kind: see the union). */
static void track_entry_free(struct track_entry *e)
{
	if (e->stmt)
		stmt_put(e->stmt);
	switch (e->kind) {
	case TRACK_QUERY:
		if (e->changes)
			track_sql_changes_free(e);
		break;
	case TRACK_BIND:
	case TRACK_CLOSE:
		if (e->name && e->name != track_unnamed)
			free(e->name);
		break;
	case TRACK_POISON:
		free(e->reply);
		break;
	default:
		break;
	}
}

/* The queue is empty (or going): an idle session holds no ring. A small ring goes back to
 * the worker's spares while they are fewer than TRACK_RINGS_SPARE_MAX, any other to the
 * heap. Inline: it runs for every batch. */
static inline void track_ring_drop(struct track *t)
{
	if (t->cap == TRACK_RING_MIN && t->rings->count < TRACK_RINGS_SPARE_MAX) {
		struct track_ring_spare *spare = (struct track_ring_spare *)t->ring;

		spare->next = t->rings->spare;
		t->rings->spare = spare;
		t->rings->count++;
	} else {
		free(t->ring);
	}
	t->ring = NULL;
	t->cap = 0;
	t->head = 0;
}

void track_release(struct track *t)
{
	for (uint32_t i = 0; i < t->count; i++)
		track_entry_free(track_at(t, i));
	if (t->ring)
		track_ring_drop(t);
	t->count = t->owed_ready = 0;
	free(t->last_reply);
	t->last_reply = NULL;
	stmt_table_release(&t->stmts);
}

/* A batch's first request takes a spare ring when there is one. Inline: every batch. */
static inline bool track_ring_take(struct track *t)
{
	struct track_ring_spare *spare = t->rings->spare;

	if (t->cap || !spare)
		return false;
	t->rings->spare = spare->next;
	t->rings->count--;
	t->ring = (struct track_entry *)spare;
	t->cap = TRACK_RING_MIN; /* head is 0 since the last drop */
	return true;
}

/* A new ring when there is no spare; past it the ring grows on the heap by doubling (and
 * is freed when empty). 0 or -ENOMEM. */
static int track_grow(struct track *t)
{
	uint32_t cap = t->cap ? t->cap * 2 : TRACK_RING_MIN;
	struct track_entry *ring = malloc(cap * sizeof(*ring)); /* zeroed as pushed */

	if (!ring)
		return -ENOMEM;
	for (uint32_t i = 0; i < t->count; i++)
		ring[i] = *track_at(t, i);
	if (t->ring)
		track_ring_drop(t);
	t->ring = ring;
	t->cap = cap;
	t->head = 0;
	return 0;
}

/* Room for one more entry. Inline, as track_pop: each runs for every request, and their
 * common path is a few stores. */
static inline struct track_entry *track_push(struct track *t, enum track_kind kind,
					     uint64_t request, uint64_t now)
{
	struct track_entry *e;

	if (t->count == t->cap && !track_ring_take(t) && track_grow(t))
		return NULL;
	e = track_at(t, t->count++);
	memset(e, 0, sizeof(*e));
	e->kind = (uint8_t)kind;
	e->request = request;
	e->started_ns = now;
	if (kind == TRACK_QUERY || kind == TRACK_FUNCTION || kind == TRACK_SYNC)
		t->owed_ready++;
	return e;
}

static inline void track_pop(struct track *t)
{
	struct track_entry *e = track_at(t, 0);

	if (e->kind == TRACK_QUERY || e->kind == TRACK_FUNCTION || e->kind == TRACK_SYNC)
		t->owed_ready--;
	if (e->stmt || e->held) /* most requests hold nothing of their own */
		track_entry_free(e);
	t->head = (t->head + 1) & (t->cap - 1);
	if (--t->count == 0)
		track_ring_drop(t);
}

/* A NUL-terminated string inside [p, end), or NULL; its length in *len when len is not
 * NULL (the texts of a Query and a Parse are not walked again to find it). */
static const char *track_cstr(const uint8_t **p, const uint8_t *end, uint32_t *len)
{
	const uint8_t *z = *p < end ? memchr(*p, 0, (size_t)(end - *p)) : NULL;
	const char *s = (const char *)*p;

	if (!z)
		return NULL;
	if (len)
		*len = (uint32_t)(z - *p);
	*p = z + 1;
	return s;
}

/* The listener hears of a request (what it hears is struct track_done). */
static void track_report_done(struct track *t, const struct track_entry *e, const char *tag,
			      bool failed, bool skipped, bool final, uint64_t now)
{
	struct track_done d = {
		.request = e->request,
		.kind = (enum track_kind)e->kind,
		.command_tag = tag,
		.duration_ns = now - e->started_ns,
		.failed = failed,
		.skipped = skipped,
		.final = final,
		.stmt = e->stmt,
		.part = e->parts,
	};

	t->done(t->done_arg, &d);
}

/* Several requests complete per transaction, and the listener usually hears of one kind:
 * inline, the others cost one test. */
static inline void track_report(struct track *t, const struct track_entry *e, const char *tag,
				bool failed, bool skipped, bool final, uint64_t now)
{
	if (t->done_kinds & TRACK_KIND_BIT(e->kind))
		track_report_done(t, e, tag, failed, skipped, final, now);
}

static enum track_kind track_kind_of(uint8_t type)
{
	switch (type) {
	case PqMsg_Query:
		return TRACK_QUERY;
	case PqMsg_FunctionCall:
		return TRACK_FUNCTION;
	case PqMsg_Parse:
		return TRACK_PARSE;
	case PqMsg_Bind:
		return TRACK_BIND;
	case PqMsg_Describe:
		return TRACK_DESCRIBE;
	case PqMsg_Execute:
		return TRACK_EXECUTE;
	case PqMsg_Close:
		return TRACK_CLOSE;
	default:
		return TRACK_SYNC;
	}
}

/* Names are mostly the unnamed one (""): told apart without a call. */
static inline bool track_name_eq(const char *a, const char *b)
{
	return a[0] == b[0] && (!a[0] || strcmp(a + 1, b + 1) == 0);
}

/*
 * What a name will mean to the server when this message arrives: the latest Parse (or
 * Bind) of that name still on its way, else what the server has confirmed. Clients
 * pipeline a Parse, its Bind and its Execute before any answer.
 */
static struct stmt_entry *track_statement_named(const struct track *t, const char *name)
{
	for (uint32_t i = t->count; i-- > 0;) {
		const struct track_entry *e = track_at(t, i);

		if (e->kind == TRACK_PARSE && e->stmt && track_name_eq(e->stmt->name, name))
			return e->stmt;
	}
	return stmt_lookup(&t->stmts, name);
}

static struct stmt_entry *track_portal_named(const struct track *t, const char *portal)
{
	for (uint32_t i = t->count; i-- > 0;) {
		const struct track_entry *e = track_at(t, i);

		if (e->kind == TRACK_BIND && e->name && track_name_eq(e->name, portal))
			return e->stmt;
	}
	return stmt_portal_lookup(&t->stmts, portal);
}

/*
 * The statement a Parse of name makes, one reference the caller's; sql: its whole text
 * (NULL: not whole), sql_len: the text's length where it was found, else 0. When the Parse
 * repeats the kept text of the statement its name means now, what was read from that text
 * holds again (its class when the relay read it, whether it names statements); and when
 * its parameter count, class and words are that statement's too, it is that statement: its
 * entry is shared, not copied. NULL: no memory.
 */
static struct stmt_entry *track_parse_statement(const struct track *t, const char *name,
						const char *sql, uint32_t sql_len,
						uint16_t nparams, uint8_t cls,
						const uint32_t *words)
{
	static const uint32_t no_words[STMT_STAGE_WORDS];
	struct stmt_entry *same = NULL, *s;
	bool read = false;

	if (sql && t->keep_text) {
		same = track_statement_named(t, name);
		if (same && (!same->sql || same->sql_level || same->sql_len != sql_len ||
			     memcmp(same->sql, sql, sql_len) != 0))
			same = NULL;
	}
	if (cls == TRACK_CLASS_UNREAD && !sql) {
		cls = SQL_CLASS_UNKNOWN;
	} else if (cls == TRACK_CLASS_UNREAD) {
		read = true;
		cls = same && same->cls_read ? same->cls
					     : (uint8_t)sql_classify(sql, sql_len, 0, NULL);
	}
	if (same && same->nparams == nparams && same->cls == cls && same->cls_read == read &&
	    memcmp(same->words, words ? words : no_words, sizeof(same->words)) == 0) {
		same->refs++;
		return same;
	}
	s = stmt_new(name, sql && t->keep_text ? sql : NULL, sql_len, nparams, false);
	if (!s)
		return NULL;
	s->cls = cls;
	s->cls_read = read;
	s->may_name_statements = same ? same->may_name_statements
				      : s->sql && track_sql_mentions_statement_words(s->sql,
										  s->sql_len);
	if (words)
		memcpy(s->words, words, sizeof(s->words));
	return s;
}

/* A message the server will skip (it is skipping to a Sync): it is answered by nothing. */
static void track_skip(struct track *t, enum track_kind kind, uint64_t now)
{
	struct track_entry e = {.kind = (uint8_t)kind, .request = t->next_request++,
				.started_ns = now};

	track_report(t, &e, NULL, false, true, true, now);
}

/* Conservative: a pending statement that will replace another, or whose request will fail,
 * still counts until it is answered. */
bool track_fits(const struct track *t, const char *name, uint32_t sql_len,
		       uint32_t extra_count, size_t extra_bytes)
{
	const struct stmt_table *st = &t->stmts;
	uint64_t count = st->count + extra_count;
	size_t bytes = st->bytes + extra_bytes;

	for (uint32_t i = 0; i < t->count; i++) {
		const struct track_entry *e = track_at(t, i);

		if (e->kind == TRACK_PARSE && e->stmt && !stmt_lookup(st, e->stmt->name)) {
			count++;
			bytes += strlen(e->stmt->name) + e->stmt->sql_len;
		} else if (e->kind == TRACK_EXECUTE && e->preparing && e->stmt) {
			count++;
			bytes += e->stmt->sql_len;
		}
		for (uint32_t j = 0; e->kind == TRACK_QUERY && j < e->nchanges; j++)
			if (e->changes[j].stmt) {
				count++;
				bytes += strlen(e->changes[j].stmt->name) + e->changes[j].stmt->sql_len;
			}
	}
	if (st->max_count && !stmt_lookup(st, name) && count >= st->max_count)
		return false;
	return !st->max_bytes || bytes + strlen(name) + sql_len <= st->max_bytes;
}

int track_frontend(struct track *t, const uint8_t *head, uint32_t avail, uint8_t cls,
		   const uint32_t *words, uint64_t now)
{
	uint32_t len = avail >= PROTO_HEADER_LEN ? proto_read_u32(head + 1) + 1 : 0;
	const uint8_t *p = head + PROTO_HEADER_LEN, *end = head + (avail < len ? avail : len);
	bool whole = len && avail >= len;
	uint64_t request = t->next_request;
	struct track_entry *e;
	const char *a, *b;
	uint32_t sql_len = 0;

	if (t->skipping && head[0] != PqMsg_Sync) {
		track_skip(t, track_kind_of(head[0]), now);
		return 0;
	}
	switch (head[0]) {
	case PqMsg_Query: {
		struct track_entry pending = {0};
		int r;

		a = whole ? track_cstr(&p, end, &sql_len) : NULL;
		if (a) {
			r = track_sql_query_changes(t, &pending, a, sql_len, words);
			if (r)
				return r;
		}
		e = track_push(t, TRACK_QUERY, request, now);
		if (!e) {
			track_sql_changes_free(&pending);
			return -ENOMEM;
		}
		e->changes = pending.changes;
		e->nchanges = pending.nchanges;
		break;
	}
	case PqMsg_FunctionCall:
		e = track_push(t, TRACK_FUNCTION, request, now);
		break;
	case PqMsg_Sync:
		e = track_push(t, TRACK_SYNC, request, now);
		t->skipping = false;
		break;
	case PqMsg_Parse: {
		struct stmt_entry *s = NULL;
		uint16_t nparams = 0;

		a = track_cstr(&p, end, NULL);
		b = a ? track_cstr(&p, end, &sql_len) : NULL;
		if (a && b && end - p >= 2)
			nparams = (uint16_t)(p[0] << 8 | p[1]);
		if (a && !track_fits(t, a, b ? sql_len : 0, 0, 0))
			return -ENOSPC;
		/* A Parse too large to hold whole still makes a statement; its text is then
		 * unknown to pgwarden, which stages treat as "cannot tell". */
		if (a) {
			s = track_parse_statement(t, a, whole ? b : NULL, sql_len, nparams, cls,
						  words);
			if (!s)
				return -ENOMEM;
		}
		e = track_push(t, TRACK_PARSE, request, now);
		if (!e) {
			stmt_put(s);
			return -ENOMEM;
		}
		e->stmt = s;
		break;
	}
	case PqMsg_Bind:
		a = track_cstr(&p, end, NULL);
		b = a ? track_cstr(&p, end, NULL) : NULL;
		e = track_push(t, TRACK_BIND, request, now);
		if (!e)
			return -ENOMEM;
		if (a && b) {
			e->name = track_name_dup(a);
			if (!e->name)
				return -ENOMEM;
			e->stmt = track_statement_named(t, b);
			if (e->stmt)
				e->stmt->refs++;
		}
		break;
	case PqMsg_Describe:
	case PqMsg_Close:
		e = track_push(t, head[0] == PqMsg_Describe ? TRACK_DESCRIBE : TRACK_CLOSE, request,
			       now);
		if (!e)
			return -ENOMEM;
		e->target = p < end ? *p++ : 0;
		if (head[0] == PqMsg_Close && (a = track_cstr(&p, end, NULL)) &&
		    !(e->name = track_name_dup(a)))
			return -ENOMEM;
		break;
	case PqMsg_Execute: {
		struct stmt_entry *s = NULL;
		bool preparing = false;

		a = track_cstr(&p, end, NULL);
		if (a)
			s = track_portal_named(t, a);
		/* An Execute that runs an SQL PREPARE creates a statement: within the limits. */
		if (s) {
			int r = track_sql_execute_prepares(t, s);

			if (r < 0)
				return r;
			preparing = r == 1;
		}
		e = track_push(t, TRACK_EXECUTE, request, now);
		if (e && s) {
			e->stmt = s;
			e->stmt->refs++;
			e->preparing = preparing;
		}
		break;
	}
	default:
		return 0;
	}
	if (!e)
		return -ENOMEM;
	t->next_request++;
	return 0;
}

/* Describe 'S' of a statement no client can have made (it names this session, whose id only
 * operators see): the server fails at that point. */
static int track_poison_describe(const struct track *t, uint8_t *out, uint32_t cap)
{
	static const char prefix[] = "pgwarden:denied:";
	size_t n = sizeof(prefix) - 1 + strlen(t->session_id_hex) + 1;
	uint32_t len = (uint32_t)(PROTO_HEADER_LEN + 1 + n);

	if (len > cap)
		return -ENOSPC;
	out[0] = PqMsg_Describe;
	proto_write_u32(out + 1, len - 1);
	out[PROTO_HEADER_LEN] = 'S';
	memcpy(out + PROTO_HEADER_LEN + 1, prefix, sizeof(prefix) - 1);
	memcpy(out + PROTO_HEADER_LEN + sizeof(prefix), t->session_id_hex, n - sizeof(prefix) + 1);
	return (int)len;
}

int track_reject(struct track *t, uint8_t type, const uint8_t *reply, uint32_t reply_len,
		 uint64_t now, uint8_t *poison, uint32_t cap)
{
	bool ends_with_sync = type == PqMsg_Query || type == PqMsg_FunctionCall;
	uint64_t request = t->next_request;
	struct track_entry *e;
	int n;

	if (t->skipping) {
		track_skip(t, TRACK_POISON, now);
		return 0;
	}
	n = track_poison_describe(t, poison, cap);
	if (n < 0)
		return n;
	if (ends_with_sync) {
		if ((uint32_t)n + PROTO_HEADER_LEN > cap)
			return -ENOSPC;
		poison[n] = PqMsg_Sync;
		proto_write_u32(poison + n + 1, 4);
		n += PROTO_HEADER_LEN;
	}
	e = track_push(t, TRACK_POISON, request, now);
	if (!e)
		return -ENOMEM;
	e->reply = malloc(reply_len);
	if (!e->reply) {
		/* Keep the queue consistent: the poison goes out, so its entry must stay. */
		return -ENOMEM;
	}
	memcpy(e->reply, reply, reply_len);
	e->reply_len = reply_len;
	if (ends_with_sync && !track_push(t, TRACK_SYNC, request, now))
		return -ENOMEM;
	t->next_request++;
	return n;
}

uint64_t track_tag_rows(const char *tag)
{
	const char *sp = strrchr(tag, ' ');
	uint64_t rows = 0;

	if (!sp || !sp[1])
		return 0;
	for (const char *p = sp + 1; *p; p++) {
		if (*p < '0' || *p > '9')
			return 0;
		rows = rows * 10 + (uint64_t)(*p - '0');
	}
	return rows;
}

/* The server confirmed the head entry: apply what it changes, report it, pop it. */
static void track_complete(struct track *t, const char *tag, uint64_t now)
{
	struct track_entry *e = track_at(t, 0);

	switch (e->kind) {
	case TRACK_PARSE:
		if (e->stmt) {
			stmt_commit(&t->stmts, e->stmt);
			e->stmt = NULL;
		}
		break;
	case TRACK_BIND:
		/* A portal whose statement pgwarden does not know is still a portal. */
		if (e->name && stmt_portal_bind(&t->stmts, e->name, e->stmt))
			stmt_portal_close(&t->stmts, e->name);
		break;
	case TRACK_CLOSE:
		if (e->name && e->target == 'S')
			stmt_remove(&t->stmts, e->name);
		else if (e->name)
			stmt_portal_close(&t->stmts, e->name);
		break;
	default:
		break;
	}
	track_report(t, e, tag, false, false, true, now);
	track_pop(t);
}

/* An error in an extended batch: the head failed, and the server skips to the next Sync. */
static void track_fail_to_sync(struct track *t, uint64_t now)
{
	bool first = true;

	while (t->count && track_at(t, 0)->kind != TRACK_SYNC) {
		struct track_entry *e = track_at(t, 0);

		/* A failed Parse of the unnamed statement still dropped the old one. */
		if (first && e->kind == TRACK_PARSE && e->stmt && !e->stmt->name[0])
			stmt_remove(&t->stmts, "");
		track_report(t, e, NULL, first, !first, true, now);
		first = false;
		track_pop(t);
	}
	/* No Sync sent yet: the server skips what comes until it arrives. */
	if (!t->count)
		t->skipping = true;
}

static enum track_action track_error(struct track *t, uint64_t now, const uint8_t **reply,
				     uint32_t *reply_len)
{
	struct track_entry *e;

	if (!t->count)
		return TRACK_PASS; /* not tied to a request (a FATAL at idle, say) */
	e = track_at(t, 0);
	switch (e->kind) {
	case TRACK_QUERY:
	case TRACK_FUNCTION:
	case TRACK_SYNC:
		/* Their ReadyForQuery is still owed; a Query's remaining statements are off. */
		if (!e->errored) {
			e->errored = true;
			track_report(t, e, NULL, true, false, false, now);
			e->parts++;
		}
		return TRACK_PASS;
	case TRACK_POISON:
		/* The failure pgwarden arranged: the client hears the stage's error instead. */
		*reply = e->reply;
		*reply_len = e->reply_len;
		e->reply = NULL; /* handed over; freed at the next call */
		track_fail_to_sync(t, now);
		return TRACK_REPLACE;
	default:
		track_fail_to_sync(t, now);
		return TRACK_PASS;
	}
}

/* Does a server message of this type belong to the answer to a request of this kind? */
static bool track_belongs(enum track_kind kind, uint8_t type)
{
	switch (type) {
	case PqMsg_ParseComplete:
		return kind == TRACK_PARSE;
	case PqMsg_BindComplete:
		return kind == TRACK_BIND;
	case PqMsg_CloseComplete:
		return kind == TRACK_CLOSE;
	case PqMsg_ParameterDescription:
	case PqMsg_NoData:
		return kind == TRACK_DESCRIBE;
	case PqMsg_RowDescription:
		return kind == TRACK_DESCRIBE || kind == TRACK_QUERY;
	case PqMsg_FunctionCallResponse:
		return kind == TRACK_FUNCTION;
	case PqMsg_ReadyForQuery:
		return kind == TRACK_QUERY || kind == TRACK_FUNCTION || kind == TRACK_SYNC;
	case PqMsg_DataRow:
	case PqMsg_CommandComplete:
	case PqMsg_EmptyQueryResponse:
	case PqMsg_CopyInResponse:
	case PqMsg_CopyOutResponse:
	case PqMsg_CopyBothResponse:
	case PqMsg_CopyData:
	case PqMsg_CopyDone:
		return kind == TRACK_QUERY || kind == TRACK_EXECUTE;
	case PqMsg_PortalSuspended:
		return kind == TRACK_EXECUTE;
	default:
		return false;
	}
}

bool track_passes_rows(const struct track *t)
{
	return t->count && track_belongs((enum track_kind)track_at(t, 0)->kind, PqMsg_DataRow);
}

enum track_action track_backend(struct track *t, const struct proto_msg *m, uint64_t now,
				const uint8_t **reply, uint32_t *reply_len)
{
	struct track_entry *e;
	const char *tag = NULL;

	if (t->last_reply) {
		free(t->last_reply);
		t->last_reply = NULL;
	}
	if (track_async(m->type))
		return TRACK_PASS;
	switch (m->type) {
	case PqMsg_ErrorResponse: {
		enum track_action a = track_error(t, now, reply, reply_len);

		if (a == TRACK_REPLACE)
			t->last_reply = (uint8_t *)*reply;
		return a;
	}
	default:
		break;
	}
	e = t->count ? track_at(t, 0) : NULL;
	if (e && e->kind == TRACK_POISON) {
		/* The poison statement exists after all (it cannot, but if it did): swallow its
		 * description and answer with the stage's error where it would have ended. */
		if (m->type == PqMsg_ParameterDescription)
			return TRACK_DROP;
		if (m->type != PqMsg_RowDescription && m->type != PqMsg_NoData)
			return TRACK_INVALID;
		*reply = t->last_reply = e->reply;
		*reply_len = e->reply_len;
		e->reply = NULL;
		track_fail_to_sync(t, now);
		return TRACK_REPLACE;
	}
	/* An answer to nothing, or to something else: the server and pgwarden disagree about
	 * the conversation, and nothing it says can be attributed any more. */
	if (!e || !track_belongs((enum track_kind)e->kind, m->type))
		return TRACK_INVALID;
	switch (m->type) {
	case PqMsg_ParseComplete:
	case PqMsg_BindComplete:
	case PqMsg_CloseComplete:
	case PqMsg_NoData:
		track_complete(t, NULL, now);
		return TRACK_PASS;
	case PqMsg_RowDescription:
		if (e->kind == TRACK_DESCRIBE)
			track_complete(t, NULL, now);
		return TRACK_PASS; /* a Query's RowDescription is part of its answer */
	case PqMsg_CommandComplete:
	case PqMsg_EmptyQueryResponse:
	case PqMsg_PortalSuspended:
		if (m->type == PqMsg_CommandComplete && proto_read_command_complete(m, &tag))
			tag = NULL;
		if (m->type == PqMsg_CommandComplete)
			track_sql_confirmed(t, e, tag);
		if (e->kind == TRACK_EXECUTE) {
			track_complete(t, tag, now);
		} else {
			track_report(t, e, tag, false, false, false, now);
			e->parts++;
		}
		return TRACK_PASS;
	case PqMsg_FunctionCallResponse:
		track_report(t, e, NULL, false, false, false, now);
		return TRACK_PASS;
	case PqMsg_ReadyForQuery:
		/* The status byte read in place: the one body proto_read_ready() takes for 'I'
		 * is this one, and any other is no 'I' here either (the connection then fails
		 * the session on it). The connection reads the message with proto_read_ready()
		 * anyway: this spares reading it twice per transaction. */
		if (m->body_len == 1 && m->body[0] == 'I')
			stmt_portals_end(&t->stmts); /* the transaction, and its portals, ended */
		else
			stmt_portal_close(&t->stmts, ""); /* Sync ends the unnamed portal too */
		track_complete(t, NULL, now);
		return TRACK_PASS;
	default:
		return TRACK_PASS; /* ParameterDescription, DataRow, copy traffic */
	}
}

void track_copy_in(struct track *t)
{
	/* Rebuild the queue without the Syncs that follow the COPY's own request. */
	for (uint32_t i = 1; i < t->count;) {
		struct track_entry *e = track_at(t, i);

		if (e->kind != TRACK_SYNC) {
			i++;
			continue;
		}
		t->owed_ready--;
		track_entry_free(e);
		for (uint32_t j = i; j + 1 < t->count; j++)
			*track_at(t, j) = *track_at(t, j + 1);
		memset(track_at(t, t->count - 1), 0, sizeof(struct track_entry));
		t->count--;
	}
}
