"""Sample this process's CPU, memory and GPU on a background thread.

Process and host figures come from psutil when it is installed and from ``/proc``
otherwise (Linux), so a bare install still reports them. GPU figures come from NVML
(``pip install nvidia-ml-py``) for the one device the caller names; without NVML, a
driver or a device they are left out quietly.

Example::

    >>> readings = []
    >>> sampler = SystemMetricsSampler(readings.append, interval=10.0)
    >>> sampler.start()  # the first reading is taken at once
    >>> sampler.stop()
    >>> readings[0]["sys/process/rss_mb"] > 0
    True
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SystemMetricsSampler"]

logger = logging.getLogger(__name__)

_MB = 1024 * 1024


class _PsutilReader:
    name = "psutil"

    def __init__(self, psutil: Any) -> None:
        self._psutil = psutil
        self._process = psutil.Process()

    def process(self) -> tuple[float, float, int]:
        """(user + system CPU seconds, RSS bytes, threads) of this process."""
        with self._process.oneshot():
            times = self._process.cpu_times()
            rss = self._process.memory_info().rss
            threads = self._process.num_threads()
        return times.user + times.system, float(rss), threads

    def host_cpu(self) -> tuple[float, float]:
        """(busy, total) CPU time of the whole host, in any unit."""
        times = self._psutil.cpu_times()
        total = sum(times)
        # Linux counts guest time inside user time already.
        total -= getattr(times, "guest", 0.0) + getattr(times, "guest_nice", 0.0)
        idle = times.idle + getattr(times, "iowait", 0.0)
        return total - idle, total

    def host_memory(self) -> tuple[float, float]:
        """(total, available) bytes of host memory."""
        memory = self._psutil.virtual_memory()
        return float(memory.total), float(memory.available)


class _ProcReader:
    name = "proc"

    def __init__(self) -> None:
        self._ticks = float(os.sysconf("SC_CLK_TCK"))
        self._page = float(os.sysconf("SC_PAGE_SIZE"))
        self.process()  # fail here, at selection time, when /proc is unusable

    def process(self) -> tuple[float, float, int]:
        with open("/proc/self/stat", encoding="ascii", errors="replace") as f:
            text = f.read()
        # The command name (field 2) may hold spaces and parentheses; it ends at the last ")".
        fields = text[text.rindex(")") + 2 :].split()
        # Offsets are field numbers from proc(5) minus 3: utime 14, stime 15,
        # num_threads 20, rss 24.
        cpu_seconds = (int(fields[11]) + int(fields[12])) / self._ticks
        return cpu_seconds, int(fields[21]) * self._page, int(fields[17])

    def host_cpu(self) -> tuple[float, float]:
        with open("/proc/stat", encoding="ascii") as f:
            first = f.readline().split()
        # user nice system idle iowait irq softirq steal; guest time is already in user.
        values = [float(v) for v in first[1:9]]
        total = sum(values)
        idle = values[3] + (values[4] if len(values) > 4 else 0.0)
        return total - idle, total

    def host_memory(self) -> tuple[float, float]:
        info: dict[str, float] = {}
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                name, _, rest = line.partition(":")
                info[name] = float(rest.split()[0]) * 1024
        available = info.get("MemAvailable")
        if available is None:  # kernels before 3.14
            available = info.get("MemFree", 0.0) + info.get("Buffers", 0.0)
            available += info.get("Cached", 0.0)
        return info["MemTotal"], available


def _make_reader() -> _PsutilReader | _ProcReader | None:
    try:
        import psutil

        return _PsutilReader(psutil)
    except Exception:  # noqa: BLE001 - psutil may fail in odd ways on odd platforms
        pass  # not installed, or unusable on this platform
    try:
        return _ProcReader()
    except Exception:  # noqa: BLE001 - an unreadable /proc: no metrics, never a crash
        logger.debug("neither psutil nor /proc is usable; no CPU or memory metrics")
        return None


class _Gpu:
    """One NVML device; NVML is initialised on first use and shut down by close()."""

    def __init__(self, index: int | str) -> None:
        self._index = index
        self._nvml: Any = None
        self._handle: Any = None
        self._tried = False
        self._failed_metrics: set[str] = set()

    def _open(self) -> None:
        self._tried = True
        try:
            import pynvml
        except ImportError:
            logger.debug("pynvml is not installed (pip install nvidia-ml-py); no GPU metrics")
            return
        try:
            pynvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - every NVML failure means no GPU metrics
            logger.debug("NVML is not usable, no GPU metrics: %s", exc)
            return
        try:
            if isinstance(self._index, str):
                # Older nvidia-ml-py releases pass the argument straight to ctypes,
                # which needs bytes; newer ones accept bytes as well.
                handle = pynvml.nvmlDeviceGetHandleByUUID(self._index.encode())
            else:
                handle = pynvml.nvmlDeviceGetHandleByIndex(self._index)
        except Exception as exc:  # noqa: BLE001 - every NVML failure means no GPU metrics
            logger.debug("NVML has no device %r, no GPU metrics: %s", self._index, exc)
            _quiet(pynvml.nvmlShutdown)
            return
        self._nvml, self._handle = pynvml, handle

    def read(self) -> dict[str, float]:
        if not self._tried:
            self._open()
        if self._handle is None:
            return {}
        nvml, handle = self._nvml, self._handle
        out: dict[str, float] = {}
        self._read_one(
            out,
            "utilization",
            lambda: {
                "sys/gpu/utilization_percent": float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            },
        )
        self._read_one(out, "memory", lambda: _memory(nvml.nvmlDeviceGetMemoryInfo(handle)))
        self._read_one(
            out,
            "power",
            lambda: {"sys/gpu/power_w": nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0},
        )
        self._read_one(
            out,
            "temperature",
            lambda: {
                "sys/gpu/temperature_c": float(
                    nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
                )
            },
        )
        return out

    def _read_one(self, out: dict[str, float], what: str, read: Callable[[], dict]) -> None:
        # Some devices (MIG slices, some boards) do not support every query; skip that
        # one metric and say so once rather than dropping the whole GPU reading.
        try:
            out.update(read())
        except Exception as exc:  # noqa: BLE001 - one failing metric must not drop the others
            if what not in self._failed_metrics:
                self._failed_metrics.add(what)
                logger.debug("GPU %s is not readable: %s", what, exc)

    def close(self) -> None:
        if self._nvml is not None:
            _quiet(self._nvml.nvmlShutdown)
        self._nvml = self._handle = None
        self._tried = False


def _memory(info: Any) -> dict[str, float]:
    out = {"sys/gpu/memory_used_mb": info.used / _MB}
    if info.total:
        out["sys/gpu/memory_percent"] = 100.0 * info.used / info.total
    return out


def _quiet(call: Callable[[], object]) -> None:
    try:
        call()
    except Exception:
        logger.debug("ignored error from %r", call, exc_info=True)


class SystemMetricsSampler:
    """Call ``sink(sample())`` every ``interval`` seconds on a daemon thread.

    Metrics: ``sys/process/cpu_percent`` (100 = one core busy), ``sys/process/rss_mb``,
    ``sys/process/threads``, ``sys/host/cpu_percent`` (100 = all cores busy),
    ``sys/host/ram_used_percent``, ``sys/host/ram_used_mb`` and, when NVML can read the
    device ``gpu_index`` (an NVML index or a ``GPU-``/``MIG-`` UUID, see
    ``tracker.rank_utils.devices.gpu_index_for``), ``sys/gpu/utilization_percent``, ``sys/gpu/memory_used_mb``,
    ``sys/gpu/memory_percent``, ``sys/gpu/power_w`` and ``sys/gpu/temperature_c``.
    CPU percentages need two readings, so the very first reading has none.

    ``sink`` runs on the sampler's thread; it should hand the reading off (for example
    append it to a series with its own timestamp) rather than do slow work.

    ``clock`` (seconds, monotonic) times the CPU percentages, and ``wait`` is how the
    thread waits between readings: it is called as ``wait(stop_event, interval)``, must
    return once ``stop_event`` is set, and returns whether it is set (the thread then
    ends). They default to ``time.monotonic`` and ``stop_event.wait(interval)``; tests
    pass their own to take readings on demand instead of on the wall clock.

    Example::

        readings = []
        sampler = SystemMetricsSampler(readings.append, interval=10.0, gpu_index=0)
        sampler.start()
        ...  # train
        sampler.stop()
        readings[0]["sys/process/rss_mb"]
    """

    def __init__(
        self,
        sink: Callable[[dict[str, float]], None],
        interval: float = 10.0,
        gpu_index: int | str | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        self.sink = sink
        self.interval = float(interval)
        self.gpu_index = gpu_index
        self._clock = clock
        self._wait = wait if wait is not None else _wait_for_event
        self._reader = _make_reader()
        self._gpu = _Gpu(gpu_index) if gpu_index is not None else None
        self._cpu_count = os.cpu_count() or 1
        self._previous: tuple[float, float, float, float] | None = None
        self._sample_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned: set[str] = set()

    @property
    def backend(self) -> str:
        """Where process and host figures come from: "psutil", "proc" or "none"."""
        return self._reader.name if self._reader is not None else "none"

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self) -> None:
        """Start sampling; the first reading is taken immediately. Idempotent."""
        with self._state_lock:
            if self.running:
                return
            self._stop_event = threading.Event()
            self._thread = threading.Thread(
                target=self._loop,
                args=(self._stop_event,),
                name="tracker-system-metrics",
                daemon=True,
            )
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop sampling and release NVML; no reading is delivered after this returns.

        Idempotent, and safe to call from inside ``sink``. Waits at most ``timeout``
        seconds for a reading in progress; a thread stuck longer (a hung driver call or
        sink) is left behind as a daemon, still holding NVML.
        """
        with self._state_lock:
            self._stop_event.set()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning(
                    "the system metrics thread did not stop within %s s; leaving it behind",
                    timeout,
                )
                return
        if self._gpu is not None:
            # sample() may be running on another thread: wait for it, but never hang.
            if self._sample_lock.acquire(timeout=-1 if timeout is None else timeout):
                try:
                    self._gpu.close()
                finally:
                    self._sample_lock.release()

    def sample(self) -> dict[str, float]:
        """Take one reading now. Never raises; a failing source is left out."""
        with self._sample_lock:
            out: dict[str, float] = {}
            if self._reader is not None:
                self._guard("cpu and memory", lambda: out.update(self._host_and_process()))
            gpu = self._gpu  # a local: narrowing to non-None carries into the lambda
            if gpu is not None:
                self._guard("GPU", lambda: out.update(gpu.read()))
            return out

    def _host_and_process(self) -> dict[str, float]:
        assert self._reader is not None
        now = self._clock()
        cpu_seconds, rss, threads = self._reader.process()
        busy, total = self._reader.host_cpu()
        mem_total, mem_available = self._reader.host_memory()
        out = {
            "sys/process/rss_mb": rss / _MB,
            "sys/process/threads": float(threads),
            "sys/host/ram_used_mb": (mem_total - mem_available) / _MB,
        }
        if mem_total > 0:
            out["sys/host/ram_used_percent"] = 100.0 * (mem_total - mem_available) / mem_total
        previous, self._previous = self._previous, (now, cpu_seconds, busy, total)
        if previous is not None:
            then, prev_cpu, prev_busy, prev_total = previous
            if now > then:
                percent = 100.0 * (cpu_seconds - prev_cpu) / (now - then)
                out["sys/process/cpu_percent"] = _clamp(percent, 100.0 * self._cpu_count)
            if total > prev_total:
                percent = 100.0 * (busy - prev_busy) / (total - prev_total)
                out["sys/host/cpu_percent"] = _clamp(percent, 100.0)
        return out

    def _guard(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except Exception:  # noqa: BLE001 - sampling must never stop the run
            self._warn_once(what, "reading %s metrics failed; will keep trying", what)

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        if key in self._warned:
            logger.debug(message, *args, exc_info=True)
        else:
            self._warned.add(key)
            logger.warning(message, *args, exc_info=True)

    def _loop(self, stop_event: threading.Event) -> None:
        # The first reading is delivered even when stop() came right after start(), so
        # that a short run still has one; stop() waits for it.
        first = True
        while first or not stop_event.is_set():
            metrics = self.sample()
            if metrics and (first or not stop_event.is_set()):
                try:
                    self.sink(metrics)
                except Exception:  # noqa: BLE001 - the sink's failure must not stop sampling
                    self._warn_once("sink", "system metrics sink raised; will keep sampling")
            first = False
            if self._wait(stop_event, self.interval):
                break


def _wait_for_event(stop_event: threading.Event, timeout: float) -> bool:
    return stop_event.wait(timeout)


def _clamp(value: float, upper: float) -> float:
    return min(max(value, 0.0), upper)
