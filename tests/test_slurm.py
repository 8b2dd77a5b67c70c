"""SLURM without a cluster: the batch script (quoting, options), sbatch's refusals, and the
supervisor's cuts (time limit, preemption, the requeue budget) driven through the launch seam.
The same night on a real slurmctld is in test_slurm_e2e.py."""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher import cli, slurm
from launcher.contract import EXIT_EXHAUSTED, EXIT_REQUEUED
from launcher.errors import BadInput
from launcher.failures import ChildEnd
from launcher.runlog import RunPaths

from helpers import FakeChild, ok, with_job

SIGS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


@pytest.fixture(autouse=True)
def dispositions_restored():
    """A night that requeues its job leaves SIGTERM ignored on purpose (Signals.ignore: SLURM's
    SIGTERM to the job it requeued must not end the launcher before its exit status). In pytest's
    process that would outlive the test, and every later subprocess would inherit SIG_IGN (exec keeps
    it): a SIGTERM to a launcher started by a later test would do nothing. Put back; any other
    disposition a test changed is a leak: fail."""
    before = [signal.getsignal(s) for s in SIGS]
    try:
        yield
        after = [signal.getsignal(s) for s in SIGS]
        if after[1] == signal.SIG_IGN:
            after[1] = before[1]
        assert after == before, "a test left a signal disposition changed"
    finally:
        for s, handler in zip(SIGS, before):
            signal.signal(s, handler)


HOSTILE = ["$(touch pwned)", "`touch pwned`", "a b", "it's", 'say "hi"', "x;touch pwned", "\\n", "*"]


