"""DIFF feature extraction (Ji et al. 2024): frozen diffusion UNet features for segmentation.

The image is inverted stochastically from x0 up to t <= 160 over a fixed ascending list of
timesteps; at the feature timesteps (91, 52, 30, 22, 18, 14, 11, 7, 3 by default) the outputs of
the chosen up-block modules are recorded through forward hooks, grouped by their stride in the
image (8, 16, 32, 64 for SD) and concatenated over modules and timesteps along channels.

One inversion step, cur -> t (ascending), with ε̂ = ε(x_cur, t) and s = η·√(1 − ᾱ_t/ᾱ_cur):
    x_t = √ᾱ_t·x̂0 + √(1 − ᾱ_t − s²)·ε̂ + s·n,   x̂0 = (x_cur − √(1−ᾱ_cur)·ε̂)/√ᾱ_cur
η = 0 is plain DDIM inversion; η > 0 adds fresh noise of the forward process's step variance.
v-prediction checkpoints are converted to ε by the Stack (treating v as ε is a bug in DIFF's code).
The exact 37-step list of DIFF's code is not in our reference; ours is below and overridable.
"""
from __future__ import annotations

import math
import re

import torch

from ..errors import InputError
from .zodi_transfer import item_noise

FEATURE_TIMESTEPS = (91, 52, 30, 22, 18, 14, 11, 7, 3)
INVERSION_TIMESTEPS = (1, 3, 5, 7, 9, 11, 13, 14, 16, 18, 20, 22, 24, 26, 28, 30, 34, 38, 42, 46, 52, 58, 64, 70,
                       76, 82, 91, 98, 105, 112, 119, 126, 133, 140, 147, 154, 160)
BLOCK_SETS = {
    # DIFF: every resnet and transformer output of every up block.
    "diff": r"up\d+\.(res|attn)\d+",
    # MADM: the last layer of up blocks 1, 2, 3 (1280 ch @1/32, 640 @1/16, 320 @1/8 for SD).
    "madm": r"up[123]\.last",
}


def up_modules(unet) -> dict[str, torch.nn.Module]:
    """Named hook points: up{i}.res{j}, up{i}.attn{j} and up{i}.last (the block's last layer)."""
    out = {}
    for i, block in enumerate(unet.up_blocks):
        for j, r in enumerate(block.resnets):
            out[f"up{i}.res{j}"] = r
        for j, a in enumerate(getattr(block, "attentions", None) or []):
            out[f"up{i}.attn{j}"] = a
        atts = getattr(block, "attentions", None)
        out[f"up{i}.last"] = atts[-1] if atts else block.resnets[-1]
    return out


def select_blocks(unet, spec: str) -> list[str]:
    """``diff``, ``madm`` or a comma list of names / regular expressions."""
    names = list(up_modules(unet))
    patterns = [BLOCK_SETS[spec]] if spec in BLOCK_SETS else [p.strip() for p in spec.split(",") if p.strip()]
    chosen = [n for n in names if any(re.fullmatch(p, n) for p in patterns)]
    if not chosen:
        raise InputError(f"--blocks {spec!r} matches no UNet module", f"use diff, madm or names like {', '.join(names[:4])}")
    return chosen


def check_timesteps(inversion, features) -> None:
    if list(inversion) != sorted(set(inversion)):
        raise InputError("--inversion-timesteps must be strictly ascending", "e.g. 1,3,5,...,160")
    if max(inversion) > 160:
        raise InputError(f"inversion timestep {max(inversion)} exceeds 160", "DIFF never inverts above t = 160")
    missing = sorted(set(features) - set(inversion))
    if missing:
        raise InputError(f"feature timesteps {missing} are not in the inversion list", "add them to --inversion-timesteps")


class FeatureRecorder:
    """Forward hooks that collect the outputs of the chosen modules while ``active``; the UNet runs
    in fixed-shape padded chunks, so outputs arrive chunk by chunk and are trimmed by the caller."""

    def __init__(self, unet, names: list[str], detach: bool = True):
        mods = up_modules(unet)
        self.names, self.active, self.store, self.detach = names, False, {}, detach
        self.handles = [mods[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def fn(module, args, output):
            if self.active:
                out = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
                self.store.setdefault(name, []).append(out.detach().float() if self.detach else out)
        return fn

    def close(self):
        for h in self.handles:
            h.remove()


def extract(stack, z0, cond, names: list[str], inversion=INVERSION_TIMESTEPS, features=FEATURE_TIMESTEPS,
            eta: float = 1.0, generators=None) -> dict[int, torch.Tensor]:
    """-> {image stride: (N, C, H/stride, W/stride) float32}, channels ordered by (timestep, module)."""
    rec = FeatureRecorder(stack.unet, names)
    by_t: dict[int, dict[str, torch.Tensor]] = {}
    try:
        x, cur = z0, -1
        for t in inversion:
            rec.active, rec.store = t in features, {}
            eps = stack.eps(x, t, cond)
            if t in features:
                by_t[t] = {n: torch.cat(chunks)[: x.shape[0]] for n, chunks in rec.store.items()}
            a_cur, a_t = stack.alpha(cur), stack.alpha(t)
            x0 = (x - math.sqrt(1 - a_cur) * eps) / math.sqrt(a_cur)
            s = eta * math.sqrt(max(1 - a_t / a_cur, 0.0))
            x = math.sqrt(a_t) * x0 + math.sqrt(max(1 - a_t - s * s, 0.0)) * eps
            if s > 0:
                x = x + s * item_noise(x, generators)
            cur = t
    finally:
        rec.close()
    latent_w = z0.shape[-1]
    groups: dict[int, list[torch.Tensor]] = {}
    for t in features:
        for n in names:
            f = by_t[t][n]
            stride = stack.vae_factor * latent_w // f.shape[-1]
            groups.setdefault(stride, []).append(f)
    return {s: torch.cat(fs, 1) for s, fs in sorted(groups.items())}


def feature_layout(stack, names: list[str], features) -> dict:
    """``{"features/s<stride>": {stride, channels, timesteps, modules}}`` from the UNet config, before
    any image is processed (so the artifact can carry it from the start)."""
    ups = list(reversed(stack.unet.config.block_out_channels))
    n = len(ups)
    layout: dict[int, list[tuple[str, int]]] = {}
    for name in names:
        i = int(name[2:name.index(".")])
        stride = stack.vae_factor * 2 ** (n - 1 - i)
        layout.setdefault(stride, []).append((name, ups[i]))
    return {f"features/s{s}": {"stride": s, "channels": len(features) * sum(c for _, c in mods),
                               "timesteps": list(features), "modules": ",".join(m for m, _ in mods)}
            for s, mods in sorted(layout.items())}
