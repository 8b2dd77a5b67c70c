"""The parent<->child contract and the launcher's exit codes, defined once.

Everything the supervisor and the child must agree on lives here: the child's entry module, the
environment it is started with, the files it writes and the launcher's own exit statuses, and the
three documents that cross the process boundary (`Spec`, `Heartbeat`, `Report`), each declared
once, with a version (docs/design.md, "The child contract and exit codes").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

# Launcher exit codes (README documents them).
EXIT_OK = 0  # trained to the end, or already finished
EXIT_BUG = 1  # a bug in the launcher itself
EXIT_BAD_INPUT = 2  # a file, field or option is wrong; nothing started
EXIT_EXHAUSTED = 3  # bottom of the ladder still failing, or the attempt budget spent
EXIT_FATAL = 4  # stopped on a failure that no rung can fix
EXIT_REQUEUED = 75  # stopped at a SLURM time limit or preemption; the job runs again (EX_TEMPFAIL)
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
GRACE_S = 30.0  # after SIGINT/SIGTERM or a watchdog kill, how long the child gets before SIGKILL

# The child: `python -m launcher.child SPEC.json`; exits CHILD_OK when the model is trained and
# validated, CHILD_FAILED after writing report.json (or dies of a signal, with no report).
CHILD_MODULE = "launcher.child"
CHILD_OK = 0
CHILD_FAILED = 1
SPEC_NAME = "spec.json"
REPORT_NAME = "report.json"
HEARTBEAT_NAME = "heartbeat.json"
TRAIN_LOG_NAME = "train.log"
TRIAL_NAME = "trial.json"  # a trial child's measurement (Trial), in logs/<run>/trials/<rung>/

# Environment the child is started with; allocator settings only take effect if present before
# torch is imported, which is why training runs in a child at all.
ENV_ALLOC_CONF = "PYTORCH_CUDA_ALLOC_CONF"
ENV_DEVICE_ORDER = "CUDA_DEVICE_ORDER"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# The MobileNetV4 backbone loads timm's ImageNet weights only when this is "1".
ENV_PRETRAINED_BACKBONE = "RTDETR_LAUNCHER_PRETRAINED"

# Failure kinds (docs/design.md, "Failure kinds and policy").
CUDA_OOM = "cuda_oom"
HOST_OOM = "host_oom"
NCCL = "nccl"
HANG = "hang"
UNKNOWN = "unknown"
FATAL = "fatal"
INTERRUPTED = "interrupted"
THRASH = "thrash"  # the child ended itself after a save: the allocator's retries rose (on_thrash = "restart")

GIB = 1024**3


# ---- the documents that cross the process boundary ----------------------------------------------
# Each is written in one place and read in several, and a reader may meet a file an earlier
# launcher wrote (no `version`: version 0, the same keys) or a damaged one. `from_json` never
# raises: a field that is missing or of the wrong type takes its default and is named in
# `problems`; a document that is not a JSON object at all is `Unreadable`, with why.

_STR, _INT, _NUM, _BOOL, _LIST, _DICT = (str,), (int,), (int, float), (bool,), (list,), (dict,)
_KIND_NAMES = {_STR: "a string", _INT: "an integer", _NUM: "a number", _BOOL: "true or false", _LIST: "a list",
               _DICT: "an object"}


def _typed(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:  # JSON true is no count
        return False
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def _field(types: tuple[type, ...], default: Any = None, *, omit: bool = False) -> Any:
    """A field of a document: the JSON types a reader takes it as, and its default (also what a
    missing or damaged value reads as). `omit`: the writer leaves it out while it is None (the
    success report has no exception, the failure report no weights)."""
    meta = {"types": types, "omit": omit}
    if isinstance(default, (dict, list)):
        return field(default_factory=type(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Unreadable:
    """A document a reader cannot use at all, and why (a missing file, not JSON, not an object)."""

    why: str


D = TypeVar("D", bound="_Document")


class _Document:
    VERSION: ClassVar[int]

    def to_json(self) -> dict:
        """The JSON object written to disk: the declared fields, `version` included."""
        out = {}
        for f in fields(self):
            if "types" not in f.metadata:
                continue  # `problems`: what a reader found, never written
            value = getattr(self, f.name)
            if value is None and f.metadata["omit"]:
                continue
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls: type[D], d: object) -> D | Unreadable:
        """The document from a parsed JSON value, tolerant of an earlier launcher's file and of damage."""
        if not isinstance(d, dict):
            return Unreadable(f"not a JSON object but {type(d).__name__}")
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            types = f.metadata.get("types")
            if types is None:
                continue
            if f.name not in d:
                if f.name == "version":
                    values[f.name] = 0  # written before documents carried a version
                elif not f.metadata["omit"]:
                    problems.append(f"{f.name!r} is missing")
                continue
            value = d[f.name]
            if value is None and f.default is None:
                values[f.name] = None
            elif _typed(value, types):
                values[f.name] = value
            else:
                problems.append(f"{f.name!r} is {json.dumps(value)[:40]}, not {_KIND_NAMES[types]}")
        if values.get("version", 0) > cls.VERSION:
            problems.append(f"version {values['version']} is newer than this launcher's ({cls.VERSION})")
        return cls(**values, problems=tuple(problems))

    @classmethod
    def load(cls: type[D], path: Path) -> D | Unreadable:
        """The document in a file, or why it cannot be read."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return Unreadable(f"{path}: no such file")
        except (OSError, UnicodeDecodeError) as e:
            return Unreadable(f"{path}: cannot be read ({e})")
        try:
            d = json.loads(text)
        except ValueError as e:
            return Unreadable(f"{path}: not JSON ({e})")
        got = cls.from_json(d)
        return Unreadable(f"{path}: {got.why}") if isinstance(got, Unreadable) else got

    @classmethod
    def read(cls: type[D], path: Path) -> D | None:
        """The document in a file, or None where there is none to use (missing, torn, not an object)."""
        got = cls.load(path)
        return None if isinstance(got, Unreadable) else got


@dataclass(frozen=True)
class Spec(_Document):
    """What the supervisor hands a child: spec.json, written by spec.build, read by the child, its
    callbacks and a record's recovery (its newest attempt's rung and arguments). `train_args` are
    Ultralytics' own `train()` arguments, passed on as they are."""

    VERSION: ClassVar[int] = 1
    run: str = _field(_STR, "")
    attempt: int = _field(_INT, 0)
    rung: str = _field(_STR, "")
    mode: str = _field(_STR, "train")  # "train"; "validate": only the final validation is owed; "trial": tune.measure
    inject: list = _field(_LIST, [])  # --inject fire drills (callbacks.Injection)
    train_args: dict = _field(_DICT, {})
    extra_args: dict = _field(_DICT, {})  # the ladder's [job.args] and key=value arguments
    threads: int | None = _field(_INT)
    vram_fraction: float | None = _field(_NUM)
    vram_limit_bytes: int | None = _field(_INT)
    cleanup_every: int | None = _field(_INT)
    register: str | None = _field(_STR)  # the module a project model's YAML needs registered
    verified: str = _field(_STR, "")  # the verified copy of this model's last.pt
    report: str = _field(_STR, "")  # where the child writes its Report
    heartbeat: str = _field(_STR, "")  # where the child writes its Heartbeat
    verified_every_s: float | None = _field(_NUM, omit=True)  # tests: the verified copy's refresh interval
    # the batch validation runs at, where the rung sets one (Ultralytics validates at 2 × batch and
    # has no argument for it); None: Ultralytics' own
    val_batch: int | None = _field(_INT, omit=True)
    # mode "trial": how the trial runs (TrialPlan.to_json: warmup, iterations, val_batches, window,
    # budget_s) and where it writes its Trial (path)
    trial: dict | None = _field(_DICT, omit=True)
    # the ladder's [job] on_thrash: "restart" (the child ends itself after the next save; plan.POLICY
    # restarts the rung, then steps down) or "warn" (it records and goes on); None: "restart"
    on_thrash: str | None = _field(_STR, omit=True)
    # the night's tracker run the child logs into (track.for_child: the MLflow run, the TensorBoard
    # folder, the ledger of steps); None: no tracker configured, launcher.track never imported
    track: dict | None = _field(_DICT, omit=True)
    version: int = _field(_INT, VERSION)
    problems: tuple[str, ...] = field(default=(), compare=False)

    # Ultralytics' arguments the launcher itself reads, and those a resume and the final validation take
    @property
    def model(self) -> str | None:
        return self._arg("model", _STR)

    @property
    def save_dir(self) -> str | None:
        return self._arg("save_dir", _STR)

    @property
    def epochs(self) -> int | None:
        return self._arg("epochs", _INT)

    @property
    def device(self) -> str:
        return str(self.train_args.get("device", "cpu"))

    def _arg(self, key: str, types: tuple[type, ...]):
        value = self.train_args.get(key)
        return value if _typed(value, types) else None

    RESUME_TAKES: ClassVar[tuple[str, ...]] = ("data", "batch", "imgsz", "workers", "cache", "device", "save_dir")
    VALIDATE_TAKES: ClassVar[tuple[str, ...]] = ("data", "batch", "imgsz", "device", "workers")

    def fresh_args(self) -> dict:
        """`train()`'s arguments for a fresh start: all but the model, which `RTDETR(model)` builds."""
        return {k: v for k, v in self.train_args.items() if k != "model"}

    def resume_args(self) -> dict:
        """The arguments a resume passes with `resume=True` (the checkpoint's own train_args for the rest)."""
        return {k: self.train_args[k] for k in self.RESUME_TAKES if k in self.train_args}

    def validate_args(self) -> dict:
        """The arguments of the final validation, at this attempt's rung."""
        return {k: self.train_args[k] for k in self.VALIDATE_TAKES if k in self.train_args}

    def unusable(self) -> str | None:
        """Why a child cannot train from this spec (a damaged file), or None."""
        why = list(self.problems)
        why += [f"train_args {name!r} is not a string" for name in ("model", "save_dir") if self._arg(name, _STR) is None]
        return "; ".join(why) or None


