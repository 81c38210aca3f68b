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
        # Lookup tables: gt -> row (C = dump row, dropped), pred -> column (C = "ignore").
        self._gt_lut = np.full(65536, c, np.intp)
        self._gt_lut[:c] = np.arange(c)
        self._pred_lut = self._gt_lut.copy()

    def update(self, pred: np.ndarray, gt: np.ndarray, key: str = "") -> None:
        if pred.shape != gt.shape:
            raise InputError(f"prediction {pred.shape[::-1][-2:] if pred.ndim == 2 else pred.shape} and ground truth "
                             f"{gt.shape[::-1]} differ in size{f' for {key!r}' if key else ''}",
                             "predict at full ground-truth resolution (upsample logits, then argmax)")
        c = self.num_classes
        idx = self._gt_lut[gt.ravel()] * (c + 1) + self._pred_lut[pred.ravel()]
        self.counts += np.bincount(idx, minlength=(c + 1) * (c + 1)).reshape(c + 1, c + 1)[:c]

    def merge(self, other: "ConfusionMatrix") -> None:
        self.counts += other.counts

    @property
    def square(self) -> np.ndarray:
        return self.counts[:, : self.num_classes]

    def scores(self, names, eval_ids=None) -> dict:
        """Per-class IoU and accuracy, mIoU over ``eval_ids`` (all classes by default)."""
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
            "iou": {names[i]: float(iou[i]) for i in ids},
            "acc": {names[i]: float(acc[i]) for i in ids},
            "n_pixels": int(valid),
        }
