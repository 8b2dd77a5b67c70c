"""A synthetic detection dataset made locally: coloured shapes on noise, with YOLO labels.

Deterministic for a seed, nothing downloaded. Used by `run --demo`, the tests and the GPU check.
"""

from __future__ import annotations

import random
from pathlib import Path

from .errors import BadInput

CLASSES = ("rectangle", "ellipse", "triangle")


MARK = ".made-by-launcher"  # the first file make_dataset writes: a folder without it is not the demo's to write


def make_dataset(root: Path, train: int = 48, val: int = 16, size: int = 64, max_boxes: int = 3,
                 seed: int = 0) -> Path:
    """Write images/{train,val}, labels/{train,val} and shapes.yaml under `root`; return the YAML.

    An existing dataset with the same parameters is reused (the YAML records them). Only a new or
    empty folder, or one this function made (its MARK, or an older version's stamped YAML), is
    written into: a user's own dataset is never overwritten. BadInput (one line, exit 2) for a
    folder that holds other files or cannot be written.
    """
    root = root.resolve()
    yaml_path = root / "shapes.yaml"
    stamp = f"# made by launcher.demo: train={train} val={val} size={size} max_boxes={max_boxes} seed={seed}\n"
    try:
        if yaml_path.exists() and yaml_path.read_text(encoding="utf-8").startswith(stamp):
            return yaml_path
        if root.exists() and not root.is_dir():
            raise BadInput(str(root), "is a file where the demo's dataset folder goes", "move that file away")
        if _foreign(root):
            raise BadInput(str(root), "holds files the launcher did not make; the demo writes its dataset only "
                           "into a folder of its own", "move that folder away, or run from another folder "
                           "(the demo's dataset goes into demo-data/ of the logs folder: $RTDETR_LOGS, else ./logs)")
        root.mkdir(parents=True, exist_ok=True)
        (root / MARK).write_text("launcher.demo.make_dataset writes here\n", encoding="utf-8")
        return _write(root, yaml_path, stamp, train, val, size, max_boxes, seed)
    except OSError as e:
        raise BadInput(str(e.filename or root), f"the demo's dataset cannot be written there ({e.strerror or e})",
                       "make that folder writable, or move the file in its place away") from None


def _foreign(root: Path) -> bool:
    """Whether the folder `root` holds what make_dataset did not make."""
    if not root.exists() or (root / MARK).is_file():
        return False
    try:
        stamped = (root / "shapes.yaml").read_text(encoding="utf-8").startswith("# made by launcher.demo:")
    except (OSError, UnicodeDecodeError):
        stamped = False
    return not stamped and any(root.iterdir())


def _write(root: Path, yaml_path: Path, stamp: str, train: int, val: int, size: int, max_boxes: int,
           seed: int) -> Path:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    for split, count in (("train", train), ("val", val)):
        images, labels = root / "images" / split, root / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            bg = tuple(rng.randrange(0, 80) for _ in range(3))
            im = Image.new("RGB", (size, size), bg)
            draw = ImageDraw.Draw(im)
            lines = []
            for _ in range(rng.randint(1, max_boxes)):
                cls = rng.randrange(len(CLASSES))
                w, h = rng.randint(size // 6, size // 2), rng.randint(size // 6, size // 2)
                x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
                colour = tuple(rng.randrange(120, 256) for _ in range(3))
                box = (x0, y0, x0 + w - 1, y0 + h - 1)
                if cls == 0:
                    draw.rectangle(box, fill=colour)
                elif cls == 1:
                    draw.ellipse(box, fill=colour)
                else:
                    draw.polygon([(x0, y0 + h - 1), (x0 + w // 2, y0), (x0 + w - 1, y0 + h - 1)], fill=colour)
                lines.append(f"{cls} {(x0 + w / 2) / size:.6f} {(y0 + h / 2) / size:.6f} {w / size:.6f} {h / size:.6f}")
            im.save(images / f"{i:05d}.jpg", quality=90)
            (labels / f"{i:05d}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    yaml_path.write_text(stamp + f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n"
                         + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES)), encoding="utf-8")
    return yaml_path