@dataclass(frozen=True)
class Heartbeat(_Document):
    """Where the child is: heartbeat.json, rewritten by its callbacks (callbacks.Watch.snapshot) at
    most every second, at every save and phase change; read by the watchdog, status, the SLURM
    time estimate and the attempt's Outcome. Every field may be unknown (None)."""

    VERSION: ClassVar[int] = 1
    ts: float | None = _field(_NUM)
    pid: int | None = _field(_INT)
    attempt: int | None = _field(_INT)
    rung: str | None = _field(_STR)
    phase: str | None = _field(_STR)  # setup, train, val, final, done
    epoch: int | None = _field(_INT)  # 1-based epoch in progress
    epochs: int | None = _field(_INT)
    start_epoch: int | None = _field(_INT)  # 1-based first epoch of this attempt
    batch: int | None = _field(_INT)
    batches: int | None = _field(_INT)
    epochs_saved: int | None = _field(_INT)  # by this attempt
    last_saved_epoch: int | None = _field(_INT)
    it_s: float | None = _field(_NUM)  # this epoch's batches per second so far
    first_batch_ts: float | None = _field(_NUM)  # None until the first batch ended
    checkpoint: str | None = _field(_STR)  # the checkpoint the attempt started from
    alloc_retries: int | None = _field(_INT, omit=True)  # torch's num_alloc_retries in this process (GPU)
    reserved_bytes: int | None = _field(_INT, omit=True)  # torch's reserved memory now (GPU)
    thrash_epoch: int | None = _field(_INT, omit=True)  # the epoch in which retries rose in two windows
    version: int = _field(_INT, VERSION)
    problems: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Report(_Document):
    """How the child ended: report.json, written once by child.main, a success (`ok`, the
    weights) or a failure (the exception, where training was); read by the Outcome, the failure
    classifier and `diagnose`. A report without `ok` is no success."""

    VERSION: ClassVar[int] = 1
    ok: bool = _field(_BOOL, False)
    ts: float | None = _field(_NUM, omit=True)
    exc_type: str | None = _field(_STR, omit=True)  # "torch.OutOfMemoryError"; builtins without a module
    message: str | None = _field(_STR, omit=True)
    phase: str | None = _field(_STR)
    epoch: int | None = _field(_INT, omit=True)
    start_epoch: int | None = _field(_INT, omit=True)
    batch: int | None = _field(_INT, omit=True)
    epochs_saved: int | None = _field(_INT)  # by this attempt
    last_saved_epoch: int | None = _field(_INT)
    best: str | None = _field(_STR, omit=True)  # a success: the weights delivered
    last: str | None = _field(_STR, omit=True)
    validated_only: bool | None = _field(_BOOL, omit=True)  # a success that only owed the final validation
    metrics: dict | None = _field(_DICT, omit=True)
    peak_rss_bytes: int | None = _field(_INT, omit=True)
    peak_vram_bytes: int | None = _field(_INT, omit=True)
    peak_vram_reserved_bytes: int | None = _field(_INT, omit=True)
    # torch's peaks by phase ("train", "val", "final": {"reserved": bytes, "allocated": bytes}; GPU
    # only): what a trial's training and validation peaks are held against (tests/gpu/tune.sh)
    vram_peaks: dict | None = _field(_DICT, omit=True)
    version: int = _field(_INT, VERSION)
    problems: tuple[str, ...] = field(default=(), compare=False)


