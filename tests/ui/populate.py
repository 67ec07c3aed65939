"""Runs written straight through a store's applier (the one way data gets in), fast
enough for 10,000 runs: what the UI's tests and benchmarks/ui_server.py list and draw."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tracker.core.stores import Store


def cols_logs(rank: int, path_values: dict[str, np.ndarray], steps: np.ndarray, t0: float) -> Any:
    """One "logs" op of float series sharing ``steps`` (column layout of core/batch.py)."""
    keys = tuple(path_values)
    values = np.column_stack([np.asarray(path_values[k], np.float64) for k in keys])
    ts = t0 + np.arange(len(steps), dtype=np.float64) * 0.01
    group = ("cols", keys, np.asarray(steps, np.int64).tobytes(), ts.tobytes(),
             np.ascontiguousarray(values).tobytes(), None)  # fmt: skip
    return ("logs", rank, len(steps), [group])


def make_run(
    store: Store,
    run_id: str,
    project: str,
    *,
    name: str | None = None,
    config: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    series: dict[str, np.ndarray] | None = None,
    ranks: int = 1,
    rank_series: dict[int, dict[str, np.ndarray]] | None = None,
    status: str | None = "finished",
    error: str | None = None,
    fields: dict[str, tuple[str, Any]] | None = None,
    parent: tuple[str, int] | None = None,
    created: float | None = None,
    segment: str = "0001.jnl",
) -> str:
    """Write one run in one batch: config, tags, rank-0 ``series`` (steps 0..n-1),
    per-rank series, single ``fields`` ((kind, value) by path) and an end status."""
    t0 = time.time() if created is None else created
    meta = {"project": project, "name": name, "ts": t0, "host": "testhost", "pid": 1,
            "parent_id": parent[0] if parent else None,
            "fork_step": parent[1] if parent else None, "rewind_step": None}  # fmt: skip
    ops: list[Any] = [("create", meta)]
    for key, value in (config or {}).items():
        kind = {bool: "bool", int: "int", float: "float", str: "str"}[type(value)]
        ops.append(("set", f"config/{key}", kind, value, t0))
    for path, (kind, value) in (fields or {}).items():
        ops.append(("set", path, kind, value, t0))
    if tags:
        ops.append(("tags+", list(tags)))
    if series:
        n = len(next(iter(series.values())))
        start = parent[1] + 1 if parent else 0
        ops.append(cols_logs(0, series, np.arange(start, start + n), t0))
    for rank, by_path in (rank_series or {}).items():
        n = len(next(iter(by_path.values())))
        ops.append(cols_logs(rank, by_path, np.arange(n), t0))
    if status is not None:
        ops.append(("status", status, t0 + 60.0, error))
    store.applier(run_id).apply(ops, (segment, 10))
    return run_id


def make_many(store: Store, n: int, project: str = "big") -> list[str]:
    """``n`` small runs with varied config, tags, statuses and a few metric points."""
    rng = np.random.default_rng(7)
    statuses = ["finished", "finished", "finished", "failed", "crashed"]
    ids = []
    now = time.time() - n
    for i in range(n):
        rid = f"r{i:06d}"
        make_run(
            store, rid, project, name=f"trial-{i}",
            config={"lr": 10.0 ** -int(rng.integers(1, 5)), "batch": int(2 ** rng.integers(4, 9)),
                    "opt": ["adam", "sgd", "lion"][i % 3], "seed": i},
            tags=["sweep", f"group-{i % 10}"] + (["best"] if i % 1000 == 0 else []),
            series={"train/loss": rng.random(5) + 1.0 / (i + 1), "val/acc": rng.random(5)},
            status=statuses[i % len(statuses)], created=now + i,
        )  # fmt: skip
        ids.append(rid)
    return ids
