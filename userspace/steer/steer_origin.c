/*
 * steer_origin: the relay's side of steering. For each accepted connection: which route it
 * took, what the client dialled, and (steered) which process dialled it; for each upstream
 * socket: the relay mark and, where it can, the client's own source address.
 *
 * The origin record is read and deleted by the worker that accepted the connection (one
 * lookup, one delete on a hash: no locks of ours, the map is safe from any thread). The
 * relay's steering address (the attach's --relay) takes steered connections only: one
 * accepted there without a record (the kernel could not record it: origin map full, or
 * sk_lookup absent) is refused by the caller (steer_origin_unrecorded()), never treated
 * as explicit and never relayed to a guessed destination.
 */
#include "steer/steer_internal.h"

#include "base/clock.h"
#include "base/log.h"

#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/*
 * One per worker (no locks: the handle's refresh state is the worker's). A handle opened by
 * instance name re-finds the pinned maps by itself: when they are not there yet (the daemon
 * starts before `pgwardenctl attach` runs, as under systemd's ExecStartPost), and when a
 * detach and a new attach replaced them. A closed handle looks at every lookup (one failed
 * bpf_obj_get, about a microsecond, only while nothing is attached): a steered connection
 * accepted just after an attach must find its record, not pass as explicit because the
 * handle had looked a moment before. An open handle re-checks on a miss, at most every
 * STEER_REFRESH_MISS_NS, so a steady steered load costs no extra syscall; meanwhile a miss
 * on the steering address is refused (steer_origin_unrecorded()), never served as explicit.
 */
#define STEER_REFRESH_MISS_NS (1000 * NSEC_PER_MSEC)

struct steer_origin {
	char instance[STEER_INSTANCE_MAX]; /* "" for handles over fds (fail-open) */
	int cfg_fd;
	int tup_fd;
	int prot_fd;  /* pgw_protected: where a TPROXY'd client may be taken */
	int socks_fd; /* pgw_relay_socks (fail-open handles: for the registrar) */
	bool owns_fds;
	__u32 cfg_map_id;      /* of the open config map: a new attach makes a new one */
	uint64_t next_refresh_ns;
	uint32_t relay_mark;
	bool unix_on;
	/* The attach's steering addresses (pgw_config relay4/relay6), family 0 when absent. */
	struct pgw_relay_key steer_addr[2];
};

static void origin_drop_maps(struct steer_origin *o)
{
	if (o->owns_fds) {
		int *fds[] = {&o->cfg_fd, &o->tup_fd, &o->prot_fd, &o->socks_fd};

		for (size_t i = 0; i < sizeof(fds) / sizeof(fds[0]); i++)
			if (*fds[i] >= 0)
				close(*fds[i]);
	}
	o->cfg_fd = o->tup_fd = o->prot_fd = o->socks_fd = -1;
	o->cfg_map_id = 0;
}

/* Read what the attach configured. 0, or -errno (-EPROTO: another ABI). */
static int origin_read_config(struct steer_origin *o)
{
	struct pgw_config c;
	__u32 zero = 0;

	if (bpf_map_lookup_elem(o->cfg_fd, &zero, &c))
		return -errno;
	if (c.abi_version != PGW_STEER_ABI_VERSION)
		return -EPROTO;
	o->relay_mark = c.relay_mark;
	o->unix_on = (c.flags & PGW_CFG_UNIX) != 0;
	memset(o->steer_addr, 0, sizeof(o->steer_addr));
	if (c.flags & PGW_CFG_RELAY4) {
		o->steer_addr[0].family = PGW_AF_INET;
		o->steer_addr[0].port = c.relay4_port;
		o->steer_addr[0].addr[0] = c.relay4_addr;
	}
	if (c.flags & PGW_CFG_RELAY6) {
		o->steer_addr[1].family = PGW_AF_INET6;
		o->steer_addr[1].port = c.relay6_port;
		memcpy(o->steer_addr[1].addr, c.relay6_addr, sizeof(c.relay6_addr));
	}
	return 0;
}

static __u32 map_id_of(int fd)
{
	struct bpf_map_info mi = {};
	__u32 len = sizeof(mi);

	return bpf_obj_get_info_by_fd(fd, &mi, &len) == 0 ? mi.id : 0;
}

/* (Re)open the instance's pinned maps if they are not the ones we hold. 0, -ENOENT when not
 * attached, other -errno. */
static int origin_refresh(struct steer_origin *o)
{
	char path[256];
	int cfd, tfd, rc;
	__u32 id;

	steer_pin_path(path, sizeof(path), o->instance, PGW_STR(PGW_MAP_CONFIG));
	/* Read-only: the relay only reads the attach's configuration, and a daemon that does
	 * not run as root may read the pin but not write it (steer_pins_grant()). */
	cfd = bpf_obj_get_opts(path, &(struct bpf_obj_get_opts){.sz = sizeof(struct bpf_obj_get_opts),
								 .file_flags = BPF_F_RDONLY});
	if (cfd < 0) {
		rc = -errno;
		origin_drop_maps(o);
		return rc;
	}
	id = map_id_of(cfd);
	if (id && id == o->cfg_map_id) {
		close(cfd);
		return 0;
	}
	steer_pin_path(path, sizeof(path), o->instance, PGW_STR(PGW_MAP_ORIGIN_TUP));
	tfd = bpf_obj_get(path);
	if (tfd < 0) {
		rc = -errno;
		close(cfd);
		origin_drop_maps(o);
		return rc;
	}
	origin_drop_maps(o);
	o->cfg_fd = cfd;
	o->tup_fd = tfd;
	/* Optional: without it a TPROXY'd client may go to local addresses only. */
	steer_pin_path(path, sizeof(path), o->instance, PGW_STR(PGW_MAP_PROTECTED));
	o->prot_fd = bpf_obj_get(path);
	o->cfg_map_id = id;
	rc = origin_read_config(o);
	if (rc)
		origin_drop_maps(o);
	else
		log_info("steer", "steering state of instance %s opened", o->instance);
	return rc;
}

/* Before a lookup (closed handle) or after a miss (open one): refresh if it is time. True
 * when the handle now holds different maps than before. */
static bool origin_maybe_refresh(struct steer_origin *o, bool miss)
{
	__u32 before = o->cfg_map_id;
	uint64_t now;

	if (!o->instance[0])
		return false; /* a fail-open handle: its maps live as long as the process */
	if (o->cfg_fd >= 0 && !miss)
		return false;
	now = clock_mono_ns();
	if (o->cfg_fd >= 0 && now < o->next_refresh_ns)
		return false;
	o->next_refresh_ns = now + STEER_REFRESH_MISS_NS;
	origin_refresh(o);
	return o->cfg_map_id != before && o->cfg_fd >= 0;
}

static const char *env_instance(void)
{
	const char *e = getenv("PGWARDEN_INSTANCE");

	return e && *e ? e : STEER_DEFAULT_INSTANCE;
}

int steer_origin_open(const char *instance, struct steer_origin **out)
{
	struct steer_origin *o;
	int rc;

	*out = NULL;
	steer_libbpf_log_init();
	if (!instance)
		instance = env_instance();
	if (strlen(instance) >= STEER_INSTANCE_MAX)
		return -EINVAL;
	o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	snprintf(o->instance, sizeof(o->instance), "%s", instance);
	o->cfg_fd = o->tup_fd = o->prot_fd = o->socks_fd = -1;
	o->owns_fds = true;
	o->next_refresh_ns = clock_mono_ns() + STEER_REFRESH_MISS_NS;
	rc = origin_refresh(o);
	if (rc && rc != -ENOENT) {
		free(o);
		return rc;
	}
	*out = o;
	return rc; /* -ENOENT: not attached yet, the handle will pick the attach up */
}

static int origin_over_fds(struct steer_origin **out, int cfg_fd, int tup_fd, int prot_fd,
			   int socks_fd, bool owns)
{
	struct steer_origin *o = calloc(1, sizeof(*o));
	int rc;

	if (!o)
		return -ENOMEM;
	o->cfg_fd = cfg_fd;
	o->tup_fd = tup_fd;
	o->prot_fd = prot_fd;
	o->socks_fd = socks_fd;
	o->owns_fds = owns;
	o->cfg_map_id = map_id_of(cfg_fd);
	rc = origin_read_config(o);
	if (rc) {
		free(o);
		return rc;
	}
	*out = o;
	return 0;
}

int steer_origin_from_handle(struct steer_handle *h, struct steer_origin **out)
{
	int cfd, tfd, pfd, sfd;

	*out = NULL;
	steer_handle_map_fds(h, &cfd, &tfd, &pfd, &sfd);
	return origin_over_fds(out, cfd, tfd, pfd, sfd, false);
}

int steer_origin_socks_fd(const struct steer_origin *o)
{
	return o ? o->socks_fd : -1;
}

/* The map of a program by name, as a new fd, or -ENOENT. */
static int prog_map_by_name(__u32 prog_id, const char *name)
{
	struct bpf_prog_info pi = {};
	__u32 len = sizeof(pi), ids[16];
	int pfd = bpf_prog_get_fd_by_id(prog_id), found = -ENOENT;

	if (pfd < 0)
		return -errno;
	pi.nr_map_ids = 16;
	pi.map_ids = (__u64)(unsigned long)ids;
	if (bpf_obj_get_info_by_fd(pfd, &pi, &len) == 0)
		for (__u32 i = 0; i < pi.nr_map_ids && i < 16 && found < 0; i++) {
			struct bpf_map_info mi = {};
			__u32 ml = sizeof(mi);
			int mfd = bpf_map_get_fd_by_id(ids[i]);

			if (mfd < 0)
				continue;
			if (bpf_obj_get_info_by_fd(mfd, &mi, &ml) == 0 && strcmp(mi.name, name) == 0)
				found = mfd;
			else
				close(mfd);
		}
	close(pfd);
	return found;
}

int steer_origin_adopt(const char *fds, struct steer_origin **out)
{
	int cfd = -ENOENT, tfd = -ENOENT, pfd = -ENOENT, sfd = -ENOENT, rc, n = 0;
	const char *p = fds;

	*out = NULL;
	if (!fds || !*fds)
		return -ENOENT;
	steer_libbpf_log_init();
	while (*p) {
		char *end;
		long fd = strtol(p, &end, 10);
		struct bpf_link_info li = {};
		__u32 len = sizeof(li);

		if (end == p || fd < 0 || fd > 65535 || (*end && *end != ','))
			return -EINVAL;
		p = *end ? end + 1 : end;
		/* Ours now: no child of the daemon may keep steering alive after it dies. */
		if (fcntl((int)fd, F_SETFD, FD_CLOEXEC) < 0 ||
		    bpf_obj_get_info_by_fd((int)fd, &li, &len) != 0)
			return -EBADF;
		n++;
		if (cfd < 0)
			cfd = prog_map_by_name(li.prog_id, PGW_STR(PGW_MAP_CONFIG));
		if (tfd < 0)
			tfd = prog_map_by_name(li.prog_id, PGW_STR(PGW_MAP_ORIGIN_TUP));
		if (pfd < 0)
			pfd = prog_map_by_name(li.prog_id, PGW_STR(PGW_MAP_PROTECTED));
		if (sfd < 0)
			sfd = prog_map_by_name(li.prog_id, PGW_STR(PGW_MAP_RELAY_SOCKS));
	}
	if (cfd < 0 || tfd < 0) {
		rc = -ENOENT;
		goto err;
	}
	rc = origin_over_fds(out, cfd, tfd, pfd < 0 ? -1 : pfd, sfd < 0 ? -1 : sfd, true);
	if (rc)
		goto err;
	log_warn("steer_fail_open", "fail-open: this process holds %d steering links; if it dies, "
		 "clients reach PostgreSQL directly", n);
	return 0;
err:
	if (cfd >= 0)
		close(cfd);
	if (tfd >= 0)
		close(tfd);
	if (pfd >= 0)
		close(pfd);
	if (sfd >= 0)
		close(sfd);
	return rc;
}

void steer_origin_close(struct steer_origin *o)
{
	if (!o)
		return;
	origin_drop_maps(o);
	free(o);
}

uint32_t steer_origin_relay_mark(const struct steer_origin *o)
{
	/* Marked even before an attach is seen: an unmarked upstream socket of a relay inside
	 * the attached cgroup would be steered back into the relay. */
	return o && o->relay_mark ? o->relay_mark : STEER_DEFAULT_RELAY_MARK;
}

/* Family, address words and port of a socket address, v4-mapped folded to IPv4 (the BPF
 * side keys a dual-stack socket's IPv4 connection the same way). False if not IP. */
static bool addr_words(const struct addr *a, __u8 *family, __u32 w[4], __u16 *port)
{
	memset(w, 0, 16);
	if (a->ss.sa.sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)&a->ss;

		*family = PGW_AF_INET;
		w[0] = s4->sin_addr.s_addr;
		*port = s4->sin_port;
		return true;
	}
	if (a->ss.sa.sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&a->ss;

		*port = s6->sin6_port;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			*family = PGW_AF_INET;
			memcpy(&w[0], &s6->sin6_addr.s6_addr[12], 4);
		} else {
			*family = PGW_AF_INET6;
			memcpy(w, &s6->sin6_addr, 16);
		}
		return true;
	}
	return false;
}

