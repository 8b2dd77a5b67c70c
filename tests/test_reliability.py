"""An unattended night's other deaths, each produced for real: signals to the launcher, a stopped
(hung) child, a SIGKILLed launcher, a torn checkpoint. Real Ultralytics children on the CPU."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher import dataset as dataset_mod, ladder as ladder_mod
from launcher.child import RESUMABLE, checkpoint_state
from launcher.demo import make_dataset
from launcher.launch import ChildProcess
from launcher.runlog import Events, RunPaths, RunState
from launcher.supervisor import Supervisor
from memlimit import cgroup_support, confined_launch

from helpers import TINY, events, launch, model_dir, of, trained_epochs, verified_copy, write_ladder

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def longer(tmp_path_factory) -> Path:
    """Enough batches per epoch (150 at batch 2, some seconds) to act in the middle of one."""
    return make_dataset(tmp_path_factory.mktemp("longer"), train=300, val=4, size=64, max_boxes=2)


def ladder(tmp_path: Path, dataset: Path, epochs: int = 2, cache: str = "off", imgsz: int = 64, **job) -> Path:
    rungs = [("optimal", str(TINY), 2, cache), ("safe", str(TINY), 1, cache)]
    return write_ladder(tmp_path, dataset, rungs, epochs=epochs, imgsz=imgsz, threads=1, retries=0, retry_wait_s=0,
                        **job)


def start(tmp_path: Path, *argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "launcher", "run", "--device", "cpu", *argv], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def beat(tmp_path: Path, attempt: int = 1) -> dict:
    try:
        return json.loads((tmp_path / "logs" / "e2e" / f"attempt-{attempt}" / "heartbeat.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate, timeout: float = 120, what: str = "") -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def mid_epoch(tmp_path: Path, epoch: int) -> bool:
    b = beat(tmp_path)
    return b.get("phase") == "train" and b.get("epoch") == epoch and b.get("batch", 0) >= 2


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_to_the_launcher_stops_the_tree_and_keeps_the_checkpoint_resumable(tmp_path, longer, sig, code):
    lad = ladder(tmp_path, longer)
    p = start(tmp_path, "--ladder", str(lad))
    wait_for(lambda: mid_epoch(tmp_path, 2), what="the middle of epoch 2")
    child = beat(tmp_path)["pid"]
    p.send_signal(sig)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == code, out[-2000:]
    assert gone(child)
    state = json.loads((tmp_path / "logs" / "e2e" / "state.json").read_text())
    assert state["status"] == "interrupted"
    ends = of(events(tmp_path), "attempt_end")
    assert ends[-1]["kind"] == "interrupted" and not of(events(tmp_path), "step_down")
    last = model_dir(tmp_path, "e2e") / "weights" / "last.pt"
    assert checkpoint_state(last)[0] == RESUMABLE  # not finalised: epoch 1 kept, optimizer kept
    if sig == signal.SIGTERM:
        again = launch(tmp_path, "--ladder", str(lad))
        assert again.returncode == 0, again.stdout[-2000:]
        assert "continuing run 'e2e' at rung optimal" in again.stdout
        assert trained_epochs(last.parent.parent) == [1, 2]


def test_a_stopped_child_is_a_hang_killed_and_retried_once(tmp_path, longer):
    lad = ladder(tmp_path, longer, heartbeat_timeout_s=10)
    p = start(tmp_path, "--ladder", str(lad))
    wait_for(lambda: mid_epoch(tmp_path, 1), what="the middle of epoch 1")
    child = beat(tmp_path)["pid"]
    os.kill(child, signal.SIGSTOP)  # a real hang: no progress, no exit
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out[-3000:]
    assert gone(child)
    evs = events(tmp_path)
    ends = of(evs, "attempt_end")
    assert ends[0]["kind"] == "hang" and "heartbeat silent for" in ends[0]["evidence"]
    assert [e["rung"] for e in ends] == ["optimal", "optimal"] and ends[1]["kind"] is None
    assert of(evs, "retry")[0]["kind"] == "hang" and of(evs, "retry")[0]["of"] == 1


def test_killed_launcher_leaves_no_orphan(tmp_path, longer):
    p = start(tmp_path, "--ladder", str(ladder(tmp_path, longer)))
    wait_for(lambda: mid_epoch(tmp_path, 1), what="the middle of epoch 1")
    child = beat(tmp_path)["pid"]
    p.kill()
    p.wait()
    wait_for(lambda: gone(child), timeout=30, what="the orphaned child to end itself")


def test_next_run_reaps_a_survivor_of_a_killed_launcher(tmp_path, longer):
    lad = ladder(tmp_path, longer)
    p = start(tmp_path, "--ladder", str(lad))
    wait_for(lambda: mid_epoch(tmp_path, 1), what="the middle of epoch 1")
    child = beat(tmp_path)["pid"]
    wait_for(lambda: "tree" in json.loads((tmp_path / "logs" / "e2e" / "state.json").read_text()),
             what="the process tree in the run state")
    os.kill(child, signal.SIGSTOP)  # stopped: its parent-death SIGTERM stays pending, it survives
    p.kill()
    p.wait()
    time.sleep(1)
    assert not gone(child)
    again = launch(tmp_path, "--ladder", str(lad))
    assert again.returncode == 0, again.stdout[-3000:]
    assert gone(child)
    reaped = of(events(tmp_path), "reaped")
    assert reaped and child in reaped[0]["pids"]


def test_torn_checkpoint_resumes_from_the_verified_copy(tmp_path, longer):
    lad = ladder(tmp_path, longer)
    first = launch(tmp_path, "--ladder", str(lad), "--inject", "crash:optimal:2")
    assert first.returncode == 4
    weights = model_dir(tmp_path, "e2e") / "weights"
    verified = verified_copy(tmp_path, "e2e")
    assert checkpoint_state(verified)[0] == RESUMABLE
    good = verified.read_bytes()
    data = (weights / "last.pt").read_bytes()
    # torn by a power cut: a save renamed into place with a page of it that never reached the disk,
    # whole length and a whole zip directory (torch.load would take it). Written as a new file, as
    # every save is; the verified copy is a file of its own
    mid = len(data) // 2 // 4096 * 4096
    (weights / ".torn").write_bytes(data[:mid] + bytes(4096) + data[mid + 4096:])
    os.replace(weights / ".torn", weights / "last.pt")
    again = launch(tmp_path, "--ladder", str(lad))
    assert again.returncode == 0, again.stdout[-3000:]
    assert "resuming from the verified copy" in again.stdout
    ends = of(events(tmp_path), "attempt_end")
    assert "(verified copy)" in ends[-1]["checkpoint"]
    torn = list(weights.glob("last.pt.torn-*"))
    assert len(torn) == 1 and torn[0].stat().st_size == len(data)  # kept, not deleted
    assert trained_epochs(weights.parent) == [1, 2]
    assert verified.read_bytes() != good  # advanced to the new epoch 2 save


@pytest.mark.skipif(cgroup_support() is not None, reason=f"no memory cgroup can be made here: {cgroup_support()}")
def test_kernel_oom_kill_of_the_child_turns_ram_cache_off(tmp_path, monkeypatch):
    """Every attempt runs confined to 900 MiB of memory. Training at 640 px with 300 images cached
    in RAM (~370 MB of cache) really exceeds it, and the kernel's OOM killer SIGKILLs the child
    (measured with 200 images: killed at 800 MiB, fine at 1000; without the cache it runs in less
    than 800). The supervisor finds the cgroup's oom_kill counter risen, calls it host_oom, and
    retries the same rung with RAM cache off, which fits and finishes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    data = make_dataset(tmp_path / "d640", train=300, val=4, size=640, max_boxes=2)
    lad = ladder_mod.load(ladder(tmp_path, data, epochs=1, cache="ram", imgsz=640))
    paths = RunPaths.for_run("e2e")
    paths.root.mkdir(parents=True)
    dataset_mod.write_resolved(dataset_mod.inspect(lad.job.dataset), paths.dataset)
    child = ChildProcess()
    with confined_launch(900 * 2**20, inner=child) as confined:
        sup = Supervisor(ladder=lad, planned=lad.rungs, start=0, device="cpu", paths=paths, launch=confined,
                         say=lambda line: None)
        code = sup.run(RunState(run="e2e", ladder=str(lad.path), data=str(lad.job.dataset), device="cpu",
                                rung="optimal"))
        kills = [(a.returncode, a.oom_kill) for a in confined.attempts]
    assert kills == [(-9, 1), (0, 0)]
    assert code == 0
    evs = Events(paths.events).read()
    ends = of(evs, "attempt_end")
    assert ends[0]["kind"] == "host_oom" and "oom_kill 0 → 1" in ends[0]["evidence"], ends[0]
    assert of(evs, "retry")[0]["cache"] == "off" and of(evs, "retry")[0]["rung"] == "optimal"
    specs = [json.loads(paths.spec(n).read_text()) for n in (1, 2)]
    assert [s["train_args"]["cache"] for s in specs] == ["ram", False]
    assert ends[1]["kind"] is None


