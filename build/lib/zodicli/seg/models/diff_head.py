"""DIFF's segmentation head on cached diffusion features (Ji et al. 2024).

Per stride a GroupNorm bottleneck (1x1 -> 3x3 -> 1x1 with a projected shortcut) maps the cached
channels to ``widths`` (DIFF: 2048, 1024, 512 for strides 32, 16, 8); a top-down path fuses coarse
into fine with 2x transposed convolutions (bilinear where strides are not 2x apart) and one more
2x step below the finest cached stride (1/8 -> 1/4); a DAFormer-style head embeds every level
to 256 channels, upsamples to the finest level, concatenates and classifies. Strides coarser than
the third level (SD's 1/64) are upsampled into the next level's input.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register_model

DIFF_WIDTHS = (2048, 1024, 512)


def _gn(c):
    return nn.GroupNorm(32 if c % 32 == 0 else 1, c)


class Bottleneck(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        mid = max(cout // 4, 8)
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), _gn(mid), nn.ReLU(True),
                                  nn.Conv2d(mid, mid, 3, padding=1, bias=False), _gn(mid), nn.ReLU(True),
                                  nn.Conv2d(mid, cout, 1, bias=False), _gn(cout))
        self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _gn(cout))

    def forward(self, x):
        return F.relu(self.body(x) + self.short(x))


class DiffFusion(nn.Module):
    """``forward({"s8": (N, C8, H/8, W/8), "s16": ..., ...})`` -> logits at the finest stride / 2."""

    def __init__(self, in_channels: dict, num_classes: int = 19, widths=DIFF_WIDTHS, embed: int = 256):
        super().__init__()
        strides = sorted((int(str(s).lstrip("s")) for s in in_channels), reverse=True)     # coarse -> fine
        chans = {int(str(s).lstrip("s")): c for s, c in in_channels.items()}
        self.extra = strides[: max(0, len(strides) - len(widths))]                         # folded into the next level
        self.levels = strides[len(self.extra):]
        widths = list(widths)[-len(self.levels):]
        cin = {s: chans[s] + (sum(chans[e] for e in self.extra) if i == 0 else 0) for i, s in enumerate(self.levels)}
        self.bottleneck = nn.ModuleDict({f"s{s}": Bottleneck(cin[s], w) for s, w in zip(self.levels, widths)})
        outs = widths[1:] + [widths[-1] // 2]
        self.up = nn.ModuleList(nn.ConvTranspose2d(w, o, 2, stride=2) for w, o in zip(widths, outs))
        self.merge = nn.ModuleList(nn.Conv2d(o, o, 3, padding=1) for o in outs)
        self.embed = nn.ModuleList(nn.Conv2d(c, embed, 1) for c in outs)
        self.fuse = nn.Sequential(nn.Conv2d(embed * len(outs), embed, 1, bias=False), nn.BatchNorm2d(embed), nn.ReLU(True),
                                  nn.Dropout2d(0.1))
        self.classifier = nn.Conv2d(embed, num_classes, 1)
        self.in_channels = {f"s{s}": c for s, c in chans.items()}

    def forward(self, feats: dict) -> dict:
        f = {int(str(k).lstrip("s")): v.float() for k, v in feats.items()}
        top = self.levels[0]
        x0 = torch.cat([f[top]] + [F.interpolate(f[e], size=f[top].shape[-2:], mode="bilinear", align_corners=False)
                                   for e in self.extra], 1)
        y = self.bottleneck[f"s{top}"](x0)
        deepest = y
        pyramid = []
        for i, up in enumerate(self.up):
            y = up(y)
            if i + 1 < len(self.levels):
                lat = self.bottleneck[f"s{self.levels[i + 1]}"](f[self.levels[i + 1]])
                if y.shape[-2:] != lat.shape[-2:]:
                    y = F.interpolate(y, size=lat.shape[-2:], mode="bilinear", align_corners=False)
                y = y + lat
            y = F.relu(self.merge[i](y))
            pyramid.append(y)
        size = pyramid[-1].shape[-2:]
        z = torch.cat([F.interpolate(e(p), size=size, mode="bilinear", align_corners=False)
                       for e, p in zip(self.embed, pyramid)], 1)
        return {"logits": self.classifier(self.fuse(z)), "features": deepest}


@register_model("diff_fusion", needs="cached features (--backbone features:h5:FILE)")
def diff_fusion(num_classes=19, output_stride=None, pretrained=None, in_channels=None, widths=None):
    if not in_channels:
        from ...errors import InputError

        raise InputError("diff_fusion needs cached features", "train it with --backbone features:h5:FILE")
    return DiffFusion(in_channels, num_classes, tuple(widths or DIFF_WIDTHS))
