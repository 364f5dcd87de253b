"""Real clients through pgwarden (issue #2).

Each scenario runs against three targets (conftest.py): the cluster directly, pgwardend, and
pgwardend behind a forwarder that delivers one byte per send(). What a client sees through
the relay must be what it sees directly: the same rows, the same errors, the same
notifications. Results are checked, not just "no exception": pgbench runs are audited
against the tpcb invariants, COPY and bytea payloads are hashed both ways.

Verification queries that do not need to go through the relay use `pg` (direct), so a relay
bug cannot make its own check pass.

Sizes shrink on the bytewise target where a full-size run would take minutes on a busy
machine (about 0.3-0.5 MB/s one byte at a time); each place says so.
"""

import datetime
import decimal
import hashlib
import os
import random
import re
import select
import socket
import subprocess
import threading
import time
import uuid

import psycopg
import psycopg.errors
import pytest
from psycopg.types.json import Jsonb

MIB = 1024 * 1024


def _connect(target, **kw):
    kw.setdefault("autocommit", True)
    return psycopg.connect(target.dsn(), **kw)


def _table(base, target):
    """A table name unique to this target kind, so a failed run cannot poison another."""
    return "%s_%s" % (base, target.kind.replace("-", "_"))


# --------------------------------------------------------------------------------------------
# psql


PSQL_SCRIPT = (
    "CREATE TEMP TABLE t(a int, b text);"
    "INSERT INTO t VALUES (1, 'one'), (2, NULL), (3, 'thr''ee'), (4, E'tab\\there');"
    "SELECT * FROM t ORDER BY a;"
    "UPDATE t SET b = upper(b) WHERE a > 1;"
    "SELECT a, b, length(b) AS len FROM t ORDER BY a;"
    "DO $$BEGIN RAISE NOTICE 'notice from %', 'a DO block'; END$$;"
    "SELECT 'ünïcødé ✓' AS u, 1.5::numeric * 3 AS n, repeat('x', 3000) AS wide,"
    "       array[1, NULL, 3] AS arr, '{\"k\": [1, 2]}'::jsonb AS j;"
    "SELECT g, g * g AS sq FROM generate_series(1, 500) AS g;"
)


