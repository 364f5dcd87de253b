/*
 * steer_gate: the optional admission gate. New TCP SYNs to protected ports are queued by
 * the kernel (nft "queue" in pgwarden's table, see steer_net.c) to an NFQUEUE that pgwardend
 * reads here with libnetfilter_queue; each gets a verdict before any socket exists:
 *
 *   source in a deny CIDR                   → drop
 *   source over its connection rate         → drop (token bucket per source address)
 *   otherwise                               → accept
 *
 * Memory is bounded: sources live in a fixed open-addressing table; when a probe window is
 * full the least recently seen source in it is replaced, so a spoofed-source flood costs
 * the table's size and no more. Single-threaded: the thread that owns the gate's fd calls
 * steer_gate_dispatch() when it is readable; only the counters may be read from elsewhere.
 * Nothing is logged per packet (a SYN flood must not become a log flood): the owner
 * summarises from the counters and steer_gate_last_denied().
 *
 * With no reader the kernel drops queued packets (fail-closed) unless the rule was made with
 * "bypass", which attach does only in fail-open mode.
 */
#include "steer/steer_internal.h"

#include "base/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define GATE_PROBE 8 /* slots examined per source before one is replaced */

struct gate_source {
	uint8_t addr[16]; /* IPv4 as ::ffff:a.b.c.d */
	uint64_t last_ns; /* 0: free slot */
	double tokens;
};

struct steer_gate {
	struct steer_gate_opts o;
	struct gate_source *table;
	uint32_t mask; /* table size - 1 */
	struct nfq_handle *h;
	struct nfq_q_handle *qh;
	int fd;
	/* Single writer (the owner), any reader: relaxed atomic loads and stores, as in a
	 * metrics shard (stat_inc()). */
	struct steer_gate_stats stats;
	uint8_t last_denied[16];
	enum steer_gate_verdict last_why; /* STEER_GATE_ACCEPT: nothing denied yet */
};

static void stat_inc(uint64_t *v)
{
	__atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static uint32_t addr_hash(const uint8_t a[16])
{
	uint32_t h = 2166136261u; /* FNV-1a: sources are attacker-chosen, but the table only
				   * ever holds its fixed size; a collision costs a replacement */

	for (int i = 0; i < 16; i++)
		h = (h ^ a[i]) * 16777619u;
	return h;
}

static bool opts_valid(const struct steer_gate_opts *o)
{
	return o->rate_per_sec >= 0 && (o->rate_per_sec == 0 || o->burst > 0) &&
	       o->ndeny <= STEER_GATE_MAX_DENY;
}

int steer_gate_new(const struct steer_gate_opts *o, struct steer_gate **out)
{
	struct steer_gate *g;
	uint32_t size = 64;

	*out = NULL;
	if (!opts_valid(o))
		return -EINVAL;
	while (size < o->max_sources && size < (1u << 24))
		size <<= 1;
	g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->table = calloc(size, sizeof(*g->table));
	if (!g->table) {
		free(g);
		return -ENOMEM;
	}
	g->o = *o;
	g->mask = size - 1;
	g->fd = -1;
	*out = g;
	return 0;
}

int steer_gate_reconfigure(struct steer_gate *g, const struct steer_gate_opts *o)
{
	if (!opts_valid(o))
		return -EINVAL;
	/* A bucket fuller than the new burst is capped at its next decision, so a lower burst
	 * holds at once and nothing else needs walking. */
	g->o.rate_per_sec = o->rate_per_sec;
	g->o.burst = o->burst;
	memcpy(g->o.deny, o->deny, o->ndeny * sizeof(o->deny[0]));
	g->o.ndeny = o->ndeny;
	return 0;
}

/* Count a refusal and remember it as the latest. */
static enum steer_gate_verdict deny(struct steer_gate *g, const uint8_t src[16],
				    enum steer_gate_verdict why)
{
	stat_inc(why == STEER_GATE_DENY_LIST ? &g->stats.denied_list : &g->stats.denied_rate);
	memcpy(g->last_denied, src, sizeof(g->last_denied));
	g->last_why = why;
	return why;
}

enum steer_gate_verdict steer_gate_decide(struct steer_gate *g, const uint8_t src[16],
					  uint64_t now_ns)
{
	struct gate_source *slot = NULL, *oldest = NULL;
	uint32_t h;

	for (unsigned i = 0; i < g->o.ndeny; i++)
		if (cidr_match(&g->o.deny[i], src))
			return deny(g, src, STEER_GATE_DENY_LIST);
	if (g->o.rate_per_sec <= 0) {
		stat_inc(&g->stats.accepted);
		return STEER_GATE_ACCEPT;
	}
	h = addr_hash(src);
	for (unsigned i = 0; i < GATE_PROBE; i++) {
		struct gate_source *s = &g->table[(h + i) & g->mask];

		if (s->last_ns && memcmp(s->addr, src, 16) == 0) {
			slot = s;
			break;
		}
		if (!oldest || s->last_ns < oldest->last_ns)
			oldest = s; /* a free slot has last_ns 0: it wins */
	}
	if (!slot) {
		slot = oldest;
		memcpy(slot->addr, src, 16);
		slot->tokens = (double)g->o.burst;
		slot->last_ns = now_ns;
	} else {
		double add = (double)(now_ns - slot->last_ns) / 1e9 * g->o.rate_per_sec;

		slot->tokens += add;
		if (slot->tokens > (double)g->o.burst)
			slot->tokens = (double)g->o.burst;
		slot->last_ns = now_ns;
	}
	if (!slot->last_ns)
		slot->last_ns = 1;
	if (slot->tokens >= 1.0) {
		slot->tokens -= 1.0;
		stat_inc(&g->stats.accepted);
		return STEER_GATE_ACCEPT;
	}
	return deny(g, src, STEER_GATE_DENY_RATE);
}

/* The source address of an IPv4 or IPv6 packet as 16 bytes; false when too short. */
static bool packet_source(const uint8_t *p, int len, uint8_t out[16])
{
	if (len >= 20 && (p[0] >> 4) == 4) {
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, p + 12, 4);
		return true;
	}
	if (len >= 40 && (p[0] >> 4) == 6) {
		memcpy(out, p + 8, 16);
		return true;
	}
	return false;
}

