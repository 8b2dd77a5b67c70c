"""The start rung from measurements: which rung a night starts on when trials measured the rungs
(docs/design.md, "Tuning: a measured trial per rung"). Pure: rungs, trials and the probe's numbers
in, a Choice out; no I/O, no torch. plan.choose calls it; rungs no trial measured keep the
min_free_vram_gib threshold (plan.pick_start's rule).

What a rung needs on a GPU, from its Trial (all bytes):
  train   = peak_reserved_bytes (torch's reserved memory is what the allocator takes from the
            card; allocated only where reserved is missing)
  val     = val_peak_reserved_bytes, measured at the trial's val_batch (Ultralytics' 2 × batch
            unless the rung sets one)
  context = device_used_bytes − max(train, val) where NVML's peak is known (the CUDA context,
            cuBLAS/cuDNN workspaces, anything outside torch's allocator; memory another process
            held during the trial counts too, which only errs towards less), else CONTEXT_GUESS
  need    = max(train, val) + context
It fits when need ≤ the tightest selected GPU's free × (1 − [job] headroom) (and, for a rung with a
vram_fraction, ≤ that share of the card), the trial ended "fit" with no alloc retries, and the
host's peak RSS (the child and its workers) ≤ available RAM × (1 − headroom). A trial that ended
"oom" or "alloc_retries", or fit with retries, rules its rung out while no more memory is free now
than as it began (Trial.free_bytes, MORE_FREE); with more free now it says only that the rung needs
more than that, and the threshold decides. One that "failed", ran out of time or ended in a way
contract.TRIAL_ENDINGS does not know says nothing about memory and leaves the rung to its threshold.
A grown rung ([job] grow) has no threshold of its own: it starts only where its trial measured that
it fits. On the CPU the peaks are the child tree's RSS: fit means host RAM only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from .contract import GIB, TRIAL_ENDINGS, TRIAL_FAILED, TRIAL_FIT, TRIAL_OOM, TRIAL_RETRIES, TRIAL_TIMEOUT, Trial
from .fmt import gib
from .ladder import Rung
from .probe import Gpu

MEASURED, THRESHOLD = "measured", "threshold"
CONTEXT_GUESS = GIB // 2  # CUDA context and library workspaces, where the trial has no NVML peak
ROOM = 0.5  # a top rung whose measured need is under this share of the free memory gets a note
GROW = (4, 2)  # [job] grow: the top rung's batch × these, largest first
MORE_FREE = 1.05  # an OOM or thrash measured with F bytes free rules its rung out until more than F × this is free


def grow_name(rung: str, factor: int) -> str:
    """The name of the top rung grown to `factor` × its batch: the trial that measures it and the
    rung the night starts on are named so ("optimal@2x")."""
    return f"{rung}@{factor}x"


def grown(rung: Rung, factor: int) -> Rung:
    """The rung at `factor` × its batch (Ultralytics' nbs accumulation keeps the effective batch:
    it steps the optimizer every max(round(nbs / batch), 1) batches). It validates at Ultralytics'
    own 2 × batch unless a measurement says otherwise."""
    return replace(rung, name=grow_name(rung.name, factor), batch=rung.batch * factor, val_batch=None)


def grown_rungs(rungs: tuple[Rung, ...]) -> tuple[Rung, ...]:
    """What [job] grow = true also measures: the top available rung at each factor of GROW."""
    top = next((r for r in rungs if r.available), None)
    return () if top is None else tuple(grown(top, f) for f in GROW)


@dataclass(frozen=True)
class Need:
    """What a trial says one rung needs, in bytes (None: not measured)."""

    train: int | None
    val: int | None
    val_batch: int | None  # the batch `val` was measured at
    context: int  # outside torch's allocator (0 on the CPU)
    context_measured: bool
    host: int | None  # peak RSS of the child tree

    @property
    def device(self) -> int | None:
        if self.train is None:
            return None
        return max(self.train, self.val or 0) + self.context


@dataclass(frozen=True)
class Verdict:
    """One rung's verdict: what decided it (MEASURED or THRESHOLD), whether it fits, and why."""

    rung: str
    decided: str
    fits: bool
    reason: str
    trial: Trial | None = None
    need: Need | None = None
    val_batch: int | None = None  # a smaller validation batch that makes it fit


