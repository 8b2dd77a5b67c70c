"""Ultralytics callbacks the child registers. With child.py, the only code that imports torch.

One `Watch` object carries all the state (phase, epoch, batch, epochs saved) and its bound
methods are the callbacks: plain attributes only, so Ultralytics' DDP can cloudpickle it to the
ranks (no threads, locks or open files here).
"""

from __future__ import annotations

import contextlib
import gc
import io
import math
import os
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .contract import CUDA_OOM
from .runlog import write_json_atomic

HEARTBEAT_EVERY_S = 1.0  # at most this often from batch ends; saves and phase changes always write
# How often a save refreshes the verified copy (always the first and the last). Each refresh forces
# the checkpoint to disk now (fsync, or a copy where links fail) and pins its file, so that a later
# save writes one new file instead of a spare in place (AtomicPath).
VERIFIED_EVERY_S = 600.0


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


class AtomicPath(type(Path())):
    """A path whose write_bytes writes a temporary file beside it and renames it into place.

    Ultralytics saves with `trainer.last.write_bytes(...)`, which truncates last.pt and rewrites
    it: a process killed mid-write leaves it torn. With `trainer.last` an AtomicPath, last.pt is
    always the previous whole file or the new whole file, and each save is a file of its own, so
    the verified copy can be a hard link to it (free) instead of a copy.

    The version it replaces is kept as the spare `.NAME.tmp`, and the next save overwrites the
    spare in place, without truncating it first: its page cache is reused as it stands. A spare
    that another name still links (the verified copy, best.pt) is never written into: a new file
    is, after the spare's cached pages are dropped (read only on recovery or at the end), which
    lets the new file take their memory. On a 2-core VM, for rtdetr-l's 314 MiB, the in-place
    write took 0.05 s, the new file 0.26 s with the pages dropped and 1.27 s without, and
    Ultralytics' own truncating rewrite about 0.26 s per file (tests/bench/bench_saves.py).
    Overwriting in place allocates no blocks, so ext4 does not flush the data at the rename as it
    does for a new file: after a power cut, last.pt may mix pages of two saves. A resume checks
    every CRC first (zip_damage), and takes the verified copy, which is fsynced, when it fails.

    Ultralytics writes the same bytes to best.pt right after last.pt whenever the epoch is the best
    so far. With `best.twin = last`, best.pt becomes a hard link to the file last.pt was just saved
    as (renamed into place like any save): one checkpoint write instead of two, and one file's page
    cache. Neither is ever written in place while the other links it, so a save to one never
    changes what the other holds; the final strip writes each a new file (strip_by_rename).
    """

    twin: "AtomicPath | None" = None  # best.pt's twin is last.pt
    _written = None  # the bytes object of this path's latest save, until forget()

    SIDE_FILES = ("tmp", "old", "link")  # the spare, the version being replaced, a staged link

    def beside(self, kind: str) -> str:
        """The hidden file `.NAME.KIND` beside this one."""
        return os.path.join(os.path.dirname(os.fspath(self)), f".{self.name}.{kind}")

    @property
    def spare(self) -> Path:
        return Path(self.beside("tmp"))

    def write_bytes(self, data) -> int:
        twin, self._written = self.twin, None
        if twin is not None and twin._written is data and self.link_to(twin):
            return len(data)
        n = self._write(data)
        self._written = data  # held only until the save ends (Watch.on_model_save: forget)
        return n

    def forget(self) -> None:
        self._written = None

    def link_to(self, other: Path) -> bool:
        """Replace this file with a hard link to `other`, by rename. False where links fail."""
        staged = self.beside("link")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(staged)
            os.link(other, staged)
            os.replace(staged, self)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            return False
        return True

    def _write(self, data) -> int:
        final, tmp, old = os.fspath(self), self.beside("tmp"), self.beside("old")
        with contextlib.suppress(FileNotFoundError):
            if os.stat(tmp).st_nlink != 1:  # still the verified copy or best.pt too: write a new file
                drop_cache(tmp)
                os.unlink(tmp)
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o666), "wb") as f:  # no O_TRUNC
                n = f.write(memoryview(data))
                f.truncate()  # an older, longer checkpoint's tail
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # a full disk leaves no half-written spare taking the room
            raise
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old)  # left by a process killed below
        try:
            os.link(final, old)  # the version being replaced, kept as the next spare
        except OSError:  # no file yet, or no hard links here: no spare, the next save makes a new file
            old = None
        os.replace(tmp, final)
        if old:
            os.replace(old, tmp)
        return n

    def drop_spare(self) -> None:
        """Training is over (no save follows): remove the spare and any left-over `.old` or `.link`."""
        for kind in self.SIDE_FILES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.beside(kind))


