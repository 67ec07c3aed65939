"""Series reduced on the server: ``fetch_values(buckets=N)`` and ``aggregate=`` through a
``store="http://..."`` compute there and send the result, never the points."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

import tracker
from tracker.core.stores.http import HTTPStore

from .conftest import ServerProcess, make_token, token_env

N_POINTS = 1_000_000


def _segment(k: int) -> str:
    return f"{time.time_ns() + k:020d}-{k + 1}.jnl"


def _multirank_run(url: str, project: str, ranks: int = 4, steps: int = 50_000) -> str:
    """A run whose series "loss" is logged by several ranks (a distributed job's), sent
    as journal batches the way a writer sends them."""
    client = HTTPStore(url)
    run_id = f"mr{time.time_ns() % 10**9}"
    rng = np.random.default_rng(1)
    applier = client.applier(run_id)
    create = ("create", {"project": project, "name": "ddp", "ts": time.time()})
    segment = _segment(0)
    offset = 100
    applier.apply([create], (segment, offset))
    for rank in range(ranks):
        st = np.arange(steps, dtype=np.int64)
        if rank == 2:
            st = st[::3]  # a rank that logged fewer steps
        vals = rng.normal(size=len(st))
        vals[7] = np.nan
        ts = np.full(len(st), time.time())
        group = ("cols", ["loss"], st.tobytes(), ts.tobytes(), vals.tobytes(), None)
        offset += 100
        applier.apply([("logs", rank, len(st), [group])], (segment, offset))
    applier.apply([("status", "finished", time.time(), None)], (segment, offset + 100))
    return run_id


@pytest.fixture
def runs(server: ServerProcess, spool: Path) -> dict[str, str]:
    with token_env(make_token(server.store, "vision")):
        big = tracker.init_run("vision", store=server.url, system_metrics=False)
        rng = np.random.default_rng(0)
        values = rng.normal(size=N_POINTS)
        values[12344] = 1e9  # a spike that bucketing must keep
        values[99] = np.nan
        for i in range(0, N_POINTS, 2):
            big.log({"loss": float(values[i]), "acc": float(values[i + 1])}, step=i // 2)
        with pytest.warns(RuntimeWarning, match="lower than its last step"):
            big.log({"loss": 5.0}, step=10)  # a repeat of a step
        big.log({"note": "text"}, step=1)
        big.close()
        # Rewound and forked: lineage and superseded points are the server's to apply.
        again = tracker.init_run(
            "vision", store=server.url, run_id=big.id, resume_from_step=400_000
        )
        for i in range(400_001, 400_500):
            again.log({"loss": -1.0}, step=i)
        again.close()
        child = tracker.init_run(
            "vision", store=server.url, fork_from=(big.id, 200_000), system_metrics=False
        )
        for i in range(200_001, 210_000):
            child.log({"loss": 3.0}, step=i)
        child.close()
        multi = _multirank_run(server.url, "vision")
    return {"big": big.id, "child": child.id, "multi": multi}


def _same(a, b) -> None:
    assert type(a) is type(b)
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)


class _Counting:
    """Counts the bytes the client receives, and which routes it asks."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.bytes = 0
        self.paths: list[str] = []
        real = HTTPStore.request

        def request(store, method, path, **kwargs):
            status, body = real(store, method, path, **kwargs)
            self.bytes += len(body)
            self.paths.append(path)
            return status, body

        monkeypatch.setattr(HTTPStore, "request", request)


def test_buckets_are_computed_on_the_server(
    server: ServerProcess, runs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with token_env(make_token(server.store, "vision", "read")):
        counting = _Counting(monkeypatch)
        for key, kwargs in [
            ("big", {"buckets": 500}),
            ("big", {"buckets": 1}),
            ("big", {"buckets": 7, "per_step": "last"}),
            ("big", {"buckets": 300, "include_superseded": True}),
            ("child", {"buckets": 400}),
            ("multi", {"buckets": 100, "rank": 2}),
            ("multi", {"buckets": 100, "aggregate": "mean"}),
            ("multi", {"buckets": 64, "aggregate": "max", "include_superseded": True}),
            ("multi", {"aggregate": "count"}),
            ("multi", {"aggregate": "min"}),
        ]:
            path = "loss"
            there = tracker.read_run(runs[key], store=server.url)
            before, asked = counting.bytes, len(counting.paths)
            got = there[path].fetch_values(**kwargs)
            received = counting.bytes - before
            new_paths = counting.paths[asked:]
            assert not any(p.endswith("/chunks") for p in new_paths), (kwargs, new_paths)
            assert any(p.endswith("/values") for p in new_paths)
            local = tracker.read_run(runs[key], store=server.store)
            want = local[path].fetch_values(**kwargs)
            _same(want, got)
            if "buckets" in kwargs:
                # 6 arrays of 8 bytes per bucket and a small head: no points travel.
                assert received < 48 * kwargs["buckets"] + 1024, (kwargs, received)
        big = tracker.read_run(runs["big"], store=server.url)["loss"].fetch_values(buckets=10)
        # Up to the rewind's step 400,000, the repeat of step 10, the second attempt's 499.
        assert big.max.max() == 1e9 and int(big.count.sum()) == 400_001 + 1 + 499


def test_server_side_reads_fail_as_local_ones(server: ServerProcess, runs: dict[str, str]) -> None:
    with token_env(make_token(server.store, "vision", "read")):
        r = tracker.read_run(runs["big"], store=server.url)
        local = tracker.read_run(runs["big"], store=server.store)
        cases = [
            (KeyError, lambda run: run["nope"].fetch_values(buckets=5)),
            (KeyError, lambda run: run["loss"].fetch_values(rank=3, buckets=5)),
            (TypeError, lambda run: run["note"].fetch_values(buckets=5)),
            (TypeError, lambda run: run["note"].fetch_values(aggregate="mean")),
            (ValueError, lambda run: run["loss"].fetch_values(buckets=0)),
            (ValueError, lambda run: run["loss"].fetch_values(aggregate="median")),
        ]
        for error, call in cases:
            with pytest.raises(error) as mine:
                call(local)
            with pytest.raises(error) as theirs:
                call(r)
            assert str(theirs.value) == str(mine.value)


def test_an_older_server_without_the_route_still_buckets(
    server: ServerProcess, runs: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = HTTPStore.request

    def older(store, method, path, **kwargs):
        if path.endswith("/values"):
            path = path.replace("/values", "/no-such-route")
        return real(store, method, path, **kwargs)

    monkeypatch.setattr(HTTPStore, "request", older)
    with token_env(make_token(server.store, "vision", "read")):
        got = tracker.read_run(runs["multi"], store=server.url)["loss"].fetch_values(
            buckets=10, aggregate="mean"
        )
    want = tracker.read_run(runs["multi"], store=server.store)["loss"].fetch_values(
        buckets=10, aggregate="mean"
    )
    _same(want, got)
