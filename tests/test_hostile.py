"""What a hostile test of the launcher found (issue 12): bad input that must be one clear line,
a closed stdout or a read-only record that must not end the night badly. No training here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import cli, failures, ladder as ladder_mod, setup
from launcher.contract import EXIT_FATAL, EXIT_OK
from launcher.errors import BadInput
from launcher.failures import ChildEnd
from launcher.runlog import RunPaths, RunState
from launcher.supervisor import Supervisor

from conftest import FIXTURES, ROOT, RUNG, all_available, env_without, ladder_text, make_image_tree, nothing_started, write
from helpers import FakeChild, crash, new_state, ok


def one_line_exit_2(capsys, argv) -> str:
    code = cli.main(argv)
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("field", ["vram_fraction = nan", "min_free_vram_gib = nan", "min_free_vram_gib = inf"])
def test_nan_in_a_ladder_is_refused_naming_file_and_field(capsys, tmp_path, monkeypatch, field):
    monkeypatch.chdir(tmp_path)
    make_image_tree(tmp_path / "ds", 4, 2)
    lad = write(tmp_path / "l.toml", ladder_text() + field + "\n")
    err = one_line_exit_2(capsys, ["dry-run", "--ladder", str(lad), "--device", "cpu"])
    assert str(lad) in err and field.split(" =")[0] in err


def test_a_fresh_name_is_always_a_name_run_takes():
    longest = "n" * ladder_mod.RUN_NAME_MAX
    assert ladder_mod.run_name(longest) == longest
    fresh = setup.fresh_name(longest)
    assert ladder_mod.run_name(fresh) == fresh and len(fresh) == ladder_mod.RUN_NAME_MAX


def test_no_valid_images_is_fatal_at_once(tmp_path):
    """A train list of files that do not exist: Ultralytics' own words, read from the log."""
    lad = all_available(ladder_mod.load(ROOT / "ladders" / "default.toml"))
    log = ("Traceback (most recent call last):\n  File \"ultralytics/data/dataset.py\", line 321, in get_labels\n"
           "RuntimeError: \x1b[34m\x1b[1mtrain: \x1b[0mNo valid images found in /data/list.cache. Images with "
           "incorrectly formatted labels are ignored.\n")
    child = FakeChild([(1, None, 0, log), ok()])
    sup = Supervisor(ladder=lad, planned=lad.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"), launch=child,
                     sleep=lambda s: None, say=lambda line: None)
    state = new_state(lad)
    assert sup.run(state) == EXIT_FATAL and len(child.calls) == 1
    assert "No valid images found" in state.reason and "\x1b" not in state.reason  # no raw colour codes


@pytest.mark.parametrize("log", [
    "RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central directory\n",
    "_pickle.UnpicklingError: invalid load key, '\\x9c'.\n",
])
def test_a_model_file_that_is_not_a_checkpoint_is_fatal_not_a_step_down(log):
    assert failures.judge(ChildEnd(1), None, log).kind == "fatal"


def test_error_lines_carry_no_colour_codes():
    f = failures.classify("FileNotFoundError: \x1b[31m\x1b[1mDataset 'x.yaml' images not found\x1b[0m", 1)
    assert f.kind == "fatal" and "\x1b" not in f.evidence


# ---- a closed stdout never ends the night -------------------------------------------------------

def closed_stdout(monkeypatch):
    """sys.stdout is a pipe whose reader went away (`run ... | grep -m1 x`). Set in the test's
    body: pytest's own capture replaces sys.stdout after the fixtures are set up."""
    r, w = os.pipe()
    os.close(r)
    monkeypatch.setattr(sys, "stdout", open(w, "w", buffering=1))


def test_a_closed_stdout_keeps_retrying_and_recording(tmp_path, monkeypatch):
    closed_stdout(monkeypatch)
    lad = all_available(ladder_mod.load(ROOT / "ladders" / "default.toml"))
    child = FakeChild([crash(), ok()])
    sup = Supervisor(ladder=lad, planned=lad.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"), launch=child,
                     sleep=lambda s: None)  # the real `say`, to the dead pipe
    state = new_state(lad)
    assert sup.run(state) == EXIT_OK and len(child.calls) == 2
    assert RunState.load(tmp_path / "run" / "state.json").status == "complete"


def test_a_command_whose_reader_went_away_exits_0(tmp_path):
    r, w = os.pipe()
    os.close(r)
    p = subprocess.run([sys.executable, "-m", "launcher", "diagnose", str(FIXTURES / "logs" / "nccl_timeout.log")],
                       stdout=w, stderr=subprocess.PIPE, text=True, cwd=ROOT, timeout=60)
    os.close(w)
    assert p.returncode == 0 and "Traceback" not in p.stderr and "BrokenPipe" not in p.stderr, p.stderr


