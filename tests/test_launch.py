"""The launch seam's own clocks and signals: the watchdog measures silence on the monotonic clock,
a signal noted as a child is about to start starts no child, and a Ctrl-C at any moment of `run`
ends with the launcher's own lines (docs/design.md, "The attempt loop and the launch seam")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from launcher import ladder as ladder_mod
from launcher.contract import Heartbeat
from launcher.launch import ChildProcess, Signals, Watchdog
from launcher.memory import RamWatch
from launcher.runlog import write_json_atomic

from conftest import ROOT

HOURS = 5 * 3600


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def job():
    return replace(ladder_mod.load(ROOT / "ladders" / "default.toml").job, heartbeat_timeout_s=60,
                   startup_timeout_s=300)


def watch(job, tmp_path, clock):
    wd = Watchdog(job, 1, "optimal", tmp_path / "heartbeat.json", (), RamWatch(), clock=clock)
    wd.start()
    return wd


def beat(path, batch: int, mtime: float, first_batch: bool = True) -> None:
    """A heartbeat as the child writes it, its file's mtime then set as a stepped wall clock leaves it."""
    write_json_atomic(path, {"phase": "train", "epoch": 1, "batch": batch, "ts": mtime,
                             "first_batch_ts": mtime if first_batch else None})
    os.utime(path, (mtime, mtime))


@pytest.mark.parametrize("first_batch", [True, False], ids=["training", "starting"])
def test_a_beating_heartbeat_whose_mtime_looks_hours_old_is_not_silent(job, tmp_path, first_batch):
    """An NTP step or a VM resume: every beat's mtime is hours behind time.time(). The watchdog sees
    the heartbeat change and keeps the child; silent for real, the child goes after the limit."""
    clock = Clock()
    wd = watch(job, tmp_path, clock)
    hb = tmp_path / "heartbeat.json"
    for batch in range(1, 10):
        clock.t += 30
        beat(hb, batch, time.time() - HOURS, first_batch)
        assert wd.silence(Heartbeat.read(hb), clock()) is None, batch
    limit = job.heartbeat_timeout_s if first_batch else job.startup_timeout_s
    clock.t += limit
    assert wd.silence(Heartbeat.read(hb), clock()) is None  # silent exactly the limit: not yet
    clock.t += 2
    reason = wd.silence(Heartbeat.read(hb), clock())
    assert reason and reason.startswith(f"heartbeat silent for {limit + 2} s (limit {limit} s")


def test_a_silent_heartbeat_from_the_future_is_still_silent(job, tmp_path):
    """The wall clock stepped back: the last beat's mtime is hours ahead. A hung child still goes."""
    clock = Clock()
    wd = watch(job, tmp_path, clock)
    hb = tmp_path / "heartbeat.json"
    beat(hb, 1, time.time() + HOURS)
    assert wd.silence(Heartbeat.read(hb), clock()) is None
    clock.t += 61
    reason = wd.silence(Heartbeat.read(hb), clock())
    assert reason and "heartbeat silent for 61 s (limit 60 s after the first batch" in reason


def test_no_heartbeat_is_silent_from_the_start_up_on_the_monotonic_clock(job, tmp_path):
    clock = Clock()
    wd = watch(job, tmp_path, clock)
    clock.t += 300
    assert wd.silence(None, clock()) is None
    clock.t += 1
    reason = wd.silence(None, clock())
    assert reason and "silent for 301 s (limit 300 s before the first batch; before its first heartbeat)" in reason


# ---- a signal as a child starts ------------------------------------------------------------------

def test_no_child_starts_after_the_launchers_signal(job, tmp_path):
    """The signal was noted (and passed on to no one) after the loop's last look: the seam starts nothing."""
    child = ChildProcess(out=lambda data: None)
    child.signal(signal.SIGINT)  # what launch.Signals does when no child runs
    marker = tmp_path / "started"
    end = child([sys.executable, "-c", f"open({str(marker)!r}, 'w')"], dict(os.environ), tmp_path / "train.log",
                watch(job, tmp_path, time.monotonic))
    assert end.exit_code == -signal.SIGINT and not marker.exists()


def test_a_signal_while_the_child_is_being_started_reaches_it(job, tmp_path, monkeypatch):
    """The handler ran inside Popen, before the seam knew the child's pid: the signal is passed on
    as soon as it does, and the child ends at once instead of training the night through."""
    child = ChildProcess(out=lambda data: None, tick=0.1)
    real = subprocess.Popen

    def started_then_signalled(*args, **kwargs):
        proc = real(*args, **kwargs)
        child.signal(signal.SIGINT)
        return proc
    monkeypatch.setattr("launcher.launch.subprocess.Popen", started_then_signalled)
    # the child takes SIGINT as under a launcher (whose handler exec resets to the default), even when
    # this test runs with SIGINT ignored (`pytest &` in a non-interactive shell)
    kept = signal.signal(signal.SIGINT, signal.default_int_handler)
    t0 = time.monotonic()
    try:
        end = child(["sleep", "15"], dict(os.environ), tmp_path / "train.log", watch(job, tmp_path, time.monotonic))
    finally:
        signal.signal(signal.SIGINT, kept)
    assert end.exit_code == -signal.SIGINT and time.monotonic() - t0 < 10


# ---- the grace kill ------------------------------------------------------------------------------

