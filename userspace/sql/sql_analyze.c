/*
 * sql_analyze: the names one statement touches (relations, functions, columns), whether it
 * may switch roles or move search_path, and the prepared-statement name it prepares,
 * executes or deallocates. See sql.h for the contract.
 *
 * Like sql_classify it is a token walk, not a parser: it knows the positions where a
 * relation or a function is named (FROM and JOIN lists, INSERT/MERGE INTO, UPDATE, DELETE
 * FROM, TABLE, COPY, TRUNCATE, LOCK, VACUUM, DDL on tables, name followed by '(') and
 * reports what it could not follow as UNSURE, so policy never mistakes "not seen" for
 * "not there". Parenthesis nesting is a counter with a per-level context array, never
 * recursion, and both the nesting and the token count have a budget.
 */
#include "sql/sql.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RING 8 /* lookahead tokens */

/* What a parenthesis level is. */
enum frame_kind {
	FR_EXPR = 0, /* an expression or a subquery */
	FR_FROM,     /* a parenthesised join inside a FROM list */
	FR_FROMSUB,  /* a subquery standing as a FROM item: an alias may follow its ')' */
	FR_CALL,     /* a function call's arguments (FROM inside is EXTRACT/SUBSTRING syntax) */
	FR_LIST,     /* a column or alias list: names here are not references */
};

struct frame {
	enum frame_kind kind;
	bool from;  /* a FROM list is open at this level */
	unsigned rel_flags; /* flags for relations named in this level's FROM list */
};

/* A WITH query name, visible to references from its scope (see cte_visible). */
struct cte {
	char name[SQL_NAME_MAX];
	unsigned depth;   /* paren depth of its WITH */
	size_t from_off;  /* visible from this offset (after its body, or at once if RECURSIVE) */
	bool live;
};

#define MAX_CTES 32

/* take_relation: a '(' after the name is a column list, not a call (COPY t (a, b) TO). */
#define REL_NO_CALL 0x100u

struct walker {
	struct sql_lexer lx;
	struct sql_token ring[RING];
	unsigned head, count; /* ring[head] is the current token */
	struct sql_analysis *a;
	unsigned long ntok;
	unsigned depth;
	struct frame fr[SQL_ANALYZE_MAX_DEPTH + 1];
	struct cte ctes[MAX_CTES];
	unsigned nctes;
	struct sql_token prev, prev2; /* the two tokens before the current one */
	bool at_start; /* the current token starts a statement (after EXPLAIN, AS, ...) */
	bool stop;
};

/* ---- token window ------------------------------------------------------------------- */

static void fill(struct walker *w)
{
	struct sql_token t;

	sql_lex_next(&w->lx, &t);
	w->ring[(w->head + w->count) % RING] = t;
	w->count++;
}

static const struct sql_token *peek(struct walker *w, unsigned k)
{
	while (w->count <= k)
		fill(w);
	return &w->ring[(w->head + k) % RING];
}

static const struct sql_token *cur(struct walker *w)
{
	return peek(w, 0);
}

static void adv(struct walker *w)
{
	const struct sql_token *t = cur(w);

	if (t->kind == SQL_TOK_EOF)
		return;
	w->prev2 = w->prev;
	w->prev = *t;
	w->at_start = false;
	w->head = (w->head + 1) % RING;
	w->count--;
	if (++w->ntok > SQL_ANALYZE_MAX_TOKENS) {
		w->a->flags |= SQL_AF_TOO_COMPLEX;
		w->stop = true;
	}
}

static bool kw(const struct walker *w, const struct sql_token *t, const char *word)
{
	return sql_tok_is(&w->lx, t, word);
}

static int cmp_word(const void *key, const void *elem)
{
	return strcmp(key, *(const char *const *)elem);
}

static unsigned kw_flags(const struct walker *w, const struct sql_token *t);

/* Is t an unquoted identifier in the sorted list (case-insensitively)? For the few short
 * local lists; the walk's own words are in keywords[] (kw_flags). */
static bool kw_in_n(const struct walker *w, const struct sql_token *t, const char *const *list,
		    size_t n)
{
	char low[32];

	if (t->kind != SQL_TOK_IDENT || t->len >= sizeof(low))
		return false;
	for (size_t i = 0; i < t->len; i++) {
		char c = w->lx.sql[t->off + i];

		low[i] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
	}
	low[t->len] = '\0';
	return bsearch(low, list, n, sizeof(*list), cmp_word) != NULL;
}

#define kw_in(w, t, list) kw_in_n(w, t, list, sizeof(list) / sizeof((list)[0]))
/* Has t (an unquoted identifier) any of the KW_ flags? */
#define kw_is(w, t, flag) ((kw_flags(w, t) & (flag)) != 0)

static bool punct(const struct walker *w, const struct sql_token *t, char c)
{
	return t->kind == SQL_TOK_PUNCT && t->len == 1 && w->lx.sql[t->off] == c;
}

static bool op_is(const struct walker *w, const struct sql_token *t, const char *op)
{
	size_t n = strlen(op);

	return t->kind == SQL_TOK_OP && t->len == n && memcmp(w->lx.sql + t->off, op, n) == 0;
}

static bool at_end(const struct sql_token *t)
{
	return t->kind == SQL_TOK_EOF || t->kind == SQL_TOK_SEMI;
}

static bool identish(const struct sql_token *t)
{
	return t->kind == SQL_TOK_IDENT || t->kind == SQL_TOK_QIDENT;
}

/* ---- word lists ------------------------------------------------------------------------ */






/*
 * Every word the walk treats specially, with what it is (sorted: one binary search per
 * identifier answers every question below; a test keeps the table sorted):
 *   KW_RESERVED      PostgreSQL 16's RESERVED_KEYWORD list (kwlist.h): never a table or
 *                    column name unquoted;
 *   KW_FROM_STOP     ends a FROM item, or cannot be a bare alias;
 *   KW_PAREN_SYNTAX  a non-reserved keyword the grammar follows with '(' where no function
 *                    is called (everything else followed by '(' is reported as a call:
 *                    over-reporting only makes a deny list stricter, a missed call would
 *                    let a denied function through);
 *   KW_FROM_END      ends a FROM list at its level;
 *   KW_NOISE         syntax inside expressions, not a column;
 *   KW_TRIGGER       a word the walk acts on (WITH, FROM, JOIN, USING, INTO, UPDATE, ...);
 *   KW_DDL_FUNCTION  DDL on these objects names functions or holds code in strings: the
 *                    functions it makes reachable cannot be told;
 *   KW_DDL_RELATION  DDL on these objects holds relation references the walk does not
 *                    follow;
 *   KW_DDL_PLAIN     DDL on these objects names no relation;
 *   KW_DDL_TABLE     the DDL objects whose relation names the walk reads.
 */
enum {
	KW_RESERVED = 0x001,
	KW_FROM_STOP = 0x002,
	KW_PAREN_SYNTAX = 0x004,
	KW_FROM_END = 0x008,
	KW_NOISE = 0x010,
	KW_TRIGGER = 0x020,
	KW_DDL_FUNCTION = 0x040,
	KW_DDL_RELATION = 0x080,
	KW_DDL_PLAIN = 0x100,
	KW_DDL_TABLE = 0x200,
};

struct keyword {
	const char *word;
	unsigned flags;
};

