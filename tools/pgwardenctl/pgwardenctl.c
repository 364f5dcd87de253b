/*
 * pgwardenctl: the operator's command line. main(), THE command table, and the daemon
 * commands (status, sessions, kill, reload, events), which talk to pgwardend's admin socket
 * (docs/ADMIN.md). Steering commands live in steer_cmds.c.
 *
 * Consistency rules every command follows: flags are GNU long options and may come before
 * or after the command name (--socket PATH, --json, --timeout SECONDS); errors are one
 * line on stderr starting with "pgwardenctl: "; exit codes are enum ctl_exit (0 ok,
 * 1 failed, 2 usage, 3 daemon unreachable).
 */
#include "ctl.h"

#include "admin/admin.h"
#include "admin/admin_client.h"
#include "base/sanitize.h"
#include "base/version.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct ctl_globals {
	const char *socket;
	bool json;
	int timeout_ms;
};

static struct ctl_globals g = {.timeout_ms = 10000};

bool ctl_json_output(void)
{
	return g.json;
}

/* The error code a program reads for an exit status that has no more precise one. */
static const char *exit_code_name(int code)
{
	switch (code) {
	case CTL_EXIT_USAGE:
		return "usage";
	case CTL_EXIT_DOWN:
		return "unreachable";
	default:
		return "failed";
	}
}

static int ctl_vfail(int code, const char *error_code, const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (g.json) {
		/* Under --json a program reads stdout: the error is a JSON object there too,
		 * shaped like the daemon's own error replies. */
		json_t *e = json_pack("{s:b, s:{s:s, s:s}}", "ok", 0, "error", "code",
				      error_code ? error_code : exit_code_name(code), "message", msg);

		if (e) {
			json_dumpf(e, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
			fputc('\n', stdout);
			fflush(stdout);
			json_decref(e);
			return code;
		}
	}
	fprintf(stderr, "pgwardenctl: %s\n", msg);
	return code;
}

int ctl_fail(int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ctl_vfail(code, NULL, fmt, ap);
	va_end(ap);
	return code;
}

int ctl_fail_code(int code, const char *error_code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ctl_vfail(code, error_code, fmt, ap);
	va_end(ap);
	return code;
}

/* ---- common flags --------------------------------------------------------------------- */

enum { OPT_SOCKET = 1000, OPT_JSON, OPT_TIMEOUT, OPT_COUNT, OPT_CANCEL, OPT_INSTANCE };

static const struct option common_opts[] = {
	{"socket", required_argument, NULL, OPT_SOCKET},
	{"json", no_argument, NULL, OPT_JSON},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"count", required_argument, NULL, OPT_COUNT},
	{"cancel", no_argument, NULL, OPT_CANCEL},
	{"instance", required_argument, NULL, OPT_INSTANCE},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
};

/* Flags only some commands take (parse_common refuses them elsewhere). */
struct cmd_flags {
	long *count;          /* --count N (events) */
	bool *cancel;         /* --cancel (kill) */
	const char **instance; /* --instance NAME (status) */
};

