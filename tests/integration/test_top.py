"""pgwarden-top in a real terminal (tmux), against a running pgwardend (issue #4).

The test drives the program the way an operator does, with keys, and reads the screen with
capture-pane: rows appear for live sessions, sorting and filtering change what is shown,
kill (with its confirmation) ends exactly the selected session, and neither terminal
resizes nor the daemon stopping and coming back crash it. The program runs under a shell
that prints its exit status, so a crash shows as "EXIT:139" instead of vanishing.
"""

import os
import re
import shlex
import shutil
import subprocess
import time

import pytest

from test_admin import ctl_sessions, tool, wait_admin_socket, wait_until

ROLES = ("ta_alice", "ta_bob")  # 8 characters: the USER column's width at 80 columns
PASSWORD = "ta-secret"


class Tmux:
    """A private tmux server (its own -L socket) running one program in an 80x24 pane."""

    def __init__(self, tag):
        self.server = "pgwtop-%d-%s" % (os.getpid(), tag)

    def cmd(self, *args, check=True):
        return subprocess.run(["tmux", "-L", self.server] + list(args), capture_output=True,
                              text=True, check=check, timeout=30)

    def start(self, argv, cols=80, rows=24):
        shell = "%s; echo EXIT:$?; sleep 3600" % shlex.join(argv)
        self.cmd("new-session", "-d", "-s", "top", "-x", str(cols), "-y", str(rows),
                 "sh", "-c", shell)

    def keys(self, *keys):
        for k in keys:
            self.cmd("send-keys", "-t", "top", k)
            time.sleep(0.05)

    def type(self, text):
        self.cmd("send-keys", "-t", "top", "-l", text)

    def screen(self):
        return self.cmd("capture-pane", "-p", "-t", "top").stdout

    def resize(self, cols, rows):
        self.cmd("resize-window", "-t", "top", "-x", str(cols), "-y", str(rows))

    def wait(self, pred, what, timeout=20.0):
        """The first screen for which pred is true."""
        last = [""]

        def check():
            last[0] = self.screen()
            assert "EXIT:" not in last[0], "pgwarden-top exited:\n" + last[0]
            return last[0] if pred(last[0]) else None

        try:
            return wait_until(check, timeout=timeout, what=what, interval=0.1)
        except AssertionError as e:
            raise AssertionError("%s\n-- screen --\n%s" % (e, last[0])) from None

    def kill(self):
        self.cmd("kill-server", check=False)


@pytest.fixture
def tmux(request):
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (scripts/install-deps.sh installs it)", pytrace=False)
    t = Tmux(re.sub(r"[^A-Za-z0-9]", "", request.node.name)[:20])
    yield t
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print("\n-- pgwarden-top screen at failure --\n" + t.screen() if t.cmd(
            "has-session", "-t", "top", check=False).returncode == 0 else "")
    t.kill()


@pytest.fixture
def top_bin(pgwardend_bin):
    return tool(pgwardend_bin, "pgwarden-top")


@pytest.fixture
def ctl(pgwardend_bin):
    return tool(pgwardend_bin, "pgwardenctl")


def _roles(pg):
    for role in ROLES:
        pg.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '%s') THEN "
                "CREATE ROLE %s LOGIN PASSWORD '%s'; END IF; END $$" % (role, role, PASSWORD))


def _connect(relay, user):
    import psycopg
    return psycopg.connect(relay.dsn(user=user, password=PASSWORD), autocommit=True)


def _table(screen):
    """The table rows of a screen: lines after the header line, up to the key help."""
    lines = screen.splitlines()
    for i, ln in enumerate(lines):
        if ln.startswith("ID ") and "USER" in ln:
            rows = []
            for r in lines[i + 1:]:
                if r.startswith("q quit") or r.startswith("---"):
                    break
                if r.strip():
                    rows.append(r)
            return rows
    return []


def _row_of(screen, user):
    rows = [r for r in _table(screen) if re.search(r"\s%s\s" % re.escape(user), r)]
    return rows[0] if len(rows) == 1 else None


def _index_of(screen, user):
    for i, r in enumerate(_table(screen)):
        if re.search(r"\s%s\s" % re.escape(user), r):
            return i
    return -1


