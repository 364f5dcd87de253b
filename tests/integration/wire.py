"""wire: a small raw PostgreSQL frontend/backend protocol toolkit for the integration tests.

Real clients (libpq, psycopg) refuse to send malformed bytes and hide the exact bytes a
server answered with, which is precisely what protocol edge-case tests need to control and
to see. This module builds and parses messages by hand:

  * builders for frontend messages (startup family, Query, Parse/Bind/..., Terminate) and
    for backend messages (what a scripted fake server sends);
  * Conn, a raw client socket with a framing reader, and login() that runs a whole startup
    including a SCRAM-SHA-256 exchange (RFC 5802 / RFC 7677), so a raw-socket test can log
    in to a real server through the relay;
  * FakeServer, a threaded server on 127.0.0.1:0 that records every byte it receives and
    runs a scripted handler per connection, to play upstream faults and check what the
    relay forwarded (or must not have forwarded).

Layouts follow PostgreSQL's protocol documentation (protocol-message-formats.html): a
regular message is type byte + int32 length (counting itself) + body; the startup family
has no type byte.

Every blocking call takes a timeout: a misbehaving relay makes a test fail, never hang.
"""

import base64
import hashlib
import hmac
import os
import select
import socket
import struct
import threading
import time

DEFAULT_TIMEOUT = 20.0
# A fake server waits longer than any test does, so that a scenario never passes because the
# fake gave up first (closing a connection the relay should have closed).
FAKE_TIMEOUT = 120.0

# Startup-family codes (int32 after the length).
CANCEL_REQUEST_CODE = (1234 << 16) | 5678
SSL_REQUEST_CODE = (1234 << 16) | 5679
GSSENC_REQUEST_CODE = (1234 << 16) | 5680

# Authentication request codes (int32 after 'R').
AUTH_OK = 0
AUTH_CLEARTEXT = 3
AUTH_MD5 = 5
AUTH_SASL = 10
AUTH_SASL_CONTINUE = 11
AUTH_SASL_FINAL = 12

# ErrorResponse / NoticeResponse field codes, by the names psycopg's Diagnostic uses.
ERROR_FIELD_NAMES = {
    "S": "severity",
    "V": "severity_nonlocalized",
    "C": "sqlstate",
    "M": "message_primary",
    "D": "message_detail",
    "H": "message_hint",
    "P": "statement_position",
    "p": "internal_position",
    "q": "internal_query",
    "W": "context",
    "s": "schema_name",
    "t": "table_name",
    "c": "column_name",
    "d": "datatype_name",
    "n": "constraint_name",
    "F": "source_file",
    "L": "source_line",
    "R": "source_function",
}


def version(major, minor):
    return (major << 16) | minor


# ---- framing helpers -------------------------------------------------------------------

def cstr(s):
    """A NUL-terminated protocol string."""
    if isinstance(s, str):
        s = s.encode()
    return s + b"\0"


def msg(type_byte, body=b""):
    """A regular message: type byte, int32 length (counting itself), body."""
    if isinstance(type_byte, str):
        type_byte = type_byte.encode()
    return type_byte + struct.pack("!I", len(body) + 4) + body


def header(type_byte, length):
    """Only the 5-byte header of a regular message, with an arbitrary (even lying) length."""
    if isinstance(type_byte, str):
        type_byte = type_byte.encode()
    return type_byte + struct.pack("!I", length & 0xFFFFFFFF)


# ---- frontend messages -------------------------------------------------------------------

def startup_message(params, proto=version(3, 0)):
    """StartupMessage: int32 length, int32 protocol version, name/value pairs, final NUL.
    params keeps its order; values are sent exactly as given."""
    body = struct.pack("!I", proto)
    for name, value in params.items():
        body += cstr(name) + cstr(value)
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def ssl_request():
    return struct.pack("!II", 8, SSL_REQUEST_CODE)


def gssenc_request():
    return struct.pack("!II", 8, GSSENC_REQUEST_CODE)


