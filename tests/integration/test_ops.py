"""Running pgwarden as a service (issue #14): versions, kill on the server side, the two
latency clocks, logging priorities and journal fields, the file-descriptor warning, the
read-only admin group, the daemon's own steering instance in status, reload metrics, and
seamless restarts under load, against a real PostgreSQL 15.

Every process a test starts it stops; daemons a restart started (successors) are found
through the admin socket and stopped by pid at the end. The pytest process is made a child
subreaper, so a successor whose parent (the daemon it replaced) exits is reaped here and
never left as a zombie.
"""

import ctypes
import grp
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time

import pytest

import harness
import wire
from test_admin import (_connect, _find, _scrape, _sum, ctl_sessions, metrics_port_args,
                        run_ctl, tool, wait_admin_socket, wait_metrics, wait_until)

WAIT = 30.0
PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@pytest.fixture
def ctl(pgwardend_bin):
    return tool(pgwardend_bin, "pgwardenctl")


@pytest.fixture
def successors():
    """Pids of daemons started by a seamless restart: stopped (SIGTERM, then SIGKILL) and
    reaped at the end of the test."""
    pids = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 30
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid if not os.path.exists("/proc/%d" % pid) else 0
            if done:
                break
            time.sleep(0.1)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass


def admin_status(ctl, sock):
    return json.loads(run_ctl(ctl, sock, "status", "--json").stdout)["daemon"]


def write_wrapper(path, body):
    """An executable shell script standing in for pgwardend ("$@" are its arguments)."""
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, 0o755)
    return path


# --------------------------------------------------------------------------------------------
# one version


def test_one_version_everywhere(relay_factory, pgwardend_bin, ctl):
    port, args = metrics_port_args()
    relay = relay_factory(extra_args=args)
    sock = wait_admin_socket(relay)
    wait_metrics(port, relay)
    bindir = os.path.dirname(pgwardend_bin)
    versions = set()
    for name in ("pgwardend", "pgwardenctl", "pgwarden-top"):
        for flag in ("-V", "--version"):
            r = subprocess.run([os.path.join(bindir, name), flag], capture_output=True,
                               text=True, timeout=10)
            assert r.returncode == 0, (name, flag, r.stderr)
            m = re.match(r"^%s (\S+) \(commit ([0-9a-f]{40}(-dirty)?|unknown)" % re.escape(name),
                         r.stdout)
            assert m, (name, flag, r.stdout)
            versions.add((m.group(1), m.group(2)))
    assert len(versions) == 1, versions
    version, commit = versions.pop()
    st = admin_status(ctl, sock)
    assert (st["version"], st["commit"]) == (version, commit)
    started = relay.wait_for_log({"event": "started"})
    assert (started["version"], started["commit"]) == (version, commit)
    _, samples = _scrape(port)
    assert samples[("pgwarden_build_info",
                    (("commit", commit), ("version", version)))] == 1


# --------------------------------------------------------------------------------------------
# kill: the server side too


def _backend_alive(pg, pid):
    return pg._admin_psql("SELECT count(*) FROM pg_stat_activity WHERE pid = %d" % pid).strip() == "1"


def _lock_holders(pg, table):
    return int(pg.psql(
        "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE c.relname = '%s' AND l.granted" % table).strip())


