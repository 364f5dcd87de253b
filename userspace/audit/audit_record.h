/*
 * audit_record: one audit record, from the worker that builds it to the line in the trail
 * and back into the verifier.
 *
 * Three steps, on three sides:
 *   - a worker builds a struct audit_rec: a flat, typed list of fields copied out of the
 *     session (one allocation that grows, no JSON, no escaping: workers only enqueue);
 *   - the writer thread turns it into its canonical line (audit_rec_encode): every string
 *     goes through sanitize(SANITIZE_JSON) before it is escaped, so invalid UTF-8,
 *     controls and escapes from a peer stay inside one escaped string and can never end a
 *     record or forge another; the chain fields (seq, prev, ts, event) are added there;
 *   - the verifier parses a line back (audit_line_parse) and refuses any line that is not
 *     exactly the canonical form of what it parses to.
 *
 * The canonical form (docs/AUDIT.md "Canonical form") is jansson's compact encoding with
 * keys sorted bytewise: no whitespace, '"' and '\' escaped as \" and \\, control characters
 * as jansson writes them (they never occur: sanitize() has removed them), every other
 * character as its UTF-8 bytes, integers in decimal, no floating-point numbers, no
 * duplicate keys. A record's hash is SHA-256 over its line without the newline.
 *
 * Invariant: every string a record holds is valid UTF-8 without C0/C1 controls or DEL, and
 * a backslash in a peer's bytes appears doubled (sanitize's reversible escaping).
 */
#ifndef PGWARDEN_AUDIT_RECORD_H
#define PGWARDEN_AUDIT_RECORD_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AUDIT_HASH_LEN 32
#define AUDIT_HASH_HEXLEN 64
#define AUDIT_TS_LEN sizeof("2026-01-02T03:04:05.123456Z")
/* Longest line the verifier reads: a record is bounded by audit.max_text (1 MiB at most)
 * for the statement text plus as much again for parameters, each escaped at most 4 times
 * over, and its identity fields. */
#define AUDIT_LINE_MAX (10u * 1024 * 1024)

/* Every kind of record the trail holds (docs/AUDIT.md "Events"). */
enum audit_event {
	AUDIT_EV_FILE_START = 0, /* first record of every file */
	AUDIT_EV_DAEMON_START,
	AUDIT_EV_DAEMON_STOP,
	AUDIT_EV_CHECKPOINT,     /* signed */
	AUDIT_EV_RELOAD,         /* configuration or policy: digest, accepted or refused */
	AUDIT_EV_STEER,          /* steering attach / detach */
	AUDIT_EV_SESSION_START,
	AUDIT_EV_AUTH,
	AUDIT_EV_STATEMENT,
	AUDIT_EV_STATEMENT_DONE,
	AUDIT_EV_STATEMENT_REFUSED, /* the audit stage refused it (write timeout) */
	AUDIT_EV_DECISION,       /* another stage did not forward a message */
	AUDIT_EV_ERROR,          /* an ErrorResponse reached the client */
	AUDIT_EV_MASKED,         /* columns a masking stage rewrote */
	AUDIT_EV_SESSION_END,
	AUDIT_EV_CANCEL,
	AUDIT_EV_LOCKOUT,
	AUDIT_EV_KILL,
	AUDIT_EV_GAP,            /* what was lost while the trail could not be written */
	AUDIT_EV_CAPACITY,       /* the file system is filling up */
	AUDIT_EV_TORN,           /* marks bytes a crash left half-written */
	AUDIT_EV_COUNT,
};

/* "statement", "session_start", ... (the record's "event" field). */
const char *audit_event_name(enum audit_event ev);
/* The event a name denotes; -1 when none. */
int audit_event_parse(const char *name);

/*
 * A record under construction. The appenders never fail visibly: an allocation failure
 * marks the record (audit_rec_failed) and later appends are ignored, so a builder is a
 * straight list of calls checked once. Keys must be string literals (they are kept by
 * pointer). Strings may hold any bytes; NULL strings become JSON null.
 */
struct audit_rec;

struct audit_rec *audit_rec_new(enum audit_event ev, uint64_t wall_ns);
void audit_rec_free(struct audit_rec *r); /* wipes the bytes first: they may be SQL */
bool audit_rec_failed(const struct audit_rec *r);
enum audit_event audit_rec_event(const struct audit_rec *r);
uint64_t audit_rec_wall_ns(const struct audit_rec *r);
/* Bytes the record holds (its queue cost). */
size_t audit_rec_size(const struct audit_rec *r);

