/*
 * steer_test.c: the test a vm-test guest runs (a static binary started by vm-tests/init).
 *
 * On whatever stock kernel the guest booted, it proves that
 *   load     the steering object's skeleton loads and passes this kernel's verifier, with
 *            connect_unix loaded exactly where the kernel has it (6.7+; feature probe);
 *   attach   every loaded program attaches to a cgroup v2 the test creates;
 *   steer    a client in that cgroup that dials a protected address reaches the relay's
 *            listener instead, and bytes flow;
 *   peername the client's getpeername() reports the address it dialled, not the relay;
 *   core     the process identity recorded in the kernel is the client's (a CO-RE read of
 *            task_struct that is only right if relocation against this kernel's BTF worked);
 *   tproxy   a client in another network namespace, across a veth pair, that dials a
 *            non-local address:port is delivered by the nft TPROXY rule (set up by init) to
 *            an IP_TRANSPARENT listener, whose getsockname() is the dialled address.
 *
 * It prints diagnostics as "vm-test: ..." lines and then exactly one result line, which the
 * host parses:
 *   PGW-VMTEST-RESULT: PASS|FAIL kernel=<release> connect_unix=loaded|not-loaded <check>=ok|FAIL...
 * The exit status is 0 only on PASS. A guest that prints no result line is a failure too.
 *
 * Usage (all addresses IPv4, from init, which also wrote the matching nft rule):
 *   steer_test TPROXY_NETNS TPROXY_DIALLED_ADDR TPROXY_PORT TPROXY_LISTEN_PORT CLIENT_ADDR
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "probe.skel.h"

/* The protected destination a cgroup client dials (TEST-NET-1: never routable, so only the
 * BPF rewrite can make the connection succeed) and where the relay listens. */
#define STEER_DIALLED_ADDR "192.0.2.10"
#define STEER_DIALLED_PORT 5432
#define STEER_RELAY_ADDR "127.0.0.1"
#define STEER_RELAY_PORT 15432
#define TEST_CGROUP_NAME "pgw-vmtest"
/* TCG under load is slow: generous, but bounded well inside the host's boot timeout. */
#define IO_TIMEOUT_MS 20000
/* BPF_CGROUP_UNIX_CONNECT (uapi, Linux 6.7): newer than libbpf 1.1's headers. */
#define ATTACH_CGROUP_UNIX_CONNECT 49

enum check {
	CHECK_LOAD = 0,
	CHECK_ATTACH,
	CHECK_STEER,
	CHECK_PEERNAME,
	CHECK_CORE,
	CHECK_TPROXY,
	CHECK_COUNT,
};

static const char *const check_names[CHECK_COUNT] = {
	"load", "attach", "steer", "peername", "core", "tproxy",
};

/* 0 = not run, 1 = ok, -1 = failed. */
static int check_state[CHECK_COUNT];

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

/* Records the outcome of a check; a failed check stays failed. Returns ok. */
static bool check_set(enum check c, bool ok)
{
	if (check_state[c] >= 0)
		check_state[c] = ok ? 1 : -1;
	return ok;
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	/* Warnings carry the verifier log of a rejected program: exactly what a failure needs. */
	if (level == LIBBPF_DEBUG)
		return 0;
	fputs("vm-test: libbpf: ", stdout);
	return vfprintf(stdout, fmt, ap);
}

