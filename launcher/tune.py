"""Tuning, the launcher's side: one rung's trial, as a child started through the launch seam
(docs/design.md, "Tuning: a measured trial per rung").

`trial_spec` is the spec of a trial child (`Spec.mode` "trial": the rung's real model, data and
arguments, its files in `logs/<run>/trials/<rung>/`); `measure` starts it with a `launch.ChildProcess`
and a `TrialWatchdog`, as the supervisor starts an attempt, and returns the `contract.Trial` it wrote,
or one that says how it died without writing one. Imports no torch: the child measures.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from . import choice, failures, fmt, memory, spec as spec_mod
from .contract import (CUDA_OOM, GIB, HEARTBEAT_NAME, HOST_OOM, HANG, REPORT_NAME, SPEC_NAME, TRAIN_LOG_NAME,
                       TRIAL_FAILED, TRIAL_FIT, TRIAL_OOM, TRIAL_TIMEOUT, Heartbeat, Report, Spec, Trial)
from .failures import ChildEnd
from .ladder import Job, Ladder, Rung, gpu_indices
from .launch import Launch, Watchdog
from .probe import Gpu
from .runlog import RunPaths, write_json_atomic

# The trial child is ended from outside this long past its budget: the budget counts from the
# child's start and is checked at batch ends, so this covers the batch in progress and the writing
# of trial.json and report.json (and a child stuck before its first batch).
STARTUP_ALLOWANCE_S = 60.0


@dataclass(frozen=True)
class TrialPlan:
    """How a trial runs (Spec.trial, with its `path`): a warm-up, the measured iterations, the
    validation batches, the thrash rule's window (memstats.RisingWindows) and the budget, counted
    from the child's start. The defaults are a GPU's: about 30 real steps and a few validation
    batches in ≤ 90 s."""

    warmup: int = 5
    iterations: int = 25
    val_batches: int = 4
    window: int = 5
    budget_s: float = 90.0

    @classmethod
    def for_device(cls, device: str) -> "TrialPlan":
        """A GPU's defaults; on the CPU a few iterations only (the demo's rtdetr-l takes seconds a
        batch there), with a budget to match."""
        return cls() if device not in ("cpu", "") else cls(warmup=1, iterations=4, val_batches=1, budget_s=300.0)

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
    """An attempt's watchdog (heartbeat, host RAM, process tree) that also ends the trial
    `limit_s` after its start: the trial's budget, enforced from outside."""

    def __init__(self, *args, limit_s: float, **kwargs):
        super().__init__(*args, **kwargs)
        self.limit_s = limit_s
        self.over_budget = False
        self._t0 = 0.0

    def start(self) -> None:
        super().start()
        self._t0 = self.clock()

    def tick(self, pid: int) -> str | None:
        reason = super().tick(pid)
        ran = self.clock() - self._t0
        if reason is None and ran > self.limit_s:
            self.over_budget = True
            reason = f"the trial ran {ran:.0f} s, past its budget and the {STARTUP_ALLOWANCE_S:.0f} s allowance"
            if self.verdict is None:
                self.verdict = (HANG, reason)
        return reason


def measure(job: Job, rung: Rung, device: str, paths: RunPaths, launch: Launch, settings: TrialPlan,
            inject: tuple[dict, ...] = (), child_env: dict[str, str] | None = None,
            ram: memory.RamWatch | None = None) -> Trial:
    """Run one rung's trial child and return its Trial: the one it wrote, or, when it wrote none (a
    killed child, a failure before its measurement began), one whose `ended` says what happened,
    read as the supervisor reads an attempt's end (failures.judge: a CUDA or host OOM is "oom").
    The trial folder holds one trial: the previous one's files go first."""
    folder = paths.trial_dir(rung.name)
    shutil.rmtree(folder, ignore_errors=True)  # only trials write here: no stale trial.json or log is read
    folder.mkdir(parents=True, exist_ok=True)
    spec = trial_spec(job, rung, device, paths, settings, inject)
    spec_path = folder / SPEC_NAME
    write_json_atomic(spec_path, spec.to_json())
    env = {**os.environ, **(child_env or {}), **spec_mod.env(rung, spec_path)}
    watchdog = TrialWatchdog(job, 0, rung.name, Path(spec.heartbeat), gpu_indices(device), ram or memory.RamWatch(),
                             limit_s=settings.budget_s + STARTUP_ALLOWANCE_S)
    end = launch(spec_mod.command(spec_path), env, folder / TRAIN_LOG_NAME, watchdog)
    return outcome(spec, end, folder, over_budget=watchdog.over_budget)


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
    """A Trial for a child that wrote none: what the launcher saw of it (the tree's sampled RSS)."""
    imgsz = spec.train_args.get("imgsz")
    batch = spec.train_args.get("batch")
    return Trial(rung=spec.rung, model=spec.model or "", device=spec.device,
                 batch=batch if isinstance(batch, int) else None, imgsz=imgsz if isinstance(imgsz, int) else None,
                 ended=ended, why=why, warmup=spec.trial.get("warmup"), peak_rss_bytes=end.peak_rss,
                 seconds=round(end.seconds, 3), ts=round(time.time(), 3))


