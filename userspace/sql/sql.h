/*
 * sql: the PostgreSQL-dialect lexer the relay and the policy engine rest on, and what is
 * built on it: statement splitting, normalisation for display, statement classification.
 *
 * It runs on the data path for every Query and Parse message, so:
 *   - single pass over the bytes, no allocation, no globals; the caller owns every buffer;
 *   - total: any byte string (NULs inside the length, invalid UTF-8, unterminated
 *     anything) gives a defined answer in time linear in its length;
 *   - the token boundaries are PostgreSQL's (src/backend/parser/scan.l, PostgreSQL 16),
 *     because a classifier that sees a statement boundary or a string end where the
 *     server does not can be talked past. Where the lexer and the server could still
 *     disagree (encoding, standard_conforming_strings) the caller must say so: see
 *     SQL_LEX_BACKSLASH_QUOTES and the note on encodings below.
 *
 * Encodings: the lexer reads bytes as PostgreSQL does after conversion to the server
 * encoding, so it is exact for every ASCII-safe client_encoding (UTF8, LATIN*, EUC_*, WIN*,
 * ...). In the client-only encodings SJIS, BIG5, GBK, UHC and GB18030 a multibyte
 * character may end in 0x5C ('\'), which the server never sees as a backslash; with
 * backslash escapes in play (E'' strings, or standard_conforming_strings off) the lexer
 * would then end a string where the server does not. The relay must track client_encoding
 * (ParameterStatus) and refuse inspection (deny) for those encodings.
 *
 * Numeric literals follow PostgreSQL 16: decimal integers with '_' between digits
 * (1_000), 0x / 0o / 0b integers with '_' before any digit (0x_FF), decimals (.5, 1.,
 * 1.5), exponents (1e10, 1.5E-3; '_' allowed in the exponent digits), "1..10" read as 1
 * then "..". A literal glued to identifier characters (123abc, 0x1g, 1_, $1a) is
 * "trailing junk" in PostgreSQL: one token flagged SQL_TOKF_INVALID here.
 */
#ifndef PGWARDEN_SQL_H
#define PGWARDEN_SQL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- lexer ------------------------------------------------------------------------- */

enum sql_tok_kind {
	SQL_TOK_EOF = 0,   /* end of input: returned again on every later call */
	SQL_TOK_IDENT,     /* keyword or unquoted identifier (case-insensitive, ASCII only) */
	SQL_TOK_QIDENT,    /* "quoted" or U&"quoted" identifier */
	SQL_TOK_STRING,    /* '', E'', N'', U&'', $tag$...$tag$, incl. '..'\n'..' continuations */
	SQL_TOK_BITSTRING, /* B'0101', X'1F' */
	SQL_TOK_NUMBER,    /* integer or numeric constant */
	SQL_TOK_PARAM,     /* $1 */
	SQL_TOK_OP,        /* operator: + - * / < > = ~ ! @ # % ^ & | ` ? runs, '=>' etc. */
	SQL_TOK_PUNCT,     /* , ( ) [ ] . : and the two-character :: := .. */
	SQL_TOK_SEMI,      /* ; statement separator */
	SQL_TOK_OTHER,     /* any other byte: stray $, \, {, }, control bytes, NUL */
	SQL_TOK_COUNT,
};

/* Token flags. */
#define SQL_TOKF_SPACE_BEFORE 0x01u /* whitespace or a comment separates it from the last */
#define SQL_TOKF_UNTERMINATED 0x02u /* string/identifier ran to the end of input; on the
				     * EOF token: the input ended inside a comment */
#define SQL_TOKF_INVALID 0x04u      /* PostgreSQL's lexer rejects it (trailing junk, 0x
				     * without digits, "" zero-length identifier, U&'' with
				     * standard_conforming_strings off, NUL byte, $n > INT32) */
