#!/usr/bin/python3
"""Turns the bench JSON files (Google Benchmark, one per bench binary) into Markdown tables.

Usage:
  report.py RESULTS_DIR                         write RESULTS_DIR/report.md (and print it)
  report.py RESULTS_DIR --summary               print only the header, the targets and the
                                                headline table (report.md is still complete)
  report.py RESULTS_DIR --update-readme README  also replace the text between
                                                <!-- results:begin --> and <!-- results:end -->
                                                with that summary

RESULTS_DIR holds <bench>.json files and build-info.json (written by bench/CMakeLists.txt).
Run names are <bench>/<queue>/<param>[/<more params>]; Google Benchmark's own suffixes
(manual_time, real_time, iterations:N, ...) are dropped. One table per bench and trailing
params; one row per queue, one column per first param. Each cell is the median over the
repetitions (with the coefficient of variation when there were several); the rows under a
table give, for each tether queue, its figure divided by the best peer's in that column.
The headline table has one row per table column: tether's best queue against the best peer.

Exit status: 0 when every run produced a figure; 1 when a run failed its checks, a file
could not be read, or there were no results; 2 on bad usage (e.g. README markers missing).
Standard library only.
"""

import argparse
import collections
import datetime
import json
import os
import platform
import re
import statistics
import sys

BEGIN_MARKER = "<!-- results:begin -->"
END_MARKER = "<!-- results:end -->"

# Name parts Google Benchmark appends; they say how a run was timed, not what it measured.
RUN_SUFFIX = re.compile(r"^(manual_time|real_time|process_time|iterations:\d+|repeats:\d+|threads:\d+|min_time:.*)$")

# What each bench measures, for the table captions (benches not listed get none).
DESCRIPTIONS = {
    "mpsc": "Throughput, one consumer and N producers; items per second (higher is better).",
    "cost": "One thread alone pushes 4,096 items, then takes them all (in batches where the queue can): "
            "the cost of one `push` and one `pop` per item, with no cache line crossing cores (lower is better).",
    "pingpong": "Round trip between two threads through two queues; time per round trip (lower is better).",
    "machine": "One cache line handed between two threads and back (an atomic, both threads spinning), "
               "sampled among the other runs of its bench: the cross-core speed every queue's figures rest on "
               "(lower is faster; min and max over the repetitions in brackets). On a virtual machine it can "
               "change several-fold for minutes at a time.",
    "wakeup": "A consumer parked in pop(): `latency` from the push to the consumer running "
              "(lower is better; p50/p99 in brackets), `idle_cpu` the CPU it burns while parked, "
              "in ms of CPU per s (lower is better); tether's `cancel_latency` from `request_stop()` to "
              "a parked `pop(stop_token)` returning cancelled (lower is better).",
}

# Units that say more than the metric's default.
UNITS = {"machine": "time per round trip; one column per bench binary",
         "cost": "time per item"}

# The targets of the issue, checked against the figures. Each: (text, check) where check
# returns (status, detail); status is "met", "not met" or "not measured".


def _ratio_text(r):
    return "%.2f×" % r


UNBOUNDED = ("tether", "tether_bulk", "tether_producer", "tether_producer_bulk")


def best_against_peers(values):
    """values: queue -> items/s. Returns (ours, peer, ratio): tether's best unbounded queue and
    the best peer as (value, queue), and ours ÷ peer; None for what is missing."""
    ours = max(((v, q) for q, v in values.items() if q in UNBOUNDED), default=None)
    peer = max(((v, q) for q, v in values.items() if not is_tether(q)), default=None)
    return ours, peer, (ours[0] / peer[0] if ours and peer and peer[0] else None)


