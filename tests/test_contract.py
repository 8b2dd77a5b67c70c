"""The documents that cross the parent/child boundary (contract.Spec, Heartbeat, Report): what the
writers put on disk, and what every reader gets from an earlier launcher's file (no `version`) or a
damaged one: a clear answer, never a KeyError (docs/design.md, "The run record")."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import cli, failures, spec as spec_mod, status
from launcher.contract import CHILD_FAILED, CUDA_OOM, FATAL, Heartbeat, Report, Spec, Unreadable
from launcher.failures import ChildEnd
from launcher import ladder as ladder_mod
from launcher.launch import Watchdog
from launcher.memory import RamWatch
from launcher.runlog import RunPaths
from launcher.supervisor import Outcome

from conftest import ROOT

# As the launcher before versioned documents wrote them (spec.build, Watch.snapshot, child.main).
OLD_SPEC = {
    "run": "coco_indoor", "attempt": 3, "rung": "optimal-b4", "mode": "train",
    "inject": [{"kind": "cuda_oom", "rung": "optimal", "epoch": 2, "phase": "train"}],
    "train_args": {"model": "rtdetr-l.pt", "data": "/r/logs/x/dataset.yaml", "epochs": 72, "batch": 4, "imgsz": 640,
                   "workers": 4, "cache": "ram", "device": "0", "save_dir": "/r/logs/x/models/rtdetr-l",
                   "exist_ok": True, "rect": False},
    "extra_args": {"lr0": 0.002}, "threads": None, "vram_fraction": 0.85, "vram_limit_bytes": None,
    "cleanup_every": 50, "register": None, "verified": "/r/logs/x/checkpoints/rtdetr-l/last.pt",
    "report": "/r/logs/x/attempt-3/report.json", "heartbeat": "/r/logs/x/attempt-3/heartbeat.json"}
OLD_HEARTBEAT = {"ts": 1764800000.5, "pid": 4242, "attempt": 3, "rung": "optimal-b4", "phase": "train", "epoch": 5,
                 "epochs": 72, "start_epoch": 4, "batch": 17, "batches": 100, "epochs_saved": 1,
                 "last_saved_epoch": 4, "it_s": 2.5, "first_batch_ts": 1764799000.0, "checkpoint": "/r/last.pt"}
OLD_FAILED = {"ok": False, "ts": 1764800001.0, "exc_type": "torch.OutOfMemoryError",
              "message": "CUDA out of memory. Tried to allocate 2.00 GiB", "phase": "train", "epoch": 5,
              "start_epoch": 4, "batch": 17, "epochs_saved": 1, "last_saved_epoch": 4, "peak_rss_bytes": 123}
OLD_OK = {"ok": True, "phase": "done", "epochs_saved": 2, "last_saved_epoch": 72, "best": "/r/best.pt",
          "last": "/r/last.pt", "peak_rss_bytes": 123}


# ---- an earlier launcher's files load as they are -------------------------------------------------

@pytest.mark.parametrize("cls, old", [(Spec, OLD_SPEC), (Heartbeat, OLD_HEARTBEAT), (Report, OLD_FAILED),
                                      (Report, OLD_OK)])
def test_an_earlier_launchers_document_loads_as_version_0_with_every_field(cls, old):
    doc = cls.from_json(old)
    assert isinstance(doc, cls) and doc.version == 0 and doc.problems == (), doc
    assert {k: v for k, v in doc.to_json().items() if k != "version"} == old  # the same keys, the same values


def test_the_writers_keep_the_shape_on_disk_plus_a_version(tmp_path):
    """spec.json holds the keys it always held, and `version`: an earlier launcher's reader (which
    reads by key) still finds all it read."""
    ladder = ladder_mod.load(ROOT / "ladders" / "default.toml")
    spec = spec_mod.build(ladder.job, ladder.rungs[0], "0", RunPaths(tmp_path / "run"), attempt=1)
    # plus the [job] on_thrash the child acts on (issue 21); val_batch only where the rung sets one
    assert set(spec.to_json()) == set(OLD_SPEC) | {"version", "on_thrash"} and spec.to_json()["version"] == Spec.VERSION
    assert Spec.from_json(json.loads(json.dumps(spec.to_json()))) == spec  # a round trip through the file
    assert spec.unusable() is None
    failed = Report(ok=False, ts=1.0, exc_type="X", message="m", phase="train", epoch=1, start_epoch=1, batch=0,
                    epochs_saved=0, last_saved_epoch=None, peak_rss_bytes=1)
    assert set(failed.to_json()) == set(OLD_FAILED) | {"version"}
    done = Report(ok=True, phase="done", epochs_saved=1, last_saved_epoch=2, best="b", last="l", peak_rss_bytes=1)
    assert set(done.to_json()) == set(OLD_OK) | {"version"}  # no exception fields in a success
    assert set(Heartbeat(ts=1.0).to_json()) == set(OLD_HEARTBEAT) | {"version"}


def test_the_old_spec_still_trains_as_it_did():
    """The child's reads of an old spec: Ultralytics' arguments for a fresh start, a resume and the
    final validation, the launcher's own paths."""
    spec = Spec.from_json(OLD_SPEC)
    assert (spec.model, spec.save_dir, spec.epochs, spec.device) == ("rtdetr-l.pt", "/r/logs/x/models/rtdetr-l", 72,
                                                                     "0")
    assert "model" not in spec.fresh_args() and spec.fresh_args()["batch"] == 4
    assert spec.resume_args() == {"data": "/r/logs/x/dataset.yaml", "batch": 4, "imgsz": 640, "workers": 4,
                                  "cache": "ram", "device": "0", "save_dir": "/r/logs/x/models/rtdetr-l"}
    assert spec.validate_args() == {"data": "/r/logs/x/dataset.yaml", "batch": 4, "imgsz": 640, "device": "0",
                                    "workers": 4}
    assert spec.unusable() is None


