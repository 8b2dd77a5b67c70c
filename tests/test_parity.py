"""Parity: where the launcher re-implements an Ultralytics rule to stay free of torch, it is held
against Ultralytics' own function on the same inputs. An Ultralytics upgrade that changes a rule
fails here (docs/design.md, "Ultralytics behaviour relied on").

Ultralytics reads YOLO_CONFIG_DIR and its settings once, at import: the in-process tests point
its DATASETS_DIR and the launcher's settings.json at the same folder; the settings tests run
Ultralytics in a subprocess with their own environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from launcher import dataset, ladder, models, overrides
from launcher.errors import BadInput

from conftest import ROOT, write

pytest.importorskip("ultralytics")


@pytest.fixture
def ultra(tmp_path, monkeypatch):
    """Ultralytics' dataset check, offline, with its datasets_dir and the launcher's (read from
    settings.json) both at tmp_path/datasets; the cwd an empty folder of its own."""
    import ultralytics.data.utils as du

    from launcher.child import ensure_offline_font

    ensure_offline_font()  # check_font would otherwise look for Arial.ttf on the network
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    monkeypatch.setattr(du, "DATASETS_DIR", datasets)
    write(models.ultralytics_config_dir() / "settings.json", json.dumps({"datasets_dir": str(datasets)}))
    assert Path(models.ultralytics_settings()["datasets_dir"]) == datasets
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return SimpleNamespace(check=lambda y: du.check_det_dataset(str(y), autodownload=False), datasets=datasets,
                           cwd=cwd)


def ultralytics_images(paths) -> list[str]:
    """What Ultralytics' BaseDataset.get_img_files lists for a split (a folder, a .txt list, or a list)."""
    from ultralytics.data.base import BaseDataset

    return BaseDataset.get_img_files(SimpleNamespace(prefix="", fraction=1.0), paths)


def images(root: Path, split: str, n: int) -> Path:
    d = root / "images" / split
    d.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (d / f"{i:03d}.jpg").touch()
    return d


def as_paths(value) -> tuple[Path, ...]:
    return tuple(Path(v) for v in (value if isinstance(value, list) else [value]))


# ---- dataset path resolution: launcher.dataset.inspect vs check_det_dataset ----------------------

def relative_path_from_the_cwd(t: Path) -> Path:
    images(t / "cwd" / "d", "train", 3), images(t / "cwd" / "d", "val", 2)
    return write(t / "cfg" / "data.yaml", "path: d\ntrain: images/train\nval: images/val\nnames: [a]\n")


def relative_path_under_datasets_dir(t: Path) -> Path:
    # not under the cwd: Ultralytics looks in its datasets_dir, not beside the YAML (a decoy there)
    images(t / "datasets" / "d", "train", 3), images(t / "datasets" / "d", "val", 2)
    images(t / "cfg" / "d", "train", 5), images(t / "cfg" / "d", "val", 4)
    return write(t / "cfg" / "data.yaml", "path: d\ntrain: images/train\nval: images/val\nnames: [a]\n")


def absolute_path(t: Path) -> Path:
    images(t / "abs", "train", 4), images(t / "abs", "val", 1)
    return write(t / "cfg" / "data.yaml", f"path: {t / 'abs'}\ntrain: images/train\nval: images/val\nnames: [a, b]\n")


def no_path_key(t: Path) -> Path:
    images(t / "here", "train", 2), images(t / "here", "val", 2)
    return write(t / "here" / "data.yaml", "train: images/train\nval: images/val\nnc: 1\n")


def train_as_a_list(t: Path) -> Path:
    images(t / "d", "train", 3), images(t / "d", "extra", 2), images(t / "d", "val", 1)
    return write(t / "d" / "data.yaml", f"path: {t / 'd'}\ntrain: [images/train, images/extra]\nval: [images/val]\n"
                                        "names: [a]\n")


def train_as_a_txt_list(t: Path) -> Path:
    images(t / "d", "train", 3), images(t / "d", "val", 1)
    write(t / "d" / "train.txt", "\ufeff./images/train/000.jpg\n./images/train/001.jpg\n\nimages/train/002.JPG\n"
                                 "notes/readme.md\n")
    return write(t / "d" / "data.yaml", f"path: {t / 'd'}\ntrain: train.txt\nval: images/val\nnames: [a]\n")


