/*
 * policy: the process-wide current snapshot (publish, acquire, reload), its description
 * for pgwardenctl, and the policy's counters and their metrics collector.
 */
#include "policy/policy.h"

#include "base/log.h"
#include "metrics/metrics.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The current snapshot. A mutex, not a lock-free pointer swap: acquire must take its
 * reference before a concurrent publish can drop the last one, and sessions acquire only
 * at start and after a reload (policy_generation() is the lock-free check). */
static pthread_mutex_t current_lock = PTHREAD_MUTEX_INITIALIZER;
static struct policy *current;
static uint64_t generation;

void policy_publish(struct policy *p)
{
	struct policy *old;

	pthread_mutex_lock(&current_lock);
	old = current;
	current = p;
	if (p)
		p->generation = generation + 1;
	__atomic_store_n(&generation, generation + 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&current_lock);
	if (p) {
		struct log_line ll;

		log_line_begin(&ll, LOG_INFO, "policy_loaded");
		log_kv_str(&ll, "file", p->path);
		log_kv_str(&ll, "sha256", p->sha256_hex);
		log_kv_u64(&ll, "rules", p->nrules);
		log_kv_u64(&ll, "generation", p->generation);
		log_line_end(&ll);
	} else {
		log_msg(LOG_INFO, "policy_unloaded", "no policy: statements are not checked");
	}
	policy_unref(old);
}

struct policy *policy_acquire(void)
{
	struct policy *p;

	pthread_mutex_lock(&current_lock);
	p = current;
	if (p)
		policy_ref(p);
	pthread_mutex_unlock(&current_lock);
	return p;
}

uint64_t policy_generation(void)
{
	return __atomic_load_n(&generation, __ATOMIC_ACQUIRE);
}

int policy_reload(const char *path, int (*accept)(struct policy *p, char *err, size_t errlen),
		  char *err, size_t errlen)
{
	struct policy *p = policy_load_file(path, err, errlen);

	if (!p || (accept && accept(p, err, errlen))) {
		struct log_line ll;

		log_line_begin(&ll, LOG_ERROR, "policy_rejected");
		log_kv_str(&ll, "error", err);
		log_kv_str(&ll, "kept", "the running policy stays in force");
		log_line_end(&ll);
		policy_unref(p);
		return -1;
	}
	policy_publish(p);
	return 0;
}

/* ---- description ------------------------------------------------------------------------ */

static void list_strs(FILE *out, const char *what, const struct policy_strlist *l)
{
	if (!l->n)
		return;
	fprintf(out, "    %s:", what);
	for (unsigned i = 0; i < l->n; i++)
		fprintf(out, " %s", l->v[i]);
	fputc('\n', out);
}

static void list_names(FILE *out, const char *what, const struct policy_names *l)
{
	if (!l->n)
		return;
	fprintf(out, "    %s:", what);
	for (unsigned i = 0; i < l->n; i++)
		fprintf(out, " %s%s%s", l->v[i].schema, l->v[i].schema[0] ? "." : "", l->v[i].name);
	fputc('\n', out);
}

void policy_describe(const struct policy *p, FILE *out)
{
	fprintf(out, "%s: %u rule%s, sha256 %s\n", p->path, p->nrules, p->nrules == 1 ? "" : "s",
		p->sha256_hex);
	for (unsigned i = 0; i < p->nrules; i++) {
		const struct policy_rule *r = &p->rules[i];
		const struct policy_match *m = &r->match;
		char buf[CIDR_STRLEN];

		fprintf(out, "  %u. %s (line %u)\n", i + 1, r->name, r->line);
		list_strs(out, "user", &m->user);
		list_strs(out, "database", &m->database);
		list_strs(out, "application_name", &m->application_name);
		if (m->nsource || m->source_local) {
			fprintf(out, "    source:%s", m->source_local ? " local" : "");
			for (unsigned k = 0; k < m->nsource; k++)
				fprintf(out, " %s", cidr_format(&m->source[k], buf, sizeof(buf)));
			fputc('\n', out);
		}
		list_strs(out, "tls_identity", &m->tls_identity);
		if (m->auth_methods) {
			fprintf(out, "    auth_method:");
			for (unsigned k = 0; k < SESSION_AUTH_METHOD_COUNT; k++)
				if (m->auth_methods & (1u << k))
					fprintf(out, " %s", session_auth_method_to_str(k));
			fputc('\n', out);
		}
		if (m->nuid) {
			fprintf(out, "    uid:");
			for (unsigned k = 0; k < m->nuid; k++)
				fprintf(out, " %u", m->uid[k]);
			fputc('\n', out);
		}
		if (m->ngid) {
			fprintf(out, "    gid:");
			for (unsigned k = 0; k < m->ngid; k++)
				fprintf(out, " %u", m->gid[k]);
			fputc('\n', out);
		}
		list_strs(out, "comm", &m->comm);
		list_strs(out, "exe", &m->exe);
		list_strs(out, "cgroup", &m->cgroup);
		fprintf(out, "    allow:");
		if (!r->allow)
			fprintf(out, " nothing");
		for (unsigned c = 0; c < SQL_CLASS_UNKNOWN; c++)
			if (r->allow & SQL_CLASS_BIT(c))
				fprintf(out, " %s", sql_class_to_str(c));
		fputc('\n', out);
		list_names(out, "relations.allow", &r->relation_allow);
		list_names(out, "relations.deny", &r->relation_deny);
		list_names(out, "deny_functions", &r->function_deny);
		list_strs(out, "search_path", &r->search_path);
		fprintf(out, "    one_statement_per_query: %s, role_switch: %s, replication: %s, "
			     "audit: %s\n",
			r->one_statement_per_query ? "yes" : "no", r->role_switch ? "yes" : "no",
			r->replication ? "yes" : "no", policy_audit_to_str(r->audit));
		for (unsigned k = 0; k < r->nmasks; k++)
			fprintf(out, "    mask: %s.%s.%s: %s\n", r->masks[k].schema, r->masks[k].table,
				r->masks[k].column, r->masks[k].strategy);
		const struct policy_limits *l = &r->limits;

		if (l->statements_per_second)
			fprintf(out, "    limits: %u statements/s (burst %u), over the limit: %s\n",
				l->statements_per_second, l->burst,
				l->over == POLICY_OVER_WAIT ? "wait" : "reject (53400)");
		if (l->sessions_per_user || l->sessions_per_database || l->sessions_per_source)
			fprintf(out, "    limits: sessions per user %u, per database %u, per source %u "
				     "(0: none)\n",
				l->sessions_per_user, l->sessions_per_database, l->sessions_per_source);
		if (l->login_timeout_ms || l->idle_ms || l->idle_in_transaction_ms || l->lifetime_ms)
			fprintf(out, "    timeouts (ms, 0: none): login %llu, idle %llu, idle in "
				     "transaction %llu, lifetime %llu\n",
				(unsigned long long)l->login_timeout_ms, (unsigned long long)l->idle_ms,
				(unsigned long long)l->idle_in_transaction_ms,
				(unsigned long long)l->lifetime_ms);
	}
	fprintf(out, "  (no rule matched: the connection is refused)\n");
}

