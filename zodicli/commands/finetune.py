"""zodi finetune: a LoRA adapter that binds K unlabelled target images' look to a prompt."""
from __future__ import annotations

import click

from ._options import allow_partial_option, config_option, data_root_option, emit_json, json_option, overwrite_option
from ._types import SIZE


@click.command("finetune")
@click.option("--target", required=True, help="Unlabelled target images, e.g. acdc:night:train or folder:DIR.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Adapter folder: pytorch_lora_weights.safetensors, zodi_finetune.json, state.pt.")
@click.option("--prompt", required=True, help="The prompt the target's look is bound to, e.g. 'driving in sks style'; "
                                               "translate with the same words.")
@click.option("--model", default="sd15", show_default=True, help="Stable Diffusion to adapt: preset, folder, file or Hub id.")
@click.option("--revision", default=None, help="Branch, tag or commit of a Hub --model.")
@click.option("--model-config", default=None, help="Diffusers folder with the configs of a single-file --model.")
@click.option("--num-images", default=10, show_default=True, type=click.IntRange(min=1),
              help="K: the first K images of --target (sorted keys).")
@click.option("--steps", default=400, show_default=True, type=click.IntRange(min=1), help="Training steps.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Images per step.")
@click.option("--lr", default=1e-4, show_default=True, type=float, help="AdamW learning rate of the adapter.")
@click.option("--rank", default=4, show_default=True, type=click.IntRange(min=1), help="LoRA rank r.")
@click.option("--alpha", default=None, type=float, help="LoRA α [default: the rank].")
@click.option("--targets", default="attention", show_default=True, type=click.Choice(["attention", "attention+conv"]),
              help="Layers the adapter changes: the attention projections, or also the ResNet convolutions.")
@click.option("--size", default=None, type=SIZE, help="Training size HxW [default: short side at --short-side].")
@click.option("--short-side", default=512, show_default=True, type=click.IntRange(min=8), help="Training short side in pixels.")
@click.option("--prior", default=None, help="Source images for prior preservation (e.g. cs:train).")
@click.option("--prior-prompt", default="", help="Prompt of the prior images (e.g. 'driving on a clear day').")
@click.option("--prior-weight", default=1.0, show_default=True, type=float, help="Weight of the prior loss.")
@click.option("--num-prior", default=100, show_default=True, type=click.IntRange(min=1), help="The first N images of --prior.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the adapter's initialisation and of each step's draws.")
@click.option("--ckpt-every", default=50, show_default=True, type=click.IntRange(min=1), help="Save OUT/state.pt every N steps.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@data_root_option
@allow_partial_option
@overwrite_option
@json_option
@config_option
def command(json_output, **kw):
    """Fine-tune the diffusion UNet on K unlabelled target images with a LoRA adapter (DreamBooth-style),
    binding their look to --prompt; then 'zodi translate --lora OUT --prompt ...'. Resumable: re-run the
    same command to continue; deterministic for a seed."""
    from ..pipeline.finetune import FinetuneConfig, finetune

    kw.pop("config", None)
    summary = finetune(FinetuneConfig(**kw), log=lambda m: click.echo(m, err=True))
    if json_output:
        emit_json(summary)
    else:
        click.echo(f"{summary['out']}: {summary['steps']} steps on {summary['images']} images; "
                    f"translate with --lora {summary['out']} --prompt ...")
