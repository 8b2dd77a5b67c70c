"""Ultralytics' own argument form on the launcher's command line: `run --data d.yaml imgsz=512
epochs=80 lr0=0.002`. Each pair is checked against Ultralytics' configuration (default.yaml's keys
and the type of each default) before anything starts, without importing Ultralytics.

`epochs` and `imgsz` become the job's (every rung's epochs, the job's image size); the rest goes
to every rung's `model.train()`, over the ladder's [job.args]. Keys a rung owns (model, batch,
workers, cache, device) and keys the launcher sets (data, save_dir, resume, ...) are refused.
"""

from __future__ import annotations

import difflib
import functools
import math
from typing import Any

from . import models
from .errors import BadInput

RUNG_KEYS = frozenset({"model", "batch", "workers", "cache", "device"})  # the ladder decides them, per rung
LAUNCHER_KEYS = frozenset({"data", "save_dir", "resume", "project", "name", "exist_ok", "mode", "task", "cfg",
                           "rect"})
JOB_KEYS = frozenset({"epochs", "imgsz"})


@functools.lru_cache(maxsize=1)
def defaults() -> dict[str, Any]:
    """Ultralytics' default.yaml: every training key and its default (its type is the key's type)."""
    import yaml

    root = models.ultralytics_package_dir()
    try:
        data = yaml.safe_load((root / "cfg" / "default.yaml").read_text(encoding="utf-8")) if root else None
    except (OSError, yaml.YAMLError):
        data = None
    return data if isinstance(data, dict) else {}


def value_of(text: str) -> Any:
    """A value as Ultralytics' CLI reads it: none, true/false, numbers, else the text."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip().strip("'\"")


def parse(pairs: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs, checked; BadInput (one line, exit 2) for the first that is wrong."""
    known = defaults()
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip()
        where = f"argument {pair!r}"
        if not sep or not key or not text.strip():
            raise BadInput(where, "not in Ultralytics' key=value form", "write it as key=value, e.g. lr0=0.002")
        if key in RUNG_KEYS:
            raise BadInput(where, f"'{key}' is set by each rung of the ladder", f"change '{key}' in the ladder's "
                           "[[rung]] tables (--ladder FILE); the ladder is the one authority on it")
        if key in LAUNCHER_KEYS:
            fix = "use --data PATH" if key == "data" else "leave it out: the launcher sets it"
            raise BadInput(where, f"'{key}' is the launcher's to set", fix)
        if known and key not in known:
            near = difflib.get_close_matches(key, list(known), n=2)
            raise BadInput(where, f"'{key}' is not an Ultralytics training argument",
                           "did you mean " + " or ".join(f"'{k}={text}'" for k in near) + "?" if near else
                           "see ultralytics/cfg/default.yaml for the keys")
        value = value_of(text)
        default = known.get(key)
        problem = type_problem(key, value, default)
        if problem:
            raise BadInput(where, problem, f"give {key} a value like {default!r}")
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            value = int(value)  # epochs=1e2
        out[key] = value
    if "imgsz" in out and (not isinstance(out["imgsz"], int) or out["imgsz"] < 32 or out["imgsz"] % 32):
        raise BadInput(f"argument 'imgsz={out['imgsz']}'", "RT-DETR needs a multiple of 32, ≥ 32", "e.g. imgsz=640")
    if "epochs" in out and (not isinstance(out["epochs"], int) or out["epochs"] < 1):
        raise BadInput(f"argument 'epochs={out['epochs']}'", "a whole number ≥ 1 is needed", "e.g. epochs=80")
    return out


def type_problem(key: str, value: Any, default: Any) -> str | None:
    """What is wrong with a value for a key whose default is `default` (None: nothing)."""
    if value is None or default is None:
        return None
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
