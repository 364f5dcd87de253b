"""The ways around the relay (issue #9), tried as an attacker on the host and on the network
would, with steering attached fail-closed to the test's own cgroup:

* a process that takes the relay's port while pgwardend is down must receive nothing;
* every spelling of a protected address the kernel routes there (0.0.0.0, ::,
  ::ffff:0.0.0.0, v4-mapped) is steered like the address itself;
* every spelling of PostgreSQL's Unix socket path (//, /./, relative, /proc/self/root, a
  symlink, a hard link, trailing NUL and garbage) lands on the relay, for root and for an
  unprivileged user, and the server's private socket stays out of an unprivileged user's
  reach; attach refuses a server socket any local user can reach;
* a TPROXY'd SYN for an address that is not protected is refused by the relay and
  counted, never connected onward.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest

import harness
from remote import tproxy_listen, tproxy_port

NOBODY = pwd.getpwnam("nobody")

# Binds the relay's port as whoever runs it, asks every client for a cleartext password
# (as the attacker in the issue did) and prints what it got, one JSON line, after `wait`
# seconds without a client.
SQUATTER = r"""
import json, socket, struct, sys
host, port, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen(16)
print("listening", flush=True)
s.settimeout(wait)
got = []
try:
    while True:
        c, _ = s.accept()
        c.settimeout(5)
        try:
            startup = c.recv(8192)
            c.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
            got.append((startup + c.recv(8192)).hex())
        except OSError as e:
            got.append("error: %s" % e)
        c.close()
except socket.timeout:
    pass
print(json.dumps({"got": got}), flush=True)
"""

# One Unix-socket connection the way a hostile local client makes it: joins the cgroup,
# optionally becomes another user and changes directory, connects to the address given
# as hex bytes (so it may hold a NUL and garbage), sends a StartupMessage tagged with an
# application_name, and reports the first byte of the answer (or the error).
UNIX_CLIENT = r"""
import json, os, socket, struct, sys
cgroup, uid, gid, cwd, addr_hex, tag = sys.argv[1:7]
if cgroup:
    open(os.path.join(cgroup, "cgroup.procs"), "w").write(str(os.getpid()))
if int(uid) >= 0:
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
if cwd:
    os.chdir(cwd)
out = {}
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(bytes.fromhex(addr_hex))
    params = b"user\0pgw\0database\0pgw\0application_name\0" + tag.encode() + b"\0\0"
    s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
    first = s.recv(1)
    out["first"] = first.decode("latin-1")
    s.close()
except OSError as e:
    out["error"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out), flush=True)
