"""What the remote-client tests share (test_tproxy.py, test_gate.py): a PostgreSQL cluster
reachable over the test's veth pair, pgwardend's transparent listeners, and finding the
relay's session of a client connection. The fixture (veth_pg) is in conftest.py."""

import harness


class VethCluster(harness.PgCluster):
    """The throwaway cluster, also listening on the host end of the test's veth pair and
    accepting the namespace's addresses (and the host end's, for the relay's own address)
    in pg_hba.conf."""

    def __init__(self, ns):
        super().__init__(max_connections=50)
        self.ns = ns

    def _write_conf(self):
        super()._write_conf()
        path = self.datadir + "/postgresql.auto.conf"
        with open(path, "a") as f:
            f.write("listen_addresses = '127.0.0.1,::1,%s,%s'\n"
                    % (self.ns.host_ip, self.ns.host_ip6))
        with open(self.datadir + "/pg_hba.conf", "a") as f:
            for a in (self.ns.client_ip, self.ns.host_ip):
                f.write("host all all %s/32 scram-sha-256\n" % a)
            for a in (self.ns.client_ip6, self.ns.host_ip6):
                f.write("host all all %s/128 scram-sha-256\n" % a)


def hostport(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


def tproxy_listen(port):
    """pgwardend's transparent listeners on the attach's --tproxy-port, both families."""
    return ["--tproxy-listen", "0.0.0.0:%d" % port, "--tproxy-listen", "[::]:%d" % port]


def tproxy_port(relay_port=None):
    while True:
        p = harness.free_port()
        if p != relay_port:
            return p


def families(ns):
    return (("ipv4", ns.host_ip, ns.client_ip), ("ipv6", ns.host_ip6, ns.client_ip6))


def session_of(relay, client_ip, client):
    """The relay's session_start line for this client connection (by its address:port)."""
    peer = hostport(client_ip, client["local"][1])
    return relay.wait_for_log(lambda d: d.get("event") == "session_start" and
                              d.get("peer") == peer)
