#!/usr/bin/python3
"""evidence: compliance evidence from pgwarden's own tests (docs/COMPLIANCE.md).

  evidence.py render-md [--check]    docs/COMPLIANCE.md from docs/compliance-map.json
                                     (--check: fail when the file differs)
  evidence.py run --out DIR [--key PRIVATE] [--only TEST]... [--controls ID,...]
                                     run the mapped tests, write DIR/evidence.json (signed:
                                     DIR/evidence.json.sig) and DIR/evidence.html
  evidence.py html REPORT.json       the HTML page for a report (also a live one)

The map is the one source of truth: COMPLIANCE.md is generated from it, and
build/tests/test_compliance_map (a cmocka suite in `make check-unit`) fails when it names a
test that does not exist. Signing is pgwardenctl's (`evidence sign`): this tool holds no key
material and does no cryptography beyond SHA-256 of what it reports.

A test counts as evidence only when it ran and passed: skipped, failed, missing or not run
leaves its controls "not proven". Python 3 from Debian, standard library only.
"""

import argparse
import datetime
import hashlib
import html
import json
import os
import platform
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
MAP = os.path.join(ROOT, "docs", "compliance-map.json")
DOC = os.path.join(ROOT, "docs", "COMPLIANCE.md")
FORMAT = "pgwarden-evidence/1"
PYTHON = "/usr/bin/python3"


def fail(msg, code=2):
    print("evidence: " + msg, file=sys.stderr)
    sys.exit(code)


def load_map(path=MAP):
    with open(path, encoding="utf-8") as f:
        m = json.load(f)
    if m.get("format") != "pgwarden-compliance-map/1":
        fail("%s: not a compliance map" % path)
    return m


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- COMPLIANCE.md ------------------------------------------------------------------------

INTRO = """\
# Compliance control map

<!-- Generated from docs/compliance-map.json by `tools/evidence.py render-md`: edit the map,
     not this file (the consistency test fails when they differ). -->

Which requirements pgwarden meets, how, the tests that prove it, and what it does **not**
do. The requirements are paraphrased in this project's words; the identifiers are the
standards' own. A requirement is only met for database traffic that passes through pgwarden,
configured as the *Configure* line says.

*Coverage* is what pgwarden can do: **full** (meets the requirement for the traffic it
carries), **partial** (meets part of it: *Operator* says what else is needed), **none**.
Whether it holds on a given build or host is what evidence says:

- `make evidence` runs every test named here (the integration tests against a throwaway
  PostgreSQL 15 cluster, the cmocka suites) and writes `build/evidence/evidence.json` (with
  an Ed25519 signature, `evidence.json.sig`) and `evidence.html`. A control is **proven**
  only when every one of its tests ran and passed; a skipped test is not evidence (several
  TLS, authentication, masking and policy integration tests skip until their layer is wired
  into the connection core, and the report says so). `EVIDENCE_KEY=/path/key` signs with
  that key (the audit signing key, say); without it a key is made for the run and its
  public half left beside the report.
- `pgwardenctl evidence collect --out FILE` on a live host records what can be checked
  without tests: TLS modes in force, FIPS, the policy file's digest, the audit trail
  verified up to now, steering attached fail-closed.
- `pgwardenctl evidence verify --public-key KEY FILE` checks a report: any changed byte,
  another report's signature or another key fails with a message and exit status 1.

What a signature proves: that the report is byte for byte what the holder of the key
signed. It does not prove the run was honest: whoever holds the key could sign a report of
a modified build or hand-edited results. An assessor who needs more runs `make evidence`
from a clean checkout of the tagged commit (the report records the commit, and `-dirty`
when the tree had changes) or watches it run, and keeps the public key apart from the
report. The HTML page is a rendering of the JSON and is not signed itself.

Tests are named `path::function`: pytest node ids (tests/integration) and cmocka test names
(tests/unit). See man/pgwardenctl.8 (`evidence`) and README.md.
"""


