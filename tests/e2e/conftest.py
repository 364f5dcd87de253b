"""Fixtures for the end-to-end steering suite (root only).

    pg              session: throwaway PostgreSQL 15 cluster (tests/integration/harness.py)
    ctl             run `pgwardenctl` with this test's own instance name
    instance        a unique steering instance (pin dir /sys/fs/bpf/NAME, nft table inet NAME);
                    detached at teardown, and the teardown fails the test if anything of it
                    is left in the kernel
    cgroup          a fresh cgroup v2 directory under the host's cgroup2 mount; its processes
                    are killed and the directory removed at teardown
    relay_factory   pgwardend processes on loopback (plus whatever listeners a test adds,
                    and optionally a config file to rewrite for a reload), reading the
                    test's steering instance, stopped at teardown
    netns           a network namespace joined to the host by a veth pair, addresses in
                    the benchmarking ranges 198.18.0.0/15 and 2001:2::/48 (RFC 2544,
                    RFC 5180: never routed anywhere), removed at teardown
    veth_pg         a throwaway PostgreSQL 15 cluster that also listens on the host end of
                    netns's veth pair and admits the namespace's addresses (remote.py)

Kernel state is only ever created for a cgroup, a namespace or an instance the test made:
never the root cgroup, never the default instance "pgwarden".
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
from remote import VethCluster  # noqa: E402

CLIENT = os.path.join(HERE, "client.py")


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="steering end-to-end tests need root (BPF, cgroups, "
                                       "netns)")
        for item in items:
            item.add_marker(skip)


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def cgroup2_root():
    """The cgroup v2 mount point, from /proc/self/mounts (hybrid hosts have it elsewhere)."""
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype = line.split()[:3]
            if fstype == "cgroup2":
                return mnt.replace("\\040", " ")
    raise RuntimeError("no cgroup2 mount")


def binary(env_name, default_name):
    path = os.environ.get(env_name) or os.path.join(harness.REPO_ROOT, "build", default_name)
    path = os.path.abspath(path)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("%s not found at %s: run `make check-e2e` (it builds it) or set %s"
                    % (default_name, path, env_name), pytrace=False)
    return path


@pytest.fixture(scope="session")
def pgwardend_bin():
    return binary("PGWARDEND", "pgwardend")


@pytest.fixture(scope="session")
def pgwardenctl_bin():
    return binary("PGWARDENCTL", "pgwardenctl")


@pytest.fixture(scope="session")
def pg():
    cluster = harness.PgCluster(max_connections=100)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


_counter = [0]


def unique(prefix):
    _counter[0] += 1
    return "%s%d_%d" % (prefix, os.getpid(), _counter[0])


class Ctl:
    """pgwardenctl with PGWARDEN_INSTANCE set to the test's instance, and a TPROXY mark and
    route table of its own (tproxy_args()): the defaults are shared by every instance on the
    host, so a test using them would add and remove a real attach's fwmark rule and routes."""

    def __init__(self, path, instance):
        self.path = path
        self.instance = instance
        tag = ((os.getpid() & 0xffff) << 4) | (_counter[0] & 0xf)
        self.tproxy_mark = 0x70000000 | tag
        self.route_table = 0x70000000 | tag

    def tproxy_args(self, port):
        return ["--tproxy-port", str(port), "--tproxy-mark", "0x%x" % self.tproxy_mark,
                "--route-table", str(self.route_table)]

    def env(self):
        env = dict(os.environ)
        env["PGWARDEN_INSTANCE"] = self.instance
        return env

    def run(self, *args, check=True, timeout=60):
        r = subprocess.run([self.path] + list(args), capture_output=True, text=True,
                           env=self.env(), timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("pgwardenctl %s: exit %d\n%s%s"
                                 % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r

    def status(self):
        r = self.run("status", "--json", check=False)
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            raise AssertionError("status --json is not JSON (exit %d):\n%s%s"
                                 % (r.returncode, r.stdout, r.stderr))
        # pgwardenctl status --json nests the steering section; a steering-only build
        # prints it at the top.
        return doc.get("steering", doc)


def kernel_leftovers(ctl):
    """Anything of the instance still in the kernel (independent of pgwardenctl): pins, nft
    table, and the fwmark rules and routes of its own mark and table."""
    instance = ctl.instance
    left = []
    if os.path.exists("/sys/fs/bpf/%s" % instance):
        left.append("pin dir /sys/fs/bpf/%s" % instance)
    r = subprocess.run(["nft", "list", "table", "inet", instance], capture_output=True)
    if r.returncode == 0:
        left.append("nft table inet %s" % instance)
    for fam in ("-4", "-6"):
        rules = subprocess.run(["ip", fam, "rule", "show"], capture_output=True,
                               text=True).stdout
        if ("fwmark 0x%x " % ctl.tproxy_mark) in rules:
            left.append("ip %s rule fwmark 0x%x" % (fam, ctl.tproxy_mark))
        routes = subprocess.run(["ip", fam, "route", "show", "table", str(ctl.route_table)],
                                capture_output=True, text=True).stdout
        if routes.strip():
            left.append("ip %s routes in table %d" % (fam, ctl.route_table))
    out = subprocess.run(["bpftool", "link", "show", "-j"], capture_output=True, text=True)
    return left, out.stdout


@pytest.fixture
def instance(pgwardenctl_bin, request):
    name = unique("pgw_e2e_")
    ctl = Ctl(pgwardenctl_bin, name)
    yield ctl
    r = ctl.run("detach", check=False)
    left, _ = kernel_leftovers(ctl)
    if r.returncode != 0 or left:
        pytest.fail("teardown: detach exit %d (%s), leftovers %s"
                    % (r.returncode, r.stderr.strip(), left), pytrace=False)


class Cgroup:
    def __init__(self):
        self.root = cgroup2_root()
        self.path = os.path.join(self.root, unique("pgw-e2e-"))
        os.mkdir(self.path)

    def pids(self):
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]

    def remove(self):
        # Kill what is left inside (a client a failed test did not reap), then remove.
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        os.rmdir(self.path)


@pytest.fixture
def cgroup():
    cg = Cgroup()
    try:
        yield cg
    finally:
        cg.remove()


class WrappedRelay(harness.Relay):
    """A Relay started through a launcher: wrap(relay) gives the argv in front of
    pgwardend's (e.g. `pgwardenctl attach --fail-open ... --`, which exec()s the daemon, so
    the pid is still the daemon's), computed once the relay's listen port is known."""

    def __init__(self, *args, wrap=None, **kw):
        super().__init__(*args, **kw)
        self.wrap = wrap

    def _argv(self):
        argv = super()._argv()
        return (list(self.wrap(self)) if self.wrap else []) + argv


@pytest.fixture
def relay_factory(pgwardend_bin, tmp_path, request, instance):
    """pgwardend reads the test's steering instance (--steer-instance), the one the test's
    pgwardenctl attaches (PGWARDEN_INSTANCE). Its upstream (and the credentials) are the
    session cluster `pg` unless the test names another cluster."""
    started = []

    def start(listen6=False, extra_args=(), upstream=None, wrap=None, env=None,
              config_text=None):
        cluster = upstream if upstream is not None else request.getfixturevalue("pg")
        extra = ["--steer-instance", instance.instance] + list(extra_args)
        port6 = None
        if listen6:
            port6 = harness.free_port("::1")
            extra += ["--listen", "[::1]:%d" % port6]
        r = WrappedRelay(pgwardend_bin, (cluster.host, cluster.port), cluster, str(tmp_path),
                         workers=1, extra_args=extra, wrap=wrap, env=env,
                         config_text=config_text)
        started.append(r)
        r.start()
        r.port6 = port6
        return r

    yield start
    for r in started:
        r.stop(check=False)
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print("\n" + r.log_tail(40))


class Client:
    """tests/e2e/client.py in its own process: optionally in a cgroup, optionally as
    another user, connected and holding the session until finish()."""

    def __init__(self, pg, host, port, cgroup=None, user=None, mark=None, hold=True,
                 netns=None, sql=None):
        argv = [sys.executable, CLIENT, "--host", host, "--port", str(port), "--dbuser", pg.user,
                "--password", pg.password, "--dbname", pg.dbname]
        if sql:
            argv += ["--sql", sql]
        if cgroup:
            argv += ["--cgroup", cgroup.path]
        if user:
            argv += ["--user", user]
        if hold:
            argv += ["--hold"]
        if netns:
            argv = ["ip", "netns", "exec", netns] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(30)
            raise AssertionError("client printed nothing: %s" % self.proc.stderr.read())
        self.result = json.loads(line)

    def finish(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("done\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.result


@pytest.fixture
def clients():
    made = []

    def make(*args, **kw):
        c = Client(*args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(10)


def sh(*argv, check=True):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode, r.stderr))
    return r


class Netns:
    """A namespace "pgwe2e<pid>x" with veth "pgwh<n>" (host) <-> "pgwc<n>" (namespace)."""

    def __init__(self):
        n = os.getpid() % 10000
        _counter[0] += 1
        self.name = "pgwe2e%d_%d" % (n, _counter[0])
        self.host_if = "pgwh%d%d" % (n, _counter[0])
        self.ns_if = "pgwc%d%d" % (n, _counter[0])
        # A /30 and a /64 of the benchmarking ranges per namespace: addresses no real network
        # uses, so neither the host's routes nor its neighbours ever see them.
        sub = ((os.getpid() * 7 + _counter[0]) % 16383) * 4
        self.host_ip = "198.18.%d.%d" % (sub >> 8, (sub & 0xff) + 1)
        self.client_ip = "198.18.%d.%d" % (sub >> 8, (sub & 0xff) + 2)
        self.host_ip6 = "2001:2:0:%x::1" % (sub >> 2)
        self.client_ip6 = "2001:2:0:%x::2" % (sub >> 2)
        self.created = False

    def create(self):
        sh("ip", "netns", "add", self.name)
        self.created = True
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if,
           "netns", self.name)
        sh("ip", "addr", "add", self.host_ip + "/30", "dev", self.host_if)
        sh("ip", "-6", "addr", "add", self.host_ip6 + "/64", "dev", self.host_if, "nodad")
        sh("ip", "link", "set", self.host_if, "up")
        ns = ["ip", "netns", "exec", self.name]
        sh(*ns, "ip", "addr", "add", self.client_ip + "/30", "dev", self.ns_if)
        sh(*ns, "ip", "-6", "addr", "add", self.client_ip6 + "/64", "dev", self.ns_if, "nodad")
        sh(*ns, "ip", "link", "set", self.ns_if, "up")
        sh(*ns, "ip", "link", "set", "lo", "up")
        return self

    def remove(self):
        sh("ip", "link", "del", self.host_if, check=False)
        if self.created:
            sh("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def netns():
    ns = Netns()
    try:
        yield ns.create()
    finally:
        ns.remove()
        left = sh("ip", "netns", "list", check=False).stdout
        assert ns.name not in left, "netns %s left behind" % ns.name


@pytest.fixture
def veth_pg(netns):
    cluster = VethCluster(netns)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