def target_unbounded(tables, speeds):
    worst = None
    for key, table in tables.items():
        if key[0] != "mpsc":
            continue
        for col in table["columns"]:
            _, _, r = best_against_peers({q: c["value"] for (q, c2), c in table["cells"].items() if c2 == col})
            if r is None:
                continue
            where = "/".join((key[0],) + (col,) + key[1])
            if worst is None or r < worst[0]:
                worst = (r, where)
    if worst is None:
        return "not measured", "no mpsc figures for tether and a peer"
    lowest = [worst[0]]
    detail = "lowest: %s at %s" % (_ratio_text(worst[0]), worst[1])
    # The same comparison within each group of repetitions that ran at one cross-core speed.
    for group in speeds.get("groups", []):
        cells = [(c["ratio"], "/".join(("mpsc", column) + rest))
                 for (rest, name, column), c in speeds["cells"].items()
                 if name == group["name"] and c["ratio"] is not None]
        if cells:
            r, where = min(cells)
            lowest.append(r)
            detail += "; %s spells: %s at %s" % (group["name"], _ratio_text(r), where)
    status = "met" if min(lowest) >= 1.0 else "not met"
    return status, detail + " (aim 1.5×: %s)" % ("reached" if min(lowest) >= 1.5 else "not yet")


def target_bounded(tables, _speeds):
    worst = None
    for key, table in tables.items():
        if key[0] != "mpsc":
            continue
        for col in table["columns"]:
            ours = table["cells"].get(("tether_bounded", col))
            theirs = table["cells"].get(("atomic_queue", col))
            if not ours or not theirs:
                continue
            r = ours["value"] / theirs["value"]
            where = "/".join((key[0],) + (col,) + key[1])
            if worst is None or r < worst[0]:
                worst = (r, where)
    if worst is None:
        return "not measured", "no mpsc figures for tether_bounded and atomic_queue"
    return ("met" if worst[0] >= 1.0 else "not met"), "lowest: %s at %s" % (_ratio_text(worst[0]), worst[1])


def target_pingpong(tables, _speeds):
    table = tables.get(("pingpong", ()))
    if not table:
        return "not measured", "no pingpong figures"
    ours = table["cells"].get(("tether", "blocking"))
    theirs = table["cells"].get(("moodycamel_blocking", "blocking"))
    if not ours or not theirs:
        return "not measured", "needs pingpong/tether/blocking and pingpong/moodycamel_blocking/blocking"
    r = ours["value"] / theirs["value"]
    return ("met" if r <= 1.0 else "not met"), "tether %s vs moodycamel_blocking %s: %s" % (
        format_value(ours), format_value(theirs), _ratio_text(r))


def target_idle(tables, _speeds):
    table = tables.get(("wakeup", ()))
    cells = []
    if table:
        cells = [(q, c) for (q, col), c in table["cells"].items() if col == "idle_cpu" and is_tether(q)]
    if not cells:
        return "not measured", "no wakeup/tether*/idle_cpu figures"
    q, worst = max(cells, key=lambda qc: qc[1]["value"])
    return ("met" if worst["value"] < 1.0 else "not met"), "highest: %s ms CPU per s (%s)" % (
        "%.3f" % worst["value"], q)


TARGETS = [
    # tether's best unbounded queue (plain push or producer handle; try_pop or try_pop_bulk)
    # against every peer's best (moodycamel likewise with or without tokens).
    ("Unbounded tether ≥ 1.0× the best peer at every producer count (aim 1.5×), overall and "
     "within each cross-core speed", target_unbounded),
    ("Bounded tether ≥ 1.0× atomic_queue at every producer count", target_bounded),
    ("Blocking ping-pong round trip ≤ moodycamel_blocking", target_pingpong),
    ("A parked consumer burns < 1 ms of CPU per s", target_idle),
]


def is_tether(queue):
    return queue == "tether" or queue.startswith("tether_")


# ---- reading ---------------------------------------------------------------------------

def base_name(run):
    name = run.get("run_name") or run.get("name", "")
    return "/".join(p for p in name.split("/") if not RUN_SUFFIX.match(p))


def metric_of(run):
    """(key, unit, higher_is_better, value) of a run's headline figure."""
    if "items_per_second" in run:
        return "items_per_second", "items/s", True, run["items_per_second"]
    if "cpu_ms_per_s" in run:
        return "cpu_ms_per_s", "ms CPU/s", False, run["cpu_ms_per_s"]
    scale = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}.get(run.get("time_unit", "ns"), 1.0)
    return "real_time", "time per iteration", False, run.get("real_time", 0.0) * scale


