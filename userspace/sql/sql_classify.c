/*
 * sql_classify: the class of one statement from its leading keywords, looking through
 * WITH, EXPLAIN, DECLARE, PREPARE and parentheses. Not a parser: it reads the few
 * positions a class depends on, and where a guess is needed it guesses the stronger class
 * (see sql.h for the rules and their reasons). Anything it does not recognise is UNKNOWN,
 * which policy denies.
 */
#include "sql/sql.h"

#include <string.h>

/* Look-through nesting (EXPLAIN PREPARE ... AS DECLARE ...) deeper than this is not SQL. */
#define CLASSIFY_MAX_DEPTH 8

/*
 * Whether the statement is one statement, lexically sound: sql_classify() answers UNKNOWN
 * otherwise. Checked on the classifier's own tokens as it meets them, and after it on the
 * rest of the text, so that each token is lexed once for both. Every cursor lexes from a
 * token's start or end, where lexing gives the tokens of one pass from the text's start,
 * so the tokens lexed from the frontier (the end of the last one checked) are exactly the
 * next ones of that pass, whichever cursor lexes them.
 */
struct soundness {
	size_t frontier; /* the text before it is checked */
	bool eof;        /* the EOF token has been checked */
	bool seen;       /* a token other than ';' */
	bool after_semi; /* a ';' after one */
	bool unsound;    /* a bad token, or a second statement */
};

static void soundness_note(struct soundness *s, const struct sql_token *t)
{
	if (t->flags & (SQL_TOKF_INVALID | SQL_TOKF_UNTERMINATED))
		s->unsound = true;
	if (t->kind == SQL_TOK_SEMI) {
		s->after_semi = s->seen;
	} else if (t->kind == SQL_TOK_EOF) {
		s->eof = true;
	} else {
		if (s->after_semi)
			s->unsound = true;
		s->seen = true;
	}
}

/* Lex the next token into t; the first time a token is lexed, check it. */
static inline void lex_checked(struct sql_lexer *lx, struct sql_token *t, struct soundness *s)
{
	bool first = lx->pos == s->frontier && !s->eof;

	sql_lex_next(lx, t);
	if (first) {
		soundness_note(s, t);
		s->frontier = lx->pos;
	}
}

struct cur {
	struct sql_lexer lx;
	struct sql_token t;
	struct soundness *sound;
};

static void adv(struct cur *c)
{
	lex_checked(&c->lx, &c->t, c->sound);
}

static bool is(const struct cur *c, const char *kw)
{
	return sql_tok_is(&c->lx, &c->t, kw);
}

static bool tok_is(const struct sql_lexer *lx, const struct sql_token *t, const char *kw)
{
	return sql_tok_is(lx, t, kw);
}

static bool punct(const struct sql_lexer *lx, const struct sql_token *t, char ch)
{
	return t->kind == SQL_TOK_PUNCT && t->len == 1 && lx->sql[t->off] == ch;
}

static bool at_end(const struct cur *c)
{
	return c->t.kind == SQL_TOK_EOF || c->t.kind == SQL_TOK_SEMI;
}

static bool tok_in(const struct sql_lexer *lx, const struct sql_token *t,
		   const char *const *list)
{
	for (; *list; list++)
		if (tok_is(lx, t, *list))
			return true;
	return false;
}

/* PostgreSQL 16's RESERVED_KEYWORD list (kwlist.h): these cannot name a table. */
static const char *const reserved[] = {
	"all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "both",
	"case", "cast", "check", "collate", "column", "constraint", "create",
	"current_catalog", "current_date", "current_role", "current_time",
	"current_timestamp", "current_user", "default", "deferrable", "desc", "distinct",
	"do", "else", "end", "except", "false", "fetch", "for", "foreign", "from", "grant",
	"group", "having", "in", "initially", "intersect", "into", "lateral", "leading",
	"limit", "localtime", "localtimestamp", "not", "null", "offset", "on", "only", "or",
	"order", "placing", "primary", "references", "returning", "select", "session_user",
	"some", "symmetric", "system_user", "table", "then", "to", "trailing", "true",
	"union", "unique", "user", "using", "variadic", "when", "where", "window", "with",
	NULL,
};

