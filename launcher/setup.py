"""Run set-up: from what the user asked to a plan, and for `run` to a run record ready for the
supervisor (docs/design.md, "Data flow"). The probe, the plan, the learned rungs, the continuation
check of a run that stopped, the run lock and the first events all happen here; cli.py only parses
and dispatches, and the supervisor only runs the loop.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from . import dataset as dataset_mod
from . import checkpoint, console, experience, ladder as ladder_mod, models, overrides, plan as plan_mod, probe
from . import proctree, slurm
from . import spec as spec_mod
from .contract import EXIT_BAD_INPUT
from .errors import BadInput, LauncherError
from .ladder import Ladder, gpu_indices
from .runlog import NOT_RUN_NAMES, RUNNING, Ev, Events, ModelRecord, RunLock, RunPaths, RunState, now_iso
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
    demo: bool = False  # run only
    fresh: bool = False  # run only
    inject: tuple[dict, ...] = ()  # run only
    overrides: tuple[str, ...] = ()  # Ultralytics' key=value training arguments, for every rung
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
              dry: bool = True) -> DryRun:
    """What dry-run shows and run starts from: the probe, the plan, the first attempt's spec. Its
    problems are all that run would refuse before it starts (records_met); `dry`: its warnings also
    say the arguments of the stopped run it would continue (run says that line itself)."""
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
        learned = experience.Experience(experience.store_path(), experience.job_key(ladder, gpus, snap))
    plan = plan_mod.choose(ladder, snap, device=req.device, start_rung=req.start_rung,
                           dataset_images=data.images if data else None, dataset_problem=problem,
                           avoid=learned.avoid() if learned else None)
    plan = replace(plan, problems=plan.problems + refused)  # dry-run exits 2 where run would refuse
    warnings = overrides.warnings(ladder.job.imgsz, ladder.job.args, plan.device) + said
    if plan.start is None:
        return DryRun(snap, ladder, plan, data, None, None, {}, [], learned, warnings)
    paths, start, attempt = RunPaths.for_run(ladder.job.name), plan.start, 1
    if req.fresh and has_run(paths):  # the new run beside it (_prepare)
        ladder = replace(ladder, job=replace(ladder.job, name=fresh_name(ladder.job.name)))
        paths = RunPaths.for_run(ladder.job.name)
    elif state is not None and continues(state) and not refused:  # its next attempt, where it stopped
        start, attempt = continued_rungs(req, state, ladder, plan.rungs)[resume_at(state, ladder)], state.attempts + 1
    spec = spec_mod.build(ladder.job, start, plan.device, paths, attempt=attempt, vram_gib=req.vram)
    env = {**extra_env(req), **spec_mod.env(start, paths.spec(attempt))}  # as the supervisor starts it
    return DryRun(snap, ladder, plan, data, spec, paths.spec(attempt), env, spec_mod.command(paths.spec(attempt)),
                  learned, warnings)


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
        paths = RunPaths.for_run(name)
    lock = RunLock(paths.lock)
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        held = lock.acquire()
    except OSError as e:
        raise BadInput(str(e.filename or paths.root), f"the run record cannot be written there ({e.strerror})",
                       "make logs/ writable, or run from a folder where it can be") from None
    if not held:
        raise running(ladder.job.name, lock)
    try:
        return _take_up(req, ladder, result, paths, lock, child_env, say)
    except BaseException:
        lock.release()  # refused after all: the next try must not find the run "already running"
        raise


def _take_up(req: Request, ladder: Ladder, result: DryRun, paths: RunPaths, lock: RunLock,
             child_env: dict[str, str], say: Callable[[str], None]) -> Prepared:
    """The locked run's record: a finished run, a continued one, or a new one."""
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
                prepared.experience = experience.Experience(prepared.experience.path, experience.job_key(
                    prepared.ladder, plan.gpus, result.snap))
    else:
        prepared.start = ladder.index(plan.start.name)
        prepared.state = RunState(run=ladder.job.name, ladder=str(ladder.path), data=str(ladder.job.dataset),
                                  device=plan.device, rung=plan.start.name, epochs_override=req.epochs,
                                  overrides=req.args, folder=str(paths.root), started=now_iso())
        events.append(Ev.PROBE, **result.snap.to_json())
        events.append(Ev.START, rung=plan.start.name, device=plan.device, reasons=list(plan.reasons),
                      cache=plan.cache.to_json(), ladder=str(ladder.path), data=str(ladder.job.dataset),
                      inject=list(req.inject))
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


