"""Local clients steered by the cgroup hooks into pgwardend, against a real PostgreSQL.

A client dials the server's real address and port. If it runs in the attached cgroup it
reaches the server through pgwardend: the relay logs the session, the server sees the relay's
upstream socket as its peer, and the client's getpeername() still says what it dialled. A
client anywhere else, or any client after detach, reaches the server directly: the server
then sees the client's own port.

Identity: pgwardend reads the hooks' record (steer_origin_lookup()) at accept, and its
session_start line carries route=steered, the dialled address and the process the kernel
recorded; the same record is checked in the kernel map too.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import harness
from conftest import Client

NOBODY = 65534


def attach(instance, pg, relay, cgroup, *extra, v6=False):
    args = ["attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
            "--cgroup", cgroup.path]
    if v6:
        args += ["--relay", "[::1]:%d" % relay.port6]
    return instance.run(*(args + list(extra)))


def session_for(relay, peer, timeout=30.0):
    return relay.wait_for_log(lambda d: d.get("event") == "session_start" and
                              d.get("peer") == peer, timeout=timeout)


def sessions_from(relay, peer):
    return [d for d in relay.log_lines()
            if d.get("event") == "session_start" and d.get("peer") == peer]


def origin_records(instance):
    r = subprocess.run(["bpftool", "map", "dump", "pinned",
                        "/sys/fs/bpf/%s/pgw_origin_tup" % instance.instance, "-j"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = []
    for e in json.loads(r.stdout or "[]"):
        out.append(e.get("formatted", e))
    return out


def assert_identity(instance, cgroup, log, client, dialled_port, uid):
    """The relay knows who connected, as the kernel recorded it at connect(): its session
    log names the route, the dialled address, the process and its cgroup."""
    assert log.get("route") == "steered", log
    assert int(log["pid"]) == client.result["pid"]
    assert int(log["uid"]) == uid
    assert log["comm"] == os.path.basename(sys.executable)[:15]
    assert log["dialled"].endswith(":%d" % dialled_port)
    assert int(log["cgroup_id"]) == os.stat(cgroup.path).st_ino


def test_local_client_steered_ipv4(pg, instance, cgroup, relay_factory, clients):
    relay = relay_factory()
    attach(instance, pg, relay, cgroup)

    steered = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, user="nobody")
    r = steered.result
    assert "error" not in r, r
    assert r["answer"] == 42
    # The client believes it talks to the server it dialled...
    assert r["peer"] == ["127.0.0.1", pg.port]
    # ...the server sees the relay's upstream socket, not the client's...
    assert r["server_saw"][1] != r["local"][1]
    # ...and the relay saw the client.
    log = session_for(relay, "127.0.0.1:%d" % r["local"][1])
    assert_identity(instance, cgroup, log, steered, pg.port, NOBODY)

    # Same query, direct, from outside the cgroup: same answer, and not intercepted.
    direct = clients(pg, "127.0.0.1", pg.port)
    d = direct.result
    assert d["answer"] == r["answer"]
    assert d["server_saw"] == ["127.0.0.1", d["local"][1]]
    assert sessions_from(relay, "127.0.0.1:%d" % d["local"][1]) == []

    st = instance.status()
    assert st["attached"] is True and st["mode"] == "fail-closed"
    assert st["counters"]["steered_ipv4"] >= 1
    assert st["counters"]["getpeername_restored"] >= 1
    assert "*:%d" % pg.port in st["protected"]
    assert {l["hook"] for l in st["links"]} >= {"connect4", "connect6", "getpeername4",
                                                 "getpeername6", "sockops"}
    assert all(l["pinned"] for l in st["links"])
    assert st["leftovers"] == []
    steered.finish()
    direct.finish()


def test_local_client_steered_ipv6(pg, instance, cgroup, relay_factory, clients):
    relay = relay_factory(listen6=True)
    attach(instance, pg, relay, cgroup, v6=True)

    c = clients(pg, "::1", pg.port, cgroup=cgroup)
    r = c.result
    assert "error" not in r, r
    assert r["answer"] == 42
    assert r["peer"] == ["::1", pg.port]
    assert r["server_saw"][1] != r["local"][1]
    log = session_for(relay, "[::1]:%d" % r["local"][1])
    assert_identity(instance, cgroup, log, c, pg.port, 0)
    assert instance.status()["counters"]["steered_ipv6"] >= 1
    c.finish()


def test_relay_mark_is_never_steered(pg, instance, cgroup, relay_factory):
    """The relay's own upstream sockets carry its SO_MARK: a marked connect() to the
    protected port goes to the server even from inside the cgroup, so the relay never
    loops into itself."""
    relay = relay_factory()
    attach(instance, pg, relay, cgroup)
    code = (
        "import os, socket, struct, sys\n"
        "open(sys.argv[1] + '/cgroup.procs', 'w').write(str(os.getpid()))\n"
        "s = socket.socket()\n"
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, 0x5047)\n"
        "s.connect(('127.0.0.1', int(sys.argv[2])))\n"
        "s.sendall(struct.pack('!ii', 8, 80877103))\n"
        "print(s.recv(1).decode())\n")
    r = subprocess.run([sys.executable, "-c", code, cgroup.path, str(pg.port)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("N", "S")
    c = instance.status()["counters"]
    assert c["skipped_relay_mark"] == 1
    assert c["steered_ipv4"] == 0


def test_detach_restores_direct_path(pg, instance, cgroup, relay_factory, clients):
    relay = relay_factory()
    attach(instance, pg, relay, cgroup)
    before = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
    assert before["server_saw"][1] != before["local"][1]

    instance.run("detach")
    st = instance.status()
    assert st["attached"] is False and st["leftovers"] == [] and st["links"] == []
    after = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
    assert "error" not in after, after
    assert after["server_saw"] == ["127.0.0.1", after["local"][1]]
    assert sessions_from(relay, "127.0.0.1:%d" % after["local"][1]) == []


def test_detach_leaves_established_sessions(pg, instance, cgroup, relay_factory, clients):
    relay = relay_factory()
    attach(instance, pg, relay, cgroup)
    c = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup)
    assert "error" not in c.result
    instance.run("detach")
    # The session made before detach still works: send the "done" line and let the client
    # close cleanly; a broken connection would make it exit non-zero.
    c.finish()
    assert c.proc.returncode == 0


def test_fail_closed_when_relay_dies(pg, instance, cgroup, relay_factory, clients):
    relay = relay_factory()
    attach(instance, pg, relay, cgroup)
    relay.signal(signal.SIGKILL)
    relay.proc.wait(30)
    relay.killed = True

    # Steering stays: new connections to the protected port are refused, not let through.
    st = instance.status()
    assert st["attached"] is True and st["mode"] == "fail-closed"
    refused = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
    assert "error" in refused and "refused" in refused["error"].lower(), refused
    # Processes outside the cgroup are unaffected.
    assert clients(pg, "127.0.0.1", pg.port, hold=False).finish()["answer"] == 42

    # A relay back (here on a new port: re-attach updates in place) restores service.
    relay2 = relay_factory()
    attach(instance, pg, relay2, cgroup)
    back = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
    assert back.get("answer") == 42, back
    session_for(relay2, "127.0.0.1:%d" % back["local"][1])


def test_fail_open_when_daemon_dies(pg, instance, cgroup, pgwardend_bin, tmp_path, clients):
    port = harness.free_port()
    # The steering address takes recorded (steered) connections only, so the readiness
    # probe dials a second, explicit listener.
    probe = harness.free_port()
    log_path = tmp_path / "pgwardend-failopen.log"
    argv = [instance.path, "attach", "--fail-open", "--port", str(pg.port), "--relay",
            "127.0.0.1:%d" % port, "--cgroup", cgroup.path, "--",
            pgwardend_bin, "--listen", "127.0.0.1:%d" % port, "--listen", "127.0.0.1:%d" % probe,
            "--upstream", "127.0.0.1:%d" % pg.port, "--workers", "1",
            "--admin-socket", str(tmp_path / "admin.sock")]
    with open(log_path, "wb") as log:
        daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                  stderr=subprocess.STDOUT, env=instance.env(),
                                  start_new_session=True)
    try:
        harness.wait_for_port("127.0.0.1", probe, 60, daemon, "pgwardend")
        st = instance.status()
        assert st["attached"] is True and st["mode"] == "fail-open", st
        assert st["pin_dir_present"] is False
        # The links belong to the daemon process (pgwardenctl exec'd into it).
        assert all(daemon.pid in l["held_by"] for l in st["links"]), st["links"]

        via = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
        assert via.get("answer") == 42, via
        assert via["server_saw"][1] != via["local"][1]

        daemon.send_signal(signal.SIGKILL)
        daemon.wait(30)
        st = instance.status()
        assert st["attached"] is False and st["leftovers"] == [], st
        direct = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
        assert direct.get("answer") == 42, direct
        assert direct["server_saw"] == ["127.0.0.1", direct["local"][1]]
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait(30)


def test_unix_socket_clients(pg, instance, cgroup, relay_factory):
    """connect_unix (kernel >= 6.7): a local client of PostgreSQL's own Unix socket lands on
    pgwardend's Unix listener and reaches the server through it, identified by its
    credentials; peer authentication still sees the client's own user. Outside the cgroup,
    and after detach, the same path reaches PostgreSQL directly."""
    relay_dir = tempfile.mkdtemp(prefix="pgwarden-e2e-unix-")
    os.chmod(relay_dir, 0o755)
    pg_sock = os.path.join(pg.sockdir, ".s.PGSQL.%d" % pg.port)
    relay_sock = os.path.join(relay_dir, "relay.sock")
    pw = pwd.getpwnam("postgres")

    def psql_in_cgroup():
        # Joins the cgroup as root, then becomes postgres: exec keeps the cgroup.
        return subprocess.run(
            ["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup.path,
             "setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid, "--init-groups",
             os.path.join(pg.bindir, "psql"), "-X", "-A", "-t", "-h", pg.sockdir,
             "-p", str(pg.port), "-U", "postgres", "-d", "postgres",
             "-c", "SELECT current_user"],
            capture_output=True, text=True, timeout=60)

    def unix_sessions():
        return [d for d in relay.log_lines()
                if d.get("event") == "session_start" and d.get("peer") == "unix"]

    try:
        relay = relay_factory(extra_args=["--unix-listen", relay_sock,
                                          "--unix-upstream", pg_sock])
        if not instance.status()["unix"]["kernel_supports_connect_unix"]:
            pytest.skip("kernel has no cgroup/connect_unix (needs 6.7)")
        attach(instance, pg, relay, cgroup, "--unix-socket", pg_sock, "--unix-relay", relay_sock)
        assert instance.status()["unix"]["steered"] is True

        r = psql_in_cgroup()
        assert r.returncode == 0 and r.stdout.strip() == "postgres", r.stderr
        log = relay.wait_for_log({"event": "session_start", "peer": "unix"})
        assert log["route"] == "steered", log
        assert log["comm"] == "psql"
        assert int(log["uid"]) == pw.pw_uid
        assert int(log["cgroup_id"]) == os.stat(cgroup.path).st_ino
        assert log["upstream"] == "unix:" + pg_sock
        assert instance.status()["counters"]["steered_unix"] == 1

        # Outside the cgroup the same path still reaches PostgreSQL, not the relay.
        assert pg._admin_psql("SELECT 7").strip() == "7"
        assert len(unix_sessions()) == 1

        # After detach the client in the cgroup goes straight to the server.
        instance.run("detach")
        r = psql_in_cgroup()
        assert r.returncode == 0 and r.stdout.strip() == "postgres", r.stderr
        assert len(unix_sessions()) == 1
    finally:
        shutil.rmtree(relay_dir, ignore_errors=True)


def test_bad_input(pg, instance, cgroup, relay_factory):
    dead = harness.free_port()  # nothing listens there
    r = instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % dead,
                     "--cgroup", cgroup.path, check=False)
    assert r.returncode == 3, r
    lines = r.stderr.strip().splitlines()
    err = [ln for ln in lines if ln.startswith("pgwardenctl: ")]
    assert len(err) == 1 and "relay is not listening" in err[0], r.stderr
    st = instance.status()
    assert st["attached"] is False and st["links"] == [] and st["pin_dir_present"] is False

    relay = relay_factory()
    good = ["--relay", "127.0.0.1:%d" % relay.port, "--cgroup", cgroup.path]
    # No permission: one line, nothing attached.
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        instance.path, "attach", "--port", str(pg.port)] + good,
                       capture_output=True, text=True, env=instance.env(), timeout=60)
    assert r.returncode == 1, r
    assert r.stderr.count("\n") == 1 and "needs root" in r.stderr, r.stderr
    assert instance.status()["attached"] is False

    r = instance.run("attach", *good, check=False)
    assert r.returncode == 2 and "no --port" in r.stderr
    r = instance.run("attach", "--port", "0", *good, check=False)
    assert r.returncode == 2
    r = instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
                     "--cgroup", cgroup.path + "-missing", check=False)
    assert r.returncode == 1 and "cannot open cgroup" in r.stderr
    r = instance.run("attach", "--port", str(pg.port), "--fail-open", *good, check=False)
    assert r.returncode == 2 and "pgwardend" in r.stderr
    r = instance.run("attach", "--port", str(relay.port), *good, check=False)
    assert r.returncode == 2 and "loop" in r.stderr
    assert instance.status()["attached"] is False
    if instance.status()["unix"]["kernel_supports_connect_unix"]:
        # The Unix relay is checked like the TCP one: nothing accepts there, nothing attached.
        dead_sock = "/run/pgwarden-e2e-%d-none.sock" % os.getpid()
        r = instance.run("attach", "--port", str(pg.port), "--unix-socket",
                         os.path.join(pg.sockdir, ".s.PGSQL.%d" % pg.port),
                         "--unix-relay", dead_sock, *good, check=False)
        assert r.returncode == 3, r
        assert "relay is not listening on unix:%s" % dead_sock in r.stderr, r.stderr
        assert instance.status()["attached"] is False

    # The admission gate: nft's queue rule where the kernel has the expression, else the xt
    # NFQUEUE fallback (this host). Either way detach removes it.
    instance.run("attach", "--port", str(pg.port), "--gate-queue", "4243", *good)
    st = instance.status()
    assert st["gate"]["enabled"] is True and st["gate"]["queue"] == 4243, st
    chain = "PGWQ_" + instance.instance[:23]
    if st["gate"]["rule"].startswith("xt"):
        rules = subprocess.run(["iptables-legacy", "-S"], capture_output=True, text=True).stdout
        assert "-A INPUT -j %s" % chain in rules
        assert "--dport %d" % pg.port in rules and "--queue-num 4243" in rules
    instance.run("detach")
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        rules = subprocess.run([tool, "-S"], capture_output=True, text=True).stdout
        assert chain not in rules, rules
    st = instance.status()
    assert st["attached"] is False and st["leftovers"] == [], st

    # Attached once; a second attach elsewhere is refused, the first stays intact.
    instance.run("attach", "--port", str(pg.port), *good)
    r = instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
                     "--cgroup", cgroup.root, check=False)
    assert r.returncode == 1 and "another cgroup" in r.stderr
    st = instance.status()
    assert st["attached"] is True and st["cgroup_id"] == os.stat(cgroup.path).st_ino


def test_status_human_and_stale_cleanup(pg, instance, cgroup, relay_factory):
    relay = relay_factory()
    attach(instance, pg, relay, cgroup)
    # Exit 3 when no daemon answers on the default admin socket: the steering part is
    # printed either way.
    text = instance.run("status", check=False).stdout
    assert "steering: attached (fail-closed)" in text
    assert "*:%d" % pg.port in text
    # A crash between runs: links detached behind our back, pins left. status names the
    # leftover and the next attach cleans it.
    for name in os.listdir("/sys/fs/bpf/%s" % instance.instance):
        if name.startswith("link_"):
            subprocess.run(["bpftool", "link", "detach", "pinned",
                            "/sys/fs/bpf/%s/%s" % (instance.instance, name)], check=True)
    st = instance.status()
    assert st["attached"] is False and st["leftovers"], st
    attach(instance, pg, relay, cgroup)
    st = instance.status()
    assert st["attached"] is True and st["leftovers"] == [], st
