"""Ingest into a team server on PostgreSQL, side by side with MLflow's tracking server.

    python benchmarks/server_ingest.py                     # N = 8 and 32, 20 s each (~3.5 min)
    python benchmarks/server_ingest.py --clients 8 --seconds 10 --mlflow-seconds 10
    python benchmarks/server_ingest.py --profile           # + where the server's time goes
    python benchmarks/server_ingest.py --json raw.json     # keep the raw figures

Run on demand (not in CI), in the benchmark venv (``.venv-bench``: tracker, mlflow,
fastapi, uvicorn, psycopg, psycopg2, psutil). It prints a Markdown table; README.md
("The team server") gives the method and the figures. It starts a throwaway PostgreSQL cluster (initdb
into a temporary directory, as the ``postgres`` user through runuser when run as root),
one ``tracker server`` on one database of it and MLflow's tracking server on another,
then for each N:

1. **tracker**: N client processes on loopback, each ``tracker.init_run(store=URL)``
   and, after a common start, ``run.log`` of 10 floats with explicit steps as fast as it
   can for ``--seconds`` s, then ``run.close()`` (which returns once the server holds
   every byte of the run's journal). *Sustained points/s* = the points found in
   PostgreSQL afterwards ÷ (the last client's ``close()`` returning − the first client's
   first call). *Apply latency* = the client's round trip of one ``POST .../apply`` (a
   journal batch; the answer comes after the server's PostgreSQL transaction commits),
   p50/p99 over every batch of every client, with the points per batch. *Loss* = points
   logged (counted by the clients) − points in the ``chunks`` table.
2. **MLflow**: N client processes, each ``MlflowClient(URL).create_run`` and then
   ``log_batch`` of 1,000 metrics (100 steps x 10 keys, MLflow's per-request maximum)
   for ``--mlflow-seconds`` s; points/s = rows in MLflow's ``metrics`` table ÷ (last
   call's return − first call's start); latency = one ``log_batch`` round trip.
3. **Paced** (``--paced``, calls/s per client; 0 skips it): the largest N at that rate,
   for the apply latency below saturation.
4. CPU seconds of the clients, the server processes and PostgreSQL during each phase.

Then, with the ingest over, the training thread's cost of ``run.log`` (10 floats) on a
directory store and on the server's URL, in one fresh process, interleaved blocks.
"""

from __future__ import annotations

import argparse
import contextlib
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEYS = [f"train/metric_{i}" for i in range(10)]

# -- PostgreSQL ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_bindir() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    for d in reversed(found):
        if (d / "initdb").exists():
            return d
    which = shutil.which("initdb")
    if which:
        return Path(which).parent
    raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) not found")


def as_pg_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


class Cluster:
    """initdb + pg_ctl start into a temporary directory; ``stop()`` removes it."""

    def __init__(self, base: Path) -> None:
        self.bindir = pg_bindir()
        self.base = base
        self.data = base / "data"
        self.port = free_port()
        if os.geteuid() == 0:
            import pwd

            pw = pwd.getpwnam("postgres")
            os.chown(base, pw.pw_uid, pw.pw_gid)
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                   "--auth=trust", "-E", "UTF8", "--locale=C"])  # fmt: skip
        self.options = (
            f"-p {self.port} -k {base} -c listen_addresses=127.0.0.1 "
            "-c max_connections=300 -c shared_buffers=256MB"
        )
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l",
                   str(base / "pg.log"), "-o", self.options, "-w", "start"])  # fmt: skip
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(as_pg_user(argv), capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise SystemExit(f"{argv[0]} failed: {done.stdout}{done.stderr}")

    def create(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url + "/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"{self.url}/{name}"

    def query(self, db: str, sql: str) -> Any:
        import psycopg

        with psycopg.connect(f"{self.url}/{db}", autocommit=True) as conn:
            row = conn.execute(sql).fetchone()
        return row[0] if row else None

    def pids(self) -> list[int]:
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        import psutil

        parent = psutil.Process(pid)
        return [pid] + [c.pid for c in parent.children(recursive=True)]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                       "-w", "stop"])  # fmt: skip


def cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of these processes, with their reaped children's (a PostgreSQL backend
    that exits is counted in the postmaster's children times)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


