"""The child's callbacks on their own: the halving switch (against a real Ultralytics trainer), the
heartbeat, injections, saves by rename, the verified copy's refreshes, and that DDP can cloudpickle
them to the ranks. tests/test_saves.py: what the saves survive."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import pytest
import torch

from launcher import callbacks
from launcher.callbacks import AtomicPath, InjectedCrash, Watch, keep_verified_copy, strip_by_rename
from launcher.checkpoint import zip_damage
from launcher.child import FINAL_VAL_OWED, FINISHED, RESUMABLE, UNLOADABLE, checkpoint_state
from launcher.contract import CHILD_FAILED, CUDA_OOM, Report, Spec
from launcher.failures import classify

from conftest import FIXTURES


@pytest.fixture
def spec(tmp_path):
    return Spec(heartbeat=str(tmp_path / "hb.json"), verified=str(tmp_path / "v" / "last.pt"), rung="optimal",
                attempt=1, threads=None, cleanup_every=2, train_args={"epochs": 3},
                inject=[{"kind": "cuda_oom", "rung": "optimal", "epoch": 2, "phase": "train"},
                        {"kind": "crash", "rung": "optimal", "epoch": 1, "phase": "val"},
                        {"kind": "cuda_oom", "rung": "safe", "epoch": 1, "phase": "train"}])


def trainer(epoch=0, start_epoch=0):
    return SimpleNamespace(epoch=epoch, start_epoch=start_epoch, epochs=3, train_loader=[0] * 5, stop=False,
                           _oom_retries=0, last=Path("/nonexistent/last.pt"), best=Path("/nonexistent/best.pt"))


def checkpoint(epoch: int) -> bytes:
    """A torch.save zip container, as Ultralytics' save_model serializes one."""
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "model": None, "pad": torch.full((1000,), float(epoch))}, buf)
    return buf.getvalue()


def saving(tmp_path: Path, epochs: int = 3) -> SimpleNamespace:
    """A trainer at its first epoch whose saves go through AtomicPath, as the child sets them up."""
    return SimpleNamespace(last=AtomicPath(tmp_path / "last.pt"), best=AtomicPath(tmp_path / "best.pt"), epoch=0,
                           epochs=epochs, stop=False)


def save(path: Path, epoch: int) -> bytes:
    """What Ultralytics' save_model does: torch.save to a buffer, then path.write_bytes."""
    data = checkpoint(epoch)
    path.write_bytes(data)
    return data


# ---- the halving switch, the heartbeat, injections ----------------------------------------------

def test_epoch_start_writes_the_heartbeat(spec, tmp_path):
    w = Watch(spec)
    w.on_train_epoch_start(trainer(epoch=1))
    hb = json.loads((tmp_path / "hb.json").read_text())
    assert (hb["phase"], hb["epoch"], hb["batches"], hb["rung"]) == ("train", 2, 5, "optimal")


