"""SegFormer b0..b5 (Xie et al. 2021) from transformers configs; logits at stride 4.
``pretrained`` is a local folder in transformers format (e.g. a copy of nvidia/mit-b0)."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from ...errors import InputError
from . import register_model

# (hidden sizes, depths, decoder width) per variant, from the SegFormer paper.
VARIANTS = {
    "b0": ([32, 64, 160, 256], [2, 2, 2, 2], 256),
    "b1": ([64, 128, 320, 512], [2, 2, 2, 2], 256),
    "b2": ([64, 128, 320, 512], [3, 4, 6, 3], 768),
    "b3": ([64, 128, 320, 512], [3, 4, 18, 3], 768),
    "b4": ([64, 128, 320, 512], [3, 8, 27, 3], 768),
    "b5": ([64, 128, 320, 512], [3, 6, 40, 3], 768),
}


class SegFormer(nn.Module):
    def __init__(self, variant="b0", num_classes=19, pretrained=None):
        super().__init__()
        from transformers import SegformerConfig, SegformerForSemanticSegmentation

        hidden, depths, dec = VARIANTS[variant]
        if pretrained:
            if not Path(pretrained).is_dir():
                raise InputError(f"pretrained SegFormer folder {pretrained} does not exist",
                                 "pass a local transformers folder (config.json + weights)")
            self.net = SegformerForSemanticSegmentation.from_pretrained(
                pretrained, num_labels=num_classes, ignore_mismatched_sizes=True, local_files_only=True)
        else:
            cfg = SegformerConfig(num_labels=num_classes, hidden_sizes=hidden, depths=depths, decoder_hidden_size=dec,
                                  num_attention_heads=[1, 2, 5, 8], sr_ratios=[8, 4, 2, 1])
            self.net = SegformerForSemanticSegmentation(cfg)

    def forward(self, x):
        out = self.net(pixel_values=x, output_hidden_states=True)
        return {"logits": out.logits, "features": out.hidden_states[-1]}


for _v in VARIANTS:
    register_model(f"segformer_{_v}")(lambda num_classes=19, output_stride=None, pretrained=None, _v=_v:
                                     SegFormer(_v, num_classes, pretrained))
