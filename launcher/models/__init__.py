"""Which models a rung may name, and where their weights come from, without importing torch.

A rung's `model` is one of: a file on disk (`.pt` or `.yaml`), a model Ultralytics knows by name
(`rtdetr-l.pt` downloads COCO weights on first use, `rtdetr-l.yaml` is random init), or one of the
project's own models (`rtdetr-mnv4`). Anything else is bad input.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import socket
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping

from ..contract import ENV_PRETRAINED_BACKBONE

MODELS_DIR = Path(__file__).resolve().parent

# Ultralytics downloads these from its GitHub release assets on first use (utils/downloads.py,
# GITHUB_ASSETS_NAMES); only the RT-DETR ones make sense for an RT-DETR trainer.
ULTRALYTICS_WEIGHTS = frozenset({"rtdetr-l.pt", "rtdetr-x.pt"})
MNV4_TIMM_MODEL = "mobilenetv4_conv_small.e2400_r224_in1k"  # timm's default tag for the architecture
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # timm tries safetensors first


@dataclass(frozen=True)
class ProjectModel:
    name: str
    yaml: Path
    module: str  # the importable module the YAML needs (imports torch; the child imports it)
    timm_model: str | None  # the pretrained backbone, fetched from the Hugging Face hub


PROJECT_MODELS = {
    "rtdetr-mnv4": ProjectModel(
        name="rtdetr-mnv4",
        yaml=MODELS_DIR / "rtdetr-mnv4.yaml",
        module="launcher.models.mnv4",
        timm_model=MNV4_TIMM_MODEL,
    ),
}


@dataclass(frozen=True)
class ModelRef:
    """A rung's model, resolved: what to hand Ultralytics and what that will cost."""

    spec: str  # as written in the ladder
    kind: str  # "file", "ultralytics" or "project"
    source: str  # what the child passes to Ultralytics (an absolute path or a known name)
    available: bool
    weights: str  # one phrase: where the starting weights come from
    download: str | None = None  # what will be fetched from the network on first use, if anything
    project: ProjectModel | None = None
    host: str | None = None  # where the download comes from
    offline_env: str | None = None  # the variable that says "no network" to the downloading library


def resolve(spec: str, base_dirs: tuple[Path, ...], pretrained: bool = True) -> ModelRef | None:
    """Resolve a ladder's model string; None when it is neither a file nor a known model."""
    name = spec.strip()
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    if stem in PROJECT_MODELS:
        return _project_ref(spec, PROJECT_MODELS[stem], pretrained)
    path = Path(name).expanduser()
    for candidate in [path] if path.is_absolute() else [base / path for base in base_dirs]:
        if candidate.is_file():
            kind = "random init from YAML" if candidate.suffix in (".yaml", ".yml") else "weights"
            return ModelRef(spec, "file", str(candidate.resolve()), True, f"{kind} on disk at {candidate}")
    if name in ULTRALYTICS_WEIGHTS:
        local = next((d / name for d in (Path.cwd(), ultralytics_weights_dir()) if d and (d / name).is_file()), None)
        if local:
            return ModelRef(spec, "ultralytics", name, True, f"pretrained weights on disk at {local}")
        return ModelRef(
            spec, "ultralytics", name, True,
            "pretrained weights not on disk: Ultralytics downloads them on first use",
            download=f"{name} from Ultralytics' GitHub release assets",
            host="github.com", offline_env="YOLO_OFFLINE",
        )
    if name in ultralytics_yaml_names():
        return ModelRef(spec, "ultralytics", name, True, "random init from Ultralytics' YAML, nothing to download")
    return None


def _project_ref(spec: str, model: ProjectModel, pretrained: bool) -> ModelRef:
    source = str(model.yaml)
    if not model.yaml.is_file():
        return ModelRef(spec, "project", source, False, f"not built yet: {model.yaml} is missing", project=model)
    if importlib.util.find_spec("timm") is None:
        return ModelRef(spec, "project", source, False, "needs timm, which is not installed (pip install timm)",
                        project=model)
    if not pretrained or model.timm_model is None:
        return ModelRef(spec, "project", source, True, "random init (pretrained = false), nothing to download",
                        project=model)
    cached = cached_weights_file(f"timm/{model.timm_model}")
    if cached:
        return ModelRef(spec, "project", source, True, f"ImageNet backbone weights cached at {cached}", project=model)
    return ModelRef(
        spec, "project", source, True,
        "ImageNet backbone weights not cached: timm downloads them on first use",
        download=f"timm/{model.timm_model} from the Hugging Face hub",
        project=model, host="huggingface.co", offline_env="HF_HUB_OFFLINE",
    )