static int parse_positive(const char *s, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v <= 0 || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/*
 * Parse the common flags of a daemon command; positional arguments are left at
 * argv[optind..]. Returns -1 when parsing succeeded, else the exit code to return.
 */
#define GLOBAL_FLAG_NOT_MINE (-2)

/*
 * The flags every command takes, before or after its name (--socket, --json, --timeout),
 * for the option getopt_long() just returned in c: -1 when applied, an exit code when its
 * value is bad, GLOBAL_FLAG_NOT_MINE for any other option.
 */
static int global_flag(int c)
{
	long v;

	switch (c) {
	case OPT_SOCKET:
		g.socket = optarg;
		return -1;
	case OPT_JSON:
		g.json = true;
		return -1;
	case OPT_TIMEOUT:
		if (parse_positive(optarg, 3600, &v))
			return ctl_fail(CTL_EXIT_USAGE, "--timeout: expected seconds (1-3600), got \"%s\"",
				    optarg);
		g.timeout_ms = (int)v * 1000;
		return -1;
	default:
		return GLOBAL_FLAG_NOT_MINE;
	}
}

/* The flags every daemon command shares; a command without operands refuses any. -1 to go
 * on (optind at the first operand), else the exit code. */
static int parse_common(int argc, char **argv, const char *synopsis, const struct cmd_flags *f,
			bool takes_operands)
{
	int c, rc;

	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", common_opts, NULL)) != -1) {
		rc = global_flag(c);
		if (rc != GLOBAL_FLAG_NOT_MINE) {
			if (rc >= 0)
				return rc;
			continue;
		}
		switch (c) {
		case OPT_COUNT:
			if (!f || !f->count || parse_positive(optarg, 1000000000, f->count))
				return ctl_fail(CTL_EXIT_USAGE, "%s: unexpected or bad --count", argv[0]);
			break;
		case OPT_CANCEL:
			if (!f || !f->cancel)
				return ctl_fail(CTL_EXIT_USAGE, "%s: unexpected --cancel", argv[0]);
			*f->cancel = true;
			break;
		case OPT_INSTANCE:
			if (!f || !f->instance)
				return ctl_fail(CTL_EXIT_USAGE, "%s: unexpected --instance", argv[0]);
			*f->instance = optarg;
			break;
		case 'h':
			printf("usage: pgwardenctl %s %s\n", argv[0], synopsis);
			return CTL_EXIT_OK;
		default:
			return ctl_fail(CTL_EXIT_USAGE, "%s: unknown option \"%s\" (usage: pgwardenctl %s %s)",
				    argv[0], argv[optind - 1], argv[0], synopsis);
		}
	}
	if (!takes_operands && optind < argc)
		return ctl_fail(CTL_EXIT_USAGE, "%s: unexpected argument \"%s\"", argv[0], argv[optind]);
	return -1;
}

/* ---- talking to the daemon ------------------------------------------------------------- */

static const char *socket_path(void)
{
	return g.socket ? g.socket : admin_client_default_path();
}

/* A failed request: its exit status, error code and message. */
struct ctl_error {
	int exit;
	const char *code;  /* a static name, or NULL: code_buf holds the daemon's */
	char code_buf[64];
	char message[600];
};