def fake_exe(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.mark.parametrize("evil", HOSTILE)
def test_no_value_can_break_the_script_or_run_anything(tmp_path, evil):
    folder = tmp_path / f"dir {evil}".replace("/", "_").replace("\\", "_")  # a backslash: refused below
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
    assert cli.main(["sbatch", "--demo", "--dry-run", "--", "--time=0"]) == 0  # SLURM: no time limit
    assert "would submit it" in capsys.readouterr().out


@pytest.mark.parametrize("sbatch_args, names", [
    (["--time=5"], ["--time 5", "(5 min) is not longer than the signal's lead (300 s)"]),
    (["-t", "4:00"], ["(4 min)"]),
    (["--time=soon"], ["not a SLURM time"]),
    (["--time=60", "-t", "2"], ["--time 2", "(2 min)"]),  # sbatch takes the last one
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


# `scontrol show job -o` at the moment the launcher got SIGTERM, captured on tests/slurm.py's cluster (SLURM
# 22.05.8) with a trap in the batch script: a cancel moves EndTime to its moment (what Job.cut read as the
# time limit before issue 17); a requeue or preemption has already raised Restarts; a time limit says so.
SHOWN = "JobId=1 JobName=job.sh UserId=root(0) GroupId=root(0) JobState={state} Reason={reason} Dependency=(null) " \
        "Requeue=1 Restarts={restarts} BatchFlag=1 ExitCode=0:0 RunTime={run} TimeLimit={limit} TimeMin=N/A " \
        "SubmitTime=2026-12-04T17:06:55 StartTime={start} EndTime={end} Deadline=N/A Partition=debug " \
        "Command=/tmp/a b/job.sh WorkDir=/tmp/a b StdOut=/tmp/a b/out Power="
AT = {  # what happened: (the scontrol line, `now` at the signal)
    "scancel": (SHOWN.format(state="COMPLETING", reason="None", restarts=0, run="00:00:02", limit="00:30:00",
                             start="2026-12-04T17:06:56", end="2026-12-04T17:06:58"), "2026-12-04T17:06:58"),
    "requeue": (SHOWN.format(state="COMPLETING", reason="None", restarts=1, run="00:00:00", limit="00:30:00",
                             start="2026-12-04T17:07:18", end="2026-12-04T17:37:18"), "2026-12-04T17:07:18"),
    "preempt": (SHOWN.format(state="COMPLETING", reason="None", restarts=1, run="00:00:00", limit="UNLIMITED",
                             start="2026-12-04T17:10:18", end="Unknown"), "2026-12-04T17:10:18"),
    "timelimit": (SHOWN.format(state="COMPLETING", reason="TimeLimit", restarts=0, run="00:01:11",
                               limit="00:01:00", start="2026-12-04T17:10:26", end="2026-12-04T17:11:37"),
                  "2026-12-04T17:11:37"),
    "at the limit": (SHOWN.format(state="COMPLETING", reason="None", restarts=0, run="00:02:00", limit="00:02:00",
                                  start="2026-12-04T17:00:00", end="2026-12-04T17:02:00"), "2026-12-04T17:02:00"),
    "running": (SHOWN.format(state="RUNNING", reason="None", restarts=0, run="00:01:30", limit="00:02:00",
                             start="2026-12-04T17:00:00", end="2026-12-04T17:02:00"), "2026-12-04T17:01:30"),
    "scancel after the signal": (SHOWN.format(state="COMPLETING", reason="None", restarts=0, run="00:01:35",
                                              limit="00:02:00", start="2026-12-04T17:00:00",
                                              end="2026-12-04T17:01:35"), "2026-12-04T17:01:35"),
    "cancelled": (SHOWN.format(state="CANCELLED", reason="None", restarts=0, run="00:00:02", limit="00:30:00",
                               start="2026-12-04T17:06:56", end="2026-12-04T17:06:58"), "2026-12-04T17:07:01"),
}


def _t(text: str) -> float:
    return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


@pytest.mark.parametrize("what, term, usr1", [
    ("scancel", "cancelled", "cancelled"),
    ("cancelled", "cancelled", "cancelled"),
    ("scancel after the signal", "cancelled", "cancelled"),  # a person's scancel between USR1 and the requeue
    ("requeue", "preempted", "preempted"),  # SLURM requeues it: the launcher must not too
    ("preempt", "preempted", "preempted"),
    ("timelimit", "time_limit", "time_limit"),
    ("at the limit", "time_limit", "time_limit"),  # StartTime + TimeLimit reached
    ("running", "preempted", "time_limit"),  # only signalled (a preemption's grace time; the USR1 itself)
])
def test_what_a_cut_is_comes_from_what_scontrol_shows(what, term, usr1):
    line, now = AT[what]
    shown = slurm.fields(line)
    assert shown["Command"] == "/tmp/a b/job.sh" and shown["JobState"] in ("COMPLETING", "CANCELLED", "RUNNING")
    assert slurm.judge(False, shown, 0, _t(now)) == term
    assert slurm.judge(True, shown, 0, _t(now)) == usr1
    job = Shown("7", 0, None, signal.SIGUSR1)
    Shown.line = line
    assert job.cut(signal.SIGTERM, now=_t(now)) == term and job.cut(signal.SIGUSR1, now=_t(now)) == usr1


def test_a_cancel_judged_late_is_a_cancel_and_a_time_limit_needs_no_time_format(tmp_path, monkeypatch):
    """RunTime, not the clock: a scancel 25 s before the limit, judged after the child took 30 s to
    stop, was read as the time limit (StartTime + TimeLimit passed) and requeued; and a StartTime
    in another SLURM_TIME_FORMAT lost a time limit. scontrol is asked in the standard format."""
    line, _ = AT["scancel after the signal"]
    late = _t("2026-12-04T17:02:05")  # StartTime 17:00:00 + TimeLimit 2 min, passed; RunTime 1:35 at the cancel
    assert slurm.judge(False, slurm.fields(line), 0, late) == "cancelled"
    assert slurm.judge(True, slurm.fields(line), 0, late) == "cancelled"
    other = AT["at the limit"][0].replace("StartTime=2026-12-04T17:00:00", "StartTime=Fri 17:00")
    assert slurm.judge(False, slurm.fields(other), 0, _t("2026-12-04T17:02:00")) == "time_limit"
    no_run = AT["at the limit"][0].replace("RunTime=00:02:00 ", "")  # an older scontrol: StartTime decides
    assert slurm.judge(False, slurm.fields(no_run), 0, _t("2026-12-04T17:02:00")) == "time_limit"
    assert slurm.judge(False, slurm.fields(no_run), 0, _t("2026-12-04T17:01:00")) == "cancelled"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_exe(bin_dir, "scontrol", 'echo "JobId=$4 JobState=RUNNING TimeFormat=$SLURM_TIME_FORMAT"\n')
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("SLURM_TIME_FORMAT", "relative")
    assert slurm.Job("7", 0, None, signal.SIGUSR1).show() == {"JobId": "7", "JobState": "RUNNING",
                                                              "TimeFormat": "standard"}


def test_without_scontrol_the_signal_and_the_exported_end_time_decide():
    assert slurm.judge(True, None, 0, 1_000.0) == "time_limit"
    assert slurm.judge(False, None, 0, 1_000.0, end_time=10_000.0) == "preempted"
    assert slurm.judge(False, None, 0, 9_999.0, end_time=10_000.0) == "time_limit"
    env = {"SLURM_JOB_ID": "7", "SLURM_RESTART_COUNT": "2", "SLURM_JOB_END_TIME": "10000",
           "RTDETR_SLURM_SIGNAL": "USR2", "RTDETR_SLURM_LEAD": "45"}
    assert slurm.Job.here(env) == slurm.Job("7", 2, 10_000.0, signal.SIGUSR2, 45)
    assert slurm.Job.here({}) is None


# ---- the supervisor's cuts -----------------------------------------------------------------------

def now_(what: str) -> str:
    """AT[what]'s scontrol line with its times moved so that its moment is now."""
    line, at = AT[what]
    shift = time.time() - _t(at)
    return re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", lambda m: time.strftime(
        "%Y-%m-%dT%H:%M:%S", time.localtime(_t(m.group(0)) + shift)), line)


class Shown(slurm.Job):
    """A job whose `scontrol show job` answers `line` (None: scontrol does not answer)."""
    line: str | None = None

    def show(self):
        return slurm.fields(self.line) if self.line else None


class Requeue(Shown):
    def requeue(self) -> str:
        Requeue.asked += 1
        return "requeued"


def cut_night(tmp_path, sig, end_time=None, shown=None, saved=3, restarts=0, **job):
    """One attempt that SLURM cuts with `sig` while it trains, scontrol showing AT[shown] as of now
    (default: the job RUNNING, 90 s into 2 minutes); the child has saved epoch `saved` (0: none)."""
    Requeue.asked = 0
    Requeue.line = now_(shown or "running")
    ladder = with_job(**job)
    sup_ref = {}

    def child(cmd, env, log_path, watchdog):
        spec = json.loads(Path(cmd[-1]).read_text())
        first = time.time() + 40
        Path(spec["heartbeat"]).write_text(json.dumps({"epochs_saved": 1 if saved else 0, "last_saved_epoch": saved
                                                       or None, "phase": "train", "first_batch_ts": first,
                                                       "batches": 50, "batch": 20, "it_s": 0.5}))
        sup_ref["sup"].signals(sig, None)
        log_path.write_text("KeyboardInterrupt: received SIGTERM\n")
        return ChildEnd(1)
    return ladder, child, sup_ref, Requeue("99", restarts, end_time, signal.SIGUSR1, 30)


def run_cut(tmp_path, sig, state=None, **job):
    from launcher.supervisor import Supervisor
    from helpers import new_state
    ladder, child, ref, rq = cut_night(tmp_path, sig, **job)
    lines = []
    sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
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
    code, state, _ = run_cut(tmp_path, signal.SIGTERM, shown="preempt")
    assert code == EXIT_REQUEUED and Requeue.asked == 0 and state.status == "preempted" and state.requeues == 1


def test_past_max_requeues_the_run_ends_exhausted(tmp_path):
    from helpers import new_state
    state = new_state(with_job(max_requeues=1))
    state.requeues = 1
    code, state, _ = run_cut(tmp_path, signal.SIGUSR1, state=state, max_requeues=1)
    assert code == EXIT_EXHAUSTED and Requeue.asked == 0 and "requeue budget spent" in state.reason


@pytest.mark.parametrize("cuts", ["t", "p"])
def test_a_preemption_at_the_requeue_budget_ends_the_night_and_one_within_it_does_not(tmp_path, cuts):
    """max_requeues = 1 (docs/design.md, "On a SLURM cluster"): the first cut, a time limit or a
    preemption, is requeued and the job's next run trains; a preemption at the budget ends the night
    exhausted, and as SLURM requeues a preempted job all the same, that next run ends at once too,
    training nothing (it used to train and exit 0)."""
    from launcher.supervisor import Supervisor
    from helpers import new_state

    def again(root, state, restarts):  # the job's next run, as SLURM starts it
        ladder, _, _, rq = cut_night(root, signal.SIGUSR1, restarts=restarts, max_requeues=1)
        child, state.status = FakeChild([ok()]), "running"
        code = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(root / "run"),
                          launch=child, sleep=lambda s: None, say=lambda line: None, slurm_job=rq).run(state)
        return code, len(child.calls)

    preempt = {"shown": "preempt"} if cuts == "p" else {}
    sig = signal.SIGTERM if cuts == "p" else signal.SIGUSR1
    code, state, _ = run_cut(tmp_path, sig, max_requeues=1, **preempt)
    assert (code, state.requeues) == (EXIT_REQUEUED, 1)  # within the budget: requeued, and it goes on
    assert again(tmp_path, state, 1) == (0, 1) and state.status == "complete"

    state = new_state(with_job(max_requeues=1))
    state.requeues = 1
    code, state, _ = run_cut(tmp_path / "spent", signal.SIGTERM, state=state, max_requeues=1, shown="preempt")
    assert code == EXIT_EXHAUSTED and "requeue budget spent" in state.reason
    code, trained = again(tmp_path / "spent", state, 2)
    assert (code, trained, state.status) == (EXIT_EXHAUSTED, 0, "exhausted") and "ran again" in state.reason
    assert state.requeues == 2  # SLURM's requeue of the preempted job, past the budget
    assert again(tmp_path / "spent", state, 0) == (0, 1)  # submitted anew: judged at its first cut