# ---- encodings ------------------------------------------------------------------------------------

def test_an_ascii_terminal_and_a_c_locale_work(tmp_path):
    """PYTHONIOENCODING=ascii and a locale without UTF-8: the launcher's "≥" and "×" are escaped,
    Ultralytics' default.yaml (read for [job.args]) is read as UTF-8."""
    make_image_tree(tmp_path / "ds", 4, 2)
    rung = RUNG.format(name="a", model="rtdetr-l.yaml", epochs=3, batch=4) + 'cache = "ram"\n'
    lad = write(tmp_path / "l.toml", ladder_text(job_extra="[job.args]\npatience = 5\n", rungs=rung))
    env = {**env_without("LANG", "LANGUAGE"), "PYTHONIOENCODING": "ascii", "LC_ALL": "C",
           "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    p = subprocess.run([sys.executable, "-m", "launcher", "dry-run", "--ladder", str(lad), "--device", "cpu",
                        "--ram", "64"], capture_output=True, cwd=tmp_path, env=env, timeout=60)
    out, err = p.stdout.decode("ascii"), p.stderr.decode("ascii", "replace")
    assert p.returncode == 0 and "Traceback" not in err, err
    assert "\\u2265" in out or "\\u00d7" in out  # escaped, not raised


# ---- a record that cannot be written -------------------------------------------------------------

@pytest.fixture
def ro_logs(tmp_path):
    """logs/ on a small tmpfs of its own, which a test can make read-only (root can write a
    chmod-555 folder, so only a read-only mount says no to it)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(logs)],
                                           capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield logs
    subprocess.run(["umount", "-l", str(logs)])


def read_only(folder: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)


def test_a_read_only_logs_folder_is_one_line_before_training(capsys, tmp_path, monkeypatch, ro_logs):
    monkeypatch.chdir(tmp_path)
    make_image_tree(tmp_path / "ds", 4, 2)
    lad = write(tmp_path / "l.toml", ladder_text())
    read_only(ro_logs)
    err = one_line_exit_2(capsys, ["run", "--ladder", str(lad), "--device", "cpu"])
    assert str(ro_logs / "t") in err and "Read-only file system" in err


def test_a_record_made_read_only_during_training_is_fatal_in_one_line(tmp_path, monkeypatch, ro_logs):
    monkeypatch.chdir(tmp_path)
    lad = all_available(ladder_mod.load(ROOT / "ladders" / "default.toml"))
    script = FakeChild([crash(), ok()])

    def child_then_read_only(cmd, env, log_path, watchdog):
        end = script(cmd, env, log_path, watchdog)
        read_only(ro_logs)
        return end
    lines: list[str] = []
    sup = Supervisor(ladder=lad, planned=lad.rungs, start=0, device="0", paths=RunPaths.for_run("t"),
                     launch=child_then_read_only, sleep=lambda s: None, say=lines.append)
    assert sup.run(new_state(lad)) == EXIT_FATAL
    assert lines[-1].startswith("fatal: Read-only file system while writing") and "make it writable" in lines[-1]


@pytest.mark.parametrize("content", [b"\x00garbage" * 1000, None])
def test_a_rung_model_that_is_not_a_checkpoint_is_refused_before_the_night(capsys, tmp_path, monkeypatch, content):
    """Random bytes, or a download cut short (a real zip container missing its end)."""
    import zipfile
    monkeypatch.chdir(tmp_path)
    make_image_tree(tmp_path / "ds", 4, 2)
    weights = tmp_path / "w" / "fine-tune.pt"
    weights.parent.mkdir()
    if content is None:
        with zipfile.ZipFile(weights, "w") as z:
            z.writestr("fine-tune/data.pkl", b"x" * 5000)
        weights.write_bytes(weights.read_bytes()[:3000])
    else:
        weights.write_bytes(content)
    lad = write(tmp_path / "l.toml", ladder_text(rungs=RUNG.format(name="ft", model="w/fine-tune.pt", epochs=3,
                                                                   batch=4)))
    for command in ("dry-run", "run"):
        err = one_line_exit_2(capsys, [command, "--ladder", str(lad), "--device", "cpu"])
        assert f"rung 'ft', model: {weights} is not a readable checkpoint" in err and "complete copy" in err
    assert nothing_started(tmp_path / "logs")
