"""auth.mode: terminate through the connection core, with real clients (issue #10).

pgwardend authenticates the client itself with SCRAM-SHA-256 against auth.users_file, then
logs in to PostgreSQL 15 as the same role with the ClientKey the client's proof gave away
(the users file holds the very verifier the server holds: no password anywhere in
pgwarden's files). Proven here with psql and psycopg:

  - the right password logs in, and the session is the role's;
  - a wrong password and an unknown user get PostgreSQL's own 28P01 and wording, and the
    server never hears of the attempt beyond the StartupMessage;
  - after auth.lockout.failures failures the right password fails the same way, the lock
    is logged (event=auth_lockout) and written to the audit trail;
  - with TLS on the client leg (the relay offers it once the TLS wiring is merged):
    SCRAM-SHA-256-PLUS (channel_binding=require) and a client certificate mapped by
    auth.cert_map. These skip while the relay answers SSLRequest with N.
"""

import json
import os
import socket
import subprocess
import time

import pytest

import harness
import tlsutil
import wire

WAIT = 30.0
SSL_REQUEST = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
TLS_SKIP = "the relay does not offer TLS on the client leg in this build (the TLS wiring)"


def server_verifier(pg, role):
    """The role's SCRAM verifier as the server stores it."""
    out = pg._admin_psql("SELECT rolpassword FROM pg_authid WHERE rolname = '%s'" % role)
    v = out.strip()
    assert v.startswith("SCRAM-SHA-256$"), v
    return v


