"""Admin socket and metrics, end to end against a running pgwardend (issue #4).

Sessions appear and disappear in `pgwardenctl sessions --json` with the right identity and
counters; kill ends exactly the session it names (the client sees SQLSTATE 57P01) and
nothing else; malformed requests get JSON errors from the live daemon; the event stream
reports session starts and ends; reload reports config errors; the Prometheus endpoint
parses with prometheus_client's own text parser and its counters move as a workload runs.

The helpers at the top are shared with test_top.py. Capability probes (named
admin_socket_served and metrics_served) skip a test only when the daemon does not serve
the feature at all, i.e. before the modules are wired into pgwardend; once it does, every
check below is a real assertion.
"""


import json
import os
import socket
import stat
import subprocess
import time

import pytest

import harness

PROBE_TIMEOUT = 10.0

# A daemon binary that failed a probe once fails it for the rest of the run: no point in
# waiting out the bound for every test. Keyed by (probe, binary path, mtime).
_probe_failed = {}


def _probe_key(name, relay):
    try:
        mtime = os.stat(relay.binary).st_mtime
    except OSError:
        mtime = None
    return (name, relay.binary, mtime)


def tool(pgwardend_bin, name):
    """The pgwardenctl / pgwarden-top built next to the daemon under test."""
    path = os.path.join(os.path.dirname(pgwardend_bin), name)
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        # Not a skip: the tools are part of the build under test.
        pytest.fail("%s not found at %s: build it with the daemon (make BUILD=... all)"
                    % (name, path), pytrace=False)
    return path


def admin_socket_of(relay):
    argv = relay.argv or []
    for i, a in enumerate(argv):
        if a == "--admin-socket" and i + 1 < len(argv):
            return argv[i + 1]
    raise AssertionError("relay argv has no --admin-socket: %s" % argv)


def wait_admin_socket(relay, timeout=PROBE_TIMEOUT):
    """The relay's admin socket path once it accepts connections; skips the test when the
    daemon never creates it (admin module not wired into pgwardend yet)."""
    path = admin_socket_of(relay)
    key = _probe_key("admin_socket_served", relay)
    if key in _probe_failed:
        pytest.skip(_probe_failed[key])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.proc.poll() is not None:
            raise AssertionError("pgwardend exited (%s) before serving its admin socket\n%s"
                                 % (relay.proc.returncode, relay.log_tail()))
        try:
            st = os.lstat(path)
            if stat.S_ISSOCK(st.st_mode):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(2)
                    s.connect(path)
                return path
        except OSError:
            pass
        time.sleep(0.05)
    _probe_failed[key] = ("capability probe admin_socket_served: pgwardend did not create its "
                          "admin socket within %.0fs (admin_server_start not wired into "
                          "pgwardend yet)" % timeout)
    pytest.skip(_probe_failed[key])