def drop_cache(path: str) -> None:
    """Ask the kernel to drop a file's clean cached pages (dirty ones stay: nothing is lost)."""
    if hasattr(os, "posix_fadvise"):  # not on macOS or Windows
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def last_epoch(trainer) -> bool:
    """The epoch that just ended is the last one: final_eval comes next."""
    return bool(trainer.stop) or trainer.epoch + 1 >= trainer.epochs


def drop_spares(*paths) -> None:
    for path in paths:
        AtomicPath(path).drop_spare()


def zip_damage(file, crc: bool = True) -> str | None:
    """What is wrong with a torch.save zip container (a path or a file object), or None.

    With crc, every member is read and its CRC-32 checked, so a file torn by a kill, cut short, or
    mixing pages of two saves after a power cut is caught before anything loads it. torch.load
    checks no CRC: it would load such a file, with wrong weights. About 0.16 s for 314 MiB in page
    cache. Without, only the central directory at the end of the file is read (a few KB): the
    container is complete and names a data.pkl."""
    try:
        with zipfile.ZipFile(file) as z:
            if not any(n.endswith("data.pkl") for n in z.namelist()):
                return "no data.pkl: not a checkpoint"
            for info in z.infolist() if crc else ():
                if info.CRC == 0 and info.file_size:  # written without CRCs (torch.serialization
                    continue                          # .set_crc32_options(False)): nothing to check
                with z.open(info) as member:  # raises BadZipFile on a CRC mismatch at its end
                    while member.read(1 << 24):
                        pass
    except Exception as e:  # noqa: BLE001 - whatever fails to parse is damaged
        return f"{type(e).__name__}: {e}"
    return None


def stage_link(last: Path, dest: Path) -> Path | None:
    """A hard link to `last` (written by AtomicPath, so never rewritten in place) beside `dest`,
    for publish_verified to make durable and rename over it. None where the filesystem cannot
    link (another device, no link support): copy instead."""
    staged = dest.with_name(f".{dest.name}.link")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)
        os.link(last, staged)
    except OSError:
        return None
    return staged


def publish_verified(staged: Path, dest: Path) -> None:
    """Flush the staged checkpoint's data to disk, then rename it over `dest`: the verified copy
    is always a whole checkpoint that a power cut cannot take."""
    try:
        fsync_path(staged)
        os.replace(staged, dest)
        fsync_path(dest.parent)  # and the rename
    except OSError as e:  # a failing disk: keep the previous copy, say so on one line (no thread traceback)
        with contextlib.suppress(OSError):
            os.unlink(staged)
        print(f"launcher: could not keep {staged} as {dest} ({e}); the verified copy stays at the previous "
              "refresh", flush=True)