def test_a_cut_during_a_retrys_wait_refunds_no_attempt(tmp_path):
    """The attempt SLURM cut is not counted against max_attempts (state.cut); an attempt that had
    already failed on its own, with SLURM's signal arriving in the wait before its retry, is."""
    from launcher.supervisor import Supervisor
    from helpers import new_state
    ladder, _, ref, rq = cut_night(tmp_path, signal.SIGUSR1)

    def failing(cmd, env, log_path, watchdog):
        log_path.write_text("RuntimeError: something odd\n")
        return ChildEnd(1)

    def wait(seconds):  # SLURM's time-limit signal in the retry's wait
        ref["sup"].signals(signal.SIGUSR1, None)

    sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=failing, sleep=wait, say=lambda line: None, slurm_job=rq)
    ref["sup"] = sup
    state = new_state(ladder)
    assert sup.run(state) == EXIT_REQUEUED
    assert (state.status, state.attempts, state.cut, Requeue.asked) == ("time_limit", 1, 0, 1)


def test_requeues_do_not_spend_the_attempt_budget(tmp_path):
    """max_attempts = 1: the cut attempt does not count, so the requeued run may still train."""
    from launcher.supervisor import Supervisor
    from helpers import new_state
    ladder, child, ref, rq = cut_night(tmp_path, signal.SIGUSR1, max_attempts=1)
    state = new_state(ladder)
    sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=child, sleep=lambda s: None, say=lambda line: None, slurm_job=rq)
    ref["sup"] = sup
    assert sup.run(state) == EXIT_REQUEUED
    again = FakeChild([ok()])
    state.status = "running"
    code = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
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


