"""Values Ultralytics refuses are refused before the night (issue 17, items 5-9), as key=value
arguments and in the ladder's [job.args], by dry-run and by run's set-up alike: exit 2, one line
naming the key and the reason, nothing started. And `dry-run --demo` means what `run --demo`
means (item 18). Ultralytics' own verdicts are held equal in tests/test_parity.py.
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import pytest

from launcher import cli, overrides, probe, setup
from launcher import spec as spec_mod
from launcher.contract import GIB
from launcher.probe import Snapshot

from conftest import ROOT, ladder_text, make_image_tree, nothing_started, write

# (item, key=value, the same in [job.args], what the line must say besides the key)
REFUSED = [
    ("5", "optimizer=NoSuchOpt", 'optimizer = "NoSuchOpt"',
     ["Ultralytics refuses it: Optimizer 'NoSuchOpt' not found in list of available optimizers", "SGD"]),
    ("6 range", "lr0=1.5", "lr0 = 1.5",
     ["Ultralytics refuses it: 'lr0=1.5' is an invalid value. Valid 'lr0' values are between 0.0 and 1.0."]),
    ("6 default None", "channels_last=yes", 'channels_last = "yes"',
     ["Ultralytics refuses it: 'channels_last=yes' is of invalid type str. 'channels_last' must be a bool"]),
    ("6 int minimum", "patience=-3", "patience = -3",
     ["Ultralytics refuses it: 'patience=-3' is an invalid value. 'patience' must be >= 0."]),
    ("8", "save=False", "save = false", ["resumes from the checkpoints Ultralytics saves each epoch", "leave save out"]),
    ("9", "time=-1", "time = -1", ["time= counts hours in each training process", "separate feature (issue 22)"]),
    ("9", "time=8", "time = 8", ["time= counts hours in each training process", "separate feature (issue 22)"]),
]


@pytest.fixture
def cpu_machine(monkeypatch, tmp_path):
    """A machine without GPUs, run from tmp_path, with a small dataset and a ladder of YAML models
    (nothing to download)."""
    make_image_tree(tmp_path / "ds", 4, 2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(probe, "take", lambda: Snapshot((), 8 * GIB, 6 * GIB, 2, nvml="NVML unavailable"))
    return tmp_path


def run(capsys, *argv: str) -> tuple[int, str]:
    """The command's exit status and what it wrote to stderr; argparse's own exits included."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, where: str, says: list[str]) -> None:
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert where in err, err
    for part in says:
        assert part in err, err
    assert nothing_started(Path("logs"))  # no record written


@pytest.mark.parametrize("command", ["dry-run", "run"])
@pytest.mark.parametrize("item, pair, toml, says", REFUSED, ids=[f"{r[0]}:{r[1]}" for r in REFUSED])
def test_a_refused_key_value_argument_is_one_line_before_the_night(capsys, cpu_machine, command, item, pair, toml,
                                                                   says):
    lad = write(cpu_machine / "l.toml", ladder_text())
    code, err = run(capsys, command, "--ladder", str(lad), "--device", "cpu", pair)
    assert_refused(code, err, f"argument {pair!r}", says)


@pytest.mark.parametrize("command", ["dry-run", "run"])
@pytest.mark.parametrize("item, pair, toml, says", REFUSED, ids=[f"{r[0]}:{r[1]}" for r in REFUSED])
def test_a_refused_job_arg_names_the_ladder_and_key(capsys, cpu_machine, command, item, pair, toml, says):
    key = pair.partition("=")[0]
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra=f"[job.args]\n{toml}\n"))
    code, err = run(capsys, command, "--ladder", str(lad), "--device", "cpu")
    assert_refused(code, err, f"{lad}: [job.args], key '{key}'", says)


