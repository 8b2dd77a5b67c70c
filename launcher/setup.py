"""Run set-up: from what the user asked to a plan, and for `run` to a run record ready for the
supervisor (docs/design.md, "Data flow"). The request, the probe, the plan, the learned rungs, the
run lock and the first events happen here; what a run meets of an existing record (continued,
finished or refused) is continuation.py's, a record's repair (rebuilt, adopted, reaped) is
recovery.py's. cli.py only parses and dispatches, and the supervisor only runs the loop.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import dataset as dataset_mod
from . import checkpoint, console, experience, ladder as ladder_mod, models, overrides, plan as plan_mod, probe
from . import eta, notify, slurm
from . import spec as spec_mod
from .continuation import (continue_run, continues, elsewhere, has_run, kept_arguments, met, own_arguments,
                           records_met, resume_at, running, taken_arguments)
from .contract import EXIT_BAD_INPUT
from .errors import BadInput, LauncherError
from .ladder import Ladder, gpu_indices
from .recovery import adopt, rebuilt
from .runlog import NOT_RUN_NAMES, Ev, Events, RunLock, RunPaths, RunState, now_iso
from .views import DryRun

DEMO_LADDER = ladder_mod.PROJECT_ROOT / "ladders" / "demo.toml"


class Refused(BadInput):
    """The plan has problems that make `run` refuse (each one a line; a BadInput's among them)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: tuple[str, ...], reasons: tuple[str, ...] = ()):
        self.problems, self.reasons = problems, reasons  # reasons: why rungs are out, said after the errors
        LauncherError.__init__(self, "\nerror: ".join(problems))


@dataclass(frozen=True)
class Request:
    """What the user asked, as the command line gives it (dry-run and run)."""

    ladder: str | None = None
    data: str | None = None
    device: str | None = None
    epochs: int | None = None
    name: str | None = None
    start_rung: str | None = None
    vram: float | None = None
    ram: float | None = None
    no_memory: bool = False
    tune: bool | None = None  # run: measure the rungs first: None when nothing stored matches, on a GPU; True, False
    demo: bool = False  # run only
    fresh: bool = False  # run only
    inject: tuple[dict, ...] = ()  # run only
    overrides: tuple[str, ...] = ()  # Ultralytics' key=value training arguments, for every rung
    notify: tuple[str, ...] = ()  # run only: --notify URLs, beside the ladder's [job] notify
    args: dict | None = None  # those arguments parsed and checked, `epochs=N` folded into epochs (settle)


@dataclass
class Prepared:
    """A run ready for the supervisor, or one that is already finished (`finished`)."""

    ladder: Ladder
    rungs: tuple
    start: int
    device: str
    paths: RunPaths
    state: RunState
    lock: RunLock
    request: Request
    child_env: dict[str, str] = field(default_factory=dict)
    experience: experience.Experience | None = None
    finished: bool = False
    slurm_job: slurm.Job | None = None


def demo_ladder(req: Request) -> Request:
    """--demo trains ladders/demo.toml unless a ladder is given. The demo's own ladder, without
    --data, trains on the demo's own dataset (`demo_data`), not where the ladder's path points."""
    if not req.demo:
        return req
    req = replace(req, ladder=req.ladder or str(DEMO_LADDER))
    own = ladder_mod.resolve_ladder_path(req.ladder).resolve() == DEMO_LADDER.resolve()
    return replace(req, data=str(demo_data())) if own and not req.data else req


def demo_data() -> Path:
    """Where --demo makes its synthetic dataset: demo-data/ of the logs folder in use ($RTDETR_LOGS,
    else ./logs), beside the run records, and nowhere else (docs/usage.md, "Ladder files")."""
    from .runlog import DEMO_DATA_NAME, logs_dir
    return logs_dir() / DEMO_DATA_NAME / "shapes.yaml"


def for_demo(req: Request, ladder: Ladder, machine: probe.Snapshot) -> Request:
    """What --demo means past its ladder, for dry-run as for run: its synthetic dataset made at its
    own place (a made one is reused; with another --ladder or --data nothing is made: a ladder's
    dataset folder may be a user's own), and GPU 0 when there is one, else the CPU."""
    if not req.demo:
        return req
    if req.data == str(demo_data()):
        from .demo import make_dataset
        make_dataset(demo_data().parent)
    if not (req.device or ladder.job.device):
        req = replace(req, device="0" if machine.gpus else "cpu")
    return req


def extra_env(req: Request) -> dict[str, str]:
    """What every child of this request gets on top of the launcher's environment, before its
    rung's own (supervisor.Supervisor.child_env); dry-run shows the two together, as run starts them."""
    return {"YOLO_OFFLINE": "1"} if req.demo else {}  # the demo needs no network: YAML models, local data


def settle(req: Request) -> Request:
    """The request with its key=value arguments parsed and checked (once) into `args`, and
    `epochs=N` folded into its epochs."""
    if req.args is not None:
        return req
    args = overrides.parse(req.overrides)
    if "epochs" in args:
        epochs = args.pop("epochs")
        if req.epochs is not None and req.epochs != epochs:
            raise BadInput(f"--epochs {req.epochs} and epochs={epochs}", "two different epoch counts",
                           "give one of them")
        req = replace(req, epochs=epochs)
    return replace(req, args=args)


def with_args(ladder: Ladder, args: dict) -> Ladder:
    """The job with key=value arguments applied: imgsz is the job's, the rest goes to every rung's train()."""
    rest = {k: v for k, v in args.items() if k != "imgsz"}
    job = replace(ladder.job, imgsz=args.get("imgsz", ladder.job.imgsz), args={**ladder.job.args, **rest})
    return replace(ladder, job=job)


def default_name(data: str) -> str:
    """A run named after the user's dataset: its YAML's stem, or its folder for data.yaml-like names."""
    path = Path(data)
    stem = path.parent.name if path.stem.lower() in ("data", "dataset", "config") and path.parent.name else path.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:ladder_mod.RUN_NAME_MAX] or "run"
    return name if name not in NOT_RUN_NAMES else f"{name}-run"