# ---- issue 17: a person's scancel ends the night --------------------------------------------------

@pytest.mark.parametrize("what, sig", [("scancel", signal.SIGTERM), ("scancel after the signal", signal.SIGUSR1)])
def test_a_cancelled_job_is_interrupted_and_never_requeued(tmp_path, what, sig):
    code, state, lines = run_cut(tmp_path, sig, shown=what)
    assert code == 143 and Requeue.asked == 0
    assert state.status == "interrupted" and state.requeues == 0 and state.cut == 0
    assert "SLURM job 99 was cancelled" in state.reason and "the checkpoint stays resumable" in state.reason
    events = [json.loads(ln) for ln in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert "requeue" not in [e["event"] for e in events] and events[-1]["event"] == "interrupted"


# ---- issue 17: requeues without progress stop ----------------------------------------------------

def sessions(tmp_path, monkeypatch, saves: list[int], ran_s: float = 90.0, cuts: str = "",
             restarts: list[int] | None = None):
    """One SLURM run of the job per item of `saves` (the epoch the cut attempt had saved, 0 for
    none), each cut by its time limit ("t" in `cuts`, the default) or a preemption ("p": SIGTERM,
    SLURM already requeueing it) and started again as SLURM would, with SLURM_RESTART_COUNT
    `restarts[k]` (default k); (exit codes, state, requeues the launcher asked for)."""
    from launcher.supervisor import Supervisor
    from helpers import new_state
    monkeypatch.setattr(slurm, "started", lambda: time.time() - ran_s)
    state, codes, asked = None, [], 0
    for k, saved in enumerate(saves):
        n = k if restarts is None else restarts[k]
        preempted = cuts[k:k + 1] == "p"
        ladder, child, ref, rq = cut_night(tmp_path, signal.SIGTERM if preempted else signal.SIGUSR1, saved=saved,
                                           restarts=n, shown="preempt" if preempted else None)
        Requeue.line = re.sub(r"Restarts=\d+", f"Restarts={n + 1 if preempted else n}", Requeue.line)
        state = state or new_state(ladder)
        state.status = "running"
        sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                         launch=child, sleep=lambda s: None, say=lambda line: None, slurm_job=rq)
        ref["sup"] = sup
        codes.append(sup.run(state))
        asked += Requeue.asked
    return codes, state, asked


