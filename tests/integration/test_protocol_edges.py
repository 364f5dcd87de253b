"""Protocol edge cases a transparent relay must get exactly right: the startup family
(GSSENC/SSL requests, parameters, replication, protocol 3.2 negotiation), server errors,
cancel-key mapping, and byte-exact ErrorResponses.

The yardstick is the server itself: wherever possible a test does the same thing directly
and through pgwardend and compares the raw bytes the client received (wire.py), so "the
same" means the same ErrorResponse fields, order and text, not a similar-looking exception.
"""

import os
import socket
import struct
import subprocess
import threading

import psycopg
import pytest

import wire

WAIT = 30.0  # bound for every wait; a hang guard, not a performance goal

# Tests marked RELAYED take the conftest `target` fixture and run twice: through pgwardend,
# and through a byte relay in front of pgwardend (every byte its own read for the daemon).
RELAYED = pytest.mark.targets("pgwarden", "pgwarden-bytewise")


def raw_session(endpoint, application_name="pgw-edge", **kw):
    """A raw wire.Conn logged in to endpoint (the cluster or a relay); asserts success."""
    conn = wire.Conn(endpoint.host, endpoint.port, timeout=WAIT)
    params = {"application_name": application_name}
    params.update(kw.pop("params", {}))
    msgs = conn.login(endpoint.user, endpoint.password, endpoint.dbname, params=params, **kw)
    assert msgs[-1].type == "Z", "login failed: %r" % msgs
    return conn


def login_outcome(endpoint, user, password, database):
    """Try to log in raw; return every message the server sent up to the end of the login
    (ReadyForQuery or ErrorResponse) and whether the connection then closed."""
    with wire.Conn(endpoint.host, endpoint.port, timeout=WAIT) as conn:
        msgs = conn.login(user, password, database)
        closed = False
        if msgs[-1].type == "E":
            more, rest = conn.read_to_close(WAIT)
            msgs += more
            closed = rest == b""
        return msgs, closed


# ---- startup family ------------------------------------------------------------------------

def test_gssenc_request_refused_then_startup(relay):
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        conn.send(wire.gssenc_request())
        # One byte, 'N', and nothing else: the client then sends a plain StartupMessage on
        # the same connection.
        assert conn.recv_bytes(1) == b"N"
        msgs = conn.login(relay.user, relay.password, relay.dbname)
        assert msgs[-1].type == "Z", msgs
        assert conn.query_values("SELECT 'after gssenc'") == [["after gssenc"]]


def test_ssl_request_refused_then_startup(relay):
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        conn.send(wire.ssl_request())
        assert conn.recv_bytes(1) == b"N"
        msgs = conn.login(relay.user, relay.password, relay.dbname)
        assert msgs[-1].type == "Z", msgs
        assert conn.query_values("SELECT 'after ssl'") == [["after ssl"]]


@RELAYED
def test_gssenc_then_ssl_then_startup(target):
    # libpq's own order with gssencmode=prefer and sslmode=prefer: GSSENC, then SSL.
    with wire.Conn(target.host, target.port, timeout=WAIT) as conn:
        conn.send(wire.gssenc_request())
        assert conn.recv_bytes(1) == b"N"
        conn.send(wire.ssl_request())
        assert conn.recv_bytes(1) == b"N"
        assert conn.login(target.user, target.password, target.dbname)[-1].type == "Z"