def cancel_request(pid, key):
    """CancelRequest; key is an int (4-byte protocol 3.0 key) or raw bytes (3.2 keys)."""
    if isinstance(key, int):
        key = struct.pack("!I", key)
    body = struct.pack("!II", CANCEL_REQUEST_CODE, pid) + key
    return struct.pack("!I", len(body) + 4) + body


def query(sql):
    return msg("Q", cstr(sql))


def terminate():
    return msg("X")


def sync():
    return msg("S")


def flush():
    return msg("H")


def parse(sql, name="", param_types=()):
    body = cstr(name) + cstr(sql) + struct.pack("!H", len(param_types))
    for oid in param_types:
        body += struct.pack("!I", oid)
    return msg("P", body)


def bind(params=(), portal="", statement="", result_formats=()):
    """Bind with text-format parameters; None is SQL NULL."""
    body = cstr(portal) + cstr(statement) + struct.pack("!H", 0)
    body += struct.pack("!H", len(params))
    for value in params:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            data = value.encode() if isinstance(value, str) else value
            body += struct.pack("!i", len(data)) + data
    body += struct.pack("!H", len(result_formats))
    for fmt in result_formats:
        body += struct.pack("!H", fmt)
    return msg("B", body)


def describe_portal(portal=""):
    return msg("D", b"P" + cstr(portal))


def execute(portal="", max_rows=0):
    return msg("E", cstr(portal) + struct.pack("!I", max_rows))


def password_message(password):
    return msg("p", cstr(password))


def sasl_initial_response(mechanism, data):
    return msg("p", cstr(mechanism) + struct.pack("!i", len(data)) + data)


def sasl_response(data):
    return msg("p", data)


# ---- backend messages (for fake servers) -------------------------------------------------

def auth_request(code, extra=b""):
    return msg("R", struct.pack("!I", code) + extra)


def auth_ok():
    return auth_request(AUTH_OK)


def parameter_status(name, value):
    return msg("S", cstr(name) + cstr(value))


def backend_key_data(pid, key):
    if isinstance(key, int):
        key = struct.pack("!I", key)
    return msg("K", struct.pack("!I", pid) + key)


def ready_for_query(status=b"I"):
    return msg("Z", status)


def command_complete(tag):
    return msg("C", cstr(tag))


def empty_query_response():
    return msg("I")


def row_description(names, type_oid=25):
    """RowDescription of text columns with no table origin."""
    body = struct.pack("!H", len(names))
    for name in names:
        body += cstr(name) + struct.pack("!IhIhih", 0, 0, type_oid, -1, -1, 0)
    return msg("T", body)


def data_row(values):
    body = struct.pack("!H", len(values))
    for value in values:
        if value is None:
            body += struct.pack("!i", -1)
        else:
            data = value.encode() if isinstance(value, str) else value
            body += struct.pack("!i", len(data)) + data
    return msg("D", body)


def error_response(sqlstate, message, severity="ERROR", **fields):
    """ErrorResponse with S, V, C, M and any extra fields given by code (D="...")."""
    body = b"S" + cstr(severity) + b"V" + cstr(severity) + b"C" + cstr(sqlstate)
    body += b"M" + cstr(message)
    for code, value in fields.items():
        body += code.encode() + cstr(value)
    return msg("E", body + b"\0")


def negotiate_protocol_version(minor, unrecognised=()):
    body = struct.pack("!II", minor, len(unrecognised))
    for name in unrecognised:
        body += cstr(name)
    return msg("v", body)


# Parameters a real server reports at login; psycopg needs client_encoding at least.
STANDARD_PARAMETERS = (
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO, MDY"),
    ("integer_datetimes", "on"),
    ("IntervalStyle", "postgres"),
    ("is_superuser", "on"),
    ("server_encoding", "UTF8"),
    ("server_version", "15.0 (pgwarden fake)"),
    ("session_authorization", "fake"),
    ("standard_conforming_strings", "on"),
    ("TimeZone", "UTC"),
)


# ---- parsing -------------------------------------------------------------------------------