def test_two_cuts_in_a_row_without_a_new_epoch_end_the_night(tmp_path, monkeypatch):
    codes, state, asked = sessions(tmp_path, monkeypatch, [0, 0])
    assert codes == [EXIT_REQUEUED, EXIT_EXHAUSTED] and asked == 1 and state.status == "exhausted"
    assert state.stalls == [90.0, 90.0]
    why = state.reason
    assert "no progress: 2 SLURM runs in a row reached the time limit" in why and "run time each: 90 s, 90 s" in why
    # measured from the record: attempt start -> first batch 40 s, an epoch 50 batches at 0.5 it/s
    assert "start-up 40 s" in why and "an epoch about 100 s" in why
    assert "--time of at least 3 min" in why  # 30 s lead + 40 s + 100 s = 170 s
    assert "\n" not in why


def test_a_cut_that_saved_an_epoch_starts_the_count_again(tmp_path, monkeypatch):
    codes, state, asked = sessions(tmp_path, monkeypatch, [0, 1, 0, 2])
    assert codes == [EXIT_REQUEUED] * 4 and asked == 4 and state.stalls == []


def test_preemptions_neither_count_nor_break_a_streak_of_time_limits(tmp_path, monkeypatch):
    """A busy cluster preempting the night is no reason to end it (SLURM runs it again; max_requeues
    bounds it), and a longer --time would not help it; two time limits without a new epoch, with
    preemptions between them, still end it."""
    codes, state, asked = sessions(tmp_path, monkeypatch, [0, 0, 0, 0], cuts="pppp")
    assert codes == [EXIT_REQUEUED] * 4 and asked == 0 and state.stalls == [] and state.status == "preempted"
    codes, state, asked = sessions(tmp_path, monkeypatch, [0, 0, 0, 0], cuts="tppt")
    assert codes == [EXIT_REQUEUED] * 3 + [EXIT_EXHAUSTED] and state.stalls == [90.0, 90.0]
    assert "no progress: 2 SLURM runs in a row reached the time limit" in state.reason
    codes, state, _ = sessions(tmp_path, monkeypatch, [0, 1, 0], cuts="tpt")  # a preemption that saved one: progress
    assert codes == [EXIT_REQUEUED] * 3 and state.stalls == [90.0]


