/*
 * steer_test.c: the test a vm-test guest runs (started by vm-tests/init as PID 1's child).
 *
 * It drives pgwarden's own steering code (userspace/steer, which loads bpf/steer.bpf.c
 * through its skeleton and programs nftables and policy routing) on whatever stock kernel
 * the guest booted, acting as the relay, and proves:
 *   attach       steer_attach() (fail-closed, pinned): the object loads and passes this
 *                kernel's verifier, every hook attaches to a cgroup v2 the test made, the
 *                nft table and fwmark routing are installed through libnftables / libnl;
 *   connect_unix_probe
 *                the Unix-socket hook is attached exactly where the kernel has it (6.7+),
 *                as the kernel itself reports for the cgroup;
 *   steer        a client in the cgroup that dials the protected address reaches the
 *                relay's listener instead, and bytes flow;
 *   peername     that client's getpeername() reports the address it dialled;
 *   origin       the relay finds the connection's record by 4-tuple (sockops re-keyed it)
 *                with the dialled address and the client's pid and comm;
 *   ipv6         steer, peername and origin again for an IPv6 client and relay;
 *   unspec       a client that dials 0.0.0.0 or :: (which the kernel routes to loopback)
 *                is steered like one dialling the protected 127.0.0.1 / ::1, and the relay
 *                learns the address it really reached;
 *   relay_mark   a socket carrying the relay's SO_MARK (its upstream connections) that
 *                dials the protected address from inside the cgroup is not redirected: the
 *                relay can never loop into itself;
 *   unix         (6.7+) a client that connects to the protected Unix socket path, where
 *                nothing listens, reaches the relay's Unix listener;
 *   tproxy       a client in another network namespace, across a veth pair, that dials the
 *                protected address (not an address of this guest) is delivered by the nft
 *                TPROXY rule to the relay's IP_TRANSPARENT listener, and the relay sees the
 *                dialled address and the client's real address;
 *   tproxy6      the same over IPv6 (the table's "tproxy ip6" rule, IPv6 policy routing);
 *   gate         the admission gate is on (fail-closed) with its nft queue rule, not the xt
 *                fallback, and a reader (steer_gate, libnetfilter_queue) decides every new
 *                remote SYN: the tproxy clients above only got through because it accepted
 *                them, and a client from a denied source address gets no connection;
 *   guard        the relay-port guard: sk_lookup is attached to the network namespace,
 *                and once the relay's registered listener is closed (pgwardend killed), a
 *                steered client is refused with ECONNREFUSED and a stranger listening on
 *                the relay's port receives nothing;
 *   detach       steer_detach() leaves no hook on the cgroup.
 *
 * It prints diagnostics ("vm-test: ...", pgwarden's own log lines) and then exactly one
 * result line, which the host parses:
 *   PGW-VMTEST-RESULT: PASS|FAIL kernel=<release> connect_unix=loaded|not-loaded <check>=...
 * The exit status is 0 only on PASS. A guest that prints no result line is a failure too.
 *
 * Usage (from init, which made the namespace, the veth pair and the client's addresses; the
 * remote client also has DENIED_ADDR, which the gate's deny list names):
 *   steer_test NETNS_PATH CLIENT_ADDR CLIENT_ADDR6 DENIED_ADDR
 */
#include "base/addr.h"
#include "base/log.h"
#include "session/session.h"
#include "steer/steer.h"
#include "steer/steer_gate.h"
#include "steer/steer_origin.h"
#include "steer/steer_register.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

/* The protected PostgreSQL address (TEST-NET-1: no interface of the guest has it, so only
 * steering can make a connection to it succeed) and the relay's listeners. */
#define PROTECTED_ADDR "192.0.2.10"
#define PROTECTED_ADDR6 "2001:db8::10"
#define PROTECTED_PORT 5432
#define RELAY_ADDR "127.0.0.1"
#define RELAY_ADDR6 "::1"
#define RELAY_PORT 15432
#define TPROXY_PORT 15433
#define GATE_QUEUE 7
/* How long a client from a denied source waits for a connection that must not come. */
#define GATE_DENIED_WAIT_MS 3000
#define UNIX_PROTECTED "/run/postgresql/.s.PGSQL.5432"
#define UNIX_RELAY "/run/pgw-vmtest/relay.sock"
#define TEST_INSTANCE "pgw-vmtest"
#define TEST_CGROUP "pgw-vmtest"
/* TCG under load is slow: generous, yet five of them (every check timing out) still end
 * well inside the host's 120 s boot timeout, so a failing guest still reports. */
#define IO_TIMEOUT_MS 10000
/* attach --origin-max of the run: small, so that origin_full can fill it. */
#define VM_ORIGIN_MAX 4
/* BPF_CGROUP_UNIX_CONNECT (uapi, Linux 6.7): newer than libbpf 1.1's headers. */
#define ATTACH_CGROUP_UNIX_CONNECT 49

