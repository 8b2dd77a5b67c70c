"""`launcher.accounting`: the run record read and its time accounted, without drawing anything
(no matplotlib): the real CPU rehearsal record and small records written here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import accounting
from launcher.errors import BadInput
from launcher.runlog import Ev, unix_time

FIXTURE = Path(__file__).parent / "fixtures" / "run_record"
ROOT = Path(__file__).resolve().parents[1]
T0 = 1_780_000_000.0
L = "rtdetr-l.yaml"
HEAD = "epoch,time,metrics/mAP50(B),metrics/mAP50-95(B)\n"
STATE = {"run": "r", "ladder": "/l.toml", "data": "/d.yaml", "device": "0", "rung": "optimal"}


def ev(name: str, t: float, **fields) -> dict:
    return {"ts": "2026-06-01T00:00:00+00:00", "event": name, "t": T0 + t, **fields}


def write(root: Path, events: list, state: dict | None = None, results: dict[str, str] | None = None) -> Path:
    """A record: events (dicts, or raw lines as bytes/str), state.json, results.csv per model stem."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [e if isinstance(e, bytes) else (e if isinstance(e, str) else json.dumps(e)).encode() for e in events]
    (root / "events.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    if state is not None:
        (root / "state.json").write_text(json.dumps({**STATE, **state}))
    for stem, text in (results or {}).items():
        (root / "models" / stem).mkdir(parents=True, exist_ok=True)
        (root / "models" / stem / "results.csv").write_text(text)
    return root


def test_the_real_rehearsal_record(tmp_path):
    """`run --demo --inject cuda_oom:optimal:2` on a CPU: a late OOM after epoch 1, an OOM at
    start-up, a step down, epoch 2 on optimal-b4."""
    rec = accounting.load(shutil.copytree(FIXTURE, tmp_path / "rehearsal"))
    assert (rec.name, rec.status, len(rec.sessions), len(rec.telemetry)) == ("rehearsal", Ev.COMPLETE, 1, 27)
    assert [(a.n, a.rung, a.kind, a.epochs, a.kept) for a in rec.attempts] == [
        (1, "optimal", "cuda_oom", (1,), 1), (2, "optimal", "cuda_oom", (), 0), (3, "optimal-b4", None, (2,), 1)]
    assert [a.then for a in rec.attempts] == ["retry", "step down → optimal-b4", "complete"]
    # kept: epoch 1 from results.csv's `time` (85.3696 s), epoch 2 from attempt 3's own start (98.0871 s)
    assert rec.kept_s == pytest.approx(85.3696 + 98.0871)
    assert rec.wall_s == pytest.approx(282.2348, abs=1e-3)  # `start` (ISO ts) to the last attempt_end's `t`
    # attempt 1 less its kept epoch, all of attempt 2, and the two short waits before the next attempts
    assert rec.wait_s == pytest.approx(0.0443 + 0.0472, abs=1e-3)
    assert rec.lost_s == pytest.approx(121.3343 - 85.3696 + 29.3623 + rec.wait_s, abs=1e-3)
    assert rec.goodput == pytest.approx(rec.kept_s / rec.wall_s)
    # state.json names a save_dir on another machine: results.csv is found under the record
    assert accounting.results_csv(rec.root, rec.models[accounting.model_key(L)]) == rec.root / "models/rtdetr-l/results.csv"
    key, last, best, what = accounting.final_metrics(rec)
    assert (key, last["epoch"], what) == (accounting.model_key(L), 2.0, "delivered model") and best is last


def test_read_results_last_row_of_a_repeated_epoch_wins_and_a_torn_row_is_skipped(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("   epoch,      time,  metrics/mAP50-95(B)\n  1, 20, 0.1\n  2, 40, 0.2\n  2, 25, 0.3\n  3, 5")
    assert accounting.read_results(path) == {1: {"epoch": 1, "time": 20, accounting.MAP50_95: 0.1},
                                              2: {"epoch": 2, "time": 25, accounting.MAP50_95: 0.3}}
    assert accounting.read_results(tmp_path / "missing.csv") == {}


def test_event_time_prefers_t_and_falls_back_on_ts():
    assert unix_time(5.5, "2026-06-01T00:00:00+00:00") == 5.5
    assert unix_time(True, "1970-01-01T00:00:10+00:00") == 10.0
    assert unix_time(float("nan"), None) is None and unix_time(None, "noon") is None


def test_kept_time_is_estimated_where_results_csv_lacks_the_epochs(tmp_path):
    """No results.csv: a failed attempt's 2 epochs share its 300 s with the epoch it died in."""
    root = write(tmp_path / "r", [
        ev(Ev.START, 0),
        ev(Ev.ATTEMPT_START, 0, attempt=1, rung="optimal", mode="train", model=L),
        ev(Ev.ATTEMPT_END, 300, attempt=1, kind="cuda_oom", epochs_saved=2, last_saved_epoch=2),
        ev(Ev.RETRY, 300, wait_s=20.0),
        ev(Ev.ATTEMPT_START, 320, attempt=2, rung="optimal", mode="train", model=L),
        ev(Ev.INTERRUPTED, 400, reason="stopped by SIGINT"),
    ])
    rec = accounting.load(root)
    first, second = rec.attempts
    assert first.kept_estimated and first.kept == 2 and first.kept_s == pytest.approx(300 * 2 / 3)
    assert first.then == "retry after 20 s" and second.then == Ev.INTERRUPTED and not second.ended
    assert (rec.status, rec.reason, rec.wall_s) == (Ev.INTERRUPTED, "stopped by SIGINT", 400)
    assert rec.lost_s == pytest.approx(300 / 3 + 20) and rec.wait_s == 20


def test_an_interrupted_attempt_is_interrupted_time_not_time_lost_to_failures(tmp_path):
    """#1 dies of an OOM after 2 epochs, #2 resumes at epoch 3 and is stopped by Ctrl-C after saving
    it, #3 (a later `run`) finishes epoch 4. The OOM's unkept time and its wait are lost to
    failures; the Ctrl-C'd attempt's unkept time is interrupted time, not lost."""
    root = write(tmp_path / "r", [
        ev(Ev.START, 0),
        ev(Ev.ATTEMPT_START, 0, attempt=1, rung="optimal", mode="train", model=L, resume_from=None),
        ev(Ev.ATTEMPT_END, 500, attempt=1, kind="cuda_oom", epochs_saved=2, last_saved_epoch=2),
        ev(Ev.RETRY, 500, wait_s=20.0),
        ev(Ev.RESUME, 520, attempt=2, rung="optimal", checkpoint="/m/last.pt", epochs_done=2),
        ev(Ev.ATTEMPT_START, 520, attempt=2, rung="optimal", mode="train", model=L, resume_from="/m/last.pt"),
        ev(Ev.ATTEMPT_END, 900, attempt=2, kind="interrupted", evidence="the launcher received SIGINT",
           epochs_saved=1, last_saved_epoch=3),
        ev(Ev.INTERRUPTED, 900, reason="stopped by SIGINT"),
        ev(Ev.CONTINUE, 5000),
        ev(Ev.RESUME, 5000, attempt=3, rung="optimal", checkpoint="/m/last.pt", epochs_done=3),
        ev(Ev.ATTEMPT_START, 5000, attempt=3, rung="optimal", mode="train", model=L, resume_from="/m/last.pt"),
        ev(Ev.ATTEMPT_END, 5300, attempt=3, kind=None, epochs_saved=1, last_saved_epoch=4),
        ev(Ev.COMPLETE, 5300, model=L),
    ], results={"rtdetr-l": HEAD + "1,150,0.2,0.1\n2,300,0.3,0.2\n3,200,0.4,0.3\n4,250,0.5,0.4\n"})
    rec = accounting.load(root)
    oom, stopped, done = rec.attempts
    assert (oom.lost, oom.interrupted) == (True, False) and (stopped.lost, stopped.interrupted) == (False, True)
    assert stopped.failed and not done.failed  # `failed` still means "ended with a kind"
    assert [(a.kept, a.kept_s) for a in rec.attempts] == [(2, 300.0), (1, 200.0), (1, 250.0)]
    assert rec.wall_s == 900 + 300 and rec.kept_s == 750
    assert rec.wait_s == 20
    assert rec.lost_s == pytest.approx((500 - 300) + 20)  # the OOM only: not the Ctrl-C (that was 400 s)
    assert rec.interrupted_s == pytest.approx((900 - 520) - 200)  # the Ctrl-C'd attempt less its kept epoch
    # the resumed attempts say where they picked training up (`resume`'s epochs_done + 1)
    assert [(a.resume_from, a.resumed_at) for a in rec.attempts] == [(None, None), ("/m/last.pt", 3),
                                                                     ("/m/last.pt", 4)]


def test_a_resumed_attempt_without_epochs_done_takes_its_epoch_from_the_telemetry(tmp_path):
    root = write(tmp_path / "r", [
        ev(Ev.START, 0),
        ev(Ev.ATTEMPT_START, 0, attempt=1, rung="optimal", mode="train", model=L, resume_from="/m/last.pt"),
        ev(Ev.ATTEMPT_START, 100, attempt=2, rung="optimal", mode="validate", model=L, resume_from="/m/last.pt"),
    ])
    (root / "telemetry.jsonl").write_text("".join(json.dumps(s) + "\n" for s in [
        {"t": T0 + 10, "attempt": 1, "epoch": None}, {"t": T0 + 20, "attempt": 1, "epoch": 7},
        {"t": T0 + 30, "attempt": 1, "epoch": 8}, {"t": T0 + 110, "attempt": 2, "epoch": 9}]))
    rec = accounting.load(root)
    assert [a.resumed_at for a in rec.attempts] == [7, None]  # a validation resumes no training


def test_a_model_set_aside_in_state_only_keeps_nothing_and_a_validation_trains_nothing(tmp_path):
    """state.json says rtdetr-l was set aside (no model_set_aside event survived); the run went on
    with mnv4 and then only validated it."""
    root = write(tmp_path / "r", [
        ev(Ev.START, 0),
        ev(Ev.ATTEMPT_START, 0, attempt=1, rung="optimal", mode="train", model=L),
        ev(Ev.ATTEMPT_END, 100, attempt=1, kind="cuda_oom", epochs_saved=1, last_saved_epoch=1),
        ev(Ev.STEP_DOWN, 100, to="mnv4"),
        ev(Ev.ATTEMPT_START, 100, attempt=2, rung="mnv4", mode="train", model="rtdetr-mnv4.yaml"),
        ev(Ev.ATTEMPT_END, 200, attempt=2, kind="cuda_oom", phase="final", epochs_saved=1, last_saved_epoch=1),
        ev(Ev.VALIDATE, 200, to="safe"),
        ev(Ev.ATTEMPT_START, 200, attempt=3, rung="safe", mode="validate", model="rtdetr-mnv4.yaml"),
        ev(Ev.ATTEMPT_END, 230, attempt=3, kind=None, epochs_saved=0),
    ], state={"status": "running", "models": {
        L: {"save_dir": "/gone", "epochs": 10, "epochs_done": 1, "set_aside": True},
        "rtdetr-mnv4.yaml": {"save_dir": "/gone", "epochs": 1, "epochs_done": 1}}},
        results={"rtdetr-l": HEAD + "1,80,0.2,0.1\n", "rtdetr-mnv4": HEAD + "1,60,0.4,0.3\n"})
    rec = accounting.load(root)
    assert {k: e.fields for k, e in rec.set_aside.items()} == {
        accounting.model_key(L): {"model": L, "epochs_done": 1, "of": 10, "save_dir": "/gone"}}
    assert rec.counting == {accounting.model_key("rtdetr-mnv4.yaml")} and rec.status == "running" and rec.delivered is None
    assert [(a.mode, a.epochs, a.kept, a.kept_s) for a in rec.attempts] == [
        ("train", (1,), 0, 0.0), ("train", (1,), 1, 60.0), ("validate", (), 0, 0.0)]
    assert rec.attempts[1].then == "validate at safe"
    key, last, _, what = accounting.final_metrics(rec)
    assert key == accounting.model_key("rtdetr-mnv4.yaml") and last[accounting.MAP50_95] == 0.3 and what.startswith("model in training")


def test_lines_that_are_not_events_are_skipped(tmp_path):
    root = write(tmp_path / "r", [
        ev(Ev.START, 0), "[]", b"\xff\xfe not utf-8 \x80", {"attempt": 1}, "42",
        {"event": Ev.ATTEMPT_START, "attempt": "one"}, {"event": Ev.ATTEMPT_END, "attempt": 9},
        {"event": Ev.MODEL_SET_ASIDE, "model": 7},
        ev(Ev.ATTEMPT_START, 10, attempt=1, rung="optimal", model=L),
        ev(Ev.ATTEMPT_END, 70, attempt=1, kind=None, epochs_saved="two"),
        '{"event": "complete", "model": "rtdetr-l.y',
    ])
    rec = accounting.load(root)
    assert [(a.n, a.seconds, a.epochs_saved) for a in rec.attempts] == [(1, 60.0, 0)]
    assert rec.status == "running" and rec.wall_s == 70


def test_a_delivered_that_is_not_an_object_delivers_nothing(tmp_path):
    """RunState does not type `delivered`: a complete run whose state.json says `"delivered": "yes"`
    (and whose complete event was lost) reports nothing delivered rather than crashing."""
    root = write(tmp_path / "r", [ev(Ev.START, 0)], state={"status": Ev.COMPLETE, "delivered": "yes"})
    rec = accounting.load(root)
    assert (rec.status, rec.delivered) == (Ev.COMPLETE, None)


@pytest.mark.parametrize("state, key", [
    ({"attempts": "x"}, "attempts"),
    ({"models": []}, "models"),
    ({"models": {L: 3}}, "models"),
    ({"run": 5}, "run"),
    ({"version": 99}, "version"),
])
def test_a_state_json_with_wrong_types_is_one_line_naming_the_file_and_key(tmp_path, state, key):
    root = write(tmp_path / "r", [ev(Ev.START, 0)], state=state)
    with pytest.raises(BadInput) as e:
        accounting.load(root)
    assert str(root / "state.json") in str(e.value) and repr(key) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe", ""], ids=["torn", "not-utf8", "empty"])
def test_a_state_json_that_is_not_json_is_one_line(tmp_path, text):
    root = write(tmp_path / "r", [ev(Ev.START, 0)])
    (root / "state.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(BadInput, match="state.json"):
        accounting.load(root)


def test_reading_and_writing_the_markdown_import_no_matplotlib():
    script = ("import sys, launcher.report, launcher.accounting, launcher.report_md, launcher.timeline\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'torch', 'numpy')))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_run_on_slurm_reports_its_jobs_requeues_and_waits(tmp_path):
    from launcher import accounting, report_md
    from launcher.runlog import Events, RunPaths, RunState
    paths = RunPaths(tmp_path / "night")
    paths.root.mkdir(parents=True)
    RunState(run="night", ladder="l.toml", data="d.yaml", device="0", rung="a", requeues=2,
             slurm_jobs=["4242"]).save(paths.state)
    ev = Events(paths.events)
    for ts, event in (("02:00:00", "slurm"), ("03:00:00", "time_limit"), ("03:00:06", "slurm"),
                      ("04:00:00", "preempted"), ("04:10:00", "slurm")):
        ev.add({"ts": f"2026-12-01T{ts}+00:00", "event": event})
    rec = accounting.load(paths.root)
    assert rec.slurm == {"jobs": ["4242"], "requeues": 2, "waiting_s": 606.0}
    assert "- **SLURM:** job 4242; 2 requeues (time limits and preemptions), 10 min 06 s waiting to run again" \
        in report_md.markdown(rec)
