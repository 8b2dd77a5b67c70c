"""Process hygiene with real processes: trees in several sessions, a child that ignores SIGTERM,
a stopped child, pid reuse, and a real torchrun (gloo, CPU) whose rank dies of a CUDA OOM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launcher import proctree
from launcher.contract import CUDA_OOM
from launcher.failures import classify

RANK_SCRIPT = Path(__file__).resolve().parent / "fixtures" / "ddp" / "rank.py"
SLEEPER = "import time; print('ready', flush=True); time.sleep(120)"
TERM_IGNORER = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "print('ready', flush=True); time.sleep(120)")
# A parent with one child in its session and one in a new session (as torchrun starts its ranks).
PARENT = """
import subprocess, sys, time
code = "import time; time.sleep(120)"
a = subprocess.Popen([sys.executable, "-c", code])
b = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
print(a.pid, b.pid, flush=True)
time.sleep(120)
"""


@pytest.fixture
def spawn():
    """Start a process; whatever it leaves behind is SIGKILLed at teardown, without proctree."""
    started: list[psutil.Process] = []

    def start(args: list[str], **kw) -> subprocess.Popen:
        proc = subprocess.Popen(args, **kw)
        started.append(psutil.Process(proc.pid))
        return proc

    yield start
    for root in started:
        try:
            family = [root, *root.children(recursive=True)]
        except psutil.Error:
            family = []
        for p in family:
            try:
                p.kill()
            except psutil.Error:
                pass


def running(pid: int) -> bool:
    """The pid exists and is not a zombie (someone else's zombie is dead, though not yet reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_ready(spawn, code: str) -> subprocess.Popen:
    proc = spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"  # its signal handlers are in place
    return proc


def wait_stopped(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while psutil.Process(pid).status() != psutil.STATUS_STOPPED:
        assert time.monotonic() < deadline, "the process did not stop"
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------- trees

def test_snapshot_and_kill_tree_across_sessions(spawn):
    parent = spawn([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    a, b = map(int, parent.stdout.readline().split())
    assert os.getsid(b) != os.getsid(parent.pid)  # a process-group or session kill would miss b

    records = proctree.snapshot(parent.pid)
    assert {r["pid"] for r in records} == {parent.pid, a, b}
    assert all(set(r) == {"pid", "create_time", "name"} for r in records)
    assert proctree.alive(records) == records

    assert proctree.kill_tree(parent.pid, grace=5) == sorted([parent.pid, a, b])
    assert proctree.alive(records) == []
    assert not psutil.pid_exists(parent.pid)  # our own child is reaped, not left a zombie
    assert not running(a) and not running(b)


def test_kill_tree_of_a_dead_child_reaps_it_and_signals_nothing(spawn):
    proc = spawn([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while psutil.Process(proc.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert proctree.alive(proctree.snapshot(proc.pid)) == []
    assert proctree.kill_tree(proc.pid, grace=1) == []
    assert not psutil.pid_exists(proc.pid)  # the zombie was ours: reaped
    assert proctree.kill_tree(proc.pid, grace=1) == [] and proctree.snapshot(proc.pid) == []


def test_never_signals_the_caller(spawn):
    child = start_ready(spawn, SLEEPER)
    records = proctree.snapshot(os.getpid())
    assert child.pid in {r["pid"] for r in records}
    mine = [r for r in records if r["pid"] in (os.getpid(), child.pid)]
    assert proctree.reap(mine, grace=2) == [child.pid]
    assert not psutil.pid_exists(child.pid)


def test_sigterm_ignored_then_sigkill_after_grace(spawn):
    proc = start_ready(spawn, TERM_IGNORER)
    t0 = time.monotonic()
    assert proctree.kill_tree(proc.pid, grace=1.0) == [proc.pid]
    elapsed = time.monotonic() - t0
    assert 1.0 <= elapsed < 3.0, elapsed  # it waited out the grace, then SIGKILL ended it
    assert not psutil.pid_exists(proc.pid)


# On SIGTERM it starts a child in a new session and carries on: only a later walk can find it.
SPAWNS_ON_TERM = """
import signal, subprocess, sys, time
def on_term(*_):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                             stdout=subprocess.DEVNULL, start_new_session=True)
    print(child.pid, flush=True)
signal.signal(signal.SIGTERM, on_term)
print("ready", flush=True)
while True:
    time.sleep(0.1)
"""


def test_kill_tree_finds_children_started_while_it_signals(spawn):
    proc = start_ready(spawn, SPAWNS_ON_TERM)
    killed = proctree.kill_tree(proc.pid, grace=1.5)
    late = int(proc.stdout.readline())
    assert killed == sorted([proc.pid, late])
    assert not running(late) and not psutil.pid_exists(proc.pid)


@pytest.mark.parametrize("code, grace, within", [
    (SLEEPER, 5.0, (0.0, 2.0)),  # SIGCONT after SIGTERM: it need not wait out the grace
    (TERM_IGNORER, 1.0, (1.0, 3.0)),  # SIGKILL ends a stopped process too
], ids=["stopped", "stopped-ignoring-sigterm"])
def test_stopped_process_is_killed(spawn, code, grace, within):
    proc = start_ready(spawn, code)
    os.kill(proc.pid, signal.SIGSTOP)
    wait_stopped(proc.pid)
    t0 = time.monotonic()
    assert proctree.kill_tree(proc.pid, grace=grace) == [proc.pid]
    elapsed = time.monotonic() - t0
    assert within[0] <= elapsed < within[1], elapsed
    assert not psutil.pid_exists(proc.pid)


# ------------------------------------------------------------------------- records and pid reuse

def test_alive_and_reap_honour_create_time(spawn):
    proc = start_ready(spawn, SLEEPER)
    [record] = proctree.snapshot(proc.pid)
    # the same pid with another start time: the pid was reused by a process that is not ours
    stranger = dict(record, create_time=record["create_time"] - 3600)
    assert proctree.alive([stranger]) == []
    assert proctree.reap([stranger], grace=1) == []
    assert running(proc.pid)

    # records survive a trip through state.json
    [stored] = json.loads(json.dumps([record]))
    assert proctree.alive([stored]) == [stored]
    assert proctree.reap([stored], grace=2) == [proc.pid]
    assert proctree.alive([stored]) == []
    assert proctree.reap([stored], grace=2) == []


def test_reap_ends_the_orphans_of_a_sigkilled_launcher(spawn):
    # a "launcher" whose child tree sits in its own session, like the supervisor's child
    launcher = spawn([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                     start_new_session=True)
    a, b = map(int, launcher.stdout.readline().split())
    records = json.loads(json.dumps(proctree.snapshot(launcher.pid)))  # as stored in state.json
    os.kill(launcher.pid, signal.SIGKILL)
    launcher.wait()
    assert {r["pid"] for r in proctree.alive(records)} == {a, b}  # orphans, still running

    assert proctree.reap(records, grace=2) == sorted([a, b])
    assert proctree.alive(records) == []


def test_a_run_record_ends_only_processes_that_name_its_own_spec(spawn, tmp_path):
    """A record's process list may be another run's (a folder copied while that run trains): only a
    process whose command line names a spec of this run folder is ended, with its descendants."""
    mine, other = tmp_path / "logs" / "B", tmp_path / "logs" / "A"
    child = spawn([sys.executable, "-c", PARENT, str(mine / "attempt-2" / "spec.json")], stdout=subprocess.PIPE,
                  text=True, start_new_session=True)
    a, b = map(int, child.stdout.readline().split())  # its workers: in its session and in a new one
    stranger = spawn([sys.executable, "-c", PARENT, str(other / "attempt-1" / "spec.json")],
                     stdout=subprocess.PIPE, text=True, start_new_session=True)
    c, d = map(int, stranger.stdout.readline().split())
    records = json.loads(json.dumps(proctree.snapshot(child.pid) + proctree.snapshot(stranger.pid)))
    signalled, spared = proctree.reap_run(records, mine, grace=2)
    assert signalled == sorted([child.pid, a, b]) and not any(map(running, (child.pid, a, b)))
    assert spared == sorted([stranger.pid, c, d]) and all(map(running, (stranger.pid, c, d)))
    assert proctree.reap_run(records, tmp_path / "logs" / "B-copy", grace=2) == ([], sorted([stranger.pid, c, d]))


# Dies first, as a child killed with its launcher does; its grandchild, in a session of its own
# (a torchrun rank), carries only the environment it inherited, no spec in its command line.
ORPHANING = """
import subprocess, sys, time
b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
print(b.pid, flush=True)
time.sleep(120)
"""


def test_a_run_record_ends_orphans_that_carry_its_spec_only_in_their_environment(spawn, tmp_path):
    """The launcher SIGKILLed, its child dies and leaves torchrun's ranks to init: their command
    lines name Ultralytics' DDP file, not the spec, but their environment names it (SPEC_ENV).
    The next run ends them; a process whose environment names another run's spec lives."""
    mine, other = tmp_path / "logs" / "B", tmp_path / "logs" / "A"
    root = spawn([sys.executable, "-c", ORPHANING, str(mine / "attempt-2" / "spec.json")], stdout=subprocess.PIPE,
                 text=True, env={**os.environ, proctree.SPEC_ENV: str(mine / "attempt-2" / "spec.json")})
    rank = int(root.stdout.readline())
    stranger = spawn([sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, text=True,
                     env={**os.environ, proctree.SPEC_ENV: str(other / "attempt-1" / "spec.json")})
    assert stranger.stdout.readline().strip() == "ready"
    try:
        records = proctree.snapshot(root.pid) + proctree.snapshot(stranger.pid)
        assert {r["pid"] for r in records} == {root.pid, rank, stranger.pid}
        root.kill()
        root.wait()
        assert running(rank) and psutil.Process(rank).ppid() != root.pid  # an orphan now
        signalled, spared = proctree.reap_run(records, mine, grace=2)
        assert signalled == [rank] and not running(rank)
        assert spared == [stranger.pid] and running(stranger.pid)
    finally:
        for pid in (rank, stranger.pid):
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass


def test_every_child_is_started_with_its_spec_in_its_environment(tmp_path):
    from helpers import FakeChild, new_state, ok
    from conftest import ROOT, all_available
    from launcher import ladder as ladder_mod
    from launcher.runlog import RunPaths
    from launcher.supervisor import Supervisor
    lad = all_available(ladder_mod.load(ROOT / "ladders" / "default.toml"))
    fake, seen = FakeChild([ok()]), []

    def launch(cmd, env, log_path, watchdog):
        seen.append((cmd, env))
        return fake(cmd, env, log_path, watchdog)

    paths = RunPaths(tmp_path / "run")
    Supervisor(ladder=lad, planned=lad.rungs, start=0, device="0", paths=paths, launch=launch, sleep=lambda s: None,
               say=lambda line: None).run(new_state(lad))
    (cmd, env), = seen
    assert env[proctree.SPEC_ENV] == cmd[-1] == str(paths.spec(1))


# ------------------------------------------------------------------------------- real torchrun

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(mode: str, *flags: str) -> list[str]:
    # what Ultralytics' generate_ddp_command runs (8.4.x), plus the mode for the rank script
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_port", str(free_port()), *flags, str(RANK_SCRIPT), mode]


def rank_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "MASTER_ADDR": "127.0.0.1"}


READY = re.compile(r"rank (\d) pid (\d+) ready")


def run_oom(spawn, tmp_path, *flags) -> tuple[str, int, float]:
    log_path = tmp_path / "train.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = spawn(torchrun("oom", *flags), stdout=log, stderr=subprocess.STDOUT, env=rank_env(),
                     start_new_session=True)
        code = proc.wait(timeout=60)
    text = log_path.read_text(errors="replace")
    for _, pid in READY.findall(text):
        assert not running(int(pid)), f"torchrun left rank pid {pid} running"
    return text, code, time.monotonic() - t0


@pytest.mark.parametrize("tee, prefix", [
    (False, "[rank1]: "),  # Ultralytics' own command: the rank's excepthook adds "[rank1]: "
    (True, "[default1]:[rank1]: "),  # --tee 3: torchrun puts "[default1]:" before it
], ids=["ultralytics-flags", "tee"])
def test_torchrun_rank_oom_is_classified_cuda_oom(spawn, tmp_path, tee, prefix):
    flags = ("--tee", "3", "--log-dir", str(tmp_path / "elastic")) if tee else ()
    text, code, elapsed = run_oom(spawn, tmp_path, *flags)
    assert code == 1 and elapsed < 30, (code, elapsed)
    assert "Root Cause (first observed failure)" in text
    failure = classify(text, exit_code=code)
    assert failure.kind == CUDA_OOM, (failure, text[-3000:])
    assert failure.evidence.startswith(f"{prefix}torch.OutOfMemoryError: CUDA out of memory. Tried to")


def test_kill_tree_ends_hanging_torchrun_ranks(spawn, tmp_path):
    log_path = tmp_path / "train.log"
    with open(log_path, "wb") as log:
        run = spawn(torchrun("hang"), stdout=log, stderr=subprocess.STDOUT, env=rank_env(),
                    start_new_session=True)
    deadline = time.monotonic() + 30
    while len(ranks := {int(pid) for _, pid in READY.findall(log_path.read_text())}) < 2:
        assert run.poll() is None and time.monotonic() < deadline, log_path.read_text()
        time.sleep(0.1)
    records = proctree.snapshot(run.pid)
    assert ranks <= {r["pid"] for r in records}
    assert all(os.getsid(pid) != os.getsid(run.pid) for pid in ranks)  # killpg would miss them

    t0 = time.monotonic()
    killed = proctree.kill_tree(run.pid, grace=10)
    elapsed = time.monotonic() - t0
    assert {r["pid"] for r in records} <= set(killed)
    assert proctree.alive(records) == []
    assert not any(running(r["pid"]) for r in records)
    assert not psutil.pid_exists(run.pid)  # torchrun itself is reaped
    assert elapsed < 10, elapsed


def test_a_child_that_dies_between_the_wait_and_the_status_read_is_reaped(spawn):
    # The race CI met: kill_tree's wait found torchrun running, it exited at once, the status read
    # then saw a zombie, and the zombie (our child) was counted gone but never reaped.
    proc = spawn([sys.executable, "-c", "pass"])
    p = psutil.Process(proc.pid)
    deadline = time.monotonic() + 10
    while p.status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    real, calls = p.wait, []

    def wait(timeout=None):
        calls.append(timeout)
        if len(calls) == 1:  # as if it exited just after this wait looked
            raise psutil.TimeoutExpired(timeout, pid=p.pid)
        return real(timeout)

    p.wait = wait
    assert proctree._gone(p)
    assert not psutil.pid_exists(proc.pid)