def tree(pid: int) -> list[int]:
    import psutil

    with contextlib.suppress(psutil.Error):
        return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    return [pid]


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url} exited: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer: {log.read_text()[-3000:]}")


# -- where the server's time goes (--profile) ------------------------------------------------

# Runs ``tracker server`` with wall and CPU time summed around its steps of an apply
# request (cProfile sees only uvicorn's event-loop thread; the work runs in its pool).
SERVER_TIMINGS = """
import atexit, json, sys, threading, time
from tracker.core.stores import postgres, postgres_apply
from tracker.server import app, wire

out = sys.argv.pop(1)
totals, lock = {}, threading.Lock()

def timed(owner, name, label):
    real = getattr(owner, name)
    def wrapper(*a, **k):
        w, c = time.perf_counter(), time.thread_time()
        try:
            return real(*a, **k)
        finally:
            dw, dc = time.perf_counter() - w, time.thread_time() - c
            with lock:
                t = totals.setdefault(label, [0, 0.0, 0.0])
                t[0] += 1; t[1] += dw; t[2] += dc
    setattr(owner, name, wrapper)

timed(app, "verify_token", "auth: verify_token (a token lookup)")
timed(wire, "decode_batch", "decode + validate the batch")
timed(postgres.PostgresStore, "run", "run row (project check)")
timed(postgres.PostgresStore, "applied_offsets", "applied offsets (applier cache check)")
timed(app.Appliers, "apply", "Appliers.apply (all of the apply below)")
timed(postgres_apply.PostgresApplier, "apply", "PostgresApplier.apply (the transaction)")
atexit.register(lambda: open(out, "w").write(json.dumps(totals)))
from tracker.cli import main
main(prog_name="tracker")
"""


# -- the clients (this file, run with --client SPEC) -------------------------------------------


def client_main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    if spec["kind"] == "tracker":
        tracker_client(spec)
    else:
        mlflow_client(spec)


def _wait_for_go(spec: dict[str, Any]) -> None:
    Path(spec["ready"]).touch()
    go = Path(spec["go"])
    while not go.exists():  # a start barrier for the clients, outside any measurement
        time.sleep(0.001)


def tracker_client(spec: dict[str, Any]) -> None:
    from array import array

    import tracker
    from tracker.core.batch import count_points
    from tracker.core.stores import http

    applies: list[tuple[float, int]] = []
    real_apply = http.HTTPApplier.apply

    def timed_apply(self: Any, batch: Any, position: Any = None) -> int:
        t0 = time.perf_counter()
        out = real_apply(self, batch, position)
        applies.append((time.perf_counter() - t0, count_points(batch)))
        return out

    http.HTTPApplier.apply = timed_apply  # type: ignore[method-assign]
    pool = [{k: float(j + i) for i, k in enumerate(KEYS)} for j in range(1000)]
    run = tracker.init_run("ingest", store=spec["url"], system_metrics=False)
    log = run.log
    costs = array("q")
    perf = time.perf_counter_ns
    _wait_for_go(spec)
    t_first = time.time()
    start = time.monotonic()
    end = start + spec["seconds"]
    step = 0
    rate = spec.get("rate")  # calls/s, in ticks of 10 ms; None: as fast as it can
    burst = max(1, int(rate / 100)) if rate else 1000
    tick = 0
    while True:
        for j in range(burst):
            t0 = perf()
            log(pool[j % 1000], step=step)
            costs.append(perf() - t0)
            step += 1
        now = time.monotonic()
        if now >= end:
            break
        if rate:
            tick += 1
            ahead = start + tick * burst / rate - now
            if ahead > 0:
                time.sleep(ahead)  # the pace of a training loop, outside the timed calls
    t_logged = time.time()
    run.close()
    t_closed = time.time()
    writer = getattr(run, "_writer", None)
    waits = list(getattr(writer, "waits", []) or [])
    s = sorted(costs)
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "run_id": run.id,
                "calls": step,
                "points": step * len(KEYS),
                "t_first": t_first,
                "t_logged": t_logged,
                "t_closed": t_closed,
                "log_median_us": s[len(s) // 2] / 1e3,
                "log_p99_us": s[int(len(s) * 0.99)] / 1e3,
                "log_max_ms": s[-1] / 1e6,
                "backpressure_waits": len(waits),
                "backpressure_wait_s": sum(waits),
                "applies": applies,
            }
        )
    )


