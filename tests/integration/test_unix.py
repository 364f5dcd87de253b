"""The relay's Unix-socket listener (unix_listen) and PostgreSQL's Unix socket as its
upstream (unix_upstream), against a real server.

A client of the relay's socket is known by its credentials: the session log names its
pid, uid and command. Over PostgreSQL's socket the relay connects with the client's own
uid and gid (transparent_source), so the server's peer authentication sees the client, as
it would without pgwarden, while the path is looked up as pgwardend, so a server socket in a
private directory is reached through the relay only; with transparent_source off the
server sees pgwardend and refuses peer authentication.
Cancels of such sessions go to the Unix socket too. Startup refuses a path somebody still
accepts on or a file that is not a socket, replaces a stale socket, and removes its own at
exit.
"""

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import psycopg
import pytest

import harness


@pytest.fixture
def sockdir():
    """A directory every local user may reach (pytest's tmp_path is root's alone)."""
    d = tempfile.mkdtemp(prefix="pgwarden-itest-unix-")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def relay_socket(sockdir, port):
    return os.path.join(sockdir, ".s.PGSQL.%d" % port)


def pg_socket(pg):
    return os.path.join(pg.sockdir, ".s.PGSQL.%d" % pg.port)


def unix_relay(relay_factory, pg, sockdir, *extra, upstream_unix=True):
    args = ["--unix-listen", relay_socket(sockdir, pg.port)]
    if upstream_unix:
        args += ["--unix-upstream", pg_socket(pg)]
    return relay_factory(extra_args=args + list(extra))


