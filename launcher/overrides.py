"""Train arguments the user gives Ultralytics: `key=value` on the launcher's command line (`run
--data d.yaml imgsz=512 epochs=80 lr0=0.002`) and the ladder's `[job.args]`. Both are checked here,
by one rule, before anything starts (docs/design.md, "Bad input before the night"): the keys of
Ultralytics' default.yaml, Ultralytics' own `check_cfg` and optimizer names (read from its source
as text, without importing torch; tests/test_parity.py holds them equal), and what the launcher
itself depends on.

`epochs` and `imgsz` given as key=value become the job's (every rung's epochs, the job's image
size); the rest goes to every rung's `model.train()`, over the ladder's [job.args]. Keys a rung owns
(model, batch, workers, cache), device (--device's) and keys the launcher sets (data, save_dir, resume, ...) are
refused, and so are `save=False`, a `time=` other than None and deprecated keys (with their
replacement). A key=value is read as Ultralytics' CLI reads it (`value_of`: `[0,2]` is a list).
"""

from __future__ import annotations

import ast
import difflib
import functools
import math
import re
import unicodedata
from pathlib import Path
from typing import Any

from . import models
from .errors import BadInput

RUNG_KEYS = frozenset({"model", "batch", "workers", "cache", "device"})  # the ladder decides them, per rung
LAUNCHER_KEYS = frozenset({"data", "save_dir", "resume", "project", "name", "exist_ok", "mode", "task", "cfg",
                           "rect"})
JOB_KEYS = frozenset({"epochs", "imgsz"})
# keys Ultralytics' _handle_deprecation still rewrites (with a warning) or drops; tests/test_parity.py holds them
DEPRECATED = {"half": "quantize=16", "int8": "quantize=8", "end2end": "nms=False", "boxes": "show_boxes",
              "hide_labels": "show_labels=False", "hide_conf": "show_conf=False", "line_thickness": "line_width"}
REMOVED = frozenset({"label_smoothing", "save_hybrid", "crop_fraction", "keras"})


@functools.lru_cache(maxsize=1)
def defaults() -> dict[str, Any]:
    """Ultralytics' default.yaml: every training key and its default (its type is the key's type).
    Read with libyaml's loader where PyYAML has it, as Ultralytics' YAML.load reads it (12 ms less
    than the pure-Python one, on every dry-run)."""
    import yaml

    root = models.ultralytics_package_dir()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        data = yaml.load((root / "cfg" / "default.yaml").read_text(encoding="utf-8"), Loader=loader) if root else None
    except (OSError, yaml.YAMLError):
        data = None
    return data if isinstance(data, dict) else {}


def value_of(text: str) -> Any:
    """A value as Ultralytics' CLI reads it (`parse_key_value_pair` strips it, `smart_value` reads
    it): none/true/false in any case, a Python literal (`[0,2]`, `(0.5,1.5)`, `1e-3`), else the text
    as given. A list must reach train() as a list: `classes='[0,2]'` as text keeps no labels at all.
    smart_value's last resort, a `module.CONSTANT` of a module that Ultralytics' CLI has imported, is
    not copied: train() gets no such reading either. tests/test_parity.py holds the two equal."""
    text = text.strip()
    low = text.lower()
    if low == "none":
        return None
    if low in ("true", "false"):
        return low == "true"
    try:
        return ast.literal_eval(text)
    except Exception:  # noqa: BLE001 - as smart_value: whatever literal_eval raises, the text it is
        return text