def psql_failure(endpoint, **dsn):
    """Run psql expecting it to fail; its stderr with the endpoint's port masked."""
    r = subprocess.run([os.path.join(endpoint.bindir, "psql"), "-X", "-d", endpoint.dsn(**dsn),
                        "-c", "SELECT 1"], env=endpoint.env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0, "psql succeeded: %s" % r.stdout
    return r.stderr.replace(str(endpoint.port), "PORT")


def test_sslmode_prefer_and_require_with_psql(relay, pg):
    out = relay.psql("SELECT 'plain text session'", sslmode="prefer")
    assert out.strip() == "plain text session"
    # sslmode=require: libpq's own refusal, the same text as against a server without TLS
    # (the test cluster has ssl off).
    direct = psql_failure(pg, sslmode="require")
    relayed = psql_failure(relay, sslmode="require")
    assert "server does not support SSL, but SSL was required" in relayed, relayed
    assert relayed == direct


def test_startup_parameters_reach_server(pg, relay):
    """Startup parameters arrive as sent: options with -c settings (a built-in and a custom
    GUC), DateStyle as its own parameter, application_name."""
    params = {
        "options": "-c work_mem=12345kB -c pgw.custom_setting=hello\\ world",
        "DateStyle": "German, DMY",
        "application_name": "edge-params",
    }
    results = {}
    for name, endpoint in (("direct", pg), ("relay", relay)):
        with raw_session(endpoint, params=params) as conn:
            rows = conn.query_values(
                "SELECT current_setting('work_mem'), current_setting('DateStyle'), "
                "current_setting('pgw.custom_setting'), current_setting('application_name')")
            results[name] = (rows, conn.parameters.get("DateStyle"),
                             conn.parameters.get("application_name"))
    assert results["relay"][0] == [["12345kB", "German, DMY", "hello world", "edge-params"]]
    assert results["relay"] == results["direct"]
    relay.wait_for_log(lambda d: d.get("event") == "session_start"
                       and d.get("application_name") == "edge-params", WAIT)


def test_startup_parameters_with_psycopg(relay):
    with psycopg.connect(relay.dsn(options="-c work_mem=23456kB -c pgw.other=42",
                                   application_name="edge-psycopg")) as conn:
        row = conn.execute("SELECT current_setting('work_mem'), current_setting('pgw.other'), "
                           "current_setting('application_name')").fetchone()
    assert row == ("23456kB", "42", "edge-psycopg")


def test_startup_packet_forwarded_byte_for_byte(relay_factory):
    """What the upstream receives as the StartupMessage is exactly what the client sent:
    order, unusual names, empty and non-ASCII values included."""
    packet = wire.startup_message({
        "user": "pgw",
        "database": "pgw",
        "application_name": "byte-exact",
        "options": "-c search_path=a,b",
        "client_encoding": "UTF8",
        "pgw.empty": "",
        "pgw.unicode": "h\u00e9llo \u2603",
    })
    with wire.FakeServer() as fake:
        relay = relay_factory(upstream=fake.address)
        with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
            conn.send(packet)
            assert conn.continue_login("pgw", None)[-1].type == "Z"
            fc = wire.session_conn(fake, "byte-exact")
            assert fc is not None
            received = fc.received_bytes()
            # pgwarden's own SSLRequest may come first (tls.server.mode prefer, the
            # default; answered 'N' here): it is pgwarden's, not the client's packet.
            if received.startswith(wire.ssl_request()):
                received = received[len(wire.ssl_request()):]
            assert received[:len(packet)] == packet, \
                "startup packet changed on its way: sent %s, upstream got %s" % (
                    wire.short(packet, 400), wire.short(received[:len(packet) + 40], 400))


def test_replication_connection_identify_system(pg, relay):
    system_id = pg.psql("SELECT system_identifier FROM pg_control_system()").strip()
    with raw_session(relay, params={"replication": "database"}) as conn:
        rows = conn.query_values("IDENTIFY_SYSTEM")
    assert len(rows) == 1
    assert rows[0][0] == system_id
    assert rows[0][3] == pg.dbname  # dbname column: a database replication connection


@pytest.mark.parametrize("case", ["wrong-password", "unknown-user", "unknown-database"])
def test_login_errors_identical_to_direct(pg, relay, case):
    user, password, database = {
        "wrong-password": (pg.user, "not-the-password", pg.dbname),
        "unknown-user": ("pgw_nobody", "whatever", pg.dbname),
        "unknown-database": (pg.user, pg.password, "pgw_no_such_db"),
    }[case]
    direct, direct_closed = login_outcome(pg, user, password, database)
    relayed, relay_closed = login_outcome(relay, user, password, database)
    assert wire.first_error(direct) is not None, direct
    # SCRAM exchanges carry random nonces, so compare the error itself and the sequence of
    # message types, not the authentication bytes.
    assert [m.type for m in relayed] == [m.type for m in direct]
    assert wire.first_error(relayed).raw == wire.first_error(direct).raw, (
        wire.first_error(direct).error_fields(), wire.first_error(relayed).error_fields())
    assert relay_closed and direct_closed


@pytest.mark.parametrize("options", [{}, {"_pq_.pgw_unknown_option": "on"}],
                         ids=["plain", "with-_pq_-option"])
@RELAYED
def test_protocol_3_2_negotiation_matches_direct(pg, target, options):
    """A 3.2 StartupMessage: PostgreSQL 15 answers NegotiateProtocolVersion (3.0, plus any
    _pq_ options it did not recognise) and carries on. The relay must not change that."""
    answers = {}
    for name, endpoint in (("direct", pg), ("relay", target)):
        with wire.Conn(endpoint.host, endpoint.port, timeout=WAIT) as conn:
            msgs = conn.login(endpoint.user, endpoint.password, endpoint.dbname,
                              params=dict(options), proto=wire.version(3, 2))
            assert msgs[-1].type == "Z", msgs
            negotiations = [m.raw for m in msgs if m.type == "v"]
            assert conn.query_values("SELECT 'negotiated'") == [["negotiated"]]
            answers[name] = negotiations
    assert len(answers["direct"]) == 1
    assert answers["relay"] == answers["direct"]


# ---- cancel -----------------------------------------------------------------------------------

def test_backend_key_pid_is_server_pid(relay):
    with raw_session(relay) as conn:
        (pid,) = conn.query_values("SELECT pg_backend_pid()")[0]
        assert conn.backend_pid == int(pid)
        assert len(conn.backend_key) == 4  # protocol 3.0: a 4-byte key


FAKE_PID = 4242
FAKE_KEY = 0xDEADBEEF


@pytest.fixture
def keyed_fake():
    """A FakeServer whose sessions get BackendKeyData(4242, 0xDEADBEEF); CancelRequests it
    receives are recorded as connections of kind "cancel"."""
    server = wire.FakeServer()
    yield server
    server.stop()
    assert not server.errors, server.errors


def cancels(fake):
    return [(fc.startup["pid"], fc.startup["key"]) for fc in fake.connections("cancel")]


def send_cancel(relay, pid, key):
    """Send a CancelRequest to the relay; the protocol has no answer, the relay closes."""
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        conn.send(wire.cancel_request(pid, key))
        msgs, rest = conn.read_to_close(WAIT)
        assert msgs == [] and rest == b"", "a CancelRequest gets no reply: %r" % msgs


def test_cancel_key_is_mapped(relay_factory, keyed_fake):
    relay = relay_factory(upstream=keyed_fake.address)
    with raw_session(relay, "mapped-key") as conn:
        assert conn.backend_pid == FAKE_PID
        assert conn.backend_key != struct.pack("!I", FAKE_KEY), \
            "the server's cancel key reached the client unchanged"
        assert len(conn.backend_key) == 4


def test_cancel_with_client_key_reaches_server_with_server_key(relay_factory, keyed_fake):
    relay = relay_factory(upstream=keyed_fake.address)
    with raw_session(relay, "cancel-ok") as conn:
        send_cancel(relay, conn.backend_pid, conn.backend_key)
        assert keyed_fake.wait_for_connections(1, "cancel", WAIT), "no CancelRequest forwarded"
        assert cancels(keyed_fake) == [(FAKE_PID, struct.pack("!I", FAKE_KEY))]
        # The session itself is unaffected by the cancel of an idle backend.
        assert conn.query_values("SELECT 1") == [["SELECT 1"]]


def test_cancel_with_wrong_keys_is_dropped(relay_factory, keyed_fake):
    """Wrong, guessed and raw-server keys are not forwarded. To know the relay has had its
    chance to forward them, a correct cancel is sent afterwards and must be the only one
    the server ever sees."""
    relay = relay_factory(upstream=keyed_fake.address)
    with raw_session(relay, "cancel-bad") as conn:
        client_key = struct.unpack("!I", conn.backend_key)[0]
        wrong = [
            (conn.backend_pid, client_key ^ 1),               # one bit off
            (conn.backend_pid, 0),                            # guessed
            (conn.backend_pid, FAKE_KEY),                     # the server's own key
            (conn.backend_pid + 1, client_key),               # right key, wrong pid
            (conn.backend_pid, conn.backend_key + b"\x00"),   # 3.2-style longer key
        ]
        for pid, key in wrong:
            send_cancel(relay, pid, key)
        send_cancel(relay, conn.backend_pid, conn.backend_key)
        assert keyed_fake.wait_for_connections(1, "cancel", WAIT)
        # Give any wrongly forwarded cancel the same chance to arrive (bounded).
        wire.wait_until(lambda: len(keyed_fake.connections("cancel")) > 1, 2.0)
        assert cancels(keyed_fake) == [(FAKE_PID, struct.pack("!I", FAKE_KEY))]


def test_cancel_after_session_end_is_dropped(relay_factory, keyed_fake):
    relay = relay_factory(upstream=keyed_fake.address)
    with raw_session(relay, "cancel-late") as conn:
        pid, key = conn.backend_pid, conn.backend_key
        conn.send(wire.terminate())
        conn.read_to_close(WAIT)
    fc = wire.session_conn(keyed_fake, "cancel-late")
    assert fc.closed.wait(WAIT)
    send_cancel(relay, pid, key)
    # Sent after the session ended: a mapping that outlived its session would forward it.
    with raw_session(relay, "cancel-late-probe") as probe:
        send_cancel(relay, probe.backend_pid, probe.backend_key)
        assert keyed_fake.wait_for_connections(1, "cancel", WAIT)
        wire.wait_until(lambda: len(keyed_fake.connections("cancel")) > 1, 2.0)
        assert len(cancels(keyed_fake)) == 1


def test_psycopg_cancel_through_relay(pg, relay):
    with psycopg.connect(relay.dsn(application_name="edge-cancel"), autocommit=True) as conn:
        def cancel_when_running():
            running = wire.wait_until(lambda: pg.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'edge-cancel' "
                "AND state = 'active' AND query LIKE '%pg_sleep(30)%'").strip() == "1", WAIT)
            if running:
                conn.cancel()

        t = threading.Thread(target=cancel_when_running)
        t.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled) as info:
                conn.execute("SELECT pg_sleep(30)")
        finally:
            t.join(WAIT)
        assert info.value.sqlstate == "57014"
        assert conn.execute("SELECT 'usable after cancel'").fetchone() == ("usable after cancel",)


