/*
 * steer_attach: attach, update, detach of the BPF hooks (and, for TPROXY, the nft table and
 * policy routing). See steer.h for the two failure modes.
 *
 * Pin layout (fail-closed), /sys/fs/bpf/<instance>/:
 *   pgw_config pgw_protected pgw_unix_paths pgw_origin_sk pgw_origin_tup pgw_stats
 *   pgw_relay_socks                                                                   maps
 *   link_connect4 link_connect6 link_peername4 link_peername6 link_sockops
 *   [link_connect_unix] [link_sk_lookup]                                              links
 *
 * link_sk_lookup is attached to the network namespace attach runs in (pgwardend's), the
 * others to the cgroup. Steering starts only once pgwardend has registered its listening
 * sockets in pgw_relay_socks (it watches the pin dir for the map): the hooks deliver
 * steered connections to no other socket, so attach waits for the registration, which also
 * proves that what listens on the relay's port is pgwardend and not a stranger.
 *
 * An attach is all or nothing: every step's undo is in one cleanup path, run on any error.
 * Fail-open attaches pin nothing; detach and status still find their links by walking the
 * kernel's link ids and reading each pgw_ program's config map (it names the instance).
 */
#include "steer/steer_internal.h"

#include "base/errbuf.h"
#include "base/log.h"
#include "steer.skel.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#ifndef BPF_FS_MAGIC
#define BPF_FS_MAGIC 0xcafe4a11
#endif
#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif

enum steer_prog {
	SP_CONNECT4 = 0,
	SP_CONNECT6,
	SP_PEERNAME4,
	SP_PEERNAME6,
	SP_SOCKOPS,
	SP_CONNECT_UNIX,
	SP_SK_LOOKUP,
	SP_COUNT,
};

static const char *const prog_pin_names[SP_COUNT] = {
	"link_connect4", "link_connect6", "link_peername4", "link_peername6", "link_sockops",
	"link_connect_unix", "link_sk_lookup",
};

/* Which optional programs this kernel runs (feature probes). */
struct steer_features {
	bool unix_connect; /* cgroup/connect_unix, 6.7+ (and asked for: --unix-socket) */
	bool sk_lookup;    /* sk_lookup, 5.9+ */
};

/* Only the programs every attach has (for "is anything of it attached there"). */
static const struct steer_features steer_features_none = {false, false};

static bool prog_wanted(enum steer_prog p, const struct steer_features *f)
{
	if (p == SP_CONNECT_UNIX)
		return f->unix_connect;
	if (p == SP_SK_LOOKUP)
		return f->sk_lookup;
	return true;
}

struct steer_handle {
	struct steer *skel;
	struct bpf_link *links[SP_COUNT];
	int cg_fd;
	bool fail_open;
	bool pinned;
	bool nft;
	bool xt; /* the gate's rule is the xt fallback */
	bool route;
	char instance[STEER_INSTANCE_MAX];
	uint32_t tproxy_mark, route_table, rule_priority;
};

/* ---- libbpf → project log ---- */

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char msg[LOG_LINE_MAX / 2];
	enum log_level ll = level == LIBBPF_WARN ? LOG_WARN : level == LIBBPF_INFO ? LOG_INFO :
									     LOG_DEBUG;
	size_t n;

	/* libbpf's info level is chatty (every relocation): keep it at our debug level. */
	if (level == LIBBPF_INFO)
		ll = LOG_DEBUG;
	if (!log_enabled(ll))
		return 0;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	n = strlen(msg);
	while (n && msg[n - 1] == '\n')
		msg[--n] = '\0';
	log_msg(ll, "libbpf", "%s", msg);
	return 0;
}

static pthread_once_t libbpf_once = PTHREAD_ONCE_INIT;

static void libbpf_log_setup(void)
{
	libbpf_set_print(libbpf_print);
}

void steer_libbpf_log_init(void)
{
	pthread_once(&libbpf_once, libbpf_log_setup);
}

/* ---- probes and environment ---- */

bool steer_probe_connect_unix(void)
{
	/* r0 = 1; exit: enough for the kernel to accept or refuse the attach type. */
	const struct bpf_insn insns[] = {
		{.code = 0xb7, .dst_reg = 0, .imm = 1}, /* BPF_MOV64_IMM(R0, 1) */
		{.code = 0x95},                         /* BPF_EXIT */
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts,
		    .expected_attach_type = (enum bpf_attach_type)STEER_ATTACH_UNIX_CONNECT);
	int fd = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "pgw_probe", "GPL", insns, 2, &opts);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

