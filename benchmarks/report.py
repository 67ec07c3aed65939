"""Rendering the results as Markdown, and describing the machine they came from."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGES = (
    "tracker",
    "numpy",
    "torch",
    "tensorboardX",
    "tensorboard",
    "mlflow",
    "wandb",
    "protobuf",
)


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    ram_gib = int(line.split()[1]) / 1024**2
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "ram_gib": ram_gib,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "filesystem": _filesystem(tempfile.gettempdir()),
        "versions": versions,
        "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no", "--", "tracker")),
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=HERE, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _filesystem(path: str) -> str:
    """The filesystem type the temporary stores live on (fsync cost depends on it)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                mount = parts[1]
                if path.startswith(mount) and len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return f"{kind} ({best or '?'})"


# -- number formatting ----------------------------------------------------------------------


def us(ns: float | None) -> str:
    if ns is None:
        return "—"
    v = ns / 1e3
    if v < 10:
        return f"{v:.2f} µs"
    if v < 100:
        return f"{v:.1f} µs"
    return f"{v:,.0f} µs"


def secs(s: float | None) -> str:
    if s is None:
        return "—"
    if s < 1:
        return f"{s * 1e3:,.0f} ms" if s >= 0.01 else f"{s * 1e3:.1f} ms"
    return f"{s:,.2f} s"


def rate(x: float | None) -> str:
    return "—" if not x else f"{x:,.0f}"


def times(x: float | None) -> str:
    if x is None:
        return "—"
    return f"×{x:,.0f}" if x >= 100 else f"×{x:.1f}" if x >= 1 else f"×{x:.2f}"


def loads(row: dict[str, Any]) -> str:
    return ", ".join(f"{x:.1f}" for x in row.get("loads", [])) or "—"


def ok(value: float | None, limit: float, higher_is_better: bool = False) -> str:
    if value is None:
        return "not measured"
    good = value >= limit if higher_is_better else value <= limit
    return "yes" if good else "**no**"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [_row(header), _row(["---"] * len(header))]
    lines += [_row(r) for r in rows]
    return "\n".join(lines)


def _find(rows: list[dict[str, Any]], lib: str, **match: Any) -> dict[str, Any] | None:
    for r in rows:
        if (
            r.get("lib") == lib
            and "error" not in r
            and all(r.get(k) == v for k, v in match.items())
        ):
            return r
    return None


def _errors(rows: list[dict[str, Any]]) -> list[str]:
    return [
        f"- {r.get('lib')}: " + (r["error"] if r.get("skipped") else f"failed: `{r['error']}`")
        for r in rows
        if "error" in r
    ]


# -- one renderer per workload (same names as run.WORKLOADS) ---------------------------------


def r_import(res: dict[str, Any]) -> str:
    rows = [
        [
            r["lib"],
            str(r["reps"]),
            secs(r["median_s"]),
            secs(r["diff_median_s"]),
            secs(r["raw_median_s"]),
            loads(r),
        ]
        for r in res["rows"]
    ]
    fw = ", ".join(res["frameworks"]) or "none"
    return (
        _table(
            [
                "import",
                "runs",
                "timed inside a fresh interpreter (median)",
                "`python -c 'import X'` − `python -c pass`",
                "whole `python -c 'import X'`",
                "load",
            ],
            rows,
        )
        + f"\n\n`python -c pass` itself: {secs(res['python_s'])}. "
        f"`import tracker` plus loading `tracker.init_run` and `tracker.read_run` (which "
        f"import the core and numpy): {secs(res['with_api_s'])}. ML frameworks in "
        f"`sys.modules` after that: **{fw}**."
    )