@RELAYED
def test_raw_cancel_through_relay(pg, target):
    """A CancelRequest written by hand (and, through the byte relay, arriving a byte at a
    time) cancels the running query: 57014, and the session goes on."""
    relay = target
    with raw_session(relay, "edge-raw-cancel") as conn:
        conn.send(wire.query("SELECT pg_sleep(30)"))
        assert wire.wait_until(lambda: pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'edge-raw-cancel' "
            "AND state = 'active'").strip() == "1", WAIT)
        send_cancel(relay, conn.backend_pid, conn.backend_key)
        msgs = conn.recv_until("Z", WAIT)
        err = wire.first_error(msgs)
        assert err is not None and err.error_fields()["C"] == "57014", msgs
        assert conn.query_values("SELECT 'after cancel'") == [["after cancel"]]


# ---- error fidelity ----------------------------------------------------------------------------

SETUP_SQL = """
DROP SCHEMA IF EXISTS edge CASCADE;
DROP ROLE IF EXISTS pgw_edge_nopriv;
CREATE ROLE pgw_edge_nopriv;
CREATE SCHEMA edge;
CREATE TABLE edge.parent (id int PRIMARY KEY, name varchar(10) NOT NULL,
                          qty int CHECK (qty > 0));
CREATE TABLE edge.child (id int PRIMARY KEY, parent_id int REFERENCES edge.parent (id));
CREATE TABLE edge.secret (v text);
CREATE TABLE edge.locked (v int);
INSERT INTO edge.parent VALUES (1, 'one', 1);
GRANT USAGE ON SCHEMA edge TO pgw_edge_nopriv;
"""