bool steer_probe_sk_lookup(void)
{
	/* r0 = SK_PASS; exit. */
	const struct bpf_insn insns[] = {
		{.code = 0xb7, .dst_reg = 0, .imm = 1},
		{.code = 0x95},
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_SK_LOOKUP);
	int fd = bpf_prog_load(BPF_PROG_TYPE_SK_LOOKUP, "pgw_probe", "GPL", insns, 2, &opts);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* The inode of this process's network namespace (what a netns link reports). */
static uint64_t netns_ino(void)
{
	struct stat st;

	return stat("/proc/self/ns/net", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

static void pin_path(char *buf, size_t n, const char *instance, const char *name)
{
	if (name)
		snprintf(buf, n, "%s/%s/%s", STEER_BPFFS, instance, name);
	else
		snprintf(buf, n, "%s/%s", STEER_BPFFS, instance);
}

/* Pins need a bpffs at /sys/fs/bpf; mount one if the host has none there (as bpftool does). */
static int bpffs_ensure(char *err, size_t errlen)
{
	struct statfs st;

	if (statfs(STEER_BPFFS, &st) == 0 && (unsigned long)st.f_type == BPF_FS_MAGIC)
		return 0;
	if (mount("bpf", STEER_BPFFS, "bpf", 0, "mode=0700") == 0)
		return 0;
	errbuf_set(err, errlen, "cannot mount bpffs on %s: %s", STEER_BPFFS, strerror(errno));
	return -errno;
}

static int cgroup2_root(char *out, size_t n, char *err, size_t errlen)
{
	FILE *f = fopen("/proc/self/mounts", "re");
	int rc;

	if (!f) {
		errbuf_set(err, errlen, "cannot read /proc/self/mounts: %s", strerror(errno));
		return -errno;
	}
	rc = steer_find_mount(f, "cgroup2", out, n);
	fclose(f);
	if (rc)
		errbuf_set(err, errlen,
			   "no cgroup v2 mount in /proc/self/mounts (steering needs cgroup v2)");
	return rc;
}

/* Open the cgroup v2 directory: an absolute path inside the cgroup2 mount, or a path taken
 * relative to that mount ("/pgwarden-test", "system.slice/x"). */
static int cgroup_open(const char *path, char *resolved, size_t n, uint64_t *id, char *err,
		       size_t errlen)
{
	char root[512];
	struct statfs sfs;
	struct stat st;
	int rc, fd;

	rc = cgroup2_root(root, sizeof(root), err, errlen);
	if (rc)
		return rc;
	if (!path || !*path)
		rc = snprintf(resolved, n, "%s", root);
	else if (strncmp(path, root, strlen(root)) == 0 &&
		 (path[strlen(root)] == '/' || path[strlen(root)] == '\0'))
		rc = snprintf(resolved, n, "%s", path);
	else
		rc = snprintf(resolved, n, "%s/%s", root, path[0] == '/' ? path + 1 : path);
	if (rc < 0 || (size_t)rc >= n) {
		errbuf_set(err, errlen, "cgroup path too long");
		return -ENAMETOOLONG;
	}
	fd = open(resolved, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		errbuf_set(err, errlen, "cannot open cgroup %s: %s", resolved, strerror(errno));
		return rc;
	}
	if (fstatfs(fd, &sfs) || (unsigned long)sfs.f_type != CGROUP2_SUPER_MAGIC || fstat(fd, &st)) {
		errbuf_set(err, errlen, "%s is not a cgroup v2 directory", resolved);
		close(fd);
		return -ENOTDIR;
	}
	*id = (uint64_t)st.st_ino; /* a cgroup's id is its kernfs inode number */
	return fd;
}

/* True when /proc/net/tcp{,6} of this network namespace has a listening socket that
 * accepts connections to a: same port, and the same address or a wildcard one. Looking,
 * rather than connecting, keeps the check invisible to the relay (no session that opens and
 * closes at once in its log). */
static bool relay_listening(const struct addr *a)
{
	static const char *const files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
	bool v6 = a->ss.sa.sa_family == AF_INET6;
	unsigned port = ntohs(v6 ? a->ss.in6.sin6_port : a->ss.in4.sin_port);

	for (size_t fi = 0; fi < 2; fi++) {
		FILE *f = fopen(files[fi], "re");
		char line[512];

		if (!f)
			continue;
		while (fgets(line, sizeof(line), f)) {
			char hexaddr[40];
			unsigned lport, state;
			__u32 w[4] = {0, 0, 0, 0};
			bool any, match = false;

			if (sscanf(line, " %*u: %39[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", hexaddr, &lport,
				   &state) != 3 || state != 0x0A || lport != port)
				continue;
			for (size_t k = 0; k < strlen(hexaddr) / 8 && k < 4; k++) {
				char word[9];

				memcpy(word, hexaddr + 8 * k, 8);
				word[8] = '\0';
				/* The kernel prints each 32-bit word as it sits in memory (%08X). */
				w[k] = (__u32)strtoul(word, NULL, 16);
			}
			any = !w[0] && !w[1] && !w[2] && !w[3];
			if (fi == 0) /* IPv4 listener */
				match = !v6 && (any || w[0] == a->ss.in4.sin_addr.s_addr);
			else if (any) /* [::] also takes IPv4 unless v6only */
				match = true;
			else if (v6)
				match = memcmp(w, &a->ss.in6.sin6_addr, 16) == 0;
			else /* v4-mapped listener */
				match = w[0] == 0 && w[1] == 0 && w[2] == htonl(0xffff) &&
					w[3] == a->ss.in4.sin_addr.s_addr;
			if (match) {
				fclose(f);
				return true;
			}
		}
		fclose(f);
	}
	return false;
}

/* Whether a Unix stream socket listens at path, from /proc/net/unix (read, like the TCP
 * check, without connecting: a probe connection would be a session to the relay). */
static bool relay_unix_listening(const char *path)
{
	char line[512 + PGW_UNIX_PATH_MAX];
	FILE *f = fopen("/proc/net/unix", "re");
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long flags, type, state;
		int off = -1;

		/* Num: RefCount Protocol Flags Type St Inode Path */
		if (sscanf(line, "%*s %*s %*s %lx %lx %lx %*s %n", &flags, &type, &state, &off) != 3 ||
		    off < 0)
			continue;
		line[strcspn(line, "\n")] = '\0';
		found = (flags & 0x10000) /* __SO_ACCEPTCON */ && type == SOCK_STREAM &&
			strcmp(line + off, path) == 0;
	}
	fclose(f);
	return found;
}

/* The relay must be listening before anything is attached: steering into a dead listener is
 * the fail-closed outcome of a crash, not something to set up on purpose. The listener is
 * unix_path when given, else a; a relay still starting (systemd's ExecStartPost) gets
 * o->relay_wait_ms. */
static int relay_check(const struct steer_opts *o, const struct addr *a, const char *unix_path,
		       char *err, size_t errlen)
{
	char text[ADDR_STRLEN];

	for (unsigned waited = 0;; waited += 100) {
		if (unix_path ? relay_unix_listening(unix_path) : relay_listening(a))
			return 0;
		if (waited >= o->relay_wait_ms)
			break;
		usleep(100 * 1000);
	}
	if (unix_path)
		errbuf_set(err, errlen, "relay is not listening on unix:%s: start pgwardend with "
			   "unix_listen first", unix_path);
	else
		errbuf_set(err, errlen, "relay is not listening on %s: start pgwardend first",
			   addr_format(&a->ss.sa, text, sizeof(text)));
	return -ECONNREFUSED;
}

/* Room pgwardend gets to register its listeners after the maps are pinned: it looks for
 * them every STEER_REGISTER_POLL_MS. */
#define STEER_REGISTER_WAIT_MS 3000

static bool relay_sock_registered(int map_fd, const struct addr *a)
{
	struct pgw_relay_key k;
	__u64 cookie;

	steer_relay_key(a, &k);
	if (bpf_map_lookup_elem(map_fd, &k, &cookie) == 0)
		return true;
	memset(k.addr, 0, sizeof(k.addr));
	return bpf_map_lookup_elem(map_fd, &k, &cookie) == 0;
}

/*
 * Steered connections go to registered sockets only (sk_lookup, and connect4/6 refuse
 * while there is none). Before the hooks go live, pgwardend must have registered a listener
 * for every --relay address in the instance's pinned pgw_relay_socks: that is also what
 * tells pgwardend from a stranger that merely listens on the port. 0 or -ECONNREFUSED.
 */
static int relay_registration_wait(const struct steer_opts *o, int map_fd, char *err,
				   size_t errlen)
{
	unsigned wait = o->relay_wait_ms > STEER_REGISTER_WAIT_MS ? o->relay_wait_ms
								  : STEER_REGISTER_WAIT_MS;
	char text[ADDR_STRLEN];
	unsigned i = 0;

	for (unsigned waited = 0;; waited += 50) {
		for (i = 0; i < o->nrelay; i++)
			if (!relay_sock_registered(map_fd, &o->relay[i]))
				break;
		if (i == o->nrelay)
			return 0;
		if (waited >= wait)
			break;
		usleep(50 * 1000);
	}
	errbuf_set(err, errlen,
		   "something listens on %s but it has not registered with instance '%s': start "
		   "pgwardend with steer_instance %s (a process that is not pgwardend never "
		   "receives steered clients)",
		   addr_format(&o->relay[i].ss.sa, text, sizeof(text)), o->instance, o->instance);
	return -ECONNREFUSED;
}

/* ---- maps ---- */

/* An address as the hooks match it: a v4-mapped IPv6 address is the IPv4 address it names
 * (connect6 matches ::ffff:a.b.c.d as IPv4, so a key spelled v4-mapped would never match). */
static void ip_to_key(const struct addr *a, __u8 *family, __u32 out[4])
{
	memset(out, 0, 16);
	if (a->ss.sa.sa_family == AF_INET) {
		*family = PGW_AF_INET;
		out[0] = ((const struct sockaddr_in *)&a->ss)->sin_addr.s_addr;
	} else if (IN6_IS_ADDR_V4MAPPED(&a->ss.in6.sin6_addr)) {
		*family = PGW_AF_INET;
		memcpy(&out[0], &a->ss.in6.sin6_addr.s6_addr[12], 4);
	} else {
		*family = PGW_AF_INET6;
		memcpy(out, &((const struct sockaddr_in6 *)&a->ss)->sin6_addr, 16);
	}
}

static int config_build(const struct steer_opts *o, uint64_t cgroup_id,
			const struct steer_features *f, struct pgw_config *c)
{
	memset(c, 0, sizeof(*c));
	c->abi_version = PGW_STEER_ABI_VERSION;
	c->relay_mark = o->relay_mark;
	c->cgroup_id = cgroup_id;
	c->tproxy_port = o->tproxy_port;
	if (o->gate) {
		c->flags |= PGW_CFG_GATE;
		c->gate_queue = o->gate_queue;
	}
	c->tproxy_mark = o->tproxy_mark;
	c->route_table = o->route_table;
	c->rule_priority = o->rule_priority;
	snprintf(c->instance, sizeof(c->instance), "%s", o->instance);
	if (o->fail_open)
		c->flags |= PGW_CFG_FAIL_OPEN;
	for (unsigned i = 0; i < o->nrelay; i++) {
		const struct addr *r = &o->relay[i];

		if (r->ss.sa.sa_family == AF_INET) {
			const struct sockaddr_in *s4 = (const struct sockaddr_in *)&r->ss;

			c->flags |= PGW_CFG_RELAY4;
			c->relay4_addr = s4->sin_addr.s_addr;
			c->relay4_port = s4->sin_port;
		} else {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&r->ss;

			c->flags |= PGW_CFG_RELAY6;
			memcpy(c->relay6_addr, &s6->sin6_addr, 16);
			c->relay6_port = s6->sin6_port;
		}
	}
	if (f->sk_lookup)
		c->flags |= PGW_CFG_SK_LOOKUP;
	if (f->unix_connect)
		c->flags |= PGW_CFG_UNIX_HOOK;
	if (o->unix_relay) {
		size_t n = strlen(o->unix_relay);

		if (n == 0 || n >= PGW_UNIX_PATH_MAX)
			return -ENAMETOOLONG;
		memcpy(c->unix_relay_path, o->unix_relay, n);
		c->unix_relay_path_len = (__u32)n;
		c->flags |= PGW_CFG_UNIX;
	}
	return 0;
}

/* The protected set: each address × each port, or each port with any address (both
 * families) when no address was given. */
static unsigned protected_keys(const struct steer_opts *o, struct pgw_protected_key *keys,
			       unsigned max)
{
	unsigned n = 0;

	for (unsigned p = 0; p < o->nports; p++) {
		if (o->naddresses == 0) {
			for (int f = 0; f < 2 && n < max; f++) {
				memset(&keys[n], 0, sizeof(keys[n]));
				keys[n].family = f ? PGW_AF_INET6 : PGW_AF_INET;
				keys[n].port = htons(o->ports[p]);
				n++;
			}
			continue;
		}
		for (unsigned a = 0; a < o->naddresses && n < max; a++) {
			memset(&keys[n], 0, sizeof(keys[n]));
			ip_to_key(&o->addresses[a], &keys[n].family, keys[n].addr);
			keys[n].port = htons(o->ports[p]);
			n++;
		}
	}
	return n;
}

/* Bring the protected map to exactly keys[]: add first, then remove the rest, so a port
 * that stays protected is never briefly unprotected during an update. */
static int protected_sync(int map_fd, const struct pgw_protected_key *keys, unsigned n)
{
	struct pgw_protected_key cur, next, stale[PGW_PROTECTED_MAX];
	unsigned nstale = 0;
	__u32 one = 1;
	void *prev = NULL;

	for (unsigned i = 0; i < n; i++)
		if (bpf_map_update_elem(map_fd, &keys[i], &one, BPF_ANY))
			return -errno;
	while (bpf_map_get_next_key(map_fd, prev, &next) == 0) {
		bool keep = false;

		for (unsigned i = 0; i < n && !keep; i++)
			keep = memcmp(&keys[i], &next, sizeof(next)) == 0;
		if (!keep && nstale < PGW_PROTECTED_MAX)
			stale[nstale++] = next;
		cur = next;
		prev = &cur;
	}
	for (unsigned i = 0; i < nstale; i++)
		bpf_map_delete_elem(map_fd, &stale[i]);
	return 0;
}

static int unix_sync(int map_fd, const struct steer_opts *o)
{
	__u32 one = 1;

	for (unsigned i = 0; i < o->nunix; i++) {
		struct pgw_unix_key k;
		size_t n = strlen(o->unix_paths[i]);

		if (n == 0 || n >= PGW_UNIX_PATH_MAX)
			return -ENAMETOOLONG;
		memset(&k, 0, sizeof(k));
		memcpy(k.path, o->unix_paths[i], n);
		if (bpf_map_update_elem(map_fd, &k, &one, BPF_ANY))
			return -errno;
	}
	return 0;
}

/* ---- options ---- */

int steer_opts_check(const struct steer_opts *o, char *err, size_t errlen)
{
	bool fam4 = false, fam6 = false;

	if (!instance_name_valid(o->instance)) {
		errbuf_set(err, errlen,
			   "bad instance name '%s' (letters, digits, _ and -, at most %d)",
			   o->instance, STEER_INSTANCE_MAX - 1);
		return -EINVAL;
	}
	if (o->nports == 0) {
		errbuf_set(err, errlen, "no --port given: nothing to protect");
		return -EINVAL;
	}
	if (o->nrelay == 0) {
		errbuf_set(err, errlen, "no --relay given: where does pgwardend listen?");
		return -EINVAL;
	}
	if (o->relay_mark == 0) {
		errbuf_set(err, errlen, "the relay mark must not be 0");
		return -EINVAL;
	}
	for (unsigned i = 0; i < o->naddresses; i++) {
		char text[ADDR_STRLEN];

		/* A connect to 0.0.0.0 is matched as the address it reaches, never as 0.0.0.0. */
		if (addr_is_unspecified(&o->addresses[i])) {
			errbuf_set(err, errlen,
				   "--address %s is no address a connection reaches: to protect "
				   "every address of the port, give --port without --address",
				   addr_format(&o->addresses[i].ss.sa, text, sizeof(text)));
			return -EINVAL;
		}
	}
	for (unsigned i = 0; i < o->nrelay; i++) {
		int f = o->relay[i].ss.sa.sa_family;
		char text[ADDR_STRLEN];

		if (addr_is_unspecified(&o->relay[i])) {
			errbuf_set(err, errlen,
				   "--relay %s: give the address pgwardend listens on, not a "
				   "wildcard",
				   addr_format(&o->relay[i].ss.sa, text, sizeof(text)));
			return -EINVAL;
		}

		if ((f == AF_INET && fam4) || (f == AF_INET6 && fam6)) {
			errbuf_set(err, errlen, "one --relay per address family");
			return -EINVAL;
		}
		fam4 |= f == AF_INET;
		fam6 |= f == AF_INET6;
		/* A relay on a protected port would steer its own listener into itself. */
		uint16_t rp = ntohs(f == AF_INET ?
			((const struct sockaddr_in *)&o->relay[i].ss)->sin_port :
			((const struct sockaddr_in6 *)&o->relay[i].ss)->sin6_port);
		for (unsigned p = 0; p < o->nports; p++)
			if (o->ports[p] == rp) {
				errbuf_set(err, errlen,
					   "the relay listens on protected port %u: that would "
					   "loop",
					   rp);
				return -EINVAL;
			}
	}
	if (o->tproxy_port)
		for (unsigned p = 0; p < o->nports; p++)
			if (o->ports[p] == o->tproxy_port) {
				errbuf_set(err, errlen,
					   "the TPROXY listener port %u is a protected port",
					   o->tproxy_port);
				return -EINVAL;
			}
	if (o->tproxy_port && (o->tproxy_mark == 0 || o->tproxy_mark == o->relay_mark)) {
		errbuf_set(err, errlen,
			   "the TPROXY mark must be non-zero and differ from the relay mark");
		return -EINVAL;
	}
	if (o->nunix && !o->unix_relay) {
		errbuf_set(err, errlen,
			   "--unix-socket needs --unix-relay (the relay's own Unix socket)");
		return -EINVAL;
	}
	return 0;
}

/* ---- kernel objects ---- */

/* Programs attached to the cgroup (effective, so inherited ones count) for connect4/6 that
 * are not pgwarden's: something else may already steer these ports. */
static int foreign_check(int cg_fd, char *err, size_t errlen)
{
	static const enum bpf_attach_type types[] = {BPF_CGROUP_INET4_CONNECT,
						     BPF_CGROUP_INET6_CONNECT};

	for (size_t t = 0; t < 2; t++) {
		__u32 ids[64], cnt = 64;

		if (bpf_prog_query(cg_fd, types[t], BPF_F_QUERY_EFFECTIVE, NULL, ids, &cnt))
			continue; /* query unsupported: nothing to learn */
		for (__u32 i = 0; i < cnt; i++) {
			struct bpf_prog_info info = {};
			__u32 len = sizeof(info);
			int fd = bpf_prog_get_fd_by_id(ids[i]);

			if (fd < 0)
				continue;
			if (bpf_obj_get_info_by_fd(fd, &info, &len) == 0 &&
			    strncmp(info.name, PGW_PROG_PREFIX, strlen(PGW_PROG_PREFIX)) != 0) {
				errbuf_set(err, errlen,
					   "cgroup already has a %s program that is not "
					   "pgwarden's (id %u, name '%s'): it may steer the same "
					   "ports; remove it first",
					   t ? "connect6" : "connect4", ids[i], info.name);
				close(fd);
				return -EBUSY;
			}
			close(fd);
		}
	}
	return 0;
}

static struct bpf_program *skel_prog(struct steer *s, enum steer_prog p)
{
	switch (p) {
	case SP_CONNECT4: return s->progs.pgw_connect4;
	case SP_CONNECT6: return s->progs.pgw_connect6;
	case SP_PEERNAME4: return s->progs.pgw_peername4;
	case SP_PEERNAME6: return s->progs.pgw_peername6;
	case SP_SOCKOPS: return s->progs.pgw_sockops;
	case SP_CONNECT_UNIX: return s->progs.pgw_connect_unix;
	case SP_SK_LOOKUP: return s->progs.pgw_sk_lookup;
	default: return NULL;
	}
}

/* Optional programs load only where the kernel has their hook (feature-probed). */
static void skel_set_autoload(struct steer *s, const struct steer_features *f)
{
	bpf_program__set_expected_attach_type(s->progs.pgw_connect_unix,
					      (enum bpf_attach_type)STEER_ATTACH_UNIX_CONNECT);
	bpf_program__set_autoload(s->progs.pgw_connect_unix, f->unix_connect);
	bpf_program__set_autoload(s->progs.pgw_sk_lookup, f->sk_lookup);
}

static const char *errhint(int e)
{
	if (e == EPERM || e == EACCES)
		return " (needs root: CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)";
	if (e == ENOSYS || e == EINVAL)
		return " (kernel without the needed BPF support?)";
	return "";
}

/* Walking the kernel's BPF objects needs CAP_SYS_ADMIN; without it every query looks like
 * "nothing attached", which detach and status must not report as success. */
int steer_bpf_access(char *err, size_t errlen)
{
	__u32 id = 0;

	if (bpf_link_get_next_id(0, &id) == 0 || errno == ENOENT)
		return 0;
	errbuf_set(err, errlen, "cannot inspect BPF links: %s%s", strerror(errno), errhint(errno));
	return -errno;
}

void steer_handle_close(struct steer_handle *h)
{
	if (!h)
		return;
	for (int i = 0; i < SP_COUNT; i++)
		bpf_link__destroy(h->links[i]); /* pinned links stay attached: the pin holds them */
	if (h->fail_open) {
		char ignore[STEER_ERR_MAX];

		if (h->nft)
			steer_nft_delete(h->instance);
		if (h->xt)
			steer_xtq_delete(h->instance, ignore, sizeof(ignore));
		if (h->route)
			steer_route_delete(h->tproxy_mark, h->route_table, h->rule_priority);
	}
	steer__destroy(h->skel);
	if (h->cg_fd >= 0)
		close(h->cg_fd);
	free(h);
}

/* Unpin everything under the instance's pin dir and remove it. */
static void pins_remove(const char *instance)
{
	char dir[256], path[512];
	DIR *d;
	struct dirent *e;

	pin_path(dir, sizeof(dir), instance, NULL);
	d = opendir(dir);
	if (!d)
		return;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (strncmp(e->d_name, "link_", 5) == 0) {
			int fd = bpf_obj_get(path);

			/* Detach even if some process also holds the link. */
			if (fd >= 0) {
				bpf_link_detach(fd);
				close(fd);
			}
		}
		unlink(path);
	}
	closedir(d);
	rmdir(dir);
}

/* Read the config of a pinned instance. 0, -ENOENT, or -EPROTO for another ABI. */
static int pinned_config(const char *instance, struct pgw_config *c)
{
	char path[256];
	__u32 zero = 0;
	int fd, rc = 0;

	pin_path(path, sizeof(path), instance, PGW_STR(PGW_MAP_CONFIG));
	fd = bpf_obj_get(path);
	if (fd < 0)
		return -ENOENT;
	if (bpf_map_lookup_elem(fd, &zero, c))
		rc = -errno;
	else if (c->abi_version != PGW_STEER_ABI_VERSION)
		rc = -EPROTO;
	close(fd);
	return rc;
}

/* True when every link the pinned instance needs is pinned and attached: the cgroup hooks
 * to cgroup_id, sk_lookup to this network namespace. */
static bool pinned_links_live(const char *instance, uint64_t cgroup_id,
			      const struct steer_features *f)
{
	for (int i = 0; i < SP_COUNT; i++) {
		char path[256];
		struct bpf_link_info info = {};
		__u32 len = sizeof(info);
		bool live;
		int fd;

		if (!prog_wanted((enum steer_prog)i, f))
			continue;
		pin_path(path, sizeof(path), instance, prog_pin_names[i]);
		fd = bpf_obj_get(path);
		if (fd < 0)
			return false;
		live = bpf_obj_get_info_by_fd(fd, &info, &len) == 0;
		if (i == SP_SK_LOOKUP)
			live = live && info.type == BPF_LINK_TYPE_NETNS &&
			       info.netns.netns_ino == netns_ino();
		else
			live = live && info.type == BPF_LINK_TYPE_CGROUP &&
			       info.cgroup.cgroup_id == cgroup_id;
		close(fd);
		if (!live)
			return false;
	}
	return true;
}

/* Same cgroup, same ABI, all links live: rewrite config and protected set in place. */
static int pinned_update(const struct steer_opts *o, const struct pgw_config *cfg, char *err,
			 size_t errlen)
{
	struct pgw_protected_key keys[PGW_PROTECTED_MAX];
	char path[256];
	__u32 zero = 0;
	int cfd, pfd, ufd, rc;
	unsigned n = protected_keys(o, keys, PGW_PROTECTED_MAX);

	pin_path(path, sizeof(path), o->instance, PGW_STR(PGW_MAP_CONFIG));
	cfd = bpf_obj_get(path);
	pin_path(path, sizeof(path), o->instance, PGW_STR(PGW_MAP_PROTECTED));
	pfd = bpf_obj_get(path);
	pin_path(path, sizeof(path), o->instance, PGW_STR(PGW_MAP_UNIX));
	ufd = bpf_obj_get(path);
	rc = (cfd < 0 || pfd < 0 || ufd < 0) ? -ENOENT : 0;
	if (!rc)
		rc = protected_sync(pfd, keys, n);
	if (!rc)
		rc = unix_sync(ufd, o);
	if (!rc && bpf_map_update_elem(cfd, &zero, cfg, BPF_ANY))
		rc = -errno;
	if (rc)
		errbuf_set(err, errlen, "cannot update the attached maps: %s", strerror(-rc));
	if (cfd >= 0)
		close(cfd);
	if (pfd >= 0)
		close(pfd);
	if (ufd >= 0)
		close(ufd);
	return rc;
}

/*
 * Replace the programs behind the pinned links with this binary's, atomically per link
 * (BPF_LINK_UPDATE), reusing the pinned maps so origin records of connections in flight
 * survive. An upgraded pgwardenctl re-attaching therefore runs its own BPF code without a
 * moment unsteered. 0 or -errno (the old programs then stay in place).
 */
static int pinned_upgrade(const char *instance, const struct steer_features *f, char *err,
			  size_t errlen)
{
	struct steer *skel = steer__open();
	struct bpf_map *m;
	char path[256];
	int rc = 0;

	if (!skel) {
		errbuf_set(err, errlen, "cannot open the BPF object: %s", strerror(errno));
		return -errno;
	}
	bpf_object__for_each_map(m, skel->obj) {
		int fd;

		if (strncmp(bpf_map__name(m), PGW_PROG_PREFIX, strlen(PGW_PROG_PREFIX)) != 0)
			continue;
		pin_path(path, sizeof(path), instance, bpf_map__name(m));
		fd = bpf_obj_get(path);
		if (fd < 0) {
			rc = -errno;
			break;
		}
		rc = bpf_map__reuse_fd(m, fd);
		close(fd);
		if (rc)
			break;
	}
	if (rc) {
		errbuf_set(err, errlen, "cannot reuse the pinned maps: %s", strerror(-rc));
		goto out;
	}
	skel_set_autoload(skel, f);
	rc = steer__load(skel);
	if (rc) {
		errbuf_set(err, errlen, "cannot load the BPF programs: %s%s",
			   strerror(-rc), errhint(-rc));
		goto out;
	}
	for (int i = 0; i < SP_COUNT && !rc; i++) {
		int fd;

		if (!prog_wanted((enum steer_prog)i, f))
			continue;
		pin_path(path, sizeof(path), instance, prog_pin_names[i]);
		fd = bpf_obj_get(path);
		if (fd < 0 || bpf_link_update(fd, bpf_program__fd(skel_prog(skel, (enum steer_prog)i)),
					      NULL)) {
			rc = -errno;
			errbuf_set(err, errlen, "cannot update link %s: %s", path, strerror(errno));
		}
		if (fd >= 0)
			close(fd);
	}
out:
	steer__destroy(skel); /* the links hold the programs they now run */
	return rc;
}

/*
 * An in-place update reuses the pinned origin map, whose size was fixed when it was made: a
 * different --origin-max is refused (detach and attach again to resize), never silently
 * ignored. 0 or -EINVAL with err set.
 */
static int origin_size_check(const struct steer_opts *o, char *err, size_t errlen)
{
	struct bpf_map_info mi = {};
	__u32 len = sizeof(mi);
	char path[256];
	int fd, rc = 0;

	pin_path(path, sizeof(path), o->instance, PGW_STR(PGW_MAP_ORIGIN_TUP));
	fd = bpf_obj_get(path);
	if (fd < 0)
		return 0; /* the update reports the missing pin itself */
	if (bpf_obj_get_info_by_fd(fd, &mi, &len) == 0 && mi.max_entries != o->origin_max) {
		errbuf_set(err, errlen,
			   "the attached origin map holds %u records, not --origin-max %u: detach "
			   "first to resize it",
			   mi.max_entries, o->origin_max);
		rc = -EINVAL;
	}
	close(fd);
	return rc;
}

/* Live pgw_ links whose config names this instance, pinned or held by a process. */
static int instance_links(const char *instance, __u32 *link_ids, unsigned max, unsigned *n);

/*
 * The instance's netfilter rules: the nft table (TPROXY, and the gate's queue rule), or, on
 * a kernel without nft queue, the table without it plus the xt NFQUEUE fallback. *xt says
 * which the gate got. 0 or -errno with err set.
 */
static int rules_apply(const struct steer_opts *o, bool *xt, char *err, size_t errlen)
{
	struct steer_opts plain = *o;
	char ignore[STEER_ERR_MAX];
	int rc;

	*xt = false;
	if (!o->tproxy_port && !o->gate) {
		steer_nft_delete(o->instance);
		if (steer_xtq_present(o->instance))
			steer_xtq_delete(o->instance, ignore, sizeof(ignore));
		return 0;
	}
	rc = steer_nft_apply(o, err, errlen);
	if (rc != -EOPNOTSUPP) {
		if (rc == 0 && steer_xtq_present(o->instance))
			steer_xtq_delete(o->instance, ignore, sizeof(ignore));
		return rc;
	}
	plain.gate = false;
	if (plain.tproxy_port) {
		rc = steer_nft_apply(&plain, err, errlen);
		if (rc)
			return rc;
	} else {
		steer_nft_delete(o->instance); /* a gate-only table that was refused: nothing */
	}
	rc = steer_xtq_apply(o, err, errlen);
	if (rc)
		return rc;
	*xt = true;
	return 0;
}

int steer_attach(const struct steer_opts *o, struct steer_handle **out, char *err,
		 size_t errlen)
{
	struct pgw_protected_key keys[PGW_PROTECTED_MAX];
	struct steer_handle *h = NULL;
	struct pgw_config cfg, old;
	char cgpath[512], path[256];
	uint64_t cgroup_id = 0;
	struct steer_features feat;
	__u32 zero = 0, ids[16];
	unsigned nids = 0, nkeys;
	int rc, cg_fd;

	if (out)
		*out = NULL;
	steer_libbpf_log_init();
	rc = steer_opts_check(o, err, errlen);
	if (rc)
		return rc;
	if (o->fail_open && !out) {
		errbuf_set(err, errlen, "fail-open needs a process to own the links");
		return -EINVAL;
	}
	rc = steer_bpf_access(err, errlen);
	if (rc)
		return rc;
	cg_fd = cgroup_open(o->cgroup, cgpath, sizeof(cgpath), &cgroup_id, err, errlen);
	if (cg_fd < 0)
		return cg_fd;
	feat.unix_connect = o->nunix > 0 && steer_probe_connect_unix();
	feat.sk_lookup = steer_probe_sk_lookup();
	/* Every relay listener the hooks will send clients to; the Unix one is where clients
	 * of the server's well-known socket path arrive, on every kernel. */
	rc = 0;
	for (unsigned i = 0; o->check_relay && !rc && i < o->nrelay; i++)
		rc = relay_check(o, &o->relay[i], NULL, err, errlen);
	if (o->check_relay && !rc && o->nunix > 0)
		rc = relay_check(o, NULL, o->unix_relay, err, errlen);
	if (!rc)
		rc = steer_unix_check(o, err, errlen);
	if (rc)
		goto err_close_cg;
	if (o->nunix > 0 && !feat.unix_connect)
		log_info("steer_unix",
			 "kernel has no cgroup/connect_unix (6.7+): the server's private socket is "
			 "not steered for root and the postgres user; every other user reaches "
			 "PostgreSQL only through the relay's socket");
	if (!feat.sk_lookup)
		log_warn("steer_relay_guard",
			 "kernel has no sk_lookup (5.9+): a process that binds the relay's port "
			 "while pgwardend is down could receive steered clients; use a privileged "
			 "relay port (below 1024)");
	rc = config_build(o, cgroup_id, &feat, &cfg);
	if (rc) {
		errbuf_set(err, errlen, "--unix-relay path too long");
		goto err_close_cg;
	}

	/* What is there already? */
	rc = pinned_config(o->instance, &old);
	if (rc == 0 && !o->fail_open && old.cgroup_id == cgroup_id &&
	    pinned_links_live(o->instance, cgroup_id, &feat) &&
	    ((old.flags & PGW_CFG_UNIX_HOOK) != 0) == feat.unix_connect &&
	    ((old.flags & PGW_CFG_SK_LOOKUP) != 0) == feat.sk_lookup) {
		/* nftables first: it is the step most likely to be refused (a kernel without
		 * the queue expression), and it is one transaction, so a refusal changes
		 * nothing. */
		bool xt;

		/* The relay may have moved (a new port): its new socket must be registered
		 * before the hooks send clients there. */
		if (o->grant_daemon) {
			rc = steer_pins_grant(o->instance, o->daemon_gid, err, errlen);
			if (rc) {
				close(cg_fd);
				return rc;
			}
		}
		if (o->check_relay) {
			int sfd;

			pin_path(path, sizeof(path), o->instance, PGW_STR(PGW_MAP_RELAY_SOCKS));
			sfd = bpf_obj_get(path);
			rc = sfd < 0 ? -ENOENT : relay_registration_wait(o, sfd, err, errlen);
			if (sfd < 0)
				errbuf_set(err, errlen, "cannot open %s: %s",
					   path, strerror(errno));
			if (sfd >= 0)
				close(sfd);
			if (rc) {
				close(cg_fd);
				return rc;
			}
		}
		rc = rules_apply(o, &xt, err, errlen);
		if (xt)
			cfg.flags |= PGW_CFG_GATE_XT;
		if (!rc && o->tproxy_port)
			rc = steer_route_apply(o->tproxy_mark, o->route_table, o->rule_priority, err,
					       errlen);
		else if (!rc && old.tproxy_port)
			steer_route_delete(old.tproxy_mark, old.route_table, old.rule_priority);
		if (!rc)
			rc = origin_size_check(o, err, errlen);
		if (!rc)
			rc = pinned_update(o, &cfg, err, errlen);
		if (!rc)
			rc = pinned_upgrade(o->instance, &feat, err, errlen);
		close(cg_fd);
		if (!rc)
			log_info("steer_attach", "already attached to %s: configuration updated", cgpath);
		return rc;
	}
	if (rc == 0 && pinned_links_live(o->instance, old.cgroup_id, &steer_features_none) &&
	    old.cgroup_id != cgroup_id) {
		errbuf_set(err, errlen,
			   "instance '%s' is attached to another cgroup (id %llu): detach it first",
			   o->instance, (unsigned long long)old.cgroup_id);
		rc = -EBUSY;
		goto err_close_cg;
	}
	if (rc == 0 && o->fail_open && pinned_links_live(o->instance, old.cgroup_id, &steer_features_none)) {
		errbuf_set(err, errlen, "instance '%s' is attached fail-closed: detach it first",
			   o->instance);
		rc = -EBUSY;
		goto err_close_cg;
	}
	if (instance_links(o->instance, ids, 16, &nids) == 0 && nids > 0) {
		char pdir[256];
		struct stat st;

		pin_path(pdir, sizeof(pdir), o->instance, NULL);
		if (stat(pdir, &st) != 0) {
			errbuf_set(err, errlen,
				   "instance '%s' is attached fail-open by a running process "
				   "(link id %u): detach it first",
				   o->instance, ids[0]);
			rc = -EBUSY;
			goto err_close_cg;
		}
	}
	/* Anything left of this instance is a crash's leftover (or an older ABI): clear it. */
	{
		char pdir[256];
		struct stat st;

		pin_path(pdir, sizeof(pdir), o->instance, NULL);
		if (stat(pdir, &st) == 0) {
			log_warn("steer_stale", "removing stale pin dir %s", pdir);
			pins_remove(o->instance);
		}
		if (steer_nft_present(o->instance)) {
			uint32_t mark, table, prio;

			log_warn("steer_stale", "removing stale nft table inet %s", o->instance);
			if (steer_nft_routing(o->instance, &mark, &table, &prio) == 0)
				steer_route_delete(mark, table, prio);
			steer_nft_delete(o->instance);
		}
		if (rc == 0)
			steer_route_delete(old.tproxy_mark, old.route_table, old.rule_priority);
		steer_route_delete(o->tproxy_mark, o->route_table, o->rule_priority);
	}
	rc = foreign_check(cg_fd, err, errlen);
	if (rc)
		goto err_close_cg;
	if (!o->fail_open) {
		rc = bpffs_ensure(err, errlen);
		if (rc)
			goto err_close_cg;
	}

	h = calloc(1, sizeof(*h));
	if (!h) {
		rc = -ENOMEM;
		errbuf_set(err, errlen, "out of memory");
		goto err_close_cg;
	}
	h->cg_fd = cg_fd;
	h->fail_open = o->fail_open;
	snprintf(h->instance, sizeof(h->instance), "%s", o->instance);
	h->tproxy_mark = o->tproxy_mark;
	h->route_table = o->route_table;
	h->rule_priority = o->rule_priority;

	h->skel = steer__open();
	if (!h->skel) {
		rc = -errno;
		errbuf_set(err, errlen, "cannot open the BPF object: %s", strerror(errno));
		goto err_handle;
	}
	skel_set_autoload(h->skel, &feat);
	rc = bpf_map__set_max_entries(h->skel->maps.pgw_origin_tup, o->origin_max);
	if (rc) {
		errbuf_set(err, errlen, "cannot size the origin map: %s", strerror(-rc));
		goto err_handle;
	}
	rc = steer__load(h->skel);
	if (rc) {
		rc = rc < 0 ? rc : -EINVAL;
		errbuf_set(err, errlen, "cannot load the BPF programs: %s%s",
			   strerror(-rc), errhint(-rc));
		goto err_handle;
	}
	nkeys = protected_keys(o, keys, PGW_PROTECTED_MAX);
	rc = protected_sync(bpf_map__fd(h->skel->maps.pgw_protected), keys, nkeys);
	if (!rc)
		rc = unix_sync(bpf_map__fd(h->skel->maps.pgw_unix_paths), o);
	if (!rc && bpf_map__update_elem(h->skel->maps.pgw_config, &zero, sizeof(zero), &cfg,
					sizeof(cfg), BPF_ANY))
		rc = -errno;
	if (rc) {
		errbuf_set(err, errlen, "cannot fill the BPF maps: %s", strerror(-rc));
		goto err_handle;
	}

	if (!o->fail_open) {
		pin_path(path, sizeof(path), o->instance, NULL);
		if (mkdir(path, 0700) && errno != EEXIST) {
			rc = -errno;
			errbuf_set(err, errlen, "cannot create %s: %s", path, strerror(errno));
			goto err_handle;
		}
		h->pinned = true;
		struct bpf_map *m;

		bpf_object__for_each_map(m, h->skel->obj) {
			if (strncmp(bpf_map__name(m), PGW_PROG_PREFIX, strlen(PGW_PROG_PREFIX)) != 0)
				continue; /* .bss/.rodata of the object, if any */
			pin_path(path, sizeof(path), o->instance, bpf_map__name(m));
			rc = bpf_map__pin(m, path);
			if (rc) {
				errbuf_set(err, errlen, "cannot pin map %s: %s",
					   path, strerror(-rc));
				goto err_handle;
			}
		}
	}

	/* The relay's registration, through the pinned map it watches for. A fail-open
	 * attach that exec()s pgwardend has no relay yet: until it registers, steered
	 * connects are refused. */
	if (o->grant_daemon && !o->fail_open) {
		rc = steer_pins_grant(o->instance, o->daemon_gid, err, errlen);
		if (rc)
			goto err_handle;
	}
	if (o->check_relay && !o->fail_open) {
		rc = relay_registration_wait(o, bpf_map__fd(h->skel->maps.pgw_relay_socks), err,
					     errlen);
		if (rc)
			goto err_handle;
	}

	/* Links last: the first one attached starts steering, and everything it needs exists.
	 * sk_lookup first of all, so no steered SYN ever meets an unguarded relay port. */
	for (int k = 0; k < SP_COUNT; k++) {
		int i = k == 0 ? SP_SK_LOOKUP : k == SP_SK_LOOKUP ? 0 : k;
		struct bpf_program *p = skel_prog(h->skel, (enum steer_prog)i);

		if (!prog_wanted((enum steer_prog)i, &feat))
			continue;
		if (i == SP_SK_LOOKUP) {
			int ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);

			h->links[i] = ns < 0 ? NULL : bpf_program__attach_netns(p, ns);
			if (ns >= 0) {
				int e = errno;

				close(ns);
				errno = e;
			}
		} else {
			h->links[i] = bpf_program__attach_cgroup(p, cg_fd);
		}
		if (!h->links[i]) {
			rc = -errno;
			errbuf_set(err, errlen, "cannot attach %s to %s: %s%s",
				   bpf_program__name(p),
				   i == SP_SK_LOOKUP ? "this network namespace" : cgpath,
				   strerror(errno), errhint(errno));
			goto err_handle;
		}
		if (!o->fail_open) {
			pin_path(path, sizeof(path), o->instance, prog_pin_names[i]);
			rc = bpf_link__pin(h->links[i], path);
			if (rc) {
				errbuf_set(err, errlen, "cannot pin link %s: %s",
					   path, strerror(-rc));
				goto err_handle;
			}
		}
	}

	if (o->tproxy_port || o->gate) {
		h->nft = true; /* from here on, undo removes whatever part was made */
		rc = rules_apply(o, &h->xt, err, errlen);
		if (rc)
			goto err_handle;
		if (h->xt) {
			cfg.flags |= PGW_CFG_GATE_XT;
			if (bpf_map__update_elem(h->skel->maps.pgw_config, &zero, sizeof(zero), &cfg,
						 sizeof(cfg), BPF_ANY)) {
				rc = -errno;
				errbuf_set(err, errlen,
					   "cannot record the gate in the config map: %s",
					   strerror(errno));
				goto err_handle;
			}
		}
	}
	if (o->tproxy_port) {
		rc = steer_route_apply(o->tproxy_mark, o->route_table, o->rule_priority, err, errlen);
		if (rc)
			goto err_handle;
		h->route = true;
	}

	log_info("steer_attach", "attached %s to %s (cgroup id %llu), %u protected keys%s%s%s",
		 o->fail_open ? "fail-open" : "fail-closed", cgpath, (unsigned long long)cgroup_id,
		 nkeys, o->tproxy_port ? ", TPROXY on" : "", o->gate ? ", admission gate on" : "",
		 feat.unix_connect ? ", Unix sockets steered" : "");
	if (out)
		*out = h;
	else
		steer_handle_close(h);
	return 0;

err_handle:
	/* Undo in reverse: rules, routes, links (destroying an unpinned link detaches it), pins. */
	if (h->nft) {
		char ignore[STEER_ERR_MAX];

		steer_nft_delete(o->instance);
		if (o->gate && steer_xtq_present(o->instance))
			steer_xtq_delete(o->instance, ignore, sizeof(ignore));
	}
	if (h->route || o->tproxy_port)
		steer_route_delete(o->tproxy_mark, o->route_table, o->rule_priority);
	for (int i = 0; i < SP_COUNT; i++) {
		if (h->links[i])
			bpf_link__detach(h->links[i]);
		bpf_link__destroy(h->links[i]);
		h->links[i] = NULL;
	}
	if (h->pinned)
		pins_remove(o->instance);
	steer__destroy(h->skel);
	free(h);
	/* cg_fd belongs to h no longer: closed once, below. */
err_close_cg:
	close(cg_fd);
	return rc;
}

