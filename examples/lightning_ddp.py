"""Train a tiny regression model with Lightning DDP on two CPU processes, logged to tracker.

Run it (Lightning starts the second process itself):

    python examples/lightning_ddp.py

Compared with a plain Lightning script, two lines change: the import and `logger=`.
Both processes end up in one run: Lightning's metrics from rank 0, and each rank's step
time, throughput and own loss under per_rank/. Look at it with `tracker ls`.
"""

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tracker.integrations.lightning import TrackerLogger


class Regressor(LightningModule):
    def __init__(self, hidden: int = 32, lr: float = 0.05) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(16, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.net(x), y), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)


def data(n: int, seed: int) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 16, generator=g)
    y = x @ torch.linspace(-1.0, 1.0, 16).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32)


def main() -> None:
    trainer = Trainer(
        logger=TrackerLogger(project="lightning-demo"),
        strategy="ddp",
        accelerator="cpu",
        devices=2,
        max_epochs=3,
        log_every_n_steps=5,
        callbacks=[ModelCheckpoint(monitor="val/loss")],
        enable_progress_bar=False,
    )
    trainer.fit(Regressor(), data(1024, seed=0), data(256, seed=1))


if __name__ == "__main__":
    main()