void audit_rec_str(struct audit_rec *r, const char *key, const char *s);
void audit_rec_strn(struct audit_rec *r, const char *key, const char *s, size_t n);
void audit_rec_u64(struct audit_rec *r, const char *key, uint64_t v);
void audit_rec_i64(struct audit_rec *r, const char *key, int64_t v);
void audit_rec_bool(struct audit_rec *r, const char *key, bool v);
void audit_rec_null(struct audit_rec *r, const char *key);
void audit_rec_hex(struct audit_rec *r, const char *key, const uint8_t *bytes, size_t n);
/* Nesting: an object or array value under key (NULL inside an array), closed by
 * audit_rec_end(). */
void audit_rec_object(struct audit_rec *r, const char *key);
void audit_rec_array(struct audit_rec *r, const char *key);
void audit_rec_end(struct audit_rec *r);

/* Link the records of one queue (the trail's), and the writer's bookkeeping. */
struct audit_gate;
struct audit_rec_link {
	struct audit_rec *next;
	struct audit_gate *gate; /* set when a statement waits for this record */
};
struct audit_rec_link *audit_rec_link(struct audit_rec *r);

/* A growing byte buffer lines are encoded into (the writer's output buffer). */
struct audit_out {
	char *buf;
	size_t len, cap;
};

/* Room for n more bytes at buf + len; false when it cannot grow (ENOMEM). */
bool audit_out_room(struct audit_out *o, size_t n) __attribute__((warn_unused_result));

/*
 * Append the record's canonical line (no newline), chain fields included (see below), to
 * out: byte for byte audit_canonical(audit_rec_to_json(r, seq, prev)), encoded directly
 * (no tree, no allocation beyond out's growth for a typical record). 0; -ENOMEM or -EINVAL
 * (a record audit_rec_failed() refuses), out's length unchanged then.
 */
int audit_rec_encode(const struct audit_rec *r, uint64_t seq, const uint8_t prev[AUDIT_HASH_LEN],
		     struct audit_out *out) __attribute__((warn_unused_result));

/*
 * The record as a JSON object (strings sanitised) with the chain fields added: seq, prev
 * (hex of the previous record's hash), ts (the event's time, UTC with microseconds) and
 * event. NULL on ENOMEM. The reference audit_rec_encode() is held to (tests).
 */
json_t *audit_rec_to_json(const struct audit_rec *r, uint64_t seq,
			  const uint8_t prev[AUDIT_HASH_LEN]);

/* The canonical line of obj (no newline), malloc'd; NULL on ENOMEM. */
char *audit_canonical(const json_t *obj, size_t *len);

/* SHA-256 of a canonical line. */
void audit_hash(const char *line, size_t len, uint8_t out[AUDIT_HASH_LEN]);

/* "2026-01-02T03:04:05.123456Z" for wall-clock nanoseconds; buf has AUDIT_TS_LEN bytes. */
const char *audit_format_ts(uint64_t wall_ns, char *buf, size_t n);

/* Lower-case hex of n bytes into out (2n + 1 bytes). */
void audit_hex(const uint8_t *bytes, size_t n, char *out);
/* Exactly 2n lower-case hex digits into bytes: 0 or -EINVAL. */
int audit_unhex(const char *hex, uint8_t *bytes, size_t n);

/* ---- reading a line back (the verifier) ------------------------------------------- */

struct audit_line {
	json_t *obj;    /* owned: json_decref() via audit_line_release() */
	uint64_t seq;
	uint8_t prev[AUDIT_HASH_LEN];
	int event;      /* enum audit_event, or -1 for a name this version does not know */
	const char *event_name;
	const char *ts;
};

/*
 * Parse one line (without its newline) as a record: a JSON object with no duplicate keys,
 * an integer seq >= 1, prev of 64 lower-case hex digits, ts and event strings, and exactly
 * in canonical form. 0, or -EINVAL with the reason in why (one line, no peer bytes
 * unescaped). Bounded: lines over AUDIT_LINE_MAX are refused unread.
 */
int audit_line_parse(const char *line, size_t len, struct audit_line *out, char *why,
		     size_t whylen) __attribute__((warn_unused_result));
void audit_line_release(struct audit_line *l);

#endif
