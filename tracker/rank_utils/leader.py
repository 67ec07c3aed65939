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

    def __init__(self, upstream: socket.socket, token: str) -> None:
        self.token = token
        self.name = wire.local_name("leader")
        self.listener = wire.listen_local(self.name)
        self.listener.setblocking(False)
        self.upstream = upstream
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.listener, selectors.EVENT_READ, None)
        self.out = bytearray()
        self.ranks: dict[socket.socket, set[int]] = {}
        self.trusted: set[socket.socket] = set()  # said HELLO with the job's token
        self.readers: dict[socket.socket, wire.FrameReader] = {}
        self.error: BaseException | None = None
        self._stop_at: float | None = None
        self._thread = threading.Thread(target=self._loop, name="tracker-leader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last = time.monotonic()
        try:
            while True:
                for key, _ in self.sel.select(INTERVAL_S):
                    if key.data is None:
                        self._accept()
                    else:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                now = time.monotonic()
                if self.out and (now - last >= INTERVAL_S or len(self.out) >= MAX_BUFFER):
                    self._send()
                    last = now
                if self._stop_at is not None and (not self.ranks or now >= self._stop_at):
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

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        self.ranks[sock] = set()
        self.readers[sock] = wire.FrameReader()
        self.sel.register(sock, selectors.EVENT_READ, "rank")

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
        try:
            frames = self.readers[sock].feed(data)
        except ValueError:
            self._drop(sock)
            return
        for kind, rank, payload in frames:
            if kind == wire.HELLO and wire.hello_fields(payload, self.token) is not None:
                self.trusted.add(sock)
            elif sock not in self.trusted:
                self._drop(sock)  # not one of the job's ranks: nothing of it goes upstream
                return
            if kind == wire.BYE:
                ranks.discard(rank)
            else:
                ranks.add(rank)
            self.out += wire.frame(kind, rank, payload)
        if len(self.out) >= MAX_BUFFER:
            self._send()

    def _drop(self, sock: socket.socket) -> None:
        for rank in self.ranks.pop(sock, ()):
            self.out += wire.frame(wire.GONE, rank)
        self.readers.pop(sock, None)
        self.trusted.discard(sock)
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
