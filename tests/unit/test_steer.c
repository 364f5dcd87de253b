/*
 * Unit tests for userspace/steer: the mounts-table reader, --port/--address parsing and the
 * nftables ruleset text (pure, run everywhere), then the module against the real kernel
 * (root only, skipped with a reason elsewhere): attach to a cgroup this test creates, steer a
 * child process's connect(), and read it back the way pgwardend will, through
 * steer_origin_lookup(). Every cgroup and attach the test makes is removed in teardown,
 * also when an assertion fails.
 */
#include "steer/steer_internal.h"

#include "base/addr.h"
#include "base/clock.h"
#include "session/session.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "case_file.h"

/* Each data/steer/mounts/NAME.txt starts with "# want: PATH" or "# want: ENOENT". */
static void test_find_mount_cases(void **state)
{
	DIR *d = opendir("data/steer/mounts");
	struct dirent *e;
	int cases = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		char path[512], first[256], got[256], want[256];
		FILE *f;
		int rc;

		if (!strstr(e->d_name, ".txt"))
			continue;
		snprintf(path, sizeof(path), "data/steer/mounts/%s", e->d_name);
		f = fopen(path, "r");
		assert_non_null(f);
		assert_non_null(fgets(first, sizeof(first), f));
		assert_int_equal(strncmp(first, "# want: ", 8), 0);
		snprintf(want, sizeof(want), "%s", first + 8);
		want[strcspn(want, "\n")] = '\0';
		rc = steer_find_mount(f, "cgroup2", got, sizeof(got));
		fclose(f);
		if (strcmp(want, "ENOENT") == 0) {
			if (rc != -ENOENT)
				fail_msg("%s: want ENOENT, got rc %d (%s)", e->d_name, rc, rc ? "" : got);
		} else {
			if (rc != 0)
				fail_msg("%s: want %s, got rc %d", e->d_name, want, rc);
			if (strcmp(got, want) != 0)
				fail_msg("%s: want '%s', got '%s'", e->d_name, want, got);
		}
		cases++;
	}
	closedir(d);
	assert_true(cases >= 6);
}

static void test_find_mount_too_long(void **state)
{
	const char text[] = "cgroup2 /a/very/long/mount/point cgroup2 rw 0 0\n";
	FILE *f = fmemopen((void *)text, sizeof(text) - 1, "r");
	char small[8];

	assert_non_null(f);
	assert_int_equal(steer_find_mount(f, "cgroup2", small, sizeof(small)), -ENAMETOOLONG);
	fclose(f);
}

static void test_port_cases(void **state)
{
	FILE *f = fopen("data/steer/ports.txt", "r");
	char line[256];
	int cases = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *bar = strchr(line, '|'), *in, *want;
		uint16_t port = 0;
		int rc;

		if (line[0] == '#' || !bar)
			continue;
		*bar = '\0';
		in = trim(line);
		want = trim(bar + 1);
		rc = steer_parse_port(in, &port);
		if (strcmp(want, "err") == 0) {
			if (rc != -EINVAL)
				fail_msg("port '%s' accepted", in);
		} else {
			if (rc != 0)
				fail_msg("port '%s' refused", in);
			assert_int_equal(port, atoi(want));
		}
		cases++;
	}
	fclose(f);
	assert_true(cases >= 8);
}

static void test_ip_cases(void **state)
{
	FILE *f = fopen("data/steer/ips.txt", "r");
	char line[256];
	int cases = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char *bar = strchr(line, '|'), *in, *want, text[INET6_ADDRSTRLEN], got[80];
		struct addr a;
		int rc;

		if (line[0] == '#' || !bar)
			continue;
		*bar = '\0';
		in = trim(line);
		want = trim(bar + 1);
		rc = steer_parse_ip(in, &a);
		if (strcmp(want, "err") == 0) {
			if (rc != -EINVAL)
				fail_msg("address '%s' accepted", in);
			cases++;
			continue;
		}
		if (rc != 0)
			fail_msg("address '%s' refused", in);
		if (a.ss.sa.sa_family == AF_INET)
			inet_ntop(AF_INET, &a.ss.in4.sin_addr, text, sizeof(text));
		else
			inet_ntop(AF_INET6, &a.ss.in6.sin6_addr, text, sizeof(text));
		snprintf(got, sizeof(got), "%c %s", a.ss.sa.sa_family == AF_INET ? '4' : '6', text);
		assert_string_equal(got, want);
		cases++;
	}
	fclose(f);
	assert_true(cases >= 10);
}

