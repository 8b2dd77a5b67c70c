"""Host-RAM evidence for a child that died of SIGKILL: was it the kernel's OOM killer?

A SIGKILL says nothing about who sent it. Two facts do (docs/design.md, "Failure kinds and policy", `host_oom`):

- the `oom_kill` counter of the memory cgroup the child ran in rose while it ran (cgroup v2
  `memory.events`, v1 `memory.oom_control`; both read "oom_kill N");
- the supervisor's own RAM samples, taken every few seconds while the child ran, show the machine
  nearly out of available memory just before the death.

The parsers are pure functions over file text, so both cgroup versions are tested from fixtures;
`RamWatch` takes a psutil-like module, a clock and the file locations, so it is tested without a
real machine. Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import psutil

from .fmt import gib

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC = Path("/proc")
V2_EVENTS = "memory.events"  # hierarchical in v2: kills in descendant cgroups count too
V1_OOM_CONTROL = "memory.oom_control"  # local in v1: only kills inside this very cgroup

HISTORY = 60  # samples kept (a few minutes at the supervisor's pace)
WINDOW_S = 10.0  # how far before the death a low-RAM sample still counts
LOW_AVAILABLE_FRACTION = 0.05  # available RAM under max(5 % of total, 512 MiB) is "exhausted"
LOW_AVAILABLE_BYTES = 512 * 1024 ** 2


# --- pure parsing ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CgroupLine:
    """One line of /proc/<pid>/cgroup: "hierarchy-id:controller,list:/path" ("0::/path" is v2)."""
    hierarchy: str
    controllers: tuple[str, ...]
    path: str


def parse_proc_cgroup(text: str) -> list[CgroupLine]:
    out = []
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrl, path = parts
        out.append(CgroupLine(hid, tuple(c for c in ctrl.split(",") if c), path))
    return out


def parse_oom_kill(text: str) -> int | None:
    """The `oom_kill N` line of `memory.events` (v2) or `memory.oom_control` (v1)."""
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "oom_kill":
            try:
                return int(value.strip())
            except ValueError:
                return None
    return None


def counter_candidates(proc_cgroup_text: str, root: Path = CGROUP_ROOT) -> list[Path]:
    """Where the oom_kill counter of the cgroup described by `proc_cgroup_text` may live, best first.

    A v1 memory controller wins over the v2 line: in "hybrid" mode (v1 controllers plus an empty v2
    hierarchy at /sys/fs/cgroup/unified) the v2 line exists but carries no memory controller. Inside
    a cgroup namespace the path is "/" and the mount shows the process's own cgroup, which the same
    join finds.
    """
    lines = parse_proc_cgroup(proc_cgroup_text)
    found: list[Path] = []
    for ln in lines:
        if "memory" in ln.controllers:
            rel = ln.path.lstrip("/")
            for mount in ("memory", ",".join(ln.controllers)):
                p = root / mount / rel / V1_OOM_CONTROL
                if p not in found:
                    found.append(p)
    for ln in lines:
        if ln.hierarchy == "0" and not ln.controllers:
            rel = ln.path.lstrip("/")
            for base in (root, root / "unified"):
                p = base / rel / V2_EVENTS
                if p not in found:
                    found.append(p)
    return found


def read_counter(path: Path) -> int | None:
    try:
        return parse_oom_kill(path.read_text())
    except OSError:
        return None


def counter_file(proc_cgroup: Path = PROC / "self" / "cgroup", root: Path = CGROUP_ROOT) -> Path | None:
    """The first readable oom_kill counter file of the process whose cgroup file this is."""
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return None
    for p in counter_candidates(text, root):
        if read_counter(p) is not None:
            return p
    return None


def counter_file_of_dir(cgroup_dir: Path) -> Path | None:
    """The counter file inside a cgroup directory (v2 `memory.events`, else v1 `memory.oom_control`)."""
    for name in (V2_EVENTS, V1_OOM_CONTROL):
        if read_counter(cgroup_dir / name) is not None:
            return cgroup_dir / name
    return None


def oom_kill_count(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC / "self" / "cgroup") -> int | None:
    """The `oom_kill` counter of the memory cgroup this process (and its children, unless moved) is
    in; None where no counter is readable."""
    path = counter_file(proc_cgroup, root)
    return read_counter(path) if path else None


# --- the supervisor's watch --------------------------------------------------------------------

class RamWatch:
    """RAM samples and cgroup OOM counters while a child runs; `evidence()` after it died of SIGKILL.

    The counters watched are those of the supervisor's own cgroup (children inherit it), of any
    cgroup passed in `cgroups`, and of the cgroup of each pid seen by `sample()`: a child moved into
    a cgroup of its own (a container runtime, a test's memory limit) is found while it lives,
    because once it is dead /proc no longer says where it was. In cgroup v1 a kill counts only in
    the cgroup it happened in, so the child's own cgroup matters.
    """

    def __init__(self, ps=psutil, clock: Callable[[], float] = time.monotonic,
                 root: Path = CGROUP_ROOT, proc: Path = PROC, cgroups: Iterable[Path] = (),
                 history: int = HISTORY, window_s: float = WINDOW_S,
                 low_fraction: float = LOW_AVAILABLE_FRACTION, low_bytes: int = LOW_AVAILABLE_BYTES):
        self.ps = ps
        self.clock = clock
        self.root = Path(root)
        self.proc = Path(proc)
        self.cgroups = [Path(c) for c in cgroups]
        self.samples: deque[dict] = deque(maxlen=history)
        self.window_s = window_s
        self.low_fraction = low_fraction
        self.low_bytes = low_bytes
        self.baseline: dict[Path, int] = {}  # counter file -> value when first watched
        self._pids_seen: set[int] = set()

    def start(self) -> None:
        """Forget earlier samples and record the counters' baseline (before the child starts)."""
        self.samples.clear()
        self.baseline.clear()
        self._pids_seen.clear()
        own = counter_file(self.proc / "self" / "cgroup", self.root)
        self._watch(own)
        for d in self.cgroups:
            self._watch(counter_file_of_dir(d))

    def _watch(self, path: Path | None) -> None:
        if path is not None and path not in self.baseline:
            value = read_counter(path)
            if value is not None:
                self.baseline[path] = value

    def sample(self, pids: list[int]) -> dict:
        vm = self.ps.virtual_memory()
        rss = 0
        for pid in pids:
            try:
                rss += self.ps.Process(pid).memory_info().rss
            except (self.ps.NoSuchProcess, self.ps.AccessDenied, self.ps.ZombieProcess, ProcessLookupError):
                continue
            if pid not in self._pids_seen:
                self._pids_seen.add(pid)
                self._watch(counter_file(self.proc / str(pid) / "cgroup", self.root))
        total, available = int(vm.total), int(vm.available)
        s = {"t": self.clock(), "ram_total": total, "ram_available": available,
             "ram_used_pct": round(100.0 * (total - available) / total, 1) if total else None,
             "tree_rss": rss}
        self.samples.append(s)
        return s

    def oom_kills(self) -> list[tuple[Path, int, int]]:
        """(counter file, baseline, now) for each watched counter that rose."""
        rose = []
        for path, before in self.baseline.items():
            now = read_counter(path)
            if now is not None and now > before:
                rose.append((path, before, now))
        return rose

    def low_ram_sample(self, now: float | None = None) -> dict | None:
        """The sample with the least available RAM within `window_s` before `now`, if it was low."""
        now = self.clock() if now is None else now
        recent = [s for s in self.samples if now - self.window_s <= s["t"] <= now]
        if not recent:
            return None
        worst = min(recent, key=lambda s: s["ram_available"])
        limit = max(self.low_fraction * worst["ram_total"], self.low_bytes)
        return worst if worst["ram_available"] < limit else None

    def evidence(self, now: float | None = None) -> str | None:
        """One line saying why host RAM is to blame for a SIGKILL at `now` (default: the clock), or
        None when neither a counter rose nor RAM was low."""
        now = self.clock() if now is None else now
        rose = self.oom_kills()
        if rose:
            path, before, after = rose[0]
            where = self._where(path)
            return f"cgroup oom_kill {before} → {after} (the kernel's OOM killer{where})"
        low = self.low_ram_sample(now)
        if low:
            ago = max(0.0, now - low["t"])
            tree = f"; the child's tree held {gib(low['tree_rss'])}" if low["tree_rss"] else ""
            return (f"RAM {low['ram_used_pct']:.1f} % used ({gib(low['ram_available'])} available) "
                    f"{ago:.0f} s before the death{tree}")
        return None

    def _where(self, path: Path) -> str:
        try:
            rel = path.parent.relative_to(self.root)
        except ValueError:
            return f", {path.parent}"
        parts = rel.parts[1:] if rel.parts and rel.parts[0] in ("memory", "unified") else rel.parts
        return f", cgroup /{'/'.join(parts)}" if parts else ""
