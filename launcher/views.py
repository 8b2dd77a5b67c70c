"""Text and JSON renderings of what the commands found. Pure: data in, strings out."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from . import eta
from .choice import MEASURED, Verdict
from .contract import Spec, Trial
from .dataset import Dataset
from .experience import Experience
from .failures import Failure, action
from .ladder import Ladder, Rung
from .fmt import duration, gib
from .plan import Plan
from .probe import Snapshot


@dataclass(frozen=True)
class DryRun:
    snap: Snapshot
    ladder: Ladder
    plan: Plan
    dataset: Dataset | None
    spec: Spec | None  # what the first attempt's spec.json would hold
    spec_path: Path | None
    env: dict[str, str]
    command: list[str]
    experience: Experience | None = None  # what earlier nights learned (None with --no-memory)
    warnings: tuple[str, ...] = ()  # one line each, said first (overrides.warnings, continuation.records_met)
    trials: dict[str, tuple[Trial, str]] = field(default_factory=dict)  # stored measurements, with when noted


def rel(p: str | Path, cwd: Path | None = None) -> str:
    """A path as a person would type it from here."""
    cwd = cwd or Path.cwd()
    try:
        return str(Path(p).relative_to(cwd))
    except ValueError:
        return str(p)


def _vram_cap(rung: Rung) -> str:
    return "none" if rung.vram_fraction is None else f"{rung.vram_fraction:.0%}"


def _threshold(rung: Rung) -> str:
    return "any" if rung.min_free_vram_gib == 0 else f"≥ {rung.min_free_vram_gib:g} GiB"


def ladder_rows(ladder: Ladder, plan: Plan) -> list[str]:
    head = ("rung", "model", "epochs", "batch", "workers", "cache", "threads", "vram cap", "cleanup", "start if free")
    rows = [head]
    for asked, rung in zip(ladder.rungs, plan.rungs):
        cache = rung.cache if rung.cache == asked.cache else f"{asked.cache}→{rung.cache}"
        rows.append((rung.name, rung.model.spec, str(rung.epochs), str(rung.batch), str(rung.workers), cache,
                     str(rung.threads or "-"), _vram_cap(rung), str(rung.cleanup_every or "never"), _threshold(rung)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    out = []
    for i, row in enumerate(rows):
        mark = " "
        note = ""
        if i:
            rung = plan.rungs[i - 1]
            mark = ">" if plan.start and rung.name == plan.start.name else ("x" if not rung.available else " ")
            note = "" if rung.available else "  unavailable (see Why)"
        out.append(f"  {mark} " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() + note)
    confs: dict[str, list[str]] = {}
    for rung in plan.rungs:
        confs.setdefault(rung.alloc_conf or "(PyTorch default)", []).append(rung.name)
    out.append("    allocator: " + "; ".join(f"{', '.join(names)}: {conf}" for conf, names in confs.items()))
    return out


def dry_run_text(d: DryRun, cwd: Path | None = None) -> str:
    snap, plan = d.snap, d.plan
    out = [f"warning: {w}" for w in d.warnings] + ([""] if d.warnings else []) + ["Probe"]
    if not snap.gpus:
        out.append(f"  GPUs   none ({snap.nvml})")
    for g in snap.gpus:
        card = "" if g.physical in (None, g.index) and not snap.nvml.startswith("ok (") else \
            f"  (card {g.physical if g.physical is not None else '?'}{f', {g.uuid}' if g.uuid else ''})"
        out.append(f"  GPU {g.index}  {g.name or 'unknown name'}  total {gib(g.total)}  free {gib(g.free)}{card}")
    if snap.gpus and snap.nvml.startswith("ok"):
        out.append(f"  NVML   {snap.nvml}, driver {snap.driver or 'unknown'}")
    out.append(f"  RAM    total {gib(snap.ram_total)}  available {gib(snap.ram_available)}")
    out.append(f"  CPUs   {snap.cpus if snap.cpus is not None else 'unknown'}")
    pretend = []
    if snap.pretend_vram is not None:
        pretend.append(f"--vram {snap.pretend_vram:g} GiB free")
    if snap.pretend_ram is not None:
        pretend.append(f"--ram {snap.pretend_ram:g} GiB available")
    if pretend:
        out.append(f"  pretend  {', '.join(pretend)}")

    out += ["", f"Dataset  {rel(d.ladder.job.dataset, cwd)}"]
    if d.dataset:
        ds = d.dataset
        out.append(f"  {ds.train_images} train + {ds.val_images} val images, {ds.names} class{'es' if ds.names != 1 else ''}, "
                   f"imgsz {d.ladder.job.imgsz}")
    else:
        out.append("  not readable (see Problems)")

    where = f"run {d.ladder.job.name!r}, device {plan.device}"
    out += ["", f"Ladder  {rel(d.ladder.path, cwd)}  ({where}; > start, x unavailable)"]
    out += ladder_rows(d.ladder, plan)

    out += measured_rows(d)

    out += ["", "Why"] + [f"  - {r}" for r in plan.reasons]

    if d.spec is not None and d.spec_path is not None:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(d.env.items()))
        cmd = " ".join(shlex.quote(c) for c in d.command)
        out += ["", f"Would run  (attempt {d.spec.attempt}, rung {d.spec.rung})",
                f"  cd {shlex.quote(str(cwd or Path.cwd()))}",
                f"  env {env} \\", f"    {cmd}",
                f"  {rel(d.spec_path, cwd)}:"]
        out += ["    " + line for line in json.dumps(d.spec.to_json(), indent=2).splitlines()]
    if plan.problems:
        out += ["", "Problems (run would refuse)"] + [f"  - {p}" for p in plan.problems]
    return "\n".join(out) + "\n"


def night_s(trial: Trial | None, epochs: int, d: DryRun) -> float | None:
    """The night's training time from a trial's speed (eta.training_s: validation and start-up not counted)."""
    if trial is None or d.dataset is None:
        return None
    return eta.training_s(trial.images_per_s, epochs, d.dataset.train_images)


def night_line(d: DryRun) -> list[str]:
    """The start rung's ETA in words, where its trial measured its speed (eta.at_start)."""
    expected = eta.at_start(d.plan, d.dataset.train_images if d.dataset else None)
    if expected is None:
        return []
    start, images = d.plan.start, d.dataset.train_images
    epochs = f"{start.epochs} epoch{'s' if start.epochs != 1 else ''}"
    return [f"  the night: about {duration(expected.seconds)} of training on {start.name} at the measured "
            f"{images / expected.epoch_s:.1f} images/s ({epochs} × {images} train images), plus validation and "
            "start-up, which the trial did not time"]