static void origin_dst(const struct pgw_origin *r, struct addr *out)
{
	memset(out, 0, sizeof(*out));
	if (r->family == PGW_AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&out->ss;

		s4->sin_family = AF_INET;
		s4->sin_addr.s_addr = r->dst_addr[0];
		s4->sin_port = r->dst_port;
		out->len = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->ss;

		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, r->dst_addr, 16);
		s6->sin6_port = r->dst_port;
		out->len = sizeof(*s6);
	}
}


/* The process behind a Unix-socket peer: SO_PEERCRED (kernel-filled), comm and cgroup from
 * /proc (best effort: the process may already be gone). */
static void unix_peer_process(int fd, struct session_process *p)
{
	struct ucred cr;
	socklen_t len = sizeof(cr);
	char path[64], line[512];
	FILE *f;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
		return;
	p->known = true;
	p->pid = p->tgid = (uint32_t)cr.pid;
	p->uid = cr.uid;
	p->gid = cr.gid;
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)cr.pid);
	f = fopen(path, "re");
	if (f) {
		if (fgets(p->comm, sizeof(p->comm), f))
			p->comm[strcspn(p->comm, "\n")] = '\0';
		fclose(f);
	}
	snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)cr.pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char root[256], cg[1024];
		struct stat st;
		FILE *m;

		if (strncmp(line, "0::", 3) != 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		m = fopen("/proc/self/mounts", "re");
		if (!m)
			break;
		if (steer_find_mount(m, "cgroup2", root, sizeof(root)) == 0) {
			snprintf(cg, sizeof(cg), "%s%s", root, line + 3);
			if (stat(cg, &st) == 0)
				p->cgroup_id = (uint64_t)st.st_ino;
		}
		fclose(m);
		break;
	}
	fclose(f);
}

