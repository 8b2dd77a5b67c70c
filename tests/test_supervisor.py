"""The attempt loop driven through the launch seam by scripted fakes: each fake writes what a real
child would (report.json, heartbeat.json, a log) and returns the attempt's record (ChildEnd), with
no process; the tests count what the loop did and read the decisions it recorded."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from launcher import ladder as ladder_mod
from launcher.contract import EXIT_EXHAUSTED, EXIT_FATAL, EXIT_OK
from launcher.failures import ChildEnd
from launcher.runlog import Events, ModelRecord, RunPaths, RunState
from launcher.supervisor import Supervisor

from conftest import ROOT, all_available
from helpers import FakeChild, crash, hung, new_state, ok, oom, ram_killed, with_job


@pytest.fixture
def default():
    return all_available(ladder_mod.load(ROOT / "ladders" / "default.toml"))


def supervise(ladder, tmp_path, script, start=0, **kw):
    child = FakeChild(script)
    waits: list[float] = []
    lines: list[str] = []
    sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=start, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, sleep=waits.append, say=lines.append, **kw)
    state = new_state(ladder, start)
    code = sup.run(state)
    return code, child, waits, lines, Events(tmp_path / "run" / "events.jsonl").read(), state


def decisions(evs):
    """The loop's decisions, as (event, from rung, to rung, kind)."""
    return [(e["event"], e.get("rung"), e.get("to"), e.get("kind")) for e in evs
            if e["event"] in ("retry", "step_down", "validate", "complete", "fatal", "exhausted", "interrupted")]


def test_late_oom_retries_the_rung_early_oom_steps_down(default, tmp_path):
    code, child, waits, _, evs, state = supervise(default, tmp_path, [oom(saved=3), oom(saved=0), ok()])
    assert code == EXIT_OK
    assert [c["rung"] for c in child.calls] == ["optimal", "optimal", "optimal-b4"]
    assert [c["train_args"]["batch"] for c in child.calls] == [6, 6, 4]
    assert waits == []  # OOM policy steps are immediate: no backoff
    assert [e[0] for e in decisions(evs)] == ["retry", "step_down", "complete"]
    assert state.status == "complete" and state.delivered["best"] == "b.pt"


def test_transient_failures_retry_with_exponential_backoff_then_step_down(default, tmp_path):
    code, child, waits, lines, evs, _ = supervise(default, tmp_path, [crash(), crash(), crash(), ok()])
    assert code == EXIT_OK
    assert [c["rung"] for c in child.calls] == ["optimal", "optimal", "optimal", "optimal-b4"]
    assert waits == [10.0, 20.0]  # retries = 2: two waits, doubling
    retries = [e for e in evs if e["event"] == "retry"]
    assert [(e["retry"], e["of"], e["kind"], e["wait_s"]) for e in retries] == [(1, 2, "unknown", 10.0),
                                                                                (2, 2, "unknown", 20.0)]
    assert sum(line.startswith("retry 1/2 of rung optimal in 10 s after unknown") for line in lines) == 1


def test_transient_retries_are_bounded_by_the_attempt_budget(tmp_path):
    """max_attempts = 2 with 5 retries allowed on a rung: two children, never a third."""
    short = with_job(max_attempts=2, retries=5)
    code, child, waits, _, _, state = supervise(short, tmp_path, [crash()] * 3)
    assert code == EXIT_EXHAUSTED and len(child.calls) == 2 and "budget" in state.reason
    assert waits == [10.0]  # no wait is spent on a retry the budget forbids


def test_attempt_budget(tmp_path):
    code, child, _, _, _, state = supervise(with_job(max_attempts=2), tmp_path, [oom(saved=1), oom(saved=1)])
    assert code == EXIT_EXHAUSTED and len(child.calls) == 2 and "budget" in state.reason


def test_a_scripted_night_of_mixed_failures_takes_these_decisions(default, tmp_path):
    script = [oom(saved=2), crash(), oom(saved=0), hung(saved=1), hung(), ram_killed(), ram_killed(),
              oom(saved=1, phase="final"), ok(saved=0)]
    code, child, waits, _, evs, state = supervise(default, tmp_path, script)
    assert code == EXIT_OK
    assert decisions(evs) == [
        ("retry", "optimal", "optimal", "cuda_oom"),  # late OOM: a fresh process on the same rung
        ("retry", "optimal", "optimal", "unknown"),  # transient: wait, then the same rung
        ("step_down", "optimal", "optimal-b4", "cuda_oom"),  # early OOM: the streak of transients ends
        ("retry", "optimal-b4", "optimal-b4", "hang"),  # a hang: once on the rung
        ("step_down", "optimal-b4", "mnv4", "hang"),  # a second hang in a row: down
        ("retry", "mnv4", "mnv4", "host_oom"),  # host RAM: cache off
        ("retry", "mnv4", "mnv4", "host_oom"),  # then half the workers
        ("validate", "mnv4", "safe", "cuda_oom"),  # OOM in the final validation: validate lower, never retrain
        ("complete", "safe", None, None),
    ]
    assert waits == [10.0, 10.0]
    assert [(c["rung"], c["mode"], c["train_args"]["cache"], c["train_args"]["workers"]) for c in child.calls] == [
        ("optimal", "train", "ram", 8), ("optimal", "train", "ram", 8), ("optimal", "train", "ram", 8),
        ("optimal-b4", "train", "ram", 8), ("optimal-b4", "train", "ram", 8), ("mnv4", "train", "ram", 8),
        ("mnv4", "train", False, 8), ("mnv4", "train", False, 4), ("safe", "validate", False, 2)]
    assert state.attempts == 9


