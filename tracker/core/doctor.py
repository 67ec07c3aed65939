"""``tracker doctor``: check a store end to end, and say what is wrong in words.

The store checks itself first (``stores.diagnose``: it exists, is intact, has a schema
this tracker reads); then come the checks every store shares: chunk checksums, a
write that would work, journals readable and applied, runs marked running that no
process holds, records set aside. One check that cannot run fails, named, and the
others go on: a store is most in need of a check when something in it is broken.
"""

from __future__ import annotations

import os
from typing import Any

from .errors import TrackerError, one_line
from .journal import HEADER_LEN, MAGIC, MAGIC_V1, scan_segment
from .replay import journal_backlog
from .stores import Check, Store, diagnose
from .stores.base import chunk_problem, decode_str_values

__all__ = ["Check", "check_store", "journal_backlog"]


def check_store(store: str | os.PathLike[str] | Store | None) -> list[Check]:
    """Check a store end to end; stops after the first check that leaves nothing to check.

    Reads the store read-only and writes nothing to it: the write probe is rolled back,
    and a store it cannot write (a read-only mount) still has its data checked.
    """
    # A database store's root is only its local journal directory: check it by its URL.
    location = (
        store
        if store is None or isinstance(store, str | os.PathLike)
        else getattr(store, "url", store.root)
    )
    checks, st = diagnose(location)
    if st is None:
        return checks
    checks.append(_guarded("chunk checksums", _check_chunks, st))
    try:
        st.check_writable()
    except (TrackerError, OSError) as exc:
        checks.append(Check("writable", False, str(exc)))
    else:
        checks.append(Check("writable", True, "a write transaction and a journal file both work"))
    checks.append(_guarded("journals readable", _check_journals, st))
    if _is_server(st):
        checks.append(_guarded("spool backlog", _check_spool, st))
        checks.append(_guarded("running runs", _check_running_remote, st))
    else:
        checks.append(_guarded("journals applied", _check_backlog, st))
        checks.append(_guarded("running runs", _check_running, st))
    checks.append(_guarded("records set aside", _check_set_aside, st))
    return checks


def _guarded(name: str, check: Any, st: Store) -> Check:
    """Run one check; an error of the check itself fails it, named, and doctor goes on."""
    try:
        return check(st)
    except (TrackerError, OSError) as exc:
        return Check(name, False, f"could not check: {one_line(exc)}")


def _check_chunks(st: Store) -> Check:
    """Every chunk of every series against its size and CRC-32 (NULL: schema 1, unchecked)."""
    verified = unchecked = 0
    bad: list[str] = []
    for rid, path, rank, kind, c in st.all_chunks():
        problem = chunk_problem(kind, c.n, c.steps, c.vals, c.ts, c.crc)
        if problem is None and kind == "str" and decode_str_values(c.vals, c.n) is None:
            problem = "its str values do not decode"
        if problem is not None:
            bad.append(f"run {rid} path {path!r} rank {rank} chunk {c.chunk_id}: {problem}")
        elif c.crc is None:
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


def _is_server(st: Store) -> bool:
    from .stores.http import HTTPStore

    return isinstance(st, HTTPStore)


def _check_spool(st: Any) -> Check:
    """A server's client: runs in this machine's spool whose journal the server lacks
    (a run closed while the server was away, a writer killed during an outage)."""
    from .stores.http import spool_backlog

    behind, unknown = spool_backlog(st)
    where = f"the spool {st.spool}"
    notes = []
    if unknown:
        listed = "; ".join(f"{rid}: {one_line(why)}" for rid, why in list(unknown.items())[:5])
        notes.append(
            f"{len(unknown)} run(s) in {where} cannot be checked with this token: {listed}"
        )
    if behind:
        total = sum(behind.values())
        listed = ", ".join(f"{rid} ({n} bytes)" for rid, n in list(behind.items())[:10])
        more = f", and {len(behind) - 10} more" if len(behind) > 10 else ""
        notes.insert(
            0,
            f"{len(behind)} run(s) in {where} hold {total} journal bytes the server has not "
            f"applied: {listed}{more}; `tracker sync --store {st.url}` sends them",
        )
        return Check("spool backlog", False, "; ".join(notes))
    detail = f"the server holds every journal record in {where}"
    if notes:
        detail += "; " + "; ".join(notes)
    return Check("spool backlog", True, detail)


def _check_running_remote(st: Store) -> Check:
    """Through a server, a run's writer may be on any machine: a running run counts as
    crashed once its heartbeat is stale (as readers judge it), unless a writer in this
    machine's spool holds it."""
    import time

    from .reader import STALE_HEARTBEAT_S

    rows = st.runs(statuses=["running"])
    now = time.time()
    stale = []
    for row in rows:
        rid, beat = row["run_id"], row["heartbeat"]
        if beat is None or now - beat <= STALE_HEARTBEAT_S or st.writer_alive(rid):
            continue
        stale.append(f"{rid} ({now - beat:.0f} s)")
    if stale:
        return Check(
            "running runs",
            False,
            f"{', '.join(stale)} marked running but silent longer than "
            f"{STALE_HEARTBEAT_S:.0f} s (heartbeat age): their writers are gone; they read as "
            "crashed, and `tracker sync --store URL` on the machine that wrote them sends "
            "what its spool holds",
        )
    return Check("running runs", True, f"{len(rows)} running, each with a recent heartbeat")


def _check_running(st: Store) -> Check:
    rows = st.runs(statuses=["running"])
    gone, unknown = [], []
    for row in rows:
        rid = row["run_id"]
        try:
            if not st.writer_alive(rid):
                gone.append(rid)
        except (OSError, TrackerError) as exc:
            unknown.append(f"{rid} ({one_line(exc)})")
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
    rows = st.set_aside_summary()
    if rows is None:
        return Check("records set aside", True, "none (the store predates set-aside records)")
    if not rows:
        return Check("records set aside", True, "none: every journal record was stored")
    total = sum(n for _, n, _ in rows)
    listed = "; ".join(f"run {rid}: {n} ({one_line(error)})" for rid, n, error in rows[:10])
    more = f"; and {len(rows) - 10} more run(s)" if len(rows) > 10 else ""
    return Check(
        "records set aside",
        False,
        f"{total} journal record(s) could not be stored and were set aside (they stay in "
        f"the journal): {listed}{more}",
    )


def _check_journals(st: Store) -> Check:
    bad, corrupt, torn, segments = [], [], [], 0
    for run_id in st.journal_runs():
        live = st.writer_alive(run_id)
        for segment in st.segments(run_id):
            segments += 1
            label = f"{run_id}/{segment.name}"
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
                where = scan.where_skipped()
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
