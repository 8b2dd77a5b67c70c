"""docs/design.md stays true where a test can read it (issue 19): the sections code cites exist, the
`module.name`s it cites are defined there, its event list is `runlog.Ev`'s, and the modules it says
alone import torch, Ultralytics or NVML are the only ones. Read as source (ast), never imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DESIGN = ROOT / "docs" / "design.md"
PACKAGE = ROOT / "launcher"
ULTRALYTICS_CLASSES = {"Model"}  # design.md's `Model.train` is Ultralytics' (engine/model.py), not accounting's
FILE_SUFFIXES = {"json", "jsonl", "yaml", "md", "png", "py", "pt", "toml", "log", "out", "sh", "tsv", "ttf"}


def sections() -> dict[str, str]:
    """design.md's sections by heading, each with its text."""
    parts = re.split(r"^## (.+)$", DESIGN.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def module_file(name: str) -> Path:
    path = PACKAGE / f"{name}.py"
    return path if path.exists() else PACKAGE / name / "__init__.py"


def tree(name: str) -> ast.Module:
    return ast.parse(module_file(name).read_text(encoding="utf-8"))


def defined(node: ast.Module | ast.ClassDef) -> set[str]:
    """Names a module or class body defines (functions, classes, assignments, imports)."""
    out: set[str] = set()
    for n in node.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, ast.Assign):
            out |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            out.add(n.target.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in n.names}
    if isinstance(node, ast.ClassDef):  # and what its methods set on self
        out |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                and isinstance(n.value, ast.Name) and n.value.id == "self"}
    return out


def test_every_section_the_code_cites_is_a_section_of_design_md():
    """A citation of design.md and a heading, in code, tests and docs, names a heading of it (a
    citation may wrap across lines, in a comment too)."""
    headings = set(sections())
    cited: list[tuple[str, str]] = []
    files = [*PACKAGE.rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "docs").glob("*.md"), ROOT / "README.md"]
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r'design\.md\)?,\s*"([^"]+)"', text):
            cited.append((f"{path.relative_to(ROOT)}", re.sub(r"\s*\n\s*(#\s*)?", " ", m.group(1)).strip()))
    for m in re.finditer(r'see "([^"]+)"', DESIGN.read_text(encoding="utf-8")):
        cited.append(("docs/design.md", re.sub(r"\s+", " ", m.group(1))))
    assert len(cited) > 40, cited  # the pattern still finds the citations
    assert [c for c in cited if c[1] not in headings] == []


def test_every_module_name_design_md_cites_is_defined_there():
    """`failures.judge`, `checkpoint.zip_damage`, `RunState.cut`: each names what its module (or
    launcher class) defines, so a name that moved or was renamed fails here."""
    text = DESIGN.read_text(encoding="utf-8")
    modules = {p.stem for p in PACKAGE.glob("*.py")} | {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    classes = {n.name: defined(n) for m in modules for n in ast.walk(tree(m)) if isinstance(n, ast.ClassDef)}
    checked, wrong = 0, []
    for m in re.finditer(r"`([A-Za-z_]\w*)\.(\w+)(?![\w*])", text):
        owner, name = m.groups()
        if name in FILE_SUFFIXES:
            continue
        if owner in modules:
            names = defined(tree(owner))
        elif owner in classes and owner not in ULTRALYTICS_CLASSES:
            names = classes[owner]
        else:
            continue
        checked += 1
        if name not in names:
            wrong.append(f"{owner}.{name}")
    assert checked > 40
    assert wrong == []


def test_the_run_record_lists_every_event_runlog_names():
    ev = next(n for n in ast.walk(tree("runlog")) if isinstance(n, ast.ClassDef) and n.name == "Ev")
    events = {n.value.value for n in ev.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)}
    said = set(re.findall(r"`(\w+)`", sections()["The run record"]))
    assert len(events) > 20
    assert sorted(events - said) == []


def test_the_run_record_lists_every_declared_event_kind_and_its_version():
    from launcher.runlog import EVENTS, EVENTS_VERSION
    said = set(re.findall(r"`(\w+)`", sections()["The run record"]))
    assert sorted(set(EVENTS) - said) == [] and EVENTS_VERSION == 1
    assert "runlog.EVENTS" in sections()["The run record"] and "`v`" in sections()["The run record"]


def importers(*packages: str) -> set[str]:
    """The launcher's files that import one of `packages`, anywhere in them (a lazy import too)."""
    out = set()
    for path in PACKAGE.rglob("*.py"):
        for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in n.names] if isinstance(n, ast.Import)
                     else [n.module or ""] if isinstance(n, ast.ImportFrom) and not n.level else [])
            if any(name.split(".")[0] in packages for name in names):
                out.add(str(path.relative_to(PACKAGE)))
    return out


def test_only_the_modules_design_md_names_import_torch_or_ultralytics_or_nvml():
    """docs/design.md, "Data flow": only child.py, callbacks.py, trial.py, memstats.py (in the child)
    and models/mnv4.py import torch or Ultralytics; probe.py alone reads NVML in the launcher's
    process, memstats.py in the child's."""
    assert importers("torch", "ultralytics") == {"child.py", "callbacks.py", "trial.py", "memstats.py",
                                                 "models/mnv4.py"}
    assert importers("pynvml") == {"probe.py", "memstats.py"}
    flow = re.sub(r"\s+", " ", sections()["Data flow"])
    assert ("Only `child.py`, `callbacks.py`, `trial.py` (the trial child), `memstats.py` (inside the child: "
            "torch's allocator statistics, and NVML for the device's used memory) and `models/mnv4.py` import "
            "torch or Ultralytics") in flow
    assert "`probe.py` is the only code of the launcher's own process that reads NVML" in flow
    for path in sorted(importers("psutil")):  # the others that read psutil are named, with what for
        assert f"`{path}`" in flow, path


def test_the_policy_table_in_design_md_is_plan_policys_rendering():
    """"Failure kinds and policy" shows plan.POLICY, the table decide applies: each kind's "what the
    launcher does", "retries on one rung" and "wait" are `plan.policy_rows()`, row for row, in its
    order (the evidence column is prose). Change either and this fails; copy the rendering over.
    The one test here that imports the launcher: plan is pure and imports neither torch nor NVML."""
    from launcher import plan

    rows = []
    for line in sections()["Failure kinds and policy"].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("| `") else []
        if len(cells) == 5:
            rows.append((cells[0].strip("`"), *cells[2:]))
    assert rows == plan.policy_rows()
