/*
 * steer_cmds: pgwardenctl attach, detach and the steering half of status. Thin: flags into
 * struct steer_opts, one call into userspace/steer, one line on error. The instance name
 * (pin dir /sys/fs/bpf/NAME, nft table inet NAME) is --instance, else $PGWARDEN_INSTANCE,
 * else "pgwarden"; tests use their own so they never touch a real attach.
 */
#include "ctl.h"

#include "base/log.h"
#include "base/sanitize.h"
#include "steer/steer.h"
#include "tls/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *default_instance(void)
{
	const char *e = getenv("PGWARDEN_INSTANCE");

	return e && *e ? e : STEER_DEFAULT_INSTANCE;
}


static int parse_u32(const char *s, uint32_t *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 0);
	if (errno || *end || end == s || v > 0xffffffffUL)
		return -EINVAL;
	*out = (uint32_t)v;
	return 0;
}

enum {
	OPT_TPROXY_PORT = 256,
	OPT_UNIX_SOCKET,
	OPT_UNIX_RELAY,
	OPT_RELAY_MARK,
	OPT_TPROXY_MARK,
	OPT_ROUTE_TABLE,
	OPT_INSTANCE,
	OPT_NO_RELAY_CHECK,
	OPT_WAIT,
	OPT_HELP,
	OPT_GATE_QUEUE,
	OPT_NO_TLS_CHECK,
	OPT_DAEMON_GROUP,
	OPT_ORIGIN_MAX,
};

static const char attach_usage[] =
	"usage: pgwardenctl attach --port P [--port P]... --relay ADDR [--relay ADDR] [options]\n"
	"       pgwardenctl attach --fail-open ... -- PROGRAM [ARGS]...\n"
	"\n"
	"Steer connections to protected PostgreSQL ports through pgwardend.\n"
	"\n"
	"  --port P              protected port (repeatable)\n"
	"  --address A           protect only this address, IPv4 or IPv6 (repeatable; default: any)\n"
	"  --relay ADDR          where pgwardend listens for steered clients, one per family\n"
	"                        (127.0.0.1:643, [::1]:643: a port below 1024, which only root may\n"
	"                        take); steered clients reach only a listener pgwardend\n"
	"                        registered there; a protected destination of a family without\n"
	"                        a relay is refused\n"
	"  --cgroup PATH         cgroup v2 directory whose processes are steered (default: the\n"
	"                        cgroup2 root, i.e. every process)\n"
	"  --tproxy-port P       also divert remote clients (nftables TPROXY) to pgwardend's\n"
	"                        IP_TRANSPARENT listener on port P\n"
	"  --gate-queue N        admission gate: new connections from the network wait in\n"
	"                        NFQUEUE N for pgwardend's verdict (its gate.queue: N);\n"
	"                        without a reader they are dropped, or accepted with\n"
	"                        --fail-open\n"
	"  --unix-socket PATH    PostgreSQL's own Unix socket, in a directory only root and the\n"
	"                        server's user may search (refused otherwise); on kernel 6.7+\n"
	"                        its exact path is steered too (repeatable)\n"
	"  --unix-relay PATH     pgwardend's Unix listener, at the path clients use\n"
	"                        (/var/run/postgresql/.s.PGSQL.5432)\n"
	"  --fail-open           steering lives as long as PROGRAM (pgwardend), which this command\n"
	"                        becomes; default is fail-closed (pinned, survives the daemon)\n"
	"  --wait SECONDS        wait up to SECONDS for the relay to listen (default: 0) and\n"
	"                        register (at least 3 s)\n"
	"  --no-relay-check      attach without waiting for the relay: until it listens and\n"
	"                        registers, steered clients are refused\n"
	"  --origin-max N        steered connections the kernel may hold between connect() and\n"
	"                        pgwardend's accept() (default 65536); beyond that new steered\n"
	"                        connects are refused (counter refused_origin_full), never\n"
	"                        relayed unidentified; changing it needs a detach\n"
	"  --relay-mark N        SO_MARK of pgwardend's own sockets (default 0x5047)\n"
	"  --tproxy-mark N       mark of diverted packets (default 0x5048)\n"
	"  --route-table N       policy routing table for TPROXY (default 20552)\n"
	"  --instance NAME       pin dir /sys/fs/bpf/NAME and nft table inet NAME\n"
	"                        (default $PGWARDEN_INSTANCE or pgwarden)\n"
	"  --no-tls-check        attach even when the server offers TLS and pgwardend presents\n"
	"                        no certificate to clients (their TLS would break)\n"
	"  --daemon-group GROUP  the group of a pgwardend that does not run as root: it gets\n"
	"                        the two pins it writes (default: pgwarden, when that group\n"
	"                        exists; none: root only)\n"
	"\n"
	"Attach is idempotent: run again to change ports or relays in place.\n"
	"Exit: 0 attached, 1 failed (nothing left half attached), 2 bad flags, 3 relay not\n"
	"listening.\n";

