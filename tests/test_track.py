"""One tracker run per night (launcher/track.py; docs/design.md, "One tracker run per night").

The slow test is a real CPU night with a retry and a step-down to the MobileNetV4 rung, logging
into a real MLflow file store and real TensorBoard event files; the fast ones hold the pure parts:
the night's axis, the re-trained epoch, Ultralytics' own tracker callbacks dropped, a failing
tracker as one record line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher import track
from launcher.callbacks import DROPPED_TRACKERS, drop_trackers
from launcher.runlog import Ev, Events, RunPaths, RunState, read_events, read_jsonl

from helpers import events, of, tiny_ladder


# ---- the night's axis and the re-trained epoch ------------------------------------------------------

def test_the_nights_axis_continues_across_attempts_and_models():
    ledger = []
    for model, epoch in (("tiny.yaml", 1), ("tiny.yaml", 2), ("mnv4.yaml", 1), ("mnv4.yaml", 2)):
        p = track.place(ledger, model, epoch)
        ledger.append({"step": p.step, "model": model, "epoch": epoch})
    assert [d["step"] for d in ledger] == [1, 2, 3, 4]  # a step-down's model continues the axis
    assert not track.place(ledger, "tiny.yaml", 3).retrained and track.place(ledger, "tiny.yaml", 3).step == 5


def test_a_retrained_epoch_takes_the_next_step_and_is_marked_never_a_second_value_at_a_step():
    ledger = [{"step": 1, "model": "m", "epoch": 1}, {"step": 2, "model": "m", "epoch": 2},
              {"attempt": 2, "tracker": "mlflow", "warning": "x"}, {"step": True, "model": "m", "epoch": 9}]
    again = track.place(ledger, "m", 2)  # resumed from an older verified copy: epoch 2 trained again
    assert again == track.Point(3, True)
    assert track.place(ledger, "other", 2) == track.Point(3, False)  # another model's epoch 2 is its own


class FakeTrainer:
    """What the Logger reads of Ultralytics' trainer at a save."""

    def __init__(self, epoch: int):
        self.epoch, self.tloss, self.metrics, self.lr = epoch - 1, [0.5], {"metrics/mAP50(B)": 0.25}, {"lr/pg0": 0.01}

    def label_loss_items(self, loss, prefix="train"):
        return {f"{prefix}/giou_loss": loss[0]}


def logger(tmp_path: Path, attempt: int = 1, model: str = "m.yaml", **track_kw) -> track.Logger:
    return track.Logger({"ledger": str(tmp_path / "track.jsonl"), **track_kw}, attempt, "optimal", model)


def test_the_logger_writes_the_ledger_before_it_logs_and_marks_a_retrained_epoch(tmp_path):
    logged = []
    first = logger(tmp_path, tensorboard={"dir": "x"})
    first._tensorboard = lambda point, epoch, values: logged.append((point.step, epoch, values))
    for epoch in (1, 2):
        first.on_model_save(FakeTrainer(epoch))
    second = logger(tmp_path, attempt=2, tensorboard={"dir": "x"})
    second._tensorboard = lambda point, epoch, values: logged.append((point.step, epoch, values))
    second.on_model_save(FakeTrainer(2))  # the resume trained epoch 2 again
    assert [(s, e) for s, e, _ in logged] == [(1, 1), (2, 2), (3, 2)]
    assert logged[0][2] == {"train/giou_loss": 0.5, "metrics/mAP50B": 0.25, "lr/pg0": 0.01, "launcher/epoch": 1,
                            "launcher/attempt": 1}
    assert "launcher/retrained" not in logged[1][2] and logged[2][2]["launcher/retrained"] == 1
    assert [(d["step"], d["attempt"], d["retrained"]) for d in read_jsonl(tmp_path / "track.jsonl")] == [
        (1, 1, False), (2, 1, False), (3, 2, True)]


