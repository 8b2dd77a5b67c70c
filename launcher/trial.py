"""The trial child: one rung measured for real (`Spec.mode` "trial"; docs/design.md, "Tuning: a
measured trial per rung").

`child.main` hands `run` the spec and its `Watch` (heartbeat, VRAM cap, threads, --inject drills).
The trial trains the rung's model on the real data with the rung's real arguments, Ultralytics'
own loop doing the optimizer step, EMA and AMP, into the trial's folder with `save=False`,
`plots=False` and `val=False`: no checkpoint is ever written (a save needs `save` or the final
epoch, and the trial stops long before it). After `warmup` + `iterations` batches it validates
`val_batches` batches through the trainer's own validator, on the EMA model, at the batch the night
validates at (Ultralytics' 2 × batch, or `Spec.val_batch`), and stops training with a private
exception from a callback: nothing in Ultralytics' `_do_train` catches it (the OOM handler wraps the
forward and backward pass only). `Measure` holds the numbers, read from a `memstats.Stats` at every
batch end, and decides when the trial ends early: an OOM, the thrash rule, the budget (counted from
the first batch: what comes before it, a RAM cache built among it, is the start-up, which the
launcher's watchdog bounds as an attempt's, by `startup_timeout_s`).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from pathlib import Path
from typing import Callable

from . import failures, memstats
from .contract import (CUDA_OOM, GIB, HOST_OOM, TRIAL_FAILED, TRIAL_FIT, TRIAL_NAME, TRIAL_OOM, TRIAL_RETRIES,
                       TRIAL_TIMEOUT, Report, Spec, Trial)
from .runlog import write_json_atomic


class _Stop(Exception):
    """Ends the trial from a callback, with how it ended. An Exception of its own (no RuntimeError:
    Ultralytics' first-epoch OOM handler catches those, and only around the forward/backward pass)."""

    def __init__(self, ended: str, why: str | None = None):
        super().__init__(why or ended)
        self.ended, self.why = ended, why


class _ValDone(Exception):
    """Enough validation batches: ends the validator's loop, caught around `trainer.validate()`."""


def _max(values) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


class Measure:
    """A trial's numbers, from a `Stats` provider (docs/design.md, "Tuning: a measured trial per
    rung"). Pure over `stats` and `clock`: a test drives it with stand-ins, the CUDA path on a CPU.

    `start()` as training starts (the baseline of the cumulative counters), `train_batch()` at each
    training batch end (True once warm-up and measured iterations are done), `begin_val()` then
    `val_batch()` per validation batch (True once enough ran), `failed()` after an exception (what
    memory reached), `trial()` the document. Ends early by raising `_Stop`: alloc retries rising in
    two consecutive windows (memstats.RisingWindows), or the budget spent, counted from the end of
    the first training batch (`first_batch_s` is the time from `started`, the child's start, to it:
    the start-up, a RAM cache built included, is the launcher's watchdog's to bound). The time a
    sample takes is no part of any measured iteration (the night does not sample the tree)."""

    def __init__(self, stats: memstats.Stats, *, warmup: int, iterations: int, val_batches: int, window: int,
                 budget_s: float, started: float, batch: int, clock: Callable[[], float] = time.time):
        self.stats, self.clock, self.started = stats, clock, started
        self.warmup, self.iterations, self.val_batches, self.budget_s = warmup, iterations, val_batches, budget_s
        self.batch = batch
        self.windows = memstats.RisingWindows(window)
        self.base: memstats.Sample | None = None  # at the start: the counters' rise is counted from it
        self.last: memstats.Sample | None = None
        self.train: list[memstats.Sample] = []
        self.val: list[memstats.Sample] = []
        self.validating = False
        self.trained = self.validated = 0  # batches
        self.first_batch_s: float | None = None
        self.measuring_since: float | None = None  # the first batch's end: the budget counts from it
        self._t_prev: float | None = None
        self.seconds_per_batch: list[float] = []  # the measured iterations' (after the warm-up)
        self.images_per_batch: list[int] = []

    def start(self) -> None:
        self.base = self._sample()
        self._t_prev = self.clock()

    def train_batch(self, images: int | None = None) -> bool:
        """A training batch ended, of `images` images (None: `batch`; a loader caps its batch at a
        small dataset's size, and an epoch's last batch may be short)."""
        now = self.clock()
        self.trained += 1
        if self.first_batch_s is None:
            self.first_batch_s, self.measuring_since = now - self.started, now
        if self.trained > self.warmup and self._t_prev is not None:
            self.images_per_batch.append(images or self.batch)
            self.seconds_per_batch.append(now - self._t_prev)
        done = self.trained >= self.warmup + self.iterations
        if done:
            self._read_now()  # training's last look reads the tree afresh (memstats.Paced)
        s = self._sample()
        self._t_prev = self.clock()  # the next iteration's time starts after this sample
        if self.windows.add(s.alloc_retries):
            raise _Stop(TRIAL_RETRIES, f"alloc retries rose in two consecutive windows of {self.windows.window} "
                                       f"batches (now {self.rise('alloc_retries')} in the trial)")
        self._budget()
        return done

    def sample_train(self) -> None:
        """One more training sample (after a step the loop did not make, see Callbacks.validate)."""
        self._sample()

    def begin_val(self) -> None:
        """Training measured: the peaks start afresh for the validation pass."""
        self._sample()
        self.stats.reset_peaks()
        self.validating = True
        self._sample()

    def val_batch(self) -> bool:
        self.validated += 1
        if self.validated >= self.val_batches:
            self._read_now()
        self._sample()
        self._budget()
        return self.validated >= self.val_batches

    def failed(self) -> None:
        """After an exception: what memory reached, and the counters' rise (an OOM counts in num_ooms)."""
        try:
            self._sample()
        except Exception:  # noqa: BLE001 - a dead CUDA context: the samples so far stand
            pass

    def _read_now(self) -> None:
        read_now = getattr(self.stats, "read_now", None)
        if read_now is not None:
            read_now()

    def _sample(self) -> memstats.Sample:
        s = self.stats.sample()
        (self.val if self.validating else self.train).append(s)
        self.last = s
        return s

    def _budget(self) -> None:
        if self.measuring_since is None:
            return
        spent = self.clock() - self.measuring_since
        if spent > self.budget_s:
            raise _Stop(TRIAL_TIMEOUT, f"budget of {self.budget_s:g} s spent ({spent:.0f} s since the first batch) "
                                       f"after {self.trained} training and {self.validated} validation batches")

    def rise(self, counter: str) -> int | None:
        """How much a cumulative counter (alloc_retries, ooms) rose during the trial."""
        start = getattr(self.base, counter, None) if self.base else None
        end = getattr(self.last, counter, None) if self.last else None
        return end - start if start is not None and end is not None else None

    @property
    def images_per_s(self) -> float | None:
        """The median over the measured iterations of batch / the iteration's time."""
        rates = [n / s for n, s in zip(self.images_per_batch, self.seconds_per_batch) if s > 0]
        return round(statistics.median(rates), 3) if rates else None

    def trial(self, ended: str, why: str | None = None, **facts) -> Trial:
        everything = [*self.train, *self.val]
        return Trial(
            ended=ended, why=why, batch=self.batch, warmup=self.warmup,
            iterations=max(self.trained - self.warmup, 0), val_batches=self.validated,
            peak_reserved_bytes=_max(s.peak_reserved for s in self.train),
            peak_allocated_bytes=_max(s.peak_allocated for s in self.train),
            val_peak_reserved_bytes=_max(s.peak_reserved for s in self.val),
            val_peak_allocated_bytes=_max(s.peak_allocated for s in self.val),
            device_used_bytes=_max(s.device_used for s in everything), alloc_retries=self.rise("alloc_retries"),
            ooms=self.rise("ooms"), peak_rss_bytes=_max(s.rss for s in everything), images_per_s=self.images_per_s,
            first_batch_s=None if self.first_batch_s is None else round(self.first_batch_s, 3),
            seconds=round(self.clock() - self.started, 3), ts=round(time.time(), 3), **facts)


def ending(e: BaseException) -> tuple[str, str]:
    """(Trial.ended, why) for the exception that ended a trial: an OOM as the launcher's failure
    classifier reads one (CUDA or host), else a failure that says nothing about memory."""
    if isinstance(e, _Stop):
        return e.ended, e.why or e.ended
    exc_type = f"{type(e).__module__}.{type(e).__qualname__}".removeprefix("builtins.")
    why = f"{exc_type}: {str(e).strip()}"[:500]
    found = failures.classify("", report=Report(exc_type=exc_type, message=str(e)[:2000]))
    return (TRIAL_OOM if found and found.kind in (CUDA_OOM, HOST_OOM) else TRIAL_FAILED), why


def trial_args(spec: Spec) -> dict:
    """`train()`'s arguments for the trial: the rung's own, with nothing saved or plotted and no
    validation at an epoch end (the trial runs its own, at its end). Several GPUs: the trial runs
    on the first at one rank's share of the batch, which is what each DDP rank holds."""
    args = {**spec.fresh_args(), **spec.extra_args, "save": False, "plots": False, "val": False}
    gpus = [d for d in str(args.get("device", "cpu")).split(",") if d.strip()]
    if len(gpus) > 1 and isinstance(args.get("batch"), int):
        args.update(device=gpus[0].strip(), batch=max(args["batch"] // len(gpus), 1))
    return args


class Callbacks:
    """The trial's Ultralytics callbacks, registered after the Watch's (which beats, caps VRAM and
    fires --inject drills)."""

    def __init__(self, measure: Measure, watch, val_batch: int | None):
        self.measure, self.watch, self.val_batch = measure, watch, val_batch
        self.trainer = None
        self.steps = 0  # optimizer steps taken
        self.images: int | None = None  # in the last training batch

    def register(self, model) -> None:
        for event in ("on_pretrain_routine_start", "on_pretrain_routine_end", "on_train_start",
                      "on_train_epoch_start", "on_train_batch_end", "on_val_batch_end"):
            model.add_callback(event, getattr(self, event))

    def on_pretrain_routine_start(self, trainer) -> None:
        from .callbacks import use_val_batch
        self.trainer = trainer
        use_val_batch(trainer, self.val_batch)  # before _setup_train builds the loaders

    def on_pretrain_routine_end(self, trainer) -> None:
        # A small dataset: more epochs, so the trial stops inside one and no epoch end is the final
        # one (a final epoch saves a checkpoint whatever `save` says)
        need = self.measure.warmup + self.measure.iterations
        trainer.epochs = max(trainer.epochs, math.ceil(need / max(len(trainer.train_loader), 1)) + 1)

    def on_train_start(self, trainer) -> None:
        step, preprocess = trainer.optimizer_step, trainer.preprocess_batch

        def counted_step():
            self.steps += 1
            return step()

        def seen(batch):
            self.images = len(batch["img"])  # the batch's images, for images/s
            return preprocess(batch)
        trainer.optimizer_step, trainer.preprocess_batch = counted_step, seen
        self.measure.start()

    def on_train_epoch_start(self, trainer) -> None:
        trainer._oom_retries = 3  # as callbacks.Watch: Ultralytics' own batch halving never hides an OOM

    def on_train_batch_end(self, trainer) -> None:
        if self.measure.train_batch(self.images):
            self.validate(trainer)
            raise _Stop(TRIAL_FIT)

    def on_val_batch_end(self, validator) -> None:
        if self.measure.validating and self.measure.val_batch():
            raise _ValDone

    def validate(self, trainer) -> None:
        """The validation pass, as Ultralytics runs it at an epoch's end: memory cleared past half
        the card, then the trainer's validator on the EMA model and the val loader."""
        if self.steps == 0:  # accumulate outgrew the iterations: the step's memory (optimizer state) counts
            print(f"launcher: trial: no optimizer step in {self.measure.trained} batches (accumulate "
                  f"{trainer.accumulate}); one step taken and measured", flush=True)
            trainer.optimizer_step()
            self.measure.sample_train()
        trainer._clear_memory(None if trainer.device.type == "mps" else 0.5)
        self.measure.begin_val()
        self.watch.phase = "val"  # --inject …:val reaches the trial's validation too
        self.watch.beat(force=True)
        try:
            trainer.validate()
        except _ValDone:
            pass
        finally:
            self.measure.validating = False


def started_at() -> float:
    """When this process started (the trial's time to its first batch counts from it)."""
    import psutil
    try:
        return psutil.Process(os.getpid()).create_time()
    except psutil.Error:
        return time.time()


def run(spec: Spec, watch, stats: memstats.Stats | None = None) -> dict:
    """Measure the spec's rung and write its Trial (atomically) to `Spec.trial["path"]`. Returns
    the success report's fields when the trial ended on its own terms (fit, alloc retries, budget);
    re-raises an OOM or another failure after writing the Trial, so report.json says it as any
    child's does."""
    from ultralytics import RTDETR

    plan, args = spec.trial or {}, trial_args(spec)
    path = Path(plan.get("path") or Path(spec.save_dir) / TRIAL_NAME)
    measure = Measure(stats or memstats.for_device(str(args.get("device", "cpu"))),
                      warmup=int(plan.get("warmup", 5)), iterations=int(plan.get("iterations", 25)),
                      val_batches=int(plan.get("val_batches", 4)), window=int(plan.get("window", 5)),
                      budget_s=float(plan.get("budget_s", 90)), started=started_at(), batch=int(args["batch"]))
    callbacks = Callbacks(measure, watch, spec.val_batch)
    facts = dict(rung=spec.rung, model=spec.model or "", device=str(args.get("device", "cpu")),
                 imgsz=args.get("imgsz") if isinstance(args.get("imgsz"), int) else None)
    raised: BaseException | None = None
    try:
        model = RTDETR(spec.model)
        watch.register(model)
        callbacks.register(model)
        model.train(**args)
        ended, why = TRIAL_FAILED, f"training ended after {measure.trained} batches, before the trial measured enough"
    except BaseException as e:  # noqa: BLE001 - every ending is written down; failures are raised again
        ended, why = ending(e)
        if not isinstance(e, _Stop):
            measure.failed()
            raised = e
            if isinstance(e, KeyboardInterrupt):  # SIGTERM: the launcher's budget, or Ctrl-C
                why = f"interrupted ({str(e) or 'KeyboardInterrupt'})"
    finally:
        close_loaders(callbacks.trainer)
    trainer = callbacks.trainer
    loader = getattr(trainer, "test_loader", None)
    trial = measure.trial(ended, None if ended == TRIAL_FIT else why, val_batch=getattr(loader, "batch_size", None),
                          cache=ran_cache(trainer, args), **facts)
    write_json_atomic(path, trial.to_json())
    print(summary(trial), flush=True)
    if raised is not None:
        raise raised
    watch.phase = "done"
    watch.beat(force=True)
    return {}


def ran_cache(trainer, args: dict) -> str:
    """The cache the trial ran with ("ram", "disk" or "off"): its training dataset's, where the
    loader was built (Ultralytics turns a RAM or disk cache off when there is no room for it,
    BaseDataset.check_cache_ram), else the argument's. "ram" puts the cache in the peak RSS
    (plan.measured_cache)."""
    dataset = getattr(getattr(trainer, "train_loader", None), "dataset", None)
    if dataset is not None and hasattr(dataset, "cache"):
        cache = dataset.cache
    else:
        cache = args.get("cache")
    return cache if cache in ("ram", "disk") else "ram" if cache is True else "off"


def close_loaders(trainer) -> None:
    """Shut the dataloaders' workers down (Ultralytics does at the end of `_do_train`, which a
    trial never reaches)."""
    for loader in (getattr(trainer, "train_loader", None), getattr(trainer, "test_loader", None)):
        if hasattr(loader, "close"):
            try:
                loader.close()
            except Exception:  # noqa: BLE001 - the process ends soon; its workers with it
                pass


def summary(trial: Trial) -> str:
    """The line the trial's log ends with."""
    def gib(n):
        return f"{n / GIB:.2f} GiB" if n is not None else "?"
    speed = f"{trial.images_per_s:.1f} img/s" if trial.images_per_s else "no speed"
    return (f"launcher: trial {trial.rung}: {trial.ended}{f' ({trial.why})' if trial.why else ''}; peak "
            f"{gib(trial.peak_reserved_bytes)} training, {gib(trial.val_peak_reserved_bytes)} validation at batch "
            f"{trial.val_batch}, RSS {gib(trial.peak_rss_bytes)}; {speed}; {trial.seconds:.0f} s")
