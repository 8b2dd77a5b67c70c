"""dry-run and diagnose through the command line: golden text, JSON, help, bad input, speed."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import cli, models, setup
from launcher.errors import BadInput
from launcher.contract import GIB

from conftest import FIXTURES, ROOT, RUNG, ladder_text, make_image_tree, nothing_started
from helpers import a_record, prepare, run

GOLDEN = FIXTURES / "golden"


def normalise(text: str, tmp_path, data) -> str:
    return text.replace(str(data.parent.parent), "<DATA>").replace(str(tmp_path), "<TMP>").replace(str(ROOT), "<ROOT>").replace(sys.executable, "<PYTHON>")


def check_golden(name: str, text: str):
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert text == path.read_text(), f"dry-run output changed; if intended, rerun with UPDATE_GOLDEN=1 and review {path}"


def test_dry_run_text_golden(capsys, fixed_machine, tmp_path):
    code, out, err = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml")
    assert code == 0 and err == ""
    check_golden("dry_run_4090.txt", normalise(out, tmp_path, fixed_machine))


def test_dry_run_text_golden_12gb_card_low_ram(capsys, fixed_machine, tmp_path):
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--vram", "11.7", "--ram", "8",
                       "--epochs", "2", "--name", "rehearsal")
    assert code == 0
    check_golden("dry_run_12gb_8gb_ram.txt", normalise(out, tmp_path, fixed_machine))


def test_dry_run_json(capsys, fixed_machine):
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--json")
    d = json.loads(out)
    assert code == 0
    assert {"probe", "start_rung", "cache", "reasons", "ladder"} <= set(d)
    assert d["start_rung"] == "optimal"
    assert d["probe"]["gpus"][0]["free"] == int(23.41 * GIB)
    assert d["cache"]["effective"] == "ram" and d["cache"]["estimate_bytes"] == 4401 * 640 * 640 * 3
    assert [r["name"] for r in d["ladder"]["rungs"]] == ["optimal", "optimal-b4", "mnv4", "safe"]
    assert d["child"]["command"][-3:-1] == ["-m", "launcher.child"]
    assert d["child"]["env"]["PYTORCH_CUDA_ALLOC_CONF"].startswith("max_split_size_mb:512")
    assert d["child"]["spec"]["train_args"]["batch"] == 6
    assert d["dataset"]["yaml"] == str(fixed_machine)
    # the child reads a copy with absolute paths, written into the run record when `run` starts
    assert d["child"]["spec"]["train_args"]["data"] == str(Path.cwd() / "logs" / "coco_indoor" / "dataset.yaml")


def test_dry_run_cpu_machine_refuses_without_device(capsys, cpu_machine):
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml")
    assert code == 2 and "Problems (run would refuse)" in out and "--device cpu" in out
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == 0 and "Problems" not in out
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--vram", "11.7", "--json")
    assert code == 0 and json.loads(out)["start_rung"] == "optimal-b4"


@pytest.mark.parametrize("offline", ["env", "unreachable"])
def test_offline_machine_says_which_weights_cannot_be_fetched(offline, capsys, fixed_machine, monkeypatch):
    if offline == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.setattr(models, "reachable", lambda host: host != "huggingface.co")
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--json")
    d = json.loads(out)
    mnv4 = next(r for r in d["ladder"]["rungs"] if r["name"] == "mnv4")
    assert code == 0 and d["start_rung"] == "optimal"  # planned around it
    why = "HF_HUB_OFFLINE is set" if offline == "env" else "huggingface.co cannot be reached"
    assert not mnv4["available"] and why in mnv4["weights"]
    assert any(r.startswith("rung mnv4 unavailable (needs timm/") for r in d["reasons"])


def test_run_refuses_a_machine_without_gpu_unless_told_cpu(capsys, cpu_machine, tmp_path):
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml")
    assert code == 2 and "no NVIDIA GPU found" in err and "--device cpu" in err
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--vram", "12")
    assert code == 2 and "--vram only pretends" in err
    assert nothing_started(tmp_path / "logs")


def test_dry_run_demo_ladder_marks_dataset_missing(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "dry-run", "--ladder", str(ROOT / "ladders" / "demo.toml"), "--data", "nope.yaml")
    assert code == 2 and "dataset YAML not found" in out


@pytest.mark.parametrize("argv, names", [
    (["dry-run", "--vram", "-3"], ["--vram", "positive"]),
    (["dry-run", "--vram", "lots"], ["--vram", "not a number"]),
    (["dry-run", "--epochs", "0"], ["--epochs"]),
    (["dry-run", "--device", "gpu0"], ["--device"]),
    (["dry-run", "--name", "a/b"], ["--name"]),
    (["dry-run", "--ladder", "nope.toml"], ["nope.toml", "no such ladder file"]),
    (["dry-run", "--start-rung", "turbo"], ["--start-rung turbo", "optimal, optimal-b4, mnv4, safe"]),
    (["dry-run", "--device", "3", "--vram", "12"], ["--device 3", "GPU 3 not on this machine"]),
    (["diagnose", "missing.log"], ["missing.log", "no such log file"]),
    (["frobnicate"], ["invalid choice"]),
    (["run", "--inject", "oom:optimal:2"], ["--inject", "KIND is cuda_oom, crash or thrash"]),
    (["run", "--inject", "cuda_oom:optimal:0"], ["--inject", "EPOCH"]),
    (["run", "--inject", "cuda_oom:optimal:2:backward"], ["--inject", "PHASE"]),
    (["run", "--data", "coco_indoor/data.yaml", "--inject", "cuda_oom:turbo:2"], ["--inject cuda_oom:turbo:2",
                                                                                 "no rung named 'turbo'"]),
    (["run", "--data", "nope.yaml", "--device", "cpu"], ["dataset YAML not found"]),
    # found by a hostile test (issue 12)
    (["dry-run", "--vram", "nan"], ["--vram", "not a number"]),
    (["dry-run", "--vram", "inf"], ["--vram", "not a number"]),
    (["dry-run", "--ram=-inf"], ["--ram", "not a number"]),
    (["dry-run", "--name", "experience.json"], ["--name", "the launcher's own entry in logs/"]),
    (["run", "--name", "demo-data", "--device", "cpu"], ["--name", "the launcher's own entry in logs/"]),
    (["run", "--name", "launcher-errors.log", "--device", "cpu"], ["--name", "the launcher's own entry in logs/"]),
    (["dry-run", "--name", "launcher-errors.log.1"], ["--name", "the launcher's own entry in logs/"]),
    (["run", "--data", "coco_indoor/data.yaml", "--device", "cpu", "--epochs", "3", "--inject", "cuda_oom:safe:4"],
     ["--inject cuda_oom:safe:4", "past rung safe's last epoch (3)", "from 1 to 3"]),
])
def test_bad_input_is_one_line_exit_2(argv, names, capsys, fixed_machine):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    _, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for n in names:
        assert n in err


@pytest.mark.parametrize("command", ["run", "dry-run", "diagnose", "status", "report"])
def test_help_describes_every_option(command, capsys):
    """Every option --help lists has words after it, and the page ends with examples."""
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    options = out.split("options:", 1)[1].split("examples:", 1)[0]
    entries = re.split(r"\n(?=  -)", options.strip("\n"))
    assert entries and entries[0].strip().startswith("-h, --help"), out
    for entry in entries:
        flags, _, words = entry.strip().partition("  ")
        assert flags.startswith("-") and len(words.split()) >= 3, f"{command}: {entry!r} says nothing"
    assert "examples:" in out and f"python -m launcher {command}" in out.split("examples:", 1)[1]


@pytest.mark.parametrize("log, kind", [("ddp_torchrun_oom.log", "cuda_oom"), ("device_side_assert.log", "fatal")])
def test_diagnose_cli(log, kind, capsys):
    code, out, _ = run(capsys, "diagnose", str(FIXTURES / "logs" / log))
    assert code == 0 and out.startswith(f"kind      {kind}\n") and "evidence  " in out and "action    " in out
    code, out, _ = run(capsys, "diagnose", str(FIXTURES / "logs" / log), "--json")
    d = json.loads(out)
    assert d["kind"] == kind and d["evidence"] and d["action"]


def test_diagnose_exit_code_and_attempt_folder_with_report(capsys, tmp_path):
    (tmp_path / "train.log").write_text((FIXTURES / "logs" / "killed_no_message.log").read_text())
    code, out, _ = run(capsys, "diagnose", str(tmp_path / "train.log"), "--exit-code", "137", "--json")
    assert json.loads(out)["kind"] == "unknown"
    (tmp_path / "report.json").write_text(json.dumps({
        "exc_type": "torch.OutOfMemoryError", "message": "CUDA out of memory.", "phase": "train",
        "epoch": 4, "start_epoch": 2, "epochs_saved": 2}))
    code, out, _ = run(capsys, "diagnose", str(tmp_path))
    assert "kind      cuda_oom (phase train)" in out and "late OOM (2 epoch(s) completed" in out
    (tmp_path / "report.json").write_text(json.dumps({
        "exc_type": "torch.OutOfMemoryError", "message": "CUDA out of memory.", "phase": "final", "epochs_saved": 0}))
    code, out, _ = run(capsys, "diagnose", str(tmp_path), "--json")
    assert json.loads(out)["action"].startswith("training is done, only its final validation failed")


def run_in_a_folder_with_a_finished_run(tmp_path, script: str) -> subprocess.CompletedProcess:
    """`script` in a fresh Python, in a folder whose logs/ holds one finished run 'r' for status."""
    (tmp_path / "logs" / "r").mkdir(parents=True)
    (tmp_path / "logs" / "r" / "state.json").write_text(json.dumps({
        "run": "r", "ladder": "l.toml", "data": "d.yaml", "device": "cpu", "rung": "a", "status": "complete",
        "attempts": 1}))
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)


def test_commands_import_neither_torch_nor_ultralytics(tmp_path):
    probe_script = (
        "import sys, io, contextlib\n"
        "from launcher import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    cli.main(['dry-run', '--vram', '24', '--ram', '64'])\n"
        f"    cli.main(['diagnose', {str(FIXTURES / 'logs' / 'ddp_torchrun_oom.log')!r}])\n"
        "    cli.main(['status', 'r'])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics', 'timm', 'numpy'))\n"
        "print(heavy)\n")
    out = run_in_a_folder_with_a_finished_run(tmp_path, probe_script)
    assert out.stdout.strip() == "[]", out.stdout


def test_dry_run_and_status_import_only_what_they_use(tmp_path):
    """Issue 19, "dry-run as fast as it was": the commands a person runs by hand answer at once
    (docs/benchmarks.md). What only `run` uses (tenacity, the supervisor and the child's modules),
    what only status uses (accounting) and the package metadata that --version and the learned
    rungs' key read are imported where they are used, not by every command."""
    run_only = ["tenacity", "launcher.supervisor", "launcher.launch", "launcher.child", "launcher.callbacks",
                "launcher.timeline", "launcher.report", "launcher.report_md"]
    probe_script = (
        "import sys, io, contextlib\n"
        "from launcher import cli\n"
        "def loaded(names):\n"
        "    return sorted(n for n in names if n in sys.modules)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['dry-run', '--vram', '24', '--ram', '64', '--no-memory'])\n"
        f"print(loaded({run_only + ['launcher.accounting', 'importlib.metadata']!r}))\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    cli.main(['status', 'r'])\n"
        f"print(loaded({run_only + ['importlib.metadata']!r}))\n")
    out = run_in_a_folder_with_a_finished_run(tmp_path, probe_script)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"], out.stdout


def test_fresh_starts_beside_an_existing_run_and_touches_nothing(capsys, cpu_machine, tmp_path):
    old = a_record(tmp_path / "logs" / "coco_indoor")
    before = old.read_text()
    p = prepare(fresh=True)
    out = capsys.readouterr().out
    assert "--fresh: starting run 'coco_indoor-" in out
    assert p.paths.root.parent == old.parent.parent and p.paths.root.name.startswith("coco_indoor-")
    assert p.state.attempts == 0 and p.state.status == "running" and not p.finished
    assert old.read_text() == before


def test_a_run_that_is_already_running_is_refused(capsys, cpu_machine, tmp_path):
    from launcher.runlog import RunLock
    root = tmp_path / "logs" / "coco_indoor"
    root.mkdir(parents=True)
    held = RunLock(root / ".lock")
    assert held.acquire()
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == 2 and "already running (pid" in err and len(err.strip().splitlines()) == 1
    assert not (root / "state.json").exists() and not (root / "attempt-1").exists()  # nothing started


def test_continuing_a_rehearsal_keeps_its_epochs(capsys, cpu_machine, tmp_path):
    a_record(tmp_path / "logs" / "coco_indoor", rung="optimal-b4", attempts=2, epochs_override=2)
    p = prepare()
    assert "continuing run 'coco_indoor' at rung optimal-b4 (attempt 3)" in capsys.readouterr().out
    assert p.ladder.rungs[p.start].name == "optimal-b4" and p.state.attempts == 2
    assert {r.epochs for r in p.rungs} == {2}  # not the ladder's 100/150


def test_continuation_refuses_other_epochs_or_data(capsys, cpu_machine, tmp_path):
    a_record(tmp_path / "logs" / "coco_indoor", epochs_override=2)
    with pytest.raises(BadInput, match=r"started with 2 epochs, this run asks 5 epochs.*--fresh"):
        prepare(epochs=5)
    other = make_image_tree(tmp_path / "other", 4, 2)
    with pytest.raises(BadInput, match=r"trains on .*coco_indoor/data.yaml, this run asks .*other/data.yaml.*"
                                       r"pass --data .*coco_indoor/data.yaml to continue"):
        setup.prepare(setup.Request(data=str(other), device="cpu", name="coco_indoor"), say=print)
    assert prepare().state.epochs_override == 2  # not given: the run's own


def test_a_finished_run_trains_nothing_and_names_fresh(capsys, cpu_machine, tmp_path):
    a_record(tmp_path / "logs" / "coco_indoor", status="complete", delivered={"best": "b.pt", "last": "l.pt"})
    code, out, _ = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == 0 and "already finished; nothing to train (--fresh starts a new run beside it)" in out


@pytest.mark.parametrize("content, names", [
    ('{"run": "coco_indoor", "attempts": 1}', ["state.json, key 'ladder'", "missing"]),
    ('{"run": "x", "ladder": "l", "data": "d", "device": "cpu", "rung": "a", "attempts": "3"}',
     ["key 'attempts'", "should be a int"]),
    ('{"run": "x", "ladder": "l", "data": "d", "device": "cpu", "rung": "a", "version": 99}',
     ["newer launcher", "version 99"]),
    ('{"run": ', ["not JSON"]),
])
def test_a_damaged_or_newer_record_is_one_line(capsys, cpu_machine, tmp_path, content, names):
    root = tmp_path / "logs" / "coco_indoor"
    root.mkdir(parents=True)
    (root / "state.json").write_text(content)
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(root / "state.json") in err
    for n in names:
        assert n in err


def test_a_record_whose_folder_holds_two_models_refuses(capsys, cpu_machine, tmp_path):
    shared = str(tmp_path / "logs" / "coco_indoor" / "models" / "rtdetr-l")
    a_record(tmp_path / "logs" / "coco_indoor", models={
        "rtdetr-l.yaml": {"save_dir": shared, "epochs": 3, "epochs_done": 1},
        "/data/rtdetr-l.pt": {"save_dir": shared, "epochs": 3, "epochs_done": 2}})
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"{shared} holds the checkpoints of both rtdetr-l.yaml and /data/rtdetr-l.pt" in err and "--fresh" in err


# ---- a record rebuilt from checkpoints (state.json gone) ------------------------------------------

def fake_checkpoint(path: Path, epoch: int, epochs: int, model: str = "rtdetr-l.pt") -> Path:
    """A zip container like torch.save's, holding what Ultralytics keeps (the reader is tested on a
    real torch.save in test_checkpoint.py)."""
    import pickle
    import zipfile
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("last/data.pkl", pickle.dumps({"epoch": epoch, "train_args": {"epochs": epochs, "model": model}}))
    return path


def a_run_without_state(tmp_path: Path, epoch: int, epochs: int, attempts: int = 2) -> Path:
    from launcher import dataset as dataset_mod
    from launcher.runlog import RunPaths
    paths = RunPaths((tmp_path / "logs" / "coco_indoor").resolve())
    for n in range(1, attempts + 1):
        paths.attempt(n).mkdir(parents=True)
        (paths.spec(n)).write_text(f'{{"attempt": {n}}}')
    dataset_mod.write_resolved(dataset_mod.inspect((tmp_path / "coco_indoor" / "data.yaml").resolve()), paths.dataset)
    return fake_checkpoint(paths.save_dir("rtdetr-l.pt") / "weights" / "last.pt", epoch, epochs)


def test_a_finished_run_without_its_record_refuses_other_epochs(capsys, cpu_machine, tmp_path):
    last = a_run_without_state(tmp_path, epoch=-1, epochs=2)  # finished: optimizer stripped
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu", "--epochs", "3")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(last) in err and "trained for 2 epochs" in err and "asks 3 epochs" in err
    p = prepare()
    out = capsys.readouterr().out
    assert "rebuilt the record of run 'coco_indoor' from its checkpoints" in out and "rtdetr-l.pt epochs done 2/2" in out
    assert p.state.epochs_override == 2 and {r.epochs for r in p.rungs} == {2}  # the checkpoint's, not 100
    assert p.state.attempts == 2 and p.state.models["rtdetr-l.pt"].complete  # the next attempt is number 3
    assert (tmp_path / "logs" / "coco_indoor" / "attempt-1" / "spec.json").read_text() == '{"attempt": 1}'


def test_a_stopped_run_without_its_record_refuses_more_epochs(capsys, cpu_machine, tmp_path):
    a_run_without_state(tmp_path, epoch=0, epochs=3, attempts=1)  # 1 of 3 epochs saved
    with pytest.raises(BadInput, match=r"trained for 3 epochs .* asks 5 epochs"):
        prepare(epochs=5)
    p = prepare(epochs=3)
    assert p.state.models["rtdetr-l.pt"].epochs_done == 1 and p.state.attempts == 1


def test_a_record_rebuilt_refuses_another_dataset(capsys, cpu_machine, tmp_path):
    a_run_without_state(tmp_path, epoch=0, epochs=3)
    other = make_image_tree(tmp_path / "other", 4, 2)
    with pytest.raises(BadInput, match=r"dataset.yaml: run 'coco_indoor' has no state.json, and it trained on "):
        setup.prepare(setup.Request(data=str(other), device="cpu", name="coco_indoor"), say=print)


# ---- Ultralytics' own key=value arguments (issue 13) -----------------------------------------------

@pytest.mark.parametrize("pair, names", [
    ("lr=0.01", ["'lr' is not an Ultralytics training argument", "did you mean", "'lr0'"]),
    ("patience=soon", ["Ultralytics refuses it: 'patience=soon' is of invalid type str. 'patience' must be an int"]),
    ("amp=maybe", ["Ultralytics refuses it: 'amp=maybe' is invalid. Valid 'amp' values are True, False"]),
    ("batch=8", ["'batch' is set by each rung of the ladder", "[[rung]]"]),
    ("workers=2", ["'workers' is set by each rung"]),
    ("model=rtdetr-x.pt", ["'model' is set by each rung"]),  # the ladder's models, never one for all
    ("device=1", ["'device' is the launcher's option", "use --device"]),
    ("data=x.yaml", ["'data' is the launcher's to set", "--data PATH"]),
    ("imgsz=16", ["≥ 32"]),
    ("lr0", ["not in Ultralytics' key=value form"]),
])
@pytest.mark.parametrize("command", ["dry-run", "run"])
def test_bad_key_value_arguments_are_one_line(capsys, cpu_machine, command, pair, names):
    code, _, err = run(capsys, command, "--data", "coco_indoor/data.yaml", "--device", "cpu", pair)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for n in names:
        assert n in err
    assert nothing_started(Path("logs"))


def test_key_value_arguments_reach_every_rungs_training(capsys, cpu_machine):
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--device", "cpu", "--json",
                       "imgsz=512", "epochs=80", "lr0=0.002", "patience=20", "cos_lr=true")
    spec = json.loads(out)["child"]["spec"]
    assert code == 0 and spec["train_args"]["imgsz"] == 512 and spec["train_args"]["epochs"] == 80
    assert spec["extra_args"] == {"lr0": 0.002, "patience": 20, "cos_lr": True}
    p = prepare(overrides=("lr0=0.002", "imgsz=512"))
    assert p.state.overrides == {"lr0": 0.002, "imgsz": 512} and p.ladder.job.imgsz == 512
    p.state.save(p.paths.state)  # as the supervisor does before its first child
    p.lock.release()
    with pytest.raises(BadInput, match=r"started with lr0=0.002, this run asks lr0=0.01 \(Ultralytics' resume ignores"):
        prepare(overrides=("lr0=0.01",))
    again = prepare()  # none given: the run's own
    assert again.ladder.job.args["lr0"] == 0.002 and again.ladder.job.imgsz == 512