# Each entry is one simple Query; several statements in one string run as one implicit
# transaction, so SET/SET ROLE before a failing statement are rolled back with it.
ERROR_STATEMENTS = [
    "SELEC 1",                                                    # 42601 syntax, position
    "SELECT 1 +",                                                 # 42601 at end of input
    "SELECT 1/0",                                                 # 22012
    "SELECT * FROM edge.nope",                                    # 42P01
    "SELECT nope FROM edge.parent",                               # 42703
    "SELECT edge.no_such_function(1, 'x')",                       # 42883 with hint
    "INSERT INTO edge.parent VALUES (1, 'dup', 1)",               # 23505 with detail
    "INSERT INTO edge.child VALUES (1, 999)",                     # 23503 with detail
    "INSERT INTO edge.parent VALUES (2, NULL, 1)",                # 23502
    "INSERT INTO edge.parent VALUES (3, 'x', -1)",                # 23514
    "INSERT INTO edge.parent VALUES (4, repeat('x', 11), 1)",     # 22001
    "SELECT 'abc'::int",                                          # 22P02 with position
    "SELECT 2147483647::int + 1",                                 # 22003
    "SELECT 1000::numeric(3,0)",                                  # 22003 with detail
    "SELECT '{bad'::jsonb",                                       # 22P02 with detail, context
    "SELECT date '2020-13-45'",                                   # 22008
    "CREATE TABLE edge.parent (id int)",                          # 42P07
    "DROP TABLE edge.nope",                                       # 42P01 (utility)
    "SET lock_timeout = '100ms'; SELECT * FROM edge.locked",      # 55P03
    "SET statement_timeout = '100ms'; SELECT pg_sleep(5)",        # 57014
    "DO $$ BEGIN RAISE EXCEPTION 'custom failure %', 42 USING ERRCODE = 'PW001', "
    "DETAIL = 'custom detail', HINT = 'custom hint'; END $$",     # PW001, context
    "DO $$ BEGIN RAISE NOTICE 'notice before error'; PERFORM 1/0; END $$",  # N then E
    "SET ROLE pgw_edge_nopriv; SELECT * FROM edge.secret",        # 42501
    "SELECT g, 10 / (3 - g) FROM generate_series(1, 5) g",        # rows, then 22012
    "COMMIT",                                                     # WARNING 25P01 notice
    "BEGIN; SELECT 1/0",                                          # leaves an aborted txn
    "SELECT 'in aborted transaction'",                            # 25P02
    "ROLLBACK",
    "SELECT set_config('no_such_setting', 'x', false)",           # 42704? (no dot: error)
    "SELECT ARRAY[1, 2] || ARRAY[[1, 2, 3]]",                     # 2202E
    b"SELECT '\xc3\x28'",                                         # 22021 invalid UTF-8
    "",                                                           # EmptyQueryResponse
    "SELECT 1; SELEC 2; SELECT 3",                                # result, then 42601
    "SELECT E'\\x' || chr(0)",                                   # 54000 null character
]


@pytest.fixture
def error_schema(pg):
    pg.psql(SETUP_SQL)
    yield
    pg.psql("DROP SCHEMA IF EXISTS edge CASCADE; DROP ROLE IF EXISTS pgw_edge_nopriv;")


