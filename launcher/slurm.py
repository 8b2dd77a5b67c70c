"""SLURM: the same night across time limits and preemptions, with SLURM's own requeue
(docs/design.md, "On a SLURM cluster").

Inside a job (SLURM_JOB_ID set), the launcher treats the time-limit signal (`--signal=B:USR1@N`)
and SIGTERM as cuts, not failures: the child is stopped before Ultralytics' final validation could
strip the optimizer from last.pt, the record says `time_limit` or `preempted`, and for a time
limit the launcher requeues its own job (`scontrol requeue`) as its last act. A SIGTERM is told
apart as submitit does: a time limit when the job has run to its end time, else a preemption (or a
requeue or scancel from outside), which SLURM itself requeues. Outside a job nothing here runs;
no SLURM command is called unless the launcher is inside a job or asked to submit one.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .errors import BadInput

TIME_LIMIT, PREEMPTED = "time_limit", "preempted"
SIGNAL_LEAD_S = 300  # the time-limit signal comes this long before the limit (SLURM adds up to 30 s)
END_MARGIN_S = 90  # a SIGTERM this close to the job's end time is its time limit


@dataclass(frozen=True)
class Job:
    """The SLURM job this launcher runs in."""

    id: str
    restarts: int  # SLURM_RESTART_COUNT: 0 in the first run, then 1, 2, ...
    end_time: float | None  # unix time the job's time limit ends it, when SLURM says
    signal: int  # the time-limit signal the job was submitted with

    @classmethod
    def here(cls, environ: Mapping[str, str] | None = None) -> "Job | None":
        env = os.environ if environ is None else environ
        job = env.get("SLURM_JOB_ID")
        if not job:
            return None
        try:
            end = float(env["SLURM_JOB_END_TIME"])
        except (KeyError, ValueError):
            end = None
        name = env.get("RTDETR_SLURM_SIGNAL", "USR1").upper().removeprefix("SIG")
        return cls(job, int(env.get("SLURM_RESTART_COUNT") or 0), end, getattr(signal, f"SIG{name}", signal.SIGUSR1))

    def cut(self, sig: int, now: float | None = None) -> str:
        """What a signal to the launcher means: the time limit, or a preemption."""
        if sig == self.signal:
            return TIME_LIMIT
        end = self.end_time or self._end_time()
        now = time.time() if now is None else now
        return TIME_LIMIT if end is not None and now >= end - END_MARGIN_S else PREEMPTED

    def _end_time(self) -> float | None:
        """The job's end time from scontrol, for SLURM versions that do not export it."""
        try:
            out = subprocess.run(["scontrol", "show", "job", "-o", self.id], capture_output=True, text=True,
                                 timeout=10).stdout
            end = re.search(r"\bEndTime=(\S+)", out)
            return time.mktime(time.strptime(end.group(1), "%Y-%m-%dT%H:%M:%S")) if end else None
        except (OSError, subprocess.SubprocessError, ValueError):
            return None

    def requeue(self) -> str:
        """Ask SLURM to run this job again (its last act: SLURM then ends this run of it)."""
        try:
            p = subprocess.run(["scontrol", "requeue", self.id], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            return f"scontrol requeue {self.id} failed: {e}"
        return "requeued" if p.returncode == 0 else f"scontrol requeue {self.id} failed: {p.stderr.strip()}"


# ---- submitting: `python -m launcher sbatch` ---------------------------------------------------------

def minutes(text: str) -> float | None:
    """SLURM's --time: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S; None for UNLIMITED/INFINITE."""
    t = text.strip()
    if t.upper() in ("UNLIMITED", "INFINITE", "-1"):
        return None
    days, _, rest = t.rpartition("-") if "-" in t else ("0", "", t)
    parts = rest.split(":")
    if not days.isdigit() or not parts or not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise ValueError(f"'{text}' is not a SLURM time (M, M:S, H:M:S, D-H, D-H:M or D-H:M:S)")
    nums = [int(p) for p in parts]
    if "-" in t:
        h, m, s = (nums + [0, 0])[:3]
    elif len(nums) == 1:
        h, m, s = 0, nums[0], 0
    elif len(nums) == 2:
        h, m, s = 0, nums[0], nums[1]
    else:
        h, m, s = nums
    return int(days) * 1440 + h * 60 + m + s / 60


def time_option(sbatch_args: list[str]) -> str | None:
    """The --time/-t value among the user's sbatch options, if any."""
    for i, a in enumerate(sbatch_args):
        if a in ("-t", "--time") and i + 1 < len(sbatch_args):
            return sbatch_args[i + 1]
        if a.startswith("--time="):
            return a.split("=", 1)[1]
        if a.startswith("-t") and len(a) > 2:
            return a[2:]
    return None


def gpu_option_given(sbatch_args: list[str]) -> bool:
    return any(a.split("=", 1)[0] in ("--gres", "--gpus", "-G", "--gpus-per-node", "--gpus-per-task")
               or a.startswith("-G") for a in sbatch_args)


def script(*, name: str, run_argv: list[str], logs: Path, cwd: Path, lead_s: int, gpus: int, sig: str = "USR1",
           python: str = sys.executable) -> str:
    """The batch script: requeue, the time-limit signal, the GPUs, and `exec` of the run itself, so
    the launcher is the process SLURM signals. Every value is shell-quoted."""
    q = shlex.quote
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={q(name)}",
             "#SBATCH --requeue",
             f"#SBATCH --signal=B:{sig}@{lead_s}",
             "#SBATCH --open-mode=append",
             f"#SBATCH --output={q(str(logs / name / 'slurm-%j.out'))}"]
    if gpus:
        lines.append(f"#SBATCH --gres=gpu:{gpus}")
    lines += ["# written by `python -m launcher sbatch`; SLURM runs it again after each requeue",
              f"cd {q(str(cwd))} || exit 1",
              f"export RTDETR_LOGS={q(str(logs))} RTDETR_SLURM_SIGNAL={q(sig)}",
              "exec " + " ".join(q(a) for a in [python, "-m", "launcher", "run", *run_argv])]
    return "\n".join(lines) + "\n"


def submit(path: Path, sbatch_args: list[str]) -> str:
    """Submit the script; the job id. BadInput (one line, nothing submitted) when sbatch is missing
    or refuses."""
    exe = shutil.which("sbatch")
    if exe is None:
        raise BadInput("sbatch", "not found on this machine's PATH", "run this on a SLURM login node, or pass "
                       "--dry-run to print the script")
    p = subprocess.run([exe, "--parsable", *sbatch_args, str(path)], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        why = " ".join((p.stderr or p.stdout).split()) or f"exit status {p.returncode}"
        raise BadInput(f"sbatch {' '.join(shlex.quote(a) for a in sbatch_args)}", f"refused the job ({why})",
                       "correct the sbatch options after --")
    return p.stdout.strip().split(";")[0]
