"""zodi translate: layout-preserving image translation (ZoDi), optionally label-guided (SGG)."""
from __future__ import annotations

import click

from ._diffusion import diffusion_options, per_item_options, run


@click.command("translate")
@diffusion_options
@click.option("--exact-timestep", is_flag=True, help="Encode at the first kept timestep (the paper's code encodes at int(γ·T)).")
@click.option("--skip", default=0, show_default=True, type=click.IntRange(min=0), help="ddpm inversions: steps to skip when editing.")
@click.option("--label-guidance", "--guidance", "label_guidance", default="none", show_default=True,
              type=click.Choice(["none", "sgg"]),
              help="Guidance by the source labels: sgg = semantic gradient guidance with --segmenter "
                   "(classifier-free guidance on the text is --guidance-scale).")
@click.option("--segmenter", default=None, type=click.Path(dir_okay=False), help="train-seg checkpoint for --label-guidance sgg.")
@click.option("--sgg-scale", default=1.0, show_default=True, type=float, help="λ of SGG.")
@click.option("--full-res", is_flag=True, help="Resize outputs back to the source resolution.")
@click.option("--preview", default=0, show_default=True, type=click.IntRange(min=0), help="Contact sheet of the first N items (OUT.preview.png).")
@per_item_options
def command(json_output, config, shard, overwrite, **params):
    """Translate source images into a target domain, keeping their layout (labels stay valid)."""
    from ..pipeline.diffuse import translate

    run(translate, "translated", json_output, shard, overwrite, params)
