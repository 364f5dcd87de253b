/*
 * steer.h: the one header shared by bpf/steer.bpf.c and user space (userspace/steer/).
 *
 * Everything here crosses the kernel/user boundary through BPF maps, so every struct has a
 * fixed layout: fixed-width fields, explicit padding, sizes checked with _Static_assert on
 * both sides. Addresses and ports are kept in network byte order exactly as the kernel hands
 * them over; an IPv4 address lives in addr[0] with addr[1..3] zero. Bump
 * PGW_STEER_ABI_VERSION on any change: an attach finds pinned state of another version
 * stale and replaces it instead of mixing layouts.
 *
 * Include <linux/types.h> (user space) or vmlinux.h (BPF) first.
 */
#ifndef PGWARDEN_BPF_STEER_H
#define PGWARDEN_BPF_STEER_H

#define PGW_STEER_ABI_VERSION 4

/* Map names (BPF object names are at most 15 characters). Macros, so a test build can rename
 * them; user space finds pinned maps by these names under the pin directory. */
#define PGW_MAP_CONFIG pgw_config
#define PGW_MAP_PROTECTED pgw_protected
#define PGW_MAP_ORIGIN_SK pgw_origin_sk
#define PGW_MAP_ORIGIN_TUP pgw_origin_tup
#define PGW_MAP_UNIX pgw_unix_paths
#define PGW_MAP_STATS pgw_stats
#define PGW_MAP_RELAY_SOCKS pgw_relay_socks

#define PGW_STR_(x) #x
#define PGW_STR(x) PGW_STR_(x)

/*
 * Origin records never get evicted. The record a connect4/6 makes lives in socket-local
 * storage (pgw_origin_sk, BPF_MAP_TYPE_SK_STORAGE): it has no capacity and dies with the
 * client socket. Its copy under the 4-tuple the relay sees (pgw_origin_tup) is a plain,
 * preallocated hash of a configured size (attach --origin-max, default PGW_ORIGIN_MAX):
 * made at TCP_CONNECT, before the SYN leaves; removed by the relay when it accepts, or by
 * the sockops state callback when the client socket closes first. When it is full the
 * connection is refused (counter refused_origin_full): sk_lookup drops the SYN of a tuple
 * without a record, so the client gets a reset at once, and the relay refuses whatever still
 * reaches its steering address unrecorded. Never relayed unidentified, never sent straight
 * to the server.
 */
#define PGW_ORIGIN_MAX 65536
#define PGW_PROTECTED_MAX 256
#define PGW_UNIX_MAX 16
#define PGW_UNIX_PATH_MAX 108 /* sizeof(sockaddr_un.sun_path) */
/* Listening sockets pgwardend registers in pgw_relay_socks: one per relay address. */
#define PGW_RELAY_SOCKS_MAX 16

#define PGW_AF_INET 2
#define PGW_AF_INET6 10

/* pgw_config.flags */
#define PGW_CFG_RELAY4 (1u << 0)  /* relay4_* is set: IPv4 (and v4-mapped) steering on */
#define PGW_CFG_RELAY6 (1u << 1)  /* relay6_* is set: IPv6 steering on */
#define PGW_CFG_UNIX (1u << 2)    /* unix_relay_path is set: Unix-socket steering on (the
				   * relay's socket at the path clients use) */
#define PGW_CFG_FAIL_OPEN (1u << 3) /* informational: links owned by a process, not pinned */
#define PGW_CFG_GATE (1u << 4)      /* informational: admission gate queue in gate_queue */
#define PGW_CFG_GATE_XT (1u << 5)   /* the gate's rule is xt NFQUEUE (legacy iptables), not nft */
#define PGW_CFG_SK_LOOKUP (1u << 6) /* informational: the sk_lookup guard is attached */
#define PGW_CFG_UNIX_HOOK (1u << 7) /* connect_unix is attached (6.7+): the server's private
				     * path, spelled exactly, goes to the relay too */

/* The single entry of the pgw_config array map. Also what detach and status read back to
 * learn what an attach made (instance, marks, route table), pinned or not. */
struct pgw_config {
	__u32 abi_version;
	__u32 flags;
	__u32 relay_mark;   /* SO_MARK of the relay's own sockets: never redirected */
	__u32 relay4_addr;  /* network order */
	__u32 relay6_addr[4];
	__u16 relay4_port;  /* network order */
	__u16 relay6_port;  /* network order */
	__u16 tproxy_port;  /* host order; 0: no TPROXY rules */
	__u16 gate_queue;   /* NFQUEUE number of the admission gate (with PGW_CFG_GATE) */
	__u64 cgroup_id;    /* the cgroup the hooks are attached to */
	__u32 tproxy_mark;
	__u32 route_table;
	__u32 rule_priority;
	__u32 unix_relay_path_len; /* bytes before the NUL */
	char instance[32];  /* NUL-terminated */
	char unix_relay_path[PGW_UNIX_PATH_MAX]; /* NUL-padded */
	__u32 pad1;
};

/* Key of pgw_protected. addr all zero = any address of that family for the port. */
struct pgw_protected_key {
	__u8 family;  /* PGW_AF_INET or PGW_AF_INET6 */
	__u8 pad0;
	__u16 port;   /* network order */
	__u32 addr[4];
};

