"""Pure decisions over a frozen probe Snapshot and a Ladder: which rung to start on, whether RAM
cache stays on, and why. No I/O here; every number that decided something goes into `reasons`.

tenacity (with its logging and concurrent.futures) is imported where a Policy is made or asked,
which only `run` does: dry-run imports this module without it (docs/benchmarks.md)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from . import choice
from .contract import (CUDA_OOM, EXIT_FATAL, EXIT_SIGINT, EXIT_SIGTERM, FATAL, GIB, GRACE_S, HANG, HOST_OOM,
                       INTERRUPTED, NCCL, THRASH, TRIAL_FIT, UNKNOWN, Trial)
from .errors import BadInput
from .fmt import gib
from .ladder import Job, Ladder, Rung, gpu_indices
from .probe import Gpu, Snapshot
from .runlog import Ev

if TYPE_CHECKING:
    import tenacity

CACHE_HEADROOM = 2  # RAM cache only when available RAM ≥ this × the estimate
ROOMY = 2  # a GPU with this many times the top rung's min_free_vram_gib free gets a note


@dataclass(frozen=True)
class CacheDecision:
    requested: str  # the start rung's cache
    effective: str
    estimate: int | None  # bytes, all copies
    available: int | None  # bytes of available RAM
    copies: int  # processes caching their own copy (DDP ranks)
    reason: str

    def to_json(self) -> dict:
        return {"requested": self.requested, "effective": self.effective, "estimate_bytes": self.estimate,
                "available_bytes": self.available, "copies": self.copies, "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    device: str  # as Ultralytics takes it
    gpus: tuple[Gpu, ...]  # the selected GPUs (empty on the CPU)
    start: Rung | None  # with the cache decision applied; None when nothing fits
    rungs: tuple[Rung, ...]  # the ladder with the cache decision applied
    cache: CacheDecision
    reasons: tuple[str, ...]
    problems: tuple[str, ...]  # what would make `run` refuse
    verdicts: tuple[choice.Verdict, ...] = ()  # per rung, where trials measured any (choice.choose_start)


def select_device(requested: str | None, snap: Snapshot) -> tuple[str, tuple[Gpu, ...], list[str], list[str]]:
    """The device string and the GPUs it selects, with reasons and problems."""
    reasons: list[str] = []
    problems: list[str] = []
    if requested == "cpu":
        return "cpu", (), ["device cpu: VRAM thresholds do not apply"], problems
    if requested is None:
        if not snap.gpus:
            problems.append(f"no NVIDIA GPU found ({snap.nvml}); `run` refuses — pass --device cpu to train on "
                            "the CPU (`dry-run --vram GIB` shows what a GPU with that much free memory would do)")
            return "cpu", (), ["no GPU: planned for the CPU"], problems
        requested = str(snap.gpus[0].index)
        reasons.append(f"device {requested}: the first GPU (no device in the ladder or --device)")
    by_index = {g.index: g for g in snap.gpus}
    indices = list(gpu_indices(requested))
    missing = [i for i in indices if i not in by_index]
    if missing:
        have = ", ".join(str(i) for i in by_index) or "none"
        raise BadInput(f"--device {requested}", f"GPU {', '.join(map(str, missing))} not on this machine "
                       f"(GPUs: {have})", "pick GPU indices that the probe lists, or cpu")
    return requested, tuple(by_index[i] for i in indices), reasons, problems


def choose(ladder: Ladder, snap: Snapshot, *, device: str | None = None, start_rung: str | None = None,
           dataset_images: int | None = None, dataset_problem: str | None = None,
           avoid: dict[str, str] | None = None, measured: dict[str, Trial] | None = None) -> Plan:
    """The starting rung and the cache decision, as a pure function of the snapshot. `avoid`:
    rungs that earlier nights on this machine and job saw run out of memory before an epoch.
    `measured`: trials by rung name (experience.Experience.trials): where there are any, the start
    is choice.choose_start's (measured where measured, thresholds elsewhere), and its start rung
    (in `rungs` too) carries the val_batch the choice set; with [job] grow a grown top rung
    (choice.grown) may start, first in `rungs` (grown_ladder)."""
    device, gpus, reasons, problems = select_device(device or ladder.job.device, snap)
    if dataset_problem:
        problems.append(dataset_problem)
    unavailable: dict[str, list[str]] = {}
    for rung in ladder.rungs:
        if not rung.available:
            unavailable.setdefault(rung.model.weights, []).append(rung.name)
    every = len(unavailable) and all(not r.available for r in ladder.rungs)
    for why, names in unavailable.items():
        reasons.append(f"rung{'s' if len(names) > 1 else ''} {', '.join(names)} unavailable ({why})" +
                       ("" if every else ": the ladder steps over " + ("them" if len(names) > 1 else "it")))

    measured = measured or {}
    cache = decide_cache(ladder, snap, gpus, dataset_images, measured)
    rungs, capped = fit_cpus(tuple(with_cache(r, cache) for r in ladder.rungs), snap.cpus)
    reasons.extend(capped)
    if any(r.cache == "ram" for r in ladder.rungs):
        reasons.append(cache.reason)

    start: Rung | None
    verdicts: tuple[choice.Verdict, ...] = ()
    notes: tuple[str, ...] = ()
    if start_rung:
        forced = ladder.rung(start_rung)
        if not forced.available:
            raise BadInput(f"--start-rung {start_rung}", f"rung is unavailable ({forced.model.weights})",
                           "start on another rung")
        start = forced
        reasons.insert(0, f"start rung {forced.name}: forced by --start-rung")
    elif measured:
        picked = choice.choose_start(rungs, measured, gpus, snap.ram_available, ladder.job.headroom,
                                     grow=ladder.job.grow)
        start, why, verdicts, notes = picked.start, picked.reason, picked.verdicts, picked.notes
        if start is not None and avoid and start.name in avoid:
            probed = start
            fits = {v.rung: v for v in verdicts}
            after = [v.rung for v in verdicts][[v.rung for v in verdicts].index(start.name):]
            name = next((n for n in after if n not in avoid and fits[n].fits), None)
            start = None
            if name is not None:
                grown = [g for g in choice.grown_rungs(rungs) if g.name == name]
                start = grown[0] if grown else rungs[ladder.index(name)]
                if fits[name].val_batch is not None:
                    start = replace(start, val_batch=fits[name].val_batch)
            why = (f"start rung {start.name if start else 'none'}: learned, {avoid[probed.name]} (the measurements "
                   f"alone would start on {probed.name}: {why.split(': ', 1)[1]}; --no-memory ignores what was "
                   "learned and measured)")
        (reasons.insert(0, why) if start else problems.append(why))
    else:
        start, why = pick_start(ladder.rungs, gpus)
        if start is not None and avoid and start.name in avoid:
            probed = start
            i = ladder.index(start.name)
            start = next((r for r in ladder.rungs[i:] if r.available and r.name not in avoid), None)
            why = (f"start rung {start.name if start else 'none'}: learned, {avoid[probed.name]} (the probe alone "
                   f"would start on {probed.name}: {why.split(': ', 1)[1]}; --no-memory ignores what was learned)")
        (reasons.insert(0, why) if start else problems.append(why))
        waiting = once_available(ladder.rungs, gpus, start)
        if waiting:
            reasons.append(waiting)
    names = [r.name for r in ladder.rungs]
    if start is not None and start.name in names:
        i = names.index(start.name)
        start = replace(rungs[i], val_batch=start.val_batch if measured else rungs[i].val_batch)
        rungs = rungs[:i] + (start,) + rungs[i + 1:]  # the supervisor trains from `rungs`: val_batch with it
        cache = replace(cache, requested=ladder.rung(start.name).cache, effective=start.cache)
    elif start is not None:  # a grown top rung ([job] grow): it comes first, the ladder follows
        rungs = (start,) + rungs
        cache = replace(cache, requested=ladder.rungs[0].cache, effective=start.cache)
    reasons.extend(weights_reasons(ladder.rungs))
    top = next((r.name for r in ladder.rungs if r.available), None)
    measured_top = any(v.rung == top and v.decided == choice.MEASURED for v in verdicts)
    reasons.extend(notes if measured_top else roomy_gpus(ladder.rungs, gpus))
    return Plan(device=device, gpus=gpus, start=start, rungs=rungs, cache=cache, reasons=tuple(reasons),
                problems=tuple(problems), verdicts=verdicts)


def grown_ladder(ladder: Ladder, plan: Plan) -> Ladder:
    """The ladder a plan that starts on a grown top rung trains down: that rung first (as the
    ladder asks it, before the plan's cache decision), then the ladder's own."""
    if plan.start is None or plan.start.name in {r.name for r in ladder.rungs}:
        return ladder
    factor = plan.start.batch // next(r for r in ladder.rungs if r.available).batch
    top = next(r for r in ladder.rungs if r.available)
    return replace(ladder, rungs=(choice.grown(top, factor),) + ladder.rungs)


def once_available(rungs: tuple[Rung, ...], gpus: tuple[Gpu, ...], start: Rung | None) -> str | None:
    """Where the plan would start if every rung's weights were on this machine, when that is a rung
    that is out now (an offline machine before the weights are fetched)."""
    ready = tuple(replace(r, model=replace(r.model, available=True)) for r in rungs)
    would, why = pick_start(ready, gpus)
    if would is None or (start is not None and would.name == start.name):
        return None
    now = next(r for r in rungs if r.name == would.name)
    if now.available:
        return None
    return (f"once its weights are on this machine: {why.replace('start rung', 'would start on rung', 1)} "
            f"({now.model.weights})")


def fit_cpus(rungs: tuple[Rung, ...], cpus: int | None) -> tuple[tuple[Rung, ...], list[str]]:
    """Threads and dataloader workers capped at the CPUs this process may use (its affinity)."""
    if not cpus:
        return rungs, []
    out, said = [], []
    for r in rungs:
        threads = min(r.threads, cpus) if r.threads else r.threads
        workers = min(r.workers, cpus)
        if (threads, workers) != (r.threads, r.workers):
            what = [f"{k} {a} → {b}" for k, a, b in (("threads", r.threads, threads), ("workers", r.workers, workers))
                    if a != b]
            said.append(f"rung {r.name}: {' and '.join(what)} (this process may use {cpus} CPUs)")
        out.append(replace(r, threads=threads, workers=workers))
    return tuple(out), said


def roomy_gpus(rungs: tuple[Rung, ...], gpus: tuple[Gpu, ...]) -> list[str]:
    """A note (nothing more) for a card with far more free memory than the top rung asks for."""
    top = next((r.min_free_vram_gib for r in rungs if r.available), 0.0)
    roomy = [g for g in gpus if g.free is not None and top > 0 and g.free / GIB >= ROOMY * top]
    return [f"note: GPU {g.index} has {gib(g.free)} free, over {ROOMY} × the {top:g} GiB the top rung needs: a rung "
            "with a bigger batch would use it (the ladder is yours to change)" for g in roomy]


def weights_reasons(rungs: tuple[Rung, ...]) -> list[str]:
    """One line per model: where its starting weights come from."""
    by_model: dict[str, list[Rung]] = {}
    for rung in rungs:
        if rung.available:
            by_model.setdefault(f"{rung.model.spec}\0{rung.model.weights}", []).append(rung)
    out = []
    for users in by_model.values():
        ref = users[0].model
        fetch = f" ({ref.download})" if ref.download else ""
        out.append(f"weights of {ref.spec} ({', '.join(r.name for r in users)}): {ref.weights}{fetch}")
    return out


def pick_start(rungs: tuple[Rung, ...], gpus: tuple[Gpu, ...]) -> tuple[Rung | None, str]:
    """The first available rung whose min_free_vram_gib is at most the smallest free VRAM."""
    available = [r for r in rungs if r.available]
    if not available:
        return None, "no rung is available (the reasons say why each rung is out)"
    if not gpus:
        return available[0], f"start rung {available[0].name}: the first available rung (no GPU thresholds on the CPU)"
    unknown = [g.index for g in gpus if g.free is None]
    if unknown:
        safest = next((r for r in available if r.min_free_vram_gib == 0), available[-1])
        return safest, (f"start rung {safest.name}: NVML does not report free memory of GPU "
                        f"{', '.join(map(str, unknown))}, so the first rung that needs no free VRAM; "
                        "--vram GIB or --start-rung NAME overrides")
    tightest = min(gpus, key=lambda g: g.free)
    free_gib = tightest.free / GIB
    which = f"GPU {tightest.index}" if len(gpus) == 1 else f"GPU {tightest.index}, the tightest of {len(gpus)}"
    for rung in available:
        if rung.min_free_vram_gib <= free_gib:
            skipped = [r for r in available if r.min_free_vram_gib > free_gib]
            above = "" if not skipped else "; too little for " + ", ".join(
                f"{r.name} (≥ {r.min_free_vram_gib:g} GiB)" for r in skipped)
            return rung, (f"start rung {rung.name}: {which} has {free_gib:.2f} GiB free ≥ "
                          f"{rung.min_free_vram_gib:g} GiB ({rung.name}'s min_free_vram_gib){above}")
    return None, (f"no rung fits: {which} has {free_gib:.2f} GiB free, less than every rung's "
                  f"min_free_vram_gib (lowest {min(r.min_free_vram_gib for r in available):g} GiB) — "
                  "free GPU memory or force a rung with --start-rung")


def cache_estimate(images: int, imgsz: int, copies: int) -> int:
    """Bytes RAM cache takes: RT-DETR letterboxes every image to imgsz², 3 bytes a pixel, one
    copy per process that caches (each DDP rank)."""
    return images * imgsz * imgsz * 3 * copies


def decide_cache(ladder: Ladder, snap: Snapshot, gpus: tuple[Gpu, ...], images: int | None,
                 measured: dict[str, Trial] | None = None) -> CacheDecision:
    """RAM cache on or off for every rung: by the measured peak RSS where trials measured rungs that
    ask for it, else by the estimate with CACHE_HEADROOM."""
    requested = ladder.rungs[0].cache
    copies = max(1, len(gpus))
    available = snap.ram_available
    by_rss = measured_cache(ladder, requested, available, images, copies, measured or {})
    if by_rss is not None:
        return by_rss
    if images is None:
        return CacheDecision(requested, "off", None, available, copies,
                             "RAM cache off: the dataset could not be read, so its size is unknown")
    estimate = cache_estimate(images, ladder.job.imgsz, copies)
    per = f"{images} images × {ladder.job.imgsz}² × 3 bytes" + (f" × {copies} GPUs" if copies > 1 else "")
    if available is None:
        return CacheDecision(requested, "off", estimate, None, copies,
                             f"RAM cache off: available RAM unknown; the cache would take {gib(estimate)} ({per})")
    if available >= CACHE_HEADROOM * estimate:
        return CacheDecision(requested, "ram", estimate, available, copies,
                             f"RAM cache on: {gib(available)} available ≥ {CACHE_HEADROOM} × {gib(estimate)} "
                             f"estimate ({per})")
    return CacheDecision(requested, "off", estimate, available, copies,
                         f"RAM cache off: {gib(available)} available < {CACHE_HEADROOM} × {gib(estimate)} "
                         f"estimate ({per}); rungs asking for ram run with cache off")


def measured_cache(ladder: Ladder, requested: str, available: int | None, images: int | None, copies: int,
                   measured: dict[str, Trial]) -> CacheDecision | None:
    """The cache decision from the trials of the rungs that ask for RAM cache, or None where none
    measured a peak RSS to the end (a trial that ran out of memory stopped short of its peak) or
    it cannot be used. Trial.cache is the cache the trial child really ran with: "ram" has one
    copy of the cache in its RSS (a trial is one process on one GPU: with several GPUs the other
    ranks' copies are added from the estimate); "disk" or "off" (or a trial that does not say)
    has none, and gets the whole estimate added: errs towards off. The largest need over those
    rungs decides (any of them may train tonight); it must leave [job] headroom of the available
    RAM, like a measured rung's host peak (choice.judge)."""
    if available is None:
        return None
    estimate = None if images is None else cache_estimate(images, ladder.job.imgsz, copies)
    needs = []
    for rung in ladder.rungs:
        trial = measured.get(rung.name)
        if rung.cache != "ram" or trial is None or trial.peak_rss_bytes is None or trial.ended != TRIAL_FIT:
            continue
        if trial.cache == "ram" and copies == 1:
            needs.append((trial.peak_rss_bytes, f"{rung.name}'s trial peak RSS, cache included"))
        elif trial.cache == "ram" and estimate is not None:
            others = estimate // copies * (copies - 1)
            needs.append((trial.peak_rss_bytes + others, f"{rung.name}'s trial peak RSS {gib(trial.peak_rss_bytes)}, "
                          f"one copy of the cache included, + {gib(others)} for the other {copies - 1} GPUs' copies"))
        elif trial.cache != "ram" and estimate is not None:
            needs.append((trial.peak_rss_bytes + estimate,
                          f"{rung.name}'s trial peak RSS {gib(trial.peak_rss_bytes)} + {gib(estimate)} cache estimate"))
    if not needs:
        return None
    need, what = max(needs)
    keep = 1 - ladder.job.headroom
    if need <= available * keep:
        return CacheDecision(requested, "ram", estimate, available, copies,
                             f"RAM cache on: measured {gib(need)} ({what}) ≤ {gib(available)} available × {keep:g}")
    return CacheDecision(requested, "off", estimate, available, copies,
                         f"RAM cache off: measured {gib(need)} ({what}) > {gib(available)} available × {keep:g}; "
                         "rungs asking for ram run with cache off")


def with_cache(rung: Rung, cache: CacheDecision) -> Rung:
    return replace(rung, cache="off") if rung.cache == "ram" and cache.effective != "ram" else rung


def override_epochs(ladder: Ladder, epochs: int | None) -> Ladder:
    if epochs is None:
        return ladder
    return replace(ladder, rungs=tuple(replace(r, epochs=epochs) for r in ladder.rungs))


# ---- after a failure: the policy (docs/design.md, "Failure kinds and policy") ---------------------

# A step's action is the event that records it (runlog.Ev): Ev.RETRY, Ev.STEP_DOWN or Ev.VALIDATE go
# on; Ev.FATAL and Ev.EXHAUSTED end the night; Ev.INTERRUPTED ends it resumable (under SLURM the
# supervisor records the cut instead: Ev.TIME_LIMIT or Ev.PREEMPTED).
# a Rule's `then`: what follows once retries are spent; RESTART: the same rung once more, from its checkpoint
OOM, REMEDIES, DOWN, RESTART = "oom", "remedies", "down", "restart"
RETRY_WAIT_MAX_S = 300.0  # the exponential wait stops doubling here

LATE_OOM = "resume the same rung in a fresh process (that clears leaks and fragmentation)"
EARLY_OOM = "step down to the next rung and resume from the last checkpoint"
FINAL = ("training is done, only its final validation failed: validate best.pt again at the next rung's batch, "
         "never retrain")  # any kind that does not end the night, in the final phase


def late_oom(epochs_saved: int) -> bool:
    """The one early/late rule: an OOM after the attempt saved an epoch is a leak or fragmentation
    (a fresh process clears it); before any, the rung does not fit."""
    return epochs_saved >= 1


@dataclass(frozen=True)
class Rule:
    """What follows a failure of one kind: a row of the policy table. `decide` applies it;
    `diagnose` (failures.action), the CLI help and docs/design.md's table render it (`policy_rows`)."""

    does: str  # what the launcher does, in words
    ends: str | None = None  # the event that ends the night at once, in any phase: no rung can help
    retries: int | None = 0  # transient when not 0: retried on its rung after a wait; None: [job] retries
    then: str = DOWN  # once its retries are spent: OOM (late or early), REMEDIES (host RAM), RESTART (thrash), DOWN

    @property
    def transient(self) -> bool:
        return self.ends is None and self.retries != 0


# The failure policy, once (docs/design.md, "Failure kinds and policy").
POLICY: dict[str, Rule] = {
    CUDA_OOM: Rule(f"late (the attempt saved ≥ 1 epoch): {LATE_OOM}; early: {EARLY_OOM}", then=OOM),
    HOST_OOM: Rule("retry the same rung with RAM cache off, then with half the workers (again while workers > 0), "
                   "then step down to the next rung; remedies stay applied on lower rungs", then=REMEDIES),
    NCCL: Rule("retry the same rung with exponential backoff (bounded), then step down to the next rung",
               retries=None),
    UNKNOWN: Rule("retry the same rung with exponential backoff (bounded), then step down to the next rung",
                  retries=None),
    HANG: Rule("kill the whole process tree, retry the same rung once, then step down to the next rung", retries=1),
    THRASH: Rule("the child ended itself after the epoch's save (alloc retries rose in two consecutive windows of "
                 "batches; `[job] on_thrash = \"restart\"`): the first time on a rung, restart the same rung in a fresh "
                 "process from the checkpoint (that clears fragmentation); the second time on that rung, step down to "
                 "the next rung; at the bottom of the ladder, restart it again (nothing trained is lost; the attempt "
                 "budget bounds the restarts)", then=RESTART),
    FATAL: Rule(f"stop at once with the evidence (exit {EXIT_FATAL}), never walk the ladder: no rung can fix it; "
                "correct the cause, then run again", ends=Ev.FATAL),
    INTERRUPTED: Rule(f"stop the process tree ({GRACE_S:g} s grace, then SIGKILL) and keep the checkpoint resumable "
                      f"(exit {EXIT_SIGINT}/{EXIT_SIGTERM}); run the same command again to continue",
                      ends=Ev.INTERRUPTED),
}
TRANSIENT = frozenset(k for k, r in POLICY.items() if r.transient)  # retried on the same rung after a wait


def policy_rows() -> list[tuple[str, str, str, str]]:
    """The table as (kind, what the launcher does, retries on one rung, wait), in words: the
    columns of docs/design.md's table (tests/test_design.py holds them equal) and `diagnose --help`."""
    rows = []
    for kind, rule in POLICY.items():
        if rule.ends is not None:
            retries, wait = "0", "—"
        elif rule.transient:
            retries, wait = ("`[job] retries`" if rule.retries is None else str(rule.retries)), "exponential"
        else:
            retries, wait = {OOM: "late: as long as each attempt saves an epoch (the budget bounds it); early: none",
                             REMEDIES: "one per remedy", RESTART: "1 (the bottom rung: the budget bounds it)",
                             DOWN: "none"}[rule.then], "none"
        rows.append((kind, rule.does, retries, wait))
    return rows


@dataclass(frozen=True)
class Policy:
    """The job's retry budget and waits. tenacity's wait and stop objects are the values; the
    supervisor's loop is the only loop."""

    max_attempts: int  # children started, over the whole run
    retries: int  # for unknown and NCCL failures on one rung
    wait: tenacity.wait.wait_base  # before the n-th retry of a transient failure

    @classmethod
    def of(cls, job: Job) -> "Policy":
        import tenacity

        first = job.retry_wait_s
        return cls(job.max_attempts, job.retries,
                   tenacity.wait_exponential(multiplier=first, min=first, max=RETRY_WAIT_MAX_S))

    def budget_spent(self, attempts: int) -> bool:
        return attempts >= self.max_attempts

    def retries_for(self, kind: str) -> int:
        n = POLICY[kind].retries
        return self.retries if n is None else n

    def retries_spent(self, kind: str, streak: int) -> bool:
        """`streak`: transient failures in a row on this rung, this one included."""
        import tenacity

        return tenacity.stop_after_attempt(1 + self.retries_for(kind))(_Tries(streak))

    def wait_before(self, retry: int) -> float:
        return float(self.wait(_Tries(retry)))


@dataclass(frozen=True)
class _Tries:
    """The part of tenacity's RetryCallState its wait and stop objects read."""

    attempt_number: int


@dataclass(frozen=True)
class Step:
    action: str  # the event that records it: Ev.RETRY, STEP_DOWN, VALIDATE, FATAL, EXHAUSTED or INTERRUPTED
    rung: int | None  # index into the ladder of the next attempt
    reason: str
    changes: tuple[tuple[str, object], ...] = ()  # field overrides for the next attempt (remedies)
    wait_s: float = 0.0  # before the next attempt
    retry: tuple[int, int] | None = None  # (n, of) for the retry of a transient failure


def with_remedies(rungs: tuple[Rung, ...], remedies: dict[str, object]) -> tuple[Rung, ...]:
    """The ladder with the remedies of earlier host-RAM OOMs applied (they stay on lower rungs)."""
    out = []
    for r in rungs:
        if "cache" in remedies:
            r = replace(r, cache="off")
        if "workers" in remedies:
            r = replace(r, workers=min(r.workers, int(remedies["workers"])))
        out.append(r)
    return tuple(out)


def next_rung(rungs: tuple[Rung, ...], i: int) -> int | None:
    return next((j for j in range(i + 1, len(rungs)) if rungs[j].available), None)


def decide(rungs: tuple[Rung, ...], i: int, kind: str, phase: str | None, epochs_saved: int, *,
           streak: int, policy: Policy, thrashes: int = 1) -> Step:
    """What follows an attempt on rung `i` that died of `kind` (in `phase`, after saving
    `epochs_saved` epochs): every decision of the run's policy, as a pure function. `streak` counts
    the transient failures in a row on this rung, this one included; `thrashes` the attempts on this
    rung that ended for thrashing, this one included (for kind `thrash`)."""
    rung, rule = rungs[i], POLICY[kind]
    below = next_rung(rungs, i)
    down = (Step(Ev.STEP_DOWN, below, f"step down from {rung.name} to {rungs[below].name}") if below is not None
            else Step(Ev.EXHAUSTED, None, f"{rung.name} is the bottom of the ladder"))
    if rule.ends is not None:
        return Step(rule.ends, None, "fatal: no rung can fix it" if rule.ends == Ev.FATAL else kind)
    if rule.transient and not policy.retries_spent(kind, streak):
        of, wait = policy.retries_for(kind), policy.wait_before(streak)
        return Step(Ev.RETRY, i, f"retry {streak}/{of} of rung {rung.name} in {wait:.0f} s after {kind}",
                    wait_s=wait, retry=(streak, of))
    if phase == "final":
        # training is done; only the final validation is owed: validate at a lower rung's batch
        if below is not None:
            return Step(Ev.VALIDATE, below, f"final validation failed ({kind}): validate at {rungs[below].name}'s "
                                            f"batch ({rungs[below].batch}), never retrain")
        return Step(Ev.EXHAUSTED, None, f"final validation failed ({kind}) at the bottom of the ladder")
    if rule.then == OOM and late_oom(epochs_saved):
        return Step(Ev.RETRY, i, f"late OOM after {epochs_saved} epoch(s) in the attempt: resume {rung.name} in a "
                                 "fresh process (clears leaks and fragmentation)")
    if rule.then == OOM:
        return replace(down, reason=f"early OOM (no epoch completed in the attempt): {down.reason}")
    if rule.then == RESTART and (thrashes <= 1 or below is None):
        # at the bottom there is no lighter rung, and a thrash is no failure: its epoch is saved
        again = "" if thrashes <= 1 else f" again ({thrashes} times, the bottom of the ladder)"
        return Step(Ev.RETRY, i, f"the allocator thrashed{again} on {rung.name}: restart it in a fresh process from "
                                 "its checkpoint (clears fragmentation)")
    if rule.then == RESTART:
        return replace(down, reason=f"the allocator thrashed again on {rung.name} ({thrashes} times): {down.reason}")
    if rule.then == REMEDIES:
        if rung.cache == "ram":
            return Step(Ev.RETRY, i, f"host RAM ran out: retry {rung.name} with RAM cache off", (("cache", "off"),))
        if rung.workers > 0:
            workers = rung.workers // 2
            return Step(Ev.RETRY, i, f"host RAM ran out: retry {rung.name} with {workers} workers",
                        (("workers", workers),))
        return replace(down, reason=f"host RAM ran out with cache off and no workers: {down.reason}")
    return replace(down, reason=f"{kind} persisted after its retries: {down.reason}")
