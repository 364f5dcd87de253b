"""targets: the throwaway PostgreSQL cluster and every relay the benchmark puts in front of it.

A target is something a client can dial: `direct` (PostgreSQL itself), `pgwarden`,
`pgbouncer`, `haproxy`, and later `steered` (see SteeredTarget). Each relay is one process
whose pid the driver samples for CPU time and RSS, so every relay is started in the
foreground (no daemonising, no wrapper like runuser in between) and the pid we hold is the
relay's own.

PostgreSQL, PgBouncer and HAProxy refuse to run as root or should not, so they run as the
`postgres` OS user in a temporary directory it owns. pgwardend runs as root, the way it is
deployed (it owns BPF and nftables state). Ports are picked outside the kernel's ephemeral
range (32768-60999) so other engineers' clients never collide with our listeners.
"""

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pgwire

PG_BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
USER = "bench"
DATABASE = "bench"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class TargetError(Exception):
    """A target could not be started or stopped; the message says which and why."""


def free_port():
    """A loopback port nobody listens on, outside the ephemeral range. There is a window
    between this check and the bind of whoever uses it; start() retries on a clash."""
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind((HOST, port))
                return port
            except OSError:
                continue
    raise TargetError("no free port in 20000-32000")


def wait_port(port, proc, what, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise TargetError("%s exited with status %d while starting" % (what, proc.returncode))
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TargetError("%s did not listen on %d within %.0fs" % (what, port, timeout))


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class Cluster:
    """A PostgreSQL 15 cluster in a temp directory: scram-sha-256 on 127.0.0.1 only,
    max_connections sized for the 1,000-idle-connection test plus PgBouncer's pool."""

    def __init__(self, workdir, max_connections=1100, shared_buffers="256MB"):
        self.dir = tempfile.mkdtemp(prefix="pgwarden-bench-", dir=workdir)
        pw = pwd.getpwnam("postgres")
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        os.chown(self.dir, self.uid, self.gid)
        os.chmod(self.dir, 0o700)
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "postgres.log")
        self.password = "bench-" + os.urandom(9).hex()
        self.port = None
        self.max_connections = max_connections
        self.shared_buffers = shared_buffers
        self.started = False

    def as_postgres(self, argv, **kw):
        """Run a command as the postgres user; output is captured for error messages."""
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        r = subprocess.run(argv, user=self.uid, group=self.gid, extra_groups=[], cwd=self.dir,
                           text=True, **kw)
        if r.returncode != 0:
            raise TargetError("%s failed (%d):\n%s" % (" ".join(argv), r.returncode, r.stdout))
        return r.stdout

    def client_env(self):
        """Environment for libpq clients (pgbench, psql, psycopg): plaintext on purpose, so
        every target is compared on the same wire; TLS cost is a separate question."""
        env = dict(os.environ)
        env.update(PGPASSWORD=self.password, PGSSLMODE="disable", PGGSSENCMODE="disable",
                   PGUSER=USER, PGDATABASE=DATABASE, PGHOST=HOST)
        return env

    def start(self):
        pwfile = os.path.join(self.dir, "pwfile")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        os.chown(pwfile, self.uid, self.gid)
        self.as_postgres([os.path.join(PG_BINDIR, "initdb"), "-D", self.data, "-U", USER,
                          "--pwfile", pwfile, "--auth-host=scram-sha-256",
                          "--auth-local=scram-sha-256", "-E", "UTF8", "--no-instructions"])
        os.unlink(pwfile)
        for attempt in range(5):
            self.port = free_port()
            with open(os.path.join(self.data, "postgresql.auto.conf"), "a") as f:
                f.write("\n".join([
                    "listen_addresses = '127.0.0.1'",
                    "port = %d" % self.port,
                    "unix_socket_directories = '%s'" % self.dir,
                    "max_connections = %d" % self.max_connections,
                    "shared_buffers = '%s'" % self.shared_buffers,
                    "password_encryption = 'scram-sha-256'",
                    # Select-only: durability settings stay at their defaults (fsync on).
                    "log_min_messages = warning",
                    "", ""]))
            try:
                self.as_postgres([os.path.join(PG_BINDIR, "pg_ctl"), "-D", self.data, "-l",
                                  self.log, "-w", "-t", "60", "start"])
                self.started = True
                return
            except TargetError:
                if "Address already in use" not in tail(self.log, 40):
                    raise TargetError("postgres did not start:\n" + tail(self.log))
        raise TargetError("postgres: no free port after 5 attempts")

    def stop(self):
        if self.started:
            try:
                self.as_postgres([os.path.join(PG_BINDIR, "pg_ctl"), "-D", self.data, "-m",
                                  "fast", "-w", "-t", "60", "stop"])
            except TargetError:
                # Last resort, by pid, for a cluster that ignores a fast shutdown.
                try:
                    with open(os.path.join(self.data, "postmaster.pid")) as f:
                        os.kill(int(f.readline()), signal.SIGQUIT)
                except (OSError, ValueError):
                    pass
            self.started = False

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def psql(self, sql, database=DATABASE):
        """One statement through psql over TCP, unaligned tuples only."""
        r = subprocess.run(["psql", "-X", "-qAt", "-h", HOST, "-p", str(self.port), "-d",
                            database, "-v", "ON_ERROR_STOP=1", "-c", sql],
                           env=self.client_env(), text=True, capture_output=True)
        if r.returncode != 0:
            raise TargetError("psql %r: %s" % (sql, r.stderr.strip()))
        return r.stdout.strip()

    def scram_verifier(self):
        """The role's SCRAM verifier as pg_authid holds it, for PgBouncer's userlist."""
        return self.psql("SELECT rolpassword FROM pg_authid WHERE rolname = '%s'" % USER,
                         database="postgres")

    def backend_count(self):
        return int(self.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                             "'client backend'", database="postgres"))

    def wait_backends_below(self, limit, timeout=60.0):
        """Backends of closed sessions exit asynchronously; the next 1,000-connection test
        needs their slots back."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.backend_count() < limit:
                return
            time.sleep(0.2)


class Target:
    """Something clients dial. Relays override start/stop and expose pid for sampling."""

    name = "?"
    is_relay = True

    def __init__(self, cluster, workdir):
        self.cluster = cluster
        self.workdir = workdir
        self.port = None
        self.proc = None
        self.log = os.path.join(workdir, "%s.log" % self.name)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def check_login(self):
        """A real SCRAM login and query through the target, not just an open port."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                c = pgwire.Conn(HOST, self.port, USER, DATABASE, self.cluster.password,
                                timeout=10)
                c.stream("SELECT 1")
                c.close()
                return
            except (OSError, pgwire.PgError) as e:
                if time.monotonic() > deadline or not self.alive():
                    raise TargetError("%s: login through it failed: %s\n%s"
                                      % (self.name, e, tail(self.log)))
                time.sleep(0.2)

    def _spawn(self, argv, as_postgres):
        kw = {}
        if as_postgres:
            kw = dict(user=self.cluster.uid, group=self.cluster.gid, extra_groups=[])
        logf = open(self.log, "ab")
        try:
            # Own session: a ^C on the terminal reaches only the driver, which then stops
            # the relays in order instead of them dying under a running measurement.
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=subprocess.STDOUT, cwd=self.workdir,
                                         start_new_session=True, **kw)
        finally:
            logf.close()

    def start(self):
        for attempt in range(5):
            self.port = free_port()
            self._spawn(self.argv(), self.as_postgres)
            try:
                wait_port(self.port, self.proc, self.name)
                self.check_login()
                return
            except TargetError:
                log = tail(self.log, 40)
                self.stop()
                if "in use" not in log:
                    raise
        raise TargetError("%s: no free port after 5 attempts" % self.name)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def version(self):
        return ""


