"""Quickstart: train a small MLP on synthetic data and track it with tracker.

    python examples/quickstart.py --steps 300

The run goes to the embedded store ./.tracker (or $TRACKER_STORE). Look at it with
``tracker ls`` and ``tracker show latest``, or in Python with ``tracker.read_run(id)``.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import tracker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    args = parser.parse_args()

    torch.manual_seed(0)
    true_w = torch.randn(20, 1)
    model = nn.Sequential(nn.Linear(20, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)

    run = tracker.init_run(project="quickstart", tags=["mlp", "synthetic"], config=vars(args))
    with run:
        for step in range(args.steps):
            t0 = time.perf_counter()
            x = torch.randn(args.batch_size, 20)
            y = x @ true_w + 0.1 * torch.randn(args.batch_size, 1)
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            # A one-element tensor is fine: tracker reads it (off the GPU, off this thread).
            run.log(
                {
                    "train/loss": loss.detach(),
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/step_ms": (time.perf_counter() - t0) * 1e3,
                },
                step=step,
            )
            if step % 50 == 0 or step == args.steps - 1:
                with torch.no_grad():
                    xv = torch.randn(512, 20)
                    val = nn.functional.mse_loss(model(xv), xv @ true_w).item()
                run["eval/loss"].append(val, step=step)
        run["eval/final_loss"] = val
    print(f"run {run.id} ({run.project}) finished: final eval loss {val:.4f}")


if __name__ == "__main__":
    main()
