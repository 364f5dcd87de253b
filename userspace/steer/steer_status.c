/*
 * steer_status: what an instance has in the kernel right now, as one JSON object, for
 * `pgwardenctl status` (human or --json) and the admin socket. Read-only: it finds the
 * instance's links by walking the kernel's link ids (pinned or held by a process), its maps
 * through those programs or the pin dir, and reports anything of the instance that exists
 * without a live attach as a leftover.
 */
#include "steer/steer_internal.h"

#include "base/sanitize.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const stat_names[PGW_STAT_COUNT] = PGW_STAT_NAMES;

static const char *attach_type_name(__u32 t)
{
	switch (t) {
	case BPF_CGROUP_INET4_CONNECT: return "connect4";
	case BPF_CGROUP_INET6_CONNECT: return "connect6";
	case BPF_CGROUP_INET4_GETPEERNAME: return "getpeername4";
	case BPF_CGROUP_INET6_GETPEERNAME: return "getpeername6";
	case BPF_CGROUP_SOCK_OPS: return "sockops";
	case STEER_ATTACH_UNIX_CONNECT: return "connect_unix";
	case BPF_SK_LOOKUP: return "sk_lookup";
	default: return "other";
	}
}

/* Processes holding an fd of link id (fail-open: the daemon that owns the steering). */
static json_t *link_holders(__u32 link_id)
{
	json_t *pids = json_array();
	DIR *proc = opendir("/proc");
	struct dirent *p;

	if (!pids || !proc) {
		if (proc)
			closedir(proc);
		return pids;
	}
	while ((p = readdir(proc))) {
		char dir[300], path[600], line[128];
		DIR *fds;
		struct dirent *f;
		bool found = false;

		if (p->d_name[0] < '1' || p->d_name[0] > '9')
			continue;
		snprintf(dir, sizeof(dir), "/proc/%s/fdinfo", p->d_name);
		fds = opendir(dir);
		if (!fds)
			continue;
		while (!found && (f = readdir(fds))) {
			FILE *fi;

			if (f->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, f->d_name);
			fi = fopen(path, "re");
			if (!fi)
				continue;
			while (fgets(line, sizeof(line), fi)) {
				unsigned id;

				if (sscanf(line, "link_id: %u", &id) == 1 && id == link_id) {
					found = true;
					break;
				}
			}
			fclose(fi);
		}
		closedir(fds);
		if (found)
			json_array_append_new(pids, json_integer(atoi(p->d_name)));
	}
	closedir(proc);
	return pids;
}

static json_t *addr_json(int family, const __u32 *a, __u16 port_be)
{
	char host[INET6_ADDRSTRLEN], buf[INET6_ADDRSTRLEN + 16];
	bool any = a[0] == 0 && (family == PGW_AF_INET || (a[1] == 0 && a[2] == 0 && a[3] == 0));

	if (any)
		snprintf(host, sizeof(host), "%s", family == PGW_AF_INET ? "*" : "*6");
	else
		inet_ntop(family == PGW_AF_INET ? AF_INET : AF_INET6, a, host, sizeof(host));
	if (family == PGW_AF_INET6 && !any)
		snprintf(buf, sizeof(buf), "[%s]:%u", host, ntohs(port_be));
	else
		snprintf(buf, sizeof(buf), "%s:%u", host, ntohs(port_be));
	return json_string(buf);
}

/* Maps of the instance by name: from a live program's map ids, else from the pin dir. */
static int map_fd_by_name(const __u32 *ids, unsigned nids, const char *instance, const char *name)
{
	char path[256];

	for (unsigned i = 0; i < nids; i++) {
		struct bpf_map_info mi = {};
		__u32 len = sizeof(mi);
		int fd = bpf_map_get_fd_by_id(ids[i]);

		if (fd < 0)
			continue;
		if (bpf_obj_get_info_by_fd(fd, &mi, &len) == 0 && strcmp(mi.name, name) == 0)
			return fd;
		close(fd);
	}
	steer_pin_path(path, sizeof(path), instance, name);
	return bpf_obj_get(path);
}