static const struct option attach_opts[] = {
	{"port", required_argument, NULL, 'p'},
	{"address", required_argument, NULL, 'a'},
	{"cgroup", required_argument, NULL, 'c'},
	{"relay", required_argument, NULL, 'r'},
	{"fail-open", no_argument, NULL, 'o'},
	{"tproxy-port", required_argument, NULL, OPT_TPROXY_PORT},
	{"unix-socket", required_argument, NULL, OPT_UNIX_SOCKET},
	{"unix-relay", required_argument, NULL, OPT_UNIX_RELAY},
	{"relay-mark", required_argument, NULL, OPT_RELAY_MARK},
	{"tproxy-mark", required_argument, NULL, OPT_TPROXY_MARK},
	{"route-table", required_argument, NULL, OPT_ROUTE_TABLE},
	{"instance", required_argument, NULL, OPT_INSTANCE},
	{"no-relay-check", no_argument, NULL, OPT_NO_RELAY_CHECK},
	{"wait", required_argument, NULL, OPT_WAIT},
	{"help", no_argument, NULL, OPT_HELP},
	{"gate-queue", required_argument, NULL, OPT_GATE_QUEUE},
	{"no-tls-check", no_argument, NULL, OPT_NO_TLS_CHECK},
	{"daemon-group", required_argument, NULL, OPT_DAEMON_GROUP},
	{"origin-max", required_argument, NULL, OPT_ORIGIN_MAX},
	{NULL, 0, NULL, 0},
};

/*
 * Attach must not silently break TLS clients (docs/TLS.md). Steered clients reach pgwarden
 * instead of the server; if the server offers TLS and pgwarden presents no certificate,
 * pgwarden answers their SSLRequest with 'N': sslmode=require clients fail and prefer
 * clients fall back to plaintext. So attach asks the server first (an SSLRequest on each
 * protected port, on loopback unless --address names where; marked with the relay's mark
 * so it reaches the server even while an earlier attach steers), then asks pgwardend.
 */
#define ATTACH_PROBE_TIMEOUT_MS 3000

/* The first protected destination that offers TLS, into where (and its certificate's
 * subject, made safe for a terminal). false when none does, or none could be asked (said
 * on stderr: not checked is not the same as no). */
