"""Fit a small Keras 3 model on synthetic data, recorded by tracker's Keras callback.

    python examples/keras_fit.py                         # TensorFlow backend
    KERAS_BACKEND=torch python examples/keras_fit.py     # torch backend

The run gets the fit parameters (config/fit/...), the optimizer config
(config/optimizer/...), the Keras version and backend (config/framework/...) and the model
summary; each epoch's train and validation metrics and the learning rate at the epoch
index; and every 10th batch's loss at the global batch step. Look at it with `tracker ls`.
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
    model.fit(x, y, batch_size=64, epochs=5, validation_split=0.2, verbose=2, callbacks=[callback])

    run = tracker.list_runs(project="examples")[0]
    r = tracker.read_run(run["id"])
    print(
        f"run {run['id']} ({r.status}): val/accuracy by epoch",
        np.round(r["val/accuracy"].fetch_values().value, 3).tolist(),
    )


if __name__ == "__main__":
    main()
