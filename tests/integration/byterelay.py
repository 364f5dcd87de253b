"""ByteRelay: a TCP forwarder that hands bytes on in tiny pieces, one byte per send() by
default, in both directions, with TCP_NODELAY on every socket.

Put in front of pgwardend it makes every message reach the daemon split across as many
reads as it has bytes, so any decision taken at a read() boundary instead of a message
boundary (STYLE.md rule 3) shows up as a failing scenario. Delivery is exact: the same
bytes, in order, with half-close (EOF) passed on once the data before it has gone.

It is one selector loop in one thread, so a test can run several connections through it.
Backpressure is real: a direction stops reading once HIGH_WATER bytes wait to be sent.

Run as a program it is also a trivial stand-in for pgwardend (same --listen/--upstream
flags, other flags ignored, whole-buffer sends) to exercise the harness without the daemon:
    PGWARDEND=tests/integration/fakerelay.sh pytest tests/integration
"""

import errno
import selectors
import socket
import sys
import threading

HIGH_WATER = 256 * 1024
READ_SIZE = 64 * 1024
# How many sends one writable event may do before the loop looks at other sockets, so one
# busy connection cannot starve the rest.
SEND_BUDGET = 4096


def _nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)


class _Direction:
    __slots__ = ("src", "dst", "buf", "eof", "shut")

    def __init__(self, src, dst):
        self.src = src
        self.dst = dst
        self.buf = bytearray()
        self.eof = False   # src sent FIN
        self.shut = False  # FIN passed on to dst


class _Pair:
    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.c2u = _Direction(client, upstream)
        self.u2c = _Direction(upstream, client)
        self.closed = False


class ByteRelay:
    """Forward 127.0.0.1:<port> to target (host, port). chunk=1 sends byte by byte;
    chunk=None sends whatever is buffered."""

    def __init__(self, target, chunk=1, listen_host="127.0.0.1", listen_port=0):
        self.target = target
        self.chunk = chunk
        self.sel = selectors.DefaultSelector()
        family = socket.AF_INET6 if ":" in listen_host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((listen_host, listen_port))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.host, self.port = self.listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self.sel.register(self._wake_r, selectors.EVENT_READ, ("wake", None))
        self.pairs = set()
        self.stopping = False
        # Counters a test may look at (only the loop thread writes them).
        self.connections = 0
        self.bytes_forwarded = 0
        self.sends = 0
        self.upstream_failures = 0
        self.thread = threading.Thread(target=self._run, name="byterelay:%d" % self.port,
                                       daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self, timeout=10):
        """Close the listener and every forwarded connection; wait for the loop to end."""
        self.stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError("byte relay loop did not stop within %ss" % timeout)

    # -- loop

    def _run(self):
        try:
            while not self.stopping:
                for key, events in self.sel.select(1.0):
                    kind, pair = key.data
                    if kind == "accept":
                        self._accept()
                    elif kind == "wake":
                        try:
                            self._wake_r.recv(64)
                        except OSError:
                            pass
                    elif not pair.closed:
                        self._service(pair, key.fileobj, events)
        finally:
            for pair in list(self.pairs):
                self._close(pair)
            self.sel.close()
            self.listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                # Refuse the client the way an unreachable server would: reset.
                self.upstream_failures += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                client.close()
                continue
            _nodelay(client)
            _nodelay(upstream)
            pair = _Pair(client, upstream)
            self.pairs.add(pair)
            self.connections += 1
            self.sel.register(client, selectors.EVENT_READ, ("io", pair))
            self.sel.register(upstream, selectors.EVENT_READ, ("io", pair))

    def _service(self, pair, sock, events):
        # sock is the source of one direction and the destination of the other.
        out_dir = pair.c2u if sock is pair.client else pair.u2c
        in_dir = pair.u2c if sock is pair.client else pair.c2u
        try:
            if events & selectors.EVENT_READ:
                self._read(out_dir)
            if events & selectors.EVENT_WRITE:
                self._write(in_dir)
        except OSError as e:
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT):
                raise
            self._close(pair)
            return
        if (pair.c2u.shut and pair.u2c.shut) or pair.closed:
            self._close(pair)
            return
        self._rearm(pair)

    def _read(self, d):
        if d.eof or len(d.buf) >= HIGH_WATER:
            return
        try:
            data = d.src.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        if not data:
            d.eof = True
        else:
            d.buf += data
        self._write(d)

    def _write(self, d):
        budget = SEND_BUDGET
        while d.buf and budget > 0:
            n = len(d.buf) if self.chunk is None else min(self.chunk, len(d.buf))
            try:
                sent = d.dst.send(bytes(d.buf[:n]))
            except (BlockingIOError, InterruptedError):
                return
            del d.buf[:sent]
            self.sends += 1
            self.bytes_forwarded += sent
            budget -= 1
        if not d.buf and d.eof and not d.shut:
            d.shut = True
            try:
                d.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _rearm(self, pair):
        for sock, out_dir, in_dir in ((pair.client, pair.c2u, pair.u2c),
                                      (pair.upstream, pair.u2c, pair.c2u)):
            ev = 0
            if not out_dir.eof and len(out_dir.buf) < HIGH_WATER:
                ev |= selectors.EVENT_READ
            if in_dir.buf:
                ev |= selectors.EVENT_WRITE
            key = self.sel.get_key(sock)
            if ev == 0:
                # Nothing to wait for on this socket right now; EVENT_READ keeps it in the
                # set so an RST still wakes us (recv is skipped while the buffer is full).
                ev = selectors.EVENT_READ
            if key.events != ev:
                self.sel.modify(sock, ev, key.data)

    def _close(self, pair):
        if pair.closed:
            return
        pair.closed = True
        self.pairs.discard(pair)
        for s in (pair.client, pair.upstream):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()


def _parse_hostport(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def main(argv):
    """Stand-in pgwardend: --listen H:P --upstream H:P, other flags (and their values)
    ignored. Whole-buffer sends; exits on SIGTERM/SIGINT."""
    import signal
    listen = upstream = None
    it = iter(argv)
    for a in it:
        if a == "--listen":
            listen = _parse_hostport(next(it))
        elif a == "--upstream":
            upstream = _parse_hostport(next(it))
        elif a.startswith("--") and a not in ("--check-config",):
            next(it, None)
    if not listen or not upstream:
        sys.stderr.write("usage: byterelay.py --listen HOST:PORT --upstream HOST:PORT\n")
        return 2
    relay = ByteRelay(upstream, chunk=None, listen_host=listen[0], listen_port=listen[1])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    relay.start()
    sys.stderr.write('ts=0 level=info event=listening msg="byterelay stand-in on %s:%d"\n'
                     % (relay.host, relay.port))
    sys.stderr.flush()
    done.wait()
    relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