def load_results(results_dir):
    """Returns (runs, contexts, problems). runs: base name -> dict of figures."""
    grouped = {}
    contexts = []
    problems = []
    files = sorted(f for f in os.listdir(results_dir) if f.endswith(".json") and f != "build-info.json")
    for file_index, fname in enumerate(files):
        path = os.path.join(results_dir, fname)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            problems.append("%s could not be read (%s): the run was cut short or failed to start" % (fname, e))
            continue
        contexts.append((fname, data.get("context", {})))
        for run in data.get("benchmarks", []):
            name = base_name(run)
            # Registration order (the JSON lists interleaved repetitions in the order they ran).
            order = (file_index, run.get("family_index", len(grouped)), run.get("per_family_instance_index", 0))
            g = grouped.setdefault(name, {"iterations": [], "aggregates": {}, "errors": [], "order": order})
            if run.get("error_occurred"):
                g["errors"].append(run.get("error_message", "error"))
            elif run.get("run_type") == "aggregate":
                g["aggregates"][run.get("aggregate_name", "")] = run
            else:
                g["iterations"].append(run)

    runs = {}
    for name, g in grouped.items():
        if g["errors"]:
            msg = g["errors"][0]
            problems.append(msg if msg.startswith(name) else "%s: %s" % (name, msg))
            continue
        sample = g["aggregates"].get("median") or g["aggregates"].get("mean") or (g["iterations"] or [None])[0]
        if sample is None:
            continue
        key, unit, higher, _ = metric_of(sample)
        if "median" in g["aggregates"]:
            value = metric_of(g["aggregates"]["median"])[3]
        elif g["iterations"]:
            value = statistics.median(metric_of(r)[3] for r in g["iterations"])
        else:
            value = metric_of(sample)[3]
        cv = None
        if "cv" in g["aggregates"]:
            cv = metric_of(g["aggregates"]["cv"])[3] if key != "real_time" else g["aggregates"]["cv"].get("real_time")
        elif "stddev" in g["aggregates"] and "mean" in g["aggregates"]:
            mean = metric_of(g["aggregates"]["mean"])[3]
            if mean:
                sd = g["aggregates"]["stddev"]
                cv = (sd.get(key, 0.0) if key != "real_time" else sd.get("real_time", 0.0)) / (
                    mean if key != "real_time" else g["aggregates"]["mean"].get("real_time", 1.0))
        elif len(g["iterations"]) > 1:
            vals = [metric_of(r)[3] for r in g["iterations"]]
            mean = statistics.mean(vals)
            cv = statistics.stdev(vals) / mean if mean else None
        extra = {}
        for k in ("p50_ns", "p99_ns"):
            if k in sample:
                extra[k] = (g["aggregates"].get("median") or sample).get(k)
        for k in ("min", "max"):  # custom statistics (the cross-core probe)
            if k in g["aggregates"]:
                extra[k] = metric_of(g["aggregates"][k])[3]
        # Repetitions that timed the cross-core round trip before and after (mpsc_bench):
        # (figure, ns at the start, ns at the end), for the comparison by machine speed.
        samples = [(metric_of(r)[3], r["cross_core_ns_start"], r["cross_core_ns_end"])
                   for r in g["iterations"] if "cross_core_ns_start" in r and "cross_core_ns_end" in r]
        runs[name] = {"metric": key, "unit": unit, "higher": higher, "value": value, "cv": cv,
                      "label": sample.get("label", ""), "extra": extra, "order": g["order"],
                      "samples": samples}
    return runs, contexts, problems


def build_tables(runs):
    """(bench, trailing params) -> {columns, queues, cells{(queue, column): run}}."""
    tables = {}
    for name, run in sorted(runs.items(), key=lambda kv: kv[1]["order"]):
        parts = name.split("/")
        if len(parts) < 2:
            continue
        bench, queue = parts[0], parts[1]
        column = parts[2] if len(parts) > 2 else ""
        key = (bench, tuple(parts[3:]))
        t = tables.setdefault(key, {"columns": [], "queues": [], "cells": {}})
        if column not in t["columns"]:
            t["columns"].append(column)
        if queue not in t["queues"]:
            t["queues"].append(queue)
        t["cells"][(queue, column)] = run
    return tables


# ---- by cross-core speed ----------------------------------------------------------------

