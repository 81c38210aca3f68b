"""LoRA adapters of the diffusion UNet (``zodi finetune`` writes them, ``translate --lora`` reads them).

An adapter folder holds ``pytorch_lora_weights.safetensors``, in diffusers' format (keys
``unet.<module>.lora.down.weight`` and ``.lora.up.weight``, what ``pipe.load_lora_weights(DIR)`` reads
too), and ``zodi_finetune.json``: the settings, the input fingerprints (the base model's among them),
the target images used and the library versions. LoRA (Hu et al., 2022) adds ΔW = (α/r)·B·A to the
attention projections (to_q, to_k, to_v, to_out.0), and with ``attention+conv`` to the ResNet
convolutions too; B starts at zero, so an untrained adapter is the base model exactly, and
``--lora-scale s`` applies s·ΔW.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError

WEIGHTS = "pytorch_lora_weights.safetensors"
CARD = "zodi_finetune.json"
NAME = "zodi"
# Which layers the adapter changes: the attention projections (DreamBooth-LoRA's usual choice), or also
# the ResNet convolutions and the attention blocks' projections, where a small UNet keeps colour and tone.
TARGETS = {"attention": ["to_q", "to_k", "to_v", "to_out.0"],
           "attention+conv": ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2", "conv_shortcut", "proj_in", "proj_out"]}


def add_lora(unet, rank: int, alpha: float | None = None, targets: str = "attention") -> list:
    """Inject a fresh adapter; only its parameters train. Returns them."""
    from peft import LoraConfig

    if targets not in TARGETS:
        raise InputError(f"unknown LoRA targets {targets!r}", f"choose one of: {', '.join(TARGETS)}")
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights=True, target_modules=TARGETS[targets]),
                     adapter_name=NAME)
    params = []
    for name, p in unet.named_parameters():
        p.requires_grad_("lora_" in name)
        if "lora_" in name:
            params.append(p)
    return params


def lora_state(unet) -> dict:
    """The adapter's weights in diffusers' format, on the CPU."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=NAME))
    return {f"unet.{k}": v.detach().to("cpu").contiguous() for k, v in state.items()}


def set_lora_state(unet, state: dict) -> None:
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft.utils import set_peft_model_state_dict

    peft_state = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in state.items()})
    set_peft_model_state_dict(unet, peft_state, adapter_name=NAME)


def read_card(folder) -> dict:
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file() or not (folder / CARD).is_file():
        raise InputError(f"{folder} is not a finished zodi adapter (it lacks {WEIGHTS} or {CARD})",
                         "pass the --out folder of a 'zodi finetune' run that completed (re-run it to finish it)")
    return json.loads((folder / CARD).read_text())


def load_lora(unet, folder, scale: float, model_fingerprint: str) -> str:
    """Load the adapter in ``folder`` onto ``unet`` at ``scale``, after checking that it was trained on
    this base model (``model_fingerprint``: SPEC@HASH, compared by HASH). Returns the adapter's fingerprint."""
    from safetensors.torch import load_file

    from ..store.fingerprint import file_fingerprint

    folder = Path(folder)
    card = read_card(folder)
    trained_on = card["inputs"]["model"]
    if trained_on.split("@")[-1] != model_fingerprint.split("@")[-1]:
        raise InputError(f"the adapter {folder} was trained on {trained_on}, not on {model_fingerprint}",
                         "pass the --model it was fine-tuned from, or fine-tune one for this model")
    state = load_file(str(folder / WEIGHTS))
    rank = card["settings"]["rank"]
    add_lora(unet, rank, card["settings"].get("alpha"), card["settings"].get("targets", "attention"))
    set_lora_state(unet, state)
    unet.set_adapters([NAME], weights=[scale])
    unet.requires_grad_(False)
    return f"{folder}@{file_fingerprint(folder / WEIGHTS)}"
