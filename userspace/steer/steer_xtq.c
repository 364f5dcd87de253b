/*
 * steer_xtq: the admission gate's queue rule for kernels without nft's queue expression,
 * through the xt NFQUEUE target in the legacy iptables "filter" table, written with
 * libip4tc / libip6tc (never by running iptables).
 *
 * The libraries are loaded with dlopen() when this path is taken: hosts whose kernel has
 * nft queue (Debian's stock kernels) never need them, and the project links no library
 * it uses only as a fallback. Each family gets one chain of ours, PGWQ_<instance>, holding
 * one rule per protected port, and one jump to it at the head of INPUT:
 *
 *   -A INPUT -j PGWQ_x
 *   -A PGWQ_x ! -i lo -p tcp --dport P --syn -j NFQUEUE --queue-num N [--queue-bypass]
 *
 * Each family is one libiptc commit (the kernel replaces the table at once).
 */
#include "steer/steer_internal.h"

#include "base/log.h"

#include <dlfcn.h>
#include <errno.h>
#include <linux/netfilter/x_tables.h>
#include <linux/netfilter/xt_NFQUEUE.h>
#include <linux/netfilter/xt_tcpudp.h>
#include <linux/netfilter_ipv4/ip_tables.h>
#include <linux/netfilter_ipv6/ip6_tables.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libip4tc and libip6tc have the same API over different entry types. */
struct xtq_api {
	const char *lib;
	const char *prefix; /* "iptc_" or "ip6tc_" */
	void *dl;
	void *(*init)(const char *table);
	void (*free)(void *h);
	int (*is_chain)(const char *chain, void *h);
	int (*create_chain)(const char *chain, void *h);
	int (*flush_entries)(const char *chain, void *h);
	int (*delete_chain)(const char *chain, void *h);
	int (*append_entry)(const char *chain, const void *e, void *h);
	int (*insert_entry)(const char *chain, const void *e, unsigned num, void *h);
	const void *(*first_rule)(const char *chain, void *h);
	const void *(*next_rule)(const void *prev, void *h);
	const char *(*get_target)(const void *e, void *h);
	int (*delete_num_entry)(const char *chain, unsigned num, void *h);
	int (*commit)(void *h);
	const char *(*strerror)(int err);
};

static int xtq_load(struct xtq_api *a, char *err, size_t errlen)
{
	static const char *const names[] = {
		"init", "free", "is_chain", "create_chain", "flush_entries", "delete_chain",
		"append_entry", "insert_entry", "first_rule", "next_rule", "get_target",
		"delete_num_entry", "commit", "strerror",
	};
	void **slots[] = {
		(void **)&a->init, (void **)&a->free, (void **)&a->is_chain,
		(void **)&a->create_chain, (void **)&a->flush_entries, (void **)&a->delete_chain,
		(void **)&a->append_entry, (void **)&a->insert_entry, (void **)&a->first_rule,
		(void **)&a->next_rule, (void **)&a->get_target, (void **)&a->delete_num_entry,
		(void **)&a->commit, (void **)&a->strerror,
	};

	a->dl = dlopen(a->lib, RTLD_NOW | RTLD_LOCAL);
	if (!a->dl) {
		snprintf(err, errlen, "admission gate: cannot load %s (package libip4tc2/libip6tc2) "
			 "for the xt NFQUEUE fallback", a->lib);
		return -ENOENT;
	}
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char sym[64];

		snprintf(sym, sizeof(sym), "%s%s", a->prefix, names[i]);
		*slots[i] = dlsym(a->dl, sym);
		if (!*slots[i]) {
			snprintf(err, errlen, "admission gate: %s has no %s", a->lib, sym);
			dlclose(a->dl);
			a->dl = NULL;
			return -ENOENT;
		}
	}
	return 0;
}

void steer_xtq_chain(const char *instance, char *out, size_t n)
{
	/* Chain names hold 28 characters; instances longer than 23 are cut. */
	snprintf(out, n, "PGWQ_%.23s", instance);
}