#define SQL_TOKF_UNICODE 0x08u      /* U&'' or U&"": a UESCAPE 'c' clause may follow */
#define SQL_TOKF_DOLLAR 0x10u       /* dollar-quoted string */

/* Lexer options. */
#define SQL_LEX_BACKSLASH_QUOTES 0x01u /* standard_conforming_strings = off: '' strings take
					* backslash escapes like E'' (the server reports
					* the setting in ParameterStatus; track it) */

struct sql_token {
	size_t off; /* the token is sql[off, off + len) */
	size_t len;
	enum sql_tok_kind kind;
	unsigned flags;
};

struct sql_lexer {
	const char *sql;
	size_t len;
	size_t pos;
	unsigned opts;
};

void sql_lex_init(struct sql_lexer *lx, const char *sql, size_t len, unsigned opts);
/* The next token, skipping whitespace and comments. Never fails; O(token length). */
void sql_lex_next(struct sql_lexer *lx, struct sql_token *t);
/*
 * True if t is an unquoted identifier equal to kw (lower case ASCII) ignoring case.
 * Inline: the classifier asks it of nearly every identifier it meets, nearly every answer
 * is no at the length or the first byte, and kw's length is then known when compiling.
 */
static inline bool sql_tok_is(const struct sql_lexer *lx, const struct sql_token *t,
			      const char *kw)
{
	size_t n = strlen(kw);

	/* '|0x20' folds A-Z and maps no other byte onto a lower-case letter. */
	if (t->kind != SQL_TOK_IDENT || t->len != n || n == 0 ||
	    ((unsigned char)lx->sql[t->off] | 0x20) != (unsigned char)kw[0])
		return false;
	for (size_t i = 1; i < n; i++) {
		unsigned char c = (unsigned char)lx->sql[t->off + i];

		if (c >= 'A' && c <= 'Z')
			c |= 0x20;
		if (c != (unsigned char)kw[i])
			return false;
	}
	return true;
}
const char *sql_tok_kind_to_str(enum sql_tok_kind k);

/* ---- splitting ------------------------------------------------------------------------ */

/*
 * The statements of a simple-protocol Query string: separated by ';' outside strings,
 * quoted identifiers, comments and dollar quotes; empty statements skipped.
 *
 * Pieces partition the input: the first starts at 0, each next one where the last ended,
 * each ends just after its run of ';' separators, and the last ends at the end of input.
 * Leading ';' and whitespace belong to the first piece; separators after the last
 * statement, to the last.
 *
 * SQL-standard routine bodies (CREATE FUNCTION ... BEGIN ATOMIC s1; s2; END) are split at
 * every ';' on purpose: PostgreSQL's grammar keeps them whole, psql guesses with a
 * heuristic that keywords used as labels (AS case, AS end) can fool, and a splitter that
 * merges too much lets a real statement hide inside a CREATE. Splitting too much only ever
 * shows the policy more statements (the body's, classified as if run), never fewer.
 */
#define SQL_STMTF_UNTERMINATED 0x01u /* a string/identifier/comment ran to the end */
#define SQL_STMTF_INVALID 0x02u      /* a token PostgreSQL's lexer rejects */

struct sql_stmt {
	size_t off, len;           /* the piece: input[off, off + len) */
	size_t text_off, text_len; /* first token to last token before the ';' */
	unsigned flags;
};

struct sql_splitter {
	struct sql_lexer lx;
	struct sql_token next; /* first token of the next statement (lookahead) */
	size_t piece_start;
};

void sql_split_init(struct sql_splitter *s, const char *sql, size_t len, unsigned opts);
/* Fill st with the next statement; false when there are no more. */
bool sql_split_next(struct sql_splitter *s, struct sql_stmt *st);
/*
 * Is the text certainly one statement whose piece is the whole input (what the splitter
 * would return as its only piece), known without lexing it? For a caller that needs only
 * the pieces (not text_off/text_len/flags) of the common one-statement Query. True when
 * the text begins, after whitespace, with an ASCII letter (so it has a token) and nothing
 * but ';' and whitespace follows its first ';': whether that ';' ends the statement or
 * sits inside a string or comment, no second statement can start after it. False says
 * nothing: split it.
 */