@dataclass(frozen=True)
class Choice:
    start: Rung | None  # with val_batch set where the choice set it; a grown rung with [job] grow
    reason: str  # "start rung X: ...", or why none fits
    verdicts: tuple[Verdict, ...]  # per rung, ladder order (grown rungs first where measured)
    notes: tuple[str, ...] = ()  # room to grow


def need_of(trial: Trial, on_gpu: bool) -> Need:
    train = _first(trial.peak_reserved_bytes, trial.peak_allocated_bytes)
    val = _first(trial.val_peak_reserved_bytes, trial.val_peak_allocated_bytes)
    val_batch = trial.val_batch or (2 * trial.batch if trial.batch else None)
    if not on_gpu:  # the peaks are the child tree's RSS
        host = max((n for n in (train, val, trial.peak_rss_bytes) if n is not None), default=None)
        return Need(train, val, val_batch, 0, False, host)
    measured = trial.device_used_bytes is not None and train is not None
    context = max(0, trial.device_used_bytes - max(train, val or 0)) if measured else CONTEXT_GUESS
    return Need(train, val, val_batch, context, measured, trial.peak_rss_bytes)


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def says_nothing(trial: Trial) -> bool:
    """A trial that says nothing about the rung's memory: it failed, timed out, measured nothing, or
    ended in a way contract.TRIAL_ENDINGS does not know (a newer launcher's or a damaged
    trial.json): taken as failed, never as a fit."""
    if trial.ended not in TRIAL_ENDINGS or trial.ended in (TRIAL_FAILED, TRIAL_TIMEOUT):
        return True
    if trial.ended in (TRIAL_OOM, TRIAL_RETRIES):
        return False
    return trial.peak_reserved_bytes is None and trial.peak_allocated_bytes is None and trial.peak_rss_bytes is None


def pressed(trial: Trial) -> bool:
    """Whether the trial ran into the memory it had: it ran out, or the allocator retried."""
    return trial.ended in (TRIAL_OOM, TRIAL_RETRIES) or (trial.alloc_retries or 0) > 0


def more_free_now(trial: Trial, gpu: Gpu | None) -> str | None:
    """Why a trial that ran into its memory (`pressed`) no longer rules its rung out, or None where
    it still does. It began with Trial.free_bytes free on the tightest GPU (another job may have
    held the rest): it says the rung needs more than that, not that it never fits. With more than
    MORE_FREE × that free now the rung goes back to its threshold. A trial that did not note its
    free memory (written before free_bytes) is taken as measured with what is free now: it rules
    the rung out, erring towards the lower rung, until a new trial replaces it. On the CPU the
    free GPU memory means nothing: a host OOM rules the rung out."""
    if gpu is None or gpu.free is None or trial.free_bytes is None or not pressed(trial):
        return None
    if gpu.free <= trial.free_bytes * MORE_FREE:
        return None
    what = "ran out of memory" if trial.ended == TRIAL_OOM else "saw alloc retries"
    return (f"its trial {what} with {gib(trial.free_bytes)} free, less than the {gib(gpu.free)} free now: it says the "
            "rung needs more than that, not that it does not fit")


def val_batch_that_fits(need: Need, budget: int) -> int:
    """The largest validation batch estimated to fit `budget` (bytes for torch: the context is
    already taken off), 0 when not even one image does. Validation's memory is taken as linear in
    its batch above a fixed part; the fixed part is bounded by training's reserved peak (the
    allocator keeps training's blocks when validation starts), and assuming it that large gives
    the smallest per-image slope measured from (val_batch, val), which over-estimates every
    smaller batch's need: conservative for any fixed part up to it."""
    assert need.train is not None and need.val is not None and need.val_batch
    slope = (need.val - need.train) / need.val_batch
    if slope <= 0:
        return need.val_batch
    return max(0, min(need.val_batch - 1, math.floor((budget - need.train) / slope)))


