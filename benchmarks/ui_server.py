"""The web UI's server side: a chart of a 10 M-point series and the runs table of 10,000 runs.

    python benchmarks/ui_server.py                 # ~1 min: writes a store, measures
    python benchmarks/ui_server.py --repeat 20 --json raw.json
    python benchmarks/ui_server.py --postgres     # + the runs table on PostgreSQL (~2 min)

Writes a throwaway directory store (one run with a 10,000,000-point series, 10,000 small
runs with config, tags and two metrics), then measures, each ``--repeat`` times, median
and p90:

1. **chart, cold**: ``GET /api/ui/runs/<id>/values?path=train/loss&buckets=1000`` on a
   fresh ``UI`` (nothing kept in memory): read the series' chunk summaries (a few bytes
   per 1,024 steps, each checked against its CRC) instead of its 10 M points, merge them
   into block-aligned buckets. The store's file is in the page cache (read once before).
2. **chart, warm**: the same request again (the summaries kept: the live update, another
   bucket count), and a zoom to 10 % of the steps (1 M points: read from the chunks of
   that range and bucketed point by point).
3. **runs table**: ``GET /api/ui/runs?project=big&metrics=train/loss,val/acc``, the
   listing with tags, config and the last values, serialised to JSON.

"Server" times are measured in this process around the handler's work and the JSON
encoding; "HTTP" times are a client's round trip to a real ``tracker ui`` process on
loopback (urllib; the runs table gzipped, as browsers ask for it).

``--postgres`` also writes the 10,000 runs into a throwaway PostgreSQL cluster (as
tests/server/postgres_cluster.py starts one) and times the runs table there, in bulk
(what the UI does) and run by run (what any other store gets).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.ui.populate import cols_logs, make_many, make_run  # noqa: E402
from tracker.core.stores import open_store  # noqa: E402
from tracker.server.ui_routes import UI, dumps  # noqa: E402

POINTS = 10_000_000
RUNS = 10_000


def write_store(root: Path) -> str:
    st = open_store(str(root))
    try:
        rid = "bench10m01"
        make_run(st, rid, "vision", name="ten-million", status=None)
        applier = st.applier(rid)
        per = 1_000_000
        for k in range(POINTS // per):
            steps = np.arange(k * per, (k + 1) * per, dtype=np.int64)
            vals = np.sin(steps / 50_000.0)
            if k == 6:
                vals[543_210] = 1234.5
            applier.apply([cols_logs(0, {"train/loss": vals}, steps, 1.0e9)], ("0001.jnl", 100 + k))
        applier.apply([("status", "finished", time.time(), None)], ("0001.jnl", 1000))
        make_many(st, RUNS, project="big")
    finally:
        st.close()
    return rid


def stats(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {
        "median_ms": round(statistics.median(xs) * 1000, 1),
        "p90_ms": round(xs[min(len(xs) - 1, int(len(xs) * 0.9))] * 1000, 1),
        "min_ms": round(xs[0] * 1000, 1),
    }


def timed(fn: Any, repeat: int) -> tuple[dict[str, float], Any]:
    out = None
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return stats(times), out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, gzipped: bool = False) -> bytes:
    req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"} if gzipped else {})
    with urllib.request.urlopen(req, timeout=120) as resp:
        body = resp.read()
        if resp.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
    return body


def postgres_table(repeat: int) -> dict[str, Any]:
    from tests.server.postgres_cluster import cluster, database_url
    from tracker.server.ui_routes import list_runs_fast

    out: dict[str, Any] = {}
    with cluster() as url:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute('CREATE DATABASE "uibench"')
        os.environ.setdefault("TRACKER_PG_JOURNAL_DIR", tempfile.mkdtemp(prefix="tracker-pg-j-"))
        st = open_store(database_url(url, "uibench"))
        t0 = time.perf_counter()
        make_many(st, RUNS, project="big")
        out["pg_written_s"] = round(time.perf_counter() - t0, 1)
        metrics = ["train/loss", "val/acc"]
        out["runs_table_pg_bulk"], body = timed(
            lambda: dumps(list_runs_fast(st, "big", metrics)), repeat
        )
        out["runs_table_pg_run_by_run"], _ = timed(
            lambda: dumps(list_runs_fast(st, "big", metrics, bulk=False)), max(1, repeat // 5)
        )
        st.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--json", default=None, help="write the raw figures here")
    ap.add_argument("--keep", default=None, help="use (or keep) the store in this directory")
    ap.add_argument(
        "--postgres", action="store_true", help="also time the runs table on PostgreSQL"
    )
    args = ap.parse_args()

    tmp = Path(args.keep or tempfile.mkdtemp(prefix="tracker-ui-bench-"))
    root = tmp / "store"
    t0 = time.perf_counter()
    if (root / "store.db").exists():
        rid = "bench10m01"
    else:
        rid = write_store(root)
    written = time.perf_counter() - t0
    results: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "store_written_s": round(written, 1),
    }
    st = open_store(str(root), create=False, readonly=True)
    (root / "store.db").read_bytes()  # into the page cache

    query = dict(path="train/loss", rank=0, buckets=1000, start=None, end=None, aggregate=None)

    def cold() -> Any:
        return dumps(UI(st).values(rid, None, **query))  # type: ignore[arg-type]

    results["chart_cold_server"], body = timed(cold, max(3, args.repeat // 2))
    doc = json.loads(body)
    assert doc["points"] == POINTS and doc["buckets"] <= 1000 and max(doc["max"]) == 1234.5
    ui = UI(st)
    ui.values(rid, None, **query)  # type: ignore[arg-type]
    results["chart_warm_server"], _ = timed(
        lambda: dumps(ui.values(rid, None, **query)),  # type: ignore[arg-type]
        args.repeat,
    )
    zoom = dict(query, start=4_000_000, end=4_999_999)
    results["chart_zoom_10pct_server"], _ = timed(
        lambda: dumps(ui.values(rid, None, **zoom)),  # type: ignore[arg-type]
        args.repeat,
    )
    metrics = ["train/loss", "val/acc"]
    results["runs_table_server"], body = timed(lambda: dumps(ui.runs("big", metrics)), args.repeat)
    assert len(json.loads(body)["runs"]) == RUNS
    results["runs_table_json_bytes"] = len(body)

    port = free_port()
    log = open(tmp / "ui.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "ui", "--store", str(root), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(base + "/")
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((tmp / "ui.log").read_text()) from None
                time.sleep(0.1)  # waiting for the server to listen, not synchronising
        url = f"{base}/api/ui/runs/{rid}/values?path=train/loss&buckets=1000"
        first = time.perf_counter()
        get(url)
        results["chart_first_http_ms"] = round((time.perf_counter() - first) * 1000, 1)
        results["chart_warm_http"], _ = timed(lambda: get(url), args.repeat)
        table = f"{base}/api/ui/runs?project=big&metrics=train/loss,val/acc"
        results["runs_table_http_gzip"], _ = timed(lambda: get(table, True), args.repeat)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        log.close()
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)

    if args.postgres:
        results.update(postgres_table(args.repeat))

    print(f"machine: {results['machine']}")
    print("| measure | median | p90 | target |")
    print("|---|---:|---:|---:|")
    rows = [
        ("chart of 10 M points, 1,000 buckets, cold (server)", "chart_cold_server", ""),
        ("chart of 10 M points, 1,000 buckets, warm (server)", "chart_warm_server", "150 ms"),
        ("zoom to 1 M steps of it, warm (server)", "chart_zoom_10pct_server", ""),
        ("chart, warm (HTTP round trip)", "chart_warm_http", ""),
        ("runs table, 10,000 runs + 2 metrics (server)", "runs_table_server", "300 ms"),
        ("runs table (HTTP round trip, gzip)", "runs_table_http_gzip", ""),
        ("runs table on PostgreSQL, bulk (server)", "runs_table_pg_bulk", "300 ms"),
        ("runs table on PostgreSQL, run by run (server)", "runs_table_pg_run_by_run", ""),
    ]
    for label, key, target in rows:
        if key not in results:
            continue
        s = results[key]
        print(f"| {label} | {s['median_ms']} ms | {s['p90_ms']} ms | {target} |")
    print(f"first chart request over HTTP after start: {results['chart_first_http_ms']} ms")
    print(f"runs table JSON: {results['runs_table_json_bytes'] / 1e6:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