bool sql_split_single(const char *sql, size_t len);

/* ---- normalisation ------------------------------------------------------------------- */

/*
 * Write a display form of sql into out[cap]: comments dropped, every run of whitespace and
 * comments one space, keywords and identifiers as written, and every literal (strings of
 * every kind with any UESCAPE clause, numbers, bit strings) replaced by $k.
 *
 * Why $k and not '?': it is what pg_stat_statements shows, so a DBA can match the two, and
 * '?' is a real operator (jsonb ?). As pg_stat_statements does, k starts after the highest
 * $n already in the text, so a Parse message's own parameters keep their numbers; this
 * takes a second lexer pass only when the text contains a '$'. Numbering runs across the
 * statements of a multi-statement string. Deterministic: same input, same output.
 *
 * The output is always NUL-terminated (cap >= 1), valid UTF-8 and free of control
 * characters (invalid bytes and controls inside identifiers or stray bytes become '?'),
 * so it can go into JSON, logs and a terminal as is. When the output does not fit, it is
 * cut at a token boundary and ends with SQL_NORM_TRUNCATED (" ..." after a token).
 *
 * Returns 0, or -ENOSPC when truncated (out still holds a valid, marked prefix), or
 * -EINVAL when cap is 0. *out_len (optional) receives strlen(out).
 */
#define SQL_NORM_TRUNCATED "..."
int sql_normalize(const char *sql, size_t len, unsigned opts, char *out, size_t cap,
		  size_t *out_len);

/*
 * A cache key for verdicts: the text as the lexer sees it with the digits of every numeric
 * constant left out, so "... WHERE aid = 17" and "... WHERE aid = 42" have one shape.
 *
 * The promise a caller may rest on: two texts have equal shapes exactly when they lex to
 * the same tokens (kind, flags, bytes) with the same bytes between them (white space,
 * comments), except for the bytes of SQL_TOK_NUMBER tokens. Strings, bit strings,
 * identifiers, parameters and operators are kept byte for byte; only unflagged and flagged
 * numbers stay apart (the flags are kept). The encoding is length-prefixed per token, so
 * no two different token sequences can give the same bytes.
 *
 * Nothing in sql_classify() or sql_analyze() reads a numeric constant's bytes (only their
 * kind), so texts of one shape get the same classes and names; what else may depend on a
 * literal (offsets: PREPARE's body) the caller must exclude itself.
 *
 * Returns 0, -ENOSPC when the shape does not fit in out[cap] (out then holds nothing
 * useful). *out_len receives the shape's length. One lexer pass, no allocation.
 */
int sql_shape(const char *sql, size_t len, unsigned opts, uint8_t *out, size_t cap,
	      size_t *out_len);

/* ---- classification -------------------------------------------------------------------- */

/*
 * Statement classes: what policy allows or denies, one name each (sql_class_to_str). The
 * sql module owns them; the statements_total metric maps them onto its own labels
 * (metrics_std_stmt_type()).
 */
