"""DeepLabv3+ (Chen et al. 2018) on ResNet, as ZoDi trains it: output stride 32 by default (no
dilation), ASPP rates 6/12/18 + image pooling, 256 channels, dropout 0.5; layer1 -> 48 channels;
one 3x3 conv of 256; classifier. Logits at stride 4.

``deeplabv3plus_tiny`` is the same design scaled for CPU demos on the toy city (ResNet-10 of base
width 16, 64 channels, output stride 8 by default): not a paper's model."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import register_model
from .resnet import build_backbone


def conv_bn_relu(cin, cout, k=1, dilation=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    def __init__(self, cin, cout=256, rates=(6, 12, 18)):
        super().__init__()
        self.branches = nn.ModuleList([conv_bn_relu(cin, cout)] + [conv_bn_relu(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(cin, cout))
        self.project = nn.Sequential(conv_bn_relu(cout * (len(rates) + 2), cout), nn.Dropout(0.5))

    def forward(self, x):
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.pool(x), size=x.shape[-2:], mode="bilinear", align_corners=False))
        return self.project(torch.cat(outs, 1))


class DeepLabV3Plus(nn.Module):
    def __init__(self, num_classes=19, depth=50, output_stride=32, pretrained=None, width=64, channels=256, low=48):
        super().__init__()
        self.backbone = build_backbone(depth, output_stride, pretrained, width)
        c1, _, _, c4 = self.backbone.channels
        rates = (12, 24, 36) if output_stride == 8 else (6, 12, 18)
        self.aspp = ASPP(c4, channels, rates)
        self.low = conv_bn_relu(c1, low)
        self.fuse = conv_bn_relu(channels + low, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        c1, _, _, c4 = self.backbone(x)
        y = F.interpolate(self.aspp(c4), size=c1.shape[-2:], mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([y, self.low(c1)], 1))
        return {"logits": self.classifier(y), "features": c4}


for _depth in (18, 50, 101):
    register_model(f"deeplabv3plus_r{_depth}")(
        lambda num_classes=19, output_stride=None, pretrained=None, _d=_depth:
        DeepLabV3Plus(num_classes, _d, output_stride or 32, pretrained))


@register_model("deeplabv3plus_tiny")
def deeplabv3plus_tiny(num_classes=19, output_stride=None, pretrained=None):
    return DeepLabV3Plus(num_classes, 10, output_stride or 8, pretrained, width=16, channels=64, low=16)
