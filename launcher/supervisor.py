"""The attempt loop: start a child per attempt, classify how it ended, and follow the policy.

One visible loop with an attempt budget (torch.distributed.elastic's shape): every side effect
sits behind a narrow seam (`launch` starts a child and returns its exit code, `sleep` waits) so
tests can drive the loop with scripted fakes as well as with real Ultralytics children.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import tenacity

from . import experience, failures, memory, plan as plan_mod, probe, proctree, spec as spec_mod
from .experience import Experience
from .contract import (EXIT_EXHAUSTED, EXIT_FATAL, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, HANG, INTERRUPTED, NCCL,
                       UNKNOWN)
from .errors import BadInput
from .failures import Failure
from .ladder import Ladder, Rung
from .runlog import Events, JsonLines, RunPaths, now_iso, read_json, write_json_atomic

TRANSIENT = (UNKNOWN, NCCL, HANG)  # retried on the same rung (a hang once), with backoff
RETRY_WAIT_MAX_S = 300.0  # exponential backoff stops doubling here
TREE_EVERY_S = 10.0  # how often the running attempt's process tree is written to state.json
RAM_EVERY_S = 2.0  # how often host RAM is sampled (evidence for a SIGKILL)
TELEMETRY_EVERY_S = 10.0  # a line of telemetry.jsonl: ~7 MB for a 100-hour run
GRACE_S = 30.0  # after forwarding SIGINT/SIGTERM, how long the child gets before SIGKILL


@dataclass
class Outcome:
    attempt: int
    rung: str
    mode: str  # "train" or "validate"
    exit_code: int
    seconds: float
    report: dict | None
    heartbeat: dict | None
    failure: Failure | None

    @property
    def epochs_saved(self) -> int:
        for source in (self.report, self.heartbeat):
            if source and isinstance(source.get("epochs_saved"), int):
                return source["epochs_saved"]
        return 0

    @property
    def last_saved_epoch(self) -> int | None:
        for source in (self.report, self.heartbeat):
            if source and source.get("last_saved_epoch"):
                return source["last_saved_epoch"]
        return None


def log_tail(path: Path) -> str:
    try:
        return failures.read_tail(path)
    except OSError:
        return ""


def become_subreaper() -> None:
    """Orphaned descendants (a dead child's dataloader workers or DDP ranks) are reparented to the
    launcher instead of init, so it can find and end them (Linux PR_SET_CHILD_SUBREAPER)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1)
    except (OSError, AttributeError):
        pass


class ChildProcess:
    """Starts `python -m launcher.child`, shows its output live and writes it to train.log, and
    while it runs calls `watch(pid)` every `tick` seconds: a non-None answer (why the child must
    go, e.g. a silent heartbeat) ends the whole process tree."""

    def __init__(self, out=None, tick: float = 1.0):
        become_subreaper()
        self.out = out or sys.stdout.buffer
        self.tick = tick
        self.proc: subprocess.Popen | None = None
        self.watch: Callable[[int], str | None] = lambda pid: None
        self.killed_for: str | None = None

    def __call__(self, cmd: list[str], env: dict[str, str], log_path: Path) -> int:
        self.killed_for = None
        with open(log_path, "ab") as log:
            # its own session: a terminal's Ctrl-C reaches the launcher, which decides
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=Path.cwd())
            tee = threading.Thread(target=self._tee, args=(self.proc.stdout, log), daemon=True)
            tee.start()
            try:
                while True:
                    try:
                        code = self.proc.wait(timeout=self.tick)
                        break
                    except subprocess.TimeoutExpired:
                        reason = self.watch(self.proc.pid)
                        if reason and self.killed_for is None:
                            self.killed_for = reason
                            proctree.kill_tree(self.proc.pid, grace=GRACE_S)
            except BaseException:  # the launcher itself failed (a full disk, a bug): no orphan
                proctree.kill_tree(self.proc.pid, grace=GRACE_S)
                raise
            # leftovers (dataloader workers, DDP ranks) were reparented to us, the subreaper
            proctree.reap([r for r in proctree.snapshot(os.getpid()) if r["pid"] != os.getpid()], grace=2)
            tee.join(timeout=10)  # an orphan still holding the pipe must not hang the launcher
        self.proc = None
        return code

    def _tee(self, pipe, log) -> None:
        for chunk in iter(lambda: pipe.read1(65536), b""):  # keep draining, or the child blocks
            try:
                log.write(chunk)
                log.flush()
            except OSError:  # a full disk: the live copy still goes on
                pass
            try:
                self.out.write(chunk)
                self.out.flush()
            except (OSError, ValueError):
                pass

    def signal(self, sig: int) -> None:
        proc = self.proc
        if proc and proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, grace: float) -> None:
        """The launcher was told to stop: the whole tree, after `grace` seconds to end cleanly."""
        proc = self.proc
        if proc and proc.poll() is None:
            proctree.kill_tree(proc.pid, grace=grace, sig=signal.SIGTERM)


