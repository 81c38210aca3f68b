"""ResNet-18/50/101 in plain torch, with torchvision's module names, so that torchvision's ImageNet
state dicts (``resnet50-*.pth``) load strictly from a local file."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...errors import InputError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    """ResNet v1.5: the stride sits on the 3x3 convolution, as in torchvision."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


LAYOUTS = {10: (BasicBlock, (1, 1, 1, 1)), 18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """Returns the four stage outputs (strides 4, 8, 16, 32 — or 8/16 where dilated)."""

    def __init__(self, depth: int = 50, output_stride: int = 32, width: int = 64):
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise InputError(f"output stride {output_stride} is not supported", "use 8, 16 or 32")
        block, layers = LAYOUTS[depth]
        dilate = {32: (False, False, False), 16: (False, False, True), 8: (False, True, True)}[output_stride]
        self.inplanes, self.dilation = width, 1
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make(block, width, layers[0])
        self.layer2 = self._make(block, width * 2, layers[1], 2, dilate[0])
        self.layer3 = self._make(block, width * 4, layers[2], 2, dilate[1])
        self.layer4 = self._make(block, width * 8, layers[3], 2, dilate[2])
        self.channels = [width * block.expansion * m for m in (1, 2, 4, 8)]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make(self, block, planes, blocks, stride=1, dilate=False):
        prev = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        down = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(planes * block.expansion))
        mods = [block(self.inplanes, planes, stride, down, prev)]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c1 = self.layer1(x)
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.layer4(c3)]


def build_backbone(depth: int, output_stride: int, pretrained=None, width: int = 64) -> ResNet:
    """A ResNet, with torchvision-format weights loaded strictly when ``pretrained`` is given."""
    backbone = ResNet(depth, output_stride, width)
    if pretrained:
        load_backbone(backbone, pretrained)
    return backbone


def read_state_dict(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"pretrained weights {p} do not exist", "pass a local torchvision-format ResNet file (.pth or .safetensors)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    sd = torch.load(p, map_location="cpu", weights_only=True)
    return sd.get("state_dict", sd) if isinstance(sd, dict) else sd


def load_backbone(backbone: nn.Module, path) -> None:
    """Strictly load a torchvision-format state dict (its ``fc.*`` classifier is dropped)."""
    sd = {k.removeprefix("module."): v for k, v in read_state_dict(path).items() if not k.startswith("fc.")}
    own = backbone.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [k for k in set(own) & set(sd) if own[k].shape != sd[k].shape]
    if missing or unexpected or shapes:
        detail = "; ".join(x for x in (
            f"missing {len(missing)} (e.g. {missing[0]})" if missing else "",
            f"unexpected {len(unexpected)} (e.g. {unexpected[0]})" if unexpected else "",
            f"shape mismatch {len(shapes)} (e.g. {sorted(shapes)[0]})" if shapes else "") if x)
        raise InputError(f"{path} does not match the backbone: {detail}",
                         "pass torchvision weights of the same ResNet depth (e.g. resnet50 for *_r50)")
    backbone.load_state_dict(sd, strict=True)
