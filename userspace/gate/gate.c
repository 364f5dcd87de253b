/* gate: pgwardend's admission gate reader (see gate.h). */
#include "gate/gate.h"

#include "base/clock.h"
#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The configuration's deny list is copied into the gate's: one bound for both. */
_Static_assert(CONFIG_GATE_MAX_DENY == STEER_GATE_MAX_DENY, "gate.deny bound");

struct gate {
	struct steer_gate *sg;
	struct config *applied;    /* the snapshot whose limits hold (referenced) */
	uint16_t queue;            /* as bound: a reload cannot move it */
	uint32_t max_sources;      /* likewise */
	struct steer_gate_stats logged; /* the counters as of the last summary line */
	uint64_t next_log_ns;      /* no summary line before this */
};

static void opts_from_config(const struct config *cfg, struct steer_gate_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->queue_num = (uint16_t)cfg->gate_queue;
	o->rate_per_sec = (double)cfg->gate_rate_per_hour / 3600.0;
	o->burst = cfg->gate_burst;
	o->max_sources = cfg->gate_max_sources;
	memcpy(o->deny, cfg->gate_deny, cfg->ngate_deny * sizeof(cfg->gate_deny[0]));
	o->ndeny = cfg->ngate_deny;
}

/* One line: where the gate reads and what it enforces. */
static void log_limits(const char *event, const struct config *cfg, uint16_t queue)
{
	char rate[32], deny[1024];
	struct log_line l;

	if (!log_enabled(LOG_INFO))
		return;
	if (config_get(cfg, "gate.rate", rate, sizeof(rate)))
		snprintf(rate, sizeof(rate), "?");
	/* A list too long for one log line is counted instead. */
	if (config_get(cfg, "gate.deny", deny, sizeof(deny)))
		snprintf(deny, sizeof(deny), "(%u ranges)", cfg->ngate_deny);
	log_line_begin(&l, LOG_INFO, event);
	log_kv_u64(&l, "queue", queue);
	log_kv_str(&l, "rate", rate); /* 0/s: no rate limit */
	log_kv_u64(&l, "burst", cfg->gate_burst);
	log_kv_str(&l, "deny", deny);
	log_line_end(&l);
}

int gate_open(struct config *cfg, struct gate **out, char *err, size_t errlen)
{
	struct steer_gate_opts o;
	struct gate *g;
	int rc;

	*out = NULL;
	g = calloc(1, sizeof(*g));
	if (!g) {
		snprintf(err, errlen, "gate: out of memory");
		return -ENOMEM;
	}
	opts_from_config(cfg, &o);
	rc = steer_gate_new(&o, &g->sg);
	if (rc) {
		snprintf(err, errlen, "gate: %s", strerror(-rc));
		goto err_free;
	}
	rc = steer_gate_open(g->sg);
	if (rc) {
		snprintf(err, errlen, "gate.queue: cannot read NFQUEUE %u: %s%s", o.queue_num,
			 strerror(-rc),
			 /* The kernel says EPERM for both. */
			 rc == -EPERM ? " (another process reads this queue, or no CAP_NET_ADMIN)" :
					"");
		goto err_close;
	}
	g->queue = o.queue_num;
	g->max_sources = o.max_sources;
	config_ref(cfg);
	g->applied = cfg;
	log_limits("gate", cfg, g->queue);
	*out = g;
	return 0;

err_close:
	steer_gate_close(g->sg);
err_free:
	free(g);
	return rc;
}

void gate_release(struct gate *g)
{
	steer_gate_unbind(g->sg);
	log_info("gate", "released NFQUEUE %u for the new pgwardend", g->queue);
}

int gate_reopen(struct gate *g, struct config *cfg, char *err, size_t errlen)
{
	int rc = steer_gate_open(g->sg);

	if (rc)
		snprintf(err, errlen, "gate.queue: cannot read NFQUEUE %u again: %s", g->queue,
			 strerror(-rc));
	else
		log_limits("gate", cfg, g->queue);
	return rc;
}

int gate_fd(const struct gate *g)
{
	return steer_gate_fd(g->sg);
}

/* Whether a reload changed what the gate enforces (not every reload does). */
static bool limits_differ(const struct config *a, const struct config *b)
{
	return a->gate_rate_per_hour != b->gate_rate_per_hour || a->gate_burst != b->gate_burst ||
	       a->ngate_deny != b->ngate_deny ||
	       memcmp(a->gate_deny, b->gate_deny, a->ngate_deny * sizeof(a->gate_deny[0])) != 0;
}

static void follow(struct gate *g, struct config *cfg)
{
	struct steer_gate_opts o;
	int rc;

	if (cfg == g->applied)
		return;
	if (limits_differ(g->applied, cfg)) {
		opts_from_config(cfg, &o);
		rc = steer_gate_reconfigure(g->sg, &o);
		if (rc) { /* config_validate() refused these already: keep what holds */
			log_error("gate", "cannot apply the reloaded limits: %s", strerror(-rc));
			return;
		}
		log_limits("gate_reload", cfg, g->queue);
	}
	/* Held, not only compared: a freed snapshot's address may come back as a new one. */
	config_ref(cfg);
	config_unref(g->applied);
	g->applied = cfg;
}