def test_a_hang_reaches_the_loop_through_the_seam(default, tmp_path):
    code, child, waits, _, evs, _ = supervise(default, tmp_path, [hung(), ok()])
    end = [e for e in evs if e["event"] == "attempt_end"][0]
    assert code == EXIT_OK and end["kind"] == "hang" and "heartbeat silent for 1801 s" in end["evidence"]
    assert [c["rung"] for c in child.calls] == ["optimal", "optimal"] and waits == [10.0]


def test_a_kernel_oom_kill_is_host_oom_and_turns_the_cache_off(default, tmp_path):
    code, child, _, _, evs, state = supervise(default, tmp_path, [ram_killed(), ok()])
    end = [e for e in evs if e["event"] == "attempt_end"][0]
    assert code == EXIT_OK and end["kind"] == "host_oom" and "oom_kill 0 → 1" in end["evidence"]
    assert [c["train_args"]["cache"] for c in child.calls] == ["ram", False] and state.remedies == {"cache": "off"}


def test_a_sigkill_without_memory_evidence_is_unknown(default, tmp_path):
    code, child, _, _, evs, _ = supervise(default, tmp_path, [(-9, None, 0, ""), ok()])
    assert [e["kind"] for e in evs if e["event"] == "attempt_end"] == ["unknown", None]


def test_fatal_stops_at_once(default, tmp_path):
    fatal = (1, {"exc_type": "FileNotFoundError", "message": "Dataset 'x.yaml' images not found"}, 0, "")
    code, child, waits, lines, evs, state = supervise(default, tmp_path, [fatal])
    assert code == EXIT_FATAL and len(child.calls) == 1 and waits == []
    assert state.status == "fatal" and "images not found" in state.reason


def test_bottom_of_the_ladder_still_failing_exits_3_with_a_summary(default, tmp_path):
    code, child, _, lines, _, state = supervise(default, tmp_path, [oom()] * 4)
    assert code == EXIT_EXHAUSTED and [c["rung"] for c in child.calls] == ["optimal", "optimal-b4", "mnv4", "safe"]
    assert state.status == "exhausted" and "bottom of the ladder" in state.reason
    assert sum(line.startswith("  attempt ") for line in lines) == 4


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
    save_dirs = {Path(c["train_args"]["save_dir"]).name.rsplit("-", 1)[0] for c in child.calls}
    assert save_dirs == {"rtdetr-l", "rtdetr-mnv4"}  # each model its own checkpoints
    aside = [e for e in evs if e["event"] == "model_set_aside"]
    assert len(aside) == 1 and aside[0]["model"] == "rtdetr-l.pt" and aside[0]["epochs_done"] == 1
    assert state.delivered["model"] == "rtdetr-l.pt"
    assert not state.models["rtdetr-l.pt"].set_aside and state.models["rtdetr-l.pt"].complete


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


def test_the_record_is_written_through_the_declared_state(default, tmp_path):
    code, _, _, _, _, state = supervise(default, tmp_path, [oom(saved=2), ok()])
    again = RunState.load(tmp_path / "run" / "state.json")
    assert again == state and again.attempts == 2 and again.models["rtdetr-l.pt"].complete


def test_a_signal_during_a_retry_wait_starts_no_further_child(default, tmp_path):
    child = FakeChild([crash(), ok()])
    sup = Supervisor(ladder=default, planned=default.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, say=lambda line: None)
    sup.sleep = lambda s: sup.signals(signal.SIGTERM, None)  # Ctrl-C arrives while waiting to retry
    state = new_state(default)
    assert sup.run(state) == 143
    assert len(child.calls) == 1 and state.status == "interrupted"


