"""Score predictions (an artifact's ``preds`` or a folder of label PNGs) against a dataset."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ..data import classsets
from ..data.images import key_of, read_label
from ..data.registry import CHECKED, decode_label_ids, decode_train_ids, open_dataset
from ..errors import InputError, os_error_message
from ..store.files import atomic_path, write_text
from ..metrics.confusion import ConfusionMatrix
from ..progress import progress
from .loop import bounded_map

PRED_ENCODINGS = {"trainid": decode_train_ids, "labelid": decode_label_ids}


class _Predictions:
    """key -> (H, W) uint8 train ids, from an artifact or a folder of PNGs."""

    def __init__(self, path: str, encoding: str, allow_partial: bool):
        p = Path(path)
        self.path = p
        self.outside = self.pixels = self.checked = 0    # PNG values outside the encoding, of those looked at
        if p.is_dir():
            files = {}
            for f in sorted(p.rglob("*.png")):
                k = key_of(f)
                if k in files:
                    raise InputError(f"two prediction files share the key {k!r}: {files[k]} and {f}", "keep one file per image")
                files[k] = f
            if not files:
                raise InputError(f"prediction folder {p} holds no PNG files", "write one label PNG per image, named after it")
            self.keys = set(files)
            hint = "write predictions as single-channel train-id PNGs (label ids with --pred-encoding labelid)"
            decode = PRED_ENCODINGS[encoding]

            def get(k):
                raw = read_label(files[k], hint)
                if self.checked < CHECKED:           # a wrong encoding shows in every file: look at the first ones
                    self.checked += 1
                    self.outside += int(np.count_nonzero(decode.unknown(raw)))
                    self.pixels += raw.size
                return decode(raw)

            self._get = get
            self.fingerprint = f"folder:{len(files)}"
        else:
            from ..store import Artifact

            art = Artifact(p, allow_partial=allow_partial)
            if not art.has("preds"):
                raise InputError(f"{p} has no 'preds' field (fields: {', '.join(art.fields) or 'none'})",
                                 "pass an artifact written by 'zodi evaluate --checkpoint' or 'zodi baseline predict'")
            self.keys = set(art.keys)
            self._get = lambda k: art.get("preds", k)
            self.fingerprint = art.meta["fingerprint"]

    def __call__(self, key):
        return self._get(key)


def evaluate(pred: str, dataset: str, classes: str = "cityscapes19", pred_encoding: str = "trainid",
             data_root=None, allow_partial: bool = False, report_dir=None, workers: int | None = None) -> dict:
    """Accumulate one confusion matrix over ``dataset`` and score it.

    ``classes``: cityscapes19, synthia16/13 (subsets scored on the 19-class matrix) or madm11/9
    (ground truth and predictions remapped from Cityscapes train ids)."""
    if pred_encoding not in PRED_ENCODINGS:
        raise InputError(f"unknown prediction encoding {pred_encoding!r}", "choose trainid or labelid")
    cset = classsets.load(classes)
    ds = open_dataset(dataset, data_root=data_root, allow_partial=allow_partial)
    if not ds.has_labels:
        raise InputError(f"{dataset} has no ground-truth labels", "evaluate on a split with labels, e.g. val")
    preds = _Predictions(pred, pred_encoding, allow_partial)
    gt_keys = ds.keys()
    missing = [k for k in gt_keys if k not in preds.keys]
    if missing and not allow_partial:
        raise InputError(f"{len(missing)} of {len(gt_keys)} ground-truth images of {dataset} have no prediction, "
                         f"e.g. {missing[0]!r}", "predict every image of the split (keys pair by file name)")
    keys = [k for k in gt_keys if k in preds.keys]
    if not keys:
        raise InputError(f"no prediction pairs with {dataset}", "check that the predictions come from this split")
    extra = len(preds.keys) - len(keys)
    if extra:
        print(f"zodi: note: {extra} prediction(s) have no ground truth in {dataset} and are not scored", file=sys.stderr)

    import os

    workers = workers or min(4, os.cpu_count() or 1)
    remap = cset.remap
    cm = ConfusionMatrix(cset.num_classes)

    def load(k):
        return k, preds(k), ds.label(k)

    with progress(len(keys), "evaluate") as bar:
        for k, p, g in bounded_map(load, keys, workers):
            if remap is not None:
                p, g = remap[p], remap[g]
            cm.update(p, g, key=k)
            bar.update()

    scores = cm.scores(cset.names, cset.eval_ids)
    result = {"dataset": dataset, "predictions": str(pred), "classes": classes, "n_images": len(keys), **scores,
              "confusion": cm.counts.tolist(), "class_names": list(cset.names)}
    if preds.outside > 0.01 * preds.pixels:     # a model's train-id PNGs hold 0-18 and 255 only
        hint = ("if they are label-id PNGs, pass --pred-encoding labelid" if pred_encoding == "trainid"
                else "check the prediction encoding")
        print(f"zodi: warning: {preds.outside / preds.pixels:.1%} of the predicted pixels hold ids outside the "
              f"{pred_encoding} encoding and count as ignore ({hint})", file=sys.stderr)
    if report_dir:
        try:
            write_report(Path(report_dir), result, cm, cset.names)
            result["report_dir"] = str(report_dir)
        except OSError as e:            # the scores still reach stdout; the command then fails
            result["report_error"] = os_error_message(e) or f"{report_dir}: {e.strerror or e}"
    return result


def write_report(folder: Path, result: dict, cm: ConfusionMatrix, names) -> None:
    from ..metrics.figures import confusion_png

    folder.mkdir(parents=True, exist_ok=True)
    write_text(folder / "metrics.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    header = "gt\\pred," + ",".join(list(names) + ["ignore"])
    lines = [header] + [f"{names[i]}," + ",".join(map(str, row)) for i, row in enumerate(cm.counts.tolist())]
    write_text(folder / "confusion.csv", "\n".join(lines) + "\n")
    with atomic_path(folder / "confusion.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, cm.counts)
    with atomic_path(folder / "confusion.png") as tmp:
        confusion_png(tmp, cm.counts, names)


def format_table(result: dict) -> str:
    lines = [f"{result['dataset']}  ({result['n_images']} images, {result['n_pixels']:,} labelled pixels, classes {result['classes']})"]
    width = max(len(n) for n in result["iou"])
    for name, v in result["iou"].items():
        lines.append(f"  {name:<{width}}  IoU {'   n/a' if v != v else f'{v:6.2f}'}")
    lines.append(f"  {'mIoU':<{width}}      {result['miou']:6.2f}")
    lines.append(f"  {'pixel acc':<{width}}      {result['pixel_acc']:6.2f}")
    lines.append(f"  {'mean acc':<{width}}      {result['mean_acc']:6.2f}")
    return "\n".join(lines)