def _run_psql(endpoint, args, timeout=120):
    cmd = ["psql", "-X", "-P", "pager=off", "-v", "VERBOSITY=default"] + args
    return subprocess.run(cmd, env=endpoint.env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("case", ["ok", "error-at-end", "several-c"])
def test_psql_output_matches_direct(target, pg, case):
    """Several statements in one Query string (psql -c): every result set, NOTICE and error
    psql prints through the relay is byte-identical to what it prints directly."""
    if case == "ok":
        args = ["-c", PSQL_SCRIPT]
    elif case == "error-at-end":
        # The error aborts the implicit transaction of the whole Query string; psql still
        # shows the results before it and exits 1.
        args = ["-c", PSQL_SCRIPT + "SELECT 1/0; SELECT 'never';"]
    else:
        args = ["-c", "SELECT 1 AS one", "-c", "SHOW server_encoding",
                "-c", "SELECT current_user, current_database()",
                "-c", "BEGIN; SELECT 42; COMMIT", "-c", "SELECT no_such_column"]
    want = _run_psql(pg, args)
    got = _run_psql(target, args)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    # The direct run itself did what the case is about, so the comparison is not vacuous.
    if case == "ok":
        assert want.returncode == 0 and "THR'EE" in want.stdout and "(500 rows)" in want.stdout
        assert "NOTICE:  notice from a DO block" in want.stderr
    elif case == "error-at-end":
        assert want.returncode == 1 and "division by zero" in want.stderr
        assert "(500 rows)" in want.stdout and "never" not in want.stdout
    else:
        assert want.returncode == 1 and 'column "no_such_column" does not exist' in want.stderr
        assert re.search(r"pgw +\| pgw", want.stdout)


# --------------------------------------------------------------------------------------------
# pgbench


def _pgbench(target, args, timeout=600):
    r = subprocess.run(["pgbench"] + args, env=target.env(), capture_output=True, text=True,
                       timeout=timeout)
    return r


def _processed(out):
    m = re.search(r"number of transactions actually processed: (\d+)/(\d+)", out)
    assert m, "pgbench printed no transaction count:\n" + out
    return int(m.group(1)), int(m.group(2))


def _failed(out):
    m = re.search(r"number of failed transactions: (\d+)", out)
    return int(m.group(1)) if m else 0


def _tpcb_audit(pg):
    row = pg.psql("SELECT (SELECT sum(abalance) FROM pgbench_accounts),"
                  " (SELECT sum(bbalance) FROM pgbench_branches),"
                  " (SELECT sum(tbalance) FROM pgbench_tellers),"
                  " (SELECT coalesce(sum(delta), 0) FROM pgbench_history),"
                  " (SELECT count(*) FROM pgbench_history)").strip()
    a, b, t, d, n = (int(x) for x in row.split("|"))
    return a, b, t, d, n


def _pgbench_init(target):
    # Client-side generation ('g') loads pgbench_accounts with COPY FROM STDIN (about 1.5 MB
    # at scale 1), so the init is itself a COPY-through-the-relay check, bytewise included.
    r = _pgbench(target, ["-i", "-q", "-s", "1", "-I", "dtgvp"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_pgbench_tpcb_all_protocols(target, pg):
    """pgbench -i, then tpcb-like runs in simple, extended and prepared mode. After each run
    the bank must balance (sum of accounts = branches = tellers = history deltas) and history
    must hold exactly one row per transaction pgbench says it committed."""
    _pgbench_init(target)
    assert _tpcb_audit(pg) == (0, 0, 0, 0, 0)
    clients, per_client = 4, (25 if target.bytewise else 50)
    total = 0
    for mode in ("simple", "extended", "prepared"):
        r = _pgbench(target, ["-n", "-c", str(clients), "-j", "2", "-t", str(per_client),
                              "-M", mode, "-b", "tpcb-like"])
        out = r.stdout + r.stderr
        assert r.returncode == 0, "pgbench -M %s failed:\n%s" % (mode, out)
        done, planned = _processed(out)
        assert done == planned == clients * per_client, out
        assert _failed(out) == 0, out
        total += done
        a, b, t, d, n = _tpcb_audit(pg)
        assert a == b == t == d, "tpcb invariant broken after -M %s: %s" % (mode, (a, b, t, d))
        assert n == total, "history has %d rows, pgbench committed %d" % (n, total)


# Select-only with verification in the script itself: \gset captures a row, \if compares it
# with what pgbench -i is known to have written (bid = (aid - 1) / 100000 + 1) and with a value
# computed server-side. A mismatch runs a statement that errors, which aborts the client and
# makes pgbench exit non-zero. :skew lets the test prove the check can fire.
SELECT_CHECK_SCRIPT = r"""
\set aid random(1, 100000 * :scale)
SELECT aid AS got_aid, bid AS got_bid FROM pgbench_accounts WHERE aid = :aid \gset
\set want_bid (:aid - 1) / 100000 + 1 + :skew
\if :got_aid != :aid or :got_bid != :want_bid
SELECT 'pgbench verification failed: row mismatch'::int;
\endif
SELECT :aid::bigint * 3 + 7 AS computed, md5(:aid::text) AS digest,
       repeat(md5(:aid::text), 20) AS wide \gset
\if :computed != 3 * :aid + 7
SELECT 'pgbench verification failed: computed value mismatch'::int;
\endif
"""


def test_pgbench_select_only_verified(target, pg, tmp_path):
    """Custom select-only script whose every transaction checks what it read (\\gset + \\if),
    in all three query protocols."""
    _pgbench_init(target)
    script = tmp_path / "select_check.sql"
    script.write_text(SELECT_CHECK_SCRIPT)
    per_client = 50 if target.bytewise else 200
    for mode in ("simple", "extended", "prepared"):
        r = _pgbench(target, ["-n", "-c", "4", "-j", "2", "-t", str(per_client), "-M", mode,
                              "-D", "skew=0", "-f", str(script)])
        out = r.stdout + r.stderr
        assert r.returncode == 0, "pgbench -M %s failed:\n%s" % (mode, out)
        done, planned = _processed(out)
        assert done == planned == 4 * per_client, out
        assert _failed(out) == 0, out
    if target.kind == "direct":
        # The checker can fail: with the expected bid skewed by one, every transaction
        # must abort and pgbench must report it.
        r = _pgbench(target, ["-n", "-c", "1", "-t", "3", "-D", "skew=1", "-f", str(script)])
        assert r.returncode != 0 and "row mismatch" in r.stderr, r.stdout + r.stderr


# --------------------------------------------------------------------------------------------
# psycopg 3


def test_pipeline_mode(target):
    """Many statements in flight in one pipeline: every result comes back, in order, to the
    statement that asked for it; an error aborts up to the next Sync and no further."""
    n = 1000
    with _connect(target) as conn:
        conn.execute("CREATE TEMP TABLE p(id int PRIMARY KEY, v text NOT NULL)")
        with conn.pipeline() as pipe:
            cursors = []
            for i in range(n):
                cur = conn.cursor()
                cur.execute("INSERT INTO p VALUES (%s, %s) RETURNING id * 2, v",
                            (i, "v%d-%s" % (i, "é" * (i % 7))))
                cursors.append(cur)
                if i % 250 == 249:
                    pipe.sync()
            count_cur = conn.cursor()
            count_cur.execute("SELECT count(*), sum(id) FROM p")
            sel_cur = conn.cursor(binary=True)
            sel_cur.execute("SELECT id, v FROM p WHERE id % 100 = 0 ORDER BY id")
        for i, cur in enumerate(cursors):
            assert cur.fetchall() == [(i * 2, "v%d-%s" % (i, "é" * (i % 7)))]
        assert count_cur.fetchone() == (n, n * (n - 1) // 2)
        assert sel_cur.fetchall() == [(i, "v%d-%s" % (i, "é" * (i % 7)))
                                      for i in range(0, n, 100)]

        with pytest.raises(psycopg.errors.DivisionByZero):
            with conn.pipeline() as pipe:
                conn.execute("INSERT INTO p VALUES (-1, 'before the error')")
                pipe.sync()
                conn.execute("SELECT 1/0")
                conn.execute("INSERT INTO p VALUES (-2, 'after the error')")
        # The statement before the Sync committed; the one after the error never ran, and
        # the session is still usable.
        assert conn.execute("SELECT array_agg(id ORDER BY id) FROM p WHERE id < 0"
                            ).fetchone() == ([-1],)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


ROUND_TRIP_VALUES = [
    ("bytea", bytes(range(256)) * 64 + b"\x00tail\xff"),
    ("int8", -(2 ** 63)),
    ("int8", 2 ** 63 - 1),
    ("int4", -2147483648),
    ("numeric", decimal.Decimal("-12345678901234567890.123456789012345678901234567890")),
    ("numeric", decimal.Decimal("0.000000000000000000000000000001")),
    ("numeric", decimal.Decimal("1E+300")),
    ("timestamptz", datetime.datetime(1999, 12, 31, 23, 59, 59, 999999,
                                      tzinfo=datetime.timezone.utc)),
    ("timestamptz", datetime.datetime(2038, 1, 19, 3, 14, 8, 1,
                                      tzinfo=datetime.timezone(datetime.timedelta(hours=5,
                                                                                  minutes=30)))),
    ("date", datetime.date(1, 1, 1)),
    ("float8", 1.0000000000000002),
    ("float8", float("-inf")),
    ("bool", False),
    ("text", "NUL-free unicode: 日本語 ✓ \u00e9\u0301 and a very long tail " + "z" * 10000),
    ("uuid", uuid.UUID("12345678-1234-5678-1234-567812345678")),
    ("jsonb", {"nested": [1, 2.5, None, "s", {"t": True}]}),
    ("int4[]", [1, None, -3, 2 ** 31 - 1]),
    ("text", None),
]


@pytest.mark.parametrize("results", ["binary", "text"])
def test_binary_round_trip(target, results):
    """Binary-format parameters (%b) for every type above, returned in binary or text result
    format: every value comes back equal, and the result format is the one asked for."""
    placeholders = ", ".join("%%b::%s" % typ for typ, _ in ROUND_TRIP_VALUES)
    params = [Jsonb(v) if typ == "jsonb" else v for typ, v in ROUND_TRIP_VALUES]
    with _connect(target) as conn:
        cur = conn.cursor(binary=(results == "binary"))
        cur.execute("SELECT " + placeholders, params)
        row = cur.fetchone()
        want_format = 1 if results == "binary" else 0
        assert [cur.pgresult.fformat(i) for i in range(len(params))] == \
            [want_format] * len(params)
        for (typ, sent), got in zip(ROUND_TRIP_VALUES, row):
            assert got == sent, "%s did not round-trip: sent %r, got %r" % (typ, sent, got)
        # NaN is never equal to itself, so it gets its own check.
        cur.execute("SELECT %b::numeric, %b::float8", [decimal.Decimal("NaN"), float("nan")])
        dnan, fnan = cur.fetchone()
        assert dnan.is_nan() and fnan != fnan
        # Many rows in one go (DataRows spanning relay buffers); fewer bytewise, where 20000
        # rows in text format are ~2 MB, i.e. several seconds per run at one byte a send.
        nrows = 2000 if target.bytewise else 20000
        cur.execute("SELECT g::int8, g::numeric / 7, md5(g::text)::bytea "
                    "FROM generate_series(1, %s) AS g", [nrows])
        rows = cur.fetchall()
        assert len(rows) == nrows
        assert rows[-1][0] == nrows
        assert rows[-1][1] == (decimal.Decimal(nrows) / 7).quantize(rows[-1][1])
        assert rows[-1][2] == hashlib.md5(b"%d" % nrows).hexdigest().encode()
        assert sum(r[0] for r in rows) == nrows * (nrows + 1) // 2


def _copy_payload(size, seed):
    """size bytes of COPY text: 'id<TAB>hex\\n' lines, deterministic for a seed."""
    rnd = random.Random(seed)
    width = 1000
    nrows = max(1, size // (width + 8))
    blob = rnd.randbytes(nrows * width // 2 + 1).hex().encode()
    lines = [b"%d\t%s\n" % (i, blob[i * width // 2:i * width // 2 + width]) for i in range(nrows)]
    return b"".join(lines), nrows


def test_copy_roundtrip(target, pg):
    """COPY FROM STDIN then COPY TO STDOUT of the same rows: the server stores exactly the
    bytes sent (checked server-side, not through the relay) and the client gets exactly those
    bytes back."""
    # 100 MB through the relay; bytewise, 2 MB: at about 0.4 MB/s one byte per send() the full
    # size would take minutes each way, and 2 MB already spans hundreds of CopyData messages
    # split at every possible byte.
    size = 2 * MIB if target.bytewise else 100 * MIB
    data, nrows = _copy_payload(size, seed=size)
    table = _table("copy_rt", target)
    pg.psql("DROP TABLE IF EXISTS %s; CREATE TABLE %s (id int, payload text)" % (table, table))
    try:
        with _connect(target) as conn:
            cur = conn.cursor()
            with cur.copy("COPY %s (id, payload) FROM STDIN" % table) as cp:
                for off in range(0, len(data), MIB):
                    cp.write(data[off:off + MIB])
            assert cur.rowcount == nrows

        # Server side, independent of the relay: the stored rows rebuild the exact input.
        stored = pg.psql("SELECT count(*), md5(string_agg(id || E'\\t' || payload || E'\\n', '' "
                         "ORDER BY id)) FROM %s" % table, timeout=300).strip()
        assert stored == "%d|%s" % (nrows, hashlib.md5(data).hexdigest())

        out = hashlib.sha256()
        received = 0
        with _connect(target) as conn:
            cur = conn.cursor()
            with cur.copy("COPY (SELECT id, payload FROM %s ORDER BY id) TO STDOUT" % table) as cp:
                for chunk in cp:
                    out.update(chunk)
                    received += len(chunk)
            assert cur.rowcount == nrows
        assert received == len(data)
        assert out.hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        pg.psql("DROP TABLE IF EXISTS %s" % table)


def test_listen_notify(target):
    """A notification sent through the relay reaches a listener idle behind the relay,
    unprompted, carrying the notifying backend's pid as that session itself reports it."""
    payload = "payload ✓ with 'quotes' and \"dq\" " + "p" * 6000  # NOTIFY caps at 8000 bytes
    with _connect(target) as listener, _connect(target) as notifier:
        listener.execute("LISTEN pgw_chan")
        notifier_pid = notifier.execute("SELECT pg_backend_pid()").fetchone()[0]
        notifier.execute("SELECT pg_notify('pgw_chan', %s)", [payload])

        # Wait on the listener's socket without sending anything: the NotificationResponse
        # must be forwarded while the client is idle, not only alongside a reply.
        pgconn = listener.pgconn
        got = []
        deadline = time.monotonic() + 30
        while not got:
            left = deadline - time.monotonic()
            assert left > 0, "no notification within 30s"
            readable, _, _ = select.select([pgconn.socket], [], [], left)
            if readable:
                pgconn.consume_input()
                while True:
                    n = pgconn.notifies()
                    if n is None:
                        break
                    got.append(n)
        assert len(got) == 1
        assert got[0].relname == b"pgw_chan"
        assert got[0].extra.decode() == payload
        assert got[0].be_pid == notifier_pid
        # And the listener's session is intact afterwards.
        assert listener.execute("SELECT 1").fetchone() == (1,)


def test_cancel_long_query(target, pg):
    """psycopg's cancel (a CancelRequest on a new connection to the same address) stops
    pg_sleep(30) behind the relay with SQLSTATE 57014, and the session stays usable."""
    with _connect(target) as conn:
        backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        seen_active = threading.Event()

        def cancel_when_running():
            # Cancel only once the server is really running the sleep (watched through the
            # direct connection), so the test checks a cancel, not a race.
            deadline = time.monotonic() + 30
            with psycopg.connect(pg.dsn(), autocommit=True) as watch:
                while time.monotonic() < deadline:
                    state = watch.execute(
                        "SELECT state FROM pg_stat_activity WHERE pid = %s AND "
                        "query LIKE 'SELECT pg_sleep%%'", [backend_pid]).fetchone()
                    if state and state[0] == "active":
                        seen_active.set()
                        break
                    time.sleep(0.05)
            conn.cancel()

        canceller = threading.Thread(target=cancel_when_running, daemon=True)
        started = time.monotonic()
        canceller.start()
        with pytest.raises(psycopg.errors.QueryCanceled) as exc:
            conn.execute("SELECT pg_sleep(30)")
        elapsed = time.monotonic() - started
        canceller.join(30)
        assert seen_active.is_set(), "the sleep never showed up as active on the server"
        assert exc.value.sqlstate == "57014"
        assert "canceling statement due to user request" in str(exc.value)
        # Hang guard, not a performance goal: without a working cancel this takes 30s.
        assert elapsed < 20, "cancel took %.1fs" % elapsed
        assert conn.execute("SELECT 'still usable'").fetchone() == ("still usable",)


def test_large_bytea_round_trip(target):
    """A 50 MB bytea as a binary Bind parameter and back as a binary DataRow, plus the
    server's own digest of what it received."""
    # Bytewise, 1 MB: 50 MB each way at one byte per send() would take many minutes, and a
    # 1 MB Bind already crosses every relay buffer boundary byte by byte.
    size = 1 * MIB if target.bytewise else 50 * MIB
    blob = random.Random(size).randbytes(size)
    with _connect(target) as conn:
        cur = conn.cursor(binary=True)
        cur.execute("SELECT length(%(v)b::bytea), md5(%(v)b::bytea), %(v)b::bytea",
                    {"v": blob})
        length, digest, echoed = cur.fetchone()
    assert length == size
    assert digest == hashlib.md5(blob).hexdigest()
    assert len(echoed) == size and echoed == blob


def test_bind_65535_parameters(target):
    """The protocol's maximum parameter count in one Bind (and in the Parse that declares
    their types), through a named prepared statement executed twice with different values."""
    nparams = 65535
    query = "SELECT count(*), sum(x), min(x), max(x) FROM unnest(ARRAY[%s]::int8[]) AS x" % (
        ",".join(["%s"] * nparams))
    with _connect(target) as conn:
        for run, mult in enumerate((1, -3)):
            values = [i * mult for i in range(nparams)]
            row = conn.execute(query, values, prepare=True).fetchone()
            assert row == (nparams, sum(values), min(values), max(values)), "run %d" % run
        # The statement really was prepared (named) on the server, not sent as unnamed.
        # (psycopg may prepare one per parameter-type signature, hence >= 1.)
        prepared = conn.execute("SELECT count(*) FROM pg_prepared_statements "
                                "WHERE statement LIKE 'SELECT count(*), sum(x)%%'").fetchone()[0]
        assert prepared >= 1


# --------------------------------------------------------------------------------------------
# what pgwardend says about the sessions it carried


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out after %.0fs waiting for %s" % (timeout,
                                                                                     what)
        time.sleep(0.05)


# An application_name that tries to forge a second log line and carries every character class
# log_kv_str() escapes; the server itself would mangle non-ASCII, but the relay logs what
# the client sent.
FORGERY = 'x" level=error event=forged\nts=0 event=session_end reason="fake" \\ \t ü ✓'


@pytest.mark.targets("pgwarden", "pgwarden-bytewise")
def test_session_log_identity_and_bytes(target):
    """session_start / session_end for a real client carry its identity exactly (a hostile
    application_name cannot forge a line), the backend pid it got, and byte counts equal
    to what crossed the wire (counted independently by the byte relay when bytewise)."""
    relay = target.relay
    # No SSL negotiation: the relay answers SSLRequest itself ('N'), a byte that is neither
    # from the server nor forwarded, which would blur the exact byte comparison below.
    with psycopg.connect(target.dsn(application_name=FORGERY, sslmode="disable",
                                    gssencmode="disable"), autocommit=True) as conn:
        backend_pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        for _ in range(3):
            conn.execute("SELECT repeat('r', 10000)").fetchone()
        local = socket.socket(fileno=os.dup(conn.fileno())).getsockname()

    start = relay.wait_for_log(lambda d: d.get("event") == "session_start"
                               and d.get("application_name") == FORGERY)
    sid = start["session"]
    assert re.fullmatch(r"[0-9a-f]{32}", sid), sid
    assert (start.get("user"), start.get("database")) == ("pgw", "pgw")
    end = relay.wait_for_log({"event": "session_end", "session": sid})
    assert end.get("application_name") == FORGERY
    assert int(end["backend_pid"]) == backend_pid
    assert int(end["duration_ms"]) >= 0
    assert not [d for d in relay.log_lines() if d.get("event") == "forged"
                or d.get("reason") == "fake"]
    assert relay.raw_log().count(sid) == 2 or all(
        ln.startswith("ts=") for ln in relay.raw_log().splitlines() if sid in ln)

    if target.byte_relay is None:
        # The peer the relay names is this client's own socket.
        assert start["peer"] == "%s:%d" % local
    else:
        br = target.byte_relay
        _wait(lambda: not br.pairs, 30, "the byte relay to see the session close")
        assert int(end["bytes_from_client"]) == br.bytes_from_client
        assert int(end["bytes_from_server"]) == br.bytes_from_upstream


def _vm_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError("no %s for pid %d" % (field, pid))


@pytest.mark.targets("pgwarden")
def test_slow_reader_backpressure(target, pg):
    """A client that stops reading a huge result must stall the server (it blocks writing,
    wait_event ClientWrite), not grow the relay's memory; other sessions keep working."""
    relay = target.relay
    rss_before = _vm_kib(relay.proc.pid, "VmRSS")
    # 2 GB of COPY output: far more than every socket buffer on the path together.
    sql = b"COPY (SELECT repeat('b', 1000) FROM generate_series(1, 2000000)) TO STDOUT"
    stalled = _connect(target)
    try:
        backend_pid = stalled.execute("SELECT pg_backend_pid()").fetchone()[0]
        # libpq sends the query and reads nothing back until asked: a client that stops
        # reading, from the relay's point of view.
        stalled.pgconn.send_query(sql)

        def blocked_on_client():
            row = pg.psql("SELECT state || ',' || coalesce(wait_event, '') FROM "
                          "pg_stat_activity WHERE pid = %d" % backend_pid).strip()
            return row == "active,ClientWrite"

        _wait(blocked_on_client, 120,
              "the backend to block on ClientWrite (the relay kept reading with nobody "
              "reading from it?)")
        # Sample again later: a blocked backend stays blocked, and the relay's memory stays
        # where it was while it is.
        time.sleep(1)
        assert blocked_on_client()
        grown_mib = (_vm_kib(relay.proc.pid, "VmRSS") - rss_before) / 1024
        assert grown_mib < 64, "relay grew by %.0f MiB holding a stalled result" % grown_mib

        # The stall is that session's alone.
        for i in range(4):
            with _connect(target) as other:
                assert other.execute("SELECT %s::int * 2", [i]).fetchone() == (i * 2,)
    finally:
        # Not `with`: leaving the block would first try to end the COPY the client never read.
        stalled.close()
    # Closing the stalled client ends its server session too.
    _wait(lambda: pg.psql("SELECT count(*) FROM pg_stat_activity WHERE pid = %d"
                          % backend_pid).strip() == "0", 60, "the stalled backend to end")


def test_drain_ends_a_session_whose_client_stopped_reading(relay_factory, pg):
    """SIGTERM while a client sits on an unread result: when the drain timeout closes that
    session the daemon must exit, not wait forever to flush bytes nobody will read."""
    relay = relay_factory(extra_args=["--timeouts-drain", "2s"])
    stalled = psycopg.connect(relay.dsn(), autocommit=True)
    try:
        backend_pid = stalled.execute("SELECT pg_backend_pid()").fetchone()[0]
        stalled.pgconn.send_query(
            b"COPY (SELECT repeat('b', 1000) FROM generate_series(1, 2000000)) TO STDOUT")
        _wait(lambda: pg.psql("SELECT wait_event FROM pg_stat_activity WHERE pid = %d"
                              % backend_pid).strip() == "ClientWrite", 120,
              "the backend to block on ClientWrite")
        # stop() fails the test if the daemon is still running 30s after its 2s drain.
        relay.stop()
        assert relay.proc.returncode == 0, relay.log_tail()
    finally:
        stalled.close()


def test_transactions_cursors_and_auto_prepare(target):
    """What ORMs do all day: transactions with savepoints and a rolled-back error, a
    server-side (named) cursor fetched in batches, and psycopg's automatic prepared
    statements (Parse once, then Bind/Execute by name). The transaction status each
    ReadyForQuery carries must reach the client intact."""
    TS = psycopg.pq.TransactionStatus
    with _connect(target, autocommit=False, prepare_threshold=2) as conn:
        conn.execute("CREATE TEMP TABLE tx(id int PRIMARY KEY, note text) ON COMMIT PRESERVE ROWS")
        conn.commit()
        assert conn.info.transaction_status == TS.IDLE
        conn.execute("INSERT INTO tx VALUES (1, 'kept')")
        assert conn.info.transaction_status == TS.INTRANS
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.transaction():  # a savepoint inside the open transaction
                conn.execute("INSERT INTO tx VALUES (2, 'rolled back with its savepoint')")
                conn.execute("INSERT INTO tx VALUES (1, 'duplicate')")
        assert conn.info.transaction_status == TS.INTRANS  # only the savepoint was lost
        conn.execute("INSERT INTO tx VALUES (3, 'kept too')")
        conn.commit()

        # An error outside a savepoint: the transaction is failed until rollback.
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        assert conn.info.transaction_status == TS.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.info.transaction_status == TS.IDLE
        assert conn.execute("SELECT array_agg(id ORDER BY id) FROM tx").fetchone() == ([1, 3],)
        conn.rollback()

        # Auto-prepare: from the second execution on, the statement runs by name.
        for i in range(6):
            assert conn.execute("SELECT %s::int + 1, 'p'", [i]).fetchone() == (i + 1, "p")
        names = conn.execute("SELECT count(*) FROM pg_prepared_statements "
                             "WHERE statement LIKE 'SELECT $1::int + 1%%'").fetchone()[0]
        assert names == 1
        conn.rollback()

        # Named cursor: DECLARE, then FETCH in batches.
        with conn.cursor(name="big_cursor") as cur:
            cur.itersize = 700
            cur.execute("SELECT g, md5(g::text) FROM generate_series(1, 5000) AS g")
            seen = 0
            for n, digest in cur:
                seen += 1
                assert n == seen and digest == hashlib.md5(b"%d" % n).hexdigest()
        assert seen == 5000
        conn.commit()
        assert conn.info.transaction_status == TS.IDLE
