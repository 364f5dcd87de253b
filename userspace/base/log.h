/*
 * log: one structured line per event, logfmt (key=value), on stderr.
 *
 * Every line is built in a bounded stack buffer and written with one write(2), so lines
 * from different threads never interleave. Values that come from peers (user names,
 * application names, SQL) go through log_kv_str(), which quotes and escapes them: a client
 * cannot forge a log line. A disabled level costs one branch.
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

extern volatile int log_level_enabled;

void log_set_level(enum log_level level);
/* "error", "warn", "info", "debug" → level; -1 when unknown. */
int log_level_parse(const char *name);
const char *log_level_to_str(enum log_level level);

#define LOG_LINE_MAX 2048

/* A line under construction; values are appended with log_kv_*. Never overflows: a line
 * that would exceed LOG_LINE_MAX is cut and marked with "truncated=1". */
struct log_line {
	char buf[LOG_LINE_MAX];
	size_t len;
	bool truncated;
};

void log_line_begin(struct log_line *l, enum log_level level, const char *event);
void log_kv_str(struct log_line *l, const char *key, const char *value); /* quoted, escaped */
void log_kv_u64(struct log_line *l, const char *key, uint64_t value);
void log_kv_i64(struct log_line *l, const char *key, int64_t value);
void log_kv_hex(struct log_line *l, const char *key, const uint8_t *bytes, size_t n);
void log_line_end(struct log_line *l);

/* Free-form message: event=NAME msg="formatted text". */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#define log_enabled(level) ((int)(level) <= log_level_enabled)
#define log_error(ev, ...) log_msg(LOG_ERROR, ev, __VA_ARGS__)
#define log_warn(ev, ...) do { if (log_enabled(LOG_WARN)) log_msg(LOG_WARN, ev, __VA_ARGS__); } while (0)
#define log_info(ev, ...) do { if (log_enabled(LOG_INFO)) log_msg(LOG_INFO, ev, __VA_ARGS__); } while (0)
#define log_debug(ev, ...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, ev, __VA_ARGS__); } while (0)

#endif
