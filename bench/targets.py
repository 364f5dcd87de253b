"""targets: the throwaway PostgreSQL cluster and every relay the benchmark puts in front of it.

A target is something a client can dial: `direct` (PostgreSQL itself), `pgwarden` (and its
variants with a policy, an audit trail, TLS or a masked column), `pgbouncer`, `haproxy`, and `steered` (pgwardend reached through the BPF steering hooks,
see SteeredTarget). Each relay is one process
whose pid the driver samples for CPU time and RSS, so every relay is started in the
foreground (no daemonising, no wrapper like runuser in between) and the pid we hold is the
relay's own.

PostgreSQL, PgBouncer and HAProxy refuse to run as root or should not, so they run as the
`postgres` OS user in a temporary directory it owns. pgwardend runs as root, the way it is
deployed (it owns BPF and nftables state). Ports are picked outside the kernel's ephemeral
range (32768-60999) so other engineers' clients never collide with our listeners.
"""

import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
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
        """A real SCRAM login and query through the target, not just an open port (with
        psql where the target needs client settings pgwire.py lacks, such as TLS)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.client_env():
                env = self.cluster.client_env()
                env.update(self.client_env())
                r = subprocess.run(["psql", "-X", "-qAt", "-h", HOST, "-p", str(self.port),
                                    "-c", "SELECT 1"], env=env, text=True,
                                   capture_output=True)
                if r.returncode == 0:
                    return
                if time.monotonic() > deadline or not self.alive():
                    raise TargetError("%s: login through it failed: %s\n%s"
                                      % (self.name, r.stderr.strip(), tail(self.log)))
                time.sleep(0.2)
                continue
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

    def client_env(self):
        """Environment a client of this target needs over the cluster's (TLS targets ask
        for sslmode=require)."""
        return {}

    # Steering hooks for the driver; only SteeredTarget has anything to say.

    def client_preexec(self):
        """A preexec_fn that puts a client subprocess where it must run, or None."""
        return None

    def steering_snapshot(self):
        """State to compare after a run (steering counters), or None."""
        return None

    def steering_check(self, before, sessions):
        """(proof, None) if the run's sessions went the way the target claims, else
        (None, why)."""
        return None, None


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

    def __init__(self, cluster, workdir, daemon, extra_args=(), name="pgwarden"):
        super().__init__(cluster, workdir)
        self.daemon = daemon
        self.extra_args = list(extra_args)
        self.name = name  # "baseline": an earlier build of pgwardend, measured beside it

    def argv(self):
        # max-connections above the idle test's 1,000; the admin socket in our temp dir so
        # it never collides with an installed pgwardend or another engineer's run.
        return [self.daemon, "--listen", "%s:%d" % (HOST, self.port),
                "--upstream", "%s:%d" % (HOST, self.cluster.port),
                "--max-connections", "2000", "--log-level", "warn",
                "--admin-socket", os.path.join(self.workdir, "%s-admin.sock" % self.name)] \
            + self.extra_args

    def version(self):
        try:
            r = subprocess.run([self.daemon, "--version"], capture_output=True, text=True,
                               timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0] if r.returncode == 0 else ""
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return ""


def make_tls_pair(workdir, name, owner=None):
    """A self-signed certificate and key for a TLS-terminating target, generated for this
    run in its temp directory (never committed). owner: (uid, gid) of a relay that runs as
    another user and must read the key. One pair per target: each relay has its own rules
    about who may own its key file."""
    cert = os.path.join(workdir, "%s.crt" % name)
    key = os.path.join(workdir, "%s.key" % name)
    if not os.path.exists(cert):
        r = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                            "-subj", "/CN=%s" % HOST, "-keyout", key, "-out", cert],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise TargetError("openssl req: %s" % r.stderr.strip())
        os.chmod(key, 0o600)
    if owner is not None:
        for path in (cert, key):
            os.chown(path, *owner)
    return cert, key


# The policy of the policy and audit targets: ten rules, the bench role's last, so every
# session is matched against nine others first (the realistic shape issue #11 asks for:
# identities with relation lists, function denials, limits). The bench rule admits exactly
# what pgbench's select-only and tpcb-like scripts run, with relation lists, so every
# statement goes through the policy stage's analysis and relation checks. %(audit)s is the
# rule's audit level: `none` for pgwarden-policy, `statement` for the audit targets.
BENCH_POLICY = """version: 1
rules:
  - name: breakglass
    match: { user: oncall_admin, source: 10.0.9.0/24, auth_method: cert+scram-sha-256 }
    allow: [all]
    role_switch: true
    limits: { max_lifetime: 1h, idle_timeout: 10m }
    audit: full
  - name: reporting
    match: { user: report, database: analytics, source: 10.20.0.0/16 }
    allow: [read, transaction, session]
    relations:
      allow: [reporting.*, public.*]
      deny: [public.salaries, public.patients, pg_catalog.pg_authid]
    search_path: [public]
    deny_functions: ["@dangerous"]
    one_statement_per_query: true
    limits: { statements_per_second: 20, burst: 50, over_limit: wait }
    audit: statement
  - name: billing-service
    match: { user: billing, source: local, cgroup: /system.slice/billing.service }
    allow: [read, write, transaction, prepare, session]
    relations: { deny: [hr.*, public.salaries] }
    deny_functions: ["@dangerous"]
    limits: { sessions_per_user: 50, idle_timeout: 30m }
    audit: connection
  - name: etl
    match: { user: etl, database: [warehouse, staging], source: 10.30.0.0/16 }
    allow: [read, write, copy_in, copy_out, transaction, session]
    relations: { allow: [staging.*, warehouse.*] }
    audit: statement
  - name: migrations
    match: { user: migrator, source: 10.0.5.0/24 }
    allow: [all]
    audit: full
  - name: support
    match: { user: [support1, support2, support3], database: crm }
    allow: [read, transaction]
    relations: { allow: [crm.tickets, crm.customers], deny: [crm.payment_methods] }
    deny_functions: ["@dangerous"]
    audit: statement
  - name: monitoring
    match: { user: monitor }
    allow: [read, session]
    relations: { allow: [pg_catalog.*] }
    audit: connection
  - name: replication
    match: { user: replicator, source: 10.0.7.0/24 }
    allow: [read]
    replication: true
    audit: connection
  - name: dashboard
    match: { user: app_ro, application_name: dashboard }
    allow: [read, transaction, session]
    relations: { deny: [public.pgbench_history] }
    audit: none
  - name: pgbench
    match: { user: %(user)s, database: %(db)s }
    allow: [read, write, transaction, session]
    relations:
      allow: [public.pgbench_accounts, public.pgbench_branches, public.pgbench_tellers,
              public.pgbench_history]
      deny: [pg_catalog.pg_authid]
    search_path: [public]   # pgbench names its tables unqualified; bench has no schema
    deny_functions: ["@dangerous"]
    audit: %(audit)s
