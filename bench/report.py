"""report: turns results.json (what bench/run.py measured) into docs/BENCHMARKS.md.

Every number in the report is computed here from the recorded runs; nothing is typed in.
Medians are over rounds, shown with the min..max of the rounds, and each ratio to direct is
the median of per-round ratios (the relay and direct measured minutes apart in the same
round, not a median divided by a median), so a busy minute on the shared machine hits both
sides of a ratio instead of one.
"""

import os
import random
import statistics

AUDIT_MODES = ("none", "write", "batch", "always")
RELAYS = ["pgwarden", "pgwarden-wcpu", "pgwarden-policy"] + [
    "pgwarden-audit-%s" % m for m in AUDIT_MODES] + [
    "pgwarden-tls", "pgwarden-mask", "pgwarden-reuse", "pgwarden-reuse-tls", "baseline",
    "steered", "pgbouncer", "pgbouncer-fresh", "pgbouncer-tls", "pgbouncer-fresh-tls",
    "haproxy"]
# BENCH_MODES values in the order the tables list them: the select-only script's three
# protocols, then the tpcb-like script's.
MODE_ORDER = ["simple", "extended", "prepared", "tpcb-simple", "tpcb-extended",
              "tpcb-prepared"]
ORDER = ["direct"] + RELAYS
# The stream section's transfers, as bench/run.py runs them: (statement, result format).
STREAM_KINDS = [("copy", "text"), ("copy", "binary"), ("select", "text"), ("select", "binary")]


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def span(xs, fmt):
    """'median (min..max)' with fmt for each, or the median alone for a single run."""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    m = fmt % statistics.median(xs)
    if len(xs) == 1:
        return m
    return "%s (%s..%s)" % (m, fmt % min(xs), fmt % max(xs))


LEVERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "levers.md")


def cpu_clock(res):
    """Where the run read relay CPU from (bench/procstat.py); older results: ticks."""
    env = res.get("env", {})
    if env.get("cpu_clock"):
        return env["cpu_clock"]
    return "/proc/PID/stat (%s ms ticks)" % f(
        1000.0 / env["clk_tck"] if env.get("clk_tck") else None, "%.0f")


def f(x, fmt):
    return "–" if x is None else fmt % x


def by(rows, **kw):
    return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]


def round_ratios(rows, target, key, **cell):
    """Per-round target/direct ratios of key for one cell."""
    out = []
    for r in by(rows, target=target, **cell):
        d = by(rows, target="direct", round=r["round"], **cell)
        if d and d[0].get(key) and r.get(key) is not None:
            out.append(r[key] / d[0][key])
    return out


def round_diffs(rows, target, key, **cell):
    """Per-round target minus direct differences of key for one cell."""
    out = []
    for r in by(rows, target=target, **cell):
        d = by(rows, target="direct", round=r["round"], **cell)
        if d and d[0].get(key) is not None and r.get(key) is not None:
            out.append(r[key] - d[0][key])
    return out


def verdict(ok):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**not met**"


# ------------------------------------------------------------------------------------------
# goals from issue #2, each judged only from what this run measured


def goals(res):
    tps, stream, idle = res["tps"], res["stream"], res["idle"]
    cells = sorted({(r["mode"], r["clients"]) for r in tps},
                   key=lambda c: (["simple", "extended", "prepared"].index(c[0])
                                  if c[0] in ("simple", "extended", "prepared") else 9, c[1]))
    rows = []

    # 1. TPS at least PgBouncer's and HAProxy's in every cell (medians over rounds).
    worst, ok, measured = None, True, False
    for mode, clients in cells:
        pw = med([r["tps"] for r in by(tps, target="pgwarden", mode=mode, clients=clients)])
        for other in ("pgbouncer", "haproxy"):
            o = med([r["tps"] for r in by(tps, target=other, mode=mode, clients=clients)])
            if pw is None or o is None:
                continue
            measured = True
            ratio = pw / o
            if ratio < 1.0:
                ok = False
            if worst is None or ratio < worst[0]:
                worst = (ratio, mode, clients, other)
    detail = "–"
    if worst:
        detail = "lowest: %s -c %d, pgwarden at %.2f× %s's median TPS" % (
            worst[1], worst[2], worst[0], worst[3])
    rows.append(("pgwarden TPS ≥ PgBouncer's and HAProxy's in every cell", detail,
                 verdict(ok if measured else None)))

    # 2. Relay CPU per transaction at most 0.6 of PgBouncer's, every cell.
    worst, ok, measured = None, True, False
    for mode, clients in cells:
        pw = med([r.get("cpu_ms_per_1k_tx") for r in
                  by(tps, target="pgwarden", mode=mode, clients=clients)])
        pb = med([r.get("cpu_ms_per_1k_tx") for r in
                  by(tps, target="pgbouncer", mode=mode, clients=clients)])
        if pw is None or not pb:
            continue
        measured = True
        ratio = pw / pb
        if ratio > 0.6:
            ok = False
        if worst is None or ratio > worst[0]:
            worst = (ratio, mode, clients, pw, pb)
    detail = "–"
    if worst:
        # The rounds' min..max beside the medians: a verdict that turns on a margin inside
        # them is noise, and the reader should see that without opening the tables.
        runs = [span([r.get("cpu_ms_per_1k_tx") for r in by(tps, target=t, mode=worst[1],
                                                             clients=worst[2])], "%.2f")
                for t in ("pgwarden", "pgbouncer")]
        detail = "highest: %s -c %d, %s vs %s ms per 1,000 tx = %.2f× PgBouncer's" % (
            worst[1], worst[2], runs[0], runs[1], worst[0])
    rows.append(("pgwarden CPU per transaction ≤ 0.6× PgBouncer's", detail,
                 verdict(ok if measured else None)))

    # 3. At most 2 KiB RSS per idle logged-in session.
    pw = [r for r in idle if r["target"] == "pgwarden" and "kib_per_conn" in r]
    if pw:
        r = pw[-1]
        full = r["connections"] == r["requested"]
        rows.append(("pgwarden ≤ 2 KiB RSS per idle session",
                     "%.2f KiB per session over %d sessions%s" % (
                         r["kib_per_conn"], r["connections"],
                         "" if full else " (only %d of %d opened)" % (r["connections"],
                                                                    r["requested"])),
                     verdict(full and r["kib_per_conn"] <= 2.0)))
    else:
        rows.append(("pgwarden ≤ 2 KiB RSS per idle session", "–", verdict(None)))

    # 4. Streaming CPU per byte at most HAProxy's, RSS within 16 MiB of idle.
    parts, ok, measured = [], True, False
    for kind, fmt in STREAM_KINDS:
        pw_rows = by(stream, target="pgwarden", kind=kind, format=fmt)
        hp_rows = by(stream, target="haproxy", kind=kind, format=fmt)
        pw = med([r.get("cpu_ns_per_byte") for r in pw_rows])
        hp = med([r.get("cpu_ns_per_byte") for r in hp_rows])
        if pw is None or hp is None:
            continue
        measured = True
        if pw > hp:
            ok = False
        parts.append("%s %s vs HAProxy %s ns/B" % (
            stream_label(kind, fmt), span([r.get("cpu_ns_per_byte") for r in pw_rows], "%.2f"),
            span([r.get("cpu_ns_per_byte") for r in hp_rows], "%.2f")))
    pw_runs = by(stream, target="pgwarden")
    if pw_runs:
        base = min(r["rss_idle_kib"] for r in pw_runs)
        growth = max(r["rss_peak_kib"] for r in pw_runs) - base
        if growth > 16 * 1024:
            ok = False
        parts.append("RSS peak %.1f MiB above idle" % (growth / 1024.0))
    rows.append(("pgwarden streaming CPU per byte ≤ HAProxy's, RSS within 16 MiB of idle",
                 "; ".join(parts) or "–", verdict(ok if measured else None)))
    return rows