/* Words after which INSERT/UPDATE/DELETE/MERGE are a column or a lock, not a statement. */
static const char *const not_stmt_after[] = {
	"select", "distinct", "all", "as", "by", "for", "key", "on", "or", "and", "not",
	"returning", "before", "after", "of", "instead", NULL,
};

static const char *const query_start[] = {"select", "values", "with", "table", NULL};

/*
 * Could t (with p before it and n after it) start a data-modifying statement? At the
 * start, after '(' (a CTE body or subquery), after ')' (a WITH's main statement) or after
 * a word that is not one of the listed column/lock contexts; and followed by what the
 * statement needs: INSERT INTO, DELETE FROM, MERGE INTO, UPDATE <table>. A column named
 * "update" can still read as a write: that errs on the stronger class.
 */
static bool write_verb(const struct sql_lexer *lx, const struct sql_token *p,
		       const struct sql_token *t, const struct sql_token *n)
{
	bool follows;

	if (tok_is(lx, t, "insert") || tok_is(lx, t, "merge"))
		follows = tok_is(lx, n, "into");
	else if (tok_is(lx, t, "delete"))
		follows = tok_is(lx, n, "from");
	else if (tok_is(lx, t, "update"))
		follows = n->kind == SQL_TOK_QIDENT || tok_is(lx, n, "only") ||
			  (n->kind == SQL_TOK_IDENT && !tok_in(lx, n, reserved));
	else
		return false;
	if (!follows)
		return false;
	if (!p || punct(lx, p, '(') || punct(lx, p, ')'))
		return true;
	return (p->kind == SQL_TOK_IDENT && !tok_in(lx, p, not_stmt_after)) ||
	       p->kind == SQL_TOK_QIDENT;
}

struct read_facts {
	bool write; /* a data-modifying statement inside (CTE, WITH main) */
	bool lock;  /* FOR UPDATE / NO KEY UPDATE / SHARE / KEY SHARE */
	bool into;  /* SELECT ... INTO: creates a table */
};

/* Walk a query from c to the end of the statement, collecting read_facts. lead is the
 * paren depth the query's own clauses are at. */
static void read_scan(struct cur *c, long lead, struct read_facts *f)
{
	struct sql_token prev, cur, next;
	bool have_prev = false;
	long depth = 0;

	if (at_end(c))
		return;
	cur = c->t;
	adv(c);
	for (;;) {
		next = c->t;
		if (punct(&c->lx, &cur, '('))
			depth++;
		else if (punct(&c->lx, &cur, ')'))
			depth--;
		else if (cur.kind == SQL_TOK_IDENT) {
			if (write_verb(&c->lx, have_prev ? &prev : NULL, &cur, &next))
				f->write = true;
			if (tok_is(&c->lx, &cur, "for") &&
			    (tok_is(&c->lx, &next, "update") || tok_is(&c->lx, &next, "share") ||
			     tok_is(&c->lx, &next, "no") || tok_is(&c->lx, &next, "key")))
				f->lock = true;
			if (tok_is(&c->lx, &cur, "into") && depth <= lead &&
			    !(have_prev && (tok_is(&c->lx, &prev, "insert") ||
					    tok_is(&c->lx, &prev, "merge"))))
				f->into = true;
		}
		if (at_end(c))
			break;
		prev = cur;
		have_prev = true;
		cur = next;
		adv(c);
	}
}

static enum sql_class classify_at(const struct sql_lexer *text, size_t pos, unsigned level,
				  uint32_t *mask, struct soundness *sound);

/* Classify what follows the current token as a statement of its own. */
static enum sql_class look_through(struct cur *c, unsigned level, uint32_t *mask)
{
	return classify_at(&c->lx, c->t.off, level + 1, mask, c->sound);
}

/* Advance to the first depth-0 keyword kw (relative to here); false at the end. */
static bool find_kw0(struct cur *c, const char *kw)
{
	long depth = 0;

	for (; !at_end(c); adv(c)) {
		if (punct(&c->lx, &c->t, '('))
			depth++;
		else if (punct(&c->lx, &c->t, ')'))
			depth--;
		else if (depth == 0 && is(c, kw))
			return true;
	}
	return false;
}