/* One rule: [! -i lo] -p tcp --dport port --syn -j target. */
struct xtq_rule {
	size_t size;
	unsigned char buf[512];
};

static void xtq_build(struct xtq_rule *r, bool v6, uint16_t port, const char *jump,
		      uint16_t queue, bool bypass)
{
	size_t head = v6 ? XT_ALIGN(sizeof(struct ip6t_entry)) : XT_ALIGN(sizeof(struct ipt_entry));
	size_t msize = port ? XT_ALIGN(sizeof(struct xt_entry_match)) + XT_ALIGN(sizeof(struct xt_tcp))
			    : 0;
	size_t tsize = jump ? XT_ALIGN(sizeof(struct xt_standard_target))
			    : XT_ALIGN(sizeof(struct xt_entry_target)) +
				      XT_ALIGN(sizeof(struct xt_NFQ_info_v3));
	struct xt_entry_target *t;

	memset(r, 0, sizeof(*r));
	r->size = head + msize + tsize;
	if (v6) {
		struct ip6t_entry *e = (struct ip6t_entry *)r->buf;

		e->target_offset = (__u16)(head + msize);
		e->next_offset = (__u16)r->size;
		if (port) {
			e->ipv6.proto = IPPROTO_TCP;
			e->ipv6.flags = IP6T_F_PROTO;
			strcpy(e->ipv6.iniface, "lo");
			memset(e->ipv6.iniface_mask, 0xff, 3);
			e->ipv6.invflags = IP6T_INV_VIA_IN;
		}
	} else {
		struct ipt_entry *e = (struct ipt_entry *)r->buf;

		e->target_offset = (__u16)(head + msize);
		e->next_offset = (__u16)r->size;
		if (port) {
			e->ip.proto = IPPROTO_TCP;
			strcpy(e->ip.iniface, "lo");
			memset(e->ip.iniface_mask, 0xff, 3);
			e->ip.invflags = IPT_INV_VIA_IN;
		}
	}
	if (port) {
		struct xt_entry_match *m = (struct xt_entry_match *)(r->buf + head);
		struct xt_tcp *tcp = (struct xt_tcp *)m->data;

		m->u.match_size = (__u16)msize;
		strcpy(m->u.user.name, "tcp");
		tcp->spts[1] = 0xffff;
		tcp->dpts[0] = tcp->dpts[1] = port;
		tcp->flg_mask = 0x17; /* FIN SYN RST ACK */
		tcp->flg_cmp = 0x02;  /* SYN only: --syn */
	}
	t = (struct xt_entry_target *)(r->buf + head + msize);
	t->u.target_size = (__u16)tsize;
	if (jump) {
		/* libiptc turns a target named after a chain into a jump to it. */
		snprintf(t->u.user.name, sizeof(t->u.user.name), "%s", jump);
	} else {
		struct xt_NFQ_info_v3 *q = (struct xt_NFQ_info_v3 *)t->data;

		strcpy(t->u.user.name, "NFQUEUE");
		t->u.user.revision = 3;
		q->queuenum = queue;
		q->queues_total = 1;
		q->flags = bypass ? NFQ_FLAG_BYPASS : 0;
	}
}

/* Remove our chain and every INPUT jump to it (in h, not committed). */
static void xtq_remove(struct xtq_api *a, void *h, const char *chain)
{
	unsigned num = 0, del[64], ndel = 0;

	for (const void *e = a->first_rule("INPUT", h); e; e = a->next_rule(e, h), num++) {
		const char *t = a->get_target(e, h);

		if (t && strcmp(t, chain) == 0 && ndel < 64)
			del[ndel++] = num;
	}
	while (ndel--)
		a->delete_num_entry("INPUT", del[ndel], h); /* highest first: numbers stay valid */
	if (a->is_chain(chain, h)) {
		a->flush_entries(chain, h);
		a->delete_chain(chain, h);
	}
}

