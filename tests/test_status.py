"""`status` from a run record alone: live (the launcher holds the run), stopped, finished."""

from __future__ import annotations

import json
import time

import pytest

from launcher import cli, fmt, status
from launcher.runlog import Events, Ev, JsonLines, RunLock, RunPaths, write_json_atomic

GIB = 2**30


def state(**fields) -> dict:
    """A state.json as the launcher writes it (RunState's required keys), with `fields` over it."""
    return {"run": "night", "ladder": "/ladders/night.toml", "data": "/data/coco.yaml", "device": "0",
            "rung": "optimal", **fields}


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
    write_json_atomic(paths.state, state(status="running", rung="optimal-b4", attempts=2, mode="train", models={
        "rtdetr-l.pt": {"save_dir": str(paths.save_dir("rtdetr-l.pt")), "epochs_done": 4, "epochs": 100}}))
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
    assert "run 'night': training" in out and "epoch 5/100, batch 100/600, 5.00 it/s\n" in out
    assert "  ETA 3 h 11 min, ends about " in out  # 95 epochs and 5/6 of one, 600 batches at 5 it/s
    assert "(95.8 epochs left at 2 min 00 s each, from this run's pace, training only)" in out
    assert "VRAM now 11.0 GiB (peak 13.0 GiB)" in out and "rungs: optimal (attempt 1) → optimal-b4 (attempt 2)" in out


def test_a_run_whose_launcher_is_gone_is_stopped(record):
    d = status.collect(record)  # state says running, but nobody holds the run's lock
    assert d["status"] == "stopped" and "run the same command again" in d["reason"] and "eta_s" not in d


def test_cli_picks_the_newest_run_and_prints_json(record, capsys):
    other = RunPaths.for_run("older")
    other.root.mkdir(parents=True)
    write_json_atomic(other.state, state(run="older", status="complete", attempts=1))
    time.sleep(0.01)
    write_json_atomic(record.state, json.loads(record.state.read_text()))  # newest
    assert cli.main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"] == "night"
    assert cli.main(["status", "older"]) == 0
    assert "run 'older': finished" in capsys.readouterr().out
    assert cli.main(["status", "nope"]) == 2
    assert "give one of: night, older" in capsys.readouterr().err


# ---- a damaged record: bad lines skipped, a bad state.json in one line -------------------------

def write_record(tmp_path, monkeypatch, state_text: str, events: bytes = b"") -> RunPaths:
    """logs/night/ under tmp_path (the current directory) with these state.json and events.jsonl bytes."""
    monkeypatch.chdir(tmp_path)
    paths = RunPaths.for_run("night")
    paths.root.mkdir(parents=True)
    paths.state.write_text(state_text)
    paths.events.write_bytes(events)
    return paths


def test_events_that_are_not_event_objects_are_skipped(tmp_path, monkeypatch, capsys):
    """A `[]` line, bytes that are not UTF-8, an object without "event", an attempt_start without
    its rung or number, a torn last line: status shows what the good lines say."""
    good = [{"ts": "t1", "event": Ev.ATTEMPT_START, "attempt": 1, "rung": "optimal"},
            {"ts": "t2", "event": Ev.ATTEMPT_END, "attempt": 1, "rung": "optimal", "kind": "cuda_oom",
             "evidence": "CUDA out of memory"}]
    events = b"\n".join([b"[]", b"\xff\xfe\x80 garbage", b'{"ts": "t0"}', json.dumps(good[0]).encode(),
                         json.dumps({"event": Ev.ATTEMPT_START}).encode(), json.dumps(good[1]).encode(),
                         b'{"event": "attempt_st'])
    write_record(tmp_path, monkeypatch, json.dumps(state(status="interrupted", attempts=1)), events)
    assert cli.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "last failure: attempt 1 on optimal, cuda_oom at t2: CUDA out of memory" in out
    assert "rungs: optimal (attempt 1)\n" in out


