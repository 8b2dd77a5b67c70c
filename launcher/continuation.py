"""A run that meets an existing record: whether `run` continues it, says it is finished, or refuses
(docs/design.md, "The run record"; "Bad input before the night"). Its record here, checked as `run`
checks it and writing nothing (met, check_continuation, check_arguments, check_dataset); the
arguments a continued run keeps and those Ultralytics' resume takes anew; a run of it in another
place that a new run here would begin again (elsewhere); and what dry-run says of all this before
anything starts (records_met). The record's own repair (rebuilt, adopted, reaped) is recovery.py's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from . import dataset as dataset_mod
from . import overrides, plan as plan_mod
from .errors import BadInput
from .ladder import Ladder
from .recovery import newest_spec, reap, rebuild, relocate
from .runlog import RUNNING, Ev, Events, RunLock, RunPaths, RunState

if TYPE_CHECKING:
    from .setup import Request


def has_run(paths: RunPaths) -> bool:
    """Whether a run of this name exists: its record, or attempts and checkpoints without one."""
    return paths.state.exists() or any(paths.root.glob("attempt-*")) or any(paths.models.glob("*"))


def runs_elsewhere(name: str, dataset: Path, chosen: bool) -> list[tuple[RunPaths, RunState]]:
    """The run records on this dataset in the other places `status` looks (status.places), newest
    first in each: named `name`; and, when this run's name is not `chosen` by --name, those whose
    own name no one chose either (the one the launcher gives a run on its dataset, default_name),
    found by their dataset. A run someone named is found by its name only. A new run must not begin
    at epoch 0 beside one that would go on where it stopped (docs/design.md, "The run record"). A
    record that cannot be read is not this one."""
    from .setup import default_name  # setup imports this module
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
    its key=value arguments; None when no attempt has a spec, or its extra_args cannot be read (a
    damaged spec says nothing of what the run started with: the check is skipped, not failed)."""
    numbers = [int(p.name.removeprefix("attempt-")) for p in paths.root.glob("attempt-*")
               if p.name.removeprefix("attempt-").isdigit()]
    spec = newest_spec(paths, numbers)
    if spec is None or any(why.startswith("'extra_args'") for why in spec.problems):
        return None
    return {k: v for k, v in spec.extra_args.items() if k not in state.overrides}


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
    from .setup import with_args  # setup imports this module
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
