/*
 * steer_gate: the optional admission gate, pgwardend's side: new SYNs to protected ports
 * from the network wait in an NFQUEUE for a verdict (deny ranges, a per-source rate), with
 * bounded memory and no per-packet logging. The attach's rule: steer/steer.h (--gate-queue).
 */
#ifndef PGWARDEN_STEER_GATE_H
#define PGWARDEN_STEER_GATE_H

#include "base/cidr.h"

#include <stdbool.h>
#include <stdint.h>

#define STEER_GATE_MAX_DENY 64

struct steer_gate_opts {
	uint16_t queue_num;   /* as given to attach --gate-queue */
	double rate_per_sec;  /* new connections per second per source address; 0: no limit */
	uint32_t burst;       /* bucket size; required when rate_per_sec > 0 */
	uint32_t max_sources; /* tracked source addresses (rounded up to a power of two) */
	struct cidr deny[STEER_GATE_MAX_DENY];
	unsigned ndeny;
};

enum steer_gate_verdict {
	STEER_GATE_ACCEPT = 0,
	STEER_GATE_DENY_LIST,
	STEER_GATE_DENY_RATE,
};

struct steer_gate_stats {
	uint64_t accepted;
	uint64_t denied_list;
	uint64_t denied_rate;
	/* Times the kernel reported the queue's socket overrun (ENOBUFS): queued SYNs were
	 * lost unread, so they got no verdict and were dropped (their clients retry). */
	uint64_t queue_overruns;
};

struct steer_gate;

/* The decision state alone (no queue yet): unit tests and steer_gate_open() use it.
 * 0, -EINVAL (rate < 0, rate without burst, too many deny ranges) or -ENOMEM. */
int steer_gate_new(const struct steer_gate_opts *o, struct steer_gate **out)
	__attribute__((warn_unused_result));
/* Bind the NFQUEUE (needs CAP_NET_ADMIN). 0 or -errno (-EPERM also when another process
 * reads that queue); then poll steer_gate_fd() for EPOLLIN and call steer_gate_dispatch(),
 * which gives every queued SYN its verdict. */
int steer_gate_open(struct steer_gate *g) __attribute__((warn_unused_result));
int steer_gate_fd(const struct steer_gate *g);
/* Let go of the queue (steer_gate_open() binds it again), keeping the decision state and
 * the counters: a seamless restart's successor binds the queue meanwhile. */
void steer_gate_unbind(struct steer_gate *g);
/* Verdicts for what is queued, at most a bounded batch per call. 0, or -errno when the
 * queue's socket failed (the gate cannot read any more). Never logs per packet: a flood
 * must not become a log flood; the owner summarises (steer_gate_last_denied()). */
int steer_gate_dispatch(struct steer_gate *g) __attribute__((warn_unused_result));
/*
 * Take new limits (rate_per_sec, burst, deny) for the SYNs that come next; queue_num and
 * max_sources stay as they were given to steer_gate_new(). Sources keep their buckets,
 * capped at the new burst. 0 or -EINVAL (as steer_gate_new(); the gate is unchanged).
 */
int steer_gate_reconfigure(struct steer_gate *g, const struct steer_gate_opts *o)
	__attribute__((warn_unused_result));
/* One decision for a SYN from src (16 bytes, IPv4 mapped) at now_ns. */
enum steer_gate_verdict steer_gate_decide(struct steer_gate *g, const uint8_t src[16],
					  uint64_t now_ns);
/* The counters so far. Safe from any thread (each is written by the gate's owner alone and
 * read without tearing), so a scrape or a status request may call it at any time. */
void steer_gate_stats_get(const struct steer_gate *g, struct steer_gate_stats *out);
/* The source and reason of the latest refusal; false when nothing was refused yet. The
 * owner's thread only. */
bool steer_gate_last_denied(const struct steer_gate *g, uint8_t src[16],
			    enum steer_gate_verdict *why);
void steer_gate_close(struct steer_gate *g);

#endif
