"""Running "the same command again" from another folder (issue 18, item 1): a run that would go on
where it stopped, in another place `status` looks, is not silently begun again at epoch 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher import cli, setup

from test_cli import a_record, cpu_machine, online, run  # noqa: F401  (fixtures and helpers)

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


def again(capsys, tmp_path, *more):
    """The night's command, from the other folder."""
    return run(capsys, "run", "--data", str(tmp_path / "coco_indoor" / "data.yaml"), "--device", "cpu", *more)


def test_the_same_command_from_another_folder_is_refused_naming_the_stopped_run(capsys, project, monkeypatch):
    a_record(project / "logs" / "coco_indoor")  # stopped (interrupted) after 3 attempts
    monkeypatch.chdir(project / "other")
    code, out, err = again(capsys, project)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, out + err
    assert f"is stopped (interrupted) in {project / 'logs'}" in err and f"no record in {project / 'other' / 'logs'}" in err
    assert f"cd {project}" in err and f"RTDETR_LOGS={project / 'logs'}" in err and "--fresh" in err
    assert not (project / "other" / "logs" / "coco_indoor").exists()  # no run begun here (a refusal log may be)
    assert cli.main(["status"]) == 0 and "run 'coco_indoor'" in capsys.readouterr().out  # status sees it from here
    monkeypatch.chdir(project)  # the way on it names: the run continues
    code, out, _ = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == NOT_REFUSED and "continuing run 'coco_indoor'" in out


def test_fresh_starts_a_new_run_here(capsys, project, monkeypatch):
    a_record(project / "logs" / "coco_indoor")
    monkeypatch.chdir(project / "other")
    p = setup.prepare(setup.Request(data=str(project / "coco_indoor" / "data.yaml"), device="cpu", fresh=True),
                      say=print)
    assert p.paths.root == project / "other" / "logs" / "coco_indoor" and p.state.attempts == 0
    assert p.state.status == "running" and not p.finished


def test_a_finished_run_elsewhere_is_only_noted(capsys, project, monkeypatch):
    a_record(project / "logs" / "coco_indoor", status="complete", delivered={"best": "b.pt", "last": "l.pt"})
    monkeypatch.chdir(project / "other")
    code, out, err = again(capsys, project)
    assert code == NOT_REFUSED and err == "", err
    assert f"note: run 'coco_indoor' on this dataset finished in {project / 'logs'}" in out


def test_a_run_on_another_dataset_elsewhere_does_not_block(capsys, project, monkeypatch):
    a_record(project / "logs" / "coco_indoor", data=str(project / "elsewhere" / "data.yaml"))
    monkeypatch.chdir(project / "other")
    code, out, err = again(capsys, project)
    assert code == NOT_REFUSED and err == "" and "note:" not in out, out + err


def test_a_run_the_command_does_not_name_is_found_by_its_dataset(capsys, project, monkeypatch):
    a_record(project / "logs" / "night")  # started with --name night
    monkeypatch.chdir(project / "other")
    code, _, err = again(capsys, project)
    assert code == 2 and f"run 'night' on {project / 'coco_indoor' / 'data.yaml'} is stopped" in err, err
    assert "then the same command with --name night" in err
    code, _, err = again(capsys, project, "--name", "day")  # named: another run, not this one
    assert code == NOT_REFUSED and err == "", err


def test_the_current_folders_logs_are_looked_in_when_rtdetr_logs_points_elsewhere(capsys, project, monkeypatch):
    monkeypatch.setattr("launcher.status.CHECKOUT_LOGS", project / "no-checkout-logs")
    a_record(project / "other" / "logs" / "coco_indoor", status="running")  # its launcher was killed
    monkeypatch.chdir(project / "other")
    monkeypatch.setenv("RTDETR_LOGS", str(project / "shared-logs"))
    code, _, err = again(capsys, project)
    assert code == 2 and f"is stopped in {project / 'other' / 'logs'}" in err, err
    assert f"(RTDETR_LOGS={project / 'other' / 'logs'};" in err and "cd " not in err
    code, _, err = again(capsys, project, "--fresh")
    assert code == NOT_REFUSED and err == "" and (project / "shared-logs" / "coco_indoor").is_dir(), err
