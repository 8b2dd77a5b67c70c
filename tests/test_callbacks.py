"""The child's callbacks on their own: the halving switch, the heartbeat, injections, verified
copies, and that DDP can cloudpickle them to the ranks."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from types import SimpleNamespace

import cloudpickle
import pytest
import torch

from launcher import callbacks
from launcher.callbacks import (AtomicPath, InjectedCrash, Watch, drop_cache, keep_verified_copy, strip_by_rename,
                                zip_damage)
from launcher.child import RESUMABLE, UNLOADABLE, checkpoint_state


@pytest.fixture
def spec(tmp_path):
    return {"heartbeat": str(tmp_path / "hb.json"), "verified": str(tmp_path / "v" / "last.pt"), "rung": "optimal",
            "attempt": 1, "threads": None, "cleanup_every": 2, "train_args": {"epochs": 3},
            "inject": [{"kind": "cuda_oom", "rung": "optimal", "epoch": 2, "phase": "train"},
                       {"kind": "crash", "rung": "optimal", "epoch": 1, "phase": "val"},
                       {"kind": "cuda_oom", "rung": "safe", "epoch": 1, "phase": "train"}]}


def trainer(epoch=0, start_epoch=0):
    return SimpleNamespace(epoch=epoch, start_epoch=start_epoch, epochs=3, train_loader=[0] * 5, stop=False,
                           _oom_retries=0, last=Path("/nonexistent/last.pt"), best=Path("/nonexistent/best.pt"))


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


def test_a_checkpoint_saved_without_crcs_is_not_called_damaged(tmp_path):
    last = tmp_path / "last.pt"
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"epoch": 0, "model": torch.ones(1000)}, last)
    finally:
        torch.serialization.set_crc32_options(before)
    assert zip_damage(last) is None


def test_model_save_copies_off_the_training_path(spec, tmp_path):
    w = Watch(spec)
    last = tmp_path / "last.pt"
    torch.save({"epoch": 1, "model": None, "pad": torch.zeros(1000)}, last)
    w.on_model_save(SimpleNamespace(last=last, epoch=0, epochs=3, stop=False))
    w.finish_copy()
    assert (tmp_path / "v" / "last.pt").read_bytes() == last.read_bytes() and w.last_saved_epoch == 1


def saving(tmp_path: Path, epochs: int = 3) -> SimpleNamespace:
    """A trainer at its first epoch whose saves go through AtomicPath, as the child sets them up."""
    return SimpleNamespace(last=AtomicPath(tmp_path / "last.pt"), best=AtomicPath(tmp_path / "best.pt"), epoch=0,
                           epochs=epochs, stop=False)


def save(path: Path, epoch: int) -> bytes:
    """What Ultralytics' save_model does: torch.save to a buffer, then path.write_bytes."""
    import io
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "model": None, "pad": torch.full((1000,), float(epoch))}, buf)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_atomic_path_replaces_whole_files_and_leaves_nothing_behind_on_failure(tmp_path):
    last = AtomicPath(tmp_path / "last.pt")
    save(last, 1)
    inode = last.stat().st_ino
    save(last, 2)
    assert last.stat().st_ino != inode  # a new file each save: a hard link to the old one keeps it
    before = last.read_bytes()
    with pytest.raises(TypeError):
        last.write_bytes(object())  # fails mid-save, as a full disk would
    assert last.read_bytes() == before  # the previous whole file, not a truncated one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert isinstance(last.parent / "best.pt", Path)