def fsync_path(path: Path) -> None:
    """Flush a file's data, or a folder's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def strip_by_rename(strip):
    """Ultralytics' strip_optimizer (end of training: the optimizer out of last.pt and best.pt)
    torch.saves over the file in place, where a kill or a full disk would tear the finished
    model. This wraps it to write a file beside and rename it into place; the file it replaces,
    which the verified copy may link, is never written into."""
    if getattr(strip, "by_rename", False):
        return strip

    def wrapped(f="best.pt", s="", updates=None):
        if s:  # saving elsewhere already leaves `f` alone
            return strip(f, s, updates)
        tmp = Path(f).with_name(f".{Path(f).name}.strip")
        try:
            out = strip(f, str(tmp), updates)
            os.replace(tmp, f)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return out

    wrapped.by_rename = True
    return wrapped


def use_strip_by_rename() -> None:
    """Make Ultralytics' final_eval strip by rename (trainer.py imports strip_optimizer by name)."""
    from ultralytics.engine import trainer as trainer_module
    trainer_module.strip_optimizer = strip_by_rename(trainer_module.strip_optimizer)


def keep_verified_copy(last: Path, dest: Path, data: bytes | None = None) -> bool:
    """Copy `last` (or its `data`, read already) to `dest` if it checks out: the bytes checked are
    the bytes written, by rename, so `dest` is always a whole checkpoint (a torn last.pt is never
    copied over it). The check reads torch.save's zip container and the CRC of every member: a
    torn or truncated file fails it, without the cost of unpickling a few hundred MB each epoch.
    Used where `dest` cannot be a hard link to last.pt (stage_link)."""
    try:
        data = last.read_bytes() if data is None else data
        damage = zip_damage(io.BytesIO(data))
    except OSError as e:
        damage = f"{type(e).__name__}: {e}"
    if damage:  # keep the previous copy
        print(f"launcher: {last} did not check out ({damage}); the verified copy stays at the previous refresh",
              flush=True)
        return False
    tmp = dest.with_name(f".{dest.name}.tmp")  # one fixed name: a killed copy leaves one partial file
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
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
    return True


def cap_vram(index: int, fraction: float | None, limit_bytes: int | None) -> None:
    """Cap this process's CUDA memory on GPU `index`: the rung's share of the card, or --vram
    bytes on a bigger card, whichever is less. Allocations past it raise real CUDA OOMs."""
    total = torch.cuda.get_device_properties(index).total_memory
    share = min(fraction or 1.0, (limit_bytes / total) if limit_bytes else 1.0)
    if share < 1.0:
        torch.cuda.set_per_process_memory_fraction(share, index)
        print(f"launcher: VRAM of GPU {index} capped at {share:.1%} ({share * total / 2**30:.2f} GiB)", flush=True)


