"""What the whole machine uses, sampled by the server: CPU, RAM, the disk of STUDIO_HOME and, per GPU, utilisation,
memory, temperature and power.

Lifecycle: ``SystemSampler.start()`` takes a first sample at once (so a page opened right after the start has
something to draw), then a daemon thread takes one every ``interval_s`` until ``stop()``. Samples live in a ring
buffer (a ``deque``) holding the last ``keep_s`` seconds, in the server process: a page reload shows the history,
a server restart starts it again. Nothing is written to the database (per-job samples are, see
``studio.monitoring.jobs``).

GPUs are read through NVML (``nvidia-ml-py``, ``import pynvml``). Without an NVIDIA driver ``nvmlInit`` fails;
``gpu_status()`` then says why ("NVML library not found", "no device") and samples carry no GPU entries -- never
zeros that would read as an idle GPU. ``Nvml`` is also what the worker uses for the GPU memory of a job's processes.

The sampler measures its own cost (CPU time of its thread per sample, ``cost()``): reading /proc and NVML takes
about a millisecond, well under 1% of one core at the default 5 s.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from studio.settings import Settings

if TYPE_CHECKING:
    import plotly.graph_objects as go

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 5.0
DEFAULT_KEEP_S = 3600.0
NO_GPU = "No GPU on this machine"


@dataclass(frozen=True)
class GpuStatus:
    """Whether GPUs can be read, how many, and -- when none -- why."""

    available: bool
    count: int = 0
    names: tuple[str, ...] = ()
    reason: str = ""  # why there is no GPU ("" when there is one)

    @property
    def note(self) -> str:
        """One line for a user: "2 GPUs: NVIDIA H100, NVIDIA H100" or "No GPU on this machine (why)"."""
        if not self.available:
            return f"{NO_GPU} ({self.reason})"
        return f"{self.count} GPU{'s' if self.count != 1 else ''}: {', '.join(self.names)}"


@dataclass(frozen=True)
class GpuSample:
    """One GPU at one instant; a field NVML cannot read on this device is None."""

    index: int
    name: str
    utilization_percent: float | None
    memory_used_bytes: int | None
    memory_total_bytes: int | None
    temperature_c: float | None
    power_w: float | None


@dataclass(frozen=True)
class SystemSample:
    """The machine at one instant (``at``: seconds since the epoch)."""

    at: float
    cpu_percent: float  # of the whole machine (100 = every core busy)
    ram_used_bytes: int
    ram_total_bytes: int
    disk_used_bytes: int
    disk_total_bytes: int
    gpus: tuple[GpuSample, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ``resources_snapshot`` API answers with these)."""
        data = asdict(self)
        data["gpus"] = [asdict(g) for g in self.gpus]
        return data


@dataclass(frozen=True)
class SamplerCost:
    """What the sampler itself costs: CPU time of its thread per sample, and that as % of one core."""

    samples: int
    cpu_s_per_sample: float
    interval_s: float

    @property
    def percent_of_core(self) -> float:
        """Share of one core the sampler keeps busy at its interval."""
        return 100.0 * self.cpu_s_per_sample / self.interval_s if self.interval_s > 0 else 0.0


def _nvml_value(read: Any, *args: Any) -> Any:
    """One NVML read; None when the device does not support it (power on some boards, temperature in some VMs)."""
    import pynvml

    try:
        return read(*args)
    except pynvml.NVMLError:
        return None