int steer_origin_lookup(struct steer_origin *o, int fd, const struct addr *listen,
			const struct addr *peer, const struct addr *local, struct session *s)
{
	struct session_process proc = {0};
	struct pgw_tuple t;
	struct pgw_origin r;
	__u16 lport, pport;
	__u8 lfam;
	bool found = false;

	s->client = *peer;
	s->route = SESSION_ROUTE_EXPLICIT;
	s->dialled = *local;
	session_forget_process(s);

	memset(&t, 0, sizeof(t));
	if (!addr_words(peer, &t.family, t.client_addr, &pport) ||
	    !addr_words(local, &lfam, t.relay_addr, &lport))
		return 0;
	t.client_port = pport;
	t.relay_port = lport;
	if (o && lfam == t.family) {
		/* A closed handle looks for an attach right here: looking again for a miss,
		 * a moment later, would only repeat that (a failed bpf() while unattached). */
		bool looked = o->cfg_fd < 0;

		origin_maybe_refresh(o, false);
		found = o->tup_fd >= 0 && bpf_map_lookup_elem(o->tup_fd, &t, &r) == 0;
		/* A miss may mean our maps are stale (detached and attached again). */
		if (!found && !looked && origin_maybe_refresh(o, true))
			found = o->tup_fd >= 0 && bpf_map_lookup_elem(o->tup_fd, &t, &r) == 0;
	}
	if (found) {
		/* Consumed: the 4-tuple may be reused by a later connection. */
		bpf_map_delete_elem(o->tup_fd, &t);
		s->route = SESSION_ROUTE_STEERED;
		origin_dst(&r, &s->dialled);
		proc.known = true;
		proc.pid = r.pid;
		proc.tgid = r.tgid;
		proc.uid = r.uid;
		proc.gid = r.gid;
		proc.cgroup_id = r.cgroup_id;
		memcpy(proc.comm, r.comm, sizeof(proc.comm));
		proc.comm[sizeof(proc.comm) - 1] = '\0';
		return session_set_process(s, &proc);
	}
	/* TPROXY: the accepted socket's local end is the destination the client dialled, not
	 * the listener's address (a protected port never equals the TPROXY port). */
	{
		__u8 f2;
		__u32 w2[4];
		__u16 listen_port;

		if (!addr_words(listen, &f2, w2, &listen_port))
			return 0;
		if (lport != listen_port ||
		    (!addr_is_unspecified(listen) && (f2 != lfam || memcmp(w2, t.relay_addr, 16) != 0))) {
			s->route = SESSION_ROUTE_TPROXY;
			s->dialled = *local;
		}
	}
	return 0;
}

