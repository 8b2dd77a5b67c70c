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

from . import (console, experience, failures, memory, models, notify, plan, probe, slurm, spec as spec_mod,
               track)
from .contract import (EXIT_EXHAUSTED, EXIT_FATAL, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, INTERRUPTED, THRASH,
                       Heartbeat, Report, Spec)
from .experience import Experience
from .failures import ChildEnd, Failure
from .ladder import Ladder, Rung, gpu_indices
from .launch import ChildProcess, Launch, Signals, Stoppable, Watchdog
from .runlog import Ev, JsonLines, Events, ModelPaths, RunPaths, RunState, read_events, write_json_atomic


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
        self.trackers: tuple[str, ...] = ()  # the trackers this session logs the night to (launcher/track.py)

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
                    self._track_begin()
                code = self._end(end) if end else self._loop(self.start, state.mode)
            except OSError as e:
                if e.errno not in RECORD_ERRORS:
                    raise
                # the run record itself cannot be written: say so and stop (the child is already gone)
                fix = "make room" if e.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
                why = (f"{e.strerror} while writing {e.filename or self.paths.root} — {fix}, then run the same "
                       "command again to continue")
                self.say(f"fatal: {why}")
                self._tell(EXIT_FATAL, replace(state, status=Ev.FATAL, reason=why))
                return EXIT_FATAL
            self._tell(code, state)  # the one place every night ends, whatever its ending: the record is final
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
            thrashes = self._thrashes(outcome.rung) + 1 if failure.kind == THRASH else 0
            step = plan.decide(self._remedied(), i, failure.kind, failure.phase, outcome.epochs_saved,
                               streak=streak, policy=self.policy, thrashes=thrashes)
            if failure.kind == THRASH:
                self._record_thrash(outcome.attempt, outcome.rung, outcome.heartbeat,
                                    "restart" if step.action == Ev.RETRY else "step_down")
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
        if step.action in self.ladder.job.notify_on and self.ladder.job.notify:  # [job] notify_on (notify.py)
            body = notify.step_body(state, step.action, self.planned[i].name, self.planned[step.rung].name,
                                    failure.kind, failure.evidence, step.reason)
            notify.send(self.ladder.job.notify, body, self.events, self.say)
        validate = step.action == Ev.VALIDATE or (step.action == Ev.RETRY and mode == "validate")
        state.rung, state.mode = self.planned[step.rung].name, "validate" if validate else "train"
        self._save_state()
        return state.mode

    def _thrashes(self, rung: str) -> int:
        """Attempts on `rung` that ended for thrashing and were restarted, in the whole run (every
        session's events): the second thrash on a rung steps down (plan.POLICY)."""
        return sum(1 for e in read_events(self.paths.events)
                   if e.kind == Ev.THRASH and e.get("rung") == rung and e.get("action") == "restart")

    def _record_thrash(self, attempt: int, rung: str, beat: Heartbeat | None, action: str) -> None:
        """The thrash event: the epoch the child's rule fired in, its alloc retries, and what was done."""
        epoch, retries = (beat.thrash_epoch, beat.alloc_retries) if beat else (None, None)
        self.events.append(Ev.THRASH, attempt=attempt, rung=rung, epoch=epoch, retries=retries, action=action)
        if action == "warn":
            self.say(f"attempt {attempt}: the allocator is thrashing on rung {rung} in epoch {epoch} (alloc retries "
                     f"{retries} rose in two consecutive windows); training goes on")

    def _thrash_seen(self, attempt: int, rung: str):
        """The watchdog's hand-on of a heartbeat whose rule fired: recorded here where the child goes
        on (on_thrash = "warn", or the last epoch, after which nothing is left to restart for); where it
        ends itself, the supervisor records the thrash as it classifies the attempt."""
        def seen(beat: Heartbeat) -> None:
            last = beat.epochs is not None and beat.thrash_epoch is not None and beat.thrash_epoch >= beat.epochs
            if self.ladder.job.on_thrash == "warn" or last:
                self._record_thrash(attempt, rung, beat, "warn")
        return seen

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
                            self.telemetry, on_tree=self._on_tree, on_thrash=self._thrash_seen(n, rung.name))
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
        for tracker, why in track.warnings(self.paths.track_ledger, n) if self.trackers else ():
            self._track_warn(tracker, why, n)
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
        if self.trackers:
            spec = replace(spec, track=track.for_child(self.state.tracking, self.trackers, self.paths.track_ledger))
        if mode == "train":
            self.state.training_model = rung.model.source
            if rung.model.source in self.state.models:
                self.state.models[rung.model.source].set_aside = False  # taken up again
        return spec

    # ---- endings --------------------------------------------------------------------------------
    def _complete(self, outcome: Outcome) -> int:
        report, state = outcome.report or Report(), self.state
        source, best, last = state.training_model, report.best, report.last
        state.status, state.delivered = Ev.COMPLETE, {"model": source, "best": best, "last": last}
        self._save_state()
        self._track_end(Ev.COMPLETE)
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
        self._track_end(status)
        self.events.append(status, reason=why, exit_code=code, t=time.time(), **fields)
        for line in (*self.state.summary(status, self.ladder.job.name, self.outcomes), f"{status}: {why}",
                     f"run record: {self.paths.root}"):
            self.say(line)
        return code

    def _tell(self, code: int, state: RunState) -> None:
        """The message at the night's end (docs/design.md, "A message when the night ends"), to each
        notify URL: the report written first, so the path it names exists. Neither changes the
        exit code: each failure is one line said and, where the record takes it, one event."""
        urls = self.ladder.job.notify
        if not urls:
            return
        report = None
        try:
            from . import report as report_mod  # matplotlib: only a night that sends a message draws here
            _, report = report_mod.write_report(self.paths.root)
        except Exception as e:  # noqa: BLE001 - the message goes without it
            self.say(f"report: not written ({type(e).__name__}: {' '.join(str(e).split())[:200]}); the message "
                     "goes without it")
        notify.send(urls, notify.night_body(state, self.paths, code, report), self.events, self.say)

    def _save_state(self) -> None:
        self.state.save(self.paths.state)

    # ---- the night's tracker run (docs/design.md, "One tracker run per night") ---------------------
    def _track_begin(self) -> None:
        """Take the run's tracker run (state.json) or create it, for the trackers configured now;
        none configured: nothing imported, nothing said."""
        trackers = track.wanted(os.environ, models.ultralytics_settings())
        if not trackers:
            return
        state = self.state
        state.tracking = track.begin(state.tracking, state.run, track.EXPERIMENT, self.paths.tensorboard, trackers,
                                     os.environ, lambda tracker, why: self._track_warn(tracker, why),
                                     tags={f"{track.PREFIX}.ladder": state.ladder, f"{track.PREFIX}.data": state.data,
                                           f"{track.PREFIX}.device": state.device})
        self.trackers = tuple(t for t in trackers if t in state.tracking)
        self._save_state()
        for line in track.describe({t: state.tracking[t] for t in self.trackers}):
            self.say(f"tracking: {line}")

    def _track_warn(self, tracker: str, why: str, attempt: int | None = None) -> None:
        """A tracker failed: one record line and one said; training goes on."""
        self.events.append(Ev.TRACK_FAILED, tracker=tracker, attempt=attempt, error=why)
        self.say(f"warning: {tracker} failed{f' in attempt {attempt}' if attempt else ''} ({why}); training goes on")

    def _track_end(self, status: str) -> None:
        if track.MLFLOW in self.trackers:
            track.end(self.state.tracking, status, os.environ, self._track_warn)
