"""Running "the same command again" from another folder (issue 18, item 1): a run that would go on
where it stopped, in another place `status` looks, is not silently begun again at epoch 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import cli, setup

from conftest import ladder_text
from helpers import a_record, run

NOT_REFUSED = 99  # what `run` answers here once past its checks: no test of this file trains


@pytest.fixture(autouse=True)
def no_night(monkeypatch):
    monkeypatch.setattr(setup, "supervise", lambda prepared: NOT_REFUSED)


@pytest.fixture
def project(cpu_machine, tmp_path, monkeypatch) -> Path:
    """The checkout (tmp_path, where coco_indoor/ is) whose logs/ holds the records; the command
    then runs from tmp_path/other, whose logs/ is its own."""
    monkeypatch.setattr("launcher.status.CHECKOUT_LOGS", tmp_path / "logs")
    (tmp_path / "other").mkdir()
    return tmp_path


def stopped(root: Path, status: str = "interrupted", done: int = 2, **fields) -> Path:
    """A record of coco_indoor that stopped with `done` epochs of its model trained."""
    models = {"rtdetr-l.pt": {"save_dir": str(root / "models" / "rtdetr-l"), "epochs": 100, "epochs_done": done}}
    return a_record(root, status=status, models=models if done else {}, **fields)


def again(capsys, tmp_path, *more):
    """The night's command, from the other folder."""
    return run(capsys, "run", "--data", str(tmp_path / "coco_indoor" / "data.yaml"), "--device", "cpu", *more)


def test_the_same_command_from_another_folder_is_refused_naming_the_stopped_run(capsys, project, monkeypatch):
    stopped(project / "logs" / "coco_indoor")  # stopped (interrupted) after 3 attempts, 2 epochs done
    monkeypatch.chdir(project / "other")
    code, out, _ = run(capsys, "dry-run", "--data", str(project / "coco_indoor" / "data.yaml"), "--device", "cpu")
    assert code == 2 and f"is stopped (interrupted) in {project / 'logs'}" in out, out  # dry-run says it first
    code, out, err = again(capsys, project)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, out + err
    assert f"is stopped (interrupted) in {project / 'logs'}" in err and f"no record in {project / 'other' / 'logs'}" in err
    assert f"cd {project}" in err and f"RTDETR_LOGS={project / 'logs'}" in err and "--fresh" in err
    assert not (project / "other" / "logs" / "coco_indoor").exists()  # no run begun here (a refusal log may be)
    assert cli.main(["status"]) == 0 and "run 'coco_indoor'" in capsys.readouterr().out  # status sees it from here
    monkeypatch.chdir(project)  # the way on it names: the run continues
    code, out, _ = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == NOT_REFUSED and "continuing run 'coco_indoor'" in out, out + _


def test_fresh_starts_a_new_run_here(capsys, project, monkeypatch):
    stopped(project / "logs" / "coco_indoor")
    monkeypatch.chdir(project / "other")
    p = setup.prepare(setup.Request(data=str(project / "coco_indoor" / "data.yaml"), device="cpu", fresh=True),
                      say=print)
    assert p.paths.root == project / "other" / "logs" / "coco_indoor" and p.state.attempts == 0
    assert p.state.status == "running" and not p.finished


@pytest.mark.parametrize("status, done, how", [
    ("complete", 100, "finished"),
    ("fatal", 0, "stopped before its first epoch"),
    ("interrupted", 0, "stopped before its first epoch"),
    ("running", 0, "stopped before its first epoch"),  # a launcher killed before its first epoch
])
def test_a_run_elsewhere_with_nothing_to_resume_is_only_noted(capsys, project, monkeypatch, status, done, how):
    """Review of issue 18, item 1: any status but complete refused, though a failed run or one
    without an epoch has nothing a new run would begin again."""
    stopped(project / "logs" / "coco_indoor", status=status, done=done)
    monkeypatch.chdir(project / "other")
    code, out, err = again(capsys, project)
    assert code == NOT_REFUSED and err == "", err
    assert f"warning: run 'coco_indoor' on this dataset {how} in {project / 'logs'}" in out, out


@pytest.mark.parametrize("status", ["exhausted", "fatal"])
def test_an_exhausted_or_fatal_run_elsewhere_is_refused_as_from_its_own_folder_it_goes_on(capsys, project,
                                                                                          monkeypatch, status):
    """Integration review, item 2: from its own folder `run` continues any run not finished (raise
    max_attempts to go on: continuation.continues); from another folder the same run, with epochs saved,
    was only noted and a new run began at epoch 0."""
    stopped(project / "logs" / "coco_indoor", status=status, done=2)
    monkeypatch.chdir(project / "other")
    code, out, err = again(capsys, project)
    assert code == 2 and f"is stopped ({status}) in {project / 'logs'}" in err and "--fresh" in err, out + err
    assert not (project / "other" / "logs" / "coco_indoor").exists()
    monkeypatch.chdir(project)  # from its own folder it goes on
    code, out, _ = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == NOT_REFUSED and "continuing run 'coco_indoor'" in out, out


