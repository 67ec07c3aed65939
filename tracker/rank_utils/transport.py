"""The job's c10d store (the coordinator's rendezvous), and the gloo transport.

``job_store`` and ``horovod_store`` find or make the store every transport meets
through. The rest of this module is the ``TRACKER_RANK_TRANSPORT=gloo`` transport:
messages from every rank to the writer over a private gloo process group (a full mesh;
the default transport is plain sockets, ``wire.py``).

The group is built directly on the job's c10d store (under a key prefix of ours), not
with ``new_group``: ``new_group`` must be called by every rank at the same point of the
program as the script's own groups, which a background thread cannot promise, and it
needs the default group to exist already. A ``ProcessGroupGloo`` of our own needs only
the store, so it works before or after ``init_process_group``, beside an NCCL group
whose streams it never touches.

Point-to-point, not collectives: each rank sends when it has something, the writer
receives from whichever rank is ready. A rank that logs nothing sends nothing, a rank
that finishes says goodbye and leaves, and no rank ever waits for another to log.
A message is a header tensor ``[length, kind]`` followed by ``length`` payload bytes.
"""

from __future__ import annotations

import datetime
import os
import socket
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch

DATA, BYE = 0, 1
_TAG_HEADER, _TAG_BODY = 7301, 7302


class _Work(Protocol):
    def wait(self) -> bool: ...


class _PointToPoint(Protocol):
    """The point-to-point calls of a c10d ``Backend`` that ``GlooLink`` uses."""

    def send(self, tensors: list[torch.Tensor], dst_rank: int, tag: int) -> _Work: ...

    def recv(self, tensors: list[torch.Tensor], src_rank: int, tag: int) -> _Work: ...

    def recv_anysource(self, tensors: list[torch.Tensor], tag: int) -> _Work: ...


def job_store(world_size: int, timeout_s: float) -> Any | None:
    """The job's c10d store if one can be reached now, else None.

    Either the default group's store (after ``init_process_group``) or, under torchrun,
    the agent's store at MASTER_ADDR:MASTER_PORT, which exists before any group does.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from torch.distributed import distributed_c10d

        return distributed_c10d._get_default_store()
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true":
        addr, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if addr and port:
            return dist.TCPStore(
                addr,
                int(port),
                world_size,
                is_master=False,
                timeout=datetime.timedelta(seconds=timeout_s),
            )
    return None


def horovod_store(rank: int, world_size: int, timeout_s: float) -> Any:
    """A c10d store for a Horovod job: rank 0 serves it, its address goes out by broadcast."""
    import torch.distributed as dist

    hvd = _horovod()
    if rank == 0:
        server = dist.TCPStore(
            "0.0.0.0",
            0,
            world_size,
            is_master=True,
            timeout=datetime.timedelta(seconds=timeout_s),
            wait_for_workers=False,
        )
        address = (_reachable_address(), server.port)
        hvd.broadcast_object(address, root_rank=0, name="tracker.store")
        return server
    host, port = hvd.broadcast_object(None, root_rank=0, name="tracker.store")
    return dist.TCPStore(
        host, port, world_size, is_master=False, timeout=datetime.timedelta(seconds=timeout_s)
    )


def _horovod() -> Any:
    import sys

    for name in ("horovod.torch", "horovod.tensorflow", "horovod.keras"):
        module = sys.modules.get(name)
        if module is not None and module.is_initialized():
            return module
    raise RuntimeError("Horovod is not initialised: call hvd.init() before tracker.init_run")


def horovod_initialized() -> bool:
    try:
        _horovod()
    except RuntimeError:
        return False
    return True


def _reachable_address() -> str:
    # The address other hosts reach us on: the one our route to the rendezvous uses.
    target = os.environ.get("HOROVOD_GLOO_RENDEZVOUS_ADDR") or "8.8.8.8"
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((target, 1))  # UDP connect sends nothing
            return s.getsockname()[0]
    except OSError:
        return socket.gethostname()


class GlooLink:
    """A private gloo group over ``store``; ranks send to 0, rank 0 receives from any."""

    def __init__(self, store: Any, prefix: str, rank: int, world_size: int, timeout_s: float):
        import torch
        import torch.distributed as dist

        self._torch = torch
        self.rank = rank
        self.world_size = world_size
        # torch's stubs leave send, recv and recv_anysource off Backend (the C++ binding
        # has them; ProcessGroupGloo inherits them), so its stub type lacks them.
        self._pg: _PointToPoint = dist.ProcessGroupGloo(  # type: ignore[assignment]
            dist.PrefixStore(prefix, store),
            rank,
            world_size,
            datetime.timedelta(seconds=timeout_s),
        )
        self._send_lock = threading.Lock()

    def send(self, kind: int, payload: bytes) -> None:
        """Send one message to rank 0; blocks until rank 0 has taken it (or times out)."""
        torch = self._torch
        # The sender's rank travels in the header: asking the receive for its source
        # (Work.source_rank) is deprecated in torch and warns in every job.
        header = torch.tensor([len(payload), kind, self.rank], dtype=torch.int64)
        with self._send_lock:
            self._pg.send([header], 0, _TAG_HEADER).wait()
            if payload:
                body = torch.frombuffer(bytearray(payload), dtype=torch.uint8)
                self._pg.send([body], 0, _TAG_BODY).wait()

    def receive(self) -> tuple[int, int, bytes]:
        """Rank 0: wait for the next message from any rank; returns (rank, kind, payload)."""
        torch = self._torch
        header = torch.zeros(3, dtype=torch.int64)
        work = self._pg.recv_anysource([header], _TAG_HEADER)
        work.wait()
        length, kind, source = int(header[0]), int(header[1]), int(header[2])
        payload = b""
        if length:
            body = torch.empty(length, dtype=torch.uint8)
            self._pg.recv([body], source, _TAG_BODY).wait()
            payload = body.numpy().tobytes()
        return source, kind, payload
