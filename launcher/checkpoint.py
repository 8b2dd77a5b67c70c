"""A torch checkpoint read without torch: its zip container, its CRCs, and the plain facts
Ultralytics keeps in it (epoch, training arguments). dry-run and run check a rung's .pt before the
night, and a run record is rebuilt from checkpoints, without importing torch (docs/design.md,
"Checkpoints").
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

# what the facts may be made of; anything else in the pickle (modules, tensors) becomes a stand-in
_PLAIN = {("collections", "OrderedDict"), ("builtins", "set"), ("builtins", "frozenset"), ("builtins", "slice"),
          ("builtins", "complex")}


def zip_damage(file, crc: bool = True) -> str | None:
    """What is wrong with a torch.save zip container (a path or a file object), or None.

    With crc, every member is read and its CRC-32 checked, so a file torn by a kill or cut short
    is caught before anything loads it (torch.load checks no CRC and would load wrong weights).
    About 0.16 s for 314 MiB in page cache. Without, only the central directory at the end of the
    file is read (a few KB): the container is complete and names a data.pkl."""
    try:
        with zipfile.ZipFile(file) as z:
            if not any(n.endswith("data.pkl") for n in z.namelist()):
                return "no data.pkl: not a torch checkpoint"
            for info in z.infolist() if crc else ():
                if info.CRC == 0 and info.file_size:  # written without CRCs (torch.serialization
                    continue                          # .set_crc32_options(False)): nothing to check
                with z.open(info) as member:  # raises BadZipFile on a CRC mismatch at its end
                    while member.read(1 << 24):
                        pass
    except Exception as e:  # noqa: BLE001 - whatever fails to parse is damaged
        return f"{type(e).__name__}: {e}"
    return None


class _StandIn:
    """Whatever the pickle builds that is not a plain value: a module, a tensor, a numpy scalar."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __call__(self, *args, **kwargs):
        return _StandIn()

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _Facts(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _PLAIN:
            return super().find_class(module, name)
        return _StandIn

    def persistent_load(self, pid: Any) -> Any:  # tensor storages stay in the zip, unread
        return _StandIn()


def facts(path: Path) -> dict:
    """{"epoch", "train_args"} of an Ultralytics checkpoint: epoch -1 when its optimizer was
    stripped (training finished). Raises ValueError when the file is no such checkpoint."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next(n for n in z.namelist() if n.endswith("data.pkl"))
            with z.open(name) as f:
                ckpt = _Facts(f).load()
    except StopIteration:
        raise ValueError("no data.pkl: not a torch checkpoint") from None
    except (OSError, zipfile.BadZipFile, pickle.UnpicklingError, EOFError, TypeError, AttributeError) as e:
        raise ValueError(f"{type(e).__name__}: {e}") from None
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("train_args"), dict) or \
            not isinstance(ckpt.get("epoch"), int):
        raise ValueError("not an Ultralytics training checkpoint (no epoch and train_args)")
    return {"epoch": ckpt["epoch"], "train_args": ckpt["train_args"]}
