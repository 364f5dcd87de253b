"""TLS at the relay (issue #10), against the real daemon and a real PostgreSQL 15 with ssl on.

Two kinds of test live here.

What pgwardend does with TLS today, which must hold now: the certificate files are checked at
start, by --check-config and on every reload, each problem one line naming the key; a reload
with a bad file changes nothing and the daemon keeps serving; tls.fips refuses to start where
no FIPS provider is installed (Debian 12 ships none); `pgwardenctl status` says what TLS does
and whether FIPS is on.

What a client sees through the relay now that the connection core drives TLS on both legs
(relay/conn_tls.c over tls/ and relay/transport_tls.c): psql sslmode=require and verify-full,
channel_binding=require passed through, s_client refusals, injection after SSLRequest and
after the server's 'S', a reload under a live TLS session, client certificates. Each of these
first asks the relay for TLS with an SSLRequest and fails at once unless it answers 'S'.

Certificates and keys are made by the tests (tlsutil.py, the openssl command line).
"""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

import harness
import tlsutil

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def tool(pgwardend_bin, name):
    return os.path.join(os.path.dirname(pgwardend_bin), name)


# --------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, the server's certificate (names the loopback tests dial), another certificate
    signed by the same CA, client certificates good and bad, a CRL revoking one."""
    d = str(tmp_path_factory.mktemp("pki"))
    p = tlsutil.Pki(d)
    p.root = p.ca("pgwarden test CA")
    p.other_root = p.ca("other CA")
    p.server = p.cert(p.root, "localhost", server=True,
                      san="DNS:localhost,IP:127.0.0.1,IP:::1")
    p.relay_own = p.cert(p.root, "pgwarden-relay", server=True,
                         san="DNS:localhost,IP:127.0.0.1,IP:::1")
    p.alice = p.cert(p.root, "pgw", client=True)
    p.expired = p.cert(p.root, "pgw", client=True, expired=True)
    p.revoked = p.cert(p.root, "pgw", client=True)
    p.untrusted = p.cert(p.other_root, "pgw", client=True)
    p.wrong_purpose = p.cert(p.root, "pgw", server=True)
    p.crl = p.crl(p.root, revoked=[p.revoked])
    return p


@pytest.fixture(scope="module")
def pg_tls(pki):
    """A cluster of its own with ssl = on (the session cluster stays plaintext)."""
    cluster = harness.PgCluster(max_connections=100)
    try:
        cluster.start()
        cluster.enable_tls(pki.server.crt, pki.server.key, ca=pki.root.crt)
        yield cluster
    finally:
        cluster.stop()


def tls_config(pki, client_cert=None, extra=""):
    """A config file body: the client leg presents client_cert (default: the server's own
    certificate, the transparent setup of docs/TLS.md)."""
    c = client_cert or pki.server
    return ("tls:\n"
            "  client:\n"
            "    mode: prefer\n"
            "    cert_file: %s\n"
            "    key_file: %s\n"
            "  server:\n"
            "    mode: verify-full\n"
            "    ca_file: %s\n"
            "    server_name: localhost\n" % (c.crt, c.key, pki.root.crt)) + extra


def admin_socket(relay):
    return os.path.join(relay.workdir, "admin-%d.sock" % relay.port)


def ctl(pgwardend_bin, relay, *args, check=True):
    r = subprocess.run([tool(pgwardend_bin, "pgwardenctl"), "--socket", admin_socket(relay)]
                       + list(args), capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise AssertionError("pgwardenctl %s: exit %d: %s" % (" ".join(args), r.returncode,
                                                             r.stderr))
    return r


def status(pgwardend_bin, relay):
    return json.loads(ctl(pgwardend_bin, relay, "status", "--json", check=False).stdout)["daemon"]


def ask_tls(host, port, timeout=5.0):
    """Send an SSLRequest; the one-byte answer."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(SSL_REQUEST)
        return s.recv(1)


