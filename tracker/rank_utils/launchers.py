"""Which process of which job is this? Rank detection for every launcher tracker supports.

Each launcher has one small class whose ``detect(env)`` returns a :class:`RankInfo` when the
launcher's variables are present, ``None`` when they are not, and raises ``ValueError``
naming the variable when they are present but make no sense. :func:`detect_rank` puts them
in order. Nothing here imports torch, horovod or tensorflow, and nothing starts a process
group: an engine is only *asked* when the user's script has already imported and started it.

This module imports nothing from ``tracker.core`` so that it can be used (and tested) alone.
"""

from __future__ import annotations

import json
import os
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import ClassVar, Protocol

__all__ = [
    "ENVIRONMENTS",
    "HorovodEnvironment",
    "MPICHEnvironment",
    "OpenMPIEnvironment",
    "RankInfo",
    "SLURMEnvironment",
    "TFConfigEnvironment",
    "TorchElasticEnvironment",
    "TorchEnvEnvironment",
    "detect_rank",
]


@dataclass(frozen=True, slots=True)
class RankInfo:
    """Where this process sits in its job.

    ``job_id`` is shared by every process of one job and survives an elastic restart of that
    job (``None`` when the launcher offers no such id: the processes must then agree on one
    themselves). It is prefixed with the launcher (``"slurm:4242.0"``) so that ids from
    different launchers never collide. ``node_rank`` is ``None`` where the launcher does not
    say which node this is (Open MPI, MPICH) and guessing could be wrong.

    Example::

        >>> info = detect_rank(env={"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
        ...                         "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1",
        ...                         "TORCHELASTIC_RUN_ID": "job7"})
        >>> info.rank, info.node_rank, info.job_id, info.source
        (3, 1, 'torchelastic:job7', 'torchelastic')
    """

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    node_rank: int | None
    job_id: str | None
    source: str

    def __post_init__(self) -> None:
        _validate(
            self.rank, self.world_size, self.local_rank, self.local_world_size, self.node_rank
        )

    @property
    def distributed(self) -> bool:
        """True when the job has more than one process."""
        return self.world_size > 1


# Names used in error messages when a value came from arguments or RankInfo itself.
_FIELD_NAMES = ("rank", "world_size", "local_rank", "local_world_size", "node_rank")


def _validate(
    rank: int,
    world_size: int,
    local_rank: int,
    local_world_size: int,
    node_rank: int | None,
    names: tuple[str, str, str, str, str] = _FIELD_NAMES,
) -> None:
    r_name, w_name, lr_name, lw_name, n_name = names
    values = (rank, world_size, local_rank, local_world_size, node_rank)
    for position, (value, name) in enumerate(zip(values, names, strict=True)):
        if value is None and position == 4:  # only the node may be unknown
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        if value < 0:
            raise ValueError(f"{name} must not be negative, got {value}")
    if world_size < 1:
        raise ValueError(f"{w_name} must be at least 1, got {world_size}")
    if rank >= world_size:
        raise ValueError(f"{r_name}={rank} is not below {w_name}={world_size}")
    if local_world_size < 1:
        raise ValueError(f"{lw_name} must be at least 1, got {local_world_size}")
    if local_world_size > world_size:
        raise ValueError(f"{lw_name}={local_world_size} exceeds {w_name}={world_size}")
    if local_rank >= local_world_size:
        raise ValueError(f"{lr_name}={local_rank} is not below {lw_name}={local_world_size}")


SINGLE = RankInfo(0, 0, 1, 1, 0, None, "single")


def _get(env: Mapping[str, str], name: str) -> str | None:
    # Shells and job templates often export a variable as empty; that means "not set".
    value = env.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def _int(env: Mapping[str, str], name: str) -> int:
    raw = env[name]
    try:
        return int(raw.strip(), 10)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


def _first(env: Mapping[str, str], *names: str) -> str | None:
    """The first of ``names`` that is set, so error messages can name the one actually read."""
    for name in names:
        if _get(env, name) is not None:
            return name
    return None


