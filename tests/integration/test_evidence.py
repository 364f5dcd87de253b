"""Compliance evidence (issue #16): `tools/evidence.py run` on a small subset of the map
produces a signed report that `pgwardenctl evidence verify` accepts, and every way to pass off
an edited report fails; `pgwardenctl evidence collect` on a live relay reports what holds.

Hostile cases first: a changed byte, another report's signature, another key, a forged
signature file, a loose signing key, a damaged audit trail under a live collection.
"""

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys

import pytest

import harness

TOOL = os.path.join(harness.REPO_ROOT, "tools", "evidence.py")
# Fast members of the map that need no PostgreSQL: the FIPS refusal (integration) and the
# FIPS unit test, which together are the whole of NIST-SC-13.
SUBSET = "NIST-SC-13"


def ctl(pgwardend_bin, *args):
    return subprocess.run([os.path.join(os.path.dirname(pgwardend_bin), "pgwardenctl")]
                          + list(args), capture_output=True, text=True, timeout=120)


def verify(pgwardend_bin, report, *extra):
    return ctl(pgwardend_bin, "evidence", "verify", *(list(extra) + [report]))


@pytest.fixture(scope="module")
def keys(pgwardend_bin, tmp_path_factory):
    d = tmp_path_factory.mktemp("evidence-keys")
    out = {}
    for name in ("signer", "other"):
        r = ctl(pgwardend_bin, "audit", "keygen", "--out", str(d / name))
        assert r.returncode == 0, r.stderr
        out[name] = str(d / name)
    return out


@pytest.fixture(scope="module")
def report(pgwardend_bin, keys, tmp_path_factory):
    """A report of the subset, signed with the signer key: its directory."""
    out = tmp_path_factory.mktemp("evidence-run")
    r = subprocess.run([sys.executable, TOOL, "run", "--out", str(out), "--build",
                        os.path.dirname(pgwardend_bin), "--key", keys["signer"],
                        "--controls", SUBSET], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


def copy_report(report, tmp_path):
    for name in ("evidence.json", "evidence.json.sig"):
        shutil.copy(str(report / name), str(tmp_path / name))
    return str(tmp_path / "evidence.json")


# --------------------------------------------------------------------------------------------
# the map and its document


def test_compliance_md_is_generated_from_the_map(tmp_path):
    r = subprocess.run([sys.executable, TOOL, "render-md", "--check"], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    # Hostile: a hand edit of the document (a test quietly dropped from a control) shows.
    doc = open(os.path.join(harness.REPO_ROOT, "docs", "COMPLIANCE.md")).read()
    edited = tmp_path / "COMPLIANCE.md"
    edited.write_text(doc.replace("  - `tests/unit/test_tls.c::test_fips`\n", "", 1))
    r = subprocess.run([sys.executable, TOOL, "render-md", "--check", "--doc", str(edited)],
                       capture_output=True, text=True)
    assert r.returncode == 1
    assert "differs from docs/compliance-map.json" in r.stderr


# --------------------------------------------------------------------------------------------
# tampering: every one fails, with a message that says why


def test_changed_bytes_fail(pgwardend_bin, report, keys, tmp_path):
    path = copy_report(report, tmp_path)
    original = open(path, "rb").read()
    # A status turned from "not proven" to "proven" is the edit someone would want.
    for i in (0, len(original) // 2, len(original) - 2):
        data = bytearray(original)
        data[i] ^= 0x20
        with open(path, "wb") as f:
            f.write(bytes(data))
        r = verify(pgwardend_bin, path, "--public-key", keys["signer"] + ".pub")
        assert r.returncode == 1, (i, r.stdout)
        assert r.stdout.startswith("FAILED: ") and "changed after it was signed" in r.stdout
    doc = json.loads(original)
    doc["summary"]["proven"] = doc["summary"]["controls"]
    with open(path, "w") as f:
        json.dump(doc, f, indent=2)
    r = verify(pgwardend_bin, path, "--public-key", keys["signer"] + ".pub")
    assert r.returncode == 1 and "changed after it was signed" in r.stdout


def test_other_reports_signature_fails(pgwardend_bin, report, keys, tmp_path):
    path = copy_report(report, tmp_path)
    # A second, genuinely signed report by the same key; its signature on the first report.
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "pgwarden-evidence/1", "kind": "test-run",
                                 "summary": {"controls": 1, "proven": 1}}))
    assert ctl(pgwardend_bin, "evidence", "sign", "--key", keys["signer"],
               str(other)).returncode == 0
    shutil.copy(str(other) + ".sig", path + ".sig")
    r = verify(pgwardend_bin, path, "--public-key", keys["signer"] + ".pub")
    assert r.returncode == 1 and "another report's" in r.stdout
    # Its signature field alone, under this report's digest: the signature does not verify.
    mine = json.load(open(str(report / "evidence.json.sig")))
    mine["signature"] = json.load(open(str(other) + ".sig"))["signature"]
    with open(path + ".sig", "w") as f:
        json.dump(mine, f)
    r = verify(pgwardend_bin, path, "--public-key", keys["signer"] + ".pub")
    assert r.returncode == 1 and "does not verify" in r.stdout


