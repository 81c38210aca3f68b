"""zodi extract-features: cache DIFF's diffusion-UNet features per item (HDF5, float16)."""
from __future__ import annotations

import click

from ._diffusion import per_item_options, to_settings
from ._options import emit_json, resolved_settings
from ._types import BYTES, SIZE


def _ints(ctx, param, value):
    if value is None:
        return None
    try:
        return [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None


@click.command("extract-features")
@click.option("--src", required=True, help="Dataset or h5:FILE of images (labels are kept when present).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output artifact (.h5).")
@click.option("--model", default="sd21-base", show_default=True, help="Stable Diffusion preset, folder or file (DIFF: 2.1-base).")
@click.option("--model-config", default=None, help="Diffusers folder with the configs of a single-file --model.")
@click.option("--blocks", default="diff", show_default=True,
              help="diff (all up-block resnets and transformers), madm (last layer of up blocks 1-3) or names/regexes.")
@click.option("--timesteps", default=None, callback=_ints, help="Feature timesteps [default: 91,52,30,22,18,14,11,7,3].")
@click.option("--inversion-timesteps", default=None, callback=_ints, help="Ascending inversion list, <= 160 [default: 37 steps].")
@click.option("--prompt", default="", show_default=True, help="Text condition of the UNet (DIFF: empty).")
@click.option("--eta", default=1.0, show_default=True, type=float, help="Noise of the stochastic inversion (0: DDIM).")
@click.option("--short-side", default=512, show_default=True, type=click.IntRange(min=8),
              help="Resize so the short side has this many pixels (multiples of 64 are kept).")
@click.option("--size", default=None, type=SIZE, help="Resize every image to HxW instead (e.g. 512x1024).")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed; each item's noise comes from (seed, key).")
@click.option("--max-size", default="100G", show_default=True, type=BYTES,
              help="Refuse to start when the projected output is larger (SD 2.1's DIFF features: 481 MiB per 512x1024 image).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Items per batch of loading and writing.")
@click.option("--compute-batch", default=1, show_default=True, type=click.IntRange(min=1),
              help="Rows per UNet call (fixed, padded: results do not depend on --batch-size).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "fp32", "fp16", "bf16"]),
              help="Weights' precision; auto: fp16 on CUDA, fp32 on the CPU (recorded resolved).")
@per_item_options
def command(json_output, config, shard, overwrite, blocks, timesteps, inversion_timesteps, max_size, **params):
    """Invert each image up to t <= 160 and store the chosen UNet features, grouped by stride
    (features/s8, s16, ...; attributes give stride, channels, timesteps and modules)."""
    from ..pipeline.diffuse import extract_features
    from ..store.shards import parse_shard

    s = to_settings({**params, "controlnet": None})
    summary = extract_features(s, resolved_settings(click.get_current_context()), blocks, inversion_timesteps, timesteps,
                               shard=parse_shard(shard), overwrite=overwrite, max_size=max_size)
    emit_json(summary) if json_output else click.echo(
        f"{summary['out']}: {summary['items']} items ({summary['computed']} extracted, {summary['reused']} reused)")