@pytest.mark.slow
def test_an_oom_in_the_first_epoch_of_a_real_training_ends_it_without_ultralytics_halving_the_batch(tmp_path):
    """The real child, real Ultralytics training on the CPU: a torch.OutOfMemoryError raised in the
    model's forward pass (--inject) in epoch 1, where Ultralytics would halve the batch and retry,
    ends the training and the child reports cuda_oom: the ladder is the one authority on batch."""
    from launcher.demo import make_dataset
    data = make_dataset(tmp_path / "shapes", train=8, val=4, size=64, max_boxes=2)
    spec = {"run": "t", "attempt": 1, "rung": "optimal", "mode": "train",
            "inject": [{"kind": CUDA_OOM, "rung": "optimal", "epoch": 1, "phase": "train"}],
            "train_args": {"model": str(FIXTURES / "models" / "rtdetr-tiny.yaml"), "data": str(data), "epochs": 2,
                           "batch": 4, "imgsz": 64, "workers": 0, "cache": False, "device": "cpu",
                           "save_dir": str(tmp_path / "models" / "tiny"), "exist_ok": True, "rect": False},
            "extra_args": {"plots": False}, "threads": 1, "vram_fraction": None, "vram_limit_bytes": None,
            "cleanup_every": 0, "register": None, "verified": str(tmp_path / "checkpoints" / "tiny" / "last.pt"),
            "report": str(tmp_path / "report.json"), "heartbeat": str(tmp_path / "heartbeat.json")}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "YOLO_AUTOINSTALL": "False", "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "launcher.child", str(tmp_path / "spec.json")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == CHILD_FAILED, out[-3000:]
    assert "injected by the launcher" in out  # the injection fired: the OOM happened in epoch 1
    assert "Reducing to batch" not in out  # Ultralytics' halving (engine/trainer.py) never caught it
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["exc_type"] == "torch.OutOfMemoryError"  # it propagated out of model.train
    assert (report["phase"], report["epoch"], report["epochs_saved"]) == ("train", 1, 0)
    assert classify(report=Report.from_json(report)).kind == CUDA_OOM


def test_only_this_rungs_injections_fire_in_their_phase_and_epoch(spec):
    w = Watch(spec)
    assert len(w.injections) == 2
    model = type("RTDETRDetectionModel", (torch.nn.Module,), {})()
    w.phase, w.epoch = "train", 1
    w.forward_pre_hook(model, ())  # nothing at epoch 1 in train
    w.forward_pre_hook(torch.nn.Linear(1, 1), ())  # nor inside other modules
    w.epoch = 2
    with pytest.raises(torch.OutOfMemoryError, match="injected by the launcher"):
        w.forward_pre_hook(model, ())
    w.phase, w.epoch = "val", 1
    with pytest.raises(InjectedCrash):
        w.forward_pre_hook(model, ())


def test_cleanup_every_n_batches(spec, monkeypatch):
    w = Watch(spec)
    calls = []
    monkeypatch.setattr(w, "cleanup", lambda: calls.append(w.batches_seen))
    w.on_train_epoch_start(trainer())
    for _ in range(5):
        w.on_train_batch_end(trainer())
    assert calls == [2, 4]
    assert w.first_batch_ts is not None and w.it_s > 0


def test_last_epoch_moves_to_final_phase(spec):
    w = Watch(spec)
    w.phase = "val"
    w.on_fit_epoch_end(trainer(epoch=1))
    assert w.phase == "val"
    w.on_fit_epoch_end(trainer(epoch=2))
    assert w.phase == "final"


def test_callbacks_survive_cloudpickle_also_after_a_verified_copy(spec, tmp_path):
    w = Watch(spec)
    clone = cloudpickle.loads(cloudpickle.dumps(w.on_train_epoch_start))
    t = trainer()
    clone(t)
    assert t._oom_retries == 3
    s = saving(tmp_path)
    save(s.last, 1)
    w.on_model_save(s)
    w.finish_copy()
    assert w._copier is None  # no thread kept between saves
    assert cloudpickle.loads(cloudpickle.dumps(w)).last_saved_epoch == 1


def test_every_ddp_rank_caps_its_own_gpu_once(spec, monkeypatch):
    capped = []
    monkeypatch.setattr(callbacks, "cap_vram", lambda index, fraction, limit: capped.append((os.getpid(), index)))
    w = Watch(replace(spec, vram_fraction=0.5))
    gpu = SimpleNamespace(device=torch.device("cuda", 1), epochs=3, start_epoch=0)
    w.on_train_start(gpu)  # a rank > 0: no on_pretrain_routine_start there
    w.on_train_start(gpu)
    assert capped == [(os.getpid(), 1)]
    rank = cloudpickle.loads(cloudpickle.dumps(w))
    rank._capped_pid = -1  # as if pickled in the parent and loaded in another process
    rank.on_pretrain_routine_start(SimpleNamespace(device=torch.device("cuda", 0), last=Path("l"), best=Path("b")))
    assert capped[-1] == (os.getpid(), 0)


