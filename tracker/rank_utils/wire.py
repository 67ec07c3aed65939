"""The coordinator's wire: framed messages over plain sockets, and where to find the peers.

Every message between ranks, node leaders and the writer's ingest is one frame::

    u32 LE payload length | u8 kind | u32 LE rank | payload

``rank`` is the rank the frame is about (a leader forwards its ranks' frames as they
are, so the ingest always knows whose they are). Kinds:

- ``HELLO``: a rank joins; payload JSON ``{"host", "pid", "node", "token", "sender"}``.
  A connection must open with a HELLO (at most ``MAX_HELLO`` bytes) carrying the token
  the ingest published with its address in the job's store (the ports are reachable
  from the network); any other opening is dropped before more of it is read.
- ``DATA``: a rank's operations since its last flush; payload the pickle of a list of
  journal operations (``coordinator.shipment``), read back with ``journal.decode``,
  which refuses anything but builtin values.
- ``BYE``: the rank's last operations (its close among them); it leaves.
- ``GONE``: from a leader: the rank's connection ended without ``BYE`` (it died).
- ``DATA_N``, ``BYE_N``: ``DATA`` and ``BYE`` numbered: the payload opens with ``SEQ``
  (the sender's id from its HELLO, the frame's number from 0), so that frames lost on
  the way (a leader that died with some in hand) are counted where they went missing.

A rank sends nothing when it logs nothing; nothing is ever sent back, so no rank waits
on another. Nothing here imports torch: the scale benchmark's synthetic ranks speak
this protocol without it.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import socket
import struct
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

HELLO, DATA, BYE, GONE, DATA_N, BYE_N = 1, 2, 3, 4, 5, 6
KIND_NAMES = {HELLO: "hello", DATA: "data", BYE: "bye", GONE: "gone", DATA_N: "data", BYE_N: "bye"}
HEADER = struct.Struct("<IBI")
SEQ = struct.Struct("<QI")  # sender id, frame number
# A frame larger than this is a broken peer, not a rank's half second of metrics.
MAX_FRAME = 1 << 30
# Until a connection's HELLO carried the job's token, it may hold no more than this: the
# ports are reachable from the network, and a stranger must not make us buffer a frame.
MAX_HELLO = 4096
# Connections accepted that have not said HELLO yet, at most; the oldest goes first.
MAX_UNTRUSTED = 64
# How long a connection may take to say HELLO (a rank sends it as it connects).
HELLO_TIMEOUT_S = 10.0


def frame(kind: int, rank: int, payload: bytes = b"") -> bytes:
    """One frame, ready to send."""
    return HEADER.pack(len(payload), kind, rank) + payload


def hello(rank: int, node: str, token: str, sender: str | None = None) -> bytes:
    """A rank's first frame; ``token`` is the one the ingest published with its address.
    ``sender`` tells one opening of the rank's run from another (a run opened again)."""
    who = {"host": socket.gethostname(), "pid": os.getpid(), "node": node, "token": token}
    if sender is not None:
        who["sender"] = sender
    return frame(HELLO, rank, json.dumps(who).encode())


def hello_fields(payload: bytes, token: str) -> dict[str, Any] | None:
    """What a HELLO says about its rank, or None when it lacks the job's token: the
    ports are reachable from the network, and only the job's ranks may write its run."""
    try:
        who = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(who, dict) or not hmac.compare_digest(str(who.get("token")), token):
        return None
    return who


class FrameReader:
    """Cuts a byte stream into frames; ``feed`` returns the frames completed by ``data``.

    With ``untrusted`` (a connection just accepted) the stream must open with a HELLO of
    at most ``MAX_HELLO`` bytes, judged from its header alone, and ``feed`` returns that
    one frame only: the caller checks its token and calls ``trust`` (then ``feed(b"")``
    for what followed it) before any larger frame is taken in.
    """

    __slots__ = ("_buf", "_untrusted")

    def __init__(self, untrusted: bool = False) -> None:
        self._buf = bytearray()
        self._untrusted = untrusted

    def trust(self) -> None:
        self._untrusted = False

    @property
    def trusted(self) -> bool:
        return not self._untrusted

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buf = self._buf
        buf += data
        out: list[tuple[int, int, bytes]] = []
        pos = 0
        size = len(buf)
        while size - pos >= HEADER.size:
            length, kind, rank = HEADER.unpack_from(buf, pos)
            if self._untrusted and (kind != HELLO or length > MAX_HELLO):
                raise ValueError("a connection that does not open with a HELLO: not a peer")
            if length > MAX_FRAME:
                raise ValueError(f"frame of {length} bytes: not a tracker peer")
            end = pos + HEADER.size + length
            if end > size:
                break
            out.append((kind, rank, bytes(buf[pos + HEADER.size : end])))
            pos = end
            if self._untrusted:
                break
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buf)


def frames_of(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The frames of a whole buffer (for tests and tools)."""
    yield from FrameReader().feed(data)


# -- addresses ---------------------------------------------------------------------------


def unlink_local(name: str) -> None:
    """Remove a path-bound socket's file (an abstract name leaves none)."""
    if not name.startswith("\0"):
        with contextlib.suppress(OSError):
            os.unlink(name)


def local_name(tag: str) -> str:
    """A fresh node-local socket name: abstract on Linux (nothing left on disk when the
    process dies), a path in the temporary directory elsewhere."""
    unique = f"tracker-{tag}-{os.getpid()}-{os.urandom(4).hex()}"
    if sys.platform.startswith("linux"):
        return "\0" + unique
    return os.path.join(tempfile.gettempdir(), unique + ".sock")


def listen_local(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(name)
    sock.listen(1024)
    return sock


def connect_local(name: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(name)
    except BaseException:
        sock.close()
        raise
    sock.settimeout(None)
    return sock


def listen_tcp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))
    sock.listen(1024)
    return sock


def connect_tcp(hosts: list[str], port: int, timeout: float = 10.0) -> socket.socket:
    """A connection to the first of ``hosts`` that answers on ``port``."""
    error: OSError | None = None
    for host in hosts:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            error = exc
            continue
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise error or OSError(f"no address to reach port {port} on")


def hosts_for(address: dict[str, Any]) -> list[str]:
    """The hosts of ``address`` (a listener's, as ``reachable_hosts`` published them)
    worth trying from this host: loopback only where the listener is on this very host,
    or another node would reach whatever listens on that port on its own host."""
    hosts = list(address.get("hosts") or [])
    if str(address.get("node", "")).partition("|")[0] == socket.gethostname():
        return hosts
    return [h for h in hosts if not _loopback(h)]


def _loopback(host: str) -> bool:
    return host == "localhost" or host.startswith("127.") or host == "::1"


def reachable_hosts() -> list[str]:
    """Addresses other nodes may reach this one on, best first: the one our route to the
    job's rendezvous uses, then the host name, then loopback (a one-node job)."""
    hosts: list[str] = []
    target = (
        os.environ.get("MASTER_ADDR")
        or os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR")
        or os.environ.get("SLURM_LAUNCH_NODE_IPADDR")
    )
    if target:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((target, 1))  # UDP connect sends nothing
                hosts.append(s.getsockname()[0])
        except OSError:
            pass
    hosts.append(socket.gethostname())
    hosts.append("127.0.0.1")
    return list(dict.fromkeys(hosts))


def node_key(node_rank: int | None) -> str:
    """The node a rank shares a leader with: its host, and the launcher's node index
    where it gives one (two agents on one host are two nodes)."""
    return f"{socket.gethostname()}|{'-' if node_rank is None else node_rank}"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
