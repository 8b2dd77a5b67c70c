"""Learned rungs: what earlier nights on this machine and job taught, kept in logs/experience.json.

After each training attempt the supervisor notes the rung's verdict for this machine and job (GPU
model and VRAM, RAM, dataset, imgsz, Ultralytics and torch versions, the ladder file's content):
"oom_early" when it ran out of CUDA memory before completing an epoch, "held" when it completed epochs. A
late OOM (after completed epochs) is a leak, not a verdict on the rung: it counts as "held". The
next plan does not start on a rung whose newest verdict is "oom_early". Entries expire after 30
days and no longer match once the ladder or the versions change. The file is small, readable
JSON, and safe to delete (`--no-memory` ignores it).

Trials (docs/design.md, "Tuning: a measured trial per rung") are kept in the same file, under
"trials", with the same key plus the rung's own: its model source and settings (`rung_key`), so a
measurement applies only to the rung it measured. They expire like verdicts. A rehearsal
(`--inject`) stores nothing: setup hands the supervisor no store then (`Prepared.experience` is
None), and `note_trials` with no store notes nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import console
from .choice import grown_rungs
from .contract import CUDA_OOM, GIB, Trial
from .failures import late_oom
from .ladder import Ladder, Rung
from .probe import Gpu, Snapshot
from .runlog import EXPERIENCE_NAME, exclusive, logs_dir, now_iso, write_json_atomic

TTL = timedelta(days=30)
OOM_EARLY, HELD = "oom_early", "held"
MAX_ENTRIES = 500


def store_path(logs: Path | None = None) -> Path:
    return (logs or logs_dir()) / EXPERIENCE_NAME


def _version(package: str) -> str | None:
    from importlib import metadata  # here, not at the top: status imports this module and reads no version

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def job_key(ladder: Ladder, gpus: tuple[Gpu, ...], snap: Snapshot) -> dict:
    """What must match for an earlier verdict or trial to apply here. The versions of Ultralytics
    and torch: either changes what a rung takes (torch's allocator, kernels and their workspaces).
    The dataset by its path only: hashing its image list would read the whole list on every plan
    (the RAM cache of issue 23 keys itself by it)."""
    gpu = gpus[0] if gpus else None
    return {
        "gpu": gpu.name if gpu else "cpu",
        "vram_gib": round(gpu.total / GIB) if gpu and gpu.total else None,
        "gpus": len(gpus),
        "ram_gib": round(snap.ram_total / GIB) if snap.ram_total else None,
        "dataset": str(ladder.job.dataset),
        "imgsz": ladder.job.imgsz,
        "args": {k: ladder.job.args[k] for k in sorted(ladder.job.args)},  # [job.args] and key=value
        "ultralytics": _version("ultralytics"),
        "torch": _version("torch"),
        "ladder": hashlib.sha256(ladder.path.read_bytes()).hexdigest()[:16],
    }


def rung_key(rung: Rung) -> dict:
    """What must match, past the job's key, for a rung's measurement to apply: the model it
    trains and the rung's own settings as the ladder gives them (not min_free_vram_gib, a
    threshold that a measurement replaces, nor epochs, which cost no memory)."""
    return {"model": rung.model.source, "batch": rung.batch, "val_batch": rung.val_batch,
            "workers": rung.workers, "cache": rung.cache, "threads": rung.threads,
            "vram_fraction": rung.vram_fraction, "alloc_conf": rung.alloc_conf,
            "cleanup_every": rung.cleanup_every, "pretrained": rung.pretrained}


def for_job(ladder: Ladder, gpus: tuple[Gpu, ...], snap: Snapshot, path: Path | None = None) -> "Experience":
    """The store for this machine and job: verdicts and trials, the ladder's rungs and the grown
    top rung ([job] grow, choice.grown_rungs) known by name."""
    rungs = {r.name: rung_key(r) for r in ladder.rungs + grown_rungs(ladder.rungs)}
    return Experience(path or store_path(), job_key(ladder, gpus, snap), rungs)


@dataclass
class Experience:
    path: Path
    key: dict
    rungs: dict[str, dict] = field(default_factory=dict)  # rung (or trial) name -> rung_key; for_job fills it

    def _data(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self._unreadable(f"cannot be read ({e})")
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("entries", []), list):
            self._unreadable("is not an object with a list of entries")
            return {}
        return data

    def _entries(self, data: dict | None = None, kind: str = "entries") -> list[dict]:
        """The verdicts ("entries") or the trials ("trials"; a file from before trials has none)."""
        items = (self._data() if data is None else data).get(kind, [])
        items = items if isinstance(items, list) else []
        return [e for e in items if isinstance(e, dict) and isinstance(e.get("rung"), str)]

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
            if e.get("key") == self.key and self._fresh(e, now) and "verdict" in e:
                out[e["rung"]] = e  # entries are in time order: the newest wins
        return out

    def trials(self, now: datetime | None = None) -> dict[str, tuple[Trial, str]]:
        """The newest fresh trial per rung for this job and that rung's own key, with when it was
        noted: a trial of another dataset, ladder, machine, version or rung setting is not here."""
        now = now or datetime.now(timezone.utc)
        out: dict[str, tuple[Trial, str]] = {}
        for e in self._entries(kind="trials"):
            name = e["rung"]
            if (e.get("key") != self.key or name not in self.rungs or e.get("rung_key") != self.rungs[name]
                    or not self._fresh(e, now)):
                continue
            trial = Trial.from_json(e.get("trial"))
            if isinstance(trial, Trial) and trial.rung == name:
                out[name] = (trial, e["ts"])  # in time order: the newest wins
        return out

    def avoid(self, now: datetime | None = None) -> dict[str, str]:
        """Rungs not to start on, with the reason a person reads in dry-run."""
        return {rung: f"rung {rung} OOMed in its first epoch in run {e['run']!r}, {e['ts'][:16].replace('T', ' ')}"
                for rung, e in self.verdicts(now).items() if e["verdict"] == OOM_EARLY}

    def note(self, rung: str, verdict: str, run: str) -> None:
        """Add a verdict. Runs of the same logs/ note at once: the read-change-replace is done
        under a lock, or one run's replace would drop the notes another wrote since its read."""
        self._add("entries", {"ts": now_iso(), "rung": rung, "verdict": verdict, "run": run, "key": self.key})

    def note_trial(self, trial: Trial, run: str) -> None:
        """Add a trial's measurement of one of this job's rungs (by its name, `for_job`'s rungs)."""
        if trial.rung not in self.rungs:
            raise ValueError(f"trial of rung {trial.rung!r}: not a rung of this job ({', '.join(self.rungs)})")
        self._add("trials", {"ts": now_iso(), "rung": trial.rung, "run": run, "key": self.key,
                             "rung_key": self.rungs[trial.rung], "trial": trial.to_json()})

    def _add(self, kind: str, entry: dict) -> None:
        now = datetime.now(timezone.utc)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.path) as locked:
            if not locked and not getattr(self, "_warned_lock", False):
                self._warned_lock = True  # advice, noted all the same: a lost note is the worst case
                console.say(f"warning: the lock beside {self.path} cannot be opened; learned rungs are noted "
                            "without it (a run noting at the same moment may lose a note)")
            data = self._data()
            kept = {k: [e for e in self._entries(data, k) if self._fresh(e, now)][-(MAX_ENTRIES - 1):]
                    for k in ("entries", "trials")}
            kept[kind].append(entry)
            write_json_atomic(self.path, {"about": "learned rungs of rtdetr-launcher; safe to delete", **kept})


def note_trials(store: Experience | None, trials: list[Trial], run: str) -> int:
    """Note the trials that measured something (a failed or timed-out trial says nothing about
    memory); `store` None (`--no-memory`, a rehearsal with `--inject`) notes none. How many were noted."""
    from .choice import says_nothing

    if store is None:
        return 0
    noted = [t for t in trials if t.rung in store.rungs and not says_nothing(t)]
    for trial in noted:
        store.note_trial(trial, run)
    return len(noted)


def verdict(kind: str | None, phase: str | None, epochs_saved: int) -> str | None:
    """An attempt's verdict on its rung, or None when it says nothing about the rung's memory."""
    # a thrash (the child ended itself after a save: alloc retries rising) is no oom_early: the rung
    # trained and saved, and a fresh process clears the fragmentation
    if late_oom(epochs_saved):
        return HELD  # including a late OOM: a leak, not a verdict on the rung
    if kind == CUDA_OOM and phase in ("train", "val", None):
        return OOM_EARLY
    return None
