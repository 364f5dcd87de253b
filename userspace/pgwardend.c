/*
 * pgwardend: the relay daemon's main thread.
 *
 * It owns configuration (file + flags, reload on SIGHUP), signals (through a signalfd, so
 * no handler ever runs inside a worker), the process limits, the admission gate's queue
 * (when gate.queue is set: SYNs are decided here, before any worker sees a connection), and
 * the workers' lifecycle: start, drain on SIGTERM/SIGINT, join. Workers own the data path.
 */
#include "admin/admin.h"
#include "base/clock.h"
#include "base/log.h"
#include "base/version.h"
#include "metrics/metrics_http.h"
#include "metrics/metrics_std.h"
#include "metrics/metrics_steer.h"
#include "relay/conn.h"
#include "config/config.h"
#include "gate/gate.h"
#include "relay/cancel.h"
#include "relay/relay.h"
#include "relay/worker.h"
#include "stage/stage.h"
#include "steer/steer.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

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
		"       pgwardend --help | -V | --version\n\n"
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

/* Defaults, then the file, then the flags. NULL with a one-line message in err. */
static struct config *load_config(const struct options *o, char *err, size_t errlen)
{
	struct config *cfg = config_new();

	if (!cfg) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (o->config_path && config_load_file(cfg, o->config_path, err, errlen))
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

/* SIGHUP (main thread) and the admin socket's reload (admin thread) both land here. */
static int reload_checked(struct relay *r, const struct options *o, char *err, size_t errlen)
{
	struct config *cfg, *old;
	const char *restart;

	pthread_mutex_lock(&reload_lock);
	cfg = load_config(o, err, errlen);
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

		if (err != -ENOENT)
			return err;
	}
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

static int admin_status_cb(void *ctx, json_t *obj)
{
	struct daemon_ctx *d = ctx;
	struct relay *r = d->relay;
	uint64_t refused = 0;

	for (unsigned i = 0; i < MREFUSE_COUNT; i++)
		refused += metrics_value(r->metrics, r->mstd.refused, i);
	json_object_set_new(obj, "version", json_string(pgwarden_version));
	json_object_set_new(obj, "workers", json_integer(r->nworkers));
	status_config(r, d->opts, obj);
	json_object_set_new(obj, "sessions",
			    json_integer(__atomic_load_n(&r->connections, __ATOMIC_RELAXED)));
	json_object_set_new(obj, "connections_accepted",
			    json_integer((json_int_t)metrics_value(r->metrics, r->mstd.accepted, 0)));
	json_object_set_new(obj, "connections_refused", json_integer((json_int_t)refused));
	json_object_set_new(obj, "errors", json_integer((json_int_t)metrics_value(
						   r->metrics, r->mstd.statement_errors, 0)));
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

static const struct admin_ops daemon_admin_ops = {
	.sessions = admin_sessions_cb,
	.kill = admin_kill_cb,
	.reload = admin_reload_cb,
	.status = admin_status_cb,
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

static void log_started(const struct config *cfg, unsigned nworkers)
{
	struct log_line l;
	char text[ADDR_STRLEN];

	log_line_begin(&l, LOG_INFO, "started");
	log_kv_str(&l, "version", pgwarden_version);
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

/* Handle signals, and the admission gate's queue when there is one, until a drain has
 * finished: 0, or -1 when the signal source or the gate's queue failed. */
static int main_loop(struct relay *r, const struct options *o, int sigfd, struct gate *gate)
{
	bool draining = false;
	int gate_timeout = -1;

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
		if (poll(pfd, 2, timeout_min(draining ? 200 : -1, gate_timeout)) < 0 &&
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
	cfg = load_config(&o, err, sizeof(err));
	if (!cfg || o.check_only) {
		if (cfg)
			printf("%s: configuration is valid\n", o.config_path);
		else
			fprintf(stderr, "pgwardend: %s\n", err);
		status = cfg ? 0 : o.check_only ? 1 : 2;
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
	if (!r.cancels || stage_pipeline_add(&r.pipeline, &sessionlog_stage)) {
		log_error("start", "out of memory");
		goto out;
	}
	r.metrics = metrics_registry_new();
	if (!r.metrics || metrics_std_register(r.metrics, &r.mstd) ||
	    metrics_steer_register(r.metrics, NULL)) {
		log_error("start", "metrics registry: out of memory");
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

	status = main_loop(&r, &o, sigfd, gate) ? 1 : 0;
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
out:
	metrics_http_stop(http);
	admin_server_stop(admin);
	for (unsigned i = 0; i < r.nworkers; i++)
		worker_destroy(r.workers[i]);
	free(r.workers);
	relay_unix_listener_close(&r);
	cancel_map_free(r.cancels);
	/* After the admin socket and the metrics endpoint, which read its counters. */
	gate_close(gate);
	steer_origin_close(r.steer_shared);
	metrics_registry_free(r.metrics);
	config_unref(r.config);
	close(sigfd);
	options_free(&o);
	return status;
}
