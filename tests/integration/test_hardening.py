"""Hostile clients against pgwardend itself (issue #9), each the way an attacker did it:

* an idle flood (thousands of connections that never say anything) must not lock a real
  client out, and sessions that already logged in keep working during it;
* a source over its connection rate is refused at once;
* user, database and application_name from an unauthenticated client, and a local
  process's command name, reach no terminal or JSON consumer raw: clear-screen and
  window-title escapes, C1 controls and invalid UTF-8 are escaped in the log, in
  `pgwardenctl sessions` (text and JSON), in `pgwarden-top -b` and on its screen;
* thousands of wrong-key CancelRequests write a bounded log with a count of what was held
  back;
* the relay never connects to itself: --check-config refuses every spelling of an upstream
  that is one of its listeners, and a loop made after start (a symlink) is refused at run
  time, logged once.
"""

import ctypes
import json
import os
import re
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import psycopg
import pytest

import harness
from test_admin import metrics_port_args, tool, wait_admin_socket, wait_metrics, wait_until

HOSTILE = b"\x1b]0;pwned\x07\x1b[2J\xc2\x9b31m\xff\xfe"
SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def startup_packet(user, database, application_name):
    params = (b"user\0" + user + b"\0database\0" + database + b"\0application_name\0"
              + application_name + b"\0\0")
    return struct.pack("!ii", 8 + len(params), 196608) + params


def metric(port, name, label_value):
    import urllib.request
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30).read()
    want = '%s{reason="%s"} ' % (name, label_value)
    for line in text.decode().splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    raise AssertionError("no %s in the scrape" % want)


@pytest.fixture
def nofile():
    """Room for a few thousand sockets in this process, restored after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20000), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def open_idle(relay, n, source):
    """n connections from source (a loopback address) that never send a byte."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind((source, 0))
        s.setblocking(False)
        try:
            s.connect((relay.host, relay.port))
        except BlockingIOError:
            pass
        socks.append(s)
    return socks


# ---- pre-login exhaustion --------------------------------------------------------------------


