#!/usr/bin/python3
"""connprobe: what steering adds to one connection, without PostgreSQL in it.

    connprobe.py HOST RELAY_PORT PG_PORT CGROUP RELAY_PID BLOCKS CONNS

One process measures both legs, alternating blocks of CONNS connections, BLOCKS blocks per
leg, in ABBA order (explicit then steered, then steered then explicit, ...):

  explicit  from the cgroup this process started in, connect to HOST:RELAY_PORT (an explicit
            listener of the same pgwardend): the hooks are not attached there, nothing is
            rewritten;
  steered   after moving itself into CGROUP (the steering cgroup), connect to HOST:PG_PORT
            (PostgreSQL's port), which the BPF hooks rewrite to the daemon's steering
            listener (which takes steered, recorded connections only).

A connection is socket(), connect(), an SSLRequest, the one-byte answer, close. pgwardend
answers an SSLRequest itself (it offers no encryption yet), after accept() and its steering
lookup, so the round trip covers what steering adds to a connection: the connect4 rewrite
and origin record, the sockops record at TCP_CONNECT, the relay's map lookup and delete, and
the cleanup at close. No login follows, so no SCRAM and no server backend: the microseconds
steering costs are not buried under the milliseconds of a login the way they are in
pgbench -C.

Why one process that moves between cgroups (a socket belongs to the cgroup its creator was
in when it was made; the move happens between blocks, outside the timing): two processes,
one per leg, end up on different CPUs relative to the relay's threads, and on a 2-CPU
machine that placement alone moved the legs apart by tens of microseconds per round.

The client closes with SO_LINGER 0 (a reset, no TIME_WAIT): tens of thousands of probes
must not hold ephemeral ports that other users of the machine need.

Prints one JSON object: per leg, each block's median, mean, 10th percentile and minimum in
microseconds, and the relay's CPU time (all of RELAY_PID's threads, bench/procstat.py) spent during that leg's
blocks. Exits 1 with {"error": ...} on any failure, after moving back to where it started.
"""

import json
import os
import socket
import statistics
import struct
import sys
import time

from procstat import cpu_seconds

SSL_REQUEST = struct.pack("!ii", 8, 80877103)
LINGER_RESET = struct.pack("ii", 1, 0)


def cgroup2_root():
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1].replace("\\040", " ")
    raise RuntimeError("no cgroup2 mount")


def own_cgroup():
    """The cgroup v2 directory this process is in now."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return os.path.join(cgroup2_root(), line[3:].strip().lstrip("/"))
    raise RuntimeError("no cgroup v2 entry in /proc/self/cgroup")


def move_to(cgroup):
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))


def block(host, port, count):
    clock = time.perf_counter_ns
    times = []
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
            raise RuntimeError("answer %r to SSLRequest on port %d" % (answer, port))
    us = sorted(t / 1000.0 for t in times)
    return {"median_us": statistics.median(us), "mean_us": statistics.fmean(us),
            "p10_us": us[len(us) // 10], "min_us": us[0]}


def main():
    host, relay_port, pg_port, cgroup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        sys.argv[4]
    relay_pid, blocks, conns = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
    home = own_cgroup()
    legs = {"explicit": (home, relay_port), "steered": (cgroup, pg_port)}
    out = {leg: {"block_median_us": [], "block_mean_us": [], "block_p10_us": [],
                 "block_min_us": [], "relay_cpu_s": 0.0} for leg in legs}
    try:
        for b in range(blocks):
            for leg in (("explicit", "steered") if b % 2 == 0 else ("steered", "explicit")):
                where, port = legs[leg]
                move_to(where)
                c0 = cpu_seconds(relay_pid)
                r = block(host, port, conns)
                out[leg]["relay_cpu_s"] += cpu_seconds(relay_pid) - c0
                for k, v in r.items():
                    out[leg]["block_" + k].append(v)
    except (OSError, RuntimeError) as e:
        move_to(home)
        print(json.dumps({"error": str(e)}))
        sys.exit(1)
    move_to(home)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
