"""Remote clients through pgwardend: a client in a network namespace dials the host's address
over a veth pair; pgwarden's nftables table diverts the connection (TPROXY) into pgwardend's
transparent listener (--tproxy-listen), pgwardend classifies it route=tproxy with the dialled
address from getsockname(), and connects on from the client's own address (IP_TRANSPARENT,
--transparent-source true, the default). The server's replies to that foreign address are
routed back to the relay (conntrack mark + fwmark rule + local route table). The server
therefore sees the real client address, and the results are those of a direct run.
"""

import os
import signal
import sys

from remote import families, hostport, session_of, tproxy_listen, tproxy_port

NO_BPF_EXEC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no_bpf_exec.py")

# A result of a few hundred KiB: more than one relay buffer, in both directions' worth of
# messages, compared row for row with the same query run directly.
SQL = ("SELECT g, md5(g::text), repeat(chr(65 + g % 26), g % 300), g::numeric / 7 "
       "FROM generate_series(1, 3000) g ORDER BY g")


def sessions_from(relay, client_ip, client):
    peer = hostport(client_ip, client["local"][1])
    return [d for d in relay.log_lines()
            if d.get("event") == "session_start" and d.get("peer") == peer]


def upstream_source_lines(relay, log):
    return [d for d in relay.log_lines() if d.get("event") == "upstream_source" and
            "session=%s " % log["session"] in (d.get("msg") or "")]


def assert_through_relay(relay, pg, host, client_ip, c, direct_rows):
    """c reached the server through pgwardend's TPROXY path, from its real address."""
    assert "error" not in c, c
    assert c["answer"] == 42
    assert c["rows"] == direct_rows
    # The client believes it talks to the address it dialled (nothing rewrote it)...
    assert c["peer"] == [host, pg.port]
    # ...pgwardend diverted it: route=tproxy, dialled = the server's address, and went on
    # to that address...
    log = session_of(relay, client_ip, c)
    assert log["route"] == "tproxy", log
    assert log["dialled"] == hostport(host, pg.port), log
    assert log["upstream"] == hostport(host, pg.port), log
    assert "pid" not in log  # no process identity for a remote client
    # ...and the server saw the client's own address, on the relay's connection (a fresh
    # port: the client's own 4-tuple is the accepted socket's mirror).
    assert c["server_saw"][0] == client_ip, c
    assert c["server_saw"][1] != c["local"][1], c
    assert upstream_source_lines(relay, log) == []
    return log


def test_remote_client_through_pgwardend(veth_pg, netns, instance, cgroup, relay_factory,
                                         clients):
    pg = veth_pg
    tport = tproxy_port()
    relay = relay_factory(upstream=pg, extra_args=tproxy_listen(tport))
    assert tport != relay.port
    instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
                 "--cgroup", cgroup.path, *instance.tproxy_args(tport))
    st = instance.status()
    t = st["tproxy"]
    assert t["nft_table_present"] is True and t["port"] == tport
    assert t["fwmark"] == "0x%x" % instance.tproxy_mark
    assert t["route_table"] == instance.route_table
    assert t["fwmark_rules"] == 2 and t["local_routes"] == 2  # one of each per family

    # The reference: the same query straight to the server from the host.
    direct = clients(pg, "127.0.0.1", pg.port, hold=False, sql=SQL).finish()
    assert "error" not in direct, direct
    assert direct["server_saw"] == ["127.0.0.1", direct["local"][1]]
    assert len(direct["rows"]) == 3000

    for family, host, client_ip in families(netns):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False, sql=SQL).finish()
        assert_through_relay(relay, pg, host, client_ip, c, direct["rows"])

    # Local clients are not TPROXY'd (only packets from the network are), and a local
    # process outside the attached cgroup is not steered either: straight to the server.
    for host in (netns.host_ip, netns.host_ip6):
        local = clients(pg, host, pg.port, hold=False).finish()
        assert "error" not in local, local
        assert local["server_saw"] == [host, local["local"][1]]
        assert sessions_from(relay, host, local) == []

    # Fail-closed holds for remote clients too: with pgwardend gone, a new connection from
    # the network is refused, not let through to the server.
    relay.signal(signal.SIGKILL)
    relay.proc.wait(30)
    st = instance.status()
    assert st["attached"] is True and st["mode"] == "fail-closed"
    for host in (netns.host_ip, netns.host_ip6):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False).finish()
        assert "error" in c and "refused" in c["error"].lower(), c

    instance.run("detach")
    st = instance.status()
    assert st["tproxy"]["nft_table_present"] is False
    assert st["tproxy"]["fwmark_rules"] == 0 and st["tproxy"]["local_routes"] == 0
    assert st["leftovers"] == []
    # Detached: the namespace client reaches the server directly, from its own port.
    for family, host, client_ip in families(netns):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False).finish()
        assert "error" not in c, c
        assert c["server_saw"] == [client_ip, c["local"][1]]


