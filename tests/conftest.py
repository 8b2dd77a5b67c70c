"""Shared fixtures: a sealed environment (no network, no user settings), ladders and datasets."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from launcher import models, probe
from launcher.contract import GIB
from launcher.demo import make_dataset
from launcher.probe import Snapshot

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(autouse=True)
def sealed_env(tmp_path_factory, monkeypatch):
    """Keep every test away from the user's Ultralytics settings, HF cache and the network."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(home / "yolo"))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf"))
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("RTDETR_LOGS", raising=False)
    # status and report also look in the checkout's own logs/: not in tests, whatever a demo left there
    monkeypatch.setattr("launcher.status.CHECKOUT_LOGS", home / "no-checkout-logs")
    yield home


CATCHABLE = sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP})


@pytest.fixture(autouse=True)
def kept_process_state():
    """Whatever a test does to this process comes back as it was, so no test leans on the one before
    (the suite runs in random order, pytest-randomly): `run` in-process ignores SIGHUP for good
    (console.unattended) and a requeued SLURM job ignores SIGTERM (Signals.ignore), which every
    subprocess a later test starts would inherit; environment and working folder likewise."""
    signals = {s: signal.getsignal(s) for s in CATCHABLE}
    environ, cwd = dict(os.environ), os.getcwd()
    yield
    for s, handler in signals.items():
        if handler is not None and signal.getsignal(s) != handler:  # None: not set from Python, cannot be
            signal.signal(s, handler)
    if dict(os.environ) != environ:
        os.environ.clear()
        os.environ.update(environ)
    if os.getcwd() != cwd:
        os.chdir(cwd)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def make_image_tree(root: Path, train: int, val: int, names=("box",)) -> Path:
    """A dataset layout with `train` + `val` (empty) image files, enough for counting."""
    for split, n in (("train", train), ("val", val)):
        d = root / "images" / split
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (d / f"{i:05d}.jpg").touch()
    return write(root / "data.yaml", f"path: {root}\ntrain: images/train\nval: images/val\nnames: {list(names)}\n")


@pytest.fixture
def image_tree(tmp_path):
    return make_image_tree(tmp_path / "ds", train=40, val=10)


RUNG = """
[[rung]]
name = "{name}"
model = "{model}"
epochs = {epochs}
batch = {batch}
"""


def ladder_text(dataset: str = "ds/data.yaml", rungs: str | None = None, job_extra: str = "") -> str:
    rungs = rungs if rungs is not None else RUNG.format(name="a", model="rtdetr-l.yaml", epochs=3, batch=4)
    return f'[job]\nname = "t"\ndataset = "{dataset}"\nimgsz = 64\n{job_extra}\n{rungs}'


@pytest.fixture
def ladder_file(tmp_path):
    def make(text: str, name: str = "l.toml") -> Path:
        return write(tmp_path / name, text)
    return make


def all_available(ladder):
    """The ladder with every rung's model available, whatever this machine has installed (timm)
    or can fetch: pure tests of the plan and the loop must not depend on it."""
    from dataclasses import replace
    return replace(ladder, rungs=tuple(replace(r, model=replace(r.model, available=True)) for r in ladder.rungs))


def env_without(*names: str) -> dict:
    return {k: v for k, v in os.environ.items() if k not in names}


def nothing_started(logs: Path) -> bool:
    """No run record in `logs`: at most the refusal log a refused `run` leaves (launcher/refusals.py)."""
    return sorted(p.name for p in logs.glob("*")) in ([], ["launcher-errors.log"])


# --- machines and datasets several modules run against (from test_cli.py and test_e2e.py) ---

@pytest.fixture(scope="module")
def coco_tree(tmp_path_factory):
    return make_image_tree(tmp_path_factory.mktemp("data") / "coco_indoor", train=3912, val=489)


@pytest.fixture
def online(monkeypatch):
    """As on a connected machine: downloads on first use are possible."""
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(models, "reachable", lambda host: True)


@pytest.fixture
def fixed_machine(monkeypatch, tmp_path, coco_tree, online):
    """The fixed snapshot, run from tmp_path, where coco_indoor/ is the 4,401-image dataset."""
    from helpers import FIXED  # here, not at the top: helpers imports conftest
    monkeypatch.setattr(probe, "take", lambda: FIXED)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coco_indoor").symlink_to(coco_tree.parent)
    return coco_tree


@pytest.fixture
def cpu_machine(monkeypatch, tmp_path, online):
    """A machine without GPUs, run from tmp_path, where coco_indoor/ is a small dataset."""
    make_image_tree(tmp_path / "coco_indoor", 4, 2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(probe, "take", lambda: Snapshot((), 8 * GIB, 6 * GIB, 2, nvml="NVML unavailable"))


@pytest.fixture(scope="session")
def shapes(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("shapes"), train=8, val=4, size=64, max_boxes=2)
