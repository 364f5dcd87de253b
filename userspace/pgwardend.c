/*
 * pgwardend: the relay daemon's main thread.
 *
 * It owns configuration (file + flags, reload on SIGHUP or from the admin socket), signals
 * (through a signalfd, so no handler ever runs inside a worker), the process limits, the
 * admission gate's queue (when gate.queue is set: SYNs are decided here, before any worker
 * sees a connection), the service manager's notifications (READY, RELOADING, STOPPING,
 * MAINPID) and the workers' lifecycle: start, drain on SIGTERM/SIGINT, join. Workers own
 * the data path.
 *
 * Reloads and seamless restarts run on this thread only: the admin thread hands them over
 * (main_request) and waits for the outcome, so a reload never races a signal, and a
 * restart can stop this daemon's workers and its own loop the way a SIGTERM would. A
 * restart (relay/handover.h) starts the successor from the binary on disk with this
 * process's own command line, gives it the listening sockets, and drains.
 */
#include "admin/admin.h"
#include "audit/audit.h"
#include "auth/auth.h"
#include "base/clock.h"
#include "base/cpus.h"
#include "base/log.h"
#include "base/version.h"
#include "config/config.h"
#include "gate/gate.h"
#include "metrics/metrics_http.h"
#include "metrics/metrics_process.h"
#include "metrics/metrics_std.h"
#include "metrics/metrics_steer.h"
#include "relay/cancel.h"
#include "relay/backend_cancel.h"
#include "relay/conn.h"
#include "relay/guard.h"
#include "mask/mask_stage.h"
#include "mask/mask_wiring.h"
#include "policy/policy.h"
#include "relay/handover.h"
#include "relay/relay.h"
#include "relay/worker.h"
#include "service/notify.h"
#include "stage/stage.h"
#include "steer/steer_gate.h"
#include "steer/steer_origin.h"
#include "steer/steer_register.h"
#include "tls/tls.h"

#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#define RESTART_READY_TIMEOUT_MS 30000 /* for a successor to start (BPF maps, workers, ...) */

struct options {
	const char *config_path;
	bool check_only;
	/* --KEY VALUE pairs in order, re-applied over the file on every reload. */
	char **keys; /* owned */
	const char **values;
	unsigned nflags;
	/* For a seamless restart: the command line to run again, and the binary it started
	 * from (path, and identity, so a reload notices when an upgrade replaced it). */
	char **argv;
	char exe[PATH_MAX];
	dev_t exe_dev;
	ino_t exe_ino;
};

static void options_free(struct options *o)
{
	for (unsigned i = 0; i < o->nflags; i++)
		free(o->keys[i]);
	free(o->keys);
	free(o->values);
}

/*
 * The stages every session runs, in this order: the session log; policy (which admits
 * the session and judges every statement, and turns itself off per session when no
 * policy file is set); masking, after policy because it reads the rule policy matched the
 * session to and must never see a message policy refused; then the audit trail last, so
 * that it records every earlier stage's decision about a message (and what masking did to
 * its result) before it goes on.
 */
static const struct stage_ops *const pipeline_stages[] = {&sessionlog_stage, &policy_stage,
							   &mask_stage, &audit_stage};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: pgwardend [--config FILE] [--listen ADDR]... [--upstream ADDR] [--KEY VALUE]...\n"
		"       pgwardend --check-config FILE [--KEY VALUE]...\n"
		"       pgwardend --help | -V | --version\n\n"
		"Relays PostgreSQL connections between clients and a server, applying pgwarden's\n"
		"inspection stages. Flags override the file. SIGHUP reloads, SIGTERM drains.\n\n");
	fprintf(out, "stages: ");
	for (size_t i = 0; i < sizeof(pipeline_stages) / sizeof(pipeline_stages[0]); i++)
		fprintf(out, "%s%s", i ? ", " : "", pipeline_stages[i]->name);
	fprintf(out, " (in this order; audit when audit.path is set)\n\n");
	config_usage(out);
}

/* 0, 1 (exit 0 now: --help/--version), or -1 (usage error, message printed). */
static int parse_args(int argc, char **argv, struct options *o)
{
	o->argv = argv;
	o->keys = calloc((size_t)argc, sizeof(*o->keys));
	o->values = calloc((size_t)argc, sizeof(*o->values));
	if (!o->keys || !o->values) {
		fprintf(stderr, "pgwardend: out of memory\n");
		return -1;
	}
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i], *value;
		char name[128];
		const char *eq;

		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
			usage(stdout);
			return 1;
		}
		if (strcmp(arg, "--version") == 0 || strcmp(arg, "-V") == 0) {
			printf("pgwardend %s (commit %s)\n", pgwarden_version, pgwarden_commit);
			return 1;
		}
		if (strncmp(arg, "--", 2) != 0) {
			fprintf(stderr, "pgwardend: unexpected argument '%s' (try --help)\n", arg);
			return -1;
		}
		eq = strchr(arg, '=');
		if (eq) {
			snprintf(name, sizeof(name), "%.*s", (int)(eq - arg - 2), arg + 2);
			value = eq + 1;
		} else {
			snprintf(name, sizeof(name), "%s", arg + 2);
			if (strcmp(name, "check-config") != 0 && strcmp(name, "config") != 0 &&
			    !config_key_lookup(name)) {
				fprintf(stderr, "pgwardend: unknown flag '%s' (try --help)\n", arg);
				return -1;
			}
			if (i + 1 >= argc) {
				fprintf(stderr, "pgwardend: %s needs a value\n", arg);
				return -1;
			}
			value = argv[++i];
		}
		if (strcmp(name, "config") == 0 || strcmp(name, "check-config") == 0) {
			o->config_path = value;
			o->check_only |= strcmp(name, "check-config") == 0;
			continue;
		}
		if (!config_key_lookup(name)) {
			fprintf(stderr, "pgwardend: unknown flag '--%s' (try --help)\n", name);
			return -1;
		}
		/* Kept as typed, so errors name the flag the operator wrote. */
		o->keys[o->nflags] = strdup(name);
		if (!o->keys[o->nflags]) {
			fprintf(stderr, "pgwardend: out of memory\n");
			return -1;
		}
		o->values[o->nflags++] = value;
	}
	return 0;
}

/* The binary this process runs, as a path a restart can exec again. A config file path
 * that is relative is made absolute too: the successor must read the same file. */
static void options_note_exe(struct options *o)
{
	struct stat st;
	ssize_t n = readlink("/proc/self/exe", o->exe, sizeof(o->exe) - 1);

	if (n <= 0) {
		o->exe[0] = '\0';
		return;
	}
	o->exe[n] = '\0';
	/* "/usr/sbin/pgwardend (deleted)" after an upgrade replaced it under us. */
	if (n > 10 && strcmp(o->exe + n - 10, " (deleted)") == 0)
		o->exe[n - 10] = '\0';
	if (stat("/proc/self/exe", &st) == 0) {
		o->exe_dev = st.st_dev;
		o->exe_ino = st.st_ino;
	}
}

/* Has the binary on disk been replaced since we started (a package upgrade)? */
static bool exe_replaced(const struct options *o)
{
	struct stat st;

	return o->exe[0] && stat(o->exe, &st) == 0 &&
	       (st.st_dev != o->exe_dev || st.st_ino != o->exe_ino);
}

/* What the config file's bytes were when it was last read (for the audit trail). */
struct config_digest {
	uint8_t sha256[32];
	bool known;
};

/* Defaults, then the file, then the flags. NULL with a one-line message in err. dg
 * (optional) receives the digest of the file as read. */
static struct config *load_config(const struct options *o, struct config_digest *dg, char *err,
				  size_t errlen)
{
	struct config *cfg = config_new();
	struct config_digest ignored;

	if (!dg)
		dg = &ignored;
	dg->known = false;
	if (!cfg) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (o->config_path &&
	    config_load_file_sha256(cfg, o->config_path, dg->sha256, &dg->known, err, errlen))
		goto err_free;
	for (unsigned i = 0; i < o->nflags; i++) {
		char text[CONFIG_ERR_MAX];

		if (config_set(cfg, o->keys[i], o->values[i], text, sizeof(text))) {
			/* text names the key as given: "timeouts-startup: ..." */
			snprintf(err, errlen, "--%.450s", text);
			goto err_free;
		}
	}
	if (config_validate(cfg, err, errlen))
		goto err_free;
	return cfg;

err_free:
	config_unref(cfg);
	return NULL;
}