static int gate_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa,
		       void *data)
{
	struct steer_gate *g = data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	unsigned char *payload;
	uint8_t src[16];
	int len;
	uint32_t verdict = NF_ACCEPT;

	if (!ph)
		return 0;
	len = nfq_get_payload(nfa, &payload);
	if (packet_source(payload, len, src) &&
	    steer_gate_decide(g, src, clock_mono_ns()) != STEER_GATE_ACCEPT)
		verdict = NF_DROP;
	/* An unparsable packet is accepted: the gate limits, it does not parse protocols the
	 * queue rule cannot send it. */
	return nfq_set_verdict(qh, ntohl(ph->packet_id), verdict, 0, NULL);
}

int steer_gate_open(struct steer_gate *g)
{
	int fl;

	g->h = nfq_open();
	if (!g->h)
		return -errno ? -errno : -EIO;
	g->qh = nfq_create_queue(g->h, g->o.queue_num, gate_packet, g);
	if (!g->qh)
		goto err;
	/* Headers are enough to decide: IPv6 + TCP fits in 128 bytes. */
	if (nfq_set_mode(g->qh, NFQNL_COPY_PACKET, 128) < 0)
		goto err;
	nfq_set_queue_maxlen(g->qh, 4096);
	g->fd = nfq_fd(g->h);
	fl = fcntl(g->fd, F_GETFL);
	if (fl < 0 || fcntl(g->fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    fcntl(g->fd, F_SETFD, FD_CLOEXEC) < 0)
		goto err;
	return 0;
err:
	{
		int rc = errno ? -errno : -EIO;

		if (g->qh)
			nfq_destroy_queue(g->qh);
		nfq_close(g->h);
		g->qh = NULL;
		g->h = NULL;
		g->fd = -1;
		return rc;
	}
}

int steer_gate_fd(const struct steer_gate *g)
{
	return g->fd;
}

int steer_gate_dispatch(struct steer_gate *g)
{
	char buf[4096] __attribute__((aligned));

	for (int n = 0; n < 256; n++) { /* bounded: leave room for the rest of the loop */
		ssize_t r = recv(g->fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			if (errno == ENOBUFS) { /* the kernel dropped some: they were queued, so
						 * with no verdict they are gone (fail-closed) */
				stat_inc(&g->stats.queue_overruns);
				continue;
			}
			return -errno;
		}
		nfq_handle_packet(g->h, buf, (int)r);
	}
	return 0;
}

void steer_gate_stats_get(const struct steer_gate *g, struct steer_gate_stats *out)
{
	out->accepted = __atomic_load_n(&g->stats.accepted, __ATOMIC_RELAXED);
	out->denied_list = __atomic_load_n(&g->stats.denied_list, __ATOMIC_RELAXED);
	out->denied_rate = __atomic_load_n(&g->stats.denied_rate, __ATOMIC_RELAXED);
	out->queue_overruns = __atomic_load_n(&g->stats.queue_overruns, __ATOMIC_RELAXED);
}

bool steer_gate_last_denied(const struct steer_gate *g, uint8_t src[16],
			    enum steer_gate_verdict *why)
{
	if (g->last_why == STEER_GATE_ACCEPT)
		return false;
	memcpy(src, g->last_denied, sizeof(g->last_denied));
	*why = g->last_why;
	return true;
}

void steer_gate_unbind(struct steer_gate *g)
{
	if (g->qh)
		nfq_destroy_queue(g->qh);
	if (g->h)
		nfq_close(g->h);
	g->qh = NULL;
	g->h = NULL;
	g->fd = -1;
}

void steer_gate_close(struct steer_gate *g)
{
	if (!g)
		return;
	if (g->qh)
		nfq_destroy_queue(g->qh);
	if (g->h)
		nfq_close(g->h);
	free(g->table);
	free(g);
}
