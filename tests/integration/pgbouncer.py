"""A throwaway PgBouncer for the integration suite: the pooler many applications put in
front of PostgreSQL, here in front of pgwardend (app → pgbouncer → pgwardend → postgres).

PgBouncer refuses to run as root, so like the cluster it runs as the postgres OS user in a
temporary directory that user owns. It authenticates clients with SCRAM from a plain-text
auth_file and logs into its server (whatever `server` points at) with the same password.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile

import harness

PGBOUNCER = os.environ.get("PGBOUNCER_BIN", "/usr/sbin/pgbouncer")
OS_USER = "postgres"


class PgBouncer(harness.Endpoint):
    def __init__(self, server, creds, pool_mode="transaction", pool_size=4,
                 max_client_conn=200, extra_ini=""):
        super().__init__("127.0.0.1", None, creds.user, creds.password, creds.dbname,
                         creds.bindir)
        self.server = server  # (host, port)
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.extra_ini = extra_ini  # more [pgbouncer] settings (client_tls_*, ...)
        self.tmpdir = None
        self.proc = None
        self.log_path = None

    def start(self):
        pw = pwd.getpwnam(OS_USER)
        self.tmpdir = tempfile.mkdtemp(prefix="pgwarden-itest-bouncer-")
        os.chown(self.tmpdir, pw.pw_uid, pw.pw_gid)
        self.log_path = os.path.join(self.tmpdir, "pgbouncer.log")
        ini = os.path.join(self.tmpdir, "pgbouncer.ini")
        users = os.path.join(self.tmpdir, "userlist.txt")
        with open(users, "w") as f:
            f.write('"%s" "%s"\n' % (self.user, self.password))
        os.chmod(users, 0o600)
        os.chown(users, pw.pw_uid, pw.pw_gid)
        last = None
        for _ in range(3):  # a fresh port if the probed one was taken meanwhile
            self.port = harness.free_port()
            with open(ini, "w") as f:
                f.write(
                    "[databases]\n"
                    "%(db)s = host=%(sh)s port=%(sp)d dbname=%(db)s\n"
                    "[pgbouncer]\n"
                    "listen_addr = 127.0.0.1\n"
                    "listen_port = %(port)d\n"
                    "unix_socket_dir =\n"
                    "auth_type = scram-sha-256\n"
                    "auth_file = %(users)s\n"
                    "pool_mode = %(mode)s\n"
                    "default_pool_size = %(pool)d\n"
                    "min_pool_size = 0\n"
                    "reserve_pool_size = 0\n"
                    "max_client_conn = %(maxc)d\n"
                    "pidfile = %(dir)s/pgbouncer.pid\n"
                    "logfile = %(log)s\n"
                    "admin_users = %(user)s\n"
                    "%(extra)s"
                    % dict(extra=self.extra_ini, db=self.dbname, sh=self.server[0], sp=self.server[1],
                           port=self.port, users=users, mode=self.pool_mode,
                           pool=self.pool_size, maxc=self.max_client_conn, dir=self.tmpdir,
                           log=self.log_path, user=self.user))
            os.chown(ini, pw.pw_uid, pw.pw_gid)
            self.proc = subprocess.Popen(["runuser", "-u", OS_USER, "--", PGBOUNCER, ini],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL, start_new_session=True)
            try:
                harness.wait_for_listen(self.port, harness.START_TIMEOUT, self.proc,
                                        "pgbouncer")
                return self
            except (RuntimeError, TimeoutError) as e:
                last = "%s\n%s" % (e, self.log_tail())
                self.stop()
        raise RuntimeError("pgbouncer would not start: %s" % last)

    def log_tail(self, n=30):
        try:
            with open(self.log_path, errors="replace") as f:
                return "-- pgbouncer log tail --\n" + "".join(f.readlines()[-n:])
        except (OSError, TypeError):
            return ""

    def stop(self):
        """SIGTERM (PgBouncer 1.18: immediate shutdown; nothing here needs the pool's
        goodbye), SIGKILL if that does not end it."""
        if self.proc is not None and self.proc.poll() is None:
            # runuser passes SIGTERM on to the child it runs (not SIGINT).
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
        if self.tmpdir and not os.environ.get("PGWARDEN_ITEST_KEEP"):
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None