@pytest.mark.parametrize("command", ["dry-run", "run"])
def test_a_rung_model_ultralytics_would_not_train_is_refused_before_the_night(capsys, cpu_machine, command):
    """Item 7: the night stepped down past the .pth rung, trained the next rung's other model and
    ended "trained", exit 0."""
    (cpu_machine / "tuned.pth").write_bytes(b"a state_dict saved with torch.save")
    rungs = ("[[rung]]\nname = \"mine\"\nmodel = \"tuned.pth\"\nepochs = 3\nbatch = 4\n"
             "[[rung]]\nname = \"safe\"\nmodel = \"rtdetr-l.yaml\"\nepochs = 3\nbatch = 2\n")
    lad = write(cpu_machine / "l.toml", ladder_text(rungs=rungs))
    code, err = run(capsys, command, "--ladder", str(lad), "--device", "cpu")
    assert_refused(code, err, f"{lad}: rung 'mine', key 'model'", ["'tuned.pth'", "should be a *.pt PyTorch model"])


@pytest.mark.parametrize("command", ["dry-run", "run"])
def test_values_ultralytics_takes_still_pass(capsys, cpu_machine, command):
    """The checks refuse what Ultralytics refuses, not more: its own spellings and ranges pass."""
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra="[job.args]\noptimizer = \"adamw\"\nconf = 0.5\n"
                                                            "pretrained = \"w.pt\"\n"))
    argv = ["--ladder", str(lad), "--device", "cpu", "optimizer=SGD", "lr0=1", "save=true", "amp=fp16",
            "fraction=0.5", "epochs=1e1"]
    if command == "dry-run":
        code, out = cli.main(["dry-run", *argv, "--json"]), capsys.readouterr().out
        spec = json.loads(out)["child"]["spec"]
        assert code == 0 and spec["train_args"]["epochs"] == 10
        assert spec["extra_args"] == {"optimizer": "SGD", "conf": 0.5, "pretrained": "w.pt", "lr0": 1, "save": True,
                                      "amp": "fp16", "fraction": 0.5}
    else:
        p = setup.prepare(setup.Request(ladder=str(lad), device="cpu", overrides=tuple(argv[4:])), say=print)
        try:
            assert p.ladder.job.args["optimizer"] == "SGD" and p.rungs[0].epochs == 10
        finally:
            p.lock.release()


