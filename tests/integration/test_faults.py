"""Faults: what pgwardend does when a client sends bytes it must not, when the upstream
server fails, and when the operator signals the daemon (SIGTERM drain, SIGHUP reload).

Bad-input tests run against a FakeServer upstream that records every byte it receives, so
"the upstream never sees the bad bytes" is checked on the bytes themselves. Each one also
opens a healthy psycopg session through the same relay before the bad input and uses it
afterwards: one misbehaving client must not disturb the others.

Where a test needs an answer "promptly" it gives the relay timeouts far longer than the
test's own bounded wait: a relay that waited for the bytes (instead of deciding on the
header) would then hit the test's bound and fail, without the test measuring time.
"""

import os
import signal
import socket
import struct
import threading

import psycopg
import pytest

import wire

# Far longer than any wait in this file: an answer that arrives must come from the relay's
# decision, not from one of these timeouts firing.
LONG_TIMEOUTS = ["--timeouts-startup", "300s", "--timeouts-message", "300s",
                 "--timeouts-connect", "300s"]
MAX_MESSAGE = 65536
WAIT = 30.0  # bound for every wait on the relay; a hang guard, not a performance goal


# ---- fixtures and helpers -------------------------------------------------------------------

@pytest.fixture
def fake():
    """A well-behaved FakeServer (logs anyone in, echoes queries) to put behind the relay."""
    server = wire.FakeServer()
    yield server
    server.stop()
    assert not server.errors, "fake server handler failed: %r" % server.errors


@pytest.fixture
def guarded(relay_factory, fake):
    """A relay in front of `fake` with a 64 KiB message cap and very long timeouts."""
    return relay_factory(upstream=fake.address,
                         extra_args=["--max-message-size", str(MAX_MESSAGE)] + LONG_TIMEOUTS)


@pytest.fixture(params=["whole", "bytewise"])
def bytewise(request):
    """How the misbehaving client writes: whole messages (usually one read for the relay)
    or one byte per send() (see wire.Conn), so a check taken at a read() boundary instead
    of a message boundary shows (STYLE.md rule 3)."""
    return request.param == "bytewise"


class Bystander:
    """A healthy psycopg session through the relay, opened before a fault and checked after
    it: the relay must keep serving other sessions."""

    def __init__(self, relay, echo):
        self.echo = echo  # the upstream is a FakeServer that echoes the SQL back
        self.conn = psycopg.connect(relay.dsn(application_name="bystander"), autocommit=True)
        self.check()

    def check(self):
        sql = "SELECT 'still alive'"
        rows = self.conn.execute(sql).fetchall()
        assert rows == [(sql,) if self.echo else ("still alive",)]

    def close(self):
        self.conn.close()


def raw_login(relay, application_name, bytewise=False, **kw):
    """A raw session through the relay, logged in; asserts the login reached
    ReadyForQuery."""
    conn = wire.Conn(relay.host, relay.port, timeout=WAIT, bytewise=bytewise)
    msgs = conn.login(relay.user, relay.password, relay.dbname,
                      params={"application_name": application_name}, **kw)
    assert msgs[-1].type == "Z", "login through the relay failed: %r" % msgs
    return conn


def expect_protocol_violation(conn):
    """The relay answered with exactly one FATAL 08P01 ErrorResponse and closed."""
    msgs, rest = conn.read_to_close(WAIT)
    assert rest == b"", "partial message before close: %s" % wire.short(rest)
    assert [m.type for m in msgs] == ["E"], "expected one ErrorResponse, got %r" % msgs
    fields = msgs[0].error_fields()
    assert fields.get("C") == "08P01", fields
    assert fields.get("S") == "FATAL", fields
    assert fields.get("M"), "the error must say what was wrong: %r" % fields
    return fields


def expect_error_or_silent_close(conn, sqlstates=("08P01",)):
    """For input the relay rejects before a protocol version is agreed, PostgreSQL itself
    closes without a word; the relay may do the same or send one FATAL ErrorResponse.
    Anything else (other messages, a partial message, a connection left open) fails."""
    msgs, rest = conn.read_to_close(WAIT)
    assert rest == b"", "partial message before close: %s" % wire.short(rest)
    if not msgs:
        return None
    assert [m.type for m in msgs] == ["E"], "expected at most one ErrorResponse: %r" % msgs
    fields = msgs[0].error_fields()
    assert fields.get("C") in sqlstates, fields
    assert fields.get("S") == "FATAL", fields
    return fields


def assert_upstream_saw_only(fc, allowed_types=("X",)):
    """The upstream connection of a session received, after its startup packet, only whole
    messages of the allowed types: none of the client's bad bytes got through."""
    msgs, rest = wire.frontend_messages_after_startup(fc)
    assert rest == b"", "upstream received a partial message: %s" % wire.short(rest)
    assert all(m.type in allowed_types for m in msgs), \
        "upstream received %r; only %r allowed" % (msgs, allowed_types)


def new_upstream_bytes(fake, before):
    """Bytes received by upstream connections accepted after the first `before` ones."""
    return b"".join(fc.received_bytes() for fc in fake.connections()[before:])


def session_id_for(relay, application_name):
    start = relay.wait_for_log(lambda d: d.get("event") == "session_start"
                               and d.get("application_name") == application_name, WAIT)
    return start["session"]


# ---- bad input after login ------------------------------------------------------------------

def run_bad_message(relay, fake, name, bad, bytewise=False):
    """Log in raw, send `bad`, expect FATAL 08P01 and a close; the upstream must not have
    received any of it; a bystander session keeps working."""
    bystander = Bystander(relay, echo=True)
    try:
        with raw_login(relay, name, bytewise) as conn:
            conn.send(bad)
            fields = expect_protocol_violation(conn)
        fc = wire.session_conn(fake, name)
        assert fc is not None, "the session never reached the upstream"
        assert fc.closed.wait(WAIT), "relay kept the upstream connection open"
        assert_upstream_saw_only(fc)
        bystander.check()
    finally:
        bystander.close()
    return fields