/*
 * Descriptors a configuration needs: two per session at max_connections, plus what is
 * fixed (listeners per worker, each worker's epoll and eventfd, the admin socket and its
 * clients, the metrics endpoint, BPF maps, stdio): an estimate that errs high.
 */
static uint64_t nofile_needed(const struct config *cfg, unsigned nworkers)
{
	return 2ULL * cfg->max_connections + 64 +
	       (uint64_t)nworkers * (cfg->nlisten + cfg->ntproxy_listen + 8);
}

/* Say so when the open-file limit cannot cover max_connections: past it, accept() fails
 * with EMFILE and clients wait in the kernel backlog instead of being served. */
static void check_nofile(const struct config *cfg, unsigned nworkers)
{
	struct rlimit rl;
	uint64_t need = nofile_needed(cfg, nworkers);

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= need)
		return;
	log_warn("limits", "the open-file limit (%llu) covers about %llu sessions, fewer than "
		 "max_connections (%u): raise it to at least %llu (LimitNOFILE= in the systemd "
		 "unit, ulimit -n elsewhere), or lower max_connections",
		 (unsigned long long)rl.rlim_cur,
		 (unsigned long long)(rl.rlim_cur > need - 2ULL * cfg->max_connections
					      ? (rl.rlim_cur - (need - 2ULL * cfg->max_connections)) / 2
					      : 0),
		 cfg->max_connections, (unsigned long long)need);
}

/* Say so when the secure heap, sized at start, cannot hold a TLS session on every leg of
 * max_connections (a reload raised it, or turned a leg's TLS on): past it, handshakes
 * fail with "internal error" until a restart sizes the heap again. */
static void check_tls_sessions(const struct config *cfg)
{
	uint64_t need = tls_sessions_for(cfg), have = tls_secure_heap_sessions();

	if (need <= have)
		return;
	log_warn("limits", "the secure heap holds about %llu TLS sessions at once, fewer than "
		 "the %llu that max_connections (%u) can open: TLS handshakes past it fail until "
		 "a restart (pgwardenctl restart) sizes the heap again",
		 (unsigned long long)have, (unsigned long long)need, cfg->max_connections);
}

/* PgBouncer hangs new clients silently at 1,024 descriptors; raise the soft limit to the
 * hard one and say what we got, because each session needs two. */
static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t before = rl.rlim_cur;

	rl.rlim_cur = rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
		log_warn("limits", "could not raise the open-file limit from %llu: %s",
			 (unsigned long long)before, strerror(errno));
		return;
	}
	if (rl.rlim_cur != before)
		log_info("limits", "open-file limit raised from %llu to %llu",
			 (unsigned long long)before, (unsigned long long)rl.rlim_cur);
}

/* The CPUs the workers are sized by and, with pin_workers, bound to; NULL when the affinity
 * mask cannot be read (logged), and then the online CPUs size them and nothing is pinned. */
static const struct cpus *worker_cpus(struct cpus *storage)
{
	int err = cpus_allowed(storage);

	if (!err)
		return storage;
	log_warn("start", "cannot read the CPU affinity mask (%s): workers are not pinned",
		 strerror(-err));
	return NULL;
}

/*
 * workers: 0 starts one worker per two CPUs the daemon may run on, rounded up. The relay
 * shares its host with PostgreSQL (and often the clients): on 2 CPUs one worker spent about
 * as much relay CPU per transaction as PgBouncer and two workers up to 26% more, for the same
 * throughput, with the relay at about a fifth of the saturated host's CPU time
 * (bench/levers.md, "Worker count").
 */
static unsigned worker_count(const struct config *cfg, const struct cpus *cpus)
{
	long n = cfg->workers ? (long)cfg->workers
		 : cpus      ? ((long)cpus->count + 1) / 2
			     : (sysconf(_SC_NPROCESSORS_ONLN) + 1) / 2;

	return n > 0 ? (unsigned)n : 1;
}

/*
 * The audit trail, when audit.path is set: opened by the main thread before any other
 * thread exists, closed after the workers and the admin socket are gone; the admin thread
 * only reads the pointer in between.
 */
static struct audit_trail *audit;

/*
 * The TLS snapshot sessions start with (tls/tls.h): built from the same config at start and
 * on every reload, published together with it, so a reload whose certificate files are
 * bad changes nothing. The connection core takes its reference with tls_store_acquire().
 */
static struct tls_store tls_store;

static void tls_publish_log(const struct tls_snapshot *s)
{
	static const char *const client_modes[] = {"disable", "prefer", "require"};
	static const char *const server_modes[] = {"disable", "prefer", "require", "verify-ca",
						   "verify-full"};
	struct log_line l;

	log_line_begin(&l, LOG_INFO, "tls");
	log_kv_str(&l, "client_mode", client_modes[s->client_mode]);
	if (s->client_cert_subject) {
		log_kv_str(&l, "client_certificate", s->client_cert_subject);
		log_kv_str(&l, "client_certificate_sha256", s->client_cert_fingerprint);
	}
	log_kv_str(&l, "server_mode", server_modes[s->server_mode]);
	log_kv_str(&l, "fips", tls_fips_enabled() ? "on" : "off");
	log_line_end(&l);
}

/* ---- authentication (userspace/auth/) ----
 * The runtime holds the auth.* snapshot (files loaded) and the lockout table. The
 * connection core takes a snapshot with auth_runtime_acquire() at each StartupMessage and
 * drives the observer / terminate / upstream machines (relay/conn_auth.c). */
static struct auth_runtime *daemon_auth;

static int auth_load(const struct config *cfg, char *err, size_t errlen)
{
	if (!daemon_auth)
		return auth_runtime_new(cfg, &daemon_auth, err, errlen);
	return auth_runtime_reload(daemon_auth, cfg, err, errlen);
}

/* The policy and its masking are one decision: a `mask:` entry the masking code refuses
 * refuses the file, and masking is current before the rules that name it are. */
static int accept_policy_masking(struct policy *p, char *err, size_t errlen)
{
	struct mask_policy *masking;

	if (mask_wiring_build(p, &masking, err, errlen))
		return -1;
	mask_wiring_publish(masking);
	return 0;
}

/* Publish the policy file cfg names (policy_reload logs it with its SHA-256), or none. A
 * broken file leaves the running policy in force: 0, or -1 with err set. */
static int apply_policy(const struct config *cfg, char *err, size_t errlen)
{
	struct policy *running;

	if (cfg->policy)
		return policy_reload(cfg->policy, accept_policy_masking, err, errlen);
	running = policy_acquire();
	if (running) {
		policy_unref(running);
		policy_publish(NULL);
	}
	mask_wiring_publish(NULL);
	return 0;
}

/* ---- the daemon -------------------------------------------------------------------- */

/* Work the admin thread hands to the main thread, one at a time, and waits for. */
enum main_request_kind {
	MAIN_REQ_NONE = 0,
	MAIN_REQ_RELOAD,
	MAIN_REQ_RESTART,
};

struct daemon {
	struct relay relay;
	struct options *opts;
	struct gate *gate;            /* NULL: no admission gate */
	struct admin_server *admin;
	struct metrics_http *http;
	char *steer_instance;         /* the running configuration's, for status and metrics */
	struct steer_registrar *registrar; /* the relay-port guard's listeners (steer.h) */
	unsigned registrar_listeners;
	uint32_t steer_attach_seen;   /* the attach the registrar last found (audit: steer) */
	bool retiring;                /* handed over to a successor: draining for good */
	pid_t successor;
	/* main_request: the admin thread fills it, wakes reqfd, and waits on done. */
	int reqfd;
	pthread_mutex_t req_lock;
	pthread_cond_t req_done;
	enum main_request_kind req_kind;
	bool req_finished;
	int req_rc;
	json_t *req_result;
	char req_err[CONFIG_ERR_MAX];
};

/* A reload's outcome: info when applied, error when refused (the running configuration is
 * kept; the admin socket's reply or SIGHUP's sender learns no more than this line). */
static void log_reload_result(bool ok, const char *why)
{
	if (ok)
		log_info("reload", "configuration reloaded%s%s", why ? " from " : "", why ? why : "");
	else
		log_error("reload", "keeping the running configuration: %s", why);
}

/* The configuration again, in place (sessions that start from now on use it). 0, or -1
 * with err (the running configuration is kept). Main thread. */
