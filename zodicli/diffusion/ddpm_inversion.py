"""Edit-friendly DDPM inversion (Huberman-Spiegelglas et al., CVPR 2024).

Sample every x_t independently, x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε̃_t; then for each step t -> prev:
μ_t from ε̂(x_t), z_t = (x_prev − μ_t)/σ_t, and x_prev := μ_t + σ_t·z_t (so that regeneration,
which repeats the same float operations, retraces the same path). The last step ends at x0 with
SD's final ᾱ = ᾱ_0 (a DDPM-style final σ ≈ 1e-10 would blow the last map up to ~1e9).
Regenerating with the same noise maps, prompt and guidance reconstructs x0 to float precision;
editing = regenerating with another prompt, optionally skipping the first steps.
"""
from __future__ import annotations

import math

import torch

from .schedule import step_mean
from .zodi_transfer import item_noise, sample


def ddpm_invert(stack, x0, timesteps: list[int], cond, uncond=None, guidance=1.0, control=None, eta=1.0, generators=None):
    """-> (x_T at timesteps[0], noise maps (N, steps, C, h, w))."""
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
    return xs[0], torch.stack(zs, 1)


def ddpm_regenerate(stack, x_t, noises, timesteps: list[int], cond, uncond=None, guidance=1.0, control=None,
                    eta=1.0, skip: int = 0):
    """Run the stored path from step ``skip`` on (x_t must then be the latent at timesteps[skip])."""
    return sample(stack, x_t, timesteps[skip:], cond, uncond, guidance, control, eta, noises=noises[:, skip:])
