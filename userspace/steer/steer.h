/*
 * steer: kernel-assisted steering of PostgreSQL connections into the relay: the control
 * half. The module has four faces, one header each:
 *
 *   steer/steer.h           attach, detach, status (pgwardenctl; pgwardend in fail-open)
 *   steer/steer_origin.h    the relay's lookups: route, origin, process, upstream sockets
 *   steer/steer_register.h  the relay-port guard's registrar (pgwardend's main thread)
 *   steer/steer_gate.h      the optional NFQUEUE admission gate
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
 * Errors: functions return 0 or -errno; the control half also writes one line for the
 * operator into err (no trailing newline, no "pgwardenctl:" prefix).
 */
#ifndef PGWARDEN_STEER_H
#define PGWARDEN_STEER_H

#include "base/addr.h"
#include "base/instance.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdio.h>

#define STEER_DEFAULT_INSTANCE INSTANCE_NAME_DEFAULT
#define STEER_BPFFS "/sys/fs/bpf"
#define STEER_INSTANCE_MAX INSTANCE_NAME_MAX
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
#define STEER_DEFAULT_ORIGIN_MAX 65536u /* = PGW_ORIGIN_MAX (bpf/steer.h) */
#define STEER_ORIGIN_MAX_LIMIT (1u << 22) /* 4 Mi records of 80 bytes (plus the key) */

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
	/* Capacity of the origin map keyed by 4-tuple (pgw_origin_tup): steered connections
	 * between connect() and the relay's accept(). Full, new steered connects are refused.
	 * Fixed at the first attach: an in-place update with another size is refused. */
	uint32_t origin_max;
	bool check_relay; /* refuse to attach unless the relay listens on every relay address */
	/* A fail-closed attach gives these pins to the group of a pgwardend that does not run
	 * as root (steer_pins_grant()) before it waits for the relay's registration, which
	 * needs them. */
	bool grant_daemon;
	gid_t daemon_gid;
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

/* A fail-closed attach's origin map and relay-socket map pins to group gid, mode 0660, so
 * that a pgwardend running as a member of it (with CAP_BPF and CAP_DAC_READ_SEARCH, not
 * root) can use the maps it writes; nothing else is shared (steer_grant.c). 0 or -errno with
 * err set. */
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

#endif