def parse(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs, checked; BadInput (one line, exit 2) for the first that is wrong."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        where = f"argument {pair!r}"
        if not sep or not key or not text.strip():
            raise BadInput(where, "not in Ultralytics' key=value form", "write it as key=value, e.g. lr0=0.002")
        out[key] = check(key, value_of(text), where, job_keys=True)
    return out


def check(key: str, value: Any, where: str, *, job_keys: bool = False) -> Any:
    """One train argument, as every rung's model.train() would get it: the value (a whole float
    of a whole-number key made an int, as check_cfg makes it), or BadInput at `where`. `job_keys`:
    epochs and imgsz may be given (key=value); in [job.args] they are the ladder's own fields."""
    wrong = refusal(key, value, job_keys=job_keys)
    if wrong:
        raise BadInput(where, *wrong)
    if key in rules().get("CFG_INT_KEYS", ()) and isinstance(value, float):
        return int(value)  # epochs=1e2
    return json_form(value)


def json_form(value: Any) -> Any:
    """The value as the child's spec.json carries it to train(): a tuple as a list (`scale=(0.5,1.5)`;
    a tuple `freeze` Ultralytics would ignore); ValueError naming the type JSON cannot carry."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [json_form(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: json_form(v) for k, v in value.items()}
    raise ValueError(type(value).__name__)


def refusal(key: str, value: Any, *, job_keys: bool = False) -> tuple[str, str] | None:
    """(what is wrong, the fix) for `key = value` as a train argument; None when it may go to every
    rung's model.train(). Ultralytics' own verdicts come with its own words."""
    if _breaks_line(key) or _breaks_line(value):  # first: the words below hold the raw value, on one line
        return f"{key!r}={value!r} holds a control character (a line break, a tab, ...)", "remove it"
    if key == "device":  # the job's, not a rung's: a [[rung]] refuses the key
        return "'device' is the launcher's option", "use --device, e.g. --device 0,1 or --device cpu"
    if key in RUNG_KEYS:
        return (f"'{key}' is set by each rung of the ladder", f"change '{key}' in the ladder's [[rung]] tables "
                "(--ladder FILE); the ladder is the one authority on it")
    if key in LAUNCHER_KEYS:
        return f"'{key}' is the launcher's to set", {"data": "use --data PATH", "name": "use --name NAME"}.get(
            key, "leave it out: the launcher sets it")
    if key in JOB_KEYS and not job_keys:
        return (f"'{key}' is the ladder's own", "set [job] imgsz" if key == "imgsz" else "set each rung's epochs "
                f"(or give {key}=N on the command line)")
    if key in DEPRECATED:
        return f"'{key}' is a deprecated Ultralytics argument", f"use {DEPRECATED[key]} instead"
    if key in REMOVED:
        return f"'{key}' was removed from Ultralytics (it ignores it)", "leave it out"
    known = defaults()
    if known and key not in known:
        near = difflib.get_close_matches(key, list(known), n=2)
        return (f"'{key}' is not an Ultralytics training argument",
                "did you mean " + " or ".join(f"'{k}'" for k in near) + "?" if near else
                "see ultralytics/cfg/default.yaml for the keys")
    if key == "time" and value is not None:  # hours per process: a resumed child would get it afresh
        return ("Ultralytics' time= counts hours in each training process: a child resumed after an OOM or a "
                "requeue would start its clock again, and a short one stops training early and strips the checkpoint",
                "leave it out; a deadline for the whole night is a separate feature (issue 22)")
    default = known.get(key)
    like = f"give a value Ultralytics takes (its default: {default!r})" if default is not None else \
        "give a value Ultralytics takes, or leave it out"
    said = check_cfg_problem(key, value)
    if said:
        return f"Ultralytics refuses it: {said}", like
    said = optimizer_problem(key, value)
    if said:
        return f"Ultralytics refuses it: {said}", f"use one of: {', '.join(sorted(rules()['optimizers']))}"
    if key == "save" and value is not True:
        return ("the launcher resumes from the checkpoints Ultralytics saves each epoch; with save=False it "
                "writes last.pt only after the final epoch, so an OOM would lose the night's training",
                "leave save out")
    try:
        json_form(value)
    except ValueError as e:
        return (f"'{key}' reads as a {e} ({value!r}), which the launcher cannot pass on to Ultralytics",
                "write a list, e.g. [0, 2], a number or a word")
    if isinstance(value, float) and not math.isfinite(value):
        return f"'{key}' takes a finite number, not {value!r}", like
    if key == "imgsz" and (isinstance(value, bool) or not isinstance(value, int) or value < 32):
        return "RT-DETR needs a whole number of pixels, ≥ 32", "e.g. imgsz=640"
    if key not in checked_keys():
        problem = type_problem(key, value, default)  # a key check_cfg leaves alone: its default's type
        if problem:
            return problem, like
    return None


def _breaks_line(value: Any) -> bool:
    """Whether a text, or one inside a list or table, holds a control character or a line separator."""
    if isinstance(value, str):
        return any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in value)
    if isinstance(value, dict):
        return any(_breaks_line(k) or _breaks_line(v) for k, v in value.items())
    return isinstance(value, (list, tuple, set, frozenset)) and any(_breaks_line(v) for v in value)


def checked_keys() -> frozenset[str]:
    """The keys whose values check_cfg checks (the rest: the launcher checks their default's type)."""
    r = rules()
    return frozenset().union(*(r.get(n, ()) for n in ("CFG_FLOAT_KEYS", "CFG_FRACTION_KEYS", "CFG_INT_KEYS",
                                                      "CFG_BOOL_KEYS", "CFG_STR_KEYS")),
                             {"scale", "compile", "amp", "quantize"} if r else ())


def type_problem(key: str, value: Any, default: Any) -> str | None:
    """What is wrong with a value for a key whose default is `default` (None: nothing). A value of a
    type default.yaml's comment declares for the key passes whatever the default's type
    (`pretrained: True # (bool | str)`: a weights path)."""
    if value is None or default is None:
        return None
    kinds = declared_types().get(key, ())
    if any(TYPE_TESTS.get(kind, lambda v: False)(value) for kind in kinds):
        return None
    if len(kinds) > 1:
        return f"'{key}' takes a {' or '.join(kinds)} (Ultralytics' default.yaml), not {value!r}"
    if isinstance(default, bool):
        return None if isinstance(value, bool) else f"'{key}' takes true or false, not {value!r}"
    if isinstance(value, bool):
        return f"'{key}' takes a {type(default).__name__}, not {value!r}"
    if isinstance(default, int):
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return None
        return f"'{key}' takes a whole number, not {value!r}"
    if isinstance(default, float):
        if isinstance(value, (int, float)) and math.isfinite(value):
            return None
        return f"'{key}' takes a number, not {value!r}"
    return None


TYPE_TESTS = {"bool": lambda v: isinstance(v, bool), "str": lambda v: isinstance(v, str),
              "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "list": lambda v: isinstance(v, (list, tuple)), "tuple": lambda v: isinstance(v, (list, tuple))}


@functools.lru_cache(maxsize=1)
def declared_types() -> dict[str, tuple[str, ...]]:
    """The types default.yaml's comment declares for each key: `pretrained: True # (bool | str) ...`
    gives ('bool', 'str'), `(list[int], optional)` gives ('list',). Empty without Ultralytics."""
    root = models.ultralytics_package_dir()
    try:
        text = (root / "cfg" / "default.yaml").read_text(encoding="utf-8") if root else ""
    except (OSError, UnicodeDecodeError):
        text = ""
    return {m[1]: tuple(k.strip().split("[")[0] for k in m[2].split(",")[0].split("|"))
            for m in re.finditer(r"^(\w+):[^#\n]*#\s*\(([^)]*)\)", text, re.M)}


# ---- Ultralytics' own rules, read from its source --------------------------------------------------

RULE_NAMES = ("CFG_FLOAT_KEYS", "CFG_FRACTION_KEYS", "CFG_INT_KEYS", "CFG_INT_MIN", "CFG_BOOL_KEYS", "CFG_STR_KEYS",
              "QUANTIZE_ALIASES", "QUANTIZE_VALID_VALUES")


@functools.lru_cache(maxsize=1)
def rules() -> dict[str, Any]:
    """check_cfg's tables (ultralytics/cfg/__init__.py) and the trainer's optimizer names
    (BaseTrainer.build_optimizer), as literals read from the installed source: importing them
    would import torch (1.5 s). Empty without Ultralytics; a table its version lacks is absent."""
    root = models.ultralytics_package_dir()
    out: dict[str, Any] = {}
    if root is None:
        return out
    for node in _source(root / "cfg" / "__init__.py", names=RULE_NAMES):
        name = node.targets[0].id if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) else ""
        if name in RULE_NAMES:
            out[name] = _literal(node.value)
    for node in _source(root / "engine" / "trainer.py", inside="build_optimizer"):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "optimizers":
            out["optimizers"] = frozenset(_literal(node.value) or ())
    for node in _source(root / "engine" / "trainer.py", inside="check_resume"):
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "allowed":
            out["resume_allowed"] = frozenset(_literal(node.value) or ())  # the rest: "Resume ignores [...]"
    return {k: v for k, v in out.items() if v is not None}


STRIDE = 32  # RT-DETR's largest stride: the trainer's check_imgsz(imgsz, stride=32, floor=32)


def trained_imgsz(imgsz: int) -> int:
    """The image size Ultralytics trains RT-DETR at: rounded up to a multiple of the stride, as
    BaseTrainer's check_imgsz does (with a warning in train.log); tests/test_parity.py holds it."""
    return max(math.ceil(imgsz / STRIDE) * STRIDE, STRIDE)


def warnings(imgsz: int, args: dict[str, Any] | None = None, device: str | None = None) -> tuple[str, ...]:
    """The lines dry-run and run say before the plan: a check that is off (`unread`), an image size
    Ultralytics will round up (not refused: it trains, at the next multiple of 32), and each train
    argument Ultralytics will not use (`unused`)."""
    out = [unread()]
    rounded = trained_imgsz(imgsz)
    if rounded != imgsz:
        out.append(f"imgsz {imgsz} is not a multiple of {STRIDE} (RT-DETR's largest stride): Ultralytics trains at "
                   f"{rounded}; give imgsz={rounded} to say so")
    return tuple(w for w in out if w) + unused(args or {}, device)


# what BaseTrainer.build_optimizer decides itself under optimizer=auto, whatever was given: the key, the
# optimizers auto may pick under which the given value is not what trains, and what is said;
# tests/test_parity.py runs it (and the warmup's momentum step) and holds this table to what it does
AUTO_PICKS = frozenset({"AdamW", "MuSGD"})
AUTO_DECIDES: dict[str, tuple[frozenset[str], str]] = {
    "lr0": (AUTO_PICKS, "is overridden: under optimizer=auto Ultralytics picks lr0 itself (with AdamW or MuSGD, "
                        "by the number of iterations)"),
    # MuSGD (over 10000 iterations) is built with 0.9, but the warmup moves it to the given momentum
    "momentum": (frozenset({"AdamW"}), "is ignored when Ultralytics picks AdamW: under optimizer=auto it picks "
                                       "AdamW (momentum 0.9) for runs of up to 10000 iterations, MuSGD (which uses "
                                       "it after warmup) for longer ones"),
    "warmup_bias_lr": (AUTO_PICKS, "is overridden: under optimizer=auto Ultralytics sets warmup_bias_lr to 0.0"),
}


def resume_takes(key: str) -> bool | None:
    """Whether Ultralytics' resume trains with a new value of `key` (BaseTrainer.check_resume: only
    its `allowed` keys may change; tests/test_parity.py runs it; the child passes the run's
    arguments to the resume): a continued run may change it. False: the resume keeps the
    checkpoint's whatever is given. None when that list cannot be read: a continued run then
    refuses every change, and says of none that a resume ignores it."""
    allowed = rules().get("resume_allowed")
    return None if allowed is None else key in allowed


def unused(args: dict[str, Any], device: str | None) -> tuple[str, ...]:
    """One line per given train argument that Ultralytics' trainer overrides (docs/design.md, "Bad
    input before the night"): accepted, since Ultralytics takes it, but said before the night, so
    that a value that does nothing is not taken for one that trains."""
    out = []
    if str(args.get("optimizer", defaults().get("optimizer", "auto"))).lower() == "auto":
        out += [f"{key}={args[key]!r} {said}; name an optimizer (e.g. optimizer=AdamW) to train with it"
                for key, (_, said) in AUTO_DECIDES.items() if key in args]
    amp = args.get("amp")
    if device == "cpu" and amp is not None and amp is not False and amp not in ("fp32", "bf16"):  # as _setup_train
        out.append(f"amp={amp!r} is overridden: on the CPU Ultralytics' check_amp turns AMP off; leave it out")
    return tuple(out)


def unread() -> str | None:
    """One line when Ultralytics is installed but something the checks read from its source is not
    there (its source changed shape, or a version without it): which checks are off, and why. Said
    by dry-run and run, so that a check silently off is never taken for a check passed."""
    root = models.ultralytics_package_dir()
    if root is None:
        return None
    r = rules()
    missing = ([] if defaults() else ["its keys (cfg/default.yaml)"]) + \
        [f"cfg/__init__.py's {n}" for n in RULE_NAMES if n not in r] + \
        ([] if r.get("optimizers") else ["the optimizer names (engine/trainer.py, build_optimizer)"]) + \
        ([] if r.get("resume_allowed") else ["what a resume takes (engine/trainer.py, check_resume)"])
    if not missing:
        return None
    return (f"the argument check is off for {', '.join(missing)}: not found in the installed Ultralytics' source "
            f"({root}); a value Ultralytics refuses there fails only in the child")


def _source(path: Path, inside: str | None = None, names: tuple[str, ...] = ()) -> list[ast.stmt]:
    """A module's top-level statements (those up to its last assignment to one of `names`, where
    given), or those of its function `inside` (at any depth). Only those lines are parsed where they
    parse alone (`_head`, `_function`): the whole of trainer.py takes 12 ms to parse, cfg/__init__.py
    6 ms, and every dry-run reads them (docs/benchmarks.md)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    own = _function(text, inside) if inside is not None else _head(text, names) if names else None
    if own is not None:
        return own
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    if inside is None:
        return tree.body
    return next((list(ast.walk(n)) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == inside), [])


def _head(text: str, names: tuple[str, ...]) -> list[ast.stmt] | None:
    """The top-level statements of `text` up to the end of its last line-leading assignment to one
    of `names` (a top-level assignment leads its line): those the whole file's statements begin
    with. None where that cut does not parse (inside a string or brackets): the caller parses all."""
    last = None
    for last in re.finditer(rf"^(?:{'|'.join(map(re.escape, names))})[ \t]*=", text, re.M):
        pass
    if last is None:
        return None
    end = _block_end(text, last.end(), 0)
    try:
        return ast.parse(text[:end]).body
    except SyntaxError:
        return None


def _block_end(text: str, start: int, depth: int) -> int:
    """Where the statement or block that runs on at `start` ends: the first later line of code
    indented `depth` or less (comments, blank lines and closing brackets do not end it)."""
    for line in re.finditer(r"^([ \t]*)[^ \t\r\n#)\]}]", text[start:], re.M):
        if len(line.group(1)) <= depth and line.start() > 0:
            return start + line.start()
    return len(text)


def _function(text: str, name: str) -> list[ast.AST] | None:
    """The nodes of the one `def name(` in `text`, parsed from its lines alone: from the def to the
    first later code line indented no deeper (comments, blank lines and closing brackets do not
    end it). None where the name is defined more than once (the whole file's first is the
    shallowest), or that does not parse as the function (a cut inside a string or brackets does
    not): the caller parses the whole file."""
    found = list(re.finditer(rf"^([ \t]*)def[ \t]+{re.escape(name)}[ \t]*\(", text, re.M))
    if len(found) != 1:
        return None
    found = found[0]
    depth = len(found.group(1))
    try:
        tree = ast.parse(("if 1:\n" if depth else "") + text[found.start():_block_end(text, found.end(), depth)])
    except SyntaxError:
        return None
    return next((list(ast.walk(n)) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name),
                None)


def _literal(node: ast.expr) -> Any:
    """A literal, or frozenset({...}) of one; None for anything else."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "frozenset" and len(node.args) == 1:
        inner = _literal(node.args[0])
        return frozenset(inner) if inner is not None else None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def check_cfg_problem(k: str, v: Any) -> str | None:
    """Ultralytics' check_cfg(hard=True) on one argument, in its own words: the message of the error
    it would raise, else None. A line-for-line copy of its rules over the tables `rules()` reads;
    tests/test_parity.py holds it to check_cfg's verdicts and messages over every key and many values."""
    r = rules()
    if "CFG_FLOAT_KEYS" not in r:
        return None
    floats, fractions, ints, bools, strs = (r.get(n, frozenset()) for n in (
        "CFG_FLOAT_KEYS", "CFG_FRACTION_KEYS", "CFG_INT_KEYS", "CFG_BOOL_KEYS", "CFG_STR_KEYS"))
    number = (float, int)
    if v is None:
        typed = floats | fractions | ints | bools | strs | {"scale", "compile"}
        if k == "amp" or (defaults().get(k) is not None and k in typed and k != "auto_augment"):
            return f"'{k}=None' is invalid. '{k}' must not be None."
        return None
    as_float = f"'{k}={v}' is of invalid type {type(v).__name__}. Valid '{k}' types are int (i.e. '{k}=0') or " \
               f"float (i.e. '{k}=0.5')"
    between = f"'{k}={v}' is an invalid value. Valid '{k}' values are between 0.0 and 1.0."
    if k in floats and not isinstance(v, number):
        return as_float
    if k in floats:
        pass  # a number: accepted
    elif k == "scale":
        if isinstance(v, (list, tuple)):
            if len(v) != 2 or not all(isinstance(x, (int, float)) for x in v):
                return f"'{k}={v}' is of invalid type {type(v).__name__}. Valid '{k}' types are int, float, or a " \
                       f"tuple/list of two floats (i.e. '{k}=(0.5, 2.0)')"
            return None
        if not isinstance(v, number):
            return as_float
        if not 0.0 <= v <= 1.0:
            return between
    elif k in fractions:
        if k == "fraction" and isinstance(v, list):
            if len(v) not in {2, 3} or not all(v[:2]) or not all(
                    (type(x) is int and x >= 0) or (type(x) is float and 0.0 <= x <= 1.0) for x in v):
                return f"'{k}={v}' is invalid. Use [train, val] or [train, val, test] counts/ratios."
            return None
        if k == "fraction" and isinstance(v, bool):
            return f"'{k}={v}' is of invalid type bool. Valid '{k}' types are int, float, or list"
        if not isinstance(v, number):
            return as_float
        if k == "fraction":
            if not (0.0 < v <= 1.0 or (isinstance(v, int) and v > 1)):
                return f"'{k}={v}' invalid. Use integer count >1 or ratio (0, 1] for fraction."
        elif not 0.0 <= v <= 1.0:
            return between
    elif k in ints:
        if not isinstance(v, int):
            if not (isinstance(v, float) and v.is_integer()):
                return f"'{k}={v}' is of invalid type {type(v).__name__}. '{k}' must be an int (i.e. '{k}=8')"
            v = int(v)
        low = r.get("CFG_INT_MIN", {}).get(k)
        if low is not None and v < low:
            return f"'{k}={v}' is an invalid value. '{k}' must be >= {low}."
    elif k in bools and not isinstance(v, bool):
        return f"'{k}={v}' is of invalid type {type(v).__name__}. '{k}' must be a bool (i.e. '{k}=True' or " \
               f"'{k}=False')"
    elif k in strs and not isinstance(v, str):
        return f"'{k}={v}' is of invalid type {type(v).__name__}. '{k}' must be a str."
    elif k == "compile" and not isinstance(v, (bool, str)):
        return f"'{k}={v}' is of invalid type {type(v).__name__}. '{k}' must be a bool or str (i.e. '{k}=True' or " \
               f"'{k}=max-autotune')"
    elif k == "amp":
        if not isinstance(v, bool) and str(v).lower() not in {"fp16", "bf16", "fp32"}:
            return f"'{k}={v}' is invalid. Valid '{k}' values are True, False, 'fp16', 'bf16', or 'fp32'."
    elif k == "quantize" and "QUANTIZE_ALIASES" in r and str(v).lower() not in r["QUANTIZE_ALIASES"]:
        return f"'{k}={v}' is invalid. Valid '{k}' values are {r.get('QUANTIZE_VALID_VALUES')}. See " \
               "https://docs.ultralytics.com/modes/export#quantization-options"
    return None


def optimizer_problem(key: str, value: Any) -> str | None:
    """The trainer's refusal of an optimizer name (BaseTrainer.build_optimizer raises
    NotImplementedError in the child, on every rung); names match in any case, as there."""
    names = rules().get("optimizers")
    if key != "optimizer" or not names or not isinstance(value, str):
        return None
    if value.lower() in {n.lower() for n in names}:
        return None
    return f"Optimizer '{value}' not found in list of available optimizers {sorted(names)}."
