"""zodi pseudolabel: pseudo-labels, confidences and weights of a target set (for train-seg --target-pl)."""
from __future__ import annotations

import click

from ._diffusion import per_item_options
from ._options import emit_json, resolved_settings
from ._types import SIZE, float_list


@click.command("pseudolabel")
@click.option("--checkpoint", required=True, type=click.Path(dir_okay=False), help="train-seg checkpoint.")
@click.option("--src", required=True, help="Target images, e.g. acdc:fog:train.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Pseudo-label artifact (OUT.raw.h5 holds pass 1).")
@click.option("--class-top-p", default=None, type=float,
              help="Keep each class's most confident share p of pixels (CBST); others ignore.")
@click.option("--weight-threshold", default=0.968, show_default=True, type=float, help="Confidence counted by the DACS weight.")
@click.option("--save-probs", is_flag=True, help="Also store per-class probabilities (float16) in OUT.raw.h5.")
@click.option("--flip", is_flag=True, help="Average with the horizontally flipped image.")
@click.option("--scales", default="1", show_default=True, callback=float_list, help="Multi-scale averaging, e.g. 0.75,1,1.25.")
@click.option("--size", default=None, type=SIZE, help="Inference size HxW (scales apply to it).")
@click.option("--dplg", is_flag=True, help="MADM's diffusion-based pseudo-labels (sd-unet checkpoints): predict on noised z_t.")
@click.option("--dplg-t0", default=60, show_default=True, type=int, help="t0 (depth: 60; infrared, event: 50).")
@click.option("--dplg-total", default=5000, show_default=True, type=int, help="E (depth: 5000; infrared, event: 8000).")
@click.option("--dplg-iter", default=0, show_default=True, type=int, help="Training iteration i the labels are made at.")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1), help="Images per model call.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--amp", default="none", show_default=True, type=click.Choice(["none", "bf16", "fp16"]),
              help="Autocast precision of the model.")
@per_item_options
def command(checkpoint, src, out, class_top_p, weight_threshold, save_probs, flip, scales, size, dplg, dplg_t0, dplg_total,
            dplg_iter, batch_size, device, amp, data_root, shard, overwrite, allow_partial, json_output, config):
    """Predict the target set, then threshold per class and weight per image. The output's preds,
    confidence and settings['src'] plug into 'zodi train-seg --target-pl OUT'."""
    from ..pipeline.pseudolabel import dplg_timestep, pseudolabel
    from ..store.shards import parse_shard

    settings = resolved_settings(click.get_current_context())
    summary = pseudolabel(checkpoint, src, out, class_top_p=class_top_p, weight_threshold=weight_threshold,
                          save_probs=save_probs, settings=settings, shard=parse_shard(shard), overwrite=overwrite,
                          size=size, flip=flip, scales=scales, batch_size=batch_size, device=device, amp=amp,
                          data_root=data_root, allow_partial=allow_partial,
                          dplg_t=dplg_timestep(dplg_t0, dplg_total, dplg_iter) if dplg else None)
    if json_output:
        emit_json(summary)
    elif "next" in summary:
        click.echo(f"{summary['out']}: shard done; {summary['next']}")
    else:
        click.echo(f"{summary['out']}: {summary['items']} pseudo-labelled images (pass 1 in {summary['raw']})")