static enum sql_class read_class(struct cur *c, long lead, uint32_t *mask)
{
	struct read_facts f = {0};

	read_scan(c, lead, &f);
	*mask |= SQL_CLASS_BIT(SQL_CLASS_READ);
	if (f.write || f.lock)
		*mask |= SQL_CLASS_BIT(SQL_CLASS_WRITE);
	if (f.into) {
		*mask |= SQL_CLASS_BIT(SQL_CLASS_DDL);
		return SQL_CLASS_DDL;
	}
	return f.write ? SQL_CLASS_WRITE : SQL_CLASS_READ;
}

static enum sql_class classify_create(struct cur *c, uint32_t *mask)
{
	static const char *const modifiers[] = {"or", "replace", "temp", "temporary",
						"local", "global", "unlogged", "trusted",
						"procedural", "unique", "recursive", NULL};

	adv(c);
	while (c->t.kind == SQL_TOK_IDENT && tok_in(&c->lx, &c->t, modifiers))
		adv(c);
	if (is(c, "role") || is(c, "user") || is(c, "group") || is(c, "policy"))
		return SQL_CLASS_ROLE;
	if (is(c, "table") || is(c, "materialized")) {
		/* CREATE TABLE ... AS query / CREATE MATERIALIZED VIEW ... AS query run the
		 * query now: its classes join the mask. */
		if (find_kw0(c, "as")) {
			adv(c);
			if (c->t.kind == SQL_TOK_IDENT && tok_in(&c->lx, &c->t, query_start)) {
				read_class(c, 0, mask);
			} else if (punct(&c->lx, &c->t, '(')) {
				read_class(c, 1, mask);
			}
		}
	}
	return SQL_CLASS_DDL;
}

static enum sql_class classify_copy(struct cur *c, uint32_t *mask)
{
	bool query = false;

	adv(c);
	if (punct(&c->lx, &c->t, '(')) {
		/* COPY (query) TO: the query's classes; the scan stops at the closing paren's
		 * depth, so TO is found below by a fresh walk. */
		struct cur q = *c;
		struct read_facts f = {0};
		long depth = 0;

		query = true;
		adv(&q);
		read_scan(&q, 0, &f);
		*mask |= SQL_CLASS_BIT(SQL_CLASS_READ);
		if (f.write || f.lock)
			*mask |= SQL_CLASS_BIT(SQL_CLASS_WRITE);
		if (f.into)
			*mask |= SQL_CLASS_BIT(SQL_CLASS_DDL);
		for (; !at_end(c); adv(c)) {
			if (punct(&c->lx, &c->t, '('))
				depth++;
			else if (punct(&c->lx, &c->t, ')') && --depth == 0)
				break;
		}
		if (!at_end(c))
			adv(c);
	}
	long depth = 0;

	for (; !at_end(c); adv(c)) {
		if (punct(&c->lx, &c->t, '('))
			depth++;
		else if (punct(&c->lx, &c->t, ')'))
			depth--;
		else if (depth == 0 && (is(c, "from") || is(c, "to")))
			break;
	}
	if (at_end(c))
		return SQL_CLASS_UNKNOWN;
	bool in = is(c, "from");
	enum sql_class dir = in ? SQL_CLASS_COPY_IN : SQL_CLASS_COPY_OUT;

	*mask |= SQL_CLASS_BIT(dir);
	if (in)
		*mask |= SQL_CLASS_BIT(SQL_CLASS_WRITE);
	else if (!query)
		*mask |= SQL_CLASS_BIT(SQL_CLASS_READ);
	adv(c);
	/* Not the client's stream: a program run, or a file read or written, by the server. */
	if (is(c, "program") || c->t.kind == SQL_TOK_STRING)
		return SQL_CLASS_COPY_PROGRAM;
	if (!is(c, "stdin") && !is(c, "stdout"))
		return SQL_CLASS_UNKNOWN;
	/* FROM STDOUT and TO STDIN are errors for the server; judge them as written. */
	return dir;
}