def test_lists_and_tuples_reach_train_as_ultralytics_reads_them(capsys, cpu_machine):
    """Review of items 5-9: `classes=[0,2]` reached train() as the text '[0,2]' (an RTDETRDataset
    with it keeps no labels, and the night "succeeds" on nothing), `scale=(0.5,1.5)` was refused.
    Read as Ultralytics' CLI reads them, they reach the child's spec as lists."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    argv = ["classes=[0,2]", "freeze=[0, 1]", "fraction=[0.8,0.2]", "scale=(0.5,1.5)"]
    code = cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu", "--json", *argv])
    spec = json.loads(capsys.readouterr().out)["child"]["spec"]
    assert code == 0 and spec["extra_args"] == {"classes": [0, 2], "freeze": [0, 1], "fraction": [0.8, 0.2],
                                                "scale": [0.5, 1.5]}
    code, err = run(capsys, "dry-run", "--ladder", str(lad), "--device", "cpu", "classes={0,2}")
    assert_refused(code, err, "argument 'classes={0,2}'", ["'classes' reads as a set", "write a list"])


# ---- item 18: dry-run --demo ------------------------------------------------------------------------

@pytest.fixture
def demo_here(monkeypatch, tmp_path):
    """ladders/demo.toml copied under tmp_path, so that its dataset (../logs/demo-data) is made there."""
    (tmp_path / "ladders").mkdir()
    copy = Path(shutil.copy(ROOT / "ladders" / "demo.toml", tmp_path / "ladders" / "demo.toml"))
    monkeypatch.setattr(setup, "DEMO_LADDER", copy)
    return tmp_path


def test_dry_run_demo_shows_what_run_demo_would_start(capsys, cpu_machine, demo_here):
    code = cli.main(["dry-run", "--demo", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and not d["problems"], d["problems"]
    assert d["ladder"]["path"] == str(setup.DEMO_LADDER) and d["start_rung"] == "optimal"
    assert d["device"] == "cpu"  # as run --demo picks on a machine without a GPU
    assert d["dataset"]["yaml"] == str(demo_here / "logs" / "demo-data" / "shapes.yaml")
    assert d["dataset"]["train_images"] == 48  # the synthetic set run --demo makes, made (and reused) alike
    p = setup.prepare(setup.Request(demo=True), say=print)  # and run --demo starts the same
    try:
        assert p.device == "cpu" and p.ladder.path == setup.DEMO_LADDER and p.child_env["YOLO_OFFLINE"] == "1"
        started = {**p.child_env, **spec_mod.env(p.rungs[p.start], p.paths.spec(1))}  # as supervisor.py starts it
        assert d["child"]["env"] == started and d["child"]["env"]["YOLO_OFFLINE"] == "1"
    finally:
        p.lock.release()


def test_dry_run_demo_refuses_what_run_demo_refuses(capsys, cpu_machine, demo_here):
    code, err = run(capsys, "dry-run", "--demo", "optimizer=NoSuchOpt")
    assert code == 2 and "Optimizer 'NoSuchOpt' not found" in err and len(err.strip().splitlines()) == 1


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command", ["dry-run", "run"])
def test_demo_never_writes_into_a_users_dataset(capsys, cpu_machine, demo_here, command):
    """Review: `--demo --ladder mine.toml` made the demo's dataset in the folder of mine.toml's
    dataset, overwriting the user's labels/train/00000.txt. The demo's dataset is made only at its
    own place, and never into a folder holding files the launcher did not make."""
    ds = cpu_machine / "ds"
    write(ds / "labels" / "train" / "00000.txt", "0 0.5 0.5 0.2 0.2\n")  # the user's own label
    before = snapshot(ds)
    lad = write(cpu_machine / "mine.toml", ladder_text())
    run(capsys, command, "--demo", "--ladder", str(lad), "--device", "0")  # set up, then refused: no GPU
    assert snapshot(ds) == before
    # the demo's own place, holding a user's files: refused, untouched
    own = write(cpu_machine / "logs" / "demo-data" / "labels" / "train" / "00000.txt", "1 0.5 0.5 0.1 0.1\n")
    code, err = run(capsys, command, "--demo")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{own.parents[2]}: holds files the launcher did not make" in err, err
    assert own.read_text() == "1 0.5 0.5 0.1 0.1\n" and sorted(p.name for p in own.parents[2].rglob("*")) == \
        ["00000.txt", "labels", "train"]


@pytest.mark.parametrize("command", ["dry-run", "run"])
def test_demo_dataset_that_cannot_be_written_is_one_line(capsys, cpu_machine, demo_here, command):
    write(cpu_machine / "logs" / "demo-data", "a file where the demo's folder goes\n")
    code, err = run(capsys, command, "--demo")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert str(cpu_machine / "logs" / "demo-data") in err and "is a file" in err, err


def test_demo_dataset_goes_into_the_logs_folder_in_use(capsys, cpu_machine, demo_here, monkeypatch):
    logs = cpu_machine / "elsewhere" / "logs"
    monkeypatch.setenv("RTDETR_LOGS", str(logs))
    code = cli.main(["dry-run", "--demo", "--json"])
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["dataset"]["yaml"] == str(logs / "demo-data" / "shapes.yaml")
    assert not (demo_here / "logs").exists()


LINE_BREAKERS = ["lr0=a\nb", "optimizer=S\rGD", "lr\n0=0.01", "classes=['a\\nb']", "plots=x\u2028y", "conf=0.5\t1"]


@pytest.mark.parametrize("pair", LINE_BREAKERS, ids=[repr(p) for p in LINE_BREAKERS])
def test_a_value_with_a_line_break_is_refused_on_one_line(capsys, cpu_machine, pair):
    """Review: Ultralytics' words hold the raw value (`lr0=$'a\\nb'`), so a refusal spanned lines.
    A control character in a key or value is refused first, the value shown as repr."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    code, err = run(capsys, "dry-run", "--ladder", str(lad), "--device", "cpu", pair)
    assert_refused(code, err, f"argument {pair!r}", ["holds a control character"])
    key, _, value = pair.partition("=")
    toml = write(cpu_machine / "j.toml", ladder_text(
        job_extra=f"[job.args]\n{json.dumps(key)} = {json.dumps(overrides.value_of(value))}\n"))
    code, err = run(capsys, "dry-run", "--ladder", str(toml), "--device", "cpu")
    assert_refused(code, err, f"{toml}: [job.args], key {key!r}", ["holds a control character"])