class DirectTarget(Target):
    """PostgreSQL itself: the baseline every ratio is taken against. No relay CPU."""

    name = "direct"
    is_relay = False

    def start(self):
        self.port = self.cluster.port

    def stop(self):
        pass

    def alive(self):
        return True


class PgwardenTarget(Target):
    """pgwardend in explicit mode (clients dial its listener), default worker count."""

    name = "pgwarden"
    as_postgres = False

    def __init__(self, cluster, workdir, daemon, extra_args=()):
        super().__init__(cluster, workdir)
        self.daemon = daemon
        self.extra_args = list(extra_args)

    def argv(self):
        # max-connections above the idle test's 1,000; the admin socket in our temp dir so
        # it never collides with an installed pgwardend or another engineer's run.
        return [self.daemon, "--listen", "%s:%d" % (HOST, self.port),
                "--upstream", "%s:%d" % (HOST, self.cluster.port),
                "--max-connections", "2000", "--log-level", "warn",
                "--admin-socket", os.path.join(self.workdir, "pgwarden-admin.sock")] \
            + self.extra_args

    def version(self):
        try:
            r = subprocess.run([self.daemon, "--version"], capture_output=True, text=True,
                               timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 else ""
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return ""


class PgbouncerTarget(Target):
    """Debian's PgBouncer in session mode, SCRAM against a userlist holding the verifier
    from pg_authid (so it can also log in upstream with SCRAM on the client's behalf)."""

    name = "pgbouncer"
    as_postgres = True

    def argv(self):
        d = self.workdir
        userlist = os.path.join(d, "pgbouncer-userlist.txt")
        with open(userlist, "w") as f:
            f.write('"%s" "%s"\n' % (USER, self.cluster.scram_verifier()))
        ini = os.path.join(d, "pgbouncer.ini")
        with open(ini, "w") as f:
            f.write("\n".join([
                "[databases]",
                "%s = host=%s port=%d dbname=%s" % (DATABASE, HOST, self.cluster.port,
                                                    DATABASE),
                "[pgbouncer]",
                "listen_addr = %s" % HOST,
                "listen_port = %d" % self.port,
                "unix_socket_dir =",
                "auth_type = scram-sha-256",
                "auth_file = %s" % userlist,
                "pool_mode = session",
                "max_client_conn = 2000",
                # Session mode needs one server connection per client: 64 for pgbench, and
                # 1,000 for the idle-connection test.
                "default_pool_size = 1050",
                "max_db_connections = 0",
                # Per-connection log lines would be charged to PgBouncer's CPU; pgwardend
                # runs at log-level warn, so keep both quiet.
                "log_connections = 0",
                "log_disconnections = 0",
                "logfile = %s" % os.path.join(d, "pgbouncer-own.log"),
                "", ""]))
        for p in (userlist, ini):
            os.chown(p, self.cluster.uid, self.cluster.gid)
        os.chmod(userlist, 0o600)
        return ["/usr/sbin/pgbouncer", ini]

    def version(self):
        r = subprocess.run(["/usr/sbin/pgbouncer", "--version"], capture_output=True,
                           text=True)
        return r.stdout.splitlines()[0] if r.stdout else ""


class HaproxyTarget(Target):
    """HAProxy in TCP mode with one backend: no protocol awareness at all, the floor any
    PostgreSQL-aware relay is measured against. Threads: HAProxy's default (one per CPU)."""

    name = "haproxy"
    as_postgres = True

    def argv(self):
        cfg = os.path.join(self.workdir, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write("\n".join([
                "global",
                "    maxconn 4000",
                "defaults",
                "    mode tcp",
                "    timeout connect 5s",
                "    timeout client 1h",
                "    timeout server 1h",
                "listen pg",
                "    bind %s:%d" % (HOST, self.port),
                "    maxconn 4000",
                "    server pg %s:%d maxconn 4000" % (HOST, self.cluster.port),
                "", ""]))
        # -db: foreground, no master process, so the pid we sample is the proxy itself.
        return ["/usr/sbin/haproxy", "-db", "-f", cfg]

    def version(self):
        r = subprocess.run(["/usr/sbin/haproxy", "-v"], capture_output=True, text=True)
        return r.stdout.splitlines()[0] if r.stdout else ""


class SteeredTarget(Target):
    """HOOK for the steering work: pgwardend reached *transparently*.

    Clients dial PostgreSQL's own port (self.port = cluster.port) while pgwardend's BPF
    hooks steer the connection into the relay. To add it, implement start() to launch
    pgwardend with steering attached to a cgroup that contains the benchmark's clients
    (and not PostgreSQL), set self.proc to the pgwardend process, and stop() to detach.
    Then run with BENCH_STEERED=1: the connection-setup section adds it beside `direct` and
    `pgwarden`, and the other sections pick it up via BENCH_TARGETS. Until then it reports
    itself as unavailable and the run goes on without it. See bench/README.md.
    """

    name = "steered"
    as_postgres = False

    def __init__(self, cluster, workdir, daemon):
        super().__init__(cluster, workdir)
        self.daemon = daemon

    def start(self):
        raise TargetError("steered: not implemented yet (bench/targets.py SteeredTarget)")


def version_of_postgres():
    r = subprocess.run([os.path.join(PG_BINDIR, "postgres"), "--version"], capture_output=True,
                       text=True)
    return r.stdout.strip()