enum check {
	CHECK_ATTACH = 0,
	CHECK_CONNECT_UNIX,
	CHECK_STEER,
	CHECK_PEERNAME,
	CHECK_ORIGIN,
	CHECK_IPV6,
	CHECK_UNSPEC,
	CHECK_RELAY_MARK,
	CHECK_UNIX,
	CHECK_TPROXY,
	CHECK_TPROXY6,
	CHECK_GATE,
	CHECK_GUARD,
	CHECK_ORIGIN_FULL,
	CHECK_DETACH,
	CHECK_COUNT,
};

static const char *const check_names[CHECK_COUNT] = {
	"attach", "connect_unix_probe", "steer", "peername", "origin", "ipv6", "unspec",
	"relay_mark", "unix", "tproxy", "tproxy6",
	"gate", "guard", "origin_full", "detach",
};

/* 0 = not run, 1 = ok, -1 = failed. A check that does not apply to this kernel is marked
 * skipped and does not count. */
static int check_state[CHECK_COUNT];
static bool check_skipped[CHECK_COUNT];

static struct utsname uts;
static const char *connect_unix_state = "unknown";
static bool reported;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fputs("vm-test: ", stdout);
	vfprintf(stdout, fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
	fflush(stdout);
}

/*
 * Prints the result line (once) and returns whether every applicable check passed. Also
 * registered with atexit(): a library that calls exit() in the middle of the test (libnftables
 * does when the kernel has no nf_tables netlink) still leaves a FAIL line naming how far the
 * test got, instead of silence.
 */
static bool report(void)
{
	bool pass = true;

	if (reported)
		return false;
	reported = true;
	for (int i = 0; i < CHECK_COUNT; i++)
		if (check_state[i] != 1 && !check_skipped[i])
			pass = false;
	printf("PGW-VMTEST-RESULT: %s kernel=%s connect_unix=%s", pass ? "PASS" : "FAIL",
	       uts.release, connect_unix_state);
	for (int i = 0; i < CHECK_COUNT; i++)
		printf(" %s=%s", check_names[i],
		       check_skipped[i] ? "n/a" :
		       check_state[i] == 1 ? "ok" : check_state[i] < 0 ? "FAIL" : "not-run");
	printf("\n");
	fflush(stdout);
	return pass;
}

static void report_at_exit(void)
{
	if (!reported)
		note("exit() called before the test finished");
	report();
}

/* Records the outcome of a check; a failed check stays failed. Returns ok. */
static bool check_set(enum check c, bool ok)
{
	if (check_state[c] >= 0)
		check_state[c] = ok ? 1 : -1;
	return ok;
}