class AdminClient:
    """Line-delimited JSON over the admin socket, as docs/ADMIN.md describes it."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_msg(self, timeout=None):
        if timeout is not None:
            self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("admin socket closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        msg = json.loads(line)
        assert isinstance(msg, dict), line
        return msg

    def call(self, **req):
        self.send_raw((json.dumps(req) + "\n").encode())
        while True:
            msg = self.read_msg()
            if "event" not in msg:
                return msg

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_ctl(ctl, sock, *args, check=True, timeout=30):
    r = subprocess.run([ctl, "--socket", sock] + list(args), capture_output=True, text=True,
                       timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("pgwardenctl %s failed (%d): %s" % (" ".join(args), r.returncode,
                                                                  r.stderr.strip()))
    return r


def ctl_sessions(ctl, sock):
    r = run_ctl(ctl, sock, "sessions", "--json")
    data = json.loads(r.stdout)
    assert isinstance(data, list), r.stdout
    return data


def wait_until(pred, timeout=20.0, what="condition", interval=0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.0fs waiting for %s (last: %r)" % (timeout, what, last))


def local_port(conn):
    """The client-side TCP port of a psycopg connection (what the relay sees as the peer)."""
    s = socket.socket(fileno=os.dup(conn.pgconn.socket))
    try:
        return s.getsockname()[1]
    finally:
        s.close()


def metrics_port_args():
    port = harness.free_port()
    return port, ["--metrics-listen", "127.0.0.1:%d" % port]


def wait_metrics(port, relay, timeout=PROBE_TIMEOUT):
    """Skips when nothing listens on the metrics port (metrics not wired yet)."""
    key = _probe_key("metrics_served", relay)
    if key in _probe_failed:
        pytest.skip(_probe_failed[key])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if relay.proc.poll() is not None:
            raise AssertionError("pgwardend exited before serving metrics\n%s" % relay.log_tail())
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            time.sleep(0.05)
    _probe_failed[key] = ("capability probe metrics_served: nothing listens on "
                          "--metrics-listen within %.0fs (metrics_http_start not wired into "
                          "pgwardend yet)" % timeout)
    pytest.skip(_probe_failed[key])


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def ctl(pgwardend_bin):
    return tool(pgwardend_bin, "pgwardenctl")


@pytest.fixture
def admin_relay(relay_factory):
    """A relay whose admin socket is up; (relay, socket path)."""
    r = relay_factory()
    return r, wait_admin_socket(r)


def _connect(relay, **kw):
    import psycopg
    return psycopg.connect(relay.dsn(**kw), autocommit=True)


def _find(sessions, **fields):
    return [s for s in sessions if all(s.get(k) == v for k, v in fields.items())]


HEX = set("0123456789abcdef")


# --------------------------------------------------------------------------------------------
# sessions


def test_sessions_appear_with_identity_and_counters_then_disappear(admin_relay, ctl):
    relay, sock = admin_relay
    conn = _connect(relay, application_name="itest-admin-list")
    try:
        port = local_port(conn)
        for i in range(5):
            assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
        backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]

        def listed():
            found = _find(ctl_sessions(ctl, sock), application_name="itest-admin-list")
            return found if found and found[0].get("statements", 0) >= 6 else None

        (s,) = wait_until(listed, what="the session with its 6 statements in the listing")
        assert len(s["id"]) == 32 and set(s["id"]) <= HEX, s["id"]
        assert s["client"] == "127.0.0.1:%d" % port
        assert s["upstream"] == "%s:%d" % relay.upstream
        assert s["route"] == "explicit"
        assert s["user"] == relay.user and s["database"] == relay.dbname
        assert s["protocol"] == "3.0"
        assert s["authenticated"] is True
        assert s["backend_pid"] == backend_pid
        assert s["state"] == "idle"
        assert s["tx_status"] == "I"
        assert s["statements"] == 6
        assert s["bytes_from_client"] > 0 and s["bytes_from_server"] > 0
        assert "pg_backend_pid" in (s["last_statement"] or "")
        assert s["duration_seconds"] >= 0
        assert s["process"] is None  # not steered: no kernel-captured process
        assert s["tls"] is None

        # A transaction left open shows in the listing.
        conn.execute("BEGIN")
        wait_until(lambda: _find(ctl_sessions(ctl, sock), id=s["id"], tx_status="T"),
                   what="tx_status T while a transaction is open")
        conn.execute("COMMIT")
        sid = s["id"]
    finally:
        conn.close()
    wait_until(lambda: not _find(ctl_sessions(ctl, sock), id=sid),
               what="the closed session to leave the listing")


def test_sessions_table_output(admin_relay, ctl):
    relay, sock = admin_relay
    with _connect(relay, application_name="itest-admin-table") as conn:
        conn.execute("SELECT 1")
        s = wait_until(lambda: _find(ctl_sessions(ctl, sock), application_name="itest-admin-table"),
                       what="session listed")[0]
        out = run_ctl(ctl, sock, "sessions").stdout.splitlines()
        assert out[0].split()[:3] == ["ID", "PROCESS/CLIENT", "USER"]
        rows = [ln for ln in out[1:] if ln.startswith(s["id"][:12])]
        assert len(rows) == 1, out
        assert relay.user in rows[0] and s["client"] in rows[0]


# --------------------------------------------------------------------------------------------
# kill


def test_kill_ends_that_session_only(admin_relay, ctl):
    import wire
    relay, sock = admin_relay
    # The victim speaks the protocol by hand so the test sees the exact ErrorResponse
    # (libpq folds a FATAL that arrives with the close into a connection error without
    # its SQLSTATE, for PostgreSQL's own pg_terminate_backend as well).
    victim = wire.Conn(relay.host, relay.port)
    bystander = _connect(relay, application_name="itest-kill-bystander")
    try:
        msgs = victim.login(relay.user, relay.password, relay.dbname,
                            params={"application_name": "itest-kill-victim"})
        assert msgs[-1].type == "Z", msgs
        bystander.execute("SELECT 1")
        # Mid-statement: the kill must not wait for the statement to finish.
        victim.send(wire.query("SELECT pg_sleep(60)"))
        sessions = wait_until(
            lambda: (lambda l: l if _find(l, application_name="itest-kill-victim", state="active")
                     and _find(l, application_name="itest-kill-bystander") else None)(
                ctl_sessions(ctl, sock)),
            what="victim active and bystander listed")
        vid = _find(sessions, application_name="itest-kill-victim")[0]["id"]
        bid = _find(sessions, application_name="itest-kill-bystander")[0]["id"]
        assert vid != bid

        t0 = time.monotonic()
        r = run_ctl(ctl, sock, "kill", vid)
        assert vid in r.stdout
        msgs, _rest = victim.read_to_close(timeout=30)
        assert time.monotonic() - t0 < 30
        errors = [m.error_fields() for m in msgs if m.type == "E"]
        assert errors, "the client got no ErrorResponse before the close: %r" % msgs
        assert errors[-1]["S"] == "FATAL"
        assert errors[-1]["C"] == "57P01"
        assert errors[-1]["M"] == "terminating connection due to administrator command"

        # The bystander is untouched and still listed; the victim is gone.
        assert bystander.execute("SELECT 2").fetchone() == (2,)
        wait_until(lambda: not _find(ctl_sessions(ctl, sock), id=vid), what="victim unlisted")
        assert _find(ctl_sessions(ctl, sock), id=bid)
        relay.wait_for_log(lambda d: d.get("event") == "admin_kill" and d.get("session") == vid)
    finally:
        victim.close()
        bystander.close()


def test_kill_idle_session_tells_the_client(admin_relay, ctl):
    import psycopg
    relay, sock = admin_relay
    with _connect(relay, application_name="itest-kill-idle") as conn:
        conn.execute("SELECT 1")
        s = wait_until(lambda: _find(ctl_sessions(ctl, sock), application_name="itest-kill-idle",
                                     state="idle"), what="idle session listed")[0]
        run_ctl(ctl, sock, "kill", s["id"])
        # Idle, the FATAL waits on the socket; the next command reads it (libpq reports it
        # as the connection's error message rather than a result with a SQLSTATE).
        with pytest.raises(psycopg.OperationalError) as ei:
            for _ in range(100):
                conn.execute("SELECT 1")
                time.sleep(0.1)
        assert "terminating connection due to administrator command" in str(ei.value)


def test_kill_by_prefix_and_unknown_id(admin_relay, ctl):
    relay, sock = admin_relay
    with _connect(relay, application_name="itest-kill-prefix") as conn:
        conn.execute("SELECT 1")
        s = wait_until(lambda: _find(ctl_sessions(ctl, sock), application_name="itest-kill-prefix"),
                       what="session listed")[0]
        r = run_ctl(ctl, sock, "kill", "f" * 32, check=False)
        assert r.returncode == 1
        assert r.stderr.startswith("pgwardenctl: kill: not_found") and r.stderr.count("\n") == 1
        r = run_ctl(ctl, sock, "kill", "xyz", check=False)
        assert r.returncode == 2
        run_ctl(ctl, sock, "kill", s["id"][:10])
        wait_until(lambda: not _find(ctl_sessions(ctl, sock), id=s["id"]), what="killed by prefix")


# --------------------------------------------------------------------------------------------
# protocol against the live daemon


def test_socket_is_root_only_and_malformed_requests_get_json_errors(admin_relay):
    relay, sock = admin_relay
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
    with AdminClient(sock) as c:
        for raw, code in [(b"not json\n", "bad_json"), (b"[]\n", "bad_request"),
                          (b'{"cmd":"launch"}\n', "unknown_command"),
                          (b'{"cmd":"kill","session":"nope"}\n', "bad_request"),
                          (b'{"cmd":"status","cmd":"status"}\n', "bad_json"),
                          (b"\xff\xfe\n", "bad_json")]:
            c.send_raw(raw)
            r = c.read_msg()
            assert r["ok"] is False and r["error"]["code"] == code, (raw, r)
        # The same connection still answers real requests, and echoes ids.
        r = c.call(cmd="status", id=7)
        assert r["ok"] is True and r["id"] == 7
        assert r["status"]["pid"] == relay.proc.pid
        assert r["status"]["admin_socket"] == sock
    # A request over the size bound is refused and the connection closed; the daemon lives.
    with AdminClient(sock) as c:
        c.send_raw(b"{" + b" " * (128 * 1024) + b"\n")
        r = c.read_msg()
        assert r["error"]["code"] == "too_large"
    with AdminClient(sock) as c:
        assert c.call(cmd="ping")["ok"] is True


def test_status_command(admin_relay, ctl):
    relay, sock = admin_relay
    r = run_ctl(ctl, sock, "status", "--json", check=False)
    data = json.loads(r.stdout)
    assert data["daemon"]["pid"] == relay.proc.pid
    assert "steering" in data
    r = run_ctl(ctl, sock, "status", check=False)
    assert "pgwardend: running, pid %d" % relay.proc.pid in r.stdout


def test_ctl_reports_daemon_down(ctl, tmp_path):
    r = run_ctl(ctl, str(tmp_path / "absent.sock"), "sessions", check=False)
    assert r.returncode == 3
    assert r.stderr.startswith("pgwardenctl: sessions: pgwardend is not running")
    assert r.stderr.count("\n") == 1


def test_event_stream_reports_session_start_and_end(admin_relay):
    relay, sock = admin_relay
    with AdminClient(sock) as sub:
        assert sub.call(cmd="subscribe")["subscribed"] is True
        conn = _connect(relay, application_name="itest-events")
        conn.execute("SELECT 1")
        conn.close()
        seen = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "session_end" not in seen:
            ev = sub.read_msg(timeout=max(0.1, deadline - time.monotonic()))
            s = ev.get("session")
            if isinstance(s, dict) and s.get("application_name") == "itest-events":
                seen.setdefault(ev["event"], ev)
        assert "session_start" in seen and "session_end" in seen, seen
        assert seen["session_start"]["session"]["id"] == seen["session_end"]["session"]["id"]
        assert seen["session_end"]["session"].get("end_reason")
        assert seen["session_start"]["time"].endswith("Z")


def test_ctl_events_prints_each_event_as_one_json_line(admin_relay, ctl):
    """`pgwardenctl events --count 2` prints session events as JSON lines and exits after
    the second. A client's application_name with a newline and a terminal escape stays
    inside its line, escaped: no event can break the stream into forged lines."""
    import wire
    relay, sock = admin_relay
    hostile = "itest-ev\n{\"event\":\"forged\"}\x1b[2J"
    p = subprocess.Popen([ctl, "--socket", sock, "events", "--count", "2"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # The subscription races the first session: keep opening sessions until the
        # command has printed its two events and exited.
        deadline = time.monotonic() + 20
        while p.poll() is None and time.monotonic() < deadline:
            with wire.Conn(relay.host, relay.port) as c:
                msgs = c.login(relay.user, relay.password, relay.dbname,
                               params={"application_name": hostile})
                assert msgs[-1].type == "Z", msgs
            time.sleep(0.1)
        out, err = p.communicate(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert b"\x1b" not in out and out.endswith(b"\n"), out
    lines = out.decode().splitlines()
    assert len(lines) == 2, out
    events = [json.loads(l) for l in lines]
    assert all(e["event"] in ("session_start", "session_end") for e in events), events
    assert any(e["session"].get("application_name", "").startswith("itest-ev")
               for e in events), events


def test_reload_reports_config_errors(relay_factory, ctl, tmp_path):
    r = relay_factory(config_text="max_connections: 500\n")
    sock = wait_admin_socket(r)
    run_ctl(ctl, sock, "reload")
    with open(r.config_path, "w") as f:
        f.write("max_connections: lots\n")
    res = run_ctl(ctl, sock, "reload", check=False)
    assert res.returncode == 1
    assert res.stderr.startswith("pgwardenctl: reload: reload_failed:")
    assert "max_connections" in res.stderr and res.stderr.count("\n") == 1
    # Still serving, with the old configuration.
    assert r.psql("SELECT 41 + 1").strip() == "42"


# --------------------------------------------------------------------------------------------
# metrics


def _scrape(port):
    import urllib.request
    from prometheus_client.parser import text_string_to_metric_families
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as resp:
        assert resp.status == 200
        ctype = resp.headers["Content-Type"]
        assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
        text = resp.read().decode()
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {}
    for f in fams.values():
        for s in f.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return fams, samples


def _sum(samples, name, **labels):
    want = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and want <= set(l))


def test_metrics_scrape_parses_and_counters_move(relay_factory):
    port, args = metrics_port_args()
    relay = relay_factory(extra_args=args)
    wait_metrics(port, relay)
    fams, before = _scrape(port)
    assert fams["pgwarden_connections_accepted"].type == "counter"
    assert fams["pgwarden_connections_refused"].type == "counter"
    assert fams["pgwarden_statements"].type == "counter"
    assert fams["pgwarden_bytes"].type == "counter"
    assert fams["pgwarden_sessions"].type == "gauge"
    assert fams["pgwarden_query_duration_seconds"].type == "histogram"
    assert fams["pgwarden_upstream_duration_seconds"].type == "histogram"
    states = {dict(l).get("state") for (n, l) in before if n == "pgwarden_sessions"}
    assert {"idle", "active"} <= states

    conns = [_connect(relay) for _ in range(3)]
    try:
        for c in conns:
            for i in range(20):
                c.execute("SELECT %s::int", (i,))
        _, during = _scrape(port)
        assert _sum(during, "pgwarden_sessions") >= 3
    finally:
        for c in conns:
            c.close()

    def moved():
        _, after = _scrape(port)
        ok = (_sum(after, "pgwarden_connections_accepted_total")
              - _sum(before, "pgwarden_connections_accepted_total") >= 3
              and _sum(after, "pgwarden_statements_total")
              - _sum(before, "pgwarden_statements_total") >= 60
              and _sum(after, "pgwarden_query_duration_seconds_count")
              - _sum(before, "pgwarden_query_duration_seconds_count") >= 60
              and _sum(after, "pgwarden_bytes_total", direction="from_client")
              > _sum(before, "pgwarden_bytes_total", direction="from_client")
              and _sum(after, "pgwarden_bytes_total", direction="from_server")
              > _sum(before, "pgwarden_bytes_total", direction="from_server")
              and _sum(after, "pgwarden_sessions") == 0)
        return after if ok else None

    after = wait_until(moved, what="counters to move by the workload and sessions to drain")
    # Histogram buckets are cumulative and end at +Inf == count.
    inf = _sum(after, "pgwarden_query_duration_seconds_bucket", le="+Inf")
    assert inf == _sum(after, "pgwarden_query_duration_seconds_count")
    assert _sum(after, "pgwarden_query_duration_seconds_sum") > 0


def test_metrics_count_statement_classes_and_refusal_reasons(relay_factory):
    """statements_total follows the SQL classifier (simple and extended protocol), and each
    way a connection can be turned away moves its own refused_total reason."""
    import psycopg
    import struct

    port, args = metrics_port_args()
    relay = relay_factory(extra_args=args + ["--timeouts-startup", "1s"])
    wait_metrics(port, relay)
    _, before = _scrape(port)

    with _connect(relay) as c:
        c.execute("CREATE TEMP TABLE t (a int)")                       # ddl
        c.execute("INSERT INTO t VALUES (%s)", (1,))                   # write, extended
        c.execute("SELECT a FROM t WHERE a = %s", (1,), prepare=True)  # read, named
        c.execute("SELECT a FROM t WHERE a = %s", (1,), prepare=True)  # read again
        c.execute("BEGIN; SELECT 1; COMMIT")                           # transaction x2, read
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(relay.dsn(password="wrong"), connect_timeout=10)  # auth
    with socket.create_connection((relay.host, relay.port), timeout=10) as s:
        s.sendall(struct.pack("!II", 8, 4 << 16))                      # protocol 4.0
        s.recv(1024)
    with socket.create_connection((relay.host, relay.port), timeout=10) as s:
        s.sendall(struct.pack("!I", 64))                               # half a startup
        s.recv(1024)                                                   # timeout closes it

    def moved():
        _, after = _scrape(port)

        def delta(name, **labels):
            return _sum(after, name, **labels) - _sum(before, name, **labels)
        want = {("ddl",): 1, ("write",): 1, ("read",): 3, ("transaction",): 2}
        ok = all(delta("pgwarden_statements_total", type=t[0]) == n for t, n in want.items())
        ok = ok and all(delta("pgwarden_connections_refused_total", reason=r) == 1
                        for r in ("auth", "protocol", "timeout"))
        return after if ok else None

    wait_until(moved, what="statement classes and refusal reasons to be counted")


STATEMENT_CLASS_POLICY = """\
rules:
  - name: everyone
    allow: [all]
