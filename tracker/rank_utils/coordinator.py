"""One run per job: the writer rank opens the run, the other ranks ship to it.

Rank 0 opens (or resumes) the run in the store as a single process would. Every other
rank gets an ordinary ``Run`` whose writer is a ``Shipper``: it batches the rank's
operations (as columns, like the journal) and sends them every flush interval.
Non-writer ranks never open the store.

How the batches travel (``TRACKER_RANK_TRANSPORT``):

- ``sockets`` (the default). Rank 0 starts an ingest process (``ingest.py``) that
  takes, journals and applies the other ranks' batches outside its training process,
  and publishes its address in the job's c10d store (``IngestSide``). Ranks on rank
  0's node connect to it over a Unix socket; on every other node, the leader
  (``leader.py``: local rank 0, or the node's first rank where the launcher names no
  node) forwards its node's frames over one TCP connection. The store serves the
  rendezvous only (``_SocketLink``); frames are ``wire.py``'s.
- ``gloo``: the former private gloo group on the job's store, with rank 0's
  ``Gatherer`` thread queueing every message into its own writer (a full mesh: kept
  for comparison).

Layout of rank data in the run: what rank r logs under key k is the series (k, rank r),
read with ``fetch_values(rank=r)`` or combined with ``aggregate=``; rank 0's own series
is the plain k, so single- and multi-process scripts read the same way. Single values
assigned on rank r are stored under ``ranks/<r>/<path>``; where each rank ran is under
``ranks/<r>/{node_rank,local_rank,host,pid}``; a rank that fails leaves
``ranks/<r>/status`` and ``ranks/<r>/traceback`` and the run ends as failed.

The run id every rank agrees on comes, in order, from ``run_id=``; a hash of the
launcher's job id (stable across elastic restarts of that job, so a restart continues
the run); or rank 0's choice published in the job's c10d store (or Horovod broadcast).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import socket
import sys
import threading
import time
import warnings
from typing import Any

from ..core import events, ops
from ..core.batch import columnize
from ..core.journal import decode
from ..core.run import Run
from ..core.session import check_run_id, new_run_id, open_run
from . import transport, wire
from .ingest import IngestProcess
from .launchers import RankInfo
from .leader import NodeLeader

log = logging.getLogger("tracker")

DEFAULT_CLOSE_TIMEOUT_S = 30.0
DEFAULT_CONNECT_TIMEOUT_S = 600.0


def close_timeout() -> float:
    """How long closing waits for other ranks (TRACKER_RANK_CLOSE_TIMEOUT, seconds)."""
    return float(os.environ.get("TRACKER_RANK_CLOSE_TIMEOUT", DEFAULT_CLOSE_TIMEOUT_S))


def send_timeout() -> float:
    """How long one send of a rank may wait on a leader or ingest that does not read:
    as long as closing waits for a rank (an ingest may be busy that long)."""
    return max(1.0, close_timeout())


def derived_run_id(job_id: str, project: str, name: str | None) -> str:
    digest = hashlib.sha256(f"{job_id}\0{project}\0{name or ''}".encode()).hexdigest()
    return "j" + digest[:15]


def _usable_job_id(info: RankInfo) -> str | None:
    # torchrun's static rendezvous reports the literal run id "none": not an id at all.
    if info.job_id and info.job_id.rpartition(":")[2] not in ("", "none", "None"):
        return info.job_id
    return None


_OPENINGS: dict[str, int] = {}  # run id -> links opened for it by this process


class _Link:
    """Finds the job's store and builds the gloo link, on the thread that will use it."""

    def __init__(self, info: RankInfo, run_id: str, store: Any | None) -> None:
        self.info = info
        self.run_id = run_id
        self.store = store
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        # A job may open one run several times (fit, then fit resumed from a checkpoint
        # of that run): each opening needs keys of its own in the job's store, or a rank
        # would meet the last opening's addresses. Every rank opens in the same order.
        opening = _OPENINGS.get(run_id, 0)
        _OPENINGS[run_id] = opening + 1
        self.prefix = f"tracker/{run_id}/{restart}/{opening}/link/"

    def release(self) -> None:
        self.store = None

    def can_connect(self) -> bool:
        """Whether a store is (or is now) there to connect through."""
        if self.store is not None:
            return True
        try:
            return transport.job_store(self.info.world_size, 5.0) is not None
        except Exception:  # noqa: BLE001 - unreachable is the answer
            return False

    def wait_for_store(self, stop: threading.Event) -> Any | None:
        """The job's store, once there is one (None if ``stop`` comes first)."""
        store = self.store
        deadline = time.monotonic() + DEFAULT_CONNECT_TIMEOUT_S
        while store is None:
            # init_run came before init_process_group: wait for the script to start it.
            store = transport.job_store(self.info.world_size, DEFAULT_CONNECT_TIMEOUT_S)
            if store is None:
                if stop.wait(0.2) or time.monotonic() > deadline:
                    return None
        self.store = store
        return store

    def wait_for_key(self, key: str, stop: threading.Event) -> str | None:
        """The value of ``key`` (under this link's prefix) once it is set."""
        store = self.store
        deadline = time.monotonic() + DEFAULT_CONNECT_TIMEOUT_S
        full = self.prefix + key
        assert store is not None  # wait_for_store came first
        while not store.check([full]):
            if stop.wait(0.05) or time.monotonic() > deadline:
                return None
        return bytes(store.get(full)).decode()

    def connect(self, stop: threading.Event) -> Any | None:
        store = self.wait_for_store(stop)
        if store is None:
            return None
        return transport.GlooLink(
            store, self.prefix, self.info.rank, self.info.world_size, DEFAULT_CONNECT_TIMEOUT_S
        )