# The probe values of a run split into two speeds where sorted neighbours differ by at least
# this factor, each side holding at least this share of the values; a queue's median in one
# speed needs at least MIN_SAMPLES repetitions at that speed.
SPEED_GAP = 2.0
SPEED_MIN_SHARE = 0.1
MIN_SAMPLES = 3


def split_by_speed(tables):
    """Groups the mpsc repetitions by the cross-core speed they ran at (their probes at start
    and end). Returns {} when the probes show one speed, else {"groups": [...], "rows": [...],
    "columns": [...], "cells": {...}, "left_out": n}: per group its name, range and count; per
    (payload, group, column) tether's best and the best peer, each the median of its
    repetitions at that speed, and their ratio."""
    runs = [run for key, t in tables.items() if key[0] == "mpsc" for run in t["cells"].values()]
    values = sorted(v for run in runs for s in run.get("samples", []) for v in s[1:3] if v > 0)
    n = len(values)
    split = None
    for i in range(1, n):
        if min(i, n - i) < SPEED_MIN_SHARE * n or values[i] < SPEED_GAP * values[i - 1]:
            continue
        if split is None or values[i] / values[i - 1] > values[split] / values[split - 1]:
            split = i
    if split is None:
        return {}
    cut = (values[split - 1] * values[split]) ** 0.5

    def group_of(sample):
        fast = (sample[1] < cut, sample[2] < cut)
        return "fast" if all(fast) else "slow" if not any(fast) else None

    counts = collections.Counter(group_of(s) for run in runs for s in run.get("samples", []))
    groups = [{"name": "fast", "low": values[0], "high": values[split - 1], "count": counts["fast"]},
              {"name": "slow", "low": values[split], "high": values[-1], "count": counts["slow"]}]

    rows, columns, cells = [], [], {}
    for key, t in tables.items():
        if key[0] != "mpsc":
            continue
        for g in groups:
            rows.append((key[1], g["name"]))
            for col in t["columns"]:
                if col not in columns:
                    columns.append(col)
                medians = {}
                for q in t["queues"]:
                    run = t["cells"].get((q, col), {})
                    vals = [s[0] for s in run.get("samples", []) if group_of(s) == g["name"]]
                    if len(vals) >= MIN_SAMPLES:
                        medians[q] = statistics.median(vals)
                ours, peer, ratio = best_against_peers(medians)
                cells[(key[1], g["name"], col)] = {"ours": ours, "peer": peer, "ratio": ratio}
    return {"groups": groups, "rows": rows, "columns": columns, "cells": cells, "left_out": counts[None]}


def render_speeds(speeds):
    if not speeds:
        return []
    groups = speeds["groups"]
    lines = ["### mpsc — by cross-core speed", "",
             "Every mpsc repetition timed the cross-core round trip before and after its rounds. In this run "
             "the probes fell into two speeds: %s. A repetition with one probe of each is left out (%d). "
             "Per speed and column: tether's best unbounded queue ÷ the best peer, each the median of its "
             "repetitions at that speed (at least %d), so that queues are compared at the same machine speed." % (
                 " and ".join("%s, %s–%s (%d repetitions)" % (g["name"], format_ns(g["low"]), format_ns(g["high"]),
                                                              g["count"]) for g in groups),
                 speeds["left_out"], MIN_SAMPLES), ""]
    columns = speeds["columns"]
    lines.append("| payload | speed | " + " | ".join(columns) + " |")
    lines.append("|---|---|" + "---:|" * len(columns))
    for rest, group in speeds["rows"]:
        out = []
        for col in columns:
            c = speeds["cells"].get((rest, group, col))
            if not c or c["ratio"] is None:
                out.append("—")
                continue
            out.append("**%s** (%s %s ÷ %s %s)" % (
                _ratio_text(c["ratio"]), c["ours"][1], format_value({"metric": "items_per_second", "value": c["ours"][0]}),
                c["peer"][1], format_value({"metric": "items_per_second", "value": c["peer"][0]})))
        lines.append("| %s | %s | %s |" % ("/".join(rest) or "uint64_t", group, " | ".join(out)))
    lines += ["", "Unit: ratio of items/s (above 1.00× means tether is faster); in brackets the two medians.", ""]
    return lines


