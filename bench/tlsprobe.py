#!/usr/bin/python3
"""tlsprobe: a TLS-terminating relay's handshake rate, without a login behind it.

    tlsprobe.py HOST PORT SECONDS THREADS

Each of THREADS threads loops for SECONDS: socket(), connect(), PostgreSQL's SSLRequest,
the relay's one-byte answer (must be `S`), a full TLS handshake (no session resumption:
every handshake is new, as for pgbench -C), then a reset close (SO_LINGER 0: no TIME_WAIT,
so the probe never holds the ephemeral ports other users of the machine need). No
StartupMessage follows, so neither relay reaches the server: pgbench -C over TLS measures
a handshake plus a server login, and PgBouncer keeps its server connections between
client sessions while pgwardend logs in for each one; this probe compares the two relays'
TLS handshakes alone (issue #10).

The client verifies nothing (the certificate is the run's self-signed one) and offers what
Python's default client context offers (TLS 1.2 and 1.3): the relay picks, as it would for
libpq. OpenSSL releases the GIL during the handshake, so the threads overlap as separate
clients would.

Prints one JSON object: {"handshakes": N, "seconds": elapsed, "errors": E,
"first_error": "..."}. Exits 1 with {"error": ...} when no handshake completed.
"""

import json
import socket
import ssl
import struct
import sys
import threading
import time

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
LINGER_RESET = struct.pack("ii", 1, 0)


def handshake(ctx, host, port):
    s = socket.create_connection((host, port), timeout=10)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        s.sendall(SSL_REQUEST)
        answer = s.recv(1)
        if answer != b"S":
            raise RuntimeError("SSLRequest answered %r, not 'S'" % answer)
        tls = ctx.wrap_socket(s, do_handshake_on_connect=True)
        tls.close()
    finally:
        s.close()


def main():
    host, port, seconds, threads = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]),
                                    int(sys.argv[4]))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.options |= ssl.OP_NO_TICKET  # no resumption: every handshake is a full one
    lock = threading.Lock()
    counts = {"handshakes": 0, "errors": 0, "first_error": ""}
    deadline = time.monotonic() + seconds

    def worker():
        done = errors = 0
        first = ""
        while time.monotonic() < deadline:
            try:
                handshake(ctx, host, port)
                done += 1
            except (OSError, RuntimeError, ssl.SSLError) as e:
                errors += 1
                first = first or str(e)
        with lock:
            counts["handshakes"] += done
            counts["errors"] += errors
            counts["first_error"] = counts["first_error"] or first

    t0 = time.monotonic()
    pool = [threading.Thread(target=worker) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    counts["seconds"] = round(time.monotonic() - t0, 3)
    if not counts["handshakes"]:
        print(json.dumps({"error": "no handshake completed: %s" % counts["first_error"]}))
        sys.exit(1)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
