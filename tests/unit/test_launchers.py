import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

from tracker.rank_utils.launchers import RankInfo, detect_rank

ROOT = Path(__file__).resolve().parents[2]
HAS_TORCH = importlib.util.find_spec("torch") is not None


def info(rank, local, world, local_world, node, job, source):
    return RankInfo(rank, local, world, local_world, node, job, source)


def tf_config(task_type, index, **cluster):
    return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})


SRUN = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_STEP_ID": "0"}

LAUNCHERS = {
    "nothing set": ({}, info(0, 0, 1, 1, 0, None, "single")),
    "torchrun one node": (
        {
            "RANK": "1",
            "LOCAL_RANK": "1",
            "WORLD_SIZE": "4",
            "LOCAL_WORLD_SIZE": "4",
            "GROUP_RANK": "0",
            "TORCHELASTIC_RUN_ID": "abc",
        },
        info(1, 1, 4, 4, 0, "torchelastic:abc", "torchelastic"),
    ),
    "torchrun default run id is no job id": (
        {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}
        | {"GROUP_RANK": "0", "TORCHELASTIC_RUN_ID": "none"},
        info(0, 0, 2, 2, 0, None, "torchelastic"),
    ),
    "plain env:// launch": (
        {"RANK": "2", "WORLD_SIZE": "4", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"},
        info(2, 2, 4, 4, 0, None, "torch"),
    ),
    "plain env:// with local rank on two nodes": (
        {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"},
        info(3, 1, 4, 2, None, None, "torch"),
    ),
    "srun task on the second node": (
        SRUN
        | {
            "SLURM_PROCID": "5",
            "SLURM_LOCALID": "1",
            "SLURM_NODEID": "1",
            "SLURM_NTASKS": "8",
            "SLURM_STEP_NUM_TASKS": "8",
            "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
        },
        info(5, 1, 8, 4, 1, "slurm:4242.0", "slurm"),
    ),
    "srun with uneven tasks per node": (
        SRUN
        | {
            "SLURM_PROCID": "4",
            "SLURM_LOCALID": "1",
            "SLURM_NODEID": "1",
            "SLURM_STEP_NUM_TASKS": "5",
            "SLURM_STEP_TASKS_PER_NODE": "3,2",
        },
        info(4, 1, 5, 2, 1, "slurm:4242.0", "slurm"),
    ),
    "srun step smaller than the allocation": (
        SRUN
        | {"SLURM_STEP_ID": "3", "SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0"}
        | {"SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2"},
        info(1, 1, 2, 2, 0, "slurm:4242.3", "slurm"),
    ),
    "sbatch script without srun is one process": (
        {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "train", "SLURM_PROCID": "0"}
        | {"SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS": "4"},
        info(0, 0, 1, 1, 0, None, "single"),
    ),
    "slurm batch pseudo step is one process": (
        SRUN | {"SLURM_STEP_ID": "4294967294", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"},
        info(0, 0, 1, 1, 0, None, "single"),
    ),
    "interactive srun shell is not a job": (
        SRUN | {"SLURM_JOB_NAME": "bash", "SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "1"},
        info(0, 0, 1, 1, 0, None, "single"),
    ),
    "open mpi 4": (
        {
            "OMPI_COMM_WORLD_RANK": "3",
            "OMPI_COMM_WORLD_SIZE": "4",
            "OMPI_COMM_WORLD_LOCAL_RANK": "1",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
            "OMPI_COMM_WORLD_NODE_RANK": "1",
            "OMPI_MCA_ess_base_jobid": "3928424449",
        },
        info(3, 1, 4, 2, None, "openmpi:3928424449", "openmpi"),
    ),
    "open mpi 5": (
        {
            "OMPI_COMM_WORLD_RANK": "0",
            "OMPI_COMM_WORLD_SIZE": "2",
            "OMPI_COMM_WORLD_LOCAL_RANK": "0",
            "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
            "PMIX_NAMESPACE": "prterun-host-123@1",
        },
        info(0, 0, 2, 2, 0, "openmpi:prterun-host-123@1", "openmpi"),
    ),
    "mpich hydra": (
        {"PMI_RANK": "2", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "2"},
        info(2, 0, 4, 2, None, None, "mpich"),
    ),
    "horovodrun gloo": (
        {
            "HOROVOD_RANK": "3",
            "HOROVOD_SIZE": "4",
            "HOROVOD_LOCAL_RANK": "1",
            "HOROVOD_LOCAL_SIZE": "2",
            "HOROVOD_CROSS_RANK": "1",
            "HOROVOD_CROSS_SIZE": "2",
            "HOROVOD_HOSTNAME": "node1",
            "HOROVOD_CONTROLLER": "gloo",
            "HOROVOD_GLOO_RENDEZVOUS_ADDR": "10.0.0.1",
            "HOROVOD_GLOO_RENDEZVOUS_PORT": "41234",
        },
        info(3, 1, 4, 2, 1, None, "horovod"),
    ),
    "TF_CONFIG chief is rank 0": (
        {"TF_CONFIG": tf_config("chief", 0, chief=["h0:1"], worker=["h1:1", "h2:1"])},
        info(0, 0, 3, 1, 0, None, "tf_config"),
    ),
    "TF_CONFIG workers follow the chief": (
        {"TF_CONFIG": tf_config("worker", 1, chief=["h0:1"], worker=["h1:1", "h2:1"])},
        info(2, 0, 3, 1, 2, None, "tf_config"),
    ),
    "TF_CONFIG tasks on one host get local ranks": (
        {
            "TF_CONFIG": tf_config(
                "worker", 1, chief=["localhost:1"], worker=["localhost:2", "localhost:3"]
            )
        },
        info(2, 2, 3, 3, 0, None, "tf_config"),
    ),
    "TF_CONFIG without a chief": (
        {"TF_CONFIG": tf_config("worker", 1, worker=["h0:1", "h1:1"])},
        info(1, 0, 2, 1, 1, None, "tf_config"),
    ),
    "TF_CONFIG evaluator is not a training rank": (
        {
            "TF_CONFIG": tf_config(
                "evaluator", 0, chief=["h0:1"], worker=["h1:1"], evaluator=["e:1"]
            )
        },
        info(0, 0, 1, 1, 0, None, "single"),
    ),
    "TF_CONFIG parameter-server chief trains alone": (
        {"TF_CONFIG": tf_config("chief", 0, chief=["h0:1"], worker=["h1:1"], ps=["p:1"])},
        info(0, 0, 1, 1, 0, None, "tf_config"),
    ),
    "TF_CONFIG parameter-server worker is not a training rank": (
        {"TF_CONFIG": tf_config("worker", 0, chief=["h0:1"], worker=["h1:1"], ps=["p:1"])},
        info(0, 0, 1, 1, 0, None, "single"),
    ),
}


@pytest.mark.parametrize(("env", "expected"), LAUNCHERS.values(), ids=LAUNCHERS.keys())
def test_each_launcher(env, expected):
    assert detect_rank(env=env) == expected


def two_node_torchrun(rank):
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank % 2),
        "WORLD_SIZE": "4",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": str(rank // 2),
        "GROUP_WORLD_SIZE": "2",
        "TORCHELASTIC_RUN_ID": "job7",
        "MASTER_ADDR": "node0",
        "MASTER_PORT": "29500",
    }


@pytest.mark.parametrize("rank", range(4))
def test_two_node_torchrun(rank):
    got = detect_rank(env=two_node_torchrun(rank))
    assert (got.rank, got.local_rank, got.node_rank) == (rank, rank % 2, rank // 2)
    assert (got.world_size, got.local_world_size, got.job_id) == (4, 2, "torchelastic:job7")


# torchrun started by srun, one agent per node: SLURM's values describe the agent.
SRUN_AGENT_NODE1 = SRUN | {
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "1",
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_STEP_TASKS_PER_NODE": "1(x2)",
}
# mpirun inside an allocation starts one daemon per node with srun.
SRUN_DAEMON = SRUN | {"SLURM_PROCID": "0", "SLURM_NODEID": "0", "SLURM_STEP_NUM_TASKS": "2"}
OMPI_RANK3 = {
    "OMPI_COMM_WORLD_RANK": "3",
    "OMPI_COMM_WORLD_SIZE": "8",
    "OMPI_COMM_WORLD_LOCAL_RANK": "3",
    "OMPI_COMM_WORLD_LOCAL_SIZE": "4",
    "OMPI_MCA_ess_base_jobid": "77",
}

PRECEDENCE = {
    "torchrun inside srun: torchrun's rank, SLURM's job id": (
        SRUN_AGENT_NODE1 | two_node_torchrun(3) | {"TORCHELASTIC_RUN_ID": "none"},
        info(3, 1, 4, 2, 1, "slurm:4242.0", "torchelastic"),
    ),
    "torchrun inside srun with its own run id": (
        SRUN_AGENT_NODE1 | two_node_torchrun(2),
        info(2, 0, 4, 2, 1, "torchelastic:job7", "torchelastic"),
    ),
    "torchrun started by mpirun": (
        OMPI_RANK3 | two_node_torchrun(1),
        info(1, 1, 4, 2, 0, "torchelastic:job7", "torchelastic"),
    ),
    "env:// under srun takes SLURM's job and node": (
        SRUN
        | {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NODEID": "1"}
        | {"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
        | {"RANK": "3", "WORLD_SIZE": "4"},
        info(3, 1, 4, 2, 1, "slurm:4242.0", "torch"),
    ),
    "Open MPI beats PMI": (
        OMPI_RANK3 | {"PMI_RANK": "0", "PMI_SIZE": "2"},
        info(3, 3, 8, 4, None, "openmpi:77", "openmpi"),
    ),
    "mpirun inside srun: MPI's rank": (
        SRUN_DAEMON | OMPI_RANK3,
        info(3, 3, 8, 4, None, "openmpi:77", "openmpi"),
    ),
    "srun --mpi=pmi2: PMI agrees, SLURM fills node": (
        SRUN
        | {"SLURM_PROCID": "2", "SLURM_LOCALID": "0", "SLURM_NODEID": "1"}
        | {"SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}
        | {"PMI_RANK": "2", "PMI_SIZE": "4"},
        info(2, 0, 4, 2, 1, "slurm:4242.0", "mpich"),
    ),
    "horovodrun inside srun": (
        SRUN_DAEMON
        | {"HOROVOD_RANK": "1", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1"}
        | {"HOROVOD_LOCAL_SIZE": "2", "HOROVOD_CROSS_RANK": "0"},
        info(1, 1, 2, 2, 0, "slurm:4242.0", "horovod"),
    ),
    "SLURM beats a left-over TF_CONFIG": (
        SRUN
        | {"SLURM_PROCID": "1", "SLURM_LOCALID": "1", "SLURM_NODEID": "0"}
        | {"SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2"}
        | {"TF_CONFIG": tf_config("chief", 0, chief=["h0:1"], worker=["h1:1"])},
        info(1, 1, 2, 2, 0, "slurm:4242.0", "slurm"),
    ),
    "a bad lower-priority launcher is not read": (
        two_node_torchrun(0) | {"SLURM_PROCID": "x", "SLURM_STEP_ID": "0", "TF_CONFIG": "{"},
        info(0, 0, 4, 2, 0, "torchelastic:job7", "torchelastic"),
    ),
}


@pytest.mark.parametrize(("env", "expected"), PRECEDENCE.values(), ids=PRECEDENCE.keys())
def test_precedence(env, expected):
    assert detect_rank(env=env) == expected


@pytest.mark.parametrize(
    "env",
    [
        {"LOCAL_RANK": "1"},
        {"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"},
        {"RANK": "3"},
    ],
    ids=["LOCAL_RANK", "LOCAL_RANK and LOCAL_WORLD_SIZE", "RANK without WORLD_SIZE"],
)
def test_local_rank_alone_is_never_the_global_rank(env):
    with pytest.warns(RuntimeWarning, match="single process"):
        got = detect_rank(env=env)
    assert got == info(0, 0, 1, 1, 0, None, "single")


EXPLICIT = {
    "arguments alone": (
        {"rank": 1, "world_size": 2},
        {},
        info(1, 1, 2, 2, 0, None, "explicit"),
    ),
    "arguments agreeing with torchrun keep its job and node": (
        {"rank": 3, "world_size": 4},
        two_node_torchrun(3),
        info(3, 1, 4, 2, 1, "torchelastic:job7", "explicit"),
    ),
    "arguments disagreeing with the launcher drop its job id": (
        {"rank": 0, "world_size": 2},
        two_node_torchrun(3),
        info(0, 0, 2, 2, 0, None, "explicit"),
    ),
    "arguments get past a broken environment": (
        {"rank": 0, "world_size": 1},
        {"RANK": "x", "WORLD_SIZE": "4", "TORCHELASTIC_RUN_ID": "j"},
        info(0, 0, 1, 1, 0, None, "explicit"),
    ),
    "world size alone, agreeing": (
        {"world_size": 4},
        two_node_torchrun(2),
        info(2, 0, 4, 2, 1, "torchelastic:job7", "explicit"),
    ),
    "rank alone on top of srun": (
        {"rank": 0},
        SRUN_AGENT_NODE1,
        info(0, 0, 2, 2, 0, None, "explicit"),
    ),
    "local rank overrides the launcher's": (
        {"local_rank": 0},
        two_node_torchrun(3),
        info(3, 0, 4, 2, 1, "torchelastic:job7", "torchelastic"),
    ),
    "local rank widens the local world": (
        {"rank": 1, "world_size": 4, "local_rank": 3},
        {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"},
        info(1, 3, 4, 4, None, None, "explicit"),
    ),
}


@pytest.mark.parametrize(("kwargs", "env", "expected"), EXPLICIT.values(), ids=EXPLICIT.keys())
def test_explicit_arguments_win(kwargs, env, expected):
    assert detect_rank(**kwargs, env=env) == expected


BAD = {
    "RANK not a number": ({"RANK": "abc", "WORLD_SIZE": "2"}, "RANK='abc'"),
    "RANK equal to WORLD_SIZE": (
        {"RANK": "2", "WORLD_SIZE": "2"},
        "RANK=2 is not below WORLD_SIZE=2",
    ),
    "negative RANK": ({"RANK": "-1", "WORLD_SIZE": "2"}, "RANK must not be negative"),
    "WORLD_SIZE zero": ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be at least 1"),
    "float WORLD_SIZE": ({"RANK": "0", "WORLD_SIZE": "2.0"}, "WORLD_SIZE='2.0'"),
    "LOCAL_RANK too big": (
        {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"},
        "LOCAL_RANK=2 is not below LOCAL_WORLD_SIZE=2",
    ),
    "LOCAL_WORLD_SIZE above WORLD_SIZE": (
        {"RANK": "0", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "8"},
        "LOCAL_WORLD_SIZE=8 exceeds WORLD_SIZE=4",
    ),
    "negative GROUP_RANK": (
        two_node_torchrun(0) | {"GROUP_RANK": "-2"},
        "GROUP_RANK must not be negative",
    ),
    "torchrun without RANK": ({"TORCHELASTIC_RUN_ID": "j", "WORLD_SIZE": "2"}, "RANK"),
    "SLURM_PROCID not a number": (
        SRUN | {"SLURM_PROCID": "x", "SLURM_STEP_NUM_TASKS": "2"},
        "SLURM_PROCID='x'",
    ),
    "SLURM_PROCID beyond the step": (
        SRUN | {"SLURM_PROCID": "2", "SLURM_STEP_NUM_TASKS": "2"},
        "SLURM_PROCID=2 is not below SLURM_STEP_NUM_TASKS=2",
    ),
    "SLURM tasks per node malformed": (
        SRUN
        | {"SLURM_PROCID": "0", "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_TASKS_PER_NODE": "2(x"},
        "SLURM_STEP_TASKS_PER_NODE",
    ),
    "Open MPI size missing": ({"OMPI_COMM_WORLD_RANK": "0"}, "OMPI_COMM_WORLD_SIZE"),
    "PMI rank beyond size": ({"PMI_RANK": "4", "PMI_SIZE": "4"}, "PMI_RANK=4"),
    "HOROVOD_LOCAL_RANK not a number": (
        {"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "1.5"},
        "HOROVOD_LOCAL_RANK='1.5'",
    ),
    "TF_CONFIG not JSON": ({"TF_CONFIG": "{not json"}, "TF_CONFIG is not valid JSON"),
    "TF_CONFIG index out of range": (
        {"TF_CONFIG": tf_config("worker", 5, chief=["h0:1"], worker=["h1:1"])},
        "TF_CONFIG task index 5",
    ),
}


@pytest.mark.parametrize(("env", "message"), BAD.values(), ids=BAD.keys())
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        detect_rank(env=env)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rank": 2, "world_size": 2}, "rank=2 is not below world_size=2"),
        ({"rank": "1", "world_size": 2}, "rank must be an integer"),
        ({"rank": 0, "world_size": 0}, "world_size must be at least 1"),
        ({"rank": 1}, "rank=1 is not below world_size=1"),
        ({"local_rank": -1}, "local_rank must not be negative"),
        ({"local_rank": 3}, "local_rank=3 is not below local_world_size=1"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        detect_rank(**kwargs, env={})


def fake_torch_distributed(initialized, rank=0, world=1):
    module = types.ModuleType("torch.distributed")
    module.is_available = lambda: True
    module.is_initialized = lambda: initialized
    module.get_rank = lambda: rank
    module.get_world_size = lambda: world
    return module


def test_started_process_group_beats_the_environment(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.distributed", fake_torch_distributed(True, 1, 2))
    got = detect_rank(env=SRUN_AGENT_NODE1 | {"SLURM_PROCID": "0", "SLURM_NODEID": "0"})
    assert (got.rank, got.world_size, got.source) == (1, 2, "torch.distributed")
    assert got.job_id == "slurm:4242.0"  # the job id is shared whatever the ranks


def test_process_group_agreeing_with_launcher_keeps_launcher_details(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.distributed", fake_torch_distributed(True, 3, 4))
    assert detect_rank(env=two_node_torchrun(3)) == info(
        3, 1, 4, 2, 1, "torchelastic:job7", "torchelastic"
    )


def test_unstarted_or_broken_process_group_is_ignored(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.distributed", fake_torch_distributed(False, 1, 2))
    assert detect_rank(env={}).source == "single"
    broken = fake_torch_distributed(True)
    broken.get_rank = lambda: 1 / 0
    monkeypatch.setitem(sys.modules, "torch.distributed", broken)
    assert detect_rank(env=two_node_torchrun(1)).rank == 1


def test_started_horovod_beats_its_initial_environment(monkeypatch):
    # Elastic Horovod: the HOROVOD_* variables hold the ranks of the first round only.
    hvd = types.ModuleType("horovod.torch")
    hvd.is_initialized = lambda: True
    for name, value in [("rank", 2), ("size", 3), ("local_rank", 0), ("local_size", 1)]:
        setattr(hvd, name, lambda value=value: value)
    hvd.cross_rank = lambda: 2
    monkeypatch.setitem(sys.modules, "horovod.torch", hvd)
    env = {"HOROVOD_RANK": "0", "HOROVOD_SIZE": "2", "HOROVOD_LOCAL_RANK": "0"}
    assert detect_rank(env=env) == info(2, 0, 3, 1, 2, None, "horovod")
    assert detect_rank(env=env | SRUN_DAEMON).job_id == "slurm:4242.0"
    hvd.is_initialized = lambda: False
    assert detect_rank(env=env).world_size == 2


def run_python(code, env=None):
    full_env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_detection_imports_no_framework():
    out = run_python(
        """
        import sys
        from tracker.rank_utils.launchers import detect_rank
        from tracker.rank_utils.devices import gpu_index_for
        detect_rank()
        gpu_index_for(0, None)
        heavy = ("torch", "horovod", "tensorflow", "mpi4py")
        print(sorted(m for m in sys.modules if m.split(".")[0] in heavy))
        """
    )
    assert out.strip() == "[]"


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_detection_never_starts_a_process_group():
    out = run_python(
        """
        import torch.distributed as dist
        from tracker.rank_utils.launchers import detect_rank
        info = detect_rank()
        print(info.rank, info.world_size, info.source, dist.is_initialized())
        """,
        env={"RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"},
    )
    assert out.split() == ["1", "2", "torch", "False"]


@pytest.mark.distributed
@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_real_torchrun_with_a_started_process_group(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, os, sys
            from tracker.rank_utils.launchers import detect_rank
            before = detect_rank()
            import torch.distributed as dist
            dist.init_process_group("gloo")
            after = detect_rank()
            out = os.path.join(sys.argv[1], f"rank{before.rank}.json")
            with open(out, "w") as f:
                fields = ("rank", "local_rank", "world_size", "local_world_size", "node_rank",
                          "job_id", "source")
                json.dump([[getattr(before, name) for name in fields], after.source], f)
            dist.destroy_process_group()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "OMPI_", "PMI"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
        + [str(script), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    job_ids = {row[0][5] for row in rows}
    assert len(job_ids) == 1 and next(iter(job_ids)).startswith("torchelastic:")
    for r, (before, after_source) in enumerate(rows):
        assert before[:5] == [r, r, 2, 2, 0]
        assert before[6] == "torchelastic" and after_source == "torchelastic"