# How a trial ended (Trial.ended)
TRIAL_FIT = "fit"  # the warm-up, the measured iterations and the validation batches ran
TRIAL_OOM = "oom"  # CUDA (or host) memory ran out: the rung does not fit
TRIAL_RETRIES = "alloc_retries"  # the allocator's retries rose in two consecutive windows: thrashing
TRIAL_FAILED = "failed"  # anything else (a bad dataset, a crash): says nothing about memory
TRIAL_TIMEOUT = "timeout"  # the trial's budget ran out before it measured enough
TRIAL_ENDINGS = (TRIAL_FIT, TRIAL_OOM, TRIAL_RETRIES, TRIAL_FAILED, TRIAL_TIMEOUT)


@dataclass(frozen=True)
class Trial(_Document):
    """What a trial measured on one rung: trial.json, written by the trial child (launcher/trial.py),
    read by `tune`, the learned store and the choice of the start rung (docs/design.md, "Tuning: a
    measured trial per rung"). Memory in bytes; on the CPU the peaks are the child tree's RSS."""

    VERSION: ClassVar[int] = 1
    rung: str = _field(_STR, "")
    model: str = _field(_STR, "")  # the rung's model source
    device: str = _field(_STR, "")
    batch: int | None = _field(_INT)
    val_batch: int | None = _field(_INT)  # the batch the validation pass ran at
    imgsz: int | None = _field(_INT)
    ended: str = _field(_STR, TRIAL_FAILED)  # TRIAL_ENDINGS
    why: str | None = _field(_STR)  # the exception or rule that ended it, where it did not fit
    warmup: int | None = _field(_INT)  # iterations before measuring
    iterations: int | None = _field(_INT)  # measured training iterations run
    val_batches: int | None = _field(_INT)  # validation batches run
    peak_reserved_bytes: int | None = _field(_INT)  # training (torch; RSS on the CPU)
    peak_allocated_bytes: int | None = _field(_INT)
    val_peak_reserved_bytes: int | None = _field(_INT)  # the validation pass, at val_batch
    val_peak_allocated_bytes: int | None = _field(_INT)
    device_used_bytes: int | None = _field(_INT)  # NVML's peak, CUDA context included
    alloc_retries: int | None = _field(_INT)  # the rise during the trial
    ooms: int | None = _field(_INT)
    peak_rss_bytes: int | None = _field(_INT)  # the child and its workers
    cache: str | None = _field(_STR, omit=True)  # the rung's cache as the trial ran it: "ram" puts it in the RSS
    images_per_s: float | None = _field(_NUM)  # median after the warm-up
    first_batch_s: float | None = _field(_NUM)  # from the child's start to its first batch
    seconds: float | None = _field(_NUM)  # the whole trial
    free_bytes: int | None = _field(_INT, omit=True)  # the tightest GPU's free memory as the trial began (probe):
    # an OOM says the rung needs more than this, not that it never fits
    ts: float | None = _field(_NUM)
    version: int = _field(_INT, VERSION)
    problems: tuple[str, ...] = field(default=(), compare=False)
