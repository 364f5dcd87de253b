"""ByteRelay: a TCP forwarder that hands bytes on in tiny pieces, one byte per send() by
default, in both directions, with TCP_NODELAY on every socket.

Put in front of pgwardend it makes every message reach the daemon split across as many
reads as it has bytes, so any decision taken at a read() boundary instead of a message
boundary (STYLE.md rule 3) shows up as a failing scenario. Delivery is exact: the same
bytes, in order, with half-close (EOF) passed on once the data before it has gone.

It is one selector loop in one thread, so a test can run several connections through it.
Backpressure is real: a direction stops reading once HIGH_WATER bytes wait to be sent.

A reset is passed on as a reset, after the bytes that arrived before it: a peer that writes
an error and closes with unread input (so its kernel sends RST) is seen by the other side
as it would be directly, error first, then ECONNRESET.

Run as a program it is also a trivial stand-in for pgwardend (same --listen/--upstream
flags, other flags ignored, whole-buffer sends) to exercise the harness without the daemon:
    PGWARDEND=tests/integration/fakerelay.sh pytest tests/integration
"""

import errno
import fcntl
import selectors
import socket
import struct
import sys
import termios
import threading
import time

HIGH_WATER = 256 * 1024
READ_SIZE = 64 * 1024
# How many sends one writable event may do before the loop looks at other sockets, so one
# busy connection cannot starve the rest.
SEND_BUDGET = 4096


# SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
_LINGER_RST = struct.pack("ii", 1, 0)


def _nodelay(sock):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)


_RESET_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT)


class _Direction:
    __slots__ = ("src", "dst", "buf", "eof", "shut", "reset")

    def __init__(self, src, dst):
        self.src = src
        self.dst = dst
        self.buf = bytearray()
        self.eof = False    # src sent FIN (or was reset)
        self.shut = False   # FIN (or RST) passed on to dst
        self.reset = False  # src was reset: end dst with an RST, not a FIN


class _Pair:
    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.c2u = _Direction(client, upstream)
        self.u2c = _Direction(upstream, client)
        self.closed = False
        self.unregistered = set()  # sockets taken out of the selector (reset, or resetting)
        self.parked = set()        # sockets out of the selector until there is work again


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
        # (pair, socket, deadline): resets waiting for the socket's send queue to empty.
        self._pending_resets = []
        self.stopping = False
        # Counters a test may look at (only the loop thread writes them).
        self.connections = 0
        self.bytes_forwarded = 0
        self.bytes_from_client = 0    # received from clients, over all connections
        self.bytes_from_upstream = 0  # received from the target
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
                timeout = 0.01 if self._pending_resets else 1.0
                for key, events in self.sel.select(timeout):
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
                self._finish_resets()
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
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
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
        if events & selectors.EVENT_READ:
            self._read(pair, out_dir)
        if events & selectors.EVENT_WRITE and not pair.closed:
            self._write(pair, in_dir)
        if pair.closed:
            return
        if pair.c2u.reset or pair.u2c.reset:
            # Passing a reset on: _write / _finish_resets close the pair, with an RST.
            if not pair.closed:
                self._rearm(pair)
            return
        if pair.c2u.shut and pair.u2c.shut:
            self._close(pair)
            return
        self._rearm(pair)

    def _read(self, pair, d):
        if d.eof or len(d.buf) >= HIGH_WATER:
            return
        try:
            data = d.src.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno not in _RESET_ERRNOS:
                raise
            self._peer_reset(pair, d.src)
            return
        if not data:
            d.eof = True
        else:
            d.buf += data
            if d.src is pair.client:
                self.bytes_from_client += len(data)
            else:
                self.bytes_from_upstream += len(data)
        self._write(pair, d)

    def _write(self, pair, d):
        budget = SEND_BUDGET
        while d.buf and budget > 0:
            n = len(d.buf) if self.chunk is None else min(self.chunk, len(d.buf))
            try:
                sent = d.dst.send(bytes(d.buf[:n]))
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in _RESET_ERRNOS:
                    raise
                self._peer_reset(pair, d.dst)
                return
            del d.buf[:sent]
            self.sends += 1
            self.bytes_forwarded += sent
            budget -= 1
        if not d.buf and d.eof and not d.shut:
            d.shut = True
            if d.reset:
                # Everything before the reset has been handed to the kernel; the reset itself
                # follows once it has left (an RST discards whatever is still queued).
                self._unregister(pair, d.dst)
                self._pending_resets.append((pair, d.dst, time.monotonic() + 10))
                return
            try:
                d.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _peer_reset(self, pair, dead):
        """dead was reset by its peer: nothing more can reach it, but what it sent before
        the reset still goes to the other side, followed by a reset."""
        to_dead = pair.c2u if dead is pair.upstream else pair.u2c
        from_dead = pair.u2c if dead is pair.upstream else pair.c2u
        to_dead.buf.clear()
        to_dead.shut = True
        if from_dead.shut:
            self._close(pair)
            return
        # The reset may be noticed on a send while what the peer wrote before it still
        # waits in our receive queue (the kernel keeps it readable): collect it first.
        while True:
            try:
                data = dead.recv(READ_SIZE)
            except OSError:
                break
            if not data:
                break
            from_dead.buf += data
            if dead is pair.client:
                self.bytes_from_client += len(data)
            else:
                self.bytes_from_upstream += len(data)
        from_dead.eof = True
        from_dead.reset = True
        self._unregister(pair, dead)
        self._write(pair, from_dead)

    def _unregister(self, pair, sock):
        pair.unregistered.add(sock)
        if sock in pair.parked:
            pair.parked.discard(sock)
            return
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _finish_resets(self):
        still = []
        for pair, sock, deadline in self._pending_resets:
            if pair.closed:
                continue
            try:
                unsent = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ,
                                                        b"\0\0\0\0"))[0]
            except OSError:
                unsent = 0
            if unsent == 0 or time.monotonic() > deadline:
                self._close(pair, reset=sock)
            else:
                still.append((pair, sock, deadline))
        self._pending_resets = still

    def _rearm(self, pair):
        for sock, out_dir, in_dir in ((pair.client, pair.c2u, pair.u2c),
                                      (pair.upstream, pair.u2c, pair.c2u)):
            if sock in pair.unregistered:
                continue
            ev = 0
            if not out_dir.eof and len(out_dir.buf) < HIGH_WATER:
                ev |= selectors.EVENT_READ
            if in_dir.buf:
                ev |= selectors.EVENT_WRITE
            parked = sock in pair.parked
            if ev == 0:
                # Nothing to wait for (its input ended or is backed up, nothing to send it):
                # out of the selector, or an EOF that stays readable would spin the loop.
                if not parked:
                    self.sel.unregister(sock)
                    pair.parked.add(sock)
            elif parked:
                pair.parked.discard(sock)
                self.sel.register(sock, ev, ("io", pair))
            elif self.sel.get_key(sock).events != ev:
                self.sel.modify(sock, ev, ("io", pair))

    def _close(self, pair, reset=None):
        """Close both sockets; `reset` (one of them) is closed with an RST."""
        if pair.closed:
            return
        pair.closed = True
        self.pairs.discard(pair)
        for s in (pair.client, pair.upstream):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            if s is reset:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                except OSError:
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