static const struct keyword keywords[] = {
	{"access", KW_DDL_FUNCTION | KW_NOISE},
	{"action", KW_NOISE},
	{"aggregate", KW_DDL_FUNCTION | KW_DDL_PLAIN},
	{"all", KW_NOISE | KW_RESERVED},
	{"also", KW_NOISE | KW_PAREN_SYNTAX},
	{"analyse", KW_RESERVED},
	{"analyze", KW_NOISE | KW_RESERVED},
	{"and", KW_FROM_STOP | KW_RESERVED},
	{"any", KW_NOISE | KW_RESERVED},
	{"array", KW_NOISE | KW_RESERVED},
	{"as", KW_FROM_STOP | KW_RESERVED},
	{"asc", KW_RESERVED},
	{"asensitive", KW_NOISE},
	{"asymmetric", KW_RESERVED},
	{"at", KW_NOISE},
	{"bernoulli", KW_NOISE},
	{"between", KW_NOISE | KW_PAREN_SYNTAX},
	{"bigint", KW_NOISE},
	{"binary", KW_NOISE},
	{"bit", KW_NOISE},
	{"bool", KW_NOISE},
	{"boolean", KW_NOISE},
	{"both", KW_RESERVED},
	{"breadth", KW_NOISE},
	{"by", KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX},
	{"bytea", KW_NOISE},
	{"cascade", KW_NOISE},
	{"case", KW_RESERVED},
	{"cast", KW_DDL_FUNCTION | KW_DDL_PLAIN | KW_RESERVED},
	{"char", KW_NOISE},
	{"character", KW_NOISE},
	{"check", KW_RESERVED},
	{"collate", KW_RESERVED},
	{"collation", KW_DDL_PLAIN},
	{"column", KW_RESERVED},
	{"conflict", KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX},
	{"constraint", KW_RESERVED},
	{"content", KW_NOISE},
	{"conversion", KW_DDL_FUNCTION | KW_DDL_PLAIN},
	{"create", KW_RESERVED},
	{"cross", KW_FROM_STOP | KW_PAREN_SYNTAX},
	{"csv", KW_NOISE},
	{"cube", KW_PAREN_SYNTAX},
	{"current", KW_NOISE},
	{"current_catalog", KW_RESERVED},
	{"current_date", KW_RESERVED},
	{"current_role", KW_RESERVED},
	{"current_time", KW_RESERVED},
	{"current_timestamp", KW_RESERVED},
	{"current_user", KW_RESERVED},
	{"cursor", KW_NOISE},
	{"cycle", KW_NOISE},
	{"data", KW_NOISE},
	{"database", KW_DDL_RELATION},
	{"date", KW_NOISE},
	{"day", KW_NOISE},
	{"dec", KW_NOISE},
	{"decimal", KW_NOISE},
	{"default", KW_DDL_RELATION | KW_FROM_STOP | KW_NOISE | KW_RESERVED},
	{"deferrable", KW_RESERVED},
	{"delete", KW_NOISE | KW_TRIGGER},
	{"delimiter", KW_NOISE},
	{"depth", KW_NOISE},
	{"desc", KW_RESERVED},
	{"distinct", KW_RESERVED},
	{"do", KW_FROM_STOP | KW_NOISE | KW_RESERVED},
	{"document", KW_NOISE},
	{"domain", KW_DDL_PLAIN},
	{"double", KW_NOISE},
	{"else", KW_FROM_STOP | KW_RESERVED},
	{"encoding", KW_NOISE},
	{"end", KW_FROM_STOP | KW_RESERVED},
	{"escape", KW_NOISE | KW_PAREN_SYNTAX},
	{"event", KW_DDL_FUNCTION | KW_DDL_RELATION},
	{"except", KW_FROM_END | KW_FROM_STOP | KW_NOISE | KW_RESERVED},
	{"exclude", KW_NOISE | KW_PAREN_SYNTAX},
	{"exclusive", KW_NOISE},
	{"execute", KW_PAREN_SYNTAX},
	{"exists", KW_NOISE | KW_PAREN_SYNTAX},
	{"extension", KW_DDL_FUNCTION | KW_DDL_RELATION},
	{"false", KW_NOISE | KW_RESERVED},
	{"fetch", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"filter", KW_NOISE | KW_PAREN_SYNTAX},
	{"first", KW_NOISE},
	{"float", KW_NOISE},
	{"following", KW_NOISE},
	{"for", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"force", KW_NOISE},
	{"foreign", KW_DDL_FUNCTION | KW_DDL_PLAIN | KW_RESERVED},
	{"format", KW_NOISE},
	{"freeze", KW_NOISE},
	{"from", KW_FROM_STOP | KW_RESERVED | KW_TRIGGER},
	{"full", KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX},
	{"function", KW_DDL_FUNCTION | KW_DDL_RELATION | KW_PAREN_SYNTAX},
	{"grant", KW_RESERVED},
	{"group", KW_DDL_PLAIN | KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"groups", KW_NOISE},
	{"having", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"header", KW_NOISE},
	{"hold", KW_NOISE},
	{"hour", KW_NOISE},
	{"ilike", KW_NOISE | KW_PAREN_SYNTAX},
	{"in", KW_FROM_STOP | KW_RESERVED},
	{"include", KW_PAREN_SYNTAX},
	{"index", KW_DDL_TABLE},
	{"inet", KW_NOISE},
	{"initially", KW_RESERVED},
	{"inner", KW_FROM_STOP | KW_PAREN_SYNTAX},
	{"insensitive", KW_NOISE},
	{"insert", KW_NOISE},
	{"instead", KW_NOISE | KW_PAREN_SYNTAX},
	{"int", KW_NOISE},
	{"integer", KW_NOISE},
	{"intersect", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"interval", KW_NOISE},
	{"into", KW_FROM_STOP | KW_RESERVED | KW_TRIGGER},
	{"is", KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX},
	{"isnull", KW_NOISE},
	{"join", KW_FROM_STOP | KW_PAREN_SYNTAX | KW_TRIGGER},
	{"json", KW_NOISE},
	{"jsonb", KW_NOISE},
	{"key", KW_NOISE | KW_PAREN_SYNTAX},
	{"language", KW_DDL_FUNCTION | KW_DDL_PLAIN | KW_PAREN_SYNTAX},
	{"last", KW_NOISE},
	{"lateral", KW_FROM_STOP | KW_RESERVED},
	{"leading", KW_RESERVED},
	{"left", KW_FROM_STOP},
	{"like", KW_NOISE | KW_PAREN_SYNTAX},
	{"limit", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"local", KW_NOISE},
	{"localtime", KW_RESERVED},
	{"localtimestamp", KW_RESERVED},
	{"locked", KW_NOISE},
	{"matched", KW_FROM_STOP | KW_NOISE},
	{"materialized", KW_DDL_TABLE | KW_NOISE | KW_PAREN_SYNTAX},
	{"merge", KW_NOISE | KW_TRIGGER},
	{"minute", KW_NOISE},
	{"mode", KW_NOISE},
	{"month", KW_NOISE},
	{"name", KW_NOISE},
	{"national", KW_NOISE},
	{"natural", KW_FROM_STOP | KW_PAREN_SYNTAX},
	{"nchar", KW_NOISE},
	{"next", KW_NOISE},
	{"nfc", KW_NOISE},
	{"nfd", KW_NOISE},
	{"nfkc", KW_NOISE},
	{"nfkd", KW_NOISE},
	{"no", KW_NOISE},
	{"normalized", KW_NOISE},
	{"not", KW_FROM_STOP | KW_RESERVED},
	{"nothing", KW_NOISE | KW_PAREN_SYNTAX},
	{"notnull", KW_NOISE},
	{"nowait", KW_FROM_STOP | KW_NOISE},
	{"null", KW_NOISE | KW_RESERVED},
	{"nulls", KW_NOISE},
	{"numeric", KW_NOISE},
	{"of", KW_FROM_STOP | KW_NOISE},
	{"offset", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"oids", KW_NOISE},
	{"on", KW_FROM_STOP | KW_RESERVED},
	{"only", KW_FROM_STOP | KW_NOISE | KW_RESERVED},
	{"operator", KW_DDL_FUNCTION | KW_DDL_PLAIN},
	{"options", KW_PAREN_SYNTAX},
	{"or", KW_FROM_STOP | KW_RESERVED},
	{"order", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"ordinality", KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX},
	{"others", KW_NOISE},
	{"outer", KW_FROM_STOP | KW_PAREN_SYNTAX},
	{"over", KW_NOISE | KW_PAREN_SYNTAX},
	{"overriding", KW_FROM_STOP | KW_NOISE},
	{"owned", KW_DDL_RELATION},
	{"partition", KW_NOISE | KW_PAREN_SYNTAX},
	{"passing", KW_NOISE},
	{"placing", KW_RESERVED},
	{"policy", KW_DDL_RELATION},
	{"preceding", KW_NOISE},
	{"precision", KW_NOISE},
	{"primary", KW_RESERVED},
	{"procedure", KW_DDL_FUNCTION | KW_DDL_RELATION | KW_PAREN_SYNTAX},
	{"program", KW_NOISE},
	{"publication", KW_DDL_RELATION},
	{"quote", KW_NOISE},
	{"range", KW_NOISE},
	{"real", KW_NOISE},
	{"recursive", KW_NOISE | KW_PAREN_SYNTAX},
	{"references", KW_RESERVED | KW_TRIGGER},
	{"repeatable", KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX},
	{"replica", KW_PAREN_SYNTAX},
	{"restrict", KW_NOISE},
	{"returning", KW_FROM_END | KW_FROM_STOP | KW_NOISE | KW_RESERVED},
	{"returns", KW_PAREN_SYNTAX},
	{"right", KW_FROM_STOP},
	{"role", KW_DDL_PLAIN},
	{"rollup", KW_PAREN_SYNTAX},
	{"routine", KW_DDL_FUNCTION | KW_DDL_RELATION | KW_PAREN_SYNTAX},
	{"row", KW_NOISE | KW_PAREN_SYNTAX},
	{"rows", KW_FROM_STOP | KW_NOISE},
	{"rule", KW_DDL_RELATION},
	{"schema", KW_DDL_RELATION},
	{"scroll", KW_NOISE},
	{"search", KW_NOISE},
	{"second", KW_NOISE},
	{"select", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"sequence", KW_DDL_TABLE},
	{"server", KW_DDL_FUNCTION | KW_DDL_PLAIN},
	{"session_user", KW_RESERVED},
	{"set", KW_FROM_END | KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX | KW_TRIGGER},
	{"setof", KW_NOISE},
	{"sets", KW_PAREN_SYNTAX},
	{"share", KW_NOISE},
	{"similar", KW_NOISE | KW_PAREN_SYNTAX},
	{"skip", KW_FROM_STOP | KW_NOISE},
	{"smallint", KW_NOISE},
	{"some", KW_NOISE | KW_RESERVED},
	{"statistics", KW_DDL_RELATION},
	{"stdin", KW_NOISE},
	{"stdout", KW_NOISE},
	{"storage", KW_PAREN_SYNTAX},
	{"subscription", KW_DDL_RELATION},
	{"symmetric", KW_RESERVED},
	{"system", KW_NOISE},
	{"system_user", KW_RESERVED},
	{"table", KW_DDL_TABLE | KW_FROM_STOP | KW_RESERVED | KW_TRIGGER},
	{"tablesample", KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX},
	{"tablespace", KW_DDL_PLAIN},
	{"text", KW_DDL_FUNCTION | KW_DDL_PLAIN | KW_NOISE},
	{"then", KW_FROM_STOP | KW_RESERVED},
	{"ties", KW_NOISE},
	{"time", KW_NOISE},
	{"timestamp", KW_NOISE},
	{"to", KW_FROM_STOP | KW_RESERVED},
	{"trailing", KW_RESERVED},
	{"transform", KW_DDL_FUNCTION},
	{"trigger", KW_DDL_FUNCTION | KW_DDL_RELATION | KW_PAREN_SYNTAX},
	{"true", KW_NOISE | KW_RESERVED},
	{"type", KW_DDL_FUNCTION | KW_DDL_PLAIN},
	{"unbounded", KW_NOISE},
	{"union", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"unique", KW_RESERVED},
	{"unknown", KW_NOISE},
	{"update", KW_NOISE | KW_TRIGGER},
	{"user", KW_DDL_PLAIN | KW_RESERVED},
	{"using", KW_FROM_STOP | KW_RESERVED | KW_TRIGGER},
	{"uuid", KW_NOISE},
	{"value", KW_NOISE},
	{"values", KW_FROM_END | KW_FROM_STOP | KW_NOISE | KW_PAREN_SYNTAX},
	{"varchar", KW_NOISE},
	{"variadic", KW_RESERVED},
	{"varying", KW_NOISE},
	{"verbose", KW_NOISE},
	{"view", KW_DDL_TABLE},
	{"when", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"where", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"window", KW_FROM_END | KW_FROM_STOP | KW_RESERVED},
	{"with", KW_FROM_STOP | KW_RESERVED | KW_TRIGGER},
	{"within", KW_NOISE | KW_PAREN_SYNTAX},
	{"without", KW_NOISE},
	{"year", KW_NOISE},
	{"zone", KW_NOISE},
};

