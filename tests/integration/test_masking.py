"""test_masking: masking through the relay, against a real PostgreSQL 15 (docs/MASKING.md).

The fixture (masking_schema.sql) is a customers table with SSN, card number, e-mail, phone,
date of birth, balance and tags, with a child table, a partitioned payments table, a view
and a materialized view over it, and an orders table with no masked column; customers is
analysed, so pg_stats holds samples of its values. Role `support` is masked by a policy rule; role `auditor`
is not. Every test checks what a client actually receives, with the clients operators use:
psql, psycopg (text and binary), pgbench, and raw protocol messages.

These tests need what the stage runs inside: the relay core v2 running stages, and the
policy file (rules with `mask:`) loading masking profiles and publishing the catalog. Until a
pgwardend built from main has both, the whole module is skipped, and says why.

Each test's docstring names the path of issue #13 it covers.
"""

import csv
import io
import json
import os
import struct
import subprocess
import threading
import time

import psycopg
import psycopg.errors
import pytest

import harness
import wire

HERE = os.path.dirname(os.path.abspath(__file__))

SECRETS = ("123-45-6789", "987-65-4321", "111-22-3333", "555-12-3456", "4111111111111111",
           "5500000000000004", "alice@example.com", "1985-07-23", "+1 (555) 123-4567")

POLICY = """
rules:
  - name: support
    match: { user: support }
    allow: [read, transaction, session, copy_out, listen_notify, ddl, prepare]
    mask:
      public.customers.ssn: partial-last-4
      public.customers.card: partial-last-4
      public.customers.email: email
      public.customers.phone: phone
      public.customers.dob: date
      public.customers.balance: redact
      public.customers.tags: hash
      public.payments.card: hash
  - name: support-writer
    match: { user: support_rw }
    allow: [read, write, transaction, session]
    mask:
      public.customers.ssn: partial-last-4
      public.customers.card: null
  - name: auditor
    match: { user: auditor }
    allow: [read, write, transaction, session, copy_out, listen_notify]
"""


def _not_ready():
    """Why this pgwardend cannot run these tests, or None. Checked at import, so a skipped
    module costs no cluster start."""
    binary = os.environ.get("PGWARDEND",
                            os.path.join(harness.REPO_ROOT, "build", "pgwardend"))
    if not os.path.exists(binary):
        return None  # the pgwardend_bin fixture fails with its own message
    r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=30)
    text = r.stdout + r.stderr
    if "--mask-key-file" not in text:
        return "this pgwardend has no masking keys"
    if "--policy" not in text:
        return ("masking runs as a stage of the relay core v2, configured by the policy "
                "file's `mask:` rules; this pgwardend has no policy file option yet")
    if "mask" not in r.stdout.split("stages:")[-1].split("\n")[0]:
        return "this pgwardend does not run the mask stage (pgwardend --help lists its stages)"
    return None


pytestmark = pytest.mark.skipif(_not_ready() is not None, reason=str(_not_ready()))


@pytest.fixture(scope="module")
def masking_ready(pgwardend_bin):
    return True


@pytest.fixture(scope="module")
def maskdb(pg, masking_ready):
    """A database of its own with the fixture, and the three roles."""
    pg._admin_psql("CREATE DATABASE maskdb OWNER pgw")
    with open(os.path.join(HERE, "masking_schema.sql")) as f:
        pg.psql(f.read(), dbname="maskdb")
    for role in ("support", "support_rw", "auditor"):
        pg.psql("CREATE ROLE %s LOGIN PASSWORD '%s-secret'" % (role, role), dbname="maskdb")
        pg.psql("GRANT SELECT ON ALL TABLES IN SCHEMA public TO %s" % role, dbname="maskdb")
    pg.psql("GRANT UPDATE, INSERT ON customers TO support_rw, auditor", dbname="maskdb")
    # a function that hands out a masked column without naming it in the caller's text
    pg.psql("CREATE FUNCTION customer_ssn(int) RETURNS text LANGUAGE sql STABLE "
            "AS 'SELECT ssn FROM customers WHERE id = $1'", dbname="maskdb")
    return "maskdb"


@pytest.fixture
def masked_relay(relay_factory, pg, maskdb, tmp_path):
    key = tmp_path / "mask.key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o600)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    relay = relay_factory(extra_args=["--mask-key-file", str(key), "--policy", str(policy)]
                          + catalog_args(pg, tmp_path))
    return relay


def catalog_args(pg, tmp_path, database="maskdb"):
    """pgwarden's own catalog connection: the harness's role, its password in a userlist
    file of mode 0600 (docs/CONFIG.md, mask.catalog_*)."""
    passwords = tmp_path / "catalog-passwords.txt"
    passwords.write_text('"%s" "%s"\n' % (pg.user, pg.password.replace('"', '""')))
    os.chmod(passwords, 0o600)
    return ["--mask-catalog-user", pg.user, "--mask-catalog-database", database,
            "--mask-catalog-passwords", str(passwords)]


def connect(relay, role, **kw):
    return psycopg.connect(relay.dsn(user=role, password="%s-secret" % role, dbname="maskdb"),
                           autocommit=True, **kw)