def test_remote_client_fail_open(veth_pg, netns, instance, cgroup, relay_factory, clients):
    """--fail-open: the links belong to pgwardend (pgwardenctl attach exec()s it); while it
    runs, remote clients go through it; once it is killed they reach the server directly."""
    pg = veth_pg
    tport = tproxy_port()

    def attach_fail_open(relay):
        return [instance.path, "attach", "--fail-open", "--port", str(pg.port),
                "--relay", "127.0.0.1:%d" % relay.port, "--cgroup", cgroup.path,
                *instance.tproxy_args(tport), "--"]

    relay = relay_factory(upstream=pg, extra_args=tproxy_listen(tport),
                          wrap=attach_fail_open, env=instance.env())
    assert tport != relay.port
    st = instance.status()
    assert st["attached"] is True and st["mode"] == "fail-open", st
    assert st["pin_dir_present"] is False
    assert st["tproxy"]["nft_table_present"] is True
    assert all(relay.proc.pid in l["held_by"] for l in st["links"]), st["links"]
    relay.wait_for_log({"event": "steer", "level": "warn"})

    direct = clients(pg, "127.0.0.1", pg.port, hold=False, sql=SQL).finish()
    assert "error" not in direct, direct
    for family, host, client_ip in families(netns):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False, sql=SQL).finish()
        assert_through_relay(relay, pg, host, client_ip, c, direct["rows"])

    relay.signal(signal.SIGKILL)
    relay.proc.wait(30)
    st = instance.status()
    assert st["attached"] is False and st["mode"] == "detached", st
    for family, host, client_ip in families(netns):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False).finish()
        assert "error" not in c, c
        assert c["server_saw"] == [client_ip, c["local"][1]]
    # The nft table and the routing outlive a killed fail-open daemon (harmless: no
    # transparent listener, no reject rule). With the BPF config gone with the links, the
    # table's comment still names the mark and route table: status lists all of it as
    # leftovers, and detach removes all of it (the fixture checks the kernel afterwards).
    t = st["tproxy"]
    assert t["nft_table_present"] is True
    assert t["fwmark"] == "0x%x" % instance.tproxy_mark, t
    assert t["route_table"] == instance.route_table, t
    assert t["fwmark_rules"] == 2 and t["local_routes"] == 2, t
    assert "nft table inet %s without a live attach" % instance.instance in st["leftovers"]
    assert ("fwmark rule/route table %d without a live attach" % instance.route_table
            in st["leftovers"]), st["leftovers"]
    instance.run("detach")
    t = instance.status()["tproxy"]
    assert t["nft_table_present"] is False
    assert t["fwmark_rules"] == 0 and t["local_routes"] == 0, t


def test_transparent_source_off(veth_pg, netns, instance, cgroup, relay_factory, clients):
    """--transparent-source false: the relay connects from its own address, the server sees
    that address (pg_hba.conf must allow the host end), and the log says why."""
    pg = veth_pg
    tport = tproxy_port()
    relay = relay_factory(upstream=pg,
                          extra_args=tproxy_listen(tport) + ["--transparent-source", "false"])
    instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
                 "--cgroup", cgroup.path, *instance.tproxy_args(tport))

    for family, host, client_ip in families(netns):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False).finish()
        assert "error" not in c, c
        assert c["answer"] == 42
        log = session_of(relay, client_ip, c)
        assert log["route"] == "tproxy" and log["dialled"] == hostport(host, pg.port), log
        # Connecting to a local address, the relay's source is that address: the server
        # sees the host, not the namespace client.
        assert c["server_saw"][0] == host, c
        why = upstream_source_lines(relay, log)
        assert len(why) == 1 and why[0]["level"] == "info", why
        assert "not the client's: disabled" in why[0]["msg"], why


def test_tproxy_without_steering_maps(veth_pg, netns, instance, cgroup, relay_factory,
                                      clients):
    """pgwardend that cannot open the steering maps (bpf(2) refused, as for a daemon without
    CAP_BPF where unprivileged BPF is disabled) still takes TPROXY'd connections (they are
    classified by getsockname(), no map needed); the server must still see the client, or
    the log must say why not."""
    pg = veth_pg
    tport = tproxy_port()
    relay = relay_factory(upstream=pg, extra_args=tproxy_listen(tport),
                          wrap=lambda r: [sys.executable, NO_BPF_EXEC])
    relay.wait_for_log({"event": "steer", "level": "warn"})
    # Without bpf(2) the daemon cannot register its listener with the steering hooks, so
    # the attach is told not to wait for it: local clients steered to it would be refused
    # (fail-closed), remote ones are TPROXY'd, which needs no map.
    instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay.port,
                 "--cgroup", cgroup.path, "--no-relay-check", *instance.tproxy_args(tport))
    assert instance.status()["relay_registered"] == []

    for family, host, client_ip in families(netns):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False).finish()
        assert "error" not in c, c
        log = session_of(relay, client_ip, c)
        assert log["route"] == "tproxy", log
        assert c["server_saw"][0] == client_ip or upstream_source_lines(relay, log), (
            family, c, "server saw the relay's address and the log does not say why")
