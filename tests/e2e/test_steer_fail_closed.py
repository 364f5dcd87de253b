"""Steered connections fail closed when the kernel cannot record them (issues 8 and 9).

The hooks record each steered connection twice: in the client socket's own storage (no
capacity, gone with the socket) and under the 4-tuple the relay sees from accept()
(pgw_origin_tup, a plain hash of `attach --origin-max` records, made before the SYN leaves).
A connection that has no 4-tuple record must never be relayed unidentified, and must never
reach the server straight:

* the kernel: sk_lookup drops a SYN for the relay's steering address whose 4-tuple has no
  record, so the client gets a reset at once (counters refused_origin_full and
  dropped_unrecorded);
* the relay: a connection accepted on the steering address without a record is refused with
  an ErrorResponse and counted (reason unrecorded_steered), which covers kernels without
  sk_lookup and anyone dialling the steering address straight.

Everything runs in the test's own cgroup and instance; the fixtures detach and remove it all,
pass or fail.
"""

import errno
import json
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from test_steering import attach, origin_records, session_for

# A process in the test cgroup that opens N raw TCP connections, reports how each went, and
# holds them until told to close them.
HOLDER = r"""
import errno, json, os, socket, sys
cg, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with open(os.path.join(cg, "cgroup.procs"), "w") as f:
    f.write(str(os.getpid()))
out, held = [], []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        out.append({"ok": True, "local": s.getsockname()[1], "peer": list(s.getpeername())})
        held.append(s)
    except OSError as e:
        out.append({"ok": False, "errno": e.errno, "error": str(e)})
        s.close()
print(json.dumps(out), flush=True)
sys.stdin.readline()
for s in held:
    s.close()
"""


class Holder:
    def __init__(self, cgroup, host, port, n):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, cgroup.path, host, str(port),
                                      str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(30)
            raise AssertionError("holder printed nothing: %s" % self.proc.stderr.read())
        self.results = json.loads(line)

    def release(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("done\n")
                self.proc.stdin.flush()
                self.proc.wait(30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)


def counters(instance):
    return instance.status()["counters"]


def tup_map(instance):
    return [m for m in instance.status()["maps"] if m["name"] == "pgw_origin_tup"][0]


def refusals(relay, reason):
    return [d for d in relay.log_lines()
            if d.get("event") == "connection_refused" and d.get("reason") == reason]


def test_origin_map_full_refuses_new_steered_connects(pg, instance, cgroup, relay_factory,
                                                      clients):
    """Fill pgw_origin_tup (4 records) with connections the relay has not accepted yet (it is
    stopped): the next steered connects are refused at once, counted, and reach neither the
    relay nor the server; once the relay accepts again, the records are gone and steering
    works as before."""
    relay = relay_factory()
    attach(instance, pg, relay, cgroup, "--origin-max", "4")
    assert tup_map(instance)["max_entries"] == 4
    before = counters(instance)

    holder = None
    relay.signal(signal.SIGSTOP)
    try:
        holder = Holder(cgroup, "127.0.0.1", pg.port, 8)
        ok = [r for r in holder.results if r["ok"]]
        refused = [r for r in holder.results if not r["ok"]]
        # The first four fill the map; the rest are refused by the kernel, with a reset,
        # not a timeout, and not a connection to the server.
        assert len(ok) == 4, holder.results
        assert all(r["peer"] == ["127.0.0.1", pg.port] for r in ok), ok
        assert len(refused) == 4, holder.results
        assert all(r["errno"] == errno.ECONNREFUSED for r in refused), refused
        assert len(origin_records(instance)) == 4
        after = counters(instance)
        assert after["refused_origin_full"] - before["refused_origin_full"] == 4, after
        assert after["dropped_unrecorded"] - before["dropped_unrecorded"] == 4, after
    finally:
        relay.signal(signal.SIGCONT)

    try:
        # The relay takes the four it owes (each with its record: no refusals)...
        deadline = time.time() + 20
        while origin_records(instance) and time.time() < deadline:
            time.sleep(0.1)
        assert origin_records(instance) == []
        assert refusals(relay, "unrecorded_steered") == []
    finally:
        holder.release()
    # ...and with the map free again a real client is steered, identified, served.
    c = clients(pg, "127.0.0.1", pg.port, cgroup=cgroup, hold=False).finish()
    assert c.get("answer") == 42, c
    log = session_for(relay, "127.0.0.1:%d" % c["local"][1])
    assert log["route"] == "steered"
    # Records never outlive their connection: nothing left once the clients are gone.
    deadline = time.time() + 10
    while origin_records(instance) and time.time() < deadline:
        time.sleep(0.1)
    assert origin_records(instance) == []


def test_origin_max_is_checked(pg, instance, cgroup, relay_factory):
    relay = relay_factory()
    for bad in ("0", "-1", "x", "4194305"):
        r = instance.run("attach", "--port", str(pg.port), "--relay",
                         "127.0.0.1:%d" % relay.port, "--cgroup", cgroup.path,
                         "--origin-max", bad, check=False)
        assert r.returncode == 2 and "--origin-max" in r.stderr, (bad, r.stderr)
    attach(instance, pg, relay, cgroup, "--origin-max", "16")
    # The map's size is fixed once made: another size in place is refused, plainly.
    r = instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
                     "--cgroup", cgroup.path, "--origin-max", "32", check=False)
    assert r.returncode == 1 and "detach first to resize" in r.stderr, r.stderr
    assert tup_map(instance)["max_entries"] == 16
    attach(instance, pg, relay, cgroup, "--origin-max", "16")  # same size: idempotent


def sk_lookup_link_ids(instance):
    return [l["link_id"] for l in instance.status()["links"] if l["hook"] == "sk_lookup"]


def test_steering_address_takes_recorded_connections_only(pg, instance, cgroup,
                                                          relay_factory):
    """Dialled straight at the relay's steering address, a connection has no origin record.
    The kernel resets it; with the sk_lookup guard gone (an older kernel), the relay itself
    refuses it with a clear error and a counter, and never serves it as explicit."""
    relay = relay_factory()
    attach(instance, pg, relay, cgroup)
    dsn = dict(host="127.0.0.1", port=relay.port, user=pg.user, password=pg.password,
               dbname=pg.dbname, connect_timeout=10, sslmode="disable")

    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(**dsn)
    assert "refused" in str(e.value).lower(), str(e.value)
    assert counters(instance)["dropped_unrecorded"] >= 1

    links = sk_lookup_link_ids(instance)
    if not links:
        pytest.skip("kernel without sk_lookup: the relay-side check was covered above")
    for link in links:
        subprocess.run(["bpftool", "link", "detach", "id", str(link)], check=True,
                       capture_output=True, timeout=30)
    with pytest.raises(psycopg.OperationalError) as e:
        psycopg.connect(**dsn)
    assert "without a kernel origin record" in str(e.value), str(e.value)
    refused = refusals(relay, "unrecorded_steered")
    assert len(refused) == 1, relay.log_tail(20)
    # Not served: no session started for it.
    assert [d for d in relay.log_lines() if d.get("event") == "session_start"] == []
