// SPDX-License-Identifier: GPL-2.0-only
/*
 * steer.bpf.c: the kernel half of transparent steering for local clients.
 *
 *   cgroup/connect4, connect6   connect() to a protected destination is rewritten to the
 *                               relay's listener; the dialled destination and the calling
 *                               process are recorded in the socket's own storage
 *                               (pgw_origin_sk: no capacity, no eviction, gone with it).
 *   sockops                     at TCP_CONNECT (before the SYN) the steered socket asks for
 *                               state callbacks and its record is copied under the 4-tuple
 *                               the relay sees from accept() (pgw_origin_tup, a sized hash:
 *                               full means refused); at TCP_CLOSE that copy goes away.
 *   cgroup/getpeername4, 6      a steered client sees the address it dialled, not the relay.
 *   cgroup/connect_unix         (kernel >= 6.7 only; user space turns autoload off elsewhere)
 *                               a Unix-socket connect to a protected path goes to the relay's
 *                               Unix listener.
 *   sk_lookup                   (network namespace) a SYN for the relay's address goes to the
 *                               listening socket pgwardend registered in pgw_relay_socks, or
 *                               is dropped: nobody else who binds the relay's port (pgwardend
 *                               down, killed) ever receives a steered client. A SYN for it
 *                               whose 4-tuple has no origin record is dropped too (the
 *                               client gets a reset): the steering address takes recorded
 *                               connections only, so a record that could not be made means
 *                               a refused connection, never an unidentified one.
 *
 * Destinations are matched as the kernel will route them, not as spelled: a connect to
 * 0.0.0.0, :: or ::ffff:0.0.0.0 reaches the local host (the bound source address, else
 * loopback), so it is resolved that way before the protected set is consulted; a v4-mapped
 * address is matched as the IPv4 address it is.
 *
 * Layout after Cilium's bpf_sock.c: thin SEC() entry points over static __always_inline
 * helpers that return 0 or -errno; only entry points turn that into a verdict (1 = let the
 * syscall proceed, 0 = fail it with EPERM). Fail closed: a protected destination we cannot
 * steer (no relay of that family, no room for the origin record) is refused, never let
 * through: no path leads from a failed steering decision to the protected port.
 *
 * 6.1 compatibility: sockops has no bpf_get_current_pid_tgid there, so process identity is
 * captured in connect4/6, which runs in the caller's context.
 */
#include "vmlinux.h"

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include <bpf/libbpf_version.h>

#include "steer.h"

/* libbpf learned the connect_unix section in 1.3; Debian 12 ships 1.1. Under an older
 * libbpf the program sits in a sock_addr section and user space sets its expected attach
 * type (BPF_CGROUP_UNIX_CONNECT) before load, which is all the section name decides. */
#if LIBBPF_MAJOR_VERSION > 1 || (LIBBPF_MAJOR_VERSION == 1 && LIBBPF_MINOR_VERSION >= 3)
#define SEC_CONNECT_UNIX "cgroup/connect_unix"
#else
#define SEC_CONNECT_UNIX "cgroup/connect4"
#endif

char LICENSE[] SEC("license") = "GPL";

#define VERDICT_PROCEED 1
#define VERDICT_REFUSE 0

#ifndef EPERM
#define EPERM 1
#define ENOENT 2
#define ENOMEM 12
#define ECONNREFUSED 111
#endif

/* sk_lookup verdicts (enum sk_action is in vmlinux.h; named here for the reader). */
#define PGW_SK_DROP 0
#define PGW_SK_PASS 1

/* Socket types/protocols; vmlinux.h has no #defines. */
#define PGW_SOCK_STREAM 1
#define PGW_IPPROTO_TCP 6
#define PGW_LOOPBACK4 0x7f000001 /* host order */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pgw_config);
} PGW_MAP_CONFIG SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PGW_PROTECTED_MAX);
	__type(key, struct pgw_protected_key);
	__type(value, __u32);
} PGW_MAP_PROTECTED SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PGW_UNIX_MAX);
	__type(key, struct pgw_unix_key);
	__type(value, __u32);
} PGW_MAP_UNIX SEC(".maps");

