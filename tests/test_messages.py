"""Every fix an error names is a promise: the option, key or step it names exists, and doing what
it says is accepted (issue 18, item 4). Each message is checked against the program itself."""

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from launcher import cli, ladder as ladder_mod, models, overrides, probe, setup
from launcher.contract import GIB
from launcher.errors import BadInput
from launcher.probe import Snapshot

from conftest import ROOT, make_image_tree, write

SOURCES = sorted((ROOT / "launcher").glob("**/*.py"))
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
SBATCH_OWN = {"--time", "--signal"}  # sbatch's own options, which a fix names for after `--`


@pytest.fixture
def cpu_machine(monkeypatch, tmp_path):
    """A machine without GPUs, run from tmp_path, where coco_indoor/ is a small dataset."""
    make_image_tree(tmp_path / "coco_indoor", 4, 2)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(probe, "take", lambda: Snapshot((), 8 * GIB, 6 * GIB, 2, nvml="NVML unavailable"))
    monkeypatch.setattr(models, "reachable", lambda host: True)
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def fix_texts() -> list[tuple[str, str]]:
    """(where, text) of the literal words of every hand-written fix: BadInput's third argument and
    the second item of what overrides.refusal returns."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            part = None
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "BadInput" and len(node.args) >= 3:
                part = node.args[2]
            elif isinstance(node, ast.FunctionDef) and node.name == "refusal":
                for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return)):
                    if isinstance(ret.value, ast.Tuple) and len(ret.value.elts) == 2:
                        found += [(f"{path.name}:{ret.lineno}", s) for s in strings(ret.value.elts[1])]
            if part is not None:
                found += [(f"{path.name}:{node.lineno}", s) for s in strings(part)]
    return found


def strings(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def launcher_options() -> set[str]:
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict)).choices
    return {o for p in (parser, *subs.values()) for a in p._actions for o in a.option_strings}


def test_every_option_a_fix_names_is_one_the_launcher_takes():
    texts = fix_texts()
    assert len(texts) > 60  # the scan sees the messages (a refactor that hides them fails here)
    have = launcher_options() | SBATCH_OWN
    wrong = [(where, o) for where, text in texts for o in OPTION.findall(text) if o not in have]
    assert not wrong


def test_every_ladder_key_a_fix_names_is_one_the_ladder_takes():
    named = [(where, key) for where, text in fix_texts() for key in re.findall(r"\[job\] (\w+)", text)
             if key != "table"]  # "a [job] table"
    assert named and all(key in ladder_mod.JOB_FIELDS for _, key in named), named


@pytest.mark.parametrize("key", sorted(overrides.RUNG_KEYS | overrides.JOB_KEYS))
def test_a_key_a_refusal_sends_to_the_ladder_is_a_key_there(key, tmp_path):
    """'change it in the [[rung]] tables' only for a key a rung takes; `device` is --device's."""
    problem, fix = overrides.refusal(key, 1)
    if "[[rung]]" in fix or "each rung's" in fix:
        assert key in ladder_mod.RUNG_FIELDS
    elif "[job]" in fix:
        assert key in ladder_mod.JOB_FIELDS
    else:
        assert key == "device" and "--device" in fix and "--device" in launcher_options()
    text = f'[job]\nname = "t"\ndataset = "d.yaml"\n[[rung]]\nname = "a"\nmodel = "rtdetr-l.yaml"\nepochs = 1\n' \
           f'batch = 2\n{key} = 1\n'
    if key not in ladder_mod.RUNG_FIELDS:  # the old advice for device: a rung refuses the key
        with pytest.raises(BadInput, match=f"key '{key}'.*unknown key"):
            ladder_mod.parse(__import__("tomllib").loads(text), write(tmp_path / "l.toml", text))


@pytest.mark.parametrize("pair, fix, instead", [
    ("device=cpu", "use --device", ["--device", "cpu"]),
    ("name=foo", "use --name NAME", ["--name", "foo"]),
    ("data=coco_indoor/data.yaml", "use --data PATH", []),
])
def test_a_launcher_key_given_as_key_value_names_the_option_that_works(capsys, cpu_machine, pair, fix, instead):
    code, _, err = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--device", "cpu", pair)
    assert code == 2 and f"argument '{pair}'" in err and f"fix: {fix}" in err
    code, out, err = run(capsys, "dry-run", "--data", "coco_indoor/data.yaml", "--device", "cpu", *instead, "--json")
    assert code == 0, err
    if instead[:1] == ["--name"]:
        assert json.loads(out)["ladder"]["run"] == "foo"


