#!/usr/bin/python3
"""capture_mask: record what a real PostgreSQL 15 sends for the masking fixture, for the
unit suites' fixtures and the fuzz targets' seed corpora.

    /usr/bin/python3 tests/integration/capture_mask.py [--mask-tool build/tests/mask_tool]

Starts a throwaway cluster (harness.PgCluster, as the integration suite does: root, the
postgres OS user, SCRAM on loopback), loads masking_schema.sql, and records raw backend
bytes with the wire toolkit:

  tests/unit/data/mask/capture/catalog.be   the resolution query that mask_tool prints for
                                            masking_policy.txt, as the server answers it
  tests/unit/data/mask/capture/*.be         SELECT (text; binary via the extended
                                            protocol), COPY TO in text, CSV and binary,
                                            errors that echo values
  tests/fuzz/corpus/fuzz_mask_row/*         DataRow bodies from those results, each after
                                            a plan selector byte (see fuzz_mask_row.c)
  tests/fuzz/corpus/fuzz_mask_copy/*        COPY data streams, after a selector byte
  tests/fuzz/corpus/fuzz_mask_value/*       single values, after a selector byte

Re-run it when the schema changes; the outputs are committed.
"""

import argparse
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import harness  # noqa: E402
import wire  # noqa: E402

CAPTURE = os.path.join(ROOT, "tests", "unit", "data", "mask", "capture")
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def policy_args():
    with open(os.path.join(HERE, "masking_policy.txt")) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def raw_until_ready(conn):
    """Every backend message up to and including ReadyForQuery, as raw bytes."""
    out = b""
    while True:
        m = conn.recv_message()
        out += wire.msg(m.type.encode(), m.body)
        if m.type == "Z":
            return out


def messages(raw):
    off = 0
    while off < len(raw):
        t = raw[off:off + 1]
        n = struct.unpack("!I", raw[off + 1:off + 5])[0]
        yield t, raw[off + 5:off + 1 + n]
        off += 1 + n


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mask-tool", default=os.path.join(ROOT, "build", "tests", "mask_tool"))
    args = ap.parse_args()
    query = subprocess.run([args.mask_tool, "query"] + policy_args(), check=True,
                           capture_output=True, text=True).stdout
    pg = harness.PgCluster()
    pg.start()
    try:
        with open(os.path.join(HERE, "masking_schema.sql")) as f:
            pg.psql(f.read())
        conn = wire.Conn(pg.host, pg.port)
        conn.login(pg.user, pg.password, pg.dbname,
                   params={"options": "-c search_path=pg_catalog"})
        captures = {}

        def simple(name, sql):
            conn.send(wire.query(sql))
            captures[name] = raw_until_ready(conn)

        simple("catalog", query)
        simple("set_path", "SET search_path = public")
        simple("select_text", "SELECT * FROM customers ORDER BY id")
        simple("select_inherited", "SELECT * FROM customers_archive")
        simple("select_view", "SELECT * FROM customer_ssn_view ORDER BY id")
        simple("select_computed", "SELECT upper(ssn), id::text || ssn FROM customers ORDER BY id")
        conn.send(wire.parse("SELECT * FROM customers ORDER BY id", name="s1")
                  + wire.bind(statement="s1", result_formats=(1,))
                  + wire.describe_portal("") + wire.execute("") + wire.sync())
        captures["select_binary"] = raw_until_ready(conn)
        simple("copy_text", "COPY customers TO STDOUT")
        simple("copy_csv", "COPY customers TO STDOUT (FORMAT csv, HEADER)")
        simple("copy_binary", "COPY customers TO STDOUT (FORMAT binary)")
        simple("copy_cols", "COPY customers (ssn, id) TO STDOUT (DELIMITER '|', NULL 'NULL')")
        simple("error_syntax", "SELECT ssn::int FROM customers WHERE id = 1")
        simple("error_unique", "INSERT INTO customers (id, ssn) VALUES (99, '123-45-6789')")
        simple("notify", "LISTEN audit; NOTIFY audit, 'ssn=555-12-3456'; "
               "SELECT set_config('application_name', ssn, false) FROM customers WHERE id = 2")
        conn.send(wire.terminate())
        conn.close()
    finally:
        pg.stop()

    for name, raw in captures.items():
        if name == "set_path":
            continue
        write(os.path.join(CAPTURE, name + ".be"), raw)
    # Seeds: DataRow bodies with a plan selector, COPY streams, single values.
    # Plans 0/4 are text, 1/5 binary (fuzz_mask_row.c); 2, 3, 6 and 7 take either.
    n = 0
    for name, sels in (("select_text", (0, 4, 2 | 8, 6 | 16)), ("select_binary", (1, 5, 3)),
                       ("select_inherited", (0, 7 | 24))):
        for t, body in messages(captures[name]):
            if t == b"D":
                for sel in sels:
                    write(os.path.join(CORPUS, "fuzz_mask_row", "%s-%03d" % (name, n)),
                          bytes([sel]) + body)
                    n += 1
    for name, sel in (("copy_text", 0), ("copy_csv", 1), ("copy_binary", 2), ("copy_cols", 3)):
        data = b"".join(body for t, body in messages(captures[name]) if t == b"d")
        write(os.path.join(CORPUS, "fuzz_mask_copy", name), bytes([sel]) + data)
    n = 0
    for t, body in messages(captures["select_text"]):
        if t != b"D":
            continue
        count = struct.unpack("!H", body[:2])[0]
        off = 2
        for _ in range(count):
            ln = struct.unpack("!i", body[off:off + 4])[0]
            off += 4
            if ln > 0:
                # selector: strategy n%8, type class (n/8)%8; then the partial N / format byte
                write(os.path.join(CORPUS, "fuzz_mask_value", "text-%03d" % n),
                      bytes([(n * 37) % 256, n % 128]) + body[off:off + ln])
                n += 1
                off += ln
    print("captured %d responses" % (len(captures) - 1))


if __name__ == "__main__":
    main()