enum sql_class {
	SQL_CLASS_READ = 0,      /* SELECT, VALUES, TABLE, FETCH, MOVE, CLOSE */
	SQL_CLASS_WRITE,         /* INSERT, UPDATE, DELETE, MERGE, TRUNCATE; row locks */
	SQL_CLASS_DDL,           /* CREATE, ALTER, DROP, COMMENT, IMPORT; SELECT INTO */
	SQL_CLASS_ROLE,          /* GRANT, REVOKE, roles, user mappings, policies, owners */
	SQL_CLASS_ADMIN,         /* ALTER SYSTEM, VACUUM, ANALYZE, CLUSTER, REINDEX, ... */
	SQL_CLASS_COPY_IN,       /* COPY ... FROM STDIN */
	SQL_CLASS_COPY_OUT,      /* COPY ... TO STDOUT */
	SQL_CLASS_COPY_PROGRAM,  /* COPY FROM/TO PROGRAM or a server-side file */
	SQL_CLASS_FUNCTION_CALL, /* CALL, DO, the FunctionCall message */
	SQL_CLASS_TRANSACTION,   /* BEGIN, COMMIT, SAVEPOINT, SET TRANSACTION, ... */
	SQL_CLASS_SESSION,       /* SET, RESET, SHOW, DISCARD, SET ROLE, set_config() */
	SQL_CLASS_LISTEN_NOTIFY, /* LISTEN, NOTIFY, UNLISTEN, pg_notify() */
	SQL_CLASS_PREPARE,       /* PREPARE, EXECUTE, DEALLOCATE */
	SQL_CLASS_UNKNOWN,       /* empty, unterminated, lexically invalid, several
				  * statements, or not a statement we know: policy denies */
	SQL_CLASS_COUNT,
};

#define SQL_CLASS_BIT(c) (1u << (c))

/*
 * Classify one statement (a piece from sql_split_next, or a Parse message's text; a
 * trailing ';' is fine, a second statement makes it UNKNOWN).
 *
 * Returns the primary class (what statements_total counts). *classes (optional) receives
 * SQL_CLASS_BIT() of every class the statement exercises, the primary included: policy
 * must allow all of them. The rules, and why (docs/POLICY.md: "err on the stronger class"):
 *   - WITH, EXPLAIN, DECLARE ... FOR, PREPARE ... AS and leading parentheses are looked
 *     through. A data-modifying CTE makes the statement WRITE.
 *   - EXPLAIN q is classified as q, ANALYZE or not: plain EXPLAIN runs nothing, but it
 *     shows plans and row estimates of q's tables, and no policy should see a weaker class
 *     than the statement it names. PREPARE name AS q is PREPARE plus q's classes.
 *   - SELECT ... INTO t creates a table: DDL, with READ in *classes.
 *   - SELECT ... FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE stays READ (the metric) but adds
 *     WRITE to *classes: it takes row locks, and PostgreSQL itself demands UPDATE privilege.
 *   - SELECT f() is READ whatever f does (sql_analyze() reports f, and adds SESSION for
 *     set_config and LISTEN_NOTIFY for pg_notify); CALL and DO are FUNCTION_CALL.
 *   - TRUNCATE is WRITE (data, not schema). SHOW, DISCARD, SET, RESET are SESSION;
 *     SET ROLE and SET SESSION AUTHORIZATION are SESSION too, and sql_analyze() flags them
 *     as role switches, which policy allows separately. FETCH, MOVE and CLOSE are READ.
 *   - ROLE: GRANT, REVOKE, CREATE/ALTER/DROP ROLE/USER/GROUP (passwords included), USER
 *     MAPPING, POLICY, ALTER DEFAULT PRIVILEGES, REASSIGN/DROP OWNED, SECURITY LABEL.
 *   - ADMIN: VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, ALTER SYSTEM, LOAD, REFRESH
 *     MATERIALIZED VIEW, LOCK (PostgreSQL 17 grants these together as pg_maintain).
 *   - COPY ... FROM STDIN is COPY_IN with WRITE; COPY ... TO STDOUT is COPY_OUT with READ
 *     (or the query's classes for COPY (q) TO); FROM/TO PROGRAM or a server file is
 *     COPY_PROGRAM with the direction's classes (COPY_IN + WRITE or COPY_OUT + READ).
 *   - TRANSACTION: BEGIN, START, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE, PREPARE
 *     TRANSACTION, COMMIT/ROLLBACK PREPARED, SET TRANSACTION, SET CONSTRAINTS, SET
 *     SESSION CHARACTERISTICS.
 *   - PREPARE: PREPARE (plus the prepared query's classes), EXECUTE (whose real classes
 *     are the prepared text's: policy looks them up), DEALLOCATE.
 * A function's body (a string) is not looked into: its effects are the function's.
 */