STUBBORN = """
import signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)  # ignored across exec: its own child ignores them too
signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen(["sleep", "20"])
print(worker.pid, flush=True)
time.sleep(20)
"""


def test_a_child_that_ignores_the_signal_is_killed_with_its_tree_after_the_grace(job, tmp_path):
    """The launcher's SIGTERM reaches a child that ignores it (and so does its worker): once the
    grace is over, the whole tree is SIGKILLed, through the seam's `stop` (a 0.5 s grace here, 30 s
    in a run); without it the night waits on the child for good."""
    child = ChildProcess(tick=0.1)
    signals = Signals(child, say=lambda line: None, grace=0.5)
    tree: list[int] = []

    def out(data: bytes) -> None:  # the child is up and its worker started: the launcher is told to stop
        tree.extend([child.proc.pid, int(data.split()[0])])
        signals(signal.SIGTERM, None)
    child.out = out
    t0 = time.monotonic()
    try:
        end = child([sys.executable, "-c", STUBBORN], dict(os.environ), tmp_path / "train.log",
                    watch(job, tmp_path, time.monotonic))
    finally:
        signals.child_gone()
    took = time.monotonic() - t0
    # (the exit code is no evidence here: the tree kill reaps the child before Popen.wait sees it)
    assert signals.received == signal.SIGTERM and len(tree) == 2 and 0.5 <= took < 8, (end, took)
    assert not any(psutil.pid_exists(pid) for pid in tree), tree


# ---- Ctrl-C at any moment ------------------------------------------------------------------------

READY = "test: python is up"
RUN_DEMO = ["run", "--demo", "--device", "cpu"]
AS_MODULE = "import runpy; runpy.run_module('launcher', run_name='__main__', alter_sys=True)"  # python -m launcher


def ctrl_c_after_start(tmp_path, runs: str, delay: float) -> subprocess.CompletedProcess:
    """A terminal's Ctrl-C (SIGINT to the foreground process group) `delay` s after Python is up and
    about to run the launcher (`runs`: Python code that runs it as __main__, sys.argv set). Measured from
    a line printed first, not from the spawn: Python's own start-up (80 ms here, longer on a loaded
    machine) is no part of the launcher, and a Ctrl-C inside it is Python's traceback."""
    # SIGINT as a terminal's shell leaves it for a foreground job: a test run in the background of a
    # non-interactive shell (`pytest &`) inherits it ignored, and a Ctrl-C before the launcher's own
    # handler would be lost
    code = (f"import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            f"print({READY!r}, flush=True); sys.argv = ['launcher', *{RUN_DEMO!r}]; {runs}")
    p = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert p.stdout.readline() == READY + "\n"
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGINT)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return subprocess.CompletedProcess(p.args, p.returncode, out)


def assert_the_launchers_own_lines(done: subprocess.CompletedProcess) -> None:
    out = done.stdout
    assert done.returncode == 130, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    lines = out.splitlines()
    stop = next(i for i, line in enumerate(lines) if "SIGINT" in line)
    assert all(line.startswith("launcher: ") for line in lines[stop:]), out[-3000:]


# 0.15 s: the launcher imports its modules or sets up (no launch.Signals yet, __main__'s handler);
# later: its child imports torch (its output gated off the terminal from the signal on)
@pytest.mark.parametrize("delay", [0.15, 0.3, 0.6, 1.0, 2.0])
def test_ctrl_c_early_in_a_run_ends_with_the_launchers_own_lines(tmp_path, delay):
    """A Ctrl-C while the launcher imports, sets up, or its child imports torch: exit 130, no
    traceback on the terminal; the child's own last words go to its train.log only."""
    assert_the_launchers_own_lines(ctrl_c_after_start(tmp_path, AS_MODULE, delay))


def installed_script() -> Path:
    """The `rtdetr-launcher` console script pip wrote for this environment."""
    script = Path(sysconfig.get_path("scripts")) / "rtdetr-launcher"
    assert script.is_file(), f"{script}: not installed (pip install -e .)"
    return script


def test_the_installed_script_runs_what_python_m_launcher_runs():
    """The console script's entry point is __main__'s, handler included (issue 17 item 16, review:
    `launcher.cli:main` skipped it, so an early Ctrl-C of `rtdetr-launcher` was a traceback)."""
    from importlib.metadata import entry_points

    import launcher.__main__

    (ep,) = entry_points(group="console_scripts", name="rtdetr-launcher")
    assert ep.load() is launcher.__main__.entry
    assert "launcher.__main__ import entry" in installed_script().read_text()


@pytest.mark.parametrize("delay", [0.15, 1.0])
def test_ctrl_c_early_in_the_installed_script_ends_with_the_launchers_own_lines(tmp_path, delay):
    """The script's own code, run as the script runs (its file as __main__), Ctrl-C'd as above."""
    runs = f"import runpy; sys.argv[0] = {str(installed_script())!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
    assert_the_launchers_own_lines(ctrl_c_after_start(tmp_path, runs, delay))


def test_the_childs_report_after_a_torn_torch_import_does_not_import_torch_again():
    """A Ctrl-C inside `import torch` leaves it half-made: importing it again for the report's peak
    memory raised AttributeError (seen), and the child died without its report."""
    probe = "import sys; from launcher.child import peak_memory; m = peak_memory(); print('torch' in sys.modules, m)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("False {'peak_rss_bytes': "), out.stdout + out.stderr