def test_epochs_twice_must_agree(capsys, cpu_machine):
    code, _, err = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--epochs", "3", "epochs=4")
    assert code == 2 and "two different epoch counts" in err


@pytest.mark.parametrize("data, name", [("coco_indoor/data.yaml", "coco_indoor"), ("/srv/sets/mine.yaml", "mine"),
                                        ("/srv/My Set (v2)/dataset.yaml", "My-Set-v2")])
def test_a_run_is_named_after_the_users_dataset(data, name):
    assert setup.default_name(data) == name


def test_a_rehearsal_teaches_nothing_but_a_real_run_does(capsys, cpu_machine):
    drill = prepare(inject=({"kind": "cuda_oom", "rung": "optimal", "epoch": 2, "phase": "train"},))
    assert drill.experience is None
    drill.lock.release()
    real = prepare(name="real")
    assert real.experience is not None and real.experience.key["args"] == {}


def test_run_on_an_offline_machine_says_why_no_rung_is_available(capsys, cpu_machine, monkeypatch, tmp_path):
    monkeypatch.setattr(models, "reachable", lambda host: False)
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    lad = tmp_path / "pt.toml"
    lad.write_text(ladder_text("coco_indoor/data.yaml", RUNG.format(name="a", model="rtdetr-l.pt", epochs=3,
                                                                    batch=4)))
    code, out, err = run(capsys, "run", "--ladder", str(lad), "--device", "cpu")
    assert code == 2 and "no rung is available" in err
    assert "rung a unavailable (needs rtdetr-l.pt from Ultralytics' GitHub release assets, but YOLO_OFFLINE is set" in out


