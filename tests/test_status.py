"""`status` from a run record alone: live (the launcher holds the run), stopped, finished."""

from __future__ import annotations

import json
import time

import pytest

from launcher import cli, status
from launcher.runlog import Events, JsonLines, RunLock, RunPaths, write_json_atomic

GIB = 2**30


@pytest.fixture
def record(tmp_path, monkeypatch):
    """A run two attempts in: optimal OOMed early, optimal-b4 is in epoch 5 of 100."""
    monkeypatch.chdir(tmp_path)
    paths = RunPaths.for_run("night")
    paths.attempt(2).mkdir(parents=True)
    ev = Events(paths.events)
    ev.append("attempt_start", attempt=1, rung="optimal")
    ev.append("attempt_end", attempt=1, rung="optimal", kind="cuda_oom", phase="train",
              evidence="torch.OutOfMemoryError: CUDA out of memory.")
    ev.append("step_down", rung="optimal", to="optimal-b4")
    ev.append("attempt_start", attempt=2, rung="optimal-b4")
    write_json_atomic(paths.state, {"status": "running", "rung": "optimal-b4", "attempts": 2, "mode": "train",
                                    "models": {"rtdetr-l.pt": {"epochs_done": 4, "epochs": 100}}})
    write_json_atomic(paths.heartbeat(2), {"ts": time.time(), "phase": "train", "epoch": 5, "epochs": 100,
                                           "batch": 100, "batches": 600, "it_s": 5.0})
    tel = JsonLines(paths.telemetry)
    for vram, ram in ((9, 20), (13, 22), (11, 21)):
        tel.add({"t": time.time(), "vram": vram * GIB, "ram_used": ram * GIB, "rss": 6 * GIB})
    return paths


def test_live_run(record):
    lock = RunLock(record.lock)
    assert lock.acquire()
    d = status.collect(record)
    assert (d["status"], d["active"], d["rung"], d["attempt"], d["epoch"], d["epochs"]) == (
        "running", True, "optimal-b4", 2, 5, 100)
    assert d["eta_s"] == (95 * 600 + 500) / 5.0
    assert d["vram"] == {"now": 11 * GIB, "peak": 13 * GIB} and d["ram_used"]["peak"] == 22 * GIB
    assert d["last_failure"]["kind"] == "cuda_oom"
    assert d["history"] == [{"rung": "optimal", "attempts": [1]}, {"rung": "optimal-b4", "attempts": [2]}]
    out = status.text(d)
    assert "run 'night': training" in out and "epoch 5/100, batch 100/600, 5.00 it/s, ETA 3h11m" in out
    assert "VRAM now 11.0 GiB (peak 13.0 GiB)" in out and "rungs: optimal (attempt 1) → optimal-b4 (attempt 2)" in out


def test_a_run_whose_launcher_is_gone_is_stopped(record):
    d = status.collect(record)  # state says running, but nobody holds the run's lock
    assert d["status"] == "stopped" and "run the same command again" in d["reason"] and "eta_s" not in d


def test_cli_picks_the_newest_run_and_prints_json(record, capsys):
    other = RunPaths.for_run("older")
    other.root.mkdir(parents=True)
    write_json_atomic(other.state, {"status": "complete", "attempts": 1})
    time.sleep(0.01)
    write_json_atomic(record.state, json.loads(record.state.read_text()))  # newest
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == "night"
    assert cli.main(["status", "older"]) == 0
    assert "run 'older': finished" in capsys.readouterr().out
    assert cli.main(["status", "nope"]) == 2
    assert "give one of: night, older" in capsys.readouterr().err