static bool kernel_at_least(const char *release, int major, int minor)
{
	int ma = 0, mi = 0;

	if (sscanf(release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

static void addr_set4(struct addr *a, const char *ip, int port)
{
	memset(a, 0, sizeof(*a));
	a->ss.in4.sin_family = AF_INET;
	a->ss.in4.sin_port = htons(port);
	inet_pton(AF_INET, ip, &a->ss.in4.sin_addr);
	a->len = sizeof(a->ss.in4);
}

static void addr_set6(struct addr *a, const char *ip, int port)
{
	memset(a, 0, sizeof(*a));
	a->ss.in6.sin6_family = AF_INET6;
	a->ss.in6.sin6_port = htons(port);
	inet_pton(AF_INET6, ip, &a->ss.in6.sin6_addr);
	a->len = sizeof(a->ss.in6);
}

static const char *addr_str(const struct addr *a, char *buf)
{
	return addr_format(&a->ss.sa, buf, ADDR_STRLEN);
}

/* A listening socket bound to sa; transparent sets IP(V6)_TRANSPARENT (the TPROXY
 * target). IPv6 sockets are v6-only, so [::]:P and 0.0.0.0:P can both be bound. */
static int listen_on(const struct sockaddr *sa, socklen_t len, bool transparent)
{
	bool v6 = sa->sa_family == AF_INET6;
	int one = 1;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if ((sa->sa_family != AF_UNIX &&
	     setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0) ||
	    (v6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    (transparent && !v6 && setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) < 0) ||
	    (transparent && v6 &&
	     setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof(one)) < 0) ||
	    bind(fd, sa, len) < 0 || listen(fd, 8) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Accepts one connection within IO_TIMEOUT_MS into peer. Returns the fd or -errno. */
static int accept_within(int lfd, struct addr *peer)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int n = poll(&p, 1, IO_TIMEOUT_MS);
	int fd;

	if (n == 0)
		return -ETIMEDOUT;
	if (n < 0)
		return -errno;
	memset(peer, 0, sizeof(*peer));
	peer->len = sizeof(peer->ss);
	fd = accept4(lfd, &peer->ss.sa, &peer->len, SOCK_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

/* Reads one byte within IO_TIMEOUT_MS and checks it is the expected one. */
static bool read_byte(int fd, char want)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char got;

	return poll(&p, 1, IO_TIMEOUT_MS) == 1 && read(fd, &got, 1) == 1 && got == want;
}

/*
 * Client side, in a forked child: connect to sa, check getpeername() against want_peer
 * (when not NULL), send one byte, stay until the relay closes. Exit status 0 = ok,
 * 1 = connect or I/O failed, 2 = getpeername mismatch.
 */
static void client_run(const struct sockaddr *sa, socklen_t len, const struct addr *want_peer)
{
	struct addr peer;
	char a[ADDR_STRLEN], b[ADDR_STRLEN];
	int fd;

	alarm(IO_TIMEOUT_MS / 1000 + 5);
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, sa, len) < 0) {
		note("client: connect: %s", strerror(errno));
		_exit(1);
	}
	if (want_peer) {
		memset(&peer, 0, sizeof(peer));
		peer.len = sizeof(peer.ss);
		if (getpeername(fd, &peer.ss.sa, &peer.len) < 0) {
			note("client: getpeername: %s", strerror(errno));
			_exit(2);
		}
		if (!addr_equal(&peer.ss.sa, &want_peer->ss.sa)) {
			note("client: getpeername says %s, dialled %s", addr_str(&peer, a),
			     addr_str(want_peer, b));
			_exit(2);
		}
	}
	if (write(fd, "x", 1) != 1) {
		note("client: write: %s", strerror(errno));
		_exit(1);
	}
	if (read(fd, a, 1) < 0)
		_exit(1);
	_exit(0);
}

/* Waits for a client child; returns its exit status, or -1 if it died otherwise. */
static int client_wait(pid_t pid)
{
	int status;

	if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* Moves the calling process into the cgroup directory dir. 0 or -errno. */
static int cgroup_join(const char *dir)
{
	char path[600], pid[32];
	int fd, n, rc = 0;

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = snprintf(pid, sizeof(pid), "%d", (int)getpid());
	if (write(fd, pid, n) != n)
		rc = -errno;
	close(fd);
	return rc;
}

/* Forks a client that joins the cgroup (when cgdir is set) or the network namespace (when
 * netns is set) and runs client_run(). */
static pid_t client_start(const char *cgdir, const char *netns, const struct sockaddr *sa,
			  socklen_t len, const struct addr *want_peer)
{
	pid_t pid = fork();
	int rc, fd;

	if (pid != 0)
		return pid;
	if (cgdir && (rc = cgroup_join(cgdir)) < 0) {
		note("client: join %s: %s", cgdir, strerror(-rc));
		_exit(1);
	}
	if (netns) {
		fd = open(netns, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || setns(fd, CLONE_NEWNET) < 0) {
			note("client: enter %s: %s", netns, strerror(errno));
			_exit(1);
		}
	}
	client_run(sa, len, want_peer);
	return -1; /* not reached */
}

/* How many programs of this attach type the kernel has on the cgroup; -errno if it cannot
 * say (kernels without the attach type answer EINVAL). */
static int cgroup_prog_count(int cg_fd, enum bpf_attach_type type)
{
	__u32 ids[16], cnt = 16;

	if (bpf_prog_query(cg_fd, type, 0, NULL, ids, &cnt) < 0)
		return -errno;
	return (int)cnt;
}

struct relay {
	struct steer_origin *origin;
	struct steer_registrar *registrar;
	int tcp_fd, tcp6_fd, tproxy_fd, tproxy6_fd, unix_fd;
	struct addr tcp, tcp6, tproxy, tproxy6;
	char cgdir[600];
	pid_t client_pid;
};

struct steer_outcome {
	bool steered;  /* the connection reached the relay listener and a byte arrived */
	bool peername; /* the client saw the dialled address */
	bool origin;   /* the relay found the kernel's record of it */
};

/* Local client in the cgroup dials `dialled` → the relay's listener lfd (bound to listen);
 * the kernel's record must name `reached` (what the kernel routes `dialled` to). */
static struct steer_outcome steer_reach(struct relay *r, const struct addr *dialled,
					const struct addr *reached, int lfd,
					const struct addr *listen);

static struct steer_outcome steer_one(struct relay *r, const struct addr *dialled, int lfd,
				      const struct addr *listen)
{
	return steer_reach(r, dialled, dialled, lfd, listen);
}

static struct steer_outcome steer_reach(struct relay *r, const struct addr *dialled,
					const struct addr *reached, int lfd,
					const struct addr *listen)
{
	struct steer_outcome out = { false, false, false };
	struct addr peer, local;
	struct session s;
	const struct session_process *proc;
	char a[ADDR_STRLEN], b[ADDR_STRLEN];
	pid_t pid;
	int fd, rc;

	pid = client_start(r->cgdir, NULL, &dialled->ss.sa, dialled->len, reached);
	fd = accept_within(lfd, &peer);
	if (fd < 0) {
		note("steer: nothing reached the relay from a client dialling %s: %s",
		     addr_str(dialled, a), strerror(-fd));
	} else {
		out.steered = read_byte(fd, 'x');
		memset(&local, 0, sizeof(local));
		local.len = sizeof(local.ss);
		memset(&s, 0, sizeof(s));
		rc = getsockname(fd, &local.ss.sa, &local.len) < 0 ? -errno :
		     steer_origin_lookup(r->origin, fd, listen, &peer, &local, &s);
		proc = session_process(&s);
		if (rc < 0)
			note("origin: lookup: %s", strerror(-rc));
		else if (s.route != SESSION_ROUTE_STEERED || !addr_equal(&s.dialled.ss.sa, &reached->ss.sa) ||
			 !proc->known || proc->tgid != (uint32_t)pid ||
			 strcmp(proc->comm, "steer_test") != 0)
			note("origin: route %s, dialled %s, process %s tgid %u comm '%s' (client %d "
			     "dialled %s)", session_route_to_str(s.route), addr_str(&s.dialled, b),
			     proc->known ? "known" : "unknown", proc->tgid, proc->comm,
			     (int)pid, addr_str(reached, a));
		else
			out.origin = true;
		session_release(&s); /* the process record the lookup allocated */
		close(fd); /* lets the client finish */
	}
	rc = client_wait(pid);
	out.peername = rc == 0;
	if (rc != 0 && rc != 2)
		out.steered = false;
	return out;
}

static void test_steer(struct relay *r)
{
	struct steer_outcome v4, v6;
	struct addr d4, d6;

	addr_set4(&d4, PROTECTED_ADDR, PROTECTED_PORT);
	v4 = steer_one(r, &d4, r->tcp_fd, &r->tcp);
	check_set(CHECK_STEER, v4.steered);
	check_set(CHECK_PEERNAME, v4.peername);
	check_set(CHECK_ORIGIN, v4.origin);
	addr_set6(&d6, PROTECTED_ADDR6, PROTECTED_PORT);
	v6 = steer_one(r, &d6, r->tcp6_fd, &r->tcp6);
	check_set(CHECK_IPV6, v6.steered && v6.peername && v6.origin);
}

/* 0.0.0.0 and :: reach loopback: steered like the protected 127.0.0.1 and ::1 they reach. */
static void test_unspec(struct relay *r)
{
	struct addr any4, lo4, any6, lo6;
	struct steer_outcome v4, v6;

	addr_set4(&any4, "0.0.0.0", PROTECTED_PORT);
	addr_set4(&lo4, "127.0.0.1", PROTECTED_PORT);
	addr_set6(&any6, "::", PROTECTED_PORT);
	addr_set6(&lo6, "::1", PROTECTED_PORT);
	v4 = steer_reach(r, &any4, &lo4, r->tcp_fd, &r->tcp);
	v6 = steer_reach(r, &any6, &lo6, r->tcp6_fd, &r->tcp6);
	check_set(CHECK_UNSPEC, v4.steered && v4.peername && v4.origin && v6.steered &&
				v6.peername && v6.origin);
}

/*
 * The relay-port guard, after everything else: the relay's registered listener closes (as
 * when pgwardend is killed) and a stranger binds its port. A steered client must be
 * refused with ECONNREFUSED, and the stranger must have nothing to accept.
 */
static void test_guard(struct relay *r)
{
	struct addr dialled;
	json_t *st = steer_status_json(TEST_INSTANCE);
	json_t *links = json_object_get(st, "links"), *l;
	bool lookup = false;
	size_t i;
	pid_t pid;
	int rc, stranger;

	json_array_foreach(links, i, l) {
		const char *hook = json_string_value(json_object_get(l, "hook"));

		lookup |= hook && strcmp(hook, "sk_lookup") == 0;
	}
	json_decref(st);
	if (!check_set(CHECK_GUARD, lookup))
		note("guard: no sk_lookup link in the instance's status");
	close(r->tcp_fd);
	r->tcp_fd = -1;
	stranger = listen_on(&r->tcp.ss.sa, r->tcp.len, false);
	if (stranger < 0) {
		note("guard: the stranger cannot bind the relay's port: %s", strerror(-stranger));
		check_set(CHECK_GUARD, false);
		return;
	}
	addr_set4(&dialled, PROTECTED_ADDR, PROTECTED_PORT);
	pid = fork();
	if (pid == 0) {
		int fd;

		alarm(IO_TIMEOUT_MS / 1000 + 5);
		if (cgroup_join(r->cgdir) < 0)
			_exit(1);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(fd, &dialled.ss.sa, dialled.len) == 0) {
			note("guard: a steered client connected with no relay registered");
			_exit(3);
		}
		_exit(errno == ECONNREFUSED ? 0 : (note("guard: connect: %s", strerror(errno)), 1));
	}
	rc = client_wait(pid);
	{
		struct pollfd p = { .fd = stranger, .events = POLLIN };

		if (poll(&p, 1, 500) != 0) {
			note("guard: the stranger on the relay's port received a connection");
			rc = -1;
		}
	}
	close(stranger);
	check_set(CHECK_GUARD, rc == 0);
}

/*
 * Fail closed with the origin map full (the attach's origin_max is VM_ORIGIN_MAX): while the
 * relay does not accept, VM_ORIGIN_MAX steered connects complete and fill the map; the next
 * one is refused at once (ECONNREFUSED: sk_lookup drops its SYN), never reaching the relay
 * or the protected address. Accepting then finds every queued connection with its record
 * (and consumes it, emptying the map for what follows). The client holds its connections
 * until then: a client socket that closes takes its record with it (the state callback),
 * and the relay would rightly refuse what it then accepts.
 */
static void test_origin_full(struct relay *r)
{
	struct addr dialled, peer, local;
	struct session s;
	int rc, found = 0, fd, hold[2], done[2];
	char c;
	pid_t pid;

	addr_set4(&dialled, PROTECTED_ADDR, PROTECTED_PORT);
	if (pipe2(hold, O_CLOEXEC) < 0 || pipe2(done, O_CLOEXEC) < 0) {
		note("origin_full: pipe: %s", strerror(errno));
		check_set(CHECK_ORIGIN_FULL, false);
		return;
	}
	pid = fork();
	if (pid == 0) {
		close(hold[1]);
		close(done[0]);
		alarm(2 * IO_TIMEOUT_MS / 1000 + 5);
		if (cgroup_join(r->cgdir) < 0)
			_exit(1);
		for (int i = 0; i < VM_ORIGIN_MAX; i++) {
			fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
			if (connect(fd, &dialled.ss.sa, dialled.len) != 0) {
				note("origin_full: steered connect %d of %d: %s", i + 1, VM_ORIGIN_MAX,
				     strerror(errno));
				_exit(2);
			}
		}
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (connect(fd, &dialled.ss.sa, dialled.len) == 0) {
			note("origin_full: a steered connect succeeded with the origin map full");
			_exit(3);
		}
		if (errno != ECONNREFUSED) {
			note("origin_full: connect with the map full: %s, not ECONNREFUSED",
			     strerror(errno));
			_exit(4);
		}
		/* Done; hold the connections until the relay has accepted them (EOF on hold). */
		(void)!write(done[1], "d", 1);
		(void)!read(hold[0], &c, 1);
		_exit(0);
	}
	close(hold[0]);
	close(done[1]);
	/* Accept nothing before the client is through: an accept frees a record. */
	(void)!read(done[0], &c, 1);
	close(done[0]);
	for (;;) {
		struct pollfd p = { .fd = r->tcp_fd, .events = POLLIN };

		if (poll(&p, 1, found < VM_ORIGIN_MAX ? IO_TIMEOUT_MS : 300) <= 0)
			break;
		fd = accept_within(r->tcp_fd, &peer);
		if (fd < 0)
			break;
		memset(&local, 0, sizeof(local));
		local.len = sizeof(local.ss);
		memset(&s, 0, sizeof(s));
		if (getsockname(fd, &local.ss.sa, &local.len) == 0 &&
		    steer_origin_lookup(r->origin, fd, &r->tcp, &peer, &local, &s) == 0 &&
		    s.route == SESSION_ROUTE_STEERED)
			found++;
		else
			note("origin_full: a queued connection without its record (route %s)",
			     session_route_to_str(s.route));
		session_release(&s);
		close(fd);
	}
	close(hold[1]);
	rc = client_wait(pid);
	if (found != VM_ORIGIN_MAX)
		note("origin_full: %d of %d queued connections had their record", found,
		     VM_ORIGIN_MAX);
	check_set(CHECK_ORIGIN_FULL, rc == 0 && found == VM_ORIGIN_MAX);
}

/*
 * A process in the cgroup whose socket carries the relay mark dials the protected address.
 * Not redirected, it goes where routing sends it: nowhere (the guest has no route to
 * TEST-NET-1), so connect() fails at once. Redirected, it would reach the relay.
 */
static void test_relay_mark(struct relay *r, uint32_t mark)
{
	struct pollfd p = { .fd = r->tcp_fd, .events = POLLIN };
	struct addr dialled;
	pid_t pid;
	int fd, rc;

	addr_set4(&dialled, PROTECTED_ADDR, PROTECTED_PORT);
	pid = fork();
	if (pid == 0) {
		alarm(IO_TIMEOUT_MS / 1000 + 5);
		rc = cgroup_join(r->cgdir);
		fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (rc < 0 || fd < 0 || setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(mark)) < 0) {
			note("relay_mark: client setup: %s", strerror(rc < 0 ? -rc : errno));
			_exit(1);
		}
		if (connect(fd, &dialled.ss.sa, dialled.len) == 0) {
			note("relay_mark: a socket with the relay mark was steered");
			_exit(3);
		}
		_exit(errno == ENETUNREACH ? 0 : (note("relay_mark: connect: %s", strerror(errno)), 1));
	}
	rc = client_wait(pid);
	/* Whatever the client saw, nothing may be waiting on the relay's listener. */
	if (poll(&p, 1, 0) != 0) {
		note("relay_mark: the relay has a connection it should not");
		rc = -1;
	}
	check_set(CHECK_RELAY_MARK, rc == 0);
}

/* Local client in the cgroup → protected Unix path (nothing listens there) → relay. */
static void test_unix(struct relay *r)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct addr peer;
	pid_t pid;
	int fd;

	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", UNIX_PROTECTED);
	pid = client_start(r->cgdir, NULL, (struct sockaddr *)&sun, sizeof(sun), NULL);
	fd = accept_within(r->unix_fd, &peer);
	if (fd < 0)
		note("unix: nothing reached the relay from a client of %s: %s", UNIX_PROTECTED,
		     strerror(-fd));
	check_set(CHECK_UNIX, fd >= 0 && read_byte(fd, 'x'));
	if (fd >= 0)
		close(fd);
	if (client_wait(pid) != 0)
		check_set(CHECK_UNIX, false);
}

