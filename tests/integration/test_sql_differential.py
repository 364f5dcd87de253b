"""The lexer agrees with the server: pgwarden's statement split of a corpus, checked
statement by statement against the real PostgreSQL 15 server.

The oracle. For every statement pgwarden's splitter finds (tests/tools/sql_split_dump.c),
the test sends that text alone to the server as an extended-protocol Parse (which parses
and analyses but never executes it) and reads the server's answer:

  * the server refuses a text holding several statements before anything else looks at
    it: exec_parse_message() raw-parses the whole text and, if it yields more than one
    statement, fails with "cannot insert multiple commands into a prepared statement". So
    that message means pgwarden saw one statement where the server sees several: a
    boundary pgwarden missed, the dangerous direction (a hidden statement);
  * a lexical error at the end of the text ("unterminated quoted string", "unterminated
    dollar-quoted string", "unterminated /* comment", ...) means pgwarden cut inside a token:
    a boundary the server does not have;
  * ParseComplete, or any error raised after the raw parse (a missing relation, a type
    error, an undetermined parameter type: parse analysis runs only on a single statement),
    proves the server sees exactly one statement in that text: agreement;
  * a syntax error (or another error of the raw parser: bad escapes, invalid encoding)
    stops the server before it has counted: the oracle cannot tell, and the statement is
    counted as inconclusive rather than guessed.

Since the pieces partition the corpus, "every piece is exactly one statement for the
server" is "the server's boundaries are pgwarden's". The hand-written corpus
(data/lexer_nasty.sql: nested comments, dollar quotes with and without tags, E'' and U&''
with UESCAPE, standard_conforming_strings off, quoted identifiers) is all valid SQL, so
every one of its statements must be conclusive. PostgreSQL's own regression SQL
(regress_corpus.fetch(), from Debian's postgresql-15 source package, cached under /tmp)
deliberately contains errors; there the test requires no disagreement at all and reports
how much was conclusive. The one documented divergence is the SQL-standard function body
(BEGIN ATOMIC ... END): the server keeps it whole, pgwarden splits it at every ';' on
purpose (sql.h), so statements of such bodies are counted apart, never as agreement.
"""

import os
import re
import subprocess
import tempfile

import pytest

import harness
import regress_corpus
import wire

HERE = os.path.dirname(os.path.abspath(__file__))
MULTIPLE = "cannot insert multiple commands into a prepared statement"
UNTERMINATED = re.compile(r"^unterminated ")
# Raised while raw-parsing (the lexer or the grammar), before the server counts
# statements: the oracle cannot tell from these.
RAW_PARSE_STATES = {"42601", "22025", "22021", "0A000", "54001", "22P05", "42622"}
BATCH = 200


def dumper():
    path = os.path.join(os.path.dirname(os.environ.get("PGWARDEND", "")), "tests",
                        "sql_split_dump")
    if not os.path.exists(path):
        path = os.path.join(harness.REPO_ROOT, "build", "tests", "sql_split_dump")
    if not os.path.exists(path):
        pytest.fail("build/tests/sql_split_dump is missing: make check-integration builds it")
    return path


def psql_script_to_sql(text):
    """What psql would send of a regression script, as one text: backslash meta-command
    lines dropped, COPY ... FROM stdin data blocks dropped, a trailing \\g/\\gset/\\gx/\\gexec
    turned into the ';' it stands for."""
    out = []
    in_copy = False
    for line in text.split(b"\n"):
        if in_copy:
            if line.rstrip(b"\r") == b"\\.":
                in_copy = False
            continue
        if line.startswith(b"\\"):
            continue
        line = re.sub(rb"\s\\(g|gset|gx|gexec|gdesc|crosstabview)\b.*$", b";", line)
        out.append(line)
        if re.search(rb"(?i)\bfrom\s+stdin\b.*;\s*$", line):
            in_copy = True
    return b"\n".join(out)


def split(path):
    """pgwarden's statements: (mode, offset, length) with mode 'on'/'off' for
    standard_conforming_strings."""
    r = subprocess.run([dumper(), path], capture_output=True, check=True, timeout=120)
    out = []
    for line in r.stdout.decode().splitlines():
        mode, off, length, _flags = line.split()
        out.append((mode, int(off), int(length)))
    return out


class Verdicts:
    def __init__(self):
        self.agree = 0
        self.inconclusive = 0
        self.atomic = 0
        self.disagree = []
        self.unclear = [] # the first few inconclusive ones, for the failure message

    def __repr__(self):
        return str(self)

    def __str__(self):
        return ("%d agree, %d inconclusive, %d in BEGIN ATOMIC bodies, %d disagree"
                % (self.agree, self.inconclusive, self.atomic, len(self.disagree)))