def measured_rows(d: DryRun) -> list[str]:
    """Per rung, where trials measured any: its numbers and what decided it (docs/design.md,
    "Tuning: a measured trial per rung"). Nothing where no trial is stored: the plan is the thresholds'."""
    plan = d.plan
    if not any(v.decided == MEASURED for v in plan.verdicts):
        return []
    rungs = {r.name: r for r in plan.rungs}
    out = ["", f"Measured  (trials stored in logs/experience.json; a measured peak leaves "
               f"{d.ladder.job.headroom:.0%} of the free memory unused)"]
    width = max(len(v.rung) for v in plan.verdicts)
    for v in plan.verdicts:
        mark = ">" if plan.start is not None and v.rung == plan.start.name else " "
        head = f"  {mark} {v.rung.ljust(width)}  "
        fits = "fits" if v.fits else "does not fit"
        if v.decided != MEASURED:
            what = "its trial does not decide" if v.rung in d.trials else "not measured"  # the reason says why
            out.append(f"{head}{what}: the threshold decided, {fits} ({v.reason})")
            continue
        t, when = v.trial, d.trials.get(v.rung, (None, ""))[1]
        numbers = [f"train {gib(t.peak_reserved_bytes)}",
                   f"val {gib(t.val_peak_reserved_bytes)} at batch {v.need.val_batch if v.need else t.val_batch}"]
        if t.device_used_bytes is not None:
            numbers.append(f"device {gib(t.device_used_bytes)}")
        numbers += [f"host {gib(t.peak_rss_bytes)}",
                    "- images/s" if t.images_per_s is None else f"{t.images_per_s:.1f} images/s"]
        eta = night_s(t, rungs[v.rung].epochs, d) if v.rung in rungs and v.fits else None
        if eta is not None:
            numbers.append(f"night ≈ {duration(eta)} ({rungs[v.rung].epochs} epochs × {d.dataset.train_images} "
                           "images, training only)")
        out.append(f"{head}measured {when[:16].replace('T', ' ')}, ended {t.ended}: {', '.join(numbers)}")
        out.append(f"    {' ' * width}  {fits} (measured): {v.reason}")
    return out + night_line(d)


