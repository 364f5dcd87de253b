#!/usr/bin/python3
"""connprobe: the time one connection costs a client, without PostgreSQL in it.

    connprobe.py HOST PORT COUNT

COUNT times, one after another: socket(), connect() to HOST:PORT, send an SSLRequest, wait
for the one-byte answer, close. pgwardend answers an SSLRequest itself (it offers no
encryption yet), after accept() and after its steering lookup, so the round trip covers what
steering adds to a connection: the BPF connect4 rewrite and origin record, the sockops
re-key at ESTABLISHED, the relay's map lookup and delete, and the cleanup at close. No login
follows, so no SCRAM and no server backend: the few microseconds steering costs are not
buried under milliseconds of login the way they are in pgbench -C.

The client closes with SO_LINGER 0 (a reset, no TIME_WAIT): tens of thousands of probes
must not hold ephemeral ports that other users of the machine need.

Prints one JSON object: per-connection times in microseconds (median, mean, p10, p90) and
how many connections were made.
"""

import json
import socket
import statistics
import struct
import sys
import time

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
LINGER_RESET = struct.pack("ii", 1, 0)


def main():
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    times = []
    clock = time.perf_counter_ns
    for _ in range(count):
        t0 = clock()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect((host, port))
        s.sendall(SSL_REQUEST)
        answer = s.recv(1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        s.close()
        times.append(clock() - t0)
        if answer not in (b"N", b"S"):
            print(json.dumps({"error": "answer %r to SSLRequest" % answer}))
            sys.exit(1)
    times.sort()
    us = [t / 1000.0 for t in times]
    print(json.dumps({"connections": count, "median_us": statistics.median(us),
                      "mean_us": statistics.fmean(us), "p10_us": us[len(us) // 10],
                      "p90_us": us[len(us) * 9 // 10]}))


if __name__ == "__main__":
    main()
