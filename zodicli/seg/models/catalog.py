"""What each registered segmenter is and which pretrained weights it takes, without importing torch
(for ``--help`` and ``zodi models list``). ``register_model`` refuses a name missing here, and a
test checks that every name here is registered, so the two cannot drift apart."""
from __future__ import annotations

_RESNET = "torchvision-format ImageNet ResNet-{d} (.pth or .safetensors; e.g. resnet{d}-*.pth)"

SEGMENTERS: dict[str, dict[str, str]] = {
    **{f"deeplabv3plus_r{d}": {"what": f"DeepLabv3+ on ResNet-{d} (ZoDi's)", "pretrained": _RESNET.format(d=d)}
       for d in (18, 50, 101)},
    "deeplabv3plus_tiny": {"what": "a 0.6 M-parameter DeepLabv3+ for the toy city and tests", "pretrained": "none"},
    "refinenet_lw_r50": {"what": "Light-Weight RefineNet on ResNet-50 (ZoDi's)", "pretrained": _RESNET.format(d=50)},
    **{f"segformer_b{i}": {"what": f"SegFormer-B{i} (transformers)",
                           "pretrained": f"a transformers folder, e.g. a copy of nvidia/mit-b{i}"} for i in range(6)},
    "diff_fusion": {"what": "DIFF's fusion head on cached features (--backbone features:h5:FILE)",
                    "pretrained": "none (the diffusion model made the features)"},
    "diff_online": {"what": "DIFF's fusion head on a frozen SD UNet in the loop (--backbone diff-online --sd-model M)",
                    "pretrained": "the SD model itself (--sd-model)"},
    "sd_unet": {"what": "MADM's fine-tuned SD UNet with LPLR (--backbone sd-unet --sd-model M)",
                "pretrained": "the SD model itself (--sd-model)"},
}
