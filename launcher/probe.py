"""The one place that reads the hardware: NVML for the GPUs, psutil for RAM and CPUs.

NVML is initialised lazily and a missing library, a failing init or a field a GPU does not
support never fails the probe: it becomes None (or no GPUs) with the reason kept in `nvml`.
The result is a frozen Snapshot; every decision made from it lives in plan.py.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from .contract import GIB
from .fmt import gib


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str | None
    total: int | None  # bytes
    free: int | None  # bytes


@dataclass(frozen=True)
class Snapshot:
    gpus: tuple[Gpu, ...]
    ram_total: int | None  # bytes
    ram_available: int | None  # bytes
    cpus: int | None
    nvml: str  # "ok", or why there are no GPUs to report
    driver: str | None = None
    pretend_vram: float | None = None  # GiB, from --vram
    pretend_ram: float | None = None  # GiB, from --ram

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def take(nvml: Any = None, ps: Any = None) -> Snapshot:
    """Read the machine. `nvml` and `ps` stand in for the pynvml and psutil modules in tests."""
    gpus, status, driver = _gpus(nvml)
    if ps is None:
        import psutil as ps
    try:
        vm = ps.virtual_memory()
        ram_total, ram_available = int(vm.total), int(vm.available)
    except Exception:  # noqa: BLE001 - a probe reports what it can
        ram_total = ram_available = None
    cpus = _cpus(ps)
    return Snapshot(gpus=gpus, ram_total=ram_total, ram_available=ram_available, cpus=cpus,
                    nvml=status, driver=driver)


def pretend(snap: Snapshot, vram_gib: float | None = None, ram_gib: float | None = None,
            indices: tuple[int, ...] = (0,)) -> Snapshot:
    """What --vram / --ram ask: plan as if each GPU had this much free VRAM (on a machine without
    GPUs, as if GPUs `indices` existed), or the machine this much available RAM."""
    if vram_gib is not None:
        free = int(vram_gib * GIB)
        gpus = tuple(replace(g, free=free, total=max(g.total or 0, free)) for g in snap.gpus) or tuple(
            Gpu(index=i, name="(pretend GPU, --vram)", total=free, free=free) for i in indices)
        snap = replace(snap, gpus=gpus, pretend_vram=vram_gib)
    if ram_gib is not None:
        ram = int(ram_gib * GIB)
        snap = replace(snap, ram_available=ram, ram_total=max(snap.ram_total or 0, ram), pretend_ram=ram_gib)
    return snap


def _gpus(nvml: Any) -> tuple[tuple[Gpu, ...], str, str | None]:
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return (), "nvidia-ml-py is not installed (pip install nvidia-ml-py)", None
    try:
        nvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError_LibraryNotFound, _DriverNotLoaded, ...
        return (), f"NVML unavailable ({_nvml_reason(e)}): no NVIDIA GPU or driver here", None
    try:
        count = nvml.nvmlDeviceGetCount()
        driver = _field(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        gpus = []
        for i in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = _field(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
            gpus.append(Gpu(
                index=i,
                name=_field(lambda: _text(nvml.nvmlDeviceGetName(handle))),
                total=int(mem.total) if mem is not None else None,
                free=int(mem.free) if mem is not None else None,
            ))
        return tuple(gpus), "ok", driver
    except Exception as e:  # noqa: BLE001
        return (), f"NVML failed while listing GPUs ({_nvml_reason(e)})", None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def _field(read):
    try:
        return read()
    except Exception:  # noqa: BLE001 - NVMLError_NotSupported and friends become None
        return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_reason(e: Exception) -> str:
    return f"{type(e).__name__}: {e}".strip()


def _cpus(ps: Any) -> int | None:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return _field(ps.cpu_count)


# ---- after a child dies: has the driver let go of its memory? -------------------------------

RELEASE_MARGIN = 512 * 1024**2  # "near its level before the attempt"


def _with_nvml(read, nvml: Any = None):
    """`read(nvml)` inside an NVML session; None when NVML is missing, will not start, or fails."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return None
    try:
        nvml.nvmlInit()
    except Exception:  # noqa: BLE001
        return None
    try:
        return read(nvml)
    except Exception:  # noqa: BLE001
        return None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def gpu_usage(indices: tuple[int, ...], nvml: Any = None) -> dict[int, tuple[int | None, set[int]]] | None:
    """{GPU index: (free bytes, pids holding memory)} for the selected GPUs; None without NVML."""
    def read(nvml):
        out = {}
        for i in indices:
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = _field(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
            procs = _field(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
            out[i] = (int(mem.free) if mem is not None else None, {int(p.pid) for p in procs})
        return out
    return _with_nvml(read, nvml)


def process_vram(indices: tuple[int, ...], pids: set[int], nvml: Any = None) -> int | None:
    """GPU memory (bytes) held by `pids` on the selected GPUs, per process through NVML; None
    where NVML cannot say (no NVML, or a driver that reports no per-process figures)."""
    def read(nvml):
        total, known = 0, False
        for i in indices:
            procs = _field(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(nvml.nvmlDeviceGetHandleByIndex(i)))
            for p in procs or []:
                used = getattr(p, "usedGpuMemory", None)
                if int(p.pid) in pids and used is not None:
                    total, known = total + int(used), True
        return total if known else None
    return _with_nvml(read, nvml) if indices else None


def wait_gpu_released(indices: tuple[int, ...], pids: set[int], before: dict[int, int | None] | None,
                      timeout: float = 120.0, nvml: Any = None, pid_visible=None, sleep=None,
                      clock=None) -> str:
    """Wait (at most `timeout` s) until no process of a dead attempt holds GPU memory. Where NVML
    reports PIDs this namespace cannot see (a container), wait instead for free memory to come
    back within RELEASE_MARGIN of `before` (free bytes per GPU before the attempt). Says what it saw."""
    import time

    sleep, clock = sleep or time.sleep, clock or time.monotonic
    if pid_visible is None:
        import psutil
        pid_visible = psutil.pid_exists
    if not indices:
        return "CPU: nothing to wait for"
    t0 = clock()
    container = False
    while True:
        usage = gpu_usage(indices, nvml)
        if usage is None:
            return "NVML unavailable: not waiting"
        holders = {p for _, held in usage.values() for p in held}
        container = container or any(not pid_visible(p) for p in holders)
        if container and before:  # host PIDs: judge by free memory
            short = {i: before[i] - free for i, (free, _) in usage.items()
                     if before.get(i) is not None and free is not None and before[i] - free > RELEASE_MARGIN}
            if not short:
                return f"free VRAM back to its level before the attempt after {clock() - t0:.1f} s"
            pending = f"GPU {', '.join(map(str, short))} still {gib(max(short.values()))} short"
        else:
            left = holders & pids
            if not left:
                return f"no process of the attempt holds GPU memory (after {clock() - t0:.1f} s)"
            pending = f"pids {sorted(left)} still hold GPU memory"
        if clock() - t0 >= timeout:
            return f"gave up waiting after {timeout:.0f} s: {pending}"
        sleep(1.0)
