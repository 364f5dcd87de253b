"""A byte-forwarding stand-in for pgwardend's TPROXY path, doing exactly what
userspace/steer/steer_origin.c asks of the relay, so the kernel half (nft TPROXY rules,
fwmark rule, local route table, conntrack-mark return path) is tested on its own:

  listener   IP_TRANSPARENT on the TPROXY port (steer_listen_transparent)
  accept     getsockname() is the destination the client dialled (route=tproxy)
  upstream   SO_MARK = relay mark, IP_TRANSPARENT, bound to the client's own address with a
             fresh port (steer_upstream_prepare), connected to the dialled destination

Each diverted connection is recorded as (client address, dialled address); connections
to the listener's own address are closed.
"""

import socket
import threading

IP_TRANSPARENT = 19
IPV6_TRANSPARENT = 75
IP_BIND_ADDRESS_NO_PORT = 24


class TproxyRelay:
    def __init__(self, port, mark, family=socket.AF_INET):
        self.family = family
        self.mark = mark
        self.seen = []
        self.errors = []
        self.lst = socket.socket(family, socket.SOCK_STREAM)
        self.lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            self.lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self.lst.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            self.lst.bind(("::", port))
        else:
            self.lst.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
            self.lst.bind(("0.0.0.0", port))
        self.lst.listen(16)
        self.port = self.lst.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, peer = self.lst.accept()
            except OSError:
                return
            dialled = c.getsockname()
            if dialled[1] == self.port:
                # Dialled the listener itself: not a TPROXY'd connection (a port probe from
                # some other process). pgwardend would treat it as explicit; we refuse it.
                c.close()
                continue
            self.seen.append((peer[:2], dialled[:2]))
            threading.Thread(target=self._serve, args=(c, peer, dialled), daemon=True).start()

    def _serve(self, c, peer, dialled):
        up = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            up.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            if self.family == socket.AF_INET6:
                up.setsockopt(socket.IPPROTO_IPV6, IPV6_TRANSPARENT, 1)
            else:
                up.setsockopt(socket.IPPROTO_IP, IP_TRANSPARENT, 1)
                up.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            up.bind((peer[0], 0))
            up.settimeout(20)
            up.connect(dialled[:2])
            up.settimeout(None)
        except OSError as e:
            self.errors.append("upstream %s -> %s: %s" % (peer, dialled, e))
            c.close()
            up.close()
            return
        t = threading.Thread(target=self._pump, args=(up, c), daemon=True)
        t.start()
        self._pump(c, up)
        t.join(30)
        c.close()
        up.close()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                dst.sendall(b)
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self):
        self.stopping = True
        try:
            self.lst.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.lst.close()
        self.thread.join(10)
