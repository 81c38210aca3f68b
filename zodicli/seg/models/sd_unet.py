"""MADM's segmenter (Xia et al., NeurIPS 2024): a fine-tuned Stable Diffusion UNet as backbone.

    z0 = s·VAE.encode(x) (posterior mean; VAE frozen; s the VAE's scaling factor, SD's 0.18215)
    z_t = √ᾱ_t·z0 + √(1−ᾱ_t)·ε_fixed  (t = 0 in training, DPLG's t when labelling; ε_fixed: one N(0, I)
                                          tensor, seed 42, resized bicubically to the latent size)
    o = UNet(z_t, t, e, τ),  e = tanh(α_u)⊙e_∅ + tanh(α_c)⊙p  (e_∅ the empty prompt's embedding; a
                             learned prompt p ~ N(0, 0.02²) truncated; per-element gates α_u, α_c ~ U(0, 1))
                             with tanh(α_τ)⊙τ added to the UNet's time embedding (α_τ = 0, τ ~ N(0, 0.02²)):
                             the authors' ClipFeatureProject with same_cond_params, one set for both modalities
    features: the last layer of up blocks 1, 2, 3 (SD: 1280 @1/32, 640 @1/16, 320 @1/8), via hooks
    palette image: VAE.decode(o), detached (no gradient reaches the UNet through it), full resolution
    head: DAFormer-style embeddings of the three levels at 1/8, joined at 1/4 with a stride-4 stem of
          the palette image, then a classifier (logits at 1/4).
LPLR: the label map coloured with the class palette (ignore -> black), encoded by the frozen VAE
(mean × s) is z_y; the loss is L1(o, z_y) on latent cells whose pixels are all labelled.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...data import classsets
from . import register_model

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class SDUNetSegmenter(nn.Module):
    def __init__(self, sd_model: str, num_classes: int = 19, embed: int = 256):
        super().__init__()
        from ...diffusion.features import FeatureRecorder, select_blocks
        from ...diffusion.models import load_stack

        stack = load_stack(sd_model)
        self.unet, self.vae = stack.unet.requires_grad_(True), stack.vae.requires_grad_(False)
        self.scale = stack.vae_scale
        self.register_buffer("alphas", stack.alphas_cumprod.float(), persistent=False)
        self.register_buffer("empty", stack.text([""]).detach().clone(), persistent=False)
        self.prompt = nn.Parameter(nn.init.trunc_normal_(torch.zeros_like(self.empty), std=0.02))
        self.alpha_cond = nn.Parameter(torch.rand_like(self.empty))
        self.alpha_uncond = nn.Parameter(torch.rand_like(self.empty))
        time_dim = self.unet.time_embedding.linear_2.out_features
        self.time_offset = nn.Parameter(nn.init.trunc_normal_(torch.zeros(1, time_dim), std=0.02))
        self.alpha_time = nn.Parameter(torch.zeros(time_dim))
        self.unet.time_embedding.register_forward_hook(self._add_time_offset)
        gen = torch.Generator().manual_seed(42)
        self.register_buffer("fixed_noise", torch.randn(1, self.unet.config.in_channels, 64, 64, generator=gen), persistent=False)
        self.dplg_t = 0
        names = select_blocks(self.unet, "madm")
        self._rec = FeatureRecorder(self.unet, names, detach=False)     # fine-tuning: CE reaches the UNet
        self._names = names
        ups = list(reversed(self.unet.config.block_out_channels))
        chans = [ups[int(n[2:n.index(".")])] for n in names]
        self.embed = nn.ModuleList(nn.Conv2d(c, embed, 1) for c in chans)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 4, stride=4), nn.GroupNorm(8, 64), nn.ReLU(True))
        self.fuse = nn.Sequential(nn.Conv2d(embed * len(chans), embed, 1, bias=False), nn.BatchNorm2d(embed), nn.ReLU(True))
        self.head = nn.Sequential(nn.Conv2d(embed + 64, embed, 3, padding=1, bias=False), nn.BatchNorm2d(embed), nn.ReLU(True),
                                  nn.Dropout2d(0.1), nn.Conv2d(embed, num_classes, 1))
        self.palette = torch.tensor(classsets.load("cityscapes19").colors, dtype=torch.float32) / 127.5 - 1

    def rehook(self) -> None:
        """After a deepcopy (an EMA teacher): the copied modules still hold hooks that record into the
        original's recorder; give the copy its own."""
        from ...diffusion.features import FeatureRecorder

        for m in self.unet.modules():
            m._forward_hooks.clear()
        self._rec = FeatureRecorder(self.unet, self._names, detach=False)
        self.unet.time_embedding.register_forward_hook(self._add_time_offset)

    def _add_time_offset(self, module, args, emb):
        """The learned time embedding: tanh(α_τ)⊙τ added to the UNet's own, (N, D)."""
        return emb + (torch.tanh(self.alpha_time) * self.time_offset).to(emb.dtype)

    def condition(self) -> torch.Tensor:
        """e = tanh(α_u)⊙e_∅ + tanh(α_c)⊙p, (1, L, D)."""
        return torch.tanh(self.alpha_uncond) * self.empty + torch.tanh(self.alpha_cond) * self.prompt

    def set_dplg_timestep(self, t: int) -> None:
        """DPLG: predict on z_t built with the fixed noise at timestep t (0: on z0 itself)."""
        self.dplg_t = int(t)

    @torch.no_grad()
    def _encode(self, x01):
        return self.vae.encode(x01 * 2 - 1).latent_dist.mean * self.scale

    def forward(self, x):
        x01 = (x * IMAGENET_STD.to(x.device) + IMAGENET_MEAN.to(x.device)).clamp(0, 1)
        z = self._encode(x01)
        t = self.dplg_t
        a = float(self.alphas[t])        # as the authors' add_noise: t = 0 too adds √(1−ᾱ_0)·ε_fixed
        noise = self.fixed_noise if self.fixed_noise.shape[-2:] == z.shape[-2:] else \
            F.interpolate(self.fixed_noise, size=z.shape[-2:], mode="bicubic", align_corners=False)
        z = math.sqrt(a) * z + math.sqrt(1 - a) * noise
        emb = self.condition().expand(z.shape[0], -1, -1)
        self._rec.active, self._rec.store = True, {}
        try:
            out = self.unet(z, torch.full((z.shape[0],), t, device=z.device), encoder_hidden_states=emb).sample
        finally:
            self._rec.active = False
        feats = [self._rec.store[n][-1] for n in self._names]
        with torch.no_grad():            # the authors' vae_decoder runs under no_grad: CE never reaches the
            palette_img = self.vae.decode(out.detach() / self.scale).sample          # UNet through it; (N, 3, H, W)
        fine = feats[-1].shape[-2:]
        y = self.fuse(torch.cat([F.interpolate(e(f), size=fine, mode="bilinear", align_corners=False)
                                 for e, f in zip(self.embed, feats)], 1))
        stem = self.stem(palette_img)
        y = F.interpolate(y, size=stem.shape[-2:], mode="bilinear", align_corners=False)
        return {"logits": self.head(torch.cat([y, stem], 1)), "features": feats[0], "palette_latent": out}

    def lplr_loss(self, palette_latent, labels):
        """L1 between the UNet output and the VAE latent of the palette-coloured labels, on latent
        cells whose pixels are all labelled."""
        lut = torch.cat([self.palette, torch.full((256 - len(self.palette), 3), -1.0)]).to(labels.device)
        coloured = lut[labels.clamp(0, 255)].permute(0, 3, 1, 2)                     # ignore -> black (-1)
        z_y = self._encode((coloured + 1) / 2)
        valid = F.max_pool2d((labels == 255).float()[:, None], kernel_size=labels.shape[-1] // z_y.shape[-1]) == 0
        valid = F.interpolate(valid.float(), size=z_y.shape[-2:], mode="nearest")
        diff = (palette_latent.float() - z_y).abs() * valid
        return diff.sum() / (valid.sum() * z_y.shape[1]).clamp(min=1)


@register_model("sd_unet", needs="a Stable Diffusion model (--backbone sd-unet --sd-model M)")
def sd_unet(num_classes=19, output_stride=None, pretrained=None, sd_model=None):
    if not sd_model:
        from ...errors import InputError

        raise InputError("sd_unet needs a Stable Diffusion model", "train it with --backbone sd-unet --sd-model PRESET|DIR")
    return SDUNetSegmenter(sd_model, num_classes)