def test_idle_flood_leaves_room_for_real_clients(pg, relay_factory, nofile):
    """2,000 idle connections from one source (127.0.0.2) against max_connections 400: a real
    client from another source logs in during the flood, and a session that logged in
    before it keeps working."""
    mport, margs = metrics_port_args()
    relay = relay_factory(extra_args=["--max-connections", "400"] + margs)
    before = psycopg.connect(relay.dsn(application_name="before-flood"), autocommit=True)
    flood = []
    try:
        flood = open_idle(relay, 2000, "127.0.0.2")
        time.sleep(1.5)  # the relay accepts (and refuses) what it can
        r = subprocess.run([os.path.join(pg.bindir, "psql"), "-X", "-A", "-t", "-d",
                            relay.dsn(application_name="during-flood"), "-c", "SELECT 42"],
                           env=relay.env(), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stdout.strip() == "42", r.stderr
        assert before.execute("SELECT 7").fetchone() == (7,)
        wait_metrics(mport, relay)
        refused = metric(mport, "pgwarden_connections_refused_total", "prelogin_source")
        assert refused >= 1000, refused
        # Refusals are logged within limits, not one line each.
        lines = [d for d in relay.log_lines() if d.get("event") == "connection_refused"]
        assert 1 <= len(lines) <= 2 * 10, len(lines)
        assert lines[0]["reason"] == "prelogin_source" and lines[0]["source"] == "127.0.0.2"
    finally:
        for s in flood:
            s.close()
        before.close()


def test_source_rate_is_enforced(pg, relay_factory):
    """admission.rate 5/s with a burst of 5: the sixth quick connection from one source is
    refused with 53300 before it says anything; another source is unaffected."""
    relay = relay_factory(extra_args=["--admission-rate", "5/s", "--admission-burst", "5"])

    def answer(source):
        with socket.socket() as s:
            s.bind((source, 0))
            s.settimeout(10)
            s.connect((relay.host, relay.port))
            s.sendall(SSL_REQUEST)
            return s.recv(1)

    got = [answer("127.0.0.2") for _ in range(8)]
    assert got[:5] == [b"N"] * 5, got
    assert b"E" in got[5:], got
    assert answer("127.0.0.1") == b"N"
    line = relay.wait_for_log({"event": "connection_refused", "reason": "rate_limit"})
    assert line["source"] == "127.0.0.2"


# ---- escapes in every output ---------------------------------------------------------------


HOLDER = r"""
import ctypes, os, socket, struct, sys
comm, path, host, port, packet = sys.argv[1:6]
if comm:
    ctypes.CDLL(None).prctl(15, bytes.fromhex(comm), 0, 0, 0)  # PR_SET_NAME
if path:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
else:
    s = socket.create_connection((host, int(port)))
s.sendall(bytes.fromhex(packet))
print(s.recv(1).decode("latin-1"), flush=True)  # the server's authentication request
sys.stdin.readline()
"""


@pytest.fixture
def sockdir():
    d = tempfile.mkdtemp(prefix="pgwarden-itest-hard-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def raw_is_safe(data):
    """No raw control, C1 or invalid UTF-8 byte anywhere but newlines."""
    assert b"\x1b" not in data and b"\x07" not in data, data
    assert b"\xc2\x9b" not in data and b"\x9b" not in data, data
    data.decode("utf-8")  # strict: raises on invalid UTF-8


def test_peer_values_are_escaped_in_every_output(pg, relay_factory, sockdir, pgwardend_bin,
                                                 tmp_path):
    relay_sock = os.path.join(sockdir, "relay.sock")
    relay = relay_factory(extra_args=["--unix-listen", relay_sock])
    admin = wait_admin_socket(relay)
    ctl = tool(pgwardend_bin, "pgwardenctl")
    top = tool(pgwardend_bin, "pgwarden-top")
    packet = startup_packet(HOSTILE, HOSTILE, HOSTILE).hex()
    holders = []
    try:
        for comm, path in ((b"pgw" + b"\x1b]0;pwned\x07"[:12], relay_sock), (b"", "")):
            p = subprocess.Popen([sys.executable, "-c", HOLDER, comm.hex(), path, relay.host,
                                  str(relay.port), packet], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            holders.append(p)
            assert p.stdout.readline().strip() == b"R", p.stderr.read()

        def two_listed():
            r = subprocess.run([ctl, "--socket", admin, "sessions", "--json"],
                               capture_output=True, timeout=30)
            return r if r.returncode == 0 and len(json.loads(r.stdout)) == 2 else None

        js = wait_until(two_listed, what="both hostile sessions listed").stdout
        raw_is_safe(js)
        for s in json.loads(js):
            for key in ("user", "database", "application_name"):
                assert s[key] == "\\x1b]0;pwned\\x07\\x1b[2J\\xc2\\x9b31m\\xff\\xfe", s
        comms = [s["process"]["comm"] for s in json.loads(js) if s.get("process")]
        assert comms == ["pgw\\x1b]0;pwned\\x07"], comms

        text = subprocess.run([ctl, "--socket", admin, "sessions"], capture_output=True,
                              timeout=30)
        assert text.returncode == 0, text.stderr
        raw_is_safe(text.stdout)
        assert b"\\x1b" in text.stdout and b"pgw\\x1b" in text.stdout

        batch = subprocess.run([top, "--socket", admin, "-b", "-n", "1", "-w", "300"],
                               capture_output=True, timeout=60)
        assert batch.returncode == 0, batch.stderr
        raw_is_safe(batch.stdout)
        assert b"\\x1b" in batch.stdout

        # The session log: quoted and escaped, C1 and invalid UTF-8 included.
        log = open(relay.log_path, "rb").read()
        raw_is_safe(log)
        assert b"\\x1b]0;pwned\\x07\\x1b[2J\\xc2\\x9b31m\\xff\\xfe" in log

        # The curses view: the title of its terminal is untouched, the screen shows escapes.
        if shutil.which("tmux"):
            server = "pgwhard-%d" % os.getpid()
            tm = ["tmux", "-L", server]
            try:
                subprocess.run(tm + ["new-session", "-d", "-s", "t", "-x", "200", "-y", "30",
                                     "sh", "-c", "%s --socket %s -d 0.5; sleep 3600" % (top, admin)],
                               check=True, timeout=30)
                screen = wait_until(
                    lambda: (lambda s: s if "\\x1b" in s else None)(subprocess.run(
                        tm + ["capture-pane", "-p", "-t", "t"], capture_output=True, text=True,
                        timeout=30).stdout), what="escaped values on the screen")
                title = subprocess.run(tm + ["display-message", "-p", "-t", "t",
                                             "#{pane_title}"], capture_output=True, text=True,
                                       timeout=30).stdout.strip()
                assert "pwned" not in title, (title, screen)
            finally:
                subprocess.run(tm + ["kill-server"], capture_output=True, timeout=30)
    finally:
        for p in holders:
            p.kill()
            p.wait(10)


# ---- log floods ----------------------------------------------------------------------------


def test_cancel_flood_writes_a_bounded_log(pg, relay_factory):
    """3,000 CancelRequests with wrong keys: a handful of lines, not two per cancel; the
    next line after the limit's interval says how many were held back."""
    relay = relay_factory()
    size_before = os.path.getsize(relay.log_path)

    def cancel(key):
        with socket.create_connection((relay.host, relay.port), timeout=10) as s:
            s.sendall(struct.pack("!iiii", 16, 80877102, 12345, key))
            s.recv(1)  # the relay closes: a wrong key gets no answer

    for k in range(3000):
        cancel(k)
    grown = os.path.getsize(relay.log_path) - size_before
    assert grown < 20000, "the cancel flood wrote %d bytes of log" % grown
    refused = [d for d in relay.log_lines() if d.get("event") == "cancel_refused"]
    assert 1 <= len(refused) <= 10, len(refused)
    time.sleep(10.5)  # the limiter's interval
    cancel(99999)
    line = relay.wait_for_log(lambda d: d.get("event") == "cancel_refused" and
                              "suppressed" in d)
    assert int(line["suppressed"]) >= 2900, line


# ---- self-loop -----------------------------------------------------------------------------


@pytest.mark.parametrize("listen,upstream", [
    ("127.0.0.1:{p}", "0.0.0.0:{p}"),
    ("[::1]:{p}", "[::]:{p}"),
    ("127.0.0.1:{p}", "[::ffff:127.0.0.1]:{p}"),
    ("127.0.0.1:{p}", "[::ffff:0.0.0.0]:{p}"),
    ("0.0.0.0:{p}", "127.0.0.1:{p}"),
])
def test_check_config_refuses_an_upstream_that_is_a_listener(pgwardend_bin, tmp_path, listen,
                                                             upstream):
    p = harness.free_port()
    path = tmp_path / "loop.yaml"
    path.write_text('listen: "%s"\nupstream: "%s"\n' % (listen.format(p=p),
                                                         upstream.format(p=p)))
    r = subprocess.run([pgwardend_bin, "--check-config", str(path)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r
    assert "the relay would connect to itself" in r.stderr, r.stderr
    # And start refuses it the same way.
    r = subprocess.run([pgwardend_bin, "--config", str(path), "--admin-socket",
                        str(tmp_path / "a.sock")], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "the relay would connect to itself" in r.stderr, r


def test_a_loop_made_after_start_is_refused_at_run_time(pg, relay_factory, sockdir):
    """unix_upstream names a path that does not exist at start; then it becomes a symlink to
    the relay's own socket. The relay's upstream connection arrives at itself: refused,
    logged once, counted; one client gets one error, not thousands of sessions."""
    relay_sock = os.path.join(sockdir, "relay.sock")
    upstream = os.path.join(sockdir, "upstream.sock")
    mport, margs = metrics_port_args()
    relay = relay_factory(extra_args=["--unix-listen", relay_sock, "--unix-upstream", upstream]
                          + margs)
    os.symlink(relay_sock, upstream)
    for _ in range(3):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(20)
            s.connect(relay_sock)
            s.sendall(startup_packet(b"pgw", b"pgw", b"loop"))
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        assert b"refuses a connection from itself" in data, data
    time.sleep(1)
    starts = [d for d in relay.log_lines() if d.get("event") == "session_start"]
    assert len(starts) == 3, len(starts)  # the three clients, and no session of its own
    loops = [d for d in relay.log_lines() if d.get("event") == "self_loop"]
    assert len(loops) == 1, loops
    wait_metrics(mport, relay)
    assert metric(mport, "pgwarden_connections_refused_total", "loop") == 3