/* The ruleset replaces the table atomically and diverts only what it should. */
static void test_nft_ruleset(void **state)
{
	struct steer_opts o;
	char buf[8192];

	steer_opts_init(&o);
	snprintf(o.instance, sizeof(o.instance), "pgw_t");
	o.ports[o.nports++] = 5432;
	o.ports[o.nports++] = 5433;
	o.tproxy_port = 6433;
	assert_int_equal(steer_nft_ruleset(&o, buf, sizeof(buf)), 0);
	/* add + delete + define in one buffer: one transaction, no window without rules. */
	assert_non_null(strstr(buf, "add table inet pgw_t\ndelete table inet pgw_t\ntable inet pgw_t {"));
	assert_non_null(strstr(buf, "iif != \"lo\" meta nfproto ipv4 tcp dport { 5432, 5433 } "
				    "tproxy ip to :6433 meta mark set 0x5048 accept"));
	assert_non_null(strstr(buf, "tproxy ip6 to :6433"));
	assert_non_null(strstr(buf, "meta mark 0x5047 ct mark set 0x5047"));
	/* Fail-closed for remote clients: undiverted new connections are refused. */
	assert_non_null(strstr(buf, "  chain input {\n    type filter hook input priority filter; "
				    "policy accept;\n    iif != \"lo\" meta nfproto ipv4 tcp dport "
				    "{ 5432, 5433 } tcp flags & (syn | ack) == syn meta mark != 0x5048 "
				    "reject with tcp reset\n"));
	assert_non_null(strstr(buf, "ct direction reply ct mark 0x5047 meta mark set 0x5048"));

	/* With only IPv4 addresses, no IPv6 rule at all. */
	assert_int_equal(steer_parse_ip("10.1.2.3", &o.addresses[o.naddresses++]), 0);
	assert_int_equal(steer_nft_ruleset(&o, buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "ip daddr { 10.1.2.3 } tcp dport { 5432, 5433 }"));
	assert_null(strstr(buf, "tproxy ip6"));

	/* Too small a buffer is an error, never a cut ruleset. */
	assert_int_equal(steer_nft_ruleset(&o, buf, 64), -ENOSPC);

	/* The admission gate: SYNs only, from the network only; "bypass" only fail-open. */
	o.gate = true;
	o.gate_queue = 7;
	assert_int_equal(steer_nft_ruleset(&o, buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "    iif != \"lo\" tcp dport { 5432, 5433 } "
				    "tcp flags & (syn | ack) == syn queue num 7\n"));
	o.fail_open = true;
	assert_int_equal(steer_nft_ruleset(&o, buf, sizeof(buf)), 0);
	assert_non_null(strstr(buf, "queue num 7 bypass\n"));
	assert_null(strstr(buf, "reject")); /* fail-open: a dead relay means direct */
	/* Gate without TPROXY: no prerouting or output chain at all. */
	o.tproxy_port = 0;
	assert_int_equal(steer_nft_ruleset(&o, buf, sizeof(buf)), 0);
	assert_null(strstr(buf, "tproxy"));
	assert_null(strstr(buf, "chain output"));
	assert_non_null(strstr(buf, "chain input"));
	assert_null(strstr(buf, "reject"));
}

static void ip16(const char *text, uint8_t out[16])
{
	struct cidr c;

	assert_int_equal(cidr_parse(text, &c), 0);
	memcpy(out, c.addr, 16);
}

/* Token bucket per source: burst at once, then rate per second; sources are independent;
 * the deny list wins over everything. */
static void test_gate_decisions(void **state)
{
	struct steer_gate_opts go = {.rate_per_sec = 2, .burst = 3, .max_sources = 64};
	struct steer_gate *g;
	struct steer_gate_stats st;
	uint8_t a[16], b[16], d[16];
	uint64_t t = 1000 * NSEC_PER_SEC;

	assert_int_equal(cidr_parse("192.0.2.0/24", &go.deny[go.ndeny++]), 0);
	assert_int_equal(steer_gate_new(&go, &g), 0);
	ip16("10.0.0.1", a);
	ip16("fd00::1", b);
	ip16("192.0.2.77", d);
	for (int i = 0; i < 3; i++)
		assert_int_equal(steer_gate_decide(g, a, t), STEER_GATE_ACCEPT);
	assert_int_equal(steer_gate_decide(g, a, t), STEER_GATE_DENY_RATE);
	/* Another source has its own bucket. */
	assert_int_equal(steer_gate_decide(g, b, t), STEER_GATE_ACCEPT);
	/* Half a second at 2/s refills one token. */
	assert_int_equal(steer_gate_decide(g, a, t + NSEC_PER_SEC / 2), STEER_GATE_ACCEPT);
	assert_int_equal(steer_gate_decide(g, a, t + NSEC_PER_SEC / 2), STEER_GATE_DENY_RATE);
	/* A long pause refills to the burst, no more. */
	for (int i = 0; i < 3; i++)
		assert_int_equal(steer_gate_decide(g, a, t + 100 * NSEC_PER_SEC), STEER_GATE_ACCEPT);
	assert_int_equal(steer_gate_decide(g, a, t + 100 * NSEC_PER_SEC), STEER_GATE_DENY_RATE);
	assert_int_equal(steer_gate_decide(g, d, t), STEER_GATE_DENY_LIST);
	steer_gate_stats_get(g, &st);
	assert_int_equal(st.accepted, 8);
	assert_int_equal(st.denied_rate, 3);
	assert_int_equal(st.denied_list, 1);
	steer_gate_close(g);

	/* A flood of distinct sources never grows the table: memory is fixed, and each new
	 * source still gets its burst. */
	go.ndeny = 0;
	go.max_sources = 64;
	assert_int_equal(steer_gate_new(&go, &g), 0);
	for (uint32_t i = 0; i < 100000; i++) {
		uint8_t x[16] = {0};

		memcpy(x, &i, sizeof(i));
		x[15] = 1;
		assert_int_equal(steer_gate_decide(g, x, t), STEER_GATE_ACCEPT);
	}
	steer_gate_close(g);

	/* Bad options. */
	go.burst = 0;
	assert_int_equal(steer_gate_new(&go, &g), -EINVAL);
}

/* New limits (a reload) hold for the next SYN; sources keep their buckets, capped at the
 * new burst; the latest refusal is remembered for the log summary. */
