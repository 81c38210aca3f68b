"""zodi invert: invert source images into latents (ZoDi encoding, edit-friendly DDPM, DDIM)."""
from __future__ import annotations

import click

from ._diffusion import diffusion_options, to_settings
from ._options import (allow_partial_option, config_option, data_root_option, emit_json, json_option, overwrite_option,
                       resolved_settings, shard_option)


@click.command("invert", context_settings={"token_normalize_func": lambda t: "--guidance-scale" if t == "--guidance" else t})
@diffusion_options
@click.option("--method", default="zodi", show_default=True, type=click.Choice(["zodi", "ddpm", "ddim"]))
@click.option("--exact-timestep", is_flag=True, help="zodi: encode at the first kept timestep (fixes the public code's quirk).")
@click.option("--noise-dtype", default="fp32", show_default=True, type=click.Choice(["fp32", "fp16"]), help="ddpm noise maps on disk.")
@data_root_option
@shard_option
@overwrite_option
@allow_partial_option
@json_option
@config_option
def command(json_output, config, shard, overwrite, **params):
    """Store z0, the start latent, the timesteps, (ddpm) the noise maps and the labels per item."""
    from ..pipeline.diffuse import invert
    from ..store.shards import parse_shard

    ctx = click.get_current_context()
    summary = invert(to_settings(params), resolved_settings(ctx), shard=parse_shard(shard), overwrite=overwrite)
    emit_json(summary) if json_output else click.echo(
        f"{summary['out']}: {summary['items']} items ({summary['computed']} inverted, {summary['reused']} reused)")
