"""Ultralytics callbacks the child registers. With child.py, the only code that imports torch.

One `Watch` object carries all the state (phase, epoch, batch, epochs saved) and its bound
methods are the callbacks: plain attributes only, so Ultralytics' DDP can cloudpickle it to the
ranks before training (no lock or open file; the verified copy's thread exists only while it writes).
Saves and the verified copy: docs/design.md, "Checkpoints".
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoint import zip_damage
from .contract import CUDA_OOM, THRASH, Heartbeat, Spec
from .ladder import gpu_indices
from .memstats import CudaStats, RisingWindows, Sample, Stats
from .runlog import write_json_atomic

HEARTBEAT_EVERY_S = 1.0  # at most this often from batch ends; saves and phase changes always write
# How often a save refreshes the verified copy (always the first and the last): each refresh reads,
# checks, writes and fsyncs a whole checkpoint, in a thread (docs/design.md, "Checkpoints").
VERIFIED_EVERY_S = 600.0
# The thrash rule's window (docs/design.md, "Tuning: a measured trial per rung"): batches per window;
# the rule fires when alloc retries rose in two consecutive ones (memstats.RisingWindows).
THRASH_WINDOW = 10
THRASH_DRILL_WINDOW = 1  # --inject thrash: a demo epoch has a few batches only


@dataclass(frozen=True)
class Injection:
    """`--inject KIND:RUNG:EPOCH[:PHASE]`: fail for real at that rung, epoch (1-based) and phase."""

    kind: str
    rung: str
    epoch: int
    phase: str = "train"

    @classmethod
    def from_json(cls, d: dict) -> "Injection":
        return cls(d["kind"], d["rung"], int(d["epoch"]), d.get("phase", "train"))


class InjectedCrash(RuntimeError):
    """A non-OOM failure for fire drills (`--inject crash:...`); classified fatal."""


class ThrashRestart(RuntimeError):
    """The child ends itself after a save because the allocator thrashed in the epoch (alloc retries
    rose in two consecutive windows) and the ladder's `[job] on_thrash` is "restart": a fresh process
    clears the fragmentation. Classified `thrash` by its name (failures.SIGNATURES)."""


class ThrashDrill:
    """`--inject thrash:RUNG:EPOCH`: a stand-in memory Stats for the CPU whose alloc retries rise by
    one at every batch end of epoch EPOCH and later ones (a fragmenting allocator does not heal by
    itself, so a restarted attempt thrashes again), read by the real thrash rule. `epoch` tells the
    epoch in progress; `sample` is called once per batch end."""

    def __init__(self, epoch: int, current):
        self.epoch, self.current, self.retries = epoch, current, 0

    def sample(self) -> Sample:
        if self.current() >= self.epoch:
            self.retries += 1
        return Sample(alloc_retries=self.retries)

    def reset_peaks(self) -> None:
        pass


def use_val_batch(trainer, val_batch: int | None) -> None:
    """Make the trainer build its validation loader at `val_batch` (a rung's `val_batch`; None:
    leave Ultralytics' 2 × batch). Ultralytics has no argument for it: `_build_train_pipeline` asks
    `get_dataloader(..., batch_size * 2, mode="val")`, so this wraps that method on the instance,
    before `_setup_train` builds the loaders; the first-epoch OOM halving rebuilds them through the
    same method, so a rebuilt validation loader keeps `val_batch` too."""
    if val_batch is None or getattr(trainer.get_dataloader, "val_batch", None) == val_batch:
        return
    build = getattr(trainer.get_dataloader, "wrapped", trainer.get_dataloader)  # never wraps a wrapper

    def get_dataloader(dataset_path, batch_size=16, rank=0, mode="train"):
        return build(dataset_path, batch_size=val_batch if mode == "val" else batch_size, rank=rank, mode=mode)

    get_dataloader.val_batch, get_dataloader.wrapped = val_batch, build
    trainer.get_dataloader = get_dataloader


class AtomicPath(type(Path())):
    """A path whose write_bytes writes a new file beside it and renames it into place.

    Ultralytics saves with `trainer.last.write_bytes(...)`, which truncates last.pt and rewrites it:
    a process killed or a disk filling up mid-write leaves it torn. With `trainer.last` (and
    `trainer.best`) an AtomicPath, the file is always the previous whole save or the new one
    (docs/design.md, "Checkpoints"). Not fsynced: a power cut may still tear it, which the CRC check
    before a resume catches (zip_damage), and the verified copy, which is fsynced, replaces it.
    """

    def beside(self, kind: str) -> str:
        """The hidden file `.NAME.KIND` beside this one (a temporary of the launcher's)."""
        return os.path.join(os.path.dirname(os.fspath(self)), f".{self.name}.{kind}")

    def write_bytes(self, data) -> int:
        tmp = self.beside("tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # left by a process killed mid-write
        try:
            with open(tmp, "xb") as f:  # a new file, never one another name links
                n = f.write(memoryview(data))
            os.replace(tmp, self)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # a full disk leaves no half-written file taking the room
            raise
        return n


TEMP_KINDS = ("tmp", "strip")  # AtomicPath.write_bytes's and strip_by_rename's temporary files


def remove_temps(*paths) -> None:
    """Remove the launcher's temporary files beside these checkpoints (`.last.pt.tmp`,
    `.last.pt.strip`), left by a process killed mid-write: at the start and the end of training."""
    for path in paths:
        if path is None:
            continue
        for kind in TEMP_KINDS:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(AtomicPath(path).beside(kind))


# Ultralytics' own tracker callbacks (ultralytics/utils/callbacks/<name>.py) that the launcher's child
# never runs: each child is a new process, so they would split the night into a run per process (and
# MLflow's fails on `log_params` in a resumed child). launcher/track.py logs the night instead
# (docs/design.md, "One tracker run per night").
DROPPED_TRACKERS = tuple(f"ultralytics.utils.callbacks.{name}" for name in ("mlflow", "tensorboard"))


def drop_trackers(trainer) -> list[str]:
    """Remove those callbacks from the trainer, from every event. Ultralytics adds them in the
    trainer's __init__ (`add_integration_callbacks`, after the model's own, so after the Watch's),
    just before `on_pretrain_routine_start`: called from there, they are gone before any of them
    runs. Lists are changed in place (the event being run iterates its list). Returns the modules
    dropped."""
    dropped = set()
    for name, listed in getattr(trainer, "callbacks", {}).items():
        keep = [cb for cb in listed if getattr(cb, "__module__", None) not in DROPPED_TRACKERS]
        if len(keep) != len(listed):
            dropped.update(cb.__module__ for cb in listed if cb not in keep)
            listed[:] = keep
    return sorted(dropped)


def last_epoch(trainer) -> bool:
    """The epoch that just ended is the last one: final_eval comes next."""
    return bool(trainer.stop) or trainer.epoch + 1 >= trainer.epochs


def fsync_path(path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HideTemp(logging.Filter):
    """Turns "Optimizer stripped from F, saved as TMP, 12.3MB" into "... from F, 12.3MB"."""

    def __init__(self, words: str):
        super().__init__()
        self.words = words

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.words in message:
            record.msg, record.args = message.replace(self.words, ""), ()
        return True


def strip_by_rename(strip):
    """Ultralytics' strip_optimizer (end of training: the optimizer out of last.pt and best.pt)
    torch.saves over the file in place, where a kill or a full disk would tear the finished model.
    This wraps it to save into `.NAME.strip` beside the file and rename that into place. The line
    Ultralytics prints names the real file only, as its in-place strip does."""
    if getattr(strip, "by_rename", False):
        return strip

    def wrapped(f="best.pt", s="", updates=None):
        if s:  # saving elsewhere already leaves `f` alone
            return strip(f, s, updates)
        tmp = AtomicPath(f).beside("strip")
        hide = _HideTemp(f" saved as {tmp},")
        from ultralytics.utils import LOGGER
        LOGGER.addFilter(hide)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            out = strip(f, tmp, updates)
            if os.path.exists(tmp):  # not when Ultralytics skipped `f` as no valid checkpoint
                os.replace(tmp, f)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        finally:
            LOGGER.removeFilter(hide)
        return out

    wrapped.by_rename = True
    return wrapped


def use_strip_by_rename() -> None:
    """Make Ultralytics' final_eval strip by rename (trainer.py imports strip_optimizer by name)."""
    from ultralytics.engine import trainer as trainer_module
    trainer_module.strip_optimizer = strip_by_rename(trainer_module.strip_optimizer)


def keep_verified_copy(data: bytes, dest: Path, source: Path) -> bool:
    """Write `data` (the bytes of `source`, a save of last.pt) to `dest` if they check out: every
    member's CRC (zip_damage), so a torn save never replaces a good copy. Written to a new file
    beside `dest`, fsynced, renamed, the folder fsynced: `dest` is a file of its own, always whole,
    which no save of Ultralytics' or a user's can change (docs/design.md, "Checkpoints"). On any
    failure it prints one line and `dest` stays the previous copy."""
    if damage := zip_damage(io.BytesIO(data)):
        print(f"launcher: {source} did not check out ({damage}); the verified copy stays at the previous refresh",
              flush=True)
        return False
    tmp = dest.with_name(f".{dest.name}.tmp")  # one fixed name: a killed copy leaves one partial file
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except OSError as e:  # a full or failing disk: the previous copy stays, and no partial file
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        print(f"launcher: could not write the verified copy {dest} ({e}); it stays at the previous refresh",
              flush=True)
        return False
    with contextlib.suppress(OSError):  # the rename made durable; failing, a power cut leaves either whole copy
        fsync_path(dest.parent)
    return True


def cap_vram(index: int, fraction: float | None, limit_bytes: int | None) -> None:
    """Cap this process's CUDA memory on GPU `index`: the rung's share of the card, or --vram
    bytes on a bigger card, whichever is less. Allocations past it raise real CUDA OOMs."""
    total = torch.cuda.get_device_properties(index).total_memory
    share = min(fraction or 1.0, (limit_bytes / total) if limit_bytes else 1.0)
    if share < 1.0:
        torch.cuda.set_per_process_memory_fraction(share, index)
        print(f"launcher: VRAM of GPU {index} capped at {share:.1%} ({share * total / 2**30:.2f} GiB)", flush=True)


def cuda_peaks() -> dict[str, int] | None:
    """torch's reserved and allocated peaks on this process's GPU since their last reset; None
    while this process uses no GPU."""
    if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
        return None
    return {"reserved": torch.cuda.max_memory_reserved(), "allocated": torch.cuda.max_memory_allocated()}


def cuda_reset_peaks() -> None:
    torch.cuda.reset_peak_memory_stats()  # the peaks only: num_alloc_retries and num_ooms keep counting


class Watch:
    """Tracks where training is, writes the heartbeat, and applies the rung's settings."""

    def __init__(self, spec: Spec):
        self.heartbeat_path = Path(spec.heartbeat)
        self.verified_path = Path(spec.verified)
        self.checkpoint: str | None = None  # which checkpoint this attempt started from
        self._copier: threading.Thread | None = None  # only while a verified copy runs: never when DDP pickles us
        self.rung = spec.rung
        self.attempt = spec.attempt
        self.threads = spec.threads
        self.device = spec.device
        self.vram_fraction = spec.vram_fraction
        self.vram_limit_bytes = spec.vram_limit_bytes
        self.cleanup_every = spec.cleanup_every or 0
        injections = [inj for inj in map(Injection.from_json, spec.inject) if inj.rung == spec.rung]
        self.injections = [inj for inj in injections if inj.kind != THRASH]  # those that fail in the forward pass
        self.drill = next((inj for inj in injections if inj.kind == THRASH), None)
        self.val_batch = spec.val_batch
        self.on_thrash = spec.on_thrash or "restart"
        # the thrash rule: memory statistics sampled at batch ends, made in the process that trains
        # (a DDP rank too: `_stats_pid`); None on the CPU, where there is no allocator to thrash
        self.stats: Stats | None = None
        self._stats_pid: int | None = None
        self.windows = RisingWindows(THRASH_DRILL_WINDOW if self.drill else THRASH_WINDOW)
        self.alloc_retries: int | None = None
        self.reserved_bytes: int | None = None
        self.thrash_epoch: int | None = None  # the latest epoch in which the rule fired
        self._val_said = False
        # The allocator's peaks by phase (train, val, final), for the report: what a trial's training
        # and validation peaks are held against (tests/gpu/tune.sh). A trial reads and resets the
        # peaks itself (trial.Measure), so its Watch keeps none. Setup counts as training, as in a trial.
        self.vram_peaks: dict[str, dict[str, int]] = {}
        self._peaks_of = "train"  # the phase the peaks since their last reset belong to
        self._keep_peaks = spec.mode != "trial"
        self.read_peaks, self.reset_peaks = cuda_peaks, cuda_reset_peaks  # a test hands stand-ins
        self.phase = "setup"
        self.epoch = 0  # 1-based epoch in progress
        self.epochs = spec.epochs
        self.start_epoch: int | None = None  # 1-based first epoch of this attempt
        self.batch = 0
        self.batches = 0
        self.batches_seen = 0
        self.epochs_saved = 0
        self.last_saved_epoch: int | None = None
        self.it_s: float | None = None
        self.first_batch_ts: float | None = None
        self._t_epoch = 0.0
        self._t_beat = 0.0
        self.verified_every_s = VERIFIED_EVERY_S if spec.verified_every_s is None else spec.verified_every_s
        self._t_verified = -math.inf  # the first save refreshes the verified copy
        self._capped_pid: int | None = None  # a pid, not a flag: DDP pickles this object to the ranks

    # ---- registration ---------------------------------------------------------------------------
    def register(self, model) -> None:
        for event in ("on_pretrain_routine_start", "on_train_start", "on_train_epoch_start", "on_train_batch_end",
                      "on_train_epoch_end", "on_model_save", "on_fit_epoch_end", "on_train_end", "on_val_start",
                      "on_val_batch_end"):
            model.add_callback(event, getattr(self, event))
        if self.injections:
            torch.nn.modules.module.register_module_forward_pre_hook(self.forward_pre_hook)

    # ---- callbacks ------------------------------------------------------------------------------
    def on_pretrain_routine_start(self, trainer) -> None:
        drop_trackers(trainer)  # the night's tracker run is the launcher's (launcher/track.py)
        self.apply_threads()  # Ultralytics' select_device has just reset torch's thread count
        trainer.last, trainer.best = AtomicPath(trainer.last), AtomicPath(trainer.best)  # saves by rename
        use_strip_by_rename()  # and so does the final strip (this runs on the rank that saves)
        remove_temps(trainer.last, trainer.best, self.verified_path)  # left by a killed child
        use_val_batch(trainer, self.val_batch)  # before _setup_train builds the loaders
        self.cap(trainer)

    def on_train_start(self, trainer) -> None:
        self.apply_threads()
        self.cap(trainer)  # DDP ranks other than 0 never run on_pretrain_routine_start
        self.epochs = trainer.epochs
        self.start_epoch = trainer.start_epoch + 1
        self.watch_memory(trainer)
        self.beat(force=True)

    def on_train_epoch_start(self, trainer) -> None:
        # The ladder is the one authority on batch: a spent retry budget keeps Ultralytics' own
        # first-epoch batch halving from catching the OOM (engine/trainer.py, _do_train).
        trainer._oom_retries = 3
        if self._peaks_of != "train":
            self.close_peaks("train")
        self.phase, self.epoch, self.batch = "train", trainer.epoch + 1, 0
        self.batches = len(trainer.train_loader)
        self._t_epoch = time.monotonic()
        self.beat(force=True)

    def on_train_batch_end(self, trainer) -> None:
        self.batch += 1
        self.batches_seen += 1
        if self.first_batch_ts is None:
            self.first_batch_ts = time.time()  # recovery time ends here (tests/bench/bench_recovery.py)
        elapsed = time.monotonic() - self._t_epoch
        self.it_s = self.batch / elapsed if elapsed > 0 else None  # this epoch's average so far
        if self.cleanup_every and self.batches_seen % self.cleanup_every == 0:
            self.cleanup()
        thrashed = self.sample_memory()
        self.beat(force=self.batches_seen == 1 or thrashed)

    def on_train_epoch_end(self, trainer) -> None:
        self.phase = "val"  # validation (if any) follows, then the save
        self.beat(force=True)

    def on_val_start(self, validator) -> None:
        if self.phase == "val" and self._peaks_of == "train":
            self.close_peaks("val")  # an epoch's validation; the final one's peaks start at on_fit_epoch_end
        loader = getattr(validator, "dataloader", None)
        if not self._val_said and loader is not None and getattr(loader, "batch_size", None):
            self._val_said = True  # once an attempt: the batch validation really runs at
            why = "the rung's val_batch" if self.val_batch is not None else "Ultralytics' 2 × batch"
            print(f"launcher: validation runs at batch {loader.batch_size} ({why})", flush=True)
        self.beat(force=True)

    def on_val_batch_end(self, validator) -> None:
        self.beat()  # validation is progress too: the hang watchdog must not fire during it

    def on_model_save(self, trainer) -> None:
        self.epochs_saved += 1
        self.last_saved_epoch = trainer.epoch + 1
        # The verified copy: at the first save, then at most every verified_every_s, and after the
        # last epoch. The bytes are read here, before the next save can replace last.pt; a thread
        # checks and writes them while training goes on.
        if last_epoch(trainer) or time.monotonic() - self._t_verified >= self.verified_every_s:
            self.finish_copy()
            last = Path(trainer.last)
            try:
                data = last.read_bytes()
            except OSError as e:
                print(f"launcher: could not read {last} ({e}); the verified copy stays at the previous refresh",
                      flush=True)
            else:
                self._t_verified = time.monotonic()
                self._copier = threading.Thread(target=self._copy, args=(data, last), daemon=True)
                self._copier.start()
        self.beat(force=True)
        if self.thrash_epoch == self.epoch and self.on_thrash == "restart" and not last_epoch(trainer):
            # the epoch is saved: a fresh process resumes from it (plan.POLICY's thrash row). Not after
            # the last epoch: nothing is left to train, and the final validation follows here.
            raise ThrashRestart(
                f"alloc retries rose in two consecutive windows of {self.windows.window} batches in epoch "
                f"{self.epoch} ({self.alloc_retries} retries in this process); epoch {self.epoch} is saved, so "
                "this process ends for a fresh one to resume (on_thrash = restart)")

    def _copy(self, data: bytes, last: Path) -> None:
        if not keep_verified_copy(data, self.verified_path, last):
            self._t_verified = -math.inf  # the next save tries again

    def finish_copy(self) -> None:
        """Wait for the running verified copy, if any (before the next one, and before exit)."""
        if self._copier is not None:
            self._copier.join()
            self._copier = None

    def on_fit_epoch_end(self, trainer) -> None:
        if not last_epoch(trainer):
            return
        self.finish_copy()  # the last refresh is on disk, and its bytes freed, before final_eval
        if self.phase == "val":
            self.close_peaks("final")
            self.phase = "final"  # final_eval validates best.pt next
            self.beat(force=True)

    def on_train_end(self, trainer) -> None:
        remove_temps(trainer.last, trainer.best)
        self.phase = "done"
        self.beat(force=True)

    # ---- the thrash rule (docs/design.md, "Tuning: a measured trial per rung") ----------------------
    def watch_memory(self, trainer) -> None:
        """The memory statistics this process samples at batch ends: torch's allocator on a GPU
        (one dict read: no NVML, no process walk), the drill's stand-in, or none on the CPU."""
        if self._stats_pid == os.getpid():
            return
        self._stats_pid = os.getpid()
        if self.drill is not None:
            self.stats = ThrashDrill(self.drill.epoch, lambda: self.epoch)
        elif trainer.device.type == "cuda":
            self.stats = CudaStats(trainer.device.index or 0, device_used=lambda: None, rss=lambda: None)

    def sample_memory(self) -> bool:
        """Read the allocator at a batch end; True when the thrash rule fires (the heartbeat then
        carries `thrash_epoch`, and the launcher records it)."""
        if self.stats is None:
            return False
        sample = self.stats.sample()
        self.alloc_retries, self.reserved_bytes = sample.alloc_retries, sample.reserved
        if not self.windows.add(sample.alloc_retries):
            return False
        first = self.thrash_epoch != self.epoch
        self.thrash_epoch = self.epoch
        if first:
            then = ("this process ends after the epoch's save, and a fresh one resumes" if self.on_thrash == "restart"
                    else "training goes on (on_thrash = warn)")
            print(f"launcher: the allocator is thrashing in epoch {self.epoch}: alloc retries rose in two consecutive "
                  f"windows of {self.windows.window} batches ({self.alloc_retries} so far); {then}", flush=True)
        return True

    def close_peaks(self, then: str | None = None) -> None:
        """Fold the allocator's peaks since their last reset into the phase they belong to; `then`:
        the phase that follows, for which they start afresh (None: the child ends, nothing reset)."""
        if not self._keep_peaks:
            return
        peaks = self.read_peaks()
        if peaks and any(peaks.values()):
            mine = self.vram_peaks.setdefault(self._peaks_of, {})
            for key, value in peaks.items():
                mine[key] = max(mine.get(key, 0), value)
            if then is not None:
                self.reset_peaks()
        if then is not None:
            self._peaks_of = then

    # ---- helpers --------------------------------------------------------------------------------
    def cuda_indices(self) -> list[int]:
        if self.device == "cpu" or not torch.cuda.is_available():
            return []
        return list(gpu_indices(self.device))

    def cap_devices(self) -> None:
        """Cap VRAM on every GPU of the rung's device string, in this process (before training)."""
        indices = self.cuda_indices()
        if len(indices) > 1:  # DDP: this process only starts the ranks, and a cap would open a CUDA
            return            # context on every GPU; each rank caps its own (cap, from the callbacks)
        for i in indices:
            cap_vram(i, self.vram_fraction, self.vram_limit_bytes)
            self._capped_pid = os.getpid()

    def cap(self, trainer) -> None:
        """Cap this process's VRAM on its GPU, once per process (each DDP rank is one)."""
        if trainer.device.type == "cuda" and self._capped_pid != os.getpid():
            cap_vram(trainer.device.index or 0, self.vram_fraction, self.vram_limit_bytes)
            self._capped_pid = os.getpid()

    def apply_threads(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)

    def cleanup(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def beat(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._t_beat < HEARTBEAT_EVERY_S:
            return
        self._t_beat = now
        write_json_atomic(self.heartbeat_path, self.snapshot().to_json(), fsync=False)  # a heartbeat, not a record

    def snapshot(self) -> Heartbeat:
        return Heartbeat(
            ts=time.time(), pid=os.getpid(), attempt=self.attempt, rung=self.rung, phase=self.phase, epoch=self.epoch,
            epochs=self.epochs, start_epoch=self.start_epoch, batch=self.batch, batches=self.batches,
            epochs_saved=self.epochs_saved, last_saved_epoch=self.last_saved_epoch, it_s=self.it_s,
            first_batch_ts=self.first_batch_ts, checkpoint=self.checkpoint, alloc_retries=self.alloc_retries,
            reserved_bytes=self.reserved_bytes, thrash_epoch=self.thrash_epoch)

    def forward_pre_hook(self, module, args) -> None:
        """Fail for real inside the detection model's forward pass when an injection matches."""
        if type(module).__name__ not in ("RTDETRDetectionModel", "DetectionModel"):
            return
        for inj in self.injections:
            if inj.phase == self.phase and inj.epoch == self.epoch:
                what = f"--inject {inj.kind}:{inj.rung}:{inj.epoch}:{inj.phase}"
                if inj.kind == CUDA_OOM:
                    raise torch.OutOfMemoryError(
                        f"CUDA out of memory. Tried to allocate 2.00 GiB (injected by the launcher: {what})")
                raise InjectedCrash(f"injected crash ({what})")