@pytest.fixture
def tls_relay(relay_factory, pg_tls, pki):
    """A relay in front of the TLS cluster presenting the server's own certificate."""
    def start(config=None, extra_args=()):
        r = relay_factory(upstream=(pg_tls.host, pg_tls.port),
                          config_text=config or tls_config(pki), extra_args=extra_args)
        answer = ask_tls(r.host, r.port)
        assert answer == b"S", ("pgwardend answered an SSLRequest with %r although "
                                "tls.client.mode is on" % answer)
        return r
    return start


def run(argv, env=None, input=None, timeout=60):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, env=e, input=input,
                          timeout=timeout)


def psql(endpoint, sql, **params):
    """psql over TCP to endpoint (pg_tls or a relay) as pgw, with libpq parameters."""
    p = dict(host="localhost", port=endpoint.port, user="pgw", dbname="pgw")
    p.update(params)
    conninfo = " ".join("%s=%s" % (k, v) for k, v in p.items())
    return run([os.path.join(harness.PG_BINDIR, "psql"), "-X", "-A", "-t", "-v",
                "ON_ERROR_STOP=1", "-c", sql, conninfo], env={"PGPASSWORD": "pgw-secret"})


# --------------------------------------------------------------------------------------------
# what holds today: files, FIPS, status, reload


def start_fails(pgwardend_bin, args, tmp_path):
    """pgwardend with args must refuse to start: its exit status and its one stderr line."""
    argv = [pgwardend_bin, "--listen", "127.0.0.1:%d" % harness.free_port(),
            "--upstream", "127.0.0.1:1", "--admin-socket", str(tmp_path / "a.sock")] + args
    r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    return r.returncode, lines[0]


