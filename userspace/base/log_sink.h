/*
 * log_sink: delivery of finished log lines to the journal or syslog, kept apart from
 * log.c because <syslog.h> (which sd-journal.h includes) defines LOG_INFO and LOG_DEBUG,
 * names log.h's levels already use. Only log.c calls these.
 */
#ifndef PGWARDEN_LOG_SINK_H
#define PGWARDEN_LOG_SINK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

/* Is stderr the journal's stream for this process (JOURNAL_STREAM names its device and
 * inode)? */
bool log_sink_stderr_is_journal(void);
/* Does stderr go nowhere a reader will see: closed, or a character device that is not a
 * terminal (/dev/null)? */
bool log_sink_stderr_is_void(void);

/* openlog() with ident, facility daemon, the pid in every message. */
void log_sink_syslog_open(const char *ident);
void log_sink_syslog(int prio, const char *msg, size_t len);

/* One journal entry of n fields ("NAME=value" each). 0 or -errno (nothing was sent). */
int log_sink_journal(const struct iovec *iov, unsigned n);

#endif
