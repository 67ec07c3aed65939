from __future__ import annotations

import logging
import os
import sys
import threading
import time
import types
from pathlib import Path

import pytest

from tracker.core.system_metrics import SystemMetricsSampler

CPU_COUNT = os.cpu_count() or 1
HOST_KEYS = {
    "sys/process/rss_mb",
    "sys/process/threads",
    "sys/host/ram_used_percent",
    "sys/host/ram_used_mb",
}
CPU_KEYS = {"sys/process/cpu_percent", "sys/host/cpu_percent"}
GPU_KEYS = {
    "sys/gpu/utilization_percent",
    "sys/gpu/memory_used_mb",
    "sys/gpu/memory_percent",
    "sys/gpu/power_w",
    "sys/gpu/temperature_c",
}
on_linux = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _burn_cpu(seconds: float) -> None:
    """Use ``seconds`` of CPU time (not wall time: the machine may be busy)."""
    end = time.process_time() + seconds
    give_up = time.monotonic() + 10
    while time.process_time() < end and time.monotonic() < give_up:
        sum(range(1000))


def _assert_plausible(reading: dict[str, float]) -> None:
    assert HOST_KEYS | CPU_KEYS <= reading.keys()
    assert all(isinstance(v, float) for v in reading.values()), reading
    assert reading["sys/process/rss_mb"] > 1
    assert reading["sys/process/threads"] >= 1
    assert 0 < reading["sys/host/ram_used_percent"] <= 100
    assert reading["sys/host/ram_used_mb"] > 1
    assert 0 <= reading["sys/process/cpu_percent"] <= 100 * CPU_COUNT
    assert 0 <= reading["sys/host/cpu_percent"] <= 100


@pytest.fixture
def no_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry makes `import pynvml` raise ImportError.
    monkeypatch.setitem(sys.modules, "pynvml", None)


class ManualTicks:
    """A ``wait`` for SystemMetricsSampler that the test drives: each tick() lets the
    thread take one more reading, instead of the interval passing on the wall clock.

    The thread calls the wait after every reading it delivers, so ``waits`` counts the
    readings delivered so far. stop() ends the sampler: from then on the wait is the
    sampler's own, which returns as soon as sampler.stop() sets the stop event.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ticks = 0
        self._stopping = False
        self.waits = 0
        self.timeouts: list[float] = []

    def __call__(self, stop_event: threading.Event, timeout: float) -> bool:
        with self._cond:
            self.waits += 1
            self.timeouts.append(timeout)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._ticks > 0 or self._stopping)
            if not self._stopping:
                self._ticks -= 1
                return False
        return stop_event.wait()

    def tick(self, n: int = 1) -> None:
        with self._cond:
            self._ticks += n
            self._cond.notify_all()

    def wait_for_waits(self, n: int, timeout: float = 30.0) -> bool:
        """Until the thread has waited ``n`` times (``timeout`` only bounds a failure)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.waits >= n, timeout)

    def stop(self, sampler: SystemMetricsSampler) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        sampler.stop()


def test_sample_values_are_plausible() -> None:
    sampler = SystemMetricsSampler(lambda m: None)
    first = sampler.sample()
    assert HOST_KEYS <= first.keys()
    assert not CPU_KEYS & first.keys(), "a CPU percentage needs two readings"
    _burn_cpu(0.05)
    _assert_plausible(sampler.sample())


def test_thread_samples_at_the_interval_and_stops(no_nvml: None) -> None:
    readings: list[dict[str, float]] = []
    ticks = ManualTicks()
    sampler = SystemMetricsSampler(readings.append, interval=0.05, wait=ticks)
    sampler.start()
    assert ticks.wait_for_waits(1), "no reading right after start()"
    assert len(readings) == 1
    for n in range(2, 12):
        ticks.tick()  # the interval has passed
        assert ticks.wait_for_waits(n)
        assert len(readings) == n
    thread = sampler._thread
    assert thread is not None
    ticks.stop(sampler)
    assert not sampler.running
    assert not thread.is_alive()  # so no reading can come after stop()
    assert ticks.timeouts == [0.05] * 11  # it waited the interval between readings
    assert len(readings) == 11
    assert all(HOST_KEYS <= r.keys() for r in readings)
    assert not any(GPU_KEYS & r.keys() for r in readings)
    assert not CPU_KEYS & readings[0].keys()
    for reading in readings[1:]:
        # Back-to-back readings: the host's CPU counters (clock ticks) may not have moved
        # between two of them, so only the process percentage is certain to be there.
        assert 0 <= reading["sys/process/cpu_percent"] <= 100 * CPU_COUNT
        assert 0 <= reading.get("sys/host/cpu_percent", 0.0) <= 100
    ticks.tick(5)  # a tick after stop() takes no reading
    assert len(readings) == 11


