"""A small job run under torchrun by tests/distributed; one scenario per --scenario.

Every rank calls tracker.init_run with the same arguments, as a user's script does.
Where a scenario needs events in an order across ranks (a rank dies only once the others
have logged), the ranks hand off through keys in torchrun's store, never by sleeping.
"""

import argparse
import datetime
import os
import signal
import time
from typing import NoReturn

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


def agent_store() -> dist.Store:
    """A client of torchrun's store (MASTER_ADDR:MASTER_PORT under --standalone).

    It outlives an elastic restart, so keys are under a per-attempt prefix.
    """
    agent = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ["MASTER_PORT"]),
        is_master=False,
        timeout=datetime.timedelta(seconds=120),
    )
    return dist.PrefixStore(f"attempt{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", agent)


def logged(store: dist.Store, what: str) -> None:
    """Tell the other ranks this rank has done ``what``."""
    store.set(f"{what}/{rank}", "1")


def wait_for_others(store: dist.Store, what: str) -> None:
    """Block until every other rank has called logged(store, what)."""
    store.wait([f"{what}/{r}" for r in range(world) if r != rank])


def wait_until_stopped() -> NoReturn:
    """Block until torchrun stops this worker, as a rank blocked in a collective would.

    torchrun sends SIGTERM; tracker's handler closes the run and the process dies of it.
    """
    while True:
        signal.pause()


def start_torch():
    if args.scenario == "elastic":
        # torchrun's agent store outlives a restart, and a second attempt's default group
        # can read the first attempt's gloo addresses (a race in torch itself, seen with
        # no tracker at all); a per-attempt key prefix keeps the attempts apart.
        dist.init_process_group("gloo", store=agent_store(), rank=rank, world_size=world)
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
    # Rank 1 dies at step 5, once the other ranks have logged all ten steps: torchrun
    # stops the job when it sees rank 1 gone, and that must not cut rank 0's steps short.
    store = agent_store()
    for step in range(6 if rank == 1 else 10):
        run.log({"loss": float(step)}, step=step)
    if rank == 1:
        run.flush()
        wait_for_others(store, "kill/logged")
        os.kill(os.getpid(), signal.SIGKILL)
    logged(store, "kill/logged")
    t0 = time.monotonic()
    run.close()  # rank 1 never says goodbye: this must not wait on it for long
    os.write(1, f"CLOSE_SECONDS {rank} {time.monotonic() - t0:.2f}\n".encode())
    wait_until_stopped()  # torchrun ends us once it sees rank 1 gone

elif args.scenario == "raise":
    for step in range(5):
        run.log({"loss": float(step)}, step=step)
    if rank == world - 1:
        run.flush()
        raise RuntimeError(f"rank {rank} broke on purpose")
    wait_until_stopped()  # the others are still training when torchrun stops the job

elif args.scenario == "elastic":
    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    run["attempts"] = attempt
    store = agent_store()
    for step in range(5 if attempt else 0, 10):
        run.log({"loss": float(step) + 100 * rank}, step=step)
        if attempt == 0 and step == 5:
            # Rank 1 fails once every rank has logged step 5; the others are still
            # training (blocked here) when torchrun stops them and restarts the job.
            if rank == 1:
                run.flush()
                wait_for_others(store, "elastic/step5")
                raise SystemExit(3)
            logged(store, "elastic/step5")
            wait_until_stopped()
    run.close()

elif args.scenario == "multinode":
    for step in range(10):
        run.log({"loss": float(rank * 10 + step)}, step=step)
    run.close()

dist.destroy_process_group()
