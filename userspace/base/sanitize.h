/*
 * sanitize: THE one place where bytes that came from a peer (a client's user name or SQL,
 * a server's error text, a local process's comm) are made safe for an output: a log line,
 * a JSON document (admin socket, audit trail), a terminal.
 *
 * The rule is the same everywhere, so an operator learns one spelling: valid UTF-8 passes;
 * every C0 control, DEL, C1 control (U+0080..U+009F), and every byte that is not part of
 * valid UTF-8 (overlong forms, surrogates, code points past U+10FFFF, stray continuation
 * bytes) is written as \xHH per byte (a newline is \x0a); the backslash itself is
 * doubled, so the escaping is reversible and a peer cannot forge an escape. For a
 * terminal, Unicode format characters that reorder or hide text (bidi embeddings,
 * overrides and isolates, zero-width characters, line and paragraph separators, BOM) are
 * escaped too.
 *
 * Pure function, no allocation, no locale: safe on any thread and on the data path.
 */
#ifndef PGWARDEN_SANITIZE_H
#define PGWARDEN_SANITIZE_H

#include <stdbool.h>
#include <stddef.h>

enum sanitize_for {
	SANITIZE_LOG = 0,  /* inside a logfmt "..." value: '"' is escaped as \" too */
	SANITIZE_JSON,     /* a JSON string's content, before the JSON encoder (which escapes
			    * '"' and whatever else JSON needs): the result is valid UTF-8 */
	SANITIZE_TERMINAL, /* text shown in a terminal: also escapes format characters */
	SANITIZE_TERMINAL_ESCAPED, /* text that is already in this spelling (a value of the
				    * admin socket's JSON, which the daemon sanitised), shown in a
				    * terminal: as SANITIZE_TERMINAL, but a backslash is left as
				    * it is, so the operator reads the one spelling (\x1b, \\) the
				    * log uses rather than an escape of an escape */
};

/*
 * Write the safe form of in[0..n) into out[0..cap), NUL-terminated when cap > 0. An escape
 * or a UTF-8 sequence is never cut in half: output that does not fit stops before it and
 * *truncated (optional) is set. Returns the length written (NUL excluded).
 */
size_t sanitize(char *out, size_t cap, const char *in, size_t n, enum sanitize_for to,
		bool *truncated);

/* The same for a NUL-terminated string; NULL reads as "". */
size_t sanitize_str(char *out, size_t cap, const char *in, enum sanitize_for to,
		    bool *truncated);

/* Length of the whole safe form of in[0..n) (NUL excluded): size a buffer with + 1. */
size_t sanitize_len(const char *in, size_t n, enum sanitize_for to);

/* Is in[0..n) already its own safe form (nothing would be escaped)? */
bool sanitize_is_clean(const char *in, size_t n, enum sanitize_for to);

#endif