def r_log_cost(res: dict[str, Any]) -> str:
    rows = res["rows"]
    t = _find(rows, "tracker")
    out = []
    for r in rows:
        if "error" in r:
            continue
        peer = t is not None and r is not t and not r["lib"].startswith(("list", "tracker"))
        vs_med = r["median_ns"] / t["median_ns"] if peer else None
        vs_p99 = r["p99_ns"] / t["p99_ns"] if peer else None
        vs_pts = t["points_per_s"] / r["points_per_s"] if peer and r.get("points_per_s") else None
        out.append(
            [
                r["lib"]
                + ("" if r["calls"] == rows[0].get("calls") else f" ({r['calls']:,} calls)"),
                us(r["median_ns"]),
                us(r["p99_ns"]),
                rate(r["points_per_s"]),
                str(r["reps"]),
                times(vs_med) if vs_med else "",
                times(vs_p99) if vs_p99 else "",
                times(vs_pts) if vs_pts else "",
                loads(r),
            ]
        )
    timer = t["timer_ns"] if t else None
    text = _table(
        [
            "library",
            "log call, median",
            "p99",
            "logged → durable, points/s",
            "reps",
            "median: peer ÷ tracker",
            "p99: peer ÷ tracker",
            "points/s: tracker ÷ peer",
            "load (1 min, per rep)",
        ],
        out,
    )
    text += (
        "\n\nEach figure is the median over the repetitions (5 for tracker and the floor, "
        "3 for peers; column `reps`), each "
        "in a fresh interpreter, of that repetition's median (or p99) call. Per-call times "
        f"include the `perf_counter_ns` pair around the call (about {us(timer)} here). "
        "Ratios above 1 mean tracker is cheaper (or faster to disk) by that factor."
    )
    floor = _find(rows, "list")
    if floor and len(floor["each"]) > 1:
        lo = min(e["median_ns"] for e in floor["each"])
        hi = max(e["median_ns"] for e in floor["each"])
        text += (
            f" The floor's median moved between {us(lo)} and {us(hi)} across repetitions "
            f"(×{hi / lo:.1f}): that is how much the machine's own speed varied under its "
            "load, and every library's figures move with it."
        )
    per = [
        [
            r["lib"],
            " / ".join(us(e["median_ns"]) for e in r["each"]),
            " / ".join(us(e["p99_ns"]) for e in r["each"]),
            " / ".join(rate(e["points_per_s"]) for e in r["each"]),
            secs(r.get("durable_wait_s")),
        ]
        for r in rows
        if "error" not in r
    ]
    text += "\n\nEvery repetition:\n\n" + _table(
        ["library", "medians", "p99s", "points/s", "durable call (median)"], per
    )
    return "\n".join([text, *_errors(rows)])


def r_throughput(res: dict[str, Any]) -> str:
    rows = [
        [
            r["lib"],
            f"{r['calls']:,}",
            f"{r['calls'] * 10:,}",
            rate(r["points_per_s"]),
            secs(r["loop_s"]),
            secs(r["durable_wait_s"]),
            secs(r["close_s"]),
            loads(r),
        ]
        for r in res["rows"]
        if "error" not in r
    ]
    return (
        _table(
            [
                "library",
                "calls",
                "points",
                "points/s (first call → flush returns)",
                "loop",
                "flush()",
                "close() after",
                "load",
            ],
            rows,
        )
        + "\n\nNo clock around each call here; medians of the repetitions."
    )


def r_wide_log(res: dict[str, Any]) -> str:
    rows = res["rows"]
    t = _find(rows, "tracker")
    out = [
        [
            r["lib"],
            f"{r['calls']:,} ({r['reps']} rep)",
            f"{r['per_key_ns']:.2f} ns" if r["per_key_ns"] < 100 else f"{r['per_key_ns']:,.0f} ns",
            us(r["median_ns"]),
            us(r["p99_ns"]),
            f"{r['first_per_key_ns']:,.0f} ns",
            times(r["per_key_ns"] / t["per_key_ns"]) if t and r is not t else "",
            loads(r),
        ]
        for r in rows
        if "error" not in r
    ]
    return "\n".join(
        [
            _table(
                [
                    "library",
                    "timed calls",
                    "per key (median call ÷ 5,000)",
                    "call median",
                    "call p99",
                    "first call, per key (new keys)",
                    "peer ÷ tracker",
                    "load",
                ],
                out,
            ),
            *_errors(rows),
        ]
    )


def r_many_series(res: dict[str, Any]) -> str:
    rows = res["rows"]
    t = _find(rows, "tracker", steps=1)
    out = []
    for r in rows:
        if "error" in r:
            continue
        note = (
            f" (measured at {r['keys']:,} keys, ×{res['full'] // r['keys']} linear)"
            if r["extrapolated"]
            else ""
        )
        out.append(
            [
                r["lib"],
                f"{r['keys']:,} × {r['steps']}",
                secs(r["log_s"]),
                secs(r["total_s"]),
                secs(r["total_at_full_s"]) + note,
                times(r["total_at_full_s"] / t["total_s"])
                if t and r is not t and r["steps"] == 1
                else "",
                loads(r),
            ]
        )
    return "\n".join(
        [
            _table(
                [
                    "library",
                    "keys × log calls",
                    "log calls",
                    "logged and closed",
                    "at 100,000 keys",
                    "peer ÷ tracker",
                    "load",
                ],
                out,
            ),
            *_errors(rows),
        ]
    )