def test_message_length_below_four_is_rejected(guarded, fake, bytewise):
    # A length of 3 cannot even cover the length field itself.
    run_bad_message(guarded, fake, "len-below-4", wire.header("Q", 3) + b"SELECT 1\0",
                    bytewise)


def test_message_length_zero_is_rejected(guarded, fake, bytewise):
    run_bad_message(guarded, fake, "len-zero", wire.header("Q", 0), bytewise)


def test_oversized_message_rejected_on_its_header(guarded, fake, bytewise):
    # Only the 5-byte header claiming 1 MiB is sent: the relay must refuse on the header
    # (its message timeout is 300 s, our wait 30 s), not buffer towards 1 MiB.
    run_bad_message(guarded, fake, "too-long", wire.header("Q", 1024 * 1024 + 4), bytewise)


def test_oversized_message_body_never_buffered(guarded, fake):
    """Keep sending the body of a 64 MiB Parse after its header: the relay must cut the
    client off rather than buffer it, so its resident memory does not follow the flood."""
    bystander = Bystander(guarded, echo=True)
    try:
        rss_before = wire.process_rss_kb(guarded.proc.pid)
        with raw_login(guarded, "flood") as conn:
            conn.send(wire.header("P", 64 * 1024 * 1024))
            chunk = b"\xa5" * 65536
            sent = 0
            conn.sock.settimeout(WAIT)
            # 32 MiB at most; a relay that buffered it would grow far past the bound below.
            while sent < 32 * 1024 * 1024 and conn.try_send(chunk):
                sent += len(chunk)
                if sent % (1024 * 1024) == 0:
                    rss = wire.process_rss_kb(guarded.proc.pid)
                    assert rss - rss_before < 8 * 1024, \
                        "relay RSS grew %d KiB while a client streamed an oversized body" \
                        % (rss - rss_before)
            try:
                msgs, _ = conn.read_to_close(WAIT)
            except (ConnectionResetError, wire.ConnectionClosed):
                msgs = []  # reset with unread data on the relay's side: also a refusal
        rss_after = wire.process_rss_kb(guarded.proc.pid)
        assert rss_after - rss_before < 8 * 1024, (rss_before, rss_after)
        errors = [m.error_fields() for m in msgs if m.type == "E"]
        assert all(e.get("C") == "08P01" for e in errors), errors
        fc = wire.session_conn(fake, "flood")
        assert fc is not None and fc.closed.wait(WAIT)
        assert_upstream_saw_only(fc)
        bystander.check()
    finally:
        bystander.close()


def test_unknown_message_type_after_login(guarded, fake, bytewise):
    fields = run_bad_message(guarded, fake, "unknown-type", wire.msg("z", b"bad-bytes\0"),
                             bytewise)
    print("relay said:", fields.get("M"))


def test_password_message_after_login_is_rejected(guarded, fake, bytewise):
    # 'p' is only valid while authenticating; afterwards it is a protocol violation.
    run_bad_message(guarded, fake, "late-password", wire.password_message("pw-after-login"),
                    bytewise)


def test_backend_only_type_from_client_is_rejected(guarded, fake, bytewise):
    # 'T' (RowDescription) exists in the protocol, but only from the server.
    run_bad_message(guarded, fake, "backend-type", wire.row_description(["x"]), bytewise)


def test_fixed_size_message_with_extra_body_is_rejected(guarded, fake, bytewise):
    # Sync has no body; PostgreSQL rejects one with a body ("invalid message format").
    run_bad_message(guarded, fake, "fat-sync", wire.msg("S", b"extra"), bytewise)


def test_message_at_the_cap_passes_and_one_byte_over_fails(guarded, fake):
    """--max-message-size bounds the body (the bytes after the length field): a Query body
    of exactly 65536 bytes is forwarded, 65537 is refused."""
    at_cap = b"SELECT '" + b"x" * (MAX_MESSAGE - 10) + b"'"
    assert len(wire.query(at_cap)) - 5 == MAX_MESSAGE
    with raw_login(guarded, "at-cap") as conn:
        rows = conn.query_values(at_cap)
        assert rows == [[at_cap[:wire.ECHO_LIMIT].decode()]]
    run_bad_message(guarded, fake, "over-cap", wire.query(at_cap + b" "))


def test_bytes_after_terminate_never_reach_upstream(guarded, fake, bytewise):
    bystander = Bystander(guarded, echo=True)
    try:
        with raw_login(guarded, "after-terminate", bytewise) as conn:
            # One write: Terminate immediately followed by a Query.
            conn.send(wire.terminate() + wire.query("SELECT 'after terminate'"))
            msgs, rest = conn.read_to_close(WAIT)
        # After Terminate the protocol allows no answer: the relay just closes.
        assert msgs == [] and rest == b"", "relay answered after Terminate: %r" % msgs
        fc = wire.session_conn(fake, "after-terminate")
        assert fc is not None and fc.closed.wait(WAIT)
        received = fc.received_bytes()
        assert b"after terminate" not in received, wire.short(received)
        assert_upstream_saw_only(fc, ("X",))
        bystander.check()
    finally:
        bystander.close()


def test_query_while_authenticating_is_rejected(relay_factory, bytewise):
    """The server asked for SASL; the client sends a Query instead of a SASL response.
    Only 'p' messages are valid while authenticating (PostgreSQL: FATAL 08P01 "expected
    SASL response"): the client gets FATAL 08P01 and the Query never reaches the server."""
    def ask_for_sasl(fc):
        fc.read_startup()
        fc.send(wire.auth_request(wire.AUTH_SASL, wire.cstr("SCRAM-SHA-256") + b"\0"))
        fc.drain_until_close(120)

    with wire.FakeServer(ask_for_sasl) as server:
        relay = relay_factory(upstream=server.address, extra_args=LONG_TIMEOUTS)
        with wire.Conn(relay.host, relay.port, timeout=WAIT, bytewise=bytewise) as conn:
            conn.send(wire.startup_message({"user": "pgw", "database": "pgw",
                                            "application_name": "query-in-auth"}))
            m = conn.recv_message(WAIT)
            assert m.type == "R" and m.auth_code() == wire.AUTH_SASL, m
            conn.send(wire.query("SELECT 'not yet'"))
            expect_protocol_violation(conn)
        fc = wire.session_conn(server, "query-in-auth")
        assert fc.closed.wait(WAIT)
        assert b"not yet" not in fc.received_bytes()


