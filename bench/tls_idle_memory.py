#!/usr/bin/python3
"""Idle memory per TLS client session: PgBouncer's (the reference of issue #10) and
pgwardend's, on loopback, against a throwaway PostgreSQL 15.

    sudo /usr/bin/python3 bench/tls_idle_memory.py [--clients 200] [--pgwardend build/pgwardend]

For each proxy, N clients log in with sslmode=require, run one query, and stay connected
and idle; then the same with sslmode=disable. The proxy's resident memory (VmRSS) is read
before and with the clients connected. The TLS cost of an idle session is the difference
between the two runs per client; the whole cost of an idle session is the TLS run alone.
PgBouncer runs in transaction pooling, so idle clients hold no server connection, and
pgwardend's idle sessions hold their upstream connection (it is not a pool): its
plaintext run is the baseline that takes that out.

pgwardend is measured once its connection core terminates TLS (an SSLRequest answered
'S'); until then the script says so, and tests/unit/test_transport_tls.c measures the heap
an idle server-role TLS transport holds.
"""

import argparse
import os
import socket
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))

import psycopg  # noqa: E402

import harness  # noqa: E402
import tlsutil  # noqa: E402
from pgbouncer import PgBouncer  # noqa: E402


def vm_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def bouncer_pid(b):
    with open(os.path.join(b.tmpdir, "pgbouncer.pid")) as f:
        return int(f.read().strip())


def idle_clients(port, n, sslmode):
    conns = []
    for _ in range(n):
        c = psycopg.connect(host="127.0.0.1", port=port, user="pgw", password="pgw-secret",
                            dbname="pgw", sslmode=sslmode, autocommit=True)
        c.execute("SELECT 1").fetchone()
        conns.append(c)
    return conns


def measure(pid, port, n, sslmode):
    before = vm_rss_kib(pid)
    conns = idle_clients(port, n, sslmode)
    if sslmode == "require":
        assert all(c.pgconn.ssl_in_use for c in conns)
    time.sleep(1.0)  # let the proxy settle (buffers released, nothing in flight)
    during = vm_rss_kib(pid)
    for c in conns:
        c.close()
    time.sleep(0.5)
    return before, during


def report(name, start, n):
    """start() gives a fresh (pid, port, stop) for each run: memory a run freed would
    otherwise be reused by the next and hide its cost."""
    res = {}
    for mode in ("disable", "require"):
        pid, port, stop = start()
        try:
            # One client first, so that what every proxy allocates once (its first server
            # connection, TLS library state) is not charged to the idle sessions.
            warm = idle_clients(port, 1, mode)
            res[mode] = measure(pid, port, n, mode)
            for c in warm:
                c.close()
        finally:
            stop()
    (b_plain, d_plain), (b_tls, d_tls) = res["disable"], res["require"]
    tls = (d_tls - b_tls) * 1024 / n
    plain = (d_plain - b_plain) * 1024 / n
    print("%-10s idle session: %6.0f bytes with TLS, %6.0f plaintext: TLS costs %6.0f bytes "
          "each (%d clients, VmRSS %d -> %d KiB)" % (name, tls, plain, tls - plain, n, b_tls,
                                                     d_tls))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--pgwardend", default=os.path.join(HERE, "..", "build", "pgwardend"))
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="pgwarden-tlsmem-")
    pki = tlsutil.Pki(work)
    ca = pki.ca("bench CA")
    srv = pki.cert(ca, "localhost", server=True, san="DNS:localhost,IP:127.0.0.1")
    # PgBouncer runs as postgres and must read the key.
    os.chmod(work, 0o755)
    for p in (srv.crt, srv.key):
        os.chown(p, harness.pwd.getpwnam("postgres").pw_uid, -1)

    pg = harness.PgCluster(max_connections=args.clients + 50)
    pg.start()
    def bouncer():
        b = PgBouncer((pg.host, pg.port), pg, max_client_conn=args.clients + 10,
                      extra_ini="client_tls_sslmode = prefer\nclient_tls_key_file = %s\n"
                                "client_tls_cert_file = %s\n" % (srv.key, srv.crt))
        b.start()
        return bouncer_pid(b), b.port, b.stop

    def pgwardend():
        r = harness.Relay(os.path.abspath(args.pgwardend), (pg.host, pg.port), pg, work,
                          workers=1,
                          config_text="tls:\n  client:\n    mode: prefer\n"
                                      "    cert_file: %s\n    key_file: %s\n"
                                      "  server:\n    mode: disable\n" % (srv.crt, srv.key))
        r.start()
        return r.proc.pid, r.port, lambda: r.stop(check=False)

    try:
        report("pgbouncer", bouncer, args.clients)
        pid, port, stop = pgwardend()
        try:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(struct.pack("!ii", 8, 80877103))
                answer = s.recv(1)
        finally:
            stop()
        if answer != b"S":
            print("pgwardend  not measurable yet: its connection core answers SSLRequest "
                  "with %r (see tests/unit/test_transport_tls.c for the transport's heap)"
                  % answer)
        else:
            report("pgwardend", pgwardend, args.clients)
    finally:
        pg.stop()
        harness.shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