static int cmp_keyword(const void *key, const void *elem)
{
	return strcmp(key, ((const struct keyword *)elem)->word);
}

static unsigned kw_flags(const struct walker *w, const struct sql_token *t)
{
	char low[32];
	const struct keyword *k;

	if (t->kind != SQL_TOK_IDENT || t->len >= sizeof(low))
		return 0;
	for (size_t i = 0; i < t->len; i++) {
		char c = w->lx.sql[t->off + i];

		low[i] = (c >= 'A' && c <= 'Z') ? (char)(c | 0x20) : c;
	}
	low[t->len] = '\0';
	k = bsearch(low, keywords, sizeof(keywords) / sizeof(keywords[0]), sizeof(keywords[0]),
		    cmp_keyword);
	return k ? k->flags : 0;
}

/* Functions that run SQL given to them as text, or read relations named by a string:
 * relation lists cannot see what they touch. */
static const char *const sql_text_functions[] = {
	"connectby", "crosstab", "crosstab2", "crosstab3", "crosstab4", "cursor_to_xml",
	"cursor_to_xmlschema", "database_to_xml", "database_to_xml_and_xmlschema",
	"database_to_xmlschema", "dblink", "dblink_build_sql_delete", "dblink_build_sql_insert",
	"dblink_build_sql_update", "dblink_exec", "dblink_fetch", "dblink_get_result",
	"dblink_open", "dblink_send_query", "lo_export", "lo_import", "pg_read_binary_file",
	"pg_read_file", "pgp_sym_decrypt", "query_to_xml", "query_to_xml_and_xmlschema",
	"query_to_xmlschema", "schema_to_xml", "schema_to_xml_and_xmlschema",
	"schema_to_xmlschema", "table_to_xml", "table_to_xml_and_xmlschema", "table_to_xmlschema",
	"ts_rewrite", "ts_stat", "xpath_table",
};

/* ---- recording ------------------------------------------------------------------------- */

static bool name_in_n(const char *name, const char *const *list, size_t n)
{
	return bsearch(name, list, n, sizeof(*list), cmp_word) != NULL;
}

#define name_in(name, list) name_in_n(name, list, sizeof(list) / sizeof((list)[0]))

/* A possibly qualified name: up to three decoded parts, the last token consumed. */
struct qname {
	char part[3][SQL_NAME_MAX];
	unsigned n;
	bool ok;        /* every part decoded */
	bool star;      /* ended in .* */
};

/*
 * The U&"" escape character for a Unicode identifier at the current token: a following
 * UESCAPE 'c' clause is consumed. '\\' when absent; 0 when the clause is malformed.
 */
static char uescape_char(struct walker *w)
{
	const struct sql_token *n = peek(w, 1), *s = peek(w, 2);
	char buf[8];

	if (!(cur(w)->flags & SQL_TOKF_UNICODE) || !kw(w, n, "uescape"))
		return '\\';
	if (s->kind != SQL_TOK_STRING || !sql_string_decode(&w->lx, s, buf, sizeof(buf)) ||
	    strlen(buf) != 1)
		return 0;
	/* PostgreSQL refuses hex digits, +, quotes and white space as the escape. */
	if (strchr("0123456789abcdefABCDEF+'\" \t\n\r\f", buf[0]))
		return 0;
	adv(w);
	adv(w);
	return buf[0];
}

/* Read a name from the current token (an identifier) through its dots; the walker is left
 * on the last token of the name. */
static void read_qname(struct walker *w, struct qname *q)
{
	q->n = 0;
	q->ok = true;
	q->star = false;
	for (;;) {
		const struct sql_token *t = cur(w);
		char esc;

		if (q->n == 3) {
			q->ok = false; /* four parts: not a name PostgreSQL resolves */
			return;
		}
		esc = uescape_char(w);
		if (!esc || !sql_ident_decode(&w->lx, t, esc, q->part[q->n]))
			q->ok = false;
		q->n++;
		if (!punct(w, peek(w, 1), '.'))
			return;
		if (op_is(w, peek(w, 2), "*")) {
			adv(w);
			adv(w);
			q->star = true;
			return;
		}
		if (!identish(peek(w, 2)))
			return;
		adv(w);
		adv(w);
	}
}