# ---- bad startup packets --------------------------------------------------------------------

def run_bad_startup(relay, fake, payload, bytewise, sqlstates=("08P01",)):
    """Send `payload` as the first bytes of a connection. The relay refuses (one FATAL
    ErrorResponse or a silent close, see expect_error_or_silent_close), no byte of it
    reaches the upstream, and a bystander keeps working."""
    bystander = Bystander(relay, echo=True)
    try:
        before = len(fake.connections())
        with wire.Conn(relay.host, relay.port, timeout=WAIT, bytewise=bytewise) as conn:
            conn.send(payload)
            fields = expect_error_or_silent_close(conn, sqlstates)
        leaked = new_upstream_bytes(fake, before)
        assert leaked == b"", "bad startup bytes reached upstream: %s" % wire.short(leaked)
        bystander.check()
    finally:
        bystander.close()
    return fields


@pytest.mark.parametrize("length", [0, 4, 7])
def test_startup_length_below_eight(guarded, fake, bytewise, length):
    # Eight bytes are on the wire (enough to frame), but the length field says < 8.
    run_bad_startup(guarded, fake, struct.pack("!II", length, wire.version(3, 0)), bytewise)


def test_startup_header_claiming_over_10000_bytes(guarded, fake, bytewise):
    # Only the 8-byte header: the relay must refuse without waiting for 20,000 bytes.
    run_bad_startup(guarded, fake, struct.pack("!II", 20000, wire.version(3, 0)), bytewise)


def test_startup_packet_over_10000_bytes(guarded, fake, bytewise):
    pkt = wire.startup_message({"user": "pgw", "application_name": "x" * 10000})
    assert len(pkt) > 10000
    run_bad_startup(guarded, fake, pkt, bytewise)


@pytest.mark.parametrize("major,minor", [(2, 0), (4, 0), (1234, 5681)])
def test_unsupported_protocol_version(guarded, fake, bytewise, major, minor):
    """PostgreSQL answers an unsupported version with FATAL 0A000 ("unsupported frontend
    protocol"); the relay may say the same or 08P01, but it must answer with an error (a
    version was sent, so a v3 ErrorResponse is what libpq expects) and forward nothing."""
    bystander = Bystander(guarded, echo=True)
    try:
        before = len(fake.connections())
        pkt = wire.startup_message({"user": "pgw", "database": "pgw"}, wire.version(major, minor))
        with wire.Conn(guarded.host, guarded.port, timeout=WAIT, bytewise=bytewise) as conn:
            conn.send(pkt)
            msgs, rest = conn.read_to_close(WAIT)
        assert rest == b"" and [m.type for m in msgs] == ["E"], msgs
        print("relay said:", msgs[0].error_fields())
        fields = msgs[0].error_fields()
        assert fields.get("C") in ("08P01", "0A000") and fields.get("S") == "FATAL", fields
        leaked = new_upstream_bytes(fake, before)
        assert leaked == b"", "startup bytes reached upstream: %s" % wire.short(leaked)
        bystander.check()
    finally:
        bystander.close()


def test_startup_message_without_user(guarded, fake, bytewise):
    # PostgreSQL: FATAL 28000 "no PostgreSQL user name specified in startup packet".
    run_bad_startup(guarded, fake, wire.startup_message({"database": "pgw"}), bytewise,
                    sqlstates=("08P01", "28000"))


def test_startup_parameters_not_terminated(guarded, fake, bytewise):
    body = struct.pack("!I", wire.version(3, 0)) + b"user\0pgw\0database\0pgw"  # no NULs
    run_bad_startup(guarded, fake, struct.pack("!I", len(body) + 4) + body, bytewise)


def test_cancel_request_with_bad_length(guarded, fake, bytewise):
    # A CancelRequest must carry a pid and a key of at least 4 bytes: 12 bytes is too short.
    run_bad_startup(guarded, fake, struct.pack("!III", 12, wire.CANCEL_REQUEST_CODE, 4242),
                    bytewise)


def test_ssl_request_with_a_body(guarded, fake, bytewise):
    # SSLRequest is exactly 8 bytes; one claiming 12 is malformed.
    run_bad_startup(guarded, fake, struct.pack("!III", 12, wire.SSL_REQUEST_CODE, 0), bytewise)


def test_second_ssl_request_is_refused(guarded, fake, bytewise):
    """After an SSLRequest was answered 'N', another SSLRequest is not a valid startup
    packet (PostgreSQL: FATAL 0A000 "unsupported frontend protocol 1234.5679")."""
    before = len(fake.connections())
    with wire.Conn(guarded.host, guarded.port, timeout=WAIT, bytewise=bytewise) as conn:
        conn.send(wire.ssl_request())
        assert conn.recv_bytes(1) == b"N"
        conn.send(wire.ssl_request())
        fields = expect_error_or_silent_close(conn, ("08P01", "0A000"))
        print("relay said:", fields)
    leaked = new_upstream_bytes(fake, before)
    assert leaked == b"", "startup bytes reached upstream: %s" % wire.short(leaked)


# ---- silent peers ---------------------------------------------------------------------------


def test_timeouts_do_not_touch_idle_or_slow_sessions(relay_factory, pg):
    """timeouts.message bounds a message that has started to arrive and timeouts.startup
    bounds the login: neither may end a logged-in session that is idle between messages,
    nor one waiting for a slow server answer."""
    # A SCRAM login on a loaded machine can take over a second: the startup bound leaves room.
    relay = relay_factory(extra_args=["--timeouts-message", "1s", "--timeouts-startup", "3s"])
    with raw_login(relay, "idle-and-slow") as conn:
        assert conn.query_values("SELECT 'slow' FROM pg_sleep(3.5)") == [["slow"]]
        # Idle well past both timeouts (a bounded sleep, not a timing assertion).
        threading.Event().wait(3.5)
        assert conn.query_values("SELECT 'still here'") == [["still here"]]