# ---- writing ---------------------------------------------------------------------------

def format_value(run):
    v = run["value"]
    if run["metric"] == "items_per_second":
        text = "%.1f M" % (v / 1e6) if v >= 1e6 else "%.1f k" % (v / 1e3) if v >= 1e3 else "%.0f" % v
    elif run["metric"] == "cpu_ms_per_s":
        text = "%.3f" % v
    else:
        text = format_ns(v)
    return text


def format_ns(v):
    if v < 10:
        return "%.2f ns" % v
    if v < 100:
        return "%.1f ns" % v
    if v < 1e3:
        return "%.0f ns" % v
    if v < 1e6:
        return "%.1f µs" % (v / 1e3)
    return "%.2f ms" % (v / 1e6)


def format_cell(run):
    if not run:
        return "—"
    text = format_value(run)
    if run["cv"] is not None:
        text += " ±%.0f%%" % (100.0 * run["cv"])
    extra = run["extra"]
    if "p50_ns" in extra:
        text += " (p50 %s, p99 %s)" % (format_ns(extra.get("p50_ns", 0.0)), format_ns(extra.get("p99_ns", 0.0)))
    if "min" in extra and "max" in extra:
        text += " (min %s, max %s)" % (format_value(dict(run, value=extra["min"])),
                                       format_value(dict(run, value=extra["max"])))
    return text


def best(cells, higher):
    if not cells:
        return None
    return max(cells, key=lambda qc: qc[1]["value"] if higher else -qc[1]["value"])


def render_table(key, table):
    bench, rest = key
    title = bench + ("" if not rest else " — " + "/".join(rest))
    lines = ["### %s" % title, ""]
    if bench in DESCRIPTIONS:
        lines += [DESCRIPTIONS[bench], ""]
    units = {c: next((r["unit"] for (q, col), r in table["cells"].items() if col == c), "") for c in table["columns"]}
    header = ["queue"] + [c or "value" for c in table["columns"]]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * len(table["columns"])) + "|")
    ours = [q for q in table["queues"] if is_tether(q)]
    peers = [q for q in table["queues"] if not is_tether(q)]
    for q in ours + peers:
        name = "**%s**" % q if is_tether(q) else q
        label = next((r["label"] for (qq, _), r in table["cells"].items() if qq == q and r["label"]), "")
        if label == "bounded":
            name += " (bounded)"
        lines.append("| " + " | ".join([name] + [format_cell(table["cells"].get((q, c))) for c in table["columns"]]) + " |")

    # Ratio rows: each tether queue against the best peer of its column.
    best_row = ["best peer"]
    ratio_rows = {q: ["**%s ÷ best peer**" % q] for q in ours}
    bounded_rows = {q: ["**%s ÷ best bounded peer**" % q] for q in ours
                    if any(r["label"] == "bounded" for (qq, _), r in table["cells"].items() if qq == q)}
    for c in table["columns"]:
        higher = next((r["higher"] for (q, col), r in table["cells"].items() if col == c), True)
        peer_cells = [(q, table["cells"][(q, c)]) for q in peers if (q, c) in table["cells"]]
        top = best(peer_cells, higher)
        best_row.append(top[0] if top else "—")
        top_bounded = best([qc for qc in peer_cells if qc[1]["label"] == "bounded"], higher)
        for q in ours:
            mine = table["cells"].get((q, c))
            ratio_rows[q].append(_ratio_text(mine["value"] / top[1]["value"]) if mine and top and top[1]["value"] else "—")
            if q in bounded_rows:
                bounded_rows[q].append(_ratio_text(mine["value"] / top_bounded[1]["value"])
                                       if mine and top_bounded and top_bounded[1]["value"] else "—")
    if ours and peers:
        lines.append("| " + " | ".join(best_row) + " |")
        for q in ours:
            lines.append("| " + " | ".join(ratio_rows[q]) + " |")
            if q in bounded_rows:
                lines.append("| " + " | ".join(bounded_rows[q]) + " |")
    lines.append("")
    unit_text = ", ".join("%s: %s" % (c or "value", units[c]) for c in table["columns"]) if len(set(units.values())) > 1 \
        else (next(iter(units.values()), ""))
    unit_text = UNITS.get(bench, unit_text)
    text = "Unit: %s. Cells: median over the repetitions ± coefficient of variation." % unit_text
    if ours and peers:
        text += (" Ratios are tether ÷ best peer in the same column: for items/s above 1.00× means tether "
                 "is faster; for times and CPU below 1.00× means tether is better.")
    lines.append(text)
    lines.append("")
    return lines