def test_a_failing_tracker_is_one_warning_and_training_goes_on(tmp_path, capsys):
    calls = []
    lg = logger(tmp_path, mlflow={"run_id": "r"}, tensorboard={"dir": "x"})

    def broken(point, epoch, values):
        calls.append(epoch)
        raise ConnectionError("store unreachable")
    lg._mlflow = broken
    lg._tensorboard = lambda point, epoch, values: calls.append(("tb", epoch))
    for epoch in (1, 2, 3):
        lg.on_model_save(FakeTrainer(epoch))  # never raises
    assert calls == [1, ("tb", 1), ("tb", 2), ("tb", 3)]  # MLflow tried once, TensorBoard went on
    assert capsys.readouterr().out.count("launcher: mlflow failed") == 1
    assert track.warnings(tmp_path / "track.jsonl", 1) == [("mlflow", "ConnectionError: store unreachable")]
    assert track.warnings(tmp_path / "track.jsonl", 2) == []


def test_a_tracker_that_cannot_be_reached_at_the_start_is_one_record_line_and_the_night_goes_on(tmp_path,
                                                                                                monkeypatch):
    pytest.importorskip("mlflow")
    warned = []
    env = {track.URI_ENV: "http://user:secret@127.0.0.1:9/?token=abc"}  # port 9: refused at once
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    out = track.begin({}, "night", "exp", tmp_path / "tb", (track.MLFLOW, track.TENSORBOARD), env,
                      lambda t, why: warned.append((t, why)))
    assert list(out) == [track.TENSORBOARD] and [t for t, _ in warned] == [track.MLFLOW]
    assert "secret" not in json.dumps([out, warned]) and track.redact(env[track.URI_ENV]) == "http://***@127.0.0.1:9/"


def test_the_supervisor_records_a_childs_tracker_failure_as_one_event(tmp_path):
    paths = RunPaths(tmp_path)
    said = []
    track.Night(paths, Events(paths.events), said.append).warn("tensorboard", "OSError: disk full", 3)
    assert said == ["warning: tensorboard failed in attempt 3 (OSError: disk full); training goes on"]
    (e,) = read_events(paths.events)
    assert (e.kind, e.get("tracker"), e.get("attempt"), e.get("error")) == (
        Ev.TRACK_FAILED, "tensorboard", 3, "OSError: disk full")


# ---- what is configured, and what is dropped --------------------------------------------------------

def test_no_tracker_configured_means_none_wanted(monkeypatch):
    assert track.wanted({}, {}) == ()  # MLflow needs a store named; TensorBoard Ultralytics' setting
    monkeypatch.setattr(track, "installed", lambda name: False)
    assert track.wanted({track.URI_ENV: "file:/x"}, {"tensorboard": True}) == ()  # not installed
    monkeypatch.setattr(track, "installed", lambda name: True)
    assert track.wanted({track.URI_ENV: "file:/x"}, {"tensorboard": True}) == (track.MLFLOW, track.TENSORBOARD)
    assert track.wanted({track.URI_ENV: "file:/x"}, {"mlflow": False}) == ()  # `yolo settings mlflow=False`