def transport_kind() -> str:
    """How ranks reach the writer (TRACKER_RANK_TRANSPORT): "sockets" (the default: node
    leaders and an ingest process) or "gloo" (a private gloo group, rank 0 ingesting)."""
    kind = os.environ.get("TRACKER_RANK_TRANSPORT", "sockets").strip().lower()
    return kind if kind in ("sockets", "gloo") else "sockets"


class _Sender:
    """A non-writer rank's connection to its node's leader (or to the ingest)."""

    def __init__(
        self,
        sock: Any,
        info: RankInfo,
        node: str,
        ingest: dict[str, Any],
        leader: NodeLeader | None,
    ) -> None:
        self.sock = sock
        self.info = info
        self.node = node
        self.ingest = ingest
        self.leader = leader
        # This opening of the rank's run: the ingest waits for the goodbye of each.
        self.sender = os.urandom(8).hex()
        self._seq = 0  # the next frame's number: the ingest counts the ones that never came
        self._direct = False  # already fell back to the ingest: no second chance
        self.sock.settimeout(send_timeout())
        self.sock.sendall(self._hello())

    def _hello(self) -> bytes:
        return wire.hello(self.info.rank, self.node, self.ingest["token"], self.sender)

    def send(self, kind: int, payload: bytes) -> None:
        """Send one frame; raises OSError once neither the leader nor the ingest takes
        it within ``send_timeout()`` (the rank then stops shipping)."""
        numbered = wire.SEQ.pack(int(self.sender, 16), self._seq) + payload
        self._seq += 1
        tag = wire.BYE_N if kind == transport.BYE else wire.DATA_N
        data = wire.frame(tag, self.info.rank, numbered)
        try:
            self.sock.sendall(data)
        except OSError:
            # The leader is gone or stuck: this rank goes to the ingest directly (still
            # O(1)), once. A frame cut short there is dropped whole by its reader.
            self.sock.close()
            if self._direct:
                raise
            self._direct = True
            timeout = send_timeout()
            self.sock = wire.connect_tcp(wire.hosts_for(self.ingest), self.ingest["port"], timeout)
            self.sock.settimeout(timeout)
            self.sock.sendall(self._hello() + data)
        if kind == transport.BYE:
            # Shut down, not just closed: a forked child (a DataLoader worker) holding
            # the socket must not keep the leader waiting for this end.
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)
            self.sock.close()
            if self.leader is not None:
                self.leader.finish(close_timeout())