# ---- the trials of a night's start, and of `tune` ------------------------------------------------

# All of a night's automatic trials together, on a GPU: about 1 % of the user's 7-22 hour night.
# Rungs past it keep their thresholds; `tune` alone has no such cap (a person asked for every rung).
NIGHT_BUDGET_S = 360.0


def quiet(data: bytes) -> None:
    """A trial child's output goes to its train.log only: what a person reads is one line a trial."""


def to_measure(ladder: Ladder) -> tuple[Rung, ...]:
    """The rungs trials measure, in order: the available rungs best first, with the top rung's
    grown batches ([job] grow: choice.grown_rungs) right after the top, largest last."""
    rungs = tuple(r for r in ladder.rungs if r.available)
    grown = tuple(sorted(choice.grown_rungs(ladder.rungs), key=lambda r: r.batch)) if ladder.job.grow else ()
    return rungs[:1] + grown + rungs[1:]


def run_trials(ladder: Ladder, device: str, gpus: tuple[Gpu, ...], ram: int | None, paths: RunPaths, *,
               until_fit: bool, launch: Launch, settings: TrialPlan, say: Callable[[str], None],
               child_env: dict[str, str] | None = None, budget_s: float | None = None,
               clock: Callable[[], float] = time.monotonic) -> list[Trial]:
    """Measure the rungs (`to_measure`), one trial each, each said as it ends. `until_fit` (a
    night's start): the grown batches only while the smaller one fit, no rung below the first that
    fits (it can never be the start), and none once `budget_s` is spent."""
    gpu = min((g for g in gpus if g.free is not None), key=lambda g: g.free, default=None)
    judged = not gpus or gpu is not None  # a GPU whose free memory NVML does not report judges nothing
    rungs = to_measure(ladder)
    top = rungs[0].name if rungs else None
    grown_names = {choice.grow_name(top, f) for f in choice.GROW} if top else set()
    t0, out = clock(), []
    found = growing = False  # a ladder rung fits; the last of top, top@2x, ... fit
    for rung in rungs:
        grown = rung.name in grown_names
        if until_fit:
            if (grown and not growing) or (not grown and found):
                continue
            if budget_s is not None and clock() - t0 > budget_s:
                say(f"tuning: {fmt.duration(budget_s)} spent; rung {rung.name} and those after it keep their "
                    "thresholds")
                break
        say(f"trial of rung {rung.name} ({Path(rung.model.source).name}, batch {rung.batch}, device {device})")
        trial = measure(ladder.job, rung, device, paths, launch, settings, child_env=child_env)
        say(trial_line(trial))
        out.append(trial)
        ok = judged and fits(ladder, trial, gpu, ram)
        if grown:
            growing = growing and ok
        else:
            found = found or ok
            growing = ok and rung.name == top
    return out


def fits(ladder: Ladder, trial: Trial, gpu: Gpu | None, ram: int | None) -> bool:
    """Whether this trial's rung fits here, as the choice of the start rung judges it (`gpu` the
    tightest selected GPU; None: the CPU). A rung that fits only at a smaller val_batch fits."""
    if choice.says_nothing(trial):
        return False
    rung = next((r for r in ladder.rungs + choice.grown_rungs(ladder.rungs) if r.name == trial.rung), None)
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
