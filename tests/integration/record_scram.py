#!/usr/bin/python3
"""Record SCRAM-SHA-256 vectors from a real PostgreSQL 15 and a real libpq client, for
tests/unit/test_auth_scram.c (tests/unit/data/auth/pg15_vectors.txt).

For each password below it starts (once) a throwaway cluster with the integration harness,
creates a role with that password under password_encryption = scram-sha-256, reads the
verifier PostgreSQL stored (pg_authid.rolpassword), then runs psql through a recording
forwarder on loopback and keeps the four SCRAM messages libpq and the server exchanged.

    sudo /usr/bin/python3 tests/integration/record_scram.py > tests/unit/data/auth/pg15_vectors.txt

Run it again only to refresh the vectors; the unit test checks whatever the file holds.
"""

import os
import socket
import struct
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

PASSWORDS = [
    "correct horse battery staple",
    "p\u00e4ssw\u00f6rd \u2168 with SASLprep",  # non-ASCII: NFKC turns U+2168 into "IX"
    "sh0rt,=\"quote\\",
]


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


class Recorder:
    """Forward one client connection to the server, message by message, keeping the SASL
    payloads: the client's SASLInitialResponse and SASLResponse, the server's
    AuthenticationSASLContinue and AuthenticationSASLFinal."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(1)
        self.port = self.lsock.getsockname()[1]
        self.msgs = {}
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        c, _ = self.lsock.accept()
        s = socket.create_connection(self.upstream)
        try:
            # Startup packet (no type byte).
            n = struct.unpack("!I", recv_exact(c, 4))[0]
            s.sendall(struct.pack("!I", n) + recv_exact(c, n - 4))
            done = False
            while not done:
                # Server messages until it waits for the client (an 'R' asking for more).
                while True:
                    t = recv_exact(s, 1)
                    n = struct.unpack("!I", recv_exact(s, 4))[0]
                    body = recv_exact(s, n - 4)
                    c.sendall(t + struct.pack("!I", n) + body)
                    if t == b"R":
                        code = struct.unpack("!I", body[:4])[0]
                        if code == 11:
                            self.msgs["server_first"] = body[4:]
                        elif code == 12:
                            self.msgs["server_final"] = body[4:]
                        elif code == 0:
                            done = True
                            break
                        if code == 10 or code == 11:
                            break
                    if t == b"E":
                        done = True
                        break
                if done:
                    break
                t = recv_exact(c, 1)
                n = struct.unpack("!I", recv_exact(c, 4))[0]
                body = recv_exact(c, n - 4)
                s.sendall(t + struct.pack("!I", n) + body)
                if "client_first" not in self.msgs:
                    mech_end = body.index(b"\0")
                    ln = struct.unpack("!i", body[mech_end + 1:mech_end + 5])[0]
                    self.msgs["client_first"] = body[mech_end + 5:mech_end + 5 + ln]
                else:
                    self.msgs["client_final"] = body
            # Let the session finish through a plain pipe.
            self.pipe(c, s)
        finally:
            c.close()
            s.close()
            self.lsock.close()

    @staticmethod
    def pipe(a, b):
        def one(x, y):
            try:
                while True:
                    d = x.recv(65536)
                    if not d:
                        break
                    y.sendall(d)
            except OSError:
                pass
            try:
                y.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        t = threading.Thread(target=one, args=(b, a), daemon=True)
        t.start()
        one(a, b)
        t.join(10)


def quote(b):
    out = []
    for ch in b:
        if ch in (0x22, 0x5C):
            out.append("\\" + chr(ch))
        elif 0x20 <= ch < 0x7F:
            out.append(chr(ch))
        else:
            out.append("\\x%02x" % ch)
    return '"' + "".join(out) + '"'


def main():
    pg = harness.PgCluster()
    pg.start()
    try:
        print("# SCRAM-SHA-256 vectors recorded from PostgreSQL %s and libpq (psql), by"
              % pg.psql("SHOW server_version").strip())
        print("# tests/integration/record_scram.py. Per vector: the password, the verifier the")
        print("# server stored, and the four messages of one real exchange. Do not edit by hand.")
        for i, pw in enumerate(PASSWORDS):
            role = "pgw_vector%d" % i
            lit = pw.replace("'", "''")
            pg._admin_psql("CREATE ROLE %s LOGIN PASSWORD '%s'" % (role, lit))
            verifier = pg._admin_psql(
                "SELECT rolpassword FROM pg_authid WHERE rolname = '%s'" % role).strip()
            rec = Recorder(("127.0.0.1", pg.port))
            env = dict(os.environ, PGPASSWORD=pw, PGSSLMODE="disable",
                       PGCHANNELBINDING="disable")
            subprocess.run([os.path.join(pg.bindir, "psql"), "-X", "-q", "-A", "-t",
                            "-h", "127.0.0.1", "-p", str(rec.port), "-U", role, "-d", "pgw",
                            "-c", "SELECT 1"], env=env, check=True, capture_output=True,
                           timeout=60)
            rec.thread.join(30)
            m = rec.msgs
            print()
            print("password | %s" % quote(pw.encode()))
            print("verifier | %s" % quote(verifier.encode()))
            for k in ("client_first", "server_first", "client_final", "server_final"):
                print("%s | %s" % (k, quote(m[k])))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
