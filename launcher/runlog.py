"""Owns every path under `logs/<run>/` and the run record's declared shape (docs/design.md, "The run record").

events.jsonl is appended and flushed one JSON object a line (readers skip a torn last line);
state.json and the attempts' JSON files are replaced atomically (write, fsync, rename).
`RunState` is state.json; `Ev` names every event and `EVENTS` declares each one's fields; no
other module spells an event name or a state key. Who writes and who reads the events: docs/design.md,
"The run record".
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from .contract import HEARTBEAT_NAME, REPORT_NAME, SPEC_NAME, TRAIN_LOG_NAME, TRIAL_NAME
from .contract import _BOOL, _DICT, _INT, _LIST, _NUM, _STR, _typed  # one JSON type rule: documents and events
from .errors import BadInput

if TYPE_CHECKING:
    from .models import ModelRef

LOGS_ENV = "RTDETR_LOGS"  # where run records live, when set; else logs/ in the folder the command runs from
CHECKOUT_LOGS = Path(__file__).resolve().parents[1] / "logs"  # the project's own logs/ (a checkout)
EXPERIENCE_NAME = "experience.json"  # learned rungs, beside the runs (experience.py)
DEMO_DATA_NAME = "demo-data"  # the demo's generated dataset (ladders/demo.toml)
ERRORS_LOG_NAME = "launcher-errors.log"  # run-less refusals, beside the run records (refusals.py)
NOT_RUN_NAMES = frozenset({EXPERIENCE_NAME, DEMO_DATA_NAME, ERRORS_LOG_NAME,  # the launcher's own entries of logs/
                           ERRORS_LOG_NAME + ".1"})  # (refusals.MAX_BYTES: the one older log kept)


def write_text_atomic(path: Path, text: str, fsync: bool = True) -> None:
    """Replace `path` with `text` in one rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict, fsync: bool = True) -> None:
    write_text_atomic(path, json.dumps(data, indent=1), fsync)



@contextmanager
def exclusive(path: Path) -> Iterator[bool]:
    """Hold an flock on the side file `.<name>.lock` beside `path` for the block: a file that
    several launchers read, change and replace (experience.json) loses none of their changes.
    Readers need no lock (the file is replaced atomically); the kernel drops the lock however
    the holder dies. Yields whether the lock is held: it is advisory, and a lock file this user
    cannot open (another user's, in a shared $RTDETR_LOGS) yields False rather than raising."""
    try:
        # flock needs no write access: read-only, so another user's lock file serves as well
        fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDONLY | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            os.fchmod(fd, 0o644)  # readable by the other users of these logs whatever the umask
        except OSError:  # not ours to change: it was readable enough to open
            pass
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield True
    finally:
        os.close(fd)


def logs_dir() -> Path:
    """The one rule for where run records live, for run, status and report alike:
    $RTDETR_LOGS when set, else logs/ under the current folder."""
    return Path(os.environ.get(LOGS_ENV) or "logs").expanduser().resolve()