MASK_CPU_LIMIT = 1.5
MASK_RSS_LIMIT_KIB = 16 * 1024


def mask_goals(res):
    """Issue #13's target: per transfer, pgwarden-mask's relay CPU per byte against
    pgwarden's (no policy) on the same stream, a ratio per round, the median judged against
    1.5x; and its RSS flat (peak within 16 MiB of idle, as for the unmasked relay)."""
    stream, rows = res["stream"], []
    for kind, fmt in STREAM_KINDS:
        rs = pair_ratios(stream, "pgwarden-mask", "pgwarden", "cpu_ns_per_byte", kind=kind,
                         format=fmt)
        if not rs:
            continue
        m = med(rs)
        masked = by(stream, target="pgwarden-mask", kind=kind, format=fmt)
        clear = by(stream, target="pgwarden", kind=kind, format=fmt)
        detail = ("%.2f× (rounds %s): masked %s ns/B, %s MiB/s; unmasked %s ns/B, %s MiB/s; "
                  "%d rows checked masked" % (
                      m, ", ".join("%.2f" % x for x in rs),
                      span([r["cpu_ns_per_byte"] for r in masked], "%.2f"),
                      span([r["mib_per_s"] for r in masked], "%.0f"),
                      span([r["cpu_ns_per_byte"] for r in clear], "%.2f"),
                      span([r["mib_per_s"] for r in clear], "%.0f"),
                      sum(r.get("rows_checked", 0) for r in masked)))
        v = verdict(m <= MASK_CPU_LIMIT)
        if m > MASK_CPU_LIMIT and any(x <= MASK_CPU_LIMIT for x in rs):
            v = "**not resolved** (rounds on both sides)"
        rows.append(("%s, one masked column: relay CPU/byte ≤ %.1f× unmasked" % (
            stream_label(kind, fmt), MASK_CPU_LIMIT), detail, v))
    masked = by(stream, target="pgwarden-mask")
    if masked:
        growth = max(r["rss_peak_kib"] for r in masked) - min(r["rss_idle_kib"] for r in masked)
        rows.append(("Masking: RSS flat (peak within %d MiB of idle over every transfer)"
                     % (MASK_RSS_LIMIT_KIB // 1024), "peak %.1f MiB above idle" % (
                         growth / 1024.0), verdict(growth <= MASK_RSS_LIMIT_KIB)))
    return rows


def pair_ratios(rows, a, b, key, **cell):
    """Per-round a/b ratios of key for one cell (both measured in the same round)."""
    out = []
    for r in by(rows, target=a, **cell):
        o = by(rows, target=b, round=r["round"], **cell)
        if o and o[0].get(key) and r.get(key) is not None:
            out.append(r[key] / o[0][key])
    return out


def compare_goal(tps, pairs, key, limit, higher_is_better, clients=None):
    """Worst cell of the median per-round ratio a/b over pairs [(a, b)], judged against
    limit. *not met* when in some cell every round misses the limit; *not resolved* when
    the cells that miss it by their median have rounds on both sides of it (the run's
    noise is larger than the margin). Returns (detail, verdict)."""
    cells = sorted({(r["mode"], r["clients"]) for r in tps
                    if clients is None or r["clients"] in clients})
    worst, measured, clear_fail, ok = None, False, False, True
    for mode, c in cells:
        for a, b in pairs:
            rs = pair_ratios(tps, a, b, key, mode=mode, clients=c)
            if not rs:
                continue
            measured = True
            m = med(rs)
            good = (m >= limit) if higher_is_better else (m <= limit)
            if not good:
                ok = False
                if not any((x >= limit) if higher_is_better else (x <= limit) for x in rs):
                    clear_fail = True  # every round of this cell misses the limit
            badness = -m if higher_is_better else m
            if worst is None or badness > worst[0]:
                worst = (badness, m, mode, c, a, b, rs)
    if not measured:
        return "–", verdict(None)
    _, m, mode, c, a, b, rs = worst
    detail = "worst: %s -c %d, %s at %.2f× %s's (rounds %s)" % (
        mode, c, a, m, b, ", ".join("%.2f" % x for x in rs))
    if not ok and not clear_fail:
        return detail, "**not resolved** (rounds on both sides)"
    return detail, verdict(ok)


def issue15_goals(res):
    """Issue #15's targets: TPS at least PgBouncer's and HAProxy's (plaintext and TLS),
    relay CPU per transaction at most 0.8x PgBouncer's at 8 and 64 clients without and
    with policy + batch audit, and the latency added over direct."""
    tps = res["tps"]
    rows = []
    for label, pairs in (
            ("TPS ≥ PgBouncer's and HAProxy's, plaintext",
             [("pgwarden", "pgbouncer"), ("pgwarden", "haproxy")]),
            ("TPS ≥ PgBouncer's, TLS (both terminating sslmode=require)",
             [("pgwarden-tls", "pgbouncer-tls")]),
            ("TPS ≥ PgBouncer's, with policy + batch audit (PgBouncer has neither)",
             [("pgwarden-audit-batch", "pgbouncer")])):
        rows.append((label,) + compare_goal(tps, pairs, "tps", 1.0, True))
    # The same targets with pgwardend logging clients in as PgBouncer does here: SCRAM at the
    # relay against the verifier, and server connections kept between client sessions.
    for label, pairs in (
            ("TPS ≥ PgBouncer's with the same login model (pgwarden-reuse: auth.mode terminate "
             "and server_reuse), plaintext", [("pgwarden-reuse", "pgbouncer")]),
            ("TPS ≥ PgBouncer's with the same login model, TLS",
             [("pgwarden-reuse-tls", "pgbouncer-tls")])):
        detail, v = compare_goal(tps, pairs, "tps", 1.0, True)
        if detail != "–":
            rows.append((label, detail, v))
    # Not the issue's target: the same comparison with a new backend per client session on
    # both sides, over the steady part (pgbouncer-fresh logs in to the server at a client's
    # first query, one login at a time, inside pgbench's measured time).
    for leg, a, b in (("plaintext", "pgwarden", "pgbouncer-fresh"),
                      ("TLS", "pgwarden-tls", "pgbouncer-fresh-tls")):
        fresh = compare_goal(tps, [(a, b)], "steady_tps", 1.0, True)[0]
        if fresh != "–":
            rows.append(("TPS after every login (steady part) ≥ PgBouncer's with a new server "
                         "backend per client session (%s), %s; for reading the row above"
                         % (b, leg), fresh, "reported"))
    for label, pairs in (
            ("CPU/tx ≤ 0.8× PgBouncer's at 8 and 64 clients, no policy",
             [("pgwarden", "pgbouncer")]),
            ("CPU/tx ≤ 0.8× PgBouncer's at 8 and 64 clients, policy + batch audit",
             [("pgwarden-audit-batch", "pgbouncer")]),
            ("CPU/tx ≤ 0.8× PgBouncer's at 8 and 64 clients, TLS",
             [("pgwarden-tls", "pgbouncer-tls")])):
        rows.append((label,) + compare_goal(tps, pairs, "cpu_ms_per_1k_tx", 0.8, False,
                                            clients=(8, 64)))
    floor = kernel_floor(tps, "pgwarden", "pgbouncer", (8, 64))
    if floor:
        rows.append(("The kernel's share: pgwarden's relay CPU/tx in the kernel alone (its "
                     "socket work, no code of its own) against PgBouncer's whole CPU/tx, at 8 "
                     "and 64 clients, no policy; where it is above 0.8, no user-space change "
                     "meets the row above", floor, "reported"))
    worst = None
    for mode, c in sorted({(r["mode"], r["clients"]) for r in tps}):
        for t in ("pgwarden", "pgwarden-audit-batch", "pgwarden-tls"):
            d = med(round_diffs(tps, t, "p99_ms", mode=mode, clients=c))
            if d is not None and (worst is None or d > worst[0]):
                worst = (d, t, mode, c)
    rows.append(("Latency added at p50 and p99 per cell, against direct",
                 "reported per cell in section 1%s" % (
                     "; largest p99 added by a pgwarden target: %+.0f µs (%s, %s -c %d)"
                     % (worst[0] * 1000.0, worst[1], worst[2], worst[3]) if worst else ""),
                 "reported" if worst else verdict(None)))
    return rows


