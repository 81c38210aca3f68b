"""Pseudo-labels of a target set from a segmentation checkpoint, for ``train-seg --target-pl``.

Pass 1 (``OUT.raw.h5``, resumable, shardable): per pixel the predicted class, its confidence
(top softmax probability, averaged over flips and scales) and optionally all probabilities.
Pass 2 (``OUT``): class-wise thresholds (CBST-style: for each class, the confidence above which
lie the top ``class_top_p`` of the pixels predicted as that class over the whole set) turn
less confident pixels to ignore (255); ``weight`` is the DACS-style scalar per image, the share of
pixels whose confidence reaches ``weight_threshold`` (0.968).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..store import Artifact
from ..progress import progress
from .loop import run_per_item
from .predict import predict

BINS = 1000


def raw_path(out) -> Path:
    out = Path(out)
    return out.with_name((out.name[:-3] if out.name.endswith(".h5") else out.name) + ".raw.h5")


def class_thresholds(raw: Artifact, top_p: float, num_classes: int = 19) -> list[float]:
    """Per class: the confidence at which the top ``top_p`` share of its predicted pixels starts."""
    hist = np.zeros((num_classes, BINS), np.int64)
    with progress(len(raw), "thresholds") as bar:
        for k in raw.keys:
            p, c = raw.get("preds", k).ravel(), raw.get("confidence", k).astype(np.float32).ravel()
            b = np.minimum((c * BINS).astype(np.int64), BINS - 1)
            valid = p < num_classes
            hist += np.bincount(p[valid].astype(np.int64) * BINS + b[valid], minlength=num_classes * BINS).reshape(num_classes, BINS)
            bar.update()
    out = []
    for c in range(num_classes):
        total = hist[c].sum()
        if total == 0:
            out.append(1.0)
            continue
        from_top = np.cumsum(hist[c][::-1])                  # pixels at or above each bin, from the top
        i = int(np.searchsorted(from_top, top_p * total))    # first bin (from the top) reaching top_p
        out.append(float((BINS - 1 - min(i, BINS - 1)) / BINS))
    return out


def dplg_timestep(t0: int, total: int, iteration: int) -> int:
    """MADM's DPLG schedule: t(i) = floor(t0·(1 − i/E)) for i <= E, then 0."""
    return int(math.floor(t0 * (1 - iteration / total))) if iteration <= total else 0


def pseudolabel(checkpoint, src: str, out, *, class_top_p: float | None = None, weight_threshold: float = 0.968,
                save_probs: bool = False, settings: dict, shard=None, overwrite=False, **predict_kw) -> dict:
    if class_top_p is not None and not 0 < class_top_p <= 1:
        raise InputError(f"--class-top-p {class_top_p} must be in (0, 1]", "e.g. 0.5 keeps each class's most confident half")
    raw = raw_path(out)
    first = predict(checkpoint, src, raw, save_probs=save_probs, settings={**settings, "stage": "raw"},
                    shard=shard, overwrite=overwrite, command="pseudolabel-raw", **predict_kw)
    if shard is not None:
        return {**first, "next": f"run every shard, 'zodi merge {raw}', then this command without --shard"}
    art = Artifact(raw)
    thresholds = class_thresholds(art, class_top_p) if class_top_p else [0.0] * 19
    table = np.array(thresholds + [2.0] * (256 - len(thresholds)), np.float32)   # ids >= 19: never kept

    def work(keys):
        res = {"preds": [], "confidence": [], "weight": []}
        for k in keys:
            p, c = art.get("preds", k), art.get("confidence", k)
            keep = c.astype(np.float32) >= table[p]
            res["preds"].append(np.where(keep, p, 255).astype(np.uint8))
            res["confidence"].append(c)
            res["weight"].append(np.float32((c.astype(np.float32) >= weight_threshold).mean()))
        return res

    final_settings = {**settings, "class_thresholds": [round(t, 6) for t in thresholds]}
    summary = run_per_item(out, "pseudolabel", final_settings, {"raw": art.meta["fingerprint"]}, art.keys, work,
                           batch_size=16, overwrite=overwrite)
    return {**summary, "raw": str(raw), "class_thresholds": thresholds}
