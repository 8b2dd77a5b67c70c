"""What the supervisor hands a child: the spec file's contents, its environment and command."""

from __future__ import annotations

import sys
from pathlib import Path

from . import models
from .contract import CHILD_MODULE, ENV_ALLOC_CONF, ENV_DEVICE_ORDER, GIB, THREAD_ENV_VARS, Spec
from .ladder import Job, Rung
from .proctree import SPEC_ENV
from .runlog import RunPaths

ULTRALYTICS_CACHE = {"ram": "ram", "disk": "disk", "off": False}


def train_args(job: Job, rung: Rung, device: str, paths: RunPaths, save_dir: str | None = None) -> dict:
    """Arguments for Ultralytics' `train()`: absolute paths, the ladder's batch, rect off."""
    return {
        "model": rung.model.source,
        "data": str(paths.dataset),  # job.dataset with absolute paths (dataset.write_resolved)
        "epochs": rung.epochs,
        "batch": rung.batch,
        "imgsz": job.imgsz,
        "workers": rung.workers,
        "cache": ULTRALYTICS_CACHE[rung.cache],
        "device": device,
        "save_dir": save_dir or str(paths.save_dir(rung.model.source)),
        "exist_ok": True,
        "rect": False,
    }


def build(job: Job, rung: Rung, device: str, paths: RunPaths, attempt: int, vram_gib: float | None = None,
          mode: str = "train", inject: tuple[dict, ...] = (), save_dir: str | None = None) -> Spec:
    """The spec of one attempt; `save_dir`: where the run record says this model's checkpoints are
    (a run started by an earlier launcher keeps its folders)."""
    save_dir = save_dir or str(paths.save_dir(rung.model.source))
    return Spec(
        run=job.name, attempt=attempt, rung=rung.name,
        mode=mode,  # "train", or "validate": only the final validation is owed
        inject=[dict(x) for x in inject],  # --inject fire drills
        train_args=train_args(job, rung, device, paths, save_dir), extra_args=dict(job.args),
        threads=rung.threads, vram_fraction=rung.vram_fraction,
        vram_limit_bytes=int(vram_gib * GIB) if vram_gib is not None and device != "cpu" else None,
        cleanup_every=rung.cleanup_every,
        # the module a project model's YAML needs registered with Ultralytics' parser
        register=rung.model.project.module if rung.model.project else None,
        verified=str(paths.verified(save_dir)), report=str(paths.report(attempt)),
        heartbeat=str(paths.heartbeat(attempt)),
        val_batch=rung.val_batch,  # the ladder's or a measured choice's (choice.py); Ultralytics' 2 × batch otherwise
        on_thrash=job.on_thrash)  # what the child does when the allocator thrashes (callbacks.Watch)


def env(rung: Rung, spec_path: Path | None = None) -> dict[str, str]:
    """Variables set for the child before torch loads (on top of the launcher's environment);
    with `spec_path`, the spec it is started for, which its whole tree inherits: a later run ends
    this run's orphans by it, and no other run's (proctree.reap_run)."""
    # no pip installs mid-night: Ultralytics would `pip install` a module a checkpoint names but
    # cannot import (for `launcher`, an unrelated PyPI package)
    out = {ENV_DEVICE_ORDER: "PCI_BUS_ID", "YOLO_AUTOINSTALL": "False"}
    if rung.alloc_conf:
        out[ENV_ALLOC_CONF] = rung.alloc_conf
    if rung.threads:
        out.update({name: str(rung.threads) for name in THREAD_ENV_VARS})
    out.update(models.child_env(rung.model, rung.pretrained))
    if spec_path is not None:
        out[SPEC_ENV] = str(spec_path)
    return out


def command(spec_path: Path) -> list[str]:
    return [sys.executable, "-m", CHILD_MODULE, str(spec_path)]