def render_md(m):
    out = [INTRO]
    counts = {}
    for c in m["controls"]:
        counts[c["coverage"]] = counts.get(c["coverage"], 0) + 1
    out.append("\n## Summary\n\n%d controls: %s.\n" % (
        len(m["controls"]), ", ".join("%d %s" % (counts[k], k) for k in sorted(counts))))
    out.append("\n| Control | Framework | Coverage | Tests |\n|---|---|---|---|\n")
    for c in m["controls"]:
        out.append("| [%s](#%s) | %s | %s | %d |\n" % (
            c["id"], anchor(c["id"]), c["framework"], c["coverage"], len(c["tests"])))
    for fw, title in m["frameworks"].items():
        out.append("\n## %s\n" % title)
        for c in m["controls"]:
            if c["framework"] != fw:
                continue
            out.append("\n### %s\n\n" % c["id"])
            out.append("**%s %s.** %s\n\n" % (fw, c["ref"], c["requirement"]))
            out.append("- **pgwarden:** %s\n" % c["feature"])
            out.append("- **Coverage:** %s\n" % c["coverage"])
            out.append("- **Configure:** %s\n" % c["configure"])
            out.append("- **Operator:** %s\n" % c["operator"])
            out.append("- **Tests:**\n")
            for t in c["tests"]:
                out.append("  - `%s`\n" % t)
    return "".join(out)


def anchor(control_id):
    return "".join(ch for ch in control_id.lower() if ch.isalnum() or ch == "-")


def cmd_render_md(args):
    text = render_md(load_map())
    if args.check:
        with open(args.doc or DOC, encoding="utf-8") as f:
            if f.read() != text:
                fail("docs/COMPLIANCE.md differs from docs/compliance-map.json: run "
                     "tools/evidence.py render-md", 1)
        return 0
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


# ---- running the tests --------------------------------------------------------------------

def split_test(test):
    path, _, name = test.partition("::")
    return path, name


