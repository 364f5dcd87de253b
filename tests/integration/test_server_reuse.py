"""server_reuse: terminate mode keeps server connections between client sessions.

A client that leaves cleanly leaves its PostgreSQL backend behind; pgwardend resets it with
DISCARD ALL and hands it to the next client with the same StartupMessage. What is proven
here, against PostgreSQL 15 with real clients:

  - the next client gets the same backend (pg_backend_pid), and nothing of the first
    client's session: no temporary table, setting, custom variable, prepared statement,
    advisory lock, LISTEN, role or session authorization;
  - a different StartupMessage (another application_name) gets a backend of its own;
  - a session that ends inside a transaction, or without Terminate, leaves nothing: its
    backend ends and its transaction is rolled back;
  - a kept backend that the server ends (pg_terminate_backend) is never handed out;
  - the first client's cancel key stops working when it leaves: it cannot cancel the next
    client's query on the same backend;
  - a TLS server leg is kept with its TLS, and handed only to a session under the same TLS
    settings: after a reload, a new backend;
  - a certificate-only login (auth.cert_map) gets a kept server too, only once its
    certificate was accepted;
  - passthrough mode refuses the setting; pgbench -C through a reusing relay succeeds and
    its sessions reuse backends (pgwardenctl status).
"""

import json
import socket
import subprocess
import threading
import time

import pytest

import harness
import wire
from test_auth_terminate import ctl, server_verifier, write_secret
from test_tls import pg_tls, pki, tls_config  # noqa: F401 - fixtures for the TLS server leg

WAIT = 30.0


@pytest.fixture
def reuse_relay(relay_factory, pg, tmp_path):
    users = write_secret(str(tmp_path / "users.txt"),
                         '"%s" "%s"\n' % (pg.user, server_verifier(pg, pg.user)))
    # One worker: a second session lands where the first left its backend.
    return relay_factory(workers=1, extra_args=[
        "--auth-mode", "terminate", "--auth-users-file", users,
        "--server-reuse-max-idle", "4", "--log-level", "debug"])


def connect(relay, app="itest-reuse", **params):
    import psycopg
    dsn = dict(host=relay.host, port=relay.port, user=relay.user, password=relay.password,
               dbname=relay.dbname, sslmode="disable", connect_timeout=20,
               application_name=app)
    dsn.update(params)
    return psycopg.connect(harness.conninfo(**dsn), autocommit=True)


