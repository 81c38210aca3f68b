"""Checkpoints of train-seg: written atomically, with everything needed to rebuild the model
(``model_config``) and to resume exactly (optimiser, scaler, RNG states, iteration)."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import InputError


def save_checkpoint(path, state: dict) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint {p} does not exist", "pass a file written by 'zodi train-seg' (last.pt or best.pt)")
    try:
        state = torch.load(p, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise InputError(f"{p} is not a readable checkpoint ({type(e).__name__})", "re-train or copy it again") from None
    if not isinstance(state, dict) or "model_config" not in state or "model" not in state:
        raise InputError(f"{p} is not a zodi segmentation checkpoint", "pass a file written by 'zodi train-seg'")
    return state


def model_from_checkpoint(path, device="cpu"):
    """(model in eval mode, checkpoint dict)."""
    from .models import build_model

    state = load_checkpoint(path)
    cfg = dict(state["model_config"])
    name, classes, stride = cfg.pop("name"), cfg.pop("num_classes"), cfg.pop("output_stride", None)
    model = build_model(name, num_classes=classes, output_stride=stride, **cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), state