def _build(
    source: str,
    job_id: str | None,
    *,
    rank: tuple[int, str],
    world_size: tuple[int, str],
    local_rank: tuple[int, str],
    local_world_size: tuple[int, str],
    node_rank: tuple[int | None, str],
) -> RankInfo:
    _validate(
        rank[0],
        world_size[0],
        local_rank[0],
        local_world_size[0],
        node_rank[0],
        names=(rank[1], world_size[1], local_rank[1], local_world_size[1], node_rank[1]),
    )
    return RankInfo(
        rank=rank[0],
        local_rank=local_rank[0],
        world_size=world_size[0],
        local_world_size=local_world_size[0],
        node_rank=node_rank[0],
        job_id=job_id,
        source=source,
    )


class TorchElasticEnvironment:
    """``torchrun`` / ``torch.distributed.run``: recognised by ``TORCHELASTIC_RUN_ID``.

    ``GROUP_RANK`` is the node (agent) index. torchrun's default run id is the literal
    ``"none"`` (static rendezvous without ``--rdzv-id``), which every such job shares, so it
    is not taken as a job id.

    Example::

        >>> TorchElasticEnvironment.detect({"TORCHELASTIC_RUN_ID": "none", "RANK": "1",
        ...                                 "WORLD_SIZE": "2"}).job_id is None
        True
    """

    name: ClassVar[str] = "torchelastic"

    @staticmethod
    def detect(env: Mapping[str, str]) -> RankInfo | None:
        run_id = _get(env, "TORCHELASTIC_RUN_ID")
        if run_id is None:
            return None
        if _get(env, "RANK") is None or _get(env, "WORLD_SIZE") is None:
            raise ValueError("TORCHELASTIC_RUN_ID is set but RANK or WORLD_SIZE is missing")
        job_id = None if run_id.lower() == "none" else f"torchelastic:{run_id}"
        return _torch_env(env, TorchElasticEnvironment.name, job_id)


class TorchEnvEnvironment:
    """A plain ``torch.distributed`` ``env://`` launch: ``RANK`` and ``WORLD_SIZE`` only.

    Without ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` all processes are assumed to share one
    node (local rank = rank) unless an ``srun`` step agreeing on rank and world size says
    otherwise; other multi-node launches of this kind should set both, or pass ``local_rank=``.

    Example::

        >>> TorchEnvEnvironment.detect({"RANK": "1", "WORLD_SIZE": "2"}).local_rank
        1
    """

    name: ClassVar[str] = "torch"

    @staticmethod
    def detect(env: Mapping[str, str]) -> RankInfo | None:
        if _get(env, "RANK") is None or _get(env, "WORLD_SIZE") is None:
            return None
        return _torch_env(env, TorchEnvEnvironment.name, None)


def _torch_env(env: Mapping[str, str], source: str, job_id: str | None) -> RankInfo:
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    local_world: tuple[int, str] = (world, "WORLD_SIZE")
    if _get(env, "LOCAL_WORLD_SIZE") is not None:
        local_world = (_int(env, "LOCAL_WORLD_SIZE"), "LOCAL_WORLD_SIZE")
    if _get(env, "LOCAL_RANK") is not None:
        local: tuple[int, str] = (_int(env, "LOCAL_RANK"), "LOCAL_RANK")
    elif _get(env, "LOCAL_WORLD_SIZE") is not None and local_world[0] > 0:
        local = (rank % local_world[0], "RANK")
    else:
        local = (rank, "RANK")
    node: tuple[int | None, str] = (None, "GROUP_RANK")
    if _get(env, "GROUP_RANK") is not None:
        node = (_int(env, "GROUP_RANK"), "GROUP_RANK")
    return _build(
        source,
        job_id,
        rank=(rank, "RANK"),
        world_size=(world, "WORLD_SIZE"),
        local_rank=local,
        local_world_size=local_world,
        node_rank=node,
    )


