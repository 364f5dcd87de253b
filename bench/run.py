#!/usr/bin/python3
"""pgwarden side-by-side benchmark: direct PostgreSQL vs pgwardend vs PgBouncer vs HAProxy.

    make bench                      full run, writes docs/BENCHMARKS.md (~20 minutes)
    make bench BENCH_QUICK=1        1 round of 2 s cells, writes $(BUILD)/BENCHMARKS-quick.md
    bench/run.py --daemon build/bench/pgwardend --ctl build/bench/pgwardenctl \
        --work build/bench                                         (what make runs)

Sections (each a function below, each result saved to results.json as soon as it exists):
  tps      pgbench -S, modes x client counts x targets, interleaved round by round
  stream   2M-row COPY TO STDOUT and SELECT: relay CPU ns per byte, RSS during
  connect  pgbench -C (a new session per transaction): direct vs pgwarden (explicit) vs
           steered (pgbench in a throwaway cgroup dialling PostgreSQL's own port, the BPF
           hooks steering it into a pgwardend) vs HAProxy, and over TLS pgwarden-tls vs
           pgbouncer-tls and pgbouncer-fresh-tls; then bench/tlsprobe.py, TLS handshakes
           alone; then bench/connprobe.py, the
           steering cost alone (no login), steered vs explicit through the same relay
  idle     relay RSS with 1,000 idle logged-in sessions

Why interleave: the machine is shared, so load from other users comes and goes. Running
every target for a cell back to back, in an order that rotates each round, spreads that load
over all targets alike, and the ratio to direct is taken within the same round before the
median is taken across rounds.

Knobs (environment): BENCH_QUICK, BENCH_ROUNDS, BENCH_SECONDS, BENCH_TARGETS, BENCH_SECTIONS,
BENCH_MODES, BENCH_CLIENTS, BENCH_SCALE, BENCH_STREAM_ROWS, BENCH_IDLE_CONNS,
BENCH_PGWARDEN_ARGS, BENCH_STEERED, BENCH_PROBE_BLOCKS, BENCH_PROBE_CONNS, BENCH_OUT.
See bench/README.md.
"""

import argparse
import datetime
import functools
import hashlib
import json
import os
import platform
import pwd
import re
import resource
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pgwire  # noqa: E402
import procstat  # noqa: E402
from procstat import cpu_seconds, user_system_ticks  # noqa: E402
import report  # noqa: E402
import targets as T  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "connprobe.py")
TLSPROBE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tlsprobe.py")
AUDIT_TARGETS = ["pgwarden-audit-%s" % m for m in T.AUDIT_MODES]
# pgwardend's `workers: 0`: one per two CPUs of its affinity mask, rounded up.
CPUS = len(os.sched_getaffinity(0))
DEFAULT_WORKERS = (CPUS + 1) // 2
ALL_TARGETS = ["direct", "pgwarden", "pgwarden-wcpu", "pgwarden-policy"] + AUDIT_TARGETS + [
    "pgwarden-tls", "pgwarden-mask", "pgwarden-reuse", "pgwarden-reuse-tls", "baseline",
    "pgbouncer", "pgbouncer-fresh", "pgbouncer-tls",
    "pgbouncer-fresh-tls", "haproxy"]
# What a run measures when BENCH_TARGETS does not say: one audit mode, the default `batch`;
# the others (none, write, always) are there to be named.
DEFAULT_TARGETS = [t for t in ALL_TARGETS if t not in AUDIT_TARGETS or
                   t == "pgwarden-audit-batch"]
# The targets whose clients speak plaintext with no policy: the stream section (a COPY the
# bench policy does not allow, through pgwire.py, which has no TLS) measures these, and
# pgwarden-mask, whose policy is made for it. pgwarden-mask runs in no other section.
PLAIN_TARGETS = ["direct", "pgwarden", "baseline", "pgbouncer", "haproxy"]
STREAM_TARGETS = PLAIN_TARGETS + ["pgwarden-mask"]

LATENCY_PERCENTILES = (50, 99)
ALL_SECTIONS = ["tps", "stream", "connect", "idle"]


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


def script_args(mode):
    """pgbench's script and protocol for a BENCH_MODES value: `simple`, `extended` and
    `prepared` run the select-only script (-S); `tpcb-simple` and the like run the
    tpcb-like one (three UPDATEs, a SELECT and an INSERT in a transaction)."""
    if mode.startswith("tpcb-"):
        return ["-b", "tpcb-like", "-M", mode[len("tpcb-"):]]
    return ["-S", "-M", mode]


def env_list(name, default):
    v = os.environ.get(name, "").strip()
    return [x.strip() for x in v.split(",") if x.strip()] if v else list(default)


def env_int(name, default):
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


class Settings:
    def __init__(self, args):
        self.quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
        self.rounds = env_int("BENCH_ROUNDS", 1 if self.quick else 3)
        self.seconds = env_int("BENCH_SECONDS", 2 if self.quick else 5)
        # baseline: pgwardend built from BENCH_BASELINE (mk/bench.mk), to measure what a
        # change costs against the build before it, in the same run.
        self.baseline = args.baseline_daemon
        self.baseline_rev = args.baseline_rev
        self.targets = env_list("BENCH_TARGETS", [t for t in DEFAULT_TARGETS
                                                  if t != "baseline" or self.baseline])
        if "direct" not in self.targets:
            self.targets.insert(0, "direct")  # every ratio needs it
        self.sections = env_list("BENCH_SECTIONS", ALL_SECTIONS)
        self.modes = env_list("BENCH_MODES", ["simple", "extended", "prepared"])
        self.clients = [int(c) for c in env_list("BENCH_CLIENTS", ["1", "8", "64"])]
        self.scale = env_int("BENCH_SCALE", 10)
        self.stream_rows = env_int("BENCH_STREAM_ROWS", 2000000)
        # A transfer lasts about a second and its CPU per byte moves with how much each
        # wakeup finds waiting, so single transfers spread by up to 50%; rounds of the
        # stream section are cheap (about 25 s), so it runs more of them.
        self.stream_rounds = env_int("BENCH_STREAM_ROUNDS", 1 if self.quick else
                                     max(self.rounds, 7))
        self.idle_conns = env_int("BENCH_IDLE_CONNS", 1000)
        self.probe_blocks = env_int("BENCH_PROBE_BLOCKS", 40 if self.quick else 100)
        self.probe_conns = env_int("BENCH_PROBE_CONNS", 100)
        self.pgwarden_args = shlex.split(os.environ.get("BENCH_PGWARDEN_ARGS", ""))
        # steered in the connect section: "auto" (default) measures it where the machine
        # can steer and says why not elsewhere; "1" makes a failure to steer end the run;
        # "0" leaves it out.
        v = os.environ.get("BENCH_STEERED", "").strip().lower()
        self.steered = {"": "auto", "auto": "auto", "0": "off", "1": "required"}.get(v)
        if self.steered is None:
            raise SystemExit("BENCH_STEERED must be 0, 1 or auto, not %r" % v)
        self.daemon = os.path.abspath(args.daemon)
        self.ctl = os.path.abspath(args.ctl or os.path.join(os.path.dirname(self.daemon),
                                                            "pgwardenctl"))
        self.work = os.path.abspath(args.work)
        default_out = os.path.join(self.work, "BENCHMARKS-quick.md") if self.quick \
            else os.path.join(REPO_ROOT, "docs", "BENCHMARKS.md")
        self.out = os.environ.get("BENCH_OUT") or args.out or default_out

    def as_dict(self):
        return dict(self.__dict__)