def test_time_none_is_ultralytics_default_and_passes(capsys, cpu_machine):
    """Review: `time=None` (Ultralytics' default: no time limit) was refused with the time= rule."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    code = cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu", "--json", "time=None"])
    assert code == 0 and json.loads(capsys.readouterr().out)["child"]["spec"]["extra_args"] == {"time": None}


@pytest.mark.parametrize("pair, says", [("half=True", "use quantize=16 instead"),
                                        ("int8=true", "use quantize=8 instead"), ("end2end=True", "use nms=False instead"),
                                        ("label_smoothing=0.1", "was removed from Ultralytics")])
def test_a_deprecated_argument_points_to_its_replacement(capsys, cpu_machine, pair, says):
    lad = write(cpu_machine / "l.toml", ladder_text())
    code, err = run(capsys, "dry-run", "--ladder", str(lad), "--device", "cpu", pair)
    assert_refused(code, err, f"argument {pair!r}", [says])


@pytest.fixture
def doctored_ultralytics(tmp_path, monkeypatch):
    """The argument checks pointed at a copy of Ultralytics' source whose CFG_INT_MIN table and
    optimizer list have other names (a version that changed shape)."""
    from launcher import models
    real = models.ultralytics_package_dir()
    copy = tmp_path / "site" / "ultralytics"
    shutil.copytree(real / "cfg", copy / "cfg")  # its models too: the ladder's YAML models are named there
    (copy / "engine").mkdir()
    shutil.copy(real / "engine" / "trainer.py", copy / "engine" / "trainer.py")
    cfg = copy / "cfg" / "__init__.py"
    assert "\nCFG_INT_MIN = " in cfg.read_text()
    cfg.write_text(cfg.read_text().replace("\nCFG_INT_MIN = ", "\nCFG_INT_MINIMUM = "))
    trainer = copy / "engine" / "trainer.py"
    assert "optimizers = " in trainer.read_text()
    trainer.write_text(trainer.read_text().replace("optimizers = ", "names = "))
    caches = (overrides.rules, overrides.defaults, overrides.declared_types)
    monkeypatch.setattr(models, "ultralytics_package_dir", lambda: copy)
    for c in caches:
        c.cache_clear()
    try:
        yield copy
    finally:
        monkeypatch.undo()
        for c in caches:
            c.cache_clear()


def test_a_check_that_cannot_be_read_is_said_by_dry_run_and_run(capsys, cpu_machine, doctored_ultralytics):
    """Review: a rule table that can no longer be read turned its check off in silence. Dry-run and
    run say so in one line: which checks, and why."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    assert cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu", "patience=-3", "optimizer=NoSuchOpt"]) == 0
    out = capsys.readouterr().out
    warned = [line for line in out.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1, out
    for part in ("the argument check is off for cfg/__init__.py's CFG_INT_MIN, the optimizer names",
                 f"not found in the installed Ultralytics' source ({doctored_ultralytics})"):
        assert part in warned[0], warned
    said: list[str] = []
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu"), say=said.append)
    p.lock.release()
    assert said[0] == warned[0], said


def test_no_warning_when_every_check_is_read(capsys, cpu_machine):
    lad = write(cpu_machine / "l.toml", ladder_text())
    assert overrides.unread() is None
    assert cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu"]) == 0
    assert "warning:" not in capsys.readouterr().out


@pytest.mark.parametrize("how", ["key=value", "[job] imgsz"])
def test_an_image_size_ultralytics_rounds_up_is_a_warning_not_a_refusal(capsys, cpu_machine, how):
    """Review, item 8: imgsz=500 was refused ("multiple of 32"), though Ultralytics' trainer rounds
    it up to 512 (check_imgsz) and trains. Dry-run and run take it and say so in one line."""
    text = ladder_text()
    lad = write(cpu_machine / "l.toml", text.replace("imgsz = 64", "imgsz = 500") if how != "key=value" else text)
    pairs = ["imgsz=500"] if how == "key=value" else []
    assert cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu", *pairs]) == 0
    out = capsys.readouterr().out
    line = "warning: imgsz 500 is not a multiple of 32 (RT-DETR's largest stride): Ultralytics trains at 512; " \
           "give imgsz=512 to say so"
    assert [w for w in out.splitlines() if w.startswith("warning:")] == [line], out
    said: list[str] = []
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu", overrides=tuple(pairs)), say=said.append)
    p.lock.release()
    assert said[0] == line and p.ladder.job.imgsz == 500  # Ultralytics rounds it, as it would anyway


# (key=value arguments, --device, the warning lines dry-run and run must say, in order)
UNUSED = [
    (["lr0=0.001"], "cpu", ["lr0=0.001 is overridden: under optimizer=auto Ultralytics picks lr0 itself"]),
    (["optimizer=auto", "momentum=0.8", "warmup_bias_lr=0.05"], "cpu",
     ["momentum=0.8 is ignored when Ultralytics picks AdamW: under optimizer=auto it picks AdamW (momentum 0.9) "
      "for runs of up to 10000 iterations, MuSGD (which uses it after warmup) for longer ones",
      "warmup_bias_lr=0.05 is overridden: under optimizer=auto Ultralytics sets warmup_bias_lr to 0.0"]),
    (["optimizer=SGD", "lr0=0.001", "momentum=0.8"], "cpu", []),  # a named optimizer takes them
    (["amp=True"], "cpu", ["amp=True is overridden: on the CPU Ultralytics' check_amp turns AMP off; leave it out"]),
    (["amp=bf16"], "cpu", []),
]


@pytest.mark.parametrize("pairs, device, lines", UNUSED, ids=[" ".join(u[0]) for u in UNUSED])
def test_an_argument_ultralytics_overrides_is_said_by_dry_run_and_run(capsys, cpu_machine, pairs, device, lines):
    """Issue 18, item 3: lr0=0.001 was taken in silence, and Ultralytics ignored it under
    optimizer=auto. Dry-run and run say each such argument in one line (AUTO_DECIDES is held to
    build_optimizer in tests/test_parity.py); a named optimizer takes them, and nothing is said."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    assert cli.main(["dry-run", "--ladder", str(lad), "--device", device, *pairs]) == 0
    warned = [w for w in capsys.readouterr().out.splitlines() if w.startswith("warning:")]
    assert len(warned) == len(lines) and all(w.startswith(f"warning: {line}") for w, line in zip(warned, lines)), warned
    said: list[str] = []
    p = setup.prepare(setup.Request(ladder=str(lad), device=device, overrides=tuple(pairs)), say=said.append)
    p.lock.release()
    assert said[:len(warned)] == warned and not any(s.startswith("warning:") for s in said[len(warned):]), said


def test_an_overridden_argument_in_the_ladders_job_args_is_said_too(capsys, cpu_machine):
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra="[job.args]\nlr0 = 0.002\n"))
    assert cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu", "--json"]) == 0
    warned = json.loads(capsys.readouterr().out)["warnings"]
    assert len(warned) == 1 and warned[0].startswith("lr0=0.002 is overridden: under optimizer=auto"), warned


def stopped_run(lad: Path, *pairs: str) -> None:
    """A run started with these key=value arguments and stopped (its record saved, its lock free)."""
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu", overrides=pairs), say=lambda line: None)
    p.state.save(p.paths.state)  # as the supervisor does before its first child
    p.lock.release()


def test_a_continued_run_does_not_demand_the_arguments_a_resume_ignores(capsys, cpu_machine):
    """Issue 18, item 3: on a continued run the launcher insisted on lr0=0.002 again, while
    Ultralytics' resume ignores it. Left out, the run goes on with its own, said in one line."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    stopped_run(lad, "lr0=0.002", "patience=20")
    said: list[str] = []
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu", overrides=("patience=20",)), say=said.append)
    p.lock.release()
    assert p.ladder.job.args["lr0"] == 0.002 and p.ladder.job.args["patience"] == 20
    assert [s for s in said if "run's own" in s] == \
        ["continuing with the run's own lr0=0.002 (left out this time: it goes on as it was started)"], said


@pytest.mark.parametrize("pairs, why", [
    (("lr0=0.01",), "Ultralytics' resume ignores lr0 and keeps the checkpoint's"),
    (("lr0=0.002", "momentum=0.8"), "Ultralytics' resume ignores momentum and keeps the checkpoint's"),
])
def test_a_continued_run_refuses_a_changed_argument_naming_what_resume_ignores(capsys, cpu_machine, pairs, why):
    """A changed value would not take effect (Ultralytics' resume keeps the checkpoint's; the
    keys it ignores are held to check_resume in tests/test_parity.py): one line, exit 2."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    stopped_run(lad, "lr0=0.002", "patience=20")
    code, err = run(capsys, "run", "--ladder", str(lad), "--device", "cpu", *pairs)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err and why in err, err
    assert "leave them out to continue as started, or start afresh with --fresh" in err, err


def test_dry_run_says_what_run_would_say_of_a_stopped_runs_arguments(capsys, cpu_machine):
    """Dry-run says it before the night too: the arguments a continued run keeps, and its spec is
    the one run starts, with the run's own lr0 (review of issue 18, item 7: it was missing)."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    stopped_run(lad, "lr0=0.002", "patience=20")
    assert cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [w for w in d["warnings"] if w.startswith("run 't'")] == \
        ["run 't' exists: continuing with the run's own lr0=0.002 patience=20 (left out this time: it goes on as "
         "it was started)"], d["warnings"]
    spec = setup.make_plan(setup.Request(ladder=str(lad), device="cpu", overrides=("patience=20",))).spec
    assert spec.extra_args == {"lr0": 0.002, "patience": 20}, spec  # what run's first attempt trains with


def test_dry_run_exits_2_where_run_would_refuse_a_changed_argument(capsys, cpu_machine):
    """Review of issue 18, item 1: dry-run said run's refusal as a warning and exited 0, so that
    the README's `dry-run … && run …` went on into the refusal. It is a problem now: exit 2."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    stopped_run(lad, "lr0=0.002", "patience=20")
    assert cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu", "lr0=0.01"]) == 2
    out = capsys.readouterr().out
    problems = out[out.index("Problems (run would refuse)"):].splitlines()[1:]
    assert len(problems) == 1 and "(Ultralytics' resume ignores lr0 and keeps the checkpoint's)" in problems[0], out
    assert "warning: run would refuse" not in out, out


def test_a_refusal_says_its_error_line_before_its_warnings(capsys, cpu_machine):
    """Issue 18, item 6: a refused run printed its warnings (lr0 overridden under optimizer=auto)
    first and the error line last; the error line comes first now, the warnings after it."""
    lad = write(cpu_machine / "l.toml", ladder_text())
    stopped_run(lad, "lr0=0.002", "patience=20")
    said: list[str] = []
    with pytest.raises(setup.LauncherError) as e:  # the check that runs under the lock (check_continuation)
        setup.prepare(setup.Request(ladder=str(lad), device="cpu", epochs=7, overrides=("lr0=0.002",)),
                      say=said.append)
    assert said == [] and any(r.startswith("warning: lr0=0.002 is overridden") for r in e.value.reasons), said
    cli.main(["run", "--ladder", str(lad), "--device", "cpu", "lr0=0.01"])
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "warning: lr0=0.01 is overridden" in out, out + err


def stopped_after_an_attempt(lad: Path) -> None:
    """A run stopped after its first attempt, whose spec.json (as the supervisor writes it) holds
    the [job.args] it trained with."""
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu"), say=lambda line: None)
    p.state.save(p.paths.state)
    spec = spec_mod.build(p.ladder.job, p.ladder.rungs[p.start], p.device, p.paths, attempt=1)
    p.paths.spec(1).parent.mkdir(parents=True, exist_ok=True)
    p.paths.spec(1).write_text(json.dumps(spec.to_json()))
    p.lock.release()


@pytest.mark.parametrize("command", ["dry-run", "run"])
def test_an_edited_job_arg_on_a_continued_run_is_refused_naming_the_ladder(capsys, cpu_machine, command,
                                                                          monkeypatch):
    """Review of issue 18, item 3: only key=value arguments were compared, so a [job.args] edited
    since the run started passed in silence, and Ultralytics' resume kept the checkpoint's value."""
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra="[job.args]\nlr0 = 0.002\npatience = 20\n"))
    stopped_after_an_attempt(lad)
    write(lad, ladder_text(job_extra="[job.args]\nlr0 = 0.01\npatience = 20\n"))
    monkeypatch.setattr(setup, "supervise", lambda prepared: 99)  # not refused: no night trained here
    code = cli.main([command, "--ladder", str(lad), "--device", "cpu"])
    said = "".join(capsys.readouterr())  # dry-run: under Problems; run: its error line
    assert code == 2 and f"{lad}: [job.args], key 'lr0': run 't' was started with lr0=0.002" in said, said
    assert "(Ultralytics' resume ignores lr0 and keeps the checkpoint's)" in said, said
    assert "set lr0 = 0.002 again to continue as started, or start afresh with --fresh" in said, said


def test_a_job_arg_left_out_of_the_ladder_continues_as_started(capsys, cpu_machine):
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra="[job.args]\nlr0 = 0.002\npatience = 20\n"))
    stopped_after_an_attempt(lad)
    write(lad, ladder_text(job_extra="[job.args]\npatience = 20\n"))
    said: list[str] = []
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu"), say=said.append)
    p.lock.release()
    assert p.ladder.job.args == {"lr0": 0.002, "patience": 20}, p.ladder.job.args
    assert [s for s in said if "run's own" in s] == \
        ["continuing with the run's own lr0=0.002 (left out this time: it goes on as it was started)"], said


def test_a_changed_argument_a_resume_takes_is_used_from_this_attempt_on(capsys, cpu_machine, monkeypatch):
    """Review of issue 18, item 3: patience=5 on a continued run was refused, though Ultralytics'
    resume takes it (check_resume's `allowed`, held to its source in tests/test_parity.py) and the
    child passes the run's arguments to the resume. It is taken, said in one line, and kept."""
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra="[job.args]\nplots = true\n"))
    stopped_run(lad, "lr0=0.002", "patience=20")
    assert overrides.resume_takes("lr0") is False and overrides.resume_takes("patience")
    write(lad, ladder_text(job_extra="[job.args]\nplots = false\n"))
    line = "patience=5 plots=True is used from this attempt on (run 't' was started with patience=20 plots=unset; " \
           "Ultralytics' resume takes it)"  # plots: a key the run was started without
    assert cli.main(["dry-run", "--ladder", str(lad), "--device", "cpu", "--json", "patience=5", "plots=True"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert line in d["warnings"] and d["child"]["spec"]["extra_args"]["patience"] == 5, d["warnings"]
    said: list[str] = []
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu", overrides=("patience=5", "plots=True")),
                      say=said.append)
    p.lock.release()
    assert f"warning: {line}" in said and p.state.overrides == {"lr0": 0.002, "patience": 5, "plots": True}, said
    assert p.ladder.job.args == {"lr0": 0.002, "patience": 5, "plots": True}, p.ladder.job.args


def test_an_edited_job_arg_a_resume_takes_is_used_from_this_attempt_on(capsys, cpu_machine):
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra="[job.args]\nplots = true\n"))
    stopped_after_an_attempt(lad)
    write(lad, ladder_text(job_extra="[job.args]\nplots = false\n"))
    said: list[str] = []
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu"), say=said.append)
    p.lock.release()
    assert "warning: plots=False is used from this attempt on (run 't' was started with plots=True; Ultralytics' " \
           "resume takes it)" in said and p.ladder.job.args == {"plots": False}, said


