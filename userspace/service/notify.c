/* notify: sd_notify messages to the service manager (see notify.h). */
#include "service/notify.h"

#include "base/clock.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <systemd/sd-daemon.h>

int notify_enabled(void)
{
	const char *s = getenv("NOTIFY_SOCKET");

	return s && *s;
}

/* A status line is one line: newlines in it would start new assignments. */
static void notify_send(const char *head, const char *status)
{
	char msg[512];
	int n;

	if (!notify_enabled())
		return;
	n = snprintf(msg, sizeof(msg), "%s%s", head, status ? "STATUS=" : "");
	if (n < 0 || (size_t)n >= sizeof(msg))
		return;
	for (const char *p = status; p && *p && (size_t)n + 1 < sizeof(msg); p++)
		msg[n++] = *p == '\n' ? ' ' : *p;
	msg[n] = '\0';
	(void)sd_notify(0, msg);
}

void notify_ready(const char *status)
{
	notify_send("READY=1\n", status);
}

void notify_reloading(void)
{
	char head[96];

	snprintf(head, sizeof(head), "RELOADING=1\nMONOTONIC_USEC=%llu\n",
		 (unsigned long long)(clock_mono_ns() / 1000));
	notify_send(head, "reloading the configuration");
}

void notify_status(const char *fmt, ...)
{
	char status[400];
	va_list ap;

	if (!notify_enabled())
		return;
	va_start(ap, fmt);
	vsnprintf(status, sizeof(status), fmt, ap);
	va_end(ap);
	notify_send("", status);
}

void notify_stopping(const char *status)
{
	notify_send("STOPPING=1\n", status);
}

void notify_main_pid(pid_t pid, const char *status)
{
	char head[64];

	snprintf(head, sizeof(head), "MAINPID=%d\nREADY=1\n", (int)pid);
	notify_send(head, status);
}
