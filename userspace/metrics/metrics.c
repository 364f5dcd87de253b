/* metrics: sharded registry and Prometheus text exposition 0.0.4 (see metrics.h). */
#include "metrics/metrics.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define METRICS_MAX_COLLECTORS 16

struct metrics_family {
	const char *name;
	const char *help;
	const char *label;
	const char *const *values;
	enum metrics_type type;
	uint16_t nvalues;
	uint32_t per_value; /* slots per label value: 1, or nbounds + 2 for a histogram */
	uint64_t bounds[METRICS_MAX_BUCKETS];
	unsigned nbounds;
	double per_unit;
};

struct metrics_collector {
	void (*collect)(void *ctx, struct metrics_writer *w);
	void *ctx;
};

struct metrics_registry {
	pthread_mutex_t mu; /* shards list, retired, frozen, collectors */
	struct metrics_family fam[METRICS_MAX_FAMILIES];
	uint32_t base[METRICS_MAX_FAMILIES];
	uint16_t nvalues[METRICS_MAX_FAMILIES];
	unsigned nfam;
	uint32_t nslots;
	bool frozen;
	struct metrics_shard *shards;
	uint64_t *retired; /* values of freed shards, nslots long once frozen */
	struct metrics_collector coll[METRICS_MAX_COLLECTORS];
	unsigned ncoll;
};

struct metrics_writer {
	struct metrics_registry *reg;
	FILE *out;
	int err;
	const char *family; /* current collector family, NULL when none or invalid */
};

const char *metrics_type_to_str(enum metrics_type t)
{
	switch (t) {
	case METRICS_COUNTER:
		return "counter";
	case METRICS_GAUGE:
		return "gauge";
	case METRICS_HISTOGRAM:
		return "histogram";
	case METRICS_TYPE_COUNT:
		break;
	}
	return "untyped";
}

struct metrics_registry *metrics_registry_new(void)
{
	struct metrics_registry *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	pthread_mutex_init(&r->mu, NULL);
	return r;
}

void metrics_registry_free(struct metrics_registry *r)
{
	if (!r)
		return;
	pthread_mutex_destroy(&r->mu);
	free(r->retired);
	free(r);
}

/* ---- names ----------------------------------------------------------------------- */

static bool name_ok(const char *s, bool colon)
{
	if (!s || !*s)
		return false;
	for (size_t i = 0; s[i]; i++) {
		char c = s[i];
		bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
			     (colon && c == ':');

		if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
			return false;
	}
	return true;
}

static bool metric_name_ok(const char *s)
{
	return name_ok(s, true);
}

static bool label_name_ok(const char *s)
{
	return name_ok(s, false) && strncmp(s, "__", 2) != 0 && strcmp(s, "le") != 0;
}

static bool name_taken(const struct metrics_registry *r, const char *name)
{
	for (unsigned i = 0; i < r->nfam; i++)
		if (strcmp(r->fam[i].name, name) == 0)
			return true;
	return false;
}

/* ---- registration ------------------------------------------------------------------ */