def test_other_key_fails(pgwardend_bin, report, keys, tmp_path):
    path = copy_report(report, tmp_path)
    r = verify(pgwardend_bin, path, "--public-key", keys["other"] + ".pub")
    assert r.returncode == 1 and "none of the keys given" in r.stdout
    # Re-signed by someone holding another key: the trusted key does not vouch for it.
    assert ctl(pgwardend_bin, "evidence", "sign", "--key", keys["other"], path).returncode == 0
    r = verify(pgwardend_bin, path, "--public-key", keys["signer"] + ".pub")
    assert r.returncode == 1 and "none of the keys given" in r.stdout
    # ... and with no key given at all, nothing vouches: exit 4, never 0.
    r = verify(pgwardend_bin, path)
    assert r.returncode == 4 and r.stdout.startswith("NOT VOUCHED FOR")


def test_broken_signature_files(pgwardend_bin, report, keys, tmp_path):
    path = copy_report(report, tmp_path)
    pub = keys["signer"] + ".pub"
    sig = open(path + ".sig").read()
    with open(path + ".sig", "w") as f:
        f.write(sig[:len(sig) // 2])
    r = verify(pgwardend_bin, path, "--public-key", pub)
    assert r.returncode == 1 and "not a JSON object" in r.stdout
    with open(path + ".sig", "w") as f:
        f.write("x" * 100000)
    r = verify(pgwardend_bin, path, "--public-key", pub)
    assert r.returncode == 2 and "too large to be a signature" in r.stderr
    os.unlink(path + ".sig")
    r = verify(pgwardend_bin, path, "--public-key", pub)
    assert r.returncode == 2 and "signature" in r.stderr
    r = verify(pgwardend_bin, path, "--public-key", "/nonexistent.pub")
    assert r.returncode == 2


def test_sign_refuses_loose_key_and_non_reports(pgwardend_bin, keys, tmp_path):
    loose = tmp_path / "loose.key"
    shutil.copy(keys["signer"], str(loose))
    os.chmod(str(loose), 0o644)
    doc = tmp_path / "r.json"
    doc.write_text('{"format": "pgwarden-evidence/1"}')
    r = ctl(pgwardend_bin, "evidence", "sign", "--key", str(loose), str(doc))
    assert r.returncode == 2 and "pgwardenctl: evidence: --key" in r.stderr
    assert not os.path.exists(str(doc) + ".sig")
    doc.write_text('{"format": "something else"}')
    r = ctl(pgwardend_bin, "evidence", "sign", "--key", keys["signer"], str(doc))
    assert r.returncode == 1 and "not a pgwarden evidence report" in r.stderr


def test_html_escapes_what_the_report_carries(tmp_path):
    """A skip reason or failure message is test output, and tests read peer bytes: the page
    shows it as text, never as markup."""
    hostile = '<script>alert(1)</script><img src=x onerror=alert(2)>"\'&'
    doc = {"format": "pgwarden-evidence/1", "kind": "test-run", "generated": hostile,
           "pgwarden": {"version": hostile, "commit": hostile},
           "host": {"hostname": hostile, "kernel": hostile, "openssl": hostile},
           "configuration": {"description": {"x": hostile}, "sha256": hostile},
           "summary": {"controls": 1, "proven": 0, "failed": 1, "not_proven": 0,
                       "tests": {"failed": 1}},
           "controls": [{"id": hostile, "status": "failed", "coverage": hostile,
                         "requirement": hostile, "operator": hostile,
                         "checks": [{"kind": "pytest", "name": hostile, "outcome": "failed",
                                     "seconds": 1, "detail": hostile}]}]}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    r = subprocess.run([sys.executable, TOOL, "html", str(path)], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    page = open(str(tmp_path / "r.html")).read()
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # Not a report, or a report of the wrong shape: one line, exit 1, no traceback.
    for bad in ('[1, 2]', '{"format": "pgwarden-evidence/1", "controls": 7}', "{", ""):
        path.write_text(bad)
        r = subprocess.run([sys.executable, TOOL, "html", str(path)], capture_output=True,
                           text=True)
        assert r.returncode == 1, (bad, r.stderr)
        assert r.stderr.startswith("evidence: ") and "Traceback" not in r.stderr


# --------------------------------------------------------------------------------------------
# the report itself


def test_subset_report_verifies_and_says_what_ran(pgwardend_bin, report, keys):
    path = str(report / "evidence.json")
    r = verify(pgwardend_bin, path, "--public-key", keys["signer"] + ".pub")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: ") and "unchanged since it was signed" in r.stdout
    doc = json.load(open(path))
    assert doc["format"] == "pgwarden-evidence/1" and doc["kind"] == "test-run"
    assert [c["id"] for c in doc["controls"]] == [SUBSET]
    control = doc["controls"][0]
    outcomes = {c["name"]: c["outcome"] for c in control["checks"]}
    assert outcomes["tests/unit/test_tls.c::test_fips"] == "passed"
    # The integration test skips on a host that has a FIPS provider; then it proves nothing.
    fips_it = "tests/integration/test_tls.py::test_fips_refuses_to_start_without_provider"
    assert outcomes[fips_it] in ("passed", "skipped")
    want = "proven" if all(o == "passed" for o in outcomes.values()) else "not proven"
    assert control["status"] == want
    assert doc["summary"]["proven"] == (1 if want == "proven" else 0)
    assert all(c["seconds"] >= 0 for c in control["checks"])
    # Who and where: the build, the host, and the configuration with its digest.
    version = subprocess.run([pgwardend_bin, "--version"], capture_output=True,
                             text=True).stdout
    assert doc["pgwarden"]["version"] and doc["pgwarden"]["version"] in version
    assert doc["pgwarden"]["commit"] in version
    assert doc["host"]["kernel"] == platform.release()
    assert doc["host"]["openssl"].startswith("OpenSSL 3")
    canon = json.dumps(doc["configuration"]["description"], sort_keys=True,
                       separators=(",", ":")).encode()
    assert doc["configuration"]["sha256"] == hashlib.sha256(canon).hexdigest()
    files = doc["configuration"]["description"]["files_sha256"]
    assert files[pgwardend_bin] == hashlib.sha256(open(pgwardend_bin, "rb").read()).hexdigest()
    page = open(str(report / "evidence.html")).read()
    assert page.startswith("<!DOCTYPE html>") and "<h2>Summary</h2>" in page
    assert SUBSET in page and "<script" not in page and "http://" not in page


def test_skipped_test_is_not_evidence(pgwardend_bin, keys, tmp_path):
    """A test that skips leaves its control 'not proven', whatever else passed."""
    path = tmp_path / "skip.py"
    # Run the tool against the real map but only one test; the others are 'not run'.
    r = subprocess.run([sys.executable, TOOL, "run", "--out", str(tmp_path / "out"),
                        "--build", os.path.dirname(pgwardend_bin), "--key", keys["signer"],
                        "--only", "tests/unit/test_tls.c::test_fips"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.load(open(str(tmp_path / "out" / "evidence.json")))
    control = [c for c in doc["controls"] if c["id"] == SUBSET][0]
    assert control["status"] == "not proven"
    assert {c["outcome"] for c in control["checks"]} == {"passed", "not run"}
    assert doc["summary"]["proven"] == 0
    r = subprocess.run([sys.executable, TOOL, "run", "--out", str(path), "--only",
                        "tests/unit/test_tls.c::test_no_such_test"], capture_output=True,
                       text=True)
    assert r.returncode == 2 and "no selected control maps" in r.stderr


# --------------------------------------------------------------------------------------------
# a live host


POLICY = """\
rules:
  - name: readonly
    match: { user: pgw }
    allow: [read, transaction, session]
"""


def test_collect_from_a_live_relay(relay_factory, pgwardend_bin, keys, tmp_path):
    trail_dir = tmp_path / "trail"
    trail_dir.mkdir()
    trail_path = str(trail_dir / "audit.jsonl")
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    config = ("audit:\n  path: %s\n  signing_key: %s\n  checkpoint:\n    records: 3\n"
              "policy: %s\n" % (trail_path, keys["signer"], policy))
    relay = relay_factory(workers=1, config_text=config)
    sock = os.path.join(relay.workdir, "admin-%d.sock" % relay.port)
    harness_wait(lambda: os.path.exists(sock), relay)
    out = str(tmp_path / "live.json")
    r = ctl(pgwardend_bin, "--socket", sock, "evidence", "collect", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    v = verify(pgwardend_bin, out, "--public-key", keys["signer"] + ".pub")
    assert v.returncode == 0, v.stdout
    doc = json.load(open(out))
    assert doc["kind"] == "live"
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["policy_loaded"]["outcome"] == "passed"
    assert ("%s in force, SHA-256 %s" % (policy, hashlib.sha256(POLICY.encode()).hexdigest())
            in checks["policy_loaded"]["detail"])
    assert checks["audit_trail_verified"]["outcome"] == "passed", checks["audit_trail_verified"]
    # This relay has no TLS and no FIPS provider: said, not glossed over.
    assert checks["tls_in_force"]["outcome"] == "failed"
    assert checks["fips_mode"]["outcome"] == "failed"
    status = {c["id"]: c["status"] for c in doc["controls"]}
    assert status["NIST-AU-9"] == "proven" and status["NIST-SC-8"] == "not proven"
    assert doc["configuration"]["sha256"] == hashlib.sha256(
        open(relay.config_path, "rb").read()).hexdigest()

    # Hostile: a record of the trail edited on disk; the next collection says so.
    data = bytearray(open(trail_path, "rb").read())
    at = data.index(b'"event":"daemon_start"')
    data[at + 10] ^= 0x01
    with open(trail_path, "wb") as f:
        f.write(bytes(data))
    r = ctl(pgwardend_bin, "--socket", sock, "evidence", "collect", "--out", out)
    assert r.returncode == 0, r.stderr
    doc = json.load(open(out))
    audit = [c for c in doc["checks"] if c["name"] == "audit_trail_verified"][0]
    assert audit["outcome"] == "failed", audit
    assert {c["id"]: c["status"] for c in doc["controls"]}["NIST-AU-9"] == "not proven"
    relay.stop()
    # No daemon: exit 3, and no report written over the last one.
    before = open(out, "rb").read()
    r = ctl(pgwardend_bin, "--socket", sock, "evidence", "collect", "--out", out)
    assert r.returncode == 3 and "not reachable" in r.stderr
    assert open(out, "rb").read() == before


def harness_wait(cond, relay, timeout=20.0):
    import time
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, relay.log_tail()
        time.sleep(0.05)