static int reload_in_place(struct daemon *d, struct config *cfg, struct tls_snapshot *tls,
			   json_t *result)
{
	struct relay *r = &d->relay;
	struct config *old = relay_config_acquire(r);
	const char *restart = config_restart_required(old, cfg);

	if (restart)
		log_warn("reload", "%s changed: it takes effect only after a restart "
			 "(pgwardenctl restart)", restart);
	config_unref(old);
	tls_publish_log(tls);
	tls_store_publish(&tls_store, tls);
	relay_config_publish(r, cfg);
	check_nofile(cfg, r->nworkers);
	check_tls_sessions(cfg);
	metrics_process_reload_done(true);
	log_reload_result(true, d->opts->config_path);
	if (result) {
		json_object_set_new(result, "restarted", json_false());
		if (restart)
			json_object_set_new(result, "restart_needed_for", json_string(restart));
	}
	return 0;
}

static int restart_handover(struct daemon *d, json_t *result, char *err, size_t errlen);

/*
 * SIGHUP and `pgwardenctl reload`: read the configuration again. When the binary on disk
 * is not the one running (an upgrade) or a setting that is bound at start changed, a
 * seamless restart applies it instead of a reload that could not. 0, or -1 with err.
 */
static int reload(struct daemon *d, json_t *result, char *err, size_t errlen)
{
	struct tls_snapshot *tls = NULL;
	struct config_digest dg;
	struct config *cfg, *old;
	const char *restart;
	int rc;

	notify_reloading();
	/* The whole reload is one decision: the file, its TLS files, its auth files and the
	 * policy file, checked before anything is swapped (the policy's reload publishes, so
	 * it comes after the auth files' check and before the auth runtime's swap, which then
	 * cannot fail on its files). The trail records it with the digest of what was read. */
	cfg = load_config(d->opts, &dg, err, errlen);
	if (cfg && (tls_snapshot_build(cfg, &tls, err, errlen) ||
		    auth_check_config(cfg, err, errlen) || mask_wiring_check(cfg, err, errlen) ||
		    apply_policy(cfg, err, errlen) || mask_wiring_apply(cfg, tls, err, errlen) ||
		    auth_load(cfg, err, errlen))) {
		tls_snapshot_unref(tls);
		tls = NULL;
		config_unref(cfg);
		cfg = NULL;
	}
	audit_event_reload(audit, "config", d->opts->config_path, dg.known ? dg.sha256 : NULL,
			   cfg != NULL, err);
	if (!cfg) {
		metrics_process_reload_done(false);
		log_reload_result(false, err);
		notify_ready("running; the last reload was refused (the previous configuration "
			     "is kept)");
		return -1;
	}
	old = relay_config_acquire(&d->relay);
	restart = config_restart_required(old, cfg);
	config_unref(old);
	if (exe_replaced(d->opts) || restart) {
		log_info("reload", "%s: restarting seamlessly instead",
			 restart ? "a setting bound at start changed" : "the binary was replaced");
		tls_snapshot_unref(tls);
		config_unref(cfg);
		rc = restart_handover(d, result, err, errlen);
		if (rc == 0)
			return 0; /* the successor is the service now; it said READY */
		metrics_process_reload_done(false);
		log_reload_result(false, err);
		notify_ready("running; the restart after a reload failed (still the old "
			     "process)");
		return -1;
	}
	rc = reload_in_place(d, cfg, tls, result);
	notify_ready("running");
	return rc;
}

/* ---- seamless restart (relay/handover.h) ---------------------------------------------- */

/* Every listening socket this daemon has, described for the successor. */
static struct handover_socket *collect_sockets(struct daemon *d, int metrics_fd, unsigned *n)
{
	struct relay *r = &d->relay;
	unsigned cap = 2 + r->nworkers * (2 * CONFIG_MAX_LISTEN + 1), k = 0;
	struct handover_socket *s = calloc(cap, sizeof(*s));

	if (!s)
		return NULL;
	for (unsigned i = 0; i < r->nworkers; i++) {
		const struct worker *w = r->workers[i];

		for (unsigned j = 0; j < w->nlisteners; j++) {
			const struct worker_listener *l = &w->listeners[j];

			if (l->fd < 0 || l->unix_socket)
				continue;
			s[k].kind = l->transparent ? HANDOVER_TPROXY : HANDOVER_LISTEN;
			s[k].index = (uint16_t)w->id;
			s[k].fd = l->fd;
			s[k].addr = l->addr;
			k++;
		}
	}
	if (r->unix_listener.fd >= 0) {
		s[k].kind = HANDOVER_UNIX;
		s[k].fd = r->unix_listener.fd;
		snprintf(s[k].path, sizeof(s[k].path), "%s", r->unix_listener.path);
		k++;
	}
	if (metrics_fd >= 0) {
		s[k].kind = HANDOVER_METRICS;
		s[k].fd = metrics_fd;
		s[k].addr.len = sizeof(s[k].addr.ss);
		if (getsockname(metrics_fd, &s[k].addr.ss.sa, &s[k].addr.len) == 0)
			k++;
	}
	*n = k;
	return s;
}

/* After a failed handover: serve metrics again on the socket we kept, reopen the gate. */
static void restart_undo(struct daemon *d, int metrics_fd)
{
	char err[CONFIG_ERR_MAX];
	struct config *cfg = relay_config_acquire(&d->relay);

	if (metrics_fd >= 0) {
		d->http = metrics_http_adopt(d->relay.metrics, metrics_fd, err, sizeof(err));
		if (!d->http) {
			log_error("restart", "%s", err);
			close(metrics_fd);
		}
	}
	if (d->gate && gate_reopen(d->gate, cfg, err, sizeof(err)))
		log_error("restart", "the admission gate's queue could not be bound again: %s", err);
	config_unref(cfg);
}

/* Stop accepting, and let this daemon's own sessions finish within restart_drain. */
static void retire(struct daemon *d, pid_t successor)
{
	struct relay *r = &d->relay;
	struct config *cfg = relay_config_acquire(r), *mine = config_dup(cfg);

	/* The workers drain by the running snapshot's timeouts.drain: publish one whose drain
	 * is restart_drain (a private copy; nothing else changes). */
	if (mine) {
		mine->drain_timeout_ms = cfg->restart_drain_ms;
		relay_config_publish(r, mine);
	}
	config_unref(cfg);
	/* The Unix listener's socket file is the successor's now (same inode): never remove
	 * it at exit. */
	r->unix_listener.dev = 0;
	r->unix_listener.ino = 0;
	d->retiring = true;
	d->successor = successor;
	__atomic_store_n(&r->draining, true, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < r->nworkers; i++)
		worker_post(r->workers[i], WORKER_CMD_DRAIN);
}

static int restart_handover(struct daemon *d, json_t *result, char *err, size_t errlen)
{
	struct relay *r = &d->relay;
	struct handover_socket *socks;
	struct handover_plan plan = {0};
	int metrics_fd = -1, rc;
	unsigned nsocks = 0;
	pid_t child;
	char status[96];

	if (d->retiring || __atomic_load_n(&r->draining, __ATOMIC_ACQUIRE)) {
		snprintf(err, errlen, "restart: this pgwardend is already stopping");
		return -1;
	}
	if (!d->opts->exe[0]) {
		snprintf(err, errlen, "restart: cannot tell which binary this process runs");
		return -1;
	}
	notify_status("restarting: starting a new pgwardend");
	/* Released for the successor: scrapes wait in the metrics socket's backlog, SYNs for
	 * the gate are dropped and retried by their clients a second later. */
	if (d->http) {
		metrics_fd = metrics_http_release(d->http);
		d->http = NULL;
		if (metrics_fd < 0)
			log_warn("restart", "the metrics socket could not be handed over (%s): the "
				 "new pgwardend binds its own", strerror(-metrics_fd));
	}
	if (d->gate)
		gate_release(d->gate);
	socks = collect_sockets(d, metrics_fd, &nsocks);
	if (!socks) {
		snprintf(err, errlen, "restart: out of memory");
		restart_undo(d, metrics_fd);
		return -1;
	}
	plan.exe = d->opts->exe;
	plan.argv = d->opts->argv;
	plan.sockets = socks;
	plan.nsockets = nsocks;
	plan.keep_fds = getenv("PGWARDEN_STEER_FDS");
	plan.timeout_ms = RESTART_READY_TIMEOUT_MS;
	rc = handover_start(&plan, &child, err, errlen);
	free(socks);
	if (rc) {
		log_error("restart", "%s; this pgwardend carries on", err);
		restart_undo(d, metrics_fd);
		return -1;
	}
	if (metrics_fd >= 0)
		close(metrics_fd); /* the successor serves it now */
	snprintf(status, sizeof(status), "handed over to pid %d; draining", (int)child);
	notify_main_pid(child, status);
	log_info("restart", "pid %d took over the listening sockets; this pgwardend (pid %d) "
		 "accepts nothing more and lets its sessions finish", (int)child, (int)getpid());
	retire(d, child);
	if (result) {
		json_object_set_new(result, "restarted", json_true());
		json_object_set_new(result, "pid", json_integer(child));
		json_object_set_new(result, "previous_pid", json_integer(getpid()));
	}
	return 0;
}