def render_headline(tables):
    """One row per column of every table that has tether queues and peers: tether's best
    queue against the best peer of that column; then the cross-core speed the run saw."""
    lines = ["### Headline", "",
             "| workload | tether's best | best peer | tether ÷ peer | better |", "|---|---|---|---:|---|"]
    for (bench, rest), table in tables.items():
        for c in table["columns"]:
            cells = [(q, table["cells"][(q, c)]) for q in table["queues"] if (q, c) in table["cells"]]
            higher = next((r["higher"] for _, r in cells), True)
            ours = best([qc for qc in cells if is_tether(qc[0])], higher)
            peer = best([qc for qc in cells if not is_tether(qc[0])], higher)
            if not ours or not peer or not peer[1]["value"]:
                continue
            where = "/".join([bench] + ([c] if c else []) + list(rest))
            lines.append("| %s | %s %s | %s %s | %s | %s |" % (
                where, ours[0], format_value(ours[1]), peer[0], format_value(peer[1]),
                _ratio_text(ours[1]["value"] / peer[1]["value"]), "higher" if higher else "lower"))
    lines.append("")
    probe = tables.get(("machine", ()))
    if probe:
        text = "; ".join("%s %s" % (c, format_cell(r)) for (q, c), r in probe["cells"].items())
        lines += ["Cross-core round trip during the run (median, min and max over the repetitions): %s. "
                  "Figures from runs at different cross-core speeds do not compare." % text, ""]
    return lines


def read_git_commit(source_dir):
    """The checked-out commit, read from .git without running git; None if unknown."""
    if not source_dir:
        return None
    git = os.path.join(source_dir, ".git")
    try:
        if os.path.isfile(git):  # a worktree: "gitdir: <path>"
            with open(git, encoding="utf-8") as f:
                line = f.read().strip()
            if not line.startswith("gitdir:"):
                return None
            git = os.path.join(source_dir, line[len("gitdir:"):].strip())
        with open(os.path.join(git, "HEAD"), encoding="utf-8") as f:
            head = f.read().strip()
        if not head.startswith("ref:"):
            return head
        ref = head[len("ref:"):].strip()
        for base in (git, os.path.join(git, "..", "..")):  # worktrees keep refs in the main dir
            path = os.path.join(base, ref)
            if os.path.isfile(path):
                with open(path, encoding="utf-8") as f:
                    return "%s (%s)" % (f.read().strip(), ref.rsplit("/", 1)[-1])
            packed = os.path.join(base, "packed-refs")
            if os.path.isfile(packed):
                with open(packed, encoding="utf-8") as f:
                    for line in f:
                        parts = line.split()
                        if len(parts) == 2 and parts[1] == ref:
                            return "%s (%s)" % (parts[0], ref.rsplit("/", 1)[-1])
        return "%s (no commit yet)" % ref
    except OSError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render_header(info, contexts):
    ctx = contexts[0][1] if contexts else {}
    date = ctx.get("date") or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    cpus = ctx.get("num_cpus") or os.cpu_count()
    mhz = ctx.get("mhz_per_cpu")
    loads = ["%s: %s" % (os.path.splitext(f)[0], ", ".join("%.2f" % x for x in c.get("load_avg", [])))
             for f, c in contexts if c.get("load_avg")]
    # Twice the CPUs: the build just before the runs alone lifts the 1-minute load towards them.
    busy = any(c.get("load_avg") and cpus and c["load_avg"][0] >= 2 * cpus for _, c in contexts)
    commit = read_git_commit(info.get("source_dir")) or "unknown"
    rows = [
        ("Date", date),
        ("Machine", "%s CPUs (nproc), %s%s, %s %s" % (
            cpus, cpu_model(), ", %s MHz" % mhz if mhz else "", platform.system(), platform.release())),
        ("Load average at start", ("; ".join(loads) or "unknown") + (
            " (**busy**: a 1-minute load of twice the %s CPUs or more; other programs shared the cores, "
            "so the figures are not comparable)" % cpus if busy else "")),
        ("Compiler", "%s, %s build" % (info.get("compiler", "unknown"), info.get("build_type", "unknown"))),
        ("Google Benchmark library", "built as %s" % ctx.get("library_build_type", "unknown")),
        ("Commit", commit),
        ("Peers found", info.get("peers") or "unknown"),
        ("Command", "`%s`" % info.get("command", "cmake --workflow --preset bench")),
        ("Each bench binary ran as", "`<bench> %s --benchmark_out=<build>/%s/<bench>.json --benchmark_out_format=json`" % (
            info.get("bench_args", ""), info.get("results", "bench-results"))),
    ]
    if info.get("mpsc_args"):
        rows.append(("mpsc_bench also with", "`%s` (after the above, so these win)" % info["mpsc_args"]))
    lines = ["_Generated by `bench/report.py` from %d JSON file(s) in `<build>/%s`; do not edit by hand._" % (
        len(contexts), info.get("results", "bench-results")), ""]
    lines += ["| | |", "|---|---|"] + ["| %s | %s |" % r for r in rows] + [""]
    return lines