def psql(relay, role, sql, check=True):
    env = relay.env(PGUSER=role, PGPASSWORD="%s-secret" % role, PGDATABASE="maskdb")
    r = subprocess.run([os.path.join(harness.PG_BINDIR, "psql"), "-X", "-A", "-t", "-c", sql],
                       env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


def assert_no_secrets(text):
    for s in SECRETS:
        assert s not in text, "a masked session saw %r" % s


# ---- results ---------------------------------------------------------------------------------


def test_psql_masked_role_and_clear_role(masked_relay):
    """Item 3, psql: the masked role sees masked values, the auditor clear ones."""
    out = psql(masked_relay, "support", "SELECT * FROM customers ORDER BY id").stdout
    assert_no_secrets(out)
    assert "XXXXXXX6789" in out and "xxxxx@example.com" in out and "1985-01-01" in out
    assert "Alice" in out
    clear = psql(masked_relay, "auditor", "SELECT * FROM customers ORDER BY id").stdout
    assert "123-45-6789" in clear and "alice@example.com" in clear


@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_psycopg_text_and_binary(masked_relay, binary):
    """Item 3, psycopg in text and in binary format: the same masked values, and the hash
    token of a binary session equals the text one."""
    with connect(masked_relay, "support") as conn:
        cur = conn.cursor(binary=binary)
        rows = cur.execute("SELECT id, ssn, card, email, phone, dob, balance, tags "
                           "FROM customers ORDER BY id").fetchall()
    flat = repr(rows)
    assert_no_secrets(flat)
    # citext has no fixed OID, so psycopg's binary loader hands its bytes over undecoded
    alice = [v.decode() if isinstance(v, bytes) else v for v in rows[0]]
    assert alice[1] == "XXXXXXX6789"
    assert alice[2] == "XXXXXXXXXXXX1111"
    assert alice[3] == "xxxxx@example.com"
    assert alice[4] == "+0 (000) 000-0000"
    assert str(alice[5]) == "1985-01-01"
    assert str(alice[6]) == "0.00"
    assert len(alice[7]) == 2 and all(len(t) == 32 for t in alice[7])
    with connect(masked_relay, "support") as conn:
        other = conn.cursor(binary=not binary).execute(
            "SELECT tags FROM customers WHERE id = 1").fetchone()[0]
    assert other == alice[7]


def test_pgbench_custom_script(masked_relay, tmp_path):
    """Item 3, pgbench: a custom script reads the SSN in every protocol mode and fails the
    run if it ever sees it clear."""
    # pgbench substitutes a variable only as a whole argument of \\setshell, so the check
    # is a script of its own that gets the value as $1
    check = tmp_path / "check.sh"
    check.write_text('test "$1" = "XXXXXXX6789" && echo 1 || echo 0\n')
    script = tmp_path / "read.sql"
    script.write_text("SELECT ssn FROM customers WHERE id = 1 \\gset\n"
                      "\\setshell ok sh %s :ssn\n"
                      "\\if :ok = 0\nSELECT 1/0;\n\\endif\n" % check)
    env = masked_relay.env(PGUSER="support", PGPASSWORD="support-secret", PGDATABASE="maskdb")
    for mode in ("simple", "extended", "prepared"):
        r = subprocess.run(["pgbench", "-n", "-M", mode, "-t", "50", "-c", "2", "-f",
                            str(script)], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, "pgbench -M %s: %s%s" % (mode, r.stdout, r.stderr)


def test_raw_protocol_and_row_limits(masked_relay):
    """Item 3, raw protocol: simple Query, and an extended-protocol portal run in binary with
    a row limit (PortalSuspended) and continued."""
    with wire.Conn(masked_relay.host, masked_relay.port) as c:
        c.login("support", "support-secret", "maskdb")
        c.send(wire.query("SELECT ssn FROM customers ORDER BY id"))
        rows = c.recv_until("Z")
        assert_no_secrets(repr([m.body for m in rows]))
        c.send(wire.query("BEGIN"))
        c.recv_until("Z")
        c.send(wire.parse("SELECT id, ssn FROM customers ORDER BY id")
               + wire.bind(result_formats=(1,)) + wire.describe_portal()
               + wire.execute(max_rows=1) + wire.flush())
        first = c.recv_until("s")
        c.send(wire.execute(max_rows=0) + wire.sync())
        rest = c.recv_until("Z")
        bodies = b"".join(m.body for m in first + rest if m.type == "D")
        assert b"XXXXXXX6789" in bodies
        assert_no_secrets(repr(bodies))


@pytest.mark.parametrize("fmt", ["text", "csv", "binary"])
def test_copy_to_stdout(masked_relay, fmt):
    """Item 5, COPY TO STDOUT in each format: rewritten, valid for the format."""
    with connect(masked_relay, "support") as conn:
        buf = io.BytesIO()
        with conn.cursor().copy("COPY customers TO STDOUT (FORMAT %s)" % fmt) as copy:
            for block in copy:
                buf.write(block)
    data = buf.getvalue()
    assert_no_secrets(repr(data))
    if fmt == "csv":
        rows = list(csv.reader(io.StringIO(data.decode())))
        assert rows[0][2] == "XXXXXXX6789"
    elif fmt == "text":
        assert b"XXXXXXX6789" in data
    else:
        assert data.startswith(b"PGCOPY\n\xff\r\n\0") and data.endswith(b"\xff\xff")


def test_copy_with_column_list_and_copy_query_refused(masked_relay):
    """Item 5: a COPY with a column list is placed column by column; COPY (query) over
    masked data is refused with 0A000."""
    out = psql(masked_relay, "support",
               "COPY customers (ssn, id) TO STDOUT (DELIMITER '|', NULL 'NULL')").stdout
    assert "XXXXXXX6789|1" in out
    assert_no_secrets(out)
    r = psql(masked_relay, "support", "COPY (SELECT ssn FROM customers) TO STDOUT", check=False)
    assert r.returncode != 0 and "pgwarden masking" in r.stderr


def test_returning(masked_relay):
    """Item 5, RETURNING: a masked writer gets the masked value back."""
    with connect(masked_relay, "support_rw") as conn:
        row = conn.execute("UPDATE customers SET name = name WHERE id = 1 "
                           "RETURNING ssn, card").fetchone()
    assert row == ("XXXXXXX6789", None)


def test_cursor_fetch_move_with_hold(masked_relay):
    """Item 5, cursors: FETCH, MOVE and WITH HOLD; a cursor over a computed column reads
    masked whole, whatever the FETCH looks like."""
    with connect(masked_relay, "support") as conn:
        conn.execute("DECLARE c CURSOR WITH HOLD FOR SELECT id, ssn FROM customers ORDER BY id")
        first = conn.execute("FETCH 1 FROM c").fetchall()
        conn.execute("MOVE 1 IN c")
        rest = conn.execute("FETCH ALL FROM c").fetchall()
        conn.execute("CLOSE c")
        conn.execute("DECLARE d CURSOR WITH HOLD FOR SELECT upper(ssn) FROM customers")
        computed = conn.execute("FETCH ALL FROM d").fetchall()
    assert first == [(1, "XXXXXXX6789")]
    assert_no_secrets(repr(rest) + repr(computed))
    assert all(v is None for (v,) in computed)


EXPRESSIONS = [
    "SELECT ssn::text FROM customers",
    "SELECT ssn || '' FROM customers",
    "SELECT upper(ssn) FROM customers",
    "SELECT row_to_json(c) FROM customers c",
    "SELECT to_jsonb(c) FROM customers c",
    "SELECT string_agg(ssn, ',') FROM customers",
    "SELECT c FROM customers c",
    "SELECT (c).* FROM (SELECT c FROM customers c) s",
    "SELECT (SELECT ssn FROM customers WHERE id = 1)",
    "SELECT ssn FROM customers UNION ALL SELECT 'x'",
    "SELECT * FROM customer_ssn_view",
    "SELECT * FROM customer_ssns",
    "SELECT md5(ssn) FROM customers",
    "SELECT format('%s', ssn) FROM customers",
]


@pytest.mark.parametrize("sql", EXPRESSIONS)
def test_expression_forms_never_clear(masked_relay, sql):
    """Item 4: every expression form over a masked column is masked whole or refused,
    never passed clear."""
    with connect(masked_relay, "support") as conn:
        try:
            rows = conn.execute(sql).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            return  # denied by the rule: also fine
    assert_no_secrets(repr(rows))


def test_subquery_keeps_the_origin(masked_relay):
    """Item 4: a plain column through a subquery keeps its origin, and its strategy."""
    with connect(masked_relay, "support") as conn:
        rows = conn.execute("SELECT ssn FROM (SELECT ssn FROM customers) s "
                            "WHERE ssn IS NOT NULL").fetchall()
    assert ("XXXXXXX6789",) in rows


# ---- hostile clients ----------------------------------------------------------------------

UNMASK_ATTEMPTS = [
    "SELECT ssn AS not_ssn FROM customers",
    "SELECT x.ssn FROM customers AS x",
    "SELECT customer_ssn(1)",
    "SELECT * FROM customer_ssn(1)",
    "SELECT s FROM customer_ssn(1) s",
    "WITH t AS (SELECT ssn FROM customers) SELECT * FROM t",
    "SELECT ssn FROM customers_archive",
    "SELECT card FROM payments",
    "SELECT card FROM payments_1",
    "TABLE customers",
    "SELECT * FROM customer_contacts",
    "VALUES ((SELECT ssn FROM customers WHERE id = 1))",
    "SELECT ssn::bytea FROM customers",
    "SELECT ARRAY[ssn] FROM customers",
    "SELECT ROW(ssn, card) FROM customers",
    "SELECT pg_catalog.textin(pg_catalog.textout(ssn::text)) FROM customers",
]


@pytest.mark.parametrize("sql", UNMASK_ATTEMPTS)
@pytest.mark.parametrize("binary", [False, True], ids=["text", "binary"])
def test_unmask_through_alias_function_view_cte(masked_relay, sql, binary):
    """Hostile client: an alias, a function, a CTE, a child table, a partition, a view,
    a cast to bytea, an array or a row constructor, in text and binary format: the value
    comes out masked, NULL or refused, never clear."""
    with connect(masked_relay, "support") as conn:
        try:
            rows = conn.cursor(binary=binary).execute(sql).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            return
    assert_no_secrets(repr(rows))


def test_prepared_statements_keep_masking(masked_relay):
    """Hostile client: SQL PREPARE/EXECUTE and protocol-level prepared statements reused
    after their first run are masked like the statement itself."""
    with connect(masked_relay, "support") as conn:
        conn.execute("PREPARE p AS SELECT id, ssn, upper(ssn) FROM customers ORDER BY id")
        rows = conn.execute("EXECUTE p").fetchall()
        again = conn.execute("EXECUTE p").fetchall()
        conn.execute("DEALLOCATE p")
        proto = [conn.execute("SELECT id, ssn FROM customers WHERE id = %s", (1,),
                              prepare=True).fetchall() for _ in range(3)]
    assert rows == again
    assert rows[0][:2] == (1, "XXXXXXX6789") and all(r[2] is None for r in rows)
    assert_no_secrets(repr(rows))
    assert proto == [[(1, "XXXXXXX6789")]] * 3


def test_row_beyond_the_lookahead_ends_the_session_never_clear(relay_factory, pg, maskdb,
                                                               tmp_path):
    """Hostile client: a masked column placed after more bytes than mask.row_lookahead. The
    row cannot be rewritten in bounded memory: the session ends with 54000 and nothing of
    the row reaches the client. With the masked column first, the same data streams."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    relay = relay_factory(extra_args=["--policy", str(policy), "--mask-row-lookahead", "1KiB"]
                          + catalog_args(pg, tmp_path))
    with wire.Conn(relay.host, relay.port) as c:
        c.login("support", "support-secret", "maskdb")
        c.send(wire.query("SELECT repeat('x', 8192), ssn FROM customers WHERE id = 1"))
        msgs, rest = c.read_to_close(timeout=60)
    errs = [m.error_fields() for m in msgs if m.type == "E"]
    assert errs and errs[-1]["C"] == "54000"
    assert not [m for m in msgs if m.type == "D"]
    assert_no_secrets(repr([m.body for m in msgs]) + repr(rest))
    with wire.Conn(relay.host, relay.port) as c:
        c.login("support", "support-secret", "maskdb")
        c.send(wire.query("SELECT ssn, repeat('x', 8192) FROM customers WHERE id = 1"))
        rows = [m for m in c.recv_until("Z") if m.type == "D"]
    assert len(rows) == 1 and b"XXXXXXX6789" in rows[0].body


def test_catalog_change_under_a_live_session(masked_relay, pg):
    """Hostile DDL: the column and then the table are renamed (outside pgwarden) while a
    masked session is open. Masking follows the column (table OID, attribute number), not
    its name, so the renamed column stays masked."""
    with connect(masked_relay, "support") as conn:
        before = conn.execute("SELECT ssn FROM customers WHERE id = 1").fetchone()
        try:
            pg.psql("ALTER TABLE customers RENAME COLUMN ssn TO ssn_renamed", dbname="maskdb")
            after = conn.execute("SELECT ssn_renamed FROM customers WHERE id = 1").fetchone()
            pg.psql("ALTER TABLE customers RENAME TO clients", dbname="maskdb")
            moved = conn.execute("SELECT ssn_renamed FROM clients WHERE id = 1").fetchone()
        finally:
            pg.psql("ALTER TABLE IF EXISTS clients RENAME TO customers", dbname="maskdb")
            pg.psql("ALTER TABLE customers RENAME COLUMN ssn_renamed TO ssn", dbname="maskdb")
    assert before == after == moved == ("XXXXXXX6789",)


def test_view_made_elsewhere_is_masked_after_the_periodic_refresh(relay_factory, pg, maskdb,
                                                                 tmp_path):
    """Hostile DDL outside any masked session: another role creates a view over the masked
    column while a masked session is open, and grants it to the masked role. No masked
    session runs DDL and nobody reloads, so only mask.catalog_refresh can teach pgwarden
    that the view reads masked data: after one period the masked session's SELECT from the
    view is masked whole (a view column is masked whole: docs/MASKING.md, Results)."""
    key = tmp_path / "mask.key"
    key.write_bytes(os.urandom(32))
    os.chmod(key, 0o600)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    relay = relay_factory(extra_args=["--mask-key-file", str(key), "--policy", str(policy),
                                      "--mask-catalog-refresh", "1s"]
                          + catalog_args(pg, tmp_path))
    try:
        with connect(relay, "support") as conn:
            assert conn.execute("SELECT ssn FROM customers WHERE id = 1").fetchone() == \
                ("XXXXXXX6789",)
            # the harness's role on its own connection, not through pgwarden
            pg.psql("CREATE VIEW late_ssn_view AS SELECT id, ssn FROM customers; "
                    "GRANT SELECT ON late_ssn_view TO support", dbname="maskdb")
            time.sleep(3)  # three periods: at least two refreshes began after the view
            row = conn.execute("SELECT id, ssn FROM late_ssn_view WHERE id = 1").fetchone()
        assert_no_secrets(repr(row))
        assert row == (None, None)
    finally:
        pg.psql("DROP VIEW IF EXISTS late_ssn_view", dbname="maskdb")


CLEAR_COMPUTED = [
    ("SELECT count(*) FROM orders", 3),
    ("SELECT sum(amount)::text FROM public.orders", "35.50"),
    ("SELECT upper('x'), length('abc')", "X"),
]


@pytest.mark.parametrize("sql,want", CLEAR_COMPUTED)
def test_computed_columns_of_clean_names_pass(masked_relay, sql, want):
    """Computed columns are clear when every relation the statement names is a table with
    no masked column and every function a safe built-in nobody shadows."""
    with connect(masked_relay, "support") as conn:
        row = conn.execute(sql).fetchone()
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        server_pid = conn.info.backend_pid
    assert row[0] == want
    assert pid == server_pid


MASKED_COMPUTED = [
    "SELECT upper(ssn) FROM customers",
    "SELECT upper(ssn) FROM customer_ssn_view",
    "SELECT count(*)::text || min(ssn) FROM customer_ssns",
    "SELECT upper(s) FROM (SELECT ssn AS s FROM customers) x JOIN orders o ON true",
    "SELECT customer_ssn(1)",
]


@pytest.mark.parametrize("sql", MASKED_COMPUTED)
def test_computed_columns_over_masked_names_stay_masked(masked_relay, sql):
    """A masked table, a view or materialized view over one, or a function that reads one:
    computed columns stay NULL."""
    with connect(masked_relay, "support") as conn:
        rows = conn.execute(sql).fetchall()
    assert_no_secrets(repr(rows))
    assert all(v is None for row in rows for v in row)


def test_shadowed_function_is_not_clean(masked_relay, pg):
    """Hostile client: a function in public named like a safe built-in, put first with
    SET search_path = public, pg_catalog, reads the SSN. Right after its CREATE and after
    the catalog has been read again, its result is masked."""
    pg.psql("GRANT CREATE ON SCHEMA public TO support", dbname="maskdb")
    try:
        with connect(masked_relay, "support") as conn:
            conn.execute("CREATE FUNCTION public.upper(text) RETURNS text LANGUAGE sql "
                         "AS 'SELECT ssn::text FROM public.customers WHERE id = 1'")
            conn.execute("SET search_path = public, pg_catalog")
            first = conn.execute("SELECT upper('x')").fetchone()
            time.sleep(1.5)  # the refresh the CREATE asked for has been published
            later = conn.execute("SELECT upper('x')").fetchone()
            lowered = conn.execute("SELECT lower('X')").fetchone()
            counted = conn.execute("SELECT count(*) FROM orders").fetchone()
    finally:
        pg.psql("DROP FUNCTION IF EXISTS public.upper(text)", dbname="maskdb")
        pg.psql("REVOKE CREATE ON SCHEMA public FROM support", dbname="maskdb")
    assert_no_secrets(repr((first, later)))
    assert first == later == (None,)
    # the rest of the session is precise again once the catalog has been read
    assert lowered == ("x",) and counted == (3,)


def test_shadowing_inside_a_transaction(masked_relay):
    """Hostile client: a temporary view named like a clean table, over the SSN, used in the
    transaction that creates it (no catalog read can see it yet): its computed columns and
    its own columns are masked, and so is a count over a table made in it."""
    with connect(masked_relay, "support") as conn:
        with conn.transaction():
            conn.execute("CREATE TEMP VIEW orders AS SELECT ssn FROM public.customers")
            rows = conn.execute("SELECT upper(ssn) FROM orders").fetchall()
            rows += conn.execute("SELECT ssn FROM orders").fetchall()
            conn.execute("CREATE TEMP TABLE fresh AS SELECT 1 AS a")
            fresh = conn.execute("SELECT count(*) FROM fresh").fetchall()
    assert_no_secrets(repr(rows))
    assert all(v is None for (v,) in rows)
    assert fresh == [(None,)]


def test_execute_arguments_are_expressions(masked_relay):
    """Hostile client: an SQL EXECUTE whose argument calls a function that reads the SSN;
    the PREPARE names nothing."""
    with connect(masked_relay, "support") as conn:
        conn.execute("PREPARE echo(text) AS SELECT $1")
        plain = conn.execute("EXECUTE echo('x')").fetchone()
        leaked = conn.execute("EXECUTE echo(customer_ssn(1))").fetchone()
    assert plain == ("x",)
    assert leaked == (None,)


STATISTICS_VIEWS = [
    "SELECT most_common_vals, histogram_bounds FROM pg_stats "
    "WHERE tablename = 'customers' AND attname = 'ssn'",
    "SELECT * FROM pg_catalog.pg_stats WHERE tablename = 'customers'",
    "SELECT s.histogram_bounds FROM pg_stats s WHERE s.attname = 'email'",
    "SELECT * FROM pg_stats_ext",
    "SELECT * FROM pg_stats_ext_exprs",
]


@pytest.mark.parametrize("sql", STATISTICS_VIEWS)
def test_planner_statistics_do_not_leak(masked_relay, sql):
    """Hostile client: pg_stats is a view over pg_statistic, whose sampled values
    (most_common_vals, histogram_bounds) include masked columns' values. Its columns carry
    pg_stats' own OID, which no rule names: they must come out NULL (or be refused), never
    clear."""
    with connect(masked_relay, "support") as conn:
        try:
            rows = conn.execute(sql).fetchall()
        except psycopg.errors.InsufficientPrivilege:
            return
    assert_no_secrets(repr(rows))


def test_auditor_sees_the_statistics(masked_relay):
    """The hostile test above is real: the same view shows the SSNs to a clear role."""
    with connect(masked_relay, "auditor") as conn:
        rows = conn.execute("SELECT histogram_bounds::text FROM pg_stats "
                            "WHERE tablename = 'customers' AND attname = 'ssn'").fetchall()
    assert "123-45-6789" in repr(rows)


def test_masked_identity_in_another_database_is_refused(masked_relay):
    """The catalog describes maskdb: a masked identity elsewhere is refused (55000), since
    OIDs there mean other tables; an unmasked identity is not affected."""
    with psycopg.connect(masked_relay.dsn(user="support", password="support-secret",
                                          dbname="postgres"), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState):
            conn.execute("SELECT 1")
    with psycopg.connect(masked_relay.dsn(user="auditor", password="auditor-secret",
                                          dbname="postgres"), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def audit_args(tmp_path, pgwardend_bin):
    """A signing key and a trail path: (trail, the pgwardend arguments that write it)."""
    key = str(tmp_path / "audit.key")
    ctl = os.path.join(os.path.dirname(pgwardend_bin), "pgwardenctl")
    subprocess.run([ctl, "audit", "keygen", "--out", key], check=True, capture_output=True,
                   timeout=60)
    trail = tmp_path / "audit.jsonl"
    return trail, ["--audit-path", str(trail), "--audit-signing-key", key]


def test_audit_records_what_was_masked(relay_factory, pg, maskdb, tmp_path, pgwardend_bin):
    """Item 6: with an audit trail, each masked result gets a record listing its masked
    columns and how (the rule's column, or #N for a computed one), and no clear value."""
    trail, args = audit_args(tmp_path, pgwardend_bin)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    relay = relay_factory(extra_args=["--policy", str(policy)] + args
                          + catalog_args(pg, tmp_path))
    with connect(relay, "support") as conn:
        conn.execute("SELECT id, ssn, upper(card) FROM customers WHERE id = 1").fetchall()
    with connect(relay, "auditor") as conn:
        conn.execute("SELECT ssn FROM customers WHERE id = 1").fetchall()
    relay.stop()
    text = trail.read_text()
    assert_no_secrets(text)
    masked = [json.loads(l) for l in text.splitlines()
              if l.startswith("{") and json.loads(l).get("event") == "masked"]
    assert len(masked) == 1, masked  # the auditor's result masks nothing
    cols = masked[0]["columns"]
    assert [c["name"] for c in cols] == ["public.customers.ssn", "#3"]
    assert cols[0]["strategy"] == "partial-last-4" and cols[0]["attnum"] == 3
    assert cols[1]["strategy"].endswith("(computed)") and cols[1]["table_oid"] == 0


def test_closes_on_server_messages_are_audited(relay_factory, pg, maskdb, tmp_path,
                                               pgwardend_bin):
    """Issue #12 with masking: a session the mask stage closes on a server message leaves a
    `decision` record (stage, verdict, request, SQLSTATE, reason) before its `session_end`,
    the message named by the server's own type names, and the FATAL the client got for it
    carries the same request:
      - mid-stream: a row whose masked column lies beyond mask.row_lookahead (DataRow);
      - on a whole message: COPY TO in an encoding masking cannot follow
        (CopyOutResponse)."""
    trail, args = audit_args(tmp_path, pgwardend_bin)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    relay = relay_factory(extra_args=["--policy", str(policy), "--mask-row-lookahead", "1KiB"]
                          + args + catalog_args(pg, tmp_path))
    cases = [("stream", "SELECT repeat('x', 8192), ssn FROM customers WHERE id = 1",
              "54000", "DataRow"),
             ("copy", "COPY customers TO STDOUT (ENCODING 'EUC_JP')", "0A000",
              "CopyOutResponse")]
    for app, sql, code, _ in cases:
        with wire.Conn(relay.host, relay.port) as c:
            c.login("support", "support-secret", "maskdb", params={"application_name": app})
            c.send(wire.query(sql))
            msgs, rest = c.read_to_close(timeout=60)
        errs = [m.error_fields() for m in msgs if m.type == "E"]
        assert errs and (errs[-1]["S"], errs[-1]["C"]) == ("FATAL", code), (app, msgs)
        assert_no_secrets(repr([m.body for m in msgs]) + repr(rest))
    relay.stop()
    recs = [json.loads(l) for l in trail.read_text().splitlines() if l.startswith("{")]
    assert_no_secrets(json.dumps(recs))
    for app, _, code, message_type in cases:
        start = [r for r in recs
                 if r["event"] == "session_start" and r["application_name"] == app]
        assert len(start) == 1, (app, start)
        mine = [r for r in recs if r.get("session") == start[0]["session"]]
        stmts = [r for r in mine if r["event"] == "statement"]
        decisions = [r for r in mine if r["event"] == "decision"]
        errors = [r for r in mine if r["event"] == "error"]
        assert len(stmts) == 1, (app, mine)
        assert [(d["stage"], d["verdict"], d["sqlstate"], d["request"], d["message_type"])
                for d in decisions] == [("mask", "close", code, stmts[0]["request"],
                                         message_type)], (app, mine)
        assert decisions[0]["message"].startswith("pgwarden masking: "), decisions
        assert [(e["severity"], e["sqlstate"], e["request"]) for e in errors] == [
            ("FATAL", code, stmts[0]["request"])], (app, mine)
        assert mine[-1]["event"] == "session_end", (app, mine)
        assert mine.index(decisions[0]) < mine.index(errors[0]), (app, mine)


# ---- messages ------------------------------------------------------------------------------


def test_errors_are_scrubbed(masked_relay):
    """Item 5: invalid input syntax and unique-violation DETAIL do not echo values."""
    with connect(masked_relay, "support") as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as e:
            conn.execute("SELECT ssn::int FROM customers WHERE id = 1")
    assert_no_secrets(str(e.value) + repr(e.value.diag.message_detail))
    assert e.value.diag.sqlstate == "22P02"
    with connect(masked_relay, "support_rw") as conn:
        with pytest.raises(psycopg.errors.UniqueViolation) as e:
            conn.execute("INSERT INTO customers (id, ssn) SELECT 99, ssn FROM customers "
                         "WHERE id = 1")
    assert_no_secrets(str(e.value) + repr(e.value.diag.message_detail))
    assert e.value.diag.constraint_name == "customers_ssn_key"


def test_notifications_and_parameters_are_scrubbed(masked_relay):
    """Item 5: a NOTIFY payload and a ParameterStatus set from data."""
    got = []
    with connect(masked_relay, "support") as listener, connect(masked_relay, "auditor") as talker:
        listener.add_notify_handler(got.append)
        listener.execute("LISTEN audit")
        talker.execute("SELECT pg_notify('audit', ssn) FROM customers WHERE id = 1")
        deadline = time.time() + 10
        while not got and time.time() < deadline:
            listener.execute("SELECT 1")  # notifications are read with a result
            time.sleep(0.05)
        listener.execute("SELECT set_config('application_name', ssn, false) "
                         "FROM customers WHERE id = 2")
        app = listener.info.parameter_status("application_name")
    assert got and got[0].channel == "audit" and got[0].payload == ""
    assert app == ""


def test_notices_are_scrubbed(masked_relay):
    """Item 5: a NoticeResponse (class 00) keeps its SQLSTATE, not its text."""
    notices = []
    with connect(masked_relay, "support") as conn:
        # a Diagnostic is valid only inside the handler: keep its fields
        conn.add_notice_handler(lambda d: notices.append((d.sqlstate, d.message_primary)))
        conn.execute("DROP TABLE IF EXISTS no_such_table_123_45_6789")
    assert notices and notices[0][0] == "00000"
    assert "123_45_6789" not in notices[0][1]


# ---- refusals --------------------------------------------------------------------------------


def test_function_call_and_undescribed_execute_are_refused(masked_relay):
    """The fastpath function call (42501) and an Execute of a portal nobody described
    (0A000) are refused; the session goes on."""
    with wire.Conn(masked_relay.host, masked_relay.port) as c:
        c.login("support", "support-secret", "maskdb")
        # FunctionCall: oid 2275 (textout... any), no arguments, text result
        c.send(wire.msg("F", struct.pack("!IHHH", 2275, 0, 0, 0)))
        msgs = c.recv_until("Z")
        errs = [m.error_fields() for m in msgs if m.type == "E"]
        assert errs and errs[0]["C"] == "42501"
        c.send(wire.parse("SELECT ssn FROM customers") + wire.bind() + wire.execute()
               + wire.sync())
        msgs = c.recv_until("Z")
        errs = [m.error_fields() for m in msgs if m.type == "E"]
        assert errs and errs[0]["C"] == "0A000"
        assert not [m for m in msgs if m.type == "D"]
        c.send(wire.query("SELECT 1"))
        assert [m for m in c.recv_until("Z") if m.type == "D"]


def test_replication_connection_is_refused(masked_relay):
    """A masked identity cannot stream WAL (it carries row values)."""
    r = subprocess.run([os.path.join(harness.PG_BINDIR, "psql"), "-X", "-c", "IDENTIFY_SYSTEM",
                        masked_relay.dsn(user="support", password="support-secret",
                                         dbname="maskdb", replication="database")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


# ---- size ----------------------------------------------------------------------------------


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _read_result_raw(sock):
    """Read a result to ReadyForQuery straight off the socket, framing it without copying
    (wire.Conn's message-at-a-time reader cannot keep up with gigabytes), and search every
    byte for the clear SSN. Returns (bytes read, whether the masked SSN was seen)."""
    total, seen, tail = 0, False, b""
    header = bytearray()
    left = 0          # body bytes of the current message still to come
    last = False      # the current message is ReadyForQuery
    sock.settimeout(600)
    while True:
        chunk = sock.recv(1 << 20)
        assert chunk, "the relay closed the connection mid-result"
        total += len(chunk)
        window = tail + chunk
        assert b"123-45-6789" not in window, "a clear SSN reached the client"
        seen = seen or b"XXXXXXX6789" in window
        tail = chunk[-10:]
        i, n = 0, len(chunk)
        while i < n:
            if left:
                step = min(left, n - i)
                left -= step
                i += step
                if not left and last:
                    assert i == n, "bytes after ReadyForQuery"
                    return total, seen
                continue
            take = min(5 - len(header), n - i)
            header += chunk[i:i + take]
            i += take
            if len(header) == 5:
                assert header[0] != ord("E"), "the result failed"
                last = header[0] == ord("Z")
                left = int.from_bytes(header[1:5], "big") - 4
                header.clear()


def test_several_gb_result_streams_with_flat_memory(masked_relay, pg):
    """Item 3: a 3 GB result with a masked column streams through; the relay's RSS stays
    flat (sampled every 100 ms), and no clear SSN appears in what the client reads. The bulk
    is a table column (a computed one, like repeat(), is masked whole in a statement that
    reads a masked column: item 4), so the rows keep their size."""
    pg.psql("CREATE TABLE IF NOT EXISTS filler AS SELECT repeat('x', 1000) AS f "
            "FROM generate_series(1, 1000); GRANT SELECT ON filler TO support", dbname="maskdb")
    sql = ("SELECT c.ssn, f.f FROM customers c, filler f, generate_series(1, 750) g "
           "WHERE c.id <= 4")
    before = _rss_kib(masked_relay.proc.pid)
    peak = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_kib(masked_relay.proc.pid))
            time.sleep(0.1)

    t = threading.Thread(target=sample)
    t.start()
    try:
        with wire.Conn(masked_relay.host, masked_relay.port, timeout=600) as c:
            c.login("support", "support-secret", "maskdb")
            assert not c.buf  # nothing after ReadyForQuery: the socket is ours from here
            c.send(wire.query(sql))
            total, seen_masked = _read_result_raw(c.sock)
    finally:
        stop.set()
        t.join()
    assert total > 3 * 10**9 and seen_masked
    grown = (peak[0] - before) / 1024
    if not harness.SANITIZED:
        assert grown < 16, "the relay grew by %.1f MiB streaming a masked result" % grown


# ---- pgwardenctl policy explain --online (issue #13 item 7) ---------------------------------

# An alias is the client's text, echoed by the server in RowDescription: a terminal title,
# a colour, a bell, a tab and a newline that would forge a field and a line of the explain.
HOSTILE_ALIAS = "\x1b]0;pwned\x07\x1b[31mred\tx\ny"
HOSTILE_ALIAS_SHOWN = r"\x1b]0;pwned\x07\x1b[31mred\x09x\x0ay"


def _ctl_and_socket(relay, pgwardend_bin):
    from test_admin import tool, wait_admin_socket
    return tool(pgwardend_bin, "pgwardenctl"), wait_admin_socket(relay)


def explain_online(relay, pgwardend_bin, user, sql, *extra, database="maskdb"):
    """`pgwardenctl policy explain --online` against the relay's admin socket."""
    ctl, sock = _ctl_and_socket(relay, pgwardend_bin)
    argv = [ctl, "--socket", sock, "policy", "explain", "--online", "--user", user]
    if database is not None:
        argv += ["--database", database]
    return subprocess.run(argv + ["--sql", sql] + list(extra), capture_output=True, timeout=60)


def _oid(pg, relation):
    return pg.psql("SELECT '%s'::regclass::oid" % relation, dbname="maskdb").strip()


def test_online_explain_per_column(masked_relay, pg, pgwardend_bin):
    """Item 7: the running relay says, per result column, what it would mask for an identity
    (its live policy and catalog; the server describes the statement), and a hostile alias
    reaches the operator's terminal only escaped."""
    sql = ('SELECT c.id, c.ssn, upper(c.email) AS shout, v.ssn AS view_ssn, c.name AS "%s" '
           "FROM customers c JOIN customer_ssn_view v USING (id)" % HOSTILE_ALIAS)
    r = explain_online(masked_relay, pgwardend_bin, "support", sql)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "\x1b" not in out and "\x07" not in out
    customers, view = _oid(pg, "customers"), _oid(pg, "customer_ssn_view")
    assert out.split("\n") == [
        "rule: support",
        "1\tid\tclear\t-\ttable %s column 1" % customers,
        "2\tssn\tmasked\tpartial-last-4\tpublic.customers.ssn",
        "3\tshout\twhole\tnull (computed from a statement that references masked data)\tcomputed",
        "4\tview_ssn\twhole\tnull (column of a view over a masked column)\ttable %s column 2"
        % view,
        "5\t%s\tclear\t-\ttable %s column 2" % (HOSTILE_ALIAS_SHOWN, customers),
        "",
    ], out
    # --json: the daemon's reply as it is; the alias arrives sanitised there too
    ctl, sock = _ctl_and_socket(masked_relay, pgwardend_bin)
    j = subprocess.run([ctl, "--socket", sock, "--json", "policy", "explain", "--online",
                        "--user", "support", "--database", "maskdb", "--sql", sql],
                       capture_output=True, timeout=60)
    assert j.returncode == 0, j.stderr
    reply = json.loads(j.stdout)
    assert reply["rule"] == "support" and reply["masks"] is True and reply["deny"] is None
    assert reply["columns"][4].split("\t")[1] == HOSTILE_ALIAS_SHOWN


def test_online_explain_clear_identity_and_no_columns(masked_relay, pgwardend_bin):
    """An identity the rule does not mask sees every column clear; a statement without a
    result says so."""
    r = explain_online(masked_relay, pgwardend_bin, "auditor", "SELECT ssn FROM customers")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == ("rule: auditor\nmasking: none (the rule has no mask: map): "
                                 "every column passes clear\n")
    r = explain_online(masked_relay, pgwardend_bin, "support", "SET search_path = public")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "rule: support\nmasking: the statement returns no columns\n"


def test_online_explain_never_runs_the_statement(masked_relay, pg, pgwardend_bin):
    """The server only describes: a DELETE ... RETURNING is explained, and nothing is
    deleted."""
    before = pg.psql("SELECT count(*) FROM customers", dbname="maskdb").strip()
    r = explain_online(masked_relay, pgwardend_bin, "support",
                       "DELETE FROM customers RETURNING id, ssn")
    assert r.returncode == 0, r.stderr
    assert "2\tssn\tmasked\tpartial-last-4\tpublic.customers.ssn\n" in r.stdout.decode()
    assert pg.psql("SELECT count(*) FROM customers", dbname="maskdb").strip() == before


@pytest.mark.parametrize("user,database,sql,code,text", [
    ("nobody", "maskdb", "SELECT 1", "not_found", 'no rule admits user "nobody"'),
    ("support", "maskdb", "SELECT no_such_column FROM customers", "rejected",
     "the server rejected the statement: 42703"),
    ("support", "maskdb", "SELECT 1; SELECT 2", "rejected", "42601"),
    ("support", "postgres", "SELECT 1", "unavailable",
     'the masking catalog describes database "maskdb" only'),
    ("support", "maskdb", "COPY customers TO STDOUT", "rejected", "COPY TO"),
])
def test_online_explain_errors(masked_relay, pgwardend_bin, user, database, sql, code, text):
    """Bad input is a one-line error naming the daemon's code, exit 1, and the daemon goes
    on."""
    r = explain_online(masked_relay, pgwardend_bin, user, sql, database=database)
    err = r.stderr.decode()
    assert r.returncode == 1, (r.stdout, err)
    assert err.startswith("pgwardenctl: policy explain --online: %s: " % code), err
    assert text in err and err.count("\n") == 1, err
    assert explain_online(masked_relay, pgwardend_bin, "support", "SELECT 1").returncode == 0


def test_online_explain_server_error_text_is_sanitised(masked_relay, pgwardend_bin):
    """The server's error quotes the client's text: it comes back escaped."""
    r = explain_online(masked_relay, pgwardend_bin, "support",
                       'SELECT "\x1b[2Jcol\x07" FROM customers')
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "\x1b" not in err and "\x07" not in err and r"\x1b[2Jcol\x07" in err, err


def test_online_explain_bad_input_from_the_tool(masked_relay, pgwardend_bin):
    """Too long, not UTF-8, an identity flag only the offline explain reads: usage errors
    (exit 2) before the daemon is asked; the daemon refuses a too long statement too."""
    r = explain_online(masked_relay, pgwardend_bin, "support", "SELECT 1" + " " * 20000)
    assert r.returncode == 2 and b"--sql is 20008 bytes; the daemon describes at most 16384" \
        in r.stderr, r.stderr
    ctl, sock = _ctl_and_socket(masked_relay, pgwardend_bin)
    r = subprocess.run([ctl, "--socket", sock, "policy", "explain", "--online", "--user",
                        "support", "--sql", b"SELECT '\xff'"], capture_output=True, timeout=60)
    assert r.returncode == 2 and b"not valid UTF-8" in r.stderr, r.stderr
    r = explain_online(masked_relay, pgwardend_bin, "support", "SELECT 1", "--source", "local")
    assert r.returncode == 2 and b"--source" in r.stderr, r.stderr
    from test_admin import AdminClient
    with AdminClient(sock) as c:
        reply = c.call(cmd="explain", user="support", sql="SELECT 1" + " " * 20000)
        assert reply["error"]["code"] == "too_large", reply


def test_online_explain_without_masking(relay_factory, pgwardend_bin):
    """A daemon with no policy (so nothing masked) says so."""
    relay = relay_factory()
    r = explain_online(relay, pgwardend_bin, "support", "SELECT 1")
    assert r.returncode == 1
    assert r.stderr.decode().startswith("pgwardenctl: policy explain --online: unavailable: "
                                        "no policy is loaded"), r.stderr


class _StallingForwarder:
    """A TCP forwarder to PostgreSQL that, once stalled, accepts connections and sends
    nothing (a server that does not answer)."""

    def __init__(self, target):
        import socket
        self.target = target
        self.stalled = False
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            if self.stalled:
                self.held.append(c)
                continue
            s = socket.create_connection(self.target)
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(2)
            except OSError:
                pass

    def close(self):
        self.lsock.close()
        for c in self.held:
            c.close()


def test_online_explain_times_out_on_a_silent_server(relay_factory, pg, maskdb, tmp_path,
                                                     pgwardend_bin):
    """A server that stops answering: the explain ends after mask.catalog_timeout with a
    clear error, and sessions were never waiting for it (the admin thread waits)."""
    fwd = _StallingForwarder((pg.host, pg.port))
    try:
        key = tmp_path / "mask.key"
        key.write_bytes(os.urandom(32))
        os.chmod(key, 0o600)
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        relay = relay_factory(upstream=("127.0.0.1", fwd.port),
                              extra_args=["--mask-key-file", str(key), "--policy", str(policy),
                                          "--mask-catalog-timeout", "1s"]
                              + catalog_args(pg, tmp_path))
        assert explain_online(relay, pgwardend_bin, "support", "SELECT 1").returncode == 0
        fwd.stalled = True
        start = time.monotonic()
        r = explain_online(relay, pgwardend_bin, "support", "SELECT ssn FROM customers")
        took = time.monotonic() - start
        assert r.returncode == 1
        err = r.stderr.decode()
        assert err.startswith("pgwardenctl: policy explain --online: timeout: the server did "
                              "not answer within mask.catalog_timeout (1000 ms)"), err
        assert took < 10, took
    finally:
        fwd.close()