def given_name(req: Request) -> str | None:
    """The run's name when the command gives it: --name, else the --data dataset's (not --demo's)."""
    return req.name or (default_name(req.data) if req.data and not req.demo else None)


def load_job(req: Request) -> Ladder:
    req = settle(req)
    ladder = plan_mod.override_epochs(ladder_mod.load(req.ladder, data=req.data), req.epochs)
    ladder = with_args(ladder, req.args)
    name = given_name(req)
    if name:
        ladder = replace(ladder, job=replace(ladder.job, name=name))
    if req.notify:  # the command line's URLs and the ladder's, each once (notify.merge)
        ladder = replace(ladder, job=replace(ladder.job, notify=notify.merge(ladder.job.notify, req.notify)))
    # weights that would be downloaded on a machine that is offline: that rung is unavailable
    rungs = tuple(replace(r, model=models.check_download(r.model)) for r in ladder.rungs)
    check_weights(ladder)
    return replace(ladder, rungs=rungs)


def check_weights(ladder: Ladder) -> None:
    """Each local .pt a rung starts from is a whole checkpoint (its zip container and every CRC,
    without torch): random bytes or a cut download is bad input now, not a failure in the night."""
    seen: set[Path] = set()
    for rung in ladder.rungs:
        path = models.local_weights(rung.model)
        if path is None or path in seen:
            continue
        seen.add(path)
        damage = checkpoint.zip_damage(path)
        if damage:
            raise BadInput(f"{ladder.path}: rung {rung.name!r}, model", f"{path} is not a readable checkpoint "
                           f"({damage})", "replace it with a complete copy (delete a cut download and fetch it "
                           "again), or point the rung at another model")


