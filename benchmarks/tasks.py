"""What runs inside each benchmark subprocess: one task, one library, one repetition.

``run.py`` starts ``python benchmarks/tasks.py SPEC.json``; the spec names the task, the
library, a fresh working directory and where to write the result (JSON). A fresh
interpreter per measurement keeps one library's imports, threads and garbage out of
another's figures. Library imports happen before any clock starts.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import libs

pc = time.perf_counter_ns
POOL = 1000  # distinct dicts, reused cyclically: building dicts is the user's cost


def _keys(n: int, prefix: str = "train/metric_") -> list[str]:
    return [f"{prefix}{j}" for j in range(n)]


def _pool(keys: list[str], size: int = POOL) -> list[dict[str, float]]:
    return [{k: i * 0.001 + j for j, k in enumerate(keys)} for i in range(size)]


def _latency_stats(lat: list[int]) -> dict[str, float]:
    import numpy as np

    a = np.asarray(lat, dtype=np.int64)
    return {
        "median_ns": float(np.median(a)),
        "p99_ns": float(np.percentile(a, 99)),
        "p999_ns": float(np.percentile(a, 99.9)),
        "max_ns": float(a.max()),
        "mean_ns": float(a.mean()),
    }


def _load() -> float:
    return os.getloadavg()[0]


# -- 1 and 2: log of 10 floats, per-call cost and logged -> durable --------------------------


def log_cost(spec: dict[str, Any]) -> dict[str, Any]:
    """``n`` calls of 10 floats, each timed; then the library's durable call."""
    n = spec["n"]
    pool = _pool(_keys(10))
    name, _, values = spec["lib"].partition("-")
    if name == "tracker" and values:
        # tracker-numpy / tracker-torch: what Keras or Lightning loops log, same keys.
        pool = _as_framework_values(pool, values)
    timer = [0] * n
    for i in range(n):  # what the clock pair itself costs, for the reader's reference
        t0 = pc()
        timer[i] = pc() - t0
    lib = libs.make(name if name == "tracker" else spec["lib"])
    lib.open(spec["workdir"])
    lat = [0] * n
    load = _load()
    start = time.perf_counter()
    if spec["lib"] == "list":
        append = lib.append
        for i in range(n):
            d = pool[i % POOL]
            t0 = pc()
            append(d)
            lat[i] = pc() - t0
    else:
        log = lib.log
        for i in range(n):
            d = pool[i % POOL]
            t0 = pc()
            log(d, i)
            lat[i] = pc() - t0
    looped = time.perf_counter()
    lib.durable()
    durable = time.perf_counter()
    lib.close()
    closed = time.perf_counter()
    out = _latency_stats(lat)
    out.update(
        timer_median_ns=float(statistics.median(timer)),
        calls=n,
        points=n * 10,
        loop_s=looped - start,
        durable_wait_s=durable - looped,
        close_s=closed - durable,
        points_per_s=n * 10 / (durable - start),
        load=load,
        versions=lib.versions(),
    )
    if spec["lib"] == "list":
        out["points_per_s"] = None
    return out


def _as_framework_values(pool: list[dict[str, float]], kind: str) -> list[dict[str, Any]]:
    if kind == "numpy":
        import numpy as np

        return [{k: np.float32(v) for k, v in d.items()} for d in pool]
    if kind == "torch":
        import torch

        return [{k: torch.tensor(v) for k, v in d.items()} for d in pool]
    raise ValueError(f"unknown value kind {kind!r}")


def throughput(spec: dict[str, Any]) -> dict[str, Any]:
    """``n`` calls of 10 floats with no clock around each call: pure logged -> durable."""
    n = spec["n"]
    pool = _pool(_keys(10))
    lib = libs.make(spec["lib"])
    lib.open(spec["workdir"])
    log = lib.log
    load = _load()
    start = time.perf_counter()
    for i in range(n):
        log(pool[i % POOL], i)
    looped = time.perf_counter()
    lib.durable()
    durable = time.perf_counter()
    lib.close()
    closed = time.perf_counter()
    return {
        "calls": n,
        "points": n * 10,
        "loop_s": looped - start,
        "durable_wait_s": durable - looped,
        "close_s": closed - durable,
        "points_per_s": n * 10 / (durable - start),
        "load": load,
        "versions": lib.versions(),
    }


# -- back-pressure: how often, and how long, log waits for the writer ------------------------


