/* log: structured logfmt lines on stderr (see log.h). */
#include "base/log.h"

#include "base/sanitize.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile int log_level_enabled = LOG_INFO;

static const char *const level_names[LOG_LEVEL_COUNT] = {"error", "warn", "info", "debug"};

void log_set_level(enum log_level level)
{
	log_level_enabled = (int)level;
}

int log_level_parse(const char *name)
{
	for (int i = 0; i < LOG_LEVEL_COUNT; i++)
		if (strcmp(name, level_names[i]) == 0)
			return i;
	return -1;
}

const char *log_level_to_str(enum log_level level)
{
	return (unsigned)level < LOG_LEVEL_COUNT ? level_names[level] : "unknown";
}

/* Room kept at the end of the buffer for " truncated=1\n". */
#define LOG_TAIL_RESERVE 16

static void log_append(struct log_line *l, const char *s, size_t n)
{
	size_t room = sizeof(l->buf) - LOG_TAIL_RESERVE - l->len;

	if (n > room) {
		n = room;
		l->truncated = true;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void log_appendf(struct log_line *l, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void log_appendf(struct log_line *l, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	log_append(l, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
}

void log_line_begin(struct log_line *l, enum log_level level, const char *event)
{
	struct timespec ts;
	struct tm tm;

	l->len = 0;
	l->truncated = false;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	log_appendf(l, "ts=%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ level=%s event=%s",
		    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		    ts.tv_nsec / 1000, log_level_to_str(level), event);
}

void log_kv_str(struct log_line *l, const char *key, const char *value)
{
	size_t room;
	bool cut;

	log_appendf(l, " %s=", key);
	if (!value) {
		log_append(l, "-", 1);
		return;
	}
	log_append(l, "\"", 1);
	/* Room for the closing quote stays reserved, so a cut value is still one value. */
	room = sizeof(l->buf) - LOG_TAIL_RESERVE - l->len;
	if (room > 1 && !l->truncated) {
		l->len += sanitize_str(l->buf + l->len, room - 1, value, SANITIZE_LOG, &cut);
		l->truncated |= cut;
	}
	log_append(l, "\"", 1);
}

void log_kv_u64(struct log_line *l, const char *key, uint64_t value)
{
	log_appendf(l, " %s=%" PRIu64, key, value);
}

void log_kv_i64(struct log_line *l, const char *key, int64_t value)
{
	log_appendf(l, " %s=%" PRId64, key, value);
}

void log_kv_hex(struct log_line *l, const char *key, const uint8_t *bytes, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	log_appendf(l, " %s=", key);
	for (size_t i = 0; i < n; i++) {
		char h[2] = {hex[bytes[i] >> 4], hex[bytes[i] & 15]};
		log_append(l, h, 2);
	}
}

void log_line_end(struct log_line *l)
{
	static const char cut[] = " truncated=1";
	ssize_t r;
	size_t off = 0;

	if (l->truncated) {
		memcpy(l->buf + l->len, cut, sizeof(cut) - 1);
		l->len += sizeof(cut) - 1;
	}
	l->buf[l->len++] = '\n';
	/* One write per line keeps lines whole; retry only on EINTR and short writes. */
	while (off < l->len) {
		r = write(STDERR_FILENO, l->buf + off, l->len - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return;
		off += (size_t)r;
	}
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	struct log_line l;
	char msg[1024];
	va_list ap;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_line_begin(&l, level, event);
	log_kv_str(&l, "msg", msg);
	log_line_end(&l);
}
