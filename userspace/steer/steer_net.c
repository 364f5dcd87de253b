/*
 * steer_net: the netfilter and routing half of steering, for clients that arrive from the
 * network (TPROXY), and for the same-host server's replies to a relay connection that uses
 * the client's own address.
 *
 * nftables: one table, "inet <instance>", always written as a whole in one transaction
 * through libnftables ("add table; delete table; table { ... }" in one buffer), so a reader
 * sees the old ruleset or the new one, never half. Routing: an fwmark rule and a local
 * default route per family in pgwarden's own table, through libnl (never by running ip).
 *
 * Why each rule is there:
 *   prerouting, iif != lo   only packets from the network: local clients are the cgroup
 *                           hooks' business, and every locally generated packet (a local
 *                           client's, the relay's own) enters through lo.
 *   socket transparent 1    packets of connections the relay already accepted: mark them so
 *                           the fwmark rule delivers them locally.
 *   tcp dport P tproxy      new connections to protected ports: into the relay's
 *                           IP_TRANSPARENT listener.
 *   output: relay mark      the relay's upstream connections carry its SO_MARK; remember it
 *                           on the conntrack entry, and route the server's replies (which
 *                           are addressed to a foreign client address when the relay used
 *                           the client's own source) back into the local stack, to the relay.
 *   table comment           the TPROXY mark, route table and rule priority the routing half
 *                           uses. A fail-open attach's table outlives a killed daemon while
 *                           its links (and with them the BPF config) are gone: detach,
 *                           status and the next attach read them here, so routing made with
 *                           non-default values is found and removed too.
 */
#include "steer/steer_internal.h"

#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <net/if.h>
#include <netlink/netlink.h>
#include <netlink/route/route.h>
#include <netlink/route/rule.h>
#include <nftables/libnftables.h>
#include <stdio.h>
#include <string.h>
#include <linux/fib_rules.h>
#include <linux/rtnetlink.h>

/* The table comment naming the routing half's parameters (see above). */
#define NFT_ROUTING_COMMENT "pgwarden tproxy_mark=0x%x route_table=%u rule_priority=%u"

/* Run one nft command buffer; on failure the first line of nft's error goes into err. With
 * out, nft's output is copied there (truncated to outlen - 1 bytes, NUL-terminated). */
static int nft_run_out(const char *cmd, char *err, size_t errlen, char *out, size_t outlen)
{
	struct nft_ctx *nft = nft_ctx_new(NFT_CTX_DEFAULT);
	int rc;

	if (!nft) {
		snprintf(err, errlen, "nftables: out of memory");
		return -ENOMEM;
	}
	nft_ctx_buffer_output(nft);
	nft_ctx_buffer_error(nft);
	rc = nft_run_cmd_from_buffer(nft, cmd);
	if (rc != 0) {
		const char *e = nft_ctx_get_error_buffer(nft);
		size_t n = e ? strcspn(e, "\n") : 0;

		snprintf(err, errlen, "nftables: %.*s", (int)(n > 300 ? 300 : n), e ? e : "failed");
		nft_ctx_free(nft);
		return -EIO;
	}
	if (out && outlen) {
		const char *o = nft_ctx_get_output_buffer(nft);

		snprintf(out, outlen, "%s", o ? o : "");
	}
	nft_ctx_free(nft);
	return 0;
}

static int nft_run(const char *cmd, char *err, size_t errlen)
{
	return nft_run_out(cmd, err, errlen, NULL, 0);
}