def test_half_message_then_silence_times_out(relay_factory, fake):
    relay = relay_factory(upstream=fake.address,
                          extra_args=["--timeouts-message", "1s", "--timeouts-startup", "300s"])
    bystander = Bystander(relay, echo=True)
    try:
        with raw_login(relay, "half-message") as conn:
            session = session_id_for(relay, "half-message")
            # A Query header promising 100 bytes, then 10 of them, then nothing.
            conn.send(wire.header("Q", 104) + b"SELECT 'ha")
            expect_protocol_violation(conn)
        end = relay.wait_for_log(lambda d: d.get("event") == "session_end"
                                 and d.get("session") == session, WAIT)
        # The log says why the session ended, and counts what the client sent.
        assert end.get("reason"), end
        assert int(end["bytes_from_client"]) > 0, end
        bystander.check()  # the bystander was idle well past 1 s between messages: fine
    finally:
        bystander.close()


def test_half_startup_packet_then_silence_times_out(relay_factory, fake):
    relay = relay_factory(upstream=fake.address,
                          extra_args=["--timeouts-startup", "1s", "--timeouts-message", "300s"])
    before = len(fake.connections())
    pkt = wire.startup_message({"user": "pgw", "database": "pgw"})
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        conn.send(pkt[:len(pkt) // 2])
        # Before a whole startup packet there is no agreed protocol: an 08P01 FATAL or a
        # silent close are both acceptable; staying open is not.
        expect_error_or_silent_close(conn, ("08P01", "57P01", "08006"))
    leaked = new_upstream_bytes(fake, before)
    assert leaked == b"", "startup bytes reached upstream: %s" % wire.short(leaked)


def test_no_bytes_at_all_times_out(relay_factory, fake):
    relay = relay_factory(upstream=fake.address, extra_args=["--timeouts-startup", "1s"])
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        expect_error_or_silent_close(conn, ("08P01", "57P01", "08006"))


# ---- upstream faults ------------------------------------------------------------------------

def expect_upstream_failure(conn):
    """One FATAL 08006 ErrorResponse with a message, then close."""
    msgs, rest = conn.read_to_close(WAIT)
    assert rest == b"", rest
    errors = [m for m in msgs if m.type == "E"]
    assert errors, "no ErrorResponse before the close: %r" % msgs
    assert msgs[-1].type == "E", "error must be the last message: %r" % msgs
    fields = errors[-1].error_fields()
    assert fields.get("C") == "08006", fields
    assert fields.get("S") == "FATAL", fields
    assert len(fields.get("M", "")) > 10, "the message must explain the failure: %r" % fields
    print("relay said:", fields["M"])
    return fields


def test_upstream_down(relay_factory):
    """Nothing listens on the upstream port: FATAL 08006 right after the startup packet
    (the relay's connect timeout is 300 s, so this is the refusal, not a timeout)."""
    relay = relay_factory(upstream=("127.0.0.1", wire.free_port()), extra_args=LONG_TIMEOUTS)
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
        conn.send(wire.startup_message({"user": "pgw", "database": "pgw"}))
        fields = expect_upstream_failure(conn)
    # libpq shows the relay's FATAL text as the connection failure (psycopg 3.1 sets no
    # sqlstate on connection errors, so the text is what a user sees).
    with pytest.raises(psycopg.OperationalError) as info:
        psycopg.connect(relay.dsn())
    assert "FATAL" in str(info.value) and fields["M"] in str(info.value), info.value


def test_upstream_closes_during_startup(relay_factory):
    def close_after_startup(fc):
        fc.read_startup()
        # Return: FakeServer closes the connection without answering.

    with wire.FakeServer(close_after_startup) as server:
        relay = relay_factory(upstream=server.address, extra_args=LONG_TIMEOUTS)
        with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
            conn.send(wire.startup_message({"user": "pgw", "database": "pgw"}))
            expect_upstream_failure(conn)
        assert server.wait_for_connections(1, "startup")


def test_upstream_refusal_reaches_client_unchanged(relay_factory):
    refusal = wire.error_response("53300", "sorry, too many clients already", "FATAL",
                                  F="postinit.c", L="123", R="InitPostgres")

    def refuse(fc):
        fc.read_startup()
        fc.send(refusal)

    with wire.FakeServer(refuse) as server:
        relay = relay_factory(upstream=server.address, extra_args=LONG_TIMEOUTS)
        with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
            conn.send(wire.startup_message({"user": "pgw", "database": "pgw"}))
            msgs, rest = conn.read_to_close(WAIT)
        assert rest == b""
        assert [m.raw for m in msgs] == [refusal], msgs


def test_upstream_dies_between_messages(relay_factory):
    """The server logs in, reads a Query and dies before answering: the client is at a
    clean message boundary, so it gets FATAL 08006 and a close."""
    got_query = threading.Event()

    def die_on_query(fc):
        fc.read_startup()
        wire.login_ok(fc)
        m = fc.read_message()
        if m.type == "Q":
            got_query.set()

    with wire.FakeServer(die_on_query) as server:
        relay = relay_factory(upstream=server.address, extra_args=LONG_TIMEOUTS)
        with raw_login(relay, "dies") as conn:
            conn.send(wire.query("SELECT 1"))
            expect_upstream_failure(conn)
        assert got_query.is_set()


def test_upstream_dies_mid_message(relay_factory):
    """The server dies after sending part of a RowDescription: the client cannot be told
    anything in-band any more, so the relay must close the connection (not hang, not send
    a ReadyForQuery)."""
    def die_mid_message(fc):
        fc.read_startup()
        wire.login_ok(fc)
        fc.read_message()
        fc.send(wire.row_description(["a", "b"])[:9])

    with wire.FakeServer(die_mid_message) as server:
        relay = relay_factory(upstream=server.address, extra_args=LONG_TIMEOUTS)
        with raw_login(relay, "dies-mid") as conn:
            conn.send(wire.query("SELECT 1"))
            msgs, rest = conn.read_to_close(WAIT)
        assert "Z" not in [m.type for m in msgs], msgs
        assert "T" not in [m.type for m in msgs], "relay invented a RowDescription: %r" % msgs


def test_upstream_protocol_violation_not_forwarded(relay_factory):
    """The server answers a Query with a message type no server sends: the client must not
    receive those bytes; the session ends with a FATAL error."""
    def garbage(fc):
        fc.read_startup()
        wire.login_ok(fc)
        fc.read_message()
        fc.send(wire.msg("!", b"garbage from upstream"))
        fc.drain_until_close(120)

    with wire.FakeServer(garbage) as server:
        relay = relay_factory(upstream=server.address, extra_args=LONG_TIMEOUTS)
        with raw_login(relay, "upstream-garbage") as conn:
            conn.send(wire.query("SELECT 1"))
            msgs, rest = conn.read_to_close(WAIT)
        assert b"garbage from upstream" not in rest
        assert [m.type for m in msgs] == ["E"], msgs
        fields = msgs[0].error_fields()
        assert fields.get("S") == "FATAL" and fields.get("C", "")[:2] in ("08", "XX"), fields
        assert server.connections()[0].closed.wait(WAIT)


def test_upstream_message_over_cap_not_forwarded(relay_factory):
    """A DataRow larger than --max-message-size from the server is not passed on (not even
    its first bytes as a message); the client gets a FATAL error instead."""
    def huge_row(fc):
        fc.read_startup()
        wire.login_ok(fc)
        fc.read_message()
        fc.send(wire.row_description(["big"]) + wire.data_row(["y" * (2 * MAX_MESSAGE)]) +
                wire.command_complete("SELECT 1") + wire.ready_for_query())
        fc.drain_until_close(120)

    with wire.FakeServer(huge_row) as server:
        relay = relay_factory(upstream=server.address,
                              extra_args=["--max-message-size", str(MAX_MESSAGE)] + LONG_TIMEOUTS)
        with raw_login(relay, "upstream-huge") as conn:
            conn.send(wire.query("SELECT big"))
            msgs, rest = conn.read_to_close(WAIT)
        types = [m.type for m in msgs]
        assert "D" not in types and "Z" not in types, msgs
        assert rest == b"", "partial message forwarded: %s" % wire.short(rest)
        assert types and types[-1] == "E", msgs
        assert msgs[-1].error_fields().get("S") == "FATAL", msgs[-1].error_fields()


def test_upstream_connect_timeout(relay_factory):
    """The upstream's accept queue is full, so its SYNs go unanswered: the relay gives up
    after timeouts.connect (1 s; the kernel alone would keep trying for minutes)."""
    listener = wire.FullBacklogListener()
    try:
        relay = relay_factory(upstream=listener.address,
                              extra_args=["--timeouts-connect", "1s", "--timeouts-startup",
                                          "300s"])
        with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
            conn.send(wire.startup_message({"user": "pgw", "database": "pgw"}))
            expect_upstream_failure(conn)
    finally:
        listener.close()


def test_upstream_never_answers_startup(relay_factory):
    """The server accepts and reads the StartupMessage but never answers: timeouts.startup
    ends the session, the client hears about it, the upstream socket is closed too."""
    def silent(fc):
        fc.read_startup()
        fc.drain_until_close(120)

    with wire.FakeServer(silent) as server:
        relay = relay_factory(upstream=server.address,
                              extra_args=["--timeouts-startup", "1s", "--timeouts-connect",
                                          "300s"])
        with wire.Conn(relay.host, relay.port, timeout=WAIT) as conn:
            conn.send(wire.startup_message({"user": "pgw", "database": "pgw"}))
            msgs, rest = conn.read_to_close(WAIT)
        assert rest == b"" and [m.type for m in msgs] == ["E"], msgs
        fields = msgs[0].error_fields()
        assert fields.get("S") == "FATAL" and fields.get("C", "").startswith("08"), fields
        fc = server.connections()[0]
        assert fc.closed.wait(WAIT), "relay kept the silent upstream connection open"
        assert fc.eof, "the upstream connection was not closed by the relay"


# ---- signals ---------------------------------------------------------------------------------

def connect_refused(relay):
    """True when a new TCP connection to the relay is refused or closed unanswered."""
    try:
        with wire.Conn(relay.host, relay.port, timeout=5) as conn:
            conn.send(wire.startup_message({"user": relay.user, "database": relay.dbname}))
            msgs, _ = conn.read_to_close(5)
            return not any(m.type == "R" for m in msgs)
    except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError, wire.ConnectionClosed):
        return True
    except socket.timeout:
        return False


def test_sigterm_drains_busy_session(relay_factory, pg):
    relay = relay_factory(upstream=(pg.host, pg.port), extra_args=["--timeouts-drain", "120s"])
    idle = psycopg.connect(relay.dsn(application_name="drain-idle"), autocommit=True)
    busy = psycopg.connect(relay.dsn(application_name="drain-busy"), autocommit=True)
    result = {}

    def run_busy():
        try:
            result["rows"] = busy.execute("SELECT 'done' FROM pg_sleep(3)").fetchall()
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    worker = threading.Thread(target=run_busy)
    try:
        worker.start()
        # The signal must land while the query runs: wait until the server shows it.
        assert wire.wait_until(lambda: pg.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'drain-busy' "
            "AND state = 'active'").strip() == "1", WAIT)
        relay.signal(signal.SIGTERM)
        assert wire.wait_until(lambda: connect_refused(relay), WAIT), \
            "relay still accepts new sessions after SIGTERM"
        worker.join(WAIT)
        assert not worker.is_alive()
        assert "error" not in result, "busy session broken by the drain: %r" % result
        assert result["rows"] == [("done",)]
        assert relay.proc.poll() is None, "relay exited while sessions were open"
    finally:
        idle.close()
        busy.close()
        worker.join(WAIT)
    relay.proc.wait(WAIT)
    assert relay.proc.returncode == 0, relay.log_tail()