static bool attach_server_offers_tls(const struct steer_opts *o, char *where, size_t wn,
				     char *subject, size_t sn)
{
	for (unsigned p = 0; p < o->nports; p++) {
		struct addr cand[STEER_MAX_ADDRS + 2];
		unsigned n = 0;
		bool answered = false;
		char err[256] = "", a[ADDR_STRLEN];

		if (o->naddresses) {
			for (unsigned i = 0; i < o->naddresses; i++)
				cand[n++] = o->addresses[i];
		} else {
			(void)!addr_parse("127.0.0.1:1", &cand[n++]);
			(void)!addr_parse("[::1]:1", &cand[n++]);
		}
		for (unsigned i = 0; i < n && !answered; i++) {
			char raw[TLS_SUBJECT_MAX + 1];
			bool offers = false;
			socklen_t len;

			if (cand[i].ss.sa.sa_family == AF_INET6) {
				cand[i].ss.in6.sin6_port = htons(o->ports[p]);
				len = sizeof(cand[i].ss.in6);
			} else {
				cand[i].ss.in4.sin_port = htons(o->ports[p]);
				len = sizeof(cand[i].ss.in4);
			}
			int rc = tls_probe_server(&cand[i].ss.sa, len, o->relay_mark,
						  ATTACH_PROBE_TIMEOUT_MS, &offers, raw, sizeof(raw),
						  err, sizeof(err));

			/* Marking the probe needs CAP_NET_ADMIN: without it the attach itself is
			 * refused with the reason, and a warning here would only bury that. */
			if (rc == -EPERM)
				return false;
			if (rc)
				continue;
			answered = true;
			if (offers) {
				addr_format(&cand[i].ss.sa, where, wn);
				sanitize_str(subject, sn, raw, SANITIZE_TERMINAL, NULL);
				return true;
			}
		}
		if (!answered)
			fprintf(stderr, "pgwardenctl: attach: warning: nothing on port %u answered an "
				"SSLRequest (%s: %s); whether the server offers TLS is not checked\n",
				o->ports[p], addr_format(&cand[n - 1].ss.sa, a, sizeof(a)), err);
	}
	return false;
}

/* -1 to go on attaching, or the exit code of a refusal. exec_mode: pgwardend is the
 * program about to start (fail-open), so it is told instead and checks itself. */
static int attach_tls_check(const struct steer_opts *o, bool exec_mode)
{
	char where[ADDR_STRLEN], subject[512] = "";
	json_t *status = NULL;
	const char *cert;
	int rc;

	if (!attach_server_offers_tls(o, where, sizeof(where), subject, sizeof(subject)))
		return -1;
	if (exec_mode) {
		/* pgwardend refuses to start without a client-leg certificate when this is
		 * set; the links it would hold die with it (fail-open: straight to the server). */
		setenv("PGWARDEN_SERVER_OFFERS_TLS", where, 1);
		return -1;
	}
	rc = ctl_daemon_status(&status);
	if (rc)
		return ctl_fail(CTL_EXIT_FAIL,
				"attach: the server on %s offers TLS and pgwardend cannot be asked "
				"whether it presents a certificate to clients (%s: %s); give "
				"pgwardenctl --socket PATH, or --no-tls-check to attach anyway",
				where, ctl_admin_socket(), strerror(-rc));
	cert = json_string_value(json_object_get(json_object_get(status, "tls"),
						 "client_certificate"));
	json_decref(status);
	if (cert)
		return -1;
	return ctl_fail(CTL_EXIT_FAIL,
			"attach: the server on %s offers TLS%s%s%s but pgwardend presents no "
			"certificate to clients (tls.client.mode is disable): TLS clients would be "
			"refused or fall back to plaintext; give tls.client.cert_file and key_file "
			"the server's own (docs/TLS.md), or pass --no-tls-check",
			where, subject[0] ? " (certificate " : "", subject, subject[0] ? ")" : "");
}

/*
 * attach [--port P]... [--address A]... [--relay ADDR]... [--cgroup PATH] [--fail-open]
 *        [--tproxy-port P] [--unix-socket PATH --unix-relay PATH] [--instance NAME]
 *        [--wait SECONDS] [-- PROGRAM ARGS...]
 *
 * Fail-open hands the links to a process: with "-- PROGRAM ARGS", pgwardenctl attaches and
 * then exec()s PROGRAM (pgwardend) with the link fds inherited and listed in
 * PGWARDEN_STEER_FDS, so the steering lives exactly as long as that process. The relay check
 * is skipped there: the relay is the program about to start.
 */
