"""The UI's JSON routes and its downsampling, without a browser (fastapi's TestClient)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from tests.server import postgres_cluster
from tracker.cli import main
from tracker.core.downsample import bucketize
from tracker.core.stores import open_store
from tracker.server.ui_routes import RAW_LIMIT, Series, create_ui_app

from .populate import make_run

postgres_url = postgres_cluster.postgres_url
pg_store_url = postgres_cluster.pg_store_url


@pytest.fixture
def small_store(tmp_path: Path) -> str:
    root = str(tmp_path / "store")
    st = open_store(root)
    loss = np.linspace(2, 0, 500)
    loss[250] = 40.0
    loss[100] = np.nan
    make_run(st, "aaaa000001", "p1", name="one", config={"lr": 0.1, "opt": "adam"},
             tags=["x"], series={"train/loss": loss, "val/acc": np.ones(500)})  # fmt: skip
    make_run(st, "bbbb000002", "p1", name="two", config={"lr": 0.2, "opt": "adam"},
             series={"train/loss": loss * 2}, parent=("aaaa000001", 99))  # fmt: skip
    make_run(st, "cccc000003", "p2", name="three", status="failed", error="Traceback: boom",
             rank_series={r: {"train/loss": np.full(50, float(r))} for r in range(3)})  # fmt: skip
    st.close()
    return root


@pytest.fixture
def client(small_store: str) -> TestClient:
    return TestClient(create_ui_app(small_store))


def test_series_buckets_match_bucketize_and_keep_extremes() -> None:
    rng = np.random.default_rng(3)
    n = RAW_LIMIT * 3
    steps = np.arange(n, dtype=np.int64) * 2
    values = rng.normal(size=n)
    values[2_345_678] = 77.0
    values[123] = np.nan
    s = Series(steps, values)
    for start, end, want in [(None, None, 1000), (None, None, 333), (1_000_000, 5_000_000, 700)]:
        doc = s.buckets(start, end, want)
        assert 0 < len(doc["step"]) <= want
        lo = 0 if start is None else np.searchsorted(steps, start)
        hi = n if end is None else np.searchsorted(steps, end, "right")
        inside = values[lo:hi]
        # Fine buckets cut by the range count whole: the extremes of the range are kept.
        assert max(v for v in doc["max"] if v is not None) >= np.nanmax(inside)
        assert min(v for v in doc["min"] if v is not None) <= np.nanmin(inside)
        assert doc["points"] == sum(doc["count"]) >= hi - lo
    doc = s.buckets(None, None, 1000)
    assert sum(doc["nan"]) == 1 and doc["points"] == n
    # A range of at most RAW_LIMIT points: exactly downsample.bucketize.
    small = s.buckets(10_000, 210_000, 500)
    ref = bucketize(steps[5000:105001], values[5000:105001], 500)
    assert small["step"] == ref.step.tolist() and small["max"] == ref.max.tolist()
    # At most as many points as buckets: the points themselves.
    raw = s.buckets(0, 100, 1000)
    assert raw["raw"] and raw["step"] == list(range(0, 101, 2))


def test_runs_listing(client: TestClient) -> None:
    doc = client.get("/api/ui/runs", params={"metrics": "train/loss"}).json()
    assert doc["metrics"] == ["train/loss"]
    assert client.get("/api/ui/runs").json()["metrics"] == ["train/loss", "val/acc"]
    none = client.get("/api/ui/runs", params={"metrics": ","}).json()
    assert none["metrics"] == [] and all(r["metrics"] == {} for r in none["runs"])
    assert doc["projects"] == ["p1", "p2"]
    assert {r["id"] for r in doc["runs"]} == {"aaaa000001", "bbbb000002", "cccc000003"}
    one = next(r for r in doc["runs"] if r["id"] == "aaaa000001")
    assert one["config"] == {"lr": 0.1, "opt": "adam"} and one["tags"] == ["x"]
    assert one["metrics"]["train/loss"] == 0.0 and one["status"] == "finished"
    assert "train/loss" in doc["metric_paths"]
    p1 = client.get("/api/ui/runs", params={"project": "p1"}).json()
    assert {r["id"] for r in p1["runs"]} == {"aaaa000001", "bbbb000002"}
    gz = client.get("/api/ui/runs", headers={"Accept-Encoding": "gzip"})
    assert gz.status_code == 200 and gz.json()["runs"]


def test_run_details_series_and_values(client: TestClient) -> None:
    run = client.get("/api/ui/runs/bbbb000002").json()
    assert run["lineage"] == [{"id": "aaaa000001", "name": "one", "fork_step": 99}]
    parent = client.get("/api/ui/runs/aaaa000001").json()
    assert parent["children"][0]["id"] == "bbbb000002"
    failed = client.get("/api/ui/runs/cccc000003").json()
    assert failed["status"] == "failed" and "boom" in failed["error"]
    assert failed["ranks"] == [0, 1, 2]
    series = client.get("/api/ui/runs/aaaa000001/series", params={"q": "val/*"}).json()
    assert [s["path"] for s in series["series"]] == ["val/acc"] and series["total"] == 2
    assert client.get("/api/ui/runs/aaaa000001/series", params={"q": "LOSS"}).json()["matched"] == 1
    # The fork reads its parent's points up to step 99, then its own 500.
    values = client.get(
        "/api/ui/runs/bbbb000002/values", params={"path": "train/loss", "buckets": 2000}
    ).json()
    assert values["raw"] and values["points"] == 600 and values["step"][99:101] == [99, 100]
    b = client.get(
        "/api/ui/runs/aaaa000001/values", params={"path": "train/loss", "buckets": 50}
    ).json()
    assert len(b["step"]) <= 50 and max(v for v in b["max"] if v is not None) == 40.0
    assert sum(b["nan"]) == 1
    zoom = client.get(
        "/api/ui/runs/aaaa000001/values",
        params={"path": "train/loss", "buckets": 50, "start": 240, "end": 260},
    ).json()
    assert zoom["raw"] and zoom["step"] == list(range(240, 261)) and zoom["max"][10] == 40.0
    assert client.get("/api/ui/runs/nope000000").status_code == 404
    missing = client.get("/api/ui/runs/aaaa000001/values", params={"path": "no/such"})
    assert missing.status_code == 404
    assert (
        client.get(
            "/api/ui/runs/aaaa000001/values", params={"path": "train/loss", "buckets": 0}
        ).status_code
        == 400
    )


def test_ranks_and_compare(client: TestClient) -> None:
    ranks = client.get("/api/ui/runs/cccc000003/ranks").json()
    assert ranks["ranks"] == [0, 1, 2] and ranks["path"] == "train/loss"
    rows = ranks["heatmap"]["rows"]
    assert [r["rank"] for r in rows] == [0, 1, 2] and rows[2]["values"][0] == 2.0
    assert ranks["step_time"] is None
    cmp = client.get("/api/ui/compare", params={"runs": "aaaa000001,bbbb000002"}).json()
    assert [r["id"] for r in cmp["runs"]] == ["aaaa000001", "bbbb000002"]
    diff = {c["key"]: c for c in cmp["config"]}
    assert diff["lr"]["differs"] and not diff["opt"]["differs"]
    assert cmp["series"][0] == "train/loss"


def test_pages_and_assets(client: TestClient) -> None:
    for path in ("/", "/runs/aaaa000001", "/runs/aaaa000001/ranks", "/compare?runs=a,b"):
        resp = client.get(path)
        assert resp.status_code == 200 and 'content="open"' in resp.text, path
    for name in ("uPlot.iife.min.js", "uPlot.min.css", "uPlot-LICENSE.txt", "app.js", "style.css"):
        assert client.get(f"/ui/{name}").status_code == 200, name
    assert client.get("/ui/..%2Fui_routes.py").status_code == 404
    assert client.get("/ui/nothing.js").status_code == 404


def test_team_server_ui_needs_the_projects_token(small_store: str) -> None:
    from tracker.server.app import create_app
    from tracker.server.tokens import create_token

    st = open_store(small_store)
    token, _record = create_token(st, "p1", "read")
    st.close()
    client = TestClient(create_app(small_store))
    page = client.get("/")
    assert page.status_code == 200 and 'content="token"' in page.text
    assert client.get("/api/ui/runs").status_code == 401
    auth: Any = {"Authorization": f"Bearer {token}"}
    doc = client.get("/api/ui/runs", headers=auth).json()
    assert doc["projects"] == ["p1"] and {r["project"] for r in doc["runs"]} == {"p1"}
    # Asking for another project gets the token's own.
    assert {
        r["project"] for r in client.get("/api/ui/runs?project=p2", headers=auth).json()["runs"]
    } == {"p1"}
    assert client.get("/api/ui/runs/cccc000003", headers=auth).status_code == 404
    assert client.get("/api/ui/runs/aaaa000001", headers=auth).status_code == 200


def test_cli_ui_is_registered() -> None:
    result = CliRunner().invoke(main, ["ui", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "8089" in result.output


def _listing_matches_run_by_run(store: Any) -> None:
    from tracker.server.ui_routes import list_runs_fast, projects_of

    for project in (None, "p1"):
        fast = list_runs_fast(store, project, ["train/loss", "val/acc"])
        slow = list_runs_fast(store, project, ["train/loss", "val/acc"], bulk=False)
        assert fast == slow
        assert list_runs_fast(store, project, None) == list_runs_fast(
            store, project, None, bulk=False
        )
    runs, paths, used = list_runs_fast(store, "p1", ["train/loss"])
    assert {r["id"] for r in runs} == {"aaaa000001", "bbbb000002"}
    assert paths == ["train/loss", "val/acc"] and used == ["train/loss"]
    # No metrics asked for: the losses, accuracies, scores and values, three at most.
    assert list_runs_fast(store, "p1", None)[2] == ["train/loss", "val/acc"]
    one = next(r for r in runs if r["id"] == "aaaa000001")
    assert one["config"] == {"lr": 0.1, "opt": "adam"} and one["metrics"] == {"train/loss": 0.0}
    assert projects_of(store) == ["p1", "p2"]
    # The state a kept series is checked against, in one query; and a chart through it.
    from tracker.server.ui_routes import UI, series_state

    assert series_state(store, "aaaa000001", "train/loss") == [(0, 50, 49)]
    assert series_state(store, "aaaa000001", "no/such") == []
    doc = UI(store).values("bbbb000002", None, "train/loss", 0, 10, None, None, None)
    assert doc["points"] == 60 and 0 < doc["buckets"] <= 10 and doc["max"][0] == 2.0


def _fill(store: Any) -> None:
    loss = np.linspace(2, 0, 50)
    make_run(store, "aaaa000001", "p1", name="one", config={"lr": 0.1, "opt": "adam"},
             tags=["x", "y"], series={"train/loss": loss, "val/acc": np.ones(50)})  # fmt: skip
    make_run(store, "bbbb000002", "p1", name="two", config={"lr": 0.2, "opt": "sgd"},
             series={"train/loss": loss * 2}, parent=("aaaa000001", 9))  # fmt: skip
    make_run(store, "cccc000003", "p2", name="three", config={"flag": True},
             series={"sys/cpu": np.ones(5)})  # fmt: skip


def test_bulk_listing_is_the_run_by_run_listing(tmp_path: Path) -> None:
    st = open_store(str(tmp_path / "store"))
    _fill(st)
    _listing_matches_run_by_run(open_store(str(tmp_path / "store"), create=False, readonly=True))


def test_bulk_listing_on_postgres(pg_store_url: str) -> None:
    pytest.importorskip("psycopg")
    st = open_store(pg_store_url)
    try:
        _fill(st)
        _listing_matches_run_by_run(st)
    finally:
        st.close()
