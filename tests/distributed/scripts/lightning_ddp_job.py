"""Lightning strategy="ddp" on two CPU processes with TrackerLogger (Lightning re-runs this
script for rank 1). Each rank also logs a key of its own, without sync_dist."""

from __future__ import annotations

import argparse
import os

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel

from tracker.integrations.lightning import TrackerLogger


class Model(BoringModel):
    def training_step(self, batch, batch_idx):
        out = super().training_step(batch, batch_idx)
        self.log("train_loss", out["loss"])
        self.log(f"only_on_rank{self.global_rank}", float(self.global_rank))
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    logger = TrackerLogger(project="lit-ddp", store=args.store)
    trainer = Trainer(
        logger=logger,
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_steps=args.steps,
        limit_val_batches=0,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=args.root,
    )
    trainer.fit(Model())
    # One write(2) per line: ranks share the pipe, and a line must not be split by another's.
    os.write(1, f"RUN_ID {trainer.global_rank} {logger.version}\n".encode())


if __name__ == "__main__":
    main()