def test_a_new_submission_counts_its_own_time_limits(tmp_path, monkeypatch):
    """After a night ended for want of progress, the job submitted again (SLURM_RESTART_COUNT 0,
    perhaps another --time) is judged on its own runs, not its predecessor's."""
    codes, state, _ = sessions(tmp_path, monkeypatch, [0, 0, 0, 0], restarts=[0, 1, 0, 1])
    assert codes == [EXIT_REQUEUED, EXIT_EXHAUSTED] * 2 and state.stalls == [90.0, 90.0]


def test_a_stalled_job_slurm_runs_again_after_that_ending_ends_at_once(tmp_path, monkeypatch):
    from launcher.supervisor import Supervisor
    codes, state, _ = sessions(tmp_path, monkeypatch, [0, 0])
    ladder, child, ref, rq = cut_night(tmp_path, signal.SIGUSR1, restarts=2)
    again = FakeChild([ok()])
    state.status = "running"
    sup = Supervisor(ladder=ladder, planned=ladder.rungs, start=0, device="0", paths=RunPaths(tmp_path / "run"),
                     launch=again, sleep=lambda s: None, say=lambda line: None, slurm_job=rq)
    assert sup.run(state) == EXIT_EXHAUSTED and again.calls == [] and "no progress" in state.reason


def measured_record(logs: Path, name: str = "demo", startup: float = 40.0, it_s: float = 0.19) -> None:
    root = logs / name
    (root / "attempt-1").mkdir(parents=True)
    (root / "events.jsonl").write_text(json.dumps({"event": "attempt_start", "attempt": 1, "t": 1000.0}) + "\n")
    (root / "attempt-1" / "heartbeat.json").write_text(json.dumps(
        {"first_batch_ts": 1000.0 + startup, "batches": 10, "batch": 3, "it_s": it_s}))