@pytest.fixture
def small_disk(tmp_path):
    """A real filesystem of its own (tmpfs, 64 MiB) under logs/e2e/models, where Ultralytics
    writes its checkpoints; the run record and the verified copies stay on the big disk."""
    models = tmp_path / "logs" / "e2e" / "models"
    models.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(models)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield models
    subprocess.run(["umount", "-l", str(models)])


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


def test_full_disk_is_fatal_naming_the_path_and_the_next_run_resumes(tmp_path, longer, small_disk):
    lad = ladder(tmp_path, longer, epochs=3)
    lad.write_text(lad.read_text().replace("plots = false", "plots = false\nsave_period = 1"))  # a new file each epoch
    p = start(tmp_path, "--ladder", str(lad))
    wait_for(lambda: beat(tmp_path).get("last_saved_epoch") == 1, what="epoch 1's checkpoint")
    filler = fill(small_disk)
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 4, out[-3000:]
    end = of(events(tmp_path), "attempt_end")[-1]
    assert end["kind"] == "fatal" and "No space left on device" in end["evidence"]
    assert str(small_disk / model_dir(tmp_path).name) in end["evidence"] and "MiB free there" in end["evidence"]
    verified = verified_copy(tmp_path, "e2e")
    assert checkpoint_state(verified)[0] == RESUMABLE  # intact
    weights = small_disk / model_dir(tmp_path).name / "weights"
    assert checkpoint_state(weights / "last.pt")[0] == RESUMABLE  # saved by rename: the failed save tore nothing
    assert not list(weights.glob(".*.tmp"))  # and left no partial file taking the little room there is
    filler.unlink()  # room again
    again = launch(tmp_path, "--ladder", str(lad))
    assert again.returncode == 0, again.stdout[-3000:]
    assert "continuing run 'e2e'" in again.stdout
    assert trained_epochs(small_disk / model_dir(tmp_path).name)[-1] == 3