def kernel_floor(tps, a, b, clients):
    """a's kernel CPU per transaction against b's whole CPU per transaction, per round, for
    the cells with the given client counts: the lowest, median and highest of the cells'
    medians, and a's user and kernel µs per transaction beside b's (medians over those
    cells). "" when the run has no user/kernel split (results from before it)."""
    cells = sorted({(r["mode"], r["clients"]) for r in tps if r["clients"] in clients})
    ratios, split = [], {a: ([], []), b: ([], [])}
    for mode, c in cells:
        rs = []
        for r in by(tps, target=a, mode=mode, clients=c):
            o = by(tps, target=b, round=r["round"], mode=mode, clients=c)
            if o and o[0].get("cpu_ms_per_1k_tx") and r.get("cpu_kernel_ms_per_1k_tx"):
                rs.append(r["cpu_kernel_ms_per_1k_tx"] / o[0]["cpu_ms_per_1k_tx"])
        if rs:
            ratios.append(med(rs))
        for t in (a, b):
            for r in by(tps, target=t, mode=mode, clients=c):
                if r.get("cpu_user_ms_per_1k_tx") is not None:
                    split[t][0].append(r["cpu_user_ms_per_1k_tx"])
                    split[t][1].append(r["cpu_kernel_ms_per_1k_tx"])
    if not ratios or not split[b][0]:
        return ""
    return ("%.2f× (cells %.2f..%.2f); µs per transaction, user + kernel: %s %.1f + %.1f, "
            "%s %.1f + %.1f (medians over those cells)" % (
                med(ratios), min(ratios), max(ratios), a, med(split[a][0]),
                med(split[a][1]), b, med(split[b][0]), med(split[b][1])))


def layer_goals(res):
    """The compliance layers' own targets: policy (issue #11) against no policy, the audit
    modes (issue #12) against the same policy with no trail, and the TLS handshake rate
    (issue #10) against PgBouncer's, each only where the run measured both sides."""
    tps, rows = res["tps"], []
    rows.append(("Policy (ten rules, relation lists): TPS ≥ 0.95× no policy",)
                + compare_goal(tps, [("pgwarden-policy", "pgwarden")], "tps", 0.95, True))
    rows.append(("Policy: relay CPU/tx ≤ 1.10× no policy",)
                + compare_goal(tps, [("pgwarden-policy", "pgwarden")], "cpu_ms_per_1k_tx",
                               1.10, False))
    rows.append(("Audit `batch`: TPS ≥ 0.90× auditing off (same policy) at 8 and 64 clients",)
                + compare_goal(tps, [("pgwarden-audit-batch", "pgwarden-policy")], "tps",
                               0.90, True, clients=(8, 64)))
    for mode in ("none", "write", "always"):
        detail, v = compare_goal(tps, [("pgwarden-audit-%s" % mode, "pgwarden-policy")],
                                 "tps", 0.90, True, clients=(8, 64))
        if detail != "–":
            rows.append(("Audit `%s` against auditing off (for comparison; no target)" % mode,
                         detail, "reported"))
    # Issue #10's own TPS target: select-only over TLS at 8 and 64 clients, by login model.
    select_only = [r for r in tps if not r["mode"].startswith("tpcb")]
    for label, a, b in (
            ("TLS select-only TPS ≥ PgBouncer's at 8 and 64 clients, same login model "
             "(pgwarden-reuse-tls: terminate mode and server_reuse)", "pgwarden-reuse-tls",
             "pgbouncer-tls"),
            ("TLS select-only TPS ≥ PgBouncer's at 8 and 64 clients, passthrough (a new "
             "backend per session) against the pooled PgBouncer", "pgwarden-tls",
             "pgbouncer-tls"),
            ("TLS select-only TPS ≥ PgBouncer's at 8 and 64 clients, both with a new backend "
             "per session (pgbouncer-fresh-tls)", "pgwarden-tls", "pgbouncer-fresh-tls")):
        rows.append((label,) + compare_goal(select_only, [(a, b)], "tps", 1.0, True,
                                            clients=(8, 64)))
    rows.append(("TLS handshakes/s alone (tlsprobe, no login) ≥ PgBouncer's",)
                + compare_goal(res.get("tls_handshake", []),
                               [("pgwarden-tls", "pgbouncer-tls")], "tps", 1.0, True))
    detail, v = compare_goal(res.get("tls_handshake", []), [("pgwarden-tls", "pgbouncer-tls")],
                             "cpu_ms_per_1k_tx", 1.0, False)
    rows.append(("Relay CPU per TLS handshake ≤ PgBouncer's (no target; for the rate's "
                 "reading)", detail, "reported" if detail != "–" else v))
    rows.append(("Sessions/s over TLS (pgbench -C, sslmode=require: handshake and login) ≥ "
                 "PgBouncer's (PgBouncer reuses its server connections; pgwardend logs in "
                 "to the server per session)",)
                + compare_goal(res.get("connect", []), [("pgwarden-tls", "pgbouncer-tls")],
                               "tps", 1.0, True))
    rows.append(("Sessions/s over TLS (pgbench -C, sslmode=require) ≥ PgBouncer's when it too "
                 "logs in to a new server backend per session (pgbouncer-fresh-tls)",)
                + compare_goal(res.get("connect", []),
                               [("pgwarden-tls", "pgbouncer-fresh-tls")], "tps", 1.0, True))
    for leg, a, b in (("plaintext", "pgwarden-reuse", "pgbouncer"),
                      ("TLS", "pgwarden-reuse-tls", "pgbouncer-tls")):
        rows.append(("Sessions/s (pgbench -C), %s, ≥ PgBouncer's with the same login model: "
                     "both authenticate the client with SCRAM against the verifier and keep "
                     "server connections between client sessions (%s)" % (leg, a),)
                    + compare_goal(res.get("connect", []), [(a, b)], "tps", 1.0, True))
    rows.append(idle_tls_goal(res.get("idle", [])))
    return [r for r in rows if r[1] != "–"]


