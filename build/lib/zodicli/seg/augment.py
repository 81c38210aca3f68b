"""Training augmentation (ZoDi's): resize; one random crop and flip shared by an image, its
translation and their label map; colour jitter drawn independently per image. All randomness comes
from the numpy generator passed in, so a sample is a function of (seed, position)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
YIQ_TO_RGB = torch.linalg.inv(RGB_TO_YIQ)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [0, 1]."""
    img = img if img.flags.writeable else img.copy()   # Pillow's arrays are read-only
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float().div_(255)


def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN.to(x.device)) / STD.to(x.device)


def resize_image(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[None], size=size, mode="bilinear", align_corners=False)[0].clamp_(0, 1)


def resize_label(y: torch.Tensor, size) -> torch.Tensor:
    if tuple(y.shape[-2:]) == tuple(size):
        return y
    return F.interpolate(y[None, None].float(), size=size, mode="nearest")[0, 0].to(y.dtype)


def crop_box(rng: np.random.Generator, hw, crop):
    h, w = hw
    ch, cw = min(crop[0], h), min(crop[1], w)
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    return y0, x0, ch, cw


def color_jitter(x: torch.Tensor, rng: np.random.Generator, strength=(0.5, 1.5), hue=0.3) -> torch.Tensor:
    """Brightness, contrast, saturation ~ U(strength); hue rotated by U(-hue, hue) turns, applied as
    a rotation of the chroma plane in YIQ space (a cheap stand-in for an HSV hue shift)."""
    b, c, s = rng.uniform(*strength, size=3)
    h = rng.uniform(-hue, hue)
    x = x * b
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])
    x = (x - grey.mean()) * c + grey.mean()
    grey = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
    x = grey + (x - grey) * s
    if h:
        theta = 2 * np.pi * h
        rot = torch.tensor([[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]], dtype=torch.float32)
        m = YIQ_TO_RGB @ rot @ RGB_TO_YIQ
        x = torch.einsum("ij,jhw->ihw", m, x)
    return x.clamp_(0, 1)


def photometric(x: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The strong photometric baseline (no diffusion model): on top of ``color_jitter``, a global
    brightness gain down to 0.1 (night-dark), gamma in [0.5, 2], a Gaussian blur (sigma <= 1.5,
    half the time) and pixel noise (sigma <= 0.05, half the time). (3, H, W) in [0, 1] -> same."""
    x = x * float(np.exp(rng.uniform(np.log(0.1), np.log(1.2))))
    x = x.clamp(0, 1) ** float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    if rng.random() < 0.5:
        sigma = rng.uniform(0.3, 1.5)
        r = int(np.ceil(2 * sigma))
        k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
        k = (k / k.sum()).to(x)
        x = F.conv2d(F.pad(x[:, None], (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))[:, 0]
    if rng.random() < 0.5:
        noise = torch.from_numpy(rng.normal(0, rng.uniform(0.01, 0.05), x.shape).astype(np.float32))
        x = x + noise.to(x)
    return x.clamp_(0, 1)
