"""Learned rungs: verdicts noted per machine and job, read back by the next plan."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from launcher import cli, experience, ladder as ladder_mod, plan
from launcher.contract import Trial
from launcher.experience import HELD, OOM_EARLY, Experience

from conftest import ROOT
from helpers import FIXED, run, snap


@pytest.fixture
def default():
    return ladder_mod.load(ROOT / "ladders" / "default.toml")


@pytest.mark.parametrize("kind, phase, saved, verdict", [
    ("cuda_oom", "train", 0, OOM_EARLY), ("cuda_oom", "val", 0, OOM_EARLY),
    ("cuda_oom", "train", 2, HELD),  # a late OOM is a leak, not a verdict on the rung
    (None, None, 3, HELD), ("cuda_oom", "final", 0, None), ("unknown", "train", 0, None), ("hang", None, 0, None),
])
def test_verdicts(kind, phase, saved, verdict):
    assert experience.verdict(kind, phase, saved) == verdict


def test_the_newest_fresh_verdict_for_this_key_decides(tmp_path, default):
    key = experience.job_key(default, snap(24).gpus, snap(24))
    mine = Experience(tmp_path / "experience.json", key)
    other = Experience(mine.path, {**key, "gpu": "another card"})
    mine.note("optimal", OOM_EARLY, "night-1")
    other.note("optimal-b4", OOM_EARLY, "night-x")
    assert set(mine.avoid()) == {"optimal"} and "OOMed in its first epoch in run 'night-1'" in mine.avoid()["optimal"]
    mine.note("optimal", HELD, "night-2")  # it held since: no longer avoided
    assert mine.avoid() == {}
    mine.note("optimal", OOM_EARLY, "night-3")
    assert mine.avoid(now=datetime.now(timezone.utc) + timedelta(days=31)) == {}  # expired
    data = json.loads(mine.path.read_text())
    assert data["about"].endswith("safe to delete") and len(data["entries"]) == 4


def test_a_changed_ladder_or_version_does_not_match(default):
    s = snap(24)
    key = experience.job_key(default, s.gpus, s)
    assert key["ladder"] and key["ultralytics"] and key["gpu"] == "GPU" and key["vram_gib"] == 24
    assert experience.job_key(default, (), s)["gpu"] == "cpu"
    # a torch upgrade changes the allocator and the kernels' workspaces: what was learned no longer applies
    from importlib import metadata
    assert key["torch"] == metadata.version("torch")


def test_a_torch_upgrade_invalidates_verdicts_and_trials(tmp_path, default, monkeypatch):
    from importlib import metadata
    store = experience.for_job(default, snap(24).gpus, snap(24), tmp_path / "experience.json")
    store.note("optimal", OOM_EARLY, "night-1")
    store.note_trial(Trial(rung="optimal", ended="fit", peak_reserved_bytes=1), "night-1")
    assert set(store.avoid()) == {"optimal"} and set(store.trials()) == {"optimal"}
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "9.9.9" if name == "torch" else real(name))
    upgraded = experience.for_job(default, snap(24).gpus, snap(24), store.path)
    assert upgraded.key == {**store.key, "torch": "9.9.9"}
    assert upgraded.avoid() == {} and upgraded.trials() == {}


def test_plan_starts_below_a_rung_that_oomed_early(default):
    p = plan.choose(default, snap(24), dataset_images=10, avoid={"optimal": "rung optimal OOMed in its first epoch"})
    assert p.start.name == "optimal-b4"
    assert p.reasons[0].startswith("start rung optimal-b4: learned, rung optimal OOMed in its first epoch (the probe "
                                   "alone would start on optimal")
    # probing says less: experience never lifts the start above the probe's rung
    assert plan.choose(default, snap(12), dataset_images=10, avoid={"optimal": "x"}).start.name == "optimal-b4"


def test_dry_run_says_it_came_from_experience(capsys, fixed_machine, default):
    learned = Experience(experience.store_path(), experience.job_key(
        ladder_mod.load(ROOT / "ladders" / "default.toml", data="coco_indoor/data.yaml"), FIXED.gpus, FIXED))
    learned.note("optimal", OOM_EARLY, "night-1")
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml")
    assert code == 0 and "learned, rung optimal OOMed in its first epoch in run 'night-1'" in out
    assert "> optimal-b4" in out
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--no-memory")
    assert "> optimal " in out and "learned" not in out


@pytest.mark.parametrize("content", ['[]', '{"entries": "x"}', '{"entries": [1, {"rung": 3}]', "\xff"])
def test_a_damaged_experience_file_is_skipped_with_one_warning(tmp_path, capsys, content):
    path = tmp_path / "experience.json"
    path.write_bytes(content.encode("latin-1"))
    learned = Experience(path, {"job": "t"})
    assert learned.avoid() == {} and learned.verdicts() == {}
    out = capsys.readouterr().out
    assert out.count("warning:") <= 1 and (str(path) in out or content == '{"entries": [1, {"rung": 3}]')
    learned.note("optimal", OOM_EARLY, "night")  # a real verdict replaces the damaged file
    assert list(learned.avoid()) == ["optimal"]


NOTER = """
import sys
from pathlib import Path
from launcher.experience import Experience, HELD
learned = Experience(Path(sys.argv[1]), {"job": "t"})
print("ready", flush=True)
sys.stdin.readline()  # both start noting at once
for i in range(40):
    learned.note(f"{sys.argv[2]}-{i}", HELD, sys.argv[2])