static int family_add(struct metrics_registry *r, enum metrics_type type, const char *name,
		      const char *help, const char *label, const char *const *values,
		      const uint64_t *bounds, unsigned nbounds, double per_unit)
{
	struct metrics_family *f;
	unsigned nvalues = 1;
	int id;

	if (!metric_name_ok(name) || !help)
		return -EINVAL;
	if (label) {
		if (!label_name_ok(label) || !values)
			return -EINVAL;
		for (nvalues = 0; values[nvalues]; nvalues++)
			if (nvalues >= METRICS_MAX_LABEL_VALUES)
				return -EINVAL;
		if (nvalues == 0)
			return -EINVAL;
	} else if (values) {
		return -EINVAL;
	}
	if (type == METRICS_HISTOGRAM) {
		if (nbounds == 0 || nbounds > METRICS_MAX_BUCKETS || !bounds || !(per_unit > 0))
			return -EINVAL;
		for (unsigned i = 1; i < nbounds; i++)
			if (bounds[i] <= bounds[i - 1])
				return -EINVAL;
	}

	pthread_mutex_lock(&r->mu);
	if (r->frozen) {
		id = -EBUSY;
		goto out;
	}
	if (name_taken(r, name)) {
		id = -EEXIST;
		goto out;
	}
	if (r->nfam >= METRICS_MAX_FAMILIES) {
		id = -ENOSPC;
		goto out;
	}
	id = (int)r->nfam++;
	f = &r->fam[id];
	memset(f, 0, sizeof(*f));
	f->name = name;
	f->help = help;
	f->label = label;
	f->values = label ? values : NULL;
	f->type = type;
	f->nvalues = (uint16_t)nvalues;
	f->per_value = 1;
	if (type == METRICS_HISTOGRAM) {
		memcpy(f->bounds, bounds, nbounds * sizeof(*bounds));
		f->nbounds = nbounds;
		f->per_unit = per_unit;
		f->per_value = nbounds + 2; /* buckets incl. +Inf, then the sum */
	}
	r->base[id] = r->nslots;
	/* Histograms are not addressed by the inline helpers: make them refuse. */
	r->nvalues[id] = type == METRICS_HISTOGRAM ? 0 : (uint16_t)nvalues;
	r->nslots += f->per_value * nvalues;
out:
	pthread_mutex_unlock(&r->mu);
	return id;
}

int metrics_counter_new(struct metrics_registry *r, const char *name, const char *help,
			const char *label, const char *const *values)
{
	return family_add(r, METRICS_COUNTER, name, help, label, values, NULL, 0, 0);
}

int metrics_gauge_new(struct metrics_registry *r, const char *name, const char *help,
		      const char *label, const char *const *values)
{
	return family_add(r, METRICS_GAUGE, name, help, label, values, NULL, 0, 0);
}

int metrics_histogram_new(struct metrics_registry *r, const char *name, const char *help,
			  const char *label, const char *const *values, const uint64_t *bounds,
			  unsigned nbounds, double per_unit)
{
	return family_add(r, METRICS_HISTOGRAM, name, help, label, values, bounds, nbounds,
			  per_unit);
}

int metrics_collector_add(struct metrics_registry *r,
			  void (*collect)(void *ctx, struct metrics_writer *w), void *ctx)
{
	int err = 0;

	if (!collect)
		return -EINVAL;
	pthread_mutex_lock(&r->mu);
	if (r->ncoll >= METRICS_MAX_COLLECTORS) {
		err = -ENOSPC;
	} else {
		r->coll[r->ncoll].collect = collect;
		r->coll[r->ncoll].ctx = ctx;
		r->ncoll++;
	}
	pthread_mutex_unlock(&r->mu);
	return err;
}

/* ---- shards ------------------------------------------------------------------------ */

struct metrics_shard *metrics_shard_new(struct metrics_registry *r)
{
	struct metrics_shard *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	pthread_mutex_lock(&r->mu);
	if (!r->frozen) {
		r->retired = calloc(r->nslots ? r->nslots : 1, sizeof(uint64_t));
		if (!r->retired)
			goto err_unlock;
		r->frozen = true;
	}
	s->slot = calloc(r->nslots ? r->nslots : 1, sizeof(uint64_t));
	if (!s->slot)
		goto err_unlock;
	s->reg = r;
	s->base = r->base;
	s->nvalues = r->nvalues;
	s->next = r->shards;
	r->shards = s;
	pthread_mutex_unlock(&r->mu);
	return s;

err_unlock:
	pthread_mutex_unlock(&r->mu);
	free(s);
	return NULL;
}

void metrics_shard_free(struct metrics_shard *s)
{
	struct metrics_registry *r;

	if (!s)
		return;
	r = s->reg;
	pthread_mutex_lock(&r->mu);
	for (struct metrics_shard **pp = &r->shards; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	}
	for (uint32_t i = 0; i < r->nslots; i++)
		r->retired[i] += __atomic_load_n(&s->slot[i], __ATOMIC_RELAXED);
	pthread_mutex_unlock(&r->mu);
	free(s->slot);
	free(s);
}