bool steer_origin_unrecorded(struct steer_origin *o, const struct session *s)
{
	struct pgw_relay_key k;

	if (!o || o->cfg_fd < 0 || s->route != SESSION_ROUTE_EXPLICIT)
		return false;
	/* An attach updated in place may have moved the relay: read where it is now (one
	 * lookup, explicit connections only). Unreadable: keep what we knew. */
	(void)origin_read_config(o);
	memset(&k, 0, sizeof(k));
	if (!addr_words(&s->dialled, &k.family, k.addr, &k.port))
		return false;
	for (size_t i = 0; i < sizeof(o->steer_addr) / sizeof(o->steer_addr[0]); i++)
		if (o->steer_addr[i].family && memcmp(&o->steer_addr[i], &k, sizeof(k)) == 0)
			return true;
	return false;
}

bool steer_origin_destination_allowed(struct steer_origin *o, const struct addr *dialled)
{
	struct pgw_protected_key k;
	__u32 one;
	__u16 port;

	if (addr_is_local(dialled))
		return true;
	if (!o)
		return false;
	origin_maybe_refresh(o, false);
	if (o->prot_fd < 0)
		return false;
	/* Only an explicitly named address: a port-only key means "this port on any of this
	 * host's addresses", which the local check above already answered. */
	memset(&k, 0, sizeof(k));
	if (!addr_words(dialled, &k.family, k.addr, &port))
		return false;
	k.port = port;
	if (!(k.addr[0] | k.addr[1] | k.addr[2] | k.addr[3]))
		return false;
	return bpf_map_lookup_elem(o->prot_fd, &k, &one) == 0;
}

