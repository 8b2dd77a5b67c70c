"""One path owner (issue 19): runlog.ModelPaths spells a model's files and folders, and no other
launcher module builds a path from those names."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher import accounting
from launcher.runlog import EVENTS, Ev, Events, ModelPaths, ModelRecord, RunPaths, RunState, model_folder, read_events

LAUNCHER = Path(__file__).resolve().parent.parent / "launcher"
V1, V2 = "/data/v1/best.pt", "/data/v2/best.pt"


def state(**models: ModelRecord) -> RunState:
    return RunState(run="r", ladder="l.toml", data="d.yaml", device="cpu", rung="a", models=dict(models))


def test_model_paths_give_ultralytics_names_and_the_verified_copy_outside_the_save_dir(tmp_path):
    paths = RunPaths(tmp_path / "run")
    m = paths.model(V1)
    assert m == paths.model(V1)
    assert m.save_dir == paths.root / "models" / model_folder(V1) == paths.save_dir(V1)
    assert m.last == m.save_dir / "weights" / "last.pt" and m.best == m.save_dir / "weights" / "best.pt"
    assert m.results == m.save_dir / "results.csv"
    assert m.verified == paths.root / "checkpoints" / m.save_dir.name / "last.pt" == paths.verified(m.save_dir)
    # a spec's save_dir read alone (the child): the same files, the run from the layout
    alone = ModelPaths.at(str(m.save_dir))
    assert (alone.last, alone.best, alone.verified) == (m.last, m.best, m.verified)
    with pytest.raises(ValueError):  # a save_dir in no run's models/ has no place for a verified copy
        _ = ModelPaths.at(tmp_path / "elsewhere").verified


def test_the_key_is_the_folder_name_and_two_best_pt_models_are_two(tmp_path):
    paths = RunPaths(tmp_path / "run")
    one, two = paths.model(V1), paths.model(V2)
    assert one.key == one.save_dir.name and two.key == two.save_dir.name
    assert one.key != two.key and one.save_dir != two.save_dir and one.verified != two.verified
    assert one.key.startswith("best-") and accounting.model_key(V1) == one.key
    # a model in an earlier launcher's folder keeps the key its source gives: one report row
    assert one.legacy.key == one.key and one.legacy.save_dir.name == "best"


def test_an_earlier_launchers_folder_is_found_when_it_holds_a_checkpoint_no_model_claims(tmp_path):
    paths = RunPaths(tmp_path / "run")
    legacy = paths.model(V1).legacy
    assert legacy.save_dir == paths.root / "models" / "best" and legacy.source == V1
    assert state().save_dir_for(paths, V1) is None  # no checkpoint there: the launcher's own naming
    legacy.last.parent.mkdir(parents=True)
    legacy.last.write_bytes(b"x")
    assert legacy.resume_from == str(legacy.last) and paths.model(V1).resume_from is None
    assert state().save_dir_for(paths, V1) == str(legacy.save_dir)
    assert ModelPaths.run_of(legacy.save_dir) == paths.root
    # claimed by another model of the record (v2/best.pt trained there): not v1's
    assert state(**{V2: ModelRecord(save_dir=str(legacy.save_dir), epochs=3)}).save_dir_for(paths, V1) is None
    # the record's own word first
    assert state(**{V1: ModelRecord(save_dir="/kept/here", epochs=3)}).save_dir_for(paths, V1) == "/kept/here"
    assert [m.save_dir for m in paths.model_dirs()] == [legacy.save_dir]


def test_a_step_down_to_another_model_sets_the_trained_one_aside(tmp_path):
    events, said = Events(tmp_path / "events.jsonl"), []
    old, new = SimpleNamespace(spec="v1/best.pt", source=V1), SimpleNamespace(spec="v2/best.pt", source=V2)
    s = state(**{V1: ModelRecord(save_dir="/m/v1", epochs=10, epochs_done=4)})
    s.set_aside(old, old, events, said.append)  # the same model: nothing set aside
    s.set_aside(old, new, events, said.append)
    assert s.models[V1].set_aside and said == ["setting aside v1/best.pt, epochs done 4/10 (kept in /m/v1); "
                                               "continuing with v2/best.pt"]
    [e] = read_events(events.path)
    assert e.kind == Ev.MODEL_SET_ASIDE and e.get("source") == V1 and e.get("save_dir") == "/m/v1"
    assert set(e.fields) <= set(EVENTS[Ev.MODEL_SET_ASIDE])
    untrained = state(**{V1: ModelRecord(save_dir="/m/v1", epochs=10)})
    untrained.set_aside(old, new, events, said.append)  # no epoch saved: nothing to keep
    assert not untrained.models[V1].set_aside and len(read_events(events.path)) == 1


# ---- the guard: nobody else spells them -----------------------------------------------------------

FILE_NAMES = re.compile(r"(^|[/.])(last|best)\.pt($|[/.-])")  # last.pt, weights/best.pt, .last.pt.tmp
FOLDERS = {"models", "weights", "checkpoints"}
# Literals that name these files without building the launcher's paths, each with why:
ALLOWED = {
    ("callbacks.py", "best.pt"): "the default of Ultralytics' strip_optimizer(f='best.pt'), mirrored by its wrapper",
    ("models/__init__.py", "models"): "Ultralytics' own package folder cfg/models/rt-detr",
}


def _docstrings(tree: ast.AST) -> set[int]:
    return {id(node.body[0].value) for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}


def path_spellings(source: str) -> list[tuple[int, str]]:
    """String constants that build a model path: a whitespace-free token naming last.pt or best.pt
    (prose in a message or a docstring says the file's real name to a person, and is allowed), a
    folder name divided onto a path (`x / "weights"`), or a glob or path through those folders."""
    tree = ast.parse(source)
    docs, found = _docstrings(tree), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value
            if not re.search(r"\s", text) and (FILE_NAMES.search(text) or any(
                    f"{d}/" in text or f"/{d}" in text for d in FOLDERS)):
                found.append((node.lineno, text))
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            for side in (node.left, node.right):
                if isinstance(side, ast.Constant) and side.value in FOLDERS:
                    found.append((side.lineno, side.value))
    return found


def test_no_launcher_module_but_runlog_spells_a_models_files():
    offenders = []
    for path in sorted(LAUNCHER.rglob("*.py")):
        name = str(path.relative_to(LAUNCHER))
        if name == "runlog.py":
            continue
        offenders += [f"{name}:{line}: {text!r}" for line, text in path_spellings(path.read_text(encoding="utf-8"))
                      if (name, text) not in ALLOWED]
    assert not offenders, "build these from runlog.ModelPaths / RunPaths:\n" + "\n".join(offenders)


@pytest.mark.parametrize("code", [
    'last = save_dir / "weights" / "last.pt"',
    'best = f"{save_dir}/weights/best.pt"',
    'lasts = root.glob("models/*/weights/last.pt")',
    'tmp = last.with_name(".last.pt.restoring")',
    'legacy = root / "models" / stem',
])
def test_the_guard_sees_each_way_of_spelling_them(code):
    assert path_spellings(code)


def test_the_guard_leaves_prose_and_keys_alone():
    assert not path_spellings('"""Validate best.pt."""\nsay(f"validate best.pt again at {rung}")\n'
                              'd = {"models": {}, "weights": w}\n')
