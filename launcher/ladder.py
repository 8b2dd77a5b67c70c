"""Ladder files: TOML in `ladders/`, a `[job]` table and `[[rung]]` tables from best to safest.

Parsing is strict: an unknown key, a wrong type, an impossible value, two rungs with one name or
two rungs that share a model but not `epochs` (Ultralytics ignores a new `epochs` on resume) is a
`BadInput` naming the file, the rung and the key.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import models, notify, overrides
from .errors import BadInput
from .runlog import NOT_RUN_NAMES

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LADDER = Path("ladders") / "default.toml"
CACHE_MODES = ("ram", "disk", "off")
ON_THRASH = ("restart", "warn")
# PyTorch's CUDA caching allocator options (c10/cuda/CUDAAllocatorConfig.cpp).
ALLOC_KEYS = frozenset({
    "backend", "max_split_size_mb", "max_non_split_rounding_mb", "garbage_collection_threshold",
    "expandable_segments", "roundup_power2_divisions", "release_lock_on_cudamalloc",
    "pinned_use_cuda_host_register", "pinned_num_register_threads", "pinned_use_background_threads",
    "per_process_memory_fraction", "graph_capture_record_stream_reuse", "pinned_reserve_segment_size_mb",
})
RUN_NAME_MAX = 64
# \Z, not $: `$` also matches before a trailing newline, and a name ends up in #SBATCH lines and paths
RUN_NAME = re.compile(rf"\A[A-Za-z0-9][A-Za-z0-9._-]{{0,{RUN_NAME_MAX - 1}}}\Z")


@dataclass(frozen=True)
class Job:
    name: str
    dataset: Path  # absolute; may not exist (dry-run reports it, run refuses)
    imgsz: int = 640
    device: str | None = None
    max_attempts: int = 20  # child processes in one run, all rungs together (SLURM's cuts not counted)
    max_requeues: int = 20  # SLURM requeues of one run (time limits, preemptions) before it ends exhausted
    retries: int = 2  # retries of a transient failure (unknown, nccl) on one rung before stepping down
    retry_wait_s: int = 10  # first wait before a retry; it doubles each time, up to 300 s
    heartbeat_timeout_s: int = 1800  # a child silent this long while training or validating is hung
    startup_timeout_s: int = 3600  # ... and before its first batch (imports, dataset scan, RAM caching)
    args: dict = field(default_factory=dict)  # more Ultralytics train arguments, e.g. {"plots": false}
    # tuning (docs/design.md, "Tuning: a measured trial per rung")
    headroom: float = 0.1  # share of the free device memory a measured peak must leave unused
    grow: bool = False  # trials also measure the top rung's model at 2x and 4x its batch
    on_thrash: str = "restart"  # alloc retries rising: "restart" the rung (then step down), or "warn"
    # the night's message (docs/design.md, "A message when the night ends"): URLs, and the decisions that also send one
    notify: tuple[str, ...] = ()
    notify_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rung:
    name: str
    model: models.ModelRef
    epochs: int
    batch: int
    workers: int = 8
    cache: str = "off"
    threads: int | None = None
    vram_fraction: float | None = None
    alloc_conf: str | None = None
    cleanup_every: int = 0
    min_free_vram_gib: float = 0.0
    pretrained: bool = True
    val_batch: int | None = None  # validation's batch; None: Ultralytics' (2 x batch). Set by a measured choice

    @property
    def available(self) -> bool:
        return self.model.available


@dataclass(frozen=True)
class Ladder:
    path: Path
    job: Job
    rungs: tuple[Rung, ...] = field(default_factory=tuple)

    def rung(self, name: str) -> Rung:
        for rung in self.rungs:
            if rung.name == name:
                return rung
        raise BadInput(f"--start-rung {name}", f"no rung named '{name}' in {self.path}",
                       f"use one of: {', '.join(r.name for r in self.rungs)}")

    def index(self, name: str) -> int:
        return [r.name for r in self.rungs].index(name)


# ---- field checkers: each returns the value or raises ValueError(what it must be) -------------

def _int(minimum: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"a whole number ≥ {minimum}")
        if v < minimum:
            raise ValueError(f"a whole number ≥ {minimum}")
        return v
    return check


def _number(low: float, high: float | None = None, low_open: bool = False) -> Callable[[Any], float]:
    rng = f"{'>' if low_open else '≥'} {low:g}" + (f" and ≤ {high:g}" if high is not None else "")

    def check(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise TypeError(f"a number {rng}")
        if (v <= low if low_open else v < low) or (high is not None and v > high):
            raise ValueError(f"a number {rng}")
        return float(v)
    return check


def _str(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise TypeError("a non-empty string")
    return v.strip()


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError("true or false")
    return v


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in options:
            raise ValueError(f"one of {', '.join(repr(o) for o in options)}")
        return v
    return check


def _cache(v: Any) -> str:
    if v is False:
        return "off"
    if v not in CACHE_MODES:
        raise ValueError(f"one of {', '.join(repr(m) for m in CACHE_MODES)}")
    return v


def _alloc_conf(v: Any) -> str:
    v = _str(v)
    for item in v.split(","):
        key, sep, value = item.partition(":")
        if not sep or not value.strip():
            raise ValueError("comma-separated key:value pairs, e.g. 'max_split_size_mb:512,expandable_segments:True'")
        if key.strip() not in ALLOC_KEYS:
            raise ValueError(f"allocator options PyTorch knows ({', '.join(sorted(ALLOC_KEYS))}); "
                             f"'{key.strip()}' is not one")
    return v


def _imgsz(v: Any) -> int:
    """≥ 32; one that is not a multiple of 32 Ultralytics rounds up, and dry-run and run say so
    (overrides.warnings)."""
    return _int(32)(v)


def run_name(v: Any) -> str:
    """A run name as --name and [job] name take it (a folder under logs/)."""
    v = _str(v)
    if not RUN_NAME.fullmatch(v):
        raise ValueError(f"letters, digits, '.', '_' or '-' (a folder name under logs/), at most {RUN_NAME_MAX}")
    if v in NOT_RUN_NAMES:
        raise ValueError(f"'{v}' is the launcher's own entry in logs/; pick another name")
    return v


def device_string(v: Any) -> str:
    """A device as Ultralytics takes it: "cpu", "0" or "0,1" (spaces dropped)."""
    v = str(v).strip() if isinstance(v, (str, int)) and not isinstance(v, bool) else None
    if not v or not re.fullmatch(r"cpu|\d+(,\d+)*", v.replace(" ", "")):
        raise ValueError("'cpu' or GPU indices as Ultralytics takes them: '0', '0,1'")
    return v.replace(" ", "")


def gpu_indices(device: str | None) -> tuple[int, ...]:
    """The GPU indices a device string selects: () for "cpu" or none."""
    if not device or device == "cpu":
        return ()
    return tuple(int(i) for i in device.split(","))


def _train_args(v: Any) -> dict:
    """[job.args] as a table of plain values; each is checked as a key=value argument is, by
    overrides.check, in parse (which names the file)."""
    if not isinstance(v, dict):
        raise TypeError("a table of Ultralytics train arguments, e.g. [job.args] with plots = false")
    for key, value in v.items():
        if isinstance(value, dict):
            raise ValueError(f"plain values; '{key}' is a table")
    return dict(v)


JOB_FIELDS: dict[str, tuple[Callable[[Any], Any], bool, str]] = {
    # key: (checker, required, fix hint)
    "name": (run_name, True, "name the run, e.g. name = \"coco-indoor\""),
    "dataset": (_str, True, "give the Ultralytics dataset YAML, e.g. dataset = \"/data/coco_indoor/data.yaml\""),
    "imgsz": (_imgsz, False, "e.g. imgsz = 640"),
    "device": (device_string, False, "e.g. device = \"0\", \"0,1\" or \"cpu\""),
    "max_attempts": (_int(1), False, "child processes one run may start, e.g. max_attempts = 20"),
    "retries": (_int(0), False, "retries of an unknown or NCCL failure before stepping down, e.g. retries = 2"),
    "max_requeues": (_int(0), False, "SLURM requeues one run may use, e.g. max_requeues = 20"),
    "args": (_train_args, False, "e.g. [job.args] with patience = 50, plots = false"),
    "retry_wait_s": (_int(0), False, "seconds before the first retry (then doubling), e.g. retry_wait_s = 10"),
    "heartbeat_timeout_s": (_int(10), False, "seconds of silence that mean a hang, e.g. heartbeat_timeout_s = 1800"),
    "startup_timeout_s": (_int(10), False, "seconds a child may take to its first batch, e.g. 3600"),
    "headroom": (_number(0, 0.9), False, "the share of free device memory a measured rung leaves unused, "
                 "e.g. headroom = 0.1"),
    "grow": (_bool, False, "grow = true to also try the top rung's model at 2x and 4x its batch"),
    "on_thrash": (_choice(ON_THRASH), False, "on_thrash = \"restart\" or \"warn\""),
    "notify": (notify.check_urls, False, "a URL to POST the night's end to, or a list, e.g. notify = "
               "\"https://ntfy.sh/TOPIC?tpl=1&m={{.text}}\""),
    "notify_on": (notify.check_on, False, f"notify_on = [{', '.join(repr(k) for k in notify.NOTIFY_ON)}] (a "
                  "message at each such decision too)"),
}

RUNG_FIELDS: dict[str, tuple[Callable[[Any], Any], bool, str]] = {
    "name": (_str, True, "name the rung, e.g. name = \"optimal\""),
    "model": (_str, True, "e.g. model = \"rtdetr-l.pt\", \"rtdetr-l.yaml\" or \"rtdetr-mnv4\""),
    "epochs": (_int(1), True, "e.g. epochs = 100"),
    "batch": (_int(1), True, "give a fixed batch ≥ 1 (the ladder, not AutoBatch, decides batch)"),
    "workers": (_int(0), False, "e.g. workers = 8"),
    "cache": (_cache, False, "cache = \"ram\", \"disk\" or \"off\""),
    "threads": (_int(1), False, "e.g. threads = 8, or leave it out for torch's default"),
    "vram_fraction": (_number(0, 1, low_open=True), False,
                      "a share of the card in (0, 1], e.g. 0.85, or leave it out for no cap"),
    "alloc_conf": (_alloc_conf, False, "e.g. alloc_conf = \"max_split_size_mb:64\""),
    "cleanup_every": (_int(0), False, "batches between VRAM cleanups, e.g. 100; 0 for never"),
    "min_free_vram_gib": (_number(0), False, "free GiB a GPU needs to start on this rung, e.g. 15"),
    "pretrained": (_bool, False, "pretrained = true or false"),
    "val_batch": (_int(1), False, "the batch validation runs at, e.g. val_batch = 4, or leave it out for "
                  "Ultralytics' 2 x batch"),
}


def resolve_ladder_path(path: str | Path | None) -> Path:
    """A ladder named on the command line: as given, else relative to the project's checkout."""
    given = Path(path) if path else DEFAULT_LADDER
    for candidate in (given, PROJECT_ROOT / given) if not given.is_absolute() else (given,):
        if candidate.is_file():
            return candidate
    raise BadInput(f"--ladder {given}", "no such ladder file",
                   "give the path of a TOML ladder, e.g. --ladder ladders/default.toml")