void metrics_observe(struct metrics_shard *s, int id, unsigned label, uint64_t value)
{
	const struct metrics_family *f;
	uint64_t *p;
	unsigned b;

	if (id < 0 || (unsigned)id >= s->reg->nfam)
		return;
	f = &s->reg->fam[id];
	if (f->type != METRICS_HISTOGRAM || label >= f->nvalues)
		return;
	/* Smallest bucket whose bound is >= value (Prometheus buckets are "le"). */
	for (b = 0; b < f->nbounds && value > f->bounds[b]; b++)
		;
	p = &s->slot[s->base[id] + label * f->per_value];
	__atomic_store_n(&p[b], __atomic_load_n(&p[b], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
	p += f->nbounds + 1;
	__atomic_store_n(p, __atomic_load_n(p, __ATOMIC_RELAXED) + value, __ATOMIC_RELAXED);
}

/* Caller holds r->mu. */
static uint64_t slot_sum(const struct metrics_registry *r, uint32_t i)
{
	uint64_t v = r->retired ? r->retired[i] : 0;

	for (const struct metrics_shard *s = r->shards; s; s = s->next)
		v += __atomic_load_n(&s->slot[i], __ATOMIC_RELAXED);
	return v;
}

uint64_t metrics_value(struct metrics_registry *r, int id, unsigned label)
{
	const struct metrics_family *f;
	uint64_t v = 0;
	uint32_t base;

	pthread_mutex_lock(&r->mu);
	if (id < 0 || (unsigned)id >= r->nfam)
		goto out;
	f = &r->fam[id];
	if (label >= f->nvalues)
		goto out;
	base = r->base[id] + label * f->per_value;
	if (f->type == METRICS_HISTOGRAM) {
		for (unsigned b = 0; b <= f->nbounds; b++)
			v += slot_sum(r, base + b);
	} else {
		v = slot_sum(r, base);
	}
out:
	pthread_mutex_unlock(&r->mu);
	return v;
}

/* ---- exposition -------------------------------------------------------------------- */

const char *metrics_format_double(double v, char *buf, size_t n)
{
	if (isnan(v)) {
		snprintf(buf, n, "NaN");
	} else if (isinf(v)) {
		snprintf(buf, n, v > 0 ? "+Inf" : "-Inf");
	} else if (v == (double)(int64_t)v && v > -1e15 && v < 1e15) {
		snprintf(buf, n, "%lld", (long long)v);
	} else {
		/* Shortest precision that reads back exactly: "0.005", not "0.0050000000000000001". */
		for (int prec = 1; prec <= 17; prec++) {
			snprintf(buf, n, "%.*g", prec, v);
			if (strtod(buf, NULL) == v)
				break;
		}
	}
	return buf;
}

/* HELP text escapes backslash and newline; label values also escape the double quote. */
static void put_escaped(FILE *out, const char *s, bool quote)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", out);
		else if (*s == '\n')
			fputs("\\n", out);
		else if (quote && *s == '"')
			fputs("\\\"", out);
		else
			fputc(*s, out);
	}
}

static void put_header(FILE *out, const char *name, enum metrics_type type, const char *help)
{
	fprintf(out, "# HELP %s ", name);
	put_escaped(out, help ? help : "", false);
	fprintf(out, "\n# TYPE %s %s\n", name, metrics_type_to_str(type));
}

static void put_labels(FILE *out, const char *label, const char *value, const char *le)
{
	if (!label && !le)
		return;
	fputc('{', out);
	if (label) {
		fprintf(out, "%s=\"", label);
		put_escaped(out, value, true);
		fputc('"', out);
	}
	if (le)
		fprintf(out, "%sle=\"%s\"", label ? "," : "", le);
	fputc('}', out);
}