static int ctl_error_set(struct ctl_error *e, int exit, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int ctl_error_set(struct ctl_error *e, int exit, const char *code, const char *fmt, ...)
{
	va_list ap;

	e->exit = exit;
	e->code = code;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return exit;
}

/* Why the admin socket could not be used. */
static int down_or_fail(int err, const char *what, struct ctl_error *e)
{
	if (err == -EACCES || err == -EPERM)
		return ctl_error_set(e, CTL_EXIT_FAIL, "forbidden",
				     "%s: permission denied on %s (the admin socket is for root, "
				     "pgwardend's user and its admin_read_group)",
				     what, socket_path());
	if (err == -ENOENT || err == -ECONNREFUSED || err == -ENOTDIR)
		return ctl_error_set(e, CTL_EXIT_DOWN, "unreachable",
				     "%s: pgwardend is not running (no admin socket at %s)", what,
				     socket_path());
	if (err == -ETIMEDOUT)
		return ctl_error_set(e, CTL_EXIT_DOWN, "unreachable",
				     "%s: pgwardend did not answer within %d s on %s", what,
				     g.timeout_ms / 1000, socket_path());
	if (err == -EPIPE || err == -ECONNRESET)
		return ctl_error_set(e, CTL_EXIT_DOWN, "unreachable",
				     "%s: pgwardend closed the admin connection on %s", what,
				     socket_path());
	if (err == -EPROTO)
		return ctl_error_set(e, CTL_EXIT_FAIL, "failed", "%s: unexpected reply from %s", what,
				     socket_path());
	return ctl_error_set(e, CTL_EXIT_FAIL, "failed", "%s: %s: %s", what, socket_path(),
			     strerror(-err));
}

/* One request, one reply, nothing printed. -1 when *reply holds an {"ok":true} reply,
 * else the exit code with e filled in. */
static int request_quiet(json_t *req, json_t **reply, const char *what, struct ctl_error *e)
{
	struct admin_conn *c;
	int err;

	*reply = NULL;
	err = admin_conn_open(socket_path(), g.timeout_ms, &c);
	if (err) {
		json_decref(req);
		return down_or_fail(err, what, e);
	}
	err = admin_conn_call(c, req, reply, g.timeout_ms, NULL, NULL);
	admin_conn_close(c);
	json_decref(req);
	if (err)
		return down_or_fail(err, what, e);
	if (!json_is_true(json_object_get(*reply, "ok"))) {
		json_t *je = json_object_get(*reply, "error");
		const char *code = json_string_value(json_object_get(je, "code"));
		const char *msg = json_string_value(json_object_get(je, "message"));

		/* The daemon's code is kept for programs ("forbidden", "not_found", ...). */
		ctl_error_set(e, CTL_EXIT_FAIL, "failed", "%s: %s: %s", what, code ? code : "error",
			      msg ? msg : "failed");
		e->code = NULL;
		if (code)
			snprintf(e->code_buf, sizeof(e->code_buf), "%s", code);
		json_decref(*reply);
		*reply = NULL;
		return CTL_EXIT_FAIL;
	}
	return -1;
}

int ctl_daemon_status(json_t **status)
{
	json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = NULL;
	struct admin_conn *c;
	int err;

	*status = NULL;
	err = admin_conn_open(socket_path(), g.timeout_ms, &c);
	if (!err) {
		err = admin_conn_call(c, req, &reply, g.timeout_ms, NULL, NULL);
		admin_conn_close(c);
	}
	json_decref(req);
	if (err)
		return err;
	*status = json_incref(json_object_get(reply, "status"));
	json_decref(reply);
	return *status ? 0 : -EPROTO;
}

const char *ctl_admin_socket(void)
{
	return socket_path();
}

static int ctl_error_print(int exit, const struct ctl_error *e)
{
	return ctl_fail_code(exit, e->code ? e->code : e->code_buf[0] ? e->code_buf : "failed", "%s",
			     e->message);
}

/* The same, with the error printed (a JSON object under --json). */
int ctl_request(json_t *req, json_t **reply, const char *what)
{
	struct ctl_error e = {0};
	int rc = request_quiet(req, reply, what, &e);

	if (rc < 0)
		return rc;
	return ctl_error_print(rc, &e);
}

void ctl_timeout_at_least(int ms)
{
	if (g.timeout_ms < ms)
		g.timeout_ms = ms;
}

void ctl_print_json(json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
	fputc('\n', stdout);
}

/* ---- formatting ------------------------------------------------------------------------ */

static const char *fmt_duration(double s, char *buf, size_t n)
{
	long t = (long)s;

	if (t < 60)
		snprintf(buf, n, "%lds", t);
	else if (t < 3600)
		snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
	else if (t < 86400)
		snprintf(buf, n, "%ldh%02ldm", t / 3600, t % 3600 / 60);
	else
		snprintf(buf, n, "%ldd%02ldh", t / 86400, t % 86400 / 3600);
	return buf;
}

static const char *fmt_bytes(json_int_t b, char *buf, size_t n)
{
	static const char *const units[] = {"B", "K", "M", "G", "T", "P"};
	double v = (double)b;
	unsigned u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, n, "%lld%s", (long long)b, units[u]);
	else
		snprintf(buf, n, "%.1f%s", v, units[u]);
	return buf;
}

static const char *str_or(json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s && *s ? s : dflt;
}

/*
 * A string of the daemon's reply, as a terminal may show it. Values that came from clients
 * or processes arrive sanitised already (admin JSON); what is left, and anything a daemon
 * of another version sent raw, is escaped here (base/sanitize.h) in the same spelling.
 */
static char *safe(const char *s, char *buf, size_t n)
{
	sanitize_str(buf, n, s, SANITIZE_TERMINAL_ESCAPED, NULL);
	return buf;
}

static char *safe_or(json_t *o, const char *key, const char *dflt, char *buf, size_t n)
{
	return safe(str_or(o, key, dflt), buf, n);
}

/* s cut in place to at most width bytes, never inside a UTF-8 character (a column cut by
 * bytes would otherwise print half of one). Returns s. */
static char *fit(char *s, size_t width)
{
	size_t n = strlen(s);

	if (n <= width)
		return s;
	while (width > 0 && ((unsigned char)s[width] & 0xc0) == 0x80)
		width--;
	s[width] = '\0';
	return s;
}

