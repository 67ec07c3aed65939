"""Train a tiny MLP with Horovod and log every rank's loss to one tracker run.

Run it (Horovod built with `scripts/build_horovod.sh "$(which python)"`):

    horovodrun -np 2 -H localhost:2 --gloo python examples/horovod_train.py

Every rank calls `tracker.init_run` with the same arguments; the rank coordinator
makes them share one run, with rank 0 writing it.
"""

import horovod.torch as hvd
import torch
from torch import nn

import tracker

STEPS = 30
BATCH = 32
LR = 0.05


def main() -> None:
    hvd.init()
    torch.manual_seed(1234 + hvd.rank())  # distinct data per rank, as a sharded loader gives

    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
    # The LR scales with the world size because DistributedOptimizer averages gradients.
    optimizer = torch.optim.SGD(model.parameters(), lr=LR * hvd.size())
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    # Start every rank from rank 0's weights, or the replicas drift apart from step 0.
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    config = {"steps": STEPS, "batch_size": BATCH, "lr": LR, "world_size": hvd.size()}
    run = tracker.init_run(project="horovod-demo", config=config)

    true_w = torch.linspace(-1.0, 1.0, 16).unsqueeze(1)
    for step in range(STEPS):
        x = torch.randn(BATCH, 16)
        y = x @ true_w + 0.1 * torch.randn(BATCH, 1)
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        run.log({"train/loss": loss.item(), "train/lr": optimizer.param_groups[0]["lr"]}, step=step)

    run.close()
    if hvd.rank() == 0:
        print(f"run {run.id}: final loss {loss.item():.4f} on {hvd.size()} ranks")


if __name__ == "__main__":
    main()