class Nvml:
    """NVML opened once for one owner (a sampler, a worker); ``status`` says whether there are GPUs and why not.

    ``nvmlInit`` is reference-counted by the library, so several owners in one process are fine; ``close()``
    releases this owner's reference.
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._open = False
        self.status = self._init()

    def _init(self) -> GpuStatus:
        try:
            import pynvml
        except ImportError:
            return GpuStatus(False, reason="nvidia-ml-py is not installed: pip install nvidia-ml-py")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError_LibraryNotFound:
            return GpuStatus(False, reason="NVML library not found: no NVIDIA driver")
        except pynvml.NVMLError as exc:
            return GpuStatus(False, reason=f"NVML could not start: {exc}")
        self._open = True
        try:
            count = int(pynvml.nvmlDeviceGetCount())
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            names = tuple(str(_nvml_value(pynvml.nvmlDeviceGetName, h) or "GPU") for h in self._handles)
        except pynvml.NVMLError as exc:
            self.close()
            return GpuStatus(False, reason=f"NVML could not list devices: {exc}")
        if not self._handles:
            self.close()
            return GpuStatus(False, reason="no device: the NVIDIA driver sees no GPU")
        return GpuStatus(True, count=len(self._handles), names=names)

    def sample(self) -> tuple[GpuSample, ...]:
        """Every GPU now: utilisation, memory, temperature, power (empty without GPUs)."""
        if not self._handles:
            return ()
        import pynvml

        out = []
        for index, handle in enumerate(self._handles):
            util = _nvml_value(pynvml.nvmlDeviceGetUtilizationRates, handle)
            memory = _nvml_value(pynvml.nvmlDeviceGetMemoryInfo, handle)
            temp = _nvml_value(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU)
            power_mw = _nvml_value(pynvml.nvmlDeviceGetPowerUsage, handle)
            out.append(
                GpuSample(
                    index=index,
                    name=self.status.names[index],
                    utilization_percent=float(util.gpu) if util is not None else None,
                    memory_used_bytes=int(memory.used) if memory is not None else None,
                    memory_total_bytes=int(memory.total) if memory is not None else None,
                    temperature_c=float(temp) if temp is not None else None,
                    power_w=power_mw / 1000.0 if power_mw is not None else None,
                )
            )
        return tuple(out)

    def process_memory(self, pids: Iterable[int]) -> int | None:
        """GPU memory held by these processes on all GPUs, in bytes; None without GPUs.

        NVML reports host PIDs: inside a container with its own PID namespace the processes are not found and
        this says 0.
        """
        if not self._handles:
            return None
        import pynvml

        wanted = set(pids)
        total = 0
        for handle in self._handles:
            for read in (pynvml.nvmlDeviceGetComputeRunningProcesses, pynvml.nvmlDeviceGetGraphicsRunningProcesses):
                for proc in _nvml_value(read, handle) or []:
                    if proc.pid in wanted and proc.usedGpuMemory is not None:
                        total += int(proc.usedGpuMemory)
        return total

    def close(self) -> None:
        """Release NVML (once)."""
        if self._open:
            import pynvml

            self._open = False
            self._handles = []
            with contextlib.suppress(pynvml.NVMLError):
                pynvml.nvmlShutdown()


def _existing(path: Path) -> Path:
    """The path, or its nearest existing parent (disk_usage needs a path that exists)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


