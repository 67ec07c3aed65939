"""A small job run under torchrun by tests/distributed; one scenario per --scenario.

Every rank calls tracker.init_run with the same arguments, as a user's script does.
"""

import argparse
import os
import signal
import time

import torch
import torch.distributed as dist

import tracker

p = argparse.ArgumentParser()
p.add_argument("--store", required=True)
p.add_argument("--scenario", required=True)
p.add_argument("--init-first", choices=["tracker", "torch"], default="torch")
args = p.parse_args()

rank = int(os.environ["RANK"])
world = int(os.environ["WORLD_SIZE"])


def start_torch():
    if args.scenario == "elastic":
        # torchrun's agent store outlives a restart, and a second attempt's default group
        # can read the first attempt's gloo addresses (a race in torch itself, seen with
        # no tracker at all); a per-attempt key prefix keeps the attempts apart.
        attempt = os.environ["TORCHELASTIC_RESTART_COUNT"]
        agent = dist.TCPStore(
            os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False
        )
        dist.init_process_group(
            "gloo", store=dist.PrefixStore(f"attempt{attempt}", agent), rank=rank, world_size=world
        )
    else:
        dist.init_process_group("gloo")


if args.init_first == "torch":
    start_torch()
# An elastic restart resumes from the last checkpoint (here: step 4) on every rank.
restarted = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0"
run = tracker.init_run(
    project="dist",
    store=args.store,
    config={"world": world},
    system_metrics=0.2,
    resume_from_step=4 if args.scenario == "elastic" and restarted else None,
)
if args.init_first == "tracker":
    start_torch()
assert run.rank == rank and run.world_size == world and run.is_writer == (rank == 0)
# One write(2) per line: ranks share the pipe, and a line must not be split by another's.
os.write(1, f"RUN_ID {rank} {run.id}\n".encode())

if args.scenario == "basic":
    for step in range(20):
        t = torch.tensor([float(rank)])
        dist.all_reduce(t)  # a real collective of the job beside ours
        run.log({"train/loss": 1.0 / (step + 1) + rank, "train/sum": t.item()}, step=step)
    run["eval/score"] = float(rank)
    run.close()

elif args.scenario == "uneven":
    # rank 1 logs three times as often as rank 0, rank 2 logs nothing, keys differ.
    if rank == 0:
        for step in range(30):
            run.log({"loss": float(step)}, step=step)
    elif rank == 1:
        for step in range(90):
            run.log({"loss": float(step), f"only/rank{rank}": 1.0}, step=step)
    dist.barrier()
    run.close()

elif args.scenario == "kill":
    for step in range(10):
        run.log({"loss": float(step)}, step=step)
        if rank == 1 and step == 5:
            run.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.05)
    t0 = time.monotonic()
    run.close()
    os.write(1, f"CLOSE_SECONDS {rank} {time.monotonic() - t0:.2f}\n".encode())
    time.sleep(30)  # leave it to torchrun to end us once it sees rank 1 gone

elif args.scenario == "raise":
    for step in range(5):
        run.log({"loss": float(step)}, step=step)
    if rank == world - 1:
        run.flush()
        raise RuntimeError(f"rank {rank} broke on purpose")
    time.sleep(30)  # the others are still training when torchrun stops the job

elif args.scenario == "elastic":
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    run["attempts"] = attempt
    for step in range(5 if attempt else 0, 10):
        run.log({"loss": float(step) + 100 * rank}, step=step)
        if attempt == 0 and rank == 1 and step == 5:
            run.flush()
            raise SystemExit(3)  # the worker fails once; torchrun restarts the job
        time.sleep(0.02)
    run.close()

elif args.scenario == "multinode":
    for step in range(10):
        run.log({"loss": float(rank * 10 + step)}, step=step)
    run.close()

dist.destroy_process_group()