# ------------------------------------------------------------------------------------------
# /proc sampling


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


class PeriodicSampler(threading.Thread):
    """Calls sample() every 100 ms while a run goes on, and once more at stop(), so a run
    shorter than a period still has one; a sample() that returns False (the process is
    gone) ends the sampling."""

    def __init__(self, pid, period=0.1):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self._stop_ev = threading.Event()

    def sample(self):
        raise NotImplementedError

    def run(self):
        while not self._stop_ev.is_set() and self.sample():
            self._stop_ev.wait(self.period)

    def stop(self):
        self._stop_ev.set()
        self.join()
        self.sample()


class RssSampler(PeriodicSampler):
    """VmRSS while a transfer runs; keeps the peak and the count."""

    def __init__(self, pid, period=0.1):
        super().__init__(pid, period)
        self.peak, self.samples = 0, 0

    def sample(self):
        try:
            self.peak = max(self.peak, rss_kib(self.pid))
        except (OSError, RuntimeError):
            return False
        self.samples += 1
        return True


class CpuSampler(PeriodicSampler):
    """(wall time, relay CPU seconds, user ticks, system ticks) while a pgbench run goes on,
    so that the CPU of the steady part (every client logged in) can be told from the
    logins', and its user-space share from the kernel's."""

    def __init__(self, pid, period=0.1):
        super().__init__(pid, period)
        self.samples = []

    def sample(self):
        try:
            self.samples.append((time.time(), cpu_seconds(self.pid))
                                + user_system_ticks(self.pid))
        except OSError:
            return False
        return True


def read_tx_log(logdir):
    """Every transaction in pgbench -l files: (client id, latency µs, completion time in
    seconds since the epoch). PostgreSQL 15's line: client_id transaction_no time script_no
    time_epoch time_us [schedule_lag]."""
    out = []
    for name in os.listdir(logdir):
        with open(os.path.join(logdir, name)) as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[2].isdigit():
                    out.append((int(fields[0]), int(fields[2]),
                                int(fields[4]) + int(fields[5]) / 1e6))
    return out


def steady_cpu_per_1k_tx(samples, txs, clients):
    """(relay CPU ms per 1,000 transactions, the user-space share of it) once every client
    has completed a transaction (its logins, and the server logins a relay without a pool
    makes, are behind it; section 3 measures those), from the CPU samples and the
    transaction log; None when the run has too little steady part to tell (under a second,
    or under 100 transactions). The share is None when the ticks are too few to split."""
    first = {}
    for client, _, t in txs:
        first[client] = min(t, first.get(client, t))
    if len(first) < clients or len(samples) < 2:
        return None
    steady_from = max(first.values())
    start = next((s for s in samples if s[0] >= steady_from), None)
    end = samples[-1]
    if start is None or end[0] - start[0] < 1.0:
        return None
    n = sum(1 for _, _, t in txs if start[0] < t <= end[0])
    if n < 100:
        return None
    user, system = end[2] - start[2], end[3] - start[3]
    # Ticks are 10 ms: under 50 of them the share would be off by a few percent.
    share = user / (user + system) if user + system >= 50 else None
    return (end[1] - start[1]) * 1000.0 / n * 1000.0, share


def steady_tps(txs, clients):
    """Transactions per second once every client has completed a transaction, to the last
    completion: the rate with every login behind it, including the server logins that a
    pool opens lazily at a client's first query (pgbench's own TPS leaves out only the
    client logins). None when the steady part is under a second or 100 transactions."""
    first = {}
    for client, _, t in txs:
        first[client] = min(t, first.get(client, t))
    if len(first) < clients:
        return None
    steady_from = max(first.values())
    end = max(t for _, _, t in txs)
    n = sum(1 for _, _, t in txs if t > steady_from)
    if end - steady_from < 1.0 or n < 100:
        return None
    return n / (end - steady_from)


