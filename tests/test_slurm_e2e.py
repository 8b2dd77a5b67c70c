"""The same night on a real SLURM (issue 14): `python -m launcher sbatch` of the demo job on a
private single-node slurmctld (tests/slurm.py), cut by its time limit, requeued from outside, and
held to its requeue budget. Skipped, with the reason, where SLURM cannot run here.

SLURM's unit is minutes and slurmctld looks at time limits every 30 s: with --time=2 and a 30 s
lead the launcher's signal comes 60-90 s into each run of the job."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.demo import make_dataset
from launcher.slurm import minutes

from conftest import ROOT
from slurm import local_slurm  # noqa: F401,F811 - the fixture

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("demo-data"), train=24, val=8)


def submit(c, tmp_path: Path, *argv: str, ladder: Path | None = None, time_min: int = 2) -> tuple[str, str]:
    """`launcher sbatch` from tmp_path; (job id, its stdout)."""
    cmd = [sys.executable, "-m", "launcher", "sbatch", "--demo", "--device", "cpu", "--signal-lead", "30", *argv]
    if ladder:
        cmd += ["--ladder", str(ladder)]
    p = subprocess.run([*cmd, "--", f"--time={time_min}"], cwd=tmp_path, env=c.env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout.split("submitted SLURM job ")[1].split(":")[0], p.stdout


def record(tmp_path: Path, run: str) -> tuple[dict, list[dict]]:
    root = tmp_path / "logs" / run
    return (json.loads((root / "state.json").read_text()),
            [json.loads(line) for line in (root / "events.jsonl").read_text().splitlines()])


def leftovers(tmp_path: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "stat=,args="], capture_output=True, text=True).stdout.splitlines()
    return [line for line in ps if "launcher" in line and str(tmp_path) in line and not line.startswith("Z")]


def test_a_time_limit_requeues_the_job_and_the_next_run_finishes_the_night(local_slurm, tmp_path, data):
    """24 demo epochs (8-15 s each on a 2-core machine, validation and save included). The job's
    time limit is made to fall in training once the first run has saved an epoch: `scontrol update
    TimeLimit` to a minute at least 61 s ahead, so SLURM's own signal (@30, checked every 30 s)
    comes 1-91 s later, with at least 30 s left to requeue. The requeued run then gets 30 minutes and
    finishes the night. One cut whatever the machine's speed: a loaded machine can no longer give two
    runs without an epoch (which ends a night, docs/design.md, "On a SLURM cluster"), and start-ups
    are paid twice, not once per 90 s (30 epochs and --time=2 took 7 min with 7 requeues, loaded;
    this: 7.5 min for 30 epochs with one, 3.2 min for 20, the epochs are the cost). 24 leave a machine
    twice as fast as this one (23 epochs in 91 s would finish before the cut: the test says so)."""
    job, out = submit(local_slurm, tmp_path, "--data", str(data), "--name", "night", "epochs=24", time_min=30)
    assert "status night" in out
    root = tmp_path / "logs" / "night"
    beat = root / "attempt-1" / "heartbeat.json"
    deadline = time.monotonic() + 300
    while not (_json(beat).get("phase") == "train" and (_json(beat).get("epoch") or 0) >= 2):  # epoch 1 saved
        assert time.monotonic() < deadline, "epoch 2 never started"
        time.sleep(0.5)
    ran = minutes(local_slurm.job(job)["RunTime"]) * 60
    local_slurm.run("scontrol", "update", f"JobId={job}", f"TimeLimit={math.ceil((ran + 61) / 60)}")
    deadline = time.monotonic() + 150
    while '"event": "requeue"' not in _text(root / "events.jsonl"):  # (a line may be half written)
        assert local_slurm.job_state(job) != "COMPLETED", "the night finished before its time limit: raise epochs"
        assert time.monotonic() < deadline, f"no time-limit cut: {local_slurm.job(job)}"
        time.sleep(0.5)
    local_slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=30")  # the requeued run: all it needs
    assert local_slurm.wait_job(job, "COMPLETED", timeout=600) == "COMPLETED"
    state, events = record(tmp_path, "night")
    kinds = [e["event"] for e in events]
    n = state["requeues"]
    assert state["status"] == "complete" and n == 1 and state["slurm_jobs"] == [job] and state["stalls"] == []
    assert kinds.count("time_limit") == n and kinds.count("requeue") == n and kinds.count("complete") == 1
    assert [s["restarts"] for s in events if s["event"] == "slurm"] == list(range(n + 1))
    assert all(e["result"] == "requeued" for e in events if e["event"] == "requeue")
    assert state["attempts"] == n + 1 and state["cut"] == n  # no cut spent the attempt budget
    root = tmp_path / "logs" / "night"
    resumed = [k for k in range(2, n + 2) if "Resuming training" in (root / f"attempt-{k}" / "train.log").read_text()]
    assert resumed, "no requeued run resumed a checkpoint"  # (a run cut before its first save starts afresh)
    report_requeue_times(root, events)
    assert leftovers(tmp_path) == []


def test_a_requeue_from_outside_continues_the_run(local_slurm, tmp_path, data):
    job, _ = submit(local_slurm, tmp_path, "--data", str(data), "--name", "outside", "epochs=4", time_min=30)
    beat = tmp_path / "logs" / "outside" / "attempt-1" / "heartbeat.json"
    deadline = time.monotonic() + 240
    while not (beat.exists() and _json(beat).get("epoch", 0) >= 2 and _json(beat).get("phase") == "train"):
        assert time.monotonic() < deadline, "epoch 2 never started"
        time.sleep(0.5)
    local_slurm.run("scontrol", "requeue", job)
    assert local_slurm.wait_job(job, "COMPLETED", timeout=300) == "COMPLETED"
    state, events = record(tmp_path, "outside")
    assert state["status"] == "complete" and state["requeues"] == 1
    assert [e["event"] for e in events].count("preempted") == 1 and "requeue" not in [e["event"] for e in events]
    ends = [e for e in events if e["event"] == "attempt_end"]
    assert ends[0]["kind"] == "interrupted" and ends[-1]["kind"] is None  # no failure classified, none retried
    assert "Resuming training" in (tmp_path / "logs" / "outside" / "attempt-2" / "train.log").read_text()
    assert leftovers(tmp_path) == []


def test_past_max_requeues_the_run_ends_exhausted_not_in_a_loop(local_slurm, tmp_path, data):
    ladder = tmp_path / "short.toml"
    demo = (ROOT / "ladders" / "demo.toml").read_text().replace(
        "[job]\n", "[job]\nmax_requeues = 1\n", 1).replace('"../logs/demo-data/shapes.yaml"', f'"{data}"')
    ladder.write_text(demo)
    job, _ = submit(local_slurm, tmp_path, "--name", "budget", "epochs=60", ladder=ladder)
    final = local_slurm.wait_job(job, timeout=420)
    state, events = record(tmp_path, "budget")
    assert state["status"] == "exhausted" and "requeue budget spent" in state["reason"], (final, state)
    assert [e["event"] for e in events].count("time_limit") == 1 and state["requeues"] == 1
    assert local_slurm.job_state(job) not in ("PENDING", "RUNNING", "REQUEUED")  # not requeued again
    assert leftovers(tmp_path) == []


KILL_WAIT_S = 10  # tests/slurm.py's KillWait: SLURM SIGKILLs what is left of a cancelled job after it


@pytest.mark.parametrize("how", [("scancel",), ("scancel", "--full")], ids=["scancel", "scancel-full"])
def test_a_scancel_ends_the_night_and_the_job_never_comes_back(local_slurm, tmp_path, data, how):
    """Issue 17: a person's scancel while the job trains. Before, the launcher read the SIGTERM as
    its time limit (scontrol's EndTime is the cancel's moment) and requeued the cancelled job."""
    job, _ = submit(local_slurm, tmp_path, "--data", str(data), "--name", "cancel", "epochs=30", time_min=30)
    root = tmp_path / "logs" / "cancel"
    beat = root / "attempt-1" / "heartbeat.json"
    deadline = time.monotonic() + 240
    while not (_json(beat).get("phase") == "train" and (_json(beat).get("batch") or 0) >= 1):
        assert time.monotonic() < deadline, "training never started"
        time.sleep(0.5)
    t0 = time.monotonic()
    local_slurm.run(*how, job)
    while local_slurm.run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip():
        assert time.monotonic() - t0 < KILL_WAIT_S + 5, f"job {job} still in squeue {time.monotonic() - t0:.0f} s " \
                                                         f"after {' '.join(how)}"
        time.sleep(0.2)
    gone = time.monotonic() - t0
    time.sleep(8)  # a requeued job would be PENDING again by now (cred_expire=5, a 1 s scheduler)
    assert local_slurm.job_state(job) == "CANCELLED"
    assert not local_slurm.run("squeue", "-h", "-j", job, "-o", "%T", check=False).stdout.strip()
    state, events = record(tmp_path, "cancel")
    kinds = [e["event"] for e in events]
    assert state["status"] == "interrupted" and "was cancelled" in state["reason"] and state["requeues"] == 0
    assert "requeue" not in kinds and kinds[-1] == "interrupted" and events[-1]["exit_code"] == 143
    assert [e["restarts"] for e in events if e["event"] == "slurm"] == [0]  # it ran once
    job_procs = [cmd for _, cmd in local_slurm.processes() if not cmd.startswith("slurmctld")]  # its slurmscriptd
    assert leftovers(tmp_path) == [] and job_procs == []  # no launcher, child, slurmstepd or batch shell
    print(f"\n{' '.join(how)}: the job left squeue {gone:.1f} s after it (KillWait {KILL_WAIT_S} s)")


def report_requeue_times(root: Path, events: list[dict]) -> None:
    """For the closing note: from each time-limit signal to the requeued run's first batch, split into
    the launcher's part (stop the child, record, scontrol requeue), SLURM's (until the job runs again)
    and the new run's start-up; and the share of an epoch the cut lost."""
    ends = [e for e in events if e["event"] == "attempt_end"]
    for k, cut in enumerate(e for e in events if e["event"] == "time_limit"):
        queued = next(e for e in events if e["event"] == "requeue" and e["t"] >= cut["signal_t"])
        again = next(e for e in events if e["event"] == "slurm" and e["t"] >= queued["t"])
        cut_attempt = next(e for e in ends if e["t"] >= cut["signal_t"])["attempt"]
        beat = _json(root / f"attempt-{cut_attempt}" / "heartbeat.json")
        nxt = _json(root / f"attempt-{cut_attempt + 1}" / "heartbeat.json")
        lost = (beat.get("batch") or 0) / (beat.get("batches") or 1) if beat.get("phase") == "train" else 0.0
        first = nxt.get("first_batch_ts")
        start = f"{first - again['t']:.1f} s (→ first batch)" if first else "trained no batch (validation only)"
        print(f"\nrequeue {k + 1}: launcher {queued['t'] - cut['signal_t']:.1f} s (signal → scontrol requeue), "
              f"SLURM {again['t'] - queued['t']:.1f} s (→ the job runs again), new run {start}; "
              f"cut in {beat.get('phase')}, {lost:.2f} of an epoch lost")


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _ts(event: dict) -> float:
    from launcher.runlog import unix_time
    return unix_time(event.get("t"), event.get("ts"))