/* The record of a steered client socket, in the socket itself: nothing to evict, nothing to
 * sweep, gone when the socket is. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct pgw_origin);
} PGW_MAP_ORIGIN_SK SEC(".maps");

/* Not LRU: a record is never evicted to make room. Full, an insert fails and the connection
 * is refused. User space sets max_entries from attach --origin-max before load. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PGW_ORIGIN_MAX);
	__type(key, struct pgw_tuple);
	__type(value, struct pgw_origin);
} PGW_MAP_ORIGIN_TUP SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, PGW_RELAY_SOCKS_MAX);
	__type(key, struct pgw_relay_key);
	__type(value, __u64); /* an fd when user space inserts; the socket cookie when it reads */
} PGW_MAP_RELAY_SOCKS SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PGW_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} PGW_MAP_STATS SEC(".maps");

/* kfuncs of the Unix-socket hook (6.7+). Weak, so the object still loads where they do not
 * exist; the program that calls them is not loaded there. */
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym __weak;
extern int bpf_sock_addr_set_sun_path(struct bpf_sock_addr_kern *sa_kern, const __u8 *sun_path,
				      __u32 sun_path__sz) __ksym __weak;

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&PGW_MAP_STATS, &idx);

	if (v)
		*v += 1;
}

static __always_inline struct pgw_config *config_get(void)
{
	__u32 zero = 0;
	struct pgw_config *cfg = bpf_map_lookup_elem(&PGW_MAP_CONFIG, &zero);

	if (!cfg || cfg->abi_version != PGW_STEER_ABI_VERSION)
		return NULL;
	return cfg;
}

/* True when the socket belongs to the relay (its SO_MARK): the relay's upstream connections
 * must reach the real server, never loop back into the relay. */
static __always_inline bool sock_is_relay(struct bpf_sock_addr *ctx, const struct pgw_config *cfg)
{
	struct bpf_sock *sk = ctx->sk;

	return sk && cfg->relay_mark && sk->mark == cfg->relay_mark;
}

static __always_inline bool protected_lookup(__u8 family, const __u32 addr[4], __u16 port)
{
	struct pgw_protected_key key = {};

	key.family = family;
	key.port = port;
	key.addr[0] = addr[0];
	key.addr[1] = addr[1];
	key.addr[2] = addr[2];
	key.addr[3] = addr[3];
	if (bpf_map_lookup_elem(&PGW_MAP_PROTECTED, &key))
		return true;
	/* Any address of this family for the port. */
	key.addr[0] = key.addr[1] = key.addr[2] = key.addr[3] = 0;
	return bpf_map_lookup_elem(&PGW_MAP_PROTECTED, &key) != NULL;
}

