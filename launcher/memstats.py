"""Memory statistics a child reads while it trains or runs a trial, behind one small interface.

A trial measures a rung, and the thrash rule watches a night, with the same numbers (docs/design.md,
"Tuning: a measured trial per rung"):

- on a GPU, torch's caching allocator (`torch.cuda.memory_stats`: current and peak reserved and
  allocated bytes, `num_alloc_retries`, `num_ooms`) and the device's used memory from NVML, which
  counts the CUDA context and every other process on the card;
- on the CPU, the device's memory is the child's process tree: the proportional set (PSS) of the
  child and its dataloader workers, summed, so that pages they share (the copy-on-write pages a
  forked worker shares with the child, a RAM cache in shared memory) count once, not once a
  process (`tree_rss`, read at most as often as `Paced` allows).

`Stats.sample()` returns one `Sample`; `CudaStats` and `HostStats` are the real providers, and a
test hands the measurement code a stand-in with the same two methods, so the CUDA path runs on a
CPU. `RisingWindows` is the thrash rule itself (Composer's): alloc retries that rose in two
consecutive windows of batches. Nothing here imports torch at import time.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import psutil

# torch.cuda.memory_stats keys (c10/cuda/CUDACachingAllocator.cpp, DeviceStats)
RESERVED, RESERVED_PEAK = "reserved_bytes.all.current", "reserved_bytes.all.peak"
ALLOCATED, ALLOCATED_PEAK = "allocated_bytes.all.current", "allocated_bytes.all.peak"
ALLOC_RETRIES, OOMS = "num_alloc_retries", "num_ooms"


@dataclass(frozen=True)
class Sample:
    """One look at memory. Every number may be unknown (None): the CPU has no allocator, NVML may
    be missing, a worker may vanish between two reads."""

    reserved: int | None = None  # bytes torch's allocator holds from the device now
    allocated: int | None = None  # bytes of live tensors now
    peak_reserved: int | None = None  # since the last reset_peaks
    peak_allocated: int | None = None
    alloc_retries: int | None = None  # cumulative for the process: cudaMalloc failed, cache freed, retried
    ooms: int | None = None  # cumulative: OOMs the allocator raised (caught ones included)
    device_used: int | None = None  # the whole device's used memory (NVML), CUDA context included
    rss: int | None = None  # the child and its workers, summed: their PSS where readable (tree_rss)


class Stats(Protocol):
    def sample(self) -> Sample: ...

    def reset_peaks(self) -> None: ...


def tree_rss(pid: int | None = None, ps: Any = psutil) -> int | None:
    """What a process and all its descendants (its dataloader workers) hold in RAM: their
    proportional set sizes (PSS, /proc/<pid>/smaps_rollup through psutil's memory_full_info),
    summed, where readable, else their RSS; None when the process itself cannot be read. PSS
    splits a shared page between the processes that map it, so the sum counts the pages the
    workers share with the child (copy-on-write after the fork, a RAM cache in shared memory)
    once: RSS summed counts them once per process, with 8 workers several times what the tree
    holds. Slower than RSS (the kernel walks the page tables: about 5 ms a process holding
    0.5 GiB), hence `Paced`."""
    try:
        root = ps.Process(pid or os.getpid())
        procs = [root, *root.children(recursive=True)]
    except ps.Error:
        return None
    total = 0
    for p in procs:
        try:
            total += _pss(p, ps)
        except ps.Error:  # a worker that ended between the two reads holds nothing
            continue
    return total


def _pss(p: Any, ps: Any) -> int:
    """One process's PSS where the kernel gives it (Linux, a readable smaps), else its RSS."""
    try:
        pss = getattr(p.memory_full_info(), "pss", None)
    except (ps.AccessDenied, NotImplementedError, AttributeError):
        pss = None
    return int(pss) if pss is not None else p.memory_info().rss


class Paced:
    """A reader of the tree's memory (`tree_rss`) that reads at most once per
    max(`every_s`, `share` × the last read's own time), and in between answers the last reading:
    on a big tree (a RAM cache of many GiB mapped by every worker) one read takes long, and a
    read at every batch end would cost the trial its budget. `force()`: the next call reads."""

    def __init__(self, read: Callable[[], int | None] = tree_rss, every_s: float = 0.5, share: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self._read, self.every_s, self.share, self.clock = read, every_s, share, clock
        self._last: int | None = None
        self._next: float | None = None  # when the next read is due; None: now

    def __call__(self) -> int | None:
        now = self.clock()
        if self._next is not None and now < self._next:
            return self._last
        self._last = self._read()
        took = self.clock() - now
        self._next = now + max(self.every_s, self.share * took)
        return self._last

    def force(self) -> None:
        self._next = None


class HostStats:
    """The CPU: the device's memory is the child tree's (`tree_rss`: PSS summed). No allocator, so
    no retries."""

    def __init__(self, rss: Callable[[], int | None] | None = None):
        self._rss = rss or Paced()
        self._peak: int | None = None

    def sample(self) -> Sample:
        now = self._rss()
        if now is not None:
            self._peak = max(self._peak or 0, now)
        return Sample(reserved=now, allocated=now, peak_reserved=self._peak, peak_allocated=self._peak, rss=now)

    def reset_peaks(self) -> None:
        self._peak = None

    def read_now(self) -> None:
        """The next sample reads the tree afresh (a paced reader's `force`)."""
        _force(self._rss)


def _force(read: Callable[[], int | None]) -> None:
    force = getattr(read, "force", None)
    if force is not None:
        force()


class CudaStats:
    """One CUDA device, as torch's allocator and NVML see it. `memory_stats` and `device_used` are
    injectable: a test passes stand-ins and runs this path on a CPU."""

    def __init__(self, index: int, memory_stats: Callable[[], dict] | None = None,
                 reset: Callable[[], None] | None = None, device_used: Callable[[], int | None] | None = None,
                 rss: Callable[[], int | None] | None = None):
        rss = rss or Paced()
        if memory_stats is None or reset is None:
            import torch
            memory_stats = memory_stats or (lambda: torch.cuda.memory_stats(index))
            reset = reset or (lambda: torch.cuda.reset_peak_memory_stats(index))
        self._stats, self._reset, self._rss = memory_stats, reset, rss
        self._device_used = device_used if device_used is not None else nvml_used(index)

    def sample(self) -> Sample:
        s = self._stats() or {}
        return Sample(reserved=s.get(RESERVED), allocated=s.get(ALLOCATED), peak_reserved=s.get(RESERVED_PEAK),
                      peak_allocated=s.get(ALLOCATED_PEAK), alloc_retries=s.get(ALLOC_RETRIES), ooms=s.get(OOMS),
                      device_used=self._device_used(), rss=self._rss())

    def reset_peaks(self) -> None:
        self._reset()

    def read_now(self) -> None:
        _force(self._rss)


def nvml_used(index: int) -> Callable[[], int | None]:
    """A reader of GPU `index`'s used memory from NVML (the handle opened once); a reader of None
    when NVML is missing. `index` is torch's, which CUDA_DEVICE_ORDER=PCI_BUS_ID (the child's
    environment) makes NVML's too, unless CUDA_VISIBLE_DEVICES renumbers: then the visible list maps it."""
    try:
        import pynvml
        pynvml.nvmlInit()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        physical = int(visible.split(",")[index]) if visible and visible.split(",")[index].strip().isdigit() else index
        handle = pynvml.nvmlDeviceGetHandleByIndex(physical)
    except Exception:  # noqa: BLE001 - no NVML, no driver, a UUID in CUDA_VISIBLE_DEVICES: unknown
        return lambda: None

    def used() -> int | None:
        try:
            return int(pynvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:  # noqa: BLE001
            return None
    return used


def for_device(device: str) -> Stats:
    """The provider for a child's device string ("cpu", "0", "0,1": the first GPU of the list)."""
    if device == "cpu" or not device:
        return HostStats()
    import torch
    if not torch.cuda.is_available():
        return HostStats()
    return CudaStats(int(device.split(",")[0]))  # DDP: each rank's own device is its trainer's


class RisingWindows:
    """Alloc retries that rose in `needed` consecutive windows of `window` batches (Composer's
    rule: the allocator is thrashing before it runs out). `add(retries)` once per batch with the
    cumulative count; True at the window end where the rule fires, after which it counts afresh."""

    def __init__(self, window: int = 10, needed: int = 2):
        self.window, self.needed = window, needed
        self._batches = 0
        self._start: int | None = None  # the count at the window's start
        self._rising = 0  # consecutive windows in which it rose

    def add(self, retries: int | None) -> bool:
        if retries is None:
            return False
        if self._start is None:
            self._start = retries
        self._batches += 1
        if self._batches < self.window:
            return False
        rose = retries > self._start
        self._batches, self._start = 0, retries
        self._rising = self._rising + 1 if rose else 0
        if self._rising >= self.needed:
            self._rising = 0
            return True
        return False