def hang_up_by_default() -> None:
    """In the started launcher, before exec: SIGHUP ends a process, as for a login shell's job. Else
    under `nohup pytest` (or after a test that ran `run` in-process) the launcher would inherit SIGHUP
    ignored, and the test below would pass without the launcher's own handling (console.unattended)."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def test_a_hang_up_does_not_end_the_night_and_key_values_reach_the_training(tmp_path, longer):
    """`run` with its stdout and stderr on a terminal; mid-epoch the terminal goes away (its master
    side closed) and SIGHUP arrives, as when an SSH session drops. Training goes on, the output goes
    on into train.log, the run completes. The run's key=value arguments reach model.train()."""
    import pty
    import threading

    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "launcher", "run", "--device", "cpu", "--ladder",
                          str(ladder(tmp_path, longer)), "lr0=0.0005", "patience=7"],
                         cwd=tmp_path, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                         preexec_fn=hang_up_by_default)
    os.close(slave)
    seen: list[bytes] = []

    def drain():  # a terminal that someone is reading, until it is closed
        try:
            while chunk := os.read(master, 65536):
                seen.append(chunk)
        except OSError:
            pass
    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        wait_for(lambda: beat(tmp_path).get("phase") == "train" and (beat(tmp_path).get("batch") or 0) >= 5,
                 what="the middle of epoch 1")
        os.close(master)
        p.send_signal(signal.SIGHUP)
        assert p.wait(timeout=300) == 0
    finally:
        if p.poll() is None:
            p.kill()
    state = json.loads((tmp_path / "logs" / "e2e" / "state.json").read_text())
    assert state["status"] == "complete" and state["attempts"] == 1
    log = (tmp_path / "logs" / "e2e" / "attempt-1" / "train.log").read_text()
    assert "2 epochs completed" in log  # the output went on into train.log after the terminal was gone
    args = (model_dir(tmp_path) / "args.yaml").read_text()
    assert "lr0: 0.0005" in args and "patience: 7" in args
    assert b"launcher:" in b"".join(seen)  # the terminal showed the run until it went away