def make_plan(req: Request, ladder: Ladder | None = None, machine: probe.Snapshot | None = None,
              dry: bool = True, measured: list | None = None) -> DryRun:
    """What dry-run shows and run starts from: the probe, the plan, the first attempt's spec. Its
    problems are all that run would refuse before it starts (records_met); `dry`: its warnings also
    say the arguments of the stopped run it would continue (run says that line itself). `measured`:
    trials just run (contract.Trial), which decide instead of the stored ones."""
    req = settle(demo_ladder(req))
    ladder = ladder or load_job(req)
    machine = machine or probe.take()
    req = for_demo(req, ladder, machine)
    try:
        data, problem = dataset_mod.inspect(ladder.job.dataset), None
    except BadInput as e:
        data, problem = None, str(e)
    refused, said, ladder, state = records_met(req, ladder, data, dry)
    device = req.device or ladder.job.device
    snap = probe.pretend(machine, req.vram, req.ram, gpu_indices(device) or (0,))
    learned = None
    if not req.no_memory:
        _, gpus, _, _ = plan_mod.select_device(device, snap)
        learned = experience.for_job(ladder, gpus, snap)
    trials = learned.trials() if learned else {}
    if measured is not None:
        trials = {t.rung: (t, now_iso()) for t in measured}
    plan = plan_mod.choose(ladder, snap, device=req.device, start_rung=req.start_rung,
                           dataset_images=data.images if data else None, dataset_problem=problem,
                           avoid=learned.avoid() if learned else None,
                           measured={name: trial for name, (trial, _) in trials.items()})
    ladder = plan_mod.grown_ladder(ladder, plan)  # a grown top rung first ([job] grow)
    plan = replace(plan, problems=plan.problems + refused)  # dry-run exits 2 where run would refuse
    if dry and would_tune(req, plan, trials, state is not None):
        plan = replace(plan, reasons=plan.reasons + (
            "run would first measure the rungs, a short trial each (tune measures them now; --no-tune skips): no "
            "stored measurement matches this machine and job",))
    warnings = overrides.warnings(ladder.job.imgsz, ladder.job.args, plan.device) + said
    if plan.start is None:
        return DryRun(snap, ladder, plan, data, None, None, {}, [], learned, warnings, trials)
    paths, start, attempt = RunPaths.for_run(ladder.job.name), plan.start, 1
    if req.fresh and has_run(paths):  # the new run beside it (_prepare)
        ladder = replace(ladder, job=replace(ladder.job, name=fresh_name(ladder.job.name)))
        paths = RunPaths.for_run(ladder.job.name)
    elif state is not None and continues(state) and not refused:  # its next attempt, where it stopped
        start, attempt = continued_rungs(req, state, ladder, plan.rungs)[resume_at(state, ladder)], state.attempts + 1
    spec = spec_mod.build(ladder.job, start, plan.device, paths, attempt=attempt, vram_gib=req.vram)
    env = {**extra_env(req), **spec_mod.env(start, paths.spec(attempt))}  # as the supervisor starts it
    return DryRun(snap, ladder, plan, data, spec, paths.spec(attempt), env, spec_mod.command(paths.spec(attempt)),
                  learned, warnings, trials)


def would_tune(req: Request, plan: plan_mod.Plan, trials: dict, has_record: bool) -> bool:
    """Whether `run` measures the rungs before the night (docs/design.md, "Tuning: a measured trial
    per rung"): asked with --tune; else on a GPU when nothing stored matches this machine and job,
    for a new run (a continued one keeps the rung it trains on), its start not forced, the learned
    store in use (--no-memory: nothing stored would be found or kept)."""
    if req.tune is False or req.start_rung or has_record or plan.start is None:
        return False
    return req.tune is True or (plan.device != "cpu" and not trials and not req.no_memory)


def tune_first(req: Request, ladder: Ladder, machine: probe.Snapshot, child_env: dict[str, str], result: DryRun,
               paths: RunPaths, say: Callable[[str], None]) -> tuple[DryRun, dict]:
    """The trials of a night's start (`tune.run_trials`, until the first rung that fits, within
    tune.NIGHT_BUDGET_S), stored unless a rehearsal, and the plan they make; with the tuned event.
    `ladder`: as the ladder file gives it, never already grown ([job] grow: to_measure grows its
    top); the trials run its rungs as the plan does (`result.plan.rungs`: the RAM cache decided).
    A signal ends it with tune.Stopped, before the run has any record (the trials that ended are
    stored)."""
    from . import tune
    from .launch import ChildProcess

    t0 = time.monotonic()
    plan = result.plan
    say("tuning: a short trial per rung, from the top until one fits, decides where the night starts "
        "(--no-tune skips; `tune` measures every rung)")
    dataset_mod.write_resolved(result.dataset, paths.dataset)
    store = None if req.inject else result.experience  # a fire drill teaches nothing (experience.note_trials)
    try:
        trials = tune.run_trials(ladder, plan.device, plan.gpus, result.snap.ram_available, paths, until_fit=True,
                                 launch=ChildProcess(out=tune.quiet), settings=tune.TrialPlan.for_device(plan.device),
                                 say=say, child_env=child_env, budget_s=tune.NIGHT_BUDGET_S, rungs=plan.rungs)
    except tune.Stopped as e:
        experience.note_trials(store, e.trials, ladder.job.name)
        raise
    stored = experience.note_trials(store, trials, ladder.job.name)
    result = make_plan(req, ladder, machine, dry=False, measured=trials)
    start = result.plan.start
    return result, dict(trials=[tune.trial_json(t) for t in trials], stored=stored > 0,
                        start=start.name if start else None, val_batch=start.val_batch if start else None,
                        reasons=list(result.plan.reasons), seconds=round(time.monotonic() - t0, 1))


