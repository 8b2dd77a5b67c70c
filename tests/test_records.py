"""A run record trusted only as far as it is this run's (issue 17, items 10-13): a copied run folder,
another run's process list, a dataset resolved from another folder, a request a run would not train."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import psutil
import pytest

from launcher import dataset as dataset_mod, proctree, setup
from launcher.errors import BadInput
from launcher.runlog import RunLock, RunPaths

from conftest import make_image_tree
from helpers import a_record, events, launch, model_dir, of, prepare, run, tiny_ladder, trained_epochs

SLEEPER = "import sys, time; print('ready', flush=True); time.sleep(120)"
NOT_REFUSED = 99  # what `run` answers here once past its checks: no test of this file trains


@pytest.fixture(autouse=True)
def no_night(monkeypatch):
    monkeypatch.setattr(setup, "supervise", lambda prepared: NOT_REFUSED)


@pytest.fixture
def spawn():
    """Start a process whose argv names a spec; whatever is left is SIGKILLed at teardown."""
    started: list[subprocess.Popen] = []

    def start(spec: Path) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", SLEEPER, str(spec)], stdout=subprocess.PIPE, text=True,
                                start_new_session=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def checkpoint(path: Path, epoch: int, epochs: int, **args) -> Path:
    """A zip like torch.save's holding what Ultralytics keeps: the epoch and its training arguments."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("last/data.pkl", pickle.dumps({"epoch": epoch, "train_args": {"epochs": epochs,
                                                                                  "model": "rtdetr-l.pt", **args}}))
    return path


def run_a(tmp_path: Path, folder: bool = True, **fields) -> Path:
    """Run A, stopped after 1 of 100 epochs of rtdetr-l.pt, its record and checkpoint in logs/A
    (without `folder`: as a launcher wrote it before records named their folder)."""
    paths = RunPaths((tmp_path / "logs" / "A").resolve())
    save_dir = paths.save_dir("rtdetr-l.pt")
    checkpoint(save_dir / "weights" / "last.pt", 0, 100)
    a_record(paths.root, models={"rtdetr-l.pt": {"save_dir": str(save_dir), "epochs": 100, "epochs_done": 1}},
             training_model="rtdetr-l.pt", **({"folder": str(paths.root)} if folder else {}), **fields)
    return paths.root


# ---- item 10: a copied run folder --------------------------------------------------------------

@pytest.mark.parametrize("folder", [True, False], ids=["record-names-its-folder", "older-record"])
def test_a_copied_run_folder_is_adopted_and_never_writes_into_the_original(capsys, cpu_machine, tmp_path, folder):
    a = run_a(tmp_path, folder)
    b = a.parent / "B"
    shutil.copytree(a, b)
    before = files(a)
    p = prepare(name="B")
    out = capsys.readouterr().out
    assert f"{b} holds the record of {a} (a copied run folder)" in out and f"{a} is not touched" in out
    model = p.state.models["rtdetr-l.pt"]
    assert model.save_dir == str(p.paths.save_dir("rtdetr-l.pt")) and model.epochs_done == 1
    assert p.state.run == "B" and p.state.folder == str(b)
    saved = json.loads((b / "state.json").read_text())
    assert str(a) not in json.dumps(saved)  # B's record names only B's files
    assert json.loads((b / "events.jsonl").read_text().splitlines()[-2])["event"] == "adopted"
    assert files(a) == before  # never touched


def test_a_copied_finished_run_names_the_copys_files(capsys, cpu_machine, tmp_path):
    a = run_a(tmp_path, status="complete", delivered={"model": "rtdetr-l.pt", "best": str(tmp_path / "logs" / "A" /
                                                      "models" / "m" / "weights" / "best.pt")})
    shutil.copytree(a, a.parent / "B")
    code, out, _ = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu", "--name", "B")
    assert code == 0 and f"best: {a.parent / 'B' / 'models' / 'm' / 'weights' / 'best.pt'}" in out
    assert json.loads((a / "state.json").read_text())["run"] == "A"