def test_default_wait_keeps_sampling_until_stopped(no_nvml: None) -> None:
    readings: list[dict[str, float]] = []
    three = threading.Event()

    def sink(metrics: dict[str, float]) -> None:
        readings.append(metrics)
        if len(readings) >= 3:
            three.set()

    sampler = SystemMetricsSampler(sink, interval=0.01)
    sampler.start()
    thread = sampler._thread
    assert three.wait(30), "the thread stopped sampling on its own"
    sampler.stop()
    assert thread is not None and not thread.is_alive()
    assert len(readings) >= 3
    assert all(HOST_KEYS <= r.keys() for r in readings)
    assert "sys/process/cpu_percent" in readings[-1]


def test_cpu_percent_is_timed_by_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    sampler = SystemMetricsSampler(lambda m: None, clock=lambda: now[0])
    cpu_seconds = [7.0]
    assert sampler._reader is not None
    monkeypatch.setattr(sampler._reader, "process", lambda: (cpu_seconds[0], 2.0**30, 4))
    monkeypatch.setattr(sampler._reader, "host_cpu", lambda: (cpu_seconds[0], 4 * now[0]))
    first = sampler.sample()
    assert not CPU_KEYS & first.keys()
    now[0] += 4.0
    cpu_seconds[0] += 2.0
    second = sampler.sample()
    assert second["sys/process/cpu_percent"] == pytest.approx(50.0)  # 2 CPU s in 4 s
    assert second["sys/host/cpu_percent"] == pytest.approx(12.5)  # 2 of 4 * 4 core-seconds
    assert second["sys/process/rss_mb"] == 1024.0
    assert second["sys/process/threads"] == 4.0
    now[0] += 1.0  # less CPU time than before (a reset): clamped, never negative
    cpu_seconds[0] -= 1.0
    assert sampler.sample()["sys/process/cpu_percent"] == 0.0


def test_stop_returns_quickly_with_a_long_interval() -> None:
    got = threading.Event()
    sampler = SystemMetricsSampler(lambda m: got.set(), interval=3600)
    sampler.start()
    thread = sampler._thread
    assert got.wait(30)  # the thread is (about to be) in its hour-long wait
    started = time.monotonic()
    sampler.stop(timeout=None)
    assert thread is not None and not thread.is_alive()
    # stop() interrupted the wait rather than sitting out the interval; the bound is
    # generous so that a busy machine cannot fail it.
    assert time.monotonic() - started < 60


def test_start_and_stop_are_idempotent() -> None:
    readings: list[dict[str, float]] = []
    sampler = SystemMetricsSampler(readings.append, interval=3600)
    sampler.stop()  # before start
    sampler.start()
    thread = sampler._thread
    sampler.start()
    assert sampler._thread is thread
    sampler.stop()
    sampler.stop()
    assert len(readings) == 1
    sampler.start()  # a stopped sampler can start again
    sampler.stop()
    assert len(readings) == 2


def test_stop_from_inside_the_sink() -> None:
    readings: list[dict[str, float]] = []

    def sink(metrics: dict[str, float]) -> None:
        readings.append(metrics)
        sampler.stop()

    sampler = SystemMetricsSampler(sink, interval=0.01)
    sampler.start()
    thread = sampler._thread
    assert thread is not None
    thread.join(30)  # the thread ends by itself after stop() from its own sink
    assert not thread.is_alive()
    assert not sampler.running
    assert len(readings) == 1


