"""DDP step time with no logging, with tracker, and with a naive gather.

Launched by ``run.py`` (workload "ddp") as

    torchrun --standalone --nproc_per_node=4 benchmarks/ddp_overhead.py --out R.json --store DIR

Every rank trains the same small MLP under DistributedDataParallel (gloo, CPU) and, in
each mode, every rank produces 20 metrics every step:

- ``none``: the metrics are computed and dropped;
- ``tracker``: ``run.log(metrics, step=step)`` on every rank (one run for the job; rank
  0 writes, the others ship to it in the background);
- ``naive``: ``dist.all_gather_object(metrics)`` every step, rank 0 keeping the lists,
  which is what a script does when it wants every rank's metrics without a tool.

The modes run in interleaved blocks (the order rotates each round) so a change in
machine load hits all three; the first round is warm-up and is not counted. The tracker
run stays open through all blocks (its threads idle in the other modes). At the end
rank 0 reads the run back and checks that every rank's points arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch import nn

import tracker

METRICS = 20
MODES = ("none", "tracker", "naive")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--block", type=int, default=None, help="steps per block")
    parser.add_argument("--rounds", type=int, default=None, help="rounds, the first is warm-up")
    args = parser.parse_args()
    block = args.block or (5 if args.quick else 20)
    rounds = args.rounds or (2 if args.quick else 13)

    torch.set_num_threads(1)  # ranks share the cores: one thread each
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    width = 384
    model = nn.Sequential(
        nn.Linear(128, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10)
    )
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    gen = torch.Generator().manual_seed(rank)
    x = torch.randn(64, 128, generator=gen)
    y = torch.randint(0, 10, (64,), generator=gen)
    loss_fn = nn.CrossEntropyLoss()

    run = tracker.init_run(project="bench-ddp", store=args.store, system_metrics=False)
    gathered: list = []
    times: dict[str, list[float]] = {m: [] for m in MODES}
    per_round: dict[str, list[float]] = {m: [] for m in MODES}  # rank 0's block medians
    logged = 0
    step = 0
    for rnd in range(rounds):
        order = MODES[rnd % 3 :] + MODES[: rnd % 3]
        for mode in order:
            dist.barrier()  # every block starts together
            for _ in range(block):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(ddp(x), y)
                loss.backward()
                opt.step()
                value = loss.item()
                metrics = {f"train/metric_{j}": value * (j + 1) for j in range(METRICS)}
                if mode == "tracker":
                    run.log(metrics, step=step)
                elif mode == "naive":
                    out = [None] * world
                    dist.all_gather_object(out, metrics)
                    if rank == 0:
                        gathered.append(out)
                elapsed = time.perf_counter() - t0
                if rnd > 0:
                    times[mode].append(elapsed)
                if mode == "tracker":
                    logged += 1
                step += 1
            if rnd > 0:
                per_round[mode].append(statistics.median(times[mode][-block:]))
    run.close()

    every = [None] * world
    dist.all_gather_object(every, times)
    if rank == 0:
        reader = tracker.read_run(run.id, store=args.store)
        counts = [
            len(reader["train/metric_0"].fetch_values(rank=None if k == 0 else k))
            for k in range(world)
        ]
        check = "ok" if all(c == logged for c in counts) else "MISMATCH"
        modes = {}
        for mode in MODES:
            mine = sorted(times[mode])
            modes[mode] = {
                "steps": len(mine),
                "median_ms": statistics.median(mine) * 1e3,
                "p90_ms": mine[int(0.9 * (len(mine) - 1))] * 1e3,
                "ranks_median_ms": statistics.median(statistics.median(t[mode]) for t in every)
                * 1e3,
            }
        result = {
            "world_size": world,
            "model": f"MLP 128-{width}-{width}-10, batch 64, SGD, torch {torch.__version__}",
            "metrics": METRICS,
            "block": block,
            "rounds": rounds,
            "modes": modes,
            "ratio_tracker": modes["tracker"]["median_ms"] / modes["none"]["median_ms"],
            "ratio_naive": modes["naive"]["median_ms"] / modes["none"]["median_ms"],
            # Paired by round, so slow drift in machine load cancels out.
            "round_ratio_tracker": statistics.median(
                a / b for a, b in zip(per_round["tracker"], per_round["none"], strict=True)
            ),
            "round_ratio_naive": statistics.median(
                a / b for a, b in zip(per_round["naive"], per_round["none"], strict=True)
            ),
            "check": f"{check}: {counts} points of train/metric_0 per rank, {logged} expected",
            "run_id": run.id,
        }
        with open(args.out, "w") as f:
            json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0 and result["check"].startswith("MISMATCH"):
        raise SystemExit(result["check"])


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