"""


def attach(instance, pg, relay, cgroup, *extra, v6=False):
    args = ["attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
            "--cgroup", cgroup.path]
    if v6:
        args += ["--relay", "[::1]:%d" % relay.port6]
    return instance.run(*(args + list(extra)))


def session_for(relay, peer, timeout=30.0):
    return relay.wait_for_log(lambda d: d.get("event") == "session_start" and
                              d.get("peer") == peer, timeout=timeout)


# ---- the relay's port ----------------------------------------------------------------------


def test_relay_port_takeover_after_sigkill(pg, instance, cgroup, relay_factory, clients):
    """pgwardend is SIGKILLed; an unprivileged process binds the relay's (unprivileged)
    port at once. A steered client must be refused, and the squatter must get nothing: no
    connection, so no startup packet and no password."""
    relay = relay_factory()
    attach(instance, pg, relay, cgroup)
    st = instance.status()
    if not st.get("relay_guard", {}).get("kernel_supports_sk_lookup", True):
        pytest.skip("kernel has no sk_lookup (needs 5.9)")
    ok = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
    assert ok.get("answer") == 42, ok

    relay.signal(signal.SIGKILL)
    relay.proc.wait(30)
    relay.killed = True
    squatter = subprocess.Popen(
        ["setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid,
         "--clear-groups", sys.executable, "-c", SQUATTER, "127.0.0.1", str(relay.port), "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "listening", squatter.stderr.read()
        c = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
        out, err = squatter.communicate(timeout=60)
    finally:
        if squatter.poll() is None:
            squatter.kill()
            squatter.wait(10)
    assert json.loads(out.splitlines()[-1]) == {"got": []}, (out, err)
    assert "error" in c and "refused" in c["error"].lower(), c
    st = instance.status()
    assert st["relay_guard"]["sk_lookup_attached"] is True, st
    assert any(l["hook"] == "sk_lookup" for l in st["links"]), st["links"]
    assert st["relay_registered"] == [], st
    assert st["counters"]["refused_relay_down"] >= 1, st["counters"]

    # A new pgwardend registers and is reached again (re-attach moves the relay in place).
    relay2 = relay_factory()
    attach(instance, pg, relay2, cgroup)
    back = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
    assert back.get("answer") == 42, back
    session_for(relay2, "127.0.0.1:%d" % back["local"][1])


def test_attach_refuses_a_stranger_on_the_relay_port(pg, instance, cgroup, pgwardenctl_bin):
    """Something listens on the relay's port but is not pgwardend (it never registers): the
    attach refuses with exit 3 and attaches nothing."""
    port = harness.free_port()
    stranger = subprocess.Popen(
        [sys.executable, "-c", SQUATTER, "127.0.0.1", str(port), "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert stranger.stdout.readline().strip() == "listening"
        r = instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % port,
                         "--cgroup", cgroup.path, check=False, timeout=120)
        assert r.returncode == 3, r
        assert "has not registered" in r.stderr, r.stderr
        st = instance.status()
        assert st["attached"] is False and st["links"] == [], st
    finally:
        stranger.kill()
        stranger.wait(10)


# ---- address spellings ---------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::ffff:0.0.0.0", "::ffff:127.0.0.1", "::"])
def test_address_spellings_are_steered(pg, instance, cgroup, relay_factory, clients, host):
    """Protected 127.0.0.1 and ::1 only: a client dialling a spelling the kernel routes to
    one of them is steered like a client dialling the address itself."""
    relay = relay_factory(listen6=True)
    attach(instance, pg, relay, cgroup, "--address", "127.0.0.1", "--address", "::1", v6=True)
    r = clients(pg, host, pg.port, cgroup=cgroup, hold=False).finish()
    assert "error" not in r, r
    assert r["answer"] == 42
    # The server saw the relay's upstream socket, not the client's...
    assert r["server_saw"][1] != r["local"][1], r
    # ...and the relay logged the client, with the address the kernel routes it to.
    ip, port = r["local"]
    if ip.startswith("::ffff:"):
        peer = "%s:%d" % (ip[len("::ffff:"):], port)  # reached the IPv4 relay
    else:
        peer = ("[%s]:%d" if ":" in ip else "%s:%d") % (ip, port)
    log = session_for(relay, peer)
    assert log["route"] == "steered", log
    assert log["dialled"] in ("127.0.0.1:%d" % pg.port, "[::1]:%d" % pg.port), log
    if host != "::ffff:127.0.0.1":
        assert instance.status()["counters"]["unspecified_resolved"] >= 1


def test_wildcard_address_is_refused_by_attach(pg, instance, cgroup, relay_factory):
    relay = relay_factory()
    for bad in ("0.0.0.0", "::", "::ffff:0.0.0.0"):
        r = instance.run("attach", "--port", str(pg.port), "--relay",
                         "127.0.0.1:%d" % relay.port, "--cgroup", cgroup.path,
                         "--address", bad, check=False)
        assert r.returncode == 2 and "--port without --address" in r.stderr, (bad, r)
    r = instance.run("attach", "--port", str(pg.port), "--relay", "0.0.0.0:%d" % relay.port,
                     "--cgroup", cgroup.path, check=False)
    assert r.returncode == 2 and "not a wildcard" in r.stderr, r


# ---- Unix socket paths ---------------------------------------------------------------------


def unix_connect(cgroup, addr, tag, user=None, cwd=None):
    uid, gid = (user.pw_uid, user.pw_gid) if user else (-1, -1)
    r = subprocess.run([sys.executable, "-c", UNIX_CLIENT, cgroup.path, str(uid), str(gid),
                        cwd or "", addr.hex(), tag], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture
def unix_dirs():
    """A public directory for the relay's socket (the path clients know) and one for the
    spellings' symlink and hard link, both root's and searchable by all, removed after."""
    pub = tempfile.mkdtemp(prefix="pgwarden-e2e-pub-")
    links = tempfile.mkdtemp(prefix="pgwarden-e2e-links-")
    os.chmod(pub, 0o755)
    os.chmod(links, 0o755)
    yield pub, links
    shutil.rmtree(pub, ignore_errors=True)
    shutil.rmtree(links, ignore_errors=True)


def test_unix_path_spellings_reach_only_the_relay(pg, instance, cgroup, relay_factory,
                                                  unix_dirs):
    """PostgreSQL's socket is in its private directory (0700 postgres); the relay's socket
    is at the path clients use. Every spelling of that path, as root and as nobody, is the
    relay; every spelling of the private path is EACCES for nobody. nobody still logs in
    through the relay: the relay looks the private path up as root and connects with
    nobody's ids (what peer authentication would read)."""
    pub, links = unix_dirs
    public = os.path.join(pub, ".s.PGSQL.%d" % pg.port)
    private = os.path.join(pg.sockdir, ".s.PGSQL.%d" % pg.port)
    relay = relay_factory(extra_args=["--unix-listen", public, "--unix-upstream", private])
    attach(instance, pg, relay, cgroup, "--unix-socket", private, "--unix-relay", public)
    symlink = os.path.join(links, "sym")
    hardlink = os.path.join(links, "hard")
    os.symlink(public, symlink)
    os.link(public, hardlink)
    d, base = os.path.dirname(public), os.path.basename(public)
    spellings = {
        "exact": (public.encode(), None),
        "double-slash": (b"/" + public.encode(), None),
        "dot": ((d + "/./" + base).encode(), None),
        "relative": (base.encode(), d),
        "proc-root": (("/proc/self/root" + public).encode(), None),
        "symlink": (symlink.encode(), None),
        "hardlink": (hardlink.encode(), None),
        "nul-garbage": (public.encode() + b"\0garbage-after-the-path", None),
    }
    for who, user in (("root", None), ("nobody", NOBODY)):
        for name, (addr, cwd) in spellings.items():
            tag = "spell-%s-%s" % (who, name)
            out = unix_connect(cgroup, addr, tag, user=user, cwd=cwd)
            assert out.get("first") == "R", (tag, out)  # the server's authentication request
            log = relay.wait_for_log({"event": "session_start", "application_name": tag})
            assert log["peer"] == "unix" and log["route"] == "steered", log
            assert int(log["uid"]) == (user.pw_uid if user else 0), log
    # The server's own socket is out of nobody's reach by any spelling but the exact one,
    # which the connect_unix hook (6.7+) hands to the relay.
    hook = instance.status()["unix"]["kernel_supports_connect_unix"]
    out = unix_connect(cgroup, private.encode(), "private-exact", user=NOBODY)
    if hook:
        assert out.get("first") == "R", out
        relay.wait_for_log({"event": "session_start", "application_name": "private-exact"})
    else:
        assert "PermissionError" in out.get("error", ""), out
    for addr in (b"/" + private.encode(), ("/proc/self/root" + private).encode(),
                 private.encode() + b"\0garbage"):
        out = unix_connect(cgroup, addr, "private", user=NOBODY)
        assert "PermissionError" in out.get("error", ""), (addr, out)

    # nobody logs in through the relay with the password (SCRAM), which used to fail:
    # the relay connected as nobody and nobody cannot enter the private directory.
    env = pg.env(PGHOST=pub, PGPORT=str(pg.port), PGAPPNAME="spell-login")
    r = subprocess.run(["setpriv", "--reuid=%d" % NOBODY.pw_uid, "--regid=%d" % NOBODY.pw_gid,
                        "--clear-groups", os.path.join(pg.bindir, "psql"), "-X", "-A", "-t",
                        "-c", "SELECT current_user"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "pgw", r.stderr
    # ...and the postgres user, peer-authenticated, is seen by the server as itself.
    pw = pwd.getpwnam("postgres")
    env = pg.env(PGHOST=pub, PGPORT=str(pg.port), PGUSER="postgres", PGDATABASE="postgres")
    r = subprocess.run(["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
                        "--init-groups", os.path.join(pg.bindir, "psql"), "-X", "-A", "-t",
                        "-c", "SELECT current_user"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "postgres", r.stderr
    assert instance.status()["unix"]["exposed"] == []


def test_unix_attach_refuses_a_reachable_server_socket(pg, instance, cgroup, relay_factory,
                                                       unix_dirs):
    """The setup of the issue: PostgreSQL's socket where every local user can reach it, and
    a hook matching its path as spelled. attach refuses it (any other spelling would go
    straight to the server), names the socket, and attaches nothing; without --unix-socket
    it attaches TCP steering and status lists the socket as exposed."""
    pub, _ = unix_dirs
    relay_sock = os.path.join(pub, "relay.sock")
    private = os.path.join(pg.sockdir, ".s.PGSQL.%d" % pg.port)
    relay = relay_factory(extra_args=["--unix-listen", relay_sock, "--unix-upstream", private])
    mode = os.stat(pg.sockdir).st_mode & 0o7777
    os.chmod(pg.sockdir, 0o711)  # now any local user can reach the server's socket
    try:
        r = instance.run("attach", "--port", str(pg.port), "--relay",
                         "127.0.0.1:%d" % relay.port, "--cgroup", cgroup.path,
                         "--unix-socket", private, "--unix-relay", relay_sock, check=False)
        assert r.returncode == 1, r
        assert "reachable by every local user" in r.stderr and private in r.stderr, r.stderr
        assert instance.status()["attached"] is False
        r = attach(instance, pg, relay, cgroup)
        assert "reachable by every local user" in r.stderr, r.stderr
        assert instance.status()["unix"]["exposed"] == [private]
    finally:
        os.chmod(pg.sockdir, mode)
    assert instance.status()["unix"]["exposed"] == []


# ---- TPROXY destinations -------------------------------------------------------------------


@pytest.fixture
def foreign(netns):
    """Addresses of no host: routed from the namespace to this host, blackholed here (so
    nothing of a test ever leaves the machine), removed after."""
    n = os.getpid() % 250 + 1
    v4, v6 = "198.19.255.%d" % n, "2001:2:0:ffff::%x" % n
    sh = lambda *a: subprocess.run(list(a), capture_output=True, text=True, timeout=30)
    made = []
    try:
        for cmd, undo in (
                (["ip", "route", "add", "blackhole", v4 + "/32"],
                 ["ip", "route", "del", "blackhole", v4 + "/32"]),
                (["ip", "-6", "route", "add", "blackhole", v6 + "/128"],
                 ["ip", "-6", "route", "del", "blackhole", v6 + "/128"]),
                (["ip", "netns", "exec", netns.name, "ip", "route", "add", v4 + "/32", "via",
                  netns.host_ip], None),
                (["ip", "netns", "exec", netns.name, "ip", "-6", "route", "add", v6 + "/128",
                  "via", netns.host_ip6], None)):
            r = sh(*cmd)
            assert r.returncode == 0, (cmd, r.stderr)
            if undo:
                made.append(undo)
        yield v4, v6
    finally:
        for undo in made:
            sh(*undo)


def test_tproxy_foreign_destination_is_refused(veth_pg, netns, instance, cgroup,
                                               relay_factory, clients, foreign):
    """TPROXY diverts by port alone: a remote client that sends a SYN for an address that
    is neither this host's nor a configured one gets a FATAL from the relay, which never
    connects onward; the refusal is counted and logged. The server's own address still
    works."""
    pg = veth_pg
    tport = tproxy_port()
    mport = harness.free_port()
    relay = relay_factory(upstream=pg, extra_args=tproxy_listen(tport) + [
        "--metrics-listen", "127.0.0.1:%d" % mport])
    instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
                 "--cgroup", cgroup.path, *instance.tproxy_args(tport))
    for dest, client_ip in ((foreign[0], netns.client_ip), (foreign[1], netns.client_ip6)):
        c = clients(pg, dest, pg.port, netns=netns.name, hold=False).finish()
        assert "error" in c and "not a protected destination" in c["error"], c
        starts = [d for d in relay.log_lines() if d.get("event") == "session_start" and
                  (d.get("peer") or "").startswith(("[" + client_ip) if ":" in client_ip
                                                   else client_ip)]
        assert starts == [], starts
    refused = relay.wait_for_log({"event": "connection_refused", "reason": "destination"})
    assert foreign[0] in refused.get("dialled", "") or foreign[1] in refused.get("dialled", "")
    text = subprocess.run(["curl", "-s", "http://127.0.0.1:%d/metrics" % mport],
                          capture_output=True, text=True, timeout=30).stdout
    line = [l for l in text.splitlines()
            if l.startswith('pgwarden_connections_refused_total{reason="destination"}')]
    assert line and float(line[0].split()[-1]) == 2, line
    # The protected (local) address goes through as before.
    ok = clients(pg, netns.host_ip, pg.port, netns=netns.name, hold=False).finish()
    assert ok.get("answer") == 42, ok


# ---- a self-loop through NAT ---------------------------------------------------------------

LOOP_CLIENT = r"""
import socket, struct, sys, time
port = int(sys.argv[1])
deadline = time.monotonic() + 30
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=20)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.1)
params = b"user\0pgw\0database\0pgw\0\0"
s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
data = b""
while True:
    chunk = s.recv(4096)
    if not chunk:
        break
    data += chunk
print(data.decode("latin-1"))
"""


def test_nat_loop_is_refused_at_run_time(netns, pgwardend_bin, tmp_path):
    """Inside a namespace of its own, pgwardend's upstream (an address of nobody) is DNATed
    back to its own listener: no configuration check can see that. The relay recognises its
    own upstream connection when it arrives, refuses it, logs it once and counts it; each
    client gets one error instead of a chain of sessions."""
    ns = ["ip", "netns", "exec", netns.name]
    port, fake, fport = 15000 + os.getpid() % 1000, "198.18.254.1", 5999
    rules = ("table ip pgwloop {\n chain out {\n  type nat hook output priority -100;\n"
             "  ip daddr %s tcp dport %d dnat to 127.0.0.1:%d\n }\n}\n" % (fake, fport, port))
    r = subprocess.run(ns + ["nft", "-f", "-"], input=rules, capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(ns + ["ip", "route", "add", fake + "/32", "dev", "lo"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    log_path = tmp_path / "pgwardend-nat-loop.log"
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(ns + [pgwardend_bin, "--listen", "127.0.0.1:%d" % port,
                                        "--upstream", "%s:%d" % (fake, fport),
                                        "--workers", "1", "--steer-instance", "pgw_nat_loop",
                                        # The loop, not TLS, is under test: with an
                                        # SSLRequest first, the refusal would reach the
                                        # client only as 08001 with the server's text hidden.
                                        "--tls-server-mode", "disable",
                                        "--admin-socket", str(tmp_path / "admin.sock")],
                                  stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(3):
            c = subprocess.run(ns + [sys.executable, "-c", LOOP_CLIENT, str(port)],
                               capture_output=True, text=True, timeout=60)
            assert c.returncode == 0, c.stderr
            assert "refuses a connection from itself" in c.stdout, c.stdout
        time.sleep(1)
        lines = [harness.parse_logfmt(l) for l in open(log_path).read().splitlines()
                 if "event=" in l]
        starts = [d for d in lines if d.get("event") == "session_start"]
        assert len(starts) == 3, starts  # the three clients; none of the relay's own
        assert len([d for d in lines if d.get("event") == "self_loop"]) == 1, lines
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)


LOOKALIKE = r"""
import os, socket, sys
d = sys.argv[1]
os.mkdir(d)
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(d, sys.argv[2]))
os.chmod(os.path.join(d, sys.argv[2]), 0o777)
s.listen(1)
print("listening", flush=True)
sys.stdin.readline()
"""


def test_a_lookalike_server_socket_blocks_nothing(pg, instance, cgroup, relay_factory,
                                                 unix_dirs, tmp_path):
    """Any user can make a listening socket called .s.PGSQL.<port> in a directory whose name
    carries escape sequences. It is not the server's (another user owns it): attach is not
    refused because of it, and status never prints its path raw."""
    pub, _ = unix_dirs
    public = os.path.join(pub, ".s.PGSQL.%d" % pg.port)
    private = os.path.join(pg.sockdir, ".s.PGSQL.%d" % pg.port)
    fake_dir = "/tmp/pgw-e2e-\x1b]0;pwned\x07-%d" % os.getpid()
    fake = subprocess.Popen(["setpriv", "--reuid=%d" % NOBODY.pw_uid,
                             "--regid=%d" % NOBODY.pw_gid, "--clear-groups", sys.executable,
                             "-c", LOOKALIKE, fake_dir, ".s.PGSQL.%d" % pg.port],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout.readline().strip() == "listening"
        relay = relay_factory(extra_args=["--unix-listen", public, "--unix-upstream", private])
        attach(instance, pg, relay, cgroup, "--unix-socket", private, "--unix-relay", public)
        assert instance.status()["unix"]["exposed"] == []
        text = instance.run("status", check=False).stdout
        assert "\x1b" not in text and "\x07" not in text, text
    finally:
        fake.kill()
        fake.wait(10)
        shutil.rmtree(fake_dir, ignore_errors=True)
