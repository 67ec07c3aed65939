"""Store maintenance behind ``tracker gc``, ``tracker doctor`` and ``tracker sync``.

Everything here takes a ``Store`` (``check_store`` a path, since opening the store is
one of the things it checks) and returns plain data; the CLI only prints it. One run
that cannot be recovered, synced or checked is reported with its id and the error, and
the others go on: maintenance of a store is most needed when something in it is broken.

>>> from tracker.core.store import Store
>>> st = Store(".tracker", create=False)
>>> plan = find_runs_to_delete(st, statuses=["failed"])
>>> delete_runs(st, [p["id"] for p in plan if p["keep_reason"] is None])
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .apply import recorded_offsets
from .errors import RunNotFoundError, StoreError, TrackerError
from .journal import HEADER_LEN, MAGIC, MAGIC_V1, SegmentScan, read_records, scan_segment
from .reader import _one_line, recover_stale
from .replay import recover_run, replay_run
from .store import (
    DB_NAME,
    SCHEMA_VERSION,
    Store,
    chunk_problem,
    decode_str_values,
    open_readonly,
    resolve_store_path,
    store_error,
)

_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


@dataclass(frozen=True)
class Check:
    """One line of ``tracker doctor``: what was checked, whether it passed, and why.

    >>> Check("schema version", True, "1 (this tracker understands 1)")
    """

    name: str
    ok: bool
    detail: str


def parse_age(text: str) -> float:
    """``"30d"`` -> seconds. Units: s, m, h, d, w."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"age {text!r}: use a number and a unit (s, m, h, d, w), like 30d or 12h")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


# -- finding runs ----------------------------------------------------------------------


def resolve_run_id(store: Store, text: str, project: str | None = None) -> str:
    """Turn what a user typed into a run id: an id, ``latest``, or a unique id prefix."""
    conn = store.connection()
    if text == "latest":
        sql, args = "SELECT run_id FROM runs", []
        if project is not None:
            sql += " WHERE project=?"
            args.append(project)
        row = conn.execute(sql + " ORDER BY created_at DESC LIMIT 1", args).fetchone()
        if row is None:
            where = f" in project {project!r}" if project else ""
            raise RunNotFoundError(f"no runs{where} in {store.root}")
        return row[0]
    if conn.execute("SELECT 1 FROM runs WHERE run_id=?", (text,)).fetchone() is not None:
        return text
    if store.segments(text):
        return text  # journaled but not applied yet; read_run recovers it
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = conn.execute(
        "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' ORDER BY run_id LIMIT 6",
        (escaped + "%",),
    ).fetchall()
    if len(rows) == 1:
        return rows[0][0]
    if len(rows) > 1:
        some = ", ".join(r for (r,) in rows[:5])
        raise RunNotFoundError(f"run id prefix {text!r} is ambiguous: it matches {some}, ...")
    raise RunNotFoundError(f"no run {text!r} in {store.root}")


def run_info(store: Store, run_id: str) -> dict[str, Any]:
    """The store's row for one run, with its fork children."""
    conn = store.connection()
    cols = ("id", "project", "name", "status", "created_at", "ended_at", "host", "pid")
    cols += ("parent_id", "fork_step", "error")
    row = conn.execute(
        "SELECT run_id, project, name, status, created_at, ended_at, host, pid, parent_id, "
        "fork_step, error FROM runs WHERE run_id=?",
        (run_id,),
    ).fetchone()
    if row is None:
        raise RunNotFoundError(f"no run {run_id!r} in {store.root}")
    info = dict(zip(cols, row, strict=True))
    info["children"] = [
        c
        for (c,) in conn.execute(
            "SELECT run_id FROM runs WHERE parent_id=? ORDER BY created_at", (run_id,)
        )
    ]
    return info