def local_weights(ref: ModelRef) -> Path | None:
    """The checkpoint file on this machine that a rung's model starts from, if it is one."""
    if ref.kind == "file" and Path(ref.source).suffix == ".pt":
        return Path(ref.source)
    if ref.kind == "ultralytics" and ref.source in ULTRALYTICS_WEIGHTS:
        return next((d / ref.source for d in (Path.cwd(), ultralytics_weights_dir()) if d and (d / ref.source).is_file()),
                    None)
    return None


def check_download(ref: ModelRef) -> ModelRef:
    """The same ref, made unavailable (with the reason) when its weights must be downloaded and
    this machine is offline: said before training, not as a traceback in the night."""
    if not ref.download or not ref.available:
        return ref
    if os.environ.get(ref.offline_env or "", "") in ("1", "true", "True", "YES", "yes"):
        why = f"{ref.offline_env} is set"
    elif not reachable(ref.host):
        why = f"{ref.host} cannot be reached from this machine"
    else:
        return ref
    return replace(ref, available=False, weights=(
        f"needs {ref.download}, but {why} — download it once on a connected machine (see README, 'Weights "
        "offline'), or use a random-init model (pretrained = false, or the .yaml)"))


@functools.lru_cache(maxsize=None)
def reachable(host: str | None, port: int = 443, timeout: float = 1.5) -> bool:
    if not host:
        return True
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def child_env(ref: ModelRef, pretrained: bool) -> dict[str, str]:
    """Environment a child needs for this model (read when the backbone is built)."""
    if ref.project is None or ref.project.timm_model is None:
        return {}
    return {ENV_PRETRAINED_BACKBONE: "1" if pretrained else "0"}


def hf_hub_cache(environ: Mapping[str, str] | None = None) -> Path:
    """The Hugging Face hub cache directory, resolved as huggingface_hub resolves it."""
    env = os.environ if environ is None else environ

    def expand(p: str) -> str:
        return os.path.expandvars(os.path.expanduser(p))

    home = expand(env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"))
    legacy = env.get("HUGGINGFACE_HUB_CACHE") or os.path.join(home, "hub")
    return Path(expand(env.get("HF_HUB_CACHE") or legacy))


def cached_weights_file(repo_id: str, environ: Mapping[str, str] | None = None) -> Path | None:
    """The cached weight file of a hub repo such as `timm/<model>`, or None when not downloaded."""
    snapshots = hf_hub_cache(environ) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not snapshots.is_dir():
        return None
    for name in HF_WEIGHT_FILES:
        for f in sorted(snapshots.glob(f"*/{name}")):
            if f.exists():  # a snapshot entry is a symlink into blobs/; a broken one is not a cache hit
                return f
    return None


def ultralytics_package_dir() -> Path | None:
    spec = importlib.util.find_spec("ultralytics")  # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def ultralytics_yaml_names() -> frozenset[str]:
    root = ultralytics_package_dir()
    if root is None:
        return frozenset()
    return frozenset(p.name for p in (root / "cfg" / "models" / "rt-detr").glob("*.yaml"))


def ultralytics_config_dir() -> Path:
    # ultralytics.utils.get_user_config_dir on Linux and macOS, without importing it or making a
    # folder: the folder it would make, else its fallback (tests/test_parity.py)
    if os.environ.get("YOLO_CONFIG_DIR"):
        main = Path(os.environ["YOLO_CONFIG_DIR"]).expanduser() / "Ultralytics"
    elif sys.platform == "darwin":
        main = Path.home() / "Library" / "Application Support" / "Ultralytics"
    else:
        main = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "Ultralytics"
    if _could_make(main):
        return main
    return Path(tempfile.gettempdir()) / f"Ultralytics-{os.getuid()}"


def _could_make(folder: Path) -> bool:
    """Whether `folder.mkdir(parents=True, exist_ok=True)` would succeed."""
    for p in (folder, *folder.parents):
        if p.exists():
            return p.is_dir() and (p == folder or os.access(p, os.W_OK | os.X_OK))
    return False


def ultralytics_settings() -> dict:
    try:
        return json.loads((ultralytics_config_dir() / "settings.json").read_text())
    except (OSError, ValueError):
        return {}


def ultralytics_weights_dir() -> Path | None:
    value = ultralytics_settings().get("weights_dir")
    return Path(value) if value else None
