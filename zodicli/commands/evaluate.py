"""zodi evaluate: score predictions against a dataset's ground truth."""
from __future__ import annotations

from pathlib import Path

import click

from ._options import allow_partial_option, config_option, data_root_option, emit_json, json_option


def default_report_dir(pred: str) -> Path:
    p = Path(pred.rstrip("/"))
    return p.with_name((p.name[:-3] if p.name.endswith(".h5") else p.name) + ".eval")


@click.command("evaluate")
@click.option("--pred", required=True, help="Predictions: an artifact with a 'preds' field, or a folder of label PNGs.")
@click.option("--dataset", required=True, help="Ground truth, e.g. cs:val, acdc:fog:val, toy:fog:val, h5:FILE.")
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
def command(pred, dataset, classes, pred_encoding, report_dir, data_root, allow_partial, json_output, config):
    """Score predictions: one dataset-level confusion matrix, per-class IoU, mIoU, pixel and mean
    class accuracy (the official Cityscapes evaluator's conventions)."""
    from ..pipeline.evaluate import evaluate, format_table

    result = evaluate(pred, dataset, classes=classes, pred_encoding=pred_encoding, data_root=data_root,
                      allow_partial=allow_partial, report_dir=report_dir or default_report_dir(pred))
    if json_output:
        emit_json({k: v for k, v in result.items() if k != "confusion"})
    else:
        click.echo(format_table(result))