def test_a_signal_during_an_attempt_is_interrupted_not_a_failure(default, tmp_path):
    sup = None

    def poked(cmd, env, log_path, watchdog):
        sup.signals(signal.SIGINT, None)
        return ChildEnd(-2)
    sup = Supervisor(ladder=default, planned=default.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=poked, say=lambda line: None, sleep=lambda s: None)
    state = new_state(default)
    assert sup.run(state) == 130 and state.status == "interrupted" and state.attempts == 1
    assert "no epoch was saved yet" in state.reason  # nothing claims a checkpoint that is not there


class StubbornChild(FakeChild):
    """A launch that carries the seam's `signal` and `stop`: the launcher is signalled mid-attempt,
    and the child ignores it until the grace kill ends it."""

    def __init__(self, script):
        super().__init__(script)
        self.sup: Supervisor | None = None
        self.told: list[tuple[str, float]] = []
        self.stopped = threading.Event()

    def __call__(self, cmd, env, log_path: Path, watchdog) -> ChildEnd:
        self.sup.signals(signal.SIGINT, None)
        self.stopped.wait(timeout=5)  # it ignores the signal: only the tree kill ends it
        return super().__call__(cmd, env, log_path, watchdog)

    def signal(self, sig: int) -> None:
        self.told.append(("signal", sig))

    def stop(self, grace: float) -> None:
        self.told.append(("stop", grace))
        self.stopped.set()


def test_a_signalled_child_that_goes_on_is_killed_after_the_grace_through_the_seam(default, tmp_path):
    """The launcher's signal is passed on through the launch seam, and the whole tree is ended
    after the grace (30 s in a run, 0.2 s here), through the seam's `stop`."""
    child = StubbornChild([(-signal.SIGKILL, None, 0, "")])
    sup = Supervisor(ladder=default, planned=default.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, sleep=lambda s: None, say=lambda line: None)
    assert sup.signals.grace == 30  # a run's grace
    sup.signals.grace, child.sup = 0.2, sup
    state = new_state(default)
    assert sup.run(state) == 130 and state.status == "interrupted" and state.attempts == 1
    assert child.told == [("signal", signal.SIGINT), ("stop", 0)]


@pytest.fixture
def kept_signals():
    """The test delivers real signals to this process: every disposition comes back as it was."""
    kept = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in kept.items():
        signal.signal(s, handler)


def test_a_signal_while_the_attempt_is_written_starts_no_child(default, tmp_path, monkeypatch, kept_signals):
    """Ctrl-C after the loop's last look, while spec.json is written: noted, and no child starts."""
    import launcher.supervisor as supervisor_mod
    real = supervisor_mod.write_json_atomic

    def written_then_interrupted(path, data, **kw):
        real(path, data, **kw)
        if Path(path).name == "spec.json":
            os.kill(os.getpid(), signal.SIGINT)
    monkeypatch.setattr(supervisor_mod, "write_json_atomic", written_then_interrupted)
    ladder = with_job(max_attempts=1)
    code, child, _, lines, evs, state = supervise(ladder, tmp_path, [ok()])
    assert code == 130 and child.calls == [] and state.status == "interrupted"
    # an attempt that started no child never was (issue 17 item 15, review): not counted, no events, no
    # "attempt 1: ... log" line for a log that never exists, nothing left in its folder
    assert state.attempts == 0 and RunState.load(tmp_path / "run" / "state.json").attempts == 0
    assert not any(e["event"] in ("attempt_start", "attempt_end", "resume") for e in evs), evs
    assert not any(line.startswith("attempt 1") for line in lines), lines
    assert not (tmp_path / "run" / "attempt-1").exists()
    # so the next run still has its whole budget (max_attempts = 1)
    monkeypatch.setattr(supervisor_mod, "write_json_atomic", real)
    child = FakeChild([ok()])
    sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, sleep=lambda s: None, say=lambda line: None)
    assert sup.run(state) == EXIT_OK and len(child.calls) == 1 and state.attempts == 1


def test_a_child_interrupted_by_someone_else_is_retried_not_the_end(default, tmp_path):
    poked = (1, {"exc_type": "KeyboardInterrupt", "message": "received SIGTERM", "phase": "train"}, 0, "")
    code, child, waits, _, evs, _ = supervise(default, tmp_path, [poked, ok()])
    assert code == EXIT_OK and len(child.calls) == 2 and waits == [10.0]
    assert [e for e in evs if e["event"] == "retry"][0]["kind"] == "unknown"


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


