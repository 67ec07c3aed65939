"""Rank questions, answered in one place: which process is this, and which one writes.

``detect_rank`` reads the launcher's environment (or an engine the script already
started); the coordinator turns the answer into one run per job: the writer rank
(global rank 0) opens the run, every other rank gets a ``Run`` whose operations are
shipped to the writer's ingest process over plain sockets, through a leader per node
(``wire.py``, ``leader.py``, ``ingest.py``; ``transport.py`` finds the job's store).
Integrations ask here; they never read RANK themselves.
"""

from __future__ import annotations

from .devices import gpu_index_for
from .launchers import RankInfo, detect_rank

__all__ = ["RankInfo", "detect_rank", "gpu_index_for", "is_writer_rank"]


def is_writer_rank(rank: int | None = None, world_size: int | None = None) -> bool:
    """True on the process that writes the run (global rank 0), from detect_rank."""
    return detect_rank(rank=rank, world_size=world_size).rank == 0