@pytest.mark.parametrize("command", ["status", "report"])
@pytest.mark.parametrize("text, key", [
    pytest.param(json.dumps(state(attempts="x")), "'attempts'", id="attempts-text"),
    pytest.param(json.dumps(state(models=[])), "'models'", id="models-list"),
    pytest.param(json.dumps(state(models={"rtdetr-l.pt": "x"})), "'models'", id="model-text"),
    pytest.param(json.dumps(state(version=2)), "'version'", id="newer-version"),
    pytest.param("{\"run\": \"night\", ", "not JSON", id="torn"),
    pytest.param("[1, 2]", "not a JSON object", id="a-list"),
    pytest.param("\udcff\udcfe", "cannot be read", id="not-utf8"),
])
def test_a_bad_state_json_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys, command, text, key):
    paths = write_record(tmp_path, monkeypatch, "")
    paths.state.write_bytes(text.encode("utf-8", errors="surrogateescape"))
    assert cli.main([command]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and str(paths.state) in lines[0] and key in lines[0], captured.err
    assert "Traceback" not in captured.err + captured.out


def test_odd_values_in_a_live_record_are_shown_not_crashed_on(record):
    """A heartbeat with a text `ts` and `it_s`, telemetry with a text sample, `delivered` not an
    object: status still prints."""
    write_json_atomic(record.heartbeat(2), {"ts": "yesterday", "phase": "train", "epoch": 5, "epochs": 100,
                                            "batch": 1, "batches": 600, "it_s": "fast"})
    JsonLines(record.telemetry).add({"t": time.time(), "vram": "lots", "ram_used": None})
    write_json_atomic(record.state, {**json.loads(record.state.read_text()), "status": "complete",
                                     "delivered": "yes"})
    lock = RunLock(record.lock)
    assert lock.acquire()
    d = status.collect(record)
    assert d["heartbeat_age_s"] is None and d["eta_s"] is None and d["vram"] == {"now": 11 * GIB, "peak": 13 * GIB}
    out = status.text(d)
    assert "run 'night': finished" in out and "epoch 5/100, batch 1/600" in out and "ETA" not in out


def test_status_from_another_folder_finds_the_run_or_names_where_it_looked(record, capsys, tmp_path, monkeypatch):
    from launcher import cli
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["status"]) == 2
    err = capsys.readouterr().err
    assert str(elsewhere / "logs") in err and "RTDETR_LOGS" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("RTDETR_LOGS", str(record.root.parent))  # the one rule, for every command
    assert cli.main(["status", record.root.name]) == 0 and record.root.name in capsys.readouterr().out
    monkeypatch.delenv("RTDETR_LOGS")
    monkeypatch.setattr("launcher.status.CHECKOUT_LOGS", record.root.parent)  # the project's own logs/
    assert cli.main(["status"]) == 0


def test_version_names_the_launcher_ultralytics_and_torch(capsys):
    from launcher import cli
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and out.startswith("rtdetr-launcher 0.") and "ultralytics 8." in out and "torch " in out


def test_status_shows_slurm_jobs_requeues_and_their_cost(record, capsys):
    from launcher import status
    ev = Events(record.events)
    ev.add({"ts": "2026-12-01T02:00:00+00:00", "event": "slurm", "job": "4242", "restarts": 0})
    ev.add({"ts": "2026-12-01T03:00:00+00:00", "event": "time_limit", "reason": "the time limit"})
    ev.add({"ts": "2026-12-01T03:02:30+00:00", "event": "slurm", "job": "4242", "restarts": 1})
    state = json.loads(record.state.read_text())
    state.update(slurm_jobs=["4242"], requeues=1)
    record.state.write_text(json.dumps(state))
    d = status.collect(record)
    assert d["slurm"] == {"jobs": ["4242"], "requeues": 1, "waiting_s": 150.0}
    assert "  SLURM job 4242: 1 requeue, 2 min 30 s waiting to run again" in status.text(d)


def test_a_run_no_launcher_holds_shows_its_memory_at_the_end(record):
    """Issue 18, item 6: the last sample of a finished or stopped run is not "now"."""
    out = status.text(status.collect(record))
    assert "VRAM at the end 11.0 GiB (peak 13.0 GiB); RAM used at the end 21.0 GiB (peak 22.0 GiB)" in out
    assert " now " not in out


def test_a_checkpoints_epochs_are_said_one_way_everywhere(record):
    """Issue 18, item 6: epochs done k/N, never Ultralytics' 0-based `epoch` beside it."""
    from pathlib import Path

    from launcher.child import FINAL_VAL_OWED, RESUMABLE, UNLOADABLE, checkpoint_line
    from launcher.runlog import RunState

    last = Path("m/weights/last.pt")
    assert checkpoint_line(last, RESUMABLE, {"epoch": 0, "epochs": 2, "epochs_done": 1}) == \
        "launcher: checkpoint m/weights/last.pt: resumable, epochs done 1/2"
    assert checkpoint_line(last, FINAL_VAL_OWED, {"epoch": 1, "epochs": 2, "epochs_done": 2}) == \
        "launcher: checkpoint m/weights/last.pt: final val owed, epochs done 2/2"
    assert checkpoint_line(last, UNLOADABLE, {"error": "EOFError: x"}) == \
        "launcher: checkpoint m/weights/last.pt: unloadable (EOFError: x)"
    assert "  model rtdetr-l.pt: epochs done 4/100\n" in status.text(status.collect(record))
    state = RunState.load(record.state)
    assert state.summary("stopped") == [f"  model rtdetr-l.pt: epochs done 4/100 ({record.save_dir('rtdetr-l.pt')})"]