def test_failing_sink_keeps_the_thread_alive_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []
    done = threading.Event()

    def sink(metrics: dict[str, float]) -> None:
        calls.append(1)
        if len(calls) >= 4:
            done.set()
        raise RuntimeError("sink is broken")

    sampler = SystemMetricsSampler(sink, interval=0.01)
    with caplog.at_level(logging.DEBUG, logger="tracker.core.system_metrics"):
        sampler.start()
        assert done.wait(5), "the thread died after the sink raised"
        sampler.stop()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "sink" in r.message]
    assert len(warnings) == 1


def test_failing_source_is_skipped_and_warned_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sampler = SystemMetricsSampler(lambda m: None)

    def broken() -> tuple[float, float, int]:
        raise OSError("unreadable")

    monkeypatch.setattr(sampler._reader, "process", broken)
    with caplog.at_level(logging.WARNING, logger="tracker.core.system_metrics"):
        assert sampler.sample() == {}
        assert sampler.sample() == {}
    assert len(caplog.records) == 1


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError):
        SystemMetricsSampler(lambda m: None, interval=0)


@on_linux
def test_proc_fallback_without_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    psutil = pytest.importorskip("psutil", reason="psutil is needed to cross-check /proc")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "psutil", None)
        sampler = SystemMetricsSampler(lambda m: None)
        assert sampler.backend == "proc"
        sampler.sample()
        _burn_cpu(0.1)
        reading = sampler.sample()
    _assert_plausible(reading)
    # 0.1 s of CPU time (ten clock ticks) must show up, however long it took.
    assert reading["sys/process/cpu_percent"] > 1
    process = psutil.Process()
    assert reading["sys/process/rss_mb"] == pytest.approx(process.memory_info().rss / 2**20, abs=20)
    assert reading["sys/process/threads"] == pytest.approx(process.num_threads(), abs=2)
    assert reading["sys/host/ram_used_percent"] == pytest.approx(
        psutil.virtual_memory().percent, abs=5
    )


def test_psutil_backend_is_preferred() -> None:
    pytest.importorskip("psutil", reason="psutil is not installed")
    assert SystemMetricsSampler(lambda m: None).backend == "psutil"


def test_no_nvml_means_no_gpu_keys(no_nvml: None) -> None:
    sampler = SystemMetricsSampler(lambda m: None, gpu_index=0)
    assert not GPU_KEYS & sampler.sample().keys()
    sampler.stop()


def test_real_pynvml_without_a_driver_is_quiet() -> None:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("a GPU driver is present; this test is for machines without one")
    sampler = SystemMetricsSampler(lambda m: None, gpu_index=0)
    assert not GPU_KEYS & sampler.sample().keys()
    sampler.stop()


class FakeNVMLError(Exception):
    pass


def _fake_pynvml(fail_init: bool = False, unsupported: tuple[str, ...] = ()) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's pynvml that records the calls it gets."""
    fake = types.ModuleType("pynvml")
    fake.calls = []  # type: ignore[attr-defined]
    fake.NVMLError = FakeNVMLError  # type: ignore[attr-defined]
    fake.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]

    def record(name: str, result: object = None):
        def call(*args: object) -> object:
            fake.calls.append((name, args))  # type: ignore[attr-defined]
            if name in unsupported or (name == "nvmlInit" and fail_init):
                raise FakeNVMLError(f"{name}: Not Supported")
            return result(*args) if callable(result) else result

        return call

    fake.nvmlInit = record("nvmlInit")  # type: ignore[attr-defined]
    fake.nvmlShutdown = record("nvmlShutdown")  # type: ignore[attr-defined]
    fake.nvmlDeviceGetHandleByIndex = record(  # type: ignore[attr-defined]
        "nvmlDeviceGetHandleByIndex", lambda i: f"handle-{i}"
    )
    fake.nvmlDeviceGetHandleByUUID = record(  # type: ignore[attr-defined]
        "nvmlDeviceGetHandleByUUID", lambda u: f"handle-{u.decode()}"
    )
    fake.nvmlDeviceGetUtilizationRates = record(  # type: ignore[attr-defined]
        "nvmlDeviceGetUtilizationRates", types.SimpleNamespace(gpu=87, memory=40)
    )
    fake.nvmlDeviceGetMemoryInfo = record(  # type: ignore[attr-defined]
        "nvmlDeviceGetMemoryInfo",
        types.SimpleNamespace(used=20 * 2**30, total=80 * 2**30, free=60 * 2**30),
    )
    fake.nvmlDeviceGetPowerUsage = record("nvmlDeviceGetPowerUsage", 312_500)  # type: ignore[attr-defined]
    fake.nvmlDeviceGetTemperature = record("nvmlDeviceGetTemperature", 61)  # type: ignore[attr-defined]
    return fake


