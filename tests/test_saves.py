"""What the checkpoints survive (docs/design.md, "Checkpoints"): a kill or a full disk mid-save, any
damage to last.pt or best.pt (the verified copy is a file of its own), and a resume from the
verified copy when last.pt is torn. Real files, real processes killed mid-write, real torch.save
checkpoints; the final strip's console line."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from launcher import child
from launcher.callbacks import Watch
from launcher.checkpoint import zip_damage
from launcher.child import NONE, RESUMABLE, UNLOADABLE, checkpoint_state
from launcher.contract import ENV_PRETRAINED_BACKBONE, Spec

from conftest import ROOT


def checkpoint(epoch: int, epochs: int = 3, size: int = 250_000) -> bytes:
    """A resumable checkpoint shaped like Ultralytics' (save_model), ~1 MB."""
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "best_fitness": 0.5, "model": None, "ema": torch.full((size,), float(epoch)),
                "updates": 10 * epoch, "optimizer": {"state": {}, "param_groups": [{"lr": 0.01}]},
                "train_args": {"epochs": epochs, "batch": 4}, "train_metrics": {}}, buf)
    return buf.getvalue()


@pytest.fixture
def spec(tmp_path):
    save_dir = tmp_path / "models" / "m"
    return Spec(heartbeat=str(tmp_path / "hb.json"), verified=str(tmp_path / "checkpoints" / "m" / "last.pt"),
                rung="optimal", attempt=2, threads=None, cleanup_every=0,
                train_args={"model": "m.yaml", "data": "d.yaml", "epochs": 3, "batch": 4, "imgsz": 64, "workers": 0,
                            "cache": False, "device": "cpu", "save_dir": str(save_dir), "exist_ok": True,
                            "rect": False},
                extra_args={"plots": False})