/* Record who is connecting where, in the socket's own storage. 0 or -ENOMEM. */
static __always_inline int origin_record(struct bpf_sock_addr *ctx, __u8 family,
					 const __u32 dst[4], __u16 port, __u8 flags)
{
	struct pgw_origin *o;
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return -ENOMEM;
	o = bpf_sk_storage_get(&PGW_MAP_ORIGIN_SK, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return -ENOMEM;
	/* A socket that connects again (after a failed attempt) gets a fresh record. */
	__builtin_memset(o, 0, sizeof(*o));

	o->dst_addr[0] = dst[0];
	o->dst_addr[1] = dst[1];
	o->dst_addr[2] = dst[2];
	o->dst_addr[3] = dst[3];
	o->dst_port = port;
	o->family = family;
	o->flags = flags;
	o->pid = (__u32)pid_tgid;
	o->tgid = (__u32)(pid_tgid >> 32);
	o->uid = (__u32)uid_gid;
	o->gid = (__u32)(uid_gid >> 32);
	o->cgroup_id = bpf_get_current_cgroup_id();
	o->cookie = bpf_get_socket_cookie(ctx);
	o->connect_ns = bpf_ktime_get_ns();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
	return 0;
}

static __always_inline bool is_v4mapped(const __u32 a[4])
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

/* The relay's registered listening socket for (family, addr, port), exact or the wildcard
 * listener of that port; NULL when pgwardend has none there (down, or not yet started).
 * The caller releases what it gets. */
static __always_inline struct bpf_sock *relay_sock_lookup(__u8 family, const __u32 addr[4],
							 __u16 port)
{
	struct pgw_relay_key key = {};
	struct bpf_sock *sk;

	key.family = family;
	key.port = port;
	key.addr[0] = addr[0];
	key.addr[1] = addr[1];
	key.addr[2] = addr[2];
	key.addr[3] = addr[3];
	sk = bpf_map_lookup_elem(&PGW_MAP_RELAY_SOCKS, &key);
	if (sk)
		return sk;
	key.addr[0] = key.addr[1] = key.addr[2] = key.addr[3] = 0;
	return bpf_map_lookup_elem(&PGW_MAP_RELAY_SOCKS, &key);
}

/* Is the relay of this family there to take a steered connection? */
static __always_inline bool relay_registered(const struct pgw_config *cfg, bool v6)
{
	__u32 a4[4] = {cfg->relay4_addr, 0, 0, 0};
	struct bpf_sock *sk;

	if (v6)
		sk = relay_sock_lookup(PGW_AF_INET6, cfg->relay6_addr, cfg->relay6_port);
	else
		sk = relay_sock_lookup(PGW_AF_INET, a4, cfg->relay4_port);
	if (!sk)
		return false;
	bpf_sk_release(sk);
	return true;
}

/* Where a connect to 0.0.0.0 goes: the socket's bound source address, else 127.0.0.1
 * (ip_route_output_key_hash_rcu). src is the socket's bound IPv4 address, 0 if none. */
static __always_inline __u32 unspec4_resolve(__u32 src)
{
	stat_inc(PGW_STAT_UNSPEC_DST);
	return src ? src : bpf_htonl(PGW_LOOPBACK4);
}

/*
 * The one steering decision of connect4/6: 1 to rewrite the destination to the relay (the
 * origin is recorded), 0 to let the connect through untouched (not protected, or the relay's
 * own socket), -EPERM to refuse (no relay for this family, or no room for the record),
 * -ECONNREFUSED (also set as the syscall's error) when the relay has no registered socket.
 */
static __always_inline int steer_decide(struct bpf_sock_addr *ctx, struct pgw_config *cfg,
					__u8 family, __u32 dst[4], __u16 port, __u32 relay_flag,
					__u8 origin_flags)
{
	if (!protected_lookup(family, dst, port))
		return 0;
	if (sock_is_relay(ctx, cfg)) {
		stat_inc(PGW_STAT_SKIP_MARK);
		return 0;
	}
	if (!(cfg->flags & relay_flag)) {
		stat_inc(PGW_STAT_NO_RELAY);
		return -EPERM;
	}
	/* Only ever into pgwardend's own listener: while it has none registered (down,
	 * killed, restarting), the client is refused at once, as by a closed port. */
	if (!relay_registered(cfg, relay_flag == PGW_CFG_RELAY6)) {
		stat_inc(PGW_STAT_RELAY_DOWN);
		bpf_set_retval(-ECONNREFUSED);
		return -ECONNREFUSED;
	}
	if (origin_record(ctx, family, dst, port, origin_flags)) {
		stat_inc(PGW_STAT_ORIGIN_FAIL);
		return -EPERM;
	}
	return 1;
}

/* connect4: 0 to proceed (steered or not ours), -EPERM to refuse. */
static __always_inline int steer_connect4(struct bpf_sock_addr *ctx)
{
	struct pgw_config *cfg;
	__u32 dst[4] = {};
	__u16 port;
	int r;

	if (ctx->type != PGW_SOCK_STREAM)
		return 0;
	cfg = config_get();
	if (!cfg)
		return 0;
	dst[0] = ctx->user_ip4;
	port = (__u16)ctx->user_port;
	if (dst[0] == 0)
		dst[0] = unspec4_resolve(ctx->sk ? ctx->sk->src_ip4 : 0);
	r = steer_decide(ctx, cfg, PGW_AF_INET, dst, port, PGW_CFG_RELAY4, 0);
	if (r <= 0)
		return r;
	ctx->user_ip4 = cfg->relay4_addr;
	ctx->user_port = cfg->relay4_port;
	stat_inc(PGW_STAT_STEERED4);
	return 0;
}

/* connect6, including AF_INET6 sockets dialling v4-mapped addresses (those travel as IPv4
 * and go to the IPv4 relay, written back as a v4-mapped address). */
static __always_inline int steer_connect6(struct bpf_sock_addr *ctx)
{
	struct pgw_config *cfg;
	__u32 dst[4];
	__u16 port;
	int r;

	if (ctx->type != PGW_SOCK_STREAM)
		return 0;
	cfg = config_get();
	if (!cfg)
		return 0;
	dst[0] = ctx->user_ip6[0];
	dst[1] = ctx->user_ip6[1];
	dst[2] = ctx->user_ip6[2];
	dst[3] = ctx->user_ip6[3];
	port = (__u16)ctx->user_port;
	if (!(dst[0] | dst[1] | dst[2] | dst[3])) {
		/* :: is the loopback of the socket's kind (tcp_v6_connect): ::ffff:127.0.0.1 for
		 * a socket bound to a v4-mapped address, else ::1. */
		bool v4src = false;

		if (ctx->sk) {
			__u32 s0 = ctx->sk->src_ip6[0], s1 = ctx->sk->src_ip6[1],
			      s2 = ctx->sk->src_ip6[2];

			v4src = s0 == 0 && s1 == 0 && s2 == bpf_htonl(0x0000ffff);
		}
		stat_inc(PGW_STAT_UNSPEC_DST);
		if (v4src) {
			dst[2] = bpf_htonl(0x0000ffff);
			dst[3] = bpf_htonl(PGW_LOOPBACK4);
		} else {
			dst[3] = bpf_htonl(1);
		}
	}
	if (is_v4mapped(dst)) {
		__u32 dst4[4] = {dst[3], 0, 0, 0};

		/* ::ffff:0.0.0.0 goes on as a connect to 0.0.0.0 (tcp_v4_connect). */
		if (dst4[0] == 0)
			dst4[0] = unspec4_resolve(ctx->sk ? ctx->sk->src_ip6[3] : 0);

		r = steer_decide(ctx, cfg, PGW_AF_INET, dst4, port, PGW_CFG_RELAY4,
				 PGW_ORIGIN_V4MAPPED);
		if (r <= 0)
			return r;
		ctx->user_ip6[3] = cfg->relay4_addr;
		ctx->user_port = cfg->relay4_port;
		stat_inc(PGW_STAT_STEERED6);
		return 0;
	}
	r = steer_decide(ctx, cfg, PGW_AF_INET6, dst, port, PGW_CFG_RELAY6, 0);
	if (r <= 0)
		return r;
	ctx->user_ip6[0] = cfg->relay6_addr[0];
	ctx->user_ip6[1] = cfg->relay6_addr[1];
	ctx->user_ip6[2] = cfg->relay6_addr[2];
	ctx->user_ip6[3] = cfg->relay6_addr[3];
	ctx->user_port = cfg->relay6_port;
	stat_inc(PGW_STAT_STEERED6);
	return 0;
}

/* getpeername: a steered socket reports the destination it dialled. */
static __always_inline void steer_peername(struct bpf_sock_addr *ctx, bool v6)
{
	struct pgw_origin *o;
	struct bpf_sock *sk;

	/* Every program checks the config: a link is then traceable to its instance (user
	 * space reads the instance name from the config map of the link's program), and a
	 * config of another ABI switches the whole object off. */
	if (!config_get())
		return;
	sk = ctx->sk;
	if (!sk)
		return;
	o = bpf_sk_storage_get(&PGW_MAP_ORIGIN_SK, sk, 0, 0);
	if (!o)
		return;
	if (!v6) {
		if (o->family != PGW_AF_INET)
			return;
		ctx->user_ip4 = o->dst_addr[0];
	} else if (o->flags & PGW_ORIGIN_V4MAPPED) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0x0000ffff);
		ctx->user_ip6[3] = o->dst_addr[0];
	} else {
		if (o->family != PGW_AF_INET6)
			return;
		ctx->user_ip6[0] = o->dst_addr[0];
		ctx->user_ip6[1] = o->dst_addr[1];
		ctx->user_ip6[2] = o->dst_addr[2];
		ctx->user_ip6[3] = o->dst_addr[3];
	}
	ctx->user_port = o->dst_port;
	stat_inc(PGW_STAT_PEERNAME);
}

