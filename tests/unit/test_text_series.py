"""Text that looks like a number stays text: numpy would read "1" as 1.0 when a batch
is packed into columns, turning a str series into a float one."""

from __future__ import annotations

import pytest

import tracker


@pytest.mark.parametrize("mode", ["sync", "async", "offline"])
def test_digit_strings_stay_strings(tmp_path, mode: str) -> None:
    store = str(tmp_path / "s")
    with tracker.init_run(
        project="p", store=store, mode=mode, system_metrics=False, quiet=True
    ) as run:
        for step in range(3):
            run.log({"epoch_name": str(step + 1), "loss": float(step)}, step=step)
        run["label"].append("7", step=0)
        run["label"].append("1e3", step=1)
    r = tracker.read_run(run.id, store=store)  # an offline run is applied on reading
    assert r["epoch_name"].fetch_values().value.tolist() == ["1", "2", "3"]
    assert r["label"].fetch_values().value.tolist() == ["7", "1e3"]
    assert r["loss"].fetch_values().value.tolist() == [0.0, 1.0, 2.0]