"""

# audit.fsync of each audit target; pgwarden-policy is the same policy with no trail.
AUDIT_MODES = ("none", "write", "batch", "always")


class PgwardenPolicyTarget(PgwardenTarget):
    """pgwardend with the ten-rule BENCH_POLICY. audit_fsync None: no audit trail (the
    rule says `audit: none`), the policy's own cost. Otherwise `audit: statement` and the
    signed trail under the run's temp directory (the root disk) with that `audit.fsync`
    mode: the path a compliance deployment runs."""

    def __init__(self, cluster, workdir, daemon, ctl, extra_args=(), audit_fsync=None):
        name = "pgwarden-audit-%s" % audit_fsync if audit_fsync else "pgwarden-policy"
        super().__init__(cluster, workdir, daemon, extra_args, name=name)
        self.ctl = ctl
        self.audit_fsync = audit_fsync

    def argv(self):
        policy = os.path.join(self.workdir, "%s-policy.yaml" % self.name)
        with open(policy, "w") as f:
            f.write(BENCH_POLICY % {"user": USER, "db": DATABASE,
                                    "audit": "statement" if self.audit_fsync else "none"})
        r = subprocess.run([self.ctl, "policy", "check", policy], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise TargetError("pgwardenctl policy check: %s" % (r.stderr or r.stdout).strip())
        args = super().argv() + ["--policy", policy]
        if not self.audit_fsync:
            return args
        key = os.path.join(self.workdir, "bench-audit.key")
        if not os.path.exists(key):
            r = subprocess.run([self.ctl, "audit", "keygen", "--out", key],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise TargetError("pgwardenctl audit keygen: %s" % r.stderr.strip())
        trail = os.path.join(self.workdir, "%s-trail" % self.name)
        os.makedirs(trail, exist_ok=True)
        return args + ["--audit-path", os.path.join(trail, "audit.jsonl"),
                       "--audit-signing-key", key, "--audit-fsync", self.audit_fsync]


# The streaming table (created by the driver before any target starts, so the masked
# target's first catalog read finds it): narrow rows, an int and the md5 of its text, the
# shape whose per-row costs weigh most per byte.
STREAM_TABLE = "public.bench_stream"
STREAM_MASKED_COLUMN = "payload"
STREAM_MASK_STRATEGY = "partial-last-4"

# The masked target's policy: one rule for the bench role that admits what the stream
# section runs (SELECT through both protocols, COPY TO STDOUT) and masks the payload
# column. No relation lists or function denials: this target measures masking, and
# pgwarden-policy measures the policy stage.
MASK_POLICY = """version: 1
rules:
  - name: bench-masked
    match: { user: %(user)s, database: %(db)s }
    allow: [read, copy_out, transaction, session]
    audit: none
    mask:
      %(table)s.%(column)s: %(strategy)s