def test_sbatch_refuses_a_time_limit_shorter_than_what_the_run_measured(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    measured_record(tmp_path / "logs")  # 30 s lead + 40 s start-up + 10 batches at 0.19 it/s (53 s) = 123 s
    code = cli.main(["sbatch", "--demo", "--signal-lead", "30", "--dry-run", "--", "--time=2"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "start-up of 40 s and an epoch of 53 s" in err and "give --time=3 or longer" in err
    assert cli.main(["sbatch", "--demo", "--signal-lead", "30", "--dry-run", "--", "--time=3"]) == 0
    assert cli.main(["sbatch", "--demo", "--fresh", "--signal-lead", "30", "--dry-run", "--", "--time=2"]) == 0


# ---- issue 17: the user's own --signal among sbatch's options --------------------------------------

def script_env(tmp_path: Path, text: str) -> dict[str, str]:
    """Run a batch script with bash, a fake python in its exec line; the environment it gave it."""
    fake = fake_exe(tmp_path, "fakepy", "env > \"$PWD/env.txt\"\n")
    script = tmp_path / "job.sh"
    script.write_text(text.replace(f"exec {sys.executable} ", f"exec {fake} ", 1))
    subprocess.run(["bash", str(script)], cwd=tmp_path, check=True, timeout=30)
    return dict(ln.split("=", 1) for ln in (tmp_path / "env.txt").read_text().splitlines() if "=" in ln)


@pytest.mark.parametrize("given, sig, lead", [
    (["--signal=B:USR1@30"], "USR1", 30),
    (["--signal", "B:SIGUSR2@45"], "USR2", 45),
    ([f"--signal=RB:{int(signal.SIGUSR2)}@90"], "USR2", 90),
    (["--signal=B:USR1"], "USR1", 60),  # SLURM's own default lead
])
def test_a_signal_among_sbatch_options_is_the_lead_and_the_signal(tmp_path, monkeypatch, capsys, given, sig, lead):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["sbatch", "--demo", "--dry-run", "--", "--time=10", *given])
    out, err = capsys.readouterr()
    assert code == 0, err
    script, said = out.split("launcher: sbatch ")
    assert f"#SBATCH --signal=B:{sig}@{lead}\n" in script and script.count("--signal") == 1
    assert f"--signal=B:{sig}@{lead} would submit it" in said and said.count("--signal") == 1
    env = script_env(tmp_path, script)
    job = slurm.Job.here({**env, "SLURM_JOB_ID": "5"})
    assert env["RTDETR_SLURM_SIGNAL"] == sig and job.signal == getattr(signal, f"SIG{sig}") and job.lead_s == lead


def test_the_signal_sbatch_is_given_is_the_scripts(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    fake_exe(bin_dir, "sbatch", f'printf "%s\\n" "$@" > {tmp_path}/argv.txt; echo 4242\n')
    assert cli.main(["sbatch", "--demo", "--", "--time=10", "--signal=B:USR2@40", "-p", "gpu"]) == 0
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert [a for a in argv if a.startswith("--signal")] == ["--signal=B:USR2@40"] and "-p" in argv
    assert "#SBATCH --signal=B:USR2@40\n" in (tmp_path / "logs" / "demo" / "sbatch.sh").read_text()


@pytest.mark.parametrize("argv, names", [
    (["--", "--time=10", "--signal=USR1@30"], ["--signal=USR1@30", "without B:", "--signal-lead"]),
    (["--", "--time=10", "--signal=B:TERM@30"], ["USR1 or USR2", "not TERM", "--signal-lead"]),
    (["--", "--time=10", "--signal=B:USR1@soon"], ["not SLURM's", "--signal-lead"]),
    (["--signal-lead", "300", "--", "--time=10", "--signal=B:USR1@30"], ["--signal-lead 300", "disagrees"]),
    (["--", "--time=1", "--signal=B:USR1@60"], ["(1 min) is not longer than the signal's lead (60 s)"]),
])
def test_a_signal_the_launcher_could_not_take_is_refused(tmp_path, monkeypatch, capsys, argv, names):
    monkeypatch.chdir(tmp_path)
    code = cli.main(["sbatch", "--demo", "--dry-run", *argv])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    for n in names:
        assert n in err, err


# ---- issue 17: the batch script runs nothing but its own lines -------------------------------------

EVIL = ["\ntouch pwned\n", "x\rtouch pwned\n", "\n$(touch pwned)", "\ttouch pwned", "\x7f\ntouch pwned"]


@pytest.mark.parametrize("evil", EVIL)
def test_a_control_character_in_a_directive_is_refused_and_runs_nothing(tmp_path, monkeypatch, capsys, evil):
    """Run through bash, a newline in the #SBATCH --output= path ends the directive, and the rest of the
    path is a line of the script (`bash -n` finds nothing wrong with it). It must be refused instead."""
    fake_python = fake_exe(tmp_path, "python", "exit 0\n")
    logs = tmp_path / f"logs{evil}"
    try:
        text = slurm.script(name="night", run_argv=["--name", "night"], logs=logs, cwd=tmp_path, lead_s=30, gpus=0,
                            python=str(fake_python))
    except BadInput as e:
        refused = str(e)
    else:  # what the job would do
        (tmp_path / "job.sh").write_text(text)
        subprocess.run(["bash", str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, timeout=30)
        refused = ""
    assert not list(tmp_path.rglob("pwned*")), "the batch script ran a line the logs path made"
    assert "control character" in refused and "#SBATCH line" in refused and "\n" not in refused
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RTDETR_LOGS", str(logs))
    assert cli.main(["sbatch", "--demo", "--dry-run", "--", "--time=60"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "control character" in err
    assert not list(tmp_path.rglob("pwned*")) and not list(tmp_path.rglob("sbatch.sh"))


def test_a_run_name_with_a_control_character_is_refused(tmp_path):
    with pytest.raises(BadInput, match="run name 'night\\\\n'.*#SBATCH line"):
        slurm.script(name="night\n", run_argv=[], logs=tmp_path, cwd=tmp_path, lead_s=30, gpus=0)


@pytest.mark.parametrize("evil", ["p%j", "b\\x"])
def test_what_sbatch_would_read_in_an_output_path_is_refused(tmp_path, evil):
    """Run on tests/slurm.py's cluster, a job whose --output path holds `%j` or a backslash FAILS after the
    queue wait (sbatch expands the one and unescapes the other, and the folder is not there)."""
    with pytest.raises(BadInput, match="sbatch reads"):
        slurm.script(name="night", run_argv=[], logs=tmp_path / evil, cwd=tmp_path, lead_s=30, gpus=0)
