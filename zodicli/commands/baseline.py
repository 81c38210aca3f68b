"""zodi baseline fit|predict: the pixel-colour floor the demo compares against."""
from __future__ import annotations

import click

from ._options import (allow_partial_option, config_option, data_root_option, emit_json, json_option,
                       overwrite_option, resolved_settings, shard_option)


@click.group("baseline")
def command():
    """Pixel-colour baseline segmenter (a floor, not a paper's method)."""


@command.command("fit")
@click.option("--train", "train_spec", required=True, help="Labelled dataset to count colours on, e.g. toy:clear:train.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Model file (.npz).")
@data_root_option
@allow_partial_option
@json_option
@config_option
def fit(train_spec, out, data_root, allow_partial, json_output, config):
    """Count class frequencies per quantised colour and image band."""
    from ..data.registry import open_dataset
    from ..seg.pixel_baseline import PixelBaseline

    ds = open_dataset(train_spec, data_root=data_root, allow_partial=allow_partial)
    model = PixelBaseline.fit(ds)
    model.save(out)
    info = {"model": out, "train": train_spec, "images": len(ds), "pixels": int(model.counts.sum())}
    emit_json(info) if json_output else click.echo(f"fitted on {info['images']} images of {train_spec} -> {out}")


@command.command("predict")
@click.option("--model", required=True, type=click.Path(dir_okay=False), help="Model file from 'zodi baseline fit'.")
@click.option("--src", required=True, help="Images to segment, e.g. toy:fog:val or h5:translated.h5.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output artifact (preds, confidence).")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Items per batch of loading and writing.")
@data_root_option
@shard_option
@overwrite_option
@allow_partial_option
@json_option
@config_option
def predict(model, src, out, batch_size, data_root, shard, overwrite, allow_partial, json_output, config):
    """Write a preds artifact; resumable and shardable like every per-item command."""
    from ..data.registry import open_dataset
    from ..pipeline.loop import run_per_item
    from ..seg.pixel_baseline import PixelBaseline
    from ..store.shards import parse_shard

    ctx = click.get_current_context()
    m = PixelBaseline.load(model)
    ds = open_dataset(src, data_root=data_root, allow_partial=allow_partial)

    def work(keys):
        out_ = [m.predict(ds.image(k)) for k in keys]
        return {"preds": [p for p, _ in out_], "confidence": [c for _, c in out_]}

    summary = run_per_item(out, "baseline predict", resolved_settings(ctx), {"src": ds.fingerprint(), "model": m.fingerprint()},
                           ds.keys(), work, batch_size=batch_size, shard=parse_shard(shard), overwrite=overwrite)
    emit_json(summary) if json_output else click.echo(
        f"{summary['out']}: {summary['items']} items ({summary['computed']} computed, {summary['reused']} reused)")