static void test_gate_reconfigure(void **state)
{
	struct steer_gate_opts go = {.max_sources = 64}, bad;
	struct steer_gate *g;
	struct steer_gate_stats st;
	enum steer_gate_verdict why;
	uint8_t a[16], b[16], seen[16];
	uint64_t t = 1000 * NSEC_PER_SEC;

	ip16("10.0.0.1", a);
	ip16("2001:db8::7", b);
	assert_int_equal(steer_gate_new(&go, &g), 0);
	assert_false(steer_gate_last_denied(g, seen, &why));
	/* No limits: everything passes, and no bucket is kept. */
	for (int i = 0; i < 10; i++)
		assert_int_equal(steer_gate_decide(g, a, t), STEER_GATE_ACCEPT);

	/* A rate appears: a's bucket starts full at the burst. */
	go.rate_per_sec = 1;
	go.burst = 4;
	assert_int_equal(steer_gate_reconfigure(g, &go), 0);
	for (int i = 0; i < 4; i++)
		assert_int_equal(steer_gate_decide(g, a, t), STEER_GATE_ACCEPT);
	assert_int_equal(steer_gate_decide(g, a, t), STEER_GATE_DENY_RATE);
	assert_true(steer_gate_last_denied(g, seen, &why));
	assert_memory_equal(seen, a, 16);
	assert_int_equal(why, STEER_GATE_DENY_RATE);

	/* A lower burst caps a bucket that refilled past it. */
	go.burst = 2;
	assert_int_equal(steer_gate_reconfigure(g, &go), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(steer_gate_decide(g, a, t + 100 * NSEC_PER_SEC), STEER_GATE_ACCEPT);
	assert_int_equal(steer_gate_decide(g, a, t + 100 * NSEC_PER_SEC), STEER_GATE_DENY_RATE);

	/* A deny range added by a reload holds at once; removed, the source is back. */
	assert_int_equal(cidr_parse("2001:db8::/32", &go.deny[go.ndeny++]), 0);
	assert_int_equal(steer_gate_reconfigure(g, &go), 0);
	assert_int_equal(steer_gate_decide(g, b, t), STEER_GATE_DENY_LIST);
	assert_true(steer_gate_last_denied(g, seen, &why));
	assert_memory_equal(seen, b, 16);
	assert_int_equal(why, STEER_GATE_DENY_LIST);
	go.ndeny = 0;
	go.rate_per_sec = 0;
	go.burst = 0;
	assert_int_equal(steer_gate_reconfigure(g, &go), 0);
	assert_int_equal(steer_gate_decide(g, b, t), STEER_GATE_ACCEPT);
	assert_int_equal(steer_gate_decide(g, a, t), STEER_GATE_ACCEPT);

	/* Invalid limits are refused and change nothing. */
	bad = go;
	bad.rate_per_sec = 5;
	bad.burst = 0;
	assert_int_equal(steer_gate_reconfigure(g, &bad), -EINVAL);
	bad = go;
	bad.ndeny = STEER_GATE_MAX_DENY + 1;
	assert_int_equal(steer_gate_reconfigure(g, &bad), -EINVAL);
	bad.ndeny = 0;
	bad.rate_per_sec = -1;
	assert_int_equal(steer_gate_reconfigure(g, &bad), -EINVAL);
	assert_int_equal(steer_gate_decide(g, a, t), STEER_GATE_ACCEPT);

	steer_gate_stats_get(g, &st);
	assert_int_equal(st.accepted, 10 + 4 + 2 + 3);
	assert_int_equal(st.denied_rate, 2);
	assert_int_equal(st.denied_list, 1);
	assert_int_equal(st.queue_overruns, 0);
	steer_gate_close(g);
}

/* ---- against the kernel (root) ---- */

struct live {
	char cgroup[512];
	char instance[STEER_INSTANCE_MAX];
	int relay_fd;
	struct addr relay;
	uint16_t protected_port;
	pid_t child;
	bool attached;
	/* Plays pgwardend's main thread: registers relay_fd with the instance's map. */
	struct steer_registrar *registrar;
	pthread_t registrar_thread;
	bool registrar_running;
	bool registrar_stop; /* atomic */
};

static void *live_registrar_main(void *arg)
{
	struct live *L = arg;

	while (!__atomic_load_n(&L->registrar_stop, __ATOMIC_ACQUIRE)) {
		int ms = steer_registrar_tick(L->registrar);

		usleep((useconds_t)(ms < 20 ? ms : 20) * 1000);
	}
	return NULL;
}

/* The relay's registration, as pgwardend does it, for tests whose attach waits for it. */
static void live_registrar_start(struct live *L)
{
	assert_int_equal(steer_registrar_new(L->instance, NULL, &L->registrar), 0);
	assert_int_equal(steer_registrar_add(L->registrar, L->relay_fd, &L->relay), 0);
	L->registrar_stop = false;
	assert_int_equal(pthread_create(&L->registrar_thread, NULL, live_registrar_main, L), 0);
	L->registrar_running = true;
}

static void live_registrar_stop(struct live *L)
{
	if (!L->registrar_running)
		return;
	__atomic_store_n(&L->registrar_stop, true, __ATOMIC_RELEASE);
	pthread_join(L->registrar_thread, NULL);
	steer_registrar_free(L->registrar);
	L->registrar = NULL;
	L->registrar_running = false;
}

static int live_setup(void **state)
{
	struct live *L;
	char root[256];
	FILE *m;
	socklen_t len;

	if (geteuid() != 0) {
		print_message("skip: steering tests need root\n");
		*state = NULL;
		return 0;
	}
	m = fopen("/proc/self/mounts", "r");
	if (!m || steer_find_mount(m, "cgroup2", root, sizeof(root)) != 0) {
		if (m)
			fclose(m);
		print_message("skip: no cgroup v2 mount\n");
		*state = NULL;
		return 0;
	}
	fclose(m);
	L = calloc(1, sizeof(*L));
	assert_non_null(L);
	snprintf(L->cgroup, sizeof(L->cgroup), "%s/pgw-unit-%d", root, (int)getpid());
	snprintf(L->instance, sizeof(L->instance), "pgw_unit_%d", (int)getpid());
	if (mkdir(L->cgroup, 0755) != 0) {
		free(L);
		fail_msg("cannot create test cgroup: %s", strerror(errno));
	}
	L->relay_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	L->relay.ss.in4.sin_family = AF_INET;
	L->relay.ss.in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	L->relay.len = sizeof(L->relay.ss.in4);
	assert_int_equal(bind(L->relay_fd, &L->relay.ss.sa, L->relay.len), 0);
	assert_int_equal(listen(L->relay_fd, 8), 0);
	len = sizeof(L->relay.ss);
	assert_int_equal(getsockname(L->relay_fd, &L->relay.ss.sa, &len), 0);
	/* Never actually dialled: the hook rewrites it before any packet leaves. */
	L->protected_port = 9;
	live_registrar_start(L);
	*state = L;
	return 0;
}

static int live_teardown(void **state)
{
	struct live *L = *state;
	char err[STEER_ERR_MAX];

	if (!L)
		return 0;
	if (L->child > 0) {
		kill(L->child, SIGKILL);
		waitpid(L->child, NULL, 0);
	}
	live_registrar_stop(L);
	if (steer_detach(L->instance, err, sizeof(err)) != 0)
		print_message("detach: %s\n", err);
	close(L->relay_fd);
	if (rmdir(L->cgroup) != 0)
		print_message("cannot remove %s: %s\n", L->cgroup, strerror(errno));
	free(L);
	return 0;
}

static void live_opts(struct live *L, struct steer_opts *o)
{
	steer_opts_init(o);
	snprintf(o->instance, sizeof(o->instance), "%s", L->instance);
	o->cgroup = L->cgroup;
	o->ports[o->nports++] = L->protected_port;
	o->relay[o->nrelay++] = L->relay;
}

/* A child joins the test cgroup, names itself, dials 127.0.0.1:protected and reports its
 * getpeername() through the pipe; it then waits until killed, holding the connection. */
static pid_t spawn_client(struct live *L, int report_fd)
{
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	char path[600], pidtxt[32], line[128];
	struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(L->protected_port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);
	int fd, cg;

	snprintf(path, sizeof(path), "%s/cgroup.procs", L->cgroup);
	cg = open(path, O_WRONLY);
	snprintf(pidtxt, sizeof(pidtxt), "%d", (int)getpid());
	if (cg < 0 || write(cg, pidtxt, strlen(pidtxt)) < 0)
		_exit(10);
	close(cg);
	prctl(PR_SET_NAME, "pgw-unit-cli");
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
		snprintf(line, sizeof(line), "connect %s\n", strerror(errno));
	} else {
		struct sockaddr_in me;
		socklen_t mlen = sizeof(me);

		getpeername(fd, (struct sockaddr *)&peer, &len);
		getsockname(fd, (struct sockaddr *)&me, &mlen);
		snprintf(line, sizeof(line), "peer %u local %u\n", ntohs(peer.sin_port),
			 ntohs(me.sin_port));
	}
	if (write(report_fd, line, strlen(line)) < 0)
		_exit(11);
	pause();
	_exit(0);
}