int ctl_attach(int argc, char **argv)
{
	struct steer_opts o;
	struct steer_handle *h = NULL;
	char err[STEER_ERR_MAX];
	char **exec_argv = NULL;
	bool tls_check = true;
	const char *daemon_group = NULL;
	struct group *gr = NULL;
	int c, rc;

	steer_opts_init(&o);
	snprintf(o.instance, sizeof(o.instance), "%s", default_instance());
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+", attach_opts, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (o.nports >= STEER_MAX_PORTS)
				return ctl_fail(CTL_EXIT_USAGE, "at most %d --port", STEER_MAX_PORTS);
			if (steer_parse_port(optarg, &o.ports[o.nports]))
				return ctl_fail(CTL_EXIT_USAGE, "--port: expected 1-65535, got '%s'", optarg);
			o.nports++;
			break;
		case 'a':
			if (o.naddresses >= STEER_MAX_ADDRS)
				return ctl_fail(CTL_EXIT_USAGE, "at most %d --address", STEER_MAX_ADDRS);
			if (steer_parse_ip(optarg, &o.addresses[o.naddresses]))
				return ctl_fail(CTL_EXIT_USAGE, "--address: expected a numeric IPv4 or IPv6 "
					    "address, got '%s'", optarg);
			o.naddresses++;
			break;
		case 'c':
			o.cgroup = optarg;
			break;
		case 'r':
			if (o.nrelay >= 2)
				return ctl_fail(CTL_EXIT_USAGE, "at most two --relay (one IPv4, one IPv6)");
			if (addr_parse(optarg, &o.relay[o.nrelay]))
				return ctl_fail(CTL_EXIT_USAGE, "--relay: expected HOST:PORT or [V6]:PORT, got '%s'",
					    optarg);
			o.nrelay++;
			break;
		case 'o':
			o.fail_open = true;
			break;
		case OPT_TPROXY_PORT:
			if (steer_parse_port(optarg, &o.tproxy_port))
				return ctl_fail(CTL_EXIT_USAGE, "--tproxy-port: expected 1-65535, got '%s'", optarg);
			break;
		case OPT_UNIX_SOCKET:
			if (o.nunix >= STEER_MAX_UNIX)
				return ctl_fail(CTL_EXIT_USAGE, "at most %d --unix-socket", STEER_MAX_UNIX);
			o.unix_paths[o.nunix++] = optarg;
			break;
		case OPT_UNIX_RELAY:
			o.unix_relay = optarg;
			break;
		case OPT_RELAY_MARK:
			if (parse_u32(optarg, &o.relay_mark))
				return ctl_fail(CTL_EXIT_USAGE, "--relay-mark: expected a number, got '%s'", optarg);
			break;
		case OPT_TPROXY_MARK:
			if (parse_u32(optarg, &o.tproxy_mark))
				return ctl_fail(CTL_EXIT_USAGE, "--tproxy-mark: expected a number, got '%s'", optarg);
			break;
		case OPT_ROUTE_TABLE:
			/* 0 and 253-255 are the kernel's unspec, default, main and local tables. */
			if (parse_u32(optarg, &o.route_table) || o.route_table == 0 ||
			    (o.route_table >= 253 && o.route_table <= 255))
				return ctl_fail(CTL_EXIT_USAGE, "--route-table: expected a free table id "
					    "(1-252 or 256 and up), got '%s'", optarg);
			break;
		case OPT_INSTANCE:
			if (strlen(optarg) >= sizeof(o.instance))
				return ctl_fail(CTL_EXIT_USAGE, "--instance: name too long");
			snprintf(o.instance, sizeof(o.instance), "%s", optarg);
			break;
		case OPT_NO_RELAY_CHECK:
			o.check_relay = false;
			break;
		case OPT_NO_TLS_CHECK:
			tls_check = false;
			break;
		case OPT_HELP:
			fputs(attach_usage, stdout);
			return CTL_EXIT_OK;
		case OPT_GATE_QUEUE: {
			uint32_t q;

			if (parse_u32(optarg, &q) || q > 65535)
				return ctl_fail(CTL_EXIT_USAGE, "--gate-queue: expected 0-65535, got '%s'",
					    optarg);
			o.gate = true;
			o.gate_queue = (uint16_t)q;
			break;
		}
		case OPT_DAEMON_GROUP:
			daemon_group = optarg;
			break;
		case OPT_ORIGIN_MAX:
			if (parse_u32(optarg, &o.origin_max) || o.origin_max == 0 ||
			    o.origin_max > STEER_ORIGIN_MAX_LIMIT)
				return ctl_fail(CTL_EXIT_USAGE, "--origin-max: expected 1-%u, got '%s'",
					    STEER_ORIGIN_MAX_LIMIT, optarg);
			break;
		case OPT_WAIT: {
			uint32_t secs;

			if (parse_u32(optarg, &secs) || secs > 3600)
				return ctl_fail(CTL_EXIT_USAGE, "--wait: expected seconds (0-3600), got '%s'",
					    optarg);
			o.relay_wait_ms = secs * 1000;
			break;
		}
		default:
			return ctl_fail(CTL_EXIT_USAGE, "attach: unknown or incomplete option '%s'",
				    argv[optind - 1]);
		}
	}
	if (optind < argc) {
		if (strcmp(argv[optind - 1], "--") != 0)
			return ctl_fail(CTL_EXIT_USAGE, "attach: unexpected argument '%s'", argv[optind]);
		exec_argv = &argv[optind];
	}
	if (exec_argv && !o.fail_open)
		return ctl_fail(CTL_EXIT_USAGE, "attach: '-- PROGRAM' hands the links to PROGRAM and needs "
			    "--fail-open");
	if (o.fail_open && !exec_argv)
		return ctl_fail(CTL_EXIT_USAGE,
			    "attach --fail-open: the links must belong to pgwardend, which outlives this "
			    "command; run 'pgwardenctl attach --fail-open ... -- pgwardend ARGS' (or let "
			    "pgwardend attach at start)");
	if (exec_argv)
		o.check_relay = false;
	if (steer_opts_check(&o, err, sizeof(err)))
		return ctl_fail(CTL_EXIT_USAGE, "attach: %s", err);
	if (tls_check && (rc = attach_tls_check(&o, exec_argv != NULL)) >= 0)
		return rc;

	/* The packaged daemon runs as the pgwarden group: it gets the pins it writes, before
	 * the attach waits for its registration. */
	if (!exec_argv && (!daemon_group || strcmp(daemon_group, "none") != 0)) {
		gr = getgrnam(daemon_group ? daemon_group : "pgwarden");
		if (!gr && daemon_group)
			return ctl_fail(CTL_EXIT_USAGE, "attach: --daemon-group: no group \"%s\"",
					daemon_group);
		if (gr) {
			o.grant_daemon = true;
			o.daemon_gid = gr->gr_gid;
		}
	}
	rc = steer_attach(&o, o.fail_open ? &h : NULL, err, sizeof(err));
	if (rc)
		return ctl_fail(rc == -ECONNREFUSED || rc == -ETIMEDOUT ? CTL_EXIT_DOWN : CTL_EXIT_FAIL,
			    "attach: %s", err);
	if (!exec_argv) {
		printf("attached (fail-closed): instance %s%s%s\n", o.instance,
		       gr ? ", usable by group " : "", gr ? gr->gr_name : "");
		return CTL_EXIT_OK;
	}
	{
		char fds[128];

		rc = steer_handle_export_fds(h, fds, sizeof(fds));
		if (rc || setenv("PGWARDEN_STEER_FDS", fds, 1)) {
			steer_handle_close(h);
			return ctl_fail(CTL_EXIT_FAIL, "attach: cannot hand the links over: %s",
				    strerror(rc ? -rc : errno));
		}
		log_warn("steer_fail_open", "fail-open: steering lives as long as pid %d (%s)",
			 (int)getpid(), exec_argv[0]);
		execvp(exec_argv[0], exec_argv);
		rc = errno;
		steer_handle_close(h); /* detaches: nothing outlives a failed hand-over */
		return ctl_fail(CTL_EXIT_FAIL, "attach: cannot run %s: %s (steering detached)", exec_argv[0],
			    strerror(rc));
	}
}

