"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024).

Sample every x_t independently, x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε̃_t; then for each step t -> prev:
μ_t from ε̂(x_t), z_t = (x_prev − μ_t)/σ_t, and x_prev := μ_t + σ_t·z_t (so that regeneration,
which repeats the same float operations, retraces the same path). The last step ends at x0 with
SD's final ᾱ = ᾱ_0 (a DDPM-style final σ ≈ 1e-10 would blow the last map up to ~1e9).
Regenerating with the same noise maps, prompt and guidance reconstructs x0 to float precision;
editing = regenerating with another prompt, optionally skipping the first K steps, which starts from
the stored path latent at timesteps[K], as the authors' code does (not from x_T).
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError
from .schedule import step_mean
from .zodi_transfer import item_noise, sample


def ddpm_invert(stack, x0, timesteps: list[int], cond, uncond=None, guidance=1.0, control=None, eta=1.0, generators=None):
    """-> (path, noise maps), both (N, steps, C, h, w): path[:, i] is x at timesteps[i] (the authors'
    ``wts``, sampled independently), noise[:, i] the z_t of the step that leaves it."""
    xs = []
    for t in timesteps:
        a = stack.alpha(t)
        xs.append(math.sqrt(a) * x0 + math.sqrt(1 - a) * item_noise(x0, generators))
    xs.append(x0)
    x = xs[0]
    zs = []
    for i, t in enumerate(timesteps):
        prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        eps = stack.eps(x, t, cond, uncond, guidance, control)
        mean, sigma, _ = step_mean(stack, x, t, prev, eps, eta)
        z = (xs[i + 1] - mean) / sigma
        zs.append(z)
        x = mean + sigma * z
    return torch.stack(xs[:-1], 1), torch.stack(zs, 1)


def ddpm_regenerate(stack, path, noises, timesteps: list[int], cond, uncond=None, guidance=1.0, control=None,
                    eta=1.0, skip: int = 0):
    """Regenerate from step ``skip``: start at the path latent x_{timesteps[skip]} (the authors start an
    edit from ``wts[N - skip]``) and add the stored noise maps of the later steps. With the inversion's
    own prompt and guidance every ``skip`` regenerates the same x0."""
    if not 0 <= skip < len(timesteps):
        raise InputError(f"--skip {skip} is out of range for {len(timesteps)} inversion steps",
                         f"use 0 <= skip < {len(timesteps)}")
    return sample(stack, path[:, skip], timesteps[skip:], cond, uncond, guidance, control, eta, noises=noises[:, skip:])
