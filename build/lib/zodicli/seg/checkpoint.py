"""Checkpoints of train-seg: written atomically, with everything needed to rebuild the model
(``model_config``) and to resume exactly (optimiser, scaler, RNG states, iteration).

They hold tensors and plain Python values only, and are read with ``weights_only=True``: a
crafted ``.pt`` cannot run code when zodi loads it. NumPy's RNG state is stored as a tensor.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..torchfile import load_state, save_state


def numpy_rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "gauss": float(gauss)}


def set_numpy_rng_state(s: dict) -> None:
    np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["gauss"]))


def save_checkpoint(path, state: dict) -> None:
    save_state(path, state)


def load_checkpoint(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"checkpoint {p} does not exist", "pass a file written by 'zodi train-seg' (last.pt or best.pt)")
    state = load_state(p, "checkpoint of 'zodi train-seg'")
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