def test_a_missing_dataset_says_what_to_correct_and_the_path_it_names_is_read(capsys, cpu_machine, tmp_path):
    code, out, _ = run(capsys, "dry-run", "--data", "sub/data.yaml", "--device", "cpu")
    line = next(ln for ln in out.splitlines() if "dataset YAML not found" in ln)
    assert code == 2 and str(tmp_path / "sub" / "data.yaml") in line
    assert "pass --data" not in line and "--data PATH (relative to the folder you run in)" in line
    make_image_tree(tmp_path / "sub", 4, 2)  # the fix: the path, relative to the folder run in
    assert run(capsys, "dry-run", "--data", "sub/data.yaml", "--device", "cpu")[0] == 0
    # ... else the ladder's [job] dataset, relative to the ladder's folder (not the one run in)
    lad = write(tmp_path / "ladders" / "l.toml", (ROOT / "ladders" / "default.toml").read_text().replace(
        'dataset = "coco_indoor/data.yaml"', 'dataset = "d/data.yaml"'))
    assert 'dataset = "d/data.yaml"' in lad.read_text()
    code, out, _ = run(capsys, "dry-run", "--ladder", str(lad), "--device", "cpu")
    assert code == 2 and str(tmp_path / "ladders" / "d" / "data.yaml") in out and "[job] dataset" in out
    make_image_tree(tmp_path / "ladders" / "d", 4, 2)
    assert run(capsys, "dry-run", "--ladder", str(lad), "--device", "cpu")[0] == 0


@pytest.mark.parametrize("asked", [["epochs=5"], ["--epochs", "5"]])
def test_other_epochs_on_a_continued_run_name_both_ways_they_are_given(capsys, cpu_machine, tmp_path, asked):
    root = tmp_path / "logs" / "coco_indoor"
    root.mkdir(parents=True)
    (root / "state.json").write_text(json.dumps({
        "run": "coco_indoor", "ladder": str(ROOT / "ladders" / "default.toml"),
        "data": str((tmp_path / "coco_indoor" / "data.yaml").resolve()), "device": "cpu", "status": "interrupted",
        "rung": "optimal", "attempts": 1, "models": {}, "epochs_override": 2}))
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu", *asked)
    assert code == 2 and "started with 2 epochs, this run asks 5 epochs" in err
    assert "--epochs 5" not in err and "run again without --epochs or epochs=N to continue" in err
    # the fix: the same command without them continues the run, with its own epochs
    p = setup.prepare(setup.Request(data="coco_indoor/data.yaml", device="cpu"), say=print)
    try:
        assert p.state.epochs_override == 2 and {r.epochs for r in p.rungs} == {2}
    finally:
        p.lock.release()


def test_the_offline_message_points_at_a_readme_section_that_names_both_files():
    ref = models.check_download(models.ModelRef("rtdetr-l.pt", "ultralytics", "rtdetr-l.pt", True, "x",
                                                download="rtdetr-l.pt", host="github.com", offline_env="YOLO_OFFLINE"))
    section = re.search(r"see README, '([^']+)'", ref.weights).group(1)
    readme = (ROOT / "README.md").read_text()
    body = readme.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    assert "rtdetr-l.pt" in body and models.MNV4_TIMM_MODEL in body


README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLES = [(int(code), cmd) for code, cmd in re.findall(r"^\| (\d+) \|.*e\.g\. `([^`]+)` \|$", README, re.M)]


def test_the_readme_gives_an_exit_code_example_for_bad_input_and_a_fatal_failure():
    assert {code for code, _ in EXAMPLES} >= {0, 2, 4}
    rows = dict(re.findall(r"^\| ([\d /]+) \| (.*) \|$", README, re.M))
    assert "missing dataset" not in rows["4"] and "missing dataset" in rows["2"]


@pytest.mark.parametrize("code, cmd", [pytest.param(c, cmd, marks=[pytest.mark.slow] if cmd.startswith("run ") else [])
                                       for c, cmd in EXAMPLES])