def dotdot_fallback_of_a_string(t: Path) -> Path:
    # '../images/train' missing under path: check_det_dataset drops the '../' of a string value
    images(t / "d", "train", 2), images(t / "d", "val", 1)
    return write(t / "d" / "data.yaml", f"path: {t / 'd'}\ntrain: ../images/train\nval: images/val\nnames: [a]\n")


CASES = [relative_path_from_the_cwd, relative_path_under_datasets_dir, absolute_path, no_path_key, train_as_a_list,
         train_as_a_txt_list, dotdot_fallback_of_a_string]


@pytest.mark.parametrize("make", CASES, ids=[c.__name__ for c in CASES])
def test_dataset_resolves_as_check_det_dataset(make, tmp_path, ultra):
    y = make(tmp_path)
    theirs = ultra.check(y)
    ours = dataset.inspect(y)
    assert ours.root == Path(theirs["path"]).resolve()
    assert ours.train == as_paths(theirs["train"]) and ours.val == as_paths(theirs["val"])
    assert ours.train_images == len(ultralytics_images(theirs["train"]))
    assert ours.val_images == len(ultralytics_images(theirs["val"]))
    assert ours.names == theirs["nc"]


@pytest.mark.parametrize("text, missing", [
    ("path: nowhere\ntrain: images/train\nval: images/val\nnames: [a]\n", "datasets/nowhere/images/"),
    ("path: d\ntrain: images/train\nval: [../images/val]\nnames: [a]\n", "datasets/images/val"),  # no '../' drop in a list
])
def test_where_ultralytics_finds_no_images_the_launcher_refuses_the_same_path(text, missing, tmp_path, ultra):
    images(tmp_path / "datasets" / "d", "train", 1), images(tmp_path / "datasets" / "d", "val", 1)
    y = write(tmp_path / "cfg" / "data.yaml", text)
    with pytest.raises(FileNotFoundError, match="images not found") as theirs:
        ultra.check(y)
    with pytest.raises(BadInput, match="does not exist") as ours:
        dataset.inspect(y)
    assert str(tmp_path / missing) in str(theirs.value) and str(tmp_path / missing) in str(ours.value)


# ---- which files are images ------------------------------------------------------------------------

def test_image_suffixes_are_ultralytics_own():
    from ultralytics.data.utils import IMG_FORMATS
    assert dataset.IMG_FORMATS == frozenset(IMG_FORMATS)


def test_a_folder_counts_the_images_get_img_files_lists(tmp_path):
    d = tmp_path / "train"
    for name in ("a.jpg", "b.JPG", "c.Png", "d e.jpeg", "sub/f.webp", "sub/deeper/g.tif",
                 ".hidden.jpg", ".cache/h.jpg", "sub/.i.png",  # hidden: glob skips them
                 "jpg", "notes.txt", "labels.jpg.txt", "k.jpg.bak"):  # not images by suffix
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).touch()
    elsewhere = tmp_path / "elsewhere"
    images(elsewhere, "x", 2)
    (d / "linked").symlink_to(elsewhere / "images" / "x", target_is_directory=True)  # glob follows it
    theirs = ultralytics_images(str(d))
    assert dataset._count_images(d) == len(theirs) == 8, sorted(theirs)


def test_a_txt_list_counts_the_lines_get_img_files_lists(tmp_path):
    f = write(tmp_path / "list.txt", "\ufeff./a.jpg\n  b.png\nc.JPG \n\nd.txt\n./sub/e.jpeg\nf.jpg g.jpg\njpg\n")
    theirs = ultralytics_images(str(f))
    assert dataset._count_images(f) == len(theirs) == 5, theirs


# ---- the settings folder, settings.json and weights_dir ----------------------------------------------

SETTINGS_PROBE = """
import json
from launcher import models
before = {"dir": str(models.ultralytics_config_dir()), "weights": str(models.ultralytics_weights_dir())}
from ultralytics.utils import SETTINGS, USER_CONFIG_DIR
print(json.dumps({
    "before": before,
    "launcher": {"dir": str(models.ultralytics_config_dir()), "settings": models.ultralytics_settings(),
                 "weights": str(models.ultralytics_weights_dir())},
    "ultralytics": {"dir": str(USER_CONFIG_DIR), "settings": dict(SETTINGS), "weights": SETTINGS["weights_dir"]},
}))
"""


