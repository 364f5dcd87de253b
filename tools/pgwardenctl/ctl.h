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

/* One line on stderr, "pgwardenctl: " and the message; returns code. */
int ctl_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

struct ctl_command {
	const char *name;
	const char *synopsis; /* flags and arguments, for usage */
	const char *summary;  /* one line */
	int (*run)(int argc, char **argv);
};

/* Steering (tools/pgwardenctl/steer_cmds.c). */
int ctl_attach(int argc, char **argv);
int ctl_detach(int argc, char **argv);
/* Policy files (tools/pgwardenctl/policy_cmds.c): check, explain. */
int ctl_policy(int argc, char **argv);

/* The steering section of `status`: prints human text, or adds to a JSON object when
 * json_out is a json_t *. Returns a ctl_exit. */
int ctl_status_steering(bool json, void *json_out);

#endif