/* ---- admin thread → main thread -------------------------------------------------- */

/* Run kind on the main thread and wait for it. 0, or -1 with err. */
static int main_request(struct daemon *d, enum main_request_kind kind, json_t *result,
			char *err, size_t errlen)
{
	uint64_t one = 1;
	int rc;

	pthread_mutex_lock(&d->req_lock);
	d->req_kind = kind;
	d->req_finished = false;
	d->req_result = result;
	d->req_err[0] = '\0';
	if (write(d->reqfd, &one, sizeof(one)) != sizeof(one)) {
		d->req_kind = MAIN_REQ_NONE;
		pthread_mutex_unlock(&d->req_lock);
		snprintf(err, errlen, "cannot reach the main thread: %s", strerror(errno));
		return -1;
	}
	while (!d->req_finished)
		pthread_cond_wait(&d->req_done, &d->req_lock);
	rc = d->req_rc;
	snprintf(err, errlen, "%s", d->req_err);
	d->req_kind = MAIN_REQ_NONE;
	pthread_mutex_unlock(&d->req_lock);
	return rc;
}

static void main_request_run(struct daemon *d)
{
	uint64_t n;
	enum main_request_kind kind;
	json_t *result;
	char err[CONFIG_ERR_MAX] = "";
	int rc = -1;

	if (read(d->reqfd, &n, sizeof(n)) < 0)
		return;
	pthread_mutex_lock(&d->req_lock);
	kind = d->req_kind;
	result = d->req_result;
	pthread_mutex_unlock(&d->req_lock);
	if (kind == MAIN_REQ_RELOAD)
		rc = reload(d, result, err, sizeof(err));
	else if (kind == MAIN_REQ_RESTART)
		rc = restart_handover(d, result, err, sizeof(err));
	else
		return;
	pthread_mutex_lock(&d->req_lock);
	d->req_rc = rc;
	snprintf(d->req_err, sizeof(d->req_err), "%s", err);
	d->req_finished = true;
	pthread_cond_broadcast(&d->req_done);
	pthread_mutex_unlock(&d->req_lock);
}

/* The loop ended with a request pending: its waiter must not wait for ever (the admin
 * thread is joined next). */
static void main_request_abort(struct daemon *d)
{
	pthread_mutex_lock(&d->req_lock);
	if (d->req_kind != MAIN_REQ_NONE && !d->req_finished) {
		d->req_rc = -1;
		snprintf(d->req_err, sizeof(d->req_err), "pgwardend is stopping");
		d->req_finished = true;
		pthread_cond_broadcast(&d->req_done);
	}
	pthread_mutex_unlock(&d->req_lock);
}

/* ---- admin socket callbacks (admin thread) ---- */

static int admin_sessions_cb(void *ctx, json_t *arr)
{
	struct relay *r = &((struct daemon *)ctx)->relay;
	uint64_t now = clock_mono_ns();

	for (unsigned i = 0; i < r->nworkers; i++) {
		struct worker *w = r->workers[i];

		pthread_mutex_lock(&w->lock);
		for (struct conn *c = w->conns; c; c = c->next) {
			if (!__atomic_load_n(&c->session_started, __ATOMIC_ACQUIRE))
				continue;
			if (json_array_append_new(arr, conn_admin_json(c, now))) {
				pthread_mutex_unlock(&w->lock);
				return -ENOMEM;
			}
		}
		pthread_mutex_unlock(&w->lock);
	}
	return 0;
}

/* What a kill will do on the server side, for its reply: the backend's pid, and whether
 * the server gave the session a key to cancel with. false when no worker has id. */
static bool kill_preview(struct relay *r, const char *id, json_t *result)
{
	for (unsigned i = 0; i < r->nworkers; i++) {
		struct worker *w = r->workers[i];

		pthread_mutex_lock(&w->lock);
		for (struct conn *c = w->conns; c; c = c->next) {
			if (strcmp(c->session.id_hex, id) != 0)
				continue;
			if (result) {
				json_object_set_new(result, "backend_pid",
						    c->session.backend_pid
							    ? json_integer(c->session.backend_pid)
							    : json_null());
				json_object_set_new(result, "server_cancel",
						    json_boolean(c->cancel_handle != NULL));
			}
			pthread_mutex_unlock(&w->lock);
			return true;
		}
		pthread_mutex_unlock(&w->lock);
	}
	return false;
}

/* A kill on this daemon's own workers: 0, -ENOENT, -ENOSPC. Also what a successor's
 * forwarded kill runs (main thread). */
static int kill_local(void *ctx, const char *id, enum admin_kill_mode mode)
{
	struct relay *r = &((struct daemon *)ctx)->relay;

	for (unsigned i = 0; i < r->nworkers; i++) {
		int err = worker_post_kill(r->workers[i], id, mode);

		if (err != -ENOENT)
			return err;
	}
	return -ENOENT;
}

static int admin_kill_cb(void *ctx, const char *id, enum admin_kill_mode mode, json_t *result)
{
	struct daemon *d = ctx;
	int err;

	kill_preview(&d->relay, id, result);
	err = kill_local(ctx, id, mode);
	audit_event_kill(audit, id, "admin socket", err == 0);
	/* Not ours: perhaps a session the pgwardend we replaced is still draining. */
	if (err == -ENOENT && handover_forward_kill(id, mode)) {
		json_object_set_new(result, "forwarded_to_pid",
				    json_integer(handover_predecessor_pid()));
		return 0;
	}
	return err;
}

static int admin_reload_cb(void *ctx, json_t *result, char *err, size_t n)
{
	return main_request(ctx, MAIN_REQ_RELOAD, result, err, n);
}

static int admin_restart_cb(void *ctx, json_t *result, char *err, size_t n)
{
	return main_request(ctx, MAIN_REQ_RESTART, result, err, n);
}

static int admin_metrics_cb(void *ctx, char **text)
{
	size_t len;

	*text = metrics_render_string(((struct daemon *)ctx)->relay.metrics, &len);
	return *text ? 0 : -ENOMEM;
}

/* Where the running configuration listens and forwards, as status shows it. */
static void status_config(struct relay *r, const struct options *o, json_t *obj)
{
	struct config *cfg = relay_config_acquire(r);
	json_t *listen = json_array();
	char text[ADDR_STRLEN];

	for (unsigned i = 0; listen && i < cfg->nlisten; i++)
		json_array_append_new(listen, json_string(addr_format(&cfg->listen[i].ss.sa, text,
								      sizeof(text))));
	json_object_set_new(obj, "listen", listen ? listen : json_null());
	json_object_set_new(obj, "upstream",
			    json_string(addr_format(&cfg->upstream.ss.sa, text, sizeof(text))));
	json_object_set_new(obj, "unix_listen",
			    cfg->unix_listen ? json_string(cfg->unix_listen) : json_null());
	json_object_set_new(obj, "unix_upstream",
			    cfg->unix_upstream ? json_string(cfg->unix_upstream) : json_null());
	json_object_set_new(obj, "config", o->config_path ? json_string(o->config_path) : json_null());
	json_object_set_new(obj, "max_connections", json_integer(cfg->max_connections));
	config_unref(cfg);
}

/* The policy in force (what sessions are judged by now), for status and evidence collect. */
static json_t *status_policy(void)
{
	struct policy *p = policy_acquire();
	json_t *o;

	if (!p)
		return json_null();
	o = json_pack("{s:s, s:s, s:I, s:I}", "file", p->path ? p->path : "", "sha256",
		      p->sha256_hex, "rules", (json_int_t)p->nrules, "generation",
		      (json_int_t)p->generation);
	policy_unref(p);
	return o ? o : json_null();
}