/* Remote client in netns dials `dialled` over the veth → TPROXY → the relay's transparent
 * listener lfd (bound to listen). The relay must see the dialled address and the client's
 * own address (client_ip, port ignored). */
static bool tproxy_one(struct relay *r, const char *netns, const struct addr *dialled,
		       const struct addr *client_ip, int lfd, const struct addr *listen)
{
	struct addr peer, local, peer_ip;
	struct session s;
	char a[ADDR_STRLEN], b[ADDR_STRLEN], c[ADDR_STRLEN];
	bool ok;
	pid_t pid;
	int fd;

	pid = client_start(NULL, netns, &dialled->ss.sa, dialled->len, NULL);
	fd = accept_within(lfd, &peer);
	if (fd < 0) {
		note("tproxy: nothing delivered for %s: %s", addr_str(dialled, a), strerror(-fd));
		ok = false;
	} else {
		memset(&local, 0, sizeof(local));
		local.len = sizeof(local.ss);
		memset(&s, 0, sizeof(s));
		peer_ip = peer;
		if (peer_ip.ss.sa.sa_family == AF_INET6)
			peer_ip.ss.in6.sin6_port = 0;
		else
			peer_ip.ss.in4.sin_port = 0;
		ok = getsockname(fd, &local.ss.sa, &local.len) == 0 &&
		     steer_origin_lookup(r->origin, fd, listen, &peer, &local, &s) == 0 &&
		     s.route == SESSION_ROUTE_TPROXY && addr_equal(&s.dialled.ss.sa, &dialled->ss.sa) &&
		     addr_equal(&peer_ip.ss.sa, &client_ip->ss.sa);
		if (!ok)
			note("tproxy: route %s, dialled %s, client %s (expected %s from %s)",
			     session_route_to_str(s.route), addr_str(&s.dialled, a), addr_str(&peer, b),
			     addr_str(dialled, c), addr_str(client_ip, a));
		session_release(&s);
		ok = read_byte(fd, 'x') && ok;
		close(fd);
	}
	if (client_wait(pid) != 0)
		ok = false;
	return ok;
}