"""


class PgwardenMaskTarget(PgwardenTarget):
    """pgwardend masking one column of the streaming table (issue #13): MASK_POLICY, and its
    own catalog connection to the bench database as the bench role (the password in a
    userlist file of mode 0600), which resolves the rule to (table OID, column)."""

    def __init__(self, cluster, workdir, daemon, ctl, extra_args=()):
        super().__init__(cluster, workdir, daemon, extra_args, name="pgwarden-mask")
        self.ctl = ctl

    def argv(self):
        policy = os.path.join(self.workdir, "%s-policy.yaml" % self.name)
        with open(policy, "w") as f:
            f.write(MASK_POLICY % {"user": USER, "db": DATABASE, "table": STREAM_TABLE,
                                   "column": STREAM_MASKED_COLUMN,
                                   "strategy": STREAM_MASK_STRATEGY})
        r = subprocess.run([self.ctl, "policy", "check", policy], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise TargetError("pgwardenctl policy check: %s" % (r.stderr or r.stdout).strip())
        passwords = os.path.join(self.workdir, "%s-catalog-passwords" % self.name)
        fd = os.open(passwords, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write('"%s" "%s"\n' % (USER, self.cluster.password.replace('"', '""')))
        return super().argv() + ["--policy", policy, "--mask-catalog-user", USER,
                                 "--mask-catalog-database", DATABASE,
                                 "--mask-catalog-passwords", passwords]


class ClientLegTls:
    """For a pgwardend target: it terminates the client's TLS (tls.client.mode prefer, a
    certificate generated for the run), and its clients connect with sslmode=require. The
    upstream leg stays as it is (the cluster has no TLS, so plaintext)."""

    def argv(self):
        cert, key = make_tls_pair(self.workdir, self.name)
        return super().argv() + ["--tls-client-mode", "prefer", "--tls-client-cert-file",
                                 cert, "--tls-client-key-file", key]

    def client_env(self):
        return {"PGSSLMODE": "require"}


class PgwardenTlsTarget(ClientLegTls, PgwardenTarget):
    """`pgwarden` terminating the client's TLS."""

    def __init__(self, cluster, workdir, daemon, extra_args=()):
        super().__init__(cluster, workdir, daemon, extra_args, name="pgwarden-tls")