def read_jsonl(path: Path) -> list[dict]:
    """Every whole JSON object line of a file; torn, garbled or non-object lines (a power cut
    mid-write, bytes that are not UTF-8, a `[]`) are skipped."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunPaths:
    root: Path  # absolute: logs/<run>

    @classmethod
    def for_run(cls, name: str, logs: Path | None = None) -> "RunPaths":
        return cls(((logs or logs_dir()) / name).resolve())

    @property
    def events(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def telemetry(self) -> Path:
        """One sample a line, every TELEMETRY_EVERY_S while a child runs (~7 MB per 100 hours)."""
        return self.root / "telemetry.jsonl"

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    @property
    def dataset(self) -> Path:
        """The dataset YAML the children read: the user's, with every path made absolute."""
        return self.root / "dataset.yaml"

    def attempt(self, n: int) -> Path:
        return self.root / f"attempt-{n}"

    def spec(self, n: int) -> Path:
        return self.attempt(n) / SPEC_NAME

    def report(self, n: int) -> Path:
        return self.attempt(n) / REPORT_NAME

    def heartbeat(self, n: int) -> Path:
        return self.attempt(n) / HEARTBEAT_NAME

    def train_log(self, n: int) -> Path:
        return self.attempt(n) / TRAIN_LOG_NAME

    @property
    def models(self) -> Path:
        """The folder of the run's models' save_dirs (ModelPaths)."""
        return self.root / _MODELS

    def model(self, model_source: str) -> "ModelPaths":
        """One model's files under the launcher's own naming: models/<key>."""
        return ModelPaths(self.root, self.models / model_folder(model_source), model_source)

    def model_at(self, save_dir: str | Path, model_source: str = "") -> "ModelPaths":
        """The files of a model whose save_dir a record or a spec names (an earlier launcher's
        models/<stem>, a relocated record's): the verified copy still this run's."""
        return ModelPaths(self.root, Path(save_dir), model_source)

    def model_dirs(self) -> list["ModelPaths"]:
        """Every save_dir under models/, the launcher's own and an earlier launcher's alike (sorted)."""
        return [self.model_at(d) for d in sorted(self.models.glob("*")) if d.is_dir()]

    def save_dir(self, model_source: str) -> Path:
        """Ultralytics' save_dir for one model (RunPaths.model)."""
        return self.model(model_source).save_dir

    def verified(self, save_dir: str | Path) -> Path:
        """The verified copy of the checkpoint in `save_dir` (ModelPaths.verified)."""
        return self.model_at(save_dir).verified

    @property
    def trials(self) -> Path:
        """The folder of the run's trials (docs/design.md, "Tuning: a measured trial per rung")."""
        return self.root / _TRIALS

    def trial_dir(self, rung: str) -> Path:
        """One rung's trial: its spec, log, heartbeat, report, trial.json and Ultralytics' save_dir,
        never a checkpoint. A rung name that is no plain folder name gets a safe one and a hash."""
        if _PLAIN_NAME.fullmatch(rung):
            return self.trials / rung
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", rung).strip("._")[:40] or "rung"
        return self.trials / f"{safe}-{hashlib.sha256(rung.encode()).hexdigest()[:8]}"

    def trial(self, rung: str) -> Path:
        """The rung's measurement, contract.Trial, as its trial child writes it."""
        return self.trial_dir(rung) / TRIAL_NAME

    # one tracker run per night (launcher/track.py): the night's TensorBoard folder, and the ledger of
    # the steps its children took on the night's axis (and the trackers that failed in an attempt)
    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def track_ledger(self) -> Path:
        return self.root / "track.jsonl"


_MODELS, _WEIGHTS, _CHECKPOINTS = "models", "weights", "checkpoints"  # folders: spelled by RunPaths and ModelPaths only
_TRIALS = "trials"  # the trials' folders, one a rung (RunPaths.trial_dir)
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_LAST, _BEST = "last.pt", "best.pt"  # Ultralytics' names in weights/ (docs/design.md, "The run record")
_RESULTS = "results.csv"  # Ultralytics' epoch table in the save_dir


