"""A training job for tests/server/test_server_faults.py, run under torchrun (gloo, CPU).

Every rank trains (one all_reduce per step) and logs every step to one run whose writer
(rank 0) writes through ``--store http://...``. The test kills and restarts the tracker
server meanwhile; it tells the job where it is through files in ``--control``:

- rank 0 writes ``logged`` once ``--before`` steps are logged and durable on the server;
- the test writes ``killed`` once the server is dead, ``restarted`` once it answers again.

Rank 0 reads those files at each step and shares what it saw through the step's
collective, so every rank logs the same steps in the same phase. The job logs
``--after`` more steps once the server is back, then closes the run. Rank 0 prints
``RUN_ID <id>``, ``AWAY <first step logged with the server dead>``, ``BACK <first step
logged with it back>`` and ``STEPS <steps logged in all>``.
"""

import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

import tracker

p = argparse.ArgumentParser()
p.add_argument("--store", required=True)
p.add_argument("--control", required=True)
p.add_argument("--before", type=int, default=50)
p.add_argument("--after", type=int, default=50)
p.add_argument("--step-seconds", type=float, default=0.005)
args = p.parse_args()

rank = int(os.environ["RANK"])
control = Path(args.control)

dist.init_process_group("gloo")
run = tracker.init_run(project="faults", store=args.store, system_metrics=False)
if rank == 0:
    os.write(1, f"RUN_ID {run.id}\n".encode())


def phase_seen_by_rank0() -> int:
    """0: the server has not been killed yet; 1: it is dead; 2: it answers again."""
    if rank != 0:
        return 0
    if (control / "restarted").exists():
        return 2
    if (control / "killed").exists():
        return 1
    return 0


away = back = None
step = 0
while True:
    # The step's collective carries rank 0's phase to every rank (a sum: the others add 0).
    phase_t = torch.tensor([float(phase_seen_by_rank0())])
    dist.all_reduce(phase_t)
    phase = int(phase_t.item())
    if phase >= 1 and away is None:
        away = step
    if phase == 2 and back is None:
        back = step
    if back is not None and step >= back + args.after:
        break
    grad = torch.tensor([float(step + rank)])
    dist.all_reduce(grad)
    run.log({"train/loss": 1.0 / (step + 1) + rank, "train/grad_sum": grad.item()}, step=step)
    step += 1
    if step == args.before and phase == 0:
        run.flush()  # these steps are on the server before it is killed
        if rank == 0:
            (control / "logged").touch()
    # Stands for the forward/backward pass: the job's pace, not a synchronisation (the
    # order of events comes from the control files and the collectives above).
    time.sleep(args.step_seconds)

if rank == 0:
    os.write(1, f"AWAY {away}\nBACK {back}\nSTEPS {step}\n".encode())
run.close()
dist.destroy_process_group()