def load(path: str | Path | None = None, *, data: str | Path | None = None) -> Ladder:
    """Read and validate a ladder; `data` (from --data, relative to the cwd) replaces its dataset."""
    path = resolve_ladder_path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise BadInput(str(path), f"not valid TOML ({e})", "correct the syntax at that line") from None
    except (OSError, UnicodeDecodeError) as e:
        raise BadInput(str(path), f"cannot be read ({e})", "give a readable UTF-8 TOML file") from None
    return parse(raw, path, data=data)


def parse(raw: dict, path: Path, *, data: str | Path | None = None) -> Ladder:
    for key in raw:
        if key not in ("job", "rung"):
            raise BadInput(f"{path}: '{key}'", "unknown table or key at the top level",
                           "a ladder has one [job] table and [[rung]] tables")
    job_raw = raw.get("job")
    if not isinstance(job_raw, dict):
        raise BadInput(f"{path}: [job]", "missing", "add a [job] table with name and dataset")
    job = _fields(job_raw, JOB_FIELDS, f"{path}: [job]")
    job["args"] = {k: overrides.check(k, v, f"{path}: [job.args], key {k!r}") for k, v in job.get("args", {}).items()}
    base = path.resolve().parent
    dataset = Path(data).expanduser().resolve() if data else _dataset_path(base, job["dataset"])
    job = Job(dataset=dataset, **{k: v for k, v in job.items() if k != "dataset"})

    rungs_raw = raw.get("rung")
    if not isinstance(rungs_raw, list) or not rungs_raw:
        raise BadInput(f"{path}: [[rung]]", "the ladder has no rungs",
                       "add [[rung]] tables, best first, safest last")
    rungs: list[Rung] = []
    for i, rung_raw in enumerate(rungs_raw, 1):
        label = f"{path}: rung {rung_raw.get('name', i)!r}" if isinstance(rung_raw, dict) else f"{path}: rung {i}"
        if not isinstance(rung_raw, dict):
            raise BadInput(label, "is not a table", "write each rung as a [[rung]] table")
        values = _fields(rung_raw, RUNG_FIELDS, label)
        if any(r.name == values["name"] for r in rungs):
            raise BadInput(f"{label}, key 'name'", "two rungs have this name", "give each rung its own name")
        pretrained = values.get("pretrained", True)
        ref = models.resolve(values["model"], (base, Path.cwd()), pretrained)
        if ref is None:
            raise BadInput(
                f"{label}, key 'model'",
                f"'{values['model']}' is neither a file (looked in {base} and {Path.cwd()}), nor a model "
                f"Ultralytics knows ({', '.join(sorted(models.ULTRALYTICS_WEIGHTS | models.ultralytics_yaml_names()))}),"
                f" nor one of the project's ({', '.join(models.PROJECT_MODELS)})",
                "fix the name or the path")
        if not trainable(ref.source):
            raise BadInput(f"{label}, key 'model'", f"Ultralytics trains only from a .pt checkpoint or a model .yaml; "
                           f"it takes {Path(ref.source).name!r} for an exported model and model.train() refuses it "
                           "(\"should be a *.pt PyTorch model\")", "give the Ultralytics checkpoint (.pt) this model "
                           "was saved as, or its .yaml")
        rungs.append(Rung(**{**values, "model": ref}))
    _check_shared_epochs(rungs, path)
    return Ladder(path=path, job=job, rungs=tuple(rungs))