def rebuild(ladder: Ladder, paths: RunPaths, epochs: int | None, device: str, say: Callable[[str], None],
            args: dict | None = None) -> RunState | None:
    """A run whose state.json is gone but whose attempts or checkpoints are there: its record,
    rebuilt from what the checkpoints say of themselves (their epochs; the dataset the run read),
    so that a different request is refused and new attempts get new numbers. None for a new run.
    Nothing is written here: `rebuilt` records it once the run's checks have passed (met)."""
    numbers = [int(p.name.removeprefix("attempt-")) for p in paths.root.glob("attempt-*")
               if p.name.removeprefix("attempt-").isdigit()]
    lasts = sorted(paths.root.glob("models/*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if not numbers and not lasts:
        return None
    models: dict[str, ModelRecord] = {}
    trained: set[int] = set()
    training = None  # the model of the newest checkpoint
    for last in lasts:
        save_dir = last.parent.parent
        for candidate in (last, paths.verified(save_dir)):
            try:
                facts = checkpoint.facts(candidate)
                break
            except ValueError:
                continue
        else:
            say(f"warning: {last} cannot be read; the record is rebuilt without it")
            continue
        own, epoch = facts["train_args"], facts["epoch"]
        for key, value in (args or {}).items():  # Ultralytics resumes with the checkpoint's own
            if key in own and own[key] != value:
                raise BadInput(str(last), f"run {ladder.job.name!r} has no state.json, and this checkpoint was "
                               f"trained with {key}={own[key]} (its own training arguments); this run asks "
                               f"{key}={value}", "run again without key=value arguments to continue, or start "
                               "afresh with --fresh")
        source = _source_of(save_dir, ladder, paths, str(own.get("model")))
        training = source
        trained.add(int(own.get("epochs", 0)))
        models[source] = ModelRecord(
            save_dir=str(save_dir), epochs=int(own.get("epochs", 0)),
            epochs_done=int(own.get("epochs", 0)) if epoch == -1 else epoch + 1, complete=epoch == -1)
        if epochs is not None and epochs != int(own.get("epochs", 0)):
            raise BadInput(str(last), f"run {ladder.job.name!r} has no state.json, and this checkpoint was trained "
                           f"for {own.get('epochs')} epochs (its own training arguments); this run asks "
                           f"{epochs} epochs", "run again without --epochs or epochs=N to continue, or start afresh "
                           "with --fresh")
    data = _dataset_read(paths)
    if data is not None and data != str(ladder.job.dataset):
        raise BadInput(str(paths.dataset), f"run {ladder.job.name!r} has no state.json, and it trained on {data}; this "
                       f"run asks {ladder.job.dataset}", f"pass --data {data} to continue, or start afresh with --fresh")
    own = {r.epochs for r in ladder.rungs if r.model.source in models}
    override = epochs if epochs is not None else (next(iter(trained)) if len(trained) == 1 and own != trained
                                                   else None)
    newest = _newest_spec(paths, numbers)
    rung = newest.get("rung") if newest.get("rung") in [r.name for r in ladder.rungs] else next(
        (r.name for r in ladder.rungs if r.model.source == training), ladder.rungs[0].name)
    state = RunState(run=ladder.job.name, ladder=str(ladder.path), data=str(ladder.job.dataset), device=device,
                     rung=rung, epochs_override=override, attempts=max(numbers, default=0), models=models,
                     training_model=training, started=now_iso(), overrides=_arguments_of(newest, ladder, args),
                     folder=str(paths.root))
    return state


def rebuilt(state: RunState, ladder: Ladder, events: Events, say: Callable[[str], None]) -> None:
    """A rebuilt record (rebuild), checked: said and recorded (`rebuilt`)."""
    events.append(Ev.REBUILT, attempts=state.attempts, models={s: m.epochs_done for s, m in state.models.items()},
                  epochs_override=state.epochs_override)
    say(f"rebuilt the record of run {ladder.job.name!r} from its checkpoints (state.json was missing): "
        f"{state.attempts} attempt(s) so far, " + ", ".join(f"{Path(s).name} epochs done {m.epochs_done}/{m.epochs}"
                                                            for s, m in state.models.items()))


def _source_of(save_dir: Path, ladder: Ladder, paths: RunPaths, fallback: str) -> str:
    """The ladder's model source whose folder this is (after a resume, Ultralytics' own train_args
    name last.pt itself, not the model)."""
    for rung in ladder.rungs:
        if paths.save_dir(rung.model.source) == save_dir or save_dir.name == Path(rung.model.source).stem:
            return rung.model.source
    return fallback


def _newest_spec(paths: RunPaths, numbers: list[int]) -> dict:
    for n in sorted(numbers, reverse=True):
        try:
            spec = json.loads(paths.spec(n).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(spec, dict):
            return spec
    return {}


def _arguments_of(spec: dict, ladder: Ladder, asked: dict | None) -> dict:
    """The run's key=value arguments: the ones asked now, else what its newest attempt trained with
    beyond the ladder's [job.args]."""
    if asked:
        return dict(asked)
    extra = spec.get("extra_args") if isinstance(spec.get("extra_args"), dict) else {}
    return {k: v for k, v in extra.items() if ladder.job.args.get(k) != v}


def _dataset_read(paths: RunPaths) -> str | None:
    """The dataset YAML a run read, from the header of its resolved copy (dataset.write_resolved)."""
    try:
        first = paths.dataset.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return first.removeprefix(dataset_mod.RESOLVED_HEADER) if first.startswith(dataset_mod.RESOLVED_HEADER) else None


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


def has_run(paths: RunPaths) -> bool:
    """Whether a run of this name exists: its record, or attempts and checkpoints without one."""
    return paths.state.exists() or any(paths.root.glob("attempt-*")) or any(paths.root.glob("models/*"))


def runs_elsewhere(name: str, dataset: Path, chosen: bool) -> list[tuple[RunPaths, RunState]]:
    """The run records on this dataset in the other places `status` looks (status.places), newest
    first in each: named `name`; and, when this run's name is not `chosen` by --name, those whose
    own name no one chose either (the one the launcher gives a run on its dataset, default_name),
    found by their dataset. A run someone named is found by its name only. A new run must not begin
    at epoch 0 beside one that would go on where it stopped (docs/design.md, "The run record"). A
    record that cannot be read is not this one."""
    from .status import places  # the one list of where records are looked for
    found = []
    for folder in places()[1:]:
        for path in sorted(folder.glob("*/state.json"), key=lambda p: -p.stat().st_mtime):
            if path.parent.name != name and (chosen or path.parent.name != default_name(str(dataset))):
                continue
            try:
                state = RunState.load(path)
            except BadInput:
                continue
            if state is not None and state.data == str(dataset):
                found.append((RunPaths(path.parent), state))
    return found


def elsewhere(ladder: Ladder, chosen: bool) -> tuple[BadInput | None, RunPaths | None, str | None]:
    """Whether a new run here would begin again what another place holds: (the refusal, the run it
    names; or a note). Refused: a run of it that is running there (its lock held), or one that
    would go on (continues, as from its own folder) with an epoch to resume; one finished or with
    no epoch yet is only noted (docs/design.md, "The run record")."""
    from .runlog import LOGS_ENV, logs_dir
    found = runs_elsewhere(ladder.job.name, ladder.job.dataset, chosen)
    here, name = logs_dir(), ladder.job.name
    for paths, state in found:
        folder, again = paths.root.parent, "" if paths.root.name == name else f" with --name {paths.root.name}"
        there = f"{LOGS_ENV}={folder}" if os.environ.get(LOGS_ENV) else f"cd {folder.parent}, or set {LOGS_ENV}={folder}"
        if RunLock(paths.lock).is_held():
            return BadInput(f"run {name!r}", f"no record in {here}, but run {paths.root.name!r} on "
                            f"{ladder.job.dataset} is running in {folder}", f"it is running there (watch it: {there}, "
                            "then status); use --name to start another run here"), paths, None
        if continues(state) and any(m.epochs_done > 0 for m in state.models.values()):
            how = "stopped" + ("" if state.status == RUNNING else f" ({state.status})")
            return BadInput(f"run {name!r}", f"no record in {here}, but run {paths.root.name!r} on "
                            f"{ladder.job.dataset} is {how} in {folder} (a new run here would start at epoch 0)",
                            f"continue it there ({there}; then the same command{again}), or pass --fresh to start "
                            "a new run here"), paths, None
    for paths, state in found[:1]:
        how = "stopped before its first epoch" if continues(state) else "finished"
        return None, None, (f"run {paths.root.name!r} on this dataset {how} in {paths.root.parent}; run {name!r} "
                            f"starts anew in {here}")
    return None, None, None


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


def check_continuation(state: RunState, ladder: Ladder, paths: RunPaths, epochs: int | None,
                       args: dict | None = None) -> None:
    """A second `run` of the same name continues it, or says it is finished; settings Ultralytics
    would silently ignore on resume must not differ, or the run would not do what was asked. A
    key=value left out continues as the run was started (_take_up says so): a resume would not
    take a new one anyway (docs/design.md, "Bad input before the night")."""
    state_path = paths.state
    check_arguments(state, ladder, paths, args)
    if epochs is not None and epochs != state.epochs_override:
        had = f"{state.epochs_override} epochs" if state.epochs_override else "the ladder's epochs"
        raise BadInput(f"{state_path}, key 'epochs_override'",
                       f"run {ladder.job.name!r} was started with {had}, this run asks {epochs} epochs "
                       "(a resumed checkpoint keeps its own)",
                       "run again without --epochs or epochs=N to continue, or start afresh with --fresh")
    for rung in ladder.rungs:  # a ladder edited since: Ultralytics' resume ignores a new `epochs`
        m, asked = state.model(rung.model.source), state.epochs_override or rung.epochs
        if m and m.epochs != asked:
            raise BadInput(f"{ladder.path}: rung {rung.name!r}, epochs", f"asks {asked}, but run {ladder.job.name!r} "
                           f"trains {Path(rung.model.source).name} for {m.epochs} ({m.epochs_done} done; a resumed "
                           "checkpoint keeps its own)", f"set epochs = {m.epochs} again to continue, or start afresh "
                           "with --fresh")
    folders: dict[str, str] = {}
    for source, m in state.models.items():
        other = folders.setdefault(str(Path(m.save_dir).resolve()), source)
        if other != source and state.status != Ev.COMPLETE:  # a finished run writes no checkpoint again
            raise BadInput(f"{state_path}, key 'models'", f"{m.save_dir} holds the checkpoints of both {other} and "
                           f"{source} (a run started before models had folders of their own)",
                           "start afresh with --fresh; the old run stays as it is")
    if str(ladder.job.dataset) != state.data:
        raise BadInput(f"{state_path}, key 'data'",
                       f"run {ladder.job.name!r} trains on {state.data}, this run asks {ladder.job.dataset} "
                       "(a resumed checkpoint keeps its own)",
                       f"pass --data {state.data} to continue, or start afresh with --fresh")


def check_arguments(state: RunState, ladder: Ladder, paths: RunPaths, args: dict | None) -> None:
    """check_continuation's rule for the run's training arguments: a key=value given again must be
    the run's own, and so must a key of the ladder's [job.args] (its newest attempt's, started_args);
    one left out continues as the run was started (own_arguments)."""
    started = {**(started_args(state, paths) or {}), **state.overrides}  # [job.args] too: lr0 there, lr0 here
    changed = {k: v for k, v in (args or {}).items()
               if (k not in started or started[k] != v) and not overrides.resume_takes(k)}
    if changed:
        given = " ".join(f"{k}={v}" for k, v in changed.items())
        had = " ".join(f"{k}={started.get(k, 'unset')}" for k in changed)
        raise BadInput(f"{paths.state}, key 'overrides'", f"run {ladder.job.name!r} was started with {had}, this run "
                       f"asks {given} ({_why(changed)})", "leave them out to continue as started, or start afresh "
                       "with --fresh")
    old = started_args(state, paths)
    for k, v in ladder.job.args.items():
        if old is None or k in (args or {}) or k in state.overrides or (k in old and old[k] == v) or \
                overrides.resume_takes(k):
            continue
        back = f"set {k} = {old[k]!r} again" if k in old else f"remove {k}"
        raise BadInput(f"{ladder.path}: [job.args], key {k!r}", f"run {ladder.job.name!r} was started with "
                       f"{k}={old.get(k, 'unset')} (its newest attempt's spec.json), the ladder now asks {k}={v!r} "
                       f"({_why({k: v})})", f"{back} to continue as started, or start afresh with --fresh")


def taken_arguments(state: RunState, ladder: Ladder, paths: RunPaths, args: dict | None) -> dict:
    """The run's arguments changed now that Ultralytics' resume takes (overrides.resume_takes): {key: (was, now)}."""
    old = started_args(state, paths)
    started = {**(old or {}), **state.overrides}
    given = {k: (started.get(k, "unset"), v) for k, v in (args or {}).items()
             if overrides.resume_takes(k) and (k not in started or started[k] != v)}
    edited = {k: (old.get(k, "unset"), v) for k, v in ladder.job.args.items()
              if old is not None and overrides.resume_takes(k) and k not in (args or {}) and k not in state.overrides
              and (k not in old or old[k] != v)}
    return {**edited, **given}


def taken_line(name: str, taken: dict) -> str | None:
    """The line said of taken_arguments; None: none."""
    return (" ".join(f"{k}={now}" for k, (_, now) in taken.items()) + f" is used from this attempt on (run {name!r} "
            "was started with " + " ".join(f"{k}={was}" for k, (was, _) in taken.items()) + "; Ultralytics' resume "
            "takes it)") if taken else None


def _why(changed: dict) -> str:
    ignored = [k for k in changed if overrides.resume_takes(k) is False]
    return f"Ultralytics' resume ignores {', '.join(ignored)} and keeps the checkpoint's" if ignored else \
        "the launcher continues a run with the arguments it was started with"


def started_args(state: RunState, paths: RunPaths) -> dict | None:
    """The ladder's [job.args] the run trains with: its newest attempt's spec.json extra_args beyond
    its key=value arguments; None when no attempt has a spec."""
    numbers = [int(p.name.removeprefix("attempt-")) for p in paths.root.glob("attempt-*")
               if p.name.removeprefix("attempt-").isdigit()]
    extra = _newest_spec(paths, numbers).get("extra_args")
    return {k: v for k, v in extra.items() if k not in state.overrides} if isinstance(extra, dict) else None


def own_arguments(state: RunState, ladder: Ladder, paths: RunPaths) -> dict:
    """The arguments a continued run keeps: its key=value ones (state.overrides, with those changed
    now that a resume takes: _take_up), and those of the [job.args] it was started with that the
    ladder leaves out now (a resume would keep the checkpoint's anyway)."""
    old = started_args(state, paths) or {}
    return {**{k: v for k, v in old.items() if k not in ladder.job.args}, **(state.overrides or {})}


def kept_arguments(own: dict, args: dict | None) -> str | None:
    """The line `run` says of the run's own arguments left out this time; None: none."""
    kept = {k: v for k, v in own.items() if k not in (args or {})}
    return ("continuing with the run's own " + " ".join(f"{k}={v}" for k, v in kept.items()) +
            " (left out this time: it goes on as it was started)") if kept else None


def records_met(req: Request, ladder: Ladder, data: dataset_mod.Dataset | None,
                dry: bool) -> tuple[tuple[str, ...], tuple[str, ...], Ladder, RunState | None]:
    """What run would refuse, and say, of the run records it meets, before anything starts; dry-run
    says the same (docs/design.md, "Dry-run, status, report"): (problems, lines, the ladder it would
    train, the record it would take up). A new run: one elsewhere it would begin again (elsewhere).
    A run here: whatever `run` refuses of it (met; and a launcher holding it now); else, stopped,
    the arguments it keeps and those it takes anew (taken_arguments), applied to the ladder."""
    paths = RunPaths.for_run(ladder.job.name)
    if req.fresh:
        return (), (), ladder, None
    if not has_run(paths):  # run "again" from another folder (docs/design.md, "The run record")
        refusal, _, note = elsewhere(ladder, chosen=req.name is not None)
        return ((str(refusal),) if refusal else ()), ((note,) if note else ()), ladder, None
    try:
        if RunLock(paths.lock).is_held():  # tested, not taken: run takes it (_prepare)
            raise running(ladder.job.name, RunLock(paths.lock))
        state, _ = met(req, ladder, data, paths, req.device or ladder.job.device or "")
    except BadInput as e:
        return (str(e),), (), ladder, None
    if state is None or not continues(state):
        return (), (), ladder, state
    taken = taken_arguments(state, ladder, paths, req.args)
    own = own_arguments(state, ladder, paths)
    kept = kept_arguments(own, req.args)
    said = ((f"run {ladder.job.name!r} exists: {kept}",) if kept and dry else ()) + \
        tuple(line for line in [taken_line(ladder.job.name, taken)] if line)
    return (), said, with_args(ladder, {**own, **{k: now for k, (_, now) in taken.items()}}), state


def running(name: str, lock: RunLock) -> BadInput:
    """The refusal of a run a launcher holds now."""
    return BadInput(f"run {name!r}", f"already running ({lock.holder()})",
                    "watch it (tail -f its attempt's train.log), stop it first, or use another --name")


def continues(state: RunState) -> bool:
    """Whether a run of this record goes on when run again: every one not finished (an exhausted
    or fatal one too: raising max_attempts goes on, as the supervisor's line says). The one rule
    for a run here (_take_up) and for one elsewhere (elsewhere, with an epoch saved)."""
    return state.status != Ev.COMPLETE


def met(req: Request, ladder: Ladder, data: dataset_mod.Dataset | None, paths: RunPaths, device: str,
        say: Callable[[str], None] = lambda line: None) -> tuple[RunState | None, Path | None]:
    """The record a `run` of `paths` takes up, checked as run checks it, writing nothing: dry-run,
    run and sbatch refuse exactly where this raises (docs/design.md, "The run record"). Returns the
    record (its paths rewritten into this folder: relocate) and the folder it was written in; None
    for a rebuilt one (rebuild) or for no record at all ((None, None): a new run)."""
    state, old = RunState.load(paths.state), None
    if state is not None:
        old = relocate(state, paths)
    else:
        state = rebuild(ladder, paths, req.epochs, device, say, req.args)
        if state is None:
            return None, None
    check_continuation(state, ladder, paths, req.epochs, req.args if req.overrides else None)
    if data is not None:
        check_dataset(data, paths, ladder.job.name)
    if continues(state):
        for key, value in (state.overrides or {}).items():  # a record from before a check (docs/design.md,
            wrong = overrides.refusal(key, value, job_keys=True)  # "Bad input before the night"): as if asked now
            if wrong:
                where = f"{paths.state}, key 'overrides'" if old is not None else \
                    f"{paths.root}: its newest attempt's spec.json, key 'extra_args'"  # a rebuilt record
                raise BadInput(where, f"run {ladder.job.name!r} trains with "
                               f"{key}={value!r}, which is refused now: {wrong[0]}", "start afresh with --fresh "
                               "(the run stays as it is)")
        resume_at(state, ladder)
    return state, old


def resume_at(state: RunState, ladder: Ladder) -> int:
    """The rung a stopped run continues at: its own, else the next available one below it."""
    names = [r.name for r in ladder.rungs]
    if state.rung not in names:
        raise BadInput(str(ladder.path), f"run {ladder.job.name!r} stopped on rung {state.rung!r}, which "
                       f"{ladder.path} no longer has", "restore that rung, or start afresh with --fresh")
    start = names.index(state.rung)
    if not ladder.rungs[start].available:
        below = plan_mod.next_rung(ladder.rungs, start)
        if below is None:
            raise BadInput(f"{ladder.path}: rung {state.rung!r}", f"unavailable ({ladder.rungs[start].model.weights})",
                           "make its model available, or start afresh with --fresh")
        return below
    return start


def relocate(state: RunState, paths: RunPaths) -> Path:
    """The record's paths under the folder it was written in rewritten into this one, in memory
    (adopt writes it once the checks have passed); returns that folder. Every path is checked,
    every time (a record restored by hand may name another run's folder): one outside is refused."""
    old = _written_in(state, paths)
    state.folder = str(paths.root)
    for source, m in state.models.items():
        m.save_dir = str(_moved(Path(m.save_dir), old, paths, f"{paths.state}, key 'models' / {source!r}"))
    for key, where in (state.delivered or {}).items():
        if key != "model" and isinstance(where, str):
            state.delivered[key] = str(_moved(Path(where), old, paths, f"{paths.state}, key 'delivered'"))
    return old


def adopt(state: RunState, old: Path, paths: RunPaths, events: Events, say: Callable[[str], None]) -> None:
    """A record written in another folder (`cp -r logs/A logs/B`, or logs/ moved) becomes this
    folder's own: its run name, and every path it names under the old folder rewritten into this
    one, so that the run writes only inside its own folder and never touches the original. Adopted,
    not refused: a person who copies a run folder means to go on from the copy (the original kept
    as it was), and the copy holds everything that is needed (Ultralytics resumes into the
    save_dir it is given: docs/design.md, "Ultralytics behaviour relied on"). A copy's process list is the
    original's, left alone; a moved folder's is this run's own (the old folder went with it), and
    its processes, which name the old folder's specs, are ended. Its paths were rewritten and the
    request checked before (met, relocate): a refused run writes nothing (docs/design.md, "The run record")."""
    if old == paths.root:
        return
    moved = not old.exists()
    events.append(Ev.ADOPTED, was=str(old), run_was=state.run, moved=moved,
                  tree_left=[] if moved else [r.get("pid") for r in state.tree])
    if moved:
        say(f"{paths.root} holds the record of {old}, which is no longer there (a moved run folder): continuing it "
            f"as run {paths.root.name!r} in its own folder")
        reap(state, old, events, say)  # the moved run's own: the lock that came with it is ours
    else:
        say(f"{paths.root} holds the record of {old} (a copied run folder): continuing it as run "
            f"{paths.root.name!r} in its own folder; {old} is not touched")
    state.run, state.tree = paths.root.name, []
    state.save(paths.state)  # status and report name this folder's files from now on


def _written_in(state: RunState, paths: RunPaths) -> Path:
    """The run folder a record was written in: its own `folder`; for a record older than that
    field, the folder above its models/ (else this one, when the run names match)."""
    if state.folder:
        return Path(state.folder)
    for m in state.models.values():
        if Path(m.save_dir).parent.name == "models":
            return Path(m.save_dir).parent.parent
    return paths.root if state.run == paths.root.name else paths.root.parent / state.run


def _moved(path: Path, old: Path, paths: RunPaths, where: str) -> Path:
    path = Path(os.path.normpath(paths.root / path))  # no `..` out of a folder; a relative path is the folder's
    if path.is_relative_to(paths.root):
        return path
    if path.is_relative_to(old):
        return paths.root / path.relative_to(old)
    raise BadInput(where, f"{path} is outside this run's folder {paths.root} (the record was written in {old})",
                   "start afresh with --fresh; a run writes only inside its own folder")


def check_dataset(ds: dataset_mod.Dataset, paths: RunPaths, name: str) -> None:
    """A continued run trains on the images its first `run` resolved (its dataset.yaml): a
    relative 'path:' resolves against the folder `run` starts in, and from another folder may
    name other images."""
    had, now = dataset_mod.read_resolution(paths.dataset), dataset_mod.resolution(ds)
    if had is None or had == now:
        return
    key = next(k for k in now if had.get(k) != now[k])
    raise BadInput(f"{ds.yaml}, key {key!r}", f"run {name!r} trained on {had.get(key)}; from {Path.cwd()} it "
                   f"resolves to {now[key]} (a relative path resolves against the folder `run` starts in)",
                   f"make it resolve as before (run from the folder the run started in, or set path: "
                   f"{had.get('path')}), or start afresh with --fresh")


def continue_run(state: RunState, ladder: Ladder, paths: RunPaths, events: Events,
                 say: Callable[[str], None]) -> int:
    """A second `run` of a run that stopped (its request checked: check_continuation): same rung,
    resumed from its checkpoint, events appended; first end any process a SIGKILLed launcher left
    behind."""
    start = resume_at(state, ladder)  # checked by met
    # the record is this folder's own (adopt) and this launcher holds its lock
    reap(state, paths.root, events, say)
    if ladder.rungs[start].name != state.rung:
        say(f"rung {state.rung} is unavailable now ({ladder.rung(state.rung).model.weights}); continuing at "
            f"{ladder.rungs[start].name}")
    events.append(Ev.CONTINUE, rung=ladder.rungs[start].name, attempts=state.attempts, status_was=state.status)
    say(f"continuing run {ladder.job.name!r} at rung {ladder.rungs[start].name} (attempt {state.attempts + 1})")
    state.status, state.reason, state.rung = "running", None, ladder.rungs[start].name
    return start


def reap(state: RunState, folder: Path, events: Events, say: Callable[[str], None]) -> None:
    """End what a SIGKILLed launcher of this run left running: of the record's processes, only
    those that name a spec of `folder` (docs/design.md, "The run record"); the list is then done."""
    reaped, spared = proctree.reap_run(state.tree, folder)
    state.tree = []
    if reaped:
        events.append(Ev.REAPED, pids=reaped)
        say(f"ended {len(reaped)} process(es) left by the previous launcher: {reaped}")
    if spared:
        say(f"left {len(spared)} process(es) of the record running, as neither their command line nor their "
            f"environment names a spec of {folder}: {spared}")


def supervise(p: Prepared) -> int:
    """Run the prepared night to its end (the supervisor's loop)."""
    from .supervisor import Supervisor  # subprocess and thread machinery: only `run` needs it

    sup = Supervisor(ladder=p.ladder, rungs=p.rungs, start=p.start, device=p.device, paths=p.paths,
                     vram_gib=p.request.vram, injections=tuple(p.request.inject), child_env=p.child_env,
                     experience=p.experience, slurm_job=p.slurm_job)
    return sup.run(p.state)