/* Append to a fixed buffer; false once it would overflow. */
static bool bprintf(char *buf, size_t n, size_t *len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static bool bprintf(char *buf, size_t n, size_t *len, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (*len >= n)
		return false;
	va_start(ap, fmt);
	w = vsnprintf(buf + *len, n - *len, fmt, ap);
	va_end(ap);
	if (w < 0 || (size_t)w >= n - *len) {
		*len = n;
		return false;
	}
	*len += (size_t)w;
	return true;
}

int steer_nft_ruleset(const struct steer_opts *o, char *buf, size_t n)
{
	char ports[STEER_MAX_PORTS * 7 + 4] = "";
	char a4[STEER_MAX_ADDRS * 18] = "", a6[STEER_MAX_ADDRS * 42] = "";
	size_t len = 0, pl = 0, l4 = 0, l6 = 0;
	unsigned n4 = 0, n6 = 0;

	for (unsigned i = 0; i < o->nports; i++)
		bprintf(ports, sizeof(ports), &pl, "%s%u", i ? ", " : "", o->ports[i]);
	for (unsigned i = 0; i < o->naddresses; i++) {
		char host[INET6_ADDRSTRLEN];
		const struct sockaddr *sa = (const struct sockaddr *)&o->addresses[i].ss;

		if (sa->sa_family == AF_INET) {
			inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof(host));
			bprintf(a4, sizeof(a4), &l4, "%s%s", n4++ ? ", " : "", host);
		} else {
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof(host));
			bprintf(a6, sizeof(a6), &l6, "%s%s", n6++ ? ", " : "", host);
		}
	}
	bprintf(buf, n, &len, "add table inet %s\ndelete table inet %s\ntable inet %s {\n",
		o->instance, o->instance, o->instance);
	if (o->tproxy_port) {
		bprintf(buf, n, &len, "  comment \"" NFT_ROUTING_COMMENT "\"\n", o->tproxy_mark,
			o->route_table, o->rule_priority);
		bprintf(buf, n, &len,
			"  chain prerouting {\n"
			"    type filter hook prerouting priority mangle; policy accept;\n"
			"    iif != \"lo\" meta l4proto tcp socket transparent 1 meta mark set 0x%x "
			"accept\n",
			o->tproxy_mark);
		/* With addresses given, only those of the named family are diverted; with none,
		 * every address of both families. */
		if (o->naddresses == 0 || n4)
			bprintf(buf, n, &len,
				"    iif != \"lo\" meta nfproto ipv4 %s%s%stcp dport { %s } "
				"tproxy ip to :%u meta mark set 0x%x accept\n",
				n4 ? "ip daddr { " : "", n4 ? a4 : "", n4 ? " } " : "", ports,
				o->tproxy_port, o->tproxy_mark);
		if (o->naddresses == 0 || n6)
			bprintf(buf, n, &len,
				"    iif != \"lo\" meta nfproto ipv6 %s%s%stcp dport { %s } "
				"tproxy ip6 to :%u meta mark set 0x%x accept\n",
				n6 ? "ip6 daddr { " : "", n6 ? a6 : "", n6 ? " } " : "", ports,
				o->tproxy_port, o->tproxy_mark);
		bprintf(buf, n, &len,
			"  }\n"
			"  chain output {\n"
			"    type route hook output priority mangle; policy accept;\n"
			"    meta mark 0x%x ct mark set 0x%x\n"
			"    ct direction reply ct mark 0x%x meta mark set 0x%x\n"
			"  }\n",
			o->relay_mark, o->relay_mark, o->relay_mark, o->tproxy_mark);
	}
	if ((o->tproxy_port && !o->fail_open) || o->gate) {
		bprintf(buf, n, &len,
			"  chain input {\n"
			"    type filter hook input priority filter; policy accept;\n");
		/* Fail-closed for remote clients too: when no transparent listener takes a new
		 * connection, tproxy does not match and the SYN would go on to the server
		 * itself. Diverted SYNs carry the TPROXY mark; any other new connection from
		 * the network to a protected destination is refused, like a local one. */
		if (o->tproxy_port && !o->fail_open) {
			if (o->naddresses == 0 || n4)
				bprintf(buf, n, &len,
					"    iif != \"lo\" meta nfproto ipv4 %s%s%stcp dport { %s } "
					"tcp flags & (syn | ack) == syn meta mark != 0x%x "
					"reject with tcp reset\n",
					n4 ? "ip daddr { " : "", n4 ? a4 : "", n4 ? " } " : "", ports,
					o->tproxy_mark);
			if (o->naddresses == 0 || n6)
				bprintf(buf, n, &len,
					"    iif != \"lo\" meta nfproto ipv6 %s%s%stcp dport { %s } "
					"tcp flags & (syn | ack) == syn meta mark != 0x%x "
					"reject with tcp reset\n",
					n6 ? "ip6 daddr { " : "", n6 ? a6 : "", n6 ? " } " : "", ports,
					o->tproxy_mark);
		}
		/* The admission gate: new connections only (SYN without ACK), from the network
		 * only, before any socket exists. "bypass" (accept when nobody reads the queue)
		 * only in fail-open mode: fail-closed drops them until pgwardend reads again. */
		if (o->gate)
			bprintf(buf, n, &len,
				"    iif != \"lo\" tcp dport { %s } tcp flags & (syn | ack) == syn "
				"queue num %u%s\n",
				ports, o->gate_queue, o->fail_open ? " bypass" : "");
		bprintf(buf, n, &len, "  }\n");
	}
	if (!bprintf(buf, n, &len, "}\n"))
		return -ENOSPC;
	return 0;
}