class Message:
    """One backend (or frontend) message as received: type (str of one char), body, raw."""

    __slots__ = ("type", "body", "raw")

    def __init__(self, type_char, body):
        self.type = type_char
        self.body = body
        self.raw = type_char.encode("latin-1") + struct.pack("!I", len(body) + 4) + body

    def __repr__(self):
        return "Message(%r, %s)" % (self.type, short(self.body, 60))

    # Typed views, each checking the layout it relies on.
    def error_fields(self):
        assert self.type in ("E", "N"), self
        return parse_error_fields(self.body)

    def auth_code(self):
        assert self.type == "R" and len(self.body) >= 4, self
        return struct.unpack("!I", self.body[:4])[0]

    def backend_key(self):
        """(pid, key bytes)."""
        assert self.type == "K" and len(self.body) >= 8, self
        return struct.unpack("!I", self.body[:4])[0], self.body[4:]

    def parameter(self):
        assert self.type == "S", self
        name, value, rest = self.body.split(b"\0", 2)
        assert rest == b"", self
        return name.decode(), value.decode()

    def data_row(self):
        assert self.type == "D", self
        (ncols,) = struct.unpack("!H", self.body[:2])
        off, values = 2, []
        for _ in range(ncols):
            (n,) = struct.unpack("!i", self.body[off:off + 4])
            off += 4
            if n < 0:
                values.append(None)
            else:
                values.append(self.body[off:off + n].decode())
                off += n
        assert off == len(self.body), "DataRow contents do not agree with its length"
        return values


def parse_error_fields(body):
    """ErrorResponse/NoticeResponse body → {field code: text}, checking the terminator."""
    fields = {}
    off = 0
    while True:
        assert off < len(body), "error fields not terminated"
        code = body[off:off + 1]
        off += 1
        if code == b"\0":
            assert off == len(body), "bytes after the error fields terminator"
            return fields
        end = body.index(b"\0", off)
        fields[code.decode()] = body[off:end].decode()
        off = end + 1


def short(data, limit=120):
    """repr of bytes cut to a readable length, for assertion messages."""
    if len(data) <= limit:
        return repr(data)
    return "%r... (%d bytes)" % (data[:limit], len(data))


def split_messages(data):
    """Frame as many whole regular messages as data holds → (list of Message, rest)."""
    out = []
    off = 0
    while len(data) - off >= 5:
        (length,) = struct.unpack("!I", data[off + 1:off + 5])
        if length < 4:
            raise ProtocolError("message length %d below 4" % length)
        if len(data) - off < 1 + length:
            break
        out.append(Message(chr(data[off]), bytes(data[off + 5:off + 1 + length])))
        off += 1 + length
    return out, data[off:]


def parse_startup_packet(packet):
    """A whole startup-family packet (length included) → dict describing it."""
    (length, code) = struct.unpack("!II", packet[:8])
    assert length == len(packet)
    if code == CANCEL_REQUEST_CODE:
        (pid,) = struct.unpack("!I", packet[8:12])
        return {"kind": "cancel", "code": code, "pid": pid, "key": packet[12:]}
    if code == SSL_REQUEST_CODE:
        return {"kind": "ssl", "code": code}
    if code == GSSENC_REQUEST_CODE:
        return {"kind": "gssenc", "code": code}
    parts = packet[8:].split(b"\0")
    # Pairs followed by the final empty terminator (and the split's trailing empty part).
    params = {}
    names = parts[:-2]
    for i in range(0, len(names) - 1, 2):
        params[names[i].decode()] = names[i + 1].decode()
    return {"kind": "startup", "code": code, "params": params}


class ProtocolError(Exception):
    pass


class ConnectionClosed(Exception):
    """The peer closed the connection (or reset it) while we were waiting for bytes."""


# ---- SCRAM-SHA-256 client ------------------------------------------------------------------