def trainable(source: str) -> bool:
    """Whether Ultralytics' Model can train from this file: a .yaml/.yml it builds, a .pt it loads
    (engine/model.py, __init__ and _load; any case); anything else it takes for an exported model,
    which train() refuses. tests/test_parity.py holds the rule to RTDETR's."""
    return source.lower().endswith((".yaml", ".yml", ".pt"))


def _fields(table: dict, spec: dict, label: str) -> dict:
    out = {}
    for key, value in table.items():
        if key not in spec:
            raise BadInput(f"{label}, key '{key}'", "unknown key", f"use only: {', '.join(spec)}")
        check, _, fix = spec[key]
        try:
            out[key] = check(value)
        except (TypeError, ValueError) as e:
            shown = notify.redact_value(value) if key == "notify" else value  # a URL's secret is never said
            raise BadInput(f"{label}, key '{key}'", f"must be {e}, got {shown!r}", fix) from None
    for key, (_, required, fix) in spec.items():
        if required and key not in out:
            raise BadInput(f"{label}, key '{key}'", "missing", fix)
    return out


def _check_shared_epochs(rungs: list[Rung], path: Path) -> None:
    first: dict[str, Rung] = {}
    for rung in rungs:
        prior = first.setdefault(rung.model.source, rung)
        if prior.epochs != rung.epochs:
            raise BadInput(
                f"{path}: rung '{rung.name}', key 'epochs'",
                f"{rung.epochs} differs from rung '{prior.name}' ({prior.epochs}), which trains the same model "
                "(a resumed checkpoint keeps its epochs)",
                f"set epochs = {prior.epochs}, or use another model for this rung")


def _dataset_path(base: Path, value: str) -> Path:
    """Relative to the ladder file, else under Ultralytics' datasets_dir (as Ultralytics looks)."""
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    here = (base / p).resolve()
    datasets_dir = models.ultralytics_settings().get("datasets_dir")
    if not here.exists() and datasets_dir and (Path(datasets_dir) / p).exists():
        return (Path(datasets_dir) / p).resolve()
    return here
