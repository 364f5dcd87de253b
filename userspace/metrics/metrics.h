/*
 * metrics: a registry of counters, gauges and histograms, sharded per worker, rendered in
 * the Prometheus text exposition format 0.0.4.
 *
 * Threading model. Families are registered once at start-up, before the first shard exists
 * (metrics_shard_new() freezes the registry). Each worker then owns one shard: a flat array
 * of 64-bit slots that only that worker writes, with relaxed atomic loads and stores (plain
 * MOVs on x86_64, no lock prefix), so the data path never contends and never takes a lock.
 * The scrape thread sums every shard at render time, reading the slots racily: a value may
 * be one increment stale, never torn. A shard freed when its worker exits is folded into
 * the registry first, so counters never go backwards.
 *
 * Every family has at most one label dimension whose values are fixed at registration
 * (state, reason, type, direction): the data path indexes them by number, never by string,
 * and the series set is bounded by construction. A label index out of range is dropped.
 *
 * Values that only exist elsewhere (the BPF steering maps, pool sizes) come from collectors:
 * callbacks run on the scrape thread that emit whole families through metrics_writer.
 *
 * Histogram observations are unsigned integers in a family-defined unit (nanoseconds for
 * the *_seconds families); `per_unit` is how many of them make one exposed base unit (1e9
 * nanoseconds per second). Dividing, not multiplying by 1e-9, keeps 0.001 exact.
 */
#ifndef PGWARDEN_METRICS_H
#define PGWARDEN_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum metrics_type {
	METRICS_COUNTER = 0,
	METRICS_GAUGE,
	METRICS_HISTOGRAM,
	METRICS_TYPE_COUNT,
};

const char *metrics_type_to_str(enum metrics_type t);

#define METRICS_MAX_FAMILIES 128
#define METRICS_MAX_LABEL_VALUES 64
#define METRICS_MAX_BUCKETS 32

struct metrics_registry;
struct metrics_writer;

/* A worker's private slots. Fields are read by inline helpers; treat them as opaque. */
struct metrics_shard {
	struct metrics_registry *reg;
	struct metrics_shard *next; /* registry's list, under its mutex */
	const uint32_t *base;       /* family id → first slot */
	const uint16_t *nvalues;    /* family id → label value count (1 when unlabelled) */
	uint64_t *slot;
};

/* NULL on ENOMEM. */
struct metrics_registry *metrics_registry_new(void);
/* Frees the registry; every shard must have been freed first. */
void metrics_registry_free(struct metrics_registry *r);

/*
 * Register a family. name and label follow Prometheus rules ([a-zA-Z_:][a-zA-Z0-9_:]*,
 * labels without ':' and not starting with "__"); label is NULL for an unlabelled family,
 * otherwise values is a NULL-terminated list of its values (1..METRICS_MAX_LABEL_VALUES).
 * Strings must outlive the registry (string literals). Returns the family id (>= 0), or
 * -EINVAL (bad name, label or values), -EEXIST (name taken), -EBUSY (a shard exists),
 * -ENOSPC (too many families).
 */
int metrics_counter_new(struct metrics_registry *r, const char *name, const char *help,
			const char *label, const char *const *values)
	__attribute__((warn_unused_result));
int metrics_gauge_new(struct metrics_registry *r, const char *name, const char *help,
		      const char *label, const char *const *values)
	__attribute__((warn_unused_result));
/* bounds: nbounds strictly increasing upper bounds in observation units (1..32); +Inf is
 * implicit. per_unit observations make one exposed unit (1e9 for ns → seconds). */
int metrics_histogram_new(struct metrics_registry *r, const char *name, const char *help,
			  const char *label, const char *const *values, const uint64_t *bounds,
			  unsigned nbounds, double per_unit) __attribute__((warn_unused_result));

/* A collector emits families that live outside the shards. It runs on the scrape thread
 * and must not block for long. Up to 16 collectors; 0, -EINVAL or -ENOSPC. */
int metrics_collector_add(struct metrics_registry *r,
			  void (*collect)(void *ctx, struct metrics_writer *w), void *ctx)
	__attribute__((warn_unused_result));

/* A shard for one worker (freezes the registry). NULL on ENOMEM. Thread-safe. */
struct metrics_shard *metrics_shard_new(struct metrics_registry *r)
	__attribute__((warn_unused_result));
/* Fold the shard's values into the registry and free it. Thread-safe. */
void metrics_shard_free(struct metrics_shard *s);

/* ---- data path: the owning worker only ------------------------------------------ */

static inline uint64_t *metrics_slot_(struct metrics_shard *s, int id, unsigned label)
{
	if (id < 0 || label >= s->nvalues[id])
		return NULL;
	return &s->slot[s->base[id] + label];
}

/* Single writer per shard: load + store, no read-modify-write lock. */
static inline void metrics_add(struct metrics_shard *s, int id, unsigned label, uint64_t n)
{
	uint64_t *p = metrics_slot_(s, id, label);

	if (p)
		__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

static inline void metrics_inc(struct metrics_shard *s, int id, unsigned label)
{
	metrics_add(s, id, label, 1);
}

/* Gauges are summed across shards as signed values: a shard may hold a negative part. */
static inline void metrics_gauge_add(struct metrics_shard *s, int id, unsigned label,
				     int64_t delta)
{
	metrics_add(s, id, label, (uint64_t)delta);
}

/* One unit of a gauge moves from label `from` to label `to` (a session changing state,
 * twice per statement): the family is looked up once for both. */
static inline void metrics_gauge_move(struct metrics_shard *s, int id, unsigned from, unsigned to)
{
	uint64_t *p;

	if (id < 0 || from >= s->nvalues[id] || to >= s->nvalues[id])
		return;
	p = &s->slot[s->base[id]];
	__atomic_store_n(&p[from], __atomic_load_n(&p[from], __ATOMIC_RELAXED) - 1, __ATOMIC_RELAXED);
	__atomic_store_n(&p[to], __atomic_load_n(&p[to], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* Histogram observation in the family's unit (nanoseconds for *_seconds). */
void metrics_observe(struct metrics_shard *s, int id, unsigned label, uint64_t value);

/* ---- scrape side ------------------------------------------------------------------ */

/* Write every family (shards summed, then collectors) in text format 0.0.4.
 * 0, or -EIO on a write error. Thread-safe against shards being added and freed. */
int metrics_render(struct metrics_registry *r, FILE *out) __attribute__((warn_unused_result));

/* The same into a malloc'd NUL-terminated string; NULL on ENOMEM. */
char *metrics_render_string(struct metrics_registry *r, size_t *len);

/* Sum of one series across shards (tests, the admin status). Gauges come back as the
 * two's complement of a negative sum; histograms return their observation count. */
uint64_t metrics_value(struct metrics_registry *r, int id, unsigned label);

/* Collector output: one family header, then its samples. A sample's label is optional
 * (label NULL); its value is escaped. Families a collector emits must not reuse a
 * registered name; bad names are skipped rather than written. */
void metrics_writer_family(struct metrics_writer *w, const char *name, enum metrics_type type,
			   const char *help);
void metrics_writer_sample(struct metrics_writer *w, const char *label, const char *value,
			   double v);

/* A sample with n labels (an info metric such as build_info{version,commit}); skipped
 * whole when a label name is invalid or a value NULL. Values are escaped. */
void metrics_writer_sample_labels(struct metrics_writer *w, const char *const *labels,
				  const char *const *values, unsigned n, double v);

/* The shortest decimal that reads back as v ("0.005", "+Inf", "NaN"); returns buf. */
const char *metrics_format_double(double v, char *buf, size_t n);

#endif
