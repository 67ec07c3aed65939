"""Fine-tune a tiny BERT (built from a config: nothing is downloaded) with the Hugging Face
Trainer, reported to tracker. This script never imports tracker.

Run it on one process or on two:

    TRACKER_PROJECT=hf-demo torchrun --nproc_per_node=2 examples/hf_trainer.py

Compared with a plain Trainer script, one line changes: `report_to=["tracker"]` (and the
project comes from TRACKER_PROJECT). Metrics come from rank 0; every rank's step time and
throughput land under per_rank/ of the same run. Look at it with `tracker ls`.
"""

import torch
from torch.utils.data import Dataset
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments


class ParityOfFirstToken(Dataset):
    """Token sequences labelled by whether their first token is odd: learnable, tiny."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(1, 100, (n, 12), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": int(ids[0] % 2)}


def main() -> None:
    config = BertConfig(
        vocab_size=100,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=32,
    )
    args = TrainingArguments(
        "hf-trainer-out",
        max_steps=60,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        logging_steps=5,
        eval_strategy="steps",
        eval_steps=20,
        save_steps=20,
        report_to=["tracker"],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=args,
        train_dataset=ParityOfFirstToken(2048, seed=0),
        eval_dataset=ParityOfFirstToken(256, seed=1),
    )
    trainer.train()


if __name__ == "__main__":
    main()
