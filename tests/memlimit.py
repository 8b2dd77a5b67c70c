"""Confine a command's memory, so a test can make the kernel really OOM-kill it without
endangering the machine.

Two ways, most real first:

- `memory_limited(limit)`: a child memory cgroup of the one this process is in (cgroup v1: the
  memory controller's `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`; v2: `memory.max`
  and `memory.swap.max`). A process that touches more than the limit is SIGKILLed by the kernel's
  OOM killer (Popen returncode -9), the cgroup's `oom_kill` counter goes up and the kernel log
  says "Memory cgroup out of memory: Killed process N". Needs root (or a delegated cgroup).
- `rlimit_wrap(limit, cmd)`: RLIMIT_AS (`ulimit -v`) for the command. Nothing is killed: an
  allocation past the limit fails, so Python raises `MemoryError` and torch
  "DefaultCPUAllocator: can't allocate memory"; the process exits 1 with that in its log. CPU
  only: CUDA reserves far more address space than any useful limit.

Both run the command through `/bin/sh -c '...; exec "$@"'`, so the confined process keeps the pid
the launcher started, and any launch function (the supervisor's own, with its tee, heartbeat
watch and tree kill) can start it unchanged: see `ConfinedLaunch`.

    with memory_limited(256 << 20) as cg:
        code = subprocess.call(cg.wrap([sys.executable, "hog.py"]))  # -9
        cg.oom_kill()                                                   # 1

    with confined_launch(512 << 20, inner=ChildProcess()) as launch:  # the supervisor's launch seam
        supervisor = Supervisor(..., launch=launch)
        ...
        launch.attempts[-1].oom_kill               # the counter when that child ended
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import subprocess
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
NAME_PREFIX = "rtdetr-memlimit-"
MAX_FRACTION_OF_RAM = 0.25  # a limit above a quarter of the machine's RAM is refused
_names = itertools.count()

Launch = Callable[..., object]  # (cmd, env, log_path, *more) -> a return code, or a record with .exit_code


class Unsupported(RuntimeError):
    """This machine does not let us create a memory-limited cgroup (the message says why)."""


def _ram_total() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _check_limit(limit_bytes: int) -> None:
    if limit_bytes <= 0:
        raise ValueError(f"memory limit must be positive, not {limit_bytes}")
    if limit_bytes > MAX_FRACTION_OF_RAM * _ram_total():
        raise ValueError(f"a memory limit of {limit_bytes} bytes is more than {MAX_FRACTION_OF_RAM:.0%} of this "
                         "machine's RAM: refused, a confined test must not endanger the machine")


def _read(path: Path) -> str:
    return path.read_text()


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


@dataclass
class Cgroup:
    """A memory cgroup made by `create_cgroup`; `remove()` kills what is left in it and deletes it."""
    path: Path
    version: int  # 1 or 2
    limit: int
    removed: bool = False

    @property
    def procs_file(self) -> Path:
        return self.path / "cgroup.procs"

    @property
    def counter_file(self) -> Path:
        return self.path / ("memory.events" if self.version == 2 else "memory.oom_control")

    def oom_kill(self) -> int | None:
        """The cgroup's oom_kill counter (None once removed)."""
        try:
            text = _read(self.counter_file)
        except OSError:
            return None
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return None

    def wrap(self, cmd: list[str]) -> list[str]:
        """`cmd` behind a shell that moves itself into the cgroup, then execs `cmd` (same pid)."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" || exit 125; exec "$@"', str(self.procs_file), *cmd]

    def add(self, pid: int) -> None:
        """Move a running process (not its existing children) into the cgroup."""
        _write(self.procs_file, str(pid))

    def preexec(self) -> Callable[[], None]:
        """A Popen `preexec_fn` that moves the new process into the cgroup before it execs."""
        procs = str(self.procs_file)

        def move() -> None:
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"0")  # "0": the writing process itself
            finally:
                os.close(fd)
        return move

    def pids(self) -> list[int]:
        try:
            return [int(x) for x in _read(self.procs_file).split()]
        except (OSError, ValueError):
            return []

    def remove(self, timeout: float = 5.0) -> None:
        """SIGKILL whatever still runs in the cgroup (only processes we started land there), then
        rmdir it. Warns instead of raising if the kernel keeps it busy past `timeout`."""
        if self.removed:
            return
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                self.path.rmdir()
                self.removed = True
                return
            except FileNotFoundError:
                self.removed = True
                return
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    warnings.warn(f"could not remove test cgroup {self.path}: {e}; pids left: {pids}")
                    return
            time.sleep(0.02)


def own_cgroup_dir(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_SELF_CGROUP) -> tuple[int, Path]:
    """(cgroup version, directory) of this process's memory cgroup."""
    lines = [ln.split(":", 2) for ln in _read(proc_cgroup).splitlines() if ln.count(":") >= 2]
    for hid, ctrl, path in lines:
        if "memory" in ctrl.split(","):
            d = root / "memory" / path.lstrip("/")
            if d.is_dir():
                return 1, d
            raise Unsupported(f"cgroup v1 memory controller: {d} is not there (is it mounted elsewhere?)")
    for hid, ctrl, path in lines:
        if hid == "0" and not ctrl:
            d = root / path.lstrip("/")
            if (root / "cgroup.controllers").exists() and "memory" in _read(root / "cgroup.controllers").split():
                return 2, d
    raise Unsupported("no memory cgroup controller (neither a v1 memory hierarchy nor memory in cgroup v2)")