/* The connection as the relay will see it: client = our local end, relay = our remote end.
 * A v6 socket carrying v4-mapped addresses is keyed as IPv4, since the relay's IPv4
 * listener accepted it. local_port is host order, remote_port network order (sockops ABI). */
static __always_inline void tuple_from_sockops(struct bpf_sock_ops *skops, struct pgw_tuple *t)
{
	__builtin_memset(t, 0, sizeof(*t));
	t->client_port = bpf_htons((__u16)skops->local_port);
	/* remote_port holds the network-order port in its upper 16 bits on little endian. */
	t->relay_port = bpf_htons((__u16)bpf_ntohl(skops->remote_port));
	if (skops->family == PGW_AF_INET) {
		t->family = PGW_AF_INET;
		t->client_addr[0] = skops->local_ip4;
		t->relay_addr[0] = skops->remote_ip4;
		return;
	}
	__u32 l0 = skops->local_ip6[0], l1 = skops->local_ip6[1], l2 = skops->local_ip6[2],
	      l3 = skops->local_ip6[3];
	__u32 r0 = skops->remote_ip6[0], r1 = skops->remote_ip6[1], r2 = skops->remote_ip6[2],
	      r3 = skops->remote_ip6[3];

	if (l0 == 0 && l1 == 0 && l2 == bpf_htonl(0x0000ffff) && r0 == 0 && r1 == 0 &&
	    r2 == bpf_htonl(0x0000ffff)) {
		t->family = PGW_AF_INET;
		t->client_addr[0] = l3;
		t->relay_addr[0] = r3;
		return;
	}
	t->family = PGW_AF_INET6;
	t->client_addr[0] = l0;
	t->client_addr[1] = l1;
	t->client_addr[2] = l2;
	t->client_addr[3] = l3;
	t->relay_addr[0] = r0;
	t->relay_addr[1] = r1;
	t->relay_addr[2] = r2;
	t->relay_addr[3] = r3;
}