def _run_in_thread(fn):
    box = {}

    def run():
        try:
            box["result"] = fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            box["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def test_kill_cancels_the_statement_ends_the_backend_and_releases_its_lock(relay_factory, pg,
                                                                              ctl):
    import psycopg
    relay = relay_factory()
    sock = wait_admin_socket(relay)
    pg.psql("DROP TABLE IF EXISTS pgw_kill_lock")
    pg.psql("CREATE TABLE pgw_kill_lock (x int)")
    conn = psycopg.connect(relay.dsn(application_name="itest-kill-server"), autocommit=False)
    try:
        conn.execute("LOCK TABLE pgw_kill_lock IN ACCESS EXCLUSIVE MODE")
        backend = conn.info.backend_pid
        t, box = _run_in_thread(lambda: conn.execute("SELECT pg_sleep(120)"))
        wait_until(lambda: pg._admin_psql(
            "SELECT state FROM pg_stat_activity WHERE pid = %d" % backend).strip() == "active",
            what="pg_sleep running")
        s = _find(ctl_sessions(ctl, sock), application_name="itest-kill-server")[0]
        r = run_ctl(ctl, sock, "kill", s["id"])
        assert "backend pid %d" % backend in r.stdout, r.stdout
        assert "cancelling its running statement" in r.stdout and "terminating" in r.stdout
        t.join(WAIT)
        assert not t.is_alive(), "the client still waits after kill"
        assert isinstance(box.get("error"), psycopg.OperationalError), box
        # The server side: the backend is gone and its lock released, within seconds (before
        # the fix it ran pg_sleep(120) to the end, holding the lock).
        wait_until(lambda: not _backend_alive(pg, backend), timeout=10,
                   what="backend %d gone from pg_stat_activity" % backend)
        assert _lock_holders(pg, "pgw_kill_lock") == 0
        pg.psql("SET lock_timeout = '2s'; LOCK TABLE pgw_kill_lock IN ACCESS EXCLUSIVE MODE")
        sent = relay.wait_for_log({"event": "backend_cancel_sent", "session": s["id"]})
        assert sent["level"] == "notice" and sent["backend_pid"] == str(backend)
    finally:
        conn.close()
        pg.psql("DROP TABLE IF EXISTS pgw_kill_lock")


def test_kill_cancel_only_stops_the_statement_and_keeps_the_session(relay_factory, pg, ctl):
    import psycopg
    relay = relay_factory()
    sock = wait_admin_socket(relay)
    with psycopg.connect(relay.dsn(application_name="itest-kill-cancel"), autocommit=True) as conn:
        backend = conn.info.backend_pid
        t, box = _run_in_thread(lambda: conn.execute("SELECT pg_sleep(120)"))
        wait_until(lambda: pg._admin_psql(
            "SELECT state FROM pg_stat_activity WHERE pid = %d" % backend).strip() == "active",
            what="pg_sleep running")
        s = _find(ctl_sessions(ctl, sock), application_name="itest-kill-cancel")[0]
        r = run_ctl(ctl, sock, "--json", "kill", "--cancel", s["id"])
        reply = json.loads(r.stdout)
        assert reply["ok"] and reply["mode"] == "cancel" and reply["backend_pid"] == backend
        assert reply["server_cancel"] is True
        t.join(WAIT)
        assert isinstance(box.get("error"), psycopg.errors.QueryCanceled), box
        # Same session, same backend, still usable.
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == backend
        assert _find(ctl_sessions(ctl, sock), id=s["id"])


# --------------------------------------------------------------------------------------------
# the two clocks


def test_client_and_server_clocks_differ(relay_factory):
    """pgwarden_query_duration_seconds is the client's clock (first byte of the Query read
    from the client → its ReadyForQuery written to the client); the upstream one is the
    server's (last byte written to the server → the server's ReadyForQuery read). A client
    that takes 600 ms to send its Query shows in the first only."""
    port, args = metrics_port_args()
    relay = relay_factory(extra_args=args)
    wait_metrics(port, relay)
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        msgs = conn.login(relay.user, relay.password, relay.dbname)
        assert msgs[-1].type == "Z"
        q = wire.query("SELECT 1")
        conn.send(q[:7])
        time.sleep(0.6)
        conn.send(q[7:])
        assert conn.recv_until("Z")[-1].type == "Z"
        # The relay observes the client's clock just after the ReadyForQuery left, so on a
        # loaded host a scrape can still come first: wait for the observation.
        def observed():
            samples = _scrape(port)[1]
            return samples if _sum(samples, "pgwarden_query_duration_seconds_count") else None

        s = wait_until(observed, what="the query's duration observed")
    assert _sum(s, "pgwarden_query_duration_seconds_count") == 1
    assert _sum(s, "pgwarden_upstream_duration_seconds_count") == 1
    client = _sum(s, "pgwarden_query_duration_seconds_sum")
    server = _sum(s, "pgwarden_upstream_duration_seconds_sum")
    assert client >= 0.55, (client, server)
    assert server < 0.3, (client, server)
    assert client - server >= 0.4, (client, server)