class SLURMEnvironment:
    """A task started by ``srun`` (one process per task).

    Only a job *step* counts. A batch script run directly by ``sbatch`` also sees
    ``SLURM_PROCID=0`` and ``SLURM_NTASKS=N`` although it is one process; believing them would
    make it wait for N-1 ranks that never come. So ``SLURM_STEP_ID`` must be set and be a real
    step (the batch, extern and interactive steps use reserved ids near 2**32). As in
    Lightning, a job named ``bash`` or ``interactive`` is an interactive shell, whose separate
    commands are separate jobs. World size is the step's task count, which can be smaller
    than the allocation's. The job id includes the step, so two ``srun`` steps of one batch
    script are two jobs, while a requeued job (same id, steps numbered again) continues.

    Example::

        >>> SLURMEnvironment.detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}) is None  # sbatch
        True
    """

    name: ClassVar[str] = "slurm"
    # Slurm reserves step ids from 0xFFFFFFF0 up for batch/extern/interactive pseudo steps.
    _FIRST_RESERVED_STEP: ClassVar[int] = 0xFFFFFFF0

    @staticmethod
    def detect(env: Mapping[str, str]) -> RankInfo | None:
        step_var = _first(env, "SLURM_STEP_ID", "SLURM_STEPID")
        if _get(env, "SLURM_PROCID") is None or step_var is None:
            return None
        if _get(env, "SLURM_JOB_NAME") in ("bash", "interactive"):
            return None
        step = _int(env, step_var)
        if step >= SLURMEnvironment._FIRST_RESERVED_STEP:
            return None
        world_var = _first(env, "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS", "SLURM_NPROCS")
        if world_var is None:
            raise ValueError("SLURM_PROCID is set but SLURM_STEP_NUM_TASKS/SLURM_NTASKS is not")
        rank, world = _int(env, "SLURM_PROCID"), _int(env, world_var)
        node = _int(env, "SLURM_NODEID") if _get(env, "SLURM_NODEID") is not None else 0
        local = _int(env, "SLURM_LOCALID") if _get(env, "SLURM_LOCALID") is not None else 0
        local_world: tuple[int, str] = (world, world_var)
        per_node_var = _first(env, "SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE")
        if per_node_var is not None:
            counts = _expand_tasks_per_node(env[per_node_var], per_node_var)
            if node < len(counts):
                local_world = (counts[node], per_node_var)
        elif _get(env, "SLURM_NTASKS_PER_NODE") is not None:
            local_world = (_int(env, "SLURM_NTASKS_PER_NODE"), "SLURM_NTASKS_PER_NODE")
        job = _get(env, "SLURM_JOB_ID") or _get(env, "SLURM_JOBID")
        return _build(
            SLURMEnvironment.name,
            f"slurm:{job}.{step}" if job is not None else None,
            rank=(rank, "SLURM_PROCID"),
            world_size=(world, world_var),
            local_rank=(local, "SLURM_LOCALID"),
            local_world_size=local_world,
            node_rank=(node, "SLURM_NODEID"),
        )


_TASKS_PER_NODE = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


def _expand_tasks_per_node(value: str, name: str) -> list[int]:
    """Slurm's compressed per-node counts, ``"4(x2),3"`` -> ``[4, 4, 3]``."""
    counts: list[int] = []
    for part in value.strip().split(","):
        match = _TASKS_PER_NODE.match(part.strip())
        if match is None:
            raise ValueError(f"{name}={value!r} is not a Slurm tasks-per-node list")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


class OpenMPIEnvironment:
    """``mpirun``/``mpiexec`` from Open MPI.

    ``OMPI_COMM_WORLD_NODE_RANK`` is deliberately not used: despite its name it is a
    per-node process index across all jobs, not the node's index, so ``node_rank`` is
    ``None``. The job id is the runtime's job id (Open MPI 4: ``OMPI_MCA_ess_base_jobid``,
    older: ``OMPI_MCA_orte_ess_jobid``; Open MPI 5: the PMIx namespace).

    Example::

        >>> OpenMPIEnvironment.detect({"OMPI_COMM_WORLD_RANK": "1",
        ...                            "OMPI_COMM_WORLD_SIZE": "2"}).rank
        1
    """

    name: ClassVar[str] = "openmpi"

    @staticmethod
    def detect(env: Mapping[str, str]) -> RankInfo | None:
        if _get(env, "OMPI_COMM_WORLD_RANK") is None:
            return None
        if _get(env, "OMPI_COMM_WORLD_SIZE") is None:
            raise ValueError("OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not")
        rank = _int(env, "OMPI_COMM_WORLD_RANK")
        world = _int(env, "OMPI_COMM_WORLD_SIZE")
        local, local_world = _local_pair(
            env, rank, world, "OMPI_COMM_WORLD_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_SIZE"
        )
        job_var = _first(
            env, "OMPI_MCA_ess_base_jobid", "OMPI_MCA_orte_ess_jobid", "PMIX_NAMESPACE"
        )
        return _build(
            OpenMPIEnvironment.name,
            f"openmpi:{env[job_var].strip()}" if job_var is not None else None,
            rank=(rank, "OMPI_COMM_WORLD_RANK"),
            world_size=(world, "OMPI_COMM_WORLD_SIZE"),
            local_rank=local,
            local_world_size=local_world,
            node_rank=(None, "node rank"),
        )


