"""What watching a run costs: the writer's NaN/inf scan and rules, against no watching.

    python benchmarks/watch_cost.py              # ~1 min; prints the report
    python benchmarks/watch_cost.py --out benchmarks/watch_cost.md

Two measurements:

1. **The scan alone**, in this process: ``Watcher.scan`` over the journal batches that
   200,000 log calls of 10 floats become (``batch.columnize``, 20,000 calls a batch, as
   the writer cuts them), in ns per point: every value finite (the default watch only),
   one NaN per batch, and a z-score rule plus a threshold on one of the ten keys.
2. **End to end**, each in a fresh interpreter, watching on and off (``TRACKER_WATCH=0``)
   alternated ``--repeat`` times: the training thread's ``run.log`` of 10 floats (median
   and p99 over 20,000 calls) and logged → durable throughput for 200,000 calls × 10
   floats into the embedded store. Ratios are of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CALLS = 200_000
KEYS = [f"train/m{i}" for i in range(10)]

CHILD = r"""
import json, sys, time, tempfile
import tracker
calls, keys = int(sys.argv[1]), sys.argv[2].split(",")
with tempfile.TemporaryDirectory() as d:
    run = tracker.init_run(project="bench", store=d, system_metrics=False, quiet=True)
    data = {k: 0.5 for k in keys}
    run.log(data)  # the series exist: later calls take the fast path
    run.flush()
    cost = []
    pc = time.perf_counter_ns
    for i in range(20_000):
        data = {k: 0.5 + i * 1e-6 for k in keys}
        t = pc(); run.log(data); cost.append(pc() - t)
    run.flush()
    started = time.perf_counter()
    for i in range(calls):
        run.log({k: 0.25 + i * 1e-7 for k in keys})
    run.flush()
    durable = time.perf_counter() - started
    run.close()
cost.sort()
print(json.dumps({"median_us": cost[len(cost) // 2] / 1000,
                  "p99_us": cost[int(len(cost) * 0.99)] / 1000,
                  "points_per_s": calls * len(keys) / durable}))
"""


def scan_cost() -> list[dict[str, Any]]:
    from tracker.core.batch import columnize
    from tracker.core.watch import Watcher, check_rule

    rows = []
    for case in ("all finite", "one NaN per batch", "z-score + threshold on 1 key"):
        batches = []
        for b in range(CALLS // 20_000):
            calls = []
            for i in range(20_000):
                step = b * 20_000 + i
                data = {k: 1.0 + 0.001 * ((step * 7 + j) % 13) for j, k in enumerate(KEYS)}
                if case == "one NaN per batch" and i == 10_000:
                    data[KEYS[b % len(KEYS)]] = float("nan")
                calls.append((step, 1.7e9 + step * 0.01, data))
            batches.append(columnize(calls))
        best = []
        for _ in range(5):
            watcher = Watcher(nonfinite=True, silent_after=300)
            if case.startswith("z-score"):
                watcher.add_rule(check_rule(KEYS[0], zscore=6, window=200, above=10.0))
            started = time.perf_counter()
            for batch in batches:
                watcher.scan(list(batch))
            best.append(time.perf_counter() - started)
        rows.append({"case": case, "ns_per_point": min(best) / (CALLS * len(KEYS)) * 1e9})
    return rows


def end_to_end(repeat: int) -> dict[str, list[dict[str, float]]]:
    out: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for _ in range(repeat):
        for which in ("on", "off"):
            env = dict(os.environ, PYTHONPATH=str(ROOT), TRACKER_QUIET="1")
            env.pop("TRACKER_ALERT_WEBHOOK", None)
            env["TRACKER_WATCH"] = "1" if which == "on" else "0"
            with tempfile.TemporaryDirectory() as cwd:
                done = subprocess.run(
                    [sys.executable, "-c", CHILD, str(CALLS), ",".join(KEYS)],
                    env=env,
                    cwd=cwd,
                    capture_output=True,
                    text=True,
                    check=True,
                )
            out[which].append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}; numpy {np.__version__}"
    )


def report(scan: list[dict[str, Any]], e2e: dict[str, list[dict[str, float]]], repeat: int) -> str:
    def med(which: str, key: str) -> float:
        return statistics.median(r[key] for r in e2e[which])

    lines = [
        "# What watching a run costs",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by "
        f"`python benchmarks/watch_cost.py`; machine: {machine()}; 1-minute load average "
        f"at the end {os.getloadavg()[0]:.1f} (on 2 cores, above 1 means other work shared "
        "the CPU: compare the on/off ratios, which alternate, more than the figures).",
        "",
        "## The writer's scan alone (200,000 calls × 10 floats, batches of 20,000 calls)",
        "",
        "| batch | ns per point (best of 5) |",
        "| --- | --- |",
    ]
    lines += [f"| {r['case']} | {r['ns_per_point']:.2f} |" for r in scan]
    lines += [
        "",
        f"## End to end, watching on and off (`TRACKER_WATCH=0`), medians of {repeat} "
        "alternated runs",
        "",
        "| figure | watching on | off | on / off |",
        "| --- | --- | --- | --- |",
    ]
    for key, label, fmt in (
        ("median_us", "`run.log` of 10 floats, median", "{:.2f} µs"),
        ("p99_us", "`run.log` of 10 floats, p99", "{:.2f} µs"),
        ("points_per_s", "logged → durable, 200,000 calls × 10", "{:,.0f} points/s"),
    ):
        on, off = med("on", key), med("off", key)
        lines.append(f"| {label} | {fmt.format(on)} | {fmt.format(off)} | {on / off:.3f} |")
    lines += ["", "Raw runs: " + json.dumps(e2e), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    scan = scan_cost()
    e2e = end_to_end(args.repeat)
    text = report(scan, e2e, args.repeat)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