def test_dry_run_offline_with_vram_names_the_rung_it_would_take(capsys, fixed_machine, monkeypatch):
    monkeypatch.setattr(models, "reachable", lambda host: False)
    code, out, _ = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--vram", "11.7")
    assert code == 2 and "no rung is available" in out
    assert "once its weights are on this machine: would start on rung optimal-b4: GPU 0 has 11.70 GiB free" in out
    assert "steps over" not in out  # every rung is out: nothing is stepped over


def test_a_record_rebuilt_after_a_resume_names_the_ladders_model_and_rung(capsys, cpu_machine, tmp_path):
    """After a resume Ultralytics' own train_args name last.pt itself; the newest spec names the rung."""
    from launcher.runlog import RunPaths
    paths = RunPaths((tmp_path / "logs" / "coco_indoor").resolve())
    last = paths.save_dir("rtdetr-l.pt") / "weights" / "last.pt"
    a_run_without_state(tmp_path, epoch=3, epochs=100, attempts=3)
    fake_checkpoint(last, 3, 100, model=str(last))
    paths.spec(3).write_text(json.dumps({"attempt": 3, "rung": "optimal-b4", "extra_args": {"lr0": 0.002}}))
    p = prepare(overrides=("lr0=0.002",))
    assert set(p.state.models) == {"rtdetr-l.pt"} and p.state.models["rtdetr-l.pt"].epochs_done == 4
    assert p.ladder.rungs[p.start].name == "optimal-b4" and p.state.overrides == {"lr0": 0.002}