def backpressure(spec: dict[str, Any]) -> dict[str, Any]:
    """``n`` calls of 10 floats with ``work_us`` of busy work before each; the waits.

    ``work_us=0`` is the tight loop back-pressure exists for; 10-1,000 µs of work a step
    is what training loops do (a real step is milliseconds). Reports every wait that
    ``run.log`` made and how far the queue was allowed to grow.
    """
    import numpy as np

    import tracker

    n, work = spec["n"], spec["work_us"] / 1e6
    pool = _pool(_keys(10))
    run = tracker.init_run(
        project="bench", store=os.path.join(spec["workdir"], "store"), system_metrics=False
    )
    writer = run._writer
    load = _load()
    deepest = 0
    start = time.perf_counter()
    for i in range(n):
        if work:
            until = time.perf_counter() + work
            while time.perf_counter() < until:
                pass
        run.log(pool[i % POOL], step=i)
        if not i % 256:
            deepest = max(deepest, len(writer.queue))
    looped = time.perf_counter() - start
    run.close()
    waits = np.asarray(writer.waits, dtype=np.float64)
    return {
        "calls": n,
        "work_us": spec["work_us"],
        "loop_s": looped,
        "waits": int(len(waits)),
        "wait_total_s": float(waits.sum()),
        "wait_median_ms": float(np.median(waits) * 1e3) if len(waits) else 0.0,
        "wait_p99_ms": float(np.percentile(waits, 99) * 1e3) if len(waits) else 0.0,
        "wait_max_ms": float(waits.max() * 1e3) if len(waits) else 0.0,
        "max_queue": writer.max_queue,
        "deepest_queue": deepest,
        "load": load,
    }


# -- 3: a 5,000-key dict --------------------------------------------------------------------


def wide_log(spec: dict[str, Any]) -> dict[str, Any]:
    """The first call (new keys) timed alone, then ``calls`` more of the same keys."""
    k, calls = spec["keys"], spec["calls"]
    pool = _pool(_keys(k, "layers/param_"), size=4)
    lib = libs.make(spec["lib"])
    lib.open(spec["workdir"])
    log = lib.log
    load = _load()
    start = time.perf_counter()
    t0 = pc()
    log(pool[0], 0)
    first = pc() - t0
    lat = [0] * calls
    for i in range(calls):
        d = pool[(i + 1) % 4]
        t0 = pc()
        log(d, i + 1)
        lat[i] = pc() - t0
    looped = time.perf_counter()
    lib.durable()
    durable = time.perf_counter()
    lib.close()
    out = _latency_stats(lat)
    out.update(
        keys=k,
        calls=calls,
        first_call_ns=first,
        per_key_ns=out["median_ns"] / k,
        first_per_key_ns=first / k,
        points_per_s=k * (calls + 1) / (durable - start),
        loop_s=looped - start,
        durable_wait_s=durable - looped,
        load=load,
        versions=lib.versions(),
    )
    return out


# -- 4: 100,000 distinct series -------------------------------------------------------------


def many_series(spec: dict[str, Any]) -> dict[str, Any]:
    """One dict of ``keys`` distinct paths logged at ``steps`` steps, then closed."""
    k, steps = spec["keys"], spec["steps"]
    data = {f"model/layer_{j // 100}/unit_{j % 100}": j * 0.5 for j in range(k)}
    lib = libs.make(spec["lib"])
    lib.open(spec["workdir"])
    log = lib.log
    gc.collect()
    load = _load()
    start = time.perf_counter()
    for s in range(steps):
        log(data, s)
    looped = time.perf_counter()
    lib.durable()
    lib.close()
    closed = time.perf_counter()
    return {
        "keys": k,
        "steps": steps,
        "points": k * steps,
        "log_s": looped - start,
        "total_s": closed - start,
        "load": load,
        "versions": lib.versions(),
    }


# -- 5 and 6: reading a long series back ----------------------------------------------------


def build_series(spec: dict[str, Any]) -> dict[str, Any]:
    """Write one series of ``points`` points named "x" (and a spike at ``spike_step``)."""
    lib_name, n = spec["lib"], spec["points"]
    spike = spec.get("spike_step", -1)
    workdir = spec["workdir"]
    start = time.perf_counter()
    if lib_name == "tracker":
        import tracker

        run = tracker.init_run(
            project="bench", store=os.path.join(workdir, "store"), system_metrics=False
        )
        log = run.log
        for i in range(n):
            log({"x": 1e6 if i == spike else (i % 1000) * 0.001}, i)
        run.close()
        ref = run.id
    elif lib_name == "mlflow":
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        import mlflow
        from mlflow.entities import Metric

        mlflow.set_tracking_uri("file://" + os.path.join(workdir, "mlruns"))
        client = mlflow.MlflowClient()
        exp = client.create_experiment("bench")
        ref = client.create_run(exp).info.run_id
        ts = int(time.time() * 1000)
        # log_batch takes at most 1,000 metrics a call.
        for b in range(0, n, 1000):
            batch = [Metric("x", (i % 1000) * 0.001, ts, i) for i in range(b, min(n, b + 1000))]
            client.log_batch(ref, metrics=batch)
        client.set_terminated(ref)
    elif lib_name == "tensorboardX":
        from tensorboardX import SummaryWriter

        ref = os.path.join(workdir, "tb")
        writer = SummaryWriter(ref)
        add = writer.add_scalar
        for i in range(n):
            add("x", (i % 1000) * 0.001, i)
        writer.close()
    else:
        raise SystemExit(f"build_series: no builder for {lib_name}")
    return {"ref": ref, "points": n, "build_s": time.perf_counter() - start, "load": _load()}