/* Caller holds r->mu. */
static void render_family(struct metrics_registry *r, unsigned id, FILE *out)
{
	const struct metrics_family *f = &r->fam[id];
	char num[64];

	put_header(out, f->name, f->type, f->help);
	for (unsigned l = 0; l < f->nvalues; l++) {
		const char *lv = f->label ? f->values[l] : NULL;
		uint32_t base = r->base[id] + l * f->per_value;

		if (f->type == METRICS_COUNTER) {
			fputs(f->name, out);
			put_labels(out, f->label, lv, NULL);
			fprintf(out, " %llu\n", (unsigned long long)slot_sum(r, base));
		} else if (f->type == METRICS_GAUGE) {
			fputs(f->name, out);
			put_labels(out, f->label, lv, NULL);
			fprintf(out, " %lld\n", (long long)(int64_t)slot_sum(r, base));
		} else {
			uint64_t cum = 0;

			for (unsigned b = 0; b <= f->nbounds; b++) {
				cum += slot_sum(r, base + b);
				if (b < f->nbounds)
					metrics_format_double((double)f->bounds[b] / f->per_unit, num,
							      sizeof(num));
				else
					snprintf(num, sizeof(num), "+Inf");
				fprintf(out, "%s_bucket", f->name);
				put_labels(out, f->label, lv, num);
				fprintf(out, " %llu\n", (unsigned long long)cum);
			}
			fprintf(out, "%s_sum", f->name);
			put_labels(out, f->label, lv, NULL);
			fprintf(out, " %s\n",
				metrics_format_double((double)slot_sum(r, base + f->nbounds + 1) /
							      f->per_unit,
						      num, sizeof(num)));
			fprintf(out, "%s_count", f->name);
			put_labels(out, f->label, lv, NULL);
			fprintf(out, " %llu\n", (unsigned long long)cum);
		}
	}
}

void metrics_writer_family(struct metrics_writer *w, const char *name, enum metrics_type type,
			   const char *help)
{
	w->family = NULL;
	/* Collectors emit single samples: a histogram needs the registry's shape. */
	if (!metric_name_ok(name) || type == METRICS_HISTOGRAM || type >= METRICS_TYPE_COUNT ||
	    name_taken(w->reg, name))
		return;
	w->family = name;
	put_header(w->out, name, type, help);
}

void metrics_writer_sample(struct metrics_writer *w, const char *label, const char *value,
			   double v)
{
	char num[64];

	if (!w->family || (label && (!label_name_ok(label) || !value)))
		return;
	fputs(w->family, w->out);
	put_labels(w->out, label, value, NULL);
	fprintf(w->out, " %s\n", metrics_format_double(v, num, sizeof(num)));
}

void metrics_writer_sample_labels(struct metrics_writer *w, const char *const *labels,
				  const char *const *values, unsigned n, double v)
{
	char num[64];

	if (!w->family)
		return;
	for (unsigned i = 0; i < n; i++)
		if (!label_name_ok(labels[i]) || !values[i])
			return;
	fputs(w->family, w->out);
	if (n) {
		fputc('{', w->out);
		for (unsigned i = 0; i < n; i++) {
			fprintf(w->out, "%s%s=\"", i ? "," : "", labels[i]);
			put_escaped(w->out, values[i], true);
			fputc('"', w->out);
		}
		fputc('}', w->out);
	}
	fprintf(w->out, " %s\n", metrics_format_double(v, num, sizeof(num)));
}

int metrics_render(struct metrics_registry *r, FILE *out)
{
	struct metrics_collector coll[METRICS_MAX_COLLECTORS];
	struct metrics_writer w = {.reg = r, .out = out};
	unsigned ncoll;

	pthread_mutex_lock(&r->mu);
	for (unsigned i = 0; i < r->nfam; i++)
		render_family(r, i, out);
	ncoll = r->ncoll;
	memcpy(coll, r->coll, sizeof(coll));
	pthread_mutex_unlock(&r->mu);

	/* Collectors run unlocked: they may take their own locks or read BPF maps. Family
	 * names are frozen by now (or only grow under the lock), so name_taken() is safe. */
	for (unsigned i = 0; i < ncoll; i++) {
		w.family = NULL;
		coll[i].collect(coll[i].ctx, &w);
	}
	if (fflush(out) != 0 || ferror(out))
		return -EIO;
	return 0;
}

char *metrics_render_string(struct metrics_registry *r, size_t *len)
{
	char *text = NULL;
	size_t n = 0;
	FILE *out = open_memstream(&text, &n);

	if (!out)
		return NULL;
	if (metrics_render(r, out) != 0) {
		fclose(out);
		free(text);
		return NULL;
	}
	if (fclose(out) != 0) {
		free(text);
		return NULL;
	}
	if (len)
		*len = n;
	return text;
}
