"""Delivering events to a webhook (``TRACKER_ALERT_WEBHOOK``), off every training path.

Each event is POSTed as one JSON document from a daemon thread of its own, so a slow or
dead receiver costs the writer nothing but a queue append. A delivery is retried with
backoff after a connection error, a timeout, a 429 or a 5xx, and given up after
``ATTEMPTS`` tries; the first delivery that fails for good is reported once, and later
failures only counted. Every request of one event carries the same
``X-Tracker-Delivery`` id, so a receiver that saw a request whose answer was lost can
drop the repeat; this process never sends an event again once it was accepted.

With ``TRACKER_ALERT_SECRET`` set, each request carries
``X-Tracker-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body with that
secret. A Slack incoming-webhook URL (``hooks.slack.com``) gets Slack's message format.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from typing import Any

log = logging.getLogger("tracker")

ATTEMPTS = 6
FIRST_DELAY_S = 0.5
REQUEST_TIMEOUT_S = 5.0
MAX_WAITING = 10_000
CLOSE_WAIT_S = 5.0
_LEVEL_EMOJI = {"info": ":information_source:", "warning": ":warning:", "error": ":red_circle:"}


def delivery_id(run_id: str, event: dict[str, Any]) -> str:
    """The same event of the same run gives the same id, in any process."""
    body = json.dumps(event, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(f"{run_id}\0{body}".encode()).hexdigest()[:32]


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def is_slack(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host == "hooks.slack.com" or host.endswith(".hooks.slack.com")


def public_url(url: str) -> str:
    """The URL without its path: a webhook URL's path is often its secret."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/…"


def payload(run: dict[str, Any], event: dict[str, Any], slack: bool) -> dict[str, Any]:
    """The JSON document posted for ``event`` of ``run`` (id, project, name)."""
    if slack:
        where = f"{run.get('project')}/{run.get('name') or run.get('id')}"
        emoji = _LEVEL_EMOJI.get(str(event.get("level")), "")
        detail = event.get("text") or ""
        text = f"{emoji} *{where}* ({event.get('kind')}): {event.get('message')}"
        if detail:
            text += f"\n{detail}"
        return {"text": text}
    return {
        "id": delivery_id(str(run.get("id")), event),
        "run_id": run.get("id"),
        "project": run.get("project"),
        "run_name": run.get("name"),
        "event": event,
    }


class Notifier:
    """Posts events to one webhook URL from a thread of its own."""

    def __init__(self, url: str, secret: str | None = None) -> None:
        self.url = url
        self.secret = secret or None
        self.slack = is_slack(url)
        self._waiting: collections.deque[tuple[str, bytes]] = collections.deque()
        self._cv = threading.Condition()
        self._busy = False
        self._sent: set[str] = set()
        self._reported = False
        self.delivered = 0
        self.failed = 0
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name="tracker-alerts", daemon=True)
        self._thread.start()

    def submit(self, run: dict[str, Any], events: list[dict[str, Any]]) -> None:
        with self._cv:
            for event in events:
                ident = delivery_id(str(run.get("id")), event)
                if ident in self._sent:
                    continue
                body = json.dumps(payload(run, event, self.slack), default=str).encode()
                if len(self._waiting) >= MAX_WAITING:
                    self._waiting.popleft()  # the oldest goes: memory stays bounded
                    self.dropped += 1
                self._waiting.append((ident, body))
            self._cv.notify_all()

    def drain(self, timeout: float = CLOSE_WAIT_S) -> bool:
        """Wait up to ``timeout`` s for every submitted event to be delivered or given up."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self._waiting or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._waiting:
                    self._cv.wait()
                ident, body = self._waiting.popleft()
                self._busy = True
            try:
                self._deliver(ident, body)
            except Exception as exc:  # noqa: BLE001 - this thread must outlive any receiver
                self._give_up(repr(exc))
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def _deliver(self, ident: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tracker-alerts",
            "X-Tracker-Delivery": ident,
        }
        if self.secret:
            headers["X-Tracker-Signature"] = sign(self.secret, body)
        delay = FIRST_DELAY_S
        reason = ""
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(delay)
                delay *= 2
            request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                    response.read()
            except urllib.error.HTTPError as exc:
                reason = f"HTTP {exc.code} {exc.reason}"
                if exc.code != 429 and exc.code < 500:
                    break  # the receiver refuses this request: repeating it will not help
                continue
            except (urllib.error.URLError, OSError) as exc:
                reason = str(getattr(exc, "reason", exc))
                continue
            self._sent.add(ident)
            self.delivered += 1
            return
        self._give_up(reason)

    def _give_up(self, reason: str) -> None:
        self.failed += 1
        if self._reported:
            return
        self._reported = True
        message = (
            f"tracker: could not deliver an alert to {public_url(self.url)} "
            f"(TRACKER_ALERT_WEBHOOK): {reason}; the event is stored in the run "
            "(`tracker events RUN`), and later delivery failures are not reported"
        )
        log.warning(message)
        warnings.warn(message, RuntimeWarning, stacklevel=1)


_notifiers: dict[tuple[str, str | None], Notifier] = {}
_notifiers_lock = threading.Lock()


def notifier() -> Notifier | None:
    """This process's notifier for the configured webhook, or None when none is set."""
    url = os.environ.get("TRACKER_ALERT_WEBHOOK", "").strip()
    if not url:
        return None
    secret = os.environ.get("TRACKER_ALERT_SECRET") or None
    key = (url, secret)
    with _notifiers_lock:
        found = _notifiers.get(key)
        if found is None:
            found = _notifiers[key] = Notifier(url, secret)
        return found
