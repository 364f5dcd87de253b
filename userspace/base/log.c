/* log: structured logfmt lines to stderr, the journal or syslog (see log.h). */
#include "base/log.h"

#include "base/decimal.h"
#include "base/log_sink.h"
#include "base/sanitize.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

volatile int log_level_enabled = LOG_INFO;
static volatile int log_target_now = LOG_TARGET_STDERR;
static const char *log_ident = "pgwarden";

static const char *const level_names[LOG_LEVEL_COUNT] = {"error", "warn", "info", "debug"};
static const char *const target_names[LOG_TARGET_COUNT] = {"auto", "stderr", "journal",
							   "syslog"};

/* syslog(3) priorities, spelled out: <syslog.h> is log_sink.c's business. */
enum {
	PRIO_ERR = 3,
	PRIO_WARNING = 4,
	PRIO_NOTICE = 5,
	PRIO_INFO = 6,
	PRIO_DEBUG = 7,
};
static const uint8_t level_prio[LOG_LEVEL_COUNT] = {PRIO_ERR, PRIO_WARNING, PRIO_INFO,
						     PRIO_DEBUG};

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

int log_target_parse(const char *name)
{
	for (int i = 0; i < LOG_TARGET_COUNT; i++)
		if (strcmp(name, target_names[i]) == 0)
			return i;
	return -1;
}

const char *log_target_to_str(enum log_target t)
{
	return (unsigned)t < LOG_TARGET_COUNT ? target_names[t] : "unknown";
}

enum log_target log_set_target(enum log_target t, const char *ident)
{
	if (ident)
		log_ident = ident;
	if (t == LOG_TARGET_AUTO) {
		if (log_sink_stderr_is_journal())
			t = LOG_TARGET_JOURNAL;
		else if (log_sink_stderr_is_void())
			t = LOG_TARGET_SYSLOG;
		else
			t = LOG_TARGET_STDERR;
	}
	if (t == LOG_TARGET_SYSLOG)
		log_sink_syslog_open(log_ident);
	log_target_now = (int)t;
	return t;
}

