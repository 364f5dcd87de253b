/*
 * steer: kernel-assisted steering of PostgreSQL connections into the relay.
 *
 * Two halves share this header.
 *
 * The control half (pgwardenctl attach/detach/status, or pgwardend itself in fail-open mode)
 * owns kernel state: the BPF hooks of bpf/steer.bpf.c on one cgroup v2 directory, their maps,
 * the nftables table "inet <instance>" for TPROXY and the fwmark rule + local route table for
 * it. Everything an attach creates is named after the instance ("pgwarden" unless told), so
 * detach and status find it again, including leftovers of a crashed attach.
 *
 *   fail-closed (default)  links and maps are pinned under /sys/fs/bpf/<instance>. They
 *                          outlive every process: with the relay down, connections to a
 *                          protected destination go to a dead listener and are refused.
 *   fail-open              nothing is pinned; the links live exactly as long as the process
 *                          holding their file descriptors (pgwardend), so if it dies the
 *                          kernel drops them and clients reach PostgreSQL directly.
 *
 * The data half (pgwardend's workers) reads what the hooks recorded: for each accepted
 * connection, the route it took (explicit, steered, TPROXY), the address the client dialled
 * and, for steered connections, the process that dialled it. Lookups are one BPF map lookup
 * and one delete; safe from any thread.
 *
 * Errors: functions return 0 or -errno; the control half also writes one line for the
 * operator into err (no trailing newline, no "pgwardenctl:" prefix).
 */
#ifndef PGWARDEN_STEER_H
#define PGWARDEN_STEER_H

#include "base/addr.h"
#include "session/session.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdio.h>

#define STEER_DEFAULT_INSTANCE "pgwarden"
#define STEER_BPFFS "/sys/fs/bpf"
#define STEER_INSTANCE_MAX 32
#define STEER_MAX_PORTS 16
#define STEER_MAX_ADDRS 16
#define STEER_MAX_UNIX 4
#define STEER_ERR_MAX 512

/* SO_MARK of the relay's own sockets (upstream connections): the hooks and the nft rules skip
 * them. The TPROXY mark routes diverted packets to the local table. Both are configurable;
 * the defaults spell "PG". */
#define STEER_DEFAULT_RELAY_MARK 0x5047u
#define STEER_DEFAULT_TPROXY_MARK 0x5048u
#define STEER_DEFAULT_ROUTE_TABLE 20552u /* 0x5048 */
#define STEER_DEFAULT_RULE_PRIORITY 20552u

/* What to steer, where to, how. Zero-initialise, then fill; steer_opts_init() sets defaults. */
struct steer_opts {
	char instance[STEER_INSTANCE_MAX]; /* names the pin dir and the nft table */
	const char *cgroup;     /* cgroup v2 directory; NULL or "" = the cgroup2 root */
	uint16_t ports[STEER_MAX_PORTS]; /* protected ports, host order */
	unsigned nports;
	/* Protected addresses (port ignored). None: any address of either family. */
	struct addr addresses[STEER_MAX_ADDRS];
	unsigned naddresses;
	/* The relay's steered-connection listeners, one per family (either may be absent; a
	 * protected destination of a family with no relay is refused, not let through). */
	struct addr relay[2];
	unsigned nrelay;
	/* TPROXY for remote clients: the relay's IP_TRANSPARENT listener port (0 = off). */
	uint16_t tproxy_port;
	/* Unix-socket steering (kernel >= 6.7): protected socket paths and the relay's own. */
	const char *unix_paths[STEER_MAX_UNIX];
	unsigned nunix;
	const char *unix_relay; /* NULL: Unix steering off */
	uint32_t relay_mark;
	uint32_t tproxy_mark;
	uint32_t route_table;
	uint32_t rule_priority;
	bool fail_open;
	/* Admission gate: new SYNs to protected ports (from the network) go to this NFQUEUE,
	 * read by pgwardend (steer_gate_*). Off unless gate is set. */
	bool gate;
	uint16_t gate_queue;
	bool check_relay; /* refuse to attach unless the relay listens on every relay address */
	unsigned relay_wait_ms; /* how long to wait for the relay to listen (0: not at all) */
};