# ---- a damaged one: a clear answer, never a KeyError ----------------------------------------------

@pytest.mark.parametrize("cls", [Spec, Heartbeat, Report])
@pytest.mark.parametrize("value", [[], "x", 3, None])
def test_a_document_that_is_not_an_object_is_unreadable_with_why(cls, value):
    got = cls.from_json(value)
    assert isinstance(got, Unreadable) and got.why.startswith("not a JSON object but "), got


@pytest.mark.parametrize("cls", [Spec, Heartbeat, Report])
def test_a_missing_torn_or_foreign_file_is_unreadable_with_its_path(cls, tmp_path):
    path = tmp_path / "doc.json"
    assert cls.load(path) == Unreadable(f"{path}: no such file") and cls.read(path) is None
    path.write_text('{"ok": tr')  # a write torn by a power cut
    assert cls.load(path).why.startswith(f"{path}: not JSON") and cls.read(path) is None
    path.write_text("[1, 2]")
    assert cls.load(path) == Unreadable(f"{path}: not a JSON object but list")
    path.write_bytes(b"\xff\xfe")
    assert "cannot be read" in cls.load(path).why


def test_wrong_types_read_as_unknown_and_are_named():
    beat = Heartbeat.from_json({**OLD_HEARTBEAT, "epoch": "5", "it_s": True, "batches": 1.5, "ts": float("nan"),
                                "epochs_saved": None})
    assert (beat.epoch, beat.it_s, beat.batches, beat.ts, beat.epochs_saved) == (None, None, None, None, None)
    assert beat.phase == "train" and beat.batch == 17  # the rest is read
    assert beat.problems == ("'ts' is NaN, not a number", "'epoch' is \"5\", not an integer",
                             "'batches' is 1.5, not an integer", "'it_s' is true, not a number")
    report = Report.from_json({"ok": "yes", "exc_type": 5, "epochs_saved": "2"})
    assert (report.ok, report.exc_type, report.epochs_saved) == (False, None, None)  # a damaged report is no success
    assert "'ok' is \"yes\", not true or false" in report.problems
    spec = Spec.from_json({**OLD_SPEC, "train_args": ["model"], "attempt": "3"})
    assert (spec.train_args, spec.attempt, spec.model) == ({}, 0, None)
    assert spec.unusable() == ("'attempt' is \"3\", not an integer; 'train_args' is [\"model\"], not an object; "
                               "train_args 'model' is not a string; train_args 'save_dir' is not a string")
    assert Heartbeat.from_json({**OLD_HEARTBEAT, "version": 9}).problems == (
        "version 9 is newer than this launcher's (1)",)


def test_missing_keys_read_as_unknown():
    assert Spec.from_json({"attempt": 2, "rung": "a", "extra_args": {"lr0": 0.1}}).extra_args == {"lr0": 0.1}
    assert Heartbeat.from_json({}).phase is None
    assert Report.from_json({}).ok is False
    assert "'report' is missing" in Spec.from_json({}).unusable()


# ---- the readers --------------------------------------------------------------------------------

DAMAGED_HEARTBEATS = [{"phase": 3, "epoch": "x", "batch": [], "first_batch_ts": "soon", "it_s": "fast"}, {}]


@pytest.mark.parametrize("damaged", DAMAGED_HEARTBEATS)
def test_the_watchdog_and_status_read_a_damaged_heartbeat(damaged, tmp_path):
    beat = Heartbeat.from_json(damaged)
    job = ladder_mod.load(ROOT / "ladders" / "default.toml").job
    wd = Watchdog(job, 1, "optimal", tmp_path / "heartbeat.json", (), RamWatch(), clock=lambda: 0.0)
    wd.start()
    assert "phase None, epoch None, batch None" in wd.silence(beat, job.startup_timeout_s + 1.0)
    assert status.eta(beat) is None


def test_status_eta_from_an_old_heartbeat():
    assert status.eta(Heartbeat.from_json(OLD_HEARTBEAT)) == round(((72 - 5) * 100 + 100 - 17) / 2.5)


