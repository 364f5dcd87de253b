/* log_limit: a bounded number of lines per interval, with a count of the rest (see
 * log_limit.h). */
#include "base/log_limit.h"

#include "base/clock.h"

#include <stdarg.h>
#include <stdio.h>

bool log_limit_allow(struct log_limit *l, uint64_t now_ns, uint64_t *suppressed)
{
	bool ok;

	pthread_mutex_lock(&l->lock);
	if (!l->window_start || now_ns - l->window_start >= l->interval_ns) {
		l->window_start = now_ns ? now_ns : 1;
		l->in_window = 0;
	}
	ok = l->in_window < l->burst;
	if (ok) {
		l->in_window++;
		*suppressed = l->suppressed;
		l->suppressed = 0;
	} else {
		l->suppressed++;
	}
	pthread_mutex_unlock(&l->lock);
	return ok;
}

void log_limited(struct log_limit *l, enum log_level level, const char *event,
		 const char *fmt, ...)
{
	struct log_line line;
	uint64_t suppressed;
	char msg[1024];
	va_list ap;

	if (!log_enabled(level) || !log_limit_allow(l, clock_mono_ns(), &suppressed))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_line_begin(&line, level, event);
	log_kv_str(&line, "msg", msg);
	if (suppressed)
		log_kv_u64(&line, "suppressed", suppressed);
	log_line_end(&line);
}