/* An attach's kernel objects as held by this process (fail-open: the owner of the links). */
struct steer_handle;

void steer_opts_init(struct steer_opts *o);

/* Parse a --port value (1..65535) / --address value (numeric IPv4 or IPv6, optional
 * brackets). 0 or -EINVAL. */
int steer_parse_port(const char *text, uint16_t *port) __attribute__((warn_unused_result));
int steer_parse_ip(const char *text, struct addr *out) __attribute__((warn_unused_result));

/* Check the options alone (no kernel state): ports, relays, marks, loops. 0 or -EINVAL
 * with the reason in err. steer_attach() runs it too. */
int steer_opts_check(const struct steer_opts *o, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Find the cgroup v2 mount point in a mounts table (/proc/self/mounts format) into out
 * (octal escapes such as \040 decoded). 0, -ENOENT when there is none, -ENAMETOOLONG.
 */
int steer_find_mount(FILE *mounts, const char *fstype, char *out, size_t n)
	__attribute__((warn_unused_result));

/*
 * Attach (or, when already attached to the same cgroup with this ABI, update in place).
 * Cleans up a stale pin dir / nft table / rule from a crash first. On failure nothing is
 * left attached. fail-open: *out receives the handle that owns the links (required);
 * fail-closed: out may be NULL (the pins hold everything).
 */
int steer_attach(const struct steer_opts *o, struct steer_handle **out, char *err,
		 size_t errlen) __attribute__((warn_unused_result));

/* A fail-closed attach's origin map pin to group gid, mode 0660, so that a pgwardend running
 * as a member of it (with CAP_BPF and CAP_DAC_READ_SEARCH, not root) can use the maps it
 * needs; nothing else is shared (steer_grant.c). 0 or -errno with err set. */
int steer_pins_grant(const char *instance, gid_t gid, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/* Release the handle. For a fail-open attach this detaches (the links close with it). */
void steer_handle_close(struct steer_handle *h);

/*
 * Fail-open hand-over across exec(): make the handle's link (and map) fds survive exec and
 * describe them as "fd,fd,..." in buf, for PGWARDEN_STEER_FDS. 0 or -errno.
 */
int steer_handle_export_fds(struct steer_handle *h, char *buf, size_t n)
	__attribute__((warn_unused_result));

/*
 * Detach the instance: every link (pinned, or held by a live process: those are detached
 * by id), the pin dir, the nft table, the fwmark rule and route table. Leaves established
 * connections alone. 0 (also when there was nothing), or -errno with err set.
 */
int steer_detach(const char *instance, char *err, size_t errlen)
	__attribute__((warn_unused_result));

/*
 * Everything status shows, as a JSON object (jansson json_t *; NULL on ENOMEM): attached,
 * mode, cgroup, programs, links, maps, counters, nft table, rule, route table, unix
 * coverage, leftovers. See docs/STEERING.md for the fields.
 */
void *steer_status_json(const char *instance);

/* ---- data half: pgwardend ---- */

struct steer_origin;

/*
 * A lookup handle for a fail-closed (pinned) attach of instance (NULL: $PGWARDEN_INSTANCE,
 * else "pgwarden"). Open one per worker: a handle is not thread-safe. The handle finds the
 * pinned maps by itself when they appear (attach after the daemon started) or are replaced
 * (detach, attach), checking at most every 100 ms while not attached and every second on a
 * lookup miss. Returns 0, or -ENOENT when not attached *yet* (*out is still a valid handle:
 * keep it), or another -errno (then *out is NULL).
 */
int steer_origin_open(const char *instance, struct steer_origin **out)
	__attribute__((warn_unused_result));
/* The same over a fail-open handle this process owns. Handles over fds (this one and
 * steer_origin_adopt()'s) never refresh: they may be shared by all workers. */
int steer_origin_from_handle(struct steer_handle *h, struct steer_origin **out)
	__attribute__((warn_unused_result));
/*
 * Fail-open hand-over, daemon side: fds is $PGWARDEN_STEER_FDS as set by
 * `pgwardenctl attach --fail-open ... -- pgwardend ...`. Marks the inherited link fds
 * close-on-exec (the daemon's children must not keep steering alive), keeps them open for
 * the life of the process, and opens the origin maps through them. -ENOENT when fds is
 * NULL/empty, -EBADF when an fd is not a BPF link.
 */
int steer_origin_adopt(const char *fds, struct steer_origin **out)
	__attribute__((warn_unused_result));
void steer_origin_close(struct steer_origin *o);

/* The relay mark the attach configured, or STEER_DEFAULT_RELAY_MARK before any attach was
 * seen (for steer_upstream_prepare()). */
uint32_t steer_origin_relay_mark(const struct steer_origin *o);

/*
 * Classify an accepted connection and fill s->route, s->client, s->dialled and, for
 * steered connections, s->process. listen is the address of the listener that accepted
 * it, peer and local what accept() and getsockname() returned (local differs from listen
 * only for TPROXY). o may be NULL (not attached: explicit or TPROXY only).
 *   SESSION_ROUTE_STEERED  the hooks' record, found by 4-tuple and removed
 *   SESSION_ROUTE_TPROXY   local is not the listener's address: it is the dialled one
 *   SESSION_ROUTE_EXPLICIT anything else; dialled = local (the address it connected to)
 * Returns 0 (a missing record is not an error: the connection is then explicit).
 */
int steer_origin_lookup(struct steer_origin *o, int fd, const struct addr *listen,
			const struct addr *peer, const struct addr *local, struct session *s)
	__attribute__((warn_unused_result));

/*
 * May the relay connect to where a TPROXY'd client was going? TPROXY diverts by port
 * alone, so a remote client can name any address at all; the relay goes on only to a
 * protected one: an address of this host (addr_is_local()), or one the attach names
 * explicitly (--address). o may be NULL (no maps: local addresses only).
 */
bool steer_origin_destination_allowed(struct steer_origin *o, const struct addr *dialled);

/*
 * A connection accepted on the relay's Unix listener (connect_unix steering): s->process
 * from SO_PEERCRED (pid, uid, gid: kernel-filled) plus comm and cgroup from /proc (best
 * effort); route STEERED when the attach steers Unix sockets, else EXPLICIT. s->client and
 * s->dialled are left alone (struct addr holds IP addresses only).
 */
void steer_origin_lookup_unix(struct steer_origin *o, int fd, struct session *s);

/*
 * Prepare an unconnected upstream socket before connect(): set SO_MARK = mark (so neither
 * the BPF hooks nor the nft rules capture it), and, when transparent_source is true and
 * the session's client address can be used as the source (a TPROXY'd remote client),
 * IP_TRANSPARENT + bind to the client's address so the server sees the real client.
 * Returns 0 when the real client address is used, 1 when not (why gets a static reason:
 * "loopback client", "explicit route", "disabled"), -errno when a setsockopt failed.
 */
int steer_upstream_prepare(int fd, const struct session *s, uint32_t mark,
			   bool transparent_source, const char **why)
	__attribute__((warn_unused_result));

/*
 * The relay-port guard, pgwardend's side: the hooks deliver steered connections only to
 * listening sockets registered in the instance's socket map (bpf/steer.h,
 * pgw_relay_socks), so nobody else who binds the relay's port ever receives them. The
 * main thread owns a registrar, adds its plain TCP listeners (one per address; the kernel
 * spreads over the SO_REUSEPORT group), and calls steer_registrar_tick() when the
 * returned number of milliseconds has passed: it finds the map (pinned by instance name,
 * or the fail-open handle's) and registers what is missing. Entries vanish when the
 * sockets close. fail_open: the process's fail-open handle, or NULL.
 */
struct steer_registrar;
int steer_registrar_new(const char *instance, struct steer_origin *fail_open,
			struct steer_registrar **out) __attribute__((warn_unused_result));
/* 0, -ENOSPC (more than PGW_RELAY_SOCKS_MAX addresses), -errno. The fd stays the caller's
 * and must outlive the registrar's use of it. */
int steer_registrar_add(struct steer_registrar *r, int listen_fd, const struct addr *a)
	__attribute__((warn_unused_result));
int steer_registrar_tick(struct steer_registrar *r);
/* Listeners registered in the current map (any thread; for status). */
unsigned steer_registrar_registered(const struct steer_registrar *r);
/* Which attach the registrar last found (the kernel's id of its relay-socket map), 0 while
 * none is attached: a change is an attach or a detach (main thread, after a tick). */
uint32_t steer_registrar_attach_id(const struct steer_registrar *r);
void steer_registrar_free(struct steer_registrar *r);

/* A non-blocking listening TCP socket with IP_TRANSPARENT (and SO_REUSEADDR, SO_REUSEPORT
 * when reuseport) bound to a, for TPROXY. fd or -errno. */
int steer_listen_transparent(const struct addr *a, int backlog, bool reuseport)
	__attribute__((warn_unused_result));

/* A non-blocking listening Unix socket at path, mode 0666 so every local client can reach
 * it, for connect_unix steering. A socket file left by an earlier run is replaced; one that
 * something still accepts on is -EADDRINUSE, another kind of file -EEXIST. fd or -errno. */
int steer_listen_unix(const char *path, int backlog) __attribute__((warn_unused_result));

/*
 * Connect a Unix upstream socket (marked by steer_upstream_prepare() first) to PostgreSQL's
 * socket at path. With as_client, and the client's credentials known (SO_PEERCRED), connect()
 * runs with the client's uid and gid as this thread's effective ids, so that the server's
 * peer authentication sees the client, as it would without pgwarden, and with pgwardend's
 * own file-system ids, so that the path is looked up as pgwardend: the server's socket sits
 * in a directory only root and the server's user may search (docs/STEERING.md), which the
 * client itself cannot enter. The thread's own ids are back before this returns. A Unix
 * connect completes at once or fails: a full listen
 * backlog is -EAGAIN, as a direct client is told. Returns 0 when connected as the client,
 * 1 when connected as pgwardend (why gets a static reason), -errno when connect() failed.
 */
int steer_upstream_connect_unix(int fd, const char *path, const struct session *s,
				bool as_client, const char **why) __attribute__((warn_unused_result));

/* ---- admission gate: pgwardend ---- */

#define STEER_GATE_MAX_DENY 64

/* An address range; IPv4 is kept as ::ffff:a.b.c.d with bits counted from the front. */
struct steer_cidr {
	uint8_t addr[16];
	uint8_t bits;
	bool v4;
};

/* Room for a formatted range: the longest IPv6 text, "/128" and the NUL. */
#define STEER_CIDR_STRLEN (46 + 4)

/* "10.0.0.0/8", "192.0.2.7", "fd00::/8". 0 or -EINVAL. Host bits are kept as written:
 * steer_cidr_mask() says what the range really is. */
int steer_cidr_parse(const char *text, struct steer_cidr *out) __attribute__((warn_unused_result));
/* Whether addr (16 bytes, IPv4 mapped) is in c. An IPv6 range shorter than /96 never
 * matches an IPv4 address ("::/0" is every IPv6 client); ::ffff:a.b.c.d/N (N >= 96) is the
 * IPv4 range a.b.c.d/(N-96). */
bool steer_cidr_match(const struct steer_cidr *c, const uint8_t addr[16]);
/* Clear the bits after the prefix ("10.1.2.3/8" becomes "10.0.0.0/8"). */
void steer_cidr_mask(struct steer_cidr *c);
/* "10.0.0.0/8", "fd00::/8": always with the prefix length, IPv4 ranges as IPv4. Returns buf
 * (STEER_CIDR_STRLEN bytes are always enough). */
const char *steer_cidr_format(const struct steer_cidr *c, char *buf, size_t n);

struct steer_gate_opts {
	uint16_t queue_num;   /* as given to attach --gate-queue */
	double rate_per_sec;  /* new connections per second per source address; 0: no limit */
	uint32_t burst;       /* bucket size; required when rate_per_sec > 0 */
	uint32_t max_sources; /* tracked source addresses (rounded up to a power of two) */
	struct steer_cidr deny[STEER_GATE_MAX_DENY];
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