int steer_handle_export_fds(struct steer_handle *h, char *buf, size_t n)
{
	size_t len = 0;

	buf[0] = '\0';
	for (int i = 0; i < SP_COUNT; i++) {
		int fd;

		if (!h->links[i])
			continue;
		fd = bpf_link__fd(h->links[i]);
		int fl = fcntl(fd, F_GETFD);

		if (fl < 0 || fcntl(fd, F_SETFD, fl & ~FD_CLOEXEC) < 0)
			return -errno;
		int w = snprintf(buf + len, n - len, "%s%d", len ? "," : "", fd);

		if (w < 0 || (size_t)w >= n - len)
			return -ENOSPC;
		len += (size_t)w;
	}
	return 0;
}

/* ---- finding an instance's links, pinned or not ---- */

/* The config of the program behind a link, if it is a pgwarden program. */
static int link_config(int link_fd, struct bpf_link_info *li, struct bpf_prog_info *pi,
		       struct pgw_config *c)
{
	__u32 len = sizeof(*li), map_ids[16];
	int pfd, rc = -ENOENT;

	memset(li, 0, sizeof(*li));
	if (bpf_obj_get_info_by_fd(link_fd, li, &len))
		return -errno;
	pfd = bpf_prog_get_fd_by_id(li->prog_id);
	if (pfd < 0)
		return -errno;
	memset(pi, 0, sizeof(*pi));
	pi->nr_map_ids = 16;
	pi->map_ids = (__u64)(unsigned long)map_ids;
	len = sizeof(*pi);
	if (bpf_obj_get_info_by_fd(pfd, pi, &len) ||
	    strncmp(pi->name, PGW_PROG_PREFIX, strlen(PGW_PROG_PREFIX)) != 0)
		goto out;
	for (__u32 i = 0; i < pi->nr_map_ids && i < 16; i++) {
		struct bpf_map_info mi = {};
		__u32 ml = sizeof(mi), zero = 0;
		int mfd = bpf_map_get_fd_by_id(map_ids[i]);

		if (mfd < 0)
			continue;
		if (bpf_obj_get_info_by_fd(mfd, &mi, &ml) == 0 &&
		    strcmp(mi.name, PGW_STR(PGW_MAP_CONFIG)) == 0 &&
		    mi.value_size == sizeof(*c) && bpf_map_lookup_elem(mfd, &zero, c) == 0)
			rc = 0;
		close(mfd);
		if (rc == 0)
			break;
	}
out:
	pi->map_ids = 0;
	close(pfd);
	return rc;
}