enum log_target log_target_active(void)
{
	return (enum log_target)log_target_now;
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

static void log_append_str(struct log_line *l, const char *s)
{
	log_append(l, s, strlen(s));
}

/* " key=": keys are the caller's constants. */
static void log_append_key(struct log_line *l, const char *key)
{
	log_append(l, " ", 1);
	log_append_str(l, key);
	log_append(l, "=", 1);
}

/* ---- journal fields ------------------------------------------------------------------ */

#define FIELD_PREFIX "PGWARDEN_"
#define MSG_FIELD_LEN (sizeof("MESSAGE=") - 1)
_Static_assert(sizeof("ts=2000-01-01T00:00:00.000000Z level=info ") > MSG_FIELD_LEN,
	       "MESSAGE= must fit over the timestamp prefix");
#define FIELD_NAME_MAX 64 /* the journal's limit on a field name */

/* Open a field "PGWARDEN_KEY=" (key upper-cased, anything but [A-Z0-9_] as '_'). false
 * when the field budget is spent: the key then lives in MESSAGE only. */
static bool field_open(struct log_line *l, const char *key)
{
	size_t klen, need;

	if (!l->journal)
		return false;
	klen = strlen(key);
	need = sizeof(FIELD_PREFIX) - 1 + klen + 1;
	if (l->nfields >= LOG_FIELDS_N || klen == 0 ||
	    sizeof(FIELD_PREFIX) - 1 + klen > FIELD_NAME_MAX || l->flen + need >= sizeof(l->fields))
		return false;
	memcpy(l->fields + l->flen, FIELD_PREFIX, sizeof(FIELD_PREFIX) - 1);
	l->flen += sizeof(FIELD_PREFIX) - 1;
	for (size_t i = 0; i < klen; i++) {
		char c = key[i];

		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		else if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')))
			c = '_';
		l->fields[l->flen++] = c;
	}
	l->fields[l->flen++] = '=';
	return true;
}

static void field_close(struct log_line *l)
{
	l->field_end[l->nfields++] = l->flen;
}

static void field_text(struct log_line *l, const char *key, const char *text, size_t n)
{
	size_t room;

	if (!field_open(l, key))
		return;
	room = sizeof(l->fields) - l->flen;
	if (n > room)
		n = room;
	memcpy(l->fields + l->flen, text, n);
	l->flen += (uint16_t)n;
	field_close(l);
}

/* A peer's value: the JSON-safe form (valid UTF-8, controls escaped), without quotes. */
static void field_peer_text(struct log_line *l, const char *key, const char *value)
{
	if (!field_open(l, key))
		return;
	l->flen += (uint16_t)sanitize_str(l->fields + l->flen, sizeof(l->fields) - l->flen,
					  value, SANITIZE_JSON, NULL);
	field_close(l);
}

unsigned log_journal_fields(struct log_line *l, const char **ptr, size_t *len, unsigned max)
{
	static __thread char fixed[2][64];
	unsigned n = 0;
	size_t start = 0;
	int m;

	if (max < 3 || !l->journal)
		return 0;
	/* MESSAGE: the logfmt line from "event=" on (the journal keeps the time itself),
	 * written over the end of "ts=... level=... ", which is saved for a fallback. */
	if (!l->prefix_saved) {
		memcpy(l->saved, l->buf + l->msg_off - MSG_FIELD_LEN, MSG_FIELD_LEN);
		memcpy(l->buf + l->msg_off - MSG_FIELD_LEN, "MESSAGE=", MSG_FIELD_LEN);
		l->prefix_saved = true;
	}
	ptr[n] = l->buf + l->msg_off - MSG_FIELD_LEN;
	len[n++] = l->len - l->msg_off + MSG_FIELD_LEN;
	m = snprintf(fixed[0], sizeof(fixed[0]), "PRIORITY=%u", l->prio);
	ptr[n] = fixed[0];
	len[n++] = (size_t)m;
	m = snprintf(fixed[1], sizeof(fixed[1]), "SYSLOG_IDENTIFIER=%s", log_ident);
	ptr[n] = fixed[1];
	len[n++] = (size_t)(m < (int)sizeof(fixed[1]) ? m : (int)sizeof(fixed[1]) - 1);
	for (unsigned i = 0; i < l->nfields && n < max; i++) {
		ptr[n] = l->fields + start;
		len[n++] = l->field_end[i] - start;
		start = l->field_end[i];
	}
	return n;
}

/* ---- building a line ----------------------------------------------------------------- */

/*
 * "ts=YYYY-MM-DDTHH:MM:SS." of the second this thread last logged in: lines come many to a
 * second, and gmtime_r (which takes glibc's time zone lock) with its formatting cost more
 * than the rest of a line.
 */
struct log_ts_cache {
	time_t sec;
	bool valid;
	uint8_t len;
	char text[40];
};
static __thread struct log_ts_cache ts_cache;

static void log_append_ts(struct log_line *l, const struct timespec *ts)
{
	struct log_ts_cache *c = &ts_cache;
	char usec[6];
	long v = ts->tv_nsec / 1000;

	if (!c->valid || c->sec != ts->tv_sec) {
		struct tm tm;
		int n;

		gmtime_r(&ts->tv_sec, &tm);
		n = snprintf(c->text, sizeof(c->text), "ts=%04d-%02d-%02dT%02d:%02d:%02d.",
			     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			     tm.tm_sec);
		if (n < 0)
			n = 0;
		c->len = (uint8_t)((size_t)n < sizeof(c->text) ? (size_t)n : sizeof(c->text) - 1);
		c->sec = ts->tv_sec;
		c->valid = true;
	}
	log_append(l, c->text, c->len);
	for (int i = 5; i >= 0; i--, v /= 10)
		usec[i] = (char)('0' + v % 10);
	log_append(l, usec, sizeof(usec));
}

static void line_begin(struct log_line *l, const char *level_name, uint8_t prio,
		       const char *event)
{
	struct timespec ts;

	l->len = 0;
	l->truncated = false;
	l->muted = false;
	l->prio = prio;
	l->journal = log_target_now == LOG_TARGET_JOURNAL;
	l->flen = 0;
	l->nfields = 0;
	l->prefix_saved = false;
	clock_gettime(CLOCK_REALTIME, &ts);
	log_append_ts(l, &ts);
	log_append(l, "Z level=", 8);
	log_append_str(l, level_name);
	log_append(l, " ", 1);
	/* "MESSAGE=" is written over the end of "ts=... level=..." when the journal gets the
	 * line, so the field needs no copy: the prefix is always longer than that. */
	l->msg_off = (uint16_t)l->len;
	log_append(l, "event=", 6);
	log_append_str(l, event);
	field_text(l, "event", event, strlen(event));
}

void log_line_begin(struct log_line *l, enum log_level level, const char *event)
{
	unsigned lv = (unsigned)level < LOG_LEVEL_COUNT ? (unsigned)level : LOG_ERROR;

	line_begin(l, level_names[lv], level_prio[lv], event);
	l->muted = !log_enabled(lv);
}

void log_trail_begin(struct log_line *l, const char *event, bool failure)
{
	line_begin(l, failure ? "warn" : "notice", failure ? PRIO_WARNING : PRIO_NOTICE, event);
}

void log_kv_str(struct log_line *l, const char *key, const char *value)
{
	size_t room;
	bool cut;

	log_append_key(l, key);
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
	field_peer_text(l, key, value);
}

void log_kv_u64(struct log_line *l, const char *key, uint64_t value)
{
	char num[DECIMAL_U64_DIGITS];
	size_t n = (size_t)(decimal_put_u64(num, value) - num);

	log_append_key(l, key);
	log_append(l, num, n);
	field_text(l, key, num, n);
}

void log_kv_i64(struct log_line *l, const char *key, int64_t value)
{
	char num[1 + DECIMAL_U64_DIGITS], *p = num;
	size_t n;

	if (value < 0)
		*p++ = '-';
	/* The magnitude in unsigned arithmetic: -INT64_MIN does not fit an int64_t. */
	n = (size_t)(decimal_put_u64(p, value < 0 ? 0 - (uint64_t)value : (uint64_t)value) - num);
	log_append_key(l, key);
	log_append(l, num, n);
	field_text(l, key, num, n);
}

void log_kv_hex(struct log_line *l, const char *key, const uint8_t *bytes, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t start;

	log_append_key(l, key);
	start = l->len;
	for (size_t i = 0; i < n; i++) {
		char h[2] = {hex[bytes[i] >> 4], hex[bytes[i] & 15]};
		log_append(l, h, 2);
	}
	field_text(l, key, l->buf + start, l->len - start);
}

static void write_stderr(const char *p, size_t n)
{
	size_t off = 0;
	ssize_t r;

	/* One write per line keeps lines whole; retry only on EINTR and short writes. */
	while (off < n) {
		r = write(STDERR_FILENO, p + off, n - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return;
		off += (size_t)r;
	}
}

void log_line_end(struct log_line *l)
{
	static const char cut[] = " truncated=1";

	if (l->muted)
		return;
	if (l->truncated) {
		memcpy(l->buf + l->len, cut, sizeof(cut) - 1);
		l->len += sizeof(cut) - 1;
		field_text(l, "truncated", "1", 1);
	}
	switch (log_target_now) {
	case LOG_TARGET_JOURNAL:
		if (l->journal) {
			const char *ptr[LOG_FIELDS_N + 3];
			size_t len[LOG_FIELDS_N + 3];
			struct iovec iov[LOG_FIELDS_N + 3];
			unsigned n = log_journal_fields(l, ptr, len, LOG_FIELDS_N + 3);

			for (unsigned i = 0; i < n; i++) {
				iov[i].iov_base = (void *)ptr[i];
				iov[i].iov_len = len[i];
			}
			if (log_sink_journal(iov, n) == 0)
				return;
		}
		/* The journal refused it (not running?): stderr gets the whole line. */
		if (l->prefix_saved)
			memcpy(l->buf + l->msg_off - MSG_FIELD_LEN, l->saved, MSG_FIELD_LEN);
		break;
	case LOG_TARGET_SYSLOG:
		log_sink_syslog(l->prio, l->buf + l->msg_off, l->len - l->msg_off);
		return;
	default:
		break;
	}
	l->buf[l->len++] = '\n';
	write_stderr(l->buf, l->len);
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