def write_secret(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def users_file(pg, tmp_path):
    return write_secret(str(tmp_path / "users.txt"),
                        '"%s" "%s"\n' % (pg.user, server_verifier(pg, pg.user)))


def terminate_relay(relay_factory, users_file, extra=()):
    return relay_factory(extra_args=["--auth-mode", "terminate", "--auth-users-file",
                                     users_file] + list(extra))


def connect(relay, **params):
    import psycopg
    dsn = dict(host=relay.host, port=relay.port, user=relay.user, password=relay.password,
               dbname=relay.dbname, sslmode="disable", connect_timeout=20)
    dsn.update(params)
    return psycopg.connect(harness.conninfo(**dsn))


def login_error(endpoint, user=None, password=None):
    """The ErrorResponse fields a raw client gets for a failed login (libpq hides the
    SQLSTATE of a connection failure)."""
    with wire.Conn(endpoint.host, endpoint.port) as c:
        msgs = c.login(user or endpoint.user, password if password is not None
                       else endpoint.password, database=endpoint.dbname)
    e = wire.first_error(msgs)
    assert e is not None, msgs
    return e.error_fields()


def psql(relay, password, sql="SELECT current_user", **params):
    params.setdefault("sslmode", "disable")
    dsn = relay.dsn(password=password, **params)
    return subprocess.run(["psql", "-X", "-A", "-t", "-d", dsn, "-c", sql], env=relay.env(),
                          capture_output=True, text=True, timeout=60)


def ctl(relay, pgwardend_bin, *args):
    """pgwardenctl against the relay's admin socket."""
    sock = os.path.join(relay.workdir, "admin-%d.sock" % relay.port)
    return subprocess.run([os.path.join(os.path.dirname(pgwardend_bin), "pgwardenctl"),
                           "--socket", sock] + list(args), capture_output=True, text=True,
                          timeout=30)


def sessions(relay, pgwardend_bin):
    r = ctl(relay, pgwardend_bin, "sessions", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_scram_login_at_the_relay(relay_factory, users_file, pg, pgwardend_bin):
    relay = terminate_relay(relay_factory, users_file)
    r = psql(relay, pg.password)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == pg.user
    with connect(relay, application_name="itest-terminate") as conn:
        assert conn.execute("SELECT 40 + 2").fetchone()[0] == 42
        mine = [s for s in sessions(relay, pgwardend_bin)
                if s.get("application_name") == "itest-terminate"]
        assert len(mine) == 1 and mine[0]["authenticated"], mine
        assert mine[0]["auth_method"] == "scram-sha-256", mine
    relay.wait_for_log(lambda l: l.get("event") == "session_end" and
                       l.get("auth_method") == "scram-sha-256" and
                       l.get("auth_by") == "pgwarden", timeout=WAIT)
    relay.wait_for_log(lambda l: l.get("event") == "auth_ok" and l.get("method") ==
                       "scram-sha-256", timeout=WAIT)
    relay.wait_for_log(lambda l: l.get("event") == "auth_upstream_ok", timeout=WAIT)


def test_wrong_password_and_unknown_user_look_alike(relay_factory, users_file, pg):
    relay = terminate_relay(relay_factory, users_file)
    # What PostgreSQL itself says to a wrong password, field for field.
    direct = login_error(pg, password="not-the-password")
    e = login_error(relay, password="not-the-password")
    for f in ("S", "C", "M"):  # severity, SQLSTATE, message
        assert e[f] == direct[f], (f, e, direct)
    assert e["C"] == "28P01"
    assert e["M"] == 'password authentication failed for user "%s"' % pg.user
    e = login_error(relay, user="nobody", password="whatever")
    assert e["C"] == "28P01", e
    assert e["M"] == 'password authentication failed for user "nobody"'
    r = psql(relay, "not-the-password")
    assert r.returncode != 0
    assert 'FATAL:  password authentication failed for user "%s"' % pg.user in r.stderr
    relay.wait_for_log(lambda l: l.get("event") == "auth_refused" and
                       l.get("detail") == "wrong password", timeout=WAIT)
    relay.wait_for_log(lambda l: l.get("event") == "auth_refused" and
                       l.get("detail") == "no such user in auth.users_file", timeout=WAIT)
    # The relay still serves the right password.
    assert psql(relay, pg.password).returncode == 0


def test_lockout_after_failures(relay_factory, users_file, pg, pgwardend_bin, tmp_path):
    key = str(tmp_path / "audit.key")
    subprocess.run([os.path.join(os.path.dirname(pgwardend_bin), "pgwardenctl"), "audit",
                    "keygen", "--out", key], check=True, capture_output=True, timeout=30)
    trail = str(tmp_path / "audit.log")
    relay = terminate_relay(relay_factory, users_file,
                            ["--auth-lockout-failures", "3", "--audit-path", trail,
                             "--audit-signing-key", key])
    wrong = None
    for _ in range(3):
        wrong = login_error(relay, password="guess")
        assert wrong["C"] == "28P01", wrong
    relay.wait_for_log(lambda l: l.get("event") == "auth_lockout", timeout=WAIT)
    # Locked: the right password gets exactly what a wrong one gets.
    assert login_error(relay) == wrong
    r = psql(relay, pg.password)
    assert r.returncode != 0 and "password authentication failed" in r.stderr, r.stderr

    def lockout_record():
        if not os.path.exists(trail):
            return None
        with open(trail) as f:
            for line in f:
                rec = json.loads(line)
                if "lockout" in json.dumps(rec.get("event", rec.get("type", ""))):
                    return rec
        return None
    end = time.monotonic() + WAIT
    rec = lockout_record()
    while rec is None and time.monotonic() < end:
        time.sleep(0.2)
        rec = lockout_record()
    assert rec is not None, open(trail).read() if os.path.exists(trail) else "no trail"
    assert pg.user in json.dumps(rec)
    # Each refused login reached the stages: the trail has its auth record, refused by
    # pgwarden itself.
    with open(trail) as f:
        auths = [json.loads(l) for l in f if '"auth"' in l]
    refused = [a for a in auths if a.get("ok") is False and a.get("at_relay") is True]
    assert len(refused) >= 4, auths


def test_locks_listed_and_cleared_with_pgwardenctl(relay_factory, users_file, pg,
                                                   pgwardend_bin):
    """`pgwardenctl locks` lists the locked user (and its source's failures), in JSON and
    for a person; `pgwardenctl unlock` clears each, after which the right password logs in
    again; unlocking a name the relay holds nothing for fails with a clear message."""
    relay = terminate_relay(relay_factory, users_file, ["--auth-lockout-failures", "3"])
    for _ in range(3):
        assert login_error(relay, password="guess")["C"] == "28P01"
    relay.wait_for_log(lambda l: l.get("event") == "auth_lockout", timeout=WAIT)
    assert psql(relay, pg.password).returncode != 0

    r = ctl(relay, pgwardend_bin, "locks", "--json")
    assert r.returncode == 0, r.stderr
    locks = json.loads(r.stdout)
    users = [e for e in locks if e["kind"] == "user" and e["name"] == pg.user]
    assert len(users) == 1 and users[0]["locked"] is True, locks
    assert users[0]["failures"] >= 3 and users[0]["locked_seconds"] > 0, locks
    locked = [e["name"] for e in locks if e["locked"]]

    r = ctl(relay, pgwardend_bin, "locks")
    assert r.returncode == 0, r.stderr
    header, *rows = r.stdout.splitlines()
    assert header.split()[:4] == ["KIND", "NAME", "FAILURES", "LOCKED"], r.stdout
    row = [l.split() for l in rows if l.split()[:2] == ["user", pg.user]]
    assert len(row) == 1 and row[0][3] == "yes", r.stdout

    for name in locked:
        r = ctl(relay, pgwardend_bin, "unlock", name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("%s: unlocked as " % name), r.stdout
    relay.wait_for_log(lambda l: l.get("event") == "auth_unlock", timeout=WAIT)
    r = psql(relay, pg.password)
    assert r.returncode == 0 and r.stdout.strip() == pg.user, r.stderr
    r = ctl(relay, pgwardend_bin, "locks", "--json")
    assert r.returncode == 0 and not [e for e in json.loads(r.stdout) if e["locked"]], r.stdout

    r = ctl(relay, pgwardend_bin, "unlock", "nobody-failed-here")
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "no failed logins or lock" in r.stderr and not r.stdout, r.stderr


def scram_verifier(password, salt, iterations=4096):
    """A SCRAM-SHA-256 verifier in PostgreSQL's format (RFC 5802 keys)."""
    import base64
    import hashlib
    import hmac
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    server = hmac.new(salted, b"Server Key", "sha256").digest()
    b64 = lambda b: base64.b64encode(b).decode()
    return "SCRAM-SHA-256$%d:%s$%s:%s" % (iterations, b64(salt), b64(stored), b64(server))


def test_upstream_with_another_verifier(relay_factory, pg, tmp_path):
    """The relay's verifier has another salt than the server's: the client proves itself to
    the relay, but its ClientKey cannot log in upstream: a clear 28000, never a hang. With
    the role's password in auth.upstream_passwords the same setup logs in."""
    users = write_secret(str(tmp_path / "users-other.txt"), '"%s" "%s"\n' % (
        pg.user, scram_verifier(pg.password, b"another-salt-16b")))
    relay = terminate_relay(relay_factory, users)
    r = psql(relay, pg.password)
    assert r.returncode != 0
    assert "is not the one in auth.users_file" in r.stderr, r.stderr
    passwords = write_secret(str(tmp_path / "upstream.txt"),
                             '"%s" "%s"\n' % (pg.user, pg.password))
    relay = terminate_relay(relay_factory, users, ["--auth-upstream-passwords", passwords])
    r = psql(relay, pg.password)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == pg.user


def test_server_never_sees_unauthenticated_clients(relay_factory, users_file, pg):
    """Terminate mode authenticates before it connects upstream: wrong passwords, unknown
    users and clients that give up mid-exchange never cost the server a connection."""
    server = wire.FakeServer()
    try:
        relay = relay_factory(upstream=server.address,
                              extra_args=["--auth-mode", "terminate", "--auth-users-file",
                                          users_file])
        assert login_error(relay, password="wrong")["C"] == "28P01"
        assert login_error(relay, user="nobody", password="x")["C"] == "28P01"
        with wire.Conn(relay.host, relay.port) as c:  # leaves after AuthenticationSASL
            c.send(wire.startup_message({"user": pg.user, "database": pg.dbname}))
            assert c.recv_message().auth_code() == wire.AUTH_SASL
        time.sleep(0.5)
        assert server.conns == []
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# TLS on the client leg: these run once the relay offers TLS (the TLS wiring of the core)


def ask_tls(host, port, timeout=5.0):
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(SSL_REQUEST)
        return s.recv(1)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = tlsutil.Pki(str(tmp_path_factory.mktemp("pki-auth")))
    p.root = p.ca("pgwarden auth test CA")
    p.relay_cert = p.cert(p.root, "pgwarden-relay", server=True,
                          san="DNS:localhost,IP:127.0.0.1")
    p.client = p.cert(p.root, "pgw", client=True)
    return p


def tls_terminate_relay(relay_factory, users_file, pki, tmp_path, pg, extra=""):
    config = ("tls:\n"
              "  client:\n"
              "    mode: prefer\n"
              "    cert_file: %s\n"
              "    key_file: %s\n"
              "    ca_file: %s\n"
              "    verify: optional\n"
              "  server:\n"
              "    mode: prefer\n"
              "auth:\n"
              "  mode: terminate\n"
              "  users_file: %s\n" % (pki.relay_cert.crt, pki.relay_cert.key, pki.root.crt,
                                      users_file)) + extra
    relay = relay_factory(config_text=config)
    if ask_tls(relay.host, relay.port) != b"S":
        pytest.skip(TLS_SKIP)
    return relay


def test_channel_binding_at_the_relay(relay_factory, users_file, pki, tmp_path, pg):
    relay = tls_terminate_relay(relay_factory, users_file, pki, tmp_path, pg)
    r = psql(relay, pg.password, sslmode="require", channel_binding="require")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == pg.user
    relay.wait_for_log(lambda l: l.get("event") == "auth_ok" and l.get("method") ==
                       "scram-sha-256-plus", timeout=WAIT)


def test_client_certificate_mapped_to_the_role(relay_factory, users_file, pki, tmp_path, pg):
    cert_map = write_secret(str(tmp_path / "certmap.txt"), "pgwarden pgw %s\n" % pg.user)
    passwords = write_secret(str(tmp_path / "passwords.txt"),
                             '"%s" "%s"\n' % (pg.user, pg.password))
    relay = tls_terminate_relay(relay_factory, users_file, pki, tmp_path, pg,
                                "  cert_map: %s\n  upstream_passwords: %s\n"
                                % (cert_map, passwords))
    r = psql(relay, "not-the-password", sslmode="require", sslcert=pki.client.crt,
             sslkey=pki.client.key)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == pg.user
    relay.wait_for_log(lambda l: l.get("event") == "auth_ok" and l.get("method") == "cert",
                       timeout=WAIT)
