"""The rank coordinator at scale: does the other ranks' traffic slow the writer rank?

    python benchmarks/coordinator_scale.py                      # emulated 64/256/1,024, then torchrun
    python benchmarks/coordinator_scale.py --ranks 64 --torchrun 0   # one emulated size only
    python benchmarks/coordinator_scale.py --torchrun 12 --ranks ''   # real ranks only
    python benchmarks/coordinator_scale.py --compare-gloo   # + real ranks over the gloo group

**Emulated ranks.** Rank 0 is a real training loop (a small MLP on CPU, one thread) with
its run and its ingest process, started as ``init_run`` starts them. The other ranks
are emulated without torch by two sender processes that speak the coordinator's
protocol (``tracker/rank_utils/wire.py``): nodes of 8 ranks, one TCP connection per node
as a node leader holds, every rank logging 20 metrics at 10 steps/s and shipping every
0.5 s. **Real ranks.** The same loop on rank 0 of a torchrun job whose other ranks each
log 20 metrics at 10 steps/s through tracker itself (no process group of the job's own).

Blocks without and with the others' traffic alternate (``--rounds``); the figure is
the ratio of the loop's median step time with traffic to that without. The ingest
reports the points it made durable, its peak RSS, and the delay from a point's
timestamp to the fsync that made it durable (emulated: from the moment a sender built
the batch; real ranks: from the ``run.log`` call, so the 0.5 s shipping interval is in).
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing as mp
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

METRICS = 20
PER_NODE = 8
STEPS_PER_BLOCK = 150
KEYS = tuple(f"train/metric_{i}" for i in range(METRICS))


def _payload(rank: int, step0: int, n: int) -> bytes:
    from tracker.core import ops

    steps = np.arange(step0, step0 + n, dtype=np.int64)
    ts = np.full(n, time.time())
    vals = np.random.default_rng(rank + step0).random((n, METRICS))
    group = (ops.COLS, KEYS, steps.tobytes(), ts.tobytes(), vals.tobytes(), None)
    return pickle.dumps([ops.logs(rank, n, [group])], protocol=5)


def _sender(address: dict[str, Any], ranks: list[int], seconds: float) -> None:
    """Emulated nodes: every 0.5 s each rank's 5 steps, a node's frames in one write."""
    from tracker.rank_utils import wire

    nodes = [ranks[i : i + PER_NODE] for i in range(0, len(ranks), PER_NODE)]
    socks = [wire.connect_tcp(address["hosts"], address["port"]) for _ in nodes]
    for sock, node in zip(socks, nodes, strict=True):
        hellos = (wire.hello(r, f"emulated|{node[0]}", address["token"]) for r in node)
        sock.sendall(b"".join(hellos))
    step, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        for sock, node in zip(socks, nodes, strict=True):
            sock.sendall(b"".join(wire.frame(wire.DATA, r, _payload(r, step, 5)) for r in node))
        step += 5
        time.sleep(max(0.0, start + step / 10 - time.monotonic()))
    for sock, node in zip(socks, nodes, strict=True):
        sock.sendall(b"".join(wire.frame(wire.BYE, r) for r in node))
        sock.close()


class Loop:
    """The writer rank's training: a fixed amount of deterministic CPU work per step."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.torch = torch
        self.model = torch.nn.Sequential(
            torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)
        )
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01)
        self.x, self.y = torch.randn(256, 256), torch.randint(0, 10, (256,))
        self.step = 0

    def block(self, run: Any, steps: int = STEPS_PER_BLOCK) -> float:
        """Median step time of ``steps`` steps, each logging 20 metrics as rank 0 does."""
        F = self.torch.nn.functional
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            self.opt.zero_grad()
            loss = F.cross_entropy(self.model(self.x), self.y)
            loss.backward()
            self.opt.step()
            run.log(dict.fromkeys(KEYS, 0.5), step=self.step)
            self.step += 1
            times.append(time.perf_counter() - t0)
        return statistics.median(times)


def _summary(quiet: list[float], busy: list[float], report: dict[str, Any], seconds: float):
    stats = report.get("stats", {})
    delays = stats.get("delays") or [(float("nan"), float("nan"))]
    worst = sorted(d[0] for d in delays)
    return {
        "ratio": statistics.median(busy) / statistics.median(quiet),
        "step_ms": statistics.median(quiet) * 1e3,
        "points_s": stats.get("points", 0) / seconds,
        "peak_rss_mb": stats.get("peak_rss_mb"),
        "delay_median_s": statistics.median(worst),
        "delay_p95_s": worst[int(0.95 * (len(worst) - 1))],
        "missing": report.get("missing"),
        "frames": stats.get("frames"),
        # The ingest's CPU time over its life, as a share of one core.
        "ingest_cpu": stats.get("cpu_s", 0) / max(stats.get("seconds", 1), 1e-9),
    }