def run_pytest(tests, out_dir, build):
    """Run the pytest node ids; {node id: (outcome, seconds, detail)}."""
    if not tests:
        return {}
    xml = os.path.join(out_dir, "pytest.xml")
    env = dict(os.environ, PGWARDEND=os.path.join(build, "pgwardend"))
    cmd = [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml", xml,
           "-o", "junit_family=xunit1"] + sorted(tests)
    with open(os.path.join(out_dir, "pytest.log"), "w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    results = {}
    if not os.path.exists(xml):
        return results
    for case in ET.parse(xml).getroot().iter("testcase"):
        # classname "tests.integration.test_x", name "test_y[param]"
        path = case.get("classname", "").replace(".", "/") + ".py"
        node = "%s::%s" % (path, case.get("name", "").split("[")[0])
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, detail = "failed", (child.get("message") or "")[:500]
            elif child.tag == "skipped" and outcome != "failed":
                outcome, detail = "skipped", (child.get("message") or "")[:500]
        merge(results, node, outcome, float(case.get("time") or 0), detail)
    return results


def merge(results, test, outcome, seconds, detail):
    """A parametrised test is one entry: failed if any case failed, skipped if any case
    skipped (a partly skipped test proves only part), passed if all passed."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    old = results.get(test)
    if old is None:
        results[test] = (outcome, seconds, detail)
        return
    worst = outcome if rank[outcome] > rank[old[0]] else old[0]
    results[test] = (worst, old[1] + seconds, old[2] if worst == old[0] else detail)


def run_cmocka(tests, out_dir, build):
    """Run each suite that holds a mapped test (whole: cmocka 1.1 has no filter); results
    for every case it ran, by 'path::name'."""
    results = {}
    suites = sorted({split_test(t)[0] for t in tests})
    for src in suites:
        name = os.path.splitext(os.path.basename(src))[0]
        binary = os.path.join(build, "tests", name)
        xml = os.path.join(out_dir, "cmocka-%s.xml" % name)
        if os.path.exists(xml):
            os.unlink(xml)
        if not os.access(binary, os.X_OK):
            continue  # its tests stay "missing"
        env = dict(os.environ, CMOCKA_MESSAGE_OUTPUT="xml", CMOCKA_XML_FILE=xml)
        with open(os.path.join(out_dir, "cmocka-%s.log" % name), "w") as log:
            subprocess.run([binary], cwd=os.path.join(ROOT, "tests", "unit"), env=env,
                           stdout=log, stderr=subprocess.STDOUT, timeout=600)
        if not os.path.exists(xml):
            continue
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError:
            continue  # a suite that crashed mid-way left half a file: its tests are missing
        for case in root.iter("testcase"):
            outcome, detail = "passed", ""
            for child in case:
                if child.tag in ("failure", "error"):
                    outcome, detail = "failed", (child.get("message") or child.text or "")[:500]
                elif child.tag == "skipped":
                    outcome, detail = "skipped", "skipped by the suite"
            merge(results, "%s::%s" % (src, case.get("name")), outcome,
                  float(case.get("time") or 0), detail)
    return results


def command_out(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout.strip()
    except OSError:
        return ""


def environment(build, m):
    """What the tests ran under: binaries, suites, harness, PostgreSQL, the map."""
    files = {}
    for rel in ("pgwardend", "pgwardenctl"):
        p = os.path.join(build, rel)
        if os.path.exists(p):
            files[os.path.join(build, rel)] = sha256_file(p)
    for rel in ("tests/integration/harness.py", "tests/integration/conftest.py",
                "docs/compliance-map.json"):
        files[rel] = sha256_file(os.path.join(ROOT, rel))
    config = {
        "postgresql": command_out(["/usr/lib/postgresql/15/bin/postgres", "--version"]),
        "python": platform.python_version(),
        "pytest": command_out([PYTHON, "-m", "pytest", "--version"]) or "",
        "cluster": "throwaway PostgreSQL 15 cluster, scram-sha-256 (tests/integration/harness.py)",
        "daemon_configuration": "each test starts pgwardend with the flags and YAML it states "
                                "(tests/integration); the files below fix them",
        "files_sha256": files,
    }
    canon = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return config, hashlib.sha256(canon).hexdigest()


def pgwarden_identity(build):
    line = command_out([os.path.join(build, "pgwardend"), "--version"])
    version, commit = "", ""
    parts = line.split()
    if len(parts) >= 2:
        version = parts[1]
    if "(commit " in line:
        commit = line.split("(commit ", 1)[1].rstrip(")")
    return {"version": version, "commit": commit,
            "git_head": command_out(["git", "-C", ROOT, "rev-parse", "HEAD"])}


def control_status(outcomes):
    if outcomes and all(o == "passed" for o in outcomes):
        return "proven"
    if any(o == "failed" for o in outcomes):
        return "failed"
    return "not proven"


def build_report(m, results, ran, build, selection):
    controls, totals = [], {"passed": 0, "failed": 0, "skipped": 0, "missing": 0, "not run": 0}
    for c in m["controls"]:
        checks = []
        for t in c["tests"]:
            kind = "pytest" if t.endswith(".py") or ".py::" in t else "cmocka"
            if t not in ran:
                outcome, secs, detail = "not run", 0.0, "outside this run's selection"
            elif t in results:
                outcome, secs, detail = results[t]
            else:
                outcome, secs, detail = "missing", 0.0, "the test did not report (not built, " \
                    "crashed, or no longer exists)"
            checks.append({"kind": kind, "name": t, "outcome": outcome,
                           "seconds": round(secs, 3), "detail": detail})
        if selection and selection.get("controls"):
            if c["id"] not in selection["controls"]:
                continue
        elif selection and not any(ch["outcome"] != "not run" for ch in checks):
            continue
        controls.append({"id": c["id"], "framework": m["frameworks"][c["framework"]],
                         "ref": c["ref"], "requirement": c["requirement"],
                         "coverage": c["coverage"], "operator": c["operator"],
                         "status": control_status([ch["outcome"] for ch in checks]),
                         "checks": checks})
    for t in ran:
        outcome = results.get(t, ("missing",))[0]
        totals[outcome] += 1
    config, config_sha = environment(build, m)
    summary = {"controls": len(controls)}
    for s in ("proven", "failed", "not proven"):
        summary[s.replace(" ", "_")] = sum(1 for c in controls if c["status"] == s)
    summary["tests"] = totals
    return {
        "format": FORMAT,
        "kind": "test-run",
        "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "pgwarden": pgwarden_identity(build),
        "host": {"hostname": platform.node(), "kernel": platform.release(),
                 "openssl": command_out(["openssl", "version"])},
        "configuration": {"description": config, "sha256": config_sha},
        "selection": selection or "every test the map names",
        "summary": summary,
        "controls": controls,
    }


def cmd_run(args):
    build = os.path.abspath(args.build)
    ctl = os.path.join(build, "pgwardenctl")
    m = load_map()
    consistency = os.path.join(build, "tests", "test_compliance_map")
    r = subprocess.run([consistency], cwd=os.path.join(ROOT, "tests", "unit"),
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail("the control map and the test suites disagree (%s):\n%s" % (consistency,
                                                                         r.stdout + r.stderr))
    selected = [c for c in m["controls"]
                if not args.controls or c["id"] in args.controls.split(",")]
    if args.controls and len(selected) != len(args.controls.split(",")):
        fail("--controls names a control that is not in the map")
    tests = sorted({t for c in selected for t in c["tests"]})
    if args.only:
        unknown = [t for t in args.only if t not in tests]
        if unknown:
            fail("--only names a test no selected control maps: %s" % ", ".join(unknown))
        tests = sorted(set(args.only))
    os.makedirs(args.out, exist_ok=True)
    results = run_pytest([t for t in tests if ".py::" in t], args.out, build)
    results.update(run_cmocka([t for t in tests if ".c::" in t], args.out, build))
    selection = None
    if args.only or args.controls:
        selection = {"controls": args.controls.split(",") if args.controls else None,
                     "tests": args.only or None}
    report = build_report(m, results, set(tests), build, selection)
    report_path = os.path.join(args.out, "evidence.json")
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    key = args.key
    if not key:
        key = os.path.join(args.out, "evidence-key")
        for p in (key, key + ".pub"):
            if os.path.exists(p):
                os.unlink(p)
        subprocess.run([ctl, "audit", "keygen", "--out", key], check=True,
                       stdout=subprocess.DEVNULL)
        print("evidence: no --key given: signed with a key made for this run (%s.pub); "
              "publish that public key apart from the report, or sign with your audit key"
              % key)
    r = subprocess.run([ctl, "evidence", "sign", "--key", key, report_path])
    if r.returncode != 0:
        fail("signing failed", 1)
    write_html(report, os.path.join(args.out, "evidence.html"), report_path)
    s = report["summary"]
    print("evidence: %d controls: %d proven, %d failed, %d not proven; tests %s -> %s" % (
        s["controls"], s["proven"], s["failed"], s["not_proven"],
        ", ".join("%d %s" % (v, k) for k, v in s["tests"].items() if v), args.out))
    return 1 if s["failed"] else 0


# ---- HTML -----------------------------------------------------------------------------------

CSS = """body{font:14px/1.4 sans-serif;margin:2em;max-width:70em}
table{border-collapse:collapse;width:100%}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:left;vertical-align:top}.proven,.passed{background:#dfd}.failed{background:#fdd}
.not-proven,.skipped,.missing,.not-run{background:#ffd}code{font-size:12px}
.box{border:2px solid #333;padding:1em;margin-bottom:1.5em}"""


def e(v):
    return html.escape(str(v), quote=True)


def write_html(report, path, report_path):
    s = report["summary"]
    rows = []
    for c in report["controls"]:
        checks = "".join(
            '<tr class="%s"><td><code>%s</code></td><td>%s</td><td>%s</td><td>%s</td></tr>' % (
                e(ch["outcome"].replace(" ", "-")), e(ch["name"]), e(ch["outcome"]),
                e(ch.get("seconds", "")), e(ch.get("detail", "")))
            for ch in c["checks"])
        rows.append(
            '<h3 id="%s">%s <span class="%s">%s</span></h3><p>%s</p>'
            '<p><b>Coverage:</b> %s. %s</p><table><tr><th>check</th><th>outcome</th>'
            '<th>seconds</th><th>detail</th></tr>%s</table>' % (
                e(c["id"]), e(c["id"]), e(c["status"].replace(" ", "-")), e(c["status"]),
                e(c.get("requirement", "")), e(c.get("coverage", "n/a")),
                e(c.get("operator", "")), checks))
    overview = "".join(
        '<tr class="%s"><td><a href="#%s">%s</a></td><td>%s</td><td>%s</td></tr>' % (
            e(c["status"].replace(" ", "-")), e(c["id"]), e(c["id"]), e(c["status"]),
            e(c.get("coverage", "n/a"))) for c in report["controls"])
    tests = s.get("tests", {})
    pg = report.get("pgwarden", {})
    doc = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>pgwarden compliance evidence</title><style>%s</style></head><body>
<h1>pgwarden compliance evidence (%s)</h1>
<div class="box"><h2>Summary</h2>
<p><b>%s of %s controls proven</b>, %s failed, %s not proven (a skipped or missing test
proves nothing). Tests: %s.</p>
<p>"Proven" means every test of pgwarden's part of the control ran and passed. Where the
coverage is <i>partial</i>, the rest of the requirement is the operator's (each control says
what); %s of the proven controls are partial.</p>
<p>pgwarden %s, commit <code>%s</code>; generated %s on %s, kernel %s, %s.
Configuration SHA-256 <code>%s</code>.</p>
<p>The signed record is <code>%s</code>; check it with
<code>pgwardenctl evidence verify --public-key KEY %s</code>. This page is a rendering of it
and is not itself signed.</p></div>
<table><tr><th>control</th><th>status</th><th>coverage</th></tr>%s</table>
<h2>Controls</h2>%s
<h2>Configuration</h2><pre>%s</pre></body></html>
""" % (CSS, e(report.get("kind")), e(s.get("proven")), e(s.get("controls")),
       e(s.get("failed", 0)), e(s.get("not_proven")),
       e(", ".join("%s %s" % (v, k) for k, v in tests.items() if v) or "none run"),
       e(sum(1 for c in report["controls"]
             if c["status"] == "proven" and c.get("coverage") == "partial")),
       e(pg.get("version")), e(pg.get("commit")), e(report.get("generated")),
       e(report.get("host", {}).get("hostname")), e(report.get("host", {}).get("kernel")),
       e(report.get("host", {}).get("openssl")),
       e(report.get("configuration", {}).get("sha256")),
       e(os.path.basename(report_path)), e(os.path.basename(report_path)), overview,
       "".join(rows), e(json.dumps(report.get("configuration"), indent=2)))
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(doc)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def cmd_html(args):
    try:
        with open(args.report, encoding="utf-8") as f:
            report = json.load(f)
    except (OSError, ValueError) as err:
        fail("%s: %s" % (args.report, err), 1)
    if not isinstance(report, dict) or report.get("format") != FORMAT:
        fail("%s: not a pgwarden evidence report" % args.report, 1)
    out = args.out or os.path.splitext(args.report)[0] + ".html"
    try:
        write_html(report, out, args.report)
    except (KeyError, TypeError, AttributeError) as err:
        fail("%s: not a well-formed evidence report (%s: %s)" % (
            args.report, type(err).__name__, err), 1)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("render-md")
    r.add_argument("--check", action="store_true")
    r.add_argument("--doc", help="the document to check (default docs/COMPLIANCE.md)")
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--build", default=os.path.join(ROOT, "build"))
    r.add_argument("--key")
    r.add_argument("--only", action="append")
    r.add_argument("--controls")
    r = sub.add_parser("html")
    r.add_argument("report")
    r.add_argument("--out")
    args = p.parse_args()
    return {"render-md": cmd_render_md, "run": cmd_run, "html": cmd_html}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
