"""The admission gate through pgwardend: `pgwardenctl attach --gate-queue N` queues every new
connection from the network to the protected port (its SYN) on NFQUEUE N, and pgwardend
(gate.queue: N) decides each one before any socket exists. The clients are in a network
namespace on the far end of a veth pair and dial the server's address; what gets through is
diverted by TPROXY into pgwardend, as in test_tproxy.py.

A refused SYN is dropped, not answered: the client's connect times out (it would be
"refused" if anything had sent a reset). The probes use a 3 s connect timeout for what must
not connect (the SYN and its retransmissions all dropped) and a generous one for what must.
"""

import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import harness
from remote import hostport, session_of, tproxy_listen, tproxy_port

# Connects from inside the namespace; prints connected, timeout, refused or error: ...
PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("connected")
except socket.timeout:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error: %s" % e)
"""
DENIED_WAIT = 3.0   # long enough for the SYN and two retransmissions (1 s, 3 s)
ALLOWED_WAIT = 30.0  # generous: a busy host may be slow to answer

_queues = itertools.count()


def gate_queue():
    """A queue of this test's own: a queue has one reader, and other runs on the host may be
    reading theirs."""
    return 20000 + (os.getpid() * 31 + next(_queues)) % 40000


def probe(ns, host, port, wait):
    r = subprocess.run(["ip", "netns", "exec", ns.name, sys.executable, "-c", PROBE, host,
                        str(port), str(wait)], capture_output=True, text=True,
                       timeout=wait + 60)
    return r.stdout.strip() or r.stderr.strip()


def admin_socket(relay):
    return relay.argv[relay.argv.index("--admin-socket") + 1]


def daemon_gate(instance, relay):
    """The "gate" object of the daemon's status, through pgwardenctl and the admin socket."""
    r = instance.run("--socket", admin_socket(relay), "status", "--json", check=False)
    doc = json.loads(r.stdout)
    assert doc["daemon"] is not None, r.stderr
    return doc["daemon"]["gate"]


def metric(port, name, verdict):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=30).read()
    want = '%s{verdict="%s"} ' % (name, verdict)
    for line in text.decode().splitlines():
        if line.startswith(want):
            return float(line[len(want):])
    raise AssertionError("no %s in\n%s" % (want, text.decode()))


def gate_yaml(queue, rate=None, burst=None, deny=()):
    text = "gate:\n  queue: %d\n" % queue
    if rate:
        text += "  rate: %s\n  burst: %d\n" % (rate, burst)
    text += "  deny: [%s]\n" % ", ".join('"%s"' % d for d in deny)
    return text


def reload(relay, text):
    """Rewrite the relay's config file and SIGHUP it; returns once the reload is logged."""
    before = len([d for d in relay.log_lines() if d.get("event") == "reload"])
    with open(relay.config_path, "w") as f:
        f.write(text)
    relay.signal(signal.SIGHUP)
    deadline = time.monotonic() + 30
    while len([d for d in relay.log_lines() if d.get("event") == "reload"]) == before:
        assert time.monotonic() < deadline, relay.log_tail()
        time.sleep(0.05)
    lines = [d for d in relay.log_lines() if d.get("event") == "reload"]
    assert lines[-1]["level"] == "info", lines[-1]


def attach(instance, pg, relay, cgroup, tport, queue, *extra):
    instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
                 "--cgroup", cgroup.path, *instance.tproxy_args(tport), "--gate-queue",
                 str(queue), *extra)
    st = instance.status()
    assert st["gate"]["enabled"] is True and st["gate"]["queue"] == queue, st["gate"]


def denied_lines(relay):
    return [d for d in relay.log_lines() if d.get("event") == "gate_denied"]


