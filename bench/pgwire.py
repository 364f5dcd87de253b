"""pgwire: the smallest PostgreSQL client the streaming benchmark needs.

Why not psql or psycopg: the streaming section reports relay CPU per byte the *client
received on the wire*, and libpq does not expose that count. This client speaks protocol
3.0 over a plain TCP socket, logs in with SCRAM-SHA-256 (the only method the benchmark
cluster accepts), sends one simple Query, and counts every byte recv() returns until
ReadyForQuery, while skipping row contents without decoding them. For binary results it
sends the same statement through the extended protocol instead (Parse, Bind asking for
binary result columns, Describe, Execute, Sync), since a simple Query's results are text.

It is a measuring instrument, not a driver: no TLS, no parameters, no type handling. It
can keep a few row bodies (DataRow or CopyData) aside, so the benchmark can check what a
relay delivered, not only how much.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct

_HDR = struct.Struct("!cI")  # type byte + int32 length (includes itself, not the type)


class PgError(Exception):
    """The server (or a relay) answered with an ErrorResponse, or broke the protocol."""


def _msg(type_byte, body):
    return type_byte + struct.pack("!I", len(body) + 4) + body


def _error_text(body):
    """Severity, SQLSTATE and message from an ErrorResponse body, for a readable failure."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return "%s %s: %s" % (fields.get("S", "?"), fields.get("C", "?"), fields.get("M", "?"))


class Sample:
    """Row bodies (DataRow or CopyData) kept from one transfer: the first `first` of them in
    order, and from the rest, evenly spaced ones (the last of each receive buffer, thinned
    by half whenever more than 2 x `later` are kept), so the sample spans the whole result."""

    def __init__(self, first=200, later=200):
        self.first_limit, self.later_limit = first, later
        self.first, self.later = [], []
        self._count, self._stride = 0, 1

    def wants_first(self):
        return len(self.first) < self.first_limit

    def add(self, body, first):
        if first:
            self.first.append(body)
            return
        self._count += 1
        if self._count % self._stride:
            return
        self.later.append(body)
        if len(self.later) > 2 * self.later_limit:
            self.later = self.later[1::2]
            self._stride *= 2