def test_a_copied_record_naming_a_folder_outside_both_is_refused(capsys, cpu_machine, tmp_path):
    a = run_a(tmp_path)
    state = json.loads((a / "state.json").read_text())
    state["models"]["rtdetr-l.pt"]["save_dir"] = str(tmp_path / "elsewhere" / "models" / "x")
    (a / "state.json").write_text(json.dumps(state))
    shutil.copytree(a, a.parent / "B")
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu", "--name", "B")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert str(tmp_path / "elsewhere") in err and f"outside this run's folder {a.parent / 'B'}" in err
    assert "--fresh" in err


# ---- item 11: another run's process list -------------------------------------------------------

def test_a_copied_record_never_ends_the_original_runs_child(capsys, cpu_machine, tmp_path, spawn):
    """Run A trains (its launcher holds its lock); its folder is copied to B meanwhile, and `run
    --name B` must not end A's child, which the copied record lists."""
    root = (tmp_path / "logs" / "A").resolve()
    child = spawn(root / "attempt-3" / "spec.json")
    a = run_a(tmp_path, status="running", tree=proctree.snapshot(child.pid))
    held = RunLock(a / ".lock")
    assert held.acquire()  # A's launcher
    try:
        shutil.copytree(a, a.parent / "B")
        p = prepare(name="B")
        assert running(child.pid) and p.state.tree == []
        assert "ended" not in capsys.readouterr().out
    finally:
        held.release()


def test_an_own_record_ends_only_the_processes_naming_its_own_spec(capsys, cpu_machine, tmp_path, spawn):
    """A record of this folder whose list also names another run's child (restored from the wrong
    place): this run's child is ended, the other run's lives."""
    root = (tmp_path / "logs" / "coco_indoor").resolve()
    mine, other = spawn(root / "attempt-3" / "spec.json"), spawn(tmp_path / "logs" / "A" / "attempt-1" / "spec.json")
    a_record(root, folder=str(root), tree=proctree.snapshot(mine.pid) + proctree.snapshot(other.pid))
    prepare()
    out = capsys.readouterr().out
    assert f"ended 1 process(es) left by the previous launcher: [{mine.pid}]" in out
    assert f"left 1 process(es) of the record running, as neither their command line nor their environment " \
           f"names a spec of {root}" in out
    assert not running(mine.pid) and running(other.pid)


def test_a_copied_record_drops_its_process_list_whatever_the_processes_name(capsys, cpu_machine, tmp_path, spawn):
    """The copy's list is the original's, even where a process on it names the copy's own spec
    (which reap_run alone would end): adopt drops it, so nothing on it is ended."""
    b = (tmp_path / "logs" / "B").resolve()
    child = spawn(b / "attempt-1" / "spec.json")
    a = run_a(tmp_path, tree=proctree.snapshot(child.pid))
    shutil.copytree(a, b)
    p = prepare(name="B")
    assert running(child.pid) and p.state.tree == [] and "ended" not in capsys.readouterr().out


def test_a_moved_run_folder_ends_the_processes_its_killed_launcher_left(capsys, cpu_machine, tmp_path, spawn):
    """`mv logs/A logs/B` after A's launcher was SIGKILLed: the record's processes are this very
    run's (they name A's specs, and A is gone), so they are ended, not left beside the new attempt."""
    a = run_a(tmp_path)
    child = spawn(a / "attempt-3" / "spec.json")
    state = json.loads((a / "state.json").read_text())
    (a / "state.json").write_text(json.dumps({**state, "status": "running", "tree": proctree.snapshot(child.pid)}))
    b = a.parent / "B"
    a.rename(b)
    p = prepare(name="B")
    out = capsys.readouterr().out
    assert f"{b} holds the record of {a}, which is no longer there (a moved run folder)" in out
    assert "not touched" not in out and f"ended 1 process(es) left by the previous launcher: [{child.pid}]" in out
    assert not running(child.pid) and p.state.tree == [] and not a.exists()
    assert p.state.models["rtdetr-l.pt"].save_dir == str(p.paths.save_dir("rtdetr-l.pt"))