def test_gate_deny_list(veth_pg, netns, instance, cgroup, relay_factory, clients):
    """An allowed source gets a real session through the gate and TPROXY; a source on the
    deny list never gets a connection, and the daemon counts and summarises the refusals.
    A reload moves the deny list."""
    pg = veth_pg
    tport = tproxy_port()
    queue = gate_queue()
    mport = harness.free_port()
    relay = relay_factory(upstream=pg,
                          config_text=gate_yaml(queue, deny=[netns.client_ip6 + "/128"]),
                          extra_args=tproxy_listen(tport) +
                          ["--metrics-listen", "127.0.0.1:%d" % mport])
    started = relay.wait_for_log({"event": "gate"})
    assert started["queue"] == str(queue) and started["deny"] == netns.client_ip6 + "/128"
    attach(instance, pg, relay, cgroup, tport, queue)

    # (a) The IPv4 client is not denied: a real session, through the relay, from its own
    # address.
    c = clients(pg, netns.host_ip, pg.port, netns=netns.name, hold=False).finish()
    assert "error" not in c, c
    assert c["answer"] == 42
    assert c["server_saw"][0] == netns.client_ip, c
    log = session_of(relay, netns.client_ip, c)
    assert log["route"] == "tproxy" and log["dialled"] == hostport(netns.host_ip, pg.port)
    g = daemon_gate(instance, relay)
    assert g["queue"] == queue and g["deny"] == [netns.client_ip6 + "/128"], g
    assert g["accepted"] >= 1 and g["denied_list"] == 0 and g["denied_rate"] == 0, g

    # (b) The IPv6 client is: its SYNs are dropped before any socket exists, so nothing
    # answers (a timeout, not a reset), neither the relay nor the server.
    t0 = time.monotonic()
    assert probe(netns, netns.host_ip6, pg.port, DENIED_WAIT) == "timeout"
    g = daemon_gate(instance, relay)
    assert g["denied_list"] >= 1, g
    assert metric(mport, "pgwarden_gate_syns_total", "denied_list") == g["denied_list"]
    assert metric(mport, "pgwarden_gate_syns_total", "accepted") == g["accepted"]
    first = relay.wait_for_log({"event": "gate_denied"})
    assert first["latest_source"] == netns.client_ip6, first
    assert first["latest_reason"] == "deny_list", first
    assert not [d for d in relay.log_lines() if d.get("event") == "session_start" and
                d.get("peer", "").startswith("[%s]" % netns.client_ip6)]
    # The log is a summary, not a line per SYN: the first refusal at once, then at most one
    # line per 10 s.
    assert len(denied_lines(relay)) <= 1 + int((time.monotonic() - t0) / 10), denied_lines(relay)

    # A reload moves the deny list to the IPv4 client: the next SYNs are decided with it.
    reload(relay, gate_yaml(queue, deny=[netns.client_ip + "/32"]))
    assert probe(netns, netns.host_ip, pg.port, DENIED_WAIT) == "timeout"
    assert probe(netns, netns.host_ip6, pg.port, ALLOWED_WAIT) == "connected"
    relay.wait_for_log({"event": "gate_reload", "deny": netns.client_ip + "/32"})
    g = daemon_gate(instance, relay)
    assert g["deny"] == [netns.client_ip + "/32"], g
    assert len(denied_lines(relay)) <= 1 + int((time.monotonic() - t0) / 10), denied_lines(relay)