class Conn:
    """One logged-in session. bytes_received counts every byte read from the socket."""

    RECV_SIZE = 1 << 18

    def __init__(self, host, port, user, database, password, timeout=120.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.bytes_received = 0
        self._pending = bytearray()
        self._buf = bytearray(self.RECV_SIZE)
        try:
            self._login(user, database, password)
        except BaseException:
            self.sock.close()
            raise

    # -- framing --------------------------------------------------------------------------

    def _fill(self):
        n = self.sock.recv_into(self._buf)
        if n == 0:
            raise PgError("connection closed by peer")
        self.bytes_received += n
        self._pending += memoryview(self._buf)[:n]

    def _read_msg(self):
        """One whole message (type, body). Used during login, where messages are few."""
        while True:
            if len(self._pending) >= 5:
                t, length = _HDR.unpack_from(self._pending, 0)
                if length < 4:
                    raise PgError("bad message length %d" % length)
                if len(self._pending) >= 1 + length:
                    body = bytes(self._pending[5:1 + length])
                    del self._pending[:1 + length]
                    return t, body
            self._fill()

    # -- login ----------------------------------------------------------------------------

    def _login(self, user, database, password):
        params = b"user\0" + user.encode() + b"\0database\0" + database.encode() + b"\0\0"
        body = struct.pack("!I", 196608) + params
        self.sock.sendall(struct.pack("!I", len(body) + 4) + body)
        scram = None
        while True:
            t, body = self._read_msg()
            if t == b"E":
                raise PgError("login failed: " + _error_text(body))
            if t == b"Z":
                return
            if t != b"R":
                continue  # ParameterStatus, BackendKeyData, NoticeResponse
            code = struct.unpack_from("!I", body)[0]
            if code == 0:
                continue
            if code == 10:
                mechanisms = body[4:].split(b"\0")
                if b"SCRAM-SHA-256" not in mechanisms:
                    raise PgError("server offers no SCRAM-SHA-256: %r" % mechanisms)
                scram = _Scram(password)
                first = scram.client_first()
                self.sock.sendall(_msg(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(first))
                                      + first))
            elif code == 11:
                self.sock.sendall(_msg(b"p", scram.client_final(body[4:])))
            elif code == 12:
                scram.verify_server_final(body[4:])
            else:
                raise PgError("unsupported authentication request %d" % code)

    # -- query ----------------------------------------------------------------------------

    def stream(self, sql, binary=False, sample=None):
        """Run one statement and discard its results; returns the bytes received for it.

        binary=False: a simple Query (results in text). binary=True: the extended protocol
        with every result column in binary format (Bind's result format code 1); the portal
        is described before it is executed, as drivers do. A COPY's format is its own
        option, so COPY statements go as a simple Query either way.

        Rows are skipped by length without being copied out, so the client stays cheap enough
        that the relay, not this loop, is what the measurement sees. sample, a Sample or
        None, is handed the bodies it asks for (the first rows, and the last one of each
        read), a few per receive buffer at most.
        """
        start = self.bytes_received
        body = sql.encode() + b"\0"
        if binary:
            self.sock.sendall(_msg(b"P", b"\0" + body + b"\0\0")  # unnamed, no param types
                              + _msg(b"B", b"\0\0" + struct.pack("!hhhh", 0, 0, 1, 1))
                              + _msg(b"D", b"P\0") + _msg(b"E", b"\0" + struct.pack("!i", 0))
                              + _msg(b"S", b""))
        else:
            self.sock.sendall(_msg(b"Q", body))
        error = None
        unpack = _HDR.unpack_from
        while True:
            pending = self._pending
            pos, end = 0, len(pending)
            done = False
            last_row = None
            while end - pos >= 5:
                t, length = unpack(pending, pos)
                if end - pos < 1 + length:
                    break
                if t == b"D" or t == b"d":
                    last_row = pos
                    if sample is not None and sample.wants_first():
                        sample.add(bytes(pending[pos + 5:pos + 1 + length]), first=True)
                elif t == b"E":
                    error = _error_text(bytes(pending[pos + 5:pos + 1 + length]))
                elif t == b"Z":
                    done = True
                pos += 1 + length
            if sample is not None and last_row is not None:
                length = unpack(pending, last_row)[1]
                sample.add(bytes(pending[last_row + 5:last_row + 1 + length]), first=False)
            del pending[:pos]
            if done:
                break
            self._fill()
        if error:
            raise PgError(error)
        return self.bytes_received - start

    def close(self):
        try:
            self.sock.sendall(_msg(b"X", b""))
        except OSError:
            pass
        self.sock.close()


class _Scram:
    """Client side of SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL uses it: no channel
    binding (gs2 header "n,,") and an empty user name (the startup packet carries it)."""

    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18))
        self.first_bare = b"n=,r=" + self.nonce

    def client_first(self):
        return b"n,," + self.first_bare

    def client_final(self, server_first):
        attrs = dict(kv.split(b"=", 1) for kv in server_first.split(b","))
        nonce, salt, iterations = attrs[b"r"], base64.b64decode(attrs[b"s"]), int(attrs[b"i"])
        if not nonce.startswith(self.nonce):
            raise PgError("SCRAM: server nonce does not extend ours")
        without_proof = b"c=biws,r=" + nonce
        salted = hashlib.pbkdf2_hmac("sha256", self.password, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored_key = hashlib.sha256(client_key).digest()
        self.auth_message = self.first_bare + b"," + server_first + b"," + without_proof
        signature = hmac.digest(stored_key, self.auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")
        return without_proof + b",p=" + base64.b64encode(proof)

    def verify_server_final(self, server_final):
        expected = base64.b64encode(hmac.digest(self.server_key, self.auth_message, "sha256"))
        if server_final.strip() != b"v=" + expected:
            raise PgError("SCRAM: server signature does not verify")