def render(results_dir, summary=False):
    """(Markdown, problems): the full report, or with summary the header, targets and headline."""
    info = {}
    info_path = os.path.join(results_dir, "build-info.json")
    if os.path.isfile(info_path):
        with open(info_path, encoding="utf-8") as f:
            info = json.load(f)
    runs, contexts, problems = load_results(results_dir)
    tables = build_tables(runs)
    lines = render_header(info, contexts)

    speeds = split_by_speed(tables)
    lines += ["### Targets", "", "| target | status | detail |", "|---|---|---|"]
    for text, check in TARGETS:
        status, detail = check(tables, speeds)
        lines.append("| %s | %s | %s |" % (text, "**%s**" % status if status == "not met" else status, detail))
    lines.append("")
    lines += render_headline(tables)

    if not summary:
        for key, table in tables.items():
            lines += render_table(key, table)
    lines += render_speeds(speeds)

    if problems:
        lines += ["### Failed runs (no figure posted)", ""] + ["- %s" % p for p in problems] + [""]
    if not runs and not problems:
        problems.append("no results in %s" % results_dir)
        lines += ["No results found.", ""]
    return "\n".join(lines), problems


def update_readme(readme, body):
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    begin = text.find(BEGIN_MARKER)
    end = text.find(END_MARKER)
    if begin < 0 or end < begin:
        raise ValueError("%s has no %s ... %s section" % (readme, BEGIN_MARKER, END_MARKER))
    new = text[:begin + len(BEGIN_MARKER)] + "\n" + body.rstrip("\n") + "\n" + text[end:]
    with open(readme, "w", encoding="utf-8") as f:
        f.write(new)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("results_dir", help="directory with the bench JSON files (<build>/bench-results)")
    parser.add_argument("--out", help="Markdown file to write (default: RESULTS_DIR/report.md)")
    parser.add_argument("--summary", action="store_true",
                        help="print only the header, the targets and the headline table")
    parser.add_argument("--update-readme", metavar="README",
                        help="also replace the text between the results markers of this file with the summary")
    args = parser.parse_args(argv)

    if not os.path.isdir(args.results_dir):
        print("report.py: %s is not a directory" % args.results_dir, file=sys.stderr)
        return 2
    body, problems = render(args.results_dir)
    short, _ = render(args.results_dir, summary=True)
    out = args.out or os.path.join(args.results_dir, "report.md")
    with open(out, "w", encoding="utf-8") as f:
        f.write(body + "\n")
    print(short if args.summary else body)
    print("report.py: wrote %s" % out)
    if args.update_readme:
        try:
            update_readme(args.update_readme, short)
        except (OSError, ValueError) as e:
            print("report.py: %s" % e, file=sys.stderr)
            return 2
        print("report.py: updated %s" % args.update_readme)
    for p in problems:
        print("report.py: FAILED %s" % p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
