"""Segmentation models, by name: ``build_model("deeplabv3plus_r50", num_classes=19)``.

Every model maps images (N, 3, H, W), normalised with ImageNet mean/std, to
``{"logits": (N, C, H/s, W/s), "features": (N, D, h, w)}``: ``features`` is the last backbone stage
(ZoDi's f4, used by the feature-similarity loss and the adversarial discriminator).
"""
from __future__ import annotations

from typing import Callable

from ...errors import InputError

MODELS: dict[str, Callable] = {}
NEEDS: dict[str, str] = {}        # models that need more than an image to build: what they need


def register_model(name: str, needs: str | None = None):
    from .catalog import SEGMENTERS

    if name not in SEGMENTERS:
        raise KeyError(f"segmenter {name!r} is not described in seg/models/catalog.py")

    def deco(fn):
        MODELS[name] = fn
        if needs:
            NEEDS[name] = needs
        return fn
    return deco


def _load_all():
    from . import deeplabv3plus, diff_head, diff_online, refinenet, sd_unet, segformer  # noqa: F401


def model_names(image_only: bool = False) -> list[str]:
    """Registered names; ``image_only`` leaves out those needing cached features or an SD model."""
    _load_all()
    return sorted(n for n in MODELS if not (image_only and n in NEEDS))


def build_model(name: str, num_classes: int = 19, output_stride: int | None = None, pretrained: str | None = None, **extra):
    """Build a registered model; ``pretrained`` is a local backbone weight file or folder; ``extra``
    carries model-specific settings (diff_fusion: ``in_channels``, ``widths``)."""
    _load_all()
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}", f"choose one of: {', '.join(sorted(MODELS))}")
    return MODELS[name](num_classes=num_classes, output_stride=output_stride, pretrained=pretrained, **extra)