class SystemSampler:
    """Samples the machine every ``interval_s`` in a daemon thread and keeps the last ``keep_s`` seconds."""

    def __init__(
        self, settings: Settings, interval_s: float = DEFAULT_INTERVAL_S, keep_s: float = DEFAULT_KEEP_S
    ) -> None:
        if interval_s <= 0 or keep_s <= 0:
            raise ValueError("interval_s and keep_s must be positive")
        self.settings = settings
        self.interval_s = interval_s
        self.keep_s = keep_s
        # a bound on memory even if the clock jumps; the time window below is what users see
        self._samples: deque[SystemSample] = deque(maxlen=math.ceil(keep_s / interval_s) + 1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Nvml | None = None
        self._cpu_prev: Any = None
        self._cost_s = 0.0
        self._cost_n = 0

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> SystemSampler:
        """Take a first sample now, then one every ``interval_s`` in a daemon thread; returns itself."""
        if self._thread is not None:
            return self
        self._nvml = Nvml()
        if not self._nvml.status.available:
            log.info("resources: %s", self._nvml.status.note)
        self._stop.clear()
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="studio-system-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (the history stays readable) and release NVML."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s + 5)
            self._thread = None
        if self._nvml is not None:
            self._nvml.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample_once()
            except Exception:  # one bad read (a vanished mount, a GPU fallen off the bus) must not end the history
                log.exception("resources: a system sample failed")

    # -- sampling --------------------------------------------------------------------------------------------
    def sample_once(self) -> SystemSample:
        """Take one sample now and keep it (the thread calls this; tests may too)."""
        started = time.thread_time()
        now = time.time()
        sample = SystemSample(
            at=now,
            cpu_percent=self._cpu_percent(),
            gpus=self._nvml.sample() if self._nvml is not None else (),
            **self._memory_and_disk(),
        )
        with self._lock:
            self._samples.append(sample)
            while self._samples and self._samples[0].at < now - self.keep_s:
                self._samples.popleft()
            self._cost_s += time.thread_time() - started
            self._cost_n += 1
        return sample

    def _cpu_percent(self) -> float:
        """Busy share of all cores since the previous sample (since boot for the first): psutil's own
        ``cpu_percent(None)`` keeps one module-wide baseline that any other caller in the process would move."""
        current = psutil.cpu_times()
        previous, self._cpu_prev = self._cpu_prev, current
        if previous is None:
            return _busy_percent(None, current)
        return _busy_percent(previous, current)

    def _memory_and_disk(self) -> dict[str, int]:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(_existing(self.settings.home)))
        return {
            "ram_used_bytes": int(memory.total - memory.available),
            "ram_total_bytes": int(memory.total),
            "disk_used_bytes": int(disk.used),
            "disk_total_bytes": int(disk.total),
        }

    # -- reading ---------------------------------------------------------------------------------------------
    def snapshot(self) -> list[SystemSample]:
        """The kept samples, oldest first."""
        with self._lock:
            return list(self._samples)

    def latest(self) -> SystemSample | None:
        """The newest sample (None before ``start()``)."""
        with self._lock:
            return self._samples[-1] if self._samples else None

    def gpu_status(self) -> GpuStatus:
        """Whether GPUs are sampled; when not, why ("NVML library not found: no NVIDIA driver", "no device")."""
        if self._nvml is None:
            return GpuStatus(False, reason="the sampler has not started")
        return self._nvml.status

    def cost(self) -> SamplerCost:
        """CPU time the sampler's thread spent per sample so far, and that as % of one core at its interval."""
        with self._lock:
            per_sample = self._cost_s / self._cost_n if self._cost_n else 0.0
            return SamplerCost(samples=self._cost_n, cpu_s_per_sample=per_sample, interval_s=self.interval_s)

    def snapshot_dict(self, last: int = 12) -> dict[str, Any]:
        """JSON of the newest ``last`` samples, the GPU note and the sampler's own cost."""
        samples = self.snapshot()
        cost = self.cost()
        status = self.gpu_status()
        return {
            "latest": samples[-1].to_dict() if samples else None,
            "samples": [s.to_dict() for s in samples[-last:]],
            "kept": len(samples),
            "interval_s": self.interval_s,
            "keep_s": self.keep_s,
            "gpu": {"available": status.available, "count": status.count, "note": status.note},
            "sampler_cost": {
                "samples": cost.samples,
                "cpu_ms_per_sample": round(cost.cpu_s_per_sample * 1000, 3),
                "percent_of_core": round(cost.percent_of_core, 4),
            },
        }


def _busy_percent(previous: Any, current: Any) -> float:
    """Busy % between two ``psutil.cpu_times()`` readings (idle and iowait count as idle)."""

    def totals(times: Any) -> tuple[float, float]:
        # Linux counts guest time inside user/nice as well: leave it out once, as psutil does
        total = float(sum(times)) - float(getattr(times, "guest", 0.0)) - float(getattr(times, "guest_nice", 0.0))
        idle = float(times.idle) + float(getattr(times, "iowait", 0.0))
        return total, total - idle

    total, busy = totals(current)
    if previous is not None:
        prev_total, prev_busy = totals(previous)
        total, busy = total - prev_total, busy - prev_busy
    return round(min(100.0, max(0.0, 100.0 * busy / total)), 1) if total > 0 else 0.0