# ---- the ETA of the night (issue 21): from this run's epochs, its pace, or the trial ------------

def live(record, **beat) -> dict:
    """status of the `record` night with its launcher holding it and `beat` over the heartbeat."""
    write_json_atomic(record.heartbeat(2), {"ts": time.time(), "phase": "train", "epochs": 100, "batches": 600,
                                            "start_epoch": 5, **beat})
    lock = RunLock(record.lock)
    assert lock.acquire()
    try:
        d = status.collect(record, now=1_780_000_000.0)
        assert json.loads(json.dumps(d)) == d  # --json prints it as it is
        return d
    finally:
        lock.release()


def test_the_eta_prefers_this_runs_finished_epochs_over_its_pace(record):
    """Attempt 2 saved epochs 5 and 6 in 800 s (results.csv's `time`, training and validation):
    400 s an epoch, not the 120 s of training its it/s gives."""
    write_json_atomic(record.state, {**json.loads(record.state.read_text()), "training_model": "rtdetr-l.pt"})
    results = record.save_dir("rtdetr-l.pt") / "results.csv"
    results.parent.mkdir(parents=True)
    results.write_text("epoch,time\n4,5000\n5,400\n6,800\n")  # epoch 4: attempt 1's clock
    d = live(record, epoch=7, batch=300, it_s=5.0, epochs_saved=2, last_saved_epoch=6)
    assert d["eta_s"] == 93.5 * 400
    assert d["eta"] == {"seconds": 37400.0, "from": "this run's epochs", "epoch_s": 400.0, "epochs": 93.5,
                        "with_val": True, "end": status.iso(1_780_000_000 + 37400)}
    out = status.text(d)
    assert "  ETA 10 h 23 min, ends about " in out and \
        "(93.5 epochs left at 6 min 40 s each, from this run's epochs, training and validation)" in out
    assert f"ends about {fmt.clock(1_780_000_000 + 37400, time.time())} " in out  # local; dated unless today
    results.write_text("epoch,time\n4,5000\n")  # nothing of this attempt's yet: its pace
    d = live(record, epoch=5, batch=300, it_s=5.0, epochs_saved=0)
    assert d["eta"]["from"] == "this run's pace" and d["eta_s"] == 95.5 * 120 and not d["eta"]["with_val"]


def test_before_the_first_batch_the_eta_comes_from_the_trial(record):
    """Setting up (no epoch, no it/s): the start event's trial speed for this rung, × train images,
    × the model's epochs not done; a rung no trial measured gets no ETA."""
    Events(record.events).append(Ev.START, rung="optimal", eta_s=13040.0, train_images=3912,
                                 speeds={"optimal": 30.0, "optimal-b4": 24.0})
    Events(record.events).append(Ev.ATTEMPT_START, attempt=2, rung="optimal-b4", model="rtdetr-l.pt")
    d = live(record, phase="setup", rung="optimal-b4")
    assert d["eta"]["from"] == "the trial" and d["eta_s"] == round(96 * 3912 / 24)  # epochs done 4/100
    assert "from the trial, training only)" in status.text(d)
    d = live(record, phase="setup", rung="safe")
    assert d["eta"] is None and d["eta_s"] is None and "ETA" not in status.text(d)


def test_no_eta_for_a_run_that_is_not_training(record):
    d = live(record, epoch=5, batch=300, it_s=5.0)
    assert d["eta_s"] == 95.5 * 120
    assert live(record, phase="final", epoch=100, batch=600, it_s=5.0)["eta"] is None  # the final validation
    write_json_atomic(record.state, {**json.loads(record.state.read_text()), "mode": "validate"})
    assert live(record, epoch=100, batch=600, it_s=5.0)["eta"] is None  # only the validation is owed
    for ended in ("complete", "fatal"):
        write_json_atomic(record.state, {**json.loads(record.state.read_text()), "mode": "train", "status": ended})
        d = live(record, epoch=5, batch=300, it_s=5.0)
        assert d["eta"] is None and "ETA" not in status.text(d)
    d = status.collect(record)  # no launcher holds it
    assert "eta" not in d
