"""Owns every path under `logs/<run>/`: the run record of one training job.

events.jsonl is appended and flushed one JSON object a line (readers skip a torn last line);
state.json and the attempts' JSON files are replaced atomically (write, fsync, rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .contract import HEARTBEAT_NAME, REPORT_NAME, SPEC_NAME, TRAIN_LOG_NAME

LOGS_DIR = Path("logs")


def write_text_atomic(path: Path, text: str, fsync: bool = True) -> None:
    """Replace `path` with `text` in one rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: dict, fsync: bool = True) -> None:
    write_text_atomic(path, json.dumps(data, indent=1), fsync)


def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass(frozen=True)
class RunPaths:
    root: Path  # absolute: logs/<run>

    @classmethod
    def for_run(cls, name: str, logs: Path | None = None) -> "RunPaths":
        return cls(((logs or LOGS_DIR) / name).resolve())

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

    def save_dir(self, model_source: str) -> Path:
        """Ultralytics' save_dir for one model: rungs sharing a model share its checkpoints."""
        return self.root / "models" / Path(model_source).stem

    def verified(self, model_source: str) -> Path:
        """The last checkpoint of a model that was loaded once and found good, kept outside
        Ultralytics' save_dir (which a fresh DDP start deletes)."""
        return self.root / "checkpoints" / Path(model_source).stem / "last.pt"



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
        """Every whole line; a torn last line (a power cut mid-write) is skipped."""
        out = []
        try:
            lines = self.path.read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


class RunLock:
    """One launcher per run: an flock on logs/<run>/.lock, released by the kernel however the
    holder dies (so a SIGKILLed launcher never blocks the next run)."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> bool:
        import fcntl

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

    def is_held(self) -> bool:
        """Whether a launcher holds this run now (without taking the lock)."""
        import fcntl

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
            return self.path.read_text().strip() or "another launcher"
        except OSError:
            return "another launcher"


class Events(JsonLines):
    """logs/<run>/events.jsonl: one decision a line, each with `ts` and `event`."""

    def append(self, event: str, **fields) -> dict:
        return self.add({"ts": now_iso(), "event": event, **fields})
