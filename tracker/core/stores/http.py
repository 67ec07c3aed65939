"""The client of a team server: a ``Store`` whose data lives behind ``tracker server``.

``store="http://host:8088"`` (or $TRACKER_STORE) opens an ``HTTPStore``. The token is
read from $TRACKER_API_TOKEN and sent as ``Authorization: Bearer ...``; it never
appears in a message, a log line or anything stored.

**Reading** is one HTTP call per protocol method: the server runs the same method on
its own store after checking the token's project and scope. Chunks travel as their
stored bytes (``wire.py`` of the server frames them), so the reader's size and CRC-32
checks run here, unchanged. ``series_reduced`` is the exception to "one method, one
call": a series bucketed or aggregated over ranks is computed on the server
(``GET /api/runs/{id}/values``) and only the result travels; the reader asks for it
when ``fetch_values`` gets ``buckets=`` or ``aggregate=``.

**Writing** journals locally first, as with a directory store: the journal part of the
protocol is ``JournalFiles`` on a spool directory of this machine
(``~/.cache/tracker/spool/<hash of the address>``, or $TRACKER_SPOOL_DIR). The applier
then POSTs each batch with its journal position (zlib-compressed pickle of builtin
values; the server decodes it with the journal's class-refusing unpickler and validates
every operation). The server skips a batch at or before its applied offset, so a
batch sent twice is stored once. When the server cannot be reached the apply raises
``StoreError``: the writer keeps journaling and catches up from the spool later (with
backoff); ``close()`` waits up to $TRACKER_SERVER_CLOSE_TIMEOUT seconds (default 30)
and otherwise leaves the spool to ``tracker sync --store URL``. Once a writer's request
finds the server unreachable, its later requests fail at once while one background
thread polls ``/api/health``: the writer thread never waits on an absent server twice.
When a writer releases its run and the server holds every byte of the run's spooled
journal, the spool lets it go (``prune_spool``).

Only the standard library is imported here: ``import tracker`` stays light.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import pickle
import shutil
import socket
import struct
import sys
import threading
import time
import urllib.parse
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .base import Chunk, SeriesInfo, TokenRecord
from .journals import JournalFiles

API_VERSION = 1  # the major version of the HTTP API; client and server must agree
TOKEN_ENV = "TRACKER_API_TOKEN"
SPOOL_ENV = "TRACKER_SPOOL_DIR"
CLOSE_TIMEOUT_ENV = "TRACKER_SERVER_CLOSE_TIMEOUT"
DEFAULT_CLOSE_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 30.0
# Largest request body, compressed and decompressed (the server enforces the same).
MAX_BODY_BYTES = 64 * 1024 * 1024
# Ops per request when a batch is larger than the body limit allows: split by the writer.
_RETRYABLE = (
    http.client.RemoteDisconnected,
    http.client.BadStatusLine,
    ConnectionResetError,
    BrokenPipeError,
    ConnectionAbortedError,
)


class ServerError(StoreError):
    """The team server refused a request or could not be reached; ``status`` is the
    HTTP status (0: no answer)."""

    def __init__(
        self, message: str, status: int = 0, error: str | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error  # the kind of error the server named ("KeyError", ...), if any
        self.detail = detail  # the server's own words


class ServerAddress(type(Path())):  # type: ignore[misc]
    """A server's address where the protocol wants the store's ``root``: it reads (str,
    os.fspath) as the URL, so that messages name it and ``open_store(st.root)`` opens
    the same server again. It is no directory: the journals live in the spool."""

    _url: str
    _PLACEHOLDER = "/nonexistent-tracker-server-address"

    def __new__(cls, url: str, *more: str) -> Any:
        if more:  # ``address / "x"`` on Python 3.12+: a plain path, as on older ones
            return Path(url, *more)
        self = super().__new__(cls, cls._PLACEHOLDER)
        self._url = url
        return self

    def __init__(self, url: str, *more: str) -> None:
        if sys.version_info >= (3, 12):  # pathlib keeps its segments from __init__ there
            super().__init__(self._PLACEHOLDER)

    def __str__(self) -> str:
        return getattr(self, "_url", None) or super().__str__()

    def __fspath__(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"ServerAddress({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServerAddress) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (ServerAddress, (str(self),))


def normalize_url(url: str) -> str:
    """``http(s)://host[:port][/prefix]`` without a trailing slash; refuses credentials
    in the address (the token belongs in $TRACKER_API_TOKEN, never in a URL)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreError(f"store {url!r}: a server address is http(s)://HOST[:PORT]")
    if parts.username or parts.password:
        raise StoreError(
            f"store address holds credentials; give the address alone and the token in ${TOKEN_ENV}"
        )
    if parts.query or parts.fragment:
        raise StoreError(f"store {parts.scheme}://{parts.netloc}{parts.path}: no query allowed")
    try:
        port = parts.port
    except ValueError:
        raise StoreError(f"store {url!r}: the port is not a number") from None
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def server_address(url: str) -> ServerAddress:
    return ServerAddress(normalize_url(url))


