"""Losses of train-seg: cross-entropy, ZoDi's feature similarity, confidence-weighted
pseudo-label cross-entropy, and a domain discriminator for adversarial alignment."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

IGNORE = 255


def upsample(logits: torch.Tensor, size) -> torch.Tensor:
    return logits if tuple(logits.shape[-2:]) == tuple(size) else F.interpolate(
        logits, size=size, mode="bilinear", align_corners=False)


def cross_entropy(logits, labels, weight=None):
    """Per-pixel CE at label resolution (ignore 255), averaged over valid pixels; ``weight`` (N,)
    scales each image, (N, H, W) each pixel."""
    logits = upsample(logits, labels.shape[-2:]).float()
    if weight is None:
        return F.cross_entropy(logits, labels, ignore_index=IGNORE)     # mean over non-ignored pixels
    loss = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    valid = (labels != IGNORE).float() * (weight.view(-1, 1, 1) if weight.dim() == 1 else weight)
    return (loss * valid).sum() / valid.gt(0).sum().clamp(min=1)


def feature_similarity(f_src, f_syn):
    """ZoDi: mean cosine similarity of global-average-pooled, L2-normalised last-stage features.
    The training loss subtracts w times this (gradients flow through both branches)."""
    a = F.normalize(f_src.float().mean((2, 3)), dim=1)
    b = F.normalize(f_syn.float().mean((2, 3)), dim=1)
    return (a * b).sum(1).mean()


class _ReverseGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return -ctx.scale * g, None


class DomainDiscriminator(nn.Module):
    """Per-location domain classifier on backbone features, behind a gradient-reversal layer:
    it learns to tell source (0) from target (1) while the backbone learns to fool it. Mixed
    (ClassMix) images carry a per-pixel domain map. A reimplementation of ICCLD's idea of aligning
    source / mixed / target latents, not their (unpublished) code."""

    def __init__(self, channels: int, width: int = 256):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.LeakyReLU(0.2, True),
                                 nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2, True),
                                 nn.Conv2d(width, 1, 1))

    def forward(self, features, domain_map, scale=1.0):
        """``domain_map``: (N, h, w) float in [0, 1], the target share of each location."""
        logits = self.net(_ReverseGrad.apply(features.float(), scale))[:, 0]
        target = F.interpolate(domain_map[:, None].float(), size=logits.shape[-2:], mode="area")[:, 0]
        return F.binary_cross_entropy_with_logits(logits, target)