class Allocator:
    """torch's caching allocator as the peaks see it: a stand-in for cuda_peaks and cuda_reset_peaks."""

    def __init__(self):
        self.allocated = self.reserved = self.peak_allocated = self.peak_reserved = 0
        self.resets = 0

    def use(self, transient: int, kept: int, reserved: int) -> None:
        """Allocate up to `transient` bytes, keep `kept`; the cache grows to `reserved` and stays."""
        self.peak_allocated = max(self.peak_allocated, transient)
        self.reserved = max(self.reserved, reserved)
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        self.allocated = kept

    def peaks(self) -> dict:
        return {"reserved": self.peak_reserved, "allocated": self.peak_allocated}

    def reset(self) -> None:
        self.resets += 1
        self.peak_allocated, self.peak_reserved = self.allocated, self.reserved


def test_the_report_has_the_allocators_peaks_by_phase_and_the_whole_processs(spec, monkeypatch):
    """tests/gpu/tune.sh holds a trial's training and validation peaks against a full epoch's: the
    night's report keeps torch's peaks per phase (reset between them), and its whole-process peaks
    stay the largest of them. A trial's Watch never resets the peaks its Measure reads."""
    from launcher.child import peak_memory

    a = Allocator()
    w = Watch(replace(spec, train_args={"epochs": 2}))
    w.read_peaks, w.reset_peaks = a.peaks, a.reset
    val = SimpleNamespace(dataloader=None)
    a.use(3, 3, 4)  # setup: the model on the GPU
    for epoch, (train, validation) in enumerate([((10, 12), (7, 12)), ((11, 13), (8, 13))]):
        t = trainer(epoch=epoch)
        t.epochs = 2
        w.on_train_epoch_start(t)
        a.use(train[0], 4, train[1])
        w.on_train_epoch_end(t)
        w.on_val_start(val)
        a.use(validation[0], 4, validation[1])
        w.on_fit_epoch_end(t)
    assert w.phase == "final"
    w.on_val_start(val)  # final_eval: best.pt's validation
    a.use(9, 4, 13)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: a.peak_allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda: a.peak_reserved)
    report = Report(ok=True, **peak_memory(w))
    assert report.vram_peaks == {"train": {"reserved": 13, "allocated": 11}, "val": {"reserved": 13, "allocated": 8},
                                 "final": {"reserved": 13, "allocated": 9}}
    assert (report.peak_vram_bytes, report.peak_vram_reserved_bytes) == (11, 13)
    assert Report.from_json(report.to_json()).vram_peaks == report.vram_peaks

    trial = Watch(replace(spec, mode="trial"))
    trial.read_peaks, trial.reset_peaks = a.peaks, a.reset
    resets = a.resets
    trial.phase = "val"
    trial.on_val_start(val)
    assert "vram_peaks" not in peak_memory(trial) and a.resets == resets


# ---- checks before a resume ---------------------------------------------------------------------