@RELAYED
def test_error_responses_identical_to_direct(pg, target, error_schema):
    """Every message (ErrorResponse and NoticeResponse fields included, DataRows before an
    error, ReadyForQuery status) is byte-identical directly and through the relay."""
    # lock_timeout needs a lock someone else holds: a direct session keeps edge.locked
    # exclusively locked for the duration of the test.
    holder = psycopg.connect(pg.dsn(application_name="edge-lock-holder"))
    holder.execute("LOCK TABLE edge.locked IN ACCESS EXCLUSIVE MODE")
    mismatches = []
    errors_seen = 0
    try:
        with raw_session(pg, "edge-errors") as direct, raw_session(target, "edge-errors") as via:
            for sql in ERROR_STATEMENTS:
                want = [m.raw for m in direct.query(sql, WAIT)]
                got = [m.raw for m in via.query(sql, WAIT)]
                errors_seen += any(r[:1] == b"E" for r in want)
                if got != want:
                    mismatches.append((sql, want, got))
    finally:
        holder.close()
    assert errors_seen >= 20, "the statement list should raise at least 20 errors"
    assert not mismatches, "\n".join(
        "%s\n  direct: %r\n  relay:  %r" % (sql, describe(w), describe(g))
        for sql, w, g in mismatches)


def describe(raws):
    """Readable summary of raw messages for a failure report."""
    out = []
    for raw in raws:
        m = wire.split_messages(raw)[0][0]
        out.append(m.error_fields() if m.type in "EN" else (m.type, wire.short(m.body, 40)))
    return out


EXTENDED_CASES = [
    # (name, messages sent before Sync)
    ("parse-syntax-error", [wire.parse("SELEC $1")]),
    ("bind-wrong-count", [wire.parse("SELECT $1::int"), wire.bind(["1", "2"])]),
    ("bind-bad-value", [wire.parse("SELECT $1::int"), wire.bind(["abc"]),
                        wire.execute()]),
    ("execute-error", [wire.parse("SELECT 1/$1::int"), wire.bind(["0"]), wire.describe_portal(),
                       wire.execute()]),
    ("unknown-portal", [wire.execute("no_such_portal")]),
    ("unknown-statement", [wire.bind([], statement="no_such_statement")]),
]


@pytest.mark.parametrize("name,messages", EXTENDED_CASES, ids=[c[0] for c in EXTENDED_CASES])
@RELAYED
def test_extended_protocol_errors_identical_to_direct(pg, target, name, messages):
    """Errors in the extended protocol: the server discards to Sync, then answers
    ReadyForQuery; the relay must pass that through unchanged."""
    results = {}
    for label, endpoint in (("direct", pg), ("relay", target)):
        with raw_session(endpoint, "edge-extended") as conn:
            conn.send(b"".join(messages) + wire.sync())
            results[label] = [m.raw for m in conn.recv_until("Z", WAIT)]
            # The session is usable afterwards.
            assert conn.query_values("SELECT 'after %s'" % name) == [["after %s" % name]]
    assert wire.first_error([wire.split_messages(r)[0][0] for r in results["direct"]])
    assert results["relay"] == results["direct"], (describe(results["direct"]),
                                                   describe(results["relay"]))


def test_psycopg_diagnostics_identical_to_direct(pg, relay, error_schema):
    """The same comparison through libpq: every Diagnostic field psycopg exposes."""
    fields = ("sqlstate", "severity", "severity_nonlocalized", "message_primary",
              "message_detail", "message_hint", "statement_position", "context",
              "schema_name", "table_name", "column_name", "datatype_name", "constraint_name")
    statements = ["INSERT INTO edge.parent VALUES (1, 'dup', 1)",
                  "INSERT INTO edge.child VALUES (1, 999)",
                  "SELECT 'abc'::int",
                  "DO $$ BEGIN RAISE EXCEPTION 'custom failure' USING ERRCODE = 'PW002', "
                  "DETAIL = 'd', HINT = 'h'; END $$"]
    for sql in statements:
        diags = []
        for endpoint in (pg, relay):
            with psycopg.connect(endpoint.dsn(), autocommit=True) as conn:
                with pytest.raises(psycopg.Error) as info:
                    conn.execute(sql)
                diags.append({f: getattr(info.value.diag, f) for f in fields})
        assert diags[1] == diags[0], sql
        assert diags[0]["sqlstate"], sql


def test_error_does_not_leak_across_sessions(relay):
    """A session whose query fails does not disturb a concurrent one on the same relay."""
    with raw_session(relay, "edge-a") as a, raw_session(relay, "edge-b") as b:
        a.send(wire.query("SELECT 1/0"))
        assert b.query_values("SELECT 'b fine'") == [["b fine"]]
        msgs = a.recv_until("Z", WAIT)
        assert wire.first_error(msgs).error_fields()["C"] == "22012"
        assert msgs[-1].body == b"I"


def test_socket_level_half_close_after_terminate(relay):
    """Terminate followed by a half-close: the relay ends the session and closes."""
    with raw_session(relay, "edge-halfclose") as conn:
        conn.send(wire.terminate())
        conn.sock.shutdown(socket.SHUT_WR)
        msgs, rest = conn.read_to_close(WAIT)
        assert msgs == [] and rest == b""