/* ---- counters --------------------------------------------------------------------------- */

/* Denials per rule name, across reloads; a fixed table so the collector never allocates.
 * Rule names past its size count under "other". */
#define DENIAL_SLOTS 1024

struct denial_slot {
	char name[POLICY_NAME_MAX + 1];
	uint64_t count; /* atomic */
};

static struct denial_slot denials[DENIAL_SLOTS];
static unsigned ndenials; /* atomic; slots below it are named */
static pthread_mutex_t denial_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t denials_other;
static uint64_t firings[POLICY_FIRE_COUNT];

static struct denial_slot *denial_find(const char *rule, bool add)
{
	unsigned n = __atomic_load_n(&ndenials, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < n; i++)
		if (!strcmp(denials[i].name, rule))
			return &denials[i];
	if (!add)
		return NULL;
	pthread_mutex_lock(&denial_lock);
	n = ndenials;
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(denials[i].name, rule)) {
			pthread_mutex_unlock(&denial_lock);
			return &denials[i];
		}
	struct denial_slot *s = NULL;

	if (n < DENIAL_SLOTS) {
		s = &denials[n];
		snprintf(s->name, sizeof(s->name), "%s", rule);
		__atomic_store_n(&ndenials, n + 1, __ATOMIC_RELEASE);
	}
	pthread_mutex_unlock(&denial_lock);
	return s;
}

void policy_count_denial(const char *rule)
{
	struct denial_slot *s = denial_find(rule && *rule ? rule : "(none)", true);

	__atomic_add_fetch(s ? &s->count : &denials_other, 1, __ATOMIC_RELAXED);
}

uint64_t policy_denials(const char *rule)
{
	struct denial_slot *s = denial_find(rule, false);

	return s ? __atomic_load_n(&s->count, __ATOMIC_RELAXED) : 0;
}

void policy_count_firing(enum policy_firing f)
{
	if ((unsigned)f < POLICY_FIRE_COUNT)
		__atomic_add_fetch(&firings[f], 1, __ATOMIC_RELAXED);
}

uint64_t policy_firings(enum policy_firing f)
{
	return (unsigned)f < POLICY_FIRE_COUNT ? __atomic_load_n(&firings[f], __ATOMIC_RELAXED) : 0;
}

static void collect(void *ctx, struct metrics_writer *w)
{
	static const char *const fire_names[POLICY_FIRE_COUNT] = {
		"rate_reject", "rate_wait", "sessions", "connection_denied", "too_complex"};
	unsigned n = __atomic_load_n(&ndenials, __ATOMIC_ACQUIRE);

	metrics_writer_family(w, "pgwarden_policy_denials_total", METRICS_COUNTER,
			      "Client messages a policy rule denied, by rule name ((none): no "
			      "rule admitted the session).");
	for (unsigned i = 0; i < n; i++)
		metrics_writer_sample(w, "rule", denials[i].name,
				      (double)__atomic_load_n(&denials[i].count, __ATOMIC_RELAXED));
	if (__atomic_load_n(&denials_other, __ATOMIC_RELAXED))
		metrics_writer_sample(w, "rule", "other",
				      (double)__atomic_load_n(&denials_other, __ATOMIC_RELAXED));
	metrics_writer_family(w, "pgwarden_policy_limit_firings_total", METRICS_COUNTER,
			      "Policy limits that fired, by kind.");
	for (unsigned i = 0; i < POLICY_FIRE_COUNT; i++)
		metrics_writer_sample(w, "kind", fire_names[i], (double)policy_firings(i));
	metrics_writer_family(w, "pgwarden_policy_generation", METRICS_GAUGE,
			      "Policy files published since start (0: no policy).");
	metrics_writer_sample(w, NULL, NULL, (double)policy_generation());
	(void)ctx;
}

int policy_metrics_register(struct metrics_registry *r)
{
	return metrics_collector_add(r, collect, NULL);
}
