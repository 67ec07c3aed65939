"""The team server's HTTP API: an ASGI app (FastAPI) over any ``Store``.

``create_app(location)`` opens the store at ``location`` (a directory of the embedded
store, or ``postgresql://...``) and serves it under ``/api/``. Every route but
``/api/health`` needs a token (``Authorization: Bearer trk_...``, ``tokens.py``): a
read token reads the runs of its project, a write token also writes them; a run of
another project is refused with 403, a missing, wrong, expired or revoked token with
401. The server keeps nothing but its store: any number of server processes can
serve one store, and a request may go to any of them.

Routes (the OpenAPI description is at ``/api/openapi.json``)::

    GET  /api/health                       version, API version, store kind, time (no token)
    GET  /api/auth                         the token's id, project, scope, expiry
    POST /api/runs/query                   Store.runs (filtered to the token's project)
    GET  /api/runs/{id}                    Store.run (null if unknown)
    GET  /api/runs/{id}/tags|fields|field|series|ranks|attempts|applied
    GET  /api/runs/{id}/chunks             Store.series_chunks, binary (wire.py)
    GET  /api/runs/{id}/values?path=&buckets=&aggregate=&rank=   a series reduced here
    POST /api/runs/{id}/apply?segment=&offset=   a journal batch (write)
    POST /api/runs/{id}/heartbeat          Store.heartbeat (write)
    POST /api/runs/{id}/crashed            Store.mark_crashed (write)
    POST /api/runs/delete                  Store.delete_runs (write)
    GET  /api/set-aside                    Store.set_aside_summary (the project's runs)
    GET  /, /runs/{id}, /compare, /api/ui/...   the web UI (ui_routes.py; docs/ui.md)

Batches are checked by ``wire.py`` before anything is applied; the backend store's
own applier applies them, so a batch at or before the run's applied offset is
skipped (a client's resend is stored once).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from ..core.errors import TrackerError
from ..core.stores import Store, open_store, store_kind
from ..core.stores.base import RUN_ORDERS, TokenRecord
from ..core.stores.http import API_VERSION, MAX_BODY_BYTES
from . import wire
from .tokens import TokenRefused, verify_token

log = logging.getLogger("tracker.server")


class Refused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def create_app(location: str | os.PathLike[str] | None = None, store: Store | None = None) -> Any:
    """The ASGI app serving the store at ``location`` (or the open ``store``)."""
    import tracker

    backend = store if store is not None else open_store(location)
    kind = store_kind(location) if store is None else type(store).__name__
    app = FastAPI(
        title="tracker server",
        version=tracker.__version__,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.store = backend
    appliers = Appliers(backend)

    def answer(doc: Any, status: int = 200) -> Response:
        body = json.dumps(doc, allow_nan=True, default=str).encode()
        return Response(body, status_code=status, media_type="application/json")

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        response = answer({"detail": exc.detail}, exc.status)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="tracker"'
        return response

    @app.exception_handler(TrackerError)
    async def _store_failed(request: Request, exc: TrackerError) -> Response:
        log.error("store error on %s %s: %s", request.method, request.url.path, exc)
        return answer({"detail": f"the server's store failed: {exc}"}, 503)

    def auth(request: Request, write: bool = False) -> TokenRecord:
        header = request.headers.get("authorization", "")
        text = header[7:].strip() if header[:7].lower() == "bearer " else None
        try:
            record = verify_token(backend, text)
        except TokenRefused as exc:
            raise Refused(401, str(exc)) from None
        if write and record.scope != "write":
            raise Refused(
                403, f"token {record.token_id} is a read token of project {record.project!r}"
            )
        return record

    def run_row(record: TokenRecord, run_id: str) -> dict[str, Any] | None:
        try:
            wire.check_run_id(run_id)
        except wire.BadRequest as exc:
            raise Refused(400, str(exc)) from None
        row = backend.run(run_id)
        if row is not None and row["project"] != record.project:
            raise Refused(
                403,
                f"token {record.token_id} is for project {record.project!r}; run {run_id} "
                f"belongs to project {row['project']!r}: forbidden",
            )
        return row

    def reading(request: Request, run_id: str) -> dict[str, Any] | None:
        return run_row(auth(request), run_id)

    # -- open routes --------------------------------------------------------------------------

    @app.get("/api/health")
    def health() -> Response:
        return answer(
            {
                "status": "ok",
                "service": "tracker",
                "version": tracker.__version__,
                "api": API_VERSION,
                "store": kind,
                "time": time.time(),  # for clients' clock-skew check (tracker doctor)
            }
        )

    @app.get("/api/auth")
    def whoami(request: Request) -> Response:
        r = auth(request)
        return answer(
            {
                "token_id": r.token_id,
                "project": r.project,
                "scope": r.scope,
                "name": r.name,
                "expires_at": r.expires_at,
            }
        )

    # -- reading --------------------------------------------------------------------------------

    @app.post("/api/runs/query")
    async def query(request: Request) -> Response:
        record = await run_in_threadpool(auth, request)
        body = await _small_json(request)
        project = body.get("project")
        if project is not None and project != record.project:
            raise Refused(
                403,
                f"token {record.token_id} is for project {record.project!r}, not "
                f"{project!r}: forbidden",
            )
        order = body.get("order", "newest")
        if order not in RUN_ORDERS:
            raise Refused(400, f"order {order!r}: one of {', '.join(RUN_ORDERS)}")
        config = body.get("config") or {}
        if not isinstance(config, dict):
            raise Refused(400, "config must map paths to [kind, value] pairs")
        try:
            wanted = {str(k): [(str(p[0]), p[1]) for p in v] for k, v in config.items()}
        except (TypeError, IndexError, KeyError):
            raise Refused(400, "config must map paths to lists of [kind, value]") from None
        args = {
            "project": record.project,
            "tags": _strs(body.get("tags"), "tags"),
            "statuses": _strs(body.get("statuses"), "statuses"),
            "config": wanted,
            "created_before": _num(body.get("created_before")),
            "id_prefix": _opt_str(body.get("id_prefix")),
            "parent_id": _opt_str(body.get("parent_id")),
            "order": order,
            "limit": _opt_int(body.get("limit")),
        }
        rows = await run_in_threadpool(lambda: backend.runs(**args))
        return answer(rows)

    @app.get("/api/runs/{run_id}")
    def get_run(request: Request, run_id: str) -> Response:
        return answer(reading(request, run_id))

    @app.get("/api/runs/{run_id}/tags")
    def get_tags(request: Request, run_id: str) -> Response:
        reading(request, run_id)
        return answer(backend.tags(run_id))

    @app.get("/api/runs/{run_id}/fields")
    def get_fields(request: Request, run_id: str, prefix: str | None = None) -> Response:
        reading(request, run_id)
        return answer([list(r) for r in backend.fields(run_id, prefix)])

    @app.get("/api/runs/{run_id}/field")
    def get_field(request: Request, run_id: str, path: str) -> Response:
        reading(request, run_id)
        found = backend.field(run_id, path)
        return answer(None if found is None else list(found))

    @app.get("/api/runs/{run_id}/series")
    def get_series(request: Request, run_id: str, rank: int | None = None) -> Response:
        reading(request, run_id)
        return answer([list(s) for s in backend.series_list(run_id, rank)])

    @app.get("/api/runs/{run_id}/ranks")
    def get_ranks(request: Request, run_id: str) -> Response:
        reading(request, run_id)
        return answer(backend.ranks(run_id))

    @app.get("/api/runs/{run_id}/attempts")
    def get_attempts(request: Request, run_id: str) -> Response:
        reading(request, run_id)
        return answer([list(a) for a in backend.attempts(run_id)])

    @app.get("/api/runs/{run_id}/applied")
    def get_applied(request: Request, run_id: str) -> Response:
        reading(request, run_id)
        return answer(backend.applied_offsets(run_id))

    @app.get("/api/runs/{run_id}/chunks")
    def get_chunks(
        request: Request, run_id: str, path: str, rank: int, max_first_step: int | None = None
    ) -> Response:
        reading(request, run_id)
        found = backend.series_chunks(run_id, path, rank, max_first_step)
        return Response(wire.encode_chunks(found), media_type="application/octet-stream")

    @app.get("/api/runs/{run_id}/values")
    def get_values(
        request: Request,
        run_id: str,
        path: str,
        rank: int | None = None,
        aggregate: str | None = None,
        buckets: int | None = None,
        per_step: str | None = None,
        include_superseded: bool = False,
    ) -> Response:
        """A series reduced here (buckets, an aggregate over ranks): its points stay."""
        row = reading(request, run_id)
        if row is None:
            return answer({"detail": f"no run {run_id!r}", "error": "KeyError"}, 404)
        if buckets is None and aggregate is None:
            raise Refused(400, "values: give buckets=, aggregate= or both")
        from ..core.reader import RunReader

        try:
            field = RunReader(backend, run_id, row)[path]
            found = field.fetch_values(
                rank=rank,
                aggregate=aggregate,
                buckets=buckets,
                per_step=per_step,
                include_superseded=include_superseded,
            )
        except KeyError as exc:
            return answer({"detail": str(exc.args[0]), "error": "KeyError"}, 404)
        except TypeError as exc:
            return answer({"detail": str(exc), "error": "TypeError"}, 422)
        except ValueError as exc:
            return answer({"detail": str(exc), "error": "ValueError"}, 400)
        if buckets is not None:
            arrays = {
                name: getattr(found, name)
                for name in ("step", "first", "last", "min", "max", "count")
            }
            body = wire.encode_arrays("buckets", arrays)
        else:
            arrays = {name: getattr(found, name) for name in ("step", "value", "timestamp")}
            body = wire.encode_arrays("series", arrays)
        return Response(body, media_type="application/octet-stream")

    @app.get("/api/set-aside")
    def get_set_aside(request: Request) -> Response:
        record = auth(request)
        rows = backend.set_aside_summary()
        if rows is None:
            return answer(None)
        mine = {r["run_id"] for r in backend.runs(project=record.project)}
        return answer([list(r) for r in rows if r[0] in mine])

    # -- writing --------------------------------------------------------------------------------

    @app.post("/api/runs/{run_id}/apply")
    async def apply(request: Request, run_id: str, segment: str, offset: int) -> Response:
        record = await run_in_threadpool(auth, request, True)
        try:
            wire.check_run_id(run_id)
            position = wire.check_position(segment, offset)
            body = await _read_body(request, MAX_BODY_BYTES)
            batch = await run_in_threadpool(wire.decode_batch, body)
        except wire.TooLarge as exc:
            raise Refused(413, f"run {run_id}: {exc}") from None
        except (wire.BadRequest, ValueError, TypeError) as exc:
            raise Refused(400, f"run {run_id}: refused batch: {exc}") from None

        def work() -> int:
            row = run_row(record, run_id)
            creates = wire.projects_created(batch)
            for meta in creates:
                if meta["project"] != record.project:
                    raise Refused(
                        403,
                        f"token {record.token_id} is for project {record.project!r}; run "
                        f"{run_id} would be created in project {meta['project']!r}: forbidden",
                    )
                parent = meta.get("parent_id")
                if parent is not None:
                    prow = backend.run(parent)
                    if prow is None or prow["project"] != record.project:
                        raise Refused(
                            403,
                            f"run {run_id} forks {parent}, which is not a run of project "
                            f"{record.project!r}",
                        )
            if row is None and not creates:
                applier = backend.applier(run_id)
                if applier.applied(position):
                    return 0
                raise Refused(
                    409,
                    f"run {run_id} is not on the server and this batch does not create it "
                    "(its journal's first record does: replay the journal from its start)",
                )
            return appliers.apply(run_id, batch, position)

        aside = await run_in_threadpool(work)
        return answer({"applied": True, "set_aside": aside})

    @app.post("/api/runs/{run_id}/heartbeat")
    async def heartbeat(request: Request, run_id: str) -> Response:
        record = await run_in_threadpool(auth, request, True)
        ts = _num((await _small_json(request)).get("ts"))
        if ts is None:
            raise Refused(400, "heartbeat: ts is a number")

        def work() -> None:
            if run_row(record, run_id) is not None:
                backend.heartbeat(run_id, ts)

        await run_in_threadpool(work)
        return answer({"ok": True})

    @app.post("/api/runs/{run_id}/crashed")
    async def crashed(request: Request, run_id: str) -> Response:
        record = await run_in_threadpool(auth, request, True)
        now = _num((await _small_json(request)).get("now")) or time.time()

        def work() -> None:
            if run_row(record, run_id) is not None:
                backend.mark_crashed(run_id, now)

        await run_in_threadpool(work)
        return answer({"ok": True})

    @app.post("/api/runs/delete")
    async def delete(request: Request) -> Response:
        record = await run_in_threadpool(auth, request, True)
        ids = _strs((await _small_json(request)).get("run_ids"), "run_ids")

        def work() -> None:
            for rid in ids:
                run_row(record, rid)
            backend.delete_runs(ids)

        await run_in_threadpool(work)
        return answer({"deleted": ids})

    # The web UI (ui_routes.py): its pages at /, its JSON under /api/ui/, same tokens.
    from .ui_routes import mount_ui

    mount_ui(app, backend, lambda request: auth(request).project, token_login=True)
    return app


class Appliers:
    """The backend's appliers of recently written runs, kept between requests.

    Making an applier loads the run's series (a query over all of them); a writer sends
    a batch every flush interval. A kept applier is used only while the store's applied
    offsets of its run are what it last committed: any write by another server process
    (or anything else) advances one, and a fresh applier is made. Batches of one run are
    applied one at a time in this process.
    """

    def __init__(self, store: Store, size: int = 256, stripes: int = 64) -> None:
        self.store = store
        self.size = size
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._locks = [threading.Lock() for _ in range(stripes)]

    def apply(self, run_id: str, batch: list[Any], position: tuple[str, int]) -> int:
        with self._locks[hash(run_id) % len(self._locks)]:
            with self._cache_lock:
                applier = self._cache.pop(run_id, None)
            if applier is not None:
                current = self.store.applied_offsets(run_id)
                if current != getattr(applier, "_applied", None):
                    applier = None
            if applier is None:
                applier = self.store.applier(run_id)
            aside = applier.apply(batch, position)  # on an error the applier is dropped
            with self._cache_lock:
                self._cache[run_id] = applier
                while len(self._cache) > self.size:
                    self._cache.popitem(last=False)
            return aside


# -- request helpers ---------------------------------------------------------------------------

_SMALL_BODY = 1024 * 1024


async def _read_body(request: Any, limit: int) -> bytes:
    """The body, refused (413) once it passes ``limit`` bytes, before it is all read."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise wire.BadRequest("bad Content-Length") from None
        if size > limit:
            raise wire.TooLarge(f"the request body is {size} bytes; the limit is {limit}")
    parts = []
    size = 0
    async for piece in request.stream():
        size += len(piece)
        if size > limit:
            raise wire.TooLarge(f"the request body is over the limit of {limit} bytes")
        parts.append(piece)
    return b"".join(parts)


async def _small_json(request: Any) -> dict[str, Any]:
    try:
        body = await _read_body(request, _SMALL_BODY)
    except wire.TooLarge as exc:
        raise Refused(413, str(exc)) from None
    except wire.BadRequest as exc:
        raise Refused(400, str(exc)) from None
    try:
        doc = json.loads(body) if body else {}
    except ValueError:
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(doc, dict):
        raise Refused(400, "the body is a JSON object")
    return doc


def _strs(value: Any, what: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused(400, f"{what} is a list of str")
    return value


def _num(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(400, f"{value!r} is not a number")
    return float(value)


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Refused(400, f"{value!r} is not a count")
    return value


def _opt_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise Refused(400, f"{value!r} is not a str")
    return value


def serve(location: str | None, host: str, port: int, log_level: str = "info") -> None:
    """Run the server in this process until it is stopped (SIGINT/SIGTERM)."""
    import uvicorn

    app = create_app(location)
    log.info("tracker server on http://%s:%d serving %s", host, port, app.state.store.location)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=True)