SOURCE = '''"""A module shaped like Ultralytics' cfg/__init__.py and trainer.py."""
DOC = """
RULES = "text in a string is no assignment"
"""
RULES = frozenset(
    {"a", "b"}
)
OTHER = {  # a comment
    "x": 1,
}


class Trainer:
    def check(
        self,
        overrides,
    ):
        allowed = ["lr0"]
# a comment at column 0 does not end the method
        if overrides:
            return allowed

    def build(self):
        optimizers = {"SGD", "AdamW"}
        note = """
a string line at column 0"""
        return optimizers, note

    def twice(self):
        optimizers = {"not the first in the whole file: the function below is shallower"}


def twice(x):
    optimizers = {"SGD"}
'''


def whole_file(path: Path, inside: str | None = None) -> list:
    """What overrides._source read before it parsed parts alone: the whole file, always."""
    tree = ast.parse(path.read_text())
    if inside is None:
        return tree.body
    return next(list(ast.walk(n)) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == inside)


@pytest.mark.parametrize("text", [SOURCE, SOURCE + "RULES = {'late'}\n\n\ndef after():\n    pass\n"],
                         ids=["once", "assigned again"])
def test_the_rules_read_from_part_of_a_file_are_what_the_whole_file_says(tmp_path, monkeypatch, text):
    """Dry-run reads check_cfg's tables and two trainer methods from Ultralytics' source: parsing the
    whole of trainer.py and cfg/__init__.py cost every dry-run 30 ms (issue 19, "dry-run as fast as it
    was"). Only their own lines are parsed, and these say what the whole file says: a table over
    several lines, one assigned again further down (the last one counts), a signature over several
    lines, a comment at column 0; a method whose cut falls inside a string, or a name defined twice,
    is read from the whole file."""
    path = write(tmp_path / "m.py", text)
    parsed: list[int] = []
    real = ast.parse
    monkeypatch.setattr(overrides.ast, "parse", lambda source, *a, **k: parsed.append(len(source)) or real(source))
    for inside, names, alone in ((None, ("RULES",), True), ("check", (), True), ("build", (), False),
                                 ("twice", (), False)):
        parsed.clear()
        ours, mine = overrides._source(path, inside=inside, names=names), list(parsed)
        whole = whole_file(path, inside)
        if inside is None:
            assert [ast.dump(n) for n in ours] == [ast.dump(n) for n in whole[:len(ours)]]
            assert all(not (isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "RULES")
                       for n in whole[len(ours):]), "a later assignment left out"
        else:
            assert [ast.dump(n) for n in ours] == [ast.dump(n) for n in whole], inside
        # parsed alone: once, a part; else from the whole file (after a part that did not parse)
        tries = 1 if alone else {"build": 2, "twice": 1}[inside]  # build: its part, then the whole file
        assert len(mine) == tries and (mine[-1] < len(text)) == alone, (inside, mine)


