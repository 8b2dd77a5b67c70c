"""Smoke tests of the private SLURM cluster (tests/slurm.py) that issue 14's sbatch/requeue tests run on:
jobs run, a time-limit signal can requeue a job, `scontrol requeue` from outside reruns it, and nothing
outlives the cluster. Skipped, with the reason, where SLURM can't run (not root, packages not installable)."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from slurm import SlurmCluster, cluster_processes, slurm_cluster, slurm_unavailable

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path):
    """The cluster, and after its teardown: no process of it left (daemons, slurmstepd, job scripts, their
    children -- the job scripts below sleep for odd durations so that ps can find their children)."""
    reason = slurm_unavailable()
    if reason:
        pytest.skip(reason)
    with slurm_cluster(tmp_path) as c:
        daemons = list(c._procs.values())
        yield c
    assert all(p.poll() is not None for p in daemons), "a daemon outlived the cluster"
    assert cluster_processes(str(c.base), c.conf, c.name) == []
    ps = subprocess.run(["ps", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout.splitlines()
    rows = [ln.split(None, 2) for ln in ps if len(ln.split(None, 2)) == 3]
    left = [row for row in rows if not row[1].startswith("Z")  # zombies: gone once init reaps them
            and (str(c.base) in row[2] or c.conf in row[2] or re.fullmatch(r"sleep 60\d", row[2]))]
    assert left == [], f"left behind: {left}"


def wait_text(path: Path, text: str, timeout: float, c: SlurmCluster) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = path.read_text(errors="replace") if path.exists() else ""
        if text in out:
            return out
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in {path} after {timeout} s:\n{out}\n{c.log_tail()}")


def stamps(out: str, what: str) -> list[float]:
    return [float(t) for t in re.findall(rf"^{what}\b.* t=(\d+\.\d+)", out, re.M)]


def test_wrap_job_runs_and_completes(cluster, tmp_path):
    out = tmp_path / "hi.out"
    jobid = cluster.sbatch("--wrap", "echo hi from $SLURM_JOB_ID on $SLURM_CLUSTER_NAME", "-o", str(out))
    assert cluster.wait_job(jobid, "COMPLETED", timeout=30) == "COMPLETED"
    assert out.read_text().strip() == f"hi from {jobid} on {cluster.name}"
    assert cluster.job(jobid)["ExitCode"] == "0:0"
    assert [r["JobState"] for r in cluster.completions(jobid)] == ["COMPLETED"]


SIGNAL_JOB = """\
#!/bin/bash
#SBATCH --requeue --signal=B:USR1@30 --time=2 --open-mode=append
echo "start restart=${SLURM_RESTART_COUNT-unset} t=$(date +%s.%N)"
if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then echo "second run done"; exit 0; fi
on_usr1() {
    echo "got USR1 restart=${SLURM_RESTART_COUNT:-0} t=$(date +%s.%N)"
    kill "$child" 2>/dev/null
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
}
trap on_usr1 USR1
sleep 601 & child=$!
wait "$child"
echo "sleep ended without a signal"
"""


def test_time_limit_signal_requeues_the_job(cluster, tmp_path):
    """--signal=B:USR1@30 --time=2: the batch shell gets USR1 30..60 s before the limit, requeues itself,
    and its second run (SLURM_RESTART_COUNT=1) completes; --open-mode=append keeps both runs' output."""
    script, out = tmp_path / "signal_job.sh", tmp_path / "signal_job.out"
    script.write_text(SIGNAL_JOB)
    jobid = cluster.sbatch("-o", str(out), script=script)
    assert cluster.wait_job(jobid, "COMPLETED", timeout=180) == "COMPLETED"
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("slurmstepd")]
    assert [ln.split(" t=")[0] for ln in lines] == [
        "start restart=unset", "got USR1 restart=0", "start restart=1", "second run done"], text
    (first, second), (sig,) = stamps(text, "start"), stamps(text, "got USR1")
    assert 55 <= sig - first <= 95, f"USR1 {sig - first:.1f} s after the start, the limit is at 120 s"
    assert cluster.job(jobid)["Restarts"] == "1"
    print(f"\nUSR1 {sig - first:.1f} s after the start ({120 - (sig - first):.1f} s before the limit); "
          f"signal -> second run's start {second - sig:.1f} s")
    assert second - sig < 30, "a requeued job should run again within seconds here (cred_expire=5)"


