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

int ctl_fail(int code, const char *fmt, ...)
{
	va_list ap;

	fputs("pgwardenctl: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	return code;
}

/* ---- common flags --------------------------------------------------------------------- */

enum { OPT_SOCKET = 1000, OPT_JSON, OPT_TIMEOUT, OPT_COUNT };

static const struct option common_opts[] = {
	{"socket", required_argument, NULL, OPT_SOCKET},
	{"json", no_argument, NULL, OPT_JSON},
	{"timeout", required_argument, NULL, OPT_TIMEOUT},
	{"count", required_argument, NULL, OPT_COUNT},
	{"help", no_argument, NULL, 'h'},
	{NULL, 0, NULL, 0},
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
static int parse_common(int argc, char **argv, const char *synopsis, long *count,
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
			if (!count || parse_positive(optarg, 1000000000, count))
				return ctl_fail(CTL_EXIT_USAGE, "%s: unexpected or bad --count", argv[0]);
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

static int down_or_fail(int err, const char *what)
{
	if (err == -EACCES || err == -EPERM)
		return ctl_fail(CTL_EXIT_FAIL, "%s: permission denied on %s (the admin socket is root-only)",
			    what, socket_path());
	if (err == -ENOENT || err == -ECONNREFUSED || err == -ENOTDIR)
		return ctl_fail(CTL_EXIT_DOWN, "%s: pgwardend is not running (no admin socket at %s)",
			    what, socket_path());
	if (err == -ETIMEDOUT)
		return ctl_fail(CTL_EXIT_DOWN, "%s: pgwardend did not answer within %d s on %s", what,
			    g.timeout_ms / 1000, socket_path());
	if (err == -EPIPE || err == -ECONNRESET)
		return ctl_fail(CTL_EXIT_DOWN, "%s: pgwardend closed the admin connection on %s", what,
			    socket_path());
	if (err == -EPROTO)
		return ctl_fail(CTL_EXIT_FAIL, "%s: unexpected reply from %s", what, socket_path());
	return ctl_fail(CTL_EXIT_FAIL, "%s: %s: %s", what, socket_path(), strerror(-err));
}

/* One request, one reply. On failure the error is printed and the exit code returned;
 * -1 means *reply holds an {"ok":true} reply. */
static int request(json_t *req, json_t **reply, const char *what)
{
	struct admin_conn *c;
	char buf[512];
	int err;

	*reply = NULL;
	err = admin_conn_open(socket_path(), g.timeout_ms, &c);
	if (err) {
		json_decref(req);
		return down_or_fail(err, what);
	}
	err = admin_conn_call(c, req, reply, g.timeout_ms, NULL, NULL);
	admin_conn_close(c);
	json_decref(req);
	if (err)
		return down_or_fail(err, what);
	if (admin_reply_error(*reply, buf, sizeof(buf))) {
		json_decref(*reply);
		*reply = NULL;
		return ctl_fail(CTL_EXIT_FAIL, "%s: %s", what, buf);
	}
	return -1;
}

static void print_json(json_t *j)
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

/* "psql[4242]" for a steered local client, else the client address. */
static const char *who(json_t *s, char *buf, size_t n)
{
	json_t *p = json_object_get(s, "process");

	if (json_is_object(p))
		snprintf(buf, n, "%s[%lld]", str_or(p, "comm", "?"),
			 (long long)json_integer_value(json_object_get(p, "pid")));
	else
		snprintf(buf, n, "%s", str_or(s, "client", "-"));
	return buf;
}

/* Statement text on one line: control characters become spaces. */
static void put_oneline(const char *s, int width)
{
	for (int i = 0; s && s[i] && i < width; i++)
		putchar((unsigned char)s[i] < 0x20 ? ' ' : s[i]);
}

/* ---- commands -------------------------------------------------------------------------- */

static void print_status_human(json_t *st)
{
	const char *key;
	json_t *v;
	char dur[32];

	printf("pgwardend: running, pid %lld, up %s", (long long)json_integer_value(
			   json_object_get(st, "pid")),
	       fmt_duration(json_number_value(json_object_get(st, "uptime_seconds")), dur,
			    sizeof(dur)));
	if (json_is_string(json_object_get(st, "version")))
		printf(", version %s", str_or(st, "version", "?"));
	printf("\n");
	json_object_foreach(st, key, v) {
		if (!strcmp(key, "pid") || !strcmp(key, "uptime_seconds") || !strcmp(key, "version") ||
		    !strcmp(key, "steering"))
			continue;
		if (json_is_string(v))
			printf("  %-22s %s\n", key, json_string_value(v));
		else if (json_is_integer(v))
			printf("  %-22s %lld\n", key, (long long)json_integer_value(v));
		else if (json_is_real(v))
			printf("  %-22s %.3f\n", key, json_real_value(v));
		else if (json_is_boolean(v))
			printf("  %-22s %s\n", key, json_is_true(v) ? "yes" : "no");
		else if (!json_is_null(v)) {
			char *t = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);

			printf("  %-22s %s\n", key, t ? t : "?");
			free(t);
		}
	}
}

static int cmd_status(int argc, char **argv)
{
	json_t *reply = NULL, *out;
	int rc, steer_rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH]", NULL, false);
	if (rc >= 0)
		return rc;
	rc = request(json_pack("{s:s}", "cmd", "status"), &reply, "status");
	if (g.json) {
		out = json_object();
		json_object_set(out, "daemon", reply ? json_object_get(reply, "status") : json_null());
		steer_rc = ctl_status_steering(true, out);
		print_json(out);
		json_decref(out);
	} else {
		if (reply)
			print_status_human(json_object_get(reply, "status"));
		steer_rc = ctl_status_steering(false, NULL);
	}
	json_decref(reply);
	if (rc >= 0)
		return rc;
	return steer_rc;
}

static int cmd_sessions(int argc, char **argv)
{
	json_t *reply, *arr, *s;
	size_t i;
	int rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH]", NULL, false);
	if (rc >= 0)
		return rc;
	rc = request(json_pack("{s:s}", "cmd", "sessions"), &reply, "sessions");
	if (rc >= 0)
		return rc;
	arr = json_object_get(reply, "sessions");
	if (!json_is_array(arr)) {
		json_decref(reply);
		return ctl_fail(CTL_EXIT_FAIL, "sessions: reply has no session list");
	}
	if (g.json) {
		print_json(arr);
		json_decref(reply);
		return CTL_EXIT_OK;
	}
	printf("%-12s %-22s %-10s %-10s %-8s %-4s %7s %7s %7s %7s  %s\n", "ID", "PROCESS/CLIENT",
	       "USER", "DATABASE", "STATE", "TLS", "AGE", "STMTS", "IN", "OUT", "LAST STATEMENT");
	json_array_foreach(arr, i, s) {
		char w[64], age[32], in[16], out[16];

		printf("%-12.12s %-22.22s %-10.10s %-10.10s %-8.8s %-4s %7s %7lld %7s %7s  ",
		       str_or(s, "id", "?"), who(s, w, sizeof(w)), str_or(s, "user", "-"),
		       str_or(s, "database", "-"), str_or(s, "state", "?"),
		       json_is_object(json_object_get(s, "tls")) ? "yes" : "no",
		       fmt_duration(json_number_value(json_object_get(s, "duration_seconds")), age,
				    sizeof(age)),
		       (long long)json_integer_value(json_object_get(s, "statements")),
		       fmt_bytes(json_integer_value(json_object_get(s, "bytes_from_client")), in,
				 sizeof(in)),
		       fmt_bytes(json_integer_value(json_object_get(s, "bytes_from_server")), out,
				 sizeof(out)));
		put_oneline(str_or(s, "last_statement", ""), 60);
		putchar('\n');
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
	rc = request(json_pack("{s:s}", "cmd", "sessions"), &reply, "kill");
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

static int cmd_kill(int argc, char **argv)
{
	char id[SESSION_ID_HEXLEN + 1];
	json_t *reply;
	int rc;

	rc = parse_common(argc, argv, "[--json] [--socket PATH] SESSION", NULL, true);
	if (rc >= 0)
		return rc;
	if (argc - optind != 1)
		return ctl_fail(CTL_EXIT_USAGE, "kill: expected one session id (usage: pgwardenctl kill "
					    "SESSION)");
	rc = resolve_session(argv[optind], id);
	if (rc >= 0)
		return rc;
	rc = request(json_pack("{s:s, s:s}", "cmd", "kill", "session", id), &reply, "kill");
	if (rc >= 0)
		return rc;
	if (g.json)
		print_json(reply);
	else
		printf("session %s: terminating (the client gets SQLSTATE 57P01)\n", id);
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
	rc = request(json_pack("{s:s}", "cmd", "reload"), &reply, "reload");
	if (rc >= 0)
		return rc;
	if (g.json)
		print_json(reply);
	else
		printf("configuration reloaded; new sessions use it\n");
	json_decref(reply);
	return CTL_EXIT_OK;
}

/* Stream session events as JSON lines until interrupted (or --count events). */
static int cmd_events(int argc, char **argv)
{
	struct admin_conn *c;
	json_t *req, *reply = NULL, *ev;
	long count = 0, seen = 0;
	char buf[512];
	int rc, err;

	rc = parse_common(argc, argv, "[--count N] [--socket PATH]", &count, false);
	if (rc >= 0)
		return rc;
	err = admin_conn_open(socket_path(), g.timeout_ms, &c);
	if (err)
		return down_or_fail(err, "events");
	req = json_pack("{s:s}", "cmd", "subscribe");
	err = admin_conn_call(c, req, &reply, g.timeout_ms, NULL, NULL);
	json_decref(req);
	if (err) {
		admin_conn_close(c);
		return down_or_fail(err, "events");
	}
	if (admin_reply_error(reply, buf, sizeof(buf))) {
		json_decref(reply);
		admin_conn_close(c);
		return ctl_fail(CTL_EXIT_FAIL, "events: %s", buf);
	}
	json_decref(reply);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (!count || seen < count) {
		err = admin_conn_next(c, &ev, 3600 * 1000);
		if (err == -ETIMEDOUT)
			continue;
		if (err) {
			admin_conn_close(c);
			return down_or_fail(err, "events");
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
	{"status", "[--json]", "daemon and steering status", cmd_status},
	{"sessions", "[--json]", "list live sessions", cmd_sessions},
	{"kill", "[--json] SESSION", "end a session (the client gets SQLSTATE 57P01)", cmd_kill},
	{"reload", "", "reload pgwardend's configuration", cmd_reload},
	{"events", "[--count N]", "stream session events as JSON lines", cmd_events},
	{"attach", "[options]", "steer connections to protected ports through pgwarden", ctl_attach},
	{"detach", "[options]", "remove steering; traffic goes straight to PostgreSQL", ctl_detach},
	{"help", "", "this list", cmd_help},
};

static void usage(FILE *out)
{
	fprintf(out, "usage: pgwardenctl [--socket PATH] [--json] [--timeout SECONDS] COMMAND [ARGS]\n\n"
		     "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-9s %-18s %s\n", commands[i].name, commands[i].synopsis,
			commands[i].summary);
	fprintf(out, "\nThe admin socket is --socket, else $PGWARDEN_ADMIN_SOCKET, else %s.\n"
		     "Exit status: 0 ok, 1 failed, 2 usage, 3 pgwardend unreachable.\n",
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