class ScramClient:
    """Client side of SCRAM-SHA-256 without channel binding (RFC 5802, RFC 7677), as
    PostgreSQL speaks it: the user name inside SCRAM is empty (the server uses the startup
    packet's), gs2 header "n,,"."""

    MECHANISM = "SCRAM-SHA-256"

    def __init__(self, password, nonce=None):
        self.password = password.encode()
        self.client_nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.client_first_bare = "n=,r=" + self.client_nonce
        self.server_signature = None

    def client_first(self):
        return ("n,," + self.client_first_bare).encode()

    def client_final(self, server_first):
        server_first = server_first.decode()
        attrs = dict(item.split("=", 1) for item in server_first.split(","))
        nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
        if not nonce.startswith(self.client_nonce):
            raise ProtocolError("server nonce does not extend the client nonce")
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = "c=biws,r=" + nonce  # biws = base64("n,,")
        auth_message = ",".join((self.client_first_bare, server_first, without_proof)).encode()
        signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
        self.server_signature = hmac.new(server_key, auth_message, hashlib.sha256).digest()
        return (without_proof + ",p=" + base64.b64encode(proof).decode()).encode()

    def verify_server_final(self, server_final):
        attrs = dict(item.split("=", 1) for item in server_final.decode().split(","))
        if "e" in attrs:
            raise ProtocolError("SCRAM server error: " + attrs["e"])
        if base64.b64decode(attrs["v"]) != self.server_signature:
            raise ProtocolError("SCRAM server signature mismatch")


# ---- raw client connection -----------------------------------------------------------------

class Conn:
    """A raw client connection: send bytes, read framed backend messages with timeouts.

    bytewise=True sends every byte in its own send() with TCP_NODELAY and a short pause, so
    the peer almost always sees each byte in a separate read(): a peer that decides at a
    read() boundary instead of a message boundary shows up (STYLE.md rule 3). Unlike a
    forwarding middlebox this keeps whatever the peer answered before it closed (our own
    receive queue survives the RST its close may cause), so the answer can be checked."""

    BYTEWISE_PAUSE = 0.002

    def __init__(self, host, port, timeout=DEFAULT_TIMEOUT, bytewise=False):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.bytewise = bytewise
        self.buf = b""
        self.eof = False
        self.timeout = timeout
        # Filled by login().
        self.backend_pid = None
        self.backend_key = None
        self.parameters = {}
        self.login_messages = []

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data):
        if not self.bytewise:
            self.sock.sendall(data)
            return
        for i in range(len(data)):
            # A peer that has closed (say, after a protocol violation) stops the stream; what
            # it said before closing is still ours to read.
            if not self.try_send(data[i:i + 1]):
                return
            time.sleep(self.BYTEWISE_PAUSE)

    def try_send(self, data):
        """Send what the peer lets us send; False once it has closed or reset."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self, timeout):
        """Read more bytes into the buffer; raises socket.timeout or ConnectionClosed."""
        if self.eof:
            raise ConnectionClosed("connection closed by peer")
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed("connection closed by peer")
        self.buf += chunk

    def recv_bytes(self, n, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while len(self.buf) < n:
            self._fill(max(0.01, deadline - time.monotonic()))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_message(self, timeout=None):
        """Next whole regular message; raises socket.timeout or ConnectionClosed."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            msgs, rest = split_messages(self.buf)
            if msgs:
                first = msgs[0]
                self.buf = self.buf[len(first.raw):]
                return first
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("no whole message within the timeout")
            self._fill(remaining)

    def recv_until(self, types, timeout=None):
        """Messages up to and including the first whose type is in types."""
        deadline = time.monotonic() + (timeout or self.timeout)
        out = []
        while True:
            m = self.recv_message(max(0.01, deadline - time.monotonic()))
            out.append(m)
            if m.type in types:
                return out

    def read_to_close(self, timeout=None):
        """Every message until the peer closes → (messages, trailing partial bytes).
        Raises socket.timeout if the peer keeps the connection open past the timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("peer did not close the connection within the timeout")
            try:
                self._fill(remaining)
            except ConnectionClosed:
                break
        msgs, rest = split_messages(self.buf)
        self.buf = b""
        return msgs, rest

    def query(self, sql, timeout=None):
        """Simple query → every message up to ReadyForQuery."""
        self.send(query(sql))
        return self.recv_until("Z", timeout)

    def query_values(self, sql, timeout=None):
        """Simple query → rows (lists of text values); raises on an ErrorResponse."""
        rows = []
        for m in self.query(sql, timeout):
            if m.type == "E":
                raise ProtocolError("query failed: %r" % m.error_fields())
            if m.type == "D":
                rows.append(m.data_row())
        return rows

    def login(self, user, password=None, database=None, params=None, proto=version(3, 0),
              timeout=None):
        """Run a whole startup. Returns the messages up to ReadyForQuery, or up to and
        including the first ErrorResponse (the caller decides whether that is a failure).
        Handles SCRAM-SHA-256, MD5 and cleartext password requests."""
        startup = {"user": user}
        if database is not None:
            startup["database"] = database
        startup.update(params or {})
        self.send(startup_message(startup, proto))
        return self.continue_login(user, password, timeout)

    def continue_login(self, user, password, timeout=None):
        """The part of login() after the StartupMessage was sent."""
        scram = None
        out = []
        while True:
            m = self.recv_message(timeout)
            out.append(m)
            if m.type == "E":
                break
            if m.type == "R":
                code = m.auth_code()
                if code == AUTH_SASL:
                    mechanisms = m.body[4:].split(b"\0")
                    if ScramClient.MECHANISM.encode() not in mechanisms:
                        raise ProtocolError("server offers no SCRAM-SHA-256: %r" % mechanisms)
                    scram = ScramClient(password or "")
                    self.send(sasl_initial_response(ScramClient.MECHANISM, scram.client_first()))
                elif code == AUTH_SASL_CONTINUE:
                    self.send(sasl_response(scram.client_final(m.body[4:])))
                elif code == AUTH_SASL_FINAL:
                    scram.verify_server_final(m.body[4:])
                elif code == AUTH_MD5:
                    salt = m.body[4:8]
                    inner = hashlib.md5((password + user).encode()).hexdigest().encode()
                    self.send(password_message("md5" + hashlib.md5(inner + salt).hexdigest()))
                elif code == AUTH_CLEARTEXT:
                    self.send(password_message(password or ""))
                elif code != AUTH_OK:
                    raise ProtocolError("unsupported authentication request %d" % code)
            elif m.type == "K":
                self.backend_pid, self.backend_key = m.backend_key()
            elif m.type == "S":
                name, value = m.parameter()
                self.parameters[name] = value
            elif m.type == "Z":
                break
        self.login_messages = out
        return out


def first_error(messages):
    """The first ErrorResponse among messages, or None."""
    for m in messages:
        if m.type == "E":
            return m
    return None


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=0.05):
    """Poll predicate until it returns a truthy value (returned) or the timeout passes
    (returns the last falsy value). Never asserts on elapsed time itself."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