@RELAYED
def test_async_messages_reach_idle_client(pg, target):
    """NotificationResponse and NoticeResponse can arrive while the client is idle, not in
    answer to anything it sent: the relay must pass them on without waiting for the client
    to speak first."""
    with raw_session(target, "edge-listen") as listener:
        listener.query_values("LISTEN pgw_edge_channel")
        pg.psql("NOTIFY pgw_edge_channel, 'payload from elsewhere'")
        m = listener.recv_message(WAIT)
        assert m.type == "A", m
        (sender_pid,) = struct.unpack("!I", m.body[:4])
        channel, payload, rest = m.body[4:].split(b"\0", 2)
        assert (channel, payload, rest) == (b"pgw_edge_channel", b"payload from elsewhere", b"")
        assert sender_pid != listener.backend_pid
        # A ParameterStatus after SET arrives in the same stream, in order.
        msgs = listener.query("SET application_name = 'edge-renamed'")
        assert ("application_name", "edge-renamed") in [m.parameter() for m in msgs
                                                        if m.type == "S"]


@RELAYED
def test_copy_messages_outside_copy_are_ignored_like_postgres(pg, target):
    """PostgreSQL accepts and ignores CopyData/CopyDone/CopyFail outside COPY (a client may
    still be sending after a COPY failed); the relay must not be stricter."""
    stray = wire.msg("d", b"stray row\n") + wire.msg("c") + wire.msg("f", b"stray fail\0")
    results = {}
    for label, endpoint in (("direct", pg), ("relay", target)):
        with raw_session(endpoint, "edge-stray-copy") as conn:
            conn.send(stray)
            results[label] = [m.raw for m in conn.query("SELECT 'after stray copy'")]
    assert results["relay"] == results["direct"]


@RELAYED
def test_copy_round_trip_with_errors_identical(pg, target, error_schema):
    """COPY FROM STDIN with a bad row: the server's error (with its COPY context line)
    reaches the client unchanged, and COPY TO STDOUT streams the same bytes."""
    results = {}
    for label, endpoint in (("direct", pg), ("relay", target)):
        with raw_session(endpoint, "edge-copy") as conn:
            conn.send(wire.query("COPY edge.child FROM STDIN"))
            out = conn.recv_until("GEZ", WAIT)
            assert out[-1].type == "G", out
            conn.send(wire.msg("d", b"10\t1\n11\tnot-a-number\n") + wire.msg("c"))
            failed = [m.raw for m in conn.recv_until("Z", WAIT)]
            copied = [m.raw for m in conn.query("COPY (SELECT g, g * 2 FROM "
                                                "generate_series(1, 500) g) TO STDOUT")]
            results[label] = (failed, copied)
    assert wire.first_error([wire.split_messages(r)[0][0] for r in results["direct"][0]])
    assert results["relay"] == results["direct"]


@RELAYED
def test_pipelined_queries_in_one_write(pg, target):
    """Many messages in one write (simple queries, an extended batch with two Syncs and
    an error in between): every answer arrives, in order, identical to direct."""
    batch = b"".join(wire.query("SELECT %d" % i) for i in range(20))
    batch += (wire.parse("SELECT $1::int + 1") + wire.bind(["41"]) + wire.execute() +
              wire.sync() + wire.parse("SELECT 1/$1::int") + wire.bind(["0"]) +
              wire.execute() + wire.bind(["7"]) + wire.execute() + wire.sync() +
              wire.query("SELECT 'tail'"))
    results = {}
    for label, endpoint in (("direct", pg), ("relay", target)):
        with raw_session(endpoint, "edge-pipeline") as conn:
            conn.send(batch)
            msgs = []
            while sum(1 for m in msgs if m.type == "Z") < 23:
                msgs.append(conn.recv_message(WAIT))
            results[label] = [m.raw for m in msgs]
    assert results["relay"] == results["direct"]


def test_many_startup_parameters_like_postgres(pg, relay):
    """PostgreSQL puts no limit on the number of startup parameters beyond the 10,000-byte
    packet cap; 100 custom settings (about 1.1 kB) log in directly, so they must through
    the relay too, and every one must arrive."""
    params = {"pgw.p%d" % i: "v%d" % i for i in range(100)}
    for endpoint in (pg, relay):
        with wire.Conn(endpoint.host, endpoint.port, timeout=WAIT) as conn:
            msgs = conn.login(endpoint.user, endpoint.password, endpoint.dbname, params=params)
            err = wire.first_error(msgs)
            assert err is None, "%s:%s refused: %r" % (endpoint.host, endpoint.port,
                                                     err.error_fields())
            assert conn.query_values("SELECT current_setting('pgw.p0'), "
                                     "current_setting('pgw.p99')") == [["v0", "v99"]]


def test_database_defaults_to_user(relay):
    """Without a database parameter the server uses the user name; the relay's session log
    says the same (the test role and database are both pgw)."""
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        msgs = conn.login(relay.user, relay.password, None,
                          params={"application_name": "edge-nodb"})
        assert msgs[-1].type == "Z", msgs
        assert conn.query_values("SELECT current_database()") == [[relay.user]]
    start = relay.wait_for_log(lambda d: d.get("event") == "session_start"
                               and d.get("application_name") == "edge-nodb", WAIT)
    assert start.get("database") == relay.user, start


