"""Online self-training with an EMA teacher and ClassMix (DACS; MADM runs it every iteration).

Per step the teacher, an exponential moving average of the student's weights, labels the target
batch (for a diffusion backbone at MADM's DPLG timestep t(i) = ⌊t0·(1 − i/E)⌋, on noised latents);
the pseudo-label weight is the share of target pixels whose confidence passes the threshold; ClassMix
pastes half of each source image's classes onto its target image. The student then learns the
mixed image with source labels (weight 1) where pasted and pseudo-labels (that weight) elsewhere.
    θ_teacher ← α·θ_teacher + (1 − α)·θ_student,   α = min(1 − 1/(i + 1), decay)
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class OnlineTeacher:
    def __init__(self, student: nn.Module, decay: float = 0.999, threshold: float = 0.968, dplg: tuple[int, int] | None = None):
        self.ema = copy.deepcopy(student).eval().requires_grad_(False)
        if hasattr(self.ema, "rehook"):           # models that record features through forward hooks
            self.ema.rehook()
        self.decay, self.threshold = decay, threshold
        self.dplg = dplg if hasattr(self.ema, "set_dplg_timestep") else None   # DPLG needs a diffusion model

    @torch.no_grad()
    def update(self, student: nn.Module, iteration: int) -> None:
        """Fold the student's weights in after its optimiser step ``iteration`` (0-based)."""
        alpha = min(1 - 1 / (iteration + 1), self.decay)
        for t, s in zip(self.ema.parameters(), student.parameters()):
            t.mul_(alpha).add_(s.detach(), alpha=1 - alpha)
        for t, s in zip(self.ema.buffers(), student.buffers()):
            t.copy_(s)

    @torch.no_grad()
    def pseudo_labels(self, target: torch.Tensor, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Target images (N, 3, H, W) -> (labels (N, H, W) long, weight: one scalar for the batch, as MADM)."""
        if self.dplg is not None:
            from ..pipeline.pseudolabel import dplg_timestep

            self.ema.set_dplg_timestep(dplg_timestep(self.dplg[0], self.dplg[1], iteration))
        logits = self.ema(target)["logits"].float()
        if self.dplg is not None:
            self.ema.set_dplg_timestep(0)
        prob = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False).softmax(1)
        conf, labels = prob.max(1)
        return labels, (conf >= self.threshold).float().mean()

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)
