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
 * steer_gate_dispatch() when it is readable.
 *
 * With no reader the kernel drops queued packets (fail-closed) unless the rule was made with
 * "bypass", which attach does only in fail-open mode.
 */
#include "steer/steer_internal.h"

#include "base/clock.h"
#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libnetfilter_queue/libnetfilter_queue.h>
#include <linux/netfilter.h>
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
	struct steer_gate_stats stats;
};

int steer_cidr_parse(const char *text, struct steer_cidr *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = strchr(text, '/');
	size_t hlen = slash ? (size_t)(slash - text) : strlen(text);
	unsigned long bits;
	unsigned max;
	char *end;

	memset(out, 0, sizeof(*out));
	if (hlen == 0 || hlen >= sizeof(host))
		return -EINVAL;
	memcpy(host, text, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, out->addr + 12) == 1) {
		out->addr[10] = out->addr[11] = 0xff;
		max = 32;
		out->v4 = true;
	} else if (inet_pton(AF_INET6, host, out->addr) == 1) {
		max = 128;
	} else {
		return -EINVAL;
	}
	if (!slash) {
		bits = max;
	} else {
		if (slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		errno = 0;
		bits = strtoul(slash + 1, &end, 10);
		if (errno || *end || bits > max)
			return -EINVAL;
	}
	out->bits = (uint8_t)(out->v4 ? bits + 96 : bits);
	return 0;
}

bool steer_cidr_match(const struct steer_cidr *c, const uint8_t addr[16])
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	if (memcmp(c->addr, addr, full) != 0)
		return false;
	if (rest) {
		uint8_t m = (uint8_t)(0xff << (8 - rest));

		if ((c->addr[full] & m) != (addr[full] & m))
			return false;
	}
	return true;
}

static uint32_t addr_hash(const uint8_t a[16])
{
	uint32_t h = 2166136261u; /* FNV-1a: sources are attacker-chosen, but the table only
				   * ever holds its fixed size; a collision costs a replacement */

	for (int i = 0; i < 16; i++)
		h = (h ^ a[i]) * 16777619u;
	return h;
}

int steer_gate_new(const struct steer_gate_opts *o, struct steer_gate **out)
{
	struct steer_gate *g;
	uint32_t size = 64;

	*out = NULL;
	if (o->rate_per_sec < 0 || (o->rate_per_sec > 0 && o->burst == 0) ||
	    o->ndeny > STEER_GATE_MAX_DENY)
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

enum steer_gate_verdict steer_gate_decide(struct steer_gate *g, const uint8_t src[16],
					  uint64_t now_ns)
{
	struct gate_source *slot = NULL, *oldest = NULL;
	uint32_t h;

	for (unsigned i = 0; i < g->o.ndeny; i++)
		if (steer_cidr_match(&g->o.deny[i], src)) {
			g->stats.denied_list++;
			return STEER_GATE_DENY_LIST;
		}
	if (g->o.rate_per_sec <= 0) {
		g->stats.accepted++;
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
		g->stats.accepted++;
		return STEER_GATE_ACCEPT;
	}
	g->stats.denied_rate++;
	return STEER_GATE_DENY_RATE;
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
	if (packet_source(payload, len, src)) {
		enum steer_gate_verdict v = steer_gate_decide(g, src, clock_mono_ns());

		if (v != STEER_GATE_ACCEPT) {
			char text[INET6_ADDRSTRLEN];

			verdict = NF_DROP;
			if (log_enabled(LOG_DEBUG))
				log_debug("gate_drop", "source=%s reason=%s",
					  inet_ntop(AF_INET6, src, text, sizeof(text)),
					  v == STEER_GATE_DENY_LIST ? "deny_list" : "rate");
		}
	}
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
	log_info("gate", "admission gate reading queue %u (rate %.1f/s burst %u per source, %u "
		 "deny ranges)", g->o.queue_num, g->o.rate_per_sec, g->o.burst, g->o.ndeny);
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
				log_warn("gate", "queue %u overran; some SYNs were dropped",
					 g->o.queue_num);
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
	*out = g->stats;
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