def test_a_run_running_elsewhere_is_refused_whatever_it_has_done(capsys, project, monkeypatch):
    from launcher.runlog import RunLock
    stopped(project / "logs" / "coco_indoor", status="running", done=0)
    held = RunLock(project / "logs" / "coco_indoor" / ".lock")
    assert held.acquire()
    try:
        monkeypatch.chdir(project / "other")
        code, _, err = again(capsys, project)
    finally:
        held.release()
    assert code == 2 and f"is running in {project / 'logs'}" in err, err
    assert "it is running there" in err and "use --name to start another run here" in err, err


def test_a_run_on_another_dataset_elsewhere_does_not_block(capsys, project, monkeypatch):
    a_record(project / "logs" / "coco_indoor", data=str(project / "elsewhere" / "data.yaml"))
    monkeypatch.chdir(project / "other")
    code, out, err = again(capsys, project)
    assert code == NOT_REFUSED and err == "" and "note:" not in out, out + err


def test_a_run_someone_named_is_not_found_by_its_dataset(capsys, project, monkeypatch):
    """Review of issue 18, item 1: a run started with --name night blocked every later run on its
    dataset; a run someone named is another run, found by its name only."""
    stopped(project / "logs" / "night")  # started with --name night
    monkeypatch.chdir(project / "other")
    code, out, err = again(capsys, project)
    assert code == NOT_REFUSED and err == "" and "night" not in out, out + err
    code, _, err = again(capsys, project, "--name", "night")  # the same name: that run
    assert code == 2 and f"run 'night' on {project / 'coco_indoor' / 'data.yaml'} is stopped" in err, err


def test_a_run_no_one_named_is_found_by_its_dataset(capsys, project, monkeypatch):
    """A run named after its dataset (run --data, no --name) is found by a command that names its
    run otherwise without choosing (the ladder's [job] name); an explicit --name never is."""
    stopped(project / "logs" / "coco_indoor")
    lad = project / "l.toml"
    lad.write_text(ladder_text(dataset=str(project / "coco_indoor" / "data.yaml")))  # [job] name = "t"
    monkeypatch.chdir(project / "other")
    code, _, err = run(capsys, "run", "--ladder", str(lad), "--device", "cpu")
    assert code == 2 and "run 'coco_indoor' on" in err and "then the same command with --name coco_indoor" in err, err
    code, _, err = run(capsys, "run", "--ladder", str(lad), "--device", "cpu", "--name", "day")
    assert code == NOT_REFUSED and err == "", err


def test_the_current_folders_logs_are_looked_in_when_rtdetr_logs_points_elsewhere(capsys, project, monkeypatch):
    monkeypatch.setattr("launcher.status.CHECKOUT_LOGS", project / "no-checkout-logs")
    stopped(project / "other" / "logs" / "coco_indoor", status="running")  # its launcher was killed
    monkeypatch.chdir(project / "other")
    monkeypatch.setenv("RTDETR_LOGS", str(project / "shared-logs"))
    code, _, err = again(capsys, project)
    assert code == 2 and f"is stopped in {project / 'other' / 'logs'}" in err, err
    assert f"(RTDETR_LOGS={project / 'other' / 'logs'};" in err and "cd " not in err
    code, _, err = again(capsys, project, "--fresh")
    assert code == NOT_REFUSED and err == "" and (project / "shared-logs" / "coco_indoor").is_dir(), err


def test_sbatch_checks_elsewhere_before_the_queue_and_its_fresh_job_is_not_refused(capsys, project, monkeypatch):
    """Review of issue 18, item 1: sbatch submitted a job whose `run` was refused after the queue
    wait (a stopped run elsewhere), and --fresh did not help: the script drops it (a requeue must
    continue the run). sbatch refuses as run does; with --fresh its script names a new run, which
    the job's `run` starts."""
    import shlex
    stopped(project / "logs" / "coco_indoor")
    monkeypatch.chdir(project / "other")
    data = str(project / "coco_indoor" / "data.yaml")
    code, _, err = run(capsys, "sbatch", "--data", data, "--dry-run")
    assert code == 2 and f"is stopped (interrupted) in {project / 'logs'}" in err and "--fresh" in err, err
    code, out, err = run(capsys, "sbatch", "--data", data, "--fresh", "--dry-run")
    assert code == 0, err
    argv = shlex.split(next(line for line in out.splitlines() if line.startswith("exec ")))
    job = argv[argv.index("run") + 1:]
    name = job[job.index("--name") + 1]
    assert name.startswith("coco_indoor-") and "--fresh" not in job, job
    code, _, err = run(capsys, "run", *job, "--device", "cpu")  # the job's run, on this CPU machine
    assert code == NOT_REFUSED and err == "" and (project / "other" / "logs" / name).is_dir(), err