static void test_live_steer_and_lookup(void **state)
{
	struct live *L = *state;
	struct steer_opts o;
	struct steer_origin *orig = NULL;
	struct session s;
	struct addr peer, local;
	char err[STEER_ERR_MAX], line[128] = "";
	int pfd[2], cfd, rc;
	socklen_t len;
	const char *why;

	if (!L)
		skip();
	/* The daemon may start before the attach: its handle picks the attach up later. */
	assert_int_equal(steer_origin_open(L->instance, &orig), -ENOENT);
	assert_non_null(orig);
	assert_int_equal(steer_origin_relay_mark(orig), STEER_DEFAULT_RELAY_MARK);
	live_opts(L, &o);
	rc = steer_attach(&o, NULL, err, sizeof(err));
	if (rc)
		fail_msg("attach: %s", err);
	/* Idempotent: a second attach with the same options succeeds in place. */
	rc = steer_attach(&o, NULL, err, sizeof(err));
	if (rc)
		fail_msg("second attach: %s", err);

	assert_int_equal(pipe(pfd), 0);
	L->child = spawn_client(L, pfd[1]);
	close(pfd[1]);
	assert_true(read(pfd[0], line, sizeof(line) - 1) > 0);
	close(pfd[0]);
	/* The client sees the port it dialled, not the relay's. */
	unsigned got_peer = 0, client_port = 0;

	if (sscanf(line, "peer %u local %u", &got_peer, &client_port) != 2)
		fail_msg("client: %s", line);
	assert_int_equal(got_peer, L->protected_port);

	/* Accept until the client's connection: on a shared host another process may probe the port. */
	for (;;) {
		peer.len = sizeof(peer.ss);
		cfd = accept(L->relay_fd, &peer.ss.sa, &peer.len);
		assert_true(cfd >= 0);
		if (ntohs(peer.ss.in4.sin_port) == client_port)
			break;
		close(cfd);
	}
	local.len = sizeof(local.ss);
	assert_int_equal(getsockname(cfd, &local.ss.sa, &local.len), 0);

	usleep(150 * 1000); /* past the closed handle's retry interval */
	memset(&s, 0, sizeof(s));
	assert_int_equal(steer_origin_lookup(orig, cfd, &L->relay, &peer, &local, &s), 0);
	assert_int_equal(s.route, SESSION_ROUTE_STEERED);
	assert_int_equal(s.dialled.ss.sa.sa_family, AF_INET);
	assert_int_equal(ntohs(s.dialled.ss.in4.sin_port), L->protected_port);
	assert_int_equal(ntohl(s.dialled.ss.in4.sin_addr.s_addr), INADDR_LOOPBACK);
	assert_true(session_process(&s)->known);
	assert_int_equal(session_process(&s)->tgid, (uint32_t)L->child);
	assert_int_equal(session_process(&s)->uid, 0);
	assert_string_equal(session_process(&s)->comm, "pgw-unit-cli");
	assert_true(session_process(&s)->cgroup_id != 0);

	/* Consumed: a second lookup of the same tuple finds nothing and says explicit. */
	session_release(&s);
	memset(&s, 0, sizeof(s));
	assert_int_equal(steer_origin_lookup(orig, cfd, &L->relay, &peer, &local, &s), 0);
	assert_int_equal(s.route, SESSION_ROUTE_EXPLICIT);
	/* Fail closed: without its record, a connection on the steering address is one the
	 * relay must refuse, never serve as explicit; on any other address it is explicit. */
	assert_true(steer_origin_unrecorded(orig, &s));
	s.dialled.ss.in4.sin_port = htons((uint16_t)(ntohs(s.dialled.ss.in4.sin_port) + 1));
	assert_false(steer_origin_unrecorded(orig, &s));
	s.dialled = local;
	assert_false(steer_origin_unrecorded(NULL, &s));

	/* The upstream socket gets the relay mark; a loopback client cannot be impersonated. */
	s.route = SESSION_ROUTE_STEERED;
	int up = socket(AF_INET, SOCK_STREAM, 0);
	uint32_t mark = 0;

	len = sizeof(mark);
	rc = steer_upstream_prepare(up, &s, steer_origin_relay_mark(orig), true, &why);
	assert_int_equal(rc, 1);
	assert_string_equal(why, "loopback client");
	assert_int_equal(getsockopt(up, SOL_SOCKET, SO_MARK, &mark, &len), 0);
	assert_int_equal(mark, STEER_DEFAULT_RELAY_MARK);
	close(up);
	close(cfd);
	steer_origin_close(orig);

	/* Status sees it, fail-closed, pinned, with the steering counted. */
	json_t *st = steer_status_json(L->instance);

	assert_non_null(st);
	assert_true(json_is_true(json_object_get(st, "attached")));
	assert_string_equal(json_string_value(json_object_get(st, "mode")), "fail-closed");
	assert_true(json_array_size(json_object_get(st, "links")) >= 5);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(st, "counters"),
							    "steered_ipv4")), 1);
	assert_int_equal(json_array_size(json_object_get(st, "leftovers")), 0);
	json_decref(st);

	/* A TPROXY'd connection: local end is not the listener's address. */
	struct addr listen_any = L->relay, tp_local = L->relay;

	listen_any.ss.in4.sin_addr.s_addr = htonl(INADDR_ANY);
	tp_local.ss.in4.sin_port = htons(5432);
	memset(&s, 0, sizeof(s));
	assert_int_equal(steer_origin_lookup(NULL, -1, &listen_any, &peer, &tp_local, &s), 0);
	assert_int_equal(s.route, SESSION_ROUTE_TPROXY);
	assert_int_equal(ntohs(s.dialled.ss.in4.sin_port), 5432);

	assert_int_equal(steer_detach(L->instance, err, sizeof(err)), 0);
	st = steer_status_json(L->instance);
	assert_false(json_is_true(json_object_get(st, "attached")));
	assert_int_equal(json_array_size(json_object_get(st, "leftovers")), 0);
	json_decref(st);
}