def test_a_night_with_no_tracker_imports_no_tracker_code(tmp_path):
    """The launcher's child imports launcher.track only for a spec that names a tracker run."""
    code = ("import sys, launcher.child, launcher.supervisor, launcher.spec; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'tensorboard', 'wandb')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_ultralytics_own_mlflow_and_tensorboard_callbacks_are_dropped_before_any_runs():
    from ultralytics.utils.callbacks.base import get_default_callbacks
    mlflow_cb = pytest.importorskip("ultralytics.utils.callbacks.mlflow")
    if not mlflow_cb.callbacks:
        pytest.skip("mlflow is not installed: Ultralytics has no MLflow callbacks to add")
    ran = []
    callbacks = get_default_callbacks()

    def ours(trainer):  # the Watch's: registered on the model, so before the integrations
        ran.append("ours")
        drop_trackers(trainer)
    callbacks["on_pretrain_routine_start"].append(ours)
    for event, cb in mlflow_cb.callbacks.items():
        callbacks[event].append(cb)
    tb_start = lambda trainer: ran.append("tensorboard")  # noqa: E731
    tb_start.__module__ = "ultralytics.utils.callbacks.tensorboard"
    callbacks["on_pretrain_routine_start"].append(tb_start)
    trainer = SimpleNamespace(callbacks=callbacks)
    for cb in callbacks["on_pretrain_routine_start"]:  # as BaseTrainer.run_callbacks iterates
        cb(trainer)
    assert ran == ["ours"]  # the TensorBoard callback after ours never ran
    left = {cb.__module__ for cbs in callbacks.values() for cb in cbs}
    assert not left & set(DROPPED_TRACKERS)


def test_the_watch_drops_them_at_the_start_of_the_pretrain_routine(tmp_path, monkeypatch):
    import torch
    from ultralytics.engine import trainer as trainer_module
    from launcher.callbacks import Watch
    from launcher.contract import Spec
    monkeypatch.setattr(trainer_module, "strip_optimizer", trainer_module.strip_optimizer)  # the Watch wraps it
    theirs = lambda trainer: None  # noqa: E731
    theirs.__module__ = "ultralytics.utils.callbacks.mlflow"
    callbacks = {"on_pretrain_routine_end": [theirs], "on_fit_epoch_end": [print, theirs]}
    t = SimpleNamespace(last=tmp_path / "last.pt", best=tmp_path / "best.pt", device=torch.device("cpu"),
                        callbacks=callbacks)
    Watch(Spec(heartbeat=str(tmp_path / "hb.json"), verified=str(tmp_path / "v.pt"))).on_pretrain_routine_start(t)
    assert callbacks == {"on_pretrain_routine_end": [], "on_fit_epoch_end": [print]}


# ---- the night --------------------------------------------------------------------------------------

def ultralytics_settings(env: dict, **values) -> None:
    """Ultralytics' own settings file in the sealed config folder, written by Ultralytics."""
    code = f"from ultralytics.utils import SETTINGS; SETTINGS.update({values!r})"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, timeout=120)


