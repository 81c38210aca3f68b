"""Torch files zodi writes and reads (train-seg checkpoints, the toy model's training state): tensors
and plain Python values only, read with ``weights_only=True``, so a crafted file cannot run code."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from .errors import InputError
from .store.files import atomic_path, check_space


def plain(obj):
    """What ``weights_only=True`` accepts: NumPy scalars and arrays become Python numbers and tensors."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def save_state(path, state: dict) -> None:
    """Atomically, through a fresh temporary; a full disk raises OSError(ENOSPC)."""
    buf = io.BytesIO()              # torch.save hides a full disk behind "unexpected pos"; a plain write says ENOSPC
    torch.save(plain(state), buf)
    check_space(path, buf.getbuffer().nbytes, "free some space, then re-run; the last checkpoint written is kept")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(buf.getbuffer())


def load_state(path, what: str = "checkpoint"):
    p = Path(path)
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(f"{p} holds objects other than tensors and plain values, so it is not loaded (loading "
                         "it could run code)", f"pass a {what} written by this version of zodi") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file means the same thing here
        raise InputError(f"{p} is not a readable {what} ({type(e).__name__})", "re-create it or copy it again") from None