def dry_run_json(d: DryRun) -> dict:
    plan = d.plan
    return {
        "probe": d.snap.to_json(),
        "device": plan.device,
        "start_rung": plan.start.name if plan.start else None,
        "eta": start_eta_json(d),
        "cache": plan.cache.to_json(),
        "reasons": list(plan.reasons),
        "problems": list(plan.problems),
        "warnings": list(d.warnings),
        "dataset": None if d.dataset is None else {
            "yaml": str(d.dataset.yaml), "train_images": d.dataset.train_images,
            "val_images": d.dataset.val_images, "classes": d.dataset.names},
        "ladder": {
            "path": str(d.ladder.path),
            "run": d.ladder.job.name,
            "imgsz": d.ladder.job.imgsz,
            "rungs": [{**rung_json(asked, r), **measured_json(d, r)} for asked, r in zip(d.ladder.rungs, plan.rungs)],
        },
        "child": None if d.spec is None else {
            "command": d.command, "env": d.env, "spec_path": str(d.spec_path), "spec": d.spec.to_json()},
    }


def start_eta_json(d: DryRun) -> dict | None:
    """The start rung's ETA from its trial (eta.at_start), or None."""
    expected = eta.at_start(d.plan, d.dataset.train_images if d.dataset else None)
    return None if expected is None else expected.to_json()


def rung_json(asked: Rung, rung: Rung) -> dict:
    return {
        "name": rung.name, "model": rung.model.spec, "model_source": rung.model.source,
        "available": rung.available, "weights": rung.model.weights, "download": rung.model.download,
        "epochs": rung.epochs, "batch": rung.batch, "workers": rung.workers,
        "cache": rung.cache, "cache_asked": asked.cache, "threads": rung.threads,
        "vram_fraction": rung.vram_fraction, "alloc_conf": rung.alloc_conf, "cleanup_every": rung.cleanup_every,
        "min_free_vram_gib": rung.min_free_vram_gib, "pretrained": rung.pretrained, "val_batch": rung.val_batch,
    }


def measured_json(d: DryRun, rung: Rung) -> dict:
    """What decided a rung (measured, threshold, or None: not judged), its trial and the night it gives."""
    v: Verdict | None = next((v for v in d.plan.verdicts if v.rung == rung.name), None)
    measured = v is not None and v.decided == MEASURED
    return {"decided": v.decided if v else None, "fits": v.fits if v else None, "why": v.reason if v else None,
            "measured_at": d.trials.get(rung.name, (None, None))[1] if measured else None,
            "trial": v.trial.to_json() if measured else None,
            "night_s": night_s(v.trial, rung.epochs, d) if measured and v.fits else None}


def diagnose_text(path: str, failure: Failure | None, epochs_completed: int | None = None) -> str:
    if failure is None:
        return f"{path}: no failure found (no recognised error in the log and no failing exit code)\n"
    phase = f" (phase {failure.phase})" if failure.phase else ""
    return (f"kind      {failure.kind}{phase}\n"
            f"evidence  {failure.evidence}\n"
            f"action    {action(failure, epochs_completed)}\n")


def diagnose_json(failure: Failure | None, epochs_completed: int | None = None) -> dict:
    if failure is None:
        return {"kind": None, "evidence": None, "action": "nothing to do: the process succeeded"}
    return {**failure.to_json(), "action": action(failure, epochs_completed)}

