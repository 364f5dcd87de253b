"""Many clients at once through pgwarden.

The relay's workers each own many connections on one epoll loop; what can go wrong there is
not speed but mixing: a reply delivered to the wrong client, a session starved or dropped
under load, an upstream connection left open after its client went away. These tests hold
many sessions open together and check every reply against what that session asked for, and
check on the server (directly, not through the relay) that the sessions exist and end.

Waits are bounded hang guards, never performance assertions.
"""

import asyncio
import hashlib
import random
import re
import subprocess
import threading
import time

import psycopg
import pytest

N_CLIENTS = 1000
APP_1000 = "pgw-c1000"


def _server_sessions(pg, application_name):
    """pids of client backends with this application_name, seen directly on the server."""
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                            "AND backend_type = 'client backend'",
                            [application_name]).fetchall()
    return {r[0] for r in rows}


def _wait_server_sessions_gone(pg, application_name, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        left = _server_sessions(pg, application_name)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


async def _open_and_query(dsn, i, sem):
    # The semaphore bounds connection attempts in flight, not connections held: it keeps the
    # listen backlogs (relay and server) from overflowing into SYN retries on a busy
    # machine, while every connection, once made, stays open until the end.
    async with sem:
        conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        cur = await conn.execute("SELECT %s::int, pg_backend_pid(), current_user", [i])
        n, pid, user = await cur.fetchone()
        if (n, user) != (i, "pgw"):
            raise AssertionError("client %d got the reply (%r, %r)" % (i, n, user))
        return conn, pid
    except BaseException:
        await conn.close()
        raise


async def _thousand_clients(target, pg):
    dsn = target.dsn(application_name=APP_1000, connect_timeout=60)
    sem = asyncio.Semaphore(64)
    results = await asyncio.wait_for(
        asyncio.gather(*(_open_and_query(dsn, i, sem) for i in range(N_CLIENTS)),
                       return_exceptions=True),
        timeout=600)
    conns = [r[0] for r in results if not isinstance(r, BaseException)]
    try:
        errors = [r for r in results if isinstance(r, BaseException)]
        assert not errors, "%d of %d clients failed; first errors: %s" % (
            len(errors), N_CLIENTS, [repr(e) for e in errors[:5]])
        client_pids = {r[1] for r in results}
        assert len(client_pids) == N_CLIENTS, "two clients reported the same backend"

        # All of them open at the same time, each on its own backend, as the server sees it.
        server_pids = await asyncio.to_thread(_server_sessions, pg, APP_1000)
        assert server_pids == client_pids

        # Every session busy at once: each asks something only it can answer.
        async def second_query(i, conn):
            cur = await conn.execute("SELECT md5(%s || ':' || pg_backend_pid())", [str(i)])
            return (await cur.fetchone())[0]

        digests = await asyncio.wait_for(
            asyncio.gather(*(second_query(i, c) for i, c in enumerate(conns))), timeout=300)
        want = [hashlib.md5(("%d:%d" % (i, results[i][1])).encode()).hexdigest()
                for i in range(N_CLIENTS)]
        assert digests == want
    finally:
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return client_pids


@pytest.mark.targets("direct", "pgwarden")  # bytewise adds nothing here but minutes
@pytest.mark.relay_args("--max-connections", "1100")
def test_thousand_concurrent_clients(target, pg):
    """1,000 clients log in (SCRAM), query, and are all held open at once; then all close,
    and every upstream session ends with them."""
    client_pids = asyncio.run(_thousand_clients(target, pg))
    left = _wait_server_sessions_gone(pg, APP_1000)
    assert not left, "%d server sessions outlived their clients" % len(left)

    if target.relay is not None:
        # The daemon logged each session's start and end, with the backend it used.
        def ended(d):
            return d.get("event") == "session_end" and d.get("application_name") == APP_1000

        deadline = time.monotonic() + 60
        while True:
            lines = target.relay.log_lines()
            starts = {d["session"] for d in lines if d.get("event") == "session_start"
                      and d.get("application_name") == APP_1000}
            ends = [d for d in lines if ended(d)]
            if len(ends) >= N_CLIENTS or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(starts) == N_CLIENTS
        assert {d["session"] for d in ends} == starts
        assert {int(d["backend_pid"]) for d in ends if d.get("backend_pid")} == client_pids


def _session_worker(target, worker, rounds, payload_size, errors):
    """One client's private conversation: writes rows only it knows, reads them back in
    several ways, and records any answer that is not its own."""
    rnd = random.Random(worker)
    table = "conc_%s_%d" % (target.kind.replace("-", "_"), worker)
    try:
        with psycopg.connect(target.dsn(application_name="pgw-conc-%d" % worker),
                             autocommit=True) as conn:
            conn.execute("CREATE TEMP TABLE %s (k int, v bytea)" % table)
            for r in range(rounds):
                blob = rnd.randbytes(payload_size)
                with conn.cursor() as cur:
                    with cur.copy("COPY %s (k, v) FROM STDIN" % table) as cp:
                        cp.write_row((r, blob))
                    got = conn.execute("SELECT v FROM %s WHERE k = %%s" % table,
                                       [r]).fetchone()[0]
                    if got != blob:
                        errors.append("worker %d round %d: bytea mismatch" % (worker, r))
                    cur = conn.cursor(binary=True)
                    cur.execute("SELECT %s::int, md5(v) FROM " + table + " WHERE k = %s",
                                [worker, r])
                    w, digest = cur.fetchone()
                    if (w, digest) != (worker, hashlib.md5(blob).hexdigest()):
                        errors.append("worker %d round %d: got (%r, %r)" % (worker, r, w, digest))
                    with cur.copy("COPY (SELECT k FROM %s ORDER BY k) TO STDOUT" % table) as cp:
                        out = b"".join(bytes(c) for c in cp)
                    if out != b"".join(b"%d\n" % k for k in range(r + 1)):
                        errors.append("worker %d round %d: COPY OUT mismatch" % (worker, r))
    except Exception as e:  # reported by the test, with the worker named
        errors.append("worker %d: %r" % (worker, e))


def test_concurrent_sessions_do_not_mix(target):
    """Sessions doing different things at once (COPY in and out, binary and text results,
    payloads larger than one relay buffer) each get exactly their own answers."""
    # Bytewise fewer and smaller: every byte of every session goes through one Python loop.
    if target.bytewise:
        workers, rounds, size = 8, 3, 40_000
    else:
        workers, rounds, size = 32, 8, 300_000
    errors = []
    threads = [threading.Thread(target=_session_worker, args=(target, w, rounds, size, errors),
                                daemon=True) for w in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "a session hung for over 300s"
    assert not errors, "\n".join(errors[:20])


# --------------------------------------------------------------------------------------------
# behind a connection pooler


@pytest.fixture
def bouncer_factory():
    from pgbouncer import PgBouncer
    started = []

    def start(server, creds, **kw):
        b = PgBouncer(server, creds, **kw).start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.stop()


def _pgbench(endpoint, args, timeout=600):
    return subprocess.run(["pgbench"] + args, env=endpoint.env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.targets("direct", "pgwarden")
def test_pgbouncer_transaction_pooling(target, pg, bouncer_factory):
    """16 pgbench clients through PgBouncer in transaction mode, multiplexed onto a pool of
    4 server connections that are pgwardend sessions: every transaction commits, the bank
    balances, and the relay saw only the pool's few long-lived sessions."""
    pool = 4
    bouncer = bouncer_factory((target.host, target.port), pg, pool_size=pool)
    init = _pgbench(bouncer, ["-i", "-q", "-s", "1", "-I", "dtGvp"])
    assert init.returncode == 0, init.stdout + init.stderr
    clients, per_client, total = 16, 40, 0
    # Named prepared statements do not survive transaction pooling (PgBouncer 1.18), so
    # simple and extended (unnamed statements) are the protocols applications use here.
    for mode in ("simple", "extended"):
        r = _pgbench(bouncer, ["-n", "-c", str(clients), "-j", "2", "-t", str(per_client),
                               "-M", mode, "-b", "tpcb-like"])
        out = r.stdout + r.stderr
        assert r.returncode == 0, "pgbench -M %s through pgbouncer failed:\n%s\n%s" % (
            mode, out, bouncer.log_tail())
        m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", out)
        assert m and int(m.group(1)) == int(m.group(2)) == clients * per_client, out
        total += int(m.group(1))
        row = pg.psql("SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
                      " (SELECT sum(bbalance) FROM pgbench_branches),"
                      " (SELECT sum(tbalance) FROM pgbench_tellers),"
                      " (SELECT coalesce(sum(delta), 0) FROM pgbench_history),"
                      " (SELECT count(*) FROM pgbench_history)").strip()
        a, b, t, d, n = (int(x) for x in row.split("|"))
        assert a == b == t == d and n == total, (mode, row)

    if target.relay is not None:
        sessions = {d["session"] for d in target.relay.log_lines()
                    if d.get("event") == "session_start"}
        # pgbench -i's own connections also come through the pool; one pool serves all.
        assert 1 <= len(sessions) <= pool, "relay saw %d sessions for a pool of %d" % (
            len(sessions), pool)


def test_connection_per_transaction(target, pg):
    """pgbench -C: a new connection (startup, SCRAM, one transaction, Terminate) per
    transaction, from several clients at once. Every one succeeds, and every session the
    relay opened for them it also closed, upstream included."""
    per_client = 15 if target.bytewise else 40
    clients = 6
    init = _pgbench(target, ["-i", "-q", "-s", "1", "-I", "dtGvp"])
    assert init.returncode == 0, init.stdout + init.stderr
    app = "pgw-conn-per-tx"
    env_target = target.env(PGAPPNAME=app)
    r = subprocess.run(["pgbench", "-n", "-C", "-c", str(clients), "-j", "2",
                        "-t", str(per_client), "-S"], env=env_target, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", out)
    assert m and int(m.group(1)) == int(m.group(2)) == clients * per_client, out
    left = _wait_server_sessions_gone(pg, app)
    assert not left, "%d server sessions outlived their clients" % len(left)

    if target.relay is not None:
        relay = target.relay
        # At least one session per transaction (pgbench may open more, e.g. to check the
        # tables exist); each that started must also have ended.
        deadline = time.monotonic() + 60
        while True:
            lines = relay.log_lines()
            starts = {d["session"] for d in lines if d.get("event") == "session_start"
                      and d.get("application_name") == app}
            ends = {d["session"] for d in lines if d.get("event") == "session_end"
                    and d.get("application_name") == app}
            if starts <= ends or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert len(starts) >= clients * per_client
        assert starts == ends, "%d sessions never logged an end" % len(starts - ends)