/* "psql[4242]" for a steered local client, else the client address. */
static char *who(json_t *s, char *buf, size_t n)
{
	json_t *p = json_object_get(s, "process");
	char text[96];

	if (json_is_object(p))
		snprintf(buf, n, "%s[%lld]", safe_or(p, "comm", "?", text, sizeof(text)),
			 (long long)json_integer_value(json_object_get(p, "pid")));
	else
		snprintf(buf, n, "%s", safe_or(s, "client", "-", text, sizeof(text)));
	return buf;
}

/* ---- commands -------------------------------------------------------------------------- */

static void print_status_human(json_t *st)
{
	const char *key;
	json_t *v;
	char dur[32], text[1024];

	printf("pgwardend: running, pid %lld, up %s", (long long)json_integer_value(
			   json_object_get(st, "pid")),
	       fmt_duration(json_number_value(json_object_get(st, "uptime_seconds")), dur,
			    sizeof(dur)));
	if (json_is_string(json_object_get(st, "version")))
		printf(", version %s", safe_or(st, "version", "?", text, sizeof(text)));
	printf("\n");
	json_object_foreach(st, key, v) {
		if (!strcmp(key, "pid") || !strcmp(key, "uptime_seconds") || !strcmp(key, "version") ||
		    !strcmp(key, "steering"))
			continue;
		if (json_is_string(v))
			printf("  %-22s %s\n", key, safe(json_string_value(v), text, sizeof(text)));
		else if (json_is_integer(v))
			printf("  %-22s %lld\n", key, (long long)json_integer_value(v));
		else if (json_is_real(v))
			printf("  %-22s %.3f\n", key, json_real_value(v));
		else if (json_is_boolean(v))
			printf("  %-22s %s\n", key, json_is_true(v) ? "yes" : "no");
		else if (!json_is_null(v)) {
			char *t = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);

			printf("  %-22s %s\n", key, safe(t ? t : "?", text, sizeof(text)));
			free(t);
		}
	}
}

static int cmd_status(int argc, char **argv)
{
	const char *instance = NULL;
	struct cmd_flags f = {.instance = &instance};
	json_t *reply = NULL, *out, *err = NULL;
	bool json;
	int rc, steer_rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH] [--instance NAME]", &f, false);
	if (rc >= 0)
		return rc;
	json = g.json;
	/* Under --json the daemon's error goes into the one document printed below. */
	{
		struct ctl_error e = {0};

		rc = request_quiet(json_pack("{s:s}", "cmd", "status"), &reply, "status", &e);
		if (rc >= 0 && json)
			err = json_pack("{s:s, s:s}", "code",
					e.code ? e.code : e.code_buf[0] ? e.code_buf : "failed",
					"message", e.message);
		else if (rc >= 0)
			ctl_error_print(rc, &e);
	}
	/* The steering instance: --instance, else the one the running daemon reads (ask it,
	 * not this shell's environment), else $PGWARDEN_INSTANCE or the default. */
	if (!instance && reply)
		instance = json_string_value(
			json_object_get(json_object_get(reply, "status"), "steer_instance"));
	if (json) {
		out = json_object();
		json_object_set(out, "daemon", reply ? json_object_get(reply, "status") : json_null());
		if (err)
			json_object_set_new(out, "daemon_error", err);
		steer_rc = ctl_status_steering(instance, true, out);
		ctl_print_json(out);
		json_decref(out);
	} else {
		if (reply)
			print_status_human(json_object_get(reply, "status"));
		steer_rc = ctl_status_steering(instance, false, NULL);
	}
	json_decref(reply);
	if (rc >= 0)
		return rc;
	return steer_rc;
}

/*
 * A listing with no operands (sessions, locks): asks the daemon for cmd and finds the array
 * under the same name in its reply; with --json prints that array. -1 when the caller goes
 * on to print *list for a person (then *reply is the caller's to release), else the exit
 * code.
 */
