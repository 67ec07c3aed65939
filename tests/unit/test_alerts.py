"""The webhook: a real local HTTP receiver checks the payload, the HMAC signature, a retry
after a 500 delivered exactly once, and that a dead webhook never disturbs training."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import warnings
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import tracker
from tracker.core import alerts


class Receiver:
    """A webhook endpoint that answers from a script of status codes (then 200)."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.accepted.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/abc"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alerts, "FIRST_DELAY_S", 0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500])
    yield r
    r.close()


def test_a_nan_reaches_the_webhook_signed_once_after_a_500(
    store: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK", receiver.url)
    monkeypatch.setenv("TRACKER_ALERT_SECRET", "s3cret")
    run = tracker.init_run(project="vision", name="resnet", store=store)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(10):
            run.log({"train/loss": float("nan") if step == 6 else 1.0}, step=step)
        run.close()  # waits a few seconds at most for delivery

    assert len(receiver.requests) == 2  # the 500, then the retry
    (doc,) = receiver.accepted
    assert doc["run_id"] == run.id and doc["project"] == "vision" and doc["run_name"] == "resnet"
    event = doc["event"]
    assert (event["kind"], event["path"], event["step"], event["rank"]) == (
        "nonfinite",
        "train/loss",
        6,
        0,
    )
    ids = {headers["X-Tracker-Delivery"] for headers, _ in receiver.requests}
    assert ids == {doc["id"]}  # the retry is recognisably the same delivery
    for headers, body in receiver.requests:
        want = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Tracker-Signature"], want)
    # What was delivered is what is stored.
    assert tracker.read_run(run.id, store=store).events() == [event]


def test_alerts_from_the_user_are_delivered_too(
    store: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    receiver.statuses = []
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK", receiver.url)
    run = tracker.init_run(project="p", store=store)
    run.alert("val acc below 50%", "epoch 12", level="error")
    run.close()
    (doc,) = receiver.accepted
    assert doc["event"]["kind"] == "alert" and doc["event"]["level"] == "error"
    assert doc["event"]["message"] == "val acc below 50%: epoch 12"
    headers, _ = receiver.requests[0]
    assert "X-Tracker-Signature" not in headers  # no secret, no signature


def test_a_dead_webhook_never_disturbs_training_and_is_reported_once(
    store: str, monkeypatch: pytest.MonkeyPatch, fast_retries: None
) -> None:
    dead = Receiver([])
    url = dead.url
    dead.close()  # nothing listens there now: every attempt is refused
    monkeypatch.setenv("TRACKER_ALERT_WEBHOOK", url)
    run = tracker.init_run(project="p", store=store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        for step in range(2000):
            run.log(
                {"a": float("nan") if step == 5 else 1.0, "b": float("inf") if step == 9 else 1.0}
            )
        logging_s = time.perf_counter() - started
        run.close()
        notifier = alerts.notifier()
        assert notifier is not None and notifier.drain(10)
    reports = [w for w in caught if "could not deliver an alert" in str(w.message)]
    assert len(reports) == 1 and "/hooks/abc" not in str(reports[0].message)  # path hidden
    assert notifier.failed == 2 and notifier.delivered == 0
    assert logging_s < 5  # not a timing claim: a blocked loop would take retries × 2,000
    assert {e["path"] for e in tracker.read_run(run.id, store=store).events()} == {"a", "b"}


def test_slack_urls_get_slacks_message_format() -> None:
    assert alerts.is_slack("https://hooks.slack.com/services/T0/B0/xyz")
    assert not alerts.is_slack("https://example.com/hooks.slack.com")
    event = {"kind": "nonfinite", "level": "warning", "message": "loss is NaN at step 7 on rank 0"}
    body = alerts.payload({"id": "r1", "project": "p", "name": "night"}, event, slack=True)
    assert body == {"text": ":warning: *p/night* (nonfinite): loss is NaN at step 7 on rank 0"}
    plain = alerts.payload({"id": "r1", "project": "p", "name": None}, event, slack=False)
    assert plain["event"] == event and plain["id"] == alerts.delivery_id("r1", event)
