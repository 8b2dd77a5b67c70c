"""The one place that reads the hardware: NVML for the GPUs, psutil for RAM and CPUs.

NVML is initialised lazily and a missing library, a failing init or a field a GPU does not
support never fails the probe: it becomes None (or no GPUs) with the reason kept in `nvml`.
The result is a frozen Snapshot; every decision made from it lives in plan.py.

The probe sees the GPUs CUDA will see. NVML lists every GPU of the machine and ignores
CUDA_VISIBLE_DEVICES; CUDA numbers only the visible ones, in the variable's order (indices in PCI
bus order, which the child sets, or GPU-/MIG- UUIDs, a prefix being enough; the list ends at the
first entry that names no GPU; an empty value hides them all). Each Gpu's `index` is its CUDA
index, what a device string names; `physical` and `uuid` say which card it is.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from typing import Any

from .contract import GIB
from .fmt import gib


VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"


@dataclass(frozen=True)
class Gpu:
    index: int  # CUDA's index, as device strings name it
    name: str | None
    total: int | None  # bytes
    free: int | None  # bytes
    physical: int | None = None  # NVML's index of the card (of a MIG instance: its parent's)
    uuid: str | None = None


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


def take(nvml: Any = None, ps: Any = None, environ: dict | None = None) -> Snapshot:
    """Read the machine. `nvml`, `ps` and `environ` stand in for pynvml, psutil and os.environ in tests."""
    gpus, status, driver = _gpus(nvml, os.environ if environ is None else environ)
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


def _gpus(nvml: Any, environ) -> tuple[tuple[Gpu, ...], str, str | None]:
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
        driver = _field(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        gpus = []
        for cuda, (handle, physical, uuid) in enumerate(visible(nvml, environ)):
            mem = _field(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
            gpus.append(Gpu(
                index=cuda,
                name=_field(lambda: _text(nvml.nvmlDeviceGetName(handle))),
                total=int(mem.total) if mem is not None else None,
                free=int(mem.free) if mem is not None else None,
                physical=physical, uuid=uuid,
            ))
        hidden = environ.get(VISIBLE_ENV)
        status = "ok" if hidden is None else f"ok ({VISIBLE_ENV}={hidden!r})"
        return tuple(gpus), status, driver
    except Exception as e:  # noqa: BLE001
        return (), f"NVML failed while listing GPUs ({_nvml_reason(e)})", None
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001
            pass


def visible(nvml: Any, environ) -> list[tuple[Any, int | None, str | None]]:
    """(NVML handle, NVML index, UUID) of each GPU CUDA sees, in CUDA's order (inside an NVML session)."""
    cards = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        cards.append((handle, i, _field(lambda: _text(nvml.nvmlDeviceGetUUID(handle)))))
    wanted = environ.get(VISIBLE_ENV)
    if wanted is None:
        return cards
    out = []
    for item in (x.strip() for x in wanted.split(",")):
        found = None
        if item.lstrip("-").isdigit():
            n = int(item)
            found = cards[n] if 0 <= n < len(cards) else None
        elif item.startswith("MIG-"):  # a MIG instance: NVML finds it by its UUID
            handle = _field(lambda: nvml.nvmlDeviceGetHandleByUUID(item))
            if handle is not None:
                parent = _field(lambda: nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle))
                found = (handle, next((i for h, i, _ in cards if _same(h, parent)), None), item)
        elif item:
            matches = [c for c in cards if c[2] and c[2].startswith(item if item.startswith("GPU-") else f"GPU-{item}")]
            found = matches[0] if len(matches) == 1 else None
        if found is None or any(_same(found[0], h) for h, _, _ in out):
            break  # CUDA stops at the first entry it cannot use
        out.append(found)
    return out


def _same(a: Any, b: Any) -> bool:
    """Two NVML handles (ctypes pointers, which compare by identity) name one device."""
    import ctypes
    try:
        return ctypes.cast(a, ctypes.c_void_p).value == ctypes.cast(b, ctypes.c_void_p).value
    except (TypeError, ctypes.ArgumentError):
        return a == b


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


def gpu_usage(indices: tuple[int, ...], nvml: Any = None, environ=None) -> dict[int, tuple[int | None, set[int]]] | None:
    """{CUDA index: (free bytes, pids holding memory)} for the selected GPUs; None without NVML."""
    def read(nvml):
        handles = [h for h, _, _ in visible(nvml, os.environ if environ is None else environ)]
        out = {}
        for i in indices:
            handle = handles[i]
            mem = _field(lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
            procs = _field(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle)) or []
            out[i] = (int(mem.free) if mem is not None else None, {int(p.pid) for p in procs})
        return out
    return _with_nvml(read, nvml)


def process_vram(indices: tuple[int, ...], pids: set[int], nvml: Any = None, environ=None) -> int | None:
    """GPU memory (bytes) held by `pids` on the selected GPUs (CUDA indices), per process through
    NVML; None where NVML cannot say (no NVML, or a driver that reports no per-process figures)."""
    def read(nvml):
        handles = [h for h, _, _ in visible(nvml, os.environ if environ is None else environ)]
        total, known = 0, False
        for i in indices:
            procs = _field(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handles[i]))
            for p in procs or []:
                used = getattr(p, "usedGpuMemory", None)
                if int(p.pid) in pids and used is not None:
                    total, known = total + int(used), True
        return total if known else None
    return _with_nvml(read, nvml) if indices else None


def wait_gpu_released(indices: tuple[int, ...], pids: set[int], before: dict[int, int | None] | None,
                      timeout: float = 120.0, nvml: Any = None, pid_visible=None, sleep=None,
                      clock=None, environ=None) -> str:
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
        usage = gpu_usage(indices, nvml, environ)
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