# -- figures (plotly; the Resources tab shows them) ----------------------------------------------------------
GIB = 1024**3
_LAYOUT: dict[str, Any] = {
    "height": 260,
    "margin": {"l": 55, "r": 20, "t": 40, "b": 35},
    "legend": {"orientation": "h", "y": -0.25},
}


def _times(samples: Sequence[SystemSample]) -> list[Any]:
    from datetime import datetime

    return [datetime.fromtimestamp(s.at) for s in samples]


def cpu_figure(samples: Sequence[SystemSample]) -> go.Figure:
    """CPU % of the whole machine over the kept history."""
    import plotly.graph_objects as go

    last = f" — now {samples[-1].cpu_percent:.0f}%" if samples else ""
    fig = go.Figure(go.Scatter(x=_times(samples), y=[s.cpu_percent for s in samples], name="CPU %", mode="lines"))
    fig.update_layout(title=f"CPU{last}", yaxis={"title": "%", "range": [0, 100]}, **_LAYOUT)
    return fig


def memory_disk_figure(samples: Sequence[SystemSample], kind: str) -> go.Figure:
    """RAM (``kind="ram"``) or the disk of STUDIO_HOME (``kind="disk"``): used and total, in GiB."""
    import plotly.graph_objects as go

    pick = {
        "ram": (lambda s: s.ram_used_bytes, lambda s: s.ram_total_bytes, "RAM"),
        "disk": (lambda s: s.disk_used_bytes, lambda s: s.disk_total_bytes, "Disk"),
    }
    used_of, total_of, label = pick[kind]
    times = _times(samples)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=times, y=[used_of(s) / GIB for s in samples], name="used", mode="lines", fill="tozeroy"))
    fig.add_trace(go.Scatter(x=times, y=[total_of(s) / GIB for s in samples], name="total", mode="lines"))
    now = f" — {used_of(samples[-1]) / GIB:.1f} of {total_of(samples[-1]) / GIB:.1f} GiB" if samples else ""
    fig.update_layout(title=f"{label}{now}", yaxis={"title": "GiB", "rangemode": "tozero"}, **_LAYOUT)
    return fig


GPU_METRICS: dict[str, tuple[str, str]] = {
    "utilization": ("GPU utilisation", "%"),
    "memory": ("GPU memory used", "GiB"),
    "temperature": ("GPU temperature", "°C"),
    "power": ("GPU power", "W"),
}


def _gpu_value(gpu: GpuSample, metric: str) -> float | None:
    if metric == "utilization":
        return gpu.utilization_percent
    if metric == "memory":
        return gpu.memory_used_bytes / GIB if gpu.memory_used_bytes is not None else None
    if metric == "temperature":
        return gpu.temperature_c
    return gpu.power_w


def gpu_figure(samples: Sequence[SystemSample], metric: str) -> go.Figure:
    """One GPU metric (a key of ``GPU_METRICS``) over time, one line per GPU (memory: with each GPU's total)."""
    import plotly.graph_objects as go

    title, unit = GPU_METRICS[metric]
    times = _times(samples)
    count = max((len(s.gpus) for s in samples), default=0)
    fig = go.Figure()
    for index in range(count):
        points = [(t, s.gpus[index]) for t, s in zip(times, samples, strict=True) if index < len(s.gpus)]
        name = f"GPU {index}"
        fig.add_trace(go.Scatter(x=[t for t, _ in points], y=[_gpu_value(g, metric) for _, g in points], name=name))
        if metric == "memory" and points and points[-1][1].memory_total_bytes:
            total = points[-1][1].memory_total_bytes / GIB
            fig.add_trace(
                go.Scatter(x=[points[0][0], points[-1][0]], y=[total, total], name=f"{name} total", mode="lines")
            )
    fig.update_layout(title=title, yaxis={"title": unit, "rangemode": "tozero"}, **_LAYOUT)
    return fig