static void test_tproxy(struct relay *r, const char *netns, const char *client4,
			const char *client6)
{
	struct addr dialled, client;

	addr_set4(&dialled, PROTECTED_ADDR, PROTECTED_PORT);
	addr_set4(&client, client4, 0);
	check_set(CHECK_TPROXY, tproxy_one(r, netns, &dialled, &client, r->tproxy_fd, &r->tproxy));
	addr_set6(&dialled, PROTECTED_ADDR6, PROTECTED_PORT);
	addr_set6(&client, client6, 0);
	check_set(CHECK_TPROXY6,
		  tproxy_one(r, netns, &dialled, &client, r->tproxy6_fd, &r->tproxy6));
}

/*
 * The admission gate's reader, as pgwardend runs it, in a child process so it answers
 * queued SYNs while this process blocks in accept(). Its deny list holds denied_addr.
 * Returns the child's pid once the queue is bound, or -1 (the reason is printed).
 */
static pid_t gate_start(const char *denied_addr)
{
	struct steer_gate_opts go = { .queue_num = GATE_QUEUE, .max_sources = 64 };
	struct steer_gate *g;
	int ready[2];
	char c = 0;
	pid_t pid;

	if (cidr_parse(denied_addr, &go.deny[go.ndeny++]) < 0 || pipe(ready) < 0) {
		note("gate: setup: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		struct pollfd p;
		int rc;

		close(ready[0]);
		rc = steer_gate_new(&go, &g);
		if (rc == 0)
			rc = steer_gate_open(g);
		if (rc < 0) {
			note("gate: cannot read queue %d: %s", GATE_QUEUE, strerror(-rc));
			_exit(1);
		}
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		p.fd = steer_gate_fd(g);
		p.events = POLLIN;
		for (;;) { /* until the parent's SIGTERM */
			if (poll(&p, 1, -1) != 1)
				continue;
			rc = steer_gate_dispatch(g);
			if (rc < 0) {
				note("gate: reading queue %d failed: %s", GATE_QUEUE, strerror(-rc));
				_exit(1);
			}
		}
	}
	close(ready[1]);
	if (pid < 0 || read(ready[0], &c, 1) != 1) {
		close(ready[0]);
		client_wait(pid);
		return -1;
	}
	close(ready[0]);
	return pid;
}

static void gate_stop(pid_t pid)
{
	if (pid > 0) {
		kill(pid, SIGTERM);
		waitpid(pid, NULL, 0);
	}
}

/* The attach put the gate's rule in nft (stock Debian kernels have nft queue), as status
 * reports it. */
static bool gate_rule_is_nft(void)
{
	json_t *st = steer_status_json(TEST_INSTANCE);
	const char *rule = json_string_value(json_object_get(json_object_get(st, "gate"), "rule"));
	bool ok = rule && strcmp(rule, "nft queue") == 0;

	if (!ok)
		note("gate: status reports the gate rule as '%s', expected 'nft queue'",
		     rule ? rule : "(none)");
	json_decref(st);
	return ok;
}

/* A remote client from the denied source dials the protected address: the gate drops its
 * SYN, so within GATE_DENIED_WAIT_MS it has no connection and the relay has nothing. */
static bool gate_denies(struct relay *r, const char *netns, const char *denied_addr)
{
	struct pollfd lp = { .fd = r->tproxy_fd, .events = POLLIN };
	struct addr dialled, src;
	int rc;
	pid_t pid;

	addr_set4(&dialled, PROTECTED_ADDR, PROTECTED_PORT);
	addr_set4(&src, denied_addr, 0);
	pid = fork();
	if (pid == 0) {
		struct pollfd p = { .events = POLLOUT };
		int fd, nsfd = open(netns, O_RDONLY | O_CLOEXEC);

		if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0 ||
		    (fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
		    bind(fd, &src.ss.sa, src.len) < 0) {
			note("gate: denied client setup: %s", strerror(errno));
			_exit(1);
		}
		if (connect(fd, &dialled.ss.sa, dialled.len) == 0) {
			note("gate: a client from a denied source connected at once");
			_exit(3);
		}
		p.fd = fd;
		if (errno != EINPROGRESS || poll(&p, 1, GATE_DENIED_WAIT_MS) != 0) {
			note("gate: a client from a denied source was answered (connect: %s)",
			     errno == EINPROGRESS ? "completed" : strerror(errno));
			_exit(3);
		}
		_exit(0);
	}
	rc = client_wait(pid);
	if (poll(&lp, 1, 0) != 0) {
		note("gate: the relay accepted a connection from a denied source");
		rc = -1;
	}
	return rc == 0;
}

static int relay_listen(struct relay *r)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };

	addr_set4(&r->tcp, RELAY_ADDR, RELAY_PORT);
	addr_set6(&r->tcp6, RELAY_ADDR6, RELAY_PORT);
	addr_set4(&r->tproxy, "0.0.0.0", TPROXY_PORT);
	addr_set6(&r->tproxy6, "::", TPROXY_PORT);
	r->tcp_fd = listen_on(&r->tcp.ss.sa, r->tcp.len, false);
	if (r->tcp_fd < 0)
		return r->tcp_fd;
	r->tcp6_fd = listen_on(&r->tcp6.ss.sa, r->tcp6.len, false);
	if (r->tcp6_fd < 0)
		return r->tcp6_fd;
	r->tproxy_fd = listen_on(&r->tproxy.ss.sa, r->tproxy.len, true);
	if (r->tproxy_fd < 0)
		return r->tproxy_fd;
	r->tproxy6_fd = listen_on(&r->tproxy6.ss.sa, r->tproxy6.len, true);
	if (r->tproxy6_fd < 0)
		return r->tproxy6_fd;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", UNIX_RELAY);
	mkdir("/run/pgw-vmtest", 0755);
	mkdir("/run/postgresql", 0755);
	r->unix_fd = listen_on((struct sockaddr *)&sun, sizeof(sun), false);
	return r->unix_fd < 0 ? r->unix_fd : 0;
}