# --------------------------------------------------------------------------------------------
# worker placement


def _worker_cpus(pid):
    """{thread name: set of CPUs it may run on} for the daemon's worker threads."""
    found = {}
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
            name = f.read().strip()
        if name.startswith("pgw-worker-"):
            found[name] = os.sched_getaffinity(int(tid))
    return found


def test_workers_are_pinned_in_turn_within_the_daemons_cpus(relay_factory):
    allowed = sorted(os.sched_getaffinity(0))
    relay = relay_factory(workers=len(allowed) + 1)
    want = {"pgw-worker-%d" % i: {allowed[i % len(allowed)]} for i in range(len(allowed) + 1)}
    assert _worker_cpus(relay.proc.pid) == want
    assert ["worker_cpu=%d" % c for c in (allowed + allowed[:1])] == re.findall(
        r"worker_cpu=\d+", relay.raw_log())
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        assert conn.login(relay.user, relay.password, relay.dbname)[-1].type == "Z"

    unpinned = relay_factory(extra_args=["--pin-workers", "false"])
    assert _worker_cpus(unpinned.proc.pid) == {
        "pgw-worker-0": set(allowed), "pgw-worker-1": set(allowed)}
    assert "worker_cpu" not in unpinned.raw_log()

    # workers 0: one per two CPUs of the mask, rounded up, pinned in turn.
    default = relay_factory(workers=0)
    count = (len(allowed) + 1) // 2
    assert _worker_cpus(default.proc.pid) == {
        "pgw-worker-%d" % i: {allowed[i]} for i in range(count)}

    # A daemon started on a narrower mask (taskset, a cpuset) sizes and pins by it.
    os.sched_setaffinity(0, {allowed[-1]})
    try:
        narrowed = relay_factory(workers=0)
    finally:
        os.sched_setaffinity(0, set(allowed))
    assert _worker_cpus(narrowed.proc.pid) == {"pgw-worker-0": {allowed[-1]}}


# --------------------------------------------------------------------------------------------
# logging: the trail, priorities, the journal, syslog, the fd warning


def _raw_session(relay, app):
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        msgs = conn.login(relay.user, relay.password, relay.dbname,
                          params={"application_name": app})
        assert msgs[-1].type == "Z", msgs
        conn.query("SELECT 1")
        conn.send(wire.terminate())


def test_session_trail_is_kept_at_log_level_error(relay_factory):
    relay = relay_factory(extra_args=["--log-level", "error"])
    _raw_session(relay, "itest-trail")
    start = relay.wait_for_log({"event": "session_start", "application_name": "itest-trail"})
    end = relay.wait_for_log({"event": "session_end", "application_name": "itest-trail"})
    assert start["level"] == end["level"] == "notice"
    assert relay.wait_for_log({"event": "started"})["level"] == "notice"
    assert not [d for d in relay.log_lines() if d.get("level") == "info"]


def test_failures_are_logged_as_warnings(relay_factory, pg):
    dead = harness.free_port()
    relay = relay_factory(upstream=("127.0.0.1", dead))
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        msgs = conn.login(relay.user, relay.password, relay.dbname,
                          params={"application_name": "itest-dead-upstream"})
        assert msgs[-1].type == "E" and msgs[-1].error_fields()["C"] == "08006"
    end = relay.wait_for_log({"event": "session_end", "application_name": "itest-dead-upstream"})
    assert end["level"] == "warn" and end["reason"] == "upstream connect failed"


