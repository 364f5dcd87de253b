/* steer_internal: what the steer module's files share and nothing outside it needs. */
#ifndef PGWARDEN_STEER_INTERNAL_H
#define PGWARDEN_STEER_INTERNAL_H

#include "steer/steer.h"
#include "steer/steer_gate.h"
#include "steer/steer_origin.h"
#include "steer/steer_register.h"

#include <linux/types.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The kernel ABI. By path: "steer.h" alone would find this module's own header first. */
#include "../../bpf/steer.h"

/* BPF_CGROUP_UNIX_CONNECT, absent from the 6.1 uapi headers Debian 12 builds against. */
#define STEER_ATTACH_UNIX_CONNECT 49

/* nftables (steer_net.c). */
int steer_nft_ruleset(const struct steer_opts *o, char *buf, size_t n);
/* 0, or -errno with err set; -EOPNOTSUPP when only the gate's queue rule was refused (a
 * kernel without nft queue). */
int steer_nft_apply(const struct steer_opts *o, char *err, size_t errlen);
int steer_nft_delete(const char *instance);
bool steer_nft_present(const char *instance);
/* The TPROXY mark, route table and rule priority an attach recorded in its nft table (the
 * table's comment): for cleaning up after a fail-open daemon that died, whose BPF config
 * went with its links. 0, or -ENOENT when there is no such table or comment. */
int steer_nft_routing(const char *instance, uint32_t *mark, uint32_t *table, uint32_t *prio);
/* The same from a `list table` output (unit tests). */
int steer_nft_routing_parse(const char *listing, uint32_t *mark, uint32_t *table,
			    uint32_t *prio);

/* The admission gate's rule through the xt NFQUEUE target, for kernels without nft queue
 * (steer_xtq.c). */
int steer_xtq_apply(const struct steer_opts *o, char *err, size_t errlen);
int steer_xtq_delete(const char *instance, char *err, size_t errlen);
bool steer_xtq_present(const char *instance);
void steer_xtq_chain(const char *instance, char *out, size_t n);

/* Policy routing for TPROXY (steer_net.c). */
int steer_route_apply(uint32_t mark, uint32_t table, uint32_t prio, char *err, size_t errlen);
int steer_route_delete(uint32_t mark, uint32_t table, uint32_t prio);
int steer_route_scan(uint32_t mark, uint32_t table, unsigned *rules, unsigned *routes);

/* libbpf's messages into the project log (steer_attach.c); idempotent. */
void steer_libbpf_log_init(void);

/* 0 when this process may walk BPF objects, else -errno with a message (steer_attach.c). */
int steer_bpf_access(char *err, size_t errlen);

/* True when the running kernel has cgroup/connect_unix / sk_lookup (steer_attach.c). */
bool steer_probe_connect_unix(void);
bool steer_probe_sk_lookup(void);

/* The fail-open handle's pgw_relay_socks fd, -1 if none (steer_origin.c). */
int steer_origin_socks_fd(const struct steer_origin *o);

/* The pgw_relay_socks key of a listener bound to a (steer_register.c). */
void steer_relay_key(const struct addr *a, struct pgw_relay_key *k);

/*
 * Unix sockets (steer_unix.c). The server's own socket must be out of unprivileged users'
 * reach, and the relay's socket in a directory they cannot write: 0, or -EPERM with the
 * reason in err. Without --unix-socket, server sockets within reach are only warned about.
 */
int steer_unix_check(const struct steer_opts *o, char *err, size_t errlen);
/* Listening PostgreSQL sockets (".s.PGSQL.<port>" for a protected port) that any local
 * user can connect to, as the kernel lists them (/proc/net/unix); the relay's own socket
 * (relay, may be NULL) excluded, and, when owners are given (the server's uids), sockets
 * whose file another user owns. Paths are raw bytes: sanitise them before any output.
 * Returns how many were found (at most max written). */
unsigned steer_unix_exposed(const uint16_t *ports, unsigned nports, const char *relay,
			    const uid_t *owners, unsigned nowners, char (*out)[PGW_UNIX_PATH_MAX],
			    unsigned max);
/* The uids listening on the protected TCP ports (/proc/net/tcp{,6}): the server's. */
unsigned steer_unix_server_uids(const uint16_t *ports, unsigned nports, uid_t *out,
				unsigned max);

struct bpf_link_info;
struct bpf_prog_info;

/* Live pgw_ links whose config map names instance, pinned or held by a process. */
int steer_instance_links(const char *instance, __u32 *link_ids, unsigned max, unsigned *n);
/* The link's info, its program's info and, for a pgwarden program, its config. 0/-ENOENT. */
int steer_link_config(int link_fd, struct bpf_link_info *li, struct bpf_prog_info *pi,
		      struct pgw_config *c);
/* The pinned instance's config. 0, -ENOENT, -EPROTO (another ABI). */
int steer_pinned_config(const char *instance, struct pgw_config *c);
/* The config, origin-tuple, protected and relay-socket map fds of a handle (owned by the
 * handle). */
int steer_handle_map_fds(struct steer_handle *h, int *cfg_fd, int *tup_fd, int *prot_fd,
			 int *socks_fd);
/* Path of a pinned object of instance (name NULL: the pin dir). */
void steer_pin_path(char *buf, size_t n, const char *instance, const char *name);

#endif
