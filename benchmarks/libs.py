"""One adapter per library, so every workload drives each library the same way.

An adapter opens a run in a fresh directory, exposes ``log(data, step)`` (the call
the training thread pays for), ``durable()`` (returns once everything logged is on
disk, by that library's own guarantee) and ``close()``. Only the library's own calls
sit inside ``log``: for tensorboardX that is the ``add_scalar`` loop a user would
write, for the others it is the library's function itself, unwrapped.

What "durable" means differs, and the report says so: tracker's ``flush()`` fsyncs
its journal and applies it to the store; tensorboardX's ``flush()`` hands the event
file to the OS; MLflow writes synchronously inside each call; wandb's ``finish()``
waits for its service process to write the offline run file. Only tracker fsyncs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# Every peer is kept off the network and out of the home directory. The parent sets
# these too; setting them here as well keeps a child started by hand just as quiet.
WANDB_ENV = {
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "WANDB_DISABLE_GIT": "true",
    "WANDB_DISABLE_CODE": "true",
    "WANDB_CONSOLE": "off",
    "WANDB__SERVICE_WAIT": "60",
}


class Adapter:
    """The common face; ``log`` is set by ``open`` to the bare library callable."""

    name = "?"
    log: Callable[[dict[str, float], int], Any]

    def open(self, workdir: str) -> None:
        raise NotImplementedError

    def durable(self) -> None:
        pass

    def close(self) -> None:
        pass

    def versions(self) -> dict[str, str]:
        return {}


class ListAdapter(Adapter):
    """The floor: appending the dict to a Python list."""

    name = "list"

    def open(self, workdir: str) -> None:
        self.items: list[Any] = []
        append = self.items.append

        def log(data: dict[str, float], step: int) -> None:
            append(data)

        self.log = log
        # Workloads that want the true floor call this directly, without a frame.
        self.append = append


class TrackerAdapter(Adapter):
    name = "tracker"

    def __init__(self, system_metrics: bool = False) -> None:
        self.system_metrics = system_metrics
        if system_metrics:
            self.name = "tracker+sysmetrics"

    def open(self, workdir: str) -> None:
        import tracker

        self.store = os.path.join(workdir, "store")
        self.run = tracker.init_run(
            project="bench", store=self.store, system_metrics=self.system_metrics
        )
        self.log = self.run.log

    def durable(self) -> None:
        self.run.flush()

    def close(self) -> None:
        self.run.close()

    def versions(self) -> dict[str, str]:
        import tracker

        return {"tracker": tracker.__version__}


class TensorboardXAdapter(Adapter):
    name = "tensorboardX"

    def open(self, workdir: str) -> None:
        from tensorboardX import SummaryWriter

        self.logdir = os.path.join(workdir, "tb")
        self.writer = SummaryWriter(self.logdir)
        add_scalar = self.writer.add_scalar

        def log(data: dict[str, float], step: int) -> None:
            for key, value in data.items():
                add_scalar(key, value, step)

        self.log = log

    def durable(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def versions(self) -> dict[str, str]:
        import tensorboardX

        return {"tensorboardX": tensorboardX.__version__}


class MlflowAdapter(Adapter):
    """MLflow's fluent API on a local store: ``backend`` is "file" or "sqlite"."""

    def __init__(self, backend: str = "file") -> None:
        self.backend = backend
        self.name = "mlflow" if backend == "file" else f"mlflow-{backend}"

    def open(self, workdir: str) -> None:
        # MLflow 3.x refuses the file store unless asked; the peer figures were taken on it.
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        import mlflow

        if self.backend == "file":
            uri = "file://" + os.path.join(workdir, "mlruns")
        else:
            uri = "sqlite:///" + os.path.join(workdir, "mlflow.db")
        mlflow.set_tracking_uri(uri)
        self.mlflow = mlflow
        self.active = mlflow.start_run()
        self.run_id = self.active.info.run_id
        self.log = mlflow.log_metrics

    def durable(self) -> None:
        pass  # log_metrics is synchronous: the file is written before it returns

    def close(self) -> None:
        self.mlflow.end_run()

    def versions(self) -> dict[str, str]:
        import mlflow

        return {"mlflow": mlflow.__version__}


class WandbAdapter(Adapter):
    """wandb offline: no network; its service process writes ``run-*.wandb``."""

    name = "wandb"

    def open(self, workdir: str) -> None:
        for key in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
            os.environ[key] = workdir
        os.environ.update(WANDB_ENV)
        import wandb

        settings = wandb.Settings(
            x_disable_stats=True,  # like tracker's system_metrics=False line
            x_disable_machine_info=True,
            x_save_requirements=False,
            disable_git=True,
            save_code=False,
            console="off",
        )
        self.run = wandb.init(project="bench", dir=workdir, mode="offline", settings=settings)
        self.log = self.run.log

    def durable(self) -> None:
        self.run.finish()

    def versions(self) -> dict[str, str]:
        import wandb

        return {"wandb": wandb.__version__}


def make(name: str) -> Adapter:
    """The adapter for a library name as used on the command line and in the report."""
    factories: dict[str, Callable[[], Adapter]] = {
        "list": ListAdapter,
        "tracker": TrackerAdapter,
        "tracker+sysmetrics": lambda: TrackerAdapter(system_metrics=True),
        "tensorboardX": TensorboardXAdapter,
        "mlflow": MlflowAdapter,
        "mlflow-sqlite": lambda: MlflowAdapter("sqlite"),
        "wandb": WandbAdapter,
    }
    try:
        return factories[name]()
    except KeyError:
        raise SystemExit(f"unknown library {name!r}; known: {', '.join(factories)}") from None