static int xtq_family(bool v6, const struct steer_opts *o, bool install, char *err,
		      size_t errlen)
{
	struct xtq_api a = {
		.lib = v6 ? "libip6tc.so.2" : "libip4tc.so.2",
		.prefix = v6 ? "ip6tc_" : "iptc_",
	};
	char chain[32];
	void *h;
	int rc = 0;

	steer_xtq_chain(o->instance, chain, sizeof(chain));
	rc = xtq_load(&a, err, errlen);
	if (rc)
		return rc;
	h = a.init("filter");
	if (!h) {
		rc = -errno ? -errno : -EIO;
		snprintf(err, errlen, "admission gate: cannot open the %s filter table: %s",
			 v6 ? "ip6tables" : "iptables", a.strerror(errno));
		goto out;
	}
	xtq_remove(&a, h, chain);
	if (install) {
		struct xtq_rule r;

		if (!a.create_chain(chain, h))
			goto fail;
		for (unsigned i = 0; i < o->nports; i++) {
			xtq_build(&r, v6, o->ports[i], NULL, o->gate_queue, o->fail_open);
			if (!a.append_entry(chain, r.buf, h))
				goto fail;
		}
		xtq_build(&r, v6, 0, chain, 0, false);
		if (!a.insert_entry("INPUT", r.buf, 0, h))
			goto fail;
	}
	if (!a.commit(h))
		goto fail;
	goto out_free;
fail:
	rc = -errno ? -errno : -EIO;
	snprintf(err, errlen, "admission gate: %s: %s", v6 ? "ip6tables" : "iptables",
		 a.strerror(errno));
out_free:
	a.free(h);
out:
	dlclose(a.dl);
	return rc;
}

int steer_xtq_apply(const struct steer_opts *o, char *err, size_t errlen)
{
	int rc = xtq_family(false, o, true, err, errlen);

	if (!rc)
		rc = xtq_family(true, o, true, err, errlen);
	if (rc) {
		char ignore[STEER_ERR_MAX];

		steer_xtq_delete(o->instance, ignore, sizeof(ignore));
		return rc;
	}
	log_info("gate", "admission gate queue %u via the xt NFQUEUE target (no nft queue here)",
		 o->gate_queue);
	return 0;
}

/* True when the legacy table is loaded at all: looking must not load ip_tables. */
static bool legacy_loaded(bool v6)
{
	FILE *f = fopen(v6 ? "/proc/net/ip6_tables_names" : "/proc/net/ip_tables_names", "re");
	char line[64];
	bool filter = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		filter |= strcmp(line, "filter\n") == 0;
	fclose(f);
	return filter;
}

int steer_xtq_delete(const char *instance, char *err, size_t errlen)
{
	struct steer_opts o;
	int rc = 0;

	steer_opts_init(&o);
	snprintf(o.instance, sizeof(o.instance), "%s", instance);
	for (int v6 = 0; v6 < 2; v6++) {
		int r;

		if (!legacy_loaded(v6))
			continue;
		r = xtq_family(v6, &o, false, err, errlen);
		if (r && !rc)
			rc = r;
	}
	return rc;
}

bool steer_xtq_present(const char *instance)
{
	char chain[32];
	bool found = false;

	steer_xtq_chain(instance, chain, sizeof(chain));
	for (int v6 = 0; v6 < 2 && !found; v6++) {
		struct xtq_api a = {
			.lib = v6 ? "libip6tc.so.2" : "libip4tc.so.2",
			.prefix = v6 ? "ip6tc_" : "iptc_",
		};
		char err[STEER_ERR_MAX];
		void *h;

		if (!legacy_loaded(v6) || xtq_load(&a, err, sizeof(err)))
			continue;
		h = a.init("filter");
		if (h) {
			found = a.is_chain(chain, h) != 0;
			a.free(h);
		}
		dlclose(a.dl);
	}
	return found;
}