# ---- fake server -----------------------------------------------------------------------------

class FakeConn:
    """One connection accepted by a FakeServer, handed to the scenario handler.

    Every byte received is appended to .received (even bytes the handler never reads as a
    message), so a test can assert what reached the "server"."""

    def __init__(self, server, sock, peer):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.received = bytearray()
        self.buf = b""
        self.startup = None  # parsed startup packet (see parse_startup_packet)
        self.violation = None  # ProtocolError if the peer's bytes did not frame
        self.closed = threading.Event()
        self.eof = False
        self.lock = threading.Lock()

    def _fill(self, timeout):
        if self.eof:
            raise ConnectionClosed("client closed")
        if self.sock.fileno() < 0:  # FakeServer.stop() closed it under the handler
            raise ConnectionClosed("fake server stopped")
        try:
            r, _, _ = select.select([self.sock], [], [], timeout)
        except (ValueError, OSError):
            raise ConnectionClosed("fake server stopped")
        if not r:
            raise socket.timeout("fake server: nothing received")
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, OSError):
            chunk = b""
        if not chunk:
            self.eof = True
            raise ConnectionClosed("client closed")
        with self.lock:
            self.received.extend(chunk)
        self.buf += chunk

    def received_bytes(self):
        with self.lock:
            return bytes(self.received)

    def read_startup_packet(self, timeout=FAKE_TIMEOUT):
        """Next startup-family packet → dict (see parse_startup_packet)."""
        deadline = time.monotonic() + timeout
        while len(self.buf) < 8:
            self._fill(max(0.01, deadline - time.monotonic()))
        (length,) = struct.unpack("!I", self.buf[:4])
        if length < 8 or length > 10000:
            raise ProtocolError("fake server: startup length %d" % length)
        while len(self.buf) < length:
            self._fill(max(0.01, deadline - time.monotonic()))
        packet, self.buf = self.buf[:length], self.buf[length:]
        return parse_startup_packet(packet)

    def read_startup(self, timeout=FAKE_TIMEOUT):
        """Read startup packets, answering SSL/GSSENC requests with 'N' as a server without
        TLS/GSS does, until a StartupMessage or CancelRequest arrives; records and returns it."""
        while True:
            pkt = self.read_startup_packet(timeout)
            if pkt["kind"] in ("ssl", "gssenc"):
                self.send(b"N")
                continue
            self.startup = pkt
            return pkt

    def read_message(self, timeout=FAKE_TIMEOUT):
        deadline = time.monotonic() + timeout
        while True:
            msgs, _ = split_messages(self.buf)
            if msgs:
                self.buf = self.buf[len(msgs[0].raw):]
                return msgs[0]
            self._fill(max(0.01, deadline - time.monotonic()))

    def drain_until_close(self, timeout=DEFAULT_TIMEOUT):
        """Keep recording whatever arrives until the peer closes or the timeout passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self._fill(max(0.01, deadline - time.monotonic()))
            except (ConnectionClosed, socket.timeout):
                return

    def send(self, data):
        self.sock.sendall(data)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def login_ok(fc, pid=4242, key=0xDEADBEEF, parameters=STANDARD_PARAMETERS):
    """Answer a StartupMessage as a trusting server does: AuthenticationOk, the usual
    ParameterStatus set, BackendKeyData(pid, key), ReadyForQuery."""
    out = auth_ok()
    for name, value in parameters:
        out += parameter_status(name, value)
    out += backend_key_data(pid, key) + ready_for_query()
    fc.send(out)


ECHO_LIMIT = 200


def serve_queries(fc, timeout=FAKE_TIMEOUT):
    """A tiny query engine for a logged-in FakeConn, enough for psycopg and raw tests:
    every simple Query answers one text row holding the query text (its first ECHO_LIMIT
    bytes); the extended protocol
    answers ParseComplete/BindComplete/NoData/an empty CommandComplete; Terminate ends."""
    while True:
        try:
            m = fc.read_message(timeout)
        except (ConnectionClosed, socket.timeout):
            return
        if m.type == "X":
            fc.drain_until_close(2.0)
            return
        if m.type == "Q":
            sql = m.body[:-1]
            if sql.strip() == b"":
                fc.send(empty_query_response() + ready_for_query())
            else:
                # Echo at most ECHO_LIMIT bytes, so a huge query gets a small answer.
                fc.send(row_description(["echo"]) + data_row([sql[:ECHO_LIMIT]]) +
                        command_complete("SELECT 1") + ready_for_query())
        elif m.type == "P":
            fc.send(msg("1"))
        elif m.type == "B":
            fc.send(msg("2"))
        elif m.type == "D":
            fc.send(msg("n"))
        elif m.type == "E":
            fc.send(command_complete("SELECT 0"))
        elif m.type == "S":
            fc.send(ready_for_query())
        elif m.type == "H":
            pass
        else:
            fc.send(error_response("08P01", "fake server: unexpected message type %r" % m.type,
                                   severity="FATAL"))
            return


def default_handler(fc):
    """A well-behaved server: log in, then answer queries (see serve_queries)."""
    pkt = fc.read_startup()
    if pkt["kind"] == "cancel":
        return  # recorded; like PostgreSQL, close without a reply
    login_ok(fc)
    serve_queries(fc)


class FakeServer:
    """A scripted PostgreSQL server on 127.0.0.1:0.

    handler(fake_conn) runs in its own thread for each accepted connection; when it
    returns, the connection is closed. .conns lists every FakeConn in accept order, so a
    test can look at what each received, including CancelRequests (startup kind "cancel").
    """

    def __init__(self, handler=default_handler, backlog=64):
        self.handler = handler
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.host, self.port = self.listener.getsockname()
        self.conns = []
        self.errors = []
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = []
        self.accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.accept_thread.start()

    @property
    def address(self):
        return (self.host, self.port)

    def _accept_loop(self):
        while not self.stopping:
            r, _, _ = select.select([self.listener], [], [], 0.1)
            if not r or self.stopping:
                continue
            try:
                sock, peer = self.listener.accept()
            except OSError:
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            fc = FakeConn(self, sock, peer)
            with self.lock:
                self.conns.append(fc)
            t = threading.Thread(target=self._run, args=(fc,), daemon=True)
            self.threads.append(t)
            t.start()

    def _run(self, fc):
        try:
            self.handler(fc)
        except (ConnectionClosed, socket.timeout, OSError):
            pass
        except ProtocolError as exc:
            # The peer (the relay under test) sent bytes that do not frame: the test decides
            # what that means, from fc.violation and fc.received.
            fc.violation = exc
        except Exception as exc:  # a broken scenario must show up in the test, not vanish
            with self.lock:
                self.errors.append(exc)
        finally:
            fc.close()
            fc.closed.set()

    def connections(self, kind=None):
        """Accepted connections, optionally only those whose startup kind matches."""
        with self.lock:
            conns = list(self.conns)
        if kind is None:
            return conns
        return [c for c in conns if c.startup and c.startup["kind"] == kind]

    def wait_for_connections(self, n, kind=None, timeout=DEFAULT_TIMEOUT):
        return wait_until(lambda: len(self.connections(kind)) >= n, timeout)

    def all_received(self):
        return b"".join(c.received_bytes() for c in self.connections())

    def stop(self):
        self.stopping = True
        self.accept_thread.join(5)
        self.listener.close()
        for fc in self.connections():
            fc.close()
        for t in self.threads:
            t.join(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def free_port():
    """A loopback TCP port with nothing listening on it (bound, then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def process_rss_kb(pid):
    """Resident set size of a process in KiB, from /proc."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


class FullBacklogListener:
    """A loopback listener whose accept queue is full, so further SYNs are dropped and a
    connect() to it stays pending: the loopback-only way to make an upstream connect hang
    (dialling a non-routable address is not allowed on the test network).

    With listen(0) Linux queues one established connection; one filler fills it."""

    def __init__(self):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.host, self.port = self.listener.getsockname()
        self.fillers = []
        filler = socket.create_connection((self.host, self.port), timeout=DEFAULT_TIMEOUT)
        self.fillers.append(filler)
        # Prove the queue is full: one more connect must not complete.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.setblocking(False)
        probe.connect_ex((self.host, self.port))
        _, writable, _ = select.select([], [probe], [], 1.0)
        self.fillers.append(probe)
        if writable and probe.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            self.close()
            raise RuntimeError("accept queue did not fill: connects to it would complete")

    @property
    def address(self):
        return (self.host, self.port)

    def close(self):
        for s in self.fillers:
            s.close()
        self.listener.close()


def session_conn(fake, application_name, timeout=DEFAULT_TIMEOUT):
    """The FakeConn whose StartupMessage carried this application_name (None if absent
    within the timeout)."""
    def find():
        for fc in fake.connections("startup"):
            if fc.startup["params"].get("application_name") == application_name:
                return fc
        return None
    return wait_until(find, timeout)


def frontend_messages_after_startup(fc):
    """What a FakeConn received after its startup packet, framed as regular messages.
    Returns (messages, trailing bytes that are not a whole message)."""
    data = fc.received_bytes()
    off = 0
    # Skip SSL/GSSENC requests and the StartupMessage itself.
    while len(data) - off >= 8:
        (length, code) = struct.unpack("!II", data[off:off + 8])
        off += length
        if code not in (SSL_REQUEST_CODE, GSSENC_REQUEST_CODE):
            break
    return split_messages(data[off:])