@dataclass(frozen=True)
class ModelPaths:
    """One model's files, spelled here only (docs/design.md, "The run record"): Ultralytics'
    save_dir with its weights/last.pt and weights/best.pt, the launcher's verified copy kept
    outside it, the folder an earlier launcher gave the model (models/<stem>), and the model's
    key in the report. Rungs sharing a model share its checkpoints, and two models whose files
    share a stem (v1/best.pt, v2/best.pt) never share a folder or a report row."""

    run: Path | None  # the run's folder, logs/<run>; None for a save_dir known alone and laid out elsewhere
    save_dir: Path  # Ultralytics' save_dir
    source: str = ""  # the model's source as the ladder resolved it; "" where only the save_dir is known

    @classmethod
    def at(cls, save_dir: str | Path) -> "ModelPaths":
        """A save_dir read alone (a spec's, in the child): its run is the folder above its models/,
        where it lies in one."""
        return cls(cls.run_of(save_dir), Path(save_dir))

    @staticmethod
    def run_of(save_dir: str | Path) -> Path | None:
        """The run folder a save_dir lies in by the layout (<run>/models/<folder>); None elsewhere."""
        save_dir = Path(save_dir)
        return save_dir.parent.parent if save_dir.parent.name == _MODELS else None

    @property
    def weights(self) -> Path:
        return self.save_dir / _WEIGHTS

    @property
    def last(self) -> Path:
        return self.weights / _LAST

    @property
    def best(self) -> Path:
        return self.weights / _BEST

    @property
    def results(self) -> Path:
        """Ultralytics' results.csv: one row an epoch (accounting reads it)."""
        return self.save_dir / _RESULTS

    @property
    def verified(self) -> Path:
        """The verified copy of last.pt, kept outside the save_dir (a fresh DDP start deletes
        Ultralytics' save_dir; docs/design.md, "Checkpoints")."""
        if self.run is None:
            raise ValueError(f"ModelPaths: {self.save_dir} lies in no run's models/: its verified copy has no place")
        return self.run / _CHECKPOINTS / self.save_dir.name / _LAST

    @property
    def legacy(self) -> "ModelPaths":
        """The folder a launcher before model_folder gave this model: models/<stem>."""
        if self.run is None or not self.source:
            raise ValueError(f"ModelPaths: the legacy folder of {self.save_dir} needs its run and source")
        return ModelPaths(self.run, self.run / _MODELS / Path(self.source).stem, self.source)

    @property
    def key(self) -> str:
        """The model's key in the report: the name of its own folder (model_folder), for a model
        trained in an earlier launcher's models/<stem> too."""
        return self.key_of(self.source)

    @staticmethod
    def key_of(source: object) -> str:
        """`key` of the model trained from `source` (a record's model field, of any type: "" for none)."""
        return model_folder(str(source)) if source else ""

    @property
    def resume_from(self) -> str | None:
        """The last.pt an attempt on this model resumes from, when there is one."""
        return str(self.last) if self.last.exists() else None


def model_folder(model_source: str) -> str:
    """A model's folder name and report key: its file's stem and a short hash of the source the
    ladder resolved."""
    return f"{Path(model_source).stem}-{hashlib.sha256(model_source.encode()).hexdigest()[:8]}"



