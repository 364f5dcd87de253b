/*
 * log_limit: a bound on log lines for events a peer can repeat at will (a wrong cancel key,
 * a refused connection, a protocol violation before login), so that a flood of them
 * cannot become a flood of log (14,000 wrong cancels a second once wrote 12 MB in 3 s).
 *
 * One limiter per kind of event, usually a static at the call site. It lets `burst` lines
 * through per `interval`; the ones beyond are counted, not written, and the first line
 * written in a later interval carries that count (suppressed=N), so the log still says how
 * many there were. Counters and metrics, not the log, are where every event is counted.
 *
 * Thread-safe (a mutex held for a few instructions); no allocation.
 */
#ifndef PGWARDEN_LOG_LIMIT_H
#define PGWARDEN_LOG_LIMIT_H

#include "base/log.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct log_limit {
	pthread_mutex_t lock;
	uint64_t interval_ns;
	uint32_t burst;
	uint32_t in_window;   /* lines written in the current interval */
	uint64_t window_start; /* monotonic ns; 0: no line yet */
	uint64_t suppressed;  /* held back since the last line written */
};

/* A limiter that writes at most burst lines per interval_ms. */
#define LOG_LIMIT_INIT(burst, interval_ms)                                                 \
	{ PTHREAD_MUTEX_INITIALIZER, (uint64_t)(interval_ms) * 1000000ULL, (burst), 0, 0, 0 }

/* The limits the relay uses for events from unauthenticated peers: 10 lines per 10 s per
 * kind of event. */
#define LOG_LIMIT_PEER_BURST 10
#define LOG_LIMIT_PEER_INTERVAL_MS 10000

/*
 * May one more line be written at now_ns (monotonic)? When true, *suppressed receives the
 * number of lines held back since the last one written, and that count starts again.
 */
bool log_limit_allow(struct log_limit *l, uint64_t now_ns, uint64_t *suppressed);

/* log_msg() through l: the line, with " suppressed=N" when some were held back, or
 * nothing. The level is checked first, so a disabled level costs no lock. */
void log_limited(struct log_limit *l, enum log_level level, const char *event,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5), cold));

#endif