int ctl_detach(int argc, char **argv)
{
	static const struct option opts[] = {
		{"instance", required_argument, NULL, OPT_INSTANCE},
		{"help", no_argument, NULL, OPT_HELP},
		{NULL, 0, NULL, 0},
	};
	char instance[STEER_INSTANCE_MAX], err[STEER_ERR_MAX];
	int c;

	snprintf(instance, sizeof(instance), "%s", default_instance());
	optind = 0;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+", opts, NULL)) != -1) {
		if (c == OPT_HELP) {
			fputs("usage: pgwardenctl detach [--instance NAME]\n\n"
			      "Remove every hook, pin, nft rule and route of the instance; established\n"
			      "connections are left alone. Links held by a running fail-open pgwardend\n"
			      "are detached too.\n", stdout);
			return CTL_EXIT_OK;
		}
		if (c != OPT_INSTANCE || strlen(optarg) >= sizeof(instance))
			return ctl_fail(CTL_EXIT_USAGE, "detach: unknown or bad option '%s'", argv[optind - 1]);
		snprintf(instance, sizeof(instance), "%s", optarg);
	}
	if (optind < argc)
		return ctl_fail(CTL_EXIT_USAGE, "detach: unexpected argument '%s'", argv[optind]);
	if (steer_detach(instance, err, sizeof(err)))
		return ctl_fail(CTL_EXIT_FAIL, "detach: %s", err);
	printf("detached: instance %s\n", instance);
	return CTL_EXIT_OK;
}

