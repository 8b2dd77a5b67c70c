"""The ETA of a night: how long training takes at a measured speed (docs/design.md, "Dry-run,
status, report"). Pure: numbers in, numbers out; no I/O, no torch.

`training_s` is the one rule for "E epochs of this rung take how long": dry-run's Measured
section, the `start` event's `eta_s`, status's fall-back on the trial and (issue 22) a deadline
all call it. A trial times training iterations only (its validation pass is a few batches, not
timed for speed), so an ETA from a trial counts training alone: validation and start-up are not
in it, and the words say so. An ETA from this run's finished epochs (results.csv's `time`, which
runs from the attempt's training start over each epoch's training and validation) counts both.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where an epoch's time came from, best first (status prefers the first it has):
EPOCHS = "this run's epochs"  # results.csv: the attempt's finished epochs, training and validation
PACE = "this run's pace"  # the heartbeat: this epoch's batches at its it/s, training only
TRIAL = "the trial"  # the rung's trial: train images at its images/s, training only
WITH_VAL = {EPOCHS: True, PACE: False, TRIAL: False}


def training_s(images_per_s: float | None, epochs: float | None, train_images: int | None) -> float | None:
    """Seconds of training for `epochs` epochs over `train_images` images at `images_per_s`
    (a trial's median speed): validation and start-up not counted. None where a number is missing."""
    if not images_per_s or images_per_s <= 0 or epochs is None or not train_images or train_images <= 0:
        return None
    return epochs * train_images / images_per_s


@dataclass(frozen=True)
class Expected:
    """A night's (or its rest's) expected training time, and what it stands on."""

    seconds: float
    source: str  # EPOCHS, PACE or TRIAL
    epoch_s: float  # one epoch at that speed
    epochs: float  # the epochs counted (a fraction for the epoch in progress)

    @property
    def with_val(self) -> bool:
        return WITH_VAL[self.source]

    def words(self) -> str:
        """Where the number came from and what it counts: "from the trial (training only)"."""
        return f"from {self.source} ({'training and validation' if self.with_val else 'training only'})"

    def to_json(self) -> dict:
        return {"seconds": round(self.seconds, 1), "from": self.source, "epoch_s": round(self.epoch_s, 2),
                "epochs": round(self.epochs, 3), "with_val": self.with_val}


def epochs_left(epochs: int | None, epoch: int | None, batch: int | None, batches: int | None,
                done: int | None = None) -> float | None:
    """Epochs still to train: those after the epoch in progress (1-based `epoch` of `epochs`) and
    the rest of it (batch of batches); before the first batch, `epochs` less the epochs `done`."""
    if epochs is None:
        return None
    if epoch is None:
        return None if done is None else float(max(0, epochs - done))
    part = 1.0 if not batches or batch is None else max(0.0, 1 - min(batch, batches) / batches)
    return max(0, epochs - epoch) + part


def run_epoch_s(rows: dict[int, dict[str, float]], saved: int | None, last: int | None) -> float | None:
    """One epoch's seconds from this attempt's finished epochs: results.csv's `time` at its last
    saved epoch (seconds since the attempt's training started, Ultralytics restarts it on resume)
    over the epochs it saved."""
    if not saved or saved <= 0 or last is None:
        return None
    t = (rows.get(last) or {}).get("time")
    return t / saved if t and t > 0 else None


def pace_epoch_s(batches: int | None, it_s: float | None) -> float | None:
    """One epoch's training seconds at this epoch's pace (the heartbeat's it/s)."""
    return batches / it_s if batches and batches > 0 and it_s and it_s > 0 else None


def rest(left: float | None, *, run_epoch: float | None = None, pace_epoch: float | None = None,
         trial_epoch: float | None = None) -> Expected | None:
    """The rest of the training at the best epoch time there is: this run's finished epochs, else
    this epoch's pace, else the trial's speed; None without epochs left or any epoch time."""
    if left is None:
        return None
    for source, epoch_s in ((EPOCHS, run_epoch), (PACE, pace_epoch), (TRIAL, trial_epoch)):
        if epoch_s is not None and epoch_s > 0:
            return Expected(left * epoch_s, source, epoch_s, left)
    return None


def at_start(plan, train_images: int | None) -> Expected | None:
    """The night's expected training time at `plan`'s start rung from its trial, where a trial
    measured it (a `choice.Verdict` decided by measurement); else None (a threshold says no speed)."""
    from .choice import MEASURED

    if plan.start is None:
        return None
    v = next((v for v in plan.verdicts if v.rung == plan.start.name and v.decided == MEASURED), None)
    speed = v.trial.images_per_s if v is not None and v.trial is not None else None
    seconds = training_s(speed, plan.start.epochs, train_images)
    if seconds is None:
        return None
    return Expected(seconds, TRIAL, training_s(speed, 1, train_images), float(plan.start.epochs))


def speeds(plan) -> dict[str, float]:
    """Each measured rung's trial speed (images/s), for the record: status falls back on it."""
    from .choice import MEASURED

    return {v.rung: v.trial.images_per_s for v in plan.verdicts
            if v.decided == MEASURED and v.trial is not None and v.trial.images_per_s}


def versus(expected_s: float, took_s: float) -> str:
    """The real time against the expected, as a signed share: "+5 %", "-12 %"."""
    return f"{100 * (took_s / expected_s - 1):+.0f} %" if expected_s > 0 else "-"
