"""Fit a small Keras 3 model on synthetic data, recorded by tracker's Keras callback.

    python examples/keras_fit.py                         # TensorFlow backend
    KERAS_BACKEND=torch python examples/keras_fit.py     # torch backend

The run gets the fit parameters (config/fit/...), the optimizer config
(config/optimizer/...), the Keras version and backend (config/framework/...), the
EarlyStopping settings (config/early_stopping/...) and the model summary; each epoch's
train and validation metrics and the learning rate the epoch used (the schedule's rate
at its last batch) at the epoch index; every 10th batch's loss and rate at the global
batch step; and at the end the epochs that ran (summary/epochs_run) and what early
stopping did (early_stopping/...: stopped, stopped_epoch, best_epoch, restored_weights).
Look at it with `tracker ls`.
"""

from __future__ import annotations

import keras
import numpy as np

import tracker
from tracker.integrations.keras import TrackerCallback


def main() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 8)).astype("float32")
    y = (x[:, :2].sum(axis=1) > 0).astype("float32")  # a learnable label

    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, decay_steps=50, decay_rate=0.9)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy", metrics=["accuracy"]
    )

    callback = TrackerCallback(project="examples", name="keras-fit", log_every_n_batches=10)
    stopping = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=2, min_delta=1e-3, restore_best_weights=True
    )
    model.fit(
        x,
        y,
        batch_size=64,
        epochs=30,
        validation_split=0.2,
        verbose=2,
        callbacks=[callback, stopping],
    )

    run = tracker.list_runs(project="examples")[0]
    r = tracker.read_run(run["id"])
    print(
        f"run {run['id']} ({r.status}): val/accuracy by epoch",
        np.round(r["val/accuracy"].fetch_values().value, 3).tolist(),
    )
    stopped = r["early_stopping/stopped"].fetch()
    print(
        f"{r['summary/epochs_run'].fetch()} of {r['config/fit/epochs'].fetch()} epochs ran"
        + (
            f"; stopped early, best epoch {r['early_stopping/best_epoch'].fetch()}"
            if stopped
            else ""
        )
    )


if __name__ == "__main__":
    main()
