"""Semantic gradient guidance (SGG; Peng, Hu, Ke, Liu, ICCV 2023), applied to latent diffusion.

A segmenter g trained on the source scores the step's predicted image against the source labels y,
and the step's mean moves down the gradient: μ̂ = μ − λ·Σ·∇_{x_k} L, with Σ = σ_k² (the step's
variance; the DDPM posterior variance when η = 0). Steps alternate between
  local class-regional guidance (even steps): for each class c with mask m_c,
      L_c = CE(g(x̂ ⊙ m_c), y ⊙ m_c), μ̂_c = μ − λ·Σ·∇L_c, merged as Σ_c m_c ⊙ μ̂_c;
  global scene guidance (odd steps): L = CE(g(x̂), y) on the whole image.
Here x̂ = VAE.decode(x̂0(x_k)) with ε̂ held fixed (no backpropagation through the UNet), since g
works on images, not latents. Sampling each class with the same noise and merging equals merging
the means and adding the noise once, which is what is done.
PTL (progressive translation learning) is a loop of translate + train-seg at growing strength:
see recipes/sgg/ptl.sh.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..seg.augment import normalize

IGNORE = 255


class LabelGuidance:
    """The ``guide`` callback of :func:`zodi_transfer.sample`. ``labels``: per item (H, W) uint8
    train ids at the processing size; ``modes`` records which guidance each step used."""

    def __init__(self, stack, segmenter, labels: list[np.ndarray], scale: float, chunk: int = 8):
        self.stack, self.seg, self.scale, self.chunk = stack, segmenter, scale, chunk
        self.y = torch.from_numpy(np.stack(labels).astype(np.int64)).to(stack.device)
        self.modes: list[str] = []

    def __call__(self, i, t, z, mean, sigma, x0, eps):
        a = self.stack.alpha(t)
        var = sigma ** 2 if sigma > 0 else (1 - a)
        if i % 2 == 0:
            self.modes.append("local")
            return self._local(z, eps, a, mean, var)
        self.modes.append("global")
        return mean - self.scale * var * self.grad(z, eps, a, self.y)

    def grad(self, z, eps, a, y, image_mask=None):
        """∇_z of the per-image mean CE of g(decode(x̂0(z))) against ``y``, in fixed-shape calls.
        The loss is a sum of per-row terms, so padding rows never reach the real rows' gradients."""
        from .models import fixed_batches

        return fixed_batches(lambda z_, e_, y_, m_: self._grad(z_, e_, a, y_, m_), self.stack.compute_batch,
                             z, eps, y, image_mask)

    def _grad(self, z, eps, a, y, image_mask):
        with torch.enable_grad():
            zg = z.detach().clone().requires_grad_(True)
            x0 = (zg - math.sqrt(1 - a) * eps.detach()) / math.sqrt(a)
            img = self.stack.vae.decode((x0 / self.stack.vae_scale).to(self.stack.dtype)).sample.float()
            img = (img.clamp(-1, 1) + 1) / 2
            if image_mask is not None:
                img = img * image_mask[:, None]
            logits = self.seg(normalize(img))["logits"].float()
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
            ce = F.cross_entropy(logits, y, ignore_index=IGNORE, reduction="none").sum((1, 2))
            loss = (ce / (y != IGNORE).sum((1, 2)).clamp(min=1)).sum()
            return torch.autograd.grad(loss, zg)[0]

    def _local(self, z, eps, a, mean, var):
        rows = [(n, int(c)) for n in range(z.shape[0]) for c in torch.unique(self.y[n]).tolist() if c != IGNORE]
        merged = mean.clone()
        for start in range(0, len(rows), self.chunk):
            part = rows[start:start + self.chunk]
            n_idx = torch.tensor([n for n, _ in part], device=z.device)
            masks = torch.stack([(self.y[n] == c) for n, c in part]).float()             # (R, H, W)
            y_rows = torch.where(masks.bool(), self.y[n_idx], torch.full_like(self.y[n_idx], IGNORE))
            g = self.grad(z[n_idx], eps[n_idx], a, y_rows, image_mask=masks)
            lat = F.interpolate(masks[:, None], size=z.shape[-2:], mode="area")             # m_c at latent size
            for r, (n, _) in enumerate(part):
                merged[n] += lat[r] * (-self.scale * var * g[r])
        return merged