def idle_tls_goal(idle):
    """Issue #10: the RSS an idle logged-in TLS session costs pgwardend, at most what it
    costs PgBouncer (session mode, so each holds a server connection, as pgwardend does).
    One measurement per target, over every session that opened."""
    title = "Idle memory per TLS session (sslmode=require, logged in, idle) ≤ PgBouncer's"
    got = {}
    for r in idle:
        if r["target"] in ("pgwarden-tls", "pgbouncer-tls"):
            got[r["target"]] = r
    if len(got) < 2:
        return (title, "–", verdict(None))
    pw, pb = got["pgwarden-tls"], got["pgbouncer-tls"]
    full = all(r["connections"] == r["requested"] and "kib_per_conn" in r
               for r in (pw, pb))
    if not full:
        return (title, "not every session opened (section 4)", verdict(None))
    detail = "pgwarden-tls %.2f KiB, pgbouncer-tls %.2f KiB per session over %d sessions" % (
        pw["kib_per_conn"], pb["kib_per_conn"], pw["connections"])
    return (title, detail, verdict(pw["kib_per_conn"] <= pb["kib_per_conn"]))


def baseline_goals(res):
    """Issue #8: this build against the baseline build (BENCH_BASELINE), cell by cell, from
    per-round ratios (both measured minutes apart in the same round)."""
    tps = res["tps"]
    rows = []
    cells = sorted({(r["mode"], r["clients"]) for r in by(tps, target="baseline")})
    if not cells:
        return rows
    rev = res.get("env", {}).get("baseline_rev") or "?"
    for key, label, better in (("tps", "TPS", max), ("cpu_ms_per_1k_tx",
                                                       "relay CPU per transaction", min)):
        ratios = []
        for mode, clients in cells:
            per_round = []
            for r in by(tps, target="pgwarden", mode=mode, clients=clients):
                b = by(tps, target="baseline", mode=mode, clients=clients, round=r["round"])
                if b and b[0].get(key) and r.get(key) is not None:
                    per_round.append(r[key] / b[0][key])
            if per_round:
                ratios.append((med(per_round), mode, clients))
        if not ratios:
            continue
        geo = 1.0
        for x, _, _ in ratios:
            geo *= x
        geo **= 1.0 / len(ratios)
        worst = min(ratios) if better is max else max(ratios)
        # No worse: across the cells within 3% (the geometric mean), and no cell more than
        # 10% off; single cells move by more than that between rounds on this machine.
        ok = (geo >= 0.97 and worst[0] >= 0.90) if key == "tps" else \
             (geo <= 1.03 and worst[0] <= 1.10)
        rows.append(("%s no worse than the baseline (%s)" % (label, rev),
                     "this build / baseline: %.3f× geometric mean over %d cells; worst %s "
                     "-c %d at %.2f×" % (geo, len(ratios), worst[1], worst[2], worst[0]),
                     verdict(ok)))
    return rows


# ------------------------------------------------------------------------------------------
# issue #3: what steering adds to a connection


STEER_BUDGET_US = 20.0


def steer_pgbench_diffs(connect):
    """Per round: steered's minus explicit pgwarden's mean connection time (pgbench's
    "average connection time"), in microseconds."""
    out = []
    for r in by(connect, target="steered"):
        p = by(connect, target="pgwarden", round=r["round"])
        if p and r.get("conn_ms") is not None and p[0].get("conn_ms") is not None:
            out.append((r["conn_ms"] - p[0]["conn_ms"]) * 1000.0)
    return out


def probe_pairs(p, key="block_median_us"):
    """One probe round's block pairs: steered minus explicit, in microseconds (the two blocks
    of a pair ran back to back in the same process)."""
    return [st - ex for ex, st in zip(p["explicit"][key], p["steered"][key])]


def probe_round_diff(p, key="block_median_us"):
    """One probe round: the median over its block pairs."""
    return statistics.median(probe_pairs(p, key))


def bootstrap_median(xs, n=2000):
    """95% interval of the median of xs by resampling (fixed seed: the report is a pure
    function of results.json)."""
    rng = random.Random(0)
    ms = sorted(statistics.median(rng.choices(xs, k=len(xs))) for _ in range(n))
    return ms[int(n * 0.025)], ms[int(n * 0.975) - 1]


def probe_summary(probe):
    """Pooled over rounds: median of all block pairs, its 95% interval, and the per-round
    medians; None without probe data."""
    pairs = [d for p in probe for d in probe_pairs(p)]
    if not pairs:
        return None
    lo, hi = bootstrap_median(pairs)
    return {"pairs": len(pairs), "median": statistics.median(pairs), "ci": (lo, hi),
            "rounds": [probe_round_diff(p) for p in probe],
            "p10_rounds": [probe_round_diff(p, "block_p10_us") for p in probe
                           if p["explicit"].get("block_p10_us")]}


def probe_verdict(sm):
    """met when the whole 95% interval and every round are within the budget; not met when
    the whole interval is above it; otherwise the run cannot tell."""
    if sm is None:
        return verdict(None)
    lo, hi = sm["ci"]
    if hi <= STEER_BUDGET_US and max(sm["rounds"]) <= STEER_BUDGET_US:
        return verdict(True)
    if lo > STEER_BUDGET_US:
        return verdict(False)
    return "**not resolved**"


def conn_spread_us(connect, target):
    xs = [r["conn_ms"] for r in by(connect, target=target) if r.get("conn_ms") is not None]
    return (max(xs) - min(xs)) * 1000.0 if len(xs) > 1 else None


def steer_verdict(diffs, noise_us=0.0):
    """met when every round is within the budget and the rounds agree to within it; not met
    when even the lowest round is above the budget by more than the rounds' spread (and the
    other noise given); otherwise, and always for a single round, the run cannot tell."""
    if not diffs:
        return verdict(None)
    if len(diffs) < 2:
        return "**not resolved** (one round: no spread to judge the noise by)"
    lo, hi = min(diffs), max(diffs)
    noise = max(hi - lo, noise_us or 0.0)
    if hi <= STEER_BUDGET_US and noise <= STEER_BUDGET_US:
        return verdict(True)
    if lo > STEER_BUDGET_US and lo - STEER_BUDGET_US > noise:
        return verdict(False)
    return "**not resolved**"


def fmt_diffs(diffs, fmt="%+.1f"):
    return (fmt + " µs (rounds %s)") % (statistics.median(diffs),
                                       ", ".join(fmt % d for d in diffs))