class _SocketLink(_Link):
    """Rendezvous through the job's store, then plain sockets: to the ingest on the
    writer's node, to the node's leader elsewhere (started here on the leader rank)."""

    def connect(self, stop: threading.Event) -> _Sender | None:
        store = self.wait_for_store(stop)
        if store is None:
            return None
        raw = self.wait_for_key("ingest", stop)
        if raw is None:
            return None
        ingest = json.loads(raw)
        info = self.info
        node = wire.node_key(info.node_rank)
        leader = None
        if node == ingest["node"]:
            sock = self._local_or_direct(ingest["local"], ingest)
        elif self._leads(store, node):
            upstream = wire.connect_tcp(wire.hosts_for(ingest), ingest["port"])
            leader = NodeLeader(upstream, ingest["token"], send_timeout(), info.local_world_size)
            store.set(self.prefix + f"node/{node}", leader.name)
            sock = wire.connect_local(leader.name)
        else:
            name = self.wait_for_key(f"node/{node}", stop)
            if name is None:
                return None
            sock = self._local_or_direct(name, ingest)
        self.release()  # rendezvous done: the job's store is not held any longer
        return _Sender(sock, info, node, ingest, leader)

    def _leads(self, store: Any, node: str) -> bool:
        if self.info.node_rank is not None:
            return self.info.local_rank == 0
        # No node index from the launcher: the node's first rank to get here leads.
        mine = str(self.info.rank)
        return bytes(store.compare_set(self.prefix + f"claim/{node}", "", mine)).decode() == mine

    @staticmethod
    def _local_or_direct(name: str, ingest: dict[str, Any]) -> Any:
        try:
            return wire.connect_local(name)
        except OSError:
            return wire.connect_tcp(wire.hosts_for(ingest), ingest["port"])


def _store_now(info: RankInfo) -> Any | None:
    if transport.horovod_initialized():
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            # A collective: every rank calls init_run at the same point, so it lines up.
            return transport.horovod_store(info.rank, info.world_size, DEFAULT_CONNECT_TIMEOUT_S)
    return transport.job_store(info.world_size, DEFAULT_CONNECT_TIMEOUT_S)


def _agree_on_run_id(
    info: RankInfo, run_id: str | None, project: str, name: str | None, store: Any | None
) -> str:
    if run_id is not None:
        return check_run_id(run_id)
    job_id = _usable_job_id(info)
    if job_id is not None:
        return derived_run_id(job_id, project, name)
    if store is not None:
        key = f"tracker/run-id/{project}/{name or ''}"
        if info.rank == 0:
            # compare_set keeps an id an earlier attempt of this job already chose.
            return store.compare_set(key, "", new_run_id()).decode()
        return store.get(key).decode()
    raise RuntimeError(
        f"tracker.init_run on rank {info.rank} of {info.world_size}: the ranks cannot agree "
        "on a run id: the launcher gives no job id and no torch.distributed store is "
        "reachable yet. Call init_run after init_process_group (or hvd.init()), or pass "
        "the same run_id= on every rank."
    )