def judge(conn, data, pieces, name, v):
    """Send every piece as its own Parse (pipelined in batches), classify the answers."""
    mode = "on"
    atomic = False
    i = 0
    while i < len(pieces):
        batch = []
        while i < len(pieces) and len(batch) < BATCH:
            pmode, off, length = pieces[i]
            if pmode != mode:
                if batch:
                    break
                conn.query("SET standard_conforming_strings = %s" % pmode)
                mode = pmode
            text = data[off:off + length]
            batch.append((text, off))
            conn.send(wire.parse(text) + wire.sync())
            i += 1
        for text, off in batch:
            msgs = conn.recv_until("Z", timeout=60)
            err = next((m for m in msgs if m.type == "E"), None)
            # A BEGIN ATOMIC body is split on purpose: its statements are not judged.
            upper = text.upper()
            if re.search(rb"\bBEGIN\s+ATOMIC\b", upper):
                atomic = True
            if atomic:
                v.atomic += 1
                if re.match(rb"^\s*END\s*$", upper):
                    atomic = False
                continue
            if err is None:
                v.agree += 1
                continue
            f = err.error_fields()
            msg, code = f.get("M", ""), f.get("C", "")
            if msg == MULTIPLE or UNTERMINATED.match(msg):
                v.disagree.append("%s@%d: %s: %r" % (name, off, msg, text[:200]))
            elif code in RAW_PARSE_STATES:
                v.inconclusive += 1
                if len(v.unclear) < 20:
                    v.unclear.append("%s@%d: %s: %r" % (name, off, msg, text[:120]))
            else:
                v.agree += 1
    if mode != "on":
        conn.query("SET standard_conforming_strings = on")


def session(pg):
    conn = wire.Conn(pg.host, pg.port, timeout=60)
    msgs = conn.login(pg.user, pg.password, pg.dbname)
    assert msgs[-1].type == "Z", msgs
    # Lexer warnings (nonstandard use of \\' ...) are notices: keep them out of the way.
    conn.query("SET client_min_messages = error")
    return conn


def run_file(pg, path, name, v, preprocess):
    with open(path, "rb") as f:
        data = f.read()
    if preprocess:
        data = psql_script_to_sql(data)
    with tempfile.NamedTemporaryFile(suffix=".sql") as tmp:
        tmp.write(data)
        tmp.flush()
        pieces = split(tmp.name)
    conn = session(pg)
    try:
        judge(conn, data, pieces, name, v)
    finally:
        conn.close()


def test_nasty_cases_agree_and_are_conclusive(pg):
    v = Verdicts()
    run_file(pg, os.path.join(HERE, "data", "lexer_nasty.sql"), "lexer_nasty.sql", v, False)
    print("lexer_nasty.sql:", v)
    assert not v.disagree, "\n".join(v.disagree)
    assert v.inconclusive == 0, "\n".join(v.unclear)
    assert v.agree >= 50, v


def test_regression_corpus_agrees(pg):
    try:
        sqldir = regress_corpus.fetch()
    except Exception as e:  # no mirror reachable: say so, loudly
        pytest.fail("cannot fetch PostgreSQL's regression SQL: %s" % e)
    v = Verdicts()
    files = sorted(f for f in os.listdir(sqldir) if f.endswith(".sql"))
    assert len(files) > 100
    for name in files:
        run_file(pg, os.path.join(sqldir, name), name, v, True)
    print("regression corpus (%d files):" % len(files), v)
    assert not v.disagree, "%d disagreements:\n%s" % (len(v.disagree),
                                                      "\n".join(v.disagree[:50]))
    total = v.agree + v.inconclusive
    assert total > 20000, v
    # Most of the corpus must be conclusive for the agreement to mean something.
    assert v.agree >= 0.8 * total, v


def test_oracle_detects_wrong_splits(pg):
    """The oracle itself: boundaries a broken lexer would produce are reported, in both
    directions, so agreement above is evidence and not an oracle that cannot fail."""
    data = (b"SELECT 'a;b'; SELECT 1; SELECT 2; SELECT $$x;y$$; "
            b"SELECT 'unrelated' FROM nowhere_at_all")
    at = data.index
    cut_in_string = [("on", 0, len(b"SELECT 'a;"))]               # inside a string
    merged = [("on", at(b"SELECT 1"), len(b"SELECT 1; SELECT 2"))]  # two statements as one
    cut_in_dollar = [("on", at(b"SELECT $$"), len(b"SELECT $$x;"))]  # inside a dollar quote
    # One statement each; the second fails parse analysis, which proves it is one.
    right = [("on", 0, len(b"SELECT 'a;b'")),
             ("on", at(b"SELECT 'unrelated'"), len(data) - at(b"SELECT 'unrelated'"))]
    conn = session(pg)
    try:
        for pieces, want in ((cut_in_string, 1), (merged, 1), (cut_in_dollar, 1), (right, 0)):
            v = Verdicts()
            judge(conn, data, pieces, "oracle", v)
            assert len(v.disagree) == want, (pieces, v, v.disagree)
    finally:
        conn.close()