def create_cgroup(limit_bytes: int, parent: Path | None = None, root: Path = CGROUP_ROOT) -> Cgroup:
    """A new memory cgroup under `parent` (default: this process's own) limited to `limit_bytes`
    of RAM, with no swap to escape into. Raises Unsupported where the machine does not allow it."""
    _check_limit(limit_bytes)
    try:
        if _read(Path("/proc/sys/vm/panic_on_oom")).strip() == "2":
            raise Unsupported("vm.panic_on_oom is 2: a cgroup OOM would panic the whole machine")
    except OSError:
        pass
    try:
        version, own = own_cgroup_dir(root)
    except OSError as e:
        raise Unsupported(f"cannot read this process's cgroup: {e}") from e
    parent = Path(parent) if parent is not None else own
    path = parent / f"{NAME_PREFIX}{os.getpid()}-{next(_names)}"
    if version == 2:
        try:
            if "memory" not in _read(parent / "cgroup.subtree_control").split():
                _write(parent / "cgroup.subtree_control", "+memory")
        except OSError as e:
            raise Unsupported(f"cgroup v2: cannot enable the memory controller below {parent}: {e} (a cgroup with "
                              "processes of its own cannot; pass a delegated, empty parent)") from e
    try:
        path.mkdir()
    except OSError as e:
        raise Unsupported(f"cannot create a cgroup under {parent}: {e}") from e
    cg = Cgroup(path, version, limit_bytes)
    try:
        if version == 1:
            _write(path / "memory.limit_in_bytes", str(limit_bytes))
            if (path / "memory.memsw.limit_in_bytes").exists():  # swap accounting on: no escape to swap
                _write(path / "memory.memsw.limit_in_bytes", str(limit_bytes))
            _write(path / "memory.oom_control", "0")  # v1 children inherit oom_kill_disable: killer on
            if "oom_kill_disable 0" not in _read(path / "memory.oom_control"):
                raise Unsupported(f"{path}: the OOM killer stays disabled; a confined child would hang")
            if int(_read(path / "memory.limit_in_bytes")) > limit_bytes:
                raise Unsupported(f"{path}: the kernel did not keep the memory limit")
        else:
            _write(path / "memory.max", str(limit_bytes))
            if (path / "memory.swap.max").exists():
                _write(path / "memory.swap.max", "0")
    except (OSError, ValueError, Unsupported) as e:
        cg.remove()
        if isinstance(e, Unsupported):
            raise
        raise Unsupported(f"cannot set a memory limit on {path}: {e}") from e
    return cg


@contextmanager
def memory_limited(limit_bytes: int, parent: Path | None = None) -> Iterator[Cgroup]:
    """A memory cgroup limited to `limit_bytes` for the duration of the block; put processes in it
    with `cg.wrap(cmd)`, `cg.preexec()` or `cg.add(pid)`. Anything left in it is killed at the end."""
    cg = create_cgroup(limit_bytes, parent)
    try:
        yield cg
    finally:
        cg.remove()