class PgwardenReuseTarget(PgwardenTarget):
    """pgwardend logging clients in the way PgBouncer does here: auth.mode terminate, SCRAM
    against a users file holding the verifier from pg_authid (PgBouncer's userlist format),
    logging in upstream with the client's ClientKey, and keeping server connections between
    client sessions (server_reuse.max_idle; a kept one is reset with DISCARD ALL, as
    PgBouncer's server_reset_query does in session mode)."""

    def __init__(self, cluster, workdir, daemon, extra_args=(), name="pgwarden-reuse"):
        super().__init__(cluster, workdir, daemon, extra_args, name=name)

    def argv(self):
        users = os.path.join(self.workdir, "%s-users.txt" % self.name)
        fd = os.open(users, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write('"%s" "%s"\n' % (USER, self.cluster.scram_verifier()))
        # Per worker, as many as PgBouncer's pool may hold, kept idle as long as PgBouncer
        # keeps them (its server_idle_timeout, 600 s by default).
        return super().argv() + ["--auth-mode", "terminate", "--auth-users-file", users,
                                 "--server-reuse-max-idle", "1050",
                                 "--server-reuse-idle-timeout", "10m"]


class PgwardenReuseTlsTarget(ClientLegTls, PgwardenReuseTarget):
    """`pgwarden-reuse` terminating the client's TLS as `pgwarden-tls` does."""

    def __init__(self, cluster, workdir, daemon, extra_args=()):
        super().__init__(cluster, workdir, daemon, extra_args, name="pgwarden-reuse-tls")


class PgbouncerTarget(Target):
    """Debian's PgBouncer in session mode, SCRAM against a userlist holding the verifier
    from pg_authid (so it can also log in upstream with SCRAM on the client's behalf)."""

    name = "pgbouncer"
    as_postgres = True

    def argv(self):
        d = self.workdir
        userlist = os.path.join(d, "%s-userlist.txt" % self.name)
        with open(userlist, "w") as f:
            f.write('"%s" "%s"\n' % (USER, self.cluster.scram_verifier()))
        ini = os.path.join(d, "%s.ini" % self.name)
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
                "logfile = %s" % os.path.join(d, "%s-own.log" % self.name),
                ] + self.extra_ini() + ["", ""]))
        for p in (userlist, ini):
            os.chown(p, self.cluster.uid, self.cluster.gid)
        os.chmod(userlist, 0o600)
        return ["/usr/sbin/pgbouncer", ini]

    def extra_ini(self):
        return []

    def version(self):
        r = subprocess.run(["/usr/sbin/pgbouncer", "--version"], capture_output=True,
                           text=True)
        return r.stdout.splitlines()[0] if r.stdout else ""


class PgbouncerTlsTarget(PgbouncerTarget):
    """PgBouncer terminating the client's TLS (client_tls_sslmode require, a generated
    certificate); clients connect with sslmode=require."""

    name = "pgbouncer-tls"

    def extra_ini(self):
        cert, key = make_tls_pair(self.workdir, self.name, (self.cluster.uid, self.cluster.gid))
        return ["client_tls_sslmode = require", "client_tls_cert_file = %s" % cert,
                "client_tls_key_file = %s" % key]

    def client_env(self):
        return {"PGSSLMODE": "require"}


# server_lifetime 0 makes PgBouncer close a server connection after the one client session it
# served, so each client session logs in to a new PostgreSQL backend, as through pgwardend.
ONE_SESSION_PER_SERVER = "server_lifetime = 0"


class PgbouncerFreshTarget(PgbouncerTarget):
    """PgBouncer as `pgbouncer`, but with server_lifetime 0: each server connection serves
    one client session and is closed, so every client session gets a new PostgreSQL backend
    as it does direct, through HAProxy and through pgwardend. The pooled `pgbouncer` hands
    pgbench backends that earlier rounds warmed; a new backend first maps the shared-buffer
    pages it touches (page faults the server pays per transaction), which on this VM costs
    more than the relay itself. This target tells the relay's cost from the pool's."""

    name = "pgbouncer-fresh"

    def extra_ini(self):
        return [ONE_SESSION_PER_SERVER]


