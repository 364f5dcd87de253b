/* guard: the relay's checks at accept, login, upstream connect and close (see guard.h). */
#include "relay/guard.h"

#include "base/clock.h"
#include "base/log.h"
#include "base/log_limit.h"
#include "relay/selfloop.h"
#include "steer/steer_origin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SQLSTATE_TOO_MANY_CONNECTIONS "53300"
/* sqlserver_rejected_establishment_of_sqlconnection: the connection itself is refused. */
#define SQLSTATE_REJECTED "08004"

struct guard {
	struct admission *admission;
	struct selfloop *loop;
	bool loop_told; /* atomic: a self-loop is logged once per process */
};

/* One limiter per kind of refusal: a flood of one kind does not hide the others. */
static struct log_limit limit_by_reason[MREFUSE_COUNT] = {
	[0 ... MREFUSE_COUNT - 1] = LOG_LIMIT_INIT(LOG_LIMIT_PEER_BURST, LOG_LIMIT_PEER_INTERVAL_MS),
};

int guard_new(const struct config *cfg, struct guard **out)
{
	struct guard *g = calloc(1, sizeof(*g));
	int rc;

	*out = NULL;
	if (!g)
		return -ENOMEM;
	rc = admission_new(cfg->admission_max_sources, &g->admission);
	if (!rc)
		rc = selfloop_new(&g->loop);
	if (rc) {
		guard_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

void guard_free(struct guard *g)
{
	if (!g)
		return;
	admission_free(g->admission);
	selfloop_free(g->loop);
	free(g);
}

static void source_of(const struct session *s, struct admission_source *src)
{
	const struct session_process *proc = session_process(s);

	if (proc->known)
		admission_source_uid(src, proc->uid);
	else if (s->client.ss.sa.sa_family == AF_INET || s->client.ss.sa.sa_family == AF_INET6)
		admission_source_addr(src, &s->client);
	else
		memset(src, 0, sizeof(*src)); /* a Unix client without credentials: one shared source */
}

/* Count the refusal, log it within limits, and fill the client's FATAL. */
static int refuse(const struct session *s, const struct admission_source *src,
		  enum metrics_refuse_reason why, struct metrics_shard *shard,
		  const struct metrics_std *mstd, struct guard_refusal *r, const char *sqlstate,
		  const char *fmt, ...) __attribute__((format(printf, 8, 9)));

static int refuse(const struct session *s, const struct admission_source *src,
		  enum metrics_refuse_reason why, struct metrics_shard *shard,
		  const struct metrics_std *mstd, struct guard_refusal *r, const char *sqlstate,
		  const char *fmt, ...)
{
	char peer[ADDR_STRLEN], dialled[ADDR_STRLEN], who[ADMISSION_SOURCE_STRLEN];
	struct log_line l;
	uint64_t suppressed;
	va_list ap;

	r->sqlstate = sqlstate;
	va_start(ap, fmt);
	vsnprintf(r->message, sizeof(r->message), fmt, ap);
	va_end(ap);
	if (shard)
		metrics_inc(shard, mstd->refused, why);
	if (why == MREFUSE_LOOP || !log_enabled(LOG_WARN) ||
	    !log_limit_allow(&limit_by_reason[why], clock_mono_ns(), &suppressed))
		return -EPERM;
	log_line_begin(&l, LOG_WARN, "connection_refused");
	log_kv_str(&l, "peer", addr_format(&s->client.ss.sa, peer, sizeof(peer)));
	if (src)
		log_kv_str(&l, "source", admission_source_format(src, who, sizeof(who)));
	if (s->route == SESSION_ROUTE_TPROXY)
		log_kv_str(&l, "dialled", addr_format(&s->dialled.ss.sa, dialled, sizeof(dialled)));
	log_kv_str(&l, "reason", metrics_std_refuse_names[why]);
	log_kv_str(&l, "msg", r->message);
	if (suppressed)
		log_kv_u64(&l, "suppressed", suppressed);
	log_line_end(&l);
	return -EPERM;
}

/* The relay's own upstream connection, come back to it: its own Unix socket (the peer is
 * this process), or one of its TCP upstream sockets. */
static bool is_self_loop(struct guard *g, const struct session *s)
{
	if (s->client.ss.sa.sa_family == AF_UNIX) {
		const struct session_process *proc = session_process(s);

		return proc->known && proc->tgid == (uint32_t)getpid();
	}
	/* Steered connections come through the hooks, which never steer the relay's marked
	 * sockets; for the rest the accepted socket's own address is s->dialled. */
	if (s->route == SESSION_ROUTE_STEERED)
		return false;
	return selfloop_is_own(g->loop, &s->client, &s->dialled);
}

int guard_accept(struct guard *g, const struct config *cfg, struct steer_origin *so,
		 const struct session *s, struct guard_slot *slot, struct metrics_shard *shard,
		 const struct metrics_std *mstd, struct guard_refusal *r)
{
	struct admission_limits lim = {
		.prelogin_max = cfg->admission_prelogin_max,
		.prelogin_per_source = cfg->admission_prelogin_per_source,
		.rate_per_sec = (double)cfg->admission_rate_per_hour / 3600.0,
		.burst = cfg->admission_burst,
	};
	char dialled[ADDR_STRLEN];

	memset(slot, 0, sizeof(*slot));
	if (is_self_loop(g, s)) {
		if (!__atomic_exchange_n(&g->loop_told, true, __ATOMIC_RELAXED))
			log_error("self_loop", "the relay's upstream connection came back to the relay "
				  "itself (upstream, NAT or routing leads to one of its listeners): "
				  "refused; further loops are only counted (reason=\"loop\")");
		return refuse(s, NULL, MREFUSE_LOOP, shard, mstd, r, SQLSTATE_REJECTED,
			      "pgwarden refuses a connection from itself: its upstream leads back to it");
	}
	/* Fail closed: a steered connection the kernel could not record is refused, never
	 * served as explicit (it would reach the upstream with no process identity). */
	if (steer_origin_unrecorded(so, s))
		return refuse(s, NULL, MREFUSE_UNRECORDED, shard, mstd, r, SQLSTATE_TOO_MANY_CONNECTIONS,
			      "connection refused: steered connection without a kernel origin record "
			      "(origin map full?); pgwarden does not relay it unidentified");
	if (s->route == SESSION_ROUTE_TPROXY && !steer_origin_destination_allowed(so, &s->dialled))
		return refuse(s, NULL, MREFUSE_DESTINATION, shard, mstd, r, SQLSTATE_REJECTED,
			      "connection refused: %s is not a protected destination",
			      addr_format(&s->dialled.ss.sa, dialled, sizeof(dialled)));
	source_of(s, &slot->source);
	switch (admission_enter(g->admission, &lim, &slot->source, clock_mono_ns())) {
	case ADMISSION_ACCEPT:
		slot->prelogin = true;
		return 0;
	case ADMISSION_PRELOGIN_SOURCE:
		return refuse(s, &slot->source, MREFUSE_PRELOGIN_SOURCE, shard, mstd, r,
			      SQLSTATE_TOO_MANY_CONNECTIONS,
			      "too many connections from this source are still logging in");
	case ADMISSION_SOURCE_RATE:
		return refuse(s, &slot->source, MREFUSE_RATE_LIMIT, shard, mstd, r,
			      SQLSTATE_TOO_MANY_CONNECTIONS,
			      "connection rate from this source exceeded");
	case ADMISSION_PRELOGIN_TOTAL:
	default:
		return refuse(s, &slot->source, MREFUSE_PRELOGIN_TOTAL, shard, mstd, r,
			      SQLSTATE_TOO_MANY_CONNECTIONS, "sorry, too many clients already");
	}
}

void guard_login(struct guard *g, struct guard_slot *slot)
{
	if (!slot->prelogin)
		return;
	slot->prelogin = false;
	admission_leave(g->admission, &slot->source);
}

void guard_upstream(struct guard *g, struct guard_slot *slot, int fd, const struct addr *to)
{
	guard_upstream_forget(g, slot);
	if (to && (to->ss.sa.sa_family == AF_INET || to->ss.sa.sa_family == AF_INET6))
		slot->upstream = selfloop_add(g->loop, fd, to);
}

void guard_upstream_forget(struct guard *g, struct guard_slot *slot)
{
	if (!slot->upstream)
		return;
	selfloop_forget(g->loop, slot->upstream);
	slot->upstream = NULL;
}

void guard_close(struct guard *g, struct guard_slot *slot)
{
	guard_login(g, slot);
	guard_upstream_forget(g, slot);
}

uint32_t guard_prelogin(struct guard *g)
{
	return g ? admission_prelogin(g->admission) : 0;
}
