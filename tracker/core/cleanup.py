"""Deleting runs: what ``tracker gc`` would delete, and deleting it.

A run is never deleted while a live writer holds it, nor while it has a fork child that
is not deleted with it (the child reads its parent's points).

Example::

    from tracker.core.stores import open_store
    st = open_store(".tracker", create=False)
    plan = find_runs_to_delete(st, statuses=["failed"])
    delete_runs(st, [p["id"] for p in plan if p["keep_reason"] is None])
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Iterable
from typing import Any

from .errors import RunNotFoundError, StoreError, TrackerError, one_line
from .replay import recover_stale
from .stores import Store

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_age(text: str) -> float:
    """``"30d"`` -> seconds. Units: s, m, h, d, w."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"age {text!r}: use a number and a unit (s, m, h, d, w), like 30d or 12h")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


def find_runs_to_delete(
    store: Store,
    *,
    older_than: float | None = None,
    statuses: Iterable[str] | None = None,
    tags: Iterable[str] | None = None,
    project: str | None = None,
    now: float | None = None,
) -> list[dict[str, Any]]:
    """Runs matching every filter given, oldest first, each with a ``keep_reason``.

    ``older_than`` is in seconds and compares with the run's creation time. A run is
    kept (``keep_reason`` says why) while a live writer holds it, or while it has a
    fork child that is not deleted with it: the child reads its parent's points.
    Runs that read as running with no writer left are first recorded as crashed, as
    ``list_runs`` does (a run that cannot be is warned about and left as it is). A run
    whose writer cannot be checked is kept. Every filter left out matches everything;
    passing none is refused, so that a slip cannot empty a store.
    """
    statuses = [s for s in (statuses or ()) if s]
    tags = [t for t in (tags or ()) if t]
    if older_than is None and not statuses and not tags and project is None:
        raise ValueError("give at least one filter: older_than, statuses, tags or project")
    recover_stale(store, project)
    rows = store.runs(
        created_before=None
        if older_than is None
        else (time.time() if now is None else now) - older_than,
        statuses=statuses,
        tags=tags,
        project=project,
        order="oldest",
    )
    plan = []
    for row in rows:
        rid = row["run_id"]
        series = store.series_list(rid)
        plan.append(
            {
                "id": rid,
                "project": row["project"],
                "name": row["name"],
                "status": row["status"],
                "created_at": row["created_at"],
                "ended_at": row["ended_at"],
                "parent_id": row["parent_id"],
                "tags": store.tags(rid),
                "series": len(series),
                "points": sum(s.points for s in series),
                "journal": str(store.journal_dir(rid)),
                "keep_reason": _live_writer_reason(store, rid),
            }
        )
    by_id = {p["id"]: p for p in plan}
    # A parent goes only with all its children; keeping one run can keep its ancestors.
    changed = True
    while changed:
        changed = False
        for p in plan:
            if p["keep_reason"] is not None:
                continue
            for child in _children(store, p["id"]):
                if child not in by_id:
                    p["keep_reason"] = f"fork parent of {child}, which is not being deleted"
                elif by_id[child]["keep_reason"] is not None:
                    p["keep_reason"] = f"fork parent of {child}, which is kept"
                else:
                    continue
                changed = True
                break
    return plan


def _live_writer_reason(store: Store, run_id: str) -> str | None:
    try:
        return "a live writer holds it" if store.writer_alive(run_id) else None
    except (OSError, TrackerError) as exc:
        # Not knowing is not "no writer": deleting a live run would lose its points.
        return f"cannot check for a live writer: {one_line(exc)}"


def _children(store: Store, run_id: str) -> list[str]:
    return [row["run_id"] for row in store.runs(parent_id=run_id, order="id")]


def delete_runs(store: Store, run_ids: Iterable[str]) -> list[str]:
    """Delete runs: their rows (one transaction) and their journal directories.

    Raises ``StoreError`` (deleting nothing) if a run has a fork child outside
    ``run_ids``. A run a live writer holds when the deletion starts is skipped, with
    its fork ancestors; the ids actually deleted are returned.
    """
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        return []
    wanted = set(ids)
    parents = {}
    for rid in ids:
        row = store.run(rid)
        if row is None:
            raise RunNotFoundError(f"no run {rid!r} in {store.root}")
        parents[rid] = row["parent_id"]
        outside = [c for c in _children(store, rid) if c not in wanted]
        if outside:
            raise StoreError(
                f"run {rid} is the fork parent of {', '.join(outside)}; "
                "delete its children with it or keep it"
            )
    with contextlib.ExitStack() as locks:
        # Holding each run's lock exclusively keeps new writers out until we are done.
        busy = {rid for rid in ids if not locks.enter_context(store.exclusive_if_idle(rid))}
        for rid in list(busy):
            parent = parents.get(rid)
            while parent in wanted and parent not in busy:
                busy.add(parent)
                parent = parents.get(parent)
        doomed = [rid for rid in ids if rid not in busy]
        if not doomed:
            return []
        store.delete_runs(doomed)
        failed = []
        for rid in doomed:
            directory = store.journal_dir(rid)
            try:
                shutil.rmtree(directory)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append(f"{directory}: {exc}")
        if failed:
            # A journal left behind would bring its run back on the next read or sync.
            raise StoreError(
                "deleted the runs' rows but could not remove their journals "
                f"(remove them by hand): {'; '.join(failed)}"
            )
    return doomed