@dataclass
class Supervisor:
    ladder: Ladder
    rungs: tuple[Rung, ...]  # the plan's rungs (cache decision applied)
    start: int  # index of the first rung
    device: str
    paths: RunPaths
    vram_gib: float | None = None
    injections: tuple[dict, ...] = ()
    child_env: dict[str, str] = field(default_factory=dict)  # extra environment for every child
    launch: Callable[[list[str], dict[str, str], Path], int] | None = None  # default: `child`
    child: ChildProcess | None = None  # the real child runner, whose watch ticks drive the watchdog
    ram: memory.RamWatch | None = None
    experience: Experience | None = None  # learned rungs: each training attempt's verdict is noted
    sleep: Callable[[float], None] | None = None  # default: a wait that a signal to the launcher ends
    say: Callable[[str], None] = lambda line: print(f"launcher: {line}", flush=True)

    def __post_init__(self):
        if self.child is None and self.launch is None:
            self.child = ChildProcess()
        self.launch = self.launch or self.child
        if self.child:
            self.child.watch = self._watch
        self.ram = self.ram or memory.RamWatch()
        self._ram_sampled = self._telemetry_written = 0.0
        self._ram_now: dict | None = None
        self.telemetry = JsonLines(self.paths.telemetry)
        self._spawned = 0.0
        self._heartbeat: Path | None = None
        self._tree_saved = 0.0
        self.events = Events(self.paths.events)
        self.state: dict = {}
        self.outcomes: list[Outcome] = []
        self.received: int | None = None  # the signal the launcher itself received
        self._stopping = threading.Event()
        self.sleep = self.sleep or self._stopping.wait
        self._timer: threading.Timer | None = None
        self._release: tuple | None = None  # (gpus, pids, free before) of a dead attempt, to wait on
        self.remedies: dict[str, object] = {}  # host-OOM remedies, kept on the rungs below

    # ---- the loop -------------------------------------------------------------------------------
    def run(self, state: dict) -> int:
        self.state = state
        self.remedies = dict(state.get("remedies", {}))  # a continued run keeps them
        i = self.start
        mode = state.get("mode", "train")
        self._install_signals()
        try:
            return self._loop(i, mode)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            # the run record itself cannot be written: say so and stop (the child is already gone)
            self.say(f"fatal: {e.strerror} while writing {e.filename or self.paths.root} — make room, then run "
                     "the same command again to continue")
            return EXIT_FATAL
        finally:
            if self._timer:
                self._timer.cancel()
            self._restore_signals()

    def _loop(self, i: int, mode: str) -> int:
        state = self.state
        while True:
            if state["attempts"] >= self.ladder.job.max_attempts:
                return self._finish(EXIT_EXHAUSTED, "exhausted",
                                    f"attempt budget spent ({self.ladder.job.max_attempts} attempts): raise "
                                    "max_attempts in the ladder's [job] to go on, or start afresh with --fresh")
            outcome = self._attempt_with_retries(i, mode)
            if outcome.failure is None:
                return self._complete(outcome)
            if self.received is not None:
                code = EXIT_SIGINT if self.received == signal.SIGINT else EXIT_SIGTERM
                return self._finish(code, "interrupted", f"stopped by {signal.Signals(self.received).name}; "
                                    "the checkpoint stays resumable: run the same command again to continue")
            step = plan_mod.next_step(self._rungs(), i, outcome.failure.kind, outcome.failure.phase,
                                      outcome.epochs_saved)
            if step.action == plan_mod.STOP:
                return self._finish(EXIT_FATAL, "fatal", f"{outcome.failure.evidence} — {step.reason}")
            if step.action == plan_mod.EXHAUSTED:
                return self._finish(EXIT_EXHAUSTED, "exhausted", step.reason + self._trained_note())
            if step.action == plan_mod.INTERRUPT:  # interrupted, but not by a signal to the launcher
                return self._finish(EXIT_SIGTERM, "interrupted", step.reason)
            self.remedies.update(dict(step.changes))
            state["remedies"] = self.remedies
            if step.action == plan_mod.STEP_DOWN:
                self._set_aside_if_abandoned(self.rungs[i], self.rungs[step.rung])
            event = {plan_mod.RETRY: "retry", plan_mod.STEP_DOWN: "step_down", plan_mod.VALIDATE: "validate"}
            self.events.append(event[step.action], rung=self.rungs[i].name, to=self.rungs[step.rung].name,
                               kind=outcome.failure.kind, reason=step.reason, **dict(step.changes))
            self.say(step.reason)
            i, mode = step.rung, ("validate" if step.action == plan_mod.VALIDATE else "train")
            state.update(rung=self.rungs[i].name, mode=mode)
            self._save_state()

    def _rungs(self) -> tuple[Rung, ...]:
        """The ladder with the remedies of earlier host-RAM OOMs applied."""
        out = []
        for r in self.rungs:
            if "cache" in self.remedies:
                r = replace(r, cache="off")
            if "workers" in self.remedies:
                r = replace(r, workers=min(r.workers, int(self.remedies["workers"])))
            out.append(r)
        return tuple(out)

    def _attempt_with_retries(self, i: int, mode: str) -> Outcome:
        """One attempt at rung i; unknown and NCCL failures are retried with exponential backoff."""
        first, longest = self.ladder.job.retry_wait_s, RETRY_WAIT_MAX_S
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda o: o.failure is not None and o.failure.kind in TRANSIENT
                                           and self.received is None
                                           and self.state["attempts"] < self.ladder.job.max_attempts),
            stop=self._retries_spent,
            wait=tenacity.wait_exponential(multiplier=first, min=first, max=longest),
            sleep=self.sleep,
            before_sleep=self._log_retry,
            retry_error_callback=lambda rs: rs.outcome.result(),
        )
        return retrying(self._attempt, i, mode)

    def _allowed_retries(self, kind: str) -> int:
        """A hang is retried once on the same rung; unknown and NCCL failures `retries` times."""
        return 1 if kind == HANG else self.ladder.job.retries

    def _retries_spent(self, rs: tenacity.RetryCallState) -> bool:
        return rs.attempt_number >= 1 + self._allowed_retries(rs.outcome.result().failure.kind)

    def _log_retry(self, rs: tenacity.RetryCallState) -> None:
        o: Outcome = rs.outcome.result()
        wait = rs.next_action.sleep if rs.next_action else 0
        of = self._allowed_retries(o.failure.kind)
        self.events.append("retry", rung=o.rung, kind=o.failure.kind, evidence=o.failure.evidence,
                           wait_s=round(wait, 1), retry=rs.attempt_number, of=of)
        self.say(f"retry {rs.attempt_number}/{of} of rung {o.rung} in {wait:.0f} s after "
                 f"{o.failure.kind}: {o.failure.evidence}")

    def _attempt(self, i: int, mode: str) -> Outcome:
        rung = self._rungs()[i]
        if self.received is not None:  # a signal during a retry's wait: start nothing more
            return Outcome(self.state["attempts"], rung.name, mode, -self.received, 0.0, None, None,
                           Failure(INTERRUPTED, f"the launcher received {signal.Signals(self.received).name}",
                                   "signal"))
        if self._release:  # the next attempt needs the memory the last one held
            gpus, pids, before = self._release
            self._release = None
            released = probe.wait_gpu_released(gpus, pids, before)
            self.events.append("gpu_release", result=released)
            self.say(f"GPU memory: {released}")
        n = self.state["attempts"] = self.state["attempts"] + 1
        self.state.update(rung=rung.name, mode=mode)
        self.paths.attempt(n).mkdir(parents=True, exist_ok=True)
        spec = self._spec(rung, n, mode, self.rungs[self._model_rung(i)] if mode == "validate" else rung)
        write_json_atomic(self.paths.spec(n), spec)
        env = {**os.environ, **self.child_env, **spec_mod.env(rung)}
        self._save_state()
        resume_from = self._resume_point(spec)
        if resume_from:
            done = self.state.get("models", {}).get(spec["train_args"]["model"], {}).get("epochs_done")
            self.events.append("resume", attempt=n, rung=rung.name, checkpoint=resume_from, epochs_done=done)
        self.events.append("attempt_start", attempt=n, rung=rung.name, mode=mode, model=spec["train_args"]["model"],
                           batch=rung.batch, workers=rung.workers, cache=rung.cache, resume_from=resume_from,
                           t=time.time())
        self.say(f"attempt {n}: rung {rung.name} ({mode}), model {Path(spec['train_args']['model']).name}, "
                 f"batch {rung.batch}; log {self.paths.train_log(n)}")
        gpus = tuple(int(i) for i in self.device.split(",")) if self.device != "cpu" else ()
        before = {i: free for i, (free, _) in (probe.gpu_usage(gpus) or {}).items()} if gpus else None
        t0 = self._spawned = time.monotonic()
        self._heartbeat, self._tree_saved, self._ram_sampled = self.paths.heartbeat(n), 0.0, 0.0
        self._telemetry_written = time.monotonic()  # the first sample once the child is past its start
        self.ram.start()
        code = self.launch(spec_mod.command(self.paths.spec(n)), env, self.paths.train_log(n))
        seconds = time.monotonic() - t0
        if self._timer:  # the child is gone: the kill planned after a signal has nothing left to do
            self._timer.cancel()
        report, heartbeat = read_json(self.paths.report(n)), read_json(self.paths.heartbeat(n))
        tree = {r["pid"] for r in self.state.pop("tree", [])}
        failure = None
        if code != 0 or not (report and report.get("ok")):  # success is exit 0 *and* the child's word
            evidence = self.ram.evidence() if failures.signal_of(code) == signal.SIGKILL else None
            failure = failures.classify(log_tail(self.paths.train_log(n)), exit_code=code, report=report,
                                        memory_evidence=evidence)
            if failure is None:  # exit 0 without a success report
                failure = Failure(UNKNOWN, f"exit code {code} without a success report", "exit")
            if self.child and self.child.killed_for:
                failure = Failure(HANG, self.child.killed_for, "watchdog", (heartbeat or {}).get("phase"))
            if self.received is not None:
                failure = Failure(INTERRUPTED, f"the launcher received {signal.Signals(self.received).name}",
                                  "signal", failure.phase)
            elif failure.kind == INTERRUPTED:  # someone else stopped the child: not the night's end
                failure = replace(failure, kind=UNKNOWN, evidence=f"{failure.evidence} (not from the launcher)")
            if gpus:
                self._release = (gpus, tree, before)
        outcome = Outcome(n, rung.name, mode, code, seconds, report, heartbeat, failure)
        self.outcomes.append(outcome)
        self._record_model(spec, outcome)
        verdict = experience.verdict(failure.kind if failure else None, failure.phase if failure else None,
                                     outcome.epochs_saved) if mode == "train" else None
        if self.experience and verdict:
            self.experience.note(rung.name, verdict, self.ladder.job.name)
        self.events.append("attempt_end", attempt=n, rung=rung.name, exit_code=code, seconds=round(seconds, 1),
                           kind=failure.kind if failure else None, evidence=failure.evidence if failure else None,
                           phase=failure.phase if failure else None, epochs_saved=outcome.epochs_saved,
                           last_saved_epoch=outcome.last_saved_epoch, checkpoint=(heartbeat or {}).get("checkpoint"),
                           t=time.time())
        if failure:
            self.say(f"attempt {n} ended: {failure.kind}{f' in {failure.phase}' if failure.phase else ''} — "
                     f"{failure.evidence}")
        self._save_state()
        return outcome

    def _watch(self, pid: int) -> str | None:
        """Called every second while a child runs: record its process tree (so a launcher that is
        SIGKILLed leaves the next run able to end it), and say whether its heartbeat went silent."""
        now = time.monotonic()
        if now - self._tree_saved >= TREE_EVERY_S:
            self._tree_saved = now
            self.state["tree"] = proctree.snapshot(pid)
            self._save_state()
        pids = [r["pid"] for r in self.state.get("tree", [])] or [pid]
        if now - self._ram_sampled >= RAM_EVERY_S:  # host RAM just before a SIGKILL is OOM evidence
            self._ram_sampled = now
            self._ram_now = self.ram.sample(pids)
        job = self.ladder.job
        beat = read_json(self._heartbeat) if self._heartbeat else None
        if now - self._telemetry_written >= TELEMETRY_EVERY_S:
            self._telemetry_written = now
            self._record_telemetry(set(pids), beat)
        try:
            silent = time.time() - self._heartbeat.stat().st_mtime
        except (OSError, AttributeError):
            silent = now - self._spawned  # no heartbeat yet
        started = bool(beat and beat.get("first_batch_ts"))
        limit = job.heartbeat_timeout_s if started else job.startup_timeout_s
        if silent <= limit:
            return None
        where = f"phase {beat.get('phase')}, epoch {beat.get('epoch')}, batch {beat.get('batch')}" if beat else \
            "before its first heartbeat"
        return (f"heartbeat silent for {silent:.0f} s (limit {limit} s {'after' if started else 'before'} the first "
                f"batch; {where})")

    def _record_telemetry(self, pids: set[int], beat: dict | None) -> None:
        ram, beat = self._ram_now or {}, beat or {}
        gpus = tuple(int(i) for i in self.device.split(",")) if self.device != "cpu" else ()
        self.telemetry.add({
            "t": round(time.time(), 2), "attempt": self.state["attempts"], "rung": self.state.get("rung"),
            "vram": probe.process_vram(gpus, pids) if gpus else None,
            "ram_used": (ram["ram_total"] - ram["ram_available"]) if ram.get("ram_total") else None,
            "ram_available": ram.get("ram_available"), "rss": ram.get("tree_rss"),
            "phase": beat.get("phase"), "epoch": beat.get("epoch"), "batch": beat.get("batch"),
            "it_s": round(beat["it_s"], 3) if beat.get("it_s") else None})

    def _trained_note(self) -> str:
        """For an ending that leaves a fully trained model behind: where it is."""
        source = self.state.get("training_model")
        m = self.state.get("models", {}).get(source or "")
        if not m or m["epochs_done"] < m["epochs"]:
            return ""
        return (f"; {Path(source).name} finished training (its final validation is owed): "
                f"{m['save_dir']}/weights/best.pt and last.pt")

    def _model_rung(self, i: int) -> int:
        """For a validation attempt: the rung whose model is being finished (the last trained one)."""
        source = self.state.get("training_model")
        for j, r in enumerate(self.rungs):
            if r.model.source == source:
                return j
        return i

    def _spec(self, rung: Rung, n: int, mode: str, model_rung: Rung) -> dict:
        trained = replace(rung, model=model_rung.model, epochs=model_rung.epochs) if mode == "validate" else rung
        spec = spec_mod.build(self.ladder.job, trained, self.device, self.paths, n, vram_gib=self.vram_gib, mode=mode,
                              inject=self.injections)
        if mode == "train":
            self.state["training_model"] = rung.model.source
            self.state.get("models", {}).get(rung.model.source, {}).pop("set_aside", None)  # taken up again
        return spec

    def _resume_point(self, spec: dict) -> str | None:
        last = Path(spec["train_args"]["save_dir"]) / "weights" / "last.pt"
        return str(last) if last.exists() else None

    def _record_model(self, spec: dict, outcome: Outcome) -> None:
        models = self.state.setdefault("models", {})
        source = spec["train_args"]["model"]
        m = models.setdefault(source, {"save_dir": spec["train_args"]["save_dir"], "epochs": spec["train_args"][
            "epochs"], "epochs_done": 0, "complete": False})
        if outcome.last_saved_epoch:
            m["epochs_done"] = max(m["epochs_done"], outcome.last_saved_epoch)
        if outcome.failure is None:
            m.update(complete=True, epochs_done=m["epochs"])

    def _set_aside_if_abandoned(self, old: Rung, new: Rung) -> None:
        if old.model.source == new.model.source:
            return
        m = self.state.get("models", {}).get(old.model.source)
        if m and m["epochs_done"]:
            m["set_aside"] = True
            self.events.append("model_set_aside", model=old.model.spec, epochs_done=m["epochs_done"],
                               of=m["epochs"], save_dir=m["save_dir"], next_model=new.model.spec)
            self.say(f"setting aside {old.model.spec} after {m['epochs_done']}/{m['epochs']} epochs (kept in "
                     f"{m['save_dir']}); continuing with {new.model.spec}")

    # ---- endings --------------------------------------------------------------------------------
    def _complete(self, outcome: Outcome) -> int:
        report = outcome.report or {}
        source = self.state.get("training_model")
        best, last = report.get("best"), report.get("last")
        self.state.update(status="complete", delivered={"model": source, "best": best, "last": last})
        self._save_state()
        aside = {s: m for s, m in self.state.get("models", {}).items() if s != source and m.get("set_aside")}
        self.events.append("complete", rung=outcome.rung, model=source, best=best, last=last,
                           set_aside={s: m["epochs_done"] for s, m in aside.items()})
        self.summary("complete")
        self.say(f"trained: {best}\nlauncher: last checkpoint: {last}\nlauncher: run record: {self.paths.root}")
        return EXIT_OK

    def _finish(self, code: int, status: str, why: str) -> int:
        self.state.update(status=status, reason=why)
        self._save_state()
        self.events.append(status, reason=why, exit_code=code)
        self.summary(status)
        self.say(f"{status}: {why}")
        self.say(f"run record: {self.paths.root}")
        return code

    def summary(self, status: str) -> None:
        lines = [f"summary of run {self.ladder.job.name!r} ({status}):"]
        for o in self.outcomes:
            how = "ok" if o.failure is None else f"{o.failure.kind}: {o.failure.evidence[:100]}"
            lines.append(f"  attempt {o.attempt:>2}  {o.rung:<12} {o.mode:<8} {o.seconds:7.1f} s  "
                         f"epochs saved {o.epochs_saved}  {how}")
        current = self.state.get("training_model")
        for source, m in self.state.get("models", {}).items():
            what = ("delivered" if source == current and status == "complete" else "set aside" if m.get("set_aside")
                    else "complete" if m["complete"] else "in progress: run again to continue" if source == current
                    else "")
            lines.append(f"  model {Path(source).name}: {m['epochs_done']}/{m['epochs']} epochs {what} "
                         f"({m['save_dir']})".rstrip())
        for line in lines:
            self.say(line)

    def _save_state(self) -> None:
        self.state["updated"] = now_iso()
        write_json_atomic(self.paths.state, self.state)

    # ---- signals --------------------------------------------------------------------------------
    def _install_signals(self) -> None:
        self._old = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _on_signal(self, sig, frame) -> None:
        if self.received is None:
            self.received = sig
            self.say(f"received {signal.Signals(sig).name}: stopping the child (grace {GRACE_S:.0f} s)")
            if self.child:
                self.child.signal(sig)  # SIGINT/SIGTERM: the child ends without finalising its checkpoint
                self._timer = threading.Timer(GRACE_S, self.child.stop, args=(0,))  # then the whole tree
                self._timer.daemon = True
                self._timer.start()
            self._stopping.set()  # ends a retry's wait at once


def check_continuation(state: dict, ladder: Ladder, state_path: Path, epochs: int | None) -> None:
    """A second `run` of the same name continues it; settings Ultralytics would silently ignore
    on resume must not differ."""
    if epochs is not None and epochs != state.get("epochs_override"):
        raise BadInput(f"{state_path}, key 'epochs_override'",
                       f"run {ladder.job.name!r} was started with --epochs {state.get('epochs_override')}, this run "
                       f"asks {epochs} (a resumed checkpoint keeps its own)",
                       "run again without --epochs to continue, or start afresh with --fresh")
    if str(ladder.job.dataset) != state.get("data"):
        raise BadInput(f"{state_path}, key 'data'",
                       f"run {ladder.job.name!r} trains on {state.get('data')}, this run asks {ladder.job.dataset} "
                       "(a resumed checkpoint keeps its own)",
                       f"pass --data {state.get('data')} to continue, or start afresh with --fresh")

