"""DDP on every rank, one tracker run for the whole job.

    torchrun --nproc_per_node=2 examples/ddp_torchrun.py --steps 50
    # two "nodes" on one machine:
    torchrun --nnodes=2 --node-rank=0 --nproc_per_node=2 --rdzv-backend=c10d \
        --rdzv-endpoint=127.0.0.1:29400 --rdzv-id=demo examples/ddp_torchrun.py   (and --node-rank=1)

Every rank calls tracker.init_run with the same arguments; rank 0 writes the run and
every rank's metrics (here each rank's own loss and step time) land in it by rank.
NCCL is used when every rank has a GPU, gloo otherwise; tracker's own traffic always
goes over a separate gloo group.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

import tracker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    use_cuda = torch.cuda.is_available()
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, local_rank = dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)

    run = tracker.init_run(project="ddp-demo", config=vars(args) | {"world": dist.get_world_size()})
    torch.manual_seed(rank)
    model = DDP(nn.Sequential(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 1)).to(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(args.steps):
        t0 = time.perf_counter()
        x = torch.randn(args.batch_size, 32, device=device)
        loss = model(x).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # Each rank logs its own figures; rank 0's are the plain series, the others' are
        # read per rank (fetch_values(rank=k)) or combined (aggregate="mean").
        run.log({"train/loss": loss.detach(), "perf/step_s": time.perf_counter() - t0}, step=step)
    run.close()
    if rank == 0:
        print(f"run {run.id}: {dist.get_world_size()} ranks logged to one run")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