def test_gate_rate_limit(veth_pg, netns, instance, cgroup, relay_factory):
    """A source gets `burst` new connections at once, then none until its bucket refills
    (1/h: not during this test); another source has its own bucket. A reload that raises
    the rate lets the source in again."""
    pg = veth_pg
    tport = tproxy_port()
    queue = gate_queue()
    relay = relay_factory(upstream=pg, config_text=gate_yaml(queue, rate="1/h", burst=3),
                          extra_args=tproxy_listen(tport))
    attach(instance, pg, relay, cgroup, tport, queue)

    for i in range(3):
        assert probe(netns, netns.host_ip, pg.port, ALLOWED_WAIT) == "connected", i
    for i in range(2):
        assert probe(netns, netns.host_ip, pg.port, DENIED_WAIT) == "timeout", i
    g = daemon_gate(instance, relay)
    assert g["rate"] == "1/h" and g["burst"] == 3, g
    # Exactly the burst was let through: the bucket held 3 tokens and gained none.
    assert g["accepted"] == 3 and g["denied_rate"] >= 2 and g["denied_list"] == 0, g
    line = relay.wait_for_log({"event": "gate_denied"})
    assert line["latest_source"] == netns.client_ip and line["latest_reason"] == "rate", line

    # Another source, another bucket.
    assert probe(netns, netns.host_ip6, pg.port, ALLOWED_WAIT) == "connected"

    # A higher rate after a reload refills the bucket from the time it last decided.
    reload(relay, gate_yaml(queue, rate="1000/s", burst=3))
    assert probe(netns, netns.host_ip, pg.port, ALLOWED_WAIT) == "connected"
    relay.wait_for_log({"event": "gate_reload", "rate": "1000/s"})
    assert daemon_gate(instance, relay)["rate"] == "1000/s"


def test_gate_without_reader_fail_closed(veth_pg, netns, instance, cgroup, relay_factory):
    """With the reader gone (pgwardend SIGKILLed) under the default fail-closed attach, new
    connections from the network do not reach PostgreSQL: the queue has nobody to decide,
    and the kernel drops (or the fail-closed rule resets) what it would queue."""
    pg = veth_pg
    tport = tproxy_port()
    queue = gate_queue()
    relay = relay_factory(upstream=pg, extra_args=tproxy_listen(tport) +
                          ["--gate-queue", str(queue)])
    attach(instance, pg, relay, cgroup, tport, queue)
    assert probe(netns, netns.host_ip, pg.port, ALLOWED_WAIT) == "connected"

    relay.signal(signal.SIGKILL)
    relay.proc.wait(30)
    st = instance.status()
    assert st["attached"] is True and st["mode"] == "fail-closed", st
    assert st["gate"]["enabled"] is True, st["gate"]
    for host in (netns.host_ip, netns.host_ip6):
        assert probe(netns, host, pg.port, DENIED_WAIT) in ("timeout", "refused"), host


def test_gate_without_reader_fail_open(veth_pg, netns, instance, cgroup, relay_factory):
    """Fail-open is the one mode whose queue rule carries bypass: once pgwardend (which
    owns the links) is killed, new connections reach the server directly."""
    pg = veth_pg
    tport = tproxy_port()
    queue = gate_queue()

    def attach_fail_open(relay):
        return [instance.path, "attach", "--fail-open", "--port", str(pg.port),
                "--relay", "127.0.0.1:%d" % relay.port, "--cgroup", cgroup.path,
                *instance.tproxy_args(tport), "--gate-queue", str(queue), "--"]

    relay = relay_factory(upstream=pg, extra_args=tproxy_listen(tport) +
                          ["--gate-queue", str(queue)],
                          wrap=attach_fail_open, env=instance.env())
    st = instance.status()
    assert st["mode"] == "fail-open" and st["gate"]["enabled"] is True, st
    assert probe(netns, netns.host_ip, pg.port, ALLOWED_WAIT) == "connected"
    assert daemon_gate(instance, relay)["accepted"] >= 1

    relay.signal(signal.SIGKILL)
    relay.proc.wait(30)
    for host in (netns.host_ip, netns.host_ip6):
        assert probe(netns, host, pg.port, ALLOWED_WAIT) == "connected", host
    # The queue rule outlives the daemon (like the nft table): detach removes it.
    instance.run("detach")
    chain = "PGWQ_" + instance.instance[:23]
    for tool in ("iptables-legacy", "ip6tables-legacy"):
        rules = subprocess.run([tool, "-S"], capture_output=True, text=True).stdout
        assert chain not in rules, rules