/* What the running TLS snapshot does, for status (and pgwardenctl attach's check). */
static json_t *status_tls(void)
{
	static const char *const client_modes[] = {"disable", "prefer", "require"};
	static const char *const verify_modes[] = {"none", "optional", "required"};
	static const char *const server_modes[] = {"disable", "prefer", "require", "verify-ca",
						   "verify-full"};
	struct tls_snapshot *s = tls_store_acquire(&tls_store);
	json_t *o;

	if (!s)
		return json_null();
	o = json_pack("{s:s, s:s, s:s, s:b}", "client_mode", client_modes[s->client_mode],
		      "client_verify", verify_modes[s->client_verify], "server_mode",
		      server_modes[s->server_mode], "fips", tls_fips_enabled());
	if (o && s->client_cert_subject) {
		json_object_set_new(o, "client_certificate", json_string(s->client_cert_subject));
		json_object_set_new(o, "client_certificate_sha256",
				    json_string(s->client_cert_fingerprint));
	}
	if (o)
		json_object_set_new(o, "loaded_unix_ms",
				    json_integer((json_int_t)(s->built_wall_ns / 1000000)));
	tls_snapshot_unref(s);
	return o ? o : json_null();
}

/* Server connections kept between sessions (server_reuse.*), summed over the workers. */
static json_t *status_server_reuse(struct relay *r)
{
	struct config *cfg = relay_config_acquire(r);
	struct server_pool_stats sp = {0};
	uint32_t max_idle = cfg->server_reuse_max_idle;
	json_t *o;

	config_unref(cfg);
	for (unsigned i = 0; i < r->nworkers; i++)
		server_pool_stats_add(&r->workers[i]->servers, &sp);
	o = json_pack("{s:I, s:I, s:I, s:I, s:I}", "max_idle_per_worker", (json_int_t)max_idle,
		      "kept", (json_int_t)sp.kept, "reused", (json_int_t)sp.reused, "closed",
		      (json_int_t)sp.closed, "held", (json_int_t)sp.held);
	return o ? o : json_null();
}

static int admin_status_cb(void *ctx, json_t *obj)
{
	struct daemon *d = ctx;
	struct relay *r = &d->relay;
	uint64_t refused = 0;

	for (unsigned i = 0; i < MREFUSE_COUNT; i++)
		refused += metrics_value(r->metrics, r->mstd.refused, i);
	json_object_set_new(obj, "version", json_string(pgwarden_version));
	json_object_set_new(obj, "commit", json_string(pgwarden_commit));
	json_object_set_new(obj, "workers", json_integer(r->nworkers));
	/* The steering attach whose maps this daemon reads (pgwardenctl status shows that
	 * one, not whatever its own environment names). */
	json_object_set_new(obj, "steer_instance", json_string(d->steer_instance));
	json_object_set_new(obj, "log_target", json_string(log_target_to_str(log_target_active())));
	status_config(r, d->opts, obj);
	json_object_set_new(obj, "sessions",
			    json_integer(__atomic_load_n(&r->connections, __ATOMIC_RELAXED)));
	json_object_set_new(obj, "connections_accepted",
			    json_integer((json_int_t)metrics_value(r->metrics, r->mstd.accepted, 0)));
	json_object_set_new(obj, "connections_refused", json_integer((json_int_t)refused));
	json_object_set_new(obj, "connections_logging_in", json_integer(guard_prelogin(r->guard)));
	json_object_set_new(obj, "errors", json_integer((json_int_t)metrics_value(
						   r->metrics, r->mstd.statement_errors, 0)));
	json_object_set_new(obj, "fips", json_boolean(tls_fips_enabled()));
	json_object_set_new(obj, "tls", status_tls());
	json_object_set_new(obj, "policy", status_policy());
	/* Does the server see the real client? (steered and TPROXY'd sessions) */
	json_object_set_new(obj, "upstream_from_client_address",
			    json_integer((json_int_t)__atomic_load_n(&r->upstream_from_client,
								     __ATOMIC_RELAXED)));
	json_object_set_new(obj, "upstream_from_pgwarden_address",
			    json_integer((json_int_t)__atomic_load_n(&r->upstream_from_relay,
								     __ATOMIC_RELAXED)));
	const char *why = __atomic_load_n(&r->upstream_from_relay_why, __ATOMIC_RELAXED);

	if (why)
		json_object_set_new(obj, "upstream_from_pgwarden_because", json_string(why));
	json_object_set_new(obj, "server_reuse", status_server_reuse(r));
	if (audit) {
		struct audit_trail_stats st;

		audit_trail_stats(audit, &st);
		json_object_set_new(obj, "audit",
				    json_pack("{s:I, s:I, s:I, s:I, s:I, s:b}", "seq", (json_int_t)st.seq,
					      "records", (json_int_t)st.records, "lost",
					      (json_int_t)st.lost, "queued_bytes",
					      (json_int_t)st.queued_bytes, "mirror_dropped",
					      (json_int_t)st.mirror_dropped, "failing", st.failing));
	} else {
		json_object_set_new(obj, "audit", json_null());
	}
	/* The relay-port guard: how many listeners the hooks may deliver steered clients to. */
	json_object_set_new(obj, "steering_listeners_registered",
			    json_integer(steer_registrar_registered(d->registrar)));
	json_object_set_new(obj, "steering_listeners", json_integer(d->registrar_listeners));
	json_object_set_new(obj, "previous_pid",
			    handover_predecessor_fd() >= 0 ? json_integer(handover_predecessor_pid())
							  : json_null());
	if (d->gate) {
		struct config *cfg = relay_config_acquire(r);
		json_t *gate = gate_status_json(d->gate, cfg);

		config_unref(cfg);
		if (!gate)
			return -ENOMEM;
		json_object_set_new(obj, "gate", gate);
	} else {
		json_object_set_new(obj, "gate", json_null());
	}
	return 0;
}

static int admin_unlock_cb(void *ctx, const char *name)
{
	int cleared = lockout_unlock(auth_runtime_lockout(daemon_auth), name);

	return (cleared & LOCKOUT_CLEARED_USER ? ADMIN_UNLOCKED_USER : 0) |
	       (cleared & LOCKOUT_CLEARED_SOURCE ? ADMIN_UNLOCKED_SOURCE : 0);
}

static void admin_lock_entry(const struct lockout_entry *e, void *arg)
{
	json_array_append_new((json_t *)arg,
			      json_pack("{s:s, s:o, s:I, s:b, s:I}", "kind",
					e->is_source ? "source" : "user", "name",
					admin_json_text(e->name, ADMIN_NAME_MAX), "failures",
					(json_int_t)e->failures, "locked", e->locked,
					"locked_seconds", (json_int_t)((e->locked_for_ms + 999) / 1000)));
}

static int admin_locks_cb(void *ctx, json_t *arr)
{
	lockout_each(auth_runtime_lockout(daemon_auth), clock_mono_ns() / NSEC_PER_MSEC,
		     admin_lock_entry, arr);
	return 0;
}

/* The online explain (admin thread: it may wait on the server up to
 * mask.catalog_timeout; no worker waits for it). */
static int admin_explain_cb(void *ctx, const char *user, const char *database, const char *sql,
			    json_t *result, char *err, size_t n)
{
	enum { EXPLAIN_TEXT_MAX = 256 * 1024 }; /* 1664 columns of at most ~150 bytes each */
	struct mask_wiring_explained ex;
	char *text = malloc(EXPLAIN_TEXT_MAX), *line, *save = NULL;
	json_t *columns = json_array(), *deny = json_null();
	int len;

	if (!text || !columns) {
		free(text);
		json_decref(columns);
		return -ENOMEM;
	}
	len = mask_wiring_explain(user, database, sql, &ex, text, EXPLAIN_TEXT_MAX, err, n);
	/* Every line is valid UTF-8 (the result names were sanitised by mask_explain()); a line
	 * "deny\t<why>" says the profile refuses the statement. */
	for (line = len > 0 ? strtok_r(text, "\n", &save) : NULL; line;
	     line = strtok_r(NULL, "\n", &save)) {
		if (!strncmp(line, "deny\t", 5)) {
			json_decref(deny);
			deny = json_string(line + 5);
		} else if (json_array_append_new(columns, json_string(line))) {
			len = -ENOMEM;
		}
	}
	free(text);
	if (len < 0 || !deny) {
		json_decref(columns);
		json_decref(deny);
		return len < 0 ? len : -ENOMEM;
	}
	json_object_set_new(result, "rule", admin_json_text(ex.rule, sizeof(ex.rule)));
	json_object_set_new(result, "masks", json_boolean(ex.masks));
	json_object_set_new(result, "columns", columns);
	json_object_set_new(result, "deny", deny);
	return 0;
}

