"""SLURM: the same night across time limits and preemptions, with SLURM's own requeue
(docs/design.md, "On a SLURM cluster").

Inside a job (SLURM_JOB_ID set), the launcher treats the time-limit signal (`--signal=B:USR1@N`)
and SIGTERM as cuts, not failures: the child is stopped before Ultralytics' final validation could
strip the optimizer from last.pt, the record says `time_limit` or `preempted`, and for a time
limit the launcher requeues its own job (`scontrol requeue`) as its last act. What a signal means
is read from what scontrol shows of the job at that moment (`judge`): a SIGTERM is a time limit
only once the job has run its time limit (RunTime reaches TimeLimit; EndTime is the moment of a
cancel), a preemption when SLURM has requeued the job, and a person's cancel when the job is
ending otherwise; a cancelled job is never requeued. Outside a job nothing here runs; no SLURM
command is called unless the launcher is inside a job or asked to submit one.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping

import psutil

from .contract import EXIT_EXHAUSTED, EXIT_REQUEUED, EXIT_SIGTERM, Heartbeat
from .errors import BadInput
from .runlog import Ev, Events, RunPaths, RunState, read_events

if TYPE_CHECKING:
    from .launch import Signals

CANCELLED = "cancelled"  # what `cut` returns for a scancel; a time limit or a preemption is its event (Ev)
SIGNAL_LEAD_S = 300  # the time-limit signal comes this long before the limit (SLURM adds up to 30 s)
LIMIT_MARGIN_S = 5  # a SIGTERM this close to StartTime + TimeLimit is the time limit (scontrol's whole seconds)
ENDING = frozenset({"COMPLETING", "CANCELLED"})  # how scontrol shows a job that a cancel ends (22.05)
LIMIT_SIGNALS = ("USR1", "USR2")  # time-limit signals the launcher takes (INT and TERM are a person's or SLURM's)


@dataclass(frozen=True)
class Job:
    """The SLURM job this launcher runs in."""

    id: str
    restarts: int  # SLURM_RESTART_COUNT: 0 in the first run, then 1, 2, ...
    end_time: float | None  # unix time the job's time limit ends it, when SLURM says
    signal: int  # the time-limit signal the job was submitted with
    lead_s: int | None = None  # how long before the time limit that signal comes, as submitted

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
        lead = env.get("RTDETR_SLURM_LEAD", "")
        return cls(job, int(env.get("SLURM_RESTART_COUNT") or 0), end, getattr(signal, f"SIG{name}", signal.SIGUSR1),
                   int(lead) if lead.isdigit() else None)

    def cut(self, sig: int, now: float | None = None) -> str:
        """What a signal to the launcher means, asked of SLURM now (right before any requeue, so a
        job being cancelled is never requeued): Ev.TIME_LIMIT, Ev.PREEMPTED or CANCELLED. `now`: when
        the signal came (the child may have taken a while to stop since)."""
        return judge(sig == self.signal, self.show(), self.restarts, time.time() if now is None else now,
                     self.end_time)

    def show(self) -> dict[str, str] | None:
        """`scontrol show job -o` of this job as a dict; None when scontrol does not answer."""
        try:
            p = subprocess.run(["scontrol", "show", "job", "-o", self.id], capture_output=True, text=True, timeout=10,
                               env={**os.environ, "SLURM_TIME_FORMAT": "standard"})  # StartTime as _at_limit reads it
        except (OSError, subprocess.SubprocessError):
            return None
        return fields(p.stdout) if p.returncode == 0 and p.stdout.strip() else None

    def requeue(self) -> str:
        """Ask SLURM to run this job again (its last act: SLURM then ends this run of it)."""
        try:
            p = subprocess.run(["scontrol", "requeue", self.id], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as e:
            return f"scontrol requeue {self.id} failed: {e}"
        return "requeued" if p.returncode == 0 else f"scontrol requeue {self.id} failed: {p.stderr.strip()}"


def fields(text: str) -> dict[str, str]:
    """`Key=value Key2=value ...` (scontrol -o's first line) as a dict; a value may hold spaces."""
    parts = re.split(r"\s+(?=[A-Za-z][A-Za-z0-9_:/]*=)", text.strip().splitlines()[0] if text.strip() else "")
    return dict(p.split("=", 1) for p in parts if "=" in p)


def judge(limit_signal: bool, shown: dict[str, str] | None, restarts: int, now: float,
          end_time: float | None = None) -> str:
    """What a cut is, from the job as scontrol shows it at that moment (SLURM 22.05, measured on
    tests/slurm.py's cluster): a requeue or preemption has already raised `Restarts` past this
    run's SLURM_RESTART_COUNT; a time limit shows `Reason=TimeLimit` once the job has run its
    TimeLimit (`_at_limit`); a cancel shows the job COMPLETING (then CANCELLED) with neither, and EndTime moved to
    the cancel. A job still RUNNING was only signalled (the time-limit signal, a preemption's
    grace time). Without scontrol's answer: the time-limit signal, or the end time SLURM exported."""
    if shown is None:
        at_end = end_time is not None and now >= end_time - LIMIT_MARGIN_S
        return Ev.TIME_LIMIT if limit_signal or at_end else Ev.PREEMPTED
    state = shown.get("JobState", "")
    if _int(shown.get("Restarts")) > restarts or state in ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"):
        return Ev.PREEMPTED  # SLURM has put the job back in the queue itself
    if shown.get("Reason") == "TimeLimit" or state == "TIMEOUT" or _at_limit(shown, now):
        return Ev.TIME_LIMIT
    if state in ENDING:
        return CANCELLED
    return Ev.TIME_LIMIT if limit_signal else Ev.PREEMPTED


def _int(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def _at_limit(shown: dict[str, str], now: float) -> bool:
    """The job has run its time limit: RunTime ≥ TimeLimit, else (no RunTime) now ≥ StartTime +
    TimeLimit. RunTime first: it stops at a cancel's moment (a cancel judged late, after the child
    stopped, is still no time limit), leaves out a suspension as SLURM's limit does, and needs no
    clock or time format."""
    try:
        limit = minutes(shown.get("TimeLimit", ""))
    except ValueError:
        return False
    if limit is None:  # UNLIMITED: no time limit to reach
        return False
    try:
        ran = minutes(shown.get("RunTime", ""))  # [D-]HH:MM:SS, as --time
    except ValueError:
        ran = None
    if ran is not None:
        return ran * 60 >= limit * 60 - LIMIT_MARGIN_S
    try:
        start = time.mktime(time.strptime(shown.get("StartTime", ""), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return False
    return now >= start + limit * 60 - LIMIT_MARGIN_S


# ---- no progress: cuts that saved no epoch -----------------------------------------------------------

STALLED_CUTS = 2  # this many time-limit cuts in a row that saved no new epoch end the night (exhausted)


def started() -> float:
    """When this run of the job started: the launcher's own start (the batch script execs it)."""
    return psutil.Process().create_time()


def measured(paths: RunPaths) -> tuple[float | None, float | None]:
    """The run's last measured start-up (an attempt's start to its first batch) and epoch (the
    epoch's batches at the it/s the heartbeat measured), from the record; None where unknown."""
    starts = {e.get("attempt"): e.get("t") for e in read_events(paths.events) if e.kind == Ev.ATTEMPT_START}
    startup = epoch = None
    for n, t in sorted(((n, t) for n, t in starts.items() if isinstance(n, int)), reverse=True):
        beat = Heartbeat.read(paths.heartbeat(n)) or Heartbeat()
        first, batches, it_s = beat.first_batch_ts, beat.batches, beat.it_s
        if startup is None and first is not None and isinstance(t, (int, float)) and first >= t:
            startup = first - t
        if epoch is None and batches is not None and batches > 0 and it_s is not None and it_s > 0:
            epoch = batches / it_s
        if startup is not None and epoch is not None:
            break
    return startup, epoch


def needed_s(paths: RunPaths, lead_s: int) -> float | None:
    """The shortest time limit that lets one run of the job save an epoch: the signal's lead, the
    measured start-up and one epoch; None when the record has not measured them."""
    startup, epoch = measured(paths)
    return None if startup is None or epoch is None else lead_s + startup + epoch


def stalled(runs: list[float], paths: RunPaths, lead_s: int | None) -> str:
    """The line that ends a night of cuts without progress: what each run got, what was measured, the fix."""
    startup, epoch = measured(paths)
    got = ", ".join(f"{s:.0f} s" for s in runs)
    seen = "; ".join([f"start-up {startup:.0f} s (attempt start to first batch)" if startup is not None else
                      "start-up not over when cut", f"an epoch about {epoch:.0f} s" if epoch is not None else
                      "no epoch measured"])
    if startup is None or epoch is None:
        fix = "a longer --time"
    elif lead_s is None:
        fix = f"a --time longer than the signal's lead + {startup + epoch:.0f} s (start-up + an epoch)"
    else:
        need = math.ceil((lead_s + startup + epoch) / 60)
        fix = f"--time of at least {need} min (lead {lead_s} s + start-up + an epoch)"
    return (f"no progress: {len(runs)} SLURM runs in a row reached the time limit without saving a new epoch (run "
            f"time each: {got}; {seen}): submit it again with {fix}; the night continues where it stopped")


# ---- a cut: how a signal to the launcher, or SLURM running the job again, ends the night ---------------

@dataclass(frozen=True)
class End:
    """How the night ends here: the exit code, the status recorded, why, and the ending event's
    other fields (the signal's moment)."""

    code: int
    status: str
    why: str
    fields: dict = field(default_factory=dict)


class Cuts:
    """The SLURM side of one run of a job (docs/design.md, "On a SLURM cluster"): whether this run
    trains at all (`begin`), and what a signal to the launcher ends it with (`cut`). The supervisor
    records the End each returns; the requeue after a time limit, the launcher's last act, is made
    here. Made as the run starts: a cut that saved no epoch since then is no progress."""

    def __init__(self, job: Job, state: RunState, max_requeues: int, paths: RunPaths, events: Events,
                 say: Callable[[str], None]):
        self.job, self.state, self.max_requeues, self.paths = job, state, max_requeues, paths
        self.events, self.say = events, say
        self.epochs_before = _epochs_done(state)

    def begin(self) -> End | None:
        """Before the first attempt: a job submitted anew (its own --time) is judged on its own
        runs; one SLURM ran again with the requeue budget spent (a preemption at it: `cut` counted
        it) or after its night had already ended stalled ends at once; None: it trains."""
        if not self.job.restarts:
            self.state.stalls = []
        elif self.state.requeues > self.max_requeues:
            return self._spent(f"SLURM job {self.job.id} ran again")
        elif len(self.state.stalls) >= STALLED_CUTS:
            return self._stalled()
        return None

    def cut(self, sig: int, signals: Signals, attempt_cut: bool) -> End:
        """SLURM ended this part of the night: keep the checkpoint, and for a time limit requeue the
        job (its last act); a preemption SLURM requeues itself; a cancel ends the night. The cut
        attempt (`attempt_cut`: the last attempt ended interrupted) is not a failure; cuts in a row
        that saved no epoch end the night too."""
        job, state, at = self.job, self.state, signals.received_at
        kind = job.cut(sig, at)  # asked of SLURM now, before any requeue: a cancel stays one
        kept = ("the checkpoint stays resumable" if any(m.epochs_done for m in state.models.values())
                else "no epoch saved yet")
        if kind == CANCELLED:  # a person's scancel ends the night (docs/design.md, "On a SLURM cluster")
            return End(EXIT_SIGTERM, Ev.INTERRUPTED, f"SLURM job {job.id} was cancelled ({signal.Signals(sig).name}); "
                       f"{kept}: submit it again (or run the same command) to continue", {"signal_t": at})
        state.cut += 1 if attempt_cut else 0  # the attempt SLURM cut
        # Only a time limit that saved no new epoch counts toward the no-progress rule: it says the
        # job's --time is too short, which a longer one fixes. A preemption says nothing about the
        # time limit (SLURM runs the job again later; max_requeues bounds it), so one without a new
        # epoch neither counts nor breaks a streak of time limits; any new epoch is progress and
        # starts the count again (docs/design.md, "On a SLURM cluster").
        if _epochs_done(state) > self.epochs_before:
            state.stalls = []
        elif kind == Ev.TIME_LIMIT:  # how long this run of the job ran, for the line that ends the night
            state.stalls = [*state.stalls, round((at or time.time()) - started(), 1)]
        if state.requeues >= self.max_requeues:
            if kind == Ev.PREEMPTED:  # SLURM requeues it all the same: counted, so that run ends at once (`begin`)
                state.requeues += 1
            return self._spent(f"{kind.replace('_', ' ')} of SLURM job {job.id}")
        if len(state.stalls) >= STALLED_CUTS:
            return self._stalled()
        why = (f"{'the time limit' if kind == Ev.TIME_LIMIT else 'a preemption'} of SLURM job {job.id} "
               f"({signal.Signals(sig).name}); {kept}")
        if kind == Ev.TIME_LIMIT:
            signals.ignore(signal.SIGTERM)  # SLURM's SIGTERM to the job it requeues: ours
            answer = job.requeue()
            self.events.append(Ev.REQUEUE, job=job.id, result=answer, t=time.time())
            self.say(f"SLURM job {job.id}: {answer}")
            if answer != "requeued":  # the night ends here: say so, with how to go on
                return End(EXIT_SIGTERM, kind, f"{why}; {answer}: submit the job again (or run the same command) "
                           "to continue", {"signal_t": at})
        state.requeues += 1
        return End(EXIT_REQUEUED, kind, f"{why}; requeue {state.requeues} of at most {self.max_requeues}",
                   {"signal_t": at})

    def _stalled(self) -> End:
        """Cuts in a row that saved no epoch: each run of the job is too short to make progress,
        so the night ends rather than requeue to the budget (docs/design.md, "On a SLURM cluster")."""
        return End(EXIT_EXHAUSTED, Ev.EXHAUSTED, stalled(self.state.stalls, self.paths, self.job.lead_s))

    def _spent(self, what: str) -> End:
        return End(EXIT_EXHAUSTED, Ev.EXHAUSTED, f"{what} with the requeue budget spent ({self.state.requeues} of "
                   f"max_requeues {self.max_requeues}): raise it in the ladder's [job] to go on"
                   + self.state.trained_note())


def _epochs_done(state: RunState) -> int:
    return sum(m.epochs_done for m in state.models.values())


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
    """The --time/-t value among the user's sbatch options, if any: the last one, as sbatch takes it."""
    found = None
    for i, a in enumerate(sbatch_args):
        if a in ("-t", "--time") and i + 1 < len(sbatch_args):
            found = sbatch_args[i + 1]
        elif a.startswith("--time="):
            found = a.split("=", 1)[1]
        elif a.startswith("-t") and len(a) > 2:
            found = a[2:]
    return found


def signal_option(sbatch_args: list[str]) -> tuple[list[str], tuple[str, int] | None]:
    """The user's own --signal among the sbatch options, read as the time-limit signal and its
    lead: (the other options, (signal name, lead s) or None). BadInput when the launcher could not
    take it: one that SLURM would send to job steps only (no `B:`), or not USR1/USR2."""
    rest, found = [], []
    skip = False
    for i, a in enumerate(sbatch_args):
        if skip:
            skip = False
        elif a == "--signal" and i + 1 < len(sbatch_args):
            found.append(sbatch_args[i + 1])
            skip = True
        elif a.startswith("--signal="):
            found.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    if not found:
        return rest, None
    text = found[-1]  # sbatch takes the last one
    m = re.fullmatch(r"(?:([A-Za-z]+):)?([A-Za-z0-9]+)(?:@(\d+))?", text)
    fix = "give --signal=B:USR1@SECONDS, or leave --signal out and use --signal-lead SECONDS"
    if not m:
        raise BadInput(f"--signal={text}", "not SLURM's [{R|B}:]SIG[@SECONDS]", fix)
    flags, sig, lead = (m.group(1) or "").upper(), m.group(2).upper().removeprefix("SIG"), m.group(3)
    if "B" not in flags:
        raise BadInput(f"--signal={text}", "without B: SLURM signals the job's steps only, never the launcher", fix)
    if sig.isdigit():
        try:
            sig = signal.Signals(int(sig)).name.removeprefix("SIG")
        except ValueError:
            raise BadInput(f"--signal={text}", f"{sig} is no signal number", fix) from None
    if sig not in LIMIT_SIGNALS:
        raise BadInput(f"--signal={text}", f"the launcher takes {' or '.join(LIMIT_SIGNALS)} as the time-limit "
                       f"signal, not {sig}", fix)
    return rest, (sig, int(lead) if lead is not None else 60)  # SLURM's own default lead: 60 s


def gpu_option_given(sbatch_args: list[str]) -> bool:
    return any(a.split("=", 1)[0] in ("--gres", "--gpus", "-G", "--gpus-per-node", "--gpus-per-task")
               or a.startswith("-G") for a in sbatch_args)


def script(*, name: str, run_argv: list[str], logs: Path, cwd: Path, lead_s: int, gpus: int, sig: str = "USR1",
           python: str = sys.executable) -> str:
    """The batch script: requeue, the time-limit signal, the GPUs, and `exec` of the run itself, so
    the launcher is the process SLURM signals. Every value is shell-quoted. None written into an
    #SBATCH line may hold a control character (the directive would end at a newline, and the rest
    be a line the job runs), a backslash (sbatch reads it as an escape) or a % (a file-name pattern
    of --output): BadInput, as the job would fail or run something else after the queue wait."""
    q = shlex.quote
    for what, value in (("the run name", name), ("the logs folder ($RTDETR_LOGS, else ./logs)", str(logs))):
        bad = next((c for c in value if ord(c) < 0x20 or ord(c) == 0x7f or c in "\\%"), None)
        if bad is not None:
            why = ("a control character ({!r}) would end the batch script's #SBATCH line" if bad not in "\\%" else
                   "sbatch reads {!r} in an #SBATCH --output path (an escape, or a file-name pattern)")
            raise BadInput(f"{what} {value!r}", why.format(bad), "use a name and folder without control characters, "
                           "backslashes or %")
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
              f"export RTDETR_LOGS={q(str(logs))} RTDETR_SLURM_SIGNAL={q(sig)} RTDETR_SLURM_LEAD={int(lead_s)}",
              "exec " + " ".join(q(a) for a in [python, "-m", "launcher", "run", *run_argv])]
    return "\n".join(lines) + "\n"


def submit(path: Path, sbatch_args: list[str]) -> str:
    """Submit the script; the job id. BadInput (one line, nothing submitted) when sbatch is missing
    or refuses. `sbatch_args` carry the script's --signal again: an option on sbatch's command line
    outranks $SBATCH_SIGNAL, which outranks the script's #SBATCH line."""
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