@dataclass
class Tuned:
    """What `tune` measured and what it makes of it."""

    run: str
    device: str
    trials: list
    stored: int
    plan: plan_mod.Plan


def tune_request(req: Request, say: Callable[[str], None] = console.say) -> Tuned:
    """`tune`: a trial of every available rung of the job here (the grown top rung's too, with
    [job] grow), in the run's trials/ folder, under the run's lock; stored for dry-run and run to
    use unless --no-memory; and where a night would start now (docs/design.md, "Tuning: a measured
    trial per rung")."""
    from . import tune
    from .launch import ChildProcess

    req = settle(demo_ladder(req))
    ladder = load_job(req)
    machine = probe.take()
    req = for_demo(req, ladder, machine)
    data = dataset_mod.inspect(ladder.job.dataset)
    device, gpus, _, problems = plan_mod.select_device(req.device or ladder.job.device, machine)
    if problems:
        raise Refused(tuple(problems))
    paths = RunPaths.for_run(ladder.job.name)
    lock = locked(paths, ladder.job.name, "tune")
    store = None if req.no_memory else experience.for_job(ladder, gpus, machine)
    # the rungs as a night runs them: the RAM cache decided by the estimate (plan.decide_cache)
    before = plan_mod.choose(ladder, machine, device=req.device or ladder.job.device, dataset_images=data.images)
    try:
        dataset_mod.write_resolved(data, paths.dataset)
        trials = tune.run_trials(ladder, device, gpus, machine.ram_available, paths, until_fit=False,
                                 launch=ChildProcess(out=tune.quiet), settings=tune.TrialPlan.for_device(device),
                                 say=say, child_env=extra_env(req), rungs=before.rungs)
    except tune.Stopped as e:  # what ended before the signal stands
        experience.note_trials(store, e.trials, ladder.job.name)
        raise
    finally:
        lock.release()
    stored = experience.note_trials(store, trials, ladder.job.name)
    plan = plan_mod.choose(ladder, machine, device=req.device or ladder.job.device, dataset_images=data.images,
                           measured={t.rung: t for t in trials})
    return Tuned(ladder.job.name, device, trials, stored, plan)


def continued_rungs(req: Request, state: RunState, ladder: Ladder, rungs: tuple) -> tuple:
    """The rungs a continued run trains: the plan's, at its own epochs when it was a rehearsal
    (a rehearsal stays a rehearsal) and no --epochs is given now."""
    if req.epochs is None and state.epochs_override:
        return plan_mod.override_epochs(replace(ladder, rungs=rungs), state.epochs_override).rungs
    return rungs


def prepare(req: Request, say: Callable[[str], None] = console.say) -> Prepared:
    """Everything `run` does before the first child: plan, lock, record (new or continued)."""
    req = settle(demo_ladder(req))
    ladder = load_job(req)
    machine = probe.take()
    req = for_demo(req, ladder, machine)
    child_env = extra_env(req)
    check_injections(req.inject, ladder)
    result = make_plan(req, ladder, machine, dry=False)  # run says the continuation's words itself
    held = [f"warning: {line}" for line in result.warnings]
    try:
        prepared = _prepare(req, ladder, machine, child_env, result, _after(held, say))
    except LauncherError as e:  # a refusal's error line first, its warnings after it (issue 18, item 6)
        e.reasons = (*held, *getattr(e, "reasons", ()))
        raise
    for line in held:  # none said yet: the run said nothing of its own
        say(line)
    return prepared


def _after(held: list[str], say: Callable[[str], None]) -> Callable[[str], None]:
    """`say` that first says the held warning lines: they wait until the checks before the run's
    first own line have passed, so that a refusal says its error first (cli.main)."""
    def said(line: str) -> None:
        while held:
            say(held.pop(0))
        say(line)
    return said