def test_sigterm_drain_timeout_sends_57p01(relay_factory, fake):
    relay = relay_factory(upstream=fake.address, extra_args=["--timeouts-drain", "1s"])
    with raw_login(relay, "stays-open") as conn:
        relay.signal(signal.SIGTERM)
        msgs, rest = conn.read_to_close(WAIT)
    assert rest == b"" and [m.type for m in msgs] == ["E"], msgs
    fields = msgs[0].error_fields()
    assert fields.get("C") == "57P01" and fields.get("S") == "FATAL", fields
    relay.proc.wait(WAIT)
    assert relay.proc.returncode == 0, relay.log_tail()


def test_sighup_reloads_log_level(relay_factory, fake):
    relay = relay_factory(upstream=fake.address, config_text="log_level: info\n")
    assert relay.config_path, "relay_factory did not write a config file"

    def debug_lines():
        return [d for d in relay.log_lines() if d.get("level") == "debug"]

    with raw_login(relay, "before-reload") as conn:
        conn.query("SELECT 1")
    assert debug_lines() == [], "debug lines at log_level info"

    with open(relay.config_path, "w") as f:
        f.write("log_level: debug\n")
    relay.signal(signal.SIGHUP)
    assert relay.proc.poll() is None, "relay exited on SIGHUP"
    # SIGHUP is handled asynchronously: retry a session every half second until one logs at
    # debug (bounded).
    assert wire.wait_until(lambda: _session_then(relay, "after-reload", debug_lines), WAIT,
                           interval=0.5), relay.log_tail()

    def error_count():
        return len([d for d in relay.log_lines() if d.get("level") == "error"])

    errors_before = error_count()
    with open(relay.config_path, "w") as f:
        f.write("log_level: [this is not, a level\n")
    relay.signal(signal.SIGHUP)
    assert wire.wait_until(lambda: error_count() > errors_before, WAIT), \
        "no error logged for an invalid config file\n" + relay.log_tail()
    assert relay.proc.poll() is None, "relay exited on an invalid config file"
    # The old (debug) config stays: a new session still logs at debug, and works.
    count = len(debug_lines())
    with raw_login(relay, "after-bad-reload") as conn:
        assert conn.query_values("SELECT 'x'") == [["SELECT 'x'"]]
    assert wire.wait_until(lambda: len(debug_lines()) > count, WAIT), relay.log_tail()
    assert relay.proc.poll() is None