static int ctl_listing(int argc, char **argv, const char *cmd, json_t **reply, json_t **list)
{
	int rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH]", NULL, false);
	if (rc >= 0)
		return rc;
	rc = ctl_request(json_pack("{s:s}", "cmd", cmd), reply, cmd);
	if (rc >= 0)
		return rc;
	*list = json_object_get(*reply, cmd);
	if (!json_is_array(*list)) {
		json_decref(*reply);
		return ctl_fail(CTL_EXIT_FAIL, "%s: reply has no list", cmd);
	}
	if (g.json) {
		ctl_print_json(*list);
		json_decref(*reply);
		return CTL_EXIT_OK;
	}
	return -1;
}

static int cmd_sessions(int argc, char **argv)
{
	json_t *reply, *arr, *s;
	size_t i;
	int rc;

	rc = ctl_listing(argc, argv, "sessions", &reply, &arr);
	if (rc >= 0)
		return rc;
	printf("%-12s %-22s %-10s %-10s %-8s %-4s %7s %7s %7s %7s  %s\n", "ID", "PROCESS/CLIENT",
	       "USER", "DATABASE", "STATE", "TLS", "AGE", "STMTS", "IN", "OUT", "LAST STATEMENT");
	json_array_foreach(arr, i, s) {
		char w[128], age[32], in[16], out[16], id[48], user[256], db[256], state[48];
		char stmt[256];

		printf("%-12s %-22s %-10s %-10s %-8s %-4s %7s %7lld %7s %7s  ",
		       fit(safe_or(s, "id", "?", id, sizeof(id)), 12),
		       fit(who(s, w, sizeof(w)), 22),
		       fit(safe_or(s, "user", "-", user, sizeof(user)), 10),
		       fit(safe_or(s, "database", "-", db, sizeof(db)), 10),
		       fit(safe_or(s, "state", "?", state, sizeof(state)), 8),
		       json_is_object(json_object_get(s, "tls")) ? "yes" : "no",
		       fmt_duration(json_number_value(json_object_get(s, "duration_seconds")), age,
				    sizeof(age)),
		       (long long)json_integer_value(json_object_get(s, "statements")),
		       fmt_bytes(json_integer_value(json_object_get(s, "bytes_from_client")), in,
				 sizeof(in)),
		       fmt_bytes(json_integer_value(json_object_get(s, "bytes_from_server")), out,
				 sizeof(out)));
		/* The statement on one line (its newlines are escapes now), 60 bytes of it. */
		printf("%s\n", fit(safe_or(s, "last_statement", "", stmt, sizeof(stmt)), 60));
	}
	json_decref(reply);
	return CTL_EXIT_OK;
}

/* A full id, or a unique prefix of at least 4 hex digits resolved against the listing. */
static int resolve_session(const char *arg, char out[SESSION_ID_HEXLEN + 1])
{
	size_t n = strlen(arg), i;
	json_t *reply, *s;
	int rc, matches = 0;

	if (n < 4 || n > SESSION_ID_HEXLEN || strspn(arg, "0123456789abcdefABCDEF") != n)
		return ctl_fail(CTL_EXIT_USAGE,
			    "kill: \"%s\" is not a session id (32 hex digits, or a unique prefix "
			    "of at least 4)",
			    arg);
	if (n == SESSION_ID_HEXLEN) {
		memcpy(out, arg, n + 1);
		return -1;
	}
	rc = ctl_request(json_pack("{s:s}", "cmd", "sessions"), &reply, "kill");
	if (rc >= 0)
		return rc;
	json_array_foreach(json_object_get(reply, "sessions"), i, s) {
		const char *id = str_or(s, "id", "");

		if (strlen(id) == SESSION_ID_HEXLEN && strncasecmp(id, arg, n) == 0) {
			memcpy(out, id, SESSION_ID_HEXLEN + 1);
			matches++;
		}
	}
	json_decref(reply);
	if (matches == 0)
		return ctl_fail(CTL_EXIT_FAIL, "kill: no live session starts with %s", arg);
	if (matches > 1)
		return ctl_fail(CTL_EXIT_FAIL, "kill: %d sessions start with %s; give more digits",
			    matches, arg);
	return -1;
}