static long map_count(int fd, size_t key_size)
{
	unsigned char cur[128], next[128];
	void *prev = NULL;
	long n = 0;

	if (key_size > sizeof(cur))
		return -1;
	while (bpf_map_get_next_key(fd, prev, next) == 0) {
		memcpy(cur, next, key_size);
		prev = cur;
		n++;
	}
	return n;
}

/* What add_maps() learns that later sections need. */
struct status_maps {
	uint16_t ports[PGW_PROTECTED_MAX]; /* protected ports, host order, each once */
	unsigned nports;
};

static void add_maps(json_t *root, const __u32 *ids, unsigned nids, const char *instance,
		     struct status_maps *sm)
{
	static const struct {
		const char *name;
		size_t key_size;
		bool count;
	} maps[] = {
		{PGW_STR(PGW_MAP_CONFIG), 4, false},
		{PGW_STR(PGW_MAP_PROTECTED), sizeof(struct pgw_protected_key), true},
		{PGW_STR(PGW_MAP_UNIX), sizeof(struct pgw_unix_key), true},
		/* Socket-local storage: no keys to walk, no capacity. */
		{PGW_STR(PGW_MAP_ORIGIN_SK), 4, false},
		{PGW_STR(PGW_MAP_ORIGIN_TUP), sizeof(struct pgw_tuple), true},
		{PGW_STR(PGW_MAP_STATS), 4, false},
		{PGW_STR(PGW_MAP_RELAY_SOCKS), sizeof(struct pgw_relay_key), true},
	};
	json_t *arr = json_array(), *prot = json_array(), *unixp = json_array();
	json_t *reg = json_array();
	json_t *ctr = json_object();

	for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
		int fd = map_fd_by_name(ids, nids, instance, maps[i].name);
		struct bpf_map_info mi = {};
		__u32 len = sizeof(mi);
		json_t *m;

		if (fd < 0)
			continue;
		m = json_object();
		json_object_set_new(m, "name", json_string(maps[i].name));
		if (bpf_obj_get_info_by_fd(fd, &mi, &len) == 0) {
			json_object_set_new(m, "id", json_integer(mi.id));
			json_object_set_new(m, "max_entries", json_integer(mi.max_entries));
		}
		if (maps[i].count)
			json_object_set_new(m, "entries", json_integer(map_count(fd, maps[i].key_size)));
		json_array_append_new(arr, m);

		if (strcmp(maps[i].name, PGW_STR(PGW_MAP_PROTECTED)) == 0) {
			struct pgw_protected_key k, cur;
			void *prev = NULL;

			while (bpf_map_get_next_key(fd, prev, &k) == 0) {
				uint16_t port = ntohs(k.port);
				unsigned j = 0;

				json_array_append_new(prot, addr_json(k.family, k.addr, k.port));
				while (j < sm->nports && sm->ports[j] != port)
					j++;
				if (j == sm->nports && sm->nports < PGW_PROTECTED_MAX)
					sm->ports[sm->nports++] = port;
				cur = k;
				prev = &cur;
			}
		} else if (strcmp(maps[i].name, PGW_STR(PGW_MAP_RELAY_SOCKS)) == 0) {
			struct pgw_relay_key k, cur;
			void *prev = NULL;

			while (bpf_map_get_next_key(fd, prev, &k) == 0) {
				json_array_append_new(reg, addr_json(k.family, k.addr, k.port));
				cur = k;
				prev = &cur;
			}
		} else if (strcmp(maps[i].name, PGW_STR(PGW_MAP_UNIX)) == 0) {
			struct pgw_unix_key k, cur;
			void *prev = NULL;

			while (bpf_map_get_next_key(fd, prev, &k) == 0) {
				json_array_append_new(unixp, json_stringn(k.path, strnlen(k.path,
											sizeof(k.path))));
				cur = k;
				prev = &cur;
			}
		} else if (strcmp(maps[i].name, PGW_STR(PGW_MAP_STATS)) == 0) {
			int ncpu = libbpf_num_possible_cpus();
			__u64 *vals = ncpu > 0 ? calloc((size_t)ncpu, sizeof(__u64)) : NULL;

			for (__u32 s = 0; vals && s < PGW_STAT_COUNT; s++) {
				__u64 sum = 0;

				if (bpf_map_lookup_elem(fd, &s, vals) == 0)
					for (int c = 0; c < ncpu; c++)
						sum += vals[c];
				json_object_set_new(ctr, stat_names[s], json_integer((json_int_t)sum));
			}
			free(vals);
		}
		close(fd);
	}
	json_object_set_new(root, "maps", arr);
	json_object_set_new(root, "protected", prot);
	json_object_set_new(root, "unix_paths", unixp);
	json_object_set_new(root, "relay_registered", reg);
	json_object_set_new(root, "counters", ctr);
}

