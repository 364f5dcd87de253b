"""Checks of the harness itself: the logfmt parser, the sanitizer-report scan, the byte
relay's exactness, and the cluster fixture's promises (SCRAM over TCP, role and database).
If these fail, no scenario result can be trusted."""

import hashlib
import os
import signal
import socket
import sys
import textwrap
import threading

import psycopg
import pytest

import harness


@pytest.mark.parametrize("line,expected", [
    ('ts=2026-11-21T22:00:00.123Z level=info event=session_start session=0123abcd',
     dict(ts="2026-11-21T22:00:00.123Z", level="info", event="session_start",
          session="0123abcd")),
    ('event=x user="a \\"quoted\\" name" path="C:\\\\dir"',
     dict(event="x", user='a "quoted" name', path="C:\\dir")),
    ('event=x app="line\\x0abreak\\x7f" empty="" nul=-',
     dict(event="x", app="line\nbreak\x7f", empty="", nul=None)),
    ('event=x truncated=1 flag', dict(event="x", truncated="1", flag=True)),
    ('  event=x   peer="127.0.0.1:40000"  ', dict(event="x", peer="127.0.0.1:40000")),
])
def test_parse_logfmt(line, expected):
    assert harness.parse_logfmt(line) == expected


@pytest.mark.parametrize("line", [
    'event="unterminated',
    'event="bad \\q escape"',
    'event="bad \\x4"',
    'event="x"garbage',
    'event=a"b',
    '=value',
])
def test_parse_logfmt_rejects(line):
    with pytest.raises(harness.LogfmtError):
        harness.parse_logfmt(line)


def test_sanitizer_scan():
    clean = "ts=1 level=info event=session_end reason=\"client closed\"\n"
    assert harness.sanitizer_reports(clean) == []
    asan = clean + "==123==ERROR: AddressSanitizer: heap-use-after-free on address 0x1\n"
    ubsan = clean + "userspace/relay/conn.c:10:5: runtime error: signed integer overflow\n"
    lsan = clean + "SUMMARY: AddressSanitizer: 64 byte(s) leaked in 1 allocation(s).\n"
    for text in (asan, ubsan, lsan):
        assert len(harness.sanitizer_reports(text)) == 1


def _echo_server():
    """A one-connection echo server that reads to EOF, then echoes and closes."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        data = bytearray()
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.sendall(bytes(data))
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv.getsockname(), t


def test_byte_relay_is_exact_and_bytewise(byte_relay_factory):
    addr, t = _echo_server()
    br = byte_relay_factory(addr, chunk=1)
    payload = os.urandom(200_000)
    with socket.create_connection((br.host, br.port), timeout=60) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)  # the relay must pass the half-close on
        got = bytearray()
        while True:
            chunk = c.recv(65536)
            if not chunk:
                break
            got += chunk
    t.join(60)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest()
    # Both directions went one byte per send().
    assert br.bytes_forwarded == 2 * len(payload)
    assert br.bytes_from_client == br.bytes_from_upstream == len(payload)
    assert br.sends == br.bytes_forwarded


def test_byte_relay_passes_data_then_reset(byte_relay_factory):
    """A server that answers and closes with unread input (its kernel sends RST, as a relay
    rejecting a client does) must reach the client answer first, then the reset: the byte
    relay may not drop what it still holds when the reset arrives."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    answer = b"E" * 5000
    got_request = threading.Event()

    def serve():
        conn, _ = srv.accept()
        conn.recv(1)  # leave the rest unread: close() then sends RST
        got_request.set()
        conn.sendall(answer)
        conn.close()
        srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    br = byte_relay_factory(srv.getsockname(), chunk=1)
    received = bytearray()
    with socket.create_connection((br.host, br.port), timeout=60) as c:
        c.sendall(b"0123456789")
        assert got_request.wait(60)
        ending = "eof"
        while True:
            try:
                chunk = c.recv(65536)
            except ConnectionResetError:
                ending = "reset"
                break
            if not chunk:
                break
            received += chunk
    t.join(60)
    assert bytes(received) == answer
    assert ending == "reset"


def test_cluster_fixture(pg):
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        row = conn.execute("SELECT current_user, current_database(), "
                           "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                           "current_setting('max_connections')::int, "
                           "current_setting('password_encryption'), "
                           "(SELECT auth_method FROM pg_hba_file_rules WHERE "
                           " address = '127.0.0.1' AND 'all' = ANY(database))").fetchone()
    assert row == ("pgw", "pgw", True, pg.max_connections, "scram-sha-256", "scram-sha-256")
    # A wrong password is refused: the fixture really enforces SCRAM.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.dsn(password="wrong"))
    assert pg.psql("SELECT 40 + 2").strip() == "42"
    # IPv6 loopback is served too.
    with psycopg.connect(pg.dsn(host="::1")) as conn:
        assert conn.execute("SELECT inet_server_addr()").fetchone()[0].version == 6


def test_parse_duration():
    assert harness.parse_duration("500ms") == 0.5
    assert harness.parse_duration("5s") == 5.0
    assert harness.parse_duration("2m") == 120.0
    assert harness.parse_duration("7") == 7.0
    with pytest.raises(ValueError):
        harness.parse_duration("1.5s")


# A stand-in daemon that listens like pgwardend and then misbehaves in a chosen way, to show
# that Relay.stop() reports crashes, hangs and sanitizer output instead of hiding them.
FAKE_DAEMON = textwrap.dedent("""\
    import os, signal, socket, sys, time
    mode = sys.argv[1]
    host, port = sys.argv[sys.argv.index("--listen") + 1].rsplit(":", 1)
    s = socket.socket(); s.bind((host, int(port))); s.listen(8)
    def on_term(*_):
        if mode == "abort":
            os.abort()
        if mode == "asan":
            sys.stderr.write("==1==ERROR: AddressSanitizer: heap-buffer-overflow\\n")
            sys.stderr.flush()
        if mode != "hang":
            sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    while True:
        time.sleep(0.1)
""")


@pytest.mark.parametrize("mode,problem", [
    ("clean", None),
    ("abort", r"died of signal 6 \(SIGABRT\)"),
    ("asan", "sanitizer report"),
    ("hang", "did not exit within"),
])
def test_relay_stop_reports_problems(tmp_path, pg, mode, problem):
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    wrapper = tmp_path / "fake_daemon.sh"
    wrapper.write_text("#!/bin/sh\nexec %s %s %s \"$@\"\n" % (sys.executable, script, mode))
    wrapper.chmod(0o755)
    r = harness.Relay(str(wrapper), (pg.host, pg.port), pg, str(tmp_path),
                      extra_args=["--timeouts-drain", "1s"]).start()
    assert r.drain_seconds == 1.0
    if problem is None:
        assert r.stop(timeout=20) == 0
        return
    with pytest.raises(AssertionError, match=problem):
        r.stop(timeout=3)


def test_relay_signal_sent_by_test_is_no_crash(tmp_path, pg):
    """A daemon the test itself killed (fault tests do) is not reported as a crash."""
    script = tmp_path / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    wrapper = tmp_path / "fake_daemon.sh"
    wrapper.write_text("#!/bin/sh\nexec %s %s clean \"$@\"\n" % (sys.executable, script))
    wrapper.chmod(0o755)
    r = harness.Relay(str(wrapper), (pg.host, pg.port), pg, str(tmp_path)).start()
    r.signal(signal.SIGKILL)
    r.proc.wait(20)
    assert r.stop() == -signal.SIGKILL