def read_series(spec: dict[str, Any]) -> dict[str, Any]:
    """Read the whole series ``reps`` times, each time through a fresh reader object."""
    lib_name, ref, reps, n = spec["lib"], spec["ref"], spec["reps"], spec["points"]
    workdir = spec["workdir"]
    times = []
    load = _load()
    if lib_name == "tracker":
        import tracker

        read_run = tracker.read_run  # the lazy import is the import benchmark's business
        store = os.path.join(workdir, "store")
        for _ in range(reps):
            t0 = time.perf_counter()
            values = read_run(ref, store=store)["x"].fetch_values()
            times.append(time.perf_counter() - t0)
            assert len(values) == n, (len(values), n)
        versions = {"tracker": tracker.__version__}
    elif lib_name == "mlflow":
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
        import mlflow

        mlflow.set_tracking_uri("file://" + os.path.join(workdir, "mlruns"))
        for _ in range(reps):
            t0 = time.perf_counter()
            history = mlflow.MlflowClient().get_metric_history(ref, "x")
            times.append(time.perf_counter() - t0)
            assert len(history) == n, (len(history), n)
        versions = {"mlflow": mlflow.__version__}
    elif lib_name == "tensorboardX":
        # tensorboardX only writes; TensorBoard's own reader is what reads its files.
        import tensorboard
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        for _ in range(reps):
            t0 = time.perf_counter()
            acc = EventAccumulator(ref, size_guidance={"scalars": 0})  # 0: keep every point
            acc.Reload()
            scalars = acc.Scalars("x")
            times.append(time.perf_counter() - t0)
            assert len(scalars) == n, (len(scalars), n)
        versions = {"tensorboard": tensorboard.__version__}
    else:
        raise SystemExit(f"read_series: no reader for {lib_name}")
    return {
        "points": n,
        "first_s": times[0],
        "median_s": statistics.median(times),
        "times_s": times,
        "load": load,
        "versions": versions,
    }


def read_verify(spec: dict[str, Any]) -> dict[str, Any]:
    """What checking each chunk's CRC-32 and sizes costs a read of the whole series.

    Reads with verification (as every read does) and without it (a private switch of
    the reader, for this measurement only) alternate, so that both see the same cache
    and load; each read goes through a fresh reader object.
    """
    import tracker
    import tracker.core.reader as reader

    ref, reps, n = spec["ref"], spec["reps"], spec["points"]
    store = os.path.join(spec["workdir"], "store")
    read_run = tracker.read_run
    load = _load()
    read_run(ref, store=store)["x"].fetch_values()  # warm: the first read pays imports
    times: dict[bool, list[float]] = {True: [], False: []}
    try:
        for _ in range(reps):
            for verify in (True, False):
                reader._VERIFY_CHUNKS = verify
                t0 = time.perf_counter()
                values = read_run(ref, store=store)["x"].fetch_values()
                times[verify].append(time.perf_counter() - t0)
                assert len(values) == n, (len(values), n)
    finally:
        reader._VERIFY_CHUNKS = True
    return {
        "points": n,
        "verified_median_s": statistics.median(times[True]),
        "unverified_median_s": statistics.median(times[False]),
        "verified_s": times[True],
        "unverified_s": times[False],
        "load": load,
        "versions": {"tracker": tracker.__version__},
    }


def downsample(spec: dict[str, Any]) -> dict[str, Any]:
    """fetch_values(buckets=N) on the long series; the read and the bucketing apart too."""
    import tracker
    from tracker.core.downsample import bucketize

    ref, reps, n, nb = spec["ref"], spec["reps"], spec["points"], spec["buckets"]
    store = os.path.join(spec["workdir"], "store")
    read_run = tracker.read_run
    load = _load()
    combined, read, bucket = [], [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        b = read_run(ref, store=store)["x"].fetch_values(buckets=nb)
        combined.append(time.perf_counter() - t0)
        assert len(b) <= nb and int(b.count.sum()) == n, (len(b), int(b.count.sum()))
        assert float(b.max.max()) == 1e6, "the spike did not survive downsampling"
    for _ in range(reps):
        t0 = time.perf_counter()
        v = read_run(ref, store=store)["x"].fetch_values()
        t1 = time.perf_counter()
        bucketize(v.step, v.value, nb)
        t2 = time.perf_counter()
        read.append(t1 - t0)
        bucket.append(t2 - t1)
        del v
    return {
        "points": n,
        "buckets": nb,
        "median_s": statistics.median(combined),
        "first_s": combined[0],
        "read_median_s": statistics.median(read),
        "bucketize_median_s": statistics.median(bucket),
        "load": load,
        "versions": {"tracker": tracker.__version__},
    }


TASKS = {
    "log_cost": log_cost,
    "throughput": throughput,
    "wide_log": wide_log,
    "many_series": many_series,
    "build_series": build_series,
    "read_series": read_series,
    "read_verify": read_verify,
    "downsample": downsample,
    "backpressure": backpressure,
}


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    result = TASKS[spec["task"]](spec)
    result["load_end"] = _load()
    with open(spec["out"], "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
