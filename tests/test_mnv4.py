"""rtdetr-mnv4: the MobileNetV4 backbone, its YAML, and its life cycle through Ultralytics, offline.

The life-cycle tests run Ultralytics in subprocesses, as the launcher's child does: train 2 epochs
and end the process right after epoch 1's checkpoint is saved (setting `trainer.stop` would finalise
the run instead), resume that `last.pt` in a new process with another batch, then predict with
`best.pt` in a third process that only imports the project.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launcher.models import mnv4

ROOT = Path(__file__).resolve().parents[1]
YAML = mnv4.yaml_path()
EXIT_AFTER_SAVE = 17  # the training child's exit code when it ends itself after a checkpoint save


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""

    def refuse(*a, **k):
        raise AssertionError(f"network access attempted: {a!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(mnv4.PRETRAINED_ENV, raising=False)


@pytest.fixture(scope="module")
def yolo_env(tmp_path_factory) -> dict[str, str]:
    """Environment for Ultralytics subprocesses: offline, random init, and a config dir holding an
    `Arial.ttf` so that `check_font` (run by every dataset check) does not download one."""
    cfg = tmp_path_factory.mktemp("yolo_config")
    import matplotlib

    shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", cfg / "Arial.ttf")
    env = dict(os.environ)
    env.pop(mnv4.PRETRAINED_ENV, None)
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(
        YOLO_OFFLINE="1",
        HF_HUB_OFFLINE="1",
        YOLO_CONFIG_DIR=str(cfg),
        HF_HUB_CACHE=str(tmp_path_factory.mktemp("hf_cache")),
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p),
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
    )
    return env


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    """8 + 4 images of 64x64 px with coloured shapes and YOLO labels (the demo's generator)."""
    from launcher.demo import make_dataset

    return make_dataset(tmp_path_factory.mktemp("tiny_data"), train=8, val=4, size=64, max_boxes=2)


TRAIN_SCRIPT = """
import json, os, sys
import launcher.models.mnv4 as mnv4
mnv4.register()
from ultralytics import RTDETR
spec = json.loads(sys.argv[1])
model = RTDETR(spec.pop("model"))
exit_after = spec.pop("exit_after_epochs", None)
if exit_after:
    def end_process(trainer):  # after the checkpoint is on disk: like a crash, not a clean stop
        if trainer.epoch + 1 >= exit_after:
            sys.stdout.flush(); sys.stderr.flush()
            os._exit(%d)
    model.add_callback("on_model_save", end_process)
model.train(**spec)
""" % EXIT_AFTER_SAVE


def _python(code: str, *args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def _load_ckpt(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.fixture(scope="module")
def first_epoch(tiny_dataset, yolo_env, tmp_path_factory):
    """Train rtdetr-mnv4 for 2 epochs in a subprocess that ends itself after epoch 1's save."""
    project = tmp_path_factory.mktemp("runs")
    spec = dict(
        model=str(YAML), data=str(tiny_dataset), epochs=2, imgsz=64, batch=2, workers=0, device="cpu",
        plots=False, val=True, project=str(project), name="mnv4", exist_ok=True, seed=0,
        exit_after_epochs=1,
    )  # fmt: skip
    p = _python(TRAIN_SCRIPT, json.dumps(spec), env=yolo_env)
    last = project / "mnv4" / "weights" / "last.pt"
    if last.exists():  # as epoch 1 left it: `resumed` trains this folder on (tests run in any order)
        shutil.copyfile(last, project / "after-epoch-1.pt")
    return p, project / "mnv4"


@pytest.fixture(scope="module")
def resumed(first_epoch, yolo_env):
    """Resume the first run's last.pt in a new process with batch 4."""
    _, save_dir = first_epoch
    code = (
        "import sys\nimport launcher.models.mnv4 as mnv4\nmnv4.register()\nfrom ultralytics import RTDETR\n"
        "RTDETR(sys.argv[1]).train(resume=True, batch=4, workers=0, device='cpu', plots=False)\n"
    )
    return _python(code, str(save_dir / "weights" / "last.pt"), env=yolo_env), save_dir


# --- the backbone and YAML (fast) ----------------------------------------------------------------


def test_backbone_features_match_yaml(no_network):
    import torch

    bb = mnv4.MobileNetV4Backbone()
    assert bb.channels == mnv4.CHANNELS
    assert bb.strides == (8, 16, 32)
    out = bb(torch.zeros(1, 3, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 64, 8, 8), (1, 96, 4, 4), (1, 960, 2, 2)]

    d = yaml.safe_load(YAML.read_text())
    assert d["backbone"][0][2] == mnv4.YAML_NAME
    index_rows = [row for row in d["backbone"] if row[2] == "Index"]
    assert [(row[0], row[3][1], row[3][0]) for row in index_rows] == [(0, i, c) for i, c in enumerate(mnv4.CHANNELS)]


def test_backbone_pickles_by_reference(no_network):
    """Checkpoints pickle the module; DDP cloudpickles the model: both must name this module's class."""
    import cloudpickle
    import torch

    bb = mnv4.MobileNetV4Backbone().eval()
    x = torch.rand(1, 3, 64, 64)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        blob = dumps(bb)
        assert b"launcher.models.mnv4" in blob and b"MobileNetV4Backbone" in blob
        clone = pickle.loads(blob)
        assert type(clone) is mnv4.MobileNetV4Backbone
        assert all(torch.equal(a, b) for a, b in zip(bb(x), clone(x)))


def test_register_is_idempotent_and_happens_on_import():
    import ultralytics.nn.tasks as tasks

    assert getattr(tasks, mnv4.YAML_NAME) is mnv4.MobileNetV4Backbone  # importing mnv4 registered it
    mnv4.register()
    mnv4.register()
    assert getattr(tasks, mnv4.YAML_NAME) is mnv4.MobileNetV4Backbone


def test_pretrained_only_when_env_is_1(monkeypatch):
    seen = []
    real = mnv4.timm.create_model

    def spy(name, pretrained=False, **kw):
        seen.append((name, pretrained))
        return real(name, pretrained=False, **kw)  # never download here

    monkeypatch.setattr(mnv4.timm, "create_model", spy)
    for value, expected in ((None, False), ("0", False), ("", False), ("true", False), ("1", True)):
        if value is None:
            monkeypatch.delenv(mnv4.PRETRAINED_ENV, raising=False)
        else:
            monkeypatch.setenv(mnv4.PRETRAINED_ENV, value)
        mnv4.MobileNetV4Backbone()
        assert seen[-1] == (mnv4.TIMM_MODEL, expected), value


def test_hf_cache_location_and_weights_cached(tmp_path):
    env = {"HF_HOME": str(tmp_path / "hf")}
    assert mnv4.hf_hub_cache(env) == tmp_path / "hf" / "hub"
    assert mnv4.hf_hub_cache({"XDG_CACHE_HOME": str(tmp_path / "x")}) == tmp_path / "x" / "huggingface" / "hub"
    assert mnv4.hf_hub_cache({"HF_HUB_CACHE": str(tmp_path / "c"), "HF_HOME": "/elsewhere"}) == tmp_path / "c"
    assert mnv4.hf_hub_cache({"HUGGINGFACE_HUB_CACHE": str(tmp_path / "legacy")}) == tmp_path / "legacy"
    assert mnv4.hf_hub_cache({}) == Path.home() / ".cache" / "huggingface" / "hub"

    assert not mnv4.weights_cached(env)
    snap = tmp_path / "hf" / "hub" / f"models--timm--{mnv4.TIMM_MODEL}" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").symlink_to(snap / "missing-blob")  # a broken link is not a cache hit
    assert not mnv4.weights_cached(env)
    (snap / "missing-blob").write_bytes(b"weights")
    assert mnv4.weights_cached(env)
    assert mnv4.cached_weights_file(mnv4.HF_REPO_ID, environ=env) == snap / "model.safetensors"


@pytest.mark.parametrize(
    "env",
    [{}, {"HF_HOME": "~/hfhome"}, {"XDG_CACHE_HOME": "/x"}, {"HUGGINGFACE_HUB_CACHE": "/l", "HF_HOME": "/h"},
     {"HF_HUB_CACHE": "$HOME/c", "HF_HOME": "/h"}],
)  # fmt: skip
def test_hf_cache_agrees_with_huggingface_hub(env):
    """huggingface_hub reads its cache location once, at import: ask a fresh process."""
    keys = ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME")
    child_env = {k: v for k, v in os.environ.items() if k not in keys} | env
    code = "from huggingface_hub import constants; print(constants.HF_HUB_CACHE)"
    out = subprocess.run([sys.executable, "-c", code], env=child_env, capture_output=True, text=True, check=True)
    assert mnv4.hf_hub_cache(child_env) == Path(out.stdout.strip())


def test_builds_offline_at_most_half_of_rtdetr_l(no_network):
    from ultralytics import RTDETR

    n_mnv4 = sum(p.numel() for p in RTDETR(str(YAML)).model.parameters())
    n_l = sum(p.numel() for p in RTDETR("rtdetr-l.yaml").model.parameters())
    assert n_mnv4 <= n_l / 2, (n_mnv4, n_l)


# --- life cycle through Ultralytics, in subprocesses (slow) ---------------------------------------


@pytest.mark.slow
def test_trains_one_epoch_and_leaves_a_resumable_checkpoint(first_epoch):
    p, save_dir = first_epoch
    assert p.returncode == EXIT_AFTER_SAVE, p.stdout[-3000:] + p.stderr[-3000:]
    ckpt = _load_ckpt(save_dir.parent / "after-epoch-1.pt")
    assert ckpt["epoch"] == 0 and ckpt["optimizer"] is not None
    assert ckpt["train_args"]["batch"] == 2
    assert type(ckpt["ema"].model[0]) is mnv4.MobileNetV4Backbone  # 8.4 saves the EMA only ("model": None)


@pytest.mark.slow
def test_resumes_in_a_new_process_with_another_batch(resumed):
    p, save_dir = resumed
    log = p.stdout + p.stderr
    assert p.returncode == 0, log[-4000:]
    assert "Resuming training" in log and "from epoch 2 to 2 total epochs" in log, log[-4000:]
    ckpt = _load_ckpt(save_dir / "weights" / "last.pt")
    assert ckpt["epoch"] == -1  # finished: the final evaluation stripped the optimizer
    assert ckpt["train_args"]["batch"] == 4
    rows = (save_dir / "results.csv").read_text().strip().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [1, 2]


@pytest.mark.slow
def test_best_pt_predicts_in_a_process_that_imports_the_project(resumed, tiny_dataset, yolo_env):
    _, save_dir = resumed
    code = (
        "import sys\nimport launcher.models.mnv4\nfrom ultralytics import RTDETR\n"
        "r = RTDETR(sys.argv[1]).predict(sys.argv[2], imgsz=64, device='cpu', conf=0.0, verbose=False)\n"
        "print('BOXES', r[0].boxes.xyxy.shape[0], type(r[0].boxes).__name__)\n"
    )
    image = tiny_dataset.parent / "images" / "val" / "00000.jpg"
    p = _python(code, str(save_dir / "weights" / "best.pt"), str(image), env=yolo_env)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "BOXES" in p.stdout


@pytest.mark.slow
def test_checkpoint_alone_rebuilds_the_model(resumed, yolo_env):
    """A DDP rank resuming gets only the path of last.pt: unpickling it imports mnv4, which registers
    the backbone, so rebuilding from the YAML stored in the checkpoint works without an explicit import."""
    _, save_dir = resumed
    code = (
        "import sys\nfrom ultralytics.nn.tasks import RTDETRDetectionModel, load_checkpoint\n"
        "w, _ = load_checkpoint(sys.argv[1])\nm = RTDETRDetectionModel(w.yaml, nc=len(w.names), verbose=False)\n"
        "m.load_state_dict(w.float().state_dict())\nprint('REBUILT', type(m.model[0]).__module__)\n"
    )
    p = _python(code, str(save_dir / "weights" / "last.pt"), env=yolo_env)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert "REBUILT launcher.models.mnv4" in p.stdout


def test_pretrained_loads_the_cached_file_without_network(no_network, tmp_path, monkeypatch):
    """With the weights in the HF cache, pretrained=1 reads that file and never asks the hub."""
    import safetensors.torch
    import timm
    import torch

    full = timm.create_model(mnv4.TIMM_MODEL.split(".")[0], pretrained=False)  # a stand-in for the ImageNet file
    snap = tmp_path / "hub" / f"models--timm--{mnv4.TIMM_MODEL}" / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    safetensors.torch.save_file({k: v.contiguous() for k, v in full.state_dict().items()}, snap / "model.safetensors")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv(mnv4.PRETRAINED_ENV, "1")
    assert mnv4.weights_cached()

    bb = mnv4.MobileNetV4Backbone()
    assert torch.equal(bb.m.conv_stem.weight, full.conv_stem.weight)
    monkeypatch.delenv(mnv4.PRETRAINED_ENV)
    assert not torch.equal(mnv4.MobileNetV4Backbone().m.conv_stem.weight, full.conv_stem.weight)


def test_pretrained_without_cache_or_network_says_what_to_do(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_HUB_CACHE=str(tmp_path / "empty"), HF_HUB_OFFLINE="1", **{mnv4.PRETRAINED_ENV: "1"})
    code = (
        "from launcher.models import mnv4\ntry:\n    mnv4.MobileNetV4Backbone()\n"
        "except mnv4.PretrainedWeightsUnavailable as e:\n    print('UNAVAILABLE', e)\n"
    )
    p = _python(code, env=env, timeout=120)
    assert "UNAVAILABLE" in p.stdout and f"{mnv4.PRETRAINED_ENV}=0" in p.stdout, p.stdout + p.stderr[-2000:]