enum sql_class sql_classify(const char *sql, size_t len, unsigned opts, uint32_t *classes);

/* "read", "write", "ddl", "role", ..., "unknown"; "?" out of range. */
const char *sql_class_to_str(enum sql_class c);
/* The class named s (n bytes), or SQL_CLASS_COUNT. */
enum sql_class sql_class_from_str(const char *s, size_t n);

/* ---- analysis: names, role switching, prepared statements ------------------------------ */

/*
 * sql_analyze(): everything policy needs from one statement, in one bounded pass.
 *
 * Names are decoded as the server reads them: unquoted identifiers folded to lower case
 * (ASCII only, as PostgreSQL does for multibyte encodings), quoted ones kept ("" undoubled,
 * U&"" escapes and UESCAPE decoded to UTF-8), and cut to 63 bytes on a character boundary
 * (NAMEDATALEN). An empty schema means the name was not qualified: the server resolves it
 * through search_path, which the text does not tell (policy decides what that means).
 *
 * What it cannot tell it says, with the *_UNSURE flags, so that policy can deny rather
 * than guess: a relation position it does not follow, a name it cannot decode, a function
 * that runs SQL text given as a string (query_to_xml, dblink, ...), more names than the
 * arrays hold, a DO body or a routine defined with a body in a string.
 *
 * Budget: at most SQL_ANALYZE_MAX_TOKENS tokens and SQL_ANALYZE_MAX_DEPTH nested
 * parentheses; past either the analysis stops with SQL_AF_TOO_COMPLEX (policy answers
 * 54001, as the server does when its parser's stack runs out). Nothing recurses on the
 * input's nesting, so no input can exhaust the stack; time is linear in the length.
 */
#define SQL_NAME_MAX 64 /* NAMEDATALEN: 63 bytes and the NUL */
#define SQL_ANALYZE_MAX_RELATIONS 32
#define SQL_ANALYZE_MAX_FUNCTIONS 32
#define SQL_ANALYZE_MAX_COLUMNS 64
#define SQL_ANALYZE_MAX_TOKENS 1000000
#define SQL_ANALYZE_MAX_DEPTH 256

/* Relation flags. */
#define SQL_RELF_WRITE 0x01u /* a write's target: INSERT/UPDATE/DELETE/MERGE/COPY FROM/TRUNCATE */
#define SQL_RELF_DDL 0x02u   /* named by DDL or maintenance (CREATE/ALTER/DROP/VACUUM/LOCK...) */

struct sql_relation {
	char catalog[SQL_NAME_MAX]; /* "" unless written db.schema.table */
	char schema[SQL_NAME_MAX];  /* "" when unqualified */
	char name[SQL_NAME_MAX];
	char alias[SQL_NAME_MAX];   /* "" when none */
	unsigned flags;
};

struct sql_function {
	char schema[SQL_NAME_MAX]; /* "" when unqualified */
	char name[SQL_NAME_MAX];
};

/* A column reference: c, t.c, s.t.c. relation is the index in relations[] the qualifier
 * (an alias or a table name) resolves to, or the only relation when the column is bare
 * and the statement names exactly one; -1 when the text does not tell. */
struct sql_column {
	char schema[SQL_NAME_MAX];    /* s in s.t.c */
	char qualifier[SQL_NAME_MAX]; /* t in t.c or s.t.c; "" for a bare column */
	char name[SQL_NAME_MAX];
	int relation;
};

/* Analysis flags. */
#define SQL_AF_RELATIONS_UNSURE 0x0001u /* some relation could not be told */
#define SQL_AF_FUNCTIONS_UNSURE 0x0002u /* some function call could not be told */
#define SQL_AF_COLUMNS_UNSURE 0x0004u   /* '*', or a reference not followed */
#define SQL_AF_ROLE_SWITCH 0x0008u      /* may change the current role (SET ROLE, SET
					 * SESSION AUTHORIZATION, RESET/DISCARD of them,
					 * set_config('role', ...), pg_settings updates, a DO) */