class MPICHEnvironment:
    """MPICH / Intel MPI (Hydra) and other PMI launchers: ``PMI_RANK`` and ``PMI_SIZE``.

    Local ranks come from Hydra's ``MPI_LOCALRANKID``/``MPI_LOCALNRANKS``, or
    ``PMI_LOCAL_RANK``/``PMI_LOCAL_SIZE`` where a launcher sets those. Hydra gives no job id
    in the environment; ``PMI_JOBID`` (Slurm's PMI2) or ``PMIX_NAMESPACE`` is used if set.

    Example::

        >>> MPICHEnvironment.detect({"PMI_RANK": "1", "PMI_SIZE": "4"}).world_size
        4
    """

    name: ClassVar[str] = "mpich"

    @staticmethod
    def detect(env: Mapping[str, str]) -> RankInfo | None:
        if _get(env, "PMI_RANK") is None:
            return None
        if _get(env, "PMI_SIZE") is None:
            raise ValueError("PMI_RANK is set but PMI_SIZE is not")
        rank, world = _int(env, "PMI_RANK"), _int(env, "PMI_SIZE")
        local_var = _first(env, "MPI_LOCALRANKID", "PMI_LOCAL_RANK")
        size_var = _first(env, "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE")
        local, local_world = _local_pair(
            env, rank, world, local_var or "MPI_LOCALRANKID", size_var or "MPI_LOCALNRANKS"
        )
        job_var = _first(env, "PMI_JOBID", "PMIX_NAMESPACE")
        return _build(
            MPICHEnvironment.name,
            f"mpich:{env[job_var].strip()}" if job_var is not None else None,
            rank=(rank, "PMI_RANK"),
            world_size=(world, "PMI_SIZE"),
            local_rank=local,
            local_world_size=local_world,
            node_rank=(None, "node rank"),
        )


def _local_pair(
    env: Mapping[str, str], rank: int, world: int, local_var: str, size_var: str
) -> tuple[tuple[int, str], tuple[int, str]]:
    # A missing local rank means the launcher did not say; the single-node guess is the only
    # one that is right for the common case, and an outer launcher that agrees can fill it in.
    local = (rank, local_var)
    if _get(env, local_var) is not None:
        local = (_int(env, local_var), local_var)
    if _get(env, size_var) is not None:
        return local, (_int(env, size_var), size_var)
    return local, (world, size_var)


class HorovodEnvironment:
    """``horovodrun`` with Gloo: the ``HOROVOD_*`` variables it sets for each worker.

    ``HOROVOD_CROSS_RANK`` is the node index. There is no job id: the rendezvous address and
    port are the only shared values, and a later job from the same host can get the same
    port, so using them would merge two jobs into one run. (``horovodrun`` with MPI sets no
    ``HOROVOD_RANK``; the MPI variables describe those workers.) In elastic mode these
    variables are the *initial* ranks; once ``hvd.init()`` has run, :func:`detect_rank` asks
    Horovod itself.

    Example::

        >>> HorovodEnvironment.detect({"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2",
        ...                            "HOROVOD_CROSS_RANK": "1"}).node_rank
        1
    """

    name: ClassVar[str] = "horovod"

    @staticmethod
    def detect(env: Mapping[str, str]) -> RankInfo | None:
        if _get(env, "HOROVOD_RANK") is None:
            return None
        if _get(env, "HOROVOD_SIZE") is None:
            raise ValueError("HOROVOD_RANK is set but HOROVOD_SIZE is not")
        rank, world = _int(env, "HOROVOD_RANK"), _int(env, "HOROVOD_SIZE")
        local, local_world = _local_pair(
            env, rank, world, "HOROVOD_LOCAL_RANK", "HOROVOD_LOCAL_SIZE"
        )
        node: tuple[int | None, str] = (None, "HOROVOD_CROSS_RANK")
        if _get(env, "HOROVOD_CROSS_RANK") is not None:
            node = (_int(env, "HOROVOD_CROSS_RANK"), "HOROVOD_CROSS_RANK")
        return _build(
            HorovodEnvironment.name,
            None,
            rank=(rank, "HOROVOD_RANK"),
            world_size=(world, "HOROVOD_SIZE"),
            local_rank=local,
            local_world_size=local_world,
            node_rank=node,
        )