static __always_inline void steer_sockops(struct bpf_sock_ops *skops)
{
	struct pgw_origin *o, *rec;
	struct bpf_sock *sk;
	struct pgw_tuple t;

	if (skops->family != PGW_AF_INET && skops->family != PGW_AF_INET6)
		return;
	if (!config_get())
		return;
	sk = skops->sk;
	if (!sk)
		return;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		/* Only steered sockets (a record in their storage) pay for any of this. */
		o = bpf_sk_storage_get(&PGW_MAP_ORIGIN_SK, sk, 0, 0);
		if (!o)
			break;
		/* State callbacks first, so that whatever is recorded below is removed when the
		 * socket closes. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						 BPF_SOCK_OPS_STATE_CB_FLAG);
		tuple_from_sockops(skops, &t);
		/* The SYN has not left yet, so the record is there before the relay can accept.
		 * BPF_ANY: a record left under this tuple belongs to a socket that is gone (the
		 * tuple is ours now). Full: no record, and sk_lookup refuses the SYN. */
		if (bpf_map_update_elem(&PGW_MAP_ORIGIN_TUP, &t, o, BPF_ANY) == 0) {
			o->flags |= PGW_ORIGIN_RECORDED;
			stat_inc(PGW_STAT_REKEYED);
		} else {
			stat_inc(PGW_STAT_ORIGIN_FAIL);
		}
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[1] != BPF_TCP_CLOSE)
			break;
		o = bpf_sk_storage_get(&PGW_MAP_ORIGIN_SK, sk, 0, 0);
		if (!o || !(o->flags & PGW_ORIGIN_RECORDED))
			break;
		o->flags &= ~PGW_ORIGIN_RECORDED;
		/* Usually the relay consumed it already; this covers a relay that never accepted.
		 * Only our own record: the tuple may already be another socket's. */
		tuple_from_sockops(skops, &t);
		rec = bpf_map_lookup_elem(&PGW_MAP_ORIGIN_TUP, &t);
		if (rec && rec->cookie == o->cookie)
			bpf_map_delete_elem(&PGW_MAP_ORIGIN_TUP, &t);
		stat_inc(PGW_STAT_CLOSED);
		break;
	default:
		break;
	}
}

