"""SLURM without a cluster: the batch script (quoting, options), sbatch's refusals, and the
supervisor's cuts (time limit, preemption, the requeue budget) driven through the launch seam.
The same night on a real slurmctld is in test_slurm_e2e.py."""

from __future__ import annotations

import json
import signal
import stat
import subprocess
from pathlib import Path

import pytest

from launcher import cli, slurm
from launcher.contract import EXIT_EXHAUSTED, EXIT_REQUEUED
from launcher.failures import ChildEnd
from launcher.runlog import RunPaths

from test_supervisor import FakeChild, ok, with_job

HOSTILE = ["$(touch pwned)", "`touch pwned`", "a b", "it's", 'say "hi"', "x;touch pwned", "\\n", "*"]


def fake_exe(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.parametrize("evil", HOSTILE)
def test_no_value_can_break_the_script_or_run_anything(tmp_path, evil):
    folder = tmp_path / f"dir {evil}".replace("/", "_")
    folder.mkdir()
    fake_python = fake_exe(tmp_path, "python", 'printf "%s\\n" "$PWD" "$RTDETR_LOGS" "$@" > argv.txt\n')
    argv = ["--data", f"{folder}/d {evil}.yaml", f"optimizer={evil}", "--name", "night"]
    text = slurm.script(name="night", run_argv=argv, logs=folder / "logs", cwd=folder, lead_s=300, gpus=1,
                        python=str(fake_python))
    script = tmp_path / "job.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    subprocess.run(["bash", str(script)], cwd=tmp_path, check=True, timeout=30)
    seen = (folder / "argv.txt").read_text().split("\n")[:-1]
    assert seen == [str(folder), str(folder / "logs"), "-m", "launcher", "run", *argv]
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()


def test_the_script_asks_for_requeue_the_signal_and_the_gpus(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["sbatch", "--demo", "--device", "0,1", "--signal-lead", "120", "epochs=3", "--dry-run", "--",
                     "--time=1:00:00", "-p", "gpu"])
    out = capsys.readouterr().out
    assert code == 0 and "#SBATCH --requeue\n" in out and "#SBATCH --signal=B:USR1@120\n" in out
    assert "#SBATCH --gres=gpu:2\n" in out and "#SBATCH --open-mode=append\n" in out
    assert "exec " in out and " -m launcher run --name demo --demo --device 0,1 epochs=3\n" in out
    assert "--dry-run: not submitted" in out and not (tmp_path / "logs" / "demo" / "sbatch.sh").exists()
    cli.main(["sbatch", "--demo", "--dry-run", "--", "--gres=gpu:a100:1"])
    assert "#SBATCH --gres=gpu:1" not in capsys.readouterr().out  # the user's own GPU request stands


@pytest.mark.parametrize("sbatch_args, names", [
    (["--time=5"], ["--time 5", "(5 min) is not longer than the signal's lead (300 s)"]),
    (["-t", "4:00"], ["(4 min)"]),
    (["--time=soon"], ["not a SLURM time"]),
])
def test_a_time_limit_within_the_signal_lead_is_refused(tmp_path, monkeypatch, capsys, sbatch_args, names):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["sbatch", "--demo", "--", *sbatch_args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    for n in names:
        assert n in err
    assert not (tmp_path / "logs").exists()


def test_sbatch_missing_or_refusing_is_one_line_and_nothing_is_submitted(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    assert cli.main(["sbatch", "--demo", "--", "--time=60"]) == 2
    assert "sbatch: not found on this machine's PATH" in capsys.readouterr().err
    fake_exe(bin_dir, "sbatch", 'echo "sbatch: error: invalid partition specified: nope" >&2; exit 1\n')
    assert cli.main(["sbatch", "--demo", "--", "--time=60", "-p", "nope"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "refused the job (sbatch: error: invalid partition" in err
    fake_exe(bin_dir, "sbatch", 'echo "4242;cluster"\n')
    assert cli.main(["sbatch", "--demo", "--", "--time=60"]) == 0
    out = capsys.readouterr().out
    assert "submitted SLURM job 4242" in out and "status demo" in out
    assert (tmp_path / "logs" / "demo" / "sbatch.sh").read_text().startswith("#!/bin/bash\n")


def test_a_sigterm_is_a_time_limit_only_at_the_jobs_end():
    job = slurm.Job("7", 0, end_time=10_000.0, signal=signal.SIGUSR1)
    assert job.cut(signal.SIGUSR1, now=1_000.0) == "time_limit"
    assert job.cut(signal.SIGTERM, now=1_000.0) == "preempted"
    assert job.cut(signal.SIGTERM, now=9_950.0) == "time_limit"
    env = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "2", "SLURM_JOB_END_TIME": "10000"}
    assert slurm.Job.here(env) == job.__class__("7", 2, 10_000.0, signal.SIGUSR1)
    assert slurm.Job.here({}) is None


# ---- the supervisor's cuts -----------------------------------------------------------------------

class Requeue(slurm.Job):
    def requeue(self) -> str:
        Requeue.asked += 1
        return "requeued"


def cut_night(tmp_path, sig, end_time=None, **job):
    """One attempt that SLURM cuts with `sig` while it trains."""
    Requeue.asked = 0
    ladder = with_job(**job)
    sup_ref = {}

    def child(cmd, env, log_path, watchdog):
        spec = json.loads(Path(cmd[-1]).read_text())
        Path(spec["heartbeat"]).write_text(json.dumps({"epochs_saved": 3, "last_saved_epoch": 3, "phase": "train"}))
        sup_ref["sup"].signals(sig, None)
        log_path.write_text("KeyboardInterrupt: received SIGTERM\n")
        return ChildEnd(1)
    return ladder, child, sup_ref, Requeue("99", 0, end_time, signal.SIGUSR1)


def run_cut(tmp_path, sig, state=None, **job):
    from launcher.supervisor import Supervisor
    from test_supervisor import new_state
    ladder, child, ref, rq = cut_night(tmp_path, sig, **job)
    lines = []
    sup = Supervisor(ladder=ladder, rungs=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, sleep=lambda s: None, say=lines.append, slurm_job=rq)
    ref["sup"] = sup
    state = state or new_state(ladder)
    return sup.run(state), state, lines


def test_the_time_limit_signal_requeues_the_job_and_is_no_failure(tmp_path):
    code, state, lines = run_cut(tmp_path, signal.SIGUSR1)
    assert code == EXIT_REQUEUED and Requeue.asked == 1
    assert state.status == "time_limit" and state.requeues == 1 and state.attempts == 1 and state.cut == 1
    assert "the checkpoint stays resumable" in state.reason and state.rung == "optimal"
    assert any(line == "SLURM job 99: requeued" for line in lines)


def test_a_preemption_is_recorded_and_left_to_slurm(tmp_path):
    code, state, _ = run_cut(tmp_path, signal.SIGTERM)
    assert code == EXIT_REQUEUED and Requeue.asked == 0 and state.status == "preempted" and state.requeues == 1


def test_past_max_requeues_the_run_ends_exhausted(tmp_path):
    from test_supervisor import new_state
    state = new_state(with_job(max_requeues=1))
    state.requeues = 1
    code, state, _ = run_cut(tmp_path, signal.SIGUSR1, state=state, max_requeues=1)
    assert code == EXIT_EXHAUSTED and Requeue.asked == 0 and "requeue budget spent" in state.reason


def test_requeues_do_not_spend_the_attempt_budget(tmp_path):
    """max_attempts = 1: the cut attempt does not count, so the requeued run may still train."""
    from launcher.supervisor import Supervisor
    from test_supervisor import new_state
    ladder, child, ref, rq = cut_night(tmp_path, signal.SIGUSR1, max_attempts=1)
    state = new_state(ladder)
    sup = Supervisor(ladder=ladder, rungs=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, sleep=lambda s: None, say=lambda line: None, slurm_job=rq)
    ref["sup"] = sup
    assert sup.run(state) == EXIT_REQUEUED
    again = FakeChild([ok()])
    state.status = "running"
    code = Supervisor(ladder=ladder, rungs=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                      launch=again, sleep=lambda s: None, say=lambda line: None).run(state)
    assert code == 0 and len(again.calls) == 1 and state.attempts == 2


def test_ctrl_c_in_an_allocation_is_a_persons_not_slurms(tmp_path):
    code, state, _ = run_cut(tmp_path, signal.SIGINT)
    assert code == 130 and state.status == "interrupted" and state.requeues == 0 and Requeue.asked == 0


def test_a_requeue_slurm_refuses_ends_the_night_saying_so(tmp_path, monkeypatch):
    monkeypatch.setattr(Requeue, "requeue", lambda self: "scontrol requeue 99 failed: Invalid job id")
    code, state, _ = run_cut(tmp_path, signal.SIGUSR1)
    assert code == 143 and state.requeues == 0 and "scontrol requeue 99 failed" in state.reason


@pytest.mark.parametrize("argv, names", [
    (["--device", "1"], ["--device 1", "from 0", "use --device 0"]),
    (["--data", "nope.yaml"], ["dataset YAML not found"]),
    (["--fres"], ["unrecognized arguments: --fres"]),  # no abbreviation would be copied into the script
])
def test_sbatch_refuses_what_would_fail_after_the_queue_wait(tmp_path, monkeypatch, capsys, argv, names):
    monkeypatch.chdir(tmp_path)
    demo = [] if "--data" in argv else ["--demo"]
    try:
        code = cli.main(["sbatch", *demo, *argv, "--dry-run", "--", "--time=60"])
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for n in names:
        assert n in err