def _prepare(req: Request, ladder: Ladder, machine: probe.Snapshot, child_env: dict[str, str], result: DryRun,
             say: Callable[[str], None]) -> Prepared:
    plan = result.plan
    measured = ladder  # the ladder as its file gives it: trials grow its top themselves (tune.to_measure)
    ladder = plan_mod.grown_ladder(ladder, plan)  # a grown top rung first ([job] grow): the ladder trained down
    if plan.device != "cpu" and not machine.gpus:
        raise BadInput(f"--device {plan.device}", f"this machine has no NVIDIA GPU ({machine.nvml}); --vram only "
                       "pretends for dry-run", "pass --device cpu to train on the CPU")
    if plan.problems:  # the errors first, then what dry-run would say: why rungs are out (cli.main)
        raise Refused(plan.problems, tuple(plan.reasons))
    paths = RunPaths.for_run(ladder.job.name)
    if req.fresh and has_run(paths):
        name = fresh_name(ladder.job.name)
        say(f"--fresh: starting run {name!r} beside {ladder.job.name!r} (which stays as it is)")
        ladder = replace(ladder, job=replace(ladder.job, name=name))
        measured = replace(measured, job=ladder.job)
        paths = RunPaths.for_run(name)
    lock = locked(paths, ladder.job.name, "run")
    try:
        tuned = None
        if would_tune(req, plan, result.trials, has_run(paths)):
            result, tuned = tune_first(req, measured, machine, child_env, result, paths, say)
            ladder = result.ladder  # a grown top rung first, where trials measured one that fits
            if result.plan.problems:
                raise Refused(result.plan.problems, tuple(result.plan.reasons))
        return _take_up(req, ladder, result, paths, lock, child_env, say, tuned)
    except BaseException:
        lock.release()  # refused after all: the next try must not find the run "already running"
        raise


def locked(paths: RunPaths, name: str, command: str) -> RunLock:
    """The run's lock, held: its folder made, or a one-line refusal (not writable; a launcher holds it)."""
    lock = RunLock(paths.lock)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        held = lock.acquire()
    except OSError as e:
        raise BadInput(str(e.filename or paths.root), f"the run record cannot be written there ({e.strerror})",
                       f"make logs/ writable, or {command} from a folder where it can be") from None
    if not held:
        raise running(name, lock)
    return lock


def _take_up(req: Request, ladder: Ladder, result: DryRun, paths: RunPaths, lock: RunLock,
             child_env: dict[str, str], say: Callable[[str], None], tuned: dict | None = None) -> Prepared:
    """The locked run's record: a finished run, a continued one, or a new one (`tuned`: the
    trials that chose its start, tune_first's)."""
    plan = result.plan
    events = Events(paths.events)
    state, old = met(req, ladder, result.dataset, paths, plan.device, say) if has_run(paths) else (None, None)
    if state is not None and old is None:  # checked: now its writes (docs/design.md, "The run record")
        rebuilt(state, ladder, events, say)
    elif state is not None:
        adopt(state, old, paths, events, say)
    learned = None if req.inject else result.experience  # a fire drill teaches nothing about the rungs
    prepared = Prepared(ladder, plan.rungs, 0, plan.device, paths, state, lock, req, child_env, learned)
    if state and not continues(state):
        d = state.delivered or {}
        say(f"run {ladder.job.name!r} is already finished; nothing to train (--fresh starts a new run beside it).\n"
            f"launcher: best: {d.get('best')}\nlauncher: last: {d.get('last')}\nlauncher: run record: {paths.root}")
        events.append(Ev.ALREADY_COMPLETE, best=d.get("best"))
        prepared.finished = True
        return prepared
    if state:
        prepared.start = continue_run(state, ladder, paths, events, say)
        prepared.rungs = continued_rungs(req, state, ladder, plan.rungs)
        taken = taken_arguments(state, ladder, paths, req.args)  # said by records_met
        state.overrides.update({k: now for k, (_, now) in taken.items() if k in req.args})  # from now on its own
        own = own_arguments(state, ladder, paths)
        kept = kept_arguments(own, req.args)
        if kept:  # the run's own arguments, left out this time (check_continuation)
            say(kept)
            prepared.ladder = with_args(ladder, own)
            if prepared.experience is not None:  # learned under the arguments the run trains with
                prepared.experience = experience.for_job(prepared.ladder, plan.gpus, result.snap,
                                                         prepared.experience.path)
    else:
        prepared.start = ladder.index(plan.start.name)
        prepared.state = RunState(run=ladder.job.name, ladder=str(ladder.path), data=str(ladder.job.dataset),
                                  device=plan.device, rung=plan.start.name, epochs_override=req.epochs,
                                  overrides=req.args, folder=str(paths.root), started=now_iso())
        events.append(Ev.PROBE, **result.snap.to_json())
        if tuned is not None:
            events.append(Ev.TUNED, **tuned)
        images = result.dataset.train_images if result.dataset else None
        expected = eta.at_start(plan, images)
        events.append(Ev.START, rung=plan.start.name, device=plan.device, reasons=list(plan.reasons),
                      cache=plan.cache.to_json(), ladder=str(ladder.path), data=str(ladder.job.dataset),
                      inject=list(req.inject), eta_s=None if expected is None else round(expected.seconds, 1),
                      speeds=eta.speeds(plan), train_images=images)
        for reason in plan.reasons:
            say(reason)
    job = slurm.Job.here()
    if job is not None:  # a SLURM job: its time limit and preemptions continue the same night
        prepared.slurm_job = job
        if job.id not in prepared.state.slurm_jobs:
            prepared.state.slurm_jobs.append(job.id)
        events.append(Ev.SLURM, job=job.id, restarts=job.restarts, requeues=prepared.state.requeues, t=time.time())
        say(f"SLURM job {job.id}" + (f", requeue number {job.restarts}" if job.restarts else "") +
            f" (requeues so far: {prepared.state.requeues} of at most {ladder.job.max_requeues})")
    dataset_mod.write_resolved(result.dataset, paths.dataset)
    return prepared