/* connect_unix: rewrite a connect() to a protected Unix path to the relay's Unix listener. */
static __always_inline int steer_connect_unix(struct bpf_sock_addr *ctx)
{
	struct bpf_sock_addr_kern *sa_kern;
	struct pgw_unix_key key = {};
	struct pgw_config *cfg;
	const void *uaddr;
	__u32 len, plen;

	cfg = config_get();
	if (!cfg || !(cfg->flags & PGW_CFG_UNIX_HOOK))
		return 0;
	if (sock_is_relay(ctx, cfg))
		return 0;
	sa_kern = bpf_cast_to_kern_ctx(ctx);
	if (!sa_kern)
		return 0;
	len = BPF_CORE_READ(sa_kern, uaddrlen);
	uaddr = BPF_CORE_READ(sa_kern, uaddr);
	if (len <= 2 || len > 2 + PGW_UNIX_PATH_MAX)
		return 0;
	plen = len - 2; /* after sun_family */
	if (plen > PGW_UNIX_PATH_MAX)
		return 0;
	if (bpf_probe_read_kernel(key.path, plen, (const char *)uaddr + 2))
		return 0;
	if (!bpf_map_lookup_elem(&PGW_MAP_UNIX, &key))
		return 0;
	plen = cfg->unix_relay_path_len;
	if (plen == 0 || plen > PGW_UNIX_PATH_MAX)
		return -EPERM;
	if (bpf_sock_addr_set_sun_path(sa_kern, (const __u8 *)cfg->unix_relay_path, plen))
		return -EPERM;
	stat_inc(PGW_STAT_UNIX_STEERED);
	return 0;
}

/* Does the SYN's 4-tuple have an origin record? The relay's steering address takes steered
 * connections only, each with its record (made at TCP_CONNECT, before this SYN left). */
static __always_inline bool origin_recorded(struct bpf_sk_lookup *ctx, __u8 family,
					    const __u32 relay[4], __u16 relay_port)
{
	struct pgw_tuple t = {};

	t.family = family;
	t.client_port = ctx->remote_port; /* network order */
	t.relay_port = relay_port;
	if (family == PGW_AF_INET) {
		t.client_addr[0] = ctx->remote_ip4;
	} else {
		t.client_addr[0] = ctx->remote_ip6[0];
		t.client_addr[1] = ctx->remote_ip6[1];
		t.client_addr[2] = ctx->remote_ip6[2];
		t.client_addr[3] = ctx->remote_ip6[3];
		barrier_var(t.client_addr[3]);
	}
	t.relay_addr[0] = relay[0];
	t.relay_addr[1] = relay[1];
	t.relay_addr[2] = relay[2];
	t.relay_addr[3] = relay[3];
	return bpf_map_lookup_elem(&PGW_MAP_ORIGIN_TUP, &t) != NULL;
}