def psql_unix(pg, sockdir, sql, user="pgw", as_os_user=None, dbname="pgw", check=True):
    """psql over the Unix socket in sockdir, as as_os_user (None: root)."""
    env = pg.env(PGHOST=sockdir, PGPORT=str(pg.port), PGUSER=user, PGDATABASE=dbname)
    cmd = [os.path.join(pg.bindir, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
           "-c", sql]
    if as_os_user:
        pw = pwd.getpwnam(as_os_user)
        cmd = ["setpriv", "--reuid=%d" % pw.pw_uid, "--regid=%d" % pw.pw_gid,
               "--init-groups"] + cmd
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def starts(relay):
    return [d for d in relay.log_lines() if d.get("event") == "session_start"]


def test_password_client_through_unix_sockets(pg, relay_factory, sockdir):
    relay = unix_relay(relay_factory, pg, sockdir)
    assert os.stat(relay_socket(sockdir, pg.port)).st_mode & 0o777 == 0o666
    r = psql_unix(pg, sockdir, "SELECT current_user, inet_client_addr() IS NULL")
    assert r.stdout.strip() == "pgw|t"  # the server saw a Unix-socket client
    log = relay.wait_for_log({"event": "session_start", "user": "pgw"})
    assert log["route"] == "explicit"
    assert log["peer"] == "unix"
    assert "dialled" not in log
    assert log["upstream"] == "unix:" + pg_socket(pg)
    assert log["comm"] == "psql" and int(log["uid"]) == 0
    end = relay.wait_for_log({"event": "session_end", "user": "pgw"})
    assert end["reason"] == "client terminated"


def test_peer_authentication_sees_the_client(pg, relay_factory, sockdir):
    """postgres is peer-authenticated: through the relay it gets in as itself."""
    relay = unix_relay(relay_factory, pg, sockdir)
    pw = pwd.getpwnam("postgres")
    r = psql_unix(pg, sockdir, "SELECT current_user", user="postgres", dbname="postgres",
                  as_os_user="postgres")
    assert r.stdout.strip() == "postgres"
    log = relay.wait_for_log({"event": "session_start", "user": "postgres"})
    assert int(log["uid"]) == pw.pw_uid and int(log["gid"]) == pw.pw_gid
    # The worker thread is root again: the next (root) client's connect still works.
    assert psql_unix(pg, sockdir, "SELECT 1").stdout.strip() == "1"


def test_without_transparent_source_the_server_sees_pgwarden(pg, relay_factory, sockdir):
    unix_relay(relay_factory, pg, sockdir, "--transparent-source", "false")
    r = psql_unix(pg, sockdir, "SELECT 1", user="postgres", dbname="postgres",
                  as_os_user="postgres", check=False)
    assert r.returncode != 0
    assert 'Peer authentication failed for user "postgres"' in r.stderr, r.stderr


def test_private_server_socket_is_reached_only_through_the_relay(pg, relay_factory, sockdir):
    """PostgreSQL's socket directory is private (0700 postgres): nobody cannot reach it by
    itself, by any spelling. Through the relay it can: the relay looks the path up with its
    own (root) file-system ids and connects with nobody's uid and gid, so the server decides
    as it would for nobody (here: SCRAM as pgw)."""
    relay = unix_relay(relay_factory, pg, sockdir)
    nobody = pwd.getpwnam("nobody")
    direct = subprocess.run(["setpriv", "--reuid=%d" % nobody.pw_uid,
                             "--regid=%d" % nobody.pw_gid, "--clear-groups",
                             "test", "-x", pg.sockdir])
    assert direct.returncode != 0
    r = psql_unix(pg, sockdir, "SELECT current_user", as_os_user="nobody")
    assert r.stdout.strip() == "pgw"
    log = relay.wait_for_log({"event": "session_start", "user": "pgw"})
    assert int(log["uid"]) == nobody.pw_uid


def test_unix_clients_to_tcp_upstream(pg, relay_factory, sockdir):
    relay = unix_relay(relay_factory, pg, sockdir, upstream_unix=False)
    r = psql_unix(pg, sockdir, "SELECT inet_client_addr()::text")
    assert r.stdout.strip() == "127.0.0.1/32"
    log = relay.wait_for_log({"event": "session_start", "user": "pgw"})
    assert log["upstream"] == "127.0.0.1:%d" % pg.port and log["peer"] == "unix"


def test_cancel_goes_to_the_unix_socket(pg, relay_factory, sockdir):
    relay = unix_relay(relay_factory, pg, sockdir)
    with psycopg.connect(host=sockdir, port=pg.port, user="pgw", password=pg.password,
                         dbname="pgw", connect_timeout=20, autocommit=True) as conn:
        timer = threading.Timer(1.0, conn.cancel)
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(60)")
        finally:
            timer.cancel()
        assert conn.execute("SELECT 5").fetchone()[0] == 5
    relay.wait_for_log({"event": "cancel_forwarded"})


def test_many_clients_share_the_listener(pg, relay_factory, sockdir):
    """Every worker watches the one socket: concurrent clients all get served."""
    relay = unix_relay(relay_factory, pg, sockdir)
    errors = []

    def one(i):
        try:
            with psycopg.connect(host=sockdir, port=pg.port, user="pgw", password=pg.password,
                                 dbname="pgw", connect_timeout=30) as c:
                assert c.execute("SELECT %s::int", (i,)).fetchone()[0] == i
                time.sleep(0.2)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len([d for d in starts(relay) if d.get("peer") == "unix"]) == 40


def test_startup_refusals_and_cleanup(pg, relay_factory, sockdir, pgwardend_bin, tmp_path):
    path = relay_socket(sockdir, pg.port)

    def daemon(*extra):
        return subprocess.run(
            [pgwardend_bin, "--listen", "127.0.0.1:%d" % harness.free_port(),
             "--upstream", "127.0.0.1:%d" % pg.port, "--unix-listen", path,
             "--admin-socket", str(tmp_path / "admin-refused.sock")] + list(extra),
            capture_output=True, text=True, timeout=60)

    # A regular file is never replaced.
    with open(path, "w") as f:
        f.write("not a socket")
    r = daemon()
    assert r.returncode != 0
    assert "cannot listen on unix:%s: a file that is not a socket is in the way" % path in r.stderr
    assert open(path).read() == "not a socket"
    os.unlink(path)

    # A stale socket (nobody accepts on it) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    relay = unix_relay(relay_factory, pg, sockdir)
    assert psql_unix(pg, sockdir, "SELECT 1").stdout.strip() == "1"

    # A live one is not: a second daemon on the same path stops, the first keeps serving.
    r = daemon()
    assert r.returncode != 0
    assert "another process accepts connections there" in r.stderr, r.stderr
    assert psql_unix(pg, sockdir, "SELECT 2").stdout.strip() == "2"

    # SIGTERM: the socket file goes with the daemon.
    assert relay.stop() == 0
    assert not os.path.exists(path)
