"""Process hygiene: find, stop and later reap a training child's whole process tree.

torchrun starts its ranks in sessions of their own, so a process-group kill misses them; the tree
is walked with psutil instead, by parent pid. Records carry each process's start time, so a pid
that the kernel has since given to another process is never signalled. Every child's environment
names its spec (SPEC_ENV), and its whole tree inherits it: how a later run knows its own orphans.
"""

from __future__ import annotations

import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import psutil

from .contract import SPEC_NAME

WALKS = 3  # rounds of signalling: a parent still alive may start children while we signal
POLL_S = 0.05
AFTER_KILL_S = 5.0  # SIGKILL cannot be refused, but a process in the driver (D state) dies slowly
SAME_START_S = 0.01  # psutil's create_time resolution (one clock tick)
SPEC_ENV = "RTDETR_SPEC"  # the absolute spec path a child was started for (spec.env); its descendants inherit it


def snapshot(pid: int) -> list[dict]:
    """The process `pid` and all its descendants, as {"pid", "create_time", "name"} records
    (store them; `alive` and `reap` use them later). Processes that vanish meanwhile are skipped;
    [] if `pid` is gone."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    records = []
    for p in _walk([root]):
        try:
            with p.oneshot():
                records.append({"pid": p.pid, "create_time": p.create_time(), "name": p.name()})
        except psutil.Error:
            continue
    return records


def kill_tree(pid: int, grace: float = 10.0, sig: int = signal.SIGTERM) -> list[int]:
    """Send `sig` to `pid` and all its descendants, wait up to `grace` seconds for them to exit,
    then SIGKILL whatever is left (stopped processes included). Returns the pids signalled, sorted;
    [] if `pid` is already gone. Our own children among them are reaped (no zombies left)."""
    try:
        root = psutil.Process(pid)
    except psutil.Error:
        return []
    return _stop([root], grace, sig)


def alive(records: list[dict]) -> list[dict]:
    """The records (from `snapshot`) whose process still runs: same pid and same start time, so a
    reused pid does not count. Zombies do not count either."""
    return [r for r, p in _same(records) if not _zombie(p)]


def reap(records: list[dict], grace: float = 5.0) -> list[int]:
    """End the recorded processes that are still alive, and their descendants: SIGTERM, `grace`
    seconds, then SIGKILL. For survivors of a launcher that was itself SIGKILLed. Returns the pids
    signalled, sorted."""
    # identified zombies come along too: if they are ours (we are a subreaper), waiting reaps them
    return _stop([p for _, p in _same(records)], grace, signal.SIGTERM)


def reap_run(records: list[dict], folder: Path, grace: float = 5.0) -> tuple[list[int], list[int]]:
    """`reap` for a run record's process list, limited to what is provably this run's: a recorded
    process is ended only when its command line names a spec of this run folder (the child,
    `python -m launcher.child <folder>/attempt-N/spec.json`, and its forked workers) or its
    environment does (SPEC_ENV: torchrun's ranks, whose command lines name Ultralytics' DDP temp
    file, and which outlive a killed child under init); its descendants go with it. A list copied
    from another run's record names that run's processes, which must live (docs/design.md, "The
    run record"). Returns (the pids signalled, the recorded pids still running that were left
    alone), each sorted."""
    signalled = _stop([p for _, p in _same(records) if _names_spec(p, folder)], grace, signal.SIGTERM)
    return signalled, sorted(r["pid"] for r in alive(records) if r["pid"] not in signalled)


def _names_spec(p: psutil.Process, folder: Path) -> bool:
    named: list[str] = []
    for read in (p.cmdline, lambda: [p.environ().get(SPEC_ENV, "")]):
        try:
            named += read()
        except psutil.Error:  # gone, a zombie, or not ours to read: not provably this run's
            continue
    return any(Path(a).name == SPEC_NAME and Path(a).parent.parent == folder and
               Path(a).parent.name.startswith("attempt-") for a in named)


def _same(records: list[dict]) -> list[tuple[dict, psutil.Process]]:
    found = []
    for r in records:
        try:
            p = psutil.Process(r["pid"])
            if abs(p.create_time() - r["create_time"]) < SAME_START_S:
                found.append((r, p))
        except psutil.Error:
            continue
    return found


def _stop(roots: list[psutil.Process], grace: float, sig: int) -> list[int]:
    tree: dict[int, psutil.Process] = {}  # zombies included, so that ours are reaped below
    signalled: set[int] = set()
    for _ in range(WALKS):
        # never ourselves: a caller may hand us its own records or pid to end its descendants
        fresh = [p for p in _walk(roots + list(tree.values())) if p.pid not in tree and p.pid != os.getpid()]
        if not fresh:
            break
        tree.update((p.pid, p) for p in fresh)
        # Children before their parents, within microseconds: a parent that stops its children
        # itself on SIGTERM (torchrun does) does not race us to them, and none has time to notice
        # a dead child and start another (the next walk would find it).
        signalled.update(_send(fresh[::-1], sig))
    survivors = _wait(list(tree.values()), grace)
    if survivors:
        late = [p for p in _walk(survivors) if p.pid not in tree]
        signalled.update(_send(survivors + late, signal.SIGKILL))
        _wait(survivors + late, AFTER_KILL_S)
    return sorted(signalled)


def _walk(roots: list[psutil.Process]) -> list[psutil.Process]:
    """The roots still there and all their descendants, from one scan of the process table,
    ancestors before descendants."""
    parent, children = {}, defaultdict(list)
    for p in psutil.process_iter(["ppid"]):
        parent[p.pid] = p.info["ppid"]
        children[p.info["ppid"]].append(p)
    found: dict[int, psutil.Process] = {}
    todo = [r for r in roots if r.is_running()]  # is_running() is False for a reused pid
    while todo:
        p = todo.pop()
        if p.pid not in found:
            found[p.pid] = p
            todo.extend(children.get(p.pid, ()))

    def depth(pid: int) -> int:
        d = 0
        while parent.get(pid) in found and d < len(found):  # the table is not read atomically
            pid, d = parent[pid], d + 1
        return d

    return sorted(found.values(), key=lambda p: depth(p.pid))


def _send(procs: list[psutil.Process], sig: int) -> list[int]:
    sent = []
    for p in procs:
        try:
            if not _zombie(p):
                p.send_signal(sig)  # psutil refuses (NoSuchProcess) if the pid was reused
                sent.append(p.pid)
        except psutil.Error:  # gone meanwhile, or not ours to signal
            continue
    if sig not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCONT):
        # a stopped process would hold the signal pending until the grace ran out; like systemd,
        # continue it so that it can act on the signal now (a hung child is often a stopped one)
        for p in procs:
            if p.pid in sent:
                try:
                    p.send_signal(signal.SIGCONT)
                except psutil.Error:
                    continue
    return sent


def _wait(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Those of `procs` still alive after up to `timeout` seconds; our own children are reaped."""
    deadline = time.monotonic() + timeout
    while True:
        procs = [p for p in procs if not _gone(p)]
        if not procs or time.monotonic() >= deadline:
            return procs
        time.sleep(POLL_S)


def _gone(p: psutil.Process) -> bool:
    try:
        p.wait(timeout=0)  # reaps it if it is our child
        return True
    except psutil.TimeoutExpired:
        # Someone else's zombie is dead, though its pid lasts until its parent reaps it, which
        # psutil.wait_procs would wait out to the end of the grace.
        if not _zombie(p):
            return False
        # It may have died between the wait and the status read: if it is ours, reap it now,
        # or its zombie outlives the call (a race CI met: torchrun's pid left after kill_tree).
        try:
            p.wait(timeout=0)
        except psutil.Error:
            pass
        return True
    except psutil.NoSuchProcess:
        return True


def _zombie(p: psutil.Process) -> bool:
    try:
        return p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False