/* A relay that is not listening: one error line, and nothing attached. */
static void test_live_relay_down(void **state)
{
	struct live *L = *state;
	struct steer_opts o;
	char err[STEER_ERR_MAX] = "", pdir[256];
	struct stat st;

	if (!L)
		skip();
	live_opts(L, &o);
	live_registrar_stop(L);
	close(L->relay_fd);
	L->relay_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* closed listener */
	assert_int_not_equal(steer_attach(&o, NULL, err, sizeof(err)), 0);
	assert_non_null(strstr(err, "relay is not listening"));
	assert_null(strchr(err, '\n'));
	steer_pin_path(pdir, sizeof(pdir), L->instance, NULL);
	assert_int_not_equal(stat(pdir, &st), 0);
	json_t *s = steer_status_json(L->instance);

	assert_false(json_is_true(json_object_get(s, "attached")));
	assert_int_equal(json_array_size(json_object_get(s, "links")), 0);
	json_decref(s);
}

/* Fail-open: the links live exactly as long as the handle. */
static void test_live_fail_open(void **state)
{
	struct live *L = *state;
	struct steer_opts o;
	struct steer_handle *h = NULL;
	char err[STEER_ERR_MAX];
	json_t *s;

	if (!L)
		skip();
	live_opts(L, &o);
	o.fail_open = true;
	if (steer_attach(&o, &h, err, sizeof(err)) != 0)
		fail_msg("attach --fail-open: %s", err);
	s = steer_status_json(L->instance);
	assert_string_equal(json_string_value(json_object_get(s, "mode")), "fail-open");
	assert_false(json_is_true(json_object_get(s, "pin_dir_present")));
	json_decref(s);
	steer_handle_close(h);
	s = steer_status_json(L->instance);
	assert_false(json_is_true(json_object_get(s, "attached")));
	json_decref(s);
}