def test_fd_limit_that_cannot_cover_max_connections_is_a_warning(relay_factory, pgwardend_bin,
                                                                 pg, tmp_path):
    wrapper = write_wrapper(str(tmp_path / "low-nofile"),
                            'exec prlimit --nofile=256:256 "$PGW_BIN" "$@"\n')
    relay = harness.Relay(wrapper, (pg.host, pg.port), pg, str(tmp_path),
                          extra_args=["--max-connections", "1000"],
                          env={"PGW_BIN": pgwardend_bin})
    relay.start()
    try:
        line = relay.wait_for_log({"event": "limits"})
        assert line["level"] == "warn"
        assert "(256)" in line["msg"] and "max_connections (1000)" in line["msg"], line
        assert "LimitNOFILE" in line["msg"]
    finally:
        relay.stop()
    # Enough descriptors: no warning.
    relay = relay_factory(extra_args=["--max-connections", "100"])
    relay.wait_for_log({"event": "started"})
    assert not [d for d in relay.log_lines() if d.get("event") == "limits" and d["level"] == "warn"]


def _journal_entries(data):
    """Fields of one native journal protocol datagram: KEY=value lines, or KEY, newline, a
    64-bit little-endian length and the binary value, newline (systemd's
    JOURNAL_NATIVE_PROTOCOL). Repeated keys keep every value."""
    fields = []
    i = 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields.append((k.decode(), v))
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            fields.append((line.decode(), data[nl + 9:nl + 9 + n]))
            i = nl + 9 + n + 1
    return fields