def test_a_record_of_this_folder_naming_another_runs_folder_is_refused(capsys, cpu_machine, tmp_path):
    """A record restored by hand: its `folder` is this one, its model folder is run A's. Checked
    though nothing needs rewriting, or the run would train into A."""
    a = run_a(tmp_path)
    b = a.parent / "B"
    b.mkdir()
    state = json.loads((a / "state.json").read_text())
    (b / "state.json").write_text(json.dumps({**state, "run": "B", "folder": str(b)}))
    before = files(a)
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu", "--name", "B")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{b / 'state.json'}, key 'models' / 'rtdetr-l.pt'" in err and f"{a / 'models'}" in err
    assert f"outside this run's folder {b}" in err and files(a) == before


# ---- item 12: a relative dataset path resolved from another folder -------------------------------

def test_a_run_continued_from_another_folder_keeps_its_dataset(capsys, cpu_machine, tmp_path, monkeypatch):
    """`path: sets/ds` resolves against the folder `run` starts in: 48 images from one, 38 from
    the other. The run continued from the second must not train on the second's images."""
    yaml = tmp_path / "shared" / "data.yaml"
    yaml.parent.mkdir()
    yaml.write_text("path: sets/ds\ntrain: images/train\nval: images/val\nnames: ['box']\n")
    first, second = tmp_path / "first", tmp_path / "second"
    make_image_tree(first / "sets" / "ds", 40, 8)
    make_image_tree(second / "sets" / "ds", 30, 8)
    monkeypatch.setenv("RTDETR_LOGS", str(tmp_path / "logs"))
    monkeypatch.chdir(first)
    p = setup.prepare(setup.Request(data=str(yaml), device="cpu", name="night"), say=print)
    p.state.save(p.paths.state)  # as the supervisor does before its first child
    p.lock.release()
    resolved = p.paths.dataset.read_text()
    assert str(first / "sets" / "ds") in resolved
    monkeypatch.chdir(second)
    code, _, err = run(capsys, "run", "--data", str(yaml), "--device", "cpu", "--name", "night")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"{yaml}, key 'path': run 'night' trained on {first / 'sets' / 'ds'}" in err
    assert f"resolves to {second / 'sets' / 'ds'}" in err and f"set path: {first / 'sets' / 'ds'})" in err
    assert p.paths.dataset.read_text() == resolved  # the first resolution kept
    monkeypatch.chdir(first)
    again = setup.prepare(setup.Request(data=str(yaml), device="cpu", name="night"), say=print)
    assert again.state.attempts == 0 and "continuing run 'night'" in capsys.readouterr().out


# ---- item 13: a request a continued or finished run would not train ------------------------------

@pytest.mark.parametrize("asked, names", [
    (["--epochs", "300"], ["key 'epochs_override'", "the ladder's epochs", "asks 300"]),
    (["lr0=0.01"], ["key 'overrides'", "asks lr0=0.01"]),
    (["--data", "other/data.yaml"], ["key 'data'", "pass --data"]),
])
def test_a_finished_run_refuses_what_it_would_not_train(capsys, cpu_machine, tmp_path, asked, names):
    make_image_tree(tmp_path / "other", 4, 2)
    a_record(tmp_path / "logs" / "coco_indoor", status="complete", delivered={"best": "b.pt", "last": "l.pt"})
    code, out, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu", "--name",
                         "coco_indoor", *asked)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "already finished" not in out, out + err
    for n in names + ["--fresh"]:
        assert n in err
    code, out, _ = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == 0 and "already finished; nothing to train" in out


def test_a_finished_run_from_before_model_folders_is_still_finished(capsys, cpu_machine, tmp_path):
    """One folder for two models refuses a run that would write checkpoints; a finished one writes
    none, and answers as finished runs do."""
    shared = str(tmp_path / "logs" / "coco_indoor" / "models" / "rtdetr-l")
    a_record(tmp_path / "logs" / "coco_indoor", status="complete", delivered={"best": f"{shared}/weights/best.pt"},
             models={"rtdetr-l.yaml": {"save_dir": shared, "epochs": 3, "epochs_done": 3},
                     "/data/rtdetr-l.pt": {"save_dir": shared, "epochs": 3, "epochs_done": 1}})
    code, out, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == 0 and "already finished; nothing to train" in out and f"best: {shared}/weights/best.pt" in out, err


