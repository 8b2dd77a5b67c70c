"""Learned rungs: what earlier nights on this machine and job taught, kept in logs/experience.json.

After each training attempt the supervisor notes the rung's verdict for this machine and job (GPU
model and VRAM, RAM, dataset, imgsz, Ultralytics version, the ladder file's content): "oom_early"
when it ran out of CUDA memory before completing an epoch, "held" when it completed epochs. A
late OOM (after completed epochs) is a leak, not a verdict on the rung: it counts as "held". The
next plan does not start on a rung whose newest verdict is "oom_early". Entries expire after 30
days and no longer match once the ladder or the versions change. The file is small, readable
JSON, and safe to delete (`--no-memory` ignores it).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import console
from .contract import CUDA_OOM, GIB
from .failures import late_oom
from .ladder import Ladder
from .probe import Gpu, Snapshot
from .runlog import EXPERIENCE_NAME, exclusive, logs_dir, now_iso, write_json_atomic

TTL = timedelta(days=30)
OOM_EARLY, HELD = "oom_early", "held"
MAX_ENTRIES = 500


def store_path(logs: Path | None = None) -> Path:
    return (logs or logs_dir()) / EXPERIENCE_NAME


def job_key(ladder: Ladder, gpus: tuple[Gpu, ...], snap: Snapshot) -> dict:
    """What must match for an earlier verdict to apply here."""
    from importlib import metadata  # here, not at the top: status imports this module and reads no version

    try:
        ultralytics = metadata.version("ultralytics")
    except metadata.PackageNotFoundError:
        ultralytics = None
    gpu = gpus[0] if gpus else None
    return {
        "gpu": gpu.name if gpu else "cpu",
        "vram_gib": round(gpu.total / GIB) if gpu and gpu.total else None,
        "gpus": len(gpus),
        "ram_gib": round(snap.ram_total / GIB) if snap.ram_total else None,
        "dataset": str(ladder.job.dataset),
        "imgsz": ladder.job.imgsz,
        "args": {k: ladder.job.args[k] for k in sorted(ladder.job.args)},  # [job.args] and key=value
        "ultralytics": ultralytics,
        "ladder": hashlib.sha256(ladder.path.read_bytes()).hexdigest()[:16],
    }


@dataclass
class Experience:
    path: Path
    key: dict

    def _entries(self) -> list[dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            return self._unreadable(f"cannot be read ({e})")
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            return self._unreadable("is not an object with a list of entries")
        return [e for e in entries if isinstance(e, dict) and isinstance(e.get("rung"), str)]

    def _unreadable(self, why: str) -> list[dict]:
        """Learned rungs are advice: a damaged file is skipped with one warning, never fatal."""
        if not getattr(self, "_warned", False):
            self._warned = True
            console.say(f"warning: {self.path} {why}; learned rungs are ignored (the file is safe to delete)")
        return []

    def _fresh(self, e: dict, now: datetime) -> bool:
        try:
            return now - datetime.fromisoformat(e["ts"]) <= TTL
        except (KeyError, ValueError, TypeError):
            return False

    def verdicts(self, now: datetime | None = None) -> dict[str, dict]:
        """The newest fresh verdict per rung for this key."""
        now = now or datetime.now(timezone.utc)
        out: dict[str, dict] = {}
        for e in self._entries():
            if e.get("key") == self.key and self._fresh(e, now):
                out[e["rung"]] = e  # entries are in time order: the newest wins
        return out

    def avoid(self, now: datetime | None = None) -> dict[str, str]:
        """Rungs not to start on, with the reason a person reads in dry-run."""
        return {rung: f"rung {rung} OOMed in its first epoch in run {e['run']!r}, {e['ts'][:16].replace('T', ' ')}"
                for rung, e in self.verdicts(now).items() if e["verdict"] == OOM_EARLY}

    def note(self, rung: str, verdict: str, run: str) -> None:
        """Add a verdict. Runs of the same logs/ note at once: the read-change-replace is done
        under a lock, or one run's replace would drop the notes another wrote since its read."""
        now = datetime.now(timezone.utc)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.path) as locked:
            if not locked and not getattr(self, "_warned_lock", False):
                self._warned_lock = True  # advice, noted all the same: a lost note is the worst case
                console.say(f"warning: the lock beside {self.path} cannot be opened; learned rungs are noted "
                            "without it (a run noting at the same moment may lose a note)")
            keep = [e for e in self._entries() if self._fresh(e, now)][-(MAX_ENTRIES - 1):]
            keep.append({"ts": now_iso(), "rung": rung, "verdict": verdict, "run": run, "key": self.key})
            write_json_atomic(self.path, {"about": "learned rungs of rtdetr-launcher; safe to delete",
                                          "entries": keep})


def verdict(kind: str | None, phase: str | None, epochs_saved: int) -> str | None:
    """An attempt's verdict on its rung, or None when it says nothing about the rung's memory."""
    # a thrash (the child ended itself after a save: alloc retries rising) is no oom_early: the rung
    # trained and saved, and a fresh process clears the fragmentation
    if late_oom(epochs_saved):
        return HELD  # including a late OOM: a leak, not a verdict on the rung
    if kind == CUDA_OOM and phase in ("train", "val", None):
        return OOM_EARLY
    return None