static void copy_name(char *dst, const char *src)
{
	size_t n = strlen(src);

	if (n >= SQL_NAME_MAX)
		n = SQL_NAME_MAX - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Whether an unqualified name refers to a WITH query visible at offset off. */
static bool cte_visible(const struct walker *w, const char *name, size_t off)
{
	for (unsigned i = 0; i < w->nctes; i++)
		if (w->ctes[i].live && off >= w->ctes[i].from_off &&
		    strcmp(w->ctes[i].name, name) == 0)
			return true;
	return false;
}

/* Record a relation; returns its index or -1. */
static int add_relation(struct walker *w, const struct qname *q, unsigned flags, size_t off)
{
	struct sql_analysis *a = w->a;
	struct sql_relation *r;

	if (!q->ok || q->star) {
		a->flags |= SQL_AF_RELATIONS_UNSURE;
		return -1;
	}
	if (q->n == 1 && cte_visible(w, q->part[0], off))
		return -1;
	if (a->nrelations == SQL_ANALYZE_MAX_RELATIONS) {
		a->flags |= SQL_AF_RELATIONS_UNSURE;
		return -1;
	}
	r = &a->relations[a->nrelations];
	memset(r, 0, sizeof(*r));
	copy_name(r->name, q->part[q->n - 1]);
	if (q->n >= 2)
		copy_name(r->schema, q->part[q->n - 2]);
	if (q->n == 3)
		copy_name(r->catalog, q->part[0]);
	r->flags = flags;
	/* An UPDATE of pg_settings is set_config() for every row it touches. */
	if ((flags & SQL_RELF_WRITE) && strcmp(r->name, "pg_settings") == 0 &&
	    (!r->schema[0] || strcmp(r->schema, "pg_catalog") == 0))
		a->flags |= SQL_AF_ROLE_SWITCH | SQL_AF_SEARCH_PATH | SQL_AF_ENCODING_CHANGE;
	return (int)a->nrelations++;
}

static void add_function(struct walker *w, const struct qname *q)
{
	struct sql_analysis *a = w->a;
	struct sql_function *f;
	const char *name;

	if (!q->ok || q->n > 2) {
		a->flags |= SQL_AF_FUNCTIONS_UNSURE;
		return;
	}
	name = q->part[q->n - 1];
	if (name_in(name, sql_text_functions))
		a->flags |= SQL_AF_RELATIONS_UNSURE;
	if (strcmp(name, "pg_notify") == 0)
		a->classes |= SQL_CLASS_BIT(SQL_CLASS_LISTEN_NOTIFY);
	if (a->nfunctions == SQL_ANALYZE_MAX_FUNCTIONS) {
		a->flags |= SQL_AF_FUNCTIONS_UNSURE;
		return;
	}
	f = &a->functions[a->nfunctions++];
	copy_name(f->name, name);
	f->schema[0] = '\0';
	if (q->n == 2)
		copy_name(f->schema, q->part[0]);
}

static void add_column(struct walker *w, const struct qname *q)
{
	struct sql_analysis *a = w->a;
	struct sql_column *c;

	if (q->star) {
		a->flags |= SQL_AF_COLUMNS_UNSURE;
		return;
	}
	if (!q->ok) {
		a->flags |= SQL_AF_COLUMNS_UNSURE;
		return;
	}
	if (a->ncolumns == SQL_ANALYZE_MAX_COLUMNS) {
		a->flags |= SQL_AF_COLUMNS_UNSURE;
		return;
	}
	c = &a->columns[a->ncolumns++];
	memset(c, 0, sizeof(*c));
	copy_name(c->name, q->part[q->n - 1]);
	if (q->n >= 2)
		copy_name(c->qualifier, q->part[q->n - 2]);
	if (q->n == 3)
		copy_name(c->schema, q->part[0]);
	c->relation = -1;
}

/* ---- set_config and SET: role, search_path, client_encoding ---------------------------- */

/* What setting a GUC name is, for the flags. */
static void setting_flags(struct sql_analysis *a, const char *given, bool known_value,
			  const char *value)
{
	/* Setting names are case-insensitive, quoted or not: SET "ROLE" is SET role. */
	char name[SQL_NAME_MAX];
	size_t i;

	for (i = 0; given[i] && i + 1 < sizeof(name); i++)
		name[i] = (given[i] >= 'A' && given[i] <= 'Z') ? (char)(given[i] | 0x20) : given[i];
	name[i] = '\0';
	if (strcmp(name, "role") == 0 || strcmp(name, "session_authorization") == 0)
		a->flags |= SQL_AF_ROLE_SWITCH;
	else if (strcmp(name, "search_path") == 0)
		a->flags |= SQL_AF_SEARCH_PATH;
	else if (strcmp(name, "client_encoding") == 0) {
		if (!known_value)
			a->flags |= SQL_AF_ENCODING_CHANGE;
		else if (sql_encoding_is_unsafe(value))
			a->flags |= SQL_AF_BAD_ENCODING;
	} else if (strcmp(name, "all") == 0) {
		a->flags |= SQL_AF_SEARCH_PATH;
	}
}

/* set_config(name, value, is_local) at the current token '(' : the name must be a literal
 * for the analysis to tell which setting moves. */
static void set_config_args(struct walker *w)
{
	const struct sql_token *n = peek(w, 1), *comma = peek(w, 2), *v = peek(w, 3);
	char name[SQL_NAME_MAX], value[64];

	w->a->classes |= SQL_CLASS_BIT(SQL_CLASS_SESSION);
	if (n->kind != SQL_TOK_STRING || !sql_string_decode(&w->lx, n, name, sizeof(name)) ||
	    !punct(w, comma, ',')) {
		/* Computed name: any setting, role included. */
		w->a->flags |= SQL_AF_ROLE_SWITCH | SQL_AF_SEARCH_PATH | SQL_AF_ENCODING_CHANGE;
		return;
	}
	for (char *p = name; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p | 0x20);
	bool lit = v->kind == SQL_TOK_STRING && sql_string_decode(&w->lx, v, value, sizeof(value));

	setting_flags(w->a, name, lit, lit ? value : NULL);
}

/*
 * SET / RESET / SHOW / DISCARD at the current token (the verb). The setting name may be
 * quoted ("role" is the role setting too).
 */
static void analyze_set(struct walker *w)
{
	struct sql_analysis *a = w->a;
	bool reset = kw(w, cur(w), "reset"), set = kw(w, cur(w), "set");
	char name[SQL_NAME_MAX];

	if (kw(w, cur(w), "discard")) {
		adv(w);
		/* DISCARD ALL includes SET SESSION AUTHORIZATION DEFAULT and RESET ALL. */
		if (kw(w, cur(w), "all"))
			a->flags |= SQL_AF_ROLE_SWITCH | SQL_AF_SEARCH_PATH;
		return;
	}
	if (!set && !reset)
		return; /* SHOW */
	adv(w);
	if (kw(w, cur(w), "session") || kw(w, cur(w), "local")) {
		if (kw(w, cur(w), "session") && kw(w, peek(w, 1), "authorization")) {
			a->flags |= SQL_AF_ROLE_SWITCH;
			return;
		}
		if (kw(w, cur(w), "session") && kw(w, peek(w, 1), "characteristics"))
			return;
		adv(w);
	}
	if (kw(w, cur(w), "names")) { /* SET NAMES 'enc' is client_encoding */
		const struct sql_token *v = peek(w, 1);
		char value[64];
		bool lit = v->kind == SQL_TOK_STRING &&
			   sql_string_decode(&w->lx, v, value, sizeof(value));

		if (!lit && identish(v)) {
			lit = sql_ident_decode(&w->lx, v, '\\', value);
		}
		setting_flags(a, "client_encoding", lit, lit ? value : NULL);
		return;
	}
	if (kw(w, cur(w), "time") && kw(w, peek(w, 1), "zone"))
		return;
	if (!identish(cur(w))) {
		a->flags |= SQL_AF_ROLE_SWITCH | SQL_AF_SEARCH_PATH | SQL_AF_ENCODING_CHANGE;
		return;
	}
	struct qname q;

	read_qname(w, &q);
	if (!q.ok) {
		a->flags |= SQL_AF_ROLE_SWITCH | SQL_AF_SEARCH_PATH | SQL_AF_ENCODING_CHANGE;
		return;
	}
	if (q.n > 1)
		return; /* a custom "ext.setting" */
	copy_name(name, q.part[0]);
	if (reset) {
		setting_flags(a, name, true, "");
		return;
	}
	adv(w);
	if (kw(w, cur(w), "to") || op_is(w, cur(w), "="))
		adv(w);
	/* One value decides client_encoding; several values (search_path) need no reading. */
	char value[64];
	bool lit = false;

	if (cur(w)->kind == SQL_TOK_STRING)
		lit = sql_string_decode(&w->lx, cur(w), value, sizeof(value));
	else if (identish(cur(w)))
		lit = sql_ident_decode(&w->lx, cur(w), '\\', value);
	if (lit && kw(w, cur(w), "default"))
		strcpy(value, "");
	setting_flags(a, name, lit, lit ? value : NULL);
}

/* ---- the general walk ---------------------------------------------------------------- */

/* After a relation name in a FROM list: [AS] alias [(column aliases)]. */
static void take_alias(struct walker *w, int rel)
{
	const struct sql_token *n = peek(w, 1);

	if (kw(w, n, "as")) {
		adv(w);
		n = peek(w, 1);
	} else if (n->kind == SQL_TOK_IDENT && kw_is(w, n, KW_FROM_STOP)) {
		return;
	} else if (n->kind == SQL_TOK_IDENT && kw_is(w, n, KW_RESERVED)) {
		return;
	}
	if (!identish(n))
		return;
	adv(w);
	if (rel >= 0) {
		char alias[SQL_NAME_MAX];

		if (sql_ident_decode(&w->lx, cur(w), '\\', alias))
			copy_name(w->a->relations[rel].alias, alias);
	}
}

static void push(struct walker *w, enum frame_kind k)
{
	if (w->depth >= SQL_ANALYZE_MAX_DEPTH) {
		w->a->flags |= SQL_AF_TOO_COMPLEX;
		w->stop = true;
		return;
	}
	w->depth++;
	memset(&w->fr[w->depth], 0, sizeof(w->fr[w->depth]));
	w->fr[w->depth].kind = k;
}

static bool query_start(const struct walker *w, const struct sql_token *t)
{
	return kw(w, t, "select") || kw(w, t, "values") || kw(w, t, "with") || kw(w, t, "table");
}

/*
 * A relation is expected at the current token (after FROM, JOIN, a ',' in a FROM list,
 * INTO, UPDATE, TABLE, ...): take it and its alias, or open the parenthesis it starts.
 * alias: whether an alias may follow (FROM lists, UPDATE/DELETE/MERGE targets).
 * Returns true when it consumed tokens: the walker is then on the last one (the caller
 * advances past it); false when the current token is not a relation (reported unsure).
 */
static bool take_relation(struct walker *w, unsigned flags, bool alias)
{
	const struct sql_token *t;

	while ((kw(w, cur(w), "only") || kw(w, cur(w), "lateral")) && !w->stop)
		adv(w);
	t = cur(w);
	if (punct(w, t, '(')) {
		unsigned k = 1;

		/* ((SELECT ...)) is a subquery, ((a JOIN b) JOIN c) a join: look past the
		 * parentheses, as far as the window reaches. */
		while (punct(w, peek(w, k), '(') && k < RING - 1)
			k++;
		if (k == RING - 1)
			w->a->flags |= SQL_AF_RELATIONS_UNSURE;
		if (query_start(w, peek(w, k))) {
			push(w, FR_FROMSUB); /* (subquery) [AS] alias */
			return true;
		}
		push(w, FR_FROM); /* (a JOIN b ...) */
		if (w->stop)
			return true;
		w->fr[w->depth].from = true;
		w->fr[w->depth].rel_flags = flags;
		adv(w);
		if (!take_relation(w, flags, true))
			return false;
		return true;
	}
	if (kw(w, t, "rows") && kw(w, peek(w, 1), "from")) { /* ROWS FROM (f(), g()) */
		adv(w);
		return true;
	}
	if (!identish(t) || (t->kind == SQL_TOK_IDENT && kw_is(w, t, KW_RESERVED))) {
		w->a->flags |= SQL_AF_RELATIONS_UNSURE;
		return false;
	}
	size_t off = t->off;
	struct qname q;

	read_qname(w, &q);
	if (punct(w, peek(w, 1), '(') && (flags & (SQL_RELF_WRITE | SQL_RELF_DDL | REL_NO_CALL)) == 0) {
		/* FROM f(...): a function in the FROM list. */
		add_function(w, &q);
		adv(w);
		push(w, FR_CALL);
		return true;
	}
	int rel = add_relation(w, &q, flags & ~REL_NO_CALL, off);

	if (op_is(w, peek(w, 1), "*")) /* inheritance: t * */
		adv(w);
	if (alias)
		take_alias(w, rel);
	/* A column list after a target (INSERT INTO t (a, b), CREATE TABLE t (...), an
	 * alias's column names): not a call, and its names are not references. */
	if (punct(w, peek(w, 1), '(')) {
		adv(w);
		push(w, FR_LIST);
	}
	return true;
}

/* The relations of TRUNCATE, LOCK, VACUUM, ANALYZE, DROP TABLE ...: a comma list. */
static void take_relation_list(struct walker *w, unsigned flags)
{
	while (!at_end(cur(w)) && !w->stop) {
		unsigned depth = w->depth;

		if (!take_relation(w, flags, false))
			return;
		if (w->depth > depth) { /* VACUUM t (a, b): skip the column list */
			while (!at_end(cur(w)) && !punct(w, cur(w), ')') && !w->stop)
				adv(w);
			w->depth = depth;
		}
		adv(w);
		if (op_is(w, cur(w), "*"))
			adv(w);
		if (!punct(w, cur(w), ','))
			return;
		adv(w);
	}
}

static void add_cte(struct walker *w, bool recursive)
{
	struct cte *c;
	char name[SQL_NAME_MAX];

	if (!identish(cur(w)) || !sql_ident_decode(&w->lx, cur(w), '\\', name)) {
		w->a->flags |= SQL_AF_RELATIONS_UNSURE;
		return;
	}
	if (w->nctes == MAX_CTES) {
		w->a->flags |= SQL_AF_RELATIONS_UNSURE;
		return;
	}
	c = &w->ctes[w->nctes++];
	copy_name(c->name, name);
	c->depth = w->depth;
	c->live = true;
	/* Not yet visible: a non-recursive WITH query's own body names the real table. Made
	 * visible when its body closes (see the ')' handling), or now if RECURSIVE. */
	c->from_off = recursive ? cur(w)->off : (size_t)-1;
}

struct with_state {
	unsigned depth;   /* paren depth of the WITH */
	bool recursive;
	bool expect_name; /* the next identifier at depth names a CTE */
	bool after_body;  /* a body just closed: ',' continues the list, anything else ends it */
	int pending;      /* index of the CTE whose body is open, -1 none */
	unsigned body_depth;
};

#define MAX_WITH 16

static bool is_cast(const struct walker *w, const struct sql_token *t)
{
	return t->kind == SQL_TOK_PUNCT && t->len == 2 && memcmp(w->lx.sql + t->off, "::", 2) == 0;
}

/* Is the WITH at the current token a WITH list: WITH [RECURSIVE] name [(cols)] AS ? */
static bool with_list_starts(struct walker *w)
{
	unsigned k = kw(w, peek(w, 1), "recursive") ? 2 : 1;
	const struct sql_token *n = peek(w, k), *n2 = peek(w, k + 1);

	return identish(n) && !kw(w, n, "ordinality") && (kw(w, n2, "as") || punct(w, n2, '('));
}

static void walk(struct walker *w, bool columns)
{
	struct sql_analysis *a = w->a;
	struct with_state ws[MAX_WITH];
	unsigned nws = 0;
	/* USING names a relation after DELETE and MERGE (not in JOIN ... USING (cols)). */
	bool dml_using = false;

	while (!w->stop) {
		const struct sql_token *t = cur(w);
		struct frame *f = &w->fr[w->depth];
		bool start = w->at_start;

		if (at_end(t))
			break;
		/* A WITH list whose last body closed: a ',' continues it, anything else is the
		 * statement it belongs to. */
		if (nws > 0 && ws[nws - 1].after_body && ws[nws - 1].depth == w->depth) {
			ws[nws - 1].after_body = false;
			if (punct(w, t, ',')) {
				ws[nws - 1].expect_name = true;
				adv(w);
				continue;
			}
			start = true;
		}
		if (t->kind == SQL_TOK_PUNCT && t->len == 1) {
			char ch = w->lx.sql[t->off];

			if (ch == '(') {
				push(w, FR_EXPR);
				adv(w);
				w->at_start = true; /* (SELECT ...), (UPDATE ...) in a CTE */
				continue;
			}
			if (ch == ')') {
				enum frame_kind k = f->kind;

				for (unsigned i = 0; i < nws; i++)
					if (ws[i].pending >= 0 && ws[i].body_depth == w->depth) {
						/* The CTE body closed: its name is visible from here. */
						w->ctes[ws[i].pending].from_off = t->off;
						ws[i].pending = -1;
						ws[i].after_body = true;
					}
				/* CTEs of a WITH at this level go out of scope with it. */
				for (unsigned i = 0; i < w->nctes; i++)
					if (w->ctes[i].depth >= w->depth && w->depth > 0)
						w->ctes[i].live = false;
				while (nws > 0 && ws[nws - 1].depth >= w->depth && w->depth > 0)
					nws--;
				if (w->depth > 0)
					w->depth--;
				if (k == FR_FROMSUB)
					take_alias(w, -1);
				adv(w);
				continue;
			}
			if (ch == ',' && f->from) {
				adv(w);
				if (take_relation(w, f->rel_flags, true))
					adv(w);
				continue;
			}
			adv(w);
			continue;
		}
		if (t->kind == SQL_TOK_OP && t->len == 1 && w->lx.sql[t->off] == '*') {
			if (punct(w, &w->prev, ',') || kw(w, &w->prev, "select") ||
			    kw(w, &w->prev, "distinct") || kw(w, &w->prev, "all") ||
			    kw(w, &w->prev, "returning"))
				a->flags |= SQL_AF_COLUMNS_UNSURE;
			adv(w);
			continue;
		}
		if (!identish(t)) {
			adv(w);
			continue;
		}

		/* A CTE name of an open WITH list. */
		if (nws > 0 && ws[nws - 1].expect_name && ws[nws - 1].depth == w->depth) {
			struct with_state *s = &ws[nws - 1];

			add_cte(w, s->recursive);
			s->expect_name = false;
			s->pending = (int)w->nctes - 1;
			s->body_depth = w->depth + 1;
			if (punct(w, peek(w, 1), '(')) { /* (column names) */
				adv(w);
				push(w, FR_LIST);
				while (!at_end(cur(w)) && !punct(w, cur(w), ')') && !w->stop)
					adv(w);
				w->depth--;
			}
			adv(w);
			/* AS [NOT] MATERIALIZED ( body ) */
			while (kw(w, cur(w), "as") || kw(w, cur(w), "not") ||
			       kw(w, cur(w), "materialized"))
				adv(w);
			if (!punct(w, cur(w), '(')) {
				s->pending = -1;
				a->flags |= SQL_AF_RELATIONS_UNSURE;
			}
			continue;
		}

		/* What the word is, once: one lookup answers every keyword question below. */
		unsigned tf = kw_flags(w, t);

		if (t->kind == SQL_TOK_IDENT) {
			if (f->from && (tf & KW_FROM_END) &&
			    !(kw(w, t, "for") && w->depth > 0 && f->kind == FR_FROM))
				f->from = false;
			if (kw(w, t, "on") && kw(w, peek(w, 1), "conflict"))
				f->from = false;
		}
		if (tf & KW_TRIGGER) {
			if (kw(w, t, "with") && with_list_starts(w) && nws < MAX_WITH) {
				struct with_state *s = &ws[nws++];

				memset(s, 0, sizeof(*s));
				s->recursive = kw(w, peek(w, 1), "recursive");
				s->depth = w->depth;
				s->expect_name = true;
				s->pending = -1;
				if (s->recursive)
					adv(w);
				adv(w);
				continue;
			}
			if (kw(w, t, "from")) {
				bool distinct_from = kw(w, &w->prev, "distinct") &&
						     (kw(w, &w->prev2, "is") || kw(w, &w->prev2, "not"));
				bool after_delete = kw(w, &w->prev, "delete");

				if (f->kind == FR_CALL || distinct_from) {
					adv(w);
					continue;
				}
				adv(w);
				f->from = !after_delete; /* DELETE FROM t [alias] USING ... */
				f->rel_flags = 0;
				if (take_relation(w, after_delete ? SQL_RELF_WRITE : 0, true))
					adv(w);
				continue;
			}
			if (kw(w, t, "join")) {
				adv(w);
				f->from = true;
				if (take_relation(w, f->rel_flags, true))
					adv(w);
				continue;
			}
			if (kw(w, t, "using") && dml_using && !punct(w, peek(w, 1), '(')) {
				adv(w);
				f->from = true;
				f->rel_flags = 0;
				if (take_relation(w, 0, true))
					adv(w);
				continue;
			}
			if (kw(w, t, "into") &&
			    (kw(w, &w->prev, "insert") || kw(w, &w->prev, "merge"))) {
				dml_using = dml_using || kw(w, &w->prev, "merge");
				adv(w);
				if (take_relation(w, SQL_RELF_WRITE, true))
					adv(w);
				continue;
			}
			if (kw(w, t, "into") && f->kind == FR_EXPR) { /* SELECT ... INTO [TEMP] t */
				adv(w);
				while (kw(w, cur(w), "temporary") || kw(w, cur(w), "temp") ||
				       kw(w, cur(w), "unlogged") || kw(w, cur(w), "table") ||
				       kw(w, cur(w), "local") || kw(w, cur(w), "global") ||
				       kw(w, cur(w), "strict"))
					adv(w);
				if (take_relation(w, SQL_RELF_DDL, false))
					adv(w);
				continue;
			}
			if (kw(w, t, "update")) {
				const struct sql_token *n = peek(w, 1);
				bool stmt = start || punct(w, &w->prev, '(') || punct(w, &w->prev, ')') ||
					    kw(w, &w->prev, "as") || kw(w, &w->prev, "instead") ||
					    kw(w, &w->prev, "also");
				bool target = kw(w, n, "only") || n->kind == SQL_TOK_QIDENT ||
					      (n->kind == SQL_TOK_IDENT && !kw_is(w, n, KW_RESERVED) &&
					       !kw(w, n, "set"));

				adv(w);
				if (stmt && target && take_relation(w, SQL_RELF_WRITE, true))
					adv(w);
				continue;
			}
			if (kw(w, t, "delete") || kw(w, t, "merge"))
				dml_using = true;
			if (kw(w, t, "table") &&
			    (start || punct(w, &w->prev, '(') || kw(w, &w->prev, "union") ||
			     kw(w, &w->prev, "intersect") || kw(w, &w->prev, "except") ||
			     kw(w, &w->prev, "all") || kw(w, &w->prev, "distinct") ||
			     kw(w, &w->prev, "as"))) {
				adv(w);
				if (take_relation(w, 0, false))
					adv(w);
				continue;
			}
			if (kw(w, t, "references")) {
				adv(w);
				if (take_relation(w, SQL_RELF_DDL, false))
					adv(w);
				continue;
			}
			/* A routine's or a role's SET clause, ALTER SYSTEM SET. */
			if (kw(w, t, "set") &&
			    (kw(w, peek(w, 1), "role") || kw(w, peek(w, 1), "session_authorization") ||
			     (kw(w, peek(w, 1), "session") && kw(w, peek(w, 2), "authorization"))))
				a->flags |= SQL_AF_ROLE_SWITCH;
			if (kw(w, t, "set") && peek(w, 1)->kind == SQL_TOK_QIDENT) {
				char g[SQL_NAME_MAX];

				if (!sql_ident_decode(&w->lx, peek(w, 1), '\\', g) ||
				    strcasecmp(g, "role") == 0 ||
				    strcasecmp(g, "session_authorization") == 0)
					a->flags |= SQL_AF_ROLE_SWITCH;
			}
		}

		/* A name: a call, a column, or syntax. */
		bool syntax = (tf & (KW_RESERVED | KW_PAREN_SYNTAX)) && !punct(w, peek(w, 1), '.') &&
			      ((tf & KW_RESERVED) || punct(w, peek(w, 1), '('));

		if (syntax) {
			bool call_syntax = kw(w, t, "extract") || kw(w, t, "substring") ||
					   kw(w, t, "trim") || kw(w, t, "overlay") ||
					   kw(w, t, "position");

			adv(w);
			if (call_syntax && punct(w, cur(w), '(')) {
				push(w, FR_CALL);
				adv(w);
			}
			continue;
		}
		bool after_as = kw(w, &w->prev, "as");
		bool after_cast = is_cast(w, &w->prev);
		bool fn_pos = !after_as && !after_cast && !kw(w, &w->prev, "returns") &&
			      !kw(w, &w->prev, "setof");
		bool noise = (tf & KW_NOISE) != 0;
		struct qname q;

		read_qname(w, &q);
		if (punct(w, peek(w, 1), '(')) {
			adv(w);
			if (fn_pos || !q.ok) {
				add_function(w, &q);
				if (q.ok && q.n <= 2 && strcmp(q.part[q.n - 1], "set_config") == 0)
					set_config_args(w);
				push(w, FR_CALL);
			} else {
				push(w, FR_LIST); /* a type's modifiers, an alias's column list */
			}
			adv(w);
			continue;
		}
		if (columns && f->kind != FR_LIST && !after_as && !after_cast && !(q.n == 1 && noise))
			add_column(w, &q);
		else if (q.star)
			a->flags |= SQL_AF_COLUMNS_UNSURE;
		adv(w);
	}
}

/* Attribute columns to relations: by alias or name, or to the only relation. */
static void resolve_columns(struct sql_analysis *a)
{
	for (unsigned i = 0; i < a->ncolumns; i++) {
		struct sql_column *c = &a->columns[i];

		c->relation = -1;
		if (!c->qualifier[0]) {
			if (a->nrelations == 1)
				c->relation = 0;
			continue;
		}
		for (unsigned r = 0; r < a->nrelations; r++) {
			const struct sql_relation *rel = &a->relations[r];

			if (rel->alias[0] ? strcmp(rel->alias, c->qualifier) == 0
					  : (strcmp(rel->name, c->qualifier) == 0 &&
					     (!c->schema[0] || strcmp(rel->schema, c->schema) == 0))) {
				c->relation = (int)r;
				break;
			}
		}
	}
}

/* ---- statement level ------------------------------------------------------------------ */

static void walker_init(struct walker *w, const char *sql, size_t len, unsigned opts,
			size_t pos, struct sql_analysis *a)
{
	/* Everything but the frame array (3 KiB; each level is zeroed when entered). */
	memset(w, 0, offsetof(struct walker, fr));
	w->nctes = 0;
	w->at_start = false;
	w->stop = false;
	sql_lex_init(&w->lx, sql, len, opts);
	w->lx.pos = pos;
	w->a = a;
	w->depth = 0;
	memset(&w->fr[0], 0, sizeof(w->fr[0]));
	w->nctes = 0;
	w->prev.kind = SQL_TOK_EOF;
	w->prev2.kind = SQL_TOK_EOF;
}

/* Skip EXPLAIN's options; the walker ends on the explained statement's first token. */
static void skip_explain(struct walker *w)
{
	adv(w);
	if (punct(w, cur(w), '(') && !query_start(w, peek(w, 1)) && !punct(w, peek(w, 1), '(')) {
		unsigned d = 0;

		while (!at_end(cur(w)) && !w->stop) {
			if (punct(w, cur(w), '('))
				d++;
			else if (punct(w, cur(w), ')') && --d == 0) {
				adv(w);
				break;
			}
			adv(w);
		}
	}
	while (kw(w, cur(w), "analyze") || kw(w, cur(w), "analyse") || kw(w, cur(w), "verbose"))
		adv(w);
}





static void analyze_ddl(struct walker *w, bool drop)
{
	static const char *const modifiers[] = {
		"constraint", "global", "local", "or", "procedural", "recursive", "replace",
		"temp", "temporary", "trusted", "unique", "unlogged",
	};
	struct sql_analysis *a = w->a;

	adv(w);
	while (kw_in(w, cur(w), modifiers))
		adv(w);
	if (kw_is(w, cur(w), KW_DDL_FUNCTION))
		a->flags |= SQL_AF_FUNCTIONS_UNSURE;
	if (kw_is(w, cur(w), KW_DDL_RELATION) || !kw_is(w, cur(w), KW_DDL_TABLE)) {
		if (!kw_is(w, cur(w), KW_DDL_PLAIN) ||
		    kw(w, cur(w), "foreign") || kw(w, cur(w), "schema"))
			a->flags |= SQL_AF_RELATIONS_UNSURE;
		if (kw(w, cur(w), "foreign") && kw(w, peek(w, 1), "table")) {
			a->flags &= ~SQL_AF_RELATIONS_UNSURE;
			adv(w);
		} else {
			walk(w, false);
			return;
		}
	}
	bool index = kw(w, cur(w), "index");

	if (kw(w, cur(w), "materialized"))
		adv(w);
	adv(w); /* TABLE, VIEW, SEQUENCE, INDEX */
	if (index) {
		/* CREATE INDEX [CONCURRENTLY] [[IF NOT EXISTS] name] ON [ONLY] t ...;
		 * DROP/ALTER INDEX names an index (a relation). */
		if (!drop && kw(w, cur(w), "concurrently"))
			adv(w);
		if (drop && kw(w, cur(w), "concurrently"))
			adv(w);
	}
	if (kw(w, cur(w), "if")) {
		adv(w);
		if (kw(w, cur(w), "not"))
			adv(w);
		adv(w); /* EXISTS */
	}
	if (index && !drop && kw(w, &w->prev, "index") == false) {
		/* fallthrough below handles names */
	}
	if (index) {
		/* An index name is a relation of its own; ON t names the table. */
		if (!kw(w, cur(w), "on") && identish(cur(w))) {
			if (take_relation(w, SQL_RELF_DDL, false))
				adv(w);
		}
		if (kw(w, cur(w), "on")) {
			adv(w);
			if (take_relation(w, SQL_RELF_DDL, false))
				adv(w);
		}
		walk(w, false);
		return;
	}
	if (drop) {
		take_relation_list(w, SQL_RELF_DDL);
		walk(w, false);
		return;
	}
	if (take_relation(w, SQL_RELF_DDL, false))
		adv(w);
	walk(w, false);
}

static void analyze_prepared(struct walker *w)
{
	struct sql_analysis *a = w->a;
	bool dealloc = kw(w, cur(w), "deallocate");
	enum sql_prepared_op op = kw(w, cur(w), "execute") ? SQL_PREP_EXECUTE
				  : dealloc			? SQL_PREP_DEALLOCATE
								: SQL_PREP_PREPARE;

	adv(w);
	if (dealloc && kw(w, cur(w), "prepare"))
		adv(w);
	if (dealloc && kw(w, cur(w), "all")) {
		a->prep = SQL_PREP_DEALLOCATE_ALL;
		return;
	}
	if (!identish(cur(w)) || !sql_ident_decode(&w->lx, cur(w), '\\', a->prep_name)) {
		a->prep = SQL_PREP_NONE;
		return;
	}
	a->prep = op;
	adv(w);
	if (op == SQL_PREP_EXECUTE) {
		walk(w, true); /* the arguments: expressions, calls */
		return;
	}
	if (op == SQL_PREP_PREPARE) {
		unsigned d = 0;

		/* [(types)] AS */
		while (!at_end(cur(w)) && !w->stop) {
			if (punct(w, cur(w), '('))
				d++;
			else if (punct(w, cur(w), ')'))
				d--;
			else if (d == 0 && kw(w, cur(w), "as"))
				break;
			adv(w);
		}
		if (!kw(w, cur(w), "as")) {
			a->prep = SQL_PREP_NONE;
			return;
		}
		adv(w);
		a->prep_body_off = cur(w)->off;
	}
}

static void analyze_statement(struct walker *w)
{
	struct sql_analysis *a = w->a;
	static const char *const admin_lists[] = {"analyse", "analyze", "lock", "truncate",
						  "vacuum"};

	for (unsigned level = 0; level < 8 && !w->stop; level++) {
		const struct sql_token *t;

		while (punct(w, cur(w), '(') && !w->stop) {
			push(w, FR_EXPR);
			adv(w);
		}
		t = cur(w);
		w->at_start = true;
		if (kw(w, t, "explain")) {
			skip_explain(w);
			continue;
		}
		if (kw(w, t, "prepare") && !kw(w, peek(w, 1), "transaction")) {
			analyze_prepared(w);
			if (a->prep != SQL_PREP_PREPARE)
				return;
			continue;
		}
		if (kw(w, t, "prepare") && kw(w, peek(w, 2), "as")) { /* PREPARE transaction AS */
			analyze_prepared(w);
			continue;
		}
		if (kw(w, t, "execute") || kw(w, t, "deallocate")) {
			analyze_prepared(w);
			return;
		}
		if (kw(w, t, "declare")) {
			while (!at_end(cur(w)) && !kw(w, cur(w), "for") && !w->stop)
				adv(w);
			adv(w);
			continue;
		}
		if (kw(w, t, "set") || kw(w, t, "reset") || kw(w, t, "show") || kw(w, t, "discard")) {
			analyze_set(w);
			return;
		}
		if (kw(w, t, "do")) {
			/* A DO body is code in another language: it may call anything, touch any
			 * table, and EXECUTE 'SET ROLE ...'. Policy cannot judge it. */
			a->flags |= SQL_AF_OPAQUE_BODY | SQL_AF_ROLE_SWITCH | SQL_AF_FUNCTIONS_UNSURE |
				    SQL_AF_RELATIONS_UNSURE | SQL_AF_SEARCH_PATH |
				    SQL_AF_ENCODING_CHANGE;
			return;
		}
		if (kw(w, t, "fetch") || kw(w, t, "move") || kw(w, t, "close") ||
		    kw(w, t, "listen") || kw(w, t, "unlisten") || kw(w, t, "begin") ||
		    kw(w, t, "start") || kw(w, t, "commit") || kw(w, t, "end") ||
		    kw(w, t, "rollback") || kw(w, t, "abort") || kw(w, t, "savepoint") ||
		    kw(w, t, "release") || kw(w, t, "checkpoint") || kw(w, t, "load") ||
		    kw(w, t, "notify"))
			return;
		if (kw(w, t, "copy")) {
			adv(w);
			if (punct(w, cur(w), '(')) {
				walk(w, true);
				return;
			}
			/* COPY t [(cols)] FROM|TO: FROM writes t. */
			struct walker look = *w;
			bool from = false;

			while (!at_end(cur(&look)) && !look.stop) {
				if (kw(&look, cur(&look), "from")) {
					from = true;
					break;
				}
				if (kw(&look, cur(&look), "to"))
					break;
				adv(&look);
			}
			if (take_relation(w, from ? SQL_RELF_WRITE : REL_NO_CALL, false) && w->depth > 0 &&
			    w->fr[w->depth].kind == FR_LIST) {
				unsigned depth = w->depth - 1;

				adv(w); /* '(' */
				while (!at_end(cur(w)) && !punct(w, cur(w), ')') && !w->stop) {
					if (identish(cur(w))) {
						struct qname q;

						read_qname(w, &q);
						add_column(w, &q);
					}
					adv(w);
				}
				w->depth = depth;
			}
			/* Past FROM/TO and its target (STDIN, STDOUT, PROGRAM 'cmd', 'file'): the
			 * options and a COPY FROM's WHERE clause are walked for calls. */
			while (!at_end(cur(w)) && !kw(w, cur(w), "from") && !kw(w, cur(w), "to") &&
			       !w->stop)
				adv(w);
			adv(w);
			if (kw(w, cur(w), "program"))
				adv(w);
			adv(w);
			walk(w, false);
			return;
		}
		if (kw_in(w, t, admin_lists)) {
			bool truncate = kw(w, t, "truncate"), vac = !truncate && !kw(w, t, "lock");

			adv(w);
			if (vac && punct(w, cur(w), '(')) { /* VACUUM (options) */
				while (!at_end(cur(w)) && !punct(w, cur(w), ')'))
					adv(w);
				adv(w);
			}
			while (kw(w, cur(w), "table") || kw(w, cur(w), "verbose") ||
			       kw(w, cur(w), "full") || kw(w, cur(w), "freeze") ||
			       kw(w, cur(w), "analyze") || kw(w, cur(w), "analyse"))
				adv(w);
			if (at_end(cur(w))) { /* every table */
				a->flags |= SQL_AF_RELATIONS_UNSURE;
				return;
			}
			take_relation_list(w, truncate ? SQL_RELF_WRITE : SQL_RELF_DDL);
			return;
		}
		if (kw(w, t, "refresh") || kw(w, t, "cluster")) {
			adv(w);
			while (kw(w, cur(w), "materialized") || kw(w, cur(w), "view") ||
			       kw(w, cur(w), "concurrently") || kw(w, cur(w), "verbose"))
				adv(w);
			if (at_end(cur(w)) || punct(w, cur(w), '(')) {
				a->flags |= SQL_AF_RELATIONS_UNSURE;
				return;
			}
			if (take_relation(w, SQL_RELF_DDL, false))
				adv(w);
			return;
		}
		if (kw(w, t, "create") || kw(w, t, "alter") || kw(w, t, "drop")) {
			if (kw(w, t, "alter") && kw(w, peek(w, 1), "system")) {
				adv(w);
				adv(w);
				/* ALTER SYSTEM SET role ... is for the next start; still a role switch */
				walk(w, false);
				return;
			}
			analyze_ddl(w, kw(w, t, "drop"));
			return;
		}
		if (kw(w, t, "grant") || kw(w, t, "revoke") || kw(w, t, "comment") ||
		    kw(w, t, "security") || kw(w, t, "reassign") || kw(w, t, "import") ||
		    kw(w, t, "reindex")) {
			/* No calls in these; the objects they name are not followed. */
			a->flags |= SQL_AF_RELATIONS_UNSURE;
			return;
		}
		walk(w, true);
		return;
	}
}

static bool sorted(const char *const *list, size_t n)
{
	for (size_t i = 1; i < n; i++)
		if (strcmp(list[i - 1], list[i]) >= 0)
			return false;
	return true;
}

#define SORTED(list) sorted(list, sizeof(list) / sizeof((list)[0]))

bool sql_analyze_tables_sorted(void)
{
	for (size_t i = 1; i < sizeof(keywords) / sizeof(keywords[0]); i++)
		if (strcmp(keywords[i - 1].word, keywords[i].word) >= 0)
			return false;
	return SORTED(sql_text_functions);
}

void sql_analyze(const char *sql, size_t len, unsigned opts, struct sql_analysis *a)
{
	struct walker w;

	memset(a, 0, offsetof(struct sql_analysis, relations));
	a->primary = sql_classify(sql, len, opts, &a->classes);
	if (a->primary == SQL_CLASS_UNKNOWN) {
		a->classes = 0;
		/* Nothing to walk reliably; the class already denies it. Still report the
		 * budget, which has its own error code. */
	}
	if (!sql)
		len = 0;
	walker_init(&w, sql, len, opts, 0, a);
	/* Leading separators (a piece from sql_split_next may start with them). */
	while (cur(&w)->kind == SQL_TOK_SEMI)
		adv(&w);
	w.ntok = 0;
	analyze_statement(&w);
	if (a->primary == SQL_CLASS_ROLE)
		a->flags |= SQL_AF_RELATIONS_UNSURE;
	if (a->flags & SQL_AF_ROLE_SWITCH)
		a->classes |= SQL_CLASS_BIT(SQL_CLASS_SESSION) & (a->primary == SQL_CLASS_UNKNOWN ? 0 : ~0u);
	if (a->flags & SQL_AF_TOO_COMPLEX) {
		/* Past the budget nothing else the walk said is complete. */
		a->flags |= SQL_AF_RELATIONS_UNSURE | SQL_AF_FUNCTIONS_UNSURE | SQL_AF_COLUMNS_UNSURE;
	}
	resolve_columns(a);
}