def test_a_resume_refuses_a_checkpoint_that_mixes_pages_which_torch_load_would_take(tmp_path):
    last = tmp_path / "last.pt"
    weights = torch.arange(100_000, dtype=torch.float32)
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}, "train_args": {"epochs": 5}, "model": weights}, last)
    assert zip_damage(last) is None and checkpoint_state(last) == (RESUMABLE, {"epoch": 3, "epochs": 5,
                                                                                "epochs_done": 4})
    data = bytearray(last.read_bytes())
    page = data.find(weights[20_000:21_024].numpy().tobytes()) // 4096 * 4096
    data[page:page + 4096] = bytes(4096)  # a page of the save that never reached the disk (a power cut)
    last.write_bytes(bytes(data))
    assert not torch.equal(torch.load(last)["model"], weights)  # torch.load takes it, with wrong weights
    state, facts = checkpoint_state(last)
    assert state == UNLOADABLE and "Bad CRC-32" in facts["error"]
    last.write_bytes(bytes(data[: len(data) // 2]))  # cut short
    assert checkpoint_state(last)[0] == UNLOADABLE


@pytest.mark.parametrize("epoch, optimizer, state", [
    (3, {"lr": 0.1}, RESUMABLE),        # epochs done 4 of 5: one more to train
    (4, {"lr": 0.1}, FINAL_VAL_OWED),   # epochs done 5 of 5, not finalised: only the final validation
    (4, None, RESUMABLE),               # no optimizer: not a save Ultralytics' own last epoch makes
    (-1, None, FINISHED),               # finalised by Ultralytics (epoch -1, optimizer stripped)
])
def test_the_checkpoint_state_at_the_last_epoch(tmp_path, epoch, optimizer, state):
    # the boundary "final validation owed" turns on (epoch + 1 >= epochs), fast: a slow e2e test
    # alone caught its off-by-one
    last = tmp_path / "last.pt"
    torch.save({"epoch": epoch, "optimizer": optimizer, "train_args": {"epochs": 5}}, last)
    assert checkpoint_state(last)[0] == state


def test_a_checkpoint_saved_without_crcs_is_not_called_damaged(tmp_path):
    last = tmp_path / "last.pt"
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"epoch": 0, "model": torch.ones(1000)}, last)
    finally:
        torch.serialization.set_crc32_options(before)
    assert zip_damage(last) is None


# ---- saves by rename ----------------------------------------------------------------------------

def test_pretrain_routine_makes_ultralytics_save_by_rename_and_removes_stale_temporaries(spec, tmp_path):
    w = Watch(spec)
    weights = tmp_path / "w"
    weights.mkdir()
    (tmp_path / "v").mkdir()
    stale = [weights / ".last.pt.tmp", weights / ".best.pt.tmp", weights / ".last.pt.strip",
             tmp_path / "v" / ".last.pt.tmp"]  # left by a child killed mid-write (a save, the strip, a copy)
    kept = [weights / ".last.pt.mine", weights / "last.pt.torn-20240101-000000"]  # not the launcher's temporaries
    for p in stale + kept:
        p.write_bytes(b"PK partial")
    t = SimpleNamespace(last=weights / "last.pt", best=weights / "best.pt", device=torch.device("cpu"))
    w.on_pretrain_routine_start(t)
    assert isinstance(t.last, AtomicPath) and isinstance(t.best, AtomicPath)
    assert t.last == weights / "last.pt" and t.best == weights / "best.pt"
    assert [p.exists() for p in stale] == [False] * 4 and all(p.exists() for p in kept)
    data = checkpoint(1)
    t.last.write_bytes(data)
    assert (weights / "last.pt").read_bytes() == data


def test_atomic_path_writes_a_new_file_each_save_and_renames_it_into_place(tmp_path):
    last = AtomicPath(tmp_path / "last.pt")
    save(last, 1)
    kept = tmp_path / "kept.pt"
    os.link(last, kept)  # a name that still holds epoch 1's file
    two = save(last, 2)
    assert torch.load(kept)["epoch"] == 1 and last.read_bytes() == two  # epoch 1's file never written into
    assert not os.path.samefile(kept, last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt", "last.pt"]  # no temporary left


def test_a_save_that_fails_mid_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    last = AtomicPath(tmp_path / "last.pt")
    before = save(last, 1)
    real_open = open

    class FullDisk(io.FileIO):
        def write(self, b):
            super().write(bytes(b)[:4096])  # part of it reaches the disk, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

    def opener(file, mode="r", *args, **kwargs):
        return FullDisk(file, mode.replace("b", "")) if str(file).endswith(".tmp") else real_open(file, mode, *args,
                                                                                                   **kwargs)
    monkeypatch.setattr("builtins.open", opener)
    with pytest.raises(OSError, match="No space left"):
        last.write_bytes(checkpoint(2))
    monkeypatch.undo()
    assert last.read_bytes() == before  # the previous whole file, not a truncated one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the partial temporary removed


# ---- the verified copy --------------------------------------------------------------------------

def test_verified_copy_takes_only_checkpoints_that_check_out(tmp_path, capsys):
    good = tmp_path / "last.pt"
    torch.save({"epoch": 0, "model": None, "weights": torch.zeros(1000)}, good)
    dest = tmp_path / "v" / "last.pt"
    data = good.read_bytes()
    assert keep_verified_copy(data, dest, good) and dest.read_bytes() == data
    assert not keep_verified_copy(data[: len(data) // 2], dest, good)  # torn
    flipped = bytearray(data)
    flipped[data.find(b"\0" * 2000) + 1000] ^= 0xFF  # one damaged byte in the tensor's storage: its CRC fails
    assert not keep_verified_copy(bytes(flipped), dest, good)
    assert dest.read_bytes() == data  # never a damaged file over a good one
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and all(line.startswith(f"launcher: {good} did not check out") for line in out)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["last.pt"]


def test_a_failing_verified_copy_write_prints_one_line_keeps_the_previous_copy_and_no_partial_file(
        spec, tmp_path, monkeypatch, capsys):
    w = Watch(replace(spec, verified_every_s=0))  # a refresh at every save
    verified = tmp_path / "v" / "last.pt"
    t = saving(tmp_path, epochs=5)
    first = save(t.last, 1)
    w.on_model_save(t)
    w.finish_copy()
    assert verified.read_bytes() == first
    written = []

    def full(fd):  # the data was written; flushing it finds the disk full
        written.append(os.fstat(fd).st_size)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(callbacks.os, "fsync", full)
    t.epoch = 1
    save(t.last, 2)
    w.on_model_save(t)
    w.finish_copy()
    monkeypatch.undo()
    assert written and written[0] > 0  # there was a partial file
    assert verified.read_bytes() == first and sorted(p.name for p in verified.parent.iterdir()) == ["last.pt"]
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.startswith("launcher:")]
    assert len(lines) == 1 and "could not write the verified copy" in lines[0] and "No space left" in lines[0]
    assert "Traceback" not in captured.err and "Exception in thread" not in captured.err
    w.verified_every_s = 600  # not due by time: a failed refresh is tried again at the next save
    t.epoch = 2
    third = save(t.last, 3)
    w.on_model_save(t)
    w.finish_copy()
    assert verified.read_bytes() == third


def test_model_save_copies_in_a_thread_as_a_file_of_its_own(spec, tmp_path):
    w = Watch(spec)
    t = saving(tmp_path)
    data = save(t.last, 1)
    w.on_model_save(t)
    assert w._copier is not None  # started, not waited for
    w.finish_copy()
    verified = tmp_path / "v" / "last.pt"
    assert verified.read_bytes() == data and w.last_saved_epoch == 1
    assert not os.path.samefile(verified, t.last)
    assert sorted(p.name for p in verified.parent.iterdir()) == ["last.pt"]


def test_a_save_that_is_not_a_whole_checkpoint_is_not_copied(spec, tmp_path, capsys):
    w = Watch(replace(spec, verified_every_s=0))
    verified = tmp_path / "v" / "last.pt"
    t = saving(tmp_path)
    good = save(t.last, 1)
    w.on_model_save(t)
    t.last.write_bytes(good[: len(good) // 2])  # somehow incomplete
    t.epoch = 1
    w.on_model_save(t)
    w.finish_copy()
    assert verified.read_bytes() == good and "did not check out" in capsys.readouterr().out


def test_verified_copy_is_refreshed_at_the_first_save_then_only_when_due_and_at_the_end(spec, tmp_path):
    w = Watch(spec)  # the default: at most every VERIFIED_EVERY_S
    assert w.verified_every_s == callbacks.VERIFIED_EVERY_S == 600
    verified = tmp_path / "v" / "last.pt"
    t = saving(tmp_path, epochs=5)
    first = save(t.last, 1)
    w.on_model_save(t)
    w.finish_copy()
    assert verified.read_bytes() == first
    for epoch in (1, 2):  # not due: the verified copy stays at epoch 1
        t.epoch = epoch
        save(t.last, epoch + 1)
        w.on_model_save(t)
        w.finish_copy()
        assert verified.read_bytes() == first and w.last_saved_epoch == epoch + 1
    w._t_verified -= 600  # ten minutes later
    t.epoch = 3
    fourth = save(t.last, 4)
    w.on_model_save(t)
    w.finish_copy()
    assert verified.read_bytes() == fourth
    t.epoch = 4  # the last epoch, not due by time: refreshed all the same
    last = save(t.last, 5)
    w.on_model_save(t)
    w.on_fit_epoch_end(t)  # waits for it
    assert w._copier is None and verified.read_bytes() == last


def test_verified_every_s_sets_the_interval(spec, tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(callbacks.time, "monotonic", lambda: clock[0])
    w = Watch(replace(spec, verified_every_s=30))
    verified = tmp_path / "v" / "last.pt"
    t = saving(tmp_path, epochs=9)
    copied = []
    for epoch, elapsed in enumerate((0, 20, 9, 2, 40)):  # seconds since the previous save
        clock[0] += elapsed
        t.epoch = epoch
        data = save(t.last, epoch + 1)
        w.on_model_save(t)
        w.finish_copy()
        if verified.read_bytes() == data:
            copied.append(epoch + 1)
    assert copied == [1, 4, 5]  # the first save, then 31 s and 40 s after the previous refresh


# ---- the final strip ----------------------------------------------------------------------------

def fake_strip(f="best.pt", s="", updates=None):
    """What Ultralytics' strip_optimizer does to the file: torch.save over `s or f`."""
    ckpt = torch.load(f)
    torch.save({**ckpt, "epoch": -1, **(updates or {})}, s or f)
    return ckpt


def test_strip_by_rename_writes_a_new_file_and_a_failed_strip_tears_nothing(tmp_path):
    last = tmp_path / "last.pt"
    torch.save({"epoch": 4}, last)
    kept = tmp_path / "kept.pt"
    os.link(last, kept)  # a name that still holds the file before the strip
    strip = strip_by_rename(fake_strip)
    assert strip(last)["epoch"] == 4
    assert torch.load(last)["epoch"] == -1 and torch.load(kept)["epoch"] == 4  # renamed over, not written into
    assert strip_by_rename(strip) is strip  # wrapped once, however often the callback runs

    def failing(f, s="", updates=None):
        Path(s).write_bytes(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        strip_by_rename(failing)(last)
    assert torch.load(last)["epoch"] == -1  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt", "last.pt"]  # no partial file


def test_strip_by_rename_leaves_a_file_ultralytics_skips_alone(tmp_path):
    """strip_optimizer returns {} without saving anything for a file that is no checkpoint."""
    f = tmp_path / "last.pt"
    f.write_bytes(b"not a checkpoint")
    assert strip_by_rename(lambda f, s="", updates=None: {})(f) == {}
    assert f.read_bytes() == b"not a checkpoint"


def test_pretrain_routine_makes_ultralytics_final_eval_strip_by_rename(spec, tmp_path, monkeypatch):
    from ultralytics.engine import trainer as trainer_module
    from ultralytics.utils import torch_utils
    monkeypatch.setattr(trainer_module, "strip_optimizer", torch_utils.strip_optimizer)
    t = SimpleNamespace(last=tmp_path / "last.pt", best=tmp_path / "best.pt", device=torch.device("cpu"))
    Watch(spec).on_pretrain_routine_start(t)
    assert getattr(trainer_module.strip_optimizer, "by_rename", False)
