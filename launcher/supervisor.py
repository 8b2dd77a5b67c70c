"""The attempt loop: one child per attempt, one budget, the policy's next step after each failure.

One visible loop with an attempt budget (torch.distributed.elastic's shape; docs/design.md, "The
attempt loop and the launch seam"). Every side effect sits behind a narrow seam: `launch` starts
a child and returns how it ended (`failures.ChildEnd`), `sleep` waits. failures.judge alone
decides what an attempt died of; plan.decide alone decides what follows. Tests drive the loop
with scripted fakes as well as with real Ultralytics children.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import (console, experience, failures, memory, notify, plan, probe, slurm, spec as spec_mod, thrash,
               track)
from .contract import (EXIT_EXHAUSTED, EXIT_FATAL, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, INTERRUPTED, THRASH,
                       Heartbeat, Report, Spec)
from .experience import Experience
from .failures import ChildEnd, Failure
from .ladder import Ladder, Rung, gpu_indices
from .launch import ChildProcess, Launch, Signals, Stoppable, Watchdog
from .runlog import Ev, JsonLines, Events, ModelPaths, RunPaths, RunState, write_json_atomic


# the run record cannot be written: a full disk, a quota, a folder made read-only under the run
RECORD_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


@dataclass
class Outcome:
    """How one attempt ended. What it saved is the most that either of the child's documents
    counts: its report (its last word) and its last heartbeat (a child killed by a signal writes no
    report). Under DDP they differ by design: the ranks save and rank 0 writes the heartbeat, while
    the report comes from the process that started them, whose own callbacks never saw a save."""

    attempt: int
    rung: str
    mode: str  # "train" or "validate"
    end: ChildEnd
    report: Report | None
    heartbeat: Heartbeat | None
    failure: Failure | None

    def _most(self, name: str) -> int | None:
        counts = [getattr(d, name) for d in (self.report, self.heartbeat) if d is not None]
        return max((c for c in counts if c is not None), default=None)

    @property
    def epochs_saved(self) -> int:
        return self._most("epochs_saved") or 0

    @property
    def last_saved_epoch(self) -> int | None:
        return self._most("last_saved_epoch") or None


def log_tail(path: Path) -> str:
    try:
        return failures.read_tail(path)
    except OSError:
        return ""


def unwritable(e: OSError, root: Path) -> str:
    """Why the night stops when the run record itself cannot be written, and what to do."""
    fix = "make room" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
    return f"{e.strerror} while writing {e.filename or root} — {fix}, then run the same command again to continue"


@dataclass
class Supervisor:
    ladder: Ladder
    planned: tuple[Rung, ...]  # the plan's rungs (cache decision applied); see `_remedied`
    start: int  # index of the first rung
    device: str
    paths: RunPaths
    vram_gib: float | None = None
    injections: tuple[dict, ...] = ()
    child_env: dict[str, str] = field(default_factory=dict)  # extra environment for every child
    launch: Launch | None = None  # the launch seam; default: a ChildProcess (see `Signals` for its other half)
    ram: memory.RamWatch | None = None
    experience: Experience | None = None  # learned rungs: each training attempt's verdict is noted
    sleep: Callable[[float], None] | None = None  # default: a wait that a signal to the launcher ends
    slurm_job: slurm.Job | None = None  # the SLURM job this runs in: its signals are cuts, not failures
    say: Callable[[str], None] = console.say

    def __post_init__(self):
        if self.launch is None:
            self.launch = ChildProcess()
        self.ram = self.ram or memory.RamWatch()
        self.policy = plan.Policy.of(self.ladder.job)
        self.gpus = gpu_indices(self.device)
        self.telemetry = JsonLines(self.paths.telemetry)
        self.events = Events(self.paths.events)
        self.state: RunState | None = None
        self.cuts: slurm.Cuts | None = None  # made in `run`, with the state it cuts
        self.outcomes: list[Outcome] = []
        # the launcher's signal and the grace kill reach the child through the seam's `signal` and
        # `stop` (Stoppable), when it carries them: a scripted launch without them never runs a process
        self.signals = Signals(self.launch if isinstance(self.launch, Stoppable) else None, self.say,
                               (self.slurm_job.signal,) if self.slurm_job else ())
        self.sleep = self.sleep or self.signals.stopping.wait
        self._release: tuple | None = None  # (pids, free before) of a dead attempt, to wait on
        self.tracking = track.Night(self.paths, self.events, self.say)  # the night's tracker run, if any

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, state: RunState) -> int:
        self.state = state
        self.cuts = (slurm.Cuts(self.slurm_job, state, self.ladder.job.max_requeues, self.paths, self.events, self.say)
                     if self.slurm_job else None)  # in a SLURM job, its signals are cuts, not failures
        self.signals.install()
        try:
            try:
                end = self.cuts.begin() if self.cuts else None  # SLURM ran the job again: past its budget, or stalled
                if not end:
                    self.tracking.start(state)
                code = self._end(end) if end else self._loop(self.start, state.mode)
            except OSError as e:
                if e.errno not in RECORD_ERRORS:
                    raise
                code, state = EXIT_FATAL, replace(state, status=Ev.FATAL, reason=unwritable(e, self.paths.root))
                self.say(f"fatal: {state.reason}")  # the child is already gone
            # the one place every night ends, whatever its ending: the record is final
            notify.night_end(self.ladder.job.notify, state, self.paths, code, self.events, self.say)
            return code
        finally:
            self.signals.restore()

    def _loop(self, i: int, mode: str) -> int:
        state, wait, streak = self.state, 0.0, 0
        while True:
            if self.policy.budget_spent(state.attempts - state.cut):  # the one budget, before every child
                return self._finish(EXIT_EXHAUSTED, Ev.EXHAUSTED,
                                    f"attempt budget spent ({self.policy.max_attempts} attempts): raise "
                                    "max_attempts in the ladder's [job] to go on, or start afresh with --fresh")
            if wait:
                self.sleep(wait)
            if self.signals.received is not None:  # a signal during a retry's wait: start nothing more
                return self._interrupted()
            outcome = self._attempt(i, mode)
            failure = outcome.failure
            if failure is None:
                return self._complete(outcome)
            streak = streak + 1 if failure.kind in plan.TRANSIENT else 0
            thrashes = thrash.restarts(self.paths, outcome.rung) + 1 if failure.kind == THRASH else 0
            step = plan.decide(self._remedied(), i, failure.kind, failure.phase, outcome.epochs_saved,
                               streak=streak, policy=self.policy, thrashes=thrashes)
            if failure.kind == THRASH:
                thrash.record(self.events, self.say, outcome.attempt, outcome.rung, outcome.heartbeat,
                              thrash.RESTART if step.action == Ev.RETRY else thrash.STEP_DOWN)
            if step.action == Ev.INTERRUPTED:
                return self._interrupted()
            if step.action == Ev.FATAL:
                return self._finish(EXIT_FATAL, Ev.FATAL, f"{failure.evidence} — {step.reason}")
            if step.action == Ev.EXHAUSTED:
                return self._finish(EXIT_EXHAUSTED, Ev.EXHAUSTED, step.reason + self.state.trained_note())
            if step.retry is None:
                streak = 0
            mode = self._take(step, i, failure, mode)
            i, wait = step.rung, step.wait_s

    def _take(self, step: plan.Step, i: int, failure: Failure, mode: str) -> str:
        """Record a retry, step-down or validation, apply its remedies; the next attempt's mode (a
        retried validation stays one)."""
        state = self.state
        state.remedies.update(dict(step.changes))
        if step.action == Ev.STEP_DOWN:
            state.set_aside(self.planned[i].model, self.planned[step.rung].model, self.events, self.say)
        n, of = step.retry or (None, None)
        self.events.append(step.action, rung=self.planned[i].name, to=self.planned[step.rung].name, kind=failure.kind,
            evidence=failure.evidence, reason=step.reason, wait_s=round(step.wait_s, 1), retry=n, of=of,
            **dict(step.changes))
        self.say(f"{step.reason}: {failure.evidence}" if step.retry else step.reason)
        notify.on_step(self.ladder.job, state, step.action, self.planned[i].name, self.planned[step.rung].name,
                       failure, step.reason, self.events, self.say)  # [job] notify_on
        validate = step.action == Ev.VALIDATE or (step.action == Ev.RETRY and mode == "validate")
        state.rung, state.mode = self.planned[step.rung].name, "validate" if validate else "train"
        self._save_state()
        return state.mode

    def _remedied(self) -> tuple[Rung, ...]:
        """The rungs attempts run and the policy steps down: the planned ones with the remedies of
        earlier host-RAM OOMs applied (they stay on lower rungs)."""
        return plan.with_remedies(self.planned, self.state.remedies)

    def _attempt(self, i: int, mode: str) -> Outcome:
        rung, state = self._remedied()[i], self.state
        if self._release:  # the next attempt needs the memory the last one held
            pids, before = self._release
            self._release = None
            released = probe.wait_gpu_released(self.gpus, pids, before)
            self.events.append(Ev.GPU_RELEASE, result=released)
            self.say(f"GPU memory: {released}")

        def not_started() -> Outcome:
            """The launcher's signal came first: an attempt that starts no child never was (not
            counted, no events, no log line), whichever look below saw the signal."""
            end = ChildEnd(-self.signals.received)
            return Outcome(state.attempts, rung.name, mode, end, None, None,
                           failures.judge(end, None, "", None, self.signals.received))
        if self.signals.received is not None:  # a signal during that wait: start nothing more
            return not_started()
        n = state.attempts = state.attempts + 1
        state.rung, state.mode = rung.name, mode
        self.paths.attempt(n).mkdir(parents=True, exist_ok=True)
        spec = self._spec(rung, n, mode, self.planned[self._model_rung(i)] if mode == "validate" else rung)
        write_json_atomic(self.paths.spec(n), spec.to_json())
        env = {**os.environ, **self.child_env, **spec_mod.env(rung, self.paths.spec(n))}
        self._save_state()
        model = spec.model
        resume_from = ModelPaths.at(spec.save_dir).resume_from
        before = {g: free for g, (free, _) in (probe.gpu_usage(self.gpus) or {}).items()} if self.gpus else None
        watchdog = Watchdog(self.ladder.job, n, rung.name, self.paths.heartbeat(n), self.gpus, self.ram,
                            self.telemetry, on_tree=self._on_tree,
                            on_thrash=thrash.seen(self.events, self.say, self.ladder.job.on_thrash, n, rung.name))
        if self.signals.received is not None:  # noted while the attempt was written: take it back
            state.attempts = n - 1
            self.paths.spec(n).unlink(missing_ok=True)
            try:
                self.paths.attempt(n).rmdir()  # only when empty: nothing but the spec is ever removed
            except OSError:
                pass
            self._save_state()
            return not_started()
        if resume_from:
            done = state.models[model].epochs_done if model in state.models else None
            self.events.append(Ev.RESUME, attempt=n, rung=rung.name, checkpoint=resume_from, epochs_done=done)
        self.events.append(Ev.ATTEMPT_START, attempt=n, rung=rung.name, mode=mode, model=model, batch=rung.batch,
                           workers=rung.workers, cache=rung.cache, resume_from=resume_from, t=time.time())
        self.say(f"attempt {n}: rung {rung.name} ({mode}), model {Path(model).name}, batch {rung.batch}; "
                 f"log {self.paths.train_log(n)}")
        # ChildProcess looks once more as it starts the child (docs/design.md, "The attempt loop and the launch seam")
        end = self.launch(spec_mod.command(self.paths.spec(n)), env, self.paths.train_log(n), watchdog)
        self.signals.child_gone()
        report, heartbeat = Report.read(self.paths.report(n)), Heartbeat.read(self.paths.heartbeat(n))
        watchdog.thrash(heartbeat)  # a thrash the ticks did not see before the child ended
        failure = failures.judge(end, report, log_tail(self.paths.train_log(n)), heartbeat, self.signals.received)
        state.tree = []
        if failure and self.gpus:
            self._release = ({r["pid"] for r in watchdog.tree}, before)
        outcome = Outcome(n, rung.name, mode, end, report, heartbeat, failure)
        self.outcomes.append(outcome)
        state.note_attempt(spec.model, spec.save_dir, spec.epochs, outcome.last_saved_epoch, failure is None)
        verdict = experience.verdict(failure.kind if failure else None, failure.phase if failure else None,
                                     outcome.epochs_saved) if mode == "train" else None
        if self.experience and verdict:
            self.experience.note(rung.name, verdict, self.ladder.job.name)
        self.events.append(Ev.ATTEMPT_END, attempt=n, rung=rung.name, exit_code=end.exit_code,
                           seconds=round(end.seconds, 1), kind=failure.kind if failure else None,
                           evidence=failure.evidence if failure else None, phase=failure.phase if failure else None,
                           epochs_saved=outcome.epochs_saved, last_saved_epoch=outcome.last_saved_epoch,
                           checkpoint=heartbeat.checkpoint if heartbeat else None, t=time.time())
        self.tracking.attempt_ended(n)
        if failure:
            self.say(f"attempt {n} ended: {failure.kind}{f' in {failure.phase}' if failure.phase else ''} — "
                     f"{failure.evidence}")
        self._save_state()
        return outcome

    def _on_tree(self, tree: list[dict]) -> None:
        """The running child's processes, kept in state.json: a launcher that is SIGKILLed leaves
        the next run able to end them."""
        self.state.tree = tree
        self._save_state()

    # ---- models ---------------------------------------------------------------------------------
    def _model_rung(self, i: int) -> int:
        """For a validation attempt: the rung whose model is being finished (the last trained one)."""
        return next((j for j, r in enumerate(self.planned) if r.model.source == self.state.training_model), i)

    def _spec(self, rung: Rung, n: int, mode: str, model_rung: Rung) -> Spec:
        trained = replace(rung, model=model_rung.model, epochs=model_rung.epochs) if mode == "validate" else rung
        save_dir = self.state.save_dir_for(self.paths, trained.model.source)
        spec = spec_mod.build(self.ladder.job, trained, self.device, self.paths, n, vram_gib=self.vram_gib, mode=mode,
                              inject=self.injections, save_dir=save_dir)
        spec = replace(spec, track=self.tracking.child())
        if mode == "train":
            self.state.train(rung.model.source)
        return spec

    # ---- endings --------------------------------------------------------------------------------
    def _complete(self, outcome: Outcome) -> int:
        report, state = outcome.report or Report(), self.state
        source, best, last = state.training_model, report.best, report.last
        state.status, state.delivered = Ev.COMPLETE, {"model": source, "best": best, "last": last}
        self._save_state()
        self.tracking.finish(Ev.COMPLETE)
        aside = {s: m.epochs_done for s, m in state.models.items() if s != source and m.set_aside}
        self.events.append(Ev.COMPLETE, rung=outcome.rung, model=source, best=best, last=last, set_aside=aside)
        for line in (*state.summary(Ev.COMPLETE, self.ladder.job.name, self.outcomes), f"trained: {best}",
                     f"last checkpoint: {last}", f"run record: {self.paths.root}"):
            self.say(line)
        return EXIT_OK

    def _interrupted(self) -> int:
        sig = self.signals.received or signal.SIGTERM
        if self.cuts and sig != signal.SIGINT:  # Ctrl-C in an allocation is a person's
            last = self.outcomes[-1].failure if self.outcomes else None
            return self._end(self.cuts.cut(sig, self.signals, last is not None and last.kind == INTERRUPTED))
        kept = ("the checkpoint stays resumable" if any(m.epochs_done for m in self.state.models.values())
                else "no epoch was saved yet")
        return self._finish(EXIT_SIGINT if sig == signal.SIGINT else EXIT_SIGTERM, Ev.INTERRUPTED,
                            f"stopped by {signal.Signals(sig).name}; {kept}: run the same command again to continue")

    def _end(self, end: slurm.End) -> int:
        return self._finish(end.code, end.status, end.why, **end.fields)

    def _finish(self, code: int, status: str, why: str, **fields) -> int:
        self.state.status, self.state.reason = status, why
        self._save_state()
        self.tracking.finish(status)
        self.events.append(status, reason=why, exit_code=code, t=time.time(), **fields)
        for line in (*self.state.summary(status, self.ladder.job.name, self.outcomes), f"{status}: {why}",
                     f"run record: {self.paths.root}"):
            self.say(line)
        return code

    def _save_state(self) -> None:
        self.state.save(self.paths.state)
