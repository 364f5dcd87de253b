"""Integration harness: a throwaway PostgreSQL 15 cluster, pgwardend processes, and the
pieces the fixtures in conftest.py hand to tests.

Everything runs on loopback. Listening ports are found by binding port 0, so several
engineers (or CI jobs) can run the suite on one machine at once. Every process started here
is stopped by whoever started it, also when a test fails: the fixtures own the lifetimes,
these classes only know how to start and stop.

Nothing here asserts on time. Waits are bounded by generous timeouts so that a hung daemon
fails a test instead of hanging the run; the bounds are hang guards, not performance goals.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PG_BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")

# Generous bounds: the test machine is shared, and sanitizer builds are several times slower.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# Test relays drain for this long on SIGTERM unless a test sets its own: the daemon's default
# (30s) would make every teardown with a lingering session cost half a minute.
TEST_DRAIN = "5s"
# The daemon under test is a sanitizer build (make BUILD=build/san SAN=1 check-integration
# sets ASAN_OPTIONS): its RSS holds ASan's quarantine and shadow memory, so memory bounds
# say nothing about pgwarden there.
SANITIZED = bool(os.environ.get("ASAN_OPTIONS"))


# --------------------------------------------------------------------------------------------
# logfmt


class LogfmtError(ValueError):
    pass


_HEX = "0123456789abcdefABCDEF"


def parse_logfmt(line):
    """Parse one logfmt line as pgwardend writes it (userspace/base/log.c) into a dict.

    Keys are bare words; values are bare words, '-' (NULL, kept as None), or double-quoted
    strings with the escapes \\" \\\\ and \\xNN. A key without '=' maps to True. Raises
    LogfmtError on anything else, so a stray line (an ASan report, a truncated write) is not
    mistaken for an event.
    """
    out = {}
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t\r\n":
            i += 1
        if i >= n:
            return out
        start = i
        while i < n and line[i] not in "= \t\r\n\"":
            i += 1
        key = line[start:i]
        if not key:
            raise LogfmtError("expected a key at column %d: %r" % (start, line))
        if i >= n or line[i] != "=":
            if i < n and line[i] == '"':
                raise LogfmtError("quote inside key at column %d: %r" % (i, line))
            out[key] = True
            continue
        i += 1  # '='
        if i < n and line[i] == '"':
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise LogfmtError("unterminated quoted value for %r: %r" % (key, line))
                c = line[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n:
                        raise LogfmtError("dangling escape for %r: %r" % (key, line))
                    e = line[i + 1]
                    if e in "\"\\":
                        buf.append(e)
                        i += 2
                    elif e == "x":
                        hx = line[i + 2:i + 4]
                        if len(hx) != 2 or any(h not in _HEX for h in hx):
                            raise LogfmtError("bad \\x escape for %r: %r" % (key, line))
                        buf.append(chr(int(hx, 16)))
                        i += 4
                    else:
                        raise LogfmtError("unknown escape \\%s for %r: %r" % (e, key, line))
                    continue
                buf.append(c)
                i += 1
            value = "".join(buf)
            if i < n and line[i] not in " \t\r\n":
                raise LogfmtError("garbage after quoted value of %r: %r" % (key, line))
        else:
            start = i
            while i < n and line[i] not in " \t\r\n":
                if line[i] == '"':
                    raise LogfmtError("quote inside bare value of %r: %r" % (key, line))
                i += 1
            value = line[start:i]
            if value == "-":
                value = None
        out[key] = value


# Lines a sanitizer runtime prints when it finds a bug. Matched against the daemon's stderr
# when it stops; any hit fails the test that owned the daemon.
SANITIZER_PATTERNS = [
    re.compile(r"ERROR: AddressSanitizer"),
    re.compile(r"ERROR: LeakSanitizer"),
    re.compile(r"SUMMARY: (Address|Leak|UndefinedBehavior|Thread)Sanitizer"),
    re.compile(r"\bruntime error: "),  # UBSan
    re.compile(r"WARNING: ThreadSanitizer"),
]


def sanitizer_reports(text):
    """The lines of text that look like a sanitizer report (empty list: none)."""
    return [ln for ln in text.splitlines() if any(p.search(ln) for p in SANITIZER_PATTERNS)]


# --------------------------------------------------------------------------------------------
# small helpers


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (the kernel picks it: bind to port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host, port, timeout, proc=None, what="server"):
    """Connect to host:port until it accepts, at most `timeout` seconds.

    If proc is given and exits first, fail at once instead of waiting out the bound.
    """
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with status %s before accepting connections"
                               % (what, proc.returncode))
        try:
            with socket.create_connection((host, port), timeout=2):
                return
        except OSError as e:
            last = e
            time.sleep(0.05)
    raise TimeoutError("%s did not accept on %s:%d within %.0fs (last error: %s)"
                       % (what, host, port, timeout, last))


def _listening_inodes(port):
    """Socket inodes listening on TCP port (any address) in this network namespace."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    # local_address is HEXIP:HEXPORT; state 0A is TCP_LISTEN.
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fields[9])
        except OSError:
            continue
    return inodes


