"""ZoDi image transfer (Azuma et al. 2024): layout-preserving translation with ControlNet-seg.

1. z0 = 0.18215·VAE.encode(x) (a posterior sample).
2. Stochastic inversion at strength γ, t* = int(γ·T):
   z̃ = √ᾱ_t*·z0 + √(1−ᾱ_t*)·n, n ~ N(0, I);  ε̂ = ε_θ(z̃, t*, c, control) (conditional, no guidance);
   z_enc = √ᾱ_t*·z0 + √(1−ᾱ_t*)·ε̂.
3. DDIM with η = 1 over the last K = int(γ·steps) timesteps, classifier-free guidance on the text.
   The public code's quirk: z_enc (at t*, e.g. 600 for fog) is treated as being at the first kept
   timestep (551). ``exact_timestep=True`` encodes at that timestep instead.
All randomness is drawn per item from its own generator (seeded by the run seed and the item key).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .schedule import kept_timesteps, step_mean


def item_noise(like: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """N(0, I) of ``like``'s shape, one CPU generator per item (device- and batch-independent)."""
    return torch.stack([torch.randn(like.shape[1:], generator=g) for g in generators]).to(like.device, like.dtype)


def zodi_encode(stack, z0, t_star: int, cond, control, generators):
    """z_enc of step 2; one UNet (+ ControlNet) call."""
    a = stack.alpha(t_star)
    noisy = math.sqrt(a) * z0 + math.sqrt(1 - a) * item_noise(z0, generators)
    eps = stack.eps(noisy, t_star, cond, control=control)
    return math.sqrt(a) * z0 + math.sqrt(1 - a) * eps


def sample(stack, z, timesteps: list[int], cond, uncond=None, guidance=1.0, control=None, eta=1.0,
           generators=None, noises=None, guide: Callable | None = None, on_step: Callable | None = None,
           guidance_interval: tuple[int, int] | None = None):
    """Denoise ``z`` (taken to be at ``timesteps[0]``) to the end. Per-step noise comes from
    ``noises[:, i]`` (DDPM regeneration) or the generators. ``guide(i, t, z, mean, sigma, x0, eps)``
    may return a shifted mean (label guidance). ``guidance_interval`` (lo, hi): classifier-free
    guidance only at timesteps lo <= t <= hi, the conditional branch alone elsewhere (Kynkäänniemi et
    al. 2024), which saves the unconditional rows there."""
    for i, t in enumerate(timesteps):
        prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        guided = guidance_interval is None or guidance_interval[0] <= t <= guidance_interval[1]
        eps = stack.eps(z, t, cond, uncond if guided else None, guidance, control)
        mean, sigma, x0 = step_mean(stack, z, t, prev, eps, eta)
        if guide is not None:
            mean = guide(i, t, z, mean, sigma, x0, eps)
        if sigma > 0:
            noise = noises[:, i] if noises is not None else item_noise(z, generators)
            z = mean + sigma * noise
        else:
            z = mean
        if on_step is not None:
            on_step(i, t)
    return z


def encode_timestep(strength: float, steps: int, exact: bool, num_train: int = 1000) -> int:
    """t* of step 2; γ = 1 gives int(γ·T) = T, one past the schedule, so it is kept at T − 1."""
    return kept_timesteps(steps, strength, num_train)[0] if exact else min(int(strength * num_train), num_train - 1)


def transfer(stack, images, labels_control, cond, uncond, generators, strength=0.6, steps=20, guidance=9.0,
             eta=1.0, exact_timestep=False, guide=None, guidance_interval=None):
    """Translate a batch: uint8 images -> uint8 images (same size). Returns (images, z_enc)."""
    z0 = stack.encode(images, generators)
    ts = kept_timesteps(steps, strength, stack.num_train_timesteps)
    z = zodi_encode(stack, z0, encode_timestep(strength, steps, exact_timestep, stack.num_train_timesteps), cond,
                    labels_control, generators)
    z_enc = z
    z = sample(stack, z, ts, cond, uncond, guidance, labels_control, eta, generators, guide=guide,
               guidance_interval=guidance_interval)
    return stack.decode(z), z_enc