def test_a_stopped_run_whose_ladder_asks_more_epochs_refuses(capsys, cpu_machine, tmp_path):
    lad = tmp_path / "l.toml"
    text = '[job]\nname = "t"\ndataset = "coco_indoor/data.yaml"\nimgsz = 64\n\n[[rung]]\nname = "a"\n' \
           'model = "rtdetr-l.yaml"\nepochs = {}\nbatch = 2\n'
    lad.write_text(text.format(3))
    root = (tmp_path / "logs" / "t").resolve()
    save_dir = RunPaths(root).save_dir("rtdetr-l.yaml")
    a_record(root, ladder=str(lad), rung="a", models={"rtdetr-l.yaml": {"save_dir": str(save_dir), "epochs": 3,
                                                                        "epochs_done": 1}})
    lad.write_text(text.format(5))  # raised since: Ultralytics' resume would train to 3 all the same
    code, out, err = run(capsys, "run", "--ladder", str(lad), "--device", "cpu")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "continuing" not in out, out + err
    assert f"{lad}: rung 'a', epochs: asks 5, but run 't' trains rtdetr-l.yaml for 3 (1 done" in err
    assert "set epochs = 3 again to continue, or start afresh with --fresh" in err
    lad.write_text(text.format(3))
    assert setup.prepare(setup.Request(ladder=str(lad), device="cpu"), say=print).state.models["rtdetr-l.yaml"]


def test_a_rebuilt_record_refuses_arguments_its_checkpoint_was_not_trained_with(capsys, cpu_machine, tmp_path):
    """state.json gone: a key=value argument is compared with the checkpoint's own, as Ultralytics
    resumes with those."""
    paths = RunPaths((tmp_path / "logs" / "coco_indoor").resolve())
    paths.attempt(1).mkdir(parents=True)
    dataset_mod.write_resolved(dataset_mod.inspect((tmp_path / "coco_indoor" / "data.yaml").resolve()),
                               paths.dataset)
    last = checkpoint(paths.save_dir("rtdetr-l.pt") / "weights" / "last.pt", 0, 100, lr0=0.002, patience=20)
    with pytest.raises(BadInput, match=r"trained with lr0=0.002 \(its own training arguments\); this run asks "
                                       r"lr0=0.01.*--fresh") as e:
        prepare(overrides=("lr0=0.01",))
    assert e.value.args and str(last) in str(e.value)
    p = prepare(overrides=("lr0=0.002", "patience=20"))
    assert p.state.overrides == {"lr0": 0.002, "patience": 20} and p.state.models["rtdetr-l.pt"].epochs_done == 1


@pytest.mark.slow
def test_a_copied_run_trains_on_in_the_copy_with_the_original_untouched(tmp_path, shapes):
    """For real: run e2e stops after epoch 1, its folder is copied, and `run --name copy` trains the
    copy's checkpoint to the end while not one byte of the original changes."""
    lad = tiny_ladder(tmp_path, shapes)
    assert launch(tmp_path, "--ladder", str(lad), "--inject", "crash:optimal:2").returncode == 4  # epoch 1 saved
    original = tmp_path / "logs" / "e2e"
    shutil.copytree(original, tmp_path / "logs" / "copy")
    before = files(original)
    again = launch(tmp_path, "--ladder", str(lad), "--name", "copy")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert files(original) == before
    assert of(events(tmp_path, "copy"), "resume")[-1]["checkpoint"] == str(model_dir(tmp_path, "copy") / "weights" /
                                                                          "last.pt")
    assert trained_epochs(model_dir(tmp_path, "copy")) == [1, 2]


# ---- integration review: dry-run, run and sbatch refuse alike, and a refusal writes nothing ----

def dry_and_run(capsys, *more) -> tuple[tuple[int, str], tuple[int, str]]:
    """(dry-run's exit and output, run's exit and error) of run A with `more`."""
    argv = ["--data", "coco_indoor/data.yaml", "--device", "cpu", "--name", "A", *more]
    code, out, err = run(capsys, "dry-run", *argv)
    dry = (code, out + err)
    code, out, err = run(capsys, "run", *argv)
    return dry, (code, err)


