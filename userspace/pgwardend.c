/*
 * pgwardend: the relay daemon's main thread.
 *
 * It owns configuration (file + flags, reload on SIGHUP), signals (through a signalfd, so
 * no handler ever runs inside a worker), the process limits, the admission gate's queue
 * (when gate.queue is set: SYNs are decided here, before any worker sees a connection), and
 * the workers' lifecycle: start, drain on SIGTERM/SIGINT, join. Workers own the data path.
 */
#include "admin/admin.h"
#include "audit/audit.h"
#include "auth/auth.h"
#include "base/clock.h"
#include "base/log.h"
#include "metrics/metrics_http.h"
#include "metrics/metrics_std.h"
#include "metrics/metrics_steer.h"
#include "relay/conn.h"
#include "relay/guard.h"
#include "config/config.h"
#include "policy/policy.h"
#include "gate/gate.h"
#include "relay/cancel.h"
#include "relay/relay.h"
#include "relay/worker.h"
#include "stage/stage.h"
#include "steer/steer.h"
#include "tls/tls.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define PGWARDEN_VERSION "0.1.0"

struct options {
	const char *config_path;
	bool check_only;
	/* --KEY VALUE pairs in order, re-applied over the file on every reload. */
	char **keys; /* owned */
	const char **values;
	unsigned nflags;
};

static void options_free(struct options *o)
{
	for (unsigned i = 0; i < o->nflags; i++)
		free(o->keys[i]);
	free(o->keys);
	free(o->values);
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: pgwardend [--config FILE] [--listen ADDR]... [--upstream ADDR] [--KEY VALUE]...\n"
		"       pgwardend --check-config FILE [--KEY VALUE]...\n"
		"       pgwardend --help | --version\n\n"
		"Relays PostgreSQL connections between clients and a server, applying pgwarden's\n"
		"inspection stages. Flags override the file. SIGHUP reloads, SIGTERM drains.\n\n");
	config_usage(out);
}