int main(int argc, char **argv)
{
	struct relay r = { .tcp_fd = -1, .tcp6_fd = -1, .tproxy_fd = -1, .tproxy6_fd = -1,
			   .unix_fd = -1 };
	const char *unix_paths[] = { UNIX_PROTECTED };
	struct steer_handle *handle = NULL;
	char err[STEER_ERR_MAX], cgroot[512];
	struct steer_opts o;
	bool want_unix;
	FILE *mounts;
	int rc, cg_fd = -1, n;
	pid_t gate_pid;

	if (argc != 5) {
		fprintf(stderr, "usage: %s NETNS_PATH CLIENT_ADDR CLIENT_ADDR6 DENIED_ADDR\n",
			argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	uname(&uts);
	atexit(report_at_exit);
	want_unix = kernel_at_least(uts.release, 6, 7);
	check_skipped[CHECK_UNIX] = !want_unix;
	log_set_level(LOG_WARN); /* libbpf's warnings carry a rejected program's verifier log */

	mounts = fopen("/proc/self/mounts", "re");
	rc = mounts ? steer_find_mount(mounts, "cgroup2", cgroot, sizeof(cgroot)) : -errno;
	if (mounts)
		fclose(mounts);
	if (rc == 0) {
		snprintf(r.cgdir, sizeof(r.cgdir), "%s/%s", cgroot, TEST_CGROUP);
		if (mkdir(r.cgdir, 0755) < 0 && errno != EEXIST)
			rc = -errno;
	}
	if (rc == 0)
		rc = relay_listen(&r);
	if (rc < 0) {
		note("setup (cgroup %s, relay listeners): %s", r.cgdir, strerror(-rc));
		goto out;
	}

	steer_opts_init(&o);
	snprintf(o.instance, sizeof(o.instance), "%s", TEST_INSTANCE);
	o.cgroup = TEST_CGROUP;
	o.ports[o.nports++] = PROTECTED_PORT;
	addr_set4(&o.addresses[o.naddresses++], PROTECTED_ADDR, 0);
	addr_set6(&o.addresses[o.naddresses++], PROTECTED_ADDR6, 0);
	addr_set4(&o.addresses[o.naddresses++], "127.0.0.1", 0);
	addr_set6(&o.addresses[o.naddresses++], "::1", 0);
	o.relay[o.nrelay++] = r.tcp;
	o.relay[o.nrelay++] = r.tcp6;
	o.tproxy_port = TPROXY_PORT;
	o.unix_paths[o.nunix++] = unix_paths[0];
	o.unix_relay = UNIX_RELAY;
	o.check_relay = false; /* the listeners are ours, and already there */
	o.origin_max = VM_ORIGIN_MAX;
	o.gate = true;
	o.gate_queue = GATE_QUEUE;
	rc = steer_attach(&o, &handle, err, sizeof(err));
	if (!check_set(CHECK_ATTACH, rc == 0)) {
		note("attach: %s", err);
		goto out;
	}
	rc = steer_origin_open(TEST_INSTANCE, &r.origin);
	if (!check_set(CHECK_ATTACH, rc == 0)) {
		note("origin maps of %s: %s", TEST_INSTANCE, strerror(-rc));
		goto detach;
	}
	/* As pgwardend does: register the listeners steered clients may be handed to. */
	rc = steer_registrar_new(TEST_INSTANCE, NULL, &r.registrar);
	if (rc == 0)
		rc = steer_registrar_add(r.registrar, r.tcp_fd, &r.tcp);
	if (rc == 0)
		rc = steer_registrar_add(r.registrar, r.tcp6_fd, &r.tcp6);
	if (rc == 0)
		steer_registrar_tick(r.registrar);
	if (!check_set(CHECK_ATTACH, rc == 0 && steer_registrar_registered(r.registrar) == 2)) {
		note("registration of the relay's listeners: %s (%u registered)",
		     rc ? strerror(-rc) : "incomplete", steer_registrar_registered(r.registrar));
		goto detach;
	}

	cg_fd = open(r.cgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	n = cg_fd < 0 ? -errno : cgroup_prog_count(cg_fd, ATTACH_CGROUP_UNIX_CONNECT);
	connect_unix_state = n > 0 ? "loaded" : "not-loaded";
	if (!check_set(CHECK_CONNECT_UNIX, (n > 0) == want_unix))
		note("kernel %s reports %d connect_unix programs on the cgroup (%s)", uts.release, n,
		     n < 0 ? strerror(-n) : "count");

	test_steer(&r);
	test_unspec(&r);
	test_relay_mark(&r, o.relay_mark);
	if (want_unix)
		test_unix(&r);
	/* Fail-closed: with the gate on and nobody reading its queue, no remote SYN gets
	 * through, so the reader runs before the TPROXY clients dial. */
	gate_pid = gate_start(argv[4]);
	check_set(CHECK_GATE, gate_pid > 0 && gate_rule_is_nft());
	test_tproxy(&r, argv[1], argv[2], argv[3]);
	if (gate_pid > 0)
		check_set(CHECK_GATE, gate_denies(&r, argv[1], argv[4]));
	gate_stop(gate_pid);
	test_origin_full(&r);
	test_guard(&r);

detach:
	steer_registrar_free(r.registrar);
	steer_origin_close(r.origin);
	steer_handle_close(handle);
	rc = steer_detach(TEST_INSTANCE, err, sizeof(err));
	if (rc < 0)
		note("detach: %s", err);
	n = cg_fd < 0 ? 0 : cgroup_prog_count(cg_fd, BPF_CGROUP_INET4_CONNECT);
	if (n != 0)
		note("detach left %d connect4 programs on the cgroup", n);
	check_set(CHECK_DETACH, rc == 0 && n == 0);
	if (cg_fd >= 0)
		close(cg_fd);

out:
	return report() ? 0 : 1;
}
