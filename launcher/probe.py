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
