"""Finding runs from what a user typed: ids, unique id prefixes, ``latest``, names."""

from __future__ import annotations

from typing import Any

from .errors import RunNotFoundError
from .stores import Store

# What ``run_info`` gives of a run's row, besides its id and its fork children.
_INFO = (
    "project",
    "name",
    "status",
    "created_at",
    "ended_at",
    "host",
    "pid",
    "parent_id",
    "fork_step",
    "error",
)


def resolve_run_id(store: Store, text: str, project: str | None = None) -> str:
    """Turn what a user typed into a run id: ``latest``, an id, a unique id prefix, or a
    run's name (``name`` or ``project/name``) that only one run has, in that order."""
    if text == "latest":
        rows = store.runs(project=project, order="newest", limit=1)
        if not rows:
            where = f" in project {project!r}" if project else ""
            raise RunNotFoundError(f"no runs{where} in {store.root}")
        return rows[0]["run_id"]
    if store.run(text) is not None:
        return text
    if store.segments(text):
        return text  # journaled but not applied yet; read_run recovers it
    rows = store.runs(id_prefix=text, order="id", limit=6)
    if len(rows) == 1:
        return rows[0]["run_id"]
    named = _named(store, text, project)
    if len(named) == 1:
        return named[0]["run_id"]
    if len(named) > 1:
        some = ", ".join(f"{r['run_id']} ({r['project']}/{r['name']})" for r in named[:10])
        more = f" and {len(named) - 10} more" if len(named) > 10 else ""
        raise RunNotFoundError(
            f"run name {text!r} is ambiguous: {len(named)} runs have it: {some}{more}; "
            "give one of these ids"
        )
    if len(rows) > 1:
        some = ", ".join(r["run_id"] for r in rows[:5])
        raise RunNotFoundError(f"run id prefix {text!r} is ambiguous: it matches {some}, ...")
    where = f" in project {project!r}" if project else ""
    raise RunNotFoundError(
        f"no run {text!r}{where} in {store.root}: not a run id, id prefix or run name"
    )


def _named(store: Store, text: str, project: str | None) -> list[dict[str, Any]]:
    """The runs called ``text``, or ``name`` in project ``project`` when it reads
    ``project/name`` (a name may itself hold a "/": both readings count)."""
    found = [r for r in store.runs(project=project, order="newest") if r["name"] == text]
    head, sep, tail = text.partition("/")
    if sep and tail and (project is None or project == head):
        found += [r for r in store.runs(project=head, order="newest") if r["name"] == tail]
    unique = {r["run_id"]: r for r in found}
    return list(unique.values())


def run_info(store: Store, run_id: str) -> dict[str, Any]:
    """The store's row for one run (its id under "id"), with its fork children."""
    row = store.run(run_id)
    if row is None:
        raise RunNotFoundError(f"no run {run_id!r} in {store.root}")
    info = {"id": run_id, **{key: row[key] for key in _INFO}}
    info["children"] = [c["run_id"] for c in store.runs(parent_id=run_id, order="oldest")]
    return info
