"""DIFF as its authors train it: the frozen diffusion UNet in the loop (Ji et al. 2024).

Every forward encodes the (augmented) images with the frozen VAE (z0 = s·a posterior sample), runs
DIFF's stochastic inversion with fresh noise (``diffusion/features.py``) and records the hooked
features, which the :class:`~.diff_head.DiffFusion` head segments. Only the head trains and only the
head is saved; the diffusion model is rebuilt from its spec (``sd_model``) when a checkpoint loads.

Noise: in training from torch's global generator (fresh each step; a resume restores its state); in
eval mode from a generator seeded by each image's own latent, so a prediction depends on the image
alone, not on the batch it came in.
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

from ...errors import InputError
from . import register_model
from .diff_head import DIFF_WIDTHS, DiffFusion

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class DiffOnline(nn.Module):
    def __init__(self, sd_model: str, num_classes: int = 19, widths=DIFF_WIDTHS, blocks: str = "diff"):
        super().__init__()
        from ...diffusion.features import FEATURE_TIMESTEPS, INVERSION_TIMESTEPS, feature_layout, select_blocks
        from ...diffusion.models import load_stack

        stack = load_stack(sd_model)
        self.__dict__["stack"] = stack            # frozen and rebuilt from its spec: not a submodule, not saved
        self.names = select_blocks(stack.unet, blocks)
        self.inversion, self.timesteps = INVERSION_TIMESTEPS, FEATURE_TIMESTEPS
        layout = feature_layout(stack, self.names, self.timesteps)
        self.head = DiffFusion({k.split("/")[1]: v["channels"] for k, v in layout.items()}, num_classes, tuple(widths))
        self.register_buffer("empty", stack.text([""]).detach().clone(), persistent=False)

    def _follow(self, device) -> None:
        """Keep the frozen models on the head's device (fp16 on CUDA, as DIFF runs them)."""
        s = self.stack
        if s.device != device:
            s.device, s.dtype = device, (torch.float16 if device.type == "cuda" else torch.float32)
            for m in (s.unet, s.vae, s.text_encoder):
                m.to(device, s.dtype)

    def _generators(self, z0: torch.Tensor) -> list:
        if self.training:
            return [None] * z0.shape[0]
        return [torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(z.cpu().numpy().tobytes()).digest()[:8], "little") >> 1)
                for z in z0]

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> dict:
        """Images (N, 3, H, W), ImageNet-normalised -> {"s8": (N, C, H/8, W/8), ...}."""
        from ...diffusion.features import extract
        from ...diffusion.models import fixed_batches

        self._follow(x.device)
        s = self.stack
        x01 = (x * IMAGENET_STD.to(x.device) + IMAGENET_MEAN.to(x.device)).clamp(0, 1)
        # one image per VAE call, so that each image's latent (and the noise seeded by it) is its own
        moments = fixed_batches(lambda b: s.vae.encode(b).latent_dist.parameters, s.compute_batch,
                                (x01 * 2 - 1).to(s.dtype)).float()
        mean, logvar = moments.chunk(2, dim=1)
        gens = self._generators(mean)
        eps = torch.stack([torch.randn(mean.shape[1:], generator=g) for g in gens]).to(x.device)
        z0 = (mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * eps) * s.vae_scale
        feats = extract(s, z0, self.empty.expand(x.shape[0], -1, -1).to(s.dtype), self.names, self.inversion,
                        self.timesteps, 1.0, gens)
        return {f"s{k}": v for k, v in feats.items()}

    def forward(self, x):
        return self.head(self.features(x))


@register_model("diff_online", needs="a Stable Diffusion model (--backbone diff-online --sd-model M)")
def diff_online(num_classes=19, output_stride=None, pretrained=None, sd_model=None, widths=None):
    if not sd_model:
        raise InputError("diff_online needs a Stable Diffusion model", "train it with --backbone diff-online --sd-model sd21-base")
    return DiffOnline(sd_model, num_classes, tuple(widths or DIFF_WIDTHS))