def latency_percentiles(txs):
    """p50/p99 transaction latency in ms from the runs' transactions (read_tx_log()), or {}
    when there are none."""
    lat = [latency_us for _, latency_us, _ in txs]
    if not lat:
        return {}
    lat.sort()
    return {"p%d_ms" % p: lat[min(len(lat) - 1, len(lat) * p // 100)] / 1000.0
            for p in LATENCY_PERCENTILES}


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# ------------------------------------------------------------------------------------------
# the run


class Bench:
    def __init__(self, s):
        self.s = s
        self.targets = {}
        self.unavailable = {}  # target name -> why
        self.incidents = []    # what went wrong in a relay, with the exact scenario
        self.results = {"settings": s.as_dict(), "tps": [], "stream": [], "connect": [],
                        "probe": [], "tls_handshake": [], "idle": [], "incidents": self.incidents,
                        "unavailable": self.unavailable}

    # -- bookkeeping --------------------------------------------------------------------

    def save(self):
        path = os.path.join(self.s.work, "results.json")
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.results, f, indent=1, sort_keys=True)
        os.replace(tmp, path)

    def relay_died(self, target, scenario):
        """Record the exact scenario a relay failed in, keep its log tail, and restart it so
        the remaining cells still run. A relay that cannot restart leaves the run."""
        status = target.proc.returncode if target.proc else None
        self.incidents.append({"target": target.name, "scenario": scenario,
                               "exit_status": status, "log_tail": T.tail(target.log, 30)})
        log("INCIDENT %s: %s (exit status %s)" % (target.name, scenario, status))
        try:
            target.stop()
        except T.TargetError as e:
            log("stopping %s after the incident: %s" % (target.name, e))
        try:
            target.start()
        except T.TargetError as e:
            self.unavailable[target.name] = "restart failed after: %s (%s)" % (scenario, e)
            del self.targets[target.name]
        self.save()

    def rotated(self, names, k):
        names = [n for n in names if n in self.targets]
        k %= max(1, len(names))
        return names[k:] + names[:k]

    # -- setup --------------------------------------------------------------------------

    def setup(self):
        s = self.s
        self.rundir = tempfile.mkdtemp(prefix="pgwarden-bench-run-")
        pw = pwd.getpwnam("postgres")
        os.chown(self.rundir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.rundir, 0o755)
        self.cluster = T.Cluster(self.rundir)
        log("starting PostgreSQL in %s" % self.cluster.dir)
        self.cluster.start()
        self.cluster.psql("CREATE DATABASE %s" % T.DATABASE, database="postgres")
        log("pgbench -i -s %d" % s.scale)
        r = subprocess.run(["pgbench", "-i", "-q", "-s", str(s.scale), "-h", T.HOST, "-p",
                            str(self.cluster.port), T.DATABASE], env=self.cluster.client_env(),
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise T.TargetError("pgbench -i failed: " + r.stderr)
        if "stream" in s.sections:
            # Before any target starts: pgwarden-mask's first catalog read must find it.
            log("creating %s (%d rows)" % (T.STREAM_TABLE, s.stream_rows))
            self.cluster.psql("CREATE TABLE %s (id int NOT NULL, %s text NOT NULL)"
                              % (T.STREAM_TABLE, T.STREAM_MASKED_COLUMN))
            self.cluster.psql("INSERT INTO %s SELECT g, md5(g::text) FROM "
                              "generate_series(1, %d) AS g" % (T.STREAM_TABLE, s.stream_rows))
        self.cluster.psql("VACUUM ANALYZE")

        makers = {
            "direct": lambda: T.DirectTarget(self.cluster, self.rundir),
            "pgwarden": lambda: T.PgwardenTarget(self.cluster, self.rundir, s.daemon,
                                                 s.pgwarden_args),
            "pgwarden-wcpu": lambda: T.PgwardenTarget(self.cluster, self.rundir, s.daemon,
                                                      ["--workers", str(CPUS)] + s.pgwarden_args,
                                                      name="pgwarden-wcpu"),
            # The baseline's own default is one worker per CPU: it runs pgwardend's default
            # count, so the two builds' code is compared, not their defaults.
            "baseline": lambda: T.PgwardenTarget(self.cluster, self.rundir, s.baseline,
                                                 ["--workers", str(DEFAULT_WORKERS)]
                                                 + s.pgwarden_args, name="baseline"),
            "pgwarden-policy": lambda: T.PgwardenPolicyTarget(self.cluster, self.rundir,
                                                              s.daemon, s.ctl,
                                                              s.pgwarden_args),
            "pgwarden-tls": lambda: T.PgwardenTlsTarget(self.cluster, self.rundir, s.daemon,
                                                        s.pgwarden_args),
            "pgwarden-mask": lambda: T.PgwardenMaskTarget(self.cluster, self.rundir, s.daemon,
                                                          s.ctl, s.pgwarden_args),
            "pgwarden-reuse": lambda: T.PgwardenReuseTarget(self.cluster, self.rundir,
                                                            s.daemon, s.pgwarden_args),
            "pgwarden-reuse-tls": lambda: T.PgwardenReuseTlsTarget(self.cluster, self.rundir,
                                                                   s.daemon, s.pgwarden_args),
            "pgbouncer": lambda: T.PgbouncerTarget(self.cluster, self.rundir),
            "pgbouncer-fresh": lambda: T.PgbouncerFreshTarget(self.cluster, self.rundir),
            "pgbouncer-tls": lambda: T.PgbouncerTlsTarget(self.cluster, self.rundir),
            "pgbouncer-fresh-tls": lambda: T.PgbouncerFreshTlsTarget(self.cluster,
                                                                     self.rundir),
            "haproxy": lambda: T.HaproxyTarget(self.cluster, self.rundir),
            "steered": lambda: T.SteeredTarget(self.cluster, self.rundir, s.daemon, s.ctl,
                                               s.pgwarden_args),
        }
        for mode in T.AUDIT_MODES:
            makers["pgwarden-audit-%s" % mode] = functools.partial(
                T.PgwardenPolicyTarget, self.cluster, self.rundir, s.daemon, s.ctl,
                s.pgwarden_args, audit_fsync=mode)
        names = list(s.targets)
        if s.steered != "off" and "connect" in s.sections and "steered" not in names:
            names.append("steered")
        for name in names:
            if name not in makers:
                raise SystemExit("unknown target %r (BENCH_TARGETS)" % name)
            if name.startswith(("pgwarden", "steered")) and not os.access(s.daemon, os.X_OK):
                self.unavailable[name] = "%s is not built" % s.daemon
                continue
            if name == "baseline" and not (s.baseline and os.access(s.baseline, os.X_OK)):
                self.unavailable[name] = "no baseline build (make bench BENCH_BASELINE=REV)"
                continue
            t = makers[name]()
            try:
                t.start()
                self.targets[name] = t
                if name == "steered":
                    log("steered: clients dial %s:%d from cgroup %s, steered into pgwardend "
                        "on %d (pid %d, instance %s)" % (T.HOST, t.port, t.cgroup,
                                                         t.relay_port, t.pid, t.instance))
                else:
                    log("%s listening on %d%s" % (name, t.port, " (pid %d)" % t.pid
                                                  if t.is_relay else ""))
            except T.TargetError as e:
                try:
                    t.stop()
                except T.TargetError as e2:
                    log("stopping %s: %s" % (name, e2))
                self.unavailable[name] = str(e)
                log("%s unavailable: %s" % (name, e))
        if "steered" in self.unavailable and s.steered == "required":
            raise T.TargetError("BENCH_STEERED=1 and the steered target cannot run: %s"
                                % self.unavailable["steered"])
        if "steered" in self.targets:
            t = self.targets["steered"]
            # What the steered cells ran through, for the report's method paragraph.
            self.results["steered"] = {"instance": t.instance, "cgroup": t.cgroup,
                                       "relay_port": t.relay_port, "pg_port": t.port}
            # Stream and idle clients run inside this process, which stays outside the
            # steering cgroup: there they would reach PostgreSQL directly. Worth a line in
            # the report only when BENCH_TARGETS asked for steered everywhere.
            for sec in ("stream", "idle"):
                if sec in s.sections and "steered" in s.targets:
                    self.results.setdefault("not_in_section", {})[sec] = (
                        "steered is measured in tps (if in BENCH_TARGETS) and connect only: "
                        "the %s clients run inside the driver, outside the steering cgroup"
                        % sec)

        self.results["env"] = {
            "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
                "%Y-%m-%d %H:%M UTC"),
            "nproc": os.cpu_count(),
            "clk_tck": procstat.CLK_TCK,
            "cpu_clock": procstat.source(),
            "cpu_model": cpu_model(),
            "mem_total_mib": mem_total_mib(),
            "kernel": platform.release(),
            "os": os_release(),
            "postgres": T.version_of_postgres(),
            "versions": {n: t.version() for n, t in self.targets.items() if t.is_relay},
            "loadavg_before": loadavg(),
            "git_head": git_head(),
            "baseline_rev": s.baseline_rev,
            "pg_settings": {k: self.cluster.psql("SHOW %s" % k) for k in
                            ("max_connections", "shared_buffers", "fsync",
                             "password_encryption")},
        }
        self.save()

    def teardown(self):
        for t in list(self.targets.values()):
            try:
                t.stop()
            except Exception as e:  # keep stopping the rest
                log("stopping %s: %s" % (t.name, e))
        if getattr(self, "cluster", None):
            self.cluster.stop()
            logs = os.path.join(self.s.work, "bench-logs")
            os.makedirs(logs, exist_ok=True)
            for d in (self.rundir, self.cluster.dir):
                for f in os.listdir(d):
                    if f.endswith(".log"):
                        shutil.copy(os.path.join(d, f), logs)
            self.cluster.remove()
        if getattr(self, "rundir", None):
            shutil.rmtree(self.rundir, ignore_errors=True)

    # -- pgbench ------------------------------------------------------------------------

    def pgbench(self, target, mode, clients, seconds, connect=False, warmup=False):
        """One pgbench run; returns its numbers, or None if it failed (incident recorded,
        except for a warm-up that merely ran out of time while its clients logged in)."""
        # With -C, a thread per client: pgbench opens a connection with a blocking call, so
        # clients sharing a thread log in one at a time, and the cell then measures the login
        # latency of two clients at a time, in which PgBouncer wins by answering the login
        # before its new server backend has logged in (that wait moves into the first query).
        jobs = clients if connect else 1 if clients == 1 else min(clients, os.cpu_count() or 2)
        argv = ["pgbench", "-n"] + script_args(mode) + [
            "-c", str(clients), "-j", str(jobs), "-T", str(seconds), "-h", T.HOST, "-p",
            str(target.port)]
        if connect:
            argv.append("-C")
        # Per-transaction latencies (pgbench -l) for p50/p99, in a directory of their own
        # that is read and removed after the run. Not for warm-ups or -C (a login each).
        logdir = None
        if not connect and not warmup:
            logdir = tempfile.mkdtemp(prefix="pgbench-log-", dir=self.rundir)
            argv += ["-l", "--log-prefix", os.path.join(logdir, "tx")]
        argv.append(T.DATABASE)
        scenario = "pgbench %s" % " ".join(argv[1:])
        if target.name == "steered":
            scenario += " (from the steering cgroup)"
        try:
            snap = target.steering_snapshot()
        except T.TargetError as e:
            self.incidents.append({"target": target.name, "scenario": "%s: before the run: %s"
                                   % (scenario, e)})
            log("INCIDENT %s: %s" % (target.name, e))
            return None
        cpu0 = cpu_seconds(target.pid) if target.is_relay else None
        sampler = None
        if target.is_relay and logdir is not None:
            sampler = CpuSampler(target.pid)
            sampler.start()
        t0 = time.monotonic()
        try:
            env = self.cluster.client_env()
            env.update(target.client_env())
            r = subprocess.run(argv, env=env, capture_output=True,
                               text=True, timeout=seconds + 120,
                               preexec_fn=target.client_preexec())
        except subprocess.TimeoutExpired:
            if target.is_relay:
                self.relay_died(target, scenario + ": hung (no result after %ds)"
                                % (seconds + 120))
            return None
        finally:
            if sampler is not None:
                sampler.stop()
        wall = time.monotonic() - t0
        out = r.stdout + r.stderr
        alive = target.alive()
        cpu1 = cpu_seconds(target.pid) if target.is_relay and alive else None
        tx = re_int(r"number of transactions actually processed: (\d+)", out)
        failed = re_int(r"number of failed transactions: (\d+)", out) or 0
        if warmup and alive:
            return None
        if r.returncode != 0 or not alive or not tx:
            why = "exit %d" % r.returncode if alive else "relay exited"
            if alive and r.returncode == 0 and tx == 0 and not failed:
                # pgbench's -T clock includes its logins: on a busy machine C SCRAM logins
                # through a slow-to-accept target can use up a short cell entirely.
                why = "no transaction completed within -T %d (the %d logins took longer)" % (
                    seconds, clients)
            detail = "\n".join(out.strip().splitlines()[-6:])
            if target.is_relay and not alive:
                self.relay_died(target, "%s: %s: %s" % (scenario, why, detail))
            elif target.is_relay:
                self.incidents.append({"target": target.name,
                                       "scenario": "%s: %s" % (scenario, why),
                                       "client_output": detail,
                                       "log_tail": T.tail(target.log, 30)})
                log("INCIDENT %s: %s: %s" % (target.name, scenario, detail))
            else:
                log("direct run failed: %s\n%s" % (scenario, detail))
            return None
        res = {
            "tps": re_float(r"tps = ([\d.]+)", out),
            "latency_ms": re_float(r"latency average = ([\d.]+) ms", out),
            "conn_ms": re_float(r"average connection time = ([\d.]+) ms", out),
            "transactions": tx,
            "failed": failed,
            "wall_s": round(wall, 3),
        }
        txs = []
        if logdir is not None:
            txs = read_tx_log(logdir)
            res.update(latency_percentiles(txs))
            res["steady_tps"] = steady_tps(txs, clients)
            shutil.rmtree(logdir, ignore_errors=True)
        if target.is_relay:
            res["relay_cpu_s"] = round(cpu1 - cpu0, 3)
            # The whole run's CPU, logins included; the per-transaction figure the report
            # judges is the steady part's when the run has one.
            res["cpu_ms_per_1k_tx_with_logins"] = (cpu1 - cpu0) * 1000.0 / tx * 1000.0
            steady = steady_cpu_per_1k_tx(sampler.samples, txs, clients) if sampler else None
            res["cpu_ms_per_1k_tx"] = steady[0] if steady is not None else \
                res["cpu_ms_per_1k_tx_with_logins"]
            res["cpu_steady"] = steady is not None
            if steady is not None and steady[1] is not None:
                # What the relay's own code costs per transaction, and what the kernel's
                # socket work on its behalf costs (issue #15 reads the second as a floor).
                res["cpu_user_ms_per_1k_tx"] = steady[0] * steady[1]
                res["cpu_kernel_ms_per_1k_tx"] = steady[0] * (1.0 - steady[1])
        if snap is not None:
            proof = self.steering_proof(target, snap, tx, scenario)
            if proof is None:
                return None
            res["steering"] = proof
        return res

    def steering_proof(self, target, snap, sessions, scenario):
        """The steered target's proof that `sessions` went through the relay since snap, or
        None after recording an incident: a steered result that went anywhere but through
        the relay must not be reported."""
        try:
            proof, why = target.steering_check(snap, sessions)
        except T.TargetError as e:
            proof, why = None, str(e)
        if not why:
            return proof
        self.incidents.append({"target": target.name, "scenario": "%s: steering check failed, "
                               "result discarded: %s" % (scenario, why),
                               "log_tail": T.tail(target.log, 30)})
        log("INCIDENT %s: %s: %s" % (target.name, scenario, why))
        return None

    def section_tps(self):
        s = self.s
        cells = [(m, c) for m in s.modes for c in s.clients]
        # steered only when asked for by name: by default it is a connect-section target.
        names = [n for n in ALL_TARGETS + ["steered"] if n in self.targets and
                 (n != "steered" or n in s.targets) and n != "pgwarden-mask"]
        # Warm up once: fills PostgreSQL's buffers and PgBouncer's server pool, so round 1
        # is not charged for what later rounds get for free. Long enough for the largest
        # client count to finish its SCRAM logins on a busy machine.
        for n in names:
            self.pgbench(self.targets[n], "simple", max(s.clients), 3, warmup=True)
        for rnd in range(s.rounds):
            self.note_load("tps", rnd)
            for k, (mode, clients) in enumerate(cells):
                for name in self.rotated(names, rnd + k):
                    t = self.targets[name]
                    res = self.pgbench(t, mode, clients, s.seconds)
                    if res is None:
                        continue
                    res.update(round=rnd, target=name, mode=mode, clients=clients)
                    self.results["tps"].append(res)
                    log("tps r%d %-8s c=%-3d %-9s %9.0f tps %7.3f ms%s" % (
                        rnd + 1, mode, clients, name, res["tps"], res["latency_ms"],
                        "  %.1f ms cpu/1k tx" % res["cpu_ms_per_1k_tx"]
                        if "cpu_ms_per_1k_tx" in res else ""))
                self.save()

    def section_connect(self):
        s = self.s
        # HAProxy rides along as the floor: what any TCP relay pays per new session (accept,
        # upstream connect, teardown), so pgwarden's per-session CPU has a yardstick.
        # steered sits next to pgwarden in the rotation: their difference is the steering
        # cost, so they should share the machine's minute as closely as the rotation allows.
        # The TLS relays' rows are their handshake rate: a TLS handshake, then the SCRAM
        # login, per transaction (issue #10); pgbouncer-fresh-tls logs in to a new server
        # backend per session as pgwardend does, pgbouncer-tls reuses its pooled ones.
        names = [n for n in ("direct", "pgwarden", "steered", "pgbouncer", "haproxy",
                             "pgwarden-tls", "pgbouncer-tls", "pgbouncer-fresh-tls",
                             "pgwarden-reuse", "pgwarden-reuse-tls")
                 if n in self.targets]
        for rnd in range(s.rounds):
            self.note_load("connect", rnd)
            for name in self.rotated(names, rnd):
                res = self.pgbench(self.targets[name], "simple", 8, s.seconds, connect=True)
                if res is None:
                    continue
                res.update(round=rnd, target=name, mode="simple", clients=8)
                self.results["connect"].append(res)
                log("connect r%d %-9s %7.0f tps, %.3f ms/connection%s" % (
                    rnd + 1, name, res["tps"], res["conn_ms"] or float("nan"),
                    ", %d connects steered" % res["steering"]["steered_ipv4"]
                    if "steering" in res else ""))
            self.save()
            for name in self.rotated([n for n in ("pgwarden-tls", "pgbouncer-tls")
                                      if n in self.targets], rnd):
                self.tls_probe(self.targets[name], rnd)
            self.steering_probe(rnd)

    def tls_probe(self, target, rnd):
        """The TLS handshake rate alone: bench/tlsprobe.py (connect, SSLRequest, a full
        handshake, reset; no login) for BENCH_SECONDS against a TLS-terminating relay, with
        the relay's CPU per 1,000 handshakes. pgbench -C's TLS rows include a server login
        that only pgwardend performs per session; this compares the handshakes."""
        s = self.s
        threads = 4
        scenario = "tlsprobe: %d threads, %d s" % (threads, s.seconds)
        argv = [sys.executable, TLSPROBE, T.HOST, str(target.port), str(s.seconds),
                str(threads)]
        cpu0 = cpu_seconds(target.pid)
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=s.seconds + 120)
            out = json.loads(r.stdout) if r.stdout.strip() else {"error": r.stderr.strip()}
            failed = out.get("error") if r.returncode == 0 else (
                out.get("error") or "exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
        except subprocess.TimeoutExpired:
            failed = "no result within %d s" % (s.seconds + 120)
        except ValueError:
            failed = "output is not JSON: %s" % (r.stdout + r.stderr).strip()[-300:]
        alive = target.alive()
        if not failed and out["errors"] > out["handshakes"] // 100:
            failed = "%d of %d handshakes failed, first: %s" % (
                out["errors"], out["handshakes"] + out["errors"], out["first_error"])
        if failed or not alive:
            if not alive:
                self.relay_died(target, "%s: %s" % (scenario, failed or "relay exited"))
            else:
                self.incidents.append({"target": target.name,
                                       "scenario": "%s: %s" % (scenario, failed),
                                       "log_tail": T.tail(target.log, 30)})
                log("INCIDENT %s: %s: %s" % (target.name, scenario, failed))
            return
        cpu = cpu_seconds(target.pid) - cpu0
        res = {"round": rnd, "target": target.name, "mode": "handshake", "clients": threads,
               "tps": out["handshakes"] / out["seconds"], "handshakes": out["handshakes"],
               "errors": out["errors"], "relay_cpu_s": round(cpu, 3),
               "cpu_ms_per_1k_tx": cpu * 1000.0 / out["handshakes"] * 1000.0}
        self.results["tls_handshake"].append(res)
        self.save()
        log("tls r%d %-13s %7.0f handshakes/s, %.1f ms relay cpu / 1k handshakes" % (
            rnd + 1, target.name, res["tps"], res["cpu_ms_per_1k_tx"]))

    def steering_probe(self, rnd):
        """Steering's own cost per connection, at microsecond resolution: bench/connprobe.py
        (connect, SSLRequest, answer, close; no login) against the steered target's
        pgwardend, dialling its listener from outside the cgroup (explicit) and PostgreSQL's
        port from inside (steered, rewritten to the same listener), one process alternating
        short blocks of the two in ABBA order. Same relay, same client process: the
        difference is the BPF hooks plus the relay's lookup."""
        t = self.targets.get("steered")
        if t is None:
            return
        s = self.s
        scenario = "connprobe: %d blocks of %d connections per leg" % (s.probe_blocks,
                                                                        s.probe_conns)
        try:
            snap = t.steering_snapshot()
        except T.TargetError as e:
            self.incidents.append({"target": t.name, "scenario": "%s: %s" % (scenario, e)})
            return
        argv = [sys.executable, PROBE, T.HOST, str(t.explicit_port), str(t.port), t.cgroup,
                str(t.pid), str(s.probe_blocks), str(s.probe_conns)]
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
            out = json.loads(r.stdout) if r.stdout.strip() else {"error": r.stderr.strip()}
            failed = out.get("error") if r.returncode == 0 else (
                out.get("error") or "exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
        except subprocess.TimeoutExpired:
            failed = "no result within 600 s"
        except ValueError:
            failed = "output is not JSON: %s" % (r.stdout + r.stderr).strip()[-300:]
        if failed or not t.alive():
            failed = failed or "relay exited"
            if not t.alive():
                self.relay_died(t, "%s: %s" % (scenario, failed))
            else:
                self.incidents.append({"target": t.name, "scenario": "%s: %s" % (scenario,
                                                                                  failed),
                                       "log_tail": T.tail(t.log, 30)})
                log("INCIDENT %s: %s: %s" % (t.name, scenario, failed))
            return
        n = s.probe_blocks * s.probe_conns
        proof = self.steering_proof(t, snap, n, scenario)
        if proof is None:
            return
        res = {"round": rnd, "connections_per_leg": n, "steering": proof}
        for leg in ("explicit", "steered"):
            o = out[leg]
            o["median_us"] = statistics.median(o["block_median_us"])
            o["relay_cpu_s"] = round(o["relay_cpu_s"], 3)
            o["relay_cpu_us_per_conn"] = o["relay_cpu_s"] * 1e6 / n
            res[leg] = o
        self.results["probe"].append(res)
        self.save()
        pairs = [st - ex for ex, st in zip(res["explicit"]["block_median_us"],
                                           res["steered"]["block_median_us"])]
        log("probe r%d steered - explicit %+.1f us per connection (median of %d block pairs; "
            "explicit's median block %.1f us; %d connects steered)" % (
                rnd + 1, statistics.median(pairs), len(pairs),
                res["explicit"]["median_us"], proof["steered_ipv4"]))

    # -- streaming ----------------------------------------------------------------------

    def stream_sql(self, kind, fmt):
        """The same rows for every target: the whole streaming table, by SELECT (binary
        through the extended protocol, see pgwire.py) or by COPY in the format asked for.
        Named columns of a table, so a masking relay sees where each comes from."""
        if kind == "copy":
            return "COPY %s (id, %s) TO STDOUT%s" % (
                T.STREAM_TABLE, T.STREAM_MASKED_COLUMN,
                " (FORMAT binary)" if fmt == "binary" else "")
        return "SELECT id, %s FROM %s" % (T.STREAM_MASKED_COLUMN, T.STREAM_TABLE)

    def stream_once(self, target, kind, fmt):
        scenario = "%d-row %s (%s) through one session" % (self.s.stream_rows, kind.upper(),
                                                           fmt)
        relay = target.is_relay
        idle = rss_kib(target.pid) if relay else None
        try:
            conn = pgwire.Conn(T.HOST, target.port, T.USER, T.DATABASE,
                               self.cluster.password)
        except (OSError, pgwire.PgError) as e:
            if relay:
                self.incidents.append({"target": target.name, "scenario": "login before "
                                       + scenario, "error": str(e)})
            return None
        sampler = RssSampler(target.pid) if relay else None
        sample = pgwire.Sample()
        try:
            if sampler:
                sampler.start()
            cpu0 = cpu_seconds(target.pid) if relay else None
            t0 = time.monotonic()
            nbytes = conn.stream(self.stream_sql(kind, fmt),
                                 binary=(kind == "select" and fmt == "binary"), sample=sample)
            wall = time.monotonic() - t0
            cpu1 = cpu_seconds(target.pid) if relay else None
        except (OSError, pgwire.PgError) as e:
            if sampler:
                sampler.stop()
            conn.sock.close()
            if relay and not target.alive():
                self.relay_died(target, scenario + ": " + str(e))
            elif relay:
                self.incidents.append({"target": target.name, "scenario": scenario,
                                       "error": str(e), "log_tail": T.tail(target.log, 30)})
            return None
        if sampler:
            sampler.stop()
        conn.close()
        masked = target.name == "pgwarden-mask"
        try:
            checked = check_stream_sample(sample, kind, fmt, masked)
        except ValueError as e:
            # A transfer whose rows are not what they must be measured something else: a
            # masking relay that passed a value in clear, or any relay that changed one.
            self.incidents.append({"target": target.name, "scenario": "%s: rows received "
                                   "are wrong, result discarded: %s" % (scenario, e)})
            log("INCIDENT %s" % self.incidents[-1]["scenario"])
            return None
        res = {"bytes": nbytes, "wall_s": round(wall, 3),
               "mib_per_s": nbytes / wall / 1048576.0, "rows_checked": checked,
               "masked": masked}
        if relay:
            res.update(relay_cpu_s=round(cpu1 - cpu0, 3),
                       cpu_ns_per_byte=(cpu1 - cpu0) * 1e9 / nbytes,
                       rss_idle_kib=idle, rss_peak_kib=sampler.peak,
                       rss_samples=sampler.samples)
        return res

    def section_stream(self):
        names = [n for n in STREAM_TARGETS if n in self.targets]
        for rnd in range(self.s.stream_rounds):
            self.note_load("stream", rnd)
            for k, (kind, fmt) in enumerate(report.STREAM_KINDS):
                for name in self.rotated(names, rnd + k):
                    res = self.stream_once(self.targets[name], kind, fmt)
                    if res is None:
                        continue
                    res.update(round=rnd, target=name, kind=kind, format=fmt)
                    self.results["stream"].append(res)
                    self.check_stream_bytes(res)
                    log("stream r%d %-6s %-6s %-13s %6.1f MiB in %5.2fs, %d rows checked%s" % (
                        rnd + 1, kind, fmt, name, res["bytes"] / 1048576.0, res["wall_s"],
                        res["rows_checked"],
                        "  %.2f ns/B, RSS %d -> peak %d KiB" % (
                            res["cpu_ns_per_byte"], res["rss_idle_kib"],
                            res["rss_peak_kib"]) if "cpu_ns_per_byte" in res else ""))
                self.save()

    def check_stream_bytes(self, res):
        """A relay forwards results byte for byte (and partial-last-N keeps every value's
        length), so after the query is sent its client must receive exactly what direct's
        did. A difference is a relay bug worth a line."""
        direct = [r for r in self.results["stream"] if r["target"] == "direct"
                  and r["kind"] == res["kind"] and r["format"] == res["format"]]
        if res["target"] == "direct" or not direct or direct[0]["bytes"] == res["bytes"]:
            return
        self.incidents.append({"target": res["target"], "scenario": "%d-row %s (%s): the "
                               "client received %d bytes, direct's client %d" % (
                                   self.s.stream_rows, res["kind"].upper(), res["format"],
                                   res["bytes"], direct[0]["bytes"])})
        log("INCIDENT %s" % self.incidents[-1]["scenario"])

    def note_load(self, section, rnd):
        """Load average at the start of every round: how busy the shared machine was."""
        self.results.setdefault("load", []).append(
            {"section": section, "round": rnd, "loadavg": loadavg()})

    # -- idle memory --------------------------------------------------------------------

    def section_idle(self):
        import psycopg  # Debian's python3-psycopg (libpq underneath)

        n = self.s.idle_conns
        # PgBouncer keeps the server connections it opened for this test in its pool, so the
        # PgBouncers go last, and each is stopped once measured: the targets after it need
        # those PostgreSQL slots. The TLS targets' clients ask for sslmode=require, so their
        # figure is the whole idle session with its TLS state.
        order = [x for x in ("pgwarden", "baseline", "pgwarden-tls", "haproxy", "pgbouncer",
                             "pgbouncer-tls") if x in self.targets]
        # The PgBouncers' pools, and the pgwardends that keep server connections, still hold
        # the ones the tps section opened (64 each): started afresh, they give those slots
        # back before anyone opens 1,000.
        for name, t in self.targets.items():
            if isinstance(t, (T.PgbouncerTarget, T.PgwardenReuseTarget)):
                t.stop()
                if name in order:
                    t.start()
        for name in order:
            t = self.targets[name]
            sslmode = t.client_env().get("PGSSLMODE", "disable")
            self.cluster.wait_backends_below(100)
            time.sleep(1.0)
            idle = rss_kib(t.pid)
            conns = []
            err = None
            t0 = time.monotonic()
            try:
                for _ in range(n):
                    conns.append(psycopg.connect(
                        host=T.HOST, port=t.port, user=T.USER, dbname=T.DATABASE,
                        password=self.cluster.password, sslmode=sslmode,
                        gssencmode="disable", autocommit=True, connect_timeout=30))
            except psycopg.Error as e:
                err = str(e).strip()
            if sslmode == "require" and not all(c.pgconn.ssl_in_use for c in conns):
                err = err or "a session asked for TLS is not using it"
            opened = len(conns)
            login_s = time.monotonic() - t0
            # Prove the sessions are logged in and usable, then let them sit idle.
            if conns:
                conns[0].execute("SELECT 1").fetchone()
                conns[-1].execute("SELECT 1").fetchone()
            time.sleep(2.0)
            held = rss_kib(t.pid) if t.alive() else None
            for c in conns:
                c.close()
            time.sleep(1.0)
            after = rss_kib(t.pid) if t.alive() else None
            if err or held is None:
                scenario = "opening %d idle sessions: failed after %d: %s" % (n, opened, err)
                if not t.alive():
                    self.relay_died(t, scenario)
                else:
                    self.incidents.append({"target": name, "scenario": scenario,
                                           "log_tail": T.tail(t.log, 30)})
            if isinstance(t, T.PgbouncerTarget):
                t.stop()
            res = {"target": name, "connections": opened, "requested": n, "sslmode": sslmode,
                   "rss_idle_kib": idle, "rss_held_kib": held, "rss_after_close_kib": after,
                   "login_s": round(login_s, 2)}
            if held is not None and opened:
                res["kib_per_conn"] = (held - idle) / opened
            self.results["idle"].append(res)
            log("idle %-9s %d sessions: RSS %s -> %s KiB (%s KiB/session), after close %s" % (
                name, opened, idle, held,
                "%.2f" % res["kib_per_conn"] if "kib_per_conn" in res else "?", after))
            self.save()

    # -- main ---------------------------------------------------------------------------

    def run(self):
        s = self.s
        t0 = time.monotonic()
        self.setup()
        for section in s.sections:
            if section not in ALL_SECTIONS:
                raise SystemExit("unknown section %r (BENCH_SECTIONS)" % section)
        for section in ALL_SECTIONS:  # fixed order: idle last (see section_idle)
            if section in s.sections:
                log("section %s" % section)
                getattr(self, "section_" + section)()
        self.results["env"]["loadavg_after"] = loadavg()
        self.results["env"]["duration_s"] = round(time.monotonic() - t0)
        self.save()


# ------------------------------------------------------------------------------------------
# small helpers


COPY_BINARY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"


def stream_row_fields(body, kind, fmt):
    """(id, payload) of one sampled row body: a DataRow's two fields, or one COPY row (a
    text line; a binary tuple, after the file header in the first message). None for a body
    that holds no row (the binary trailer); ValueError for anything malformed."""
    if kind == "copy" and fmt == "text":
        line = body[:-1] if body.endswith(b"\n") else None
        if line is None or line.count(b"\t") != 1:
            raise ValueError("COPY text row %r" % body[:80])
        return tuple(line.split(b"\t"))
    try:
        return binary_row_fields(body, kind)
    except struct.error as e:
        raise ValueError("%s row %r: %s" % (kind, body[:80], e))


def binary_row_fields(body, kind):
    pos = 0
    if kind == "copy":
        if body.startswith(COPY_BINARY_SIGNATURE):
            ext = struct.unpack_from("!I", body, 15)[0]
            pos = 19 + ext
        if body[pos:] in (b"", b"\xff\xff"):
            return None  # the header alone, or the trailer
    count = struct.unpack_from("!h", body, pos)[0]
    if count != 2:
        raise ValueError("%d fields in a row, want 2" % count)
    pos += 2
    fields = []
    for _ in range(2):
        n = struct.unpack_from("!i", body, pos)[0]
        if n < 0 or pos + 4 + n > len(body):
            raise ValueError("field length %d in a %d-byte row" % (n, len(body)))
        fields.append(bytes(body[pos + 4:pos + 4 + n]))
        pos += 4 + n
    if pos != len(body):
        raise ValueError("%d bytes after the row's fields" % (len(body) - pos))
    return tuple(fields)


def check_stream_sample(sample, kind, fmt, masked):
    """Check the sampled rows of the streaming table (id, md5(id::text)): the id intact, the
    payload the md5 of the id, or, through the masking target, that md5 with all but its
    last four characters X (partial-last-4). Returns how many rows were checked; raises
    ValueError on the first wrong row, or when too few rows were sampled to mean anything."""
    checked = 0
    for body in sample.first + sample.later:
        fields = stream_row_fields(body, kind, fmt)
        if fields is None:
            continue
        raw_id, payload = fields
        row_id = struct.unpack("!i", raw_id)[0] if fmt == "binary" else int(raw_id)
        clear = hashlib.md5(str(row_id).encode()).hexdigest().encode()
        want = b"X" * 28 + clear[-4:] if masked else clear
        if payload != want:
            raise ValueError("row id %d: payload %r, want %r" % (row_id, payload[:64], want))
        checked += 1
    if checked < 100:
        raise ValueError("only %d rows sampled" % checked)
    return checked


def re_float(pattern, text):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


def re_int(pattern, text):
    m = re.search(pattern, text)
    return int(m.group(1)) if m else None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def mem_total_mib():
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) // 1024


def os_release():
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return ""


def git_head():
    """HEAD, plus a note when the relay was built from a tree with uncommitted changes to
    its sources (several engineers share the tree), so the report names what it measured."""
    r = subprocess.run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"],
                       capture_output=True, text=True)
    head = r.stdout.strip()
    d = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--", "userspace"],
                       capture_output=True, text=True)
    dirty = len([x for x in d.stdout.splitlines() if x.strip()])
    return head + (" + %d uncommitted file(s) under userspace/" % dirty if dirty else "")