/*
 * Key of pgw_relay_socks, a SOCKHASH of the relay's own listening sockets: the address a
 * listener is bound to (addr all zero: a wildcard listener of that family and port). Only
 * pgwardend inserts (its listeners, by fd); an entry vanishes when its socket closes. The
 * hooks deliver steered connections to a registered socket or to nobody: connect4/6
 * refuse a steered connect() while the relay's address has no registered socket, and
 * sk_lookup drops a SYN for the relay's address that no registered socket takes, so
 * whoever else binds the relay's port while pgwardend is down receives nothing.
 */
struct pgw_relay_key {
	__u8 family;  /* PGW_AF_INET or PGW_AF_INET6 */
	__u8 pad0;
	__u16 port;   /* network order */
	__u32 addr[4];
};

/* Key of pgw_unix_paths: the path exactly as a client passes it, NUL-padded. */
struct pgw_unix_key {
	char path[PGW_UNIX_PATH_MAX];
};

/* pgw_origin.flags */
#define PGW_ORIGIN_V4MAPPED (1u << 0) /* client used an AF_INET6 socket to a v4-mapped address */
#define PGW_ORIGIN_RECORDED (1u << 1) /* sockops copied it under the 4-tuple */

/* What connect4/6 learned: the destination the client dialled and who dialled it. */
struct pgw_origin {
	__u32 dst_addr[4];
	__u16 dst_port;  /* network order */
	__u8 family;     /* of dst_addr: PGW_AF_INET or PGW_AF_INET6 */
	__u8 flags;
	__u32 pid;       /* thread id (the kernel's pid) */
	__u32 tgid;      /* process id */
	__u32 uid;
	__u32 gid;
	__u32 pad0;
	__u64 cgroup_id;
	__u64 cookie;    /* socket cookie of the client socket */
	__u64 connect_ns; /* bpf_ktime_get_ns() at connect() */
	char comm[16];
};

/* Key of pgw_origin_tup: the steered connection as the relay sees it from accept(): the
 * client's address (its peer) and the relay's listener address (its local end). */
struct pgw_tuple {
	__u8 family;
	__u8 pad0;
	__u16 client_port; /* network order */
	__u16 relay_port;  /* network order */
	__u16 pad1;
	__u32 client_addr[4];
	__u32 relay_addr[4];
};

/* Indexes of the per-CPU pgw_stats array. */
enum pgw_stat {
	PGW_STAT_STEERED4 = 0,   /* connect4 rewrites */
	PGW_STAT_STEERED6,       /* connect6 rewrites (v4-mapped included) */
	PGW_STAT_SKIP_MARK,      /* connects to protected destinations by the relay itself */
	PGW_STAT_NO_RELAY,       /* protected destination but no relay of that family: refused */
	PGW_STAT_ORIGIN_FAIL,    /* no room for the origin record (socket storage at connect,
				  * or pgw_origin_tup full at TCP_CONNECT): refused */
	PGW_STAT_REKEYED,        /* sockops recorded an origin under its 4-tuple */
	PGW_STAT_PEERNAME,       /* getpeername answered with the dialled address */
	PGW_STAT_CLOSED,         /* origin records removed at close */
	PGW_STAT_UNIX_STEERED,   /* connect_unix rewrites */
	PGW_STAT_RELAY_DOWN,     /* protected destination, but no registered relay socket: refused */
	PGW_STAT_LOOKUP_DROPPED, /* sk_lookup: a SYN for the relay's address no registered socket
				  * takes (a stranger on the relay's port gets nothing) */
	PGW_STAT_UNSPEC_DST,     /* connects to 0.0.0.0 / :: / ::ffff:0.0.0.0, resolved as the
				  * kernel does (to loopback or the bound source) before matching */
	PGW_STAT_UNRECORDED,     /* sk_lookup: a SYN for the relay's steering address from a
				  * 4-tuple without an origin record: dropped (reset) */
	PGW_STAT_COUNT,
};

#define PGW_STAT_NAMES                                                                    \
	{ "steered_ipv4", "steered_ipv6", "skipped_relay_mark", "refused_no_relay",        \
	  "refused_origin_full", "rekeyed_established", "getpeername_restored",             \
	  "closed_cleaned", "steered_unix", "refused_relay_down", "dropped_unregistered", \
	  "unspecified_resolved", "dropped_unrecorded" }

/* Program names (as the kernel reports them, at most 15 characters): status and detach
 * recognise pgwarden's programs, including leftovers, by the pgw_ prefix. */
#define PGW_PROG_PREFIX "pgw_"

_Static_assert(sizeof(struct pgw_config) == 208, "pgw_config layout");
_Static_assert(sizeof(struct pgw_protected_key) == 20, "pgw_protected_key layout");
_Static_assert(sizeof(struct pgw_unix_key) == 108, "pgw_unix_key layout");
_Static_assert(sizeof(struct pgw_relay_key) == 20, "pgw_relay_key layout");
_Static_assert(sizeof(struct pgw_origin) == 80, "pgw_origin layout");
_Static_assert(sizeof(struct pgw_tuple) == 40, "pgw_tuple layout");

#endif