def backend_pid(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def backend_state(pg, pid):
    """(state, query) of backend pid as pg_stat_activity shows it, or None when gone."""
    out = pg._admin_psql("SELECT state || '|' || query FROM pg_stat_activity "
                         "WHERE pid = %d" % pid).strip()
    return tuple(out.split("|", 1)) if out else None


def wait_reset(pg, pid):
    """Until the kept backend has answered DISCARD ALL and sits idle."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if backend_state(pg, pid) == ("idle", "DISCARD ALL"):
            return
        time.sleep(0.05)
    pytest.fail("backend %d was not reset: %r" % (pid, backend_state(pg, pid)))


def wait_gone(pg, pid):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if backend_state(pg, pid) is None:
            return
        time.sleep(0.05)
    pytest.fail("backend %d is still there: %r" % (pid, backend_state(pg, pid)))


def raw_login(relay, c):
    """Log in on wire.Conn c as psycopg would (application_name itest-reuse); the
    BackendKeyData's (pid, key)."""
    msgs = c.login(relay.user, relay.password, database=relay.dbname,
                   params={"application_name": "itest-reuse"})
    assert wire.first_error(msgs) is None, msgs
    return [m.backend_key() for m in msgs if m.type == "K"][0]


def status(relay, pgwardend_bin):
    r = ctl(relay, pgwardend_bin, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["daemon"]


def test_next_client_gets_the_backend_reset(reuse_relay, pg, pgwardend_bin):
    pg._admin_psql("DO $$BEGIN CREATE ROLE reuse_other; EXCEPTION WHEN duplicate_object "
                   "THEN NULL; END$$")
    with connect(reuse_relay) as a:
        pid = backend_pid(a)
        default_work_mem = a.execute("SHOW work_mem").fetchone()[0]
        a.execute("CREATE TEMP TABLE reuse_tmp (x int)")
        a.execute("SET work_mem = '7MB'")
        a.execute("SET myapp.tenant = 'tenant-a'")
        a.execute("PREPARE reuse_p AS SELECT 1")
        a.execute("SELECT pg_advisory_lock(424242)")
        a.execute("LISTEN reuse_channel")
        a.execute("SET application_name = 'changed-by-a'")
        a.execute("SET SESSION AUTHORIZATION reuse_other")
        assert a.execute("SELECT current_user").fetchone()[0] == "reuse_other"
    wait_reset(pg, pid)
    with connect(reuse_relay) as b:
        row = b.execute(
            "SELECT pg_backend_pid(), to_regclass('pg_temp.reuse_tmp') IS NULL, "
            "current_setting('work_mem'), coalesce(current_setting('myapp.tenant', true), ''), "
            "(SELECT count(*) FROM pg_prepared_statements), "
            "(SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
            " AND pid = pg_backend_pid()), "
            "(SELECT count(*) FROM pg_listening_channels()), "
            "current_setting('application_name'), current_user, session_user").fetchone()
        assert row[0] == pid, "the kept backend was not reused"
        assert row[1:] == (True, default_work_mem, "", 0, 0, 0, "itest-reuse", pg.user,
                           pg.user), row
        # The client learnt the server's parameters as at a login.
        assert b.info.parameter_status("application_name") == "itest-reuse"
        assert b.info.parameter_status("server_version")
        assert b.info.parameter_status("is_superuser") == "on"
    st = status(reuse_relay, pgwardend_bin)["server_reuse"]
    assert st["kept"] >= 2 and st["reused"] >= 1 and st["max_idle_per_worker"] == 4, st
    reuse_relay.wait_for_log(lambda l: "reuses a kept server" in l.get("msg", ""),
                             timeout=WAIT)


def test_other_startup_parameters_get_their_own_backend(reuse_relay, pg):
    with connect(reuse_relay, app="reuse-x") as a:
        pid_x = backend_pid(a)
    wait_reset(pg, pid_x)
    with connect(reuse_relay, app="reuse-y") as b:
        pid_y = backend_pid(b)
        assert b.execute("SELECT current_setting('application_name')").fetchone()[0] == \
            "reuse-y"
    assert pid_y != pid_x
    with connect(reuse_relay, app="reuse-x") as c:
        assert backend_pid(c) == pid_x


def test_session_ending_in_a_transaction_is_not_kept(reuse_relay, pg):
    with connect(reuse_relay) as setup:
        setup.execute("CREATE TABLE IF NOT EXISTS reuse_tx (v text)")
        setup.execute("DELETE FROM reuse_tx")
        setup_pid = backend_pid(setup)
    wait_reset(pg, setup_pid)
    a = connect(reuse_relay)
    a.autocommit = False
    pid = backend_pid(a)
    assert pid == setup_pid
    a.execute("INSERT INTO reuse_tx VALUES ('uncommitted')")
    a.close()  # Terminate inside the transaction
    wait_gone(pg, pid)
    with connect(reuse_relay) as b:
        assert backend_pid(b) != pid
        assert b.execute("SELECT count(*) FROM reuse_tx").fetchone()[0] == 0


def test_client_that_vanishes_leaves_nothing(reuse_relay, pg):
    with wire.Conn(reuse_relay.host, reuse_relay.port) as c:
        pid = raw_login(reuse_relay, c)[0]
    # The socket closed without Terminate: the backend is told Terminate and ends.
    wait_gone(pg, pid)


def test_backend_ended_by_the_server_is_not_handed_out(reuse_relay, pg):
    with connect(reuse_relay) as a:
        pid = backend_pid(a)
    wait_reset(pg, pid)
    pg._admin_psql("SELECT pg_terminate_backend(%d)" % pid)
    wait_gone(pg, pid)
    with connect(reuse_relay) as b:
        assert backend_pid(b) != pid
        assert b.execute("SELECT 1").fetchone()[0] == 1


def test_old_cancel_key_cannot_cancel_the_next_session(reuse_relay, pg):
    with wire.Conn(reuse_relay.host, reuse_relay.port) as c:
        pid, key = raw_login(reuse_relay, c)
        c.send(wire.terminate())
    wait_reset(pg, pid)
    result = {}
    with connect(reuse_relay) as b:
        assert backend_pid(b) == pid

        def run():
            try:
                result["value"] = b.execute("SELECT pg_sleep(1.5), 'finished'").fetchone()[1]
            except Exception as e:  # noqa: BLE001 - the test reports what happened
                result["error"] = e

        t = threading.Thread(target=run)
        t.start()
        deadline = time.monotonic() + WAIT
        while backend_state(pg, pid) != ("active", "SELECT pg_sleep(1.5), 'finished'"):
            assert time.monotonic() < deadline, backend_state(pg, pid)
            time.sleep(0.02)
        with socket.create_connection((reuse_relay.host, reuse_relay.port), timeout=10) as s:
            s.sendall(wire.cancel_request(pid, key))
            s.recv(16)
        t.join(WAIT)
    assert result == {"value": "finished"}, result


def test_tls_server_leg_is_kept_under_the_same_settings(relay_factory, pg_tls, pki, tmp_path,
                                                        pgwardend_bin):
    import psycopg

    users = write_secret(str(tmp_path / "users-tls.txt"),
                         '"%s" "%s"\n' % (pg_tls.user, server_verifier(pg_tls, pg_tls.user)))
    relay = relay_factory(upstream=(pg_tls.host, pg_tls.port), workers=1,
                          config_text=tls_config(pki), extra_args=[
                              "--auth-mode", "terminate", "--auth-users-file", users,
                              "--server-reuse-max-idle", "4"])
    dsn = ("host=localhost port=%d user=%s dbname=%s password=%s sslmode=verify-full "
           "sslrootcert=%s application_name=itest-reuse-tls connect_timeout=20"
           % (relay.port, pg_tls.user, pg_tls.dbname, pg_tls.password, pki.root.crt))
    ssl_row = "SELECT pg_backend_pid(), ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"

    with psycopg.connect(dsn, autocommit=True) as a:
        pid, ssl = a.execute(ssl_row).fetchone()
        assert ssl is True
    wait_reset(pg_tls, pid)
    with psycopg.connect(dsn, autocommit=True) as b:
        assert b.execute(ssl_row).fetchone() == (pid, True)
        listed = json.loads(ctl(relay, pgwardend_bin, "sessions", "--json").stdout)
        mine = [x for x in listed if x.get("application_name") == "itest-reuse-tls"]
        assert mine and mine[0]["upstream_tls"]["version"].startswith("TLSv1."), listed
    wait_reset(pg_tls, pid)
    # A reload builds new TLS settings: the backend kept under the old ones is not handed out.
    r = ctl(relay, pgwardend_bin, "reload")
    assert r.returncode == 0, r.stderr
    with psycopg.connect(dsn, autocommit=True) as c:
        other, ssl = c.execute(ssl_row).fetchone()
        assert ssl is True and other != pid


def test_certificate_login_reuses_a_kept_server(relay_factory, pg, pki, tmp_path, pgwardend_bin):
    """A client that logs in with its certificate alone (auth.cert_map) gets a kept server
    like a SCRAM login does, and only after its certificate was accepted: a client with
    neither certificate nor password is refused, and the kept backend stays idle."""
    import psycopg

    users = write_secret(str(tmp_path / "users.txt"),
                         '"%s" "%s"\n' % (pg.user, server_verifier(pg, pg.user)))
    cert_map = write_secret(str(tmp_path / "certmap.txt"), "pgwarden pgw %s\n" % pg.user)
    passwords = write_secret(str(tmp_path / "passwords.txt"),
                             '"%s" "%s"\n' % (pg.user, pg.password))
    relay = relay_factory(workers=1, config_text=(
        "tls:\n  client:\n    mode: require\n    cert_file: %s\n    key_file: %s\n"
        "    ca_file: %s\n    verify: optional\n  server:\n    mode: disable\n"
        "auth:\n  mode: terminate\n  users_file: %s\n  cert_map: %s\n"
        "  upstream_passwords: %s\nserver_reuse:\n  max_idle: 4\n"
        % (pki.relay_own.crt, pki.relay_own.key, pki.root.crt, users, cert_map, passwords)))
    dsn = ("host=%s port=%d user=%s dbname=%s sslmode=require application_name=itest-reuse-cert "
           "connect_timeout=20" % (relay.host, relay.port, pg.user, pg.dbname))
    with_cert = dsn + " sslcert=%s sslkey=%s password=not-the-password" % (pki.alice.crt,
                                                                           pki.alice.key)

    with psycopg.connect(with_cert, autocommit=True) as a:
        pid = backend_pid(a)
        a.execute("SET myapp.tenant = 'tenant-a'")
    wait_reset(pg, pid)
    with pytest.raises(psycopg.OperationalError) as refused:
        psycopg.connect(dsn + " password=not-the-password", autocommit=True)
    assert "28P01" in str(refused.value) or "password authentication failed" in \
        str(refused.value), refused.value
    assert backend_state(pg, pid) == ("idle", "DISCARD ALL")
    with psycopg.connect(with_cert, autocommit=True) as b:
        assert b.execute("SELECT pg_backend_pid(), current_user, "
                         "current_setting('myapp.tenant', true)").fetchone() in (
            (pid, pg.user, None), (pid, pg.user, ""))
    assert status(relay, pgwardend_bin)["server_reuse"]["reused"] == 1


def test_passthrough_refuses_server_reuse(pgwardend_bin, pg, tmp_path):
    """In passthrough the server authenticated each client: its backend is that client's,
    never to be handed to another."""
    path = tmp_path / "reuse.yaml"
    path.write_text('listen: "127.0.0.1:%d"\nupstream: "%s:%d"\nserver_reuse:\n'
                    '  max_idle: 4\n' % (harness.free_port(), pg.host, pg.port))
    r = subprocess.run([pgwardend_bin, "--check-config", str(path)], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r
    assert "server_reuse.max_idle: only with auth.mode: terminate" in r.stderr, r.stderr


def test_pgbench_sessions_reuse_backends(reuse_relay, pg, pgwardend_bin, tmp_path):
    script = tmp_path / "select1.sql"
    script.write_text("SELECT 1;\n")
    r = subprocess.run(["pgbench", "-n", "-C", "-c", "4", "-j", "4", "-t", "50", "-f",
                        str(script), reuse_relay.dbname], env=reuse_relay.env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "number of failed transactions: 0" in r.stdout, r.stdout
    st = status(reuse_relay, pgwardend_bin)["server_reuse"]
    # 200 sessions, 4 at a time: all but the first few find a kept backend.
    assert st["reused"] >= 150, st
    assert st["held"] <= 4, st
