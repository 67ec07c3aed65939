"""Which physical GPU does this process use? Pure logic, so NVML is only asked afterwards.

NVML numbers GPUs physically and ignores ``CUDA_VISIBLE_DEVICES``, while CUDA (and so the
training process) numbers only the visible ones. Sampling GPU ``local_rank`` through NVML
is therefore wrong whenever the scheduler has hidden some GPUs, which Slurm and Kubernetes
routinely do.
"""

from __future__ import annotations

__all__ = ["gpu_index_for", "visible_devices"]

# Values that schedulers write to mean "no GPU for this job" (Slurm/SGE use NoDevFiles).
_NO_DEVICE_VALUES = frozenset({"", "-1", "nodevfiles"})


def visible_devices(cuda_visible_devices: str, device_count: int | None = None) -> list[int | str]:
    """The devices a ``CUDA_VISIBLE_DEVICES`` value exposes, in CUDA's order.

    Entries are physical indices (``int``) or UUIDs (``"GPU-…"``, ``"MIG-…"``, returned as
    given). As CUDA does, the list ends at the first entry that is not valid: a negative or
    malformed number, an index not below ``device_count`` (the physical count, when known),
    or a repeated device.

    Example::

        >>> visible_devices("2,3")
        [2, 3]
        >>> visible_devices("0,-1,1")
        [0]
    """
    if cuda_visible_devices.strip().lower() in _NO_DEVICE_VALUES:
        return []
    devices: list[int | str] = []
    for raw in cuda_visible_devices.split(","):
        entry = raw.strip()
        device: int | str
        if entry[:4].upper() in ("GPU-", "MIG-"):
            device = entry
        else:
            try:
                device = int(entry, 10)
            except ValueError:
                break
            if device < 0 or (device_count is not None and device >= device_count):
                break
        if device in devices:
            break
        devices.append(device)
    return devices


def gpu_index_for(
    local_rank: int, cuda_visible_devices: str | None, device_count: int | None = None
) -> int | str | None:
    """The NVML device a process with this local rank uses, or ``None`` if it has no GPU.

    - ``CUDA_VISIBLE_DEVICES`` unset: the physical GPU ``local_rank``.
    - set to indices: the ``local_rank``-th listed index (``"2,3"``, local rank 1 -> ``3``).
    - set to UUIDs (``GPU-…`` or ``MIG-…``): that UUID string, for
      ``nvmlDeviceGetHandleByUUID``. A shortened UUID prefix, which CUDA accepts, is returned
      as given; the caller matches it against NVML's UUIDs.
    - ``""``, ``"-1"``, ``"NoDevFiles"``, or a list with no valid entry: ``None``.

    ``device_count`` is NVML's (physical) device count when known; ``0`` means no GPU.
    A local rank beyond the GPUs it can see wraps around (``local_rank % count``): more
    processes than GPUs on a node means they share, and ``torch.cuda.set_device(local_rank %
    torch.cuda.device_count())`` is how training scripts commonly choose, so wrapping names
    the GPU the process most likely uses rather than failing the run over a metric.

    Example::

        >>> gpu_index_for(1, "2,3")
        3
        >>> gpu_index_for(1, None, device_count=8)
        1
        >>> gpu_index_for(0, "") is None
        True
    """
    if not isinstance(local_rank, int) or isinstance(local_rank, bool) or local_rank < 0:
        raise ValueError(f"local_rank must be a non-negative integer, got {local_rank!r}")
    if device_count is not None and device_count <= 0:
        return None
    if cuda_visible_devices is None:
        return local_rank if device_count is None else local_rank % device_count
    devices = visible_devices(cuda_visible_devices, device_count)
    if not devices:
        return None
    return devices[local_rank % len(devices)]
