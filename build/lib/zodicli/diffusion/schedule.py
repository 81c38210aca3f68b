"""Timesteps and the shared DDIM/DDPM step.

One step from x_t to x_prev (ᾱ from the training schedule; ``prev < 0`` is the end, ᾱ_0 in SD):
    x̂0 = (x_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t
    σ_t = η·√((1−ᾱ_prev)/(1−ᾱ_t)·(1−ᾱ_t/ᾱ_prev))
    μ_t = √ᾱ_prev·x̂0 + √(1−ᾱ_prev−σ_t²)·ε̂,        x_prev = μ_t + σ_t·z
Sampling, DDPM inversion and regeneration all call :func:`step_mean`, so regeneration repeats the
inversion's float operations exactly.
"""
from __future__ import annotations

import math

from ..errors import InputError


def ddim_timesteps(steps: int, num_train: int = 1000, offset: int = 1) -> list[int]:
    """SD's "leading" spacing with steps_offset 1: 20 steps -> 951, 901, ..., 1 (descending)."""
    if not 1 <= steps <= num_train:
        raise InputError(f"--steps {steps} is out of range", f"use 1..{num_train}")
    ratio = num_train // steps
    return [i * ratio + offset for i in range(steps)][::-1]


def kept_timesteps(steps: int, strength: float, num_train: int = 1000) -> list[int]:
    """The last K = int(γ·steps) timesteps that an edit at strength γ runs (fog 0.6 -> 551..1, 12 steps)."""
    if not 0 < strength <= 1:
        raise InputError(f"--strength {strength} must be in (0, 1]", "e.g. 0.6 for fog, 0.9 for night")
    k = int(strength * steps)
    if k < 1:
        raise InputError(f"--strength {strength} with --steps {steps} runs no step", "raise --strength or --steps")
    return ddim_timesteps(steps, num_train)[-k:]


def step_mean(stack, x, t: int, prev: int, eps, eta: float):
    """(μ_t, σ_t, x̂0) of the step t -> prev."""
    a, ap = stack.alpha(t), stack.alpha(prev)
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    sigma = eta * math.sqrt((1 - ap) / (1 - a) * (1 - a / ap))
    mean = math.sqrt(ap) * x0 + math.sqrt(max(1 - ap - sigma ** 2, 0.0)) * eps
    return mean, sigma, x0
