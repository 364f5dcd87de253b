"""auth.server_methods against a hostile fake server (issue #10).

A fake "PostgreSQL" on loopback answers every StartupMessage by asking for a cleartext
password (or an md5 hash, or nothing at all: trust). pgwardend runs with
`auth.server_methods: scram-sha-256` in front of it, and a real client (psql) connects with
a password. The test passes only if

  - not one byte of the password (nor its md5 answer) reached the fake server,
  - the client got pgwarden's FATAL 28000 "server requested ... authentication, which
    pgwarden does not allow (auth.server_methods)",
  - the daemon logged event=auth_method_refused with the method.

The connection core calls auth_observer_server() on every server message of the login
(userspace/relay/conn_auth.c); before it did, the client was shown the cleartext request
and its password was forwarded.
"""

import os
import socket
import struct
import subprocess
import threading

import pytest

import harness

CANARY = "canary-Pa55w0rd-7f3e1c"
WAIT = 30.0

class FakeServer:
    """Accepts connections, reads a StartupMessage (answering SSLRequest/GSSENCRequest with
    'N'), sends one AuthenticationRequest, and records every byte the peer sends after it
    until the peer closes."""

    def __init__(self, request):
        self.request = request  # the 'R' body: code (+ salt)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.received = b""
        self.connections = 0
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    @staticmethod
    def recv_exact(c, n):
        buf = b""
        while len(buf) < n:
            d = c.recv(n - len(buf))
            if not d:
                raise EOFError
            buf += d
        return buf

    def serve(self, c):
        c.settimeout(WAIT)
        while True:
            n = struct.unpack("!I", self.recv_exact(c, 4))[0]
            body = self.recv_exact(c, n - 4)
            code = struct.unpack("!I", body[:4])[0]
            if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                c.sendall(b"N")
                continue
            break
        c.sendall(b"R" + struct.pack("!I", 4 + len(self.request)) + self.request)
        while True:
            d = c.recv(65536)
            if not d:
                return
            self.received += d

    def run(self):
        self.sock.settimeout(0.5)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            try:
                self.serve(c)
            except (EOFError, OSError):
                pass
            finally:
                c.close()

    def close(self):
        self.stop = True
        self.sock.close()
        self.thread.join(5)


@pytest.fixture
def fake_server(request):
    servers = []

    def start(auth_body):
        s = FakeServer(auth_body)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.close()


def md5_answer(password, user, salt):
    import hashlib
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


CASES = [
    ("password", struct.pack("!I", 3)),
    ("md5", struct.pack("!I", 5) + b"\x01\x02\x03\x04"),
    ("trust", struct.pack("!I", 0)),
]


@pytest.mark.parametrize("method,auth_body", CASES, ids=[c[0] for c in CASES])
def test_weak_method_refused_before_any_secret(method, auth_body, fake_server, relay_factory,
                                               pg):
    server = fake_server(auth_body)
    relay = relay_factory(upstream=("127.0.0.1", server.port),
                          extra_args=["--auth-server-methods", "scram-sha-256"])
    env = dict(os.environ, PGPASSWORD=CANARY, PGSSLMODE="disable", PGCONNECT_TIMEOUT="20")
    r = subprocess.run([os.path.join(pg.bindir, "psql"), "-X", "-h", relay.host, "-p",
                        str(relay.port), "-U", "alice", "-d", "app", "-c", "SELECT 1"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0, r.stdout
    assert "which pgwarden does not allow (auth.server_methods)" in r.stderr, r.stderr
    assert method in r.stderr, r.stderr
    relay.wait_for_log(lambda l: l.get("event") == "auth_method_refused"
                       and l.get("method") == method, timeout=WAIT)
    # The heart of it: nothing secret ever reached the server.
    assert server.connections >= 1
    assert CANARY.encode() not in server.received, server.received
    assert md5_answer(CANARY, "alice", b"\x01\x02\x03\x04").encode() not in server.received
    # Nor did any PasswordMessage at all ('p' from the client after the request).
    assert not server.received.startswith(b"p"), server.received


def test_real_scram_login_observed(relay_factory, pg):
    """The strict setting in front of the real server: SCRAM passes, every message checked,
    and the session records how the server authenticated it."""
    relay = relay_factory(extra_args=["--auth-server-methods", "scram-sha-256"])
    assert relay.psql("SELECT current_user").strip() == pg.user
    relay.wait_for_log(lambda l: l.get("event") == "session_end" and
                       l.get("authenticated") == "1" and
                       l.get("auth_method") == "scram-sha-256" and
                       l.get("auth_by") == "server", timeout=WAIT)


def test_passthrough_lockout(relay_factory, pg):
    """Failures the server reports are counted; once locked, the right password gets the
    same FATAL 28P01 a wrong one gets, although the server accepted it."""
    import wire
    relay = relay_factory(extra_args=["--auth-lockout-failures", "2"])

    def login(password):
        with wire.Conn(relay.host, relay.port) as c:
            e = wire.first_error(c.login(pg.user, password, database=pg.dbname))
        return e.error_fields() if e is not None else None

    for _ in range(2):
        e = login("wrong")
        assert e and e["C"] == "28P01", e
    relay.wait_for_log(lambda l: l.get("event") == "auth_lockout", timeout=WAIT)
    e = login(pg.password)
    assert e and e["C"] == "28P01", e
    assert e["M"] == 'password authentication failed for user "%s"' % pg.user
