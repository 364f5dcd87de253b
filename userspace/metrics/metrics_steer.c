/* metrics_steer: steering and admission gate counters as Prometheus families (see
 * metrics_steer.h). */
#include "metrics/metrics_steer.h"

#include "steer/steer.h"
#include "steer/steer_gate.h"

#include <jansson.h>
#include <stdlib.h>

static const char *instance_name(const char *ctx)
{
	const char *env = getenv("PGWARDEN_INSTANCE");

	if (ctx)
		return ctx;
	return env && *env ? env : STEER_DEFAULT_INSTANCE;
}

void metrics_steer_collect(void *ctx, struct metrics_writer *w)
{
	json_t *st = steer_status_json(instance_name(ctx));
	json_t *ctr, *v;
	const char *key;

	/* A daemon without the privilege to inspect BPF objects (the packaged unit has no
	 * CAP_SYS_ADMIN) cannot tell: say nothing rather than "not attached". */
	if (!st || json_object_get(st, "error")) {
		json_decref(st);
		return;
	}
	metrics_writer_family(w, "pgwarden_steer_attached", METRICS_GAUGE,
			      "1 while this instance's steering hooks are attached.");
	metrics_writer_sample(w, NULL, NULL, json_is_true(json_object_get(st, "attached")) ? 1 : 0);
	ctr = json_object_get(st, "counters");
	if (json_is_object(ctr) && json_object_size(ctr)) {
		metrics_writer_family(w, "pgwarden_steer_events_total", METRICS_COUNTER,
				      "Steering events counted by the BPF programs, by event.");
		json_object_foreach(ctr, key, v)
			if (json_is_integer(v))
				metrics_writer_sample(w, "event", key, (double)json_integer_value(v));
	}
	metrics_writer_family(w, "pgwarden_steer_leftovers", METRICS_GAUGE,
			      "Steering state left by a crash (pin dirs, nft tables, rules) that "
			      "the next attach or detach removes.");
	metrics_writer_sample(w, NULL, NULL, (double)json_array_size(json_object_get(st, "leftovers")));
	json_decref(st);
}

int metrics_steer_register(struct metrics_registry *r, const char *instance)
{
	return metrics_collector_add(r, metrics_steer_collect, (void *)instance);
}

static void gate_collect(void *ctx, struct metrics_writer *w)
{
	struct steer_gate_stats st;

	steer_gate_stats_get(ctx, &st);
	metrics_writer_family(w, "pgwarden_gate_syns_total", METRICS_COUNTER,
			      "New connections from the network decided by the admission gate, "
			      "by verdict.");
	metrics_writer_sample(w, "verdict", "accepted", (double)st.accepted);
	metrics_writer_sample(w, "verdict", "denied_list", (double)st.denied_list);
	metrics_writer_sample(w, "verdict", "denied_rate", (double)st.denied_rate);
	metrics_writer_family(w, "pgwarden_gate_queue_overruns_total", METRICS_COUNTER,
			      "Times the admission gate's queue overran: SYNs lost undecided, so "
			      "dropped (their clients retry).");
	metrics_writer_sample(w, NULL, NULL, (double)st.queue_overruns);
}

int metrics_steer_gate_register(struct metrics_registry *r, const struct steer_gate *g)
{
	/* The collector only reads the gate's counters, which any thread may. */
	return metrics_collector_add(r, gate_collect, (void *)g);
}