/* A stale pin dir (as a crash between pin and link would leave) is cleaned by attach. */
static void test_live_stale_pins(void **state)
{
	struct live *L = *state;
	struct steer_opts o;
	char err[STEER_ERR_MAX], pdir[256], junk[300];
	json_t *s;
	int fd;

	if (!L)
		skip();
	steer_pin_path(pdir, sizeof(pdir), L->instance, NULL);
	live_opts(L, &o);
	if (steer_attach(&o, NULL, err, sizeof(err)) != 0)
		fail_msg("attach: %s", err);
	assert_int_equal(steer_detach(L->instance, err, sizeof(err)), 0);
	/* Leave a pin dir with a foreign file as a crash would, then attach again. */
	assert_int_equal(mkdir(pdir, 0700), 0);
	snprintf(junk, sizeof(junk), "%s/link_connect4", pdir);
	fd = open(junk, O_CREAT | O_WRONLY, 0600); /* bpffs may refuse regular files: fine */
	if (fd >= 0)
		close(fd);
	/* ...and an nft table of the instance, as a crashed TPROXY attach would. */
	struct steer_opts t = o;

	t.tproxy_port = 6999;
	assert_int_equal(steer_nft_apply(&t, err, sizeof(err)), 0);
	assert_true(steer_nft_present(L->instance));
	s = steer_status_json(L->instance);
	assert_int_equal(json_array_size(json_object_get(s, "leftovers")), 2);
	json_decref(s);
	if (steer_attach(&o, NULL, err, sizeof(err)) != 0)
		fail_msg("attach over a stale pin dir: %s", err);
	assert_false(steer_nft_present(L->instance));
	s = steer_status_json(L->instance);
	assert_true(json_is_true(json_object_get(s, "attached")));
	assert_int_equal(json_array_size(json_object_get(s, "leftovers")), 0);
	json_decref(s);
}

/* Someone else's connect4 program on the cgroup may steer the same ports: attach refuses,
 * names it, and attaches nothing. */
static void test_live_foreign_program(void **state)
{
	struct live *L = *state;
	const struct bpf_insn insns[] = {
		{.code = 0xb7, .dst_reg = 0, .imm = 1}, /* r0 = 1 */
		{.code = 0x95},                         /* exit */
	};
	LIBBPF_OPTS(bpf_prog_load_opts, lo, .expected_attach_type = BPF_CGROUP_INET4_CONNECT);
	struct steer_opts o;
	char err[STEER_ERR_MAX] = "";
	int pfd, cfd;
	json_t *s;

	if (!L)
		skip();
	pfd = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "other_lb", "GPL", insns, 2, &lo);
	assert_true(pfd >= 0);
	cfd = open(L->cgroup, O_RDONLY | O_DIRECTORY);
	assert_true(cfd >= 0);
	assert_int_equal(bpf_prog_attach(pfd, cfd, BPF_CGROUP_INET4_CONNECT, BPF_F_ALLOW_MULTI), 0);
	live_opts(L, &o);
	assert_int_equal(steer_attach(&o, NULL, err, sizeof(err)), -EBUSY);
	assert_non_null(strstr(err, "other_lb"));
	s = steer_status_json(L->instance);
	assert_false(json_is_true(json_object_get(s, "attached")));
	json_decref(s);
	assert_int_equal(bpf_prog_detach2(pfd, cfd, BPF_CGROUP_INET4_CONNECT), 0);
	close(cfd);
	close(pfd);
}

/* Non-blocking connect from src to dst:port; true when it completes within ms. */
static bool connects_within(const char *src, const char *dst, uint16_t port, int ms)
{
	struct sockaddr_in s = {.sin_family = AF_INET}, d = {.sin_family = AF_INET,
							    .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	struct pollfd p = {.fd = fd, .events = POLLOUT};
	int err = 0;
	socklen_t len = sizeof(err);
	bool ok;

	inet_pton(AF_INET, src, &s.sin_addr);
	inet_pton(AF_INET, dst, &d.sin_addr);
	if (bind(fd, (struct sockaddr *)&s, sizeof(s)) ||
	    (connect(fd, (struct sockaddr *)&d, sizeof(d)) && errno != EINPROGRESS)) {
		close(fd);
		return false;
	}
	ok = poll(&p, 1, ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
	     err == 0;
	close(fd);
	return ok;
}

/* In a child that joins the client namespace: the connect's outcome as the exit status. */
static bool remote_connects(const char *ns, const char *src, int ms)
{
	pid_t pid = fork();
	int status;

	if (pid == 0) {
		char path[128];
		int fd;

		snprintf(path, sizeof(path), "/run/netns/%s", ns);
		fd = open(path, O_RDONLY);
		if (fd < 0 || setns(fd, CLONE_NEWNET) != 0)
			_exit(2);
		_exit(connects_within(src, "10.203.0.1", 7, ms) ? 0 : 1);
	}
	return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void *gate_thread(void *arg)
{
	struct steer_gate *g = arg;
	struct pollfd p = {.fd = steer_gate_fd(g), .events = POLLIN};

	for (;;) {
		if (poll(&p, 1, 100) < 0)
			break;
		if (steer_gate_dispatch(g) < 0)
			break;
	}
	return NULL;
}

/* The whole gate against the kernel, in a private network namespace (gone with the child)
 * joined by a veth pair to a client namespace: the queue rule as attach installs it on this
 * host (steer_xtq_apply(): xt NFQUEUE, since this kernel has no nft queue), SYNs from the
 * network queued to the reader, verdicts by rate and deny list. */
static void test_live_gate(void **state)
{
	char ns[32], cmd[700];
	pid_t pid;
	int status;

	if (geteuid() != 0)
		skip();
	snprintf(ns, sizeof(ns), "pgwgate%d", (int)getpid());
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct steer_gate_opts go = {.queue_num = 4242, .rate_per_sec = 0.5, .burst = 2,
					     .max_sources = 64};
		struct steer_opts o;
		struct steer_gate *g;
		struct steer_gate_stats st;
		char err[STEER_ERR_MAX];
		pthread_t th;
		int lfd, one = 1, rc = 0;
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7)};

		if (unshare(CLONE_NEWNET) != 0)
			_exit(77);
		snprintf(cmd, sizeof(cmd),
			 "ip link set lo up && ip netns add %s && "
			 "ip link add pgwgA type veth peer name pgwgB netns %s && "
			 "ip addr add 10.203.0.1/29 dev pgwgA && ip link set pgwgA up && "
			 "ip -n %s addr add 10.203.0.2/29 dev pgwgB && "
			 "ip -n %s addr add 10.203.0.3/29 dev pgwgB && ip -n %s link set pgwgB up",
			 ns, ns, ns, ns, ns);
		if (system(cmd) != 0)
			_exit(77);
		steer_opts_init(&o);
		snprintf(o.instance, sizeof(o.instance), "pgw_gate_%d", (int)getpid());
		o.ports[o.nports++] = 7;
		o.gate = true;
		o.gate_queue = go.queue_num;
		if (steer_xtq_apply(&o, err, sizeof(err)) != 0) {
			fprintf(stderr, "%s\n", err);
			rc = 77;
			goto out;
		}
		if (cidr_parse("10.203.0.3/32", &go.deny[go.ndeny++]) ||
		    steer_gate_new(&go, &g) || steer_gate_open(g)) {
			rc = 2;
			goto out;
		}
		lfd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 16)) {
			rc = 3;
			goto out;
		}
		pthread_create(&th, NULL, gate_thread, g);
		/* Local clients (through lo) are never queued. */
		for (int i = 0; i < 4 && !rc; i++)
			if (!connects_within("10.203.0.1", "10.203.0.1", 7, 2000))
				rc = 4;
		/* From the network: a burst of two, then over the rate; a denied source never. */
		if (!rc && (!remote_connects(ns, "10.203.0.2", 3000) ||
			    !remote_connects(ns, "10.203.0.2", 3000)))
			rc = 5;
		if (!rc && remote_connects(ns, "10.203.0.2", 500))
			rc = 6;
		if (!rc && remote_connects(ns, "10.203.0.3", 500))
			rc = 7;
		steer_gate_stats_get(g, &st);
		if (!rc && (st.accepted != 2 || st.denied_rate != 1 || st.denied_list != 1))
			rc = 8;
		/* Detach's part: the chain and the jump go, the table stays usable. */
		if (!rc && (!steer_xtq_present(o.instance) ||
			    steer_xtq_delete(o.instance, err, sizeof(err)) ||
			    steer_xtq_present(o.instance)))
			rc = 9;
		if (!rc && !remote_connects(ns, "10.203.0.3", 2000))
			rc = 10;
