"""pgwardenctl attach must not silently break TLS clients (issue #10).

When the protected server offers TLS and pgwardend presents no certificate to clients,
steered clients would get 'N' from pgwarden: sslmode=require clients fail, prefer clients
fall back to plaintext. attach asks the server (an SSLRequest on loopback, marked so an
earlier attach cannot steer the probe) and pgwardend (its status), and refuses with one
line; --no-tls-check attaches anyway. Under --fail-open the daemon is the program attach
becomes, so the daemon refuses to start instead, and the links die with it.
"""

import os
import subprocess

import pytest

import harness
import tlsutil


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = tlsutil.Pki(str(tmp_path_factory.mktemp("pki")))
    p.root = p.ca("attach test CA")
    p.server = p.cert(p.root, "localhost", server=True, san="DNS:localhost,IP:127.0.0.1")
    return p


@pytest.fixture(scope="module")
def pg_tls(pki):
    cluster = harness.PgCluster(max_connections=50)
    try:
        cluster.start()
        cluster.enable_tls(pki.server.crt, pki.server.key)
        yield cluster
    finally:
        cluster.stop()


def admin_socket(relay):
    return os.path.join(relay.workdir, "admin-%d.sock" % relay.port)


def attach(instance, pg, relay, cgroup, *extra):
    return instance.run("--socket", admin_socket(relay), "attach", "--port", str(pg.port),
                        "--relay", "127.0.0.1:%d" % relay.port, "--cgroup", cgroup.path,
                        *extra, check=False)


def test_attach_refuses_without_client_certificate(pg_tls, instance, cgroup, relay_factory):
    relay = relay_factory(upstream=pg_tls)
    r = attach(instance, pg_tls, relay, cgroup)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(
        "pgwardenctl: attach: the server on 127.0.0.1:%d offers TLS (certificate CN=localhost) "
        "but pgwardend presents no certificate to clients (tls.client.mode is disable)"
        % pg_tls.port), r.stderr
    assert "--no-tls-check" in r.stderr
    assert instance.status()["attached"] is False
    # The operator's explicit word attaches anyway.
    r = attach(instance, pg_tls, relay, cgroup, "--no-tls-check")
    assert r.returncode == 0, r.stderr
    assert instance.status()["attached"] is True


def test_attach_with_the_servers_certificate(pg_tls, pki, instance, cgroup, relay_factory):
    config = ("tls:\n  client:\n    mode: prefer\n    cert_file: %s\n    key_file: %s\n"
              % (pki.server.crt, pki.server.key))
    relay = relay_factory(upstream=pg_tls, config_text=config)
    r = attach(instance, pg_tls, relay, cgroup)
    assert r.returncode == 0, r.stderr
    # Again, while attached, from inside the steered cgroup: the probe carries the relay's
    # mark, so the hooks let it through to the server instead of steering it to pgwarden
    # (which would answer for itself).
    before = instance.status()["counters"]["skipped_relay_mark"]
    argv = [instance.path, "--socket", admin_socket(relay), "attach", "--port",
            str(pg_tls.port), "--relay", "127.0.0.1:%d" % relay.port, "--cgroup", cgroup.path]
    r = subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec "$@"', cgroup.path]
                       + argv, capture_output=True, text=True, env=instance.env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert instance.status()["counters"]["skipped_relay_mark"] >= before + 1


def test_attach_plaintext_server_needs_nothing(pg, instance, cgroup, relay_factory):
    relay = relay_factory()
    r = attach(instance, pg, relay, cgroup)
    assert r.returncode == 0, r.stderr
    assert "TLS" not in r.stderr and "warning" not in r.stderr, r.stderr


def test_attach_cannot_ask_pgwardend(pg_tls, instance, cgroup, relay_factory, tmp_path):
    """The server offers TLS and pgwardend's admin socket is elsewhere: not knowing is a
    refusal too, naming the way out."""
    relay = relay_factory(upstream=pg_tls)
    r = instance.run("--socket", str(tmp_path / "nowhere.sock"), "attach", "--port",
                     str(pg_tls.port), "--relay", "127.0.0.1:%d" % relay.port, "--cgroup",
                     cgroup.path, check=False)
    assert r.returncode == 1
    assert ("offers TLS and pgwardend cannot be asked whether it presents a certificate to "
            "clients (%s: " % (tmp_path / "nowhere.sock")) in r.stderr, r.stderr
    assert instance.status()["attached"] is False


def test_fail_open_daemon_refuses(pg_tls, instance, cgroup, pgwardend_bin, tmp_path):
    """attach --fail-open ... -- pgwardend: the daemon is told the server offers TLS and,
    with no certificate of its own, refuses to start; the links it would hold are gone."""
    port = harness.free_port()
    r = instance.run("attach", "--fail-open", "--port", str(pg_tls.port), "--relay",
                     "127.0.0.1:%d" % port, "--cgroup", cgroup.path, "--",
                     pgwardend_bin, "--listen", "127.0.0.1:%d" % port, "--upstream",
                     "127.0.0.1:%d" % pg_tls.port, "--steer-instance", instance.instance,
                     "--admin-socket", str(tmp_path / "a.sock"), check=False, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert ("pgwardend: the server on 127.0.0.1:%d offers TLS but tls.client.mode is disable"
            % pg_tls.port) in r.stderr, r.stderr
    assert instance.status()["attached"] is False