/*
 * sk_lookup: a SYN for the relay's steering address (pgw_config relay4/relay6) is given to
 * the listening socket pgwardend registered for it, or dropped. Any other destination is
 * left to the kernel's own lookup (SK_PASS without a socket).
 */
static __always_inline int steer_sk_lookup(struct bpf_sk_lookup *ctx)
{
	struct pgw_config *cfg;
	struct bpf_sock *sk;
	__u32 addr[4] = {};
	__u8 family;
	__u16 port;
	long err;

	if (ctx->protocol != PGW_IPPROTO_TCP)
		return PGW_SK_PASS;
	cfg = config_get();
	if (!cfg)
		return PGW_SK_PASS;
	port = bpf_htons((__u16)ctx->local_port); /* host order in this context */
	if (ctx->family == PGW_AF_INET) {
		if (!(cfg->flags & PGW_CFG_RELAY4) || port != cfg->relay4_port ||
		    ctx->local_ip4 != cfg->relay4_addr)
			return PGW_SK_PASS;
		family = PGW_AF_INET;
		addr[0] = ctx->local_ip4;
	} else if (ctx->family == PGW_AF_INET6) {
		/* Each context word read once, at a constant offset: the verifier refuses a
		 * context pointer the compiler turned into a loop. */
		addr[0] = ctx->local_ip6[0];
		addr[1] = ctx->local_ip6[1];
		addr[2] = ctx->local_ip6[2];
		addr[3] = ctx->local_ip6[3];
		barrier_var(addr[3]);
		if (!(cfg->flags & PGW_CFG_RELAY6) || port != cfg->relay6_port ||
		    addr[0] != cfg->relay6_addr[0] || addr[1] != cfg->relay6_addr[1] ||
		    addr[2] != cfg->relay6_addr[2] || addr[3] != cfg->relay6_addr[3])
			return PGW_SK_PASS;
		family = PGW_AF_INET6;
	} else {
		return PGW_SK_PASS;
	}
	sk = relay_sock_lookup(family, addr, port);
	if (!sk) {
		stat_inc(PGW_STAT_LOOKUP_DROPPED);
		return PGW_SK_DROP;
	}
	if (!origin_recorded(ctx, family, addr, port)) {
		bpf_sk_release(sk);
		stat_inc(PGW_STAT_UNRECORDED);
		return PGW_SK_DROP;
	}
	/* A reuseport listener: the kernel still spreads across its group (every worker). */
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		stat_inc(PGW_STAT_LOOKUP_DROPPED);
		return PGW_SK_DROP;
	}
	return PGW_SK_PASS;
}

SEC("cgroup/connect4")
int pgw_connect4(struct bpf_sock_addr *ctx)
{
	return steer_connect4(ctx) ? VERDICT_REFUSE : VERDICT_PROCEED;
}

SEC("cgroup/connect6")
int pgw_connect6(struct bpf_sock_addr *ctx)
{
	return steer_connect6(ctx) ? VERDICT_REFUSE : VERDICT_PROCEED;
}

SEC("cgroup/getpeername4")
int pgw_peername4(struct bpf_sock_addr *ctx)
{
	steer_peername(ctx, false);
	return VERDICT_PROCEED;
}

SEC("cgroup/getpeername6")
int pgw_peername6(struct bpf_sock_addr *ctx)
{
	steer_peername(ctx, true);
	return VERDICT_PROCEED;
}

SEC("sockops")
int pgw_sockops(struct bpf_sock_ops *skops)
{
	steer_sockops(skops);
	return 1;
}

SEC(SEC_CONNECT_UNIX)
int pgw_connect_unix(struct bpf_sock_addr *ctx)
{
	return steer_connect_unix(ctx) ? VERDICT_REFUSE : VERDICT_PROCEED;
}

SEC("sk_lookup")
int pgw_sk_lookup(struct bpf_sk_lookup *ctx)
{
	return steer_sk_lookup(ctx);
}