def test_an_argument_given_as_the_ladders_job_args_started_it_is_not_a_change(capsys, cpu_machine):
    """Integration review, item 5: a run started with lr0=0.01 in the ladder's [job.args], then
    asked lr0=0.01 on the command line, was refused ("was started with lr0=unset"): the check read
    the run's key=value arguments only, not the [job.args] its attempt trained with."""
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra="[job.args]\noptimizer = \"SGD\"\nlr0 = 0.01\n"))
    stopped_run(lad)
    paths = setup.RunPaths.for_run("t")
    write(paths.spec(1), json.dumps({"rung": "a", "extra_args": {"optimizer": "SGD", "lr0": 0.01}}))
    code, out, err = cli_run(capsys, "dry-run", "--ladder", str(lad), "--device", "cpu", "lr0=0.01")
    assert code == 0 and "lr0=unset" not in out + err, out + err
    p = setup.prepare(setup.Request(ladder=str(lad), device="cpu", overrides=("lr0=0.01",)), say=lambda line: None)
    p.lock.release()
    assert p.ladder.job.args["lr0"] == 0.01 and p.state.attempts == 0
    code, out, err = cli_run(capsys, "dry-run", "--ladder", str(lad), "--device", "cpu", "lr0=0.02")
    assert code == 2 and "was started with lr0=0.01" in out + err, out + err  # a change is still one


def test_a_damaged_spec_says_nothing_of_the_job_args_a_run_started_with(capsys, cpu_machine):
    """Integration review (issue 19): a newest spec.json whose extra_args is missing or not an
    object read as {}, and every [job.args] key then read as a change ("was started with
    lr0=unset"): a damaged spec says nothing, so the check is skipped, not failed."""
    lad = write(cpu_machine / "l.toml", ladder_text(job_extra="[job.args]\nlr0 = 0.01\n"))
    stopped_run(lad)
    paths = setup.RunPaths.for_run("t")
    for damaged in ({"rung": "a", "extra_args": "lr0=0.01"}, {"rung": "a"}):
        write(paths.spec(1), json.dumps(damaged))
        code, out, err = cli_run(capsys, "dry-run", "--ladder", str(lad), "--device", "cpu")
        assert code == 0 and "unset" not in out + err, out + err


def cli_run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