class Watch:
    """Tracks where training is, writes the heartbeat, and applies the rung's settings."""

    def __init__(self, spec: dict):
        self.heartbeat_path = Path(spec["heartbeat"])
        self.verified_path = Path(spec["verified"])
        self.checkpoint: str | None = None  # which checkpoint this attempt started from
        self._copier: threading.Thread | None = None  # started after a save; none when DDP pickles us
        self.rung = spec["rung"]
        self.attempt = spec["attempt"]
        self.threads = spec.get("threads")
        self.device = str(spec["train_args"].get("device", "cpu"))
        self.vram_fraction = spec.get("vram_fraction")
        self.vram_limit_bytes = spec.get("vram_limit_bytes")
        self.cleanup_every = spec.get("cleanup_every") or 0
        self.injections = [Injection.from_json(d) for d in spec.get("inject", []) if d["rung"] == spec["rung"]]
        self.phase = "setup"
        self.epoch = 0  # 1-based epoch in progress
        self.epochs = spec["train_args"].get("epochs")
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
        self.verified_every_s = spec.get("verified_every_s", VERIFIED_EVERY_S)
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
        self.apply_threads()  # Ultralytics' select_device has just reset torch's thread count
        trainer.last, trainer.best = AtomicPath(trainer.last), AtomicPath(trainer.best)  # saves by rename
        trainer.best.twin = trainer.last  # and best.pt a link to the same save, not a second write
        use_strip_by_rename()  # and so does the final strip (this runs on the rank that saves)
        self.cap(trainer)

    def on_train_start(self, trainer) -> None:
        self.apply_threads()
        self.cap(trainer)  # DDP ranks other than 0 never run on_pretrain_routine_start
        self.epochs = trainer.epochs
        self.start_epoch = trainer.start_epoch + 1
        self.beat(force=True)

    def on_train_epoch_start(self, trainer) -> None:
        # The ladder is the one authority on batch: a spent retry budget keeps Ultralytics' own
        # first-epoch batch halving from catching the OOM (engine/trainer.py, _do_train).
        trainer._oom_retries = 3
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
        self.beat(force=self.batches_seen == 1)

    def on_train_epoch_end(self, trainer) -> None:
        self.phase = "val"  # validation (if any) follows, then the save
        self.beat(force=True)

    def on_val_start(self, validator) -> None:
        self.beat(force=True)

    def on_val_batch_end(self, validator) -> None:
        self.beat()  # validation is progress too: the hang watchdog must not fire during it

    def on_model_save(self, trainer) -> None:
        self.epochs_saved += 1
        self.last_saved_epoch = trainer.epoch + 1
        for path in (trainer.last, getattr(trainer, "best", None)):
            if isinstance(path, AtomicPath):
                path.forget()  # the save's bytes, which Ultralytics drops now
        last = Path(trainer.last)
        self.finish_copy()
        # Refreshing the verified copy means writing the checkpoint to disk now (fsync, or a copy):
        # at most every verified_every_s, and after the last epoch. Between refreshes it stays at an
        # older, durable checkpoint; last.pt itself is whole at every save (AtomicPath).
        due = last_epoch(trainer) or time.monotonic() - self._t_verified >= self.verified_every_s
        if damage := zip_damage(last, crc=False):
            print(f"launcher: {last} did not check out ({damage}); the verified copy stays at the previous refresh",
                  flush=True)
        elif due:
            self._t_verified = time.monotonic()
            staged = stage_link(last, self.verified_path) if isinstance(trainer.last, AtomicPath) else None
            if staged:  # a file of its own each save: link it, flush it, rename it into place
                self._start(publish_verified, staged, self.verified_path)
            else:  # rewritten in place by the next save, or no links here: a copy, read now
                self._start(keep_verified_copy, last, self.verified_path, last.read_bytes())
        self.beat(force=True)

    def _start(self, target, *args) -> None:
        self._copier = threading.Thread(target=target, args=args, daemon=True)
        self._copier.start()

    def finish_copy(self) -> None:
        """Wait for the last verified copy to be on disk (before the next one, and before exit)."""
        if self._copier is not None:
            self._copier.join()
            self._copier = None

    def on_fit_epoch_end(self, trainer) -> None:
        if not last_epoch(trainer):
            return
        self.finish_copy()  # the last refresh is on disk before final_eval strips the optimizer
        drop_spares(trainer.last, trainer.best)  # no save follows: free their room
        if self.phase == "val":
            self.phase = "final"  # final_eval validates best.pt next
            self.beat(force=True)

    def on_train_end(self, trainer) -> None:
        drop_spares(trainer.last, trainer.best)
        self.phase = "done"
        self.beat(force=True)

    # ---- helpers --------------------------------------------------------------------------------
    def cuda_indices(self) -> list[int]:
        if self.device == "cpu" or not torch.cuda.is_available():
            return []
        return [int(i) for i in self.device.split(",")]

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
        write_json_atomic(self.heartbeat_path, self.snapshot(), fsync=False)  # a heartbeat, not a record

    def snapshot(self) -> dict:
        return {
            "ts": time.time(), "pid": os.getpid(), "attempt": self.attempt, "rung": self.rung,
            "phase": self.phase, "epoch": self.epoch, "epochs": self.epochs, "start_epoch": self.start_epoch,
            "batch": self.batch, "batches": self.batches, "epochs_saved": self.epochs_saved,
            "last_saved_epoch": self.last_saved_epoch, "it_s": self.it_s, "first_batch_ts": self.first_batch_ts,
            "checkpoint": self.checkpoint,
        }

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