def long_key_server(key):
    """A FakeServer handler that behaves like a PostgreSQL 18 server: it accepts protocol
    3.2 without NegotiateProtocolVersion and sends a long (3.2) cancel key."""
    def handler(fc):
        pkt = fc.read_startup()
        if pkt["kind"] == "cancel":
            return
        wire.login_ok(fc, pid=FAKE_PID, key=key)
        wire.serve_queries(fc)
    return handler


def test_protocol_3_2_long_cancel_key_is_mapped(relay_factory):
    """Protocol 3.2 allows cancel keys of up to 256 bytes (PostgreSQL 18 sends 32): the
    client gets a mapped key, and its CancelRequest reaches the server carrying the
    server's full 32-byte key."""
    server_key = bytes(range(0xA0, 0xC0))  # 32 bytes
    with wire.FakeServer(long_key_server(server_key)) as fake:
        relay = relay_factory(upstream=fake.address)
        with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
            msgs = conn.login("pgw", None, "pgw", params={"application_name": "edge-3.2-key"},
                              proto=wire.version(3, 2))
            assert msgs[-1].type == "Z", msgs
            assert conn.backend_pid == FAKE_PID
            assert 4 <= len(conn.backend_key) <= 256
            assert server_key not in conn.backend_key, "server key reached the client"
            send_cancel(relay, conn.backend_pid, conn.backend_key)
            assert fake.wait_for_connections(1, "cancel", WAIT), "no CancelRequest forwarded"
            assert cancels(fake) == [(FAKE_PID, server_key)]


def test_cancel_honoured_whichever_worker_accepts_it(relay_factory, keyed_fake):
    """Cancel connections land on any worker's listener (SO_REUSEPORT); the key map must be
    visible to all of them: eight cancels, eight forwarded."""
    relay = relay_factory(upstream=keyed_fake.address, workers=2)
    with raw_session(relay, "edge-cancel-workers") as conn:
        for i in range(1, 9):
            send_cancel(relay, conn.backend_pid, conn.backend_key)
            assert keyed_fake.wait_for_connections(i, "cancel", WAIT), \
                "cancel %d of 8 was not forwarded" % i
        assert set(cancels(keyed_fake)) == {(FAKE_PID, struct.pack("!I", FAKE_KEY))}


# ---- several startup packets or messages in one write ---------------------------------------

@RELAYED
@pytest.mark.parametrize("request_packet", [wire.ssl_request(), wire.gssenc_request()],
                         ids=["ssl", "gssenc"])
def test_request_and_startup_in_one_write(pg, target, request_packet):
    """A client may write its SSL/GSSENC request and, expecting 'N', the StartupMessage
    right behind it. Once 'N' is answered the buffered StartupMessage is a plain one and
    must be processed, not dropped or mistaken for TLS bytes."""
    with wire.Conn(target.host, target.port, timeout=WAIT) as conn:
        conn.send(request_packet + wire.startup_message({"user": target.user,
                                                          "database": target.dbname}))
        assert conn.recv_bytes(1) == b"N"
        msgs = conn.continue_login(target.user, target.password)
        assert msgs[-1].type == "Z", msgs


def test_startup_and_query_in_one_write(relay_factory):
    """With trust authentication a client can send StartupMessage and its first Query in
    one write, and PostgreSQL answers both (it reads the Query only after AuthenticationOk;
    checked against a trust line in pg_hba, which the shared SCRAM-only cluster lacks, so
    the server here is a FakeServer that trusts). Through the relay the Query must reach
    the server after the startup, exactly once: a relay that judges it before the server
    has chosen its authentication method is stricter than PostgreSQL."""
    with wire.FakeServer() as fake:
        relay = relay_factory(upstream=fake.address)
        with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
            conn.send(wire.startup_message({"user": "pgw", "database": "pgw",
                                            "application_name": "edge-eager"}) +
                      wire.query("SELECT 'eager'"))
            assert conn.continue_login("pgw", None)[-1].type == "Z"
            rows = [m.data_row() for m in conn.recv_until("Z", WAIT) if m.type == "D"]
            assert rows == [["SELECT 'eager'"]]
        fc = wire.session_conn(fake, "edge-eager")
        assert fc.closed.wait(WAIT)
        msgs, rest = wire.frontend_messages_after_startup(fc)
        assert [m.type for m in msgs] == ["Q", "X"] or [m.type for m in msgs] == ["Q"], msgs