static void print_list(const char *label, json_t *arr)
{
	size_t i;
	json_t *v;

	printf("  %-14s", label);
	if (!json_array_size(arr))
		printf(" -");
	json_array_foreach(arr, i, v) {
		char text[512];

		/* Some lists (unix exposed) hold paths any local user may have named. */
		sanitize_str(text, sizeof(text), json_string_value(v) ? json_string_value(v) : "?",
			     SANITIZE_TERMINAL_ESCAPED, NULL);
		printf("%s%s", i ? ", " : " ", text);
	}
	printf("\n");
}

static void print_human(json_t *st)
{
	json_t *links = json_object_get(st, "links"), *v, *t = json_object_get(st, "tproxy");
	json_t *u = json_object_get(st, "unix"), *ctr = json_object_get(st, "counters");
	const char *key;
	size_t i;

	printf("steering: %s (%s), instance %s\n",
	       json_is_true(json_object_get(st, "attached")) ? "attached" : "not attached",
	       json_string_value(json_object_get(st, "mode")),
	       json_string_value(json_object_get(st, "instance")));
	if (json_object_get(st, "cgroup_id"))
		printf("  %-14s %lld\n", "cgroup id",
		       (long long)json_integer_value(json_object_get(st, "cgroup_id")));
	print_list("relay", json_object_get(st, "relay"));
	print_list("protected", json_object_get(st, "protected"));
	json_array_foreach(links, i, v) {
		json_t *held = json_object_get(v, "held_by");

		printf("  link %-9lld %s %s (prog %lld) %s", (long long)json_integer_value(
			       json_object_get(v, "link_id")),
		       json_string_value(json_object_get(v, "hook")),
		       json_string_value(json_object_get(v, "program")),
		       (long long)json_integer_value(json_object_get(v, "prog_id")),
		       json_is_true(json_object_get(v, "pinned")) ? "pinned" : "held by pid");
		if (held) {
			size_t k;
			json_t *p;

			json_array_foreach(held, k, p)
				printf("%s%lld", k ? "," : " ", (long long)json_integer_value(p));
		}
		printf("\n");
	}
	json_array_foreach(json_object_get(st, "maps"), i, v) {
		printf("  map %-15s id %lld", json_string_value(json_object_get(v, "name")),
		       (long long)json_integer_value(json_object_get(v, "id")));
		if (json_object_get(v, "entries"))
			printf(", %lld entries", (long long)json_integer_value(json_object_get(v, "entries")));
		printf("\n");
	}
	json_object_foreach(ctr, key, v)
		printf("  %-22s %lld\n", key, (long long)json_integer_value(v));
	printf("  nft table      %s: %s\n", json_string_value(json_object_get(t, "nft_table")),
	       json_is_true(json_object_get(t, "nft_table_present")) ? "present" : "absent");
	printf("  policy route   fwmark %s -> table %lld: %lld rules, %lld routes\n",
	       json_string_value(json_object_get(t, "fwmark")),
	       (long long)json_integer_value(json_object_get(t, "route_table")),
	       (long long)json_integer_value(json_object_get(t, "fwmark_rules")),
	       (long long)json_integer_value(json_object_get(t, "local_routes")));
	if (json_is_true(json_object_get(json_object_get(st, "gate"), "enabled")))
		printf("  admission gate NFQUEUE %lld\n",
		       (long long)json_integer_value(json_object_get(json_object_get(st, "gate"),
								     "queue")));
	print_list("registered", json_object_get(st, "relay_registered"));
	printf("  relay guard    %s\n",
	       json_is_true(json_object_get(json_object_get(st, "relay_guard"), "sk_lookup_attached"))
		       ? "sk_lookup: steered clients reach only the registered listeners"
	       : json_is_true(json_object_get(json_object_get(st, "relay_guard"),
					      "kernel_supports_sk_lookup"))
		       ? "not attached"
		       : "kernel without sk_lookup: the relay port's privilege is the only guard");
	printf("  unix sockets   %s\n", json_is_true(json_object_get(u, "steered")) ? "steered" :
	       json_string_value(json_object_get(u, "note")));
	print_list("unix exposed", json_object_get(u, "exposed"));
	print_list("leftovers", json_object_get(st, "leftovers"));
}