@pytest.mark.parametrize("fields, more, says", [
    ({"status": "complete"}, ("--epochs", "300"), "this run asks 300 epochs"),
    ({"status": "complete"}, ("lr0=0.05",), "was started with lr0=unset"),
    ({}, ("--epochs", "300"), "this run asks 300 epochs"),
    ({"rung": "gone"}, (), "stopped on rung 'gone'"),
    ({"overrides": {"save": False}}, (), "trains with save=False, which is refused now"),
], ids=["finished-epochs", "finished-argument", "stopped-epochs", "rung-gone", "stored-argument"])
def test_dry_run_exits_2_exactly_where_run_refuses(capsys, cpu_machine, tmp_path, fields, more, says):
    """Integration review, item 1: dry-run checked only a run elsewhere and changed key=value
    arguments, so `dry-run --epochs 300` of a finished run exited 0 where run refused (continuation.met)."""
    run_a(tmp_path, **fields)
    (dry_code, dry_out), (run_code, run_err) = dry_and_run(capsys, *more)
    assert run_code == 2 and says in run_err, run_err
    assert dry_code == 2 and says in dry_out, dry_out


def test_dry_run_says_a_run_a_launcher_holds_is_already_running(capsys, cpu_machine, tmp_path):
    """Integration review, item 1: the lock is tested, not taken, by dry-run."""
    a = run_a(tmp_path)
    held = RunLock(RunPaths(a).lock)
    assert held.acquire()
    try:
        (dry_code, dry_out), (run_code, run_err) = dry_and_run(capsys)
        assert not RunLock(RunPaths(a).lock).acquire()  # dry-run left it held
    finally:
        held.release()
    assert run_code == 2 and "already running" in run_err, run_err
    assert dry_code == 2 and "already running" in dry_out, dry_out


def test_sbatch_refuses_a_changed_request_of_the_run_it_would_continue(capsys, cpu_machine, tmp_path):
    """Integration review, item 3: sbatch checked only a run elsewhere; the job's `run` refused a
    changed --epochs or lr0 after the queue wait."""
    run_a(tmp_path)
    for more in (("--epochs", "300"), ("lr0=0.05",)):
        code, _, err = run(capsys, "sbatch", "--data", "coco_indoor/data.yaml", "--name", "A", "--dry-run", *more)
        assert code == 2 and "fix:" in err and "Traceback" not in err, err
    code, _, err = run(capsys, "sbatch", "--data", "coco_indoor/data.yaml", "--name", "A", "--dry-run")
    assert code == 0, err


@pytest.mark.parametrize("state_json", [True, False], ids=["copied", "rebuilt"])
def test_a_refused_continuation_writes_nothing(capsys, cpu_machine, tmp_path, state_json):
    """Integration review, item 4: adopt saved the rewritten state.json and appended `adopted`
    (rebuild: `rebuilt`) before the request was checked, so a refused run changed the record."""
    a = run_a(tmp_path)
    b = a.parent / "B"
    shutil.copytree(a, b)
    if not state_json:
        (b / "state.json").unlink()
    before = {n: (b / n).read_bytes() if (b / n).exists() else None for n in ("state.json", "events.jsonl")}
    with pytest.raises(BadInput, match="300 epochs"):
        prepare(name="B", epochs=300)
    assert {n: (b / n).read_bytes() if (b / n).exists() else None for n in before} == before
    assert not RunLock(RunPaths(b).lock).is_held()


def test_dry_run_shows_the_attempt_and_rung_run_would_start(capsys, cpu_machine, tmp_path):
    """Integration review, item 6: dry-run showed attempt 1 at the probe's rung for a continued run
    (run starts attempt 4 on its own rung), and the old name's folder with --fresh."""
    a = run_a(tmp_path, rung="safe")
    code, out, err = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--device", "cpu", "--name", "A",
                         "--json")
    child = json.loads(out)["child"]
    assert code == 0 and child["spec_path"] == str(a / "attempt-4" / "spec.json"), child["spec_path"]
    assert child["env"]["RTDETR_SPEC"] == child["spec_path"] and child["spec"]["rung"] == "safe", child["spec"]
    fresh = setup.make_plan(setup.Request(data="coco_indoor/data.yaml", device="cpu", name="A", fresh=True))
    assert fresh.spec_path.parent.name == "attempt-1" and fresh.spec_path.parent.parent.name.startswith("A-")