def r_read(res: dict[str, Any]) -> str:
    rows = [r for r in res["rows"] if "error" not in r]
    t = _find(rows, "tracker")
    largest: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["lib"] not in largest or r["points"] > largest[r["lib"]]["points"]:
            largest[r["lib"]] = r
    how = {
        "tracker": '`tracker.read_run(id)["x"].fetch_values()` (numpy arrays)',
        "mlflow": '`MlflowClient().get_metric_history(id, "x")` (list of Metric)',
        "tensorboardX": "TensorBoard `EventAccumulator(size_guidance={scalars: 0})` "
        '`.Reload().Scalars("x")`',
    }
    out = []
    for r in rows:
        if "error" in r:
            continue
        note = f" (measured at {r['points']:,}, linear)" if r["extrapolated"] else ""
        out.append(
            [
                r["lib"],
                how.get(r["lib"], ""),
                f"{r['points']:,}",
                secs(r["median_s"]),
                secs(r["first_s"]),
                secs(r["at_full_s"]) + note,
                times(r["at_full_s"] / t["median_s"])
                if t and r is not t and largest[r["lib"]] is r
                else "",
                loads(r),
            ]
        )
    growth = []
    for lib, big in largest.items():
        small = min((r for r in rows if r["lib"] == lib), key=lambda r: r["points"])
        if small is not big:
            growth.append(
                f"{lib}: ×{big['points'] / small['points']:.0f} the points took "
                f"×{big['median_s'] / small['median_s']:.0f} the time"
            )
    checked = ""
    if t and "verified_median_s" in t:
        on, off = t["verified_median_s"], t["unverified_median_s"]
        checked = (
            f"Checksums: every read verifies each chunk's CRC-32 and sizes. Reading the "
            f"{t['points']:,} points with verification took {secs(on)}, without "
            f"{secs(off)} ({(on - off) / off * 100:+.0f} %; medians of alternating reads "
            "in one process)."
        )
    scaling = (
        "Scaling, smaller to larger size: "
        + "; ".join(growth)
        + ". Where the time grows faster than the points, the linear extrapolation to "
        "the full size is a lower bound."
        if growth
        else ""
    )
    return "\n".join(
        [
            _table(
                [
                    "library",
                    "read call",
                    "points",
                    "median of 3",
                    "first",
                    f"at {res['full']:,} points",
                    "peer ÷ tracker",
                    "load",
                ],
                out,
            ),
            "",
            scaling,
            "",
            checked,
            "",
            "wandb is not in this table: an offline wandb run has no local read API (its "
            "history is read from the server after `wandb sync`).",
            *_errors(res["rows"]),
        ]
    )


def r_downsample(res: dict[str, Any]) -> str:
    rows = res["rows"]
    out = [
        [
            f"{r['points']:,}",
            str(r["buckets"]),
            secs(r["median_s"]),
            secs(r["first_s"]),
            secs(r["read_median_s"]),
            secs(r["bucketize_median_s"]),
            secs(r["build_s"]),
            loads(r),
        ]
        for r in rows
        if "error" not in r
    ]
    return "\n".join(
        [
            _table(
                [
                    "points",
                    "buckets",
                    "`fetch_values(buckets=1000)`, median of 3",
                    "first",
                    "read alone (`fetch_values()`)",
                    "`bucketize` alone",
                    "writing the series (setup)",
                    "load",
                ],
                out,
            ),
            "",
            "A spike planted at one step survives as the maximum of its bucket (asserted). "
            "No peer keeps min/max when it downsamples (TensorBoard's reservoir sampling "
            "drops points at random), so there is no peer column.",
            *_errors(rows),
        ]
    )