void *steer_status_json(const char *instance)
{
	json_t *root = json_object(), *links = json_array(), *leftovers = json_array();
	__u32 ids[64], map_ids[16];
	unsigned n = 0, nmaps = 0;
	struct pgw_config c;
	bool have_cfg = false, pinned_dir, all_pinned = true;
	char pdir[256], path[640];
	struct stat st;
	unsigned live = 0;

	if (!root || !links || !leftovers) {
		json_decref(root);
		json_decref(links);
		json_decref(leftovers);
		return NULL;
	}
	if (!instance)
		instance = STEER_DEFAULT_INSTANCE;
	steer_libbpf_log_init();
	json_object_set_new(root, "instance", json_string(instance));
	{
		char err[STEER_ERR_MAX];

		if (steer_bpf_access(err, sizeof(err))) {
			/* Without access every answer would be "not attached": say so instead. */
			json_object_set_new(root, "error", json_string(err));
			json_decref(links);
			json_decref(leftovers);
			return root;
		}
	}
	steer_pin_path(pdir, sizeof(pdir), instance, NULL);
	pinned_dir = stat(pdir, &st) == 0;
	json_object_set_new(root, "pin_dir", json_string(pdir));
	json_object_set_new(root, "pin_dir_present", json_boolean(pinned_dir));

	steer_instance_links(instance, ids, 64, &n);
	for (unsigned i = 0; i < n; i++) {
		struct bpf_link_info li;
		struct bpf_prog_info pi;
		struct pgw_config lc;
		int fd = bpf_link_get_fd_by_id(ids[i]);
		json_t *l;
		bool pinned = false;

		if (fd < 0 || steer_link_config(fd, &li, &pi, &lc) != 0) {
			if (fd >= 0)
				close(fd);
			continue;
		}
		if (!have_cfg) {
			c = lc;
			have_cfg = true;
			/* The programs' map ids, for the maps section. */
			struct bpf_prog_info pi2 = {};
			__u32 len = sizeof(pi2);
			int pfd = bpf_prog_get_fd_by_id(li.prog_id);

			if (pfd >= 0) {
				pi2.nr_map_ids = 16;
				pi2.map_ids = (__u64)(unsigned long)map_ids;
				if (bpf_obj_get_info_by_fd(pfd, &pi2, &len) == 0)
					nmaps = pi2.nr_map_ids < 16 ? pi2.nr_map_ids : 16;
				close(pfd);
			}
		}
		l = json_object();
		json_object_set_new(l, "link_id", json_integer(ids[i]));
		json_object_set_new(l, "program", json_string(pi.name));
		json_object_set_new(l, "prog_id", json_integer(li.prog_id));
		if (li.type == BPF_LINK_TYPE_NETNS) {
			/* sk_lookup: on the network namespace, not the cgroup. */
			json_object_set_new(l, "hook", json_string(attach_type_name(li.netns.attach_type)));
			json_object_set_new(l, "netns_ino", json_integer(li.netns.netns_ino));
			if (li.netns.netns_ino)
				live++;
		} else {
			json_object_set_new(l, "hook",
					    json_string(attach_type_name(li.cgroup.attach_type)));
			json_object_set_new(l, "cgroup_id",
					    json_integer((json_int_t)li.cgroup.cgroup_id));
			if (li.cgroup.cgroup_id)
				live++;
		}
		/* Pinned under the pin dir? Compare the pinned link's id. */
		for (int k = 0; pinned_dir && k < 1; k++) {
			DIR *d = opendir(pdir);
			struct dirent *e;

			while (d && (e = readdir(d))) {
				if (strncmp(e->d_name, "link_", 5) != 0)
					continue;
				snprintf(path, sizeof(path), "%s/%s", pdir, e->d_name);
				int pfd = bpf_obj_get(path);
				struct bpf_link_info pli = {};
				__u32 plen = sizeof(pli);

				if (pfd >= 0) {
					if (bpf_obj_get_info_by_fd(pfd, &pli, &plen) == 0 && pli.id == ids[i])
						pinned = true;
					close(pfd);
				}
			}
			if (d)
				closedir(d);
		}
		json_object_set_new(l, "pinned", json_boolean(pinned));
		if (!pinned) {
			all_pinned = false;
			json_object_set_new(l, "held_by", link_holders(ids[i]));
		}
		json_array_append_new(links, l);
		close(fd);
	}
	if (!have_cfg && steer_pinned_config(instance, &c) == 0)
		have_cfg = true;

	bool attached = live > 0;

	json_object_set_new(root, "attached", json_boolean(attached));
	json_object_set_new(root, "mode", json_string(!attached ? "detached" :
						      all_pinned ? "fail-closed" : "fail-open"));
	json_object_set_new(root, "links", links);
	if (have_cfg) {
		json_t *relay = json_array();
		char mark[16];

		json_object_set_new(root, "cgroup_id", json_integer((json_int_t)c.cgroup_id));
		if (c.flags & PGW_CFG_RELAY4)
			json_array_append_new(relay, addr_json(PGW_AF_INET, &c.relay4_addr, c.relay4_port));
		if (c.flags & PGW_CFG_RELAY6)
			json_array_append_new(relay, addr_json(PGW_AF_INET6, c.relay6_addr, c.relay6_port));
		json_object_set_new(root, "relay", relay);
		snprintf(mark, sizeof(mark), "0x%x", c.relay_mark);
		json_object_set_new(root, "relay_mark", json_string(mark));
		json_t *gate = json_object();

		json_object_set_new(gate, "enabled", json_boolean((c.flags & PGW_CFG_GATE) != 0));
		if (c.flags & PGW_CFG_GATE) {
			json_object_set_new(gate, "queue", json_integer(c.gate_queue));
			json_object_set_new(gate, "rule", json_string(
				(c.flags & PGW_CFG_GATE_XT) ? "xt NFQUEUE (iptables filter INPUT)"
							    : "nft queue"));
		}
		json_object_set_new(root, "gate", gate);
		if (c.flags & PGW_CFG_UNIX)
			json_object_set_new(root, "unix_relay",
					    json_stringn(c.unix_relay_path, c.unix_relay_path_len));
	}
	struct status_maps sm = {.nports = 0};

	add_maps(root, map_ids, nmaps, instance, &sm);

	/* The relay-port guard: steered clients reach registered sockets only. */
	{
		json_t *g = json_object();

		json_object_set_new(g, "kernel_supports_sk_lookup",
				    json_boolean(steer_probe_sk_lookup()));
		json_object_set_new(g, "sk_lookup_attached",
				    json_boolean(attached && have_cfg && (c.flags & PGW_CFG_SK_LOOKUP)));
		json_object_set_new(root, "relay_guard", g);
	}

	/* Unix-socket coverage: the server's own sockets any local user can reach bypass
	 * the relay, by any spelling of their path. */
	{
		json_t *u = json_object(), *exp = json_array();
		bool sup = steer_probe_connect_unix();
		char paths[8][PGW_UNIX_PATH_MAX], relay[PGW_UNIX_PATH_MAX + 1] = "";
		unsigned ne;

		if (have_cfg && c.unix_relay_path_len && c.unix_relay_path_len < sizeof(relay))
			memcpy(relay, c.unix_relay_path, c.unix_relay_path_len);
		uid_t owners[16];
		unsigned nowners = steer_unix_server_uids(sm.ports, sm.nports, owners, 16);

		ne = steer_unix_exposed(sm.ports, sm.nports, relay[0] ? relay : NULL, owners,
					nowners, paths, 8);
		for (unsigned i = 0; i < ne && i < 8; i++) {
			/* Any local user names directories: the path is peer text. */
			char shown[4 * PGW_UNIX_PATH_MAX + 1];

			sanitize_str(shown, sizeof(shown), paths[i], SANITIZE_JSON, NULL);
			json_array_append_new(exp, json_string(shown));
		}
		json_object_set_new(u, "kernel_supports_connect_unix", json_boolean(sup));
		json_object_set_new(u, "steered",
				    json_boolean(attached && have_cfg && (c.flags & PGW_CFG_UNIX)));
		json_object_set_new(u, "exposed", exp);
		json_object_set_new(u, "note", json_string(
			ne ? "PostgreSQL's Unix socket is reachable by every local user: Unix-socket "
			     "clients are NOT covered (see docs/STEERING.md)"
			   : "no server socket of a protected port is within unprivileged users' reach"));
		json_object_set_new(root, "unix", u);
	}

	/* TPROXY: nft table and policy routing. */
	{
		json_t *t = json_object();
		char tbl[64], mk[16];
		bool nft = steer_nft_present(instance);
		unsigned rules = 0, routes = 0;
		uint32_t tmark = have_cfg ? c.tproxy_mark : STEER_DEFAULT_TPROXY_MARK;
		uint32_t rtable = have_cfg ? c.route_table : STEER_DEFAULT_ROUTE_TABLE;
		uint32_t rprio;

		/* No config (a killed fail-open daemon): its nft table names its routing. With
		 * nothing of the instance left at all, the default mark and table are not its
		 * own (another instance's attach uses them): they are not scanned. */
		bool mine = have_cfg || nft || pinned_dir || n > 0;

		if (!have_cfg && nft)
			steer_nft_routing(instance, &tmark, &rtable, &rprio);

		snprintf(tbl, sizeof(tbl), "inet %s", instance);
		snprintf(mk, sizeof(mk), "0x%x", tmark);
		if (mine)
			steer_route_scan(tmark, rtable, &rules, &routes);
		json_object_set_new(t, "port", json_integer(have_cfg ? c.tproxy_port : 0));
		json_object_set_new(t, "nft_table", json_string(tbl));
		json_object_set_new(t, "nft_table_present", json_boolean(nft));
		json_object_set_new(t, "fwmark", json_string(mk));
		json_object_set_new(t, "route_table", json_integer(rtable));
		json_object_set_new(t, "fwmark_rules", json_integer(rules));
		json_object_set_new(t, "local_routes", json_integer(routes));
		json_object_set_new(root, "tproxy", t);
		bool want = attached && have_cfg && c.tproxy_port;
		bool want_nft = attached && have_cfg && (c.tproxy_port || (c.flags & PGW_CFG_GATE));

		if (nft && !want_nft) {
			snprintf(path, sizeof(path), "nft table inet %s without a live attach", instance);
			json_array_append_new(leftovers, json_string(path));
		}
		if ((rules || routes) && !want) {
			snprintf(path, sizeof(path), "fwmark rule/route table %u without a live attach",
				 rtable);
			json_array_append_new(leftovers, json_string(path));
		}
	}
	if (steer_xtq_present(instance) &&
	    !(attached && have_cfg && (c.flags & PGW_CFG_GATE_XT))) {
		char chain[32];

		steer_xtq_chain(instance, chain, sizeof(chain));
		snprintf(path, sizeof(path), "iptables chain %s without a live attach", chain);
		json_array_append_new(leftovers, json_string(path));
	}
	if (pinned_dir && (!attached || !all_pinned)) {
		snprintf(path, sizeof(path), "pin dir %s without live links", pdir);
		json_array_append_new(leftovers, json_string(path));
	}
	if (attached && live < n) {
		json_array_append_new(leftovers, json_string("links detached from a removed cgroup"));
	}
	json_object_set_new(root, "leftovers", leftovers);
	return root;
}