@pytest.mark.parametrize("stored", [{"save": False}, {"time": 8}, {"optimizer": "NoSuchOpt"}, {"lr0": 1.5}])
def test_a_continued_run_checks_the_arguments_its_record_holds(capsys, cpu_machine, stored):
    """Issue 17 review: a record written before the argument check (save=False, time=8, an unknown
    optimizer) continued unchecked, and every child would fail or lose the night. Continuing it is
    refused as asking it now would be, naming state.json and --fresh."""
    p = prepare()
    p.state.overrides = stored
    p.state.save(p.paths.state)
    p.lock.release()
    (key, value), = stored.items()
    with pytest.raises(BadInput) as e:
        prepare().lock.release()
    err = str(e.value)
    assert e.value.exit_code == 2 and len(err.splitlines()) == 1, err
    assert f"{p.paths.state}, key 'overrides': run 'coco_indoor' trains with {key}={value!r}, which is refused" in err
    assert err.endswith("fix: start afresh with --fresh (the run stays as it is)")
    assert json.loads(p.paths.state.read_text())["overrides"] == stored  # the record stays as it is


def test_a_rebuilt_record_checks_the_arguments_its_newest_attempt_trained_with(capsys, cpu_machine, tmp_path):
    from launcher.runlog import RunPaths
    paths = RunPaths((tmp_path / "logs" / "coco_indoor").resolve())
    a_run_without_state(tmp_path, epoch=1, epochs=3)
    paths.spec(2).write_text(json.dumps({"attempt": 2, "rung": "optimal", "extra_args": {"optimizer": "NoSuchOpt"}}))
    with pytest.raises(BadInput, match=r"newest attempt's spec.json, key 'extra_args': run 'coco_indoor' trains "
                                       r"with optimizer='NoSuchOpt', which is refused now: Ultralytics refuses it"):
        prepare()
