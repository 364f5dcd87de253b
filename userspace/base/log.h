/*
 * log: one structured line per event, logfmt (key=value), with a priority, sent to the
 * journal, to syslog or to stderr.
 *
 * Every line is built in a bounded stack buffer and delivered with one write (one
 * write(2), one journal datagram, one syslog(3) call), so lines from different threads
 * never interleave. Values that come from peers (user names, application names, SQL) go
 * through log_kv_str(), which quotes and escapes them with base/sanitize.h: a client cannot
 * forge a log line or a journal field. A disabled level costs one branch.
 *
 * Where lines go (log_set_target(), the log_target setting): stderr as logfmt; the
 * journal, natively, with PRIORITY, SYSLOG_IDENTIFIER, MESSAGE (the line without its
 * timestamp) and one field per key (PGWARDEN_EVENT, PGWARDEN_SESSION, PGWARDEN_PEER, ...);
 * or syslog(3) (facility daemon) with the same priorities. "auto" picks the journal when
 * stderr is systemd's journal stream (JOURNAL_STREAM names it), syslog when stderr goes
 * nowhere useful (closed, or a character device that is not a terminal, like /dev/null),
 * and stderr otherwise (a terminal, a file, a pipe). A line the journal refuses goes to
 * stderr instead, so nothing is lost silently.
 *
 * Priorities: error → err (3), warn → warning (4), info → info (6), debug → debug (7). The
 * session trail and operator actions (log_trail_begin()) are written whatever log_level
 * says, at notice (5), or warning when they record a failure.
 */
#ifndef PGWARDEN_LOG_H
#define PGWARDEN_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum log_level {
	LOG_ERROR = 0,
	LOG_WARN,
	LOG_INFO,
	LOG_DEBUG,
	LOG_LEVEL_COUNT,
};

enum log_target {
	LOG_TARGET_AUTO = 0,
	LOG_TARGET_STDERR,
	LOG_TARGET_JOURNAL,
	LOG_TARGET_SYSLOG,
	LOG_TARGET_COUNT,
};

extern volatile int log_level_enabled;

void log_set_level(enum log_level level);
/* "error", "warn", "info", "debug" → level; -1 when unknown. */
int log_level_parse(const char *name);
const char *log_level_to_str(enum log_level level);

/* "auto", "stderr", "journal", "syslog" → target; -1 when unknown. */
int log_target_parse(const char *name);
const char *log_target_to_str(enum log_target t);
/*
 * Send lines to t from now on; AUTO is resolved here (see the top comment). ident names
 * the program (SYSLOG_IDENTIFIER, syslog's tag; NULL: "pgwarden"; the string must stay
 * valid). Call from the main thread before other threads log. Returns the target chosen.
 */
enum log_target log_set_target(enum log_target t, const char *ident);
enum log_target log_target_active(void);

#define LOG_LINE_MAX 2048
#define LOG_FIELDS_MAX 3072 /* journal fields of one line, "PGWARDEN_KEY=value" each */
#define LOG_FIELDS_N 48     /* at most this many keys become journal fields */

/* A line under construction; values are appended with log_kv_*. Never overflows: a line
 * that would exceed LOG_LINE_MAX is cut and marked with "truncated=1"; keys past the
 * journal's field budget stay in MESSAGE only. */
struct log_line {
	char buf[LOG_LINE_MAX]; /* "ts=... level=... event=... key=value..." */
	size_t len;
	bool truncated;
	bool muted;             /* below log_level: log_line_end() writes nothing */
	bool journal;           /* fields[] is being filled */
	uint8_t prio;           /* syslog priority */
	uint16_t msg_off;       /* where "event=" starts: MESSAGE for the journal and syslog */
	bool prefix_saved;      /* "MESSAGE=" overwrites buf[msg_off - 8, msg_off); saved: */
	char saved[8];
	uint16_t flen;
	uint8_t nfields;
	uint16_t field_end[LOG_FIELDS_N];
	char fields[LOG_FIELDS_MAX];
};

/* A line at `level`: written by log_line_end() only when log_level enables that level. */
void log_line_begin(struct log_line *l, enum log_level level, const char *event);
/* A line of the session trail or an operator action: emitted whatever log_level says,
 * at priority notice, or warning with failure (logfmt level "notice" / "warn"). */
void log_trail_begin(struct log_line *l, const char *event, bool failure);
void log_kv_str(struct log_line *l, const char *key, const char *value); /* quoted, escaped */
void log_kv_u64(struct log_line *l, const char *key, uint64_t value);
void log_kv_i64(struct log_line *l, const char *key, int64_t value);
void log_kv_hex(struct log_line *l, const char *key, const uint8_t *bytes, size_t n);
void log_line_end(struct log_line *l);

/* The journal fields of a line begun while the journal was the target, after its log_kv_*
 * calls and before log_line_end(): "NAME=value" (no NUL) for MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER, then one per key, PGWARDEN_EVENT first. Fills at most max entries of
 * ptr/len and returns how many. */
unsigned log_journal_fields(struct log_line *l, const char **ptr, size_t *len, unsigned max);

/* Free-form message: event=NAME msg="formatted text". Cold: no line is written on the
 * relay's per-message path unless something went wrong, so the compiler keeps the calls
 * (and the branches that lead to them) out of the hot code. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), cold));

#define log_enabled(level) ((int)(level) <= log_level_enabled)
#define log_error(ev, ...) log_msg(LOG_ERROR, ev, __VA_ARGS__)
#define log_warn(ev, ...) do { if (log_enabled(LOG_WARN)) log_msg(LOG_WARN, ev, __VA_ARGS__); } while (0)
#define log_info(ev, ...) do { if (log_enabled(LOG_INFO)) log_msg(LOG_INFO, ev, __VA_ARGS__); } while (0)
#define log_debug(ev, ...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, ev, __VA_ARGS__); } while (0)

#endif