def cgroup_support() -> str | None:
    """None where `memory_limited` works on this machine, else why not (for `pytest.mark.skipif`)."""
    try:
        create_cgroup(16 << 20).remove()
    except (Unsupported, ValueError) as e:
        return str(e)
    return None


def rlimit_wrap(limit_bytes: int, cmd: list[str]) -> list[str]:
    """`cmd` with its address space limited (RLIMIT_AS, inherited by its children): allocations
    past the limit fail (MemoryError, torch's DefaultCPUAllocator error) instead of being killed."""
    _check_limit(limit_bytes)
    kib = max(1, limit_bytes // 1024)
    return ["/bin/sh", "-c", f'ulimit -v {kib} || exit 125; exec "$@"', "rlimit", *cmd]


@dataclass
class Attempt:
    """One command run by a ConfinedLaunch."""
    cmd: list[str]
    cgroup: Cgroup | None  # None with method "rlimit"
    returncode: int | None = None
    oom_kill: int | None = None  # the cgroup's counter when the command ended


def popen_launch(cmd: list[str], env: dict, log_path: Path) -> int:
    """The plainest launch: stdout and stderr to `log_path`, the return code (-9 for SIGKILL)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True).wait()


@dataclass
class ConfinedLaunch:
    """A launch function, `launch(cmd, env, log_path) -> returncode`, that runs each command
    confined to `limit_bytes`: method "cgroup" (a fresh memory cgroup per call, kept until
    `close()` so the counter can still be read after the death), "rlimit" (RLIMIT_AS), or "auto"
    (cgroup where the machine allows it). `inner` is the launch function that really starts the
    command (default `popen_launch`); give it the supervisor's own to keep its watch and tee."""
    limit_bytes: int
    method: str = "cgroup"
    inner: Launch = popen_launch
    attempts: list[Attempt] = field(default_factory=list)

    def __post_init__(self):
        _check_limit(self.limit_bytes)
        if self.method == "auto":
            self.method = "rlimit" if cgroup_support() else "cgroup"
        if self.method not in ("cgroup", "rlimit"):
            raise ValueError(f"method must be cgroup, rlimit or auto, not {self.method!r}")

    def __call__(self, cmd: list[str], env: dict, log_path: Path, *more):
        """Returns what `inner` returns (the supervisor's seam: a ChildEnd); records the return code."""
        if self.method == "rlimit":
            attempt = Attempt(list(cmd), None)
            self.attempts.append(attempt)
            result = self.inner(rlimit_wrap(self.limit_bytes, list(cmd)), env, log_path, *more)
            attempt.returncode = getattr(result, "exit_code", result)
            return result
        cg = create_cgroup(self.limit_bytes)
        attempt = Attempt(list(cmd), cg)
        self.attempts.append(attempt)
        try:
            result = self.inner(cg.wrap(list(cmd)), env, log_path, *more)
            attempt.returncode = getattr(result, "exit_code", result)
        finally:
            attempt.oom_kill = cg.oom_kill()
            for pid in cg.pids():  # descendants that outlived the command (ours: they were started here)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return result

    def signal(self, sig: int) -> None:
        """The supervisor's signal and grace kill reach `inner` when it carries them (launch.Stoppable)."""
        if hasattr(self.inner, "signal"):
            self.inner.signal(sig)

    def stop(self, grace: float) -> None:
        if hasattr(self.inner, "stop"):
            self.inner.stop(grace)

    def close(self) -> None:
        for a in self.attempts:
            if a.cgroup is not None:
                a.cgroup.remove()

    def __enter__(self) -> "ConfinedLaunch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def confined_launch(limit_bytes: int, method: str = "cgroup", inner: Launch = popen_launch) -> ConfinedLaunch:
    """See ConfinedLaunch; use it as a context manager (or call `close()`) to remove its cgroups."""
    return ConfinedLaunch(limit_bytes, method, inner)


def leftover_cgroups(root: Path = CGROUP_ROOT) -> list[Path]:
    """Cgroups this module made in this process's cgroup that still exist (tests assert none)."""
    try:
        _, own = own_cgroup_dir(root)
    except (Unsupported, OSError):
        return []
    return sorted(own.glob(f"{NAME_PREFIX}{os.getpid()}-*"))
