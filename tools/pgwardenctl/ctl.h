/*
 * pgwardenctl: one command table, consistent flags and exit codes.
 *
 * Each command is a function over its own argv (argv[0] is the command name). Commands live
 * in files by area: daemon commands (status, sessions, kill, reload) talk to the admin
 * socket; steering commands (attach, detach, and the steering half of status) own kernel
 * state. Errors are one line on stderr starting with "pgwardenctl: ".
 */
#ifndef PGWARDEN_CTL_H
#define PGWARDEN_CTL_H

#include <stdbool.h>

enum ctl_exit {
	CTL_EXIT_OK = 0,
	CTL_EXIT_FAIL = 1,  /* the command ran and failed */
	CTL_EXIT_USAGE = 2, /* bad flags or arguments */
	CTL_EXIT_DOWN = 3,  /* pgwardend is not running / admin socket unreachable */
};

/* One line on stderr, "pgwardenctl: " and the message; under --json, a JSON object on
 * stdout instead ({"ok":false,"error":{"code":...,"message":...}}, the daemon's shape),
 * whose code is error_code, or "usage", "failed" or "unreachable" by exit status.
 * Returns code. */
int ctl_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int ctl_fail_code(int code, const char *error_code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Was --json given? */
bool ctl_json_output(void);

struct ctl_command {
	const char *name;
	const char *synopsis; /* flags and arguments, for usage */
	const char *summary;  /* one line */
	int (*run)(int argc, char **argv);
};

/* Steering (tools/pgwardenctl/steer_cmds.c). */
int ctl_attach(int argc, char **argv);
int ctl_detach(int argc, char **argv);
/* The steering section of `status` for instance (NULL: --instance, $PGWARDEN_INSTANCE or
 * the default): prints human text, or adds to a JSON object when json_out is a json_t *.
 * Returns a ctl_exit. */
int ctl_status_steering(const char *instance, bool json, void *json_out);

#endif