def check_injections(injections: tuple[dict, ...], ladder: Ladder) -> None:
    """A fire drill that can never fire is refused: a rung the ladder lacks, an epoch past its last."""
    names = [r.name for r in ladder.rungs]
    for inj in injections:
        what = f"--inject {inj['kind']}:{inj['rung']}:{inj['epoch']}"
        if inj["rung"] not in names:
            raise BadInput(what, f"no rung named '{inj['rung']}'", f"use one of: {', '.join(names)}")
        last = ladder.rung(inj["rung"]).epochs
        if inj["epoch"] > last:
            raise BadInput(what, f"epoch {inj['epoch']} is past rung {inj['rung']}'s last epoch ({last}); it would "
                           "never fire", f"inject at an epoch from 1 to {last}")


def submitted_name(req: Request, ladder: Ladder, data: dataset_mod.Dataset | None) -> str:
    """The run an sbatch script names (docs/design.md, "On a SLURM cluster"), checked now as `run`
    would check it, not after the queue wait. The job's `run` continues that name at every requeue,
    so --fresh is applied here: a new name beside a run of this name here, or beside one of this
    name elsewhere that would refuse the job's `run` (elsewhere). A run here is checked as `run`
    checks it (met), without the probe: a login node has no GPU."""
    name = ladder.job.name
    if has_run(RunPaths.for_run(name)):
        if not req.fresh:
            met(req, ladder, data, RunPaths.for_run(name), req.device or ladder.job.device or "")
        return fresh_name(name) if req.fresh else name
    refusal, other, _ = elsewhere(ladder, chosen=req.name is not None)
    if refusal is not None and not req.fresh:
        raise refusal
    return fresh_name(name) if other is not None and other.root.name == name else name


def fresh_name(name: str) -> str:
    """`--fresh`'s new run name: the old one and a timestamp, within the length a run name may have."""
    stamp = time.strftime("-%Y%m%d-%H%M%S")
    return ladder_mod.run_name(name[:ladder_mod.RUN_NAME_MAX - len(stamp)] + stamp)


def supervise(p: Prepared) -> int:
    """Run the prepared night to its end (the supervisor's loop)."""
    from .supervisor import Supervisor  # subprocess and thread machinery: only `run` needs it

    sup = Supervisor(ladder=p.ladder, planned=p.rungs, start=p.start, device=p.device, paths=p.paths,
                     vram_gib=p.request.vram, injections=tuple(p.request.inject), child_env=p.child_env,
                     experience=p.experience, slurm_job=p.slurm_job)
    return sup.run(p.state)