static const struct admin_ops daemon_admin_ops = {
	.explain = admin_explain_cb,
	.sessions = admin_sessions_cb,
	.kill = admin_kill_cb,
	.reload = admin_reload_cb,
	.status = admin_status_cb,
	.metrics = admin_metrics_cb,
	.restart = admin_restart_cb,
	.unlock = admin_unlock_cb,
	.locks = admin_locks_cb,
};

/* ---- start ------------------------------------------------------------------------- */

/* pin: the CPUs to bind the workers to in turn, or NULL to leave them unbound. */
static int start_workers(struct relay *r, unsigned n, const struct config *cfg,
			 const struct cpus *pin)
{
	int err;

	r->workers = calloc(n, sizeof(*r->workers));
	if (!r->workers)
		return -ENOMEM;
	for (unsigned i = 0; i < n; i++) {
		err = worker_create(&r->workers[i], i, r, cfg);
		if (err)
			return err;
		r->nworkers++;
	}
	for (unsigned i = 0; i < n; i++) {
		err = worker_start(r->workers[i], pin ? cpus_nth(pin, i) : -1);
		if (err) {
			log_error("start", "cannot start worker %u: %s", i, strerror(-err));
			/* Workers already running must be told to stop before we return. */
			for (unsigned j = 0; j < i; j++)
				worker_post(r->workers[j], WORKER_CMD_STOP);
			for (unsigned j = 0; j < i; j++)
				worker_join(r->workers[j]);
			return err;
		}
	}
	return 0;
}

/*
 * The relay-port guard: the steering hooks hand steered clients only to listeners this
 * daemon registered (steer_registrar). One socket per listen address is enough: the
 * kernel spreads over the SO_REUSEPORT group of every worker. Transparent and Unix
 * listeners are not reached by the TCP rewrite and are not registered. 0 or -1 (logged).
 */
static int start_registrar(struct daemon *d, const struct config *cfg)
{
	struct relay *r = &d->relay;
	struct worker *w = r->nworkers ? r->workers[0] : NULL;
	int rc = steer_registrar_new(cfg->steer_instance, r->steer_shared, &d->registrar);

	if (rc) {
		log_error("start", "steering registration: %s", strerror(-rc));
		return -1;
	}
	for (unsigned i = 0; w && i < w->nlisteners; i++) {
		const struct worker_listener *l = &w->listeners[i];

		if (l->transparent || l->unix_socket || l->fd < 0)
			continue;
		rc = steer_registrar_add(d->registrar, l->fd, &l->addr);
		if (rc) {
			log_error("start", "steering registration: %s", strerror(-rc));
			return -1;
		}
		d->registrar_listeners++;
	}
	return 0;
}

/*
 * Steering attached, detached or replaced since the registrar last looked (it looks every
 * second, on the main thread): recorded in the audit trail. The attach is another
 * process's (pgwardenctl attach, systemd's ExecStartPost), so this is where the daemon
 * sees it; an attach and detach both inside one look leave no trace.
 */
static void audit_steer_change(struct daemon *d)
{
	uint32_t id = steer_registrar_attach_id(d->registrar);
	char detail[64];

	if (id == d->steer_attach_seen)
		return;
	if (d->steer_attach_seen) {
		snprintf(detail, sizeof(detail), "relay socket map %u gone", d->steer_attach_seen);
		audit_event_steer(audit, "detach", d->steer_instance, detail);
	}
	if (id) {
		snprintf(detail, sizeof(detail), "relay socket map %u", id);
		audit_event_steer(audit, "attach", d->steer_instance, detail);
	}
	d->steer_attach_seen = id;
}

static void log_started(const struct config *cfg, const struct relay *r)
{
	struct log_line l;
	char text[ADDR_STRLEN];

	/* Written whatever log_level says (notice): when and as what the service started is
	 * part of the trail an auditor reads. */
	log_trail_begin(&l, "started", false);
	log_kv_str(&l, "version", pgwarden_version);
	log_kv_str(&l, "commit", pgwarden_commit);
	for (unsigned i = 0; i < cfg->nlisten; i++)
		log_kv_str(&l, "listen", addr_format(&cfg->listen[i].ss.sa, text, sizeof(text)));
	if (cfg->unix_listen)
		log_kv_str(&l, "unix_listen", cfg->unix_listen);
	log_kv_str(&l, "upstream", addr_format(&cfg->upstream.ss.sa, text, sizeof(text)));
	if (cfg->unix_upstream)
		log_kv_str(&l, "unix_upstream", cfg->unix_upstream);
	log_kv_u64(&l, "workers", r->nworkers);
	for (unsigned i = 0; i < r->nworkers; i++)
		if (r->workers[i]->cpu >= 0)
			log_kv_u64(&l, "worker_cpu", (uint64_t)r->workers[i]->cpu);
	log_kv_u64(&l, "pid", (uint64_t)getpid());
	if (handover_is_successor())
		log_kv_u64(&l, "previous_pid", (uint64_t)handover_predecessor_pid());
	log_line_end(&l);
}

/* The relay's Unix listener: the predecessor's socket when it handed one over for this
 * path, else a new one. 0 or -errno (logged). */
static int open_unix_listener(struct relay *r, const char *path)
{
	int fd = handover_take_unix(path);
	struct stat st;

	if (fd < 0)
		return relay_unix_listener_open(r, path);
	r->unix_listener.path = strdup(path);
	if (!r->unix_listener.path || stat(path, &st) != 0) {
		log_error("listen", "cannot take over unix:%s: %s", path,
			  r->unix_listener.path ? strerror(errno) : "out of memory");
		close(fd);
		free(r->unix_listener.path);
		r->unix_listener.path = NULL;
		return -EIO;
	}
	r->unix_listener.dev = st.st_dev;
	r->unix_listener.ino = st.st_ino;
	r->unix_listener.fd = fd;
	return 0;
}

static struct metrics_http *start_metrics(struct relay *r, const char *listen, char *err,
					  size_t errlen)
{
	int fd = handover_take_metrics();
	struct metrics_http *h = NULL;

	if (fd >= 0) {
		h = metrics_http_adopt(r->metrics, fd, err, errlen);
		if (!h)
			close(fd);
	}
	return h ? h : metrics_http_start(r->metrics, listen, err, errlen);
}

static struct admin_server *start_admin(struct daemon *d, const struct config *cfg, char *err,
					size_t errlen)
{
	struct admin_server_config acfg = {.path = cfg->admin_socket,
					   .take_over = handover_is_successor()};
	struct admin_server *admin = NULL;

	if (cfg->admin_read_group) {
		struct group *g = getgrnam(cfg->admin_read_group);

		if (!g) {
			snprintf(err, errlen, "admin_read_group: there is no group \"%s\"",
				 cfg->admin_read_group);
			return NULL;
		}
		acfg.read_group = true;
		acfg.read_gid = g->gr_gid;
	}
	if (admin_server_start(&acfg, &daemon_admin_ops, d, &admin, err, errlen))
		return NULL;
	return admin;
}

/* ---- the main loop ------------------------------------------------------------------- */

static bool workers_finished(const struct relay *r)
{
	for (unsigned i = 0; i < r->nworkers; i++)
		if (!worker_finished(r->workers[i]))
			return false;
	return true;
}

/* The gate's turn after a wake-up: verdicts for the queued SYNs (with the limits of the
 * current snapshot) when the queue is readable, then the refusal summary if one is due.
 * 0, or -1 when the queue failed. *timeout becomes the summary's poll timeout. */
static int gate_turn(struct gate *g, struct relay *r, short revents, int *timeout)
{
	int err = 0;

	if (revents) {
		struct config *cfg = relay_config_acquire(r);

		err = gate_dispatch(g, cfg);
		config_unref(cfg);
	}
	*timeout = gate_log_due(g, clock_mono_ns());
	if (err) {
		/* The kernel keeps queueing and, unread, drops: fail-closed (or bypassed, if
		 * the attach was fail-open) until a restart binds the queue again. */
		log_error("gate", "reading the admission gate's queue failed: %s", strerror(-err));
		return -1;
	}
	return 0;
}

