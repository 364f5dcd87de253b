/*
 * notify: what pgwardend tells its service manager (systemd's sd_notify protocol, through
 * libsystemd). Every call is a no-op when $NOTIFY_SOCKET is unset, so the daemon behaves
 * the same from a shell, a test or another supervisor.
 *
 * The unit is Type=notify: systemd considers the service started at READY=1 (after the
 * listeners, the admin socket and the metrics endpoint are up, so ExecStartPost's attach
 * finds the relay listening), follows a reload from RELOADING=1 to the next READY=1, and
 * shows STATUS= in `systemctl status`. A seamless restart moves the main pid to the new
 * daemon (MAINPID=). $NOTIFY_SOCKET is left in the environment on purpose: the successor
 * a restart starts must be able to speak too.
 */
#ifndef PGWARDEN_NOTIFY_H
#define PGWARDEN_NOTIFY_H

#include <sys/types.h>

/* READY=1 with a status line. */
void notify_ready(const char *status);
/* RELOADING=1 with MONOTONIC_USEC (what Type=notify-reload requires; harmless before). */
void notify_reloading(void);
/* STATUS= only. */
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* STOPPING=1 with a status line. */
void notify_stopping(const char *status);
/* The service's main process is now pid, which is ready: MAINPID=pid, READY=1, STATUS=. */
void notify_main_pid(pid_t pid, const char *status);
/* Is there a service manager listening ($NOTIFY_SOCKET set)? */
int notify_enabled(void);

#endif