def test_start_refuses_bad_tls_files(pgwardend_bin, pki, tmp_path):
    srv = pki.server
    wrong_key = pki.relay_own.key
    open_key = str(tmp_path / "open.key")
    shutil.copyfile(srv.key, open_key)
    os.chmod(open_key, 0o644)
    garbage = str(tmp_path / "garbage.key")
    with open(garbage, "w") as f:
        f.write("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    os.chmod(garbage, 0o600)
    enc = str(tmp_path / "enc.key")
    tlsutil.openssl("pkey", "-in", srv.key, "-aes256", "-passout", "pass:secret", "-out", enc)
    os.chmod(enc, 0o600)
    base = ["--tls-client-mode", "prefer", "--tls-client-cert-file", srv.crt]
    cases = [
        (["--tls-client-key-file", wrong_key],
         "pgwardend: tls.client.key_file: %s does not match tls.client.cert_file %s"
         % (wrong_key, srv.crt)),
        (["--tls-client-key-file", open_key],
         "pgwardend: tls.client.key_file: %s is open to other users (mode 0644); allow at "
         "most 0640 (chmod 0600 %s)" % (open_key, open_key)),
        (["--tls-client-key-file", str(tmp_path / "missing.key")],
         "pgwardend: tls.client.key_file: %s: cannot read: No such file or directory"
         % (tmp_path / "missing.key")),
        (["--tls-client-key-file", garbage],
         "pgwardend: tls.client.key_file: %s: no unencrypted PEM private key in it (OpenSSL: "
         % garbage),
        (["--tls-client-key-file", enc],
         "pgwardend: tls.client.key_file: %s: no unencrypted PEM private key in it (OpenSSL: "
         % enc),
        (["--tls-client-key-file", srv.key, "--tls-ciphers", "AES256-SHA256"],
         "pgwardend: tls.ciphers: AES256-SHA256 is not ECDHE with an AEAD cipher (pgwarden "
         "offers no other TLS 1.2 cipher)"),
        (["--tls-client-key-file", srv.key, "--tls-client-verify", "required",
          "--tls-client-ca-file", srv.key],
         "pgwardend: tls.client.ca_file: %s: no PEM CA certificate in it (OpenSSL: " % srv.key),
        (["--tls-client-mode", "require"],
         "pgwardend: tls.client.mode: require needs tls.client.cert_file and "
         "tls.client.key_file (the certificate pgwarden presents to clients)"),
    ]
    for extra, want in cases:
        args = (base + extra) if extra[0] != "--tls-client-mode" else extra
        code, line = start_fails(pgwardend_bin, args, tmp_path)
        assert code == 2, (extra, line)
        if want.endswith(": "):
            # OpenSSL's own reason follows; ours is what the operator acts on.
            assert line.startswith(want), (line, want)
        else:
            assert line == want, (line, want)
    # --check-config judges the files too, with its own exit status.
    conf = tmp_path / "c.yaml"
    conf.write_text("listen: 127.0.0.1:1\nupstream: 127.0.0.1:2\n")
    r = subprocess.run([pgwardend_bin, "--check-config", str(conf)] + base +
                       ["--tls-client-key-file", wrong_key], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1
    assert r.stderr == ("pgwardend: tls.client.key_file: %s does not match "
                        "tls.client.cert_file %s\n" % (wrong_key, srv.crt))


def test_fips_refuses_to_start_without_provider(pgwardend_bin, tmp_path):
    """Debian 12 ships no FIPS provider: tls.fips must refuse to start, never fall back."""
    modules = re.search(r'MODULESDIR: "([^"]+)"',
                        tlsutil.openssl("version", "-m")).group(1)
    if os.path.exists(os.path.join(modules, "fips.so")):
        pytest.skip("this host has a FIPS provider installed (%s/fips.so)" % modules)
    code, line = start_fails(pgwardend_bin, ["--tls-fips", "on"], tmp_path)
    assert code == 2
    assert line == ("pgwardend: tls.fips: no FIPS provider is installed (OpenSSL looked for "
                    "%s/fips.so); see docs/TLS.md" % modules)
    conf = tmp_path / "c.yaml"
    conf.write_text("listen: 127.0.0.1:1\nupstream: 127.0.0.1:2\ntls:\n  fips: true\n")
    r = subprocess.run([pgwardend_bin, "--check-config", str(conf)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1 and "tls.fips: no FIPS provider is installed" in r.stderr


def fingerprint(crt):
    out = tlsutil.openssl("x509", "-in", crt, "-noout", "-fingerprint", "-sha256")
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def test_status_and_reload_with_bad_files(relay_factory, pgwardend_bin, pki, tmp_path, pg):
    """A reload whose key is bad fails as a whole: the running snapshot stays, the relay
    serves on, and the error is one line naming the key. A good reload swaps in the new
    certificate."""
    cert = str(tmp_path / "live.crt")
    key = str(tmp_path / "live.key")
    shutil.copyfile(pki.server.crt, cert)
    shutil.copyfile(pki.server.key, key)
    os.chmod(key, 0o600)
    config = ("tls:\n  client:\n    mode: prefer\n    cert_file: %s\n    key_file: %s\n"
              % (cert, key))
    relay = relay_factory(config_text=config)
    st = status(pgwardend_bin, relay)
    assert st["fips"] is False
    assert st["tls"]["client_mode"] == "prefer"
    assert st["tls"]["client_certificate"] == "CN=localhost"
    assert st["tls"]["client_certificate_sha256"] == fingerprint(pki.server.crt)
    assert st["tls"]["server_mode"] == "prefer"
    human = ctl(pgwardend_bin, relay, "status").stdout
    assert re.search(r"^  fips +no$", human, re.M), human

    # The new certificate is in place, its key is not: the pair does not match.
    shutil.copyfile(pki.relay_own.crt, cert)
    r = ctl(pgwardend_bin, relay, "reload", check=False)
    assert r.returncode == 1
    assert r.stderr == ("pgwardenctl: reload: reload_failed: tls.client.key_file: %s does not "
                        "match tls.client.cert_file %s\n" % (key, cert))
    st = status(pgwardend_bin, relay)
    assert st["tls"]["client_certificate_sha256"] == fingerprint(pki.server.crt)
    relay.wait_for_log(lambda d: d.get("event") == "reload" and d.get("level") == "error" and
                       "tls.client.key_file" in d.get("msg", ""))
    # SIGHUP takes the same path.
    relay.signal(signal.SIGHUP)
    relay.wait_for_log(lambda d: d.get("event") == "reload" and d.get("level") == "error" and
                       d.get("msg", "").count("does not match") == 1, timeout=10)
    # The relay still serves.
    assert relay.psql("SELECT 41 + 1").strip() == "42"

    shutil.copyfile(pki.relay_own.key, key)
    ctl(pgwardend_bin, relay, "reload")
    st = status(pgwardend_bin, relay)
    assert st["tls"]["client_certificate"] == "CN=pgwarden-relay"
    assert st["tls"]["client_certificate_sha256"] == fingerprint(pki.relay_own.crt)


# --------------------------------------------------------------------------------------------
# through the relay: these run once the connection core drives TLS


def test_psql_sslmode_require_and_verify_full(tls_relay, pki):
    relay = tls_relay()
    r = psql(relay, "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
             sslmode="require")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("t|TLSv1."), r.stdout  # the upstream leg is TLS too
    # pgwarden presents the server's own certificate: verify-full against the CA passes.
    r = psql(relay, "SELECT 1", sslmode="verify-full", sslrootcert=pki.root.crt)
    assert r.returncode == 0, r.stderr
    start = relay.wait_for_log(lambda d: d.get("event") == "session_start" and
                               d.get("tls_version", "").startswith("TLSv1."))
    assert start.get("tls_cipher")


def test_psycopg_verify_full_and_both_legs_listed(tls_relay, pki, pgwardend_bin):
    """psycopg with sslmode=verify-full; while the session is open, `pgwardenctl sessions`
    lists TLS on both legs."""
    import psycopg

    relay = tls_relay()
    with psycopg.connect("host=localhost port=%d user=pgw dbname=pgw password=pgw-secret "
                         "sslmode=verify-full sslrootcert=%s connect_timeout=20"
                         % (relay.port, pki.root.crt), autocommit=True) as conn:
        assert conn.pgconn.ssl_in_use
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row[0] is True  # the server leg is TLS as well
        sessions = json.loads(ctl(pgwardend_bin, relay, "sessions", "--json").stdout)
        mine = [x for x in sessions if x.get("state") == "idle"]
        assert mine, sessions
        assert mine[0]["tls"]["version"].startswith("TLSv1.")
        assert mine[0]["upstream_tls"]["version"].startswith("TLSv1.")
    metrics = ctl(pgwardend_bin, relay, "metrics").stdout
    for leg in ("client", "server"):
        m = re.search(r'^pgwarden_tls_sessions_total\{leg="%s"\} (\d+)$' % leg, metrics, re.M)
        assert m and int(m.group(1)) >= 1, metrics


def test_plaintext_refused_under_require(tls_relay, pki, pg_tls):
    """tls.client.mode require: a plaintext client gets 28000 and never reaches the server."""
    config = tls_config(pki).replace("    mode: prefer\n", "    mode: require\n", 1)
    relay = tls_relay(config=config)
    r = psql(relay, "SELECT 1", sslmode="disable", user="plaintext_probe")
    assert r.returncode != 0
    assert "SSL connection is required" in r.stderr, r.stderr
    relay.wait_for_log(lambda d: d.get("event") == "connection_rejected" and
                       d.get("reason") == "plaintext refused: TLS required")
    r = psql(relay, "SELECT 1", sslmode="require")
    assert r.returncode == 0, r.stderr


def test_channel_binding_require_passes_through(tls_relay, pg_tls, pki):
    """SCRAM-SHA-256-PLUS end to end: the client binds to the hash of the certificate
    pgwarden presents, the server to the hash of its own: the same certificate."""
    # Directly first: the setup itself supports binding.
    r = psql(pg_tls, "SELECT 1", sslmode="require", channel_binding="require")
    assert r.returncode == 0, r.stderr
    relay = tls_relay()
    r = psql(relay, "SELECT 1", sslmode="verify-full", sslrootcert=pki.root.crt,
             channel_binding="require")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_channel_binding_impossible_with_another_certificate(tls_relay, pki):
    """pgwarden presenting a certificate of its own: binding cannot pass. The relay hides
    SCRAM-SHA-256-PLUS from the client, so channel_binding=require is told so by libpq
    instead of failing the proof. A client that merely prefers binding (libpq's default)
    then sends the gs2 flag 'y' ("I could bind, you seem unable"), which a server that can
    bind must refuse (RFC 5802 downgrade protection), and the flag is inside the proof:
    no relay can fix that up. Only clients that do not bind (channel_binding=disable) log
    in; docs/TLS.md says to present the server's own certificate instead."""
    relay = tls_relay(config=tls_config(pki, client_cert=pki.relay_own))
    r = psql(relay, "SELECT 1", sslmode="require", channel_binding="require")
    assert r.returncode != 0
    assert "channel binding is required, but server did not offer" in r.stderr, r.stderr
    r = psql(relay, "SELECT 1", sslmode="require")
    assert r.returncode != 0
    assert "channel binding" in r.stderr, r.stderr
    r = psql(relay, "SELECT 1", sslmode="require", channel_binding="disable")
    assert r.returncode == 0, r.stderr


def s_client(port, *args, input_text="", timeout=30):
    return run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-starttls",
                "postgres", "-brief"] + list(args), input=input_text, timeout=timeout)


@pytest.mark.parametrize("args", [
    ["-tls1_1", "-cipher", "ALL:@SECLEVEL=0"],
    ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA256"],
    ["-tls1_2", "-cipher", "AES128-GCM-SHA256:AES256-GCM-SHA384"],
], ids=["tls1.1", "cbc-only", "rsa-kx-only"])
def test_s_client_refused(tls_relay, args):
    relay = tls_relay()
    r = s_client(relay.port, *args)
    assert r.returncode != 0
    assert "CONNECTION ESTABLISHED" not in r.stdout + r.stderr


def test_s_client_renegotiation_refused(tls_relay):
    relay = tls_relay()
    # 'R' on a line of its own asks s_client to renegotiate (TLS 1.2).
    r = s_client(relay.port, "-tls1_2", input_text="R\n", timeout=30)
    out = r.stdout + r.stderr
    assert "RENEGOTIATING" in out
    relay.wait_for_log(lambda d: "renegotiate" in d.get("reason", "") + d.get("msg", ""))


def test_direct_ssl_needs_alpn(tls_relay):
    """PostgreSQL 17 direct SSL: a ClientHello first, ALPN postgresql required."""
    relay = tls_relay()
    base = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % relay.port, "-brief"]
    r = run(base + ["-alpn", "postgresql"], input="")
    assert "CONNECTION ESTABLISHED" in r.stdout + r.stderr
    r = run(base, input="")
    assert "CONNECTION ESTABLISHED" not in r.stdout + r.stderr
    r = run(base + ["-alpn", "http/1.1"], input="")
    assert "CONNECTION ESTABLISHED" not in r.stdout + r.stderr


def test_injection_after_sslrequest_is_refused(tls_relay, pg_tls):
    """Bytes sent after an SSLRequest before the handshake (CVE-2021-23214): the connection
    ends and nothing reaches the server."""
    relay = tls_relay()
    startup = struct.pack("!ii", 0, 196608) + b"user\0pgw\0database\0pgw\0\0"
    startup = struct.pack("!i", len(startup)) + startup[4:]
    with socket.create_connection((relay.host, relay.port), timeout=10) as s:
        s.sendall(SSL_REQUEST + startup)
        answer = b""
        try:
            while True:
                b = s.recv(1024)
                if not b:
                    break
                answer += b
        except (ConnectionResetError, socket.timeout):
            pass
    assert not answer.startswith(b"S") or len(answer) == 1
    assert "connection authorized" not in pg_tls.log_text()


class FakeServer(threading.Thread):
    """A hostile upstream: answers SSLRequest with 'S' and then plaintext before any
    ServerHello (injection), or with an ErrorResponse, or with 'N'."""

    def __init__(self, answer):
        super().__init__(daemon=True)
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.received = b""

    def run(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        with c:
            c.settimeout(5)
            try:
                self.received += c.recv(8)
                c.sendall(self.answer)
                while True:
                    b = c.recv(4096)
                    if not b:
                        break
                    self.received += b
            except OSError:
                pass

    def stop(self):
        self.sock.close()


def error_response(text):
    body = b"SFATAL\x00C08P01\x00M" + text.encode() + b"\x00\x00"
    return b"E" + struct.pack("!i", len(body) + 4) + body


@pytest.mark.parametrize("answer,mode", [
    (b"S" + b"\x00" * 32, "require"),                               # injected after 'S'
    (error_response("no ssl for you"), "prefer"),                  # never shown to the client
    (b"N", "require"),                                              # no downgrade
], ids=["inject-after-S", "error-response", "N-under-require"])
def test_hostile_upstream(tls_relay, relay_factory, pki, answer, mode):
    tls_relay()  # the TLS cluster is up
    fake = FakeServer(answer)
    fake.start()
    try:
        relay = relay_factory(upstream=("127.0.0.1", fake.port),
                              config_text="tls:\n  server:\n    mode: %s\n" % mode)
        r = psql(relay, "SELECT 1", sslmode="disable", host="127.0.0.1")
        assert r.returncode != 0
        assert "no ssl for you" not in r.stderr  # never shown to the client
        assert "pgw-secret" not in fake.received.decode("latin-1")
    finally:
        fake.stop()


def test_reload_with_live_tls_session(tls_relay, pki, pgwardend_bin, tmp_path):
    """A certificate reload while a TLS session is open: the session carries on, new
    sessions see the new certificate."""
    cert = str(tmp_path / "c.crt")
    key = str(tmp_path / "c.key")
    shutil.copyfile(pki.server.crt, cert)
    shutil.copyfile(pki.server.key, key)
    os.chmod(key, 0o600)
    relay = tls_relay(config=("tls:\n  client:\n    mode: prefer\n    cert_file: %s\n"
                              "    key_file: %s\n" % (cert, key)))
    p = subprocess.Popen([os.path.join(harness.PG_BINDIR, "psql"), "-X", "-A", "-t",
                          "host=localhost port=%d user=pgw dbname=pgw sslmode=require"
                          % relay.port], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, PGPASSWORD="pgw-secret"))
    try:
        p.stdin.write("SELECT 1;\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "1"
        shutil.copyfile(pki.relay_own.crt, cert)
        shutil.copyfile(pki.relay_own.key, key)
        ctl(pgwardend_bin, relay, "reload")
        p.stdin.write("SELECT 2;\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "2"
        out = run(["openssl", "s_client", "-connect", "127.0.0.1:%d" % relay.port,
                   "-starttls", "postgres", "-showcerts"], input="").stdout
        assert "CN = pgwarden-relay" in out or "CN=pgwarden-relay" in out
    finally:
        p.stdin.close()
        p.wait(timeout=30)


@pytest.mark.parametrize("which,ok", [("alice", True), ("expired", False), ("revoked", False),
                                      ("untrusted", False), ("wrong_purpose", False)])
def test_client_certificates(tls_relay, pki, which, ok):
    extra = ("    verify: required\n    ca_file: %s\n    crl_file: %s\n"
             % (pki.root.crt, pki.crl))
    config = tls_config(pki).replace("    mode: prefer\n", "    mode: require\n" + extra, 1)
    relay = tls_relay(config=config)
    c = getattr(pki, which)
    r = psql(relay, "SELECT 1", sslmode="require", sslcert=c.crt, sslkey=c.key)
    assert (r.returncode == 0) == ok, r.stderr
    if ok:
        relay.wait_for_log(lambda d: d.get("event") == "session_start" and
                           d.get("tls_identity") == "pgw")


# --------------------------------------------------------------------------------------------
# the masking catalog connection over TLS (docs/MASKING.md, docs/TLS.md "The server leg")

MASK_POLICY = """
rules:
  - name: tls-support
    match: { user: tls_support }
    allow: [read, session, transaction]
    mask:
      public.tls_customers.ssn: partial-last-4
"""


@pytest.fixture(scope="module")
def hostssl_catalog(pg_tls):
    """A catalog role the server admits over TLS only (hostssl; any plaintext attempt is
    rejected), a masked role that may log in either way, and a table with a secret."""
    pg_tls.psql("CREATE ROLE tls_catalog LOGIN PASSWORD 'tls-catalog-secret'")
    pg_tls.psql("CREATE ROLE tls_support LOGIN PASSWORD 'tls-support-secret'")
    pg_tls.psql("CREATE TABLE tls_customers (id int, ssn text); "
                "INSERT INTO tls_customers VALUES (1, '123-45-6789'); "
                "GRANT SELECT ON tls_customers TO tls_support")
    hba = os.path.join(pg_tls.datadir, "pg_hba.conf")
    with open(hba) as f:
        rest = f.read()
    with open(hba, "w") as f:
        f.write("hostssl all tls_catalog 127.0.0.1/32 scram-sha-256\n"
                "host all tls_catalog all reject\n" + rest)
    pg_tls._admin_psql("SELECT pg_reload_conf()")
    time.sleep(0.5)
    return "tls_catalog"


def masking_args(tmp_path):
    policy = tmp_path / "mask-policy.yaml"
    policy.write_text(MASK_POLICY)
    passwords = tmp_path / "catalog-passwords.txt"
    passwords.write_text('"tls_catalog" "tls-catalog-secret"\n')
    os.chmod(passwords, 0o600)
    return ["--policy", str(policy), "--mask-catalog-user", "tls_catalog",
            "--mask-catalog-database", "pgw", "--mask-catalog-passwords", str(passwords)]


def masked_select(relay):
    p = dict(host="127.0.0.1", port=relay.port, user="tls_support", dbname="pgw",
             sslmode="disable")
    conninfo = " ".join("%s=%s" % (k, v) for k, v in p.items())
    return run([os.path.join(harness.PG_BINDIR, "psql"), "-X", "-A", "-t", "-v",
                "ON_ERROR_STOP=1", "-v", "VERBOSITY=verbose", "-c",
                "SELECT ssn FROM tls_customers", conninfo],
               env={"PGPASSWORD": "tls-support-secret"})


def test_mask_catalog_over_tls_to_a_hostssl_only_role(relay_factory, pg_tls, pki,
                                                      hostssl_catalog, tmp_path):
    """The catalog connection follows tls.server.* (verify-full, the test CA, SNI
    localhost): the hostssl-only catalog role logs in, the catalog is read, and the masked
    role sees its column masked."""
    relay = relay_factory(upstream=(pg_tls.host, pg_tls.port), config_text=tls_config(pki),
                          extra_args=masking_args(tmp_path))
    relay.wait_for_log(lambda d: d.get("event") == "mask_catalog" and
                       "resolved 1 masked column" in (d.get("msg") or ""))
    r = masked_select(relay)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "XXXXXXX6789"
    assert "123-45-6789" not in r.stdout


def test_mask_catalog_in_plaintext_is_refused_by_hostssl(relay_factory, pg_tls, pki,
                                                         hostssl_catalog, tmp_path):
    """tls.server.mode disable against the same server: the catalog role is rejected, so
    the catalog is never read and masked sessions are refused with 55000 (never served
    clear); the log line says the catalog connection was plaintext, and why."""
    config = ("tls:\n  client:\n    mode: disable\n  server:\n    mode: disable\n")
    relay = relay_factory(upstream=(pg_tls.host, pg_tls.port), config_text=config,
                          extra_args=masking_args(tmp_path))
    line = relay.wait_for_log(lambda d: d.get("event") == "mask_catalog" and
                              "catalog resolution failed" in (d.get("msg") or ""))
    assert "(over plaintext: tls.server.mode is disable)" in line["msg"], line
    assert "28000" in line["msg"], line
    r = masked_select(relay)
    assert r.returncode != 0
    assert "123-45-6789" not in r.stdout
    assert "ERROR:  55000:" in r.stderr, r.stderr
