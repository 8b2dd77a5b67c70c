"""MobileNetV4-Conv-Small (timm) as an Ultralytics backbone, for the `rtdetr-mnv4` model.

Contract (used by rtdetr-mnv4.yaml, the child and checkpoints):

- `MobileNetV4Backbone` is the YAML module name. Its forward returns the list [P3/8, P4/16, P5/32]
  with `CHANNELS` channels; the YAML picks each one with an `Index` layer that states its channel
  count, which is how Ultralytics wires its own `TorchVision` backbone (parse_model's fallback
  branch would otherwise guess the backbone's output channels as its input channels).
- Checkpoints pickle the module object, so the class lives at the top level of this importable
  module; unpickling it (a plain load, a resume, a DDP rank) imports this module, and importing it
  calls `register()`. That matters because a resume rebuilds the model from the YAML stored in the
  checkpoint, in whatever process unpickled it.
- Pretrained weights: only when the environment variable `PRETRAINED_ENV` is "1" does the
  constructor load timm's ImageNet weights (`TIMM_MODEL`, downloaded from the Hugging Face hub on
  first use); otherwise random init, with no network access at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import timm
import torch
from torch import nn

from launcher.contract import ENV_PRETRAINED_BACKBONE as PRETRAINED_ENV  # "RTDETR_LAUNCHER_PRETRAINED"
from launcher.models import MNV4_TIMM_MODEL as TIMM_MODEL, cached_weights_file, hf_hub_cache

HF_REPO_ID = f"timm/{TIMM_MODEL}"
OUT_INDICES = (2, 3, 4)  # timm feature levels at strides 8, 16, 32
CHANNELS = (64, 96, 960)  # their channels; the YAML's Index rows repeat these (a test checks)
YAML_NAME = "MobileNetV4Backbone"


# --- Hugging Face cache (pure: in launcher.models, which dry-run uses without torch) ------------


def weights_cached(environ: Mapping[str, str] | None = None) -> bool:
    """Whether timm's pretrained weights for `TIMM_MODEL` are in the HF cache (so no download is needed)."""
    return cached_weights_file(HF_REPO_ID, environ) is not None


def pretrained_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the backbone's constructor will load ImageNet weights (only for exactly "1")."""
    return (os.environ if environ is None else environ).get(PRETRAINED_ENV, "") == "1"


class PretrainedWeightsUnavailable(RuntimeError):
    """Pretrained backbone weights were asked for, are not cached, and could not be downloaded."""


# --- the backbone --------------------------------------------------------------------------------


class MobileNetV4Backbone(nn.Module):
    """timm MobileNetV4-Conv-Small, features_only, returning [P3, P4, P5] for `Index` layers.

    Ultralytics feeds images in [0, 1]; timm's ImageNet weights expect mean/std normalised input,
    so the normalisation happens here (cheap, and harmless with random init).
    """

    def __init__(self, model: str = TIMM_MODEL, out_indices: tuple[int, ...] | list[int] = OUT_INDICES):
        super().__init__()
        pretrained = pretrained_requested()
        kw = {}
        cached = cached_weights_file(f"timm/{model}") if pretrained and "." in model else None
        if cached is not None:  # load the cached file directly: no hub request, so no retries when offline
            kw["pretrained_cfg_overlay"] = {"file": str(cached)}
        try:
            self.m = timm.create_model(
                model, pretrained=pretrained, features_only=True, out_indices=tuple(out_indices), **kw
            )
        except OSError as e:  # huggingface_hub's "not cached and cannot download" errors are OSErrors
            if not pretrained:
                raise
            raise PretrainedWeightsUnavailable(
                f"{PRETRAINED_ENV}=1 but the ImageNet weights of {model} are not in the Hugging Face cache "
                f"({hf_hub_cache()}) and could not be downloaded ({type(e).__name__}). Run once with network "
                f"access to cache them, or set {PRETRAINED_ENV}=0 to train from random init."
            ) from e
        self.channels = tuple(self.m.feature_info.channels())
        self.strides = tuple(self.m.feature_info.reduction())
        cfg = self.m.pretrained_cfg
        self.register_buffer("mean", torch.tensor(cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg["std"]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.m((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def register() -> None:
    """Make `MobileNetV4Backbone` visible to Ultralytics' YAML parser (parse_model looks names up in
    `ultralytics.nn.tasks`' globals). Idempotent; called on import of this module."""
    import ultralytics.nn.tasks as tasks

    if tasks.__dict__.get(YAML_NAME) is not MobileNetV4Backbone:
        setattr(tasks, YAML_NAME, MobileNetV4Backbone)


def yaml_path() -> Path:
    """The rtdetr-mnv4 model YAML shipped next to this module."""
    return Path(__file__).with_name("rtdetr-mnv4.yaml")


register()