def judge(rung: Rung, trial: Trial, gpu: Gpu | None, ram: int | None, headroom: float) -> Verdict:
    """A measured rung's verdict on the tightest GPU (None: the CPU) and the available RAM."""
    on_gpu = gpu is not None
    need = need_of(trial, on_gpu)
    if trial.ended == TRIAL_OOM:
        return Verdict(rung.name, MEASURED, False, f"ran out of memory in its trial ({trial.why or 'OOM'})", trial,
                       need)
    if trial.ended == TRIAL_RETRIES or (trial.alloc_retries or 0) > 0:
        return Verdict(rung.name, MEASURED, False, f"its trial saw {trial.alloc_retries or 'rising'} alloc "
                       "retries (the allocator was thrashing: fragmentation, an OOM to come)", trial, need)
    keep = 1 - headroom
    host = ""
    if need.host is not None and ram is not None:
        if need.host > ram * keep:
            return Verdict(rung.name, MEASURED, False, f"host peak {gib(need.host)} > {gib(ram)} available RAM × "
                           f"{keep:g}", trial, need)
        host = f"; host peak {gib(need.host)} ≤ {gib(ram)} available × {keep:g}"
    if not on_gpu:
        ram_said = f" ≤ {gib(ram)} available RAM × {keep:g}" if ram is not None else " (available RAM unknown)"
        return Verdict(rung.name, MEASURED, True, f"host peak {gib(need.host)}{ram_said}", trial, need)
    budget = gpu.free * keep
    cap = ""
    if rung.vram_fraction is not None and gpu.total:
        if rung.vram_fraction * gpu.total < budget:
            budget, cap = rung.vram_fraction * gpu.total, f" (its vram_fraction {rung.vram_fraction:g} of the card)"
    context = f"context {gib(need.context)}" + ("" if need.context_measured else " guessed")
    parts = f"train {gib(need.train)}, val {gib(need.val)} at batch {need.val_batch}, {context}"
    room = f"{gib(gpu.free)} free × {keep:g}" if not cap else f"{gib(budget)}{cap}"
    if need.device <= budget:
        return Verdict(rung.name, MEASURED, True, f"needs {gib(need.device)} ({parts}) ≤ {room}{host}", trial, need)
    if need.train + need.context <= budget and need.val is not None and need.val_batch:
        vb = val_batch_that_fits(need, int(budget - need.context))
        if vb >= 1:
            trains = gib(need.train + need.context)
            return Verdict(rung.name, MEASURED, True, f"training fits ({trains} ≤ {room}) but "
                           f"validation at batch {need.val_batch} ({gib(need.val + need.context)}) does not: validates "
                           f"at batch {vb} (estimated, linear in the batch above training's peak){host}", trial, need,
                           val_batch=vb)
        return Verdict(rung.name, MEASURED, False, f"training fits but validation does not, even at batch 1 "
                       f"(estimated): needs {gib(need.device)} ({parts}) > {room}", trial, need)
    return Verdict(rung.name, MEASURED, False, f"needs {gib(need.device)} ({parts}) > {room}", trial, need)


def threshold(rung: Rung, gpu: Gpu | None) -> Verdict:
    """An unmeasured rung's verdict: plan.pick_start's min_free_vram_gib rule."""
    if gpu is None:
        return Verdict(rung.name, THRESHOLD, True, "no GPU thresholds on the CPU")
    if gpu.free is None:
        return Verdict(rung.name, THRESHOLD, rung.min_free_vram_gib == 0,
                       f"free memory unknown; min_free_vram_gib {rung.min_free_vram_gib:g}")
    free = gpu.free / GIB
    sign = "≥" if rung.min_free_vram_gib <= free else "<"
    return Verdict(rung.name, THRESHOLD, rung.min_free_vram_gib <= free,
                   f"{free:.2f} GiB free {sign} {rung.min_free_vram_gib:g} GiB ({rung.name}'s min_free_vram_gib)")