def settings_seen(tmp_path: Path, **env: str) -> dict:
    """The launcher's view before and after Ultralytics' import, and Ultralytics' own, in a fresh process."""
    base = {k: v for k, v in os.environ.items() if k not in ("YOLO_CONFIG_DIR", "XDG_CONFIG_HOME")}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    base.update(HOME=str(home), TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(ROOT), **env)
    out = subprocess.run([sys.executable, "-c", SETTINGS_PROBE], env=base, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def settings_case(tmp_path: Path, case: str) -> dict:
    if case == "YOLO_CONFIG_DIR":
        return {"YOLO_CONFIG_DIR": str(tmp_path / "yolo")}
    if case == "YOLO_CONFIG_DIR with settings":
        write(tmp_path / "yolo" / "Ultralytics" / "settings.json",
              json.dumps({"weights_dir": str(tmp_path / "w"), "datasets_dir": str(tmp_path / "ds")}))
        return {"YOLO_CONFIG_DIR": str(tmp_path / "yolo")}
    if case == "XDG_CONFIG_HOME":
        return {"XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    if case == "~/.config":
        return {}
    if case == "config home not a folder":  # cannot be made: Ultralytics falls back to $TMPDIR/Ultralytics-UID
        return {"XDG_CONFIG_HOME": str(write(tmp_path / "xdg-file", "not a folder"))}
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["YOLO_CONFIG_DIR", "YOLO_CONFIG_DIR with settings", "XDG_CONFIG_HOME",
                                  "~/.config", "config home not a folder"])
def test_settings_folder_and_weights_dir_are_ultralytics_own(case, tmp_path):
    seen = settings_seen(tmp_path, **settings_case(tmp_path, case))
    ours, theirs = seen["launcher"], seen["ultralytics"]
    assert seen["before"]["dir"] == ours["dir"] == theirs["dir"]  # the same folder before Ultralytics ever ran
    assert ours["settings"] == theirs["settings"]
    assert ours["weights"] == theirs["weights"]
    if case == "YOLO_CONFIG_DIR with settings":  # the user's settings, read before Ultralytics' first import
        assert seen["before"]["weights"] == theirs["weights"] == str(tmp_path / "w")


# ---- train arguments: the keys of default.yaml -------------------------------------------------------

def test_train_argument_names_are_ultralytics_own():
    from ultralytics.cfg import DEFAULT_CFG_DICT
    assert overrides.defaults() == DEFAULT_CFG_DICT


def test_train_argument_names_under_an_ascii_locale():
    """default.yaml has non-ASCII characters: read with the locale's encoding it fails (issue 12)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0",
           "PYTHONIOENCODING": "ascii", "PYTHONPATH": str(ROOT)}
    code = "import json; from launcher import overrides; print(json.dumps(sorted(overrides.defaults())))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout) == sorted(DEFAULT_CFG_DICT)


# ---- trainer behaviour the child relies on (read from the source: training is too slow here) ---------

def test_the_switch_that_turns_first_epoch_batch_halving_off_still_works():
    """callbacks.Watch.on_train_epoch_start sets `trainer._oom_retries = 3`: BaseTrainer._do_train
    runs that callback at the top of every pass of its epoch loop, and re-raises an OOM once the
    counter reaches 3, instead of halving the batch."""
    import inspect

    from ultralytics.engine.trainer import BaseTrainer
    src = inspect.getsource(BaseTrainer._do_train)
    loop = src.index("while True:")
    callback = src.index('self.run_callbacks("on_train_epoch_start")')
    halving = src.index("self.args.batch = self.batch_size = max(self.batch_size // 2, 1)")
    assert loop < callback < halving
    assert "or self._oom_retries >= 3 or" in src[callback:halving]
    assert src[callback:halving].count("self._oom_retries = 0") == 0  # nothing resets it after the callback


def test_resume_honours_the_arguments_the_child_passes():
    """child.train resumes with data, batch, imgsz, workers, cache, device and save_dir; check_resume
    keeps `data` and the `allowed` set, and ignores every other argument."""
    import ast
    import inspect
    import textwrap

    from ultralytics.engine.trainer import BaseTrainer
    tree = ast.parse(textwrap.dedent(inspect.getsource(BaseTrainer.check_resume)))
    allowed = next(node.value for node in ast.walk(tree) if isinstance(node, ast.Assign)
                   and getattr(node.targets[0], "id", None) == "allowed")
    names = {e.value for e in allowed.elts}
    assert {"batch", "imgsz", "workers", "cache", "device", "save_dir"} <= names
    assert not {"epochs", "lr0", "model", "name"} & names  # why rungs sharing a model share epochs


# ---- train arguments: Ultralytics' check_cfg, optimizer names, model files ---------------------------

VALUES = [None, True, False, 0, 1, 2, -1, 3, 100, 0.0, 0.5, 1.0, 1.5, -0.5, 2.5, 1e2, float("inf"), float("nan"), "abc",
          "", "SGD", "fp16", "BF16", "8", "int8", "w8a16", "max-autotune", [0.5, 2.0], (0.5, 2.0), [1, 2, 3], [0.5, 0.5],
          [0, 0.5], [10, 0.5, 0.2], [0.5], ["a", "b"]]


def check_cfg_says(key, value) -> str | None:
    from ultralytics.cfg import check_cfg
    try:
        check_cfg({key: value})
    except (TypeError, ValueError) as e:
        return str(e)
    return None


def test_check_cfg_tables_are_read_from_ultralytics_own():
    import ultralytics.cfg as cfg
    rules = overrides.rules()
    for name in overrides.RULE_NAMES:
        assert rules[name] == getattr(cfg, name), name


def test_the_check_cfg_copy_says_what_check_cfg_says_for_every_key_and_many_values():
    """overrides.check_cfg_problem against Ultralytics' check_cfg itself: every key of default.yaml
    (and a few it checks outside it) with values of every type and range, the same verdict and the
    same words."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    differ = []
    for key in sorted(DEFAULT_CFG_DICT) + ["no_such_key"]:
        for value in VALUES:
            theirs, ours = check_cfg_says(key, value), overrides.check_cfg_problem(key, value)
            if theirs != ours:
                differ.append(f"{key}={value!r}: Ultralytics {theirs!r}, launcher {ours!r}")
    assert not differ, "\n".join(differ[:20])
    assert check_cfg_says("lr0", 2) and check_cfg_says("conf", 2) and check_cfg_says("channels_last", 5)  # item 6


def test_every_value_check_cfg_refuses_is_refused_before_the_night_in_its_words():
    """What check_cfg would raise in every child, overrides.refusal says first, with Ultralytics'
    message; keys the launcher refuses whatever their value are its own (issue 17, item 6)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    own = overrides.RUNG_KEYS | overrides.LAUNCHER_KEYS | overrides.JOB_KEYS | {"time"}
    for key in sorted(set(DEFAULT_CFG_DICT) - own):
        for value in VALUES:
            theirs = check_cfg_says(key, value)
            if theirs:
                wrong = overrides.refusal(key, value)
                assert wrong and theirs in wrong[0], (key, value, wrong)


OPTIMIZERS = ["SGD", "sgd", "Adam", "adamw", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "MuSGD", "musgd", "auto",
              "AUTO", "NoSuchOpt", "LBFGS", "Rprop", "Adagrad", "adam ", ""]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_names_are_the_trainers_own(name):
    """BaseTrainer.build_optimizer, called for real on a small model: it raises NotImplementedError
    (in every child, on every rung) exactly for the names the launcher refuses (issue 17, item 5)."""
    import torch
    from ultralytics.engine.trainer import BaseTrainer

    trainer = SimpleNamespace(args=SimpleNamespace(lr0=0.01, momentum=0.9, warmup_bias_lr=0.1), data={"nc": 3})
    model = torch.nn.Module()
    model.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))  # MuSGD reads model[-1]
    try:
        BaseTrainer.build_optimizer(trainer, model, name=name)
        theirs = None
    except NotImplementedError as e:
        theirs = str(e)
    ours = overrides.optimizer_problem("optimizer", name)
    assert (ours is None) == (theirs is None), (name, ours, theirs)
    if theirs:
        assert theirs.startswith(f"Optimizer '{name}' not found in list of available optimizers")
        assert ours.startswith(f"Optimizer '{name}' not found in list of available optimizers")


MODEL_FILES = ["m.pt", "m.PT", "m.pth", "m.pt.bak", "m.bin", "m.safetensors", "m.onnx", "m.ckpt", "m", "m.yaml", "m.YML",
               "m.yml"]


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_files_ultralytics_would_not_train_are_refused(name, tmp_path):
    """RTDETR(file).train() refuses what it takes for an exported model ("should be a *.pt PyTorch
    model") before it looks at any argument; the ladder refuses the same files (issue 17, item 7)."""
    from ultralytics import RTDETR

    path = tmp_path / name
    path.write_bytes(b"not a model")
    try:
        RTDETR(str(path)).train()
        theirs = False
    except TypeError as e:
        theirs = "should be a *.pt PyTorch model" in str(e)
    except Exception:  # noqa: BLE001 - anything else: Ultralytics took the suffix and failed on the content
        theirs = False
    assert ladder.trainable(str(path)) == (not theirs), name


def test_what_ultralytics_raises_from_an_argument_in_every_child_is_fatal(tmp_path):
    """A value that got past the launcher (an older record, another Ultralytics) fails in every
    rung alike: the child's traceback, as Ultralytics raises it, is `fatal`, never a retry or a
    step-down (issue 17: "never unknown")."""
    import traceback

    import torch
    from ultralytics import RTDETR
    from ultralytics.cfg import check_cfg
    from ultralytics.engine.trainer import BaseTrainer

    from launcher import failures
    from launcher.contract import FATAL

    model = torch.nn.Module()
    model.model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    (tmp_path / "m.pth").write_bytes(b"x")
    raisers = [lambda: check_cfg({"lr0": 1.5}), lambda: check_cfg({"patience": -3}),
               lambda: check_cfg({"channels_last": "yes"}), lambda: check_cfg({"lr0": None}),
               lambda: check_cfg({"fraction": 0}), lambda: check_cfg({"amp": "maybe"}),
               lambda: BaseTrainer.build_optimizer(SimpleNamespace(args=SimpleNamespace(lr0=0.01)), model,
                                                   name="NoSuchOpt"),
               lambda: RTDETR(str(tmp_path / "m.pth")).train()]
    for raise_it in raisers:
        try:
            raise_it()
        except Exception as e:  # noqa: BLE001 - whatever Ultralytics raises
            log = "".join(traceback.format_exception(e))
        else:
            raise AssertionError("Ultralytics took it")
        assert failures.classify(log, exit_code=1).kind == FATAL, log


KEY_VALUE_TEXTS = ["[0,2]", "[0, 2]", "(0.5,1.5)", "(0.5, 1.5)", "[0.8,0.2]", "[0.8, 0.2, 0]", "0", "1", "-1", "+1",
                   "3 ", " 3", "1e2", "1e-3", "1E2", ".5", "5.", "0x10", "1_000", "0.0", "1e999", "True", "true",
                   "TRUE", "False", "false", "None", "none", "NONE", "null", "nan", "inf", "-inf", "abc", "SGD",
                   "'quoted'", '"quoted"', "'unterminated", '"unterminated', "a b", "w.pt", "/data/w.pt",
                   "max-autotune", "fp16", "[1,[2]]", "()", "[]", "{}", "{'a': 1}", "{1: 2}", "{0,1}", "b'x'", "1j",
                   "...", "23.cv2", "['23.cv2', 0]", "[0,", "0,2", "[0 2]", "1/2", "2**3", "lambda: 0", "os.SEP",
                   "x" * 300, "9" * 5000]


def test_key_value_reads_as_ultralytics_cli_reads_it():
    """overrides.value_of against ultralytics.cfg.smart_value (what `yolo train key=value` reads,
    after parse_key_value_pair strips it): the same value and the same type for every text; a
    list given as [0,2] must reach train() as a list (issue 17 review: classes='[0,2]' kept no
    labels and the night "trained")."""
    from ultralytics.cfg import smart_value

    differ = [f"{t!r}: Ultralytics {smart_value(t.strip())!r}, launcher {overrides.value_of(t)!r}"
              for t in KEY_VALUE_TEXTS if repr(smart_value(t.strip())) != repr(overrides.value_of(t))]
    assert not differ, "\n".join(differ)
    assert overrides.value_of("[0,2]") == [0, 2] and overrides.value_of("(0.5,1.5)") == (0.5, 1.5)


def test_declared_types_are_read_from_default_yaml():
    """overrides.declared_types reads every key's comment in default.yaml, and each default is of a
    type its comment declares (so the reader reads the comments, not something else)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT
    declared = overrides.declared_types()
    assert set(declared) == set(DEFAULT_CFG_DICT)
    for key, default in DEFAULT_CFG_DICT.items():
        assert default is None or any(overrides.TYPE_TESTS[k](default) for k in declared[key]), (key, declared[key])
    assert declared["pretrained"] == ("bool", "str")


SAMPLES = {"bool": True, "str": "w.pt", "int": 3, "float": 0.5, "list": [0, 2], "tuple": (0.5, 1.5)}


def test_a_value_of_a_type_ultralytics_declares_for_a_key_it_does_not_check_is_taken():
    """Issue 17 review: `pretrained = "w.pt"` (default.yaml: `(bool | str)`) was refused, judged by
    its default's type. For every key check_cfg leaves alone, a value of each declared type that
    Ultralytics' get_cfg takes, the launcher takes."""
    from ultralytics.cfg import DEFAULT_CFG_DICT, get_cfg
    own = overrides.RUNG_KEYS | overrides.LAUNCHER_KEYS | overrides.JOB_KEYS | {"time"}
    refused = []
    for key in sorted(set(DEFAULT_CFG_DICT) - own - overrides.checked_keys()):
        for kind in overrides.declared_types()[key]:
            value = SAMPLES[kind]
            get_cfg(overrides={key: value})  # Ultralytics takes it
            if overrides.refusal(key, value):
                refused.append((key, value, overrides.refusal(key, value)))
    assert not refused, refused
    assert overrides.refusal("pretrained", "w.pt") is None and overrides.refusal("pretrained", 5)


def test_deprecated_arguments_point_to_ultralytics_replacement():
    """Issue 17 review: half=True was refused as no training argument ("did you mean"), though
    Ultralytics' _handle_deprecation turns it into quantize=16. The launcher's pointers are
    Ultralytics' own rewrites, and every key that function rewrites or drops has one."""
    import ast as ast_mod
    import inspect

    from ultralytics.cfg import DEFAULT_CFG_DICT, _handle_deprecation

    for old, new in overrides.DEPRECATED.items():
        key, _, value = new.partition("=")
        out = _handle_deprecation({old: True})
        assert old not in out and key in out and (not value or out[key] == overrides.value_of(value)), (old, out)
        assert overrides.refusal(old, True) == (f"'{old}' is a deprecated Ultralytics argument", f"use {new} instead")
    for old in overrides.REMOVED:
        assert _handle_deprecation({old: True}) == {} and "removed" in overrides.refusal(old, True)[0]
    named = {n.value for n in ast_mod.walk(ast_mod.parse(inspect.getsource(_handle_deprecation)))
             if isinstance(n, ast_mod.Constant) and isinstance(n.value, str) and n.value.isidentifier()}
    rewritten = {k for k in named - set(DEFAULT_CFG_DICT) if _handle_deprecation({k: True}) != {k: True}}
    assert rewritten == set(overrides.DEPRECATED) | overrides.REMOVED


def test_the_image_size_ultralytics_trains_at_is_check_imgszs():
    """overrides.trained_imgsz against the trainer's check_imgsz(imgsz, stride=32, floor=32, max_dim=1)
    for RT-DETR (its largest stride 32, BaseTrainer._setup_train)."""
    from ultralytics.utils.checks import check_imgsz

    for size in [32, 33, 63, 64, 100, 500, 511, 512, 513, 640, 1000, 1279, 1280]:
        assert overrides.trained_imgsz(size) == check_imgsz(size, stride=32, floor=32, max_dim=1), size


@pytest.mark.parametrize("iterations, picked", [(10_000, "AdamW"), (10_001, "MuSGD")], ids=["AdamW", "MuSGD"])
def test_what_optimizer_auto_overrides_is_what_build_optimizer_overrides(iterations, picked):
    """Issue 18, item 3: overrides.AUTO_DECIDES (the arguments dry-run says optimizer=auto
    overrides, and under which optimizer it picks) is what BaseTrainer.build_optimizer does, with
    the warmup's momentum step after it (its last step leaves each group that has a momentum at
    args.momentum: MuSGD's, not AdamW's betas); under a named optimizer each is kept."""
    import inspect

    import torch.nn as nn

    from ultralytics.engine.trainer import BaseTrainer
    from ultralytics.utils import IterableSimpleNamespace

    warmup = 'x["momentum"] = float(np.interp(ni, xi, [self.args.warmup_momentum, self.args.momentum]))'
    assert warmup in inspect.getsource(BaseTrainer._do_train)  # else this test's warmup step below is not its

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Linear(4, 2))

    given = {"lr0": 0.0123, "momentum": 0.55, "warmup_bias_lr": 0.077}

    def build(name: str) -> tuple[dict, dict]:
        me = SimpleNamespace(args=IterableSimpleNamespace(optimizer=name, **given), data={"nc": 3})
        opt = BaseTrainer.build_optimizer(me, Model(), name=name, lr=given["lr0"], momentum=given["momentum"],
                                          iterations=iterations)
        group = opt.param_groups[-1]
        momentum = me.args.momentum if "momentum" in group else group["betas"][0]  # after the warmup
        used = {"lr0": group["lr"], "momentum": momentum, "warmup_bias_lr": me.args.warmup_bias_lr}
        return used, dict(vars(me.args))

    used, args = build("auto")
    overridden = {k for k in given if used[k] != given[k]}
    assert args["optimizer"] == picked
    assert overridden == {k for k, (under, _) in overrides.AUTO_DECIDES.items() if picked in under}, (used, args)
    assert {o for under, _ in overrides.AUTO_DECIDES.values() for o in under} <= overrides.AUTO_PICKS
    used, _ = build("SGD" if iterations > 10_000 else "AdamW")
    assert used == given  # a named optimizer trains with them


def test_what_a_resume_ignores_is_what_check_resume_ignores(tmp_path, monkeypatch):
    """Issue 18, item 3: overrides.resume_takes (False: ignored, which a continued run refuses to change, and
    lets be left out) is BaseTrainer.check_resume's verdict, run on every training key with a
    changed value: a key it takes is not said to be ignored, and one it ignores is."""
    import ultralytics.engine.trainer as trainer
    from ultralytics.cfg import DEFAULT_CFG_DICT
    from ultralytics.utils import LOGGER

    last = write(tmp_path / "last.pt", "")
    monkeypatch.setattr(trainer, "load_checkpoint", lambda path: (SimpleNamespace(args=dict(DEFAULT_CFG_DICT)), None))
    said: list[str] = []
    monkeypatch.setattr(LOGGER, "warning", lambda msg, *a, **k: said.append(str(msg)))

    def changed(value):
        return (not value) if isinstance(value, bool) else value + 1 if isinstance(value, (int, float)) else "other"

    keys = [k for k in DEFAULT_CFG_DICT if k not in {"model", "data", "mode", "resume", "pretrained", "task"}]
    for key in keys:
        me = SimpleNamespace(args=SimpleNamespace(resume=str(last), data=None))
        said.clear()
        trainer.BaseTrainer.check_resume(me, {key: changed(DEFAULT_CFG_DICT[key])})
        ignored = any(f"Resume ignores ['{key}']" in s for s in said)
        taken = getattr(me.args, key) == changed(DEFAULT_CFG_DICT[key])
        assert ignored != taken, (key, said)
        assert (overrides.resume_takes(key) is False) == ignored and overrides.resume_takes(key) == taken, key
    me = SimpleNamespace(args=SimpleNamespace(resume=str(last), data=None))
    trainer.BaseTrainer.check_resume(me, {"pretrained": "other.pt"})  # not taken, though not said either
    assert me.args.pretrained != "other.pt" and overrides.resume_takes("pretrained") is False