#define SQL_AF_OPAQUE_BODY 0x0010u      /* DO, or a routine with a string body: code
					 * policy cannot judge */
#define SQL_AF_TOO_COMPLEX 0x0020u      /* over the budget: deny with 54001 */
#define SQL_AF_SEARCH_PATH 0x0040u      /* changes search_path (SET, set_config, RESET,
					 * DISCARD ALL): unqualified names may move */
#define SQL_AF_BAD_ENCODING 0x0080u     /* sets client_encoding to one whose bytes can
					 * fake ASCII quotes (sql_encoding_is_unsafe) */
#define SQL_AF_ENCODING_CHANGE 0x0100u  /* sets client_encoding to a value not a literal */

enum sql_prepared_op {
	SQL_PREP_NONE = 0,
	SQL_PREP_PREPARE,        /* PREPARE name [(types)] AS body: body_off is the body */
	SQL_PREP_EXECUTE,        /* EXECUTE name [(args)] */
	SQL_PREP_DEALLOCATE,     /* DEALLOCATE [PREPARE] name */
	SQL_PREP_DEALLOCATE_ALL, /* DEALLOCATE [PREPARE] ALL */
};

struct sql_analysis {
	enum sql_class primary;
	uint32_t classes; /* SQL_CLASS_BIT()s, the primary included; 0 for UNKNOWN */
	unsigned flags;   /* SQL_AF_* */
	enum sql_prepared_op prep;
	char prep_name[SQL_NAME_MAX];
	size_t prep_body_off; /* PREPARE: offset of the body in the analysed text */
	unsigned nrelations, nfunctions, ncolumns;
	struct sql_relation relations[SQL_ANALYZE_MAX_RELATIONS];
	struct sql_function functions[SQL_ANALYZE_MAX_FUNCTIONS];
	struct sql_column columns[SQL_ANALYZE_MAX_COLUMNS];
};

/*
 * Analyse one statement (same input rules as sql_classify). Never fails: what it cannot
 * tell is in a->flags. a is caller-owned (about 30 KiB: keep it off small stacks).
 */
void sql_analyze(const char *sql, size_t len, unsigned opts, struct sql_analysis *a);

/* The walk's keyword tables are binary-searched: true when every one is sorted (tests). */
bool sql_analyze_tables_sorted(void);

/*
 * Decode one identifier token (IDENT or QIDENT, with a U&"" token's UESCAPE clause already
 * consumed by the caller and passed as esc, '\\' when none) into out[SQL_NAME_MAX].
 * false when the token is not an identifier or its escapes are invalid.
 */
bool sql_ident_decode(const struct sql_lexer *lx, const struct sql_token *t, char esc,
		      char out[SQL_NAME_MAX]);

/*
 * A string literal token's value, for the few places the analysis needs one (set_config's
 * setting name, SET client_encoding's value): '', E'' (with SQL_LEX_BACKSLASH_QUOTES for
 * plain ones), $$ $$, with continuations. false when it does not fit in out[cap] or uses
 * escapes this decoder does not follow (\u, octal, hex: the caller treats it as unsure).
 */
bool sql_string_decode(const struct sql_lexer *lx, const struct sql_token *t, char *out,
		       size_t cap);

/*
 * Client encodings in which a multibyte character can end in a byte that reads as ASCII
 * ('\\', '\'', ...): SJIS, SHIFT_JIS_2004, BIG5, GBK, GB18030, UHC, JOHAB and every alias
 * PostgreSQL accepts for them (matched as the server does: case and punctuation ignored).
 * The lexer cannot be exact in them, so sessions using them are refused.
 */
bool sql_encoding_is_unsafe(const char *name);

#endif
