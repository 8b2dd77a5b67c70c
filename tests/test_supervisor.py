"""The attempt loop driven by scripted fake children: each fake writes what a real child would
(report.json, heartbeat.json, a log) and returns an exit code; the test counts what the loop did."""

from __future__ import annotations

import json
import signal
import tomllib
from pathlib import Path

import pytest

from launcher import ladder as ladder_mod
from launcher.contract import EXIT_EXHAUSTED, EXIT_FATAL, EXIT_OK
from launcher.runlog import Events, RunPaths
from launcher.errors import BadInput
from launcher.supervisor import Supervisor, check_continuation

from conftest import ROOT

OOM = {"exc_type": "torch.OutOfMemoryError", "message": "CUDA out of memory. Tried to allocate 2.00 GiB"}


class FakeChild:
    """Plays a script of attempts: each item is (exit code, report or None, epochs saved, log text)."""

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[dict] = []

    def __call__(self, cmd, env, log_path: Path) -> int:
        spec = json.loads(Path(cmd[-1]).read_text())
        self.calls.append(spec)
        code, report, saved, log = self.script.pop(0)
        log_path.write_text(log)
        Path(spec["heartbeat"]).write_text(json.dumps({"epochs_saved": saved, "last_saved_epoch": saved or None}))
        if report is not None:
            Path(spec["report"]).write_text(json.dumps({"ok": code == 0, "epochs_saved": saved, **report}))
        return code


def ok(saved=1):
    return (0, {"best": "b.pt", "last": "l.pt"}, saved, "")


def oom(saved=0, phase="train"):
    return (1, {**OOM, "phase": phase}, saved, "torch.OutOfMemoryError: CUDA out of memory\n")


@pytest.fixture
def default():
    return ladder_mod.load(ROOT / "ladders" / "default.toml")


def supervise(default, tmp_path, script, start=0, **kw):
    child = FakeChild(script)
    waits: list[float] = []
    lines: list[str] = []
    sup = Supervisor(ladder=default, rungs=default.rungs, start=start, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, sleep=waits.append, say=lines.append, **kw)
    state = {"attempts": 0, "models": {}, "rung": default.rungs[start].name}
    code = sup.run(state)
    return code, child, waits, lines, Events(tmp_path / "run" / "events.jsonl").read(), state


def test_late_oom_retries_the_rung_early_oom_steps_down(default, tmp_path):
    code, child, waits, _, evs, state = supervise(default, tmp_path, [oom(saved=3), oom(saved=0), ok()])
    assert code == EXIT_OK
    assert [c["rung"] for c in child.calls] == ["optimal", "optimal", "optimal-b4"]
    assert [c["train_args"]["batch"] for c in child.calls] == [6, 6, 4]
    assert waits == []  # OOM policy steps are immediate: no backoff
    assert [e["event"] for e in evs if e["event"] in ("retry", "step_down", "complete")] == [
        "retry", "step_down", "complete"]
    assert state["status"] == "complete" and state["delivered"]["best"] == "b.pt"


def test_transient_failures_retry_with_exponential_backoff_then_step_down(default, tmp_path):
    crash = (1, None, 0, "RuntimeError: CUDA error: an illegal memory access was encountered\n")
    code, child, waits, lines, evs, _ = supervise(default, tmp_path, [crash, crash, crash, ok()])
    assert code == EXIT_OK
    assert [c["rung"] for c in child.calls] == ["optimal", "optimal", "optimal", "optimal-b4"]
    assert waits == [10.0, 20.0]  # retries = 2: two waits, doubling
    retries = [e for e in evs if e["event"] == "retry"]
    assert [(e["retry"], e["kind"]) for e in retries] == [(1, "unknown"), (2, "unknown")]
    assert sum("retry 1/2 of rung optimal in 10 s after unknown" in line for line in lines) == 1


def test_fatal_stops_at_once(default, tmp_path):
    fatal = (1, {"exc_type": "FileNotFoundError", "message": "Dataset 'x.yaml' images not found"}, 0, "")
    code, child, waits, lines, evs, state = supervise(default, tmp_path, [fatal])
    assert code == EXIT_FATAL and len(child.calls) == 1 and waits == []
    assert state["status"] == "fatal" and "images not found" in state["reason"]


def test_bottom_of_the_ladder_still_failing_exits_3_with_a_summary(default, tmp_path):
    code, child, _, lines, _, state = supervise(default, tmp_path, [oom()] * 4)
    assert code == EXIT_EXHAUSTED and [c["rung"] for c in child.calls] == ["optimal", "optimal-b4", "mnv4", "safe"]
    assert state["status"] == "exhausted" and "bottom of the ladder" in state["reason"]
    assert sum(line.startswith("  attempt ") for line in lines) == 4


def test_attempt_budget(default, tmp_path):
    raw = tomllib.loads((ROOT / "ladders" / "default.toml").read_text())
    raw["job"]["max_attempts"] = 2
    short = ladder_mod.parse(raw, ROOT / "ladders" / "default.toml")
    code, child, _, _, _, state = supervise(short, tmp_path, [oom(saved=1), oom(saved=1)])
    assert code == EXIT_EXHAUSTED and len(child.calls) == 2 and "budget" in state["reason"]