def _session_then(relay, name, probe):
    assert relay.proc.poll() is None, "relay exited:\n" + relay.log_tail()
    with raw_login(relay, name) as conn:
        conn.query("SELECT 1")
    return probe()


# ---- resources: file descriptors, memory, upstream sockets -----------------------------------

def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def test_failed_sessions_leak_no_descriptors(guarded, fake):
    """Sessions that end every wrong way (bad startup, bad message, a client vanishing
    before, during and after login, half a message then a close) leave no file descriptor
    behind: the relay's count returns to where it was."""
    bystander = Bystander(guarded, echo=True)
    try:
        baseline = open_fds(guarded.proc.pid)
        startup = wire.startup_message({"user": "pgw", "database": "pgw"})
        for i in range(10):
            with wire.Conn(guarded.host, guarded.port, timeout=WAIT) as conn:
                pass  # connect, close at once
            with wire.Conn(guarded.host, guarded.port, timeout=WAIT) as conn:
                conn.send(startup[:7])  # half a startup packet, then gone
            with wire.Conn(guarded.host, guarded.port, timeout=WAIT) as conn:
                conn.send(startup)  # gone before reading the login answer
            with wire.Conn(guarded.host, guarded.port, timeout=WAIT) as conn:
                conn.send(struct.pack("!II", 4, 0))
                expect_error_or_silent_close(conn)
            with raw_login(guarded, "leak-%d" % i) as conn:
                conn.send(wire.msg("z", b"x"))
                expect_protocol_violation(conn)
            with raw_login(guarded, "leak-half-%d" % i) as conn:
                conn.send(wire.header("Q", 100) + b"SEL")  # half a message, then gone
        assert wire.wait_until(lambda: open_fds(guarded.proc.pid) <= baseline, WAIT), \
            "relay holds %d descriptors, %d before the failed sessions" % (
                open_fds(guarded.proc.pid), baseline)
        bystander.check()
    finally:
        bystander.close()


def big_result_server(rows, row_size, progress):
    """A FakeServer handler answering the first Query with `rows` DataRows of row_size
    bytes; progress["sent"] counts bytes handed to the kernel, so a test can see the
    server being held back."""
    row = wire.data_row(["r" * row_size])

    def handler(fc):
        fc.read_startup()
        wire.login_ok(fc)
        fc.read_message()
        fc.send(wire.row_description(["payload"]))
        for _ in range(rows):
            fc.send(row)
            progress["sent"] += len(row)
        fc.send(wire.command_complete("SELECT %d" % rows) + wire.ready_for_query())
        progress["done"] = True
        wire.serve_queries(fc)

    return handler


def wait_for_stall(progress, settle=1.0, timeout=WAIT):
    """Wait until the server's byte count stops moving for `settle` seconds (it is blocked
    on a full socket) or it finished; bounded by timeout."""
    last = [-1]

    def stalled():
        now = progress["sent"]
        if progress.get("done"):
            return True
        moved = now != last[0]
        last[0] = now
        return not moved

    return wire.wait_until(stalled, timeout, interval=settle)


