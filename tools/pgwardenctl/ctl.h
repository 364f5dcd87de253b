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

#include <jansson.h>
#include <stdbool.h>

enum ctl_exit {
	CTL_EXIT_OK = 0,
	CTL_EXIT_FAIL = 1,  /* the command ran and failed */
	CTL_EXIT_USAGE = 2, /* bad flags or arguments */
	CTL_EXIT_DOWN = 3,  /* pgwardend is not running / admin socket unreachable */
	CTL_EXIT_UNVOUCHED = 4, /* audit verify: nothing wrong found, not all of it signed */
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

/* The daemon's status object (the admin socket's "status" reply), for commands that need
 * to know what pgwardend does. 0 with *status (caller decrefs), or -errno (no daemon). */
int ctl_daemon_status(json_t **status);
/* One request to the daemon (req consumed): -1 with its {"ok":true} reply in *reply
 * (caller decrefs), else the exit status, with the error printed ("WHAT: CODE: message",
 * or a JSON object under --json). */
int ctl_request(json_t *req, json_t **reply, const char *what);
/* Wait at least ms for the daemon's replies (a command whose answer takes the daemon a
 * known while); --timeout may ask for longer. */
void ctl_timeout_at_least(int ms);
/* j as indented JSON on stdout (--json output). */
void ctl_print_json(json_t *j);
/* The admin socket path the daemon commands use (--socket, $PGWARDEN_ADMIN_SOCKET, or
 * the default). */
const char *ctl_admin_socket(void);

/* Steering (tools/pgwardenctl/steer_cmds.c). */
int ctl_attach(int argc, char **argv);
int ctl_detach(int argc, char **argv);
/* A file read-only in memory (mmap, so a trail of any size costs no heap): name, data and
 * len set; 0 or -errno (-EINVAL: not a regular file). Undo with ctl_unmap_file(). */
struct ctl_mapped {
	const char *name;
	char *data;
	size_t len;
	bool mapped;
};
int ctl_map_file(const char *path, struct ctl_mapped *m) __attribute__((warn_unused_result));
void ctl_unmap_file(struct ctl_mapped *m);

/* Audit trail keys and verification (tools/pgwardenctl/audit_cmds.c). */
int ctl_audit(int argc, char **argv);
/* Compliance evidence reports (tools/pgwardenctl/evidence_cmds.c): sign, verify, collect. */
int ctl_evidence(int argc, char **argv);
/* Policy files (tools/pgwardenctl/policy_cmds.c): check, explain. */
int ctl_policy(int argc, char **argv);

/* The steering section of `status` for instance (NULL: --instance, $PGWARDEN_INSTANCE or
 * the default): prints human text, or adds to a JSON object when json_out is a json_t *.
 * Returns a ctl_exit. */
int ctl_status_steering(const char *instance, bool json, void *json_out);

#endif
