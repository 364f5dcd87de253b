"""Checks of the harness itself: the logfmt parser, the sanitizer-report scan, the byte
relay's exactness, and the cluster fixture's promises (SCRAM over TCP, role and database).
If these fail, no scenario result can be trusted."""

import hashlib
import os
import socket
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
    assert br.sends == br.bytes_forwarded


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
