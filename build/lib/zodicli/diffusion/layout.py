"""Label map -> ControlNet-seg conditioning image, and the processing size.

ControlNet-seg (control_v11p_sd15_seg) was trained on ADE20K-palette maps; ZoDi's public code feeds
Cityscapes' ``gtFine_color.png``, where all 34 label ids are coloured (parking, rail track, guard
rail, ...). Palettes: ``cityscapes-full`` (that, indexed by label id), ``cityscapes`` (the 19 train
ids, everything else black) and ``ade20k`` (train ids in ControlNet-seg's colours)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..data import classsets
from ..errors import InputError

PALETTES = ("cityscapes-full", "cityscapes", "ade20k")
BY_LABEL_ID = {"cityscapes-full"}        # palettes indexed by Cityscapes label ids, not train ids


def palette(name: str) -> np.ndarray:
    """(256, 3) uint8 colour per train id (per label id for cityscapes-full); others black."""
    if name not in PALETTES:
        raise InputError(f"unknown palette {name!r}", f"use {', '.join(PALETTES)}")
    if name == "cityscapes-full":
        return classsets.label_id_colors()
    lut = np.zeros((256, 3), np.uint8)
    colors = classsets.load("cityscapes19").colors if name == "cityscapes" else classsets.cityscapes_to_ade20k_colors()
    lut[: len(colors)] = colors
    return lut


def processing_size(h: int, w: int, short_side: int, multiple: int) -> tuple[int, int]:
    """Scale so the short side is ``short_side``; round both sides to multiples (ZoDi: 2048x1024 -> 1024x512)."""
    s = short_side / min(h, w)
    return max(multiple, int(round(h * s / multiple)) * multiple), max(multiple, int(round(w * s / multiple)) * multiple)


def check_size(size: tuple[int, int], multiple: int) -> None:
    if size[0] % multiple or size[1] % multiple:
        raise InputError(f"--size {size[0]}x{size[1]} is not a multiple of {multiple} (8 x the VAE factor for SD)",
                         f"use e.g. {size[0] // multiple * multiple}x{size[1] // multiple * multiple}")


def resize_image(img: np.ndarray, size) -> np.ndarray:
    if img.shape[:2] == tuple(size):
        return img
    t = torch.tensor(img).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=size, mode="bicubic", align_corners=False, antialias=True)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def resize_label(lbl: np.ndarray, size) -> np.ndarray:
    if lbl.shape == tuple(size):
        return lbl
    t = torch.tensor(lbl)[None, None].float()
    return F.interpolate(t, size=size, mode="nearest")[0, 0].to(torch.uint8).numpy()


def control_image(labels: list[np.ndarray], palette_name: str) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1]: the coloured label maps / 255 (label ids for cityscapes-full,
    train ids otherwise)."""
    lut = palette(palette_name)
    return torch.stack([torch.from_numpy(lut[lbl]).permute(2, 0, 1) for lbl in labels]).float() / 255
