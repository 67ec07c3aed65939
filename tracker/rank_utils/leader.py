"""A node's leader: one thread in one rank of a node that is not the writer's.

The node's ranks connect to it over a node-local socket; it forwards their frames, as
they are, to the writer's ingest over one TCP connection, a whole node's worth in one
write every ``interval`` (so the ingest's connections and reads grow with nodes, not
ranks). It only reads frame headers (whose rank, whether a goodbye), never payloads.
A rank whose connection ends without a goodbye is reported upstream as ``GONE``.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

from . import wire

INTERVAL_S = 0.1
MAX_BUFFER = 4 << 20


class NodeLeader:
    """Accepts the node's ranks on ``name`` and forwards to ``upstream``."""

    def __init__(
        self, upstream: socket.socket, token: str, send_timeout: float = 30.0, ranks: int = 1
    ) -> None:
        self.token = token
        self.expected = ranks  # the node's ranks: each says goodbye or its connection ends
        # An ingest that stops reading must not hold this thread (and the node's ranks,
        # whose sends then time out and go to the ingest directly) forever.
        upstream.settimeout(send_timeout)
        self.name = wire.local_name("leader")
        self.listener = wire.listen_local(self.name)
        self.listener.setblocking(False)
        self.upstream = upstream
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.out = bytearray()
        self.ranks: dict[socket.socket, set[int]] = {}
        self.finished: set[int] = set()  # ranks that said goodbye or whose connection ended
        self.readers: dict[socket.socket, wire.FrameReader] = {}
        self.untrusted: dict[socket.socket, float] = {}  # not yet said HELLO: since when
        self._paused_until = 0.0  # out of file descriptors: accepting rests till then
        self.error: BaseException | None = None
        self._stop_at: float | None = None
        self._thread = threading.Thread(target=self._loop, name="tracker-leader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last = time.monotonic()
        try:
            while True:
                self._housekeep()
                for key, _ in self.sel.select(INTERVAL_S):
                    if key.data is None:
                        self._accept()
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                if self.out and (now - last >= INTERVAL_S or len(self.out) >= MAX_BUFFER):
                    self._send()
                    last = now
                # Done once each of the node's ranks said goodbye or its connection ended
                # (not once every socket closed: a rank's forked child, a DataLoader
                # worker, may keep its socket open long after).
                done = len(self.finished) >= self.expected and not any(self.ranks.values())
                if self._stop_at is not None and (done or now >= self._stop_at):
                    break
            self._send()
        except OSError as exc:
            self.error = exc  # the ingest is gone: the node's ranks fall back to it directly
        finally:
            for sock in list(self.ranks):
                sock.close()
            self.listener.close()
            wire.unlink_local(self.name)
            self.upstream.close()
            self.sel.close()

    def _housekeep(self) -> None:
        now = time.monotonic()
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            self.sel.register(self.listener, selectors.EVENT_READ, None)
        stale = now - wire.HELLO_TIMEOUT_S
        for sock in [s for s, since in self.untrusted.items() if since < stale]:
            self._drop(sock)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError:
            # Out of file descriptors: the listener stays readable; rest it rather than
            # spin, and free the oldest connection that has not said HELLO.
            self.sel.unregister(self.listener)
            self._paused_until = time.monotonic() + 0.2
            if self.untrusted:
                self._drop(next(iter(self.untrusted)))
            return
        sock.setblocking(False)
        self.ranks[sock] = set()
        self.readers[sock] = wire.FrameReader(untrusted=True)
        self.untrusted[sock] = time.monotonic()
        self.sel.register(sock, selectors.EVENT_READ, "rank")
        if len(self.untrusted) > wire.MAX_UNTRUSTED:
            self._drop(next(iter(self.untrusted)))

    def _read(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        ranks = self.ranks[sock]
        reader = self.readers[sock]
        try:
            frames = reader.feed(data)
            while frames:
                trusted = reader.trusted
                for kind, rank, payload in frames:
                    if kind == wire.HELLO:
                        if wire.hello_fields(payload, self.token) is None:
                            self._drop(sock)  # not one of the job's: nothing goes upstream
                            return
                        reader.trust()
                        self.untrusted.pop(sock, None)
                    if kind in (wire.BYE, wire.BYE_N):
                        ranks.discard(rank)
                        self.finished.add(rank)
                    else:
                        ranks.add(rank)
                    self.out += wire.frame(kind, rank, payload)
                # Just trusted: what came after its HELLO was held back until now.
                frames = reader.feed(b"") if reader.trusted and not trusted else []
        except ValueError:
            self._drop(sock)  # not one of the job's ranks: nothing of it goes upstream
            return
        if len(self.out) >= MAX_BUFFER:
            self._send()

    def _drop(self, sock: socket.socket) -> None:
        for rank in self.ranks.pop(sock, ()):
            self.out += wire.frame(wire.GONE, rank)
            self.finished.add(rank)
        self.readers.pop(sock, None)
        self.untrusted.pop(sock, None)
        self.sel.unregister(sock)
        sock.close()

    def _send(self) -> None:
        if self.out:
            self.upstream.sendall(self.out)
            self.out.clear()

    def finish(self, timeout: float) -> None:
        """Forward the node's ranks until each said goodbye (at most ``timeout`` s)."""
        self._stop_at = time.monotonic() + timeout
        self._thread.join(timeout + 5.0)
