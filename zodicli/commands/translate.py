"""zodi translate: layout-preserving image translation (ZoDi), optionally label-guided (SGG)."""
from __future__ import annotations

import click

from ._diffusion import SECTIONS, diffusion_options, per_item_options, run
from ._options import sectioned


def _interval(value):
    if value in (None, ""):
        return None
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        lo, hi = (int(x) for x in parts)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not LO,HI (two timesteps, e.g. 100,700)") from None
    if not 0 <= lo <= hi:
        raise click.BadParameter(f"{value!r}: need 0 <= LO <= HI")
    return lo, hi


@click.command("translate", cls=sectioned(SECTIONS))
@diffusion_options
@click.option("--exact-timestep", is_flag=True, help="Encode at the first kept timestep (the paper's code encodes at int(γ·T)).")
@click.option("--skip", default=0, show_default=True, type=click.IntRange(min=0), help="ddpm inversions: steps to skip when editing.")
@click.option("--label-guidance", "--guidance", "label_guidance", default="none", show_default=True,
              type=click.Choice(["none", "sgg"]),
              help="Guidance by the source labels: sgg = semantic gradient guidance with --segmenter "
                   "(classifier-free guidance on the text is --guidance-scale).")
@click.option("--segmenter", default=None, type=click.Path(dir_okay=False), help="train-seg checkpoint for --label-guidance sgg.")
@click.option("--sgg-scale", default=1.0, show_default=True, type=float, help="λ of SGG.")
@click.option("--guidance-interval", default=None, metavar="LO,HI",
              callback=lambda ctx, p, v: _interval(v),
              help="Classifier-free guidance only at timesteps LO <= t <= HI; the conditional branch alone elsewhere "
                   "(Kynkäänniemi et al. 2024): fewer UNet rows. Off by default; not yet measured on the demo.")
@click.option("--full-res", is_flag=True, help="Resize outputs back to the source resolution.")
@click.option("--preview", default=0, show_default=True, type=click.IntRange(min=0), help="Contact sheet of the first N items (OUT.preview.png).")
@per_item_options
def command(json_output, config, shard, overwrite, **params):
    """Translate source images into a target domain, keeping their layout (labels stay valid)."""
    from ..pipeline.diffuse import translate

    run(translate, "translated", json_output, shard, overwrite, params)
