"""Dataset-level confusion matrix and the scores users compare against.

Conventions (those of the official Cityscapes evaluator): one matrix over the whole dataset;
pixels whose ground truth is ignore count nowhere; a valid pixel predicted as ignore (or as any
id outside the class set) is a false negative of its class; IoU_c = TP / (TP + FP + FN); classes
absent from both ground truth and prediction are NaN and skipped; mIoU = nanmean x 100.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError


class ConfusionMatrix:
    """``counts[g, p]``: pixels of ground-truth class g predicted as p, for p < C; column C counts
    valid pixels predicted as ignore or out of range. Shape (C, C + 1), int64."""

    def __init__(self, num_classes: int):
        self.num_classes = c = num_classes
        self.counts = np.zeros((c, c + 1), np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, key: str = "") -> None:
        """Add one image: ``pred`` and ``gt`` are (H, W) integer ids at the same resolution."""
        if pred.shape != gt.shape:
            where = f" for {key!r}" if key else ""
            raise InputError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in size{where}",
                             "predict at full ground-truth resolution (upsample logits, then argmax)")
        c = self.num_classes
        # One pass: a 256x256 joint histogram of (gt, pred) bytes, then folded into C x (C + 1).
        hist = np.bincount(((_as_u8(gt).astype(np.uint16) << 8) | _as_u8(pred)).ravel(), minlength=65536).reshape(256, 256)
        self.counts[:, :c] += hist[:c, :c]
        self.counts[:, c] += hist[:c, c:].sum(1)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.counts += other.counts

    @property
    def square(self) -> np.ndarray:
        return self.counts[:, : self.num_classes]

    def scores(self, names, eval_ids=None) -> dict:
        """Per-class IoU and accuracy, mIoU, pixel and mean accuracy over ``eval_ids`` (all classes by
        default), every figure in percent."""
        sq = self.square.astype(np.float64)
        tp = np.diag(sq)
        gt_total = self.counts.sum(1).astype(np.float64)        # includes predicted-as-ignore
        fp = sq.sum(0) - tp
        fn = gt_total - tp
        denom = tp + fp + fn
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(denom > 0, tp / denom, np.nan)
            acc = np.where(gt_total > 0, tp / gt_total, np.nan)
        ids = list(range(self.num_classes)) if eval_ids is None else list(eval_ids)
        valid = gt_total.sum()
        return {
            "miou": float(np.nanmean(iou[ids]) * 100) if np.isfinite(iou[ids]).any() else float("nan"),
            "pixel_acc": float(tp.sum() / valid * 100) if valid else float("nan"),
            "mean_acc": float(np.nanmean(acc[ids]) * 100) if np.isfinite(acc[ids]).any() else float("nan"),
            "iou": {names[i]: float(iou[i] * 100) for i in ids},
            "acc": {names[i]: float(acc[i] * 100) for i in ids},
            "n_pixels": int(valid),
        }


def _as_u8(a: np.ndarray) -> np.ndarray:
    """Ids as bytes; anything >= 255 becomes 255 (ignore), which only ever lands outside 0..C-1."""
    if a.dtype == np.uint8:
        return a
    return np.minimum(a, 255).astype(np.uint8)