class TFConfigEnvironment:
    """TensorFlow's ``TF_CONFIG`` JSON (``cluster`` plus this process's ``task``).

    Training ranks are the chief (``"chief"``, or the older ``"master"``) followed by the
    workers in index order, so the chief is rank 0 and ``world_size`` counts chief and
    workers. With ``MultiWorkerMirroredStrategy`` every one of them runs the training loop.
    Two kinds of task are *not* training ranks and get ``None`` here (they then count as
    separate single processes): ``"ps"`` and ``"evaluator"`` tasks always, and, when the
    cluster has parameter servers (``ParameterServerStrategy``), the workers too, because
    there only the chief runs the user's loop and the workers just serve; counting them
    would make the chief wait for ranks that never call ``init_run``. Processes sharing a
    host (the part of the address before the port) get local ranks in rank order, and
    ``node_rank`` numbers the hosts in order of their first rank. TF_CONFIG has no job id.

    Example::

        >>> TFConfigEnvironment.detect({"TF_CONFIG": '{"cluster": {"chief": ["a:1"], '
        ...     '"worker": ["b:1"]}, "task": {"type": "worker", "index": 0}}'}).rank
        1
    """

    name: ClassVar[str] = "tf_config"

    @staticmethod
    def detect(env: Mapping[str, str]) -> RankInfo | None:
        raw = _get(env, "TF_CONFIG")
        if raw is None:
            return None
        try:
            config = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"TF_CONFIG is not valid JSON: {exc}") from None
        if not isinstance(config, dict):
            raise ValueError("TF_CONFIG must be a JSON object")
        cluster = config.get("cluster") or {}
        task = config.get("task") or {}
        if not isinstance(cluster, dict) or not isinstance(task, dict):
            raise ValueError("TF_CONFIG 'cluster' and 'task' must be JSON objects")
        if not cluster and not task:
            return None
        chiefs = _addresses(cluster, "chief") or _addresses(cluster, "master")
        workers = _addresses(cluster, "worker")
        kind = task.get("type")
        if not isinstance(kind, str):
            raise ValueError(f"TF_CONFIG task type must be a string, got {kind!r}")
        index = task.get("index", 0)
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            raise ValueError(f"TF_CONFIG task index must be a non-negative integer, got {index!r}")
        training = chiefs if _addresses(cluster, "ps") else chiefs + workers
        if kind in ("chief", "master"):
            members, offset = chiefs, 0
        elif kind == "worker" and not _addresses(cluster, "ps"):
            members, offset = workers, len(chiefs)
        else:
            return None
        if index >= len(members):
            raise ValueError(
                f"TF_CONFIG task index {index} is out of range: cluster has "
                f"{len(members)} {kind!r} task(s)"
            )
        rank = offset + index
        hosts = [address.rsplit(":", 1)[0] for address in training]
        host = hosts[rank]
        return _build(
            TFConfigEnvironment.name,
            None,
            rank=(rank, "TF_CONFIG task index"),
            world_size=(len(training), "TF_CONFIG cluster size"),
            local_rank=(hosts[:rank].count(host), "TF_CONFIG local rank"),
            local_world_size=(hosts.count(host), "TF_CONFIG local size"),
            node_rank=(list(dict.fromkeys(hosts)).index(host), "TF_CONFIG node rank"),
        )


def _addresses(cluster: dict, kind: str) -> list[str]:
    tasks = cluster.get(kind) or []
    # TF also accepts {"index": "address"} for sparse clusters; order by index.
    if isinstance(tasks, dict):
        tasks = [tasks[k] for k in sorted(tasks, key=int)]
    if not isinstance(tasks, list) or not all(isinstance(t, str) for t in tasks):
        raise ValueError(f"TF_CONFIG cluster {kind!r} must be a list of 'host:port' strings")
    return tasks