int ctl_status_steering(const char *instance, bool json, void *json_out)
{
	json_t *st = steer_status_json(instance && *instance ? instance : default_instance());

	if (!st)
		return ctl_fail(CTL_EXIT_FAIL, "status: out of memory");
	if (json_object_get(st, "error")) {
		/* Not root (a member of the daemon's admin_read_group, say): the kernel's steering
		 * state is not this user's to read. Said, not a failure of the status command. */
		bool unprivileged = geteuid() != 0;

		/* Inside a --json document the error is part of it, not a second document. */
		if (json && json_out) {
			json_object_set_new((json_t *)json_out, "steering", st);
			return unprivileged ? CTL_EXIT_OK : CTL_EXIT_FAIL;
		}
		if (unprivileged) {
			printf("steering: not visible to this user (%s)\n",
			       json_string_value(json_object_get(st, "error")));
			json_decref(st);
			return CTL_EXIT_OK;
		}
		int rc = ctl_fail(CTL_EXIT_FAIL, "status: %s",
				  json_string_value(json_object_get(st, "error")));

		json_decref(st);
		return rc;
	}
	if (json && json_out) {
		json_object_set_new((json_t *)json_out, "steering", st);
		return CTL_EXIT_OK;
	}
	if (json) {
		json_dumpf(st, stdout, JSON_INDENT(2) | JSON_SORT_KEYS);
		fputc('\n', stdout);
	} else {
		print_human(st);
	}
	json_decref(st);
	return CTL_EXIT_OK;
}