@pytest.mark.slow
def test_a_night_with_a_retry_and_a_step_down_to_mnv4_is_one_mlflow_run_and_one_tensorboard_folder(tmp_path, shapes,
                                                                                                    monkeypatch):
    pytest.importorskip("timm")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for it to use a file: store
    # no PYTEST_CURRENT_TEST: Ultralytics' own callbacks run in the children as in a real night
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.update({track.URI_ENV: store, "MLFLOW_ALLOW_FILE_STORE": "true", "PYTHONPATH": os.pathsep.join(filter(None, [
        str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))})
    ultralytics_settings(env, tensorboard=True, mlflow=True)
    ladder = tiny_ladder(tmp_path, shapes, with_mnv4=True)
    # optimal: epoch 1 saved, OOM in epoch 2 (late: retry); again at once (early: step down);
    # optimal-b4 resumes epoch 2 and fails early: step down to mnv4, which trains its 2 epochs
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "launcher", "run", "--device", "cpu", "--ladder", str(ladder),
                        "--inject", "cuda_oom:optimal:2", "--inject", "cuda_oom:optimal-b4:2"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - t0
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    evs = events(tmp_path)
    assert [e["event"] for e in evs if e["event"] in ("retry", "step_down", "complete")] == [
        "retry", "step_down", "step_down", "complete"]
    assert of(evs, "step_down")[-1]["to"] == "mnv4" and not of(evs, "track_failed")
    root = tmp_path / "logs" / "e2e"
    state = json.loads((root / "state.json").read_text())
    run_id = state["tracking"]["mlflow"]["run_id"]

    client = MlflowClient(tracking_uri=store)
    runs = [r for exp in client.search_experiments() for r in client.search_runs([exp.experiment_id])]
    assert [r.info.run_id for r in runs] == [run_id]  # exactly one run: Ultralytics' own started none
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["launcher.rung"] == "mnv4"
    assert run.data.tags["launcher.attempt.1.rung"] == "optimal" and "launcher.attempt.4.model" in run.data.tags
    epochs = client.get_metric_history(run_id, "launcher/epoch")
    # the night's axis: tiny's epoch 1, then mnv4's epochs 1 and 2, each once
    assert sorted((m.step, m.value) for m in epochs) == [(1, 1.0), (2, 1.0), (3, 2.0)]
    assert sorted(m.step for m in client.get_metric_history(run_id, "metrics/mAP50-95B")) == [1, 2, 3]
    assert sorted((m.step, m.value) for m in client.get_metric_history(run_id, "launcher/attempt")) == [
        (1, 1.0), (2, 4.0), (3, 4.0)]

    folders = {f.parent for f in tmp_path.rglob("events.out.tfevents.*")}
    assert folders == {root / "tensorboard"}  # one folder: Ultralytics' own wrote none in a model's save_dir
    acc = EventAccumulator(str(root / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("launcher/epoch")] == [(1, 1.0), (2, 1.0), (3, 2.0)]
    assert [e.step for e in acc.Scalars("metrics/mAP50-95B")] == [1, 2, 3]

    logs = p.stdout + p.stderr + "".join(f.read_text() for f in root.glob("attempt-*/train.log"))
    assert "Failed to initialize" not in logs and "MLflow:" not in logs and "TensorBoard:" not in logs
    status = subprocess.run([sys.executable, "-m", "launcher", "status", "e2e"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert f"tracking: MLflow run {run_id}" in status.stdout and str(root / "tensorboard") in status.stdout
    print(f"the tracked night took {seconds:.0f} s")


def test_status_and_report_name_the_nights_tracker_run_without_secrets(tmp_path, monkeypatch):
    from launcher import accounting, report_md, status
    from launcher.runlog import write_json_atomic
    monkeypatch.chdir(tmp_path)
    paths = RunPaths.for_run("night")
    paths.root.mkdir(parents=True)
    uri = track.redact("https://me:hunter2@mlflow.example/?token=t0k")
    tracking = {"mlflow": {"run_id": "abc123", "experiment_id": "7", "uri": uri},
                "tensorboard": {"dir": str(paths.tensorboard)}}
    write_json_atomic(paths.state, RunState(run="night", ladder="/l.toml", data="/d.yaml", device="cpu", rung="a",
                                            tracking=tracking).to_json())
    Events(paths.events).append(Ev.TRACK_FAILED, tracker="mlflow", attempt=2, error="ConnectionError: refused")
    said = status.text(status.collect(paths))
    assert "  tracking: MLflow run abc123 (experiment 7) at https://***@mlflow.example/\n" in said
    assert f"  tracking: TensorBoard {paths.tensorboard}\n" in said
    md = report_md.markdown(accounting.load(paths.root))
    assert "- **Tracking:** MLflow run abc123 (experiment 7) at https://***@mlflow.example/; TensorBoard " in md
    assert "1 tracker failure, training went on: ConnectionError: refused" in md
    assert "hunter2" not in said + md and "t0k" not in said + md


def test_a_continued_run_keeps_its_mlflow_run_and_a_new_store_gets_a_new_one(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    env, warned = {track.URI_ENV: f"file:{tmp_path / 'a'}"}, []
    first = track.begin({}, "night", "exp", tmp_path / "tb", (track.MLFLOW,), env, lambda *w: warned.append(w))
    track.end(first, "interrupted", env, lambda *w: warned.append(w))
    again = track.begin(first, "night", "exp", tmp_path / "tb", (track.MLFLOW,), env, lambda *w: warned.append(w))
    assert again["mlflow"] == first["mlflow"] and not warned  # the launcher restarted: the same run
    client = MlflowClient(tracking_uri=env[track.URI_ENV])
    assert client.get_run(first["mlflow"]["run_id"]).info.status == "RUNNING"  # running again
    track.end(again, "complete", env, lambda *w: warned.append(w))
    assert client.get_run(first["mlflow"]["run_id"]).info.status == "FINISHED"
    other = {track.URI_ENV: f"file:{tmp_path / 'b'}"}
    moved = track.begin(again, "night", "exp", tmp_path / "tb", (track.MLFLOW,), other, lambda *w: warned.append(w))
    assert moved["mlflow"]["run_id"] != first["mlflow"]["run_id"] and moved["mlflow"]["uri"] == other[track.URI_ENV]