# -- gc ----------------------------------------------------------------------------------


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
    conn = store.connection()
    where, args = [], []
    if older_than is not None:
        where.append("created_at < ?")
        args.append((time.time() if now is None else now) - older_than)
    if statuses:
        where.append(f"status IN ({','.join('?' * len(statuses))})")
        args.extend(statuses)
    for tag in tags:
        where.append("run_id IN (SELECT run_id FROM tags WHERE tag=?)")
        args.append(tag)
    if project is not None:
        where.append("project=?")
        args.append(project)
    rows = conn.execute(
        "SELECT run_id, project, name, status, created_at, ended_at, parent_id FROM runs "
        f"WHERE {' AND '.join(where)} ORDER BY created_at",
        args,
    ).fetchall()
    plan = []
    for rid, proj, name, status, created, ended, parent in rows:
        n_series, n_points = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(count), 0) FROM series WHERE run_id=?", (rid,)
        ).fetchone()
        plan.append(
            {
                "id": rid,
                "project": proj,
                "name": name,
                "status": status,
                "created_at": created,
                "ended_at": ended,
                "parent_id": parent,
                "tags": [t for (t,) in conn.execute("SELECT tag FROM tags WHERE run_id=?", (rid,))],
                "series": n_series,
                "points": n_points,
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
            for child in _children(conn, p["id"]):
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
        return f"cannot check for a live writer: {_one_line(exc)}"


def _children(conn: sqlite3.Connection, run_id: str) -> list[str]:
    rows = conn.execute("SELECT run_id FROM runs WHERE parent_id=? ORDER BY run_id", (run_id,))
    return [c for (c,) in rows]


def delete_runs(store: Store, run_ids: Iterable[str]) -> list[str]:
    """Delete runs: their rows (one transaction) and their journal directories.

    Raises ``StoreError`` (deleting nothing) if a run has a fork child outside
    ``run_ids``. A run a live writer holds when the deletion starts is skipped, with
    its fork ancestors; the ids actually deleted are returned.
    """
    ids = list(dict.fromkeys(run_ids))
    if not ids:
        return []
    conn = store.connection()
    wanted = set(ids)
    for rid in ids:
        if conn.execute("SELECT 1 FROM runs WHERE run_id=?", (rid,)).fetchone() is None:
            raise RunNotFoundError(f"no run {rid!r} in {store.root}")
        outside = [c for c in _children(conn, rid) if c not in wanted]
        if outside:
            raise StoreError(
                f"run {rid} is the fork parent of {', '.join(outside)}; "
                "delete its children with it or keep it"
            )
    with contextlib.ExitStack() as locks:
        # Holding each run's lock exclusively keeps new writers out until we are done.
        busy = {rid for rid in ids if not locks.enter_context(store.exclusive_if_idle(rid))}
        parents = {
            rid: parent
            for rid, parent in conn.execute(
                f"SELECT run_id, parent_id FROM runs WHERE run_id IN ({','.join('?' * len(ids))})",
                ids,
            )
        }
        for rid in list(busy):
            parent = parents.get(rid)
            while parent in wanted and parent not in busy:
                busy.add(parent)
                parent = parents.get(parent)
        doomed = [rid for rid in ids if rid not in busy]
        if not doomed:
            return []
        marks = ",".join("?" * len(doomed))
        with store.write() as c:
            c.execute(
                f"DELETE FROM chunks WHERE series_id IN "
                f"(SELECT series_id FROM series WHERE run_id IN ({marks}))",
                doomed,
            )
            for table in ("series", "fields", "tags", "applied", "runs"):
                c.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", doomed)
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


# -- doctor and sync ---------------------------------------------------------------------


def sync_runs(store: Store) -> list[tuple[str, str | None]]:
    """Apply every journal the store has not applied, run by run.

    Returns (run id, None) for each run synced and (run id, error) for each that could
    not be; one failure does not stop the others. What ``replay.sync_store`` does, with
    the failures kept apart: a run whose writer is gone is recovered (and recorded as
    crashed if it never closed), one with a live writer has its backlog replayed.
    """
    done: list[tuple[str, str | None]] = []
    try:
        directories = sorted(store.journal_root.iterdir()) if store.journal_root.is_dir() else []
    except OSError as exc:
        raise store_error("read", store.journal_root, store.root, exc) from exc
    for directory in directories:
        run_id = directory.name
        try:
            if not directory.is_dir() or not store.segments(run_id):
                continue
            with store.exclusive_if_idle(run_id) as idle:
                pass
            if idle:
                recover_run(store, run_id)
            else:
                replay_run(store, run_id)
        except Exception as exc:  # noqa: BLE001 - report this run, go on with the others
            done.append((run_id, _one_line(exc)))
        else:
            done.append((run_id, None))
    return done


def journal_backlog(store: Store) -> dict[str, int]:
    """Bytes of intact journal records the store has not applied, per run (0s left out).

    Counts every intact record after the applied offset, also those after a damaged
    region (replay resyncs past it and applies them). Runs held by a live writer are
    left out: their writer applies as it goes.
    """
    behind: dict[str, int] = {}
    if not store.journal_root.is_dir():
        return behind
    for directory in sorted(store.journal_root.iterdir()):
        if not directory.is_dir() or store.writer_alive(directory.name):
            continue
        offsets = recorded_offsets(store, directory.name)
        total = 0
        for segment in store.segments(directory.name):
            scan = SegmentScan()
            for _end, _ops in read_records(segment, offsets.get(segment.name, 0), scan):
                pass
            total += scan.intact_bytes
        if total:
            behind[directory.name] = total
    return behind


def readable_end(segment: Path) -> int:
    """Offset just past the last intact record of a journal segment (past any damaged
    region that intact records follow)."""
    return scan_segment(segment).end


def check_store(store: str | os.PathLike[str] | Store | None) -> list[Check]:
    """Check a store end to end; stops after the first check that leaves nothing to check.

    Reads the store read-only and writes nothing to it: the write probe is rolled back,
    and a store it cannot write (a read-only mount) still has its data checked.
    """
    root = store.root if isinstance(store, Store) else resolve_store_path(store)
    checks: list[Check] = []
    db_path = root / DB_NAME
    try:
        found_db = db_path.is_file()
        found_root = root.exists()
    except OSError as exc:
        checks.append(Check("store exists", False, f"{root}: {exc}"))
        return checks
    if not found_db:
        what = "no directory there" if not found_root else f"no {DB_NAME} in it"
        checks.append(Check("store exists", False, f"{root}: {what}"))
        return checks
    checks.append(Check("store exists", True, str(root)))

    try:
        conn, _immutable = open_readonly(db_path)
        try:
            result = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'"
            ).fetchone()
            row = has_meta and conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        checks.append(Check("database integrity", False, f"{db_path}: {exc}"))
        return checks
    if result != ["ok"]:
        checks.append(Check("database integrity", False, "; ".join(result[:3])))
        return checks
    checks.append(Check("database integrity", True, "PRAGMA integrity_check: ok"))
    found = None if not row else row[0]
    older = found is not None and found.isdigit() and 0 < int(found) < SCHEMA_VERSION
    if older:
        # Readable as it is; the first write (a run, `tracker sync`) upgrades it.
        detail = (
            f"{found}, older than this tracker's {SCHEMA_VERSION}: read as it is, upgraded "
            "by the next write (a run, or `tracker sync`)"
        )
    else:
        detail = f"{found} (this tracker understands {SCHEMA_VERSION})"
    checks.append(Check("schema version", found == str(SCHEMA_VERSION) or older, detail))
    if found != str(SCHEMA_VERSION) and not older:
        return checks

    try:
        st = Store(root, create=False, readonly=True)
    except TrackerError as exc:
        checks.append(Check("database readable", False, str(exc)))
        return checks
    checks.append(_guarded("chunk checksums", _check_chunks, st))
    try:
        _check_writable(st)
    except (TrackerError, OSError, sqlite3.Error) as exc:
        checks.append(Check("writable", False, str(exc)))
    else:
        checks.append(Check("writable", True, "a write transaction and a journal file both work"))

    checks.append(_guarded("journals readable", _check_journals, st))
    checks.append(_guarded("journals applied", _check_backlog, st))
    checks.append(_guarded("running runs", _check_running, st))
    checks.append(_guarded("records set aside", _check_set_aside, st))
    return checks


def _guarded(name: str, check: Any, st: Store) -> Check:
    """Run one check; an error of the check itself fails it, named, and doctor goes on."""
    try:
        return check(st)
    except (TrackerError, OSError, sqlite3.Error) as exc:
        return Check(name, False, f"could not check: {_one_line(exc)}")


def _check_chunks(st: Store) -> Check:
    """Every chunk of every series against its size and CRC-32 (NULL: schema 1, unchecked)."""
    crc = "c.crc" if st.has_crc else "NULL"
    rows = st.connection().execute(
        f"SELECT c.rowid, s.run_id, s.path, s.rank, s.kind, c.n, c.steps, c.vals, c.ts, {crc} "
        "FROM chunks c JOIN series s USING(series_id) ORDER BY s.run_id, s.path, s.rank, c.rowid"
    )
    verified = unchecked = 0
    bad: list[str] = []
    for chunk, rid, path, rank, kind, n, steps, vals, ts, crc_value in rows:
        problem = chunk_problem(kind, n, steps, vals, ts, crc_value)
        if problem is None and kind == "str" and decode_str_values(vals, n) is None:
            problem = "its str values do not decode"
        if problem is not None:
            bad.append(f"run {rid} path {path!r} rank {rank} chunk {chunk}: {problem}")
        elif crc_value is None:
            unchecked += 1
        else:
            verified += 1
    if bad:
        shown = "; ".join(bad[:10]) + (f"; and {len(bad) - 10} more" if len(bad) > 10 else "")
        return Check(
            "chunk checksums",
            False,
            f"{len(bad)} damaged chunk(s), their points cannot be read: {shown}",
        )
    detail = f"{verified} chunk(s) verified"
    if unchecked:
        detail += f"; {unchecked} written before checksums (schema 1), sizes checked only"
    return Check("chunk checksums", True, detail)


def _check_backlog(st: Store) -> Check:
    backlog = journal_backlog(st)
    if backlog:
        listed = ", ".join(f"{rid} ({n} bytes)" for rid, n in backlog.items())
        return Check(
            "journals applied",
            False,
            f"{len(backlog)} run(s) have journal records the store lacks: {listed}; "
            "run `tracker sync`",
        )
    return Check("journals applied", True, "the store holds every journal record")


def _check_running(st: Store) -> Check:
    rows = st.connection().execute("SELECT run_id FROM runs WHERE status='running'").fetchall()
    gone, unknown = [], []
    for (rid,) in rows:
        try:
            if not st.writer_alive(rid):
                gone.append(rid)
        except (OSError, TrackerError) as exc:
            unknown.append(f"{rid} ({_one_line(exc)})")
    live = len(rows) - len(gone) - len(unknown)
    problems = []
    if gone:
        problems.append(
            f"{', '.join(gone)} marked running but no writer holds them: they crashed; "
            "`tracker sync` records that"
        )
    if unknown:
        problems.append(f"cannot tell whether a writer holds {', '.join(unknown)}")
    if problems:
        return Check("running runs", False, "; ".join(problems))
    return Check("running runs", True, f"{live} running, each with a live writer")


def _check_set_aside(st: Store) -> Check:
    """Journal records the store could not hold (apply set them aside and went on)."""
    if not st.has_set_aside:
        return Check("records set aside", True, "none (the store predates set-aside records)")
    sql = "SELECT run_id, COUNT(*), MIN(error) FROM set_aside GROUP BY run_id ORDER BY run_id"
    rows = st.connection().execute(sql).fetchall()
    if not rows:
        return Check("records set aside", True, "none: every journal record was stored")
    total = sum(n for _, n, _ in rows)
    listed = "; ".join(f"run {rid}: {n} ({_one_line(error)})" for rid, n, error in rows[:10])
    more = f"; and {len(rows) - 10} more run(s)" if len(rows) > 10 else ""
    return Check(
        "records set aside",
        False,
        f"{total} journal record(s) could not be stored and were set aside (they stay in "
        f"the journal): {listed}{more}",
    )


def _check_writable(st: Store) -> None:
    """Prove a write transaction and a journal file would work, leaving nothing behind.

    A raw connection, not ``Store(root)``: opening that may create or upgrade the
    schema, and doctor must not change the store it examines.
    """
    try:
        conn = sqlite3.connect(st.db_path, timeout=10, isolation_level=None)
    except sqlite3.Error as exc:
        raise store_error("write to", st.db_path, st.root, exc) from exc
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('doctor', 'probe')")
        conn.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise store_error("write to", st.db_path, st.root, exc) from exc
    finally:
        conn.close()
    where = st.journal_root if st.journal_root.is_dir() else st.root
    try:
        fd, name = tempfile.mkstemp(prefix=".doctor-", dir=where)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        raise store_error("create a journal file in", where, st.root, exc) from exc


def _check_journals(st: Store) -> Check:
    bad, corrupt, torn, segments = [], [], [], 0
    if st.journal_root.is_dir():
        for directory in sorted(st.journal_root.iterdir()):
            if not directory.is_dir():
                continue
            live = st.writer_alive(directory.name)
            for segment in st.segments(directory.name):
                segments += 1
                label = f"{directory.name}/{segment.name}"
                try:
                    with open(segment, "rb") as f:
                        head = f.read(HEADER_LEN)
                    scan = scan_segment(segment)
                except OSError as exc:
                    bad.append(f"{segment}: {exc}")
                    continue
                if head != MAGIC[: len(head)] and head != MAGIC_V1[: len(head)]:
                    bad.append(f"{segment}: not a tracker journal")
                    continue
                if scan.corrupt:
                    # Intact records after damaged bytes: the records in between are lost
                    # (replay skips them and applies the rest). Not what a crash leaves.
                    where = ", ".join(f"{n} bytes at offset {off}" for off, n in scan.skipped[:5])
                    corrupt.append(f"{label}: {scan.skipped_bytes} bytes skipped ({where})")
                if scan.torn_tail is not None and not live:
                    torn.append(label)
    if bad or corrupt:
        problems = list(bad)
        if corrupt:
            problems.append(
                "corrupt records in the middle of a segment, their points lost: "
                + "; ".join(corrupt)
            )
        return Check("journals readable", False, "; ".join(problems))
    detail = f"{segments} segment(s) read cleanly"
    if torn:
        # What a crash mid-write leaves: everything before the torn record is intact.
        detail += f"; {len(torn)} end in a torn record, ignored: {', '.join(torn[:5])}"
    return Check("journals readable", True, detail)