static enum sql_class classify_set(struct cur *c, bool reset)
{
	adv(c);
	if (is(c, "session")) {
		adv(c);
		if (!reset && is(c, "characteristics"))
			return SQL_CLASS_TRANSACTION;
	} else if (!reset && is(c, "local")) {
		adv(c);
	}
	if (!reset && (is(c, "transaction") || is(c, "constraints")))
		return SQL_CLASS_TRANSACTION;
	/* SET ROLE and SET SESSION AUTHORIZATION are SESSION too: sql_analyze() flags them as
	 * role switches, which policy allows on their own. */
	return SQL_CLASS_SESSION;
}

static enum sql_class classify_explain(struct cur *c, unsigned level, uint32_t *mask)
{
	adv(c);
	if (punct(&c->lx, &c->t, '(')) {
		struct cur peek = *c;

		adv(&peek);
		/* EXPLAIN (SELECT 1) is a statement in parentheses; EXPLAIN (ANALYZE) options:
		 * an option name is never a reserved word nor '('. */
		if (!(peek.t.kind == SQL_TOK_IDENT && tok_in(&peek.lx, &peek.t, query_start)) &&
		    !punct(&peek.lx, &peek.t, '(')) {
			long depth = 0;

			for (; !at_end(c); adv(c)) {
				if (punct(&c->lx, &c->t, '('))
					depth++;
				else if (punct(&c->lx, &c->t, ')') && --depth == 0)
					break;
			}
			if (at_end(c))
				return SQL_CLASS_UNKNOWN;
			adv(c);
		}
	}
	while (is(c, "analyze") || is(c, "analyse") || is(c, "verbose"))
		adv(c);
	return look_through(c, level, mask);
}

static enum sql_class classify_at(const struct sql_lexer *text, size_t pos, unsigned level,
				  uint32_t *mask, struct soundness *sound)
{
	static const char *const admin[] = {"vacuum",	  "analyze", "analyse", "cluster",
					    "reindex",	  "checkpoint", "load",  "refresh",
					    "lock",	  NULL};
	static const char *const txn[] = {"begin",   "start",	  "commit",  "end",
					  "rollback", "abort",	  "savepoint", "release",
					  NULL};
	static const char *const listen_notify[] = {"listen", "notify", "unlisten", NULL};
	static const char *const dcl[] = {"grant", "revoke", "reassign", "security", NULL};
	static const char *const dcl_objects[] = {"role", "user", "group", "policy", NULL};
	struct cur c;
	long lead = 0;

	if (level > CLASSIFY_MAX_DEPTH)
		return SQL_CLASS_UNKNOWN;
	c.lx = *text;
	c.lx.pos = pos;
	c.sound = sound;
	adv(&c);
	while (c.t.kind == SQL_TOK_SEMI)
		adv(&c);
	while (punct(&c.lx, &c.t, '(')) {
		lead++;
		adv(&c);
	}
	if (c.t.kind != SQL_TOK_IDENT)
		return SQL_CLASS_UNKNOWN;

	if (tok_in(&c.lx, &c.t, query_start))
		return read_class(&c, lead, mask);
	if (lead > 0) /* only a query can stand in parentheses */
		return SQL_CLASS_UNKNOWN;
	if (is(&c, "insert") || is(&c, "update") || is(&c, "delete") || is(&c, "merge") ||
	    is(&c, "truncate"))
		return SQL_CLASS_WRITE;
	if (is(&c, "fetch") || is(&c, "move") || is(&c, "close"))
		return SQL_CLASS_READ;
	if (is(&c, "create"))
		return classify_create(&c, mask);
	if (is(&c, "alter")) {
		adv(&c);
		if (is(&c, "system"))
			return SQL_CLASS_ADMIN;
		if (tok_in(&c.lx, &c.t, dcl_objects) || is(&c, "default"))
			return SQL_CLASS_ROLE;
		return SQL_CLASS_DDL;
	}
	if (is(&c, "drop")) {
		adv(&c);
		if (tok_in(&c.lx, &c.t, dcl_objects) || is(&c, "owned"))
			return SQL_CLASS_ROLE;
		return SQL_CLASS_DDL;
	}
	if (is(&c, "comment") || is(&c, "import"))
		return SQL_CLASS_DDL;
	if (tok_in(&c.lx, &c.t, dcl))
		return SQL_CLASS_ROLE;
	if (tok_in(&c.lx, &c.t, admin))
		return SQL_CLASS_ADMIN;
	if (is(&c, "copy"))
		return classify_copy(&c, mask);
	if (is(&c, "call") || is(&c, "do"))
		return SQL_CLASS_FUNCTION_CALL;
	if (is(&c, "prepare")) {
		struct cur peek = c;

		adv(&peek);
		if (tok_is(&peek.lx, &peek.t, "transaction")) {
			adv(&peek);
			if (peek.t.kind == SQL_TOK_STRING)
				return SQL_CLASS_TRANSACTION;
		}
		if (!find_kw0(&c, "as"))
			return SQL_CLASS_UNKNOWN;
		adv(&c);
		enum sql_class body = look_through(&c, level, mask);

		if (body == SQL_CLASS_UNKNOWN)
			return SQL_CLASS_UNKNOWN;
		*mask |= SQL_CLASS_BIT(body);
		return SQL_CLASS_PREPARE;
	}
	if (is(&c, "execute") || is(&c, "deallocate"))
		return SQL_CLASS_PREPARE;
	if (tok_in(&c.lx, &c.t, txn))
		return SQL_CLASS_TRANSACTION;
	if (is(&c, "set"))
		return classify_set(&c, false);
	if (is(&c, "reset"))
		return classify_set(&c, true);
	if (tok_in(&c.lx, &c.t, listen_notify))
		return SQL_CLASS_LISTEN_NOTIFY;
	if (is(&c, "show") || is(&c, "discard"))
		return SQL_CLASS_SESSION;
	if (is(&c, "declare")) {
		adv(&c);
		if (!find_kw0(&c, "for"))
			return SQL_CLASS_UNKNOWN;
		adv(&c);
		return look_through(&c, level, mask);
	}
	if (is(&c, "explain"))
		return classify_explain(&c, level, mask);
	return SQL_CLASS_UNKNOWN;
}

