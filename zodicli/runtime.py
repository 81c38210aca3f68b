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


def resolve_dtype(spec: str, device) -> str:
    """Diffusion weights' precision: ``auto`` is fp16 on CUDA (SD's usual inference precision) and
    fp32 elsewhere (a CPU has no fast fp16)."""
    if spec != "auto":
        return spec
    return "fp16" if device.type == "cuda" else "fp32"


def resolve_amp(spec: str | None, device) -> str:
    """train-seg's mixed precision: ``auto`` is bf16 on CUDA where supported (no loss scaling), else
    fp16, and none on the CPU."""
    if spec != "auto":
        return spec or "none"
    if device.type != "cuda":
        return "none"
    import torch

    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"


def set_deterministic() -> None:
    """Deterministic kernels only (``--deterministic``): on a GPU some kernels (e.g. the backward of
    bilinear interpolation, scatter-add) accumulate in a varying order unless asked not to; slower."""
    import os

    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def amp_dtype(spec: str | None):
    import torch

    table = {None: None, "none": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if spec not in table:
        raise InputError(f"unknown precision {spec!r}", "use none, bf16 or fp16")
    return table[spec]