def emulated(ranks: int, rounds: int, seconds: float) -> dict[str, Any]:
    import tracker
    from tracker.rank_utils.ingest import IngestProcess

    store = tempfile.mkdtemp(prefix="scale-")
    run = tracker.init_run(project="scale", store=store, system_metrics=False, quiet=True)
    ingest = IngestProcess.start(
        store=store, run_id=run.id, world_size=ranks + 1, node="writer", stats=True
    )
    address = ingest.wait_ready(60)
    assert address is not None, "the ingest did not start"
    loop = Loop()
    loop.block(run, 50)  # warm-up
    quiet, busy = [], []
    for _ in range(rounds):
        quiet.append(loop.block(run))
        others = list(range(1, ranks + 1))
        senders = [
            mp.Process(target=_sender, args=(address, others[i::2], seconds)) for i in range(2)
        ]
        for p in senders:
            p.start()
        time.sleep(1.0)  # the senders' connections are up and their traffic flowing
        until = time.monotonic() + seconds - 1.5
        while time.monotonic() < until:
            busy.append(loop.block(run))
        for p in senders:
            p.join()
    report = ingest.finish(10) or {}
    run.close()
    return {"ranks": ranks, **_summary(quiet, busy, report, rounds * seconds)}


# -- real torchrun ranks ---------------------------------------------------------------------


def worker(out: str, store_dir: str, rounds: int, seconds: float) -> None:
    """One rank of the torchrun measurement (run by torchrun, not by hand)."""
    import torch.distributed as dist

    import tracker

    rank = int(os.environ["RANK"])
    agent = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=datetime.timedelta(seconds=300),
    )
    run = tracker.init_run(project="scale", store=store_dir, system_metrics=False, quiet=True)
    if rank == 0:
        loop = Loop()
        loop.block(run, 50)
        quiet, busy = [], []
        for i in range(rounds):
            quiet.append(loop.block(run))
            agent.set(f"scale/go/{i}", "1")
            time.sleep(1.0)
            until = time.monotonic() + seconds - 1.0
            while time.monotonic() < until:
                busy.append(loop.block(run))
            agent.set(f"scale/stop/{i}", "1")
        run.close()
        report = getattr(run, "_gatherer", None)
        result = getattr(report, "result", None) or {}
        Path(out).write_text(json.dumps(_summary(quiet, busy, result, rounds * seconds)))
        return
    step = 0
    for i in range(rounds):
        agent.wait([f"scale/go/{i}"])
        start, calls = time.monotonic(), 0
        while not agent.check([f"scale/stop/{i}"]):
            run.log(dict.fromkeys(KEYS, 0.25), step=step)
            step += 1
            calls += 1
            time.sleep(max(0.0, start + calls / 10 - time.monotonic()))  # 10 steps/s
    run.close()


def real(nproc: int, rounds: int, seconds: float, transport: str) -> dict[str, Any]:
    store = tempfile.mkdtemp(prefix="scale-real-")
    out = Path(store) / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc_per_node={nproc}", __file__, "--worker", "--out", str(out)]
    cmd += ["--store", store, "--rounds", str(rounds), "--seconds", str(seconds)]
    env = dict(os.environ, OMP_NUM_THREADS="1", TRACKER_INGEST_STATS="1")
    env["TRACKER_RANK_TRANSPORT"] = transport
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return {"ranks": nproc, "transport": transport, **json.loads(out.read_text())}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['ranks']} | {r.get('transport', 'sockets')} | {r['ratio']:.3f} | "
        f"{r['step_ms']:.2f} | {r['points_s']:,.0f} | {r['peak_rss_mb']} | "
        f"{r['ingest_cpu']:.0%} | {r['delay_median_s']:.2f} / {r['delay_p95_s']:.2f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", default="64,256,1024", help="emulated sizes ('' for none)")
    parser.add_argument("--torchrun", type=int, default=12, help="real ranks (0: none)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--compare-gloo", action="store_true", help="the real ranks again over the gloo group"
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="per round with traffic")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.out, args.store, args.rounds, args.seconds)
        return
    print(f"machine: {_machine()}; load average at start {os.getloadavg()[0]:.2f}")
    print(
        "| ranks | transport | step-time ratio | step ms (alone) | points/s durable "
        "| ingest peak RSS MB | ingest CPU (one core) | delay to durable, median / p95 s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in (int(x) for x in args.ranks.split(",") if x):
        print(_row({**emulated(n, args.rounds, args.seconds), "transport": "emulated"}), flush=True)
    if args.torchrun:
        print(_row(real(args.torchrun, args.rounds, args.seconds, "sockets")), flush=True)
        if args.compare_gloo:
            print(_row(real(args.torchrun, args.rounds, args.seconds, "gloo")), flush=True)


if __name__ == "__main__":
    main()
