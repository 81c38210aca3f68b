"""Deterministic DDIM inversion: the DDIM update run backwards, x_cur -> x_t with ε̂(x_cur, t)
standing in for the unknown ε̂(x_t, t). Exact only as the step count grows and with guidance 1
(and exactly so for a zero noise predictor); it does not reconstruct with random weights."""
from __future__ import annotations

import math


def ddim_invert(stack, x0, timesteps: list[int], cond, uncond=None, guidance=1.0, control=None):
    """``timesteps`` descending (as sampled); returns the latent at timesteps[0]."""
    x, cur = x0, -1                      # -1: the end of sampling, ᾱ = final alpha
    for t in timesteps[::-1]:
        eps = stack.eps(x, t, cond, uncond, guidance, control)
        a_cur, a_next = stack.alpha(cur), stack.alpha(t)
        x = math.sqrt(a_next) * (x - math.sqrt(1 - a_cur) * eps) / math.sqrt(a_cur) + math.sqrt(1 - a_next) * eps
        cur = t
    return x