/* The shorter of two poll timeouts (-1: none). */
static int timeout_min(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

static void start_drain(struct daemon *d, const char *why)
{
	struct relay *r = &d->relay;

	__atomic_store_n(&r->draining, true, __ATOMIC_RELEASE);
	log_info("shutdown", "%s: no new connections; draining sessions", why);
	notify_stopping("draining sessions");
	for (unsigned i = 0; i < r->nworkers; i++)
		worker_post(r->workers[i], WORKER_CMD_DRAIN);
}

static void handover_turn(struct daemon *d, int fd)
{
	struct relay *r = &d->relay;
	struct config *cfg = relay_config_acquire(r);
	uint32_t mark = r->nworkers ? steer_origin_relay_mark(r->workers[0]->steer) : 0;

	handover_channel_event(fd, r->cancels, mark, cfg->connect_timeout_ms, kill_local, d);
	config_unref(cfg);
}

/* Handle signals, requests from the admin thread, the admission gate's queue and the
 * handover channels until a drain has finished: 0, or -1 when the signal source or the
 * gate's queue failed. */
static int main_loop(struct daemon *d, int sigfd)
{
	struct relay *r = &d->relay;
	int gate_timeout = -1, register_timeout = -1;
	uint64_t register_at = 0;

	for (;;) {
		bool draining = __atomic_load_n(&r->draining, __ATOMIC_ACQUIRE);
		struct pollfd pfd[5] = {
			{.fd = sigfd, .events = POLLIN},
			{.fd = d->gate ? gate_fd(d->gate) : -1, .events = POLLIN},
			{.fd = d->reqfd, .events = POLLIN},
			{.fd = handover_predecessor_fd(), .events = POLLIN},
			{.fd = handover_successor_fd(), .events = POLLIN},
		};
		struct signalfd_siginfo si;
		ssize_t n;

		/* While draining, look at the workers a few times a second. */
		if (draining && workers_finished(r))
			return 0;
		/* The relay-port guard's registration; registered listeners close with the drain,
		 * so there is nothing more to register then. */
		if (d->registrar && !draining) {
			uint64_t now = clock_mono_ns();

			if (now >= register_at) {
				register_at = now + (uint64_t)steer_registrar_tick(d->registrar) *
							    NSEC_PER_MSEC;
				audit_steer_change(d);
			}
			register_timeout = (int)((register_at - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
		} else {
			register_timeout = -1;
		}
		if (poll(pfd, 5, timeout_min(timeout_min(draining ? 200 : -1, gate_timeout),
					     register_timeout)) < 0 &&
		    errno != EINTR) {
			log_error("signals", "poll failed: %s", strerror(errno));
			return -1;
		}
		if (d->gate && gate_turn(d->gate, r, pfd[1].revents, &gate_timeout))
			return -1;
		if (pfd[2].revents & POLLIN)
			main_request_run(d);
		for (int i = 3; i < 5; i++)
			if (pfd[i].revents)
				handover_turn(d, pfd[i].fd);
		if (!(pfd[0].revents & POLLIN))
			continue;
		n = read(sigfd, &si, sizeof(si));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n != (ssize_t)sizeof(si)) {
			log_error("signals", "signalfd read failed: %s", strerror(errno));
			return -1;
		}
		switch (si.ssi_signo) {
		case SIGHUP: {
			char err[CONFIG_ERR_MAX];

			if (!draining)
				(void)reload(d, NULL, err, sizeof(err));
			break;
		}
		case SIGTERM:
		case SIGINT:
			if (draining) {
				log_info("shutdown", "%s while draining: closing the remaining sessions now",
					 strsignal((int)si.ssi_signo));
				for (unsigned i = 0; i < r->nworkers; i++)
					worker_post(r->workers[i], WORKER_CMD_DRAIN_NOW);
				break;
			}
			start_drain(d, strsignal((int)si.ssi_signo));
			break;
		default:
			break;
		}
	}
}

static void status_line(struct daemon *d, const struct config *cfg, char *buf, size_t n)
{
	char text[ADDR_STRLEN];

	snprintf(buf, n, "relaying %s to %s, %u workers%s",
		 cfg->nlisten ? addr_format(&cfg->listen[0].ss.sa, text, sizeof(text)) : "unix",
		 cfg->unix_upstream ? cfg->unix_upstream : "the upstream", d->relay.nworkers,
		 handover_is_successor() ? " (took over from the previous process)" : "");
}

/* ---- the inspection stages ---------------------------------------------------------- */

/* Open the audit trail (daemon_start, durably) and bind the audit stage to it. 0, or -1
 * after logging why pgwardend must not start. */
static int start_audit(const struct config *cfg, const struct options *o,
		       const struct config_digest *dg)
{
	struct audit_trail_config tc;
	struct audit_stage_options aopts;
	char err[CONFIG_ERR_MAX];

	audit_trail_config_from(&tc, cfg);
	tc.version = pgwarden_version;
	tc.config_path = o->config_path;
	tc.config_sha256 = dg->known ? dg->sha256 : NULL;
	if (audit_trail_open(&tc, &audit, err, sizeof(err))) {
		log_error("start", "audit trail: %s", err);
		return -1;
	}
	audit_stage_options_from(&aopts, cfg);
	audit_stage_bind(audit, &aopts);
	return 0;
}

/* pipeline_stages, the audit stage only with an audit trail. */
static int build_pipeline(struct stage_pipeline *p)
{
	for (size_t i = 0; i < sizeof(pipeline_stages) / sizeof(pipeline_stages[0]); i++) {
		if (pipeline_stages[i] == &audit_stage && !audit)
			continue;
		if (stage_pipeline_add(p, pipeline_stages[i]))
			return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = {0};
	struct daemon d = {.opts = &o, .reqfd = -1};
	struct relay *r = &d.relay;
	char err[CONFIG_ERR_MAX], status[256];
	struct config *cfg;
	unsigned nworkers;
	struct cpus cpus_storage;
	const struct cpus *cpus;
	sigset_t sigs;
	int sigfd, rc, status_code = 1;

	rc = parse_args(argc, argv, &o);
	if (rc) {
		options_free(&o);
		return rc > 0 ? 0 : 2;
	}
	if (o.check_only && !o.config_path) {
		fprintf(stderr, "pgwardend: --check-config needs a file\n");
		options_free(&o);
		return 2;
	}
	struct config_digest dg;

	cfg = load_config(&o, &dg, err, sizeof(err));
	/* Before any other cryptography: tls.fips must load its provider first or not at all,
	 * and private keys go to the secure heap. Then the certificate files, the auth files
	 * and the policy file, so that --check-config judges them too. */
	if (cfg) {
		struct tls_snapshot *tls = NULL;
		char warning[256];
		const char *offers = getenv("PGWARDEN_SERVER_OFFERS_TLS");

		if (tls_process_init(cfg->tls_fips, tls_sessions_for(cfg), warning, sizeof(warning),
				     err, sizeof(err)) ||
		    tls_snapshot_build(cfg, &tls, err, sizeof(err))) {
			config_unref(cfg);
			cfg = NULL;
		} else if (offers && !o.check_only &&
			   cfg->tls_client_mode == CONFIG_TLS_CLIENT_DISABLE) {
			/* pgwardenctl attach --fail-open found the server offering TLS and
			 * handed over to us: without a certificate its TLS clients would break. */
			snprintf(err, sizeof(err),
				 "the server on %.64s offers TLS but tls.client.mode is disable: TLS "
				 "clients would be refused or fall back to plaintext; give "
				 "tls.client.cert_file and key_file the server's own (docs/TLS.md), or "
				 "attach with --no-tls-check",
				 offers);
			tls_snapshot_unref(tls);
			config_unref(cfg);
			cfg = NULL;
		} else {
			if (warning[0])
				log_warn("start", "%s", warning);
			tls_store_init(&tls_store);
			tls_store_publish(&tls_store, tls);
		}
	}
	if (cfg && (o.check_only ? auth_check_config(cfg, err, sizeof(err))
				 : auth_load(cfg, err, sizeof(err)))) {
		config_unref(cfg);
		cfg = NULL;
	}
	if (cfg && cfg->policy) { /* the policy is part of a valid configuration */
		struct policy *p = policy_load_file(cfg->policy, err, sizeof(err));
		struct mask_policy *masking = NULL;

		if (!p || mask_wiring_build(p, &masking, err, sizeof(err))) {
			config_unref(cfg);
			cfg = NULL;
		}
		mask_policy_put(masking);
		policy_unref(p);
	}
	if (cfg && mask_wiring_check(cfg, err, sizeof(err))) {
		config_unref(cfg);
		cfg = NULL;
	}
	if (!cfg || o.check_only) {
		if (cfg)
			printf("%s: configuration is valid\n", o.config_path);
		else
			fprintf(stderr, "pgwardend: %s\n", err);
		status_code = cfg ? 0 : o.check_only ? 1 : 2;
		tls_store_destroy(&tls_store);
		auth_runtime_free(daemon_auth);
		config_unref(cfg);
		options_free(&o);
		return status_code;
	}
	log_set_target(cfg->log_target, "pgwardend");
	options_note_exe(&o);

	/* Block before any thread exists so every worker inherits the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	d.reqfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	pthread_mutex_init(&d.req_lock, NULL);
	pthread_cond_init(&d.req_done, NULL);
	if (sigfd < 0 || d.reqfd < 0) {
		log_error("start", "signalfd/eventfd: %s", strerror(errno));
		config_unref(cfg);
		options_free(&o);
		return 1;
	}
	/* A seamless restart: the predecessor's sockets, before anything binds. */
	if (handover_receive(err, sizeof(err))) {
		log_error("start", "%s", err);
		config_unref(cfg);
		goto out_early;
	}

	relay_init(r);
	r->tls = &tls_store;
	d.steer_instance = strdup(cfg->steer_instance);
	relay_config_publish(r, cfg); /* the relay owns the loaded reference now */
	{
		struct tls_snapshot *tls = tls_store_acquire(&tls_store);

		tls_publish_log(tls);
		tls_snapshot_unref(tls);
	}
	raise_nofile();
	/* Fail-open: pgwardenctl attach handed over the hooks' links; they live as long as we do. */
	if (getenv("PGWARDEN_STEER_FDS")) {
		rc = steer_origin_adopt(getenv("PGWARDEN_STEER_FDS"), &r->steer_shared);
		if (rc) {
			log_error("start", "cannot adopt the fail-open steering links: %s", strerror(-rc));
			goto out;
		}
		log_warn("steer", "fail-open: if pgwardend stops, clients reach PostgreSQL directly");
	}
	r->cancels = cancel_map_new();
	if (!d.steer_instance || !r->cancels || guard_new(cfg, &r->guard)) {
		log_error("start", "out of memory");
		goto out;
	}
	if (cfg->audit_path && start_audit(cfg, &o, &dg))
		goto out;
	/* Each session takes the auth snapshot at its StartupMessage (relay/conn_auth.c). */
	r->auth = daemon_auth;
	r->audit = audit; /* lockouts and cancels are recorded there */
	if (build_pipeline(&r->pipeline)) {
		log_error("start", "the stage pipeline is full");
		goto out;
	}
	r->metrics = metrics_registry_new();
	if (!r->metrics || metrics_std_register(r->metrics, &r->mstd) ||
	    metrics_steer_register(r->metrics, d.steer_instance) ||
	    metrics_process_register(r->metrics) || policy_metrics_register(r->metrics)) {
		log_error("start", "metrics registry: out of memory");
		goto out;
	}
	{
		struct tls_snapshot *tls = tls_store_acquire(&tls_store);

		rc = mask_wiring_apply(cfg, tls, err, sizeof(err));
		tls_snapshot_unref(tls); /* the catalog connection took its own reference */
	}
	if (rc || apply_policy(cfg, err, sizeof(err))) {
		log_error("start", "%s", err);
		goto out;
	}
	mask_wiring_wait_ready(cfg);
	if (cfg->unix_listen && open_unix_listener(r, cfg->unix_listen))
		goto out;
	/* Before the workers: a queue that cannot be read is a configuration error, reported
	 * before anything listens, and its counters must be registered before the first
	 * metrics shard freezes the registry. A successor's predecessor has just released
	 * the queue; give it a moment. */
	if (cfg->gate_enabled) {
		rc = gate_open(cfg, &d.gate, err, sizeof(err));
		for (int i = 0; rc && handover_is_successor() && i < 20; i++) {
			usleep(100 * 1000);
			rc = gate_open(cfg, &d.gate, err, sizeof(err));
		}
		if (rc) {
			log_error("start", "%s", err);
			goto out;
		}
		rc = metrics_steer_gate_register(r->metrics, gate_steer(d.gate));
		if (rc) {
			log_error("start", "metrics registry: %s", strerror(-rc));
			goto out;
		}
	}
	cpus = worker_cpus(&cpus_storage);
	nworkers = worker_count(cfg, cpus);
	/* Take every socket the predecessor had: one left behind would take the connections
	 * queued on it along when it closes. */
	if (handover_listeners_per_address() > nworkers) {
		log_warn("start", "running %u workers, not %u: the previous pgwardend handed over "
			 "that many sockets per address; restart fully to run fewer",
			 handover_listeners_per_address(), nworkers);
		nworkers = handover_listeners_per_address();
	}
	check_nofile(cfg, nworkers);
	rc = start_workers(r, nworkers, cfg, cfg->pin_workers ? cpus : NULL);
	if (rc) {
		log_error("start", "cannot start: %s", strerror(-rc));
		goto out;
	}
	log_started(cfg, r);
	if (start_registrar(&d, cfg))
		goto out_stop;
	d.admin = start_admin(&d, cfg, err, sizeof(err));
	if (!d.admin) {
		log_error("start", "%s", err);
		goto out_stop;
	}
	__atomic_store_n(&r->admin, d.admin, __ATOMIC_RELEASE);
	if (cfg->metrics_listen) {
		char where[ADDR_STRLEN];

		d.http = start_metrics(r, cfg->metrics_listen, err, sizeof(err));
		if (!d.http) {
			log_error("start", "%s", err);
			goto out_stop;
		}
		log_info("metrics_listen", "metrics on http://%s/metrics",
			 metrics_http_address(d.http, where, sizeof(where)));
	}
	status_line(&d, cfg, status, sizeof(status));
	if (handover_is_successor()) {
		/* The predecessor tells systemd (MAINPID=us, READY=1) once it has this; until
		 * then systemd would not take a message from this pid. */
		rc = handover_send_ready();
		if (rc) {
			log_error("start", "cannot tell the previous pgwardend we are ready: %s",
				  strerror(-rc));
			goto out_stop;
		}
	} else {
		notify_ready(status);
	}

	status_code = main_loop(&d, sigfd) ? 1 : 0;
out_stop:
	if (!__atomic_load_n(&r->draining, __ATOMIC_ACQUIRE))
		for (unsigned i = 0; i < r->nworkers; i++)
			worker_post(r->workers[i], WORKER_CMD_STOP);
	for (unsigned i = 0; i < r->nworkers; i++)
		worker_join(r->workers[i]);
	backend_cancel_free_all();
	if (status_code)
		log_error("shutdown", "stopped after a failure; exit status 1");
	else if (d.retiring)
		log_info("shutdown", "all sessions ended; exiting (pid %d is the service now)",
			 (int)d.successor);
	else
		log_info("shutdown", "all sessions ended; exiting");
	metrics_http_stop(d.http);
	d.http = NULL;
	__atomic_store_n(&r->admin, NULL, __ATOMIC_RELEASE);
	main_request_abort(&d);
	admin_server_stop(d.admin);
	d.admin = NULL;
	/* Every thread that could record something is gone: the stop and the last checkpoint. */
	audit_trail_close(audit, status_code ? "stopped after a failure" : "stopped");
	audit = NULL;
out:
	metrics_http_stop(d.http);
	admin_server_stop(d.admin);
	/* No worker runs here (start_workers joins those it started when it fails). */
	audit_trail_close(audit, "failed to start");
	audit = NULL;
	mask_wiring_stop();
	for (unsigned i = 0; i < r->nworkers; i++)
		worker_destroy(r->workers[i]);
	free(r->workers);
	relay_unix_listener_close(r);
	cancel_map_free(r->cancels);
	guard_free(r->guard);
	/* After the admin socket and the metrics endpoint, which read its counters. */
	gate_close(d.gate);
	steer_registrar_free(d.registrar);
	steer_origin_close(r->steer_shared);
	metrics_registry_free(r->metrics);
	config_unref(r->config);
	tls_store_destroy(&tls_store);
	auth_runtime_free(daemon_auth);
	free(d.steer_instance);
out_early:
	handover_close();
	close(sigfd);
	close(d.reqfd);
	pthread_cond_destroy(&d.req_done);
	pthread_mutex_destroy(&d.req_lock);
	options_free(&o);
	return status_code;
}
