"""A Hugging Face Trainer script for torchrun: tiny BERT from a config, synthetic data, no
download. It never imports tracker with --report-to (the .pth hook registers it); with
--explicit it passes TrackerCallback itself. Store and project come from TRACKER_* vars.

``--then evaluate predict`` runs those after ``train()``, as a script that reports test
metrics does; every rank prints when its training ended (``TRAINED <rank> <time>``) and
when the last of them returned (``FINISHED <rank> <time>``), so that the test can tell how
long the process took to exit after them, and whether a callback still holds a run open
(``OPEN_AFTER <rank> <bool>``)."""

from __future__ import annotations

import argparse
import time

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments


class Tokens(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict:
        ids = torch.randint(1, 100, (8,), generator=torch.Generator().manual_seed(i))
        return {
            "input_ids": ids,
            "attention_mask": torch.ones(8, dtype=torch.long),
            "labels": int(ids[0] % 2),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--explicit", action="store_true")
    parser.add_argument("--then", nargs="*", default=[], choices=["evaluate", "predict"])
    args = parser.parse_args()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=16,
    )
    callbacks = []
    if args.explicit:
        from tracker.integrations.transformers import TrackerCallback

        callbacks.append(TrackerCallback())
    training_args = TrainingArguments(
        args.out,
        max_steps=args.steps,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        logging_steps=1,
        save_strategy="no",
        report_to=[] if args.explicit else ["tracker"],
        use_cpu=True,
        ddp_backend="gloo",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=training_args,
        train_dataset=Tokens(),
        eval_dataset=Tokens(),
        callbacks=callbacks,
    )
    trainer.train()
    rank = trainer.args.process_index
    print(f"TRAINED {rank} {time.time()}", flush=True)
    for what in args.then:
        if what == "evaluate":
            metrics = trainer.evaluate()
        else:
            metrics = trainer.predict(Tokens()).metrics
        print(f"METRICS {rank} {what} {sorted(metrics)}", flush=True)
    ours = [
        cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "TrackerCallback"
    ]
    print(f"TRACKER_CALLBACKS {rank} {len(ours)}", flush=True)
    if args.then:
        # Whether a callback still holds a run open, left to the process's exit to close.
        print(f"OPEN_AFTER {rank} {any(cb.run is not None for cb in ours)}", flush=True)
    print(f"FINISHED {rank} {time.time()}", flush=True)


if __name__ == "__main__":
    main()
