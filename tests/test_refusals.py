"""A refused `run` is written down where the person will look, and `status` shows it (issue 18,
item 2; docs/design.md, "Dry-run, status, report")."""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime, timezone

from launcher import accounting, cli, refusals, status
from launcher.runlog import Events, Ev, RunLock, RunPaths, write_json_atomic

from conftest import ROOT, env_without, write

NOTHING = "nothing/data.yaml"  # a mistake any machine refuses: a dataset that is not there


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def test_a_refusal_under_a_closed_terminal_is_in_the_log_and_in_status(tmp_path):
    """The README's night in a tmux window that closes with the error: no terminal, stdin, stdout
    and stderr closed. The error is found afterwards in logs/launcher-errors.log and by `status`."""
    env = {**env_without("RTDETR_LOGS"), "PYTHONPATH": str(ROOT)}
    night = subprocess.run(["sh", "-c", f"exec {sys.executable} -m launcher run --data {NOTHING} --device cpu "
                            "epochs=3 <&- >&- 2>&-"], cwd=tmp_path, env=env, start_new_session=True, timeout=120)
    assert night.returncode == 2  # a refusal, not a crash on the closed streams
    log = (tmp_path / "logs" / refusals.LOG_NAME).read_text()
    assert f"python -m launcher run --data {NOTHING} --device cpu epochs=3\n" in log
    assert f"  folder: {tmp_path}\n" in log and f"  error: {tmp_path / NOTHING}" in log
    morning = subprocess.run([sys.executable, "-m", "launcher", "status"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
    assert morning.returncode == 0, morning.stderr
    lines = morning.stdout.splitlines()
    assert lines[0].startswith("last refusal, ") and lines[0].endswith(
        f": python -m launcher run --data {NOTHING} --device cpu epochs=3")
    assert lines[1].startswith(f"  error: {tmp_path / NOTHING}")


def test_with_every_stream_closed_the_next_file_opened_is_not_fd_2(tmp_path):
    """`<&- >&- 2>&-`: /dev/null takes fds 0, 1 and 2 themselves, so the first file the launcher
    opens (a lock, events.jsonl) is fd 3 or above, and a C-level write to fd 2 goes nowhere."""
    out = tmp_path / "first-file"
    code = ("import os, sys; from launcher import console; console.harden(); "
            "fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT); os.write(2, b'C-level stderr\\n'); "
            "print('stdout'); print('stderr', file=sys.stderr); null = os.stat(os.devnull).st_rdev; "
            "os.write(fd, f'{fd} {[os.fstat(i).st_rdev == null for i in (0, 1, 2)]}'.encode())")
    env = {**env_without("RTDETR_LOGS"), "PYTHONPATH": str(ROOT)}
    run = subprocess.run(["sh", "-c", f'exec {sys.executable} -c "{code}" {out} <&- >&- 2>&-'], env=env,
                         timeout=120)
    assert run.returncode == 0
    fd, nulls = out.read_text().split(" ", 1)
    assert int(fd) >= 3 and nulls == "[True, True, True]"


def test_the_error_line_comes_first_and_the_reasons_follow(tmp_path):
    env = {**env_without("RTDETR_LOGS"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "launcher", "run", "--data", NOTHING, "--device", "cpu"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=120)
    lines = out.stdout.splitlines()
    assert out.returncode == 2 and lines[0].startswith(f"error: {tmp_path / NOTHING}")
    assert "launcher: device cpu: VRAM thresholds do not apply" in lines[1:]  # a reason, after the errors


def test_an_argument_error_of_run_is_recorded_and_of_dry_run_not(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command in ("dry-run", "run"):
        try:
            cli.main([command, "--epochs", "0"])
        except SystemExit as e:
            assert e.code == 2
    entries = refusals.read_log(tmp_path / "logs" / refusals.LOG_NAME)
    assert [e["command"] for e in entries] == ["python -m launcher run --epochs 0"]
    assert entries[0]["errors"] == ["python -m launcher run: argument --epochs: 0: give a whole number ≥ 1 (e.g. 3) "
                                    "— see python -m launcher run --help"]
    assert capsys.readouterr().err.count("argument --epochs") == 2  # both still said on the terminal


def test_a_logs_folder_that_cannot_be_written_leaves_the_refusal_as_it_was(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RTDETR_LOGS", str(write(tmp_path / "a-file", "not a folder\n")))
    assert refusals.note("python -m launcher run", ["error: x"], tmp_path / "a-file") is None
    assert cli.main(["run", "--data", NOTHING, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / NOTHING}"), err
    assert all(line.startswith("error: ") for line in err.splitlines()), err  # nothing added to them
    assert (tmp_path / "a-file").read_text() == "not a folder\n"


def test_a_newline_in_the_command_keeps_the_entry_one_entry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    command = shlex.join(["python", "-m", "launcher", "run", "--name", "a\nb", "epochs=3"])
    for errors in (["error: first"], ["error: second"]):
        assert refusals.note(command, errors, tmp_path / "logs") == tmp_path / "logs" / refusals.LOG_NAME
    entries = refusals.read_log(tmp_path / "logs" / refusals.LOG_NAME)
    assert [(ast.literal_eval(e["command"]), e["folder"], e["errors"]) for e in entries] == [
        (command, str(tmp_path), ["error: first"]), (command, str(tmp_path), ["error: second"])]


def test_the_log_is_moved_aside_at_about_1_mb_and_one_old_one_is_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs"
    log, old = logs / refusals.LOG_NAME, logs / (refusals.LOG_NAME + ".1")
    entry = f"{iso(time.time() - 60)} python -m launcher run\n  folder: /x\n  error: {'x' * 100}\n"
    big = entry * (refusals.MAX_BYTES // len(entry) + 1)
    write(log, big)
    write(old, "the oldest\n")
    refusals.note("python -m launcher run --new", ["error: new"], logs)
    assert old.read_text() == big and [e["command"] for e in refusals.read_log(log)] == [
        "python -m launcher run --new"]
    refusals.note("python -m launcher run --newer", ["error: newer"], logs)  # small: appended, not moved
    assert old.read_text() == big and len(refusals.read_log(log)) == 2
    assert status.look(None)["refusal"]["errors"] == ["error: newer"]


def record(tmp_path, monkeypatch, last_event_t: float) -> RunPaths:
    """A stopped run 'night' of one attempt, its last event at `last_event_t`."""
    monkeypatch.chdir(tmp_path)
    paths = RunPaths.for_run("night")
    paths.root.mkdir(parents=True)
    ev = Events(paths.events)
    ev.add({"ts": iso(last_event_t - 60), "event": Ev.START, "rung": "a"})
    ev.add({"ts": iso(last_event_t - 50), "event": Ev.ATTEMPT_START, "attempt": 1, "rung": "a"})
    ev.add({"ts": iso(last_event_t), "event": Ev.INTERRUPTED, "reason": "SIGINT"})
    write_json_atomic(paths.state, {"run": "night", "ladder": "/l.toml", "data": "/d.yaml", "device": "cpu",
                                    "rung": "a", "status": "interrupted", "attempts": 1})
    return paths


def test_a_refusal_of_a_run_with_a_record_is_its_event_and_status_shows_it(tmp_path, monkeypatch, capsys):
    paths = record(tmp_path, monkeypatch, time.time() - 3600)
    wall = accounting.load(paths.root).wall_s
    assert cli.main(["run", "--name", "night", "--data", NOTHING, "--device", "cpu"]) == 2
    last = json.loads(paths.events.read_text().splitlines()[-1])
    assert last["event"] == Ev.REFUSED and last["command"].endswith(f"--data {NOTHING} --device cpu")
    assert last["errors"][0].startswith(f"error: {tmp_path / NOTHING}")
    assert not (tmp_path / "logs" / refusals.LOG_NAME).exists()
    assert accounting.load(paths.root).wall_s == wall  # the morning's refusal is no launcher time
    capsys.readouterr()
    for argv in (["status", "night"], ["status"]):
        assert cli.main(argv) == 0
        out = capsys.readouterr().out
        assert out.startswith("run 'night': interrupted") and "\nlast refusal, " in out
        assert f"  error: {tmp_path / NOTHING}" in out and f"recorded in {paths.events}" in out


def test_status_shows_a_run_less_refusal_only_when_nothing_ran_after_it(tmp_path, monkeypatch):
    now = time.time()
    record(tmp_path, monkeypatch, now - 100)
    log = tmp_path / "logs" / refusals.LOG_NAME
    log.write_text(f"{iso(now - 200)} python -m launcher run --bogus\n  folder: /x\n  error: old\n")
    assert status.look(None)["refusal"] is None  # the run went on after it
    with open(log, "a") as f:
        f.write(f"{iso(now - 10)} python -m launcher run --data x.yaml\n  folder: /x\n  error: new\n")
    d = status.look(None)
    assert d["run"] == "night" and d["refusal"]["errors"] == ["error: new"]
    assert status.look("night")["refusal"] is None  # not this run's: run-less
    assert os.path.basename(d["refusal"]["where"]) == refusals.LOG_NAME


def test_a_refusal_in_the_same_second_as_the_runs_last_event_is_shown(tmp_path, monkeypatch):
    """`ts` has whole seconds: a refusal in the second the run stopped is after it, not hidden."""
    last = float(int(time.time()) - 100)
    record(tmp_path, monkeypatch, last)
    (tmp_path / "logs" / refusals.LOG_NAME).write_text(
        f"{iso(last)} python -m launcher run --data x.yaml\n  folder: /x\n  error: same second\n")
    assert status.look(None)["refusal"]["errors"] == ["error: same second"]


def test_a_run_a_launcher_holds_shows_no_refusal_and_gets_none_in_its_events(tmp_path, monkeypatch, capsys):
    """A second `run` of a live run ("already running") goes to launcher-errors.log, not into the
    live run's events; and `status` of a live run shows no refusal, its own or run-less."""
    paths = record(tmp_path, monkeypatch, time.time() - 100)
    state = json.loads(paths.state.read_text())
    write_json_atomic(paths.state, {**state, "status": "running"})
    Events(paths.events).append(Ev.REFUSED, command="python -m launcher run --bogus", folder="/x",
                                errors=["error: from before this launcher took it up"])
    held = RunLock(paths.lock)
    assert held.acquire()
    try:
        before = paths.events.read_text()
        errors = ["error: run 'night': already running (pid 1 since then)"]
        where = refusals.note("python -m launcher run --name night", errors, paths.root.parent, paths.events)
        assert where == paths.root.parent / refusals.LOG_NAME and paths.events.read_text() == before
        assert refusals.read_log(where)[0]["errors"] == errors
        for name in (None, "night"):
            d = status.look(name)
            assert d["active"] and d["status"] == "running" and d["refusal"] is None
        assert cli.main(["status"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("run 'night': training") and "refusal" not in out
    finally:
        held.release()
    assert status.look(None)["refusal"]["errors"] == errors  # the launcher gone: nothing ran after it


def test_the_readmes_night_runs_dry_run_first_and_keeps_the_pane(tmp_path):
    """The README's tmux recipe, its command run as tmux would run it (`exec bash` standing for the
    shell that keeps the pane open): a mistake stops it at dry-run, whose error stays on screen."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    block = readme[readme.index("\nA='--data"):]
    setting, recipe = block.strip().splitlines()[:2]
    assert recipe.startswith('tmux new -s night "') and recipe.endswith('; exec bash"')
    command = recipe[len('tmux new -s night "'):-1].replace("; exec bash", "; echo pane stays open")
    assert command.index(" dry-run $A && ") < command.index(" run $A;")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").symlink_to(sys.executable)
    env = {**env_without("RTDETR_LOGS"), "PYTHONPATH": str(ROOT), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    out = subprocess.run(["sh", "-c", f"{setting}\n{command}"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=120)
    assert "Problems (run would refuse)" in out.stdout and "/data/coco_indoor/data.yaml" in out.stdout
    assert out.stdout.rstrip().endswith("pane stays open") and not (tmp_path / "logs").exists()  # run never ran