def test_slow_reader_gets_backpressure_not_buffering(relay_factory):
    """A client that stops reading a 64 MiB result: the relay must stop reading the server
    (its memory stays flat) rather than buffer the result; once the client reads again,
    every row arrives intact."""
    rows, row_size = 8192, 8192
    progress = {"sent": 0}
    with wire.FakeServer(big_result_server(rows, row_size, progress)) as server:
        relay = relay_factory(upstream=server.address, extra_args=LONG_TIMEOUTS)
        with raw_login(relay, "slow-reader") as conn:
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            rss_before = wire.process_rss_kb(relay.proc.pid)
            conn.send(wire.query("SELECT payload"))
            assert wait_for_stall(progress), "server never settled"
            total = rows * (row_size + 11)
            assert not progress.get("done") and progress["sent"] < total, \
                "the whole result left the server while the client read nothing"
            growth = wire.process_rss_kb(relay.proc.pid) - rss_before
            assert growth < 16 * 1024, "relay RSS grew %d KiB holding a stalled result" % growth
            count = 0
            while True:
                m = conn.recv_message(WAIT)
                if m.type == "D":
                    assert m.body == wire.data_row(["r" * row_size])[5:]
                    count += 1
                elif m.type == "Z":
                    break
            assert count == rows


def test_client_gone_mid_result_closes_upstream(relay_factory):
    """The client disappears while the server streams a large result: the relay closes the
    upstream connection too (a real server's backend would otherwise run on)."""
    progress = {"sent": 0}
    with wire.FakeServer(big_result_server(8192, 8192, progress)) as server:
        relay = relay_factory(upstream=server.address, extra_args=LONG_TIMEOUTS)
        with raw_login(relay, "vanishing-reader") as conn:
            conn.send(wire.query("SELECT payload"))
            assert conn.recv_message(WAIT).type == "T"
        fc = wire.session_conn(server, "vanishing-reader")
        assert fc.closed.wait(WAIT), "upstream connection still open after the client left"
        assert not progress.get("done")


# ---- reload and limits, continued ---------------------------------------------------------------

def wait_for_reload(relay, count_before):
    """Wait for one more `event=reload` info line than count_before (bounded)."""
    def reloads():
        return [d for d in relay.log_lines() if d.get("event") == "reload"
                and d.get("level") == "info"]
    assert wire.wait_until(lambda: len(reloads()) > count_before, WAIT), \
        "no reload logged\n" + relay.log_tail()


def reload_count(relay):
    return len([d for d in relay.log_lines() if d.get("event") == "reload"
                and d.get("level") == "info"])


def test_sighup_new_timeouts_apply_to_new_sessions_only(relay_factory, fake):
    """A reloaded timeouts.message governs sessions that start after the reload; a session
    that started before keeps the snapshot it started with (config.h)."""
    relay = relay_factory(upstream=fake.address,
                          config_text="timeouts:\n  message: 300s\n  startup: 300s\n")
    with raw_login(relay, "before-timeout-reload") as old:
        before = reload_count(relay)
        with open(relay.config_path, "w") as f:
            f.write("timeouts:\n  message: 1s\n  startup: 300s\n")
        relay.signal(signal.SIGHUP)
        wait_for_reload(relay, before)
        query = wire.query("SELECT 'sent in two halves'")
        first, second = query[:12], query[12:]
        with raw_login(relay, "after-timeout-reload") as new:
            old.send(first)
            new.send(first)
            # 1 s now applies to the new session (the old 300 s would outlast our bound).
            expect_protocol_violation(new)
        # The old session is still waiting for the rest of its message under its 300 s.
        with pytest.raises(socket.timeout):
            old.recv_message(2.0)
        old.send(second)
        rows = [m.data_row() for m in old.recv_until("Z", WAIT) if m.type == "D"]
        assert rows == [["SELECT 'sent in two halves'"]]


def test_sighup_flags_still_override_the_file(relay_factory, fake):
    """Flags are re-applied over the file on every reload: with --log-level info on the
    command line, a file that says debug changes nothing."""
    relay = relay_factory(upstream=fake.address, config_text="log_level: info\n",
                          extra_args=["--log-level", "info"])
    before = reload_count(relay)
    with open(relay.config_path, "w") as f:
        f.write("log_level: debug\n")
    relay.signal(signal.SIGHUP)
    wait_for_reload(relay, before)
    with raw_login(relay, "flag-wins") as conn:
        conn.query("SELECT 1")
    relay.wait_for_log(lambda d: d.get("event") == "session_start"
                       and d.get("application_name") == "flag-wins", WAIT)
    assert [d for d in relay.log_lines() if d.get("level") == "debug"] == []


def test_max_connections_refuses_with_53300_and_recovers(relay_factory, fake):
    relay = relay_factory(upstream=fake.address, extra_args=["--max-connections", "2"])
    with raw_login(relay, "slot-1") as one, raw_login(relay, "slot-2") as two:
        with wire.Conn(relay.host, relay.port, timeout=WAIT) as third:
            msgs = third.login("pgw", None, "pgw", params={"application_name": "slot-3"})
            assert [m.type for m in msgs] == ["E"], msgs
            fields = msgs[0].error_fields()
            assert fields.get("C") == "53300" and fields.get("S") == "FATAL", fields
            more, rest = third.read_to_close(WAIT)
            assert more == [] and rest == b""
        assert wire.session_conn(fake, "slot-3", timeout=0.5) is None, \
            "a refused session reached the upstream"
        assert one.query_values("SELECT 1") == [["SELECT 1"]]
        two.send(wire.terminate())
        two.read_to_close(WAIT)

        # The freed slot is usable again (the relay may take a moment to count the close).
        def fourth_logs_in():
            with wire.Conn(relay.host, relay.port, timeout=WAIT) as c:
                return c.login("pgw", None, "pgw")[-1].type == "Z"
        assert wire.wait_until(fourth_logs_in, WAIT, interval=0.2)