def test_the_classifier_reads_an_old_report_and_a_damaged_one():
    assert failures.classify(report=Report.from_json(OLD_FAILED)).kind == CUDA_OOM
    assert failures.judge(ChildEnd(0), Report.from_json(OLD_OK), "") is None
    damaged = Report.from_json({"ok": 1, "exc_type": ["x"], "phase": 7})
    assert failures.judge(ChildEnd(0), damaged, "").evidence == "exit code 0 without a success report"
    assert failures.judge(ChildEnd(1), damaged, "").kind == "unknown"


@pytest.mark.parametrize("text", [json.dumps(OLD_FAILED), "[]", '{"epochs_saved": "two", "exc_type": 3}', '{"ok'])
def test_diagnose_reads_an_old_or_damaged_report_beside_the_log(text, tmp_path, capsys):
    attempt = tmp_path / "attempt-3"
    attempt.mkdir()
    (attempt / "train.log").write_text("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n")
    (attempt / "report.json").write_text(text)
    assert cli.main(["diagnose", str(attempt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == CUDA_OOM, out


# ---- the Outcome reads one source ---------------------------------------------------------------

def outcome(report: dict | None, heartbeat: dict | None) -> Outcome:
    return Outcome(1, "optimal", "train", ChildEnd(1), None if report is None else Report.from_json(report),
                   None if heartbeat is None else Heartbeat.from_json(heartbeat), None)


def test_the_outcome_counts_the_most_either_document_says_was_saved():
    """The report is the child's last word, but under DDP the process that writes it never sees a
    save (the ranks save; rank 0 writes the heartbeat): what the attempt saved is the most either
    counts, field by field."""
    o = outcome({**OLD_FAILED, "epochs_saved": 2, "last_saved_epoch": 3},
                {**OLD_HEARTBEAT, "epochs_saved": 1, "last_saved_epoch": 2})
    assert (o.epochs_saved, o.last_saved_epoch) == (2, 3)  # the heartbeat before the last save
    o = outcome({**OLD_FAILED, "epochs_saved": 0, "last_saved_epoch": None},
                {**OLD_HEARTBEAT, "epochs_saved": 5, "last_saved_epoch": 5})
    assert (o.epochs_saved, o.last_saved_epoch) == (5, 5)  # DDP: rank 0's heartbeat


def test_the_outcome_reads_the_heartbeat_without_a_report_that_counts_saves():
    for report in (None, {"ok": False, "exc_type": "KeyError", "message": "x", "epochs_saved": None}):
        o = outcome(report, OLD_HEARTBEAT)  # killed by a signal; failed before its callbacks existed
        assert (o.epochs_saved, o.last_saved_epoch) == (1, 4)
    o = outcome(None, None)
    assert (o.epochs_saved, o.last_saved_epoch) == (0, None)
    o = outcome(None, {"epochs_saved": "1", "last_saved_epoch": 0})  # damaged: nothing saved that can be told
    assert (o.epochs_saved, o.last_saved_epoch) == (0, None)


# ---- the real child -----------------------------------------------------------------------------

def run_child(spec_path: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.child", str(spec_path)], cwd=tmp_path, text=True,
                          capture_output=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})


def test_a_child_given_a_damaged_spec_reports_it_and_the_failure_is_fatal(tmp_path):
    report = tmp_path / "report.json"
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**OLD_SPEC, "train_args": {"model": 3}, "report": str(report),
                                "heartbeat": str(tmp_path / "hb.json")}))
    p = run_child(spec, tmp_path)
    assert p.returncode == CHILD_FAILED, p.stderr[-2000:]
    written = Report.read(report)
    assert written is not None and written.version == Report.VERSION and written.exc_type == "TypeError"
    assert "train_args 'model' is not a string" in written.message
    assert failures.judge(ChildEnd(p.returncode), written, p.stderr).kind == FATAL


def test_a_child_given_no_spec_it_can_read_says_why(tmp_path):
    spec = tmp_path / "spec.json"
    spec.write_text("[]")
    p = run_child(spec, tmp_path)
    assert p.returncode == CHILD_FAILED and "KeyError" not in p.stderr
    assert re.search(r"TypeError: the attempt's spec cannot be used: .*spec.json: not a JSON object but list",
                     p.stderr), p.stderr[-2000:]


# ---- one owner for the keys ---------------------------------------------------------------------

def test_no_key_of_these_documents_is_read_by_name_outside_the_contract():
    """Readers and writers go through contract.py: a key spelled in a reader is a second owner."""
    pattern = re.compile(r"""\b(spec|report|heartbeat|beat|hb)(\[["']|\.get\(["'])|\bspec\.train_args\[""")
    found = [f"{path.name}:{n}: {line.strip()}" for path in sorted((ROOT / "launcher").glob("*.py"))
             if path.name != "contract.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == [], "\n".join(found)