out:
		snprintf(cmd, sizeof(cmd), "ip netns del %s", ns);
		if (system(cmd) != 0)
			rc = rc ? rc : 11;
		_exit(rc);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	/* Whatever happened in the child, the client namespace must not outlive it. */
	snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", ns);
	if (system(cmd) == 0)
		print_message("removed a left-over namespace %s\n", ns);
	assert_true(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77) {
		print_message("skip: no private netns, veth or legacy iptables here\n");
		skip();
	}
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* A client in the cgroup dials the protected port; 0 when it connected, else its errno. */
static int cgroup_connect_errno(struct live *L)
{
	int pfd[2], err = -1;
	pid_t pid;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	if (pid == 0) {
		char path[600], pidtxt[32];
		struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(L->protected_port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		int fd, cg, e = 0;

		snprintf(path, sizeof(path), "%s/cgroup.procs", L->cgroup);
		cg = open(path, O_WRONLY);
		snprintf(pidtxt, sizeof(pidtxt), "%d", (int)getpid());
		if (cg < 0 || write(cg, pidtxt, strlen(pidtxt)) < 0)
			_exit(10);
		fd = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0)
			e = errno;
		if (write(pfd[1], &e, sizeof(e)) != sizeof(e))
			_exit(11);
		_exit(0);
	}
	close(pfd[1]);
	assert_int_equal(read(pfd[0], &err, sizeof(err)), sizeof(err));
	close(pfd[0]);
	waitpid(pid, NULL, 0);
	return err;
}

/*
 * The relay-port guard. Steered clients reach the registered listener; once it is gone
 * (closed, as when pgwardend is killed) they are refused at connect() with ECONNREFUSED,
 * and a stranger who binds the relay's port receives nothing: the hooks send no connection
 * to a socket that was never registered.
 */