int steer_nft_apply(const struct steer_opts *o, char *err, size_t errlen)
{
	char cmd[8192];
	int rc = steer_nft_ruleset(o, cmd, sizeof(cmd));

	if (rc) {
		snprintf(err, errlen, "nftables: ruleset too large");
		return rc;
	}
	rc = nft_run(cmd, err, errlen);
	if (rc && o->gate && strstr(err, "No such file or directory")) {
		/* The kernel knows no expression in the rule: the queue is the one expression
		 * a kernel may lack (CONFIG_NFT_QUEUE); the caller retries without it. */
		snprintf(err, errlen, "nftables: this kernel has no nft queue expression");
		return -EOPNOTSUPP;
	}
	return rc;
}

int steer_nft_delete(const char *instance)
{
	char cmd[128], err[STEER_ERR_MAX];

	/* "add" first makes the delete succeed whether or not the table exists. */
	snprintf(cmd, sizeof(cmd), "add table inet %s\ndelete table inet %s\n", instance, instance);
	return nft_run(cmd, err, sizeof(err));
}

bool steer_nft_present(const char *instance)
{
	char cmd[128], err[STEER_ERR_MAX];

	snprintf(cmd, sizeof(cmd), "list table inet %s", instance);
	return nft_run(cmd, err, sizeof(err)) == 0;
}

int steer_nft_routing_parse(const char *listing, uint32_t *mark, uint32_t *table,
			    uint32_t *prio)
{
	const char *p = listing ? strstr(listing, "comment \"pgwarden tproxy_mark=") : NULL;
	unsigned m, t, r;

	if (!p || sscanf(p, "comment \"" NFT_ROUTING_COMMENT "\"", &m, &t, &r) != 3)
		return -ENOENT;
	*mark = m;
	*table = t;
	*prio = r;
	return 0;
}

int steer_nft_routing(const char *instance, uint32_t *mark, uint32_t *table, uint32_t *prio)
{
	char cmd[128], err[STEER_ERR_MAX], out[8192];

	snprintf(cmd, sizeof(cmd), "list table inet %s", instance);
	if (nft_run_out(cmd, err, sizeof(err), out, sizeof(out)) != 0)
		return -ENOENT;
	return steer_nft_routing_parse(out, mark, table, prio);
}

static struct nl_sock *route_sock(void)
{
	struct nl_sock *sk = nl_socket_alloc();

	if (!sk)
		return NULL;
	if (nl_connect(sk, NETLINK_ROUTE) < 0) {
		nl_socket_free(sk);
		return NULL;
	}
	return sk;
}

/* libnl error → -errno, close enough for the caller's message. */
static int nl_to_errno(int nlerr)
{
	switch (-nlerr) {
	case NLE_EXIST: return -EEXIST;
	case NLE_OBJ_NOTFOUND: return -ENOENT;
	case NLE_PERM: return -EPERM;
	case NLE_NOMEM: return -ENOMEM;
	default: return -EIO;
	}
}

static int rule_op(struct nl_sock *sk, int family, uint32_t mark, uint32_t table, uint32_t prio,
		   bool add)
{
	struct rtnl_rule *r = rtnl_rule_alloc();
	int rc;

	if (!r)
		return -ENOMEM;
	rtnl_rule_set_family(r, family);
	rtnl_rule_set_mark(r, mark);
	rtnl_rule_set_mask(r, 0xffffffffu);
	rtnl_rule_set_table(r, table);
	rtnl_rule_set_prio(r, prio);
	rtnl_rule_set_action(r, FR_ACT_TO_TBL);
	rc = add ? rtnl_rule_add(sk, r, NLM_F_CREATE | NLM_F_EXCL) : rtnl_rule_delete(sk, r, 0);
	rtnl_rule_put(r);
	return rc < 0 ? nl_to_errno(rc) : 0;
}