static bool kernel_at_least(const char *release, int major, int minor)
{
	int ma = 0, mi = 0;

	if (sscanf(release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma > major || (ma == major && mi >= minor);
}

/* Feature probe: can this kernel load a cgroup/connect_unix program? A trivial program is
 * loaded with that expected attach type; kernels before 6.7 reject the type with EINVAL. */
static bool kernel_has_connect_unix(void)
{
	const struct bpf_insn insns[] = {
		{ .code = 0xb7, .dst_reg = 0, .imm = 1 }, /* r0 = 1 (allow) */
		{ .code = 0x95 },                          /* exit */
	};
	LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = ATTACH_CGROUP_UNIX_CONNECT);
	int fd;

	fd = bpf_prog_load(BPF_PROG_TYPE_CGROUP_SOCK_ADDR, "pgw_probe_unix", "GPL", insns,
			   sizeof(insns) / sizeof(insns[0]), &opts);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* Finds the cgroup v2 mount in /proc/self/mounts (init mounts one; hosts differ). */
static int cgroup2_mount(char *buf, size_t len)
{
	char dev[256], dir[256], type[64];
	FILE *f = fopen("/proc/self/mounts", "re");
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fscanf(f, "%255s %255s %63s %*[^\n]", dev, dir, type) == 3) {
		if (strcmp(type, "cgroup2") == 0) {
			snprintf(buf, len, "%s", dir);
			rc = 0;
			break;
		}
	}
	fclose(f);
	return rc;
}

static int make_sockaddr(struct sockaddr_in *sa, const char *addr, int port)
{
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	sa->sin_port = htons(port);
	return inet_pton(AF_INET, addr, &sa->sin_addr) == 1 ? 0 : -EINVAL;
}

static const char *sockaddr_str(const struct sockaddr_in *sa, char *buf, size_t len)
{
	char a[INET_ADDRSTRLEN];

	inet_ntop(AF_INET, &sa->sin_addr, a, sizeof(a));
	snprintf(buf, len, "%s:%u", a, ntohs(sa->sin_port));
	return buf;
}

static bool sockaddr_equal(const struct sockaddr_in *a, const struct sockaddr_in *b)
{
	return a->sin_addr.s_addr == b->sin_addr.s_addr && a->sin_port == b->sin_port;
}

/* A listening TCP socket on addr:port; transparent sets IP_TRANSPARENT (TPROXY target). */
static int listen_on(const char *addr, int port, bool transparent)
{
	struct sockaddr_in sa;
	int one = 1;
	int fd;

	if (make_sockaddr(&sa, addr, port) < 0)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    (transparent && setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 8) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* Accepts one connection within IO_TIMEOUT_MS. Returns the fd or -errno (-ETIMEDOUT). */
static int accept_within(int lfd)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int n = poll(&p, 1, IO_TIMEOUT_MS);
	int fd;

	if (n == 0)
		return -ETIMEDOUT;
	if (n < 0)
		return -errno;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
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
 * Client side, in a forked child: connect to dialled, check getpeername() (when
 * want_peername), send one byte, wait for the peer to close. Exit status 0 = ok,
 * 1 = connect or I/O failed, 2 = getpeername mismatch.
 */
static void client_run(const struct sockaddr_in *dialled, bool want_peername)
{
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);
	char a[64], b[64];
	int fd;

	alarm(IO_TIMEOUT_MS / 1000 + 5);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (const struct sockaddr *)dialled, sizeof(*dialled)) < 0) {
		note("client: connect %s: %s", sockaddr_str(dialled, a, sizeof(a)), strerror(errno));
		_exit(1);
	}
	if (want_peername) {
		if (getpeername(fd, (struct sockaddr *)&peer, &len) < 0) {
			note("client: getpeername: %s", strerror(errno));
			_exit(2);
		}
		if (!sockaddr_equal(&peer, dialled)) {
			note("client: getpeername says %s, dialled %s",
			     sockaddr_str(&peer, a, sizeof(a)), sockaddr_str(dialled, b, sizeof(b)));
			_exit(2);
		}
	}
	if (write(fd, "x", 1) != 1) {
		note("client: write: %s", strerror(errno));
		_exit(1);
	}
	/* Stay connected until the listener side has inspected the connection. */
	if (read(fd, a, 1) < 0)
		_exit(1);
	_exit(0);
}