def test_two_models_whose_files_share_a_stem_never_share_a_folder(tmp_path):
    """Rung a on rtdetr-l.yaml, rung b on some/dir/rtdetr-l.pt: after a's early OOM, b trains its own
    weights in its own folder; a's checkpoint is not continued as if it were b's."""
    own = tmp_path / "some" / "dir" / "rtdetr-l.pt"
    own.parent.mkdir(parents=True)
    own.write_bytes(b"weights")
    lad_path = tmp_path / "l.toml"
    lad_path.write_text('[job]\nname = "t"\ndataset = "ds/data.yaml"\nimgsz = 64\n'
                        '[[rung]]\nname = "a"\nmodel = "rtdetr-l.yaml"\nepochs = 3\nbatch = 4\n'
                        '[[rung]]\nname = "b"\nmodel = "some/dir/rtdetr-l.pt"\nepochs = 3\nbatch = 2\n')
    lad = all_available(ladder_mod.load(lad_path))
    code, child, _, _, _, state = supervise(lad, tmp_path, [oom(saved=0), ok()])
    (a_args, b_args) = (c["train_args"] for c in child.calls)
    assert code == EXIT_OK and b_args["model"] == str(own)
    assert a_args["save_dir"] != b_args["save_dir"] and child.calls[0]["verified"] != child.calls[1]["verified"]
    assert {s: m.save_dir for s, m in state.models.items()} == {a_args["model"]: a_args["save_dir"],
                                                                  str(own): b_args["save_dir"]}
    assert state.delivered["model"] == str(own)


def test_fine_tunes_named_best_pt_get_folders_of_their_own(tmp_path):
    paths = RunPaths(tmp_path)
    v1, v2 = str(tmp_path / "v1" / "best.pt"), str(tmp_path / "v2" / "best.pt")
    assert paths.save_dir(v1) != paths.save_dir(v2)
    assert paths.save_dir(v1).name.startswith("best-") and paths.save_dir(v1) == paths.save_dir(v1)
    assert paths.verified(paths.save_dir(v1)) != paths.verified(paths.save_dir(v2))


def test_a_continued_run_keeps_the_folders_its_record_names(default, tmp_path):
    """A run started by an earlier launcher (models/<stem>) resumes from where its checkpoints are."""
    state = new_state(default)
    state.models["rtdetr-l.pt"] = ModelRecord(save_dir=str(tmp_path / "run" / "models" / "rtdetr-l"), epochs=100,
                                              epochs_done=4)
    child = FakeChild([ok()])
    Supervisor(ladder=default, planned=default.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
               launch=child, sleep=lambda s: None, say=lambda line: None).run(state)
    assert child.calls[0]["train_args"]["save_dir"] == str(tmp_path / "run" / "models" / "rtdetr-l")


def test_a_real_early_oom_is_learned_a_late_one_holds(default, tmp_path):
    from launcher.experience import Experience
    learned = Experience(tmp_path / "experience.json", {"job": "t"})
    supervise(default, tmp_path, [oom(saved=2), oom(saved=0), ok()], experience=learned)
    assert [(e["rung"], e["verdict"]) for e in learned._entries()] == [
        ("optimal", "held"), ("optimal", "oom_early"), ("optimal-b4", "held")]
    assert "optimal" in learned.avoid() and "optimal-b4" not in learned.avoid()


def test_a_failed_validation_is_retried_as_a_validation(default, tmp_path):
    code, child, _, _, _, state = supervise(default, tmp_path, [oom(saved=2, phase="final"), crash(), ok(saved=0)])
    assert code == EXIT_OK
    assert [(c["rung"], c["mode"]) for c in child.calls] == [("optimal", "train"), ("optimal-b4", "validate"),
                                                              ("optimal-b4", "validate")]
    assert state.delivered["model"] == "rtdetr-l.pt"


def test_a_model_an_earlier_launcher_started_without_a_record_keeps_its_folder(default, tmp_path):
    legacy = tmp_path / "run" / "models" / "rtdetr-l" / "weights"
    legacy.mkdir(parents=True)
    (legacy / "last.pt").write_bytes(b"a checkpoint")
    code, child, _, _, _, _ = supervise(default, tmp_path, [ok()])
    assert child.calls[0]["train_args"]["save_dir"] == str(legacy.parent)


def test_a_record_the_previous_launcher_wrote_loads_and_continues(default, tmp_path):
    """tests/fixtures/run_record/state.json is the format before RunState (no version, dict models)."""
    import shutil
    from conftest import FIXTURES
    (tmp_path / "run").mkdir()
    shutil.copy(FIXTURES / "run_record" / "state.json", tmp_path / "run" / "state.json")
    state = RunState.load(tmp_path / "run" / "state.json")
    assert state.version == 1 and state.models["rtdetr-l.yaml"].epochs_done == 2 and state.attempts == 3
    state.status = "running"
    child = FakeChild([ok()])
    Supervisor(ladder=default, planned=default.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
               launch=child, sleep=lambda s: None, say=lambda line: None).run(state)
    assert state.attempts == 4 and RunState.load(tmp_path / "run" / "state.json").status == "complete"
