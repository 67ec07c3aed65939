"""The UI's later features: charts of long series from the store's chunk summaries,
text series, event markers (``sys/events``), the runs table's own refresh, and
``tracker ui --store http://...`` listing a team server's runs in bulk."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

import tracker
from tests.server import postgres_cluster
from tests.server.conftest import make_token, token_env
from tracker.core.downsample import (
    BLOCK,
    SUMMARY_MIN_POINTS,
    aligned_width,
    bucketize,
    bucketize_aligned,
)
from tracker.core.reader import RunReader
from tracker.core.stores import open_store
from tracker.server import ui_routes
from tracker.server.ui_routes import UI, create_ui_app

from .conftest import MISSING, Proc, shot
from .populate import cols_logs, make_run

postgres_url = postgres_cluster.postgres_url
pg_store_url = postgres_cluster.pg_store_url

EVENT = {"kind": "spike", "path": "train/loss", "step": 120, "rank": 0, "level": "warning",
         "message": "<img src=x onerror=alert(1)> loss jumped", "time": 1.7e9, "z": 3.5}  # fmt: skip
RUN_WIDE = {"kind": "silent_rank", "path": None, "step": 200, "rank": 2, "level": "error",
            "message": "rank 2 silent for 60 s", "time": 1.7e9}  # fmt: skip


def _write_long(st: Any, rid: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A float series of ``n`` points in a few large chunks, with a spike, NaNs, and a
    chunk repeating earlier steps (what a chart must not lose)."""
    make_run(st, rid, "p", name="long", status=None)
    applier = st.applier(rid)
    steps = np.arange(n, dtype=np.int64)
    vals = np.sin(steps / 700.0)
    vals[n // 3] = 500.0
    vals[[17, 18, n - 5]] = np.nan
    for k, lo in enumerate(range(0, n, n // 4)):
        part = slice(lo, min(n, lo + n // 4))
        applier.apply([cols_logs(0, {"m": vals[part]}, steps[part], 1e9)], ("0001.jnl", 100 + k))
    again = np.arange(5 * BLOCK, 5 * BLOCK + 300, dtype=np.int64)
    applier.apply([cols_logs(0, {"m": -np.ones(300)}, again, 1e9)], ("0001.jnl", 200))
    applier.apply([("status", "finished", time.time(), None)], ("0001.jnl", 300))
    r = RunReader(st, rid, st.run(rid))["m"].fetch_values()
    return r.step, r.value


def _check_chart(ui: UI, rid: str, steps: np.ndarray, vals: np.ndarray, n: int,
                 start: int | None = None, end: int | None = None) -> dict[str, Any]:  # fmt: skip
    doc = ui.values(rid, None, "m", 0, n, start, end, None)
    keep = np.ones(len(steps), bool)
    if start is not None:
        keep &= steps >= start
    if end is not None:
        keep &= steps <= end
    s, v = steps[keep], vals[keep]
    assert doc["points"] == len(s) and doc["total"] == len(steps)
    if doc.get("aligned"):
        origin, width = aligned_width(int(s[0]), int(s[-1]), n)
        want = bucketize_aligned(s, v, origin, width)
    else:
        want = bucketize(s, v, n)
    assert doc["step"] == want.step.tolist() and doc["count"] == want.count.tolist()
    for name in ("first", "last", "min", "max"):
        assert doc[name] == ui_routes.float_list(getattr(want, name)), name
    starts = np.concatenate(([0], np.cumsum(want.count)[:-1]))
    assert doc["nan"] == np.add.reduceat(np.isnan(v).astype(np.int64), starts).tolist()
    assert len(doc["step"]) <= n
    return doc


def _summarized_charts(st: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(ui_routes, "RAW_LIMIT", 10 * BLOCK)  # "long" at a test's size
    steps, vals = _write_long(st, "long000001", 40 * BLOCK + 77)
    ui = UI(st)

    real = st.chunks_by_id

    def small_only(ids: Any) -> Any:
        chunks = real(ids)
        assert all(c.n < SUMMARY_MIN_POINTS for c in chunks), "read a summarized chunk's points"
        return chunks

    def no_points(*args: Any, **kw: Any) -> Any:
        raise AssertionError("a whole-range chart read the whole series")

    with monkeypatch.context() as m:
        m.setattr(st, "chunks_by_id", small_only)
        m.setattr(RunReader, "_series", no_points)
        doc = _check_chart(ui, "long000001", steps, vals, 200)
    assert doc["aligned"] and max(doc["max"]) == 500.0 and sum(doc["nan"]) == 3
    for n in (1, 7, 1000):
        _check_chart(ui, "long000001", steps, vals, n)
    # A wide zoom (more points than RAW_LIMIT) is summarized too, its edges exact; a
    # narrow one is bucketed from the points of its chunks.
    wide = _check_chart(ui, "long000001", steps, vals, 100, 3 * BLOCK + 11, 30 * BLOCK + 5)
    assert wide["aligned"]
    narrow = _check_chart(ui, "long000001", steps, vals, 100, 4 * BLOCK + 1, 9 * BLOCK)
    assert not narrow.get("aligned")


def test_long_series_chart_from_summaries(tmp_path: Path, monkeypatch: Any) -> None:
    st = open_store(str(tmp_path / "store"))
    try:
        _summarized_charts(st, monkeypatch)
    finally:
        st.close()


def test_long_series_chart_from_summaries_on_postgres(pg_store_url: str, monkeypatch: Any) -> None:
    st = open_store(pg_store_url)
    try:
        _summarized_charts(st, monkeypatch)
    finally:
        st.close()


def _text_and_events_store(root: Path) -> str:
    with tracker.init_run("p", run_id="text000001", store=str(root), system_metrics=False,
                          quiet=True) as run:  # fmt: skip
        for step in range(300):
            run.log({"train/loss": 1.0 / (step + 1)}, step=step)
        for step in range(250):
            run["notes"].append(f"note {step}: <b>bold</b> & more", step=step)
        run["sys/events"].append(json.dumps(EVENT), step=EVENT["step"])
        run["sys/events"].append(json.dumps(RUN_WIDE), step=RUN_WIDE["step"])
        run["sys/events"].append("not json at all", step=310)
    return "text000001"


def test_text_series_events_and_runs_version_json(tmp_path: Path) -> None:
    root = tmp_path / "store"
    rid = _text_and_events_store(root)
    client = TestClient(create_ui_app(str(root)))
    listed = client.get(f"/api/ui/runs/{rid}/series").json()["series"]
    assert {s["path"] for s in listed} >= {"train/loss", "notes"}
    assert "sys/events" not in {s["path"] for s in listed}
    doc = client.get(f"/api/ui/runs/{rid}/text", params={"path": "notes", "limit": 100}).json()
    assert doc["total"] == 250 and doc["matched"] == 250 and len(doc["rows"]) == 100
    assert doc["rows"][0] == [249, "note 249: <b>bold</b> & more"]  # newest first, as logged
    page2 = client.get(f"/api/ui/runs/{rid}/text",
                       params={"path": "notes", "offset": 200, "limit": 100}).json()  # fmt: skip
    assert [r[0] for r in page2["rows"]] == list(range(49, -1, -1))
    found = client.get(f"/api/ui/runs/{rid}/text", params={"path": "notes", "q": "NOTE 12"}).json()
    assert sorted(r[0] for r in found["rows"]) == [12, 120, 121, 122, 123, 124, 125, 126, 127,
                                                   128, 129]  # fmt: skip
    assert client.get(f"/api/ui/runs/{rid}/text", params={"path": "train/loss"}).status_code == 400
    assert client.get(f"/api/ui/runs/{rid}/text", params={"path": "nope"}).status_code == 404
    events = client.get(f"/api/ui/runs/{rid}/events").json()
    assert events["total"] == 3
    first, second, bad = events["events"]
    assert first == EVENT and second == RUN_WIDE
    assert bad == {"kind": "unknown", "message": "not json at all", "step": 310}
    assert client.get("/api/ui/runs/nosuchrun/events").status_code == 404
    # The runs table's fingerprint changes when a run logs, and only then.
    v1 = client.get("/api/ui/runs-version", params={"project": "p"}).json()["version"]
    assert client.get("/api/ui/runs-version", params={"project": "p"}).json()["version"] == v1
    st = open_store(str(root))
    make_run(st, "newrun0001", "p", name="new", series={"train/loss": np.ones(3)})
    v2 = client.get("/api/ui/runs-version", params={"project": "p"}).json()["version"]
    st.applier("newrun0001").apply([cols_logs(0, {"train/loss": np.ones(2)}, np.arange(3, 5), 1e9)],
                                   ("0001.jnl", 20))  # fmt: skip
    st.close()
    v3 = client.get("/api/ui/runs-version", params={"project": "p"}).json()["version"]
    assert len({v1, v2, v3}) == 3


def test_cli_ui_over_a_team_server_lists_in_bulk(tmp_path: Path, monkeypatch: Any) -> None:
    store = tmp_path / "team"
    st = open_store(str(store))
    for i in range(30):
        make_run(st, f"team{i:06d}", "vision", name=f"t{i}", config={"lr": 0.1 * i},
                 tags=["a"], series={"train/loss": np.linspace(1, 0, 5) + i})  # fmt: skip
    make_run(st, "othr000001", "secret", name="not-yours", series={"train/loss": np.ones(3)})
    st.close()
    token = make_token(str(store), "vision", "read")
    server = Proc(["server", "--store", str(store), "--host", "127.0.0.1"], tmp_path / "s.log")
    try:
        with token_env(token):
            remote = open_store(server.url, create=False, readonly=True)
        asked: list[str] = []
        real = remote.request

        def request(method: str, path: str, **kw: Any) -> Any:
            asked.append(path)
            return real(method, path, **kw)

        monkeypatch.setattr(remote, "request", request)
        doc = UI(remote).runs(None, ["train/loss"])
        assert asked == ["/ui/runs"]  # one request, not one (or four) per run
        assert len(doc["runs"]) == 30 and doc["projects"] == ["vision"]
        one = next(r for r in doc["runs"] if r["id"] == "team000007")
        assert one["metrics"] == {"train/loss": 7.0} and one["tags"] == ["a"]
        assert one["config"] == {"lr": pytest.approx(0.7)}
        # What the bulk listing gives is what listing run by run gives.
        slow = ui_routes.list_runs_fast(remote, "vision", ["train/loss"], bulk=False)[0]
        assert sorted(doc["runs"], key=lambda r: r["id"]) == sorted(
            [dict(r, updated_at=r["updated_at"]) for r in slow], key=lambda r: r["id"]
        )
        client = TestClient(create_ui_app(store=remote))
        answer = client.get("/api/ui/runs").json()
        assert answer["projects"] == ["vision"] and len(answer["runs"]) == 30
        assert client.get("/api/ui/runs-version").json()["version"]
        remote.close()
    finally:
        server.stop()


# -- in Chromium ---------------------------------------------------------------------------------

browser_only = pytest.mark.skipif(MISSING is not None, reason=str(MISSING))


def _expect() -> Any:
    from playwright.sync_api import expect

    return expect


@pytest.fixture
def small_ui(tmp_path: Path) -> Any:
    root = tmp_path / "store"
    _text_and_events_store(root)
    proc = Proc(["ui", "--store", str(root)], tmp_path / "ui.log")
    try:
        yield proc, root
    finally:
        proc.stop()


@pytest.mark.slow
@browser_only
def test_text_series_and_event_markers_in_the_browser(page: Any, small_ui: Any) -> None:
    expect = _expect()
    proc, _root = small_ui
    page.goto(f"{proc.url}/runs/text000001")
    # Events: listed (escaped), hidden from the series list.
    items = page.get_by_test_id("event-item")
    expect(items).to_have_count(3)
    expect(page.locator('[data-testid="event-item"][data-kind="spike"]')).to_contain_text(
        "<img src=x onerror=alert(1)> loss jumped"
    )
    assert page.locator('[data-testid="events"] img').count() == 0
    expect(page.locator('[data-testid="series-item"][data-path="sys/events"]')).to_have_count(0)
    # train/loss carries its own event and the run-wide one; markers have the message.
    chart = page.locator('[data-testid="chart"][data-path="train/loss"]')
    expect(chart).to_have_attribute("data-events", "2")
    marker = chart.locator('[data-testid="event-marker"][data-kind="spike"]')
    expect(marker).to_have_attribute("data-step", "120")
    assert "loss jumped" in (marker.get_attribute("title") or "")
    expect(chart.locator('[data-testid="event-marker"][data-kind="silent_rank"]')).to_have_count(1)
    # The text series: drawn as a step -> text list, escaped, paged and searchable.
    page.locator('[data-testid="series-item"][data-path="notes"] a').click()
    text = page.locator('[data-testid="text-series"][data-path="notes"]')
    expect(text).to_have_attribute("data-total", "250")
    rows = text.get_by_test_id("text-row")
    expect(rows).to_have_count(100)
    expect(rows.first).to_have_attribute("data-step", "249")
    expect(rows.first).to_contain_text("note 249: <b>bold</b> & more")
    assert text.locator("b").count() == 0
    text.get_by_role("button", name="older ›").click()
    expect(rows.first).to_have_attribute("data-step", "149")
    text.get_by_test_id("text-search").fill("note 12")
    expect(text).to_have_attribute("data-matched", "11")
    expect(rows).to_have_count(11)
    shot(page, "run-page-text-events")
    # A chart of another series shows the run-wide event only.
    page.goto(f"{proc.url}/runs/text000001?path=train/loss,notes")
    expect(page.locator('[data-testid="text-series"][data-path="notes"]')).to_be_visible()


@pytest.mark.slow
@browser_only
def test_runs_table_refreshes_by_itself(page: Any, small_ui: Any) -> None:
    expect = _expect()
    proc, root = small_ui
    st = open_store(str(root))
    try:
        make_run(st, "keep000001", "p", name="keep-me", series={"train/loss": np.ones(3)})
        page.goto(f"{proc.url}/?project=p&poll=300")
        table = page.get_by_test_id("runs-table")
        expect(table).to_have_attribute("data-count", "2")
        page.get_by_test_id("filter-name").fill("keep")
        expect(table).to_have_attribute("data-count", "1")
        row = page.locator('[data-testid="run-row"][data-run-id="keep000001"]')
        row.get_by_test_id("select-run").check()
        loads = int(table.get_attribute("data-loads") or 0)
        page.wait_for_timeout(1000)  # nothing changed: no reading of the runs again
        assert int(table.get_attribute("data-loads") or 0) == loads
        make_run(st, "keep000002", "p", name="keep-me-too", series={"train/loss": np.ones(3)})
        expect(page.locator('[data-testid="run-row"][data-run-id="keep000002"]')).to_be_visible()
        # The filter, its matches and the selection stayed.
        expect(table).to_have_attribute("data-count", "2")
        expect(page.get_by_test_id("filter-name")).to_have_value("keep")
        expect(row.get_by_test_id("select-run")).to_be_checked()
        assert int(table.get_attribute("data-loads") or 0) == loads + 1
    finally:
        st.close()