def raise_nofile():
    """1,000 client sockets here, and relays holding two fds per session, need more than
    the default 1,024; children inherit the raised soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < 4 * 1000 + 100:
        log("warning: RLIMIT_NOFILE hard limit %d is low for the idle test" % want)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--daemon", default="build/pgwardend", help="pgwardend binary")
    ap.add_argument("--ctl", help="pgwardenctl binary (default: beside --daemon)")
    ap.add_argument("--baseline-daemon", help="pgwardend of an earlier build, run as the "
                    "`baseline` target")
    ap.add_argument("--baseline-rev", help="the git revision it was built from (for the report)")
    ap.add_argument("--work", default="build/bench", help="results.json and logs go here")
    ap.add_argument("--out", help="report path (default docs/BENCHMARKS.md; quick mode: "
                    "WORK/BENCHMARKS-quick.md)")
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite the report from WORK/results.json without running")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (PostgreSQL and the relays run as postgres)")
    s = Settings(args)
    os.makedirs(s.work, exist_ok=True)
    if args.report_only:
        with open(os.path.join(s.work, "results.json")) as f:
            results = json.load(f)
        report.write(results, s.out)
        log("wrote %s" % s.out)
        return

    # SIGTERM/SIGHUP (make killed, terminal closed) unwind like ^C, so teardown runs.
    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    raise_nofile()

    b = Bench(s)
    try:
        b.run()
    except KeyboardInterrupt:
        log("interrupted; stopping everything this run started")
        b.teardown()
        raise SystemExit(130)
    except BaseException:
        b.teardown()
        raise
    b.teardown()
    report.write(b.results, s.out)
    log("wrote %s (raw numbers: %s)" % (s.out, os.path.join(s.work, "results.json")))
    if b.incidents:
        log("%d relay incident(s), see the report" % len(b.incidents))


if __name__ == "__main__":
    main()
