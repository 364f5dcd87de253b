"""A PostgreSQL client for the steering tests, in its own process so it can be placed in a
cgroup and run as another user before it connects.

Prints one JSON line: its pid, the socket's local and peer address as it sees them
(getsockname/getpeername), the answer to a query, and what the server saw as the client
(inet_client_addr/inet_client_port), and with --sql the rows of one more query (as strings,
for comparing with a direct run); or {"error": ...}. With --hold it keeps the session open
until a line arrives on stdin, so the test can inspect the kernel and the relay meanwhile.
"""

import argparse
import json
import os
import pwd
import socket
import sys

import psycopg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dbuser", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--dbname", required=True)
    ap.add_argument("--cgroup")
    ap.add_argument("--user")
    ap.add_argument("--hold", action="store_true")
    ap.add_argument("--sql")
    a = ap.parse_args()

    if a.cgroup:
        with open(os.path.join(a.cgroup, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if a.user:
        pw = pwd.getpwnam(a.user)
        os.setgroups([])
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    out = {"pid": os.getpid(), "uid": os.getuid()}
    try:
        conn = psycopg.connect(host=a.host, port=a.port, user=a.dbuser, password=a.password,
                               dbname=a.dbname, sslmode="disable", connect_timeout=10)
    except Exception as e:  # reported, not raised: the test decides what it means
        out["error"] = str(e).strip()
        print(json.dumps(out), flush=True)
        return 0
    sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
    out["local"] = list(sock.getsockname()[:2])
    out["peer"] = list(sock.getpeername()[:2])
    sock.detach()
    row = conn.execute("SELECT 41 + 1, host(inet_client_addr()), inet_client_port(), "
                       "current_setting('port')::int").fetchone()
    out["answer"] = row[0]
    out["server_saw"] = [row[1], row[2]]
    out["server_port"] = row[3]
    if a.sql:
        out["rows"] = [[None if v is None else str(v) for v in r]
                       for r in conn.execute(a.sql).fetchall()]
    print(json.dumps(out), flush=True)
    if a.hold:
        sys.stdin.readline()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