def r_backpressure(res: dict[str, Any]) -> str:
    rows = [r for r in res.get("rows", []) if "error" not in r]
    out = [
        "`run.log` waits for the writer only when the queue holds more than an eighth of a second "
        "of the writer's measured throughput (and at least 200,000 points' worth), so that a SIGKILL never "
        "loses more than about a second. Each row: 10 floats a call, after `work` of busy "
        "work (a real training step is milliseconds).",
        "",
        _table(
            [
                "work before each call",
                "calls",
                "waits",
                "median wait",
                "p99 wait",
                "max wait",
                "time waiting",
                "deepest queue / limit",
                "load",
            ],
            [
                [
                    f"{r['work_us']} µs",
                    f"{r['calls']:,}",
                    f"{r['waits']:,}",
                    f"{r['wait_median_ms']:.2f} ms",
                    f"{r['wait_p99_ms']:.2f} ms",
                    f"{r['wait_max_ms']:.2f} ms",
                    f"{r['wait_total_s'] / r['loop_s']:.1%}",
                    f"{r['deepest_queue']:,} / {r['max_queue']:,}",
                    f"{r['load']:.2f}",
                ]
                for r in rows
            ],
        ),
    ]
    out.extend(_errors(res.get("rows", [])))
    return "\n".join(out)


def r_ddp(res: dict[str, Any]) -> str:
    if res.get("skipped"):
        return f"Skipped: {res['skipped']}."
    if res.get("rows") and "error" in res["rows"][0]:
        return "\n".join(_errors(res["rows"]))
    modes = res["modes"]
    out = [
        [
            m,
            f"{modes[m]['median_ms']:.2f} ms",
            f"{modes[m]['p90_ms']:.2f} ms",
            f"{modes[m]['ranks_median_ms']:.2f} ms",
            str(modes[m]["steps"]),
            f"{modes[m]['median_ms'] / modes['none']['median_ms']:.3f}",
        ]
        for m in modes
    ]
    return (
        _table(
            [
                "mode",
                "step median (rank 0)",
                "p90 (rank 0)",
                "median over all ranks",
                "timed steps per rank",
                "÷ none",
            ],
            out,
        )
        + f"\n\n{res['world_size']} ranks (gloo, CPU), {res['model']}, "
        f"{res['metrics']} metrics logged by every rank every step; modes interleaved in "
        f"blocks of {res['block']} steps, {res['rounds']} rounds, first round discarded. "
        f"Median of the per-round ratios (each round's block medians, paired): tracker "
        f"{res['round_ratio_tracker']:.3f}, naive {res['round_ratio_naive']:.3f}. "
        f"Read back after close: {res['check']}. Launch to exit: {secs(res.get('wall_s'))}. "
        f"Load {loads(res)}."
    )


RENDERERS: dict[str, Callable[[dict[str, Any]], str]] = {
    "import": r_import,
    "log_cost": r_log_cost,
    "throughput": r_throughput,
    "wide_log": r_wide_log,
    "many_series": r_many_series,
    "read": r_read,
    "downsample": r_downsample,
    "ddp": r_ddp,
    "backpressure": r_backpressure,
}

TITLES = {
    "import": "7. `import tracker`",
    "log_cost": "1–2. `log` of 10 floats: training-thread cost and logged → durable (20,000 calls)",
    "throughput": "2. Logged → durable, tracker at 20,000 and 200,000 calls",
    "wide_log": "3. `log` of a 5,000-key dict",
    "many_series": "4. 100,000 distinct series in one run, logged and closed",
    "read": "5. Read a 1,000,000-point series",
    "downsample": "6. Downsample 10,000,000 points to 1,000 buckets, min/max kept",
    "ddp": "8. DDP step time with and without tracker",
    "backpressure": "9. Back-pressure: when `run.log` waits for the writer",
}