static int instance_links(const char *instance, __u32 *link_ids, unsigned max, unsigned *n)
{
	__u32 id = 0;

	*n = 0;
	while (bpf_link_get_next_id(id, &id) == 0) {
		struct bpf_link_info li;
		struct bpf_prog_info pi;
		struct pgw_config c;
		int fd = bpf_link_get_fd_by_id(id);

		if (fd < 0)
			continue;
		if (link_config(fd, &li, &pi, &c) == 0 && strncmp(c.instance, instance,
								     sizeof(c.instance)) == 0 &&
		    *n < max)
			link_ids[(*n)++] = id;
		close(fd);
	}
	return 0;
}

int steer_detach(const char *instance, char *err, size_t errlen)
{
	struct pgw_config c;
	__u32 ids[64];
	unsigned n = 0;
	bool have_cfg, left;

	steer_libbpf_log_init();
	if (!instance)
		instance = STEER_DEFAULT_INSTANCE;
	if (!instance_name_valid(instance)) {
		errbuf_set(err, errlen, "bad instance name '%s'", instance);
		return -EINVAL;
	}
	if (steer_bpf_access(err, errlen))
		return -EPERM;
	have_cfg = pinned_config(instance, &c) == 0;
	/* Links held by a process (fail-open) or pinned: detach by id, whoever holds them. */
	instance_links(instance, ids, 64, &n);
	for (unsigned i = 0; i < n; i++) {
		int fd = bpf_link_get_fd_by_id(ids[i]);

		if (fd < 0)
			continue;
		if (!have_cfg) {
			struct bpf_link_info li;
			struct bpf_prog_info pi;

			have_cfg = link_config(fd, &li, &pi, &c) == 0;
		}
		if (bpf_link_detach(fd) && errno != EINVAL) {
			errbuf_set(err, errlen, "cannot detach link %u: %s",
				   ids[i], strerror(errno));
			close(fd);
			return -errno;
		}
		close(fd);
	}
	{
		char pdir[256];
		struct stat st;

		pin_path(pdir, sizeof(pdir), instance, NULL);
		left = n > 0 || stat(pdir, &st) == 0 || steer_nft_present(instance);
	}
	pins_remove(instance);
	if (!have_cfg) {
		/* No links and no pins (a fail-open daemon that died): the nft table it left
		 * still names the routing it used. */
		have_cfg = steer_nft_routing(instance, &c.tproxy_mark, &c.route_table,
					     &c.rule_priority) == 0;
	}
	steer_nft_delete(instance);
	if (steer_xtq_present(instance)) {
		char xerr[STEER_ERR_MAX];

		if (steer_xtq_delete(instance, xerr, sizeof(xerr)))
			log_warn("steer_detach", "%s", xerr);
	}
	if (have_cfg)
		steer_route_delete(c.tproxy_mark, c.route_table, c.rule_priority);
	else if (left)
		/* Something of the instance but no record of its routing (an older attach):
		 * the defaults. With nothing of it left, the default rule and routes belong to
		 * another instance (the host's own attach, say) and stay. */
		steer_route_delete(STEER_DEFAULT_TPROXY_MARK, STEER_DEFAULT_ROUTE_TABLE,
				   STEER_DEFAULT_RULE_PRIORITY);
	log_info("steer_detach", "detached instance %s (%u links)", instance, n);
	return 0;
}

int steer_instance_links(const char *instance, __u32 *link_ids, unsigned max, unsigned *n)
{
	return instance_links(instance, link_ids, max, n);
}

int steer_link_config(int link_fd, struct bpf_link_info *li, struct bpf_prog_info *pi,
		      struct pgw_config *c)
{
	return link_config(link_fd, li, pi, c);
}

int steer_pinned_config(const char *instance, struct pgw_config *c)
{
	return pinned_config(instance, c);
}

int steer_handle_map_fds(struct steer_handle *h, int *cfg_fd, int *tup_fd, int *prot_fd,
			 int *socks_fd)
{
	*cfg_fd = bpf_map__fd(h->skel->maps.pgw_config);
	*tup_fd = bpf_map__fd(h->skel->maps.pgw_origin_tup);
	*prot_fd = bpf_map__fd(h->skel->maps.pgw_protected);
	*socks_fd = bpf_map__fd(h->skel->maps.pgw_relay_socks);
	return 0;
}

void steer_pin_path(char *buf, size_t n, const char *instance, const char *name)
{
	pin_path(buf, n, instance, name);
}