def test_sigterm_closes_sessions_still_logging_in(relay_factory, pg):
    """SIGTERM while one client has sent half a startup packet and another stopped in the
    middle of SCRAM: after timeouts.drain both are closed and the process exits."""
    relay = relay_factory(upstream=(pg.host, pg.port),
                          extra_args=["--timeouts-drain", "1s", "--timeouts-startup", "300s"])
    startup = wire.startup_message({"user": pg.user, "database": pg.dbname})
    with wire.Conn(relay.host, relay.port, timeout=WAIT) as half, \
            wire.Conn(relay.host, relay.port, timeout=WAIT) as mid_auth:
        half.send(startup[:10])
        mid_auth.send(startup)
        m = mid_auth.recv_message(WAIT)
        assert m.type == "R" and m.auth_code() == wire.AUTH_SASL, m
        relay.signal(signal.SIGTERM)
        for conn in (half, mid_auth):
            msgs, rest = conn.read_to_close(WAIT)
            assert rest == b""
            assert all(m.type == "E" and m.error_fields()["S"] == "FATAL" for m in msgs), msgs
    relay.proc.wait(WAIT)
    assert relay.proc.returncode == 0, relay.log_tail()


# ---- ends the server or the operator chooses ------------------------------------------------------

def active_sessions(pg, application_name):
    return int(pg.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = '%s'"
                       % application_name).strip())


def test_drain_timeout_ends_server_sessions_too(relay_factory, pg):
    """A session in an open transaction outlives --timeouts-drain: the client gets FATAL
    57P01, and its server backend goes away as well (its transaction rolled back, its
    locks released), so no orphan is left behind the exited relay."""
    relay = relay_factory(upstream=(pg.host, pg.port), extra_args=["--timeouts-drain", "1s"])
    pg.psql("CREATE TABLE IF NOT EXISTS pgw_drain_probe (v int)")
    try:
        with raw_login(relay, "drain-in-txn") as conn:
            conn.query_values("BEGIN")
            conn.query_values("LOCK TABLE pgw_drain_probe IN ACCESS EXCLUSIVE MODE")
            relay.signal(signal.SIGTERM)
            msgs, rest = conn.read_to_close(WAIT)
            assert rest == b"" and [m.type for m in msgs] == ["E"], msgs
            assert msgs[0].error_fields()["C"] == "57P01", msgs[0].error_fields()
        relay.proc.wait(WAIT)
        assert wire.wait_until(lambda: active_sessions(pg, "drain-in-txn") == 0, WAIT), \
            "the server still runs the drained session's backend"
        # The lock is gone with it: a direct session can take it at once.
        pg.psql("SET lock_timeout = '5s'; LOCK TABLE pgw_drain_probe IN ACCESS EXCLUSIVE MODE")
    finally:
        pg.psql("DROP TABLE IF EXISTS pgw_drain_probe")


def test_drain_never_splices_fatal_into_a_message(relay_factory):
    """The server has sent half a DataRow and stalls when the drain timeout expires: the
    relay cannot put an ErrorResponse inside that message, so the client sees a clean
    prefix of the real message and then the close, never other bytes spliced in."""
    row = wire.data_row(["z" * 200])

    def stall_mid_row(fc):
        fc.read_startup()
        wire.login_ok(fc)
        fc.read_message()
        fc.send(wire.row_description(["z"]) + row[:50])
        fc.drain_until_close(120)

    with wire.FakeServer(stall_mid_row) as server:
        relay = relay_factory(upstream=server.address, extra_args=["--timeouts-drain", "1s"])
        with raw_login(relay, "drain-mid-row") as conn:
            conn.send(wire.query("SELECT z"))
            assert conn.recv_message(WAIT).type == "T"
            relay.signal(signal.SIGTERM)
            msgs, rest = conn.read_to_close(WAIT)
        # Whatever arrived after the RowDescription must be a prefix of the real DataRow.
        received = b"".join(m.raw for m in msgs) + rest
        assert row.startswith(received), "bytes spliced into a message: %s" % wire.short(received)
        relay.proc.wait(WAIT)


def test_server_fatal_reaches_client_unchanged(relay_factory, pg):
    """The server ends a session (pg_terminate_backend): its FATAL 57P01 reaches the
    client byte for byte as it does on a direct connection, then the connection closes."""
    relay = relay_factory(upstream=(pg.host, pg.port))
    seen = {}
    for label, endpoint in (("direct", pg), ("relay", relay)):
        name = "terminated-%s" % label
        with raw_login(endpoint, name) as conn:
            (pid,) = conn.query_values("SELECT pg_backend_pid()")[0]
            pg.psql("SELECT pg_terminate_backend(%s)" % pid)
            msgs, rest = conn.read_to_close(WAIT)
            assert rest == b""
            seen[label] = [m.raw for m in msgs]
    assert seen["direct"] and seen["relay"] == seen["direct"], seen


def test_message_trickling_slower_than_the_timeout_is_cut(relay_factory, fake):
    """timeouts.message bounds a whole message, not the gap between bytes: a client that
    trickles one Query byte every 10 ms (about 5 s in all, against 1 s) is cut off."""
    relay = relay_factory(upstream=fake.address,
                          extra_args=["--timeouts-message", "1s", "--timeouts-startup", "300s"])
    with raw_login(relay, "trickle") as conn:
        query = wire.query("SELECT '" + "t" * 480 + "'")
        for i in range(len(query)):
            if not conn.try_send(query[i:i + 1]):
                break
            threading.Event().wait(0.01)
        first = conn.recv_message(WAIT)
        assert first.type == "E", \
            "a Query that took about 5 s to arrive was accepted (timeouts.message 1 s): %r" % first
        fields = first.error_fields()
        assert fields.get("C") == "08P01" and fields.get("S") == "FATAL", fields
        assert conn.read_to_close(WAIT) == ([], b"")
    # A message no stage inspects may stream to the server as it arrives, so the server may
    # hold a prefix; it must never get the whole Query (it would run it), and its
    # connection is closed with the session.
    fc = wire.session_conn(fake, "trickle")
    assert fc.closed.wait(WAIT)
    msgs, _ = wire.frontend_messages_after_startup(fc)
    assert "Q" not in [m.type for m in msgs], msgs