static void test_live_relay_takeover(void **state)
{
	struct live *L = *state;
	struct steer_opts o;
	char err[STEER_ERR_MAX];
	struct addr peer;
	json_t *st;
	int fd, one = 1;

	if (!L)
		skip();
	if (!steer_probe_sk_lookup())
		skip();
	live_opts(L, &o);
	if (steer_attach(&o, NULL, err, sizeof(err)) != 0)
		fail_msg("attach: %s", err);
	assert_int_equal(cgroup_connect_errno(L), 0);
	peer.len = sizeof(peer.ss);
	fd = accept(L->relay_fd, &peer.ss.sa, &peer.len);
	assert_true(fd >= 0);
	close(fd);

	/* pgwardend dies: its listener closes, its registration with it. */
	live_registrar_stop(L);
	close(L->relay_fd);
	L->relay_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_int_equal(setsockopt(L->relay_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
	assert_int_equal(bind(L->relay_fd, &L->relay.ss.sa, L->relay.len), 0);
	assert_int_equal(listen(L->relay_fd, 8), 0); /* the stranger, on the relay's port */
	assert_int_equal(cgroup_connect_errno(L), ECONNREFUSED);
	usleep(100 * 1000);
	peer.len = sizeof(peer.ss);
	assert_int_equal(accept(L->relay_fd, &peer.ss.sa, &peer.len), -1);
	assert_int_equal(errno, EAGAIN);
	st = steer_status_json(L->instance);
	assert_true(json_integer_value(json_object_get(json_object_get(st, "counters"),
						       "refused_relay_down")) >= 1);
	assert_int_equal(json_array_size(json_object_get(st, "relay_registered")), 0);
	json_decref(st);
}

/*
 * The server's socket in a directory only its owner may search: a client uid that cannot
 * enter it still reaches it through steer_upstream_connect_unix(), which looks the path up
 * with the thread's own (root) file-system ids, while the server reads the client's uid
 * and gid from SO_PEERCRED. A direct connect() by that uid is refused, as it must be.
 */
static void test_unix_connect_as_client_through_private_dir(void **state)
{
	static const struct session_process nobody = {.known = true, .uid = 65534, .gid = 65534};
	char dir[] = "/tmp/pgw-unit-private-XXXXXX", path[96];
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	struct session s;
	struct ucred cr;
	socklen_t len = sizeof(cr);
	const char *why = NULL;
	int lfd, cfd, afd, status;
	pid_t pid;

	(void)state;
	if (geteuid() != 0)
		skip();
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chown(dir, 4242, 4242), 0);
	assert_int_equal(chmod(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/.s.PGSQL.5432", dir);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(chmod(path, 0777), 0);
	assert_int_equal(listen(lfd, 4), 0);

	/* Directly, nobody is refused at the directory. */
	pid = fork();
	if (pid == 0) {
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);

		if (setgid(65534) || setuid(65534))
			_exit(2);
		_exit(connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1 && errno == EACCES ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

	/* Through the relay's connect, as nobody. */
	memset(&s, 0, sizeof(s));
	assert_int_equal(session_set_process(&s, &nobody), 0);
	cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(steer_upstream_connect_unix(cfd, path, &s, true, &why), 0);
	afd = accept(lfd, NULL, NULL);
	assert_true(afd >= 0);
	assert_int_equal(getsockopt(afd, SOL_SOCKET, SO_PEERCRED, &cr, &len), 0);
	assert_int_equal(cr.uid, 65534);
	assert_int_equal(cr.gid, 65534);
	/* The thread is itself again, file-system ids included. */
	assert_int_equal(geteuid(), 0);
	assert_int_equal(syscall(SYS_setfsuid, -1), 0);
	assert_int_equal(syscall(SYS_setfsgid, -1), 0);
	close(afd);
	close(cfd);

	/* Without transparent_source the server sees pgwardend. */
	cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(steer_upstream_connect_unix(cfd, path, &s, false, &why), 1);
	afd = accept(lfd, NULL, NULL);
	len = sizeof(cr);
	assert_int_equal(getsockopt(afd, SOL_SOCKET, SO_PEERCRED, &cr, &len), 0);
	assert_int_equal(cr.uid, 0);
	close(afd);
	close(cfd);
	close(lfd);
	unlink(path);
	rmdir(dir);
	session_release(&s);
}

/* A server socket every local user can reach is "exposed"; in a private directory it is
 * not; the relay's own socket never is. Attach refuses --unix-socket on an exposed one. */
static void test_unix_exposed(void **state)
{
	char dir[] = "/tmp/pgw-unit-exposed-XXXXXX", path[96], relay[96];
	char out[4][PGW_UNIX_PATH_MAX], err[STEER_ERR_MAX] = "";
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	uint16_t port = (uint16_t)(40000 + getpid() % 20000);
	struct steer_opts o;
	int lfd;

	(void)state;
	if (geteuid() != 0)
		skip();
	assert_non_null(mkdtemp(dir));
	assert_int_equal(chmod(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/.s.PGSQL.%u", dir, port);
	snprintf(relay, sizeof(relay), "%s/relay", dir);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(chmod(path, 0777), 0);
	assert_int_equal(listen(lfd, 4), 0);

	assert_int_equal(steer_unix_exposed(&port, 1, NULL, NULL, 0, out, 4), 1);
	assert_string_equal(out[0], path);
	assert_int_equal(steer_unix_exposed(&port, 1, path, NULL, 0, out, 4), 0); /* the relay's */
	/* The server's sockets are its user's: a look-alike of another user's is ignored. */
	{
		uid_t server = 4242, root = 0;

		assert_int_equal(steer_unix_exposed(&port, 1, NULL, &server, 1, out, 4), 0);
		assert_int_equal(steer_unix_exposed(&port, 1, NULL, &root, 1, out, 4), 1);
	}
	steer_opts_init(&o);
	o.ports[o.nports++] = port;
	o.unix_paths[o.nunix++] = path;
	o.unix_relay = relay;
	assert_int_equal(steer_unix_check(&o, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "reachable by every local user"));

	assert_int_equal(chmod(dir, 0700), 0); /* now out of others' reach */
	assert_int_equal(steer_unix_exposed(&port, 1, NULL, NULL, 0, out, 4), 0);
	/* ...but the relay would sit in a directory others may write: refused too. */
	assert_int_equal(chmod(dir, 01777), 0);
	assert_int_equal(steer_unix_check(&o, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "writable by every local user"));
	close(lfd);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_find_mount_cases),
		cmocka_unit_test(test_find_mount_too_long),
		cmocka_unit_test(test_port_cases),
		cmocka_unit_test(test_ip_cases),
		cmocka_unit_test(test_nft_ruleset),
		cmocka_unit_test(test_gate_reconfigure),
		cmocka_unit_test(test_gate_decisions),
		cmocka_unit_test(test_live_gate),
		cmocka_unit_test_setup_teardown(test_live_steer_and_lookup, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_relay_down, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_fail_open, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_stale_pins, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_foreign_program, live_setup, live_teardown),
		cmocka_unit_test_setup_teardown(test_live_relay_takeover, live_setup, live_teardown),
		cmocka_unit_test(test_unix_connect_as_client_through_private_dir),
		cmocka_unit_test(test_unix_exposed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