class PgbouncerFreshTlsTarget(PgbouncerTlsTarget):
    """`pgbouncer-tls` with a new server backend and server login per client session: what
    pgwardend does per TLS session (handshake, then the client's login passed through to a
    new backend). The pooled `pgbouncer-tls` skips the server login on a reused backend."""

    name = "pgbouncer-fresh-tls"

    def extra_ini(self):
        return super().extra_ini() + [ONE_SESSION_PER_SERVER]


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


def cgroup2_root():
    """The cgroup v2 mount point, from /proc/self/mounts (hybrid hosts mount it at
    /sys/fs/cgroup/unified), or None."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1].replace("\\040", " ")
    except OSError:
        pass
    return None


def steering_unsupported():
    """Why this machine cannot run the steered target, or None. Attach itself reports
    anything finer (a verifier refusal, a foreign connect4 program) in its one line."""
    if os.geteuid() != 0:
        return "steering needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    if cgroup2_root() is None:
        return "no cgroup v2 mount in /proc/self/mounts (steering needs cgroup v2)"
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        return "kernel without BTF (/sys/kernel/btf/vmlinux), the BPF object cannot load"
    return None


class SteeredTarget(PgwardenTarget):
    """pgwardend reached *transparently*: clients dial PostgreSQL's own address and port
    (self.port = cluster.port) and the BPF cgroup hooks steer each connect() into the relay.

    Only processes in a throwaway cgroup v2 directory this target creates are steered: the
    driver puts pgbench there through client_preexec(), never itself, PostgreSQL or the
    other relays (PgBouncer's and HAProxy's upstream connections must not be steered). The
    attach uses an instance of its own (pin dir, nft table) and its own TPROXY mark and route
    table numbers, so its detach can never remove another attach's state; it asks for no
    TPROXY, so nothing is added to nftables or the routing tables anyway.

    Proof that the traffic really went through the relay, not straight to PostgreSQL:
      * pgwardend's --upstream is a loopback port this target holds bound and never
        listens on: a session pgwardend does not classify as steered has nowhere to go and
        fails, so a successful login through it is a steered one;
      * start() holds one probe session from inside the cgroup and finds it in
        `pgwardenctl sessions` with route=steered and the probe's pid;
      * steering_check() compares the hooks' steered_ipv4 counter before and after every
        run with the sessions pgbench completed.
    stop() detaches, stops what it started by pid, removes the cgroup and checks that the
    kernel holds nothing of the instance; start() calls it on any failure, so every exit
    path goes through it.
    """

    name = "steered"

    def __init__(self, cluster, workdir, daemon, ctl, extra_args=()):
        super().__init__(cluster, workdir, daemon, extra_args)
        self.ctl = ctl
        tag = os.getpid() & 0xffffff
        # STEER_INSTANCE_MAX is 32 with the NUL; "pgwb" + pid + 4 hex fits.
        self.instance = "pgwb%d_%s" % (os.getpid(), os.urandom(2).hex())
        self.tproxy_mark = 0x62000000 | tag
        self.route_table = 0x62000000 | tag
        self.admin = os.path.join(workdir, "steered-admin.sock")
        self.relay_port = None
        # A second listener of the same daemon for explicit clients (connprobe's explicit
        # leg): the steering address takes steered, recorded connections only.
        self.explicit_port = None
        self.cgroup = None
        self.attach_tried = False
        self._blackhole = None
        self._probe = None

    # -- the pieces -------------------------------------------------------------------

    def ctl_run(self, *args, check=True):
        env = dict(os.environ, PGWARDEN_INSTANCE=self.instance)
        r = subprocess.run([self.ctl, "--socket", self.admin] + list(args), env=env,
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            msg = (r.stderr.strip() or r.stdout.strip()).splitlines()
            raise TargetError("steered: pgwardenctl %s: exit %d: %s" % (
                args[0], r.returncode, msg[-1] if msg else ""))
        return r

    def status(self):
        """The instance's steering status (pgwardenctl status --json, steering part)."""
        r = self.ctl_run("status", "--json", check=False)
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            raise TargetError("steered: status --json is not JSON (exit %d): %s"
                              % (r.returncode, (r.stderr or r.stdout).strip()[:200]))
        return doc.get("steering", doc)

    def argv(self):
        return [self.daemon, "--listen", "%s:%d" % (HOST, self.relay_port),
                "--listen", "%s:%d" % (HOST, self.explicit_port),
                "--upstream", "%s:%d" % (HOST, self._blackhole.getsockname()[1]),
                "--steer-instance", self.instance,
                "--max-connections", "2000", "--log-level", "warn",
                "--admin-socket", self.admin] + self.extra_args

    def _hold_dead_port(self):
        """A loopback port bound and never listened on: connecting to it is refused, and
        nobody else can listen on it while we hold it."""
        for _ in range(200):
            s = socket.socket()
            try:
                s.bind((HOST, random.randint(20000, 32000)))
                self._blackhole = s
                return
            except OSError:
                s.close()
        raise TargetError("steered: no free port in 20000-32000 for the dead upstream")

    def _make_cgroup(self):
        root = cgroup2_root()
        path = os.path.join(root, "pgwarden-bench-" + self.instance)
        if os.path.realpath(path) == os.path.realpath(root):
            raise TargetError("steered: refusing to attach to the root cgroup")
        os.mkdir(path)
        self.cgroup = path

    def cgroup_pids(self):
        try:
            with open(os.path.join(self.cgroup, "cgroup.procs")) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def client_preexec(self):
        """For subprocess: the child joins the steering cgroup before it execs the client,
        so its very first connect() is steered (threads it starts later inherit it)."""
        procs = os.path.join(self.cgroup, "cgroup.procs")

        def join():
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        return join

    def _probe_session(self):
        """One login from inside the cgroup to PostgreSQL's own port, held while
        pgwardend's session list is read: it must be there, route=steered, our pid."""
        code = ("import os, sys\n"
                "sys.path.insert(0, sys.argv[1])\n"
                "import pgwire\n"
                "c = pgwire.Conn(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5],\n"
                "                os.environ['PGPASSWORD'], timeout=30)\n"
                "c.stream('SELECT 1')\n"
                "print('ok', flush=True)\n"
                "sys.stdin.read()\n"
                "c.close()\n")
        self._probe = subprocess.Popen(
            [sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)), HOST,
             str(self.cluster.port), USER, DATABASE], env=self.cluster.client_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, preexec_fn=self.client_preexec())
        try:
            line = self._probe.stdout.readline().strip()
            if line != "ok":
                self._probe.kill()
                _, err = self._probe.communicate(timeout=30)
                raise TargetError("steered: a login from inside the cgroup failed: %s\n%s"
                                  % ((err.strip().splitlines() or ["?"])[-1],
                                     tail(self.log)))
            r = self.ctl_run("sessions", "--json")
            doc = json.loads(r.stdout)
            sessions = doc.get("sessions", doc) if isinstance(doc, dict) else doc
            mine = [s for s in sessions if (s.get("process") or {}).get("pid")
                    == self._probe.pid or (s.get("process") or {}).get("tgid")
                    == self._probe.pid]
            if not mine or mine[0].get("route") != "steered":
                raise TargetError("steered: the probe session (pid %d) is not in pgwardend's "
                                  "sessions as route=steered: %s" % (
                                      self._probe.pid, json.dumps(mine or sessions)[:400]))
        finally:
            if self._probe.poll() is None:
                self._probe.stdin.close()
                try:
                    self._probe.wait(30)
                except subprocess.TimeoutExpired:
                    self._probe.kill()
                    self._probe.wait()
            self._probe = None

    # -- the target -------------------------------------------------------------------

    def start(self):
        why = steering_unsupported()
        if why:
            raise TargetError("steered: " + why)
        if not os.access(self.ctl, os.X_OK):
            raise TargetError("steered: %s is not built" % self.ctl)
        try:
            self._hold_dead_port()
            for attempt in range(5):
                self.relay_port = free_port()
                self.explicit_port = free_port()
                self._spawn(self.argv(), as_postgres=False)
                try:
                    wait_port(self.relay_port, self.proc, self.name)
                    break
                except TargetError:
                    log = tail(self.log, 40)
                    super(PgwardenTarget, self).stop()
                    if "in use" not in log:
                        raise
            else:
                raise TargetError("steered: no free port after 5 attempts")
            self.port = self.cluster.port  # clients dial the real server
            self._make_cgroup()
            self.attach_tried = True
            self.ctl_run("attach", "--instance", self.instance,
                         "--port", str(self.cluster.port),
                         "--relay", "%s:%d" % (HOST, self.relay_port),
                         "--cgroup", self.cgroup,
                         "--tproxy-mark", "0x%x" % self.tproxy_mark,
                         "--route-table", str(self.route_table))
            st = self.status()
            if not st.get("attached"):
                raise TargetError("steered: attach exited 0 but status says not attached: %s"
                                  % json.dumps(st)[:300])
            self._probe_session()
        except BaseException as e:
            # Undo what was done; a failure to undo is added to the reason, never put in
            # its place.
            try:
                self.stop()
            except TargetError as e2:
                if isinstance(e, (TargetError, OSError)):
                    raise TargetError("%s; cleaning up: %s" % (e, e2)) from e
                raise
            if isinstance(e, OSError):
                raise TargetError("steered: %s" % e) from e
            raise

    def steering_snapshot(self):
        st = self.status()
        return {"attached": bool(st.get("attached")),
                "counters": dict(st.get("counters") or {})}

    def steering_check(self, before, sessions):
        """(proof, None) when the hooks steered at least as many connects as the run
        completed sessions, else (None, why). Any session that was not steered would have
        failed (the dead upstream), so the count is the remaining gap to close."""
        after = self.steering_snapshot()
        if not after["attached"]:
            return None, "steering was not attached after the run"
        c0, c1 = before["counters"], after["counters"]
        steered = c1.get("steered_ipv4", 0) - c0.get("steered_ipv4", 0)
        rekeyed = c1.get("rekeyed_established", 0) - c0.get("rekeyed_established", 0)
        proof = {"steered_ipv4": steered, "rekeyed_established": rekeyed,
                 "sessions": sessions}
        if steered < sessions or rekeyed < sessions:
            return None, ("the hooks steered %d connects (%d established) for %d sessions: "
                          "the run did not go through the relay" % (steered, rekeyed,
                                                                    sessions))
        return proof, None

    def stop(self):
        """Undo start() in reverse, whatever state it reached; every step runs even when an
        earlier one failed, and a failure is raised at the end."""
        problems = []
        if self._probe is not None and self._probe.poll() is None:
            self._probe.kill()
            self._probe.wait()
        self._probe = None
        if self.cgroup:
            # Only the driver's clients are ever put here: a client still inside after its
            # run (an interrupted pgbench) is ours to end.
            for _ in range(50):
                pids = self.cgroup_pids()
                if not pids:
                    break
                for p in pids:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.1)
        if self.attach_tried:
            try:
                self.ctl_run("detach", "--instance", self.instance)
            except (TargetError, OSError, subprocess.TimeoutExpired) as e:
                problems.append(str(e))
        super().stop()  # pgwardend, by its pid
        if self.cgroup:
            try:
                os.rmdir(self.cgroup)
                self.cgroup = None
            except OSError as e:
                problems.append("cannot remove cgroup %s: %s" % (self.cgroup, e))
        if self.attach_tried:
            self.attach_tried = False
            left = []
            if os.path.exists("/sys/fs/bpf/%s" % self.instance):
                left.append("pin dir /sys/fs/bpf/%s" % self.instance)
            try:
                st = self.status()
                if st.get("attached") or st.get("links"):
                    left.append("links %s" % st.get("links"))
                left += ["%s" % x for x in st.get("leftovers") or []]
            except TargetError as e:
                left.append(str(e))
            if left:
                problems.append("instance %s left behind: %s" % (self.instance, left))
        if self._blackhole is not None:
            self._blackhole.close()
            self._blackhole = None
        if problems:
            raise TargetError("steered: stop: " + "; ".join(problems))


def version_of_postgres():
    r = subprocess.run([os.path.join(PG_BINDIR, "postgres"), "--version"], capture_output=True,
                       text=True)
    return r.stdout.strip()