def steer_goals(res):
    connect, probe = res["connect"], res.get("probe", [])
    rows = []
    d = steer_pgbench_diffs(connect)
    direct_spread = conn_spread_us(connect, "direct")
    if d:
        detail = ("pgbench -C, steered − explicit mean connection time: %s; direct's own "
                  "mean connection time moved by %s between rounds" % (
                      fmt_diffs(d, "%+.0f"), f(direct_spread, "%.0f µs")))
    else:
        detail = "–"
    rows.append(("steering adds < 20 µs per connection: full SCRAM sessions (pgbench -C)",
                 detail, steer_verdict(d, direct_spread)))
    sm = probe_summary(probe)
    if sm:
        detail = ("connect + SSLRequest + close through the same pgwardend, steered − "
                  "explicit: %+.1f µs, 95%% interval %+.1f..%+.1f µs (%d block pairs; "
                  "rounds %s)" % (sm["median"], sm["ci"][0], sm["ci"][1], sm["pairs"],
                                  ", ".join("%+.1f" % d for d in sm["rounds"])))
    else:
        detail = "–"
    rows.append(("steering adds < 20 µs per connection: BPF hooks + relay lookup "
                 "(bench/connprobe.py)", detail, probe_verdict(sm)))
    return rows


# ------------------------------------------------------------------------------------------
# sections


def tps_table(tps, out):
    out.append("| mode | clients | target | TPS median (min..max) | mean latency ms "
               "| ratio to direct | relay CPU ms / 1,000 tx | p50 / p99 ms "
               "| added p50 / p99 µs |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    modes = [m for m in MODE_ORDER if by(tps, mode=m)]
    for mode in modes:
        for clients in sorted({r["clients"] for r in by(tps, mode=mode)}):
            for t in ORDER:
                rows = by(tps, target=t, mode=mode, clients=clients)
                if not rows:
                    continue
                ratio = "1" if t == "direct" else f(med(round_ratios(
                    tps, t, "tps", mode=mode, clients=clients)), "%.2f")
                cpu = "–" if t == "direct" else span(
                    [r.get("cpu_ms_per_1k_tx") for r in rows], "%.1f")
                pct = "%s / %s" % (f(med([r.get("p50_ms") for r in rows]), "%.3f"),
                                   f(med([r.get("p99_ms") for r in rows]), "%.3f"))
                added = "–" if t == "direct" else "%s / %s" % tuple(
                    span([d * 1000.0 for d in round_diffs(tps, t, k, mode=mode,
                                                          clients=clients)], "%+.0f")
                    for k in ("p50_ms", "p99_ms"))
                out.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s |" % (
                    mode, clients, t, span([r["tps"] for r in rows], "%.0f"),
                    span([r["latency_ms"] for r in rows], "%.3f"), ratio, cpu, pct, added))


def tls_handshake_table(rows_all, out):
    """The TLS relays' handshakes alone (bench/tlsprobe.py: SSLRequest, a full handshake,
    reset; no login), per target: rate and relay CPU per 1,000 handshakes."""
    if not rows_all:
        return
    out.append("")
    out.append("TLS handshakes alone (`bench/tlsprobe.py`, %d client threads: connect, "
               "SSLRequest, a full TLS handshake without resumption, reset; no login, so no "
               "server connection on either relay):" % rows_all[0]["clients"])
    out.append("")
    out.append("| target | handshakes/s median (min..max) | ratio to pgbouncer-tls "
               "| relay CPU ms / 1,000 handshakes |")
    out.append("|---|---:|---:|---:|")
    for t in ORDER:
        rows = by(rows_all, target=t)
        if not rows:
            continue
        ratio = "1" if t == "pgbouncer-tls" else f(med(pair_ratios(
            rows_all, t, "pgbouncer-tls", "tps", mode="handshake",
            clients=rows[0]["clients"])), "%.2f")
        out.append("| %s | %s | %s | %s |" % (
            t, span([r["tps"] for r in rows], "%.0f"), ratio,
            span([r["cpu_ms_per_1k_tx"] for r in rows], "%.1f")))