"""


@pytest.mark.parametrize("policy", [False, True], ids=["no-policy", "policy"])
def test_metrics_count_each_statement_once_by_class(relay_factory, tmp_path, policy):
    """statements_total counts every statement by its class whether or not a policy judges
    it (with one the classes come from the policy's judgement, also when that judgement
    was remembered from an earlier text): the statements of a multi-statement Query one
    by one, a repeat of a text with other literals, and an unnamed statement parsed again
    with a text of another class."""
    port, args = metrics_port_args()
    if policy:
        path = tmp_path / "policy.yaml"
        path.write_text(STATEMENT_CLASS_POLICY)
        args = args + ["--policy", str(path)]
    relay = relay_factory(extra_args=args)
    wait_metrics(port, relay)
    _, before = _scrape(port)

    with _connect(relay) as c:
        c.execute("CREATE TEMP TABLE t (a int)")                       # ddl
        for n in (1, 2):                                               # the same shape twice
            c.execute("BEGIN; INSERT INTO t VALUES (%d); SELECT a FROM t WHERE a = %d; "
                      "COMMIT" % (n, n))                               # transaction x2, write, read
        c.execute("SET application_name = 'x'; SELECT 1")              # other, read
        pg = c.pgconn
        for text in (b"INSERT INTO t VALUES (3)", b"SELECT a FROM t",
                     b"INSERT INTO t VALUES (4)", b"SELECT a FROM t"):  # unnamed, parsed again
            assert pg.prepare(b"", text).status in (1, 2)              # COMMAND_OK, TUPLES_OK
            assert pg.exec_prepared(b"", []).status in (1, 2)
            assert pg.exec_prepared(b"", []).status in (1, 2)          # executed twice

    def counted():
        _, after = _scrape(port)

        def delta(t):
            return _sum(after, "pgwarden_statements_total", type=t) - \
                _sum(before, "pgwarden_statements_total", type=t)
        want = {"ddl": 1, "transaction": 4, "write": 2 + 4, "read": 2 + 1 + 4, "other": 1,
                "unknown": 0}
        got = {t: delta(t) for t in want}
        return after if got == want else None

    wait_until(counted, what="each statement counted once by its class")


def test_metrics_endpoint_rejects_other_paths(relay_factory):
    import urllib.error
    import urllib.request
    port, args = metrics_port_args()
    relay = relay_factory(extra_args=args)
    wait_metrics(port, relay)
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen("http://127.0.0.1:%d/nope" % port, timeout=10)
    assert ei.value.code == 404
