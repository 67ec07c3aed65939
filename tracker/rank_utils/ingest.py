"""The writer's ingest: a process beside rank 0 that takes every other rank's operations.

Rank 0 starts it with its run (``IngestProcess.start``) and ends it with its close. It
listens on a node-local socket (rank 0's node's ranks connect there directly) and on a
TCP port (one connection per other node's leader), decodes what arrives, journals it
in a segment of its own in the run's journal directory, fsyncs, and applies that record
to the store with its position, so a replay never stores it twice. All of that runs in
this process, outside the training process's interpreter lock.

Lifecycle. It reports ``ready`` with its addresses on stdout; reads ``beat`` (rank 0
logged something: for silent-rank detection) and ``close SECONDS`` (wait that long for
every rank's goodbye, make everything durable, report ``done``, exit) on stdin. It
runs in a session of its own, so a signal the launcher sends rank 0's process group
does not cut it short; it inherits rank 0's writer lock, so while it lives no reader
takes the run for crashed. If rank 0 dies (stdin reaches its end without ``close``) it
takes what is still in flight for a moment, makes it durable and applied, and exits:
it never outlives the job as an orphan.

Events it finds (a silent rank, and what ``core.watch.Watcher`` finds in the other
ranks' batches) go to rank 0 as ``event`` lines, and rank 0 queues them into its own
writer, whose watcher hands them to the webhook; once rank 0 is gone they are journaled
here instead.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import json
import logging
import os
import select
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from . import wire

log = logging.getLogger("tracker")

# How long the ingest takes what is in flight after rank 0 died, at most.
ORPHAN_GRACE_S = 2.0
# A batch is made durable this often, or sooner once it holds this many ops.
CYCLE_S = 0.5
CYCLE_OPS = 50_000
# Past the ranks' time at close, how long rank 0 waits for the ingest's last batch and
# report, at most: the journal has what it took, and it finishes on its own.
CLOSE_GRACE_S = 5.0
# The store's location reaches the ingest in its environment: a command line is visible
# to every user of the host, and a database URL may hold a password.
STORE_ENV = "TRACKER_INGEST_STORE"


# -- rank 0's side -----------------------------------------------------------------------


class IngestProcess:
    """Rank 0's handle on its ingest process."""

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        on_event: Callable[[dict[str, Any]], None] | None,
        beat: Callable[[], Any] | None,
        rules: Callable[[], Any] | None = None,
        on_active: Callable[[], None] | None = None,
    ) -> None:
        self.proc = proc
        self._rules = rules
        self._on_active = on_active
        self.address: dict[str, Any] | None = None
        self.result: dict[str, Any] | None = None
        self._on_event = on_event
        self._beat = beat
        self._ready = threading.Event()
        self._done = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        # What is written to the ingest's stdin never blocks rank 0 (an ingest that stops
        # reading would hold its close forever): lines that must arrive wait here, beats
        # are dropped while the pipe is full.
        self._unsent = bytearray()
        if proc.stdin is not None:
            os.set_blocking(proc.stdin.fileno(), False)
        # A child forked by the training process (a DataLoader worker) would hold the
        # ingest's stdin open and hide rank 0's death from it: the child closes its copy.
        self._stdin_fd = [proc.stdin.fileno() if proc.stdin is not None else -1]
        os.register_at_fork(after_in_child=functools.partial(_close_in_child, self._stdin_fd))
        self._reader = threading.Thread(target=self._read, name="tracker-ingest-out", daemon=True)
        self._reader.start()
        if beat is not None:
            threading.Thread(target=self._beats, name="tracker-ingest-beat", daemon=True).start()

    @classmethod
    def start(
        cls,
        *,
        store: str | None,
        run_id: str,
        world_size: int,
        node: str,
        apply: bool = True,
        lock_fd: int = -1,
        stats: bool = False,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        beat: Callable[[], Any] | None = None,
        rules: Callable[[], Any] | None = None,
        on_active: Callable[[], None] | None = None,
    ) -> IngestProcess:
        cmd = [
            sys.executable,
            "-m",
            "tracker.rank_utils.ingest",
            "--run-id",
            run_id,
            "--world-size",
            str(world_size),
            "--node",
            node,
        ]
        if not apply:
            cmd.append("--no-apply")
        if stats:
            cmd.append("--stats")
        pass_fds: tuple[int, ...] = ()
        if lock_fd >= 0:
            cmd += ["--lock-fd", str(lock_fd)]
            pass_fds = (lock_fd,)
        env = dict(os.environ)
        # The child must import this very tracker, wherever the script found it.
        here = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        env.pop(STORE_ENV, None)
        if store is not None:
            env[STORE_ENV] = os.fspath(store)
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=pass_fds,
            start_new_session=True,
        )
        return cls(proc, on_event, beat, rules, on_active)

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None
        for raw in stdout:
            word, _, rest = raw.decode(errors="replace").rstrip("\n").partition(" ")
            try:
                value = json.loads(rest) if rest else None
            except ValueError:
                continue
            if word == "ready":
                self.address = value
                self._ready.set()
            elif word == "active" and self._on_active is not None:
                self._on_active()
            elif word == "event" and self._on_event is not None and isinstance(value, dict):
                try:
                    self._on_event(value)
                except Exception:  # noqa: BLE001 - a closed run drops it; never die here
                    pass
            elif word == "done":
                self.result = value
                self._done.set()
        self._ready.set()
        self._done.set()

    def _beats(self) -> None:
        assert self._beat is not None
        last = None
        rules: Any = None
        tick = 0
        while not self._stop.wait(0.2):
            tick += 1
            if self._rules is not None:
                # Run.watch swaps its rules whole: a new object is a new rule set, which
                # the ingest's watcher applies to the other ranks' points.
                current = self._rules()
                if current is not rules:
                    rules = current
                    fields = [dataclasses.asdict(rule) for rule in (current or {}).values()]
                    self._send(f"rules {json.dumps(fields)}\n", keep=True)
            if tick % 5:
                continue
            try:
                now = self._beat()
            except Exception:  # noqa: BLE001
                continue
            if now != last:
                last = now
                self._send(f"beat {json.dumps(now)}\n", keep=False)
            else:
                self._send("", keep=True)  # what waited for room in the pipe

    def _send(self, line: str, keep: bool) -> bool:
        """Write ``line`` without blocking; False if none of it could go now. A line
        to ``keep`` waits for room behind the ones before it; any other is dropped."""
        with self._write_lock:
            fd = self._stdin_fd[0]
            if fd < 0:
                return False
            unsent = self._unsent
            if keep or not unsent:
                unsent += line.encode()
            else:
                return False  # a beat behind lines still waiting: the next one comes
            queued = len(unsent)
            try:
                while unsent:
                    unsent[: os.write(fd, unsent)] = b""
            except BlockingIOError:
                pass
            except OSError:
                unsent.clear()
                return False
            if not keep and unsent and len(unsent) == queued:
                del unsent[-len(line) :]  # a beat that found no room: the next one comes
                return False
        return True

    def _send_by(self, line: str, deadline: float) -> bool:
        """Write ``line`` (and what waited before it), waiting for room until ``deadline``."""
        self._send(line, keep=True)
        while True:
            with self._write_lock:
                if not self._unsent or self._stdin_fd[0] < 0:
                    return not self._unsent
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                select.select([], [self._stdin_fd[0]], [], min(left, 0.1))
            except (OSError, ValueError):
                return False
            self._send("", keep=True)

    def wait_ready(self, timeout: float) -> dict[str, Any] | None:
        self._ready.wait(timeout)
        return self.address

    def finish(self, timeout: float) -> dict[str, Any] | None:
        """Wait up to ``timeout`` s for every rank's goodbye; then the ingest makes what
        it has durable and exits. Returns its report (None if it gave none)."""
        self._stop.set()
        timeout = max(0.0, timeout)
        deadline = time.monotonic() + timeout + CLOSE_GRACE_S
        # An ingest that stopped reading (stopped, stuck) is left to finish on its own
        # once it can: its journal has what it took, and the end of stdin ends it.
        if self._send_by(f"close {timeout}\n", deadline):
            # Past the ranks' time, the last batch is journaled and applied.
            self._done.wait(max(0.0, deadline - time.monotonic()))
        self.end(max(0.5, deadline - time.monotonic()))
        return self.result

    def end(self, timeout: float = CLOSE_GRACE_S) -> None:
        """Close the ingest's stdin (it finishes what it took and exits); wait for it
        at most ``timeout`` s, past which it is left to finish on its own."""
        self._stop.set()
        stdin = self.proc.stdin
        if stdin is not None:
            with self._write_lock:
                self._stdin_fd[0] = -1  # closed below: a later fork must not close its number
                try:
                    stdin.close()  # end of stdin: the ingest finishes and exits
                except OSError:
                    pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            warnings.warn(
                f"tracker: rank 0's ingest process (pid {self.proc.pid}) has not finished "
                f"within {timeout:.0f} s; it finishes on its own, and what it journaled is "
                "applied when the run is next read",
                RuntimeWarning,
                stacklevel=3,
            )


