"""Tuning, the launcher's side: one rung's trial, as a child started through the launch seam
(docs/design.md, "Tuning: a measured trial per rung").

`trial_spec` is the spec of a trial child (`Spec.mode` "trial": the rung's real model, data and
arguments, its files in `logs/<run>/trials/<rung>/`); `measure` starts it with a `launch.ChildProcess`
and a `TrialWatchdog`, as the supervisor starts an attempt, and returns the `contract.Trial` it wrote,
or one that says how it died without writing one; `run_trials` measures the rungs of a night's start
or of `tune`, under the launcher's own signal handling (`launch.Signals`, as the supervisor's loop).
Imports no torch: the child measures.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from . import choice, failures, fmt, memory, probe, spec as spec_mod
from .contract import (CUDA_OOM, EXIT_SIGINT, EXIT_SIGTERM, GIB, GRACE_S, HEARTBEAT_NAME, HOST_OOM, HANG,
                       REPORT_NAME, SPEC_NAME, TRAIN_LOG_NAME, TRIAL_FAILED, TRIAL_FIT, TRIAL_OOM, TRIAL_TIMEOUT,
                       Heartbeat, Report, Spec, Trial)
from .errors import LauncherError
from .failures import ChildEnd
from .ladder import Job, Ladder, Rung, gpu_indices
from .launch import Launch, Signals, Stoppable, Watchdog
from .probe import Gpu
from .runlog import RunPaths, write_json_atomic

# The trial child is ended from outside this long past its budget: the budget counts from its first
# batch and the child checks it at batch ends, so this covers the batch in progress and the writing
# of trial.json and report.json. Before the first batch the watchdog's start-up rule applies
# ([job] startup_timeout_s, as for an attempt: a RAM cache of a big dataset is built then).
OVERRUN_S = 60.0


@dataclass(frozen=True)
class TrialPlan:
    """How a trial runs (Spec.trial, with its `path`): a warm-up, the measured iterations, the
    validation batches, the thrash rule's window (memstats.RisingWindows) and the budget, counted
    from the first batch. The defaults are a GPU's: about 30 real steps and a few validation
    batches in ≤ 90 s."""

    warmup: int = 5
    iterations: int = 25
    val_batches: int = 4
    window: int = 5
    budget_s: float = 90.0

    @classmethod
    def for_device(cls, device: str) -> "TrialPlan":
        """A GPU's defaults; on the CPU a few iterations only (the demo's rtdetr-l takes seconds a
        batch there), with a budget to match that leaves a night's tuning (NIGHT_BUDGET_S) room for
        one trial and its OVERRUN_S."""
        return cls() if device not in ("cpu", "") else cls(warmup=1, iterations=4, val_batches=1, budget_s=240.0)

    @property
    def limit_s(self) -> float:
        """The longest a trial measures, from its first batch to its end (TrialWatchdog)."""
        return self.budget_s + OVERRUN_S

    def to_json(self) -> dict:
        return {"warmup": self.warmup, "iterations": self.iterations, "val_batches": self.val_batches,
                "window": self.window, "budget_s": self.budget_s}


def trial_spec(job: Job, rung: Rung, device: str, paths: RunPaths, settings: TrialPlan,
               inject: tuple[dict, ...] = ()) -> Spec:
    """The spec of one rung's trial: the attempt's (spec.build: model, data, arguments, VRAM cap,
    threads), in mode "trial", with every file of the child in the rung's trial folder: Ultralytics'
    save_dir, report, heartbeat, and the verified-copy path Watch is handed (a trial saves nothing,
    so nothing is ever written there). `val_batch`: the rung's, else Ultralytics' 2 × batch."""
    folder = paths.trial_dir(rung.name)
    spec = spec_mod.build(job, rung, device, paths, attempt=0, mode="trial", inject=inject)
    return replace(spec, train_args={**spec.train_args, "save_dir": str(folder)}, val_batch=rung.val_batch,
                   trial={**settings.to_json(), "path": str(paths.trial(rung.name))},
                   verified=str(folder / "verified.pt"), report=str(folder / REPORT_NAME),
                   heartbeat=str(folder / HEARTBEAT_NAME))


class TrialWatchdog(Watchdog):
    """An attempt's watchdog (heartbeat, host RAM, process tree; before the first batch its
    start-up rule, [job] startup_timeout_s) that also ends the trial `limit_s` after its first batch
    (the heartbeat's `first_batch_ts`, from the tick that first sees it): the trial's budget,
    enforced from outside; and, where `deadline_s` is given (a night's tuning), `deadline_s` after
    the child's start, start-up included."""

    def __init__(self, *args, limit_s: float, deadline_s: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.limit_s, self.deadline_s = limit_s, deadline_s
        self.over_budget = False
        self._t0 = 0.0
        self._first: float | None = None  # on `clock`, when a heartbeat first said the first batch ended

    def start(self) -> None:
        super().start()
        self._t0, self._first = self.clock(), None

    def silence(self, beat: Heartbeat | None, now: float) -> str | None:
        if self._first is None and beat is not None and beat.first_batch_ts:
            self._first = now
        return super().silence(beat, now)

    def tick(self, pid: int) -> str | None:
        reason = super().tick(pid)
        now = self.clock()
        over = None
        if self._first is not None and now - self._first > self.limit_s:
            over = (f"the trial ran {now - self._first:.0f} s from its first batch, past its budget and the "
                    f"{OVERRUN_S:.0f} s allowance")
        elif self.deadline_s is not None and now - self._t0 > self.deadline_s:
            over = f"the night's time for trials ran out {now - self._t0:.0f} s into the trial"
        if reason is None and over is not None:
            self.over_budget, reason = True, over
            if self.verdict is None:
                self.verdict = (HANG, reason)
        return reason


@dataclass(frozen=True)
class Held:
    """What a trial's child may still hold on its GPUs once it ended: its processes as the
    watchdog last saw them, and each selected GPU's free memory before it started
    (probe.wait_gpu_released's arguments, as the supervisor keeps them for an attempt)."""

    gpus: tuple[int, ...]
    pids: frozenset[int]
    before: dict[int, int | None] | None
    clean: bool  # the child exited 0 on its own


def measure(job: Job, rung: Rung, device: str, paths: RunPaths, launch: Launch, settings: TrialPlan,
            inject: tuple[dict, ...] = (), child_env: dict[str, str] | None = None,
            ram: memory.RamWatch | None = None, gpus: tuple[Gpu, ...] = (), deadline_s: float | None = None,
            usage: Callable = probe.gpu_usage) -> Trial:
    """Run one rung's trial child and return its Trial (`measured`, without what it holds)."""
    return measured(job, rung, device, paths, launch, settings, inject, child_env, ram, gpus, deadline_s, usage)[0]


def measured(job: Job, rung: Rung, device: str, paths: RunPaths, launch: Launch, settings: TrialPlan,
             inject: tuple[dict, ...] = (), child_env: dict[str, str] | None = None,
             ram: memory.RamWatch | None = None, gpus: tuple[Gpu, ...] = (), deadline_s: float | None = None,
             usage: Callable = probe.gpu_usage) -> tuple[Trial, Held]:
    """Run one rung's trial child; its Trial, and what it may still hold. The Trial is the one the
    child wrote, or, when it wrote none (a killed child, a failure before its measurement began), one
    whose `ended` says what happened, read as the supervisor reads an attempt's end (failures.judge:
    a CUDA or host OOM is "oom"). `free_bytes`: the tightest selected GPU's free memory as the child
    starts, read afresh (probe.gpu_usage, the supervisor's read before an attempt), else the probe
    snapshot's `gpus`; None on the CPU. `deadline_s`: TrialWatchdog's. The trial folder holds one
    trial: the previous one's files go first."""
    folder = paths.trial_dir(rung.name)
    shutil.rmtree(folder, ignore_errors=True)  # only trials write here: no stale trial.json or log is read
    folder.mkdir(parents=True, exist_ok=True)
    spec = trial_spec(job, rung, device, paths, settings, inject)
    spec_path = folder / SPEC_NAME
    write_json_atomic(spec_path, spec.to_json())
    env = {**os.environ, **(child_env or {}), **spec_mod.env(rung, spec_path)}
    indices = gpu_indices(device)
    before = {g: free for g, (free, _) in (usage(indices) or {}).items()} if indices else None
    watchdog = TrialWatchdog(job, 0, rung.name, Path(spec.heartbeat), indices, ram or memory.RamWatch(),
                             limit_s=settings.limit_s, deadline_s=deadline_s)
    end = launch(spec_mod.command(spec_path), env, folder / TRAIN_LOG_NAME, watchdog)
    trial = replace(outcome(spec, end, folder, over_budget=watchdog.over_budget),
                    free_bytes=free_before(indices, before, gpus))
    held = Held(indices, frozenset(r["pid"] for r in watchdog.tree), before,
                clean=end.exit_code == 0 and watchdog.verdict is None)
    return trial, held


def free_before(indices: tuple[int, ...], before: dict[int, int | None] | None, gpus: tuple[Gpu, ...]) -> int | None:
    """The tightest selected GPU's free bytes as the trial began: the fresh read where NVML gave
    one, else the snapshot's; None on the CPU or where neither says."""
    read = [f for f in (before or {}).values() if f is not None]
    if not read:
        read = [g.free for g in gpus if g.index in indices and g.free is not None]
    return min(read) if indices and read else None


def outcome(spec: Spec, end: ChildEnd, folder: Path, over_budget: bool = False) -> Trial:
    """The trial's Trial from its files and how its child ended."""
    trial = Trial.read(Path(spec.trial["path"]))
    if over_budget:  # ended from outside: whatever it measured stands, and it ran out of time
        why = end.evidence or "the trial ran past its budget"
        return replace(trial, ended=TRIAL_TIMEOUT, why=why) if trial else missing(spec, end, TRIAL_TIMEOUT, why)
    if trial is not None:
        return trial
    report, beat = Report.read(folder / REPORT_NAME), Heartbeat.read(folder / HEARTBEAT_NAME)
    failure = failures.judge(end, report, failures.read_tail(folder / TRAIN_LOG_NAME)
                             if (folder / TRAIN_LOG_NAME).exists() else "", beat)
    if failure is None:
        return missing(spec, end, TRIAL_FAILED, f"the child exited {end.exit_code} without writing its trial.json")
    ended = TRIAL_OOM if failure.kind in (CUDA_OOM, HOST_OOM) else TRIAL_FAILED
    return missing(spec, end, ended, f"{failure.kind}: {failure.evidence}")


def missing(spec: Spec, end: ChildEnd, ended: str, why: str) -> Trial:
    """A Trial for a child that wrote none: what the launcher saw of it (the tree's sampled RSS)
    and the cache its spec asked for."""
    imgsz = spec.train_args.get("imgsz")
    batch = spec.train_args.get("batch")
    cache = spec.train_args.get("cache")
    return Trial(rung=spec.rung, model=spec.model or "", device=spec.device,
                 batch=batch if isinstance(batch, int) else None, imgsz=imgsz if isinstance(imgsz, int) else None,
                 ended=ended, why=why, warmup=spec.trial.get("warmup"), peak_rss_bytes=end.peak_rss,
                 cache=cache if cache in ("ram", "disk") else "off",
                 seconds=round(end.seconds, 3), ts=round(time.time(), 3))


# ---- the trials of a night's start, and of `tune` ------------------------------------------------

# All of a night's automatic trials together, on a GPU: about 1 % of the user's 7-22 hour night. A
# trial starts only when its own limit (TrialPlan.limit_s) fits in what is left, and is ended when
# it runs out, start-up included. Rungs past it keep their thresholds; `tune` alone has no such cap
# (a person asked for every rung).
NIGHT_BUDGET_S = 360.0


class Stopped(LauncherError):
    """The launcher's SIGINT or SIGTERM while trials ran: the child was stopped (launch.Signals:
    the signal passed on, the tree ended after the grace) and nothing more is measured. `trials`:
    those that ended before it. cli.main exits 130 or 143; a night's start has written no record."""

    def __init__(self, sig: int, trials: list[Trial]):
        self.sig, self.trials = sig, trials
        self.exit_code = EXIT_SIGINT if sig == signal.SIGINT else EXIT_SIGTERM
        super().__init__(f"stopped by {signal.Signals(sig).name} while measuring the rungs ({len(trials)} trial"
                         f"{'s' if len(trials) != 1 else ''} ended before it); nothing was trained")


def quiet(data: bytes) -> None:
    """A trial child's output goes to its train.log only: what a person reads is one line a trial."""


def planned(ladder: Ladder, rungs: tuple[Rung, ...] | None) -> tuple[Rung, ...]:
    """The ladder's rungs as the plan runs them (`rungs`: plan.Plan.rungs, its RAM-cache decision
    applied and the workers fitted to the CPUs), matched by name; each keeps the ladder's own
    val_batch (a trial measures the rung as the ladder sets it, not at a val_batch a stored trial
    chose), and a grown start in `rungs` is left out (to_measure grows the top itself)."""
    by_name = {r.name: r for r in rungs or ()}
    return tuple(replace(by_name[r.name], val_batch=r.val_batch) if r.name in by_name else r for r in ladder.rungs)


def to_measure(ladder: Ladder, rungs: tuple[Rung, ...] | None = None) -> tuple[Rung, ...]:
    """The rungs trials measure, in order (`planned`): the available rungs best first, with the top
    rung's grown batches ([job] grow: choice.grown_rungs) right after the top, largest last."""
    rungs = planned(ladder, rungs)
    available = tuple(r for r in rungs if r.available)
    grown = tuple(sorted(choice.grown_rungs(rungs), key=lambda r: r.batch)) if ladder.job.grow else ()
    return available[:1] + grown + available[1:]


def run_trials(ladder: Ladder, device: str, gpus: tuple[Gpu, ...], ram: int | None, paths: RunPaths, *,
               until_fit: bool, launch: Launch, settings: TrialPlan, say: Callable[[str], None],
               child_env: dict[str, str] | None = None, budget_s: float | None = None,
               rungs: tuple[Rung, ...] | None = None, clock: Callable[[], float] = time.monotonic,
               grace: float = GRACE_S, release: Callable[..., str] = probe.wait_gpu_released,
               usage: Callable = probe.gpu_usage) -> list[Trial]:
    """Measure the rungs (`to_measure`, of the plan's `rungs` where given), one trial each, each
    said as it ends. `until_fit` (a night's start): the grown batches only while the smaller one
    fit, no rung below the first that fits (it can never be the start). `budget_s`: a trial starts
    only when its TrialPlan.limit_s fits in what is left, and is ended when it runs out.

    As the supervisor's loop: the launcher's SIGINT and SIGTERM are handled (launch.Signals: passed
    on to the child, the tree ended after `grace`) and end the trials with `Stopped`; after a trial
    whose child did not exit cleanly, and after the last one (the night's first attempt needs the
    memory), probe.wait_gpu_released waits for its processes to let the GPU memory go."""
    gpu = min((g for g in gpus if g.free is not None), key=lambda g: g.free, default=None)
    judged = not gpus or gpu is not None  # a GPU whose free memory NVML does not report judges nothing
    order = to_measure(ladder, rungs)
    top = order[0].name if order else None
    grown_names = {choice.grow_name(top, f) for f in choice.GROW} if top else set()
    signals = Signals(launch if isinstance(launch, Stoppable) else None, say, grace=grace)
    t0, out, held = clock(), [], None
    found = growing = False  # a ladder rung fits; the last of top, top@2x, ... fit
    signals.install()
    try:
        for rung in order:
            grown = rung.name in grown_names
            if until_fit and ((grown and not growing) or (not grown and found)):
                continue
            left = None if budget_s is None else budget_s - (clock() - t0)
            if left is not None and left < settings.limit_s:
                say(f"tuning: {fmt.duration(max(left, 0))} of {fmt.duration(budget_s)} left, less than a trial's "
                    f"{fmt.duration(settings.limit_s)}; rung {rung.name} and those after it keep their thresholds")
                break
            if signals.received is not None:
                raise Stopped(signals.received, out)
            say(f"trial of rung {rung.name} ({Path(rung.model.source).name}, batch {rung.batch}, device {device})")
            trial, held = measured(ladder.job, rung, device, paths, launch, settings, child_env=child_env, gpus=gpus,
                                   deadline_s=left, usage=usage)
            signals.child_gone()
            if signals.received is not None:  # the trial it cut short says nothing
                raise Stopped(signals.received, out)
            say(trial_line(trial))
            out.append(trial)
            if not held.clean:
                wait_released(held, release, say)
                held = None
            ok = judged and fits(ladder, trial, gpu, ram, order)
            if grown:
                growing = growing and ok
            else:
                found = found or ok
                growing = ok and rung.name == top
        if held is not None:
            wait_released(held, release, say)
    finally:
        signals.restore()
    return out


def wait_released(held: Held, release: Callable[..., str], say: Callable[[str], None]) -> None:
    """Wait for a trial's processes to let go of the GPU memory (probe.wait_gpu_released, as the
    supervisor waits before the attempt after a failed one), and say what was seen."""
    if held.gpus:
        say(f"GPU memory: {release(held.gpus, set(held.pids), held.before)}")


def fits(ladder: Ladder, trial: Trial, gpu: Gpu | None, ram: int | None, rungs: tuple[Rung, ...] = ()) -> bool:
    """Whether this trial's rung fits here, as the choice of the start rung judges it (`gpu` the
    tightest selected GPU; None: the CPU; `rungs` those measured, by default the ladder's and its
    grown top). A rung that fits only at a smaller val_batch fits."""
    if choice.says_nothing(trial):
        return False
    rung = next((r for r in rungs or ladder.rungs + choice.grown_rungs(ladder.rungs) if r.name == trial.rung), None)
    if rung is None or (gpu is not None and gpu.free is None):
        return False
    return choice.judge(rung, trial, gpu, ram, ladder.job.headroom).fits


def trial_line(t: Trial) -> str:
    """One trial for a person: how it ended, its peaks, its speed and its time."""
    head = f"trial of rung {t.rung}: {t.ended}" + (f" ({t.why})" if t.why and t.ended != TRIAL_FIT else "")
    parts = []
    if t.device not in ("cpu", ""):
        parts.append(f"train peak {fmt.gib(t.peak_reserved_bytes)} reserved, validation (batch {t.val_batch}) "
                     f"{fmt.gib(t.val_peak_reserved_bytes)}, device {fmt.gib(t.device_used_bytes)}")
        if t.alloc_retries:
            parts.append(f"{t.alloc_retries} alloc retries")
    parts.append(f"peak RSS {fmt.gib(t.peak_rss_bytes)}")
    if t.images_per_s is not None:
        parts.append(f"{t.images_per_s:.3g} images/s")
    if t.seconds is not None:
        parts.append(f"{fmt.duration(t.seconds)}")
    return f"{head}: {', '.join(parts)}"


def trial_json(t: Trial) -> dict:
    """One trial for `tune --json`: memory peaks in GiB (keys beginning `peak_`), speed, time."""
    def g(n: int | None) -> float | None:
        return None if n is None else round(n / GIB, 3)
    return {"rung": t.rung, "ended": t.ended, "why": t.why, "model": t.model, "device": t.device, "batch": t.batch,
            "val_batch": t.val_batch, "imgsz": t.imgsz,
            "peak_reserved_gib": g(t.peak_reserved_bytes), "peak_allocated_gib": g(t.peak_allocated_bytes),
            "peak_val_reserved_gib": g(t.val_peak_reserved_bytes),
            "peak_val_allocated_gib": g(t.val_peak_allocated_bytes),
            "peak_device_used_gib": g(t.device_used_bytes), "peak_rss_gib": g(t.peak_rss_bytes),
            "alloc_retries": t.alloc_retries, "ooms": t.ooms, "images_per_s": t.images_per_s,
            "first_batch_s": t.first_batch_s, "seconds": t.seconds}