def mlflow_client(spec: dict[str, Any]) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=spec["url"])
    exp = client.get_experiment_by_name("ingest")
    exp_id = exp.experiment_id if exp else "0"
    run = client.create_run(exp_id)
    rid = run.info.run_id
    steps_per_call = 100
    _wait_for_go(spec)
    t_first = time.time()
    end = time.monotonic() + spec["seconds"]
    step = 0
    lat = []
    while time.monotonic() < end:
        ts = int(time.time() * 1000)
        metrics = [
            Metric(k, float(s + i), ts, s)
            for s in range(step, step + steps_per_call)
            for i, k in enumerate(KEYS)
        ]
        t0 = time.perf_counter()
        client.log_batch(rid, metrics=metrics)
        lat.append(time.perf_counter() - t0)
        step += steps_per_call
    t_closed = time.time()
    client.set_terminated(rid)
    Path(spec["out"]).write_text(
        json.dumps(
            {
                "run_id": rid,
                "calls": len(lat),
                "points": step * len(KEYS),
                "t_first": t_first,
                "t_closed": t_closed,
                "latencies": lat,
            }
        )
    )


# -- the phases ---------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * q))] if s else float("nan")


def loadavg() -> float:
    return os.getloadavg()[0]


def run_clients(
    kind: str, n: int, url: str, seconds: float, work: Path, env: dict[str, str],
    server_pids: list[int], cluster: Cluster, rate: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float]]:  # fmt: skip
    phase = work / f"{kind}-{n}-{rate or 'max'}"
    phase.mkdir()
    go = phase / "go"
    procs = []
    for i in range(n):
        spec = {
            "kind": kind,
            "rate": rate,
            "url": url,
            "seconds": seconds,
            "ready": str(phase / f"ready-{i}"),
            "go": str(go),
            "out": str(phase / f"out-{i}.json"),
        }
        path = phase / f"spec-{i}.json"
        path.write_text(json.dumps(spec))
        err = open(phase / f"err-{i}.txt", "wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, "--client", str(path)],
                env=env,
                stdout=err,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        )
        err.close()
    deadline = time.monotonic() + 300
    while not all((phase / f"ready-{i}").exists() for i in range(n)):
        for i, p in enumerate(procs):
            if p.poll() is not None:
                raise SystemExit(f"client {i} died: {(phase / f'err-{i}.txt').read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit("clients did not start")
        time.sleep(0.05)
    pg_pids = cluster.pids()
    cpu0 = {
        "server": cpu_seconds(server_pids),
        "postgres": cpu_seconds(pg_pids),
    }
    load0 = loadavg()
    go.touch()
    for i, p in enumerate(procs):
        if p.wait(1800) != 0:
            raise SystemExit(f"client {i} failed: {(phase / f'err-{i}.txt').read_text()[-3000:]}")
    # The clients' CPU is counted by the caller (our reaped children's rusage, start-up
    # included); the server's and PostgreSQL's from the start signal on.
    pg_pids = list(set(pg_pids) | set(cluster.pids()))
    cpu = {
        "server": cpu_seconds(server_pids) - cpu0["server"],
        "postgres": cpu_seconds(pg_pids) - cpu0["postgres"],
        "load_start": load0,
        "load_end": loadavg(),
    }
    results = [json.loads((phase / f"out-{i}.json").read_text()) for i in range(n)]
    return results, cpu


def tracker_phase(
    n: int, url: str, seconds: float, work: Path, env: dict[str, str],
    server_pids: list[int], cluster: Cluster, db: str, rate: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    before = cluster.query(db, "SELECT coalesce(sum(n), 0) FROM chunks")
    children0 = _children_cpu()
    results, cpu = run_clients("tracker", n, url, seconds, work, env, server_pids, cluster, rate)
    cpu["clients"] = _children_cpu() - children0
    stored = cluster.query(db, "SELECT coalesce(sum(n), 0) FROM chunks") - before
    logged = sum(r["points"] for r in results)
    t0 = min(r["t_first"] for r in results)
    t_logged = max(r["t_logged"] for r in results)
    t1 = max(r["t_closed"] for r in results)
    ids = [r["run_id"] for r in results]
    finished = cluster.query(
        db,
        "SELECT count(*) FROM runs WHERE status = 'finished' AND run_id IN ("
        + ",".join(f"'{i}'" for i in ids)
        + ")",
    )
    lat = [a[0] for r in results for a in r["applies"]]
    sizes = [a[1] for r in results for a in r["applies"]]
    return {
        "clients": n,
        "rate": rate,
        "seconds": seconds,
        "points_logged": logged,
        "points_stored": int(stored),
        "lost": logged - int(stored),
        "runs_finished": finished,
        "wall_s": t1 - t0,
        "logging_s": t_logged - t0,
        "points_per_s": stored / (t1 - t0),
        "offered_points_per_s": logged / (t_logged - t0),
        "apply_requests": len(lat),
        "apply_p50_ms": pct(lat, 0.5) * 1e3,
        "apply_p99_ms": pct(lat, 0.99) * 1e3,
        "batch_points_median": pct(sizes, 0.5),
        "log_median_us": statistics.median(r["log_median_us"] for r in results),
        "log_p99_us": statistics.median(r["log_p99_us"] for r in results),
        "log_max_ms": max(r["log_max_ms"] for r in results),
        "backpressure_wait_s": sum(r["backpressure_wait_s"] for r in results),
        "cpu": cpu,
    }


def mlflow_phase(
    n: int, url: str, seconds: float, work: Path, env: dict[str, str],
    server_pids: list[int], cluster: Cluster, db: str,
) -> dict[str, Any]:  # fmt: skip
    before = cluster.query(db, "SELECT count(*) FROM metrics")
    children0 = _children_cpu()
    results, cpu = run_clients("mlflow", n, url, seconds, work, env, server_pids, cluster)
    cpu["clients"] = _children_cpu() - children0
    stored = cluster.query(db, "SELECT count(*) FROM metrics") - before
    logged = sum(r["points"] for r in results)
    t0 = min(r["t_first"] for r in results)
    t1 = max(r["t_closed"] for r in results)
    lat = [x for r in results for x in r["latencies"]]
    return {
        "clients": n,
        "seconds": seconds,
        "points_logged": logged,
        "points_stored": int(stored),
        "lost": logged - int(stored),
        "wall_s": t1 - t0,
        "points_per_s": stored / (t1 - t0),
        "requests": len(lat),
        "batch_p50_ms": pct(lat, 0.5) * 1e3,
        "batch_p99_ms": pct(lat, 0.99) * 1e3,
        "cpu": cpu,
    }


def _children_cpu() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


LOG_COST = """
import json, statistics, sys, time
import tracker
url, directory, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
keys = [f"train/metric_{i}" for i in range(10)]
pool = [{k: float(j + i) for i, k in enumerate(keys)} for j in range(1000)]
runs = {
    "directory": tracker.init_run("cost", store=directory, system_metrics=False),
    "url": tracker.init_run("cost", store=url, system_metrics=False),
}
costs = {k: [] for k in runs}
perf = time.perf_counter_ns
step = 0
for block in range(calls // 5000):
    for name, run in runs.items():
        log, out = run.log, costs[name]
        for j in range(5000):
            d = pool[j % 1000]
            t0 = perf()
            log(d, step=step + j)
            out.append(perf() - t0)
    step += 5000
for run in runs.values():
    run.close()
res = {}
for name, c in costs.items():
    c.sort()
    res[name] = {"median_us": c[len(c) // 2] / 1e3, "p99_us": c[int(len(c) * 0.99)] / 1e3}
print(json.dumps(res))
"""


def log_cost(url: str, work: Path, env: dict[str, str], calls: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", LOG_COST, url, str(work / "cost-dir"), str(calls)],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if out.returncode:
        raise SystemExit(f"log cost failed: {out.stderr[-3000:]}")
    res = json.loads(out.stdout.strip().splitlines()[-1])
    res["calls"] = calls
    res["load"] = loadavg()
    return res


# -- main ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--client", help=argparse.SUPPRESS)
    ap.add_argument("--clients", type=int, action="append", help="N (repeatable; default 8, 32)")
    ap.add_argument("--seconds", type=float, default=20.0, help="tracker clients log this long")
    ap.add_argument("--mlflow-seconds", type=float, default=20.0)
    ap.add_argument("--mlflow-workers", type=int, default=4, help="MLflow server workers")
    ap.add_argument("--no-mlflow", action="store_true")
    ap.add_argument(
        "--paced",
        type=float,
        default=2000.0,
        help="then 32 clients at this many calls/s each (0: skip), for latency below saturation",
    )
    ap.add_argument("--cost-calls", type=int, default=200_000)
    ap.add_argument("--profile", action="store_true", help="time the server's steps of an apply")
    ap.add_argument("--json", help="write the raw figures here")
    args = ap.parse_args()
    if args.client:
        client_main(args.client)
        return
    counts = args.clients or [8, 32]
    work = Path(tempfile.mkdtemp(prefix="server-ingest-"))
    os.chmod(work, 0o755)
    pg_base = work / "pg"
    pg_base.mkdir()
    started = time.time()
    print(f"[{time.strftime('%H:%M:%S')}] PostgreSQL cluster in {pg_base}", flush=True)
    cluster = Cluster(pg_base)
    procs: list[subprocess.Popen[bytes]] = []
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": platform.python_version(),
            "postgres": subprocess.run(
                [str(cluster.bindir / "postgres"), "--version"], capture_output=True, text=True
            ).stdout.strip(),
            "load_at_start": loadavg(),
        },
        "tracker": [],
        "mlflow": [],
    }
    try:
        tdb = "tracker_bench"
        store_url = cluster.create(tdb)
        env = dict(os.environ)
        for k in list(env):
            if k.startswith(("TRACKER_", "MLFLOW_", "WANDB_")):
                del env[k]
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(":")
        env["TRACKER_QUIET"] = "1"
        env["TRACKER_PG_JOURNAL_DIR"] = str(work / "pg-journals")
        env["TRACKER_SPOOL_DIR"] = str(work / "spool")
        env["TRACKER_SERVER_CLOSE_TIMEOUT"] = "1800"
        env["HOME"] = str(work / "home")
        env["OMP_NUM_THREADS"] = "1"
        # The server and its token.
        sys.path.insert(0, str(ROOT))
        os.environ["TRACKER_PG_JOURNAL_DIR"] = env["TRACKER_PG_JOURNAL_DIR"]
        from tracker.core.stores import open_store
        from tracker.server.tokens import create_token

        st = open_store(store_url)
        token, _ = create_token(st, "ingest", "write")
        cost_token, _ = create_token(st, "cost", "write")
        st.close()
        port = free_port()
        tlog = work / "tracker-server.log"
        server_cmd = [sys.executable, "-m", "tracker.cli", "server", "--store", store_url,
                      "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]  # fmt: skip
        if args.profile:
            server_cmd = [sys.executable, "-c", SERVER_TIMINGS, str(work / "timings.json"),
                          *server_cmd[3:]]  # fmt: skip
        with open(tlog, "wb") as f:
            tserver = subprocess.Popen(server_cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        procs.append(tserver)
        turl = f"http://127.0.0.1:{port}"
        wait_http(turl + "/api/health", 60, tserver, tlog)
        report["tracker_server"] = "1 process (uvicorn, 1 worker), access log off"
        # MLflow's server on the same cluster.
        murl = None
        if not args.no_mlflow:
            mdb = "mlflow_bench"
            cluster.create(mdb)
            mport = free_port()
            mlog = work / "mlflow-server.log"
            menv = dict(env, MLFLOW_HOME=str(work / "mlflow"))
            mlflow_bin = str(Path(sys.executable).parent / "mlflow")
            with open(mlog, "wb") as f:
                mserver = subprocess.Popen(
                    [mlflow_bin, "server", "--backend-store-uri",
                     f"postgresql+psycopg2://postgres@127.0.0.1:{cluster.port}/{mdb}",
                     "--default-artifact-root", str(work / "mlflow-artifacts"),
                     "--host", "127.0.0.1", "--port", str(mport),
                     "--workers", str(args.mlflow_workers)],
                    env=menv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True,
                )  # fmt: skip
            procs.append(mserver)
            murl = f"http://127.0.0.1:{mport}"
            wait_http(murl + "/health", 300, mserver, mlog)
            import mlflow

            report["mlflow_server"] = (
                f"mlflow {mlflow.__version__} server, {args.mlflow_workers} workers"
            )
        for n in counts:
            say(f"tracker: {n} clients, {args.seconds:g} s of logging")
            tenv = dict(env, TRACKER_API_TOKEN=token)
            res = tracker_phase(n, turl, args.seconds, work, tenv, tree(tserver.pid), cluster, tdb)
            say(json.dumps(res))
            report["tracker"].append(res)
            if murl is not None:
                say(f"mlflow: {n} clients, {args.mlflow_seconds:g} s of log_batch")
                res = mlflow_phase(
                    n, murl, args.mlflow_seconds, work, env, tree(procs[1].pid), cluster,
                    "mlflow_bench",
                )  # fmt: skip
                say(json.dumps(res))
                report["mlflow"].append(res)
        if args.paced:
            n = max(counts)
            say(f"tracker: {n} clients at {args.paced:g} calls/s each, {args.seconds:g} s")
            tenv = dict(env, TRACKER_API_TOKEN=token)
            res = tracker_phase(
                n, turl, args.seconds, work, tenv, tree(tserver.pid), cluster, tdb, args.paced
            )
            say(json.dumps(res))
            report["paced"] = res
        say("run.log cost: directory store vs the server's URL")
        report["log_cost"] = log_cost(
            turl, work, dict(env, TRACKER_API_TOKEN=cost_token), args.cost_calls
        )
        say(json.dumps(report["log_cost"]))
    finally:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    if p is procs[0]:
                        p.send_signal(signal.SIGINT)  # uvicorn exits cleanly (--profile's atexit)
                    else:
                        os.killpg(p.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(30)
                if p.poll() is None:
                    p.kill()
        cluster.stop()
    report["wall_s"] = time.time() - started
    render(report)
    timings = work / "timings.json"
    if args.profile and timings.exists():
        report["server_timings"] = json.loads(timings.read_text())
        print("where the server's time goes (all phases): calls, wall s, CPU s")
        for label, (calls, wall, cpu) in report["server_timings"].items():
            print(f"  {label}: {calls}, {wall:.2f}, {cpu:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    shutil.rmtree(work, ignore_errors=True)


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def render(report: dict[str, Any]) -> None:
    m = report["machine"]
    print()
    print(f"machine: {m['cpu']}, {m['cpus']} cores; {m['postgres']}; Python {m['python']}")
    print("| clients | tracker points/s | apply p50 / p99 | points/batch | lost | "
          "MLflow points/s | log_batch p50 / p99 | ratio | load |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    mlf = {r["clients"]: r for r in report["mlflow"]}
    for t in report["tracker"] + ([report["paced"]] if report.get("paced") else []):
        mr = None if t.get("rate") else mlf.get(t["clients"])
        mcol = (
            f"{mr['points_per_s']:,.0f} | {mr['batch_p50_ms']:.1f} / {mr['batch_p99_ms']:.1f} ms"
            if mr
            else "- | -"
        )
        ratio = f"{t['points_per_s'] / mr['points_per_s']:.0f}x" if mr else "-"
        who = f"{t['clients']}" + (f" at {t['rate']:g} calls/s" if t.get("rate") else "")
        print(
            f"| {who} | {t['points_per_s']:,.0f} | {t['apply_p50_ms']:.1f} / "
            f"{t['apply_p99_ms']:.1f} ms | {t['batch_points_median']:,.0f} | {t['lost']} | "
            f"{mcol} | {ratio} | {t['cpu']['load_start']:.1f}-{t['cpu']['load_end']:.1f} |"
        )
    for name in ("tracker", "mlflow"):
        for t in report[name] + (
            [report["paced"]] if name == "tracker" and report.get("paced") else []
        ):
            cpu = t["cpu"]
            print(
                f"CPU s, {name} {t['clients']} clients{' paced' if t.get('rate') else ''} "
                f"({t['wall_s']:.1f} s wall): clients {cpu['clients']:.1f}, server "
                f"{cpu['server']:.1f}, PostgreSQL {cpu['postgres']:.1f}"
            )
    c = report.get("log_cost")
    if c:
        print(
            f"run.log of 10 floats: directory {c['directory']['median_us']:.2f} / "
            f"{c['directory']['p99_us']:.2f} us, URL {c['url']['median_us']:.2f} / "
            f"{c['url']['p99_us']:.2f} us (median / p99, {c['calls']:,} calls each)"
        )
    print(f"wall {report['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