"""


def test_two_processes_noting_at_once_lose_no_note(tmp_path):
    """Each note reads, changes and replaces the file: without the lock, one process's replace drops
    the other's notes written since its read."""
    import subprocess
    import sys
    path = tmp_path / "experience.json"
    procs = [subprocess.Popen([sys.executable, "-c", NOTER, str(path), name], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT) for name in ("a", "b")]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        assert p.wait(timeout=60) == 0
    entries = json.loads(path.read_text())["entries"]
    assert len(entries) == 80 and {e["rung"] for e in entries} == {f"{n}-{i}" for n in "ab" for i in range(40)}


def test_a_lock_file_this_user_cannot_open_still_notes_with_one_warning(tmp_path, capsys, monkeypatch):
    """Another user's lock file in a shared $RTDETR_LOGS: the lock is advisory, so the note is
    made without it, with one warning, never a traceback that ends the night."""
    import os
    path = tmp_path / "experience.json"
    lock, real_open = str(tmp_path / ".experience.json.lock"), os.open

    def refusing(name, flags, *args, **kw):
        if str(name) == lock:
            raise PermissionError(13, "Permission denied", str(name))
        return real_open(name, flags, *args, **kw)

    monkeypatch.setattr(os, "open", refusing)
    learned = Experience(path, {"job": "t"})
    learned.note("optimal", OOM_EARLY, "night")
    learned.note("optimal-b4", HELD, "night")
    assert [e["rung"] for e in json.loads(path.read_text())["entries"]] == ["optimal", "optimal-b4"]
    out = capsys.readouterr().out
    assert out.count("warning:") == 1 and f"the lock beside {path} cannot be opened" in out


def test_the_lock_file_is_opened_read_only_and_readable_by_others(tmp_path, monkeypatch):
    """flock needs no write access: another user of the same logs/ opens it read-only, which the
    mode must allow whatever this user's umask."""
    import os
    import stat
    opened = []
    real_open = os.open

    def watching(name, flags, *args, **kw):
        if str(name).endswith(".lock"):
            opened.append(flags & os.O_ACCMODE)
        return real_open(name, flags, *args, **kw)

    monkeypatch.setattr(os, "open", watching)
    old = os.umask(0o077)
    try:
        Experience(tmp_path / "experience.json", {"job": "t"}).note("optimal", HELD, "night")
    finally:
        os.umask(old)
    assert opened == [os.O_RDONLY]
    assert stat.S_IMODE((tmp_path / ".experience.json.lock").stat().st_mode) == 0o644
