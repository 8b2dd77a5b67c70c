"""Owns every path under `logs/<run>/`: the run record of one training job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .contract import HEARTBEAT_NAME, REPORT_NAME, SPEC_NAME, TRAIN_LOG_NAME

LOGS_DIR = Path("logs")


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
        stem = Path(model_source).stem
        return self.root / "models" / stem