int steer_origin_lookup_unix(struct steer_origin *o, int fd, struct session *s)
{
	struct session_process proc = {0};

	/* No per-connection record to miss here: look for a new attach (or a detach) as a
	 * miss would, and read whether it steers Unix sockets now (an attach may change that
	 * in place). */
	if (o) {
		origin_maybe_refresh(o, true);
		if (o->cfg_fd >= 0 && origin_read_config(o))
			o->unix_on = false;
	}
	s->route = o && o->cfg_fd >= 0 && o->unix_on ? SESSION_ROUTE_STEERED : SESSION_ROUTE_EXPLICIT;
	session_forget_process(s);
	unix_peer_process(fd, &proc);
	return proc.known ? session_set_process(s, &proc) : 0;
}


int steer_upstream_prepare(int fd, const struct session *s, uint32_t mark,
			   bool transparent_source, const char **why)
{
	const struct addr *c = &s->client;
	struct addr src;
	int one = 1;

	*why = NULL;
	if (mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) != 0)
		return -errno;
	if (!transparent_source) {
		*why = "disabled";
		return 1;
	}
	if (s->route == SESSION_ROUTE_EXPLICIT) {
		*why = "explicit route";
		return 1;
	}
	if (c->ss.sa.sa_family != AF_INET && c->ss.sa.sa_family != AF_INET6) {
		*why = c->ss.sa.sa_family == AF_UNIX ? "Unix-socket client" : "not an IP client";
		return 1;
	}
	if (addr_is_loopback(c)) {
		/* The server would see 127.0.0.1 either way, and the client's own 4-tuple is
		 * taken by its steered connection. */
		*why = "loopback client";
		return 1;
	}
	/* The client's address with a fresh port: its own port is in use by the accepted
	 * TPROXY socket's mirror 4-tuple, which would capture our packets to the server. */
	src = *c;
	if (src.ss.sa.sa_family == AF_INET) {
		((struct sockaddr_in *)&src.ss)->sin_port = 0;
		if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)))
			return -errno;
	} else {
		((struct sockaddr_in6 *)&src.ss)->sin6_port = 0;
		if (setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)))
			return -errno;
	}
	/* Pick the port at connect(), so only the full 4-tuple must be unique. */
	setsockopt(fd, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&src.ss, src.len) != 0)
		return -errno;
	return 0;
}

/*
 * This thread's effective ids, and only this thread's: the raw system calls, because
 * glibc's setresuid() and setresgid() change every thread of the process. Group first, while
 * the thread still has the privilege to change it. 0 or -errno.
 */
static int thread_set_effective_ids(uid_t uid, gid_t gid)
{
	if (syscall(SYS_setresgid, (gid_t)-1, gid, (gid_t)-1) != 0)
		return -errno;
	if (syscall(SYS_setresuid, (uid_t)-1, uid, (uid_t)-1) != 0)
		return -errno;
	return 0;
}

