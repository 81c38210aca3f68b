"""Options shared by invert and translate, and their mapping onto DiffusionSettings."""
from __future__ import annotations

import click

from ._options import (allow_partial_option, config_option, data_root_option, emit_json, json_option, overwrite_option,
                       resolved_settings, shard_option)
from ._types import SIZE

# --help headings of translate and invert (by parameter name; what a command lacks is skipped)
SECTIONS = {
    "Inputs": ("src", "model", "revision", "controlnet", "model_config", "lora", "lora_scale", "segmenter", "data_root",
               "allow_partial", "config"),
    "Method": ("method", "domain", "prompt", "prompt_suffix", "negative_prompt", "strength", "steps", "guidance_scale",
               "guidance_interval", "eta", "palette", "control_scale", "exact_timestep", "skip", "label_guidance",
               "sgg_scale", "seed"),
    "Performance": ("short_side", "size", "batch_size", "compute_batch", "device", "dtype", "deterministic", "vae_tiling",
                    "noise_dtype", "shard"),
    "Output": ("out", "full_res", "preview", "overwrite", "json_output"),
}

DIFFUSION_OPTIONS = [
    click.option("--src", required=True,
                 help="Dataset (gta, cs:train, toy:clear:val, ...) or h5:FILE (an inversion artifact or images)."),
    click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output artifact (.h5)."),
    click.option("--model", default="sd15", show_default=True,
                 help="Stable Diffusion: preset, diffusers folder, .ckpt/.safetensors, or Hugging Face id "
                      "(e.g. stable-diffusion-v1-5/stable-diffusion-v1-5; from the HF cache, downloaded when online)."),
    click.option("--revision", default=None, help="Branch, tag or commit of a Hugging Face --model [default: main]."),
    click.option("--controlnet", default="controlnet-seg", show_default=True,
                 help="ControlNet-seg: preset, folder or Hugging Face id; 'none' to skip."),
    click.option("--model-config", default=None, help="Diffusers folder with the configs of a single-file --model."),
    click.option("--domain", default=None, type=click.Choice(["fog", "night", "rain", "snow", "game"]),
                 help="Preset prompt, strength and steps (zodicli/presets/domains.yaml); each can be overridden."),
    click.option("--prompt", default=None, help="Target-domain prompt, e.g. 'snowy street'."),
    click.option("--prompt-suffix", default=", best quality", show_default=True,
                 help="Appended to every prompt (ZoDi's ', best quality')."),
    click.option("--negative-prompt", default=None,
                 help="Prompt of guidance's unconditional branch [default: 'lower quality, worst quality' for zodi "
                      "(ZoDi's code); '' for ddpm and ddim (their authors' code)]."),
    click.option("--strength", default=None, type=float, help="γ in (0, 1] [default: domain preset, else 0.6]."),
    click.option("--steps", default=None, type=click.IntRange(min=1), help="DDIM steps of the full schedule [default: 20]."),
    click.option("--guidance-scale", default=9.0, show_default=True, type=float, help="Classifier-free guidance on the text."),
    click.option("--eta", default=1.0, show_default=True, type=float,
                 help="DDIM stochasticity η (1: ZoDi's sampler; 0: deterministic DDIM)."),
    click.option("--palette", default=None, type=click.Choice(["cityscapes-full", "cityscapes", "ade20k"]),
                 help="Label colours for ControlNet: cityscapes-full (all 34 label ids, as gtFine_color.png: ZoDi's code; "
                      "the default where the source has label ids), cityscapes (19 train ids, the default elsewhere), "
                      "ade20k (ControlNet-seg's training palette)."),
    click.option("--lora", default=None, type=click.Path(exists=True, file_okay=False),
                 help="A 'zodi finetune' adapter folder: the UNet with the target's look bound to its prompt."),
    click.option("--lora-scale", default=1.0, show_default=True, type=float, help="Strength of --lora (0: the base model)."),
    click.option("--control-scale", default=1.0, show_default=True, type=float,
                 help="ControlNet conditioning scale (how strongly the layout binds)."),
    click.option("--short-side", default=512, show_default=True, type=click.IntRange(min=8),
                 help="Processing size: short side in pixels."),
    click.option("--size", default=None, type=SIZE, help="Processing size HxW instead of --short-side."),
    click.option("--seed", default=0, show_default=True, type=int, help="Base seed; each item's noise comes from (seed, key)."),
    click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
                 help="Items loaded and written together (does not change results)."),
    click.option("--compute-batch", default=1, show_default=True, type=click.IntRange(min=1),
                 help="Rows of every model call (padded); raise it on a GPU for throughput. Recorded in the settings "
                      "hash: kernels' float results depend on the call shape."),
    click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N."),
    click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
                 help="Weights' precision; auto: fp16 on CUDA, fp32 on the CPU (recorded resolved)."),
    click.option("--deterministic", is_flag=True,
                 help="Deterministic GPU kernels only (slower); without it a GPU run may differ in the last bits."),
    click.option("--vae-tiling", is_flag=True, help="Tile and slice the VAE (large inputs, e.g. 2048x1024)."),
]


def diffusion_options(f):
    for opt in reversed(DIFFUSION_OPTIONS):
        f = opt(f)
    return f


def per_item_options(f):
    """The options every artifact-writing command ends with."""
    for opt in (config_option, json_option, allow_partial_option, overwrite_option, shard_option, data_root_option):
        f = opt(f)
    return f


def run(step, verb: str, json_output, shard, overwrite, params) -> None:
    """Call a pipeline step (invert or translate) and report its summary."""
    from ..store.shards import parse_shard

    summary = step(to_settings(params), resolved_settings(click.get_current_context()), shard=parse_shard(shard),
                   overwrite=overwrite)
    if json_output:
        emit_json(summary)
        return
    msg = f"{summary['out']}: {summary['items']} items ({summary['computed']} {verb}, {summary['reused']} reused)"
    click.echo(msg + (f"; preview {summary['preview']}" if summary.get("preview") else ""))


def to_settings(params: dict):
    from ..pipeline.diffuse import DiffusionSettings

    fields = set(DiffusionSettings.__dataclass_fields__)
    kw = {k: v for k, v in params.items() if k in fields}
    if kw.get("controlnet") in ("none", ""):
        kw["controlnet"] = None
    return DiffusionSettings(**kw)
