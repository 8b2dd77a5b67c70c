"""Record recovery: a run record that is not this folder's own as written, made so before the run
goes on (docs/design.md, "The run record"). A record whose state.json is gone is rebuilt from its
checkpoints and attempts (rebuild, rebuilt); one written in another folder, copied or moved, has
its paths rewritten into this one and becomes its own (relocate, adopt); what a SIGKILLed launcher
of the run left running is ended (reap). What a request may continue is continuation.py's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from . import checkpoint, proctree
from . import dataset as dataset_mod
from .contract import Spec
from .errors import BadInput
from .ladder import Ladder
from .runlog import Ev, Events, ModelPaths, ModelRecord, RunPaths, RunState, now_iso


def rebuild(ladder: Ladder, paths: RunPaths, epochs: int | None, device: str, say: Callable[[str], None],
            args: dict | None = None) -> RunState | None:
    """A run whose state.json is gone but whose attempts or checkpoints are there: its record,
    rebuilt from what the checkpoints say of themselves (their epochs; the dataset the run read),
    so that a different request is refused and new attempts get new numbers. None for a new run.
    Nothing is written here: `rebuilt` records it once the run's checks have passed (met)."""
    numbers = [int(p.name.removeprefix("attempt-")) for p in paths.root.glob("attempt-*")
               if p.name.removeprefix("attempt-").isdigit()]
    found = sorted((m for m in paths.model_dirs() if m.last.exists()), key=lambda m: m.last.stat().st_mtime)
    if not numbers and not found:
        return None
    models: dict[str, ModelRecord] = {}
    trained: set[int] = set()
    training = None  # the model of the newest checkpoint
    for files in found:
        last, save_dir = files.last, files.save_dir
        for candidate in (last, files.verified):
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
    newest = newest_spec(paths, numbers) or Spec()
    rung = newest.rung if newest.rung in [r.name for r in ladder.rungs] else next(
        (r.name for r in ladder.rungs if r.model.source == training), ladder.rungs[0].name)
    state = RunState(run=ladder.job.name, ladder=str(ladder.path), data=str(ladder.job.dataset), device=device,
                     rung=rung, epochs_override=override, attempts=max(numbers, default=0), models=models,
                     training_model=training, started=now_iso(), overrides=_arguments_of(newest, ladder, args),
                     folder=str(paths.root),
                     # the night's tracker run (track.py), as the newest spec named it
                     tracking={k: v for k, v in (newest.track or {}).items() if k == "mlflow"})
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
        own = paths.model(rung.model.source)
        if save_dir in (own.save_dir, own.legacy.save_dir):
            return rung.model.source
    return fallback


def newest_spec(paths: RunPaths, numbers: list[int]) -> Spec | None:
    """The newest of these attempts' spec.json that can be read (None for none): what the run last
    trained with (its rung; its extra_args, for rebuild and continuation.started_args). An earlier
    launcher's or a damaged one reads as far as it can (contract.Spec.from_json)."""
    for n in sorted(numbers, reverse=True):
        spec = Spec.read(paths.spec(n))
        if spec is not None:
            return spec
    return None


def _arguments_of(spec: Spec, ladder: Ladder, asked: dict | None) -> dict:
    """The run's key=value arguments: the ones asked now, else what its newest attempt trained with
    beyond the ladder's [job.args]."""
    if asked:
        return dict(asked)
    return {k: v for k, v in spec.extra_args.items() if ladder.job.args.get(k) != v}


def _dataset_read(paths: RunPaths) -> str | None:
    """The dataset YAML a run read, from the header of its resolved copy (dataset.write_resolved)."""
    try:
        first = paths.dataset.read_text(encoding="utf-8").splitlines()[0]
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return first.removeprefix(dataset_mod.RESOLVED_HEADER) if first.startswith(dataset_mod.RESOLVED_HEADER) else None


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
        if (run := ModelPaths.run_of(m.save_dir)) is not None:
            return run
    return paths.root if state.run == paths.root.name else paths.root.parent / state.run


def _moved(path: Path, old: Path, paths: RunPaths, where: str) -> Path:
    path = Path(os.path.normpath(paths.root / path))  # no `..` out of a folder; a relative path is the folder's
    if path.is_relative_to(paths.root):
        return path
    if path.is_relative_to(old):
        return paths.root / path.relative_to(old)
    raise BadInput(where, f"{path} is outside this run's folder {paths.root} (the record was written in {old})",
                   "start afresh with --fresh; a run writes only inside its own folder")


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
