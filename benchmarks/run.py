"""tracker's performance suite, side by side with its peers, in one run.

    python benchmarks/run.py                  # everything; writes benchmarks/results.md
    python benchmarks/run.py --quick          # small sizes, a smoke run (prints, writes nothing)
    python benchmarks/run.py --only log_cost  # one workload (repeatable, or comma-separated)
    python benchmarks/run.py --libs tracker,list --quick --only log_cost   # fastest smoke

Every measurement runs in a fresh interpreter (``tasks.py``) in a fresh temporary
directory, so one library's imports, threads and garbage never touch another's
figures. Workloads are listed in ``WORKLOADS`` below; README.md gives the method.
Not part of CI: it takes several minutes and its figures depend on the machine.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import report  # noqa: E402
from libs import WANDB_ENV  # noqa: E402

PEERS = ("tensorboardX", "mlflow", "wandb")
# Imports that `import tracker` must never pull in (no ML framework, no pandas).
FRAMEWORKS = (
    "torch",
    "tensorflow",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "xgboost",
    "optuna",
    "sklearn",
    "pandas",
    "jax",
    "keras",
)


@dataclass
class Context:
    quick: bool
    libs: set[str] | None  # None: every library
    root: str
    verbose: bool = True
    log: list[str] = field(default_factory=list)

    def wants(self, lib: str) -> bool:
        if self.libs is None:
            return True
        base = lib.split("+")[0].split("-")[0]
        return lib in self.libs or base in self.libs

    def say(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        self.log.append(line)
        if self.verbose:
            print(line, flush=True)

    def child(self, task: str, lib: str, timeout: float = 300, **params: Any) -> dict[str, Any]:
        """Run one task for one library in a fresh interpreter and a fresh directory."""
        workdir = params.pop("workdir", None) or tempfile.mkdtemp(prefix=f"{task}-", dir=self.root)
        out = os.path.join(workdir, f"result-{task}.json")
        spec = dict(task=task, lib=lib, workdir=workdir, out=out, **params)
        spec_path = os.path.join(workdir, f"spec-{task}.json")
        with open(spec_path, "w") as f:
            json.dump(spec, f)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, os.path.join(HERE, "tasks.py"), spec_path],
            env=child_env(workdir),
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0 or not os.path.exists(out):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
            missing = [line for line in tail if line.startswith("ModuleNotFoundError")]
            if missing:
                # A peer that is not installed is left out, not a failure of the suite.
                self.say(f"  {task}/{lib}: skipped: {missing[-1]}")
                return {"error": f"skipped: {missing[-1]}", "skipped": True, "lib": lib}
            self.say(f"  {task}/{lib}: FAILED rc={proc.returncode}: " + " | ".join(tail))
            return {"error": " ".join(tail)[-300:], "lib": lib}
        with open(out) as f:
            result = json.load(f)
        result["lib"] = lib
        result["wall_s"] = wall
        result["workdir"] = workdir
        return result


def child_env(workdir: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TRACKER_", "WANDB_", "MLFLOW_"))
    }
    env.update(WANDB_ENV)
    env.update(HOME=workdir, MLFLOW_ALLOW_FILE_STORE="true", PYTHONWARNINGS="ignore")
    # One rank's worth of environment: no launcher variables leak into a benchmark.
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and "error" not in r]
    return statistics.median(vals) if vals else None


def _cleanup(result: dict[str, Any]) -> None:
    if result.get("workdir"):
        shutil.rmtree(result["workdir"], ignore_errors=True)


# -- workloads (parent side: sizes, libraries, repetitions) ----------------------------------


def wl_log_cost(ctx: Context) -> dict[str, Any]:
    """Workloads 1 and 2: 20,000 calls of 10 floats; per-call cost and logged -> durable."""
    n = 2_000 if ctx.quick else 20_000
    peer_n = 1_000 if ctx.quick else n  # a quick smoke run stays well under 30 s
    reps = 1 if ctx.quick else 3
    plan = [
        ("list", n),
        ("tracker", n),
        ("tracker+sysmetrics", n),
        ("tracker-numpy", n),
        ("tracker-torch", n),
        ("tensorboardX", peer_n),
        ("mlflow", peer_n),
        ("wandb", peer_n),
    ]
    if not ctx.quick:
        # 15-30 ms a call here (a transaction per call): 20,000 calls would take minutes.
        plan.append(("mlflow-sqlite", 200))
    plan = [(lib, size) for lib, size in plan if ctx.wants(lib)]
    # tracker and the floor take a second a repetition: 5 of them make their medians
    # robust to a noisy neighbour (this machine's speed is bimodal under load).
    cheap = {"list", "tracker", "tracker+sysmetrics", "tracker-numpy", "tracker-torch"}
    cheap_reps = 1 if ctx.quick else 5
    runs: dict[str, list[dict[str, Any]]] = {lib: [] for lib, _ in plan}
    for rep in range(max(reps, cheap_reps)):  # interleaved: a change in load hits everyone
        for lib, size in plan:
            if rep >= (cheap_reps if lib in cheap else reps):
                continue
            r = ctx.child("log_cost", lib, n=size, timeout=600)
            _cleanup(r)
            runs[lib].append(r)
            if "error" not in r:
                ctx.say(
                    f"  log_cost rep {rep + 1} {lib}: median {r['median_ns'] / 1e3:.2f} µs, "
                    f"p99 {r['p99_ns'] / 1e3:.2f} µs, "
                    + (f"{r['points_per_s']:,.0f} points/s" if r["points_per_s"] else "")
                    + f" (load {r['load']:.2f})"
                )
    rows = []
    for lib, size in plan:
        rs = [r for r in runs[lib] if "error" not in r]
        if not rs:
            first = runs[lib][0]
            rows.append(
                {"lib": lib, "error": first.get("error", "?"), "skipped": first.get("skipped")}
            )
            continue
        rows.append(
            {
                "lib": lib,
                "calls": size,
                "reps": len(rs),
                "median_ns": _median(rs, "median_ns"),
                "p99_ns": _median(rs, "p99_ns"),
                "p999_ns": _median(rs, "p999_ns"),
                "points_per_s": _median(rs, "points_per_s"),
                "durable_wait_s": _median(rs, "durable_wait_s"),
                "close_s": _median(rs, "close_s"),
                "timer_ns": _median(rs, "timer_median_ns"),
                "loads": [r["load"] for r in rs],
                "versions": rs[0].get("versions", {}),
                "each": [
                    {k: r.get(k) for k in ("median_ns", "p99_ns", "points_per_s", "load")}
                    for r in rs
                ],
            }
        )
    return {"rows": rows}


def wl_throughput(ctx: Context) -> dict[str, Any]:
    """Workload 2, larger: tracker logged -> durable with no clock around each call."""
    sizes = [20_000] if ctx.quick else [20_000, 200_000]
    reps = 1 if ctx.quick else 3
    rows = []
    for lib in ("tracker",):
        if not ctx.wants(lib):
            continue
        for n in sizes:
            rs = []
            for _ in range(reps):
                r = ctx.child("throughput", lib, n=n)
                _cleanup(r)
                if "error" in r:
                    continue
                rs.append(r)
                ctx.say(
                    f"  throughput {lib} {n:,} calls: {r['points_per_s']:,.0f} points/s, "
                    f"flush {r['durable_wait_s']:.3f} s (load {r['load']:.2f})"
                )
            if rs:
                rows.append(
                    {
                        "lib": lib,
                        "calls": n,
                        "reps": len(rs),
                        "points_per_s": _median(rs, "points_per_s"),
                        "loop_s": _median(rs, "loop_s"),
                        "durable_wait_s": _median(rs, "durable_wait_s"),
                        "close_s": _median(rs, "close_s"),
                        "loads": [r["load"] for r in rs],
                    }
                )
    return {"rows": rows}


def wl_wide_log(ctx: Context) -> dict[str, Any]:
    """Workload 3: a 5,000-key dict, per-key cost. Peers get few calls: each is slow."""
    keys = 5_000
    plan = [("tracker", 50 if ctx.quick else 300, 1 if ctx.quick else 3)]
    plan += [("tensorboardX", 3, 1), ("mlflow", 2, 1), ("wandb", 5 if ctx.quick else 20, 1)]
    rows = []
    for lib, calls, reps in plan:
        if not ctx.wants(lib):
            continue
        rs = []
        for _ in range(reps):
            r = ctx.child("wide_log", lib, keys=keys, calls=calls, timeout=300)
            _cleanup(r)
            if "error" in r:
                rows.append(r)
                break
            rs.append(r)
            ctx.say(
                f"  wide_log {lib}: {r['per_key_ns']:.1f} ns/key (call median "
                f"{r['median_ns'] / 1e3:,.0f} µs, first call {r['first_call_ns'] / 1e6:.1f} ms, "
                f"load {r['load']:.2f})"
            )
        if rs:
            rows.append(
                {
                    "lib": lib,
                    "keys": keys,
                    "calls": calls,
                    "reps": len(rs),
                    "per_key_ns": _median(rs, "per_key_ns"),
                    "median_ns": _median(rs, "median_ns"),
                    "p99_ns": _median(rs, "p99_ns"),
                    "first_per_key_ns": _median(rs, "first_per_key_ns"),
                    "points_per_s": _median(rs, "points_per_s"),
                    "loads": [r["load"] for r in rs],
                }
            )
    return {"rows": rows}


def wl_many_series(ctx: Context) -> dict[str, Any]:
    """Workload 4: 100,000 distinct series logged and closed. Slow peers at a smaller size."""
    full = 100_000
    plan = [
        ("tracker", full, 1, 1 if ctx.quick else 3),
        ("tracker", full, 10, 1),
        ("tensorboardX", 10_000 if ctx.quick else full, 1, 1),
        ("mlflow", 2_000 if ctx.quick else 10_000, 1, 1),
        ("wandb", 10_000 if ctx.quick else full, 1, 1),
    ]
    rows = []
    for lib, keys, steps, reps in plan:
        if not ctx.wants(lib):
            continue
        rs = []
        for _ in range(reps):
            r = ctx.child("many_series", lib, keys=keys, steps=steps, timeout=300)
            _cleanup(r)
            if "error" in r:
                rows.append(r)
                break
            rs.append(r)
            ctx.say(
                f"  many_series {lib} {keys:,} keys x {steps} steps: total {r['total_s']:.2f} s "
                f"(log {r['log_s']:.2f} s, load {r['load']:.2f})"
            )
        if rs:
            total = _median(rs, "total_s")
            rows.append(
                {
                    "lib": lib,
                    "keys": keys,
                    "steps": steps,
                    "reps": len(rs),
                    "log_s": _median(rs, "log_s"),
                    "total_s": total,
                    # Per-key work is linear in the number of keys in every library here.
                    "total_at_full_s": total * full / keys,
                    "extrapolated": keys != full,
                    "loads": [r["load"] for r in rs],
                }
            )
    return {"rows": rows, "full": full}


def wl_read(ctx: Context) -> dict[str, Any]:
    """Workload 5: read a 1,000,000-point series. Peers write 100,000 points (time)."""
    full = 100_000 if ctx.quick else 1_000_000
    # Peers at two sizes: the scaling between them says how far the extrapolation holds.
    plan = [("tracker", full)]
    for lib in ("mlflow", "tensorboardX"):
        plan += [(lib, full // 10)] if ctx.quick else [(lib, full // 100), (lib, full // 10)]
    rows = []
    for lib, points in plan:
        if not ctx.wants(lib):
            continue
        built = ctx.child("build_series", lib, points=points, timeout=400)
        if "error" in built:
            rows.append(built)
            continue
        r = ctx.child(
            "read_series",
            lib,
            ref=built["ref"],
            points=points,
            reps=3,
            workdir=built["workdir"],
            timeout=400,
        )
        verify = None
        if lib == "tracker" and "error" not in r:
            # The same store read with and without the chunk checks, alternating.
            verify = ctx.child(
                "read_verify",
                lib,
                ref=built["ref"],
                points=points,
                reps=1 if ctx.quick else 7,
                workdir=built["workdir"],
                timeout=400,
            )
            if "error" in verify:
                rows.append(verify)
                verify = None
            else:
                ctx.say(
                    f"  read tracker {points:,} points: checksums verified median "
                    f"{verify['verified_median_s']:.3f} s, not verified "
                    f"{verify['unverified_median_s']:.3f} s (load {verify['load']:.2f})"
                )
        _cleanup(built)
        if "error" in r:
            rows.append(r)
            continue
        ctx.say(
            f"  read {lib} {points:,} points: median {r['median_s']:.3f} s, first "
            f"{r['first_s']:.3f} s (built in {built['build_s']:.1f} s, load {r['load']:.2f})"
        )
        rows.append(
            {
                "lib": lib,
                "points": points,
                "median_s": r["median_s"],
                "first_s": r["first_s"],
                "at_full_s": r["median_s"] * full / points,
                "extrapolated": points != full,
                "build_s": built["build_s"],
                "loads": [r["load"]],
                "versions": r.get("versions", {}),
                **(
                    {}
                    if verify is None
                    else {
                        "verified_median_s": verify["verified_median_s"],
                        "unverified_median_s": verify["unverified_median_s"],
                    }
                ),
            }
        )
    return {"rows": rows, "full": full}


def wl_downsample(ctx: Context) -> dict[str, Any]:
    """Workload 6: 10,000,000 points to 1,000 buckets, min/max kept (tracker only)."""
    if not ctx.wants("tracker"):
        return {"rows": []}
    points = 1_000_000 if ctx.quick else 10_000_000
    built = ctx.child(
        "build_series", "tracker", points=points, spike_step=points * 7 // 9, timeout=500
    )
    if "error" in built:
        return {"rows": [built]}
    ctx.say(f"  downsample: built {points:,} points in {built['build_s']:.1f} s")
    r = ctx.child(
        "downsample",
        "tracker",
        ref=built["ref"],
        points=points,
        buckets=1000,
        reps=3,
        workdir=built["workdir"],
        timeout=300,
    )
    _cleanup(built)
    if "error" in r:
        return {"rows": [r]}
    ctx.say(
        f"  downsample tracker: fetch_values(buckets=1000) median {r['median_s']:.3f} s "
        f"(read {r['read_median_s']:.3f} s + bucketize {r['bucketize_median_s']:.3f} s, "
        f"load {r['load']:.2f})"
    )
    r.update(lib="tracker", build_s=built["build_s"], loads=[r["load"]])
    return {"rows": [r]}


def wl_backpressure(ctx: Context) -> dict[str, Any]:
    """Back-pressure: the waits of ordinary loops (none expected) and of a tight loop."""
    if not ctx.wants("tracker"):
        return {"rows": []}
    rows = []
    plan = [(0, 400_000), (10, 100_000), (100, 20_000), (1000, 3_000)]
    if ctx.quick:
        plan = [(0, 50_000), (100, 2_000)]
    for work_us, n in plan:
        r = ctx.child("backpressure", "tracker", n=n, work_us=work_us, timeout=300)
        if "error" not in r:
            ctx.say(
                f"  backpressure work={work_us} µs: {r['waits']} waits of {n:,} calls "
                f"(median {r['wait_median_ms']:.2f} ms, max {r['wait_max_ms']:.2f} ms, "
                f"{r['wait_total_s'] / r['loop_s']:.1%} of the loop), deepest queue "
                f"{r['deepest_queue']:,} of limit {r['max_queue']:,}"
            )
        _cleanup(r)
        rows.append(r)
    return {"rows": rows}


def _time_python(code: str, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True)
    return time.perf_counter() - t0


def _import_inside(module: str, env: dict[str, str]) -> float:
    """The import timed by the fresh interpreter itself: no start-up noise in it."""
    code = (
        f"import time; t0 = time.perf_counter(); import {module}; print(time.perf_counter() - t0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True
    ).stdout
    return float(out.strip().splitlines()[-1])


def wl_import(ctx: Context) -> dict[str, Any]:
    """Workload 7: `import X` in a fresh interpreter; median of 5, two ways.

    As the target states it: `python -c "import X"` minus `python -c pass`, the two runs
    alternated and paired. That difference is at the mercy of start-up noise on a busy
    machine, so the import is also timed inside the fresh interpreter around the
    `import` statement alone; the summary uses that one.
    """
    reps = 3 if ctx.quick else 5
    env = child_env(ctx.root)
    load = os.getloadavg()[0]
    plan = [("tracker", "tracker"), ("tensorboardX", "tensorboardX"), ("mlflow", "mlflow")]
    plan += [("wandb", "wandb")]
    rows = []
    base_all = []
    for lib, module in plan:
        if not ctx.wants(lib):
            continue
        if lib != "tracker" and importlib.util.find_spec(module) is None:
            ctx.say(f"  import {lib}: skipped, not installed")
            continue
        diffs, inside, base = [], [], []
        # Peers take seconds to import: timed inside only, and 3 times, to save minutes.
        n = reps if lib == "tracker" else 3
        for _ in range(n):
            if lib == "tracker":
                b = _time_python("pass", env)
                t = _time_python(f"import {module}", env)
                base.append(b)
                diffs.append(t - b)
            inside.append(_import_inside(module, env))
        base_all += base
        rows.append(
            {
                "lib": lib,
                "reps": n,
                "median_s": statistics.median(inside),
                "diff_median_s": statistics.median(diffs) if diffs else None,
                "raw_median_s": statistics.median(base) + statistics.median(diffs)
                if diffs
                else None,
                "loads": [load],
            }
        )
        ctx.say(
            f"  import {lib}: {rows[-1]['median_s'] * 1e3:.0f} ms timed inside"
            + (f", {statistics.median(diffs) * 1e3:.0f} ms by difference" if diffs else "")
            + f" (load {load:.2f})"
        )
    probe = (
        "import json, sys, tracker; tracker.init_run; tracker.read_run; "
        f"print(json.dumps([m for m in {list(FRAMEWORKS)!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    frameworks = json.loads(out.strip().splitlines()[-1])
    init_inside = statistics.median(
        _import_inside("tracker; tracker.init_run; tracker.read_run", env) for _ in range(reps)
    )
    ctx.say(
        f"  import tracker + loading init_run/read_run: {init_inside * 1e3:.0f} ms; "
        f"frameworks pulled in: {frameworks or 'none'}"
    )
    return {
        "rows": rows,
        "python_s": statistics.median(base_all) if base_all else None,
        "frameworks": frameworks,
        "with_api_s": init_inside,
        "reps": reps,
    }


def wl_ddp(ctx: Context) -> dict[str, Any]:
    """DDP step time with no tracker, tracker, naive all_gather_object (torchrun)."""
    if not ctx.wants("tracker"):
        return {"rows": []}
    try:
        import torch  # noqa: F401
    except ImportError:
        return {"rows": [], "skipped": "torch is not installed"}
    workdir = tempfile.mkdtemp(prefix="ddp-", dir=ctx.root)
    out = os.path.join(workdir, "ddp.json")
    nproc = 2 if ctx.quick else 4
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        os.path.join(HERE, "ddp_overhead.py"),
        "--out",
        out,
        "--store",
        os.path.join(workdir, "store"),
    ]
    if ctx.quick:
        cmd.append("--quick")
    env = child_env(workdir)
    env["OMP_NUM_THREADS"] = "1"
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=workdir, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not os.path.exists(out):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        ctx.say("  ddp FAILED: " + " | ".join(tail))
        shutil.rmtree(workdir, ignore_errors=True)
        return {"rows": [{"lib": "ddp", "error": " ".join(tail)[-400:]}]}
    with open(out) as f:
        result = json.load(f)
    shutil.rmtree(workdir, ignore_errors=True)
    result.update(loads=[load], wall_s=wall)
    modes = result["modes"]
    ctx.say(
        "  ddp: step median "
        + ", ".join(f"{m} {modes[m]['median_ms']:.2f} ms" for m in modes)
        + f"; tracker/none {result['ratio_tracker']:.3f}, naive/none {result['ratio_naive']:.3f}"
        + f" (load {load:.2f})"
    )
    return result


@dataclass(frozen=True)
class Workload:
    run: Callable[[Context], dict[str, Any]]
    title: str


# ---------------------------------------------------------------------------------------
# THE REGISTRY. Add a workload here: a function taking the Context and returning a dict
# (usually {"rows": [...]}) and a renderer of the same name in report.py (RENDERERS).
# The DDP benchmark is the "ddp" entry (benchmarks/ddp_overhead.py, torchrun).
# ---------------------------------------------------------------------------------------
WORKLOADS: dict[str, Workload] = {
    "import": Workload(wl_import, "import tracker"),
    "log_cost": Workload(wl_log_cost, "log of 10 floats: training-thread cost, logged -> durable"),
    "throughput": Workload(wl_throughput, "logged -> durable, larger runs"),
    "wide_log": Workload(wl_wide_log, "log of a 5,000-key dict"),
    "many_series": Workload(wl_many_series, "100,000 distinct series in one run"),
    "read": Workload(wl_read, "read a 1,000,000-point series"),
    "downsample": Workload(wl_downsample, "downsample 10,000,000 points to 1,000 buckets"),
    "ddp": Workload(wl_ddp, "DDP step time, 4 ranks, every rank logging every step"),
    "backpressure": Workload(wl_backpressure, "back-pressure: when run.log waits for the writer"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument(
        "--only", action="append", default=[], help=f"workload(s): {', '.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--libs", default=None, help="comma-separated libraries (default: tracker and every peer)"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="report to write (default: benchmarks/results.md for a full run; none with --quick)",
    )
    parser.add_argument("--json", default=None, help="also write the raw results here")
    parser.add_argument(
        "--render", default=None, metavar="JSON", help="only re-render a report from --json output"
    )
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            saved = json.load(f)
        text = report.render(saved["results"], saved["meta"])
        with open(args.out or os.path.join(HERE, "results.md"), "w") as f:
            f.write(text)
        return 0

    names = [n for item in args.only for n in item.split(",") if n] or list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    libs = None if args.libs is None else {x.strip() for x in args.libs.split(",") if x.strip()}
    out = args.out
    if out is None and not args.quick:
        out = os.path.join(HERE, "results.md")

    root = tempfile.mkdtemp(prefix="tracker-bench-")
    ctx = Context(quick=args.quick, libs=libs, root=root, verbose=not args.quiet)
    started = _dt.datetime.now(_dt.timezone.utc)
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    try:
        for name in names:
            ctx.say(f"{name}: {WORKLOADS[name].title}")
            w0 = time.perf_counter()
            results[name] = WORKLOADS[name].run(ctx)
            results[name]["wall_s"] = time.perf_counter() - w0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    wall = time.perf_counter() - t0
    ctx.say(f"done in {wall:.0f} s")
    meta = report.machine()
    meta.update(
        started=started.strftime("%Y-%m-%d %H:%M UTC"),
        wall_s=wall,
        quick=args.quick,
        command="python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    )
    text = report.render(results, meta)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=1, default=str)
    if out:
        with open(out, "w") as f:
            f.write(text)
        ctx.say(f"wrote {out}")
    elif not args.quiet:
        print(text)
    failed = [
        name
        for name, res in results.items()
        for row in res.get("rows", [])
        if isinstance(row, dict) and "error" in row and not row.get("skipped")
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