def _close_in_child(holder: list[int]) -> None:
    if holder[0] >= 0:
        try:
            os.close(holder[0])
        except OSError:
            pass


# -- the ingest process ------------------------------------------------------------------


class _Conn:
    __slots__ = ("sock", "reader", "ranks", "remote", "since")

    def __init__(self, sock: socket.socket, remote: bool) -> None:
        self.sock = sock
        # Trusted once a HELLO with the job's token came first; until then it may hold
        # only that HELLO.
        self.reader = wire.FrameReader(untrusted=True)
        self.ranks: set[int] = set()  # ranks heard through this connection
        self.remote = remote
        self.since = time.monotonic()

    @property
    def trusted(self) -> bool:
        return self.reader.trusted


class Ingest:
    """The ingest's state and loop (``main`` runs it)."""

    def __init__(self, args: argparse.Namespace) -> None:
        from ..core.stores import open_store

        self.args = args
        self.run_id: str = args.run_id
        self.world_size: int = args.world_size
        self.store = open_store(os.environ.pop(STORE_ENV, None))
        self.applier = self.store.applier(self.run_id) if args.apply else None
        self.journal: Any = None  # JournalWriter, made with the first batch
        # Journaled but not yet fsynced (the sync failed): (batch, segment, end). Only
        # the sync is retried; the batch is in the journal once already.
        self.unsynced: list[tuple[list[Any], str, int]] = []
        self.sync_retry_at = 0.0
        self.behind = False
        self.retry_at = 0.0
        # Applying runs on a thread of its own: a store that is slow or away (a hung
        # server, a locked database) must never stop this loop reading the ranks'
        # sockets, or their sends would time out and they would stop shipping. What is
        # journaled and fsynced is safe; the store catches up from the journal.
        self._to_apply: collections.deque[tuple[list[Any], str, int]] = collections.deque()
        self._apply_cv = threading.Condition()
        self._applying = False
        self._apply_stop = False
        self._apply_thread: threading.Thread | None = None
        if self.applier is not None:
            self._apply_thread = threading.Thread(
                target=self._apply_loop, name="tracker-ingest-apply", daemon=True
            )
            self._apply_thread.start()
        self.sel = selectors.DefaultSelector()
        self.token = os.urandom(16).hex()
        self.local_name = wire.local_name("ingest")
        self.local = wire.listen_local(self.local_name)
        self.tcp = wire.listen_tcp()
        for sock in (self.local, self.tcp):
            sock.setblocking(False)
            self.sel.register(sock, selectors.EVENT_READ, None)
        self.stdin = sys.stdin.buffer
        os.set_blocking(self.stdin.fileno(), False)
        self.sel.register(self.stdin, selectors.EVENT_READ, "stdin")
        self._stdin_buf = b""
        self.out: IO[str] | None = sys.stdout
        self.pending: list[Any] = []
        self.pending_ops = 0
        self.hosts: dict[int, dict[str, Any]] = {}
        self.untrusted: dict[socket.socket, _Conn] = {}  # in the order they came
        self.paused: dict[socket.socket, float] = {}  # listeners out of fds: until when
        # A rank's run may be opened more than once in its process: it is done when
        # each opening (each sender it said HELLO from) said goodbye.
        self.senders: dict[int, set[Any]] = {}
        self.byes: dict[int, int] = {}
        # Numbered frames: the next number expected of each sender, and the numbers
        # skipped (lost with a leader that died holding them, unless they come late).
        self.next_seq: dict[tuple[int, int], int] = {}
        self.missing: dict[tuple[int, int], set[int]] = {}
        self.said_bye: set[int] = set()
        self.lost: set[int] = set()
        self.failed: dict[int, str] = {}
        # Silent ranks: when each rank last logged training points, and its last step.
        self.silent_after = _silent_after()
        self.last_points: dict[int, float] = {}
        self._said_active = 0.0  # when rank 0 was last told other ranks log
        self.last_wall: dict[int, float] = {}
        self.last_step: dict[int, int] = {}
        self.silent_fired: set[int] = set()
        self.closing_at: float | None = None
        self.orphaned_at: float | None = None
        self.last_input = time.monotonic()
        self.watcher = _watcher()
        self.stats: dict[str, Any] = {"points": 0, "frames": 0, "bytes": 0, "batches": 0}
        self.delays: list[tuple[float, float]] = []
        self.started = time.monotonic()

    # -- input ---------------------------------------------------------------------------

    def address(self) -> dict[str, Any]:
        return {
            "local": self.local_name,
            "port": self.tcp.getsockname()[1],
            "hosts": wire.reachable_hosts(),
            "node": self.args.node,
            "pid": os.getpid(),
            "token": self.token,
        }

    def poll(self, timeout: float) -> None:
        if self.paused:
            now = time.monotonic()
            for listener, until in list(self.paused.items()):
                if now >= until:
                    del self.paused[listener]
                    self.sel.register(listener, selectors.EVENT_READ, None)
                else:
                    timeout = min(timeout, until - now)
        if self.untrusted:
            stale = time.monotonic() - wire.HELLO_TIMEOUT_S
            for conn in [c for c in self.untrusted.values() if c.since < stale]:
                self._drop(conn)
        for key, _mask in self.sel.select(timeout):
            if key.data == "stdin":
                self._read_stdin()
            elif key.data is None:
                self._accept(key.fileobj)  # type: ignore[arg-type]
            else:
                self._read_conn(key.data)

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:
            # Out of file descriptors (or memory): the listener stays readable, and
            # taking it up again at once would spin. Rest it, and free the oldest
            # connection that has not proved itself.
            self.sel.unregister(listener)
            self.paused[listener] = time.monotonic() + 0.2
            if self.untrusted:
                self._drop(next(iter(self.untrusted.values())))
            return
        sock.setblocking(False)
        conn = _Conn(sock, listener is self.tcp)
        self.sel.register(sock, selectors.EVENT_READ, conn)
        self.untrusted[sock] = conn
        if len(self.untrusted) > wire.MAX_UNTRUSTED:
            self._drop(next(iter(self.untrusted.values())))

    def _read_conn(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(conn)
            return
        self.last_input = time.monotonic()
        self.stats["bytes"] += len(data)
        try:
            frames = conn.reader.feed(data)
            while frames:
                trusted = conn.trusted
                for kind, rank, payload in frames:
                    if not self._frame(conn, kind, rank, payload):
                        _warn(
                            "tracker: the ingest refused a connection that is not one of the job's"
                        )
                        self._drop(conn)
                        return
                # Just trusted: what came after its HELLO was held back until now.
                frames = conn.reader.feed(b"") if conn.trusted and not trusted else []
        except ValueError:
            _warn("tracker: the ingest refused a connection that is not one of the job's")
            self._drop(conn)

    def _drop(self, conn: _Conn) -> None:
        self.untrusted.pop(conn.sock, None)
        self.sel.unregister(conn.sock)
        conn.sock.close()
        # A connection that ends before its ranks said goodbye: they (or their leader)
        # died. Close does not wait for them; one that reconnects is welcome back.
        self.lost.update(r for r in conn.ranks if r not in self.said_bye)

    def _frame(self, conn: _Conn, kind: int, rank: int, payload: bytes) -> bool:
        """Take one frame; False when the connection is not one of the job's."""
        self.stats["frames"] += 1
        if not 0 < rank < self.world_size:
            return False
        if kind == wire.HELLO:
            who = wire.hello_fields(payload, self.token)
            if who is None:
                return False
            conn.reader.trust()
            self.untrusted.pop(conn.sock, None)
            who.pop("token", None)
            sender = who.pop("sender", None)
            self.hosts[rank] = who
            conn.ranks.add(rank)
            self.lost.discard(rank)
            senders = self.senders.setdefault(rank, set())
            if sender not in senders:
                senders.add(sender)
                self.said_bye.discard(rank)  # a new opening of its run: not done yet
            self.last_points.setdefault(rank, time.monotonic())
            self.last_wall.setdefault(rank, time.time())
        elif not conn.trusted:
            return False
        elif kind in (wire.DATA_N, wire.BYE_N):
            if len(payload) < wire.SEQ.size:
                return False
            self._number(rank, *wire.SEQ.unpack_from(payload))
            plain = wire.DATA if kind == wire.DATA_N else wire.BYE
            self.stats["frames"] -= 1  # counted once, as the plain frame it holds
            return self._frame(conn, plain, rank, payload[wire.SEQ.size :])
        elif kind in (wire.DATA, wire.BYE):
            conn.ranks.add(rank)
            if payload:
                self._take(rank, payload)
            if kind == wire.BYE:
                # Done on this connection: its end no longer says the rank died (the
                # rank may go on through another opening of its run).
                conn.ranks.discard(rank)
                self.byes[rank] = self.byes.get(rank, 0) + 1
                if self.byes[rank] >= len(self.senders.get(rank, ())):
                    self.said_bye.add(rank)
                self.lost.discard(rank)
        elif kind == wire.GONE:
            if rank not in self.said_bye:
                self.lost.add(rank)
        return True

    def _number(self, rank: int, sender: int, seq: int) -> None:
        key = (rank, sender)
        expected = self.next_seq.get(key, 0)
        if seq > expected:
            self.missing.setdefault(key, set()).update(range(expected, min(seq, expected + 10**6)))
        elif seq < expected:
            self.missing.get(key, set()).discard(seq)  # late, by another path: not lost
        self.next_seq[key] = max(expected, seq + 1)

    def lost_batches(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for (rank, _sender), seqs in self.missing.items():
            if seqs:
                out[rank] = out.get(rank, 0) + len(seqs)
        return out

    def _take(self, rank: int, payload: bytes) -> None:
        from ..core import ops
        from ..core.journal import decode

        try:
            batch = decode(payload)
        except Exception as exc:  # noqa: BLE001 - one bad message must not stop the rest
            _warn(f"tracker: a message of rank {rank} could not be read ({exc}); skipped")
            return
        active = False
        for op in batch:
            tag = op[0]
            if tag == ops.RANK_STATUS:
                _, status, ts, error = op
                self.pending.append(ops.set_value(f"ranks/{rank}/status", "str", status, ts))
                if error:
                    self.pending.append(ops.set_value(f"ranks/{rank}/traceback", "str", error, ts))
                if status == "failed":
                    self.failed[rank] = error or ""
                continue
            self.pending.append(op)
            if tag == ops.LOGS:
                active |= self._note_points(rank, op)
        self.pending_ops += len(batch)
        if active:
            now = time.monotonic()
            self.last_points[rank] = now
            self.last_wall[rank] = time.time()
            self.silent_fired.discard(rank)
            if now - self._said_active >= 1.0:
                # Rank 0's writer judges the whole run's silence: other ranks' points
                # no longer pass through it, so it hears of them from here.
                self._said_active = now
                self._say("active", rank)

    def _note_points(self, rank: int, op: Any) -> bool:
        from ..core import ops

        active = False
        for group in op[3]:
            keys = group[1]
            if group[0] == ops.COLS:
                n = len(group[2]) // 8
                steps_last = int.from_bytes(group[2][-8:], "little", signed=True) if n else None
            else:
                n = len(group[2])
                steps_last = int(group[2][-1]) if n else None
            self.stats["points"] += n * len(keys)
            if keys and not keys[0].startswith("sys/") and steps_last is not None:
                active = True
                self.last_step[rank] = max(self.last_step.get(rank, steps_last), steps_last)
        return active

    def _read_stdin(self) -> None:
        try:
            data = os.read(self.stdin.fileno(), 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.sel.unregister(self.stdin)
            self.orphaned_at = time.monotonic()  # rank 0 is gone (or done with us)
            return
        self._stdin_buf += data
        *lines, self._stdin_buf = self._stdin_buf.split(b"\n")
        for line in lines:
            word, _, rest = line.decode(errors="replace").partition(" ")
            if word == "beat":
                step = _json(rest)
                self.last_points[0] = time.monotonic()
                self.last_wall[0] = time.time()
                self.silent_fired.discard(0)
                if isinstance(step, list) and step and isinstance(step[0], int):
                    self.last_step[0] = step[0] - 1
            elif word == "rules" and self.watcher is not None:
                from ..core.watch import check_rule

                for fields in _json(rest) or []:
                    try:
                        self.watcher.add_rule(check_rule(**fields))
                    except (TypeError, ValueError) as exc:
                        _warn(f"tracker: the ingest could not watch {fields!r}: {exc}")
            elif word == "close":
                self.closing_at = time.monotonic() + float(rest or 0)

    # -- output --------------------------------------------------------------------------

    def _say(self, word: str, value: Any) -> bool:
        out = self.out
        if out is None:
            return False
        try:
            out.write(f"{word} {wire.dumps(value)}\n")
            out.flush()
        except (OSError, ValueError):
            self.out = None
            return False
        return True

    def _events(self, found: list[dict[str, Any]]) -> None:
        from ..core import events as ev

        for event in found:
            # Rank 0's writer stores them and hands them to the webhook; without rank 0
            # they are journaled here, so that none is lost.
            if self.orphaned_at is not None or not self._say("event", event):
                self.pending.append(ev.events_op([event]))

    def cycle(self) -> None:
        """Journal, fsync and apply what arrived since the last cycle."""
        if self.pending:
            batch, self.pending, self.pending_ops = self.pending, [], 0
            if self.watcher is not None:
                try:
                    self._events(self.watcher.scan(batch))
                except Exception as exc:  # noqa: BLE001 - watching must not stop ingesting
                    _warn(f"tracker: the ingest's watcher failed ({exc}); it is off")
                    self.watcher = None
            self._durable(batch)
        elif self.unsynced and time.monotonic() >= self.sync_retry_at:
            self._sync()
        if self.behind:
            with self._apply_cv:
                self._apply_cv.notify_all()  # its catch-up is due at retry_at

    def _durable(self, batch: list[Any]) -> None:
        from ..core.journal import JournalWriter

        if self.journal is None:
            directory = self.store.journal_dir(self.run_id)
            name = f"{time.time_ns():020d}-{os.getpid()}.jnl"
            self.journal = JournalWriter(Path(directory) / name)
        try:
            _start, end = self.journal.append(batch)
        except OSError as exc:
            # The journal cut the failed record back off: appending it again is safe.
            _warn(f"tracker: the ingest could not journal ({exc}); retrying")
            self.pending[:0] = batch  # in order, before what came since
            return
        self.unsynced.append((batch, self.journal.path.name, end))
        self._sync()

    def _sync(self) -> bool:
        """Make what was journaled durable, then apply it; False while the sync fails."""
        try:
            self.journal.sync()
        except OSError as exc:
            if not self.sync_retry_at:
                _warn(f"tracker: the ingest could not make its journal durable ({exc}); retrying")
            self.sync_retry_at = time.monotonic() + CYCLE_S
            return False
        self.sync_retry_at = 0.0
        done, self.unsynced = self.unsynced, []
        for batch, segment, end in done:
            self._apply(batch, segment, end)
        return True

    def _apply(self, batch: list[Any], segment: str, end: int) -> None:
        """Hand a durable record to the apply thread."""
        self.stats["batches"] += 1
        if self.args.stats:
            self._note_delay(batch, time.time())
        if self.applier is None:
            return
        with self._apply_cv:
            self._to_apply.append((batch, segment, end))
            self._apply_cv.notify_all()

    def _apply_loop(self) -> None:
        assert self.applier is not None
        while True:
            with self._apply_cv:
                while (
                    not self._to_apply
                    and not self._apply_stop
                    and not (self.behind and time.monotonic() >= self.retry_at)
                ):
                    self._apply_cv.wait(CYCLE_S)
                if self._apply_stop and not self._to_apply:
                    return
                item = self._to_apply.popleft() if self._to_apply else None
                self._applying = True
            try:
                if self.behind:
                    # The journal holds this record too: the catch-up applies it in order.
                    if time.monotonic() >= self.retry_at:
                        self._catch_up()
                elif item is not None:
                    batch, segment, end = item
                    try:
                        self.applier.apply(batch, (segment, end))
                    except Exception as exc:  # noqa: BLE001 - the journal holds it
                        self.behind = True
                        self.retry_at = time.monotonic() + 1.0
                        _warn(
                            f"tracker: the ingest could not apply to the store ({exc}); "
                            "its journal has it"
                        )
            finally:
                with self._apply_cv:
                    self._applying = False
                    self._apply_cv.notify_all()

    def _stop_applying(self) -> None:
        """Let the apply thread finish what it holds, then stop it."""
        thread = self._apply_thread
        if thread is None:
            return
        with self._apply_cv:
            self._apply_stop = True
            self._apply_cv.notify_all()
        thread.join()
        self._apply_thread = None

    def _catch_up(self) -> None:
        """Apply this ingest's own segment from the journal where the store lags it."""
        from ..core.replay import replay_run

        if self.journal is None or self.applier is None:
            self.behind = False
            return
        try:
            # Record by record: rank 0's writer may adopt this segment once we end.
            replay_run(
                self.store,
                self.run_id,
                applier=self.applier,
                segments={self.journal.path.name},
                record_by_record=True,
            )
        except Exception:  # noqa: BLE001
            self.retry_at = time.monotonic() + 2.0
            return
        self.behind = False

    def _note_delay(self, batch: list[Any], durable: float) -> None:
        from ..core import ops

        low, high = float("inf"), float("-inf")
        for op in batch:
            if op[0] != ops.LOGS:
                continue
            for group in op[3]:
                if group[0] == ops.COLS and group[3]:
                    import numpy as np

                    ts = np.frombuffer(group[3], dtype=np.float64)
                    low, high = min(low, float(ts.min())), max(high, float(ts.max()))
        if low <= high and len(self.delays) < 100_000:
            self.delays.append((durable - low, durable - high))

    # -- silent ranks --------------------------------------------------------------------

    def check_silence(self) -> None:
        from ..core import events as ev

        now = time.monotonic()
        limit = self.silent_after
        fresh = [r for r, t in self.last_points.items() if now - t < limit]
        if not fresh:
            return  # the whole job is quiet (evaluating, checkpointing): nobody is singled out
        found = []
        for rank, seen in self.last_points.items():
            quiet = now - seen
            if quiet < limit or rank in self.silent_fired or rank in self.said_bye:
                continue
            if rank in self.lost or not any(r != rank for r in fresh):
                continue
            self.silent_fired.add(rank)
            who = self.hosts.get(rank, {}) if rank else {"host": socket.gethostname()}
            host = who.get("host")
            pid = who.get("pid", os.getppid() if rank == 0 else None)
            found.append(
                ev.make_event(
                    "silent_rank",
                    rank=rank,
                    step=self.last_step.get(rank),
                    level="warning",
                    message=f"rank {rank} (host {host}, pid {pid}) has logged nothing for "
                    f"{quiet:.0f} s while the other ranks go on",
                    host=host,
                    pid=pid,
                    last_seen=self.last_wall.get(rank),
                    silent_for=round(quiet, 1),
                )
            )
        if found:
            self._events(found)

    # -- the loop ------------------------------------------------------------------------

    def waiting_for(self) -> list[int]:
        gone = self.said_bye | self.lost
        return [r for r in range(1, self.world_size) if r not in gone]

    def run(self) -> None:
        next_cycle = time.monotonic() + CYCLE_S
        next_silence = time.monotonic() + 0.5
        while True:
            now = time.monotonic()
            self.poll(max(0.0, min(next_cycle, next_silence) - now))
            now = time.monotonic()
            if now >= next_cycle or self.pending_ops >= CYCLE_OPS:
                self.cycle()
                next_cycle = now + CYCLE_S
            if now >= next_silence:
                self.check_silence()
                next_silence = now + 0.5
            if self.orphaned_at is not None:
                # Rank 0 is gone: take what is still in flight, then finish.
                quiet = now - max(self.last_input, self.orphaned_at)
                if self.closing_at is not None or quiet >= 0.3:
                    break
                if now - self.orphaned_at >= ORPHAN_GRACE_S:
                    break
            elif self.closing_at is not None and (not self.waiting_for() or now >= self.closing_at):
                break
        from ..core import ops

        for rank in sorted(self.lost - self.said_bye):
            self.pending.append(ops.set_value(f"ranks/{rank}/status", "str", "lost", time.time()))
        for rank, count in sorted(self.lost_batches().items()):
            # Batches the rank sent that never arrived: what is in the run lacks them.
            self.pending.append(
                ops.set_value(f"ranks/{rank}/lost_batches", "int", count, time.time())
            )
        self.cycle()
        if self.unsynced:
            self._sync()
        self._stop_applying()
        if self.behind and not self.unsynced:
            self._catch_up()
        self.finish()

    def finish(self) -> None:
        for key in list(self.sel.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        wire.unlink_local(self.local_name)
        if self.journal is not None:
            try:
                self.journal.close()
            except OSError as exc:
                _warn(f"tracker: the ingest could not close its journal ({exc})")
        self.store.close()
        report: dict[str, Any] = {
            "failed": {str(r): e for r, e in self.failed.items()},
            "missing": self.waiting_for(),
            "lost": sorted(self.lost),
            "lost_batches": {str(r): n for r, n in self.lost_batches().items()},
            "behind": self.behind,
            "stats": {
                **self.stats,
                "seconds": round(time.monotonic() - self.started, 3),
                "cpu_s": round(sum(os.times()[:2]), 3),
                "rss_mb": _rss_mb("VmRSS"),
                "peak_rss_mb": _rss_mb("VmHWM"),
                "delays": self.delays if self.args.stats else [],
            },
        }
        self._say("done", report)


def _json(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _silent_after() -> float:
    from ..core import events as ev

    return ev.silent_after()


def _watcher() -> Any:
    """The run's watcher for the other ranks' batches (NaN/inf), if this tracker has one;
    silence of the whole run is rank 0's writer's to judge, not this process's."""
    try:
        from ..core.watch import Watcher
    except ImportError:
        return None
    try:
        # As the run's writer makes its own (TRACKER_WATCH=0 turns NaN/inf watching off).
        nonfinite = os.environ.get("TRACKER_WATCH", "1") != "0"
        return Watcher(nonfinite=nonfinite, silent_after=float("inf"))
    except Exception:  # noqa: BLE001
        return None


def _rss_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tracker.rank_utils.ingest")
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--world-size", type=int, required=True)
    parser.add_argument("--node", default="")
    parser.add_argument("--no-apply", dest="apply", action="store_false")
    parser.add_argument("--lock-fd", type=int, default=-1)  # rank 0's writer lock, held
    parser.add_argument("--stats", action="store_true")
    args = parser.parse_args(argv)
    # Rank 0's end is told by stdin: signals meant for the job's processes (a Ctrl-C,
    # the launcher's SIGTERM) must not cut short what it makes durable.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    warnings.simplefilter("default")
    ingest = Ingest(args)
    ingest._say("ready", ingest.address())
    ingest.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