# The order in which environments are asked; the first that recognises the process wins.
#
# Launchers nest: torchrun is commonly started by srun or mpirun (one agent per node), and
# mpirun/mpiexec.hydra inside a Slurm allocation start their per-node daemons with srun. A
# worker then inherits the *outer* launcher's variables too, but those describe the agent or
# daemon (SLURM_PROCID = node index, SLURM_STEP_NUM_TASKS = number of nodes), not the worker.
# So the innermost launcher -- the one that started this very process -- must win:
#   1. torchrun (TORCHELASTIC_RUN_ID): never the outer one of anything we know.
#   2. plain env:// (RANK/WORLD_SIZE): set per process by a script or operator for exactly
#      this process; a torchrun-free launch under srun usually copies SLURM's values anyway.
#   3. Horovod (HOROVOD_RANK): horovodrun --gloo spawns the workers itself, often inside a
#      Slurm or MPI allocation.
#   4. Open MPI, then 5. MPICH/PMI: mpirun under Slurm, see above. Open MPI before PMI because
#      its variables are specific to its runtime, while PMI_* may also be set by srun's PMI2.
#   6. Slurm: the outermost launcher of all, and the scheduler's values are never stale.
#   7. TF_CONFIG last: it is written by hand or by an operator and easily left over from an
#      earlier shell, so any launcher-set variable beats it.
class Environment(Protocol):
    """What each launcher class above is: a ``name`` and a ``detect`` (a staticmethod)."""

    name: ClassVar[str]

    @staticmethod
    def detect(env: Mapping[str, str]) -> RankInfo | None: ...


ENVIRONMENTS: tuple[type[Environment], ...] = (
    TorchElasticEnvironment,
    TorchEnvEnvironment,
    HorovodEnvironment,
    OpenMPIEnvironment,
    MPICHEnvironment,
    SLURMEnvironment,
    TFConfigEnvironment,
)


def _from_environment(env: Mapping[str, str]) -> RankInfo | None:
    for environment in ENVIRONMENTS:
        info = environment.detect(env)
        if info is not None:
            return _complete(info, environment, env)
    if _get(env, "LOCAL_RANK") is not None or _get(env, "RANK") is not None:
        # LOCAL_RANK is per node: on a two-node job both nodes have a LOCAL_RANK 0, and taking
        # it for the global rank would make two writers. Without a world size, RANK alone is
        # just as unusable. Neither is trusted; the process is treated as a single process.
        warnings.warn(
            "LOCAL_RANK or RANK is set without WORLD_SIZE (and no launcher was recognised), "
            "so this process is treated as a single process (rank 0 of 1). If it is one rank "
            "of a distributed job, launch it with torchrun or pass rank= and world_size=.",
            RuntimeWarning,
            stacklevel=3,
        )
    return None


def _complete(info: RankInfo, chosen: type[Environment], env: Mapping[str, str]) -> RankInfo:
    """Fill what the chosen launcher does not know from the launchers around it.

    A job id from an outer launcher is shared by every process it started, so it serves for
    the inner job when the inner launcher has none (torchrun with a static rendezvous inside
    an srun step). Node and local facts are taken only from an environment that describes the
    very same process group, i.e. agrees on rank and world size.
    """
    for environment in ENVIRONMENTS:
        if info.job_id is not None and info.node_rank is not None:
            break
        if environment is chosen:
            continue
        try:
            other = environment.detect(env)
        except ValueError:
            continue
        if other is None:
            continue
        if info.job_id is None and other.job_id is not None:
            info = replace(info, job_id=other.job_id)
        same_group = (other.rank, other.world_size) == (info.rank, info.world_size)
        if same_group and info.node_rank is None and other.node_rank is not None:
            info = replace(
                info,
                node_rank=other.node_rank,
                local_rank=other.local_rank,
                local_world_size=other.local_world_size,
            )
    if info.node_rank is None and info.local_world_size == info.world_size:
        # Every process is on this node (or, where the launcher gave no local ranks, the
        # single-node guess already made for them), so there is only node 0.
        info = replace(info, node_rank=0)
    return info