def test_final_validation_oom_validates_lower_without_retraining(default, tmp_path):
    code, child, _, _, evs, _ = supervise(default, tmp_path, [oom(saved=2, phase="final"), ok(saved=0)])
    assert code == EXIT_OK
    assert [(c["rung"], c["mode"]) for c in child.calls] == [("optimal", "train"), ("optimal-b4", "validate")]
    assert child.calls[1]["train_args"]["model"] == "rtdetr-l.pt" and child.calls[1]["train_args"]["batch"] == 4


def test_stepping_to_another_model_sets_the_first_aside_and_returns_to_it(default, tmp_path):
    # optimal: 1 epoch then late OOM; retry: early OOM; b4: early; mnv4: early; safe resumes rtdetr-l
    script = [oom(saved=1), oom(), oom(), oom(), ok()]
    code, child, _, lines, evs, state = supervise(default, tmp_path, script)
    assert code == EXIT_OK
    models = [Path(c["train_args"]["model"]).name for c in child.calls]
    assert models == ["rtdetr-l.pt", "rtdetr-l.pt", "rtdetr-l.pt", "rtdetr-mnv4.yaml", "rtdetr-l.pt"]
    save_dirs = {Path(c["train_args"]["save_dir"]).name for c in child.calls}
    assert save_dirs == {"rtdetr-l", "rtdetr-mnv4"}  # each model its own checkpoints
    aside = [e for e in evs if e["event"] == "model_set_aside"]
    assert len(aside) == 1 and aside[0]["model"] == "rtdetr-l.pt" and aside[0]["epochs_done"] == 1
    assert state["delivered"]["model"] == "rtdetr-l.pt"


def test_host_oom_remedies_stay_applied_on_lower_rungs(default, tmp_path):
    killed = (1, None, 0, "RuntimeError: DataLoader worker (pid 4242) is killed by signal: Killed.\n")
    code, child, _, _, evs, _ = supervise(default, tmp_path, [killed, killed, oom(), ok()])
    assert code == EXIT_OK
    seen = [(c["rung"], c["train_args"]["cache"], c["train_args"]["workers"]) for c in child.calls]
    assert seen == [("optimal", "ram", 8), ("optimal", False, 8), ("optimal", False, 4), ("optimal-b4", False, 4)]


def test_exit_zero_without_success_report_is_not_success(default, tmp_path):
    weird = (0, None, 0, "")
    code, child, _, _, _, _ = supervise(default, tmp_path, [weird, weird, weird, ok()])
    assert code == EXIT_OK and [c["rung"] for c in child.calls][-1] == "optimal-b4"


def test_continuation_refuses_other_epochs_or_data(default, tmp_path):
    state = {"data": str(default.job.dataset), "epochs_override": 2}
    check_continuation(state, default, tmp_path / "state.json", epochs=2)
    check_continuation(state, default, tmp_path / "state.json", epochs=None)  # not given: the run's own
    with pytest.raises(BadInput, match=r"started with --epochs 2, this run asks 5.*--fresh"):
        check_continuation(state, default, tmp_path / "state.json", epochs=5)
    with pytest.raises(BadInput, match=r"trains on /other.yaml.*pass --data /other.yaml to continue"):
        check_continuation({**state, "data": "/other.yaml"}, default, tmp_path / "state.json", epochs=None)


def test_events_reader_skips_a_torn_last_line(tmp_path):
    events = Events(tmp_path / "events.jsonl")
    events.append("start", rung="optimal")
    events.append("attempt_start", attempt=1)
    with open(events.path, "a") as f:
        f.write('{"ts": "2026-11-26T02:13:44", "event": "attempt_e')  # power cut mid-write
    assert [e["event"] for e in events.read()] == ["start", "attempt_start"]
    events.append("attempt_end", attempt=1)  # the next run appends on a fresh line
    assert [e["event"] for e in events.read()] == ["start", "attempt_start", "attempt_end"]
    assert events.path.read_text().count("\n\n") == 0 and len(events.path.read_text().splitlines()) == 4


def test_a_signal_during_a_retry_wait_starts_no_further_child(default, tmp_path):
    crash = (1, None, 0, "RuntimeError: CUDA error: an illegal memory access was encountered\n")
    child = FakeChild([crash, ok()])
    sup = Supervisor(ladder=default, rungs=default.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, say=lambda line: None)
    sup.sleep = lambda s: sup._on_signal(signal.SIGTERM, None)  # Ctrl-C arrives while waiting to retry
    state = {"attempts": 0, "models": {}, "rung": "optimal"}
    assert sup.run(state) == 143
    assert len(child.calls) == 1 and state["status"] == "interrupted"


def test_a_child_interrupted_by_someone_else_is_retried_not_the_end(default, tmp_path):
    poked = (1, {"exc_type": "KeyboardInterrupt", "message": "received SIGTERM", "phase": "train"}, 0, "")
    code, child, waits, _, evs, _ = supervise(default, tmp_path, [poked, ok()])
    assert code == EXIT_OK and len(child.calls) == 2 and waits == [10.0]
    assert [e for e in evs if e["event"] == "retry"][0]["kind"] == "unknown"
