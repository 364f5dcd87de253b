/*
 * steer_register: pgwardend's half of the relay-port guard.
 *
 * The hooks hand steered connections only to listening sockets registered in the
 * instance's pgw_relay_socks SOCKHASH (bpf/steer.h): connect4/6 refuse a steered connect
 * while the relay's address has none, and sk_lookup drops a SYN for it that no registered
 * socket takes. Only pgwardend registers, with its own listening fds; the kernel removes an
 * entry when its socket closes, so a killed daemon leaves nothing a stranger on the port
 * could inherit.
 *
 * The map belongs to the attach, which may come after the daemon starts (systemd's
 * ExecStartPost) and may be replaced by a detach and a new attach; so the registrar looks
 * for it on a timer, on the main thread, and registers into whatever map is current.
 * Each look is a handful of system calls: every STEER_REGISTER_POLL_MS while something is
 * missing, every STEER_REGISTER_IDLE_MS once all is registered.
 */
#include "steer/steer_internal.h"

#include "base/log.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

#define STEER_REGISTER_POLL_MS 100
#define STEER_REGISTER_IDLE_MS 1000

struct steer_registrar {
	char instance[STEER_INSTANCE_MAX];
	int map_fd;      /* -1: no map yet */
	bool owns_map;   /* false: the fail-open handle's, fixed for the process's life */
	__u32 map_id;
	unsigned n;
	unsigned registered; /* atomic: listeners registered in the current map */
	bool told;           /* logged the registration for the current map */
	struct {
		int fd;
		__u64 cookie;
		struct addr addr;
	} ls[PGW_RELAY_SOCKS_MAX];
};

void steer_relay_key(const struct addr *a, struct pgw_relay_key *k)
{
	struct addr u;

	addr_unmap(a, &u);
	memset(k, 0, sizeof(*k));
	if (u.ss.sa.sa_family == AF_INET) {
		k->family = PGW_AF_INET;
		k->port = u.ss.in4.sin_port;
		k->addr[0] = u.ss.in4.sin_addr.s_addr;
	} else {
		k->family = PGW_AF_INET6;
		k->port = u.ss.in6.sin6_port;
		memcpy(k->addr, &u.ss.in6.sin6_addr, 16);
	}
}

int steer_registrar_new(const char *instance, struct steer_origin *fail_open,
			struct steer_registrar **out)
{
	struct steer_registrar *r = calloc(1, sizeof(*r));

	*out = NULL;
	if (!r)
		return -ENOMEM;
	if (!instance) {
		const char *e = getenv("PGWARDEN_INSTANCE");

		instance = e && *e ? e : STEER_DEFAULT_INSTANCE;
	}
	if (strlen(instance) >= STEER_INSTANCE_MAX) {
		free(r);
		return -EINVAL;
	}
	snprintf(r->instance, sizeof(r->instance), "%s", instance);
	r->map_fd = fail_open ? steer_origin_socks_fd(fail_open) : -1;
	r->owns_map = !fail_open;
	*out = r;
	return 0;
}

int steer_registrar_add(struct steer_registrar *r, int fd, const struct addr *a)
{
	socklen_t len = sizeof(r->ls[0].cookie);

	if (r->n >= PGW_RELAY_SOCKS_MAX)
		return -ENOSPC;
	for (unsigned i = 0; i < r->n; i++)
		if (addr_equal(&r->ls[i].addr.ss.sa, &a->ss.sa))
			return 0; /* one socket per address: the kernel spreads over the rest */
	if (getsockopt(fd, SOL_SOCKET, SO_COOKIE, &r->ls[r->n].cookie, &len) != 0)
		return -errno;
	r->ls[r->n].fd = fd;
	r->ls[r->n].addr = *a;
	r->n++;
	return 0;
}

static __u32 map_id(int fd)
{
	struct bpf_map_info mi = {};
	__u32 len = sizeof(mi);

	return bpf_obj_get_info_by_fd(fd, &mi, &len) == 0 ? mi.id : 0;
}

/* The instance's current map, (re)opened when an attach made a new one. */
static void registrar_find_map(struct steer_registrar *r)
{
	char path[256];
	int fd;
	__u32 id;

	if (!r->owns_map)
		return;
	steer_pin_path(path, sizeof(path), r->instance, PGW_STR(PGW_MAP_RELAY_SOCKS));
	fd = bpf_obj_get(path);
	id = fd >= 0 ? map_id(fd) : 0;
	if (fd >= 0 && id && id == r->map_id) {
		close(fd);
		return;
	}
	if (r->map_fd >= 0)
		close(r->map_fd);
	r->map_fd = fd;
	r->map_id = id;
	r->told = false;
	__atomic_store_n(&r->registered, 0, __ATOMIC_RELAXED);
}

int steer_registrar_tick(struct steer_registrar *r)
{
	char text[ADDR_STRLEN];
	unsigned ok = 0;

	registrar_find_map(r);
	if (r->map_fd < 0)
		return STEER_REGISTER_POLL_MS;
	for (unsigned i = 0; i < r->n; i++) {
		struct pgw_relay_key k;
		__u64 cookie = 0, fd = (__u64)r->ls[i].fd;

		steer_relay_key(&r->ls[i].addr, &k);
		if (bpf_map_lookup_elem(r->map_fd, &k, &cookie) == 0 && cookie == r->ls[i].cookie) {
			ok++;
			continue;
		}
		if (bpf_map_update_elem(r->map_fd, &k, &fd, BPF_ANY) == 0) {
			ok++;
			continue;
		}
		log_warn("steer_register", "cannot register the listener on %s with instance %s: %s; "
			 "steered clients are refused until it is",
			 addr_format(&r->ls[i].addr.ss.sa, text, sizeof(text)), r->instance,
			 strerror(errno));
	}
	__atomic_store_n(&r->registered, ok, __ATOMIC_RELAXED);
	if (ok == r->n && !r->told) {
		r->told = true;
		log_info("steer_register", "%u listener(s) registered with instance %s: steered "
			 "clients reach this daemon and no other process", ok, r->instance);
	}
	return ok == r->n ? STEER_REGISTER_IDLE_MS : STEER_REGISTER_POLL_MS;
}

unsigned steer_registrar_registered(const struct steer_registrar *r)
{
	return r ? __atomic_load_n(&r->registered, __ATOMIC_RELAXED) : 0;
}

uint32_t steer_registrar_attach_id(const struct steer_registrar *r)
{
	return r && r->map_fd >= 0 ? r->map_id : 0;
}

void steer_registrar_free(struct steer_registrar *r)
{
	if (!r)
		return;
	if (r->owns_map && r->map_fd >= 0)
		close(r->map_fd);
	free(r);
}