def _names(fake: types.ModuleType) -> list[str]:
    return [name for name, _ in fake.calls]  # type: ignore[attr-defined]


def test_gpu_metrics_from_nvml_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = SystemMetricsSampler(lambda m: None, gpu_index=3)
    first = sampler.sample()
    second = sampler.sample()
    expected = {
        "sys/gpu/utilization_percent": 87.0,
        "sys/gpu/memory_used_mb": 20 * 1024.0,
        "sys/gpu/memory_percent": 25.0,
        "sys/gpu/power_w": 312.5,
        "sys/gpu/temperature_c": 61.0,
    }
    for reading in (first, second):
        assert {k: v for k, v in reading.items() if k.startswith("sys/gpu/")} == expected
        assert HOST_KEYS <= reading.keys()
    assert ("nvmlDeviceGetHandleByIndex", (3,)) in fake.calls  # type: ignore[attr-defined]
    assert "nvmlDeviceGetHandleByUUID" not in _names(fake)
    assert _names(fake).count("nvmlInit") == 1
    assert "nvmlShutdown" not in _names(fake)
    sampler.stop()
    sampler.stop()
    assert _names(fake).count("nvmlShutdown") == 1


def test_gpu_chosen_by_uuid(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    uuid = "GPU-2b6c3a1e-6f0e-4f7c-9a53-1f2d3c4b5a69"
    sampler = SystemMetricsSampler(lambda m: None, gpu_index=uuid)
    assert GPU_KEYS <= sampler.sample().keys()
    assert ("nvmlDeviceGetHandleByUUID", (uuid.encode(),)) in fake.calls  # type: ignore[attr-defined]
    assert "nvmlDeviceGetHandleByIndex" not in _names(fake)
    sampler.stop()


def test_gpu_metrics_in_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    readings: list[dict[str, float]] = []
    got = threading.Event()

    def sink(metrics: dict[str, float]) -> None:
        readings.append(metrics)
        got.set()

    sampler = SystemMetricsSampler(sink, interval=3600, gpu_index=0)
    sampler.start()
    assert got.wait(5)
    sampler.stop()
    assert GPU_KEYS <= readings[0].keys()
    assert _names(fake).count("nvmlShutdown") == 1


def test_no_gpu_index_means_nvml_is_never_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = SystemMetricsSampler(lambda m: None)
    assert not GPU_KEYS & sampler.sample().keys()
    sampler.stop()
    assert fake.calls == []  # type: ignore[attr-defined]


def test_nvml_init_failure_is_quiet_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake = _fake_pynvml(fail_init=True)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = SystemMetricsSampler(lambda m: None, gpu_index=0)
    with caplog.at_level(logging.DEBUG, logger="tracker.core.system_metrics"):
        for _ in range(3):
            reading = sampler.sample()
            assert HOST_KEYS <= reading.keys()
            assert not GPU_KEYS & reading.keys()
        sampler.stop()
    assert _names(fake).count("nvmlInit") == 1
    assert "nvmlShutdown" not in _names(fake)
    nvml_logs = [r for r in caplog.records if "NVML" in r.getMessage()]
    assert len(nvml_logs) == 1
    assert nvml_logs[0].levelno == logging.DEBUG


def test_unsupported_gpu_query_drops_only_that_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml(unsupported=("nvmlDeviceGetPowerUsage",))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = SystemMetricsSampler(lambda m: None, gpu_index=0)
    reading = sampler.sample()
    assert GPU_KEYS - reading.keys() == {"sys/gpu/power_w"}
    sampler.stop()


def test_missing_device_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _fake_pynvml(unsupported=("nvmlDeviceGetHandleByIndex",))
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = SystemMetricsSampler(lambda m: None, gpu_index=7)
    assert not GPU_KEYS & sampler.sample().keys()
    # NVML was initialised for nothing; it is released at once.
    assert _names(fake).count("nvmlShutdown") == 1
    sampler.stop()
    assert _names(fake).count("nvmlShutdown") == 1