def choose_start(rungs: tuple[Rung, ...], measured: dict[str, Trial], gpus: tuple[Gpu, ...],
                 ram_available: int | None, headroom: float, *, grow: bool = False) -> Choice:
    """The start rung: the first available rung, in ladder order, that fits, by its measurement
    where a trial measured it, else by its threshold. With `grow`, the top rung grown to 4× or 2×
    its batch comes first where its trial (named by grow_name) measured that it fits."""
    available = tuple(r for r in rungs if r.available)
    if not available:
        return Choice(None, "no rung is available (the reasons say why each rung is out)", ())
    gpu = min(gpus, key=lambda g: -1 if g.free is None else g.free) if gpus else None
    which = "" if gpu is None else (f" on GPU {gpu.index}" if len(gpus) == 1 else
                                    f" on GPU {gpu.index}, the tightest of {len(gpus)}")
    judgeable = gpu is None or gpu.free is not None

    def verdict(rung: Rung, grown: bool = False) -> Verdict:
        trial = measured.get(rung.name)
        if trial is None:
            why = None
        elif not judgeable:
            why = "its measurement needs the free memory"
        elif says_nothing(trial):
            why = f"its trial ended {trial.ended}: nothing measured"
        else:
            why = more_free_now(trial, gpu)
            if why is None:
                return judge(rung, trial, gpu, ram_available, headroom)
        if grown:  # no threshold of its own (it would be the top rung's): only a measured fit starts it
            return Verdict(rung.name, MEASURED, False, f"{why}; a grown batch starts only where its trial measured "
                           "that it fits", trial)
        v = threshold(rung, gpu)
        return v if why is None else replace(v, reason=f"{v.reason} ({why})")

    extra = tuple(g for g in grown_rungs(available) if g.name in measured) if grow else ()
    candidates = extra + available
    verdicts = tuple(verdict(r, grown=r.name in {g.name for g in extra}) for r in candidates)
    pick = next(((r, v) for r, v in zip(candidates, verdicts) if v.fits), None)
    if pick is None and not judgeable:  # pick_start's rule: with no free memory known, the safest
        safest = next((r for r in available if r.min_free_vram_gib == 0), available[-1])
        pick = safest, next(v for v in verdicts if v.rung == safest.name)
    notes = room_to_grow(available[0], verdicts[len(candidates) - len(available)], gpu, headroom, grow)
    if pick is None:
        return Choice(None, f"no rung fits{which}: " + "; ".join(f"{v.rung} {v.decided}: {v.reason}" for v in verdicts)
                      + " — free memory or force a rung with --start-rung", verdicts, notes)
    rung, v = pick
    if v.val_batch is not None:
        rung = replace(rung, val_batch=v.val_batch)
    above = [u for u in verdicts[:verdicts.index(v)] if not u.fits]
    skipped = "" if not above else "; not " + ", ".join(f"{u.rung} ({u.decided}: {u.reason})" for u in above)
    if not judgeable:
        reason = (f"start rung {rung.name}: NVML does not report free memory of GPU {gpu.index}, so the first rung "
                  "that needs no free VRAM; --vram GIB or --start-rung NAME overrides")
    else:
        reason = f"start rung {rung.name}: {v.decided}{which}, {v.reason}{skipped}"
    return Choice(rung, reason, verdicts, notes)


def room_to_grow(top: Rung, v: Verdict, gpu: Gpu | None, headroom: float, grow: bool) -> tuple[str, ...]:
    """A note (item 4) when the top rung's measured need is under ROOM of the free memory: which
    batch would fit, estimated as if all of the need grew with the batch (the largest slope one
    measurement allows, so the estimate errs low)."""
    if gpu is None or gpu.free is None or v.decided != MEASURED or not v.fits or v.need is None:
        return ()
    need = v.need.device
    if need is None or need <= 0 or need >= ROOM * gpu.free:
        return ()
    batch = math.floor(top.batch * gpu.free * (1 - headroom) / need)
    then = ("[job] grow = true measured 2× and 4× where a trial ran" if grow else
            "[job] grow = true has the trials measure 2× and 4× its batch and start on the largest that fits")
    return (f"note: rung {top.name} needs {gib(need)} measured, under half of GPU {gpu.index}'s {gib(gpu.free)} free: "
            f"batch {batch} would fit (an estimate, linear in the batch from one measurement); {then}",)
