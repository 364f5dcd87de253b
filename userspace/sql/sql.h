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

#include "metrics/metrics_std.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
/* True if t is an unquoted identifier equal to kw (lower case ASCII) ignoring case. */
bool sql_tok_is(const struct sql_lexer *lx, const struct sql_token *t, const char *kw);
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

/* ---- classification -------------------------------------------------------------------- */

/*
 * Statement classes: one-to-one with the statements_total metric's labels (the list lives
 * in metrics_std.h), plus UNKNOWN, which policy denies.
 */
enum sql_class {
	SQL_CLASS_READ = MSTMT_READ,
	SQL_CLASS_WRITE = MSTMT_WRITE,
	SQL_CLASS_DDL = MSTMT_DDL,
	SQL_CLASS_DCL = MSTMT_DCL,
	SQL_CLASS_ADMIN = MSTMT_ADMIN,
	SQL_CLASS_COPY = MSTMT_COPY,
	SQL_CLASS_FUNCTION = MSTMT_FUNCTION,
	SQL_CLASS_TRANSACTION = MSTMT_TRANSACTION,
	SQL_CLASS_OTHER = MSTMT_OTHER,
	SQL_CLASS_UNKNOWN = MSTMT_UNKNOWN, /* empty, unterminated, lexically invalid, several
					  * statements, or not a statement we know */
	SQL_CLASS_COUNT,
};

#define SQL_CLASS_BIT(c) (1u << (c))

/*
 * Classify one statement (a piece from sql_split_next, or a Parse message's text; a
 * trailing ';' is fine, a second statement makes it UNKNOWN).
 *
 * Returns the primary class (what statements_total counts). *classes (optional) receives
 * SQL_CLASS_BIT() of every class the statement exercises, the primary included: policy
 * must allow all of them. The rules, and why (docs: "err on the stronger class"):
 *   - WITH, EXPLAIN, DECLARE ... FOR, PREPARE ... AS and leading parentheses are looked
 *     through. A data-modifying CTE makes the statement WRITE.
 *   - EXPLAIN q is classified as q, ANALYZE or not: plain EXPLAIN runs nothing, but it
 *     shows plans and row estimates of q's tables, and no policy should see a weaker class
 *     than the statement it names. PREPARE name AS q is q for the same reason.
 *   - SELECT ... INTO t creates a table: DDL, with READ in *classes.
 *   - SELECT ... FOR UPDATE/NO KEY UPDATE/SHARE/KEY SHARE stays READ (the metric) but adds
 *     WRITE to *classes: it takes row locks, and PostgreSQL itself demands UPDATE privilege.
 *   - SELECT f() is READ whatever f does; CALL and DO are FUNCTION.
 *   - TRUNCATE is WRITE (data, not schema). SHOW is OTHER (settings, not data); FETCH is
 *     READ, MOVE/CLOSE/EXECUTE/DEALLOCATE OTHER.
 *   - DCL: GRANT, REVOKE, CREATE/ALTER/DROP ROLE/USER/GROUP (passwords included), USER
 *     MAPPING, POLICY, ALTER DEFAULT PRIVILEGES, REASSIGN/DROP OWNED, SECURITY LABEL, and
 *     SET/RESET ROLE and SESSION AUTHORIZATION (they change whose privileges apply).
 *   - ADMIN: VACUUM, ANALYZE, CLUSTER, REINDEX, CHECKPOINT, ALTER SYSTEM, LOAD, REFRESH
 *     MATERIALIZED VIEW, LOCK (PostgreSQL 17 grants these together as pg_maintain).
 *   - COPY: COPY ... FROM adds WRITE, COPY ... TO adds READ (or the query's classes for
 *     COPY (q) TO); FROM/TO PROGRAM or a server file adds ADMIN.
 *   - TRANSACTION: BEGIN, START, COMMIT, END, ROLLBACK, ABORT, SAVEPOINT, RELEASE, PREPARE
 *     TRANSACTION, COMMIT/ROLLBACK PREPARED, SET TRANSACTION, SET CONSTRAINTS.
 *   - OTHER: SET, RESET, SHOW, DISCARD, LISTEN, NOTIFY, UNLISTEN, EXECUTE, DEALLOCATE,
 *     CLOSE, MOVE.
 * A function's body (a string) is not looked into: its effects are the function's.
 */
enum sql_class sql_classify(const char *sql, size_t len, unsigned opts, uint32_t *classes);

/* "read", "write", ... (the metric's label values), "unknown". */
const char *sql_class_to_str(enum sql_class c);

/* The statements_total label for c: itself (the metric has a label for every class). */
enum metrics_stmt_type sql_class_metric(enum sql_class c);

/*
 * Extension point, not built yet: referenced relations for table allow/deny rules.
 * It will be a walk over one statement's tokens in the same style as sql_classify:
 *
 *   struct sql_relname { struct sql_token schema, name; unsigned flags; };
 *   int sql_relations(const char *sql, size_t len, unsigned opts,
 *                     int (*cb)(void *arg, const struct sql_relname *r), void *arg);
 *
 * fed by the positions sql_classify already walks through (FROM, JOIN, INTO, UPDATE,
 * TABLE, COPY, CTE names to exclude), with quoted identifiers decoded by the callback's
 * caller, and "cannot tell" reported so policy can deny.
 */

#endif
