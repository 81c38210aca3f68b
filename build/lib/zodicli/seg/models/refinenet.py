"""Light-weight RefineNet (Nekrasov et al., BMVC 2018) on ResNet-50: chained residual pooling
(CRP, 4 stages of 5x5 max-pool + 1x1 conv) at each stage, top-down fusion to stride 4."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from . import register_model
from .resnet import build_backbone


def conv1x1(cin, cout):
    return nn.Conv2d(cin, cout, 1, bias=False)


class CRP(nn.Module):
    def __init__(self, ch, stages=4):
        super().__init__()
        self.convs = nn.ModuleList(conv1x1(ch, ch) for _ in range(stages))
        self.pool = nn.MaxPool2d(5, 1, 2)

    def forward(self, x):
        top = x
        for conv in self.convs:
            top = conv(self.pool(top))
            x = x + top
        return x


class LWRefineNet(nn.Module):
    def __init__(self, num_classes=19, depth=50, output_stride=32, pretrained=None):
        super().__init__()
        self.backbone = build_backbone(depth, output_stride, pretrained)
        c1, c2, c3, c4 = self.backbone.channels
        self.drop = nn.Dropout(0.5)
        self.reduce = nn.ModuleList([conv1x1(c4, 512), conv1x1(c3, 256), conv1x1(c2, 256), conv1x1(c1, 256)])
        self.crp = nn.ModuleList([CRP(512), CRP(256), CRP(256), CRP(256)])
        self.out = nn.ModuleList([conv1x1(512, 256), conv1x1(256, 256), conv1x1(256, 256)])
        self.classifier = nn.Conv2d(256, num_classes, 3, padding=1)

    def forward(self, x):
        feats = self.backbone(x)
        c4 = feats[3]
        y = None
        for i, f in enumerate(reversed(feats)):
            z = self.reduce[i](self.drop(f) if i < 2 else f)
            if y is not None:
                z = z + F.interpolate(y, size=z.shape[-2:], mode="bilinear", align_corners=False)
            y = self.crp[i](F.relu(z))
            if i < 3:
                y = self.out[i](y)
        return {"logits": self.classifier(self.drop(y)), "features": c4}


register_model("refinenet_lw_r50")(lambda num_classes=19, output_stride=None, pretrained=None:
                                   LWRefineNet(num_classes, 50, output_stride or 32, pretrained))