/* 0, 1 (exit 0 now: --help/--version), or -1 (usage error, message printed). */
static int parse_args(int argc, char **argv, struct options *o)
{
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
		if (strcmp(arg, "--version") == 0) {
			printf("pgwardend %s\n", PGWARDEN_VERSION);
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
 * The audit trail, when audit.path is set: opened by the main thread before any other
 * thread exists, closed after the workers and the admin socket are gone; the admin thread
 * only reads the pointer in between.
 */
static struct audit_trail *audit;

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
	log_info("limits", "open-file limit raised from %llu to %llu (about %llu sessions)",
		 (unsigned long long)before, (unsigned long long)rl.rlim_cur,
		 (unsigned long long)(rl.rlim_cur / 2));
}

static pthread_mutex_t reload_lock = PTHREAD_MUTEX_INITIALIZER;

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
 * connection core reaches it with auth_runtime_acquire() at session start; until the
 * rewritten core drives the auth machines, settings that would look enforced and not be
 * are refused here (auth_core_gap) so no operator is misled. */
static struct auth_runtime *daemon_auth;

/* The auth.* settings this build's connection core does not enforce yet, or NULL. Delete
 * with the core that calls auth_observer_* / auth_terminate_* / auth_upstream_*. */
static const char *auth_core_gap(const struct config *cfg)
{
	if (cfg->auth_mode == AUTH_MODE_TERMINATE)
		return "auth.mode: terminate is not driven by this build's connection core yet";
	if (cfg->auth_server_methods != AUTH_METHODS_ALL)
		return "auth.server_methods: not enforced by this build's connection core yet";
	return NULL;
}

static int auth_load(const struct config *cfg, char *err, size_t errlen)
{
	const char *gap = auth_core_gap(cfg);

	if (gap) {
		snprintf(err, errlen, "%s", gap);
		return -1;
	}
	if (!daemon_auth)
		return auth_runtime_new(cfg, &daemon_auth, err, errlen);
	return auth_runtime_reload(daemon_auth, cfg, err, errlen);
}

/* Publish the policy file cfg names (policy_reload logs it with its SHA-256), or none. A
 * broken file leaves the running policy in force: 0, or -1 with err set. */
static int apply_policy(const struct config *cfg, char *err, size_t errlen)
{
	struct policy *running;

	if (cfg->policy)
		return policy_reload(cfg->policy, err, errlen);
	running = policy_acquire();
	if (running) {
		policy_unref(running);
		policy_publish(NULL);
	}
	return 0;
}

/* SIGHUP (main thread) and the admin socket's reload (admin thread) both land here. */
static int reload_checked(struct relay *r, const struct options *o, char *err, size_t errlen)
{
	struct config *cfg, *old;
	struct tls_snapshot *tls = NULL;
	const char *restart;

	struct config_digest dg;

	pthread_mutex_lock(&reload_lock);
	/* The whole reload is one decision: the file, its TLS files and its auth files. The
	 * trail records it with the digest of what was read, accepted or not. */
	cfg = load_config(o, &dg, err, errlen);
	/* Checked before anything is swapped: the auth files, then the policy (its reload
	 * publishes), then the auth runtime (which then cannot fail on its files). */
	if (cfg && (tls_snapshot_build(cfg, &tls, err, errlen) ||
		    auth_check_config(cfg, err, errlen) || apply_policy(cfg, err, errlen) ||
		    auth_load(cfg, err, errlen))) {
		tls_snapshot_unref(tls);
		tls = NULL;
		config_unref(cfg);
		cfg = NULL;
	}
	audit_event_reload(audit, "config", o->config_path, dg.known ? dg.sha256 : NULL, cfg != NULL,
			   err);
	if (!cfg) {
		log_error("reload", "keeping the running configuration: %s", err);
		pthread_mutex_unlock(&reload_lock);
		return -1;
	}
	old = relay_config_acquire(r);
	restart = config_restart_required(old, cfg);
	if (restart)
		log_warn("reload", "%s changed: it takes effect only after a restart", restart);
	config_unref(old);
	tls_publish_log(tls);
	tls_store_publish(&tls_store, tls);
	relay_config_publish(r, cfg);
	log_info("reload", "configuration reloaded%s%s", o->config_path ? " from " : "",
		 o->config_path ? o->config_path : "");
	pthread_mutex_unlock(&reload_lock);
	return 0;
}

static void reload(struct relay *r, const struct options *o)
{
	char err[CONFIG_ERR_MAX];

	(void)reload_checked(r, o, err, sizeof(err));
}

/* ---- admin socket callbacks (admin thread) ---- */

struct daemon_ctx {
	struct relay *relay;
	const struct options *opts;
	struct gate *gate; /* NULL: no admission gate; set before the admin socket starts */
	struct steer_registrar *registrar; /* set before the admin socket starts */
	unsigned registrar_listeners;
};

static int admin_sessions_cb(void *ctx, json_t *arr)
{
	struct relay *r = ((struct daemon_ctx *)ctx)->relay;
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

static int admin_kill_cb(void *ctx, const char *id)
{
	struct relay *r = ((struct daemon_ctx *)ctx)->relay;

	for (unsigned i = 0; i < r->nworkers; i++) {
		int err = worker_post_kill(r->workers[i], id);

		if (err != -ENOENT) {
			audit_event_kill(audit, id, "admin socket", err == 0);
			return err;
		}
	}
	audit_event_kill(audit, id, "admin socket", false);
	return -ENOENT;
}

static int admin_reload_cb(void *ctx, char *err, size_t n)
{
	struct daemon_ctx *d = ctx;

	return reload_checked(d->relay, d->opts, err, n);
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
	config_unref(cfg);
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

static int admin_status_cb(void *ctx, json_t *obj)
{
	struct daemon_ctx *d = ctx;
	struct relay *r = d->relay;
	uint64_t refused = 0;

	for (unsigned i = 0; i < MREFUSE_COUNT; i++)
		refused += metrics_value(r->metrics, r->mstd.refused, i);
	json_object_set_new(obj, "version", json_string(PGWARDEN_VERSION));
	json_object_set_new(obj, "workers", json_integer(r->nworkers));
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

static const struct admin_ops daemon_admin_ops = {
	.sessions = admin_sessions_cb,
	.kill = admin_kill_cb,
	.reload = admin_reload_cb,
	.status = admin_status_cb,
	.unlock = admin_unlock_cb,
	.locks = admin_locks_cb,
};

static unsigned worker_count(const struct config *cfg)
{
	long n = cfg->workers ? (long)cfg->workers : sysconf(_SC_NPROCESSORS_ONLN);

	return n > 0 ? (unsigned)n : 1;
}

static int start_workers(struct relay *r, const struct config *cfg)
{
	unsigned n = worker_count(cfg);
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
		err = worker_start(r->workers[i]);
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
static int start_registrar(struct relay *r, const struct config *cfg, struct daemon_ctx *d)
{
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

static void log_started(const struct config *cfg, unsigned nworkers)
{
	struct log_line l;
	char text[ADDR_STRLEN];

	log_line_begin(&l, LOG_INFO, "started");
	log_kv_str(&l, "version", PGWARDEN_VERSION);
	for (unsigned i = 0; i < cfg->nlisten; i++)
		log_kv_str(&l, "listen", addr_format(&cfg->listen[i].ss.sa, text, sizeof(text)));
	if (cfg->unix_listen)
		log_kv_str(&l, "unix_listen", cfg->unix_listen);
	log_kv_str(&l, "upstream", addr_format(&cfg->upstream.ss.sa, text, sizeof(text)));
	if (cfg->unix_upstream)
		log_kv_str(&l, "unix_upstream", cfg->unix_upstream);
	log_kv_u64(&l, "workers", nworkers);
	log_kv_u64(&l, "pid", (uint64_t)getpid());
	log_line_end(&l);
}

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

/* Handle signals, the admission gate's queue when there is one, and the registration of
 * the listeners with the steering hooks, until a drain has finished: 0, or -1 when the
 * signal source or the gate's queue failed. */
static int main_loop(struct relay *r, const struct options *o, int sigfd, struct gate *gate,
		     struct steer_registrar *registrar)
{
	bool draining = false;
	int gate_timeout = -1, register_timeout = -1;
	uint64_t register_at = 0;

	for (;;) {
		struct pollfd pfd[2] = {
			{.fd = sigfd, .events = POLLIN},
			{.fd = gate ? gate_fd(gate) : -1, .events = POLLIN},
		};
		struct signalfd_siginfo si;
		ssize_t n;

		/* While draining, look at the workers a few times a second. */
		if (draining && workers_finished(r))
			return 0;
		/* Registered listeners close with the drain; nothing more to register then. */
		if (registrar && !draining) {
			uint64_t now = clock_mono_ns();

			if (now >= register_at)
				register_at = now + (uint64_t)steer_registrar_tick(registrar) *
							    NSEC_PER_MSEC;
			register_timeout = (int)((register_at - now + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
		} else {
			register_timeout = -1;
		}
		if (poll(pfd, 2, timeout_min(timeout_min(draining ? 200 : -1, gate_timeout),
					     register_timeout)) < 0 &&
		    errno != EINTR) {
			log_error("signals", "poll failed: %s", strerror(errno));
			return -1;
		}
		if (gate && gate_turn(gate, r, pfd[1].revents, &gate_timeout))
			return -1;
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
		case SIGHUP:
			reload(r, o);
			break;
		case SIGTERM:
		case SIGINT:
			if (draining) {
				log_info("shutdown", "%s while draining: closing the remaining sessions now",
					 strsignal((int)si.ssi_signo));
				for (unsigned i = 0; i < r->nworkers; i++)
					worker_post(r->workers[i], WORKER_CMD_DRAIN_NOW);
				break;
			}
			draining = true;
			__atomic_store_n(&r->draining, true, __ATOMIC_RELEASE);
			log_info("shutdown", "%s: no new connections; draining sessions",
				 strsignal((int)si.ssi_signo));
			for (unsigned i = 0; i < r->nworkers; i++)
				worker_post(r->workers[i], WORKER_CMD_DRAIN);
			break;
		default:
			break;
		}
	}
}

/* ---- the audit trail --------------------------------------------------------------- */

/*
 * AUDIT-CORE: the audit stage (audit/audit_stage.c) needs the v2 connection core: it
 * PAUSEs each statement until its record is durable and is woken by stage_wake(), and it
 * reads the stmt table; this core has neither (it gives stages no waker). Until it does,
 * sessions are refused while an audit trail is configured: a trail that silently missed
 * them would be worse than none. With the v2 core, replace this stage by:
 *
 *	struct audit_stage_options aopts;
 *
 *	audit_stage_options_from(&aopts, cfg);
 *	audit_stage_bind(audit, &aopts);
 *	stage_pipeline_add(&r->pipeline, &audit_stage)   (last: after policy and masking)
 */
static void audit_core_missing_start(struct stage_ctx *ctx, struct stage_result *res)
{
	stage_result_set(res, STAGE_CLOSE, "53100", NULL,
			 "the audit trail cannot be kept for this connection (the relay cannot hold "
			 "a statement until its record is written)");
}

static const struct stage_ops audit_core_missing_stage = {
	.name = "audit",
	.session_start = audit_core_missing_start,
};

/* Open the trail (daemon_start, durably) and put the audit stage in the pipeline. 0, or
 * -1 after logging why pgwardend must not start. */
static int start_audit(struct relay *r, const struct config *cfg, const struct options *o,
		       const struct config_digest *dg)
{
	struct audit_trail_config tc;
	char err[CONFIG_ERR_MAX];

	audit_trail_config_from(&tc, cfg);
	tc.version = PGWARDEN_VERSION;
	tc.config_path = o->config_path;
	tc.config_sha256 = dg->known ? dg->sha256 : NULL;
	if (audit_trail_open(&tc, &audit, err, sizeof(err))) {
		log_error("start", "audit trail: %s", err);
		return -1;
	}
	if (stage_pipeline_add(&r->pipeline, &audit_core_missing_stage)) {
		log_error("start", "audit: the stage pipeline is full");
		return -1;
	}
	log_warn("audit", "sessions are refused (53100): this build's connection core cannot run "
			  "the audit stage; the trail records pgwardend's own events only");
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = {0};
	struct relay r = {0};
	struct daemon_ctx dctx = {.relay = &r, .opts = &o};
	struct gate *gate = NULL;
	struct admin_server *admin = NULL;
	struct metrics_http *http = NULL;
	char err[CONFIG_ERR_MAX];
	struct config *cfg;
	sigset_t sigs;
	int sigfd, rc, status = 1;

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
	 * and private keys go to the secure heap. Then the certificate files, so that
	 * --check-config judges them too. */
	if (cfg) {
		struct tls_snapshot *tls = NULL;
		const char *warning = NULL;

		const char *offers = getenv("PGWARDEN_SERVER_OFFERS_TLS");

		if (tls_process_init(cfg->tls_fips, &warning, err, sizeof(err)) ||
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
			if (warning)
				log_warn("start", "%s", warning);
			tls_store_init(&tls_store);
			tls_store_publish(&tls_store, tls);
		}
	}
	/* The files auth.* names are part of the configuration: check them too. */
	if (cfg && (auth_core_gap(cfg) || (o.check_only ? auth_check_config(cfg, err, sizeof(err))
						       : auth_load(cfg, err, sizeof(err))))) {
		if (auth_core_gap(cfg))
			snprintf(err, sizeof(err), "%s", auth_core_gap(cfg));
		config_unref(cfg);
		cfg = NULL;
	}
	if (cfg && cfg->policy) { /* the policy is part of a valid configuration */
		struct policy *p = policy_load_file(cfg->policy, err, sizeof(err));

		if (!p) {
			config_unref(cfg);
			cfg = NULL;
		}
		policy_unref(p);
	}
	if (!cfg || o.check_only) {
		if (cfg)
			printf("%s: configuration is valid\n", o.config_path);
		else
			fprintf(stderr, "pgwardend: %s\n", err);
		status = cfg ? 0 : o.check_only ? 1 : 2;
		if (cfg)
			tls_store_destroy(&tls_store);
		config_unref(cfg);
		options_free(&o);
		return status;
	}

	/* Block before any thread exists so every worker inherits the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);
	sigfd = signalfd(-1, &sigs, SFD_CLOEXEC);
	if (sigfd < 0) {
		fprintf(stderr, "pgwardend: signalfd: %s\n", strerror(errno));
		config_unref(cfg);
		options_free(&o);
		return 1;
	}

	relay_init(&r);
	relay_config_publish(&r, cfg); /* the relay owns the loaded reference now */
	{
		struct tls_snapshot *tls = tls_store_acquire(&tls_store);

		tls_publish_log(tls);
		tls_snapshot_unref(tls);
	}
	raise_nofile();
	/* Fail-open: pgwardenctl attach handed over the hooks' links; they live as long as we do. */
	if (getenv("PGWARDEN_STEER_FDS")) {
		rc = steer_origin_adopt(getenv("PGWARDEN_STEER_FDS"), &r.steer_shared);
		if (rc) {
			log_error("start", "cannot adopt the fail-open steering links: %s", strerror(-rc));
			goto out;
		}
		log_warn("steer", "fail-open: if pgwardend stops, clients reach PostgreSQL directly");
	}
	r.cancels = cancel_map_new();
	if (!r.cancels || guard_new(cfg, &r.guard) ||
	    stage_pipeline_add(&r.pipeline, &sessionlog_stage)) {
		log_error("start", "out of memory");
		goto out;
	}
	if (cfg->audit_path && start_audit(&r, cfg, &o, &dg))
		goto out;
	r.metrics = metrics_registry_new();
	if (!r.metrics || metrics_std_register(r.metrics, &r.mstd) ||
	    metrics_steer_register(r.metrics, NULL) || policy_metrics_register(r.metrics)) {
		log_error("start", "metrics registry: out of memory");
		goto out;
	}
	if (apply_policy(cfg, err, sizeof(err))) {
		log_error("start", "%s", err);
		goto out;
	}
	if (cfg->unix_listen && relay_unix_listener_open(&r, cfg->unix_listen))
		goto out;
	/* Before the workers: a queue that cannot be read is a configuration error, reported
	 * before anything listens, and its counters must be registered before the first
	 * metrics shard freezes the registry. */
	if (cfg->gate_enabled) {
		rc = gate_open(cfg, &gate, err, sizeof(err));
		if (rc) {
			log_error("start", "%s", err);
			goto out;
		}
		rc = metrics_steer_gate_register(r.metrics, gate_steer(gate));
		if (rc) {
			log_error("start", "metrics registry: %s", strerror(-rc));
			goto out;
		}
		dctx.gate = gate;
	}
	rc = start_workers(&r, cfg);
	if (rc) {
		log_error("start", "cannot start: %s", strerror(-rc));
		goto out;
	}
	log_started(cfg, r.nworkers);
	if (start_registrar(&r, cfg, &dctx))
		goto out_stop;
	{
		struct admin_server_config acfg = {.path = cfg->admin_socket};

		if (admin_server_start(&acfg, &daemon_admin_ops, &dctx, &admin, err, sizeof(err))) {
			log_error("start", "%s", err);
			goto out_stop;
		}
		__atomic_store_n(&r.admin, admin, __ATOMIC_RELEASE);
		if (cfg->metrics_listen) {
			char where[ADDR_STRLEN];

			http = metrics_http_start(r.metrics, cfg->metrics_listen, err, sizeof(err));
			if (!http) {
				log_error("start", "%s", err);
				goto out_stop;
			}
			log_info("metrics_listen", "metrics on http://%s/metrics",
				 metrics_http_address(http, where, sizeof(where)));
		}
	}

	status = main_loop(&r, &o, sigfd, gate, dctx.registrar) ? 1 : 0;
out_stop:
	if (!__atomic_load_n(&r.draining, __ATOMIC_ACQUIRE))
		for (unsigned i = 0; i < r.nworkers; i++)
			worker_post(r.workers[i], WORKER_CMD_STOP);
	for (unsigned i = 0; i < r.nworkers; i++)
		worker_join(r.workers[i]);
	if (status)
		log_error("shutdown", "stopped after a failure; exit status 1");
	else
		log_info("shutdown", "all sessions ended; exiting");
	metrics_http_stop(http);
	http = NULL;
	__atomic_store_n(&r.admin, NULL, __ATOMIC_RELEASE);
	admin_server_stop(admin);
	admin = NULL;
	/* Every thread that could record something is gone: the stop and the last checkpoint. */
	audit_trail_close(audit, status ? "stopped after a failure" : "stopped");
	audit = NULL;
out:
	metrics_http_stop(http);
	admin_server_stop(admin);
	/* No worker runs here (start_workers joins those it started when it fails). */
	audit_trail_close(audit, "failed to start");
	audit = NULL;
	for (unsigned i = 0; i < r.nworkers; i++)
		worker_destroy(r.workers[i]);
	free(r.workers);
	relay_unix_listener_close(&r);
	cancel_map_free(r.cancels);
	guard_free(r.guard);
	/* After the admin socket and the metrics endpoint, which read its counters. */
	gate_close(gate);
	steer_registrar_free(dctx.registrar);
	steer_origin_close(r.steer_shared);
	metrics_registry_free(r.metrics);
	config_unref(r.config);
	tls_store_destroy(&tls_store);
	auth_runtime_free(daemon_auth);
	close(sigfd);
	options_free(&o);
	return status;
}