class DgramSink:
    """A Unix datagram socket that collects what a daemon sends to it."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        os.chmod(path, 0o666)
        self.sock.settimeout(0.2)
        self.got = []

    def drain(self):
        while True:
            try:
                self.got.append(self.sock.recv(1 << 20))
            except socket.timeout:
                return self.got

    def close(self):
        self.sock.close()


def test_journal_gets_priorities_and_fields(relay_factory, pgwardend_bin, pg, tmp_path):
    """Under systemd (JOURNAL_STREAM names stderr) the lines go to the journal natively:
    PRIORITY, SYSLOG_IDENTIFIER, MESSAGE, one PGWARDEN_* field per key. The journal socket
    is a fake one, put in place in a private mount namespace."""
    sink = DgramSink(str(tmp_path / "journal.sock"))
    wrapper = write_wrapper(str(tmp_path / "in-journal"), r'''
exec unshare -m --propagation private sh -c '
	mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal &&
	ln -s "$PGW_SINK" /run/systemd/journal/socket || exit 97
	JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$PGW_BIN" "$@"' sh "$@"
''')
    relay = harness.Relay(wrapper, (pg.host, pg.port), pg, str(tmp_path),
                          env={"PGW_BIN": pgwardend_bin, "PGW_SINK": sink.path})
    relay.start()
    try:
        # A peer's newline and "=" must stay inside one field's value.
        _raw_session(relay, "itest-journal\nPRIORITY=0")
        wait_until(lambda: any(b"PGWARDEN_EVENT=session_end" in d for d in sink.drain()),
                   what="session_end in the journal")
        entries = [_journal_entries(d) for d in sink.got]
    finally:
        relay.stop()
        sink.close()
    by_event = {}
    for e in entries:
        f = dict(e)
        by_event.setdefault(f.get("PGWARDEN_EVENT", b"").decode(), []).append((e, f))
    e, f = by_event["session_start"][0]
    assert [k for k, _ in e].count("PRIORITY") == 1
    assert f["PRIORITY"] == b"5" and f["SYSLOG_IDENTIFIER"] == b"pgwardend"
    assert f["MESSAGE"].startswith(b"event=session_start ")
    assert re.fullmatch(rb"[0-9a-f]{32}", f["PGWARDEN_SESSION"])
    assert f["PGWARDEN_USER"] == b"pgw" and f["PGWARDEN_ROUTE"] == b"explicit"
    assert f["PGWARDEN_APPLICATION_NAME"] == b"itest-journal\\x0aPRIORITY=0"
    assert b"\n" not in f["MESSAGE"]
    e, f = by_event["session_end"][0]
    assert f["PRIORITY"] == b"5" and f["PGWARDEN_REASON"] == b"client terminated"
    e, f = by_event["started"][0]
    assert f["PRIORITY"] == b"5" and f["PGWARDEN_PID"] == str(relay.proc.pid).encode()
    # Everything went to the journal, nothing to stderr.
    assert relay.log_lines() == []


def test_syslog_when_stderr_goes_nowhere(relay_factory, pgwardend_bin, pg, tmp_path):
    """Standard error on /dev/null (a daemon started by a supervisor that discards it): auto
    picks syslog, facility daemon, with the same priorities."""
    sink = DgramSink(str(tmp_path / "log.sock"))
    olddev = tmp_path / "olddev"
    olddev.mkdir()
    wrapper = write_wrapper(str(tmp_path / "to-syslog"), r'''
exec unshare -m --propagation private sh -c '
	mount --bind /dev "$PGW_OLDDEV" && mount -t tmpfs -o mode=755 tmpfs /dev &&
	touch /dev/null && mount --bind "$PGW_OLDDEV/null" /dev/null &&
	ln -s "$PGW_SINK" /dev/log || exit 97
	exec "$PGW_BIN" "$@" 2>/dev/null' sh "$@"
''')
    relay = harness.Relay(wrapper, (pg.host, pg.port), pg, str(tmp_path),
                          env={"PGW_BIN": pgwardend_bin, "PGW_SINK": sink.path,
                               "PGW_OLDDEV": str(olddev)})
    relay.start()
    try:
        _raw_session(relay, "itest-syslog")
        wait_until(lambda: any(b"event=session_end" in d for d in sink.drain()),
                   what="session_end in syslog")
    finally:
        relay.stop()
        sink.close()
    lines = [d.decode() for d in sink.got]

    def pri(event):
        for ln in lines:
            m = re.match(r"^<(\d+)>.* pgwardend\[(\d+)\]: event=%s( |$)" % event, ln)
            if m:
                return int(m.group(1))
        raise AssertionError("no %s line in %r" % (event, lines))
    daemon = 3 << 3
    assert pri("session_start") == daemon | 5
    assert pri("session_end") == daemon | 5
    assert pri("started") == daemon | 5
    assert pri("admin_listen") == daemon | 6


# --------------------------------------------------------------------------------------------
# the read-only admin group


@pytest.fixture
def read_group():
    name = "pgwtest%d" % os.getpid()
    subprocess.run(["groupadd", "--system", name], check=True, capture_output=True)
    try:
        yield name, grp.getgrnam(name).gr_gid
    finally:
        subprocess.run(["groupdel", name], capture_output=True)


def _as_nobody(ctl, sock, *args, groups=None, caps=None):
    cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup"]
    cmd += ["--groups=%s" % ",".join(str(g) for g in groups)] if groups else ["--clear-groups"]
    if caps:
        cmd += ["--inh-caps=+%s" % caps, "--ambient-caps=+%s" % caps]
    return subprocess.run(cmd + [ctl, "--socket", sock] + list(args), capture_output=True,
                          text=True, timeout=30)


def test_read_only_group_reads_and_is_refused_the_rest(relay_factory, ctl, read_group, pg):
    name, gid = read_group
    top = tempfile.mkdtemp(prefix="pgwtest-ro-", dir="/tmp")
    try:
        os.chmod(top, 0o755)
        sock = os.path.join(top, "run", "admin.sock")
        relay = relay_factory(extra_args=["--admin-read-group", name, "--admin-socket", sock])
        wait_admin_socket(relay)
        st = os.stat(sock)
        assert oct(st.st_mode & 0o777) == oct(0o660) and st.st_gid == gid
        with _connect(relay, application_name="itest-ro") as conn:
            conn.execute("SELECT 1")
            s = wait_until(lambda: _find(ctl_sessions(ctl, sock), application_name="itest-ro"),
                           what="session listed")[0]
            for args in (["status"], ["sessions"], ["sessions", "--json"], ["metrics"]):
                r = _as_nobody(ctl, sock, *args, groups=[gid])
                assert r.returncode == 0, (args, r.stderr)
            for args in (["kill", s["id"]], ["kill", "--cancel", s["id"]], ["reload"], ["restart"]):
                r = _as_nobody(ctl, sock, *args, groups=[gid])
                assert r.returncode == 1 and "forbidden" in r.stderr, (args, r.stdout, r.stderr)
                r = _as_nobody(ctl, sock, "--json", *args, groups=[gid])
                reply = json.loads(r.stdout)
                assert r.returncode == 1 and reply["ok"] is False
                assert reply["error"]["code"] == "forbidden", reply
            for args in (["attach", "--port", "5432", "--relay", "127.0.0.1:1"], ["detach"]):
                r = _as_nobody(ctl, sock, "--json", *args, groups=[gid])
                assert r.returncode != 0 and json.loads(r.stdout)["ok"] is False, (args, r.stdout)
            # The session is untouched by all that.
            assert conn.execute("SELECT 1").fetchone() == (1,)
            # Not in the group: the directory keeps it out...
            r = _as_nobody(ctl, sock, "--json", "status")
            assert r.returncode == 1 and json.loads(r.stdout)["daemon_error"]["code"] == "forbidden"
            # ...and a process that gets past the file permissions anyway is refused by the
            # daemon's own check of its credentials.
            r = _as_nobody(ctl, sock, "--json", "sessions", caps="dac_override")
            assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "forbidden", r
        refusals = [d for d in relay.log_lines() if d.get("event") == "admin_refused"]
        assert {d.get("command") for d in refusals} >= {"kill", "reload", "restart"}
        assert all(d["level"] == "warn" for d in refusals)
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --------------------------------------------------------------------------------------------
# status, metrics of reloads


def test_status_shows_the_daemons_steering_instance(relay_factory, ctl):
    relay = relay_factory(extra_args=["--steer-instance", "pgwtest-inst"])
    sock = wait_admin_socket(relay)
    env = dict(os.environ, PGWARDEN_INSTANCE="not-this-one")
    r = subprocess.run([ctl, "--socket", sock, "status", "--json"], capture_output=True,
                       text=True, env=env, timeout=30)
    out = json.loads(r.stdout)
    assert out["daemon"]["steer_instance"] == "pgwtest-inst"
    assert out["steering"]["instance"] == "pgwtest-inst"
    r = subprocess.run([ctl, "--socket", sock, "status", "--instance", "pgwtest-other", "--json"],
                       capture_output=True, text=True, env=env, timeout=30)
    assert json.loads(r.stdout)["steering"]["instance"] == "pgwtest-other"
    r = subprocess.run([ctl, "--socket", sock, "status"], capture_output=True, text=True,
                       env=env, timeout=30)
    assert "instance pgwtest-inst" in r.stdout


def test_reload_outcome_metrics(relay_factory, ctl):
    port, args = metrics_port_args()
    relay = relay_factory(extra_args=args, config_text="log_level: info\n")
    sock = wait_admin_socket(relay)
    wait_metrics(port, relay)
    _, s = _scrape(port)
    assert s[("pgwarden_config_last_reload_successful", ())] == 1
    first = s[("pgwarden_config_last_reload_success_timestamp_seconds", ())]
    assert abs(first - s[("process_start_time_seconds", ())]) < 5
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                 "process_open_fds", "process_max_fds"):
        assert s[(name, ())] > 0, name
    with open(relay.config_path, "w") as f:
        f.write("max_connections: lots\n")
    r = run_ctl(ctl, sock, "reload", check=False)
    assert r.returncode == 1 and "reload_failed" in r.stderr
    _, s = _scrape(port)
    assert s[("pgwarden_config_last_reload_successful", ())] == 0
    assert s[("pgwarden_config_last_reload_success_timestamp_seconds", ())] == first
    time.sleep(0.05)
    with open(relay.config_path, "w") as f:
        f.write("log_level: info\n")
    run_ctl(ctl, sock, "reload")
    _, s = _scrape(port)
    assert s[("pgwarden_config_last_reload_successful", ())] == 1
    assert s[("pgwarden_config_last_reload_success_timestamp_seconds", ())] > first


# --------------------------------------------------------------------------------------------
# seamless restart


def _restart(ctl, sock, successors):
    r = run_ctl(ctl, sock, "--json", "restart", timeout=60)
    reply = json.loads(r.stdout)
    assert reply["ok"] and reply["restarted"], reply
    successors.append(reply["pid"])
    return reply


def test_restart_hands_over_and_the_old_daemon_drains(relay_factory, ctl, successors, pg):
    import psycopg
    relay = relay_factory(config_text="log_level: info\n")
    sock = wait_admin_socket(relay)
    old = relay.proc.pid
    with psycopg.connect(relay.dsn(application_name="itest-handover"), autocommit=True) as conn:
        before = conn.info.backend_pid
        reply = _restart(ctl, sock, successors)
        assert reply["previous_pid"] == old
        st = admin_status(ctl, sock)
        assert st["pid"] == reply["pid"] and st["previous_pid"] == old
        # The open session lives on in the old daemon; new ones go to the new one.
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == before
        with psycopg.connect(relay.dsn(application_name="itest-after"), autocommit=True) as c2:
            c2.execute("SELECT 1")
            assert _find(ctl_sessions(ctl, sock), application_name="itest-after")
        assert relay.proc.poll() is None, "the old daemon left before its session ended"
    relay.proc.wait(WAIT)
    assert relay.proc.returncode == 0
    assert harness.sanitizer_reports(relay.raw_log()) == []


def test_cancel_and_kill_reach_sessions_of_the_previous_daemon(relay_factory, ctl, successors, pg):
    import psycopg
    relay = relay_factory()
    sock = wait_admin_socket(relay)
    with psycopg.connect(relay.dsn(application_name="itest-prev"), autocommit=True) as conn:
        backend = conn.info.backend_pid
        sid = wait_until(lambda: _find(ctl_sessions(ctl, sock), application_name="itest-prev"),
                         what="listed")[0]["id"]
        _restart(ctl, sock, successors)
        # The client's CancelRequest reaches the new daemon, which holds no key for it: the
        # old one does, and cancels.
        t, box = _run_in_thread(lambda: conn.execute("SELECT pg_sleep(60)"))
        wait_until(lambda: pg._admin_psql(
            "SELECT state FROM pg_stat_activity WHERE pid = %d" % backend).strip() == "active",
            what="pg_sleep running")
        conn.cancel()
        t.join(WAIT)
        assert isinstance(box.get("error"), psycopg.errors.QueryCanceled), box
        # A kill of a session the new daemon does not have is passed on too.
        r = run_ctl(ctl, sock, "--json", "kill", sid)
        assert json.loads(r.stdout)["forwarded_to_pid"] == relay.proc.pid
        wait_until(lambda: not _backend_alive(pg, backend), timeout=10, what="backend gone")
    relay.proc.wait(WAIT)


def test_restart_under_pgbench_loses_nothing(relay_factory, ctl, successors, pg):
    """Two restarts while pgbench runs: one client set on long-lived connections, one
    connecting for every transaction. No client error, no refused connection."""
    relay = relay_factory(workers=2, extra_args=["--max-connections", "200"])
    sock = wait_admin_socket(relay)
    bench = os.path.join(pg.bindir, "pgbench")
    subprocess.run([bench, "-i", "-q", "-s", "1"], env=pg.env(), check=True, capture_output=True,
                   timeout=300)
    procs = []
    for args in (["-c", "4", "-j", "2"], ["-C", "-c", "2", "-j", "1"]):
        procs.append(subprocess.Popen([bench, "-n", "-T", "12", "-P", "3"] + args,
                                      env=relay.env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    try:
        time.sleep(3)
        _restart(ctl, sock, successors)
        time.sleep(3)
        _restart(ctl, sock, successors)
        outs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
        assert re.search(r"number of failed transactions: 0 ", out), out
        m = re.search(r"number of transactions actually processed: (\d+)", out)
        assert m and int(m.group(1)) > 0, out
        assert "error" not in out.lower() and "refused" not in out.lower(), out
    relay.proc.wait(WAIT)
    assert relay.proc.returncode == 0
    refused = [d for d in relay.log_lines() if d.get("event") == "connection_refused"]
    assert refused == []


# --------------------------------------------------------------------------------------------
# the handover channel against a hostile predecessor


HANDOVER_MAGIC = 0x48574750


def _handover_msg(msg_type, count=0, payload=b""):
    return struct.pack("<IHHIi", HANDOVER_MAGIC, 1, msg_type, count, os.getpid()) + payload


def _wire_socket(kind, index, addr):
    host, port = addr
    sa = struct.pack("<HH4s", socket.AF_INET, socket.htons(port), socket.inet_aton(host))
    sa = sa.ljust(128, b"\0")
    return struct.pack("<BBHI", kind, 0, index, 16) + sa + b"\0" * 108 + b"\0" * 4


def _spawn_successor(pgwardend_bin, pg, tmp_path, chan_fd):
    port = harness.free_port()
    argv = [pgwardend_bin, "--listen", "127.0.0.1:%d" % port, "--upstream",
            "%s:%d" % (pg.host, pg.port), "--workers", "1", "--admin-socket",
            str(tmp_path / "succ.sock")]
    env = dict(os.environ, PGWARDEN_HANDOVER_FD=str(chan_fd))
    return subprocess.Popen(argv, env=env, pass_fds=(chan_fd,), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True), port


def test_successor_refuses_a_socket_that_is_not_what_its_entry_says(pgwardend_bin, pg, tmp_path):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lying = socket.socket()
    lying.bind(("127.0.0.1", 0))
    lying.listen()
    try:
        proc, port = _spawn_successor(pgwardend_bin, pg, tmp_path, theirs.fileno())
        theirs.close()
        # The entry claims the successor's own listen address; the socket is elsewhere.
        entry = _wire_socket(1, 0, ("127.0.0.1", port))
        socket.send_fds(ours, [_handover_msg(1, 1, entry)], [lying.fileno()])
        ours.send(_handover_msg(2))
        out = proc.communicate(timeout=WAIT)[0]
        assert proc.returncode != 0
        assert "is not the listener its entry describes; refused" in out, out
        assert not os.path.exists(tmp_path / "succ.sock")
    finally:
        ours.close()
        lying.close()


def test_successor_refuses_garbage_and_descriptors_of_the_wrong_kind(pgwardend_bin, pg,
                                                                     tmp_path):
    cases = []
    with open(os.devnull, "rb") as f:
        cases.append((_handover_msg(1, 1, _wire_socket(1, 0, ("127.0.0.1", 1))), [f.fileno()],
                      "is not the listener"))
        cases.append((struct.pack("<IHHIi", 0xdeadbeef, 1, 2, 0, 0), [], "wrong magic"))
        cases.append((_handover_msg(1, 2, _wire_socket(1, 0, ("127.0.0.1", 1))), [f.fileno()],
                      "malformed message"))
        for data, fds, want in cases:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            proc, _ = _spawn_successor(pgwardend_bin, pg, tmp_path, theirs.fileno())
            theirs.close()
            socket.send_fds(ours, [data], fds) if fds else ours.send(data)
            out = proc.communicate(timeout=WAIT)[0]
            ours.close()
            assert proc.returncode != 0 and want in out, (want, out)


def test_successor_refuses_a_channel_not_from_its_parent(pgwardend_bin, pg, tmp_path):
    """The channel's other end must be the process that started pgwardend: here it belongs
    to a stranger (a child of the test that made the socketpair and handed one end over)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stranger = os.fork()
    if stranger == 0:
        try:
            a.close()
            x, y = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            socket.send_fds(b, [b"x"], [y.fileno()])
            b.recv(1)  # hold x open until the test is done
        finally:
            os._exit(0)
    b.close()
    try:
        _, fds, _, _ = socket.recv_fds(a, 1, 1)
        proc, _ = _spawn_successor(pgwardend_bin, pg, tmp_path, fds[0])
        os.close(fds[0])
        out = proc.communicate(timeout=WAIT)[0]
        assert proc.returncode != 0
        assert "is not this process's parent" in out, out
    finally:
        a.close()
        os.waitpid(stranger, 0)