@RELAYED
def test_function_call_identical_to_direct(pg, target):
    """The fast-path FunctionCall message ('F', used by libpq's large-object API) and its
    FunctionCallResponse, including an error from a bad argument."""
    int4abs = 1397  # pg_proc OID of abs(integer), fixed in the catalog since forever
    def function_call(arg):
        body = struct.pack("!IHHH", int4abs, 1, 1, 1)  # one binary format, one argument
        body += struct.pack("!i", 4) + struct.pack("!i", arg) + struct.pack("!H", 1)
        return wire.msg("F", body)

    results = {}
    for label, endpoint in (("direct", pg), ("relay", target)):
        with raw_session(endpoint, "edge-fastpath") as conn:
            conn.send(function_call(-42))
            ok = [m.raw for m in conn.recv_until("Z", WAIT)]
            conn.send(function_call(-2147483648))  # abs(INT_MIN): integer out of range
            failed = [m.raw for m in conn.recv_until("Z", WAIT)]
            results[label] = (ok, failed)
    ok = [wire.split_messages(r)[0][0] for r in results["direct"][0]]
    assert ok[0].type == "V" and ok[0].body == struct.pack("!ii", 4, 42), ok
    assert results["relay"] == results["direct"]


@RELAYED
def test_logical_replication_streams_through_copy_both(pg, target):
    """A logical replication connection: CREATE_REPLICATION_SLOT, START_REPLICATION enters
    CopyBoth; a change made elsewhere arrives as XLogData inside CopyData, a standby status
    update goes the other way, and CopyDone ends the stream cleanly."""
    slot = "pgw_edge_slot_%d" % os.getpid()
    with raw_session(target, "edge-walsender", params={"replication": "database"}) as conn:
        rows = conn.query_values("CREATE_REPLICATION_SLOT %s TEMPORARY LOGICAL test_decoding"
                                 % slot)
        assert rows and rows[0][0] == slot
        conn.send(wire.query("START_REPLICATION SLOT %s LOGICAL 0/0" % slot))
        m = conn.recv_message(WAIT)
        assert m.type == "W", m  # CopyBothResponse
        pg.psql("CREATE TABLE IF NOT EXISTS pgw_edge_repl (v text);"
                "INSERT INTO pgw_edge_repl VALUES ('through the relay')")
        seen = b""
        while b"through the relay" not in seen:
            m = conn.recv_message(WAIT)
            assert m.type == "d", m
            if m.body[:1] == b"w":  # XLogData: 'w', start, end, time, payload
                seen += m.body[25:]
            elif m.body[:1] == b"k" and m.body[-1:] == b"\x01":  # keepalive asking a reply
                pass
        # Standby status update: 'r', written/flushed/applied LSNs, clock, no reply asked.
        conn.send(wire.msg("d", b"r" + struct.pack("!QQQqB", 0, 0, 0, 0, 0)))
        conn.send(wire.msg("c"))  # CopyDone from our side ends the stream
        msgs = conn.recv_until("Z", WAIT)
        types = [m.type for m in msgs]
        assert "E" not in types, [m.error_fields() for m in msgs if m.type == "E"]
        assert "c" in types, types
    assert b"INSERT" in seen and b"pgw_edge_repl" in seen
    pg.psql("DROP TABLE IF EXISTS pgw_edge_repl")


# ---- sizes PostgreSQL accepts ---------------------------------------------------------------------

def test_startup_packet_of_exactly_10000_bytes(pg, relay):
    """10,000 bytes is PostgreSQL's limit, inclusive: a packet of exactly that size logs in
    directly and through the relay."""
    base = {"user": pg.user, "database": pg.dbname, "application_name": ""}
    pad = 10000 - len(wire.startup_message(base))
    params = dict(base, application_name="p" * pad)
    assert len(wire.startup_message(params)) == 10000
    for endpoint in (pg, relay):
        with wire.Conn(endpoint.host, endpoint.port, timeout=WAIT) as conn:
            conn.send(wire.startup_message(params))
            msgs = conn.continue_login(endpoint.user, endpoint.password)
            assert msgs[-1].type == "Z", (endpoint.port, msgs)


# Through pgwardend only: a byte relay would take many seconds per megabyte.
@pytest.mark.targets("pgwarden")
@pytest.mark.parametrize("sql", [
    "DO $$ BEGIN RAISE EXCEPTION '%', repeat('e', 300000) USING DETAIL = repeat('d', 300000); "
    "END $$",
    "DO $$ BEGIN RAISE NOTICE '%', repeat('n', 300000); END $$",
    "SELECT length('" + "q" * 2000000 + "')",
    "SELECT " + ", ".join("%d AS c%d" % (i, i) for i in range(1600)),
], ids=["600k-error", "300k-notice", "2M-query", "1600-columns"])
def test_large_inspected_messages_identical_to_direct(pg, target, sql):
    """Messages the relay may buffer to inspect (ErrorResponse, NoticeResponse, Query,
    RowDescription) at sizes PostgreSQL produces and accepts, well beyond a small buffer:
    they pass unchanged."""
    results = {}
    for label, endpoint in (("direct", pg), ("relay", target)):
        with raw_session(endpoint, "edge-large") as conn:
            results[label] = [m.raw for m in conn.query(sql, WAIT * 2)]
    assert len(results["direct"]) >= 2
    assert results["relay"] == results["direct"], (describe(results["direct"])[:3],
                                                   describe(results["relay"])[:3])