/* What the daemon said it did, in one line. */
static void print_kill_human(const char *id, bool cancel_only, json_t *reply)
{
	json_t *pid = json_object_get(reply, "backend_pid");
	json_t *fwd = json_object_get(reply, "forwarded_to_pid");
	char backend[64] = "";

	if (json_is_integer(fwd)) {
		printf("session %s: not in this pgwardend; passed to the previous one (pid %lld), "
		       "which is still draining and ends it if it has it\n",
		       id, (long long)json_integer_value(fwd));
		return;
	}
	if (json_is_integer(pid))
		snprintf(backend, sizeof(backend), " (backend pid %lld)",
			 (long long)json_integer_value(pid));
	if (json_is_true(json_object_get(reply, "server_cancel")))
		printf("session %s: cancelling its running statement on the server%s", id, backend);
	else
		printf("session %s: no statement to cancel (the server has not given it a key yet)",
		       id);
	if (cancel_only)
		printf("; the session stays open (the client gets SQLSTATE 57014)\n");
	else
		printf("; terminating the session (the client gets SQLSTATE 57P01, the server "
		       "ends the backend and releases its locks)\n");
}

static int cmd_kill(int argc, char **argv)
{
	char id[SESSION_ID_HEXLEN + 1];
	bool cancel_only = false;
	struct cmd_flags f = {.cancel = &cancel_only};
	json_t *reply;
	int rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH] [--cancel] SESSION", &f, true);
	if (rc >= 0)
		return rc;
	if (argc - optind != 1)
		return ctl_fail(CTL_EXIT_USAGE, "kill: expected one session id (usage: pgwardenctl kill "
					    "[--cancel] SESSION)");
	rc = resolve_session(argv[optind], id);
	if (rc >= 0)
		return rc;
	rc = ctl_request(json_pack("{s:s, s:s, s:s}", "cmd", "kill", "session", id, "mode",
			       cancel_only ? "cancel" : "terminate"),
		     &reply, "kill");
	if (rc >= 0)
		return rc;
	if (g.json)
		ctl_print_json(reply);
	else
		print_kill_human(id, cancel_only, reply);
	json_decref(reply);
	return CTL_EXIT_OK;
}

static int cmd_reload(int argc, char **argv)
{
	json_t *reply;
	int rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH]", NULL, false);
	if (rc >= 0)
		return rc;
	rc = ctl_request(json_pack("{s:s}", "cmd", "reload"), &reply, "reload");
	if (rc >= 0)
		return rc;
	if (g.json)
		ctl_print_json(reply);
	else if (json_is_true(json_object_get(reply, "restarted")))
		printf("restarted seamlessly: pid %lld serves now, pid %lld drains its sessions\n",
		       (long long)json_integer_value(json_object_get(reply, "pid")),
		       (long long)json_integer_value(json_object_get(reply, "previous_pid")));
	else if (json_is_string(json_object_get(reply, "restart_needed_for")))
		printf("configuration reloaded; new sessions use it (%s changes only with "
		       "pgwardenctl restart)\n",
		       json_string_value(json_object_get(reply, "restart_needed_for")));
	else
		printf("configuration reloaded; new sessions use it\n");
	json_decref(reply);
	return CTL_EXIT_OK;
}

/* Forget a user's or an address's failed logins and lock (auth lockout). */
static int cmd_unlock(int argc, char **argv)
{
	json_t *reply;
	int rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH] USER|ADDRESS", NULL, true);
	if (rc >= 0)
		return rc;
	if (argc - optind != 1)
		return ctl_fail(CTL_EXIT_USAGE, "unlock: expected one user or address (usage: "
					    "pgwardenctl unlock USER|ADDRESS)");
	rc = ctl_request(json_pack("{s:s, s:s}", "cmd", "unlock", "name", argv[optind]), &reply,
		     "unlock");
	if (rc >= 0)
		return rc;
	if (g.json) {
		ctl_print_json(reply);
	} else {
		bool user = json_is_true(json_object_get(reply, "user"));
		bool source = json_is_true(json_object_get(reply, "source"));

		printf("%s: unlocked as %s%s%s\n", argv[optind], user ? "a user" : "",
		       user && source ? " and " : "", source ? "an address" : "");
	}
	json_decref(reply);
	return CTL_EXIT_OK;
}