def _owns_socket(pid, inodes):
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def wait_for_listen(port, timeout, proc=None, what="server", owner_pid=None):
    """Wait until something listens on port, without connecting to it: a probe connection
    would show up in the daemon's log and metrics as a client that never sent a startup
    packet, which tests counting sessions must not have to ignore.

    With owner_pid, the listening socket must be that process's, so a stranger that took
    the port between our probe and the daemon's bind is not mistaken for the daemon.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with status %s before listening"
                               % (what, proc.returncode))
        inodes = _listening_inodes(port)
        if inodes and (owner_pid is None or _owns_socket(owner_pid, inodes)):
            return
        time.sleep(0.05)
    raise TimeoutError("%s did not listen on port %d within %.0fs" % (what, port, timeout))


def parse_duration(text):
    """Seconds in a pgwardend duration: digits and a unit ms, s, m or h; bare digits are
    seconds (config_parse_duration in userspace/config/config.c)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", str(text))
    if not m:
        raise ValueError("not a duration: %r" % (text,))
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale


def _flag_value(args, flag):
    """The value after the last occurrence of flag in args (or of flag=VALUE), or None."""
    value = None
    args = list(args)
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            value = args[i + 1]
        elif a.startswith(flag + "="):
            value = a.split("=", 1)[1]
    return value


def conninfo(**params):
    """A libpq conninfo string; values are quoted so spaces and quotes survive."""
    parts = []
    for k, v in params.items():
        if v is None:
            continue
        v = str(v).replace("\\", "\\\\").replace("'", "\\'")
        parts.append("%s='%s'" % (k, v))
    return " ".join(parts)