def ultralytics_saves(spec: Spec, epochs: int = 1) -> tuple[SimpleNamespace, Watch]:
    """Epochs saved as Ultralytics' save_model saves them (last.pt, then the same bytes to best.pt),
    through the launcher's callbacks; the verified copy refreshed at the first save."""
    w = Watch(spec)
    weights = Path(spec.save_dir) / "weights"
    weights.mkdir(parents=True)
    t = SimpleNamespace(last=weights / "last.pt", best=weights / "best.pt", device=torch.device("cpu"), epoch=0,
                        epochs=3, stop=False)
    w.on_pretrain_routine_start(t)
    for epoch in range(epochs):
        t.epoch = epoch
        data = checkpoint(epoch)
        t.last.write_bytes(data)
        t.best.write_bytes(data)
        w.on_model_save(t)
    w.finish_copy()
    return t, w


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:  # in place, as a writer that bypasses AtomicPath would
        f.truncate(os.path.getsize(path) // 3)


def garbage(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(os.urandom(os.path.getsize(path)))


DAMAGE = {"truncated": truncate, "overwritten with garbage": garbage, "deleted": os.unlink}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_the_verified_copy_is_a_file_of_its_own_that_no_damage_to_last_or_best_pt_reaches(spec, damage):
    t, _ = ultralytics_saves(spec)
    verified = Path(spec.verified)
    inode = os.stat(verified).st_ino
    assert inode not in (os.stat(t.last).st_ino, os.stat(t.best).st_ino)
    copy = verified.read_bytes()
    assert copy == t.last.read_bytes() == t.best.read_bytes()
    for path in (t.last, t.best):
        DAMAGE[damage](path)
        assert verified.read_bytes() == copy and zip_damage(verified) is None
    assert os.stat(verified).st_ino == inode
    assert checkpoint_state(verified) == (RESUMABLE, {"epoch": 0, "epochs": 3, "epochs_done": 1})


class FakeRTDETR:
    """Ultralytics' RTDETR as child.train uses it, recording what it was asked to do."""

    made: list = []

    def __init__(self, source):
        self.source, self.callbacks, self.train_kwargs = source, [], None
        FakeRTDETR.made.append(self)

    def add_callback(self, event, fn):
        self.callbacks.append(event)

    def train(self, **kwargs):
        self.train_kwargs = kwargs


@pytest.fixture
def fake_rtdetr(monkeypatch):
    import ultralytics
    FakeRTDETR.made = []
    monkeypatch.setattr(ultralytics, "RTDETR", FakeRTDETR)
    monkeypatch.setenv(ENV_PRETRAINED_BACKBONE, "1")  # child.train sets it for a resume; restored after
    return FakeRTDETR.made


def mixed_pages(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2 // 4096 * 4096
    data[mid:mid + 4096] = bytes(4096)  # a page of the save that never reached the disk (a power cut)
    path.write_bytes(bytes(data))


TORN = {**DAMAGE, "mixing pages of two saves": mixed_pages}


@pytest.mark.parametrize("damage", list(TORN))
def test_a_damaged_last_pt_is_kept_aside_and_training_resumes_from_the_verified_copy(spec, damage, fake_rtdetr,
                                                                                  capsys):
    t, w = ultralytics_saves(spec, epochs=2)  # epochs 1 and 2 saved; the verified copy holds epoch 1
    verified = Path(spec.verified)
    copy = verified.read_bytes()
    assert checkpoint_state(verified) == (RESUMABLE, {"epoch": 0, "epochs": 3, "epochs_done": 1})
    assert checkpoint_state(t.last) == (RESUMABLE, {"epoch": 1, "epochs": 3, "epochs_done": 2})
    TORN[damage](t.last)
    torn = t.last.read_bytes() if t.last.exists() else None
    assert checkpoint_state(t.last)[0] == (NONE if torn is None else UNLOADABLE)

    result = child.train(spec, Watch(spec))

    weights = t.last.parent
    assert result["last"] == str(t.last)
    assert t.last.read_bytes() == copy and not os.path.samefile(t.last, verified)  # a copy, not the copy itself
    assert checkpoint_state(t.last) == (RESUMABLE, {"epoch": 0, "epochs": 3, "epochs_done": 1})  # epochs kept
    aside = sorted(weights.glob("last.pt.torn-*"))
    assert [p.read_bytes() for p in aside] == ([] if torn is None else [torn])  # kept, never deleted
    [model] = fake_rtdetr
    assert model.source == str(t.last) and model.train_kwargs["resume"] is True
    assert model.train_kwargs["batch"] == 4 and model.train_kwargs["save_dir"] == spec.save_dir
    assert "on_model_save" in model.callbacks
    out = capsys.readouterr().out
    assert "resuming from the verified copy" in out
    assert os.environ[ENV_PRETRAINED_BACKBONE] == "0"  # the checkpoint holds every weight
    assert verified.read_bytes() == copy and not list(weights.glob(".*"))  # no temporary left


def test_a_whole_last_pt_is_resumed_as_it_is_not_from_the_older_verified_copy(spec, fake_rtdetr, capsys):
    t, _ = ultralytics_saves(spec, epochs=2)
    last = t.last.read_bytes()
    child.train(spec, Watch(spec))
    assert t.last.read_bytes() == last and not list(t.last.parent.glob("last.pt.torn-*"))
    assert fake_rtdetr[0].train_kwargs["resume"] is True
    assert "verified copy" not in capsys.readouterr().out


SAVE_SCRIPT = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from launcher.callbacks import AtomicPath
    how, writer, path, data_path = sys.argv[1:5]
    data = Path(data_path).read_bytes()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # Python ignores SIGXFSZ: the write past the limit fails (EFBIG) as on a full disk; by default
    # the kernel kills the process there
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN if how == "full disk" else signal.SIG_DFL)
    target = AtomicPath(path) if writer == "launcher" else Path(path)  # Path: Ultralytics' own save
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(data) // 2, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        target.write_bytes(data)
    except OSError as e:
        print("save failed:", e)
        sys.exit(3)
""")


def save_in_a_process_that_dies_mid_write(tmp_path: Path, how: str, writer: str, last: Path, data: bytes):
    """Save `data` to `last` in a process whose file writes stop half-way (RLIMIT_FSIZE): killed
    there by SIGXFSZ ("kill"), or the write failing as on a full disk ("full disk")."""
    (tmp_path / "new.bin").write_bytes(data)
    return subprocess.run([sys.executable, "-c", SAVE_SCRIPT, how, writer, str(last), str(tmp_path / "new.bin")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("how", ["kill", "full disk"])
def test_a_save_that_dies_mid_write_leaves_the_previous_whole_last_pt(tmp_path, spec, how):
    weights = tmp_path / "weights"
    weights.mkdir()
    last = weights / "last.pt"
    previous = checkpoint(0)
    last.write_bytes(previous)
    p = save_in_a_process_that_dies_mid_write(tmp_path, how, "launcher", last, checkpoint(1))
    if how == "kill":
        assert p.returncode == -signal.SIGXFSZ, p.stderr[-2000:]
    else:
        assert p.returncode == 3 and "File too large" in p.stdout, p.stdout + p.stderr[-2000:]
    assert last.read_bytes() == previous and zip_damage(last) is None
    left = sorted(x.name for x in weights.iterdir())
    assert left == (["last.pt"] if how == "full disk" else [".last.pt.tmp", "last.pt"])  # failed: removed
    Watch(spec).on_pretrain_routine_start(SimpleNamespace(last=last, best=weights / "best.pt",
                                                          device=torch.device("cpu")))
    assert sorted(x.name for x in weights.iterdir()) == ["last.pt"]  # killed: the next child removes it


def test_ultralytics_own_save_killed_mid_write_tears_last_pt(tmp_path):
    """What the launcher's saves prevent: the same kill during Path.write_bytes."""
    last = tmp_path / "last.pt"
    last.write_bytes(checkpoint(0))
    p = save_in_a_process_that_dies_mid_write(tmp_path, "kill", "ultralytics", last, checkpoint(1))
    assert p.returncode == -signal.SIGXFSZ
    assert zip_damage(last) is not None and checkpoint_state(last)[0] == UNLOADABLE


STRIP_SCRIPT = textwrap.dedent("""
    import sys, torch
    from launcher.callbacks import use_strip_by_rename
    from ultralytics.engine import trainer
    last, best = sys.argv[1:3]
    for f in (last, best):
        torch.save({"epoch": 2, "model": torch.nn.Linear(4, 4), "ema": None, "optimizer": {"state": {}},
                    "train_args": {"epochs": 3}, "train_results": None}, f)
    use_strip_by_rename()
    ckpt = trainer.strip_optimizer(last)  # as final_eval calls it
    trainer.strip_optimizer(best, updates={"train_results": ckpt.get("train_results")})
""")


def test_the_final_strip_prints_the_real_file_names_never_the_launchers_temporaries(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    last, best = weights / "last.pt", weights / "best.pt"
    p = subprocess.run([sys.executable, "-c", STRIP_SCRIPT, str(last), str(best)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-2000:]
    lines = [line for line in out.splitlines() if "Optimizer stripped from" in line]
    assert len(lines) == 2 and lines[0].startswith(f"Optimizer stripped from {last}, ") and lines[0].endswith("MB")
    assert lines[1].startswith(f"Optimizer stripped from {best}, ")
    assert "/." not in out and ".strip" not in out and "saved as" not in out
    assert torch.load(last, weights_only=False)["epoch"] == -1 and torch.load(best, weights_only=False)["epoch"] == -1
    assert sorted(x.name for x in weights.iterdir()) == ["best.pt", "last.pt"]