/* Users and addresses with failed logins or a lock. */
static int cmd_locks(int argc, char **argv)
{
	json_t *reply, *arr, *e;
	size_t i;
	int rc;

	rc = ctl_listing(argc, argv, "locks", &reply, &arr);
	if (rc >= 0)
		return rc;
	printf("%-7s %-40s %8s %-7s %s\n", "KIND", "NAME", "FAILURES", "LOCKED", "UNLOCKS IN");
	json_array_foreach(arr, i, e) {
		char dur[32], name[4 * ADMIN_NAME_MAX + 1];
		bool locked = json_is_true(json_object_get(e, "locked"));

		/* A user name is whatever a client sent: safe for the terminal first. */
		sanitize_str(name, sizeof(name), str_or(e, "name", "?"), SANITIZE_TERMINAL, NULL);
		printf("%-7s %-40s %8lld %-7s ", str_or(e, "kind", "?"), name,
		       (long long)json_integer_value(json_object_get(e, "failures")),
		       locked ? "yes" : "no");
		printf("%s\n", locked ? fmt_duration((double)json_integer_value(json_object_get(
								   e, "locked_seconds")),
							   dur, sizeof(dur)) :
					 "-");
	}
	json_decref(reply);
	return CTL_EXIT_OK;
}

static int cmd_restart(int argc, char **argv)
{
	json_t *reply;
	int rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH]", NULL, false);
	if (rc >= 0)
		return rc;
	/* The successor has up to 30 s to start; wait a little longer than it may take. */
	if (g.timeout_ms < 45000)
		g.timeout_ms = 45000;
	rc = ctl_request(json_pack("{s:s}", "cmd", "restart"), &reply, "restart");
	if (rc >= 0)
		return rc;
	if (g.json)
		ctl_print_json(reply);
	else
		printf("restarted seamlessly: pid %lld serves now, pid %lld drains its sessions\n",
		       (long long)json_integer_value(json_object_get(reply, "pid")),
		       (long long)json_integer_value(json_object_get(reply, "previous_pid")));
	json_decref(reply);
	return CTL_EXIT_OK;
}

static int cmd_metrics(int argc, char **argv)
{
	json_t *reply;
	int rc;

	rc = parse_common(argc, argv, "[--socket PATH]", NULL, false);
	if (rc >= 0)
		return rc;
	rc = ctl_request(json_pack("{s:s}", "cmd", "metrics"), &reply, "metrics");
	if (rc >= 0)
		return rc;
	if (g.json)
		ctl_print_json(reply);
	else
		fputs(json_string_value(json_object_get(reply, "metrics")) ?: "", stdout);
	json_decref(reply);
	return CTL_EXIT_OK;
}

/* Stream session events as JSON lines until interrupted (or --count events). */
static int cmd_events(int argc, char **argv)
{
	struct admin_conn *c;
	json_t *req, *reply = NULL, *ev;
	long count = 0, seen = 0;
	struct cmd_flags f = {.count = &count};
	struct ctl_error e = {0};
	char buf[512];
	int rc, err;

	rc = parse_common(argc, argv, "[--count N] [--socket PATH]", &f, false);
	if (rc >= 0)
		return rc;
	err = admin_conn_open(socket_path(), g.timeout_ms, &c);
	if (err)
		return ctl_error_print(down_or_fail(err, "events", &e), &e);
	req = json_pack("{s:s}", "cmd", "subscribe");
	err = admin_conn_call(c, req, &reply, g.timeout_ms, NULL, NULL);
	json_decref(req);
	if (err) {
		admin_conn_close(c);
		return ctl_error_print(down_or_fail(err, "events", &e), &e);
	}
	if (admin_reply_error(reply, buf, sizeof(buf))) {
		json_decref(reply);
		admin_conn_close(c);
		return ctl_fail_code(CTL_EXIT_FAIL, "failed", "events: %s", buf);
	}
	json_decref(reply);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (!count || seen < count) {
		err = admin_conn_next(c, &ev, 3600 * 1000);
		if (err == -ETIMEDOUT)
			continue;
		if (err) {
			admin_conn_close(c);
			return ctl_error_print(down_or_fail(err, "events", &e), &e);
		}
		if (json_object_get(ev, "event")) {
			json_dumpf(ev, stdout, JSON_COMPACT | JSON_SORT_KEYS);
			fputc('\n', stdout);
			seen++;
		}
		json_decref(ev);
	}
	admin_conn_close(c);
	return CTL_EXIT_OK;
}

