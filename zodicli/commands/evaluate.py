"""zodi evaluate: score predictions against a dataset's ground truth."""
from __future__ import annotations

from pathlib import Path

import click

from ._options import (allow_partial_option, config_option, data_root_option, emit_json, json_option,
                       overwrite_option, shard_option)
from ._types import SIZE


def default_report_dir(pred: str) -> Path:
    p = Path(pred.rstrip("/"))
    return p.with_name((p.name[:-3] if p.name.endswith(".h5") else p.name) + ".eval")


@click.command("evaluate")
@click.option("--pred", default=None, help="Predictions: an artifact with a 'preds' field, or a folder of label PNGs.")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="Or segment --dataset with this train-seg checkpoint first (writes a preds artifact).")
@click.option("--dataset", required=True, help="Ground truth, e.g. cs:val, acdc:fog:val, toy:fog:val; "
              "h5:FILE on a translated artifact estimates target performance without target images.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="With --checkpoint: the preds artifact [default: CKPT.preds-DATASET.h5 beside it].")
@click.option("--size", default=None, type=SIZE, help="With --checkpoint: resize inputs to HxW (logits return to full size).")
@click.option("--window", default=None, type=SIZE, help="With --checkpoint: sliding-window crop HxW.")
@click.option("--stride", default=None, type=SIZE, help="Sliding-window stride HxW [default: 2/3 of the window].")
@click.option("--flip", is_flag=True, help="With --checkpoint: average with the horizontally flipped image.")
@click.option("--features", default=None, help="With a diff_fusion checkpoint: the dataset's cached features (h5:FILE).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1),
              help="Images per model call (with --checkpoint).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda or cuda:N.")
@click.option("--amp", default="none", show_default=True, type=click.Choice(["none", "bf16", "fp16"]),
              help="Autocast precision of the model (with --checkpoint).")
@shard_option
@overwrite_option
@click.option("--classes", default="cityscapes19", show_default=True,
              type=click.Choice(["cityscapes19", "synthia16", "synthia13", "madm11", "madm9"]),
              help="Class set to score (synthia16/13: subsets of the 19; madm11/9: remapped).")
@click.option("--pred-encoding", default="trainid", show_default=True, type=click.Choice(["trainid", "labelid"]),
              help="How a folder of prediction PNGs encodes classes.")
@click.option("--report-dir", default=None, type=click.Path(file_okay=False),
              help="Where metrics.json, confusion.csv/.npy and confusion.png go (default: PRED.eval/).")
@data_root_option
@allow_partial_option
@json_option
@config_option
def command(pred, checkpoint, dataset, out, size, window, stride, flip, features, batch_size, device, amp, shard, overwrite,
            classes, pred_encoding, report_dir, data_root, allow_partial, json_output, config):
    """Score predictions: one dataset-level confusion matrix, per-class IoU, mIoU, pixel and mean
    class accuracy (the official Cityscapes evaluator's conventions)."""
    from ..pipeline.evaluate import evaluate, format_table

    if (pred is None) == (checkpoint is None):
        raise click.UsageError("give exactly one of --pred (existing predictions) and --checkpoint (make them)")
    if checkpoint:
        from ..pipeline.predict import default_out, predict
        from ..store.shards import parse_shard

        ctx = click.get_current_context()
        settings = {k: ctx.params[k] for k in ("checkpoint", "dataset", "size", "window", "stride", "flip", "amp",
                                               "batch_size", "device", "shard", "data_root", "features")}
        shard_ = parse_shard(shard)
        pred = str(out or default_out(checkpoint, dataset))
        summary = predict(checkpoint, dataset, pred, size=size, window=window, stride=stride, flip=flip,
                          batch_size=batch_size, device=device, amp=amp, shard=shard_, overwrite=overwrite,
                          data_root=data_root, allow_partial=allow_partial, settings=settings, features=features)
        if shard_:
            click.echo(f"{summary['out']}: shard {summary['shard']} predicted; run 'zodi merge {pred}', then evaluate --pred {pred}")
            return

    result = evaluate(pred, dataset, classes=classes, pred_encoding=pred_encoding, data_root=data_root,
                      allow_partial=allow_partial, report_dir=report_dir or default_report_dir(pred))
    if json_output:
        emit_json({k: v for k, v in result.items() if k != "confusion"})
    else:
        click.echo(format_table(result))
    if "report_error" in result:
        from ..errors import ZodiError

        raise ZodiError(f"the scores are above, but the report was not written: {result['report_error']}")