def test_the_readmes_exit_code_examples_exit_so(tmp_path, code, cmd):
    """Each example of the README's exit-code table, run from an empty folder, exits with its code."""
    p = subprocess.run([sys.executable, "-m", "launcher", *shlex.split(cmd)], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == code, p.stdout[-2000:] + p.stderr[-2000:]


def test_the_help_lists_the_readmes_exit_codes():
    readme = {int(c) for row in re.findall(r"^\| ([\d /]+) \|", README, re.M) for c in row.split("/") if c.strip()}
    epilog = cli.build_parser().epilog
    said = {int(c) for c in re.findall(r"\b(\d+)\b", epilog.split("exit codes:", 1)[1])}
    assert said == readme


def test_the_readmes_offline_downloads_are_where_the_launcher_and_ultralytics_look(monkeypatch, tmp_path):
    import inspect as inspect_mod
    from ultralytics.utils import downloads
    release = inspect_mod.signature(downloads.attempt_download_asset).parameters["release"].default
    url = f"https://github.com/{downloads.GITHUB_ASSETS_REPO}/releases/download/{release}/rtdetr-l.pt"
    assert "rtdetr-l.pt" in downloads.GITHUB_ASSETS_NAMES and f"curl -LO {url}`" in README
    # the backbone: the README's curl puts the file where the launcher finds it cached
    cmd = next(ln for ln in README.splitlines() if ln.startswith("curl -L --create-dirs -o ~/.cache/huggingface/hub/"))
    target, source = shlex.split(cmd)[4:6]
    repo = f"timm/{models.MNV4_TIMM_MODEL}"
    assert source == f"https://huggingface.co/{repo}/resolve/main/{models.HF_WEIGHT_FILES[0]}"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    path = Path(target.replace("~", str(tmp_path), 1))
    assert models.cached_weights_file(repo) is None
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    assert models.cached_weights_file(repo) == path


def test_a_relative_dataset_path_resolves_as_usage_md_says(monkeypatch, tmp_path):
    """docs/usage.md: a relative `path:` resolves against the folder you run in, else under datasets_dir."""
    from launcher import dataset as dataset_mod
    usage = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8")
    assert "A relative `path:` inside the dataset YAML resolves as Ultralytics resolves it: against the folder " \
           "you run in, else under `datasets_dir`" in usage and "so write it absolute" in usage
    yaml_file = write(tmp_path / "cfg" / "d.yaml", "path: imgs\ntrain: images/train\nval: images/val\nnames: [a]\n")
    make_image_tree(tmp_path / "here" / "imgs", 2, 1)
    make_image_tree(tmp_path / "sets" / "imgs", 2, 1)
    monkeypatch.setattr(dataset_mod, "ultralytics_settings", lambda: {"datasets_dir": str(tmp_path / "sets")})
    monkeypatch.chdir(tmp_path / "here")
    assert dataset_mod.inspect(yaml_file).root == tmp_path / "here" / "imgs"
    monkeypatch.chdir(tmp_path)
    assert dataset_mod.inspect(yaml_file).root == tmp_path / "sets" / "imgs"


def test_a_deprecated_key_names_a_replacement_ultralytics_takes():
    for old, new in overrides.DEPRECATED.items():
        problem, fix = overrides.refusal(old, True)
        assert fix == f"use {new} instead"
        key, _, value = new.partition("=")
        assert key in overrides.defaults() and overrides.refusal(key, overrides.value_of(value or "true")) is None


def test_a_damaged_run_record_names_fresh_and_fresh_starts_beside_it(capsys, cpu_machine, tmp_path):
    state = tmp_path / "logs" / "coco_indoor" / "state.json"
    state.parent.mkdir(parents=True)
    state.write_text("{cut")
    code, _, err = run(capsys, "run", "--data", "coco_indoor/data.yaml", "--device", "cpu")
    assert code == 2 and "not JSON" in err and "start afresh with --fresh" in err
    p = setup.prepare(setup.Request(data="coco_indoor/data.yaml", device="cpu", fresh=True), say=print)
    try:
        assert p.paths.root.name.startswith("coco_indoor-") and p.state.attempts == 0
    finally:
        p.lock.release()
    assert state.read_text() == "{cut"  # the old run stays as it is


def test_the_readmes_set_up_is_two_commands_and_names_the_slurm_opt_out_the_tests_read():
    block = README.split("## Set up", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    assert block.splitlines() == ['pip install -e ".[dev]" && python -m launcher run --demo', "python -m pytest"]
    assert "RTDETR_SLURM_INSTALL=0` opts out" in README
    assert 'os.environ.get("RTDETR_SLURM_INSTALL", "").strip() != "0"' in (ROOT / "tests" / "slurm.py").read_text()
    assert len(README.splitlines()) <= 150
