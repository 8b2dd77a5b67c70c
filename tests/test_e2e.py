"""End to end: `python -m launcher run` with real Ultralytics training on the CPU, a tiny generated
dataset, and real torch.OutOfMemoryError raised inside the model's forward pass (--inject).

Each test is a real night in miniature: a supervisor process, one child process per attempt,
checkpoints written and resumed by Ultralytics itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.child import FINAL_VAL_OWED, FINISHED, checkpoint_state

from helpers import TINY, events, launch, model_dir, of, tiny_ladder, trained_epochs, verified_copy

pytestmark = pytest.mark.slow


def test_late_oom_retries_the_rung_then_early_oom_steps_down_and_resumes(tmp_path, shapes):
    ladder = tiny_ladder(tmp_path, shapes)
    p = launch(tmp_path, "--ladder", str(ladder), "--inject", "cuda_oom:optimal:2")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    evs = events(tmp_path)
    ends = of(evs, "attempt_end")
    assert [(e["rung"], e["kind"]) for e in ends] == [("optimal", "cuda_oom"), ("optimal", "cuda_oom"),
                                                     ("optimal-b4", None)]
    assert ends[0]["epochs_saved"] == 1 and ends[1]["epochs_saved"] == 0
    assert "injected by the launcher" in ends[0]["evidence"]
    assert [e["event"] for e in evs if e["event"] in ("retry", "step_down", "complete")] == [
        "retry", "step_down", "complete"]
    assert of(evs, "step_down")[0]["to"] == "optimal-b4"
    # the resumed attempt started at epoch 2 with the new batch: epoch 1 was not trained again
    hb = json.loads((tmp_path / "logs" / "e2e" / "attempt-3" / "heartbeat.json").read_text())
    assert hb["start_epoch"] == 2 and hb["phase"] == "done"
    spec = json.loads((tmp_path / "logs" / "e2e" / "attempt-3" / "spec.json").read_text())
    assert spec["train_args"]["batch"] == 2
    assert trained_epochs(model_dir(tmp_path, "e2e")) == [1, 2]
    # Ultralytics' own first-epoch halving stayed off: the ladder decided every batch
    assert "Reducing to batch" not in p.stdout
    state = json.loads((tmp_path / "logs" / "e2e" / "state.json").read_text())
    assert state["status"] == "complete" and Path(state["delivered"]["best"]).is_file()
    assert "trained:" in p.stdout and "run record:" in p.stdout

    # a second run of the finished run trains nothing and exits 0
    again = launch(tmp_path, "--ladder", str(ladder))
    assert again.returncode == 0 and "already finished" in again.stdout
    assert not (tmp_path / "logs" / "e2e" / "attempt-4").exists()

    # a rehearsal is a drill: its injected OOMs teach the learned rungs nothing
    assert not (tmp_path / "logs" / "experience.json").exists()
    dry = subprocess.run([sys.executable, "-m", "launcher", "dry-run", "--ladder", str(ladder), "--device", "cpu",
                          "--json"], cwd=tmp_path, capture_output=True, text=True)
    assert json.loads(dry.stdout)["start_rung"] == "optimal"


def test_oom_in_validation_still_ends_trained_and_validated(tmp_path, shapes):
    p = launch(tmp_path, "--ladder", str(tiny_ladder(tmp_path, shapes)), "--inject", "cuda_oom:optimal:1:val")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    ends = of(events(tmp_path), "attempt_end")
    assert (ends[0]["kind"], ends[0]["phase"]) == ("cuda_oom", "val")
    assert ends[-1]["kind"] is None and ends[-1]["rung"] == "optimal-b4"
    assert (model_dir(tmp_path, "e2e") / "weights" / "best.pt").is_file()


def test_oom_in_final_validation_validates_at_a_lower_batch_without_retraining(tmp_path, shapes):
    p = launch(tmp_path, "--ladder", str(tiny_ladder(tmp_path, shapes)), "--inject", "cuda_oom:optimal:2:final")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    evs = events(tmp_path)
    ends = of(evs, "attempt_end")
    assert [(e["rung"], e["kind"], e["phase"]) for e in ends] == [
        ("optimal", "cuda_oom", "final"), ("optimal-b4", None, None)]
    assert of(evs, "validate")[0]["to"] == "optimal-b4"
    report = json.loads((tmp_path / "logs" / "e2e" / "attempt-2" / "report.json").read_text())
    assert report["ok"] and report["validated_only"] and "metrics/mAP50-95(B)" in report["metrics"]
    assert report["epochs_saved"] == 0  # nothing retrained
    weights = model_dir(tmp_path, "e2e") / "weights"
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]  # no spare left behind
    assert trained_epochs(model_dir(tmp_path, "e2e")) == [1, 2]


def test_injected_crash_stops_at_once_with_exit_4(tmp_path, shapes):
    p = launch(tmp_path, "--ladder", str(tiny_ladder(tmp_path, shapes)), "--inject", "crash:optimal:1")
    assert p.returncode == 4
    evs = events(tmp_path)
    assert len(of(evs, "attempt_end")) == 1 and not of(evs, "step_down")
    assert "injected crash" in p.stdout and "fatal" in p.stdout
    assert of(evs, "fatal")


def test_running_again_continues_a_stopped_run_from_its_checkpoint(tmp_path, shapes):
    ladder = tiny_ladder(tmp_path, shapes)
    first = launch(tmp_path, "--ladder", str(ladder), "--inject", "crash:optimal:2")
    assert first.returncode == 4  # epoch 1 saved, then a fatal failure
    weights = model_dir(tmp_path, "e2e") / "weights"
    verified = verified_copy(tmp_path, "e2e")
    assert not os.path.samefile(verified, weights / "last.pt")  # a file of its own
    assert verified.read_bytes() == (weights / "last.pt").read_bytes()  # refreshed at the first save
    refused = launch(tmp_path, "--ladder", str(ladder), "--epochs", "3")
    assert refused.returncode == 2 and "start afresh with --fresh" in refused.stderr
    again = launch(tmp_path, "--ladder", str(ladder))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "continuing run 'e2e' at rung optimal (attempt 2)" in again.stdout
    evs = events(tmp_path)
    assert [e["event"] for e in evs].count("start") == 1 and of(evs, "continue")
    assert of(evs, "resume")[0]["checkpoint"] == str(model_dir(tmp_path) / "weights" / "last.pt")
    assert trained_epochs(model_dir(tmp_path, "e2e")) == [1, 2]
    # final_eval stripped the optimizer from last.pt into a new file; the verified copy still holds
    # the last epoch with its optimizer
    assert not os.path.samefile(verified, weights / "last.pt")
    assert checkpoint_state(weights / "last.pt")[0] == FINISHED
    assert checkpoint_state(verified) == (FINAL_VAL_OWED, {"epoch": 1, "epochs": 2, "epochs_done": 2})
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]  # no spare left behind


def test_walk_across_models_resumes_each_models_own_checkpoint(tmp_path, shapes):
    """rtdetr-l (here its tiny stand-in) → the real mnv4 rung (a fresh run of another model) →
    safe, which resumes the first model's own checkpoint."""
    ladder = tiny_ladder(tmp_path, shapes, with_mnv4=True)
    p = launch(tmp_path, "--ladder", str(ladder), "--name", "walk",
               "--inject", "cuda_oom:optimal:2", "--inject", "cuda_oom:optimal-b4:2", "--inject", "cuda_oom:mnv4:1")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    evs = events(tmp_path, "walk")
    ends = of(evs, "attempt_end")
    assert [e["rung"] for e in ends] == ["optimal", "optimal", "optimal-b4", "mnv4", "safe"]
    starts = of(evs, "attempt_start")
    assert starts[3]["model"].endswith("rtdetr-mnv4.yaml") and starts[3]["resume_from"] is None
    assert starts[4]["model"] == str(TINY) and starts[4]["resume_from"] == str(model_dir(tmp_path, "walk") / "weights" / "last.pt")
    aside = of(evs, "model_set_aside")
    assert aside[0]["model"] == str(TINY) and aside[0]["epochs_done"] == 1 and aside[0]["next_model"] == "rtdetr-mnv4"
    assert of(evs, "complete")[0]["model"] == str(TINY)
    assert trained_epochs(model_dir(tmp_path, "walk")) == [1, 2]
    assert "model rtdetr-tiny.yaml: epochs done 2/2, delivered" in p.stdout