def connect_table(rows_all, out):
    out.append("| target | sessions/s median (min..max) | mean connection time ms "
               "| mean latency ms | ratio to direct | relay CPU ms / 1,000 sessions |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for t in ORDER:
        rows = by(rows_all, target=t)
        if not rows:
            continue
        ratio = "1" if t == "direct" else f(med(round_ratios(rows_all, t, "tps")), "%.2f")
        cpu = "–" if t == "direct" else span([r.get("cpu_ms_per_1k_tx") for r in rows],
                                             "%.1f")
        out.append("| %s | %s | %s | %s | %s | %s |" % (
            t, span([r["tps"] for r in rows], "%.0f"),
            span([r.get("conn_ms") for r in rows], "%.3f"),
            span([r["latency_ms"] for r in rows], "%.3f"), ratio, cpu))


def steered_lines(res, out):
    """Proof the steered runs went through the relay, then the steered − explicit line."""
    connect = res["connect"]
    rows = [r for r in by(connect, target="steered") if r.get("steering")]
    if not rows:
        return
    st = sum(r["steering"]["steered_ipv4"] for r in rows)
    sess = sum(r["steering"]["sessions"] for r in rows)
    out.append("")
    out.append(
        "Steering really happened: over the %d steered run(s) pgbench completed %s sessions "
        "and the hooks' `steered_ipv4` counter rose by %s (pgbench's own first connection "
        "included). The steered pgwardend's `--upstream` is a loopback port held bound and "
        "never listened on, so a session it did not classify as steered could not have "
        "logged in. A run whose counter fell short would have been discarded and listed "
        "under *Problems during the run*." % (len(rows), "{:,}".format(sess),
                                             "{:,}".format(st)))
    d = steer_pgbench_diffs(connect)
    if not d:
        return
    med_d = statistics.median(d)
    spread = max(d) - min(d)
    direct_spread = conn_spread_us(connect, "direct")
    pw_spread = conn_spread_us(connect, "pgwarden")
    out.append("")
    line = ("**Steered − explicit, per connection (pgbench -C):** %+.0f µs median over %d "
            "round(s) (rounds: %s µs; spread %.0f µs), against a budget of %.0f µs. "
            % (med_d, len(d), ", ".join("%+.0f" % x for x in d), spread, STEER_BUDGET_US))
    noise = max([x for x in (spread, direct_spread, pw_spread) if x is not None] or [0])
    if noise > STEER_BUDGET_US:
        line += ("Between rounds, direct's own mean connection time moved by %s and "
                 "explicit pgwarden's by %s: at this level of noise a SCRAM session "
                 "measurement on this machine cannot resolve a %.0f µs difference either "
                 "way, so this line neither confirms nor refutes the budget; the probe "
                 "below measures steering on its own." % (
                     f(direct_spread, "%.0f µs"), f(pw_spread, "%.0f µs"), STEER_BUDGET_US))
    else:
        line += "Direct's own mean connection time moved by %s between rounds." % f(
            direct_spread, "%.0f µs")
    out.append(line)


def probe_table(res, out):
    probe = res.get("probe", [])
    sm = probe_summary(probe)
    if sm is None:
        return
    st = res["settings"]
    out.append("")
    out.append("### What steering itself costs (connection probe)")
    out.append("")
    out.append(
        "`bench/connprobe.py` times connections without a login: connect, send an "
        "SSLRequest, read pgwardend's one-byte answer, close (with a reset, so no TIME_WAIT). "
        "pgwardend answers the SSLRequest itself after accept() and its steering lookup, so "
        "no PostgreSQL backend is involved. Both legs go to the steered target's pgwardend "
        "from one client process: *explicit* dials its listener from the driver's own "
        "cgroup, *steered* moves into the steering cgroup (between blocks, untimed) and "
        "dials PostgreSQL's port, which the hooks rewrite to the same listener. The "
        "difference is therefore the BPF hooks (connect4 rewrite and origin record, sockops "
        "re-key at ESTABLISHED, cleanup at close) plus the relay's map lookup and delete. "
        "Each round runs %d blocks of %d connections per leg, alternating in ABBA order; a "
        "block's figure is its median connection, a pair is two adjacent blocks (one per "
        "leg, milliseconds apart), and a round's difference is the median over its pairs. "
        "The kernel counter `steered_ipv4` must rise by at least the steered leg's "
        "connections in every round. Relay CPU per connection is the relay's CPU time "
        "during the leg's blocks (%s) divided by its connections." % (
            st.get("probe_blocks", 0), st.get("probe_conns", 0), cpu_clock(res)))
    out.append("")
    out.append("| round | explicit µs / connection, median block (min..max) "
               "| steered µs / connection, median block (min..max) "
               "| steered − explicit µs, median pair (quartiles) "
               "| relay CPU µs / conn, explicit | relay CPU µs / conn, steered "
               "| connects steered |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|")
    for p in probe:
        ex, stl = p["explicit"], p["steered"]
        pairs = probe_pairs(p)
        q = statistics.quantiles(pairs, n=4) if len(pairs) > 1 else [pairs[0], 0, pairs[0]]
        out.append("| %d | %.1f (%.1f..%.1f) | %.1f (%.1f..%.1f) | %+.1f (%+.1f..%+.1f) "
                   "| %.1f | %.1f | %s |" % (
                       p["round"] + 1, ex["median_us"], min(ex["block_median_us"]),
                       max(ex["block_median_us"]), stl["median_us"],
                       min(stl["block_median_us"]), max(stl["block_median_us"]),
                       statistics.median(pairs), q[0], q[2], ex["relay_cpu_us_per_conn"],
                       stl["relay_cpu_us_per_conn"],
                       "{:,}".format(p["steering"]["steered_ipv4"])))
    out.append("")
    line = ("**Steered − explicit, per connection (probe):** %+.1f µs, the median of %d "
            "block pairs over %d round(s) (95%% bootstrap interval of that median "
            "%+.1f..%+.1f µs; round medians %s µs), against a budget of %.0f µs. "
            "Verdict: %s." % (sm["median"], sm["pairs"], len(sm["rounds"]), sm["ci"][0],
                              sm["ci"][1], ", ".join("%+.1f" % d for d in sm["rounds"]),
                              STEER_BUDGET_US, probe_verdict(sm)))
    if sm["p10_rounds"]:
        line += (" Cross-check on each block's 10th percentile instead of its median (less "
                 "exposed to the relay waiting for a CPU): round medians %s µs." % ", ".join(
                     "%+.1f" % d for d in sm["p10_rounds"]))
    line += (" Blocks of one leg range widely (the table's min..max) because the machine's "
             "load moved during the round; the pairs cancel most of that, which is why the "
             "difference is read from them.")
    out.append(line)


def stream_label(kind, fmt):
    return "%s, %s" % ("COPY TO STDOUT" if kind == "copy" else "SELECT", fmt)


def stream_table(stream, out):
    out.append("| transfer | target | MiB received | MiB/s median (min..max) "
               "| relay CPU ns / byte | RSS idle MiB | RSS peak MiB | peak − idle MiB |")
    out.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, fmt in STREAM_KINDS:
        for t in ORDER:
            rows = by(stream, target=t, kind=kind, format=fmt)
            if not rows:
                continue
            mib = "%.1f" % (med([r["bytes"] for r in rows]) / 1048576.0)
            if t == "direct":
                relay = ["–"] * 4
            else:
                idle = min(r["rss_idle_kib"] for r in rows)
                peak = max(r["rss_peak_kib"] for r in rows)
                relay = [span([r["cpu_ns_per_byte"] for r in rows], "%.2f"),
                         "%.1f" % (idle / 1024.0), "%.1f" % (peak / 1024.0),
                         "%.1f" % ((peak - idle) / 1024.0)]
            out.append("| %s | %s | %s | %s | %s |" % (
                stream_label(kind, fmt), t, mib,
                span([r["mib_per_s"] for r in rows], "%.0f"), " | ".join(relay)))


def idle_table(idle, out):
    out.append("| target | sessions held | RSS idle MiB | RSS holding them MiB "
               "| KiB per session | RSS after closing MiB | time to open s |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for r in idle:
        out.append("| %s | %d of %d | %s | %s | %s | %s | %s |" % (
            r["target"], r["connections"], r["requested"],
            f(r["rss_idle_kib"] and r["rss_idle_kib"] / 1024.0, "%.1f"),
            f(r["rss_held_kib"] and r["rss_held_kib"] / 1024.0, "%.1f"),
            f(r.get("kib_per_conn"), "%.2f"),
            f(r["rss_after_close_kib"] and r["rss_after_close_kib"] / 1024.0, "%.1f"),
            f(r.get("login_s"), "%.1f")))


def noise(tps):
    """How far direct's TPS moved between rounds in the same cell: the run's own noise."""
    worst = None
    for key in sorted({(r["mode"], r["clients"]) for r in tps}):
        xs = [r["tps"] for r in by(tps, target="direct", mode=key[0], clients=key[1])]
        if len(xs) > 1 and min(xs) > 0:
            spread = max(xs) / min(xs) - 1.0
            if worst is None or spread > worst[0]:
                worst = (spread, key)
    return worst


# ------------------------------------------------------------------------------------------


def goal_table(out, title, rows):
    """A `## title` section: one table row per (goal, measured, verdict)."""
    out.append("## %s" % title)
    out.append("")
    out.append("| goal | measured | verdict |")
    out.append("|---|---|---|")
    for g in rows:
        out.append("| %s | %s | %s |" % g)
    out.append("")


def write(res, path):
    env, s = res.get("env", {}), res["settings"]
    for r in res["stream"]:
        r.setdefault("format", "text")  # results of runs before binary transfers existed
    out = []
    out.append("# pgwarden benchmarks")
    out.append("")
    out.append("Generated by `make bench` (bench/run.py, bench/report.py) on %s at git %s. "
               "Every number below was measured by that run; to refresh, run `make bench` "
               "and commit the file it writes. Raw per-run numbers: "
               "`$(BUILD)/bench/results.json`." % (env.get("date_utc", "?"), env.get("git_head", "?")))
    if s.get("quick"):
        out.append("")
        out.append("**Quick mode (BENCH_QUICK=1): one short round, for development only; "
                   "these numbers are too noisy to quote.**")
    out.append("")
    out.append("## Machine and noise")
    out.append("")
    vers = env.get("versions", {})
    out.append("- Machine: %s CPUs (%s), %s MiB RAM, kernel %s, %s" % (
        env.get("nproc"), env.get("cpu_model"), env.get("mem_total_mib"), env.get("kernel"),
        env.get("os")))
    out.append("- %s; PgBouncer: %s; HAProxy: %s; pgwardend: %s" % (
        env.get("postgres"), vers.get("pgbouncer", "not run"), vers.get("haproxy", "not run"),
        vers.get("pgwarden") or ("built from git %s" % env.get("git_head")
                                 if "pgwarden" in vers else "not run")))
    if env.get("baseline_rev"):
        out.append("- baseline: pgwardend built from git %s, run beside this build with the "
                   "same arguments and the same worker count (its own default was one per "
                   "CPU)" % env["baseline_rev"])
    out.append("- Server settings: %s" % ", ".join(
        "%s=%s" % kv for kv in sorted(env.get("pg_settings", {}).items())))
    la_b, la_a = env.get("loadavg_before"), env.get("loadavg_after")
    out.append("- Load average (1/5/15 min) before the run: %s; after: %s. The machine is "
               "shared with other engineers' builds and tests, and these clients, "
               "PostgreSQL and the relay all share its %s CPUs." % (
                   " / ".join("%.2f" % x for x in la_b) if la_b else "?",
                   " / ".join("%.2f" % x for x in la_a) if la_a else "?", env.get("nproc")))
    loads = [x["loadavg"][0] for x in res.get("load", [])]
    if loads:
        out.append("- 1-minute load average at the start of each round: %.1f to %.1f "
                   "(%d samples; above %s means something else wanted the CPUs too)." % (
                       min(loads), max(loads), len(loads), env.get("nproc")))
    n = noise(res["tps"])
    if n:
        out.append("- Noise: direct's own TPS moved by up to %.0f%% between rounds (%s -c %d)."
                   " Differences smaller than that between targets are not findings." % (
                       n[0] * 100, n[1][0], n[1][1]))
    out.append("- Run: %d round(s), %d s per pgbench cell, scale %d, %s-row streams (%d "
               "round(s)), %s idle sessions; took %s s." % (
                   s["rounds"], s["seconds"], s["scale"], "{:,}".format(s["stream_rows"]),
                   s.get("stream_rounds", s["rounds"]),
                                           "{:,}".format(s["idle_conns"]),
                                           env.get("duration_s", "?")))
    out.append("")

    goal_table(out, "Goals (issue #2) against this run", goals(res))
    if n:
        out.append("Verdicts compare medians exactly as measured. Where a verdict turns on a "
                   "margin smaller than the rounds' own spread (direct's TPS moved by up to "
                   "%.0f%% between rounds; CPU figures show their rounds' min..max in "
                   "brackets), the run cannot tell the targets apart there; rerun on a "
                   "quiet machine before acting on it." % (n[0] * 100))
        out.append("")

    layers = layer_goals(res)
    if layers:
        goal_table(out, "Goals (issues #10, #11, #12) against this run", layers)
        out.append("Ratios are per round (both targets measured minutes apart in the same "
                   "round), the median over rounds judged; every round's ratio is shown. "
                   "`tpcb-` modes run pgbench's tpcb-like script, the others select-only.")
        out.append("")

    if any(r["target"] in ("pgwarden-audit-batch", "pgwarden-tls", "pgbouncer-tls")
           for r in res["tps"]):
        goal_table(out, "Goals (issue #15) against this run", issue15_goals(res))
        out.append("Ratios are per round (both targets measured minutes apart in the same "
                   "round), the median over rounds judged; every round's ratio is shown.")
        out.append("")

    mg = mask_goals(res)
    if mg:
        goal_table(out, "Goals (issue #13, masking) against this run", mg)
        out.append("**pgwarden-mask** masks `%s` with `partial-last-4` for the bench role; "
                   "**pgwarden** relays the same transfer with no policy. Ratios are per "
                   "round (both measured minutes apart in the same round), the median over "
                   "rounds judged; every round's ratio is shown. Every transfer's sampled "
                   "rows were checked (ids intact; payloads the md5 of the id, or through "
                   "pgwarden-mask its last four characters after 28 `X`), so no number here "
                   "measures a relay that did not mask." % "bench_stream.payload")
        out.append("")

    bl = baseline_goals(res)
    if bl:
        goal_table(out, "Against the baseline build (issue #8)", bl)

    if res.get("connect") or res.get("probe"):
        goal_table(out, "Goal (issue #3) against this run", steer_goals(res))
        out.append(
            "pgbench -C: *met* when every round is within the %.0f µs budget and the rounds "
            "agree to within it, *not met* when even the lowest round exceeds the budget by "
            "more than the rounds' spread and direct's own round-to-round spread, *not "
            "resolved* otherwise: the run's noise is larger than what it is asked to tell "
            "apart. Probe: *met* when the 95%% interval of the median pair difference and "
            "every round's median are within the budget, *not met* when the whole interval "
            "is above it, *not resolved* otherwise. Details under section 3." % STEER_BUDGET_US)
        out.append("")

    if res.get("unavailable") or res.get("incidents") or res.get("not_in_section"):
        out.append("## Problems during the run")
        out.append("")
        for name, why in sorted(res.get("unavailable", {}).items()):
            out.append("- **%s not measured**: %s" % (name, why.strip().splitlines()[0]))
        for sec, why in sorted(res.get("not_in_section", {}).items()):
            out.append("- **steered not measured in section %s**: %s" % (sec, why))
        for inc in res.get("incidents", []):
            out.append("- **%s**: %s" % (inc["target"], inc["scenario"].strip()
                                         .replace("\n", " / ")))
            tail = (inc.get("log_tail") or "").strip()
            if tail:
                out.append("")
                out.append("  ```")
                out.extend("  " + line for line in tail.splitlines()[-8:])
                out.append("  ```")
        out.append("")

    out.append("## Method")
    out.append("")
    out.append(
        "A throwaway PostgreSQL 15 cluster (127.0.0.1 only, scram-sha-256, fsync on) is "
        "initialised with `pgbench -i -s %d`. In front of it: **pgwarden** (`pgwardend` in "
        "explicit mode, default worker count: one per two CPUs; passthrough authentication; "
        "**pgwarden-wcpu** is the same with one worker per CPU, the default before stop 26), "
        "**PgBouncer** "
        "(session mode, SCRAM with the verifier from pg_authid in its userlist, "
        "max_client_conn 2000, default_pool_size 1050; its pool keeps the server backends "
        "that the warm-up and earlier rounds opened, so pgbench meets warm backends), "
        "**pgbouncer-fresh** (the same with server_lifetime 0: a new PostgreSQL backend per "
        "client session, as direct, HAProxy and pgwardend give; a new backend first faults in "
        "the shared-buffer pages it touches, which the server pays per transaction, so "
        "this is the comparison that tells the relay's cost from the pool's) and **HAProxy** "
        "(mode tcp, one "
        "backend; no protocol awareness, the floor for any relay). Clients use plaintext "
        "(sslmode=disable) so all these targets carry the same bytes. **pgwarden-policy** "
        "is pgwardend with a policy of ten rules, the pgbench role's last, admitting it to "
        "read and write with relation allow/deny lists and `@dangerous` functions denied, "
        "and no audit trail (bench/targets.py BENCH_POLICY). **pgwarden-audit-MODE** is the "
        "same policy with `audit: statement` and the signed audit trail on the root disk "
        "with `audit.fsync MODE`. In section 3, PgBouncer keeps its server connections "
        "between client sessions (session pooling), while pgwardend in passthrough logs in "
        "to the server for every client session: its connect rows include a server login "
        "that PgBouncer's do not. **pgwarden-reuse** logs clients in as PgBouncer does "
        "here: `auth.mode terminate` with the same verifier in its users file, and "
        "`server_reuse.max_idle 1050` and `server_reuse.idle_timeout 10m` (PgBouncer's "
        "server_idle_timeout), so it too keeps server connections between client sessions "
        "(reset with DISCARD ALL) and its pgbench meets warm backends; "
        "**pgwarden-reuse-tls** is the same terminating the client's TLS as pgwarden-tls "
        "does. **pgbouncer-fresh-tls** is pgbouncer-tls with "
        "server_lifetime 0, so it too logs in to a new backend per session (in section 1, "
        "read by its steady part, as pgbouncer-fresh). **pgwarden-tls** and "
        "**pgbouncer-tls** terminate the client's TLS "
        "(pgwardend `tls.client.mode prefer`, PgBouncer `client_tls_sslmode require`, each "
        "with a self-signed P-256 certificate generated for the run) and their clients use "
        "sslmode=require; their upstream leg is plaintext like the others'. p50 / p99 are "
        "per-transaction latencies from `pgbench -l`; *added* is the target's minus "
        "direct's in the same round, median (min..max) over rounds. Relay CPU is "
        "the CPU time of the relay process (all threads; %s), sampled every "
        "100 ms during each run; per transaction it counts the steady part, from the moment "
        "every client had completed a transaction to the end, against the transactions "
        "`pgbench -l` logged in it. The logins before it (and the server logins a relay "
        "without a pool makes per client) are section 3's measure; results.json keeps the "
        "whole run's figure too (`cpu_ms_per_1k_tx_with_logins`), and the steady part's "
        "split into user space and kernel (`cpu_user_ms_per_1k_tx`, "
        "`cpu_kernel_ms_per_1k_tx`: the share of /proc/PID/stat's user and system ticks, "
        "10 ms each, over the same part). Direct has no relay, so no relay CPU." % (
            s["scale"], cpu_clock(res)))
    out.append("")
    out.append(
        "Rounds are interleaved: in round r every cell is run for every target, targets in "
        "an order that rotates with the round and the cell, so slow minutes on the shared "
        "machine fall on all targets alike. A three-second 64-client warm-up per target precedes "
        "round 1 (PostgreSQL's cache, PgBouncer's server pool). Tables give the median over rounds "
        "with min..max; *ratio to direct* is the median of the per-round ratios.")
    out.append("")

    out.append("## 1. Select-only throughput (pgbench -S)")
    out.append("")
    out.append("`pgbench -n -S -M MODE -c C -j J -T %d` (J = 1 for one client, else %s). "
               "Mean latency is pgbench's `latency average`." % (
                   s["seconds"], env.get("nproc")))
    out.append("")
    tps_table(res["tps"], out)
    out.append("")

    out.append("## 2. Streaming")
    out.append("")
    out.append(
        "The bench creates `bench_stream (id int, payload text)` holding %d rows "
        "`(g, md5(g::text))` (52-byte DataRows). One session per transfer runs "
        "`COPY bench_stream (id, payload) TO STDOUT`, in text or `(FORMAT binary)`, or "
        "`SELECT id, payload FROM bench_stream`, in text (a simple Query) or binary (the "
        "extended protocol, Bind asking for binary result columns), through the target. The "
        "client (bench/pgwire.py) counts every byte it receives after sending the statement "
        "up to ReadyForQuery, and keeps a sample of the rows (the first 200 and a few hundred "
        "spread over the rest), which the bench checks against the table's contents; CPU per byte is the relay's CPU during the transfer divided by that "
        "count. RSS is sampled from /proc/PID/status every 100 ms during the transfer; idle is "
        "the lowest RSS before any transfer, peak the highest seen during any. The relay's CPU "
        "is read from %s. How far the relay keeps ahead of the server sets the size of its "
        "reads, and with it the system calls per byte, so CPU per byte moves with the "
        "machine's load; the median of the rounds is the number to read." % (
            s["stream_rows"], cpu_clock(res)))
    out.append("")
    stream_table(res["stream"], out)
    out.append("")

    out.append("## 3. Connection setup (pgbench -C)")
    out.append("")
    out.append(
        "`pgbench -n -S -M simple -C -c 8 -j 8 -T %d`: every transaction opens, logs in "
        "(SCRAM) and closes a session, so sessions/s is the TPS. A thread per client: "
        "pgbench connects with a blocking call, so with clients sharing a thread only as "
        "many log in at a time as there are threads, and the rate becomes the login latency "
        "of that many, in which a pooler that answers the login before its new server "
        "backend has logged in (PgBouncer; that wait then falls in the first query) looks "
        "faster than one whose login is the server's. Mean connection time is "
        "pgbench's `average connection time`. **pgwarden** is explicit mode (clients dial "
        "its port); HAProxy is the floor for what any TCP relay pays per session." % (
            s["seconds"]))
    out.append("")
    if by(res["connect"], target="steered"):
        out.append(
            "**steered** is a second pgwardend (same flags as pgwarden, its own listener) "
            "reached transparently: pgbench runs inside a throwaway cgroup v2 directory the "
            "bench creates, dials PostgreSQL's own address and port, and the BPF hooks "
            "(`pgwardenctl attach --port PG --relay 127.0.0.1:RELAY --cgroup DIR --instance "
            "NAME`, an instance of the bench's own) rewrite each connect() to the relay, "
            "which looks the origin up and connects to the address dialled. Only the "
            "bench's pgbench is in that cgroup, never PostgreSQL or the other relays. "
            "After the section the bench detaches, removes the cgroup and stops the relay.")
    elif "steered" in res.get("unavailable", {}):
        out.append("**steered** was not measured: %s" % res["unavailable"]["steered"]
                   .strip().splitlines()[0])
    out.append("")
    connect_table(res["connect"], out)
    tls_handshake_table(res.get("tls_handshake", []), out)
    steered_lines(res, out)
    probe_table(res, out)
    out.append("")

    out.append("## 4. Idle sessions")
    out.append("")
    out.append(
        "A psycopg (libpq) client opens %s sessions through the relay, logs each in, runs one "
        "query on the first and the last, and holds them idle for 2 s. KiB per session = "
        "(RSS holding them − RSS idle) / sessions. PgBouncer in session mode holds a server "
        "connection per client, as pgwarden does. The -tls targets' clients use "
        "sslmode=require, so their figure is a whole idle session with its TLS state; each "
        "PgBouncer is stopped once measured, to give back the server connections its pool "
        "keeps." % "{:,}".format(s["idle_conns"]))
    out.append("")
    idle_table(res["idle"], out)
    out.append("")

    # Profiles and levers measured apart from the run: kept by hand, copied as they are.
    with open(LEVERS) as fh:
        out.extend(fh.read().rstrip("\n").split("\n"))
    out.append("")

    with open(path, "w") as fh:
        fh.write("\n".join(out))
