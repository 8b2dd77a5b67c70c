"""Read an Ultralytics dataset YAML the way Ultralytics resolves it, to count images and catch
a missing or empty dataset before a child starts (not mid-night)."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BadInput
from .models import ultralytics_settings

# ultralytics/data/utils.py IMG_FORMATS
IMG_FORMATS = frozenset({"avif", "bmp", "dng", "heic", "heif", "jp2", "jpeg", "jpg", "mpo", "png", "tif", "tiff",
                         "webp"})


@dataclass(frozen=True)
class Dataset:
    yaml: Path
    root: Path
    train: tuple[Path, ...]
    val: tuple[Path, ...]
    train_images: int
    val_images: int
    names: int  # number of classes

    @property
    def images(self) -> int:
        return self.train_images + self.val_images


def inspect(yaml_path: Path) -> Dataset:
    """Resolve and count a dataset; BadInput names the file, the key and the fix."""
    import yaml  # PyYAML comes with Ultralytics; imported here so diagnose never pays for it

    where = str(yaml_path)
    if not yaml_path.is_file():
        raise BadInput(where, "dataset YAML not found", "correct the path: --data PATH (relative to the folder you "
                       "run in), else the ladder's [job] dataset (relative to the ladder's folder)")
    try:
        data = yaml.safe_load(yaml_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise BadInput(where, f"not a readable YAML file ({str(e).splitlines()[0]})", "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise BadInput(where, "not a dataset YAML (expected keys path, train, val, names)",
                       "see https://docs.ultralytics.com/datasets/detect/")
    for key in ("train", "val"):
        if not data.get(key):
            raise BadInput(f"{where}, key '{key}'", "missing", f"add '{key}: images/{key}' (relative to 'path')")
    names = data.get("names") if data.get("names") is not None else data.get("nc")
    if names is None:
        raise BadInput(f"{where}, key 'names'", "missing", "list the class names under 'names'")
    root = _root(data.get("path"), yaml_path)
    splits = {k: _split_paths(root, data[k], f"{where}, key '{k}'") for k in ("train", "val")}
    counts = {k: sum(_count_images(p) for p in paths) for k, paths in splits.items()}
    for key, n in counts.items():
        if n == 0:
            raise BadInput(f"{where}, key '{key}'", f"no images in {', '.join(map(str, splits[key]))}",
                           "point it at a folder of images or a .txt list of image paths")
    return Dataset(yaml=yaml_path, root=root, train=splits["train"], val=splits["val"],
                   train_images=counts["train"], val_images=counts["val"],
                   names=names if isinstance(names, int) else len(names))


RESOLVED_HEADER = "# resolved by the launcher from "  # the first line of the copy names the user's YAML


def write_resolved(ds: Dataset, dest: Path) -> Path:
    """A copy of the dataset YAML with every path absolute, for the child: Ultralytics then reads
    exactly what was checked here, whatever its cwd or datasets_dir."""
    import yaml

    from .runlog import write_text_atomic

    data = yaml.safe_load(ds.yaml.read_text(encoding="utf-8"))
    data.update(resolution(ds))
    for key in ("test", "minival"):
        if isinstance(data.get(key), str) and (ds.root / data[key]).exists():
            data[key] = str((ds.root / data[key]).resolve())
    data.pop("download", None)  # checked and present: nothing to fetch
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(dest, f"{RESOLVED_HEADER}{ds.yaml}\n" + yaml.safe_dump(data, sort_keys=False))
    return dest


def resolution(ds: Dataset) -> dict:
    """Where the dataset's 'path', 'train' and 'val' lead, absolute, as the resolved copy holds them."""
    return {"path": str(ds.root), "train": [str(p) for p in ds.train] if len(ds.train) > 1 else str(ds.train[0]),
            "val": [str(p) for p in ds.val] if len(ds.val) > 1 else str(ds.val[0])}


def read_resolution(copy: Path) -> dict | None:
    """The resolution a run's resolved copy holds (write_resolved), or None when there is none to read."""
    import yaml

    try:
        data = yaml.safe_load(copy.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return {k: data.get(k) for k in ("path", "train", "val")} if isinstance(data, dict) else None


def _root(path_value, yaml_path: Path) -> Path:
    # check_det_dataset (ultralytics/data/utils.py): 'path' as given (relative to the cwd), else
    # under Ultralytics' datasets_dir; no 'path' means the YAML's own folder (tests/test_parity.py)
    if not path_value:
        return yaml_path.parent.resolve()
    path = Path(str(path_value))
    if not path.exists() and not path.is_absolute():
        path = Path(ultralytics_settings().get("datasets_dir", "datasets")) / path
    return path.resolve()


def _split_paths(root: Path, value, where: str) -> tuple[Path, ...]:
    out = []
    for item in value if isinstance(value, list) else [value]:
        if not isinstance(item, str):
            raise BadInput(where, f"must be a path or a list of paths, got {item!r}", "give image folders")
        p = (root / item).resolve()
        if not p.exists() and item.startswith("../") and not isinstance(value, list):  # as check_det_dataset
            p = (root / item[3:]).resolve()
        if not p.exists():
            raise BadInput(where, f"{p} does not exist", f"create it or correct the path (relative to {root})")
        out.append(p)
    return tuple(out)


def _count_images(p: Path) -> int:
    """The images Ultralytics' BaseDataset.get_img_files (ultralytics/data/base.py) would list: a
    folder's `**/*.*` by glob (hidden files and folders skipped, symlinked folders followed), or
    the lines of a .txt list; either way the suffix decides (tests/test_parity.py)."""
    if p.is_dir():
        files = glob.iglob(os.path.join(glob.escape(str(p)), "**", "*.*"), recursive=True)
    else:  # a .txt list of images, one a line
        files = p.read_text(encoding="utf-8-sig").strip().splitlines()
    return sum(1 for x in files if x.rpartition(".")[-1].lower() in IMG_FORMATS)