static int local_route_op(struct nl_sock *sk, int family, uint32_t table, bool add)
{
	struct rtnl_route *rt = rtnl_route_alloc();
	struct rtnl_nexthop *nh = NULL;
	struct nl_addr *dst = NULL;
	int rc;

	if (!rt)
		return -ENOMEM;
	rc = nl_addr_parse(family == AF_INET ? "0.0.0.0/0" : "::/0", family, &dst);
	if (rc < 0)
		goto out;
	rtnl_route_set_family(rt, (uint8_t)family);
	rtnl_route_set_table(rt, table);
	rtnl_route_set_type(rt, RTN_LOCAL);
	rtnl_route_set_scope(rt, RT_SCOPE_HOST);
	rtnl_route_set_protocol(rt, RTPROT_STATIC);
	rc = rtnl_route_set_dst(rt, dst);
	if (rc < 0)
		goto out;
	nh = rtnl_route_nh_alloc();
	if (!nh) {
		rc = -NLE_NOMEM;
		goto out;
	}
	rtnl_route_nh_set_ifindex(nh, (int)if_nametoindex("lo"));
	rtnl_route_add_nexthop(rt, nh); /* the route owns nh from here */
	rc = add ? rtnl_route_add(sk, rt, NLM_F_CREATE | NLM_F_REPLACE) : rtnl_route_delete(sk, rt, 0);
out:
	nl_addr_put(dst);
	rtnl_route_put(rt);
	return rc < 0 ? nl_to_errno(rc) : 0;
}

int steer_route_apply(uint32_t mark, uint32_t table, uint32_t prio, char *err, size_t errlen)
{
	static const int families[] = {AF_INET, AF_INET6};
	struct nl_sock *sk = route_sock();
	int rc = 0;

	if (!sk) {
		snprintf(err, errlen, "routing: cannot open a netlink socket");
		return -EIO;
	}
	for (size_t i = 0; i < 2 && rc == 0; i++) {
		rc = local_route_op(sk, families[i], table, true);
		if (rc) {
			snprintf(err, errlen, "routing: cannot add the local route to table %u (%s)",
				 table, strerror(-rc));
			break;
		}
		rc = rule_op(sk, families[i], mark, table, prio, true);
		if (rc == -EEXIST)
			rc = 0; /* ours from an earlier attach: same mark, table, priority */
		if (rc)
			snprintf(err, errlen, "routing: cannot add fwmark 0x%x rule (%s)", mark,
				 strerror(-rc));
	}
	nl_socket_free(sk);
	if (rc)
		steer_route_delete(mark, table, prio);
	return rc;
}

int steer_route_delete(uint32_t mark, uint32_t table, uint32_t prio)
{
	static const int families[] = {AF_INET, AF_INET6};
	struct nl_sock *sk = route_sock();
	int first = 0;

	if (!sk)
		return -EIO;
	for (size_t i = 0; i < 2; i++) {
		int rc;

		/* Delete every copy of the rule (a crash between attaches can leave two). */
		while ((rc = rule_op(sk, families[i], mark, table, prio, false)) == 0)
			;
		if (rc != -ENOENT && !first)
			first = rc;
		rc = local_route_op(sk, families[i], table, false);
		if (rc && rc != -ENOENT && !first)
			first = rc;
	}
	nl_socket_free(sk);
	return first;
}

/* Count rules with this mark and table, and routes in table, per family. */
struct route_scan {
	uint32_t mark, table;
	unsigned rules, routes;
};

static void rule_cb(struct nl_object *obj, void *arg)
{
	struct route_scan *rs = arg;
	struct rtnl_rule *r = (struct rtnl_rule *)obj;

	if (rtnl_rule_get_mark(r) == rs->mark && rtnl_rule_get_table(r) == rs->table)
		rs->rules++;
}

static void route_cb(struct nl_object *obj, void *arg)
{
	struct route_scan *rs = arg;

	if (rtnl_route_get_table((struct rtnl_route *)obj) == rs->table)
		rs->routes++;
}

int steer_route_scan(uint32_t mark, uint32_t table, unsigned *rules, unsigned *routes)
{
	struct nl_sock *sk = route_sock();
	struct nl_cache *rc = NULL, *rt = NULL;
	struct route_scan rs = {.mark = mark, .table = table};
	int err = 0;

	if (!sk)
		return -EIO;
	if (rtnl_rule_alloc_cache(sk, AF_UNSPEC, &rc) < 0 ||
	    rtnl_route_alloc_cache(sk, AF_UNSPEC, 0, &rt) < 0) {
		err = -EIO;
		goto out;
	}
	nl_cache_foreach(rc, rule_cb, &rs);
	nl_cache_foreach(rt, route_cb, &rs);
	*rules = rs.rules;
	*routes = rs.routes;
out:
	if (rc)
		nl_cache_free(rc);
	if (rt)
		nl_cache_free(rt);
	nl_socket_free(sk);
	return err;
}