def test_top_rows_sort_filter_kill(pg, relay_factory, top_bin, ctl, tmux):
    import psycopg
    _roles(pg)
    relay = relay_factory()
    sock = wait_admin_socket(relay)
    alice = _connect(relay, "ta_alice")
    bob = _connect(relay, "ta_bob")
    try:
        for c in (alice, bob):
            c.execute("SELECT 1")
        ids = {}
        for s in wait_until(lambda: [s for s in ctl_sessions(ctl, sock) if s["user"] in ROLES]
                            if len([s for s in ctl_sessions(ctl, sock) if s["user"] in ROLES]) == 2
                            else None, what="both sessions listed"):
            ids[s["user"]] = s["id"]

        tmux.start([top_bin, "--socket", sock, "-d", "0.5"])
        scr = tmux.wait(lambda s: _row_of(s, "ta_alice") and _row_of(s, "ta_bob"),
                        "rows for both sessions")
        assert _row_of(scr, "ta_alice").startswith(ids["ta_alice"][:8])
        assert _row_of(scr, "ta_bob").startswith(ids["ta_bob"][:8])
        assert "pgwardend pid %d" % relay.proc.pid in scr
        assert "Sessions: 2" in scr

        # Sort: from the default (qps) five columns to the left is USER; then reverse it.
        tmux.keys("<", "<", "<", "<", "<")
        scr = tmux.wait(lambda s: "Sort: user " in s, "sort by user")
        assert _index_of(scr, "ta_alice") < _index_of(scr, "ta_bob"), scr
        tmux.keys("r")
        scr = tmux.wait(lambda s: "Sort: user (reversed)" in s, "reversed sort")
        assert _index_of(scr, "ta_bob") < _index_of(scr, "ta_alice"), scr

        # Filter by user: only bob's row is left.
        tmux.keys("u")
        tmux.type("ta_bob")
        tmux.keys("Enter")
        scr = tmux.wait(lambda s: "Filter: user=ta_bob" in s and _row_of(s, "ta_bob")
                        and _index_of(s, "ta_alice") < 0, "filtered to ta_bob")
        assert len(_table(scr)) == 1

        # Kill the selected (only) row, after the confirmation.
        tmux.keys("k")
        scr = tmux.wait(lambda s: "Kill session %s?" % ids["ta_bob"][:8] in s, "confirmation")
        tmux.keys("y")
        tmux.wait(lambda s: "no session matches the filter" in s, "bob's row gone")
        with pytest.raises(psycopg.OperationalError) as ei:
            for _ in range(100):
                bob.execute("SELECT 1")
                time.sleep(0.1)
        assert "terminating connection due to administrator command" in str(ei.value)
        assert alice.execute("SELECT 3").fetchone() == (3,)

        # Clear the filter: alice is still there; the detail pane shows her identity.
        tmux.keys("c")
        tmux.wait(lambda s: _row_of(s, "ta_alice") and "Filter: none" in s, "filter cleared")
        tmux.keys("Enter")
        scr = tmux.wait(lambda s: "session detail" in s and "user ta_alice" in s, "detail pane")
        assert ids["ta_alice"] in scr
        tmux.keys("q")
        scr = wait_until(lambda: (lambda s: s if "EXIT:" in s else None)(tmux.screen()),
                         what="pgwarden-top to quit")
        assert "EXIT:0" in scr, scr
    finally:
        alice.close()
        bob.close()


def test_top_survives_resize_and_daemon_restart(pg, relay_factory, top_bin, tmux):
    import psycopg
    relay = relay_factory()
    sock = wait_admin_socket(relay)
    conn = psycopg.connect(relay.dsn(), autocommit=True)
    try:
        conn.execute("SELECT 1")
        tmux.start([top_bin, "--socket", sock, "-d", "0.5"])
        tmux.wait(lambda s: "Sessions: 1 " in s and _table(s), "one session shown")

        for cols, rows in ((50, 12), (30, 8), (200, 60), (80, 24)):
            tmux.resize(cols, rows)
            if cols < 40:
                tmux.wait(lambda s: "too small" in s, "too-small notice at %dx%d" % (cols, rows))
            else:
                tmux.wait(lambda s: s.startswith("pgwarden-top") and _table(s),
                          "table at %dx%d" % (cols, rows))
    finally:
        conn.close()

    # The daemon goes away: the view says so and keeps running.
    relay.stop()
    tmux.wait(lambda s: "pgwardend: DOWN" in s and "unreachable" in s, "daemon-down notice")
    time.sleep(1.5)  # a few refreshes against a missing socket
    tmux.wait(lambda s: "pgwardend: DOWN" in s, "still running while down")

    # It comes back on the same socket: the view reconnects by itself.
    again = relay_factory(extra_args=["--admin-socket", sock])
    wait_admin_socket(again)
    tmux.wait(lambda s: "pgwardend pid %d" % again.proc.pid in s, "reconnected to the new daemon")
    tmux.keys("q")
    scr = wait_until(lambda: (lambda s: s if "EXIT:" in s else None)(tmux.screen()),
                     what="pgwarden-top to quit")
    assert "EXIT:0" in scr, scr