int gate_dispatch(struct gate *g, struct config *cfg)
{
	follow(g, cfg);
	return steer_gate_dispatch(g->sg);
}

static void format_source(const uint8_t src[16], char *buf, size_t n)
{
	static const uint8_t v4[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

	if (memcmp(src, v4, sizeof(v4)) == 0)
		inet_ntop(AF_INET, src + 12, buf, (socklen_t)n);
	else
		inet_ntop(AF_INET6, src, buf, (socklen_t)n);
}

static bool summary_pending(const struct gate *g, const struct steer_gate_stats *now)
{
	return now->denied_list != g->logged.denied_list ||
	       now->denied_rate != g->logged.denied_rate ||
	       now->queue_overruns != g->logged.queue_overruns;
}

/* The refusals since the last line, and the latest refused source. */
static void log_summary(struct gate *g, const struct steer_gate_stats *now)
{
	enum steer_gate_verdict why;
	uint64_t overruns = now->queue_overruns - g->logged.queue_overruns;
	char source[INET6_ADDRSTRLEN];
	struct log_line l;
	uint8_t src[16];

	/* Overruns lose SYNs without a decision: worth a warning. Refusals are the gate
	 * doing its job. */
	if (log_enabled(overruns ? LOG_WARN : LOG_INFO)) {
		log_line_begin(&l, overruns ? LOG_WARN : LOG_INFO, "gate_denied");
		log_kv_u64(&l, "queue", g->queue);
		log_kv_u64(&l, "denied_list", now->denied_list - g->logged.denied_list);
		log_kv_u64(&l, "denied_rate", now->denied_rate - g->logged.denied_rate);
		log_kv_u64(&l, "queue_overruns", overruns);
		if (steer_gate_last_denied(g->sg, src, &why)) {
			format_source(src, source, sizeof(source));
			log_kv_str(&l, "latest_source", source);
			log_kv_str(&l, "latest_reason",
				   why == STEER_GATE_DENY_LIST ? "deny_list" : "rate");
		}
		log_line_end(&l);
	}
	g->logged = *now;
}

int gate_log_due(struct gate *g, uint64_t now_ns)
{
	struct steer_gate_stats now;

	steer_gate_stats_get(g->sg, &now);
	if (!summary_pending(g, &now))
		return -1;
	if (now_ns >= g->next_log_ns) {
		log_summary(g, &now);
		g->next_log_ns = now_ns + GATE_LOG_INTERVAL_NS;
		return -1;
	}
	/* Rounded up, so the wake-up is never early. */
	return (int)((g->next_log_ns - now_ns + NSEC_PER_MSEC - 1) / NSEC_PER_MSEC);
}

void gate_stats(const struct gate *g, struct steer_gate_stats *out)
{
	steer_gate_stats_get(g->sg, out);
}

const struct steer_gate *gate_steer(const struct gate *g)
{
	return g->sg;
}

json_t *gate_status_json(const struct gate *g, const struct config *cfg)
{
	struct steer_gate_stats st;
	char rate[32], range[CIDR_STRLEN];
	json_t *obj = json_object(), *deny = json_array();

	if (!obj || !deny || config_get(cfg, "gate.rate", rate, sizeof(rate)))
		goto err;
	for (unsigned i = 0; i < cfg->ngate_deny; i++) {
		cidr_format(&cfg->gate_deny[i], range, sizeof(range));
		if (json_array_append_new(deny, json_string(range)))
			goto err;
	}
	gate_stats(g, &st);
	/* deny first: from here on obj owns it, or jansson released it when the set failed. */
	if (json_object_set_new(obj, "deny", deny) ||
	    json_object_set_new(obj, "queue", json_integer(g->queue)) ||
	    json_object_set_new(obj, "rate", json_string(rate)) ||
	    json_object_set_new(obj, "burst", json_integer(cfg->gate_burst)) ||
	    json_object_set_new(obj, "max_sources", json_integer(g->max_sources)) ||
	    json_object_set_new(obj, "accepted", json_integer((json_int_t)st.accepted)) ||
	    json_object_set_new(obj, "denied_list", json_integer((json_int_t)st.denied_list)) ||
	    json_object_set_new(obj, "denied_rate", json_integer((json_int_t)st.denied_rate)) ||
	    json_object_set_new(obj, "queue_overruns",
				json_integer((json_int_t)st.queue_overruns))) {
		json_decref(obj);
		return NULL;
	}
	return obj;
err:
	json_decref(deny);
	json_decref(obj);
	return NULL;
}

void gate_close(struct gate *g)
{
	struct steer_gate_stats now;

	if (!g)
		return;
	steer_gate_stats_get(g->sg, &now);
	if (summary_pending(g, &now))
		log_summary(g, &now);
	steer_gate_close(g->sg);
	config_unref(g->applied);
	free(g);
}