/*
 * File-system ids back to the thread's own (root) while the effective ids stay the
 * client's: the path lookup of the connect() then traverses the server's private socket
 * directory as pgwardend, while the credentials the socket carries (SO_PEERCRED, the
 * effective ids) are the client's, which is what `peer` authentication reads. setfsuid()
 * is allowed because the real and saved ids are still the thread's own, and the kernel
 * raises the file-system capabilities with a root fsuid. The raw system calls, per thread;
 * setfsuid reports no error, so the result is read back. 0 or -EPERM.
 */
static int thread_set_fs_ids(uid_t uid, gid_t gid)
{
	syscall(SYS_setfsgid, gid);
	syscall(SYS_setfsuid, uid);
	if ((uid_t)syscall(SYS_setfsuid, (uid_t)-1) != uid ||
	    (gid_t)syscall(SYS_setfsgid, (gid_t)-1) != gid)
		return -EPERM;
	return 0;
}

/* Back to the ids the thread had. Only the saved ids are restored, which is always allowed;
 * a thread that could not get back its own ids must not go on serving anyone. */
static void thread_restore_effective_ids(uid_t uid, gid_t gid)
{
	if (syscall(SYS_setresuid, (uid_t)-1, uid, (uid_t)-1) != 0 ||
	    syscall(SYS_setresgid, (gid_t)-1, gid, (gid_t)-1) != 0) {
		log_error("upstream_source", "cannot restore this thread's user and group ids "
			  "(%s); stopping", strerror(errno));
		abort();
	}
}

int steer_upstream_connect_unix(int fd, const char *path, const struct session *s,
				bool as_client, const char **why)
{
	const struct session_process *proc = session_process(s);
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	uid_t euid = geteuid();
	gid_t egid = getegid();
	bool switched = false;
	int rc = 0;

	*why = NULL;
	if (len >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, len);
	if (!as_client) {
		*why = "disabled";
	} else if (!proc->known) {
		*why = "client credentials unknown";
	} else if (proc->uid != euid || proc->gid != egid) {
		rc = thread_set_effective_ids(proc->uid, proc->gid);
		if (!rc)
			rc = thread_set_fs_ids(euid, egid);
		if (rc) {
			/* The group may have changed before the user failed to. */
			thread_restore_effective_ids(euid, egid);
			*why = rc == -EPERM ? "pgwardend may not take another user's ids" :
					      "cannot take the client's ids";
		}
		switched = rc == 0;
	}
	/* A Unix connect either completes at once or fails: EAGAIN means PostgreSQL's listen
	 * backlog is full, which a direct client is told too. */
	rc = connect(fd, (const struct sockaddr *)&sun,
		     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1)) ? -errno : 0;
	if (switched)
		thread_restore_effective_ids(euid, egid);
	if (rc)
		return rc;
	return *why ? 1 : 0;
}

int steer_listen_transparent(const struct addr *a, int backlog, bool reuseport)
{
	int one = 1, rc;
	int fd = socket(a->ss.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one))))
		goto err_close;
	if (a->ss.sa.sa_family == AF_INET6) {
		if (setsockopt(fd, SOL_IPV6, IPV6_V6ONLY, &one, sizeof(one)) ||
		    setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)))
			goto err_close;
	} else if (setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one))) {
		goto err_close;
	}
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) || listen(fd, backlog))
		goto err_close;
	return fd;
err_close:
	rc = -errno;
	close(fd);
	return rc;
}

/* -EADDRINUSE when something accepts connections at sun, 0 when nothing does. */
static int unix_socket_in_use(const struct sockaddr_un *sun)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int rc;

	if (fd < 0)
		return -errno;
	/* A full backlog (EAGAIN) has a listener too. */
	rc = connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0 || errno == EAGAIN
		     ? -EADDRINUSE
		     : 0;
	close(fd);
	return rc;
}

int steer_listen_unix(const char *path, int backlog)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, rc;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path));
	/* Replace a socket left by an earlier run, never another kind of file, and never a
	 * socket somebody still accepts on (a second pgwardend, or PostgreSQL itself). */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		rc = unix_socket_in_use(&sun);
		if (rc)
			return rc;
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (const struct sockaddr *)&sun, sizeof(sun)) || chmod(path, 0666) ||
	    listen(fd, backlog)) {
		rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}
