/* log_sink: journal and syslog delivery (see log_sink.h). */
#include "base/log_sink.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <syslog.h>
#include <systemd/sd-journal.h>
#include <unistd.h>

bool log_sink_stderr_is_journal(void)
{
	const char *e = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) != 0)
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

bool log_sink_stderr_is_void(void)
{
	struct stat st;

	if (fstat(STDERR_FILENO, &st) != 0)
		return true;
	return S_ISCHR(st.st_mode) && !isatty(STDERR_FILENO);
}

void log_sink_syslog_open(const char *ident)
{
	openlog(ident, LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void log_sink_syslog(int prio, const char *msg, size_t len)
{
	syslog(prio, "%.*s", (int)len, msg);
}

int log_sink_journal(const struct iovec *iov, unsigned n)
{
	return sd_journal_sendv(iov, (int)n);
}