/* Waits for a client child; returns its exit status, or -1 if it died otherwise. */
static int client_wait(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* Joins the given cgroup (by its directory) so our connects go through its hooks. */
static int cgroup_join(const char *dir)
{
	char path[512], pid[32];
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

/* Attaches every loaded program of the object to the cgroup. */
static bool attach_all(struct bpf_object *obj, int cgroup_fd)
{
	struct bpf_program *prog;
	bool ok = true;

	bpf_object__for_each_program(prog, obj) {
		if (!bpf_program__autoload(prog))
			continue;
		/* The skeleton's destroy() frees the links; we only check they were made. */
		if (!bpf_program__attach_cgroup(prog, cgroup_fd)) {
			note("attach %s: %s", bpf_program__name(prog), strerror(errno));
			ok = false;
		}
	}
	return ok;
}

/* The BPF half: load, attach to a fresh cgroup, steer one connection from a child in it. */
static void test_steering(const char *release, const char **connect_unix)
{
	struct sockaddr_in dialled, relay;
	char cgroot[256], cgdir[300], a[64];
	struct probe_bpf *skel = NULL;
	int cgroup_fd = -1, lfd = -1, cfd = -1;
	bool has_unix;
	pid_t pid;
	int rc;

	make_sockaddr(&dialled, STEER_DIALLED_ADDR, STEER_DIALLED_PORT);
	make_sockaddr(&relay, STEER_RELAY_ADDR, STEER_RELAY_PORT);

	has_unix = kernel_has_connect_unix();
	*connect_unix = has_unix ? "loaded" : "not-loaded";
	if (has_unix != kernel_at_least(release, 6, 7)) {
		note("connect_unix probe says %s on %s", has_unix ? "present" : "absent", release);
		check_set(CHECK_LOAD, false);
	}

	skel = probe_bpf__open();
	if (!check_set(CHECK_LOAD, skel != NULL)) {
		note("open skeleton: %s", strerror(errno));
		goto out;
	}
	skel->rodata->dialled_addr = dialled.sin_addr.s_addr;
	skel->rodata->dialled_port = dialled.sin_port;
	skel->rodata->relay_addr = relay.sin_addr.s_addr;
	skel->rodata->relay_port = relay.sin_port;
	bpf_program__set_type(skel->progs.probe_connect_unix, BPF_PROG_TYPE_CGROUP_SOCK_ADDR);
	bpf_program__set_expected_attach_type(skel->progs.probe_connect_unix,
					      ATTACH_CGROUP_UNIX_CONNECT);
	bpf_program__set_autoload(skel->progs.probe_connect_unix, has_unix);
	rc = probe_bpf__load(skel);
	if (!check_set(CHECK_LOAD, rc == 0)) {
		note("load: %s", strerror(-rc));
		goto out;
	}

	rc = cgroup2_mount(cgroot, sizeof(cgroot));
	if (rc < 0) {
		note("no cgroup2 mount: %s", strerror(-rc));
		check_set(CHECK_ATTACH, false);
		goto out;
	}
	snprintf(cgdir, sizeof(cgdir), "%s/%s", cgroot, TEST_CGROUP_NAME);
	if (mkdir(cgdir, 0755) < 0 && errno != EEXIST) {
		note("mkdir %s: %s", cgdir, strerror(errno));
		check_set(CHECK_ATTACH, false);
		goto out;
	}
	cgroup_fd = open(cgdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (!check_set(CHECK_ATTACH, cgroup_fd >= 0 && attach_all(skel->obj, cgroup_fd)))
		goto out;

	lfd = listen_on(STEER_RELAY_ADDR, STEER_RELAY_PORT, false);
	if (lfd < 0) {
		note("relay listen: %s", strerror(-lfd));
		check_set(CHECK_STEER, false);
		goto out;
	}
	pid = fork();
	if (pid == 0) {
		rc = cgroup_join(cgdir);
		if (rc < 0) {
			note("client: join %s: %s", cgdir, strerror(-rc));
			_exit(1);
		}
		client_run(&dialled, true);
	}
	cfd = accept_within(lfd);
	if (cfd < 0)
		note("relay: no connection steered from %s: %s", sockaddr_str(&dialled, a, sizeof(a)),
		     strerror(-cfd));
	check_set(CHECK_STEER, cfd >= 0 && read_byte(cfd, 'x'));
	if (cfd >= 0)
		check_set(CHECK_CORE, skel->bss->steered_tgid == (__u32)pid &&
					      skel->bss->steered_count == 1);
	if (check_state[CHECK_CORE] < 0)
		note("kernel recorded tgid %u (%u steers), client is %d", skel->bss->steered_tgid,
		     skel->bss->steered_count, (int)pid);
	if (cfd >= 0)
		close(cfd); /* lets the client finish */
	rc = client_wait(pid);
	check_set(CHECK_PEERNAME, rc == 0);
	if (rc == 1)
		check_set(CHECK_STEER, false);
out:
	if (lfd >= 0)
		close(lfd);
	if (cgroup_fd >= 0)
		close(cgroup_fd);
	probe_bpf__destroy(skel);
}

/* The nft half: a client in netns dials a non-local address; TPROXY delivers it to us. */
static void test_tproxy(const char *netns, const char *dialled_addr, int dialled_port,
			int listen_port, const char *client_addr)
{
	struct sockaddr_in dialled, local, peer, client;
	socklen_t len;
	char a[64], b[64];
	int lfd, cfd, nsfd;
	pid_t pid;
	bool ok;

	if (make_sockaddr(&dialled, dialled_addr, dialled_port) < 0 ||
	    make_sockaddr(&client, client_addr, 0) < 0) {
		note("tproxy: bad address argument");
		check_set(CHECK_TPROXY, false);
		return;
	}
	lfd = listen_on("0.0.0.0", listen_port, true);
	if (lfd < 0) {
		note("tproxy: transparent listen on port %d: %s", listen_port, strerror(-lfd));
		check_set(CHECK_TPROXY, false);
		return;
	}
	pid = fork();
	if (pid == 0) {
		nsfd = open(netns, O_RDONLY | O_CLOEXEC);
		if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
			note("tproxy client: enter %s: %s", netns, strerror(errno));
			_exit(1);
		}
		/* No BPF hook in that namespace's path: getpeername is the plain peer. */
		client_run(&dialled, false);
	}
	cfd = accept_within(lfd);
	if (cfd < 0) {
		note("tproxy: nothing delivered for %s: %s", sockaddr_str(&dialled, a, sizeof(a)),
		     strerror(-cfd));
		ok = false;
	} else {
		len = sizeof(local);
		ok = getsockname(cfd, (struct sockaddr *)&local, &len) == 0 &&
		     sockaddr_equal(&local, &dialled);
		if (!ok)
			note("tproxy: getsockname says %s, client dialled %s",
			     sockaddr_str(&local, a, sizeof(a)), sockaddr_str(&dialled, b, sizeof(b)));
		len = sizeof(peer);
		if (getpeername(cfd, (struct sockaddr *)&peer, &len) < 0 ||
		    peer.sin_addr.s_addr != client.sin_addr.s_addr) {
			note("tproxy: peer is %s, expected the client %s",
			     sockaddr_str(&peer, a, sizeof(a)), client_addr);
			ok = false;
		}
		ok = read_byte(cfd, 'x') && ok;
		close(cfd);
	}
	if (client_wait(pid) != 0)
		ok = false;
	close(lfd);
	check_set(CHECK_TPROXY, ok);
}

int main(int argc, char **argv)
{
	const char *connect_unix = "unknown";
	struct utsname u;
	bool pass = true;
	int i;

	if (argc != 6) {
		fprintf(stderr, "usage: %s NETNS DIALLED_ADDR PORT LISTEN_PORT CLIENT_ADDR\n", argv[0]);
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	uname(&u);
	libbpf_set_print(libbpf_print);

	test_steering(u.release, &connect_unix);
	test_tproxy(argv[1], argv[2], atoi(argv[3]), atoi(argv[4]), argv[5]);

	for (i = 0; i < CHECK_COUNT; i++)
		if (check_state[i] != 1)
			pass = false;
	printf("PGW-VMTEST-RESULT: %s kernel=%s connect_unix=%s", pass ? "PASS" : "FAIL",
	       u.release, connect_unix);
	for (i = 0; i < CHECK_COUNT; i++)
		printf(" %s=%s", check_names[i],
		       check_state[i] == 1 ? "ok" : check_state[i] < 0 ? "FAIL" : "not-run");
	printf("\n");
	fflush(stdout);
	return pass ? 0 : 1;
}