class Endpoint:
    """Where a client connects, and the credentials it uses: shared by the direct cluster,
    relays and byte relays so a test can treat them alike."""

    def __init__(self, host, port, user, password, dbname, bindir=PG_BINDIR):
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.dbname = dbname
        self.bindir = bindir

    def dsn(self, **overrides):
        params = dict(host=self.host, port=self.port, user=self.user,
                      password=self.password, dbname=self.dbname, connect_timeout=20)
        params.update(overrides)
        return conninfo(**params)

    def env(self, **overrides):
        """Environment for psql / pgbench subprocesses connecting here."""
        env = dict(os.environ)
        # A developer's own libpq settings must not leak into the tests.
        for k in list(env):
            if k.startswith("PG") and k not in ("PGWARDEND",):
                del env[k]
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=self.user,
                   PGPASSWORD=self.password, PGDATABASE=self.dbname,
                   PGCONNECT_TIMEOUT="20", PGAPPNAME="pgw-itest",
                   PATH=self.bindir + os.pathsep + env.get("PATH", ""))
        env.update({k: str(v) for k, v in overrides.items()})
        return env

    def psql(self, sql, args=(), check=True, timeout=120, **dsn_overrides):
        """Run sql through psql (-X -A -t, ON_ERROR_STOP) and return its stdout."""
        cmd = [os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
               "-v", "ON_ERROR_STOP=1", "-d", self.dsn(**dsn_overrides), "-c", sql]
        cmd.extend(args)
        r = subprocess.run(cmd, env=self.env(), capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("psql failed (%d) on %s:%s: %s\nSQL: %s"
                               % (r.returncode, self.host, self.port, r.stderr.strip(), sql))
        return r.stdout


# --------------------------------------------------------------------------------------------
# PostgreSQL


class PgCluster(Endpoint):
    """A throwaway PostgreSQL cluster owned by the postgres OS user (root cannot run
    postgres) in a temporary directory, listening on 127.0.0.1 and ::1 with SCRAM auth.

    The harness itself reaches the server over the Unix socket in the temporary directory
    with peer auth as `postgres` (setup and diagnostics only); every test connection goes
    over TCP with SCRAM as role pgw.
    """

    OS_USER = "postgres"

    def __init__(self, bindir=PG_BINDIR, max_connections=1200):
        super().__init__("127.0.0.1", None, "pgw", "pgw-secret", "pgw", bindir)
        self.max_connections = max_connections
        self.tmpdir = None
        self.datadir = None
        self.sockdir = None
        self.log_path = None
        self.started = False

    # -- lifecycle

    def _as_postgres(self, args, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("timeout", 300)
        return subprocess.run(["runuser", "-u", self.OS_USER, "--"] + args, **kw)

    def _must(self, args, what, **kw):
        r = self._as_postgres(args, **kw)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d):\n%s%s%s" % (what, r.returncode, r.stdout,
                                                           r.stderr, self._log_tail()))
        return r

    def start(self):
        pw = pwd.getpwnam(self.OS_USER)
        self.tmpdir = tempfile.mkdtemp(prefix="pgwarden-itest-pg-")
        os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.tmpdir, 0o700)
        self.datadir = os.path.join(self.tmpdir, "data")
        self.sockdir = self.tmpdir
        self.log_path = os.path.join(self.tmpdir, "postgres.log")

        self._must([os.path.join(self.bindir, "initdb"), "-D", self.datadir, "-U",
                    self.OS_USER, "-E", "UTF8", "--locale=C", "--no-sync",
                    "--auth-local=peer", "--auth-host=scram-sha-256"], "initdb")

        with open(os.path.join(self.datadir, "pg_hba.conf"), "w") as f:
            f.write("# written by tests/integration/harness.py\n"
                    "local all postgres peer\n"
                    "local all pgw scram-sha-256\n"
                    "host all all 127.0.0.1/32 scram-sha-256\n"
                    "host all all ::1/128 scram-sha-256\n"
                    "host replication all 127.0.0.1/32 scram-sha-256\n")

        # The port comes from the kernel; another process can grab it between our probe and
        # postgres binding it, so a failed start is retried on a fresh port.
        last_err = None
        for _ in range(5):
            self.port = free_port()
            self._write_conf()
            r = self._as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                                   "-l", self.log_path, "-w", "-t", str(int(START_TIMEOUT) * 2),
                                   "start"])
            if r.returncode == 0:
                self.started = True
                break
            last_err = r.stdout + r.stderr + self._log_tail()
            self._pg_ctl_stop()
        else:
            raise RuntimeError("postgres would not start:\n%s" % last_err)

        # Separate -c strings: CREATE DATABASE refuses to run inside the implicit transaction
        # of a multi-statement Query.
        self._admin_psql("CREATE ROLE pgw LOGIN SUPERUSER PASSWORD 'pgw-secret'")
        self._admin_psql("CREATE DATABASE pgw OWNER pgw")
        # Prove the path tests use (TCP + SCRAM as pgw) before handing the cluster out.
        self.psql("SELECT 1")
        return self

    def _write_conf(self):
        # fsync and friends are off: the cluster is thrown away, and the shared machine
        # should spend its disk on the tests, not on durability nobody needs here.
        conf = {
            "listen_addresses": "'127.0.0.1,::1'",
            "port": self.port,
            "unix_socket_directories": "'%s'" % self.sockdir,
            "max_connections": self.max_connections,
            "password_encryption": "'scram-sha-256'",
            "wal_level": "logical",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "'128MB'",
            "max_wal_size": "'1GB'",
            "log_min_messages": "warning",
            "log_connections": "off",
            "log_line_prefix": "'%m [%p] %u@%d '",
        }
        path = os.path.join(self.datadir, "postgresql.auto.conf")
        with open(path, "w") as f:
            f.write("# written by tests/integration/harness.py\n")
            for k, v in conf.items():
                f.write("%s = %s\n" % (k, v))
        pw = pwd.getpwnam(self.OS_USER)
        os.chown(path, pw.pw_uid, pw.pw_gid)

    def _admin_psql(self, sql):
        return self._must([os.path.join(self.bindir, "psql"), "-X", "-q", "-A", "-t",
                           "-v", "ON_ERROR_STOP=1", "-h", self.sockdir, "-p", str(self.port),
                           "-U", self.OS_USER, "-d", "postgres", "-c", sql],
                          "psql as postgres").stdout

    def _pg_ctl_stop(self):
        return self._as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                                  "-m", "fast", "-w", "-t", "120", "stop"])

    def stop(self):
        """Stop the server (fast: active sessions are cut) and remove its directory."""
        if self.datadir and os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            r = self._pg_ctl_stop()
            if r.returncode != 0:
                # Last resort so a wedged server does not outlive the run.
                self._as_postgres([os.path.join(self.bindir, "pg_ctl"), "-D", self.datadir,
                                   "-m", "immediate", "-w", "-t", "60", "stop"])
        self.started = False
        if self.tmpdir and not os.environ.get("PGWARDEN_ITEST_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)

    def enable_tls(self, cert, key, ca=None):
        """Turn on the server's TLS (ssl = on) with this certificate and key, copied into
        the data directory as the postgres user's own (PostgreSQL refuses a key others can
        read). A reload applies it; new connections may then negotiate TLS."""
        pw = pwd.getpwnam(self.OS_USER)
        names = [("server.crt", cert), ("server.key", key)] + ([("root.crt", ca)] if ca else [])
        for name, src in names:
            dst = os.path.join(self.datadir, name)
            shutil.copyfile(src, dst)
            os.chown(dst, pw.pw_uid, pw.pw_gid)
            os.chmod(dst, 0o600)
        self._admin_psql("ALTER SYSTEM SET ssl = on")
        self._admin_psql("ALTER SYSTEM SET ssl_cert_file = 'server.crt'")
        self._admin_psql("ALTER SYSTEM SET ssl_key_file = 'server.key'")
        if ca:
            self._admin_psql("ALTER SYSTEM SET ssl_ca_file = 'root.crt'")
        self._admin_psql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 10
        while self._admin_psql("SHOW ssl").strip() != "on":
            if time.monotonic() > deadline:
                raise RuntimeError("ssl did not turn on:" + self._log_tail())
            time.sleep(0.1)
        return self

    def _log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "\n-- postgres log tail --\n" + "".join(f.readlines()[-n:])
        except (OSError, TypeError):
            return ""

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()


# --------------------------------------------------------------------------------------------
# pgwardend


class Relay(Endpoint):
    """One pgwardend process listening on 127.0.0.1:port with stderr captured to a file."""

    def __init__(self, binary, upstream, creds, workdir, workers=2, extra_args=(),
                 config_text=None, env=None):
        host, pg_port = upstream
        super().__init__("127.0.0.1", None, creds.user, creds.password, creds.dbname,
                         creds.bindir)
        self.binary = binary
        self.upstream = (host, pg_port)
        self.workers = workers
        self.extra_args = list(extra_args)
        self.workdir = workdir
        self.config_path = None
        if config_text is not None:
            self.config_path = os.path.join(workdir, "pgwarden-%d.yaml" % id(self))
            with open(self.config_path, "w") as f:
                f.write(config_text)
        self.env_extra = dict(env or {})
        self.proc = None
        self.log_path = None
        self.argv = None
        self.killed = False  # True when stop() had to SIGKILL
        self.signals_sent = set()  # through .signal(): a death by one of these is no crash
        self.drain_seconds = 30.0
        self.stop_timeout = None
        self._health_reported = False  # a problem is reported once, not again at teardown

    def _argv(self):
        host, pg_port = self.upstream
        up = "[%s]:%d" % (host, pg_port) if ":" in host else "%s:%d" % (host, pg_port)
        argv = [self.binary, "--listen", "%s:%d" % (self.host, self.port),
                "--upstream", up, "--workers", str(self.workers)]
        if self.config_path:
            argv += ["--config", self.config_path]
        # The admin socket defaults to /run/pgwarden/admin.sock; every test relay gets its
        # own so that parallel relays (and an installed one) never collide.
        sets_admin = any(a == "--admin-socket" for a in self.extra_args) or (
            self.config_path is not None and "admin_socket" in open(self.config_path).read())
        if not sets_admin:
            argv += ["--admin-socket", os.path.join(self.workdir, "admin-%d.sock" % self.port)]
        drain = _flag_value(self.extra_args, "--timeouts-drain")
        if drain is None and not (self.config_path and "drain" in open(self.config_path).read()):
            drain = TEST_DRAIN
            argv += ["--timeouts-drain", drain]
        self.drain_seconds = parse_duration(drain) if drain is not None else 30.0
        return argv + self.extra_args

    def start(self, timeout=START_TIMEOUT):
        env = dict(os.environ)
        env.update(self.env_extra)
        last = None
        # Retry on a fresh port if the one we probed was taken before the daemon bound it.
        for attempt in range(3):
            self.port = free_port(self.host)
            self.log_path = os.path.join(self.workdir, "pgwardend-%d.log" % self.port)
            self.argv = self._argv()
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)
            try:
                wait_for_listen(self.port, timeout, self.proc, "pgwardend",
                                owner_pid=self.proc.pid)
                return self
            except RuntimeError as e:  # exited early
                last = "%s\nargv: %s\n%s" % (e, " ".join(self.argv), self.log_tail())
                if "in use" not in self.raw_log():
                    break
            except TimeoutError as e:
                last = "%s\nargv: %s\n%s" % (e, " ".join(self.argv), self.log_tail())
                self.stop(check=False)
                break
        raise RuntimeError("pgwardend failed to start: %s" % last)

    # -- logs

    def raw_log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def log_tail(self, n=40):
        lines = self.raw_log().splitlines()[-n:]
        return "-- pgwardend log tail (%s) --\n%s" % (self.log_path, "\n".join(lines))

    def log_lines(self):
        """Every complete logfmt line the daemon wrote so far, parsed; other lines
        (sanitizer output, a partial last line) are skipped."""
        text = self.raw_log()
        if text and not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
        out = []
        for ln in text.splitlines():
            if "=" not in ln:
                continue
            try:
                out.append(parse_logfmt(ln))
            except LogfmtError:
                continue
        return out

    def wait_for_log(self, predicate, timeout=30.0):
        """The first parsed log line matching predicate, waiting at most timeout seconds.

        predicate is a callable on the parsed dict, or a dict of key: value pairs that must
        all be present and equal. Raises AssertionError with the log tail on timeout.
        """
        if isinstance(predicate, dict):
            want = dict(predicate)
            predicate = lambda d: all(d.get(k) == v for k, v in want.items())  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            for d in self.log_lines():
                if predicate(d):
                    return d
            if time.monotonic() >= deadline:
                raise AssertionError("no matching pgwardend log line within %.0fs\n%s"
                                     % (timeout, self.log_tail()))
            time.sleep(0.05)

    # -- process control

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.signals_sent.add(int(sig))
            self.proc.send_signal(sig)

    def stop(self, timeout=None, check=True):
        """SIGTERM, wait up to timeout (default: the drain timeout plus STOP_TIMEOUT), then
        SIGKILL. Returns the exit status.

        With check, raises AssertionError if the daemon crashed (died of a signal the test
        did not send), outlived the bound after SIGTERM, or printed a sanitizer report.
        """
        if self.proc is None:
            return None
        if timeout is None:
            timeout = self.drain_seconds + STOP_TIMEOUT
        self.stop_timeout = timeout
        if self.proc.poll() is None:
            self.signals_sent.add(int(signal.SIGTERM))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait(30)
        rc = self.proc.returncode
        if check:
            self.check_health()
        return rc

    def check_health(self):
        if self._health_reported:
            return
        problems = []
        reports = sanitizer_reports(self.raw_log())
        if reports:
            problems.append("sanitizer report in pgwardend output:\n  " + "\n  ".join(reports[:10]))
        rc = self.proc.returncode if self.proc else None
        if self.killed:
            problems.append("pgwardend did not exit within %.0fs of SIGTERM (drain timeout "
                            "%.1fs); killed" % (self.stop_timeout, self.drain_seconds))
        elif rc is not None and rc < 0 and -rc not in self.signals_sent:
            problems.append("pgwardend died of signal %d (%s)"
                            % (-rc, signal.Signals(-rc).name))
        if problems:
            self._health_reported = True
            raise AssertionError("\n".join(problems) + "\nargv: %s\n%s"
                                 % (" ".join(self.argv or []), self.log_tail(80)))


class Target(Endpoint):
    """What a scenario test connects to: the cluster directly, pgwardend, or pgwardend
    behind a one-byte-at-a-time forwarder. .kind says which."""

    def __init__(self, kind, endpoint, creds, relay=None, byte_relay=None):
        super().__init__(endpoint.host, endpoint.port, creds.user, creds.password,
                         creds.dbname, creds.bindir)
        self.kind = kind
        self.relay = relay
        self.byte_relay = byte_relay

    @property
    def bytewise(self):
        return self.kind == "pgwarden-bytewise"

    def __repr__(self):
        return "Target(%s %s:%s)" % (self.kind, self.host, self.port)