OUTSIDE_JOB = """\
#!/bin/bash
#SBATCH --open-mode=append
echo "start restart=${SLURM_RESTART_COUNT-unset} t=$(date +%s.%N)"
if [ "${SLURM_RESTART_COUNT:-0}" -ge 1 ]; then echo "second run done"; exit 0; fi
trap 'echo "got TERM restart=${SLURM_RESTART_COUNT:-0} t=$(date +%s.%N)"; kill "$child" 2>/dev/null; exit 143' TERM
sleep 602 & child=$!
wait "$child"
echo "sleep ended without a signal"
"""


def test_requeue_from_outside_terms_and_reruns(cluster, tmp_path):
    """`scontrol requeue JOBID` on a running job: its shell gets SIGTERM, the job goes back to PENDING and
    runs again with SLURM_RESTART_COUNT=1."""
    script, out = tmp_path / "outside_job.sh", tmp_path / "outside_job.out"
    script.write_text(OUTSIDE_JOB)
    jobid = cluster.sbatch("-o", str(out), script=script)
    cluster.wait_job(jobid, "RUNNING", timeout=30)
    wait_text(out, "start restart=unset", 30, cluster)
    time.sleep(0.5)  # the trap is set
    t_requeue = time.time()
    cluster.run("scontrol", "requeue", str(jobid))
    assert cluster.wait_job(jobid, "COMPLETED", timeout=60) == "COMPLETED"
    text = out.read_text()
    lines = [ln for ln in text.splitlines() if not ln.startswith("slurmstepd")]
    assert [ln.split(" t=")[0] for ln in lines] == [
        "start restart=unset", "got TERM restart=0", "start restart=1", "second run done"], text
    assert "DUE TO JOB REQUEUE" in text
    (_, second), (term,) = stamps(text, "start"), stamps(text, "got TERM")
    assert cluster.job(jobid)["Restarts"] == "1"
    print(f"\nrequeue -> SIGTERM {term - t_requeue:.2f} s; requeue -> second run's start {second - t_requeue:.1f} s")
    assert second - t_requeue < 30


def test_unavailable_reason_is_text_or_none():
    reason = slurm_unavailable(install=False)
    assert reason is None or (isinstance(reason, str) and reason)


HOSTILE_FOLDERS = ["it's", 'say "hi"', "a b", "$(touch pwned)", "x;touch pwned", "`touch pwned`", "*"]


def test_the_launchers_script_under_hostile_folder_names_runs_on_sbatch(cluster, tmp_path):
    """Issue 17: sbatch reads the #SBATCH lines itself (its own quoting), then bash runs the script. For every
    folder name the launcher accepts, the job's output lands where --output says, the exec line gets its
    arguments whole, and nothing else runs."""
    from launcher import slurm as launcher_slurm
    for k, evil in enumerate(HOSTILE_FOLDERS):
        folder = tmp_path / f"d{k} {evil}"
        (folder / "logs" / "night").mkdir(parents=True)
        python = folder / "py"
        python.write_text('#!/bin/bash\nprintf "[%s]" "$@"; echo; echo "cwd=$PWD"\n')
        python.chmod(0o755)
        script = folder / "sbatch.sh"
        script.write_text(launcher_slurm.script(name="night", run_argv=["--name", "night", f"a={evil}"],
                                                logs=folder / "logs", cwd=folder, lead_s=30, gpus=0, python=str(python)))
        jobid = cluster.sbatch(script=script, cwd=tmp_path)
        assert cluster.wait_job(jobid, "COMPLETED", timeout=60) == "COMPLETED", evil
        out = (folder / "logs" / "night" / f"slurm-{jobid}.out").read_text()
        assert out == f"[-m][launcher][run][--name][night][a={evil}]\ncwd={folder}\n", evil
    assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()
