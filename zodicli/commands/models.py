"""zodi models list|make-tiny."""
from __future__ import annotations

import click

from ._options import emit_json, json_option


@click.group("models")
def command():
    """Model presets, and the tiny random stack for tests and demos."""


@command.command("list")
@json_option
def list_(json_output):
    """Diffusion presets (zodicli/presets/models.yaml: under $ZODI_MODELS, else in the Hugging Face
    cache; never downloads), then the segmenters train-seg builds and the pretrained weights each takes."""
    from ..seg.models.catalog import SEGMENTERS

    if json_output:
        emit_json({"diffusion": _presets(),
                   "segmenters": [{"name": n, **v} for n, v in SEGMENTERS.items()]})
        return
    click.echo("diffusion presets (--model, --controlnet, --sd-model):")
    for r in _presets():
        click.echo(f"  {r['name']:<16} {r['path']}  ({'found' if r['found'] else 'missing'}"
                   + (f"; hf download {r['repo']}" if r["repo"] and not r["found"] else "") + ")")
    click.echo("segmenters (train-seg --model; --pretrained takes the weights named):")
    for name, v in SEGMENTERS.items():
        click.echo(f"  {name:<20} {v['what']}; pretrained: {v['pretrained']}")


def _presets() -> list[dict]:
    from ..diffusion.models import models_root, presets, resolve

    rows = []
    for name, entry in presets().items():
        path = resolve(name, local_only=True)[0]         # never downloads
        local = models_root() / entry["path"] if entry.get("path") else None
        rows.append({"name": name, "repo": entry.get("repo"), "path": str(path or local),
                     "found": path is not None and path.exists()})
    return rows


@command.command("make-tiny")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for sd/ and controlnet/.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random weights.")
@click.option("--prediction-type", default="epsilon", show_default=True, type=click.Choice(["epsilon", "v_prediction"]),
              help="What the UNet predicts: ε or v.")
def make_tiny(out, seed, prediction_type):
    """A tiny random SD + ControlNet-seg stack (diffusers folders), for tests, demos and CPU benchmarks."""
    from ..diffusion.tiny import make_tiny as make

    paths = make(out, seed, prediction_type)
    click.echo(f"--model {paths['model']} --controlnet {paths['controlnet']}")


@command.command("train-toy")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder: sd/, controlnet/, state.pt, corpus/.")
@click.option("--vae-steps", default=700, show_default=True, type=click.IntRange(min=1), help="VAE training steps (stage 1).")
@click.option("--steps", default=20000, show_default=True, type=click.IntRange(min=0),
              help="UNet + ControlNet steps (0: stop after the VAE).")
@click.option("--minutes", default=None, type=float, help="Stop after this long (the next run continues).")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=2), help="Training batch size.")
@click.option("--corpus-per-style", default=300, show_default=True, type=click.IntRange(min=1), help="Corpus images per style.")
@click.option("--ckpt-every", default=100, show_default=True, type=click.IntRange(min=1), help="Save OUT/state.pt every N steps.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the corpus and of training.")
@click.option("--init-from", default=None, type=click.Path(exists=True, file_okay=False),
              help="Start the UNet stage from exported sd/ and controlnet/ (e.g. recipes/toy/model) when OUT has no state.")
@click.option("--unet-from", default=None, type=click.Path(exists=True, file_okay=False),
              help="Start the UNet stage's networks (not the VAE) from exported sd/ and controlnet/, mapped onto this VAE's latents.")
@click.option("--decoder-steps", default=0, show_default=True, type=click.IntRange(min=0),
              help="Fine-tune the VAE decoder alone (encoder frozen) this many steps, before the UNet stage continues.")
@click.option("--offset-noise", default=0.1, show_default=True, type=click.FloatRange(min=0),
              help="Std of the per-channel offset added to the noise, from this run on.")
@click.option("--rare-class", default=None, type=click.FloatRange(min=0, min_open=True),
              help="From now on, draw half of each UNet batch by rare-class sampling at this temperature (e.g. 0.01).")
@click.option("--focus", default=None, metavar="STYLE:CLASS[,CLASS]",
              help="From now on, draw a quarter of each UNet batch from corpus images of STYLE holding CLASSES "
                   '(e.g. "night:bus,wall"; "" stops it).')
@click.option("--class-weight", default=None, type=click.FloatRange(min=0),
              help="From now on, weigh each pixel's noise loss by its class's rarity to this power (e.g. 0.5; 0 stops it).")
@click.option("--log", "log_file", default=None, type=click.Path(dir_okay=False), help="Also append the losses to this file.")
def train_toy(out, vae_steps, steps, minutes, batch_size, corpus_per_style, ckpt_every, seed, init_from, unet_from, offset_noise, decoder_steps, rare_class, focus, class_weight, log_file):
    """Train a toy SD + ControlNet-seg stack on a toy-city corpus of its own (CPU; resumable)."""
    import time

    import torch

    from ..diffusion.toy_train import ToyTrainConfig, train_toy as run

    torch.set_num_threads(max(1, torch.get_num_threads()))

    def log(message):
        click.echo(message, err=True)
        if log_file:
            with open(log_file, "a") as f:
                f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    res = run(ToyTrainConfig(out=out, vae_steps=vae_steps, steps=steps, minutes=minutes, batch_size=batch_size,
                             corpus_per_style=corpus_per_style, seed=seed, ckpt_every=ckpt_every, init_from=init_from,
                             offset_noise=offset_noise, decoder_steps=decoder_steps, rare_class=rare_class,
                             unet_from=unet_from, focus=focus, class_weight=class_weight), log)
    click.echo(f"{res['out']}: stage {res['stage']}, step {res['step']}; --model {out}/sd --controlnet {out}/controlnet")