class JsonLines:
    """An append-only file of JSON objects, one a line, flushed and fsynced each time."""

    def __init__(self, path: Path):
        self.path = path

    def add(self, record: dict) -> dict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            torn = False
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"
            # after a torn last line (a power cut mid-write), start a fresh line: lose only that one
            f.write((b"\n" if torn else b"") + json.dumps(record).encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        return record

    def read(self) -> list[dict]:
        """Every whole object line; a torn last line (a power cut mid-write) is skipped."""
        return read_jsonl(self.path)


class RunLock:
    """One launcher per run: an flock on logs/<run>/.lock, released by the kernel however the
    holder dies (so a SIGKILLed launcher never blocks the next run)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {now_iso()}\n".encode())
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def is_held(self) -> bool:
        """Whether a launcher holds this run now (without taking the lock)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    def holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip() or "another launcher"
        except OSError:
            return "another launcher"


class Events(JsonLines):
    """logs/<run>/events.jsonl: one decision a line, each with `ts`, `event` and the format's `v`."""

    def append(self, event: str, **fields) -> dict:
        """Write one event with the fields `EVENTS` declares for its kind. Any other field, or an
        undeclared kind, is a launcher bug: it raises, so every test that writes the event catches
        a typo before a reader looks for a field that is never there."""
        declared = EVENTS.get(event)
        if declared is None:
            raise TypeError(f"Events.append: event {event!r} is not declared in runlog.EVENTS")
        extra = sorted(set(fields) - set(declared))
        if extra:
            raise TypeError(f"Events.append: field(s) {', '.join(extra)} not declared for event {event!r} "
                            "in runlog.EVENTS")
        return self.add({"ts": now_iso(), "event": event, "v": EVENTS_VERSION, **fields})


# ---- the declared record ------------------------------------------------------------------------

class Ev:
    """Event names of events.jsonl, defined once (docs/design.md, "The run record")."""

    PROBE = "probe"  # the machine as the probe saw it at the start
    START = "start"  # a new run: start rung, reasons, cache decision
    CONTINUE = "continue"  # a later `run` of the same name picks the run up
    REBUILT = "rebuilt"  # state.json was gone: the record rebuilt from the checkpoints
    ADOPTED = "adopted"  # a record written in another folder (a copied or moved run) taken as this folder's
    REAPED = "reaped"  # processes a killed launcher left behind, ended
    ALREADY_COMPLETE = "already_complete"
    REFUSED = "refused"  # a `run` of this run refused (exit 2): its command line and error lines (refusals.py)
    RESUME = "resume"  # an attempt starts from a checkpoint
    ATTEMPT_START = "attempt_start"
    ATTEMPT_END = "attempt_end"
    GPU_RELEASE = "gpu_release"  # the wait for a dead attempt's GPU memory
    RETRY = "retry"  # after a failure: the same rung again (after a wait)
    STEP_DOWN = "step_down"
    VALIDATE = "validate"  # only the final validation is owed: at a lower rung's batch
    MODEL_SET_ASIDE = "model_set_aside"
    COMPLETE = "complete"
    FATAL = "fatal"
    EXHAUSTED = "exhausted"
    INTERRUPTED = "interrupted"
    SLURM = "slurm"  # this session runs in a SLURM job: its id and SLURM_RESTART_COUNT
    TIME_LIMIT = "time_limit"  # the job's time limit cut the night: the launcher requeued it
    PREEMPTED = "preempted"  # SLURM preempted (or requeued, or cancelled) the job from outside
    REQUEUE = "requeue"  # the launcher's `scontrol requeue`, and what SLURM answered
    TUNED = "tuned"  # the trials run before the night (or taken from the learned store) and what they chose
    THRASH = "thrash"  # the allocator's retries rose in two consecutive windows, and what the launcher did
    NOTIFY = "notify"  # a message POSTed (the night's end, a step-down): to whom (redacted), sent or why not
    TRACK_FAILED = "track_failed"  # a tracker (MLflow, TensorBoard) failed; training went on (launcher/track.py)

    SESSION_STARTS = (START, CONTINUE)
    ENDINGS = (COMPLETE, FATAL, EXHAUSTED, INTERRUPTED, TIME_LIMIT, PREEMPTED)
    NEXT_STEPS = (RETRY, STEP_DOWN, VALIDATE)


# Every event's fields, declared once: kind -> {field: the types a reader takes it as}. A field may
# be absent or null in any event (an earlier launcher's line, a value not known then). `v` on each
# line is the format's version; a line without one (written before it) is version 0, as a document
# without one is (contract).
EVENTS_VERSION = 1
_NEXT = {"rung": _STR, "to": _STR, "kind": _STR, "evidence": _STR, "reason": _STR, "wait_s": _NUM,
         "retry": _INT, "of": _INT}
_ENDING = {"reason": _STR, "exit_code": _INT, "t": _NUM, "signal_t": _NUM}  # Supervisor._finish
EVENTS: dict[str, dict[str, tuple[type, ...]]] = {
    Ev.PROBE: {"gpus": _LIST, "ram_total": _INT, "ram_available": _INT, "cpus": _INT, "nvml": _STR,  # probe.Snapshot
               "driver": _STR, "pretend_vram": _NUM, "pretend_ram": _NUM},
    Ev.START: {"rung": _STR, "device": _STR, "reasons": _LIST, "cache": _DICT, "ladder": _STR, "data": _STR,
               "inject": _LIST,
               # the ETA (launcher/eta.py): the start rung's training time from its trial, the trials'
               # images/s per rung, the dataset's train images
               "eta_s": _NUM, "speeds": _DICT, "train_images": _INT},
    Ev.CONTINUE: {"rung": _STR, "attempts": _INT, "status_was": _STR},
    Ev.REBUILT: {"attempts": _INT, "models": _DICT, "epochs_override": _INT},
    Ev.ADOPTED: {"was": _STR, "run_was": _STR, "moved": _BOOL, "tree_left": _LIST},
    Ev.REAPED: {"pids": _LIST},
    Ev.ALREADY_COMPLETE: {"best": _STR},
    Ev.REFUSED: {"command": _STR, "folder": _STR, "errors": _LIST},
    Ev.RESUME: {"attempt": _INT, "rung": _STR, "checkpoint": _STR, "epochs_done": _INT},
    Ev.ATTEMPT_START: {"attempt": _INT, "rung": _STR, "mode": _STR, "model": _STR, "batch": _NUM, "workers": _INT,
                       "cache": _STR, "resume_from": _STR, "t": _NUM},
    Ev.ATTEMPT_END: {"attempt": _INT, "rung": _STR, "exit_code": _INT, "seconds": _NUM, "kind": _STR,
                     "evidence": _STR, "phase": _STR, "epochs_saved": _INT, "last_saved_epoch": _INT,
                     "checkpoint": _STR, "t": _NUM},
    Ev.GPU_RELEASE: {"result": _STR},
    Ev.RETRY: {**_NEXT, "cache": _STR, "workers": _INT},  # with a host-RAM remedy (plan.Step.changes)
    Ev.STEP_DOWN: _NEXT,
    Ev.VALIDATE: _NEXT,
    Ev.MODEL_SET_ASIDE: {"model": _STR, "source": _STR, "epochs_done": _INT, "of": _INT, "save_dir": _STR,
                         "next_model": _STR},
    Ev.COMPLETE: {"rung": _STR, "model": _STR, "best": _STR, "last": _STR, "set_aside": _DICT},
    Ev.FATAL: _ENDING,
    Ev.EXHAUSTED: _ENDING,
    Ev.INTERRUPTED: _ENDING,
    Ev.TIME_LIMIT: _ENDING,
    Ev.PREEMPTED: _ENDING,
    Ev.SLURM: {"job": _STR, "restarts": _INT, "requeues": _INT, "t": _NUM},
    Ev.REQUEUE: {"job": _STR, "result": _STR, "t": _NUM},
    Ev.TUNED: {"trials": _LIST, "stored": _BOOL, "start": _STR, "val_batch": _INT, "reasons": _LIST,
               "seconds": _NUM},
    Ev.THRASH: {"attempt": _INT, "rung": _STR, "epoch": _INT, "retries": _INT, "action": _STR},
    # notify.send: `url` redacted (notify.redact), `about` "end" or the decision, `result` "sent" or "failed"
    Ev.NOTIFY: {"url": _STR, "about": _STR, "result": _STR, "error": _STR, "seconds": _NUM},
    Ev.TRACK_FAILED: {"tracker": _STR, "attempt": _INT, "error": _STR},
}
EVENT_FIELDS = frozenset(name for declared in EVENTS.values() for name in declared)


def unix_time(t: Any, ts: Any) -> float | None:
    """An event's unix time: its number `t` (finite, not a bool) where it has one, else its ISO `ts`."""
    if _typed(t, _NUM):
        return float(t)
    try:
        return datetime.fromisoformat(str(ts)).timestamp()
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class Event:
    """One line of events.jsonl as its kind declares it: `get` gives a declared field's value when
    the line has it with a declared type, else None; never a KeyError. A kind this launcher does
    not declare (a newer launcher's) reads with `known` False and no fields."""

    kind: str
    ts: str | None
    v: int
    fields: dict[str, Any]
    known: bool = True
    t: Any = None  # the line's `t`, of any kind: a reader times an event by it where it is a number

    def get(self, name: str) -> Any:
        """A declared field's value, or None. A name its kind does not declare (of an unknown kind:
        that no kind declares) is a reader's bug, never the file's: it raises."""
        if name not in (EVENTS[self.kind] if self.known else EVENT_FIELDS):
            raise LookupError(f"runlog.EVENTS declares no field {name!r} for event {self.kind!r}")
        return self.fields.get(name)

    @property
    def time(self) -> float | None:
        return unix_time(self.t, self.ts)

    @classmethod
    def parse(cls, d: dict) -> "Event | None":
        """A JSON object line as an event; None for one that names no event kind (damaged)."""
        kind = d.get("event")
        if not isinstance(kind, str):
            return None
        v = d.get("v", 0)
        declared = EVENTS.get(kind)
        fields = {k: d[k] for k, types in (declared or {}).items() if k in d and _typed(d[k], types)}
        return cls(kind, d["ts"] if isinstance(d.get("ts"), str) else None,
                   v if isinstance(v, int) and not isinstance(v, bool) else 1, fields, declared is not None, d.get("t"))


def read_events(path: Path) -> list[Event]:
    """events.jsonl, typed: torn, garbled and kind-less lines skipped (read_jsonl, Event.parse)."""
    return [e for e in map(Event.parse, read_jsonl(path)) if e is not None]


# a run's status in state.json: RUNNING, or the ending event that set it
RUNNING = "running"
STATE_VERSION = 1  # state.json without a version is this launcher's first format, read as version 1


@dataclass
class ModelRecord:
    """One model a run trained (by its source in the ladder): where, and how far."""

    save_dir: str
    epochs: int
    epochs_done: int = 0
    complete: bool = False
    set_aside: bool = False


@dataclass
class RunState:
    """state.json: where a run stands, replaced atomically after every decision."""

    run: str
    ladder: str
    data: str
    device: str
    rung: str
    epochs_override: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)  # key=value training arguments of the run
    status: str = RUNNING
    reason: str | None = None
    mode: str = "train"  # "train", or "validate": only the final validation is owed
    attempts: int = 0  # children started so far, over every session of the run
    cut: int = 0  # of those, attempts a SLURM time limit or preemption ended: not the budget's
    requeues: int = 0  # SLURM requeues so far (time limits and preemptions)
    slurm_jobs: list[str] = field(default_factory=list)  # the SLURM job ids the run ran in
    stalls: list[float] = field(default_factory=list)  # run time (s) of each SLURM run in a row cut with no new epoch
    models: dict[str, ModelRecord] = field(default_factory=dict)
    training_model: str | None = None  # the source of the model being trained now
    remedies: dict[str, Any] = field(default_factory=dict)  # host-RAM remedies, kept on lower rungs
    delivered: dict[str, Any] | None = None  # {"model", "best", "last"} once complete
    tree: list[dict] = field(default_factory=list)  # the running attempt's processes
    folder: str = ""  # the run folder the record belongs to ("": written before records named it)
    # the night's tracker run (launcher/track.py): {"mlflow": {run_id, experiment_id, uri (redacted)},
    # "tensorboard": {dir}}; created at the run's start, kept across sessions and requeues
    tracking: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    updated: str = ""
    version: int = STATE_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Any, path: Path) -> "RunState":
        """A state.json's content, checked: a wrong type or a newer format is a one-line BadInput."""
        if not isinstance(d, dict):
            raise BadInput(str(path), "not a JSON object", "restore it, or start afresh with --fresh")
        version = d.get("version", 1)
        if not isinstance(version, int) or version > STATE_VERSION:
            raise BadInput(f"{path}, key 'version'", f"written by a newer launcher (record version {version}, this "
                           f"launcher reads up to {STATE_VERSION})", "use the launcher that wrote it, or --fresh")
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        for name in ("run", "ladder", "data", "device", "rung"):
            if not isinstance(values.get(name), str):
                raise BadInput(f"{path}, key {name!r}", f"missing or not a string ({values.get(name)!r})",
                               "restore the file, or start afresh with --fresh")
        for name, kind in (("attempts", int), ("models", dict), ("remedies", dict), ("tree", list),
                           ("overrides", dict), ("cut", int), ("requeues", int), ("slurm_jobs", list), ("stalls", list),
                           ("folder", str), ("tracking", dict)):
            if name in values and (not isinstance(values[name], kind) or isinstance(values[name], bool)):
                raise BadInput(f"{path}, key {name!r}", f"should be a {kind.__name__}, is {values[name]!r}",
                               "restore the file, or start afresh with --fresh")
        models = {}
        for source, m in values.get("models", {}).items():
            try:
                models[source] = ModelRecord(**{k: v for k, v in m.items() if k in ModelRecord.__dataclass_fields__})
            except (TypeError, AttributeError):
                raise BadInput(f"{path}, key 'models' / {source!r}", f"not a model record ({m!r})",
                               "restore the file, or start afresh with --fresh") from None
        values["models"] = models
        values["version"] = STATE_VERSION
        return cls(**values)

    @classmethod
    def load(cls, path: Path) -> "RunState | None":
        """The state.json at `path`, or None when there is none."""
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as e:
            raise BadInput(str(path), f"cannot be read ({e})", "restore it, or start afresh with --fresh") from None
        try:
            return cls.from_json(json.loads(text), path)
        except ValueError as e:
            if isinstance(e, BadInput):
                raise
            raise BadInput(str(path), f"not JSON ({e})", "restore it, or start afresh with --fresh") from None

    def save(self, path: Path) -> None:
        self.updated = now_iso()
        write_json_atomic(path, self.to_json())

    def model(self, source: str | None) -> ModelRecord | None:
        return self.models.get(source) if source else None

    def save_dir_for(self, paths: RunPaths, source: str) -> str | None:
        """Where `source` trains: where the record says; for a run an earlier launcher started
        (models/<stem>) that left no record of the model (killed in its first attempt), that folder
        if it holds a checkpoint no other model of the record claims; None: the launcher's own
        naming (RunPaths.model)."""
        known = self.model(source)
        if known:
            return known.save_dir
        legacy = paths.model(source).legacy
        claimed = {Path(m.save_dir) for m in self.models.values()}
        return str(legacy.save_dir) if legacy.last.exists() and legacy.save_dir not in claimed else None

    def train(self, source: str) -> None:
        """An attempt trains this model now: it is the one training, and no longer set aside (taken up again)."""
        self.training_model = source
        if source in self.models:
            self.models[source].set_aside = False

    def set_aside(self, old: ModelRef, new: ModelRef, events: Events, say: Callable[[str], None]) -> None:
        """A step down from `old` to another model: `old`, if it saved an epoch, is set aside (kept,
        taken up again by a later attempt on it), recorded and said."""
        m = self.model(old.source) if old.source != new.source else None
        if m and m.epochs_done:
            m.set_aside = True
            events.append(Ev.MODEL_SET_ASIDE, model=old.spec, source=old.source, epochs_done=m.epochs_done,
                          of=m.epochs, save_dir=m.save_dir, next_model=new.spec)
            say(f"setting aside {old.spec}, epochs done {m.epochs_done}/{m.epochs} (kept in {m.save_dir}); "
                f"continuing with {new.spec}")

    def note_attempt(self, source: str, save_dir: str, epochs: int, last_saved_epoch: int | None,
                     ok: bool) -> ModelRecord:
        """What one attempt did for its model: the last epoch it saved; all of them when it finished."""
        m = self.models.setdefault(source, ModelRecord(save_dir=save_dir, epochs=epochs))
        if last_saved_epoch:
            m.epochs_done = max(m.epochs_done, last_saved_epoch)
        if ok:
            m.complete, m.epochs_done = True, m.epochs
        return m

    def trained_note(self) -> str:
        """For an ending that leaves a fully trained model behind: where it is."""
        m = self.model(self.training_model)
        if not m or m.epochs_done < m.epochs:
            return ""
        files = ModelPaths.at(m.save_dir)
        return (f"; {Path(self.training_model).name} finished training (its final validation is owed): "
                f"{files.best} and {files.last.name}")

    def summary(self, status: str, job: str | None = None, attempts: Iterable[Any] = ()) -> list[str]:
        """The night's last lines: a heading (given the `job`'s name), one line per attempt of this
        session (`attempts`: the supervisor's Outcomes) and one per model: how far it got and where it is."""
        lines = [f"summary of run {job!r} ({status}):"] if job is not None else []
        for o in attempts:
            how = "ok" if o.failure is None else f"{o.failure.kind}: {o.failure.evidence[:100]}"
            lines.append(f"  attempt {o.attempt:>2}  {o.rung:<12} {o.mode:<8} {o.end.seconds:7.1f} s  "
                         f"epochs saved {o.epochs_saved}  {how}")
        for source, m in self.models.items():
            current = source == self.training_model
            what = ("delivered" if current and status == Ev.COMPLETE else "set aside" if m.set_aside
                    else "complete" if m.complete else "in progress: run again to continue" if current else "")
            lines.append(f"  model {Path(source).name}: epochs done {m.epochs_done}/{m.epochs}"
                         + (f", {what}" if what else "") + f" ({m.save_dir})")
        return lines