def _where(info: RankInfo) -> dict[str, Any]:
    """Where this rank runs; stored under ranks/<rank>/ (a non-writer's Shipper prefixes)."""
    fields: dict[str, Any] = {
        "local_rank": info.local_rank,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    if info.node_rank is not None:
        fields["node_rank"] = info.node_rank
    return fields


# -- the writer rank ----------------------------------------------------------------------


class WriterRun(Run):
    """Rank 0's run: a normal run plus the gatherer of the other ranks' operations."""

    _gatherer: Gatherer | IngestSide

    def close(self, status: str = "finished", *, error: str | None = None) -> None:
        if self._closed:
            return
        gatherer = getattr(self, "_gatherer", None)
        if gatherer is not None:
            gatherer.finish(close_timeout())
            adopt = getattr(self._writer, "adopt_segments", None)
            if isinstance(gatherer, IngestSide) and adopt is not None:
                # What the ingest journaled but could not apply (a server away, an
                # ingest that ran out of time) is rank 0's writer's to catch up now.
                adopt()
            if gatherer.failed and status != "failed":
                failed = ", ".join(str(r) for r in sorted(gatherer.failed))
                error = error or (
                    f"rank(s) {failed} failed; see ranks/<rank>/status and ranks/<rank>/traceback"
                )
                status = "failed"
        super().close(status, error=error)


class Gatherer:
    """Rank 0's thread: receives every other rank's batches and queues them into the run."""

    def __init__(self, run: Run, link: _Link) -> None:
        self.run = run
        self.link = link
        self.failed: dict[int, str] = {}
        self._remaining = set(range(1, link.info.world_size))
        self._done = threading.Event()
        self._stop = threading.Event()
        self._connected = False
        self._thread = threading.Thread(target=self._loop, name="tracker-gatherer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        try:
            gloo = self.link.connect(self._stop)
            if gloo is None:
                warnings.warn(
                    "tracker: rank 0 never reached the other ranks (no torch.distributed "
                    "store appeared); their metrics are not in the run",
                    RuntimeWarning,
                    stacklevel=1,
                )
                return
            self._connected = True
            while self._remaining:
                source, kind, payload = gloo.receive()
                ended = receive(self.run, source, payload)
                if ended is not None and ended[0] == "failed":
                    self.failed[source] = ended[1] or ""
                if kind == transport.BYE:
                    self._remaining.discard(source)
        except Exception as exc:  # noqa: BLE001 - a lost rank must not take the run down
            if not self._stop.is_set():
                missing = ", ".join(str(r) for r in sorted(self._remaining))
                warnings.warn(
                    f"tracker: lost contact with rank(s) {missing}: {exc}; what they sent "
                    "before is in the run",
                    RuntimeWarning,
                    stacklevel=1,
                )
        finally:
            # Tear the group and store down here, in a live thread, rather than leave
            # their C++ threads to interpreter shutdown (which can abort the process).
            gloo = None
            self.link.release()
            self._done.set()

    def finish(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for every rank's goodbye, then stop listening."""
        if not self._connected and not self.link.can_connect():
            self._stop.set()  # no store and none coming: no rank can reach us
        if not self._done.wait(timeout):
            missing = ", ".join(str(r) for r in sorted(self._remaining))
            warnings.warn(
                f"tracker: rank(s) {missing} did not finish within {timeout:g}s of rank 0 "
                "closing the run (TRACKER_RANK_CLOSE_TIMEOUT); closing without them",
                RuntimeWarning,
                stacklevel=3,
            )
        self._stop.set()


class IngestSide:
    """Rank 0's side of the socket transport: its ingest process, and the rendezvous.

    The ingest takes, journals and applies every other rank's operations in a process
    of its own; this thread only publishes its address in the job's store. Rank 0's
    training process sends it one line a second (whether rank 0 logged: silent ranks)
    and queues the events it reports into its own writer.
    """

    def __init__(self, run: Run, link: _Link, store: Any, apply: bool) -> None:
        self.run = run
        self.link = link
        self.failed: dict[int, str] = {}
        self.result: dict[str, Any] | None = None  # the ingest's report, once it ended
        self._stop = threading.Event()
        self._published = False
        self._links = [link]
        self._threads: list[threading.Thread] = []
        self.proc: IngestProcess | None = None
        try:
            self.proc = self._start(store, apply)
        except OSError as exc:
            warnings.warn(
                f"tracker: rank 0 could not start its ingest process ({exc}); the other "
                "ranks' metrics are not in the run",
                RuntimeWarning,
                stacklevel=4,
            )
            return
        self._rendezvous(link)

    def _rendezvous(self, link: _Link) -> None:
        thread = threading.Thread(
            target=self._publish, args=(link,), name="tracker-rendezvous", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def reopened(self, link: _Link) -> bool:
        """The run was opened again in this process (``link`` is that opening's): the
        same ingest serves it, its address published for the new opening's ranks too.
        False when this ingest cannot (it is gone): the caller starts another."""
        if self.proc is None or self.proc.proc.poll() is not None or self._stop.is_set():
            return False
        self._links.append(link)
        self._rendezvous(link)
        return True

    def _start(self, store: Any, apply: bool) -> IngestProcess:
        run, link = self.run, self.link
        return IngestProcess.start(
            store=None if store is None else os.fspath(store),
            run_id=run.id,
            world_size=link.info.world_size,
            node=wire.node_key(link.info.node_rank),
            apply=apply,
            # The ingest shares rank 0's writer lock: while either lives, the run is
            # not taken for crashed; the ingest outlives a killed rank 0 with it.
            lock_fd=getattr(run._writer, "_lock_fd", -1),
            stats=os.environ.get("TRACKER_INGEST_STATS", "") == "1",  # for benchmarks
            on_event=self._event,
            beat=self._beat,
            rules=self._rules,
            on_active=self._active,
        )

    def _release(self) -> None:
        for link in self._links:
            link.release()

    def _active(self) -> None:
        watcher = getattr(self.run._writer, "watcher", None)
        if watcher is not None:
            watcher.note_activity(time.monotonic())

    def _event(self, event: dict[str, Any]) -> None:
        if not self.run._closed:
            self.run._ingest(events.queued_event(event))

    def _beat(self) -> list[Any]:
        run = self.run
        # The next explicit step and the implicit counter (its repr shows the next value
        # without taking it): either moves when rank 0 logs.
        return [run._step, repr(run._counter)]

    def _rules(self) -> Any:
        watcher = getattr(self.run._writer, "watcher", None)
        return None if watcher is None else watcher.rules

    def _publish(self, link: _Link) -> None:
        assert self.proc is not None  # started only once the process is
        try:
            address = self.proc.wait_ready(120.0)
            if address is None:
                warnings.warn(
                    "tracker: rank 0's ingest process did not start; the other ranks' "
                    "metrics are not in the run",
                    RuntimeWarning,
                    stacklevel=1,
                )
                return
            store = link.wait_for_store(self._stop)
            if store is None:
                if not self._stop.is_set():
                    warnings.warn(
                        "tracker: rank 0 never reached the other ranks (no torch.distributed "
                        "store appeared); their metrics are not in the run",
                        RuntimeWarning,
                        stacklevel=1,
                    )
                return
            store.set(link.prefix + "ingest", json.dumps(address))
            self._published = True
        except Exception as exc:  # noqa: BLE001 - the run goes on without the others
            warnings.warn(
                f"tracker: rank 0 could not publish its ingest's address ({exc}); the "
                "other ranks' metrics are not in the run",
                RuntimeWarning,
                stacklevel=1,
            )

    def finish(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for every rank's goodbye; the ingest then makes
        what it took durable and exits."""
        if self.proc is None:
            self._release()
            return
        if not self._published and not self.link.can_connect():
            timeout = 0.0  # no store and none coming: no rank can reach us
        else:
            # A short script can close before the address is out: the ranks wait for it.
            started = time.monotonic()
            for thread in self._threads:
                thread.join(max(0.0, timeout - (time.monotonic() - started)))
            timeout = max(0.0, timeout - (time.monotonic() - started))
        self._stop.set()
        result = self.result = self.proc.finish(timeout)
        # Held until now: under Horovod the store is served by this very process, and a
        # rank still on its way to the address reads it there.
        self._release()
        if result is None:
            warnings.warn(
                "tracker: rank 0's ingest process ended without a report; what it journaled "
                "is applied when the run is next read",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self.failed = {int(r): e for r, e in result.get("failed", {}).items()}
        missing = result.get("missing") or []
        lost = [r for r in result.get("lost") or [] if r not in self.failed]
        # A rank whose connection ended without its goodbye died (killed, or its node's
        # leader and it with it): its status is "lost", and it fails the run.
        self.failed.update((r, "lost") for r in lost)
        if lost:
            warnings.warn(
                f"tracker: lost contact with rank(s) {', '.join(map(str, lost))} (their "
                "connection ended without a goodbye); what they sent before is in the run",
                RuntimeWarning,
                stacklevel=3,
            )
        if missing:
            warnings.warn(
                f"tracker: rank(s) {', '.join(map(str, missing))} did not finish within "
                f"{timeout:g}s of rank 0 closing the run (TRACKER_RANK_CLOSE_TIMEOUT); "
                "closing without them",
                RuntimeWarning,
                stacklevel=3,
            )


# -- the other ranks ----------------------------------------------------------------------


def receive(run: Run, source: int, payload: bytes) -> tuple[str, str | None] | None:
    """Queue into rank 0's ``run`` one message of rank ``source`` (a ``shipment``).

    What the ``Gatherer`` does with every message it receives. Returns (status, error)
    when the message carries the rank's close, else None.
    """
    ended = None
    for op in decode(payload) if payload else ():
        if op[0] == ops.RANK_STATUS:
            _, status, ts, error = op
            run._ingest(ops.set_value(f"ranks/{source}/status", "str", status, ts))
            if error:
                run._ingest(ops.set_value(f"ranks/{source}/traceback", "str", error, ts))
            ended = (status, error)
        else:
            run._ingest(op)
    return ended


def shipment(queued: list[Any], rank: int) -> bytes:
    """What rank ``rank`` sends rank 0 for its ``queued`` operations (``ops.py``).

    Log calls become columns, as in the journal, marked with the rank; single values and
    file references go under ``ranks/<rank>/``; its close becomes a "rank_status".
    """
    out: list[Any] = []
    for op in columnize(queued, rank):
        tag = op[0]
        if tag == ops.SET:
            _, path, kind, value, ts = op
            out.append(ops.set_value(f"ranks/{rank}/{path}", kind, value, ts))
        elif tag == ops.FILE:
            out.append(ops.file_ref(f"ranks/{rank}/{op[1]}", op[2]))
        elif tag == ops.STATUS:
            out.append(ops.rank_status(op[1], op[2], op[3]))
        else:
            out.append(op)
    return _encode(out)


class Shipper:
    """The ``ops.Writer`` of a non-writer rank: batches its ops and sends them to rank 0."""

    # No back-pressure: what a rank logs leaves the process every flush interval. Once
    # it cannot (``_give_up``), the limit drops to 0 and each log call empties the queue.
    max_queue = 1 << 62

    def wait_for_room(self) -> None:
        if self._gone:
            n = len(self.queue)
            self.queue.clear()
            self.dropped += n

    def __init__(self, info: RankInfo, link: _Link, flush_interval: float = 0.5) -> None:
        self.info = info
        self.link = link
        self.queue: collections.deque[Any] = collections.deque()
        # Lower steps are warned about at the call where the writer knows the series'
        # last step; a shipper learns none, so its rank's run never warns.
        self.series_last: dict[str, int] = {}
        self.lower_warned: set[str] = set()
        self.flush_interval = flush_interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closing = False
        self._cv = threading.Condition()
        self._requested = 0
        self._done = 0
        self._gone = False
        self._connected = False
        self.dropped = 0  # operations logged after shipping stopped, not recorded
        self._thread = threading.Thread(target=self._loop, name="tracker-shipper", daemon=True)
        self._thread.start()

    def submit_sync(self, op: Any) -> None:  # sync mode behaves as async off the writer
        self.queue.append(op)

    def _loop(self) -> None:
        gloo = None
        try:
            gloo = self.link.connect(self._stop)
            if gloo is None:
                if not self._stop.is_set():
                    self._give_up(
                        f"rank 0 did not publish where to send within "
                        f"{DEFAULT_CONNECT_TIMEOUT_S:g} s"
                    )
                return
            self._connected = True
            while True:
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                with self._cv:
                    requested = self._requested
                closing = self._closing
                popleft = self.queue.popleft
                payload = shipment([popleft() for _ in range(len(self.queue))], self.info.rank)
                if closing:
                    gloo.send(transport.BYE, payload)
                    return
                if payload:
                    gloo.send(transport.DATA, payload)
                with self._cv:
                    self._done = requested
                    self._cv.notify_all()
        except Exception as exc:  # noqa: BLE001 - never take the training loop down
            self._give_up(str(exc) or type(exc).__name__)
        finally:
            gloo = None
            self.link.release()
            self._gone = True
            with self._cv:
                self._done = self._requested
                self._cv.notify_all()

    def _give_up(self, why: str) -> None:
        # From here on nothing leaves: the queue must not grow for the rest of the job.
        self._gone = True
        self.max_queue = 0
        self.dropped += len(self.queue)
        self.queue.clear()
        warnings.warn(
            f"tracker: rank {self.info.rank} cannot send to rank 0 ({why}); its later "
            "metrics are not recorded (dropped and counted in the shipper's 'dropped')",
            RuntimeWarning,
            stacklevel=1,
        )

    def flush(self, timeout: float | None = None) -> None:
        """Wait until what was logged is sent (not durable: nothing comes back); at most
        ``timeout`` s, or as long as closing waits for a rank."""
        with self._cv:
            self._requested += 1
            target = self._requested
        self._wake.set()
        limit = close_timeout() if timeout is None else timeout
        with self._cv:
            self._cv.wait_for(lambda: self._done >= target or self._gone, limit)

    def close(self, timeout: float | None = None) -> None:
        self._closing = True
        if not self._connected and not self.link.can_connect():
            self._stop.set()  # no store and none coming: rank 0 cannot be reached
        self._wake.set()
        self._thread.join(close_timeout() if timeout is None else timeout)
        self._stop.set()


def _torch_installed() -> bool:
    if "torch" in sys.modules:
        return sys.modules["torch"] is not None  # None: an import of torch is blocked
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def _disabled(info: RankInfo, project: str, name: str | None, run_id: str | None) -> Run:
    run = open_run(project, name=name, run_id=run_id, mode="disabled")
    run.rank, run.world_size, run.is_writer = info.rank, info.world_size, info.rank == 0
    return run


def _encode(shipped: list[Any]) -> bytes:
    import pickle

    return pickle.dumps(shipped, protocol=5) if shipped else b""


# -- entry point --------------------------------------------------------------------------


def open_distributed_run(
    info: RankInfo,
    *,
    project: str,
    name: str | None = None,
    run_id: str | None = None,
    mode: str = "async",
    **kwargs: Any,
) -> Run:
    """Open this rank's ``Run`` of a job of ``info.world_size`` processes."""
    if mode == "disabled":
        return _disabled(info, project, name, run_id)
    gather = _torch_installed()
    if not gather:
        # The transport is a gloo group: without torch, ranks cannot reach rank 0.
        warnings.warn(
            f"tracker: rank {info.rank} of {info.world_size} ({info.source}), but torch is not "
            "installed, so the other ranks' metrics cannot be gathered: only rank 0 records "
            "(install torch, or use tracker.api.init_local_run on the one writing process)",
            RuntimeWarning,
            stacklevel=3,
        )
    store = _store_now(info) if gather else None
    if not gather and run_id is None:
        job_id = _usable_job_id(info)
        run_id = derived_run_id(job_id, project, name) if job_id else None
    else:
        run_id = _agree_on_run_id(info, run_id, project, name, store)
    if info.rank == 0:
        kwargs["extra_fields"] = {
            **(kwargs.get("extra_fields") or {}),
            **{f"ranks/0/{k}": v for k, v in _where(info).items()},
            "job/world_size": info.world_size,
        }
        run = open_run(project, name=name, run_id=run_id, mode=mode, run_class=WriterRun, **kwargs)
        run.rank, run.world_size, run.is_writer = 0, info.world_size, True
        if gather:
            assert run_id is not None  # _agree_on_run_id gave one whenever gather is true
            # open_run returns a run_class (WriterRun) instance, or the run this process
            # already has open under run_id; the gatherer goes on whichever it returns
            # (WriterRun.close reads it with getattr for that reason).
            link = _Link(info, run_id, store)
            side: Gatherer | IngestSide
            earlier = getattr(run, "_gatherer", None)
            if transport_kind() == "gloo":
                side = Gatherer(run, link)
            elif isinstance(earlier, IngestSide) and earlier.reopened(link):
                side = earlier  # the run this process has open: its ingest goes on
            else:
                side = IngestSide(run, link, kwargs.get("store"), apply=mode != "offline")
            run._gatherer = side  # type: ignore[attr-defined]
        return run
    if not gather:
        return _disabled(info, project, name, run_id)
    assert run_id is not None  # _agree_on_run_id gave one whenever gather is true
    link_class = _Link if transport_kind() == "gloo" else _SocketLink
    shipper = Shipper(info, link_class(info, run_id, store))
    run = Run(
        run_id=run_id,
        project=project,
        name=name,
        writer=shipper,
        rank=info.rank,
        world_size=info.world_size,
        is_writer=False,
        # After a rewind every rank's implicit steps go on from the checkpoint's.
        next_step=0 if kwargs.get("resume_from_step") is None else kwargs["resume_from_step"] + 1,
    )
    # Stored under ranks/<rank>/ by the Shipper: where this rank runs, and its environment.
    run._assign_many({**(kwargs.get("extra_fields") or {}), **_where(info)})
    tags = kwargs.get("tags")
    if tags:
        run.add_tags(*tags)
    return run
