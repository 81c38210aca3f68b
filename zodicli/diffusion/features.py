"""DIFF feature extraction (Ji et al. 2024): frozen diffusion UNet features for segmentation, as
the authors' code computes them (Yux1angJi/DIFF: ``diffusion.py``, ``resnet.py``, ``diff_config.yaml``).

Stochastic inversion from x_0 = z0 upward over DIFF's 37-step list; step t -> n evaluates ε̂ = ε(x_t, t)
at the *current* t (0 first), and with ᾱ from the training schedule (ᾱ_0 at t = 0):
    x̂0 = (x_t − √(1−ᾱ_t)·ε̂)/√ᾱ_t
    c1 = η·√((1 − ᾱ_n/ᾱ_t)(1 − ᾱ_n)/(1 − ᾱ_t))  where 10 < t < 250, else 0
    c2 = √max(1 − ᾱ_n − c1², 1e-10)
    x_n = √ᾱ_n·x̂0 + c1·z + c2·ε̂,  z ~ N(0, I)
At the feature timesteps (91, 52, 30, 22, 18, 14, 11, 7, 3) the hooks record, per up block, each
ResNet's residual branch (the output of ``conv2``, before the skip connection and the output scale)
and the tokens of each attention block's ``transformer_blocks[0]``; they are grouped by their
stride in the image (8, 16, 32, 64 for SD) and concatenated over timesteps and modules.

DIFF runs guidance 5 over an unconditional and a conditional half that are both the empty prompt,
keeps the ResNet features of the first half and sums the attention tokens over the two. zodi makes
the one call and doubles the attention tokens: the same numbers at half the cost. v-prediction
checkpoints are converted to ε by the Stack (treating v as ε is a defect of DIFF's code).
"""
from __future__ import annotations

import math
import re

import torch

from ..errors import InputError
from .zodi_transfer import item_noise

FEATURE_TIMESTEPS = (91, 52, 30, 22, 18, 14, 11, 7, 3)
# diff_config.yaml's scheduler_timesteps, ascending: the targets of the 37 inversion steps
INVERSION_TIMESTEPS = (*range(1, 24), 26, 30, 34, 40, 45, 52, 60, 69, 80, 91, 105, 121, 139, 160)
NOISE_WINDOW = (10, 250)            # s_tmin, s_tmax: noise is added only where s_tmin < t < s_tmax
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
    if list(inversion) != sorted(set(inversion)) or inversion[0] < 1:
        raise InputError("--inversion-timesteps must be strictly ascending from 1 or more", "e.g. 1,2,3,...,160")
    if max(inversion) > 160:
        raise InputError(f"inversion timestep {max(inversion)} exceeds 160", "DIFF never inverts above t = 160")
    evaluated = {0, *inversion[:-1]}                 # each step evaluates the UNet at its starting timestep
    missing = sorted(set(features) - evaluated)
    if missing:
        raise InputError(f"feature timesteps {missing} are not evaluated by the inversion (it evaluates 0 and "
                         "every inversion timestep but the last)", "add them to --inversion-timesteps below its last one")


class FeatureRecorder:
    """Forward hooks that collect features of the chosen modules while ``active``; the UNet runs in
    fixed-shape padded chunks, so outputs arrive chunk by chunk and are trimmed by the caller.

    ``up{i}.last`` records the module's whole output (MADM). ``up{i}.res{j}`` records the ResNet's
    residual branch (``conv2``'s output) and ``up{i}.attn{j}`` the tokens of ``transformer_blocks[0]``
    as (N, C, H, W), times ``attn_scale`` (DIFF: 2, the sum over its two identical guidance halves)."""

    def __init__(self, unet, names: list[str], detach: bool = True, attn_scale: float = 1.0):
        mods = up_modules(unet)
        self.names, self.active, self.store, self.detach = names, False, {}, detach
        self.handles = []
        for n in names:
            m = mods[n]
            if ".res" in n:
                self.handles.append(m.conv2.register_forward_hook(self._hook(n)))
            elif ".attn" in n:
                shape = {}
                self.handles.append(m.register_forward_pre_hook(
                    lambda mod, args, kw, shape=shape: shape.update(hw=(kw.get("hidden_states", args[0] if args else None)).shape[-2:]),
                    with_kwargs=True))
                self.handles.append(m.transformer_blocks[0].register_forward_hook(self._hook(n, shape, attn_scale)))
            else:
                self.handles.append(m.register_forward_hook(self._hook(n)))

    def _hook(self, name, shape=None, scale=1.0):
        def fn(module, args, output):
            if self.active:
                out = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
                if shape is not None:                        # (N, H·W, C) tokens -> (N, C, H, W)
                    h, w = shape["hw"]
                    out = out.reshape(out.shape[0], h, w, out.shape[-1]).permute(0, 3, 1, 2) * scale
                self.store.setdefault(name, []).append(out.detach().float() if self.detach else out)
        return fn

    def close(self):
        for h in self.handles:
            h.remove()


def diff_invert(stack, z0, cond, inversion=INVERSION_TIMESTEPS, eta: float = 1.0, generators=None, before_eps=None):
    """DIFF's stochastic inversion of z0 (N, C, h, w) up to ``inversion[-1]``; returns x there.
    ``before_eps(t)`` is called before each UNet call (at the current timestep t)."""
    x = z0
    for t, n in zip((0, *inversion[:-1]), inversion):
        if before_eps is not None:
            before_eps(t)
        eps = stack.eps(x, t, cond)
        a_t, a_n = stack.alpha(t), stack.alpha(n)
        x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        e = eta if NOISE_WINDOW[0] < t < NOISE_WINDOW[1] else 0.0
        c1 = e * math.sqrt((1 - a_n / a_t) * (1 - a_n) / (1 - a_t))
        c2 = math.sqrt(max(1 - a_n - c1 * c1, 1e-10))
        x = math.sqrt(a_n) * x0 + c2 * eps
        if c1 > 0:
            x = x + c1 * item_noise(x, generators)
    return x


def extract(stack, z0, cond, names: list[str], inversion=INVERSION_TIMESTEPS, features=FEATURE_TIMESTEPS,
            eta: float = 1.0, generators=None) -> dict[int, torch.Tensor]:
    """-> {image stride: (N, C, H/stride, W/stride) float32}, channels ordered by (timestep, module)."""
    rec = FeatureRecorder(stack.unet, names, attn_scale=2.0)
    by_t: dict[int, dict[str, torch.Tensor]] = {}
    current: list[int] = []

    def keep_last_call():
        if current and current[-1] in features:
            by_t[current[-1]] = {name: torch.cat(chunks)[: z0.shape[0]] for name, chunks in rec.store.items()}
        rec.store = {}

    def before_eps(t):
        keep_last_call()
        current.append(t)
        rec.active = t in features              # hooks record only the calls at feature timesteps

    try:
        diff_invert(stack, z0, cond, inversion, eta, generators, before_eps)
        keep_last_call()
    finally:
        rec.close()
    latent_w = z0.shape[-1]
    groups: dict[int, list[torch.Tensor]] = {}
    for t in features:
        for name in names:
            f = by_t[t][name]
            stride = stack.vae_factor * latent_w // f.shape[-1]
            groups.setdefault(stride, []).append(f)
    return {s: torch.cat(fs, 1) for s, fs in sorted(groups.items())}


def feature_bytes(layout: dict, h: int, w: int) -> int:
    """Bytes one h x w image's features take in float16, for a ``feature_layout``."""
    return sum(2 * v["channels"] * -(-h // v["stride"]) * -(-w // v["stride"]) for v in layout.values())


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