def test_atomic_path_rewrites_the_replaced_file_in_place_unless_another_name_links_it(spec, tmp_path, monkeypatch):
    dropped = []
    monkeypatch.setattr(callbacks, "drop_cache", lambda path: (dropped.append(path), drop_cache(path)))
    last = AtomicPath(tmp_path / "last.pt")
    save(last, 1)
    one = last.stat().st_ino
    save(last, 2)
    assert last.spare.stat().st_ino == one  # the replaced version is the next save's spare
    save(last, 3)
    assert last.stat().st_ino == one  # written into the spare in place, then renamed
    kept = tmp_path / "kept.pt"
    os.link(last, kept)  # as the verified copy links it
    save(last, 4)
    assert dropped == []
    save(last, 5)  # the spare is epoch 3's file, which kept.pt still names: never written into
    assert torch.load(kept)["epoch"] == 3 and torch.load(last)["epoch"] == 5
    assert dropped == [os.fspath(last.spare)]  # its cached pages were dropped for the new file, not its data
    spare = last.spare.stat().st_ino
    short = b"PK short checkpoint"
    assert last.write_bytes(short) == len(short)  # into the longer spare, without truncating it first
    assert last.stat().st_ino == spare and last.read_bytes() == short  # and no tail of the older file
    w = Watch(spec)
    w.on_train_end(SimpleNamespace(last=last, best=AtomicPath(tmp_path / "best.pt")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hb.json", "kept.pt", "last.pt"]  # no spare left


def ultralytics_save(trainer, epoch: int, best: bool) -> bytes:
    """What Ultralytics' save_model does: one serialized checkpoint, written to last.pt, and the
    same bytes object to best.pt when the epoch is the best so far."""
    import io
    buf = io.BytesIO()
    torch.save({"epoch": epoch, "model": None, "pad": torch.full((1000,), float(epoch))}, buf)
    data = buf.getvalue()
    trainer.last.write_bytes(data)
    if best:
        trainer.best.write_bytes(data)
    return data


def test_best_pt_is_a_link_to_the_same_save_and_neither_file_is_ever_written_while_the_other_links_it(
        spec, tmp_path):
    w = Watch(spec)
    t = SimpleNamespace(last=tmp_path / "last.pt", best=tmp_path / "best.pt", device=torch.device("cpu"), epoch=0,
                        epochs=9, stop=False)
    w.on_pretrain_routine_start(t)  # as the child sets Ultralytics' trainer up
    assert t.best.twin is t.last
    ultralytics_save(t, 1, best=True)
    assert os.path.samefile(t.best, t.last)  # one write, two names
    one = t.last.stat().st_ino
    for epoch in (2, 3, 4):  # best.pt stays at epoch 1 while last.pt moves on
        ultralytics_save(t, epoch, best=False)
        assert torch.load(t.best)["epoch"] == 1 and torch.load(t.last)["epoch"] == epoch
    assert t.best.stat().st_ino == one  # epoch 1's file, never written into
    ultralytics_save(t, 5, best=True)
    assert os.path.samefile(t.best, t.last) and torch.load(t.best)["epoch"] == 5
    w.on_model_save(t)
    assert t.last._written is None and t.best._written is None  # the save's bytes are not held on to
    for epoch in (6, 7):
        ultralytics_save(t, epoch, best=epoch == 7)
    assert torch.load(t.best)["epoch"] == 7 and torch.load(t.last)["epoch"] == 7
    other = b"PK other bytes"
    t.best.write_bytes(other)  # not the bytes last.pt was just saved with: written, not linked
    assert t.best.read_bytes() == other and torch.load(t.last)["epoch"] == 7
    w.on_train_end(t)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "hb.json", "last.pt", "v"]  # no spare, no link


def test_best_pt_is_written_where_links_fail(tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(callbacks.os, "link", no_link)
    t = SimpleNamespace(last=AtomicPath(tmp_path / "last.pt"), best=AtomicPath(tmp_path / "best.pt"))
    t.best.twin = t.last
    for epoch in (1, 2):
        data = ultralytics_save(t, epoch, best=True)
        assert t.best.read_bytes() == data and not os.path.samefile(t.best, t.last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]


def test_pretrain_routine_makes_ultralytics_save_by_rename(spec, tmp_path):
    w = Watch(spec)
    t = SimpleNamespace(last=tmp_path / "w" / "last.pt", best=tmp_path / "w" / "best.pt",
                        device=torch.device("cpu"))
    w.on_pretrain_routine_start(t)
    assert isinstance(t.last, AtomicPath) and isinstance(t.best, AtomicPath)
    assert t.last == tmp_path / "w" / "last.pt" and t.best == tmp_path / "w" / "best.pt"


def test_verified_copy_is_a_hard_link_that_the_next_save_leaves_alone(spec, tmp_path):
    w = Watch({**spec, "verified_every_s": 0})  # refreshed at every save
    verified = tmp_path / "v" / "last.pt"
    t = saving(tmp_path, epochs=3)
    first = save(t.last, 1)
    w.on_model_save(t)
    w.finish_copy()
    assert os.path.samefile(verified, t.last) and w.last_saved_epoch == 1  # linked, not copied
    w.on_fit_epoch_end(t)
    assert os.path.samefile(verified, t.last)  # not the last epoch: stays a link
    t.epoch = 1
    second = save(t.last, 2)  # the next save is a new file: the verified copy still holds epoch 1
    assert verified.read_bytes() == first
    w.on_model_save(t)
    w.finish_copy()  # published (fsynced, renamed) by a thread
    assert verified.read_bytes() == second
    t.epoch = 2  # the last epoch: refreshed, then final_eval strips the optimizer (by rename)
    save(t.last, 3)
    w.on_model_save(t)
    w.on_fit_epoch_end(t)
    assert os.path.samefile(verified, t.last)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hb.json", "last.pt", "v"]  # no spare left
    strip_by_rename(fake_strip)(t.last)
    assert torch.load(verified)["epoch"] == 3 and torch.load(t.last)["epoch"] == -1


def test_a_save_that_is_not_a_whole_checkpoint_is_not_linked(spec, tmp_path, capsys):
    w = Watch(spec)
    verified = tmp_path / "v" / "last.pt"
    t = saving(tmp_path)
    good = save(t.last, 1)
    w.on_model_save(t)
    t.last.write_bytes(good[: len(good) // 2])  # somehow incomplete
    t.epoch = 1
    w.on_model_save(t)
    w.finish_copy()
    assert verified.read_bytes() == good and "did not check out" in capsys.readouterr().out


def test_verified_copy_falls_back_to_a_copy_where_links_fail(spec, tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(callbacks.os, "link", no_link)
    w = Watch(spec)
    t = saving(tmp_path)
    data = save(t.last, 1)
    w.on_model_save(t)
    w.finish_copy()
    verified = tmp_path / "v" / "last.pt"
    assert verified.read_bytes() == data and not os.path.samefile(verified, t.last)
    assert sorted(p.name for p in verified.parent.iterdir()) == ["last.pt"]


def test_every_ddp_rank_caps_its_own_gpu_once(spec, monkeypatch):
    capped = []
    monkeypatch.setattr(callbacks, "cap_vram", lambda index, fraction, limit: capped.append((os.getpid(), index)))
    w = Watch({**spec, "vram_fraction": 0.5})
    gpu = SimpleNamespace(device=torch.device("cuda", 1), epochs=3, start_epoch=0)
    w.on_train_start(gpu)  # a rank > 0: no on_pretrain_routine_start there
    w.on_train_start(gpu)
    assert capped == [(os.getpid(), 1)]
    rank = cloudpickle.loads(cloudpickle.dumps(w))
    rank._capped_pid = -1  # as if pickled in the parent and loaded in another process
    rank.on_pretrain_routine_start(SimpleNamespace(device=torch.device("cuda", 0), last=Path("l"), best=Path("b")))
    assert capped[-1] == (os.getpid(), 0)


def test_verified_copy_is_refreshed_at_the_first_save_then_only_when_due_and_at_the_end(spec, tmp_path):
    w = Watch(spec)  # the default: at most every VERIFIED_EVERY_S
    assert w.verified_every_s == callbacks.VERIFIED_EVERY_S == 600
    verified = tmp_path / "v" / "last.pt"
    t = saving(tmp_path, epochs=4)
    first = save(t.last, 1)
    w.on_model_save(t)
    w.finish_copy()
    assert verified.read_bytes() == first
    for epoch in (1, 2):  # not due: the verified copy stays at epoch 1, a file no save writes into
        t.epoch = epoch
        save(t.last, epoch + 1)
        w.on_model_save(t)
        w.finish_copy()
        assert verified.read_bytes() == first and w.last_saved_epoch == epoch + 1
    w._t_verified -= 600  # ten minutes later
    t.epoch = 2
    w.on_model_save(t)
    w.finish_copy()
    assert os.path.samefile(verified, t.last)
    t.epoch = 3  # the last epoch: always refreshed
    last = save(t.last, 4)
    w.on_model_save(t)
    w.on_fit_epoch_end(t)
    assert verified.read_bytes() == last and os.path.samefile(verified, t.last)


def fake_strip(f="best.pt", s="", updates=None):
    """What Ultralytics' strip_optimizer does to the file: torch.save over `s or f`."""
    ckpt = torch.load(f)
    torch.save({**ckpt, "epoch": -1, **(updates or {})}, s or f)
    return ckpt


def test_strip_by_rename_leaves_the_file_it_replaces_alone_and_a_failed_strip_tears_nothing(tmp_path):
    last = tmp_path / "last.pt"
    torch.save({"epoch": 4}, last)
    kept = tmp_path / "kept.pt"
    os.link(last, kept)  # the verified copy links it
    strip = strip_by_rename(fake_strip)
    assert strip(last)["epoch"] == 4
    assert torch.load(last)["epoch"] == -1 and torch.load(kept)["epoch"] == 4
    assert strip_by_rename(strip) is strip  # wrapped once, however often the callback runs

    def failing(f, s="", updates=None):
        Path(s).write_bytes(b"PK\x03\x04 half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        strip_by_rename(failing)(last)
    assert torch.load(last)["epoch"] == -1  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.pt", "last.pt"]


def test_pretrain_routine_makes_ultralytics_final_eval_strip_by_rename(spec, tmp_path, monkeypatch):
    from ultralytics.engine import trainer as trainer_module
    from ultralytics.utils import torch_utils
    monkeypatch.setattr(trainer_module, "strip_optimizer", torch_utils.strip_optimizer)
    t = SimpleNamespace(last=tmp_path / "last.pt", best=tmp_path / "best.pt", device=torch.device("cpu"))
    Watch(spec).on_pretrain_routine_start(t)
    assert getattr(trainer_module.strip_optimizer, "by_rename", False)


def test_a_failing_verified_copy_write_keeps_the_previous_copy_and_leaves_no_partial_file(tmp_path, monkeypatch):
    good = tmp_path / "last.pt"
    torch.save({"epoch": 0, "model": None}, good)
    dest = tmp_path / "v" / "last.pt"
    assert keep_verified_copy(good, dest)
    before = dest.read_bytes()
    torch.save({"epoch": 1, "model": None}, good)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(callbacks.os, "fsync", full)
    assert not keep_verified_copy(good, dest)
    assert dest.read_bytes() == before and sorted(p.name for p in dest.parent.iterdir()) == ["last.pt"]