static int cmd_help(int argc, char **argv);

/* THE command table. */
static const struct ctl_command commands[] = {
	{"status", "[--json] [--instance N]", "daemon and steering status", cmd_status},
	{"sessions", "[--json]", "list live sessions", cmd_sessions},
	{"kill", "[--cancel] SESSION", "cancel the session's statement on the server and end it "
	 "(57P01); --cancel: only the statement", cmd_kill},
	{"reload", "", "reload pgwardend's configuration (restarts seamlessly after an upgrade)",
	 cmd_reload},
	{"restart", "", "hand the listeners to a new pgwardend; this one drains", cmd_restart},
	{"metrics", "", "the Prometheus metrics, from the admin socket", cmd_metrics},
	{"events", "[--count N]", "stream session events as JSON lines", cmd_events},
	{"unlock", "USER|ADDRESS", "end a login lockout of a user or a source address", cmd_unlock},
	{"locks", "[--json]", "users and addresses with failed logins or a lock", cmd_locks},
	{"attach", "[options]", "steer connections to protected ports through pgwarden", ctl_attach},
	{"detach", "[options]", "remove steering; traffic goes straight to PostgreSQL", ctl_detach},
	{"audit", "keygen|verify ...", "make an audit signing key; verify an audit trail", ctl_audit},
	{"policy", "check|explain FILE ...", "validate a policy file; explain its decision", ctl_policy},
	{"evidence", "sign|verify|collect ...", "sign, verify or collect a compliance evidence report",
	 ctl_evidence},
	{"help", "", "this list", cmd_help},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: pgwardenctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND [ARGS]\n\n"
		     "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-9s %-22s %s\n", commands[i].name, commands[i].synopsis,
			commands[i].summary);
	fprintf(out, "\nThe admin socket is --socket, else $PGWARDEN_ADMIN_SOCKET, else %s.\n"
		     "Exit status: 0 ok, 1 failed, 2 usage, 3 pgwardend unreachable (audit verify: 4,\n"
		     "not all of the trail is signed; evidence verify: 4, no key vouches for it).\n",
		admin_client_default_path());
}

static int cmd_help(int argc, char **argv)
{
	usage(stdout);
	return CTL_EXIT_OK;
}

int main(int argc, char **argv)
{
	int c, rc;

	setvbuf(stderr, NULL, _IOLBF, 0);
	/* Global flags before the command; the command parses its own after it. */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+hV", (const struct option[]){
					{"socket", required_argument, NULL, OPT_SOCKET},
					{"json", no_argument, NULL, OPT_JSON},
					{"timeout", required_argument, NULL, OPT_TIMEOUT},
					{"help", no_argument, NULL, 'h'},
					{"version", no_argument, NULL, 'V'},
					{NULL, 0, NULL, 0}},
				NULL)) != -1) {
		rc = global_flag(c);
		if (rc != GLOBAL_FLAG_NOT_MINE) {
			if (rc >= 0)
				return rc;
			continue;
		}
		switch (c) {
		case 'h':
			usage(stdout);
			return CTL_EXIT_OK;
		case 'V':
			printf("pgwardenctl %s (commit %s, admin protocol %d)\n", pgwarden_version,
			       pgwarden_commit, ADMIN_PROTOCOL_VERSION);
			return CTL_EXIT_OK;
		default:
			ctl_fail(CTL_EXIT_USAGE, "unknown option \"%s\"", argv[optind - 1]);
			usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return CTL_EXIT_USAGE;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[optind], commands[i].name) == 0) {
			char **sub = argv + optind;
			int subc = argc - optind;

			optind = 0; /* each command parses its own argv from the start (0: full
				     * getopt reset in glibc) */
			return commands[i].run(subc, sub);
		}
	}
	return ctl_fail(CTL_EXIT_USAGE, "unknown command \"%s\" (try pgwardenctl help)", argv[optind]);
}
