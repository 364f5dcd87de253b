"""Remote clients: a client in a network namespace dials the host's address over a veth pair;
pgwarden's nftables table diverts the connection (TPROXY) into the relay's transparent
listener, the relay connects on from the client's own address, and the server's replies to
that foreign address are routed back to the relay (conntrack mark + fwmark rule + local
route table). The server therefore sees the real client address.

The relay here is tests/e2e/tproxy_relay.py, which does what steer_upstream_prepare() and
steer_listen_transparent() do, so this tests the kernel half on its own.
"""

import os
import socket
import subprocess
import time

import pytest

import harness
from tproxy_relay import TproxyRelay

RELAY_MARK = 0x5047


class VethCluster(harness.PgCluster):
    """The throwaway cluster, also listening on the host end of the test's veth pair and
    accepting the namespace's addresses in pg_hba.conf."""

    def __init__(self, ns):
        super().__init__(max_connections=50)
        self.ns = ns

    def _write_conf(self):
        super()._write_conf()
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        with open(path, "a") as f:
            f.write("listen_addresses = '127.0.0.1,::1,%s,%s'\n"
                    % (self.ns.host_ip, self.ns.host_ip6))
        with open(os.path.join(self.datadir, "pg_hba.conf"), "a") as f:
            for a in (self.ns.client_ip, self.ns.host_ip):
                f.write("host all all %s/32 scram-sha-256\n" % a)
            f.write("host all all %s/128 scram-sha-256\n" % self.ns.client_ip6)


@pytest.fixture
def veth_pg(netns):
    cluster = VethCluster(netns)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def tproxy_relays():
    made = []

    def make(port=0, family=socket.AF_INET):
        r = TproxyRelay(port, RELAY_MARK, family)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


def test_remote_client_through_tproxy(veth_pg, netns, instance, cgroup, tproxy_relays,
                                      clients):
    pg = veth_pg
    relay4 = tproxy_relays()
    relay6 = tproxy_relays(relay4.port, socket.AF_INET6)
    instance.run("attach", "--port", str(pg.port), "--relay", "127.0.0.1:%d" % relay4.port,
                 "--tproxy-port", str(relay4.port), "--cgroup", cgroup.path)
    st = instance.status()
    t = st["tproxy"]
    assert t["nft_table_present"] is True and t["port"] == relay4.port
    assert t["fwmark_rules"] == 2 and t["local_routes"] == 2  # one of each per family

    for family, host, client_ip, relay in (("ipv4", netns.host_ip, netns.client_ip, relay4),
                                           ("ipv6", netns.host_ip6, netns.client_ip6, relay6)):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False).finish()
        assert "error" not in c, (family, c, relay.errors)
        assert c["answer"] == 42
        # Diverted: the relay accepted it, and getsockname() gave the dialled address.
        assert (c["local"][0], c["local"][1]) in [tuple(s[0]) for s in relay.seen], relay.seen
        assert [host, pg.port] in [list(s[1]) for s in relay.seen]
        # The server saw the client's real address (pg_hba works unchanged), from the
        # relay's own connection (another port).
        assert c["server_saw"][0] == client_ip, (family, c)
        assert c["server_saw"][1] != c["local"][1]

    # Local clients are not TPROXY'd: only packets from the network are.
    local = clients(pg, netns.host_ip, pg.port, hold=False).finish()
    assert "error" not in local, local
    assert local["server_saw"] == [netns.host_ip, local["local"][1]]

    # Fail-closed holds for remote clients too: with the relay gone, a new connection from
    # the network is refused, not let through to the server.
    relay4.stop()
    relay6.stop()
    for host in (netns.host_ip, netns.host_ip6):
        c = clients(pg, host, pg.port, netns=netns.name, hold=False).finish()
        assert "error" in c and "refused" in c["error"].lower(), c

    instance.run("detach")
    st = instance.status()
    assert st["tproxy"]["nft_table_present"] is False
    assert st["tproxy"]["fwmark_rules"] == 0 and st["tproxy"]["local_routes"] == 0
    # Detached: the namespace client reaches the server directly.
    c = clients(pg, netns.host_ip, pg.port, netns=netns.name, hold=False).finish()
    assert c["server_saw"] == [netns.client_ip, c["local"][1]]


def test_remote_client_fail_open(veth_pg, netns, instance, cgroup, clients):
    """--fail-open: the links belong to a process (here a stand-in for pgwardend); with no
    relay listening, remote clients reach the server directly."""
    pg = veth_pg
    port = harness.free_port()
    holder = subprocess.Popen([instance.path, "attach", "--fail-open", "--port", str(pg.port),
                               "--relay", "127.0.0.1:%d" % port, "--tproxy-port", str(port),
                               "--cgroup", cgroup.path, "--", "sleep", "600"],
                              env=instance.env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not instance.status()["attached"]:
            assert holder.poll() is None and time.monotonic() < deadline, "attach failed"
            time.sleep(0.1)
        st = instance.status()
        assert st["mode"] == "fail-open" and st["tproxy"]["nft_table_present"] is True
        c = clients(pg, netns.host_ip, pg.port, netns=netns.name, hold=False).finish()
        assert "error" not in c, c
        assert c["server_saw"] == [netns.client_ip, c["local"][1]]
    finally:
        holder.kill()
        holder.wait(30)