def _summary(results: dict[str, Any]) -> str:
    """The performance targets (benchmarks/README.md), with what this run measured."""
    lines = []

    def add(figure: str, target: str, measured: str, met: str) -> None:
        lines.append([figure, target, measured, met])

    lc = results.get("log_cost")
    t = _find(lc["rows"], "tracker") if lc else None
    if t:
        add(
            "`run.log` of 10 floats, training-thread cost",
            "median ≤ 1 µs, p99 ≤ 20 µs",
            f"median {us(t['median_ns'])}, p99 {us(t['p99_ns'])}",
            "yes"
            if t["median_ns"] <= 1000 and t["p99_ns"] <= 20000
            else f"median {ok(t['median_ns'], 1000)}, p99 {ok(t['p99_ns'], 20000)}",
        )
    for lib, what, limit in (
        ("tracker-numpy", "10 numpy float32 scalars", 3000),
        ("tracker-torch", "10 CPU 0-d torch tensors", 8000),
    ):
        v = _find(lc["rows"], lib) if lc else None
        if v:
            add(
                f"`run.log` of {what}, training-thread cost",
                f"median ≤ {limit / 1000:g} µs",
                f"median {us(v['median_ns'])}, p99 {us(v['p99_ns'])}",
                ok(v["median_ns"], limit),
            )
    wl = results.get("wide_log")
    t = _find(wl["rows"], "tracker") if wl else None
    if t:
        add(
            "`run.log` of a 5,000-key dict, per key",
            "≤ 0.1 µs",
            f"{t['per_key_ns'] / 1e3:.3f} µs",
            ok(t["per_key_ns"], 100),
        )
    tp = results.get("throughput")
    if tp:
        for r in tp["rows"]:
            add(
                f"logged → durable in the embedded store ({r['calls']:,} calls × 10)",
                "≥ 1,000,000 points/s",
                f"{rate(r['points_per_s'])} points/s",
                ok(r["points_per_s"], 1e6, higher_is_better=True),
            )
    elif lc and t:
        pass
    ms = results.get("many_series")
    t = _find(ms["rows"], "tracker", steps=1) if ms else None
    if t:
        add(
            "100,000 distinct series in one run (one log call, then close)",
            "logged and closed in ≤ 5 s",
            secs(t["total_s"]),
            ok(t["total_s"], 5),
        )
    rd = results.get("read")
    t = _find(rd["rows"], "tracker") if rd else None
    if t:
        add(
            f"read a {t['points']:,}-point series",
            "≤ 0.2 s",
            f"{secs(t['median_s'])} (first {secs(t['first_s'])})",
            ok(t["median_s"], 0.2),
        )
    ds = results.get("downsample")
    t = _find(ds["rows"], "tracker") if ds else None
    if t:
        add(
            f"downsample {t['points']:,} points to 1,000 buckets, min/max kept",
            "≤ 0.5 s",
            f"{secs(t['median_s'])} (first in a fresh process {secs(t['first_s'])})",
            ok(t["median_s"], 0.5),
        )
    dd = results.get("ddp")
    if dd and "ratio_tracker" in dd:
        add(
            f"DDP step time with tracker vs without, {dd['world_size']} ranks, gathering "
            "every step (median of per-round paired ratios)",
            "ratio ≤ 1.02",
            f"{dd['round_ratio_tracker']:.3f} (naive all_gather_object: "
            f"{dd['round_ratio_naive']:.3f}); ratio of overall medians "
            f"{dd['ratio_tracker']:.3f}",
            ok(dd["round_ratio_tracker"], 1.02),
        )
    im = results.get("import")
    t = _find(im["rows"], "tracker") if im else None
    if t:
        fw = ", ".join(im["frameworks"]) or "none"
        add(
            "`import tracker`",
            "≤ 100 ms, no ML framework imported",
            f"{secs(t['median_s'])}; frameworks imported: {fw}",
            "yes" if t["median_s"] <= 0.1 and not im["frameworks"] else "**no**",
        )
    return _table(["figure", "target", "measured (tracker)", "met"], lines)


def render(results: dict[str, Any], meta: dict[str, Any]) -> str:
    v = meta["versions"]
    parts = [
        "# tracker benchmark results",
        "",
        f"Measured {meta['started']} by `{meta['command'].strip()}` "
        f"({'quick sizes: a smoke run, not the figures' if meta['quick'] else 'full sizes'}); "
        f"the whole run took {meta['wall_s']:.0f} s. Method: [README.md](README.md). "
        "Regenerate with `python benchmarks/run.py`.",
        "",
        "## Machine",
        "",
        f"- CPU: {meta['cpu']}, {meta['cores']} cores ({meta['usable_cores']} usable); "
        f"RAM {meta['ram_gib']:.1f} GiB; temporary stores on {meta['filesystem']}",
        f"- {meta['platform']}; Python {meta['python']}",
        "- "
        + ", ".join(f"{k} {v[k]}" for k in v)
        + f"; tracker at commit {meta['commit'] or '?'}"
        + (" (with uncommitted changes under tracker/)" if meta["dirty"] else ""),
        "- The machine was shared with other jobs while this ran; each table has a "
        "`load` column (the 1-minute load average when that measurement started) so "
        "figures taken under load can be told apart. On 2 cores a load above 2 means "
        "the benchmark was competing for the CPU.",
        "",
        "## Against the targets (benchmarks/README.md)",
        "",
        _summary(results),
        "",
    ]
    for name, res in results.items():
        render_one = RENDERERS.get(name)
        if render_one is None:
            continue
        parts += [f"## {TITLES.get(name, name)}", "", render_one(res), ""]
    return "\n".join(parts)