def spool_dir(url: str) -> Path:
    """Where this machine journals the runs it writes to the server at ``url``."""
    configured = os.environ.get(SPOOL_ENV)
    if configured:
        base = Path(configured).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
        base = Path(cache).expanduser() / "tracker" / "spool"
    digest = hashlib.sha256(normalize_url(url).encode()).hexdigest()[:16]
    return (base / digest).resolve()


def close_timeout() -> float:
    try:
        return max(0.0, float(os.environ.get(CLOSE_TIMEOUT_ENV, DEFAULT_CLOSE_TIMEOUT_S)))
    except ValueError:
        return DEFAULT_CLOSE_TIMEOUT_S


# -- the chunk framing (the server's wire.py writes it) -------------------------------------

_CHUNK_HEAD = struct.Struct("<I")


def decode_chunks(body: bytes) -> tuple[str, list[Chunk]] | None:
    """(kind, chunks) from a chunks response: u32 length | JSON head | the blobs."""
    if len(body) < _CHUNK_HEAD.size:
        raise StoreError("the server sent a truncated chunks response")
    (n,) = _CHUNK_HEAD.unpack_from(body, 0)
    head = json.loads(body[4 : 4 + n])
    if head is None:
        return None
    pos = 4 + n
    chunks = []
    for chunk_id, count, crc, attempt, ls, lv, lt in head["chunks"]:
        steps = body[pos : pos + ls]
        vals = body[pos + ls : pos + ls + lv]
        ts = body[pos + ls + lv : pos + ls + lv + lt]
        pos += ls + lv + lt
        chunks.append(Chunk(chunk_id, count, steps, vals, ts, crc, attempt))
    return head["kind"], chunks


def decode_arrays(body: bytes) -> tuple[str, dict[str, Any]]:
    """(kind, {name: numpy array}) from a reduced-series response (``wire.encode_arrays``)."""
    import numpy as np

    if len(body) < _CHUNK_HEAD.size:
        raise StoreError("the server sent a truncated response")
    (n,) = _CHUNK_HEAD.unpack_from(body, 0)
    head = json.loads(body[4 : 4 + n])
    count = int(head["n"])
    pos = 4 + n
    arrays = {}
    for name, dtype in head["arrays"]:
        size = 8 * count
        if pos + size > len(body):
            raise StoreError("the server sent a truncated response")
        arrays[name] = np.frombuffer(body, dtype=np.dtype(dtype), count=count, offset=pos).copy()
        pos += size
    return head["kind"], arrays


# -- the store -------------------------------------------------------------------------------


