"""The child's callbacks on their own: the halving switch, the heartbeat, injections, verified
copies, and that DDP can cloudpickle them to the ranks."""

from __future__ import annotations

import json
from types import SimpleNamespace

import cloudpickle
import pytest
import torch

from launcher.callbacks import InjectedCrash, Watch, keep_verified_copy


@pytest.fixture
def spec(tmp_path):
    return {"heartbeat": str(tmp_path / "hb.json"), "verified": str(tmp_path / "v" / "last.pt"), "rung": "optimal",
            "attempt": 1, "threads": None, "cleanup_every": 2, "train_args": {"epochs": 3},
            "inject": [{"kind": "cuda_oom", "rung": "optimal", "epoch": 2, "phase": "train"},
                       {"kind": "crash", "rung": "optimal", "epoch": 1, "phase": "val"},
                       {"kind": "cuda_oom", "rung": "safe", "epoch": 1, "phase": "train"}]}


def trainer(epoch=0, start_epoch=0):
    return SimpleNamespace(epoch=epoch, start_epoch=start_epoch, epochs=3, train_loader=[0] * 5, stop=False,
                           _oom_retries=0)


def test_epoch_start_turns_ultralytics_halving_off_and_beats(spec, tmp_path):
    w = Watch(spec)
    t = trainer(epoch=1)
    w.on_train_epoch_start(t)
    assert t._oom_retries == 3  # _do_train re-raises an OOM once its retry budget is spent
    hb = json.loads((tmp_path / "hb.json").read_text())
    assert (hb["phase"], hb["epoch"], hb["batches"], hb["rung"]) == ("train", 2, 5, "optimal")


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


def test_callbacks_survive_cloudpickle(spec):
    w = Watch(spec)
    clone = cloudpickle.loads(cloudpickle.dumps(w.on_train_epoch_start))
    t = trainer()
    clone(t)
    assert t._oom_retries == 3


def test_verified_copy_takes_only_loadable_checkpoints(tmp_path):
    good = tmp_path / "last.pt"
    torch.save({"epoch": 0, "model": None, "weights": torch.zeros(1000)}, good)
    dest = tmp_path / "v" / "last.pt"
    assert keep_verified_copy(good, dest) and dest.read_bytes() == good.read_bytes()
    data = good.read_bytes()
    before = dest.read_bytes()
    good.write_bytes(data[: len(data) // 2])  # torn
    assert not keep_verified_copy(good, dest)
    flipped = bytearray(data)
    flipped[data.find(b"\0" * 2000) + 1000] ^= 0xFF  # one damaged byte in the tensor's storage: its CRC fails
    good.write_bytes(bytes(flipped))
    assert not keep_verified_copy(good, dest)
    assert dest.read_bytes() == before  # never a damaged file over a good one


def test_model_save_copies_off_the_training_path(spec, tmp_path):
    w = Watch(spec)
    last = tmp_path / "last.pt"
    torch.save({"epoch": 1, "model": None, "pad": torch.zeros(1000)}, last)
    w.on_model_save(SimpleNamespace(last=last, epoch=0))
    w.finish_copy()
    assert (tmp_path / "v" / "last.pt").read_bytes() == last.read_bytes() and w.last_saved_epoch == 1
