"""zodi invert: invert source images into latents (ZoDi encoding, edit-friendly DDPM, DDIM)."""
from __future__ import annotations

import click

from ._diffusion import SECTIONS, diffusion_options, per_item_options, run
from ._options import sectioned


@click.command("invert", cls=sectioned(SECTIONS), context_settings={"token_normalize_func": lambda t: "--guidance-scale" if t == "--guidance" else t})
@diffusion_options
@click.option("--method", default="zodi", show_default=True, type=click.Choice(["zodi", "ddpm", "ddim"]),
              help="zodi: ZoDi's one-step encoding; ddpm: edit-friendly noise maps; ddim: deterministic inversion.")
@click.option("--exact-timestep", is_flag=True, help="zodi: encode at the first kept timestep (fixes the public code's quirk).")
@click.option("--noise-dtype", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16"]),
              help="ddpm noise maps on disk.")
@per_item_options
def command(json_output, config, shard, overwrite, **params):
    """Store z0, the start latent, the timesteps, (ddpm) the noise maps and the labels per item."""
    from ..pipeline.diffuse import invert

    run(invert, "inverted", json_output, shard, overwrite, params)