class HTTPStore(JournalFiles):
    """A team server as a ``Store`` (see the module docstring). Thread-safe: each thread
    keeps its own connection."""

    # Catch-up batches from the spool (``replay._replay``) stay well under the body limit.
    replay_batch_bytes = MAX_BODY_BYTES // 4
    # An async writer leaves the network to a thread of its own that sends from the spool
    # (``writer.Writer``): a slow server never holds up journaling, so never ``run.log``.
    ships_from_journal = True

    def __init__(
        self,
        url: str,
        *,
        create: bool = True,
        readonly: bool = False,
        token: str | None = None,
        check: bool = True,
    ) -> None:
        self.url = normalize_url(url)
        self.root = ServerAddress(self.url)
        self.location = self.url
        self.readonly = readonly
        self.spool = spool_dir(self.url)
        self.journal_root = self.spool / "journal"
        self._token = token if token is not None else os.environ.get(TOKEN_ENV, "").strip()
        parts = urllib.parse.urlsplit(self.url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path
        self._local = threading.local()
        self.close_wait = close_timeout()
        self.identity: dict[str, Any] = {}
        self.server: dict[str, Any] = {}
        # The server's clock minus this machine's (seconds), measured by ``_check``; None
        # from a server that does not send its time.
        self.clock_skew: float | None = None
        self.clock_uncertainty = 0.0
        # While the server is unreachable, requests fail at once and one background
        # thread probes /api/health (a writer's handle only: its thread must never wait
        # on a host that drops packets, for a heartbeat or a catch-up).
        self._down_since: float | None = None
        self._down_reason = ""
        self._probe: threading.Thread | None = None
        self._down_lock = threading.Lock()
        self._breaker = False
        self._held: dict[int, str] = {}  # writer lock fd -> run id
        if check:
            self._check(write=not readonly)
        self._breaker = not readonly
        if not readonly:
            # The spool holds run data (never the token): this user's alone.
            try:
                self.spool.mkdir(mode=0o700, parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the spool directory {self.spool} for runs sent to "
                    f"{self.url}: {exc}; set ${SPOOL_ENV} to a writable directory"
                ) from exc

    # -- the connection ----------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=CONNECT_TIMEOUT_S)
            self._local.conn = conn
            self._local.used = False
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        self._local.conn = None

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str = "application/json",
        what: str = "",
    ) -> tuple[int, bytes]:
        """One HTTP request; returns (status, body) of a 2xx answer, raises ServerError
        for any other (naming the project for a 403) or when there is no answer."""
        target = self._prefix + "/api" + path
        if query:
            pairs = [(k, v) for k, v in query.items() if v is not None]
            target += "?" + urllib.parse.urlencode(pairs, doseq=True)
        headers = {"Accept": "application/json", "User-Agent": "tracker"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if body is not None:
            headers["Content-Type"] = content_type
        down = self._down_since
        if down is not None:
            since = time.strftime("%H:%M:%S", time.localtime(down))
            raise ServerError(f"{self._down_reason} (since {since}; retrying in the background)")
        for attempt in (0, 1):
            conn = self._connection()
            reused = getattr(self._local, "used", False)
            try:
                conn.request(method, target, body=body, headers=headers)
                if conn.sock is not None:
                    conn.sock.settimeout(READ_TIMEOUT_S)
                resp = conn.getresponse()
                data = resp.read()
                self._local.used = True
            except _RETRYABLE as exc:
                self._drop_connection()
                if reused and attempt == 0:
                    continue  # a kept-alive connection the server closed: once more, fresh
                raise self._unreachable(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                raise self._unreachable(exc) from None
            if resp.getheader("Connection", "").lower() == "close":
                self._drop_connection()
            if 200 <= resp.status < 300:
                return resp.status, data
            raise self._refused(resp.status, data, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def _unreachable(self, exc: BaseException) -> ServerError:
        error = self._describe_unreachable(exc)
        if self._breaker:
            self._mark_down(str(error))
        return error

    def _mark_down(self, reason: str) -> None:
        with self._down_lock:
            if self._down_since is None:
                self._down_reason = reason
                self._down_since = time.time()
            if self._probe is None:
                self._probe = threading.Thread(
                    target=self._probe_until_up, name="tracker-server-probe", daemon=True
                )
                self._probe.start()

    def _probe_until_up(self) -> None:
        """Poll /api/health (backing off to 5 s) until the server answers again."""
        delay = 0.25
        while True:
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = cls(self._host, self._port, timeout=CONNECT_TIMEOUT_S)
            try:
                conn.request("GET", self._prefix + "/api/health")
                if conn.getresponse().status == 200:
                    break
            except (OSError, http.client.HTTPException):
                continue
            finally:
                conn.close()
        with self._down_lock:
            self._down_since = None
            self._probe = None

    def _describe_unreachable(self, exc: BaseException) -> ServerError:
        if isinstance(exc, socket.gaierror):
            why = f"the host name {self._host!r} does not resolve ({exc.strerror or exc})"
        elif isinstance(exc, ConnectionRefusedError):
            why = "connection refused: is `tracker server` running there?"
        elif isinstance(exc, TimeoutError | socket.timeout):
            why = "no answer in time"
        else:
            why = f"{type(exc).__name__}: {exc}"
        return ServerError(f"cannot reach the tracker server at {self.url}: {why}")

    def _refused(self, status: int, data: bytes, what: str) -> ServerError:
        error = None
        try:
            doc = json.loads(data)
            detail = doc.get("detail")
            error = doc.get("error")
        except (ValueError, AttributeError):
            detail = None
        if not isinstance(detail, str):
            detail = data[:300].decode("utf-8", "replace") if data else f"HTTP {status}"
        if self._token and self._token in detail:
            detail = detail.replace(self._token, "<token>")  # never echo it back
        if status == 401:
            detail += f" (the token in ${TOKEN_ENV})"
        prefix = f"tracker server {self.url}"
        if what:
            prefix += f": {what}"
        kind = error if isinstance(error, str) else None
        return ServerError(f"{prefix}: {detail}", status, kind, detail)

    def _json(
        self, method: str, path: str, query: Mapping[str, Any] | None = None, body: Any = None
    ) -> Any:
        payload = None if body is None else json.dumps(body).encode()
        _status, data = self.request(method, path, query=query, body=payload)
        return json.loads(data) if data else None

    def _check(self, *, write: bool) -> None:
        """Reachable, a compatible version, and a token that may read (or write)."""
        try:
            sent = time.time()
            self.server = self._json("GET", "/health") or {}
            back = time.time()
        except ServerError as exc:
            if exc.status == 404:
                raise ServerError(
                    f"{self.url} answers, but not as a tracker server (no /api/health)",
                    404,
                ) from None
            raise
        server_time = self.server.get("time")
        if isinstance(server_time, int | float) and not isinstance(server_time, bool):
            # The server read its clock between sending and receiving: the middle is the
            # best guess, off by at most half the round trip.
            self.clock_skew = float(server_time) - (sent + back) / 2
            self.clock_uncertainty = (back - sent) / 2
        api = self.server.get("api")
        if api != API_VERSION:
            raise ServerError(
                f"tracker server {self.url} speaks API version {api} (tracker "
                f"{self.server.get('version')}); this tracker speaks version {API_VERSION}: "
                "install the same tracker version on both sides"
            )
        if not self._token:
            raise ServerError(
                f"tracker server {self.url} needs a token: set ${TOKEN_ENV} to one made "
                "by `tracker token create` where the server's store is",
                401,
            )
        self.identity = self._json("GET", "/auth")
        if write and self.identity.get("scope") != "write":
            raise ServerError(
                f"tracker server {self.url}: the token {self.identity.get('token_id')} "
                f"is a read token of project {self.identity.get('project')!r}; writing a "
                "run needs a write token (`tracker token create --scope write`)",
                403,
            )

    @property
    def project(self) -> str | None:
        """The project the token may use."""
        return self.identity.get("project")

    def check_project(self, project: str, *, write: bool = True) -> None:
        """Refuse at once (before a run exists) a project the token does not cover."""
        mine = self.identity.get("project")
        if mine is not None and project != mine:
            raise ServerError(
                f"tracker server {self.url}: the token {self.identity.get('token_id')} is "
                f"for project {mine!r}, not {project!r}: forbidden",
                403,
            )
        if write and self.identity.get("scope") != "write":
            raise ServerError(
                f"tracker server {self.url}: the token is a read token; project {project!r} "
                "cannot be written with it",
                403,
            )

    # -- the spool: a run's journal goes once the server holds all of it ---------------------

    def hold_writer_lock(self, run_id: str) -> int:
        fd = super().hold_writer_lock(run_id)
        self._held[fd] = run_id
        return fd

    def release_lock(self, fd: int) -> None:  # type: ignore[override]
        run_id = self._held.pop(fd, None)
        JournalFiles.release_lock(fd)
        if run_id is not None:
            self.prune_spool(run_id)

    def prune_spool(self, run_id: str) -> bool:
        """Delete the run's spooled journal if the server has applied every byte of it
        and no writer holds it; True if deleted. Anything else (the server away, a
        segment not all applied, a damaged tail) keeps it, for `tracker sync`."""
        try:
            segments = self.segments(run_id)
            if not segments:
                return False
            offsets = self.applied_offsets(run_id)
            for segment in segments:
                if offsets.get(segment.name, -1) < segment.stat().st_size:
                    return False
            with self.exclusive_if_idle(run_id) as idle:
                if not idle:
                    return False
                shutil.rmtree(self.journal_dir(run_id))
        except (StoreError, OSError):
            return False
        return True

    # -- handles ---------------------------------------------------------------------------

    def close(self) -> None:
        self._drop_connection()

    def for_writing(self) -> HTTPStore:
        if not self.readonly:
            return self
        return HTTPStore(self.url, token=self._token)

    @property
    def can_write(self) -> bool:
        # A reader never recovers runs through a server: the run's journal is on the
        # machine that wrote it (its `tracker sync` applies it), and marking a run
        # crashed from another machine would end one that is alive there.
        return not self.readonly

    # -- writing ---------------------------------------------------------------------------

    def applier(self, run_id: str) -> HTTPApplier:
        return HTTPApplier(self, run_id)

    def applied_offsets(self, run_id: str) -> dict[str, int]:
        return dict(self._json("GET", f"/runs/{_q(run_id)}/applied"))

    def heartbeat(self, run_id: str, ts: float) -> None:
        self._json("POST", f"/runs/{_q(run_id)}/heartbeat", body={"ts": ts})

    def mark_crashed(self, run_id: str, now: float) -> None:
        self._json("POST", f"/runs/{_q(run_id)}/crashed", body={"now": now})

    def delete_runs(self, run_ids: list[str]) -> None:
        if run_ids:
            self._json("POST", "/runs/delete", body={"run_ids": list(run_ids)})

    def reclaim_space(self) -> int:
        return 0  # the server's store is compacted where it is (`tracker gc` there)

    def reclaimable_bytes(self) -> int:
        return 0

    def disk_bytes(self) -> int:
        return 0

    def check_writable(self) -> None:
        identity = self._json("GET", "/auth")
        if identity.get("scope") != "write":
            raise ServerError(f"tracker server {self.url}: the token is a read token", 403)
        self.spool.mkdir(parents=True, exist_ok=True)

    # -- tokens: managed where the store is, never through the server ------------------------

    def _no_tokens(self) -> StoreError:
        return StoreError(
            f"tokens are managed where the server's store is: run `tracker token ...` "
            f"with --store pointing at that store, not at {self.url}"
        )

    def add_token(self, token: TokenRecord) -> None:
        raise self._no_tokens()

    def token(self, token_id: str) -> TokenRecord | None:
        raise self._no_tokens()

    def tokens(self, project: str | None = None) -> list[TokenRecord]:
        raise self._no_tokens()

    def revoke_token(self, token_id: str, now: float) -> bool:
        raise self._no_tokens()

    # -- reading -----------------------------------------------------------------------------

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self._json("GET", f"/runs/{_q(run_id)}")

    def runs(
        self,
        *,
        project: str | None = None,
        tags: Iterable[str] = (),
        statuses: Iterable[str] = (),
        config: Mapping[str, Iterable[tuple[str, Any]]] | None = None,
        created_before: float | None = None,
        id_prefix: str | None = None,
        parent_id: str | None = None,
        order: str = "newest",
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        body = {
            "project": project,
            "tags": list(tags),
            "statuses": list(statuses),
            "config": {k: [list(p) for p in v] for k, v in (config or {}).items()},
            "created_before": created_before,
            "id_prefix": id_prefix,
            "parent_id": parent_id,
            "order": order,
            "limit": limit,
        }
        return self._json("POST", "/runs/query", body=body)

    def tags(self, run_id: str) -> list[str]:
        return self._json("GET", f"/runs/{_q(run_id)}/tags")

    def fields(self, run_id: str, prefix: str | None = None) -> list[tuple[str, str, Any]]:
        rows = self._json("GET", f"/runs/{_q(run_id)}/fields", {"prefix": prefix})
        return [tuple(r) for r in rows]

    def field(self, run_id: str, path: str) -> tuple[str, Any] | None:
        found = self._json("GET", f"/runs/{_q(run_id)}/field", {"path": path})
        return None if found is None else (found[0], found[1])

    def series_list(self, run_id: str, rank: int | None = None) -> list[SeriesInfo]:
        rows = self._json("GET", f"/runs/{_q(run_id)}/series", {"rank": rank})
        return [SeriesInfo(*r) for r in rows]

    def ranks(self, run_id: str) -> list[int]:
        return self._json("GET", f"/runs/{_q(run_id)}/ranks")

    def attempts(self, run_id: str) -> list[tuple[Any, int | None]]:
        return [(a, s) for a, s in self._json("GET", f"/runs/{_q(run_id)}/attempts")]

    def series_chunks(
        self, run_id: str, path: str, rank: int, max_first_step: int | None = None
    ) -> tuple[str, list[Chunk]] | None:
        query = {"path": path, "rank": rank, "max_first_step": max_first_step}
        _status, body = self.request("GET", f"/runs/{_q(run_id)}/chunks", query=query)
        return decode_chunks(body)

    def series_reduced(
        self,
        run_id: str,
        path: str,
        *,
        rank: int | None = None,
        aggregate: str | None = None,
        buckets: int | None = None,
        per_step: str | None = None,
        include_superseded: bool = False,
    ) -> tuple[str, dict[str, Any]] | None:
        """A series reduced on the server, so that its points never travel: ``buckets``
        (and/or ``aggregate`` over the ranks) as ``FieldReader.fetch_values`` computes
        them there. Returns ("buckets" or "series", {name: numpy array}); None from a
        server without the route (the reader then computes it here). Raises KeyError,
        TypeError or ValueError as the reader would."""
        query = {
            "path": path,
            "rank": rank,
            "aggregate": aggregate,
            "buckets": buckets,
            "per_step": per_step,
            "include_superseded": "true" if include_superseded else None,
        }
        try:
            _status, body = self.request("GET", f"/runs/{_q(run_id)}/values", query=query)
        except ServerError as exc:
            raised = {"KeyError": KeyError, "TypeError": TypeError, "ValueError": ValueError}
            if exc.error in raised:
                raise raised[exc.error](exc.detail) from None
            if exc.status in (404, 405) and exc.error is None:
                return None  # an older server: no such route
            raise
        return decode_arrays(body)

    # -- maintenance -------------------------------------------------------------------------

    def all_chunks(self) -> Iterator[tuple[str, str, int, str, Chunk]]:
        for row in self.runs(order="id"):
            rid = row["run_id"]
            for s in self.series_list(rid):
                found = self.series_chunks(rid, s.path, s.rank)
                if found is None:
                    continue
                kind, chunks = found
                for c in chunks:
                    yield rid, s.path, s.rank, kind, c

    def set_aside_summary(self) -> list[tuple[str, int, str]] | None:
        rows = self._json("GET", "/set-aside")
        return None if rows is None else [tuple(r) for r in rows]


class HTTPApplier:
    """Sends journal batches to the server, which applies them with its store's applier
    (skipping a batch at or before its applied offset: a resend is stored once)."""

    def __init__(self, store: HTTPStore, run_id: str) -> None:
        self.store = store
        self.run_id = run_id
        self.set_aside = 0
        try:
            self._applied: dict[str, int] = store.applied_offsets(run_id)
        except ServerError as exc:
            if exc.status != 0:
                raise
            self._applied = {}  # the server is down: the first apply says so

    def applied(self, position: tuple[str, int]) -> bool:
        return position[1] <= self._applied.get(position[0], -1)

    def apply(self, batch: list[Any], position: tuple[str, int] | None = None) -> int:
        if position is None:
            raise StoreError("a batch sent to a tracker server needs its journal position")
        if self.applied(position):
            return 0
        body = zlib.compress(pickle.dumps(list(batch), protocol=5), 1)
        if len(body) > MAX_BODY_BYTES:
            raise StoreError(
                f"run {self.run_id}: one journal batch compresses to {len(body)} bytes, over "
                f"the server's limit of {MAX_BODY_BYTES}; log fewer values per call"
            )
        segment, offset = position
        _status, data = self.store.request(
            "POST",
            f"/runs/{_q(self.run_id)}/apply",
            query={"segment": segment, "offset": offset},
            body=body,
            content_type="application/x-tracker-batch",
            what=f"run {self.run_id}",
        )
        answer = json.loads(data)
        self._applied[segment] = max(self._applied.get(segment, -1), offset)
        aside = int(answer.get("set_aside", 0))
        self.set_aside += aside
        return aside


def _q(text: str) -> str:
    return urllib.parse.quote(text, safe="")


def wait_for_server(url: str, timeout: float) -> bool:
    """Whether ``url`` answers /api/health within ``timeout`` seconds (for tests, scripts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            HTTPStore(url, check=False, readonly=True)._json("GET", "/health")
            return True
        except ServerError:
            time.sleep(0.1)
    return False


def check_server(url: str) -> tuple[list[Any], HTTPStore | None]:
    """``tracker doctor``'s checks of a server itself: it answers as a tracker server of
    a compatible version, and the token is valid; with the store opened read-only (the
    checks every store shares follow, run through the server) where both pass."""
    from .base import Check

    checks: list[Check] = []
    try:
        st = HTTPStore(url, readonly=True)
    except ServerError as exc:
        reached = exc.status != 0
        checks.append(Check("server reachable", reached, str(exc) if not reached else url))
        if reached:
            checks.append(Check("token", False, str(exc)))
        return checks, None
    info = st.server
    checks.append(
        Check(
            "server reachable",
            True,
            f"{st.url}: tracker {info.get('version')}, API {info.get('api')}, "
            f"store {info.get('store')}",
        )
    )
    ident = st.identity
    checks.append(
        Check(
            "token",
            True,
            f"{ident.get('token_id')}: {ident.get('scope')} access to project "
            f"{ident.get('project')!r}",
        )
    )
    checks.append(clock_check(st))
    return checks, st


# Clock skew between a client and its server above which ``tracker doctor`` complains.
MAX_CLOCK_SKEW_S = 5.0


def clock_check(st: HTTPStore, limit: float = MAX_CLOCK_SKEW_S) -> Any:
    """Whether this machine's clock agrees with the server's within ``limit`` seconds.

    Runs are stamped with the writer's clock (created, heartbeat, points) and judged by
    the reader's: a reader whose clock is ahead takes a live run's heartbeat for stale
    (it reads as crashed after two minutes of silence), and times from several machines
    stop lining up."""
    from .base import Check

    skew = st.clock_skew
    if skew is None:
        return Check("clock", True, "the server does not send its time (an older server)")
    ahead = "ahead of" if skew > 0 else "behind"
    within = f"±{st.clock_uncertainty:.2f} s"
    if abs(skew) - st.clock_uncertainty > limit:
        return Check(
            "clock",
            False,
            f"the server's clock is {abs(skew):.1f} s ({within}) {ahead} this machine's "
            f"(more than {limit:g} s): run times from different machines disagree, and a "
            "reader whose clock runs ahead takes live runs for crashed; sync the clocks "
            "(NTP: chrony, systemd-timesyncd)",
        )
    return Check("clock", True, f"the server's clock is {abs(skew):.2f} s {ahead} this machine's")


def spool_backlog(st: HTTPStore) -> tuple[dict[str, int], dict[str, str]]:
    """Bytes of intact journal records in this machine's spool that the server has not
    applied, per run (0s left out; runs a live writer holds left out: it sends them),
    and the runs whose state could not be asked for (run id -> why)."""
    from ..journal import SegmentScan, read_records

    behind: dict[str, int] = {}
    unknown: dict[str, str] = {}
    for run_id in st.journal_runs():
        segments = st.segments(run_id)
        if not segments or st.writer_alive(run_id):
            continue
        try:
            offsets = st.applied_offsets(run_id)
        except ServerError as exc:
            if exc.status == 0:
                raise
            unknown[run_id] = str(exc)
            continue
        total = 0
        for segment in segments:
            scan = SegmentScan()
            for _end, _ops in read_records(segment, max(offsets.get(segment.name, 0), 0), scan):
                pass
            total += scan.intact_bytes
        if total:
            behind[run_id] = total
    return behind, unknown