def _from_engine(env: Mapping[str, str]) -> RankInfo | None:
    """Ask an engine the script has already started; never import or start one."""
    for name, probe in (("torch.distributed", _probe_torch), ("horovod", _probe_horovod)):
        try:
            found = probe()
        except Exception:  # noqa: BLE001 -- a half-working engine must not break logging
            found = None
        if found is None:
            continue
        rank, world, local_hint = found
        try:
            detected = _from_environment_quiet(env)
        except ValueError:
            detected = None
        if detected is not None and (detected.rank, detected.world_size) == (rank, world):
            return detected  # the engine confirms the launcher, whose name and ids say more
        # The launcher's job id is still shared by every process, whatever their ranks now.
        job_id = detected.job_id if detected is not None else None
        if local_hint is not None:
            local, local_world, node = local_hint
            return RankInfo(rank, local, world, local_world, node, job_id, name)
        # torch has no local rank of its own; assume one node, as env:// launches do.
        return RankInfo(rank, rank, world, world, 0, job_id, name)
    return None


def _from_environment_quiet(env: Mapping[str, str]) -> RankInfo | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _from_environment(env)


def _probe_torch() -> tuple[int, int, None] | None:
    # Looking in sys.modules instead of importing keeps torch out of processes that do not
    # use it; a process group cannot exist unless torch.distributed was imported.
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    return dist.get_rank(), dist.get_world_size(), None


_HOROVOD_MODULES = (
    "horovod.torch",
    "horovod.tensorflow",
    "horovod.tensorflow.keras",
    "horovod.keras",
    "horovod.mxnet",
)


def _probe_horovod() -> tuple[int, int, tuple[int, int, int]] | None:
    for module_name in _HOROVOD_MODULES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        is_initialized: Callable[[], bool] | None = getattr(module, "is_initialized", None)
        if is_initialized is None or not is_initialized():
            continue
        return (
            module.rank(),
            module.size(),
            (module.local_rank(), module.local_size(), module.cross_rank()),
        )
    return None


def detect_rank(
    rank: int | None = None,
    world_size: int | None = None,
    local_rank: int | None = None,
    env: Mapping[str, str] | None = None,
) -> RankInfo:
    """Find this process's rank, world size, local rank, node and job id.

    Precedence: explicit arguments, then an engine the script has already started
    (``torch.distributed`` process group or ``hvd.init()``; neither is imported or started
    here), then the launcher's environment variables in the order of :data:`ENVIRONMENTS`,
    then a single process. ``env`` defaults to ``os.environ``.

    Explicit ``rank`` and ``world_size`` together replace detection; the launcher's job id,
    local rank and node are kept only if it agrees on both. One of them alone overrides that
    field of the detected values. An explicit ``local_rank`` widens ``local_world_size`` if
    needed. Raises ``ValueError`` naming the variable or argument whose value is wrong.

    Example::

        >>> detect_rank(env={}).source
        'single'
        >>> detect_rank(rank=1, world_size=2, env={}).rank
        1
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    for value, name in ((rank, "rank"), (world_size, "world_size"), (local_rank, "local_rank")):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise ValueError(f"{name} must be an integer, got {value!r}")

    if rank is not None and world_size is not None:
        _validate(rank, world_size, 0, 1, None)
        try:
            detected = _from_engine(environ) or _from_environment_quiet(environ)
        except ValueError:
            detected = None  # passing values is how a caller gets past a broken environment
        if detected is not None and (detected.rank, detected.world_size) == (rank, world_size):
            info = replace(detected, source="explicit")
        else:
            # Nothing describes this group, so assume one node, as torch's env:// does.
            info = RankInfo(rank, rank, world_size, world_size, 0, None, "explicit")
    else:
        info = _from_engine(environ) or _from_environment(environ) or SINGLE
        if rank is not None or world_size is not None:
            return detect_rank(
                info.rank if rank is None else rank,
                info.world_size if world_size is None else world_size,
                local_rank,
                environ,
            )
    if local_rank is not None:
        if local_rank < 0:
            raise ValueError(f"local_rank must not be negative, got {local_rank}")
        info = replace(
            info,
            local_rank=local_rank,
            local_world_size=max(info.local_world_size, min(local_rank + 1, info.world_size)),
        )
        if local_rank >= info.local_world_size:
            raise ValueError(
                f"local_rank={local_rank} is not below local_world_size={info.local_world_size}"
                f" (world_size={info.world_size})"
            )
    return info
