"""Device and dtype choice, and per-item randomness from (seed, key) so that results do not depend
on batch size, order or sharding."""
from __future__ import annotations

import hashlib

import numpy as np

from .errors import InputError


def key_seed(seed: int, *parts) -> int:
    """A 63-bit seed from the run seed and any strings/ints (an item's key, a step, ...)."""
    h = hashlib.sha256(str(int(seed)).encode())
    for p in parts:
        h.update(b"\0" + str(p).encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1


def item_rng(seed: int, *parts) -> np.random.Generator:
    return np.random.default_rng(key_seed(seed, *parts))


def choose_device(spec: str = "auto"):
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {spec} asked for, but torch sees no CUDA device", "use --device cpu or auto")
    try:
        return torch.device(spec)
    except RuntimeError:
        raise InputError(f"unknown device {spec!r}", "use auto, cpu, cuda or cuda:N") from None


def amp_dtype(spec: str | None):
    import torch

    table = {None: None, "none": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if spec not in table:
        raise InputError(f"unknown precision {spec!r}", "use none, bf16 or fp16")
    return table[spec]