enum sql_class sql_classify(const char *sql, size_t len, unsigned opts, uint32_t *classes)
{
	struct soundness sound = {0};
	struct sql_lexer lx;
	struct sql_token t;
	uint32_t mask = 0;
	enum sql_class cls;

	if (classes)
		*classes = 0;
	if (!sql)
		len = 0;
	sql_lex_init(&lx, sql, len, opts);
	cls = classify_at(&lx, 0, 0, &mask, &sound);
	/* The rest of the text the classifier did not need: one statement, lexically sound,
	 * or nothing can be said about it. */
	lx.pos = sound.frontier;
	while (!sound.eof && !sound.unsound)
		lex_checked(&lx, &t, &sound);
	if (sound.unsound || !sound.seen || cls == SQL_CLASS_UNKNOWN)
		return SQL_CLASS_UNKNOWN;
	mask |= SQL_CLASS_BIT(cls);
	if (classes)
		*classes = mask;
	return cls;
}

static const char *const class_names[SQL_CLASS_COUNT] = {
	[SQL_CLASS_READ] = "read",
	[SQL_CLASS_WRITE] = "write",
	[SQL_CLASS_DDL] = "ddl",
	[SQL_CLASS_ROLE] = "role",
	[SQL_CLASS_ADMIN] = "admin",
	[SQL_CLASS_COPY_IN] = "copy_in",
	[SQL_CLASS_COPY_OUT] = "copy_out",
	[SQL_CLASS_COPY_PROGRAM] = "copy_program",
	[SQL_CLASS_FUNCTION_CALL] = "function_call",
	[SQL_CLASS_TRANSACTION] = "transaction",
	[SQL_CLASS_SESSION] = "session",
	[SQL_CLASS_LISTEN_NOTIFY] = "listen_notify",
	[SQL_CLASS_PREPARE] = "prepare",
	[SQL_CLASS_UNKNOWN] = "unknown",
};

const char *sql_class_to_str(enum sql_class c)
{
	return (unsigned)c < SQL_CLASS_COUNT ? class_names[c] : "?";
}

enum sql_class sql_class_from_str(const char *s, size_t n)
{
	for (unsigned c = 0; c < SQL_CLASS_COUNT; c++)
		if (strlen(class_names[c]) == n && memcmp(class_names[c], s, n) == 0)
			return (enum sql_class)c;
	return SQL_CLASS_COUNT;
}
