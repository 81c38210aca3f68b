"""A tiny random Stable-Diffusion + ControlNet-seg stack, built from configs and saved as ordinary
diffusers folders: for tests, the demo and CPU benchmarks. Same code paths as SD 1.5, small sizes:
UNet (32, 64) with one layer per block and cross-attention 32, a 2-layer CLIP text model of width 32
with a small character vocabulary, a 2-level AutoencoderKL (factor 2), SD 1.5's scheduler config."""
from __future__ import annotations

import json
import string
from pathlib import Path

import torch

SD15_SCHEDULER = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                      clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def _write_tokenizer(folder: Path) -> None:
    """A CLIP BPE vocabulary of single characters (with and without the end-of-word mark)."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(string.ascii_lowercase + string.digits + ".,!?'-")
    tokens = ["<|startoftext|>", "<|endoftext|>"] + chars + [c + "</w>" for c in chars]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="<|endoftext|>",
                  model_max_length=77).save_pretrained(folder)


def make_tiny(out, seed: int = 0, prediction_type: str = "epsilon") -> dict:
    """Write ``out/sd`` (a StableDiffusionPipeline folder) and ``out/controlnet``; returns their paths."""
    from diffusers import AutoencoderKL, ControlNetModel, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out = Path(out)
    torch.manual_seed(seed)
    _write_tokenizer(out / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                        pad_token_id=1, projection_dim=32))
    unet = UNet2DConditionModel(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 64), layers_per_block=1, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=32, scaling_factor=0.18215)
    # The conditioning embedding must downsample by the VAE's factor (2 here, 8 for SD).
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    torch.manual_seed(seed + 1)
    for p in controlnet.parameters():       # non-zero "zero convolutions", so the control image matters
        if p.dim() > 1 and torch.count_nonzero(p) == 0:
            torch.nn.init.normal_(p, std=0.02)
    sched = DDIMScheduler(**{**SD15_SCHEDULER, "prediction_type": prediction_type})
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(out / "sd")
    controlnet.save_pretrained(out / "controlnet")
    return {"model": str(out / "sd"), "controlnet": str(out / "controlnet")}
